//! The shared conformance suite, run against the real `chat-futures` binary over TCP.
//!
//! `cargo test -p chat-futures --test conformance`

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-futures"),
    mode = concurrent,
    idle_bytes_per_client = 4096,
);
