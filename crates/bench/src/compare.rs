//! `chat-bench compare`: every stage, the same scenarios, the same numbers,
//! one table.
//!
//! It builds nothing: it starts each stage binary found in `--bin-dir`
//! (`target/release` by default) with `--addr 127.0.0.1:0`, reads the
//! `listening on ADDR` line, runs one scenario against it, stops it with
//! SIGTERM and records whether it exited 0 in time. Every (stage, scenario)
//! gets a fresh server, so one scenario's leftovers never weigh on the next.
//! A stage that cannot cope with a scenario is run anyway, bounded in time,
//! and reported with what happened.
//!
//! Beside the stages it can run *peers* (`--peer LABEL=COMMAND`): chat
//! servers that are not the book's, started as they are (they pick their own
//! address) and driven as plain broadcast servers (`Target::broadcast`), in
//! the scenarios such a server can take part in (`one-room`). Their rows are
//! marked as peers in every table.
//!
//! Results go to `results/<date>-<host>/`: one JSON per server and scenario,
//! `ceiling.json`, `run.json` (what was run, and how) and `summary.md`.
//!
//! Run it with `scripts/compare.sh` (which builds first), or
//! `cargo run --release -p chat-bench -- compare --profile quick --bin-dir target/release`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::engine::{self, Options};
use crate::launch;
use crate::result::{self, RunIndex, RunResult, StageEntry};
use crate::scenario::{Plan, Profile, Scenario, Target};
use crate::{ceiling, report, sys};

/// How to start one stage.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// The label in tables and file names, and the name scripts use.
    pub label: &'static str,
    /// The binary's name.
    pub bin: &'static str,
    /// Flags on top of the common ones.
    pub args: &'static [&'static str],
}
// ANCHOR: stages
/// Every stage of the book, in chapter order.
#[rustfmt::skip]
pub const STAGES: &[Stage] = &[
    Stage {
        label: "sequential",
        bin: "chat-sequential",
        args: &[],
    },
    Stage {
        label: "threads",
        bin: "chat-threads",
        args: &[],
    },
    Stage {
        label: "threadpool",
        bin: "chat-threadpool",
        args: &[],
    },
    Stage {
        label: "select",
        bin: "chat-select",
        args: &[],
    },
    Stage {
        label: "epoll",
        bin: "chat-epoll",
        args: &[],
    },
    Stage {
        label: "mio",
        bin: "chat-mio",
        args: &[],
    },
    Stage {
        label: "futures",
        bin: "chat-futures",
        args: &[],
    },
    Stage {
        label: "tokio-ct",
        bin: "chat-tokio",
        args: &["--flavor", "current-thread"],
    },
    Stage {
        label: "tokio-mt",
        bin: "chat-tokio",
        args: &["--flavor", "multi-thread"],
    },
    Stage {
        label: "async-std",
        bin: "chat-async-std",
        args: &[],
    },
    Stage {
        label: "smol",
        bin: "chat-smol",
        args: &[],
    },
    Stage {
        label: "io-uring",
        bin: "chat-io-uring",
        args: &[],
    },
];
// ANCHOR_END: stages

/// Selects stages from a comma-separated list of labels or binary names
/// (`tokio` or `chat-tokio` selects both flavours), or `all`.
pub fn select_stages(list: &str) -> io::Result<Vec<Stage>> {
    if list.trim() == "all" {
        return Ok(STAGES.to_vec());
    }
    let mut out = Vec::new();
    for want in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let found: Vec<Stage> = STAGES
            .iter()
            .filter(|s| {
                s.label == want || s.bin == want || s.bin.strip_prefix("chat-") == Some(want)
            })
            .copied()
            .collect();
        if found.is_empty() {
            let known: Vec<&str> = STAGES.iter().map(|s| s.label).collect();
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown stage {want:?}; known: {}", known.join(", ")),
            ));
        }
        for s in found {
            if !out.iter().any(|o: &Stage| o.label == s.label) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// One server `compare` runs: a stage of the book, or a peer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The label in tables and file names.
    pub label: String,
    /// The program to start.
    pub program: PathBuf,
    /// Its arguments (a stage also gets `--addr 127.0.0.1:0`).
    pub args: Vec<String>,
    /// A peer: started as it is, driven as a broadcast server.
    pub peer: bool,
    /// A baseline: speaks our protocol like a stage, is not one (see [`Entry::baseline`]).
    pub baseline: bool,
}

impl Entry {
    /// A stage, with its binary in `bin_dir`.
    pub fn stage(stage: &Stage, bin_dir: &Path) -> Entry {
        Entry {
            label: stage.label.to_string(),
            program: bin_dir.join(stage.bin),
            baseline: false,
            args: stage.args.iter().map(|a| a.to_string()).collect(),
            peer: false,
        }
    }

    /// A peer from `LABEL=COMMAND` (the command split at spaces).
    pub fn peer(spec: &str) -> io::Result<Entry> {
        Self::labelled(spec, "--peer", true)
    }

    /// A baseline from `LABEL=COMMAND`: a server of our protocol that is not one of the
    /// book's stages (`baseline/asyncio_chat.py`), started with `--addr 127.0.0.1:0` and run
    /// in every scenario, like a stage.
    pub fn baseline(spec: &str) -> io::Result<Entry> {
        let mut entry = Self::labelled(spec, "--baseline", false)?;
        entry.baseline = true;
        Ok(entry)
    }

    /// `LABEL=COMMAND`, checked.
    fn labelled(spec: &str, flag: &str, peer: bool) -> io::Result<Entry> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{flag} {spec:?}: {why} (expected LABEL=COMMAND)"),
            )
        };
        let (label, command) = spec.split_once('=').ok_or_else(|| invalid("no `=`"))?;
        let label = label.trim();
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if label.is_empty() || !label.chars().all(valid) {
            return Err(invalid("the label must be letters, digits, `-` or `_`"));
        }
        if STAGES.iter().any(|s| s.label == label) {
            return Err(invalid("the label is a stage's"));
        }
        let mut words = command.split_whitespace();
        let program = words.next().ok_or_else(|| invalid("no command"))?;
        Ok(Entry {
            label: label.to_string(),
            program: PathBuf::from(program),
            args: words.map(str::to_string).collect(),
            peer,
            baseline: false,
        })
    }

    /// The command line, for `run.json` (without the address).
    fn command_text(&self) -> String {
        let program = if self.peer || self.baseline {
            self.program.display().to_string()
        } else {
            // Stages by binary name: the folder is the reader's own.
            self.program
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        };
        std::iter::once(program)
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The scenarios of `wanted` this server takes part in.
    fn scenarios(&self, wanted: &[Scenario]) -> Vec<Scenario> {
        wanted
            .iter()
            .copied()
            .filter(|s| !self.peer || s.for_broadcast_servers())
            .collect()
    }
}

/// What `compare` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Servers to run: stages, then peers.
    pub entries: Vec<Entry>,
    /// Scenarios to run on each.
    pub scenarios: Vec<Scenario>,
    /// quick or full.
    pub profile: Profile,
    /// Where `results/<date>-<host>/` goes.
    pub out: PathBuf,
    /// CPU for the generator (already applied by the caller), if pinned.
    pub own_cpu: Option<usize>,
    /// CPU for every server, if pinned.
    pub server_cpu: Option<usize>,
    /// Print progress lines.
    pub progress: bool,
}

/// Starts one server for one scenario.
fn start(cfg: &Config, entry: &Entry, log: &Path) -> io::Result<launch::Server> {
    let mut cmd = Command::new(&entry.program);
    if !entry.peer {
        cmd.args(["--addr", "127.0.0.1:0"]);
    }
    cmd.args(&entry.args).stderr(std::fs::File::create(log)?);
    if let Some(cpu) = cfg.server_cpu {
        sys::pin_child(&mut cmd, cpu);
    }
    sys::die_with_parent(&mut cmd);
    launch::Server::start(cmd)
}

/// Runs one scenario against one freshly started server.
fn run_one(
    cfg: &Config,
    entry: &Entry,
    scenario: Scenario,
    dir: &Path,
    pinning: &str,
) -> RunResult {
    let plan = Plan::preset(scenario, cfg.profile);
    let log = dir.join(format!("{}.log", scenario.name()));
    let failed = |error: String| RunResult {
        scenario: scenario.name().to_string(),
        clients: plan.clients as u64,
        error: Some(error),
        ..RunResult::default()
    };
    let mut result = match start(cfg, entry, &log) {
        Err(e) => failed(format!("could not start {}: {e}", entry.program.display())),
        Ok(mut server) => {
            let opts = Options {
                progress: cfg.progress,
                label: entry.label.clone(),
                server_pid: Some(server.pid()),
                own_cpu: cfg.own_cpu,
                server_cpu: cfg.server_cpu,
            };
            let target = if entry.peer {
                Target::broadcast(server.addr)
            } else {
                Target::ours(server.addr)
            };
            let outcome = engine::run(&plan, &target, &opts);
            let exit = server.stop();
            let mut r = outcome.unwrap_or_else(|e| failed(format!("run failed: {e}")));
            // Our stages promise a clean exit on SIGTERM; a peer does not.
            if !exit.in_time && !entry.peer {
                r.notes.push(format!(
                    "server did not exit 0 within {} s of SIGTERM (code {:?})",
                    launch::STOP_GRACE.as_secs(),
                    exit.code
                ));
            }
            r.server.get_or_insert_with(result::Server::default).exit = Some(exit);
            r
        }
    };
    result.stage = Some(entry.label.clone());
    result.conditions = sys::conditions(pinning.to_string());
    result
}

/// Picks `results/<date>-<host>`, adding `-2`, `-3`... if it exists.
fn run_dir(out: &Path) -> PathBuf {
    let base = format!("{}-{}", sys::utc_date(), sys::host_name());
    let mut dir = out.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = out.join(format!("{base}-{n}"));
        n += 1;
    }
    dir
}

/// Describes the pinning for the conditions.
pub fn pinning_text(own: Option<usize>, server: Option<usize>) -> String {
    let one = |who: &str, c: Option<usize>| match c {
        Some(c) => format!("{who} on CPU {c}"),
        None => format!("{who} unpinned"),
    };
    format!("{}, {}", one("generator", own), one("server", server))
}

/// Runs everything and writes the results; returns the run folder.
pub fn compare(cfg: &Config) -> io::Result<PathBuf> {
    let dir = run_dir(&cfg.out);
    std::fs::create_dir_all(&dir)?;
    let pinning = pinning_text(cfg.own_cpu, cfg.server_cpu);
    eprintln!("chat-bench: writing results to {}", dir.display());

    // The ceiling first, on the same pinning as the stages, with its paced
    // mode at the load the searching scenarios measure efficiency at.
    let flood = Plan::preset(Scenario::Flood, cfg.profile);
    let secs = if cfg.profile == Profile::Quick {
        1.5
    } else {
        5.0
    };
    let measure_ceiling = || {
        eprintln!("chat-bench: measuring the loopback ceiling ({secs} s per mode)");
        ceiling::measure(
            100,
            flood.message_size,
            Duration::from_secs_f64(secs),
            cfg.server_cpu,
            Some(flood.search.efficiency_load),
        )
    };
    let mut ceiling = measure_ceiling()?;
    ceiling.conditions = sys::conditions(pinning.clone());
    result::write_json(&dir.join("ceiling.json"), &ceiling)?;

    let mut index = RunIndex {
        profile: cfg.profile.name().to_string(),
        scenarios: cfg.scenarios.iter().map(|s| s.name().to_string()).collect(),
        stages: Vec::new(),
        conditions: sys::conditions(pinning.clone()),
    };
    for entry in &cfg.entries {
        let found = entry.program.is_file();
        index.stages.push(StageEntry {
            label: entry.label.clone(),
            command: entry.command_text(),
            found,
            peer: entry.peer,
            baseline: entry.baseline,
        });
        let stage_dir = dir.join(&entry.label);
        std::fs::create_dir_all(&stage_dir)?;
        if !found {
            eprintln!(
                "chat-bench: {} not found: listed as missing",
                entry.program.display()
            );
            continue;
        }
        for scenario in entry.scenarios(&cfg.scenarios) {
            eprintln!("chat-bench: {} / {}", entry.label, scenario.name());
            let r = run_one(cfg, entry, scenario, &stage_dir, &pinning);
            result::write_json(&stage_dir.join(format!("{}.json", scenario.name())), &r)?;
        }
    }
    // Measured again after the stages, keeping the better of each mode.
    let ceiling = ceiling::best_of(ceiling, measure_ceiling()?);
    result::write_json(&dir.join("ceiling.json"), &ceiling)?;
    result::write_json(&dir.join("run.json"), &index)?;
    let loaded = report::load(&dir)?;
    let summary = format!(
        "# chat-bench compare, {date}\n\n\
         Command: `{cmd}`\n\n\
         - profile: {profile}\n- git revision: {rev}\n- rustc: {rustc}\n- kernel: {kernel}\n\
         - CPU: {cpu}\n- host: {host}\n- pinning: {pinning}\n\n\
         Every figure below comes from this one run; compare figures of different runs only with care.\n\n\
         {table}\n\n{ceiling}\n",
        date = index.conditions.date,
        cmd = index.conditions.command,
        profile = index.profile,
        rev = index.conditions.git_revision,
        rustc = index.conditions.rustc,
        kernel = index.conditions.kernel,
        cpu = index.conditions.cpu_model,
        host = index.conditions.host,
        table = report::overview(&loaded),
        ceiling = report::ceiling_table(loaded.ceiling.as_ref()),
    );
    std::fs::write(dir.join("summary.md"), summary)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_selection() {
        let all = select_stages("all").expect("all");
        assert_eq!(all.len(), STAGES.len());
        let some = select_stages("epoll, tokio,chat-mio").expect("list");
        let labels: Vec<&str> = some.iter().map(|s| s.label).collect();
        assert_eq!(labels, vec!["epoll", "tokio-ct", "tokio-mt", "mio"]);
        assert!(select_stages("nope").is_err());
    }

    #[test]
    fn peers_are_parsed_and_run_only_where_they_can() {
        let p = Entry::peer("smol-example=/tmp/x/chat-server --flag").expect("peer");
        assert!(p.peer);
        assert_eq!(p.label, "smol-example");
        assert_eq!(p.args, vec!["--flag".to_string()]);
        assert_eq!(p.scenarios(&Scenario::ALL), vec![Scenario::OneRoom]);
        for bad in ["nolabel", "=cmd", "a b=cmd", "epoll=cmd", "x="] {
            assert!(Entry::peer(bad).is_err(), "{bad}");
        }
        let s = Entry::stage(&STAGES[0], Path::new("/bin"));
        assert_eq!(s.scenarios(&Scenario::ALL).len(), Scenario::ALL.len());
        assert_eq!(s.command_text(), "chat-sequential");
    }

    /// The scripts name stages through `scripts/lib/stages.sh`, which must
    /// list exactly these stages, with the same binaries and flags.
    #[test]
    fn the_scripts_stage_table_matches() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib/stages.sh");
        let text = std::fs::read_to_string(&path).expect("scripts/lib/stages.sh");
        let rows: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("stage_row "))
            .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let want: Vec<String> = STAGES
            .iter()
            .map(|s| {
                std::iter::once(s.label)
                    .chain(std::iter::once(s.bin))
                    .chain(s.args.iter().copied())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(
            rows,
            want,
            "{} disagrees with compare::STAGES",
            path.display()
        );
    }
}
