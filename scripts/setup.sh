#!/usr/bin/env bash
# setup.sh -- installs every Debian and npm package spry's build, tests and benchmarks need.
# Idempotent: skips apt when everything is present. Run as root on Debian 12 (or with sudo).
set -euo pipefail
PKGS=(build-essential cmake pkg-config libopenblas-dev libdnnl-dev libcjson-dev zlib1g-dev
      python3 python3-torch python3-numpy libomp-dev clang)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: all packages present"
