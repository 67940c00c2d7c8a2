//! `chat-client` (its library: a test sees only its own package's binaries) against the real
//! `chat-sequential` binary over TCP: a second client, queued in the kernel while the
//! first is served, is told that it is connected and waiting, and is served afterwards.
//!
//! `cargo test -p chat-sequential --test client`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use std::time::Instant;

use chat_client::{Ending, ANSWER_WAIT, WAITING};
use chat_testkit::scripted::Run;
use chat_testkit::Server;

const BIN: &str = env!("CARGO_BIN_EXE_chat-sequential");

fn start() -> Server {
    Server::start(BIN, &["--addr".into(), "127.0.0.1:0".into()], None)
}

#[test]
fn a_second_client_is_told_it_waits_then_is_served() {
    let server = start();
    let mut first = Run::fed(&server);
    first.out.wait_contains("* welcome ");

    let started = Instant::now();
    let mut second = Run::fed(&server);
    second.send("/nick bob\n"); // queued with the connection, like nc would
    let err = second.err.wait_contains(WAITING);
    assert!(started.elapsed() >= ANSWER_WAIT, "said too early: {err:?}");
    assert_eq!(second.out.text(), "", "served while the first client is");

    // The first one leaves: the server turns to the second, which says it was answered.
    first.send("/quit\n");
    assert_eq!(first.outcome().ending, Ending::AsAsked);
    second.out.wait_contains("* you are now bob\n");
    assert!(
        second.out.text().starts_with("* welcome "),
        "{:?}",
        second.out.text()
    );
    second.err.wait_contains("the server answered after");

    second.input = None; // its input ends: it leaves after the quiet period
    let end = second.outcome();
    assert_eq!(end.ending, Ending::AsAsked, "{:?}", second.err.text());
    assert_eq!(end.session.nick(), Some("bob"));
    server.finish();
}
