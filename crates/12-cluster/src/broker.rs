//! The node's broker task: what the core asks of Redis, carried out in order, and what the
//! other nodes publish, handed to the core in the order Redis delivered it.
//!
//! One task owns both connections of the node to Redis:
//!
//! - the **command connection** (the redis crate's multiplexed connection): the core's
//!   actions in *batches*, each one pipeline, one batch at a time, so that Redis runs them in
//!   the order the core queued them. Every step that must be atomic is a branch of one Lua
//!   script (`broker.lua`);
//! - the **pub/sub connection** ([`crate::resp::Subscriber`]): `SUBSCRIBE`/`UNSUBSCRIBE`
//!   (an action that follows a `Subscribe` waits for its confirmation), and the messages, read
//!   only while the node can take them.
//!
//! The two meet at the *markers*: a claim's or a presence load's script publishes `mark` on
//! the node's own channel at the instant it runs, and its answer is handed to the core only
//! when that marker comes out of the pub/sub stream, after everything published before it.
//!
//! When Redis fails — a refused connection, an error, a reply that does not come within
//! [`RESPONSE_TIMEOUT`] — the node is cut off: the core is told (`broker_down`), what it
//! queues meanwhile is counted and dropped (claims excepted: they wait for the broker), and
//! the task reconnects with a back-off from [`BACKOFF_MIN`] to [`BACKOFF_MAX`]. Once
//! connected, `broker_up` queues the node's re-registration.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_core::cluster::{Channel, ClusterAction, NodeId, HEARTBEAT};
use chat_core::Server;
use chat_tasks::Doorbell;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};
use tokio::net::TcpStream;

use crate::resp::{Push, Subscriber};

mod commands;

use commands::{Answer, Sent};

/// The shared server, with tokio's socket type.
type Shared = chat_tasks::Shared<TcpStream>;

/// How long a connection attempt to Redis may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a reply from Redis may take before the node considers it gone. Shorter than
/// [`LEASE`], so that a node whose Redis hangs (a stopped process) gives up on it before the
/// others would declare it lost; long enough for a loaded machine.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The first wait before connecting again; it doubles after each failure...
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// ... up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// At most this many actions in one pipeline.
const MAX_BATCH: usize = 256;

/// At most this many pushes parsed ahead of the core (the rest stays in the socket).
const PARSE_AHEAD: usize = 64;

/// How often the count of lost messages is logged, at most, while they are being lost.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The Lua script of every atomic step.
const SCRIPT: &str = include_str!("broker.lua");

/// What the marker on a node's own channel says.
const MARK: &[u8] = b"mark";

/// What the broker task needs from the rest of the node.
#[derive(Debug)]
pub struct Broker {
    /// The server it acts for.
    shared: Arc<Shared>,
    /// This node.
    node: NodeId,
    /// Where Redis is.
    client: redis::Client,
    /// Rung after every call into the server: the core may have queued actions.
    bell: Arc<Doorbell>,
    /// Set (and the bell rung) when the node stops: carry out what is queued, then return.
    stopping: Arc<AtomicBool>,
    /// The script (its hash, for `EVALSHA`).
    script: redis::Script,
    /// Claims that could not be made (the broker was unreachable): made once it is back.
    parked: VecDeque<ClusterAction>,
    /// Messages that could not be published.
    lost: Lost,
}

/// A count of the messages that could not be published, logged as it grows.
#[derive(Debug)]
struct Lost {
    /// All of them, since the start.
    total: u64,
    /// How many of them the log has not mentioned yet.
    unlogged: u64,
    /// When the log last mentioned them.
    logged: Option<Instant>,
}

impl Lost {
    /// `n` more were lost: logged at once, or within [`LOG_EVERY`].
    fn add(&mut self, n: u64) {
        self.total += n;
        self.unlogged += n;
        if self.unlogged > 0 && self.logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            self.log();
        }
    }

    fn log(&mut self) {
        if self.unlogged > 0 {
            log::warn!(
                "broker unreachable: {} messages to other nodes lost ({} lost in all)",
                self.unlogged,
                self.total
            );
        }
        self.unlogged = 0;
        self.logged = Some(Instant::now());
    }
}

/// How one pass over a connection ended.
enum Ended {
    /// The node stops, and everything queued was carried out.
    Stopped,
    /// Redis failed.
    Failed(String),
}

/// What woke the broker task up.
enum Woke {
    /// The reply to the batch on its way.
    Reply(Reply),
    /// The pub/sub connection has bytes (or failed).
    Readable(std::io::Result<()>),
    /// The bell: the core may have something.
    Rung,
    /// Time to refresh the lease.
    Lease,
    /// Subscriptions that Redis did not confirm in time.
    Unconfirmed,
}

/// A connection to Redis (both of them) and what is in progress on it.
struct Link {
    /// Commands.
    cmd: MultiplexedConnection,
    /// Pub/sub.
    sub: Subscriber,
    /// The batch sent on `cmd` and not answered yet.
    flight: Option<Flight>,
    /// A batch whose reply was an error, and how many of the core's actions it was: sorted
    /// out by `Broker::fail`.
    unanswered: Vec<Sent>,
    /// See `unanswered`.
    unsettled: u64,
    /// `SUBSCRIBE` confirmations still awaited: until then no further action is carried out.
    confirming: usize,
    /// How many of the core's actions the run of subscriptions being confirmed was.
    subscribing: u64,
    /// When the confirmations must have come (as a reply must within [`RESPONSE_TIMEOUT`]).
    confirm_by: Option<tokio::time::Instant>,
    /// The node's own channel is subscribed: markers can be heard (claims wait for it).
    heard: bool,
    /// Answers that wait for their marker, oldest first.
    answers: VecDeque<Answer>,
    /// Pushes parsed and not handed to the core yet, oldest first. The first one waits when
    /// it is a message the node cannot take yet (flow control), or a marker whose answer has
    /// not come.
    pending: VecDeque<Push>,
    /// The first action of the next batch (taken from the core, of another kind).
    next: Option<ClusterAction>,
    /// The lease is due for its refresh.
    lease_due: bool,
}

/// The reply to a pipeline of a batch: one result per command.
type Reply = RedisResult<Vec<RedisResult<Value>>>;

/// A pipeline on its way: the reply, and what each command in it was.
struct Flight {
    /// The reply, one result per command.
    reply: Pin<Box<dyn Future<Output = Reply> + Send>>,
    /// What each command was, in order.
    sent: Vec<Sent>,
    /// How many of the core's actions the batch was (`Server::broker_done` once answered).
    taken: u64,
}

impl Broker {
    /// The broker of `node`, for `shared`, on Redis at `client`.
    pub fn new(
        shared: Arc<Shared>,
        node: NodeId,
        client: redis::Client,
        bell: Arc<Doorbell>,
        stopping: Arc<AtomicBool>,
    ) -> Self {
        Self {
            shared,
            node,
            client,
            bell,
            stopping,
            script: redis::Script::new(SCRIPT),
            parked: VecDeque::new(),
            lost: Lost {
                total: 0,
                unlogged: 0,
                logged: None,
            },
        }
    }

    // ANCHOR: run
    /// The task: connected, serve; cut off, count and reconnect; until the node stops.
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connect().await {
                Ok(mut link) => {
                    log::info!("node {}: connected to the broker", self.node);
                    backoff = BACKOFF_MIN;
                    self.up();
                    match self.serve(&mut link).await {
                        Ended::Stopped => break,
                        Ended::Failed(why) => {
                            log::warn!("node {}: broker failed: {why}", self.node);
                            self.fail(link);
                        }
                    }
                }
                Err(err) => log::warn!("node {}: cannot reach the broker: {err}", self.node),
            }
            self.shared.with(|server, now| server.broker_down(now));
            if self.wait_out(backoff).await {
                break;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.lost.log();
        if self.lost.total > 0 {
            log::warn!(
                "{} messages to other nodes were lost in all",
                self.lost.total
            );
        }
    }
    // ANCHOR_END: run

    /// Both connections, the script loaded and the lease taken.
    async fn connect(&self) -> RedisResult<Link> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut cmd = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        self.script.load_async(&mut cmd).await?;
        self.lease_cmd().query_async::<()>(&mut cmd).await?;
        let (host, port) = match self.client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => {
                return Err(redis::RedisError::from(std::io::Error::other(format!(
                    "only redis://HOST:PORT is supported, not {other}"
                ))))
            }
        };
        let sub = tokio::time::timeout(CONNECT_TIMEOUT, Subscriber::connect(&host, port))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        Ok(Link {
            cmd,
            sub,
            flight: None,
            unanswered: Vec::new(),
            unsettled: 0,
            confirming: 0,
            subscribing: 0,
            confirm_by: None,
            heard: false,
            answers: VecDeque::new(),
            pending: VecDeque::new(),
            next: None,
            lease_due: false,
        })
    }

    /// Connected: what the core queued while the broker was away is dropped (and counted),
    /// then the core queues the node's re-registration.
    fn up(&mut self) {
        let (parked, lost) = (&mut self.parked, &mut self.lost);
        self.shared.with(|server, now| {
            drain_while_down(server, parked, lost);
            server.broker_up(now);
        });
    }

    /// The connection failed: what was on its way is lost, except claims, which wait for the
    /// broker, and answers already in, which the core gets now (their order no longer
    /// matters: whatever came before them on the stream is gone anyway).
    fn fail(&mut self, mut link: Link) {
        let mut unanswered = std::mem::take(&mut link.unanswered);
        let mut settled = link.subscribing + link.unsettled;
        if let Some(flight) = link.flight.take() {
            settled += flight.taken;
            unanswered.extend(flight.sent);
        }
        for sent in unanswered {
            match sent {
                Sent::Publish => self.lost.add(1),
                Sent::Claim { client, nick } => {
                    self.parked.push_back(ClusterAction::Claim { client, nick });
                }
                Sent::Guest { client } => {
                    self.parked.push_back(ClusterAction::ClaimGuest { client });
                }
                _ => {}
            }
        }
        let answers: Vec<Answer> = link.answers.drain(..).collect();
        self.shared.with(|server, now| {
            server.broker_done(settled); // given up: lines that waited for them go on
            for answer in answers {
                if let Answer::Claimed { .. } = answer {
                    answer.give(server, now); // a presence load is done again when back
                }
            }
        });
    }

    /// Cut off: counts (and drops) what the core queues, until the back-off has passed.
    /// True when the node stops meanwhile.
    async fn wait_out(&mut self, backoff: Duration) -> bool {
        let until = tokio::time::Instant::now() + backoff;
        loop {
            let (parked, lost) = (&mut self.parked, &mut self.lost);
            self.shared
                .with(|server, _| drain_while_down(server, parked, lost));
            if self.stopping.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::timeout_at(until, self.bell.rung())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    // ANCHOR: serve
    /// Serves one connection until Redis fails or the node has stopped.
    async fn serve(&mut self, link: &mut Link) -> Ended {
        let mut lease = tokio::time::interval(HEARTBEAT);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // What can be done without waiting: hand over what the stream brought, then
            // send the next batch if nothing else is on its way.
            if let Err(why) = self.hand_over(link) {
                return Ended::Failed(why);
            }
            if link.flight.is_none() && link.confirming == 0 {
                if let Err(why) = self.send_batch(link).await {
                    return Ended::Failed(why);
                }
            }
            let idle = link.flight.is_none() && link.confirming == 0 && link.next.is_none();
            if idle && self.stopping.load(Ordering::SeqCst) {
                return match self.leave(link).await {
                    Ok(()) => Ended::Stopped,
                    Err(err) => Ended::Failed(err.to_string()),
                };
            }
            // Read the stream only when everything read so far was handed over.
            let reading = link.pending.is_empty();
            let waiting = link.flight.is_some();
            let confirm_by = link.confirm_by.filter(|_| link.confirming > 0);
            let woke = {
                let Link { flight, sub, .. } = &mut *link;
                let reply = async {
                    match flight.as_mut() {
                        Some(flight) => flight.reply.as_mut().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    reply = reply, if waiting => Woke::Reply(reply),
                    ready = sub.readable(), if reading => Woke::Readable(ready),
                    // The core may have queued actions, or made room for a waiting message.
                    () = self.bell.rung() => Woke::Rung,
                    _ = lease.tick() => Woke::Lease,
                    () = sleep_until(confirm_by), if confirm_by.is_some() => Woke::Unconfirmed,
                }
            };
            let result = match woke {
                Woke::Reply(reply) => match link.flight.take() {
                    Some(flight) => {
                        let taken = flight.taken;
                        let answered = self.answered(link, flight.sent, reply);
                        if answered.is_ok() {
                            // Done: the lines that waited for it go on.
                            self.shared.with(|server, _| server.broker_done(taken));
                        } else {
                            link.unsettled = taken; // given up in `fail`
                        }
                        answered
                    }
                    None => Ok(()),
                },
                Woke::Readable(ready) => ready
                    .and_then(|()| link.sub.read_more())
                    .map_err(|e| e.to_string()),
                Woke::Rung => Ok(()),
                Woke::Lease => {
                    link.lease_due = true;
                    Ok(())
                }
                Woke::Unconfirmed => Err(format!(
                    "subscriptions not confirmed within {RESPONSE_TIMEOUT:?}"
                )),
            };
            if let Err(why) = result {
                return Ended::Failed(why);
            }
        }
    }
    // ANCHOR_END: serve

    // ANCHOR: hand_over
    /// Hands what the stream brought to the core, in order, under one lock: messages from
    /// other nodes (until one does not fit: it waits, and is offered again at the next
    /// wake-up), markers (their answer, if it is in; else everything behind waits for it), and
    /// confirmations. Parses [`PARSE_AHEAD`] pushes at a time, until what was read is handed
    /// over or something waits: only then is the socket read again.
    fn hand_over(&mut self, link: &mut Link) -> Result<(), String> {
        let own = Channel::Node(self.node).name().into_bytes();
        let Link {
            sub,
            pending,
            answers,
            confirming,
            subscribing,
            heard,
            ..
        } = link;
        let mut bad = 0usize;
        let mut garbled = None;
        while pending.len() < PARSE_AHEAD {
            match sub.parsed() {
                Ok(Some(push)) => pending.push_back(push),
                Ok(None) => break,
                Err(g) => {
                    garbled = Some(g.to_string());
                    break;
                }
            }
        }
        while !pending.is_empty() {
            let mut stuck = false;
            self.shared.with(|server, now| {
                while let Some(push) = pending.front() {
                    match push {
                        Push::Message { channel, payload }
                            if *channel == own && payload == MARK =>
                        {
                            match answers.pop_front() {
                                Some(answer) => answer.give(server, now),
                                None => break, // its answer is still on its way
                            }
                        }
                        Push::Message { payload, .. } => match server.remote(payload, now) {
                            Ok(true) => {}
                            Ok(false) => break, // a local member has no room: wait
                            Err(chat_core::cluster::BadMessage) => bad += 1,
                        },
                        Push::Subscribed { channel } => {
                            *confirming = confirming.saturating_sub(1);
                            *heard |= *channel == own;
                            if *confirming == 0 {
                                server.broker_done(std::mem::take(subscribing));
                            }
                        }
                        Push::Unsubscribed => {}
                    }
                    pending.pop_front();
                }
                stuck = !pending.is_empty();
            });
            if stuck || garbled.is_some() {
                break;
            }
            while pending.len() < PARSE_AHEAD {
                match sub.parsed() {
                    Ok(Some(push)) => pending.push_back(push),
                    Ok(None) => break,
                    Err(g) => {
                        garbled = Some(g.to_string());
                        break;
                    }
                }
            }
        }
        if bad > 0 {
            log::warn!(
                "node {}: {bad} malformed messages from the broker dropped",
                self.node
            );
        }
        garbled.map_or(Ok(()), Err)
    }
    // ANCHOR_END: hand_over

    // ANCHOR: send_batch
    /// Takes the next batch of actions from the core and sends it: a run of subscriptions on
    /// the pub/sub connection, or a pipeline of everything else on the command connection.
    async fn send_batch(&mut self, link: &mut Link) -> Result<(), String> {
        let (batch, taken) = self.take_batch(&mut link.next);
        log::trace!("batch of {taken}: {batch:?}");
        let subscriptions = batch.first().is_some_and(is_subscription);
        if subscriptions {
            self.subscribe(link, batch).await?;
            if link.confirming == 0 {
                self.shared.with(|server, _| server.broker_done(taken)); // unsubscribes only
            } else {
                link.subscribing = taken; // done when confirmed (`hand_over`)
            }
            return Ok(());
        }
        let mut batch = batch;
        if link.heard {
            // Claims wait for the broker, and for the node's own channel (their markers).
            batch.extend(self.parked.drain(..));
        }
        let lease = std::mem::take(&mut link.lease_due);
        if batch.is_empty() && !lease {
            if taken > 0 {
                self.shared.with(|server, _| server.broker_done(taken));
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::with_capacity(batch.len() + 1);
        for action in batch {
            sent.push(self.command(&mut pipe, action));
        }
        if lease {
            pipe.add_command(self.lease_cmd()); // alive for another LEASE
            sent.push(Sent::Other);
        }
        let mut cmd = link.cmd.clone();
        link.flight = Some(Flight {
            reply: Box::pin(async move { pipe.query_async(&mut cmd).await }),
            sent,
            taken,
        });
        Ok(())
    }

    /// Up to [`MAX_BATCH`] actions from the core, under one lock, all of one kind
    /// (subscriptions, or the rest); the first of the other kind is kept in `next`. Says how
    /// many actions it took from the core.
    fn take_batch(&self, next: &mut Option<ClusterAction>) -> (Vec<ClusterAction>, u64) {
        let mut batch: Vec<ClusterAction> = Vec::new();
        let mut taken = 0;
        self.shared.with(|server, _| {
            while batch.len() < MAX_BATCH {
                let Some(action) = next.take().or_else(|| server.poll_cluster()) else {
                    break;
                };
                if matches!(action, ClusterAction::ResumeBroker) {
                    // A hint that a waiting message may fit now: it is offered at every
                    // wake-up anyway (see `hand_over`).
                    taken += 1;
                    continue;
                }
                if batch
                    .first()
                    .is_some_and(|first| is_subscription(first) != is_subscription(&action))
                {
                    *next = Some(action);
                    break;
                }
                taken += 1;
                batch.push(action);
            }
        });
        (batch, taken)
    }
    // ANCHOR_END: send_batch

    /// Sends a run of `SUBSCRIBE`/`UNSUBSCRIBE`; the confirmations of the subscriptions are
    /// awaited before any further action.
    async fn subscribe(
        &mut self,
        link: &mut Link,
        batch: Vec<ClusterAction>,
    ) -> Result<(), String> {
        let mut packed = Vec::new();
        for action in batch {
            match action {
                ClusterAction::Subscribe(channel) => {
                    packed.extend(
                        redis::cmd("SUBSCRIBE")
                            .arg(channel.name())
                            .get_packed_command(),
                    );
                    link.confirming += 1;
                    link.confirm_by = Some(tokio::time::Instant::now() + RESPONSE_TIMEOUT);
                }
                ClusterAction::Unsubscribe(channel) => {
                    packed.extend(
                        redis::cmd("UNSUBSCRIBE")
                            .arg(channel.name())
                            .get_packed_command(),
                    );
                }
                _ => {}
            }
        }
        match tokio::time::timeout(RESPONSE_TIMEOUT, link.sub.send(&packed)).await {
            Ok(sent) => sent.map_err(|e| e.to_string()),
            Err(_) => Err(format!("could not subscribe within {RESPONSE_TIMEOUT:?}")),
        }
    }

    /// The node stops: its lease goes, so that its claims are free at once.
    async fn leave(&mut self, link: &mut Link) -> RedisResult<()> {
        redis::cmd("DEL")
            .arg(format!("chat:lease:{}", self.node))
            .query_async::<()>(&mut link.cmd)
            .await
    }
}

/// While the broker is unreachable: what the core queues is dropped, publishes counted as
/// lost, claims kept for when it is back.
fn drain_while_down(server: &mut Server, parked: &mut VecDeque<ClusterAction>, lost: &mut Lost) {
    let mut publishes = 0;
    let mut taken = 0;
    while let Some(action) = server.poll_cluster() {
        taken += 1;
        match action {
            ClusterAction::Publish { .. } => publishes += 1,
            claim @ (ClusterAction::Claim { .. } | ClusterAction::ClaimGuest { .. }) => {
                parked.push_back(claim);
            }
            _ => {}
        }
    }
    server.broker_done(taken); // given up: the lines that waited for them go on
    if publishes > 0 {
        lost.add(publishes);
    }
}

/// True for the actions carried out on the pub/sub connection.
fn is_subscription(action: &ClusterAction) -> bool {
    matches!(
        action,
        ClusterAction::Subscribe(_) | ClusterAction::Unsubscribe(_)
    )
}

/// Sleeps until `at` (which the caller checked is there).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
