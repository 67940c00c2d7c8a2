//! The C10K promise of this stage, as a test (at a fifth of the scale, to stay quick): one
//! thread holds thousands of idle connections; each costs little memory, because a task holds
//! only what lives across its `.await`s and the read buffer is shared; an idle server burns no
//! CPU, because a task is polled only when its waker was called; and every client still
//! answers.
//!
//! ```text
//! cargo test -p chat-futures --test idle_clients
//! ```
//!
//! The bounds are loose on purpose: this is not the measurement (the chapter's figures come
//! from `chat-bench`), it catches regressions such as a read buffer per task or a loop that
//! polls without being woken.

use std::time::{Duration, Instant};

use chat_testkit::{parse_welcome, Client, Server, LINE_TIMEOUT};

/// Connections held at once.
const CLIENTS: usize = 2_000;

/// Growth of the server's resident memory allowed per idle client. A 4 KiB buffer in each
/// reader task would exceed it. What a client really costs is about 2 KiB in this debug
/// build at this scale, and about 1.5 KiB in a release build at 10,000 clients (two tasks,
/// their wakers, the reactor's entry, and `chat-core`'s own share).
const MAX_BYTES_PER_CLIENT: u64 = 4096;

/// How long the server is watched doing nothing.
const IDLE: Duration = Duration::from_secs(1);

/// CPU the server may use while idle for [`IDLE`]. A loop that polls tasks without being
/// woken would use all of [`IDLE`]; an idle one sleeps in `epoll_wait` and uses ~0.
const MAX_IDLE_CPU: Duration = Duration::from_millis(200);

#[test]
fn two_thousand_idle_clients_cost_little_burn_nothing_and_all_answer() {
    let args = ["--addr", "127.0.0.1:0"].map(String::from);
    let server = Server::start(env!("CARGO_BIN_EXE_chat-futures"), &args, None);
    // A first client, so that what is allocated once (the shared read buffer, the event
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

    // Nobody says anything for a while: the server must sleep, not poll.
    let cpu_before = server.cpu_time();
    std::thread::sleep(IDLE);
    let idle_cpu = server.cpu_time().saturating_sub(cpu_before);
    eprintln!("CPU used while idle for {IDLE:?}: {idle_cpu:?}");
    assert!(
        idle_cpu <= MAX_IDLE_CPU,
        "the server used {idle_cpu:?} of CPU in {IDLE:?} with nothing to do"
    );

    // Every one of them is still served: a private message to each.
    let ping = format!("[{}] still there?", probe.nick);
    for c in &mut clients {
        probe.send(&format!("/msg {} still there?", c.nick));
        c.expect(&ping);
    }
    server.finish();
}
