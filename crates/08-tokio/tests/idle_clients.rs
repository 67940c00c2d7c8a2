//! The C10K promise of this stage, as a test (at a fifth of the scale, to stay quick), for
//! both flavors: thousands of idle clients are thousands of small tasks on one thread
//! (`current-thread`) or on `--threads N` workers (`multi-thread`), each costs little memory
//! because no task keeps a read buffer, and every one of them still answers.
//!
//! ```text
//! cargo test -p chat-tokio --test idle_clients
//! ```
//!
//! The memory bound is loose on purpose ([`MAX_BYTES_PER_CLIENT`]): this is not the
//! measurement (the chapter's figures come from `chat-bench`), it catches a regression such
//! as a read buffer kept in every task.

use std::time::Instant;

use chat_testkit::{parse_welcome, Client, Server, LINE_TIMEOUT};

/// Connections held at once.
const CLIENTS: usize = 2_000;

/// Growth of the server's resident memory allowed per idle client. One 4 KiB read buffer per
/// task would exceed it; what a client really costs here is about half of it.
const MAX_BYTES_PER_CLIENT: u64 = 4096;

/// The `Threads:` line of `/proc/PID/status`: how many threads the server runs.
fn threads(server: &Server) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("/proc/PID/status of the server");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// Starts the server with `flavor` flags, connects [`CLIENTS`] idle clients (each in a room
/// of its own), checks the memory they cost and the threads that serve them, then messages
/// every one of them.
fn idle_clients(flavor: &[&str], expected_threads: usize) {
    let args: Vec<String> = ["--addr", "127.0.0.1:0"]
        .iter()
        .chain(flavor)
        .map(|s| s.to_string())
        .collect();
    let server = Server::start(env!("CARGO_BIN_EXE_chat-tokio"), &args, None);
    // A first client, so that what is allocated once (the runtime's queues, the allocator's
    // first arenas) is already in the "before" figure.
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
    eprintln!(
        "{flavor:?}: VmRSS {before} KiB -> {after} KiB with {CLIENTS} idle clients: \
         {per_client} B each"
    );
    assert!(
        per_client <= MAX_BYTES_PER_CLIENT,
        "{flavor:?}: VmRSS grew from {before} KiB to {after} KiB for {CLIENTS} idle clients, \
         {per_client} bytes each (at most {MAX_BYTES_PER_CLIENT} allowed)"
    );
    // Tasks are not threads: the thread count is the runtime's, whatever the clients.
    assert_eq!(
        threads(&server),
        expected_threads,
        "{flavor:?} with {CLIENTS} clients: threads of the server"
    );

    // Every one of them is still served: a private message to each.
    let ping = format!("[{}] still there?", probe.nick);
    for c in &mut clients {
        probe.send(&format!("/msg {} still there?", c.nick));
        c.expect(&ping);
    }
    server.finish();
}

#[test]
fn current_thread_two_thousand_idle_clients_on_one_thread() {
    idle_clients(&["--flavor", "current-thread"], 1);
}

#[test]
fn multi_thread_two_thousand_idle_clients_on_two_workers() {
    // The thread that called `run` (it runs the accept loop in `block_on`) plus 2 workers.
    idle_clients(&["--flavor", "multi-thread", "--threads", "2"], 3);
}
