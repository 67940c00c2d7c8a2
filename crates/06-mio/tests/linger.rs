//! A stage-specific check beside the conformance suite: a client that sends `/quit` while
//! the server still owes it more than its socket can take gets everything, then `* bye`,
//! then the close. This is the partial-write bookkeeping mio leaves to us: a loop that
//! closed the socket as soon as the protocol said "close" would cut the tail off.
//!
//! ```text
//! cargo test -p chat-mio --test linger
//! ```

use std::net::TcpStream;

use chat_testkit::{Client, Server, LINE_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// Messages queued for the quitting client, about 1 KB each: 8 MB, more than its small
/// receive buffer and the server's kernel send buffer hold together (Linux grows a send
/// buffer up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default), so that at least 4 MB
/// still wait in the server's outbox when `/quit` arrives.
const MESSAGES: usize = 8_000;

/// `--outbox-bytes` for this check: room for all of the above, so nobody is a slow consumer.
const OUTBOX_BYTES: &str = "16777216";

/// A client with a small, fixed receive buffer (setting `SO_RCVBUF` turns the kernel's
/// autotuning off), so that what it is sent piles up on the server's side. (Much smaller, and
/// the kernel holds back its window updates: the transfer would crawl on retransmit timers.)
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
fn quit_with_a_full_socket_still_delivers_everything_then_bye() {
    let server = Server::start(
        env!("CARGO_BIN_EXE_chat-mio"),
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
    // The reply to /who comes after the server has handled every message above: by now all
    // of them are queued for the quitter, which has read none of them.
    sender.sync();
    quitter.send("/quit");

    // Only now does the quitter read.
    quitter.expect(&format!("* {} joined lobby", sender.nick));
    for i in 0..MESSAGES {
        quitter.expect(&format!("<{}> {i} {pad}", sender.nick));
    }
    quitter.expect("* bye");
    quitter.expect_closed();
    server.finish();
}
