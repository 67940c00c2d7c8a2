//! The conformance suite, run against the real `chat-epoll` binary over loopback TCP:
//! `cargo test -p chat-epoll --test conformance`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-epoll"),
    mode = concurrent,
    idle_bytes_per_client = 4096,
);
