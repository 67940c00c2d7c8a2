//! The conformance suite (crate `chat-testkit`) run against the real `chat-threads`
//! binary: `cargo test -p chat-threads --test conformance`.

chat_testkit::conformance!(bin = env!("CARGO_BIN_EXE_chat-threads"), mode = concurrent);
