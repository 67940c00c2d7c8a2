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
//!   `* NICK left ROOM (node lost)` to its own members, and releases their nicks.
//! - **No broker, no cluster.** While the broker is unreachable a node serves its own clients:
//!   rooms work among its own members, what it publishes is lost (the stage counts it), claims
//!   wait, and leases are not judged (silence means nothing then). When the broker is back, the
//!   node claims its members' nicks again, publishes them again and reloads the presence.
//!
//! *Invariant:* nothing here reads a clock or touches the network; time comes in as `now`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A node not heard from for this long is lost: its members are announced as having left.
pub const LEASE: Duration = Duration::from_secs(5);

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

/// One message between nodes, as published on a [`Channel`].
///
/// On the wire it is one line of fields separated by tabs, the kind first and the sender's node
/// second; a field that may hold any text (a message, a reason) comes last, so it may contain
/// tabs. Nicks and rooms never contain tabs or spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The node is alive (every [`HEARTBEAT`]).
    Alive { node: NodeId },
    /// `nick`, a member of `node`, is in `room`: it arrived, or its node tells the cluster
    /// again after the broker came back.
    Enter {
        node: NodeId,
        nick: String,
        room: String,
    },
    /// `nick` moved from room `from` to room `to`.
    Move {
        node: NodeId,
        nick: String,
        from: String,
        to: String,
    },
    /// `old` is now called `new`; it is in `room`.
    Rename {
        node: NodeId,
        old: String,
        new: String,
        room: String,
    },
    /// `nick` left `room`: it quit, its connection ended or was cut (then with a reason).
    Leave {
        node: NodeId,
        nick: String,
        room: String,
        reason: Option<String>,
    },
    /// `nick` said `text` to `room`.
    Say {
        node: NodeId,
        room: String,
        nick: String,
        text: String,
    },
    /// `from` sent `text` to `to`, a member of the receiving node.
    Direct {
        node: NodeId,
        from: String,
        to: String,
        text: String,
    },
}

/// A broker message that does not parse (a bug, or another program on the same broker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMessage;

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed cluster message")
    }
}

impl std::error::Error for BadMessage {}

impl Message {
    /// The node that sent it.
    pub fn node(&self) -> NodeId {
        match self {
            Message::Alive { node }
            | Message::Enter { node, .. }
            | Message::Move { node, .. }
            | Message::Rename { node, .. }
            | Message::Leave { node, .. }
            | Message::Say { node, .. }
            | Message::Direct { node, .. } => *node,
        }
    }

    /// The bytes to publish.
    pub fn encode(&self) -> Bytes {
        let line = match self {
            Message::Alive { node } => format!("alive\t{node}"),
            Message::Enter { node, nick, room } => format!("enter\t{node}\t{nick}\t{room}"),
            Message::Move {
                node,
                nick,
                from,
                to,
            } => format!("move\t{node}\t{nick}\t{from}\t{to}"),
            Message::Rename {
                node,
                old,
                new,
                room,
            } => {
                format!("rename\t{node}\t{old}\t{new}\t{room}")
            }
            Message::Leave {
                node,
                nick,
                room,
                reason: None,
            } => {
                format!("leave\t{node}\t{nick}\t{room}")
            }
            Message::Leave {
                node,
                nick,
                room,
                reason: Some(reason),
            } => {
                format!("leave\t{node}\t{nick}\t{room}\t{reason}")
            }
            Message::Say {
                node,
                room,
                nick,
                text,
            } => format!("say\t{node}\t{room}\t{nick}\t{text}"),
            Message::Direct {
                node,
                from,
                to,
                text,
            } => {
                format!("direct\t{node}\t{from}\t{to}\t{text}")
            }
        };
        Bytes::from(line)
    }

    /// Parses what [`Message::encode`] wrote. Names are checked: a message can never put a
    /// marker character into a line the hub sends.
    pub fn decode(bytes: &[u8]) -> Result<Self, BadMessage> {
        let text = std::str::from_utf8(bytes).map_err(|_| BadMessage)?;
        if text.contains('\n') {
            return Err(BadMessage);
        }
        let (kind, rest) = text.split_once('\t').ok_or(BadMessage)?;
        let (node, rest) = match rest.split_once('\t') {
            Some((node, rest)) => (node, rest),
            None => (rest, ""),
        };
        let node = NodeId::parse(node).ok_or(BadMessage)?;
        let name = |s: &str| {
            crate::command::is_valid_name(s)
                .then(|| s.to_owned())
                .ok_or(BadMessage)
        };
        let fields = |n: usize| -> Vec<&str> { rest.splitn(n, '\t').collect() };
        Ok(match kind {
            "alive" if rest.is_empty() => Message::Alive { node },
            "enter" => match fields(2)[..] {
                [nick, room] => Message::Enter {
                    node,
                    nick: name(nick)?,
                    room: name(room)?,
                },
                _ => return Err(BadMessage),
            },
            "move" => match fields(3)[..] {
                [nick, from, to] => Message::Move {
                    node,
                    nick: name(nick)?,
                    from: name(from)?,
                    to: name(to)?,
                },
                _ => return Err(BadMessage),
            },
            "rename" => match fields(3)[..] {
                [old, new, room] => Message::Rename {
                    node,
                    old: name(old)?,
                    new: name(new)?,
                    room: name(room)?,
                },
                _ => return Err(BadMessage),
            },
            "leave" => match fields(3)[..] {
                [nick, room] => Message::Leave {
                    node,
                    nick: name(nick)?,
                    room: name(room)?,
                    reason: None,
                },
                [nick, room, reason] => Message::Leave {
                    node,
                    nick: name(nick)?,
                    room: name(room)?,
                    reason: Some(reason.to_owned()),
                },
                _ => return Err(BadMessage),
            },
            "say" => match fields(3)[..] {
                [room, nick, text] => Message::Say {
                    node,
                    room: name(room)?,
                    nick: name(nick)?,
                    text: text.to_owned(),
                },
                _ => return Err(BadMessage),
            },
            "direct" => match fields(3)[..] {
                [from, to, text] => Message::Direct {
                    node,
                    from: name(from)?,
                    to: name(to)?,
                    text: text.to_owned(),
                },
                _ => return Err(BadMessage),
            },
            _ => return Err(BadMessage),
        })
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

/// A member of another node, as the mirror knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its node.
    pub node: NodeId,
    /// Its nick, as it chose it.
    pub nick: String,
    /// Its room.
    pub room: String,
}

impl Remote {
    /// The presence record's value: `node<TAB>nick<TAB>room`.
    pub fn encode(&self) -> String {
        format!("{}\t{}\t{}", self.node, self.nick, self.room)
    }

    /// Parses [`Remote::encode`].
    pub fn decode(value: &str) -> Option<Self> {
        let mut fields = value.split('\t');
        let node = NodeId::parse(fields.next()?)?;
        let nick = fields.next().filter(|n| crate::command::is_valid_name(n))?;
        let room = fields.next().filter(|r| crate::command::is_valid_name(r))?;
        fields.next().is_none().then(|| Remote {
            node,
            nick: nick.to_owned(),
            room: room.to_owned(),
        })
    }
}

/// What a node knows of the rest of the cluster: every remote member, and when it last heard
/// from every other node.
#[derive(Debug, Default)]
pub struct Mirror {
    /// Remote members by lowercased nick.
    pub(crate) members: HashMap<String, Remote>,
    /// Room → the lowercased nicks of its remote members.
    pub(crate) rooms: HashMap<String, HashSet<String>>,
    /// Every other node heard from, and when.
    pub(crate) nodes: HashMap<NodeId, Instant>,
}

impl Mirror {
    /// How many remote members `room` has.
    pub fn count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, HashSet::len)
    }

    /// The remote member with this nick, in any case.
    pub fn get(&self, nick: &str) -> Option<&Remote> {
        self.members.get(&nick.to_ascii_lowercase())
    }

    /// The nicks of `room`'s remote members.
    pub fn nicks_in<'a>(&'a self, room: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|key| self.members.get(key))
            .map(|m| m.nick.as_str())
    }

    /// Every room with remote members, and how many.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        self.rooms.iter().map(|(room, m)| (room.as_str(), m.len()))
    }

    /// Adds (or moves) a remote member.
    pub(crate) fn insert(&mut self, member: Remote) {
        let key = member.nick.to_ascii_lowercase();
        self.remove(&key);
        self.rooms
            .entry(member.room.clone())
            .or_default()
            .insert(key.clone());
        self.members.insert(key, member);
    }

    /// Removes a remote member; returns it.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Remote> {
        let member = self.members.remove(key)?;
        if let Some(set) = self.rooms.get_mut(&member.room) {
            set.remove(key);
            if set.is_empty() {
                self.rooms.remove(&member.room);
            }
        }
        Some(member)
    }

    /// Every remote member of `node`, removed.
    pub(crate) fn remove_node(&mut self, node: NodeId) -> Vec<Remote> {
        let keys: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.node == node)
            .map(|(k, _)| k.clone())
            .collect();
        let mut gone: Vec<Remote> = keys.iter().filter_map(|k| self.remove(k)).collect();
        gone.sort_by(|a, b| a.nick.cmp(&b.nick));
        self.nodes.remove(&node);
        gone
    }

    /// Remote members, all of them.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when no remote member is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// The answer the broker gave to a client's claim, kept until its `/nick` is offered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The nick is this client's now.
    Granted,
    /// Somebody else holds it.
    Refused,
    /// Nobody asked yet: ask the broker.
    Ask,
}

/// A hub's cluster half: who this node is, what it knows of the others, and what it must tell
/// the broker.
#[derive(Debug)]
pub struct Node {
    /// This node.
    pub(crate) id: NodeId,
    /// Every remote member and node.
    pub(crate) mirror: Mirror,
    /// What to do on the broker, oldest first.
    pub(crate) out: std::collections::VecDeque<ClusterAction>,
    /// Answers to claims, by client: the lowercased nick and whether it was granted.
    pub(crate) grants: crate::hub::IdMap<(String, bool)>,
    /// Clients that arrived and wait for their `guestN`.
    pub(crate) arriving: crate::hub::IdSet,
    /// Whether the broker is reachable (as the stage last said).
    pub(crate) up: bool,
}

impl Node {
    /// A node that knows nobody else yet.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            mirror: Mirror::default(),
            out: std::collections::VecDeque::new(),
            grants: crate::hub::IdMap::default(),
            arriving: crate::hub::IdSet::default(),
            up: false,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The rest of the cluster, as this node knows it.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    fn publish(&mut self, channel: Channel, message: Message, record: Option<PresenceRecord>) {
        self.out.push_back(ClusterAction::Publish {
            channel,
            message: message.encode(),
            record,
        });
    }

    fn record(&self, nick: &str, room: &str) -> PresenceRecord {
        PresenceRecord::Set {
            key: nick.to_ascii_lowercase(),
            value: Remote {
                node: self.id,
                nick: nick.to_owned(),
                room: room.to_owned(),
            }
            .encode(),
        }
    }

    /// A local member said `text` to `room`: once on the room's channel.
    pub(crate) fn say(&mut self, room: &str, nick: &str, text: &str) {
        let message = Message::Say {
            node: self.id,
            room: room.to_owned(),
            nick: nick.to_owned(),
            text: text.to_owned(),
        };
        self.publish(Channel::Room(room.to_owned()), message, None);
    }

    /// A local member arrived in `room` (the lobby), or is told to the cluster again.
    pub(crate) fn enter(&mut self, nick: &str, room: &str, first_here: bool) {
        if first_here {
            self.out
                .push_back(ClusterAction::Subscribe(Channel::Room(room.to_owned())));
        }
        let record = self.record(nick, room);
        let message = Message::Enter {
            node: self.id,
            nick: nick.to_owned(),
            room: room.to_owned(),
        };
        self.publish(Channel::Presence, message, Some(record));
    }

    /// A local member left `room`; `last_here` when no local member is left in it.
    pub(crate) fn leave(&mut self, nick: &str, room: &str, reason: Option<&str>, last_here: bool) {
        let message = Message::Leave {
            node: self.id,
            nick: nick.to_owned(),
            room: room.to_owned(),
            reason: reason.map(str::to_owned),
        };
        let record = PresenceRecord::Delete {
            key: nick.to_ascii_lowercase(),
            node: self.id,
        };
        self.publish(Channel::Presence, message, Some(record));
        if last_here {
            self.out
                .push_back(ClusterAction::Unsubscribe(Channel::Room(room.to_owned())));
        }
    }

    /// A local member moved between rooms. Subscribing comes first, so that nothing
    /// published to the new room after the others heard of the move can be missed.
    pub(crate) fn moved(
        &mut self,
        nick: &str,
        from: &str,
        to: &str,
        last_there: bool,
        first_here: bool,
    ) {
        if first_here {
            self.out
                .push_back(ClusterAction::Subscribe(Channel::Room(to.to_owned())));
        }
        let record = self.record(nick, to);
        let message = Message::Move {
            node: self.id,
            nick: nick.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        };
        self.publish(Channel::Presence, message, Some(record));
        if last_there {
            self.out
                .push_back(ClusterAction::Unsubscribe(Channel::Room(from.to_owned())));
        }
    }

    /// A local member was renamed.
    pub(crate) fn rename(&mut self, old: &str, new: &str, room: &str) {
        self.out.push_back(ClusterAction::Publish {
            channel: Channel::Presence,
            message: Message::Rename {
                node: self.id,
                old: old.to_owned(),
                new: new.to_owned(),
                room: room.to_owned(),
            }
            .encode(),
            record: None,
        });
        // The record moves to the new key: delete the old one, write the new one.
        self.out
            .push_back(ClusterAction::Record(PresenceRecord::Delete {
                key: old.to_ascii_lowercase(),
                node: self.id,
            }));
        let record = self.record(new, room);
        self.out.push_back(ClusterAction::Record(record));
    }

    /// A private message to a member of another node.
    pub(crate) fn direct(&mut self, node: NodeId, from: &str, to: &str, text: &str) {
        let message = Message::Direct {
            node: self.id,
            from: from.to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
        };
        self.publish(Channel::Node(node), message, None);
    }

    /// A nick this node held is free: release it on the broker (after what was published about
    /// it, since actions go out in order).
    pub(crate) fn release(&mut self, nick: &str) {
        self.out.push_back(ClusterAction::Release {
            key: nick.to_ascii_lowercase(),
            node: self.id,
        });
    }

    /// What the broker said about `client`'s claim of `key`, if it said anything; consumed.
    pub(crate) fn grant(&mut self, client: crate::ClientId, key: &str) -> Grant {
        match self.grants.get(&client) {
            Some((granted_key, granted)) if granted_key == key => {
                let granted = *granted;
                self.grants.remove(&client);
                if granted {
                    Grant::Granted
                } else {
                    Grant::Refused
                }
            }
            _ => Grant::Ask,
        }
    }

    /// Asks the broker for `nick` on behalf of `client`.
    pub(crate) fn claim(&mut self, client: crate::ClientId, nick: &str) {
        self.out.push_back(ClusterAction::Claim {
            client,
            nick: nick.to_owned(),
        });
    }
}

/// What [`Hub::claimed`] did with the broker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// An arriving client got its nick: it is welcomed, and may be read from now.
    Arrived,
    /// The answer to a `/nick` is kept; offer that line again.
    Answered,
    /// Nobody waits for it any more (the client left): the claim was given back.
    Stale,
}

impl crate::hub::Hub {
    /// The cluster half of this hub, if it is a node of a cluster.
    pub fn cluster(&self) -> Option<&Node> {
        self.cluster.as_deref()
    }

    /// The next thing to do on the broker.
    pub fn poll_cluster(&mut self) -> Option<ClusterAction> {
        self.cluster.as_mut()?.out.pop_front()
    }

    /// A new client of a clustered hub: it gets an id now and its nick from the broker
    /// ([`ClusterAction::ClaimGuest`]); it is welcomed when [`Hub::claimed`] is told.
    pub fn arrive(&mut self) -> crate::ClientId {
        let id = self.new_id();
        if let Some(cluster) = &mut self.cluster {
            cluster.arriving.insert(id);
            cluster
                .out
                .push_back(ClusterAction::ClaimGuest { client: id });
        }
        id
    }

    /// The broker's answer to a claim for `client`: `nick` is its (for an arrival, the
    /// `guestN` it got), or, when `granted` is false, somebody else's.
    pub fn claimed(
        &mut self,
        client: crate::ClientId,
        nick: &str,
        granted: bool,
        out: &mut Vec<crate::Action>,
    ) -> Claimed {
        let Some(cluster) = &mut self.cluster else {
            return Claimed::Stale;
        };
        let key = nick.to_ascii_lowercase();
        if cluster.arriving.remove(&client) {
            if !granted || !crate::command::is_valid_name(nick) {
                // The broker must always find a free `guestN`; ask again.
                cluster.arriving.insert(client);
                cluster.out.push_back(ClusterAction::ClaimGuest { client });
                return Claimed::Answered;
            }
            let first_here = !self.rooms.contains_key(crate::hub::LOBBY);
            self.welcome(client, nick.to_owned(), out);
            if let Some(cluster) = &mut self.cluster {
                cluster.enter(nick, crate::hub::LOBBY, first_here);
            }
            return Claimed::Arrived;
        }
        if !self.members.contains_key(&client) {
            if granted {
                cluster.release(nick);
            }
            return Claimed::Stale;
        }
        cluster.grants.insert(client, (key, granted));
        Claimed::Answered
    }

    /// Calls `visit(client, bytes)` for every local client a message from another node will
    /// send a line to, with what it costs at most: [`crate::Hub::reach`] for the broker.
    pub fn reach_remote(&self, message: &Message, mut visit: impl FnMut(crate::ClientId, usize)) {
        let cost = |text: usize| text + 1 + crate::outbox::CHUNK_COST;
        let room = |room: &str, bytes: usize, visit: &mut dyn FnMut(crate::ClientId, usize)| {
            for &m in self.rooms.get(room).into_iter().flatten() {
                visit(m, bytes);
            }
        };
        match message {
            Message::Alive { .. } => {}
            Message::Enter { nick, room: r, .. } => {
                room(r, cost(10 + nick.len() + r.len()), &mut visit)
            }
            Message::Move { nick, from, to, .. } => {
                room(from, cost(8 + nick.len() + from.len()), &mut visit);
                room(to, cost(10 + nick.len() + to.len()), &mut visit);
            }
            Message::Rename {
                old, new, room: r, ..
            } => room(r, cost(10 + old.len() + new.len()), &mut visit),
            Message::Leave {
                nick,
                room: r,
                reason,
                ..
            } => {
                let reason = reason.as_ref().map_or(0, |r| r.len() + 3);
                room(r, cost(8 + nick.len() + r.len() + reason), &mut visit)
            }
            Message::Say {
                room: r,
                nick,
                text,
                ..
            } => room(r, cost(nick.len() + 3 + text.len()), &mut visit),
            Message::Direct { from, to, text, .. } => {
                if let Some(&target) = self.nicks.get(&to.to_ascii_lowercase()) {
                    visit(target, cost(from.len() + 3 + text.len()));
                }
            }
        }
    }

    /// A message from another node: the mirror follows it, and local members get the lines it
    /// means for them. Messages from this node itself (the broker echoes them) are ignored.
    pub fn apply(&mut self, message: Message, now: Instant, out: &mut Vec<crate::Action>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let node = message.node();
        if node == cluster.id {
            return;
        }
        cluster.mirror.nodes.insert(node, now);
        match message {
            Message::Alive { .. } => {}
            Message::Enter { nick, room, .. } => {
                let known = cluster.mirror.get(&nick).map(|r| r.room.clone());
                cluster.mirror.insert(Remote {
                    node,
                    nick: nick.clone(),
                    room: room.clone(),
                });
                match known {
                    Some(old) if old == room => {} // told again (after an outage): no news
                    Some(old) => {
                        self.notice(&old, format_args!("* {nick} left {old}"), out);
                        self.notice(&room, format_args!("* {nick} joined {room}"), out);
                    }
                    None => self.notice(&room, format_args!("* {nick} joined {room}"), out),
                }
            }
            Message::Move { nick, from, to, .. } => {
                cluster.mirror.insert(Remote {
                    node,
                    nick: nick.clone(),
                    room: to.clone(),
                });
                self.notice(&from, format_args!("* {nick} left {from}"), out);
                self.notice(&to, format_args!("* {nick} joined {to}"), out);
            }
            Message::Rename { old, new, room, .. } => {
                cluster.mirror.remove(&old.to_ascii_lowercase());
                cluster.mirror.insert(Remote {
                    node,
                    nick: new.clone(),
                    room: room.clone(),
                });
                if old != new {
                    self.notice(&room, format_args!("* {old} is now {new}"), out);
                }
            }
            Message::Leave {
                nick, room, reason, ..
            } => {
                if cluster.mirror.remove(&nick.to_ascii_lowercase()).is_some() {
                    match reason {
                        Some(reason) => {
                            self.notice(&room, format_args!("* {nick} left {room} ({reason})"), out)
                        }
                        None => self.notice(&room, format_args!("* {nick} left {room}"), out),
                    }
                }
            }
            Message::Say {
                room, nick, text, ..
            } => {
                self.notice(&room, format_args!("<{nick}> {text}"), out);
            }
            Message::Direct { from, to, text, .. } => {
                if let Some(&target) = self.nicks.get(&to.to_ascii_lowercase()) {
                    out.push(crate::Action::Send(
                        target,
                        crate::hub::line(format_args!("[{from}] {text}")),
                    ));
                }
            }
        }
    }

    /// Every node not heard from since `deadline` is lost: its members leave, with the reason
    /// `(node lost)`, and their nicks are released (each node releases them; a release is a
    /// compare-and-delete, so doing it twice does no harm).
    pub fn expire_nodes(&mut self, deadline: Instant, out: &mut Vec<crate::Action>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let mut lost: Vec<NodeId> = cluster
            .mirror
            .nodes
            .iter()
            .filter(|&(_, &seen)| seen < deadline)
            .map(|(&n, _)| n)
            .collect();
        lost.sort_unstable();
        for node in lost {
            let gone = match &mut self.cluster {
                Some(cluster) => cluster.mirror.remove_node(node),
                None => return,
            };
            for member in gone {
                let (nick, room) = (&member.nick, &member.room);
                self.notice(
                    room,
                    format_args!("* {nick} left {room} ({NODE_LOST})"),
                    out,
                );
                if let Some(cluster) = &mut self.cluster {
                    cluster.out.push_back(ClusterAction::Release {
                        key: nick.to_ascii_lowercase(),
                        node,
                    });
                }
            }
        }
    }

    /// The broker's presence records (lowercased nick → [`Remote::encode`]), loaded after the
    /// node (re)connected: the mirror becomes what they say, and local members are told what
    /// changed while this node could not hear (arrivals, departures, moves).
    pub fn load_presence(
        &mut self,
        records: &[(String, String)],
        now: Instant,
        out: &mut Vec<crate::Action>,
    ) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let own = cluster.id;
        let fresh: HashMap<String, Remote> = records
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), Remote::decode(value)?)))
            .filter(|(key, r)| r.node != own && *key == r.nick.to_ascii_lowercase())
            .collect();
        let old = std::mem::take(&mut cluster.mirror);
        let mut nodes = old.nodes.clone();
        for r in fresh.values() {
            nodes.entry(r.node).or_insert(now);
        }
        let mut mirror = Mirror {
            nodes,
            ..Mirror::default()
        };
        for r in fresh.values() {
            mirror.insert(r.clone());
        }
        cluster.mirror = mirror;
        let mut gone: Vec<&Remote> = old
            .members
            .iter()
            .filter(|(k, _)| !fresh.contains_key(*k))
            .map(|(_, r)| r)
            .collect();
        gone.sort_by(|a, b| a.nick.cmp(&b.nick));
        for r in gone {
            self.notice(&r.room, format_args!("* {} left {}", r.nick, r.room), out);
        }
        let mut came: Vec<&Remote> = fresh
            .iter()
            .filter(|(k, r)| old.members.get(*k).map(|o| &o.room) != Some(&r.room))
            .map(|(_, r)| r)
            .collect();
        came.sort_by(|a, b| a.nick.cmp(&b.nick));
        for r in came {
            if let Some(before) = old.members.get(&r.nick.to_ascii_lowercase()) {
                self.notice(
                    &before.room,
                    format_args!("* {} left {}", r.nick, before.room),
                    out,
                );
            }
            self.notice(&r.room, format_args!("* {} joined {}", r.nick, r.room), out);
        }
    }

    /// Says this node is alive, on the presence channel (every [`HEARTBEAT`]).
    pub fn alive(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            let id = cluster.id;
            cluster.publish(Channel::Presence, Message::Alive { node: id }, None);
        }
    }

    /// The broker's messages may be offered again.
    pub fn resume_broker(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.out.push_back(ClusterAction::ResumeBroker);
        }
    }

    /// The broker is reachable again (or for the first time): subscribe, claim every local
    /// member's nick again, tell the cluster who is here, and load the presence records.
    pub fn broker_up(&mut self, now: Instant) {
        let mut members: Vec<(String, String)> = self
            .members_iter()
            .map(|(nick, room)| (nick.to_owned(), room.to_owned()))
            .collect();
        members.sort();
        let mut rooms: Vec<String> = self.rooms.keys().cloned().collect();
        rooms.sort();
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        cluster.up = true;
        cluster.out.clear(); // what was queued while down is lost (the stage counted it)
                             // Silence while this node could not hear means nothing: everybody gets a fresh lease.
        for seen in cluster.mirror.nodes.values_mut() {
            *seen = now;
        }
        cluster
            .out
            .push_back(ClusterAction::Subscribe(Channel::Presence));
        cluster
            .out
            .push_back(ClusterAction::Subscribe(Channel::Node(cluster.id)));
        for room in rooms {
            cluster
                .out
                .push_back(ClusterAction::Subscribe(Channel::Room(room)));
        }
        for (nick, room) in members {
            cluster
                .out
                .push_back(ClusterAction::Reclaim { nick: nick.clone() });
            cluster.enter(&nick, &room, false);
        }
        cluster.out.push_back(ClusterAction::LoadPresence);
        let id = cluster.id;
        cluster.publish(Channel::Presence, Message::Alive { node: id }, None);
    }

    /// The broker is unreachable: what this node publishes is lost until it is back.
    pub fn broker_down(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.up = false;
        }
    }
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
