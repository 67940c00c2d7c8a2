//! Closing is a write like any other: a client that sends `/quit` while the server still owes
//! it more than its socket can take must get everything, then `* bye`, then the close; and a
//! client that quits and never reads must not keep its socket for ever.
//!
//! ```text
//! cargo test -p chat-select --test linger
//! ```

use std::collections::HashSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chat_testkit::{parse_welcome, Client, Server, LINE_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// Messages queued for the quitting client, about 1 KB each: 8 MB, more than its small
/// receive buffer and the server's kernel send buffer (at most `net.ipv4.tcp_wmem`'s maximum,
/// 4 MiB by default) hold together, so megabytes still wait in its outbox at `/quit`.
const MESSAGES: usize = 8_000;

/// `--outbox-bytes` for these checks: room for all of the above, so nobody is a slow consumer.
const OUTBOX_BYTES: &str = "16777216";

fn start() -> Server {
    let args: Vec<String> = ["--addr", "127.0.0.1:0", "--outbox-bytes", OUTBOX_BYTES]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Server::start(env!("CARGO_BIN_EXE_chat-select"), &args, None)
}

/// A connection with a small, fixed receive buffer (setting `SO_RCVBUF` turns the kernel's
/// autotuning off), so that what it is sent piles up on the server's side. Reads go through a
/// large buffer so that this reader is never the slow part.
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

/// A second client sends the quitter 8 MB it does not read, then the quitter sends `/quit`.
/// Returns that sender (still connected: its leaving would be one more line) and the padding
/// of its messages.
fn fill_then_quit(server: &Server, quitter: &mut BufReader<TcpStream>) -> (Client, String) {
    let welcome = next_line(quitter).expect("a welcome");
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
    (sender, pad)
}

#[test]
fn quit_with_a_full_socket_still_delivers_everything_then_bye() {
    let server = start();
    let mut quitter = small_window_client(&server);
    let (sender, pad) = fill_then_quit(&server, &mut quitter);
    let sender = &sender.nick;

    // Only now does the quitter read: every message, in order, then the goodbye, then EOF.
    let mut expected = vec![format!("* {sender} joined lobby")];
    expected.extend((0..MESSAGES).map(|i| format!("<{sender}> {i} {pad}")));
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

/// The sockets the server process holds, as `socket:[INODE]` names from `/proc/PID/fd`.
/// (Counting every descriptor would count whatever the process inherited, too.)
fn sockets(server: &Server) -> HashSet<String> {
    let dir = format!("/proc/{}/fd", server.pid());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

#[test]
fn a_quitter_that_never_reads_is_closed_anyway() {
    let server = start();
    let before = sockets(&server);
    let mut quitter = small_window_client(&server);
    let (_sender, _) = fill_then_quit(&server, &mut quitter);
    // The quitter and the sender: two new sockets. The quitter never reads, so its socket
    // can never be flushed; the server must close it after a bounded linger instead of
    // keeping it (and its megabytes of outbox) for ever. Wait for that, within a deadline.
    let deadline = Instant::now() + LINE_TIMEOUT;
    while sockets(&server).difference(&before).count() > 1 {
        assert!(
            Instant::now() < deadline,
            "the server still holds the quitter's socket {LINE_TIMEOUT:?} after /quit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.finish();
    drop(quitter);
}
