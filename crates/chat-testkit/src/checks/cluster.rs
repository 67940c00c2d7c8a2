//! Checks only a cluster can fail: the specification's *A cluster of nodes*. Each starts a
//! private broker and the stage's nodes (`Mode::Cluster`; at least three), places its clients
//! on the nodes by hand ([`Server::join_on`]), and proves that every rule holds across nodes:
//! nicks and `guestN` unique in the whole cluster, `/msg`, `/who`, `/rooms` and the join count
//! seeing every node, each line once and in each sender's order; and what happens when a node
//! is killed, when the broker goes away and comes back, when one node is stopped.
//!
//! A check acts on a node only after a client has *seen* the effect it depends on (a notice,
//! a reply): that is all the specification promises across nodes, and all a client can know.
//!
//! Run through a cluster stage: `cargo test -p chat-cluster --test conformance -- cluster`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use super::{assert_no_failures, joined, SHUTDOWN_GRACE};
use crate::client::LINE_TIMEOUT;
use crate::{Client, Options, Server, Target};

/// How long a node may stay silent before the others declare it lost (`LEASE`).
pub const LEASE: Duration = Duration::from_secs(5);

/// How often a node says it is alive (`HEARTBEAT`).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Starts the cluster of a check; panics if the target is not one.
#[track_caller]
fn cluster(t: &Target) -> Server {
    let nodes = t
        .cluster_nodes()
        .expect("a cluster check needs `cluster = N`");
    assert!(
        nodes >= 3,
        "the cluster checks need 3 nodes or more, not {nodes}"
    );
    t.start(Options::default())
}

/// Sends `/join ROOM` and expects `* you joined ROOM (N members)`.
#[track_caller]
fn join(c: &mut Client, room: &str, members: usize) {
    c.send(&format!("/join {room}"));
    c.expect(&format!("* you joined {room} ({members} members)"));
}

/// Reads lines until `want` comes, within `within`, skipping those `skip` accepts; the lines
/// skipped, or the failure.
fn until(
    c: &mut Client,
    want: &str,
    within: Duration,
    skip: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + within;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.try_line_within(left.max(Duration::from_millis(1))) {
            Ok(line) if line == want => return Ok(skipped),
            Ok(line) if skip(&line) => skipped.push(line),
            Ok(line) => {
                return Err(format!(
                    "{}: waiting for {want:?}, got {line:?} (after {skipped:?})",
                    c.who_am_i()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{}: waiting for {want:?} within {within:?}, got {e} (after {skipped:?})",
                    c.who_am_i()
                ))
            }
        }
    }
}

/// Clients on nodes 0, 1 and 2, in that order, each seen arriving by those before it.
#[track_caller]
fn one_per_node(server: &Server, label: &str) -> Vec<Client> {
    let mut v: Vec<Client> = Vec::new();
    for node in 0..3 {
        let new = server.join_on(node, &format!("{label}{node}"));
        for old in &mut v {
            old.expect(&format!("* {} joined lobby", new.nick));
        }
        v.push(new);
    }
    v
}

/// A nick held by a member of one node is taken on every other, in any case; once its holder
/// lets it go, a member of another node can take it, and a third node's room sees the rename
/// before the new holder's arrival under it.
///
/// Breaks, if it fails: "nicks ... are unique across the cluster, regardless of case", and
/// "a room never sees a nick join before it has seen that nick's previous holder ... be
/// renamed, wherever each was".
pub fn cluster_nick_taken_on_another_node(t: &Target) {
    let server = cluster(t);
    let mut v = one_per_node(&server, "N");
    let old = v[0].nick.clone();
    v[0].rename("alice");
    for c in &mut v[1..] {
        c.expect(&format!("* {old} is now alice"));
    }
    for taken in ["alice", "ALICE", "Alice"] {
        v[1].send(&format!("/nick {taken}"));
        v[1].expect(&format!("! nick taken: {taken}"));
        v[2].send(&format!("/nick {taken}"));
        v[2].expect(&format!("! nick taken: {taken}"));
    }
    v[0].rename("anna");
    v[1].expect("* alice is now anna");
    v[2].expect("* alice is now anna");
    let old = v[1].nick.clone();
    v[1].rename("ALICE");
    v[0].expect(&format!("* {old} is now ALICE"));
    v[2].expect(&format!("* {old} is now ALICE"));
    let (n0, n1, n2) = (v[0].nick.clone(), v[1].nick.clone(), v[2].nick.clone());
    for c in &mut v {
        c.expect_who("lobby", &[&n0, &n1, &n2]);
    }
    server.finish();
}

/// Arrivals on the three nodes in turn get `guest1` to `guest6`, each the lowest nobody holds
/// in the cluster; a number given back on one node goes to the next arrival on another; a
/// `guestN` somebody took by hand is skipped.
///
/// Breaks, if it fails: "an arriving client gets the lowest `guestN` nobody in the cluster
/// holds".
pub fn cluster_guests_are_unique_and_lowest(t: &Target) {
    let server = cluster(t);
    let mut v: Vec<Client> = Vec::new();
    for i in 0..6 {
        let new = server.join_on(i % 3, &format!("G{i}"));
        assert_eq!(
            new.nick,
            format!("guest{}", i + 1),
            "{}: arrivals one after the other on nodes in turn get guest1, guest2, ...",
            new.who_am_i()
        );
        for old in &mut v {
            old.expect(&format!("* {} joined lobby", new.nick));
        }
        v.push(new);
    }
    // guest2 (node 1) leaves; its number goes to the next arrival, on node 2.
    let mut gone = v.remove(1);
    gone.send("/quit");
    gone.expect("* bye");
    gone.expect_eof();
    for c in &mut v {
        c.expect("* guest2 left lobby");
    }
    // Somebody takes guest7 by hand on node 0: the counter must skip it.
    v[0].rename("guest7");
    for c in &mut v[1..] {
        c.expect("* guest1 is now guest7");
    }
    // guest1 (given back by the rename) and guest2 (by the quit) are free: lowest first.
    let mut next = server.join_on(2, "G6");
    assert_eq!(
        next.nick,
        "guest1",
        "{}: guest1 was free again",
        next.who_am_i()
    );
    for c in &mut v {
        c.expect("* guest1 joined lobby");
    }
    let low = server.join_on(1, "G7");
    assert_eq!(
        low.nick,
        "guest2",
        "{}: guest2 was free again",
        low.who_am_i()
    );
    for c in v.iter_mut().chain([&mut next]) {
        c.expect("* guest2 joined lobby");
    }
    let after = server.join_on(0, "G8");
    assert_eq!(
        after.nick,
        "guest8",
        "{}: guest7 is held by hand, so the next is guest8",
        after.who_am_i()
    );
    server.finish();
}

/// `/msg` reaches a member of another node, in any room and in any case, and nobody else;
/// `/msg` to a nick of nobody in the cluster is refused.
///
/// Breaks, if it fails: "room messages, notices and `/msg` reach their recipients on every
/// node exactly once".
pub fn cluster_msg_across_nodes(t: &Target) {
    let server = cluster(t);
    let mut v = one_per_node(&server, "M");
    join(&mut v[2], "elsewhere", 1);
    let left = format!("* {} left lobby", v[2].nick);
    v[0].expect(&left);
    v[1].expect(&left);
    let (n0, n1, n2) = (v[0].nick.clone(), v[1].nick.clone(), v[2].nick.clone());
    v[0].send(&format!("/msg {} hello  there /x", n1.to_ascii_uppercase()));
    v[1].expect(&format!("[{n0}] hello  there /x"));
    v[0].send(&format!("/msg {n2} other room, other node"));
    v[2].expect(&format!("[{n0}] other room, other node"));
    v[2].send(&format!("/msg {n0} back"));
    v[0].expect(&format!("[{n2}] back"));
    v[1].send("/msg nobody hi");
    v[1].expect("! no such user: nobody");
    for c in &mut v {
        c.sync(); // nothing else reached anybody
    }
    server.finish();
}

/// `/who`, `/rooms` and the count in `* you joined` include the members of every node, and
/// follow moves between rooms on any node.
///
/// Breaks, if it fails: "a room's members, the count in `* you joined ROOM (N members)`,
/// `/who` and `/rooms` include the members on every node".
pub fn cluster_who_rooms_and_counts_see_every_node(t: &Target) {
    let server = cluster(t);
    let mut v = one_per_node(&server, "W");
    let mut d = server.join_on(0, "W3");
    for c in &mut v {
        c.expect(&format!("* {} joined lobby", d.nick));
    }
    v.push(d);
    let nicks: Vec<String> = v.iter().map(|c| c.nick.clone()).collect();
    let all: Vec<&str> = nicks.iter().map(String::as_str).collect();
    for c in &mut v {
        c.expect_who("lobby", &all);
        c.expect_rooms(&[("lobby", 4)]);
    }
    // Into `rust`, one node after the other: each count includes those already there.
    for (k, i) in [1usize, 2, 0].into_iter().enumerate() {
        join(&mut v[i], "rust", k + 1);
        let left = format!("* {} left lobby", nicks[i]);
        let joined_line = format!("* {} joined rust", nicks[i]);
        for (j, c) in v.iter_mut().enumerate() {
            let in_rust = [1usize, 2, 0][..k].contains(&j);
            match j {
                _ if j == i => {}
                _ if in_rust => c.expect(&joined_line),
                _ => c.expect(&left),
            }
        }
    }
    d = v.pop().expect("four clients");
    d.expect_who("lobby", &[&nicks[3]]);
    d.expect_rooms(&[("lobby", 1), ("rust", 3)]);
    v[1].expect_who("rust", &[&nicks[0], &nicks[1], &nicks[2]]);
    join(&mut d, "rust", 4);
    for c in &mut v {
        c.expect(&format!("* {} joined rust", nicks[3]));
    }
    v[2].expect_rooms(&[("rust", 4)]);
    server.finish();
}

/// Three senders, one per node, each write 200 messages in one go to a room with a member on
/// every node and a fourth, silent, member on node 0: every member gets every other sender's
/// messages exactly once, in its order, never its own (the broker echoes a node's messages
/// back to it: they must not be delivered twice).
///
/// Breaks, if it fails: "room messages ... reach their recipients on every node exactly once,
/// in per-sender order", and the `TEXT` row's "no echo".
pub fn cluster_exactly_once_in_sender_order(t: &Target) {
    const PER_SENDER: usize = 200;
    let server = cluster(t);
    let mut v = one_per_node(&server, "O");
    let mut quiet = server.join_on(0, "quiet");
    for c in &mut v {
        c.expect(&format!("* {} joined lobby", quiet.nick));
    }
    let nicks: Vec<String> = v.iter().map(|c| c.nick.clone()).collect();
    let failures = std::thread::scope(|s| {
        let mut readers = Vec::new();
        for (me, c) in v.iter_mut().enumerate() {
            let batch: String = (0..PER_SENDER)
                .map(|i| format!("order {me} {i}\n"))
                .collect();
            let mut w = c.writer();
            readers.push(s.spawn(move || w.write_all(batch.as_bytes()).map_err(|e| e.to_string())));
        }
        let nicks = &nicks;
        let mut checks = Vec::new();
        for (me, c) in v
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (Some(i), c))
            .chain([(None, &mut quiet)])
        {
            checks.push(s.spawn(move || -> Result<(), String> {
                let mut next = [0usize; 3];
                let expected = if me.is_some() { 2 } else { 3 } * PER_SENDER;
                for _ in 0..expected {
                    let line = c
                        .try_line()
                        .map_err(|e| format!("{}: {e} ({next:?} so far)", c.who_am_i()))?;
                    let (nick, rest) = line
                        .strip_prefix('<')
                        .and_then(|l| l.split_once("> order "))
                        .ok_or_else(|| format!("{}: unexpected {line:?}", c.who_am_i()))?;
                    let from = nicks.iter().position(|n| n == nick);
                    let numbers: Vec<usize> =
                        rest.split(' ').filter_map(|n| n.parse().ok()).collect();
                    match (from, numbers.as_slice()) {
                        (Some(j), _) if Some(j) == me => {
                            return Err(format!(
                                "{}: its own message came back: {line:?}",
                                c.who_am_i()
                            ))
                        }
                        (Some(j), &[k, i]) if j == k && i == next[j] => next[j] += 1,
                        _ => {
                            return Err(format!(
                            "{}: {line:?} out of order, twice or unknown (expected {next:?} next)",
                            c.who_am_i()
                        ))
                        }
                    }
                }
                c.try_sync() // and nothing more: no duplicate at the end
            }));
        }
        let mut failures: Vec<String> = readers
            .into_iter()
            .filter_map(|h| joined(h).err())
            .collect();
        failures.extend(checks.into_iter().filter_map(|h| joined(h).err()));
        failures
    });
    assert_no_failures(
        "exactly once, in each sender's order, across nodes",
        failures,
    );
    server.finish();
}

/// A node killed with SIGKILL says nothing more: within `LEASE` of its last heartbeat (and a
/// heartbeat's slack), the other nodes announce its members `* NICK left ROOM (node lost)`,
/// their nicks are free (a member of another node takes one), and the rest goes on.
///
/// Breaks, if it fails: "a node that dies is noticed within `LEASE` after it last spoke; the
/// other nodes then announce its members as `* NICK left ROOM (node lost)` and their nicks
/// become free".
pub fn cluster_killed_node_is_lost(t: &Target) {
    let server = cluster(t);
    let mut v = one_per_node(&server, "K");
    let old = v[1].nick.clone();
    v[1].rename("victim");
    v[0].expect(&format!("* {old} is now victim"));
    v[2].expect(&format!("* {old} is now victim"));
    server.signal_node(1, libc::SIGKILL);
    let killed = Instant::now();
    // Heard from last just before the kill; judged at the next heartbeat after LEASE.
    let within = LEASE + HEARTBEAT * 2 + LINE_TIMEOUT;
    for c in [0, 2] {
        if let Err(e) = until(&mut v[c], "* victim left lobby (node lost)", within, |_| {
            false
        }) {
            panic!("{e} (node 1 was killed {:?} ago)", killed.elapsed());
        }
    }
    let elapsed = killed.elapsed();
    assert!(
        elapsed >= LEASE - HEARTBEAT,
        "node 1 was declared lost {elapsed:?} after it was killed: before its lease ran out"
    );
    let old = v[2].nick.clone();
    v[2].rename("victim");
    v[0].expect(&format!("* {old} is now victim"));
    // The rest goes on.
    v[0].send("still here");
    let said = format!("<{}> still here", v[0].nick);
    v[2].expect(&said);
    let n0 = v[0].nick.clone();
    v[0].expect_who("lobby", &[&n0, "victim"]);
    v[2].expect_rooms(&[("lobby", 2)]);
    server.finish();
}

/// Redis is killed and started again on the same port, empty. Meanwhile each node serves its
/// own members (a room on one node works), and a node counts in its log what it could not
/// publish; then the nodes reconnect, register again, and members of different nodes reach
/// each other again, and see each other in `/who`.
///
/// Breaks, if it fails: "while the broker is unreachable, each node keeps serving its own
/// clients ... lines for other nodes are lost (counted and logged by the node, never
/// delivered twice) ... When the broker is back the node claims its members' nicks again,
/// tells the cluster who is where, reloads who is where on the others".
pub fn cluster_broker_restart(t: &Target) {
    let mut server = cluster(t);
    let mut v = one_per_node(&server, "R");
    let mut local = server.join_on(0, "R3");
    for c in &mut v {
        c.expect(&format!("* {} joined lobby", local.nick));
    }
    // A room with both its members on node 0.
    join(&mut v[0], "here", 1);
    let left = format!("* {} left lobby", v[0].nick);
    for c in v[1..].iter_mut().chain([&mut local]) {
        c.expect(&left);
    }
    join(&mut local, "here", 2);
    v[0].expect(&format!("* {} joined here", local.nick));
    for c in &mut v[1..] {
        c.expect(&format!("* {} left lobby", local.nick));
    }
    let broker = server.broker().expect("a cluster has a broker");
    broker.stop();
    // Node 0 serves its own: the room works (and each line is counted as lost for the others).
    let (n0, nl) = (v[0].nick.clone(), local.nick.clone());
    for i in 0..5 {
        v[0].send(&format!("while the broker is away {i}"));
        local.expect(&format!("<{n0}> while the broker is away {i}"));
    }
    let deadline = Instant::now() + LINE_TIMEOUT;
    while !server.node_stderr(0).contains("lost in all") {
        assert!(
            Instant::now() < deadline,
            "node 0 published 5 messages while the broker was away, and its log does not count              them as lost (`... lost in all`):\n{}",
            server.node_stderr(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.broker().expect("a broker").restart();
    // Back: the nodes reconnect (back-off of at most 2 s) and register again. Until every
    // node has, a node may announce the members of another as gone and back: skip that.
    let churn = |l: &str| l.starts_with("* ") && (l.contains(" left ") || l.contains(" joined "));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut round = 0;
    let n1 = v[1].nick.clone();
    loop {
        round += 1;
        let text = format!("are you there {round}");
        v[2].send(&text);
        let want = format!("<{}> {text}", v[2].nick);
        match until(&mut v[1], &want, Duration::from_millis(500), churn) {
            Ok(_) => break,
            Err(e) if Instant::now() >= deadline => {
                panic!("cross-node delivery did not resume within 10 s of the restart: {e}")
            }
            Err(_) => {}
        }
    }
    // Everybody is known everywhere again (after the churn settles).
    let want_lobby: Vec<&str> = vec![n1.as_str(), v[2].nick.as_str()];
    let mut want_lobby: Vec<String> = want_lobby.into_iter().map(str::to_owned).collect();
    want_lobby.sort_by_key(|n| n.to_ascii_lowercase());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = v[1].try_who();
        let settled = match &got {
            Ok((room, members)) => room == "lobby" && *members == want_lobby,
            Err(_) => false,
        };
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: /who after the restart: {got:?}, expected {want_lobby:?}",
            v[1].who_am_i()
        );
        // Skip the notices of the re-registration, then ask again.
        let _ = until(&mut v[1], "never", Duration::from_millis(200), churn);
    }
    let _ = &nl;
    server.finish();
}

/// SIGTERM to one node: its clients get `* server shutting down` and the end of the stream, it
/// exits with status 0 in time, and the other nodes see its members leave and go on.
///
/// Breaks, if it fails: "a node that stops (SIGINT, SIGTERM) tells its own clients `* server
/// shutting down`; the other nodes see its members leave".
pub fn cluster_sigterm_of_one_node(t: &Target) {
    let mut server = cluster(t);
    let mut v = one_per_node(&server, "T");
    let mut second = server.join_on(1, "T3");
    for c in &mut v {
        c.expect(&format!("* {} joined lobby", second.nick));
    }
    let (n1, n3) = (v[1].nick.clone(), second.nick.clone());
    server.signal_node(1, libc::SIGTERM);
    let signalled = Instant::now();
    for c in [&mut v[1], &mut second] {
        c.expect("* server shutting down");
        c.expect_eof();
    }
    for c in [0, 2] {
        // Departures in the node's order, which is its own business: either.
        let mut seen = vec![v[c].line(), v[c].line()];
        seen.sort();
        let mut want = vec![format!("* {n1} left lobby"), format!("* {n3} left lobby")];
        want.sort();
        assert_eq!(
            seen,
            want,
            "{}: the stopped node's members leave",
            v[c].who_am_i()
        );
    }
    let within = SHUTDOWN_GRACE + Duration::from_secs(2);
    match server.wait_exit_node(1, within.saturating_sub(signalled.elapsed())) {
        Some(status) if status.success() => {}
        Some(status) => panic!("node 1 exited with {status} after SIGTERM (0 expected)"),
        None => panic!("node 1 still runs {within:?} after SIGTERM"),
    }
    let (n0, n2) = (v[0].nick.clone(), v[2].nick.clone());
    v[0].expect_who("lobby", &[&n0, &n2]);
    v[2].send("we go on");
    v[0].expect(&format!("<{n2}> we go on"));
    server.finish();
}
