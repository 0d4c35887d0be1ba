#!/usr/bin/env bash
# Brings up a local demo fleet on a fresh machine and prints `fleetctl ps`.
# Installs tmux if it is missing (needs root or sudo), builds the workspace,
# then runs `fleetctl demo`. Stop it with: target/debug/fleetctl demo --stop
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/prereqs.sh
. deploy/prereqs.sh
ensure_tmux
cargo build --quiet --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/fleetctl" demo "$@"
