//! `count()` as three tasks on one thread with tokio: the Rust twin of the
//! articles' `asyncio.gather(count(), count(), count())`.
//!
//! `tokio::time::sleep` does not block the thread: it registers a timer and
//! returns `Pending`, so the runtime polls the next `count()`. All three sleeps
//! run at once on a single thread and the program takes about one second.
//!
//! Run it with `cargo run -p chat-count --bin count-async`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

// ANCHOR: count
/// Says `One`, yields to the runtime for a second, says `Two`.
async fn count() {
    println!("One");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("Two");
}
// ANCHOR_END: count

// ANCHOR: main
// `current_thread`: one thread runs every task, like asyncio's event loop.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let start = Instant::now();
    // `join!` polls the three futures in turn on this one thread until all
    // are done; nothing runs until it is awaited.
    tokio::join!(count(), count(), count());
    let elapsed = start.elapsed().as_secs_f64();
    println!("count-async executed in {elapsed:0.2} seconds.");
}
// ANCHOR_END: main
