//! A stage-specific check beside the conformance suite: a client that sends without pause
//! does not keep the server from the others. Nothing in async-std preempts a task that is
//! always ready, and while a socket has data its read is ready at once: without the read
//! loop's `yield_now`, the flooder's task would keep its thread until the flood ends, and
//! everybody served by that thread would wait.
//!
//! The check is an order, not a stopwatch: another client's `/who` must be answered while
//! the flood is still being sent (64 MB, far more than the kernel's socket buffers hold, so
//! the flooder's writes can only finish after the server has read almost all of it).
//!
//! ```text
//! cargo test -p chat-async-std --test flood_fairness
//! ```

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use chat_testkit::Server;

/// What the flooder sends: 64 MB of 100-byte lines to a room where nobody listens.
const FLOOD_BYTES: usize = 64 << 20;

/// Bytes per write of the flooder.
const WRITE: usize = 64 << 10;

fn flood_does_not_starve_others(extra: &[&str]) {
    let mut args = vec!["--addr".to_string(), "127.0.0.1:0".to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let server = Server::start(env!("CARGO_BIN_EXE_chat-async-std"), &args, None);
    let mut flooder = server.join("flooder");
    flooder.send("/join flood");
    flooder.expect("* you joined flood (1 members)");
    let mut other = server.join("other");
    let mut w = flooder.writer();
    let flood_done = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let line = format!("{}\n", "x".repeat(99));
            let chunk = line.repeat(WRITE / line.len());
            let result = (0..FLOOD_BYTES / chunk.len()).try_for_each(|_| {
                w.write_all(chunk.as_bytes())?;
                started.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            });
            flood_done.store(true, Ordering::SeqCst);
            result
        });
        // Bounded: the flood either starts or fails, and `flood_done` is set either way.
        while !started.load(Ordering::SeqCst) && !flood_done.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        other.sync(); // sends /who and reads the reply
        assert!(
            !flood_done.load(Ordering::SeqCst),
            "{}: /who was answered only after a {} MB flood from another client had been \
             sent: the flooder's task kept the server to itself",
            other.who_am_i(),
            FLOOD_BYTES >> 20
        );
        flood
            .join()
            .expect("flooder thread")
            .expect("flooder: write");
    });
    other.sync();
    server.finish();
}

/// With one executor thread, as the load test runs it (pinned to one core). With two, the
/// second thread would answer `/who` while the first is stuck, and hide the problem.
#[test]
fn one_executor_thread() {
    // The server inherits this test's environment; this is the only test in this binary.
    std::env::set_var("ASYNC_STD_THREAD_COUNT", "1");
    flood_does_not_starve_others(&[]);
}
