#!/usr/bin/env bash
# starvation.sh: the thread-pool lesson. A pool of 4 workers, 64 clients that
# stay connected: the first four are welcomed, the others wait in the queue
# until the run gives up on them. Then the same load against chat-threads,
# which welcomes everybody.
#
#   scripts/starvation.sh
#   WORKERS=8 CLIENTS=100 scripts/starvation.sh
set -euo pipefail
cd "$(dirname "$0")/.."

workers="${WORKERS:-4}"
clients="${CLIENTS:-64}"
# shellcheck source=lib/bench.sh
source scripts/lib/bench.sh

bench_build chat-threadpool chat-threads chat-bench

for server in "chat-threadpool --threads $workers" "chat-threads"; do
    read -r -a cmd <<<"$server"
    cmd[0]="$bin/${cmd[0]}"
    start_server "${cmd[@]}"
    echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario starve --clients $clients"
    "$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario starve --clients "$clients" --quiet
    stop_server
    echo
done
