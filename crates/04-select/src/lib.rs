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
//! The protocol itself is `chat_core::Server` (sans-IO): this file only moves bytes. One
//! 64 KiB read buffer serves every client; per client we keep a socket and a few flags.
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

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::mem;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Outbox, Server};
use chat_net::{AcceptError, Config, Shutdown};

/// The most clients this stage holds: below `FD_SETSIZE` (1024), with room for stdin,
/// stdout, stderr, the listener and the shutdown pipe's descriptors.
pub const SELECT_MAX_CLIENTS: usize = 1000;

/// The one read buffer of the whole server. Big, so that a client that sent many lines is
/// handled with one `read`; shared, so that an idle client costs no buffer at all.
pub const READ_BUF: usize = 64 * 1024;

/// At most this many queued lines go into one `writev`.
const MAX_IOV: usize = 64;

/// After SIGINT/SIGTERM, how long clients get to take their last bytes before we close them
/// regardless.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a closing client (`/quit`) may take to read the lines it is still owed, before its
/// socket is closed anyway: a client that never reads must not keep its descriptor (one of
/// only 1000) and its outbox forever.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

// ANCHOR: fd_set
/// A set of descriptors for `select`: a fixed bitmap of `FD_SETSIZE` bits, on the stack.
struct FdSet(libc::fd_set);

impl FdSet {
    /// An empty set.
    fn new() -> Self {
        // SAFETY: `fd_set` is a plain array of integers, for which all-zero bits is a valid
        // value: the empty set, exactly what FD_ZERO writes.
        Self(unsafe { mem::zeroed() })
    }

    /// Empties the set. `select` overwrites the sets it is given (in: "watch these", out:
    /// "these are ready"), so they are rebuilt before every call.
    fn clear(&mut self) {
        // SAFETY: the pointer comes from a live `&mut fd_set`.
        unsafe { libc::FD_ZERO(&mut self.0) }
    }

    /// Adds `fd`. The caller checked [`fits_fd_set`]: this is the wall of the chapter.
    fn insert(&mut self, fd: RawFd) {
        assert!(fits_fd_set(fd), "descriptor {fd} does not fit in an fd_set");
        // SAFETY: the pointer comes from a live `&mut fd_set`, and `fd` is in 0..FD_SETSIZE,
        // so the bit FD_SET writes is inside the bitmap.
        unsafe { libc::FD_SET(fd, &mut self.0) }
    }

    /// True when `fd` is in the set (after `select`: when it is ready).
    fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: the pointer comes from a live `&fd_set`; the bound was checked first, so
        // FD_ISSET reads inside the bitmap.
        fits_fd_set(fd) && unsafe { libc::FD_ISSET(fd, &self.0) }
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
fn select(
    max_fd: RawFd,
    read: &mut FdSet,
    write: &mut FdSet,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let mut tv = timeout.map(|t| libc::timeval {
        tv_sec: t.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: t.subsec_micros().into(),
    });
    let tv_ptr = tv
        .as_mut()
        .map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
    // SAFETY: both set pointers come from live `&mut fd_set`s and the timeout pointer is null
    // or points to a live `timeval`; `max_fd + 1` <= FD_SETSIZE because every descriptor in
    // the sets went through `FdSet::insert`, so the kernel reads and writes inside them.
    let ready = unsafe {
        libc::select(
            max_fd + 1,
            &mut read.0,
            &mut write.0,
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
        closing: Vec::new(),
        lingering: VecDeque::new(),
        accept_paused_until: None,
        stop_deadline: None,
    };
    event_loop.run()
}
// ANCHOR_END: run

/// One client's socket, as the loop sees it.
#[derive(Debug)]
struct Conn {
    /// The non-blocking socket.
    stream: TcpStream,
    /// Who this is for `chat_core::Server`.
    id: ClientId,
    /// Its outbox holds bytes the socket did not take yet: watch it for writability.
    want_write: bool,
    /// The server closes it (`/quit`, slow consumer, shutdown): read no more, write what is
    /// left, then close.
    closing: bool,
}

/// Everything the single thread owns.
#[derive(Debug)]
struct EventLoop {
    /// The listening socket, non-blocking.
    listener: TcpListener,
    /// Readable once SIGINT/SIGTERM arrived.
    shutdown: Shutdown,
    /// The protocol: hub, framers, outboxes.
    server: Server,
    /// Clients by descriptor number (`FD_SETSIZE` slots): fd_sets speak in descriptor numbers.
    slots: Vec<Option<Conn>>,
    /// Client id → descriptor, for the server's events, which speak in client ids.
    fds: IdMap<RawFd>,
    /// The shared read buffer.
    buf: Vec<u8>,
    /// Clients to write to at the end of this iteration.
    dirty: Vec<ClientId>,
    /// Clients the server wants closed, handled at the end of this iteration.
    closing: Vec<ClientId>,
    /// Closing clients whose last bytes are not written yet, with the instant they will be
    /// closed regardless. Oldest first: every entry gets the same [`CLOSE_LINGER`].
    lingering: VecDeque<(Instant, ClientId)>,
    /// After EMFILE & co., the listener is not watched until then.
    accept_paused_until: Option<Instant>,
    /// Set once shutting down: the loop ends when every client is gone or at this instant.
    stop_deadline: Option<Instant>,
}

impl EventLoop {
    /// The loop: build the sets, `select`, scan the sets, do the work, repeat.
    // ANCHOR: event_loop
    fn run(&mut self) -> io::Result<()> {
        let (mut readable, mut writable) = (FdSet::new(), FdSet::new());
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.stop_deadline {
                if self.fds.is_empty() || now >= deadline {
                    break;
                }
            }
            self.expire_lingering(now);
            // 1. What to wait for. O(n): every client, every time.
            readable.clear();
            writable.clear();
            let (listener, shutdown) = (self.listener.as_raw_fd(), self.shutdown.fd());
            let mut max_fd = listener.max(shutdown);
            if self.stop_deadline.is_none() {
                readable.insert(shutdown);
            }
            if self.accepting(now) {
                readable.insert(listener);
            }
            for conn in self.slots.iter().flatten() {
                let fd = conn.stream.as_raw_fd();
                if !conn.closing {
                    readable.insert(fd);
                }
                if conn.want_write {
                    writable.insert(fd);
                }
                max_fd = max_fd.max(fd);
            }

            // 2. Sleep in the kernel until something is ready (or a timer is due).
            match select(max_fd, &mut readable, &mut writable, self.timeout(now)) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }

            // 3. Which ones? select only says how many: scan every watched descriptor again.
            if readable.contains(shutdown) {
                self.begin_shutdown();
            }
            if readable.contains(listener) && self.stop_deadline.is_none() {
                self.accept_all();
            }
            for fd in 0..=max_fd {
                let Some(id) = self.client_at(fd) else {
                    continue;
                };
                if readable.contains(fd) {
                    self.on_readable(fd);
                }
                if writable.contains(fd) {
                    self.dirty.push(id);
                }
            }

            // 4. Deliver what all of that produced.
            self.settle();
        }
        if !self.fds.is_empty() {
            log::warn!(
                "closing {} clients that did not take their last bytes",
                self.fds.len()
            );
        }
        Ok(())
    }
    // ANCHOR_END: event_loop

    /// The client at descriptor `fd`, if `fd` is a client's.
    fn client_at(&self, fd: RawFd) -> Option<ClientId> {
        let slot = self.slots.get(usize::try_from(fd).ok()?)?;
        slot.as_ref().map(|conn| conn.id)
    }

    /// True when the listener should be watched; ends an accept pause that is over.
    fn accepting(&mut self, now: Instant) -> bool {
        if self.stop_deadline.is_some() {
            return false;
        }
        match self.accept_paused_until {
            Some(until) if now < until => false,
            _ => {
                self.accept_paused_until = None;
                true
            }
        }
    }

    /// How long `select` may sleep: until the next timer (the accept pause, the oldest
    /// lingering close, the shutdown grace), or for ever if none is set.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let linger = self.lingering.front().map(|&(at, _)| at);
        [self.accept_paused_until, linger, self.stop_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// The listener is readable: accept every pending connection, until `EWOULDBLOCK`.
    /// Level-triggered `select` would tell us again anyway, but one call per connection
    /// would rebuild and scan every set once per connection during a burst.
    // ANCHOR: accept_loop
    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => match chat_net::classify_accept_error(&err) {
                    AcceptError::Retry => continue,
                    AcceptError::Backoff => {
                        // Out of descriptors: the pending connection stays pending, so the
                        // listener stays readable. Watching it now would wake us at once,
                        // forever: stop watching it, and let select's timeout end the pause.
                        self.accept_paused_until = Some(Instant::now() + chat_net::ACCEPT_BACKOFF);
                        return;
                    }
                },
            }
        }
    }
    // ANCHOR_END: accept_loop

    /// A new connection: refuse it (too many clients, or a descriptor select cannot watch)
    /// or welcome it.
    // ANCHOR: admit
    fn admit(&mut self, stream: TcpStream) {
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
        let Ok(id) = self.server.connect() else {
            chat_net::refuse(stream); // `! server full`: a fresh socket takes 14 bytes
            return;
        };
        log::debug!("client {id} on descriptor {fd}");
        self.fds.insert(id, fd);
        self.slots[fd as usize] = Some(Conn {
            stream,
            id,
            want_write: false,
            closing: false,
        });
    }
    // ANCHOR_END: admit

    /// A client's socket is readable: one `read` into the shared buffer, then the protocol.
    /// One read per wake-up is fair: a client that sent more than 64 KiB is still readable
    /// next time, after everybody else had their turn.
    // ANCHOR: on_readable
    fn on_readable(&mut self, fd: RawFd) {
        let Some(Some(conn)) = self.slots.get(fd as usize) else {
            return;
        };
        let id = conn.id;
        match (&conn.stream).read(&mut self.buf) {
            Ok(0) => self.finish(id), // the client closed its end
            Ok(n) => self.server.receive(id, &self.buf[..n]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(err) => {
                log::debug!("client {id}: {err}");
                self.finish(id);
            }
        }
    }
    // ANCHOR_END: on_readable

    /// Carries out the server's events. Flushing waits until every ready socket of this
    /// iteration was read: if three senders wrote to a room, each member gets all three lines
    /// in one `writev` instead of three writes. Closing a client makes its room hear that it
    /// left (more events), hence the loop.
    // ANCHOR: settle
    fn settle(&mut self) {
        loop {
            while let Some(event) = self.server.poll_event() {
                match event {
                    Event::Flush(id) => self.dirty.push(id),
                    Event::Close(id) => self.closing.push(id),
                }
            }
            if self.dirty.is_empty() && self.closing.is_empty() {
                return;
            }
            let mut batch = mem::take(&mut self.dirty);
            for id in batch.drain(..) {
                self.flush(id);
            }
            self.dirty = batch; // keep the allocation for the next iteration
            let mut batch = mem::take(&mut self.closing);
            for id in batch.drain(..) {
                if let Some(conn) = self.conn_mut(id) {
                    conn.closing = true;
                }
                self.flush(id); // its last lines (`* bye`); closes it once they are out
                if self.fds.contains_key(&id) {
                    // The socket did not take them all: give it a little time, not forever.
                    self.lingering
                        .push_back((Instant::now() + CLOSE_LINGER, id));
                }
            }
            self.closing = batch;
        }
    }
    // ANCHOR_END: settle

    /// The connection of client `id`, if it is still open.
    fn conn_mut(&mut self, id: ClientId) -> Option<&mut Conn> {
        let fd = *self.fds.get(&id)?;
        self.slots.get_mut(fd as usize)?.as_mut()
    }

    /// Writes what client `id` is owed, as far as its socket takes it. What is left waits for
    /// writability; a closing client whose outbox is empty is closed.
    // ANCHOR: flush
    fn flush(&mut self, id: ClientId) {
        let Some(&fd) = self.fds.get(&id) else {
            return; // closed earlier in this iteration
        };
        let (Some(Some(conn)), Some(outbox)) =
            (self.slots.get_mut(fd as usize), self.server.outbox(id))
        else {
            return;
        };
        let result = write_outbox(&conn.stream, outbox);
        conn.want_write = !outbox.is_empty();
        let done = conn.closing && !conn.want_write;
        match result {
            Ok(()) if done => self.finish(id), // e.g. `* bye` is out
            Ok(()) => {}
            Err(err) => {
                log::debug!("client {id}: {err}");
                self.finish(id);
            }
        }
    }
    // ANCHOR_END: flush

    /// Closes the lingering clients whose time is up. (The others were closed by `flush` as
    /// soon as their last byte was written; their entries just expire here.)
    fn expire_lingering(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if self.fds.contains_key(&id) {
                log::debug!("client {id}: did not read its last lines in {CLOSE_LINGER:?}");
                self.finish(id);
            }
        }
        self.settle();
    }

    /// Closes client `id`'s socket and tells the server it is gone.
    fn finish(&mut self, id: ClientId) {
        if let Some(fd) = self.fds.remove(&id) {
            self.slots[fd as usize] = None; // dropping the stream closes the descriptor
            log::debug!("client {id} closed");
        }
        self.server.close(id);
    }

    /// SIGINT/SIGTERM: stop accepting, tell everybody, and give them [`SHUTDOWN_GRACE`] to
    /// take their last bytes.
    // ANCHOR: shutdown
    fn begin_shutdown(&mut self) {
        log::info!("shutting down ({} clients)", self.fds.len());
        self.stop_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        self.server.shutdown();
    }
    // ANCHOR_END: shutdown
}

/// Writes as much of `outbox` as the socket takes, many lines per `writev` system call.
/// `Ok` also when the socket's send buffer is full: the rest stays queued for later.
// ANCHOR: write_outbox
fn write_outbox(mut stream: &TcpStream, outbox: &mut Outbox) -> io::Result<()> {
    while !outbox.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let count = outbox.io_slices(&mut slices);
        let offered: usize = slices[..count].iter().map(|s| s.len()).sum();
        // `write_vectored` is `writev(2)`. (A Rust program starts with SIGPIPE ignored, so
        // writing to a connection the peer closed is an EPIPE error here, not a dead server.)
        let written = match stream.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        outbox.consume(written);
        if written < offered {
            return Ok(()); // the send buffer is full; wait for writability
        }
    }
    Ok(())
}
// ANCHOR_END: write_outbox

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
        set.clear();
        assert!(!set.contains(3) && !set.contains(1023));
    }

    #[test]
    #[should_panic(expected = "does not fit in an fd_set")]
    fn inserting_beyond_fd_setsize_panics_instead_of_corrupting_memory() {
        FdSet::new().insert(1024);
    }
}
