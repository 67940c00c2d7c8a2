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
# shellcheck source=lib/bench.sh
source scripts/lib/bench.sh
server_label="chat-$stage"

bench_build "chat-$stage" chat-bench
start_server "$bin/chat-$stage"

# chat-bench pins itself to CPU 1 and the server (by pid) to CPU 0.
echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario idle --profile full --clients $clients"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario idle --profile full --clients "$clients"
