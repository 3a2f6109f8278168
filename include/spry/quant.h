/*
 * quant.h -- weight formats of the inference engine (f32, bf16, f16 and ggml's Q8_0 / Q4_0 block
 * quantization), the decode GEMV, Y = X W^T (+ b) for a small batch of rows, and the packed
 * Q8_0 / Q4_0 GEMM the serving engine uses for prefill and decode on VNNI CPUs (spry_qgemm).
 *
 * The block formats are byte-for-byte those of GGUF / ggml (ggml-common.h); the quantizers give
 * the same bytes as ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref (same float operations
 * in the same order, no contraction into FMAs, scales rounded to IEEE fp16 to nearest even):
 *   Q8_0: 32 weights, { fp16 d; int8 qs[32]; }   = 34 bytes; d = amax/127, q = roundf(x/d)
 *         (roundf rounds halves away from zero), x ~ d*q.
 *   Q4_0: 32 weights, { fp16 d; uint8 qs[16]; }  = 18 bytes; m = the value of largest |x| (the
 *         first one on ties, sign kept), d = m/-8, q = min(15, trunc(x/d + 8.5)), x ~ d*(q-8);
 *         qs[j] holds element j in its low nibble and element j+16 in its high nibble.
 * Both compute x/d as x * (1/d) with 1/d taken from the f32 d before it is rounded to fp16, as
 * ggml does. Inputs must be finite; non-finite inputs give unspecified (but well-defined) bytes.
 *
 * The GEMV is the decode-time linear layer (DeepSpeed-Inference's SBI-GeMM idea on a CPU): W is
 * row-major (N, K) like torch.nn.Linear.weight, X is (M, K) with M small (the decode batch), and
 * each weight row is streamed from memory once per call for all M rows, so time ~ weight bytes /
 * memory bandwidth. See docs in src/quant/gemv.c for the kernels and their numerics.
 */
#ifndef SPRY_QUANT_H
#define SPRY_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/status.h"

#define SPRY_QK8_0 32 // weights per Q8_0 block
#define SPRY_QK4_0 32 // weights per Q4_0 block

typedef struct spry_block_q8_0 {
    uint16_t d;            // scale, IEEE fp16 bits
    int8_t qs[SPRY_QK8_0]; // quants, element j in qs[j]
} spry_block_q8_0;

typedef struct spry_block_q4_0 {
    uint16_t d;                 // scale, IEEE fp16 bits
    uint8_t qs[SPRY_QK4_0 / 2]; // nibbles: element j low, element j+16 high, stored +8
} spry_block_q4_0;

_Static_assert(sizeof(spry_block_q8_0) == 34, "Q8_0 block must be 34 bytes (ggml block_q8_0)");
_Static_assert(sizeof(spry_block_q4_0) == 18, "Q4_0 block must be 18 bytes (ggml block_q4_0)");

// ------------------------------------------------------------------------------------------------
// Weight formats

typedef enum spry_wfmt {
    SPRY_WFMT_F32 = 0,
    SPRY_WFMT_BF16, // uint16 bit patterns (top half of an f32)
    SPRY_WFMT_F16,  // uint16 IEEE binary16 bit patterns
    SPRY_WFMT_Q8_0, // spry_block_q8_0 blocks along each row
    SPRY_WFMT_Q4_0, // spry_block_q4_0 blocks along each row
    SPRY_WFMT_COUNT,
} spry_wfmt;

// Short lowercase name ("f32", "bf16", "f16", "q8_0", "q4_0"); "?" for a value out of range.
const char *spry_wfmt_name(spry_wfmt fmt);

// The format named name (as spry_wfmt_name writes it, case-insensitive). Returns -1 if unknown
// or name is NULL.
int spry_wfmt_from_name(const char *name);

// Elements per block (1 for f32/bf16/f16, 32 for Q8_0/Q4_0); 0 for a value out of range.
int64_t spry_wfmt_block(spry_wfmt fmt);

// Bytes per block (4, 2, 2, 34, 18); 0 for a value out of range.
size_t spry_wfmt_block_bytes(spry_wfmt fmt);

// Bytes of one row of K weights. Returns 0 when fmt is out of range, K <= 0, or K is not a
// multiple of the format's block.
size_t spry_wfmt_row_bytes(spry_wfmt fmt, int64_t K);

// The GGUF / ggml type id of the format (F32 0, F16 1, Q4_0 2, Q8_0 8, BF16 30); -1 out of range.
int spry_wfmt_ggml_type(spry_wfmt fmt);

// The format with GGUF / ggml type id t, or -1 if spry has none.
int spry_wfmt_from_ggml_type(int t);

// ------------------------------------------------------------------------------------------------
// Quantize / dequantize (n a multiple of 32; x and out must not overlap)

// Quantizes n floats to n/32 Q8_0 blocks at out (34 bytes each, out 2-byte aligned), bytes
// identical to ggml's quantize_row_q8_0_ref. Returns SPRY_ERR_ARG (message set, out untouched)
// when n <= 0 or n % 32 != 0, or a pointer is NULL. Thread safe (SIMD where the CPU has it; the
// bytes do not depend on the path).
spry_status spry_quantize_q8_0(const float *x, void *out, int64_t n);

// Quantizes n floats to n/32 Q4_0 blocks at out (18 bytes each), bytes identical to ggml's
// quantize_row_q4_0_ref. Errors and thread safety as spry_quantize_q8_0.
spry_status spry_quantize_q4_0(const float *x, void *out, int64_t n);

// y[i] = d * q for the n/32 Q8_0 blocks at in (exact in f32). SPRY_ERR_ARG as above.
spry_status spry_dequantize_q8_0(const void *in, float *y, int64_t n);

// y[i] = d * (q - 8) for the n/32 Q4_0 blocks at in (exact in f32). SPRY_ERR_ARG as above.
spry_status spry_dequantize_q4_0(const void *in, float *y, int64_t n);

// Converts an f32 matrix x (n_rows, K) to fmt, writing n_rows * spry_wfmt_row_bytes(fmt, K)
// bytes at out (aligned to 4 bytes for f32, 2 for the others): f32 copies, bf16 and f16 round to
// nearest even, Q8_0 / Q4_0 as above. Rows are split over n_threads OpenMP threads (0 = all); the
// bytes do not depend on the thread count. Returns SPRY_ERR_ARG (out untouched) on a bad fmt,
// n_rows < 0, K <= 0, K not a multiple of the block, or a NULL pointer.
spry_status spry_quantize_rows(spry_wfmt fmt, const float *x, void *out, int64_t n_rows, int64_t K,
                               int n_threads);

// The inverse: y (n_rows, K) = f32 values of the rows at w in format fmt (exact for every format).
// Errors as spry_quantize_rows. Single-threaded.
spry_status spry_dequantize_rows(spry_wfmt fmt, const void *w, float *y, int64_t n_rows, int64_t K);

// ------------------------------------------------------------------------------------------------
// Decode GEMV

// Y (M, N) = X (M, K) @ W^T + bias, W (N, K) row-major in format fmt (N rows of
// spry_wfmt_row_bytes(fmt, K) bytes; W aligned to its element size: 4 bytes for f32, 2 for the
// others), bias (N) or NULL, all contiguous.
//   f32 / bf16 / f16 weights: f32 activations, products accumulated in f32.
//   Q8_0 / Q4_0 weights: each row of X is first quantized to Q8_0 (spry_quantize_q8_0); per block
//     the dot product is an exact integer, scaled by d_w * d_x in f32 and summed in f32, as
//     ggml's vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0 (SIMD kernels sum in another order).
// Output rows are split over n_threads OpenMP threads (0 = all; small problems use one); every
// output element is computed by one thread in an order that does not depend on the thread count,
// so Y is bit-identical for any n_threads. Any M >= 1 works; it is fast for M <= 16 (prefill
// belongs to a GEMM). Y must not overlap X, W or bias.
// Returns SPRY_ERR_ARG (message set, Y untouched) on a bad fmt, M, N or K < 1, K not a multiple
// of the block, or a NULL pointer (bias excepted); SPRY_ERR_NOMEM if the Q8_0 scratch for X
// (about 4.2 M K bytes) cannot be allocated. Thread safe.
spry_status spry_gemv(float *y, const float *x, const void *w, spry_wfmt fmt, const float *bias,
                      int64_t M, int64_t K, int64_t N, int n_threads);

// ------------------------------------------------------------------------------------------------
// Packed quantized GEMM (prompt processing, batched decode; src/quant/qgemm.c)

// Bytes of W (N, K) in Q8_0 or Q4_0 repacked into panels of 16 output columns for spry_qgemm
// (the same bytes per weight as the rows, the panel count rounded up to even); 0 when fmt is
// neither, N < 1, or K is not a positive multiple of 32.
int64_t spry_qpack_size(spry_wfmt fmt, int64_t N, int64_t K);

// Repacks W (N, K), N rows of Q8_0 or Q4_0 blocks (GGUF's bytes), into packed
// (spry_qpack_size(fmt, N, K) bytes, 64-byte aligned for speed). Rows are split over n_threads
// OpenMP threads (0 = all). Returns SPRY_ERR_ARG (message set, packed untouched) on a bad fmt,
// shape or NULL pointer.
spry_status spry_qpack(spry_wfmt fmt, const void *rows, int64_t N, int64_t K, void *packed,
                       int n_threads);

// Bytes of scratch spry_qgemm needs for M rows of width K (0 on a bad shape).
int64_t spry_qgemm_scratch_size(int64_t M, int64_t K);

// Y (M, N) = X (M, K) @ W^T + bias with W packed by spry_qpack (fmt as packed), bias (N) or NULL.
// Each row of X is quantized to Q8_0 as in spry_gemv; per output element and block, in k order,
// acc = fma(exact integer dot, d_w * d_x, acc), then + bias. Every kernel (scalar; AVX-512 VNNI,
// tiles of 6 rows x 32 columns) uses that one order, so Y is bit-identical for any M, any split
// of the rows into calls, any thread count and either kernel. scratch holds
// spry_qgemm_scratch_size(M, K) bytes, or is NULL (then allocated per call). Columns are split
// over n_threads OpenMP threads (0 = all; small products use one). Y must not overlap the inputs.
// Returns SPRY_ERR_ARG (Y untouched) on a bad fmt, shape or NULL pointer (bias and scratch
// excepted), SPRY_ERR_NOMEM when a NULL scratch cannot be allocated. Thread safe.
spry_status spry_qgemm(float *y, const float *x, const void *packed, spry_wfmt fmt, const float *bias,
                       int64_t M, int64_t K, int64_t N, void *scratch, int n_threads);

// An epilogue: called on each finished block of Y -- rows [r0, r0 + nr), columns [c0, c0 + nc)
// of Y (ldy floats a row) -- by the thread that computed it, while the block is in its cache,
// e.g. to apply an activation or add a residual in the same pass. Blocks never overlap; each
// element is in exactly one block, whatever M, N or the thread count.
typedef void (*spry_tile_fn)(void *user, float *y, int64_t ldy, int64_t r0, int64_t nr, int64_t c0, int64_t nc);

// spry_qgemm, then epi(user, ...) on every finished block of Y (epi NULL: none).
spry_status spry_qgemm_ex(float *y, const float *x, const void *packed, spry_wfmt fmt, const float *bias,
                          int64_t M, int64_t K, int64_t N, void *scratch, int n_threads, spry_tile_fn epi,
                          void *user);

// Instruction sets of the quant kernels (quantizers and GEMV), best last.
typedef enum spry_quant_isa {
    SPRY_QUANT_ISA_AUTO = 0, // the best the CPU has (the default)
    SPRY_QUANT_ISA_SCALAR,   // portable C: the reference the SIMD kernels are tested against
    SPRY_QUANT_ISA_AVX2,     // AVX2 + FMA + F16C
    SPRY_QUANT_ISA_AVX512,   // AVX-512F/BW; Q8_0 / Q4_0 GEMV also need AVX-512 VNNI
} spry_quant_isa;

// "auto", "scalar", "avx2", "avx512"; "?" out of range.
const char *spry_quant_isa_name(spry_quant_isa isa);

// Whether this CPU runs isa for fmt's GEMV kernels (AUTO and SCALAR: always).
bool spry_quant_isa_available(spry_quant_isa isa, spry_wfmt fmt);

// Caps the instruction set later quant calls of this process may use (AUTO removes the cap), for
// tests and benchmarks comparing the kernels; a format whose kernel needs more than the CPU has
// falls back to the best below the cap. Returns false, changing nothing, when isa is out of
// range or the CPU lacks it (for every format). Thread safe (an atomic); calls already running
// finish on the kernels they started with.
bool spry_quant_set_isa(spry_quant_isa isa);

// The instruction set spry_gemv uses for fmt now (never AUTO).
spry_quant_isa spry_quant_isa_used(spry_wfmt fmt);

#endif
