//! The command line: `run`, `compare`, `report` and `ceiling`.
//!
//! `chat-bench --help` and `chat-bench run --help` list every flag; the
//! scenarios are documented in `scenario.rs` and shown by `--help` too.
//! The protocol flags of `run` default to our protocol's words
//! (`scenario::OURS`); pass `--welcome '' --join ''` and so on for another
//! server. (The binary is not on `PATH`: run it as
//! `cargo run --release -p chat-bench -- run ...` or from the target folder.)

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::{self, Config, Entry};
use crate::scenario::{Plan, Profile, Scenario, Target, OURS};
use crate::{ceiling, engine, report, result, sys};

/// Open-loop, room-aware load generator for line-based chat servers.
///
/// Measures delivery latency (from the *intended* send time, so a stalled
/// server cannot hide its stalls), loss, duplicates and reordering, and what
/// the server costs (RSS, threads, CPU per delivery).
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run one scenario against a running server.
    Run(Box<RunArgs>),
    /// Start every stage binary, run the same scenarios on each, write results and a table.
    Compare(CompareArgs),
    /// Turn a results folder into Markdown tables and SVG plots.
    Report(ReportArgs),
    /// Measure the loopback ceiling: a trivial broadcaster, no chat logic.
    Ceiling(CeilingArgs),
}

/// A CPU to pin to, or none.
#[derive(Debug, Clone, Copy)]
pub struct Cpu(
    /// The CPU number; `None` for `none`.
    pub Option<usize>,
);

fn parse_cpu(s: &str) -> std::result::Result<Cpu, String> {
    if s == "none" {
        return Ok(Cpu(None));
    }
    s.parse()
        .map(|c| Cpu(Some(c)))
        .map_err(|_| format!("expected a CPU number or `none`, got {s:?}"))
}

/// Pinning flags shared by the subcommands.
#[derive(Debug, Args)]
pub struct Pinning {
    /// CPU for the generator (`none`: do not pin).
    #[arg(long, value_parser = parse_cpu, default_value = "1")]
    pub cpu: Cpu,
    /// CPU for the server (`none`: do not pin). With `run`, applied to the
    /// `--pid` process's threads.
    #[arg(long, value_parser = parse_cpu, default_value = "0")]
    pub server_cpu: Cpu,
}

impl Pinning {
    /// The pinning to use: none of it on a one-CPU machine.
    fn effective(&self) -> (Option<usize>, Option<usize>) {
        if sys::cpu_count() < 2 {
            (None, None)
        } else {
            (self.cpu.0, self.server_cpu.0)
        }
    }
}

/// `chat-bench run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server address; repeat it for the nodes of a cluster (client `i` connects to the
    /// `i`-th address, in turn, so that every room spans the nodes).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub addr: Vec<std::net::SocketAddr>,
    /// Bind every connection to this local address first (e.g. a `127.0.0.x` of its own per
    /// generator process, for more ephemeral ports).
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
    /// Scenario to run.
    #[arg(long, value_enum, default_value = "chat")]
    pub scenario: Scenario,
    /// Preset sizes and durations.
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Clients in rooms (overrides the preset).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Clients per room (overrides the preset).
    #[arg(long)]
    pub room_size: Option<usize>,
    /// Messages per second per sending client (overrides the preset).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured seconds (overrides the preset).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Bytes per message line (overrides the preset).
    #[arg(long)]
    pub message_size: Option<usize>,
    /// Longest wait, in seconds, for all clients to be in their rooms.
    #[arg(long)]
    pub ramp_timeout: Option<f64>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The server's pid, for RSS, threads and CPU figures.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Searching scenarios: offered deliveries/s of the first step (overrides the preset).
    #[arg(long)]
    pub start_load: Option<f64>,
    /// Searching scenarios: most doublings (overrides the preset).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Searching scenarios: bisection steps once the knee is bracketed (overrides the preset).
    #[arg(long)]
    pub bisections: Option<usize>,
    /// Searching scenarios: offered deliveries/s of the fixed-load step (overrides the preset).
    #[arg(long)]
    pub efficiency_load: Option<f64>,
    /// First line each client sends (`{id}` is the client id), e.g. `NAME user{id}`.
    #[arg(long, default_value = OURS.hello)]
    pub hello: String,
    /// Line that joins a room (`{room}`, `{id}`); empty: all clients in one room.
    #[arg(long, default_value = OURS.join)]
    pub join: String,
    /// Prefix of the welcome line; empty: connected counts as welcomed.
    #[arg(long, default_value = OURS.welcome)]
    pub welcome: String,
    /// Prefix of the join confirmation; empty: do not wait for one.
    #[arg(long, default_value = OURS.join_ack)]
    pub join_ack: String,
    /// Line a churning client sends before the server closes it; empty: close.
    #[arg(long, default_value = OURS.quit)]
    pub quit: String,
    /// Prefix of the line that refuses a client as the server being full; empty: none.
    #[arg(long, default_value = OURS.full)]
    pub full: String,
    /// Notice of a member cut for not reading (`{nick}`, `{room}`); empty: none.
    #[arg(long, default_value = OURS.slow_notice)]
    pub slow_notice: String,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Pinning.
    #[command(flatten)]
    pub pinning: Pinning,
}

/// `chat-bench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// `all`, `none`, or a comma-separated list of stages (e.g. `epoll,mio,tokio`).
    #[arg(long, default_value = "all")]
    pub stages: String,
    /// A peer to run beside the stages, as `LABEL=COMMAND` (repeatable): a
    /// server that picks its own address, prints `listening on ADDR` (any
    /// case), and relays every line to everybody. Run in `one-room` only.
    #[arg(long)]
    pub peer: Vec<String>,
    /// A baseline to run beside the stages, as `LABEL=COMMAND` (repeatable): a server of our
    /// protocol that is not a stage (e.g. `asyncio=baseline/asyncio_chat.py`), run in every
    /// scenario and marked as a baseline.
    #[arg(long)]
    pub baseline: Vec<String>,
    /// `all`, or a comma-separated list of scenarios.
    #[arg(long, default_value = "all")]
    pub scenarios: String,
    /// Preset sizes and durations.
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Folder under which `<date>-<host>/` is created.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Where the stage binaries are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Pinning.
    #[command(flatten)]
    pub pinning: Pinning,
}

/// `chat-bench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A folder written by `compare`.
    pub results_dir: PathBuf,
    /// Where to write (default: `RESULTS_DIR/report`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `chat-bench ceiling`.
#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// Loopback connections to write to.
    #[arg(long, default_value_t = 100)]
    pub sockets: usize,
    /// Bytes per message (the server's `<guestN> ` prefix comes on top).
    #[arg(long, default_value_t = 64)]
    pub message_size: usize,
    /// Seconds per mode.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Also measure the batched writer paced at this many lines per second.
    #[arg(long, default_value_t = crate::scenario::EFFICIENCY_LOAD)]
    pub paced: f64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Pinning (the broadcaster runs where a server would).
    #[command(flatten)]
    pub pinning: Pinning,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Pins the generator's thread and raises its descriptor limit.
fn prepare(own_cpu: Option<usize>) -> Result<()> {
    sys::raise_nofile_limit()?;
    if let Some(cpu) = own_cpu {
        sys::pin_thread(0, cpu)
            .map_err(|e| format!("cannot pin the generator to CPU {cpu}: {e}"))?;
    }
    Ok(())
}

/// Parses the command line and runs it.
pub fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Run(a) => run(*a),
        Cmd::Compare(a) => compare_cmd(a),
        Cmd::Report(a) => {
            let loaded = report::load(&a.results_dir)?;
            let out = a.out.unwrap_or_else(|| a.results_dir.join("report"));
            for p in report::write(&loaded, &out)? {
                println!("{}", p.display());
            }
            Ok(())
        }
        Cmd::Ceiling(a) => {
            let (own, server) = a.pinning.effective();
            prepare(own)?;
            let mut c = ceiling::measure(
                a.sockets,
                a.message_size,
                Duration::from_secs_f64(a.duration),
                server,
                (a.paced > 0.0).then_some(a.paced),
            )?;
            c.conditions = sys::conditions(compare::pinning_text(own, server));
            print!("{}", report::ceiling_table(Some(&c)));
            if let Some(path) = a.json {
                result::write_json(&path, &c)?;
            }
            Ok(())
        }
    }
}

fn run(a: RunArgs) -> Result<()> {
    let mut plan = Plan::preset(a.scenario, a.profile);
    if let Some(v) = a.clients {
        plan.clients = v;
    }
    if let Some(v) = a.room_size {
        plan.room_size = v.max(1);
    }
    if let Some(v) = a.rate {
        plan.rate = v;
    }
    if let Some(v) = a.duration {
        plan.duration = Duration::from_secs_f64(v);
    }
    if let Some(v) = a.message_size {
        plan.message_size = v;
    }
    if let Some(v) = a.ramp_timeout {
        plan.ramp_timeout = Duration::from_secs_f64(v);
    }
    if let Some(v) = a.start_load {
        plan.search.start_load = v;
    }
    if let Some(v) = a.steps {
        plan.search.doublings = v;
    }
    if let Some(v) = a.bisections {
        plan.search.bisections = v;
    }
    if let Some(v) = a.efficiency_load {
        plan.search.efficiency_load = v;
    }
    let Some((&first, more)) = a.addr.split_first() else {
        return Err("--addr: at least one address".into());
    };
    let target = Target {
        addr: first,
        more: more.to_vec(),
        source: a.source,
        hello: a.hello,
        join: a.join,
        welcome: a.welcome,
        join_ack: a.join_ack,
        quit: a.quit,
        full: a.full,
        slow_notice: a.slow_notice,
    };
    let (own, mut server_cpu) = a.pinning.effective();
    prepare(own)?;
    match (a.pid, server_cpu) {
        (Some(pid), Some(cpu)) => sys::pin_process(pid, cpu)
            .map_err(|e| format!("cannot pin server pid {pid} to CPU {cpu}: {e}"))?,
        // Without a pid there is nothing to pin; record that honestly.
        (None, _) => server_cpu = None,
        _ => {}
    }
    let opts = engine::Options {
        progress: !a.quiet,
        label: first.to_string(),
        server_pid: a.pid,
        own_cpu: own,
        server_cpu,
    };
    let mut r = engine::run(&plan, &target, &opts)?;
    r.conditions = sys::conditions(compare::pinning_text(own, server_cpu));
    print_summary(&r);
    if let Some(path) = a.json {
        result::write_json(&path, &r)?;
    }
    Ok(())
}

/// A few readable lines about one result.
fn print_summary(r: &crate::result::RunResult) {
    println!(
        "{}: {} of {} clients ready in {:.2} s; sent {} expected {} delivered {} lost {} duplicated {} reordered {} (undeliverable {}, unsent {})",
        r.scenario, r.connect.ready, r.clients, r.connect.duration_s, r.sent, r.expected,
        r.delivered, r.lost, r.duplicated, r.reordered, r.undeliverable, r.unsent
    );
    let w = &r.connect.time_to_welcome_us;
    println!(
        "connect: {} connected, {} welcomed, {} failed, {} refused (server full), {} timed out; {:.0} ready/s; time to welcome p50 {} us p99 {} us max {} us",
        r.connect.connected, r.connect.welcomed, r.connect.failed, r.connect.rejected_full,
        r.connect.timed_out, r.connect.per_sec, w.p50, w.p99, w.max
    );
    let l = &r.latency_us;
    println!(
        "deliveries/s {:.0}; latency p50 {} us p90 {} us p99 {} us p99.9 {} us max {} us",
        r.deliveries_per_sec, l.p50, l.p90, l.p99, l.p999, l.max
    );
    for st in &r.steps {
        println!(
            "step ({:?}): offered {:.0}/s delivered {:.0}/s p99 {} us: {:?} (generator busy {:.0}%, lag p99 {} us)",
            st.phase,
            st.offered_per_sec,
            st.deliveries_per_sec,
            st.latency_us.p99,
            st.verdict,
            st.generator.busy * 100.0,
            st.generator.send_lag_us.p99.max(st.generator.read_lag_us.p99)
        );
    }
    if let Some(k) = &r.knee {
        println!("knee: {} ({:?})", report::knee_text(k), k.limit);
    }
    if let Some(e) = &r.efficiency {
        println!(
            "fixed load {:.0}/s: delivered {:.0}/s, {:?}; server {} us per delivery, generator {} us per delivery",
            e.step.load,
            e.step.deliveries_per_sec,
            e.step.verdict,
            e.server_cpu_us_per_delivery.map_or("-".into(), |v| format!("{v:.2}")),
            e.generator_cpu_us_per_delivery.map_or("-".into(), |v| format!("{v:.2}")),
        );
    }
    let g = &r.generator;
    println!(
        "generator: busy {:.0}%, {} us per delivery, {} of {} messages late, lag p99 send {} us read {} us{}",
        g.busy * 100.0,
        g.cpu_us_per_delivery.map_or("-".into(), |v| format!("{v:.2}")),
        g.late,
        g.scheduled,
        g.send_lag_us.p99,
        g.read_lag_us.p99,
        if g.bound { " (generator-bound)" } else { "" }
    );
    if let Some(s) = &r.server {
        println!(
            "server: rss {} KiB (peak {}), threads {}, cpu {:.2} s, {} us per delivery",
            s.rss_kib,
            s.peak_rss_kib,
            s.threads,
            s.cpu_s,
            s.cpu_us_per_delivery
                .map_or("-".into(), |v| format!("{v:.2}"))
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

fn compare_cmd(a: CompareArgs) -> Result<()> {
    let scenarios = if a.scenarios.trim() == "all" {
        Scenario::ALL.to_vec()
    } else {
        a.scenarios
            .split(',')
            .map(|s| <Scenario as clap::ValueEnum>::from_str(s.trim(), true))
            .collect::<std::result::Result<Vec<_>, _>>()?
    };
    let (own, server) = a.pinning.effective();
    prepare(own)?;
    let stages = if a.stages.trim() == "none" {
        Vec::new()
    } else {
        compare::select_stages(&a.stages)?
    };
    let mut entries: Vec<Entry> = stages.iter().map(|s| Entry::stage(s, &a.bin_dir)).collect();
    for spec in &a.baseline {
        entries.push(Entry::baseline(spec)?);
    }
    for spec in &a.peer {
        entries.push(Entry::peer(spec)?);
    }
    let cfg = Config {
        entries,
        scenarios,
        profile: a.profile,
        out: a.out,
        own_cpu: own,
        server_cpu: server,
        progress: !a.quiet,
    };
    let dir = compare::compare(&cfg)?;
    let loaded = report::load(&dir)?;
    let written = report::write(&loaded, &dir.join("report"))?;
    println!("{}", report::overview(&loaded));
    println!("{}", report::ceiling_table(loaded.ceiling.as_ref()));
    println!("results: {}", dir.display());
    println!("summary: {}", dir.join("summary.md").display());
    println!(
        "report:  {} ({} files)",
        dir.join("report").display(),
        written.len()
    );
    Ok(())
}
