//! Bytes from the server in, whole lines out, with a bound on what is kept.
//!
//! The server's framer (`chat_core::Framer`) bounds what a *client* sends; this is the same
//! care in the other direction, so that a misbehaving server cannot make the client buffer
//! without end. A conforming server's longest line, a full `/rooms` reply, fits.

use std::borrow::Cow;

/// The most of one server line that is kept, `\n` included: the longest reply a conforming
/// server sends ([`chat_core::hub::LONGEST_REPLY`], which counts a little bookkeeping on top).
pub const MAX_SERVER_LINE: usize = chat_core::hub::LONGEST_REPLY;

/// Shown in place of the part of a line that was over [`MAX_SERVER_LINE`].
pub const CUT: &str = " [... line cut]";

/// Splits the server's byte stream into lines.
#[derive(Debug, Default)]
pub struct Lines {
    /// The unfinished line so far (at most [`MAX_SERVER_LINE`] bytes).
    partial: Vec<u8>,
    /// True while the rest of an over-long line is being skipped, up to its `\n`.
    skipping: bool,
}

impl Lines {
    /// An empty splitter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes just read and hands every line they complete to `line`, without its `\n`
    /// (a `\r` before it is dropped too, as the protocol does for what clients send). Text
    /// that is not valid UTF-8 is shown with U+FFFD in its place. A line longer than
    /// [`MAX_SERVER_LINE`] is handed over cut, ending in [`CUT`], as soon as it is too long.
    pub fn push(&mut self, mut bytes: &[u8], mut line: impl FnMut(&str)) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest) = match end {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[][..]),
            };
            bytes = rest;
            if !self.skipping {
                let room = MAX_SERVER_LINE - 1 - self.partial.len();
                self.partial
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
                if chunk.len() > room {
                    line(&format!("{}{CUT}", text(&self.partial)));
                    self.partial.clear();
                    self.skipping = true;
                } else if end.is_some() {
                    if self.partial.last() == Some(&b'\r') {
                        self.partial.pop();
                    }
                    line(&text(&self.partial));
                    self.partial.clear();
                }
            }
            if end.is_some() {
                self.skipping = false;
            }
        }
    }

    /// True when bytes of an unfinished line are kept: if the stream ends now, they were
    /// never a line (the protocol drops them too).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// Bytes as text; invalid UTF-8 becomes U+FFFD, which [`escape`](crate::display::escape)
/// then leaves alone (it is a printable character).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::new();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, |l| out.push(l.to_owned()));
        }
        out
    }

    #[test]
    fn lines_however_the_bytes_are_cut() {
        let all = b"* welcome guest1 (type /help for commands)\n<a> hi\r\n\n[b] x\n";
        let want = [
            "* welcome guest1 (type /help for commands)",
            "<a> hi",
            "",
            "[b] x",
        ];
        assert_eq!(split(&[all]), want);
        for cut in 0..all.len() {
            assert_eq!(split(&[&all[..cut], &all[cut..]]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(split(&bytes), want);
    }

    #[test]
    fn an_unfinished_line_is_kept_not_shown() {
        let mut lines = Lines::new();
        let mut n = 0;
        lines.push(b"<a> no newline yet", |_| n += 1);
        assert_eq!(n, 0);
        assert!(lines.has_partial());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(split(&[b"<a> \xff\xfe ok\n"]), ["<a> \u{fffd}\u{fffd} ok"]);
    }

    #[test]
    fn the_longest_line_fits_and_a_longer_one_is_cut_once() {
        let longest = vec![b'x'; MAX_SERVER_LINE - 1];
        let mut input = longest.clone();
        input.push(b'\n');
        assert_eq!(split(&[&input]), [String::from_utf8(longest).unwrap()]);

        let mut input = vec![b'y'; 3 * MAX_SERVER_LINE];
        input.extend_from_slice(b"\n<a> next\n");
        let got = split(&[&input[..10], &input[10..]]);
        assert_eq!(
            got.len(),
            2,
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(got[0].ends_with(CUT));
        assert_eq!(got[0].len(), MAX_SERVER_LINE - 1 + CUT.len());
        assert_eq!(got[1], "<a> next");
    }
}
