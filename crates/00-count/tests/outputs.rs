//! Runs the real `count-*` binaries and checks what they print: the order of
//! `One` and `Two` is what tells sequential and concurrent apart. (How long
//! they take is shown by `scripts/count.sh`, never asserted in a test.)
//!
//! Run with `cargo test -p chat-count`.

use std::process::Command;

/// Runs a binary of this package and returns its stdout, lines split.
fn run(exe: &str) -> Vec<String> {
    let out = Command::new(exe).output().expect("the binary runs");
    assert!(out.status.success(), "{exe} failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks the last line is the timing line of `name`, and returns the others.
fn body<'a>(lines: &'a [String], name: &str) -> &'a [String] {
    let (last, body) = lines.split_last().expect("some output");
    assert!(
        last.starts_with(&format!("{name} executed in ")) && last.ends_with(" seconds."),
        "unexpected last line: {last:?}"
    );
    body
}

#[test]
fn sequential_alternates() {
    let lines = run(env!("CARGO_BIN_EXE_count-sequential"));
    let body = body(&lines, "count-sequential");
    assert_eq!(body, ["One", "Two", "One", "Two", "One", "Two"]);
}

#[test]
fn blocking_inside_async_is_sequential_again() {
    let lines = run(env!("CARGO_BIN_EXE_count-async-blocking"));
    let body = body(&lines, "count-async-blocking");
    assert_eq!(body, ["One", "Two", "One", "Two", "One", "Two"]);
}

#[test]
fn async_starts_all_three_before_any_finishes() {
    // `join!` polls every future once before any timer can fire, so this order
    // does not depend on timing.
    let lines = run(env!("CARGO_BIN_EXE_count-async"));
    let body = body(&lines, "count-async");
    assert_eq!(body, ["One", "One", "One", "Two", "Two", "Two"]);
}

#[test]
fn threads_all_print_both_words() {
    // The interleaving of threads belongs to the scheduler; only the counts
    // and the first and last word are certain.
    let lines = run(env!("CARGO_BIN_EXE_count-threads"));
    let body = body(&lines, "count-threads");
    assert_eq!(body.len(), 6);
    assert_eq!(body.iter().filter(|l| *l == "One").count(), 3);
    assert_eq!(body.iter().filter(|l| *l == "Two").count(), 3);
    assert_eq!(body.first().map(String::as_str), Some("One"));
    assert_eq!(body.last().map(String::as_str), Some("Two"));
}

#[test]
fn thread_ceiling_stops_at_max() {
    let out = Command::new(env!("CARGO_BIN_EXE_thread-ceiling"))
        .args(["--max", "50", "--stack-kib", "64"])
        .output()
        .expect("the probe runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    assert!(text.contains("threads: 50\n"), "{text}");
    assert!(text.contains("outcome: reached --max"), "{text}");
    // Fifty parked threads add at least fifty mappings (their stacks).
    let maps = text
        .lines()
        .find_map(|l| l.strip_prefix("memory maps: "))
        .expect("a maps line");
    let (before, after) = maps.split_once(" before, ").expect("before, after");
    let before: usize = before.parse().expect("a number");
    let after: usize = after.trim_end_matches(" after").parse().expect("a number");
    assert!(after >= before + 50, "{text}");
}
