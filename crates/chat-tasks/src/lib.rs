//! # chat-tasks: what the task stages share
//!
//! Stages 8 to 10 serve every client with a task of its own, on tokio, async-std and smol.
//! What differs between them is the runtime: how a task is spawned, how it waits for its
//! socket, how it races two waits, its timers. What does not differ is written once, here,
//! with no runtime in it:
//!
//! - [`Shared`]: one [`chat_core::Server`] behind one `std::sync::Mutex` (never held across
//!   an `.await`: every method takes it, calls the server, and lets go), each client's
//!   socket handle, and each task's [`Doorbell`];
//! - the **settle** step that follows every call into the server, under the same lock: the
//!   task that made the call carries out the server's events itself. Lines queued for a
//!   client are written to its socket right away, without waiting (*write-through*); only
//!   a client whose socket did not take everything has its own task woken, to wait for
//!   writability and write the rest. A room message costs one `writev` per member, as in
//!   the event loops of stages 5 and 6, and no task wake-up at all;
//! - the **round**: writing through one call at a time cannot merge the lines of many
//!   callers. When a burst of calls (a thousand clients connecting into the lobby, each
//!   announced to all the others) has used up a round's [`ROUND_WRITES`], the lines wait in
//!   the outboxes and the server's own task writes each client's once, when it runs after the
//!   tasks that were ready: what an event loop does after each batch of readiness;
//! - [`Client`]: what a client's task holds — its id, its socket and its doorbell — and
//!   what it asks ([`Client::want`]: read? wait for writability?);
//! - the server's own task, which each stage spawns once: [`Shared::tick`] ends the round,
//!   runs the server's timers, and says when to come back; its [`Shared::doorbell`] rings
//!   when a call made an earlier deadline or left lines for the end of the round.
//!
//! *Invariant:* no runtime and no runtime-abstraction trait. [`Shared`] is generic over the
//! socket handle type of the stage's runtime, and the two things only that type can do — a
//! non-blocking vectored write, `shutdown(SHUT_WR)` — come in as plain functions
//! ([`Write`], [`HangUp`]). The stages keep plain tokio, async-std and smol code.

#![forbid(unsafe_code)]

mod doorbell;
mod server; // `Shared::with_server`, `Shared::with`: for stage 12's broker task

pub use doorbell::Doorbell;

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Flushed, Limits, Server, SHUTDOWN_GRACE};

/// How long a stage waits, after [`Shared::shutdown`], for [`Shared::stopped`]: the server's
/// own [`SHUTDOWN_GRACE`], plus a margin for the runtime's timer to fire and the last tasks to
/// run. (Past it, the stage gives up and returns anyway.)
pub const STOP_WAIT: Duration = SHUTDOWN_GRACE.saturating_add(Duration::from_millis(500));

/// How many write-throughs a round may make. A room message to 100 members uses 99; past the
/// budget, what is queued waits in the outboxes for the end of the round, when the server's
/// task writes each client once, all its lines in one `writev`. Small enough that a burst of
/// broadcasts costs a few `writev`s per client and round, not one per line; large enough that
/// at an ordinary pace nearly every line goes out at once.
pub const ROUND_WRITES: usize = 256;

// ANCHOR: functions
/// A non-blocking vectored write (`writev`) on the stage's socket type: how many bytes the
/// socket took, or `WouldBlock` when it is full. It must never wait.
pub type Write<S> = fn(&S, &[IoSlice<'_>]) -> io::Result<usize>;

/// `shutdown(SHUT_WR)` on the stage's socket type: the end of our side of the stream.
pub type HangUp<S> = fn(&S) -> io::Result<()>;
// ANCHOR_END: functions

// ANCHOR: shared
/// What every task of one server shares. `S` is the stage's socket handle.
#[derive(Debug)]
pub struct Shared<S> {
    /// The protocol and every client's socket, behind one lock.
    state: Mutex<State<S>>,
    /// The server task's doorbell: rung when a call made a deadline earlier than the one it
    /// sleeps until, or left lines for the end of the round.
    doorbell: Doorbell,
    /// Rung once the server has stopped (after [`Shared::shutdown`], everybody closed).
    stopped: Doorbell,
}

/// The part of [`Shared`] behind the lock.
#[derive(Debug)]
struct State<S> {
    /// The sans-IO server: rooms, nicks, framers, outboxes, flow control, timers.
    server: Server,
    /// Every client the server knows, by id: its socket (to write through) and doorbell.
    /// A client's entry goes when the server closes it, so that the task's own handle is
    /// the last one and the socket closes when the task drops it.
    peers: IdMap<Arc<Peer<S>>>,
    /// The stage's non-blocking write.
    write: Write<S>,
    /// The stage's `shutdown(SHUT_WR)`.
    hang_up: HangUp<S>,
    /// Write-throughs left in this round (see [`ROUND_WRITES`]).
    budget: usize,
    /// Clients whose lines wait for the end of the round (the budget ran out).
    deferred: Vec<ClientId>,
    /// The deadline the server task sleeps until, as it last asked ([`Shared::tick`]).
    timer_at: Option<Instant>,
    /// Tasks to wake once the lock is released.
    wake: Vec<Waker>,
}

/// One client's socket and doorbell, held by its task and by the map of [`State`].
#[derive(Debug)]
struct Peer<S> {
    /// The runtime's socket handle.
    socket: S,
    /// Rung when the client's task has something to do that it cannot see by itself.
    doorbell: Doorbell,
}
// ANCHOR_END: shared

impl<S> Shared<S> {
    /// An empty server with these limits; `write` and `hang_up` are the stage's socket
    /// operations.
    pub fn new(limits: Limits, write: Write<S>, hang_up: HangUp<S>) -> Self {
        Self {
            state: Mutex::new(State {
                server: Server::new(limits),
                peers: IdMap::default(),
                write,
                hang_up,
                budget: ROUND_WRITES,
                deferred: Vec::new(),
                timer_at: None,
                wake: Vec::new(),
            }),
            doorbell: Doorbell::new(),
            stopped: Doorbell::new(),
        }
    }

    /// A new connection: welcomed (the welcome is written at once), or handed back when the
    /// server is full or stopping, for the stage to refuse with `! server full`.
    // ANCHOR: join
    pub fn join(self: &Arc<Self>, socket: S) -> Result<Client<S>, S> {
        let joined = self.call(move |state, now| match state.server.connect(now) {
            Ok(id) => {
                let peer = Arc::new(Peer {
                    socket,
                    doorbell: Doorbell::new(),
                });
                state.peers.insert(id, Arc::clone(&peer));
                Ok((id, peer))
            }
            Err(chat_core::ServerFull) => Err(socket),
        });
        let (id, peer) = joined?;
        log::debug!("client {id} joined");
        Ok(Client {
            shared: Arc::clone(self),
            id,
            peer,
        })
    }
    // ANCHOR_END: join

    /// Clients the server holds, including those it is closing.
    pub fn connections(&self) -> usize {
        self.lock().server.connections()
    }

    /// SIGINT/SIGTERM: every client gets `* server shutting down` after what it is owed, and
    /// the server closes them all within [`SHUTDOWN_GRACE`]; nobody new is let in.
    pub fn shutdown(&self) {
        self.call(|state, now| state.server.shutdown(now));
    }

    /// True once [`Shared::shutdown`] was called and the server has closed every client.
    pub fn is_stopped(&self) -> bool {
        self.lock().server.is_stopped()
    }

    /// Waits until [`Shared::is_stopped`].
    pub async fn stopped(&self) {
        while !self.is_stopped() {
            self.stopped.rung().await;
        }
    }

    // ANCHOR: tick
    /// The server task's turn: ends the round (writes every client whose lines waited for
    /// it, and gives the next round its budget), cuts the slow consumers and closes the
    /// goodbyes that are due, and says when to come back (`None`: when its doorbell rings).
    pub fn tick(&self) -> Option<Instant> {
        self.call(|state, now| {
            state.server.handle_timeout(now);
            state.budget = ROUND_WRITES;
            for id in mem::take(&mut state.deferred) {
                state.write_through(id, now);
            }
            // Remembered, so that a call that makes an earlier deadline rings the doorbell.
            self.doorbell.clear(); // whatever rang it is done now, or in the answer
            state.timer_at = state.server.poll_timeout();
            state.timer_at
        })
    }

    /// The server task's doorbell: rung when a call made a deadline earlier than the one
    /// [`Shared::tick`] last gave, or left lines for the end of the round.
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }
    // ANCHOR_END: tick

    /// Every call into the server goes through here: take the clock and the lock, call,
    /// settle, let go of the lock, and only then wake the tasks that must be woken.
    // ANCHOR: call
    fn call<R>(&self, f: impl FnOnce(&mut State<S>, Instant) -> R) -> R {
        let now = Instant::now(); // the core never reads a clock: we pass it the time
        let (result, wake) = {
            let mut state = self.lock();
            let result = f(&mut state, now);
            self.settle(&mut state, now);
            (result, mem::take(&mut state.wake))
        };
        // Waking a task may mean waking a thread (a system call): nobody should wait for the
        // lock meanwhile.
        wake.into_iter().for_each(Waker::wake);
        result
    }
    // ANCHOR_END: call

    /// Carries out what the server asks for after a call, from the task that made the call.
    // ANCHOR: settle
    fn settle(&self, state: &mut State<S>, now: Instant) {
        // Writing lets waiting senders go on, which queues more events: hence the loop.
        while let Some(event) = state.server.poll_event() {
            match event {
                // Lines were queued for `id`: write them to its socket now, without waiting,
                // unless this round's budget is spent: then they wait for the round's end.
                Event::Flush(id) if state.budget == 0 => {
                    if state.deferred.is_empty() {
                        state.wake.extend(self.doorbell.ring());
                    }
                    state.deferred.push(id);
                }
                Event::Flush(id) => {
                    state.budget -= 1;
                    state.write_through(id, now);
                }
                // Its input is accepted again: its task reads again.
                Event::Resume(id) => state.ring(id),
                // All written: end our side of the stream (one non-blocking system call) and
                // let its task read until the client ends its side (`Client::eof`). It may
                // not have been reading (its input waited), so ring it.
                Event::Hangup(id) => state.hang_up(id, now),
                // The server has forgotten `id`: drop our handle to its socket and wake its
                // task, which ends and drops the last one, closing the socket.
                Event::Close(id) => {
                    if let Some(peer) = state.peers.remove(&id) {
                        state.wake.extend(peer.doorbell.ring());
                    }
                }
            }
        }
        // A deadline earlier than the one the server task sleeps until: wake it to re-arm.
        if let Some(at) = state.server.poll_timeout() {
            if state.timer_at.is_none_or(|armed| at < armed) {
                state.timer_at = Some(at);
                state.wake.extend(self.doorbell.ring());
            }
        }
        if state.server.is_stopped() {
            state.wake.extend(self.stopped.ring());
        }
    }
    // ANCHOR_END: settle

    /// The lock, even if a task panicked while holding it: every `Server` method finishes its
    /// bookkeeping before it could panic, so the state is still consistent.
    fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> State<S> {
    /// Writes what `id` is owed to its socket, as far as the socket takes it now.
    // ANCHOR: write_through
    fn write_through(&mut self, id: ClientId, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return; // closed since
        };
        let write = self.write;
        match self
            .server
            .flush(id, now, |lines| write(&peer.socket, lines))
        {
            Ok(Flushed::All) => {}
            // Its socket is full: its own task waits until it is writable.
            Ok(Flushed::Partly) => self.wake.extend(peer.doorbell.ring()),
            Err(err) => self.fail(id, err, now),
        }
    }
    // ANCHOR_END: write_through

    /// The task of `id` writes what `id` is owed, with `write`. On an error the connection is
    /// gone: the server forgets it, and the task ends with the error.
    fn flush_own(
        &mut self,
        id: ClientId,
        now: Instant,
        write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Flushed> {
        let flushed = self.server.flush(id, now, write);
        if flushed.is_err() {
            self.server.closed(id, now);
            self.peers.remove(&id);
        }
        flushed
    }

    /// The server hung up on `id`: ends our side of its stream.
    fn hang_up(&mut self, id: ClientId, now: Instant) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        match (self.hang_up)(&peer.socket) {
            Ok(()) => self.ring(id),
            Err(err) => self.fail(id, err, now),
        }
    }

    /// Wakes the task of `id`, if it still has one.
    fn ring(&mut self, id: ClientId) {
        if let Some(peer) = self.peers.get(&id) {
            self.wake.extend(peer.doorbell.ring());
        }
    }

    /// Writing to `id` failed (a reset, a broken pipe): the connection is gone. Its room
    /// hears that it left, and its task is woken to end.
    fn fail(&mut self, id: ClientId, err: io::Error, now: Instant) {
        log::debug!("client {id}: {err}");
        self.server.closed(id, now);
        if let Some(peer) = self.peers.remove(&id) {
            self.wake.extend(peer.doorbell.ring());
        }
    }
}

// ANCHOR: client
/// A client, as its own task holds it: its id, its socket and its doorbell. However the
/// task ends — the client left, its connection failed, the server closed it, or the runtime
/// dropped the task — dropping this tells the server, and the room hears that it left.
#[derive(Debug)]
pub struct Client<S> {
    /// The server it is a client of.
    shared: Arc<Shared<S>>,
    /// Its id in the server.
    id: ClientId,
    /// Its socket and doorbell (a second handle is in the shared map until it is closed).
    peer: Arc<Peer<S>>,
}
// ANCHOR_END: client

// ANCHOR: want
/// What a client's task should wait for next (see [`Client::want`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Read from the socket: the server takes this client's input now. False while its input
    /// waits for room (until its doorbell rings), and after the end of its stream.
    pub read: bool,
    /// Wait until the socket is writable, then [`Client::flush`]: it is owed bytes its socket
    /// did not take. False most of the time: others' tasks write through.
    pub write: bool,
}
// ANCHOR_END: want

impl<S> Client<S> {
    /// Its id in the server.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Its socket.
    pub fn socket(&self) -> &S {
        &self.peer.socket
    }

    // ANCHOR: want_fn
    /// What to wait for next, or `None` once the server has closed this client: the task
    /// then ends and drops the socket. Also forgets any ring of the doorbell: the answer
    /// already includes whatever the ring was about.
    pub fn want(&self) -> Option<Want> {
        let state = self.shared.lock();
        if !state.peers.contains_key(&self.id) {
            return None;
        }
        self.peer.doorbell.clear();
        Some(Want {
            read: state.server.reading(self.id),
            write: state.server.outbox(self.id).is_some_and(|o| !o.is_empty()),
        })
    }
    // ANCHOR_END: want_fn

    /// Waits until another task rings this client's doorbell.
    pub fn rung(&self) -> impl Future<Output = ()> + '_ {
        self.peer.doorbell.rung()
    }

    /// The doorbell, polled by hand (for a stage that races its waits in one `poll_fn`).
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.peer.doorbell.poll_rung(cx)
    }

    // ANCHOR: calls
    /// Bytes read from the socket: the server handles the lines that fit, and what they
    /// queue for others is written through before this returns.
    pub fn receive(&self, bytes: &[u8]) {
        self.shared
            .call(|state, now| state.server.receive(self.id, bytes, now));
    }

    /// A read returned 0: the client ended its stream (a normal goodbye). It is not read
    /// again (its socket would report that end for ever); the server writes what it is owed
    /// and then closes it.
    pub fn eof(&self) {
        self.shared
            .call(|state, now| state.server.eof(self.id, now));
    }

    /// The socket is writable: write what this client is owed, as far as the socket takes
    /// it, with the stage's [`Write`]. `Ok(Flushed::Partly)`: wait for writability again.
    /// `Err`: the connection failed, and the server has forgotten the client.
    pub fn flush(&self) -> io::Result<Flushed> {
        let socket = &self.peer.socket;
        self.shared.call(|state, now| {
            let write = state.write;
            state.flush_own(self.id, now, |lines| write(socket, lines))
        })
    }
    // ANCHOR_END: calls

    /// [`Client::flush`] with another write: for a runtime whose only way to wait for
    /// writability is a write that registers the task's waker when the socket is full.
    pub fn flush_with(
        &self,
        mut write: impl FnMut(&S, &[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Flushed> {
        let socket = &self.peer.socket;
        self.shared
            .call(|state, now| state.flush_own(self.id, now, |lines| write(socket, lines)))
    }
}

// ANCHOR: drop
impl<S> Drop for Client<S> {
    fn drop(&mut self) {
        let id = self.id;
        // Nothing to do if the server closed it already; otherwise it hears that the
        // connection is gone (its room, that the client left).
        let peer = self.shared.call(|state, now| {
            state.server.closed(id, now);
            state.peers.remove(&id)
        });
        drop(peer); // after the lock (our own handle, the last one, goes right after)
        log::debug!("client {id} left");
    }
}
// ANCHOR_END: drop

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that records what it was given and takes at most `room` bytes.
    #[derive(Debug, Default)]
    struct Fake {
        written: Mutex<Vec<u8>>,
        writes: Mutex<usize>,
        room: Mutex<usize>,
        hung_up: Mutex<bool>,
    }

    fn fake(room: usize) -> Fake {
        Fake {
            room: Mutex::new(room),
            ..Fake::default()
        }
    }

    fn write(socket: &Fake, lines: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut room = socket.room.lock().unwrap();
        if *room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *socket.writes.lock().unwrap() += 1;
        let mut taken = 0;
        let mut written = socket.written.lock().unwrap();
        for line in lines {
            let n = line.len().min(*room - taken);
            written.extend_from_slice(&line[..n]);
            taken += n;
        }
        *room -= taken;
        Ok(taken)
    }

    fn hang_up(socket: &Fake) -> io::Result<()> {
        *socket.hung_up.lock().unwrap() = true;
        Ok(())
    }

    fn text(client: &Client<Fake>) -> String {
        String::from_utf8(client.socket().written.lock().unwrap().clone()).unwrap()
    }

    fn writes(client: &Client<Fake>) -> usize {
        *client.socket().writes.lock().unwrap()
    }

    fn shared() -> Arc<Shared<Fake>> {
        Arc::new(Shared::new(Limits::default(), write, hang_up))
    }

    #[test]
    fn the_senders_call_writes_to_everybody_and_wakes_nobody() {
        let shared = shared();
        let alice = shared.join(fake(1 << 20)).unwrap();
        let bob = shared.join(fake(1 << 20)).unwrap();
        // Welcomes and notices were written by `join` itself.
        assert!(
            text(&alice).starts_with("* welcome guest1"),
            "{}",
            text(&alice)
        );
        assert!(text(&alice).contains("* guest2 joined lobby\n"));
        assert!(alice.want().is_some() && bob.want().is_some()); // clears the doorbells
        alice.receive(b"hello\n");
        assert!(text(&bob).ends_with("<guest1> hello\n"), "{}", text(&bob));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(bob.poll_rung(&mut cx).is_pending(), "nobody was woken");
        assert!(shared.doorbell().poll_rung(&mut cx).is_pending());
        let want = bob.want().unwrap();
        assert_eq!(
            want,
            Want {
                read: true,
                write: false
            }
        );
    }

    #[test]
    fn a_full_socket_wakes_its_own_task_which_then_writes() {
        let shared = shared();
        let alice = shared.join(fake(1 << 20)).unwrap();
        let bob = shared.join(fake(1 << 20)).unwrap();
        assert!(bob.want().is_some()); // clears its doorbell
        *bob.socket().room.lock().unwrap() = 3;
        alice.receive(b"hello\n");
        assert!(text(&bob).ends_with("<gu"));
        // Rung, and owed bytes: wait for writability.
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(bob.poll_rung(&mut cx).is_ready());
        assert!(bob.want().unwrap().write);
        *bob.socket().room.lock().unwrap() = 100;
        assert_eq!(bob.flush().unwrap(), Flushed::All);
        assert!(text(&bob).ends_with("<guest1> hello\n"));
        assert!(!bob.want().unwrap().write);
    }

    #[test]
    fn past_the_rounds_budget_lines_wait_for_the_end_of_the_round() {
        let shared = shared();
        let watcher = shared.join(fake(1 << 20)).unwrap();
        // 30 more joins, each announced to everybody already in the lobby: far more than a
        // round's budget of write-throughs.
        let others: Vec<_> = (0..30)
            .map(|_| shared.join(fake(1 << 20)).unwrap())
            .collect();
        let last = "* guest31 joined lobby\n";
        assert!(!text(&watcher).ends_with(last), "the last notices waited");
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(
            shared.doorbell().poll_rung(&mut cx).is_ready(),
            "for the server task"
        );
        // Its turn writes what waited, to each client at once.
        let before = writes(&watcher);
        shared.tick();
        assert_eq!(writes(&watcher), before + 1);
        assert!(text(&watcher).ends_with(last));
        assert!(others.iter().all(|c| !c.want().unwrap().write));
    }

    #[test]
    fn quit_hangs_up_then_eof_closes() {
        let shared = shared();
        let alice = shared.join(fake(1 << 20)).unwrap();
        alice.receive(b"/quit\n");
        assert!(text(&alice).ends_with("* bye\n"));
        assert!(*alice.socket().hung_up.lock().unwrap());
        assert!(
            alice.want().unwrap().read,
            "reads until the client ends its stream"
        );
        alice.eof();
        assert_eq!(alice.want(), None, "closed: the task ends");
        assert_eq!(shared.connections(), 0);
    }

    #[test]
    fn a_deadline_rings_the_server_task_and_shutdown_stops() {
        let shared = shared();
        assert_eq!(shared.tick(), None);
        let alice = shared.join(fake(1 << 20)).unwrap();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(shared.doorbell().poll_rung(&mut cx).is_pending());
        shared.shutdown();
        // Everybody got the goodbye and was hung up; the grace is now timed.
        assert!(text(&alice).ends_with("* server shutting down\n"));
        assert!(shared.doorbell().poll_rung(&mut cx).is_ready());
        assert!(shared.tick().is_some());
        assert!(!shared.is_stopped());
        drop(alice); // its task ends: the server forgets it
        assert!(shared.is_stopped());
        let mut stopped = std::pin::pin!(shared.stopped());
        assert!(stopped.as_mut().poll(&mut cx).is_ready());
    }
}
