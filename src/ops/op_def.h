/*
 * op_def.h -- the op definition record and the helpers op files share (internal to src/).
 *
 * Each op is forward + backward + scalar reference + test shapes (STYLE.md section 6):
 *   fwd(n, ith, nth)  fast kernel; splits its rows by (ith, nth) and must give bit-identical
 *                     results for every nth. Ops marked self_threaded run once with (0, 1) and
 *                     thread internally (GEMM).
 *   bwd(n, ith, nth)  reads n->out->grad and ACCUMULATES into n->src[i]->grad (when non-NULL).
 *   ref(n)            scalar reference forward on F64 copies of the float inputs (index inputs
 *                     stay I32), double accumulation; writes n->out (F64).
 *   build(ctx, src, t) calls the public constructor for test case t.
 */
#ifndef SPRY_OP_DEF_H
#define SPRY_OP_DEF_H

#include "spry/ops.h"

typedef struct spry_op_test {
    const char *label;
    int         n_src;
    spry_dtype  dtype[SPRY_MAX_SRC]; // F32 (random normal) or I32 (random in [0, index_range))
    int         ndim[SPRY_MAX_SRC];
    int64_t     shape[SPRY_MAX_SRC][SPRY_MAX_DIMS];
    int64_t     ip[SPRY_MAX_PARAMS];
    float       fp[SPRY_MAX_PARAMS];
    int64_t     index_range;
    int         distinct_rows; // I32 inputs: distinct sorted values per row (token indices)
    int         no_fd;         // skip the finite-difference check (non-smooth op)
    double      fwd_nmse;      // forward tolerance vs the reference (0: the default 1e-10)
} spry_op_test;

typedef struct spry_op_def {
    const char *name;
    int         n_src;
    bool        self_threaded;
    void (*fwd)(const spry_node *n, int ith, int nth);
    void (*bwd)(const spry_node *n, int ith, int nth);
    void (*ref)(const spry_node *n);
    spry_tensor *(*build)(spry_ctx *ctx, spry_tensor *const *src, const spry_op_test *t);
    const spry_op_test *tests;
    int                 n_tests;
} spry_op_def;

#define SPRY_OP(e, sym) SPRY_OP_##e,
typedef enum spry_op {
#include "ops.def"
    SPRY_OP_COUNT
} spry_op;
#undef SPRY_OP

#define SPRY_OP(e, sym) extern const spry_op_def sym;
#include "ops.def"
#undef SPRY_OP

// The registry, indexed by spry_op.
extern const spry_op_def *const spry_op_defs[SPRY_OP_COUNT];

// Creates a node for op with the given sources and output, runs its forward kernel and, when
// recording, links it into the tape and marks out as requiring grad. Returns the node (arena),
// or NULL after setting the sticky NOMEM status. src entries beyond n_src are ignored.
spry_node *spry_op_apply(spry_ctx *ctx, spry_op op, spry_tensor *const *src, int n_src,
                         spry_tensor *out, const int64_t *ip, const float *fp,
                         spry_tensor *const *saved);
// Runs a kernel with the ctx's thread count (or once, for self-threaded ops).
void spry_op_run(const spry_node *n, void (*k)(const spry_node *, int, int));

// Row range [lo, hi) of n rows for thread ith of nth (contiguous blocks).
static inline void spry_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (n + nth - 1) / nth;
    *lo         = per * ith < n ? per * ith : n;
    *hi         = *lo + per < n ? *lo + per : n;
}

// True when t takes part in backward.
static inline bool spry_needs_grad(const spry_tensor *t) {
    return t && (t->flags & SPRY_TENSOR_REQUIRES_GRAD) && t->grad;
}


// Shape-check message helper: formats both shapes for an assertion.
const char *spry_shapes2(const spry_tensor *a, const spry_tensor *b);

#define F32(t)  ((float *)(t)->data)
#define F64(t)  ((double *)(t)->data)
#define I32(t)  ((int32_t *)(t)->data)

#endif
