//! `count()` on three threads: the same blocking function as
//! `count-sequential`, but each call gets its own OS thread.
//!
//! The kernel puts a thread that sleeps aside and runs the others, so the three
//! one-second sleeps overlap and the program takes about one second. Unlike
//! CPython's threads, these could also *compute* in parallel: Rust has no
//! global interpreter lock.
//!
//! Run it with `cargo run -p chat-count --bin count-threads`.

#![forbid(unsafe_code)]

use std::thread;
use std::time::{Duration, Instant};

/// Says `One`, waits a second (blocking this thread only), says `Two`.
fn count() {
    println!("One");
    thread::sleep(Duration::from_secs(1));
    println!("Two");
}

// ANCHOR: main
fn main() {
    let start = Instant::now();
    // A scope joins every thread spawned in it before it returns, so no
    // `JoinHandle` bookkeeping is needed (and a panic in a thread would
    // propagate here instead of being lost).
    thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(count);
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    println!("count-threads executed in {elapsed:0.2} seconds.");
}
// ANCHOR_END: main
