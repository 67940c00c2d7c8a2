//! The report's rules, checked on made-up runs: every table fits the book's
//! column, every server keeps its colour, the notes stay one line per server.

use super::*;
use crate::ceiling::Mode;
use crate::compare::STAGES;
use crate::knee::{Knee, Limit, Phase, Verdict};
use crate::result::{Efficiency, Exit, Server, StageEntry, Step};

/// A result of `scenario` with the longest cells a real run produces:
/// a generator-bound knee, a fixed-load step that did not hold, a few
/// clients in, lost deliveries, notes.
fn worst(stage: &str, scenario: Scenario, few: bool) -> RunResult {
    let mut r = RunResult {
        scenario: scenario.name().to_string(),
        stage: Some(stage.to_string()),
        clients: 10_000,
        lost: 12_345,
        duplicated: 3,
        expected: 1_000_000,
        notes: vec!["welcomed 4 of 10000 (a long explanation that goes on)".to_string(); 3],
        unsent: 1234,
        ..RunResult::default()
    };
    r.connect.attempted = 10_000;
    r.connect.ready = if few { 4 } else { 9_999 };
    r.generator.bound = true;
    r.server = Some(Server {
        threads: 10_001,
        peak_rss_kib: 123_456_789,
        cpu_us_per_delivery: Some(123.456),
        exit: Some(Exit {
            in_time: false,
            code: Some(137),
            seconds: 5.0,
        }),
        ..Server::default()
    });
    if scenario.searches() {
        let step = Step {
            load: 1.234e6,
            phase: Phase::Bisect,
            offered_per_sec: 1.234e6,
            deliveries_per_sec: 1.111e6,
            verdict: Verdict::Generator,
            ..Step::default()
        };
        r.steps = vec![step.clone(); 14];
        r.knee = Some(Knee {
            deliveries_per_sec: 2.345e6,
            held_load: Some(2.3e6),
            failed_load: Some(2.5e6),
            limit: Limit::Generator,
        });
        r.efficiency = Some(Efficiency {
            step,
            server_cpu_us_per_delivery: Some(12.345),
            generator_cpu_us_per_delivery: Some(0.5),
        });
    }
    r
}

fn run(with_errors: bool) -> Loaded {
    let mut labels: Vec<String> = STAGES.iter().map(|s| s.label.to_string()).collect();
    labels.push("smol-example".to_string());
    let mut results = Vec::new();
    for (i, stage) in labels.iter().enumerate() {
        for s in Scenario::ALL {
            let mut r = worst(stage, s, i % 2 == 0);
            if with_errors && i == 3 {
                r.error = Some(format!(
                    "could not start /a/very/long/path/to/target/release/{stage}: no such file"
                ));
            }
            results.push(r);
        }
    }
    Loaded {
        index: Some(RunIndex {
            profile: "quick".into(),
            scenarios: Scenario::ALL.iter().map(|s| s.name().to_string()).collect(),
            stages: labels
                .iter()
                .map(|l| StageEntry {
                    label: l.clone(),
                    command: l.clone(),
                    found: true,
                    peer: l == "smol-example",
                    baseline: false,
                })
                .collect(),
            conditions: Default::default(),
        }),
        peers: vec!["smol-example".to_string()],
        baselines: Vec::new(),
        stages: labels,
        missing: vec!["ghost".to_string()],
        results,
        ceiling: Some(Ceiling {
            paced: Some(Mode {
                lines_per_write: 16,
                paced_lines_per_sec: Some(500_000.0),
                broadcaster_cpu_us_per_line: 0.25,
                ..Mode::default()
            }),
            ..Ceiling::default()
        }),
    }
}

#[test]
fn a_report_of_nothing_is_still_written() {
    let l = Loaded {
        index: None,
        stages: vec!["ghost".to_string()],
        missing: vec!["ghost".to_string()],
        peers: Vec::new(),
        baselines: Vec::new(),
        results: Vec::new(),
        ceiling: None,
    };
    let dir = std::env::temp_dir().join(format!("chat-bench-report-{}", std::process::id()));
    let written = write(&l, &dir).expect("report of an empty run");
    assert!(written.iter().any(|p| p.ends_with("overview.md")));
    let overview = std::fs::read_to_string(dir.join("overview.md")).expect("overview");
    assert!(overview.contains("ghost | binary not found"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn every_table_fits_the_books_column() {
    for with_errors in [false, true] {
        let l = run(with_errors);
        let mut texts = vec![("overview".to_string(), overview(&l))];
        texts.push(("ceiling".to_string(), ceiling_table(l.ceiling.as_ref())));
        for s in Scenario::ALL {
            texts.push((s.name().to_string(), tables::scenario_table(&l, s)));
        }
        // CHAT_BENCH_REPORT_SAMPLE=DIR keeps these worst-case tables as
        // Markdown, to look at them in a browser (the width rule's estimate
        // was calibrated that way, with `scripts/check_book.py browser`).
        if let Some(dir) = std::env::var_os("CHAT_BENCH_REPORT_SAMPLE") {
            let all: String = texts
                .iter()
                .map(|(n, t)| format!("## {n}\n\n{t}\n\n"))
                .collect();
            let name = format!("sample-{}.md", if with_errors { "errors" } else { "plain" });
            std::fs::write(Path::new(&dir).join(name), all).expect("sample written");
        }
        for (name, text) in texts {
            let found = tables::markdown_tables(&text);
            assert!(!found.is_empty(), "{name} has a table");
            for t in found {
                if let Err(e) = fits(&t) {
                    panic!("{name}: {e}");
                }
                let columns = t.lines().next().map_or(0, |h| h.matches('|').count() - 1);
                assert!(columns <= 6, "{name}: {columns} columns");
            }
        }
    }
}

#[test]
fn the_overview_marks_lower_bounds_and_peers() {
    let l = run(false);
    let o = overview(&l);
    assert!(o.contains("≥ 2.35M (generator-bound)"), "{o}");
    assert!(o.contains("| smol-example (peer) |"), "{o}");
    assert!(o.contains("not measured (only 4 clients got in)"), "{o}");
    // One line per server at most, and never a bare generator-bound number.
    let what = o
        .split("What happened:")
        .nth(1)
        .expect("notes")
        .split("<details>")
        .next()
        .unwrap_or("");
    let lines: Vec<&str> = what.lines().filter(|l| l.starts_with("- ")).collect();
    assert!(lines.len() <= l.stages.len(), "{lines:?}");
    for stage in &l.stages {
        let me = format!("- **{}**:", l.name(stage));
        let mentions = lines.iter().filter(|x| x.starts_with(&me)).count();
        assert!(mentions <= 1, "{stage}: {lines:?}");
    }
    assert!(
        lines[0].contains("generator-bound (every scenario)"),
        "{}",
        lines[0]
    );
    assert!(
        lines.iter().all(|x| x.len() < 300),
        "short lines: {lines:?}"
    );
    let figures = figures(&l);
    assert_eq!(figures["epoll"]["flood.knee"], "≥ 2.35M (generator-bound)");
    assert_eq!(figures["smol-example"]["peer"], "true");
}

#[test]
fn every_stage_has_its_own_colour() {
    let colours: Vec<RGBColor> = STAGES.iter().map(|s| colour(s.label, 0)).collect();
    for (s, c) in STAGES.iter().zip(&colours) {
        assert!(
            PALETTE.iter().any(|(name, _)| *name == s.label),
            "{} has no colour in the palette",
            s.label
        );
        // Peers (outside the palette) must not look like a stage.
        for other in 0..3 {
            assert_ne!(*c, colour("a-peer", other), "{}", s.label);
        }
    }
    for (i, a) in colours.iter().enumerate() {
        for (j, b) in colours.iter().enumerate().skip(i + 1) {
            let d = |x: u8, y: u8| (f64::from(x) - f64::from(y)).powi(2);
            let distance = (d(a.0, b.0) + d(a.1, b.1) + d(a.2, b.2)).sqrt();
            assert!(
                distance > 60.0,
                "{} and {} are too alike ({distance:.0})",
                STAGES[i].label,
                STAGES[j].label
            );
        }
    }
    assert_eq!(
        colour("epoll", 0),
        colour("epoll", 5),
        "by name, not by position"
    );
}

use plotters::style::RGBColor;
use std::path::Path;
