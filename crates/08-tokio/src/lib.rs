//! # Stage 08: tokio
//!
//! Stages 05 to 07 built, piece by piece, what an async runtime is made of: a reactor that
//! waits for readiness (epoll, then mio), tasks that are state machines, wakers that connect
//! the two, and an executor that polls what was woken. This stage uses the real thing. The
//! code reads like the thread-per-client server of stage 02 — one function per client,
//! written top to bottom — but each "thread" is a task of a few hundred bytes, and tokio runs
//! ten thousand of them on one thread (`--flavor current-thread`) or on a few worker threads
//! (`--flavor multi-thread`, the default, with `--threads N`, one per core unless told).
//!
//! ```text
//! cargo run --release -p chat-tokio                                # multi-thread
//! cargo run --release -p chat-tokio -- --flavor current-thread     # one thread
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! ## How bytes move
//!
//! All clients share one [`chat_core::Server`] behind a `std::sync::Mutex`, which is never
//! held across an `.await`. Each client's task waits, with `tokio::select!`, for whichever
//! comes first: its socket became ready, or its [`Notify`] (its *doorbell*) was rung because
//! another task queued lines in its outbox. Reading uses a buffer on the worker thread's
//! stack, inside a plain function, so an idle task holds no read buffer. Writing takes whole
//! lines out of the client's bounded outbox under the lock and writes them with one `writev`
//! outside it.
//!
//! tokio's own `examples/chat.rs` gives each peer an *unbounded* channel; here a client's
//! queue is bounded by `--outbox-bytes`, and a client that fills it is dropped as a slow
//! consumer. Nobody ever waits for it.

use std::io::{self, IoSlice};
use std::num::NonZeroUsize;
use std::os::fd::AsFd as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_core::hub::IdMap;
use chat_core::{ClientId, Event, Outbox, Server};
use chat_net::{AcceptError, Config, Shutdown};
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::{mpsc, Notify};

/// Bytes read per `read`, into a buffer on the stack of the thread that polls the task.
const READ_BUF: usize = 4096;

/// At most this many bytes move from a client's outbox to its task at a time.
const TAKE_BYTES: usize = 64 * 1024;

/// At most this many lines per `writev` (the kernel refuses more than `IOV_MAX`, 1024).
const MAX_SLICES: usize = 64;

/// How long a closing client may go without taking any of what it is still owed (`* bye`,
/// `* server shutting down`) before its socket is closed anyway. A slow consumer, by
/// definition, does not read: without this bound its task would wait forever.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// However a goodbye goes, it ends within this. [`CLOSE_GRACE`] bounds each wait, which lets a
/// client that keeps reading get everything; but a client whose kernel takes a few bytes now and
/// then would otherwise hold its task for ever.
pub const FAREWELL_LIMIT: Duration = Duration::from_secs(5);

/// How long `run` waits, after a shutdown, for the client tasks to say goodbye.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

// ANCHOR: flavor
/// Which of tokio's two schedulers runs the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// Every task on the thread that calls [`run`]: one event loop, like stages 04 to 07.
    CurrentThread,
    /// A pool of worker threads, each with its own queue of tasks, stealing from each other
    /// when their own queue runs dry.
    MultiThread,
}

/// The flags of this stage, on top of [`chat_net::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    /// Which tokio scheduler runs the client tasks.
    #[arg(long, value_enum, default_value_t = Flavor::MultiThread)]
    pub flavor: Flavor,
    /// Worker threads of the multi-thread scheduler (default: one per core).
    #[arg(long)]
    pub threads: Option<NonZeroUsize>,
}

/// Builds the runtime the flags ask for. `enable_all` turns on the two drivers the tasks
/// need: I/O (the reactor: epoll underneath, through mio) and time (the timer wheel).
fn build_runtime(flags: &RuntimeConfig) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = match flags.flavor {
        Flavor::CurrentThread => {
            if flags.threads.is_some() {
                log::warn!("--threads is ignored with --flavor current-thread");
            }
            tokio::runtime::Builder::new_current_thread()
        }
        Flavor::MultiThread => {
            let threads = flags
                .threads
                .or_else(|| std::thread::available_parallelism().ok())
                .map_or(1, NonZeroUsize::get);
            log::info!("tokio multi-thread scheduler, worker threads: {threads}");
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    };
    builder.enable_all().thread_name("chat-tokio").build()
}
// ANCHOR_END: flavor

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            flavor: Flavor::MultiThread,
            threads: None,
        }
    }
}

// ANCHOR: run
/// Serves clients on a tokio runtime until `shutdown` is triggered.
///
/// `run` is a plain function: it builds the runtime itself (there is no `#[tokio::main]`), so
/// the flavor is a flag and tests can start it like any other stage.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
    flags: RuntimeConfig,
) -> io::Result<()> {
    let runtime = build_runtime(&flags)?;
    let result = runtime.block_on(serve(listener, config, shutdown));
    // A task still running now did not finish its goodbye in time: it is dropped (and its
    // socket closed) here, without waiting any longer.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

/// The server's main task: accept until told to stop, then say goodbye to everybody.
async fn serve(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<()> {
    // tokio's reactor needs non-blocking sockets, and `from_std` registers the listener with
    // the reactor of the runtime it runs in: this must happen inside `block_on`.
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let stop = watch(&shutdown)?;
    let shared = Arc::new(Shared::new(&config));
    // Every client task holds a clone of `done`; `finished.recv()` returns `None` once the
    // last one is dropped, that is once every task has ended (mini-redis's trick).
    let (done, mut finished) = mpsc::channel::<()>(1);

    accept_loop(&listener, &stop, &shared, &done).await;

    log::info!("shutting down");
    drop(listener); // connections arriving from now on are refused by the kernel
    shared.shutdown();
    drop(done);
    if tokio::time::timeout(SHUTDOWN_GRACE, finished.recv())
        .await
        .is_err()
    {
        log::warn!("some clients did not finish within {SHUTDOWN_GRACE:?}; dropping them");
    }
    Ok(())
}
// ANCHOR_END: run

// ANCHOR: watch
/// The shutdown switch as a tokio socket. [`Shutdown`] is a socket pair that becomes readable
/// when SIGINT/SIGTERM arrives (or a test triggers it); a duplicate of its descriptor, owned
/// by tokio, is watched like any client socket. It is never read: readable means "stop".
fn watch(shutdown: &Shutdown) -> io::Result<UnixStream> {
    let fd = shutdown.as_fd().try_clone_to_owned()?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}
// ANCHOR_END: watch

// ANCHOR: accept_loop
/// Accepts connections until the shutdown switch becomes readable.
///
/// tokio remembers that the listener was reported readable and calls `accept(2)` directly
/// until the kernel says `EAGAIN`; only then does this task wait for the next event. A burst
/// of connections is drained without a trip through epoll for each.
async fn accept_loop(
    listener: &TcpListener,
    stop: &UnixStream,
    shared: &Arc<Shared>,
    done: &mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            biased; // check the switch first: once it is on, accept nobody else
            // An error here means the reactor is gone, which also means: stop.
            _ = stop.readable() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => admit(shared, stream, done),
                Err(err) => match chat_net::classify_accept_error(&err) {
                    AcceptError::Retry => {}
                    // Out of descriptors (EMFILE): the next accept would fail at once. A timer
                    // parks this task instead of spinning; the clients' tasks run meanwhile.
                    AcceptError::Backoff => tokio::time::sleep(chat_net::ACCEPT_BACKOFF).await,
                },
            },
        }
    }
}
// ANCHOR_END: accept_loop

// ANCHOR: admit
/// Registers a new connection with the server and spawns its task, or refuses it with
/// `! server full` beyond `--max-clients`.
fn admit(shared: &Arc<Shared>, stream: TcpStream, done: &mpsc::Sender<()>) {
    if let Err(err) = stream.set_nodelay(true) {
        log::debug!("TCP_NODELAY: {err}"); // only latency suffers
    }
    let doorbell = Arc::new(Notify::new());
    let Some(id) = shared.join(&doorbell) else {
        // A new socket's send buffer is empty: this short write cannot block. Dropping the
        // stream then closes it.
        let _ = stream.try_write(chat_core::SERVER_FULL_LINE);
        return;
    };
    let member = Member {
        shared: Arc::clone(shared),
        id,
        _done: done.clone(),
    };
    tokio::spawn(client(stream, member, doorbell));
}
// ANCHOR_END: admit

// ANCHOR: shared
/// What every task shares.
#[derive(Debug)]
struct Shared {
    /// The protocol state and whom to wake, behind one lock. A `std` mutex, not tokio's: it
    /// is only ever held for a few microseconds and never across an `.await`.
    state: Mutex<State>,
    /// `--outbox-bytes`, which also bounds the lines a task has taken and not yet written.
    outbox_bytes: usize,
}

/// The part of [`Shared`] behind the lock.
#[derive(Debug)]
struct State {
    /// The sans-IO server of the event-loop stages: rooms, nicks, framers and outboxes.
    server: Server,
    /// Each client task's doorbell, rung when its outbox gets lines or it must close.
    doorbells: IdMap<Arc<Notify>>,
}

impl State {
    /// Turns the server's pending events into the doorbells to ring, skipping `me` (a task
    /// that just called into the server looks at its own outbox next anyway).
    fn pending_doorbells(&mut self, me: Option<ClientId>) -> Vec<Arc<Notify>> {
        let mut ring = Vec::new();
        while let Some(event) = self.server.poll_event() {
            let (Event::Flush(id) | Event::Close(id)) = event;
            if Some(id) != me {
                if let Some(doorbell) = self.doorbells.get(&id) {
                    ring.push(Arc::clone(doorbell));
                }
            }
        }
        ring
    }
}

/// Rings doorbells, after the lock is released: waking a task may wake a worker thread
/// (a system call), and nobody should wait for the lock meanwhile. `notify_one` stores a
/// permit when the task is not waiting yet, so a ring is never lost.
fn ring(doorbells: Vec<Arc<Notify>>) {
    for doorbell in doorbells {
        doorbell.notify_one();
    }
}
// ANCHOR_END: shared

impl Shared {
    /// An empty server with the limits of `config`.
    fn new(config: &Config) -> Self {
        Self {
            state: Mutex::new(State {
                server: Server::new(config.limits()),
                doorbells: IdMap::default(),
            }),
            outbox_bytes: config.outbox_bytes,
        }
    }

    /// The lock, even if a task panicked while holding it: every `Server` method finishes its
    /// bookkeeping before it could panic, so the state is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new client: welcomed (and its room told), or `None` when the server is full.
    fn join(&self, doorbell: &Arc<Notify>) -> Option<ClientId> {
        let mut state = self.lock();
        let id = state.server.connect().ok()?;
        state.doorbells.insert(id, Arc::clone(doorbell));
        let doorbells = state.pending_doorbells(Some(id));
        drop(state);
        ring(doorbells);
        log::debug!("client {id} joined");
        Some(id)
    }

    /// Bytes from a client: the server frames them, runs the commands and fills outboxes.
    fn receive(&self, me: ClientId, bytes: &[u8]) {
        let mut state = self.lock();
        state.server.receive(me, bytes);
        let doorbells = state.pending_doorbells(Some(me));
        drop(state);
        ring(doorbells);
    }

    // ANCHOR: refill
    /// Moves what `me` is owed from its outbox into `in_flight` (only when that is empty: a
    /// task never holds more than one batch), and says whether the server is closing `me`.
    fn refill(&self, me: ClientId, in_flight: &mut Outbox) -> bool {
        let mut state = self.lock();
        if in_flight.is_empty() {
            if let Some(outbox) = state.server.outbox(me) {
                for line in outbox.take(TAKE_BYTES) {
                    in_flight
                        .push(line)
                        .expect("a batch from an outbox fits an empty outbox of the same bound");
                }
            }
        }
        state.server.is_closing(me)
    }
    // ANCHOR_END: refill

    /// The client is gone: its room hears that it left.
    fn leave(&self, me: ClientId) {
        let mut state = self.lock();
        state.server.close(me);
        state.doorbells.remove(&me);
        let doorbells = state.pending_doorbells(Some(me));
        drop(state);
        ring(doorbells);
        log::debug!("client {me} left");
    }

    /// The server stops: every client is sent `* server shutting down` and closed.
    fn shutdown(&self) {
        let mut state = self.lock();
        state.server.shutdown();
        let doorbells = state.pending_doorbells(None);
        drop(state);
        ring(doorbells);
    }
}

// ANCHOR: member
/// A client's place in the server, owned by its task. However the task ends — the client
/// left, failed, was dropped, or the runtime cancelled the task — dropping this tells the
/// server, so the room always hears that the client left.
#[derive(Debug)]
struct Member {
    /// The server it is a member of.
    shared: Arc<Shared>,
    /// Its id in the server.
    id: ClientId,
    /// Dropped with the task: the main task counts live tasks by these.
    _done: mpsc::Sender<()>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.shared.leave(self.id);
    }
}
// ANCHOR_END: member

// ANCHOR: client
/// One client's task, from welcome to goodbye.
async fn client(stream: TcpStream, member: Member, doorbell: Arc<Notify>) {
    if let Err(err) = session(&stream, &member, &doorbell).await {
        log::debug!("client {}: {err}", member.id); // ends this client only
    }
    drop(stream); // the socket closes
    drop(member); // the room hears that the client left
}

/// Reads and writes for one client until it leaves or the server closes it.
async fn session(stream: &TcpStream, member: &Member, doorbell: &Notify) -> io::Result<()> {
    let (shared, me) = (&*member.shared, member.id);
    // Lines taken out of the outbox and not yet written. The same bounded type, empty (and
    // allocation-free) while the client is idle.
    let mut in_flight = Outbox::new(shared.outbox_bytes);
    loop {
        if shared.refill(me, &mut in_flight) {
            return farewell(stream, shared, me, &mut in_flight).await;
        }
        let interest = if in_flight.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let mut more_to_read = false;
        tokio::select! {
            // Another task queued lines for us, or the server is closing us: look again.
            () = doorbell.notified() => {}
            ready = stream.ready(interest) => {
                let ready = ready?;
                if ready.is_readable() {
                    match on_readable(stream, shared, me)? {
                        Read::Closed => return Ok(()), // the client closed its end
                        Read::Full => more_to_read = true,
                        Read::Partial => {}
                    }
                }
                if ready.is_writable() {
                    write_some(stream, &mut in_flight)?;
                }
            }
        }
        if more_to_read {
            // A full buffer: this client may have sent megabytes. Let the others have a turn
            // first. Tokio's budget alone is not enough here: on the current-thread flavour the
            // I/O driver is only polled every 61 task polls, and a flooder's task can read 128
            // times per poll, so some 30 MB of one client would be read before anybody else's
            // socket is even looked at. `yield_now` runs the driver before this task again.
            tokio::task::yield_now().await;
        }
    }
}
// ANCHOR_END: client

// ANCHOR: on_readable
/// What one read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// End of stream: the client closed its end.
    Closed,
    /// The buffer came back full: there may be more waiting.
    Full,
    /// Less than a buffer (or nothing after all).
    Partial,
}

/// Reads once and hands the bytes to the server.
///
/// A plain function, not an `async` one, on purpose: its 4 KiB buffer lives on the stack of
/// whichever thread polls the task, only for the duration of this call. Had the buffer been a
/// local of `session`, alive across an `.await`, it would be part of the task's state, and
/// ten thousand idle clients would hold ten thousand buffers.
fn on_readable(stream: &TcpStream, shared: &Shared, me: ClientId) -> io::Result<Read> {
    let mut buf = [0u8; READ_BUF];
    match stream.try_read(&mut buf) {
        Ok(0) => Ok(Read::Closed),
        Ok(n) => {
            shared.receive(me, &buf[..n]);
            Ok(if n == READ_BUF {
                Read::Full
            } else {
                Read::Partial
            })
        }
        // A stale readiness: `try_read` has told tokio, which waits for the next event.
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Read::Partial),
        Err(err) => Err(err),
    }
}
// ANCHOR_END: on_readable

// ANCHOR: write_some
/// Writes as much of `in_flight` as the socket takes now, up to [`MAX_SLICES`] lines in one
/// `writev`, without waiting.
fn write_some(stream: &TcpStream, in_flight: &mut Outbox) -> io::Result<()> {
    if in_flight.is_empty() {
        return Ok(());
    }
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let filled = in_flight.io_slices(&mut slices);
    match stream.try_write_vectored(&slices[..filled]) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => {
            in_flight.consume(n);
            Ok(())
        }
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(err) => Err(err),
    }
}
// ANCHOR_END: write_some

// ANCHOR: farewell
/// The server is done with this client (`/quit`, shutdown, or slow consumer): write what it
/// is still owed, then let the socket close. Timers bound it: a client that takes nothing for
/// [`CLOSE_GRACE`], or is not done after [`FAREWELL_LIMIT`], is closed with its last lines unsent.
async fn farewell(
    stream: &TcpStream,
    shared: &Shared,
    me: ClientId,
    in_flight: &mut Outbox,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + FAREWELL_LIMIT;
    loop {
        shared.refill(me, in_flight);
        if in_flight.is_empty() {
            return Ok(()); // all written: `* bye` is on its way
        }
        let wait = CLOSE_GRACE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, stream.writable()).await {
            Ok(ready) => ready?,
            Err(_elapsed) => {
                log::debug!("client {me}: did not take its last lines in time; closing anyway");
                return Ok(());
            }
        }
        write_some(stream, in_flight)?;
    }
}
// ANCHOR_END: farewell

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of the stage: an idle client is a small task. Its state must hold no read
    /// buffer (see [`on_readable`]); this fails if someone moves one into it.
    #[test]
    fn an_idle_client_task_holds_no_buffer() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local address");
            let (stream, _) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let stream = stream.expect("connect");
            let shared = Arc::new(Shared::new(&Config::default()));
            let doorbell = Arc::new(Notify::new());
            let id = shared.join(&doorbell).expect("room for one client");
            let (done, _finished) = mpsc::channel(1);
            let member = Member {
                shared,
                id,
                _done: done,
            };
            let task = client(stream, member, doorbell);
            let size = std::mem::size_of_val(&task);
            assert!(
                size < READ_BUF / 4,
                "a client task is {size} bytes: something large lives across an `.await`"
            );
        });
    }
}
