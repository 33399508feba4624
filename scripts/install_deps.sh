#!/usr/bin/env bash
# Installs the Debian packages the engine builds and tests with. Idempotent: skips apt when
# everything is already installed.
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-openmp-dev zlib1g-dev nlohmann-json3-dev libcli11-dev libstb-dev libomp-dev
      libplplot-dev plplot-driver-cairo fonts-dejavu-core openmpi-bin libopenmpi-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "all packages present"
fi
