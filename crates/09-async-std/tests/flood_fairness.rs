//! The conformance suite's `flood_does_not_starve_others`, once more with ONE executor thread,
//! as the load test runs this stage (pinned to one core). Nothing in async-std preempts a task
//! that is always ready: without the read loop's `yield_now`, the flooder's task would keep
//! the only thread, and another client's `/who` would wait for the end of the flood. The
//! suite's run (`tests/conformance.rs`) uses async-std's default of one thread per core,
//! where a second thread answers `/who` and hides the problem; async-std takes its thread
//! count only from the environment, so this check needs a test binary of its own.
//!
//! ```text
//! cargo test -p chat-async-std --test flood_fairness
//! ```

use chat_testkit::{Mode, Target};

#[test]
fn one_executor_thread() {
    // The server inherits this test's environment; this is the only test in this binary.
    std::env::set_var("ASYNC_STD_THREAD_COUNT", "1");
    let target = Target {
        bin: env!("CARGO_BIN_EXE_chat-async-std"),
        mode: Mode::Concurrent,
        args: &[],
    };
    chat_testkit::checks::flood_does_not_starve_others(&target);
}
