#!/usr/bin/env bash
# serve_test.sh SPRY TMPDIR -- `spry serve` end to end: builds two tiny model directories with the
# CLI (a BPE tokenizer, a GPT-2 trained for 30 steps, and a wider untrained one that decodes
# slowly enough to disconnect from), starts two servers on free loopback ports, runs
# tests/serve_client.mjs (the official openai npm client, fetch and raw sockets) against them,
# then checks the CLI's own behaviour (usage, bad options, a busy port, SIGINT/SIGTERM exit 0).
# Every wait is bounded; the servers are killed on any exit. Exit 77 (skip) only without node.
set -u
SPRY=$1; TMP=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE=$(command -v node || true)
[ -x /usr/bin/node ] && NODE=/usr/bin/node # Debian's node
if [ -z "$NODE" ]; then echo "serve_test: node not found; skipping"; exit 77; fi
if [ ! -f "$ROOT/node_modules/openai/package.json" ]; then
    echo "FAIL: node_modules/openai is missing. HINT: bash scripts/setup.sh (npm install)"; exit 1
fi
fail=0; pass=0
ok()  { pass=$((pass+1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail+1)); }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; }
trap cleanup EXIT

rm -rf "$TMP"; mkdir -p "$TMP/corpus"
for i in 1 2 3 4 5 6; do
    for j in $(seq 1 40); do echo "The river ran past mill number $i and stone $j, and the children watched the light."; done > "$TMP/corpus/doc$i.txt"
done
"$SPRY" tokenizer train --input "$TMP/corpus" --vocab-size 300 --out "$TMP/tok.json" --quiet >/dev/null 2>&1 &&
"$SPRY" prepare --input "$TMP/corpus" --tokenizer "$TMP/tok.json" --out "$TMP/data" >/dev/null 2>&1 || { echo "FAIL: fixture data"; exit 1; }
echo '{"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "AdamW", "params": {"lr": 3e-3}}, "steps_per_print": 100}' > "$TMP/ds.json"
echo '{"model_type": "gpt2", "vocab_size": 300, "n_positions": 256, "n_embd": 32, "n_layer": 2, "n_head": 2}' > "$TMP/a.json"
echo '{"model_type": "gpt2", "vocab_size": 300, "n_positions": 1024, "n_embd": 512, "n_layer": 4, "n_head": 4}' > "$TMP/b.json"
T="--data $TMP/data --config $TMP/ds.json --seq 32 --threads 2 --split 1,0,0 --tokenizer $TMP/tok.json --progress log"
timeout 120 "$SPRY" train $T --model-config "$TMP/a.json" --steps 30 --out "$TMP/runA" >"$TMP/trainA.log" 2>&1 &&
timeout 120 "$SPRY" train $T --model-config "$TMP/b.json" --steps 1 --out "$TMP/runB" >"$TMP/trainB.log" 2>&1 ||
    { echo "FAIL: fixture models"; tail -5 "$TMP"/train*.log; exit 1; }
rm -f "$TMP"/run?/step_*/optimizer.safetensors

# start NAME ARGS...: a server on a free port; sets URL_<NAME> and PID_<NAME>
start() {
    local name=$1; shift
    "$SPRY" serve --host 127.0.0.1 --port 0 "$@" >"$TMP/$name.log" 2>&1 &
    local pid=$!; PIDS+=("$pid"); eval "PID_$name=$pid"
    for _ in $(seq 1 300); do
        grep -q "ready" "$TMP/$name.log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "ready" "$TMP/$name.log"; then echo "FAIL: server $name did not start"; cat "$TMP/$name.log"; exit 1; fi
    eval "URL_$name=$(grep -o 'http://[0-9.:]*' "$TMP/$name.log" | head -1)"
}
# stop NAME SIGNAL: the server exits 0 within 10 s of the signal
stop() {
    local pid; eval "pid=\$PID_$1"
    kill -"$2" "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then bad "server $1 still runs 10 s after SIG$2"; return; fi
    wait "$pid"; local rc=$?
    [ $rc -eq 0 ] && grep -q "shutting down" "$TMP/$1.log" && ok || bad "server $1 exits 0 on SIG$2 (exit $rc)"
}

KEY=test-key-123
start A --model "$TMP/runA/step_30" --alias tiny --api-key $KEY --threads 2 --max-body 65536 --timeout 3 \
    --kv-blocks 40 --max-batch-tokens 64
start B --model "$TMP/runB/step_1" --threads 1 --max-seqs 2 --max-queue 0
echo "serve_test: A at $URL_A, B at $URL_B"

# the client: everything over HTTP
(cd "$ROOT" && timeout 240 "$NODE" tests/serve_client.mjs "$URL_A" "$KEY" "$URL_B")
rc=$?
if [ $rc -eq 0 ]; then ok; else bad "serve_client.mjs (exit $rc)"; fi
kill -0 "$PID_A" 2>/dev/null && kill -0 "$PID_B" 2>/dev/null && ok || bad "both servers survived the client"
stop A TERM
stop B INT

# the CLI itself
"$SPRY" serve --help | grep -q -- "--max-seqs N .*(32)" && ok || bad "serve --help lists defaults"
out=$("$SPRY" serve 2>&1); [ $? -eq 2 ] && grep -q -- "--model DIR is required" <<<"$out" && ok || bad "serve without --model: exit 2: $out"
out=$("$SPRY" serve --model "$TMP/runA/step_30" --port x 2>&1); [ $? -eq 2 ] && grep -q "bad value for --port" <<<"$out" && ok || bad "bad --port: $out"
out=$("$SPRY" serve --model "$TMP/runA/step_30" --kv-type f8 2>&1); [ $? -eq 2 ] && grep -q -- "--kv-type must be auto, f32 or f16, got 'f8'" <<<"$out" && ok || bad "bad --kv-type: exit 2: $out"
out=$(timeout 20 "$SPRY" serve --model "$TMP/nomodel" --port 0 2>&1); [ $? -eq 1 ] && grep -q "nomodel/config.json" <<<"$out" && ok || bad "missing model dir: exit 1: $out"
echo 'not json' > "$TMP/badtmpl.json"
out=$(timeout 20 "$SPRY" serve --model "$TMP/runA/step_30" --port 0 --chat-template "$TMP/badtmpl.json" 2>&1); [ $? -eq 2 ] && grep -q "chat template" <<<"$out" && ok || bad "bad chat template: exit 2: $out"
# a custom template (on an f16 KV cache), and a busy port
echo '{"message": "{role}: {content}\n", "generation": "assistant:", "stop": ["\nuser:"]}' > "$TMP/tmpl.json"
start C --model "$TMP/runA/step_30" --threads 1 --chat-template "$TMP/tmpl.json" --kv-type f16
port_c=${URL_C##*:}
out=$(timeout 20 "$SPRY" serve --model "$TMP/runA/step_30" --port "$port_c" 2>&1); [ $? -eq 1 ] && grep -q "cannot listen" <<<"$out" && ok || bad "busy port: exit 1: $out"
out=$(curl -s --max-time 20 "$URL_C/v1/chat/completions" -d '{"messages": [{"role": "user", "content": "The river"}], "max_tokens": 4}')
grep -q '"prompt_tokens": ' <<<"$out" && ok || bad "custom chat template serves: $out"
stop C INT

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
