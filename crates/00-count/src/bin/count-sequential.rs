//! `count()`, one call after another: the baseline of the "Concurrency and
//! parallelism" chapter.
//!
//! Each call prints `One`, sleeps for a second, prints `Two`. Nothing else can
//! happen while a call sleeps, so three calls take three seconds.
//!
//! Run it with `cargo run -p chat-count --bin count-sequential`.

#![forbid(unsafe_code)]

use std::thread;
use std::time::{Duration, Instant};

// ANCHOR: count
/// Says `One`, waits a second (blocking this thread), says `Two`.
fn count() {
    println!("One");
    thread::sleep(Duration::from_secs(1));
    println!("Two");
}
// ANCHOR_END: count

// ANCHOR: main
fn main() {
    let start = Instant::now();
    for _ in 0..3 {
        count();
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("count-sequential executed in {elapsed:0.2} seconds.");
}
// ANCHOR_END: main
