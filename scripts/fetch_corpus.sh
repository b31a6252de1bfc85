#!/usr/bin/env bash
# Makes the sample corpus (git's documentation, Debian's `git-doc` package) available and
# prints its folder. Uses ../shared/corpus/git-docs when it exists; otherwise downloads the
# package with `apt-get download` and extracts its .txt files into data/corpus/git-docs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

shared="$ROOT/../shared/corpus/git-docs"
if [ -d "$shared" ]; then
  (cd "$shared" && pwd)
  exit 0
fi
target="$ROOT/data/corpus/git-docs"
if [ -f "$target/.complete" ]; then
  echo "$target"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Debian 12's git 2.39.5 documentation; the sha256 is of the .deb.
download_pinned_deb git-doc 1:2.39.5-0+deb12u3 \
  3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec "$work"
dpkg-deb -x "$work"/git-doc_*.deb "$work/root"
src="$work/root/usr/share/doc/git-doc"
rm -rf "$target" && mkdir -p "$target"
(cd "$src" && find . -name '*.txt' -print0 | xargs -0 cp --parents -t "$target")
touch "$target/.complete"
echo "corpus: $(find "$target" -name '*.txt' | wc -l) files from $(basename "$work"/git-doc_*.deb)" >&2
echo "$target"
