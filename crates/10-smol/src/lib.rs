//! # Stage 10: smol — one task per client, on an executor you can see
//!
//! The last stage: the chat server on smol, the small runtime async-std was built on and is
//! now deprecated in favor of. smol is a handful of crates, each doing one job, and here we use
//! them by name:
//!
//! - `async-io`: the reactor ([`Async`] wraps any socket or descriptor and registers it with
//!   `polling`, i.e. epoll), plus [`Timer`] and [`block_on`];
//! - `async-executor`: the [`Executor`] that runs tasks, on as many threads as we give it;
//! - `futures-lite`: the combinators ([`future::or`]).
//!
//! ```text
//! cargo run --release -p chat-smol                  # one thread (the default)
//! cargo run --release -p chat-smol -- --threads 2   # one executor shared by two threads
//! nc 127.0.0.1 7878                                 # in two or more terminals
//! ```
//!
//! ## How bytes move
//!
//! As in stages 08 and 09, all clients share one [`chat_core::Server`] behind a lock, and the
//! task that reads a line writes what it queued for others straight into their sockets
//! ([`chat_tasks`], the part stages 08 to 10 share). Each client is **one** task that races
//! three waits with [`future::or`]: its doorbell, its socket readable (while the server takes
//! its input), its socket writable (only while it is owed bytes its socket did not take).
//!
//! ## What we do differently from smol's chat example
//!
//! smol's `examples/chat-server.rs` has one dispatcher task that writes every message to every
//! client in turn with `write_all(..).await`, fed by a channel of 100 events: one client that
//! stops reading stops the dispatcher, then every reader waiting to hand it a line, then the
//! whole room. Here nobody waits to write: what a client is owed is bounded by
//! `--outbox-bytes` inside the shared server, whose flow control makes the *sender* wait and
//! cuts a client that stays behind.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::{Shutdown as Direction, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use chat_net::{AcceptError, Config, Shutdown};
use smol::channel;
use smol::{block_on, future, Async, Executor, Timer};

/// Size of the read buffer. There is one per executor thread, not one per client.
const READ_BUF: usize = 16 * 1024;

thread_local! {
    /// The read buffer of this executor thread, allocated the first time the thread reads.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF].into_boxed_slice());
}

/// The shared server, with smol's socket type (see [`chat_tasks::Shared`]).
type Shared = chat_tasks::Shared<Async<TcpStream>>;

/// A client, as its task holds it (see [`chat_tasks::Client`]).
type Client = chat_tasks::Client<Async<TcpStream>>;

/// Serves clients on one [`Executor`] run by `threads` threads (this one and `threads - 1`
/// more) until `shutdown` is triggered.
///
/// With one thread (the default) everything runs on the calling thread, like stage 07's
/// hand-rolled loop: smol's `LocalExecutor` is this same `Executor` with `!Send` futures
/// allowed, and our futures are `Send` anyway so that the same code runs on N threads.
// ANCHOR: run
pub fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    threads: usize,
) -> io::Result<()> {
    let ex = Executor::new();
    // The helper threads run the executor until this channel closes.
    let (stop, stopped) = channel::bounded::<()>(1);
    thread::scope(|scope| {
        for i in 1..threads.max(1) {
            let (ex, stopped) = (&ex, stopped.clone());
            thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn_scoped(scope, move || block_on(ex.run(stopped.recv())))?;
        }
        // `block_on` also drives the reactor while this thread has nothing else to do.
        let result = block_on(ex.run(serve(&ex, listener, config, shutdown)));
        drop(stop); // the helper threads return; the scope joins them
        result
    })
}
// ANCHOR_END: run

/// Accepts until `shutdown`, then lets the server say goodbye to everybody.
// ANCHOR: serve
async fn serve(
    ex: &Executor<'_>,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<()> {
    // Non-blocking from now on, and registered with the reactor.
    let listener = Async::new(listener)?;
    // The shutdown descriptor becomes readable on SIGINT/SIGTERM: the reactor can watch it
    // like any socket. (`Async::new` makes it non-blocking, which `Shutdown` does not mind.)
    let stop = Async::new(shutdown)?;
    let shared = Arc::new(Shared::new(config.limits(), write, hang_up));
    let _ticker = ex.spawn(ticker(Arc::clone(&shared))); // cancelled when this handle drops

    // `or` polls both futures and returns the first result, dropping the other: here, the
    // accept loop (which never ends by itself) is dropped when `stop` becomes readable.
    future::or(accept_loop(ex, &listener, &shared), stop.readable()).await?;
    drop(listener); // no new clients
    log::info!("shutting down ({} clients)", shared.connections());
    shared.shutdown(); // everyone gets `* server shutting down`, then is closed
    let stopped = async {
        shared.stopped().await;
        true
    };
    let too_late = async {
        Timer::after(chat_tasks::STOP_WAIT).await;
        false
    };
    if !future::or(stopped, too_late).await {
        log::warn!("the server did not stop within {:?}", chat_tasks::STOP_WAIT);
    }
    Ok(()) // dropping the executor (in `run`) drops every task left
}
// ANCHOR_END: serve

/// Accepts connections until dropped, one task per client.
// ANCHOR: accept_loop
async fn accept_loop(
    ex: &Executor<'_>,
    listener: &Async<TcpListener>,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    loop {
        // `read_with` tries `accept`; on `WouldBlock` it waits for the reactor to report the
        // listener readable and tries again.
        let stream = match listener.read_with(|l| l.accept()).await {
            Ok((stream, _)) => stream,
            Err(err) => match chat_net::classify_accept_error(&err) {
                AcceptError::Retry => continue,
                // Out of descriptors: accepting again at once would fail again at once.
                AcceptError::Backoff => {
                    Timer::after(chat_net::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stream = match Async::new(stream) {
            Ok(stream) => stream,
            Err(err) => {
                log::debug!("cannot register a connection: {err}");
                continue;
            }
        };
        match shared.join(stream) {
            // Runs on; a `Task` dropped undetached is cancelled.
            Ok(me) => ex.spawn(client(me)).detach(),
            Err(stream) => refuse(stream),
        }
    }
}
// ANCHOR_END: accept_loop

/// `! server full`, then close: the `std` socket inside, for `chat_net::refuse`.
fn refuse(stream: Async<TcpStream>) {
    log::debug!("refusing a connection: server full");
    if let Ok(stream) = stream.into_inner() {
        chat_net::refuse(stream);
    }
}

// ANCHOR: socket_ops
/// A non-blocking `writev`, for the shared code to write through to any client from any
/// task: `get_ref` is the `std` socket inside the `Async`, non-blocking since `Async::new`.
/// async-io keeps no readiness of its own to clear: when the client's task waits for
/// writability, the reactor asks the kernel afresh.
fn write(socket: &Async<TcpStream>, lines: &[IoSlice<'_>]) -> io::Result<usize> {
    socket.get_ref().write_vectored(lines)
}

/// `shutdown(SHUT_WR)`, on the `std` socket.
fn hang_up(socket: &Async<TcpStream>) -> io::Result<()> {
    socket.get_ref().shutdown(Direction::Write)
}
// ANCHOR_END: socket_ops

// ANCHOR: client
/// What ended one wait of a client's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// The doorbell rang: look again at what to wait for.
    Rung,
    /// The reactor reported the socket readable.
    Readable,
    /// The reactor reported the socket writable.
    Writable,
}

/// One client's task, from welcome to goodbye: waits for what concerns this client, and does
/// it, until the server has closed it.
async fn client(me: Client) {
    while let Some(want) = me.want() {
        // Three waits, raced: the first to finish ends the wait, and `or` drops the others.
        // `readable()` and `writable()` register this task with the reactor and finish once
        // epoll reports the socket ready.
        let rung = async {
            me.rung().await;
            Ok(Woke::Rung)
        };
        let readable = when(want.read, || me.socket().readable(), Woke::Readable);
        let writable = when(want.write, || me.socket().writable(), Woke::Writable);
        let woke = future::or(rung, future::or(readable, writable)).await;
        let turn = match woke {
            Ok(Woke::Rung) => Ok(false),
            // Owed bytes its socket did not take (others' tasks wrote the rest already).
            // `Partly`: the next turn waits for writability again.
            Ok(Woke::Writable) => me.flush().map(|_| false),
            Ok(Woke::Readable) => read(&me),
            Err(err) => Err(err),
        };
        match turn {
            Ok(false) => {}
            Ok(true) => {
                // One read per turn, and a full buffer means there may be more. Nothing in
                // smol preempts a task that is always ready: a client that sends without
                // pause would keep this thread and every other client waiting. Yielding
                // puts the task at the back of the executor's queue.
                future::yield_now().await;
            }
            Err(err) => {
                log::debug!("client {}: {err}", me.id());
                break;
            }
        }
    }
    // Dropping `me` tells the server, if it does not know yet, and closes the socket: the
    // shared map let go of its handle when the server closed the client, and dropping the
    // last `Async` deregisters the socket from the reactor.
}

/// `wait()` if `wanted`, answered with `woke`; otherwise a wait that never ends (a branch of
/// the race turned off). The wait is made here, not passed in made: a future moved into an
/// `async fn` and awaited there is stored twice in its state.
async fn when<F>(wanted: bool, wait: impl FnOnce() -> F, woke: Woke) -> io::Result<Woke>
where
    F: Future<Output = io::Result<()>>,
{
    if !wanted {
        return future::pending().await;
    }
    wait().await.map(|()| woke)
}
// ANCHOR_END: client

// ANCHOR: read
/// Reads once, into this thread's buffer, and hands the bytes to the server; true when the
/// buffer came back full (there may be more waiting). The buffer is borrowed only while this
/// plain function runs, so a waiting client holds no buffer at all.
fn read(me: &Client) -> io::Result<bool> {
    let read = READ_BUFFER.with_borrow_mut(|buf| {
        let n = me.socket().get_ref().read(buf)?;
        if n > 0 {
            me.receive(&buf[..n]);
        }
        Ok::<_, io::Error>(n)
    });
    match read {
        Ok(0) => me.eof(), // it ended its stream: a normal goodbye
        Ok(n) => return Ok(n == READ_BUF),
        // The reactor said readable, but somebody was first (or it was spurious): wait again.
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        Err(err) => return Err(err),
    }
    Ok(false)
}
// ANCHOR_END: read

// ANCHOR: ticker
/// The server's own task. It ends each busy round (see [`chat_tasks::ROUND_WRITES`]), runs
/// the server's timers (a client behind for too long, a goodbye past its grace), and sleeps
/// until the next deadline, or until its doorbell rings first. The reactor keeps the timers:
/// `Timer::at` wakes this task once `at` has passed.
async fn ticker(shared: Arc<Shared>) {
    loop {
        match shared.tick() {
            Some(at) => {
                let expired = async {
                    Timer::at(at).await;
                };
                future::or(expired, shared.doorbell().rung()).await;
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
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    /// The library on its own, on one and on two threads: a client is welcomed, talks, and
    /// hears the shutdown; `run` returns once `shutdown` is triggered.
    #[test]
    fn welcome_then_shutdown() {
        for threads in [1, 2] {
            let listener = chat_net::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = Shutdown::new().unwrap();
            let server = {
                let shutdown = shutdown.clone();
                thread::spawn(move || run(listener, Config::default(), shutdown, threads))
            };
            let stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut lines = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            assert!(line.starts_with("* welcome guest1"), "{line:?}");
            (&stream).write_all(b"/nick tester\n").unwrap();
            line.clear();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, "* you are now tester\n");
            shutdown.trigger();
            line.clear();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, "* server shutting down\n");
            line.clear();
            assert_eq!(
                lines.read_line(&mut line).unwrap(),
                0,
                "closed after goodbye"
            );
            // Our end of the stream too: the server, which reads until then, closes at once.
            stream.shutdown(Direction::Write).unwrap();
            server.join().unwrap().unwrap();
        }
    }

    /// An idle client costs its task's state and no buffer. (A `[u8; 4096]` kept across an
    /// `.await` would fail this.)
    #[test]
    fn an_idle_client_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let shared = Arc::new(Shared::new(Limits::default(), write, hang_up));
        let me = shared.join(Async::new(stream).unwrap()).unwrap();
        let task = client(me);
        let size = size_of_val(&task);
        assert!(size <= 256, "a client's task holds {size} bytes");
    }
}
