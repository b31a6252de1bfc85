#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: the models, a Python venv with the
# official `openai` client and the deploy/ validators, the git-docs sample corpus, Prometheus,
# and the system tools the offline test uses (unshare, ip).
# Idempotent: a second run only verifies.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

need_apt=()
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

scripts/build-deps.sh
python3 scripts/fetch_models.py
scripts/fetch_corpus.sh >/dev/null

# The venv is rebuilt when tests/python/requirements.txt changes.
req=tests/python/requirements.txt
if ! cmp -s "$req" .venv/.requirements 2>/dev/null; then
  echo "setup: creating .venv from $req"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  cp "$req" .venv/.requirements
fi

# Real Prometheus and promtool (Debian's package) for tests/operations.rs.
scripts/fetch_prometheus.sh >/dev/null

# The Compose specification's JSON schema, as shipped in the docker-compose 1.29.2 wheel on
# PyPI (only the schema is used; the package is not installed).
schema=data/tools/compose_spec.json
if [ ! -f "$schema" ]; then
  work="$(mktemp -d)"
  python3 -m pip download -q --disable-pip-version-check --no-deps docker-compose==1.29.2 -d "$work"
  python3 -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('compose/config/compose_spec.json'))" "$work"/docker_compose-1.29.2-*.whl > "$schema.tmp"
  mv "$schema.tmp" "$schema"
  rm -rf "$work"
fi
echo "setup: test environment ready"
