#!/usr/bin/env python3
"""A cluster of chat nodes on one Redis, loaded past what one process can hold.

One process here holds at most ~19,900 sockets (`ulimit -n` is 20,000 and cannot be raised),
so 100,000 clients need several servers — and several generator processes too. This script:

  1. starts a private `redis-server` (free port, no persistence, its own temp dir);
  2. starts NODES `chat-cluster` nodes on it (release build);
  3. connects CLIENTS idle clients in rooms of 100 through GENERATORS `chat-bench` processes,
     each bound to a loopback source address of its own (127.0.0.10, .11, ...) and each with
     rooms of its own (`g0-room3`), client i of a process going to node i mod NODES, so that
     every room spans the nodes; when everyone is in, each generator sends one message per
     room and counts that every member got it exactly once (the idle scenario's check);
  4. samples every node's and Redis's RSS and CPU meanwhile (/proc);
  5. then a chat run across the nodes at about 1,000 messages/s in all, for cross-node latency;
  6. stops everything, and writes results/cluster/<date>-<clients>/results.json and
     book/src/generated/cluster/ (summary.md for the chapter, source.md for the stale check).

    scripts/cluster.sh                                   # 100,000 clients, 10 nodes
    scripts/cluster.sh --clients 50000 --nodes 5
    scripts/cluster.sh --clients 3000 --nodes 3 --generators 1   # a quick look

Loopback only; everything it starts is stopped at the end, also on failure. Measures; asserts
nothing (a lost or duplicated delivery is reported, and the exit status is 1 then).
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from stages import release_dir, status_kib  # noqa: E402  (scripts/lib/stages.py)
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    return status_kib(pid, "VmRSS") or 0


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def start_node(redis_port, log):
    proc = subprocess.Popen(
        [os.path.join(release_dir(), "chat-cluster"), "--addr", "127.0.0.1:0",
         "--max-clients", "19500", "--redis", f"redis://127.0.0.1:{redis_port}"],
        stdout=subprocess.PIPE, stderr=log,
    )
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError(f"a node did not start (stdout: {line!r}); see its log")
    return proc, line.split()[-1]


class Sampler(threading.Thread):
    """Peak RSS of each process, every half second."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak, self.stop = pids, {p: 0 for p in pids}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            for p in self.pids:
                try:
                    self.peak[p] = max(self.peak[p], rss_kib(p))
                except OSError:
                    pass
            time.sleep(0.5)


def generator(g, addrs, clients, scenario, extra, out):
    cmd = [os.path.join(release_dir(), "chat-bench"), "run", "--scenario", scenario,
           "--profile", "full", "--clients", str(clients), "--room-size", "100",
           "--source", f"127.0.0.{10 + g}", "--join", f"/join g{g}-{{room}}",
           "--cpu", "none", "--server-cpu", "none", "--json", out, "--quiet"]
    for a in addrs:
        cmd += ["--addr", a]
    return subprocess.Popen(cmd + extra, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flags.add_argument("--clients", type=int, default=100_000)
    flags.add_argument("--nodes", type=int, default=10)
    flags.add_argument("--generators", type=int, default=0, help="0: enough for ulimit -n")
    flags.add_argument("--chat-clients", type=int, default=1000)
    flags.add_argument("--chat-rate", type=float, default=1.0, help="messages/s per chat client")
    flags.add_argument("--ramp-timeout", type=int, default=900)
    a = flags.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per_gen = 16_000
    gens = a.generators or max(1, -(-a.clients // per_gen))
    redis = shutil.which("redis-server")
    if not redis:
        sys.exit("cluster_load: redis-server is not installed (apt-get install redis-server)")
    work = tempfile.mkdtemp(prefix="c10k-cluster-")
    procs = []
    results = {"clients": a.clients, "nodes": a.nodes, "generators": gens}
    try:
        port = free_port()
        rlog = open(os.path.join(work, "redis.log"), "w")
        rp = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", work], stdout=rlog, stderr=rlog)
        procs.append(rp)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        nodes = []
        for i in range(a.nodes):
            log = open(os.path.join(work, f"node{i}.log"), "w")
            proc, addr = start_node(port, log)
            procs.append(proc)
            nodes.append((proc, addr))
        time.sleep(1.5)  # a heartbeat or two: every node knows the others
        addrs = [addr for _, addr in nodes]
        base = {p.pid: (rss_kib(p.pid), cpu_s(p.pid)) for p, _ in nodes}
        base[rp.pid] = (rss_kib(rp.pid), cpu_s(rp.pid))
        sampler = Sampler([p.pid for p, _ in nodes] + [rp.pid])
        sampler.start()
        print(f"+ {a.clients:,} idle clients over {a.nodes} nodes from {gens} generators", file=sys.stderr)
        started = time.monotonic()
        outs, running = [], []
        left = a.clients
        for g in range(gens):
            n = -(-left // (gens - g))
            left -= n
            out = os.path.join(work, f"idle{g}.json")
            outs.append(out)
            running.append(generator(g, addrs, n, "idle", ["--ramp-timeout", str(a.ramp_timeout)], out))
        for p in running:
            _, err = p.communicate()
            if p.returncode != 0:
                print(err.decode()[-2000:], file=sys.stderr)
        ramp_s = time.monotonic() - started
        sampler.stop.set()
        idle = [json.load(open(o)) for o in outs if os.path.exists(o)]
        results["idle"] = {
            "wall_s": ramp_s,
            "connected": sum(r.get("connect", {}).get("connected", 0) for r in idle),
            "welcomed": sum(r.get("connect", {}).get("welcomed", 0) for r in idle),
            "expected": sum(r.get("expected", 0) for r in idle),
            "delivered": sum(r.get("delivered", 0) for r in idle),
            "lost": sum(r.get("lost", 0) for r in idle),
            "duplicated": sum(r.get("duplicated", 0) for r in idle),
            "per_generator": idle,
        }
        per_node = a.clients / a.nodes
        results["idle"]["connect_s"] = max(
            (r.get("connect", {}).get("duration_s", 0.0) for r in idle), default=0.0)
        results["nodes_rss"] = [
            {"addr": addr, "peak_kib": sampler.peak[p.pid], "base_kib": base[p.pid][0],
             "per_connection_bytes": (sampler.peak[p.pid] - base[p.pid][0]) * 1024 / per_node}
            for p, addr in nodes
        ]
        results["redis"] = {"peak_rss_kib": sampler.peak[rp.pid],
                            "cpu_s": cpu_s(rp.pid) - base[rp.pid][1]}
        print(f"+ chat across nodes: {a.chat_clients} clients at {a.chat_rate}/s each", file=sys.stderr)
        out = os.path.join(work, "chat.json")
        p = generator(gens, addrs, a.chat_clients, "chat",
                      ["--rate", str(a.chat_rate), "--duration", "20"], out)
        _, err = p.communicate()
        if p.returncode != 0:
            print(err.decode()[-2000:], file=sys.stderr)
        chat = json.load(open(out)) if os.path.exists(out) else {}
        results["chat"] = {
            "messages_per_s": a.chat_clients * a.chat_rate,
            "p50_us": chat.get("latency_us", {}).get("p50"),
            "p99_us": chat.get("latency_us", {}).get("p99"),
            "lost": chat.get("lost"), "duplicated": chat.get("duplicated"),
            "result": chat,
        }
        results["redis"]["cpu_s_total"] = cpu_s(rp.pid) - base[rp.pid][1]
        results["nodes_cpu_s"] = [cpu_s(p.pid) - base[p.pid][1] for p, _ in nodes]
        results["published_lost"] = [
            line.strip() for i in range(a.nodes)
            for line in open(os.path.join(work, f"node{i}.log")) if "lost" in line.lower()
        ][:20]
    finally:
        for p in reversed(procs):
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    results["git_revision"] = rev
    results["command"] = "scripts/cluster.sh " + " ".join(sys.argv[1:])
    date = datetime.date.today().isoformat()
    out_dir = os.path.join(REPO, "results", "cluster", f"{date}-{a.clients}")
    os.makedirs(out_dir, exist_ok=True)
    json.dump(results, open(os.path.join(out_dir, "results.json"), "w"), indent=2)
    i, c = results["idle"], results["chat"]
    rss = [n["per_connection_bytes"] for n in results["nodes_rss"]]
    us = lambda v: f"{v / 1000:.1f} ms" if v is not None else "-"
    md = [
        "<!-- Generated by scripts/cluster_load.py. Do not edit: rerun it. -->",
        f"`{results['command'].strip()}` at revision `{rev}`: {a.nodes} nodes and one Redis on this "
        f"2-core machine, {gens} generator processes, nothing pinned.",
        "",
        "| | |",
        "|---|---|",
        f"| clients connected, welcomed | {i['connected']:,}, {i['welcomed']:,} of {a.clients:,} |",
        f"| one message per room, deliveries | {i['delivered']:,} of {i['expected']:,} expected: "
        f"{i['lost']:,} lost, {i['duplicated']:,} duplicated |",
        f"| connect ramp (the slowest generator) | {i['connect_s']:.0f} s, "
        f"{a.clients / max(i['connect_s'], 0.001):,.0f} connects/s in all |",
        f"| idle scenario, start to end (ramp, silence, one message per room) | {i['wall_s']:.0f} s |",
        f"| node peak RSS per connection, during the ramp | {min(rss):,.0f}–{max(rss):,.0f} bytes "
        "(every join is a notice to the room's other members, on every node) |",
        f"| Redis peak RSS, CPU | {results['redis']['peak_rss_kib'] / 1024:.0f} MiB, "
        f"{results['redis']['cpu_s_total']:.1f} s |",
        f"| cross-node chat: {c['messages_per_s']:,.0f} messages/s in all | p50 {us(c['p50_us'])}, "
        f"p99 {us(c['p99_us'])}, {c['lost']} lost, {c['duplicated']} duplicated |",
    ]
    text = "\n".join(md) + "\n"
    book = os.path.join(REPO, "book", "src", "generated", "cluster")
    os.makedirs(book, exist_ok=True)
    open(os.path.join(book, "summary.md"), "w").write(text)
    # What the book's stale check reads: which run, at which revision, measuring which stage.
    open(os.path.join(book, "source.md"), "w").write(
        "<!-- Generated by scripts/cluster_load.py. Do not edit: rerun it. -->\n"
        "| | |\n|---|---|\n"
        f"| results | `{os.path.relpath(out_dir, REPO)}` |\n"
        f"| git revision | `{rev}` |\n"
        "| stages | `chat-cluster` |\n")
    print(text)
    sys.exit(0 if i["lost"] == 0 and i["duplicated"] == 0 else 1)


if __name__ == "__main__":
    main()
