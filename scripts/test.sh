#!/usr/bin/env bash
# The whole test suite: set up what the tests need, then every unit and integration test.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup-test-env.sh
cargo fmt --all --check
cargo test --workspace --locked "$@"
