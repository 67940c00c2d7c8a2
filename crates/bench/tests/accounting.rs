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
use std::time::{Duration, Instant};

use chat_bench::engine::{self, Options};
use chat_bench::knee::Limit;
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
    /// Honest, but relays at most this many deliveries per second in all.
    Throttle(u32),
}

/// Shared state of a fake server: every client's room and a write handle.
#[derive(Debug, Default)]
struct Hub {
    /// client id -> (room, socket to write to)
    clients: HashMap<u64, (String, TcpStream)>,
    /// `Throttle`: when the server may relay its next delivery.
    next_free: Option<Instant>,
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
    let mut relayed = 0u32;
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
        relayed += copies;
    }
    if let Fault::Throttle(per_sec) = fault {
        // Reserve the time these deliveries take at the throttled rate, and
        // wait for it (outside the lock): senders queue up, as behind a
        // server that is at its limit.
        let now = Instant::now();
        let start = h.next_free.map_or(now, |t| t.max(now));
        let until = start + Duration::from_secs_f64(f64::from(relayed) / f64::from(per_sec));
        h.next_free = Some(until);
        drop(h);
        std::thread::sleep(until.saturating_duration_since(now));
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

/// A chat server that is not ours: a `NAME` line first (when `named`), no
/// welcome, no rooms, and every line relayed to everybody else with a
/// timestamp and the name, and to the sender too when `echo` (as smol's
/// example does).
fn foreign_server(named: bool, echo: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::default();
    std::thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let peers = Arc::clone(&peers);
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
                let name = if named {
                    let Some(Ok(hello)) = lines.next() else {
                        return;
                    };
                    hello.strip_prefix("NAME ").unwrap_or("anon").to_string()
                } else {
                    format!("client{id}")
                };
                peers.lock().unwrap().push((id, stream));
                for line in lines {
                    let Ok(line) = line else { break };
                    let text = format!("[12:00:00] {name}: {line}\n");
                    for (pid, s) in peers.lock().unwrap().iter_mut() {
                        if *pid != id || echo {
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
    let addr = foreign_server(true, false);
    let target = Target {
        hello: "NAME user{id}".to_string(),
        ..Target::broadcast(addr)
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

/// A small search: short steps, few of them.
fn small_search(scenario: Scenario, start_load: f64) -> Plan {
    let mut p = Plan::preset(scenario, Profile::Quick);
    p.clients = 12;
    p.room_size = if scenario == Scenario::OneRoom { 12 } else { 4 };
    p.warmup = Duration::from_millis(100);
    p.duration = Duration::from_millis(500);
    p.drain = Duration::from_millis(300);
    p.ramp_timeout = Duration::from_secs(5);
    p.search.start_load = start_load;
    p.search.doublings = 5;
    p.search.bisections = 2;
    p.search.efficiency_load = start_load;
    p
}

#[test]
fn the_search_finds_the_knee_of_a_throttled_server() {
    // At most 3,000 deliveries/s, whatever is offered: the search starts at
    // 400/s, must see the server (not the generator) miss a bound, and put
    // the knee at or under what the server can relay.
    let addr = fake_server(Fault::Throttle(3_000));
    let mut plan = small_search(Scenario::Flood, 400.0);
    // The throttle fails loudly (under 70% delivered at twice its rate);
    // a generator slowed by a busy test machine must not be mistaken for it.
    plan.search.bounds.max_lag_us = 80_000;
    plan.search.bounds.max_late = 0.2;
    let r = engine::run(&plan, &Target::ours(addr), &Options::default()).unwrap();
    let knee = r.knee.expect("a knee");
    assert_eq!(knee.limit, Limit::Server, "{:?}", r.steps);
    assert!(
        knee.deliveries_per_sec > 0.0 && knee.deliveries_per_sec <= 3_300.0,
        "{knee:?}"
    );
    let failed = knee.failed_load.expect("a step that failed");
    assert!(failed > knee.held_load.expect("a step that held"));
    assert!(r.steps.iter().all(|s| s.generator.scheduled > 0));
    let e = r.efficiency.expect("the fixed-load step");
    assert_eq!(e.step.load, 400.0);
    assert!(e.generator_cpu_us_per_delivery.is_some());
}

#[test]
fn a_broadcast_server_that_echoes_is_searched_in_one_room() {
    let addr = foreign_server(false, true);
    let plan = small_search(Scenario::OneRoom, 2_000.0);
    let mut plan = plan;
    plan.search.doublings = 1;
    plan.search.bisections = 0;
    let r = engine::run(&plan, &Target::broadcast(addr), &Options::default()).unwrap();
    assert_eq!(r.room_size, 12, "everybody in one room");
    assert!(r.echoed > 0, "the sender's own copies are counted apart");
    assert!(r.knee.is_some());
    assert_eq!(
        (r.lost, r.duplicated, r.reordered, r.unexpected),
        (0, 0, 0, 0),
        "{r:?}"
    );
}
