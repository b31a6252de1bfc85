#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: the models, a Python venv with the
# official `openai` client, the git-docs sample corpus, and the system tools the offline test
# uses (unshare, ip).
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

python3 scripts/fetch_models.py
scripts/fetch_corpus.sh >/dev/null

OPENAI_VERSION=3.54.0
if ! .venv/bin/python -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  echo "setup: creating .venv with openai==$OPENAI_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "openai==$OPENAI_VERSION"
fi
echo "setup: test environment ready"
