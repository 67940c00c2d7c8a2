//! Checks of the protocol's edges over real TCP — what `chat-core` tests on byte literals,
//! tested here against the stage, whose reads cut the bytes their own way: a `\r` and its
//! `\n` in separate reads, the 1024-byte limit with the `\r` counted, `/msg` to oneself and
//! in any case, the case rules of nicks and rooms, the list cap at exactly 100 and 101,
//! urgent (out-of-band) data in the middle of the stream, and a burst of connects against
//! the listen backlog while the server is stopped.
//!
//! Each check works in every mode where it can: alone (commands and their replies) where one
//! client is served at a time, with a second member of the room where several are.
//!
//! Run through a stage: `cargo test -p chat-epoll --test conformance -- edges`.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::{lobby, ruler, MAX_LINE, TOO_LONG};
use crate::client::{rooms_line, who_line, LIST_CAP};
use crate::{Client, Options, Target};

/// How long to wait between two writes meant to reach the server in two reads. Not a
/// synchronisation: if the kernel merges them anyway, the check only gets easier.
const APART: Duration = Duration::from_millis(50);

/// A line's `\r` and its `\n` in separate reads: `/nick crsplit\r`, a pause, `\n` gives the
/// nick `crsplit` (were the `\r` kept, the nick would be invalid); with 1023 bytes before the
/// `\r` it is still a line (1024 with the `\r`). In a room: `hi\r` then `\n` is delivered as
/// `hi`, and a `\r` that is not just before the `\n` is kept: `x\ry\r\r\n` is `x\ry\r`.
///
/// Breaks, if it fails: *Transport and lines*, "a `\r` just before the `\n` is dropped" and
/// "how TCP cuts or joins the bytes never matters: ... a `\r` and its `\n` in separate reads".
pub fn cr_and_lf_in_separate_reads(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.send_raw(b"/nick crsplit\r");
    std::thread::sleep(APART);
    a.send_raw(b"\n");
    a.expect("* you are now crsplit");
    a.nick = "crsplit".into();
    let prefix = "/frobnicate ";
    let long = format!("{prefix}{}", ruler(MAX_LINE - 1 - prefix.len()));
    a.send_raw(format!("{long}\r").as_bytes());
    std::thread::sleep(APART);
    a.send_raw(b"\n");
    a.expect("! unknown command: /frobnicate");
    a.sync();
    if t.concurrent_clients() {
        let mut b = server.join("B");
        a.expect(&format!("* {} joined lobby", b.nick));
        b.send_raw(b"hi\r");
        std::thread::sleep(APART);
        b.send_raw(b"\n");
        a.expect(&format!("<{}> hi", b.nick));
        b.send_raw(b"x\ry\r\r");
        std::thread::sleep(APART);
        b.send_raw(b"\n");
        a.expect(&format!("<{}> x\ry\r", b.nick));
        let text = ruler(MAX_LINE - 1);
        b.send_raw(format!("{text}\r").as_bytes());
        std::thread::sleep(APART);
        b.send_raw(b"\n");
        a.expect(&format!("<{}> {text}", b.nick));
        b.sync();
        a.sync();
    }
    server.finish();
}

/// The `\r` counts towards the 1024 bytes: 1023 bytes + `\r\n` is a line (delivered as its
/// 1023 bytes), 1024 bytes + `\r\n` is refused with one error; and 1024 bytes + `\r` with
/// no `\n` yet is refused at once — the limit is crossed, the `\n` may never come.
///
/// Breaks, if it fails: *Transport and lines*, "a line holds at most `MAX_LINE` bytes before
/// its `\n`, the `\r` included", "the sender gets `! line too long (max 1024 bytes)` as soon
/// as the limit is crossed".
pub fn cr_counts_towards_the_limit(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    let prefix = "/frobnicate ";
    let fits = format!("{prefix}{}", ruler(MAX_LINE - 1 - prefix.len()));
    a.send_raw(format!("{fits}\r\n").as_bytes());
    a.expect("! unknown command: /frobnicate");
    let over = format!("{prefix}{}", ruler(MAX_LINE - prefix.len()));
    a.send_raw(format!("{over}\r\n/nick after-cr\n").as_bytes());
    a.expect(TOO_LONG);
    a.expect("* you are now after-cr");
    a.nick = "after-cr".into();
    // Crossed by the `\r` alone: the error comes before any `\n` is sent.
    a.send_raw(format!("{over}\r").as_bytes());
    a.expect(TOO_LONG);
    a.send_raw(b"\n");
    a.sync();
    if t.concurrent_clients() {
        let mut b = server.join("B");
        a.expect(&format!("* {} joined lobby", b.nick));
        let text = ruler(MAX_LINE - 1);
        b.send_raw(format!("{text}\r\n").as_bytes());
        a.expect(&format!("<{}> {text}", b.nick));
        b.send_raw(format!("{}\r\n", ruler(MAX_LINE)).as_bytes());
        b.expect(TOO_LONG);
        b.sync();
        a.sync(); // the refused line reached nobody
    }
    server.finish();
}

/// `/msg` to oneself is delivered to oneself (`[NICK] TEXT`), and `/msg` finds a nick in any
/// case; with two clients, `/msg ALICE` reaches `alice` alone, the text kept as sent.
///
/// Breaks, if it fails: the `/msg` row of *What a client sends* ("to yourself too: you get
/// it") and *Names*, "`/msg` finds it in any case".
pub fn msg_to_self_and_in_any_case(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.rename("Alice");
    a.send("/msg Alice note to self");
    a.expect("[Alice] note to self");
    a.send("/msg aLiCe  two  spaces kept ");
    a.expect("[Alice]  two  spaces kept ");
    a.sync();
    if t.concurrent_clients() {
        let mut b = server.join("B");
        a.expect(&format!("* {} joined lobby", b.nick));
        b.send("/msg ALICE psst");
        a.expect(&format!("[{}] psst", b.nick));
        b.sync(); // the sender gets nothing
        a.sync();
    }
    server.finish();
}

/// The case rules: a case-only rename is a rename (`* you are now Alice`, and the room sees
/// `* alice is now Alice`), renaming to exactly the current nick is answered but announced to
/// nobody; nicks are taken in any case, including for a new client's `guestN`; room names
/// are case-sensitive (`rust` and `Rust` are two rooms, `/join Rust` from `rust` is a join).
///
/// Breaks, if it fails: *Names* ("nicks are unique regardless of case ... room names are
/// case-sensitive", "the lowest N whose nick nobody holds, in any case") and the `/nick` row
/// ("also when only the case changed; nothing when NAME is exactly the current nick").
pub fn case_rules(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.rename("alice");
    a.rename("Alice");
    a.rename("Alice"); // answered, though nothing changes
    a.send("/join rust");
    a.expect("* you joined rust (1 members)");
    a.send("/join Rust");
    a.expect("* you joined Rust (1 members)");
    a.expect_rooms(&[("Rust", 1)]);
    a.send("/join rust");
    a.expect("* you joined rust (1 members)");
    a.send("/join lobby");
    a.expect("* you joined lobby (1 members)");
    a.sync();
    if t.concurrent_clients() {
        let mut b = server.join("B");
        a.expect(&format!("* {} joined lobby", b.nick));
        a.rename("alice");
        b.expect("* Alice is now alice");
        a.rename("alice");
        b.sync(); // exactly the current nick: nothing to announce
        a.rename("ALICE");
        b.expect("* alice is now ALICE");
        b.send("/nick Alice");
        b.expect("! nick taken: Alice");
        // A nick in another case holds its guest number: `GUEST9` keeps `guest9` taken.
        let guest = b.nick.clone();
        b.rename(&guest.to_ascii_uppercase());
        a.expect(&format!("* {guest} is now {}", b.nick));
        let c = server.join("C");
        assert!(
            !c.nick.eq_ignore_ascii_case(&b.nick),
            "{}: welcomed as {}, while {} holds that nick in another case",
            c.who_am_i(),
            c.nick,
            b.who_am_i()
        );
        a.expect(&format!("* {} joined lobby", c.nick));
        b.expect(&format!("* {} joined lobby", c.nick));
        // Rooms by case.
        a.send("/join rust");
        a.expect("* you joined rust (1 members)");
        b.expect("* ALICE left lobby");
        b.send("/join Rust");
        b.expect("* you joined Rust (1 members)");
        a.sync(); // Rust is not rust: nothing reached a
        b.send("in Rust");
        a.sync();
        b.expect_rooms(&[("Rust", 1), ("lobby", 1), ("rust", 1)]);
        drop(c);
    }
    server.finish();
}

/// With exactly 100 members, `/who` lists all 100, sorted case-insensitively, and has no
/// tail; with 101, the first 100 and ` and 1 more`. Likewise `/rooms` with exactly 100 rooms
/// and with 101 (sorted by name byte by byte, upper case before lower case).
///
/// Breaks, if it fails: the list format, "both list at most 100 entries, separated by `, `;
/// with more, the 100th entry is followed by ` and N more` (no comma) ... with exactly 100
/// there is no tail", and the orders of `/who` and `/rooms`.
pub fn lists_cap_at_100(t: &Target) {
    let server = t.start(Options {
        workers: Some(LIST_CAP + 20),
        ..Options::default()
    });
    let mut clients = lobby(&server, LIST_CAP, "L");
    let nicks =
        |clients: &[Client]| -> Vec<String> { clients.iter().map(|c| c.nick.clone()).collect() };
    let expect_line = |c: &mut Client, cmd: &str, want: &str| {
        c.send(cmd);
        let got = c.line();
        assert!(
            got == want,
            "{}: {cmd}: expected\n  {want:?}\ngot\n  {got:?}",
            c.who_am_i()
        );
    };
    let all = nicks(&clients);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let exactly = who_line("lobby", &refs);
    assert!(!exactly.contains(" more"));
    expect_line(&mut clients[0], "/who", &exactly);
    let new = server.join(&format!("L{LIST_CAP}"));
    for c in &mut clients {
        c.expect(&format!("* {} joined lobby", new.nick));
    }
    clients.push(new);
    let all = nicks(&clients);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let over = who_line("lobby", &refs);
    assert!(over.ends_with(" and 1 more"));
    expect_line(&mut clients[LIST_CAP], "/who", &over);

    // Rooms: client i (1..=100) moves to a room of its own; client 0 stays in lobby. Names in
    // both cases, so that byte order (upper case first) shows.
    let room = |i: usize| {
        if i % 2 == 0 {
            format!("Room{i:03}")
        } else {
            format!("room{i:03}")
        }
    };
    let mut rooms: Vec<(String, usize)> = vec![("lobby".into(), LIST_CAP + 1)];
    for i in 1..=LIST_CAP {
        let name = room(i);
        clients[i].send(&format!("/join {name}"));
        clients[i].expect(&format!("* you joined {name} (1 members)"));
        let left = format!("* {} left lobby", clients[i].nick);
        for j in (i + 1..=LIST_CAP).chain([0]) {
            clients[j].expect(&left);
        }
        rooms[0].1 -= 1;
        rooms.push((name, 1));
        if rooms.len() == LIST_CAP {
            let refs: Vec<(&str, usize)> = rooms.iter().map(|(r, n)| (r.as_str(), *n)).collect();
            let exactly = rooms_line(&refs);
            assert!(!exactly.contains(" more"));
            // Client 1 moved first: nothing reached it since.
            expect_line(&mut clients[1], "/rooms", &exactly);
        }
    }
    let refs: Vec<(&str, usize)> = rooms.iter().map(|(r, n)| (r.as_str(), *n)).collect();
    let over = rooms_line(&refs);
    assert!(over.ends_with(" and 1 more"));
    expect_line(&mut clients[1], "/rooms", &over);
    server.finish();
}

/// With the server stopped (SIGSTOP), a client sends `first\n`, then one byte as TCP urgent
/// data (`MSG_OOB`: a `\n`, so that it means nothing whether or not it is read inline), then
/// `second\n`; then the server goes on (SIGCONT). Both lines are handled: the room gets
/// `first` and `second` (alone: both renames are answered). A read stops short at the urgent
/// mark; a server that takes a short read for "nothing more to read" (edge-triggered
/// readiness without reading to `EWOULDBLOCK`) never sees `second`.
///
/// Breaks, if it fails: *Guarantees*, "every line a client sends is handled once", and "how
/// TCP cuts or joins the bytes never matters".
pub fn urgent_byte_loses_no_line(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    let mut b = t.concurrent_clients().then(|| server.join("B"));
    if let Some(b) = &mut b {
        a.expect(&format!("* {} joined lobby", b.nick));
    }
    let (first, second) = if b.is_some() {
        ("first", "second")
    } else {
        ("/nick first", "/nick second")
    };
    let sender = b.as_mut().unwrap_or(&mut a);
    sender.sync();
    server.pause();
    sender.send(first);
    sender.send_urgent(b'\n');
    sender.send(second);
    server.resume();
    match &mut b {
        Some(b) => {
            let nick = b.nick.clone();
            a.expect(&format!("<{nick}> first"));
            if let Err(e) = a.try_expect(&format!("<{nick}> second")) {
                panic!("{e} (the line after the urgent byte was lost)");
            }
            b.sync();
            a.sync();
        }
        None => {
            a.expect("* you are now first");
            if let Err(e) = a.try_expect("* you are now second") {
                panic!("{e} (the line after the urgent byte was lost)");
            }
            a.nick = "second".into();
            a.expect_who("lobby", &["second"]);
        }
    }
    server.finish();
}

/// How many connections the burst opens: more than a backlog of 128 (std's, mio's) or
/// 1024 holds, fewer than the 4096 promised.
const BURST: usize = 1500;

/// What a connect burst expects once the server runs again.
#[derive(Debug, Clone, Copy)]
enum Welcomes {
    /// Every connection is welcomed, except those beyond the stage's own hard limit
    /// (`Some(N)`), which are refused with `! server full`.
    All(Option<usize>),
    /// The first connection is welcomed (the others wait for a sequential server or a pool).
    First,
}

/// With the server stopped (SIGSTOP), `BURST` non-blocking connects: the kernel completes
/// every handshake into the listen queue within 2 s (had the backlog been too small, the
/// overflowing SYNs would be dropped and retried only a second or more later). Then the
/// server goes on, and `welcomes` says what each connection must get.
#[track_caller]
fn connect_burst(t: &Target, welcomes: Welcomes) {
    const HANDSHAKES_WITHIN: Duration = Duration::from_secs(2);
    /// Every welcome after SIGCONT. Not a measure of speed — the burst costs 1,500 accepts
    /// and, every arrival being announced to the whole lobby, 1.1 million `joined` notices
    /// (2.3 s for a debug build of `chat-epoll`, 14 to 20 s for one of `chat-tokio`, 0.5 to
    /// 1 s for release builds) — but a bound, so that the check ends. The backlog itself is
    /// proven by the handshakes, while the server is stopped.
    const WELCOMES_WITHIN: Duration = Duration::from_secs(60);
    let server = t.start(Options::default());
    let addr = server.addr();
    server.pause();
    let mut socks = Vec::with_capacity(BURST);
    for i in 0..BURST {
        let connect = || -> std::io::Result<Socket> {
            let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            sock.set_nonblocking(true)?;
            match sock.connect(&addr.into()) {
                Ok(()) => Ok(sock),
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(sock),
                Err(e) => Err(e),
            }
        };
        socks.push(connect().unwrap_or_else(|e| panic!("connection {i} of {BURST}: {e}")));
    }
    let started = Instant::now();
    let mut pending: Vec<usize> = (0..BURST).collect();
    while !pending.is_empty() {
        let left = HANDSHAKES_WITHIN.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|&i| libc::pollfd {
                fd: socks[i].as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
        // SAFETY: `fds` is a valid, writable array of `nfds` pollfd entries for the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            assert!(e.kind() == std::io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        let mut still = Vec::with_capacity(pending.len());
        for (fd, &i) in fds.iter().zip(&pending) {
            if fd.revents == 0 {
                still.push(i);
                continue;
            }
            match socks[i].take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => panic!(
                    "connection {i} of {BURST}, made while the server was stopped: {e} (the \
                     kernel should have queued it: the backlog is at least 4096)"
                ),
            }
        }
        pending = still;
    }
    if !pending.is_empty() {
        panic!(
            "while the server was stopped, only {} of {BURST} connects completed their \
             handshake within {HANDSHAKES_WITHIN:?}: its listen backlog holds fewer than \
             {BURST} (the specification promises at least 4096, so that a burst of connects \
             is not met with dropped SYNs)",
            BURST - pending.len()
        );
    }
    server.resume();
    let resumed = Instant::now();
    let deadline = resumed + WELCOMES_WITHIN;
    let (count, limit) = match welcomes {
        Welcomes::All(limit) => (BURST, limit.unwrap_or(BURST).min(BURST)),
        Welcomes::First => (1, 1),
    };
    let mut nicks = HashSet::new();
    let mut refused = 0;
    let mut conns = Vec::with_capacity(count);
    let queued = socks.split_off(count);
    for (i, sock) in socks.into_iter().enumerate() {
        if let Err(e) = sock.set_nonblocking(false) {
            panic!("connection {i}: {e}");
        }
        let mut c = Client::new(format!("burst {i}"), sock.into())
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let line = c
            .try_line_within(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| {
                panic!(
                    "{}: expected a welcome within {WELCOMES_WITHIN:?} of SIGCONT, got {e}",
                    c.who_am_i()
                )
            });
        if line == "! server full" && limit < count {
            refused += 1;
            c.expect_closed();
            continue;
        }
        let nick = crate::parse_welcome(&line).unwrap_or_else(|e| panic!("{}: {e}", c.who_am_i()));
        assert!(
            nicks.insert(nick.to_ascii_lowercase()),
            "{}: nick {nick} was given twice",
            c.who_am_i()
        );
        conns.push(c);
    }
    assert!(
        nicks.len() == limit && nicks.len() + refused == count,
        "of {count} connections, {} were welcomed and {refused} refused with `! server full`: \
         expected {limit} welcomed{}",
        nicks.len(),
        if limit < count {
            format!(" (the stage's own limit) and {} refused", count - limit)
        } else {
            String::new()
        }
    );
    eprintln!(
        "{} welcomed, {refused} refused, {:?} after SIGCONT",
        nicks.len(),
        resumed.elapsed()
    );
    // Kill the server before the clients close, or it would spend its time announcing 1,500
    // departures to a shrinking room.
    server.finish();
    drop((conns, queued));
}

/// 1,500 connects made at once while the server is stopped all complete their handshake
/// within 2 s (the kernel queues them: the backlog holds them), and after SIGCONT all are
/// welcomed, each with its own nick.
///
/// Breaks, if it fails: *The server process*, "it listens with a backlog of at least 4096, so
/// a burst of connects is not met with dropped SYNs", and unique `guestN` nicks.
pub fn connect_burst_all_welcomed(t: &Target) {
    connect_burst(t, Welcomes::All(None));
}

/// [`connect_burst_all_welcomed`] for a stage with a hard limit of its own on connections
/// (`select`: 1000): the handshakes all complete, then exactly `limit` connections are
/// welcomed and the others get `! server full` and are closed.
///
/// Breaks, if it fails: the backlog, as above, and "a stage with a lower hard limit says so
/// and enforces its own".
pub fn connect_burst_welcomed_up_to(t: &Target, limit: usize) {
    connect_burst(t, Welcomes::All(Some(limit)));
}

/// 1,500 connects made at once while the server is stopped all complete their handshake
/// within 2 s (the backlog holds them); after SIGCONT the first is welcomed (a stage that
/// serves one client, or N, at a time serves the rest later).
///
/// Breaks, if it fails: *The server process*, "it listens with a backlog of at least 4096".
pub fn connect_burst_queued(t: &Target) {
    connect_burst(t, Welcomes::First);
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_burst_is_between_the_usual_backlogs_and_the_promised_one() {
        const { assert!(super::BURST > 1024 && super::BURST < super::super::BACKLOG) };
    }
}
