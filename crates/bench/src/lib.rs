//! `chat-bench`: a load generator that compares concurrency models under one
//! load test.
//!
//! Tools like `wrk2` and `tcpkali` know nothing of chat rooms: they cannot tell
//! a lost or reordered delivery from a good one. This one can, because it
//! decides who is in which room and writes a marker into every message.
//!
//! A tour of the modules, in the order a message travels:
//!
//! - [`scenario`]: the named load patterns and their presets (`quick`, `full`),
//!   and the [`scenario::Target`]: what to say to which server.
//! - [`engine`]: the single-threaded `mio` event loop that connects thousands
//!   of clients, sends on an open-loop schedule and reads every line.
//! - [`marker`]: the `~cb1:SENDER:SEQ:INTENDED_US~` marker in every message.
//! - [`ledger`]: sans-IO accounting of expected, delivered, lost, duplicated
//!   and reordered deliveries.
//! - [`sys`]: `/proc` figures, CPU pinning, descriptor limits, run conditions.
//! - [`result`]: the JSON a run writes.
//! - [`ceiling`]: the loopback reference every stage is measured against.
//! - [`compare`]: runs every stage binary through every scenario.
//! - [`report`]: Markdown tables and SVG plots for the book.
//! - [`cli`]: the command line.
//!
//! *Invariant:* latency is always measured from the intended send time, never
//! from the moment the generator got around to sending.
//!
//! Run it: `chat-bench run --addr 127.0.0.1:7878 --scenario chat`, or the whole
//! comparison with `scripts/compare.sh`.

pub mod ceiling;
pub mod cli;
pub mod compare;
pub mod engine;
pub mod ledger;
pub mod marker;
pub mod report;
pub mod result;
pub mod scenario;
pub mod sys;
