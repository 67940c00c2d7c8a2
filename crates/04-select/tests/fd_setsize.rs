//! The wall of this stage, as a test: `select(2)` cannot watch a descriptor numbered 1024 or
//! more, so `chat-select` holds at most 1000 clients whatever `--max-clients` says, and
//! answers the next one `! server full` instead of corrupting memory or crashing.
//! `cargo test -p chat-select --test fd_setsize` (about 1000 loopback connections).

use std::time::Instant;

use chat_testkit::{parse_welcome, Client, Server, LINE_TIMEOUT};

/// What the stage promises to hold (`chat_select::SELECT_MAX_CLIENTS`).
const HELD: usize = chat_select::SELECT_MAX_CLIENTS;

#[test]
fn beyond_fd_setsize_clients_are_refused_not_crashed() {
    let args: Vec<String> = ["--addr", "127.0.0.1:0", "--max-clients", "5000"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server = Server::start(env!("CARGO_BIN_EXE_chat-select"), &args, None);

    // Every client up to the limit is welcomed. Each one moves to a room of its own right
    // away, so that the lobby (and the `joined lobby` lines) stays small.
    let deadline = Instant::now() + 3 * LINE_TIMEOUT;
    let mut held: Vec<Client> = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let mut c = server.connect(&format!("c{i}"));
        let line = c
            .try_line_within(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("{}: expected a welcome, got {e}", c.who_am_i()));
        c.nick = parse_welcome(&line).unwrap_or_else(|e| panic!("{}: {e}", c.who_am_i()));
        c.send(&format!("/join r{i}"));
        c.expect(&format!("* you joined r{i} (1 members)"));
        held.push(c);
    }

    // The next one is refused politely, although `--max-clients` was 5000.
    let mut extra = server.connect("one too many");
    extra.expect("! server full");
    extra.expect_closed();

    // Those already in are unaffected: the first and the last still talk to each other.
    let (first, last) = held.split_at_mut(HELD - 1);
    let (first, last) = (&mut first[0], &mut last[0]);
    last.send(&format!("/msg {} still here", first.nick));
    first.expect(&format!("[{}] still here", last.nick));

    let stderr = server.stderr_text();
    assert!(
        stderr.contains(&format!("--max-clients 5000 capped to {HELD}")),
        "the cap was not announced on stderr:\n{stderr}"
    );
    server.finish();
}
