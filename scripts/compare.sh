#!/usr/bin/env bash
# compare.sh: the project's main command. Builds every stage in release mode,
# runs the same load scenarios against each with chat-bench, and prints one table.
#
#   scripts/compare.sh                       # quick profile: every stage, about ten minutes
#   scripts/compare.sh --full                # the long run (10,000 idle clients, long steady states)
#   scripts/compare.sh --no-peer             # without the smol example as a peer (scripts/peer-smol.sh)
#   scripts/compare.sh --no-baseline         # without the Python asyncio server (baseline/)
#   scripts/compare.sh --stages epoll,mio    # any other argument goes to `chat-bench compare`
#
# Results land in results/<date>-<host>/ (raw JSON, summary.md, report/*.md and *.svg).
# The peer (smol's own chat-server example, built unmodified by scripts/peer-smol.sh)
# runs beside the stages in the one-room scenario; its row is marked as a peer.
# The baseline (baseline/asyncio_chat.py, the chat in Python asyncio) speaks our protocol and
# runs in every scenario like a stage; its row is marked as a baseline. It needs python3.
# Numbers from a machine that is busy with other work are noisy: run it on a quiet one.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

profile=quick
peer=yes
baseline=yes
args=()
for arg in "$@"; do
    case "$arg" in
        --full) profile=full ;;
        --quick) profile=quick ;;
        --no-peer) peer=no ;;
        --no-baseline) baseline=no ;;
        *) args+=("$arg") ;;
    esac
done

target=$(target_dir)
echo "+ cargo build --release --workspace"
cargo build --release --workspace

if [[ $peer == yes ]]; then
    # The last line scripts/peer-smol.sh --build prints is the peer's binary.
    peer_bin=$(scripts/peer-smol.sh --build | tail -n 1)
    args+=(--peer "smol-example=$peer_bin")
fi

if [[ $baseline == yes ]]; then
    if command -v python3 >/dev/null; then
        args+=(--baseline "asyncio=$PWD/baseline/asyncio_chat.py")
    else
        echo "note: python3 not found: the asyncio baseline is left out of this run" >&2
    fi
fi

# chat-bench starts and stops every server itself (each gets SIGTERM if
# chat-bench dies), so there is nothing else to clean up here.
echo "+ $target/release/chat-bench compare --profile $profile --bin-dir $target/release ${args[*]:-}"
"$target/release/chat-bench" compare --profile "$profile" --bin-dir "$target/release" "${args[@]}"
