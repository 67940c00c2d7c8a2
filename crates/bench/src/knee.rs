//! The knee search of `flood` and `one-room`: the highest load a server
//! carries with bounded latency, or an honest lower bound when the generator
//! gives out first.
//!
//! Sans-IO, like the ledger: the event loop runs a step at the load
//! [`Search::next_load`] asks for, summarises it as an [`Outcome`], and
//! [`Search::record`]s it. The search never sees a socket, so its tests feed
//! it made-up steps.
//!
//! ## Who failed: the server or the generator?
//!
//! Every step gets a [`Verdict`], checked in this order:
//!
//! 1. **Generator-bound** when the generator itself fell behind, so the step
//!    measured it and not the server: it had not even queued 5% or more of
//!    the messages its schedule meant for the step by the step's end, or its
//!    own lag (how late it queued a message after the message's intended
//!    time, or how long a line could wait in the kernel for the generator's
//!    loop to come round to it) had a p99 over a tenth of the p99 bound.
//!    Under that lag, a p99 over the bound is the server's for at least nine
//!    tenths.
//! 2. **Server** when the step's p99 was over the bound (100 ms), nothing
//!    arrived, or less than 90% of the offered deliveries arrived in the step.
//! 3. **Held** otherwise.
//!
//! The generator's CPU (busy 90% of its core, say) is recorded but is *not*
//! a verdict: an event loop that is busy finds more lines waiting per `read`,
//! so it gets cheaper per line and keeps up. In the committed run of
//! 2026-11-23 it was 93% busy at 144,000 deliveries/s against `chat-futures`
//! while that step's p99, which includes the generator's own lag, was 1.3 ms;
//! a busy-CPU rule would have ended every search there. Falling behind is
//! what makes a step the generator's.
//!
//! ## The search
//!
//! Double the load from `start_load` while steps hold. The first step that
//! fails, whoever failed, is tried once more: a stall caused by something
//! else on a shared machine (of the server's core or of the generator's)
//! must not end the search. Then bisect (geometric means) between the
//! highest step that held and the lowest that did not, `bisections` times.
//! The knee is the delivery rate of the best step that held, and the
//! [`Limit`] says what the lowest failing step failed on:
//!
//! - [`Limit::Server`]: the knee, a number.
//! - [`Limit::Generator`]: only "at least": `≥ X (generator-bound)`.
//! - [`Limit::Steps`]: every step held up to the last doubling: `≥ X (step limit)`.
//! - [`Limit::FirstStep`]: not even the first step held.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The bounds a step is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// A step holds while its p99 latency stays at or under this, µs.
    pub p99_us: u64,
    /// ... and at least this fraction of the offered deliveries arrives in it.
    pub min_delivered: f64,
    /// The generator is behind when it had not queued this fraction of the
    /// step's scheduled messages by the step's end...
    pub max_late: f64,
    /// ... or when its own lag had a p99 over this, µs.
    pub max_lag_us: u64,
    /// A step fails when more than this fraction of its deliveries was
    /// still missing after the drain.
    pub max_missing: f64,
}

impl Bounds {
    /// The book's bounds for a p99 bound of `p99`: 90% delivered, 5% late at
    /// most, and a generator lag of at most a tenth of `p99`.
    pub fn for_p99(p99: Duration) -> Bounds {
        let p99_us = p99.as_micros() as u64;
        Bounds {
            p99_us,
            min_delivered: 0.9,
            max_late: 0.05,
            max_lag_us: p99_us / 10,
            max_missing: 0.01,
        }
    }
}

/// How a searching scenario searches, and its fixed-load step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Offered deliveries per second of the first step.
    pub start_load: f64,
    /// Most doublings after the first step.
    pub doublings: usize,
    /// Bisection steps once the knee is bracketed.
    pub bisections: usize,
    /// What a step must keep to hold.
    pub bounds: Bounds,
    /// Offered deliveries per second of the fixed-load efficiency step.
    pub efficiency_load: f64,
    /// Longest wait, after the last step, for an overloaded server to
    /// deliver its backlog before the run's accounting is closed.
    pub final_drain: Duration,
}

/// What one step measured: all the search needs to know about it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// Deliveries per second the schedule offered.
    pub offered_per_sec: f64,
    /// Deliveries per second that arrived during the step.
    pub delivered_per_sec: f64,
    /// p99 latency, µs; `None` when nothing arrived.
    pub p99_us: Option<u64>,
    /// Messages the schedule meant for the step.
    pub scheduled: u64,
    /// Of those, how many the generator had not queued by the step's end.
    pub late: u64,
    /// p99 of the generator's own lag, µs (the larger of send and read lag).
    pub generator_lag_us: u64,
    /// Fraction of the deliveries of the step's messages that had not
    /// arrived when it was judged (after its drain).
    pub missing: f64,
}

/// Why a step did not hold, or that it did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Both bounds kept, the generator on time.
    Held,
    /// The server missed a bound. (The default, for records that predate
    /// verdicts: a step not known to have held.)
    #[default]
    Server,
    /// The generator fell behind: the step measured the generator.
    Generator,
}

/// Judges one step (see the module documentation for the order).
pub fn judge(o: &Outcome, b: &Bounds) -> Verdict {
    let late = o.scheduled > 0 && o.late as f64 > b.max_late * o.scheduled as f64;
    if late || o.generator_lag_us > b.max_lag_us {
        return Verdict::Generator;
    }
    if server_held(o, b) {
        Verdict::Held
    } else {
        Verdict::Server
    }
}

/// Whether the server kept both of its bounds in the step (p99 and
/// delivered fraction), whatever the generator did.
pub fn server_held(o: &Outcome, b: &Bounds) -> bool {
    let delivered = o.delivered_per_sec >= b.min_delivered * o.offered_per_sec;
    let arrived = o.missing <= b.max_missing;
    matches!(o.p99_us, Some(p99) if p99 <= b.p99_us && delivered && arrived)
}

/// What ended the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Limit {
    /// The server missed a bound: the knee is a measurement.
    Server,
    /// The generator fell behind first: the knee is a lower bound.
    Generator,
    /// Every doubling held: the knee is a lower bound.
    Steps,
    /// Not even the first step held.
    FirstStep,
}

/// Which part of the search a step belonged to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Doubling the load.
    #[default]
    Double,
    /// The one repeat of the first failed doubling.
    Retry,
    /// Halving the bracket around the knee.
    Bisect,
}

/// The search's answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// Delivery rate of the best step that held (0 when none did), per second.
    pub deliveries_per_sec: f64,
    /// Offered load of the highest step that held, per second.
    pub held_load: Option<f64>,
    /// Offered load of the lowest step that did not, per second.
    pub failed_load: Option<f64>,
    /// What the lowest failing step failed on.
    pub limit: Limit,
}

impl Knee {
    /// Whether the figure is only a lower bound.
    pub fn is_lower_bound(&self) -> bool {
        matches!(self.limit, Limit::Generator | Limit::Steps)
    }
}

/// The state of one search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Doublings still allowed.
    doublings_left: usize,
    /// Bisections still allowed.
    bisections_left: usize,
    /// Whether the first failed doubling was already retried.
    retried: bool,
    /// The next step's load and phase; `None` once the search is over.
    next: Option<(f64, Phase)>,
    /// Highest load that held.
    lo: Option<f64>,
    /// Lowest load that did not hold, and what it failed on.
    hi: Option<(f64, Verdict)>,
    /// Best delivery rate of a step that held.
    best: f64,
    /// Set when the search ends before the bracket (steps, first step).
    ended: Option<Limit>,
}

impl Search {
    /// A search starting at `settings.start_load`.
    pub fn new(settings: &Settings) -> Search {
        Search {
            doublings_left: settings.doublings,
            bisections_left: settings.bisections,
            retried: false,
            next: Some((settings.start_load, Phase::Double)),
            lo: None,
            hi: None,
            best: 0.0,
            ended: None,
        }
    }

    /// The load and phase of the next step, or `None` when the search is over.
    pub fn next_step(&self) -> Option<(f64, Phase)> {
        self.next
    }

    /// The load of the next step, or `None` when the search is over.
    pub fn next_load(&self) -> Option<f64> {
        self.next.map(|(load, _)| load)
    }

    /// Records the outcome of the step run at [`Search::next_load`].
    pub fn record(&mut self, outcome: &Outcome, verdict: Verdict) {
        let Some((load, phase)) = self.next else {
            return;
        };
        if verdict == Verdict::Held {
            self.best = self.best.max(outcome.delivered_per_sec);
            self.lo = Some(self.lo.map_or(load, |lo| lo.max(load)));
        } else if phase == Phase::Double && !self.retried {
            self.retried = true;
            self.next = Some((load, Phase::Retry));
            return;
        } else if self.hi.is_none_or(|(hi, _)| load <= hi) {
            self.hi = Some((load, verdict));
        }
        self.next = match (phase, self.hi, self.lo) {
            // Still doubling: on while steps hold and doublings are left.
            (Phase::Double | Phase::Retry, None, _) if self.doublings_left > 0 => {
                self.doublings_left -= 1;
                Some((load * 2.0, Phase::Double))
            }
            (Phase::Double | Phase::Retry, None, _) => {
                self.ended = Some(Limit::Steps);
                None
            }
            // Nothing held: the server's failure says "below the first
            // step"; the generator's says nothing about the server at all
            // (`knee()` then reports the generator).
            (_, Some((_, v)), None) => {
                if v != Verdict::Generator {
                    self.ended = Some(Limit::FirstStep);
                }
                None
            }
            (_, Some((hi, _)), Some(lo)) if self.bisections_left > 0 => {
                self.bisections_left -= 1;
                Some(((lo * hi).sqrt(), Phase::Bisect))
            }
            _ => None,
        };
    }

    /// The answer so far (final once [`Search::next_load`] is `None`).
    pub fn knee(&self) -> Knee {
        let limit = match (self.ended, self.hi) {
            (Some(limit), _) => limit,
            (None, Some((_, Verdict::Generator))) => Limit::Generator,
            (None, Some(_)) => Limit::Server,
            // Not over yet: what is known is a lower bound.
            (None, None) => Limit::Steps,
        };
        Knee {
            deliveries_per_sec: self.best,
            held_load: self.lo,
            failed_load: self.hi.map(|(hi, _)| hi),
            limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            start_load: 1000.0,
            doublings: 9,
            bisections: 3,
            bounds: Bounds::for_p99(Duration::from_millis(100)),
            efficiency_load: 500_000.0,
            final_drain: Duration::from_secs(5),
        }
    }

    /// A synthetic server: holds up to `knee` offered deliveries/s, with a
    /// generator that falls behind above `generator_limit`.
    fn step(load: f64, knee: f64, generator_limit: f64) -> Outcome {
        let delivered = load.min(knee * 1.02);
        Outcome {
            offered_per_sec: load,
            delivered_per_sec: delivered,
            p99_us: Some(if load <= knee { 2_000 } else { 400_000 }),
            scheduled: 1000,
            late: if load > generator_limit { 200 } else { 0 },
            generator_lag_us: if load > generator_limit { 50_000 } else { 800 },
            missing: 0.0,
        }
    }

    /// Runs a whole search against the synthetic server; returns the knee
    /// and the loads tried, in order.
    fn search(knee: f64, generator_limit: f64) -> (Knee, Vec<(f64, Phase)>) {
        let s = settings();
        let mut search = Search::new(&s);
        let mut tried = Vec::new();
        while let Some((load, phase)) = search.next_step() {
            tried.push((load, phase));
            let o = step(load, knee, generator_limit);
            search.record(&o, judge(&o, &s.bounds));
            assert!(tried.len() < 50, "the search must end");
        }
        (search.knee(), tried)
    }

    #[test]
    fn judging_puts_the_generator_first() {
        let b = settings().bounds;
        let good = step(1000.0, 5000.0, 1e9);
        assert_eq!(judge(&good, &b), Verdict::Held);
        let slow_server = Outcome {
            p99_us: Some(150_000),
            ..good
        };
        assert_eq!(judge(&slow_server, &b), Verdict::Server);
        let short = Outcome {
            delivered_per_sec: 850.0,
            ..good
        };
        assert_eq!(judge(&short, &b), Verdict::Server, "under 90% delivered");
        let nothing = Outcome {
            p99_us: None,
            ..good
        };
        assert_eq!(judge(&nothing, &b), Verdict::Server);
        let behind = Outcome {
            late: 60,
            ..slow_server
        };
        assert_eq!(judge(&behind, &b), Verdict::Generator, "6% not queued");
        let laggy = Outcome {
            generator_lag_us: 10_001,
            ..good
        };
        assert_eq!(judge(&laggy, &b), Verdict::Generator, "lag over 10 ms");
        let on_time = Outcome { late: 50, ..good };
        assert_eq!(judge(&on_time, &b), Verdict::Held, "5% late is allowed");
        let stragglers = Outcome {
            missing: 0.02,
            ..good
        };
        assert_eq!(judge(&stragglers, &b), Verdict::Server, "2% still missing");
    }

    #[test]
    fn a_server_knee_is_bracketed_and_bisected() {
        let (knee, tried) = search(10_000.0, 1e12);
        assert_eq!(knee.limit, Limit::Server);
        assert!(!knee.is_lower_bound());
        // 1000 .. 8000 held, 16000 failed twice (retry), then 3 bisections.
        let doubled: Vec<f64> = tried.iter().take(6).map(|t| t.0).collect();
        assert_eq!(
            doubled,
            vec![1000.0, 2000.0, 4000.0, 8000.0, 16000.0, 16000.0]
        );
        assert_eq!(tried[5].1, Phase::Retry);
        assert_eq!(tried.len(), 9);
        assert!(tried[6..].iter().all(|t| t.1 == Phase::Bisect));
        // The bracket shrank to a factor of 2^(1/8) around the true knee.
        let (lo, hi) = (
            knee.held_load.expect("held"),
            knee.failed_load.expect("failed"),
        );
        assert!(lo <= 10_000.0 && 10_000.0 < hi, "{lo} {hi}");
        assert!(hi / lo < 1.1, "{lo} {hi}");
        assert_eq!(knee.deliveries_per_sec, lo);
    }

    #[test]
    fn a_generator_limit_gives_a_lower_bound() {
        let (knee, tried) = search(1e12, 20_000.0);
        assert_eq!(knee.limit, Limit::Generator);
        assert!(knee.is_lower_bound());
        assert_eq!(tried.iter().filter(|t| t.1 == Phase::Retry).count(), 1);
        // Bisected between 16000 (held) and 32000 (generator-bound).
        let lo = knee.held_load.expect("held");
        assert!(lo > 16_000.0 && lo <= 20_000.0, "{lo}");
    }

    #[test]
    fn a_server_failure_inside_a_generator_bracket_is_the_server_knee() {
        // The generator gives out above 30000, the server above 20000: the
        // doubling meets the generator (32000), the bisection the server.
        let (knee, _) = search(20_000.0, 30_000.0);
        assert_eq!(knee.limit, Limit::Server);
        let lo = knee.held_load.expect("held");
        assert!(lo > 16_000.0 && lo <= 20_000.0, "{lo}");
    }

    #[test]
    fn a_retry_that_holds_continues_the_doubling() {
        let s = settings();
        let mut search = Search::new(&s);
        let held = step(1000.0, 1e9, 1e12);
        search.record(&held, Verdict::Held);
        assert_eq!(search.next_step(), Some((2000.0, Phase::Double)));
        search.record(&held, Verdict::Server);
        assert_eq!(search.next_step(), Some((2000.0, Phase::Retry)));
        search.record(&held, Verdict::Held);
        assert_eq!(search.next_step(), Some((4000.0, Phase::Double)));
        // Only one retry per search: the next failure brackets the knee.
        search.record(&held, Verdict::Server);
        assert_eq!(search.next_step().map(|s| s.1), Some(Phase::Bisect));
    }

    #[test]
    fn the_step_limit_and_the_first_step_are_their_own_limits() {
        let (knee, tried) = search(1e15, 1e15);
        assert_eq!(knee.limit, Limit::Steps);
        assert!(knee.is_lower_bound());
        assert_eq!(tried.len(), 10, "the first step and nine doublings");
        let (knee, tried) = search(10.0, 1e15);
        assert_eq!(knee.limit, Limit::FirstStep);
        assert_eq!(knee.deliveries_per_sec, 0.0);
        assert_eq!(tried.len(), 2, "the first step and its retry");
        // A generator that cannot even carry the first step says nothing
        // about the server: that is the generator's limit, not "below".
        let (knee, tried) = search(1e15, 10.0);
        assert_eq!(knee.limit, Limit::Generator);
        assert_eq!(knee.deliveries_per_sec, 0.0);
        assert_eq!(tried.len(), 2);
    }
}
