//! How figures are written in every table: the units, the rules, and the
//! width a table may take.
//!
//! Each rule lives here once, so that a figure reads the same in every table
//! and in the book's generated blocks (which take their text from
//! `figures.json`, written from these functions):
//!
//! - a per-connection figure only where at least
//!   [`MIN_CLIENTS_PER_CONN_FIGURE`] clients got in, else
//!   `not measured (only N clients got in)`;
//! - a knee the generator ended is `≥ X (generator-bound)`, never a bare number;
//! - a table must fit the book's content column ([`fits`]).

use crate::knee::{Knee, Limit, Verdict};
use crate::result::RunResult;

/// Fewest ready clients for which a per-connection figure is shown: with
/// fewer, the server's fixed costs (and the machine's noise) would dominate it.
pub const MIN_CLIENTS_PER_CONN_FIGURE: u64 = 100;

/// 1234567 -> "1.23M", 12345 -> "12.3k".
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        // "500k", not "500.0k"; "12.3k" keeps its decimal.
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else if v >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds as milliseconds.
pub fn ms(us: u64) -> String {
    if us >= 100_000 {
        format!("{:.0} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} ms", us as f64 / 1e3)
    }
}

/// A latency figure of `l`, or "-" when nothing was measured (a stage that delivered nothing
/// has no latency, not one of 0 ms).
pub fn lat(l: &crate::result::Latency, us: u64) -> String {
    if l.count == 0 {
        "-".into()
    } else {
        ms(us)
    }
}

/// Bytes, human-sized.
pub fn bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// Microseconds of CPU, with two decimals below 10.
pub fn cpu_us(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.1} µs")
    } else {
        format!("{v:.2} µs")
    }
}

/// An integer with thousands separators: 10000 -> "10,000".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1000`, or `4 of 1000` when not everybody got in.
pub fn ready_cell(r: &RunResult) -> String {
    if r.connect.ready == r.connect.attempted {
        count(r.connect.ready)
    } else {
        format!(
            "{} of {}",
            count(r.connect.ready),
            count(r.connect.attempted)
        )
    }
}

/// Why a per-connection figure is not shown, or `None` when it may be.
pub fn too_few_clients(r: &RunResult) -> Option<String> {
    let ready = r.connect.ready;
    (ready < MIN_CLIENTS_PER_CONN_FIGURE).then(|| {
        let clients = if ready == 1 { "client" } else { "clients" };
        format!("not measured (only {ready} {clients} got in)")
    })
}

/// A per-connection figure under the one rule: `figure` where enough
/// clients got in, the reason otherwise.
pub fn per_connection(r: &RunResult, figure: impl Fn(&RunResult) -> Option<String>) -> String {
    too_few_clients(r).unwrap_or_else(|| figure(r).unwrap_or_else(|| "-".to_string()))
}

/// Server RSS per idle connection, under the rule.
pub fn rss_per_conn(r: &RunResult) -> String {
    per_connection(r, |r| {
        r.idle
            .as_ref()
            .and_then(|i| i.rss_per_connection_bytes)
            .map(bytes)
    })
}

/// A knee as the reader must see it: a number only when the server set it.
pub fn knee_text(k: &Knee) -> String {
    let v = si(k.deliveries_per_sec);
    match k.limit {
        Limit::Server => v,
        Limit::Generator if k.deliveries_per_sec > 0.0 => format!("≥ {v} (generator-bound)"),
        Limit::Generator => "not measured (generator-bound at the first step)".to_string(),
        Limit::Steps => format!("≥ {v} (step limit)"),
        Limit::FirstStep => format!(
            "< {} (no step held)",
            si(k.failed_load.unwrap_or(k.deliveries_per_sec))
        ),
    }
}

/// The knee cell of a searching scenario's result.
pub fn knee_cell(r: &RunResult) -> String {
    match &r.knee {
        Some(k) => knee_text(k),
        // The search only runs when messages have somebody to reach.
        None => too_few_clients(r).unwrap_or_else(|| "not measured".to_string()),
    }
}

/// What a step's verdict adds to a figure measured in it.
pub fn verdict_suffix(v: Verdict) -> &'static str {
    match v {
        Verdict::Held => "",
        Verdict::Server => ", overloaded",
        Verdict::Generator => ", generator-bound",
    }
}

/// CPU per delivery at the fixed load, and its ratio to the ceiling's paced
/// writer at the same load: `1.73 µs (5.4×)`.
pub fn efficiency_cell(r: &RunResult, ceiling_us: Option<f64>) -> String {
    let Some(e) = &r.efficiency else {
        return knee_cell(r);
    };
    let Some(v) = e.server_cpu_us_per_delivery else {
        return "-".to_string();
    };
    let ratio = ceiling_us
        .filter(|c| *c > 0.0)
        .map_or(String::new(), |c| format!(" ({:.1}×)", v / c));
    format!("{}{ratio}{}", cpu_us(v), verdict_suffix(e.step.verdict))
}

/// Correctness of one result: `ok`, or what went wrong.
pub fn correctness(r: &RunResult) -> String {
    if r.lost == 0 && r.duplicated == 0 && r.reordered == 0 && r.unexpected == 0 {
        if r.expected == 0 {
            "nothing to deliver".to_string()
        } else if r.unfinished > 0 {
            // An overloaded server still delivering when the run ended.
            format!("ok ({} late at the end)", count(r.unfinished))
        } else {
            "ok".to_string()
        }
    } else {
        let parts: Vec<String> = [
            ("lost", r.lost),
            ("duplicated", r.duplicated),
            ("reordered", r.reordered),
            ("unexpected", r.unexpected),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{what} {n}"))
        .collect();
        parts.join(", ")
    }
}

// ----- the width rule ---------------------------------------------------------

/// The book's content column, CSS pixels (mdBook's `--content-max-width`).
pub const CONTENT_PX: f64 = 750.0;
/// Width of a glyph of the book's 16 px body font, on average, CSS pixels.
/// Calibrated in headless Chromium on the worst-case tables of this
/// module's tests (`CHAT_BENCH_REPORT_SAMPLE`): their narrowest layouts came
/// out at 8.1 px per character of their widest words; 8.5 errs wide, for
/// bold headers and other fonts.
const CHAR_PX: f64 = 8.5;
/// What a cell adds around its text: mdBook pads cells 20 px on each side,
/// plus a 1 px border.
const CELL_PX: f64 = 41.0;

/// The narrowest a Markdown table can be laid out, CSS pixels: per column,
/// its longest unbreakable piece of text (browsers break lines at spaces and
/// after a hyphen), plus the cell's padding.
pub fn min_width_px(table: &str) -> f64 {
    let mut widest: Vec<usize> = Vec::new();
    for line in table.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if cells
            .iter()
            .all(|c| c.trim().chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue; // the separator row
        }
        widest.resize(widest.len().max(cells.len()), 0);
        for (i, cell) in cells.iter().enumerate() {
            let text = cell.replace(['*', '`'], "");
            let piece = text
                .split(' ')
                .flat_map(|w| w.split_inclusive('-'))
                .map(|p| p.chars().count())
                .max()
                .unwrap_or(0);
            widest[i] = widest[i].max(piece);
        }
    }
    widest.iter().map(|&w| w as f64 * CHAR_PX + CELL_PX).sum()
}

/// Whether a table fits the content column; the error says by how much not.
pub fn fits(table: &str) -> Result<(), String> {
    let need = min_width_px(table);
    if need <= CONTENT_PX {
        Ok(())
    } else {
        let header = table.lines().next().unwrap_or("");
        Err(format!(
            "table needs {need:.0} px, the column has {CONTENT_PX:.0}: {header}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knee::{Knee, Limit};

    fn knee(limit: Limit, v: f64) -> Knee {
        Knee {
            deliveries_per_sec: v,
            held_load: Some(v),
            failed_load: Some(2.0 * v),
            limit,
        }
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(500_000.0), "500k");
        assert_eq!(si(2_500_000.0), "2.50M");
        assert_eq!(ms(1234), "1.23 ms");
        assert_eq!(bytes(2048.0), "2.0 KiB");
        assert_eq!(count(10_000), "10,000");
        assert_eq!(count(999), "999");
        assert_eq!(cpu_us(0.4321), "0.43 µs");
    }

    #[test]
    fn a_generator_bound_knee_is_never_a_bare_number() {
        assert_eq!(knee_text(&knee(Limit::Server, 1.23e6)), "1.23M");
        assert_eq!(
            knee_text(&knee(Limit::Generator, 2.3e6)),
            "≥ 2.30M (generator-bound)"
        );
        assert!(knee_text(&knee(Limit::Generator, 0.0)).starts_with("not measured"));
        assert_eq!(knee_text(&knee(Limit::Steps, 9e6)), "≥ 9.00M (step limit)");
        assert!(knee_text(&knee(Limit::FirstStep, 0.0)).starts_with('<'));
        for limit in [Limit::Generator, Limit::Steps] {
            let text = knee_text(&knee(limit, 5e5));
            assert!(text.starts_with('≥'), "{text}");
        }
    }

    #[test]
    fn per_connection_figures_need_a_hundred_clients() {
        let mut r = RunResult::default();
        r.connect.ready = 4;
        assert_eq!(
            per_connection(&r, |_| Some("1 KiB".into())),
            "not measured (only 4 clients got in)"
        );
        r.connect.ready = 1;
        assert_eq!(
            rss_per_conn(&r),
            "not measured (only 1 client got in)",
            "the same rule for every figure"
        );
        r.connect.ready = 100;
        assert_eq!(per_connection(&r, |_| Some("1 KiB".into())), "1 KiB");
    }

    #[test]
    fn the_width_rule_catches_wide_tables() {
        let narrow = "| stage | knee |\n|---|---|\n| epoll | ≥ 2.30M (generator-bound) |\n";
        assert!(fits(narrow).is_ok());
        // The old overview: fourteen columns.
        let header: String = (0..14).map(|i| format!("| column{i} ")).collect();
        let wide = format!("{header}|\n|{}\n", "---|".repeat(14));
        assert!(fits(&wide).is_err());
        // One unbreakable word wider than the column.
        let word = format!("| a |\n|---|\n| {} |\n", "x".repeat(90));
        assert!(fits(&word).is_err());
        // Hyphens break: a long hyphenated word is as wide as its widest part.
        assert_eq!(
            min_width_px("| generator-bound |\n|---|\n"),
            min_width_px("| generator- |\n|---|\n")
        );
    }
}
