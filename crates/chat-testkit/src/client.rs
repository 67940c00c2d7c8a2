//! A test client: one TCP connection to the server under test, read line by line with a
//! deadline on every read, and assertions that say which client expected what and got what.
//!
//! Every method that can block has a bound: reads use a deadline (the client's own timeout,
//! [`LINE_TIMEOUT`] unless a check sets another with [`Client::set_timeout`]), writes a write
//! timeout. Assertion methods panic with a precise message (they are `#[track_caller]`, so
//! the panic points at the line of the check); the `try_*` methods return the failure
//! instead, for checks that run clients on their own threads.
//!
//! The parsers of the server's list replies (`/who`, `/rooms`) accept exactly the format of
//! the specification (`book/src/specification.md`): separators, order, the cap of 100 and its
//! ` and N more` tail.
//!
//! Its own tests (parsers, and reads against a fake peer): `cargo test -p chat-testkit`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

mod protocol;

/// How long a client waits, by default, for a line it expects now (a reply, a notice caused
/// by another client's line it has seen handled). A correct server answers in microseconds;
/// 3 s is headroom for debug builds on a loaded 2-core machine, and a stall of seconds fails.
/// Checks that must allow for a protocol delay (a sender waiting up to `SLOW_GRACE` for a
/// client that does not read, a close grace) add that delay explicitly.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a client listens to prove that *nothing* arrives (mode limits). A silence check
/// can only pass wrongly (the line comes later), never fail wrongly.
pub const SILENCE: Duration = Duration::from_millis(500);

/// The most names (or rooms) one `/who` (or `/rooms`) reply lists (the specification's
/// list cap).
pub const LIST_CAP: usize = 100;

/// Bound on one line from the server. The longest legal line is a 1024-byte message plus
/// `<NICK> `; anything far longer means the server lost its framing.
const MAX_SERVER_LINE: usize = 64 * 1024;

/// Bytes asked for by one `read`.
const READ_CHUNK: usize = 64 * 1024;

/// Why a read did not produce a line.
#[derive(Debug)]
pub enum ReadError {
    /// The server closed the connection: an orderly end of stream (`reset: None`, a read
    /// returned 0 after a FIN) or a reset (`ECONNRESET`).
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

/// Socket buffer sizes to set before `connect` (so the TCP window is small from the start).
/// Setting one turns the kernel's autotuning of that buffer off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Buffers {
    /// `SO_RCVBUF`, if set.
    pub recv: Option<usize>,
    /// `SO_SNDBUF`, if set.
    pub send: Option<usize>,
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
    /// Bytes received; `buf[start..]` is not yet returned as a line (an unfinished line, or
    /// more lines that came in the same read). Kept across timeouts so no byte is ever lost.
    buf: Vec<u8>,
    /// Where the unreturned bytes of `buf` begin.
    start: usize,
    /// How many bytes after `start` are known to hold no `\n`.
    scanned: usize,
    /// How long a read waits for a line by default.
    timeout: Duration,
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
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            timeout: LINE_TIMEOUT,
        })
    }

    /// The client's own address (the server sees it as the peer of its socket).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream
            .local_addr()
            .unwrap_or_else(|e| panic!("client {}: no local address: {e}", self.label))
    }

    /// The address the client is connected to (the server's, or its node's).
    pub fn peer_addr(&self) -> SocketAddr {
        self.stream
            .peer_addr()
            .unwrap_or_else(|e| panic!("client {}: no peer address: {e}", self.label))
    }

    /// Connects to `addr` (bounded by `LINE_TIMEOUT`), reads nothing yet.
    #[track_caller]
    pub fn connect(label: impl Into<String>, addr: SocketAddr) -> Client {
        Client::connect_with(label, addr, Buffers::default())
    }

    /// Connects to `addr` with the socket buffers `buffers` set before `connect`.
    #[track_caller]
    pub fn connect_with(label: impl Into<String>, addr: SocketAddr, buffers: Buffers) -> Client {
        let label = label.into();
        let setup = || -> io::Result<TcpStream> {
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            if let Some(n) = buffers.recv {
                sock.set_recv_buffer_size(n)?;
            }
            if let Some(n) = buffers.send {
                sock.set_send_buffer_size(n)?;
            }
            sock.connect_timeout(&addr.into(), LINE_TIMEOUT)?;
            Ok(sock.into())
        };
        let stream =
            setup().unwrap_or_else(|e| panic!("client {label}: cannot connect to {addr}: {e}"));
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

    /// How long reads wait for a line by default.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets how long reads wait for a line by default, and writes to block at most (a
    /// sender whose input waits for room may block for `SLOW_GRACE`, legitimately).
    #[track_caller]
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        if let Err(e) = self.stream.set_write_timeout(Some(timeout)) {
            panic!("{}: set_write_timeout: {e}", self.who_am_i());
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

    /// The bytes received and not yet returned.
    fn unread(&self) -> Vec<u8> {
        self.buf[self.start..].to_vec()
    }

    /// Takes everything received and not yet returned.
    fn take_unread(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        rest
    }

    /// The next complete line already received, if any.
    fn buffered_line(&mut self) -> Option<Result<String, ReadError>> {
        let from = self.start + self.scanned;
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(pos) => {
                let end = from + pos;
                let line = self.buf[self.start..end].to_vec();
                self.start = end + 1;
                self.scanned = 0;
                Some(String::from_utf8(line).map_err(|e| ReadError::NotUtf8(e.into_bytes())))
            }
            None => {
                self.scanned = self.buf.len() - self.start;
                None
            }
        }
    }

    /// One `read` of at most [`READ_CHUNK`] bytes, appended to the buffer, with a deadline.
    /// `Ok(0)` is the end of the stream.
    fn read_more(&mut self, deadline: Instant) -> Result<Option<usize>, io::Error> {
        // Move the unfinished tail to the front before growing the buffer.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        self.stream.set_read_timeout(Some(deadline - now))?;
        let mut chunk = [0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(Some(n))
            }
            // A read timeout shows up as WouldBlock on Linux; the caller re-checks the deadline.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The next line (without its `\n`), or why there is none within `timeout`.
    pub fn try_line_within(&mut self, timeout: Duration) -> Result<String, ReadError> {
        let start = Instant::now();
        let deadline = start + timeout;
        loop {
            if let Some(line) = self.buffered_line() {
                return line;
            }
            if self.scanned > MAX_SERVER_LINE {
                return Err(ReadError::TooLong(self.scanned));
            }
            match self.read_more(deadline) {
                Ok(Some(0)) => {
                    return Err(ReadError::Closed {
                        partial: self.take_unread(),
                        reset: None,
                    })
                }
                Ok(Some(_)) => {}
                Ok(None) if Instant::now() >= deadline => {
                    return Err(ReadError::Timeout {
                        partial: self.unread(),
                        waited: start.elapsed(),
                    })
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ReadError::Closed {
                        partial: self.take_unread(),
                        reset: Some(e),
                    })
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// The next line, waiting up to this client's timeout.
    pub fn try_line(&mut self) -> Result<String, ReadError> {
        self.try_line_within(self.timeout)
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

    /// Checks that the server closes the connection (an orderly EOF or a reset) before
    /// sending any further line. For closes where the specification promises no more than
    /// "closed" (`! server full`, a slow consumer); see [`Client::try_expect_eof`].
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

    /// Checks that the next thing is the end of the stream — a read returning 0 after the
    /// server's FIN — and not a line, a reset (`ECONNRESET`) or silence. What the
    /// specification's *Closing* promises after `* bye`, `* server shutting down` and the
    /// replies to a half-closed client.
    pub fn try_expect_eof(&mut self) -> Result<(), String> {
        match self.try_line() {
            Err(ReadError::Closed {
                partial,
                reset: None,
            }) if partial.is_empty() => Ok(()),
            Err(ReadError::Closed {
                reset: Some(e),
                partial,
            }) => Err(format!(
                "{}: expected the end of the stream (a read returning 0), got a reset ({e}){}: \
                 a server that closes must end its side with a FIN and read what the client \
                 still sends, never reset it",
                self.who_am_i(),
                if partial.is_empty() {
                    String::new()
                } else {
                    format!(" after {:?}", String::from_utf8_lossy(&partial))
                }
            )),
            Err(e) => Err(format!(
                "{}: expected the end of the stream, got {e}",
                self.who_am_i()
            )),
            Ok(line) => Err(format!(
                "{}: expected the end of the stream, got the line {line:?}",
                self.who_am_i()
            )),
        }
    }

    /// Asserts [`Client::try_expect_eof`].
    #[track_caller]
    pub fn expect_eof(&mut self) {
        if let Err(e) = self.try_expect_eof() {
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
        let mut total = self.take_unread().len();
        let mut chunk = vec![0u8; READ_CHUNK];
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

    /// Sends one byte as TCP urgent data (`send(.., MSG_OOB)`): the receiver's kernel keeps
    /// it out of the normal stream (unless the server asked for `SO_OOBINLINE`), and a
    /// `read` stops short at the urgent mark.
    #[track_caller]
    pub fn send_urgent(&mut self, byte: u8) {
        let sent = socket2::SockRef::from(&self.stream).send_out_of_band(&[byte]);
        match sent {
            Ok(1) => {}
            Ok(n) => panic!("{}: send(MSG_OOB) sent {n} bytes", self.who_am_i()),
            Err(e) => panic!("{}: send(MSG_OOB): {e}", self.who_am_i()),
        }
    }

    /// Closes our sending side only (the server sees EOF, we can still read).
    #[track_caller]
    pub fn shutdown_write(&mut self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            panic!("{}: shutdown(Write) failed: {e}", self.who_am_i());
        }
    }
}

// ----- parsers of server lines (pure, unit-tested) -------------------------------------

pub use crate::parse::{
    parse_rooms, parse_rooms_list, parse_welcome, parse_who, parse_who_list, rooms_line,
    rooms_more, who_line, who_more,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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
    fn many_lines_in_many_reads_come_out_in_order() {
        let mut c = with_peer(|mut s| {
            for i in 0..20_000 {
                s.write_all(format!("* line {i}\n").as_bytes()).unwrap();
            }
        });
        for i in 0..20_000 {
            c.expect(&format!("* line {i}"));
        }
        c.expect_eof();
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
        assert!(c.try_expect_eof().is_ok());
    }

    #[test]
    fn a_reset_is_not_an_end_of_stream() {
        // The peer closes with our bytes unread: its kernel answers with a reset.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut c = with_peer(move |s| {
            rx.recv().unwrap();
            drop(s);
        });
        c.send("unread");
        std::thread::sleep(Duration::from_millis(50));
        tx.send(()).unwrap();
        let err = c.try_expect_eof().unwrap_err();
        assert!(err.contains("reset"), "{err}");
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
