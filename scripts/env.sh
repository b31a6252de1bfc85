# Shared settings for the project's scripts (sourced, not run).
# The build folder lives outside the checkout, so every clone on this machine (CI's fresh
# clones included) reuses one compiled mistral.rs instead of compiling it again.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard-target}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
# llama.cpp is compiled for this CPU (.cargo/config.toml); llama-cpp-sys-2 rebuilds when a
# GGML_* variable changes, so a build folder reused on a CPU with other features is rebuilt.
GGML_SWITCHYARD_CPU_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | sha256sum | cut -c1-16)"
export GGML_SWITCHYARD_CPU_FLAGS
