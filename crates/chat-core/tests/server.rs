//! `Server` driven without sockets or a clock: flow control, slow consumers, closing, timers.
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use chat_core::{
    ClientId, Event, Limits, Server, ServerFull, CLOSE_GRACE, SHUTDOWN_GRACE, SLOW_GRACE,
};
use common::Stage;

const B: usize = 8192;

fn drain(server: &mut Server) -> Vec<Event> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

/// `n` one-byte lines in one buffer: the burst of the specification's example.
fn burst(n: usize) -> Vec<u8> {
    b"x\n".repeat(n)
}

#[test]
fn flush_fires_when_an_outbox_becomes_non_empty() {
    let now = Instant::now();
    let mut server = Server::new(Limits::default());
    let a = server.connect(now).unwrap();
    assert_eq!(drain(&mut server), [Event::Flush(a)]);
    let b = server.connect(now).unwrap();
    // `a` still holds its welcome: no second Flush for it.
    assert_eq!(drain(&mut server), [Event::Flush(b)]);
    server.receive(b, b"hi\nthere\n", now);
    assert!(drain(&mut server).is_empty());
    let mut got = Vec::new();
    server
        .flush(a, now, |slices| {
            let n: usize = slices.iter().map(|s| s.len()).sum();
            for s in slices {
                got.extend_from_slice(s);
            }
            Ok(n)
        })
        .unwrap();
    assert!(String::from_utf8(got)
        .unwrap()
        .ends_with("* guest2 joined lobby\n<guest2> hi\n<guest2> there\n"));
}

#[test]
fn max_clients_is_enforced_and_freed() {
    let now = Instant::now();
    let mut server = Server::new(Limits {
        max_clients: 2,
        outbox_bytes: B,
    });
    let a = server.connect(now).unwrap();
    server.connect(now).unwrap();
    assert_eq!(server.connect(now), Err(ServerFull));
    server.closed(a, now);
    assert!(server.connect(now).is_ok());
}

#[test]
fn a_burst_waits_for_readers_instead_of_dropping_them() {
    let mut stage = Stage::new(B);
    let readers: Vec<ClientId> = (0..3).map(|_| stage.connect(true)).collect();
    let sender = stage.connect(true);
    let nick = "n".repeat(24);
    stage.write(sender, format!("/nick {nick}\n").as_bytes());
    stage.settle();
    stage.write(sender, &burst(32_768));
    stage.settle();
    for &r in &readers {
        let got: Vec<String> = stage
            .lines(r)
            .into_iter()
            .filter(|l| l.starts_with('<'))
            .collect();
        assert_eq!(got.len(), 32_768, "reader {r} got {} lines", got.len());
        assert!(got.iter().all(|l| *l == format!("<{nick}> x")));
        assert!(!stage.sockets[&r].closed);
    }
    assert!(stage.server.reading(sender));
    // It did have to wait: the readers' bound is far smaller than the burst.
    assert!(stage.log.contains(&Event::Resume(sender)));
}

#[test]
fn pipelined_commands_wait_for_their_own_sender() {
    let mut stage = Stage::new(B);
    let a = stage.connect(true);
    let mut input = b"/help\n".repeat(400);
    input.extend_from_slice(b"/nick done\n");
    stage.write(a, &input);
    stage.settle();
    let lines = stage.lines(a);
    assert_eq!(lines.iter().filter(|l| *l == "* commands:").count(), 400);
    assert_eq!(lines.last().unwrap(), "* you are now done");
    assert!(!stage.sockets[&a].closed);
}

#[test]
fn a_client_that_does_not_read_holds_up_its_room_for_slow_grace_then_is_cut() {
    let mut stage = Stage::new(B);
    let reader = stage.connect(true);
    let sleeper = stage.connect(false);
    let sender = stage.connect(true);
    stage.write(
        sender,
        &b"a longer line, so the queue fills sooner\n".repeat(1000),
    );
    stage.settle();
    // The sleeper is full, so the sender waits: nobody got past the sleeper's bound.
    assert!(!stage.server.reading(sender));
    assert!(stage.owed(sleeper) <= B);
    let before = stage.lines(reader).len();
    stage.advance(SLOW_GRACE - Duration::from_millis(1));
    assert!(!stage.sockets[&sleeper].closed, "cut before its grace");
    assert_eq!(
        stage.lines(reader).len(),
        before,
        "nothing passes a full member"
    );
    stage.advance(Duration::from_millis(1));
    assert!(stage.sockets[&sleeper].closed && stage.sockets[&sleeper].cut);
    let lines = stage.lines(reader);
    assert!(lines.contains(&"* guest2 left lobby (slow consumer)".to_string()));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("<guest3>")).count(),
        1000
    );
}

#[test]
fn a_reader_that_catches_up_is_not_cut() {
    let mut stage = Stage::new(B);
    let slowish = stage.connect(false);
    let sender = stage.connect(true);
    stage.write(sender, &burst(10_000));
    stage.settle();
    assert!(!stage.server.reading(sender));
    // It reads before its grace is over: it catches up, the sender goes on, and the clock
    // starts again only when it falls behind again.
    stage.advance(SLOW_GRACE / 2);
    stage.set_drains(slowish, true);
    stage.settle();
    stage.set_drains(slowish, false);
    stage.advance(SLOW_GRACE * 3 / 4);
    assert!(!stage.sockets[&slowish].closed);
    stage.set_drains(slowish, true);
    stage.settle();
    assert_eq!(
        stage
            .lines(slowish)
            .iter()
            .filter(|l| *l == "<guest2> x")
            .count(),
        10_000
    );
}

#[test]
fn notices_pass_the_bound_and_twice_the_bound_cuts() {
    let mut stage = Stage::new(B);
    let sleeper = stage.connect(false);
    // Each arrival owes the sleeper a `* guestN joined lobby` notice it does not read.
    let mut arrivals = 0;
    while !stage.sockets[&sleeper].closed {
        stage.connect(true);
        arrivals += 1;
        assert!(stage.owed(sleeper) <= 2 * B);
        assert!(arrivals < 1000, "never cut");
    }
    assert!(stage.sockets[&sleeper].cut);
    assert!(
        arrivals > B / 64,
        "cut after {arrivals} notices: before the bound was passed"
    );
}

#[test]
fn quit_writes_everything_then_hangs_up_then_closes_on_eof() {
    let mut stage = Stage::new(B);
    let a = stage.connect(true);
    let b = stage.connect(true);
    stage.write(b, b"/quit gone\nignored\n");
    stage.settle();
    assert_eq!(stage.lines(b).last().unwrap(), "* bye");
    assert!(stage.sockets[&b].hung_up && !stage.sockets[&b].closed);
    assert_eq!(stage.lines(a).last().unwrap(), "* guest2 left lobby (gone)");
    // What it says after `/quit` is read and ignored; its end of stream closes it.
    stage.write(b, b"still talking\n");
    stage.end(b);
    stage.settle();
    assert!(stage.sockets[&b].closed && !stage.sockets[&b].cut);
    assert!(!stage.lines(a).iter().any(|l| l.contains("talking")));
}

#[test]
fn a_quitter_that_does_not_read_is_closed_after_close_grace() {
    let mut stage = Stage::new(B);
    let a = stage.connect(false);
    stage.write(a, b"/quit\n");
    stage.settle();
    assert!(!stage.sockets[&a].closed);
    stage.advance(CLOSE_GRACE - Duration::from_millis(1));
    assert!(!stage.sockets[&a].closed);
    stage.advance(Duration::from_millis(1));
    assert!(stage.sockets[&a].closed);
    assert_eq!(stage.server.connections(), 0);
}

#[test]
fn a_half_close_is_a_goodbye_after_every_reply() {
    let mut stage = Stage::new(B);
    let watcher = stage.connect(true);
    let a = stage.connect(true);
    let mut input = b"/help\n".repeat(100); // more than fits at once: its input waits
    input.extend_from_slice(b"/who\n");
    stage.write(a, &input);
    stage.end(a);
    stage.settle();
    let lines = stage.lines(a);
    assert_eq!(lines.iter().filter(|l| *l == "* commands:").count(), 100);
    assert_eq!(lines.last().unwrap(), "* members of lobby: guest1, guest2");
    assert!(stage.sockets[&a].closed && !stage.sockets[&a].cut);
    assert_eq!(stage.lines(watcher).last().unwrap(), "* guest2 left lobby");
}

#[test]
fn shutdown_says_so_after_what_is_owed_and_closes_within_its_grace() {
    let mut stage = Stage::new(B);
    let reader = stage.connect(true);
    let sleeper = stage.connect(false);
    let sender = stage.connect(true);
    stage.write(sender, &burst(100));
    stage.settle();
    stage.server.shutdown(stage.now);
    stage.settle();
    assert_eq!(
        stage.lines(reader).last().unwrap(),
        "* server shutting down"
    );
    assert_eq!(stage.server.connect(stage.now), Err(ServerFull));
    for id in [reader, sender] {
        assert!(stage.sockets[&id].hung_up);
        stage.end(id);
    }
    stage.settle();
    assert!(
        !stage.server.is_stopped(),
        "the sleeper has not read its goodbye"
    );
    stage.advance(SHUTDOWN_GRACE);
    assert!(stage.sockets[&sleeper].closed);
    assert!(stage.server.is_stopped());
}

#[test]
fn time_comes_in_through_poll_timeout() {
    let mut stage = Stage::new(B);
    assert_eq!(stage.server.poll_timeout(), None);
    let a = stage.connect(false);
    stage.write(a, b"/quit\n");
    stage.settle();
    assert_eq!(stage.server.poll_timeout(), Some(stage.now + CLOSE_GRACE));
    let _ = a;
}

/// An idle client holds no buffer: after its welcome is written and its lines handled (one of
/// them split across two reads, so every buffer was used once), its framer, outbox and waiting
/// input own no memory at all.
#[test]
fn an_idle_connection_holds_no_buffer() {
    let now = Instant::now();
    let mut server = Server::new(Limits::default());
    let ids: Vec<_> = (0..3).map(|_| server.connect(now).expect("room")).collect();
    server.receive(ids[0], b"/join ", now);
    server.receive(ids[0], b"rust\n", now);
    server.receive(ids[1], b"hello\n", now);
    assert!(server.holds_buffers(ids[1]), "a queued line is a buffer");
    for event in drain(&mut server) {
        if let Event::Flush(id) = event {
            let flushed = server.flush(id, now, |lines| Ok(lines.iter().map(|l| l.len()).sum()));
            assert!(flushed.is_ok());
        }
    }
    for id in ids {
        assert!(!server.holds_buffers(id), "{id} keeps a buffer while idle");
    }
}
