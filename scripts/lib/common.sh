# shellcheck shell=bash
# lib/common.sh: what every script shares, sourced right after `set -euo pipefail`:
#
#   source "$(dirname "$0")/lib/common.sh"
#
# It cds to the repository root and gives:
#   repo                       the repository root
#   target_dir                 prints cargo's target directory (CARGO_TARGET_DIR
#                              and .cargo/config respected), the one way to find it
#   resolve_stage NAME         a stage's label, binary and flags (lib/stages.sh)
#   wait_listening FILE [S]    prints the ADDR of the first `listening on ADDR`
#                              line in FILE (any case), waiting up to S seconds (10)
#   bench_cmd                  how to run chat-bench in docs and messages

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
# shellcheck source=stages.sh
source "$repo/scripts/lib/stages.sh"

# Asks cargo once; falls back to CARGO_TARGET_DIR or ./target when cargo
# cannot read the workspace (say, while a crate is half-written).
target_dir() {
    if [[ -z ${_target_dir:-} ]]; then
        _target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) ||
            _target_dir=""
        if [[ -z $_target_dir ]]; then
            _target_dir=${CARGO_TARGET_DIR:-$repo/target}
            echo "note: cargo metadata failed; using $_target_dir as the target directory" >&2
        fi
    fi
    echo "$_target_dir"
}

wait_listening() {
    local file=$1 seconds=${2:-10} addr=""
    local tries=$((seconds * 10))
    while [[ $tries -gt 0 ]]; do
        addr=$(sed -n 's/^[Ll]istening on \([^ ]*\).*$/\1/p' "$file" 2>/dev/null | head -n 1)
        if [[ -n $addr ]]; then
            echo "$addr"
            return 0
        fi
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

# chat-bench is not on PATH: messages name the command that works anywhere.
bench_cmd="cargo run --release -p chat-bench --"
