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
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"

echo "+ cargo build --release -p chat-threadpool -p chat-threads -p chat-bench"
cargo build --release -p chat-threadpool -p chat-threads -p chat-bench

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

# Starts "$@" on port 0 and sets $addr and $server_pid.
start_server() {
    echo "+ $* --addr 127.0.0.1:0 &"
    : >"$tmp/stdout"
    "$@" --addr 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/stderr" &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q '^listening on ' "$tmp/stdout" && break
        sleep 0.1
    done
    addr="$(sed -n 's/^listening on //p' "$tmp/stdout")"
    if [[ -z "$addr" ]]; then
        echo "$1 did not print 'listening on ADDR'; its log:" >&2
        cat "$tmp/stderr" >&2
        exit 1
    fi
}

for server in "chat-threadpool --threads $workers" "chat-threads"; do
    read -r -a cmd <<<"$server"
    cmd[0]="$bin/${cmd[0]}"
    start_server "${cmd[@]}"
    echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario starve --clients $clients"
    "$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario starve --clients "$clients" --quiet
    stop_server
    echo
done
