#!/usr/bin/env bash
# llamacpp_test.sh SPRY TMPDIR -- spry's GGUF files in llama.cpp itself (the prebuilt CPU binaries of
# the node-llama-cpp npm package, pinned in package.json). Builds its own fixtures with the CLI: a
# byte-level BPE (300 tokens) on a tiny corpus, a GPT-2 and a BLOOM (2 layers, width 64, 4 heads:
# every matrix row a multiple of 32, as Q8_0/Q4_0 need) trained for 30 steps, each exported as f32
# and f16 (spry convert) and q8_0 and q4_0 (spry quantize), plus every GGUF converted back to an f32
# directory (the exact weights llama.cpp sees, for spry eval). tests/llamacpp_test.mjs then loads
# each file in llama.cpp and compares it with spry: tokenizer, loss on a probe text, greedy tokens.
# Exit 77 (skip) without node or node_modules/node-llama-cpp (bash scripts/setup.sh installs it).
set -u
SPRY=$1; TMP=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE=$(command -v node || true)
[ -x /usr/bin/node ] && NODE=/usr/bin/node # Debian's node
if [ -z "$NODE" ]; then echo "llamacpp_test: node not found; skipping"; exit 77; fi
if [ ! -f "$ROOT/node_modules/node-llama-cpp/package.json" ]; then
    echo "llamacpp_test: node_modules/node-llama-cpp is missing; skipping. HINT: bash scripts/setup.sh (npm install)"
    exit 77
fi

rm -rf "$TMP"; mkdir -p "$TMP/corpus"
for i in 1 2 3 4 5 6; do
    for j in $(seq 1 40); do echo "The river ran past mill number $i and stone $j, and the children watched the light."; done > "$TMP/corpus/doc$i.txt"
done
# the probe: one document of at least 33 tokens, so `spry eval --seq 32 --batch 1` scores its first 33
printf 'The river ran past mill number 3 and stone 17, and the children watched the light. The river ran past mill number' > "$TMP/probe.txt"
run() { # run LOG CMD...: quiet unless it fails
    local log=$1; shift
    if ! timeout 120 "$@" >"$TMP/$log" 2>&1; then echo "FAIL: fixture: $*"; tail -5 "$TMP/$log"; exit 1; fi
}
run tok.log "$SPRY" tokenizer train --input "$TMP/corpus" --vocab-size 300 --out "$TMP/tok.json" --quiet
run prep.log "$SPRY" prepare --input "$TMP/corpus" --tokenizer "$TMP/tok.json" --out "$TMP/data"
run probe.log "$SPRY" prepare --input "$TMP/probe.txt" --tokenizer "$TMP/tok.json" --out "$TMP/probe"
echo '{"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 3e-3}}, "steps_per_print": 100}' > "$TMP/ds.json"
T="--data $TMP/data --config $TMP/ds.json --tokenizer $TMP/tok.json --steps 30 --layers 2 --embd 64 --heads 4 --vocab 300 --seq 32 --threads 1 --split 1,0,0 --progress log"
for arch in gpt2 bloom; do
    run "train_$arch.log" "$SPRY" train $T --arch "$arch" --out "$TMP/run_$arch"
    dir="$TMP/run_$arch/step_30"
    run "f32_$arch.log" "$SPRY" convert --model "$dir" --out "$TMP/${arch}_f32.gguf" --type f32
    run "f16_$arch.log" "$SPRY" convert --model "$dir" --out "$TMP/${arch}_f16.gguf" --type f16
    run "q8_$arch.log" "$SPRY" quantize --model "$dir" --out "$TMP/${arch}_q8_0.gguf" --type q8_0
    run "q4_$arch.log" "$SPRY" quantize --model "$dir" --out "$TMP/${arch}_q4_0.gguf" --type q4_0
    for ty in f32 f16 q8_0 q4_0; do
        run "back_${arch}_$ty.log" "$SPRY" convert --model "$TMP/${arch}_$ty.gguf" --out "$TMP/${arch}_$ty.dir"
    done
done

timeout 240 "$NODE" "$ROOT/tests/llamacpp_test.mjs" "$SPRY" "$TMP"
