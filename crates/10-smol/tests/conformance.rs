//! The conformance suite against the real `chat-smol` binary, on one thread (the default) and
//! on an executor shared by two threads: `cargo test -p chat-smol --test conformance`.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-smol"),
    mode = concurrent,
    name = one_thread,
    idle_bytes_per_client = 4096,
);

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-smol"),
    mode = concurrent,
    args = ["--threads", "2"],
    name = two_threads,
    idle_bytes_per_client = 4096,
);
