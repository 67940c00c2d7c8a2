//! Checks of *Closing* and of shutdown: how a connection ends. The server writes everything
//! a closing client is owed, then ends its side (a FIN), then reads and ignores what the
//! client still sends until the client ends its side — so the client gets every owed line
//! and then the end of the stream, never a reset in place of them. A reset is what the
//! kernel sends when a socket is closed with input unread, so these checks talk after
//! `/quit`, half-close at once, churn connections, and stop the server with hard clients.
//!
//! "End of stream" is asserted strictly here: a read returning 0, not `ECONNRESET`
//! ([`crate::Client::expect_eof`]).
//!
//! Run through a stage: `cargo test -p chat-epoll --test conformance -- quit`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::stress::{assert_clean_exit, EXIT_WITHIN};
use super::{
    assert_no_failures, clip, joined, lobby, small_window_client, HELP_LINES, SHUTDOWN_GRACE,
};
use crate::client::{parse_who, who_line, ReadError, LINE_TIMEOUT};
use crate::{Client, Options, Target};

/// The padding of a 1 KB room line (with the nick and the sequence number).
const PAD: usize = 990;

/// A client with a 16 KiB receive buffer is owed lines it has not read — 200 room lines of
/// 1 KB from another member (or, where one client is served at a time, the replies to 100
/// pipelined `/help`) — sends `/quit` and, 50 ms later, one more line. It must receive every
/// owed line, `* bye`, then the end of the stream: not a reset. (A server that closes its
/// socket with that last line unread makes its kernel send a reset, which destroys what the
/// client had not read yet.) The room sees `* NICK left lobby`, and never the line sent after
/// `/quit`.
///
/// Breaks, if it fails: *Closing*, "the client receives every line it was owed, then the end
/// of the stream, and never a reset in place of owed lines, even if it goes on talking after
/// `/quit`", and "anything a client sends after `/quit` is read and ignored".
pub fn talking_after_quit_still_gets_everything(t: &Target) {
    const MESSAGES: usize = 200;
    const HELPS: usize = 100;
    let server = t.start(Options::default());
    let mut q = small_window_client(&server, "quitter");
    q.expect_welcome();
    let mut sender = None;
    let mut expected = Vec::new();
    if t.concurrent_clients() {
        let mut s = server.join("sender");
        expected.push(format!("* {} joined lobby", s.nick));
        let pad = "x".repeat(PAD);
        for i in 0..MESSAGES {
            let text = format!("{i} {pad}");
            s.send(&text);
            expected.push(format!("<{}> {text}", s.nick));
        }
        // All handled, so all owed to the quitter, which has read none of it.
        s.sync();
        sender = Some(s);
    } else {
        q.send_raw(&b"/help\n".repeat(HELPS));
    }
    q.send("/quit");
    std::thread::sleep(Duration::from_millis(50));
    if let Err(e) = q.try_send("and one more line, after /quit") {
        panic!("{e} (what a client sends after /quit is read and ignored)");
    }
    if expected.is_empty() {
        for h in 0..HELPS * HELP_LINES {
            match q.try_line() {
                Ok(line) if h % HELP_LINES != 0 || line == "* commands:" => {}
                Ok(line) => panic!(
                    "{}: after /quit, line {h} of {} owed: expected `* commands:`, got {line:?}",
                    q.who_am_i(),
                    HELPS * HELP_LINES
                ),
                Err(e) => panic!(
                    "{}: after /quit, line {h} of {} owed (replies to /help): got {e}",
                    q.who_am_i(),
                    HELPS * HELP_LINES
                ),
            }
        }
    }
    for (i, want) in expected.iter().enumerate() {
        match q.try_line() {
            Ok(got) if got == *want => {}
            Ok(got) => panic!(
                "{}: after /quit, line {i} of {} owed: expected {:?}, got {:?}",
                q.who_am_i(),
                expected.len(),
                clip(want, 40),
                clip(&got, 40)
            ),
            Err(e) => panic!(
                "{}: after /quit, line {i} of {} owed: expected {:?}, got {e} (everything owed \
                 comes before the end of the stream, even if the client goes on talking)",
                q.who_am_i(),
                expected.len(),
                clip(want, 40)
            ),
        }
    }
    q.expect("* bye");
    q.expect_eof();
    if let Some(s) = &mut sender {
        s.expect(&format!("* {} left lobby", q.nick));
        s.sync();
    }
    server.finish();
}

/// A client sends one line and at once ends its sending side (`shutdown(SHUT_WR)`), then
/// keeps reading: for `/who`, `/nick NAME` and `/quit REASON` it gets the reply, then the end
/// of the stream (not a reset); 20 times each, so that a race between the line and the end of
/// the stream would show. Then 400 pipelined `/help` and a `/who` before the end of the
/// stream, more than the server can answer at once: all 3,600 lines, the `/who`, then the
/// end of the stream. Where clients are served at once, a watcher in lobby sees each one
/// join, rename, and leave (`* NICK left lobby`, with `(REASON)` after a `/quit REASON`).
///
/// Breaks, if it fails: *Closing*, "ending the stream is a normal goodbye ... every line the
/// client sent before it is handled, replies included, and written before the server closes".
pub fn half_close_gets_reply_then_eof(t: &Target) {
    const ROUNDS: usize = 20;
    /// Pipelined `/help` of the last round: about 290 KB of replies, more than the default
    /// `--outbox-bytes`.
    const HELPS: usize = 400;
    let server = t.start(Options::default());
    let mut watcher = t.concurrent_clients().then(|| server.join("watcher"));
    for round in 0..ROUNDS {
        for kind in 0..3 {
            let mut c = server.connect(&format!("half-closer {round}.{kind}"));
            let nick = c.expect_welcome();
            let mut members = vec![nick.clone()];
            if let Some(w) = &mut watcher {
                w.expect(&format!("* {nick} joined lobby"));
                members.push(w.nick.clone());
            }
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            let renamed = format!("hc{round}");
            let (line, reply, left) = match kind {
                0 => (
                    "/who".to_string(),
                    who_line("lobby", &members),
                    format!("* {nick} left lobby"),
                ),
                1 => (
                    format!("/nick {renamed}"),
                    format!("* you are now {renamed}"),
                    format!("* {renamed} left lobby"),
                ),
                _ => (
                    "/quit half-closed".to_string(),
                    "* bye".to_string(),
                    format!("* {nick} left lobby (half-closed)"),
                ),
            };
            c.send(&line);
            c.shutdown_write();
            if let Err(e) = c.try_expect(&reply) {
                panic!("{e} (it sent {line:?} and ended its stream: the reply is still owed)");
            }
            if let Err(e) = c.try_expect_eof() {
                panic!("{e} (after the reply to {line:?} and its own end of stream)");
            }
            if let Some(w) = &mut watcher {
                if kind == 1 {
                    w.expect(&format!("* {nick} is now {renamed}"));
                }
                w.expect(&left);
            }
        }
    }
    // Once more with more input than the server can answer at once: 400 pipelined `/help`
    // (their replies owe the client more than `--outbox-bytes`, so its input must wait for
    // it to read), `/who`, and the end of the stream right behind them.
    let mut c = server.connect("half-closer, pipelined");
    let nick = c.expect_welcome();
    let mut members = vec![nick.clone()];
    if let Some(w) = &mut watcher {
        w.expect(&format!("* {nick} joined lobby"));
        members.push(w.nick.clone());
    }
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut input = b"/help\n".repeat(HELPS);
    input.extend_from_slice(b"/who\n");
    c.send_raw(&input);
    c.shutdown_write();
    for i in 0..HELPS * HELP_LINES {
        match c.try_line() {
            Ok(line) if i % HELP_LINES != 0 || line == "* commands:" => {}
            Ok(line) => panic!(
                "{}: reply line {i} of {} to 400 `/help` sent before its end of stream: \
                 expected `* commands:`, got {line:?}",
                c.who_am_i(),
                HELPS * HELP_LINES
            ),
            Err(e) => panic!(
                "{}: reply line {i} of {} to 400 `/help` sent before its end of stream: got {e} \
                 (every line sent before the end of the stream is handled, replies included)",
                c.who_am_i(),
                HELPS * HELP_LINES
            ),
        }
    }
    c.expect(&who_line("lobby", &members));
    c.expect_eof();
    if let Some(w) = &mut watcher {
        w.expect(&format!("* {nick} left lobby"));
        let me = w.nick.clone();
        w.expect_who("lobby", &[&me]);
    }
    server.finish();
}

/// Counts a churning thread as finished when dropped, whatever happened to it.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Reads until `wanted` (skipping the arrivals and departures of others), then expects the
/// end of the stream.
fn until_then_eof(c: &mut Client, wanted: Option<&str>) -> Result<(), String> {
    loop {
        match c.try_line() {
            Ok(line) if Some(line.as_str()) == wanted => return c.try_expect_eof(),
            Ok(line) if line.ends_with(" joined lobby") || line.ends_with(" left lobby") => {}
            Ok(line) => {
                return Err(format!(
                    "{}: expected {wanted:?}, got {line:?}",
                    c.who_am_i()
                ))
            }
            Err(ReadError::Closed {
                partial,
                reset: None,
            }) if wanted.is_none() && partial.is_empty() => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "{}: expected {}, got {e}",
                    c.who_am_i(),
                    wanted.map_or("the end of the stream".to_string(), |w| format!("{w:?}"))
                ))
            }
        }
    }
}

/// One watcher in lobby while 8 threads each connect and close 60 times (closing by a
/// plain close, by `/quit`, or by ending the stream): the watcher never sees a nick join
/// while it is present, or leave while it is absent; every `/who` it sends, again and again
/// meanwhile, lists exactly the members its notices say are there; and at the end everybody
/// has left.
///
/// Breaks, if it fails: *Guarantees*, "notices in causal order: a room never sees a nick join
/// before it has seen that nick's previous holder leave ...; `/who` and `/rooms` agree with
/// the notices a member has received before the reply".
pub fn churn_keeps_notices_in_causal_order(t: &Target) {
    const THREADS: usize = 8;
    const CYCLES: usize = 60;
    let server = t.start(Options {
        workers: Some(THREADS + 8),
        ..Options::default()
    });
    let mut watcher = server.join("watcher");
    let me = watcher.nick.clone();
    let finished = AtomicUsize::new(0);
    let addr = server.addr();
    let failures = std::thread::scope(|s| {
        let mut churners = Vec::new();
        for th in 0..THREADS {
            let finished = &finished;
            churners.push(s.spawn(move || -> Result<(), String> {
                let _done = Finished(finished);
                for i in 0..CYCLES {
                    let mut c = Client::connect(format!("churner {th}.{i}"), addr);
                    c.try_welcome()?;
                    match (th + i) % 3 {
                        0 => drop(c),
                        1 => {
                            c.try_send("/quit")?;
                            until_then_eof(&mut c, Some("* bye"))?;
                        }
                        _ => {
                            c.writer()
                                .shutdown(std::net::Shutdown::Write)
                                .map_err(|e| format!("{}: shutdown: {e}", c.who_am_i()))?;
                            until_then_eof(&mut c, None)?;
                        }
                    }
                }
                Ok(())
            }));
        }
        // The watcher: lowercased nick -> nick as shown, for everybody its notices say is here.
        let mut present: HashMap<String, String> = HashMap::new();
        let mut whos = 0usize;
        let mut deadline: Option<Instant> = None;
        let watched = loop {
            let all_done = finished.load(Ordering::SeqCst) == THREADS;
            if all_done && deadline.is_none() {
                deadline = Some(Instant::now() + LINE_TIMEOUT);
            }
            if let Err(e) = watcher.try_send("/who") {
                break Err(e);
            }
            let reply = loop {
                let line = match watcher.try_line() {
                    Ok(line) => line,
                    Err(e) => break Err(format!("watcher: expected notices or /who, got {e}")),
                };
                if line.starts_with("* members of ") {
                    break parse_who(&line).map_err(|e| format!("watcher: {e}"));
                }
                if let Some(nick) = line
                    .strip_prefix("* ")
                    .and_then(|l| l.strip_suffix(" joined lobby"))
                {
                    if let Some(old) = present.insert(nick.to_ascii_lowercase(), nick.into()) {
                        break Err(format!(
                            "watcher: {line:?} while {old} was present (no `left` notice \
                             came for it)"
                        ));
                    }
                } else if let Some(nick) = line
                    .strip_prefix("* ")
                    .and_then(|l| l.strip_suffix(" left lobby"))
                {
                    if present.remove(&nick.to_ascii_lowercase()).is_none() {
                        break Err(format!("watcher: {line:?} for a nick that was not present"));
                    }
                } else {
                    break Err(format!(
                        "watcher: unexpected line {line:?} (only arrivals and departures, \
                         without a reason, are expected)"
                    ));
                }
            };
            let (room, members) = match reply {
                Ok(reply) => reply,
                Err(e) => break Err(e),
            };
            whos += 1;
            let mut listed: Vec<String> = members.iter().map(|n| n.to_ascii_lowercase()).collect();
            listed.sort();
            let mut known: Vec<String> = present.keys().cloned().collect();
            known.push(me.to_ascii_lowercase());
            known.sort();
            if room != "lobby" || listed != known {
                break Err(format!(
                    "watcher: /who number {whos} listed {members:?} in {room}, but the notices \
                     before it say {known:?}"
                ));
            }
            if all_done && present.is_empty() {
                break Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                break Err(format!(
                    "watcher: all churners are gone, yet {LINE_TIMEOUT:?} later the room \
                     still has {:?}",
                    present.values().collect::<Vec<_>>()
                ));
            }
        };
        let mut failures: Vec<String> = churners
            .into_iter()
            .filter_map(|h| joined(h).err())
            .collect();
        if let Err(e) = watched {
            failures.insert(0, e);
        }
        failures
    });
    assert_no_failures("churn in lobby", failures);
    watcher.expect_who("lobby", &[&me]);
    server.finish();
}

/// SIGTERM while the clients make it hard, with `--outbox-bytes 16777216`: one is owed about
/// 6 MB it has not read yet (a 16 KiB receive buffer) and reads only after the signal; one
/// has sent `abc` without a `\n` (and is owed as much); one floods a room of its own and
/// never stops; one is idle.
/// Each gets everything it was owed, then `* server shutting down`, then the end of the
/// stream (not a reset); the unfinished `abc` reaches nobody; and the process exits with
/// status 0 within 5 s of the signal (the flooder never ends its stream: the server must
/// give up on it after `SHUTDOWN_GRACE`).
///
/// Breaks, if it fails: *The server process*, "it stops accepting, queues
/// `* server shutting down` for every client after what it is already owed, and closes
/// every client as under *Closing*, all within `SHUTDOWN_GRACE`; then it exits with status 0".
pub fn sigterm_with_hard_clients(t: &Target) {
    /// About 6 MB owed to the late reader (and to the mid-line client): more than the
    /// kernel takes into the socket of a client with a 16 KiB window that does not read
    /// (about 3.8 MB here), so the server still holds some of it when the signal comes; less
    /// than a blocking stage's send buffer holds at a 16 MiB request (2 ×
    /// `net.core.wmem_max`, about 7.6 MB of data here: 8 MB would make the late reader a
    /// slow consumer there before the signal).
    const MESSAGES: usize = 6_000;
    const FLOOD_LINE: usize = 100;
    /// How much the flooder has sent before the signal.
    const FLOODED_FIRST: usize = 1 << 20;
    // In a cluster, one node is stopped with all the clients on it: see
    // `sigterm_shuts_down_cleanly`.
    let mut server = t.start(Options {
        outbox_bytes: Some(16 << 20),
        one_node: true,
        ..Options::default()
    });
    let mut late = small_window_client(&server, "late reader");
    late.expect_welcome();
    let mut v = lobby(&server, 3, "");
    let [s, m, f] = &mut v[..] else {
        unreachable!("lobby returns 3 clients")
    };
    s.label = "sender".into();
    m.label = "mid-line".into();
    f.label = "flooder".into();
    let mut owed: Vec<String> = [&*s, &*m, &*f]
        .iter()
        .map(|c| format!("* {} joined lobby", c.nick))
        .collect();
    f.send("/join flood");
    f.expect("* you joined flood (1 members)");
    let left = format!("* {} left lobby", f.nick);
    owed.push(left.clone());
    s.expect(&left);
    m.expect(&left);
    m.send_raw(b"abc");
    let pad = "x".repeat(PAD);
    // The mid-line client is owed the messages too (it does not read before the signal).
    let mut mid_owed = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let text = format!("{i} {pad}");
        s.send(&text);
        mid_owed.push(format!("<{}> {text}", s.nick));
    }
    owed.extend(mid_owed.iter().cloned());
    s.sync(); // all handled: all owed to the late reader and to the mid-line client
    let flooded = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut w = f.writer();
    let signalled = std::thread::scope(|scope| {
        let flooder = scope.spawn(|| {
            let chunk = format!("{}\n", "f".repeat(FLOOD_LINE - 1)).repeat(640);
            while !stop.load(Ordering::SeqCst) {
                // Any error ends the flood: the server has closed it (or stopped reading it).
                if w.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                flooded.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        });
        let deadline = Instant::now() + LINE_TIMEOUT;
        while flooded.load(Ordering::SeqCst) < FLOODED_FIRST {
            assert!(
                Instant::now() < deadline,
                "{}: could flood only {} bytes in {LINE_TIMEOUT:?}",
                f.who_am_i(),
                flooded.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.terminate();
        let signalled = Instant::now();
        let mut failures = Vec::new();
        let readers = [
            scope.spawn(|| owed_then_goodbye(&mut late, &owed)),
            scope.spawn(|| owed_then_goodbye(s, &[])),
            scope.spawn(|| owed_then_goodbye(m, &mid_owed)),
            scope.spawn(|| owed_then_goodbye(f, &[])),
        ];
        for r in readers {
            if let Err(e) = joined(r) {
                failures.push(e);
            }
        }
        // The readers have closed their side (the server may now close them); the flooder
        // goes on until the server is gone.
        let exited = server.wait_exit(EXIT_WITHIN.saturating_sub(signalled.elapsed()));
        stop.store(true, Ordering::SeqCst);
        joined(flooder);
        if exited.is_none() {
            failures.push(format!(
                "the server still runs {:?} after SIGTERM (SHUTDOWN_GRACE is \
                 {SHUTDOWN_GRACE:?}, for all clients together)",
                signalled.elapsed()
            ));
        }
        assert_no_failures("SIGTERM with hard clients", failures);
        signalled
    });
    assert_clean_exit(&mut server, signalled);
}

/// After SIGTERM: every line `c` is owed, in order, then `* server shutting down`, then the
/// end of the stream.
fn owed_then_goodbye(c: &mut Client, owed: &[String]) -> Result<(), String> {
    for (i, want) in owed.iter().enumerate() {
        match c.try_line() {
            Ok(got) if got == *want => {}
            Ok(got) => {
                return Err(format!(
                    "{}: after SIGTERM, owed line {i} of {}: expected {:?}, got {:?}",
                    c.who_am_i(),
                    owed.len(),
                    clip(want, 40),
                    clip(&got, 40)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{}: after SIGTERM, owed line {i} of {}: expected {:?}, got {e} (the \
                     server gives its clients SHUTDOWN_GRACE, {SHUTDOWN_GRACE:?}, to read what \
                     they are owed)",
                    c.who_am_i(),
                    owed.len(),
                    clip(want, 40)
                ))
            }
        }
    }
    c.try_expect("* server shutting down")?;
    c.try_expect_eof()
}
