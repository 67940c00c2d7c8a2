#!/usr/bin/env bash
# slow-consumer.sh: the bounded-memory lesson. A fifth of every room never
# reads. The server must drop them as slow consumers (`* NICK left ROOM (slow
# consumer)`) while the readers' latency and its own memory stay bounded.
#
#   scripts/slow-consumer.sh           # against chat-epoll
#   scripts/slow-consumer.sh threads   # any stage
set -euo pipefail
cd "$(dirname "$0")/.."

stage="${1:-epoll}"
# shellcheck source=lib/bench.sh
source scripts/lib/bench.sh
server_label="chat-$stage"

bench_build "chat-$stage" chat-bench
start_server "$bin/chat-$stage"

echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario slow --json $tmp/slow.json"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario slow --json "$tmp/slow.json"
echo
echo "slow-consumer figures (from the JSON):"
sed -n '/"slow": {/,/}/p' "$tmp/slow.json"
