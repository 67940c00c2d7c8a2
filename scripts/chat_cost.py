#!/usr/bin/env python3
"""Server CPU per delivery at a chat load, for stages side by side, median of N runs.

The load is issue 10's: 100 clients in one room, each sending 2 messages a second
(`chat-bench run --scenario chat --join ''`), so every message is delivered to 99 others.
Each stage is started fresh for every run, pinned to CPU 0 with the generator on CPU 1, and
the runs of all stages are interleaved (stage A, B, C, then A, B, C again...) so that a noisy
moment of the machine is spread over every stage instead of landing on one.

    scripts/chat_cost.py                                  # every stage of this tree, 4 runs
    scripts/chat_cost.py --stages epoll,mio,tokio-ct --runs 6
    scripts/chat_cost.py --bin-dir /work/old/target/release --label before
    scripts/chat_cost.py --baseline                       # the asyncio server too

Writes results/chat-cost/<date>-<label>/results.json and prints a Markdown table: the median
and the spread of server CPU µs per delivery, the median p99 latency, and the ratio to
chat-mio's median. Measures; asserts nothing.
"""

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from stages import release_dir, stage_table  # noqa: E402  (scripts/lib/stages.py)


def start(program, args):
    proc = subprocess.Popen(
        [program, "--addr", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = proc.stdout.readline().decode()
    if "listening on" not in line.lower():
        proc.kill()
        raise RuntimeError(f"{program}: no `listening on` line (got {line!r})")
    return proc, line.split()[-1]


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(bench, program, args, duration):
    proc, addr = start(program, args)
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [bench, "run", "--addr", addr, "--scenario", "chat", "--clients", "100",
                 "--room-size", "100", "--rate", "2", "--join", "", "--duration", str(duration),
                 "--pid", str(proc.pid), "--json", out.name, "--quiet"],
                check=True, stdout=subprocess.DEVNULL,
            )
            result = json.load(open(out.name))
    finally:
        stop(proc)
    return result


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flags.add_argument("--stages", default="all", help="comma-separated labels, or all")
    flags.add_argument("--bin-dir", default=release_dir())
    flags.add_argument("--runs", type=int, default=4)
    flags.add_argument("--duration", type=int, default=10, help="measured seconds per run")
    flags.add_argument("--label", default="after", help="names the results folder")
    flags.add_argument("--baseline", action="store_true", help="also the asyncio baseline")
    a = flags.parse_args()
    bench = os.path.join(release_dir(), "chat-bench")
    rows = [(label, binary, flags) for label, (binary, flags) in stage_table().items()]
    if a.stages != "all":
        wanted = a.stages.split(",")
        rows = [r for r in rows if r[0] in wanted]
    # The blocking stages that serve fewer than 100 clients at once cannot take this load.
    rows = [r for r in rows if r[0] not in ("sequential", "threadpool")]
    servers = [(label, os.path.join(a.bin_dir, binary), args) for label, binary, args in rows]
    servers = [s for s in servers if os.path.exists(s[1])]
    if a.baseline:
        servers.append(("asyncio", os.path.join(REPO, "baseline", "asyncio_chat.py"), []))
    runs = {label: [] for label, _, _ in servers}
    for i in range(a.runs):
        for label, program, args in servers:
            r = one_run(bench, program, args, a.duration)
            cpu = r.get("server", {}).get("cpu_us_per_delivery")
            p99 = r.get("latency_us", {}).get("p99")
            lost = r.get("lost")
            runs[label].append({"cpu_us_per_delivery": cpu, "p99_us": p99, "lost": lost})
            print(f"run {i + 1}/{a.runs} {label}: {cpu:.2f} µs/delivery, p99 {p99 / 1000:.2f} ms",
                  file=sys.stderr)
    summary = {}
    for label, rs in runs.items():
        cpus = [r["cpu_us_per_delivery"] for r in rs if r["cpu_us_per_delivery"] is not None]
        p99s = [r["p99_us"] for r in rs if r["p99_us"] is not None]
        summary[label] = {
            "median_cpu_us_per_delivery": statistics.median(cpus) if cpus else None,
            "min_cpu_us_per_delivery": min(cpus) if cpus else None,
            "max_cpu_us_per_delivery": max(cpus) if cpus else None,
            "median_p99_us": statistics.median(p99s) if p99s else None,
            "lost": sum(r["lost"] or 0 for r in rs),
        }
    mio = summary.get("mio", {}).get("median_cpu_us_per_delivery")
    date = datetime.date.today().isoformat()
    out_dir = os.path.join(REPO, "results", "chat-cost", f"{date}-{a.label}")
    os.makedirs(out_dir, exist_ok=True)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"command": " ".join(sys.argv), "git_revision": rev, "bin_dir": a.bin_dir,
                   "load": "100 clients in one room, 2 msg/s each", "runs": runs,
                   "summary": summary}, f, indent=2)
    print(f"| server | CPU µs/delivery, median (min–max) of {a.runs} | × mio | p99, median | lost |")
    print("|---|---|---|---|---|")
    for label, s in summary.items():
        m = s["median_cpu_us_per_delivery"]
        ratio = f"{m / mio:.2f}" if mio and m else "-"
        print(f"| {label} | {m:.2f} ({s['min_cpu_us_per_delivery']:.2f}–{s['max_cpu_us_per_delivery']:.2f}) "
              f"| {ratio} | {s['median_p99_us'] / 1000:.2f} ms | {int(s['lost'])} |")
    print(f"\nwritten: {os.path.relpath(out_dir, REPO)}/results.json (revision {rev})", file=sys.stderr)


if __name__ == "__main__":
    main()
