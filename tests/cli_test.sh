#!/usr/bin/env bash
# cli_test.sh SPRY TMPDIR -- every subcommand end to end on a tiny corpus: outputs, exit codes
# (0 ok, 1 runtime error, 2 usage error) and the messages for bad input.
set -u
SPRY=$1; TMP=$2; fail=0; pass=0
ok()  { pass=$((pass+1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail+1)); }
expect() { # expect CODE NEEDLE CMD... : exit code and a message fragment on stdout+stderr
    local code=$1 needle=$2; shift 2
    local out; out=$("$@" 2>&1); local rc=$?
    if [ $rc -ne "$code" ]; then bad "$* -> exit $rc (wanted $code): $out"; return; fi
    if [ -n "$needle" ] && ! grep -qF -- "$needle" <<<"$out"; then bad "$* -> message lacks '$needle': $out"; return; fi
    ok
}
rm -rf "$TMP"; mkdir -p "$TMP/corpus/sub"
for i in 1 2 3 4 5 6; do
    for j in $(seq 1 40); do echo "The river ran past mill number $i and stone $j, and the children watched the light."; done > "$TMP/corpus/doc$i.txt"
done
printf '{"text": "a json line document"}\n{"text": "another one"}\n' > "$TMP/corpus/sub/lines.jsonl"

# help and usage
"$SPRY" --help | grep -q "prepare" && ok || bad "spry --help lists prepare"
for c in demo prepare analyze tokenizer tokenize train eval generate plot convert quantize; do
    "$SPRY" $c --help >/dev/null 2>&1 && ok || bad "spry $c --help exits 0"
done
"$SPRY" demo --help | grep -q -- "--steps N .*(300)" && ok || bad "demo --help lists defaults"
"$SPRY" train --help | grep -q -- "--steps N .*(1000)" && ok || bad "train --help lists defaults"
"$SPRY" train --help | grep -q -- "0 = off (0)" && ok || bad "train --help lists --train-tokens"
"$SPRY" analyze --help | grep -q -- "--split S" && ok || bad "analyze --help lists --split"
expect 2 "unknown command" "$SPRY" nope
expect 2 "" "$SPRY"
expect 2 "steps must be a positive integer, got 'x'" "$SPRY" demo --steps x

# demo: trains, saves an HF directory atomically, reloads with the same loss
expect 0 "reloaded loss" "$SPRY" demo --steps 40 --threads 1 --out "$TMP/demo"
[ -s "$TMP/demo/model.safetensors" ] && [ -s "$TMP/demo/config.json" ] && ok || bad "demo wrote an HF directory"
ls "$TMP/demo" | grep -q tmp && bad "temporary files left behind" || ok

# tokenizer train / tokenize
expect 0 "" "$SPRY" tokenizer train --input "$TMP/corpus" --vocab-size 300 --out "$TMP/tok.json"
out=$(printf 'The river ran' | "$SPRY" tokenize --tokenizer "$TMP/tok.json")
[[ "$out" =~ ^\[[0-9,\ ]+\]$ ]] && ok || bad "tokenize prints a JSON array: $out"
expect 1 "missing.json" "$SPRY" tokenize --tokenizer "$TMP/missing.json"
echo '{"model": {"type": "BPE", "vocab": 3}}' > "$TMP/badtok.json"
expect 1 "badtok.json" "$SPRY" tokenize --tokenizer "$TMP/badtok.json"

# prepare: text and jsonl; bad inputs
expect 0 "7 documents" "$SPRY" prepare --input "$TMP/corpus" --tokenizer "$TMP/tok.json" --out "$TMP/data" --threads 2
"$SPRY" prepare --input "$TMP/corpus/sub/lines.jsonl" --format jsonl --tokenizer "$TMP/tok.json" --out "$TMP/jl" | grep -q "2 documents" && ok || bad "jsonl: a line is a document"
expect 1 "nowhere" "$SPRY" prepare --input "$TMP/nowhere" --tokenizer "$TMP/tok.json" --out "$TMP/x"
printf '{"text": 3}\n' > "$TMP/bad.jsonl"
expect 1 "bad.jsonl:1" "$SPRY" prepare --input "$TMP/bad.jsonl" --format jsonl --tokenizer "$TMP/tok.json" --out "$TMP/x"
expect 2 "--format must be" "$SPRY" prepare --input "$TMP/corpus" --format xml --out "$TMP/x"

# train: a tiny config, checkpoints, resume, metrics; bad configs and data
cat > "$TMP/ds.json" <<'JSON'
{"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "weight_decay": 0.1}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5, "warmup_type": "linear"}},
 "gradient_clipping": 1.0, "steps_per_print": 5, "seed": 3,
 "csv_monitor": {"enabled": true, "output_path": "OUT", "job_name": "cli"}}
JSON
sed -i "s|OUT|$TMP/csv|" "$TMP/ds.json"
T="--data $TMP/data --config $TMP/ds.json --vocab 300 --layers 1 --embd 32 --heads 2 --seq 16 --threads 1 --split 1,0,0 --progress log"
expect 0 "done at step 10" "$SPRY" train $T --steps 10 --save-every 5 --out "$TMP/run" --tokenizer "$TMP/tok.json"
[ "$(cat "$TMP/run/latest")" = "step_10" ] && ok || bad "latest points at step_10"
[ -s "$TMP/run/step_5/model.safetensors" ] && [ -s "$TMP/run/step_10/tokenizer.json" ] && ok || bad "checkpoints written"
[ -s "$TMP/csv/cli/Train_Samples_train_loss.csv" ] && ok || bad "csv_monitor files"
expect 0 "resumed from" "$SPRY" train $T --steps 14 --out "$TMP/run" --resume
[ "$(wc -l < "$TMP/run/metrics.jsonl")" -eq 14 ] && ok || bad "metrics.jsonl has one line per step"
expect 0 "done at step 3" "$SPRY" train $T --steps 3 --out "$TMP/run3"
expect 0 "done at step 2" "$SPRY" train $T --steps 2 --out "$TMP/run3"
[ "$(wc -l < "$TMP/run3/metrics.jsonl")" -eq 2 ] && ok || bad "a fresh run starts metrics.jsonl anew"
echo '{"train_batch_size": "8"}' > "$TMP/badcfg.json"
expect 2 '"train_batch_size" must be an integer >= 1, got "8"' "$SPRY" train --data "$TMP/data" --config "$TMP/badcfg.json"
expect 1 "nothing.json" "$SPRY" train --data "$TMP/data" --config "$TMP/nothing.json"
expect 1 "missing" "$SPRY" train --data "$TMP/missing" --steps 1 --vocab 300 --layers 1 --embd 32 --heads 2 --seq 16
head -c 20 "$TMP/data.idx" > "$TMP/corrupt.idx"; cp "$TMP/data.bin" "$TMP/corrupt.bin"
expect 1 "corrupt.idx" "$SPRY" train --data "$TMP/corrupt" --steps 1 --vocab 300 --layers 1 --embd 32 --heads 2 --seq 16
expect 1 "out of range for vocab_size 100" "$SPRY" train --data "$TMP/data" --steps 1 --vocab 100 --layers 1 --embd 32 --heads 2 --seq 16 --split 1,0,0 --out "$TMP/run2"

# eval, generate, plot
expect 0 '"perplexity"' "$SPRY" eval --model "$TMP/run/step_14" --data "$TMP/data" --split 1,0,0 --which train --seq 16 --batch 2 --max-batches 3
expect 1 "config.json" "$SPRY" eval --model "$TMP/nomodel" --data "$TMP/data"
expect 1 "exceeds the model's n_positions 16" "$SPRY" eval --model "$TMP/run/step_14" --data "$TMP/data" --split 1,0,0 --which train --seq 100 --batch 1
expect 2 "bad value for --max-new" "$SPRY" generate --model "$TMP/run/step_14" --max-new 99999999999
out=$("$SPRY" generate --model "$TMP/run/step_14" --prompt "The river" --max-new 8 --temperature 0 2>&1) && ok || bad "generate: $out"
[[ "$out" == "The river"* ]] && ok || bad "generate continues the prompt: $out"
out2=$("$SPRY" generate --model "$TMP/run/step_14" --prompt "The river" --max-new 8 --temperature 0 2>&1)
[ "$out" = "$out2" ] && ok || bad "greedy generation is deterministic"
expect 2 "bad value for --top-p" "$SPRY" generate --model "$TMP/run/step_14" --top-p 2
expect 0 "The river" "$SPRY" generate --model "$TMP/run/step_14" --prompt "The river" --max-new 8 --min-p 0.1 --repetition-penalty 1.3 --frequency-penalty 0.5 --presence-penalty 0.2 --seed 4
expect 2 "bad value for --repetition-penalty" "$SPRY" generate --model "$TMP/run/step_14" --repetition-penalty 0
# convert / quantize: HF dir -> GGUF (with the tokenizer keys) -> HF dir; generation is unchanged
"$SPRY" convert --help | grep -q -- "--type T .*(f32)" && ok || bad "convert --help lists defaults"
expect 0 "as f32" "$SPRY" convert --model "$TMP/run/step_14" --out "$TMP/m.gguf"
expect 0 "-> $TMP/back" "$SPRY" convert --model "$TMP/m.gguf" --out "$TMP/back"
cp "$TMP/run/step_14/tokenizer.json" "$TMP/back/"
out3=$("$SPRY" generate --model "$TMP/back" --prompt "The river" --max-new 8 --temperature 0 2>&1)
[ "$out3" = "$out" ] && ok || bad "GGUF round trip changes generation: '$out3' vs '$out'"
expect 0 "as q4_0" "$SPRY" quantize --model "$TMP/run/step_14" --out "$TMP/q4.gguf" --type q4_0
expect 0 "as q8_0" "$SPRY" quantize --model "$TMP/m.gguf" --out "$TMP/q8.gguf"
expect 2 "--type must be q8_0 or q4_0" "$SPRY" quantize --model "$TMP/m.gguf" --out "$TMP/x.gguf" --type f16
expect 2 "must name a .gguf file" "$SPRY" quantize --model "$TMP/m.gguf" --out "$TMP/x"
head -c 100 "$TMP/m.gguf" > "$TMP/trunc.gguf"
expect 2 "trunc.gguf" "$SPRY" convert --model "$TMP/trunc.gguf" --out "$TMP/x"
expect 1 "config.json" "$SPRY" convert --model "$TMP/nomodel" --out "$TMP/x.gguf"

expect 0 "wrote" "$SPRY" plot --out "$TMP/plot.svg" "$TMP/run"
grep -q "<svg" "$TMP/plot.svg" && grep -q "polyline" "$TMP/plot.svg" && ok || bad "plot is an SVG with curves"
expect 1 "cannot read" "$SPRY" plot --out "$TMP/p2.svg" "$TMP/norun"
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
