//! The generator against a real stage: `chat-threads`, started in-process on
//! port 0, tens of clients for a couple of seconds. Our server promises no
//! loss, no duplicates and per-sender order, and the generator must see that.
//!
//! Run with `cargo test -p chat-bench --test real_stage`.

use std::time::Duration;

use chat_bench::engine::{self, Options};
use chat_bench::scenario::{Plan, Profile, Scenario, Target};

/// Starts chat-threads on 127.0.0.1:0; returns its address, its shutdown
/// switch and its thread.
fn start_threads_stage() -> (
    std::net::SocketAddr,
    chat_net::Shutdown,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let config = chat_net::Config::default(); // 127.0.0.1:0 and the protocol's defaults
    let listener = chat_net::bind(config.addr).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let shutdown = chat_net::Shutdown::new().expect("shutdown switch");
    let stop = shutdown.clone();
    let handle = std::thread::spawn(move || chat_threads::run(listener, config, stop));
    (addr, shutdown, handle)
}

#[test]
fn chat_against_the_threads_stage_is_lossless() {
    let (addr, shutdown, handle) = start_threads_stage();
    let mut plan = Plan::preset(Scenario::Chat, Profile::Quick);
    plan.clients = 40;
    plan.room_size = 8;
    plan.rate = 20.0;
    plan.warmup = Duration::from_millis(300);
    plan.duration = Duration::from_secs(2);
    plan.drain = Duration::from_secs(3);
    let r = engine::run(&plan, &Target::ours(addr), &Options::default()).expect("run");
    shutdown.trigger();
    handle.join().expect("server thread").expect("server run");

    assert_eq!(r.connect.ready, 40, "{:?}", r.notes);
    assert!(r.sent > 0 && r.expected == r.sent * 7, "{r:?}");
    assert_eq!(r.delivered, r.expected);
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
    assert_eq!((r.unexpected, r.echoed, r.undeliverable), (0, 0, 0));
    assert!(r.latency_us.count > 0);
}

#[test]
fn slow_readers_are_dropped_and_readers_lose_nothing() {
    let (addr, shutdown, handle) = start_threads_stage();
    let mut plan = Plan::preset(Scenario::Slow, Profile::Quick);
    plan.clients = 20;
    plan.room_size = 10;
    plan.warmup = Duration::from_millis(300);
    plan.duration = Duration::from_secs(3);
    let r = engine::run(&plan, &Target::ours(addr), &Options::default()).expect("run");
    shutdown.trigger();
    handle.join().expect("server thread").expect("server run");

    let slow = r.slow.clone().expect("slow figures");
    assert_eq!(slow.slow_clients, 4);
    assert!(slow.slow_dropped > 0, "{r:?}");
    assert_eq!(slow.readers_dropped, 0, "{r:?}");
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
}

#[test]
fn churn_cycles_against_the_threads_stage() {
    let (addr, shutdown, handle) = start_threads_stage();
    let mut plan = Plan::preset(Scenario::Churn, Profile::Quick);
    plan.clients = 20;
    plan.churners = 4;
    plan.warmup = Duration::from_millis(200);
    plan.duration = Duration::from_secs(1);
    let r = engine::run(&plan, &Target::ours(addr), &Options::default()).expect("run");
    shutdown.trigger();
    handle.join().expect("server thread").expect("server run");

    let churn = r.churn.clone().expect("churn figures");
    assert!(churn.cycles > 0, "{r:?}");
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
}
