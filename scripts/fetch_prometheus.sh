#!/usr/bin/env bash
# Makes Debian's Prometheus (package `prometheus`, 2.42) available without installing it
# system-wide: `apt-get download` + `dpkg-deb -x` into data/tools/prometheus, and prints the
# folder holding the `prometheus` and `promtool` binaries. The tests start that Prometheus on
# loopback and check the files in deploy/ with that promtool.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

target="$ROOT/data/tools/prometheus"
bin="$target/usr/bin"
if [ -f "$target/.complete" ] && "$bin/prometheus" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Debian 12's build; the sha256 is of the .deb.
download_pinned_deb prometheus 2.42.0+ds-5+deb12u1 \
  81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55 "$work"
rm -rf "$target" && mkdir -p "$target"
dpkg-deb -x "$work"/prometheus_*.deb "$target"
"$bin/prometheus" --version >/dev/null
"$bin/promtool" --version >/dev/null
touch "$target/.complete"
echo "prometheus: $(basename "$work"/prometheus_*.deb)" >&2
echo "$bin"
