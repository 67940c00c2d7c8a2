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
//! Results go to `results/<date>-<host>/`: one JSON per stage and scenario,
//! `ceiling.json`, `run.json` (what was run, and how) and `summary.md`.
//!
//! Run it with `scripts/compare.sh` (which builds first), or
//! `chat-bench compare --profile quick --bin-dir target/release`.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{self, Options};
use crate::result::{Exit, RunResult};
use crate::scenario::{Plan, Profile, Scenario, Target};
use crate::{ceiling, report, sys};

/// How to start one stage.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// The label in tables and file names.
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

/// What `compare` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stages to run.
    pub stages: Vec<Stage>,
    /// Scenarios to run on each.
    pub scenarios: Vec<Scenario>,
    /// quick or full.
    pub profile: Profile,
    /// Where `results/<date>-<host>/` goes.
    pub out: PathBuf,
    /// Where the stage binaries are.
    pub bin_dir: PathBuf,
    /// CPU for the generator (already applied by the caller), if pinned.
    pub own_cpu: Option<usize>,
    /// CPU for every server, if pinned.
    pub server_cpu: Option<usize>,
    /// Print progress lines.
    pub progress: bool,
}

/// One stage's entry in `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageEntry {
    /// Label.
    pub label: String,
    /// Command line used to start it (without the address).
    pub command: String,
    /// Whether its binary was found; a missing one is listed, never skipped silently.
    pub found: bool,
}

/// `run.json`: what was run, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunIndex {
    /// quick or full.
    pub profile: String,
    /// Scenario names, in order.
    pub scenarios: Vec<String>,
    /// Stages, in order.
    pub stages: Vec<StageEntry>,
    /// Where, when and with what.
    pub conditions: crate::result::Conditions,
}

/// A started server.
#[derive(Debug)]
struct Server {
    /// The process.
    child: Child,
    /// The address it printed.
    addr: SocketAddr,
}

/// Starts `stage` and waits (at most 10 s) for its `listening on ADDR` line.
fn start(stage: &Stage, bin: &Path, log: &Path, cpu: Option<usize>) -> io::Result<Server> {
    let mut cmd = Command::new(bin);
    cmd.args(["--addr", "127.0.0.1:0"])
        .args(stage.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?);
    if let Some(cpu) = cpu {
        sys::pin_child(&mut cmd, cpu);
    }
    sys::die_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().expect("stdout was piped above");
    let (tx, rx) = mpsc::channel();
    // A reader thread, so that a server that never prints cannot hang us;
    // it keeps draining stdout afterwards so the server never blocks on it.
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let first = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("no `listening on ADDR` line within 10 s"));
        }
    };
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected first line: {first:?}")));
    match addr {
        Ok(addr) => Ok(Server { child, addr }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

// ANCHOR: stop
/// Sends SIGTERM and waits up to 5 s for a clean exit, then SIGKILLs.
fn stop(server: &mut Server) -> Exit {
    let start = Instant::now();
    if let Ok(Some(status)) = server.child.try_wait() {
        // It died during the run: report that as it is.
        return Exit {
            in_time: false,
            code: status.code(),
            seconds: 0.0,
        };
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Exit {
                in_time: status.code() == Some(0),
                code: status.code(),
                seconds: start.elapsed().as_secs_f64(),
            };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = server.child.kill();
    let status = server.child.wait().ok();
    Exit {
        in_time: false,
        code: status.and_then(|s| s.code()),
        seconds: start.elapsed().as_secs_f64(),
    }
}
// ANCHOR_END: stop

/// Runs one scenario against one freshly started stage.
fn run_one(
    cfg: &Config,
    stage: &Stage,
    scenario: Scenario,
    dir: &Path,
    pinning: &str,
) -> RunResult {
    let plan = Plan::preset(scenario, cfg.profile);
    let bin = cfg.bin_dir.join(stage.bin);
    let log = dir.join(format!("{}.log", scenario.name()));
    let mut result = match start(stage, &bin, &log, cfg.server_cpu) {
        Err(e) => RunResult {
            scenario: scenario.name().to_string(),
            clients: plan.clients as u64,
            error: Some(format!("could not start {}: {e}", bin.display())),
            ..RunResult::default()
        },
        Ok(mut server) => {
            let opts = Options {
                progress: cfg.progress,
                label: stage.label.to_string(),
                server_pid: Some(server.child.id()),
                own_cpu: cfg.own_cpu,
                server_cpu: cfg.server_cpu,
            };
            let outcome = engine::run(&plan, &Target::ours(server.addr), &opts);
            let exit = stop(&mut server);
            let mut r = outcome.unwrap_or_else(|e| RunResult {
                scenario: scenario.name().to_string(),
                clients: plan.clients as u64,
                error: Some(format!("run failed: {e}")),
                ..RunResult::default()
            });
            if !exit.in_time {
                r.notes.push(format!(
                    "server did not exit 0 within 5 s of SIGTERM (code {:?})",
                    exit.code
                ));
            }
            match r.server.as_mut() {
                Some(s) => s.exit = Some(exit),
                None => {
                    r.server = Some(crate::result::Server {
                        exit: Some(exit),
                        ..Default::default()
                    })
                }
            }
            r
        }
    };
    result.stage = Some(stage.label.to_string());
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

    // The ceiling first, on the same pinning as the stages.
    let chat = Plan::preset(Scenario::Chat, cfg.profile);
    let secs = if cfg.profile == Profile::Quick {
        1.5
    } else {
        5.0
    };
    let measure_ceiling = || {
        eprintln!("chat-bench: measuring the loopback ceiling ({secs} s per mode)");
        ceiling::measure(
            100,
            chat.message_size,
            Duration::from_secs_f64(secs),
            cfg.server_cpu,
        )
    };
    let mut ceiling = measure_ceiling()?;
    ceiling.conditions = sys::conditions(pinning.clone());
    write_json(&dir.join("ceiling.json"), &ceiling)?;

    let mut index = RunIndex {
        profile: cfg.profile.name().to_string(),
        scenarios: cfg.scenarios.iter().map(|s| s.name().to_string()).collect(),
        stages: Vec::new(),
        conditions: sys::conditions(pinning.clone()),
    };
    for stage in &cfg.stages {
        let bin = cfg.bin_dir.join(stage.bin);
        let found = bin.is_file();
        index.stages.push(StageEntry {
            label: stage.label.to_string(),
            command: std::iter::once(stage.bin)
                .chain(stage.args.iter().copied())
                .collect::<Vec<_>>()
                .join(" "),
            found,
        });
        let stage_dir = dir.join(stage.label);
        std::fs::create_dir_all(&stage_dir)?;
        if !found {
            eprintln!(
                "chat-bench: {} not found in {}: listed as missing",
                stage.bin,
                cfg.bin_dir.display()
            );
            continue;
        }
        for &scenario in &cfg.scenarios {
            eprintln!("chat-bench: {} / {}", stage.label, scenario.name());
            let r = run_one(cfg, stage, scenario, &stage_dir, &pinning);
            write_json(&stage_dir.join(format!("{}.json", scenario.name())), &r)?;
        }
    }
    // Measured again after the stages, keeping the faster of each mode.
    let ceiling = ceiling::best_of(ceiling, measure_ceiling()?);
    write_json(&dir.join("ceiling.json"), &ceiling)?;
    write_json(&dir.join("run.json"), &index)?;
    let loaded = report::load(&dir)?;
    let table = report::overview(&loaded);
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
        ceiling = report::ceiling_table(loaded.ceiling.as_ref()),
    );
    std::fs::write(dir.join("summary.md"), summary)?;
    Ok(dir)
}

/// Writes `value` as pretty JSON.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    std::fs::write(path, text + "\n")
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
}
