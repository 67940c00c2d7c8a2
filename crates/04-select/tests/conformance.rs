//! The conformance suite, run against the real `chat-select` binary over loopback TCP:
//! `cargo test -p chat-select --test conformance`. Its connection limit (1000, below
//! `FD_SETSIZE`) acts like `--max-clients`, so it runs in the `concurrent` mode.

chat_testkit::conformance!(bin = env!("CARGO_BIN_EXE_chat-select"), mode = concurrent);
