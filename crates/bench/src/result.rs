//! What a run produces: the JSON the generator writes and `report` reads,
//! and `run.json`, the index of a `compare` run.
//!
//! Every figure carries its unit in its name (`_us`, `_kib`, `_per_sec`, `_s`)
//! so a reader of the raw JSON needs no other document. Fields that only some
//! scenarios fill are `Option`s and are left out of the JSON when empty.

use serde::{Deserialize, Serialize};

use crate::knee::{Knee, Phase, Verdict};

/// Latency percentiles of one histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// How many values the histogram holds.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value seen.
    pub max: u64,
}

impl Latency {
    /// Summarises an HdrHistogram.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The connect ramp: how many clients got in, and how fast.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Connect {
    /// Clients the scenario asked for.
    pub attempted: u64,
    /// Clients whose TCP connect completed.
    pub connected: u64,
    /// Clients that got the welcome line (or, without a welcome pattern, connected).
    pub welcomed: u64,
    /// Clients that were welcomed and confirmed in their room before messages flowed.
    pub ready: u64,
    /// Connects that failed outright (refused, reset, out of descriptors).
    pub failed: u64,
    /// Connections the server refused with `! server full`.
    pub rejected_full: u64,
    /// Clients still not ready when the ramp's time ran out (then closed).
    pub timed_out: u64,
    /// Wall time of the ramp, seconds.
    pub duration_s: f64,
    /// Ready clients per second of ramp.
    pub per_sec: f64,
    /// Time from starting the connect to the welcome line, per welcomed client.
    pub time_to_welcome_us: Latency,
    /// Server RSS and elapsed time at every tenth of the ramp (for the plots).
    pub samples: Vec<RampSample>,
}

/// One point of the ramp curve.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RampSample {
    /// Clients ready at that moment.
    pub clients: u64,
    /// Seconds since the ramp started.
    pub elapsed_s: f64,
    /// Server RSS, KiB (0 when the server pid is unknown).
    pub rss_kib: u64,
}

/// One step of a searching scenario (`flood`, `one-room`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    /// The offered load the search asked for, deliveries per second.
    #[serde(default)]
    pub load: f64,
    /// Doubling, retry or bisection.
    #[serde(default)]
    pub phase: Phase,
    /// Messages per second per sending client in this step.
    pub rate: f64,
    /// Deliveries per second the schedule offered (sends times fan-out).
    pub offered_per_sec: f64,
    /// Deliveries per second that arrived during the step.
    pub deliveries_per_sec: f64,
    /// Latency of the step's messages.
    pub latency_us: Latency,
    /// Messages the generator could not hand to the kernel (server not reading).
    pub unsent: u64,
    /// Whether the server kept its bounds (p99, delivered fraction, nothing
    /// still missing after the drain), whatever the generator did.
    pub bounded: bool,
    /// Fraction of the step's deliveries that had not arrived by the end of
    /// the run.
    #[serde(default)]
    pub missing: f64,
    /// Held, or who did not: see `knee.rs`.
    #[serde(default)]
    pub verdict: Verdict,
    /// What the generator did and cost in the step.
    #[serde(default)]
    pub generator: Generator,
    /// Server CPU per delivery in the step, microseconds.
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
}

/// The fixed-load step of a searching scenario: CPU per delivery at the one
/// load every readiness and async stage sustains (`scenario::EFFICIENCY_LOAD`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Efficiency {
    /// The step, as the search's steps are recorded.
    pub step: Step,
    /// Server CPU per delivery, microseconds (the step's own figure, repeated
    /// for readers of the JSON).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Generator CPU per delivery, microseconds.
    pub generator_cpu_us_per_delivery: Option<f64>,
}

/// The `idle` scenario's memory figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Idle {
    /// Server RSS growth per ready client, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// Growth of the kernel's TCP memory (`/proc/net/sockstat`) per ready
    /// client, bytes. Kept for the raw record only, never shown: the figure is
    /// machine-wide (every socket of every process, both ends of each
    /// loopback connection), and the kernel frees buffers of other sockets
    /// while ours connect, so it is noisy and can even be negative.
    pub kernel_per_connection_bytes: f64,
    /// Growth of the kernel's TCP memory over the ramp, KiB (machine-wide, as above).
    pub kernel_tcp_delta_kib: i64,
}

/// The `slow` scenario's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Slow {
    /// Clients that stop reading once they are in their room.
    pub slow_clients: u64,
    /// Of those, how many the server dropped as slow consumers.
    pub slow_dropped: u64,
    /// Reading clients the server dropped as slow consumers (should be 0).
    pub readers_dropped: u64,
    /// `(slow consumer)` notices seen, in total, by all readers.
    pub notices: u64,
}

/// The `churn` scenario's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Churn {
    /// Concurrent churning clients.
    pub churners: u64,
    /// Completed cycles: connect, welcome, join, quit, closed by the server.
    pub cycles: u64,
    /// Cycles per second.
    pub per_sec: f64,
    /// Cycles that failed (connect error, server full, no welcome in time).
    pub failed: u64,
    /// Time to welcome of the churning connects.
    pub time_to_welcome_us: Latency,
}

/// What the server cost, read from `/proc/PID`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Server {
    /// The server's process id.
    pub pid: u32,
    /// RSS at the end of the measured phase, KiB.
    pub rss_kib: u64,
    /// Peak RSS over the process's life (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// RSS before the first client connected, KiB.
    pub start_rss_kib: u64,
    /// Threads at the end of the measured phase.
    pub threads: u64,
    /// Server CPU (user + system) over the whole run, seconds.
    pub cpu_s: f64,
    /// Server CPU during the measured phase divided by deliveries in it, microseconds.
    pub cpu_us_per_delivery: Option<f64>,
    /// CPU the server was pinned to, if any.
    pub cpu: Option<usize>,
    /// How the server stopped, when the generator started it.
    pub exit: Option<Exit>,
}

/// How a server the generator started reacted to SIGTERM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Exit {
    /// Exited by itself within the grace period.
    pub in_time: bool,
    /// Its exit code, if it exited normally.
    pub code: Option<i32>,
    /// Seconds from SIGTERM to exit (or to SIGKILL).
    pub seconds: f64,
}

/// What the generator itself did and cost during a measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Generator {
    /// CPU the generator was pinned to, if any.
    pub cpu: Option<usize>,
    /// The generator thread's CPU during the window, seconds.
    pub cpu_s: f64,
    /// That CPU time over the window's wall time (1.0: its core was busy all
    /// the time, which an event loop can be and still keep up).
    pub busy: f64,
    /// Generator CPU per delivery, microseconds.
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
    /// Messages the schedule meant for the window.
    #[serde(default)]
    pub scheduled: u64,
    /// Of those, how many the generator had not queued by the window's end.
    #[serde(default)]
    pub late: u64,
    /// How late the generator queued each message after its intended time.
    #[serde(default)]
    pub send_lag_us: Latency,
    /// How long a received line could wait for the generator's loop: the
    /// loop pass that read it plus the one before, per line.
    #[serde(default)]
    pub read_lag_us: Latency,
    /// True when the generator fell behind (see `knee.rs`): the window's
    /// figures show the generator's limit, not the server's.
    #[serde(default)]
    pub bound: bool,
}

/// Where and how a result was produced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conditions {
    /// The generator's command line.
    pub command: String,
    /// `git describe`-like revision of the working tree, `-dirty` when modified.
    pub git_revision: String,
    /// The rustc that built the generator.
    pub rustc: String,
    /// Kernel release.
    pub kernel: String,
    /// CPU model and count.
    pub cpu_model: String,
    /// Host name.
    pub host: String,
    /// `generator on CPU 1, server on CPU 0`, or what was used instead.
    pub pinning: String,
    /// UTC date and time, ISO 8601.
    pub date: String,
}

/// One scenario run against one server: the JSON object `--json` writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// The stage label when `compare` ran it, else absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stage: Option<String>,
    /// Clients asked for.
    pub clients: u64,
    /// Clients per room.
    pub room_size: u64,
    /// Messages per second per sending client (the first step's, for `flood`).
    pub rate: f64,
    /// Bytes per message line, before `\n`.
    pub message_size: u64,
    /// Length of the measured phase, seconds.
    pub duration_s: f64,
    /// The connect ramp.
    pub connect: Connect,
    /// Messages accounted senders handed to the kernel.
    pub sent: u64,
    /// Deliveries that had to happen.
    pub expected: u64,
    /// Deliveries that happened (distinct).
    pub delivered: u64,
    /// Expected deliveries that never came, between members that stayed.
    pub lost: u64,
    /// Expected deliveries still missing when the run ended while the server
    /// was still delivering its backlog (an overloaded server): late, not
    /// counted as lost.
    #[serde(default)]
    pub unfinished: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Deliveries that broke per-sender order.
    pub reordered: u64,
    /// Missing deliveries to or from members the server disconnected.
    pub undeliverable: u64,
    /// Receipts nothing explains (wrong room, unknown sender).
    pub unexpected: u64,
    /// Receipts of one's own message.
    pub echoed: u64,
    /// Messages the schedule wanted but the generator could not hand to the
    /// kernel because the server stopped reading.
    pub unsent: u64,
    /// Accounted clients the server disconnected during the run.
    pub disconnected_by_server: u64,
    /// Growth of the kernel's TCP memory (`/proc/net/sockstat`, both ends of
    /// every loopback connection, machine-wide, so noisy and possibly
    /// negative; not shown in reports) from the start of the run to the end
    /// of the measured phase, KiB.
    #[serde(default)]
    pub kernel_tcp_delta_kib: i64,
    /// Deliveries per second during the measured phase (by arrival time).
    pub deliveries_per_sec: f64,
    /// Latency of messages meant to be sent in the measured phase.
    pub latency_us: Latency,
    /// `flood`, `one-room`: every step of the search, in order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub steps: Vec<Step>,
    /// `flood`, `one-room`: the knee, and which bound ended the search.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub knee: Option<Knee>,
    /// `flood`, `one-room`: the fixed-load step.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub efficiency: Option<Efficiency>,
    /// `idle`: memory per connection.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idle: Option<Idle>,
    /// `slow`: slow-consumer accounting.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slow: Option<Slow>,
    /// `churn`: connect/disconnect rate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub churn: Option<Churn>,
    /// Server cost, when its pid is known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server: Option<Server>,
    /// Generator cost in the measured window the headline figures come from.
    pub generator: Generator,
    /// What happened, in words: "welcomed 1 of 1000", errors, warnings.
    pub notes: Vec<String>,
    /// Set when the run could not be carried out at all.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Where and how it ran.
    pub conditions: Conditions,
}

/// One server's entry in `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageEntry {
    /// Label.
    pub label: String,
    /// Command line used to start it (without the address).
    pub command: String,
    /// Whether its binary was found; a missing one is listed, never skipped silently.
    pub found: bool,
    /// True for a peer: a server that is not one of the book's stages, run
    /// beside them for comparison (only in the scenarios it can take part in).
    #[serde(default)]
    pub peer: bool,
    /// True for a baseline: a server of our protocol that is not a stage of the book (the
    /// Python asyncio server), run in every scenario like a stage and marked in the tables.
    #[serde(default)]
    pub baseline: bool,
}

/// `run.json`: what `compare` ran, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunIndex {
    /// quick or full.
    pub profile: String,
    /// Scenario names, in order.
    pub scenarios: Vec<String>,
    /// Stages, then peers, in order.
    pub stages: Vec<StageEntry>,
    /// Where, when and with what.
    pub conditions: Conditions,
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}
