//! One Markdown table per scenario, at most six columns each so that every
//! one fits the book's content column; the rest of a scenario's figures
//! folded below it in `<details>`.

use std::fmt::Write as _;

use super::format::{self, bytes, cpu_us, lat, ms, ready_cell, si};
use super::Loaded;
use crate::knee::Verdict;
use crate::result::{RunResult, Step};
use crate::scenario::Scenario;

/// A table with `header`, one row per server that ran `s`, each from `row`.
fn table(
    l: &Loaded,
    s: Scenario,
    header: &[&str],
    row: impl Fn(&RunResult) -> Vec<String>,
) -> String {
    let mut t = format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    for stage in l.stages_with_results() {
        let Some(r) = l.get(stage, s) else { continue };
        let cells = match &r.error {
            // The error itself (often a long path) is in the overview's notes.
            Some(_) => {
                let mut v = vec!["error (see the notes)".to_string()];
                v.resize(header.len() - 1, String::new());
                v
            }
            None => row(r),
        };
        let _ = writeln!(t, "| {} | {} |", l.name(stage), cells.join(" | "));
    }
    t
}

/// `text` folded under `summary`, unless it is empty.
fn details(summary: &str, text: &str) -> String {
    format!("\n<details>\n<summary>{summary}</summary>\n\n{text}\n</details>\n")
}

fn peak_rss(r: &RunResult) -> String {
    r.server
        .as_ref()
        .map_or("-".into(), |x| bytes(x.peak_rss_kib as f64 * 1024.0))
}

fn threads(r: &RunResult) -> String {
    r.server
        .as_ref()
        .map_or("-".into(), |x| x.threads.to_string())
}

fn server_cpu(r: &RunResult) -> String {
    r.server
        .as_ref()
        .and_then(|x| x.cpu_us_per_delivery)
        .map_or("-".into(), cpu_us)
}

fn exit_cell(r: &RunResult) -> String {
    match r.server.as_ref().and_then(|s| s.exit.as_ref()) {
        Some(e) if e.in_time => format!("yes ({:.1} s)", e.seconds),
        Some(e) => format!("no (code {:?})", e.code),
        None => "-".to_string(),
    }
}

/// How one searching step went, in a few words.
fn step_verdict(st: &Step) -> &'static str {
    match st.verdict {
        Verdict::Held => "held",
        Verdict::Generator => "generator fell behind",
        Verdict::Server if st.latency_us.count == 0 => "nothing arrived",
        Verdict::Server if st.deliveries_per_sec < 0.9 * st.offered_per_sec => "under 90% arrived",
        Verdict::Server => "p99 over the bound",
    }
}

/// The searching scenarios: the knee and the fixed-load figures, then every
/// step of every server, folded.
fn search_table(l: &Loaded, s: Scenario) -> String {
    let ceiling = l.ceiling_us();
    let load = l.load_text();
    let main = table(
        l,
        s,
        &[
            "server",
            "knee, deliveries/s",
            "p99 at the knee",
            &format!("server CPU per delivery at {load} (× ceiling)"),
            &format!("generator CPU per delivery at {load}"),
            "steps",
        ],
        |r| {
            let best = r
                .steps
                .iter()
                .filter(|st| st.verdict == Verdict::Held)
                .max_by(|a, b| a.deliveries_per_sec.total_cmp(&b.deliveries_per_sec));
            vec![
                format::knee_cell(r),
                best.map_or("-".into(), |st| ms(st.latency_us.p99)),
                format::efficiency_cell(r, ceiling),
                r.efficiency
                    .as_ref()
                    .and_then(|e| e.generator_cpu_us_per_delivery)
                    .map_or("-".into(), cpu_us),
                r.steps.len().to_string(),
            ]
        },
    );
    let mut steps = String::from(
        "| server | offered/s | delivered/s | p99 | verdict | generator busy, lag p99 |\n|---|---|---|---|---|---|\n",
    );
    for stage in l.stages_with_results() {
        let Some(r) = l.ok(stage, s) else { continue };
        let all = r
            .steps
            .iter()
            .map(|st| (format!("{:?}", st.phase).to_lowercase(), st))
            .chain(
                r.efficiency
                    .iter()
                    .map(|e| ("fixed load".to_string(), &e.step)),
            );
        for (phase, st) in all {
            let g = &st.generator;
            let _ = writeln!(
                steps,
                "| {} | {} ({phase}) | {} | {} | {} | {:.0}%, {} |",
                l.name(stage),
                si(st.offered_per_sec),
                si(st.deliveries_per_sec),
                ms(st.latency_us.p99),
                step_verdict(st),
                g.busy * 100.0,
                ms(g.send_lag_us.p99.max(g.read_lag_us.p99)),
            );
        }
    }
    format!(
        "{main}\n*knee*: the highest delivery rate of a step that held (p99 at most 100 ms, at \
         least 90% of the offered deliveries arrived, the generator on time); *≥ X \
         (generator-bound)* when the generator fell behind before the server did. *× ceiling*: \
         over the CPU a bare writer spends per line at the same load, sixteen lines per write.\n{}",
        details("Every step of every server", &steps)
    )
}

/// One Markdown table per scenario, with that scenario's own columns.
pub(super) fn scenario_table(l: &Loaded, s: Scenario) -> String {
    match s {
        Scenario::Flood | Scenario::OneRoom => search_table(l, s),
        Scenario::Idle => {
            let main = table(
                l,
                s,
                &[
                    "server",
                    "clients in",
                    "connects/s",
                    "welcome p99",
                    "server memory per connection",
                    "alive: one message per room",
                ],
                |r| {
                    vec![
                        ready_cell(r),
                        si(r.connect.per_sec),
                        ms(r.connect.time_to_welcome_us.p99),
                        format::rss_per_conn(r),
                        format!("{} of {} delivered", r.delivered, r.expected),
                    ]
                },
            );
            let more = table(
                l,
                s,
                &[
                    "server",
                    "ramp",
                    "peak RSS",
                    "threads",
                    "exit 0 after SIGTERM",
                ],
                |r| {
                    vec![
                        format!("{:.2} s", r.connect.duration_s),
                        peak_rss(r),
                        threads(r),
                        exit_cell(r),
                    ]
                },
            );
            format!(
                "{main}\n*server memory per connection*: the growth of the server's RSS over the \
                 ramp per client in (the kernel's socket buffers come on top; its machine-wide \
                 TCP memory is too noisy to divide by a few thousand clients and is not shown).\n{}",
                details("Ramp time, memory peak, threads, exit", &more)
            )
        }
        Scenario::Chat => {
            let main = table(
                l,
                s,
                &[
                    "server",
                    "clients in",
                    "deliveries/s",
                    "latency p50 · p99 · max",
                    "correct",
                    "server CPU per delivery",
                ],
                |r| {
                    vec![
                        ready_cell(r),
                        si(r.deliveries_per_sec),
                        format!(
                            "{} · {} · {}",
                            lat(&r.latency_us, r.latency_us.p50),
                            lat(&r.latency_us, r.latency_us.p99),
                            lat(&r.latency_us, r.latency_us.max)
                        ),
                        format::correctness(r),
                        server_cpu(r),
                    ]
                },
            );
            let more = table(
                l,
                s,
                &[
                    "server",
                    "p99.9",
                    "unsent",
                    "peak RSS",
                    "threads",
                    "generator busy",
                ],
                |r| {
                    vec![
                        lat(&r.latency_us, r.latency_us.p999),
                        r.unsent.to_string(),
                        peak_rss(r),
                        threads(r),
                        format!("{:.0}%", r.generator.busy * 100.0),
                    ]
                },
            );
            format!("{main}{}", details("p99.9, unsent, memory, threads", &more))
        }
        Scenario::Slow => table(
            l,
            s,
            &[
                "server",
                "slow readers dropped",
                "readers dropped",
                "readers p99",
                "correct",
                "peak RSS",
            ],
            |r| {
                let x = r.slow.clone().unwrap_or_default();
                vec![
                    format!("{} of {}", x.slow_dropped, x.slow_clients),
                    x.readers_dropped.to_string(),
                    lat(&r.latency_us, r.latency_us.p99),
                    format::correctness(r),
                    peak_rss(r),
                ]
            },
        ),
        Scenario::Churn => table(
            l,
            s,
            &[
                "server",
                "cycles/s",
                "failed cycles",
                "churn welcome p50 · p99",
                "members p99",
                "correct",
            ],
            |r| {
                let c = r.churn.clone().unwrap_or_default();
                vec![
                    si(c.per_sec),
                    c.failed.to_string(),
                    format!(
                        "{} · {}",
                        lat(&c.time_to_welcome_us, c.time_to_welcome_us.p50),
                        lat(&c.time_to_welcome_us, c.time_to_welcome_us.p99)
                    ),
                    lat(&r.latency_us, r.latency_us.p99),
                    format::correctness(r),
                ]
            },
        ),
        Scenario::Starve => table(
            l,
            s,
            &[
                "server",
                "welcomed",
                "timed out",
                "welcome p50 · p99 · max",
                "latency p99",
                "correct",
            ],
            |r| {
                let w = &r.connect.time_to_welcome_us;
                vec![
                    ready_cell(r),
                    r.connect.timed_out.to_string(),
                    format!("{} · {} · {}", ms(w.p50), ms(w.p99), ms(w.max)),
                    lat(&r.latency_us, r.latency_us.p99),
                    format::correctness(r),
                ]
            },
        ),
    }
}

/// The Markdown tables in `text`: runs of lines that start with `|`.
pub(super) fn markdown_tables(text: &str) -> Vec<String> {
    let mut tables = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('|') {
            current.push_str(line);
            current.push('\n');
        } else if !current.is_empty() {
            tables.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        tables.push(current);
    }
    tables
}
