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
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"

echo "+ cargo build --release -p chat-$stage -p chat-bench"
cargo build --release -p "chat-$stage" -p chat-bench

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        echo "+ kill -TERM $server_pid (chat-$stage)"
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "+ $bin/chat-$stage --addr 127.0.0.1:0 &"
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

echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario slow --json $tmp/slow.json"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario slow --json "$tmp/slow.json"
echo
echo "slow-consumer figures (from the JSON):"
sed -n '/"slow": {/,/}/p' "$tmp/slow.json"
