//! # Stage 09: async-std — a reader and a writer task per client
//!
//! The same server on async-std, written the way its own chat tutorial writes one: an accept
//! loop that spawns a task per connection, and a second task per connection that writes to it.
//! async-std gives us `std`'s API with `.await` added (`TcpListener::accept`, `task::spawn`,
//! `task::sleep`, `task::block_on`); underneath, it is the smol family: `async-io`'s reactor
//! (`polling`, i.e. epoll here) and `async-executor` spread over a global pool of threads.
//!
//! **async-std is discontinued**: its crate says "Deprecated in favor of smol". It still works,
//! and older material uses it everywhere, so it is measured here; stage 10 is its successor.
//!
//! ```text
//! cargo run --release -p chat-async-std
//! nc 127.0.0.1 7878      # in two or more terminals
//! ```
//!
//! ## What we do differently from the tutorial
//!
//! The tutorial's broker sends every message through an *unbounded* channel to each client's
//! writer task: a client that stops reading makes its queue grow until memory runs out. Here
//! the queue of a client is `chat-core`'s bytes-bounded [`chat_core::Outbox`] inside the shared
//! [`chat_core::Server`]; when it overflows, the client is dropped as a slow consumer. The only
//! channel is a *doorbell* of capacity one that tells the writer "your outbox has bytes": it is
//! rung with `try_send`, and a full doorbell only means "already rung". Nobody ever waits for
//! another client.
//!
//! The tutorial also reads with a `BufReader` per client. An idle client's task would then
//! hold that buffer forever; ours holds none (see [`read_loop`]), so 10,000 idle clients stay
//! cheap.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::Shutdown as Both;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use async_std::channel::{self, Receiver, Sender};
use async_std::future;
use async_std::io::{Read as _, WriteExt as _};
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use chat_core::hub::IdMap;
use chat_core::{Bytes, ClientId, Event, Limits, Server, ServerFull};
use chat_net::{AcceptError, Config, Shutdown};

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

/// Serves clients on async-std's global executor until `shutdown` is triggered.
// ANCHOR: run
pub fn run(listener: std::net::TcpListener, config: Config, shutdown: Shutdown) -> io::Result<()> {
    task::block_on(serve(listener, config.limits(), shutdown))
}
// ANCHOR_END: run

/// Accepts until `shutdown`, then says goodbye to every client and waits (bounded) for them.
// ANCHOR: serve
async fn serve(
    listener: std::net::TcpListener,
    limits: Limits,
    shutdown: Shutdown,
) -> io::Result<()> {
    let listener = TcpListener::from(listener); // registers it with the reactor
    let shared = Arc::new(Shared::new(limits));
    // Every client task holds a clone of `alive`. When the last clone is dropped, the channel
    // closes and `all_gone.recv()` returns: the idiom mini-redis uses to wait for its handlers.
    let (alive, all_gone) = channel::bounded::<()>(1);
    let acceptor = task::spawn(accept_loop(listener, Arc::clone(&shared), alive));
    let reaper = task::spawn(reaper(Arc::clone(&shared)));

    // async-std cannot await an arbitrary file descriptor, so a thread of its blocking pool
    // parks in `Shutdown::wait` and this task awaits that thread.
    task::spawn_blocking(move || shutdown.wait()).await;
    log::info!("shutting down");
    acceptor.cancel().await; // drops the listener: no new clients
    shared.shutdown(); // everyone gets `* server shutting down` and a Close
    if future::timeout(DRAIN_TIMEOUT, all_gone.recv())
        .await
        .is_err()
    {
        log::warn!("some clients did not take their last lines within {DRAIN_TIMEOUT:?}");
    }
    reaper.cancel().await;
    Ok(())
}
// ANCHOR_END: serve

/// Accepts connections forever (until its task is cancelled), one task per client.
// ANCHOR: accept_loop
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, alive: Sender<()>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => match chat_net::classify_accept_error(&err) {
                AcceptError::Retry => continue,
                // Out of descriptors: accepting again at once would fail again at once. The
                // timer parks this task; the clients' tasks go on meanwhile.
                AcceptError::Backoff => {
                    task::sleep(chat_net::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match shared.join(&stream) {
            Ok((id, bell)) => {
                // The JoinHandle is dropped: the task runs on, detached.
                task::spawn(client(Arc::clone(&shared), id, stream, bell, alive.clone()));
            }
            Err(ServerFull) => refuse(stream),
        }
    }
}
// ANCHOR_END: accept_loop

/// `! server full`, then close: back to a blocking `std` socket for `chat_net::refuse`.
fn refuse(stream: TcpStream) {
    log::debug!("refusing a connection: server full");
    if let Ok(stream) = std::net::TcpStream::try_from(stream) {
        chat_net::refuse(stream);
    }
}

/// One client's life: this task reads, a second one ([`write_loop`]) writes.
// ANCHOR: client
async fn client(
    shared: Arc<Shared>,
    id: ClientId,
    stream: TcpStream,
    bell: Receiver<()>,
    alive: Sender<()>,
) {
    // An async-std `TcpStream` is a reference-counted handle: the clone is the same socket.
    let writer = task::spawn(write_loop(Arc::clone(&shared), id, stream.clone(), bell));
    if let Err(err) = read_loop(&shared, id, &stream).await {
        log::debug!("client {id}: {err}");
    }
    // EOF, an error, or the socket was shut down (by the writer after `/quit`, or by the
    // dispatcher for a slow consumer). The room hears that the client left; dropping its
    // doorbell ends an idle writer, and shutting the socket down ends a writing one.
    shared.leave(id);
    let _ = stream.shutdown(Both::Both);
    writer.await;
    drop(alive);
}
// ANCHOR_END: client

/// Reads until EOF, handing every chunk of bytes to the shared server.
///
/// The usual `let mut buf = [0; N]; stream.read(&mut buf).await` would keep `buf` inside this
/// task's state while it waits, for every idle client. Instead we poll the socket ourselves and
/// lend it the thread's buffer only for the duration of one `poll_read`: when the socket has
/// no data, `poll_read` registers the task's waker with the reactor and returns `Pending`
/// without keeping the buffer, and when it has data we feed it to the server right there,
/// before giving the buffer back.
// ANCHOR: read_loop
async fn read_loop(shared: &Shared, id: ClientId, stream: &TcpStream) -> io::Result<()> {
    loop {
        let n = future::poll_fn(|cx| {
            READ_BUFFER.with_borrow_mut(|buf| {
                let n = ready!(Pin::new(&mut &*stream).poll_read(cx, buf))?;
                shared.receive(id, &buf[..n]);
                Poll::Ready(Ok::<_, io::Error>(n))
            })
        })
        .await?;
        if n == 0 {
            return Ok(());
        }
        // One read per turn. While a socket has data, `poll_read` is ready at once, and
        // nothing in async-std preempts a task that is always ready: a client that sends
        // without pause would keep this executor thread, and every task queued on it,
        // waiting. Yielding puts the task at the back of the queue.
        task::yield_now().await;
    }
}
// ANCHOR_END: read_loop

/// Waits for the doorbell, then writes what the outbox holds; ends after `/quit` or shutdown
/// (once the goodbye is written), when the client is gone, or on a write error.
// ANCHOR: write_loop
async fn write_loop(shared: Arc<Shared>, id: ClientId, stream: TcpStream, bell: Receiver<()>) {
    let result = async {
        // `recv` fails once the doorbell's sender is dropped: the client left.
        while bell.recv().await.is_ok() {
            loop {
                match shared.output(id) {
                    Output::Lines(lines) => write_lines(&stream, lines).await?,
                    Output::Nothing => break,
                    Output::Finished => return Ok(()),
                }
            }
        }
        Ok::<_, io::Error>(())
    }
    .await;
    if let Err(err) = result {
        log::debug!("client {id}: {err}");
    }
    // Sends FIN after what was written; the reader sees the end of the stream and cleans up.
    let _ = stream.shutdown(Both::Both);
}

/// Writes whole lines, up to [`MAX_IOVECS`] per system call (`writev`).
async fn write_lines(mut stream: &TcpStream, mut lines: Vec<Bytes>) -> io::Result<()> {
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
                // async-std's timers live in the same reactor as its sockets (`async-io`).
                task::sleep(at.saturating_duration_since(Instant::now())).await;
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
/// What every task shares: the protocol, and how to reach each client's writer.
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
    /// How to reach each connected client's tasks.
    clients: IdMap<Client>,
}

/// A client as the dispatcher sees it.
#[derive(Debug)]
struct Client {
    /// Rung (with `try_send`, never waiting) when the client's outbox has bytes; capacity 1,
    /// so a full doorbell just means "already rung".
    bell: Sender<()>,
    /// The client's socket, to shut down at once when it is dropped as a slow consumer.
    stream: TcpStream,
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
    fn join(&self, stream: &TcpStream) -> Result<(ClientId, Receiver<()>), ServerFull> {
        let mut state = self.lock();
        let id = state.server.connect()?;
        let (bell, rung) = channel::bounded(1);
        let stream = stream.clone();
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
                let _ = client.stream.shutdown(Both::Both);
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
                // both of its tasks wake up with an error or EOF.
                Event::Close(_) if !has_bytes => {
                    let _ = client.stream.shutdown(Both::Both);
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
    use std::io::{BufRead, BufReader, Write};

    /// The library on its own: a client is welcomed, talks, and hears the shutdown; `run`
    /// returns once `shutdown` is triggered.
    #[test]
    fn welcome_then_shutdown() {
        let listener = chat_net::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new().unwrap();
        let server = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || run(listener, Config::default(), shutdown))
        };
        let stream = std::net::TcpStream::connect(addr).unwrap();
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

    /// An idle client costs its tasks' state and no buffer: the reader and the writer
    /// together stay well under 1 KiB. (A `[u8; 4096]` kept across an `.await` would fail
    /// this.)
    #[test]
    fn an_idle_client_holds_no_buffer() {
        task::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let shared = Arc::new(Shared::new(Limits::default()));
            let (id, bell) = shared.join(&stream).unwrap();
            let (alive, _all_gone) = channel::bounded(1);
            let writer = write_loop(Arc::clone(&shared), id, stream.clone(), bell.clone());
            let reader = client(Arc::clone(&shared), id, stream, bell, alive);
            let (reader, writer) = (size_of_val(&reader), size_of_val(&writer));
            assert!(
                reader + writer < 1024,
                "a client's two tasks hold {reader} + {writer} bytes"
            );
        });
    }
}
