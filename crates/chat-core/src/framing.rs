//! Line framing: bytes in, complete lines out.
//!
//! TCP delivers a stream of bytes, not messages: one `read` may return half a line, or ten
//! lines and a half. The [`Framer`] remembers the unfinished tail between reads and hands out
//! whole lines. It is also where the first promise of bounded memory is kept: it never holds
//! more than [`MAX_LINE`] bytes, however long a line a client sends.

use crate::MAX_LINE;

/// One thing the framer found in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete, non-empty line of valid UTF-8, without its `\n` (and without a `\r` before it).
    Line(&'a str),
    /// A line longer than [`MAX_LINE`]: reported once, as soon as the limit is crossed; the rest
    /// of that line, up to its `\n`, is discarded.
    TooLong,
    /// A complete line that is not valid UTF-8; it is discarded.
    InvalidUtf8,
}

/// Splits a byte stream into lines, with at most [`MAX_LINE`] bytes buffered.
///
/// The buffer is allocated only while a line is split across reads, and freed as soon as that
/// line is complete: an idle connection costs no buffer at all (the C10K lesson of the
/// readiness chapters). Even the bookkeeping of that buffer is boxed: a framer that holds
/// nothing is one null pointer, 8 bytes in every connection's state instead of a `Vec`'s 24
/// and a flag's 8 (see the book's "Where the bytes go").
#[derive(Debug, Default)]
pub struct Framer {
    /// What is kept between two reads, only while a line is unfinished or being thrown away.
    held: Option<Box<Held>>,
}

/// What a [`Framer`] keeps between two reads.
#[derive(Debug, Default)]
struct Held {
    /// The start of a line whose `\n` has not arrived yet; never longer than [`MAX_LINE`].
    partial: Vec<u8>,
    /// True while throwing away an over-long line, up to and including its `\n`.
    discarding: bool,
}

impl Framer {
    /// A framer with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held for an unfinished line (for tests and memory accounting).
    pub fn buffered(&self) -> usize {
        self.held.as_ref().map_or(0, |held| held.partial.len())
    }

    /// True if this framer owns any memory (for the memory tests: an idle one must not).
    pub fn holds_memory(&self) -> bool {
        self.held.is_some()
    }

    /// True while an over-long line is being thrown away.
    fn discarding(&self) -> bool {
        self.held.as_ref().is_some_and(|held| held.discarding)
    }

    /// Feeds `input` (what one `read` returned) and calls `emit` for every frame it completes,
    /// in order: for a reader that takes every line (the blocking stages).
    pub fn push(&mut self, mut input: &[u8], mut emit: impl FnMut(Frame<'_>)) {
        while self
            .next(&mut input, |frame| {
                emit(frame);
                true
            })
            .is_some()
        {}
    }

    /// Offers the next frame of `input` to `take`, and consumes it only if `take` returns true.
    ///
    /// Returns `None` once `input` holds no complete frame (what is left of it has been
    /// absorbed: an unfinished line is kept, the rest of an over-long line is skipped), and
    /// otherwise `Some(taken)`. When `take` refuses, nothing changes: `input` still starts
    /// with that frame's bytes and the framer's state is as before, so the same frame is
    /// offered again by the next call. This is how a server stops reading a client in the
    /// middle of a read, without copying what it read (see `Server::receive`).
    ///
    /// Lines that arrive whole in `input` are offered without being copied.
    // ANCHOR: framer_next
    pub fn next(
        &mut self,
        input: &mut &[u8],
        mut take: impl FnMut(Frame<'_>) -> bool,
    ) -> Option<bool> {
        loop {
            if input.is_empty() {
                return None;
            }
            let Some(newline) = input.iter().position(|&b| b == b'\n') else {
                // No end of line in sight: everything left belongs to the current line.
                if self.discarding() {
                    *input = &[];
                    return None;
                }
                if self.buffered() + input.len() <= MAX_LINE {
                    let held = self.held.get_or_insert_with(Box::default);
                    held.partial.extend_from_slice(input);
                    *input = &[];
                    return None;
                }
                // Say so now, not when the `\n` finally comes (it may never come).
                if !take(Frame::TooLong) {
                    return Some(false);
                }
                self.held = Some(Box::new(Held {
                    partial: Vec::new(),
                    discarding: true,
                }));
                *input = &[];
                return Some(true);
            };
            let (head, rest) = (&input[..newline], &input[newline + 1..]);
            if self.discarding() {
                // This `\n` ends the over-long line we were throwing away.
                self.held = None;
                *input = rest;
                continue;
            }
            if self.buffered() + head.len() > MAX_LINE {
                if !take(Frame::TooLong) {
                    return Some(false);
                }
                self.held = None;
                *input = rest;
                return Some(true);
            }
            let taken = match self.held.as_deref_mut() {
                // The common case: the whole line is in this read. No copy.
                None => offer(head, &mut take),
                // The line began in an earlier read: complete it in place, and undo that if
                // the frame is refused (a truncate frees nothing and copies nothing).
                Some(held) => {
                    let before = held.partial.len();
                    held.partial.extend_from_slice(head);
                    let taken = offer(&held.partial, &mut take);
                    if taken == Some(false) {
                        held.partial.truncate(before);
                    } else {
                        // Freed, not kept: an idle client holds no buffer.
                        self.held = None;
                    }
                    taken
                }
            };
            match taken {
                Some(false) => return Some(false),
                Some(true) => {
                    *input = rest;
                    return Some(true);
                }
                None => *input = rest, // an empty line: nothing to offer, look further
            }
        }
    }
    // ANCHOR_END: framer_next
}

/// Offers one complete line to `take`: drops a `\r` before the `\n`, checks UTF-8. `None` for
/// an empty line, which is ignored and offers nothing.
fn offer(raw: &[u8], take: impl FnOnce(Frame<'_>) -> bool) -> Option<bool> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    Some(match std::str::from_utf8(raw) {
        Ok(line) => take(Frame::Line(line)),
        Err(_) => take(Frame::InvalidUtf8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the framer produced, owned, so tests can compare it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Line(String),
        TooLong,
        InvalidUtf8,
    }

    fn frames_of(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut framer = Framer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, |f| out.push(owned(f)));
            assert!(framer.buffered() <= MAX_LINE);
        }
        out
    }

    fn owned(frame: Frame<'_>) -> Owned {
        match frame {
            Frame::Line(l) => Owned::Line(l.to_owned()),
            Frame::TooLong => Owned::TooLong,
            Frame::InvalidUtf8 => Owned::InvalidUtf8,
        }
    }

    fn line(s: &str) -> Owned {
        Owned::Line(s.to_owned())
    }

    #[test]
    fn splits_lines_and_drops_cr_and_empty_lines() {
        assert_eq!(
            frames_of(&[b"hello\nworld\r\n\n\r\nlast"]),
            vec![line("hello"), line("world")]
        );
    }

    #[test]
    fn unfinished_tail_is_kept_until_its_newline() {
        assert_eq!(frames_of(&[b"hel", b"lo", b"\n"]), vec![line("hello")]);
    }

    #[test]
    fn exactly_max_line_is_a_line() {
        let text = "a".repeat(MAX_LINE);
        let input = format!("{text}\n");
        assert_eq!(frames_of(&[input.as_bytes()]), vec![line(&text)]);
    }

    #[test]
    fn one_byte_over_is_too_long_and_the_next_line_survives() {
        let input = format!("{}\nnext\n", "a".repeat(MAX_LINE + 1));
        assert_eq!(
            frames_of(&[input.as_bytes()]),
            vec![Owned::TooLong, line("next")]
        );
    }

    #[test]
    fn the_limit_crossed_across_two_reads_is_reported_once() {
        let first = "a".repeat(1000);
        let second = "b".repeat(1000);
        assert_eq!(
            frames_of(&[first.as_bytes(), second.as_bytes(), b"more", b"\nok\n"]),
            vec![Owned::TooLong, line("ok")]
        );
    }

    #[test]
    fn a_cr_counts_towards_the_limit() {
        let input = format!("{}\r\n", "a".repeat(MAX_LINE));
        assert_eq!(frames_of(&[input.as_bytes()]), vec![Owned::TooLong]);
    }

    #[test]
    fn huge_line_without_newline_is_reported_immediately_and_buffers_nothing() {
        let mut framer = Framer::new();
        let mut seen = Vec::new();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            framer.push(&chunk, |f| seen.push(f == Frame::TooLong));
            assert_eq!(framer.buffered(), 0);
        }
        assert_eq!(seen, vec![true]);
    }

    #[test]
    fn invalid_utf8_is_its_own_frame() {
        assert_eq!(
            frames_of(&[b"\xff\xfe\nfine\n"]),
            vec![Owned::InvalidUtf8, line("fine")]
        );
    }

    #[test]
    fn nul_bytes_are_valid_utf8() {
        assert_eq!(frames_of(&[b"a\0b\n"]), vec![line("a\0b")]);
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let input: &[u8] = b"one\r\ntwo\n\xff\n\nthree\n";
        let whole = frames_of(&[input]);
        for i in 0..=input.len() {
            assert_eq!(
                frames_of(&[&input[..i], &input[i..]]),
                whole,
                "split at {i}"
            );
        }
    }

    #[test]
    fn buffer_is_freed_when_a_split_line_completes() {
        let mut framer = Framer::new();
        framer.push(b"abc", |_| {});
        framer.push(b"def\n", |_| {});
        assert!(framer.held.is_none());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
            // Segments of short text with CRs, NULs, newlines and invalid UTF-8, and now and
            // then a run long enough to cross the line limit.
            let short =
                prop::collection::vec(prop::sample::select(b"ab \n\n\r\0\xff".to_vec()), 0..40);
            let long = (900usize..1200).prop_map(|n| vec![b'x'; n]);
            prop::collection::vec(prop_oneof![6 => short, 1 => long], 0..20)
                .prop_map(|segments| segments.concat())
        }

        proptest! {
            #[test]
            fn splitting_never_changes_the_result(
                input in interesting_bytes(),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            ) {
                let whole = frames_of(&[&input]);
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
                points.sort_unstable();
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut start = 0;
                for p in points {
                    chunks.push(&input[start..p]);
                    start = p;
                }
                chunks.push(&input[start..]);
                prop_assert_eq!(frames_of(&chunks), whole);
            }

            /// Refusing a frame changes nothing: offered again until taken, the frames are
            /// those of the whole input, whatever the cuts between reads.
            #[test]
            fn refusing_is_invisible(
                input in interesting_bytes(),
                refusals in prop::collection::vec(any::<bool>(), 0..64),
                cut in any::<prop::sample::Index>(),
            ) {
                let whole = frames_of(&[&input]);
                let cut = cut.index(input.len() + 1);
                let mut framer = Framer::new();
                let mut got = Vec::new();
                let mut refusals = refusals.into_iter();
                for chunk in [&input[..cut], &input[cut..]] {
                    let mut rest = chunk;
                    loop {
                        let refuse = refusals.next().unwrap_or(false);
                        let taken = framer.next(&mut rest, |f| {
                            if refuse {
                                return false;
                            }
                            got.push(owned(f));
                            true
                        });
                        if taken.is_none() {
                            break;
                        }
                        prop_assert!(framer.buffered() <= MAX_LINE);
                    }
                }
                prop_assert_eq!(got, whole);
            }

            /// Against an independent reference: split the whole input at every `\n`, judge each
            /// complete line on its own; the unfinished tail counts only if already too long.
            /// Text with multi-byte UTF-8 is cut anywhere, inside characters too.
            #[test]
            fn matches_a_reference(
                parts in prop::collection::vec(
                    prop_oneof![
                        Just("a".to_owned()), Just("é".to_owned()), Just("€".to_owned()),
                        Just("😀".to_owned()), Just("\n".to_owned()), Just("\r".to_owned()),
                        Just(" ".to_owned()), (1000usize..1100).prop_map(|n| "y".repeat(n)),
                    ],
                    0..60,
                ),
                invalid in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            ) {
                let mut input = parts.concat().into_bytes();
                for i in invalid {
                    if !input.is_empty() {
                        let at = i.index(input.len());
                        input[at] = 0xC3; // a lead byte, maybe without its continuation
                    }
                }
                let mut expected = Vec::new();
                let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
                let tail = lines.pop().unwrap_or(&[]);
                for line in lines {
                    if line.len() > MAX_LINE {
                        expected.push(Owned::TooLong);
                        continue;
                    }
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        continue;
                    }
                    expected.push(match std::str::from_utf8(line) {
                        Ok(text) => Owned::Line(text.to_owned()),
                        Err(_) => Owned::InvalidUtf8,
                    });
                }
                if tail.len() > MAX_LINE {
                    expected.push(Owned::TooLong);
                }
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
                points.sort_unstable();
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut start = 0;
                for p in points {
                    chunks.push(&input[start..p]);
                    start = p;
                }
                chunks.push(&input[start..]);
                prop_assert_eq!(frames_of(&chunks), expected);
            }

            #[test]
            fn long_runs_are_split_the_same(len in 1000usize..2100, cut in 0usize..2100) {
                let mut input = vec![b'y'; len];
                input.push(b'\n');
                input.extend_from_slice(b"tail\n");
                let cut = cut.min(input.len());
                prop_assert_eq!(frames_of(&[&input[..cut], &input[cut..]]), frames_of(&[&input]));
            }
        }
    }
}
