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
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
(cd "$work" && { apt-get download prometheus >/dev/null 2>&1 || { $SUDO apt-get update -qq >&2 && apt-get download prometheus >&2; }; })
rm -rf "$target" && mkdir -p "$target"
dpkg-deb -x "$work"/prometheus_*.deb "$target"
"$bin/prometheus" --version >/dev/null
"$bin/promtool" --version >/dev/null
touch "$target/.complete"
echo "prometheus: $(basename "$work"/prometheus_*.deb)" >&2
echo "$bin"
