#!/usr/bin/env python3
"""select against epoll as idle clients pile up: what one wake-up costs when everybody is watched.

`select(2)` takes the whole list of watched descriptors on every call, and the kernel scans
all of it; `epoll_wait` returns only the ready ones. So with the same small active load — ten
clients chatting in one room — select's cost per delivery should grow with the number of
*idle* clients connected beside them, and epoll's should not. This script measures exactly
that, for each N in a list of idle counts:

  1. start the stage (release build), pinned to CPU 0;
  2. connect N idle clients and keep them open (they read nothing and say nothing);
  3. run `chat-bench run --scenario chat` with 10 clients in one room, pinned to CPU 1;
  4. record the server's CPU µs per delivery and the p99 latency; stop the server.

    scripts/select_scaling.py                      # N = 0, 250, 500, 750, 950
    scripts/select_scaling.py --idle 0,500,950 --runs 3

Writes results/select-scaling/<date>/results.json and book/src/generated/select-scaling.md
(the median of the runs per point). select holds at most about 1,000 clients (FD_SETSIZE), so
the largest N stays below it. Loopback only; every server is stopped at the end.
"""

import argparse
import datetime
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
STAGES = {"select": "chat-select", "epoll": "chat-epoll"}


def start(binary):
    proc = subprocess.Popen(
        ["taskset", "-c", "0", binary, "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    line = proc.stdout.readline().decode()
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def idle_clients(addr, n):
    """N connected clients, each welcomed, then silent."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(addr, timeout=10)
        welcome = b""
        while not welcome.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("server closed an idle client")
            welcome += chunk
        if not welcome.startswith(b"* welcome "):
            raise RuntimeError(f"not welcomed: {welcome!r}")
        # Out of the lobby, so the active room's traffic and the others' arrivals do not
        # reach it: an idle client is watched, and never written to.
        s.sendall(f"/join idle{len(socks)}\n".encode())
        socks.append(s)
    return socks


def measure(stage, n, duration):
    proc, addr = start(os.path.join(TARGET, "release", STAGES[stage]))
    socks = []
    try:
        socks = idle_clients(addr, n)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [os.path.join(TARGET, "release", "chat-bench"), "run",
                 "--addr", f"{addr[0]}:{addr[1]}", "--scenario", "chat", "--clients", "10",
                 "--room-size", "10", "--rate", "50", "--duration", str(duration),
                 "--pid", str(proc.pid), "--json", out.name, "--quiet"],
                check=True, stdout=subprocess.DEVNULL,
            )
            r = json.load(open(out.name))
        return {
            "cpu_us_per_delivery": r["server"]["cpu_us_per_delivery"],
            "p99_us": r["latency_us"]["p99"],
            "lost": r["lost"],
        }
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flags.add_argument("--idle", default="0,250,500,750,950")
    flags.add_argument("--runs", type=int, default=3)
    flags.add_argument("--duration", type=int, default=5)
    a = flags.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = [int(x) for x in a.idle.split(",")]
    points = {stage: {n: [] for n in counts} for stage in STAGES}
    for run in range(a.runs):
        for n in counts:
            for stage in STAGES:  # interleaved: a noisy moment hits both
                m = measure(stage, n, a.duration)
                points[stage][n].append(m)
                print(f"run {run + 1}: {stage} with {n} idle: {m['cpu_us_per_delivery']:.2f} µs/delivery",
                      file=sys.stderr)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    date = datetime.date.today().isoformat()
    out_dir = os.path.join(REPO, "results", "select-scaling", date)
    os.makedirs(out_dir, exist_ok=True)
    command = "scripts/select_scaling.py " + " ".join(sys.argv[1:])
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"command": command.strip(), "git_revision": rev, "points": points}, f, indent=2)
    med = lambda ms, k: statistics.median(m[k] for m in ms)
    lines = [
        "<!-- Generated by scripts/select_scaling.py. Do not edit: rerun it. -->",
        f"10 clients chatting in one room (50 messages/s each), beside N idle clients; "
        f"median of {a.runs} runs, revision `{rev}`, `{command.strip()}`.",
        "",
        "| idle clients | select: CPU µs/delivery | epoll: CPU µs/delivery | select ÷ epoll | select p99 | epoll p99 |",
        "|---|---|---|---|---|---|",
    ]
    for n in counts:
        s_cpu, e_cpu = med(points["select"][n], "cpu_us_per_delivery"), med(points["epoll"][n], "cpu_us_per_delivery")
        lines.append(
            f"| {n:,} | {s_cpu:.2f} | {e_cpu:.2f} | {s_cpu / e_cpu:.2f} "
            f"| {med(points['select'][n], 'p99_us') / 1000:.2f} ms | {med(points['epoll'][n], 'p99_us') / 1000:.2f} ms |"
        )
    text = "\n".join(lines) + "\n"
    with open(os.path.join(REPO, "book", "src", "generated", "select-scaling.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
