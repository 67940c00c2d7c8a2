//! The result of a run, built from the ledger, the measured windows and the
//! `/proc` samples once the script is over.
//!
//! Which window the headline figures (latency, deliveries/s, CPU per
//! delivery) come from: the measured phase, or for a searching scenario the
//! best step that held (else its first step). Every figure that may show the
//! generator's limit rather than the server's says so, in the result's
//! `generator.bound` and in a note.

use std::io::{self, Read};

use super::{Engine, Kind, Window};
use crate::knee::{self, Limit, Verdict};
use crate::result::{self, Latency, RunResult, Step};

impl Engine {
    /// Assembles the result from the ledger, the windows and the samples.
    pub fn finish(mut self) -> RunResult {
        if self.plan.slow_fraction > 0.0 {
            self.probe_slow_clients();
        }
        let mut t = self.core.ledger.tally();
        // A server still delivering when the run ended owes the rest late,
        // not lost: that is reported apart.
        let unfinished = if self.still_delivering {
            std::mem::take(&mut t.lost)
        } else {
            0
        };
        let bounds = self.plan.search.bounds;
        let steps: Vec<Step> = self
            .steps
            .iter()
            .map(|s| self.step_result(s.window, s.load, s.phase, s.verdict))
            .collect();
        let efficiency = self.efficiency.map(|s| {
            let step = self.step_result(s.window, s.load, s.phase, s.verdict);
            result::Efficiency {
                server_cpu_us_per_delivery: step.cpu_us_per_delivery,
                generator_cpu_us_per_delivery: step.generator.cpu_us_per_delivery,
                step,
            }
        });
        let main = self.main_window();
        let w = main.map(|i| &self.core.windows[i]);
        let wall = w.map_or(0.0, Window::seconds);
        let arrived = w.map_or(0, |w| w.arrived);
        let generator = w.map_or_else(result::Generator::default, |w| {
            w.generator(self.opts.own_cpu, &bounds)
        });
        let server = self.opts.server_pid.map(|pid| {
            let end = self.server_end.unwrap_or(self.server_now);
            let start = self.server_start.unwrap_or_default();
            result::Server {
                pid,
                rss_kib: end.rss_kib,
                peak_rss_kib: self.server_now.hwm_kib.max(end.hwm_kib),
                start_rss_kib: start.rss_kib,
                threads: end.threads,
                cpu_s: self.server_now.cpu_s - start.cpu_s,
                cpu_us_per_delivery: w.and_then(|w| w.server_cpu_us_per_delivery(true)),
                cpu: self.opts.server_cpu,
                exit: None,
            }
        });
        let mut notes = std::mem::take(&mut self.notes);
        self.add_notes(&mut notes, &generator, t.lost, t.expected);
        if unfinished > 0 {
            notes.push(format!(
                "{unfinished} deliveries still on their way when the run ended (the server was still working through its backlog): late, not counted as lost"
            ));
        }
        let plan = &self.plan;
        let n = &self.core.n;
        let members = self.core.members as u64;
        let slow = (plan.slow_fraction > 0.0).then(|| {
            let slow_clients = self.clients[..self.core.members]
                .iter()
                .filter(|c| c.kind == Kind::Slow)
                .count() as u64;
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
            unfinished,
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
            steps,
            knee: self.knee,
            efficiency,
            idle: self.idle.take(),
            slow,
            churn,
            server,
            generator,
            notes,
            error: None,
            conditions: result::Conditions::default(),
        }
    }

    /// One step's record in the result.
    fn step_result(&self, window: usize, load: f64, phase: knee::Phase, verdict: Verdict) -> Step {
        let w = &self.core.windows[window];
        let bounds = &self.plan.search.bounds;
        Step {
            load,
            phase,
            rate: w.rate,
            offered_per_sec: w.offered_per_sec,
            deliveries_per_sec: w.delivered_per_sec(),
            latency_us: Latency::of(&w.hist),
            unsent: w.unsent,
            bounded: knee::server_held(&w.outcome(), bounds),
            missing: w.missing(),
            verdict,
            generator: w.generator(self.opts.own_cpu, bounds),
            cpu_us_per_delivery: w.server_cpu_us_per_delivery(self.opts.server_pid.is_some()),
        }
    }

    /// The window the headline figures come from.
    fn main_window(&self) -> Option<usize> {
        if !self.plan.scenario.searches() {
            return self.core.windows.len().checked_sub(1);
        }
        let best = self
            .steps
            .iter()
            .filter(|s| s.verdict == Verdict::Held)
            .max_by(|a, b| {
                let rate = |s: &&super::script::StepRecord| {
                    self.core.windows[s.window].delivered_per_sec()
                };
                rate(a).total_cmp(&rate(b))
            });
        best.or(self.steps.first()).map(|s| s.window)
    }

    /// The notes every reader of the result must see.
    fn add_notes(
        &self,
        notes: &mut Vec<String>,
        generator: &result::Generator,
        lost: u64,
        expected: u64,
    ) {
        if generator.bound {
            notes.push(format!(
                "generator-bound: it fell behind ({} of {} messages not queued in time, its own lag p99 {:.1} ms); the figures show its limit, not the server's",
                generator.late,
                generator.scheduled,
                generator.send_lag_us.p99.max(generator.read_lag_us.p99) as f64 / 1e3
            ));
        }
        if let Some(k) = &self.knee {
            if k.limit == Limit::Generator {
                notes.push(format!(
                    "the generator gave out before the server (at {:.0} deliveries/s offered): the knee is a lower bound",
                    k.failed_load.unwrap_or(0.0)
                ));
            }
        }
        let n = &self.core.n;
        if n.unsent > 0 {
            notes.push(format!(
                "{} messages not sent: the server stopped reading and our buffers were full",
                n.unsent
            ));
        }
        if lost > 0 {
            notes.push(format!("LOST {lost} of {expected} expected deliveries"));
        }
        if n.overlong_lines > 0 {
            notes.push(format!(
                "{} received lines over {} bytes dropped",
                n.overlong_lines,
                super::client::MAX_LINE
            ));
        }
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
}
