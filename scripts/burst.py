#!/usr/bin/env python3
"""One burst, three readers: does a client that writes a lot at once empty its room?

The case of the flow-control rules (the specification's "Flow control and slow consumers"): a
member with a 24-character nick writes 32,768 one-byte lines (`x\\n`, 64 KiB) in one `write`,
while three other members of the room read as fast as they can. Each 2-byte line becomes a
~35-byte room line, so one read of the sender's bytes is worth about a megabyte of output for
every reader, far past `--outbox-bytes` (256 KiB). A server that checks its bound before it has
tried to write drops every reader; one that follows the rules makes the sender's input wait.

For each stage (by the labels of scripts/lib/stages.sh) and each binary folder given, this starts
the server on port 0, runs the burst once, and records what each reader received, whether it was
disconnected, and the server's peak RSS (VmHWM) before and after. Interleaved, one run each:
a burst either empties the room or it does not.

    scripts/burst.py                                          # HEAD's release binaries
    scripts/burst.py --bin-dir before=/path/to/old/target/release --bin-dir after=target/release

Writes results/burst/<date>/results.json and book/src/generated/burst.md. Loopback only; every
server is stopped at the end.
"""

import argparse
import datetime
import json
import os
import shlex
import socket
import subprocess
import sys
import threading

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from stages import release_dir, stage_table, status_kib  # noqa: E402  (scripts/lib/stages.py)
LINES = 32_768
STAGES = ["select", "epoll", "mio", "futures", "tokio-ct", "tokio-mt", "async-std", "smol",
          "io-uring", "threads"]


def burst(command):
    server = subprocess.Popen(command + ["--addr", "127.0.0.1:0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        host, port = server.stdout.readline().decode().split()[-1].rsplit(":", 1)

        def connect():
            s = socket.create_connection((host, int(port)), timeout=10)
            f = s.makefile("rb")
            f.readline()  # the welcome
            return s, f

        readers = [connect() for _ in range(3)]
        sender, sender_lines = connect()
        sender.sendall(b"/nick " + b"n" * 24 + b"\n")
        for _, f in readers:  # the rename notice: everybody is in, and the nick is long
            f.readline()
        before = status_kib(server.pid, "VmHWM")
        got, cut = [0] * 3, [None] * 3

        def read(i):
            s, f = readers[i]
            s.settimeout(5)
            try:
                while got[i] < LINES:
                    line = f.readline()
                    if not line:
                        cut[i] = "closed"
                        return
                    if line.startswith(b"<"):
                        got[i] += 1
            except OSError as err:
                cut[i] = type(err).__name__

        threads = [threading.Thread(target=read, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        sender.sendall(b"x\n" * LINES)
        for t in threads:
            t.join()
        return {"received": got, "disconnected": cut, "peak_rss_kib_before": before,
                "peak_rss_kib_after": status_kib(server.pid, "VmHWM")}
    finally:
        server.terminate()
        server.wait()


def main():
    flags = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    flags.add_argument("--bin-dir", action="append", default=[],
                       help="LABEL=DIR of release binaries; may be repeated (default: after=target/release)")
    flags.add_argument("--stages", default=",".join(STAGES))
    a = flags.parse_args()
    dirs = [d.split("=", 1) for d in a.bin_dir] or [
        ["after", release_dir()]]
    table = stage_table()
    results = []
    for label in a.stages.split(","):
        binary, extra = table[label]
        for name, folder in dirs:
            path = os.path.join(folder, binary)
            if not os.path.exists(path):
                continue
            r = burst([path] + extra)
            r.update(stage=label, binaries=name)
            results.append(r)
            print(f"{label} ({name}): received {r['received']}, disconnected {r['disconnected']}, "
                  f"peak RSS {r['peak_rss_kib_before']} -> {r['peak_rss_kib_after']} KiB", flush=True)
    rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    date = datetime.date.today().isoformat()
    out = os.path.join(REPO, "results", "burst", date)
    os.makedirs(out, exist_ok=True)
    command = shlex.join(["scripts/burst.py"] + sys.argv[1:])
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"command": command.strip(), "git_revision": rev, "bin_dirs": dict(dirs),
                   "results": results}, f, indent=1)
    names = [n for n, _ in dirs]
    md = [f"<!-- Generated by scripts/burst.py from results/burst/{date}/results.json. "
          "Do not edit: rerun it. -->",
          "| stage | " + " | ".join(f"{n}: lines each reader got (of {LINES:,})" for n in names) + " |",
          "|---|" + "---|" * len(names)]
    for label in dict.fromkeys(r["stage"] for r in results):
        cells = []
        for n in names:
            r = next((r for r in results if r["stage"] == label and r["binaries"] == n), None)
            if r is None:
                cells.append("–")
                continue
            dropped = sum(1 for c in r["disconnected"] if c)
            text = " · ".join(f"{g:,}" for g in r["received"])
            cells.append(text + (f", **{dropped} of 3 disconnected**" if dropped else ""))
        md.append(f"| {label} | " + " | ".join(cells) + " |")
    md += ["", f"`scripts/burst.py` at revision `{rev}`, {date}, with the binary folders "
           + ", ".join(f"*{n}*" for n in names)
           + " (the folders and the exact command are in the results file): one burst per stage "
           "and folder, three readers, one sender with a 24-character nick. A *before* folder is "
           "the release build of an older revision, e.g. `git worktree add ../old 32bff89 && "
           "(cd ../old && cargo build --release)`."]
    with open(os.path.join(REPO, "book", "src", "generated", "burst.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
