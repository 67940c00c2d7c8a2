#!/usr/bin/env bash
# c10k.sh: the C10K lesson. Holds 10,000 idle clients against one stage, in
# rooms of 100, reads the server's memory per connection, then sends one
# message per room to show every client is still served.
#
#   scripts/c10k.sh            # against epoll
#   scripts/c10k.sh mio        # any stage, by the name `chat-bench compare` uses:
#                              # sequential threads threadpool select epoll mio
#                              # futures tokio-ct tokio-mt async-std smol
#                              # (a binary name such as chat-threads works too)
#   CLIENTS=2000 scripts/c10k.sh threads
set -euo pipefail
# shellcheck source=lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"

clients="${CLIENTS:-10000}"
resolve_stage "${1:-epoll}"

bench_build "$stage_bin" chat-bench
start_server "$bin/$stage_bin" "${stage_args[@]}"

# chat-bench pins itself to CPU 1 and the server (by pid) to CPU 0.
echo "+ $bin/chat-bench run --addr $addr --pid $server_pid --scenario idle --profile full --clients $clients"
"$bin/chat-bench" run --addr "$addr" --pid "$server_pid" --scenario idle --profile full --clients "$clients"
