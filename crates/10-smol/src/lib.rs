//! # Stage 10: smol — one task per client, on an executor you can see
//!
//! The last stage: the chat server on smol, the small runtime async-std was built on and is
//! now deprecated in favor of. smol is a handful of crates, each doing one job, and here we use
//! them by name:
//!
//! - `async-io`: the reactor ([`Async`] wraps any socket or descriptor and registers it with
//!   `polling`, i.e. epoll), plus [`Timer`] and [`block_on`];
//! - `async-executor`: the [`Executor`] that runs tasks, on as many threads as we give it;
//! - `async-channel`: the doorbells ([`smol::channel`]).
//!
//! ```text
//! cargo run --release -p chat-smol                  # one thread (the default)
//! cargo run --release -p chat-smol -- --threads 2   # one executor shared by two threads
//! nc 127.0.0.1 7878                                 # in two or more terminals
//! ```
//!
//! ## What we do differently from smol's chat example
//!
//! smol's `examples/chat-server.rs` has one dispatcher task that writes every message to every
//! client in turn with `write_all(..).await`: one client that stops reading stops the whole room
//! (and its channel of events is unbounded). Here each client has its own writer, fed from its
//! bytes-bounded [`chat_core::Outbox`]; a client whose outbox overflows is dropped as a slow
//! consumer. The writer is woken by a doorbell (a channel of capacity one, rung with `try_send`):
//! nobody ever waits for another client.
//!
//! Each client is **one** task: its reading half and its writing half are two futures raced
//! with [`future::or`]. When either ends, the other is dropped with it, and so is the socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use chat_core::hub::IdMap;
use chat_core::{Bytes, ClientId, Event, Limits, Server, ServerFull};
use chat_net::{AcceptError, Config, Shutdown};
use smol::channel::{self, Receiver, Sender};
use smol::io::AsyncWriteExt as _;
use smol::{block_on, future, Async, Executor, Timer};

/// Size of the read buffer. There is one per executor thread, not one per client.
const READ_BUF: usize = 16 * 1024;

/// The most bytes a writer takes out of its outbox at a time. Taken bytes no longer count
/// against `--outbox-bytes`, so this also bounds what a client can have "in flight".
const WRITE_BATCH: usize = 64 * 1024;

/// The most lines handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// How long a client being closed (`/quit`, shutdown) has to read what it is still owed
/// (`* bye`, `* server shutting down`) before its socket is closed anyway. Without it, a client
/// that quits and then never reads would keep its connection forever.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long, after SIGINT/SIGTERM, clients get to receive `* server shutting down`.
/// (19,000 goodbyes took 0.7 to 2.6 s on this 2-core machine, mostly the kernel's TCP work.)
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

thread_local! {
    /// The read buffer of this executor thread, allocated the first time the thread reads.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF].into_boxed_slice());
}

/// Serves clients on one [`Executor`] run by `threads` threads (this one and `threads - 1`
/// more) until `shutdown` is triggered.
///
/// With one thread (the default) everything runs on the calling thread, like stage 07's
/// hand-rolled loop: smol's `LocalExecutor` is this same `Executor` with `!Send` futures
/// allowed, and our futures are `Send` anyway so that the same code runs on N threads.
// ANCHOR: run
pub fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    threads: usize,
) -> io::Result<()> {
    let ex = Executor::new();
    // The helper threads run the executor until this channel closes.
    let (stop, stopped) = channel::bounded::<()>(1);
    thread::scope(|scope| {
        for i in 1..threads.max(1) {
            let (ex, stopped) = (&ex, stopped.clone());
            thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn_scoped(scope, move || block_on(ex.run(stopped.recv())))?;
        }
        // `block_on` also drives the reactor while this thread has nothing else to do.
        let result = block_on(ex.run(serve(&ex, listener, config.limits(), shutdown)));
        drop(stop); // the helper threads return; the scope joins them
        result
    })
}
// ANCHOR_END: run

/// Accepts until `shutdown`, then says goodbye to every client and waits (bounded) for them.
// ANCHOR: serve
async fn serve(
    ex: &Executor<'_>,
    listener: TcpListener,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    // Non-blocking from now on, and registered with the reactor.
    let listener = Async::new(listener)?;
    // The shutdown descriptor becomes readable on SIGINT/SIGTERM: the reactor can watch it
    // like any socket. (`Async::new` makes it non-blocking, which `Shutdown` does not mind.)
    let stop = Async::new(shutdown)?;
    let shared = Arc::new(Shared::new(limits));
    // Every client task holds a clone of `alive`; when the last is dropped the channel
    // closes and `all_gone.recv()` returns.
    let (alive, all_gone) = channel::bounded::<()>(1);
    let _reaper = ex.spawn(reaper(Arc::clone(&shared))); // cancelled when this handle drops

    // `or` polls both futures and returns the first result, dropping the other: here, the
    // accept loop (which never ends by itself) is dropped when `stop` becomes readable.
    future::or(accept_loop(ex, &listener, &shared, alive), stop.readable()).await?;
    drop(listener); // no new clients
    log::info!("shutting down");
    shared.shutdown(); // everyone gets `* server shutting down` and a Close
    let all_left = async {
        let _ = all_gone.recv().await; // an error: the channel closed
        true
    };
    let too_late = async {
        Timer::after(DRAIN_TIMEOUT).await;
        false
    };
    if !future::or(all_left, too_late).await {
        log::warn!("some clients did not take their last lines within {DRAIN_TIMEOUT:?}");
    }
    Ok(()) // dropping the executor (in `run`) drops every task left
}
// ANCHOR_END: serve

/// Accepts connections until dropped, one task per client.
// ANCHOR: accept_loop
async fn accept_loop(
    ex: &Executor<'_>,
    listener: &Async<TcpListener>,
    shared: &Arc<Shared>,
    alive: Sender<()>,
) -> io::Result<()> {
    loop {
        // `read_with` tries `accept`; on `WouldBlock` it waits for the reactor to report the
        // listener readable and tries again.
        let stream = match listener.read_with(|l| l.accept()).await {
            Ok((stream, _)) => stream,
            Err(err) => match chat_net::classify_accept_error(&err) {
                AcceptError::Retry => continue,
                // Out of descriptors: accepting again at once would fail again at once.
                AcceptError::Backoff => {
                    Timer::after(chat_net::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stream = match Async::new(stream) {
            Ok(stream) => Arc::new(stream),
            Err(err) => {
                log::debug!("cannot register a connection: {err}");
                continue;
            }
        };
        match shared.join(&stream) {
            Ok((id, bell)) => {
                let task = client(Arc::clone(shared), id, stream, bell, alive.clone());
                ex.spawn(task).detach(); // runs on; a `Task` dropped undetached is cancelled
            }
            Err(ServerFull) => refuse(&stream),
        }
    }
}
// ANCHOR_END: accept_loop

/// `! server full`, then close. A new socket's send buffer is empty: the line fits at once.
fn refuse(stream: &Async<TcpStream>) {
    log::debug!("refusing a connection: server full");
    let _ = stream.get_ref().write_all(chat_core::SERVER_FULL_LINE);
    let _ = stream.get_ref().shutdown(Both::Both);
}

/// One client's life, in one task: its reading and writing halves, raced.
// ANCHOR: client
async fn client(
    shared: Arc<Shared>,
    id: ClientId,
    stream: Arc<Async<TcpStream>>,
    bell: Receiver<()>,
    alive: Sender<()>,
) {
    let reading = read_loop(&shared, id, &stream);
    let writing = write_loop(&shared, id, &stream, bell);
    // The first half to end ends the client: the reader on EOF or error (including the
    // socket being shut down for a slow consumer), the writer once `* bye` or
    // `* server shutting down` is written.
    if let Err(err) = future::or(reading, writing).await {
        log::debug!("client {id}: {err}");
    }
    shared.leave(id);
    // `leave` dropped the dispatcher's handle: `stream` is the last one, and dropping it
    // deregisters the socket from the reactor and closes it.
    drop(stream);
    drop(alive);
}
// ANCHOR_END: client

/// Reads until EOF, handing every chunk of bytes to the shared server.
///
/// `read_with` calls the closure when the reactor says the socket is readable (and again,
/// after waiting, if it returns `WouldBlock`). The closure borrows the thread's buffer only
/// while it runs, so a waiting client holds no buffer at all.
// ANCHOR: read_loop
async fn read_loop(shared: &Shared, id: ClientId, stream: &Async<TcpStream>) -> io::Result<()> {
    loop {
        let n = stream
            .read_with(|socket| {
                READ_BUFFER.with_borrow_mut(|buf| {
                    let n = (&*socket).read(buf)?;
                    shared.receive(id, &buf[..n]);
                    Ok(n)
                })
            })
            .await?;
        if n == 0 {
            return Ok(());
        }
        // One read per turn. While a socket has data, `read_with` is ready at once, and
        // nothing in smol preempts a task that is always ready: a client that sends without
        // pause would keep this thread, its own writing half (polled only when this half is
        // pending) and every other client waiting. Yielding puts the task at the back of
        // the executor's queue.
        future::yield_now().await;
    }
}
// ANCHOR_END: read_loop

/// Waits for the doorbell, then writes what the outbox holds; returns after `/quit` or
/// shutdown (once the goodbye is written) or when the client is gone.
// ANCHOR: write_loop
async fn write_loop(
    shared: &Shared,
    id: ClientId,
    stream: &Async<TcpStream>,
    bell: Receiver<()>,
) -> io::Result<()> {
    // `recv` fails once the doorbell's sender is dropped: the client left.
    while bell.recv().await.is_ok() {
        loop {
            match shared.output(id) {
                Output::Lines(lines) => write_lines(stream, lines).await?,
                Output::Nothing => break,
                Output::Finished => return Ok(()),
            }
        }
    }
    Ok(())
}

/// Writes whole lines, up to [`MAX_IOVECS`] per system call (`writev`).
async fn write_lines(mut stream: &Async<TcpStream>, mut lines: Vec<Bytes>) -> io::Result<()> {
    let mut next = 0;
    while next < lines.len() {
        let slices: Vec<IoSlice<'_>> = lines[next..]
            .iter()
            .take(MAX_IOVECS)
            .map(|line| IoSlice::new(line))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Skip the lines written whole; keep the unwritten end of a partly written one.
        while let Some(line) = lines.get_mut(next).filter(|_| written > 0) {
            if written >= line.len() {
                written -= line.len();
                next += 1;
            } else {
                *line = line.slice(written..);
                written = 0;
            }
        }
    }
    Ok(())
}
// ANCHOR_END: write_loop

/// Ends the connections of clients that were told goodbye (`/quit`, shutdown) but do not read
/// it within [`CLOSE_GRACE`]. One task for the whole server: it sleeps on a timer until the
/// oldest grace ends, or on its doorbell while nobody lingers.
// ANCHOR: reaper
async fn reaper(shared: Arc<Shared>) {
    loop {
        match shared.reap(Instant::now()) {
            Some(at) => {
                // The reactor keeps the timers: it wakes this task when `at` has passed.
                Timer::at(at).await;
            }
            None => {
                // Never closed: `Shared` holds the sender. The task ends when it is dropped.
                let _ = shared.reaper_rung.recv().await;
            }
        }
    }
}
// ANCHOR_END: reaper

// ANCHOR: state
/// What every task shares: the protocol, and how to reach each client's task.
#[derive(Debug)]
struct Shared {
    /// One lock around all of it. It is never held across an `.await` or a blocking call:
    /// every method below takes it, does bookkeeping, and lets go.
    state: Mutex<State>,
    /// Where the [`reaper`] waits while no client is lingering.
    reaper_rung: Receiver<()>,
}

/// The part of [`Shared`] behind the lock.
#[derive(Debug)]
struct State {
    /// Rooms, nicks, framers and bounded outboxes: the whole protocol, sans-IO.
    server: Server,
    /// Clients being closed with lines still owed, and when their [`CLOSE_GRACE`] ends, oldest
    /// first (at most one entry per connection: the queue is bounded by `--max-clients`).
    lingering: VecDeque<(Instant, ClientId)>,
    /// Rung when `lingering` gets an entry, to wake the [`reaper`].
    reaper_bell: Sender<()>,
    /// How to reach each connected client's task.
    clients: IdMap<Client>,
}

/// A client as the dispatcher sees it.
#[derive(Debug)]
struct Client {
    /// Rung (with `try_send`, never waiting) when the client's outbox has bytes; capacity 1,
    /// so a full doorbell just means "already rung".
    bell: Sender<()>,
    /// The client's socket, to shut down at once when it is dropped as a slow consumer.
    stream: Arc<Async<TcpStream>>,
}

// ANCHOR_END: state

/// What a writer should do next.
#[derive(Debug)]
enum Output {
    /// Write these lines (taken out of the outbox), then ask again.
    Lines(Vec<Bytes>),
    /// Nothing to write: wait for the doorbell.
    Nothing,
    /// Everything owed is written and the client is being closed (or is gone): stop.
    Finished,
}

// ANCHOR: shared
impl Shared {
    /// An empty server with these limits.
    fn new(limits: Limits) -> Self {
        let (reaper_bell, reaper_rung) = channel::bounded(1);
        Self {
            state: Mutex::new(State {
                server: Server::new(limits),
                lingering: VecDeque::new(),
                reaper_bell,
                clients: IdMap::default(),
            }),
            reaper_rung,
        }
    }

    /// Registers a new client (its welcome is queued and its doorbell rung), or refuses it
    /// when `--max-clients` are connected.
    fn join(&self, stream: &Arc<Async<TcpStream>>) -> Result<(ClientId, Receiver<()>), ServerFull> {
        let mut state = self.lock();
        let id = state.server.connect()?;
        let (bell, rung) = channel::bounded(1);
        let stream = Arc::clone(stream);
        state.clients.insert(id, Client { bell, stream });
        state.dispatch();
        Ok((id, rung))
    }

    /// Bytes from a client: the server routes the lines they complete into outboxes.
    fn receive(&self, id: ClientId, bytes: &[u8]) {
        let mut state = self.lock();
        state.server.receive(id, bytes);
        state.dispatch();
    }

    /// The next thing client `id`'s writer should do.
    fn output(&self, id: ClientId) -> Output {
        let mut state = self.lock();
        let closing = state.server.is_closing(id);
        match state.server.outbox(id) {
            None => Output::Finished,
            Some(outbox) if !outbox.is_empty() => Output::Lines(outbox.take(WRITE_BATCH)),
            Some(_) if closing => Output::Finished,
            Some(_) => Output::Nothing,
        }
    }

    /// The client's connection is over: its room hears it left; its doorbell is dropped.
    fn leave(&self, id: ClientId) {
        let mut state = self.lock();
        state.server.close(id);
        state.clients.remove(&id);
        state.dispatch();
        log::debug!("client {id} left ({} connected)", state.clients.len());
    }

    /// SIGINT/SIGTERM: every client is told and closed once its goodbye is written.
    fn shutdown(&self) {
        let mut state = self.lock();
        state.server.shutdown();
        state.dispatch();
    }

    /// Closes the lingering clients whose grace ended by `now`; returns when the next one ends.
    fn reap(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        while let Some(&(at, id)) = state.lingering.front() {
            if at > now {
                return Some(at);
            }
            state.lingering.pop_front();
            if let Some(client) = state.clients.get(&id) {
                log::debug!("client {id}: did not read its last lines within {CLOSE_GRACE:?}");
                let _ = client.stream.get_ref().shutdown(Both::Both);
            }
        }
        None
    }

    /// The lock, even if a task panicked while holding it (`Server` finishes its
    /// bookkeeping before anything in it could panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ANCHOR_END: shared

// ANCHOR: dispatch
impl State {
    /// Turns the server's events into wake-ups: never a write, never a wait.
    fn dispatch(&mut self) {
        while let Some(event) = self.server.poll_event() {
            let (Event::Flush(id) | Event::Close(id)) = event;
            let Some(client) = self.clients.get(&id) else {
                continue;
            };
            let has_bytes = self.server.outbox(id).is_some_and(|o| !o.is_empty());
            match event {
                // A slow consumer (its outbox was emptied): nothing more is owed to it. Its
                // writer may be stuck in a write it will never finish, so shut the socket now;
                // the reading half sees EOF and ends the task.
                Event::Close(_) if !has_bytes => {
                    let _ = client.stream.get_ref().shutdown(Both::Both);
                }
                // `/quit` or shutdown: the writer sends the goodbye, then ends the connection;
                // the reaper ends it anyway if the client does not read within CLOSE_GRACE.
                Event::Close(_) => {
                    let _ = client.bell.try_send(());
                    let deadline = Instant::now() + CLOSE_GRACE;
                    self.lingering.push_back((deadline, id));
                    let _ = self.reaper_bell.try_send(());
                }
                // Full means "already rung"; closed means the writer is gone. Either way,
                // nothing to do, and above all nothing to wait for.
                Event::Flush(_) => {
                    let _ = client.bell.try_send(());
                }
            }
        }
    }
}
// ANCHOR_END: dispatch

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// The library on its own, on one and on two threads: a client is welcomed, talks, and
    /// hears the shutdown; `run` returns once `shutdown` is triggered.
    #[test]
    fn welcome_then_shutdown() {
        for threads in [1, 2] {
            let listener = chat_net::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = Shutdown::new().unwrap();
            let server = {
                let shutdown = shutdown.clone();
                thread::spawn(move || run(listener, Config::default(), shutdown, threads))
            };
            let stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut lines = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            assert!(line.starts_with("* welcome guest1"), "{line:?}");
            (&stream).write_all(b"/nick tester\n").unwrap();
            line.clear();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, "* you are now tester\n");
            shutdown.trigger();
            line.clear();
            lines.read_line(&mut line).unwrap();
            assert_eq!(line, "* server shutting down\n");
            line.clear();
            assert_eq!(
                lines.read_line(&mut line).unwrap(),
                0,
                "closed after goodbye"
            );
            server.join().unwrap().unwrap();
        }
    }

    /// An idle client costs its task's state and no buffer: well under 1 KiB. (A
    /// `[u8; 4096]` kept across an `.await` would fail this.)
    #[test]
    fn an_idle_client_holds_no_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stream = Arc::new(Async::new(stream).unwrap());
        let shared = Arc::new(Shared::new(Limits::default()));
        let (id, bell) = shared.join(&stream).unwrap();
        let (alive, _all_gone) = channel::bounded(1);
        let task = client(Arc::clone(&shared), id, stream, bell, alive);
        let size = size_of_val(&task);
        assert!(size < 1024, "a client's task holds {size} bytes");
    }
}
