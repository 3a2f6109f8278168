#!/usr/bin/env bash
# fuzz.sh [SECONDS] -- builds every tests/fuzz_*.c libFuzzer target with clang (ASan + UBSan,
# linked with the library's sources compiled once, instrumented for coverage) and runs each for
# SECONDS (default 60) on an empty corpus.
# Needs clang and libclang-rt-14-dev (scripts/setup.sh installs them). Exit non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
OUT=build-fuzz
rm -rf "$OUT/obj" && mkdir -p "$OUT/obj"
FLAGS="-std=c11 -g -O1 -fopenmp -Wno-pass-failed -Iinclude -Isrc -I/usr/include/x86_64-linux-gnu/openblas-pthread"
# no MPI backend (mpi.h), no HTTP server (libmicrohttpd): the fuzz targets need neither
find src -name '*.c' ! -name 'comm_mpi.c' ! -path 'src/serve/*' | sort >"$OUT/sources"
export FLAGS OUT
xargs -P "$(nproc)" -I{} sh -c 'clang $FLAGS -fsanitize=fuzzer-no-link,address,undefined -c "{}" \
    -o "$OUT/obj/$(echo "{}" | tr / _).o"' <"$OUT/sources"
rm -f "$OUT/libspry-fuzz.a"
ar rcs "$OUT/libspry-fuzz.a" "$OUT"/obj/*.o
for t in tests/fuzz_*.c; do
    name=$(basename "$t" .c)
    clang $FLAGS -fsanitize=fuzzer,address,undefined "$t" "$OUT/libspry-fuzz.a" -lcjson -lopenblas -lm \
        -o "$OUT/$name"
    mkdir -p "$OUT/corpus_$name"
    echo "== $name: ${SECS}s"
    ASAN_OPTIONS=allocator_may_return_null=1 "$OUT/$name" -max_total_time="$SECS" -rss_limit_mb=4096 \
        "$OUT/corpus_$name" 2>&1 | tail -3
done
