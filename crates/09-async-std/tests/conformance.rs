//! The conformance suite against the real `chat-async-std` binary:
//! `cargo test -p chat-async-std --test conformance`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-async-std"),
    mode = concurrent,
    idle_bytes_per_client = 4096,
);
