//! The checks. Each is a function `fn(&Target)` that starts its own server, drives clients
//! and panics with a precise message on the first deviation from the specification
//! (`book/src/specification.md`). Each one's doc comment says which promise it breaks if it
//! fails.
//!
//! - [`alone`]: what one client can see by itself (every mode, `sequential` included).
//! - [`room`]: what clients see of each other (modes that serve several clients at once).
//! - [`stress`]: bad input, slow consumers, many clients, limits, descriptors, shutdown.
//! - [`limits`]: the limit of each mode (one at a time, N at a time).
//! - [`backlog`]: what a server owes and holds: lines owed to a quitter, a quitter that
//!   never reads, a flooder beside other clients, thousands of idle clients.
//! - [`flow`]: flow control (the specification's *Flow control and slow consumers*): bursts
//!   that owe readers more than any bound, pipelined commands, many senders at once, a
//!   sender that never stops; readers are never cut, memory stays bounded.
//! - [`closing`]: *Closing* and shutdown: talking after `/quit`, half-closes, churn and the
//!   causal order of notices, SIGTERM with clients that make it hard.
//! - [`cluster`]: a cluster of nodes (`Mode::Cluster`): what only several nodes can break —
//!   nicks, `guestN`, `/msg`, `/who`, counts and order across nodes; a node killed, the broker
//!   restarted, one node stopped.
//! - [`edges`]: the edges of the protocol over real TCP: `\r` and `\n` in separate reads,
//!   the limit with a `\r`, `/msg` to oneself, case rules, the list cap, urgent data, a
//!   burst of connects against the backlog.
//!
//! How a check proves that *nothing* arrived without sleeping: the client sends `/who`
//! and asserts that the reply is its very next line ([`Client::sync`]). Only the mode
//! limits, where a client must get nothing at all, listen for a short silence instead
//! (that can only pass wrongly, never fail wrongly).
//!
//! Time: a client waits [`crate::LINE_TIMEOUT`] (3 s) for a line it expects now, and checks
//! that must allow for a delay of the protocol (a sender held up by a client that does not
//! read, for up to [`SLOW_GRACE`]; a close grace) add exactly that delay. Nothing about speed
//! is measured, except the CPU a server may burn while it cannot accept (EMFILE).
//!
//! Run them through a stage, e.g. `cargo test -p chat-threads --test conformance`, or one
//! check by name: `cargo test -p chat-threads --test conformance -- max_clients`.

pub mod alone;
pub mod backlog;
pub mod closing;
pub mod cluster;
pub mod edges;
pub mod flow;
pub mod junk;
pub mod limits;
pub mod room;
pub mod stress;

pub use alone::*;
pub use backlog::*;
pub use closing::*;
pub use cluster::*;
pub use edges::*;
pub use flow::*;
pub use junk::*;
pub use limits::*;
pub use room::*;
pub use stress::*;

use std::time::Duration;

use crate::client::{Buffers, LINE_TIMEOUT};
use crate::{Client, Server};

/// The longest line the protocol accepts, in bytes before the `\n`, a `\r` included
/// (`MAX_LINE`).
pub const MAX_LINE: usize = 1024;

/// The error for a line over `MAX_LINE`.
pub const TOO_LONG: &str = "! line too long (max 1024 bytes)";

/// How long a client may stay *behind* before it is cut as a slow consumer (`SLOW_GRACE`).
pub const SLOW_GRACE: Duration = Duration::from_secs(1);

/// How long a closing connection may take to read its last lines (`CLOSE_GRACE`).
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a stopping server gives all its clients, together (`SHUTDOWN_GRACE`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The smallest `--outbox-bytes` a server accepts.
pub const MIN_OUTBOX_BYTES: usize = 8192;

/// `--outbox-bytes` when the flag is not given.
pub const DEFAULT_OUTBOX_BYTES: usize = 262_144;

/// Connections the kernel must queue before the server accepts them (the listen backlog).
pub const BACKLOG: usize = 4096;

/// Lines of one `/help` reply.
pub const HELP_LINES: usize = 9;

/// The most a stage reads from one client at once ("one read, 64 KiB in the stages that
/// read most at once"): what the server may keep of a waiting sender's input, beside one
/// unfinished line.
pub const ONE_READ: usize = 64 * 1024;

/// What a server's resident memory may grow by beyond the bytes the specification accounts
/// for: the allocator's pages and arenas, a vector that doubled, a stack touched deeper.
pub const MEMORY_SLACK: usize = 1024 * 1024;

/// How long a client waits for a line that may be held up by flow control: a sender whose
/// lines reach a client that does not read waits until that client is cut, `SLOW_GRACE`
/// after it fell behind, then the line comes.
pub const FLOW_TIMEOUT: Duration = SLOW_GRACE.saturating_add(LINE_TIMEOUT);

/// The seed of the junk the garbage checks send (see [`crate::garbage`]).
pub const GARBAGE_SEED: u64 = 0x00C1_0C4A_7000_0001;

/// The memory a server may add while `recipients` clients are owed lines with outbox bound
/// `b`: each is owed at most 2·B (B, and notices past it up to twice B before it is cut),
/// one waiting sender's input is kept (one read and one unfinished line), plus
/// [`MEMORY_SLACK`]. In bytes.
pub fn memory_bound(recipients: usize, b: usize) -> usize {
    recipients * 2 * b + ONE_READ + MAX_LINE + MEMORY_SLACK
}

/// Connects `n` clients one after the other into `lobby`. Each is welcomed, and every
/// client already there must see `* NICK joined lobby` as its next line (checked at
/// once, so afterwards nothing is left unread). Labels are `{label}0`, `{label}1`, ...
#[track_caller]
pub fn lobby(server: &Server, n: usize, label: &str) -> Vec<Client> {
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    for i in 0..n {
        let new = server.join(&format!("{label}{i}"));
        let joined = format!("* {} joined lobby", new.nick);
        for old in &mut clients {
            old.expect(&joined);
        }
        clients.push(new);
    }
    clients
}

/// Connects a client whose socket buffers are tiny (receive 1 KiB, send 8 KiB, set before
/// `connect`, so the TCP window is small from the start): the kernel cannot hide that it
/// never reads, and its writes block soon after the server stops reading them.
#[track_caller]
pub fn tiny_buffers_client(server: &Server, label: &str) -> Client {
    server.connect_with(
        label,
        Buffers {
            recv: Some(1024),
            send: Some(8192),
        },
    )
}

/// The receive buffer of a client that is owed more than it reads. Setting `SO_RCVBUF`
/// turns the kernel's autotuning off, so what the client does not read piles up on the
/// server's side. (Much smaller, and the kernel holds back its window updates: the
/// transfer would crawl on retransmit timers.)
pub const SMALL_RCVBUF: usize = 16 * 1024;

/// Connects a client with a [`SMALL_RCVBUF`] receive buffer (set before `connect`, so the
/// window is small from the start).
#[track_caller]
pub fn small_window_client(server: &Server, label: &str) -> Client {
    server.connect_with(
        label,
        Buffers {
            recv: Some(SMALL_RCVBUF),
            send: None,
        },
    )
}

/// `n` bytes of printable text that show where they were cut: `0123456789012...`.
pub fn ruler(n: usize) -> String {
    (0..n).map(|i| char::from(b'0' + (i % 10) as u8)).collect()
}

/// The first `n` characters of `line`, with `...` if it was longer (for messages).
pub fn clip(line: &str, n: usize) -> String {
    match line.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

/// Waits for `expected` as the next line on `c` for as long as `busy` stays true (another
/// thread of the check is still sending what must eventually cause it), then for `c`'s
/// usual timeout more. For a line whose moment depends on how much a check has sent — such
/// as the cut of a slow consumer, which comes once the kernel's buffers for it are full and
/// `SLOW_GRACE` has passed — not on a delay the specification names.
pub fn try_expect_while(
    c: &mut Client,
    expected: &str,
    busy: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    while busy.load(Ordering::SeqCst) {
        match c.try_line_within(Duration::from_millis(100)) {
            Err(crate::ReadError::Timeout { .. }) => continue,
            Ok(line) if line == expected => return Ok(()),
            Ok(line) => {
                return Err(format!(
                    "{}: expected the line {expected:?}, got {line:?}",
                    c.who_am_i()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{}: expected the line {expected:?}, got {e}",
                    c.who_am_i()
                ))
            }
        }
    }
    c.try_expect(expected)
}

/// Sets its flag to false when dropped: "this thread is done", however it ended.
#[derive(Debug)]
pub struct Unset<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for Unset<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Joins a scoped thread, re-raising its panic, and returns its result.
pub fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Panics with all the failures of a multi-threaded check, if there are any.
#[track_caller]
pub fn assert_no_failures(what: &str, failures: Vec<String>) {
    if !failures.is_empty() {
        panic!(
            "{what}: {} failure(s):\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
}

/// The server's memory must not have grown (resident now, or at its peak) by more than
/// `bound` bytes since `before`; `why` says where the bound comes from.
#[track_caller]
pub fn assert_memory_within(
    server: &Server,
    before: crate::Memory,
    bound: usize,
    what: &str,
    why: &str,
) {
    let after = server.memory();
    let bound_kib = (bound / 1024) as u64;
    let rss = after.rss_kib.saturating_sub(before.rss_kib);
    let peak = after.hwm_kib.saturating_sub(before.hwm_kib);
    eprintln!("{what}: VmRSS +{rss} KiB, VmHWM +{peak} KiB (at most {bound_kib} KiB)");
    assert!(
        rss <= bound_kib && peak <= bound_kib,
        "{what}: the server's memory grew by {rss} KiB (VmRSS {} -> {} KiB), its peak by {peak} \
         KiB (VmHWM {} -> {} KiB); at most {bound_kib} KiB allowed ({why})",
        before.rss_kib,
        after.rss_kib,
        before.hwm_kib,
        after.hwm_kib
    );
}
