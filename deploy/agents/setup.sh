#!/usr/bin/env bash
# Installs the six real agent runtimes the acceptance tests drive, at pinned
# versions known to start offline: Claude Code, Codex, opencode, pi and
# gemini-cli from the npm registry, aider from PyPI. Each runtime gets its
# own prefix under $FLEET_AGENTS_PREFIX (default /opt/fleet-agents) so their
# dependency trees never meet; `$prefix/bin/<runtime>` links to each.
# Idempotent: a runtime already installed at its pinned version is skipped.
# FLEET_AGENTS_ONLY="claude codex" limits the run to some runtimes.
set -euo pipefail
prefix="${FLEET_AGENTS_PREFIX:-/opt/fleet-agents}"
only="${FLEET_AGENTS_ONLY:-claude codex opencode pi gemini aider}"
mkdir -p "$prefix/bin"

# runtime  package  version  executable
npm_pins=(
  "claude   @anthropic-ai/claude-code      2.1.330 claude"
  "codex    @openai/codex                  0.169.0 codex"
  "opencode opencode-ai                    1.18.33 opencode"
  "pi       @mariozechner/pi-coding-agent  0.73.1  pi"
  "gemini   @google/gemini-cli             0.61.0  gemini"
)
aider_version=0.86.2

wanted() { case " $only " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

for pin in "${npm_pins[@]}"; do
  read -r rt pkg version exe <<<"$pin"
  wanted "$rt" || continue
  dir="$prefix/$rt"
  stamp="$dir/.fleet-installed"
  if [ -x "$dir/node_modules/.bin/$exe" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg@$version" ]; then
    ln -sfn "$dir/node_modules/.bin/$exe" "$prefix/bin/$rt"
    continue
  fi
  command -v npm >/dev/null || { echo "npm is required to install $pkg" >&2; exit 1; }
  echo "installing $pkg@$version into $dir…" >&2
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$pkg@$version" >/dev/null 2>"$dir/npm.log" || {
    echo "npm install of $pkg@$version failed:" >&2; tail -20 "$dir/npm.log" >&2; exit 1; }
  echo "$pkg@$version" >"$stamp"
  ln -sfn "$dir/node_modules/.bin/$exe" "$prefix/bin/$rt"
done

if wanted aider; then
  dir="$prefix/aider"
  if [ "$("$dir/bin/aider" --version 2>/dev/null)" != "aider $aider_version" ]; then
    echo "installing aider-chat==$aider_version into $dir…" >&2
    python3 -m venv "$dir" 2>/dev/null || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$dir"; }
    "$dir/bin/pip" install -q --disable-pip-version-check "aider-chat==$aider_version" >"$dir/pip.log" 2>&1 || {
      echo "pip install of aider-chat==$aider_version failed:" >&2; tail -20 "$dir/pip.log" >&2; exit 1; }
  fi
  ln -sfn "$dir/bin/aider" "$prefix/bin/aider"
fi

for rt in $only; do
  "$prefix/bin/$rt" --version >/dev/null 2>&1 || { echo "$rt does not run: $prefix/bin/$rt --version" >&2; exit 1; }
done
