//! Checks one client can make by itself, so every mode runs them (`sequential` too):
//! the welcome, each command's replies and errors, framing (CRLF, empty lines, the
//! 1024-byte limit, invalid UTF-8), `/quit`. What *others* see is in `room.rs`.
//!
//! Run through a stage: `cargo test -p chat-sequential --test conformance`.

use std::io::Write;

use super::{assert_memory_within, ruler, HELP_LINES, MAX_LINE, ONE_READ, TOO_LONG};
use crate::{Options, Target};

/// `* welcome guestN` is the first line; `/who` and `/rooms` show the client in `lobby`.
///
/// Breaks, if it fails: the welcome of *Arriving* (`* welcome NICK (type /help for commands)`
/// as the first line) and `guestN` in `lobby`.
pub fn welcome_line(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.connect("A");
    let nick = a.expect_welcome();
    a.expect_who("lobby", &[&nick]);
    a.expect_rooms(&[("lobby", 1)]);
    server.finish();
}

/// A message to a room where the sender is alone reaches nobody, and is not echoed.
///
/// Breaks, if it fails: the `TEXT` row of *What a client sends*, "reply to the sender: nothing
/// (no echo)".
pub fn message_alone_not_echoed(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.send("hello, is anybody there?");
    a.send("a second message");
    // If either message had been echoed, it would come before the reply to /who.
    let nick = a.nick.clone();
    a.expect_who("lobby", &[&nick]);
    server.finish();
}

/// `\r\n` ends a line like `\n` (the `\r` is dropped); empty lines are ignored.
///
/// Breaks, if it fails: *Transport and lines*, "a `\r` just before the `\n` is dropped ... a
/// line that is empty after that is ignored".
pub fn crlf_and_empty_lines(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    // Were the `\r` kept, the nick would be `crlf_user\r`: an invalid nick.
    a.send_raw(b"\r\n\n\r\n/nick crlf_user\r\n");
    a.expect("* you are now crlf_user");
    // Empty lines and a CRLF message get no reply; `/who\r\n` is a /who.
    a.send_raw(b"hello\r\n\n\r\n\r\n/who\r\n");
    a.expect("* members of lobby: crlf_user");
    server.finish();
}

/// `/nick`: success, invalid names (bad character, 25 characters, non-ASCII) and usage.
///
/// Breaks, if it fails: the `/nick` row and *Names* (1 to 24 ASCII letters, digits, `_`, `-`),
/// and the errors `! invalid nick: NAME`, `! usage: /nick NAME`.
pub fn nick_command(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.rename("alice");
    a.expect_who("lobby", &["alice"]);
    for bad in ["bad!name", "<x>", "b\u{e9}", "a*b"] {
        a.send(&format!("/nick {bad}"));
        a.expect(&format!("! invalid nick: {bad}"));
    }
    let too_long = "n".repeat(25);
    a.send(&format!("/nick {too_long}"));
    a.expect(&format!("! invalid nick: {too_long}"));
    let longest = format!("{}9", "N".repeat(23));
    a.rename(&longest);
    a.send("/nick");
    a.expect("! usage: /nick NAME");
    a.send("/nick two words");
    a.expect("! usage: /nick NAME");
    a.rename("Mixed_Case-9");
    a.expect_who("lobby", &["Mixed_Case-9"]);
    server.finish();
}

/// `/join`: a new room (`1 members`), back to lobby, `already in`, invalid names, usage.
///
/// Breaks, if it fails: the `/join` row (`* you joined ROOM (N members)`), "exactly one word",
/// and the errors `! already in ROOM`, `! invalid room: NAME`, `! usage: /join ROOM`.
pub fn join_command(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    let nick = a.nick.clone();
    a.send("/join rust");
    a.expect("* you joined rust (1 members)");
    a.expect_who("rust", &[&nick]);
    a.send("/join rust");
    a.expect("! already in rust");
    a.send("/join lobby");
    a.expect("* you joined lobby (1 members)");
    a.send("/join lobby");
    a.expect("! already in lobby");
    let too_long = "r".repeat(25);
    for bad in ["bad!room", "[x]", "caf\u{e9}", too_long.as_str()] {
        a.send(&format!("/join {bad}"));
        a.expect(&format!("! invalid room: {bad}"));
    }
    a.send("/join");
    a.expect("! usage: /join ROOM");
    // Exactly one word: not a join of `two`.
    a.send("/join two words");
    a.expect("! usage: /join ROOM");
    a.expect_who("lobby", &[&nick]);
    let longest = format!("{}-", "R".repeat(23));
    a.send(&format!("/join {longest}"));
    a.expect(&format!("* you joined {longest} (1 members)"));
    server.finish();
}

/// `/who` and `/rooms` for a lone client; an empty room (here `lobby`) no longer exists.
///
/// Breaks, if it fails: the `/who` and `/rooms` rows, and *Names*, "a room exists while it has
/// members".
pub fn who_and_rooms_alone(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    let nick = a.nick.clone();
    a.expect_who("lobby", &[&nick]);
    a.expect_rooms(&[("lobby", 1)]);
    a.send("/join rust");
    a.expect("* you joined rust (1 members)");
    // "Rooms exist while they have members": lobby is empty now.
    a.expect_rooms(&[("rust", 1)]);
    a.expect_who("rust", &[&nick]);
    server.finish();
}

/// `/msg` errors: an unknown nick, and the usage error without a text.
///
/// Breaks, if it fails: the errors `! no such user: NICK` and `! usage: /msg NICK TEXT`
/// (exactly that line, whatever is missing).
pub fn msg_errors(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.send("/msg nobody hello there");
    a.expect("! no such user: nobody");
    a.send("/msg");
    a.expect("! usage: /msg NICK TEXT");
    // An existing nick (our own) but no text: still a usage error.
    let nick = a.nick.clone();
    a.send(&format!("/msg {nick}"));
    a.expect("! usage: /msg NICK TEXT");
    a.send(&format!("/msg {nick} "));
    a.expect("! usage: /msg NICK TEXT");
    a.sync();
    server.finish();
}

/// `/frobnicate` is unknown (with or without arguments); `//text` is a message (no reply
/// when alone); `/help` answers exactly nine lines, the first `* commands:`, each starting
/// `* `; `/who`, `/rooms` and `/help` take no argument.
///
/// Breaks, if it fails: the rows of `//TEXT` and `/help` in *What a client sends*, and the
/// errors `! unknown command: /CMD`, `! usage: /who`, `! usage: /rooms`, `! usage: /help`.
pub fn escape_unknown_and_help(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.send("/frobnicate");
    a.expect("! unknown command: /frobnicate");
    a.send("/frobnicate with arguments");
    a.expect("! unknown command: /frobnicate");
    a.send("//not a command");
    a.sync();
    a.send("/help");
    a.send("/who");
    let who = format!("* members of lobby: {}", a.nick);
    let mut help = Vec::new();
    loop {
        let line = a.line();
        if line == who {
            break;
        }
        help.push(line);
        assert!(help.len() <= 200, "{}: /help never ended", a.who_am_i());
    }
    assert!(
        help.len() == HELP_LINES
            && help[0] == "* commands:"
            && help.iter().all(|l| l.starts_with("* ")),
        "{}: /help must answer nine lines, the first `* commands:`, each starting `* `; got \
         {help:?}",
        a.who_am_i()
    );
    for cmd in ["who", "rooms", "help"] {
        a.send(&format!("/{cmd} now"));
        a.expect(&format!("! usage: /{cmd}"));
    }
    a.sync();
    server.finish();
}

/// The 1024-byte limit: 1024 bytes are a line, 1025 are refused with one error, the
/// connection stays usable, and the line right after a refused one is read whole.
///
/// Breaks, if it fails: *Transport and lines*, "a line holds at most `MAX_LINE` bytes ... a
/// longer line is discarded up to its next `\n` ... the next line is read normally".
pub fn line_limits(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    // Exactly MAX_LINE bytes: parsed as the (unknown) command it is, not refused.
    let prefix = "/frobnicate ";
    let exact = format!("{prefix}{}", ruler(MAX_LINE - prefix.len()));
    assert_eq!(exact.len(), MAX_LINE);
    a.send(&exact);
    a.expect("! unknown command: /frobnicate");
    // One byte more: refused; the next line, sent in the same write, is whole.
    let over = format!("{prefix}{}", ruler(MAX_LINE + 1 - prefix.len()));
    a.send_raw(format!("{over}\n/nick after\n").as_bytes());
    a.expect(TOO_LONG);
    a.expect("* you are now after");
    // A 4000-byte line sent in pieces: still exactly one error.
    let mut w = a.writer();
    for piece in [&[b'x'; 1000][..], &[b'y'; 1000], &[b'z'; 2000], b"\n"] {
        w.write_all(piece)
            .unwrap_or_else(|e| panic!("{}: write: {e}", a.who_am_i()));
    }
    a.expect(TOO_LONG);
    a.sync();
    // 1024 bytes of text to a room with nobody else: accepted, no reply.
    a.send(&ruler(MAX_LINE));
    a.sync();
    server.finish();
}

/// A 4 MiB line without a newline: exactly one error, and the server's memory does not grow
/// by more than what the protocol lets it keep for one client — 1024 bytes of an unfinished
/// line — plus one read buffer (64 KiB) and 192 KiB of allocator slack; after a `\n` all is
/// normal.
///
/// Breaks, if it fails: *Transport and lines*, "the server never buffers more than that of an
/// unfinished line", and "the sender gets `! line too long` as soon as the limit is crossed".
pub fn huge_line_bounded_memory(t: &Target) {
    const HUGE: usize = 4 * 1024 * 1024;
    /// Pages the allocator may touch for the error line, a vector that doubled once, a
    /// stack a little deeper: far below the 4 MiB a buffering server needs.
    const SLACK: usize = 192 * 1024;
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.sync();
    let before = server.memory();
    let mut w = a.writer();
    std::thread::scope(|s| {
        // Write on another thread while this one reads the error: if the server sent many
        // errors and we did not read them, both sides could block on full buffers.
        let writer = s.spawn(move || {
            let chunk = vec![b'q'; 64 * 1024];
            for _ in 0..HUGE / chunk.len() {
                w.write_all(&chunk)?;
            }
            Ok::<_, std::io::Error>(())
        });
        a.expect(TOO_LONG);
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!(
                "{}: sending the 4 MiB line failed ({e}): the connection must stay open",
                a.who_am_i()
            ),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    a.send_raw(b"\n");
    // Exactly one error: the reply to /who comes next. (This also means the server has
    // read all 4 MiB.)
    a.sync();
    assert_memory_within(
        &server,
        before,
        MAX_LINE + ONE_READ + SLACK,
        "while it discarded a 4 MiB line",
        "it must not buffer more than 1024 bytes of a line: 1 KiB, one 64 KiB read, and slack",
    );
    a.rename("still_here");
    server.finish();
}

/// Lines that are not UTF-8 get `! invalid utf-8`; the connection stays usable.
///
/// Breaks, if it fails: *Transport and lines*, "a line that is not valid UTF-8 is discarded and
/// answered with `! invalid utf-8`".
pub fn invalid_utf8(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    for bad in [
        &b"\xff\xfe\n"[..],
        b"/nick \xc3\n",               // a command whose argument is cut short
        b"\xed\xa0\x80 a surrogate\n", // UTF-16 surrogates are not UTF-8
        b"\xc0\x80 overlong\n",
        b"ok so far \xf4\x90\x80\x80\n", // above U+10FFFF
    ] {
        a.send_raw(bad);
        a.expect("! invalid utf-8");
    }
    // Valid UTF-8 but not a legal nick: the nick error, not the encoding error.
    a.send_raw("/nick b\u{e9}\n".as_bytes());
    a.expect("! invalid nick: b\u{e9}");
    a.rename("still_ok");
    server.finish();
}

/// `/quit REASON` answers `* bye` and closes; the server then serves the next client.
///
/// Breaks, if it fails: the `/quit` row (`* bye`, then the server closes) and *Closing* (the
/// end of the stream, not a reset).
pub fn quit_command(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    a.send("/quit see you");
    a.expect("* bye");
    a.expect_eof();
    let mut b = server.join("B");
    b.send("/quit");
    b.expect("* bye");
    b.expect_eof();
    // Only the welcome is certain here: where clients are served at once, the server
    // may still be announcing B's departure when C arrives.
    server.join("C");
    server.finish();
}
