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
//!   our protocol's words ([`scenario::OURS`]) and the [`scenario::Target`]:
//!   what to say to which server (the only place a protocol string lives).
//! - [`engine`]: the single-threaded `mio` event loop that connects thousands
//!   of clients, sends on an open-loop schedule and reads every line (the
//!   loop, one client's state machine, the scenario scripts, the result).
//! - [`marker`]: the `~cb1:SENDER:SEQ:INTENDED_US~` marker in every message.
//! - [`ledger`]: sans-IO accounting of expected, delivered, lost, duplicated
//!   and reordered deliveries.
//! - [`knee`]: sans-IO search for the highest load a server carries, and the
//!   rule that tells a server's limit from the generator's.
//! - [`sys`]: `/proc` figures, CPU pinning, descriptor limits, run conditions.
//! - [`result`]: the JSON a run writes, and `run.json`, a comparison's index.
//! - [`ceiling`]: the loopback reference every stage is measured against.
//! - [`launch`]: starting a server binary and reading its `listening on` line.
//! - [`compare`]: runs every stage binary (and any peer) through every scenario.
//! - [`report`]: Markdown tables and SVG plots for the book.
//! - [`cli`]: the command line.
//!
//! *Invariant:* latency is always measured from the intended send time, never
//! from the moment the generator got around to sending.
//!
//! *Invariant:* a figure the generator may have limited says so: a knee the
//! generator ended is `≥ X (generator-bound)`, never a bare number.
//!
//! *Invariant:* `chat-bench` depends on no stage and on no `chat-core`: it
//! judges servers by what they send, as it would judge anybody's.
//!
//! Run it (it is not on `PATH`):
//! `cargo run --release -p chat-bench -- run --addr 127.0.0.1:7878 --scenario chat`,
//! or the whole comparison with `scripts/compare.sh`.

pub mod ceiling;
pub mod cli;
pub mod compare;
pub mod engine;
pub mod knee;
pub mod launch;
pub mod ledger;
pub mod marker;
pub mod report;
pub mod result;
pub mod scenario;
pub mod sys;
