/*
 * engine_kernels.h -- the row kernels of the serving engine's forward pass (engine.c).
 *
 * Every output element is computed by one code path whose arithmetic does not depend on how many
 * rows are processed together or on the thread count, so a sequence's logits are the same in
 * any batch (the engine's batch-invariance promise).
 */
#ifndef SPRY_ENGINE_KERNELS_H
#define SPRY_ENGINE_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

// y (C) = LayerNorm(x (C)) * w + b (biased variance, eps inside the square root).
void spry_eng_layernorm(const float *x, const float *w, const float *b, float *y, int64_t C, float eps);
// Y (M, N) = X (M, K) @ W^T + bias: W (N, K) row-major (PyTorch Linear), bias (N) or NULL.
// Parallel over N with OpenMP; each Y element is one fixed-order dot product.
void spry_eng_linear(const float *X, int64_t M, int64_t K, const float *W, const float *bias, int64_t N, float *Y);
// As spry_eng_linear for W in bf16 (uint16 bit patterns, N rows of K) on CPUs with AVX512-BF16:
// X is rounded to bf16 (nearest even) into xb (M * K uint16 scratch, caller-owned) and products
// are accumulated in f32 by vdpbf16ps, pairs of k at a time. Returns false (nothing done) when
// the CPU lacks AVX512-BF16.
bool spry_eng_linear_bf16(const float *X, int64_t M, int64_t K, const uint16_t *W, const float *bias, int64_t N,
                          float *Y, uint16_t *xb);
// x (n) = gelu_tanh(x), in place.
void spry_eng_gelu(float *x, int64_t n);

#endif
