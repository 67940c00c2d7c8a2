//! The whole server minus the sockets and the clock.
//!
//! Every stage that is not blocking (`select`, `epoll`, `mio`, our futures, tokio, async-std,
//! smol, io_uring) owns one [`Server`] and only moves bytes:
//!
//! 1. a new connection: [`Server::connect`] (or refuse it with [`crate::SERVER_FULL_LINE`]);
//! 2. read from a client only while [`Server::reading`] says so, and hand what was read to
//!    [`Server::receive`]; the end of its stream to [`Server::eof`]; a failed connection to
//!    [`Server::closed`];
//! 3. then [`Server::poll_event`] until it returns `None`, carrying out each [`Event`]: write a
//!    client's queue with [`Server::flush`], read a client again, end a connection;
//! 4. sleep until readiness or [`Server::poll_timeout`], whichever comes first, and then call
//!    [`Server::handle_timeout`].
//!
//! Time is an input, as in `quinn-proto`: every call that can start a timer takes `now`, and
//! the server never reads a clock. The rules it applies are [`crate::flow`]'s (who waits, who
//! is cut as a slow consumer) and the closing rules of the specification: a client being
//! closed gets everything it is owed, then the end of the stream, within [`CLOSE_GRACE`]
//! (or [`SHUTDOWN_GRACE`], when the server stops).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Instant;

use crate::flow;
use crate::framing::{Frame, Framer};
use crate::hub::{Action, ClientId, Hub, IdMap};
use crate::outbox::Outbox;
use crate::{CLOSE_GRACE, SHUTDOWN_GRACE, SLOW_GRACE};

pub use types::{Event, Flushed, Limits, ServerFull};

mod cluster;
#[cfg(test)]
mod memory;
mod types;

/// At most this many queued lines are handed to one `writev` (Linux accepts up to 1024; 64
/// lines already turn 64 system calls into one).
pub const WRITE_SLICES: usize = 64;

/// Where a connection is in its life. One byte: when a closing connection is closed regardless
/// is kept once, in its entry of `Server::close_timers` (a connection starts closing once, so
/// it has exactly one), not in every connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and writing.
    Open,
    /// The server is done with it: write what is owed; what it sends is read and ignored.
    Closing {
        /// It has already ended its stream: no need to wait for that after the last write.
        eof: bool,
    },
    /// All written and the sending side ended: read (and ignore) until its end of stream.
    HungUp,
}

/// Per-connection state beside the hub's, and no allocation while the client is idle (the
/// framer holds no partial line, the outbox no queue, nothing waits). Every field is in
/// every connection's state, ten thousand times over, so what is rarely needed takes little
/// room until it is; `server/memory.rs` asserts the size (see the book's "Where the bytes
/// go").
#[derive(Debug)]
struct Conn {
    /// Turns this client's bytes into lines.
    framer: Framer,
    /// What this client is owed.
    outbox: Outbox,
    /// Where it is in its life.
    phase: Phase,
    /// Bytes read from it and not handled yet because a line did not fit: its input waits
    /// (rule 2 of [`crate::flow`]). At most one read's worth; empty (and unallocated)
    /// otherwise. A boxed slice, not a `Vec`: it is never grown in place, so a capacity word
    /// would be 8 bytes per connection for nothing.
    pending: Box<[u8]>,
    /// It ended its stream while its input was waiting: close once `pending` is handled.
    eof: bool,
    /// Since when it is behind (owed too much to take a waiting line, or past its bound).
    behind_since: Option<Instant>,
    /// In a cluster: its input waits for the broker's answer to a claim (its `guestN` on
    /// arrival, or a `/nick`).
    claiming: bool,
    /// In a cluster: where lines of its outbox wait for the broker (see `server/cluster.rs`).
    fences: VecDeque<cluster::Fence>,
}

impl Conn {
    fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }
}

/// The hub plus a framer, an outbox and the flow-control and closing state per connection.
#[derive(Debug)]
pub struct Server {
    /// Rooms and nicks.
    hub: Hub,
    /// Every open connection, including ones being closed.
    conns: IdMap<Conn>,
    /// Flags of this server.
    limits: Limits,
    /// Actions from the hub not yet routed into outboxes.
    actions: VecDeque<Action>,
    /// Scratch space the hub writes actions into (kept to avoid an allocation per line).
    scratch: Vec<Action>,
    /// Work for the stage.
    events: VecDeque<Event>,
    /// Clients whose input waits for room, in the order they began to wait.
    waiting: VecDeque<ClientId>,
    /// Clients that are behind (a superset: entries are checked when used).
    behind: Vec<ClientId>,
    /// Set when a client caught up or went away: the waiting clients may go on.
    unblocked: bool,
    /// Closing clients whose outbox was written out: to be hung up by `poll_event`.
    drained: Vec<ClientId>,
    /// When each client that fell behind is judged, oldest first.
    slow_timers: VecDeque<(Instant, ClientId)>,
    /// When each closing client is closed regardless, oldest first.
    close_timers: VecDeque<(Instant, ClientId)>,
    /// The latest instant a call gave us: what waiting clients that go on in `poll_event`
    /// start their timers from.
    now: Option<Instant>,
    /// [`Server::shutdown`] was called.
    stopping: bool,
    /// In a cluster: a message from the broker did not fit, and the broker's input waits.
    broker_waits: bool,
    /// In a cluster: when this node says next that it is alive.
    next_alive: Option<Instant>,
}

impl Server {
    /// An empty server with these limits (`outbox_bytes` is raised to
    /// [`flow::MIN_OUTBOX_BYTES`] if smaller).
    pub fn new(limits: Limits) -> Self {
        Self {
            hub: Hub::new(),
            conns: IdMap::default(),
            limits: Limits {
                outbox_bytes: limits.outbox_bytes.max(flow::MIN_OUTBOX_BYTES),
                ..limits
            },
            actions: VecDeque::new(),
            scratch: Vec::new(),
            events: VecDeque::new(),
            waiting: VecDeque::new(),
            behind: Vec::new(),
            unblocked: false,
            drained: Vec::new(),
            slow_timers: VecDeque::new(),
            close_timers: VecDeque::new(),
            now: None,
            stopping: false,
            broker_waits: false,
            next_alive: None,
        }
    }

    /// The hub, for read-only questions (nicks, rooms, how many clients).
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Open connections, including ones being closed.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// True once [`Server::shutdown`] was called and every connection is gone: the stage may
    /// return.
    pub fn is_stopped(&self) -> bool {
        self.stopping && self.conns.is_empty()
    }

    /// What `id` is owed, to write from (see also [`Server::flush`] and [`Server::consumed`]).
    pub fn outbox(&self, id: ClientId) -> Option<&Outbox> {
        self.conns.get(&id).map(|c| &c.outbox)
    }

    /// Whether to read from `id` now. False while its input waits for room (until
    /// [`Event::Resume`]; it starts waiting only inside a call with that client's own input,
    /// [`Server::receive`] or, on arrival in a cluster, [`Server::connect`] — never because of
    /// another client, so a stage with one read in flight per client may rely on it), once it
    /// ended its stream (nothing more can come, and level-triggered
    /// readiness would report that end on every call), and once it is gone. A closing client is
    /// still read, and what it sends ignored: closing a socket with unread input makes the
    /// kernel send a reset, which destroys what the client was still owed.
    pub fn reading(&self, id: ClientId) -> bool {
        self.conns.get(&id).is_some_and(|c| match c.phase {
            Phase::Open => c.pending.is_empty() && !c.claiming && !c.eof,
            Phase::Closing { eof } => !eof,
            Phase::HungUp => true,
        })
    }

    /// True if `id`'s state owns a buffer: a partial line, a queue of lines, waiting input or
    /// lines held for the broker. An idle client owns none (for the memory tests and the
    /// book's "Where the bytes go"); false for an unknown `id`.
    pub fn holds_buffers(&self, id: ClientId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            c.framer.holds_memory()
                || c.outbox.holds_memory()
                || !c.pending.is_empty()
                || c.fences.capacity() > 0
        })
    }

    /// True when `id` is owed bytes its socket has not taken: watch it for writability.
    pub fn owed(&self, id: ClientId) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|c| cluster::writable(c) > 0)
    }

    /// A new connection: welcomes it, or refuses it when `--max-clients` are connected or the
    /// server is stopping (then send [`crate::SERVER_FULL_LINE`] and close; nothing was kept).
    pub fn connect(&mut self, now: Instant) -> Result<ClientId, ServerFull> {
        if self.stopping || self.conns.len() >= self.limits.max_clients {
            return Err(ServerFull);
        }
        self.now = Some(now);
        // In a cluster the nick comes from the broker: the client is welcomed (and read
        // from) once `claimed` says which `guestN` it got.
        let clustered = self.hub.cluster().is_some();
        let id = if clustered {
            self.hub.arrive()
        } else {
            self.hub.connect(&mut self.scratch)
        };
        self.conns.insert(
            id,
            Conn {
                framer: Framer::new(),
                outbox: Outbox::new(),
                phase: Phase::Open,
                pending: Box::default(),
                eof: false,
                behind_since: None,
                claiming: clustered,
                fences: VecDeque::new(),
            },
        );
        self.route(now);
        Ok(id)
    }

    /// Bytes read from a client. Lines are handled while they fit (see [`crate::flow`]); when
    /// one does not, the rest waits here and [`Server::reading`] turns false. Bytes from a
    /// closing client are ignored.
    // ANCHOR: receive
    pub fn receive(&mut self, id: ClientId, bytes: &[u8], now: Instant) {
        self.now = Some(now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.is_open() {
            return; // after `/quit`, at shutdown: read, so the close is clean, and ignored
        }
        if !conn.pending.is_empty() {
            // The stage should not have read (see `reading`); keep the order anyway.
            debug_assert!(false, "receive while the input of {id} waits");
            conn.pending = [&conn.pending[..], bytes].concat().into();
            return;
        }
        self.feed(id, bytes, now);
    }
    // ANCHOR_END: receive

    /// The client ended its stream (a read returned 0). Everything it sent before is handled,
    /// everything it is owed is written, then it is closed (a half-close is a normal goodbye).
    pub fn eof(&mut self, id: ClientId, now: Instant) {
        self.now = Some(now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.phase {
            Phase::Open if !conn.pending.is_empty() => conn.eof = true,
            Phase::Open => self.end_input(id, now),
            Phase::Closing { .. } => conn.phase = Phase::Closing { eof: true },
            Phase::HungUp => self.forget(id),
        }
    }

    /// The connection is gone (an error, a reset) or the stage closed it on its own: its room
    /// hears that it left. Safe to call more than once, and for ids already forgotten.
    pub fn closed(&mut self, id: ClientId, now: Instant) {
        self.now = Some(now);
        if let Some(conn) = self.conns.remove(&id) {
            if conn.is_open() {
                self.hub.disconnect(id, None, &mut self.scratch);
                self.unblocked = true; // whoever waited for it goes on
                self.route(now);
            }
        }
    }

    /// The server is stopping: nobody new is accepted, every client gets
    /// `* server shutting down` after what it is owed, and everything is closed within
    /// [`SHUTDOWN_GRACE`].
    pub fn shutdown(&mut self, now: Instant) {
        self.now = Some(now);
        self.stopping = true;
        self.waiting.clear();
        for (&id, conn) in self.conns.iter_mut() {
            if !conn.pending.is_empty() && conn.is_open() && !conn.eof {
                self.events.push_back(Event::Resume(id)); // read again, and ignore what comes
            }
            conn.pending = Box::default();
            conn.behind_since = None;
        }
        self.hub.shutdown(&mut self.scratch);
        self.route(now);
    }

    /// Writes what `id` is owed through `write` — one `writev` of up to [`WRITE_SLICES`] lines
    /// per call — until nothing is owed or `write` reports `WouldBlock`. The one write path of
    /// the stages that write from a queue. An `Err` means the connection failed: close its
    /// socket and call [`Server::closed`].
    // ANCHOR: flush
    pub fn flush(
        &mut self,
        id: ClientId,
        now: Instant,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<Flushed> {
        loop {
            let Some(conn) = self.conns.get(&id) else {
                return Ok(Flushed::All); // already gone
            };
            // In a cluster, what waits for the broker is not written yet (`server/cluster.rs`).
            let writable = cluster::writable(conn);
            if writable == 0 {
                return Ok(Flushed::All);
            }
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let mut filled = conn.outbox.io_slices(&mut slices);
            if writable < conn.outbox.len() as u64 {
                filled = cluster::within(&slices, filled, writable);
            }
            match write(&slices[..filled]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.consumed(id, n, now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Partly),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    }
    // ANCHOR_END: flush

    /// The socket of `id` took `n` more bytes of its outbox (for stages that write on their
    /// own, like io_uring's, whose writes complete later; [`Server::flush`] calls this).
    pub fn consumed(&mut self, id: ClientId, n: usize, now: Instant) {
        self.now = Some(now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let was_empty = conn.outbox.is_empty();
        conn.outbox.consume(n);
        if !was_empty && conn.outbox.is_empty() && matches!(conn.phase, Phase::Closing { .. }) {
            self.drained.push(id);
        }
        if conn.behind_since.is_some()
            && flow::caught_up(conn.outbox.cost(), self.limits.outbox_bytes)
        {
            conn.behind_since = None;
            self.unblocked = true;
        }
    }

    /// The next thing the stage must do, if any. When nothing is queued, this is also where
    /// clients whose input waited go on (someone they waited for caught up) and where closing
    /// clients whose last lines are written are hung up: call it after writing.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events.is_empty() {
            self.progress();
        }
        self.events.pop_front()
    }

    /// The earliest instant at which [`Server::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let slow = self.slow_timers.front().map(|&(at, _)| at);
        let close = self.close_timers.front().map(|&(at, _)| at);
        slow.into_iter()
            .chain(close)
            .chain(self.cluster_deadline())
            .min()
    }

    /// Time has come to `now`: clients behind for [`SLOW_GRACE`] are cut as slow consumers,
    /// closing clients past their grace are closed.
    // ANCHOR: handle_timeout
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        while let Some(&(at, id)) = self.slow_timers.front() {
            if at > now {
                break;
            }
            self.slow_timers.pop_front();
            let bound = self.limits.outbox_bytes;
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            match conn.behind_since {
                Some(since) if since + SLOW_GRACE <= now => {
                    if flow::caught_up(conn.outbox.cost(), bound) {
                        conn.behind_since = None; // written since, and not told yet
                        self.unblocked = true;
                    } else {
                        self.cut(id);
                    }
                }
                _ => {} // caught up meanwhile, or behind again since: a later timer judges
            }
        }
        while let Some(&(at, id)) = self.close_timers.front() {
            if at > now {
                break;
            }
            self.close_timers.pop_front();
            // This was its one close timer (`begin_close`): its deadline has come.
            let expired = self.conns.get(&id).is_some_and(|c| !c.is_open());
            if expired {
                self.forget(id);
            }
        }
        self.cluster_timers(now);
        self.route(now);
    }
    // ANCHOR_END: handle_timeout

    /// Handles the frames of `input` from `id` while they fit; keeps the rest in its
    /// `pending` and puts it in line to wait. Returns true when all of `input` was handled.
    fn feed(&mut self, id: ClientId, input: &[u8], now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return true;
        };
        // The framer leaves its connection while it works, so that handling a line may look
        // at every other connection (their room, for flow control).
        let mut framer = std::mem::take(&mut conn.framer);
        let mut rest = input;
        let mut all = true;
        while let Some(taken) = framer.next(&mut rest, |frame| self.handle(id, &frame, now)) {
            if !taken {
                all = false;
                break;
            }
            if !self.conns.get(&id).is_some_and(Conn::is_open) {
                break; // `/quit`: what follows it is ignored
            }
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return true;
        };
        conn.framer = framer;
        if !all && conn.is_open() {
            conn.pending = rest.into();
            self.waiting.push_back(id);
        }
        all
    }

    /// One frame from `id`: handled if every client it can reach has room, refused (false)
    /// otherwise, marking those without room as behind.
    // ANCHOR: handle
    fn handle(&mut self, id: ClientId, frame: &Frame<'_>, now: Instant) -> bool {
        if !self.broker_has_room() {
            return false; // in a cluster, the broker is one more recipient (server/cluster.rs)
        }
        let bound = self.limits.outbox_bytes;
        let mut fits = true;
        let (conns, behind, slow_timers) =
            (&mut self.conns, &mut self.behind, &mut self.slow_timers);
        self.hub.reach(id, frame, |to, need| {
            let Some(conn) = conns.get_mut(&to) else {
                return;
            };
            if !conn.is_open() {
                return; // closing: it gets nothing more anyway
            }
            if conn.behind_since.is_none() && flow::fits(conn.outbox.cost(), need, bound) {
                return;
            }
            fits = false;
            if conn.behind_since.is_none() {
                conn.behind_since = Some(now);
                behind.push(to);
                slow_timers.push_back((now + SLOW_GRACE, to));
            }
        });
        if !fits {
            return false;
        }
        if self.hub.try_handle(id, *frame, &mut self.scratch) == crate::hub::Handled::Claim {
            // A cluster's `/nick`: the broker must answer first (see `claimed`).
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.claiming = true;
            }
            self.route(now);
            return false;
        }
        self.route(now);
        true
    }
    // ANCHOR_END: handle

    /// The client will send nothing more: its room hears that it left, and it is closed once
    /// what it is owed is written.
    fn end_input(&mut self, id: ClientId, now: Instant) {
        self.hub.disconnect(id, None, &mut self.scratch);
        self.route(now);
        self.begin_close(id, now + CLOSE_GRACE, true);
    }

    /// Starts closing `id`: from now on it is written to, then hung up, within `deadline`.
    fn begin_close(&mut self, id: ClientId, deadline: Instant, eof: bool) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        let was_waiting = !conn.pending.is_empty() || conn.claiming;
        conn.phase = Phase::Closing { eof };
        conn.pending = Box::default();
        conn.claiming = false;
        if was_waiting && !eof && !conn.eof {
            // It was not read while its input waited: read it again now (and ignore it), or
            // an edge-triggered stage would never see its end of stream.
            self.events.push_back(Event::Resume(id));
        }
        if conn.behind_since.take().is_some() {
            self.unblocked = true;
        }
        cluster::hold(&mut self.hub, conn, id); // its end waits for its departure, too
        if conn.outbox.is_empty() {
            self.drained.push(id);
        }
        self.close_timers.push_back((deadline, id));
    }

    /// Cuts a slow consumer: what it was owed is dropped, its room hears why, its socket is
    /// closed at once.
    fn cut(&mut self, id: ClientId) {
        if self.conns.remove(&id).is_none() {
            return;
        }
        self.hub
            .disconnect(id, Some(crate::SLOW_CONSUMER), &mut self.scratch);
        self.actions.extend(self.scratch.drain(..));
        self.events.push_back(Event::Close(id));
        self.unblocked = true;
    }

    /// Forgets a connection that is over (its grace ran out, or it ended its stream after we
    /// hung up) and tells the stage to close it.
    fn forget(&mut self, id: ClientId) {
        if let Some(conn) = self.conns.remove(&id) {
            if conn.is_open() {
                self.hub.disconnect(id, None, &mut self.scratch);
                self.actions.extend(self.scratch.drain(..));
                self.unblocked = true;
            }
            self.events.push_back(Event::Close(id));
        }
    }

    /// What `poll_event` does when no event is queued: waiting clients go on if someone
    /// caught up, and closing clients whose outbox is written are hung up.
    fn progress(&mut self) {
        let bound = self.limits.outbox_bytes;
        let conns = &mut self.conns;
        let unblocked = &mut self.unblocked;
        self.behind.retain(|id| match conns.get_mut(id) {
            Some(conn) if conn.behind_since.is_some() => {
                if flow::caught_up(conn.outbox.cost(), bound) {
                    conn.behind_since = None;
                    *unblocked = true;
                    false
                } else {
                    true
                }
            }
            _ => false,
        });
        if std::mem::take(&mut self.unblocked) {
            self.resume_waiting();
            if std::mem::take(&mut self.broker_waits) {
                self.hub.resume_broker();
            }
        }
        for id in std::mem::take(&mut self.drained) {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            match conn.phase {
                Phase::Closing { eof } if conn.outbox.is_empty() && conn.fences.is_empty() => {
                    if eof {
                        self.conns.remove(&id);
                        self.events.push_back(Event::Close(id));
                    } else {
                        conn.phase = Phase::HungUp;
                        self.events.push_back(Event::Hangup(id));
                    }
                }
                _ => {}
            }
        }
    }

    /// Gives every waiting client, in the order they began to wait, another try at its
    /// waiting input. Those that get through it are told to read again.
    fn resume_waiting(&mut self) {
        let Some(now) = self.now else {
            return;
        };
        for _ in 0..self.waiting.len() {
            let Some(id) = self.waiting.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if !conn.is_open() || conn.pending.is_empty() {
                continue;
            }
            if conn.claiming {
                self.waiting.push_back(id); // its turn comes with the broker's answer
                continue;
            }
            let input = std::mem::take(&mut conn.pending);
            if self.feed(id, &input, now) {
                let Some(conn) = self.conns.get_mut(&id) else {
                    continue;
                };
                if !conn.is_open() {
                    continue;
                }
                if conn.eof {
                    self.end_input(id, now);
                } else {
                    self.events.push_back(Event::Resume(id));
                }
            }
        }
    }

    /// Moves the hub's actions into outboxes and events. A notice that takes a client past
    /// its bound makes it behind, past twice its bound cuts it (rule 5 of [`crate::flow`]);
    /// a cut is itself announced (more actions): hence the queue.
    // ANCHOR: route
    fn route(&mut self, now: Instant) {
        let bound = self.limits.outbox_bytes;
        self.actions.extend(self.scratch.drain(..));
        while let Some(action) = self.actions.pop_front() {
            match action {
                Action::Send(to, line) => {
                    let Some(conn) = self.conns.get_mut(&to) else {
                        continue;
                    };
                    if !conn.is_open() {
                        continue;
                    }
                    let was_empty = conn.outbox.is_empty();
                    let held = cluster::hold(&mut self.hub, conn, to);
                    conn.outbox.push(line);
                    if was_empty && !held {
                        self.events.push_back(Event::Flush(to));
                    }
                    let owed = conn.outbox.cost();
                    if flow::over_hard_limit(owed, bound) && !self.stopping {
                        self.cut(to);
                    } else if owed > bound && conn.behind_since.is_none() && !self.stopping {
                        conn.behind_since = Some(now);
                        self.behind.push(to);
                        self.slow_timers.push_back((now + SLOW_GRACE, to));
                    }
                }
                Action::Close(id) => {
                    let grace = if self.stopping {
                        SHUTDOWN_GRACE
                    } else {
                        CLOSE_GRACE
                    };
                    self.begin_close(id, now + grace, false);
                }
                Action::Release(nick) => self.hub.release(&nick),
            }
        }
    }
    // ANCHOR_END: route
}
