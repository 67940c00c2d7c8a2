# shellcheck shell=bash
# lib/stages.sh: the one table of stage names the scripts use, the same as
# `chat-bench compare --stages` (crates/bench/src/compare.rs, STAGES; a test
# there fails when the two disagree). Sourced by lib/common.sh.
#
# Each row: LABEL BINARY [FLAGS...]. The label is the short name
# (`epoll`, `tokio-ct`); the binary is also the cargo package.
stage_table() {
    stage_row sequential chat-sequential
    stage_row threads chat-threads
    stage_row threadpool chat-threadpool
    stage_row select chat-select
    stage_row epoll chat-epoll
    stage_row mio chat-mio
    stage_row futures chat-futures
    stage_row tokio-ct chat-tokio --flavor current-thread
    stage_row tokio-mt chat-tokio --flavor multi-thread
    stage_row async-std chat-async-std
    stage_row smol chat-smol
    stage_row io-uring chat-io-uring
}

# resolve_stage NAME: sets stage_label, stage_bin (= the cargo package) and
# the array stage_args for NAME, which may be a label (`tokio-ct`), a binary
# (`chat-threads`) or a binary without its `chat-` (`threads`), as
# `chat-bench compare --stages` accepts. A name that fits several stages
# (`tokio`) takes the first, and says so. Unknown names fail with the list.
resolve_stage() {
    local want=$1
    local found=() labels=()
    stage_row() {
        labels+=("$1")
        if [[ $1 == "$want" || $2 == "$want" || ${2#chat-} == "$want" ]]; then
            found+=("$*")
        fi
    }
    stage_table
    unset -f stage_row
    if [[ ${#found[@]} -eq 0 ]]; then
        echo "unknown stage '$want'; known: ${labels[*]}" >&2
        return 1
    fi
    local row
    read -r -a row <<<"${found[0]}"
    stage_label=${row[0]}
    stage_bin=${row[1]}
    stage_args=("${row[@]:2}")
    if [[ ${#found[@]} -gt 1 ]]; then
        local all=() f
        for f in "${found[@]}"; do all+=("${f%% *}"); done
        echo "note: '$want' names ${#found[@]} stages (${all[*]}); using $stage_label" >&2
    fi
}
