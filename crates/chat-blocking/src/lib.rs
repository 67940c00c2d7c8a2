//! The session of the blocking stages: one client, served by one thread that blocks in `read`.
//!
//! Stages 01 (sequential), 02 (a thread per client) and 03 (a thread pool) run exactly this
//! code for each client; they differ only in *who* runs it: the accepting thread itself, a new
//! thread, or a pool worker. That difference is the lesson of their chapters, so the session
//! lives here once.
//!
//! ## How bytes move
//!
//! A client's thread spends its life blocked in `read` on that client's socket. When a line
//! arrives it locks the shared [`Hub`], lets it decide who gets what, unlocks, and then writes
//! each line straight into each recipient's socket.
//!
//! Those writes must never block: a thread blocked writing to a client that does not read
//! would stop serving its own client, and everybody behind it would wait. So every write is
//! `send(.., MSG_DONTWAIT)`, and the recipient's **kernel send buffer is its outbox**: we size
//! it from `--outbox-bytes` (`SO_SNDBUF`, with headroom for the kernel's per-write bookkeeping:
//! see [`SNDBUF_PER_OUTBOX_BYTE`]). If a
//! line does not fit, the recipient is a slow consumer: its socket is shut down, its own thread
//! sees the end of its stream and announces `(slow consumer)`. Nobody ever waits for it.
//!
//! What this design cannot do is *coalesce*: each line to each recipient is one system call.
//! The readiness stages (04–06) queue lines in user space and write many per call.

use std::io::{self, Read as _};
use std::net::{Shutdown as Both, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chat_core::hub::IdMap;
use chat_core::{Action, Bytes, ClientId, Framer, Hub, Limits};
use socket2::SockRef;

use chat_net::Shutdown;

/// Bytes read per `read` call. On the stack of the client's thread: no heap per client.
const READ_BUF: usize = 4096;

/// `SO_SNDBUF` is asked for as this many times `--outbox-bytes`. Linux charges a send buffer
/// not only for the bytes queued but for its own bookkeeping of each write (a socket buffer of
/// roughly a kilobyte, even for a 30-byte line), and then doubles what we ask for. Measured here
/// with 200-byte lines, asking for exactly `--outbox-bytes` = 4096 held only 9 lines before the
/// client counted as slow. Four times the bound holds about as many small lines as the
/// user-space outboxes of the readiness stages do.
const SNDBUF_PER_OUTBOX_BYTE: usize = 4;

/// Everything the client threads share.
#[derive(Debug)]
pub struct Shared {
    /// The hub and the sockets to deliver to, behind one lock.
    state: Mutex<State>,
    /// `--max-clients` and `--outbox-bytes`.
    limits: Limits,
    /// Connections admitted and not yet finished (including ones waiting for a worker).
    open: AtomicUsize,
    /// Set when the server stops: sessions that have not started yet end at once.
    stopping: AtomicBool,
}

/// The part of [`Shared`] behind the lock.
#[derive(Debug, Default)]
struct State {
    /// Rooms and nicks.
    hub: Hub,
    /// The socket of every client the hub knows, to write its lines to.
    conns: IdMap<Arc<Conn>>,
}

/// A client's socket as the other threads see it.
#[derive(Debug)]
struct Conn {
    /// The client's socket, shared with the thread that reads from it (not a `dup`: a second
    /// descriptor per client would halve how many clients fit under `ulimit -n`).
    stream: Arc<TcpStream>,
    /// Set by whichever thread found this client's send buffer full.
    slow: AtomicBool,
}

/// A connection that was admitted (it counts towards `--max-clients`) and waits to be served.
#[derive(Debug)]
pub struct Connection {
    /// What all sessions share.
    shared: Arc<Shared>,
    /// The client's socket.
    stream: Arc<TcpStream>,
}

impl Shared {
    /// Shared state for a server with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            limits,
            open: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// Takes a new connection, or refuses it with `! server full` when `--max-clients`
    /// connections are already open. Only the accepting thread calls this.
    pub fn admit(self: &Arc<Self>, stream: TcpStream) -> Option<Connection> {
        if self.open.load(Ordering::SeqCst) >= self.limits.max_clients {
            log::debug!("refusing a connection: {} open", self.limits.max_clients);
            chat_net::refuse(stream);
            return None;
        }
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(Connection {
            shared: Arc::clone(self),
            stream: Arc::new(stream),
        })
    }

    /// Stops the server: every client hears `* server shutting down` and is closed; sessions
    /// not started yet end as soon as they start.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut state = self.lock();
        let mut actions = Vec::new();
        state.hub.shutdown(&mut actions);
        let deliveries = resolve(&state.conns, actions);
        drop(state);
        deliver(deliveries);
    }

    /// The lock, even if a thread panicked while holding it (the hub is still consistent:
    /// every hub method finishes its bookkeeping before it could panic).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Spawns a thread that waits for `shutdown`, then stops `shared` and wakes the thread blocked
/// in `accept` on `listener` (shutting a listening socket down makes `accept` fail at once).
pub fn stop_on(
    shutdown: &Shutdown,
    shared: &Arc<Shared>,
    listener: &TcpListener,
) -> io::Result<()> {
    let (shutdown, shared, listener) =
        (shutdown.clone(), Arc::clone(shared), listener.try_clone()?);
    std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            shutdown.wait();
            log::info!("shutting down");
            shared.shutdown();
            let _ = SockRef::from(&listener).shutdown(Both::Read);
        })?;
    Ok(())
}

impl Connection {
    /// Serves this client until it leaves, fails, is dropped as a slow consumer, or the server
    /// stops. Never panics on anything the client sends.
    // ANCHOR: serve
    pub fn serve(&self) {
        let shared = Arc::clone(&self.shared);
        let Some((id, conn)) = self.join() else {
            return;
        };
        let mut framer = Framer::new();
        let mut buf = [0u8; READ_BUF];
        loop {
            // Block until this client sends something. This is the line the whole book is
            // about: while this thread waits here, it can do nothing else.
            let n = match (&*self.stream).read(&mut buf) {
                Ok(0) => break, // the client closed, or another thread shut us down
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    log::debug!("client {id}: {err}");
                    break;
                }
            };
            // Lock the hub only to decide who gets what; write after unlocking.
            let mut actions = Vec::new();
            let deliveries = {
                let mut state = shared.lock();
                framer.push(&buf[..n], |frame| state.hub.handle(id, frame, &mut actions));
                resolve(&state.conns, actions)
            };
            let quit = deliveries
                .iter()
                .any(|(c, d)| Arc::ptr_eq(c, &conn) && d.is_none());
            deliver(deliveries);
            if quit {
                break;
            }
        }
        self.leave(id, &conn);
    }
    // ANCHOR_END: serve

    /// Tells the client the server is full and closes it (e.g. no thread could be started).
    pub fn refuse(&self) {
        let _ = (&*self.stream).write_all_nonblocking(chat_core::SERVER_FULL_LINE);
        let _ = self.stream.shutdown(Both::Both);
    }

    /// Registers the client with the hub and sends its welcome. The welcome is written while
    /// the lock is held, so no other thread can write to this client before it.
    fn join(&self) -> Option<(ClientId, Arc<Conn>)> {
        let shared = &self.shared;
        // The kernel's send buffer is this client's outbox (see the module docs).
        let socket = SockRef::from(&*self.stream);
        let _ = socket.set_send_buffer_size(shared.limits.outbox_bytes * SNDBUF_PER_OUTBOX_BYTE);
        let _ = socket.set_nodelay(true);
        let conn = Arc::new(Conn {
            stream: Arc::clone(&self.stream),
            slow: AtomicBool::new(false),
        });
        let mut state = shared.lock();
        if shared.stopping.load(Ordering::SeqCst) {
            drop(state);
            send(&conn, chat_core::SHUTDOWN_LINE);
            return None;
        }
        let mut actions = Vec::new();
        let id = state.hub.connect(&mut actions);
        state.conns.insert(id, Arc::clone(&conn));
        deliver(resolve(&state.conns, actions));
        log::debug!("client {id} joined ({} connected)", state.hub.len());
        Some((id, conn))
    }

    /// The session is over: the room hears that the client left (and why, if it was too slow).
    fn leave(&self, id: ClientId, conn: &Conn) {
        let reason = conn
            .slow
            .load(Ordering::SeqCst)
            .then_some(chat_core::SLOW_CONSUMER);
        let mut actions = Vec::new();
        let deliveries = {
            let mut state = self.shared.lock();
            state.hub.disconnect(id, reason, &mut actions);
            state.conns.remove(&id);
            resolve(&state.conns, actions)
        };
        deliver(deliveries);
        let _ = self.stream.shutdown(Both::Both);
        log::debug!("client {id} left");
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One thing to do to one socket: `Some(line)` to write it, `None` to close it after what
/// was written before.
type Delivery = (Arc<Conn>, Option<Bytes>);

/// Turns the hub's actions into sockets to write to, while the lock is held.
fn resolve(conns: &IdMap<Arc<Conn>>, actions: Vec<Action>) -> Vec<Delivery> {
    actions
        .into_iter()
        .filter_map(|action| match action {
            Action::Send(to, line) => conns.get(&to).map(|c| (Arc::clone(c), Some(line))),
            Action::Close(to) => conns.get(&to).map(|c| (Arc::clone(c), None)),
            Action::Release(_) => None, // FIXME(port): release after delivering, not here
        })
        .collect()
}

/// Performs deliveries in order. Writes never block (see [`send`]).
// ANCHOR: deliver
fn deliver(deliveries: Vec<Delivery>) {
    for (conn, what) in deliveries {
        match what {
            Some(line) => send(&conn, &line),
            None => {
                // `/quit` or shutdown: what was sent stays queued in the kernel and still
                // reaches the client before the FIN.
                let _ = conn.stream.shutdown(Both::Both);
            }
        }
    }
}

/// Writes one whole line into a client's kernel send buffer without blocking, or marks the
/// client a slow consumer and shuts its socket down (its own thread then sees EOF).
fn send(conn: &Conn, line: &[u8]) {
    if conn.slow.load(Ordering::Relaxed) {
        return;
    }
    match (&*conn.stream).write_all_nonblocking(line) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
            if !conn.slow.swap(true, Ordering::SeqCst) {
                log::debug!("slow consumer: send buffer full");
                let _ = conn.stream.shutdown(Both::Both);
            }
        }
        Err(_) => {} // the client is gone; its own thread will notice and clean up
    }
}
// ANCHOR_END: deliver

/// `send(2)` with `MSG_DONTWAIT`: non-blocking for this one call, whatever the socket's mode
/// (the client's own thread keeps blocking in `read` on the same socket).
trait WriteNonBlocking {
    /// Writes all of `buf` now, or fails with `WouldBlock` if the send buffer cannot take it
    /// (a partly written line counts as a failure: the client is dropped anyway).
    fn write_all_nonblocking(self, buf: &[u8]) -> io::Result<()>;
}

impl WriteNonBlocking for &TcpStream {
    fn write_all_nonblocking(self, buf: &[u8]) -> io::Result<()> {
        loop {
            match SockRef::from(self).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(_) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }
}
