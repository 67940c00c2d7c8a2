//! # Stage 08: tokio
//!
//! Stages 05 to 07 built, piece by piece, what an async runtime is made of: a reactor that
//! waits for readiness (epoll, then mio), tasks that are state machines, wakers that connect
//! the two, and an executor that polls what was woken. This stage uses the real thing. The
//! code reads like the thread-per-client server of stage 02 — one function per client,
//! written top to bottom — but each "thread" is a task of a few hundred bytes, and tokio runs
//! ten thousand of them on one thread (`--flavor current-thread`) or on a few worker threads
//! (`--flavor multi-thread`, the default, with `--threads N`, one per core unless told).
//!
//! ```text
//! cargo run --release -p chat-tokio                                # multi-thread
//! cargo run --release -p chat-tokio -- --flavor current-thread     # one thread
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! ## How bytes move
//!
//! All clients share one [`chat_core::Server`] behind a `std::sync::Mutex`, which is never
//! held across an `.await`: that, each client's socket and doorbell, and the step that carries
//! out the server's events are [`chat_tasks`], the part stages 08 to 10 share. The task that
//! reads a line also writes what it queued for others, straight into their sockets, without
//! waiting (`try_write_vectored`). A client's own task wakes only for what concerns it: its
//! socket has bytes to read, its socket did not take everything and became writable again, or
//! its doorbell rang (it may read again, or the server closed it). Reading uses a buffer on the worker
//! thread's stack, inside a plain function, so an idle task holds no read buffer.
//!
//! tokio's own `examples/chat.rs` gives each peer an *unbounded* channel; here what a client is
//! owed is bounded by `--outbox-bytes`, and the server's flow control decides who waits
//! (the sender) and who is cut (a client that stays behind: a slow consumer).

#![forbid(unsafe_code)]

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::Shutdown as Direction;
use std::num::NonZeroUsize;
use std::os::fd::AsFd as _;
use std::sync::Arc;

use chat_net::{AcceptError, Config, Shutdown};
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Bytes read per `read`, into a buffer on the stack of the thread that polls the task.
const READ_BUF: usize = 4096;

/// The shared server, with tokio's socket type (see [`chat_tasks::Shared`]).
type Shared = chat_tasks::Shared<TcpStream>;

/// A client, as its task holds it (see [`chat_tasks::Client`]).
type Client = chat_tasks::Client<TcpStream>;

// ANCHOR: flavor
/// Which of tokio's two schedulers runs the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// Every task on the thread that calls [`run`]: one event loop, like stages 04 to 07.
    CurrentThread,
    /// A pool of worker threads, each with its own queue of tasks, stealing from each other
    /// when their own queue runs dry.
    MultiThread,
}

/// The flags of this stage, on top of [`chat_net::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    /// Which tokio scheduler runs the client tasks.
    #[arg(long, value_enum, default_value_t = Flavor::MultiThread)]
    pub flavor: Flavor,
    /// Worker threads of the multi-thread scheduler (default: one per core).
    #[arg(long)]
    pub threads: Option<NonZeroUsize>,
}

/// Builds the runtime the flags ask for. `enable_all` turns on the two drivers the tasks
/// need: I/O (the reactor: epoll underneath, through mio) and time (the timer wheel).
fn build_runtime(flags: &RuntimeConfig) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = match flags.flavor {
        Flavor::CurrentThread => {
            if flags.threads.is_some() {
                log::warn!("--threads is ignored with --flavor current-thread");
            }
            tokio::runtime::Builder::new_current_thread()
        }
        Flavor::MultiThread => {
            let threads = flags
                .threads
                .or_else(|| std::thread::available_parallelism().ok())
                .map_or(1, NonZeroUsize::get);
            log::info!("tokio multi-thread scheduler, worker threads: {threads}");
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    builder.enable_all().thread_name("chat-tokio").build()
}
// ANCHOR_END: flavor

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            flavor: Flavor::MultiThread,
            threads: None,
        }
    }
}

// ANCHOR: run
/// Serves clients on a tokio runtime until `shutdown` is triggered.
///
/// `run` is a plain function: it builds the runtime itself (there is no `#[tokio::main]`), so
/// the flavor is a flag and tests can start it like any other stage.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
    flags: RuntimeConfig,
) -> io::Result<()> {
    let runtime = build_runtime(&flags)?;
    let result = runtime.block_on(serve(listener, config, shutdown));
    // Tasks still alive now belong to clients the server has closed that did not run since
    // (or, after a failed shutdown, to anybody): dropping the runtime drops them, and with
    // them their sockets.
    drop(runtime);
    result
}

/// The server's main task: accept until told to stop, then let the server say goodbye to
/// everybody.
async fn serve(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<()> {
    // tokio's reactor needs non-blocking sockets, and `from_std` registers the listener with
    // the reactor of the runtime it runs in: this must happen inside `block_on`.
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let stop = watch(&shutdown)?;
    let shared = Arc::new(Shared::new(config.limits(), write, hang_up));
    let ticker = tokio::spawn(ticker(Arc::clone(&shared)));

    accept_loop(&listener, &stop, &shared).await;

    log::info!("shutting down ({} clients)", shared.connections());
    drop(listener); // connections arriving from now on are refused by the kernel
    shared.shutdown();
    let stop_wait = chat_tasks::STOP_WAIT;
    if tokio::time::timeout(stop_wait, shared.stopped())
        .await
        .is_err()
    {
        log::warn!("the server did not stop within {stop_wait:?}; dropping its clients");
    }
    ticker.abort();
    Ok(())
}
// ANCHOR_END: run

// ANCHOR: watch
/// The shutdown switch as a tokio socket. [`Shutdown`] is a socket pair that becomes readable
/// when SIGINT/SIGTERM arrives (or a test triggers it); a duplicate of its descriptor, owned
/// by tokio, is watched like any client socket. It is never read: readable means "stop".
fn watch(shutdown: &Shutdown) -> io::Result<UnixStream> {
    let fd = shutdown.as_fd().try_clone_to_owned()?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}
// ANCHOR_END: watch

// ANCHOR: accept_loop
/// Accepts connections until the shutdown switch becomes readable.
///
/// tokio remembers that the listener was reported readable and calls `accept(2)` directly
/// until the kernel says `EAGAIN`; only then does this task wait for the next event. A burst
/// of connections is drained without a trip through epoll for each.
async fn accept_loop(listener: &TcpListener, stop: &UnixStream, shared: &Arc<Shared>) {
    loop {
        tokio::select! {
            biased; // check the switch first: once it is on, accept nobody else
            // An error here means the reactor is gone, which also means: stop.
            _ = stop.readable() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => admit(shared, stream),
                Err(err) => match chat_net::classify_accept_error(&err) {
                    AcceptError::Retry => {}
                    // Out of descriptors (EMFILE): the next accept would fail at once. A timer
                    // parks this task instead of spinning; the clients' tasks run meanwhile.
                    AcceptError::Backoff => tokio::time::sleep(chat_net::ACCEPT_BACKOFF).await,
                },
            },
        }
    }
}
// ANCHOR_END: accept_loop

// ANCHOR: admit
/// Registers a new connection with the server (its welcome is written right away) and spawns
/// its task, or refuses it with `! server full` beyond `--max-clients`.
fn admit(shared: &Arc<Shared>, stream: TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY: {err}"); // only latency suffers
    }
    match shared.join(stream) {
        // The `JoinHandle` is dropped: the task runs on, detached.
        Ok(me) => drop(tokio::spawn(client(me))),
        Err(stream) => {
            log::debug!("refusing a connection: server full");
            // Back to a `std` socket: tokio writes only once its reactor has reported the
            // socket writable, and a socket this new has not been reported yet.
            if let Ok(stream) = stream.into_std() {
                chat_net::refuse(stream);
            }
        }
    }
}
// ANCHOR_END: admit

// ANCHOR: socket_ops
/// A non-blocking `writev`, the tokio way: the shared code calls it to write through to any
/// client. `try_write_vectored` writes only if tokio's reactor has reported the socket
/// writable, and on `WouldBlock` it clears that readiness, so the client's own task, waiting
/// in `poll_write_ready`, sleeps until the kernel reports room. (A `writev` on the raw
/// descriptor would leave tokio believing the socket writable: that wait would return at
/// once, for ever.)
fn write(socket: &TcpStream, lines: &[IoSlice<'_>]) -> io::Result<usize> {
    socket.try_write_vectored(lines)
}

/// `shutdown(SHUT_WR)`. tokio offers it only as `AsyncWriteExt::shutdown`, which needs the
/// stream to itself; `socket2::SockRef` borrows the descriptor for the one system call.
fn hang_up(socket: &TcpStream) -> io::Result<()> {
    SockRef::from(socket).shutdown(Direction::Write)
}
// ANCHOR_END: socket_ops

// ANCHOR: client
/// One client's task, from welcome to goodbye: waits for what concerns this client, and does
/// it, until the server has closed it.
async fn client(me: Client) {
    while let Some(want) = me.want() {
        let socket = me.socket();
        // `poll_read_ready` and `poll_write_ready` keep the task's waker in the socket's own
        // slot in tokio's reactor (one reader, one writer: this task is both), so these two
        // waits cost the task no state; `ready()` would keep a waiter of over 100 bytes in it.
        let turn = tokio::select! {
            biased;
            // Another task rang: it may read again, must wait for room, was hung up or closed.
            // The next `want` says which.
            () = me.rung() => Ok(false),
            // Owed bytes its socket did not take (others' tasks wrote the rest already).
            ready = poll_fn(|cx| socket.poll_write_ready(cx)), if want.write => {
                ready.and_then(|()| me.flush()).map(|_| false)
            }
            // Readable, while the server takes this client's input.
            ready = poll_fn(|cx| socket.poll_read_ready(cx)), if want.read => {
                ready.and_then(|()| read(&me))
            }
        };
        match turn {
            Ok(false) => {}
            Ok(true) => {
                // A full buffer: this client may have sent megabytes. Let the others have a
                // turn first. Tokio's budget alone is not enough here: on the current-thread
                // flavour the I/O driver is only polled every 61 task polls, and a flooder's
                // task can read 128 times per poll, so some 30 MB of one client would be read
                // before anybody else's socket is even looked at. `yield_now` runs the driver
                // before this task again.
                tokio::task::yield_now().await;
            }
            Err(err) => {
                log::debug!("client {}: {err}", me.id()); // ends this client only
                break;
            }
        }
    }
    // Dropping `me` tells the server, if it does not know yet, and closes the socket: the
    // shared map let go of its handle when the server closed the client.
}
// ANCHOR_END: client

// ANCHOR: read
/// Reads once and hands the bytes to the server; true when the buffer came back full (there
/// may be more waiting).
///
/// A plain function, not an `async` one, on purpose: its 4 KiB buffer lives on the stack of
/// whichever thread polls the task, only for the duration of this call. Had the buffer been a
/// local of `client`, alive across an `.await`, it would be part of the task's state, and
/// ten thousand idle clients would hold ten thousand buffers.
fn read(me: &Client) -> io::Result<bool> {
    let mut buf = [0u8; READ_BUF];
    match me.socket().try_read(&mut buf) {
        Ok(0) => {
            me.eof(); // it ended its stream: a normal goodbye
            Ok(false)
        }
        Ok(n) => {
            me.receive(&buf[..n]);
            Ok(n == READ_BUF)
        }
        // A stale readiness: `try_read` has told tokio, which waits for the next event.
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(err) => Err(err),
    }
}
// ANCHOR_END: read

// ANCHOR: ticker
/// The server's own task. It ends each busy round (see [`chat_tasks::ROUND_WRITES`]), runs
/// the server's timers (a client behind for too long, a goodbye past its grace), and sleeps
/// on tokio's timer until the next deadline, or until its doorbell rings first.
async fn ticker(shared: Arc<Shared>) {
    loop {
        match shared.tick() {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                let _ = tokio::time::timeout_at(at, shared.doorbell().rung()).await;
            }
            None => shared.doorbell().rung().await,
        }
    }
}
// ANCHOR_END: ticker

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::Limits;

    /// The point of the stage: an idle client is a small task. Its state must hold no read
    /// buffer (see [`read`]) and no waiter of its own (see [`client`]): at 152 bytes or less,
    /// tokio's task cell (its header and trailer around the future, aligned to 128 bytes) is
    /// 256 bytes instead of 384. This fails if someone moves something large into it.
    #[test]
    fn an_idle_client_task_is_small() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local address");
            let (stream, _) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let shared = Arc::new(Shared::new(Limits::default(), write, hang_up));
            let me = shared
                .join(stream.expect("connect"))
                .expect("room for one client");
            let task = client(me);
            let size = std::mem::size_of_val(&task);
            assert!(
                size <= 152,
                "a client task is {size} bytes: something large lives across an `.await`"
            );
        });
    }
}
