#!/usr/bin/env bash
# select-wall.sh: the select(2) lesson. An fd_set holds descriptors 0..1023
# only, so chat-select holds at most 1,000 clients: 2,000 clients connect, the
# first ~1,000 are welcomed and the rest are refused with `! server full`.
#
#   scripts/select-wall.sh
#   CLIENTS=1500 scripts/select-wall.sh
#
# (Restored by the epoll helper after it overwrote the bench helper's uncommitted
# version by mistake; the bench helper should check it against what it meant.)
set -euo pipefail
cd "$(dirname "$0")/.."

clients="${CLIENTS:-2000}"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"

echo "+ cargo build --release -p chat-select -p chat-bench"
cargo build --release -p chat-select -p chat-bench

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        echo "+ kill -TERM $server_pid (chat-select)"
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "+ $bin/chat-select --addr 127.0.0.1:0 &"
"$bin/chat-select" --addr 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/stderr" &
server_pid=$!
for _ in $(seq 100); do
    grep -q '^listening on ' "$tmp/stdout" && break
    sleep 0.1
done
addr="$(sed -n 's/^listening on //p' "$tmp/stdout")"
if [[ -z "$addr" ]]; then
    echo "chat-select did not print 'listening on ADDR'; its log:" >&2
    cat "$tmp/stderr" >&2
    exit 1
fi
grep -m 1 'capped' "$tmp/stderr" || true

echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario idle --clients $clients"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario idle --clients "$clients"
