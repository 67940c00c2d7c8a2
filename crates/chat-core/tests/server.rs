//! `Server`, the event-loop wrapper, driven without sockets.
#![allow(clippy::unwrap_used)] // in a test, a panic is a failed test

use chat_core::{ClientId, Event, Limits, Server, ServerFull};

fn drain(server: &mut Server) -> Vec<Event> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

fn written(server: &mut Server, id: ClientId) -> String {
    let outbox = server.outbox(id).unwrap();
    let mut text = Vec::new();
    while let Some(chunk) = outbox.front() {
        let n = chunk.len();
        text.extend_from_slice(chunk);
        outbox.consume(n);
    }
    String::from_utf8(text).unwrap()
}

#[test]
fn flush_fires_when_an_outbox_becomes_non_empty() {
    let mut server = Server::new(Limits::default());
    let a = server.connect().unwrap();
    assert_eq!(drain(&mut server), [Event::Flush(a)]);
    let b = server.connect().unwrap();
    // `a` still holds its welcome: no second Flush for it.
    assert_eq!(drain(&mut server), [Event::Flush(b)]);
    assert!(written(&mut server, a).ends_with("* guest2 joined lobby\n"));
    written(&mut server, b);
    server.receive(b, b"hi\nthere\n");
    assert_eq!(drain(&mut server), [Event::Flush(a)]);
    assert_eq!(written(&mut server, a), "<guest2> hi\n<guest2> there\n");
}

#[test]
fn max_clients_is_enforced_and_freed() {
    let mut server = Server::new(Limits {
        max_clients: 2,
        outbox_bytes: 1024,
    });
    let a = server.connect().unwrap();
    server.connect().unwrap();
    assert_eq!(server.connect(), Err(ServerFull));
    server.close(a);
    assert!(server.connect().is_ok());
}

#[test]
fn slow_consumer_is_dropped_and_others_keep_receiving() {
    let mut server = Server::new(Limits {
        max_clients: 10,
        outbox_bytes: 200,
    });
    let slow = server.connect().unwrap();
    let fast = server.connect().unwrap();
    let sender = server.connect().unwrap();
    drain(&mut server);
    for id in [fast, sender] {
        written(&mut server, id);
    }
    let mut fast_got = String::new();
    for i in 0..50 {
        server.receive(sender, format!("message {i:02}\n").as_bytes());
        for event in drain(&mut server) {
            if event == Event::Close(slow) {
                assert!(server.is_closing(slow));
                server.close(slow);
            }
        }
        fast_got.push_str(&written(&mut server, fast));
        written(&mut server, sender);
    }
    let expected: String = (0..50)
        .map(|i| format!("<guest3> message {i:02}\n"))
        .collect::<String>();
    assert!(fast_got.contains("* guest1 left lobby (slow consumer)\n"));
    assert_eq!(
        fast_got.replace("* guest1 left lobby (slow consumer)\n", ""),
        expected
    );
    assert_eq!(server.connections(), 2);
}

#[test]
fn quit_flushes_bye_then_closes() {
    let mut server = Server::new(Limits::default());
    let a = server.connect().unwrap();
    drain(&mut server);
    written(&mut server, a);
    server.receive(a, b"/quit\nignored\n");
    assert_eq!(drain(&mut server), [Event::Flush(a), Event::Close(a)]);
    assert_eq!(written(&mut server, a), "* bye\n");
    server.close(a);
    assert_eq!(server.connections(), 0);
}

#[test]
fn shutdown_closes_everyone() {
    let mut server = Server::new(Limits::default());
    let a = server.connect().unwrap();
    let b = server.connect().unwrap();
    drain(&mut server);
    written(&mut server, a);
    written(&mut server, b);
    server.shutdown();
    let events = drain(&mut server);
    assert!(events.contains(&Event::Close(a)) && events.contains(&Event::Close(b)));
    assert_eq!(written(&mut server, a), "* server shutting down\n");
}

#[test]
fn input_split_at_every_byte_gives_the_same_deliveries() {
    let input = b"hello\r\n/nick bob\nworld\n\xff\n";
    let run = |cut: usize| {
        let mut server = Server::new(Limits::default());
        let a = server.connect().unwrap();
        let b = server.connect().unwrap();
        drain(&mut server);
        written(&mut server, a);
        written(&mut server, b);
        server.receive(a, &input[..cut]);
        server.receive(a, &input[cut..]);
        (written(&mut server, a), written(&mut server, b))
    };
    let whole = run(input.len());
    assert_eq!(
        whole.1,
        "<guest1> hello\n* guest1 is now bob\n<bob> world\n"
    );
    for cut in 0..input.len() {
        assert_eq!(run(cut), whole, "cut at {cut}");
    }
}
