//! A stage-specific check beside the conformance suite, for both flavors: a client that sends
//! `/quit` while the server still owes it more than its socket can take gets everything, then
//! `* bye`, then the close. The client's task keeps writing after the protocol said "close"
//! (`farewell` in `src/lib.rs`), for as long as the client keeps taking bytes; a task that
//! returned at once would drop the socket and cut the tail off.
//!
//! ```text
//! cargo test -p chat-tokio --test farewell
//! ```

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;

use chat_testkit::{parse_welcome, Server, LINE_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// Messages queued for the quitting client, about 1 KB each: 8 MB, more than its small
/// receive buffer and the server's kernel send buffer hold together (Linux grows a send
/// buffer up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default), so that megabytes still
/// wait in the server's outbox when `/quit` arrives.
const MESSAGES: usize = 8_000;

/// `--outbox-bytes` for this check: room for all of the above, so nobody is a slow consumer.
const OUTBOX_BYTES: &str = "16777216";

/// A connection with a small, fixed receive buffer (setting `SO_RCVBUF` turns the kernel's
/// autotuning off), so that what it is sent piles up on the server's side. Reads go through
/// a large buffer, so that this reader is never the slow part.
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

/// The first 40 bytes of a line (they are all ASCII), for failure messages.
fn head(line: &str) -> &str {
    &line[..line.len().min(40)]
}

/// Queues 8 MB for a client that reads nothing, lets it send `/quit`, then reads: every
/// message in order, `* bye`, the end of the stream.
fn quit_with_a_full_socket(flavor: &str) {
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--outbox-bytes",
        OUTBOX_BYTES,
        "--flavor",
        flavor,
    ]
    .map(String::from);
    let server = Server::start(env!("CARGO_BIN_EXE_chat-tokio"), &args, None);
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
            Some(got) => panic!(
                "{flavor}: line {i}: expected {:?}..., got {:?}...",
                head(want),
                head(&got)
            ),
            None => panic!(
                "{flavor}: line {i}: expected {:?}..., got the end of the stream",
                head(want)
            ),
        }
    }
    assert_eq!(
        next_line(&mut quitter),
        None,
        "{flavor}: the server must close after `* bye`"
    );
    server.finish();
}

#[test]
fn current_thread_quit_with_a_full_socket_still_gets_everything_then_bye() {
    quit_with_a_full_socket("current-thread");
}

#[test]
fn multi_thread_quit_with_a_full_socket_still_gets_everything_then_bye() {
    quit_with_a_full_socket("multi-thread");
}
