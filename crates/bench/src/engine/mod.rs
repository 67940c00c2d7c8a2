//! The load generator's event loop: one thread, one `mio::Poll`, every client socket.
//!
//! Why one thread: the generator must load the server from a single core, so
//! that on a two-core machine the server gets the other one. A thread per
//! client would spend that core on context switches; an event loop spends it
//! on reading and parsing, the work that has to be done anyway.
//!
//! The engine is four parts, one file each:
//!
//! - this file: the loop itself. One [`Engine::turn`] waits for socket events
//!   or for the next scheduled send, whichever comes first, then reads every
//!   readable socket, writes every message whose *intended* time has come
//!   (several lines per write when a client is due more than once: open
//!   loop, the schedule never waits for the server, and lateness is measured
//!   as latency), and starts new connects while the ramp has room for them;
//! - `client.rs`: one simulated client's state machine (connect, welcome,
//!   join, read lines, quit), as free functions over a client and the shared
//!   accounting;
//! - `script.rs`: the scenarios as plain sequences of phases (`ramp`,
//!   `settle`, `send`, `drain`), the knee search and the fixed-load step;
//! - `finish.rs`: the result, built from the ledger, the measured windows
//!   and the `/proc` samples.
//!
//! The timer is `epoll_wait`'s, with millisecond resolution: a send may leave
//! up to about a millisecond after its intended time, and that delay counts as
//! latency. Sub-millisecond latencies are at the generator's noise floor; the
//! comparison between stages is made at the same floor.
//!
//! Run it through the CLI, e.g.
//! `cargo run --release -p chat-bench -- run --addr 127.0.0.1:7878 --scenario chat`.

mod client;
mod finish;
mod script;
mod window;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use crate::ledger::Ledger;
use crate::marker::{self, Marker};
use crate::result::{self, Latency, RampSample, RunResult};
use crate::scenario::{Plan, Scenario, Target};
use crate::sys;

use client::{Client, Kind, State};
use window::Window;

/// Bytes a client may have waiting in its outgoing buffer. Past it, the
/// schedule's messages are counted as `unsent` instead of piling up: the
/// server is not reading.
const OUT_CAP: usize = 256 * 1024;
/// Most messages one client writes at once when it is behind schedule.
const MAX_BATCH: usize = 64;
/// How long a churning client may take for one step (connect, welcome, quit).
const CHURN_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// The sending schedule of the current phase.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Microseconds between two messages of one client.
    interval_us: f64,
    /// No message is meant for this time or later.
    end_us: f64,
}

/// Counters of everything that is not a delivery.
#[derive(Debug, Default)]
struct Counters {
    /// Members whose TCP connect completed.
    connected: u64,
    /// Members that got the welcome line.
    welcomed: u64,
    /// Members in their room.
    ready: u64,
    /// Members whose connect failed, or that the server closed during the handshake.
    failed: u64,
    /// Members refused as the server being full.
    rejected_full: u64,
    /// Members not ready when the ramp ended.
    timed_out: u64,
    /// Ready members the server closed.
    disconnected_by_server: u64,
    /// Received lines over `client::MAX_LINE`, dropped.
    overlong_lines: u64,
    /// Slow-consumer notices seen by members.
    slow_notices: u64,
    /// Churn cycles completed (closed by the server after the quit).
    churn_cycles: u64,
    /// Churn cycles that failed or timed out.
    churn_failed: u64,
    /// First copies of expected deliveries, in total.
    arrived: u64,
    /// Messages the schedule could not hand to the kernel.
    unsent: u64,
    /// Messages members handed to the kernel, in total (for progress lines).
    sent: u64,
}

/// Everything but the clients, so that a client and the rest can be borrowed
/// mutably at the same time.
#[derive(Debug)]
struct Core {
    /// Time zero of the run: markers carry microseconds since this instant.
    epoch: Instant,
    /// Where to connect and what to say.
    target: Target,
    /// Clients in rooms (churners have ids from here on).
    members: usize,
    /// Who had to receive what.
    ledger: Ledger,
    /// Measured windows, oldest first; they never overlap.
    windows: Vec<Window>,
    /// Index of the window being filled by the current send phase.
    current: Option<usize>,
    /// Sends due, earliest first: (intended time in µs, client id).
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// The current phase's schedule, if it sends.
    schedule: Option<Schedule>,
    /// Ramp clients between connect and ready.
    in_flight: usize,
    /// Time to welcome of room members.
    welcome_hist: Histogram<u64>,
    /// Time to welcome of churners.
    churn_hist: Histogram<u64>,
    /// Whether churners restart after each cycle.
    churning: bool,
    /// Churner slots waiting to connect again.
    churn_idle: VecDeque<usize>,
    /// Ever-growing id for the `{id}` of churners' hello lines.
    churn_serial: usize,
    /// Nick of every welcomed member, to recognise slow-consumer notices.
    nicks: HashMap<Box<str>, usize>,
    /// Clients named in a slow-consumer notice.
    dropped_slow: HashSet<usize>,
    /// Per member: the other accounted members of its room (set by each
    /// send phase), which each of its messages owes a delivery to.
    fanout_of: Vec<u32>,
    /// Non-delivery counters.
    n: Counters,
}

impl Core {
    /// Microseconds since the epoch.
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Accounts the arrival, at `now_us`, of the first copy of a message meant
    /// for `intended_us`.
    fn on_delivery(&mut self, intended_us: u64, now_us: u64) {
        self.n.arrived += 1;
        // Windows are in time order and do not overlap, and a message
        // arrives after it was meant to be sent: walking back from the
        // newest, the first window that ended before the intended time ends
        // the search. So this costs one or two comparisons per delivery,
        // however many steps a flood has run.
        for w in self.windows.iter_mut().rev() {
            if w.end_us <= intended_us {
                break;
            }
            if w.contains(intended_us) {
                w.hist
                    .saturating_record(now_us.saturating_sub(intended_us).max(1));
            }
            if w.contains(now_us) {
                w.arrived += 1;
            }
        }
    }

    /// The window being measured, if any.
    fn current_window(&mut self) -> Option<&mut Window> {
        self.current.and_then(|i| self.windows.get_mut(i))
    }
}

/// Knobs that are not part of the scenario.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print a progress line to stderr about once a second.
    pub progress: bool,
    /// Name shown in progress lines (e.g. the stage).
    pub label: String,
    /// The server's pid, for `/proc` figures.
    pub server_pid: Option<u32>,
    /// CPU the generator thread is pinned to (recorded, not applied here).
    pub own_cpu: Option<usize>,
    /// CPU the server is pinned to (recorded, not applied here).
    pub server_cpu: Option<usize>,
}

/// The generator: clients, poller and accounting.
#[derive(Debug)]
pub struct Engine {
    /// The scenario's numbers.
    plan: Plan,
    /// Progress and server knobs.
    opts: Options,
    /// The one poller over all sockets.
    poll: Poll,
    /// Reused event buffer.
    events: Events,
    /// Reused list of this turn's events: (client, readable, closed, writable).
    ready_list: Vec<(usize, bool, bool, bool)>,
    /// Every client: members first, then churners.
    clients: Vec<Client>,
    /// Reused read buffer.
    scratch: Vec<u8>,
    /// Accounting and counters.
    core: Core,
    /// How long the previous pass of the loop worked (after its wait), µs.
    last_pass_us: u64,
    /// Next progress line.
    next_progress: Instant,
    /// Deliveries and sent messages counted at the last progress line.
    last_progress: (u64, u64),
    /// Next `/proc` sample of the server.
    next_sample: Instant,
    /// Latest `/proc` sample of the server.
    server_now: sys::ProcSample,
    /// `/proc` sample taken before the first connect.
    server_start: Option<sys::ProcSample>,
    /// Kernel TCP memory before the first connect, KiB.
    kernel_start_kib: i64,
    /// The ramp's curve.
    ramp_samples: Vec<RampSample>,
    /// Ramp wall time.
    ramp_seconds: f64,
    /// Filled by the idle script.
    idle: Option<result::Idle>,
    /// Server sample at the end of the main window.
    server_end: Option<sys::ProcSample>,
    /// Kernel TCP memory at the end of the last window, KiB.
    kernel_end_kib: i64,
    /// `churn`: cycles completed in the measured window, and its seconds.
    churn_measured: (u64, f64),
    /// Searching scenarios: one entry per step window, in order.
    steps: Vec<script::StepRecord>,
    /// Searching scenarios: the knee, once searched.
    knee: Option<crate::knee::Knee>,
    /// Searching scenarios: the window of the fixed-load step.
    efficiency: Option<script::StepRecord>,
    /// Set by each drain: it ran out of time while the server was still
    /// delivering (what is missing then is late, not provably lost).
    still_delivering: bool,
    /// Notes for the result.
    notes: Vec<String>,
}

/// A histogram for latencies: one microsecond to ten minutes at three
/// significant digits (a few hundred KiB; every latency a run can produce fits).
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

/// Runs `plan` against `target` and returns the result (conditions not filled).
pub fn run(plan: &Plan, target: &Target, opts: &Options) -> io::Result<RunResult> {
    let mut engine = Engine::new(plan.clone(), target.clone(), opts.clone())?;
    match plan.scenario {
        Scenario::Idle => engine.idle()?,
        Scenario::Chat | Scenario::Slow | Scenario::Starve => engine.chat()?,
        Scenario::Flood | Scenario::OneRoom => engine.search()?,
        Scenario::Churn => engine.churn()?,
    }
    Ok(engine.finish())
}

impl Engine {
    /// Sets up clients and the poller; connects nobody yet.
    pub fn new(plan: Plan, target: Target, opts: Options) -> io::Result<Engine> {
        let members = plan.clients;
        let room_size = if target.has_rooms() {
            plan.room_size.max(1)
        } else {
            members.max(1)
        };
        // Exact accounting keeps one small record per (receiver, sender) pair.
        if members.saturating_mul(room_size) > 50_000_000 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{members} clients in rooms of {room_size} is too many pairs to account for; use smaller rooms"),
            ));
        }
        let per_room_slow = (room_size as f64 * plan.slow_fraction).round() as usize;
        let mut clients = Vec::with_capacity(members + plan.churners);
        for id in 0..members {
            // The last members of each room are the slow ones.
            let kind = if id % room_size >= room_size - per_room_slow.min(room_size) {
                Kind::Slow
            } else {
                Kind::Member
            };
            clients.push(Client::new(kind));
        }
        clients.extend((0..plan.churners).map(|_| Client::new(Kind::Churner)));
        let now = Instant::now();
        let server_start = opts.server_pid.and_then(sys::settled_sample);
        Ok(Engine {
            core: Core {
                epoch: now,
                target,
                members,
                ledger: Ledger::new(members, room_size),
                windows: Vec::new(),
                current: None,
                heap: BinaryHeap::new(),
                schedule: None,
                in_flight: 0,
                welcome_hist: new_histogram(),
                churn_hist: new_histogram(),
                churning: false,
                churn_idle: VecDeque::new(),
                churn_serial: members,
                nicks: HashMap::new(),
                dropped_slow: HashSet::new(),
                fanout_of: vec![0; members],
                n: Counters::default(),
            },
            plan,
            opts,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready_list: Vec::with_capacity(1024),
            clients,
            scratch: vec![0; 64 * 1024],
            last_pass_us: 0,
            next_progress: now + Duration::from_secs(1),
            last_progress: (0, 0),
            next_sample: now,
            server_now: server_start.unwrap_or_default(),
            server_start,
            kernel_start_kib: sys::kernel_tcp_kib(),
            ramp_samples: Vec::new(),
            ramp_seconds: 0.0,
            idle: None,
            server_end: None,
            kernel_end_kib: 0,
            churn_measured: (0, 0.0),
            steps: Vec::new(),
            knee: None,
            efficiency: None,
            still_delivering: false,
            notes: Vec::new(),
        })
    }

    // ANCHOR: turn
    /// Waits for events (at most until `until` or the next due send), then
    /// reads, writes and connects what it can.
    fn turn(&mut self, until: Instant) -> io::Result<()> {
        let now = Instant::now();
        let mut timeout = until
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        if let Some(Reverse((due_us, _))) = self.core.heap.peek() {
            let due = self.core.epoch + Duration::from_micros(*due_us);
            timeout = timeout.min(due.saturating_duration_since(now));
        }
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let pass_start = Instant::now();
        let arrived_before = self.core.n.arrived;
        self.ready_list.clear();
        for ev in self.events.iter() {
            self.ready_list.push((
                ev.token().0,
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_read_closed() || ev.is_error(),
                ev.is_writable() || ev.is_error(),
            ));
        }
        for i in 0..self.ready_list.len() {
            let (id, readable, closed, writable) = self.ready_list[i];
            self.on_event(id, readable, closed, writable);
        }
        self.send_due();
        self.restart_churners();
        self.tick();
        self.account_pass(pass_start, self.core.n.arrived - arrived_before);
        Ok(())
    }
    // ANCHOR_END: turn

    /// Records how long a line read in this pass may have waited for us: a
    /// line that became readable just after the previous pass's wait
    /// returned waited for all of that pass and for this one up to its read.
    fn account_pass(&mut self, pass_start: Instant, lines: u64) {
        let pass_us = pass_start.elapsed().as_micros() as u64;
        let lag = self.last_pass_us + pass_us;
        self.last_pass_us = pass_us;
        if lines > 0 {
            if let Some(w) = self.core.current_window() {
                w.read_lag.saturating_record_n(lag.max(1), lines);
            }
        }
    }

    /// Handles one socket's readiness.
    fn on_event(&mut self, id: usize, readable: bool, closed: bool, writable: bool) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        if c.state == State::Connecting {
            match client::connect_result(c) {
                Some(Ok(())) => client::on_connected(c, id, &mut self.core),
                Some(Err(_)) => {
                    client::fail(c, id, &mut self.core);
                    return;
                }
                None => return,
            }
        }
        if writable && c.pending() > 0 {
            client::flush(c, id, &mut self.core);
        }
        if readable {
            client::read_all(c, id, &mut self.core, &mut self.scratch, closed);
        }
    }

    // ANCHOR: send_due
    /// Writes every message whose intended time has come.
    fn send_due(&mut self) {
        let Some(sched) = self.core.schedule else {
            return;
        };
        let now_us = self.core.now_us() as f64;
        while let Some(&Reverse((due, id))) = self.core.heap.peek() {
            if due as f64 > now_us {
                break;
            }
            self.core.heap.pop();
            let id = id as usize;
            let c = &mut self.clients[id];
            if c.stream.is_none() || c.state != State::Ready {
                continue;
            }
            // Catch up on every message that is due, in one write: the
            // intended times stay those of the schedule, so any lateness of
            // ours or the server's shows up as latency.
            let mut t = c.next_due;
            let mut built = 0;
            while t <= now_us && t < sched.end_us && built < MAX_BATCH {
                if c.pending() >= OUT_CAP {
                    self.core.n.unsent += 1;
                    if let Some(w) = self.core.current_window() {
                        w.unsent += 1;
                    }
                } else {
                    let m = Marker {
                        sender: id as u32,
                        seq: c.next_seq,
                        intended_us: t as u64,
                    };
                    c.next_seq += 1;
                    marker::write_line(&mut c.out, m, self.plan.message_size);
                    built += 1;
                    let owed = self.core.fanout_of.get(id).copied().unwrap_or(0);
                    if let Some(w) = self.core.current_window() {
                        // Our own lateness: how long after its intended
                        // time the message was queued.
                        w.built += 1;
                        w.owed += u64::from(owed);
                        w.send_lag.saturating_record((now_us - t).max(1.0) as u64);
                    }
                }
                t += sched.interval_us;
            }
            c.next_due = t;
            if built > 0 {
                client::flush(c, id, &mut self.core);
            }
            if t < sched.end_us {
                // Rounded up: a due time rounded down could look due again
                // in this very loop without any message being due.
                self.core.heap.push(Reverse((t.ceil() as u64, id as u32)));
            }
        }
    }
    // ANCHOR_END: send_due

    /// Starts a connect for client `id` (a member or a churner slot).
    fn start_connect(&mut self, id: usize) {
        let c = &mut self.clients[id];
        c.reset();
        c.connect_start = Instant::now();
        if c.kind == Kind::Churner {
            c.deadline = Some(c.connect_start + CHURN_STEP_TIMEOUT);
        } else {
            self.core.in_flight += 1;
        }
        // In the handshake from here on, so that a failure below is undone
        // by `fail` like any other.
        c.state = State::Connecting;
        let opened = client::open_socket(&self.core.target, id, c.kind == Kind::Slow).and_then(
            |mut stream| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.poll
                    .registry()
                    .register(&mut stream, Token(id), interest)
                    .map(|()| stream)
            },
        );
        match opened {
            Ok(stream) => c.stream = Some(stream),
            Err(e) => {
                if self.core.n.failed + self.core.n.churn_failed == 0 {
                    self.notes.push(format!("first connect failure: {e}"));
                }
                client::fail(c, id, &mut self.core);
            }
        }
    }

    /// Reconnects churner slots that finished a cycle; times out stuck ones.
    fn restart_churners(&mut self) {
        let now = Instant::now();
        for id in self.core.members..self.clients.len() {
            let c = &mut self.clients[id];
            if c.state != State::Closed
                && c.state != State::Waiting
                && c.deadline.is_some_and(|d| now >= d)
            {
                c.stream = None;
                c.state = State::Closed;
                self.core.n.churn_failed += 1;
                self.core.churn_idle.push_back(id);
            }
        }
        if !self.core.churning {
            return;
        }
        // Only the slots queued so far: a connect that fails at once queues
        // its slot again, and must wait for the next turn.
        for _ in 0..self.core.churn_idle.len() {
            let Some(id) = self.core.churn_idle.pop_front() else {
                break;
            };
            self.core.churn_serial += 1;
            self.start_connect(id);
        }
    }

    /// Once a second: a progress line. Five times a second: a server sample.
    fn tick(&mut self) {
        let now = Instant::now();
        if now >= self.next_sample {
            self.next_sample = now + Duration::from_millis(200);
            self.sample_server();
        }
        if now < self.next_progress {
            return;
        }
        self.next_progress = now + Duration::from_secs(1);
        let now_counts = (self.core.n.arrived, self.core.n.sent);
        let (arrived_per_sec, sent_per_sec) = (
            now_counts.0 - self.last_progress.0,
            now_counts.1 - self.last_progress.1,
        );
        self.last_progress = now_counts;
        if !self.opts.progress {
            return;
        }
        let p99 = self
            .core
            .current
            .map(|w| Latency::of(&self.core.windows[w].hist).p99);
        let phase = if self.core.schedule.is_some() {
            if self.core.current.is_some() {
                "measure"
            } else {
                "warm-up"
            }
        } else if self.core.in_flight > 0 {
            "ramp"
        } else {
            "wait"
        };
        let connected = self.clients.iter().filter(|c| c.stream.is_some()).count();
        eprintln!(
            "[{} {}] {:>6.1}s {:<7} clients {}/{} sent {}/s deliveries {}/s{}",
            self.opts.label,
            self.plan.scenario.name(),
            self.core.epoch.elapsed().as_secs_f64(),
            phase,
            connected,
            self.clients.len(),
            sent_per_sec,
            arrived_per_sec,
            p99.map_or(String::new(), |p| format!(
                " p99 {:.2} ms",
                p as f64 / 1000.0
            )),
        );
    }

    /// Reads the server's `/proc` figures, if its pid is known and it lives.
    fn sample_server(&mut self) -> Option<sys::ProcSample> {
        let s = sys::sample_process(self.opts.server_pid?).ok()?;
        self.server_now = s;
        Some(s)
    }

    /// The server's CPU clocks, if its pid is known and it lives.
    fn cpu_reading(&self) -> Option<sys::CpuReading> {
        sys::cpu_reading(self.opts.server_pid?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Profile;

    fn engine(plan: Plan) -> Engine {
        let addr = "127.0.0.1:9".parse().expect("literal address");
        Engine::new(plan, Target::ours(addr), Options::default()).expect("engine")
    }

    #[test]
    fn slow_clients_are_the_last_of_each_room() {
        let mut plan = Plan::preset(Scenario::Slow, Profile::Quick);
        plan.clients = 20;
        plan.room_size = 10;
        plan.slow_fraction = 0.2;
        let e = engine(plan);
        let slow: Vec<usize> = (0..20)
            .filter(|&i| e.clients[i].kind == Kind::Slow)
            .collect();
        assert_eq!(slow, vec![8, 9, 18, 19]);
    }

    #[test]
    fn a_delivery_counts_in_its_own_windows_only() {
        let mut e = engine(Plan::preset(Scenario::Flood, Profile::Quick));
        for (start, end) in [(0, 100), (200, 300), (400, 500)] {
            e.core.windows.push(Window::new(start, end, 1.0, 1.0, None));
        }
        // Meant in the second window, arrived in the third.
        e.core.on_delivery(250, 450);
        let counts: Vec<(u64, u64)> = e
            .core
            .windows
            .iter()
            .map(|w| (w.hist.len(), w.arrived))
            .collect();
        assert_eq!(counts, vec![(0, 0), (1, 0), (0, 1)]);
    }
}
