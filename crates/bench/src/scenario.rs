//! The named scenarios, their presets per profile, and what to send to which
//! server (`Target`).
//!
//! A scenario is a *script* for the event loop (see `engine.rs`): connect the
//! clients, let the joins settle, send at a schedule, measure, drain. The
//! presets here fix every number so that two stages run by `compare` see
//! exactly the same load; `chat-bench run` lets each number be overridden.

use std::net::SocketAddr;
use std::time::Duration;

/// A load pattern. Each one answers one question the book asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// C10K: hold many idle clients (10,000 in `full`) in rooms of 100;
    /// measure server RSS and kernel memory per connection; then send one
    /// message per room to prove every client is still served.
    Idle,
    /// Steady open-loop chat: every client sends at `--rate` into rooms of
    /// `--room-size`; measures delivery latency and loss.
    Chat,
    /// Saturation: doubles the rate every step (a failed step is tried once
    /// more) and reports the highest delivery rate at which p99 latency stays
    /// bounded (under 100 ms, with 90% of the offered load delivered).
    Flood,
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
    pub const ALL: [Scenario; 6] = [
        Scenario::Idle,
        Scenario::Chat,
        Scenario::Flood,
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
            Scenario::Slow => "slow",
            Scenario::Churn => "churn",
            Scenario::Starve => "starve",
        }
    }
}

/// How long and how big: `quick` runs every stage and scenario in about five
/// minutes on two cores; `full` is the long run for the book's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// A few seconds per scenario per stage (idle: 1,000 clients).
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
    /// Messages per second per sending client (the first step's, for `flood`).
    pub rate: f64,
    /// Bytes per message line, before the `\n`.
    pub message_size: usize,
    /// Sending before measuring, to get past connection set-up and caches.
    pub warmup: Duration,
    /// The measured phase (per step, for `flood`).
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
    /// `flood`: most rate steps (the rate doubles after each bounded one).
    pub steps: usize,
    /// `flood`: a step is bounded while its p99 stays under this.
    pub p99_bound: Duration,
    /// `idle`: how long the clients sit idle before memory is read.
    pub hold: Duration,
}

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
            steps: 1,
            p99_bound: Duration::from_millis(100),
            hold: secs(1.0, 3.0),
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
            Scenario::Flood => Plan {
                clients: if quick { 100 } else { 200 },
                rate: 20.0,
                warmup: secs(0.2, 2.0),
                duration: secs(0.8, 5.0),
                drain: secs(0.5, 3.0),
                // Up to 2.3M (quick) or 9.2M (full) deliveries/s offered:
                // past what one core can read, so a run stops at the server's
                // limit or visibly at the generator's.
                steps: if quick { 8 } else { 10 },
                ..base
            },
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

/// How to talk to the server under test: ours by default, or any line-based
/// broadcast chat server through the templates.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the server listens.
    pub addr: SocketAddr,
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
}

impl Target {
    /// Our protocol (`/shared/PROTOCOL.md`).
    pub fn ours(addr: SocketAddr) -> Target {
        Target {
            addr,
            hello: String::new(),
            join: "/join {room}".to_string(),
            welcome: "* welcome ".to_string(),
            join_ack: "* you joined ".to_string(),
            quit: "/quit".to_string(),
        }
    }

    /// Whether clients are put in rooms at all.
    pub fn has_rooms(&self) -> bool {
        !self.join.is_empty()
    }
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
