//! The C10K promise of this stage, as a test (at a fifth of the scale, to stay quick): one
//! thread holds thousands of idle connections, each costs little memory because no buffer
//! is kept per client, and every one of them still answers.
//!
//! ```text
//! cargo test -p chat-mio --test idle_clients
//! ```
//!
//! The memory bound is loose on purpose ([`MAX_BYTES_PER_CLIENT`]): this is not the
//! measurement (the chapter's figures come from `chat-bench`), it catches a regression such
//! as a read buffer per client.

use std::time::Instant;

use chat_testkit::{parse_welcome, Client, Server, LINE_TIMEOUT};

/// Connections held at once: twice what `select(2)` can watch.
const CLIENTS: usize = 2_000;

/// Growth of the server's resident memory allowed per idle client. One 4 KiB buffer per
/// client would exceed it; what this stage really costs is a few hundred bytes.
const MAX_BYTES_PER_CLIENT: u64 = 4096;

#[test]
fn two_thousand_idle_clients_cost_little_and_all_answer() {
    let args = ["--addr", "127.0.0.1:0"].map(String::from);
    let server = Server::start(env!("CARGO_BIN_EXE_chat-mio"), &args, None);
    // A first client, so that what the loop allocates once (its read buffer, the event
    // array, the allocator's first arenas) is already in the "before" figure.
    let mut probe = server.join("probe");
    probe.send("/join probe");
    probe.expect("* you joined probe (1 members)");
    let before = server.memory().rss_kib;

    // Each client moves to a room of its own at once: idle clients, not a lobby of 2,000
    // that hears every arrival.
    let deadline = Instant::now() + 3 * LINE_TIMEOUT;
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = server.connect(&format!("idle{i}"));
            let line = c
                .try_line_within(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|e| panic!("{}: expected a welcome, got {e}", c.who_am_i()));
            c.nick = parse_welcome(&line).unwrap_or_else(|e| panic!("{}: {e}", c.who_am_i()));
            c.send(&format!("/join room{i}"));
            c.expect(&format!("* you joined room{i} (1 members)"));
            c
        })
        .collect();
    let after = server.memory().rss_kib;
    let per_client = after.saturating_sub(before) * 1024 / CLIENTS as u64;
    eprintln!("VmRSS {before} KiB -> {after} KiB with {CLIENTS} idle clients: {per_client} B each");
    assert!(
        per_client <= MAX_BYTES_PER_CLIENT,
        "VmRSS grew from {before} KiB to {after} KiB for {CLIENTS} idle clients, \
         {per_client} bytes each (at most {MAX_BYTES_PER_CLIENT} allowed)"
    );

    // Every one of them is still served: a private message to each.
    let ping = format!("[{}] still there?", probe.nick);
    for c in &mut clients {
        probe.send(&format!("/msg {} still there?", c.nick));
        c.expect(&ping);
    }
    server.finish();
}
