//! The conformance suite (crate `chat-testkit`) run against the real `chat-threads`
//! binary: `cargo test -p chat-threads --test conformance`.

// A thread per client: its stack pages and its share of the kernel's bookkeeping cost about
// 16 KiB of resident memory, so the idle-clients bound is 32 KiB here (4 KiB elsewhere).
chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-threads"),
    mode = concurrent,
    idle_bytes_per_client = 32 * 1024,
);
