//! The marker every load message carries, and how to find it again.
//!
//! A load message is one line: `~cb1:SENDER:SEQ:INTENDED_US~` followed by
//! padding up to `--message-size` bytes. `SENDER` is the generator's client id,
//! `SEQ` counts that sender's messages from 0, and `INTENDED_US` is the time,
//! in microseconds since the start of the run on the generator's monotonic
//! clock, at which the schedule *meant* to send it (open loop: a late send is
//! counted as latency, never hidden).
//!
//! The server is free to decorate the line (ours prefixes `<guest7> `, other
//! chat servers add a timestamp or a name), so the parser looks for the marker
//! anywhere in a received line. Every character is ASCII and none of them is
//! special in our protocol: the line does not start with `/`, so it is a plain
//! message to the room.
//!
//! Run its tests with `cargo test -p chat-bench marker`.

/// The four bytes that open every marker. The `1` is a format version: a
/// future change of layout gets a new prefix instead of confusing old parsers.
pub const PREFIX: &[u8] = b"~cb1:";

/// What one marker says: who sent it, which of its messages it is, and when
/// it was meant to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The generator's id of the sending client.
    pub sender: u32,
    /// The sender's sequence number, starting at 0 and growing by one per message.
    pub seq: u32,
    /// Intended send time, in microseconds since the run's start instant.
    pub intended_us: u64,
}

// ANCHOR: write_line
/// Appends one complete message line (marker, padding, `\n`) to `out`.
///
/// The line is at least `size` bytes long before its `\n`; if `size` is smaller
/// than the marker itself the marker alone is sent, because a message without
/// its marker could not be accounted for.
pub fn write_line(out: &mut Vec<u8>, marker: Marker, size: usize) {
    use std::io::Write as _;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "~cb1:{}:{}:{}~",
        marker.sender, marker.seq, marker.intended_us
    );
    let written = out.len() - start;
    if written < size {
        // Padding makes messages the size the scenario asks for; a repeated
        // letter keeps the line valid UTF-8 and readable in a packet capture.
        out.resize(start + size, b'x');
    }
    out.push(b'\n');
}
// ANCHOR_END: write_line

/// Finds and parses the first marker in `line`, wherever it is.
///
/// Returns `None` for lines without a (well-formed) marker: notices, errors,
/// other people's chatter. This is on the hot path of the generator (it runs
/// once per received line), so it scans bytes and parses digits by hand
/// instead of allocating strings.
pub fn find(line: &[u8]) -> Option<Marker> {
    let mut from = 0;
    while let Some(rel) = line[from..].iter().position(|&b| b == b'~') {
        let at = from + rel;
        if let Some(marker) = parse_at(&line[at..]) {
            return Some(marker);
        }
        from = at + 1;
    }
    None
}

/// Parses a marker that starts exactly at the beginning of `s`.
fn parse_at(s: &[u8]) -> Option<Marker> {
    let rest = s.strip_prefix(PREFIX)?;
    let (sender, rest) = number(rest, b':')?;
    let (seq, rest) = number(rest, b':')?;
    let (intended_us, _) = number(rest, b'~')?;
    Some(Marker {
        sender: u32::try_from(sender).ok()?,
        seq: u32::try_from(seq).ok()?,
        intended_us,
    })
}

/// Reads decimal digits up to `end`, returning the value and what follows `end`.
fn number(s: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'0'..=b'9' if i < 20 => {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            _ if b == end && i > 0 => return Some((value, &s[i + 1..])),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Marker = Marker {
        sender: 42,
        seq: 7,
        intended_us: 1_234_567,
    };

    #[test]
    fn round_trip_and_padding() {
        let mut out = Vec::new();
        write_line(&mut out, M, 64);
        assert_eq!(out.len(), 65, "64 bytes plus the newline");
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(find(&out[..64]), Some(M));
    }

    #[test]
    fn too_small_a_size_still_carries_the_marker() {
        let mut out = Vec::new();
        write_line(&mut out, M, 1);
        assert_eq!(find(&out), Some(M));
    }

    #[test]
    fn found_anywhere_in_a_decorated_line() {
        let mut line = b"[12:00:01] <guest3> ".to_vec();
        write_line(&mut line, M, 0);
        assert_eq!(find(&line), Some(M));
        // A stray tilde before the marker does not hide it.
        let line = b"~ hello ~cb1:1:2:3~ tail";
        assert_eq!(
            find(line),
            Some(Marker {
                sender: 1,
                seq: 2,
                intended_us: 3
            })
        );
    }

    #[test]
    fn malformed_markers_are_ignored() {
        for bad in [
            &b"* guest1 joined lobby"[..],
            b"~cb1:",
            b"~cb1:1:2~",
            b"~cb1::2:3~",
            b"~cb1:1:2:3",
            b"~cb1:a:2:3~",
            b"~cb1:99999999999:2:3~", // sender does not fit in u32
            b"~cb1:1:2:123456789012345678901234~",
            b"~cb2:1:2:3~",
        ] {
            assert_eq!(find(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
