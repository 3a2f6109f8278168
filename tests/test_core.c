// ctest-label: unit
/*
 * test_core.c -- the core helpers: dtypes and conversions, the Philox RNG, tensor shape helpers,
 * the parameter store, status codes and the thread-local error message.
 *
 *   bf16: round to nearest even (ties both ways, both signs), overflow to inf, inf, NaN (quiet
 *         or signaling stays NaN), ~1M f32 bit patterns against a double-precision reference,
 *         every bf16 pattern round-trips, the bulk conversions equal the scalar ones;
 *   f16:  all 65536 patterns decode to the exact value (normals, subnormals, inf, NaN) and
 *         re-encode to themselves (NaN to a NaN); encoding of ties, subnormals, underflow,
 *         overflow, and ~1M f32 bit patterns against a nearest-even reference;
 *   rng:  Philox-4x32-10 known-answer vectors (Random123), purity, distinct streams/keys,
 *         uniform in [0, 1) with mean/variance, normal mean/std over 1e6 samples, fill helpers
 *         (and fill_normal bit-identical with 1 and 2 threads);
 *   tensor: set_shape strides, numel, nbytes, is_contiguous, same_shape, shape_str (incl.
 *         truncation), set_name truncation, arena constructors;
 *   params: add/alloc/at/find/index, flags, 64-byte alignment of every value and grad, disjoint
 *         ranges, zero_grad, set_frozen;
 *   status: spry_status_name, spry_errorf/spry_last_error (truncation, per thread).
 */
#define _POSIX_C_SOURCE 200809L
#include <float.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "check.h"
#include "spry/fs.h"
#include "spry/dtype.h"
#include "spry/params.h"
#include "spry/rng.h"
#include "spry/status.h"
#include "spry/tensor.h"

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- bf16 ------------------------------------------------------------------------------- */

// Value of bf16 bits as a double; pattern 0x7f80 above 0x7f7f counts as 2^128 (the next step).
static double bf16_val(uint32_t h) {
    if ((h & 0x7fffu) == 0x7f80u) return (h & 0x8000u) ? -ldexp(1, 128) : ldexp(1, 128);
    return (double)spry_bf16_to_f32((uint16_t)h);
}

// Nearest-even bf16 of a finite f32, computed from distances in double.
static uint16_t bf16_ref(float f) {
    uint32_t u  = u_of(f);
    uint32_t lo = u >> 16, hi = lo + 1; // |lo| <= |f| < |hi|, same sign
    double   x = f, dl = fabs(x - bf16_val(lo)), dh = fabs(x - bf16_val(hi));
    if (dl < dh) return (uint16_t)lo;
    if (dh < dl) return (uint16_t)hi;
    return (uint16_t)((lo & 1u) ? hi : lo);
}

static void test_bf16(void) {
    CHECK(spry_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(spry_f32_to_bf16(-2.0f) == 0xc000);
    CHECK(spry_f32_to_bf16(0.0f) == 0x0000);
    CHECK(spry_f32_to_bf16(-0.0f) == 0x8000);
    // ties go to even, both signs
    CHECK(spry_f32_to_bf16(f_of(0x3f808000u)) == 0x3f80);
    CHECK(spry_f32_to_bf16(f_of(0x3f818000u)) == 0x3f82);
    CHECK(spry_f32_to_bf16(f_of(0xbf808000u)) == 0xbf80);
    CHECK(spry_f32_to_bf16(f_of(0xbf818000u)) == 0xbf82);
    CHECK(spry_f32_to_bf16(f_of(0x3f808001u)) == 0x3f81); // just above half
    CHECK(spry_f32_to_bf16(f_of(0x3f807fffu)) == 0x3f80); // just below half
    CHECK(spry_f32_to_bf16(f_of(0x3f80ffffu)) == 0x3f81);
    CHECK(spry_f32_to_bf16(f_of(0x3fffffffu)) == 0x4000); // carry into the exponent
    CHECK(spry_f32_to_bf16(f_of(0x00008000u)) == 0x0000); // subnormal tie to even (0)
    CHECK(spry_f32_to_bf16(f_of(0x00018000u)) == 0x0002);
    // inf, overflow, NaN
    CHECK(spry_f32_to_bf16(INFINITY) == 0x7f80);
    CHECK(spry_f32_to_bf16(-INFINITY) == 0xff80);
    CHECK(spry_f32_to_bf16(FLT_MAX) == 0x7f80);  // rounds past the largest bf16
    CHECK(spry_f32_to_bf16(-FLT_MAX) == 0xff80);
    CHECK(spry_f32_to_bf16(f_of(0x7f7f7fffu)) == 0x7f7f);
    const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu,
                             0x7f80ffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t h = spry_f32_to_bf16(f_of(nans[i]));
        CHECK_MSG(isnan(spry_bf16_to_f32(h)) && (h & 0x8000u) == ((nans[i] >> 16) & 0x8000u),
                  "NaN 0x%08x -> 0x%04x", nans[i], h);
    }
    CHECK(isinf(spry_bf16_to_f32(0x7f80)) && spry_bf16_to_f32(0xff80) < 0);
    // every bf16 pattern widens exactly and comes back (NaNs stay NaN)
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = spry_bf16_to_f32((uint16_t)h);
        if (u_of(f) != h << 16) bad++;
        uint16_t back = spry_f32_to_bf16(f);
        bool     nan  = (h & 0x7fffu) > 0x7f80u;
        if (nan ? !isnan(spry_bf16_to_f32(back)) : back != h) bad++;
    }
    CHECK_MSG(bad == 0, "%d bf16 round-trip failures", bad);
    // ~1M f32 patterns (a stride through all 2^32) against the reference; bulk == scalar
    enum { N = 1 << 20 };
    float    *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint16_t *h = malloc(N * sizeof *h);
    bad         = 0;
    int64_t n   = 0;
    for (uint64_t u = 12345; u < ((uint64_t)1 << 32) && n < N; u += 4099) {
        float f = f_of((uint32_t)u);
        if (!isfinite(f)) continue;
        x[n++] = f;
        if (spry_f32_to_bf16(f) != bf16_ref(f)) {
            if (bad++ < 5)
                fprintf(stderr, "bf16(0x%08x) = 0x%04x, expected 0x%04x\n", (uint32_t)u,
                        spry_f32_to_bf16(f), bf16_ref(f));
        }
    }
    CHECK_MSG(bad == 0, "%d of %lld f32 -> bf16 conversions differ from the reference", bad,
              (long long)n);
    spry_convert_f32_to_bf16(x, h, n);
    spry_convert_bf16_to_f32(h, y, n);
    int bulk_bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (h[i] != spry_f32_to_bf16(x[i]) || u_of(y[i]) != (uint32_t)h[i] << 16) bulk_bad++;
    CHECK_MSG(bulk_bad == 0, "%d bulk bf16 conversions differ from the scalar ones", bulk_bad);
    printf("bf16: %lld sampled f32 patterns, all 65536 bf16 patterns: ok\n", (long long)n);
    free(x), free(y), free(h);
}

/* ---- f16 -------------------------------------------------------------------------------- */

// Exact value of f16 bits (finite; 0x7c00 counts as 65536, the next step after 65504).
static double f16_val(uint32_t h) {
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    double   v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, (int)e - 25);
    return (h & 0x8000u) ? -v : v;
}

// Nearest-even f16 of a finite f32 (overflow to inf as IEEE 754 specifies).
static uint16_t f16_ref(float f) {
    uint32_t sign = (u_of(f) >> 16) & 0x8000u;
    double   a    = fabs((double)f);
    if (a >= 65520.0) return (uint16_t)(sign | 0x7c00u);
    uint32_t lo = 0, hi = 0x7c00u; // largest lo with f16_val(lo) <= a
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (f16_val(mid) <= a) lo = mid;
        else hi = mid;
    }
    double dl = a - f16_val(lo), dh = f16_val(lo + 1) - a;
    uint32_t r = dl < dh ? lo : dh < dl ? lo + 1 : (lo & 1u) ? lo + 1 : lo;
    return (uint16_t)(sign | r);
}

static void test_f16(void) {
    // decode every pattern
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float    f   = spry_f16_to_f32((uint16_t)h);
        uint32_t e   = (h >> 10) & 0x1fu, m = h & 0x3ffu;
        bool     neg = h & 0x8000u;
        if (e == 31) {
            if (m == 0 ? !(isinf(f) && (f < 0) == neg) : !isnan(f)) bad++;
            uint16_t back = spry_f32_to_f16(f);
            if (m == 0 ? back != h : !((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu))) bad++;
            continue;
        }
        if ((double)f != f16_val(h) || (signbit(f) != 0) != neg) {
            if (bad++ < 5) fprintf(stderr, "f16 0x%04x -> %.9g, expected %.9g\n", h, (double)f, f16_val(h));
        }
        if (spry_f32_to_f16(f) != h) {
            if (bad++ < 5) fprintf(stderr, "f16 0x%04x -> %.9g -> 0x%04x\n", h, (double)f, spry_f32_to_f16(f));
        }
    }
    CHECK_MSG(bad == 0, "%d f16 decode/round-trip failures", bad);
    // encoding: normals, ties, subnormals, underflow, overflow
    CHECK(spry_f32_to_f16(1.0f) == 0x3c00);
    CHECK(spry_f32_to_f16(-2.0f) == 0xc000);
    CHECK(spry_f32_to_f16(0.0f) == 0x0000 && spry_f32_to_f16(-0.0f) == 0x8000);
    CHECK(spry_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);          // tie -> even
    CHECK(spry_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);      // tie -> even (up)
    CHECK(spry_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
    CHECK(spry_f32_to_f16(0x1p-14f) == 0x0400);                 // smallest normal
    CHECK(spry_f32_to_f16(0x1p-24f) == 0x0001);                 // smallest subnormal
    CHECK(spry_f32_to_f16(0x1p-25f) == 0x0000);                 // tie -> even (0)
    CHECK(spry_f32_to_f16(0x1p-25f * 1.0000001f) == 0x0001);    // just above the tie
    CHECK(spry_f32_to_f16(1.5f * 0x1p-24f) == 0x0002);          // subnormal tie -> even
    CHECK(spry_f32_to_f16(2.5f * 0x1p-24f) == 0x0002);
    CHECK(spry_f32_to_f16(-3.0f * 0x1p-24f) == 0x8003);
    CHECK(spry_f32_to_f16((1023.5f + 0.25f) * 0x1p-24f) == 0x0400); // subnormal rounds to normal
    CHECK(spry_f32_to_f16(0x1p-26f) == 0x0000);
    CHECK(spry_f32_to_f16(FLT_MIN) == 0x0000);
    CHECK(spry_f32_to_f16(-FLT_MIN) == 0x8000);
    CHECK(spry_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(spry_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(spry_f32_to_f16(65520.0f) == 0x7c00);                 // tie past the max -> inf
    CHECK(spry_f32_to_f16(1e10f) == 0x7c00 && spry_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(spry_f32_to_f16(INFINITY) == 0x7c00 && spry_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK(isnan(spry_f16_to_f32(spry_f32_to_f16(NAN))));
    CHECK(isnan(spry_f16_to_f32(spry_f32_to_f16(f_of(0x7f800001u)))));
    // ~1M sampled f32 patterns against the reference
    bad       = 0;
    int64_t n = 0;
    for (uint64_t u = 777; u < ((uint64_t)1 << 32); u += 4099) {
        float f = f_of((uint32_t)u);
        if (!isfinite(f)) continue;
        n++;
        if (spry_f32_to_f16(f) != f16_ref(f)) {
            if (bad++ < 5)
                fprintf(stderr, "f16(0x%08x = %.9g) = 0x%04x, expected 0x%04x\n", (uint32_t)u,
                        (double)f, spry_f32_to_f16(f), f16_ref(f));
        }
    }
    // and densely around the subnormal/normal boundary and the overflow threshold
    for (uint32_t u = 0x33000000u - 64; u < 0x38800000u + 4096; u += 61) {
        n++;
        if (spry_f32_to_f16(f_of(u)) != f16_ref(f_of(u)) && bad++ < 5)
            fprintf(stderr, "f16(0x%08x) = 0x%04x, expected 0x%04x\n", u, spry_f32_to_f16(f_of(u)),
                    f16_ref(f_of(u)));
    }
    for (uint32_t u = 0x477fe000u; u < 0x47800100u; u++) {
        n++;
        if (spry_f32_to_f16(f_of(u)) != f16_ref(f_of(u)) && bad++ < 5)
            fprintf(stderr, "f16(0x%08x) = 0x%04x, expected 0x%04x\n", u, spry_f32_to_f16(f_of(u)),
                    f16_ref(f_of(u)));
    }
    CHECK_MSG(bad == 0, "%d of %lld f32 -> f16 conversions differ from the reference", bad,
              (long long)n);
    printf("f16: all 65536 patterns, %lld f32 patterns: ok\n", (long long)n);
}

static void test_dtype_table(void) {
    CHECK(!strcmp(spry_dtype_info(SPRY_DTYPE_F32)->name, "f32"));
    CHECK(!strcmp(spry_dtype_info(SPRY_DTYPE_BF16)->st_name, "BF16"));
    CHECK(spry_dtype_info(SPRY_DTYPE_F16)->block_size == 2);
    CHECK(spry_dtype_info(SPRY_DTYPE_F64)->block_size == 8 && spry_dtype_info(SPRY_DTYPE_F64)->is_float);
    CHECK(!spry_dtype_info(SPRY_DTYPE_I32)->is_float);
    for (int d = 0; d < SPRY_DTYPE_COUNT; d++) {
        const spry_dtype_traits *t = spry_dtype_info((spry_dtype)d);
        CHECK(t->name && t->st_name && t->block >= 1 && t->block_size >= 1);
        CHECK(spry_dtype_from_st_name(t->st_name) == d);
    }
    CHECK(spry_dtype_from_st_name("F8_E4M3") == -1);
    CHECK(spry_dtype_from_st_name("f32") == -1); // names are case-sensitive
    CHECK(spry_dtype_from_st_name(NULL) == -1);
    CHECK(spry_dtype_nbytes(SPRY_DTYPE_F32, 10) == 40);
    CHECK(spry_dtype_nbytes(SPRY_DTYPE_BF16, 10) == 20);
    CHECK(spry_dtype_nbytes(SPRY_DTYPE_I64, 3) == 24);
    CHECK(spry_dtype_nbytes(SPRY_DTYPE_U8, 0) == 0);
}

/* ---- rng -------------------------------------------------------------------------------- */

static void test_rng(void) {
    // Random123 known-answer vectors for Philox-4x32-10: counter {c0, c1, c2, c3}, key {k0, k1}
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t r[4];
        uint64_t lo = (uint64_t)kat[i].ctr[1] << 32 | kat[i].ctr[0];
        uint64_t hi = (uint64_t)kat[i].ctr[3] << 32 | kat[i].ctr[2];
        uint64_t k  = (uint64_t)kat[i].key[1] << 32 | kat[i].key[0];
        spry_philox(k, hi, lo, r);
        CHECK_MSG(!memcmp(r, kat[i].out, sizeof r), "philox KAT %zu: %08x %08x %08x %08x", i, r[0],
                  r[1], r[2], r[3]);
    }
    // pure functions
    uint32_t a[4], b[4];
    spry_philox(1, 2, 3, a);
    spry_philox(9, 9, 9, b);
    spry_philox(1, 2, 3, b);
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(u_of(spry_rng_uniform(5, 6, 7)) == u_of(spry_rng_uniform(5, 6, 7)));
    CHECK(u_of(spry_rng_normal(5, 6, 7)) == u_of(spry_rng_normal(5, 6, 7)));
    // uniform and normal statistics over 1e6 samples; distinct streams and keys
    enum { N = 1000000 };
    double su = 0, su2 = 0, sn = 0, sn2 = 0, umin = 1, umax = 0;
    int    same_stream = 0, same_key = 0, tail = 0;
    for (int64_t i = 0; i < N; i++) {
        double u = spry_rng_uniform(11, 0, (uint64_t)i), z = spry_rng_normal(11, 0, (uint64_t)i);
        su += u, su2 += u * u, sn += z, sn2 += z * z;
        umin = fmin(umin, u), umax = fmax(umax, u);
        if (fabs(z) > 3) tail++;
        if (i < 10000) {
            same_stream += u == spry_rng_uniform(11, 1, (uint64_t)i);
            same_key += u == spry_rng_uniform(12, 0, (uint64_t)i);
        }
    }
    double mu = su / N, vu = su2 / N - mu * mu, mn = sn / N, sdn = sqrt(sn2 / N - mn * mn);
    CHECK_MSG(umin >= 0.0 && umax < 1.0, "uniform range [%g, %g]", umin, umax);
    CHECK_MSG(fabs(mu - 0.5) < 2e-3, "uniform mean %.5f", mu);       // sigma 2.9e-4
    CHECK_MSG(fabs(vu - 1.0 / 12) < 1e-3, "uniform variance %.5f", vu); // sigma 7.5e-5
    CHECK_MSG(fabs(mn) < 5e-3, "normal mean %.5f", mn);              // sigma 1e-3
    CHECK_MSG(fabs(sdn - 1.0) < 5e-3, "normal std %.5f", sdn);       // sigma 7e-4
    CHECK_MSG(fabs(tail / (double)N - 0.0027) < 4e-4, "normal |z| > 3: %.5f", tail / (double)N);
    // 24-bit uniforms collide with probability 2^-24 per pair
    CHECK_MSG(same_stream < 3 && same_key < 3, "streams %d / keys %d equal values", same_stream,
              same_key);
    printf("rng: uniform mean %.5f var %.5f, normal mean %.5f std %.5f\n", mu, vu, mn, sdn);
    // fill helpers: x[i] = f(key, stream, i), independent of the thread count
    enum { M = 100003 };
    float *x = malloc(M * sizeof *x), *y = malloc(M * sizeof *y);
    spry_rng_fill_uniform(x, M, 3, 4, -2.0f, 6.0f);
    int bad = 0;
    for (int64_t i = 0; i < M; i++)
        bad += x[i] != -2.0f + 8.0f * spry_rng_uniform(3, 4, (uint64_t)i) || x[i] < -2.0f || x[i] >= 6.0f;
    CHECK_MSG(bad == 0, "%d fill_uniform mismatches", bad);
    omp_set_num_threads(1);
    spry_rng_fill_normal(x, M, 3, 4, 1.0f, 0.5f);
    omp_set_num_threads(2);
    spry_rng_fill_normal(y, M, 3, 4, 1.0f, 0.5f);
    CHECK(!memcmp(x, y, M * sizeof *x));
    bad = 0;
    for (int64_t i = 0; i < M; i++) bad += x[i] != 1.0f + 0.5f * spry_rng_normal(3, 4, (uint64_t)i);
    CHECK_MSG(bad == 0, "%d fill_normal mismatches", bad);
    // a fill at an offset reproduces the tail of a longer one: no hidden state
    spry_rng_fill_normal(y, M - 1, 3, 4, 1.0f, 0.5f);
    CHECK(!memcmp(x, y, (M - 1) * sizeof *x));
    free(x), free(y);
}

/* ---- tensors ---------------------------------------------------------------------------- */

static void test_tensor(void) {
    spry_tensor t;
    memset(&t, 0, sizeof t);
    spry_tensor_set_shape(&t, SPRY_DTYPE_F32, 3, SPRY_SHAPE(2, 3, 4));
    CHECK(t.ndim == 3 && t.dtype == SPRY_DTYPE_F32);
    CHECK(t.stride[0] == 48 && t.stride[1] == 16 && t.stride[2] == 4);
    CHECK(t.shape[3] == 1 && t.stride[3] == 0);
    CHECK(spry_tensor_numel(&t) == 24 && spry_tensor_nbytes(&t) == 96);
    CHECK(spry_tensor_is_contiguous(&t));
    char buf[64];
    CHECK(!strcmp(spry_tensor_shape_str(&t, buf, sizeof buf), "(2, 3, 4)"));
    // a transposed view is not contiguous; a size-1 dim's stride does not matter
    spry_tensor v = t;
    v.shape[1] = 4, v.shape[2] = 3, v.stride[1] = 4, v.stride[2] = 16;
    CHECK(!spry_tensor_is_contiguous(&v));
    CHECK(!spry_tensor_same_shape(&t, &v));
    spry_tensor_set_shape(&v, SPRY_DTYPE_F32, 3, SPRY_SHAPE(2, 1, 4));
    v.stride[1] = 12345;
    CHECK(spry_tensor_is_contiguous(&v));
    v = t;
    v.stride[0] = 64; // padded rows
    CHECK(!spry_tensor_is_contiguous(&v) && spry_tensor_same_shape(&t, &v));
    // other dtypes: byte strides
    spry_tensor_set_shape(&v, SPRY_DTYPE_BF16, 2, SPRY_SHAPE(5, 7));
    CHECK(v.stride[0] == 14 && v.stride[1] == 2 && spry_tensor_nbytes(&v) == 70);
    spry_tensor_set_shape(&v, SPRY_DTYPE_F64, 1, SPRY_SHAPE(3));
    CHECK(v.stride[0] == 8 && spry_tensor_nbytes(&v) == 24);
    // scalars and empty tensors
    spry_tensor_set_shape(&v, SPRY_DTYPE_F32, 0, NULL);
    CHECK(spry_tensor_numel(&v) == 1 && spry_tensor_is_contiguous(&v));
    CHECK(!strcmp(spry_tensor_shape_str(&v, buf, sizeof buf), "()"));
    spry_tensor_set_shape(&v, SPRY_DTYPE_F32, 2, SPRY_SHAPE(0, 5));
    CHECK(spry_tensor_numel(&v) == 0 && spry_tensor_nbytes(&v) == 0);
    CHECK(!strcmp(spry_tensor_shape_str(&v, buf, sizeof buf), "(0, 5)"));
    // 6 dims and a truncating buffer
    spry_tensor_set_shape(&v, SPRY_DTYPE_F32, 6, SPRY_SHAPE(1000, 2000, 3000, 4, 5, 6));
    CHECK(spry_tensor_numel(&v) == (int64_t)1000 * 2000 * 3000 * 120);
    CHECK(!strcmp(spry_tensor_shape_str(&v, buf, sizeof buf), "(1000, 2000, 3000, 4, 5, 6)"));
    for (size_t n = 1; n <= 30; n++) {
        char small[32];
        memset(small, 'x', sizeof small);
        spry_tensor_shape_str(&v, small, n);
        CHECK_MSG(strlen(small) < n && small[n] == 'x' &&
                      !strncmp(small, "(1000, 2000, 3000, 4, 5, 6)", n - 1),
                  "shape_str with n=%zu: \"%s\"", n, small);
    }
    // names: printf-formatted, truncated to 63 characters (BERT's longest is 50)
    spry_tensor_set_name(&v, "h.%d.attn.%s", 3, "c_proj");
    CHECK(!strcmp(v.name, "h.3.attn.c_proj"));
    spry_tensor_set_name(&v, "%s%s", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz", "0123456789ABCDEF");
    CHECK(strlen(v.name) == 63 && !strncmp(v.name, "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz0123456789A", 63));
    // arena constructors
    spry_arena  *a = spry_arena_init(4096);
    spry_tensor *z = spry_tensor_zeros(a, SPRY_DTYPE_F32, 2, SPRY_SHAPE(33, 65));
    CHECK(z && ((uintptr_t)z->data & 63) == 0 && spry_tensor_is_contiguous(z));
    int nz = 0;
    for (int64_t i = 0; z && i < 33 * 65; i++) nz += ((float *)z->data)[i] != 0.0f;
    CHECK(nz == 0);
    CHECK(z->grad == NULL && z->flags == 0 && z->name[0] == 0);
    spry_tensor *u = spry_tensor_new(a, SPRY_DTYPE_I32, 1, SPRY_SHAPE(3));
    CHECK(u && u->dtype == SPRY_DTYPE_I32 && u->stride[0] == 4 && ((uintptr_t)u->data & 63) == 0);
    *spry_f32_at2(z, 32, 64) = 7.0f;
    CHECK(((float *)z->data)[33 * 65 - 1] == 7.0f);
    spry_arena_free(a);
}

/* ---- params ----------------------------------------------------------------------------- */

static void test_params(void) {
    spry_params p;
    spry_params_init(&p);
    CHECK(p.n_items == 0 && p.n_elem == 0 && p.values == NULL);
    const int64_t sizes[] = {1, 17, 15, 16, 1000, 3};
    char          name[64];
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "layer.%d.weight", i);
        CHECK(spry_params_add(&p, name, 1, SPRY_SHAPE(sizes[i]), i == 1 ? SPRY_PARAM_NO_DECAY : 0) == i);
    }
    // more than the initial capacity (64), a 2-D one, a name longer than 47 characters
    for (int i = 6; i < 100; i++) {
        snprintf(name, sizeof name, "extra.%d", i);
        CHECK(spry_params_add(&p, name, 2, SPRY_SHAPE(i % 5 + 1, 3), 0) == i);
    }
    CHECK(spry_params_add(&p, "a_very_long_parameter_name_that_does_not_fit_in_64_bytes_of_the_name_field", 1,
                          SPRY_SHAPE(2), 0) == 100);
    CHECK(p.n_items == 101);
    CHECK(spry_params_alloc(&p) == SPRY_OK);
    CHECK(((uintptr_t)p.values & 63) == 0 && ((uintptr_t)p.grads & 63) == 0);
    int64_t end = 0, bad_align = 0, bad_zero = 0;
    for (int64_t i = 0; i < p.n_items; i++) {
        spry_param  *it = &p.items[i];
        spry_tensor *t  = spry_params_at(&p, i);
        CHECK(t == &it->t);
        if (((uintptr_t)t->data & 63) || ((uintptr_t)it->grad_t.data & 63)) bad_align++;
        CHECK(it->offset >= end); // disjoint, in declaration order
        end = it->offset + spry_tensor_numel(t);
        CHECK(t->data == p.values + it->offset && it->grad_t.data == p.grads + it->offset);
        CHECK(t->grad == &it->grad_t && spry_tensor_same_shape(t, &it->grad_t));
        CHECK((t->flags & SPRY_TENSOR_PARAM) && (t->flags & SPRY_TENSOR_REQUIRES_GRAD));
        CHECK(t->dtype == SPRY_DTYPE_F32 && spry_tensor_is_contiguous(t));
        for (int64_t j = 0; j < spry_tensor_numel(t); j++)
            bad_zero += ((float *)t->data)[j] != 0.0f || ((float *)it->grad_t.data)[j] != 0.0f;
    }
    CHECK(end <= p.n_elem);
    CHECK_MSG(bad_align == 0, "%lld parameters not 64-byte aligned", (long long)bad_align);
    CHECK_MSG(bad_zero == 0, "%lld values/grads not zero after alloc", (long long)bad_zero);
    CHECK(p.items[1].pflags == SPRY_PARAM_NO_DECAY && p.items[2].pflags == 0);
    // lookups
    CHECK(spry_params_index(&p, "layer.4.weight") == 4);
    CHECK(spry_params_find(&p, "layer.4.weight") == &p.items[4].t);
    CHECK(spry_tensor_numel(spry_params_find(&p, "layer.4.weight")) == 1000);
    CHECK(spry_params_find(&p, "extra.42")->shape[0] == 3);
    CHECK(spry_params_index(&p, "layer.9.weight") == -1 && spry_params_find(&p, "nope") == NULL);
    CHECK(spry_params_index(&p, "layer.4") == -1); // no prefix matches
    CHECK(strlen(p.items[100].t.name) == 63);
    CHECK(spry_params_index(&p, "a_very_long_parameter_name_that_does_not_fit_in_64_bytes_of_the") == 100);
    // zero_grad
    for (int64_t i = 0; i < p.n_elem; i++) p.grads[i] = 1.5f, p.values[i] = 2.0f;
    spry_params_zero_grad(&p);
    int nz = 0;
    for (int64_t i = 0; i < p.n_elem; i++) nz += p.grads[i] != 0.0f || p.values[i] != 2.0f;
    CHECK(nz == 0);
    // frozen and back
    spry_params_set_frozen(&p, 4, true);
    CHECK(p.items[4].t.grad == NULL && !(p.items[4].t.flags & SPRY_TENSOR_REQUIRES_GRAD));
    CHECK(p.items[4].pflags & SPRY_PARAM_FROZEN);
    CHECK(p.items[4].t.data == p.values + p.items[4].offset); // still the same storage
    spry_params_set_frozen(&p, 4, false);
    CHECK(p.items[4].t.grad == &p.items[4].grad_t && (p.items[4].t.flags & SPRY_TENSOR_REQUIRES_GRAD));
    CHECK(!(p.items[4].pflags & SPRY_PARAM_FROZEN));
    spry_params_free(&p);
    CHECK(p.values == NULL && p.n_items == 0);

    // frozen before alloc (the flag), and an empty store
    spry_params q;
    spry_params_init(&q);
    spry_params_add(&q, "f", 1, SPRY_SHAPE(5), SPRY_PARAM_FROZEN | SPRY_PARAM_NO_DECAY);
    spry_params_set_frozen(&q, 0, false);
    CHECK(q.items[0].pflags == SPRY_PARAM_NO_DECAY);
    spry_params_set_frozen(&q, 0, true);
    CHECK(spry_params_alloc(&q) == SPRY_OK);
    CHECK(q.items[0].t.grad == NULL && !(q.items[0].t.flags & SPRY_TENSOR_REQUIRES_GRAD));
    spry_params_free(&q);
    spry_params_init(&q);
    CHECK(spry_params_alloc(&q) == SPRY_OK);
    spry_params_zero_grad(&q);
    spry_params_free(&q);
}

/* ---- status ----------------------------------------------------------------------------- */

static void test_status(void) {
    const struct {
        spry_status st;
        const char *name;
    } names[] = {
        {SPRY_OK, "SPRY_OK"},
        {SPRY_ERR_IO, "SPRY_ERR_IO"},
        {SPRY_ERR_FORMAT, "SPRY_ERR_FORMAT"},
        {SPRY_ERR_CONFIG, "SPRY_ERR_CONFIG"},
        {SPRY_ERR_NOMEM, "SPRY_ERR_NOMEM"},
        {SPRY_ERR_ARG, "SPRY_ERR_ARG"},
        {SPRY_ERR_UNSUPPORTED, "SPRY_ERR_UNSUPPORTED"},
        {SPRY_ERR_NOT_FOUND, "SPRY_ERR_NOT_FOUND"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK_MSG(!strcmp(spry_status_name(names[i].st), names[i].name), "%d -> %s", (int)names[i].st,
                  spry_status_name(names[i].st));
    CHECK(spry_status_name((spry_status)-99) != NULL);
    CHECK(spry_status_name((spry_status)42) != NULL);

    CHECK(spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", "x.bin", "No such file") == SPRY_ERR_IO);
    CHECK(!strcmp(spry_last_error(), "x.bin: cannot open: No such file"));
    CHECK(spry_errorf(SPRY_ERR_CONFIG, "key %s = %d", "n_layer", -1) == SPRY_ERR_CONFIG);
    CHECK(!strcmp(spry_last_error(), "key n_layer = -1"));
    // a message longer than the buffer is truncated, not overflowed
    char long_msg[4000];
    memset(long_msg, 'a', sizeof long_msg - 1);
    long_msg[sizeof long_msg - 1] = 0;
    spry_errorf(SPRY_ERR_ARG, "%s", long_msg);
    size_t len = strlen(spry_last_error());
    CHECK(len > 100 && len < sizeof long_msg - 1 && spry_last_error()[0] == 'a');
    // thread-local: another thread's message does not replace this one
    spry_errorf(SPRY_ERR_IO, "main thread");
    int other_ok = 0;
#pragma omp parallel num_threads(2)
    {
        if (omp_get_thread_num() == 1) {
            spry_errorf(SPRY_ERR_FORMAT, "thread 1");
            other_ok = !strcmp(spry_last_error(), "thread 1");
        }
    }
    CHECK(!strcmp(spry_last_error(), "main thread"));
    CHECK(other_ok || omp_get_max_threads() < 2);
}

// spry_read_file: whole files, the size limit (an error, never a truncation), missing files,
// directories; spry_mkdir_p: nested directories, idempotent.
static void test_fs(void) {
    char dir[] = "/tmp/spry_fs_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], nested[256];
    snprintf(path, sizeof path, "%s/f.txt", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    for (int i = 0; f && i < 5000; i++) fputc('a' + i % 26, f);
    if (f) fclose(f);
    char  *buf = NULL;
    size_t n   = 0;
    CHECK(spry_read_file(path, 0, &buf, &n) == SPRY_OK && n == 5000 && buf && buf[5000] == 0 && buf[26] == 'a');
    free(buf);
    CHECK(spry_read_file(path, 5000, &buf, &n) == SPRY_OK);
    free(buf);
    CHECK(spry_read_file(path, 4999, &buf, &n) == SPRY_ERR_FORMAT && buf == NULL);
    CHECK(strstr(spry_last_error(), "5000 bytes") && strstr(spry_last_error(), "4999"));
    snprintf(nested, sizeof nested, "%s/none", dir);
    CHECK(spry_read_file(nested, 0, &buf, NULL) == SPRY_ERR_NOT_FOUND && buf == NULL);
    CHECK(spry_read_file(dir, 0, &buf, NULL) == SPRY_ERR_IO && strstr(spry_last_error(), "not a regular file"));
    snprintf(nested, sizeof nested, "%s/a/b/c", dir);
    CHECK(spry_mkdir_p(nested) == SPRY_OK && spry_mkdir_p(nested) == SPRY_OK);
    struct stat sb;
    CHECK(stat(nested, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK(spry_mkdir_p("/proc/spry_cannot/x") == SPRY_ERR_IO);
    double t0 = spry_now(), t1 = spry_now();
    CHECK(t1 >= t0 && t0 > 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    test_fs();
    test_status();
    test_dtype_table();
    test_bf16();
    test_f16();
    test_rng();
    test_tensor();
    test_params();
    return check_exit();
}
