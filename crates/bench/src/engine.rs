//! The load generator's event loop: one thread, one `mio::Poll`, every client socket.
//!
//! Why one thread: the generator must load the server from a single core, so
//! that on a two-core machine the server gets the other one. A thread per
//! client would spend that core on context switches; an event loop spends it
//! on reading and parsing, the work that has to be done anyway.
//!
//! The loop is driven by *scripts* (`idle`, `chat`, `flood`, ...): each is a
//! plain sequence of phases (`ramp`, `settle`, `send`, `drain`), and each
//! phase calls `Engine::turn` until its deadline. One turn waits for socket
//! events or for the next scheduled send, whichever comes first, then:
//!
//! - reads every readable socket until `WouldBlock` and accounts each line;
//! - writes every message whose *intended* time has come (several lines per
//!   write when a client is due more than once: open-loop, the schedule never
//!   waits for the server, and lateness is measured as latency);
//! - starts new connects while the ramp has room for them.
//!
//! The timer is `epoll_wait`'s, with millisecond resolution: a send may leave
//! up to about a millisecond after its intended time, and that delay counts as
//! latency. Sub-millisecond latencies are at the generator's noise floor; the
//! comparison between stages is made at the same floor.
//!
//! Run it through the CLI, e.g. `chat-bench run --addr 127.0.0.1:7878 --scenario chat`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::ledger::{Ledger, Receipt};
use crate::marker::{self, Marker};
use crate::result::{self, Latency, RampSample, RunResult};
use crate::scenario::{self, Plan, Scenario, Target};
use crate::sys;

/// A received line longer than this is dropped (our servers never send one;
/// the bound keeps a misbehaving server from growing our buffers forever).
const MAX_LINE: usize = 64 * 1024;
/// Bytes a client may have waiting in its outgoing buffer. Past it, the
/// schedule's messages are counted as `unsent` instead of piling up: the
/// server is not reading.
const OUT_CAP: usize = 256 * 1024;
/// Most messages one client writes at once when it is behind schedule.
const MAX_BATCH: usize = 64;
/// Receive buffer of a slow client. Small, so that the server notices the
/// slow reader after a few hundred KiB instead of after the loopback
/// autotuning limit (32 MiB here).
const SLOW_RCVBUF: usize = 4096;
/// How long a churning client may take for one step (connect, welcome, quit).
const CHURN_STEP_TIMEOUT: Duration = Duration::from_secs(2);

/// What a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A member of a room that reads everything and (in most scenarios) sends.
    Member,
    /// A member that stops reading once it is in its room.
    Slow,
    /// A client that connects, joins, quits and starts over.
    Churner,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected yet.
    Waiting,
    /// Non-blocking connect issued, not completed.
    Connecting,
    /// Connected, waiting for the welcome line.
    AwaitWelcome,
    /// Join sent, waiting for its confirmation.
    AwaitJoin,
    /// In its room.
    Ready,
    /// (Churners) quit sent, waiting for the server to close.
    Quitting,
    /// Closed; see the counters for why.
    Closed,
}

impl State {
    /// Still on the way in.
    fn in_handshake(self) -> bool {
        matches!(
            self,
            State::Connecting | State::AwaitWelcome | State::AwaitJoin
        )
    }
}

/// One simulated chat client.
#[derive(Debug)]
struct Client {
    /// What it is for.
    kind: Kind,
    /// Where it is in its life.
    state: State,
    /// Its socket, while open.
    stream: Option<TcpStream>,
    /// The unfinished line at the end of the last read.
    partial: Vec<u8>,
    /// True while skipping the rest of an overlong line.
    discarding: bool,
    /// Outgoing bytes not yet taken by the kernel start at `out_pos`.
    out: Vec<u8>,
    /// How much of `out` the kernel already took.
    out_pos: usize,
    /// Leading pending bytes that are control lines (hello, join, quit), not
    /// messages: they are not counted as sent messages.
    out_ctrl: usize,
    /// Sequence number of the next message this client builds.
    next_seq: u32,
    /// Intended time of its next message, microseconds since the epoch.
    next_due: f64,
    /// When its current connect started.
    connect_start: Instant,
    /// (Churners) when the current step must be over.
    deadline: Option<Instant>,
}

impl Client {
    fn new(kind: Kind) -> Self {
        Client {
            kind,
            state: State::Waiting,
            stream: None,
            partial: Vec::new(),
            discarding: false,
            out: Vec::new(),
            out_pos: 0,
            out_ctrl: 0,
            next_seq: 0,
            next_due: 0.0,
            connect_start: Instant::now(),
            deadline: None,
        }
    }

    /// Outgoing bytes the kernel has not taken yet.
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// A measured stretch of time: messages *meant* to be sent in it give its
/// latency; deliveries *arriving* in it give its throughput.
#[derive(Debug)]
struct Window {
    /// Start, microseconds since the epoch.
    start_us: u64,
    /// End (exclusive), microseconds since the epoch.
    end_us: u64,
    /// Latency of the first copy of each expected delivery.
    hist: Histogram<u64>,
    /// Deliveries that arrived inside the window.
    arrived: u64,
    /// Messages the schedule could not hand to the kernel.
    unsent: u64,
    /// Per-client rate of the window's schedule.
    rate: f64,
    /// Deliveries per second the schedule offered.
    offered_per_sec: f64,
    /// Server CPU clocks at the start (absent without a pid).
    server_cpu_start: Option<sys::CpuReading>,
    /// Server CPU seconds used in the window, once it is closed.
    server_cpu_s: f64,
    /// Generator thread CPU seconds at start and end.
    own_cpu: (f64, f64),
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        self.start_us <= t && t < self.end_us
    }

    fn seconds(&self) -> f64 {
        (self.end_us.saturating_sub(self.start_us)) as f64 / 1e6
    }
}

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
    /// Members refused with `! server full`.
    rejected_full: u64,
    /// Members not ready when the ramp ended.
    timed_out: u64,
    /// Ready members the server closed.
    disconnected_by_server: u64,
    /// Received lines over `MAX_LINE`, dropped.
    overlong_lines: u64,
    /// `(slow consumer)` notices seen by members.
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
    /// Measured windows, oldest first.
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
    /// Clients named in a `(slow consumer)` notice.
    dropped_slow: HashSet<usize>,
    /// Non-delivery counters.
    n: Counters,
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
    /// Reused list of (client, readable, writable) of this turn.
    ready_list: Vec<(usize, bool, bool)>,
    /// Every client: members first, then churners.
    clients: Vec<Client>,
    /// Reused read buffer.
    scratch: Vec<u8>,
    /// Accounting and counters.
    core: Core,
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
    /// Notes for the result.
    notes: Vec<String>,
}

fn new_histogram() -> Histogram<u64> {
    // One microsecond to ten minutes at three significant digits: a few
    // hundred KiB, and every latency a run can produce fits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid histogram bounds")
}

/// Runs `plan` against `target` and returns the result (conditions not filled).
pub fn run(plan: &Plan, target: &Target, opts: &Options) -> io::Result<RunResult> {
    let mut engine = Engine::new(plan.clone(), target.clone(), opts.clone())?;
    match plan.scenario {
        Scenario::Idle => engine.idle()?,
        Scenario::Chat | Scenario::Slow | Scenario::Starve => engine.chat()?,
        Scenario::Flood => engine.flood()?,
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
        let server_start = opts.server_pid.and_then(|p| sys::sample_process(p).ok());
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
                n: Counters::default(),
            },
            plan,
            opts,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready_list: Vec::with_capacity(1024),
            clients,
            scratch: vec![0; 64 * 1024],
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
            notes: Vec::new(),
        })
    }

    // ----- scripts ---------------------------------------------------------

    // ANCHOR: chat_script
    /// `chat`, `slow` and `starve`: connect, settle, warm up, measure, drain.
    fn chat(&mut self) -> io::Result<()> {
        self.ramp()?;
        self.settle()?;
        let rate = self.plan.rate;
        self.send(rate, self.plan.warmup, false)?;
        self.send(rate, self.plan.duration, true)?;
        self.drain(self.plan.drain)
    }
    // ANCHOR_END: chat_script

    /// `idle`: connect everybody, sit still, read the memory, then one
    /// message per room to show that every client is still served.
    fn idle(&mut self) -> io::Result<()> {
        self.ramp()?;
        self.settle()?;
        self.wait(self.plan.hold)?;
        let sample = self.sample_server();
        let ready = self.core.n.ready.max(1) as f64;
        let kernel_delta = sys::kernel_tcp_kib() - self.kernel_start_kib;
        self.idle = Some(result::Idle {
            rss_per_connection_bytes: match (self.server_start, sample) {
                (Some(start), Some(now)) => {
                    Some((now.rss_kib as f64 - start.rss_kib as f64) * 1024.0 / ready)
                }
                _ => None,
            },
            kernel_per_connection_bytes: kernel_delta as f64 * 1024.0 / ready,
            kernel_tcp_delta_kib: kernel_delta,
        });
        self.ping_every_room()?;
        self.drain(self.plan.drain + self.plan.hold)?;
        self.close_window();
        Ok(())
    }

    /// `flood`: double the rate each step until p99 is no longer bounded.
    fn flood(&mut self) -> io::Result<()> {
        self.ramp()?;
        self.settle()?;
        let mut rate = self.plan.rate;
        let mut passed = 0;
        let mut retried = false;
        while passed < self.plan.steps {
            self.send(rate, self.plan.warmup, false)?;
            let w = self.send(rate, self.plan.duration, true)?;
            // A short drain between steps keeps one step's backlog from
            // being blamed on the next.
            self.drain(self.plan.drain)?;
            if self.bounded(w) {
                passed += 1;
                rate *= 2.0;
                retried = false;
            } else if !retried {
                // One stall caused by something else on the machine must not
                // end the search: a failed step is tried once more.
                retried = true;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// `churn`: steady chat among the members while churners cycle.
    fn churn(&mut self) -> io::Result<()> {
        self.ramp()?;
        self.settle()?;
        self.core.churning = true;
        self.core
            .churn_idle
            .extend(self.core.members..self.clients.len());
        let rate = self.plan.rate;
        self.send(rate, self.plan.warmup, false)?;
        let churn_before = self.core.n.churn_cycles;
        let w = self.send(rate, self.plan.duration, true)?;
        self.core.churning = false;
        let cycles = self.core.n.churn_cycles - churn_before;
        self.churn_measured = (cycles, self.core.windows[w].seconds());
        self.drain(self.plan.drain)
    }

    // ----- phases ----------------------------------------------------------

    // ANCHOR: ramp
    /// Connects every member, at most `connect_concurrency` at a time, and
    /// waits until each is welcomed and in its room, or the ramp times out.
    fn ramp(&mut self) -> io::Result<()> {
        let start = Instant::now();
        let deadline = start + self.plan.ramp_timeout;
        let total = self.core.members;
        let mut next = 0;
        let step = total.div_ceil(10).max(1);
        let mut next_milestone = step.min(total);
        loop {
            while next < total && self.core.in_flight < self.plan.connect_concurrency {
                self.start_connect(next);
                next += 1;
            }
            let done = next == total && self.core.in_flight == 0;
            if done || Instant::now() >= deadline {
                break;
            }
            self.turn(deadline)?;
            // One point each time another tenth of the clients is in.
            let ready = self.core.n.ready as usize;
            if next_milestone > 0 && ready >= next_milestone {
                let rss = self.sample_server().map_or(0, |s| s.rss_kib);
                self.ramp_samples.push(RampSample {
                    clients: ready as u64,
                    elapsed_s: start.elapsed().as_secs_f64(),
                    rss_kib: rss,
                });
                while next_milestone > 0 && ready >= next_milestone {
                    next_milestone = if next_milestone >= total {
                        0
                    } else {
                        (next_milestone + step).min(total)
                    };
                }
            }
        }
        self.ramp_seconds = start.elapsed().as_secs_f64();
        // Whoever is not in by now is given up on, and closed, so that a late
        // welcome cannot put an unaccounted client in a room.
        for id in 0..total {
            let c = &mut self.clients[id];
            if c.state != State::Ready && c.state != State::Closed {
                if c.state.in_handshake() {
                    self.core.in_flight -= 1;
                }
                c.state = State::Closed;
                c.stream = None;
                self.core.n.timed_out += 1;
            }
        }
        // The ledger's members: ready clients that read.
        for id in 0..total {
            let c = &self.clients[id];
            let yes = c.state == State::Ready && c.kind == Kind::Member;
            self.core.ledger.set_accounted(id, yes);
        }
        let n = &self.core.n;
        if n.ready < total as u64 {
            self.notes.push(format!(
                "welcomed {} of {total} ({} ready in their room; {} failed to connect, {} refused as server full, {} not in after {:.1} s)",
                n.welcomed, n.ready, n.failed, n.rejected_full, n.timed_out,
                self.plan.ramp_timeout.as_secs_f64()
            ));
        }
        Ok(())
    }
    // ANCHOR_END: ramp

    /// Lets join notices and other chatter of the ramp arrive before sending.
    fn settle(&mut self) -> io::Result<()> {
        self.wait(Duration::from_millis(300))
    }

    /// Runs the loop for `d` without sending.
    fn wait(&mut self, d: Duration) -> io::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.turn(until)?;
        }
        Ok(())
    }

    // ANCHOR: send_phase
    /// Sends at `rate` messages per second per sending member for `d`.
    /// With `measured`, opens a window and returns its index.
    fn send(&mut self, rate: f64, d: Duration, measured: bool) -> io::Result<usize> {
        let start_us = self.core.now_us();
        let end_us = start_us + d.as_micros() as u64;
        let interval_us = 1e6 / rate.max(1e-3);
        // Every sending member gets the same rate, with start times spread
        // evenly over one interval so the load is smooth, not a thundering herd.
        let senders: Vec<usize> = (0..self.core.members)
            .filter(|&id| self.core.ledger.is_accounted(id) && self.clients[id].stream.is_some())
            .collect();
        self.core.heap.clear();
        for (i, &id) in senders.iter().enumerate() {
            let due = start_us as f64 + interval_us * i as f64 / senders.len() as f64;
            self.clients[id].next_due = due;
            self.core.heap.push(Reverse((due.ceil() as u64, id as u32)));
        }
        self.core.schedule = Some(Schedule {
            interval_us,
            end_us: end_us as f64,
        });
        let mut index = usize::MAX;
        if measured {
            let fanout: usize = senders
                .iter()
                .map(|&s| {
                    let room = self.core.ledger.room_of(s);
                    self.core
                        .ledger
                        .room_members(room)
                        .filter(|&r| r != s && self.core.ledger.is_accounted(r))
                        .count()
                })
                .sum();
            let server_cpu = self.cpu_reading();
            self.core.windows.push(Window {
                start_us,
                end_us,
                hist: new_histogram(),
                arrived: 0,
                unsent: 0,
                rate,
                offered_per_sec: fanout as f64 * rate,
                server_cpu_start: server_cpu,
                server_cpu_s: 0.0,
                own_cpu: (sys::thread_cpu_seconds(), 0.0),
            });
            index = self.core.windows.len() - 1;
            self.core.current = Some(index);
        }
        let until = self.core.epoch + Duration::from_micros(end_us);
        while Instant::now() < until {
            self.turn(until)?;
        }
        self.core.schedule = None;
        self.core.heap.clear();
        if measured {
            self.close_window();
        }
        Ok(index)
    }
    // ANCHOR_END: send_phase

    /// Ends the current window: reads the CPU clocks and the server.
    fn close_window(&mut self) {
        let server_cpu = self.cpu_reading();
        let sample = self.sample_server();
        if let Some(i) = self.core.current.take() {
            let w = &mut self.core.windows[i];
            w.end_us = w.end_us.min(self.core.epoch.elapsed().as_micros() as u64);
            if let (Some(a), Some(b)) = (&w.server_cpu_start, &server_cpu) {
                w.server_cpu_s = sys::cpu_between(a, b);
            }
            w.own_cpu.1 = sys::thread_cpu_seconds();
            self.server_end = sample.or(self.server_end);
            self.kernel_end_kib = sys::kernel_tcp_kib();
        }
    }

    /// `idle`'s proof of life: the first member of every room sends one message.
    fn ping_every_room(&mut self) -> io::Result<()> {
        let server_cpu = self.cpu_reading();
        let start_us = self.core.now_us();
        self.core.windows.push(Window {
            start_us,
            end_us: u64::MAX,
            hist: new_histogram(),
            arrived: 0,
            unsent: 0,
            rate: 0.0,
            offered_per_sec: 0.0,
            server_cpu_start: server_cpu,
            server_cpu_s: 0.0,
            own_cpu: (sys::thread_cpu_seconds(), 0.0),
        });
        self.core.current = Some(self.core.windows.len() - 1);
        for room in 0..self.core.ledger.rooms() {
            let first =
                self.core.ledger.room_members(room).find(|&id| {
                    self.core.ledger.is_accounted(id) && self.clients[id].stream.is_some()
                });
            if let Some(id) = first {
                let now = self.core.now_us();
                let c = &mut self.clients[id];
                let m = Marker {
                    sender: id as u32,
                    seq: c.next_seq,
                    intended_us: now,
                };
                c.next_seq += 1;
                marker::write_line(&mut c.out, m, self.plan.message_size);
                flush(c, id, &mut self.core);
            }
        }
        Ok(())
    }

    /// Waits until every expected delivery arrived, or `max` passed.
    fn drain(&mut self, max: Duration) -> io::Result<()> {
        let until = Instant::now() + max;
        loop {
            // Nothing is missing between members that are still connected,
            // and nothing is still in our own outgoing buffers.
            let t = self.core.ledger.tally();
            let pending = self
                .clients
                .iter()
                .any(|c| c.stream.is_some() && c.pending() > 0);
            if (t.lost == 0 && !pending) || Instant::now() >= until {
                return Ok(());
            }
            let step = (Instant::now() + Duration::from_millis(100)).min(until);
            while Instant::now() < step {
                self.turn(step)?;
            }
        }
    }

    /// Whether a flood window kept p99 under the bound and delivered at least
    /// 90% of what was offered.
    fn bounded(&self, w: usize) -> bool {
        let w = &self.core.windows[w];
        let p99 = Latency::of(&w.hist).p99;
        let rate = w.arrived as f64 / w.seconds().max(1e-9);
        !w.hist.is_empty()
            && p99 <= self.plan.p99_bound.as_micros() as u64
            && rate >= 0.9 * w.offered_per_sec
    }

    // ----- one turn of the loop --------------------------------------------

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
        self.ready_list.clear();
        for ev in self.events.iter() {
            self.ready_list.push((
                ev.token().0,
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable() || ev.is_error(),
            ));
        }
        for i in 0..self.ready_list.len() {
            let (id, readable, writable) = self.ready_list[i];
            self.on_event(id, readable, writable);
        }
        self.send_due();
        self.restart_churners();
        self.tick();
        Ok(())
    }
    // ANCHOR_END: turn

    /// Handles one socket's readiness.
    fn on_event(&mut self, id: usize, readable: bool, writable: bool) {
        let Some(c) = self.clients.get_mut(id) else {
            return;
        };
        if c.state == State::Connecting {
            match connect_result(c) {
                Some(Ok(())) => on_connected(c, id, &mut self.core),
                Some(Err(_)) => {
                    fail(c, id, &mut self.core);
                    return;
                }
                None => return,
            }
        }
        if writable && c.pending() > 0 {
            flush(c, id, &mut self.core);
        }
        if readable {
            read_all(c, id, &mut self.core, &mut self.scratch);
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
                    if let Some(w) = self.core.current {
                        self.core.windows[w].unsent += 1;
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
                }
                t += sched.interval_us;
            }
            c.next_due = t;
            if built > 0 {
                flush(c, id, &mut self.core);
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
        c.partial.clear();
        c.discarding = false;
        c.out.clear();
        c.out_pos = 0;
        c.out_ctrl = 0;
        c.connect_start = Instant::now();
        if c.kind == Kind::Churner {
            c.deadline = Some(c.connect_start + CHURN_STEP_TIMEOUT);
        } else {
            self.core.in_flight += 1;
        }
        // In the handshake from here on, so that a failure below is undone
        // by `fail` like any other.
        c.state = State::Connecting;
        let opened = open_socket(&self.core.target, c.kind == Kind::Slow).and_then(|mut stream| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(&mut stream, Token(id), interest)
                .map(|()| stream)
        });
        match opened {
            Ok(stream) => c.stream = Some(stream),
            Err(e) => {
                if self.core.n.failed + self.core.n.churn_failed == 0 {
                    self.notes.push(format!("first connect failure: {e}"));
                }
                fail(c, id, &mut self.core);
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

    /// For slow clients the server never named: read what is left, to see
    /// whether the server closed them (servers without our notices).
    fn probe_slow_clients(&mut self) {
        for id in 0..self.core.members {
            let c = &mut self.clients[id];
            if c.kind != Kind::Slow || self.core.dropped_slow.contains(&id) {
                continue;
            }
            let Some(stream) = c.stream.as_mut() else {
                continue;
            };
            for _ in 0..64 {
                match stream.read(&mut self.scratch) {
                    Ok(0) => {
                        self.core.dropped_slow.insert(id);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.core.dropped_slow.insert(id);
                        break;
                    }
                }
            }
        }
    }

    // ----- the result ------------------------------------------------------

    /// Assembles the result from the ledger, the windows and the samples.
    pub fn finish(mut self) -> RunResult {
        if self.plan.slow_fraction > 0.0 {
            self.probe_slow_clients();
        }
        let t = self.core.ledger.tally();
        let plan = &self.plan;
        let steps: Vec<result::Step> = if plan.scenario == Scenario::Flood {
            self.core
                .windows
                .iter()
                .enumerate()
                .map(|(i, w)| result::Step {
                    rate: w.rate,
                    offered_per_sec: w.offered_per_sec,
                    deliveries_per_sec: w.arrived as f64 / w.seconds().max(1e-9),
                    latency_us: Latency::of(&w.hist),
                    unsent: w.unsent,
                    bounded: self.bounded(i),
                    generator_busy: (w.own_cpu.1 - w.own_cpu.0) / w.seconds().max(1e-9),
                    cpu_us_per_delivery: (self.opts.server_pid.is_some() && w.arrived > 0)
                        .then(|| w.server_cpu_s * 1e6 / w.arrived as f64),
                })
                .collect()
        } else {
            Vec::new()
        };
        // The window the headline figures come from: the measured phase, or
        // for `flood` the best bounded step (else the first).
        let main = if plan.scenario == Scenario::Flood {
            steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.bounded)
                .max_by(|a, b| a.1.deliveries_per_sec.total_cmp(&b.1.deliveries_per_sec))
                .map(|(i, _)| i)
                .or(if steps.is_empty() { None } else { Some(0) })
        } else {
            self.core.windows.len().checked_sub(1)
        };
        let w = main.map(|i| &self.core.windows[i]);
        let wall = w.map_or(0.0, |w| w.seconds());
        let arrived = w.map_or(0, |w| w.arrived);
        let own_cpu = w.map_or(0.0, |w| w.own_cpu.1 - w.own_cpu.0);
        let busy = if wall > 0.0 { own_cpu / wall } else { 0.0 };
        let server = self.opts.server_pid.map(|pid| {
            let end = self.server_end.unwrap_or(self.server_now);
            let start = self.server_start.unwrap_or_default();
            let cpu_in_window = w.map_or(0.0, |w| w.server_cpu_s);
            result::Server {
                pid,
                rss_kib: end.rss_kib,
                peak_rss_kib: self.server_now.hwm_kib.max(end.hwm_kib),
                start_rss_kib: start.rss_kib,
                threads: end.threads,
                cpu_s: self.server_now.cpu_s - start.cpu_s,
                cpu_us_per_delivery: (arrived > 0).then(|| cpu_in_window * 1e6 / arrived as f64),
                cpu: self.opts.server_cpu,
                exit: None,
            }
        });
        let n = &self.core.n;
        let members = self.core.members as u64;
        let mut notes = std::mem::take(&mut self.notes);
        if busy >= 0.9 {
            notes.push(format!(
                "load-bound: the generator's core was {:.0}% busy; figures may show its limit",
                busy * 100.0
            ));
        }
        if let Some(last) = steps
            .last()
            .filter(|s| !s.bounded && s.generator_busy >= 0.9)
        {
            notes.push(format!(
                "flood stopped at the generator's own limit ({:.0}% busy at {:.0} deliveries/s offered): the server may go faster",
                last.generator_busy * 100.0,
                last.offered_per_sec
            ));
        }
        if n.unsent > 0 {
            notes.push(format!(
                "{} messages not sent: the server stopped reading and our buffers were full",
                n.unsent
            ));
        }
        if t.lost > 0 {
            notes.push(format!(
                "LOST {} of {} expected deliveries",
                t.lost, t.expected
            ));
        }
        if n.overlong_lines > 0 {
            notes.push(format!(
                "{} received lines over {MAX_LINE} bytes dropped",
                n.overlong_lines
            ));
        }
        let slow_clients = self.clients[..self.core.members]
            .iter()
            .filter(|c| c.kind == Kind::Slow)
            .count() as u64;
        let slow = (plan.slow_fraction > 0.0).then(|| {
            let slow_dropped = self
                .core
                .dropped_slow
                .iter()
                .filter(|&&id| self.clients[id].kind == Kind::Slow)
                .count() as u64;
            result::Slow {
                slow_clients,
                slow_dropped,
                readers_dropped: self.core.dropped_slow.len() as u64 - slow_dropped,
                notices: n.slow_notices,
            }
        });
        let churn = (plan.churners > 0).then(|| {
            let (cycles, secs) = self.churn_measured;
            result::Churn {
                churners: plan.churners as u64,
                cycles,
                per_sec: cycles as f64 / secs.max(1e-9),
                failed: n.churn_failed,
                time_to_welcome_us: Latency::of(&self.core.churn_hist),
            }
        });
        RunResult {
            scenario: plan.scenario.name().to_string(),
            stage: None,
            clients: members,
            room_size: self.core.ledger.room_members(0).len() as u64,
            rate: plan.rate,
            message_size: plan.message_size as u64,
            duration_s: wall,
            connect: result::Connect {
                attempted: members,
                connected: n.connected.min(members),
                welcomed: n.welcomed,
                ready: n.ready,
                failed: n.failed,
                rejected_full: n.rejected_full,
                timed_out: n.timed_out,
                duration_s: self.ramp_seconds,
                per_sec: n.ready as f64 / self.ramp_seconds.max(1e-9),
                time_to_welcome_us: Latency::of(&self.core.welcome_hist),
                samples: std::mem::take(&mut self.ramp_samples),
            },
            sent: t.sent,
            expected: t.expected,
            delivered: t.delivered,
            lost: t.lost,
            duplicated: t.duplicated,
            reordered: t.reordered,
            undeliverable: t.undeliverable,
            unexpected: t.unexpected,
            echoed: t.echoed,
            unsent: n.unsent,
            disconnected_by_server: n.disconnected_by_server,
            kernel_tcp_delta_kib: self.kernel_end_kib - self.kernel_start_kib,
            deliveries_per_sec: if wall > 0.0 {
                arrived as f64 / wall
            } else {
                0.0
            },
            latency_us: w.map_or_else(Latency::default, |w| Latency::of(&w.hist)),
            max_bounded_deliveries_per_sec: (plan.scenario == Scenario::Flood).then(|| {
                steps
                    .iter()
                    .filter(|s| s.bounded)
                    .map(|s| s.deliveries_per_sec)
                    .fold(0.0, f64::max)
            }),
            steps,
            idle: self.idle.take(),
            slow,
            churn,
            server,
            generator: result::Generator {
                cpu: self.opts.own_cpu,
                cpu_s: own_cpu,
                busy,
                load_bound: busy >= 0.9,
            },
            notes,
            error: None,
            conditions: result::Conditions::default(),
        }
    }
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
        for w in self.windows.iter_mut() {
            if w.contains(intended_us) {
                w.hist
                    .saturating_record(now_us.saturating_sub(intended_us).max(1));
            }
            if w.contains(now_us) {
                w.arrived += 1;
            }
        }
    }
}

// ----- per-client steps, as free functions over (client, core) -------------

/// Creates a non-blocking socket and starts connecting it.
fn open_socket(target: &Target, slow: bool) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(target.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    // Lines are written whole and often batched; Nagle would only add delay.
    socket.set_nodelay(true)?;
    if slow {
        socket.set_recv_buffer_size(SLOW_RCVBUF)?;
    }
    match socket.connect(&target.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// After a writable (or error) event on a connecting socket: `Some(Ok)` when
/// connected, `Some(Err)` when it failed, `None` when it is still in progress.
fn connect_result(c: &mut Client) -> Option<io::Result<()>> {
    let stream = c.stream.as_mut()?;
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
    }
}

/// The connect failed: count it and close.
fn fail(c: &mut Client, id: usize, core: &mut Core) {
    if c.kind == Kind::Churner {
        core.n.churn_failed += 1;
        core.churn_idle.push_back(id);
    } else {
        core.n.failed += 1;
    }
    close(c, core);
}

/// Closes a client (churner slots are queued for a restart by the caller).
fn close(c: &mut Client, core: &mut Core) {
    if c.kind != Kind::Churner && c.state.in_handshake() {
        core.in_flight -= 1;
    }
    c.stream = None;
    c.state = State::Closed;
}

/// The TCP connection is up: say hello, then wait for the welcome.
fn on_connected(c: &mut Client, id: usize, core: &mut Core) {
    if c.kind != Kind::Churner {
        core.n.connected += 1;
    }
    let hello_id = if c.kind == Kind::Churner {
        core.churn_serial
    } else {
        id
    };
    let room = core.ledger.room_of(id.min(core.members.saturating_sub(1)));
    if !core.target.hello.is_empty() {
        let line = scenario::fill(&core.target.hello, hello_id, room);
        queue_control(c, &line);
        flush(c, id, core);
    }
    c.state = State::AwaitWelcome;
    if core.target.welcome.is_empty() {
        on_welcomed(c, id, core);
    }
}

/// The server welcomed the client: join its room (or be ready).
fn on_welcomed(c: &mut Client, id: usize, core: &mut Core) {
    let waited = c.connect_start.elapsed().as_micros() as u64;
    if c.kind == Kind::Churner {
        core.churn_hist.saturating_record(waited.max(1));
    } else {
        core.n.welcomed += 1;
        core.welcome_hist.saturating_record(waited.max(1));
    }
    if core.target.join.is_empty() {
        on_ready(c, id, core);
        return;
    }
    // Churners join the room of a member, so members see them come and go.
    let room = if c.kind == Kind::Churner {
        (id - core.members) % core.ledger.rooms().max(1)
    } else {
        core.ledger.room_of(id)
    };
    let line = scenario::fill(&core.target.join, id, room);
    queue_control(c, &line);
    c.state = State::AwaitJoin;
    if !flush(c, id, core) {
        return;
    }
    if core.target.join_ack.is_empty() {
        on_ready(c, id, core);
    }
}

/// The client is in its room.
fn on_ready(c: &mut Client, id: usize, core: &mut Core) {
    if c.kind == Kind::Churner {
        // A churner's cycle ends with a quit (the server closes, so the
        // TIME_WAIT lands on the server's side, not on our ephemeral ports).
        if core.target.quit.is_empty() {
            core.n.churn_cycles += 1;
            c.stream = None;
            c.state = State::Closed;
            core.churn_idle.push_back(id);
        } else {
            let quit = core.target.quit.clone();
            queue_control(c, &quit);
            c.state = State::Quitting;
            c.deadline = Some(Instant::now() + CHURN_STEP_TIMEOUT);
            flush(c, id, core);
        }
        return;
    }
    core.in_flight -= 1;
    core.n.ready += 1;
    c.state = State::Ready;
}

/// Appends a control line (hello, join, quit) to the client's output.
fn queue_control(c: &mut Client, line: &str) {
    c.out.extend_from_slice(line.as_bytes());
    c.out.push(b'\n');
    c.out_ctrl += line.len() + 1;
}

// ANCHOR: flush
/// Writes as much pending output as the kernel takes. Counts every complete
/// message line the kernel took as sent. Returns false if the socket died.
fn flush(c: &mut Client, id: usize, core: &mut Core) -> bool {
    let Some(stream) = c.stream.as_mut() else {
        return false;
    };
    while c.out_pos < c.out.len() {
        match stream.write(&c.out[c.out_pos..]) {
            Ok(0) => break,
            Ok(n) => {
                let taken = &c.out[c.out_pos..c.out_pos + n];
                let ctrl = n.min(c.out_ctrl);
                c.out_ctrl -= ctrl;
                let lines = taken[ctrl..].iter().filter(|&&b| b == b'\n').count();
                if lines > 0 && id < core.members {
                    core.ledger.add_sent(id, lines as u32);
                    core.n.sent += lines as u64;
                }
                c.out_pos += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                closed_by_server(c, id, core);
                return false;
            }
        }
    }
    if c.out_pos == c.out.len() {
        c.out.clear();
        c.out_pos = 0;
    } else if c.out_pos > 64 * 1024 {
        // Keep the buffer from creeping: drop what was written.
        c.out.drain(..c.out_pos);
        c.out_pos = 0;
    }
    true
}
// ANCHOR_END: flush

/// The server closed the connection (EOF, reset, broken pipe).
fn closed_by_server(c: &mut Client, id: usize, core: &mut Core) {
    match (c.kind, c.state) {
        (Kind::Churner, State::Quitting) => {
            core.n.churn_cycles += 1;
            core.churn_idle.push_back(id);
        }
        (Kind::Churner, _) => {
            core.n.churn_failed += 1;
            core.churn_idle.push_back(id);
        }
        (_, State::Ready) => {
            core.n.disconnected_by_server += 1;
            core.ledger.set_disconnected(id);
            if c.kind == Kind::Slow {
                core.dropped_slow.insert(id);
            }
        }
        _ => core.n.failed += 1,
    }
    close(c, core);
}

// ANCHOR: read_all
/// Reads until `WouldBlock`, splitting the bytes into lines.
fn read_all(c: &mut Client, id: usize, core: &mut Core, scratch: &mut [u8]) {
    loop {
        // A slow client stops reading once it is in its room: that is the
        // whole point of it.
        if c.kind == Kind::Slow && c.state == State::Ready {
            return;
        }
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let n = match stream.read(scratch) {
            Ok(0) => {
                closed_by_server(c, id, core);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                closed_by_server(c, id, core);
                return;
            }
        };
        // One clock reading per read, not per line: a read's lines arrived together.
        let now_us = core.now_us();
        let mut data = &scratch[..n];
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&data[..pos], &data[pos + 1..]);
            data = rest;
            if c.discarding {
                c.discarding = false;
            } else if c.partial.is_empty() {
                on_line(c, id, core, line, now_us);
            } else {
                let mut whole = std::mem::take(&mut c.partial);
                whole.extend_from_slice(line);
                on_line(c, id, core, &whole, now_us);
                whole.clear();
                c.partial = whole;
            }
            if c.stream.is_none() {
                return;
            }
        }
        if !c.discarding && !data.is_empty() {
            if c.partial.len() + data.len() > MAX_LINE {
                c.partial.clear();
                c.discarding = true;
                core.n.overlong_lines += 1;
            } else {
                c.partial.extend_from_slice(data);
            }
        }
    }
}
// ANCHOR_END: read_all

// ANCHOR: on_line
/// Accounts one received line.
fn on_line(c: &mut Client, id: usize, core: &mut Core, line: &[u8], now_us: u64) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if c.kind == Kind::Churner && (c.state == State::Ready || c.state == State::Quitting) {
        // A churner in its room only waits for the server to close it.
        return;
    }
    if c.state == State::Ready {
        // The hot path: a message from another member.
        if let Some(m) = marker::find(line) {
            if matches!(
                core.ledger.on_marker(id, m),
                Receipt::InOrder | Receipt::Reordered
            ) {
                core.on_delivery(m.intended_us, now_us);
            }
        } else if let Some(rest) = line.strip_prefix(b"* ") {
            if let Some(nick_and_room) = rest.strip_suffix(b" (slow consumer)") {
                on_slow_notice(core, nick_and_room);
            }
        }
        return;
    }
    if line.starts_with(b"! server full") {
        if c.kind == Kind::Churner {
            core.n.churn_failed += 1;
            core.churn_idle.push_back(id);
        } else {
            core.n.rejected_full += 1;
        }
        close(c, core);
        return;
    }
    let welcome = core.target.welcome.as_bytes();
    if c.state == State::AwaitWelcome && !welcome.is_empty() && line.starts_with(welcome) {
        if c.kind != Kind::Churner {
            // `* welcome NICK ...`: remember the nick to recognise notices.
            let nick = line[welcome.len()..]
                .split(|&b| b == b' ')
                .next()
                .unwrap_or(b"");
            if !nick.is_empty() {
                let nick = String::from_utf8_lossy(nick).into();
                core.nicks.insert(nick, id);
            }
        }
        on_welcomed(c, id, core);
        return;
    }
    let ack = core.target.join_ack.as_bytes();
    if c.state == State::AwaitJoin && !ack.is_empty() && line.starts_with(ack) {
        on_ready(c, id, core);
    }
}
// ANCHOR_END: on_line

/// `* NICK left ROOM (slow consumer)`: the server dropped NICK for not reading.
fn on_slow_notice(core: &mut Core, nick_and_room: &[u8]) {
    core.n.slow_notices += 1;
    let nick = nick_and_room.split(|&b| b == b' ').next().unwrap_or(b"");
    let nick = String::from_utf8_lossy(nick);
    if let Some(&client) = core.nicks.get(nick.as_ref()) {
        if core.dropped_slow.insert(client) {
            core.ledger.set_disconnected(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_clients_are_the_last_of_each_room() {
        let mut plan = Plan::preset(Scenario::Slow, crate::scenario::Profile::Quick);
        plan.clients = 20;
        plan.room_size = 10;
        plan.slow_fraction = 0.2;
        let addr = "127.0.0.1:9".parse().expect("literal address");
        let e = Engine::new(plan, Target::ours(addr), Options::default()).expect("engine");
        let slow: Vec<usize> = (0..20)
            .filter(|&i| e.clients[i].kind == Kind::Slow)
            .collect();
        assert_eq!(slow, vec![8, 9, 18, 19]);
    }
}
