//! The socket side, shared by both modes: connecting with a clear message when it fails,
//! and reading the server's lines on a thread of their own.

use std::fmt;
use std::io::{self, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::lines::Lines;

/// How long the server may stay silent after we connected before we say so.
///
/// A connection is *accepted by the kernel* as soon as the server listens, whether or not
/// any code of the server is serving it: a sequential server busy with another client, or a
/// pool whose every thread is taken, leaves us in the kernel's queue, connected, hearing
/// nothing. A conforming server sends its welcome at once, so one second of silence means
/// exactly that, and the person should be told rather than left looking at a dead prompt.
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// How long one attempt to connect may take (an unreachable host, or a full backlog).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why we could not connect, worded for a person.
#[derive(Debug)]
pub struct ConnectError {
    /// The address as given.
    addr: String,
    /// What went wrong.
    error: io::Error,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = &self.addr;
        match self.error.kind() {
            io::ErrorKind::ConnectionRefused => write!(
                f,
                "cannot connect to {addr}: connection refused: no server listens there \
                 (start a stage first, e.g. `cargo run -p chat-threads`)"
            ),
            io::ErrorKind::TimedOut => write!(
                f,
                "cannot connect to {addr}: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
            _ => write!(f, "cannot connect to {addr}: {}", self.error),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects to `addr` (`HOST:PORT`), trying each address it names in turn.
pub fn connect(addr: &str) -> Result<TcpStream, ConnectError> {
    let fail = |error| ConnectError {
        addr: addr.to_owned(),
        error,
    };
    let mut last = io::Error::new(
        io::ErrorKind::InvalidInput,
        "the name resolves to no address",
    );
    for sock in addr.to_socket_addrs().map_err(fail)? {
        match TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT) {
            Ok(stream) => {
                // Lines are small and a person waits for each: do not let Nagle hold them.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

/// What the reading thread reports, in order.
#[derive(Debug)]
pub enum FromServer {
    /// One line, without its `\n`.
    Line(String),
    /// Nothing has arrived [`ANSWER_WAIT`] after connecting.
    Silent,
    /// The first bytes arrived after a [`FromServer::Silent`], this long after connecting.
    AnsweredAfter(Duration),
    /// The server closed its side of the connection (or reset it): no more lines.
    Closed,
    /// Reading failed.
    Failed(io::Error),
}

/// Reads the server's lines until it closes, reporting each to `report`, and reports
/// [`FromServer::Closed`] or [`FromServer::Failed`] last. Meant for a thread of its own.
// ANCHOR: read_server
pub fn read_server(mut stream: TcpStream, mut report: impl FnMut(FromServer)) {
    let connected = Instant::now();
    let mut lines = Lines::new();
    let mut buf = [0u8; 16 * 1024];
    // Until the server says anything, wake up once after ANSWER_WAIT to say it is silent.
    let _ = stream.set_read_timeout(Some(ANSWER_WAIT));
    let mut heard = false;
    let mut silent = false;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break report(FromServer::Closed),
            Ok(n) => {
                if !heard {
                    heard = true;
                    let _ = stream.set_read_timeout(None);
                    if silent {
                        report(FromServer::AnsweredAfter(connected.elapsed()));
                    }
                }
                lines.push(&buf[..n], |line| report(FromServer::Line(line.to_owned())));
            }
            Err(e) if !heard && is_timeout(&e) => {
                silent = true;
                report(FromServer::Silent);
                let _ = stream.set_read_timeout(None); // said once; now just wait
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset after the server's last lines is still the end of the conversation.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                break report(FromServer::Closed)
            }
            Err(e) => break report(FromServer::Failed(e)),
        }
    }
}
// ANCHOR_END: read_server

/// A read timeout shows up as `WouldBlock` or `TimedOut`, depending on the platform.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The note for [`FromServer::Silent`]: the connection is open (the kernel completed it), but
/// nobody in the server serves it yet; see [`ANSWER_WAIT`].
pub const WAITING: &str = "connected, waiting for the server to answer…";

/// The note for [`FromServer::AnsweredAfter`].
pub fn answered_after(after: Duration) -> String {
    format!("the server answered after {:.1}s", after.as_secs_f64())
}
