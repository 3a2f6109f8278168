// ctest-label: ops
/*
 * test_ops.c -- walks the op table (ggml's test-backend-ops idea). For every op and every test
 * shape it declares:
 *   (a) the fast forward against the scalar double reference (NMSE);
 *   (b) backward against central finite differences of the double reference (NMSE over the
 *       checked elements), for every float input;
 *   (c) 1 thread against 2 threads: outputs and gradients bit-identical;
 *   (d) ops with reduced-precision matmuls (bf16, f16): forward and backward against the
 *       reference within that precision's tolerance.
 * Adding an op to src/ops/ops.def with test shapes adds it here automatically.
 */
#include <string.h>

#include "check.h"
#include "ops/op_def.h"
#include "spry/autograd.h"
#include "spry/rng.h"

#define FWD_NMSE  1e-9
#define GRAD_NMSE 1e-6
#define BF16_NMSE 1e-4
#define F16_NMSE  1e-6
#define FD_EPS    1e-5
#define FD_MAX    48 // elements checked per input

typedef struct run_result {
    spry_tensor *out;
    spry_tensor *src[SPRY_MAX_SRC];
    spry_node    node;
} run_result;

static void make_inputs(spry_ctx *ctx, const spry_op_test *t, spry_tensor **src, uint64_t seed) {
    for (int i = 0; i < t->n_src; i++) {
        spry_dtype dt = t->dtype[i] == SPRY_DTYPE_I32 ? SPRY_DTYPE_I32 : SPRY_DTYPE_F32;
        src[i]        = spry_new(ctx, dt, t->ndim[i], t->shape[i]);
        int64_t n     = spry_tensor_numel(src[i]);
        if (dt == SPRY_DTYPE_F32) {
            spry_rng_fill_normal(src[i]->data, n, seed, (uint64_t)i, 0.0f, 1.0f);
            src[i]->flags |= SPRY_TENSOR_REQUIRES_GRAD;
            src[i]->grad = spry_zeros(ctx, SPRY_DTYPE_F32, src[i]->ndim, src[i]->shape);
        } else if (t->distinct_rows) { // distinct sorted indices per row: a random subset
            int64_t K = src[i]->shape[src[i]->ndim - 1], rows = n / K, R = t->index_range;
            for (int64_t r = 0; r < rows; r++) {
                int64_t k = 0;
                for (int64_t v = 0; v < R && k < K; v++) {
                    float u = spry_rng_uniform(seed, 100 + (uint64_t)i, (uint64_t)(r * R + v));
                    if (u * (float)(R - v) < (float)(K - k)) I32(src[i])[r * K + k++] = (int32_t)v;
                }
            }
        } else {
            for (int64_t j = 0; j < n; j++)
                I32(src[i])[j] = (int32_t)(spry_rng_uniform(seed, 100 + (uint64_t)i, (uint64_t)j) *
                                           (float)t->index_range);
        }
    }
}

static spry_tensor *to_f64(spry_ctx *ctx, const spry_tensor *x) {
    if (x->dtype != SPRY_DTYPE_F32) return (spry_tensor *)x;
    spry_tensor *y = spry_new(ctx, SPRY_DTYPE_F64, x->ndim, x->shape);
    for (int64_t i = 0; i < spry_tensor_numel(x); i++) F64(y)[i] = F32(x)[i];
    return y;
}

// Runs the fast path: forward, then backward with upstream gradient w.
static spry_tensor *run_fast(spry_ctx *ctx, const spry_op_def *def, const spry_op_test *t,
                             spry_tensor **src, const float *w, spry_node *node_out) {
    spry_tensor *out = def->build(ctx, src, t);
    CHECK(ctx->tape != NULL);
    if (!ctx->tape) return out;
    *node_out        = *ctx->tape;
    spry_tensor dout = *out;
    dout.data        = (void *)w;
    spry_backward_with(ctx, out, &dout);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    return out;
}

// L = sum(w * ref(x)) in double, for the node with src replaced by F64 copies.
static double ref_loss(spry_ctx *ctx, const spry_op_def *def, spry_node *rn, const float *w) {
    def->ref(rn);
    double  L = 0;
    int64_t n = spry_tensor_numel(rn->out);
    for (int64_t i = 0; i < n; i++) L += (double)w[i] * F64(rn->out)[i];
    (void)ctx;
    return L;
}

static void test_case(const spry_op_def *def, const spry_op_test *t) {
    char where[96];
    snprintf(where, sizeof where, "%s/%s", def->name, t->label);
    spry_ctx *c1 = spry_ctx_init(1 << 20, 1), *c2 = spry_ctx_init(1 << 20, 2);
    spry_tensor *s1[SPRY_MAX_SRC] = {0}, *s2[SPRY_MAX_SRC] = {0};
    make_inputs(c1, t, s1, 42);
    make_inputs(c2, t, s2, 42);
    // the upstream gradient: probe an output of the right size
    spry_ctx_set_grad(c1, false);
    spry_tensor *probe = def->build(c1, s1, t);
    spry_ctx_set_grad(c1, true);
    int64_t n_out = spry_tensor_numel(probe);
    float  *w     = spry_arena_alloc(c1->arena, (size_t)n_out * sizeof(float));
    spry_rng_fill_normal(w, n_out, 7, 0, 0.0f, 1.0f);
    c1->rng_counter = c2->rng_counter = 0;

    spry_node    n1, n2;
    spry_tensor *o1 = run_fast(c1, def, t, s1, w, &n1);
    spry_tensor *o2 = run_fast(c2, def, t, s2, w, &n2);

    // (c) threads: bit-identical
    CHECK_MSG(!memcmp(o1->data, o2->data, (size_t)n_out * sizeof(float)), "%s: 1 vs 2 threads forward differ", where);
    for (int i = 0; i < t->n_src; i++)
        if (s1[i]->grad)
            CHECK_MSG(!memcmp(s1[i]->grad->data, s2[i]->grad->data, spry_tensor_nbytes(s1[i]->grad)),
                      "%s: 1 vs 2 threads grad of input %d differ", where, i);

    // (a) forward vs reference
    spry_node rn = n1;
    for (int i = 0; i < t->n_src; i++) rn.src[i] = to_f64(c1, s1[i]);
    rn.out = spry_new(c1, SPRY_DTYPE_F64, o1->ndim, o1->shape);
    ref_loss(c1, def, &rn, w);
    double e = check_nmse(F32(o1), F64(rn.out), (long)n_out);
    double tol = t->fwd_nmse > 0 ? t->fwd_nmse : FWD_NMSE;
    CHECK_MSG(e <= tol, "%s: forward NMSE %.3g > %.3g", where, e, tol);

    // (b) backward vs central finite differences of the reference
    if (!t->no_fd) {
        for (int i = 0; i < t->n_src; i++) {
            if (s1[i]->dtype != SPRY_DTYPE_F32) continue;
            double *x = F64(rn.src[i]);
            int64_t n = spry_tensor_numel(s1[i]), step = n > FD_MAX ? n / FD_MAX : 1, m = 0;
            float   ana[FD_MAX + 1];
            double  num[FD_MAX + 1];
            for (int64_t j = 0; j < n && m <= FD_MAX; j += step, m++) {
                double x0 = x[j];
                x[j]      = x0 + FD_EPS;
                double lp = ref_loss(c1, def, &rn, w);
                x[j]      = x0 - FD_EPS;
                double lm = ref_loss(c1, def, &rn, w);
                x[j]      = x0;
                num[m]    = (lp - lm) / (2 * FD_EPS);
                ana[m]    = F32(s1[i]->grad)[j];
            }
            double ge = check_nmse(ana, num, (long)m);
            CHECK_MSG(ge <= GRAD_NMSE, "%s: grad of input %d NMSE %.3g > %g (first: ana %g num %g)",
                      where, i, ge, GRAD_NMSE, (double)ana[0], num[0]);
        }
    }

    // (d) bf16 path for ops with bf16 matmuls
    for (int prec = SPRY_PRECISION_BF16; def == &spry_opdef_linear && prec <= SPRY_PRECISION_F16; prec++) {
        spry_ctx *cb = spry_ctx_init(1 << 20, 2);
        cb->precision = (spry_precision)prec;
        spry_tensor *sb[SPRY_MAX_SRC] = {0};
        make_inputs(cb, t, sb, 42);
        spry_node    nb;
        spry_tensor *ob = run_fast(cb, def, t, sb, w, &nb);
        double       be = check_nmse(F32(ob), F64(rn.out), (long)n_out);
        double ptol = prec == SPRY_PRECISION_BF16 ? BF16_NMSE : F16_NMSE;
        CHECK_MSG(be <= ptol && be > 0, "%s: precision %d forward NMSE %.3g", where, prec, be);
        for (int i = 0; i < t->n_src; i++) {
            int64_t n  = spry_tensor_numel(s1[i]);
            double *gr = malloc((size_t)n * sizeof *gr);
            for (int64_t j = 0; j < n; j++) gr[j] = F32(s1[i]->grad)[j];
            double ge = check_nmse(F32(sb[i]->grad), gr, (long)n);
            CHECK_MSG(ge <= ptol, "%s: precision %d grad %d NMSE %.3g", where, prec, i, ge);
            free(gr);
        }
        spry_ctx_free(cb);
    }
    printf("ok %-28s fwd nmse %.2e\n", where, e);
    spry_ctx_free(c1);
    spry_ctx_free(c2);
}

int main(void) {
    for (int op = 0; op < SPRY_OP_COUNT; op++) {
        const spry_op_def *def = spry_op_defs[op];
        CHECK_MSG(def->n_tests > 0, "op %s declares no test shapes", def->name);
        for (int k = 0; k < def->n_tests; k++) test_case(def, &def->tests[k]);
    }
    return check_exit();
}
