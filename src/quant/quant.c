/*
 * quant.c -- weight formats, ggml's Q8_0 / Q4_0 block quantizers and dequantizers, row
 * conversions, and the instruction-set choice shared with gemv.c (see quant.h).
 *
 * The quantizers must give exactly the bytes of ggml's quantize_row_q8_0_ref and
 * quantize_row_q4_0_ref (ggml/src/ggml-quants.c), so every float operation below is the one ggml
 * does, in its order, and no product may be contracted with a following add into an FMA (the
 * library is built with -ffp-contract=fast): GCC gets fp-contract=off for this whole file from
 * the pragma below; clang ignores that pragma under -ffp-contract=fast, so the products that feed
 * an add go through FP_OPAQUE, an empty asm the compiler cannot see through.
 * fp16 scales are rounded to nearest even (spry_f32_to_f16; ggml's GGML_FP32_TO_FP16 is F16C's
 * vcvtps2ph with the same rounding).
 */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "spry/quant.h"

#include <math.h>
#include <omp.h>
#include <string.h>
#include <strings.h>

#include "spry/cpu.h"
#include "spry/dtype.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define QUANT_X86 1
#else
#define QUANT_X86 0
#endif

#if defined(__clang__)
#define FP_OPAQUE(v) __asm__("" : "+m"(v))
#define FP_OPAQUE_VEC(v) __asm__("" : "+v"(v))
#else
#define FP_OPAQUE(v) ((void)0)
#define FP_OPAQUE_VEC(v) ((void)0)
#endif

// ------------------------------------------------------------------------------------------------
// Formats

typedef struct wfmt_info {
    const char *name;
    int64_t block;      // elements per block
    size_t block_bytes; // bytes per block
    int ggml_type;      // GGUF / ggml type id
} wfmt_info;

static const wfmt_info k_wfmt[SPRY_WFMT_COUNT] = {
    [SPRY_WFMT_F32]  = {"f32", 1, 4, 0},
    [SPRY_WFMT_BF16] = {"bf16", 1, 2, 30},
    [SPRY_WFMT_F16]  = {"f16", 1, 2, 1},
    [SPRY_WFMT_Q8_0] = {"q8_0", SPRY_QK8_0, sizeof(spry_block_q8_0), 8},
    [SPRY_WFMT_Q4_0] = {"q4_0", SPRY_QK4_0, sizeof(spry_block_q4_0), 2},
};
_Static_assert(sizeof k_wfmt / sizeof k_wfmt[0] == SPRY_WFMT_COUNT, "weight format table size");

static bool wfmt_ok(spry_wfmt fmt) { return (unsigned)fmt < SPRY_WFMT_COUNT; }

const char *spry_wfmt_name(spry_wfmt fmt) { return wfmt_ok(fmt) ? k_wfmt[fmt].name : "?"; }

int spry_wfmt_from_name(const char *name) {
    for (int i = 0; name && i < SPRY_WFMT_COUNT; i++)
        if (!strcasecmp(name, k_wfmt[i].name))
            return i;
    return -1;
}

int64_t spry_wfmt_block(spry_wfmt fmt) { return wfmt_ok(fmt) ? k_wfmt[fmt].block : 0; }

size_t spry_wfmt_block_bytes(spry_wfmt fmt) { return wfmt_ok(fmt) ? k_wfmt[fmt].block_bytes : 0; }

size_t spry_wfmt_row_bytes(spry_wfmt fmt, int64_t K) {
    if (!wfmt_ok(fmt) || K <= 0 || K % k_wfmt[fmt].block)
        return 0;
    return (size_t)(K / k_wfmt[fmt].block) * k_wfmt[fmt].block_bytes;
}

int spry_wfmt_ggml_type(spry_wfmt fmt) { return wfmt_ok(fmt) ? k_wfmt[fmt].ggml_type : -1; }

int spry_wfmt_from_ggml_type(int t) {
    for (int i = 0; i < SPRY_WFMT_COUNT; i++)
        if (k_wfmt[i].ggml_type == t)
            return i;
    return -1;
}

// ------------------------------------------------------------------------------------------------
// Instruction sets

static int g_isa_cap = SPRY_QUANT_ISA_AUTO; // read and written atomically

// Best level per format on this CPU, computed once (CPUID is slow, in a VM a trap).
static int g_isa_best[SPRY_WFMT_COUNT];
static int g_isa_done;

static void isa_detect(void) {
    if (__atomic_load_n(&g_isa_done, __ATOMIC_ACQUIRE))
        return;
    spry_cpu_features f = spry_cpu_detect();
    bool f16c           = false;
#if QUANT_X86
    unsigned a, b, c, d;
    f16c = __get_cpuid(1, &a, &b, &c, &d) && ((c >> 29) & 1);
#endif
    bool avx2   = QUANT_X86 && f.avx2 && f.fma && f16c;
    bool avx512 = QUANT_X86 && f.avx512f && f.avx512bw && f16c;
    for (int i = 0; i < SPRY_WFMT_COUNT; i++) {
        bool q        = i == SPRY_WFMT_Q8_0 || i == SPRY_WFMT_Q4_0;
        g_isa_best[i] = avx512 && (!q || f.avx512vnni) ? SPRY_QUANT_ISA_AVX512
                        : avx2                         ? SPRY_QUANT_ISA_AVX2
                                                       : SPRY_QUANT_ISA_SCALAR;
    }
    __atomic_store_n(&g_isa_done, 1, __ATOMIC_RELEASE); // racing first calls store equal values
}

const char *spry_quant_isa_name(spry_quant_isa isa) {
    switch (isa) {
    case SPRY_QUANT_ISA_AUTO:
        return "auto";
    case SPRY_QUANT_ISA_SCALAR:
        return "scalar";
    case SPRY_QUANT_ISA_AVX2:
        return "avx2";
    case SPRY_QUANT_ISA_AVX512:
        return "avx512";
    }
    return "?";
}

bool spry_quant_isa_available(spry_quant_isa isa, spry_wfmt fmt) {
    if ((unsigned)isa > SPRY_QUANT_ISA_AVX512 || !wfmt_ok(fmt))
        return false;
    if (isa == SPRY_QUANT_ISA_AUTO || isa == SPRY_QUANT_ISA_SCALAR)
        return true;
    isa_detect();
    // AVX-512 machines have AVX2 too, and the avx2 kernels need nothing beyond it
    return (int)isa <= g_isa_best[fmt] ||
           (isa == SPRY_QUANT_ISA_AVX2 && g_isa_best[SPRY_WFMT_F32] >= SPRY_QUANT_ISA_AVX2);
}

bool spry_quant_set_isa(spry_quant_isa isa) {
    if ((unsigned)isa > SPRY_QUANT_ISA_AVX512)
        return false;
    bool any = false;
    for (int f = 0; f < SPRY_WFMT_COUNT; f++)
        any |= spry_quant_isa_available(isa, (spry_wfmt)f);
    if (!any)
        return false;
    __atomic_store_n(&g_isa_cap, (int)isa, __ATOMIC_RELEASE);
    return true;
}

spry_quant_isa spry_quant_isa_used(spry_wfmt fmt) {
    if (!wfmt_ok(fmt))
        return SPRY_QUANT_ISA_SCALAR;
    int cap = __atomic_load_n(&g_isa_cap, __ATOMIC_ACQUIRE);
    if (cap == SPRY_QUANT_ISA_AUTO)
        cap = SPRY_QUANT_ISA_AVX512;
    for (int isa = cap; isa > SPRY_QUANT_ISA_SCALAR; isa--)
        if (spry_quant_isa_available((spry_quant_isa)isa, fmt))
            return (spry_quant_isa)isa;
    return SPRY_QUANT_ISA_SCALAR;
}

// ------------------------------------------------------------------------------------------------
// Q8_0: d = amax / 127, q = roundf(x * (1/d))

// Scalar reference, ggml's operation order. |x * id| <= 127 * (1 + 2^-22) for finite x, so the
// range test only keeps NaN (from non-finite input) away from the int conversion.
static void quantize_q8_0_scalar(const float *x, spry_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SPRY_QK8_0;
        float amax      = 0.0f; // max |x| of the block
        for (int j = 0; j < SPRY_QK8_0; j++) {
            float a = fabsf(xb[j]);
            amax    = amax > a ? amax : a;
        }
        const float d  = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d         = spry_f32_to_f16(d);
        for (int j = 0; j < SPRY_QK8_0; j++) {
            float r    = roundf(xb[j] * id);
            y[i].qs[j] = (int8_t)(r > -128.0f && r < 128.0f ? r : 0.0f);
        }
    }
}

#if QUANT_X86
// roundf on 16 lanes: t = trunc(p), then one step away from zero when |p - t| >= 0.5 (p - t is
// exact, so halves are found exactly). Values are integers in [-127, 127] afterwards.
__attribute__((target("avx512f"))) static inline __m512 round_away_avx512(__m512 p) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 t         = _mm512_roundscale_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m512 r         = _mm512_sub_ps(p, t);
    __mmask16 up     = _mm512_cmp_ps_mask(r, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    __mmask16 dn     = _mm512_cmp_ps_mask(r, _mm512_set1_ps(-0.5f), _CMP_LE_OQ);
    t                = _mm512_mask_add_ps(t, up, t, one);
    return _mm512_mask_sub_ps(t, dn, t, one);
}

__attribute__((target("avx512f,f16c"))) static void
quantize_q8_0_avx512(const float *x, spry_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        __m512 v0 = _mm512_loadu_ps(x + i * SPRY_QK8_0);
        __m512 v1 = _mm512_loadu_ps(x + i * SPRY_QK8_0 + 16);
        // max is exact and order-free, so the reduction order does not matter
        float amax     = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d  = amax / 127;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d         = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT); // spry_f32_to_f16's bits
        __m512 p0      = _mm512_mul_ps(v0, _mm512_set1_ps(id));
        __m512 p1      = _mm512_mul_ps(v1, _mm512_set1_ps(id));
        FP_OPAQUE_VEC(p0);
        FP_OPAQUE_VEC(p1);
        __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(round_away_avx512(p0)));
        __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(round_away_avx512(p1)));
        _mm_storeu_si128((__m128i *)y[i].qs, q0);
        _mm_storeu_si128((__m128i *)(y[i].qs + 16), q1);
    }
}

__attribute__((target("avx2,fma"))) static inline __m256 round_away_avx2(__m256 p) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 t         = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 r         = _mm256_sub_ps(p, t);
    __m256 up        = _mm256_and_ps(_mm256_cmp_ps(r, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one);
    __m256 dn        = _mm256_and_ps(_mm256_cmp_ps(r, _mm256_set1_ps(-0.5f), _CMP_LE_OQ), one);
    return _mm256_sub_ps(_mm256_add_ps(t, up), dn);
}

__attribute__((target("avx2,fma"))) static void quantize_q8_0_avx2(const float *x,
                                                                   spry_block_q8_0 *y, int64_t nb) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 vzero   = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256 v[4], m = vzero;
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + i * SPRY_QK8_0 + 8 * k);
            m    = _mm256_max_ps(m, _mm256_and_ps(v[k], absmask));
        }
        __m128 h         = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h                = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h                = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float d    = amax / 127;
        const float id   = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d           = spry_f32_to_f16(d);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 p = _mm256_mul_ps(v[k], _mm256_set1_ps(id));
            FP_OPAQUE_VEC(p);
            q[k] = _mm256_cvttps_epi32(round_away_avx2(p));
        }
        // int32 -> int8 with saturation; the packs interleave 128-bit lanes, the permute undoes it
        __m256i q01 = _mm256_packs_epi32(q[0], q[1]);
        __m256i q23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i b   = _mm256_packs_epi16(q01, q23);
        b           = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, b);
    }
}
#endif

// The best bit-exact Q8_0 quantizer allowed now (all give the same bytes on finite input).
static void quantize_q8_0_blocks(const float *x, spry_block_q8_0 *y, int64_t nb) {
#if QUANT_X86
    // the avx512 quantizer needs only AVX-512F, which every format's avx512 level includes
    switch (spry_quant_isa_used(SPRY_WFMT_F32)) {
    case SPRY_QUANT_ISA_AVX512:
        quantize_q8_0_avx512(x, y, nb);
        return;
    case SPRY_QUANT_ISA_AVX2:
        quantize_q8_0_avx2(x, y, nb);
        return;
    default:
        break;
    }
#endif
    quantize_q8_0_scalar(x, y, nb);
}

// ------------------------------------------------------------------------------------------------
// Q4_0: m = value of largest |x| (first on ties), d = m / -8, q = min(15, (int8)(x * (1/d) + 8.5))

static void quantize_q4_0_scalar(const float *x, spry_block_q4_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float *xb = x + i * SPRY_QK4_0;
        float amax = 0.0f, max = 0.0f; // largest |x| and the signed value that has it
        for (int j = 0; j < SPRY_QK4_0; j++) {
            if (amax < fabsf(xb[j])) {
                amax = fabsf(xb[j]);
                max  = xb[j];
            }
        }
        const float d  = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d         = spry_f32_to_f16(d);
        for (int j = 0; j < SPRY_QK4_0 / 2; j++) {
            float x0 = xb[j] * id, x1 = xb[j + SPRY_QK4_0 / 2] * id;
            FP_OPAQUE(x0);
            FP_OPAQUE(x1);
            // x * id lies in [-8 - eps, 8 + eps] for finite input, so v in (0, 16.5]: the
            // truncation is ggml's (int8_t) cast, min(15, .) its MIN; NaN maps to 0
            float v0 = x0 + 8.5f, v1 = x1 + 8.5f;
            uint8_t q0 = v0 >= 15.0f ? 15 : (v0 > 0.0f ? (uint8_t)v0 : 0);
            uint8_t q1 = v1 >= 15.0f ? 15 : (v1 > 0.0f ? (uint8_t)v1 : 0);
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Public quantize / dequantize

static spry_status check_n(const char *fn, const void *a, const void *b, int64_t n) {
    if (!a || !b)
        return spry_errorf(SPRY_ERR_ARG, "%s: NULL pointer", fn);
    if (n <= 0 || n % 32)
        return spry_errorf(SPRY_ERR_ARG, "%s: n=%lld must be a positive multiple of 32", fn,
                           (long long)n);
    return SPRY_OK;
}

spry_status spry_quantize_q8_0(const float *x, void *out, int64_t n) {
    SPRY_TRY(check_n("spry_quantize_q8_0", x, out, n));
    quantize_q8_0_blocks(x, out, n / SPRY_QK8_0);
    return SPRY_OK;
}

spry_status spry_quantize_q4_0(const float *x, void *out, int64_t n) {
    SPRY_TRY(check_n("spry_quantize_q4_0", x, out, n));
    quantize_q4_0_scalar(x, out, n / SPRY_QK4_0);
    return SPRY_OK;
}

spry_status spry_dequantize_q8_0(const void *in, float *y, int64_t n) {
    SPRY_TRY(check_n("spry_dequantize_q8_0", in, y, n));
    const spry_block_q8_0 *b = in;
    for (int64_t i = 0; i < n / SPRY_QK8_0; i++) {
        const float d = spry_f16_to_f32(b[i].d);
        for (int j = 0; j < SPRY_QK8_0; j++)
            y[i * SPRY_QK8_0 + j] = b[i].qs[j] * d;
    }
    return SPRY_OK;
}

spry_status spry_dequantize_q4_0(const void *in, float *y, int64_t n) {
    SPRY_TRY(check_n("spry_dequantize_q4_0", in, y, n));
    const spry_block_q4_0 *b = in;
    for (int64_t i = 0; i < n / SPRY_QK4_0; i++) {
        const float d = spry_f16_to_f32(b[i].d);
        for (int j = 0; j < SPRY_QK4_0 / 2; j++) {
            y[i * SPRY_QK4_0 + j]                  = ((b[i].qs[j] & 0x0F) - 8) * d;
            y[i * SPRY_QK4_0 + j + SPRY_QK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
    return SPRY_OK;
}

// ------------------------------------------------------------------------------------------------
// Row conversions

static spry_status check_rows(const char *fn, spry_wfmt fmt, const void *a, const void *b,
                              int64_t n_rows, int64_t K) {
    if (!wfmt_ok(fmt))
        return spry_errorf(SPRY_ERR_ARG, "%s: bad weight format %d", fn, (int)fmt);
    if (!a || !b)
        return spry_errorf(SPRY_ERR_ARG, "%s: NULL pointer", fn);
    if (n_rows < 0 || spry_wfmt_row_bytes(fmt, K) == 0)
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: n_rows=%lld K=%lld: need n_rows >= 0 and K > 0 a multiple of %lld "
                           "for %s",
                           fn, (long long)n_rows, (long long)K, (long long)k_wfmt[fmt].block,
                           k_wfmt[fmt].name);
    return SPRY_OK;
}

spry_status spry_quantize_rows(spry_wfmt fmt, const float *x, void *out, int64_t n_rows, int64_t K,
                               int n_threads) {
    SPRY_TRY(check_rows("spry_quantize_rows", fmt, x, out, n_rows, K));
    const size_t rb = spry_wfmt_row_bytes(fmt, K);
    int nt          = n_threads > 0 ? n_threads : omp_get_max_threads();
    if ((size_t)n_rows * rb < (1u << 16))
        nt = 1;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * K;
        uint8_t *o      = (uint8_t *)out + (size_t)r * rb;
        switch (fmt) {
        case SPRY_WFMT_F32:
            memcpy(o, xr, rb);
            break;
        case SPRY_WFMT_BF16:
            spry_convert_f32_to_bf16(xr, (uint16_t *)o, K);
            break;
        case SPRY_WFMT_F16:
            for (int64_t k = 0; k < K; k++)
                ((uint16_t *)o)[k] = spry_f32_to_f16(xr[k]);
            break;
        case SPRY_WFMT_Q8_0:
            quantize_q8_0_blocks(xr, (spry_block_q8_0 *)o, K / SPRY_QK8_0);
            break;
        case SPRY_WFMT_Q4_0:
            quantize_q4_0_scalar(xr, (spry_block_q4_0 *)o, K / SPRY_QK4_0);
            break;
        default:
            break;
        }
    }
    return SPRY_OK;
}

spry_status spry_dequantize_rows(spry_wfmt fmt, const void *w, float *y, int64_t n_rows,
                                 int64_t K) {
    SPRY_TRY(check_rows("spry_dequantize_rows", fmt, w, y, n_rows, K));
    const size_t rb = spry_wfmt_row_bytes(fmt, K);
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *wr = (const uint8_t *)w + (size_t)r * rb;
        float *yr         = y + r * K;
        switch (fmt) {
        case SPRY_WFMT_F32:
            memcpy(yr, wr, rb);
            break;
        case SPRY_WFMT_BF16:
            spry_convert_bf16_to_f32((const uint16_t *)wr, yr, K);
            break;
        case SPRY_WFMT_F16:
            for (int64_t k = 0; k < K; k++)
                yr[k] = spry_f16_to_f32(((const uint16_t *)wr)[k]);
            break;
        case SPRY_WFMT_Q8_0:
            spry_dequantize_q8_0(wr, yr, K);
            break;
        case SPRY_WFMT_Q4_0:
            spry_dequantize_q4_0(wr, yr, K);
            break;
        default:
            break;
        }
    }
    return SPRY_OK;
}
