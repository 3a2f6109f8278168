/*
 * dtype.c -- the dtype traits table and conversions (see dtype.h).
 *
 * f16 conversion follows IEEE 754 binary16 with round-to-nearest-even; bf16 keeps the top 16
 * bits of an f32 with round-to-nearest-even. Bulk loops are compiled for AVX-512 and a portable
 * target and chosen at load time (target_clones), so one binary runs everywhere.
 */
#include "spry/dtype.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "spry/cpu.h"
#include "spry/status.h"

static const spry_dtype_traits k_traits[SPRY_DTYPE_COUNT] = {
    [SPRY_DTYPE_F32]  = {.name = "f32", .st_name = "F32", .block_size = 4, .block = 1, .is_float = 1},
    [SPRY_DTYPE_BF16] = {.name = "bf16", .st_name = "BF16", .block_size = 2, .block = 1, .is_float = 1},
    [SPRY_DTYPE_F16]  = {.name = "f16", .st_name = "F16", .block_size = 2, .block = 1, .is_float = 1},
    [SPRY_DTYPE_F64]  = {.name = "f64", .st_name = "F64", .block_size = 8, .block = 1, .is_float = 1},
    [SPRY_DTYPE_I32]  = {.name = "i32", .st_name = "I32", .block_size = 4, .block = 1},
    [SPRY_DTYPE_I64]  = {.name = "i64", .st_name = "I64", .block_size = 8, .block = 1},
    [SPRY_DTYPE_I8]   = {.name = "i8", .st_name = "I8", .block_size = 1, .block = 1},
    [SPRY_DTYPE_U8]   = {.name = "u8", .st_name = "U8", .block_size = 1, .block = 1},
};
_Static_assert(sizeof k_traits / sizeof k_traits[0] == SPRY_DTYPE_COUNT, "dtype table size");

const spry_dtype_traits *spry_dtype_info(spry_dtype dt) {
    SPRY_ASSERT((unsigned)dt < SPRY_DTYPE_COUNT, "bad dtype %d", (int)dt);
    return &k_traits[dt];
}

size_t spry_dtype_nbytes(spry_dtype dt, int64_t n) {
    const spry_dtype_traits *t = spry_dtype_info(dt);
    return (size_t)(n / t->block) * t->block_size;
}

int spry_dtype_from_st_name(const char *name) {
    for (int i = 0; i < SPRY_DTYPE_COUNT; i++)
        if (name && !strcmp(k_traits[i].st_name, name)) return i;
    return -1;
}

float spry_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t man  = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: renormalize
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v = {.u = bits};
    return v.f;
}

uint16_t spry_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t a    = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); // NaN
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // overflow to inf (after rounding)
    if (a < 0x38800000u) { // subnormal or zero in f16
        if (a < 0x33000000u) return (uint16_t)sign;          // rounds to zero
        uint32_t e     = a >> 23;
        uint32_t m     = (a & 0x7fffffu) | 0x800000u;
        int      shift = 126 - (int)e; // value = m * 2^(e-150) = r * 2^-24
        uint32_t r     = m >> shift;
        uint32_t rem   = m & ((1u << shift) - 1);
        uint32_t half  = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r   = a - 0x38000000u; // rebias exponent 127 -> 15
    uint32_t out = r >> 13;
    uint32_t rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) out++;
    return (uint16_t)(sign | out);
}

// The multiversioned loops are static: clang names the clones of exported functions
// differently from gcc, so the public entry points are plain wrappers.
__attribute__((target_clones("avx512f", "default")))
static void f32_to_bf16_loop(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = spry_f32_to_bf16(x[i]);
}

__attribute__((target_clones("avx512f", "default")))
static void bf16_to_f32_loop(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = spry_bf16_to_f32(x[i]);
}

void spry_convert_f32_to_bf16(const float *x, uint16_t *y, int64_t n) { f32_to_bf16_loop(x, y, n); }
void spry_convert_bf16_to_f32(const uint16_t *x, float *y, int64_t n) { bf16_to_f32_loop(x, y, n); }

#if defined(__x86_64__)
// F16C's conversion with round-to-nearest-even (the same bits as spry_f32_to_f16 but for NaN
// payloads), 16 lanes at a time.
__attribute__((target("avx512f,avx512bw"))) static void f32_to_f16_avx512(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m256i   h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm512_mask_storeu_epi16(y + i, (__mmask32)m, _mm512_castsi256_si512(h));
    }
}
#endif

void spry_convert_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
#if defined(__x86_64__)
    spry_cpu_features f = spry_cpu_detect();
    if (f.avx512f && f.avx512bw) {
        f32_to_f16_avx512(x, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = spry_f32_to_f16(x[i]);
}

void spry_round_f16(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = spry_f16_to_f32(spry_f32_to_f16(x[i]));
}
