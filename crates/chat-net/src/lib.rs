//! # chat-net: what every stage does the same way around its sockets
//!
//! `chat-core` is the protocol without I/O; this crate is the small amount of I/O plumbing
//! that is *not* the lesson of any chapter, so that stage crates contain only their
//! concurrency model:
//!
//! - [`Config`]: the flags every stage takes (`--addr`, `--max-clients`, `--outbox-bytes`);
//! - [`bind`]: a listener with a backlog of [`BACKLOG`] (std's and mio's 128 drops SYNs under a
//!   burst of connects, and each dropped SYN costs the client a one-second retry);
//! - [`announce`]: the `listening on ADDR` line tests and the load generator wait for;
//! - [`Shutdown`]: SIGINT/SIGTERM turned into a flag and a readable file descriptor;
//! - [`accept`]: a blocking accept loop step that backs off on EMFILE instead of spinning.
//!
//! *Invariant:* nothing here knows the protocol's rules; that is `chat-core`'s job.

mod shutdown;

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

pub use shutdown::Shutdown;

/// The listen backlog. The kernel caps it at `net.core.somaxconn` (4096 here).
pub const BACKLOG: i32 = 4096;

/// How long to stop accepting after running out of descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The flags every stage shares. Stages `#[command(flatten)]` it into their own `Parser`.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = chat_core::DEFAULT_ADDR)]
    pub addr: SocketAddr,
    /// Connection limit: beyond it, new clients get `! server full`.
    #[arg(long, default_value_t = chat_core::DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// What a client may be owed, in bytes: past it, the senders whose lines reach it wait,
    /// and a client that stays behind for a second is dropped as a slow consumer.
    #[arg(long, default_value_t = chat_core::DEFAULT_OUTBOX_BYTES, value_parser = parse_outbox_bytes)]
    pub outbox_bytes: usize,
}

/// `--outbox-bytes` must hold the longest line one input line can cost a client (see
/// `chat_core::MIN_OUTBOX_BYTES`), or a sender could wait for room for ever.
fn parse_outbox_bytes(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= chat_core::MIN_OUTBOX_BYTES => Ok(n),
        Ok(_) => Err(format!("must be at least {}", chat_core::MIN_OUTBOX_BYTES)),
        Err(err) => Err(err.to_string()),
    }
}

impl Config {
    /// The limits `chat-core` needs.
    pub fn limits(&self) -> chat_core::Limits {
        chat_core::Limits {
            max_clients: self.max_clients,
            outbox_bytes: self.outbox_bytes,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_clients: chat_core::DEFAULT_MAX_CLIENTS,
            outbox_bytes: chat_core::DEFAULT_OUTBOX_BYTES,
        }
    }
}

/// Logs go to stderr (stdout carries only the `listening on` line). `RUST_LOG=debug` shows
/// every connection; the default shows start, stop and errors.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .try_init()
        .ok(); // already initialised (e.g. in tests): keep the first
}

/// Raises this process's soft limit on open descriptors (`ulimit -n`) to its hard limit.
///
/// Every connection is a descriptor, and the soft limit is often 1024 by default: a C10K
/// server that does not raise it fails at a thousand clients with EMFILE. Only the soft
/// limit can be raised without privileges, and only up to the hard one (20,000 here).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid `rlimit` for the duration of the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            log::warn!(
                "could not raise the descriptor limit: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Binds a TCP listener with a backlog of [`BACKLOG`] and `SO_REUSEADDR`.
// ANCHOR: bind
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
// ANCHOR_END: bind

/// Prints `listening on ADDR` (the real address, port 0 resolved) on stdout and flushes it.
pub fn announce(listener: &TcpListener) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    Ok(addr)
}

/// Everything a stage's `main` does before its `run`: logging, bind, announce, and a
/// [`Shutdown`] wired to SIGINT and SIGTERM.
pub fn start(config: &Config) -> io::Result<(TcpListener, Shutdown)> {
    init_logging();
    raise_fd_limit();
    let listener = bind(config.addr)?;
    let shutdown = Shutdown::new()?;
    shutdown.on_signals()?;
    let addr = announce(&listener)?;
    log::info!(
        "listening on {addr} (max {} clients, outbox {} bytes)",
        config.max_clients,
        config.outbox_bytes
    );
    Ok((listener, shutdown))
}

/// What to do after `accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// The failure concerned one connection (it was reset before we took it, a signal
    /// interrupted us): accept again at once.
    Retry,
    /// The process or the system is out of something (descriptors: EMFILE, ENFILE; memory:
    /// ENOBUFS, ENOMEM): accepting again at once would fail again at once, and a loop that
    /// retries immediately spins a core at 100%. Stop accepting for [`ACCEPT_BACKOFF`].
    Backoff,
}

/// Classifies an `accept` error, logging the ones that need backing off.
pub fn classify_accept_error(err: &io::Error) -> AcceptError {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            log::warn!("accept: {err}; pausing accepts for {ACCEPT_BACKOFF:?}");
            AcceptError::Backoff
        }
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM | libc::ECONNRESET) => {
            AcceptError::Retry
        }
        _ if err.kind() == io::ErrorKind::WouldBlock => AcceptError::Retry,
        _ => {
            log::warn!("accept: {err}; pausing accepts for {ACCEPT_BACKOFF:?}");
            AcceptError::Backoff
        }
    }
}

/// Blocks until a connection arrives and returns it, or returns `None` once `shutdown` has
/// been triggered. Errors never end the loop: EMFILE and friends are logged and backed off.
// ANCHOR: accept
pub fn accept(listener: &TcpListener, shutdown: &Shutdown) -> Option<TcpStream> {
    loop {
        if shutdown.is_triggered() {
            return None;
        }
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(_) if shutdown.is_triggered() => return None,
            Err(err) => match classify_accept_error(&err) {
                AcceptError::Retry => continue,
                AcceptError::Backoff => std::thread::sleep(ACCEPT_BACKOFF),
            },
        }
    }
}
// ANCHOR_END: accept

/// Refuses a connection beyond the limit: `! server full`, then close. Best effort: the
/// socket is new, so the line fits in its buffer; if the client is already gone, so be it.
pub fn refuse(stream: TcpStream) {
    let _ = (&stream).write_all(chat_core::SERVER_FULL_LINE);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Turns `run`'s result into the process exit status, logging an error.
pub fn exit(result: io::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => {
            log::info!("stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            log::error!("{err}");
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
