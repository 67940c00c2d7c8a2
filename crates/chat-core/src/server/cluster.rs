//! The server's cluster half: claims, the broker's input under flow control, heartbeats and
//! leases (see [`crate::cluster`] for the design), and the fences.
//!
//! **Publish before you reply.** A node writes to its clients at once, and publishes for the
//! other nodes a moment later, when its broker task gets to it. A client that read its
//! `* welcome`, its `* bye` or its `* you joined rust (1 members)` before the others heard of it
//! could act on another node that does not know yet: connect there and not be told who is in
//! the lobby, or see the cluster disagree with what it was just told. So, in a cluster, a line
//! queued for a client while actions for the broker are outstanding is *held* — its outbox
//! keeps it, behind a [`Fence`] — until the stage says those actions are done
//! ([`Server::broker_done`]); the end of a closing client's stream waits the same way. What a
//! client has read, the broker has: any node it turns to next knows it (the stage hands a
//! claim's answer to the core only after what was published before the claim).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Instant;

use super::{Conn, Event, Limits, Phase, Server};
use crate::cluster::{
    BadMessage, Claimed, ClusterAction, Message, NodeId, BROKER_QUEUE, HEARTBEAT, LEASE,
};
use crate::hub::{ClientId, Hub};
use crate::{flow, SLOW_GRACE};

impl Server {
    /// An empty server that is one node of a cluster (see [`crate::cluster`]): nicks are
    /// claimed on the broker, messages to rooms and other nodes' members go through it, and
    /// [`Server::poll_cluster`] says what to do there.
    pub fn clustered(limits: Limits, node: NodeId) -> Self {
        Self {
            hub: Hub::clustered(node),
            ..Self::new(limits)
        }
    }

    /// In a cluster: the next thing to do on the broker (see [`crate::cluster`]). Taking
    /// actions makes room in the broker's queue: once it holds half of [`BROKER_QUEUE`] or
    /// less, the clients whose input waited for it go on (as they do when a client catches up).
    pub fn poll_cluster(&mut self) -> Option<ClusterAction> {
        let before = self.broker_queued();
        let action = self.hub.poll_cluster()?;
        if before > BROKER_QUEUE / 2 && self.broker_queued() <= BROKER_QUEUE / 2 {
            self.unblocked = true;
        }
        Some(action)
    }

    /// In a cluster: whether the broker's queue has room for what one more line may queue.
    /// A line is handled only then; otherwise the sender's input waits (flow control, rule 2,
    /// with the broker as one more recipient: a node's memory stays bounded however fast its
    /// clients publish).
    pub(super) fn broker_has_room(&self) -> bool {
        self.broker_queued() < BROKER_QUEUE
    }

    /// What the broker's queue holds, roughly, in bytes (0 on a server on its own).
    fn broker_queued(&self) -> usize {
        self.hub.cluster().map_or(0, |c| c.out.bytes())
    }

    /// In a cluster: the broker's answer to a [`ClusterAction::Claim`] or
    /// [`ClusterAction::ClaimGuest`] for `id`.
    pub fn claimed(&mut self, id: ClientId, nick: &str, granted: bool, now: Instant) {
        self.now = Some(now);
        let answer = self.hub.claimed(id, nick, granted, &mut self.scratch);
        self.route(now);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match answer {
            Claimed::Arrived => {
                conn.claiming = false;
                self.events.push_back(Event::Resume(id));
            }
            Claimed::Answered => {
                conn.claiming = false;
                self.unblocked = true; // its `/nick` is offered again
            }
            Claimed::Stale => {}
        }
    }

    /// In a cluster: a message from the broker (on any channel this node subscribed to).
    /// `Ok(false)` means it does not fit yet (a local recipient is behind, as for any sender):
    /// keep it, take nothing more from the broker, and offer it again after
    /// [`ClusterAction::ResumeBroker`]. (Meanwhile this node hears nobody, its own heartbeats
    /// included: leases are judged in the time it has heard up to, so the others' leases
    /// stand still.)
    // ANCHOR: remote
    pub fn remote(&mut self, payload: &[u8], now: Instant) -> Result<bool, BadMessage> {
        self.now = Some(now);
        let message = Message::decode(payload)?;
        let bound = self.limits.outbox_bytes;
        let mut fits = true;
        let (conns, behind, slow_timers) =
            (&mut self.conns, &mut self.behind, &mut self.slow_timers);
        self.hub.reach_remote(&message, |to, need| {
            let Some(conn) = conns.get_mut(&to) else {
                return;
            };
            if !conn.is_open()
                || (conn.behind_since.is_none() && flow::fits(conn.outbox.cost(), need, bound))
            {
                return;
            }
            fits = false;
            if conn.behind_since.is_none() {
                conn.behind_since = Some(now);
                behind.push(to);
                slow_timers.push_back((now + SLOW_GRACE, to));
            }
        });
        if !fits {
            self.broker_waits = true;
            return Ok(false);
        }
        self.hub.apply(message, now, &mut self.scratch);
        self.route(now);
        Ok(true)
    }
    // ANCHOR_END: remote

    /// In a cluster: the broker's presence records, after
    /// [`ClusterAction::LoadPresence`].
    pub fn load_presence(&mut self, records: &[(String, String)], now: Instant) {
        self.now = Some(now);
        self.hub.load_presence(records, now, &mut self.scratch);
        self.route(now);
    }

    /// In a cluster: the broker is reachable (for the first time, or again).
    pub fn broker_up(&mut self, now: Instant) {
        self.now = Some(now);
        self.hub.broker_up(now);
        self.next_alive = Some(now + HEARTBEAT);
    }

    /// In a cluster: the broker is unreachable; local clients are served on.
    pub fn broker_down(&mut self, now: Instant) {
        self.now = Some(now);
        self.hub.broker_down();
        self.next_alive = None;
    }

    /// When the cluster's timers next have something to do: saying this node is alive (the
    /// leases are judged then too, in the time this node has heard up to, which moves only
    /// when its own heartbeats come back). Nothing while the broker is away.
    pub(super) fn cluster_deadline(&self) -> Option<Instant> {
        self.next_alive
    }

    /// Heartbeats and leases.
    pub(super) fn cluster_timers(&mut self, now: Instant) {
        let Some(alive) = self.next_alive else {
            return;
        };
        if now >= alive {
            self.hub.alive(now);
            self.next_alive = Some(now + HEARTBEAT);
        }
        // A node is lost when this node has heard LEASE beyond the last thing it said.
        let heard = self.hub.cluster().and_then(|c| c.heard);
        if let Some(deadline) = heard.and_then(|heard| heard.checked_sub(LEASE)) {
            self.hub.expire_nodes(deadline, &mut self.scratch);
        }
    }
}

/// Where a client's outbox waits for the broker: the lines from byte `at` (counted over all
/// the bytes ever queued for it) are written once `until` actions are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fence {
    /// Where the held lines begin.
    at: u64,
    /// How many actions must be done first.
    until: u64,
}

// ANCHOR: fence
/// Holds what is queued for `conn` from now on if actions for the broker are outstanding;
/// true if it does. (Fences only grow: a later line waits for at least as much.)
pub(super) fn hold(hub: &mut Hub, conn: &mut Conn, id: ClientId) -> bool {
    let Some(node) = hub.cluster.as_deref_mut() else {
        return false;
    };
    let until = node.out.telling();
    if until <= node.done {
        return false;
    }
    if conn.fences.back().is_none_or(|f| f.until < until) {
        if conn.fences.is_empty() {
            node.fenced.push(id);
        }
        let at = conn.outbox.taken() + conn.outbox.len() as u64;
        conn.fences.push_back(Fence { at, until });
    }
    true
}

/// How many bytes of `conn`'s outbox may be written now: those before its first fence.
pub(super) fn writable(conn: &Conn) -> u64 {
    let queued = conn.outbox.len() as u64;
    conn.fences
        .front()
        .map_or(queued, |f| f.at.saturating_sub(conn.outbox.taken()))
        .min(queued)
}

// ANCHOR_END: fence

/// How many of the `filled` slices (one per line) lie within the first `writable` bytes.
pub(super) fn within(slices: &[IoSlice<'_>], filled: usize, writable: u64) -> usize {
    let mut total = 0u64;
    let lines = slices[..filled]
        .iter()
        .take_while(|s| {
            total += s.len() as u64;
            total <= writable
        })
        .count();
    // A fence stands between two lines, so this is never 0 when something is writable.
    lines.max(usize::from(writable > 0 && filled > 0))
}

impl Server {
    /// In a cluster: the stage has carried out (or, cut off from the broker, given up) `n`
    /// more of the actions it took with [`Server::poll_cluster`], in order. Lines that waited
    /// for them may be written now ([`Event::Flush`]), and closing clients may be hung up.
    pub fn broker_done(&mut self, n: u64) {
        let Some(node) = self.hub.cluster.as_deref_mut() else {
            return;
        };
        node.done = (node.done + n).min(node.out.pushed());
        let done = node.done;
        let mut fenced = std::mem::take(&mut node.fenced);
        fenced.retain(|&id| {
            let Some(conn) = self.conns.get_mut(&id) else {
                return false;
            };
            let before = writable(conn);
            while conn.fences.front().is_some_and(|f| f.until <= done) {
                conn.fences.pop_front();
            }
            if conn.fences.is_empty() {
                conn.fences = VecDeque::new(); // an idle client keeps no queue
            }
            if before == 0 && writable(conn) > 0 {
                self.events.push_back(Event::Flush(id));
            }
            let closing = matches!(conn.phase, Phase::Closing { .. });
            if closing && conn.fences.is_empty() && conn.outbox.is_empty() {
                self.drained.push(id);
            }
            !conn.fences.is_empty()
        });
        if let Some(node) = self.hub.cluster.as_deref_mut() {
            node.fenced.extend(fenced);
        }
    }
}
