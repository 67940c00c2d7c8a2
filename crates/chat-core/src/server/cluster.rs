//! The server's cluster half: claims, the broker's input under flow control, heartbeats and
//! leases (see [`crate::cluster`] for the design).

use std::time::Instant;

use super::{Event, Limits, Server};
use crate::cluster::{BadMessage, Claimed, ClusterAction, Message, NodeId, HEARTBEAT, LEASE};
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

    /// In a cluster: the next thing to do on the broker (see [`crate::cluster`]).
    pub fn poll_cluster(&mut self) -> Option<ClusterAction> {
        self.hub.poll_cluster()
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
    /// [`ClusterAction::ResumeBroker`].
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

    /// When the cluster's timers next have something to do: saying this node is alive, and
    /// judging the oldest lease. Nothing while the broker is away.
    pub(super) fn cluster_deadline(&self) -> Option<Instant> {
        let alive = self.next_alive?;
        let lease = self
            .hub
            .cluster()
            .and_then(|c| c.mirror().nodes.values().min().copied())
            .map(|seen| seen + LEASE);
        Some(lease.map_or(alive, |lease| lease.min(alive)))
    }

    /// Heartbeats and leases.
    pub(super) fn cluster_timers(&mut self, now: Instant) {
        let Some(alive) = self.next_alive else {
            return;
        };
        if now >= alive {
            self.hub.alive();
            self.next_alive = Some(now + HEARTBEAT);
        }
        if let Some(deadline) = now.checked_sub(LEASE) {
            self.hub.expire_nodes(deadline, &mut self.scratch);
        }
    }
}
