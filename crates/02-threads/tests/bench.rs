//! The load generator against this stage's real binary: tens of clients for a
//! couple of seconds. The stage promises no loss, no duplicates and
//! per-sender order, slow readers cut and nobody else, and clean churn; the
//! generator (`chat-bench`, a dev-dependency: the stage does not depend on
//! the benchmark, the benchmark never on a stage) must see all of that.
//!
//! It also proves the generator's accounting against a real server, which
//! chat-bench's own tests can only do against fakes.
//!
//! Run with `cargo test -p chat-threads --test bench`.

use std::process::{Command, Stdio};
use std::time::Duration;

use chat_bench::engine::{self, Options};
use chat_bench::launch::Server;
use chat_bench::result::RunResult;
use chat_bench::scenario::{Plan, Profile, Scenario, Target};

/// Starts the stage's binary on 127.0.0.1, port 0, runs `plan` against it,
/// and stops it with SIGTERM, which must end it cleanly.
fn run(plan: &Plan) -> RunResult {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-threads"));
    cmd.args(["--addr", "127.0.0.1:0"]).stderr(Stdio::null());
    let mut server = Server::start(cmd).expect("chat-threads prints `listening on ADDR`");
    let opts = Options {
        server_pid: Some(server.pid()),
        ..Options::default()
    };
    let r = engine::run(plan, &Target::ours(server.addr), &opts).expect("run");
    let exit = server.stop();
    assert!(
        exit.in_time,
        "exit 0 within the grace after SIGTERM: {exit:?}"
    );
    r
}

#[test]
fn chat_is_lossless() {
    let mut plan = Plan::preset(Scenario::Chat, Profile::Quick);
    plan.clients = 40;
    plan.room_size = 8;
    plan.rate = 20.0;
    plan.warmup = Duration::from_millis(300);
    plan.duration = Duration::from_secs(2);
    plan.drain = Duration::from_secs(3);
    let r = run(&plan);
    assert_eq!(r.connect.ready, 40, "{:?}", r.notes);
    assert!(r.sent > 0 && r.expected == r.sent * 7, "{r:?}");
    assert_eq!(r.delivered, r.expected);
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
    assert_eq!((r.unexpected, r.echoed, r.undeliverable), (0, 0, 0));
    assert!(r.latency_us.count > 0);
    assert!(
        r.server.as_ref().is_some_and(|s| s.threads > 40),
        "a thread per client"
    );
}

#[test]
fn slow_readers_are_dropped_and_readers_lose_nothing() {
    let mut plan = Plan::preset(Scenario::Slow, Profile::Quick);
    plan.clients = 20;
    plan.room_size = 10;
    plan.warmup = Duration::from_millis(300);
    plan.duration = Duration::from_secs(3);
    let r = run(&plan);
    let slow = r.slow.clone().expect("slow figures");
    assert_eq!(slow.slow_clients, 4);
    assert!(slow.slow_dropped > 0, "{r:?}");
    assert_eq!(slow.readers_dropped, 0, "{r:?}");
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
}

#[test]
fn churn_cycles() {
    let mut plan = Plan::preset(Scenario::Churn, Profile::Quick);
    plan.clients = 20;
    plan.churners = 4;
    plan.warmup = Duration::from_millis(200);
    plan.duration = Duration::from_secs(1);
    let r = run(&plan);
    let churn = r.churn.clone().expect("churn figures");
    assert!(churn.cycles > 0, "{r:?}");
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
}

#[test]
fn a_short_flood_finds_a_knee_and_measures_the_fixed_load() {
    // Small and short: three doublings from 2,000 deliveries/s, one
    // bisection, and the fixed-load step at 20,000/s. Whatever the machine,
    // the search must end with a knee and say what ended it.
    let mut plan = Plan::preset(Scenario::Flood, Profile::Quick);
    plan.clients = 20;
    plan.search.start_load = 2_000.0;
    plan.search.doublings = 3;
    plan.search.bisections = 1;
    plan.search.efficiency_load = 20_000.0;
    let r = run(&plan);
    let knee = r.knee.expect("a knee");
    assert!(!r.steps.is_empty() && r.steps.len() <= 6, "{:?}", r.steps);
    assert!(knee.deliveries_per_sec > 0.0 || knee.limit == chat_bench::knee::Limit::FirstStep);
    let e = r.efficiency.clone().expect("the fixed-load step");
    assert!(e.step.deliveries_per_sec > 0.0);
    assert!(e.generator_cpu_us_per_delivery.is_some());
    assert_eq!((r.lost, r.duplicated, r.reordered), (0, 0, 0), "{r:?}");
}
