//! A test client: one TCP connection to the server under test, read line by line with a
//! deadline on every read, and assertions that say which client expected what and got what.
//!
//! Every method that can block has a bound: reads use a deadline (`LINE_TIMEOUT` unless
//! told), writes a write timeout. Assertion methods panic with a precise message (they are
//! `#[track_caller]`, so the panic points at the line of the check); the `try_*` methods
//! return a [`ReadError`] instead, for checks that run clients on their own threads.
//!
//! Its own tests (parsers, and reads against a fake peer): `cargo test -p chat-testkit`.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a client waits for a line it expects. Generous: debug builds on a busy
/// 2-core machine. A correct server answers in microseconds; only a failing check waits this long.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a client listens to prove that *nothing* arrives (mode limits). A silence check
/// can only pass wrongly (the line comes later), never fail wrongly.
pub const SILENCE: Duration = Duration::from_millis(500);

/// Bound on one line from the server. The longest legal line is a 1024-byte message plus
/// `<NICK> `; anything far longer means the server lost its framing.
const MAX_SERVER_LINE: usize = 64 * 1024;

/// Why a read did not produce a line.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection (FIN; or RST, which means the same to a chat client).
    Closed {
        /// Bytes of an unfinished line received before the close.
        partial: Vec<u8>,
        /// `Some` when the close was a reset (`ECONNRESET`) rather than an orderly EOF.
        reset: Option<io::Error>,
    },
    /// No complete line arrived before the deadline.
    Timeout {
        /// Bytes of an unfinished line received so far.
        partial: Vec<u8>,
        /// How long we waited.
        waited: Duration,
    },
    /// The server sent a line that is not UTF-8 (the protocol says all text is UTF-8).
    NotUtf8(Vec<u8>),
    /// The server sent more than `MAX_SERVER_LINE` bytes without a newline.
    TooLong(usize),
    /// Any other socket error.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed { partial, reset } => {
                match reset {
                    Some(e) => write!(f, "the connection was reset ({e})")?,
                    None => write!(f, "EOF (the server closed the connection)")?,
                }
                if !partial.is_empty() {
                    write!(
                        f,
                        " after an unfinished line {:?}",
                        String::from_utf8_lossy(partial)
                    )?;
                }
                Ok(())
            }
            ReadError::Timeout { partial, waited } => {
                write!(f, "no line within {waited:?}")?;
                if !partial.is_empty() {
                    write!(
                        f,
                        " (an unfinished line {:?} arrived)",
                        String::from_utf8_lossy(partial)
                    )?;
                }
                Ok(())
            }
            ReadError::NotUtf8(bytes) => write!(f, "a line that is not UTF-8: {bytes:?}"),
            ReadError::TooLong(n) => write!(f, "{n} bytes without a newline"),
            ReadError::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// One connection to the server under test.
#[derive(Debug)]
pub struct Client {
    /// Who this client is in the check ("A", "sender 2"): names it in failure messages.
    pub label: String,
    /// The nick the server gave it (`* welcome NICK`) or that it took with `/nick`.
    /// Empty until the welcome line has been read.
    pub nick: String,
    /// The connection.
    stream: TcpStream,
    /// Bytes received but not yet returned as a line (an unfinished line, or more lines
    /// that came in the same read). Kept across timeouts so no byte is ever lost.
    pending: Vec<u8>,
}

impl Client {
    /// Wraps a connected stream; sets a write timeout so no write can block forever.
    pub fn new(label: impl Into<String>, stream: TcpStream) -> io::Result<Client> {
        stream.set_write_timeout(Some(LINE_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            label: label.into(),
            nick: String::new(),
            stream,
            pending: Vec::new(),
        })
    }

    /// The client's own address (the server sees it as the peer of its socket).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .unwrap_or_else(|e| panic!("client {}: no local address: {e}", self.label))
    }

    /// Connects to `addr` (bounded by `LINE_TIMEOUT`), reads nothing yet.
    #[track_caller]
    pub fn connect(label: impl Into<String>, addr: SocketAddr) -> Client {
        let label = label.into();
        let stream = TcpStream::connect_timeout(&addr, LINE_TIMEOUT)
            .unwrap_or_else(|e| panic!("client {label}: cannot connect to {addr}: {e}"));
        Client::new(label.clone(), stream)
            .unwrap_or_else(|e| panic!("client {label}: cannot set socket options: {e}"))
    }

    /// "A (guest3)": how failure messages name this client.
    pub fn who_am_i(&self) -> String {
        if self.nick.is_empty() {
            format!("client {}", self.label)
        } else {
            format!("client {} ({})", self.label, self.nick)
        }
    }

    /// A second handle on the same socket, for a writer thread while this one reads.
    #[track_caller]
    pub fn writer(&self) -> TcpStream {
        self.stream
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: cannot clone the socket: {e}", self.who_am_i()))
    }

    // ----- reading -----------------------------------------------------------------

    /// The next line (without its `\n`), or why there is none within `timeout`.
    pub fn try_line_within(&mut self, timeout: Duration) -> Result<String, ReadError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=pos).collect();
                line.pop();
                return String::from_utf8(line).map_err(|e| ReadError::NotUtf8(e.into_bytes()));
            }
            if self.pending.len() > MAX_SERVER_LINE {
                return Err(ReadError::TooLong(self.pending.len()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadError::Timeout {
                    partial: self.pending.clone(),
                    waited: now - start,
                });
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .map_err(ReadError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(ReadError::Closed {
                        partial: std::mem::take(&mut self.pending),
                        reset: None,
                    })
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                // A read timeout shows up as WouldBlock on Linux; the loop re-checks the deadline.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ReadError::Closed {
                        partial: std::mem::take(&mut self.pending),
                        reset: Some(e),
                    })
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// The next line, waiting up to `LINE_TIMEOUT`.
    pub fn try_line(&mut self) -> Result<String, ReadError> {
        self.try_line_within(LINE_TIMEOUT)
    }

    /// The next line; panics (naming this client) if there is none.
    #[track_caller]
    pub fn line(&mut self) -> String {
        match self.try_line() {
            Ok(line) => line,
            Err(e) => panic!("{}: expected a line, got {e}", self.who_am_i()),
        }
    }

    /// Checks that the next line is exactly `expected`.
    pub fn try_expect(&mut self, expected: &str) -> Result<(), String> {
        match self.try_line() {
            Ok(line) if line == expected => Ok(()),
            Ok(line) => Err(format!(
                "{}: expected the line {expected:?}, got {line:?}",
                self.who_am_i()
            )),
            Err(e) => Err(format!(
                "{}: expected the line {expected:?}, got {e}",
                self.who_am_i()
            )),
        }
    }

    /// Asserts that the next line is exactly `expected`.
    #[track_caller]
    pub fn expect(&mut self, expected: &str) {
        if let Err(e) = self.try_expect(expected) {
            panic!("{e}");
        }
    }

    /// Asserts that the next line starts with `prefix`; returns the rest of it.
    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let line = match self.try_line() {
            Ok(line) => line,
            Err(e) => panic!(
                "{}: expected a line starting with {prefix:?}, got {e}",
                self.who_am_i()
            ),
        };
        match line.strip_prefix(prefix) {
            Some(rest) => rest.to_string(),
            None => panic!(
                "{}: expected a line starting with {prefix:?}, got {line:?}",
                self.who_am_i()
            ),
        }
    }

    /// Checks that the server closes the connection before sending any further line.
    pub fn try_expect_closed(&mut self) -> Result<(), String> {
        match self.try_line() {
            Err(ReadError::Closed { partial, .. }) if partial.is_empty() => Ok(()),
            Err(e) => Err(format!(
                "{}: expected the server to close the connection, got {e}",
                self.who_am_i()
            )),
            Ok(line) => Err(format!(
                "{}: expected the server to close the connection, got the line {line:?}",
                self.who_am_i()
            )),
        }
    }

    /// Asserts that the server closes the connection before sending any further line.
    #[track_caller]
    pub fn expect_closed(&mut self) {
        if let Err(e) = self.try_expect_closed() {
            panic!("{e}");
        }
    }

    /// Asserts that no line (and no close) arrives within `SILENCE`.
    #[track_caller]
    pub fn expect_silence(&mut self, why: &str) {
        match self.try_line_within(SILENCE) {
            Err(ReadError::Timeout { partial, .. }) if partial.is_empty() => {}
            Err(ReadError::Timeout { partial, .. }) => panic!(
                "{}: expected nothing ({why}), got the start of a line {:?}",
                self.who_am_i(),
                String::from_utf8_lossy(&partial)
            ),
            Ok(line) => panic!(
                "{}: expected nothing ({why}), got the line {line:?}",
                self.who_am_i()
            ),
            Err(e) => panic!("{}: expected nothing ({why}), got {e}", self.who_am_i()),
        }
    }

    /// Reads and throws away everything until the server closes the connection, within
    /// `timeout` and `max_bytes`; returns how many bytes came. For a client that was not
    /// reading (a slow consumer): proves the server really closed it, and did not merely
    /// wait for it to read.
    pub fn try_drain_until_closed(
        &mut self,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<usize, String> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut total = std::mem::take(&mut self.pending).len();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{}: the server did not close the connection within {timeout:?} \
                     ({total} bytes read meanwhile)",
                    self.who_am_i()
                ));
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| format!("{}: {e}", self.who_am_i()))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(total),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("{}: socket error: {e}", self.who_am_i())),
            }
            if total > max_bytes {
                return Err(format!(
                    "{}: read {total} bytes and the server still did not close the \
                     connection (it must close a client that does not read, not wait for it)",
                    self.who_am_i()
                ));
            }
        }
    }

    // ----- writing -----------------------------------------------------------------

    /// Sends raw bytes as they are.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| {
            format!(
                "{}: cannot send {} bytes ({:?}...): {e}",
                self.who_am_i(),
                bytes.len(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            )
        })
    }

    /// Sends raw bytes as they are; panics on error.
    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send_raw(bytes) {
            panic!("{e}");
        }
    }

    /// Sends one line (`line` plus `\n`).
    pub fn try_send(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.try_send_raw(&bytes)
    }

    /// Sends one line (`line` plus `\n`); panics on error.
    #[track_caller]
    pub fn send(&mut self, line: &str) {
        if let Err(e) = self.try_send(line) {
            panic!("{e}");
        }
    }

    /// Closes our sending side only (the server sees EOF, we can still read).
    #[track_caller]
    pub fn shutdown_write(&mut self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            panic!("{}: shutdown(Write) failed: {e}", self.who_am_i());
        }
    }

    // ----- protocol helpers ----------------------------------------------------------

    /// Reads the welcome line, checks its form and remembers the nick it gives.
    #[track_caller]
    pub fn expect_welcome(&mut self) -> String {
        let line = match self.try_line() {
            Ok(line) => line,
            Err(e) => panic!("{}: expected `* welcome guestN`, got {e}", self.who_am_i()),
        };
        match parse_welcome(&line) {
            Ok(nick) => {
                self.nick = nick.clone();
                nick
            }
            Err(e) => panic!("{}: {e}", self.who_am_i()),
        }
    }

    /// Sends `/nick NEW`, expects `* you are now NEW`, remembers the nick.
    #[track_caller]
    pub fn rename(&mut self, new: &str) {
        self.send(&format!("/nick {new}"));
        self.expect(&format!("* you are now {new}"));
        self.nick = new.to_string();
    }

    /// Sends `/who` and returns the room and the members it lists.
    pub fn try_who(&mut self) -> Result<(String, Vec<String>), String> {
        self.try_send("/who")?;
        let line = self
            .try_line()
            .map_err(|e| format!("{}: expected the reply to /who, got {e}", self.who_am_i()))?;
        parse_who(&line).map_err(|e| format!("{}: {e}", self.who_am_i()))
    }

    /// Proves that nothing else is queued for this client: sends `/who` and asserts that its
    /// reply is the very next line. (A line that arrived unexpectedly fails the check.)
    #[track_caller]
    pub fn sync(&mut self) {
        if let Err(e) = self.try_who() {
            panic!("{e} (nothing else was expected before it)");
        }
    }

    /// `sync` for threads: returns the failure instead of panicking.
    pub fn try_sync(&mut self) -> Result<(), String> {
        self.try_who()
            .map(|_| ())
            .map_err(|e| format!("{e} (nothing else was expected before it)"))
    }

    /// Sends `/who` and asserts that the next line lists exactly `members` of `room`
    /// (in any order: the protocol does not fix one).
    #[track_caller]
    pub fn expect_who(&mut self, room: &str, members: &[&str]) {
        let (got_room, got) = match self.try_who() {
            Ok(reply) => reply,
            Err(e) => panic!("{e}"),
        };
        let want: BTreeSet<&str> = members.iter().copied().collect();
        let have: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        if got_room != room || want != have || got.len() != members.len() {
            panic!(
                "{}: /who: expected room {room:?} with members {want:?}, got room {got_room:?} \
                 with {got:?}",
                self.who_am_i()
            );
        }
    }

    /// Sends `/rooms` and asserts the exact set of `(room, members)` it lists.
    #[track_caller]
    pub fn expect_rooms(&mut self, rooms: &[(&str, usize)]) {
        self.send("/rooms");
        let line = self.line();
        let got = match parse_rooms(&line) {
            Ok(got) => got,
            Err(e) => panic!("{}: {e}", self.who_am_i()),
        };
        let want: BTreeSet<(String, usize)> =
            rooms.iter().map(|&(r, n)| (r.to_string(), n)).collect();
        let have: BTreeSet<(String, usize)> = got.iter().cloned().collect();
        if want != have || got.len() != rooms.len() {
            panic!(
                "{}: /rooms: expected {want:?} (any order), got {line:?}",
                self.who_am_i()
            );
        }
    }
}

// ----- parsers of server lines (pure, unit-tested) -------------------------------------

/// Whether `name` is a legal nick or room name: 1 to 24 ASCII letters, digits, `_`, `-`.
pub fn is_name(name: &str) -> bool {
    (1..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `* welcome guestN[ more text]` -> `guestN`.
pub fn parse_welcome(line: &str) -> Result<String, String> {
    let rest = line
        .strip_prefix("* welcome ")
        .ok_or_else(|| format!("expected `* welcome guestN`, got {line:?}"))?;
    let nick = rest.split(' ').next().unwrap_or_default();
    let digits = nick.strip_prefix("guest").unwrap_or_default();
    if !is_name(nick) || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected `* welcome guestN` (N a number), got {line:?}"
        ));
    }
    Ok(nick.to_string())
}

/// `* members of ROOM: a, b, c` -> (`ROOM`, [a, b, c]). A list cut at 100 names ends in
/// `and N more` (with or without a comma before it); those N are not returned.
pub fn parse_who(line: &str) -> Result<(String, Vec<String>), String> {
    let bad = || format!("expected `* members of ROOM: a, b, c`, got {line:?}");
    let rest = line.strip_prefix("* members of ").ok_or_else(bad)?;
    let (room, list) = rest.split_once(": ").ok_or_else(bad)?;
    if !is_name(room) {
        return Err(bad());
    }
    let mut names = Vec::new();
    for item in list.split(", ") {
        // "a, b and 3 more" or "a, b, and 3 more": keep the name, drop the tail.
        let item = match item.strip_suffix(" more") {
            Some(_) if item.starts_with("and ") => "",
            Some(_) => item.rfind(" and ").map_or(item, |i| &item[..i]),
            None => item,
        };
        if item.is_empty() {
            continue;
        }
        if !is_name(item) {
            return Err(format!("{}: {item:?} is not a nick", bad()));
        }
        names.push(item.to_string());
    }
    Ok((room.to_string(), names))
}

/// The `N` of a `/who` reply that ends in `and N more`, if it does.
pub fn who_more(line: &str) -> Option<usize> {
    let tail = line.strip_suffix(" more")?;
    let n = tail.rsplit(' ').next()?;
    let before = tail[..tail.len() - n.len()].trim_end();
    if before.ends_with("and") {
        n.parse().ok()
    } else {
        None
    }
}

/// `* rooms: lobby (3), rust (2)` -> [(lobby, 3), (rust, 2)].
pub fn parse_rooms(line: &str) -> Result<Vec<(String, usize)>, String> {
    let bad = || format!("expected `* rooms: ROOM (N), ...`, got {line:?}");
    let list = line.strip_prefix("* rooms: ").ok_or_else(bad)?;
    list.split(", ")
        .map(|item| {
            let (room, count) = item.split_once(" (").ok_or_else(bad)?;
            let count = count.strip_suffix(')').ok_or_else(bad)?;
            if !is_name(room) {
                return Err(bad());
            }
            Ok((room.to_string(), count.parse().map_err(|_| bad())?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn welcome_lines() {
        assert_eq!(parse_welcome("* welcome guest1").unwrap(), "guest1");
        assert_eq!(
            parse_welcome("* welcome guest12 (type /help)").unwrap(),
            "guest12"
        );
        for bad in [
            "* welcome alice",
            "* welcome guest",
            "* welcome guestx1",
            "welcome guest1",
            "* welcome  guest1",
            "* Welcome guest1",
        ] {
            assert!(parse_welcome(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn who_lines() {
        assert_eq!(
            parse_who("* members of lobby: a, b_c, d-1").unwrap(),
            ("lobby".into(), vec!["a".into(), "b_c".into(), "d-1".into()])
        );
        let (room, names) = parse_who("* members of x: a, b and 7 more").unwrap();
        assert_eq!((room.as_str(), names.len()), ("x", 2));
        let (_, names) = parse_who("* members of x: a, band, and 7 more").unwrap();
        assert_eq!(names, vec!["a".to_string(), "band".to_string()]);
        let (_, names) = parse_who("* members of x: a, b, and 7 more").unwrap();
        assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(who_more("* members of x: a, b, and 7 more"), Some(7));
        assert_eq!(who_more("* members of x: a, b and 200 more"), Some(200));
        assert_eq!(who_more("* members of x: a, b"), None);
        assert!(parse_who("* members of lobby a").is_err());
        assert!(parse_who("* members of lobby: <a>").is_err());
        assert!(parse_who("* rooms: lobby (1)").is_err());
    }

    #[test]
    fn rooms_lines() {
        assert_eq!(
            parse_rooms("* rooms: lobby (3), rust (2)").unwrap(),
            vec![("lobby".to_string(), 3), ("rust".to_string(), 2)]
        );
        assert!(parse_rooms("* rooms: lobby 3").is_err());
        assert!(parse_rooms("* rooms: lobby (x)").is_err());
    }

    #[test]
    fn names() {
        assert!(is_name("a") && is_name("A_b-9") && is_name(&"x".repeat(24)));
        assert!(!is_name("") && !is_name(&"x".repeat(25)) && !is_name("a b") && !is_name("é"));
    }

    /// A fake peer: accepts one connection and runs `script` on it.
    fn with_peer(script: impl FnOnce(TcpStream) + Send + 'static) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || script(listener.accept().unwrap().0));
        Client::connect("T", addr)
    }

    #[test]
    fn lines_split_across_writes_and_joined_in_one_are_both_read() {
        let mut c = with_peer(|mut s| {
            s.write_all(b"* hel").unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"lo\n* two\n* three").unwrap();
        });
        c.expect("* hello");
        c.expect("* two");
        // "* three" never gets its newline: the peer closes, the client reports it.
        match c.try_line() {
            Err(ReadError::Closed { partial, .. }) => assert_eq!(partial, b"* three"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_timeout_keeps_the_unfinished_line() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut c = with_peer(move |mut s| {
            s.write_all(b"* par").unwrap();
            rx.recv().unwrap();
            s.write_all(b"tial\n").unwrap();
            rx.recv().ok();
        });
        match c.try_line_within(Duration::from_millis(100)) {
            Err(ReadError::Timeout { partial, .. }) => assert_eq!(partial, b"* par"),
            other => panic!("{other:?}"),
        }
        tx.send(()).unwrap();
        c.expect("* partial");
    }

    #[test]
    fn expectations_fail_with_what_was_expected_and_got() {
        let mut c = with_peer(|mut s| {
            s.write_all(b"* one\n\xff\n").unwrap();
        });
        let err = c.try_expect("* two").unwrap_err();
        assert!(
            err.contains("\"* two\"") && err.contains("\"* one\""),
            "{err}"
        );
        assert!(matches!(c.try_line(), Err(ReadError::NotUtf8(b)) if b == [0xff]));
        assert!(c.try_expect_closed().is_ok());
    }

    #[test]
    fn silence_fails_when_a_line_comes() {
        let mut c = with_peer(|mut s| {
            s.write_all(b"* surprise\n").unwrap();
        });
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.expect_silence("testing");
        }));
        assert!(result.is_err());
    }
}
