//! # Stage 04: one thread, many sockets, `select(2)`
//!
//! Stages 01–03 gave every client something that *blocks* — a thread stuck in `read`. This
//! stage turns that around: every socket is non-blocking, and one thread asks the kernel a
//! single question, "which of these descriptors can I read or write without waiting?", then
//! does exactly that work and asks again. That question is `select(2)`, the oldest answer to
//! it (4.2BSD, 1983), called here through `libc` with its whole ritual: `fd_set`, `FD_ZERO`,
//! `FD_SET`, `FD_ISSET`.
//!
//! ```text
//! cargo run --release -p chat-select
//! nc 127.0.0.1 7878      # in two or more terminals: everybody chats at once, on one thread
//! ```
//!
//! The protocol itself is `chat_core::Server` (sans-IO): this file only moves bytes, passes
//! the time in, and carries out what the server asks. One 64 KiB read buffer serves every
//! client; per client we keep a socket and its id. Which clients to watch is asked afresh
//! before every call, from the server: for reading, those whose input it takes
//! ([`chat_core::Server::reading`]); for writing, those it says are owed bytes.
//!
//! ## Where it stops
//!
//! An `fd_set` is a bitmap of [`libc::FD_SETSIZE`] (1024) bits, indexed by descriptor
//! *number*. A descriptor numbered 1024 or more cannot be put in one: C's `FD_SET` macro
//! would write past the end of the bitmap (memory corruption; Rust's `libc` panics instead).
//! So this stage holds at most [`SELECT_MAX_CLIENTS`] clients, leaving room below 1024 for
//! stdio, the listener and the shutdown pipe, answers `! server full` beyond that, and caps a
//! larger `--max-clients` with a warning. It also refuses any accepted descriptor numbered
//! 1024 or more, whatever the count says.
//!
//! And every call costs O(n) in the number of *watched* descriptors, not ready ones: we
//! rebuild both sets (select overwrites them), the kernel copies them in, checks every
//! descriptor and copies them back out, and we scan them again to find the ready ones.

use std::io::{self, Read as _, Write as _};
use std::mem;
use std::net::{Shutdown as Direction, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Server};
use chat_net::{AcceptError, Config, Shutdown};

/// The most clients this stage holds: below `FD_SETSIZE` (1024), with room for stdin,
/// stdout, stderr, the listener and the shutdown pipe's descriptors.
pub const SELECT_MAX_CLIENTS: usize = 1000;

/// The one read buffer of the whole server. Big, so that a client that sent many lines is
/// handled with one `read`; shared, so that an idle client costs no buffer at all.
pub const READ_BUF: usize = 64 * 1024;

// ANCHOR: fd_set
/// A set of descriptors for `select`: a fixed bitmap of `FD_SETSIZE` bits, on the stack, and
/// how much of it is in use.
struct FdSet {
    /// The bitmap the kernel reads and writes.
    bits: libc::fd_set,
    /// One more than the highest descriptor inserted since the last clear: the bits `select`
    /// must look at. At most `FD_SETSIZE`, because [`FdSet::insert`] refuses any descriptor
    /// that would take it further, and nothing else changes it.
    nfds: usize,
}

impl FdSet {
    /// An empty set.
    fn new() -> Self {
        // SAFETY: `fd_set` is a plain array of integers, for which all-zero bits is a valid
        // value: the empty set, exactly what FD_ZERO writes.
        let bits = unsafe { mem::zeroed() };
        Self { bits, nfds: 0 }
    }

    /// Empties the set. `select` overwrites the sets it is given (in: "watch these", out:
    /// "these are ready"), so they are rebuilt before every call.
    fn clear(&mut self) {
        // SAFETY: the pointer comes from a live `&mut fd_set`.
        unsafe { libc::FD_ZERO(&mut self.bits) };
        self.nfds = 0;
    }

    /// Adds `fd`. The caller checked [`fits_fd_set`]: this is the wall of the chapter.
    fn insert(&mut self, fd: RawFd) {
        assert!(fits_fd_set(fd), "descriptor {fd} does not fit in an fd_set");
        // SAFETY: the pointer comes from a live `&mut fd_set`, and `fd` is in 0..FD_SETSIZE
        // (asserted just above), so the bit FD_SET writes is inside the bitmap.
        unsafe { libc::FD_SET(fd, &mut self.bits) };
        self.nfds = self.nfds.max(fd as usize + 1);
    }

    /// True when `fd` is in the set (after `select`: when it is ready).
    fn contains(&self, fd: RawFd) -> bool {
        if !fits_fd_set(fd) {
            return false;
        }
        // SAFETY: the pointer comes from a live `&fd_set`, and `fd` is in 0..FD_SETSIZE
        // (checked just above), so FD_ISSET reads inside the bitmap.
        unsafe { libc::FD_ISSET(fd, &self.bits) }
    }

    /// The descriptors in the set, lowest first. `select` says only *how many* are ready, so
    /// finding them means testing every bit that was watched.
    fn iter(&self) -> impl Iterator<Item = RawFd> + '_ {
        (0..self.nfds as RawFd).filter(|&fd| self.contains(fd))
    }
}

/// True when descriptor `fd` can be watched with `select` at all.
pub fn fits_fd_set(fd: RawFd) -> bool {
    usize::try_from(fd).is_ok_and(|fd| fd < libc::FD_SETSIZE)
}
// ANCHOR_END: fd_set

// ANCHOR: select_call
/// Waits until a descriptor of `read` is readable or one of `write` is writable, or until
/// `timeout` passes (`None`: no timeout). On return the sets hold only the ready descriptors.
fn select(read: &mut FdSet, write: &mut FdSet, timeout: Option<Duration>) -> io::Result<usize> {
    // The kernel looks at this many bits of each set: the highest descriptor inserted, + 1.
    let nfds = read.nfds.max(write.nfds);
    let mut tv = timeout.map(|t| libc::timeval {
        tv_sec: t.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: t.subsec_micros().into(),
    });
    let tv_ptr = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
    // SAFETY: both set pointers come from live `&mut fd_set`s and the timeout pointer is null
    // or points to a live `timeval`. `nfds` is at most FD_SETSIZE (an `FdSet` never counts
    // more: see its `nfds`), so the kernel reads and writes only bits inside both bitmaps.
    let ready = unsafe {
        libc::select(
            nfds as libc::c_int,
            &mut read.bits,
            &mut write.bits,
            std::ptr::null_mut(),
            tv_ptr,
        )
    };
    usize::try_from(ready).map_err(|_| io::Error::last_os_error())
}
// ANCHOR_END: select_call

/// Serves every client from this one thread until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let mut limits = config.limits();
    if limits.max_clients > SELECT_MAX_CLIENTS {
        log::warn!(
            "select() watches descriptors below FD_SETSIZE ({}) only: \
             --max-clients {} capped to {SELECT_MAX_CLIENTS}",
            libc::FD_SETSIZE,
            limits.max_clients
        );
        limits.max_clients = SELECT_MAX_CLIENTS;
    }
    // Never block: `accept` on a listener with nothing pending must say so (EWOULDBLOCK),
    // not sleep, or every other client would wait with it.
    listener.set_nonblocking(true)?;
    let mut event_loop = EventLoop {
        listener,
        shutdown,
        server: Server::new(limits),
        slots: (0..libc::FD_SETSIZE).map(|_| None).collect(),
        fds: IdMap::default(),
        buf: vec![0; READ_BUF],
        dirty: Vec::new(),
        accept_paused_until: None,
        stopping: false,
    };
    event_loop.run()
}
// ANCHOR_END: run

/// One client's socket, as the loop sees it. Everything else about the client (what it is
/// owed, whether its input waits, whether it is closing) is the server's.
#[derive(Debug)]
struct Conn {
    /// The non-blocking socket.
    stream: TcpStream,
    /// Who this is for `chat_core::Server`.
    id: ClientId,
    /// A read returned 0: the client ended its stream. The end of a stream stays readable
    /// for ever, so level-triggered `select` would report it on every call while the server
    /// still writes the client's last lines: it leaves the read set for good.
    ended: bool,
}

/// Everything the single thread owns.
#[derive(Debug)]
struct EventLoop {
    /// The listening socket, non-blocking.
    listener: TcpListener,
    /// Readable once SIGINT/SIGTERM arrived.
    shutdown: Shutdown,
    /// The protocol: hub, framers, outboxes, flow control, timers.
    server: Server,
    /// Clients by descriptor number (`FD_SETSIZE` slots): fd_sets speak in descriptor numbers.
    slots: Vec<Option<Conn>>,
    /// Client id → descriptor, for the server's events, which speak in client ids.
    fds: IdMap<RawFd>,
    /// The shared read buffer.
    buf: Vec<u8>,
    /// Clients to write to at the end of this iteration.
    dirty: Vec<ClientId>,
    /// After EMFILE & co., the listener is not watched until then.
    accept_paused_until: Option<Instant>,
    /// SIGINT/SIGTERM arrived: the loop ends when the server has closed every client.
    stopping: bool,
}

impl EventLoop {
    /// The loop: build the sets, `select`, scan the sets, do the work, repeat.
    // ANCHOR: event_loop
    fn run(&mut self) -> io::Result<()> {
        let (mut readable, mut writable) = (FdSet::new(), FdSet::new());
        while !self.server.is_stopped() {
            // 1. What to wait for, asked afresh: O(n), every client, every time.
            let now = Instant::now();
            self.fill(&mut readable, &mut writable, now);

            // 2. Sleep in the kernel until something is ready or the next deadline.
            match select(&mut readable, &mut writable, self.timeout(now)) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }

            // 3. Which ones? select only says how many: scan every watched descriptor again.
            let now = Instant::now();
            for fd in readable.iter() {
                if fd == self.shutdown.fd() {
                    self.begin_shutdown(now);
                } else if fd == self.listener.as_raw_fd() {
                    if !self.stopping {
                        self.accept_all(now);
                    }
                } else {
                    self.on_readable(fd, now);
                }
            }
            for fd in writable.iter() {
                self.dirty.extend(self.client_at(fd));
            }
            self.server.handle_timeout(now);

            // 4. Deliver what all of that produced.
            self.settle(now);
        }
        Ok(())
    }
    // ANCHOR_END: event_loop

    /// Builds the sets for the next `select`: the shutdown descriptor and the listener unless
    /// we are stopping (or accepting is paused); a client for reading while the server takes
    /// its input, for writing while it is owed bytes its socket did not take.
    // ANCHOR: fill
    fn fill(&mut self, readable: &mut FdSet, writable: &mut FdSet, now: Instant) {
        readable.clear();
        writable.clear();
        if !self.stopping {
            readable.insert(self.shutdown.fd());
            if self.accepting(now) {
                readable.insert(self.listener.as_raw_fd());
            }
        }
        for conn in self.slots.iter().flatten() {
            let fd = conn.stream.as_raw_fd();
            // Not while its input waits for room: level-triggered, select would report its
            // unread bytes on every call, and we would spin without reading them. Nor once
            // its stream has ended: there is nothing left to read.
            if self.server.reading(conn.id) && !conn.ended {
                readable.insert(fd);
            }
            if self.server.outbox(conn.id).is_some_and(|o| !o.is_empty()) {
                writable.insert(fd);
            }
        }
    }
    // ANCHOR_END: fill

    /// The client at descriptor `fd`, if `fd` is a client's.
    fn client_at(&self, fd: RawFd) -> Option<ClientId> {
        let slot = self.slots.get(usize::try_from(fd).ok()?)?;
        slot.as_ref().map(|conn| conn.id)
    }

    /// True when the listener should be watched; ends an accept pause that is over.
    fn accepting(&mut self, now: Instant) -> bool {
        match self.accept_paused_until {
            Some(until) if now < until => false,
            _ => {
                self.accept_paused_until = None;
                true
            }
        }
    }

    /// How long `select` may sleep: until the server's next deadline (a slow consumer's
    /// grace, a closing client's) or the end of an accept pause, or for ever if none is set.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let next = self
            .accept_paused_until
            .into_iter()
            .chain(self.server.poll_timeout());
        next.min().map(|at| at.saturating_duration_since(now))
    }

    /// The listener is readable: accept every pending connection, until `EWOULDBLOCK`.
    /// Level-triggered `select` would tell us again anyway, but one call per connection
    /// would rebuild and scan every set once per connection during a burst.
    // ANCHOR: accept_loop
    fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if chat_net::classify_accept_error(&err) == AcceptError::Retry => {}
                Err(_) => {
                    // Out of descriptors: the pending connection stays pending, so the
                    // listener stays readable. Watching it now would wake us at once, forever:
                    // leave it out of the sets, and let select's timeout end the pause.
                    self.accept_paused_until = Some(now + chat_net::ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }
    // ANCHOR_END: accept_loop

    /// A new connection: refuse it (too many clients, or a descriptor select cannot watch)
    /// or welcome it.
    // ANCHOR: admit
    fn admit(&mut self, stream: TcpStream, now: Instant) {
        let fd = stream.as_raw_fd();
        if !fits_fd_set(fd) {
            log::warn!("descriptor {fd} is beyond FD_SETSIZE; refusing a client");
            chat_net::refuse(stream);
            return;
        }
        if let Err(err) = stream.set_nonblocking(true) {
            log::debug!("new connection: {err}");
            return;
        }
        let _ = stream.set_nodelay(true); // no Nagle delay on short lines, as in every stage
        let Ok(id) = self.server.connect(now) else {
            chat_net::refuse(stream); // `! server full`: a fresh socket takes 14 bytes
            return;
        };
        log::debug!("client {id} on descriptor {fd}");
        self.fds.insert(id, fd);
        self.slots[fd as usize] = Some(Conn {
            stream,
            id,
            ended: false,
        });
    }
    // ANCHOR_END: admit

    /// A client's socket is readable: one `read` into the shared buffer, then the protocol.
    /// One read per wake-up is fair: a client that sent more than 64 KiB is still readable
    /// next time, after everybody else had their turn.
    // ANCHOR: on_readable
    fn on_readable(&mut self, fd: RawFd, now: Instant) {
        let Some(Some(conn)) = self.slots.get_mut(fd as usize) else {
            return; // closed earlier in this iteration
        };
        let id = conn.id;
        match (&conn.stream).read(&mut self.buf) {
            // It ended its stream (a half-close, perhaps): a normal goodbye. The server still
            // handles what came before, writes every reply, then says when to close.
            Ok(0) => {
                conn.ended = true;
                self.server.eof(id, now);
            }
            Ok(n) => self.server.receive(id, &self.buf[..n], now),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                log::debug!("client {id}: {err}");
                self.finish(id, now);
            }
        }
    }
    // ANCHOR_END: on_readable

    /// Carries out the server's events. Flushing waits until every ready socket of this
    /// iteration was read: if three senders wrote to a room, each member gets all three lines
    /// in one `writev` instead of three writes. Writing may let waiting senders go on (more
    /// events), hence the loop.
    // ANCHOR: settle
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(event) = self.server.poll_event() {
                match event {
                    Event::Flush(id) => self.dirty.push(id),
                    // Nothing to do: the sets are rebuilt from `Server::reading` before every
                    // call, so the next `select` watches it for reading again.
                    Event::Resume(_) => {}
                    Event::Hangup(id) => self.hang_up(id, now),
                    Event::Close(id) => self.close(id),
                }
            }
            let batch = mem::take(&mut self.dirty);
            if batch.is_empty() {
                return;
            }
            for &id in &batch {
                self.flush(id, now);
            }
        }
    }
    // ANCHOR_END: settle

    /// Writes what client `id` is owed, as far as its socket takes it, many lines per
    /// `writev` (the server's one write path, [`chat_core::Server::flush`]). What the socket
    /// did not take stays owed, and puts the client in the next write set.
    // ANCHOR: flush
    fn flush(&mut self, id: ClientId, now: Instant) {
        let Some(&fd) = self.fds.get(&id) else {
            return; // closed earlier in this iteration
        };
        let Some(Some(conn)) = self.slots.get(fd as usize) else {
            return;
        };
        // `write_vectored` is `writev(2)`. (A Rust program starts with SIGPIPE ignored, so
        // writing to a connection the peer closed is an EPIPE error here, not a dead server.)
        let mut stream = &conn.stream;
        if let Err(err) = self
            .server
            .flush(id, now, |lines| stream.write_vectored(lines))
        {
            log::debug!("client {id}: {err}");
            self.finish(id, now);
        }
    }
    // ANCHOR_END: flush

    /// Everything owed is written and the server is done with the client: send our end of
    /// the stream (FIN) and go on reading, and ignoring, what it sends until it ends its own.
    /// Closing now, with its bytes unread, would make the kernel answer with a reset. It
    /// stays in the read set: `Server::reading` is true for a client being closed.
    // ANCHOR: hang_up
    fn hang_up(&mut self, id: ClientId, now: Instant) {
        let Some(&fd) = self.fds.get(&id) else {
            return;
        };
        let Some(Some(conn)) = self.slots.get(fd as usize) else {
            return;
        };
        if let Err(err) = conn.stream.shutdown(Direction::Write) {
            log::debug!("client {id}: {err}");
            self.finish(id, now);
        }
    }
    // ANCHOR_END: hang_up

    /// Closes client `id`'s socket (the server said so, or it failed).
    fn close(&mut self, id: ClientId) {
        if let Some(fd) = self.fds.remove(&id) {
            self.slots[fd as usize] = None; // dropping the stream closes the descriptor
            log::debug!("client {id} closed");
        }
    }

    /// The connection failed: close it and tell the server, whose room hears that it left.
    fn finish(&mut self, id: ClientId, now: Instant) {
        self.close(id);
        self.server.closed(id, now);
    }

    /// SIGINT/SIGTERM: stop accepting (the listener and the shutdown descriptor leave the
    /// sets) and let the server say goodbye to everybody; the loop ends once it has closed
    /// them all, within its shutdown grace.
    // ANCHOR: shutdown
    fn begin_shutdown(&mut self, now: Instant) {
        log::info!("shutting down ({} clients)", self.fds.len());
        self.stopping = true;
        self.accept_paused_until = None; // no accepting to resume: no deadline to wake for
        self.server.shutdown(now);
    }
    // ANCHOR_END: shutdown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptors_below_fd_setsize_fit() {
        assert!(fits_fd_set(0));
        assert!(fits_fd_set(1023));
        assert!(!fits_fd_set(1024));
        assert!(!fits_fd_set(-1));
    }

    #[test]
    fn fd_set_holds_what_was_inserted_until_cleared() {
        let mut set = FdSet::new();
        set.insert(3);
        set.insert(1023);
        assert!(set.contains(3) && set.contains(1023));
        assert!(!set.contains(4) && !set.contains(1024));
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![3, 1023]);
        set.clear();
        assert!(!set.contains(3) && !set.contains(1023));
        assert_eq!(set.iter().count(), 0);
    }

    #[test]
    fn nfds_follows_what_was_inserted_and_never_passes_fd_setsize() {
        let mut set = FdSet::new();
        assert_eq!(set.nfds, 0);
        set.insert(7);
        set.insert(2);
        assert_eq!(set.nfds, 8);
        set.insert(1023);
        assert_eq!(set.nfds, libc::FD_SETSIZE);
        set.clear();
        assert_eq!(set.nfds, 0);
    }

    #[test]
    #[should_panic(expected = "does not fit in an fd_set")]
    fn inserting_beyond_fd_setsize_panics_instead_of_corrupting_memory() {
        FdSet::new().insert(1024);
    }

    #[test]
    fn select_reports_what_is_ready() {
        use std::os::unix::net::UnixStream;
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let (mut read, mut write) = (FdSet::new(), FdSet::new());
        read.insert(a.as_raw_fd());
        let timeout = Some(Duration::from_millis(1));
        assert_eq!(select(&mut read, &mut write, timeout).expect("select"), 0);
        b.write_all(b"x").expect("write");
        read.clear();
        read.insert(a.as_raw_fd());
        let timeout = Some(Duration::from_secs(5));
        assert_eq!(select(&mut read, &mut write, timeout).expect("select"), 1);
        assert_eq!(read.iter().collect::<Vec<_>>(), vec![a.as_raw_fd()]);
    }
}
