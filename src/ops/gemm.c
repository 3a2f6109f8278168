/*
 * gemm.c -- spry_gemm_f32 / spry_gemm_bf16: oneDNN matmul, OpenBLAS, and a scalar fallback.
 *
 * oneDNN path (https://oneapi-src.github.io/oneDNN/v2.6/dev_guide_matmul.html): one matmul
 * primitive per (dtype, ta, tb, M, N, K, lda, ldb, ldc, alpha, beta != 0, thread count), created
 * on first use and kept in a mutex-guarded hash table of at most GEMM_MAX_ENTRY entries (beyond
 * that, primitives are created per call and destroyed). Transposes and leading dimensions are
 * strides of the memory descriptors (no copies); alpha is a constant output scale (oneDNN 2.6's
 * brgemm kernels refuse runtime scales and fall back to gemm:jit); beta is a sum post-op with
 * scale 1 after C is scaled by beta when beta is not 1. The thread count is part of the key
 * because oneDNN picks its blocking for the thread count current at creation (its own cache does
 * the same). Without oneDNN (or if a primitive cannot be created): f32 goes to cblas_sgemm,
 * bf16 is widened to f32 and goes to cblas_sgemm; the scalar loops are the allocation-free last
 * resort. tests/test_gemm.c checks all three against a double-precision reference.
 */
#include "spry/gemm.h"

#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "spry/dtype.h"
#include "spry/status.h"

#if defined(SPRY_HAVE_ONEDNN) && SPRY_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#define SPRY_GEMM_ONEDNN 1
#else
#define SPRY_GEMM_ONEDNN 0
#endif

// ------------------------------------------------------------------------------------------------
// implementation selection

static _Atomic int gemm_forced = SPRY_GEMM_IMPL_AUTO; // a spry_gemm_impl

#if SPRY_GEMM_ONEDNN
static bool onednn_available(void);
#endif

// The implementation calls use now (never AUTO).
static spry_gemm_impl gemm_impl_now(void) {
    spry_gemm_impl impl = (spry_gemm_impl)atomic_load_explicit(&gemm_forced, memory_order_relaxed);
    if (impl != SPRY_GEMM_IMPL_AUTO) return impl;
#if SPRY_GEMM_ONEDNN
    if (onednn_available()) return SPRY_GEMM_IMPL_ONEDNN;
#endif
    return SPRY_GEMM_IMPL_OPENBLAS;
}

bool spry_gemm_set_impl(spry_gemm_impl impl) {
    switch (impl) {
    case SPRY_GEMM_IMPL_AUTO:
    case SPRY_GEMM_IMPL_OPENBLAS:
    case SPRY_GEMM_IMPL_SCALAR: break;
    case SPRY_GEMM_IMPL_ONEDNN:
#if SPRY_GEMM_ONEDNN
        if (!onednn_available()) return false;
        break;
#else
        return false;
#endif
    default: return false;
    }
    atomic_store(&gemm_forced, (int)impl);
    return true;
}

const char *spry_gemm_backend(void) {
    switch (gemm_impl_now()) {
    case SPRY_GEMM_IMPL_ONEDNN: return "onednn";
    case SPRY_GEMM_IMPL_OPENBLAS: return "openblas";
    default: return "scalar";
    }
}

// ------------------------------------------------------------------------------------------------
// shared helpers

// C (M, N) = beta * C, with beta == 0 writing zeros (C is not read, so NaNs there do not spread).
static void gemm_scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f) {
            memset(c, 0, (size_t)N * sizeof(float));
        } else {
            for (int64_t j = 0; j < N; j++) c[j] *= beta;
        }
    }
}

// Makes OpenBLAS (pthread build: its own pool) use the OpenMP thread count of this call.
static void openblas_sync_threads(void) {
    int nthr = omp_get_max_threads();
    if (openblas_get_num_threads() != nthr) openblas_set_num_threads(nthr);
}

// Below this many multiply-adds (or elements converted) a loop runs on one thread: waking the
// OpenMP team costs more than it saves, and far more on a loaded machine.
#define GEMM_PARALLEL_MIN (1 << 16)

// ------------------------------------------------------------------------------------------------
// scalar loops: no allocation, one output row per OpenMP iteration, f32 accumulation in k order
// (so results do not depend on the thread count).

static void gemm_scalar_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                            const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                            float *C, int64_t ldc) {
    // op(A)(i, k) = A[i * sai + k * sak], op(B)(k, j) = B[k * sbk + j * sbj]
    const int64_t sai = ta ? 1 : lda, sak = ta ? lda : 1;
    const int64_t sbk = tb ? 1 : ldb, sbj = tb ? ldb : 1;
#pragma omp parallel for schedule(static) if (M * N * K >= GEMM_PARALLEL_MIN)
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += A[i * sai + k * sak] * B[k * sbk + j * sbj];
            float *c = &C[i * ldc + j];
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
    }
}

static void gemm_scalar_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                             const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                             float beta, float *C, int64_t ldc) {
    const int64_t sai = ta ? 1 : lda, sak = ta ? lda : 1;
    const int64_t sbk = tb ? 1 : ldb, sbj = tb ? ldb : 1;
#pragma omp parallel for schedule(static) if (M * N * K >= GEMM_PARALLEL_MIN)
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                acc += spry_bf16_to_f32(A[i * sai + k * sak]) *
                       spry_bf16_to_f32(B[k * sbk + j * sbj]);
            }
            float *c = &C[i * ldc + j];
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// OpenBLAS paths

static void gemm_openblas_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc) {
    openblas_sync_threads();
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta,
                C, (blasint)ldc);
}

// Widens a (rows, cols) bf16 matrix with leading dimension ld to a dense f32 one.
static void widen_bf16(const uint16_t *x, int64_t rows, int64_t cols, int64_t ld, float *y) {
#pragma omp parallel for schedule(static) if (rows * cols >= GEMM_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) y[r * cols + c] = spry_bf16_to_f32(x[r * ld + c]);
    }
}

// bf16 inputs are exact in f32, so widening then cblas_sgemm is a bf16 GEMM with f32
// accumulation. Falls back to the scalar loop if the f32 copies cannot be allocated.
static void gemm_openblas_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                               float beta, float *C, int64_t ldc) {
    const int64_t a_rows = ta ? K : M, a_cols = ta ? M : K; // A as stored
    const int64_t b_rows = tb ? N : K, b_cols = tb ? K : N; // B as stored
    float *a32 = malloc((size_t)(a_rows * a_cols) * sizeof(float));
    float *b32 = malloc((size_t)(b_rows * b_cols) * sizeof(float));
    if (!a32 || !b32) {
        free(a32);
        free(b32);
        gemm_scalar_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    widen_bf16(A, a_rows, a_cols, lda, a32);
    widen_bf16(B, b_rows, b_cols, ldb, b32);
    gemm_openblas_f32(ta, tb, M, N, K, alpha, a32, a_cols, b32, b_cols, beta, C, ldc);
    free(a32);
    free(b32);
}

// ------------------------------------------------------------------------------------------------
// oneDNN path: the engine, the primitive cache, execution

#if SPRY_GEMM_ONEDNN

// Everything that decides a primitive. All int64_t, so there is no padding and memcmp works.
typedef struct gemm_key {
    int64_t dtype; // 0 f32, 1 bf16 (A and B; C is always f32)
    int64_t ta, tb, M, N, K, lda, ldb, ldc;
    int64_t alpha;  // the bits of alpha, a constant output scale when not 1
    int64_t sum;    // beta != 0: a sum post-op with scale 1
    int64_t nthr;   // omp_get_max_threads() at creation
} gemm_key;

typedef struct gemm_entry gemm_entry;
struct gemm_entry {
    gemm_key           key;
    dnnl_primitive_t   prim; // NULL: oneDNN has no implementation, use the fallback
    dnnl_memory_desc_t a_md, b_md, c_md;
    gemm_entry        *next;
};

enum { GEMM_N_BUCKET = 256, GEMM_MAX_ENTRY = 1024 };

static struct {
    pthread_once_t     once;
    pthread_mutex_t    lock;
    dnnl_engine_t      engine; // NULL if oneDNN could not start
    dnnl_stream_t      stream; // CPU streams keep no state between executions; shared
    gemm_entry        *bucket[GEMM_N_BUCKET];
    int64_t            n_entry;
} onednn = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

static void onednn_init_once(void) {
    if (dnnl_engine_create(&onednn.engine, dnnl_cpu, 0) != dnnl_success) {
        onednn.engine = NULL;
        return;
    }
    if (dnnl_stream_create(&onednn.stream, onednn.engine, dnnl_stream_default_flags) !=
        dnnl_success) {
        dnnl_engine_destroy(onednn.engine);
        onednn.engine = NULL;
    }
}

static bool onednn_available(void) {
    pthread_once(&onednn.once, onednn_init_once);
    return onednn.engine != NULL;
}

static uint64_t gemm_key_hash(const gemm_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull; // FNV-1a
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

// Fills e->prim (NULL when oneDNN cannot do this GEMM) and the three memory descriptors.
static void onednn_create(gemm_entry *e) {
    const gemm_key *k = &e->key;
    const dnnl_data_type_t in_dt = k->dtype == 1 ? dnnl_bf16 : dnnl_f32;
    const dnnl_dims_t a_dims = {k->M, k->K}, a_strides = {k->ta ? 1 : k->lda, k->ta ? k->lda : 1};
    const dnnl_dims_t b_dims = {k->K, k->N}, b_strides = {k->tb ? 1 : k->ldb, k->tb ? k->ldb : 1};
    const dnnl_dims_t c_dims = {k->M, k->N}, c_strides = {k->ldc, 1};
    e->prim = NULL;
    if (dnnl_memory_desc_init_by_strides(&e->a_md, 2, a_dims, in_dt, a_strides) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&e->b_md, 2, b_dims, in_dt, b_strides) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&e->c_md, 2, c_dims, dnnl_f32, c_strides) !=
            dnnl_success) {
        return;
    }
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &e->a_md, &e->b_md, NULL, &e->c_md) != dnnl_success) return;

    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    float alpha;
    uint32_t alpha_bits = (uint32_t)k->alpha;
    memcpy(&alpha, &alpha_bits, sizeof alpha);
    bool ok = dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && alpha != 1.0f) {
        ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha) == dnnl_success;
    }
    if (ok && k->sum) {
        ok = dnnl_post_ops_create(&ops) == dnnl_success &&
             dnnl_post_ops_append_sum(ops, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    }
    if (ok) ok = dnnl_primitive_desc_create(&pd, &desc, attr, onednn.engine, NULL) == dnnl_success;
    if (ok && dnnl_primitive_create(&e->prim, pd) != dnnl_success) e->prim = NULL;
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
}

// The cache entry for key k, created on first use; NULL only if out of memory. Cached entries
// live until spry_gemm_cache_clear, so the caller uses them after unlocking. When the cache is
// full the entry is made for this call only: *transient is set and the caller frees it with
// onednn_entry_free.
static gemm_entry *onednn_lookup(const gemm_key *k, bool *transient) {
    const uint64_t slot = gemm_key_hash(k) % GEMM_N_BUCKET;
    *transient = false;
    pthread_mutex_lock(&onednn.lock);
    gemm_entry *e = onednn.bucket[slot];
    while (e && memcmp(&e->key, k, sizeof *k) != 0) e = e->next;
    if (!e && (e = calloc(1, sizeof *e))) {
        e->key = *k;
        onednn_create(e);
        if (onednn.n_entry < GEMM_MAX_ENTRY) {
            e->next = onednn.bucket[slot];
            onednn.bucket[slot] = e;
            onednn.n_entry++;
        } else {
            *transient = true;
        }
    }
    pthread_mutex_unlock(&onednn.lock);
    return e;
}

static void onednn_entry_free(gemm_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    free(e);
}

// Runs the GEMM through oneDNN. Returns false, having touched nothing, if oneDNN cannot.
static bool gemm_onednn(int dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                        float alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                        float beta, float *C, int64_t ldc) {
    if (!onednn_available()) return false;
    uint32_t alpha_bits;
    memcpy(&alpha_bits, &alpha, sizeof alpha_bits);
    const gemm_key key = {
        .dtype = dtype, .ta = ta, .tb = tb, .M = M, .N = N, .K = K,
        .lda = lda, .ldb = ldb, .ldc = ldc,
        .alpha = alpha_bits, .sum = beta != 0.0f, .nthr = omp_get_max_threads(),
    };
    bool transient;
    gemm_entry *e = onednn_lookup(&key, &transient);
    if (!e) return false;

    dnnl_memory_t a_mem = NULL, b_mem = NULL, c_mem = NULL;
    bool ok = e->prim != NULL &&
              dnnl_memory_create(&a_mem, &e->a_md, onednn.engine, (void *)A) == dnnl_success &&
              dnnl_memory_create(&b_mem, &e->b_md, onednn.engine, (void *)B) == dnnl_success &&
              dnnl_memory_create(&c_mem, &e->c_md, onednn.engine, C) == dnnl_success;
    if (ok) {
        // dst = alpha * op(A) @ op(B) + 1 * dst, so scale C first when beta is neither 0 nor 1
        if (key.sum) gemm_scale_c(M, N, beta, C, ldc);
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem},
        };
        dnnl_status_t st = dnnl_primitive_execute(e->prim, onednn.stream, 3, args);
        // A CPU stream executes synchronously; a failure after C was scaled cannot be undone.
        SPRY_ASSERT(st == dnnl_success, "dnnl_primitive_execute failed (status %d), M=%lld "
                    "N=%lld K=%lld", (int)st, (long long)M, (long long)N, (long long)K);
    }
    if (c_mem) dnnl_memory_destroy(c_mem);
    if (b_mem) dnnl_memory_destroy(b_mem);
    if (a_mem) dnnl_memory_destroy(a_mem);
    if (transient) onednn_entry_free(e);
    return ok;
}

void spry_gemm_cache_clear(void) {
    if (!onednn_available()) return;
    pthread_mutex_lock(&onednn.lock);
    for (int s = 0; s < GEMM_N_BUCKET; s++) {
        gemm_entry *e = onednn.bucket[s];
        while (e) {
            gemm_entry *next = e->next;
            onednn_entry_free(e);
            e = next;
        }
        onednn.bucket[s] = NULL;
    }
    onednn.n_entry = 0;
    pthread_mutex_unlock(&onednn.lock);
}

int64_t spry_gemm_cache_size(void) {
    if (!onednn_available()) return 0;
    pthread_mutex_lock(&onednn.lock);
    int64_t n = onednn.n_entry;
    pthread_mutex_unlock(&onednn.lock);
    return n;
}

#else // !SPRY_GEMM_ONEDNN

void spry_gemm_cache_clear(void) {}
int64_t spry_gemm_cache_size(void) { return 0; }

#endif

// ------------------------------------------------------------------------------------------------
// entry points

// Checks the contract shared by both dtypes; returns true when the product term is empty
// (M, N, K or alpha zero) and has been handled as C = beta * C.
static bool gemm_check_trivial(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const void *A, int64_t lda, const void *B, int64_t ldb,
                               float beta, float *C, int64_t ldc) {
    SPRY_ASSERT(M >= 0 && N >= 0 && K >= 0, "gemm: negative size M=%lld N=%lld K=%lld",
                (long long)M, (long long)N, (long long)K);
    SPRY_ASSERT(lda >= (ta ? M : K), "gemm: lda=%lld too small (ta=%d M=%lld K=%lld)",
                (long long)lda, (int)ta, (long long)M, (long long)K);
    SPRY_ASSERT(ldb >= (tb ? K : N), "gemm: ldb=%lld too small (tb=%d K=%lld N=%lld)",
                (long long)ldb, (int)tb, (long long)K, (long long)N);
    SPRY_ASSERT(ldc >= N, "gemm: ldc=%lld < N=%lld", (long long)ldc, (long long)N);
    if (M == 0 || N == 0) return true;
    SPRY_ASSERT(C != NULL, "gemm: C is NULL");
    if (K == 0 || alpha == 0.0f) {
        gemm_scale_c(M, N, beta, C, ldc);
        return true;
    }
    SPRY_ASSERT(A != NULL && B != NULL, "gemm: A or B is NULL");
    return false;
}

// Below this many outputs a GEMM runs on one thread. With few output blocks to share, oneDNN
// (seen with its AVX2 kernels) and OpenBLAS split the K sum across threads, and the result then
// depends on the thread count; one thread keeps every GEMM bit-identical for any thread count.
#define GEMM_DETERMINISTIC_MN (1 << 15)

static int gemm_threads_enter(int64_t M, int64_t N) {
    int prev = omp_get_max_threads();
    if (prev > 1 && M * N < GEMM_DETERMINISTIC_MN) omp_set_num_threads(1);
    return prev;
}

static void gemm_f32_dispatch(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                              float *C, int64_t ldc);
static void gemm_bf16_dispatch(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                               float beta, float *C, int64_t ldc);

void spry_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (gemm_check_trivial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
    int prev = gemm_threads_enter(M, N);
    gemm_f32_dispatch(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    omp_set_num_threads(prev);
}

void spry_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                    const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                    float *C, int64_t ldc) {
    if (gemm_check_trivial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
    int prev = gemm_threads_enter(M, N);
    gemm_bf16_dispatch(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    omp_set_num_threads(prev);
}

static void gemm_f32_dispatch(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                              float *C, int64_t ldc) {
    switch (gemm_impl_now()) {
    case SPRY_GEMM_IMPL_ONEDNN:
#if SPRY_GEMM_ONEDNN
        if (gemm_onednn(0, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
#endif
        gemm_openblas_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    case SPRY_GEMM_IMPL_SCALAR:
        gemm_scalar_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    default:
        gemm_openblas_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
}

static void gemm_bf16_dispatch(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                               const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                               float beta, float *C, int64_t ldc) {
    switch (gemm_impl_now()) {
    case SPRY_GEMM_IMPL_ONEDNN:
#if SPRY_GEMM_ONEDNN
        if (gemm_onednn(1, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
#endif
        gemm_openblas_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    case SPRY_GEMM_IMPL_SCALAR:
        gemm_scalar_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    default:
        gemm_openblas_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
}
