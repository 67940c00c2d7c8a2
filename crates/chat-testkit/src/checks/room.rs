//! Checks of what clients see of each other: joins and leaves, messages to the room
//! (never echoed), nick changes, rooms, private messages. They need several clients
//! served at once, so only `pool` and `concurrent` stages run them.
//!
//! Run through a stage: `cargo test -p chat-threads --test conformance -- in_room`.

use super::{lobby, ruler, MAX_LINE, TOO_LONG};
use crate::{Client, Options, Server, Target};

/// `n` clients in lobby, as an array (labels `A`, `B`, ...).
#[track_caller]
fn clients<const N: usize>(server: &Server) -> [Client; N] {
    let mut v = lobby(server, N, "#");
    for (i, c) in v.iter_mut().enumerate() {
        c.label = char::from(b'A' + i as u8).to_string();
    }
    v.try_into()
        .unwrap_or_else(|_| unreachable!("lobby returns exactly N clients"))
}

/// Sends `/join ROOM` and expects `* you joined ROOM (N members)`.
#[track_caller]
fn join(c: &mut Client, room: &str, members: usize) {
    c.send(&format!("/join {room}"));
    c.expect(&format!("* you joined {room} ({members} members)"));
}

/// A second client gets its own guest nick; the first sees it join.
///
/// Breaks, if it fails: *Arriving* ("every other member of `lobby` gets `* NICK joined lobby`")
/// and unique `guestN` nicks.
pub fn welcome_two_clients(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    let mut b = server.join("B");
    assert!(
        !a.nick.eq_ignore_ascii_case(&b.nick),
        "two clients connected at once were both welcomed as {:?}/{:?}: nicks are unique",
        a.nick,
        b.nick
    );
    a.expect(&format!("* {} joined lobby", b.nick));
    let (na, nb) = (a.nick.clone(), b.nick.clone());
    b.expect_who("lobby", &[&na, &nb]);
    a.sync();
    server.finish();
}

/// A message reaches every other member of the room, not the sender, not other rooms.
///
/// Breaks, if it fails: the `TEXT` row ("every other member: `<NICK> TEXT`") and exactly once,
/// to the room only.
pub fn message_reaches_room_not_sender(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b, mut c, mut d] = clients::<4>(&server);
    join(&mut d, "elsewhere", 1);
    let left = format!("* {} left lobby", d.nick);
    for x in [&mut a, &mut b, &mut c] {
        x.expect(&left);
    }
    for text in [
        "hello room",
        "a second message",
        "<not> [a] * marker ! inside",
    ] {
        a.send(text);
        let want = format!("<{}> {text}", a.nick);
        b.expect(&want);
        c.expect(&want);
    }
    a.sync(); // no echo
    d.sync(); // nothing crosses rooms
    server.finish();
}

/// `\r\n` is delivered without the `\r`; empty lines are not delivered.
///
/// Breaks, if it fails: *Transport and lines*: `\r\n` ends a line like `\n`, empty lines are
/// ignored, also for what others receive.
pub fn crlf_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b] = clients::<2>(&server);
    a.send_raw(b"\r\n\nhello\r\n\r\n\nworld\n");
    b.expect(&format!("<{}> hello", a.nick));
    b.expect(&format!("<{}> world", a.nick));
    a.sync();
    b.sync();
    server.finish();
}

/// The room sees `* OLD is now NEW`; nicks are taken case-insensitively and freed by a rename.
///
/// Breaks, if it fails: the `/nick` row ("the room: `* OLD is now NAME`") and *Names*, "nicks
/// are unique regardless of case".
pub fn nick_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b] = clients::<2>(&server);
    let old = a.nick.clone();
    a.rename("alice");
    b.expect(&format!("* {old} is now alice"));
    a.sync(); // the renamer gets its reply only
    for taken in ["ALICE", "Alice", "alice"] {
        b.send(&format!("/nick {taken}"));
        b.expect(&format!("! nick taken: {taken}"));
    }
    a.sync(); // failed renames are not announced
    a.rename("alicia");
    b.expect("* alice is now alicia");
    let old_b = b.nick.clone();
    b.rename("ALICE"); // free again
    a.expect(&format!("* {old_b} is now ALICE"));
    b.expect_who("lobby", &["alicia", "ALICE"]);
    server.finish();
}

/// `/join` announces the leave in the old room and the join in the new one, with counts.
///
/// Breaks, if it fails: the `/join` row (old room: `* NICK left OLD`; new room: `* NICK joined
/// ROOM`; the count).
pub fn join_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b, mut c] = clients::<3>(&server);
    join(&mut b, "rust", 1);
    let left = format!("* {} left lobby", b.nick);
    a.expect(&left);
    c.expect(&left);
    join(&mut c, "rust", 2);
    a.expect(&format!("* {} left lobby", c.nick));
    b.expect(&format!("* {} joined rust", c.nick));
    let (na, nb, nc) = (a.nick.clone(), b.nick.clone(), c.nick.clone());
    a.expect_who("lobby", &[&na]);
    b.expect_who("rust", &[&nb, &nc]);
    join(&mut b, "lobby", 2);
    a.expect(&format!("* {nb} joined lobby"));
    c.expect(&format!("* {nb} left rust"));
    c.expect_who("rust", &[&nc]);
    a.sync();
    server.finish();
}

/// `/who` lists exactly the room's members; `/rooms` every room with its count, and a
/// room that empties disappears.
///
/// Breaks, if it fails: the `/who` and `/rooms` rows: exactly the members and rooms there are,
/// with their counts.
pub fn who_and_rooms_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b, mut c, mut d] = clients::<4>(&server);
    join(&mut c, "rust", 1);
    let left = format!("* {} left lobby", c.nick);
    for x in [&mut a, &mut b, &mut d] {
        x.expect(&left);
    }
    join(&mut d, "go", 1);
    let left = format!("* {} left lobby", d.nick);
    a.expect(&left);
    b.expect(&left);
    let (na, nb, nc, nd) = (
        a.nick.clone(),
        b.nick.clone(),
        c.nick.clone(),
        d.nick.clone(),
    );
    a.expect_who("lobby", &[&na, &nb]);
    c.expect_who("rust", &[&nc]);
    a.expect_rooms(&[("lobby", 2), ("rust", 1), ("go", 1)]);
    join(&mut c, "go", 2);
    d.expect(&format!("* {nc} joined go"));
    b.expect_rooms(&[("lobby", 2), ("go", 2)]);
    d.expect_who("go", &[&nc, &nd]);
    server.finish();
}

/// `/msg NICK TEXT` reaches NICK alone (in any room) as `[SENDER] TEXT`, text kept as is.
///
/// Breaks, if it fails: the `/msg` row: NICK alone gets `[SENDER] TEXT`, TEXT being the rest of
/// the line, in any room.
pub fn msg_private(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b, mut c] = clients::<3>(&server);
    join(&mut c, "other", 1);
    let left = format!("* {} left lobby", c.nick);
    a.expect(&left);
    b.expect(&left);
    let (na, nb, nc) = (a.nick.clone(), b.nick.clone(), c.nick.clone());
    a.send(&format!("/msg {nb} hello there  friend /x"));
    b.expect(&format!("[{na}] hello there  friend /x"));
    a.sync(); // the sender gets nothing
    c.sync(); // nor does anybody else
    a.send(&format!("/msg {nc} psst, other room"));
    c.expect(&format!("[{na}] psst, other room"));
    b.sync();
    a.send("/msg nobody hi");
    a.expect("! no such user: nobody");
    b.send(&format!("/msg {na}"));
    b.expect("! usage: /msg NICK TEXT");
    a.sync();
    server.finish();
}

/// `//text` is delivered as `<NICK> /text`.
///
/// Breaks, if it fails: the `//TEXT` row: delivered as `<NICK> /TEXT`.
pub fn escape_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b] = clients::<2>(&server);
    a.send("//slash at the start");
    b.expect(&format!("<{}> /slash at the start", a.nick));
    a.send("//");
    b.expect(&format!("<{}> /", a.nick));
    a.sync();
    b.sync();
    server.finish();
}

/// A 1024-byte line arrives whole; a 1025-byte one is refused and not delivered, and the
/// line after it arrives whole. The limit counts bytes, not characters.
///
/// Breaks, if it fails: *Transport and lines*: the limit counts bytes, a refused line reaches
/// nobody, the next line is read whole.
pub fn line_limits_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b] = clients::<2>(&server);
    let na = a.nick.clone();
    let text = ruler(MAX_LINE);
    a.send(&text);
    b.expect(&format!("<{na}> {text}"));
    a.send_raw(format!("{}\nafter\n", ruler(MAX_LINE + 1)).as_bytes());
    a.expect(TOO_LONG);
    b.expect(&format!("<{na}> after"));
    // 341 euro signs (3 bytes each) + 1 byte = 1024 bytes, but only 342 characters.
    let euros = format!("{}x", "\u{20ac}".repeat(341));
    assert_eq!(euros.len(), MAX_LINE);
    a.send(&euros);
    b.expect(&format!("<{na}> {euros}"));
    a.send(&"\u{20ac}".repeat(342)); // 1026 bytes
    a.expect(TOO_LONG);
    a.sync();
    b.sync();
    server.finish();
}

/// Multi-byte UTF-8 arrives intact; a line with invalid UTF-8 is refused, not delivered.
///
/// Breaks, if it fails: *Transport and lines*: UTF-8 is delivered intact; invalid UTF-8 is
/// refused and reaches nobody.
pub fn utf8_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b] = clients::<2>(&server);
    let na = a.nick.clone();
    let text = "h\u{e9}llo w\u{f6}rld \u{2713} \u{1f680} \u{65e5}\u{672c}\u{8a9e}";
    a.send(text);
    b.expect(&format!("<{na}> {text}"));
    a.send_raw(b"bad \xff\xfe bytes\n");
    a.expect("! invalid utf-8");
    a.send("after");
    b.expect(&format!("<{na}> after"));
    a.sync();
    b.sync();
    server.finish();
}

/// `/quit REASON` shows the reason to the room; `/quit` alone and an abrupt close show
/// none; an unfinished line at the close is dropped, not delivered.
///
/// Breaks, if it fails: *Leaving*: `* NICK left ROOM (REASON)` after `/quit REASON`, `* NICK
/// left ROOM` otherwise; *Transport and lines*, "bytes after the last `\n` when the client ends
/// its stream ... are dropped".
pub fn quit_in_room(t: &Target) {
    let server = t.start(Options::default());
    let [mut a, mut b, mut c, mut d, mut e] = clients::<5>(&server);
    b.send("/quit see you");
    b.expect("* bye");
    b.expect_eof();
    let left = format!("* {} left lobby (see you)", b.nick);
    for x in [&mut a, &mut c, &mut d, &mut e] {
        x.expect(&left);
    }
    c.send("/quit");
    c.expect("* bye");
    c.expect_eof();
    let left = format!("* {} left lobby", c.nick);
    for x in [&mut a, &mut d, &mut e] {
        x.expect(&left);
    }
    // An abrupt close after an unfinished line: the bytes are dropped.
    let nd = d.nick.clone();
    d.send_raw(b"unfinished line");
    drop(d);
    let left = format!("* {nd} left lobby");
    a.expect(&left);
    e.expect(&left);
    // An abrupt close with data still unread (the kernel answers with a reset).
    let ne = e.nick.clone();
    a.send("e may never read this");
    drop(e);
    a.expect(&format!("* {ne} left lobby"));
    let na = a.nick.clone();
    a.expect_who("lobby", &[&na]);
    server.finish();
}
