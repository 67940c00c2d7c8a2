//! The accounting must be able to fail: small in-process fake chat servers
//! that drop, duplicate and reorder deliveries on purpose, and one honest
//! fake, each driven by the real generator over loopback TCP.
//!
//! Run with `cargo test -p chat-bench --test accounting`.

// The fake servers are test helpers, outside `#[test]` functions: a panic
// there is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_bench::engine::{self, Options};
use chat_bench::result::RunResult;
use chat_bench::scenario::{Plan, Profile, Scenario, Target};

/// What the fake server does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing: every message to every other member, once, in order.
    Honest,
    /// Skips one delivery in seven.
    Drop,
    /// Sends one delivery in seven twice.
    Duplicate,
    /// Holds back every fifth message of each sender and sends it after the next.
    Reorder,
}

/// Shared state of a fake server: every client's room and a write handle.
#[derive(Debug, Default)]
struct Hub {
    /// client id -> (room, socket to write to)
    clients: HashMap<u64, (String, TcpStream)>,
}

/// Starts a fake server speaking enough of our protocol (welcome, `/join`,
/// room broadcast) and returns its address.
fn fake_server(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = Arc::new(Mutex::new(Hub::default()));
    let deliveries = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let (hub, deliveries) = (Arc::clone(&hub), Arc::clone(&deliveries));
            std::thread::spawn(move || serve(id as u64, stream, hub, deliveries, fault));
        }
    });
    addr
}

/// One client's thread: welcome, then handle its lines until it leaves.
fn serve(
    id: u64,
    stream: TcpStream,
    hub: Arc<Mutex<Hub>>,
    deliveries: Arc<AtomicU64>,
    fault: Fault,
) {
    let nick = format!("guest{id}");
    let mut out = stream.try_clone().unwrap();
    if writeln!(out, "* welcome {nick}").is_err() {
        return;
    }
    hub.lock()
        .unwrap()
        .clients
        .insert(id, ("lobby".to_string(), stream.try_clone().unwrap()));
    // A held-back message is released after the next one, or after a quiet
    // moment (much longer than the 25 ms between two messages of a sender,
    // much shorter than the drain), so that a reordering fake does not also
    // lose each sender's last message.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut held: Option<String> = None;
    let mut count = 0u64;
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if !line.ends_with('\n') => continue, // the rest comes with the next read
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if let Some(h) = held.take() {
                    broadcast(&hub, id, &h, &deliveries, fault);
                }
                continue;
            }
            Err(_) => break,
        }
        let text = std::mem::take(&mut line);
        let text = text.trim_end_matches('\n');
        if let Some(room) = text.strip_prefix("/join ") {
            let mut h = hub.lock().unwrap();
            if let Some(entry) = h.clients.get_mut(&id) {
                entry.0 = room.to_string();
            }
            let members = h.clients.values().filter(|c| c.0 == room).count();
            drop(h);
            let _ = writeln!(out, "* you joined {room} ({members} members)");
            continue;
        }
        let text = format!("<{nick}> {text}\n");
        count += 1;
        if fault == Fault::Reorder && count % 5 == 0 && held.is_none() {
            held = Some(text);
            continue;
        }
        broadcast(&hub, id, &text, &deliveries, fault);
        if let Some(h) = held.take() {
            broadcast(&hub, id, &h, &deliveries, fault);
        }
    }
    hub.lock().unwrap().clients.remove(&id);
}

/// Writes `text` to every other member of the sender's room, with the fault.
fn broadcast(hub: &Mutex<Hub>, from: u64, text: &str, n: &AtomicU64, fault: Fault) {
    let mut h = hub.lock().unwrap();
    let Some(room) = h.clients.get(&from).map(|c| c.0.clone()) else {
        return;
    };
    for (_, (_, s)) in h
        .clients
        .iter_mut()
        .filter(|(id, c)| **id != from && c.0 == room)
    {
        let k = n.fetch_add(1, Ordering::Relaxed);
        let copies = match fault {
            Fault::Drop if k % 7 == 3 => 0,
            Fault::Duplicate if k % 7 == 3 => 2,
            _ => 1,
        };
        for _ in 0..copies {
            let _ = s.write_all(text.as_bytes());
        }
    }
}

/// A small, short chat plan: 12 clients in rooms of 4, 40 msg/s each.
fn small_plan() -> Plan {
    let mut p = Plan::preset(Scenario::Chat, Profile::Quick);
    p.clients = 12;
    p.room_size = 4;
    p.rate = 40.0;
    p.warmup = Duration::from_millis(200);
    p.duration = Duration::from_millis(800);
    p.drain = Duration::from_secs(2);
    p.ramp_timeout = Duration::from_secs(5);
    p
}

fn run_against(fault: Fault) -> RunResult {
    let addr = fake_server(fault);
    engine::run(&small_plan(), &Target::ours(addr), &Options::default()).unwrap()
}

#[test]
fn honest_fake_is_clean() {
    let r = run_against(Fault::Honest);
    assert_eq!(r.connect.ready, 12, "{:?}", r.notes);
    assert!(r.sent > 0 && r.expected == r.sent * 3, "{r:?}");
    assert_eq!(r.delivered, r.expected);
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (0, 0, 0, 0)
    );
    assert!(r.latency_us.count > 0);
}

#[test]
fn dropped_deliveries_are_lost() {
    let r = run_against(Fault::Drop);
    assert!(r.lost > 0, "{r:?}");
    assert_eq!(r.delivered + r.lost, r.expected);
    assert_eq!((r.duplicated, r.reordered), (0, 0));
}

#[test]
fn duplicated_deliveries_are_counted() {
    let r = run_against(Fault::Duplicate);
    assert!(r.duplicated > 0, "{r:?}");
    assert_eq!((r.lost, r.reordered), (0, 0));
}

#[test]
fn reordered_deliveries_are_counted() {
    let r = run_against(Fault::Reorder);
    assert!(r.reordered > 0, "{r:?}");
    assert_eq!((r.lost, r.duplicated), (0, 0));
}

/// A chat server that is not ours: a `NAME` line first, no welcome, no rooms,
/// and every line relayed to everybody else with a timestamp and the name.
fn foreign_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::default();
    std::thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let peers = Arc::clone(&peers);
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
                let Some(Ok(hello)) = lines.next() else {
                    return;
                };
                let name = hello.strip_prefix("NAME ").unwrap_or("anon").to_string();
                peers.lock().unwrap().push((id, stream));
                for line in lines {
                    let Ok(line) = line else { break };
                    let text = format!("[12:00:00] {name}: {line}\n");
                    for (pid, s) in peers.lock().unwrap().iter_mut() {
                        if *pid != id {
                            let _ = s.write_all(text.as_bytes());
                        }
                    }
                }
                peers.lock().unwrap().retain(|(pid, _)| *pid != id);
            });
        }
    });
    addr
}

#[test]
fn any_line_based_chat_server_can_be_driven() {
    let addr = foreign_server();
    let target = Target {
        addr,
        hello: "NAME user{id}".to_string(),
        join: String::new(),
        welcome: String::new(),
        join_ack: String::new(),
        quit: String::new(),
    };
    let mut plan = small_plan();
    plan.clients = 6;
    let r = engine::run(&plan, &target, &Options::default()).unwrap();
    assert_eq!(r.room_size, 6, "no join template: one room");
    assert_eq!(r.connect.ready, 6);
    assert!(r.sent > 0 && r.expected == r.sent * 5, "{r:?}");
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
}

#[test]
fn nobody_listening_is_reported_not_hidden() {
    // Bind then drop: a port on which nothing listens.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut plan = small_plan();
    plan.ramp_timeout = Duration::from_secs(2);
    let r = engine::run(&plan, &Target::ours(addr), &Options::default()).unwrap();
    assert_eq!(r.connect.ready, 0);
    assert_eq!(r.connect.failed, 12);
    assert!(
        r.notes.iter().any(|n| n.contains("welcomed 0 of 12")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.sent, 0);
}
