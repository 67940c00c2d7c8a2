//! Tests of the blocking session's writes (one connection, over loopback: lines from several
//! threads never interleave, a full socket makes the writer wait and is cut after
//! `SLOW_GRACE`, nobody waits once the server stops, closing lingers) and of the order of
//! notices under churn (a small thread-per-client server).

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::thread;

use socket2::{Domain, Socket, Type};

use super::*;

/// The smallest `--outbox-bytes`: the smallest send buffer a stage can ask for.
const OUTBOX: usize = chat_core::MIN_OUTBOX_BYTES;

/// A connection over loopback: the server's side as a [`Conn`], and the client's socket, whose
/// receive buffer is `rcvbuf` bytes (set before connecting, so that the window is small from
/// the start and the server's side fills up soon when it does not read).
fn pair(rcvbuf: usize) -> (Conn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    client.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    client
        .connect(&listener.local_addr().expect("address").into())
        .expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (Conn::new(server, OUTBOX), client.into())
}

/// A line of `len` bytes of `c`, then `\n`.
fn line_of(c: u8, len: usize) -> Vec<u8> {
    let mut line = vec![c; len];
    line.push(b'\n');
    line
}

/// Queues a line and writes the queue out, as a sender does.
fn send(conn: &Conn, line: &[u8], stop: &Shutdown) {
    conn.queue(Bytes::copy_from_slice(line));
    conn.flush(Some(stop));
}

/// Writes lines to a client that never reads until a write cuts it; returns how long that
/// last write took.
fn fill_until_cut(conn: &Conn, stop: &Shutdown) -> Duration {
    let line = line_of(b'x', 1000);
    for _ in 0..100_000 {
        let started = Instant::now();
        send(conn, &line, stop);
        if conn.is_cut() {
            return started.elapsed();
        }
    }
    panic!("100 MB written to a client that never reads, and it was not cut");
}

#[test]
fn lines_from_several_threads_never_interleave() {
    const WRITERS: u8 = 4;
    const LINES: usize = 200;
    const LEN: usize = 3000; // several per send buffer: writes end mid-line and must go on
    let (conn, client) = pair(16 * 1024);
    let stop = Shutdown::new().expect("shutdown");
    let received = thread::scope(|s| {
        for w in 0..WRITERS {
            let (conn, stop) = (&conn, &stop);
            s.spawn(move || {
                let line = line_of(b'a' + w, LEN);
                for _ in 0..LINES {
                    send(conn, &line, stop);
                }
            });
        }
        let reader = s.spawn(|| {
            // Start late, so that the send buffer is full and the writers wait.
            thread::sleep(SLOW_GRACE / 4);
            let mut counts = HashMap::new();
            let mut lines = BufReader::new(&client);
            let mut text = Vec::new();
            while counts.values().sum::<usize>() < WRITERS as usize * LINES {
                text.clear();
                let n = lines.read_until(b'\n', &mut text).expect("read");
                assert!(n > 0, "the connection closed after {counts:?}");
                let first = text[0];
                assert!(
                    text.len() == LEN + 1 && text[..LEN].iter().all(|&b| b == first),
                    "a line was cut by another: {:?}...",
                    String::from_utf8_lossy(&text[..text.len().min(80)])
                );
                *counts.entry(first).or_insert(0usize) += 1;
            }
            counts
        });
        reader.join().expect("reader")
    });
    assert!(!conn.is_cut(), "a client that reads was cut");
    assert_eq!(received.len(), WRITERS as usize);
    assert!(received.values().all(|&n| n == LINES), "{received:?}");
}

#[test]
fn a_client_that_never_reads_is_cut_after_slow_grace() {
    let (conn, mut client) = pair(4096);
    let stop = Shutdown::new().expect("shutdown");
    let took = fill_until_cut(&conn, &stop);
    assert!(
        took >= SLOW_GRACE && took < SLOW_GRACE + Duration::from_secs(1),
        "the write that found the socket full should have waited SLOW_GRACE ({SLOW_GRACE:?}), \
         then cut the client: it took {took:?}"
    );
    // Cut: the client reads what was queued, then the end of the stream.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = vec![0; 64 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[test]
fn a_client_that_reads_within_slow_grace_is_not_cut() {
    const LINES: usize = 500; // 500 KB: many times what the socket buffers hold
    let (conn, client) = pair(16 * 1024);
    let stop = Shutdown::new().expect("shutdown");
    let (longest, received) = thread::scope(|s| {
        let reader = s.spawn(|| {
            thread::sleep(SLOW_GRACE / 2);
            let mut total = 0;
            let mut buf = vec![0; 64 * 1024];
            loop {
                match (&client).read(&mut buf) {
                    Ok(0) => return total,
                    Ok(n) => total += n,
                    Err(err) => panic!("read: {err}"),
                }
            }
        });
        let line = line_of(b'r', 999);
        let mut longest = Duration::ZERO;
        for _ in 0..LINES {
            let started = Instant::now();
            send(&conn, &line, &stop);
            longest = longest.max(started.elapsed());
        }
        let _ = conn.stream.shutdown(Direction::Write);
        (longest, reader.join().expect("reader"))
    });
    assert!(
        !conn.is_cut(),
        "a client that started reading within SLOW_GRACE was cut"
    );
    assert_eq!(received, LINES * 1000);
    assert!(
        longest >= SLOW_GRACE / 4,
        "no write waited ({longest:?} at most): the test did not fill the socket"
    );
}

/// Fills the socket's send buffer behind the queue's back, until the kernel takes no more.
fn fill_raw(conn: &Conn) {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    while SockRef::from(&conn.stream)
        .send_with_flags(&[b'x'; 1000], flags)
        .is_ok()
    {}
}

#[test]
fn nobody_waits_for_a_full_socket_once_the_server_stops() {
    let (conn, _client) = pair(4096);
    let stop = Shutdown::new().expect("shutdown");
    fill_raw(&conn);
    let started = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(SLOW_GRACE / 4);
            stop.trigger();
        });
        send(&conn, &line_of(b'w', 100), &stop); // waits: the socket is full
    });
    let took = started.elapsed();
    assert!(
        took >= SLOW_GRACE / 4 && took < SLOW_GRACE * 3 / 4,
        "the server stopped {:?} after the write began to wait, yet it returned after {took:?}",
        SLOW_GRACE / 4
    );
    // The line stays queued for the shutdown, which never waits: full, so cut. (Filled again:
    // meanwhile the kernel may have made a little room, moving data to the client's side.)
    assert!(!conn.is_cut());
    fill_raw(&conn);
    conn.flush(None);
    assert!(conn.is_cut());
}

#[test]
fn the_shutdown_notice_comes_after_what_is_owed_or_the_connection_is_cut() {
    // An empty socket takes what is owed and the notice; the client reads them, then the end
    // of the stream. Nothing queued after the notice is written.
    let (conn, client) = pair(16 * 1024);
    conn.queue(Bytes::from_static(b"owed\n"));
    conn.queue_goodbye(
        Some(chat_core::SHUTDOWN_LINE),
        Instant::now() + SHUTDOWN_GRACE,
    );
    conn.queue(Bytes::from_static(b"too late\n"));
    conn.flush(None);
    assert!(!conn.is_cut());
    assert!(conn.is_done());
    let mut got = String::new();
    (&client).read_to_string(&mut got).expect("read");
    assert_eq!(got, "owed\n* server shutting down\n");
    // A full one cannot take it at once: cut.
    let (conn, _client) = pair(4096);
    fill_raw(&conn);
    conn.queue_goodbye(
        Some(chat_core::SHUTDOWN_LINE),
        Instant::now() + SHUTDOWN_GRACE,
    );
    conn.flush(None);
    assert!(
        conn.is_cut(),
        "a full socket at shutdown must be closed at once"
    );
}

#[test]
fn closing_reads_until_the_client_ends_its_stream_or_the_deadline() {
    let mut buf = [0u8; READ_BUF];
    // The client goes on talking after `* bye`, reads everything, then closes: no reset, and
    // the linger ends as soon as the client has closed.
    let (conn, mut client) = pair(16 * 1024);
    let stop = Shutdown::new().expect("shutdown");
    conn.queue(Bytes::from_static(b"* bye\n"));
    conn.queue_goodbye(None, Instant::now() + CLOSE_GRACE);
    conn.flush(Some(&stop));
    client.write_all(&[b'z'; 100_000]).expect("talk after bye");
    let started = Instant::now();
    thread::scope(|s| {
        s.spawn(|| {
            let mut got = Vec::new();
            (&client).read_to_end(&mut got).expect("no reset");
            assert_eq!(got, b"* bye\n");
            let _ = client.shutdown(Direction::Write);
        });
        conn.linger(*conn.closing.get().expect("closing"), &mut buf);
    });
    assert!(
        started.elapsed() < CLOSE_GRACE,
        "lingered past the client's close"
    );
    // A client that never closes is closed at the deadline.
    let (conn, _client) = pair(16 * 1024);
    let started = Instant::now();
    conn.queue_goodbye(None, started + Duration::from_millis(200));
    conn.flush(Some(&stop));
    conn.linger(*conn.closing.get().expect("closing"), &mut buf);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(1),
        "{took:?}"
    );
}

/// Serves `listener` with a thread per client, as stage 02 does, until `shutdown`.
fn serve_threads(listener: TcpListener, shutdown: &Shutdown) -> Arc<Shared> {
    let shared = Shared::new(Limits::default(), shutdown);
    stop_on(&shared, &listener).expect("stop thread");
    let (acceptor, shutdown) = (Arc::clone(&shared), shutdown.clone());
    thread::spawn(move || {
        while let Some(stream) = chat_net::accept(&listener, &shutdown) {
            if let Some(client) = acceptor.admit(stream) {
                thread::spawn(move || client.serve());
            }
        }
    });
    shared
}

/// Issue 17: clients connecting and leaving in a loop, watched from the lobby. The watcher
/// must see every nick leave before it joins again, and every `/who` it sends meanwhile must
/// list exactly the members the notices before it announced, although many threads deliver at
/// once and after the lock is released (the queues keep the hub's order).
#[test]
fn notices_keep_their_causal_order_under_churn() {
    /// Connections made and closed, by each of `CHURNERS` threads.
    const ROUNDS: usize = 200;
    const CHURNERS: usize = 4;
    /// Silent members of the lobby: every notice has that many more recipients, so
    /// delivering one takes long enough for the next arrival to race it.
    const BYSTANDERS: usize = 30;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = Shutdown::new().expect("shutdown");
    let shared = serve_threads(listener, &shutdown);
    let mut watcher = TcpStream::connect(addr).expect("connect");
    watcher
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut lines = BufReader::new(watcher.try_clone().expect("clone")).lines();
    let mut next_line = move || lines.next().expect("a line").expect("a line");
    let welcome = next_line();
    let me = welcome
        .strip_prefix("* welcome ")
        .and_then(|w| w.split(' ').next())
        .expect("a welcome")
        .to_owned();
    let bystanders: Vec<TcpStream> = (0..BYSTANDERS)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut present = std::collections::BTreeSet::from([me]);
    for _ in 0..BYSTANDERS {
        let line = next_line();
        let nick = line
            .strip_prefix("* ")
            .and_then(|l| l.strip_suffix(" joined lobby"));
        present.insert(nick.expect("a bystander's arrival").to_owned());
    }
    thread::scope(|s| {
        for _ in 0..CHURNERS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    let churner = TcpStream::connect(addr).expect("connect");
                    let mut first = String::new();
                    BufReader::new(&churner)
                        .read_line(&mut first)
                        .expect("welcome");
                    assert!(first.starts_with("* welcome "), "{first}");
                }
            });
        }
        let (mut joins, mut leaves, mut whos) = (0, 0, 0);
        watcher.write_all(b"/who\n").expect("/who");
        while leaves < CHURNERS * ROUNDS {
            let line = next_line();
            if let Some(nick) = line
                .strip_prefix("* ")
                .and_then(|l| l.strip_suffix(" joined lobby"))
            {
                assert!(
                    present.insert(nick.to_owned()),
                    "{nick} joined twice: {line}"
                );
                joins += 1;
            } else if let Some(nick) = line
                .strip_prefix("* ")
                .and_then(|l| l.strip_suffix(" left lobby"))
            {
                assert!(present.remove(nick), "{nick} left without joining: {line}");
                leaves += 1;
            } else if let Some(list) = line.strip_prefix("* members of lobby: ") {
                whos += 1;
                // Sorted already (all nicks here are lowercase), at most 100, then the rest
                // counted: `a, b, ... and N more`.
                let (list, more) = match list.rsplit_once(" and ") {
                    Some((list, tail)) => {
                        let more = tail.strip_suffix(" more").and_then(|n| n.parse().ok());
                        (list, more.expect("`and N more`"))
                    }
                    None => (list, 0),
                };
                let listed: Vec<&str> = list.split(", ").collect();
                let known: Vec<&str> = present.iter().map(String::as_str).collect();
                assert_eq!(
                    (&listed[..], listed.len() + more),
                    (&known[..listed.len().min(known.len())], known.len()),
                    "/who number {whos} disagrees with the notices"
                );
                watcher.write_all(b"/who\n").expect("/who");
            } else {
                panic!("unexpected line {line:?}");
            }
        }
        assert_eq!(joins, CHURNERS * ROUNDS);
        assert!(
            whos > 1,
            "the watcher's /who was never answered during the churn"
        );
    });
    drop(bystanders);
    shutdown.trigger();
    shared.wait_for_sessions();
}
