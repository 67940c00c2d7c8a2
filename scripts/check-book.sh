#!/usr/bin/env bash
# Builds the book with a pinned mdBook and fails on anything untrue in it:
#   - an {{#include}} / {{#rustdoc_include}} whose file or anchor is missing
#     (mdBook renders a missing anchor as nothing, silently), or that includes
#     by line number;
#   - a broken internal link, fragment or image in the built HTML;
#   - a chapter still marked CHAPTER-NOT-WRITTEN;
#   - stale numbers: a stage crate (crates/NN-*), or a crate the stages are
#     built from (chat-core, chat-net, ...), changed after the git revision of
#     the benchmark results the book quotes (book/src/generated/*/source.md);
#     the failure names the crates and the command to rerun.
#
# Usage:
#   scripts/check-book.sh                     build and check
#   scripts/check-book.sh --allow-stale       the same, but stale results only warn
#                                             (or CHECK_BOOK_ALLOW_STALE=1)
#   scripts/check-book.sh --browser [PAGE...] also open every chapter (or PAGE, e.g.
#                                             comparison) in headless Chromium at
#                                             1280 px, save each whole page under
#                                             book/build/screenshots/, and fail
#                                             unless every <img> loaded and no table
#                                             is wider than the content column
#   scripts/check-book.sh --self-test         prove the checks catch broken input
#
# It installs what it needs: mdbook 0.5.4 with `cargo install` and, for
# --browser, Debian's chromium with apt-get. mdbook gets its default features,
# so that `mdbook serve book` works afterwards (a build without `serve` compiles
# in about a third of the time, but then the README's `mdbook serve` fails).
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

MDBOOK_VERSION=0.5.4

browser=no
pages=()
allow_stale=${CHECK_BOOK_ALLOW_STALE:-0}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --browser)
            browser=yes
            shift
            while [[ $# -gt 0 && $1 != --* ]]; do
                pages+=("$1")
                shift
            done
            continue
            ;;
        --allow-stale) allow_stale=1 ;;
        --self-test)
            echo "+ python3 scripts/check_book.py self-test"
            exec python3 scripts/check_book.py self-test
            ;;
        *)
            sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
            exit 2
            ;;
    esac
    shift
done

# A pinned mdBook: a different version may render (or check) differently.
if ! command -v mdbook >/dev/null || [ "$(mdbook --version)" != "mdbook v$MDBOOK_VERSION" ]; then
    echo "+ cargo install --locked mdbook --version $MDBOOK_VERSION"
    cargo install --locked mdbook --version "$MDBOOK_VERSION"
fi
echo "+ $(mdbook --version)"

failed=0

# The checker proves on small broken books that it catches what it claims
# (a missing anchor, a broken link, ...) before it is trusted with this one.
echo "+ python3 scripts/check_book.py self-test"
python3 scripts/check_book.py self-test >/dev/null || {
    python3 scripts/check_book.py self-test
    exit 1
}
echo "self-test: ok"

# Source checks first: they name the chapter and the directive at fault.
echo "+ python3 scripts/check_book.py sources book"
python3 scripts/check_book.py sources book || failed=1

echo "+ mdbook build book"
rm -rf book/build
mdbook build book

echo "+ python3 scripts/check_book.py html book/build"
python3 scripts/check_book.py html book/build || failed=1

echo "+ python3 scripts/check_book.py stale ."
if ! python3 scripts/check_book.py stale .; then
    if [[ $allow_stale == 1 ]]; then
        echo "check-book: the results above are stale; allowed by --allow-stale / CHECK_BOOK_ALLOW_STALE=1" >&2
    else
        failed=1
    fi
fi

if [ "$browser" = yes ]; then
    if ! command -v chromium >/dev/null; then
        echo "+ apt-get update && apt-get install -y chromium"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
    fi
    echo "+ python3 scripts/check_book.py browser book/build ${pages[*]:-(every chapter)} --screenshots book/build/screenshots"
    python3 scripts/check_book.py browser book/build "${pages[@]}" \
        --screenshots book/build/screenshots || failed=1
fi

if [ "$failed" -ne 0 ]; then
    echo "check-book: FAILED (see FAIL lines above)" >&2
    exit 1
fi
echo "check-book: ok"
