#!/usr/bin/env bash
# compare.sh: the project's main command. Builds every stage in release mode,
# runs the same load scenarios against each with chat-bench, and prints one table.
#
#   scripts/compare.sh                       # quick profile: every stage, about 5 minutes
#   scripts/compare.sh --full                # the long run (10,000 idle clients, long steady states)
#   scripts/compare.sh --stages epoll,mio    # any other argument goes to `chat-bench compare`
#
# Results land in results/<date>-<host>/ (raw JSON, summary.md, report/*.md and *.svg).
# Numbers from a machine that is busy with other work are noisy: run it on a quiet one.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=quick
args=()
for arg in "$@"; do
    case "$arg" in
        --full) profile=full ;;
        --quick) profile=quick ;;
        *) args+=("$arg") ;;
    esac
done

target="${CARGO_TARGET_DIR:-target}"
echo "+ cargo build --release --workspace"
cargo build --release --workspace

# chat-bench starts and stops every server itself (each gets SIGTERM if
# chat-bench dies), so there is nothing else to clean up here.
echo "+ $target/release/chat-bench compare --profile $profile --bin-dir $target/release ${args[*]:-}"
"$target/release/chat-bench" compare --profile "$profile" --bin-dir "$target/release" "${args[@]}"
