//! What this stage is for, as a test: it holds more clients than `select` can watch (past
//! descriptor 1024), and an idle client costs little memory, because the read buffer is
//! shared by the whole loop instead of being one per client.
//! `cargo test -p chat-epoll --test idle_clients` (2,000 loopback connections).
//!
//! The memory bound is deliberately loose (see [`MAX_BYTES_PER_CLIENT`]): it is not a
//! measurement (`chat-bench` and the chapter measure), it catches a per-client buffer.

use std::time::Instant;

use chat_testkit::{parse_welcome, Client, LINE_TIMEOUT};

/// Connections held at once: twice what `select(2)` allows.
const CLIENTS: usize = 2_000;

/// Growth of the server's resident memory allowed per idle client. A read buffer per client
/// of even 4 KiB (stage 02's size) would exceed it; our measured cost is well under 1 KiB.
const MAX_BYTES_PER_CLIENT: u64 = 4096;

#[test]
fn two_thousand_idle_clients_are_held_cheaply_and_still_answer() {
    let args: Vec<String> = ["--addr", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server = chat_testkit::Server::start(env!("CARGO_BIN_EXE_chat-epoll"), &args, None);
    // One client first, so that the memory the loop needs anyway (its read buffer, the
    // event array, the allocator's first arenas) is in the "before" figure.
    let mut probe = server.join("probe");
    probe.send("/join probe");
    probe.expect("* you joined probe (1 members)");
    let before = server.memory().rss_kib;

    // Each client moves to a room of its own at once, so that the lobby (and the stream of
    // `joined lobby` lines to all its members) stays small: idle clients, not busy ones.
    let deadline = Instant::now() + 3 * LINE_TIMEOUT;
    let mut clients: Vec<Client> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = server.connect(&format!("c{i}"));
        let line = c
            .try_line_within(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("{}: expected a welcome, got {e}", c.who_am_i()));
        c.nick = parse_welcome(&line).unwrap_or_else(|e| panic!("{}: {e}", c.who_am_i()));
        c.send(&format!("/join r{i}"));
        c.expect(&format!("* you joined r{i} (1 members)"));
        clients.push(c);
    }
    let after = server.memory().rss_kib;
    let per_client = after.saturating_sub(before) * 1024 / CLIENTS as u64;
    eprintln!("RSS {before} KiB -> {after} KiB for {CLIENTS} idle clients: {per_client} B each");
    assert!(
        per_client <= MAX_BYTES_PER_CLIENT,
        "server RSS grew from {before} KiB to {after} KiB for {CLIENTS} idle clients: \
         {per_client} bytes each (at most {MAX_BYTES_PER_CLIENT} allowed)"
    );

    // Every one of them still answers: a private message from the probe to each.
    let ping = format!("[{}] ping", probe.nick);
    for c in &mut clients {
        probe.send(&format!("/msg {} ping", c.nick));
        c.expect(&ping);
    }
    server.finish();
}
