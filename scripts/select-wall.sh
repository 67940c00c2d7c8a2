#!/usr/bin/env bash
# select-wall.sh: the FD_SETSIZE lesson. 2,000 clients against chat-select:
# an fd_set holds descriptors 0..1023 only, so the stage holds at most about
# 1,000 clients and refuses the rest with `! server full`; chat-bench reports
# how many got in. The same run against chat-epoll follows, for contrast.
#
#   scripts/select-wall.sh
#   CLIENTS=3000 scripts/select-wall.sh
set -euo pipefail
# shellcheck source=lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"

clients="${CLIENTS:-2000}"

bench_build chat-select chat-epoll chat-bench

both() {
    for stage in select epoll; do
        resolve_stage "$stage"
        start_server "$bin/$stage_bin" "${stage_args[@]}"
        # Idle clients in rooms of 100, then one message per room: the ones that
        # got in are all served; the others were told `! server full`.
        echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario idle --clients $clients --ramp-timeout 10"
        "$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario idle --clients "$clients" --ramp-timeout 10 --quiet
        stop_server
        echo
    done
}

# What it prints goes to the book too (the stage 4 chapter includes it), with the build folder
# written as target/release so that it reads the same on every machine.
both | tee "$tmp/wall.txt"
sed "s|$bin/|target/release/|g" "$tmp/wall.txt" >book/src/generated/select-wall.txt
echo "wrote book/src/generated/select-wall.txt"
