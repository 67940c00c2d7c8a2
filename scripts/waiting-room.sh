#!/usr/bin/env bash
# Shows who gets served when more clients arrive than a blocking stage can serve at once.
#
#   scripts/waiting-room.sh                                   # sequential, 3 clients
#   scripts/waiting-room.sh threadpool --threads 2            # a pool of 2, 3 clients
#   CLIENTS=5 scripts/waiting-room.sh threads                 # everybody is served at once
#
# The stage is named as `chat-bench compare` names it (or by its binary, chat-threads); any
# further arguments go to the stage. It starts the stage (release build) on a free port, connects
# CLIENTS clients one after the other, and prints what each one received within a second. Then
# the first client quits, and it prints again. Everything runs on 127.0.0.1 and is stopped at the
# end.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

resolve_stage "${1:-sequential}"
shift || true
set -- "${stage_args[@]}" "$@"
bin=$stage_bin
clients=${CLIENTS:-3}
exe=$(target_dir)/release/$bin
if [[ ! -x $exe ]]; then
    echo "building $bin (release)..."
    cargo build --release --quiet -p "$bin"
fi

tmp=$(mktemp -d)
server_pid=
cleanup() {
    [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

"$exe" --addr 127.0.0.1:0 "$@" >"$tmp/stdout" 2>"$tmp/stderr" &
server_pid=$!
addr=$(wait_listening "$tmp/stdout" 5) || { echo "the server did not start:"; cat "$tmp/stderr"; exit 1; }
host=${addr%:*}
port=${addr##*:}
echo "started: $bin $* (listening on $addr)"

# Each client is a file descriptor opened with bash's /dev/tcp; a background `cat` copies what it
# receives into a file, so we can look at it whenever we like.
declare -a readers
for i in $(seq 1 "$clients"); do
    fd=$((10 + i))
    eval "exec $fd<>/dev/tcp/$host/$port"
    cat <&"$fd" >"$tmp/client$i" &
    readers+=($!)
done

show() {
    sleep 1
    echo
    echo "== $1"
    for i in $(seq 1 "$clients"); do
        if [[ -s $tmp/client$i ]]; then
            echo "client $i received: $(head -n 1 "$tmp/client$i")"
        else
            echo "client $i received: nothing (connected, waiting)"
        fi
    done
}

show "all $clients clients connected"
echo
echo "client 1 types /quit"
echo "/quit" >&11
# And closes its end, as a client that is done does: the server writes `* bye`, then waits for
# the client's end of stream (at most its close grace) before it lets the connection go.
exec 11>&-
show "one second after client 1 quit"

for i in $(seq 1 "$clients"); do
    eval "exec $((10 + i))>&-"
done
kill "${readers[@]}" 2>/dev/null || true
