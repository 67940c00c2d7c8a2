//! A stage-specific check beside the conformance suite: a client that sends `/quit` while
//! the server still owes it more than its socket can take gets everything, then `* bye`,
//! then the close. The writer task must keep writing after the server said "close" (and
//! only `has_work` saying `false` ends it): a writer that stopped at the close would cut the
//! tail off. (The same check as stage 06's, adapted from `crates/06-mio/tests/linger.rs`.)
//!
//! ```text
//! cargo test -p chat-futures --test linger
//! ```

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;

use chat_testkit::{parse_welcome, Server, LINE_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// Messages queued for the quitting client, about 1 KB each: 8 MB, more than its small
/// receive buffer and the server's kernel send buffer hold together (Linux grows a send
/// buffer up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default), so that at least 4 MB
/// still wait in the server's outbox when `/quit` arrives.
const MESSAGES: usize = 8_000;

/// `--outbox-bytes` for this check: room for all of the above, so nobody is a slow consumer.
const OUTBOX_BYTES: &str = "16777216";

/// A connection with a small, fixed receive buffer (setting `SO_RCVBUF` turns the kernel's
/// autotuning off), so that what it is sent piles up on the server's side. (Much smaller, and
/// the kernel holds back its window updates: the transfer would crawl on retransmit timers.)
/// Reads go through a large buffer: the server gives a closing client 2 seconds
/// (`CLOSE_GRACE` in `src/lib.rs`) to take its last lines, and this reader must not be
/// the slow part.
fn small_window_client(server: &Server) -> BufReader<TcpStream> {
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("a TCP socket");
    socket
        .set_recv_buffer_size(16 * 1024)
        .expect("SO_RCVBUF before connecting");
    socket
        .connect_timeout(&server.addr().into(), LINE_TIMEOUT)
        .expect("connect to the server");
    let stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(LINE_TIMEOUT))
        .expect("a read timeout");
    BufReader::with_capacity(1 << 20, stream)
}

/// The next line (without its `\n`), or `None` at the end of the stream.
fn next_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    let n = reader
        .read_until(b'\n', &mut line)
        .expect("a line within the timeout");
    if n == 0 {
        return None;
    }
    assert_eq!(
        line.pop(),
        Some(b'\n'),
        "the connection ended inside a line"
    );
    Some(String::from_utf8(line).expect("UTF-8 from the server"))
}

#[test]
fn quit_with_a_full_socket_still_delivers_everything_then_bye() {
    let server = Server::start(
        env!("CARGO_BIN_EXE_chat-futures"),
        &[
            "--addr".to_string(),
            "127.0.0.1:0".to_string(),
            "--outbox-bytes".to_string(),
            OUTBOX_BYTES.to_string(),
        ],
        None,
    );
    let mut quitter = small_window_client(&server);
    let welcome = next_line(&mut quitter).expect("a welcome");
    parse_welcome(&welcome).expect("a welcome line");
    let mut sender = server.join("sender");

    let pad = "x".repeat(990);
    for i in 0..MESSAGES {
        sender.send(&format!("{i} {pad}"));
    }
    // The reply to /who comes after the server has handled every message above: by now all
    // of them are queued for the quitter, which has read none of them.
    sender.sync();
    quitter.get_mut().write_all(b"/quit\n").expect("send /quit");

    // Only now does the quitter read: every message, in order, then the goodbye, then EOF.
    let mut expected = vec![format!("* {} joined lobby", sender.nick)];
    expected.extend((0..MESSAGES).map(|i| format!("<{}> {i} {pad}", sender.nick)));
    expected.push("* bye".to_string());
    for (i, want) in expected.iter().enumerate() {
        match next_line(&mut quitter) {
            Some(got) if got == *want => {}
            Some(got) => panic!("line {i}: expected {want:.40?}, got {got:.40?}"),
            None => panic!("line {i}: expected {want:.40?}, got the end of the stream"),
        }
    }
    assert_eq!(
        next_line(&mut quitter),
        None,
        "the server must close after `* bye`"
    );
    server.finish();
}
