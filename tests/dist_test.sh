#!/usr/bin/env bash
# dist_test.sh SPRY TMPDIR MPIEXEC -- data-parallel training end to end under mpirun.
#
# On a tiny GPT-2 (3 layers, dropout 0.1) and a generated corpus, train_batch_size 12 = micro 2 x
# accumulation x ranks:
#   1. 2 ranks == 1 rank: the same 20 losses within LOSS_TOL (the same global batches and dropout
#      masks; only the order in which micro-batch gradients are summed differs);
#   2. ZeRO-1 and ZeRO-2 (overlapped, small buckets) == ZeRO-0 on 2 ranks, bit for bit (losses,
#      gradient norms and final weights): sharding changes where the optimizer runs, not what it does;
#   3. checkpoints change world size: a 2-rank ZeRO-2 checkpoint resumes on 1 rank and on 3 ranks
#      (ZeRO-1, other partitions), a 1-rank checkpoint on 2 ranks (ZeRO-2); each continuation
#      matches the uninterrupted 1-rank run within LOSS_TOL;
#   4. failures stop the job with a message instead of hanging (each under a 60 s timeout): a bad
#      config on one rank, ranks with different configs, different datasets, a rank killed while
#      training.
# Exit 77 (skipped) without mpirun.
set -u
SPRY=$1; TMP=$2; MPIEXEC=${3:-mpirun}
command -v "$MPIEXEC" >/dev/null 2>&1 || { echo "no $MPIEXEC: skipped"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_rmaps_base_oversubscribe=1 SPRY_LOG_LEVEL=warn
LOSS_TOL=2e-4   # relative, per step, over 20 steps
fail=0; pass=0
ok()  { pass=$((pass+1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail+1)); }
MPI() { local n=$1; shift; timeout 120 "$MPIEXEC" -n "$n" --oversubscribe "$@"; }

rm -rf "$TMP"; mkdir -p "$TMP"; cd "$TMP" || exit 1
# a corpus of 400 lines from a fixed word list (deterministic)
awk 'BEGIN { split("the a river stone mill light children watched ran past over under green old new " \
                   "house road water field morning evening quiet loud small large", w, " ");
             s = 7; for (l = 0; l < 400; l++) { line = "";
               for (k = 0; k < 12; k++) { s = (s * 1103515245 + 12345) % 2147483648; line = line " " w[1 + int(s / 65536) % 26] }
               print line "." } }' > corpus.txt
"$SPRY" tokenizer train --input corpus.txt --vocab-size 320 --out tok.json >/dev/null 2>&1 || { bad "tokenizer train"; exit 1; }
"$SPRY" prepare --input corpus.txt --tokenizer tok.json --out data >/dev/null || { bad "prepare"; exit 1; }
cat > model.json <<'EOF'
{"model_type": "gpt2", "vocab_size": 320, "n_positions": 32, "n_embd": 64, "n_layer": 3, "n_head": 4,
 "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.0}
EOF
ds() { # ds FILE STAGE [extra zero keys]
    cat > "$1" <<EOF
{"train_batch_size": 12, "train_micro_batch_size_per_gpu": 2,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-3, "weight_decay": 0.01}},
 "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 5, "warmup_max_lr": 3e-3, "warmup_type": "linear"}},
 "gradient_clipping": 0.5, "seed": 11,
 "zero_optimization": {"stage": $2 ${3:+, $3}}}
EOF
}
ds z0.json 0; ds z1.json 1 '"overlap_comm": true, "reduce_bucket_size": 30000'
ds z2.json 2 '"overlap_comm": true, "reduce_bucket_size": 30000'
mkdir -p logs
TRAIN=(train --data data --model-config model.json --seq 32 --threads 1 --progress log)
losses() { grep -o '"loss": [0-9.e+-]*' "$1/metrics.jsonl" | awk '{print $2}'; }
norms()  { grep -o '"loss": [0-9.e+-]*, "lr": [^,]*, "grad_norm": [0-9.e+-]*' "$1/metrics.jsonl"; }
close() { # close A B TOL -> compares two loss columns step by step
    paste <(losses "$1") <(losses "$2") | awk -v tol="$3" '
        { n++; d = $1 - $2; if (d < 0) d = -d; r = d / ($2 > 0 ? $2 : 1); if (r > worst) worst = r }
        END { printf "%d steps, worst relative difference %.3g\n", n, worst; exit !(n > 0 && worst <= tol) }'
}

# 1. 2 ranks == 1 rank
"$SPRY" "${TRAIN[@]}" --config z0.json --out r1 --steps 20 >/dev/null 2>r1.err || bad "1-rank run: $(cat r1.err)"
MPI 2 "$SPRY" "${TRAIN[@]}" --config z0.json --out r2 --steps 20 >r2.out 2>r2.err || bad "2-rank run: $(cat r2.err)"
grep -q "2 ranks" r2.out && ok || bad "2-rank run reports its ranks: $(cat r2.out)"
[ "$(wc -l < r2/metrics.jsonl)" = 20 ] && ok || bad "rank 0 alone writes metrics.jsonl (20 lines)"
msg=$(close r1 r2 $LOSS_TOL) && ok || bad "2 ranks vs 1 rank: $msg"; echo "2 ranks vs 1 rank: $msg"

# rank-aware logging: rank 0 prints, rank 1 writes DIR/rank1.log when asked
sed 's/"seed": 11,/"seed": 11, "bogus_key": 1,/' z0.json > zwarn.json
MPI 2 "$SPRY" "${TRAIN[@]}" --config zwarn.json --out rw --steps 2 --log-dir logs >rw.out 2>rw.err || bad "2-rank run with --log-dir: $(cat rw.err)"
[ "$(grep -c 'bogus_key' rw.err)" = 1 ] && ok || bad "the config warning is printed once (rank 0): $(cat rw.err)"
grep -q "bogus_key" logs/rank1.log 2>/dev/null && ok || bad "rank 1 logs to logs/rank1.log"

# ZeRO on one process is the plain optimizer
"$SPRY" "${TRAIN[@]}" --config z2.json --out r1z2 --steps 20 >/dev/null 2>&1 || bad "1-rank ZeRO-2 run"
cmp -s r1/step_20/model.safetensors r1z2/step_20/model.safetensors && ok || bad "1-rank ZeRO-2 == ZeRO-0"

# 2. ZeRO-1 and ZeRO-2 == ZeRO-0, bit for bit
for z in 1 2; do
    MPI 2 "$SPRY" "${TRAIN[@]}" --config z$z.json --out rz$z --steps 20 >rz$z.out 2>rz$z.err || bad "ZeRO-$z run: $(cat rz$z.err)"
    [ "$(norms r2)" = "$(norms rz$z)" ] && ok || bad "ZeRO-$z losses and gradient norms equal ZeRO-0's"
    cmp -s r2/step_20/model.safetensors rz$z/step_20/model.safetensors && ok || bad "ZeRO-$z final weights equal ZeRO-0's"
    [ -f rz$z/step_20/optimizer-00001-of-00002.safetensors ] && ok || bad "ZeRO-$z writes one optimizer file per rank"
    grep -q "ZeRO stage $z" rz$z.out && ok || bad "ZeRO-$z reported"
done
# stage 1 halves the optimizer state per rank (give or take one 64K-element chunk)
full=$(grep -o 'optimizer state [0-9.]* MiB per rank' r2.out | awk '{print $3}')
half=$(grep -o 'optimizer state [0-9.]* MiB per rank' rz1.out | awk '{print $3}')
awk -v f="$full" -v h="$half" 'BEGIN { exit !(h < 0.75 * f) }' && ok || bad "ZeRO-1 optimizer state per rank $half MiB vs $full MiB"
echo "optimizer state per rank: ZeRO-0 $full MiB, ZeRO-1 $half MiB"

# 3. checkpoints across world sizes (constant batch: train_batch_size 12 fixed)
MPI 2 "$SPRY" "${TRAIN[@]}" --config z2.json --out c2 --steps 10 >/dev/null 2>c2.err || bad "2-rank ZeRO-2 run to step 10: $(cat c2.err)"
cp -r c2 c2b
"$SPRY" "${TRAIN[@]}" --config z0.json --out c2 --steps 20 --resume >/dev/null 2>c2r.err || bad "2-rank checkpoint on 1 rank: $(cat c2r.err)"
msg=$(close r1 c2 $LOSS_TOL) && ok || bad "2-rank ZeRO-2 checkpoint resumed on 1 rank vs 1 rank: $msg"; echo "2 -> 1 rank: $msg"
MPI 3 "$SPRY" "${TRAIN[@]}" --config z1.json --out c2b --steps 20 --resume >/dev/null 2>c3r.err || bad "2-rank checkpoint on 3 ranks: $(cat c3r.err)"
msg=$(close r1 c2b $LOSS_TOL) && ok || bad "2-rank ZeRO-2 checkpoint resumed on 3 ranks (ZeRO-1) vs 1 rank: $msg"; echo "2 -> 3 ranks: $msg"
"$SPRY" "${TRAIN[@]}" --config z0.json --out c1 --steps 10 >/dev/null 2>c1.err || bad "1-rank run to step 10"
MPI 2 "$SPRY" "${TRAIN[@]}" --config z2.json --out c1 --steps 20 --resume >/dev/null 2>c1r.err || bad "1-rank checkpoint on 2 ranks: $(cat c1r.err)"
msg=$(close r1 c1 $LOSS_TOL) && ok || bad "1-rank checkpoint resumed on 2 ranks (ZeRO-2) vs 1 rank: $msg"; echo "1 -> 2 ranks: $msg"

# 4. failures stop the job with a message
expect_fail() { # expect_fail NEEDLE CMD... : non-zero exit within the timeout, message on stderr/stdout
    local needle=$1; shift
    local out; out=$(timeout 60 "$@" 2>&1); local rc=$?
    if [ $rc -eq 0 ]; then bad "$* succeeded"; return; fi
    if [ $rc -eq 124 ]; then bad "$* hung (killed after 60 s)"; return; fi
    grep -qF -- "$needle" <<<"$out" && ok || bad "$* -> message lacks '$needle': $out"
}
echo '{"train_batch_size": 12, "train_micro_batch_size_per_gpu": "two"}' > badcfg.json
expect_fail "train_micro_batch_size_per_gpu" "$MPIEXEC" -n 1 "$SPRY" "${TRAIN[@]}" --config z0.json --out f1 --steps 5 : \
    -n 1 "$SPRY" "${TRAIN[@]}" --config badcfg.json --out f1 --steps 5
expect_fail "ranks disagree on the DeepSpeed config" "$MPIEXEC" -n 1 "$SPRY" "${TRAIN[@]}" --config z0.json --out f2 --steps 5 : \
    -n 1 "$SPRY" "${TRAIN[@]}" --config z1.json --out f2 --steps 5
head -200 corpus.txt > half.txt
"$SPRY" prepare --input half.txt --tokenizer tok.json --out half >/dev/null
expect_fail "ranks disagree on the dataset" "$MPIEXEC" -n 1 "$SPRY" "${TRAIN[@]}" --config z0.json --out f3 --steps 5 : \
    -n 1 "$SPRY" train --data half --model-config model.json --seq 32 --threads 1 --config z0.json --out f3 --steps 5
expect_fail "ranks disagree on steps" "$MPIEXEC" -n 1 "$SPRY" "${TRAIN[@]}" --config z0.json --out f4 --steps 5 : \
    -n 1 "$SPRY" "${TRAIN[@]}" --config z0.json --out f4 --steps 6
# rank 1 is killed (SIGKILL) after 2 s of a long run: the launcher must end the job
expect_fail "signal 9" "$MPIEXEC" -n 1 "$SPRY" "${TRAIN[@]}" --config z0.json --out f5 --steps 1000000 : \
    -n 1 timeout -s KILL 2 "$SPRY" "${TRAIN[@]}" --config z0.json --out f5 --steps 1000000

echo "dist_test: $pass passed, $fail failed"
[ $fail -eq 0 ]
