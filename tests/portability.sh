#!/usr/bin/env bash
# portability.sh BUILD -- the same binaries on CPUs without AVX-512 (Haswell: AVX2) and without
# AVX (Nehalem: SSE4.2), emulated by qemu-user: the op table, the PyTorch reference tests, the
# serving engine (its scalar kernels, attention included) and the quantized kernels (GEMV and
# packed GEMM) must pass there too (kernels dispatch at run time). Exits 77 (skipped) without
# qemu-x86_64.
# OPENBLAS_CORETYPE is unset because some machines force it to their own CPU type.
set -u
BUILD=$1
command -v qemu-x86_64 >/dev/null || { echo "skipped: qemu-x86_64 not installed"; exit 77; }
fail=0; pass=0
for cpu in Haswell Nehalem; do
    for t in test_ops test_ref_models test_engine test_quant test_qgemm test_attention; do
        if env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE SPRY_BUILD_DIR="$BUILD" \
               qemu-x86_64 -cpu $cpu "$BUILD/$t" > "$BUILD/portability_${cpu}_$t.log" 2>&1; then
            pass=$((pass+1)); echo "ok $t on $cpu"
        else
            fail=$((fail+1)); echo "FAIL $t on $cpu:"; tail -5 "$BUILD/portability_${cpu}_$t.log"
        fi
    done
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
