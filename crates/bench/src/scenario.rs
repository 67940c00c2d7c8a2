//! The named scenarios, their presets per profile, and what to say to which
//! server (`Target`).
//!
//! A scenario is a *script* for the event loop (see `engine/script.rs`):
//! connect the clients, let the joins settle, send at a schedule, measure,
//! drain. The presets here fix every number so that two stages run by
//! `compare` see exactly the same load; `chat-bench run` lets each number be
//! overridden.
//!
//! Every protocol string the generator sends or looks for lives in a
//! [`Words`] (ours is [`OURS`]) and reaches the event loop only through a
//! [`Target`]: the generator can drive any line-based chat server, so nothing
//! else in the crate may assume our protocol's wording.

use std::net::SocketAddr;
use std::time::Duration;

use crate::knee;

/// A load pattern. Each one answers one question the book asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// C10K: hold many idle clients (10,000 in `full`) in rooms of 100;
    /// measure server RSS per connection; then send one message per room to
    /// prove every client is still served.
    Idle,
    /// Steady open-loop chat: every client sends at `--rate` into rooms of
    /// `--room-size`; measures delivery latency and loss.
    Chat,
    /// Saturation in rooms of 10: raises the offered load until the server
    /// or the generator is the limit, then bisects to the knee (see
    /// `knee.rs`); also measures CPU per delivery at one fixed high load.
    Flood,
    /// The flood's search with every client in one room of 100: the one load
    /// a broadcast-only server (a peer, such as smol's example) can take.
    OneRoom,
    /// Slow consumers: a fifth of each room never reads. The readers' latency
    /// and the server's memory must stay bounded; counts slow-consumer drops.
    Slow,
    /// Connect/disconnect churn beside steady chat: clients that connect,
    /// join, quit and start over, as fast as the server lets them.
    Churn,
    /// Starvation: more clients than a thread pool has workers; how many get
    /// welcomed, and how long it takes.
    Starve,
}

impl Scenario {
    /// Every scenario, in the order `compare` runs them.
    pub const ALL: [Scenario; 7] = [
        Scenario::Idle,
        Scenario::Chat,
        Scenario::Flood,
        Scenario::OneRoom,
        Scenario::Slow,
        Scenario::Churn,
        Scenario::Starve,
    ];

    /// The scenario's name as typed on the command line and used in file names.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Chat => "chat",
            Scenario::Flood => "flood",
            Scenario::OneRoom => "one-room",
            Scenario::Slow => "slow",
            Scenario::Churn => "churn",
            Scenario::Starve => "starve",
        }
    }

    /// Whether the scenario searches for a knee (and measures the fixed-load
    /// efficiency step) instead of sending at one rate.
    pub fn searches(self) -> bool {
        matches!(self, Scenario::Flood | Scenario::OneRoom)
    }

    /// Whether a server that only relays lines to everybody (no welcome, no
    /// rooms, no notices, no `/quit`) can take part. Such a server is run
    /// only in these scenarios.
    pub fn for_broadcast_servers(self) -> bool {
        self == Scenario::OneRoom
    }
}

/// How long and how big: `quick` runs every stage and scenario in about ten
/// minutes on two cores; `full` is the long run for the book's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A second or two per step or scenario (idle: 1,000 clients).
    Quick,
    /// Long steady states (idle: 10,000 clients).
    Full,
}

impl Profile {
    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Quick => "quick",
            Profile::Full => "full",
        }
    }
}

/// Every number a scenario run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which script to run.
    pub scenario: Scenario,
    /// Clients in rooms (churning clients come on top).
    pub clients: usize,
    /// Clients per room.
    pub room_size: usize,
    /// Messages per second per sending client (not used by the searching
    /// scenarios, whose loads are given in deliveries per second).
    pub rate: f64,
    /// Bytes per message line, before the `\n`.
    pub message_size: usize,
    /// Sending before measuring, to get past connection set-up and caches.
    pub warmup: Duration,
    /// The measured phase (per step, for the searching scenarios).
    pub duration: Duration,
    /// Longest wait for outstanding deliveries after sending stops.
    pub drain: Duration,
    /// Longest wait for all clients to be welcomed and in their rooms.
    pub ramp_timeout: Duration,
    /// Clients connecting at the same time during the ramp.
    pub connect_concurrency: usize,
    /// `slow`: fraction of each room that never reads.
    pub slow_fraction: f64,
    /// `churn`: clients connecting and quitting in a loop, concurrently.
    pub churners: usize,
    /// `idle`: how long the clients sit idle before memory is read.
    pub hold: Duration,
    /// `flood`, `one-room`: the knee search and the fixed-load step.
    pub search: knee::Settings,
}

/// The load every searching scenario measures CPU per delivery at, in
/// deliveries per second.
///
/// Why 500,000: in the last committed run before this figure existed, every
/// readiness and async stage (select to smol) carried 576,000 and 1,150,000
/// deliveries/s with p99 under 20 ms, so half a million is sustained by all of
/// them with a margin of two; it is a sixth of what the loopback ceiling
/// moves with batched writes on this machine, so the generator is far from
/// its own limit; and it is high enough that every event loop batches its
/// writes, as in the flood (at the chat scenario's 18,000/s a stage spends its
/// CPU on waking up, not on delivering: 7–10 µs per delivery instead of ~1).
pub const EFFICIENCY_LOAD: f64 = 500_000.0;

impl Plan {
    /// The preset of `scenario` for `profile`.
    pub fn preset(scenario: Scenario, profile: Profile) -> Plan {
        let quick = profile == Profile::Quick;
        let secs = |q: f64, f: f64| Duration::from_secs_f64(if quick { q } else { f });
        let base = Plan {
            scenario,
            clients: if quick { 200 } else { 1000 },
            room_size: 10,
            rate: 10.0,
            message_size: 64,
            warmup: secs(0.5, 3.0),
            duration: secs(2.0, 15.0),
            drain: secs(1.5, 5.0),
            ramp_timeout: secs(3.0, 20.0),
            // Clients wait in `lobby` between welcome and join, and every
            // arrival there is announced to the whole lobby: more connects in
            // flight means quadratically more notices.
            connect_concurrency: 64,
            slow_fraction: 0.0,
            churners: 0,
            hold: secs(1.0, 3.0),
            search: knee::Settings {
                // 18,000 deliveries/s: what 100 clients in rooms of 10 at 20
                // messages per second offer, the old flood's first step.
                start_load: 18_000.0,
                // Up to 9.2M (quick) or 37M (full) deliveries/s: past what
                // one core can read, so every search ends at a limit.
                doublings: if quick { 9 } else { 11 },
                // Three halvings of a doubling bracket the knee within a
                // factor of 2^(1/8), about 9%; four within 4.4%.
                bisections: if quick { 3 } else { 4 },
                bounds: knee::Bounds::for_p99(Duration::from_millis(100)),
                efficiency_load: EFFICIENCY_LOAD,
                // An overloaded stage may hold seconds of backlog (kernel
                // buffers and outboxes); what it still delivers after the
                // last step is not lost, only late.
                final_drain: secs(5.0, 10.0),
            },
        };
        let search = |clients: usize, room_size: usize| Plan {
            clients,
            room_size,
            warmup: secs(0.2, 2.0),
            duration: secs(0.8, 5.0),
            drain: secs(0.5, 3.0),
            ..base.clone()
        };
        match scenario {
            Scenario::Idle => Plan {
                clients: if quick { 1000 } else { 10_000 },
                room_size: 100,
                ramp_timeout: secs(5.0, 30.0),
                ..base
            },
            Scenario::Chat => Plan {
                rate: if quick { 10.0 } else { 5.0 },
                room_size: if quick { 10 } else { 20 },
                ..base
            },
            Scenario::Flood => search(if quick { 100 } else { 200 }, 10),
            // One room of 100 in both profiles: the size the peer was
            // measured at by hand, and one every stage can hold.
            Scenario::OneRoom => search(100, 100),
            Scenario::Slow => Plan {
                clients: if quick { 50 } else { 100 },
                // A slow client is only found out once the server's kernel
                // send buffer for it is full (loopback autotunes it up to
                // 4 MiB here) and then its 256 KiB outbox: 8 readers x 150
                // msg/s x 1000 B = 1.2 MB/s into every slow client gets
                // there within the quick run.
                rate: if quick { 150.0 } else { 100.0 },
                message_size: 1000,
                duration: secs(4.0, 15.0),
                slow_fraction: 0.2,
                ..base
            },
            Scenario::Churn => Plan {
                clients: if quick { 100 } else { 1000 },
                rate: 2.0,
                duration: secs(2.5, 15.0),
                churners: if quick { 16 } else { 64 },
                ..base
            },
            Scenario::Starve => Plan {
                clients: if quick { 64 } else { 256 },
                room_size: 8,
                rate: 5.0,
                warmup: Duration::ZERO,
                duration: secs(1.0, 5.0),
                ramp_timeout: secs(3.0, 10.0),
                ..base
            },
        }
    }
}

/// The fixed words of one chat protocol, as the generator needs them: the
/// lines it sends, and the received lines that mean something besides a
/// message. Templates take `{id}` (the client id), `{room}` (a room name) and
/// `{nick}`; an empty word means "this server has none".
#[derive(Debug, Clone, Copy)]
pub struct Words {
    /// First line to send after connecting.
    pub hello: &'static str,
    /// Line that enters a room; empty: no rooms, everybody is in one.
    pub join: &'static str,
    /// Prefix of the line that welcomes a client (the nick follows it).
    pub welcome: &'static str,
    /// Prefix of the line that confirms a join.
    pub join_ack: &'static str,
    /// Line a churning client sends before waiting for the server to close.
    pub quit: &'static str,
    /// Prefix of the line that refuses a client because the server is full.
    pub full: &'static str,
    /// The notice a room sees when the server cut a member for not reading.
    pub slow_notice: &'static str,
    /// What the server puts in front of a message it relays.
    pub relay: &'static str,
}

/// Our protocol (`book/src/specification.md`).
pub const OURS: Words = Words {
    hello: "",
    join: "/join {room}",
    welcome: "* welcome ",
    join_ack: "* you joined ",
    quit: "/quit",
    full: "! server full",
    slow_notice: "* {nick} left {room} (slow consumer)",
    relay: "<{nick}> ",
};

/// A server that relays every line to everybody and says nothing else: no
/// welcome, no rooms, no notices, no `/quit` (smol's `chat-server` example).
pub const BROADCAST: Words = Words {
    hello: "",
    join: "",
    welcome: "",
    join_ack: "",
    quit: "",
    full: "",
    slow_notice: "",
    relay: "",
};

impl Words {
    /// What the server sends for a message relayed from `nick`, before the
    /// message itself (ours: `<guest1> `).
    pub fn relay_prefix(&self, nick: &str) -> String {
        self.relay.replace("{nick}", nick)
    }
}

/// How to talk to the server under test: where it is, and its words.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// More addresses of the same chat (the nodes of a cluster): client `i` connects to
    /// `[addr, more...][i % n]`, so that the members of every room are spread over the nodes.
    pub more: Vec<SocketAddr>,
    /// The local address every connection is bound to before it connects (a `127.0.0.x` of
    /// its own per generator process gives each process its own ephemeral ports).
    pub source: Option<std::net::IpAddr>,
    /// First line to send after connecting (`{id}` becomes the client id); empty: none.
    pub hello: String,
    /// Line that enters a room (`{room}` becomes the room name, `{id}` the
    /// client id); empty: no rooms, every client is in one room.
    pub join: String,
    /// Prefix of the line that welcomes a client; empty: connected is welcomed.
    pub welcome: String,
    /// Prefix of the line that confirms the join; empty: do not wait for one.
    pub join_ack: String,
    /// Line a churning client sends before waiting for the server to close;
    /// empty: the client closes by itself.
    pub quit: String,
    /// Prefix of the line that refuses a connection; empty: never refused.
    pub full: String,
    /// Template of the slow-consumer notice (`{nick}`, `{room}`); empty: none.
    pub slow_notice: String,
}

impl Target {
    /// Where client `id` connects: the addresses in turn.
    pub fn addr_for(&self, id: usize) -> SocketAddr {
        match id % (1 + self.more.len()) {
            0 => self.addr,
            i => self.more[i - 1],
        }
    }

    /// A target speaking `words`.
    pub fn new(addr: SocketAddr, words: &Words) -> Target {
        Target {
            addr,
            more: Vec::new(),
            source: None,
            hello: words.hello.to_string(),
            join: words.join.to_string(),
            welcome: words.welcome.to_string(),
            join_ack: words.join_ack.to_string(),
            quit: words.quit.to_string(),
            full: words.full.to_string(),
            slow_notice: words.slow_notice.to_string(),
        }
    }

    /// Our protocol.
    pub fn ours(addr: SocketAddr) -> Target {
        Target::new(addr, &OURS)
    }

    /// A relay-everything server (see [`BROADCAST`]).
    pub fn broadcast(addr: SocketAddr) -> Target {
        Target::new(addr, &BROADCAST)
    }

    /// Whether clients are put in rooms at all.
    pub fn has_rooms(&self) -> bool {
        !self.join.is_empty()
    }

    /// The hello line of client `id` (in room `room`), if the server wants one.
    pub fn hello_line(&self, id: usize, room: usize) -> Option<String> {
        (!self.hello.is_empty()).then(|| fill(&self.hello, id, room))
    }

    /// The line that puts client `id` in room `room`, if the server has rooms.
    pub fn join_line(&self, id: usize, room: usize) -> Option<String> {
        self.has_rooms().then(|| fill(&self.join, id, room))
    }

    /// The quit line, if the server has one.
    pub fn quit_line(&self) -> Option<&str> {
        (!self.quit.is_empty()).then_some(self.quit.as_str())
    }

    /// Whether connected clients wait for a welcome line at all.
    pub fn waits_for_welcome(&self) -> bool {
        !self.welcome.is_empty()
    }

    /// Whether joining clients wait for a confirmation at all.
    pub fn waits_for_join_ack(&self) -> bool {
        !self.join_ack.is_empty()
    }

    /// Whether `line` refuses the connection (ours: `! server full`).
    pub fn is_refusal(&self, line: &[u8]) -> bool {
        !self.full.is_empty() && line.starts_with(self.full.as_bytes())
    }

    /// For a welcome line, the nick it gives (the first word after the
    /// prefix, possibly empty); `None` for any other line.
    pub fn welcome_nick<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        if !self.waits_for_welcome() {
            return None;
        }
        let rest = line.strip_prefix(self.welcome.as_bytes())?;
        Some(rest.split(|&b| b == b' ').next().unwrap_or(b""))
    }

    /// Whether `line` confirms a join.
    pub fn is_join_ack(&self, line: &[u8]) -> bool {
        self.waits_for_join_ack() && line.starts_with(self.join_ack.as_bytes())
    }

    /// For a slow-consumer notice, the nick of the member the server cut.
    ///
    /// The template is split at `{nick}`: what comes before must start the
    /// line; of what comes after, the text up to `{room}` must follow the
    /// nick, and the text after `{room}` must end the line. (`* {nick} left
    /// {room} (slow consumer)` matches `* guest7 left room3 (slow consumer)`.)
    pub fn slow_consumer_nick<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        let (before, after) = self.slow_notice.split_once("{nick}")?;
        let (between, tail) = after.split_once("{room}").unwrap_or((after, ""));
        let rest = line.strip_prefix(before.as_bytes())?;
        let rest = rest.strip_suffix(tail.as_bytes())?;
        if between.is_empty() {
            return (!rest.is_empty()).then_some(rest);
        }
        let at = find(rest, between.as_bytes())?;
        (at > 0).then(|| &rest[..at])
    }
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The name of room `index` (valid in our protocol: letters and digits).
pub fn room_name(index: usize) -> String {
    format!("room{index}")
}

/// Fills `{id}` and `{room}` in a template.
pub fn fill(template: &str, id: usize, room: usize) -> String {
    template
        .replace("{id}", &id.to_string())
        .replace("{room}", &room_name(room))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_take_the_addresses_in_turn() {
        let mut t = Target::ours("127.0.0.1:1".parse().expect("literal address"));
        assert_eq!(t.addr_for(7), t.addr);
        t.more = vec![
            "127.0.0.1:2".parse().expect("literal address"),
            "127.0.0.1:3".parse().expect("literal address"),
        ];
        let ports: Vec<u16> = (0..6).map(|i| t.addr_for(i).port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }

    fn ours() -> Target {
        Target::ours("127.0.0.1:9".parse().expect("literal address"))
    }

    #[test]
    fn our_lines_are_recognised() {
        let t = ours();
        assert!(t.is_refusal(b"! server full"));
        assert!(!t.is_refusal(b"<guest1> ! server full"));
        assert_eq!(
            t.welcome_nick(b"* welcome guest12 (type /help for commands)"),
            Some(&b"guest12"[..])
        );
        assert_eq!(t.welcome_nick(b"* guest2 joined lobby"), None);
        assert!(t.is_join_ack(b"* you joined room3 (4 members)"));
        assert_eq!(
            t.slow_consumer_nick(b"* guest7 left room3 (slow consumer)"),
            Some(&b"guest7"[..])
        );
        assert_eq!(t.slow_consumer_nick(b"* guest7 left room3"), None);
        assert_eq!(t.slow_consumer_nick(b"* guest7 left room3 (bye)"), None);
        assert_eq!(t.join_line(4, 2).as_deref(), Some("/join room2"));
        assert_eq!(t.hello_line(4, 2), None);
        assert_eq!(OURS.relay_prefix("guest1"), "<guest1> ");
    }

    #[test]
    fn a_broadcast_server_has_no_special_lines() {
        let t = Target::broadcast("127.0.0.1:9".parse().expect("literal address"));
        assert!(!t.has_rooms() && !t.waits_for_welcome() && !t.waits_for_join_ack());
        assert!(!t.is_refusal(b"! server full"));
        assert_eq!(t.slow_consumer_nick(b"* a left b (slow consumer)"), None);
        assert_eq!(t.quit_line(), None);
    }

    #[test]
    fn searching_scenarios_share_the_fixed_load() {
        for p in [Profile::Quick, Profile::Full] {
            let flood = Plan::preset(Scenario::Flood, p);
            let one = Plan::preset(Scenario::OneRoom, p);
            assert_eq!(flood.search.efficiency_load, one.search.efficiency_load);
            assert_eq!(one.room_size, one.clients, "one room holds everybody");
        }
        assert!(Scenario::ALL.iter().filter(|s| s.searches()).count() == 2);
    }
}
