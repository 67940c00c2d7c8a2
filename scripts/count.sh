#!/usr/bin/env bash
# Runs the count() example four ways (crates/00-count) and writes what they
# print, with their wall-clock times, to book/src/generated/count.txt, which
# the "Concurrency and parallelism" chapter includes.
#
# Each run sits between `ANCHOR: NAME` / `ANCHOR_END: NAME` lines (NAME is the
# binary's name), so the chapter can show each output next to its code with
# {{#include generated/count.txt:count-threads}}.
#
# Usage: scripts/count.sh      (about 8 seconds: 3 + 1 + 1 + 3 of sleeping)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
out=book/src/generated/count.txt

echo "+ cargo build -p chat-count --bins"
cargo build -p chat-count --bins
# Respect CARGO_TARGET_DIR and any other target-dir setting.
target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for bin in count-sequential count-threads count-async count-async-blocking; do
    echo "+ $bin"
    {
        echo "ANCHOR: $bin"
        echo "\$ $bin"
        "$target/debug/$bin"
        echo "ANCHOR_END: $bin"
    } >>"$tmp"
done
mv "$tmp" "$out"
chmod 644 "$out"
echo "wrote $out:"
cat "$out"
