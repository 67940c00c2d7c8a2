//! # Stage 09: async-std — `std`'s API with `.await`, and a race written by hand
//!
//! The same server on async-std, written the way its own chat tutorial starts one: an accept
//! loop that spawns a task per connection. async-std gives us `std`'s API with `.await` added
//! (`TcpListener::accept`, `task::spawn`, `task::sleep`, `task::block_on`); underneath, it is
//! the smol family: `async-io`'s reactor (`polling`, i.e. epoll here) and `async-executor`
//! spread over a global pool of threads.
//!
//! **async-std is discontinued**: its crate says "Deprecated in favor of smol". It still works,
//! and older material uses it everywhere, so it is measured here; stage 10 is its successor.
//!
//! ```text
//! cargo run --release -p chat-async-std
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! ## How bytes move
//!
//! As in stage 08, all clients share one [`chat_core::Server`] behind a lock, and the task
//! that reads a line writes what it queued for others straight into their sockets
//! ([`chat_tasks`], the part stages 08 to 10 share). A client's own task waits for three
//! things at once: its doorbell, its socket readable (while the server takes its input), and
//! its socket writable (only while it is owed bytes its socket did not take). async-std has
//! no stable way to race futures, so the task polls the three itself, in one `poll_fn`, the
//! way stage 07 wrote its combinators.
//!
//! ## What we do differently from the tutorial
//!
//! The tutorial's broker sends every message through an *unbounded* channel to each client's
//! writer task: a client that stops reading makes its queue grow until memory runs out. Here
//! what a client is owed is bounded by `--outbox-bytes` inside the shared server, whose flow
//! control makes the sender wait and cuts a client that stays behind. There is no channel,
//! and no writer task: a doorbell wakes a client's one task when it has something to do that
//! its socket cannot tell it. The tutorial also reads with a `BufReader` per client; an idle
//! client's task would hold that buffer for ever, ours holds none (see [`poll_read`]).

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::Shutdown as Direction;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use async_std::io::{Read as _, Write as _};
use async_std::net::{TcpListener, TcpStream};
use async_std::{future, task};
use chat_core::Flushed;
use chat_net::{AcceptError, Config, Shutdown};
use chat_tasks::Want;
use socket2::SockRef;

/// Size of the read buffer. There is one per executor thread, not one per client.
const READ_BUF: usize = 16 * 1024;

thread_local! {
    /// The read buffer of this executor thread, allocated the first time the thread reads.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF].into_boxed_slice());
}

/// The shared server, with async-std's socket type (see [`chat_tasks::Shared`]).
type Shared = chat_tasks::Shared<TcpStream>;

/// A client, as its task holds it (see [`chat_tasks::Client`]).
type Client = chat_tasks::Client<TcpStream>;

/// Serves clients on async-std's global executor until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: std::net::TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    task::block_on(serve(listener, config, shutdown))
}
// ANCHOR_END: run

/// Accepts until `shutdown`, then lets the server say goodbye to everybody.
// ANCHOR: serve
async fn serve(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<()> {
    let listener = TcpListener::from(listener); // registers it with the reactor
    let shared = Arc::new(Shared::new(config.limits(), write, hang_up));
    let acceptor = task::spawn(accept_loop(listener, Arc::clone(&shared)));
    let ticker = task::spawn(ticker(Arc::clone(&shared)));

    // async-std cannot await an arbitrary file descriptor, so a thread of its blocking pool
    // parks in `Shutdown::wait` and this task awaits that thread.
    task::spawn_blocking(move || shutdown.wait()).await;
    log::info!("shutting down ({} clients)", shared.connections());
    acceptor.cancel().await; // drops the listener: no new clients
    shared.shutdown(); // everyone gets `* server shutting down`, then is closed
    let stop_wait = chat_tasks::STOP_WAIT;
    if future::timeout(stop_wait, shared.stopped()).await.is_err() {
        log::warn!("the server did not stop within {stop_wait:?}");
    }
    ticker.cancel().await;
    Ok(())
}
// ANCHOR_END: serve

/// Accepts connections forever (until its task is cancelled), one task per client.
// ANCHOR: accept_loop
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => match chat_net::classify_accept_error(&err) {
                AcceptError::Retry => continue,
                // Out of descriptors: accepting again at once would fail again at once. The
                // timer parks this task; the clients' tasks go on meanwhile.
                AcceptError::Backoff => {
                    task::sleep(chat_net::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match shared.join(stream) {
            // The JoinHandle is dropped: the task runs on, detached.
            Ok(me) => drop(task::spawn(client(me))),
            Err(stream) => refuse(stream),
        }
    }
}
// ANCHOR_END: accept_loop

/// `! server full`, then close: back to a blocking `std` socket for `chat_net::refuse`.
fn refuse(stream: TcpStream) {
    log::debug!("refusing a connection: server full");
    if let Ok(stream) = std::net::TcpStream::try_from(stream) {
        chat_net::refuse(stream);
    }
}

// ANCHOR: socket_ops
/// A non-blocking `writev`, for the shared code to write through to any client from any
/// task. async-std's sockets can only write as futures, which register the calling task's
/// waker when the socket is full: not what a task writing to *another* client wants. The
/// socket is non-blocking underneath (async-io made it so), and `socket2::SockRef` borrows its
/// descriptor for one `sendmsg`. async-io keeps no readiness of its own to clear: when the
/// client's task waits for writability, the reactor asks the kernel afresh.
fn write(socket: &TcpStream, lines: &[IoSlice<'_>]) -> io::Result<usize> {
    SockRef::from(socket).send_vectored(lines)
}

/// `shutdown(SHUT_WR)`: async-std keeps `std`'s synchronous method.
fn hang_up(socket: &TcpStream) -> io::Result<()> {
    socket.shutdown(Direction::Write)
}
// ANCHOR_END: socket_ops

// ANCHOR: client
/// What ended one wait of a client's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Woke {
    /// The doorbell rang: look again at what to wait for.
    Rung,
    /// This many bytes were read and handed to the server (0: the end of the stream).
    Read(usize),
    /// Everything owed is written.
    Written,
}

/// One client's task, from welcome to goodbye: waits for what concerns this client, and does
/// it, until the server has closed it.
async fn client(me: Client) {
    while let Some(want) = me.want() {
        // The race, by hand: `poll_fn` turns a closure into a future, and the closure polls
        // each wait in turn. Each one that is not ready has stored this task's waker where
        // its event will find it (the doorbell, the reactor's read or write slot), so the
        // task sleeps until the first of them happens.
        match future::poll_fn(|cx| poll_turn(&me, want, cx)).await {
            Ok(Woke::Read(0)) => me.eof(), // it ended its stream: a normal goodbye
            Ok(Woke::Read(READ_BUF)) => {
                // One read per turn, and a full buffer means there may be more. While a socket
                // has data, `poll_read` is ready at once, and nothing in async-std preempts a
                // task that is always ready: a client that sends without pause would keep this
                // executor thread, and every task queued on it, waiting. Yielding puts the task
                // at the back of the queue.
                task::yield_now().await;
            }
            Ok(Woke::Read(_) | Woke::Rung | Woke::Written) => {}
            Err(err) => {
                log::debug!("client {}: {err}", me.id());
                break;
            }
        }
    }
    // Dropping `me` tells the server, if it does not know yet, and closes the socket.
}

/// One poll of the three waits: doorbell, writable (while owed), readable (while reading).
fn poll_turn(me: &Client, want: Want, cx: &mut Context<'_>) -> Poll<io::Result<Woke>> {
    if me.poll_rung(cx).is_ready() {
        return Poll::Ready(Ok(Woke::Rung));
    }
    if want.write {
        // async-std has no "wait until writable": the write itself waits. On a full socket,
        // `poll_write_vectored` registers this task's waker with the reactor and says
        // `Pending`, which the shared code reads as `WouldBlock`.
        let flushed = me.flush_with(|socket, lines| {
            match Pin::new(&mut &*socket).poll_write_vectored(cx, lines) {
                Poll::Ready(result) => result,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match flushed {
            Ok(Flushed::All) => return Poll::Ready(Ok(Woke::Written)),
            Ok(Flushed::Partly) => {}
            Err(err) => return Poll::Ready(Err(err)),
        }
    }
    if want.read {
        if let Poll::Ready(read) = poll_read(me, cx) {
            return Poll::Ready(read.map(Woke::Read));
        }
    }
    Poll::Pending
}
// ANCHOR_END: client

// ANCHOR: poll_read
/// Reads once, into this thread's buffer, and hands the bytes to the server.
///
/// The usual `let mut buf = [0; N]; stream.read(&mut buf).await` would keep `buf` inside this
/// task's state while it waits, for every idle client. Instead the task polls the socket
/// itself and lends it the thread's buffer only for the duration of one `poll_read`: when the
/// socket has no data, `poll_read` registers the task's waker with the reactor and returns
/// `Pending` without keeping the buffer, and when it has data we feed it to the server right
/// there, before giving the buffer back.
fn poll_read(me: &Client, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    READ_BUFFER.with_borrow_mut(|buf| {
        let n = ready!(Pin::new(&mut me.socket()).poll_read(cx, buf))?;
        if n > 0 {
            me.receive(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    })
}
// ANCHOR_END: poll_read

// ANCHOR: ticker
/// The server's own task. It ends each busy round (see [`chat_tasks::ROUND_WRITES`]), runs
/// the server's timers (a client behind for too long, a goodbye past its grace), and sleeps
/// until the next deadline, or until its doorbell rings first: `future::timeout` is
/// async-std's race of a future against its timer.
async fn ticker(shared: Arc<Shared>) {
    loop {
        match shared.tick() {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                let _ = future::timeout(wait, shared.doorbell().rung()).await;
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

    /// An idle client costs its task's state and no buffer. (A `[u8; 4096]` kept across an
    /// `.await` would fail this.)
    #[test]
    fn an_idle_client_task_is_small() {
        task::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let shared = Arc::new(Shared::new(Limits::default(), write, hang_up));
            let me = shared.join(stream).unwrap();
            let task = client(me);
            let size = size_of_val(&task);
            assert!(size <= 192, "a client's task holds {size} bytes");
        });
    }
}
