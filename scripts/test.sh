#!/usr/bin/env bash
# The whole test suite: set up what the tests need, then every unit and integration test.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup-test-env.sh
SWITCHYARD_CORPUS_DIR="$(scripts/fetch_corpus.sh)"
export SWITCHYARD_CORPUS_DIR
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The tests build every crate with the mistral.rs engine; the default build (what
# scripts/run.sh makes) has none, so it is checked on its own.
cargo clippy --locked -p switchyard-server --bins -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
# Tests that need a service this machine cannot run are ignored unless it is there.
if [[ -n "${QDRANT_URL:-}" ]]; then
  cargo test --workspace --locked --lib -- --ignored qdrant_server 2>&1 | tee -a "$log" || status=$?
fi
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) g += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, g }' "$log"
exit "$status"
