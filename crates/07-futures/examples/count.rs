//! `count()` three times on our own runtime: the twin of `chat-count`'s `count-async`, with no
//! tokio. One thread, three one-second pauses, about one second in all.
//!
//! Run it with `cargo run -p chat-futures --example count`.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use chat_futures::tour::count;
use chat_futures::{block_on, Executor};

// ANCHOR: main
fn main() {
    let start = Instant::now();
    let executor = Executor::new();
    let say = |word: &'static str| println!("{word}");
    let tasks: Vec<_> = (0..3)
        .map(|_| executor.spawn(count(say, Duration::from_secs(1))))
        .collect();
    block_on(executor.run(async {
        for task in tasks {
            task.await;
        }
    }));
    let elapsed = start.elapsed().as_secs_f64();
    println!("count on our own runtime executed in {elapsed:0.2} seconds.");
}
// ANCHOR_END: main
