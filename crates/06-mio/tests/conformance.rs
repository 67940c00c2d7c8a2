//! The shared conformance suite, run against the real `chat-mio` binary over loopback TCP.
//!
//! ```text
//! cargo test -p chat-mio --test conformance
//! ```

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-mio"),
    mode = concurrent,
    idle_bytes_per_client = 4096,
);
