//! `chat-client` (its library: a test sees only its own package's binaries) against the real
//! `chat-threads` binary over TCP: two scripted clients chat, and the client's idea of its
//! nick and room follows the server's answers.
//!
//! `cargo test -p chat-threads --test client`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use chat_client::Ending;
use chat_testkit::scripted::Run;
use chat_testkit::Server;

const BIN: &str = env!("CARGO_BIN_EXE_chat-threads");

fn start() -> Server {
    Server::start(BIN, &["--addr".into(), "127.0.0.1:0".into()], None)
}

/// Asserts that `needles` occur in `text` in this order.
#[track_caller]
fn in_order(text: &str, needles: &[&str]) {
    let mut from = 0;
    for needle in needles {
        match text[from..].find(needle) {
            Some(i) => from += i + needle.len(),
            None => panic!("{needle:?} missing (or out of order) in {text:?}"),
        }
    }
}

#[test]
fn two_scripted_clients_chat() {
    let server = start();
    let mut alice = Run::fed(&server);
    alice.send("/nick alice\n/join rust\n");
    alice.out.wait_contains("* you joined rust (1 members)");

    let mut bob = Run::script(
        &server,
        "/nick bob\n/join rust\nhello alice\n/msg alice psst\n/quit see you\n",
    );
    let bob_end = bob.outcome();
    assert_eq!(bob_end.ending, Ending::AsAsked, "{:?}", bob.err.text());
    let bob_out = bob.out.text();
    in_order(
        &bob_out,
        &[
            "* welcome ",
            "* you are now bob\n",
            "* you joined rust (2 members)\n",
            "* bye\n",
        ],
    );
    assert!(
        !bob_out.contains("<bob>"),
        "no echo of one's own lines: {bob_out:?}"
    );
    assert_eq!(bob.err.text(), "");
    assert_eq!(bob_end.session.prompt(), "bob@rust> ");

    let seen = alice.out.wait_contains("* bob left rust (see you)");
    in_order(
        &seen,
        &[
            "* you are now alice\n",
            "* you joined rust (1 members)\n",
            "* bob joined rust\n",
            "<bob> hello alice\n",
            "[bob] psst\n",
            "* bob left rust (see you)\n",
        ],
    );

    alice.send("/quit\n");
    let alice_end = alice.outcome();
    assert_eq!(alice_end.ending, Ending::AsAsked, "{:?}", alice.err.text());
    assert_eq!(alice_end.session.prompt(), "alice@rust> ");
    assert!(
        alice.out.text().ends_with("* bye\n"),
        "{:?}",
        alice.out.text()
    );
    server.finish();
}

#[test]
fn the_state_follows_the_servers_answers_only() {
    let server = start();
    let mut holder = Run::fed(&server);
    holder.send("/nick alice\n");
    holder.out.wait_contains("* you are now alice");

    // ALICE is taken (nicks are unique regardless of case): the nick must not change.
    let mut taken = Run::script(&server, "/nick ALICE\n/join den\n");
    let end = taken.outcome();
    assert!(
        taken.out.text().contains("! nick taken: ALICE"),
        "{:?}",
        taken.out.text()
    );
    let nick = end.session.nick().unwrap().to_owned();
    assert!(nick.starts_with("guest"), "{nick}");
    assert_eq!(end.session.prompt(), format!("{nick}@den> "));
    // Input ended without /quit: a half-close after the quiet period, a normal goodbye.
    assert_eq!(end.ending, Ending::AsAsked);

    // Renamed twice and moved: the last answers win.
    let mut renamed = Run::script(&server, "/nick carol\n/join den\n/nick dave\n");
    let end = renamed.outcome();
    assert_eq!(end.session.prompt(), "dave@den> ");
    assert_eq!(
        (end.session.nick(), end.session.room()),
        (Some("dave"), Some("den"))
    );
    assert_eq!(end.ending, Ending::AsAsked);

    holder.input = None; // the end of its input: it leaves after its quiet period
    assert_eq!(holder.outcome().ending, Ending::AsAsked);
    server.finish();
}
