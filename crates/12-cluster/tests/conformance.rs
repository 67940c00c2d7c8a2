//! The conformance suite (`chat-testkit`) against a cluster of three `chat-cluster` nodes on a
//! private Redis: every check starts its own `redis-server` (a free port, nothing on disk) and
//! three nodes, and spreads its clients over them. The promises of the specification hold for
//! the whole cluster; `chat_testkit::checks::cluster` adds those only a cluster can break.
//!
//! ```text
//! cargo test -p chat-cluster --test conformance
//! ```
//!
//! No `idle_bytes_per_client`: a node's idle client costs what stage 08's does, plus one entry
//! in every other node's mirror; setting 2,000 of them up through the broker (a claim, a
//! subscription and a publish each, every one a round trip) takes longer than that check's
//! 20 s in a debug build.

chat_testkit::conformance!(
    bin = env!("CARGO_BIN_EXE_chat-cluster"),
    mode = concurrent,
    cluster = 3,
);
