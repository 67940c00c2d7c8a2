#!/usr/bin/env bash
# Produces the protocol chapter's transcript from a real server: starts a stage
# binary on 127.0.0.1 port 0, drives two clients through a short conversation
# (what two people would type into `nc 127.0.0.1 7878`), checks every line the
# server sends against the specification (book/src/specification.md), and writes book/src/generated/transcript.md.
#
# The file has three anchors for the chapter: `timeline` (a step-by-step table)
# and `terminal-1` / `terminal-2` (each screen as nc would show it, the typed
# lines included).
#
# Usage: scripts/transcript.sh [STAGE]     (default threads; any stage, named as
#        `chat-bench compare` names it, or by its binary, chat-threads)
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

resolve_stage "${1:-threads}"
package=$stage_bin
out=book/src/generated/transcript.md

echo "+ cargo build -p $package"
cargo build -p "$package"
target=$(target_dir)
server="$target/debug/$package"

echo "+ $server --addr 127.0.0.1:0, two clients, at most 60 s"
timeout 60 python3 - "$server" "$out" <<'PY'
"""Drives two clients through a conversation and records what each saw."""
import select
import socket
import subprocess
import sys
import time

server_bin, out_path = sys.argv[1], sys.argv[2]

# Each step: (who types, what) and the lines each terminal must then receive.
# A line ending in "..." only has to start with what comes before it
# (the welcome may carry a hint after the nick).
STEPS = [
    ("connect", 1, None, {1: ["* welcome guest1 ..."], 2: []}),
    ("connect", 2, None, {1: ["* guest2 joined lobby"], 2: ["* welcome guest2 ..."]}),
    ("type", 1, "/nick alice", {1: ["* you are now alice"], 2: ["* guest1 is now alice"]}),
    ("type", 2, "/nick bob", {1: ["* guest2 is now bob"], 2: ["* you are now bob"]}),
    ("type", 1, "hello bob", {1: [], 2: ["<alice> hello bob"]}),
    ("type", 2, "/who", {1: [], 2: ["* members of lobby: alice, bob"]}),
    ("type", 2, "/nick ALICE", {1: [], 2: ["! nick taken: ALICE"]}),
    ("type", 2, "/join rust", {1: ["* bob left lobby"], 2: ["* you joined rust (1 members)"]}),
    ("type", 1, "/msg bob are you in rust?", {1: [], 2: ["[alice] are you in rust?"]}),
    ("type", 2, "/rooms", {1: [], 2: ["* rooms: lobby (1), rust (1)"]}),
    ("type", 1, "/join rust", {1: ["* you joined rust (2 members)"], 2: ["* alice joined rust"]}),
    ("type", 1, "//join is how you get here", {1: [], 2: ["<alice> /join is how you get here"]}),
    ("type", 1, "/frobnicate", {1: ["! unknown command: /frobnicate"], 2: []}),
    ("type", 2, "/quit see you", {1: ["* bob left rust (see you)"], 2: ["* bye", "CLOSED"]}),
]


def matches(expected, got):
    if expected.endswith("..."):
        return got.startswith(expected[:-3].rstrip())
    return got == expected


socks = {}  # terminal number -> its connection, while open
proc = subprocess.Popen([server_bin, "--addr", "127.0.0.1:0"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    first = proc.stdout.readline() if ready else ""
    if not first.startswith("listening on "):
        sys.exit(f"the server did not print 'listening on ADDR' (got {first!r})")
    host, port = first.split()[-1].rsplit(":", 1)
    print(f"server: {first.strip()}")

    pending = {1: b"", 2: b""}
    screens = {1: [], 2: []}   # what each nc terminal shows, typed lines included
    rows = []                  # the timeline table

    def receive(n, want):
        """Reads lines for terminal n until `want` lines arrived (2 s at most),
        then 0.2 s more to catch anything unexpected."""
        got, deadline, quiet_until = [], time.monotonic() + 2.0, None
        while True:
            while b"\n" in pending[n]:
                line, pending[n] = pending[n].split(b"\n", 1)
                got.append(line.decode())
            now = time.monotonic()
            if len(got) >= want and quiet_until is None:
                quiet_until = now + 0.2
            limit = quiet_until if quiet_until is not None else deadline
            if now >= limit or n not in socks:
                return got
            r, _, _ = select.select([socks[n]], [], [], limit - now)
            if r:
                data = socks[n].recv(65536)
                if not data:
                    got.append("CLOSED")
                    socks.pop(n).close()
                else:
                    pending[n] += data

    for kind, who, text, expect in STEPS:
        if kind == "connect":
            socks[who] = socket.create_connection((host, int(port)), timeout=5)
            action = f"terminal {who} runs `nc {host} {port}`"
        else:
            socks[who].sendall(text.encode() + b"\n")
            screens[who].append(text)
            action = f"terminal {who} types `{text}`"
        seen = {}
        for n in (1, 2):
            seen[n] = receive(n, len(expect[n]))
            if len(seen[n]) != len(expect[n]) or not all(
                    matches(e, g) for e, g in zip(expect[n], seen[n])):
                sys.exit(f"step {action!r}: terminal {n} expected {expect[n]!r}, got {seen[n]!r}")
            screens[n].extend("(nc exits: the server closed the connection)" if l == "CLOSED"
                              else l for l in seen[n])
        cell = lambda n: ("<br>".join(f"`{l}`" for l in seen[n] if l != "CLOSED") or "—") + \
            (" (closed)" if "CLOSED" in seen[n] else "")
        rows.append(f"| {action} | {cell(1)} | {cell(2)} |")
        print(f"ok: {action}")
finally:
    for s in list(socks.values()):
        s.close()
    proc.terminate()
    proc.wait(timeout=10)

with open(out_path, "w") as f:
    f.write("<!-- Generated by scripts/transcript.sh against a real server. "
            "Do not edit: rerun it. -->\n")
    f.write("<!-- ANCHOR: timeline -->\n")
    f.write("| step | terminal 1 receives | terminal 2 receives |\n|---|---|---|\n")
    f.write("\n".join(rows) + "\n")
    f.write("<!-- ANCHOR_END: timeline -->\n")
    for n in (1, 2):
        f.write(f"\n<!-- ANCHOR: terminal-{n} -->\n```text\n$ nc {host} {port}\n")
        f.write("\n".join(screens[n]) + "\n```\n")
        f.write(f"<!-- ANCHOR_END: terminal-{n} -->\n")
print(f"wrote {out_path}")
PY
cat "$out"
