#!/usr/bin/env bash
# c10k.sh: the C10K lesson. Holds 10,000 idle clients against one stage, in
# rooms of 100, reads the server's memory per connection, then sends one
# message per room to show every client is still served.
#
#   scripts/c10k.sh            # against chat-epoll
#   scripts/c10k.sh mio        # any stage: sequential threads threadpool select epoll mio
#                              # futures tokio async-std smol
#   CLIENTS=2000 scripts/c10k.sh threads
set -euo pipefail
cd "$(dirname "$0")/.."

stage="${1:-epoll}"
clients="${CLIENTS:-10000}"
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

# chat-bench pins itself to CPU 1 and the server (by pid) to CPU 0.
echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario idle --profile full --clients $clients"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario idle --profile full --clients "$clients"
