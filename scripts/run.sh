#!/usr/bin/env bash
# Sets everything up and starts the server on its embedded defaults: fetch the models and the
# sample corpus (git's documentation), build, train the intent router (when its data changed),
# index the corpus (unchanged documents are skipped, so a second run takes a second), train the
# query adapter on the index (when it has none), and
# serve on 127.0.0.1:8080. Extra arguments go to `serve`. This is the local demo: without
# SWITCHYARD_API_KEYS (or --api-keys-file) it serves with auth explicitly off, on loopback only.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/build-deps.sh
python3 scripts/fetch_models.py
corpus="$(scripts/fetch_corpus.sh)"
cargo build --locked -p switchyard-server --bin switchyard
bin="$CARGO_TARGET_DIR/debug/switchyard"
if [ ! -f models/router/router.json ] || [ router/data/routes.jsonl -nt models/router/router.json ] \
  || [ router/data/routes-chat.jsonl -nt models/router/router.json ]; then
  "$bin" router train --data router/data/routes.jsonl --extra-data router/data/routes-chat.jsonl \
    --out models/router
fi
"$bin" ingest "$corpus"
# The query adapter is trained against the indexed chunks (about 5 minutes on 2 cores, most of
# it embedding them), once, and again when its training questions change.
if [ ! -f models/query-adapter/query-adapter.json ] \
  || [ retrieval/train/git-docs-train.jsonl -nt models/query-adapter/query-adapter.json ]; then
  "$bin" query-adapter train --questions retrieval/train/git-docs-train.jsonl --out models/query-adapter
fi
if [ -z "${SWITCHYARD_API_KEYS:-}" ] && [ -z "${SWITCHYARD_API_KEYS_FILE:-}" ]; then
  export SWITCHYARD_AUTH_DISABLED="${SWITCHYARD_AUTH_DISABLED:-true}"
fi
exec "$bin" serve "$@"
