#!/usr/bin/env bash
# lint.sh -- house rules that a grep can enforce (STYLE.md): no exit()/abort-on-input outside
# tools/, the trainer names no technique, every public header has a header comment.
set -u
fail=0
if grep -rnE '\b(exit|_exit)\s*\(' src/ include/ | grep -v '^\s*//' ; then
    echo "lint: exit() outside tools/ (return a spry_status instead)"; fail=1
fi
if grep -niE 'curriculum|random_ltd|token_drop|qat|sparsity|distill|replay|moe' src/train/trainer.c; then
    echo "lint: the trainer names a technique (use hooks)"; fail=1
fi
for h in include/spry/*.h; do
    head -1 "$h" | grep -q '^/\*' || { echo "lint: $h lacks a header comment"; fail=1; }
done
[ $fail -eq 0 ] && echo "lint: ok"
exit $fail
