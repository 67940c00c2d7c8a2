#!/usr/bin/env bash
# cluster.sh: 100,000 clients over 10 chat-cluster nodes on one Redis, on this machine.
# Builds the release binaries, then runs scripts/cluster_load.py (see its docstring for what
# it measures and writes). Every argument goes to it:
#
#   scripts/cluster.sh                              # 100,000 clients, 10 nodes
#   scripts/cluster.sh --clients 50000 --nodes 5
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"
command -v redis-server >/dev/null || { echo "cluster.sh: needs redis-server (apt-get install redis-server)" >&2; exit 1; }
echo "+ cargo build --release -p chat-cluster -p chat-bench"
cargo build --release -p chat-cluster -p chat-bench
exec python3 scripts/cluster_load.py "$@"
