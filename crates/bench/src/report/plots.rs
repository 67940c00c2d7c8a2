//! The SVG plots, and the one colour each server has in all of them.
//!
//! A reader who learns that `epoll` is blue in one plot must find it blue in
//! the next: colours come from a fixed [`PALETTE`] keyed by the stage label,
//! never from a series' position (which changes with the set of stages a run
//! has). Peers share shades of grey, so they read as "not ours".

use std::io;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::format::{self, si};
use super::Loaded;
use crate::knee::Verdict;
use crate::result::{RampSample, RunResult};
use crate::scenario::Scenario;

/// One colour per stage label, in chapter order (Tableau's ten, plus navy).
pub const PALETTE: &[(&str, (u8, u8, u8))] = &[
    ("sequential", (0x9c, 0x75, 0x5f)),
    ("threads", (0xe1, 0x57, 0x59)),
    ("threadpool", (0xff, 0x9d, 0xa7)),
    ("select", (0xed, 0xc9, 0x48)),
    ("epoll", (0x4e, 0x79, 0xa7)),
    ("mio", (0x76, 0xb7, 0xb2)),
    ("futures", (0x59, 0xa1, 0x4f)),
    ("tokio-ct", (0xf2, 0x8e, 0x2b)),
    ("tokio-mt", (0xb0, 0x7a, 0xa1)),
    ("async-std", (0x17, 0xbe, 0xcf)),
    ("smol", (0x1f, 0x3a, 0x93)),
    ("io-uring", (0xd6, 0x27, 0x28)),
    ("asyncio", (0x8c, 0x56, 0x4b)),
];

/// Colours of servers not in the palette (peers), by their order in the run.
const OTHERS: &[(u8, u8, u8)] = &[(0x55, 0x55, 0x55), (0x99, 0x99, 0x99), (0x33, 0x33, 0x33)];

/// The ceiling's colour in the plots that show it.
const CEILING: RGBColor = RGBColor(0, 0, 0);

/// The colour of `label`; `other` numbers the servers outside the palette.
pub fn colour(label: &str, other: usize) -> RGBColor {
    let (r, g, b) = PALETTE
        .iter()
        .find(|(name, _)| *name == label)
        .map_or(OTHERS[other % OTHERS.len()], |(_, rgb)| *rgb);
    RGBColor(r, g, b)
}

/// A label and its colour, for every server of a run.
fn colours(l: &Loaded) -> Vec<(String, RGBColor)> {
    let mut others = 0;
    l.stages
        .iter()
        .map(|s| {
            let known = PALETTE.iter().any(|(name, _)| name == s);
            let c = colour(s, others);
            if !known {
                others += 1;
            }
            (s.clone(), c)
        })
        .collect()
}

fn plot_err<E: std::fmt::Debug>(e: E) -> io::Error {
    io::Error::other(format!("plot: {e:?}"))
}

/// One bar: its label, value, colour, text, and whether it is only a lower
/// bound or was measured under overload (drawn pale).
struct Bar {
    label: String,
    value: f64,
    colour: RGBColor,
    text: String,
    pale: bool,
}

/// A horizontal bar chart, one bar per item, the first on top.
fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    items: &[Bar],
    tick: impl Fn(f64) -> String,
) -> io::Result<()> {
    let n = items.len().max(1);
    let root = SVGBackend::new(path, (820, 100 + 30 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    // Room on the right for the longest text ("≥ 2.30M (generator-bound)").
    let max = items.iter().map(|i| i.value).fold(0.0, f64::max).max(1e-9) * 1.45;
    // Row r (counted from the bottom) shows item n-1-r, so item 0 is on top.
    let row = |i: usize| n - 1 - i;
    let names: Vec<String> = items.iter().map(|i| i.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..max, (0..n - 1).into_segmented())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .y_labels(n)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(r) if *r < n => names.get(row(*r)).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, b)| {
            let style = if b.pale {
                b.colour.mix(0.35).filled()
            } else {
                b.colour.mix(0.9).filled()
            };
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row(i))),
                    (b.value, SegmentValue::Exact(row(i) + 1)),
                ],
                style,
            );
            r.set_margin(4, 4, 0, 0);
            r
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!(" {}", b.text),
                (b.value, SegmentValue::CenterOf(row(i))),
                ("sans-serif", 13),
            )
        }))
        .map_err(plot_err)?;
    root.present().map_err(plot_err)
}

/// A named line: a server, its colour and its points.
type Series = (String, RGBColor, Vec<(f64, f64)>);
/// Turns one ramp sample of a result into a point (or skips it).
type PointOf<'a> = &'a dyn Fn(&RunResult, &RampSample) -> Option<(f64, f64)>;

/// A line chart with one series per server; the x axis counts clients.
fn lines(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> io::Result<()> {
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let pts = series.iter().flat_map(|s| s.2.iter());
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
        .x_desc("clients connected")
        // Clients are counted, not measured: "1,000", never "1000.0".
        .x_label_formatter(&|v| format::count(v.round().max(0.0) as u64))
        .y_desc(y_desc)
        .draw()
        .map_err(plot_err)?;
    for (name, colour, points) in series {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
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

/// The knee bars of a searching scenario.
fn knee_bars(l: &Loaded, s: Scenario) -> Vec<Bar> {
    colours(l)
        .into_iter()
        .filter_map(|(stage, colour)| {
            let r = l.ok(&stage, s)?;
            let k = r.knee.as_ref()?;
            Some(Bar {
                label: l.name(&stage),
                value: k.deliveries_per_sec,
                colour,
                text: format::knee_text(k),
                pale: k.is_lower_bound(),
            })
        })
        .collect()
}

/// Writes every plot into `out`; returns their paths.
pub(super) fn write_all(l: &Loaded, out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut plot = |name: &str, draw: &dyn Fn(&Path) -> io::Result<()>| -> io::Result<()> {
        let p = out.join(name);
        draw(&p)?;
        written.push(p);
        Ok(())
    };
    plot("deliveries.svg", &|p| {
        bars(
            p,
            "Knee: highest delivery rate with bounded p99 (flood, rooms of 10)",
            "deliveries per second (pale: only a lower bound)",
            &knee_bars(l, Scenario::Flood),
            si,
        )
    })?;
    plot("one-room.svg", &|p| {
        bars(
            p,
            "Knee in one room of 100 (one-room, peers included)",
            "deliveries per second (pale: only a lower bound)",
            &knee_bars(l, Scenario::OneRoom),
            si,
        )
    })?;
    plot("efficiency.svg", &|p| {
        let load = l
            .efficiency_load()
            .map_or(String::new(), |v| format!(" at {}/s", si(v)));
        let mut items: Vec<Bar> = l
            .ceiling_us()
            .map(|c| Bar {
                label: "ceiling (bare writer)".to_string(),
                value: c,
                colour: CEILING,
                text: format::cpu_us(c),
                pale: false,
            })
            .into_iter()
            .collect();
        items.extend(colours(l).into_iter().filter_map(|(stage, colour)| {
            let e = l.ok(&stage, Scenario::Flood)?.efficiency.as_ref()?;
            let v = e.server_cpu_us_per_delivery?;
            Some(Bar {
                label: l.name(&stage),
                value: v,
                colour,
                text: format!(
                    "{}{}",
                    format::cpu_us(v),
                    format::verdict_suffix(e.step.verdict)
                ),
                pale: e.step.verdict != Verdict::Held,
            })
        }));
        bars(
            p,
            &format!("Server CPU per delivery{load} (flood; pale: load not carried)"),
            "microseconds of CPU per delivery",
            &items,
            |v| format!("{v:.1}"),
        )
    })?;
    plot("latency-p99.svg", &|p| {
        let items: Vec<Bar> = colours(l)
            .into_iter()
            .filter_map(|(stage, colour)| {
                let r = l.ok(&stage, Scenario::Chat)?;
                (r.latency_us.count > 0).then(|| {
                    let v = r.latency_us.p99 as f64 / 1e3;
                    Bar {
                        label: l.name(&stage),
                        value: v,
                        colour,
                        text: format!("{v:.2} ms"),
                        pale: r.generator.bound,
                    }
                })
            })
            .collect();
        bars(
            p,
            "p99 delivery latency at the same offered load (chat)",
            "milliseconds",
            &items,
            |v| format!("{v:.1}"),
        )
    })?;
    // The ramp curves: per-connection memory only under the one rule.
    let curve = |f: PointOf<'_>, per_conn: bool| -> Vec<Series> {
        colours(l)
            .into_iter()
            .filter_map(|(stage, colour)| {
                let r = l.ok(&stage, Scenario::Idle)?;
                if per_conn && format::too_few_clients(r).is_some() {
                    return None;
                }
                let pts: Vec<(f64, f64)> =
                    r.connect.samples.iter().filter_map(|s| f(r, s)).collect();
                (!pts.is_empty()).then(|| (l.name(&stage), colour, pts))
            })
            .collect()
    };
    let rss = curve(
        &|r, s| {
            let start = r.server.as_ref()?.start_rss_kib as f64;
            (s.clients > 0 && s.rss_kib > 0).then(|| {
                (
                    s.clients as f64,
                    (s.rss_kib as f64 - start) / s.clients as f64,
                )
            })
        },
        true,
    );
    plot("rss-per-connection.svg", &|p| {
        lines(
            p,
            "Server memory per connection while clients connect (idle)",
            "KiB of RSS per connection",
            &rss,
        )
    })?;
    let time = curve(&|_, s| Some((s.clients as f64, s.elapsed_s)), false);
    plot("connect-time.svg", &|p| {
        lines(
            p,
            "Time to connect and welcome N clients (idle)",
            "seconds",
            &time,
        )
    })?;
    Ok(written)
}
