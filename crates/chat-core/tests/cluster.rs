//! A cluster of three nodes over an in-memory broker: the cluster's rules of the
//! specification, checked without Redis and without a clock.
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chat_core::cluster::{Channel, ClusterAction, NodeId, PresenceRecord, Remote, LEASE};
use chat_core::{ClientId, Limits, Server};
use common::Stage;

/// What Redis does for the nodes: channels, claims, presence records, in order.
#[derive(Debug, Default)]
struct Broker {
    subscribers: HashMap<String, HashSet<usize>>,
    claims: HashMap<String, NodeId>,
    presence: HashMap<String, String>,
    /// Messages on their way to each node: (channel, payload).
    inbox: Vec<VecDeque<Vec<u8>>>,
    /// Nodes that are cut off from the broker.
    down: HashSet<usize>,
}

struct Cluster {
    nodes: Vec<Stage>,
    ids: Vec<NodeId>,
    broker: Broker,
    /// Claims answered later, as a round trip does: (node, client, nick, granted).
    answers: VecDeque<(usize, ClientId, String, bool)>,
    /// Nodes whose broker input waits for room.
    held: HashSet<usize>,
    /// Nodes that are dead: never pumped again.
    dead: HashSet<usize>,
}

impl Cluster {
    fn new(n: usize) -> Self {
        Self::with_bound(n, 1 << 20)
    }

    fn with_bound(n: usize, outbox_bytes: usize) -> Self {
        let mut c = Cluster {
            nodes: Vec::new(),
            ids: Vec::new(),
            broker: Broker::default(),
            answers: VecDeque::new(),
            held: HashSet::new(),
            dead: HashSet::new(),
        };
        for i in 0..n {
            let id = NodeId(0x1000 + i as u64);
            let limits = Limits {
                max_clients: 1000,
                outbox_bytes,
            };
            let mut stage = Stage::with(Server::clustered(limits, id));
            stage.server.broker_up(stage.now);
            c.nodes.push(stage);
            c.ids.push(id);
            c.broker.inbox.push(VecDeque::new());
        }
        c.pump();
        c
    }

    fn guest(&self) -> String {
        (1..)
            .map(|n| format!("guest{n}"))
            .find(|g| !self.broker.claims.contains_key(g))
            .unwrap()
    }

    /// Runs every node's broker actions and delivers every message, until nothing moves.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                if self.dead.contains(&i) {
                    continue;
                }
                self.nodes[i].settle();
                while let Some(action) = self.nodes[i].server.poll_cluster() {
                    busy = true;
                    self.act(i, action);
                }
            }
            if let Some((i, client, nick, granted)) = self.answers.pop_front() {
                busy = true;
                let now = self.nodes[i].now;
                self.nodes[i].server.claimed(client, &nick, granted, now);
            }
            for i in 0..self.nodes.len() {
                if self.dead.contains(&i) || self.held.contains(&i) {
                    continue;
                }
                while let Some(payload) = self.broker.inbox[i].pop_front() {
                    busy = true;
                    let now = self.nodes[i].now;
                    if !self.nodes[i].server.remote(&payload, now).unwrap() {
                        self.broker.inbox[i].push_front(payload);
                        self.held.insert(i);
                        break;
                    }
                }
            }
            if !busy {
                return;
            }
        }
        panic!("the cluster never settles");
    }

    /// Carries out one action of node `i` (or loses it, if the node is cut off), and tells
    /// the node it is done: lines that waited for it may go out.
    fn act(&mut self, i: usize, action: ClusterAction) {
        self.carry_out(i, action);
        self.nodes[i].server.broker_done(1);
    }

    fn carry_out(&mut self, i: usize, action: ClusterAction) {
        let node = self.ids[i];
        let up = !self.broker.down.contains(&i);
        match action {
            ClusterAction::ResumeBroker => {
                self.held.remove(&i);
            }
            _ if !up => {} // lost, as a publish to an unreachable broker is
            ClusterAction::Subscribe(c) => {
                self.broker
                    .subscribers
                    .entry(c.name())
                    .or_default()
                    .insert(i);
            }
            ClusterAction::Unsubscribe(c) => {
                if let Some(s) = self.broker.subscribers.get_mut(&c.name()) {
                    s.remove(&i);
                }
            }
            ClusterAction::Publish {
                channel,
                message,
                record,
            } => {
                if let Some(r) = record {
                    self.record(r);
                }
                for &n in self
                    .broker
                    .subscribers
                    .get(&channel.name())
                    .into_iter()
                    .flatten()
                {
                    if !self.broker.down.contains(&n) {
                        self.broker.inbox[n].push_back(message.to_vec());
                    }
                }
            }
            ClusterAction::Record(r) => self.record(r),
            ClusterAction::Claim { client, nick } => {
                let key = nick.to_ascii_lowercase();
                let granted = !self.broker.claims.contains_key(&key);
                if granted {
                    self.broker.claims.insert(key, node);
                }
                self.answers.push_back((i, client, nick, granted));
            }
            ClusterAction::ClaimGuest { client } => {
                let nick = self.guest();
                self.broker.claims.insert(nick.clone(), node);
                self.answers.push_back((i, client, nick, true));
            }
            ClusterAction::Release { key, node: owner } => {
                if self.broker.claims.get(&key) == Some(&owner) {
                    self.broker.claims.remove(&key);
                }
            }
            ClusterAction::Reclaim { nick } => {
                self.broker
                    .claims
                    .entry(nick.to_ascii_lowercase())
                    .or_insert(node);
            }
            ClusterAction::LoadPresence => {
                let records: Vec<(String, String)> =
                    self.broker.presence.clone().into_iter().collect();
                let now = self.nodes[i].now;
                self.nodes[i].server.load_presence(&records, now);
            }
        }
    }

    fn record(&mut self, r: PresenceRecord) {
        match r {
            PresenceRecord::Set { key, value } => {
                self.broker.presence.insert(key, value);
            }
            PresenceRecord::Delete { key, node } => {
                let owned = self
                    .broker
                    .presence
                    .get(&key)
                    .and_then(|v| Remote::decode(v))
                    .is_some_and(|r| r.node == node);
                if owned {
                    self.broker.presence.remove(&key);
                }
            }
        }
    }

    fn connect(&mut self, node: usize) -> ClientId {
        let id = self.nodes[node].connect(true);
        self.pump();
        id
    }

    fn say(&mut self, node: usize, id: ClientId, line: &str) {
        self.nodes[node].write(id, format!("{line}\n").as_bytes());
        self.pump();
    }

    fn lines(&self, node: usize, id: ClientId) -> Vec<String> {
        self.nodes[node].lines(id)
    }

    /// How many of the lines `id` on `node` received are exactly `line`.
    fn count(&self, node: usize, id: ClientId, line: &str) -> usize {
        self.lines(node, id).iter().filter(|l| *l == line).count()
    }

    fn last(&self, node: usize, id: ClientId) -> String {
        self.lines(node, id).last().cloned().unwrap_or_default()
    }

    fn advance(&mut self, by: Duration) {
        for i in 0..self.nodes.len() {
            if !self.dead.contains(&i) {
                self.nodes[i].advance(by);
            }
        }
        self.pump();
    }
}

#[test]
fn guests_and_nicks_are_unique_across_the_cluster() {
    let mut c = Cluster::new(3);
    let a = c.connect(0);
    let b = c.connect(1);
    let d = c.connect(2);
    assert_eq!(
        c.lines(0, a)[0],
        "* welcome guest1 (type /help for commands)"
    );
    assert_eq!(
        c.lines(1, b)[0],
        "* welcome guest2 (type /help for commands)"
    );
    assert_eq!(
        c.lines(2, d)[0],
        "* welcome guest3 (type /help for commands)"
    );
    c.say(0, a, "/nick alice");
    assert_eq!(c.last(0, a), "* you are now alice");
    c.say(1, b, "/nick ALICE");
    assert_eq!(c.last(1, b), "! nick taken: ALICE");
    // A nick freed on one node can be taken on another, and the room heard of it in order.
    c.say(0, a, "/nick anna");
    c.say(1, b, "/nick alice");
    assert_eq!(c.last(1, b), "* you are now alice");
    let seen = c.lines(2, d);
    let renamed = seen
        .iter()
        .position(|l| l == "* alice is now anna")
        .unwrap();
    let taken = seen
        .iter()
        .position(|l| l == "* guest2 is now alice")
        .unwrap();
    assert!(renamed < taken, "{seen:?}");
}

#[test]
fn a_room_message_reaches_every_node_once() {
    let mut c = Cluster::new(3);
    let clients: Vec<(usize, ClientId)> = (0..6).map(|i| (i % 3, c.connect(i % 3))).collect();
    for &(n, id) in &clients {
        c.say(n, id, "/join rust");
    }
    // The count in each reply includes the members on the other nodes.
    for (k, &(n, id)) in clients.iter().enumerate() {
        let reply = format!("* you joined rust ({} members)", k + 1);
        assert!(
            c.lines(n, id).contains(&reply),
            "client {id} on node {n}: {:?}",
            c.lines(n, id)
        );
    }
    let (n0, sender) = clients[0];
    for i in 0..20 {
        c.say(n0, sender, &format!("hello {i}"));
    }
    for &(n, id) in &clients[1..] {
        let got: Vec<String> = c
            .lines(n, id)
            .into_iter()
            .filter(|l| l.starts_with("<guest1>"))
            .collect();
        let expected: Vec<String> = (0..20).map(|i| format!("<guest1> hello {i}")).collect();
        assert_eq!(got, expected, "client {id} on node {n}");
    }
    assert!(
        !c.lines(n0, sender)
            .iter()
            .any(|l| l.starts_with("<guest1>")),
        "no echo"
    );
}

#[test]
fn who_rooms_and_msg_see_the_whole_cluster() {
    let mut c = Cluster::new(2);
    let a = c.connect(0);
    let b = c.connect(1);
    c.say(1, b, "/nick Bob");
    c.say(0, a, "/who");
    assert_eq!(c.last(0, a), "* members of lobby: Bob, guest1");
    c.say(1, b, "/join rust");
    c.say(0, a, "/rooms");
    assert_eq!(c.last(0, a), "* rooms: lobby (1), rust (1)");
    assert!(c.lines(0, a).contains(&"* Bob left lobby".to_string()));
    c.say(0, a, "/msg bob psst");
    assert_eq!(c.last(1, b), "[guest1] psst");
    c.say(0, a, "/msg nobody hi");
    assert_eq!(c.last(0, a), "! no such user: nobody");
}

#[test]
fn a_lost_node_s_members_leave_and_their_nicks_are_free() {
    let mut c = Cluster::new(2);
    let a = c.connect(0);
    let b = c.connect(1);
    c.say(1, b, "/nick bob");
    c.dead.insert(1); // SIGKILL: it says nothing more
    c.advance(LEASE / 2);
    assert!(!c.lines(0, a).iter().any(|l| l.contains("node lost")));
    for _ in 0..8 {
        c.advance(LEASE / 4);
    }
    assert!(
        c.lines(0, a)
            .contains(&"* bob left lobby (node lost)".to_string()),
        "{:?}",
        c.lines(0, a)
    );
    c.say(0, a, "/nick bob");
    assert_eq!(c.last(0, a), "* you are now bob");
}

#[test]
fn without_the_broker_a_node_serves_its_own_and_catches_up_after() {
    let mut c = Cluster::new(2);
    let a = c.connect(0);
    let a2 = c.connect(0);
    let b = c.connect(1);
    c.broker.down.insert(0);
    let now = c.nodes[0].now;
    c.nodes[0].server.broker_down(now);
    c.say(0, a, "local only");
    assert_eq!(c.last(0, a2), "<guest1> local only");
    assert!(!c.lines(1, b).contains(&"<guest1> local only".to_string()));
    // Longer than a lease: the cut-off node must not declare the others lost meanwhile.
    c.advance(LEASE * 2);
    assert!(!c.lines(0, a).iter().any(|l| l.contains("node lost")));
    c.broker.down.remove(&0);
    let now = c.nodes[0].now;
    c.nodes[0].server.broker_up(now);
    c.pump();
    c.say(0, a, "everywhere");
    assert_eq!(c.last(1, b), "<guest1> everywhere");
    c.say(1, b, "/who");
    assert_eq!(c.last(1, b), "* members of lobby: guest1, guest2, guest3");
}

#[test]
fn a_remote_burst_waits_for_local_readers() {
    let mut c = Cluster::with_bound(2, 8192);
    let sender = c.connect(0);
    let reader = c.connect(1);
    let sleeper = c.nodes[1].connect(false);
    c.pump();
    c.say(0, sender, &"x\n".repeat(5000));
    // Node 1's sleeper is behind: node 1 takes nothing more from the broker until it is cut.
    assert!(c.held.contains(&1));
    c.advance(chat_core::SLOW_GRACE * 2);
    assert!(c.nodes[1].sockets[&sleeper].cut);
    assert_eq!(c.count(1, reader, "<guest1> x"), 5000);
}

#[test]
fn broker_messages_are_checked() {
    let mut c = Cluster::new(1);
    let now = c.nodes[0].now;
    assert!(c.nodes[0]
        .server
        .remote(b"say\t0000000000000002\trust\t<evil>\thi", now)
        .is_err());
    let _ = Channel::Presence;
}

#[test]
fn a_burst_waits_for_the_broker_not_in_the_node_s_memory() {
    let mut c = Cluster::new(2);
    let sender = c.connect(0);
    let reader = c.connect(1);
    // The sender writes 5,000 lines at once, and the broker takes nothing meanwhile: the node
    // handles lines only while its queue for the broker has room.
    c.nodes[0].write(sender, &b"x\n".repeat(5000));
    c.nodes[0].settle();
    let mut queued = Vec::new();
    while let Some(action) = c.nodes[0].server.poll_cluster() {
        queued.push(action);
    }
    let bound = chat_core::cluster::BROKER_QUEUE / 128;
    assert!(
        queued.len() <= bound,
        "{} actions queued for the broker (at most {bound})",
        queued.len()
    );
    assert!(
        !c.nodes[0].server.reading(sender),
        "the sender's input waits"
    );
    for action in queued {
        c.act(0, action);
    }
    // Once the broker takes them, the rest follows: every line, once, in order.
    c.pump();
    assert_eq!(c.count(1, reader, "<guest1> x"), 5000);
}

#[test]
fn a_member_who_left_during_an_outage_is_told_when_the_broker_is_back() {
    let mut c = Cluster::new(2);
    let a = c.connect(0);
    let a2 = c.connect(0);
    let b = c.connect(1);
    c.say(0, a2, "/nick gone");
    c.broker.down.insert(0);
    let now = c.nodes[0].now;
    c.nodes[0].server.broker_down(now);
    c.say(0, a2, "/quit"); // its departure, record and release are lost
    assert!(c.lines(0, a).contains(&"* gone left lobby".to_string()));
    assert!(!c.lines(1, b).contains(&"* gone left lobby".to_string()));
    c.broker.down.remove(&0);
    let now = c.nodes[0].now;
    c.nodes[0].server.broker_up(now);
    c.pump();
    // Node 0 finds its own stale record when it reloads the presence: it tells the others
    // and frees the nick.
    assert!(
        c.lines(1, b).contains(&"* gone left lobby".to_string()),
        "{:?}",
        c.lines(1, b)
    );
    c.say(1, b, "/who");
    assert_eq!(c.last(1, b), "* members of lobby: guest1, guest3");
    c.say(1, b, "/nick gone");
    assert_eq!(c.last(1, b), "* you are now gone");
}

#[test]
fn a_client_reads_nothing_the_broker_has_not_got_yet() {
    let mut c = Cluster::new(2);
    let a = c.nodes[0].connect(true);
    // The broker grants the claim; the node welcomes the client and queues its arrival for
    // the others: the welcome waits until that is published.
    let claim = c.nodes[0].server.poll_cluster().unwrap();
    c.act(0, claim);
    let (_, client, nick, granted) = c.answers.pop_front().unwrap();
    let now = c.nodes[0].now;
    c.nodes[0].server.claimed(client, &nick, granted, now);
    c.nodes[0].settle();
    assert!(c.lines(0, a).is_empty(), "{:?}", c.lines(0, a));
    c.pump();
    assert_eq!(
        c.lines(0, a),
        ["* welcome guest1 (type /help for commands)"]
    );
    // Its goodbye, and the end of its stream, wait for its departure the same way.
    c.nodes[0].write(a, b"/quit\n");
    c.nodes[0].settle();
    assert_eq!(c.lines(0, a).len(), 1, "{:?}", c.lines(0, a));
    assert!(!c.nodes[0].sockets[&a].hung_up);
    c.pump();
    assert_eq!(c.last(0, a), "* bye");
    assert!(c.nodes[0].sockets[&a].hung_up);
}

#[test]
fn a_node_that_cannot_listen_does_not_declare_others_lost() {
    let mut c = Cluster::with_bound(3, 8192);
    let sender = c.connect(0);
    let reader = c.connect(1);
    c.connect(2); // a quiet member on a quiet node
    c.nodes[1].set_drains(reader, false);
    c.say(0, sender, &"x\n".repeat(5000));
    // Node 1 takes the burst at its reader's pace: an outbox's worth, then nothing for most of
    // a second, many times over. Node 2's heartbeats wait behind the burst all that time, far
    // longer than a lease, yet node 2 is alive.
    for _ in 0..40 {
        assert!(c.held.contains(&1));
        c.advance(chat_core::SLOW_GRACE * 9 / 10);
        c.nodes[1].set_drains(reader, true);
        c.nodes[1].settle();
        c.nodes[1].set_drains(reader, false);
        c.pump();
        if !c.held.contains(&1) {
            break;
        }
    }
    c.nodes[1].set_drains(reader, true);
    c.pump();
    let lines = c.lines(1, reader);
    assert!(
        !lines.iter().any(|l| l.contains("node lost")),
        "node 2 was declared lost"
    );
    assert_eq!(lines.iter().filter(|l| *l == "<guest1> x").count(), 5000);
}

/// An idle member of a cluster holds no buffer either: once the broker has carried out what its
/// lines waited for, their fences are gone, and so is the queue that held them (see
/// `Server::holds_buffers`, and `tests/server.rs` for a single node).
#[test]
fn an_idle_member_of_a_cluster_holds_no_buffer() {
    let mut c = Cluster::new(2);
    let a = c.connect(0);
    let b = c.connect(1);
    c.say(0, a, "/join rust");
    c.say(1, b, "/join rust");
    c.say(0, a, "hello");
    c.say(1, b, "/nick bob");
    assert!(
        c.lines(1, b).contains(&"<guest1> hello".to_string()),
        "{:?}",
        c.lines(1, b)
    );
    for (n, id) in [(0, a), (1, b)] {
        c.nodes[n].settle();
        assert!(
            !c.nodes[n].server.holds_buffers(id),
            "client {id} on node {n} keeps a buffer while idle"
        );
    }
}
