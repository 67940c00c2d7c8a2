#!/usr/bin/env bash
# slow-consumer.sh: the bounded-memory lesson. A fifth of every room never
# reads. The server must drop them as slow consumers (`* NICK left ROOM (slow
# consumer)`) while the readers' latency and its own memory stay bounded.
#
#   scripts/slow-consumer.sh           # against epoll
#   scripts/slow-consumer.sh threads   # any stage (names as in scripts/c10k.sh)
set -euo pipefail
# shellcheck source=lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"

resolve_stage "${1:-epoll}"

bench_build "$stage_bin" chat-bench
start_server "$bin/$stage_bin" "${stage_args[@]}"

echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario slow --json $tmp/slow.json"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario slow --json "$tmp/slow.json"
echo
echo "slow-consumer figures (from the JSON):"
sed -n '/"slow": {/,/}/p' "$tmp/slow.json"
