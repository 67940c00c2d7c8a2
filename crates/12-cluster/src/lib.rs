//! # Stage 12: a cluster of nodes on Redis
//!
//! One process stops somewhere: at its descriptor limit (`ulimit -n`, 20,000 here and not to be
//! raised), at the cores its event loops can use, and at being one failure domain. This stage
//! is the chat on several processes — *nodes* — that share rooms through a broker, Redis. Each
//! node is stage 08's server (tokio, a task per client, [`chat_tasks`] for the shared server)
//! whose `chat_core::Server` is `Server::clustered`: the protocol's cluster half is in
//! `chat_core::cluster`, sans-IO, and this crate does its I/O — one more task, the
//! [`broker`], with two connections to Redis.
//!
//! ```text
//! redis-server --port 6379 --save '' &
//! cargo run --release -p chat-cluster -- --addr 127.0.0.1:7001 &
//! cargo run --release -p chat-cluster -- --addr 127.0.0.1:7002 &
//! nc 127.0.0.1 7001      # and in another terminal: nc 127.0.0.1 7002
//! ```
//!
//! ## The design, as the core decides it and this crate carries it out
//!
//! - **Publish once, fan out locally.** A line to a room is written to the local members at
//!   once and published once on the room's channel; every node with members there (and only
//!   those: a node subscribes to a room's channel while it has members in it) delivers it to
//!   its own. Discord's "send once per node", Centrifugo's Redis engine.
//! - **Presence** on one channel every node hears, with a record per member in a Redis hash
//!   written in the same script as the message that announces it, so a node that (re)starts
//!   loads exactly what was announced.
//! - **Claims.** A nick is set on Redis, atomically, before it is used; an arrival's `guestN`
//!   too. Meanwhile the client's input waits, as it waits for room in flow control.
//! - **Leases.** Every node publishes that it is alive every `HEARTBEAT` and keeps a key that
//!   expires after `LEASE`; a node not heard from for `LEASE` is lost: the others announce its
//!   members `(node lost)`, and its claims are stale.
//! - **Flow control across nodes**: a node reads messages from Redis only while its members
//!   they reach have room, and reads its clients only while its queue for Redis has room.
//!
//! What Redis pub/sub does not promise, this stage does not either: a message reaches the
//! nodes subscribed *when it is published* (at most once), nothing is kept for a node that is
//! cut off, and a node that reads too slowly is disconnected by Redis when its output buffer
//! passes `client-output-buffer-limit pubsub` (what was in it is lost).

#![forbid(unsafe_code)]

pub mod broker;
pub mod resp;

use std::io::{self, IoSlice, Read as _};
use std::net::Shutdown as Direction;
use std::num::NonZeroUsize;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_core::cluster::NodeId;
use chat_core::{Flushed, Server};
use chat_net::{AcceptError, Config, Shutdown};
use chat_tasks::Doorbell;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The shared server, with tokio's socket type (see [`chat_tasks::Shared`]).
type Shared = chat_tasks::Shared<TcpStream>;

/// A client, as its task holds it (see [`chat_tasks::Client`]).
type Client = chat_tasks::Client<TcpStream>;

/// Bytes read per `read`, into a buffer on the stack of the thread that polls the task.
const READ_BUF: usize = 4096;

/// After the clients are closed at shutdown, how long the broker may take to publish what is
/// left (the departures of the last members): together with `chat_tasks::STOP_WAIT`, the
/// node exits within `SHUTDOWN_GRACE` and about a second and a half.
pub const FLUSH_WAIT: Duration = Duration::from_secs(1);

// ANCHOR: flags
/// The flags of this stage, on top of [`chat_net::Config`].
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterConfig {
    /// The broker every node of the cluster shares.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Threads of the node's tokio runtime: 1 (the default) runs it on one thread, as one
    /// event loop; scale out with more nodes rather than more threads.
    #[arg(long, default_value = "1")]
    pub threads: NonZeroUsize,
}
// ANCHOR_END: flags

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: "redis://127.0.0.1:6379".to_owned(),
            threads: NonZeroUsize::MIN,
        }
    }
}

// ANCHOR: run
/// Serves clients as one node of the cluster on `flags.redis` until `shutdown` is triggered.
pub fn run(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
    flags: ClusterConfig,
) -> io::Result<()> {
    let redis = redis::Client::open(flags.redis.as_str())
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
    let node = random_node_id()?;
    log::info!("node {node}, broker {}", flags.redis);
    let runtime = if flags.threads.get() == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(flags.threads.get())
            .enable_all()
            .build()?
    };
    let result = runtime.block_on(serve(listener, config, shutdown, node, redis));
    drop(runtime); // the tasks of clients already closed go with it
    result
}

/// A node's id: 8 random bytes from the kernel (no crate needed for that).
fn random_node_id() -> io::Result<NodeId> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(NodeId(u64::from_le_bytes(bytes)))
}

/// The node: its broker task, its timer task, and the accept loop; then the goodbye.
async fn serve(
    listener: std::net::TcpListener,
    config: Config,
    shutdown: Shutdown,
    node: NodeId,
    redis: redis::Client,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    // The shutdown switch is a socket pair that turns readable on SIGINT/SIGTERM: watched by
    // tokio like any socket (a duplicate of its descriptor), never read.
    let stop = std::os::unix::net::UnixStream::from(shutdown.as_fd().try_clone_to_owned()?);
    stop.set_nonblocking(true)?;
    let stop = UnixStream::from_std(stop)?;
    let server = Server::clustered(config.limits(), node);
    let shared = Arc::new(Shared::with_server(server, write, hang_up));
    // Rung after every call into the server: the core may have queued work for the broker.
    let bell = Arc::new(Doorbell::new());
    let stopping = Arc::new(AtomicBool::new(false));
    let broker = broker::Broker::new(
        Arc::clone(&shared),
        node,
        redis,
        Arc::clone(&bell),
        Arc::clone(&stopping),
    );
    let broker = tokio::spawn(broker.run());
    let timer = tokio::spawn(timer(Arc::clone(&shared), Arc::clone(&bell)));

    accept(&listener, &stop, &shared, &bell).await;

    log::info!(
        "node {node}: shutting down ({} clients)",
        shared.connections()
    );
    drop(listener);
    shared.shutdown(); // its members' departures are queued for the broker
    ring(&bell);
    if tokio::time::timeout(chat_tasks::STOP_WAIT, shared.stopped())
        .await
        .is_err()
    {
        log::warn!("node {node}: clients still open after the grace; dropping them");
    }
    // Whatever the broker still has to publish, within FLUSH_WAIT.
    stopping.store(true, Ordering::SeqCst);
    ring(&bell);
    if tokio::time::timeout(FLUSH_WAIT, broker).await.is_err() {
        log::warn!("node {node}: the broker queue was not flushed within {FLUSH_WAIT:?}");
    }
    timer.abort();
    Ok(())
}
// ANCHOR_END: run

/// Wakes the broker task (the core may have queued something for it).
fn ring(bell: &Doorbell) {
    if let Some(waker) = bell.ring() {
        waker.wake();
    }
}

// ANCHOR: accept
/// Accepts until the shutdown descriptor becomes readable (it is never read: readable means
/// stop). Out of descriptors, it pauses for `ACCEPT_BACKOFF` rather than spin.
async fn accept(
    listener: &TcpListener,
    stop: &UnixStream,
    shared: &Arc<Shared>,
    bell: &Arc<Doorbell>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.readable() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                match shared.join(stream) {
                    // Its claim of a `guestN` is queued: the broker has work.
                    Ok(me) => drop(tokio::spawn(client(me, Arc::clone(bell)))),
                    Err(stream) => {
                        if let Ok(stream) = stream.into_std() {
                            chat_net::refuse(stream);
                        }
                    }
                }
                ring(bell);
            }
            Err(err) if chat_net::classify_accept_error(&err) == AcceptError::Backoff => {
                tokio::time::sleep(chat_net::ACCEPT_BACKOFF).await;
            }
            Err(_) => {}
        }
    }
}
// ANCHOR_END: accept

/// `writev` without waiting, the tokio way (tokio learns the socket is full).
fn write(socket: &TcpStream, lines: &[IoSlice<'_>]) -> io::Result<usize> {
    socket.try_write_vectored(lines)
}

/// `shutdown(SHUT_WR)` on a borrowed tokio socket.
fn hang_up(socket: &TcpStream) -> io::Result<()> {
    SockRef::from(socket).shutdown(Direction::Write)
}

// ANCHOR: client
/// One client's task. Stage 08's, with one difference: after each call into the server it
/// rings the broker's bell, since a line may have queued a message for the other nodes.
async fn client(mut me: Client, bell: Arc<Doorbell>) {
    if let Err(err) = converse(&mut me, &bell).await {
        log::debug!("client {}: {err}", me.id());
    }
    drop(me); // the server hears that it left: its departure is queued for the broker
    ring(&bell);
}

/// Waits for what concerns this client and does it, until the server has closed it.
async fn converse(me: &mut Client, bell: &Doorbell) -> io::Result<()> {
    // What it is owed may wait for the broker (the server's fences: a line is written only
    // once what it depends on is published). Then a flush writes all it may and says so; the
    // rest goes out when the server says (a write-through, or a ring if the socket is full),
    // and until then there is no point waiting for the socket to be writable.
    let mut held = false;
    while let Some(want) = me.want() {
        let interest = [
            (want.read, Interest::READABLE),
            (want.write && !held, Interest::WRITABLE),
        ]
        .into_iter()
        .filter_map(|(wanted, interest)| wanted.then_some(interest))
        .reduce(|a, b| a | b);
        let ready = tokio::select! {
            biased;
            () = me.rung() => None,
            ready = me.socket().ready(interest.unwrap_or(Interest::READABLE)),
                if interest.is_some() => Some(ready?),
        };
        let Some(ready) = ready else {
            held = false;
            continue;
        };
        if ready.is_writable() {
            held = me.flush()? == Flushed::All;
        }
        let more = ready.is_readable() && read_once(me)?;
        ring(bell);
        if more {
            tokio::task::yield_now().await; // a full buffer: let the others have a turn
        }
    }
    Ok(())
}

/// One read into a stack buffer (not a task's state: see stage 08); true if it came back
/// full.
fn read_once(me: &mut Client) -> io::Result<bool> {
    let mut buf = [0u8; READ_BUF];
    match me.socket().try_read(&mut buf) {
        Ok(0) => me.eof(),
        Ok(n) => {
            me.receive(&buf[..n]);
            return Ok(n == buf.len());
        }
        Err(err) if err.kind() != io::ErrorKind::WouldBlock => return Err(err),
        Err(_) => {}
    }
    Ok(false)
}
// ANCHOR_END: client

// ANCHOR: timer
/// The server's timer task (slow consumers, goodbyes, and in a cluster the heartbeat and the
/// leases of the others); it rings the broker's bell after each turn.
async fn timer(shared: Arc<Shared>, bell: Arc<Doorbell>) {
    loop {
        let next = shared.tick();
        ring(&bell);
        match next {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                let _ = tokio::time::timeout_at(at, shared.doorbell().rung()).await;
            }
            None => shared.doorbell().rung().await,
        }
    }
}
// ANCHOR_END: timer
