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

# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
out=book/src/generated/count.txt

echo "+ cargo build -p chat-count --bins"
cargo build -p chat-count --bins
target=$(target_dir)

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
