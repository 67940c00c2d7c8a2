#!/usr/bin/env bash
# starvation.sh: the thread-pool lesson. A pool of 4 workers, 64 clients that
# stay connected: the first four are welcomed, the others wait in the queue
# until the run gives up on them. Then the same load against chat-threads,
# which welcomes everybody.
#
#   scripts/starvation.sh
#   WORKERS=8 CLIENTS=100 scripts/starvation.sh
set -euo pipefail
# shellcheck source=lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"

workers="${WORKERS:-4}"
clients="${CLIENTS:-64}"

bench_build chat-threadpool chat-threads chat-bench

for stage in threadpool threads; do
    resolve_stage "$stage"
    extra=()
    if [[ $stage == threadpool ]]; then
        extra=(--threads "$workers")
    fi
    start_server "$bin/$stage_bin" "${stage_args[@]}" "${extra[@]}"
    echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario starve --clients $clients"
    "$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario starve --clients "$clients" --quiet
    stop_server
    echo
done
