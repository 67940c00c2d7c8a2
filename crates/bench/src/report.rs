//! `chat-bench report`: turns a results folder into Markdown tables and SVG
//! plots for the book.
//!
//! Everything the book shows about performance is generated here from the raw
//! JSON, never typed by hand. The file names are stable, so the book can
//! include them: `report/overview.md`, one `report/<scenario>.md` per
//! scenario, `report/ceiling.md`, and the plots `deliveries.svg`,
//! `latency-p99.svg`, `rss-per-connection.svg`, `connect-time.svg` and
//! `ceiling-fraction.svg`.
//!
//! Run it with `chat-bench report results/<run>` (writes `results/<run>/report/`).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::ceiling::Ceiling;
use crate::compare::RunIndex;
use crate::result::RunResult;
use crate::scenario::Scenario;

/// A results folder, read back.
#[derive(Debug)]
pub struct Loaded {
    /// `run.json`, when present.
    pub index: Option<RunIndex>,
    /// Stage labels in order (from `run.json`, else the folder names, sorted).
    pub stages: Vec<String>,
    /// Stages listed in `run.json` whose binary was not found.
    pub missing: Vec<String>,
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

    /// Stages that have at least one result.
    fn stages_with_results(&self) -> impl Iterator<Item = &String> {
        self.stages.iter().filter(|s| {
            self.results
                .iter()
                .any(|r| r.stage.as_deref() == Some(s.as_str()))
        })
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
    let (stages, missing) = match &index {
        Some(i) => (
            i.stages.iter().map(|s| s.label.clone()).collect(),
            i.stages
                .iter()
                .filter(|s| !s.found)
                .map(|s| s.label.clone())
                .collect(),
        ),
        None => {
            let mut v: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir() && e.file_name() != "report")
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            (v, Vec::new())
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
        results,
        ceiling,
    })
}

// ----- formatting ------------------------------------------------------------

/// 1234567 -> "1.23M", 12345 -> "12.3k".
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds as milliseconds.
fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} ms", us as f64 / 1e3)
    }
}

/// Bytes, human-sized.
fn bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// Correctness in one cell: "ok" or what went wrong.
fn correctness(r: &RunResult) -> String {
    if r.lost == 0 && r.duplicated == 0 && r.reordered == 0 && r.unexpected == 0 {
        if r.expected == 0 {
            "no deliveries expected".to_string()
        } else {
            "ok".to_string()
        }
    } else {
        format!(
            "lost {} dup {} reord {} unexp {}",
            r.lost, r.duplicated, r.reordered, r.unexpected
        )
    }
}

/// `welcomed 1 of 1000` style cell.
fn ready_cell(r: &RunResult) -> String {
    if r.connect.ready == r.connect.attempted {
        format!("{}", r.connect.ready)
    } else {
        format!("{} of {}", r.connect.ready, r.connect.attempted)
    }
}

/// Server RSS per idle connection, when enough clients got in to tell.
fn rss_per_conn(r: &RunResult) -> String {
    match r.idle.as_ref().and_then(|i| i.rss_per_connection_bytes) {
        Some(b) if r.connect.ready >= MIN_CLIENTS_PER_CONN_FIGURE => bytes(b),
        _ => "-".to_string(),
    }
}

/// Whether the server exited 0 within 5 s in every scenario of a stage.
fn exits(l: &Loaded, stage: &str) -> String {
    let all: Vec<&RunResult> = l
        .results
        .iter()
        .filter(|r| r.stage.as_deref() == Some(stage))
        .collect();
    let bad = all
        .iter()
        .filter(|r| {
            !r.server
                .as_ref()
                .and_then(|s| s.exit.as_ref())
                .is_some_and(|e| e.in_time)
        })
        .count();
    if bad == 0 {
        "yes".to_string()
    } else {
        format!("no ({bad} of {})", all.len())
    }
}

/// A cell from the result of one scenario, or `-` when it was not run, or
/// `error` when it could not run.
fn cell(l: &Loaded, stage: &str, s: Scenario, f: impl Fn(&RunResult) -> String) -> String {
    match l.get(stage, s) {
        None => "-".to_string(),
        Some(r) if r.error.is_some() => "error".to_string(),
        Some(r) => f(r),
    }
}

// ANCHOR: overview
/// The one table `compare` prints: one row per stage.
pub fn overview(l: &Loaded) -> String {
    let mut t = String::from(
        "| stage | idle: ready | idle: RSS/conn | chat: deliveries/s | chat: p99 | chat: correct | flood: max bounded/s | of ceiling | slow: dropped | slow: readers p99 | churn: cycles/s | starve: ready | CPU µs/delivery | exit 0 |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ceiling = l.ceiling.as_ref().map(ceiling_rate);
    for stage in l.stages_with_results() {
        let s = stage.as_str();
        let _ = writeln!(
            t,
            "| {s} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(l, s, Scenario::Idle, ready_cell),
            cell(l, s, Scenario::Idle, rss_per_conn),
            cell(l, s, Scenario::Chat, |r| si(r.deliveries_per_sec)),
            cell(l, s, Scenario::Chat, |r| ms(r.latency_us.p99)),
            cell(l, s, Scenario::Chat, correctness),
            cell(l, s, Scenario::Flood, |r| si(r
                .max_bounded_deliveries_per_sec
                .unwrap_or(0.0))),
            cell(l, s, Scenario::Flood, |r| match ceiling {
                Some(c) if c > 0.0 => format!(
                    "{:.0}%",
                    100.0 * r.max_bounded_deliveries_per_sec.unwrap_or(0.0) / c
                ),
                _ => "-".into(),
            }),
            cell(l, s, Scenario::Slow, |r| r.slow.as_ref().map_or(
                "-".into(),
                |x| format!("{} of {}", x.slow_dropped, x.slow_clients)
            )),
            cell(l, s, Scenario::Slow, |r| ms(r.latency_us.p99)),
            cell(l, s, Scenario::Churn, |r| r
                .churn
                .as_ref()
                .map_or("-".into(), |c| si(c.per_sec))),
            cell(l, s, Scenario::Starve, ready_cell),
            cell(l, s, Scenario::Chat, |r| r
                .server
                .as_ref()
                .and_then(|x| x.cpu_us_per_delivery)
                .map_or("-".into(), |v| format!("{v:.2}"))),
            exits(l, s),
        );
    }
    for m in &l.missing {
        let _ = writeln!(
            t,
            "| {m} | binary not found: not run | | | | | | | | | | | | |"
        );
    }
    t.push_str(
        "\n*chat*: deliveries/s and p99 at the same offered load for every stage. \
         *flood*: highest delivery rate whose p99 stayed bounded; *of ceiling*: that \
         rate over the loopback ceiling (the faster of its two modes). \
         *slow*: slow readers dropped by the server, and the readers' p99. \
         *CPU µs/delivery*: server CPU time per delivery in the chat scenario (the \
         least noisy efficiency figure on a shared machine).\n",
    );
    t.push_str(&notes(l));
    t
}
// ANCHOR_END: overview

/// Every note of every result, so that "welcomed 1 of 1000" is never hidden.
fn notes(l: &Loaded) -> String {
    let mut t = String::new();
    for r in &l.results {
        let stage = r.stage.as_deref().unwrap_or("?");
        for n in r.error.iter().chain(r.notes.iter()) {
            if t.is_empty() {
                t.push_str("\nWhat happened:\n\n");
            }
            let _ = writeln!(t, "- {stage} / {}: {n}", r.scenario);
        }
    }
    t
}

/// The ceiling a stage's throughput is compared with: the faster mode (a
/// server that batches its writes may beat the one-write-per-line figure).
pub fn ceiling_rate(c: &Ceiling) -> f64 {
    c.single.lines_per_sec.max(c.batched.lines_per_sec)
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
            .map(|[a, b]| format!("{} / {}", si(*a), si(*b)))
            .collect();
        let _ = writeln!(
            t,
            "Best of {} measurements (lines/s, one write per line / batched: {}).\n",
            runs.len(),
            runs.join("; ")
        );
    }
    t.push_str(
        "| lines per write | lines/s | MB/s | writer busy | reader busy |\n|---|---|---|---|---|\n",
    );
    for m in [&c.single, &c.batched] {
        let _ = writeln!(
            t,
            "| {} | {} | {:.0} | {:.0}% | {:.0}% |",
            m.lines_per_write,
            si(m.lines_per_sec),
            m.mb_per_sec,
            m.broadcaster_busy * 100.0,
            m.generator_busy * 100.0
        );
    }
    t
}

/// Fewest ready clients for which a per-connection memory figure is shown.
const MIN_CLIENTS_PER_CONN_FIGURE: u64 = 100;

/// One Markdown table per scenario, with that scenario's own columns.
fn scenario_table(l: &Loaded, s: Scenario) -> String {
    let header = match s {
        Scenario::Idle => "| stage | ready | ramp | connects/s | welcome p99 | RSS/conn | kernel TCP buffers/conn | peak RSS | threads | alive | exit 0 |",
        Scenario::Chat => "| stage | ready | deliveries/s | p50 | p99 | p99.9 | max | correct | unsent | CPU µs/delivery | peak RSS | threads | generator busy |",
        Scenario::Flood => "| stage | max bounded deliveries/s | its p99 | server CPU µs/delivery there | generator busy there | steps (offered → delivered/s @ p99; ✗ not bounded) |",
        Scenario::Slow => "| stage | ready | slow dropped | readers dropped | readers p99 | correct | unsent | peak RSS |",
        Scenario::Churn => "| stage | members ready | cycles/s | failed cycles | churn welcome p50 | churn welcome p99 | members p99 | correct |",
        Scenario::Starve => "| stage | ready | timed out | welcome p50 | welcome p99 | welcome max | p99 | correct |",
    };
    let cols = header.matches('|').count() - 1;
    let mut t = format!("{header}\n|{}\n", "---|".repeat(cols));
    for stage in l.stages_with_results() {
        let Some(r) = l.get(stage, s) else { continue };
        if let Some(e) = &r.error {
            let _ = writeln!(t, "| {stage} | error: {e} |{}", " |".repeat(cols - 2));
            continue;
        }
        let peak = r
            .server
            .as_ref()
            .map_or("-".into(), |x| bytes(x.peak_rss_kib as f64 * 1024.0));
        let threads = r
            .server
            .as_ref()
            .map_or("-".into(), |x| x.threads.to_string());
        let row = match s {
            Scenario::Idle => {
                let i = r.idle.clone().unwrap_or_default();
                format!(
                    "{} | {:.2} s | {} | {} | {} | {} | {peak} | {threads} | {} of {} | {}",
                    ready_cell(r),
                    r.connect.duration_s,
                    si(r.connect.per_sec),
                    ms(r.connect.time_to_welcome_us.p99),
                    rss_per_conn(r),
                    // System-wide figure: with few clients, other activity
                    // on the machine would dominate it.
                    if r.connect.ready >= MIN_CLIENTS_PER_CONN_FIGURE {
                        bytes(i.kernel_per_connection_bytes)
                    } else {
                        "-".to_string()
                    },
                    r.delivered,
                    r.expected,
                    exits(l, stage)
                )
            }
            Scenario::Chat => format!(
                "{} | {} | {} | {} | {} | {} | {} | {} | {} | {peak} | {threads} | {:.0}%",
                ready_cell(r),
                si(r.deliveries_per_sec),
                ms(r.latency_us.p50),
                ms(r.latency_us.p99),
                ms(r.latency_us.p999),
                ms(r.latency_us.max),
                correctness(r),
                r.unsent,
                r.server
                    .as_ref()
                    .and_then(|x| x.cpu_us_per_delivery)
                    .map_or("-".into(), |v| format!("{v:.2}")),
                r.generator.busy * 100.0
            ),
            Scenario::Flood => {
                let steps: Vec<String> = r
                    .steps
                    .iter()
                    .map(|st| {
                        format!(
                            "{} → {} @ {}{}",
                            si(st.offered_per_sec),
                            si(st.deliveries_per_sec),
                            ms(st.latency_us.p99),
                            if st.bounded { "" } else { " ✗" }
                        )
                    })
                    .collect();
                // The headline figures come from the best bounded step; a
                // generator near 100% there means the server may go faster.
                let best = r
                    .steps
                    .iter()
                    .filter(|st| st.bounded)
                    .max_by(|a, b| a.deliveries_per_sec.total_cmp(&b.deliveries_per_sec));
                format!(
                    "{} | {} | {} | {} | {}",
                    si(r.max_bounded_deliveries_per_sec.unwrap_or(0.0)),
                    best.map_or("-".into(), |st| ms(st.latency_us.p99)),
                    best.and_then(|st| st.cpu_us_per_delivery)
                        .map_or("-".into(), |v| format!("{v:.2}")),
                    best.map_or("-".into(), |st| format!(
                        "{:.0}%",
                        st.generator_busy * 100.0
                    )),
                    steps.join("; "),
                )
            }
            Scenario::Slow => {
                let x = r.slow.clone().unwrap_or_default();
                format!(
                    "{} | {} of {} | {} | {} | {} | {} | {peak}",
                    ready_cell(r),
                    x.slow_dropped,
                    x.slow_clients,
                    x.readers_dropped,
                    ms(r.latency_us.p99),
                    correctness(r),
                    r.unsent
                )
            }
            Scenario::Churn => {
                let c = r.churn.clone().unwrap_or_default();
                format!(
                    "{} | {} | {} | {} | {} | {} | {}",
                    ready_cell(r),
                    si(c.per_sec),
                    c.failed,
                    ms(c.time_to_welcome_us.p50),
                    ms(c.time_to_welcome_us.p99),
                    ms(r.latency_us.p99),
                    correctness(r)
                )
            }
            Scenario::Starve => format!(
                "{} | {} | {} | {} | {} | {} | {}",
                ready_cell(r),
                r.connect.timed_out,
                ms(r.connect.time_to_welcome_us.p50),
                ms(r.connect.time_to_welcome_us.p99),
                ms(r.connect.time_to_welcome_us.max),
                ms(r.latency_us.p99),
                correctness(r)
            ),
        };
        let _ = writeln!(t, "| {stage} | {row} |");
    }
    t
}

// ----- plots ------------------------------------------------------------------

fn plot_err<E: std::fmt::Debug>(e: E) -> io::Error {
    io::Error::other(format!("plot: {e:?}"))
}

/// A horizontal bar chart, one bar per stage, the first stage on top.
fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    items: &[(String, f64)],
    label: impl Fn(f64) -> String,
) -> io::Result<()> {
    let n = items.len().max(1);
    let root = SVGBackend::new(path, (820, 100 + 30 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let max = items.iter().map(|i| i.1).fold(0.0, f64::max).max(1e-9) * 1.2;
    // Row r (counted from the bottom) shows item n-1-r, so item 0 is on top.
    let row = |i: usize| n - 1 - i;
    let names: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(100)
        .build_cartesian_2d(0f64..max, (0..n - 1).into_segmented())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .y_labels(n)
        .x_label_formatter(&|v| label(*v))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(r) if *r < n => names.get(row(*r)).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, (_, v))| {
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row(i))),
                    (*v, SegmentValue::Exact(row(i) + 1)),
                ],
                Palette99::pick(i).mix(0.8).filled(),
            );
            r.set_margin(4, 4, 0, 0);
            r
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!(" {}", label(*v)),
                (*v, SegmentValue::CenterOf(row(i))),
                ("sans-serif", 13),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// A named line: a stage and its points.
type Series = (String, Vec<(f64, f64)>);
/// Turns one ramp sample of a result into a point (or skips it).
type PointOf<'a> = &'a dyn Fn(&RunResult, &crate::result::RampSample) -> Option<(f64, f64)>;

/// A line chart with one series per stage.
fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> io::Result<()> {
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let pts = series.iter().flat_map(|s| s.1.iter());
    let max_x = pts.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let max_y = pts.map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i);
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 20, y)],
                    Palette99::pick(i).stroke_width(2),
                )
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// Writes every Markdown file and plot into `out`; returns their paths.
pub fn write(l: &Loaded, out: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> io::Result<()> {
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
            format!("{head}{}", scenario_table(l, s)),
        )?;
    }

    let stages: Vec<&String> = l.stages_with_results().collect();
    let per_stage = |s: Scenario, f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<(String, f64)> {
        stages
            .iter()
            .filter_map(|st| {
                let r = l.get(st, s).filter(|r| r.error.is_none())?;
                Some(((*st).clone(), f(r)?))
            })
            .collect()
    };
    let p = out.join("deliveries.svg");
    bars(
        &p,
        "Highest delivery rate with bounded p99 (flood)",
        "deliveries per second",
        &per_stage(Scenario::Flood, &|r| r.max_bounded_deliveries_per_sec),
        si,
    )?;
    written.push(p);
    let p = out.join("latency-p99.svg");
    bars(
        &p,
        "p99 delivery latency at the same offered load (chat)",
        "milliseconds",
        &per_stage(Scenario::Chat, &|r| {
            (r.latency_us.count > 0).then(|| r.latency_us.p99 as f64 / 1e3)
        }),
        |v| format!("{v:.2}"),
    )?;
    written.push(p);
    if let Some(c) = &l.ceiling {
        let p = out.join("ceiling-fraction.svg");
        bars(
            &p,
            "Flood throughput as a fraction of the loopback ceiling",
            "percent of ceiling",
            &per_stage(Scenario::Flood, &|r| {
                Some(100.0 * r.max_bounded_deliveries_per_sec? / ceiling_rate(c).max(1.0))
            }),
            |v| format!("{v:.0}%"),
        )?;
        written.push(p);
    }
    let curve = |f: PointOf<'_>| -> Vec<Series> {
        stages
            .iter()
            .filter_map(|st| {
                let r = l.get(st, Scenario::Idle).filter(|r| r.error.is_none())?;
                let pts: Vec<(f64, f64)> =
                    r.connect.samples.iter().filter_map(|s| f(r, s)).collect();
                (!pts.is_empty()).then(|| ((*st).clone(), pts))
            })
            .collect()
    };
    let p = out.join("rss-per-connection.svg");
    lines(
        &p,
        "Server memory per connection while clients connect (idle)",
        "clients connected",
        "KiB of RSS per connection",
        &curve(&|r, s| {
            let start = r.server.as_ref()?.start_rss_kib as f64;
            (s.clients > 0 && s.rss_kib > 0).then(|| {
                (
                    s.clients as f64,
                    (s.rss_kib as f64 - start) / s.clients as f64,
                )
            })
        }),
    )?;
    written.push(p);
    let p = out.join("connect-time.svg");
    lines(
        &p,
        "Time to connect and welcome N clients (idle)",
        "clients connected",
        "seconds",
        &curve(&|_, s| Some((s.clients as f64, s.elapsed_s))),
    )?;
    written.push(p);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_of_nothing_is_still_written() {
        let l = Loaded {
            index: None,
            stages: vec!["ghost".to_string()],
            missing: vec!["ghost".to_string()],
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
    fn numbers_are_readable() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(2_500_000.0), "2.50M");
        assert_eq!(ms(1234), "1.23 ms");
        assert_eq!(bytes(2048.0), "2.0 KiB");
    }
}
