//! The conformance suite (crate `chat-testkit`) run against the real `chat-sequential`
//! binary: `cargo test -p chat-sequential --test conformance`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-sequential"),
    mode = sequential
);
