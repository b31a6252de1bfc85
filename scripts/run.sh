#!/usr/bin/env bash
# Sets everything up and starts the server on its embedded defaults:
# fetch the models, build, and serve on 127.0.0.1:8080 (extra arguments go to `serve`).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
python3 scripts/fetch_models.py
cargo build --locked -p switchyard-server --bin switchyard
exec "$CARGO_TARGET_DIR/debug/switchyard" serve "$@"
