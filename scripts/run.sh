#!/usr/bin/env bash
# Sets everything up and starts the server on its embedded defaults: fetch the models and the
# sample corpus (git's documentation), build, index the corpus (unchanged documents are
# skipped, so a second run takes a second), and serve on 127.0.0.1:8080 with the `rag` route.
# Extra arguments go to `serve`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
python3 scripts/fetch_models.py
corpus="$(scripts/fetch_corpus.sh)"
cargo build --locked -p switchyard-server --bin switchyard
"$CARGO_TARGET_DIR/debug/switchyard" ingest "$corpus"
exec "$CARGO_TARGET_DIR/debug/switchyard" serve "$@"
