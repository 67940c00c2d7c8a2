# shellcheck shell=bash
# lib/bench.sh: the skeleton the lesson scripts share (c10k.sh, slow-consumer.sh,
# select-wall.sh, starvation.sh). Sourced, never run: it builds release binaries,
# starts a stage on port 0, reads its `listening on ADDR` line, and stops it again
# on exit, so each script keeps only its lesson: which servers, which chat-bench run.
#
#   source "$(dirname "$0")/lib/bench.sh"     # after `set -euo pipefail`
#   resolve_stage epoll                       # sets stage_bin and stage_args
#   bench_build "$stage_bin" chat-bench
#   start_server "$bin/$stage_bin" "${stage_args[@]}"   # sets $addr and $server_pid
#   "$bin/chat-bench" run --addr "$addr" --pid "$server_pid" ...
#   stop_server                               # also done on exit

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bin="$(target_dir)/release"

tmp="$(mktemp -d)"
server_pid=""

# `cargo build --release -p PKG ...`, printed first.
bench_build() {
    local args=()
    local pkg
    for pkg in "$@"; do
        args+=(-p "$pkg")
    done
    echo "+ cargo build --release ${args[*]}"
    cargo build --release "${args[@]}"
}

# Stops the server started last, if it still runs (SIGTERM, then waits for it).
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        echo "+ kill -TERM $server_pid${server_label:+ ($server_label)}"
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap 'stop_server; rm -rf "$tmp"' EXIT

# Starts "$@" on 127.0.0.1 port 0 in the background and sets $addr and $server_pid
# from its `listening on ADDR` line (waits up to 10 s for it).
start_server() {
    echo "+ $* --addr 127.0.0.1:0 &"
    : >"$tmp/stdout"
    "$@" --addr 127.0.0.1:0 >"$tmp/stdout" 2>"$tmp/stderr" &
    server_pid=$!
    server_label=$(basename "$1")
    if ! addr=$(wait_listening "$tmp/stdout" 10); then
        echo "$(basename "$1") did not print 'listening on ADDR'; its log:" >&2
        cat "$tmp/stderr" >&2
        exit 1
    fi
}
