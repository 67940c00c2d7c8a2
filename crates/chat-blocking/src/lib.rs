//! # chat-blocking: the session of the blocking stages
//!
//! One client, served by one thread that blocks in `read`. Stages 01 (sequential), 02 (a thread
//! per client) and 03 (a thread pool) run exactly this code for each client; they differ only
//! in *who* runs it: the accepting thread itself, a new thread, or a pool worker. What such a
//! thread can and cannot do is the lesson of those three chapters, so it is written once, here.
//!
//! The stages use [`chat_core::Hub`] directly (the rooms and nicks), not `chat_core::Server`,
//! which keeps an outbox per client in user space for the event loops: here the outbox is the
//! kernel's.
//!
//! ## How bytes move
//!
//! A client's thread spends its life blocked in `read` on that client's socket. When a line
//! arrives it locks the shared [`Hub`], lets it decide who gets what, and puts each line in
//! its recipient's *queue*, in the order the hub decided. Then it unlocks, and writes those
//! queues into the recipients' sockets itself. The lock is held only to decide and queue:
//! never while writing, never while waiting.
//!
//! The queues keep what a client sees in the order the hub decided it, although many threads
//! write at once and after unlocking: `/who` agrees with the notices that came before it, and
//! nothing comes after `* bye`. A new client's welcome is first in its queue, so nothing can
//! reach it before. A nick that was freed (its owner left or was renamed) is *held* by the hub
//! until the stage releases it (`Action::Release`); here that is right after the notices
//! saying so are queued, under the same lock: whoever is announced under that nick later is
//! queued behind them, in every queue, so a room never sees the next `guest2` join before the
//! previous one left.
//!
//! A queue is not an outbox: it holds only lines that some thread has decided and is writing
//! (or waiting to write). The thread that filled it does not read again before its lines are
//! written, so a queue never holds more than one read's worth of lines per sending thread.
//!
//! ## The kernel's send buffer is the outbox
//!
//! A recipient's **kernel send buffer is its outbox**, sized from `--outbox-bytes`
//! (`SO_SNDBUF`, with headroom for the kernel's bookkeeping, see [`SNDBUF_PER_OUTBOX_BYTE`]).
//! Every write is `send(.., MSG_DONTWAIT)`. When a line does not fit, the *writing* thread
//! waits for the socket to become writable again (`poll(POLLOUT)`, which Linux reports only
//! once a good part of the buffer is free: the kernel's own low mark), and reads nothing more
//! from its own client meanwhile. That is the specification's flow control with the kernel's
//! buffer as the outbox: input waits for room. A recipient whose socket stays full for
//! [`chat_core::SLOW_GRACE`] is a *slow consumer*: the waiting thread shuts its socket down
//! and drops its queue, and the recipient's own thread, woken by that, tells the room
//! `(slow consumer)`.
//!
//! One thread at a time writes a connection's queue out: it holds the connection's *turn*
//! (a small mutex) while it writes, waiting included. So lines never interleave, and a thread
//! that wants to write to a recipient that is being waited for queues behind the waiter: the
//! backpressure reaches every sender.
//!
//! What this design does not do is *coalesce*: each line is one system call. The readiness
//! stages (04–06) write many lines per call.
//!
//! ## Closing
//!
//! After `* bye` (or `* server shutting down`) the server ends its side of the stream and keeps
//! reading, ignoring what arrives, until the client ends its side too or the grace
//! ([`chat_core::CLOSE_GRACE`], at shutdown [`chat_core::SHUTDOWN_GRACE`]) from the decision to
//! close has passed. Closing a socket with unread input would make the kernel send a reset,
//! which destroys what the client was still owed. A client that ends its own stream has been
//! answered already (its thread writes every reply before it reads again), so its connection
//! closes at once; a slow consumer is cut at once.
//!
//! At shutdown a thread of its own ([`stop_on`]) queues the notice for every connection, after
//! what it is owed, and writes it without waiting: a socket that cannot take it at once is
//! closed. Then it waits for the clients to leave, and shuts down whatever is still open at the
//! end of the grace (which wakes the threads blocked in `read`).

#![deny(unsafe_code)] // one `poll` call, allowed where it is made (`wait_writable`)
#![deny(clippy::undocumented_unsafe_blocks)]

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read as _};
use std::net::{Shutdown as Direction, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chat_core::hub::{IdMap, IdSet};
use chat_core::{Action, Bytes, ClientId, Framer, Hub, Limits};
use chat_core::{CLOSE_GRACE, SHUTDOWN_GRACE, SLOW_GRACE};
use chat_net::Shutdown;
use socket2::SockRef;

#[cfg(test)]
mod tests;
mod wait;

use wait::{remaining, wait_writable, Wake};

/// Bytes read per `read` call. On the stack of the client's thread: no heap per client.
const READ_BUF: usize = 4096;

/// `SO_SNDBUF` is asked for as this many times `--outbox-bytes`. Linux charges a send buffer
/// not only for the bytes queued but for its own bookkeeping of each write (a socket buffer of
/// roughly a kilobyte, even for a 30-byte line), and then doubles what we ask for (up to
/// `net.core.wmem_max`). Asking for exactly `--outbox-bytes` would hold far fewer short lines
/// than the user-space outboxes of the readiness stages do; four times the bound holds about
/// as many.
pub const SNDBUF_PER_OUTBOX_BYTE: usize = 4;

/// A drained queue that grew beyond this many lines is given back to the allocator.
const IDLE_QUEUE: usize = 64;

/// At the end of the shutdown grace every connection still open is shut down, which wakes its
/// thread at once; [`Shared::wait_for_sessions`] gives those threads this much longer to finish.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// Everything the client threads share.
#[derive(Debug)]
pub struct Shared {
    /// The hub and the connections, behind one lock.
    state: Mutex<State>,
    /// Notified when the last open connection ends (the shutdown waits for that).
    ended: Condvar,
    /// `--max-clients` and `--outbox-bytes`.
    limits: Limits,
    /// SIGINT/SIGTERM. Its descriptor also wakes every thread waiting for a full socket.
    shutdown: Shutdown,
    /// When a stopping server shuts down whatever is still open: [`SHUTDOWN_GRACE`] after the
    /// first thread that saw the signal.
    stop_deadline: OnceLock<Instant>,
}

/// The part of [`Shared`] behind the lock.
#[derive(Debug, Default)]
struct State {
    /// Rooms and nicks.
    hub: Hub,
    /// The connection of every client the hub knows, to queue its lines in.
    members: IdMap<Arc<Conn>>,
    /// Every connection admitted and not yet ended, by admission number, members or not (a
    /// pool's queue holds connections not welcomed yet): what a shutdown must tell, and close.
    open: HashMap<u64, Arc<Conn>>,
    /// The admission number of the next connection.
    admitted: u64,
}

/// A connection that was admitted (it counts towards `--max-clients`) and waits to be served.
#[derive(Debug)]
pub struct Connection {
    /// What all sessions share.
    shared: Arc<Shared>,
    /// The client's socket and queue, as every thread sees them.
    conn: Arc<Conn>,
    /// Its key in [`State::open`].
    ticket: u64,
}

impl Shared {
    /// Shared state for a server with these limits, stopping on `shutdown`.
    pub fn new(limits: Limits, shutdown: &Shutdown) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            limits,
            shutdown: shutdown.clone(),
            stop_deadline: OnceLock::new(),
        })
    }

    /// Takes a new connection, or refuses it with `! server full` when `--max-clients`
    /// connections are already open. Only the accepting thread calls this (so the count cannot
    /// grow between the check and the insert).
    pub fn admit(self: &Arc<Self>, stream: TcpStream) -> Option<Connection> {
        if self.lock().open.len() >= self.limits.max_clients {
            log::debug!("refusing a connection: {} open", self.limits.max_clients);
            chat_net::refuse(stream);
            return None;
        }
        let conn = Arc::new(Conn::new(stream, self.limits.outbox_bytes));
        let mut state = self.lock();
        let ticket = state.admitted;
        state.admitted += 1;
        state.open.insert(ticket, Arc::clone(&conn));
        Some(Connection {
            shared: Arc::clone(self),
            conn,
            ticket,
        })
    }

    /// Blocks until every admitted connection has ended, or until shortly after the shutdown
    /// grace (by then all of them were shut down). The stages call it once their accept loop
    /// has ended, so that the process does not exit while threads are still saying goodbye
    /// (their sockets would be closed with unread input: resets).
    pub fn wait_for_sessions(&self) {
        let state = self.wait_until_all_ended(self.stop_deadline() + LAST_WORDS);
        if !state.open.is_empty() {
            log::warn!("{} connections still open at exit", state.open.len());
        }
    }

    /// Waits until no connection is open any more, or `until` has come; returns the lock.
    fn wait_until_all_ended(&self, until: Instant) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        while !state.open.is_empty() {
            let Some(left) = remaining(until) else { break };
            state = match self.ended.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state
    }

    /// True once SIGINT or SIGTERM arrived.
    fn stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// When the stopping server closes what is left (fixed by the first caller).
    fn stop_deadline(&self) -> Instant {
        *self
            .stop_deadline
            .get_or_init(|| Instant::now() + SHUTDOWN_GRACE)
    }

    /// The lock, even if a thread panicked while holding it (the hub is still consistent:
    /// every hub method finishes its bookkeeping before it could panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes out the queues of the connections the hub just queued lines for, with the lock
    /// released: this thread waits while a recipient's socket is full (see [`Conn::flush`]).
    // ANCHOR: deliver
    fn deliver(&self, recipients: Vec<Arc<Conn>>) {
        for conn in recipients {
            conn.flush(Some(&self.shutdown));
        }
    }
    // ANCHOR_END: deliver

    /// The server stops (run by [`stop_on`]'s thread): every open connection gets the notice
    /// after what it is owed, then the end of the stream, or is cut if its socket cannot take
    /// that at once; whatever is still open when [`SHUTDOWN_GRACE`] has passed is shut down,
    /// which wakes its thread.
    // ANCHOR: stop
    fn stop(&self) {
        let deadline = self.stop_deadline();
        let open: Vec<Arc<Conn>> = {
            let mut state = self.lock();
            // The hub forgets everybody. Its actions are the notice and a close for each
            // member; connections not welcomed yet (in a pool's queue) are owed the same, so
            // the notice goes to every open connection instead.
            state.hub.shutdown(&mut Vec::new());
            let open: Vec<Arc<Conn>> = state.open.values().cloned().collect();
            for conn in &open {
                conn.queue_goodbye(Some(chat_core::SHUTDOWN_LINE), deadline);
            }
            open
        };
        for conn in &open {
            conn.flush(None); // never waits: a socket that cannot take it all now is cut
        }
        drop(open);
        // Sessions end as their clients say goodbye; what is left at the deadline is cut.
        let late: Vec<Arc<Conn>> = self
            .wait_until_all_ended(deadline)
            .open
            .values()
            .cloned()
            .collect();
        if !late.is_empty() {
            log::debug!("shutdown grace over: closing {} connections", late.len());
        }
        for conn in late {
            conn.cut_off();
        }
    }
    // ANCHOR_END: stop
}

/// Spawns the thread that waits for SIGINT/SIGTERM: it wakes the thread blocked in `accept` on
/// `listener` (shutting a listening socket down makes `accept` fail at once), then stops the
/// server (see the module docs, *Closing*).
pub fn stop_on(shared: &Arc<Shared>, listener: &TcpListener) -> io::Result<()> {
    let (shared, listener) = (Arc::clone(shared), listener.try_clone()?);
    std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            shared.shutdown.wait();
            log::info!("shutting down");
            let _ = SockRef::from(&listener).shutdown(Direction::Read);
            shared.stop();
        })?;
    Ok(())
}

impl Connection {
    /// Serves this client until it leaves, fails, is cut as a slow consumer, or the server
    /// stops; then closes it (lingering if it was told to go). Never panics on anything the
    /// client sends.
    // ANCHOR: serve
    pub fn serve(&self) {
        let mut buf = [0u8; READ_BUF];
        let Some(id) = self.join() else {
            return self.close(&mut buf); // the server is stopping: told so, then closed
        };
        let mut framer = Framer::new();
        while !self.conn.is_done() {
            // Block until this client sends something. This is the line the whole book is
            // about: while this thread waits here, it can do nothing else.
            let n = match (&self.conn.stream).read(&mut buf) {
                Ok(0) => break, // the client ended its stream, or another thread shut us down
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    log::debug!("client {id}: {err}");
                    break;
                }
            };
            if self.shared.stopping() {
                break; // what arrives after the signal is not handled
            }
            // Lock the hub only to decide who gets what, and queue it; write after unlocking.
            // Until every line is written this thread reads nothing more: its input waits.
            let mut input = &buf[..n];
            while !input.is_empty() && !self.conn.is_done() {
                let recipients = {
                    let mut state = self.shared.lock();
                    let actions = self.handle(&mut state, id, &mut framer, &mut input);
                    state.queue(actions)
                };
                self.shared.deliver(recipients);
            }
        }
        self.leave(id);
        self.close(&mut buf);
    }
    // ANCHOR_END: serve

    /// Lets the hub handle the lines at the start of `input`, while what they send adds up to
    /// less than one outbox (`--outbox-bytes`); consumes them from `input`. The rest waits for
    /// the next turn, after these are written: one read of pipelined `/rooms` would otherwise
    /// turn 4 KiB into megabytes of replies at once.
    fn handle(
        &self,
        state: &mut State,
        id: ClientId,
        framer: &mut Framer,
        input: &mut &[u8],
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut bytes = 0;
        while bytes < self.shared.limits.outbox_bytes {
            let before = actions.len();
            let handled = framer.next(input, |frame| {
                state.hub.handle(id, frame, &mut actions);
                true
            });
            if handled.is_none() {
                break; // no complete line left (the framer keeps an unfinished one)
            }
            bytes += actions[before..]
                .iter()
                .map(|action| match action {
                    Action::Send(_, line) => line.len(),
                    Action::Close(_) | Action::Release(_) => 0,
                })
                .sum::<usize>();
        }
        actions
    }

    /// Tells the client the server is full and closes it (e.g. no thread could be started).
    pub fn refuse(&self) {
        self.conn
            .queue_goodbye(Some(chat_core::SERVER_FULL_LINE), Instant::now());
        self.conn.flush(None);
        let _ = self.conn.stream.shutdown(Direction::Both);
    }

    /// Registers the client with the hub: its welcome and the lobby's `joined` notices are
    /// queued, then written. When the server is stopping there is no new client: the
    /// connection is told so instead.
    fn join(&self) -> Option<ClientId> {
        let (id, recipients) = {
            let mut state = self.shared.lock();
            if self.shared.stopping() {
                let deadline = self.shared.stop_deadline();
                self.conn
                    .queue_goodbye(Some(chat_core::SHUTDOWN_LINE), deadline);
                return None;
            }
            let mut actions = Vec::new();
            let id = state.hub.connect(&mut actions);
            state.members.insert(id, Arc::clone(&self.conn));
            log::debug!("client {id} joined ({} connected)", state.hub.len());
            (id, state.queue(actions))
        };
        self.shared.deliver(recipients);
        Some(id)
    }

    /// The session is over: the room hears that the client left (and why, if it was too
    /// slow). When the server is stopping nobody is told that others left, and this client
    /// gets the shutdown notice (if the shutdown's thread has not queued it yet).
    fn leave(&self, id: ClientId) {
        let reason = self.conn.is_cut().then_some(chat_core::SLOW_CONSUMER);
        let recipients = {
            let mut state = self.shared.lock();
            state.members.remove(&id);
            if self.shared.stopping() {
                let deadline = self.shared.stop_deadline();
                self.conn
                    .queue_goodbye(Some(chat_core::SHUTDOWN_LINE), deadline);
                Vec::new() // written by `close`
            } else {
                let mut actions = Vec::new();
                state.hub.disconnect(id, reason, &mut actions); // nothing if it quit already
                state.queue(actions)
            }
        };
        self.shared.deliver(recipients);
        log::debug!("client {id} left");
    }

    /// Ends the connection: at once for a slow consumer, or a client that ended its stream
    /// (everything it was owed is written); after lingering for a client told to go.
    // ANCHOR: close
    fn close(&self, buf: &mut [u8]) {
        if self.shared.stopping() {
            self.conn.flush(None); // the shutdown notice, now or never
        }
        if !self.conn.is_cut() {
            if let Some(&deadline) = self.conn.closing.get() {
                self.conn.linger(deadline, buf);
            }
        }
        // Whoever still holds the connection (a sender about to write to it) finds it closed.
        let _ = self.conn.stream.shutdown(Direction::Both);
    }
    // ANCHOR_END: close
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.open.remove(&self.ticket);
        if state.open.is_empty() {
            self.shared.ended.notify_all();
        }
    }
}

impl State {
    /// Queues the hub's actions in their recipients' queues, in the hub's order, while the
    /// lock is held; returns the connections to write out (each once).
    ///
    /// A nick the hub held (`Action::Release`) is freed here, under the same lock: the lines
    /// saying that its holder left are queued, and whatever is decided later — a newcomer
    /// announced under that nick — is queued behind them in every queue.
    // ANCHOR: queue
    fn queue(&mut self, actions: Vec<Action>) -> Vec<Arc<Conn>> {
        let mut recipients = Vec::new();
        let mut seen = IdSet::default();
        for action in actions {
            let (to, line) = match action {
                Action::Send(to, line) => (to, Some(line)),
                Action::Close(to) => (to, None),
                Action::Release(nick) => {
                    self.hub.release(&nick);
                    continue;
                }
            };
            let Some(conn) = self.members.get(&to) else {
                continue;
            };
            match line {
                Some(line) => conn.queue(line),
                // `/quit`: after its `* bye`, end the stream, within CLOSE_GRACE from now.
                None => conn.queue_goodbye(None, Instant::now() + CLOSE_GRACE),
            }
            if seen.insert(to) {
                recipients.push(Arc::clone(conn));
            }
        }
        recipients
    }
    // ANCHOR_END: queue
}

/// A client's socket, and the lines queued for it, as every thread sees them.
#[derive(Debug)]
struct Conn {
    /// The socket. One descriptor, shared by the thread that reads it and every thread that
    /// writes to it (not a `dup`: a second descriptor per client would halve how many clients
    /// fit under `ulimit -n`).
    stream: TcpStream,
    /// Lines decided for this client and not yet written, in the hub's order. Filled under the
    /// hub lock; locked only for a moment, never while writing or waiting.
    queue: Mutex<Queue>,
    /// Held by the one thread writing the queue out, waiting for room included: lines never
    /// interleave, and threads that want to write behind a waiting one wait too.
    turn: Mutex<()>,
    /// Shut down without a goodbye: a slow consumer, or full when the server stopped.
    cut: AtomicBool,
    /// Set once the server decided to close it (`* bye`, `* server shutting down`): when the
    /// connection is closed, whether the client ended its side of the stream or not.
    closing: OnceLock<Instant>,
}

/// What is owed to one client.
#[derive(Debug, Default)]
struct Queue {
    /// Lines to write, oldest first.
    lines: VecDeque<Bytes>,
    /// How much of the first line is written already (a `send` may take part of a line).
    written: usize,
    /// Where the stream is.
    end: End,
}

/// Whether a connection's stream is still open for lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Lines are queued and written.
    #[default]
    Open,
    /// A goodbye is queued: once the lines before it are written, end the stream. Nothing is
    /// queued after it.
    Goodbye,
    /// Ended (or cut, or failed): nothing more is written.
    Ended,
}

impl Conn {
    /// Wraps an accepted socket, sizing its send buffer (its outbox) from `outbox_bytes`.
    fn new(stream: TcpStream, outbox_bytes: usize) -> Self {
        let socket = SockRef::from(&stream);
        let _ = socket.set_send_buffer_size(outbox_bytes.saturating_mul(SNDBUF_PER_OUTBOX_BYTE));
        let _ = socket.set_nodelay(true);
        Self {
            stream,
            queue: Mutex::new(Queue::default()),
            turn: Mutex::new(()),
            cut: AtomicBool::new(false),
            closing: OnceLock::new(),
        }
    }

    /// True once cut off.
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// True once cut off or told to go: its thread stops handling what it sends.
    fn is_done(&self) -> bool {
        self.is_cut() || self.closing.get().is_some()
    }

    /// The queue's lock (see the field's docs).
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a line at the end of the queue (nothing once a goodbye is queued).
    fn queue(&self, line: Bytes) {
        let mut queue = self.lock_queue();
        if queue.end == End::Open {
            queue.lines.push_back(line);
        }
    }

    /// Queues the last line (if any) and the end of the stream after it, to be closed by
    /// `deadline`. Nothing if a goodbye is queued already.
    fn queue_goodbye(&self, last: Option<&'static [u8]>, deadline: Instant) {
        let mut queue = self.lock_queue();
        if queue.end != End::Open {
            return;
        }
        queue.lines.extend(last.map(Bytes::from_static));
        queue.end = End::Goodbye;
        let _ = self.closing.set(deadline);
    }

    /// Writes the queue out, one line per `send`, and ends the stream after it if a goodbye is
    /// queued. When the socket is full, waits for it to become writable (if `stop` is given:
    /// at most [`SLOW_GRACE`] from the moment it fell behind, and not once the server stops);
    /// a socket that stays full is cut. Without `stop`, never waits: full means cut.
    // ANCHOR: flush
    fn flush(&self, stop: Option<&Shutdown>) {
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        let mut behind_since = None;
        while let Some(rest) = self.next_bytes() {
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            match SockRef::from(&self.stream).send_with_flags(&rest, flags) {
                Ok(0) => return self.end(), // cannot happen for a line that is not empty
                Ok(n) => {
                    self.written(n);
                    behind_since = None; // it took bytes: not full
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let Some(stop) = stop else {
                        return self.cut_off();
                    };
                    let since = *behind_since.get_or_insert_with(Instant::now);
                    match wait_writable(&self.stream, since + SLOW_GRACE, stop) {
                        Wake::Writable => {}
                        Wake::Late => {
                            log::debug!("slow consumer: send buffer full for {SLOW_GRACE:?}");
                            return self.cut_off();
                        }
                        Wake::Stopping => return, // the shutdown writes the rest, or cuts
                    }
                }
                Err(_) => return self.end(), // gone: its own thread notices and cleans up
            }
        }
    }
    // ANCHOR_END: flush

    /// What to write next: the unwritten part of the first line. `None` when the queue is
    /// empty, after ending the stream if a goodbye was queued (the caller holds the turn).
    fn next_bytes(&self) -> Option<Bytes> {
        let mut queue = self.lock_queue();
        if let Some(line) = queue.lines.front() {
            return Some(line.slice(queue.written..));
        }
        if queue.end == End::Goodbye {
            queue.end = End::Ended;
            drop(queue);
            let _ = self.stream.shutdown(Direction::Write); // a FIN after the last line
        }
        None
    }

    /// `n` more bytes of the first line were written.
    fn written(&self, n: usize) {
        let mut queue = self.lock_queue();
        queue.written += n;
        if queue
            .lines
            .front()
            .is_some_and(|line| queue.written >= line.len())
        {
            queue.lines.pop_front();
            queue.written = 0;
            if queue.lines.is_empty() && queue.lines.capacity() > IDLE_QUEUE {
                queue.lines = VecDeque::new(); // an idle client keeps no big queue
            }
        }
    }

    /// Nothing more is written: what is queued is dropped.
    fn end(&self) {
        let mut queue = self.lock_queue();
        queue.lines = VecDeque::new();
        queue.end = End::Ended;
    }

    /// Shuts the socket down both ways, without a goodbye, and drops what it was owed. Its
    /// own thread, blocked in `read`, wakes up with an end of stream.
    fn cut_off(&self) {
        self.end();
        if !self.cut.swap(true, Ordering::SeqCst) {
            let _ = self.stream.shutdown(Direction::Both);
        }
    }

    /// Reads and ignores what the client still sends, until it ends its stream or `deadline`.
    /// Closing with unread input would reset the connection and destroy what it was owed.
    // ANCHOR: linger
    fn linger(&self, deadline: Instant, buf: &mut [u8]) {
        while let Some(left) = remaining(deadline) {
            if self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match (&self.stream).read(buf) {
                Ok(0) => return, // it ended its stream too: a clean close
                Ok(_) => {}      // read and ignored
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // time is up, or the connection failed
            }
        }
    }
    // ANCHOR_END: linger
}
