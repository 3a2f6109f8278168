#!/usr/bin/env bash
# fuzz.sh [SECONDS] -- builds every tests/fuzz_*.c libFuzzer target with clang (ASan + UBSan,
# the library's sources compiled in) and runs each for SECONDS (default 60) on an empty corpus.
# Needs clang and libclang-rt-14-dev (scripts/setup.sh installs them). Exit non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
OUT=build-fuzz
mkdir -p "$OUT"
SRC=$(find src -name '*.c' ! -name 'comm_mpi.c' ! -path 'src/serve/*' | sort)  # no MPI backend (mpi.h), no HTTP server (libmicrohttpd): the fuzz targets need neither
for t in tests/fuzz_*.c; do
    name=$(basename "$t" .c)
    clang -std=c11 -g -O1 -fopenmp -fsanitize=fuzzer,address,undefined -Wno-pass-failed -Iinclude -Isrc \
        -I/usr/include/x86_64-linux-gnu/openblas-pthread "$t" $SRC -lcjson -lopenblas -lm -o "$OUT/$name"
    mkdir -p "$OUT/corpus_$name"
    echo "== $name: ${SECS}s"
    ASAN_OPTIONS=allocator_may_return_null=1 "$OUT/$name" -max_total_time="$SECS" -rss_limit_mb=4096 \
        "$OUT/corpus_$name" 2>&1 | tail -3
done
