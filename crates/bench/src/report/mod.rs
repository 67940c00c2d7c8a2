//! `chat-bench report`: turns a results folder into Markdown tables and SVG
//! plots for the book.
//!
//! Everything the book shows about performance is generated here from the raw
//! JSON, never typed by hand. The file names are stable, so the book can
//! include them:
//!
//! - `overview.md`: one short table, one row per server (at most six
//!   columns, so it fits the book's content column), and one line per server
//!   of what happened;
//! - one `<scenario>.md` per scenario, its details folded in `<details>`;
//! - `ceiling.md`; the plots `deliveries.svg`, `one-room.svg`,
//!   `efficiency.svg`, `latency-p99.svg`, `rss-per-connection.svg` and
//!   `connect-time.svg`, one fixed colour per server in all of them;
//! - `figures.json`: the cells the book's per-stage blocks are made of
//!   (`scripts/book-results.sh`), written by the same functions as the tables.
//!
//! The parts: `format.rs` (units and the rules every cell follows),
//! `tables.rs` (the per-scenario tables), `plots.rs` (the SVGs and the palette).
//!
//! Run it with `cargo run --release -p chat-bench -- report results/<run>`
//! (writes `results/<run>/report/`).

mod format;
mod plots;
mod tables;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::ceiling::Ceiling;
use crate::result::{RunIndex, RunResult};
use crate::scenario::Scenario;

pub use format::{fits, knee_text, min_width_px, MIN_CLIENTS_PER_CONN_FIGURE};
pub use plots::{colour, PALETTE};

/// A results folder, read back.
#[derive(Debug)]
pub struct Loaded {
    /// `run.json`, when present.
    pub index: Option<RunIndex>,
    /// Server labels in order (from `run.json`, else the folder names, sorted).
    pub stages: Vec<String>,
    /// Servers listed in `run.json` whose binary was not found.
    pub missing: Vec<String>,
    /// Servers that are peers, not stages of the book.
    pub peers: Vec<String>,
    /// Servers that are baselines: our protocol, not a stage (the Python asyncio server).
    pub baselines: Vec<String>,
    /// Every result, with its `stage` set.
    pub results: Vec<RunResult>,
    /// `ceiling.json`, when present.
    pub ceiling: Option<Ceiling>,
}

impl Loaded {
    /// The result of `scenario` on `stage`, if it was run.
    pub fn get(&self, stage: &str, scenario: Scenario) -> Option<&RunResult> {
        self.results
            .iter()
            .find(|r| r.stage.as_deref() == Some(stage) && r.scenario == scenario.name())
    }

    /// The result, if it ran without an error.
    fn ok(&self, stage: &str, scenario: Scenario) -> Option<&RunResult> {
        self.get(stage, scenario).filter(|r| r.error.is_none())
    }

    /// Servers that have at least one result.
    fn stages_with_results(&self) -> impl Iterator<Item = &String> {
        self.stages.iter().filter(|s| {
            self.results
                .iter()
                .any(|r| r.stage.as_deref() == Some(s.as_str()))
        })
    }

    /// Whether `stage` is a peer.
    fn is_peer(&self, stage: &str) -> bool {
        self.peers.iter().any(|p| p == stage)
    }

    /// The server's name in a table: peers are marked as such.
    fn name(&self, stage: &str) -> String {
        if self.is_peer(stage) {
            format!("{stage} (peer)")
        } else if self.baselines.iter().any(|b| b == stage) {
            format!("{stage} (baseline)")
        } else {
            stage.to_string()
        }
    }

    /// CPU per line of the ceiling's paced batched writer, µs: the machine's
    /// own cost of a delivery at the efficiency load.
    fn ceiling_us(&self) -> Option<f64> {
        let paced = self.ceiling.as_ref()?.paced.as_ref()?;
        (paced.broadcaster_cpu_us_per_line > 0.0).then_some(paced.broadcaster_cpu_us_per_line)
    }

    /// `at 500k/s`, the efficiency load as table headers say it.
    fn load_text(&self) -> String {
        self.efficiency_load()
            .map_or("a fixed load".to_string(), |v| {
                format!("{}/s", format::si(v))
            })
    }

    /// The efficiency load of the run, from the first result that has one.
    fn efficiency_load(&self) -> Option<f64> {
        self.results
            .iter()
            .find_map(|r| r.efficiency.as_ref().map(|e| e.step.load))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
}

/// Reads a results folder written by `compare`.
pub fn load(dir: &Path) -> io::Result<Loaded> {
    let index: Option<RunIndex> = read_json(&dir.join("run.json")).ok();
    let ceiling = read_json(&dir.join("ceiling.json")).ok();
    let baselines: Vec<String> = index
        .as_ref()
        .map(|i| {
            i.stages
                .iter()
                .filter(|s| s.baseline)
                .map(|s| s.label.clone())
                .collect()
        })
        .unwrap_or_default();
    let (stages, missing, peers) = match &index {
        Some(i) => {
            let pick = |f: &dyn Fn(&crate::result::StageEntry) -> bool| -> Vec<String> {
                i.stages
                    .iter()
                    .filter(|s| f(s))
                    .map(|s| s.label.clone())
                    .collect()
            };
            (pick(&|_| true), pick(&|s| !s.found), pick(&|s| s.peer))
        }
        None => {
            let mut v: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir() && e.file_name() != "report")
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            (v, Vec::new(), Vec::new())
        }
    };
    let mut results = Vec::new();
    for stage in &stages {
        for scenario in Scenario::ALL {
            let path = dir.join(stage).join(format!("{}.json", scenario.name()));
            if path.is_file() {
                let mut r: RunResult = read_json(&path)?;
                r.stage = Some(stage.clone());
                results.push(r);
            }
        }
    }
    Ok(Loaded {
        index,
        stages,
        missing,
        peers,
        baselines,
        results,
        ceiling,
    })
}

/// A cell from the result of one scenario: `not run` when it was not run,
/// `error` when it could not run.
fn cell(l: &Loaded, stage: &str, s: Scenario, f: impl Fn(&RunResult) -> String) -> String {
    match l.get(stage, s) {
        None => "not run".to_string(),
        Some(r) if r.error.is_some() => "error".to_string(),
        Some(r) => f(r),
    }
}

/// Correctness over every scenario a server ran: `ok`, or the first thing
/// that went wrong and where (`lost 12 (chat)`).
fn correct_overall(l: &Loaded, stage: &str) -> String {
    let mine: Vec<&RunResult> = l
        .results
        .iter()
        .filter(|r| r.stage.as_deref() == Some(stage) && r.error.is_none())
        .collect();
    for r in &mine {
        let broken = [
            ("lost", r.lost),
            ("duplicated", r.duplicated),
            ("reordered", r.reordered),
            ("unexpected", r.unexpected),
        ];
        if let Some((what, n)) = broken.iter().find(|(_, n)| *n > 0) {
            return format!("{what} {} ({})", format::count(*n), r.scenario);
        }
    }
    if mine.iter().all(|r| r.expected == 0) {
        "nothing to deliver".to_string()
    } else {
        "ok".to_string()
    }
}

// ANCHOR: overview
/// The one table `compare` prints: one row per server, six columns.
pub fn overview(l: &Loaded) -> String {
    let load = l.load_text();
    let mut t = format!(
        "| server | correct | idle: clients in · memory each | flood: knee (deliveries per second) | flood: CPU per delivery at {load} (× ceiling) | one room: knee (deliveries per second) |\n\
         |---|---|---|---|---|---|\n"
    );
    let ceiling = l.ceiling_us();
    for stage in l.stages_with_results() {
        let s = stage.as_str();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} |",
            l.name(s),
            correct_overall(l, s),
            cell(l, s, Scenario::Idle, |r| format!(
                "{} · {}",
                format::ready_cell(r),
                format::rss_per_conn(r)
            )),
            cell(l, s, Scenario::Flood, format::knee_cell),
            cell(l, s, Scenario::Flood, |r| format::efficiency_cell(
                r, ceiling
            )),
            cell(l, s, Scenario::OneRoom, format::knee_cell),
        );
    }
    for m in &l.missing {
        let _ = writeln!(t, "| {} | binary not found: not run | | | | |", l.name(m));
    }
    let _ = write!(
        t,
        "\n*correct*: every delivery exactly once and in order, in every scenario. \
         *knee*: the highest delivery rate with p99 under 100 ms and 90% of the offered load \
         delivered; *≥ X (generator-bound)* when the load generator gave out first, so the \
         server can do at least X. *CPU per delivery*: server CPU time per delivery at one \
         offered load that every readiness and async stage carries, and its ratio to what \
         a bare batched writer spends per line at the same load (the ceiling). \
         A memory figure needs at least {MIN_CLIENTS_PER_CONN_FIGURE} clients in.\n"
    );
    t.push_str(&what_happened(l));
    t
}
// ANCHOR_END: overview

/// What a reader must know about one server besides the tables, in one
/// line (`None` when nothing went wrong): clients that did not get in, errors,
/// a generator-bound run, unsent messages, no clean exit; each said once,
/// with the scenarios it happened in.
fn stage_summary(l: &Loaded, stage: &str) -> Option<String> {
    let mine: Vec<&RunResult> = l
        .results
        .iter()
        .filter(|r| r.stage.as_deref() == Some(stage))
        .collect();
    let mut said: Vec<String> = Vec::new();
    // Clients that did not get in, said once when it is every scenario.
    let short: Vec<&RunResult> = mine
        .iter()
        .copied()
        .filter(|r| r.error.is_none() && r.connect.ready < r.connect.attempted)
        .collect();
    if !short.is_empty() {
        let counts: Vec<u64> = short.iter().map(|r| r.connect.ready).collect();
        if short.len() == mine.len() && counts.iter().all(|&c| c == counts[0]) {
            said.push(format!(
                "only {} of the clients got in, in every scenario",
                format::count(counts[0])
            ));
        } else {
            let each: Vec<String> = short
                .iter()
                .map(|r| format!("{} {}", r.scenario, format::ready_cell(r)))
                .collect();
            said.push(format!("clients in: {}", each.join(", ")));
        }
    }
    // Every other kind of trouble once, with the scenarios it hit.
    let mut kinds: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in &mine {
        let exit = r.server.as_ref().and_then(|s| s.exit.as_ref());
        let troubles = [
            ("error", r.error.is_some()),
            ("generator-bound", r.generator.bound),
            ("messages unsent", r.unsent > 0),
            ("deliveries still on their way at the end", r.unfinished > 0),
            (
                "no clean exit",
                !l.is_peer(stage) && r.error.is_none() && !exit.is_some_and(|e| e.in_time),
            ),
        ];
        for (kind, _) in troubles.iter().filter(|(_, yes)| *yes) {
            match kinds.iter_mut().find(|(k, _)| k == kind) {
                Some((_, v)) => v.push(&r.scenario),
                None => kinds.push((kind, vec![&r.scenario])),
            }
        }
    }
    for (kind, scenarios) in kinds {
        let which = if scenarios.len() == mine.len() && mine.len() > 1 {
            "every scenario".to_string()
        } else {
            scenarios.join(", ")
        };
        said.push(format!("{kind} ({which})"));
    }
    (!said.is_empty()).then(|| said.join("; "))
}

/// One line per server at most, then every note of every run, folded.
fn what_happened(l: &Loaded) -> String {
    let lines: Vec<String> = l
        .stages_with_results()
        .filter_map(|s| Some(format!("- **{}**: {}.", l.name(s), stage_summary(l, s)?)))
        .collect();
    let all_notes: Vec<String> = l
        .results
        .iter()
        .flat_map(|r| {
            let stage = r.stage.as_deref().unwrap_or("?");
            r.error
                .iter()
                .chain(r.notes.iter())
                .map(move |n| format!("- {stage} / {}: {n}", r.scenario))
        })
        .collect();
    let mut t = String::new();
    if !lines.is_empty() {
        let _ = write!(t, "\nWhat happened:\n\n{}\n", lines.join("\n"));
    }
    if !all_notes.is_empty() {
        let _ = write!(
            t,
            "\n<details>\n<summary>Every note of every run</summary>\n\n{}\n\n</details>\n",
            all_notes.join("\n")
        );
    }
    t
}

/// The ceiling as a small table.
pub fn ceiling_table(c: Option<&Ceiling>) -> String {
    let Some(c) = c else {
        return "No ceiling measured.\n".to_string();
    };
    let mut t = format!(
        "Loopback ceiling: one thread writing {}-byte lines to {} sockets, read by the generator.\n\n",
        c.line_bytes, c.sockets
    );
    if c.measurements.len() > 1 {
        let runs: Vec<String> = c
            .measurements
            .iter()
            .map(|[a, b]| format!("{} / {}", format::si(*a), format::si(*b)))
            .collect();
        let _ = writeln!(
            t,
            "Best of {} measurements (lines/s, one write per line / batched: {}).\n",
            runs.len(),
            runs.join("; ")
        );
    }
    t.push_str(
        "| writer | lines/s | MB/s | writer CPU per line | writer busy | reader CPU per line |\n\
         |---|---|---|---|---|---|\n",
    );
    let modes = [Some(&c.single), Some(&c.batched), c.paced.as_ref()];
    for m in modes.into_iter().flatten() {
        let what = match m.paced_lines_per_sec {
            Some(load) => format!(
                "{} lines per write, paced at {}/s",
                m.lines_per_write,
                format::si(load)
            ),
            None if m.lines_per_write == 1 => "one line per write".to_string(),
            None => format!("{} lines per write", m.lines_per_write),
        };
        let _ = writeln!(
            t,
            "| {what} | {} | {:.0} | {} | {:.0}% | {} |",
            format::si(m.lines_per_sec),
            m.mb_per_sec,
            format::cpu_us(m.broadcaster_cpu_us_per_line),
            m.broadcaster_busy * 100.0,
            format::cpu_us(m.generator_cpu_us_per_line),
        );
    }
    t
}

/// The cells the book's generated blocks are made of, per server: the same
/// text as in the tables, so that one rule holds everywhere.
fn figures(l: &Loaded) -> BTreeMap<String, BTreeMap<&'static str, String>> {
    let ceiling = l.ceiling_us();
    let mut all = BTreeMap::new();
    for stage in &l.stages {
        let s = stage.as_str();
        let mut f: BTreeMap<&'static str, String> = BTreeMap::new();
        f.insert("peer", l.is_peer(s).to_string());
        f.insert("correct", correct_overall(l, s));
        f.insert(
            "idle.clients",
            cell(l, s, Scenario::Idle, format::ready_cell),
        );
        f.insert(
            "idle.memory",
            cell(l, s, Scenario::Idle, format::rss_per_conn),
        );
        f.insert(
            "idle.alive",
            cell(l, s, Scenario::Idle, |r| {
                format!("{} of {}", r.delivered, r.expected)
            }),
        );
        f.insert(
            "chat.deliveries",
            cell(l, s, Scenario::Chat, |r| format::si(r.deliveries_per_sec)),
        );
        f.insert(
            "chat.latency",
            cell(l, s, Scenario::Chat, |r| {
                format!(
                    "{} / {}",
                    format::ms(r.latency_us.p50),
                    format::ms(r.latency_us.p99)
                )
            }),
        );
        f.insert(
            "chat.correct",
            cell(l, s, Scenario::Chat, format::correctness),
        );
        f.insert(
            "chat.cpu",
            cell(l, s, Scenario::Chat, |r| {
                r.server
                    .as_ref()
                    .and_then(|x| x.cpu_us_per_delivery)
                    .map_or("-".into(), format::cpu_us)
            }),
        );
        f.insert(
            "chat.threads",
            cell(l, s, Scenario::Chat, |r| {
                r.server
                    .as_ref()
                    .map_or("-".into(), |x| x.threads.to_string())
            }),
        );
        f.insert("flood.knee", cell(l, s, Scenario::Flood, format::knee_cell));
        f.insert(
            "flood.efficiency",
            cell(l, s, Scenario::Flood, |r| {
                format::efficiency_cell(r, ceiling)
            }),
        );
        f.insert(
            "one-room.knee",
            cell(l, s, Scenario::OneRoom, format::knee_cell),
        );
        f.insert(
            "one-room.efficiency",
            cell(l, s, Scenario::OneRoom, |r| {
                format::efficiency_cell(r, ceiling)
            }),
        );
        f.insert(
            "slow.dropped",
            cell(l, s, Scenario::Slow, |r| {
                r.slow.as_ref().map_or("-".into(), |x| {
                    format!("{} of {}", x.slow_dropped, x.slow_clients)
                })
            }),
        );
        f.insert(
            "slow.p99",
            cell(l, s, Scenario::Slow, |r| format::ms(r.latency_us.p99)),
        );
        f.insert(
            "churn.cycles",
            cell(l, s, Scenario::Churn, |r| {
                r.churn
                    .as_ref()
                    .map_or("-".into(), |c| format::si(c.per_sec))
            }),
        );
        f.insert(
            "starve.ready",
            cell(l, s, Scenario::Starve, format::ready_cell),
        );
        f.insert(
            "efficiency.load",
            l.efficiency_load().map_or("-".into(), format::si),
        );
        f.insert("what", stage_summary(l, s).unwrap_or_default());
        all.insert(stage.clone(), f);
    }
    all
}

/// Writes every Markdown file, `figures.json` and every plot into `out`;
/// returns their paths.
pub fn write(l: &Loaded, out: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> io::Result<()> {
        // A table wider than the book's column is a bug of this report.
        for table in tables::markdown_tables(&text) {
            if let Err(e) = fits(&table) {
                eprintln!("chat-bench report: {name}: {e}");
            }
        }
        let p = out.join(name);
        std::fs::write(&p, text)?;
        written.push(p);
        Ok(())
    };
    let head = match &l.index {
        Some(i) => format!(
            "Profile `{}`, {} on {} ({}), kernel {}, {}, git {}; {}.\n\n",
            i.profile,
            i.conditions.date,
            i.conditions.host,
            i.conditions.cpu_model,
            i.conditions.kernel,
            i.conditions.rustc,
            i.conditions.git_revision,
            i.conditions.pinning
        ),
        None => String::new(),
    };
    put("overview.md", format!("{head}{}", overview(l)))?;
    put("ceiling.md", ceiling_table(l.ceiling.as_ref()))?;
    for s in Scenario::ALL {
        put(
            &format!("{}.md", s.name()),
            format!("{head}{}", tables::scenario_table(l, s)),
        )?;
    }
    let figures = serde_json::to_string_pretty(&figures(l)).map_err(io::Error::other)?;
    put("figures.json", figures + "\n")?;
    written.extend(plots::write_all(l, out)?);
    Ok(written)
}

#[cfg(test)]
mod tests;
