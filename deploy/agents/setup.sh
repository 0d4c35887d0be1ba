#!/usr/bin/env bash
# Installs the real agent TUIs the acceptance tests drive (Claude Code and
# Codex) from the npm registry into a private prefix. Idempotent.
# Prefix: $FLEET_AGENTS_PREFIX (default /opt/fleet-agents).
set -euo pipefail
prefix="${FLEET_AGENTS_PREFIX:-/opt/fleet-agents}"
bin="$prefix/node_modules/.bin"
if [ -x "$bin/claude" ] && [ -x "$bin/codex" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is required to install the agent TUIs" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
  @anthropic-ai/claude-code @openai/codex >/dev/null 2>&1 || {
  echo "npm install of @anthropic-ai/claude-code and @openai/codex failed" >&2; exit 1; }
"$bin/claude" --version >/dev/null
"$bin/codex" --version >/dev/null 2>&1
