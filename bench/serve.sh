#!/usr/bin/env bash
# serve.sh BUILD -- `spry serve` under load, concurrent clients vs sequential serving, in one
# invocation, loopback only. The model has GPT-2 124M shapes (12 layers, width 768, 12 heads,
# GPT-2's 50257-token BPE, context 128) with random weights: `spry train --steps 1` on a tiny
# corpus, made once and kept in BUILD/bench-serve/gpt2-124m (delete it to remake it). The server
# runs with 2 threads, q8_0 weights and --max-seqs 32; bench/serve_load.mjs (the openai npm
# client, Debian's node) sends streaming greedy completions, ~32-token prompts (distinct per
# request), max_tokens 64:
#   sequential: 32 requests one after another -- the baseline;
#   c1, c8, c32: that many clients, each sending requests back to back (32 requests in all for
#   c1 and c8, 4 per client for c32, i.e. 128).
# Prints a client-side table (requests/s, tokens/s, p50/p99 latency and TTFT, p50/p99
# inter-token latency), a server-side one (/metrics deltas: engine steps, preemptions, prefix
# hits) and per level
#   RESULT serve_tokens_per_s_cN spry=<cN> sequential=<seq> ratio=<cN/seq> unit=tokens/s
#   RESULT serve_requests_per_s_cN ... unit=requests/s
#   RESULT serve_{p50,p99}_{latency,ttft}_cN, serve_p50_itl_cN ... unit=s_lower_is_better
# then the server's peak RSS and how it shut down (SIGTERM, exit status). The client and the
# server share the machine's cores, so the client's own CPU time is part of every figure.
# The server is killed on any exit; every wait is bounded.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
OUT=$BUILD/bench-serve
mkdir -p "$OUT"
NODE=$(command -v node || true)
[ -x /usr/bin/node ] && NODE=/usr/bin/node # Debian's node
[ -n "$NODE" ] || { echo "serve.sh: node not found"; exit 1; }
[ -f node_modules/openai/package.json ] || { echo "serve.sh: node_modules/openai is missing (bash scripts/setup.sh)"; exit 1; }
t_start=$SECONDS
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work may share it)"

# ---- the model (once) ----
MODEL=$OUT/gpt2-124m
SPEC="gpt2 layers 12 embd 768 heads 12 vocab 50257 seq 128 steps 1"
if [ "$(cat "$MODEL/spec" 2>/dev/null)" != "$SPEC" ]; then
    echo "== making the model: $SPEC (random weights, one step)"
    rm -rf "$MODEL" "$OUT/corpus" "$OUT/train"; mkdir -p "$OUT/corpus"
    for i in $(seq 1 8); do
        for j in $(seq 1 60); do echo "The river ran past mill number $i and stone $j, and the children watched the light fade over the hills."; done > "$OUT/corpus/doc$i.txt"
    done
    "$BUILD/spry" prepare --input "$OUT/corpus" --out "$OUT/data" >/dev/null
    echo '{"train_micro_batch_size_per_gpu": 1, "steps_per_print": 100}' > "$OUT/ds.json"
    timeout 300 "$BUILD/spry" train --data "$OUT/data" --config "$OUT/ds.json" --steps 1 --layers 12 --embd 768 \
        --heads 12 --vocab 50257 --seq 128 --threads 2 --split 1,0,0 --progress log --out "$OUT/train" >"$OUT/train.log" 2>&1 ||
        { echo "serve.sh: spry train failed"; tail -5 "$OUT/train.log"; exit 1; }
    rm -f "$OUT/train/step_1/optimizer.safetensors"
    echo "$SPEC" > "$OUT/train/step_1/spec"
    mv "$OUT/train/step_1" "$MODEL"; rm -rf "$OUT/train" "$OUT/corpus"
fi

# ---- the server ----
SPID=
cleanup() {
    if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
        kill -TERM "$SPID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SPID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
LOG=$OUT/serve.log
"$BUILD/spry" serve --model "$MODEL" --alias gpt2-124m-random --host 127.0.0.1 --port 0 --threads 2 \
    --dtype q8_0 --max-seqs 32 >"$LOG" 2>&1 &
SPID=$!
for _ in $(seq 1 600); do
    grep -q "ready" "$LOG" 2>/dev/null && break
    kill -0 "$SPID" 2>/dev/null || break
    sleep 0.1
done
grep -q "ready" "$LOG" || { echo "serve.sh: the server did not start within 60 s"; cat "$LOG"; exit 1; }
URL=$(grep -o 'http://[0-9.:]*' "$LOG" | head -1)
sed 's/^/server: /' "$LOG"

# ---- the load ----
rc=0
timeout -k 5 420 "$NODE" bench/serve_load.mjs "$URL" --model gpt2-124m-random --requests 32 --per-client 4 \
    --levels 1,8,32 --max-tokens 64 || rc=$?
[ $rc -eq 124 ] && echo "serve.sh: the load generator ran past 420 s (killed)"

# ---- the server's state and shutdown ----
if kill -0 "$SPID" 2>/dev/null; then
    echo "server peak RSS: $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$SPID/status)"
    kill -TERM "$SPID"
    t0=$SECONDS
    for _ in $(seq 1 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SPID" 2>/dev/null; then
        echo "server: still running 10 s after SIGTERM (killed)"; rc=1
    else
        src=0; wait "$SPID" || src=$?
        echo "server: exit $src $((SECONDS - t0)) s after SIGTERM"; [ $src -eq 0 ] || rc=1
    fi
else
    src=0; wait "$SPID" || src=$?
    echo "server: DIED during the run (exit $src)"; rc=1
fi
grep -iE "warn|error|fail" "$LOG" | head -5 | sed 's/^/server log: /' || true
SPID=
echo "== done in $((SECONDS - t_start)) s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc
