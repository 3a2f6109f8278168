// ctest-label: unit
/*
 * test_autograd.c -- the tape, parameters and the step arena, on a small graph built from the
 * public ops:
 *     h = linear(x, W1, b1); r = gelu(h) + h; n = layernorm(r, g, beta)
 *     y = linear(n, W2, b2); q = softmax(y) * y + b2; loss = mean(q * q)
 * (fan-out of h and b2, a tensor multiplied by itself, broadcasting). Checked:
 *   (a) d loss / d x and d loss / d every parameter against central finite differences of the
 *       whole graph in float (Richardson-extrapolated, eps 1e-2 and 5e-3), NMSE per tensor;
 *   (b) a frozen parameter gets no gradient and its grad buffer stays zero, the others get the
 *       same gradients as without freezing; ops none of whose inputs needs a gradient are not
 *       recorded;
 *   (c) with gradients off nothing is recorded (n_nodes 0, tape NULL), backward does nothing,
 *       and the outputs equal the training-mode outputs bit for bit;
 *   (d) two backward passes without zero_grad give twice the gradients (accumulation);
 *   (e) after the first step, further steps make no arena malloc (steady state);
 *   (f) the sticky NOMEM error: set by a huge spry_new, later ops are no-ops, spry_ctx_begin
 *       clears it;
 *   (g) arena marks: rewind restores spry_arena_used and reuses the same memory.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spry/autograd.h"
#include "spry/params.h"
#include "spry/rng.h"

// A huge allocation must return NULL under ASan too, not abort.
#if defined(__SANITIZE_ADDRESS__)
#define SPRY_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPRY_TEST_ASAN 1
#endif
#endif
#ifdef SPRY_TEST_ASAN
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

#define B_ 4
#define IN 6
#define HID 8
#define OUT 3
#define FD_NMSE 1e-4

enum { P_W1, P_B1, P_G, P_BETA, P_W2, P_B2, N_PARAMS };

typedef struct model {
    spry_params s;
    spry_tensor x, dx; // the input (own storage, requires grad) and its gradient
    float       xbuf[B_ * IN], dxbuf[B_ * IN];
} model;

static void model_init(model *m, int frozen) {
    spry_params_init(&m->s);
    spry_params_add(&m->s, "W1", 2, SPRY_SHAPE(HID, IN), 0);
    spry_params_add(&m->s, "b1", 1, SPRY_SHAPE(HID), SPRY_PARAM_NO_DECAY);
    spry_params_add(&m->s, "g", 1, SPRY_SHAPE(HID), SPRY_PARAM_NO_DECAY);
    spry_params_add(&m->s, "beta", 1, SPRY_SHAPE(HID), SPRY_PARAM_NO_DECAY);
    spry_params_add(&m->s, "W2", 2, SPRY_SHAPE(OUT, HID), 0);
    spry_params_add(&m->s, "b2", 1, SPRY_SHAPE(OUT), SPRY_PARAM_NO_DECAY);
    CHECK(spry_params_alloc(&m->s) == SPRY_OK);
    for (int i = 0; i < N_PARAMS; i++) {
        spry_tensor *t = spry_params_at(&m->s, i);
        spry_rng_fill_normal(t->data, spry_tensor_numel(t), 42, (uint64_t)i, i == P_G ? 1.0f : 0.0f,
                             0.5f);
    }
    if (frozen >= 0) spry_params_set_frozen(&m->s, frozen, true);
    spry_tensor_set_shape(&m->x, SPRY_DTYPE_F32, 2, SPRY_SHAPE(B_, IN));
    m->dx      = m->x;
    m->x.data  = m->xbuf;
    m->dx.data = m->dxbuf;
    m->x.grad  = &m->dx;
    m->x.flags = SPRY_TENSOR_REQUIRES_GRAD;
    spry_rng_fill_normal(m->xbuf, B_ * IN, 42, 100, 0.0f, 1.0f);
    memset(m->dxbuf, 0, sizeof m->dxbuf);
}

static spry_tensor *P(model *m, int i) { return spry_params_at(&m->s, i); }

// The graph; *y_out gets the (B, OUT) output of the second linear.
static spry_tensor *forward(spry_ctx *ctx, model *m, spry_tensor **y_out) {
    spry_tensor *h = spry_linear(ctx, &m->x, P(m, P_W1), P(m, P_B1));
    spry_tensor *r = spry_add(ctx, spry_gelu(ctx, h), h);
    spry_tensor *n = spry_layernorm(ctx, r, P(m, P_G), P(m, P_BETA), 1e-5f);
    spry_tensor *y = spry_linear(ctx, n, P(m, P_W2), P(m, P_B2));
    spry_tensor *q = spry_add(ctx, spry_mul(ctx, spry_softmax(ctx, y), y), P(m, P_B2));
    if (y_out) *y_out = y;
    return spry_mean(ctx, spry_mul(ctx, q, q));
}

// One training step: begin, forward, backward. Returns the loss.
static float step(spry_ctx *ctx, model *m) {
    spry_ctx_begin(ctx);
    spry_tensor *loss = forward(ctx, m, NULL);
    CHECK(spry_backward(ctx, loss) == SPRY_OK);
    return ((float *)loss->data)[0];
}

static double loss_at(spry_ctx *ctx, model *m) {
    bool old = spry_ctx_set_grad(ctx, false);
    spry_ctx_begin(ctx);
    double l = ((float *)forward(ctx, m, NULL)->data)[0];
    spry_ctx_set_grad(ctx, old);
    return l;
}

// Central difference of the loss in v[i] with step h.
static double central(spry_ctx *ctx, model *m, float *v, int64_t i, float h) {
    float v0 = v[i];
    v[i]     = v0 + h;
    double lp = loss_at(ctx, m);
    v[i]     = v0 - h;
    double lm = loss_at(ctx, m);
    v[i]     = v0;
    return (lp - lm) / (2.0 * (double)h);
}

static void check_fd(spry_ctx *ctx, model *m, float *v, const float *grad, int64_t n,
                     const char *what) {
    double *fd = malloc((size_t)n * sizeof *fd);
    for (int64_t i = 0; i < n; i++) {
        // Richardson: (4 D(h/2) - D(h)) / 3 cancels the h^2 term
        fd[i] = (4.0 * central(ctx, m, v, i, 5e-3f) - central(ctx, m, v, i, 1e-2f)) / 3.0;
    }
    double e = check_nmse(grad, fd, (long)n), norm = 0;
    for (int64_t i = 0; i < n; i++) norm += fd[i] * fd[i];
    CHECK_MSG(e < FD_NMSE, "gradient of %s vs finite differences: NMSE %.3g", what, e);
    CHECK_MSG(norm > 1e-8, "gradient of %s is ~0: the check would be vacuous", what);
    printf("  d loss / d %-4s NMSE %.2e (|g| %.3g)\n", what, e, sqrt(norm));
    free(fd);
}

// (a)
static void test_finite_differences(void) {
    model m;
    model_init(&m, -1);
    spry_ctx *ctx = spry_ctx_init(1 << 16, 1);
    step(ctx, &m);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    printf("(a) finite differences\n");
    float *dx = malloc(sizeof m.dxbuf), *dp = malloc((size_t)m.s.n_elem * sizeof(float));
    memcpy(dx, m.dxbuf, sizeof m.dxbuf);
    memcpy(dp, m.s.grads, (size_t)m.s.n_elem * sizeof(float));
    check_fd(ctx, &m, m.xbuf, dx, B_ * IN, "x");
    for (int i = 0; i < N_PARAMS; i++) {
        spry_param *p = &m.s.items[i];
        check_fd(ctx, &m, p->t.data, dp + p->offset, spry_tensor_numel(&p->t), p->t.name);
    }
    free(dx);
    free(dp);
    spry_ctx_free(ctx);
    spry_params_free(&m.s);
}

static bool all_zero(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (x[i] != 0.0f) return false;
    return true;
}

// (b)
static void test_frozen(void) {
    model ref, m;
    model_init(&ref, -1);
    model_init(&m, P_W2);
    spry_ctx *ctx = spry_ctx_init(1 << 16, 1);
    step(ctx, &ref);
    int64_t nodes_ref = ctx->n_nodes;
    step(ctx, &m);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    CHECK(ctx->n_nodes == nodes_ref); // every op still has a trainable input
    CHECK(P(&m, P_W2)->grad == NULL);
    for (int i = 0; i < N_PARAMS; i++) {
        spry_param *p = &m.s.items[i];
        int64_t     n = spry_tensor_numel(&p->t);
        if (i == P_W2) {
            CHECK_MSG(all_zero(p->grad_t.data, n), "frozen W2 got a gradient");
        } else {
            CHECK_MSG(!all_zero(p->grad_t.data, n), "%s got no gradient", p->t.name);
            CHECK_MSG(memcmp(p->grad_t.data, ref.s.grads + p->offset, (size_t)n * sizeof(float)) == 0,
                      "%s: gradient differs when W2 is frozen", p->t.name);
        }
    }
    CHECK(memcmp(m.dxbuf, ref.dxbuf, sizeof m.dxbuf) == 0);

    // W1 and b1 frozen and x without grad: linear, gelu and the residual add are not recorded
    spry_params_zero_grad(&m.s);
    spry_params_set_frozen(&m.s, P_W2, false);
    spry_params_set_frozen(&m.s, P_W1, true);
    spry_params_set_frozen(&m.s, P_B1, true);
    m.x.flags = 0;
    memset(m.dxbuf, 0, sizeof m.dxbuf);
    step(ctx, &m);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    CHECK_MSG(ctx->n_nodes == nodes_ref - 3, "n_nodes %lld, expected %lld", (long long)ctx->n_nodes,
              (long long)nodes_ref - 3);
    CHECK(all_zero(m.s.items[P_W1].grad_t.data, HID * IN));
    CHECK(all_zero(m.s.items[P_B1].grad_t.data, HID));
    CHECK(all_zero(m.dxbuf, B_ * IN));
    CHECK(!all_zero(m.s.items[P_W2].grad_t.data, OUT * HID)); // unfrozen again: gets one
    for (int i = P_G; i < N_PARAMS; i++) {
        spry_param *p = &m.s.items[i];
        CHECK(memcmp(p->grad_t.data, ref.s.grads + p->offset,
                     (size_t)spry_tensor_numel(&p->t) * sizeof(float)) == 0);
    }
    spry_ctx_free(ctx);
    spry_params_free(&ref.s);
    spry_params_free(&m.s);
    printf("(b) frozen parameters: ok\n");
}

// (c)
static void test_no_grad(void) {
    model m;
    model_init(&m, -1);
    spry_ctx *ctx = spry_ctx_init(1 << 16, 1);
    spry_ctx_begin(ctx);
    spry_tensor *y1, *y2;
    spry_tensor *l1 = forward(ctx, &m, &y1);
    CHECK(ctx->n_nodes > 0 && ctx->tape != NULL);
    CHECK(l1->flags & SPRY_TENSOR_REQUIRES_GRAD);
    float yt[B_ * OUT], lt = ((float *)l1->data)[0];
    memcpy(yt, y1->data, sizeof yt);

    CHECK(spry_ctx_set_grad(ctx, false) == true);
    spry_ctx_begin(ctx);
    spry_tensor *l2 = forward(ctx, &m, &y2);
    CHECK(ctx->n_nodes == 0);
    CHECK(ctx->tape == NULL);
    CHECK(!(l2->flags & SPRY_TENSOR_REQUIRES_GRAD));
    CHECK(memcmp(yt, y2->data, sizeof yt) == 0);
    CHECK(memcmp(&lt, l2->data, sizeof lt) == 0);
    CHECK(spry_backward(ctx, l2) == SPRY_OK); // does nothing
    CHECK(all_zero(m.s.grads, m.s.n_elem));
    CHECK(all_zero(m.dxbuf, B_ * IN));
    CHECK(spry_ctx_set_grad(ctx, true) == false);
    spry_ctx_free(ctx);
    spry_params_free(&m.s);
    printf("(c) no-grad mode: ok\n");
}

// (d)
static void test_accumulation(void) {
    model m;
    model_init(&m, -1);
    spry_ctx *ctx  = spry_ctx_init(1 << 16, 2);
    int64_t   n    = m.s.n_elem;
    float    *once = malloc((size_t)n * sizeof(float)), dx1[B_ * IN];
    float     l1   = step(ctx, &m);
    memcpy(once, m.s.grads, (size_t)n * sizeof(float));
    memcpy(dx1, m.dxbuf, sizeof dx1);
    float l2 = step(ctx, &m); // no zero_grad in between
    CHECK(l1 == l2);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    double *twice = malloc((size_t)n * sizeof(double)), twice_x[B_ * IN];
    for (int64_t i = 0; i < n; i++) twice[i] = 2.0 * once[i];
    for (int i = 0; i < B_ * IN; i++) twice_x[i] = 2.0 * dx1[i];
    double e = check_nmse(m.s.grads, twice, (long)n), ex = check_nmse(m.dxbuf, twice_x, B_ * IN);
    CHECK_MSG(e < 1e-12 && ex < 1e-12, "accumulated gradients: NMSE %.3g (params) %.3g (x)", e, ex);
    CHECK(!all_zero(once, n));
    // zero_grad then one step gives the single gradient again
    spry_params_zero_grad(&m.s);
    CHECK(all_zero(m.s.grads, n));
    step(ctx, &m);
    CHECK(memcmp(m.s.grads, once, (size_t)n * sizeof(float)) == 0);
    free(once);
    free(twice);
    spry_ctx_free(ctx);
    spry_params_free(&m.s);
    printf("(d) gradient accumulation: NMSE vs 2x %.2e\n", e);
}

// (e)
static void test_steady_state(void) {
    model m;
    model_init(&m, -1);
    spry_ctx *ctx = spry_ctx_init(4096, 1); // tiny chunks: the first step must grow the arena
    step(ctx, &m);
    size_t mallocs = spry_arena_n_mallocs(ctx->arena), hw = spry_arena_high_water(ctx->arena);
    size_t used    = spry_arena_used(ctx->arena);
    CHECK(mallocs > 1);
    for (int i = 0; i < 3; i++) {
        step(ctx, &m);
        CHECK_MSG(spry_arena_n_mallocs(ctx->arena) == mallocs, "step %d: %zu arena mallocs, was %zu",
                  i + 2, spry_arena_n_mallocs(ctx->arena), mallocs);
        CHECK(spry_arena_used(ctx->arena) == used);
    }
    loss_at(ctx, &m); // an inference step fits in the same chunks
    CHECK(spry_arena_n_mallocs(ctx->arena) == mallocs);
    CHECK(spry_arena_high_water(ctx->arena) == hw);
    spry_ctx_begin(ctx);
    CHECK(spry_arena_used(ctx->arena) == 0);
    spry_ctx_free(ctx);
    spry_params_free(&m.s);
    printf("(e) steady state: %zu chunks, %zu bytes per step, no malloc after the first step\n",
           mallocs, used);
}

// (f)
static void test_sticky_error(void) {
    model m;
    model_init(&m, -1);
    spry_ctx *ctx = spry_ctx_init(4096, 1);
    spry_ctx_begin(ctx);
    spry_errorf(SPRY_OK, "%s", "");
    // 2^46 floats = 256 TiB: beyond any address space, so it fails even with overcommit on
    spry_tensor *big = spry_new(ctx, SPRY_DTYPE_F32, 2, SPRY_SHAPE((int64_t)1 << 26, (int64_t)1 << 20));
    CHECK(big != NULL);
    CHECK(spry_ctx_status(ctx) == SPRY_ERR_NOMEM);
    CHECK_MSG(strstr(spry_last_error(), "arena") != NULL, "message: %s", spry_last_error());
    printf("(f) sticky error message: %s\n", spry_last_error());
    // later ops are no-ops returning placeholders; backward reports the status
    int64_t      nodes = ctx->n_nodes;
    spry_tensor *loss  = forward(ctx, &m, NULL);
    CHECK(loss != NULL && spry_tensor_numel(loss) == 1);
    CHECK(ctx->n_nodes == nodes);
    CHECK(spry_new(ctx, SPRY_DTYPE_F32, 1, SPRY_SHAPE(4)) == spry_op_placeholder());
    CHECK(spry_backward(ctx, loss) == SPRY_ERR_NOMEM);
    CHECK(spry_ctx_status(ctx) == SPRY_ERR_NOMEM);
    CHECK(all_zero(m.s.grads, m.s.n_elem));
    // a new step clears it and works
    spry_ctx_begin(ctx);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    float l = step(ctx, &m);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    CHECK(ctx->n_nodes > 0);
    CHECK(isfinite(l) && l > 0);
    CHECK(!all_zero(m.s.grads, m.s.n_elem));
    spry_ctx_free(ctx);
    spry_params_free(&m.s);
}

// (g)
static void test_arena_marks(void) {
    spry_arena *a = spry_arena_init(4096);
    CHECK(a != NULL && spry_arena_used(a) == 0 && spry_arena_n_mallocs(a) == 1);
    void *p0 = spry_arena_alloc(a, 100);
    CHECK(((uintptr_t)p0 & 63) == 0);
    size_t          u0 = spry_arena_used(a);
    spry_arena_mark m0 = spry_arena_get_mark(a);
    void           *p1 = spry_arena_alloc(a, 3000), *p2 = spry_arena_alloc(a, 10000);
    CHECK(((uintptr_t)p1 & 63) == 0 && ((uintptr_t)p2 & 63) == 0);
    size_t          u1 = spry_arena_used(a);
    spry_arena_mark m1 = spry_arena_get_mark(a);
    void           *p3 = spry_arena_alloc(a, 5000);
    CHECK(spry_arena_used(a) > u1 && u1 > u0);
    size_t mallocs = spry_arena_n_mallocs(a);
    CHECK(mallocs >= 3);
    spry_arena_rewind(a, m1);
    CHECK(spry_arena_used(a) == u1);
    CHECK(spry_arena_alloc(a, 5000) == p3); // the same memory again
    spry_arena_rewind(a, m0);
    CHECK(spry_arena_used(a) == u0);
    CHECK(spry_arena_alloc(a, 3000) == p1);
    CHECK(spry_arena_alloc(a, 10000) == p2);
    CHECK(spry_arena_used(a) == u1);
    CHECK(spry_arena_n_mallocs(a) == mallocs);
    size_t hw = spry_arena_high_water(a);
    CHECK(hw >= u1 + 5000);
    spry_arena_rewind(a, m0);
    CHECK(spry_arena_used(a) == u0);
    memset(spry_arena_calloc(a, 64), 0xff, 64);
    spry_arena_rewind(a, m0);
    unsigned char *z = spry_arena_calloc(a, 64);
    CHECK(z[0] == 0 && z[63] == 0);
    spry_arena_reset(a);
    CHECK(spry_arena_used(a) == 0 && spry_arena_high_water(a) == hw);
    CHECK(spry_arena_alloc(a, 100) == p0);
    spry_arena_free(a);
    printf("(g) arena marks: ok\n");
}

int main(void) {
    test_finite_differences();
    test_frozen();
    test_no_grad();
    test_accumulation();
    test_steady_state();
    test_sticky_error();
    test_arena_marks();
    return check_exit();
}
