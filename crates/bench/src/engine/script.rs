//! The scenarios as scripts: plain sequences of phases over the event loop.
//!
//! A phase (`ramp`, `settle`, `send`, `drain`) calls [`Engine::turn`] until
//! its deadline; a script (`idle`, `chat`, `search`, `churn`) is a few phases
//! in a row. The searching scenarios hand their steps to [`knee::Search`],
//! which decides the next load, and end with the fixed-load step.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::{Engine, Kind, Schedule, State, Window};
use crate::knee::{self, Phase, Verdict};
use crate::marker::{self, Marker};
use crate::result::{self, RampSample};
use crate::sys;

/// One measured step of a searching scenario.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepRecord {
    /// Index of its window.
    pub window: usize,
    /// The offered load asked for, deliveries per second.
    pub load: f64,
    /// Which part of the search it was.
    pub phase: Phase,
    /// How it was judged.
    pub verdict: Verdict,
}

impl Engine {
    // ANCHOR: chat_script
    /// `chat`, `slow` and `starve`: connect, settle, warm up, measure, drain.
    pub(super) fn chat(&mut self) -> io::Result<()> {
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
    pub(super) fn idle(&mut self) -> io::Result<()> {
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

    // ANCHOR: search_script
    /// `flood` and `one-room`: the knee search (see `knee.rs`), then one
    /// step at the fixed efficiency load.
    pub(super) fn search(&mut self) -> io::Result<()> {
        self.ramp()?;
        self.settle()?;
        let settings = self.plan.search;
        if self.fanout() == 0 {
            self.notes.push(format!(
                "no search: {} clients got in, so no message has anybody to reach",
                self.core.n.ready
            ));
            return Ok(());
        }
        let mut search = knee::Search::new(&settings);
        while let Some((load, phase)) = search.next_step() {
            let step = self.step(load, phase)?;
            search.record(&self.core.windows[step.window].outcome(), step.verdict);
            self.steps.push(step);
        }
        self.knee = Some(search.knee());
        self.efficiency = Some(self.step(settings.efficiency_load, Phase::Double)?);
        // The last steps may have overloaded the server: give it time to
        // deliver its backlog before the accounting is closed.
        self.drain(settings.final_drain)
    }
    // ANCHOR_END: search_script

    /// One step at `load` offered deliveries per second: warm up, measure,
    /// and a short drain, so that one step's backlog is not blamed on the next.
    fn step(&mut self, load: f64, phase: Phase) -> io::Result<StepRecord> {
        let rate = load / self.fanout().max(1) as f64;
        self.send(rate, self.plan.warmup, false)?;
        let window = self.send(rate, self.plan.duration, true)?;
        self.drain(self.plan.drain)?;
        let verdict = knee::judge(
            &self.core.windows[window].outcome(),
            &self.plan.search.bounds,
        );
        Ok(StepRecord {
            window,
            load,
            phase,
            verdict,
        })
    }

    /// `churn`: steady chat among the members while churners cycle.
    pub(super) fn churn(&mut self) -> io::Result<()> {
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

    /// The senders of the current phase: accounted members still connected.
    fn senders(&self) -> Vec<usize> {
        (0..self.core.members)
            .filter(|&id| self.core.ledger.is_accounted(id) && self.clients[id].stream.is_some())
            .collect()
    }

    /// The deliveries one message of `sender` owes: the other accounted
    /// members of its room.
    fn fanout_of(&self, sender: usize) -> usize {
        let room = self.core.ledger.room_of(sender);
        self.core
            .ledger
            .room_members(room)
            .filter(|&r| r != sender && self.core.ledger.is_accounted(r))
            .count()
    }

    /// Deliveries one message from every sender makes. Offered deliveries
    /// per second are this times the per-client rate.
    fn fanout(&self) -> usize {
        self.senders().iter().map(|&s| self.fanout_of(s)).sum()
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
        let senders = self.senders();
        self.core.heap.clear();
        let mut scheduled = 0u64;
        for &id in &senders {
            self.core.fanout_of[id] = self.fanout_of(id) as u32;
        }
        for (i, &id) in senders.iter().enumerate() {
            let due = start_us as f64 + interval_us * i as f64 / senders.len() as f64;
            self.clients[id].next_due = due;
            self.core.heap.push(Reverse((due.ceil() as u64, id as u32)));
            // The schedule's messages of this sender: due, due + interval, ...
            // up to (not including) the end.
            scheduled += ((end_us as f64 - due) / interval_us).ceil().max(0.0) as u64;
        }
        self.core.schedule = Some(Schedule {
            interval_us,
            end_us: end_us as f64,
        });
        let mut index = usize::MAX;
        if measured {
            let offered = self.fanout() as f64 * rate;
            let mut w = Window::new(start_us, end_us, rate, offered, self.cpu_reading());
            w.scheduled = scheduled;
            self.core.windows.push(w);
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
    pub(super) fn close_window(&mut self) {
        let server_cpu = self.cpu_reading();
        let sample = self.sample_server();
        let now_us = self.core.now_us();
        if let Some(i) = self.core.current.take() {
            let w = &mut self.core.windows[i];
            w.end_us = w.end_us.min(now_us);
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
        let start_us = self.core.now_us();
        let w = Window::new(start_us, u64::MAX, 0.0, 0.0, self.cpu_reading());
        self.core.windows.push(w);
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
                super::client::flush(c, id, &mut self.core);
            }
        }
        Ok(())
    }

    /// Waits until every expected delivery arrived, or `max` passed.
    /// Remembers whether the server was still delivering when time ran out.
    fn drain(&mut self, max: Duration) -> io::Result<()> {
        let until = Instant::now() + max;
        // Deliveries counted at each tenth of a second, the last five kept.
        let mut recent = VecDeque::from([self.core.n.arrived]);
        loop {
            // Nothing is missing between members that are still connected,
            // and nothing is still in our own outgoing buffers.
            let t = self.core.ledger.tally();
            let pending = self
                .clients
                .iter()
                .any(|c| c.stream.is_some() && c.pending() > 0);
            let done = t.lost == 0 && !pending;
            if done || Instant::now() >= until {
                // Still delivering: something arrived in the last half second.
                let oldest = recent.front().copied().unwrap_or(self.core.n.arrived);
                self.still_delivering = !done && self.core.n.arrived > oldest;
                return Ok(());
            }
            let step = (Instant::now() + Duration::from_millis(100)).min(until);
            while Instant::now() < step {
                self.turn(step)?;
            }
            recent.push_back(self.core.n.arrived);
            if recent.len() > 5 {
                recent.pop_front();
            }
        }
    }
}
