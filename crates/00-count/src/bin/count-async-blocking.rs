//! The classic async mistake: a *blocking* sleep inside an `async fn`.
//!
//! `std::thread::sleep` puts the runtime's only thread to sleep. No other task
//! can be polled meanwhile, so the three "concurrent" tasks run one after the
//! other and the program takes three seconds again, the same as
//! `count-sequential`. It is the Rust version of calling `time.sleep()` instead
//! of `await asyncio.sleep()`, and the reason the async stages of this book
//! never do blocking I/O on a runtime thread.
//!
//! Run it with `cargo run -p chat-count --bin count-async-blocking`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

// ANCHOR: count
/// Says `One`, blocks the whole runtime thread for a second, says `Two`.
async fn count() {
    println!("One");
    // Wrong on purpose: this never returns `Pending`, it just stalls the thread.
    std::thread::sleep(Duration::from_secs(1));
    println!("Two");
}
// ANCHOR_END: count

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let start = Instant::now();
    tokio::join!(count(), count(), count());
    let elapsed = start.elapsed().as_secs_f64();
    println!("count-async-blocking executed in {elapsed:0.2} seconds.");
}
