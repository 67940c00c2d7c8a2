//! # Stage 11: io_uring — completion instead of readiness
//!
//! Stages 04 to 10 all ask the kernel the same question: *which sockets are ready?* Then
//! they make one system call per read and per write on the ready ones. io_uring turns that
//! around. The program puts the operations it wants ("receive on this socket", "write these
//! lines to that one") in a ring of memory it shares with the kernel, the *submission
//! queue*, and later finds their results in a second ring, the *completion queue*. One
//! `io_uring_enter` system call submits everything queued since the last one and waits for
//! completions: this loop makes one per turn, however many clients it read from and wrote to.
//!
//! ```text
//! cargo run --release -p chat-io-uring
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! The rings are used through the `io-uring` crate (tokio-rs/io-uring), which maps them and
//! builds their entries, and nothing more: no runtime on top. The protocol is
//! `chat_core::Server`, as in every stage since 04. The parts:
//!
//! - [`ring`]: the instance, its setup (and a clear error when the kernel refuses), the one
//!   wait per turn, and what must happen before its memory can be freed;
//! - [`buffers`]: the provided-buffer ring every read draws from;
//! - this file: the loop, which knows every operation it has in the kernel.
//!
//! ## Choices this file makes
//!
//! - **Every operation in the kernel is owned by the loop.** A readiness loop owns nothing
//!   the kernel uses between two calls. Here a write's iovecs and the bytes they point to are
//!   the kernel's from submission to completion: each client's [`Write`] holds them, with a
//!   reference-counted handle on each queued line (no copy), and only the write's completion
//!   lets go of them.
//! - **Multishot accept**: one submission, one completion per connection, until the kernel
//!   ends it (`EMFILE`: we pause for `chat_net::ACCEPT_BACKOFF` and submit it again).
//! - **Reads select a provided buffer**: a read names a buffer *group*, not a buffer; the
//!   kernel takes one when data arrives. An idle client has a read in the kernel and no
//!   buffer. One read per client at a time, submitted only while `server.reading(id)`:
//!   that is how this loop stops reading a client whose input waits for room.
//! - **One write per client in the kernel at a time**, built from its outbox when the
//!   previous one completed; `server.consumed` is told what the kernel took.
//! - **A client that goes away** has its operations cancelled; its descriptor is closed
//!   (by the ring, too) once the last of them has completed, never before.
//! - **Sockets stay in blocking mode.** The kernel tries each operation without blocking
//!   and, when a socket is not ready, waits for it on its own; a non-blocking socket would
//!   make it hand `EAGAIN` back to us instead, and we would be polling again.

pub mod buffers;
pub mod ring;

use std::fmt;
use std::io;
use std::mem;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{Bytes, ClientId, Event, Server, WRITE_SLICES};
use chat_net::{AcceptError, Config, Shutdown};
use io_uring::types::{CancelBuilder, Fd};
use io_uring::{cqueue, opcode, squeue};

use buffers::GROUP;
use ring::{Ring, Stats, READ_BUFFER_SIZE};

// ANCHOR: op
/// What a completion is about. Every operation is submitted with one of these packed into
/// its 64-bit `user_data`, and its completion brings it back: the kind in the top byte, the
/// client id (never reused, so a late completion cannot reach a newer client) in the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The multishot accept on the listener: one completion per connection.
    Accept,
    /// The poll on the shutdown descriptor: completes on SIGINT/SIGTERM.
    Signal,
    /// A receive into a provided buffer.
    Read(ClientId),
    /// A `writev` of the client's queued lines.
    Write(ClientId),
    /// `shutdown(SHUT_WR)`: everything owed is written.
    Hangup(ClientId),
    /// Cancelling a client's operations, or the accept.
    Cancel,
    /// Closing a descriptor.
    Close,
}

/// Where the kind starts in `user_data`.
const KIND_SHIFT: u32 = 56;

impl Op {
    /// Packs the operation into a completion's `user_data`.
    pub fn encode(self) -> u64 {
        let (kind, id) = match self {
            Op::Accept => (1, 0),
            Op::Signal => (2, 0),
            Op::Read(id) => (3, id.0),
            Op::Write(id) => (4, id.0),
            Op::Hangup(id) => (5, id.0),
            Op::Cancel => (6, 0),
            Op::Close => (7, 0),
        };
        debug_assert!(id >> KIND_SHIFT == 0, "client id {id} too large");
        kind << KIND_SHIFT | id
    }

    /// Unpacks a completion's `user_data`.
    pub fn decode(user_data: u64) -> Option<Op> {
        let id = ClientId(user_data & ((1 << KIND_SHIFT) - 1));
        Some(match user_data >> KIND_SHIFT {
            1 => Op::Accept,
            2 => Op::Signal,
            3 => Op::Read(id),
            4 => Op::Write(id),
            5 => Op::Hangup(id),
            6 => Op::Cancel,
            7 => Op::Close,
            _ => return None,
        })
    }
}
// ANCHOR_END: op

/// Sets up a ring and lets it go: fails, with a one-line reason, on a kernel that cannot run
/// this stage. `main` calls it before it binds and announces anything.
pub fn probe() -> io::Result<()> {
    Ring::new().map(drop)
}

/// Serves every client from this one thread and one ring until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    let report = serve(Ring::new()?, listener, config, shutdown)?;
    log::info!(
        "io_uring: {}; {} reads found none of the {} read buffers free and were submitted again",
        report.stats,
        report.starved_reads,
        report.buffers
    );
    if report.buffers_in_ring != report.buffers || report.in_flight > 0 || report.conns > 0 {
        log::warn!("io_uring: left behind at exit: {report:?}");
    }
    Ok(())
}

/// [`run`] on a given ring, returning what it did (the tests look at it).
fn serve(
    ring: Ring,
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<Report> {
    let mut event_loop = EventLoop {
        ring,
        conns: IdMap::default(),
        listener,
        shutdown,
        server: Server::new(config.limits()),
        completions: Vec::new(),
        touched: Vec::new(),
        spare: Vec::new(),
        accepting: false,
        accept_paused_until: None,
        stopping: false,
        starved_reads: 0,
    };
    event_loop.run()?;
    Ok(event_loop.report())
}
// ANCHOR_END: run

/// What a finished loop leaves behind.
#[derive(Debug, Clone, Copy)]
struct Report {
    /// The ring's counts.
    stats: Stats,
    /// Provided buffers in all.
    buffers: usize,
    /// Provided buffers back in the ring at the end (all of them, or one leaked).
    buffers_in_ring: usize,
    /// Reads that completed with ENOBUFS (no provided buffer was free).
    starved_reads: u64,
    /// Operations still in flight at the end (none).
    in_flight: usize,
    /// Connections still known at the end (none).
    conns: usize,
}

// ANCHOR: write
/// A write the kernel is carrying out, and everything it reads from. From submission to
/// completion these are the kernel's: nothing here may be freed, moved or changed until the
/// completion arrives, and the borrow checker cannot see that (it saw only the submission,
/// which returned long ago). So the loop keeps them here, in the client's [`Conn`], and
/// takes them out only in the write's completion handler.
#[derive(Default)]
struct Write {
    /// The queued lines being written: clones of the outbox's handles (a reference count
    /// each, no copy), so the bytes stay alive even if the outbox lets go of them.
    chunks: Vec<Bytes>,
    /// One `iovec` per chunk, pointing into `chunks`. Only the `Vec`'s heap buffer is
    /// handed to the kernel, and it does not move when the `Write` does.
    iovecs: Vec<libc::iovec>,
}
// ANCHOR_END: write

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: usize = self.chunks.iter().map(Bytes::len).sum();
        f.debug_struct("Write")
            .field("lines", &self.chunks.len())
            .field("bytes", &bytes)
            .finish()
    }
}

// ANCHOR: conn
/// One client's socket, and what the kernel is doing with it.
#[derive(Debug)]
struct Conn {
    /// The socket (blocking mode: the kernel does the waiting).
    stream: TcpStream,
    /// A read is in the kernel.
    reading: bool,
    /// The write in the kernel, with its buffers.
    write: Option<Write>,
    /// A `shutdown(SHUT_WR)` is in the kernel.
    hanging_up: bool,
    /// The client ended its stream: nothing more to read.
    eof: bool,
    /// The connection is over: its operations are cancelled, and the descriptor is closed
    /// once the last of them has completed.
    over: bool,
}
// ANCHOR_END: conn

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            reading: false,
            write: None,
            hanging_up: false,
            eof: false,
            over: false,
        }
    }

    /// Whether the kernel still has an operation on this socket.
    fn busy(&self) -> bool {
        self.reading || self.write.is_some() || self.hanging_up
    }
}

/// Everything the single thread owns. `ring` comes first: it is dropped first, and its drop
/// waits for the kernel to let go of everything before the connections' buffers go.
#[derive(Debug)]
struct EventLoop {
    /// The rings, the provided buffers, the counts.
    ring: Ring,
    /// Every client socket, by client id, until its last completion.
    conns: IdMap<Conn>,
    /// The listening socket (blocking mode, like the clients').
    listener: TcpListener,
    /// Readable once SIGINT/SIGTERM arrived.
    shutdown: Shutdown,
    /// The protocol: hub, framers, outboxes, flow control, timers.
    server: Server,
    /// This turn's completions (kept to reuse the allocation).
    completions: Vec<cqueue::Entry>,
    /// Clients that may need a read or a write submitted.
    touched: Vec<ClientId>,
    /// Finished writes' vectors, emptied, to build the next writes without allocating.
    spare: Vec<Write>,
    /// The multishot accept is in the kernel.
    accepting: bool,
    /// After EMFILE & co., no accept until then.
    accept_paused_until: Option<Instant>,
    /// SIGINT/SIGTERM arrived.
    stopping: bool,
    /// Reads that found no free buffer (for the exit log: is [`ring::READ_BUFFERS`] enough?).
    starved_reads: u64,
}

impl EventLoop {
    /// The loop: one system call submits the turn's operations and waits; then every
    /// completion is handled; then the server's decisions become the next operations.
    // ANCHOR: event_loop
    fn run(&mut self) -> io::Result<()> {
        self.watch_signal();
        while !(self.server.is_stopped() && self.ring.in_flight() == 0) {
            let now = Instant::now();
            self.resume_accepting(now);

            // 1. The one system call of the turn: everything queued since the last one goes
            //    to the kernel, and we sleep until something completes or the next deadline.
            self.ring.enter(self.timeout(now))?;

            // 2. Handle what completed: bytes read, bytes written, connections accepted.
            let now = Instant::now();
            self.reap(now);
            self.server.handle_timeout(now);

            // 3. Turn what the server decided into operations, for the next submission.
            self.settle();
        }
        debug_assert!(self.conns.is_empty());
        Ok(())
    }
    // ANCHOR_END: event_loop

    /// How long the wait may sleep: until the server's next deadline or the end of an accept
    /// pause, or for ever if neither is set.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        [self.accept_paused_until, self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Hands every completion to its handler, by the operation its `user_data` names.
    // ANCHOR: reap
    fn reap(&mut self, now: Instant) {
        let mut completions = mem::take(&mut self.completions);
        self.ring.completions(&mut completions);
        for cqe in completions.drain(..) {
            let (result, flags) = (cqe.result(), cqe.flags());
            match Op::decode(cqe.user_data()) {
                Some(Op::Accept) => self.on_accept(result, flags, now),
                Some(Op::Signal) => self.on_signal(result, now),
                Some(Op::Read(id)) => self.on_read(id, result, flags, now),
                Some(Op::Write(id)) => self.on_write(id, result, now),
                Some(Op::Hangup(id)) => self.on_hangup(id, result, now),
                // Their targets' own completions say what happened.
                Some(Op::Cancel | Op::Close) => {}
                None => log::warn!("a completion nobody submitted: {cqe:?}"),
            }
        }
        self.completions = completions;
    }
    // ANCHOR_END: reap

    /// Submits the multishot accept, unless stopping, already submitted, or paused.
    // ANCHOR: accept
    fn resume_accepting(&mut self, now: Instant) {
        if self.stopping || self.accepting || self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        let accept = opcode::AcceptMulti::new(Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Op::Accept.encode());
        // SAFETY: a multishot accept points to no memory of ours (it is given no address
        // buffer); it only returns descriptors.
        unsafe { self.ring.push(accept) };
        self.accepting = true;
    }

    /// A connection (or an accept error). Without `MORE` the kernel has ended the multishot
    /// accept: it is submitted again at the top of the loop, after a pause if it must wait.
    fn on_accept(&mut self, result: i32, flags: u32, now: Instant) {
        if !cqueue::more(flags) {
            self.accepting = false;
        }
        if result >= 0 {
            // SAFETY: a successful accept's result is a new descriptor, given to us alone.
            let stream = unsafe { TcpStream::from_raw_fd(result) };
            return self.admit(stream, now);
        }
        if result == -libc::ECANCELED {
            return; // we cancelled it: stopping, or pausing
        }
        match chat_net::classify_accept_error(&io::Error::from_raw_os_error(-result)) {
            AcceptError::Retry => {}
            AcceptError::Backoff => {
                // Out of descriptors (EMFILE) or memory: the kernel ends the multishot accept
                // with the error, and submitting it again now would fail again now. Wait.
                self.accept_paused_until = Some(now + chat_net::ACCEPT_BACKOFF);
                if self.accepting {
                    self.cancel(CancelBuilder::user_data(Op::Accept.encode()));
                }
            }
        }
    }
    // ANCHOR_END: accept

    /// A new connection: refuse it (`! server full`) or welcome it, and read from it.
    fn admit(&mut self, stream: TcpStream, now: Instant) {
        let _ = stream.set_nodelay(true); // no Nagle delay on short lines, as in every stage
        let Ok(id) = self.server.connect(now) else {
            chat_net::refuse(stream); // a fresh socket takes these 14 bytes at once
            return;
        };
        log::debug!("client {id} on descriptor {}", stream.as_raw_fd());
        self.conns.insert(id, Conn::new(stream));
        self.touched.push(id);
    }

    /// A read completed: the bytes are in a provided buffer, which goes back to the ring as
    /// soon as the server has them.
    // ANCHOR: on_read
    fn on_read(&mut self, id: ClientId, result: i32, flags: u32, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // cannot happen: a connection outlives its operations
        };
        conn.reading = false;
        let over = conn.over;
        if let Some(bid) = cqueue::buffer_select(flags) {
            let server = &mut self.server;
            let len = usize::try_from(result).unwrap_or(0);
            let lent = self.ring.buffers().with_filled(bid, len, |bytes| {
                if !over && !bytes.is_empty() {
                    server.receive(id, bytes, now);
                }
            });
            if let Err(err) = lent {
                log::error!("client {id}: {err}");
            }
        } else if result > 0 {
            log::error!("client {id}: a read of {result} bytes named no buffer");
        }
        match result {
            1.. => self.touched.push(id), // read again, if the server still takes its input
            0 => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.eof = true;
                }
                if !over {
                    self.server.eof(id, now); // it ended its stream: a normal goodbye
                }
            }
            _ if result == -libc::ECANCELED => {} // we cancelled it: the client is over
            // No buffer was free (every buffer is back in the ring by the end of this turn),
            // or a signal interrupted it: read again.
            _ if [libc::ENOBUFS, libc::EINTR, libc::EAGAIN].contains(&-result) => {
                self.starved_reads += u64::from(result == -libc::ENOBUFS);
                self.touched.push(id);
            }
            _ => {
                log::debug!("client {id}: {}", io::Error::from_raw_os_error(-result));
                self.finish(id, now);
            }
        }
        self.close_if_over(id);
    }
    // ANCHOR_END: on_read

    /// A write completed: the kernel is done with its buffers, which are released here, and
    /// the server learns how much of the outbox it took.
    // ANCHOR: on_write
    fn on_write(&mut self, id: ClientId, result: i32, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // cannot happen: a connection outlives its operations
        };
        let over = conn.over;
        let Some(mut write) = conn.write.take() else {
            return;
        };
        let offered = write.iovecs.len();
        write.chunks.clear(); // the line handles go: the bytes may be freed now
        write.iovecs.clear();
        if self.spare.len() < 64 {
            self.spare.push(write);
        }
        match result {
            _ if over => {} // cancelled, or completed just before: it no longer matters
            1.. => {
                self.server.consumed(id, result as usize, now);
                self.touched.push(id); // the rest of the outbox, if any: the next write
            }
            0 if offered > 0 => {
                log::debug!("client {id}: wrote nothing");
                self.finish(id, now);
            }
            _ if [libc::EINTR, libc::EAGAIN].contains(&-result) => self.touched.push(id),
            _ => {
                log::debug!("client {id}: {}", io::Error::from_raw_os_error(-result));
                self.finish(id, now);
            }
        }
        self.close_if_over(id);
    }
    // ANCHOR_END: on_write

    /// The end of the sending side completed (or failed: the connection is gone).
    fn on_hangup(&mut self, id: ClientId, result: i32, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.hanging_up = false;
        if result < 0 && !conn.over {
            log::debug!("client {id}: {}", io::Error::from_raw_os_error(-result));
            self.finish(id, now);
        }
        self.close_if_over(id);
    }

    /// Carries out the server's events, then submits what the touched clients need. Ending
    /// a connection can produce more events (its room hears that it left), hence the loop.
    // ANCHOR: settle
    fn settle(&mut self) {
        loop {
            while let Some(event) = self.server.poll_event() {
                match event {
                    Event::Flush(id) | Event::Resume(id) => self.touched.push(id),
                    Event::Hangup(id) => self.hang_up(id),
                    Event::Close(id) => self.end(id), // the server has already forgotten it
                }
            }
            if self.touched.is_empty() {
                return;
            }
            let mut batch = mem::take(&mut self.touched);
            for id in batch.drain(..) {
                self.submit_io(id);
            }
            self.touched = batch; // keep the allocation for the next turn
        }
    }
    // ANCHOR_END: settle

    /// Submits what client `id` needs and does not have in the kernel yet: a read while the
    /// server takes its input, a write while it is owed bytes.
    // ANCHOR: submit_io
    fn submit_io(&mut self, id: ClientId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.over {
            return;
        }
        let fd = Fd(conn.stream.as_raw_fd());
        if !conn.reading && !conn.eof && self.server.reading(id) {
            let read = opcode::Recv::new(fd, std::ptr::null_mut(), READ_BUFFER_SIZE)
                .buf_group(GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(Op::Read(id).encode());
            // SAFETY: the read names no buffer of ours: the kernel picks one of the provided
            // buffers when data arrives, and those stay mapped as long as the ring exists.
            unsafe { self.ring.push(read) };
            conn.reading = true;
        }
        let owed = self.server.outbox(id).filter(|outbox| !outbox.is_empty());
        if let (None, Some(outbox)) = (&conn.write, owed) {
            let mut write = self.spare.pop().unwrap_or_default();
            for chunk in outbox.chunks().take(WRITE_SLICES) {
                let chunk = chunk.clone(); // a reference count, not a copy
                write.iovecs.push(libc::iovec {
                    iov_base: chunk.as_ptr().cast_mut().cast(),
                    iov_len: chunk.len(),
                });
                write.chunks.push(chunk);
            }
            let iovecs = u32::try_from(write.iovecs.len()).unwrap_or(u32::MAX);
            let entry = opcode::Writev::new(fd, write.iovecs.as_ptr(), iovecs)
                .build()
                .user_data(Op::Write(id).encode());
            conn.write = Some(write);
            // SAFETY: the iovec array and the bytes it points to belong to the `Write` just
            // stored in `conn.write`. It is taken out only by this write's completion
            // (`on_write`), after the kernel is done with both; until then nothing pushes to
            // its vectors, and moving the `Write` (or the `Conn`, when the map grows) does
            // not move their heap buffers. The `Bytes` clones keep every line alive whatever
            // the outbox does meanwhile. If the loop ends early, `Ring`'s drop cancels and
            // waits for every operation before `conns` is dropped.
            unsafe { self.ring.push(entry) };
        }
    }
    // ANCHOR_END: submit_io

    /// Everything owed is written and the server is done with the client: end our side of
    /// the stream, and keep reading until the client ends its side (closing with its bytes
    /// unread would make the kernel answer with a reset).
    // ANCHOR: hang_up
    fn hang_up(&mut self, id: ClientId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.over {
            return;
        }
        // The server says `Hangup` once the outbox is empty, and it empties only when a
        // write completes: no write can be in the kernel to be overtaken by this.
        debug_assert!(conn.write.is_none());
        let shutdown = opcode::Shutdown::new(Fd(conn.stream.as_raw_fd()), libc::SHUT_WR)
            .build()
            .user_data(Op::Hangup(id).encode());
        // SAFETY: `shutdown(2)` points to no memory.
        unsafe { self.ring.push(shutdown) };
        conn.hanging_up = true;
        self.touched.push(id); // reading goes on
    }
    // ANCHOR_END: hang_up

    /// The connection is over (the server closed it, or it failed): cancel what the kernel
    /// still does with it. It is closed by `close_if_over` when the last completion is in.
    // ANCHOR: end
    fn end(&mut self, id: ClientId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.over {
            return;
        }
        conn.over = true;
        if conn.busy() {
            // One cancellation for every operation on this descriptor. They complete with
            // -ECANCELED (or with their result, if they were already done).
            let fd = Fd(conn.stream.as_raw_fd());
            self.cancel(CancelBuilder::fd(fd).all());
        }
        self.close_if_over(id);
    }

    /// Closes the descriptor of a connection that is over once nothing of it is in the
    /// kernel any more. Only then may the descriptor number be reused.
    fn close_if_over(&mut self, id: ClientId) {
        if !self.conns.get(&id).is_some_and(|c| c.over && !c.busy()) {
            return;
        }
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let close = opcode::Close::new(Fd(conn.stream.into_raw_fd()))
            .build()
            .user_data(Op::Close.encode());
        // SAFETY: closing points to no memory. The descriptor is ours alone (taken out of
        // its `TcpStream`), and no operation of this connection is left in the kernel.
        unsafe { self.ring.push(close) };
        log::debug!("client {id} closed");
    }
    // ANCHOR_END: end

    /// The connection failed: end it and tell the server it is gone.
    fn finish(&mut self, id: ClientId, now: Instant) {
        self.end(id);
        self.server.closed(id, now);
    }

    /// Submits a cancellation of the operations `target` matches.
    fn cancel(&mut self, target: CancelBuilder) {
        let cancel = opcode::AsyncCancel2::new(target)
            .build()
            .user_data(Op::Cancel.encode());
        // SAFETY: a cancellation points to no memory of ours.
        unsafe { self.ring.push(cancel) };
    }

    /// Watches the shutdown descriptor: a one-shot poll that completes on SIGINT/SIGTERM.
    fn watch_signal(&mut self) {
        let poll = opcode::PollAdd::new(Fd(self.shutdown.fd()), libc::POLLIN as u32)
            .build()
            .user_data(Op::Signal.encode());
        // SAFETY: a poll points to no memory of ours.
        unsafe { self.ring.push(poll) };
    }

    /// SIGINT/SIGTERM (or a failed poll, which is watched again).
    fn on_signal(&mut self, result: i32, now: Instant) {
        if result < 0 {
            log::warn!(
                "watching for signals: {}",
                io::Error::from_raw_os_error(-result)
            );
            return self.watch_signal();
        }
        self.begin_shutdown(now);
    }

    /// Stop accepting and let the server say goodbye to everybody; the loop ends once it has
    /// closed them all and the kernel has nothing of ours left.
    // ANCHOR: shutdown
    fn begin_shutdown(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        log::info!("shutting down ({} clients)", self.conns.len());
        self.stopping = true;
        self.accept_paused_until = None;
        if self.accepting {
            self.cancel(CancelBuilder::user_data(Op::Accept.encode()));
        }
        self.server.shutdown(now);
    }
    // ANCHOR_END: shutdown

    /// What the loop leaves behind.
    fn report(&mut self) -> Report {
        let ledger = self.ring.buffers().ledger();
        let (buffers, buffers_in_ring) = (ledger.count(), ledger.in_ring());
        Report {
            stats: self.ring.stats(),
            buffers,
            buffers_in_ring,
            starved_reads: self.starved_reads,
            in_flight: self.ring.in_flight(),
            conns: self.conns.len(),
        }
    }
}

#[cfg(test)]
mod tests;
