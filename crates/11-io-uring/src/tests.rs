//! The stage's own tests beside the conformance suite: the operation tokens, and the real
//! ring under 10,000 connects and closes.

use super::*;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::thread;

#[test]
fn user_data_round_trips() {
    for op in [
        Op::Accept,
        Op::Signal,
        Op::Read(ClientId(0)),
        Op::Write(ClientId(42)),
        Op::Hangup(ClientId((1 << KIND_SHIFT) - 1)),
        Op::Cancel,
        Op::Close,
    ] {
        assert_eq!(Op::decode(op.encode()), Some(op));
    }
    assert_eq!(Op::decode(0), None);
    assert_eq!(Op::decode(9 << KIND_SHIFT), None);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

/// The real ring over loopback: 10,000 clients connect and go away in four ways (at
/// once; after a line; after `/quit`, reading to the end; after a burst, unread), with
/// two read buffers for all of them, so that reads keep finding none free. Then the
/// server stops: every provided buffer is back in the ring, nothing is in flight, and
/// every descriptor it opened is closed (this test is the only one here that opens
/// descriptors).
#[test]
fn ten_thousand_connects_and_closes_on_a_real_ring() {
    const WORKERS: usize = 8;
    const CLIENTS: usize = 10_000;
    let fds_before = open_fds();
    let listener = chat_net::bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = Shutdown::new().expect("shutdown");
    let server = {
        let shutdown = shutdown.clone();
        // Two read buffers for all these clients: reads find none free (ENOBUFS) and
        // must be submitted again, the path a large server takes under a burst.
        thread::spawn(move || {
            serve(
                Ring::with_read_buffers(2)?,
                listener,
                Config::default(),
                shutdown,
            )
        })
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            thread::spawn(move || {
                for i in 0..CLIENTS / WORKERS {
                    let mut stream = TcpStream::connect(addr).expect("connect");
                    match (w + i) % 4 {
                        0 => {}
                        1 => stream.write_all(b"hello\n").expect("write"),
                        2 => {
                            let mut reader = BufReader::new(stream.try_clone().unwrap());
                            let mut welcome = String::new();
                            reader.read_line(&mut welcome).expect("welcome");
                            assert!(welcome.starts_with("* welcome "), "{welcome:?}");
                            stream.write_all(b"/quit\n").expect("write");
                            let mut rest = Vec::new();
                            reader.read_to_end(&mut rest).expect("read to the end");
                            assert!(rest.ends_with(b"* bye\n"), "{rest:?}");
                        }
                        _ => stream.write_all(&b"x\n".repeat(500)).expect("write"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client worker");
    }
    shutdown.trigger();
    let report = server.join().expect("server thread").expect("serve");
    drop(shutdown);
    assert!(
        report.starved_reads > 0,
        "no read ran out of buffers: {report:?}"
    );
    assert_eq!(report.buffers_in_ring, report.buffers, "{report:?}");
    assert_eq!(report.in_flight, 0, "{report:?}");
    assert_eq!(report.conns, 0, "{report:?}");
    assert!(report.stats.completed >= CLIENTS as u64, "{report:?}");
    assert!(
        report.stats.enters < report.stats.completed,
        "one wait collects many completions: {report:?}"
    );
    assert_eq!(open_fds(), fds_before, "a descriptor leaked: {report:?}");
}
