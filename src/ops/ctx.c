/*
 * ctx.c -- the execution context, op application and kernel dispatch (see ops.h, op_def.h).
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op_def.h"

spry_ctx *spry_ctx_init(size_t arena_bytes, int n_threads) {
    spry_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->arena = spry_arena_init(arena_bytes);
    if (!ctx->arena) {
        free(ctx);
        return NULL;
    }
    ctx->n_threads    = n_threads > 0 ? n_threads : omp_get_max_threads();
    ctx->grad_enabled = true;
    ctx->seed         = 1234;
    omp_set_num_threads(ctx->n_threads);
    return ctx;
}

void spry_ctx_free(spry_ctx *ctx) {
    if (!ctx) return;
    spry_arena_free(ctx->arena);
    free(ctx);
}

void spry_ctx_begin(spry_ctx *ctx) {
    spry_arena_reset(ctx->arena);
    ctx->tape        = NULL;
    ctx->n_nodes     = 0;
    ctx->n_grad_pool = 0;
    ctx->status  = SPRY_OK;
    omp_set_num_threads(ctx->n_threads);
}

spry_status spry_ctx_status(const spry_ctx *ctx) { return ctx->status; }

bool spry_ctx_set_grad(spry_ctx *ctx, bool enabled) {
    bool old          = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return old;
}

spry_tensor *spry_op_placeholder(void) {
    static float       dummy[16];
    static spry_tensor t = {.dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = {1}, .stride = {4},
                            .data = dummy};
    return &t;
}

static void set_nomem(spry_ctx *ctx, size_t bytes) {
    if (ctx->status == SPRY_OK) {
        ctx->status = spry_errorf(SPRY_ERR_NOMEM,
                                  "step arena: out of memory allocating %zu bytes (in use %zu)",
                                  bytes, spry_arena_used(ctx->arena));
    }
}

spry_tensor *spry_new(spry_ctx *ctx, spry_dtype dt, int ndim, const int64_t *shape) {
    if (ctx->status != SPRY_OK) return spry_op_placeholder();
    spry_tensor *t = spry_tensor_new(ctx->arena, dt, ndim, shape);
    if (!t) {
        double n = (double)spry_dtype_info(dt)->block_size;
        for (int i = 0; i < ndim; i++) n *= (double)shape[i];
        set_nomem(ctx, n < 1.8e19 ? (size_t)n : SIZE_MAX);
        return spry_op_placeholder();
    }
    return t;
}

spry_tensor *spry_zeros(spry_ctx *ctx, spry_dtype dt, int ndim, const int64_t *shape) {
    spry_tensor *t = spry_new(ctx, dt, ndim, shape);
    if (ctx->status == SPRY_OK) memset(t->data, 0, spry_tensor_nbytes(t));
    return t;
}

// Per-op wall time, forward and backward, when SPRY_PROFILE is set (see spry_op_profile_print).
static double g_prof[SPRY_OP_COUNT][2];
static int    g_prof_on = -1;

static double wall(void) { return omp_get_wtime(); }

static void run_timed(const spry_node *n, void (*k)(const spry_node *, int, int));

void spry_op_run(const spry_node *n, void (*k)(const spry_node *, int, int)) {
    if (g_prof_on < 0) g_prof_on = getenv("SPRY_PROFILE") != NULL;
    if (g_prof_on) {
        double t0 = wall();
        run_timed(n, k);
        g_prof[n->op][k == spry_op_defs[n->op]->fwd ? 0 : 1] += wall() - t0;
        return;
    }
    run_timed(n, k);
}

void spry_op_profile_print(void) {
    double total = 0;
    for (int i = 0; i < SPRY_OP_COUNT; i++) total += g_prof[i][0] + g_prof[i][1];
    if (total <= 0) return;
    fprintf(stderr, "%-16s %10s %10s %7s\n", "op", "fwd s", "bwd s", "share");
    for (int i = 0; i < SPRY_OP_COUNT; i++)
        if (g_prof[i][0] + g_prof[i][1] > 0)
            fprintf(stderr, "%-16s %10.3f %10.3f %6.1f%%\n", spry_op_defs[i]->name, g_prof[i][0],
                    g_prof[i][1], 100.0 * (g_prof[i][0] + g_prof[i][1]) / total);
}

static void run_timed(const spry_node *n, void (*k)(const spry_node *, int, int)) {
    int nth = n->ctx->n_threads;
    if (spry_op_defs[n->op]->self_threaded || nth <= 1) {
        k(n, 0, 1);
        return;
    }
#pragma omp parallel num_threads(nth)
    k(n, omp_get_thread_num(), omp_get_num_threads());
}

spry_node *spry_op_apply(spry_ctx *ctx, spry_op op, spry_tensor *const *src, int n_src,
                         spry_tensor *out, const int64_t *ip, const float *fp,
                         spry_tensor *const *saved) {
    spry_node *n = spry_arena_calloc(ctx->arena, sizeof *n);
    if (!n) {
        set_nomem(ctx, sizeof *n);
        return NULL;
    }
    n->op    = op;
    n->n_src = n_src;
    n->out   = out;
    n->ctx   = ctx;
    bool rec = false;
    for (int i = 0; i < n_src; i++) {
        n->src[i] = src[i];
        if (src[i] && (src[i]->flags & SPRY_TENSOR_REQUIRES_GRAD)) rec = true;
    }
    for (int i = 0; i < SPRY_MAX_PARAMS; i++) {
        n->ip[i] = ip ? ip[i] : 0;
        n->fp[i] = fp ? fp[i] : 0.0f;
    }
    for (int i = 0; i < SPRY_MAX_SAVED; i++) n->saved[i] = saved ? saved[i] : NULL;
    spry_op_run(n, spry_op_defs[op]->fwd);
    if (ctx->grad_enabled && rec && spry_op_defs[op]->bwd) {
        out->flags |= SPRY_TENSOR_REQUIRES_GRAD;
        n->prev   = ctx->tape;
        ctx->tape = n;
        ctx->n_nodes++;
    }
    return n;
}

const char *spry_shapes2(const spry_tensor *a, const spry_tensor *b) {
    static _Thread_local char buf[160];
    char                      sa[72], sb[72];
    snprintf(buf, sizeof buf, "%s and %s", spry_tensor_shape_str(a, sa, sizeof sa),
             spry_tensor_shape_str(b, sb, sizeof sb));
    return buf;
}
