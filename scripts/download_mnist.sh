#!/usr/bin/env bash
# Downloads the four MNIST IDX files (gzipped) into a directory and verifies their SHA-256.
#
#   scripts/download_mnist.sh [DIR]              download into DIR (default data/mnist), then verify
#   scripts/download_mnist.sh --verify-only DIR  only verify the files already in DIR
#
# Mirrors, tried in order: https://ossci-datasets.s3.amazonaws.com/mnist/ and
# https://storage.googleapis.com/cvdf-datasets/mnist/. Files that already verify are not fetched again.
# Exit status: 0 all files present and verified, 1 a download or a checksum failed (the files fetched and
# the folders created by this run are removed again), 2 usage error.
# MNIST_MIRRORS (space-separated base URLs) overrides the mirror list (used by the tests).
set -euo pipefail

MIRRORS=(
  "https://ossci-datasets.s3.amazonaws.com/mnist"
  "https://storage.googleapis.com/cvdf-datasets/mnist"
)
if [[ -n "${MNIST_MIRRORS:-}" ]]; then read -r -a MIRRORS <<< "$MNIST_MIRRORS"; fi
# SHA-256 of the .gz files (the canonical MNIST distribution files).
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
declare -A SHA256=(
  [train-images-idx3-ubyte.gz]=440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
  [train-labels-idx1-ubyte.gz]=3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
  [t10k-images-idx3-ubyte.gz]=8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
  [t10k-labels-idx1-ubyte.gz]=f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
)

usage() {
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

sha256_of() {
  if command -v sha256sum > /dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum > /dev/null; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    echo "download_mnist.sh: need sha256sum or shasum" >&2
    exit 1
  fi
}

# verify FILE: 0 if present with the expected checksum.
verify() {
  local dir=$1 name=$2
  [[ -f "$dir/$name" ]] || return 1
  [[ "$(sha256_of "$dir/$name")" == "${SHA256[$name]}" ]]
}

fetch() {
  local url=$1 dest=$2
  if command -v curl > /dev/null; then
    curl -fsSL --retry 3 --connect-timeout 20 -o "$dest" "$url"
  elif command -v wget > /dev/null; then
    wget -q --tries=3 --timeout=20 -O "$dest" "$url"
  else
    echo "download_mnist.sh: need curl or wget" >&2
    return 1
  fi
}

verify_only=0
dir=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --verify-only) verify_only=1 ;;
    -h | --help) usage ;;
    -*) echo "download_mnist.sh: unknown option $1" >&2; usage ;;
    *) [[ -z "$dir" ]] || usage; dir=$1 ;;
  esac
  shift
done
dir=${dir:-data/mnist}

if [[ $verify_only -eq 1 ]]; then
  [[ -d "$dir" ]] || { echo "download_mnist.sh: directory '$dir' not found" >&2; exit 1; }
  bad=0
  for f in "${FILES[@]}"; do
    if verify "$dir" "$f"; then
      echo "ok       $dir/$f"
    else
      echo "MISMATCH $dir/$f (missing or wrong SHA-256)" >&2
      bad=1
    fi
  done
  exit $bad
fi

# A failed run leaves nothing behind: the files it fetched and the folders it created are removed again, so
# an empty or partial data/mnist never hides a complete MNIST folder elsewhere (fm_train's lookup order).
created_dirs=()
fetched=()
d=$dir
while [[ ! -e "$d" ]]; do
  created_dirs+=("$d")
  d=$(dirname "$d")
done
cleanup_on_failure() {
  local f
  for f in "${fetched[@]}"; do rm -f "$f"; done
  rm -f "$dir"/.*.part 2> /dev/null || true
  for d in "${created_dirs[@]}"; do rmdir "$d" 2> /dev/null || true; done
  if ((${#created_dirs[@]})) && [[ ! -e "${created_dirs[0]}" ]]; then
    echo "download_mnist.sh: removed the partial download (created folder $dir)" >&2
  elif ((${#fetched[@]})); then
    echo "download_mnist.sh: removed the ${#fetched[@]} file(s) fetched by this run from $dir" >&2
  fi
}
mkdir -p "$dir"
trap 'rc=$?; if [[ $rc -ne 0 ]]; then cleanup_on_failure; fi' EXIT
for f in "${FILES[@]}"; do
  if verify "$dir" "$f"; then
    echo "ok       $dir/$f (already present)"
    continue
  fi
  done_ok=0
  for m in "${MIRRORS[@]}"; do
    tmp="$dir/.$f.part"
    if fetch "$m/$f" "$tmp" && [[ "$(sha256_of "$tmp")" == "${SHA256[$f]}" ]]; then
      mv -f "$tmp" "$dir/$f"
      fetched+=("$dir/$f")
      echo "fetched  $dir/$f from $m"
      done_ok=1
      break
    fi
    rm -f "$tmp"
    echo "failed   $m/$f (download error or checksum mismatch), trying the next mirror" >&2
  done
  if [[ $done_ok -eq 0 ]]; then
    echo "download_mnist.sh: could not fetch a verified $f from any mirror" >&2
    exit 1
  fi
done
echo "MNIST is in $dir (run fm_train --data $dir, or set MNIST_DIR=$dir)"
