//! A measured window: the stretch of time one figure of a result comes from.
//!
//! Messages *meant* to be sent in a window give its latency; deliveries
//! *arriving* in it give its throughput. Besides, a window keeps what the
//! generator itself did in it (what its schedule asked for, what it queued
//! and how late, how long lines waited for its loop, its CPU), so that every
//! figure can say whether it measured the server or the generator.

use hdrhistogram::Histogram;

use crate::knee;
use crate::result::{Generator, Latency};
use crate::sys;

/// One measured stretch of time.
#[derive(Debug)]
pub(super) struct Window {
    /// Start, microseconds since the epoch.
    pub start_us: u64,
    /// End (exclusive), microseconds since the epoch.
    pub end_us: u64,
    /// Latency of the first copy of each expected delivery.
    pub hist: Histogram<u64>,
    /// Deliveries that arrived inside the window.
    pub arrived: u64,
    /// Messages the schedule could not hand to the kernel (our buffer for a
    /// server that stopped reading was full).
    pub unsent: u64,
    /// Messages the schedule meant for the window.
    pub scheduled: u64,
    /// Messages the generator queued on the window's schedule.
    pub built: u64,
    /// Deliveries those messages owe: each one times its sender's fan-out.
    pub owed: u64,
    /// How late each message was queued after its intended time, µs.
    pub send_lag: Histogram<u64>,
    /// How long each received line could have waited for our loop, µs.
    pub read_lag: Histogram<u64>,
    /// Per-client rate of the window's schedule.
    pub rate: f64,
    /// Deliveries per second the schedule offered.
    pub offered_per_sec: f64,
    /// Server CPU clocks at the start (absent without a pid).
    pub server_cpu_start: Option<sys::CpuReading>,
    /// Server CPU seconds used in the window, once it is closed.
    pub server_cpu_s: f64,
    /// Generator thread CPU seconds at start and end.
    pub own_cpu: (f64, f64),
}

/// A histogram for the generator's own lag: 1 µs to 10 minutes at two
/// significant digits (it only has to tell 1 ms from 10 ms).
fn lag_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("constant, valid histogram bounds")
}

impl Window {
    /// A window from `start_us` to `end_us`, its schedule offering
    /// `offered_per_sec` deliveries at `rate` messages per second per client.
    pub fn new(
        start_us: u64,
        end_us: u64,
        rate: f64,
        offered_per_sec: f64,
        server_cpu_start: Option<sys::CpuReading>,
    ) -> Window {
        Window {
            start_us,
            end_us,
            hist: super::new_histogram(),
            arrived: 0,
            unsent: 0,
            scheduled: 0,
            built: 0,
            owed: 0,
            send_lag: lag_histogram(),
            read_lag: lag_histogram(),
            rate,
            offered_per_sec,
            server_cpu_start,
            server_cpu_s: 0.0,
            own_cpu: (sys::thread_cpu_seconds(), 0.0),
        }
    }

    /// Whether `t` (µs since the epoch) falls in the window.
    pub fn contains(&self, t: u64) -> bool {
        self.start_us <= t && t < self.end_us
    }

    /// The window's length, seconds.
    pub fn seconds(&self) -> f64 {
        (self.end_us.saturating_sub(self.start_us)) as f64 / 1e6
    }

    /// Deliveries per second that arrived in the window.
    pub fn delivered_per_sec(&self) -> f64 {
        self.arrived as f64 / self.seconds().max(1e-9)
    }

    /// Scheduled messages the generator had not even queued by the end (the
    /// ones refused because the server did not read are not its fault).
    pub fn late(&self) -> u64 {
        self.scheduled.saturating_sub(self.built + self.unsent)
    }

    /// The generator's own lag, µs: the larger p99 of send and read lag.
    pub fn generator_lag_us(&self) -> u64 {
        Latency::of(&self.send_lag)
            .p99
            .max(Latency::of(&self.read_lag).p99)
    }

    /// Everything the knee search needs about the window.
    pub fn outcome(&self) -> knee::Outcome {
        knee::Outcome {
            offered_per_sec: self.offered_per_sec,
            delivered_per_sec: self.delivered_per_sec(),
            p99_us: (!self.hist.is_empty()).then(|| Latency::of(&self.hist).p99),
            scheduled: self.scheduled,
            late: self.late(),
            generator_lag_us: self.generator_lag_us(),
            missing: self.missing(),
        }
    }

    /// Fraction of the deliveries the window's messages owe that have not
    /// arrived (yet).
    pub fn missing(&self) -> f64 {
        if self.owed == 0 {
            return 0.0;
        }
        (1.0 - self.hist.len() as f64 / self.owed as f64).max(0.0)
    }

    /// What the generator did and cost in the window; `bound` per `bounds`.
    pub fn generator(&self, cpu: Option<usize>, bounds: &knee::Bounds) -> Generator {
        let cpu_s = (self.own_cpu.1 - self.own_cpu.0).max(0.0);
        let wall = self.seconds();
        Generator {
            cpu,
            cpu_s,
            busy: if wall > 0.0 { cpu_s / wall } else { 0.0 },
            cpu_us_per_delivery: (self.arrived > 0).then(|| cpu_s * 1e6 / self.arrived as f64),
            scheduled: self.scheduled,
            late: self.late(),
            send_lag_us: Latency::of(&self.send_lag),
            read_lag_us: Latency::of(&self.read_lag),
            bound: knee::judge(&self.outcome(), bounds) == knee::Verdict::Generator,
        }
    }

    /// Server CPU per delivery in the window, µs, when the server is known.
    pub fn server_cpu_us_per_delivery(&self, known: bool) -> Option<f64> {
        (known && self.arrived > 0).then(|| self.server_cpu_s * 1e6 / self.arrived as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_generators_own_shortfall_is_late() {
        let mut w = Window::new(0, 1_000_000, 10.0, 90.0, None);
        w.scheduled = 100;
        w.built = 80;
        w.unsent = 15;
        assert_eq!(w.late(), 5, "refused by a full buffer is the server's");
        w.send_lag.saturating_record(20_000);
        assert_eq!(w.outcome().late, 5);
        assert!(w.generator_lag_us() >= 19_000);
        assert_eq!(w.outcome().p99_us, None, "nothing arrived");
    }
}
