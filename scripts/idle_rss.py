#!/usr/bin/env python3
"""What an idle client costs a chat server: resident memory per connection, and the kernel's share.

Starts a server (the asyncio baseline unless told otherwise, or any stage binary), pinned to one
CPU, connects a probe, reads the server's VmRSS, connects N clients that each join a room
(rooms of `--room-size`, 100 as in `chat-bench`'s idle scenario; 1 gives every client a room
of its own, so that nobody is sent the others' arrivals), reads every line they were sent,
lets them sit idle, and reads VmRSS again. The growth divided by N is what one idle client
costs the server's process: the same method as the conformance suite's
`idle_clients_cost_little` check and `chat-bench`'s idle scenario, at a size of your choice.

Beside it, what the kernel holds for the same connections, which no concurrency model changes:

- **socket buffers** — `ss -tm` summed over the server's own sockets (`r`, `t`, `w`, `f`, `o`,
  `bl`, `d` of each `skmem`): exact, per socket, and only this server's. This is what
  `/proc/net/sockstat`'s `mem` counts too, but that figure is machine-wide (every TCP socket of
  every process, in pages), so it is noisy on a shared machine; it is printed beside it, as a
  check. An idle socket whose client has read everything holds (almost) nothing here.
- **socket structures** — what `/proc/slabinfo` says the kernel allocated (all caches, every
  object size) while the clients connected, divided by N. Both ends of each connection live on
  this machine (the clients are in this process), so that figure is two sockets; the server's
  end alone is the sum of one object of each cache a server socket needs (`TCP`,
  `sock_inode_cache`, `filp`, `dentry`, `eventpoll_epi`, `eventpoll_pwq`), printed as
  `kernel per socket`. Slab counts are machine-wide too: other work on the machine shows up.

    python3 scripts/idle_rss.py                        # the asyncio baseline, 1,000 clients
    python3 scripts/idle_rss.py --clients 10000
    python3 scripts/idle_rss.py --server target/release/chat-epoll
    python3 scripts/idle_rss.py --server "target/release/chat-tokio --flavor current-thread"
    python3 scripts/idle_rss.py --stages epoll,tokio-ct --clients 1000 10000 --runs 3
    python3 scripts/idle_rss.py --stages all --clients 1000 10000 --runs 3 \\
        --json results/idle-rss/run.json --markdown book/src/generated/idle-bytes.md
    python3 scripts/idle_rss.py --from-json results/idle-rss/run.json --markdown FILE

`--stages` takes labels of scripts/lib/stages.sh (the scripts' one stage table), or `asyncio` for
the baseline, and runs the binaries of `--bin-dir` (default: $CARGO_TARGET_DIR/release, or target/release). Runs are
interleaved (every server once, then every server again) and each figure is the median of
`--runs`. The server runs on `--server-cpu` (default 0) and this script on `--client-cpu`
(default 1): the generator is never on the server's core. Needs root for /proc/slabinfo (the
slab figures are left out otherwise).
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import selectors
import shlex
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from stages import release_dir, stage_table, status_kib  # noqa: E402  (scripts/lib/stages.py)

REPO = os.path.abspath(os.path.join(HERE, ".."))
PAGE = os.sysconf("SC_PAGESIZE")

# The slab caches one server-side TCP socket takes objects from: the socket itself, its inode
# (struct socket inside), the open file, its dentry, and its epoll registration (the item and
# the wait-queue hook). Every stage measured here uses epoll underneath (io_uring's does not:
# it has no epoll entries).
SOCKET_CACHES = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq"]

DEFAULT_STAGES = ["epoll", "mio", "futures", "tokio-ct", "tokio-mt", "async-std", "smol", "io-uring",
                  "asyncio"]


def vm_rss_kib(pid):
    rss = status_kib(pid, "VmRSS")
    if rss is None:
        raise RuntimeError("no VmRSS")
    return rss


def sockstat_tcp_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                words = line.split()
                return int(words[words.index("mem") + 1])
    return 0


def slabinfo():
    """{cache: (active objects, object size)}, or None when /proc/slabinfo is not readable."""
    try:
        with open("/proc/slabinfo") as f:
            lines = f.readlines()[2:]
    except OSError:
        return None
    caches = {}
    for line in lines:
        words = line.split()
        caches[words[0]] = (int(words[1]), int(words[3]))
    return caches


def slab_delta_bytes(before, after):
    if before is None or after is None:
        return None
    total = 0
    for name, (objs, size) in after.items():
        total += (objs - before.get(name, (0, size))[0]) * size
    return total


def socket_object_bytes(caches):
    """One object of each cache a server socket takes, in bytes (None without slabinfo)."""
    if caches is None:
        return None
    return {name: caches[name][1] for name in SOCKET_CACHES if name in caches}


def ss_socket_bytes(port):
    """(sockets, bytes) of `skmem` summed over the established sockets on local port `port`."""
    try:
        out = subprocess.run(
            ["ss", "-tmnH", "state", "established", "sport", "=", f":{port}"],
            check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    sockets, total = 0, 0
    for m in re.finditer(r"skmem:\(([^)]*)\)", out):
        sockets += 1
        for field in m.group(1).split(","):
            key = re.match(r"[a-z]+", field).group(0)
            if key in ("r", "t", "w", "f", "o", "bl", "d"):
                total += int(field[len(key):])
    return sockets, total


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise RuntimeError("the server closed the connection")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def join(self, room):
        self.sock.sendall(f"/join {room}\n".encode())
        want = f"* you joined {room} ("
        while not (line := self.line()).startswith(want):
            if not line.startswith("* "):
                raise RuntimeError(f"expected {want!r}, got {line!r}")


def drain(clients, quiet=0.3, limit=30.0):
    """Reads whatever the server sent the clients (the others' arrivals in their rooms), until
    nothing came for `quiet` seconds: unread bytes would sit in the clients' receive buffers
    and be counted as the kernel's."""
    sel = selectors.DefaultSelector()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ)
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready = sel.select(timeout=quiet)
            if not ready:
                return
            for key, _ in ready:
                try:
                    if not key.fileobj.recv(65536):
                        raise RuntimeError("the server closed a connection")
                except BlockingIOError:
                    pass
        raise RuntimeError("the server kept sending to idle clients")
    finally:
        sel.close()
        for c in clients:
            c.sock.setblocking(True)


STD_FRAME = re.compile(r"(/rustc/|^library/|hashbrown|/raw_vec|alloc\.rs|boxed\.rs|sync\.rs|rc\.rs|vec/mod\.rs|unix\.rs)")


def heaptrack_sites(data, clients, min_bytes=1.0):
    """The live heap of a server killed while its clients were idle, by allocation site:
    [(bytes per client, site, caller in crates/)], from `heaptrack_print`'s leak report (what
    was never freed is what was live when it died)."""
    text = subprocess.run(
        ["heaptrack_print", "-f", data, "-m", "0", "-l", "1", "-p", "0", "-a", "0", "-T", "0"],
        check=True, capture_output=True, text=True,
    ).stdout
    records = re.split(r"\n(?=\S[^\n]* leaked over \d+ calls from)", text)
    sizes = {"K": 1e3, "M": 1e6, "G": 1e9}
    sites = {}
    for record in records:
        head = re.match(r"([\d.]+)([KMG]?)B? leaked over (\d+) calls from", record)
        if not head:
            continue
        leaked = float(head.group(1)) * sizes.get(head.group(2), 1)
        frames = re.findall(r"\n\s+(\S[^\n]*)\n\s+at ([^\n]+)", record)
        site = next((f"{fn} ({at.split('/src/', 1)[-1] if 'registry' in at else at})"
                     for fn, at in frames if not STD_FRAME.search(at)), "?")
        crate = next((re.sub(r":\d+$", "", at) for fn, at in frames
                      if re.search(r"(^|/)crates/", at) and "registry" not in at), "?")
        key = (site, crate)
        sites[key] = sites.get(key, 0.0) + leaked
    rows = [(b / clients, site, crate) for (site, crate), b in sites.items() if b / clients >= min_bytes]
    return sorted(rows, reverse=True)


def measure(command, clients, room_size, server_cpu, settle, heaptrack=None):
    """One run: the server's RSS, socket buffers and slab objects before and after `clients`
    idle clients. With `heaptrack` (a file name), the server runs under heaptrack and is
    killed while idle: its live heap by allocation site is in the result."""
    argv = list(command)
    if heaptrack:
        argv = ["heaptrack", "-o", heaptrack] + argv
    if server_cpu is not None:
        argv = ["taskset", "-c", str(server_cpu)] + argv
    server = subprocess.Popen(
        argv + ["--addr", "127.0.0.1:0", "--max-clients", str(clients + 1)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = server.stdout.readline().decode()
        while heaptrack and line and "listening on" not in line:
            line = server.stdout.readline().decode()  # heaptrack's own lines come first
        port = int(line.rsplit(":", 1)[1])
        pid = server.pid
        if heaptrack:  # the server is heaptrack's child (heaptrack is a shell script)
            pid = int(subprocess.check_output(["pgrep", "-n", "-f", command[0]]).split()[0])
        # What is allocated once (the first connection's objects, the allocator's first
        # arenas) belongs in the "before" figure.
        probe = Client(port)
        probe.line()
        probe.join("probe")
        time.sleep(settle)
        rss_before = vm_rss_kib(pid)
        sockstat_before = sockstat_tcp_pages()
        slab_before = slabinfo()
        conns = []
        for i in range(clients):
            c = Client(port)
            if not (welcome := c.line()).startswith("* welcome "):
                raise RuntimeError(f"client {i}: expected a welcome, got {welcome!r}")
            c.join(f"room{i // room_size}")
            conns.append(c)
        drain(conns)
        time.sleep(settle)
        rss_after = vm_rss_kib(pid)
        sockstat_after = sockstat_tcp_pages()
        slab_after = slabinfo()
        sockets, buffers = ss_socket_bytes(port)
        slab = slab_delta_bytes(slab_before, slab_after)
        result = {
            "clients": clients,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "rss_per_client": (rss_after - rss_before) * 1024 / clients,
            "ss_sockets": sockets,
            "ss_buffer_bytes": buffers,
            "ss_per_socket": buffers / sockets if sockets else None,
            "sockstat_per_client": (sockstat_after - sockstat_before) * PAGE / clients,
            "slab_per_connection": slab / clients if slab is not None else None,
            "socket_objects": socket_object_bytes(slab_after),
        }
        if heaptrack:
            os.kill(pid, 9)  # idle as it is: what it never freed is what an idle client holds
            server.wait()
            result["heap_sites"] = heaptrack_sites(heaptrack + ".zst", clients)
        for c in conns:
            c.sock.close()
        probe.sock.close()
        return result
    finally:
        server.kill()
        server.wait()


def median(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(label, command, runs):
    first = runs[0]
    return {
        "label": label,
        "command": " ".join(command),
        "clients": first["clients"],
        "runs": len(runs),
        "rss_per_client": median(runs, "rss_per_client"),
        "rss_per_client_all": [round(r["rss_per_client"]) for r in runs],
        "ss_per_socket": median(runs, "ss_per_socket"),
        "sockstat_per_client": median(runs, "sockstat_per_client"),
        "slab_per_connection": median(runs, "slab_per_connection"),
        "socket_objects": first["socket_objects"],
    }


def fmt_bytes(n):
    if n is None:
        return "–"
    if abs(n) >= 1024:
        return f"{n / 1024:.2f} KiB"
    return f"{n:.0f} B"


def markdown(doc):
    """The generated book file: one table of the process's share, one of the kernel's."""
    rows = doc["results"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    sizes = sorted({r["clients"] for r in rows})
    at = {(r["label"], r["clients"]): r for r in rows}
    out = [
        f"<!-- Generated by scripts/idle_rss.py from {doc['source']}. Do not edit: rerun it. -->",
        "<!-- ANCHOR: process -->",
        "| stage | " + " | ".join(f"{n:,} idle clients" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for label in labels:
        cells = []
        for n in sizes:
            r = at.get((label, n))
            cells.append(
                "–" if r is None else
                f"{fmt_bytes(r['rss_per_client'])} ({', '.join(str(v) for v in r['rss_per_client_all'])})"
            )
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += [
        "<!-- ANCHOR_END: process -->",
        "",
        "<!-- ANCHOR: kernel -->",
        "| what the kernel holds, per idle connection | " + " | ".join(f"{n:,} clients" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]

    def kernel_row(name, key):
        cells = []
        for n in sizes:
            values = [at[(lb, n)][key] for lb in labels if (lb, n) in at and at[(lb, n)][key] is not None]
            cells.append(fmt_bytes(statistics.median(values)) if values else "–")
        out.append(f"| {name} | " + " | ".join(cells) + " |")

    kernel_row("socket buffers of the server's socket (`ss -tm`, median over the stages)", "ss_per_socket")
    kernel_row("TCP memory, machine-wide (`/proc/net/sockstat` `mem`, median over the stages)", "sockstat_per_client")
    kernel_row("slab objects of both ends (`/proc/slabinfo`, median over the stages)", "slab_per_connection")
    objects = next((r["socket_objects"] for r in rows if r["socket_objects"]), None)
    if objects:
        parts = " + ".join(f"{name} {size}" for name, size in objects.items())
        out.append(
            f"| the server's socket: one object of each cache ({parts}) | "
            + " | ".join(fmt_bytes(sum(objects.values())) for _ in sizes) + " |"
        )
    out.append("<!-- ANCHOR_END: kernel -->")
    for label, account in doc.get("accounts", {}).items():
        out += [
            "",
            f"<!-- ANCHOR: heap-{label} -->",
            f"| {label}: live heap at {account['clients']:,} idle clients, by allocation site "
            "| called from | bytes per client |",
            "|---|---|---:|",
        ]
        total = 0.0
        for per_client, site, caller in account["sites"]:
            total += per_client
            site = site.replace("|", "\\|")
            out.append(f"| `{site}` | `{caller}` | {per_client:.0f} |")
        out += [
            f"| **all of the above** (what the program asked of the allocator) | | **{total:.0f}** |",
            f"<!-- ANCHOR_END: heap-{label} -->",
        ]
    out += [
        "",
        "<!-- ANCHOR: method -->",
        f"Median of {rows[0]['runs']} runs (each run's figure in brackets), every run a fresh "
        f"server pinned to one CPU with the clients on the other, clients in rooms of "
        f"{doc['room_size']}; {doc['machine']}.",
        "<!-- ANCHOR_END: method -->",
    ]
    return "\n".join(out) + "\n"


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    flags.add_argument("--server", action="append", default=[],
                       help="a server command (binary and flags); may be repeated")
    flags.add_argument("--stages", help="labels of scripts/lib/stages.sh, comma-separated, or 'all'")
    flags.add_argument("--bin-dir", help="where the stage binaries are")
    flags.add_argument("--clients", type=int, nargs="+", default=[1000])
    flags.add_argument("--room-size", type=int, default=100)
    flags.add_argument("--runs", type=int, default=1)
    flags.add_argument("--server-cpu", type=int, default=0)
    flags.add_argument("--client-cpu", type=int, default=1)
    flags.add_argument("--settle", type=float, default=0.5, help="seconds of idleness before each reading")
    flags.add_argument("--heaptrack", metavar="DIR",
                       help="also run each server once under heaptrack, at the largest --clients, "
                            "and account for its live heap by allocation site (files go to DIR)")
    flags.add_argument("--json", help="write every run and the medians here")
    flags.add_argument("--markdown", help="write the book's tables here")
    flags.add_argument("--from-json", help="only turn an earlier --json file into --markdown")
    args = flags.parse_args()

    if args.from_json:
        with open(args.from_json) as f:
            doc = json.load(f)
        doc["source"] = os.path.relpath(args.from_json, REPO)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(markdown(doc))
        return 0

    servers = []
    if args.stages:
        table = stage_table()
        labels = DEFAULT_STAGES if args.stages == "all" else args.stages.split(",")
        bin_dir = args.bin_dir or release_dir()
        for label in labels:
            if label == "asyncio":  # the baseline is a script, not a stage binary
                servers.append((label, [os.path.join(REPO, "baseline", "asyncio_chat.py")]))
                continue
            binary, extra = table[label]
            servers.append((label, [os.path.join(bin_dir, binary)] + extra))
    for command in args.server:
        argv = shlex.split(command)
        servers.append((os.path.basename(argv[0]) + "".join(" " + a for a in argv[1:]), argv))
    if not servers:
        servers.append(("asyncio", [os.path.join(REPO, "baseline", "asyncio_chat.py")]))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # we hold N sockets too
    if args.client_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.client_cpu})

    runs = {}
    for run in range(args.runs):
        for n in args.clients:
            for label, command in servers:
                r = measure(command, n, args.room_size, args.server_cpu, args.settle)
                runs.setdefault((label, n), []).append(r)
                ss = fmt_bytes(r["ss_per_socket"])
                slab = fmt_bytes(r["slab_per_connection"])
                print(
                    f"run {run + 1}: {label}: VmRSS {r['rss_before_kib']} KiB -> "
                    f"{r['rss_after_kib']} KiB with {n} idle clients: "
                    f"{r['rss_per_client']:.0f} bytes each; kernel: socket buffers {ss}, "
                    f"slab {slab} per connection (both ends)",
                    flush=True,
                )
    results = [summarize(label, command, runs[(label, n)])
               for n in args.clients for label, command in servers]
    accounts = {}
    if args.heaptrack:
        os.makedirs(args.heaptrack, exist_ok=True)
        n = max(args.clients)
        for label, command in servers:
            if label == "asyncio":
                continue  # heaptrack sees CPython's allocator, not the chat's objects
            data = os.path.join(args.heaptrack, label)
            r = measure(command, n, args.room_size, args.server_cpu, args.settle, heaptrack=data)
            accounts[label] = {"clients": n, "sites": r["heap_sites"]}
            print(f"heap of {label} at {n} idle clients, by allocation site (bytes per client):")
            for per_client, site, caller in r["heap_sites"]:
                print(f"  {per_client:8.1f}  {site}  <- {caller}")
    if args.runs > 1:
        for r in results:
            print(f"median of {r['runs']}: {r['label']}, {r['clients']} clients: "
                  f"{r['rss_per_client']:.0f} bytes each")
    doc = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs",
        "load_before": open("/proc/loadavg").read().split()[:3],
        "room_size": args.room_size,
        "runs": {f"{label}@{n}": v for (label, n), v in runs.items()},
        "results": results,
        "accounts": accounts,
        "source": "this run",
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        doc["source"] = os.path.relpath(args.json, REPO)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
