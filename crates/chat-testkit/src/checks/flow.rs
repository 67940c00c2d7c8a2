//! Checks of flow control, the specification's *Flow control and slow consumers*: a server
//! reads one client far faster than others read what it owes them, and the rules decide who
//! waits (the sender) and who is cut (only a client that does not read, `SLOW_GRACE` after it
//! fell behind). Every check here sends the way a hostile or merely eager client does: whole
//! bursts in one write, pipelined commands, many senders at the same instant, a sender that
//! never stops. A server that passed only because clients sent gently fails them.
//!
//! What they assert: readers get every line, exactly once, in per-sender order, and are
//! never disconnected; a client that never reads is cut and announced `(slow consumer)`; the
//! server's memory stays within what the specification accounts for
//! ([`super::memory_bound`]). What they do not assert: how fast anything goes.
//!
//! Run through a stage: `cargo test -p chat-epoll --test conformance -- burst`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::{
    assert_memory_within, assert_no_failures, clip, joined, lobby, memory_bound, ruler,
    tiny_buffers_client, try_expect_while, Unset, DEFAULT_OUTBOX_BYTES, FLOW_TIMEOUT, HELP_LINES,
    MIN_OUTBOX_BYTES,
};
use crate::client::{Buffers, LINE_TIMEOUT};
use crate::{Client, Options, Rng, Target};

/// A nick of 24 characters, the longest: each one-byte line of its owner costs every
/// reader the most (`<` + 24 + `> ` + 1 + `\n`).
pub const LONG_NICK: &str = "burster-0123456789abcdef";

/// The seed of the burst sizes in [`small_outbox_paces_readers_cuts_non_reader`].
const BURST_SEED: u64 = 0x00B0_7575_0000_0010;

/// Reads `count` lines on `c` that must be exactly `want(i)`, for `i` in `0..count`; the
/// failure names the line and what came instead.
fn expect_each(c: &mut Client, count: usize, want: impl Fn(usize) -> String) -> Result<(), String> {
    for i in 0..count {
        let expected = want(i);
        match c.try_line() {
            Ok(line) if line == expected => {}
            Ok(line) => {
                return Err(format!(
                    "{}: line {i} of {count}: expected {:?}, got {:?}",
                    c.who_am_i(),
                    clip(&expected, 60),
                    clip(&line, 60)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{}: line {i} of {count}: expected {:?}, got {e} (a client that reads is \
                     never cut, however much others send at once)",
                    c.who_am_i(),
                    clip(&expected, 60)
                ))
            }
        }
    }
    Ok(())
}

/// The specification's own example: a member with a 24-character nick sends 64 KiB of
/// one-byte lines (`x\n` × 32,768) in one write, which owes each other member about 950 KB,
/// far more than `--outbox-bytes` (262,144 by default). Three members that keep reading get
/// every line, in order, and none is disconnected; the sender is not cut either. The
/// server's peak resident memory grows by at most 3 × 2·B (what the three readers may be
/// owed, notices included) + one 64 KiB read + one line + 1 MiB of allocator slack, about
/// 2.6 MiB: a server that queued the whole burst for the three would need over 5 MB.
///
/// Breaks, if it fails: "a client that reads is never cut, however much others send at once
/// and however TCP cuts and merges it", and rule 2, "input waits for room ... never into
/// memory".
pub fn burst_reaches_every_reader(t: &Target) {
    const LINES: usize = 32_768;
    const READERS: usize = 3;
    let mut server = t.start(Options::default());
    // The room goes at the pace of its slowest reader (one of these threads, on a busy
    // machine): the others may see it hold them up for up to SLOW_GRACE at a time.
    server.set_line_timeout(FLOW_TIMEOUT);
    let mut readers = lobby(&server, READERS, "reader");
    // A send buffer large enough that the kernel takes the 64 KiB in one write(2).
    let mut sender = server.connect_with(
        "sender",
        Buffers {
            recv: None,
            send: Some(256 * 1024),
        },
    );
    sender.expect_welcome();
    let old = sender.nick.clone();
    for r in &mut readers {
        r.expect(&format!("* {old} joined lobby"));
    }
    sender.rename(LONG_NICK);
    for r in &mut readers {
        r.expect(&format!("* {old} is now {LONG_NICK}"));
        r.sync();
    }
    sender.sync();
    let before = server.memory();
    let burst = b"x\n".repeat(LINES);
    let want = format!("<{LONG_NICK}> x");
    let failures = std::thread::scope(|s| {
        let handles: Vec<_> = readers
            .iter_mut()
            .map(|r| s.spawn(|| expect_each(r, LINES, |_| want.clone())))
            .collect();
        let mut failures = Vec::new();
        if let Err(e) = sender.try_send_raw(&burst) {
            failures.push(e);
        }
        failures.extend(handles.into_iter().filter_map(|h| joined(h).err()));
        failures
    });
    assert_no_failures(
        "a 64 KiB burst of one-byte lines from a 24-character nick",
        failures,
    );
    // The sender is still here and was sent nothing (no echo, no cut): its /who comes next.
    sender.sync();
    for r in &mut readers {
        r.sync();
    }
    assert_memory_within(
        &server,
        before,
        memory_bound(READERS, DEFAULT_OUTBOX_BYTES),
        "after a 64 KiB burst owed 3 readers 950 KB each",
        "3 readers × 2·B owed + one 64 KiB read + one line + 1 MiB slack",
    );
    server.finish();
}

/// The lines of burst number `b`, drawn from `rng`: 1 to 8 lines of `TEXT` bytes.
fn burst_lines(rng: &mut Rng, b: usize) -> Vec<String> {
    /// Bytes of text per line.
    const TEXT: usize = 900;
    (0..rng.between(1, 8))
        .map(|i| {
            let head = format!("burst {b} line {i} ");
            format!("{head}{}", ruler(TEXT - head.len()))
        })
        .collect()
}

/// With `--outbox-bytes 8192`, the smallest bound, a sender writes bursts of 1 to 8 lines of
/// 900 bytes (at most about 7.7 KB owed per burst), each burst in one write and one right
/// after the other (so TCP merges several into one read of the server: more than the bound
/// at once), until a member that never reads (1 KiB receive buffer) has been cut, and 50
/// bursts more. A member that keeps reading gets every line in order and is never dropped;
/// the one that never reads is cut, and the room sees exactly once
/// `* NICK left lobby (slow consumer)`. While it is behind the sender waits: the reader may
/// see a pause of about `SLOW_GRACE`, never a loss.
///
/// Breaks, if it fails: rules 2 to 4 (input waits for room; a client that does not read is
/// cut within `SLOW_GRACE`; a client that reads is never cut).
///
/// In a cluster, all three are on one node (`one_node`): flow control is each node's, and a
/// sender on another node than its readers is not paced by them. It sends as fast as its own
/// node takes its lines, the broker buffers what the readers' node has not read, and past
/// Redis's `client-output-buffer-limit pubsub` it disconnects that node, which loses what was
/// buffered: the specification's "what a cluster does not promise".
pub fn small_outbox_paces_readers_cuts_non_reader(t: &Target) {
    /// Bursts at most if the non-reader is never cut (about 40 MB: the kernel takes at most
    /// a few MB into a socket whose peer does not read).
    const MAX_BURSTS: usize = 10_000;
    /// Bursts still sent after the cut: delivery goes on normally.
    const AFTER_CUT: usize = 50;
    let mut server = t.start(Options {
        one_node: true,
        outbox_bytes: Some(MIN_OUTBOX_BYTES),
        ..Options::default()
    });
    server.set_line_timeout(FLOW_TIMEOUT);
    let mut v = lobby(&server, 2, "");
    let (r, s) = v.split_at_mut(1);
    let (reader, sender) = (&mut r[0], &mut s[0]);
    reader.label = "reader".into();
    sender.label = "sender".into();
    let mut sleeper = tiny_buffers_client(&server, "sleeper");
    sleeper.expect_welcome();
    let sleeper_socket = server.socket_of(&sleeper);
    let joined_line = format!("* {} joined lobby", sleeper.nick);
    reader.expect(&joined_line);
    sender.expect(&joined_line);
    let cut = format!("* {} left lobby (slow consumer)", sleeper.nick);
    let prefix = format!("<{}> ", sender.nick);
    let done = format!("{prefix}done");

    let cut_seen = AtomicBool::new(false);
    let writing = AtomicBool::new(true);
    let mut w = sender.writer();
    let failures = std::thread::scope(|s| {
        let writer = s.spawn(|| -> Result<usize, String> {
            let _done = Unset(&writing);
            let mut rng = Rng::new(BURST_SEED);
            let mut after = 0;
            for b in 0..MAX_BURSTS {
                if cut_seen.load(Ordering::SeqCst) {
                    after += 1;
                    if after > AFTER_CUT {
                        w.write_all(b"done\n")
                            .map_err(|e| format!("sender: writing `done`: {e}"))?;
                        return Ok(b);
                    }
                }
                let mut burst = Vec::new();
                for line in burst_lines(&mut rng, b) {
                    burst.extend_from_slice(line.as_bytes());
                    burst.push(b'\n');
                }
                w.write_all(&burst)
                    .map_err(|e| format!("sender: writing burst {b}: {e}"))?;
            }
            Err(format!(
                "sender: wrote {MAX_BURSTS} bursts and the member that never reads was not cut"
            ))
        });
        // The sender's own reader: the only line for it is the cut.
        let sender_reader = s.spawn(|| try_expect_while(sender, &cut, &writing));
        let mut rng = Rng::new(BURST_SEED);
        let mut expected = std::collections::VecDeque::new();
        let (mut burst, mut lines) = (0, 0);
        let read = loop {
            if expected.is_empty() {
                expected.extend(burst_lines(&mut rng, burst));
                burst += 1;
            }
            let want = &expected[0];
            match reader.try_line() {
                Ok(line) if line == cut && !cut_seen.load(Ordering::SeqCst) => {
                    cut_seen.store(true, Ordering::SeqCst);
                }
                Ok(line) if line == done && cut_seen.load(Ordering::SeqCst) => break Ok(()),
                Ok(line) if line.strip_prefix(&prefix) == Some(want.as_str()) => {
                    expected.pop_front();
                    lines += 1;
                }
                Ok(line) => {
                    break Err(format!(
                        "reader: after {lines} lines, expected {:?}{}, got {:?}",
                        clip(want, 40),
                        if cut_seen.load(Ordering::SeqCst) {
                            ""
                        } else {
                            " or the cut"
                        },
                        clip(&line, 60)
                    ))
                }
                Err(e) => {
                    break Err(format!(
                        "reader: after {lines} lines, expected {:?}, got {e} (it reads all the \
                         time: it must never be dropped)",
                        clip(want, 40)
                    ))
                }
            }
        };
        if read.is_err() {
            cut_seen.store(true, Ordering::SeqCst); // let the writer stop
        }
        let mut failures = Vec::new();
        for result in [read, joined(sender_reader), joined(writer).map(|_| ())] {
            if let Err(e) = result {
                failures.push(e);
            }
        }
        failures
    });
    assert_no_failures("bursts at --outbox-bytes 8192", failures);
    let deadline = Instant::now() + LINE_TIMEOUT;
    while server.holds(&sleeper_socket) {
        assert!(
            Instant::now() < deadline,
            "{}: announced as a slow consumer, yet the server still holds its socket \
             {sleeper_socket} {LINE_TIMEOUT:?} later",
            sleeper.who_am_i()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (nr, ns) = (reader.nick.clone(), sender.nick.clone());
    reader.expect_who("lobby", &[&nr, &ns]);
    sender.sync();
    server.finish();
}

/// One write of 400 `/help` and then `/nick done`, from a client that keeps reading, at the
/// smallest `--outbox-bytes` (8192) and at the default: every reply arrives (400 × 9 help
/// lines, each group the same nine lines, the first `* commands:`), then
/// `* you are now done`, and the client is still connected (`/who` answered).
///
/// Breaks, if it fails: rule 6, "pipelining 400 `/help` costs the sender nothing but time,
/// as long as it reads", and exactly once, in order.
pub fn pipelined_help_all_answered(t: &Target) {
    const HELPS: usize = 400;
    for outbox in [Some(MIN_OUTBOX_BYTES), None] {
        let server = t.start(Options {
            outbox_bytes: outbox,
            ..Options::default()
        });
        let mut a = server.join("A");
        let mut input = b"/help\n".repeat(HELPS);
        input.extend_from_slice(b"/nick done\n");
        a.send_raw(&input);
        let bound = outbox.unwrap_or(DEFAULT_OUTBOX_BYTES);
        let mut first: Option<Vec<String>> = None;
        for h in 0..HELPS {
            let mut group = Vec::with_capacity(HELP_LINES);
            for l in 0..HELP_LINES {
                match a.try_line() {
                    Ok(line) => group.push(line),
                    Err(e) => panic!(
                        "{}: (--outbox-bytes {bound}) reply {h} of {HELPS} to pipelined /help, \
                         line {l} of {HELP_LINES}: got {e} (a client that reads is never cut \
                         for its own replies)",
                        a.who_am_i()
                    ),
                }
            }
            let well_formed =
                group[0] == "* commands:" && group.iter().all(|l| l.starts_with("* "));
            assert!(
                well_formed && first.as_ref().is_none_or(|f| *f == group),
                "{}: (--outbox-bytes {bound}) reply {h} of {HELPS} to pipelined /help: \
                 expected the nine lines of /help{}, got {group:?}",
                a.who_am_i(),
                first
                    .as_ref()
                    .map_or(String::new(), |f| format!(" ({f:?})"))
            );
            first.get_or_insert(group);
        }
        a.expect("* you are now done");
        a.nick = "done".into();
        a.expect_who("lobby", &["done"]);
        server.finish();
    }
}

/// 20 members of one room each write 64 KiB of 64-byte lines at the same moment (released
/// by a barrier), and all keep reading: every member gets each other member's 1,024 lines
/// exactly once, in the order sent, and nothing else.
///
/// Breaks, if it fails: *Guarantees*, exactly once and per-sender order, under flow control
/// with many senders waiting at once (rule 3: "in the order in which they began to wait").
pub fn many_senders_at_once_lose_nothing(t: &Target) {
    const SENDERS: usize = 20;
    const LINE: usize = 64;
    const PER_SENDER: usize = 64 * 1024 / LINE;
    let mut server = t.start(Options {
        workers: Some(SENDERS + 8),
        ..Options::default()
    });
    // The room goes at the pace of its slowest reader, and here the readers are 20 threads
    // of this test that compete with the server for the machine's cores: on a loaded 2-core
    // machine (three suites and a busy loop at once) pauses of 3.4 s were seen between two
    // lines. A pause is not a loss: the bound is for a stall, not for speed.
    server.set_line_timeout(2 * FLOW_TIMEOUT);
    let mut clients = lobby(&server, SENDERS, "s");
    let index: HashMap<String, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.nick.clone(), i))
        .collect();
    let barrier = Barrier::new(SENDERS);
    let failures = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (me, c) in clients.iter_mut().enumerate() {
            let mut w = c.writer();
            let barrier = &barrier;
            handles.push(s.spawn(move || -> Result<(), String> {
                let mut payload = Vec::with_capacity(PER_SENDER * LINE);
                for i in 0..PER_SENDER {
                    let head = format!("{me:02} {i:05} ");
                    payload.extend_from_slice(head.as_bytes());
                    payload.resize(payload.len() + LINE - 1 - head.len(), b'x');
                    payload.push(b'\n');
                }
                barrier.wait();
                w.write_all(&payload)
                    .map_err(|e| format!("sender {me}: writing its 64 KiB: {e}"))
            }));
            let index = &index;
            handles.push(s.spawn(move || -> Result<(), String> {
                let mut next = [0usize; SENDERS];
                for _ in 0..(SENDERS - 1) * PER_SENDER {
                    let line = c.try_line().map_err(|e| {
                        format!(
                            "{}: expected more lines (so far per sender: {next:?}), got {e}",
                            c.who_am_i()
                        )
                    })?;
                    let parsed = line
                        .strip_prefix('<')
                        .and_then(|l| l.split_once("> "))
                        .and_then(|(nick, text)| Some((*index.get(nick)?, text)));
                    let Some((from, text)) = parsed else {
                        return Err(format!("{}: unexpected line {line:?}", c.who_am_i()));
                    };
                    let mut words = text.split(' ');
                    let (k, i) = (words.next(), words.next());
                    let ok = from != me
                        && k.and_then(|k| k.parse::<usize>().ok()) == Some(from)
                        && i.and_then(|i| i.parse::<usize>().ok()) == Some(next[from]);
                    if !ok {
                        return Err(format!(
                            "{}: from sender {from} expected line {} next, got {line:?} (lost, \
                             duplicated, reordered or echoed)",
                            c.who_am_i(),
                            next[from]
                        ));
                    }
                    next[from] += 1;
                }
                Ok(())
            }));
        }
        handles
            .into_iter()
            .filter_map(|h| joined(h).err())
            .collect::<Vec<_>>()
    });
    assert_no_failures("20 senders of 64 KiB at once", failures);
    for c in &mut clients {
        c.sync();
    }
    server.finish();
}

/// A sender that writes more than any bound, without end (for 3 s here), into a room with a
/// member that reads: meanwhile a client in another room gets every `/who` answered within
/// the usual bound, the reading member keeps receiving (no pause of seconds) every line
/// exactly once, in order, and the server's peak memory grows by at most 2 recipients ×
/// 2·B + one read + one line + 1 MiB.
///
/// Breaks, if it fails: *Bad input hurts nobody else*, rule 2 ("turns that amplification into
/// waiting, never into memory"), and exactly once.
pub fn endless_sender_does_not_stop_the_server(t: &Target) {
    const FLOOD_FOR: Duration = Duration::from_secs(3);
    const TEXT: usize = 100;
    /// Lines per write of the flooder.
    const PER_WRITE: usize = 64 * 1024 / (TEXT + 1);
    let server = t.start(Options::default());
    let mut v = lobby(&server, 3, "");
    let [f, r, o] = &mut v[..] else {
        unreachable!("lobby returns 3 clients")
    };
    f.label = "flooder".into();
    r.label = "room reader".into();
    o.label = "other room".into();
    f.send("/join flood");
    f.expect("* you joined flood (1 members)");
    let left = format!("* {} left lobby", f.nick);
    r.expect(&left);
    o.expect(&left);
    r.send("/join flood");
    r.expect("* you joined flood (2 members)");
    f.expect(&format!("* {} joined flood", r.nick));
    o.expect(&format!("* {} left lobby", r.nick));
    let on = o.nick.clone();
    o.expect_who("lobby", &[&on]);
    let before = server.memory();
    let flooding = AtomicBool::new(true);
    let mut w = f.writer();
    let fnick = f.nick.clone();
    let (sent, received, answers) = std::thread::scope(|s| {
        let writer = s.spawn(|| -> Result<usize, String> {
            let start = Instant::now();
            let mut seq = 0;
            let result = loop {
                if start.elapsed() >= FLOOD_FOR {
                    break w
                        .write_all(b"done\n")
                        .map(|()| seq)
                        .map_err(|e| format!("flooder: sending `done`: {e}"));
                }
                let mut chunk = Vec::with_capacity(PER_WRITE * (TEXT + 1));
                for _ in 0..PER_WRITE {
                    let head = format!("{seq:09} ");
                    chunk.extend_from_slice(head.as_bytes());
                    chunk.resize(chunk.len() + TEXT - head.len(), b'f');
                    chunk.push(b'\n');
                    seq += 1;
                }
                if let Err(e) = w.write_all(&chunk) {
                    break Err(format!("flooder: writing after {seq} lines: {e}"));
                }
            };
            flooding.store(false, Ordering::SeqCst);
            result
        });
        let reader = s.spawn(|| -> Result<usize, String> {
            let mut next = 0usize;
            loop {
                let line = r.try_line().map_err(|e| {
                    format!(
                        "{}: after {next} lines of the flood, expected more, got {e} (a member \
                         that reads keeps receiving)",
                        r.who_am_i()
                    )
                })?;
                let Some(text) = line.strip_prefix(&format!("<{fnick}> ")) else {
                    return Err(format!("{}: unexpected line {line:?}", r.who_am_i()));
                };
                if text == "done" {
                    return Ok(next);
                }
                let seq = text.split(' ').next().and_then(|n| n.parse::<usize>().ok());
                if seq != Some(next) {
                    return Err(format!(
                        "{}: expected flood line {next}, got {:?} (lost, duplicated or \
                         reordered)",
                        r.who_am_i(),
                        clip(&line, 40)
                    ));
                }
                next += 1;
            }
        });
        // Meanwhile, in another room: `/who`, again and again, each answered in time.
        let mut answers = 0usize;
        let mut other = Ok(());
        while flooding.load(Ordering::SeqCst) {
            match o.try_who() {
                Ok((room, members)) if room == "lobby" && members == [on.clone()] => answers += 1,
                Ok(reply) => {
                    other = Err(format!("{}: /who answered {reply:?}", o.who_am_i()));
                    break;
                }
                Err(e) => {
                    other = Err(format!(
                        "{e} (after {answers} answers, while another room was flooded)"
                    ));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let results = (joined(writer), joined(reader), other);
        let mut failures = Vec::new();
        if let Err(e) = &results.0 {
            failures.push(e.clone());
        }
        if let Err(e) = &results.1 {
            failures.push(e.clone());
        }
        if let Err(e) = &results.2 {
            failures.push(e.clone());
        }
        assert_no_failures("an endless sender", failures);
        (
            results.0.unwrap_or_default(),
            results.1.unwrap_or_default(),
            answers,
        )
    });
    assert_eq!(
        received,
        sent,
        "{}: got {received} of the {sent} lines flooded into its room",
        r.who_am_i()
    );
    assert!(
        sent * (TEXT + 1) > 2 * DEFAULT_OUTBOX_BYTES && answers > 0,
        "in {FLOOD_FOR:?} the server took only {sent} lines of the flood and answered {answers} \
         /who: it must keep serving"
    );
    f.sync();
    r.sync();
    o.sync();
    assert_memory_within(
        &server,
        before,
        memory_bound(2, DEFAULT_OUTBOX_BYTES),
        &format!("while one client flooded {} MB", (sent * (TEXT + 1)) >> 20),
        "2 recipients × 2·B + one 64 KiB read + one line + 1 MiB slack",
    );
    server.finish();
}
