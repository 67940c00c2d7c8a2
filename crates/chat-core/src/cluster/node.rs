//! A hub's cluster half: what it publishes, claims and releases, and how it applies what
//! the other nodes say.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{Channel, ClusterAction, Message, Mirror, NodeId, PresenceRecord, Remote, NODE_LOST};

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

/// What a node must still do on the broker, oldest first, and about what that holds in
/// memory: a node reads its clients only while this stays under [`super::BROKER_QUEUE`] (see
/// `Server::poll_cluster`), so a burst of messages waits in the senders' sockets, not here.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    /// The actions.
    actions: VecDeque<ClusterAction>,
    /// What they hold, by [`cost`].
    bytes: usize,
    /// Actions ever queued.
    pushed: u64,
    /// The number (in `pushed`'s count) of the last action that lines to clients may depend
    /// on: all but heartbeats, presence loads and resumes, which tell no client anything.
    telling: u64,
}

impl Outgoing {
    /// Queues an action last.
    pub(crate) fn push_back(&mut self, action: ClusterAction) {
        self.push_quiet(action);
        self.telling = self.pushed;
    }

    /// Queues an action last that no line to a client depends on (see `telling`).
    pub(crate) fn push_quiet(&mut self, action: ClusterAction) {
        self.bytes += cost(&action);
        self.pushed += 1;
        self.actions.push_back(action);
    }

    /// The oldest action.
    pub(crate) fn pop_front(&mut self) -> Option<ClusterAction> {
        let action = self.actions.pop_front()?;
        self.bytes -= cost(&action);
        Some(action)
    }

    /// Forgets every action; says how many there were.
    pub(crate) fn clear(&mut self) -> u64 {
        let n = self.actions.len() as u64;
        self.actions.clear();
        self.bytes = 0;
        n
    }

    /// How many actions were ever queued.
    pub(crate) fn pushed(&self) -> u64 {
        self.pushed
    }

    /// How many actions must be done before a line queued now may be written: up to the last
    /// one that tells the other nodes something.
    pub(crate) fn telling(&self) -> u64 {
        self.telling
    }

    /// What the queued actions hold, roughly, in bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What one queued action holds, roughly: its text, plus the action itself and its buffers'
/// headers.
fn cost(action: &ClusterAction) -> usize {
    const ACTION: usize = 128;
    let record = |r: &PresenceRecord| match r {
        PresenceRecord::Set { key, value } => key.len() + value.len(),
        PresenceRecord::Delete { key, .. } => key.len(),
    };
    ACTION
        + match action {
            ClusterAction::Publish {
                message, record: r, ..
            } => message.len() + r.as_ref().map_or(0, record),
            ClusterAction::Record(r) => record(r),
            ClusterAction::Claim { nick, .. } | ClusterAction::Reclaim { nick } => nick.len(),
            ClusterAction::Release { key, .. } => key.len(),
            ClusterAction::Subscribe(Channel::Room(room))
            | ClusterAction::Unsubscribe(Channel::Room(room)) => room.len(),
            _ => 0,
        }
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
    pub(crate) out: Outgoing,
    /// Answers to claims, by client: the lowercased nick and whether it was granted.
    pub(crate) grants: crate::hub::IdMap<(String, bool)>,
    /// Clients that arrived and wait for their `guestN`.
    pub(crate) arriving: crate::hub::IdSet,
    /// Whether the broker is reachable (as the stage last said).
    pub(crate) up: bool,
    /// How many of the actions ever queued the stage has carried out (or given up), in order
    /// (`Server::broker_done`): a line queued for a client after action N is written only once
    /// N is done (see `server/cluster.rs`).
    pub(crate) done: u64,
    /// Clients with lines that wait for the broker.
    pub(crate) fenced: Vec<crate::ClientId>,
    /// When this node queued each of its heartbeats not heard back yet, oldest first.
    pub(crate) beats: VecDeque<Instant>,
    /// How far this node has heard: when it sent the last of its own heartbeats that came
    /// back to it through the broker. Leases are judged in this time, not the clock's: a node
    /// whose input lags (a backlog behind slow readers, input held by flow control) has not
    /// heard yet what the others said since, and must not take their silence for death.
    pub(crate) heard: Option<Instant>,
}

impl Node {
    /// A node that knows nobody else yet.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            mirror: Mirror::default(),
            out: Outgoing::default(),
            grants: crate::hub::IdMap::default(),
            arriving: crate::hub::IdSet::default(),
            up: false,
            done: 0,
            fenced: Vec::new(),
            beats: VecDeque::new(),
            heard: None,
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

    /// Publishes a heartbeat, and remembers when, to know how far it has heard once it comes
    /// back (see [`Node::heard`]). A node that heard none of the last minute's keeps the
    /// latest: it is far behind anyway.
    fn beat(&mut self, now: Instant) {
        const KEPT: usize = 64;
        if self.beats.len() == KEPT {
            self.beats.pop_front();
        }
        self.beats.push_back(now);
        let message = Message::Alive { node: self.id }.encode();
        self.out.push_quiet(ClusterAction::Publish {
            channel: Channel::Presence,
            message,
            record: None,
        });
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
            // Its own heartbeat, back through the broker: it has heard everything published
            // before it was sent.
            if matches!(message, Message::Alive { .. }) {
                if let Some(sent) = cluster.beats.pop_front() {
                    cluster.heard = Some(sent);
                }
            }
            return;
        }
        // Heard in this node's own time (see `Node::heard`): it spoke after that.
        let heard = cluster.heard.unwrap_or(now);
        cluster.mirror.nodes.insert(node, heard);
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
        // Records of this node's own that name nobody here any more: members that left while
        // the broker was unreachable (their departure, its record's deletion and the release
        // of their nick were lost). Told now, or the others would show them for ever and
        // nobody could take their nicks.
        let mut stale: Vec<Remote> = records
            .iter()
            .filter_map(|(key, value)| Some((key, Remote::decode(value)?)))
            .filter(|(key, r)| r.node == own && !self.nicks.contains_key(key.as_str()))
            .map(|(_, r)| r)
            .collect();
        stale.sort_by(|a, b| a.nick.cmp(&b.nick));
        for r in stale {
            cluster.leave(&r.nick, &r.room, None, false);
            cluster.release(&r.nick);
        }
        let fresh: HashMap<String, Remote> = records
            .iter()
            .filter_map(|(key, value)| Some((key.clone(), Remote::decode(value)?)))
            .filter(|(key, r)| r.node != own && *key == r.nick.to_ascii_lowercase())
            .collect();
        let old = std::mem::take(&mut cluster.mirror);
        let mut nodes = old.nodes.clone();
        for r in fresh.values() {
            nodes.entry(r.node).or_insert(cluster.heard.unwrap_or(now));
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
    pub fn alive(&mut self, now: Instant) {
        if let Some(cluster) = &mut self.cluster {
            cluster.beat(now);
        }
    }

    /// The broker's messages may be offered again.
    pub fn resume_broker(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.out.push_quiet(ClusterAction::ResumeBroker);
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
        // What was queued while down is lost (the stage counted it): settled, as far as the
        // lines waiting for it are concerned.
        cluster.done += cluster.out.clear();
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
        cluster.out.push_quiet(ClusterAction::LoadPresence);
        cluster.beats.clear(); // those on their way were lost
        cluster.heard = Some(now);
        cluster.beat(now);
    }

    /// The broker is unreachable: what this node publishes is lost until it is back.
    pub fn broker_down(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            cluster.up = false;
        }
    }
}
