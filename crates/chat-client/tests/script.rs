//! The `chat-client` binary in script mode (standard input not a terminal, or `--script`)
//! against a fake server written here: what is sent, what is printed, how it ends, and the
//! messages for a refused connection and a server that does not answer.
//!
//! `cargo test -p chat-client --test script`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{Client, FakeServer};

const WELCOME: &str = "* welcome alice (type /help for commands)";

#[test]
fn lines_are_sent_replies_printed_and_quit_exits_zero() {
    let server = FakeServer::new();
    let mut client = Client::start(&[&server.addr().to_string()]);
    client.type_in("/nick alice\nhello\n/quit\n");
    client.close_stdin();

    let mut peer = server.accept();
    peer.send("* welcome guest1 (type /help for commands)");
    assert_eq!(peer.line().as_deref(), Some("/nick alice"));
    peer.send("* you are now alice");
    assert_eq!(peer.line().as_deref(), Some("hello"));
    assert_eq!(peer.line().as_deref(), Some("/quit"));
    peer.send("* bye");
    // The client must wait for our close after `/quit`, whatever its input does.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        client.child.try_wait().unwrap(),
        None,
        "exited before the server closed"
    );
    peer.close();

    let status = client.wait();
    assert_eq!(
        client.stdout.text(),
        "* welcome guest1 (type /help for commands)\n* you are now alice\n* bye\n"
    );
    assert_eq!(client.stderr.text(), "");
    assert!(status.success(), "{status}");
}

#[test]
fn a_script_file_without_quit_ends_after_the_quiet_period_with_a_half_close() {
    let dir = std::env::temp_dir().join(format!("chat-client-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("who.txt");
    std::fs::write(&file, "/who\n").unwrap();

    let server = FakeServer::new();
    let addr = server.addr().to_string();
    let path = file.to_string_lossy().into_owned();
    // stdin stays open and unused: --script reads the file.
    let mut client = Client::start(&["--script", &path, "--quiet", "0.5", &addr]);
    let mut peer = server.accept();
    peer.send(WELCOME);
    assert_eq!(peer.line().as_deref(), Some("/who"));
    peer.send("* members of lobby: alice");
    let replied = Instant::now();
    // Next: the client's end of stream, after the quiet period.
    assert_eq!(
        peer.line(),
        None,
        "the client should end its stream, not send more"
    );
    let quiet = replied.elapsed();
    assert!(
        quiet >= Duration::from_millis(450),
        "half-closed after only {quiet:?}"
    );
    // A half-close is a goodbye, not a hang-up: what the server still says is printed.
    peer.send("* last words");
    peer.close();

    let status = client.wait();
    assert_eq!(
        client.stdout.text(),
        format!("{WELCOME}\n* members of lobby: alice\n* last words\n")
    );
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn control_characters_from_others_are_printed_escaped() {
    let server = FakeServer::new();
    let mut client = Client::start(&["--quiet", "0.2", &server.addr().to_string()]);
    client.close_stdin();
    let mut peer = server.accept();
    // A carriage return to overwrite the line with a fake one, a colour, cursor movement
    // (two lines up, clear the line), a window title, a C1 CSI and a DEL.
    peer.send(
        "<mallory> hi\r<alice> I owe mallory 100 \x1b[31mred\x1b[2A\x1b[2K up \
         \x1b]0;pwned\x07 \u{9b}2J \x7f end",
    );
    assert_eq!(peer.line(), None);
    peer.close();

    let status = client.wait();
    let out = client.stdout.bytes();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "<mallory> hi\\r<alice> I owe mallory 100 \\x1b[31mred\\x1b[2A\\x1b[2K up \
         \\x1b]0;pwned\\x07 \\u{9b}2J \\x7f end\n"
    );
    for forbidden in [&b"\x1b"[..], b"\r", b"\x07", b"\x7f", "\u{9b}".as_bytes()] {
        assert!(
            !out.windows(forbidden.len()).any(|w| w == forbidden),
            "{forbidden:?} reached the output"
        );
    }
    assert!(status.success(), "{status}");
}

#[test]
fn a_refused_connection_is_said_plainly_and_exits_nonzero() {
    // A port that was free a moment ago, with nobody listening on it now.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut client = Client::start(&[&addr.to_string()]);
    let status = client.wait();
    let err = client.stderr.text();
    assert!(
        err.contains(&format!("cannot connect to {addr}: connection refused")),
        "{err:?}"
    );
    assert_eq!(status.code(), Some(1), "{status}");
    assert_eq!(client.stdout.text(), "");
}

#[test]
fn a_silent_server_is_reported_after_a_second() {
    let server = FakeServer::new();
    let started = Instant::now();
    let mut client = Client::start(&[&server.addr().to_string()]);
    let mut peer = server.accept(); // accepted, and then nothing: a busy server

    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !client.stderr.text().contains("waiting"),
        "too early: {:?}",
        client.stderr.text()
    );
    let err = client
        .stderr
        .wait_contains("connected, waiting for the server to answer…");
    assert!(started.elapsed() >= Duration::from_secs(1), "{err:?}");

    // When it finally answers, the client says so and goes on.
    peer.send(WELCOME);
    client.stdout.wait_contains(WELCOME);
    client.stderr.wait_contains("the server answered after");
    client.type_in("/quit\n");
    assert_eq!(peer.line().as_deref(), Some("/quit"));
    peer.send("* bye");
    peer.close();
    assert!(client.wait().success());
}

#[test]
fn a_server_that_closes_first_is_reported_and_exits_nonzero() {
    let server = FakeServer::new();
    let mut client = Client::start(&[&server.addr().to_string()]);
    let peer = server.accept();
    peer.close();
    let status = client.wait();
    assert!(
        client
            .stderr
            .text()
            .contains("the server closed the connection"),
        "{:?}",
        client.stderr.text()
    );
    assert_eq!(status.code(), Some(1));
}

#[test]
fn shutting_down_and_server_full_have_their_own_words() {
    for (line, words) in [
        ("* server shutting down", "the server shut down"),
        ("! server full", "the server is full"),
    ] {
        let server = FakeServer::new();
        let mut client = Client::start(&[&server.addr().to_string()]);
        let mut peer = server.accept();
        peer.send(line);
        peer.close();
        let status = client.wait();
        assert_eq!(client.stdout.text(), format!("{line}\n"));
        assert!(
            client.stderr.text().contains(words),
            "{:?}",
            client.stderr.text()
        );
        assert_eq!(status.code(), Some(1));
    }
}

#[test]
fn a_huge_input_line_reaches_the_server_whole_and_is_not_a_command() {
    let server = FakeServer::new();
    let mut client = Client::start(&[&server.addr().to_string()]);
    // Longer than the client holds at once: it goes out in pieces, and a piece that
    // happens to start with `/quit` is not a /quit.
    let long = format!("{}/quit now", "x".repeat(65_536));
    let mut stdin = client.stdin.take().unwrap();
    let typed = format!("{long}\n/quit\n");
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(typed.as_bytes()).unwrap();
    });
    let mut peer = server.accept();
    peer.send(WELCOME);
    assert_eq!(peer.line().as_deref(), Some(long.as_str()));
    assert_eq!(peer.line().as_deref(), Some("/quit"));
    writer.join().unwrap();
    peer.send("* bye");
    peer.close();
    assert!(client.wait().success());
}
