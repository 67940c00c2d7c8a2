//! The limit of each mode, tested as a limit: what the next client sees when the server
//! is as busy as its design allows (`sequential`: one client; `pool`: N clients).
//! A `concurrent` stage has no such limit; its limits are `--max-clients` and the
//! descriptor limit (see `stress.rs`).
//!
//! Run through a stage: `cargo test -p chat-threadpool --test conformance -- pool_serves`.

use super::lobby;
use crate::{Options, Target};

/// Sequential: while A is connected, B is connected but gets no line; when A quits, B is
/// welcomed and is alone in lobby.
///
/// Breaks, if it fails: the `sequential` mode's own promise, tested as a limit: one client at a
/// time, the next served when the first leaves.
pub fn sequential_one_client_at_a_time(t: &Target) {
    let server = t.start(Options::default());
    let mut a = server.join("A");
    let mut b = server.connect("B");
    b.expect_silence("a sequential server serves one client at a time, and A is connected");
    a.sync(); // A is served as usual meanwhile
    a.send("/quit");
    a.expect("* bye");
    a.expect_eof();
    let nick = b.expect_welcome();
    b.expect_who("lobby", &[&nick]);
    server.finish();
}

/// Pool of 2: two clients are welcomed, the third gets no line while both are connected;
/// when one leaves, the third is welcomed and the room sees it join.
///
/// Breaks, if it fails: the `pool` mode's own promise, tested as a limit: N workers serve N
/// clients, the next served when one leaves.
pub fn pool_serves_at_most_n_clients(t: &Target) {
    let server = t.start(Options {
        workers: Some(2),
        ..Options::default()
    });
    let mut v = lobby(&server, 2, "P");
    let mut c = server.connect("P2");
    c.expect_silence("a pool of 2 workers serves 2 clients, and both are connected");
    for x in &mut v {
        x.sync(); // both are served as usual meanwhile
    }
    let (na, nb) = (v[0].nick.clone(), v[1].nick.clone());
    v[0].send("/quit");
    v[0].expect("* bye");
    v[0].expect_eof();
    v[1].expect(&format!("* {na} left lobby"));
    let nc = c.expect_welcome();
    v[1].expect(&format!("* {nc} joined lobby"));
    c.expect_who("lobby", &[&nb, &nc]);
    server.finish();
}
