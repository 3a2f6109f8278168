#!/usr/bin/env bash
# cli_test.sh SPRY TMPDIR -- the spry binary: help, demo end to end, bad options exit 2.
set -u
SPRY=$1; TMP=$2; fail=0; pass=0
ok()  { pass=$((pass+1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail+1)); }
mkdir -p "$TMP"
"$SPRY" --help | grep -q "demo" && ok || bad "spry --help lists demo"
"$SPRY" demo --help | grep -q -- "--steps N .*(300)" && ok || bad "demo --help lists defaults"
"$SPRY" >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "no command exits 2"
"$SPRY" nope >/dev/null 2>&1; [ $? -eq 2 ] && ok || bad "unknown command exits 2"
out=$("$SPRY" demo --steps x 2>&1); [ $? -eq 2 ] && ok || bad "bad --steps exits 2"
echo "$out" | grep -q "steps must be a positive integer, got 'x'" && ok || bad "message names the value"
out=$("$SPRY" demo --steps 40 --threads 1 --out "$TMP/demo" 2>&1) && ok || bad "demo runs: $out"
echo "$out" | grep -q "reloaded loss .* == " && ok || bad "reloaded model gives the same loss"
[ -s "$TMP/demo/model.safetensors" ] && [ -s "$TMP/demo/config.json" ] && ok || bad "HF directory written"
ls "$TMP/demo" | grep -q tmp && bad "temporary files left behind" || ok
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
