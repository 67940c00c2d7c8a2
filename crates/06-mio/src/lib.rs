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
//!   *is* ready. After an event we must either drain the socket (accept until the backlog is
//!   empty, read until the receive buffer is empty) or remember by ourselves that we did not
//!   ([`EventLoop::unfinished`]), because the kernel will not say it again.
//! - Buffers are ours: one read buffer for the whole loop, and each client's bounded outbox
//!   (inside [`chat_core::Server`]).
//! - Partial writes are ours: `writev` takes what fits in the socket's send buffer, and we
//!   keep the rest for the next writable event.
//! - Bookkeeping is ours: which token is which socket, when to stop accepting, when a
//!   closing connection has finally written its goodbye.
//!
//! Apart from mio, everything comes from the crates every stage shares: the protocol from
//! `chat-core`; the flags, listener, signals and accept back-off from `chat-net`.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::mem;
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{ClientId, Outbox, Server};
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

/// Queued lines handed to one `writev`. Linux accepts up to 1024; 64 lines already make one
/// system call out of what a thread-per-client server does in 64.
const WRITE_SLICES: usize = 64;

/// How long a closing connection (after `/quit`, or at shutdown) may take to read what it is
/// still owed before we close it anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

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

/// What the loop keeps per client, beside what `chat_core::Server` keeps (its framer and
/// outbox).
#[derive(Debug)]
struct Conn {
    /// The socket, registered under the client's token for reading and writing.
    stream: TcpStream,
    /// True while the client waits in [`EventLoop::unfinished`].
    unfinished: bool,
    /// The peer closed its end, or the socket failed: an event said so, and it says so only
    /// once. From now on a short read proves nothing; we read until the end of the stream.
    hung_up: bool,
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
    /// The protocol: hub, framers and outboxes. It does no I/O; we do.
    server: Server,
    /// Every open client socket, by client id (which is also its token).
    conns: IdMap<Conn>,
    /// The one read buffer, shared by every client.
    buf: Box<[u8]>,
    /// Clients that may have more bytes to read than they got this turn. Edge-triggered
    /// readiness will not report them again, so the loop gives them another turn itself.
    unfinished: VecDeque<ClientId>,
    /// Clients to write to at the end of this iteration (their outbox got lines, or their
    /// socket has room again).
    dirty: Vec<ClientId>,
    /// Closing connections, with the instant they are closed even if their last lines are
    /// not written yet. Oldest first: every entry gets the same [`CLOSE_LINGER`].
    lingering: VecDeque<(Instant, ClientId)>,
    /// Set on SIGINT/SIGTERM; the loop ends once the last connection is closed.
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
            lingering: VecDeque::new(),
            stopping: false,
        })
    }

    /// Waits for readiness, handles it, delivers, repeats. Returns once stopped and every
    /// connection is closed; fails only if the poller itself fails.
    // ANCHOR: event_loop
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            // 1. Sleep until something is ready or a timer is due.
            let timeout = self.timeout(Instant::now());
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue; // a signal; if it was SIGINT/SIGTERM, SHUTDOWN is readable now
                }
                return Err(err);
            }
            // 2. Handle what is ready, then what we remembered ourselves.
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SHUTDOWN => self.stop(),
                    token => self.on_client_event(client_of(token), event),
                }
            }
            self.resume_unfinished();
            self.on_timers(Instant::now());
            // 3. Deliver what all of that produced.
            self.settle();
            if self.stopping && self.conns.is_empty() {
                return Ok(());
            }
        }
    }
    // ANCHOR_END: event_loop

    /// How long `poll` may sleep: not at all if a client has bytes left to read, until the
    /// next timer (accept back-off, a lingering close) if there is one, else until an event.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        if !self.unfinished.is_empty() {
            return Some(Duration::ZERO);
        }
        let resume = match self.accepting {
            Accepting::PausedUntil(at) => Some(at),
            Accepting::Yes | Accepting::Stopped => None,
        };
        let linger = self.lingering.front().map(|&(at, _)| at);
        resume
            .into_iter()
            .chain(linger)
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Takes every waiting connection. Edge-triggered, the listener is reported once for a
    /// whole burst of connects: stopping before `WouldBlock` would strand the rest in the
    /// backlog until some later connect happens to come along.
    // ANCHOR: accept_loop
    fn accept_all(&mut self) {
        while self.accepting == Accepting::Yes {
            match self.listener.accept() {
                Ok((stream, _peer)) => self.admit(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => match chat_net::classify_accept_error(&err) {
                    AcceptError::Retry => continue,
                    AcceptError::Backoff => self.pause_accepting(),
                },
            }
        }
    }
    // ANCHOR_END: accept_loop

    /// Out of descriptors (EMFILE) or memory: accepting again now would fail again now.
    /// Deregistered, the listener wakes nobody however many clients knock, and the `poll`
    /// timeout brings us back after `ACCEPT_BACKOFF` (see [`EventLoop::on_timers`]).
    // ANCHOR: backoff
    fn pause_accepting(&mut self) {
        if let Err(err) = self.poll.registry().deregister(&mut self.listener) {
            log::warn!("cannot deregister the listener: {err}");
        }
        self.accepting = Accepting::PausedUntil(Instant::now() + chat_net::ACCEPT_BACKOFF);
    }

    /// The back-off is over: watch the listener again, and take what waited meanwhile
    /// ourselves rather than count on the poller to report a backlog that filled up while
    /// the listener was not registered.
    fn resume_accepting(&mut self) {
        match self
            .poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)
        {
            Ok(()) => {
                self.accepting = Accepting::Yes;
                self.accept_all();
            }
            Err(err) => {
                log::warn!("cannot register the listener again: {err}");
                self.accepting = Accepting::PausedUntil(Instant::now() + chat_net::ACCEPT_BACKOFF);
            }
        }
    }
    // ANCHOR_END: backoff

    /// A new connection: welcome it (or refuse it beyond `--max-clients`) and watch it.
    // ANCHOR: admit
    fn admit(&mut self, mut stream: TcpStream) {
        if let Err(err) = stream.set_nodelay(true) {
            log::debug!("set_nodelay: {err}");
        }
        let Ok(id) = self.server.connect() else {
            // A new socket's send buffer is empty, so the line fits; if the client is already
            // gone, there is nobody to tell. Dropping the stream closes it.
            let _ = stream.write(chat_core::SERVER_FULL_LINE);
            let _ = stream.shutdown(std::net::Shutdown::Both);
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
                    hung_up: false,
                };
                self.conns.insert(id, conn);
                log::debug!("client {id} connected ({} open)", self.conns.len());
            }
            Err(err) => {
                log::warn!("cannot watch a new client: {err}");
                self.server.close(id);
            }
        }
    }
    // ANCHOR_END: admit

    /// Something happened on a client's socket. One event may say both readable and writable.
    // ANCHOR: on_client_event
    fn on_client_event(&mut self, id: ClientId, event: &Event) {
        let hung_up = event.is_read_closed() || event.is_error();
        if hung_up {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.hung_up = true;
            }
        }
        if event.is_readable() || hung_up {
            self.on_readable(id); // an end of stream or an error is found by reading
        }
        if event.is_writable() {
            self.dirty.push(id); // its socket has room again: write what is left
        }
    }
    // ANCHOR_END: on_client_event

    /// One `read` into the shared buffer, then the protocol.
    ///
    /// One read per turn is fairness: a client that sends faster than we parse gets 64 KiB,
    /// then everybody else has their turn. But edge-triggered readiness has told us *once*:
    /// if we leave bytes in the socket, no event will remind us. A read that came back
    /// shorter than the buffer took everything the kernel had (tokio reasons the same way on
    /// epoll and kqueue), so the next byte to arrive will be a new edge. A read that filled
    /// the buffer may have left more: the client goes into `unfinished` for another turn.
    /// So does a client that hung up: its last bytes and its end of stream may have come in
    /// one edge, and no other edge will come to tell us about the end.
    // ANCHOR: on_readable
    fn on_readable(&mut self, id: ClientId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // closed earlier in this batch
        };
        match conn.stream.read(&mut self.buf) {
            Ok(0) => {
                log::debug!("client {id} closed the connection");
                self.drop_client(id);
            }
            Ok(n) => {
                let more = n == self.buf.len() || conn.hung_up;
                self.server.receive(id, &self.buf[..n]);
                if more {
                    self.remember_unfinished(id);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {} // nothing after all
            Err(err) if err.kind() == io::ErrorKind::Interrupted => self.remember_unfinished(id),
            Err(err) => {
                log::debug!("client {id}: read: {err}");
                self.drop_client(id);
            }
        }
    }

    /// Puts a client whose socket may hold more bytes in line for another turn.
    fn remember_unfinished(&mut self, id: ClientId) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.unfinished {
                conn.unfinished = true;
                self.unfinished.push_back(id);
            }
        }
    }

    /// Gives each client in `unfinished` its next turn. One that fills the buffer again goes
    /// to the back, for the next iteration: `poll` with a zero timeout comes first, so clients
    /// with new events are not kept waiting behind it.
    fn resume_unfinished(&mut self) {
        for _ in 0..self.unfinished.len() {
            let Some(id) = self.unfinished.pop_front() else {
                break;
            };
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.unfinished = false;
                self.on_readable(id);
            }
        }
    }
    // ANCHOR_END: on_readable

    /// Carries out what the protocol asked for. Writing waits until every ready socket of
    /// this iteration was read: if three senders wrote to a room, each member gets all three
    /// lines in one `writev` instead of three. Closing a client makes its room hear that it
    /// left (more events), hence the loop.
    // ANCHOR: settle
    fn settle(&mut self) {
        loop {
            while let Some(event) = self.server.poll_event() {
                match event {
                    chat_core::Event::Flush(id) => self.dirty.push(id),
                    chat_core::Event::Close(id) => {
                        // Write its last lines (`* bye`) first; `flush` closes it once they
                        // are out, or the timer does.
                        self.lingering
                            .push_back((Instant::now() + CLOSE_LINGER, id));
                        self.dirty.push(id);
                    }
                }
            }
            if self.dirty.is_empty() {
                return;
            }
            let mut batch = mem::take(&mut self.dirty);
            for id in batch.drain(..) {
                self.flush(id);
            }
            self.dirty = batch; // keep the allocation for the next iteration
        }
    }
    // ANCHOR_END: settle

    /// Writes what a client is owed until its outbox is empty or its socket is full, then
    /// finishes a close that was waiting for exactly that. A write error ends the client.
    // ANCHOR: flush
    fn flush(&mut self, id: ClientId) {
        let (Some(conn), Some(outbox)) = (self.conns.get_mut(&id), self.server.outbox(id)) else {
            return; // closed earlier in this iteration
        };
        match write_outbox(&mut conn.stream, outbox) {
            Ok(()) => {
                let drained = outbox.is_empty();
                if drained && self.server.is_closing(id) {
                    self.drop_client(id); // its goodbye is written: now close
                }
            }
            Err(err) => {
                log::debug!("client {id}: write: {err}");
                self.drop_client(id);
            }
        }
    }
    // ANCHOR_END: flush

    /// Forgets a client: deregister and close its socket, and tell the protocol, whose
    /// consequences (`* NICK left ROOM`) [`EventLoop::settle`] carries out.
    // ANCHOR: drop_client
    fn drop_client(&mut self, id: ClientId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            // Closing a descriptor takes it out of an epoll set, but mio documents
            // `deregister` as the way to stop events on every platform it supports.
            if let Err(err) = self.poll.registry().deregister(&mut conn.stream) {
                log::debug!("client {id}: deregister: {err}");
            }
            log::debug!("client {id} closed ({} open)", self.conns.len());
        } // `conn` is dropped here: the socket is closed
        self.server.close(id);
    }
    // ANCHOR_END: drop_client

    /// Timers, checked after every `poll`: the end of an accept back-off, and closing
    /// connections that did not take their last lines in time.
    fn on_timers(&mut self, now: Instant) {
        if let Accepting::PausedUntil(at) = self.accepting {
            if now >= at {
                self.resume_accepting();
            }
        }
        while let Some(&(at, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if self.conns.contains_key(&id) {
                log::debug!("client {id}: did not read its last lines in {CLOSE_LINGER:?}");
                self.drop_client(id);
            }
        }
    }

    /// SIGINT or SIGTERM: stop accepting, tell everyone, close everything. The loop returns
    /// once the last connection is closed, within [`CLOSE_LINGER`].
    // ANCHOR: shutdown
    fn stop(&mut self) {
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
        self.server.shutdown(); // `* server shutting down` and a Close for every client
    }
    // ANCHOR_END: shutdown
}

/// Writes from the front of `outbox` with `writev` (many queued lines per system call) until
/// it is empty or the socket's send buffer is full.
///
/// A full buffer (`WouldBlock`) is not an error: it is what makes the next writable event
/// come, since edge-triggered readiness reports the change from full to not full. Whatever
/// did not fit stays queued in the outbox, which `--outbox-bytes` bounds.
// ANCHOR: write_outbox
fn write_outbox(stream: &mut TcpStream, outbox: &mut Outbox) -> io::Result<()> {
    while !outbox.is_empty() {
        let written = {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let filled = outbox.io_slices(&mut slices);
            match stream.write_vectored(&slices[..filled]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        };
        outbox.consume(written); // a line written in part keeps its rest at the front
    }
    Ok(())
}
// ANCHOR_END: write_outbox
