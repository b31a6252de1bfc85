#!/usr/bin/env bash
# Installs what compiling Switchyard needs beyond the Rust toolchain: cmake and libclang, for
# llama.cpp (vendored by llama-cpp-sys-2, built with cmake, bound with bindgen).
# Idempotent: does nothing when both are present.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/*/libclang*.so*" >/dev/null || need+=(libclang-dev)
command -v c++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  echo "build-deps: installing ${need[*]} with apt-get"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi
