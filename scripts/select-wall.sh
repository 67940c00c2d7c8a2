#!/usr/bin/env bash
# select-wall.sh: the FD_SETSIZE lesson. 2,000 clients against chat-select:
# an fd_set holds descriptors 0..1023 only, so the stage holds at most about
# 1,000 clients and refuses the rest with `! server full`; chat-bench reports
# how many got in. The same run against chat-epoll follows, for contrast.
#
#   scripts/select-wall.sh
#   CLIENTS=3000 scripts/select-wall.sh
set -euo pipefail
cd "$(dirname "$0")/.."

clients="${CLIENTS:-2000}"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"

echo "+ cargo build --release -p chat-select -p chat-epoll -p chat-bench"
cargo build --release -p chat-select -p chat-epoll -p chat-bench

tmp="$(mktemp -d)"
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        echo "+ kill -TERM $server_pid"
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap 'stop_server; rm -rf "$tmp"' EXIT

for stage in select epoll; do
    echo "+ $bin/chat-$stage --addr 127.0.0.1:0 &"
    : >"$tmp/stdout"
    "$bin/chat-$stage" --addr 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/stderr" &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q '^listening on ' "$tmp/stdout" && break
        sleep 0.1
    done
    addr="$(sed -n 's/^listening on //p' "$tmp/stdout")"
    if [[ -z "$addr" ]]; then
        echo "chat-$stage did not print 'listening on ADDR'; its log:" >&2
        cat "$tmp/stderr" >&2
        exit 1
    fi
    # Idle clients in rooms of 100, then one message per room: the ones that
    # got in are all served; the others were told `! server full`.
    echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario idle --clients $clients --ramp-timeout 10"
    "$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario idle --clients "$clients" --ramp-timeout 10 --quiet
    stop_server
    echo
done
