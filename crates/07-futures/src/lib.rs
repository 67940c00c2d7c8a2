//! # Stage 07: futures by hand
//!
//! Stages 05 and 06 served every client from one thread with an `epoll` loop, and the price
//! was inside-out code: each client's progress lived in a struct, and the loop decided what to do
//! next from readiness events. This stage keeps the one thread and the one `epoll`, and writes
//! each client as straight-line code again (wait for something to do, do it, repeat) with
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
//! One [`chat_core::Server`] in an `Rc<Shared>`, beside every client's socket, and three kinds
//! of task:
//!
//! - **one task per client** ([`client`]): it reads while the server takes the client's input,
//!   writes what the client's socket did not take at once, and ends when the server closes
//!   the client. Its state is a few words: an idle client holds no buffer (the one 64 KiB
//!   read buffer is shared, used only inside a non-blocking `read`).
//! - **one timer task** ([`timers`]): it sleeps until the server's next deadline (a slow
//!   consumer's grace, a closing client's) and lets the server act.
//! - the accept loop, which is `run`'s own future.
//!
//! Whatever a task hands the server, it carries out what the server answers in the same turn
//! ([`State::settle`]): above all, it **writes through** — a line for a room goes from the
//! sender's task straight into every member's socket, non-blocking. A member's own task is
//! woken only if its socket did not take everything, to wait for room: when sockets keep up,
//! a message costs one `writev` per member and no wake-up at all. (Arrivals are the one
//! exception: what they owe is written by the new client's task, first thing, so that a burst
//! of connections accepted in one turn is written as one.)
//!
//! *Invariant:* a `RefCell` borrow of the shared state never lives across an `.await`; every
//! method of [`Shared`] is plain synchronous code, and waking a task only queues it.

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
use std::future::{poll_fn, Future};
use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Flushed, Limits, Server};
use chat_net::{AcceptError, Config, Shutdown};

/// Bytes per `read`, into the one buffer all client tasks share.
const READ_BUF: usize = 64 * 1024;

/// Serves clients until `shutdown` is triggered: the whole runtime is one line.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let executor = Executor::new();
    block_on(executor.run(serve(&executor, listener, config.limits(), shutdown)))
}
// ANCHOR_END: run

/// Accepts until told to stop, then lets the server say goodbye to everyone (it closes them
/// all within its shutdown grace).
// ANCHOR: serve
async fn serve(
    executor: &Executor,
    listener: TcpListener,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    let shared = Rc::new(Shared::new(limits));
    executor.spawn(timers(Rc::clone(&shared))).detach();
    let listener = Async::new(listener)?;
    let stop = Async::new(shutdown)?;
    accept_loop(executor, &shared, &listener, &stop).await;

    drop(listener); // from now on the kernel refuses new connections
    log::info!(
        "stopping: saying goodbye to {} clients",
        shared.connections()
    );
    shared.shutdown(); // everyone gets `* server shutting down`, then the end of the stream
    shared.stopped().await; // every client closed: by itself, or by the server's grace
    Ok(()) // `run` returns, the executor is dropped with the timer task
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

/// A new connection: its socket goes to the shared state, next to the server, and it gets
/// its task (which writes its welcome).
// ANCHOR: admit
fn admit(executor: &Executor, shared: &Rc<Shared>, stream: Async<TcpStream>) {
    if let Err(err) = stream.get_ref().set_nodelay(true) {
        log::debug!("TCP_NODELAY: {err}"); // set before anything is written
    }
    if let Some(id) = shared.connect(stream) {
        log::debug!("{id}: connected");
        executor.spawn(client(Rc::clone(shared), id)).detach();
    }
}
// ANCHOR_END: admit

/// What a client's task does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// The server takes its input, and its socket may have bytes: read once.
    Read,
    /// It is owed bytes its socket did not take, and the socket has room again: write.
    Write,
    /// The server is done with it and its socket is closed: the task ends.
    Over,
}

/// What one read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Some bytes, handed to the server (or a signal interrupted the read): read on.
    Bytes,
    /// A full buffer: there may be more.
    Full,
    /// Nothing more will ever come: the end of the stream, or an error (the client is gone).
    End,
    /// `WouldBlock`: the socket is empty, and the reactor knows it.
    Empty,
}

/// One client, from its welcome to its close. Everything it does is one synchronous call
/// into [`Shared`]; what it keeps across an `.await` is its id, the shared state, and
/// whether it has seen the end of its client's stream.
// ANCHOR: client
async fn client(shared: Rc<Shared>, id: ClientId) {
    // Its welcome and its `joined` notice, queued by the accept loop. In a burst, the accept
    // loop takes the whole backlog in one turn, and the first new task writes what all of
    // them owe: every member gets the burst's notices in one `writev`, not one each.
    shared.settle();
    // After its end of stream a socket reads 0 at once, for ever: a task that went on
    // reading would spin. The server says when to close (it may still owe lines).
    let mut eof = false;
    loop {
        match shared.turn(id, eof).await {
            Turn::Read => match shared.read(id) {
                Read::End => eof = true,
                // One thread for everybody: a client that sends without pause must not keep
                // it. Go to the back of the queue, then read on.
                Read::Full => yield_now().await,
                // After `Empty` (readiness cleared) the next turn sleeps until an edge.
                Read::Bytes | Read::Empty => {}
            },
            Turn::Write => shared.flush(id),
            Turn::Over => break,
        }
    }
    log::debug!("{id}: closed");
}
// ANCHOR_END: client

/// The server's clock: sleeps until the server's next deadline, then lets it act (cut a slow
/// consumer, close a client whose grace ran out). Any call that makes an earlier deadline
/// appear wakes it (see [`State::settle`]), so it never sleeps past one.
// ANCHOR: timers
async fn timers(shared: Rc<Shared>) {
    let mut deadline = None;
    loop {
        match deadline {
            Some(at) => or(Timer::at(at), shared.earlier_deadline()).await,
            None => shared.earlier_deadline().await,
        }
        deadline = shared.handle_timeout();
    }
}
// ANCHOR_END: timers

/// The chat server, every client's socket, and the wakers of the tasks that sleep, shared by
/// every task on the thread.
#[derive(Debug)]
pub struct Shared {
    /// Borrowed only inside the synchronous methods below, never across an `.await`.
    state: RefCell<State>,
}

/// The part of [`Shared`] behind the `RefCell`.
#[derive(Debug)]
struct State {
    /// The protocol: hub, framers, bounded outboxes, flow control, deadlines.
    server: Server,
    /// Every client the server has not closed: its socket, and its task's waker.
    clients: IdMap<Client>,
    /// The read buffer of every client task, filled and handed over within one `read`.
    buf: Box<[u8]>,
    /// The timer task's sleep.
    alarm: Alarm,
    /// `serve`, waiting for the last client to go after shutdown.
    stopped: Option<Waker>,
}

/// A client, as the shared state keeps it.
// ANCHOR: client_state
#[derive(Debug)]
struct Client {
    /// Its socket. Any task may write to it (write-through); only the client's task reads.
    /// Dropping it closes the socket and takes it out of the reactor.
    stream: Async<TcpStream>,
    /// The client's task, while it sleeps: woken when the server needs it to do something.
    task: Option<Waker>,
}
// ANCHOR_END: client_state

/// What the timer task sleeps for.
#[derive(Debug, Default)]
struct Alarm {
    /// The deadline it sleeps until; `None`: it sleeps until a deadline appears.
    armed: Option<Instant>,
    /// Its waker, while it sleeps.
    waker: Option<Waker>,
}

impl Alarm {
    /// True if the server's next deadline comes before the one the timer task sleeps until.
    fn is_late_for(&self, deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|at| self.armed.is_none_or(|armed| at < armed))
    }
}

/// Stores `waker` in `slot` unless the same task's waker is already there.
fn park(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(stored) if stored.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Over `--max-clients`: `! server full`, then close. A new socket has room for one line.
fn refuse(stream: &Async<TcpStream>) {
    let mut socket = stream.get_ref();
    let _ = socket.write(chat_core::SERVER_FULL_LINE);
    let _ = socket.shutdown(Both::Both);
}

impl Shared {
    /// A server with these limits and no client.
    fn new(limits: Limits) -> Self {
        Self {
            state: RefCell::new(State {
                server: Server::new(limits),
                clients: IdMap::default(),
                buf: vec![0; READ_BUF].into_boxed_slice(),
                alarm: Alarm::default(),
                stopped: None,
            }),
        }
    }

    /// Open connections.
    fn connections(&self) -> usize {
        self.state.borrow().server.connections()
    }

    /// A new client; or `None` if the server is full, which the client is told before its
    /// socket is closed. What its arrival owes (its welcome, `joined` to its room) is queued
    /// and not written yet: its task does that, first thing.
    fn connect(&self, stream: Async<TcpStream>) -> Option<ClientId> {
        let mut state = self.state.borrow_mut();
        let Ok(id) = state.server.connect(Instant::now()) else {
            refuse(&stream);
            return None;
        };
        state.clients.insert(id, Client { stream, task: None });
        Some(id)
    }

    /// Carries out whatever the server has not been answered for yet.
    fn settle(&self) {
        self.state.borrow_mut().settle(Instant::now());
    }

    /// Sleeps until the client's task has something to do. The task's one waker is left in
    /// up to three places: with the reactor for reading (while the server takes the client's
    /// input) and for writing (while the client is owed bytes its socket did not take), and
    /// here, for the server's word (see [`State::settle`]). Whichever comes first wakes it.
    // ANCHOR: turn
    fn turn(&self, id: ClientId, eof: bool) -> impl Future<Output = Turn> + '_ {
        poll_fn(move |cx| {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            let Some(client) = state.clients.get_mut(&id) else {
                return Poll::Ready(Turn::Over);
            };
            let owed = state.server.outbox(id).is_some_and(|o| !o.is_empty());
            if owed && client.stream.poll_ready(Direction::Write, cx).is_ready() {
                return Poll::Ready(Turn::Write);
            }
            if !eof
                && state.server.reading(id)
                && client.stream.poll_ready(Direction::Read, cx).is_ready()
            {
                return Poll::Ready(Turn::Read);
            }
            park(&mut client.task, cx.waker());
            Poll::Pending
        })
    }
    // ANCHOR_END: turn

    /// One non-blocking `read` into the shared buffer, handed to the server, whose answer is
    /// carried out at once.
    // ANCHOR: read
    fn read(&self, id: ClientId) -> Read {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let Some(client) = state.clients.get(&id) else {
            return Read::Empty;
        };
        let now = Instant::now();
        let mut socket = client.stream.get_ref();
        let read = match socket.read(&mut state.buf) {
            Ok(0) => {
                state.server.eof(id, now); // a goodbye: replies are still written
                Read::End
            }
            Ok(n) => {
                state.server.receive(id, &state.buf[..n], now);
                if n == READ_BUF {
                    Read::Full
                } else {
                    Read::Bytes
                }
            }
            // Only `WouldBlock` proves the socket empty. A short read does not: Linux stops
            // a read at a TCP urgent mark, with more bytes behind it, and an edge-triggered
            // reactor would never report them again.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                client.stream.clear_ready(Direction::Read);
                return Read::Empty;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Read::Bytes,
            Err(err) => {
                log::debug!("{id}: read: {err}");
                state.drop_client(id, now);
                Read::End
            }
        };
        state.settle(now);
        read
    }
    // ANCHOR_END: read

    /// The client's socket has room again: write what it is still owed.
    fn flush(&self, id: ClientId) {
        let mut state = self.state.borrow_mut();
        let now = Instant::now();
        state.write(id, now); // if it is still full, the task's next turn waits for room
        state.settle(now); // room for it may let senders that waited go on
    }

    /// Sleeps until the server's next deadline is earlier than the one the timer task sleeps
    /// until.
    async fn earlier_deadline(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            let deadline = state.server.poll_timeout();
            if state.alarm.is_late_for(deadline) {
                return Poll::Ready(());
            }
            park(&mut state.alarm.waker, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The timer task's turn: the server acts on what is due, and names its next deadline,
    /// which the timer task sleeps until.
    fn handle_timeout(&self) -> Option<Instant> {
        let mut state = self.state.borrow_mut();
        let now = Instant::now();
        state.alarm.waker = None; // awake: its own `settle` has nobody to wake
        state.server.handle_timeout(now);
        state.settle(now);
        state.alarm.armed = state.server.poll_timeout();
        state.alarm.armed
    }

    /// Every client gets `* server shutting down`, then the end of its stream; the server
    /// closes them all within its shutdown grace.
    fn shutdown(&self) {
        let mut state = self.state.borrow_mut();
        let now = Instant::now();
        state.server.shutdown(now);
        state.settle(now);
    }

    /// Sleeps until the server has stopped: shut down, and every client closed.
    async fn stopped(&self) {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.server.is_stopped() {
                return Poll::Ready(());
            }
            park(&mut state.stopped, cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl State {
    /// Carries out the server's events, in the turn of the task whose call caused them (the
    /// one holding the state now). A message to a room is written to every member's socket
    /// right here, in the sender's turn; a member's task is woken only when the server needs
    /// it: its socket is full, its input is accepted again, it was hung up or closed. Waking
    /// a task only queues it, so it is safe with the state borrowed: nothing else runs until
    /// this task returns `Pending`, and then every borrow is over.
    // ANCHOR: settle
    fn settle(&mut self, now: Instant) {
        while let Some(event) = self.server.poll_event() {
            match event {
                Event::Flush(id) => {
                    if self.write(id, now) == Some(Flushed::Partly) {
                        self.wake(id); // its task waits for room, and writes the rest
                    }
                }
                // Read again: bytes may be waiting in the kernel, and the reactor still says
                // so (readiness is cleared only by `WouldBlock`).
                Event::Resume(id) => self.wake(id),
                // All written and the server done: end our side, and keep reading until the
                // client ends its side (closing with bytes unread would send a reset).
                Event::Hangup(id) => {
                    if let Some(client) = self.clients.get(&id) {
                        if let Err(err) = client.stream.get_ref().shutdown(Both::Write) {
                            log::debug!("{id}: shutdown: {err}");
                            self.drop_client(id, now);
                        }
                    }
                    self.wake(id); // reading may be on again (a closing client is read)
                }
                // Dropping the socket closes it; the task wakes up to find it gone, and ends.
                Event::Close(id) => {
                    if let Some(task) = self.clients.remove(&id).and_then(|c| c.task) {
                        task.wake();
                    }
                }
            }
        }
        if self.alarm.is_late_for(self.server.poll_timeout()) {
            if let Some(timer_task) = self.alarm.waker.take() {
                timer_task.wake();
            }
        }
        if self.server.is_stopped() {
            if let Some(serve) = self.stopped.take() {
                serve.wake();
            }
        }
    }
    // ANCHOR_END: settle

    /// Writes what `id` is owed to its socket, without waiting: the server's one write path,
    /// `writev`s of many lines until nothing is owed or the socket is full (`Partly`).
    // ANCHOR: write
    fn write(&mut self, id: ClientId, now: Instant) -> Option<Flushed> {
        let client = self.clients.get(&id)?;
        // `write_vectored` is `writev(2)`. (A Rust program starts with SIGPIPE ignored, so
        // writing to a connection the peer closed is an EPIPE error here, not a dead server.)
        let mut socket = client.stream.get_ref();
        match self
            .server
            .flush(id, now, |lines| socket.write_vectored(lines))
        {
            Ok(flushed) => {
                if flushed == Flushed::Partly {
                    // The write said `WouldBlock`: the next edge will say when there is room.
                    client.stream.clear_ready(Direction::Write);
                }
                Some(flushed)
            }
            Err(err) => {
                log::debug!("{id}: write: {err}");
                self.drop_client(id, now);
                None
            }
        }
    }
    // ANCHOR_END: write

    /// Wakes the task of `id`, if it sleeps.
    fn wake(&mut self, id: ClientId) {
        if let Some(task) = self.clients.get_mut(&id).and_then(|c| c.task.take()) {
            task.wake();
        }
    }

    /// The connection failed: close its socket, wake its task (to end), tell the server.
    fn drop_client(&mut self, id: ClientId, now: Instant) {
        if let Some(task) = self.clients.remove(&id).and_then(|c| c.task) {
            task.wake();
        }
        self.server.closed(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};
    use std::time::Duration;

    /// A [`Shared`] with real client sockets and their tasks, run for a moment at a time.
    struct Harness {
        executor: Executor,
        shared: Rc<Shared>,
        listener: TcpListener,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                executor: Executor::new(),
                shared: Rc::new(Shared::new(Limits::default())),
                listener: TcpListener::bind("127.0.0.1:0").expect("bind"),
            }
        }

        /// A connected client (a blocking socket) and its id; its task is spawned.
        fn connect(&self) -> (BufReader<TcpStream>, ClientId) {
            let addr = self.listener.local_addr().expect("addr");
            let peer = TcpStream::connect(addr).expect("connect");
            peer.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let (socket, _) = self.listener.accept().expect("accept");
            let id = self
                .shared
                .connect(Async::new(socket).expect("register"))
                .expect("room for the client");
            self.executor
                .spawn(client(Rc::clone(&self.shared), id))
                .detach();
            (BufReader::new(peer), id)
        }

        /// Runs every task for `ms` milliseconds; returns how many polls that took.
        fn run_for(&self, ms: u64) -> u64 {
            let before = self.executor.polls();
            block_on(self.executor.run(Timer::after(Duration::from_millis(ms))));
            self.executor.polls() - before
        }
    }

    fn line(reader: &mut BufReader<TcpStream>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a line in time");
        line
    }

    /// The point of the stage: an idle client is one small task. Its state is what lives
    /// across an `.await`; this fails if someone moves a buffer (or a second socket handle,
    /// or a timer) into it.
    #[test]
    fn a_client_task_holds_no_buffer() {
        let harness = Harness::new();
        let (_peer, id) = harness.connect();
        let task = client(Rc::clone(&harness.shared), id);
        let size = size_of_val(&task);
        eprintln!("client task: {size} bytes");
        assert!(size <= 128, "the client task is {size} bytes");
    }

    /// Write-through: a message reaches every member's socket in the sender's turn. Only the
    /// sender's task is polled, however big the room: no wake-up per recipient.
    #[test]
    fn a_line_is_written_to_the_room_in_the_senders_turn() {
        let harness = Harness::new();
        let mut members: Vec<_> = (0..8).map(|_| harness.connect()).collect();
        harness.run_for(20); // every task polled once, now asleep
        for (reader, _) in &mut members {
            while !line(reader).starts_with("* welcome") {}
        }
        for i in 1..members.len() {
            for (reader, _) in &mut members[..i] {
                assert!(line(reader).contains("joined lobby"));
            }
        }
        let (sender, _) = &mut members[0];
        sender.get_mut().write_all(b"hello\n").expect("send");
        let polls = harness.run_for(20);
        for (reader, _) in &mut members[1..] {
            assert_eq!(line(reader), "<guest1> hello\n");
        }
        // The sender's task once, `run_for`'s timer future twice (first poll, expiry).
        assert!(polls <= 3, "{polls} polls for one message to 7 members");
    }

    /// Issue 17: a short read is not an empty socket. A byte sent with MSG_OOB makes Linux
    /// stop a read at it; the line after it must still be delivered without a third line.
    #[test]
    fn an_urgent_byte_does_not_hide_the_next_line() {
        let harness = Harness::new();
        let (mut sender, _) = harness.connect();
        let (mut member, _) = harness.connect();
        harness.run_for(20);
        assert!(line(&mut sender).starts_with("* welcome"));
        assert!(line(&mut sender).contains("joined lobby"));
        assert!(line(&mut member).starts_with("* welcome"));
        let mut stream = sender.get_ref();
        stream.write_all(b"one\n").expect("send");
        socket2::SockRef::from(stream)
            .send_out_of_band(b"!")
            .expect("urgent byte");
        stream.write_all(b"two\n").expect("send");
        harness.run_for(50);
        assert_eq!(line(&mut member), "<guest1> one\n");
        assert_eq!(line(&mut member), "<guest1> two\n");
    }

    /// A half-close is a goodbye: every reply is written, then the server closes.
    #[test]
    fn a_half_closed_client_gets_every_reply() {
        let harness = Harness::new();
        let (mut peer, _) = harness.connect();
        peer.get_mut().write_all(b"/help\n").expect("send");
        peer.get_ref().shutdown(Both::Write).expect("half-close");
        harness.run_for(50);
        let mut got = String::new();
        peer.read_to_string(&mut got)
            .expect("everything, then the end");
        assert!(got.starts_with("* welcome"), "{got:?}");
        assert!(got.contains("/quit"), "no help in {got:?}");
        assert_eq!(harness.shared.connections(), 0);
        assert_eq!(harness.executor.len(), 0, "the client's task ended");
    }
}
