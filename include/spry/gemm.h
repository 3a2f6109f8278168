/*
 * gemm.h -- general matrix multiply, f32 and bf16, row-major.
 *
 * C = alpha * op(A) @ op(B) + beta * C with op(X) = X or X^T, all matrices row-major with
 * leading dimensions in elements. The f32 path uses oneDNN's matmul primitive when built with it
 * (primitives created once per shape and cached), else OpenBLAS cblas_sgemm, else a scalar loop.
 * The bf16 path takes bf16 A and B (uint16 bit patterns), accumulates in f32 and writes f32 C:
 * oneDNN picks AVX512-BF16 or AMX at run time; without oneDNN the inputs are widened to f32 for
 * cblas_sgemm (a scalar loop if that copy cannot be allocated). The GEMMs use the OpenMP thread
 * count current at the call (omp_set_num_threads). BLAS conventions: beta == 0 means C is not
 * read (NaNs there do not spread); K == 0 or alpha == 0 gives C = beta * C. See docs/gemm.md.
 */
#ifndef SPRY_GEMM_H
#define SPRY_GEMM_H

#include <stdbool.h>
#include <stdint.h>

// op(A) is (M, K), op(B) is (K, N), C is (M, N). A is (M, K) with lda >= K when !ta, (K, M) with
// lda >= M when ta; likewise B. Thread safe (the primitive cache is locked).
void spry_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

void spry_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                    float *C, int64_t ldc);

// Which implementation runs ("onednn", "openblas", "scalar"), for logs and benchmarks.
const char *spry_gemm_backend(void);

// The implementations, for tests and benchmarks that compare them.
typedef enum spry_gemm_impl {
    SPRY_GEMM_IMPL_AUTO = 0, // oneDNN when built with it and it starts, else OpenBLAS (default)
    SPRY_GEMM_IMPL_ONEDNN,   // shapes oneDNN cannot do still fall back to OpenBLAS
    SPRY_GEMM_IMPL_OPENBLAS, // bf16: widened to f32, then cblas_sgemm
    SPRY_GEMM_IMPL_SCALAR,   // plain loops, f32 accumulation in k order; slow
} spry_gemm_impl;

// Makes later GEMM calls of this process use impl. Returns false, changing nothing, when impl is
// not available in this build or on this machine. Thread safe; calls already running finish on
// the implementation they started with.
bool spry_gemm_set_impl(spry_gemm_impl impl);

// Number of cached oneDNN primitives (0 without oneDNN). Thread safe.
int64_t spry_gemm_cache_size(void);

// Destroys the cached oneDNN primitives (for leak checkers and tests). Must not run while another
// thread is inside spry_gemm_*; later calls recreate what they need.
void spry_gemm_cache_clear(void);

#endif
