//! Checks of what a server owes, and of what it holds: a client that quits while it is
//! still owed lines gets them all before the close; a client that quits and never reads is
//! closed anyway; a client that floods does not keep the others waiting; and thousands of
//! idle clients cost little memory, burn no CPU, and all still answer.
//!
//! These were once copied into the stage crates (`tests/linger.rs`, `tests/farewell.rs`,
//! `tests/close_grace.rs`, `tests/flood_fairness.rs`, `tests/idle_clients.rs`); they are
//! protocol behaviours, so every stage that can serve several clients runs them here.
//!
//! Run through a stage: `cargo test -p chat-mio --test conformance -- farewell`.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{small_window_client, CLOSE_GRACE};
use crate::client::{parse_welcome, Buffers, LINE_TIMEOUT};
use crate::{Client, Options, Target};

/// The padding of every message queued for a quitter: with the sender's nick and the
/// sequence number, each line is about 1 KB.
const PAD: usize = 990;

/// Closing is a write like any other. A client with a 16 KiB receive buffer is sent about
/// 200 KB it does not read (less than the default `--outbox-bytes` of 262,144, so it is no
/// slow consumer, and far more than its window: most of it still waits on the server's
/// side), then sends `/quit`. When it reads at last it gets every message in order, then
/// `* bye`, then the end of the stream (not a reset). A server that closed the socket as
/// soon as the protocol said "close" would cut the tail off.
///
/// Breaks, if it fails: *Closing*, "it first writes everything the client is owed, then
/// ends its own side of the stream".
pub fn farewell_delivers_everything_then_bye(t: &Target) {
    /// About 200 KB: see above.
    const MESSAGES: usize = 200;
    let server = t.start(Options::default());
    let mut quitter = small_window_client(&server, "quitter");
    quitter.expect_welcome();
    let mut sender = server.join("sender");
    let pad = "x".repeat(PAD);
    for i in 0..MESSAGES {
        sender.send(&format!("{i} {pad}"));
    }
    // The reply to /who comes after the server has handled every message above: by now all
    // of them are queued for the quitter, which has read none of them. (The sender stays:
    // its leaving would be one more line for the quitter.)
    sender.sync();
    quitter.send("/quit");
    let mut expected = vec![format!("* {} joined lobby", sender.nick)];
    expected.extend((0..MESSAGES).map(|i| format!("<{}> {i} {pad}", sender.nick)));
    expected.push("* bye".to_string());
    for (i, want) in expected.iter().enumerate() {
        match quitter.try_line() {
            Ok(got) if got == *want => {}
            Ok(got) => panic!(
                "{}: after /quit, line {i} of {}: expected {want:.40?}..., got {got:.40?}...",
                quitter.who_am_i(),
                expected.len()
            ),
            Err(e) => panic!(
                "{}: after /quit, line {i} of {}: expected {want:.40?}..., got {e} (a client \
                 that quits is owed everything queued before its `* bye`)",
                quitter.who_am_i(),
                expected.len()
            ),
        }
    }
    quitter.expect_eof();
    server.finish();
}

/// A client with a 16 KiB receive buffer is owed about 6 MB (with `--outbox-bytes
/// 16777216`, so it is not behind: no slow consumer), sends `/quit` and never reads again. It cannot take what it is owed, and it never ends its stream: the server must
/// give up on it `CLOSE_GRACE` after `/quit` (within a little slack) instead of keeping it,
/// and what it is owed, for ever. Its room sees exactly `* NICK left lobby`, and the others
/// are still served.
///
/// Breaks, if it fails: *Closing*, "all of that is bounded by `CLOSE_GRACE` from the moment
/// the server decided to close", and the departure notice of a `/quit`.
pub fn quitter_that_never_reads_is_closed(t: &Target) {
    /// About 6 MB: more than the kernel takes into the sockets of a client with a 16 KiB
    /// window that does not read (about 3.8 MB here: the server keeps an outbox it cannot
    /// flush), and less than a blocking stage's send buffer holds at a 16 MiB request
    /// (2 × `net.core.wmem_max`, about 7.6 MB of data here), so that no stage can call it a
    /// slow consumer before its `/quit`.
    const MESSAGES: usize = 6_000;
    let server = t.start(Options {
        outbox_bytes: Some(16 << 20),
        ..Options::default()
    });
    let mut quitter = small_window_client(&server, "quitter");
    quitter.expect_welcome();
    let quitter_socket = server.socket_of(&quitter);
    let mut sender = server.join("sender");
    let pad = "x".repeat(PAD);
    for i in 0..MESSAGES {
        sender.send(&format!("{i} {pad}"));
    }
    // The reply to /who comes after the server has handled every message above.
    sender.sync();
    quitter.send("/quit");
    let quit_at = Instant::now();
    sender.expect(&format!("* {} left lobby", quitter.nick));
    // Wait until the server no longer holds the quitter's socket.
    let limit = CLOSE_GRACE + LINE_TIMEOUT;
    while server.holds(&quitter_socket) {
        assert!(
            quit_at.elapsed() < limit,
            "{}: quit with ~{} MB unread and never read again, yet the server still \
             holds its socket {quitter_socket} {limit:?} after `/quit` (CLOSE_GRACE is \
             {CLOSE_GRACE:?})",
            quitter.who_am_i(),
            MESSAGES / 1000
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sender.sync();
    server.finish();
    drop(quitter);
}

/// One client floods a room where nobody listens with 100-byte lines, as fast as it can;
/// meanwhile another client's `/who` must be answered. The check is an order, not a
/// stopwatch: the flood stops as soon as `/who` is answered (a few MB in practice), and the
/// check fails if the flood reaches 64 MB first, more than the kernel's socket buffers
/// can hold (the flooder's send buffer is fixed at 64 KiB, the server's receive buffer
/// grows to `net.ipv4.tcp_rmem`'s maximum, 32 MiB here, 6 MiB by default), so the server
/// must have read it almost all without answering anybody else.
///
/// Breaks, if it fails: *Bad input hurts nobody else*: one client's input must not keep the
/// server from serving the others.
pub fn flood_does_not_starve_others(t: &Target) {
    /// The flood's cap: see above.
    const MAX_FLOOD: usize = 64 << 20;
    /// Bytes per write of the flooder.
    const WRITE: usize = 64 << 10;
    let server = t.start(Options::default());
    let mut flooder = server.connect_with(
        "flooder",
        Buffers {
            recv: None,
            send: Some(WRITE),
        },
    );
    flooder.expect_welcome();
    flooder.send("/join flood");
    flooder.expect("* you joined flood (1 members)");
    let mut other = server.join("other");
    let mut w = flooder.writer();
    let answered = AtomicBool::new(false);
    let started = AtomicBool::new(false);
    let flooded = std::thread::scope(|s| {
        let flood = s.spawn(|| -> io::Result<usize> {
            let line = format!("{}\n", "x".repeat(99));
            let chunk = line.repeat(WRITE / line.len());
            let mut sent = 0;
            while sent < MAX_FLOOD && !answered.load(Ordering::SeqCst) {
                let result = w.write_all(chunk.as_bytes());
                started.store(true, Ordering::SeqCst);
                result?;
                sent += chunk.len();
            }
            Ok(sent)
        });
        // Bounded: the first write either completes or fails (write timeout), and
        // `started` is set either way.
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let reply = other.try_sync();
        answered.store(true, Ordering::SeqCst);
        let sent = flood
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if let Err(e) = reply {
            panic!("{e}");
        }
        sent.unwrap_or_else(|e| panic!("{}: sending the flood: {e}", flooder.who_am_i()))
    });
    assert!(
        flooded < MAX_FLOOD,
        "{}: `/who` was answered only after another client had flooded {} MB: the server \
         served the flooder alone meanwhile",
        other.who_am_i(),
        MAX_FLOOD >> 20
    );
    other.sync();
    server.finish();
}

/// 2,000 idle clients (each in a room of its own, so nobody hears the arrivals): the
/// server's resident memory grows by at most `max_bytes_per_client` each, it uses under
/// 200 ms of CPU in a second of silence, and every one of them still answers a private
/// message. The bound is the stage's own (passed by its `conformance!` call as
/// `idle_bytes_per_client`) and loose on purpose: it is not the measurement (`chat-bench`
/// measures), it catches a regression such as a read buffer kept per client, or a loop
/// that polls without being woken.
///
/// Breaks, if it fails: nothing in the specification's words but its purpose (the C10K of the
/// title): an idle client costs its socket and a little state, and a server with nothing to do
/// sleeps.
pub fn idle_clients_cost_little(t: &Target, max_bytes_per_client: u64) {
    /// Connections held at once: twice what `select(2)` can watch.
    const CLIENTS: usize = 2_000;
    /// How long the server is watched doing nothing.
    const IDLE: Duration = Duration::from_secs(1);
    /// CPU the server may use while idle for [`IDLE`].
    const MAX_IDLE_CPU: Duration = Duration::from_millis(200);
    /// All 2,000 connected, welcomed and in their rooms (one after the other: 4,000 round
    /// trips) within this.
    const SET_UP_WITHIN: Duration = Duration::from_secs(20);
    let server = t.start(Options {
        workers: Some(CLIENTS + 100),
        ..Options::default()
    });
    // A first client, so that what is allocated once (a shared read buffer, the event
    // array, a runtime's queues, the allocator's first arenas) is in the "before" figure.
    let mut probe = server.join("probe");
    probe.send("/join probe");
    probe.expect("* you joined probe (1 members)");
    let before = server.memory().rss_kib;
    let deadline = Instant::now() + SET_UP_WITHIN;
    let mut clients: Vec<Client> = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = server.connect(&format!("idle{i}"));
        let line = c
            .try_line_within(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("{}: expected a welcome, got {e}", c.who_am_i()));
        c.nick = parse_welcome(&line).unwrap_or_else(|e| panic!("{}: {e}", c.who_am_i()));
        c.send(&format!("/join room{i}"));
        c.expect(&format!("* you joined room{i} (1 members)"));
        clients.push(c);
    }
    let after = server.memory().rss_kib;
    let per_client = after.saturating_sub(before) * 1024 / CLIENTS as u64;
    eprintln!("VmRSS {before} KiB -> {after} KiB with {CLIENTS} idle clients: {per_client} B each");
    assert!(
        per_client <= max_bytes_per_client,
        "VmRSS grew from {before} KiB to {after} KiB for {CLIENTS} idle clients, {per_client} \
         bytes each (at most {max_bytes_per_client} allowed for this stage)"
    );
    // Nobody says anything for a while: the server must sleep, not poll.
    let cpu_before = server.cpu_time();
    std::thread::sleep(IDLE);
    let idle_cpu = server.cpu_time().saturating_sub(cpu_before);
    eprintln!("CPU used while idle for {IDLE:?}: {idle_cpu:?}");
    assert!(
        idle_cpu <= MAX_IDLE_CPU,
        "with {CLIENTS} idle clients the server used {idle_cpu:?} of CPU in {IDLE:?} with \
         nothing to do (at most {MAX_IDLE_CPU:?})"
    );
    // Every one of them still answers: a private message from the probe to each.
    let ping = format!("[{}] still there?", probe.nick);
    for c in &mut clients {
        probe.send(&format!("/msg {} still there?", c.nick));
        c.expect(&ping);
    }
    server.finish();
}
