#!/usr/bin/env bash
# syscalls.sh: what one delivery costs in system calls, completion against readiness.
#
# Runs the same short chat load (chat-bench's chat scenario, loopback only, a few seconds)
# against a stage and against chat-epoll. While the load runs, `strace -c -f` is attached to
# the server and counts every system call it makes; the script prints the calls per delivery
# and the calls that dominate. chat-io-uring also counts its own io_uring_enter calls and
# completions and logs them at exit; that line is shown too.
#
#   scripts/syscalls.sh              # io-uring beside epoll
#   scripts/syscalls.sh tokio-ct     # any stage (names as in scripts/c10k.sh) beside epoll
#   CLIENTS=200 DURATION=5 scripts/syscalls.sh
#
# strace stops the server at every system call, so the server runs slower than it would:
# the counts are what this measures, not the times. The count covers the whole load (connects,
# warm-up, measured phase, drain) and is divided by the measured phase's deliveries, the same
# way for both stages. Without strace (apt-get install strace), or where it may not attach,
# only chat-io-uring's own count is shown. STRACE=PATH picks another strace binary.
set -euo pipefail
# shellcheck source=lib/bench.sh
source "$(dirname "$0")/lib/bench.sh"

clients="${CLIENTS:-100}"
duration="${DURATION:-3}"

# The stage to measure, by the names scripts/lib/stages.sh knows. chat-io-uring is taken by
# name until that table has its row.
if ! resolve_stage "${1:-io-uring}" 2>/dev/null; then
    case "${1:-io-uring}" in
        io-uring | chat-io-uring) stage_label=io-uring stage_bin=chat-io-uring stage_args=() ;;
        *) resolve_stage "$1" ;; # says what it knows, and fails
    esac
fi
measured=("$stage_label $stage_bin ${stage_args[*]}")
[[ "$stage_label" == epoll ]] || measured+=("epoll chat-epoll")
packages=()
for row in "${measured[@]}"; do
    read -r -a fields <<<"$row"
    packages+=("${fields[1]}")
done
bench_build "${packages[@]}" chat-bench

strace="${STRACE:-strace}"
tracing=1
if ! command -v "$strace" >/dev/null; then
    tracing=0
    echo "strace is not installed (apt-get install strace): showing only chat-io-uring's own" \
        "count of its io_uring_enter calls" >&2
fi

# measure LABEL BINARY [FLAGS...]: runs the load against the stage and adds its line to the
# table ($tmp/table).
measure() {
    local s="$1" name="$2" strace_pid="" delivered calls="" top="" own
    shift 2
    start_server "$bin/$name" "$@"
    if ((tracing)); then
        # Every thread of the server, so that a multi-threaded stage is counted whole.
        local tasks=()
        for task in /proc/"$server_pid"/task/*; do
            tasks+=(-p "${task##*/}")
        done
        "$strace" -c -f -o "$tmp/$s.strace" "${tasks[@]}" 2>"$tmp/$s.strace-log" &
        strace_pid=$!
        sleep 0.5 # attached before the first connect
        if ! kill -0 "$strace_pid" 2>/dev/null; then
            echo "strace could not attach to $name (is ptrace allowed here?):" \
                "$(head -n 1 "$tmp/$s.strace-log")" >&2
            strace_pid=""
        fi
    fi
    "$bin/chat-bench" run --addr "$addr" --scenario chat --clients "$clients" \
        --duration "$duration" --json "$tmp/$s.json" --quiet >"$tmp/$s.bench"
    if [[ -n "$strace_pid" ]]; then
        kill -INT "$strace_pid" 2>/dev/null || true # detach: strace writes its table
        wait "$strace_pid" || true
    fi
    stop_server
    cp "$tmp/stderr" "$tmp/$s.log"
    delivered="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["delivered"])' \
        "$tmp/$s.json")"
    own="$(sed -n 's/.*io_uring: \([0-9]*\) io_uring_enter calls.*/\1/p' "$tmp/$s.log")"
    if [[ -n "$strace_pid" ]]; then
        calls="$(awk '$NF == "total" { print $4 }' "$tmp/$s.strace")"
        top="$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" { print $4, $NF }' "$tmp/$s.strace" |
            sort -rn | head -4 | awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')"
    elif [[ -n "$own" ]]; then
        calls="$own"
        top="io_uring_enter $own (its own count, from start to stop)"
    fi
    {
        if [[ -z "$calls" ]]; then
            printf '%-15s %10s %12s  (not counted without strace)\n' "$s" "$delivered" -
        else
            printf '%-15s %10s %12s %12s  %s\n' "$s" "$delivered" "$calls" \
                "$(python3 -c "print(f'{$calls / max($delivered, 1):.3f}')")" "$top"
        fi
        if [[ -n "$own" ]]; then
            echo "    its own count: $(grep -o 'io_uring: .*' "$tmp/$s.log")"
        fi
    } >>"$tmp/table"
    if [[ -n "$calls" ]]; then
        printf '| %s | %s | %s | %s | %s |\n' "$s" "$delivered" "$calls" \
            "$(python3 -c "print(f'{$calls / max($delivered, 1):.3f}')")" "$top" >>"$tmp/md"
    fi
}

for row in "${measured[@]}"; do
    read -r -a fields <<<"$row"
    measure "${fields[@]}"
done
echo
echo "chat load: $clients clients, ${duration} s measured, loopback"
printf '%-15s %10s %12s %12s  %s\n' stage deliveries "syscalls" "per delivery" "most frequent"
cat "$tmp/table"

# The committed record and the book's table (the io_uring chapter includes it).
out="results/syscalls/$(date +%Y-%m-%d)"
mkdir -p "$out" book/src/generated
{
    echo "chat load: $clients clients, ${duration} s measured, loopback; git $(git rev-parse --short=12 HEAD)"
    printf '%-15s %10s %12s %12s  %s\n' stage deliveries "syscalls" "per delivery" "most frequent"
    cat "$tmp/table"
} >"$out/table.txt"
if [[ -s "$tmp/md" ]]; then
    {
        echo "<!-- Generated by scripts/syscalls.sh from $out/table.txt. Do not edit: rerun it. -->"
        echo "| stage | deliveries | system calls | per delivery | most frequent |"
        echo "|---|---:|---:|---:|---|"
        cat "$tmp/md"
        echo
        echo "The chat scenario with $clients clients, ${duration} s measured, on loopback, under"
        echo "\`strace -c -f\` (git \`$(git rev-parse --short=12 HEAD)\`, $(date +%Y-%m-%d))."
    } >book/src/generated/syscalls.md
fi
echo "wrote $out/table.txt and book/src/generated/syscalls.md"
