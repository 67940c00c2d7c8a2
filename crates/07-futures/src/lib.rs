//! # Stage 07: futures by hand
//!
//! Stages 05 and 06 served every client from one thread with an `epoll` loop, and the price
//! was inside-out code: each client's progress lived in a struct, and the loop decided what to do
//! next from readiness events. This stage keeps the one thread and the one `epoll`, and writes
//! each client as straight-line code again (`read` a line, `write` some lines) with
//! `async`/`await` — on an async runtime built right here, on `std` and `libc` alone:
//!
//! - [`tour`]: a future written by hand and polled by hand; wakers; `.await` compiled by hand;
//! - [`sys`]: `epoll`, `eventfd` and `ioctl(FIONBIO)`, wrapped once;
//! - [`reactor`]: one `epoll_wait` that wakes exactly the tasks whose sockets are ready, and
//!   the timers;
//! - [`timer`]: [`Timer`], the async sleep;
//! - [`executor`]: tasks, their wakers, [`Executor::spawn`] and [`Executor::run`];
//! - [`block_on`](mod@block_on): where the thread sleeps, in the reactor, while the future is
//!   pending;
//! - [`net`]: [`Async<T>`], non-blocking sockets as futures (`accept`, `read`, `write`);
//! - [`combinators`]: [`or`] and [`yield_now`].
//!
//! The reactor and the executor never call each other: they meet through `Waker`, as in smol.
//! Below them all is this file: the chat server, as `async fn`s.
//!
//! ```text
//! cargo run --release -p chat-futures
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! ## The server
//!
//! One [`chat_core::Server`] in an `Rc<Shared>`, and two tasks per client: a **reader** that
//! feeds the server what the socket delivers, and a **writer** that sleeps until the client's
//! outbox has bytes, writes them with one `writev`, and sleeps again. The server's
//! `Flush`/`Close` events wake the writers. A task's state is only what it holds across an
//! `.await` (a few pointers), so an idle client's two tasks take a few hundred bytes: the
//! read buffer is one 64 KiB buffer shared by every reader, used only inside a non-blocking
//! `read`.
//!
//! *Invariant:* a `RefCell` borrow of the shared state never lives across an `.await`; every
//! method of [`Shared`] is plain synchronous code.

pub mod block_on;
pub mod combinators;
pub mod executor;
pub mod net;
pub mod reactor;
pub mod sys;
pub mod timer;
pub mod tour;

pub use block_on::block_on;
pub use combinators::{or, yield_now};
pub use executor::{Executor, JoinHandle};
pub use net::Async;
pub use reactor::Direction;
pub use timer::Timer;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Limits, Server, ServerFull};
use chat_net::{AcceptError, Config, Shutdown};

/// Bytes per `read`, into the one buffer all readers share.
const READ_BUF: usize = 64 * 1024;

/// At most this many queued lines per `writev` (the kernel allows 1024).
const MAX_SLICES: usize = 64;

/// How long a stopping server waits for its clients to take their last lines.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a client the server closes (`/quit`, shutdown) has to read its last lines.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves clients until `shutdown` is triggered: the whole runtime is one line.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let executor = Executor::new();
    block_on(executor.run(serve(&executor, listener, config.limits(), shutdown)))
}
// ANCHOR_END: run

/// Accepts until told to stop, then says goodbye to everyone, for at most [`SHUTDOWN_GRACE`].
// ANCHOR: serve
async fn serve(
    executor: &Executor,
    listener: TcpListener,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    let shared = Rc::new(Shared::new(limits));
    let listener = Async::new(listener)?;
    let stop = Async::new(shutdown)?;
    accept_loop(executor, &shared, &listener, &stop).await;

    drop(listener); // from now on the kernel refuses new connections
    log::info!(
        "stopping: saying goodbye to {} clients",
        shared.connections()
    );
    shared.shutdown(); // everyone gets `* server shutting down` and a Close
    let drained = or(
        async {
            shared.all_closed().await;
            true
        },
        async {
            Timer::after(SHUTDOWN_GRACE).await;
            false
        },
    )
    .await;
    if !drained {
        log::warn!(
            "{} clients did not read their last lines",
            shared.connections()
        );
    }
    Ok(()) // `run` returns, the executor is dropped with every task and socket it holds
}
// ANCHOR_END: serve

/// Accepts connections until the shutdown descriptor becomes readable.
// ANCHOR: accept_loop
async fn accept_loop(
    executor: &Executor,
    shared: &Rc<Shared>,
    listener: &Async<TcpListener>,
    stop: &Async<Shutdown>,
) {
    loop {
        // Whichever comes first. The stop check goes first, so that a flood of connections
        // cannot delay shutdown; it costs nothing until the descriptor changes.
        let next = or(
            async {
                let _ = stop.read_with(triggered).await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        let Some(accepted) = next else {
            return;
        };
        match accepted {
            Ok((stream, _peer)) => admit(executor, shared, stream),
            Err(err) => match chat_net::classify_accept_error(&err) {
                AcceptError::Retry => {}
                // Out of descriptors: the connection waits in the backlog, and trying again
                // at once would fail at once. Sleep (other tasks keep running), then retry.
                AcceptError::Backoff => Timer::after(chat_net::ACCEPT_BACKOFF).await,
            },
        }
    }
}

/// The "operation" of waiting for shutdown: done once the flag is set, `WouldBlock` before
/// (so that [`Async::read_with`] sleeps until the descriptor changes).
fn triggered(shutdown: &Shutdown) -> io::Result<()> {
    if shutdown.is_triggered() {
        Ok(())
    } else {
        Err(io::ErrorKind::WouldBlock.into())
    }
}
// ANCHOR_END: accept_loop

/// A new connection: register it with the server and start its two tasks.
// ANCHOR: admit
fn admit(executor: &Executor, shared: &Rc<Shared>, stream: Async<TcpStream>) {
    let Ok(id) = shared.connect() else {
        refuse(&stream);
        return;
    };
    if let Err(err) = stream.get_ref().set_nodelay(true) {
        log::debug!("{id}: TCP_NODELAY: {err}");
    }
    log::debug!("{id}: connected");
    let stream = Rc::new(stream); // one socket, two tasks: one reads, one writes
    executor
        .spawn(reader(Rc::clone(shared), Rc::clone(&stream), id))
        .detach();
    executor
        .spawn(writer(Rc::clone(shared), stream, id))
        .detach();
}
// ANCHOR_END: admit

/// Over `--max-clients`: `! server full`, then close. A new socket has room for one line.
fn refuse(stream: &Async<TcpStream>) {
    let mut socket = stream.get_ref();
    let _ = socket.write(chat_core::SERVER_FULL_LINE);
    let _ = socket.shutdown(Both::Both);
}

/// Feeds the server whatever the client sends, until it closes (or we close it).
// ANCHOR: reader
async fn reader(shared: Rc<Shared>, stream: Rc<Async<TcpStream>>, id: ClientId) {
    loop {
        let read = stream.read_with(|socket| shared.read_from(id, socket));
        match read.await {
            Ok(0) => break, // end of stream: the peer left, or our writer shut the socket
            // A short read emptied the socket: skip the read that would only say WouldBlock,
            // and sleep until epoll reports more. (The next `read_with` returns Pending at
            // once, which lets the writers this read just woke run.)
            Ok(n) if n < READ_BUF => stream.clear_ready(Direction::Read),
            // A full buffer: there may be more. Let the woken writers run first anyway: on
            // one thread, a client that sends without pause must not starve everybody else.
            Ok(_) => yield_now().await,
            Err(err) => {
                log::debug!("{id}: read: {err}");
                break;
            }
        }
    }
    shared.close(id); // its room hears it left; its writer wakes up and ends
    log::debug!("{id}: closed");
}
// ANCHOR_END: reader

/// Writes what the client is owed, sleeping while there is nothing to write, until the
/// client must go; then shuts the socket down.
// ANCHOR: writer
async fn writer(shared: Rc<Shared>, stream: Rc<Async<TcpStream>>, id: ClientId) {
    let result = or(
        write_until_done(&shared, &stream, id),
        // Once the server closes this client (`/quit`, shutdown), it has a little while to
        // read its last lines; a client that does not read cannot keep its socket forever.
        async {
            shared.closing(id).await;
            Timer::after(CLOSE_GRACE).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "last lines not read in time",
            ))
        },
    )
    .await;
    if let Err(err) = result {
        log::debug!("{id}: write: {err}");
    }
    // The peer sees the end of the stream, and so does our reader, which cleans up.
    let _ = stream.get_ref().shutdown(Both::Both);
}
// ANCHOR_END: writer

/// Writes the outbox whenever it has bytes, until the client must be closed and nothing is
/// left to write.
// ANCHOR: write_until_done
async fn write_until_done(
    shared: &Shared,
    stream: &Async<TcpStream>,
    id: ClientId,
) -> io::Result<()> {
    // `has_work` sleeps until the outbox has bytes (true) or the client must go (false).
    while shared.has_work(id).await {
        or(
            // One `writev` of everything queued; if the socket is full, wait for room...
            stream.write_with(|socket| shared.write_outbox(id, socket)),
            // ...unless the server gives up on this client meanwhile (a slow consumer:
            // its outbox is emptied), which must end the wait too.
            async {
                shared.emptied(id).await;
                Ok(())
            },
        )
        .await?;
    }
    Ok(())
}
// ANCHOR_END: write_until_done

/// The chat server and the writers' wakers, shared by every task on the thread.
#[derive(Debug)]
pub struct Shared {
    /// Borrowed only inside the synchronous methods below, never across an `.await`.
    state: RefCell<State>,
}

/// The part of [`Shared`] behind the `RefCell`.
#[derive(Debug)]
struct State {
    /// The protocol: hub, framers and bounded outboxes.
    server: Server,
    /// Each connected client's writer task, while it sleeps: woken by `Flush` and `Close`.
    writers: IdMap<Option<Waker>>,
    /// The read buffer of every reader, filled and consumed within one `read_from`.
    buf: Box<[u8]>,
    /// The shutdown sequence, waiting for the last client to go.
    all_closed: Option<Waker>,
}

/// Stores `waker` in `slot` unless the same task's waker is already there.
fn park(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(stored) if stored.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

impl Shared {
    /// A server with these limits and no client.
    fn new(limits: Limits) -> Self {
        Self {
            state: RefCell::new(State {
                server: Server::new(limits),
                writers: IdMap::default(),
                buf: vec![0; READ_BUF].into_boxed_slice(),
                all_closed: None,
            }),
        }
    }

    /// Open connections.
    fn connections(&self) -> usize {
        self.state.borrow().server.connections()
    }

    /// A new client, welcomed; or `ServerFull`.
    fn connect(&self) -> Result<ClientId, ServerFull> {
        let mut state = self.state.borrow_mut();
        let id = state.server.connect()?;
        state.writers.insert(id, None);
        state.dispatch();
        Ok(id)
    }

    /// One non-blocking `read` into the shared buffer, fed to the server. `Ok(0)` is the end
    /// of the stream; `WouldBlock` makes the caller sleep until the socket is readable.
    // ANCHOR: read_from
    fn read_from(&self, id: ClientId, mut socket: &TcpStream) -> io::Result<usize> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let n = socket.read(&mut state.buf)?;
        state.server.receive(id, &state.buf[..n]);
        state.dispatch();
        Ok(n)
    }
    // ANCHOR_END: read_from

    /// One non-blocking `writev` of what the client's outbox holds.
    // ANCHOR: write_outbox
    fn write_outbox(&self, id: ClientId, mut socket: &TcpStream) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let Some(outbox) = state.server.outbox(id) else {
            return Ok(()); // gone meanwhile
        };
        if outbox.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = outbox.io_slices(&mut slices);
        let written = socket.write_vectored(&slices[..count])?;
        outbox.consume(written);
        Ok(())
    }
    // ANCHOR_END: write_outbox

    /// Sleeps until the client's outbox holds bytes (`true`), or the client must be closed
    /// with nothing left to write (`false`).
    // ANCHOR: has_work
    async fn has_work(&self, id: ClientId) -> bool {
        poll_fn(|cx| self.poll_has_work(id, cx)).await
    }

    fn poll_has_work(&self, id: ClientId, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let Some(outbox) = state.server.outbox(id) else {
            return Poll::Ready(false); // closed
        };
        if !outbox.is_empty() {
            return Poll::Ready(true);
        }
        if state.server.is_closing(id) {
            return Poll::Ready(false); // `/quit` or shutdown, and everything is written
        }
        if let Some(slot) = state.writers.get_mut(&id) {
            park(slot, cx.waker()); // the next Flush or Close for `id` wakes us
        }
        Poll::Pending
    }
    // ANCHOR_END: has_work

    /// Sleeps until the client's outbox is empty or gone without our writing it: what the
    /// server does to a slow consumer.
    async fn emptied(&self, id: ClientId) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            match state.server.outbox(id) {
                Some(outbox) if !outbox.is_empty() => {
                    if let Some(slot) = state.writers.get_mut(&id) {
                        park(slot, cx.waker());
                    }
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await
    }

    /// Sleeps until the server has decided to close the client (or it is gone).
    async fn closing(&self, id: ClientId) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.server.outbox(id).is_none() || state.server.is_closing(id) {
                return Poll::Ready(());
            }
            if let Some(slot) = state.writers.get_mut(&id) {
                park(slot, cx.waker());
            }
            Poll::Pending
        })
        .await
    }

    /// The connection is over: tell the server (its room hears it left) and wake its writer.
    fn close(&self, id: ClientId) {
        let mut state = self.state.borrow_mut();
        state.server.close(id);
        state.dispatch();
        if let Some(Some(writer)) = state.writers.remove(&id) {
            writer.wake();
        }
        if state.server.connections() == 0 {
            if let Some(waiter) = state.all_closed.take() {
                waiter.wake();
            }
        }
    }

    /// Every client gets `* server shutting down` and a Close.
    fn shutdown(&self) {
        let mut state = self.state.borrow_mut();
        state.server.shutdown();
        state.dispatch();
    }

    /// Sleeps until no connection is left.
    async fn all_closed(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.server.connections() == 0 {
                return Poll::Ready(());
            }
            park(&mut state.all_closed, cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl State {
    /// Turns the server's events into wake-ups: `Flush(id)` and `Close(id)` both mean "the
    /// writer of `id` has something to do". Our wakers only queue a task, so calling them
    /// with the state borrowed is safe: nothing runs until the executor polls.
    // ANCHOR: dispatch
    fn dispatch(&mut self) {
        while let Some(event) = self.server.poll_event() {
            let (Event::Flush(id) | Event::Close(id)) = event;
            if let Some(writer) = self.writers.get_mut(&id).and_then(Option::take) {
                writer.wake();
            }
        }
    }
    // ANCHOR_END: dispatch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of the stage: an idle client is two small tasks. Their state is what lives
    /// across an `.await`; this fails if someone moves a buffer into it.
    #[test]
    fn client_tasks_hold_no_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let _peer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (socket, _) = listener.accept().expect("accept");
        let stream = Rc::new(Async::new(socket).expect("register"));
        let shared = Rc::new(Shared::new(Limits::default()));
        let id = shared.connect().expect("room for one client");
        let reader = reader(Rc::clone(&shared), Rc::clone(&stream), id);
        let writer = writer(Rc::clone(&shared), Rc::clone(&stream), id);
        let (reader, writer) = (size_of_val(&reader), size_of_val(&writer));
        eprintln!("reader task: {reader} bytes, writer task: {writer} bytes");
        assert!(reader <= 256, "the reader task is {reader} bytes");
        assert!(writer <= 512, "the writer task is {writer} bytes");
    }
}
