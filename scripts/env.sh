# Shared settings for the project's scripts (sourced, not run).
# The build folder lives outside the checkout, so every clone on this machine (CI's fresh
# clones included) reuses one compiled mistral.rs instead of compiling it again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
