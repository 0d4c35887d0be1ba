#!/usr/bin/env bash
# Builds a release tarball an operator installs on each host:
#   fleet-<version>-<arch>-linux/{bin,systemd,examples,README.md}
# usage: deploy/package.sh [--profile release|dev] [--out DIR] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release out=dist build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: $0 [--profile release|dev] [--out DIR] [--no-build]" >&2; exit 2 ;;
  esac
done
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
if [ "$build" = 1 ]; then cargo build --profile "$profile" --workspace --bins; fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
name="fleet-$version-$(uname -m)-linux"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/bin" "$stage/$name/systemd" "$stage/$name/examples"
for b in fleet-hostd fleet-aggregator fleetctl fleet-demo-agent; do
  install -s -m 0755 "target/$dir/$b" "$stage/$name/bin/$b"
done
install -m 0644 deploy/systemd/*.service "$stage/$name/systemd/"
install -m 0644 deploy/*.example.* "$stage/$name/examples/"
install -m 0644 README.md ARCHITECTURE.md "$stage/$name/"
mkdir -p "$out"
tar -C "$stage" -cf - "$name" | gzip "-${FLEET_GZIP_LEVEL:-6}" > "$out/$name.tar.gz"
echo "$out/$name.tar.gz"
