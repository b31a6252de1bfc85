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

# Downloads Debian package NAME at exactly VERSION into DIR and checks its sha256, so every
# machine gets the same files (the corpus, Prometheus). A mirror that no longer has that
# version (Debian keeps only a release's latest) is a loud error naming the pin to update.
download_pinned_deb() {
  local name="$1" version="$2" sha256="$3" dir="$4" sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  (cd "$dir" && { apt-get download "$name=$version" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >&2 && apt-get download "$name=$version" >&2; }; }) || {
    echo "error: apt cannot download $name=$version (pinned in scripts/); this machine's Debian release or mirror lacks it: update the version and sha256 there" >&2
    return 1
  }
  local deb
  deb="$(ls "$dir"/"${name}"_*.deb)"
  echo "$sha256  $deb" | sha256sum --check --quiet >&2 || {
    echo "error: $deb does not have the pinned sha256 $sha256" >&2
    return 1
  }
}
