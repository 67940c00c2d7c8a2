//! The conformance suite (`chat-testkit`) against the real `chat-tokio` binary, once per
//! scheduler flavor: the same server must keep the same promises on one thread and on many.
//!
//! ```text
//! cargo test -p chat-tokio --test conformance
//! ```

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-tokio"),
    mode = concurrent,
    args = ["--flavor", "current-thread"],
    name = current_thread,
    idle_bytes_per_client = 4096,
);

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-tokio"),
    mode = concurrent,
    args = ["--flavor", "multi-thread"],
    name = multi_thread,
    idle_bytes_per_client = 4096,
);
