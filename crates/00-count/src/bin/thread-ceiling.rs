//! How many threads can one process start? A probe for the "C10K problem"
//! chapter.
//!
//! It spawns threads with small stacks that do nothing but park, until
//! `spawn` fails or `--max` is reached, then prints what stopped it and how
//! many memory maps the process holds. On Linux every thread stack is a
//! separate mapping (plus a guard page that splits it), so
//! `vm.max_map_count` (65530 by default) caps threads long before memory
//! does. The probe may also be *killed* at the ceiling: once no mapping can be
//! created, any allocation that needs a fresh mapping aborts the process. Run
//! it in a child process you can afford to lose, with a time limit:
//! `scripts/limits.sh` does that.
//!
//! Run it with `timeout 60 cargo run -p chat-count --bin thread-ceiling -- --max 20000`.
//! Rust's std gives every thread a small signal stack of its own (to report a
//! stack overflow), a second mapping with its own guard page, so expect about
//! four mappings per thread.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::thread;

use clap::Parser;

/// Command-line flags of the probe.
#[derive(Debug, Parser)]
#[command(about = "Spawn parked threads until the OS refuses one")]
struct Args {
    /// Stack size asked for each thread, in KiB (the OS rounds it up to its minimum).
    #[arg(long, default_value_t = 64)]
    stack_kib: usize,
    /// Stop after this many threads even if spawning still works. Threads also
    /// use process ids, and `kernel.pid_max` is shared with every other process
    /// on the machine, so the probe must never take them all.
    #[arg(long, default_value_t = 20_000)]
    max: usize,
    /// Print a progress line every this many threads.
    #[arg(long, default_value_t = 1000)]
    report_every: usize,
}

/// Counts the lines of `/proc/self/maps`, one per memory mapping.
///
/// It reads into a buffer on the stack on purpose: near the ceiling a large
/// heap allocation needs a new mapping itself, and would fail.
fn count_maps() -> io::Result<usize> {
    let mut file = File::open("/proc/self/maps")?;
    let mut buf = [0u8; 16 * 1024];
    let mut lines = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
}

// ANCHOR: probe
fn main() -> io::Result<()> {
    let args = Args::parse();
    let maps_before = count_maps()?;
    let mut stdout = io::stdout();
    let mut spawned = 0usize;
    let outcome = loop {
        if spawned == args.max {
            break "reached --max, spawning still worked".to_string();
        }
        let parked = thread::Builder::new()
            .stack_size(args.stack_kib * 1024)
            // `park` can wake spuriously, hence the loop. The threads never
            // end; `main` returning ends the process and all of them.
            .spawn(|| loop {
                thread::park();
            });
        match parked {
            Ok(_detached) => spawned += 1,
            Err(e) => break format!("spawn failed: {e}"),
        }
        if spawned % args.report_every.max(1) == 0 {
            // Progress, flushed at once: if the process is killed at the
            // ceiling, the last line still says how far it got.
            writeln!(stdout, "spawned {spawned}")?;
            stdout.flush()?;
        }
    };
    let maps_after = count_maps()?;
    writeln!(stdout, "threads: {spawned}")?;
    writeln!(stdout, "outcome: {outcome}")?;
    writeln!(
        stdout,
        "memory maps: {maps_before} before, {maps_after} after"
    )?;
    Ok(())
}
// ANCHOR_END: probe
