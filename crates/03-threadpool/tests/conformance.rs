//! The conformance suite (crate `chat-testkit`) run against the real `chat-threadpool`
//! binary, its pool sized with `--threads N`: `cargo test -p chat-threadpool --test conformance`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-threadpool"),
    mode = pool(flag = "--threads"),
);
