//! A stage-specific check beside the conformance suite: a client that sends `/quit` while it
//! is owed more than its socket can take, and then never reads, is closed all the same. The
//! writer task is stuck in a write that will never finish; the reaper shuts the socket down
//! once `CLOSE_GRACE` has passed. Without it, that connection would stay open forever.
//!
//! ```text
//! cargo test -p chat-async-std --test close_grace
//! ```

use std::net::TcpStream;
use std::time::{Duration, Instant};

use chat_testkit::{Client, Server, LINE_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// Messages queued for the quitter, about 1 KB each: 8 MB, more than its small receive
/// buffer and the server's kernel send buffer (at most 4 MiB) hold together.
const MESSAGES: usize = 8_000;

/// `--outbox-bytes` for this check: room for all of the above, so nobody is a slow consumer.
const OUTBOX_BYTES: &str = "16777216";

/// The most this check waits for the server to close the quitter's socket.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

/// A client with a small, fixed receive buffer, so that what it is sent piles up on the
/// server's side.
fn small_window_client(server: &Server, label: &str) -> Client {
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("a TCP socket");
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("SO_RCVBUF before connecting");
    socket
        .connect_timeout(&server.addr().into(), LINE_TIMEOUT)
        .expect("connect to the server");
    Client::new(label, TcpStream::from(socket)).expect("socket options")
}

#[test]
fn quitter_that_never_reads_is_closed_after_its_grace() {
    let server = Server::start(
        env!("CARGO_BIN_EXE_chat-async-std"),
        &[
            "--addr".to_string(),
            "127.0.0.1:0".to_string(),
            "--outbox-bytes".to_string(),
            OUTBOX_BYTES.to_string(),
        ],
        None,
    );
    let mut quitter = small_window_client(&server, "quitter");
    quitter.expect_welcome();
    let mut sender = server.join("sender");
    let pad = "x".repeat(990);
    for i in 0..MESSAGES {
        sender.send(&format!("{i} {pad}"));
    }
    // The reply to /who comes after the server has handled every message above.
    sender.sync();
    let open_before = server.open_fds();
    quitter.send("/quit");
    sender.expect(&format!("* {} left lobby", quitter.nick));
    // The quitter reads nothing from here on, yet its socket must be closed.
    let deadline = Instant::now() + CLOSED_WITHIN;
    while server.open_fds() >= open_before {
        assert!(
            Instant::now() < deadline,
            "a client that quit and never read its last lines still holds its connection \
             {CLOSED_WITHIN:?} later"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Everybody else is still served.
    sender.sync();
    server.finish();
}
