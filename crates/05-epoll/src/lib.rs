//! # Stage 05: epoll
//!
//! Stage 04 (`select`) showed the shape of an event loop — non-blocking sockets, one thread,
//! "tell me which are ready" — and its two limits: descriptors numbered 1024 or more cannot be
//! watched at all, and every call hands the kernel the *whole* list and scans it twice. Linux's
//! `epoll` removes both. The list of watched descriptors (the *interest list*) lives in the
//! kernel: we register a socket once with `epoll_ctl`, and `epoll_wait` returns only the
//! sockets that are ready, each with the 64-bit *token* we registered it with. The cost of a
//! wake-up is proportional to what is ready, not to what is connected.
//!
//! ```text
//! cargo run --release -p chat-epoll
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! The three system calls are used through `libc` directly, behind a thin safe wrapper
//! ([`Epoll`]). The protocol is `chat_core::Server` (sans-IO), as in stage 04.
//!
//! ## Choices this file makes
//!
//! - **Level-triggered.** A socket is reported as long as it *is* readable (or writable), not
//!   once when it *becomes* so (`EPOLLET`, edge-triggered). Level-triggering lets us read once
//!   per wake-up and move on: a client that sent more than our buffer holds is reported again
//!   next time, after everybody else had a turn. Edge-triggering would oblige us to read until
//!   `EWOULDBLOCK` every time (or keep our own list of sockets with bytes left), or a socket
//!   with unread bytes would never be reported again.
//! - **`EPOLLOUT` only while something is pending.** An empty socket buffer is writable almost
//!   all the time, so watching every socket for writability would wake us for nothing. We write
//!   first, and ask for `EPOLLOUT` only for a client whose outbox the socket did not take
//!   entirely, until it did.
//! - **`EPOLLIN` only while the server takes input from the client.** When one client's line
//!   cannot be handled because a recipient has no room (flow control, decided by
//!   `chat_core::Server`), its input waits: we stop watching it for reading, or level-triggered
//!   epoll would report its unread bytes on every call. `Event::Resume` watches it again.
//! - **The server decides, the loop obeys.** Who is a slow consumer, when a closing client is
//!   hung up or closed, when a grace runs out: all of that is `chat_core::Server`'s, with the
//!   time passed in. The loop sleeps in `epoll_wait` until a socket is ready or the server's next
//!   deadline ([`chat_core::Server::poll_timeout`]), whichever comes first.
//! - **The token is the client id**, not the descriptor: ids are never reused, so an event for
//!   a client that was closed earlier in the same batch cannot reach a new client that got the
//!   same descriptor number.
//! - **Memory per idle connection** is what C10K is about: one 64 KiB read buffer for the whole
//!   server, no buffer per client; a client costs its socket, a small map entry here, and its
//!   state in `chat_core` (a nick, a room, an empty framer and outbox).

use std::io::{self, Read as _, Write as _};
use std::mem;
use std::net::{Shutdown as Direction, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Flushed, Server};
use chat_net::{AcceptError, Config, Shutdown};

/// The one read buffer of the whole server. Big, so that a client that sent many lines is
/// handled with one `read`; shared, so that an idle client costs no buffer at all.
pub const READ_BUF: usize = 64 * 1024;

/// At most this many ready descriptors are returned by one `epoll_wait`; more wait for the
/// next call (level-triggered: they are still ready then).
const MAX_EVENTS: usize = 1024;

/// Interest in reading (and, always reported, errors and hang-ups).
const READ: u32 = libc::EPOLLIN as u32;
/// Interest in writing.
const WRITE: u32 = libc::EPOLLOUT as u32;
/// Reported whether asked for or not: the peer hung up, or the socket has an error.
const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// The token of the listening socket. Client ids count up from 0 and never get here.
const LISTENER: u64 = u64::MAX;
/// The token of the shutdown descriptor.
const SHUTDOWN: u64 = u64::MAX - 1;

// ANCHOR: epoll
/// An epoll instance: a descriptor naming an interest list kept by the kernel.
#[derive(Debug)]
pub struct Epoll {
    /// The epoll descriptor; closing it (on drop) frees the instance.
    fd: OwnedFd,
}

impl Epoll {
    /// A new, empty epoll instance (`epoll_create1`), closed on `exec`.
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers are involved; the call returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created for us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// Starts watching `fd` for `interest` (`READ`, `WRITE`); its events carry `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Stops watching `fd`. (Closing a descriptor also removes it: closed sockets need no
    /// call.)
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// `epoll_ctl(2)`: one change to the interest list.
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `event` is a live, initialised `epoll_event` for the duration of the call;
        // the kernel only reads it (and ignores it for EPOLL_CTL_DEL).
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sleeps until at least one watched descriptor is ready or `timeout` passes (`None`:
    /// no timeout), fills the front of `events` with what is ready, and returns how many.
    pub fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        // Milliseconds, rounded up: rounding down would turn "in 0.4 ms" into a busy loop.
        let timeout_ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX)
        });
        let max_events = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `events` is a valid, writable buffer of at least `max_events` entries, and
        // the kernel writes at most that many.
        let ready = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max_events,
                timeout_ms,
            )
        };
        usize::try_from(ready).map_err(|_| io::Error::last_os_error())
    }
}
// ANCHOR_END: epoll

/// Serves every client from this one thread until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    // Never block: `accept` with nothing pending must say so (EWOULDBLOCK), not sleep.
    listener.set_nonblocking(true)?;
    let epoll = Epoll::new()?;
    epoll.add(listener.as_raw_fd(), LISTENER, READ)?;
    epoll.add(shutdown.fd(), SHUTDOWN, READ)?;
    let mut event_loop = EventLoop {
        epoll,
        listener,
        shutdown,
        server: Server::new(config.limits()),
        conns: IdMap::default(),
        buf: vec![0; READ_BUF],
        dirty: Vec::new(),
        touched: Vec::new(),
        accept_paused_until: None,
        stopping: false,
    };
    event_loop.run()
}
// ANCHOR_END: run

// ANCHOR: conn
/// One client's socket, as the loop sees it: 8 bytes beside the protocol's state.
#[derive(Debug)]
struct Conn {
    /// The non-blocking socket.
    stream: TcpStream,
    /// What it is registered for right now (`READ`, `WRITE`, both, neither): changing it costs
    /// an `epoll_ctl`, so we remember it and change it only when needed.
    interest: u32,
}
// ANCHOR_END: conn

/// Everything the single thread owns.
#[derive(Debug)]
struct EventLoop {
    /// The interest list: the listener, the shutdown descriptor, every client.
    epoll: Epoll,
    /// The listening socket, non-blocking.
    listener: TcpListener,
    /// Readable once SIGINT/SIGTERM arrived.
    shutdown: Shutdown,
    /// The protocol: hub, framers, outboxes, flow control, timers.
    server: Server,
    /// Every open client socket, by client id (the token epoll hands back).
    conns: IdMap<Conn>,
    /// The shared read buffer.
    buf: Vec<u8>,
    /// Clients to write to at the end of this iteration.
    dirty: Vec<ClientId>,
    /// Clients whose interest may have to change (they were read, written, resumed, hung up).
    touched: Vec<ClientId>,
    /// After EMFILE & co., the listener is out of the interest list until then.
    accept_paused_until: Option<Instant>,
    /// SIGINT/SIGTERM arrived: the loop ends when the server has closed every client.
    stopping: bool,
}

impl EventLoop {
    /// The loop: wait for what is ready, handle exactly that, deliver, repeat.
    // ANCHOR: event_loop
    fn run(&mut self) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        while !self.server.is_stopped() {
            let now = Instant::now();
            self.resume_accepting(now)?;

            // 1. Sleep in the kernel until something is ready or the next deadline (the
            //    server's, or the end of an accept pause). No list to build: the kernel keeps it.
            let ready = match self.epoll.wait(&mut events, self.timeout(now)) {
                Ok(ready) => ready,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };

            // 2. Handle what is ready, and only that: O(ready), not O(connected).
            let now = Instant::now();
            for event in &events[..ready] {
                // `epoll_event` is a packed struct on x86-64: copy it out before reading.
                let libc::epoll_event {
                    events: flags,
                    u64: token,
                } = *event;
                match token {
                    SHUTDOWN => self.begin_shutdown(now),
                    LISTENER if !self.stopping => self.accept_all(now),
                    LISTENER => {}
                    id => self.on_event(ClientId(id), flags, now),
                }
            }
            self.server.handle_timeout(now);

            // 3. Deliver what all of that produced.
            self.settle(now);
        }
        Ok(())
    }
    // ANCHOR_END: event_loop

    /// How long `epoll_wait` may sleep: until the server's next deadline (a slow consumer's
    /// grace, a closing client's), or the end of an accept pause, or for ever if none is set.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        [self.accept_paused_until, self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// The listener is readable: accept every pending connection, until `EWOULDBLOCK`.
    // ANCHOR: accept_loop
    fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => match chat_net::classify_accept_error(&err) {
                    AcceptError::Retry => continue,
                    AcceptError::Backoff => {
                        // Out of descriptors: the connection stays pending and the listener
                        // stays readable, so level-triggered epoll would report it again at
                        // once, forever. Take the listener out of the interest list, and let
                        // `epoll_wait`'s timeout end the pause.
                        self.pause_accepting(now);
                        return;
                    }
                },
            }
        }
    }
    // ANCHOR_END: accept_loop

    /// Stops watching the listener for [`chat_net::ACCEPT_BACKOFF`].
    fn pause_accepting(&mut self, now: Instant) {
        if let Err(err) = self.epoll.delete(self.listener.as_raw_fd()) {
            log::warn!("cannot stop watching the listener: {err}");
        }
        self.accept_paused_until = Some(now + chat_net::ACCEPT_BACKOFF);
    }

    /// Watches the listener again once an accept pause is over. If the kernel refuses, the
    /// pause simply goes on: a server that cannot accept for a while still serves its clients.
    fn resume_accepting(&mut self, now: Instant) -> io::Result<()> {
        match self.accept_paused_until {
            Some(until) if now >= until && !self.stopping => {
                self.accept_paused_until = None;
                if let Err(err) = self.epoll.add(self.listener.as_raw_fd(), LISTENER, READ) {
                    log::warn!("cannot watch the listener again: {err}");
                    self.accept_paused_until = Some(now + chat_net::ACCEPT_BACKOFF);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A new connection: refuse it (`! server full`) or register and welcome it.
    // ANCHOR: admit
    fn admit(&mut self, stream: TcpStream, now: Instant) {
        if let Err(err) = stream.set_nonblocking(true) {
            log::debug!("new connection: {err}");
            return;
        }
        let _ = stream.set_nodelay(true); // no Nagle delay on short lines, as in every stage
        let Ok(id) = self.server.connect(now) else {
            chat_net::refuse(stream); // a fresh socket takes these 14 bytes at once
            return;
        };
        if let Err(err) = self.epoll.add(stream.as_raw_fd(), id.0, READ) {
            // The kernel's own limit on watched descriptors (max_user_watches), or memory.
            log::warn!("cannot watch a new client: {err}");
            self.server.closed(id, now);
            return;
        }
        log::debug!("client {id} on descriptor {}", stream.as_raw_fd());
        self.conns.insert(
            id,
            Conn {
                stream,
                interest: READ,
            },
        );
    }
    // ANCHOR_END: admit

    /// Something happened on a client's socket.
    fn on_event(&mut self, id: ClientId, flags: u32, now: Instant) {
        if flags & libc::EPOLLERR as u32 != 0 {
            // A reset, or another error: reported whether we asked or not, and again on every
            // call until the socket is closed. Nothing more will come through it.
            self.finish(id, now);
            return;
        }
        if flags & (READ | HANGUP) != 0 {
            self.on_readable(id, now); // a hang-up is found by reading
        }
        if flags & WRITE != 0 {
            self.dirty.push(id);
        }
    }

    /// One `read` into the shared buffer, then the protocol. One read per wake-up is fair:
    /// a client that sent more than 64 KiB is still readable next time (level-triggered).
    // ANCHOR: on_readable
    fn on_readable(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return; // closed earlier in this batch
        };
        if !self.server.reading(id) {
            // Its input waits for room, so it is not watched for reading: this is EPOLLHUP,
            // which epoll reports anyway, and again on every call. The connection is gone.
            return self.finish(id, now);
        }
        match (&conn.stream).read(&mut self.buf) {
            Ok(0) => self.server.eof(id, now), // it ended its stream: a normal goodbye
            Ok(n) => self.server.receive(id, &self.buf[..n], now),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(err) => {
                log::debug!("client {id}: {err}");
                return self.finish(id, now);
            }
        }
        self.touched.push(id); // its input may wait now: then stop watching it for reading
    }
    // ANCHOR_END: on_readable

    /// Carries out the server's events. Flushing waits until every ready socket of this
    /// batch was read: if three senders wrote to a room, each member gets all three lines in
    /// one `writev` instead of three writes. Writing may let waiting senders go on (more
    /// events), hence the loop.
    // ANCHOR: settle
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.server.poll_event() {
                match event {
                    Event::Flush(id) => self.dirty.push(id),
                    Event::Resume(id) => self.touched.push(id),
                    Event::Hangup(id) => self.hang_up(id, now),
                    Event::Close(id) => {
                        // Dropping the stream closes the descriptor, which also takes it off
                        // the interest list.
                        if self.conns.remove(&id).is_some() {
                            log::debug!("client {id} closed");
                        }
                    }
                }
            }
            if self.dirty.is_empty() && self.touched.is_empty() {
                return;
            }
            let mut batch = mem::take(&mut self.dirty);
            for id in batch.drain(..) {
                self.flush(id, now);
            }
            self.dirty = batch; // keep the allocation for the next iteration
            let mut batch = mem::take(&mut self.touched);
            for id in batch.drain(..) {
                self.watch(id, now);
            }
            self.touched = batch;
        }
    }
    // ANCHOR_END: settle

    /// Writes what client `id` is owed, as far as its socket takes it, many lines per
    /// `writev` (the server's one write path, [`chat_core::Server::flush`]).
    // ANCHOR: flush
    fn flush(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return; // closed earlier in this iteration
        };
        // `write_vectored` is `writev(2)`. (A Rust program starts with SIGPIPE ignored, so
        // writing to a connection the peer closed is an EPIPE error here, not a dead server.)
        let mut stream = &conn.stream;
        match self
            .server
            .flush(id, now, |lines| stream.write_vectored(lines))
        {
            Ok(Flushed::All | Flushed::Partly) => self.touched.push(id),
            Err(err) => {
                log::debug!("client {id}: {err}");
                self.finish(id, now);
            }
        }
    }

    /// Registers client `id` for what it needs now: reading while the server takes its input,
    /// writing only while it is owed bytes. Most of the time nothing changes: no system call.
    fn watch(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let owed = self.server.owed(id);
        let wanted = if self.server.reading(id) { READ } else { 0 } | if owed { WRITE } else { 0 };
        if wanted == conn.interest {
            return;
        }
        match self.epoll.modify(conn.stream.as_raw_fd(), id.0, wanted) {
            Ok(()) => conn.interest = wanted,
            Err(err) => {
                log::debug!("client {id}: {err}");
                self.finish(id, now);
            }
        }
    }
    // ANCHOR_END: flush

    /// Everything owed is written and the server is done with the client: end our side of
    /// the stream, and keep reading until the client ends its side. Closing now, with its
    /// bytes unread, would make the kernel answer with a reset.
    // ANCHOR: hang_up
    fn hang_up(&mut self, id: ClientId, now: Instant) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        if let Err(err) = conn.stream.shutdown(Direction::Write) {
            log::debug!("client {id}: {err}");
            return self.finish(id, now);
        }
        self.touched.push(id);
    }
    // ANCHOR_END: hang_up

    /// The connection failed: close the socket and tell the server it is gone.
    fn finish(&mut self, id: ClientId, now: Instant) {
        if self.conns.remove(&id).is_some() {
            log::debug!("client {id} closed");
        }
        self.server.closed(id, now);
    }

    /// SIGINT/SIGTERM: stop accepting and let the server say goodbye to everybody; the loop
    /// ends once it has closed them all (within its shutdown grace).
    // ANCHOR: shutdown
    fn begin_shutdown(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        log::info!("shutting down ({} clients)", self.conns.len());
        self.stopping = true;
        // The shutdown descriptor is never read, so it stays readable: stop watching it, or
        // level-triggered epoll would report it on every call. Same for the listener.
        let _ = self.epoll.delete(self.shutdown.fd());
        if self.accept_paused_until.take().is_none() {
            let _ = self.epoll.delete(self.listener.as_raw_fd());
        }
        self.server.shutdown(now);
    }
    // ANCHOR_END: shutdown
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// The first `n` events of a `wait`, as (token, flags) pairs.
    fn ready(epoll: &Epoll, timeout: Duration) -> Vec<(u64, u32)> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 8];
        let n = epoll.wait(&mut events, Some(timeout)).expect("epoll_wait");
        events[..n]
            .iter()
            .map(|e| {
                let libc::epoll_event { events, u64 } = *e;
                (u64, events)
            })
            .collect()
    }

    #[test]
    fn epoll_reports_ready_descriptors_with_their_tokens() {
        let epoll = Epoll::new().expect("epoll_create1");
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        epoll.add(a.as_raw_fd(), 42, READ).expect("add");
        // Nothing to read yet: the wait times out with nothing ready.
        assert!(ready(&epoll, Duration::from_millis(1)).is_empty());
        b.write_all(b"x").expect("write");
        assert_eq!(ready(&epoll, Duration::from_secs(5)), vec![(42, READ)]);
        // Level-triggered: still unread, so still reported.
        assert_eq!(ready(&epoll, Duration::from_secs(5)), vec![(42, READ)]);
        // Asking for writability too: an empty send buffer is writable at once.
        epoll
            .modify(a.as_raw_fd(), 7, READ | WRITE)
            .expect("modify");
        assert_eq!(
            ready(&epoll, Duration::from_secs(5)),
            vec![(7, READ | WRITE)]
        );
        epoll.delete(a.as_raw_fd()).expect("delete");
        assert!(ready(&epoll, Duration::from_millis(1)).is_empty());
    }

    #[test]
    fn a_hang_up_is_reported_without_being_asked_for() {
        let epoll = Epoll::new().expect("epoll_create1");
        let (a, b) = UnixStream::pair().expect("socketpair");
        epoll.add(a.as_raw_fd(), 1, WRITE).expect("add");
        drop(b);
        let events = ready(&epoll, Duration::from_secs(5));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, 1);
        assert_ne!(events[0].1 & HANGUP, 0, "flags {:#x}", events[0].1);
    }
}
