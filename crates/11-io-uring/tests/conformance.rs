//! The conformance suite, run against the real `chat-io-uring` binary over loopback TCP:
//! `cargo test -p chat-io-uring --test conformance`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-io-uring"),
    mode = concurrent,
    idle_bytes_per_client = 4096,
);
