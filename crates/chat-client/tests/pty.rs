//! The `chat-client` binary on a pseudo-terminal, as a person uses it: a line being typed
//! survives a line arriving from the server, and the terminal is given back as it was.
//!
//! The test is the person at the keyboard (it writes keys to the pty's master side and reads
//! the screen output from it) and the server (a fake one, on loopback).
//!
//! `cargo test -p chat-client --test pty`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};

use common::{wait_child, Captured, FakeServer, BIN, STEP};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

/// The client on a fresh 80x24 pty: its keyboard, its screen, and the slave side we keep
/// to look at the terminal's modes afterwards.
struct OnPty {
    child: Child,
    keyboard: File,
    screen: Captured,
    slave: OwnedFd,
}

impl OnPty {
    fn start(addr: &str) -> OnPty {
        let winsize = Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&winsize, None).unwrap();
        let io = || Stdio::from(pty.slave.try_clone().unwrap());
        let child = Command::new(BIN)
            .arg(addr)
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .stdin(io())
            .stdout(io())
            .stderr(io())
            .spawn()
            .unwrap();
        let master = File::from(pty.master);
        OnPty {
            child,
            keyboard: master.try_clone().unwrap(),
            screen: Captured::from_reader(master),
            slave: pty.slave,
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).unwrap();
        self.keyboard.flush().unwrap();
    }

    /// What was drawn so far, without escape sequences or carriage returns: the text a
    /// person would have seen go by.
    fn seen(&self) -> String {
        strip(&self.screen.text())
    }

    #[track_caller]
    fn wait_seen(&self, needle: &str) -> String {
        let what = format!("{needle:?} on the screen");
        self.screen.wait_for(&what, |t| strip(t).contains(needle));
        self.seen()
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes CSI sequences (`ESC [ ... final`), other two-byte escapes, and `\r`.
fn strip(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ ... final byte; other escapes (ESC and one character) are dropped whole.
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn an_incoming_line_does_not_destroy_the_line_being_typed() {
    let server = FakeServer::new();
    let mut pty = OnPty::start(&server.addr().to_string());
    let mut peer = server.accept();
    peer.send("* welcome alice (type /help for commands)");
    pty.wait_seen("alice@lobby> ");

    // Half a line, no Enter...
    pty.type_keys("hello wor");
    pty.wait_seen("alice@lobby> hello wor");
    // ...and someone else speaks.
    peer.send("<bob> are you there?");
    let seen = pty.wait_seen("<bob> are you there?");
    // The incoming line is drawn above, and the half-typed line drawn again below it.
    let after = &seen[seen.find("<bob> are you there?").unwrap()..];
    assert!(
        after.contains("alice@lobby> hello wor"),
        "the typed text was not drawn again after the incoming line: {seen:?}"
    );
    // Finish typing: the server gets the whole line, as typed.
    pty.type_keys("ld\r");
    assert_eq!(peer.line().as_deref(), Some("hello world"));

    // The server hangs up: the client says so, gives the terminal back and exits with 1,
    // without waiting for a key.
    peer.close();
    let status = wait_child(&mut pty.child, STEP).expect("the client did not exit");
    assert_eq!(status.code(), Some(1), "{status}: {:?}", pty.seen());
    pty.wait_seen("chat-client: the server closed the connection");
    let modes = tcgetattr(&pty.slave).unwrap();
    assert!(
        modes
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO),
        "the terminal was left in raw mode: {:?}",
        modes.local_flags
    );
}

#[test]
fn the_prompt_follows_nick_and_room_and_ctrl_d_quits() {
    let server = FakeServer::new();
    let mut pty = OnPty::start(&server.addr().to_string());
    let mut peer = server.accept();
    peer.send("* welcome guest1 (type /help for commands)");
    pty.wait_seen("guest1@lobby> ");

    pty.type_keys("/nick alice\r");
    assert_eq!(peer.line().as_deref(), Some("/nick alice"));
    // A message that merely contains the words changes nothing...
    peer.send("<mallory> * you are now mallory");
    // ...the server's own answer does.
    peer.send("* you are now alice");
    pty.wait_seen("alice@lobby> ");

    pty.type_keys("/join rust\r");
    assert_eq!(peer.line().as_deref(), Some("/join rust"));
    peer.send("* you joined rust (1 members)");
    pty.wait_seen("alice@rust> ");
    assert!(!pty.seen().contains("mallory@"), "{:?}", pty.seen());

    // Ctrl-D on an empty line: a polite /quit, then the server's close ends it with 0.
    pty.type_keys("\x04");
    assert_eq!(peer.line().as_deref(), Some("/quit"));
    peer.send("* bye");
    peer.close();
    let status = wait_child(&mut pty.child, STEP).expect("the client did not exit");
    assert!(status.success(), "{status}: {:?}", pty.seen());
}
