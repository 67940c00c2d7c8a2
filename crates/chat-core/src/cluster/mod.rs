//! A cluster of nodes that share one chat through a broker, sans-IO.
//!
//! One process holds at most ~19,900 sockets here and uses one core per event loop. Past that,
//! chat systems run several *nodes* on a broker (Redis, NATS): each node serves its own clients
//! and the broker carries what concerns the others. This module is the cluster's half of the
//! protocol, with no networking code: what a node must tell the broker ([`ClusterAction`]),
//! what it hears from it ([`Message`]), and the mirror of the rest of the cluster it keeps to
//! answer `/who`, `/rooms` and `/msg`. The stage (`chat-cluster`) does the broker's I/O.
//!
//! The design, in the order a reader meets it:
//!
//! - **Publish once, fan out locally.** A room message is published once, on the room's
//!   channel ([`Channel::Room`]); every node subscribed to it — those with members in the room,
//!   and only those — delivers it to its own members. A node never delivers its own messages
//!   twice: it delivered them locally at once, and ignores them when the broker echoes them.
//! - **Presence on one channel.** Arrivals, departures, renames and moves between rooms go on
//!   [`Channel::Presence`], which every node hears: each node keeps a [`Mirror`] of every
//!   remote member (nick, room, node). `/who`, `/rooms`, the count in `* you joined` and `/msg`
//!   look at local members and the mirror together.
//! - **Claims.** A nick is unique across the cluster because it is *claimed* on the broker
//!   (an atomic set-if-absent) before it is used; so is the first free `guestN` of an arrival.
//!   A claim is a round trip: meanwhile the client's input waits, as it waits for room in flow
//!   control, so its later lines keep their order. A freed nick is released on the broker only
//!   after the departure was published, so nobody can be announced under it first.
//! - **Leases.** Every node says it is alive every [`HEARTBEAT`] on the presence channel. A
//!   node not heard from for [`LEASE`] is lost: every other node announces its members as
//!   `* NICK left ROOM (node lost)` to its own members, and releases their nicks. "For
//!   `LEASE`" is measured in the time a node has *heard up to* — when it sent the last of its
//!   own heartbeats that came back to it — not by the clock: a node whose input lags behind
//!   slow readers has not heard yet what the others said meanwhile.
//! - **Publish before you reply.** A line for a local client that is queued while actions
//!   for the broker are outstanding waits for them (`server/cluster.rs`, the fences): what a
//!   client has read, the cluster knows, so whatever it does next on another node finds it
//!   there. And a node's queue for the broker is bounded ([`BROKER_QUEUE`]): its clients'
//!   input waits while it is full, as for a slow recipient.
//! - **No broker, no cluster.** While the broker is unreachable a node serves its own clients:
//!   rooms work among its own members, what it publishes is lost (the stage counts it), claims
//!   wait, and leases are not judged (silence means nothing then). When the broker is back, the
//!   node claims its members' nicks again, publishes them again and reloads the presence.
//!
//! *Invariant:* nothing here reads a clock or touches the network; time comes in as `now`.

mod message;
mod mirror;
mod node;

pub use message::{BadMessage, Message};
pub use mirror::{Mirror, Remote};
pub use node::{Claimed, Grant, Node};

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A node not heard from for this long is lost: its members are announced as having left.
pub const LEASE: Duration = Duration::from_secs(5);

/// What a node may have queued for its broker, roughly, in bytes, before the input of its
/// clients waits: the broker is one more recipient of a node's lines, and flow control
/// (rule 2) applies to it too. A burst that publishes faster than the broker takes it waits in
/// the sender's socket, not in the node's memory.
pub const BROKER_QUEUE: usize = 64 * 1024;

/// The reason a lost node's members leave with: `* NICK left ROOM (node lost)`.
pub const NODE_LOST: &str = "node lost";

/// Names a node of the cluster; chosen at random by each process when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl NodeId {
    /// Parses the 16 hex digits of [`NodeId`]'s `Display`.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 16)
            .then(|| u64::from_str_radix(text, 16).ok())
            .flatten()
            .map(NodeId)
    }
}

/// A channel of the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Every node: arrivals, departures, renames, moves, heartbeats.
    Presence,
    /// The nodes with members in this room: its messages.
    Room(String),
    /// One node: private messages to its members.
    Node(NodeId),
}

impl Channel {
    /// The broker's name for this channel (`chat:presence`, `chat:room:rust`, `chat:node:…`).
    pub fn name(&self) -> String {
        match self {
            Channel::Presence => "chat:presence".to_owned(),
            Channel::Room(room) => format!("chat:room:{room}"),
            Channel::Node(node) => format!("chat:node:{node}"),
        }
    }

    /// The channel a broker name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("chat:")?;
        if rest == "presence" {
            return Some(Channel::Presence);
        }
        if let Some(room) = rest.strip_prefix("room:") {
            return crate::command::is_valid_name(room).then(|| Channel::Room(room.to_owned()));
        }
        rest.strip_prefix("node:")
            .and_then(NodeId::parse)
            .map(Channel::Node)
    }
}

/// Something a node asks its stage to do on the broker, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAction {
    /// Subscribe to a channel; publish nothing after this action until the broker confirmed
    /// it (so that no message published after a member joined can be missed).
    Subscribe(Channel),
    /// Unsubscribe from a channel.
    Unsubscribe(Channel),
    /// Publish `message` on `channel`. A [`Channel::Presence`] message also updates the
    /// broker's presence record ([`PresenceRecord`]) in the same atomic step.
    Publish {
        /// Where.
        channel: Channel,
        /// What, as [`Message::decode`] reads it.
        message: Bytes,
        /// For presence messages: the record to write or delete with it.
        record: Option<PresenceRecord>,
    },
    /// Claim `nick` (lowercased: `key`) for this node, atomically, if nobody holds it (or only
    /// a node whose lease is gone). Answer with `Server::claimed`.
    Claim {
        /// The client that asked.
        client: crate::ClientId,
        /// The nick as asked for.
        nick: String,
    },
    /// Claim the first free `guestN` for a new client. Answer with `Server::claimed`.
    ClaimGuest {
        /// The arriving client.
        client: crate::ClientId,
    },
    /// `nick` (lowercased) is free again, if `node` still holds it (a compare-and-delete: a
    /// late release must not free somebody else's new claim).
    Release {
        /// The lowercased nick.
        key: String,
        /// The node whose claim it was.
        node: NodeId,
    },
    /// Write or delete one presence record, without a message.
    Record(PresenceRecord),
    /// Claim `nick` again after the broker came back: set it to this node if nobody else
    /// holds it (no answer needed: nobody claimed while the broker was away).
    Reclaim {
        /// The nick of a local member.
        nick: String,
    },
    /// Load the broker's presence records and pass them to `Server::load_presence`.
    LoadPresence,
    /// The broker's messages can be taken again (see `Server::remote`).
    ResumeBroker,
}

/// The broker keeps one presence record per member (lowercased nick → node, nick, room), so
/// that a node that starts, or comes back, can load the cluster's membership at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceRecord {
    /// Write `key` → `value` ([`Remote::encode`]).
    Set { key: String, value: String },
    /// Delete `key`, if it still names this node.
    Delete { key: String, node: NodeId },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId(0x0123_4567_89ab_cdef)
    }

    #[test]
    fn messages_round_trip_and_text_may_hold_tabs() {
        let n = node();
        let all = [
            Message::Alive { node: n },
            Message::Enter {
                node: n,
                nick: "alice".into(),
                room: "lobby".into(),
            },
            Message::Move {
                node: n,
                nick: "alice".into(),
                from: "lobby".into(),
                to: "rust".into(),
            },
            Message::Rename {
                node: n,
                old: "guest1".into(),
                new: "Bob".into(),
                room: "rust".into(),
            },
            Message::Leave {
                node: n,
                nick: "bob".into(),
                room: "rust".into(),
                reason: None,
            },
            Message::Leave {
                node: n,
                nick: "bob".into(),
                room: "rust".into(),
                reason: Some("gone\tfishing".into()),
            },
            Message::Say {
                node: n,
                room: "rust".into(),
                nick: "bob".into(),
                text: "a\tb c ".into(),
            },
            Message::Direct {
                node: n,
                from: "bob".into(),
                to: "alice".into(),
                text: "psst".into(),
            },
        ];
        for m in all {
            assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{m:?}");
            assert_eq!(m.node(), n);
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            &b""[..],
            b"alive",
            b"alive\tnotahexnode",
            b"enter\t0123456789abcdef\tbad nick\tlobby",
            b"enter\t0123456789abcdef\t<alice>\tlobby",
            b"say\t0123456789abcdef\trust\tbob",
            b"say\t0123456789abcdef\trust\tbob\tline\nbreak",
            b"\xff\t0123456789abcdef",
            b"frobnicate\t0123456789abcdef",
        ] {
            assert_eq!(Message::decode(bad), Err(BadMessage), "{bad:?}");
        }
    }

    #[test]
    fn channels_and_records_round_trip() {
        for c in [
            Channel::Presence,
            Channel::Room("rust".into()),
            Channel::Node(node()),
        ] {
            assert_eq!(Channel::parse(&c.name()), Some(c));
        }
        assert_eq!(Channel::parse("chat:room:no room"), None);
        let r = Remote {
            node: node(),
            nick: "Alice".into(),
            room: "lobby".into(),
        };
        assert_eq!(Remote::decode(&r.encode()), Some(r));
    }

    #[test]
    fn the_mirror_moves_and_forgets_members() {
        let mut m = Mirror::default();
        m.insert(Remote {
            node: node(),
            nick: "Alice".into(),
            room: "lobby".into(),
        });
        m.insert(Remote {
            node: NodeId(7),
            nick: "bob".into(),
            room: "lobby".into(),
        });
        assert_eq!(m.count("lobby"), 2);
        m.insert(Remote {
            node: node(),
            nick: "Alice".into(),
            room: "rust".into(),
        });
        assert_eq!((m.count("lobby"), m.count("rust")), (1, 1));
        assert_eq!(m.get("ALICE").map(|r| r.room.as_str()), Some("rust"));
        let gone = m.remove_node(node());
        assert_eq!(gone.len(), 1);
        assert_eq!(m.count("rust"), 0);
        assert_eq!(m.rooms().count(), 1);
    }
}
