//! # Stage 06: the event loop on mio
//!
//! The same single-threaded event loop as stage 05, written on [`mio`] instead of raw
//! `epoll`. mio is the thin, portable layer that tokio is built on: one [`Poll`] wraps the
//! platform's readiness API (epoll on Linux, kqueue on the BSDs and macOS, IOCP on Windows),
//! sockets are registered with a [`Token`] of our choosing, and `poll` hands back
//! [`mio::event::Event`]s carrying those tokens.
//!
//! ```text
//! cargo run --release -p chat-mio
//! nc 127.0.0.1 7878      # in two or more terminals: one thread serves them all
//! ```
//!
//! ## What mio hides, and what it does not
//!
//! Hidden: the system calls (`epoll_create1`, `epoll_ctl`, `epoll_wait`, and their kqueue
//! and IOCP equivalents), the `unsafe` around them, the event structs, and the differences
//! between platforms. This file contains no `unsafe` and no `libc`.
//!
//! Not hidden, because it is the program, not the platform:
//!
//! - mio is **edge-triggered**: it reports a socket when it *becomes* ready, not while it
//!   *is* ready. The kernel says it once; remembering it is ours. A client whose socket may
//!   still hold bytes waits in `EventLoop::unfinished` until a `read` says `WouldBlock`, and
//!   only `WouldBlock` proves the socket empty: a short read does not (Linux's `recv` stops
//!   at a TCP urgent mark, and the end of the stream may have come in the same edge as the
//!   last bytes).
//! - Not reading is ours too. While a client's input waits for room (flow control, decided
//!   by `chat_core::Server`), we simply do not read it; when the server lets it go on
//!   (`Event::Resume`), no new edge will come for the bytes already in the kernel, so the loop
//!   puts the client back in `unfinished` itself.
//! - Buffers are ours: one read buffer for the whole loop, and each client's bounded outbox
//!   (inside [`chat_core::Server`]). Partial writes are ours: `writev` takes what fits in the
//!   socket's send buffer, and the rest waits for the next writable edge.
//! - The server decides, the loop obeys: who is a slow consumer, when a closing client is
//!   hung up or closed, when a grace runs out. The loop passes the time in and sleeps until a
//!   socket is ready or the server's next deadline.
//!
//! Apart from mio, everything comes from the crates every stage shares: the protocol from
//! `chat-core`; the flags, listener, signals and accept back-off from `chat-net`.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::mem;
use std::net::Shutdown as Direction;
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event as ServerEvent, Flushed, Server};
use chat_net::{AcceptError, Config, Shutdown};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

// ANCHOR: tokens
/// The listening socket's token. A token is just a number that `poll` gives back with each
/// event; mio never looks inside it.
const LISTENER: Token = Token(usize::MAX);
/// The token of the shutdown descriptor, readable once SIGINT or SIGTERM has arrived.
const SHUTDOWN: Token = Token(usize::MAX - 1);

/// A client's token is its id: ids count up from 0 and are never reused, so they never reach
/// the two tokens above, and an event that arrives for a client already gone names nobody.
fn token_of(id: ClientId) -> Token {
    Token(id.0 as usize)
}

/// The client an event's token stands for.
fn client_of(token: Token) -> ClientId {
    ClientId(token.0 as u64)
}
// ANCHOR_END: tokens

/// Bytes per `read`. There is one such buffer for the whole loop, not one per client: an idle
/// connection costs no read buffer at all.
const READ_BUF: usize = 64 * 1024;

/// Events one `poll` call can return. More ready sockets than this are not lost: the kernel
/// keeps them on its ready list for the next call.
const EVENTS: usize = 1024;

/// Serves every client on the calling thread, with one mio event loop, until `shutdown` is
/// triggered; then says goodbye to everyone and returns.
// ANCHOR: run
pub fn run(listener: std::net::TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    // mio needs non-blocking sockets, and `from_std` does not switch the mode for us. We keep
    // `chat_net::bind`'s listener (backlog 4096) rather than `mio::net::TcpListener::bind`,
    // which listens with a backlog of 128 and drops SYNs under a burst of connects.
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener);
    let mut event_loop = EventLoop::new(listener, config, &shutdown)?;
    event_loop.run()
}
// ANCHOR_END: run

/// Whether the loop takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepting {
    /// The listener is registered: an event on it means connections are waiting.
    Yes,
    /// Out of descriptors (or memory): the listener is deregistered until this instant.
    PausedUntil(Instant),
    /// Shutting down: the listener stays deregistered.
    Stopped,
}

/// What the loop keeps per client, beside what `chat_core::Server` keeps (its framer,
/// outbox, flow-control and closing state).
#[derive(Debug)]
struct Conn {
    /// The socket, registered under the client's token for reading and writing.
    stream: TcpStream,
    /// True while the client waits in [`EventLoop::unfinished`].
    unfinished: bool,
}

/// The whole server: one poller, one listener, one protocol state, every socket.
#[derive(Debug)]
struct EventLoop {
    /// The poller: epoll here, kqueue or IOCP elsewhere.
    poll: Poll,
    /// The listening socket (backlog 4096, from `chat_net::bind`).
    listener: TcpListener,
    /// Whether `listener` is registered, and if not, until when.
    accepting: Accepting,
    /// The protocol: hub, framers, outboxes, flow control, timers. It does no I/O; we do.
    server: Server,
    /// Every open client socket, by client id (which is also its token).
    conns: IdMap<Conn>,
    /// The one read buffer, shared by every client.
    buf: Box<[u8]>,
    /// Clients whose socket may hold bytes (or the end of the stream) we have not read: an
    /// edge said so, or the server let their input go on, and no `read` has said
    /// `WouldBlock` since. Edge-triggered readiness will not report them again, so the loop
    /// gives each of them a turn itself, one read per turn.
    unfinished: VecDeque<ClientId>,
    /// Clients to write to at the end of this iteration (their outbox got lines, or their
    /// socket has room again).
    dirty: Vec<ClientId>,
    /// Set on SIGINT/SIGTERM; the loop ends once the server has closed every client.
    stopping: bool,
}

impl EventLoop {
    /// Registers the listener and the shutdown descriptor with a new poller.
    fn new(mut listener: TcpListener, config: Config, shutdown: &Shutdown) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // Any file descriptor can be watched through `SourceFd`: here the read end of the
        // self-pipe that `chat_net::Shutdown`'s signal handler writes to.
        poll.registry()
            .register(&mut SourceFd(&shutdown.fd()), SHUTDOWN, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener,
            accepting: Accepting::Yes,
            server: Server::new(config.limits()),
            conns: IdMap::default(),
            buf: vec![0; READ_BUF].into_boxed_slice(),
            unfinished: VecDeque::new(),
            dirty: Vec::new(),
            stopping: false,
        })
    }

    /// Waits for readiness, handles it, delivers, repeats. Returns once stopped and every
    /// connection is closed; fails only if the poller itself fails.
    // ANCHOR: event_loop
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        while !self.server.is_stopped() {
            // 1. Sleep until something is ready or a deadline is due (not at all while a
            //    client may have bytes left).
            let timeout = self.timeout(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue; // a signal; if it was SIGINT/SIGTERM, SHUTDOWN is readable now
                }
                return Err(err);
            }
            // 2. Note what is ready; then every client that may have bytes gets one read.
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    SHUTDOWN => self.stop(now),
                    token => self.on_client_event(client_of(token), event, now),
                }
            }
            self.read_turn(now);
            self.on_timers(now);
            // 3. Deliver what all of that produced.
            self.settle(now);
        }
        Ok(())
    }
    // ANCHOR_END: event_loop

    /// How long `poll` may sleep: not at all if a client may have bytes left to read, until
    /// the next deadline (the server's, or the end of an accept back-off) if there is one,
    /// else until an event.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.unfinished.is_empty() {
            return Some(Duration::ZERO);
        }
        let resume = match self.accepting {
            Accepting::PausedUntil(at) => Some(at),
            Accepting::Yes | Accepting::Stopped => None,
        };
        resume
            .into_iter()
            .chain(self.server.poll_timeout())
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Takes every waiting connection. Edge-triggered, the listener is reported once for a
    /// whole burst of connects: stopping before `WouldBlock` would strand the rest in the
    /// backlog until some later connect happens to come along.
    // ANCHOR: accept_loop
    fn accept_all(&mut self, now: Instant) {
        while self.accepting == Accepting::Yes {
            match self.listener.accept() {
                Ok((stream, _peer)) => self.admit(stream, now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => match chat_net::classify_accept_error(&err) {
                    AcceptError::Retry => continue,
                    AcceptError::Backoff => self.pause_accepting(now),
                },
            }
        }
    }
    // ANCHOR_END: accept_loop

    /// Out of descriptors (EMFILE) or memory: accepting again now would fail again now.
    /// Deregistered, the listener wakes nobody however many clients knock, and the `poll`
    /// timeout brings us back after `ACCEPT_BACKOFF` (see [`EventLoop::on_timers`]).
    // ANCHOR: backoff
    fn pause_accepting(&mut self, now: Instant) {
        if let Err(err) = self.poll.registry().deregister(&mut self.listener) {
            log::warn!("cannot deregister the listener: {err}");
        }
        self.accepting = Accepting::PausedUntil(now + chat_net::ACCEPT_BACKOFF);
    }

    /// The back-off is over: watch the listener again, and take what waited meanwhile
    /// ourselves rather than count on the poller to report a backlog that filled up while
    /// the listener was not registered. If the registration fails, the pause goes on: a
    /// server that cannot accept for a while still serves its clients.
    fn resume_accepting(&mut self, now: Instant) {
        match self
            .poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            Ok(()) => {
                self.accepting = Accepting::Yes;
                self.accept_all(now);
            }
            Err(err) => {
                log::warn!("cannot register the listener again: {err}");
                self.accepting = Accepting::PausedUntil(now + chat_net::ACCEPT_BACKOFF);
            }
        }
    }
    // ANCHOR_END: backoff

    /// A new connection: welcome it (or refuse it beyond `--max-clients`) and watch it.
    // ANCHOR: admit
    fn admit(&mut self, mut stream: TcpStream, now: Instant) {
        if let Err(err) = stream.set_nodelay(true) {
            log::debug!("set_nodelay: {err}");
        }
        let Ok(id) = self.server.connect(now) else {
            chat_net::refuse(stream.into()); // `! server full`: a fresh socket takes 14 bytes
            return;
        };
        // Readable *and* writable, once, for the connection's whole life. Edge-triggered, a
        // writable event comes only when a send buffer that we filled up has room again, so
        // an idle client is not woken for it, and we never pay an `epoll_ctl` to switch
        // writable interest on and off as its outbox fills and drains (stage 05 does, because
        // level-triggered writability would be reported on every call).
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self
            .poll
            .registry()
            .register(&mut stream, token_of(id), interest)
        {
            Ok(()) => {
                let conn = Conn {
                    stream,
                    unfinished: false,
                };
                self.conns.insert(id, conn);
                log::debug!("client {id} connected ({} open)", self.conns.len());
            }
            Err(err) => {
                log::warn!("cannot watch a new client: {err}");
                self.server.closed(id, now);
            }
        }
    }
    // ANCHOR_END: admit

    /// Something happened on a client's socket. One event may say both readable and writable.
    /// Nothing is read here: the client joins the line of those to read, and gets its turn in
    /// [`EventLoop::read_turn`] with everybody else.
    // ANCHOR: on_client_event
    fn on_client_event(&mut self, id: ClientId, event: &Event, now: Instant) {
        if event.is_error() {
            // A reset, or another error: nothing more will come through this socket.
            return self.finish(id, now);
        }
        // The end of the stream (a half-close included) is found by reading, like bytes: the
        // server still handles what came before it and writes every reply.
        if event.is_readable() || event.is_read_closed() {
            self.remember_unfinished(id);
        }
        if event.is_writable() {
            self.dirty.push(id); // its socket has room again: write what is left
        }
    }
    // ANCHOR_END: on_client_event

    /// One turn of reading: every client that may have bytes left gets one `read` into the
    /// shared buffer, in the order they got in line.
    ///
    /// One read per turn is fairness: a client that sends faster than we parse gets 64 KiB,
    /// then everybody else has their turn. But edge-triggered readiness has told us *once*, so
    /// a client leaves the line only when its socket is proven empty (`WouldBlock`) or ended.
    /// A short read proves nothing: `recv` also stops at a TCP urgent mark, and the end of
    /// the stream may have arrived with the last bytes, in the same edge.
    // ANCHOR: on_readable
    fn read_turn(&mut self, now: Instant) {
        for _ in 0..self.unfinished.len() {
            let Some(id) = self.unfinished.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&id) else {
                continue; // closed meanwhile
            };
            conn.unfinished = false;
            // While its input waits for room, the server takes nothing from it: leave its
            // bytes in the kernel. `Event::Resume` puts it back in line.
            if self.server.reading(id) {
                self.read_once(id, now);
            }
        }
    }

    /// One `read` from client `id`, then the protocol. The client stays in line unless the
    /// socket said it is empty or ended.
    fn read_once(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.stream.read(&mut self.buf) {
            Ok(0) => self.server.eof(id, now), // it ended its stream: a normal goodbye
            Ok(n) => {
                self.server.receive(id, &self.buf[..n], now);
                self.remember_unfinished(id); // short or not: only `WouldBlock` says empty
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {} // the next byte is an edge
            Err(err) if err.kind() == io::ErrorKind::Interrupted => self.remember_unfinished(id),
            Err(err) => {
                log::debug!("client {id}: read: {err}");
                self.finish(id, now);
            }
        }
    }

    /// Puts a client whose socket may hold bytes in line for the next turn.
    fn remember_unfinished(&mut self, id: ClientId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.unfinished {
                conn.unfinished = true;
                self.unfinished.push_back(id);
            }
        }
    }
    // ANCHOR_END: on_readable

    /// Carries out what the protocol asked for. Writing waits until every ready socket of
    /// this iteration was read: if three senders wrote to a room, each member gets all three
    /// lines in one `writev` instead of three. Writing may let waiting senders go on (more
    /// events), hence the loop.
    // ANCHOR: settle
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.server.poll_event() {
                match event {
                    ServerEvent::Flush(id) => self.dirty.push(id),
                    // Its bytes are already in the kernel, and no new edge will come for
                    // them: read it on the next turn without waiting for an event.
                    ServerEvent::Resume(id) => self.remember_unfinished(id),
                    ServerEvent::Hangup(id) => self.hang_up(id, now),
                    ServerEvent::Close(id) => self.close(id),
                }
            }
            if self.dirty.is_empty() {
                return;
            }
            let mut batch = mem::take(&mut self.dirty);
            for id in batch.drain(..) {
                self.flush(id, now);
            }
            self.dirty = batch; // keep the allocation for the next iteration
        }
    }
    // ANCHOR_END: settle

    /// Writes what a client is owed through the server's one write path,
    /// [`chat_core::Server::flush`]: `writev`, many queued lines per system call, until
    /// nothing is owed or the socket is full. A full socket is not an error: it is what makes
    /// the next writable edge come (from full to not full), and the rest waits in the outbox.
    // ANCHOR: flush
    fn flush(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // closed earlier in this iteration
        };
        let stream = &mut conn.stream;
        match self
            .server
            .flush(id, now, |lines| stream.write_vectored(lines))
        {
            Ok(Flushed::All | Flushed::Partly) => {}
            Err(err) => {
                log::debug!("client {id}: write: {err}");
                self.finish(id, now);
            }
        }
    }
    // ANCHOR_END: flush

    /// Everything owed is written and the server is done with the client: end our side of
    /// the stream, and read on until the client ends its side (the server ignores what it
    /// sends). Closing now, with its bytes unread, would make the kernel send a reset. It is
    /// put in line at once: bytes it sent while its input waited are in the kernel already,
    /// and edge-triggered readiness may never mention them again.
    // ANCHOR: hang_up
    fn hang_up(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if let Err(err) = conn.stream.shutdown(Direction::Write) {
            log::debug!("client {id}: shutdown: {err}");
            return self.finish(id, now);
        }
        self.remember_unfinished(id);
    }
    // ANCHOR_END: hang_up

    /// Deregisters and closes a client's socket; the server has already forgotten it
    /// (`Event::Close`: it is over, a slow consumer, or its grace ran out).
    // ANCHOR: drop_client
    fn close(&mut self, id: ClientId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            // Closing a descriptor takes it out of an epoll set, but mio documents
            // `deregister` as the way to stop events on every platform it supports.
            if let Err(err) = self.poll.registry().deregister(&mut conn.stream) {
                log::debug!("client {id}: deregister: {err}");
            }
            log::debug!("client {id} closed ({} open)", self.conns.len());
        } // `conn` is dropped here: the socket is closed
    }

    /// The connection failed: close it, and tell the server, whose consequences
    /// (`* NICK left ROOM`) [`EventLoop::settle`] carries out.
    fn finish(&mut self, id: ClientId, now: Instant) {
        self.close(id);
        self.server.closed(id, now);
    }
    // ANCHOR_END: drop_client

    /// Time, checked after every `poll`: the end of an accept back-off, and the server's
    /// deadlines (slow consumers, closing connections past their grace).
    fn on_timers(&mut self, now: Instant) {
        if let Accepting::PausedUntil(at) = self.accepting {
            if now >= at {
                self.resume_accepting(now);
            }
        }
        self.server.handle_timeout(now);
    }

    /// SIGINT or SIGTERM: stop accepting and let the server say goodbye to everyone. The loop
    /// returns once it has closed them all, within its shutdown grace.
    // ANCHOR: shutdown
    fn stop(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        log::info!("shutting down ({} clients)", self.conns.len());
        self.stopping = true;
        if self.accepting == Accepting::Yes {
            if let Err(err) = self.poll.registry().deregister(&mut self.listener) {
                log::warn!("cannot deregister the listener: {err}");
            }
        }
        self.accepting = Accepting::Stopped;
        self.server.shutdown(now); // `* server shutting down`, then every client is closed
    }
    // ANCHOR_END: shutdown
}
