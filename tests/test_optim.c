// ctest-label: ref
/*
 * test_optim.c -- the optimizers against torch.optim traces, clipping, frozen parameters,
 * thread-count independence.
 *
 * scripts/ref/gen_optim.py (Debian python3-torch, float64) writes $SPRY_BUILD_DIR/ref/
 * optim.safetensors; this test runs it itself when the file is missing or older than the script
 * and exits 77 (skipped) when python3 or torch is unavailable. Checked:
 *   AdamW, Adam (L2), SGD with momentum and with Nesterov momentum: the matrix (decay) and the
 *     bias (SPRY_PARAM_NO_DECAY) after each of 6 steps against torch (|diff| <= 1e-6 max(1, |ref|));
 *     a frozen parameter between them, whose grad buffer holds garbage, never changes, nor
 *     does the alignment padding between parameters;
 *   spry_clip_grad_norm: the returned norm and the clipped gradients (norm > 1 and norm < 1);
 *   every optimizer and the clip on a 1e6-element store: bit-identical with 1 and 2 threads.
 */
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "spry/optim.h"
#include "spry/rng.h"
#include "spry/safetensors.h"

#define STEPS    6
#define REL_TOL  1e-6
#define GEN      "scripts/ref/gen_optim.py"
#define PY       "/usr/bin/python3"

typedef struct opt_case {
    const char       *name; // prefix in the reference file
    spry_optim_params p;
} opt_case;

static opt_case make_case(const char *name, spry_optim_type type, float wd, bool nesterov) {
    opt_case c = {.name = name, .p = spry_optim_params_default(type)};
    c.p.lr = 1e-2f, c.p.weight_decay = wd;
    if (type == SPRY_OPTIM_SGD) {
        c.p.momentum = 0.9f, c.p.dampening = 0.0f, c.p.nesterov = nesterov;
    } else {
        c.p.beta1 = 0.9f, c.p.beta2 = 0.95f, c.p.eps = 1e-8f;
    }
    return c;
}

// The reference tensor named by fmt, which must be F32 with numel elements (NULL otherwise).
static const float *ref(spry_safetensors *st, int64_t numel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const float *ref(spry_safetensors *st, int64_t numel, const char *fmt, ...) {
    char    name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const spry_st_tensor_info *info = spry_safetensors_find(st, name);
    bool ok = info && info->dtype == SPRY_DTYPE_F32 && info->numel == numel && info->aligned;
    CHECK_MSG(ok, "reference tensor %s missing or malformed", name);
    return ok ? info->data : NULL;
}

// Max of |ours - theirs| / max(1, |theirs|).
static double max_rel(const float *ours, const float *theirs, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - theirs[i]) / fmax(1.0, fabs((double)theirs[i]));
        m        = d > m ? d : m;
    }
    return m;
}

// True when flat element i belongs to a parameter (not to the alignment padding).
static bool in_param(const spry_params *s, int64_t i) {
    for (int64_t k = 0; k < s->n_items; k++)
        if (i >= s->items[k].offset && i < s->items[k].offset + spry_tensor_numel(&s->items[k].t))
            return true;
    return false;
}

// The store of the reference: w (5, 3) decays, f (4) frozen, b (3) no decay.
static void make_store(spry_params *s) {
    spry_params_init(s);
    CHECK(spry_params_add(s, "w", 2, SPRY_SHAPE(5, 3), 0) == 0);
    CHECK(spry_params_add(s, "f", 1, SPRY_SHAPE(4), 0) == 1);
    CHECK(spry_params_add(s, "b", 1, SPRY_SHAPE(3), SPRY_PARAM_NO_DECAY) == 2);
    CHECK(spry_params_alloc(s) == SPRY_OK);
}

static void check_optimizer(spry_safetensors *st, const opt_case *c) {
    spry_params s;
    make_store(&s);
    spry_params_set_frozen(&s, 1, true);
    spry_tensor *w = spry_params_find(&s, "w"), *f = spry_params_find(&s, "f"),
                *b = spry_params_find(&s, "b");
    CHECK(f->grad == NULL && !(f->flags & SPRY_TENSOR_REQUIRES_GRAD));
    const float *iw = ref(st, 15, "init.w"), *ib = ref(st, 3, "init.b");
    if (!iw || !ib) {
        spry_params_free(&s);
        return;
    }
    memcpy(w->data, iw, 15 * sizeof(float));
    memcpy(b->data, ib, 3 * sizeof(float));
    const float f0[4] = {0.5f, -1.25f, 2.0f, 0.0f};
    memcpy(f->data, f0, sizeof f0);
    spry_optim *o;
    CHECK(spry_optim_init(&s, &c->p, &o) == SPRY_OK);
    if (!o) {
        spry_params_free(&s);
        return;
    }
    spry_param *pw = &s.items[0], *pf = &s.items[1], *pb = &s.items[2];
    double      worst = 0;
    for (int k = 1; k <= STEPS; k++) {
        const float *gw = ref(st, 15, "grad.step%d.w", k), *gb = ref(st, 3, "grad.step%d.b", k);
        if (!gw || !gb) break;
        memcpy(pw->grad_t.data, gw, 15 * sizeof(float));
        memcpy(pb->grad_t.data, gb, 3 * sizeof(float));
        for (int i = 0; i < 4; i++) ((float *)pf->grad_t.data)[i] = 100.0f + (float)i; // ignored
        for (int64_t i = 0; i < s.n_elem; i++) // and so are the paddings between parameters
            if (!in_param(&s, i)) s.grads[i] = -50.0f;
        spry_optim_step(o, c->p.lr);
        CHECK(o->step == k);
        const float *rw = ref(st, 15, "%s.step%d.w", c->name, k);
        const float *rb = ref(st, 3, "%s.step%d.b", c->name, k);
        if (!rw || !rb) break;
        double ew = max_rel(w->data, rw, 15), eb = max_rel(b->data, rb, 3);
        worst     = fmax(worst, fmax(ew, eb));
        CHECK_MSG(ew <= REL_TOL, "%s step %d: w max rel diff %.3g", c->name, k, ew);
        CHECK_MSG(eb <= REL_TOL, "%s step %d: b max rel diff %.3g", c->name, k, eb);
        CHECK_MSG(memcmp(f->data, f0, sizeof f0) == 0, "%s step %d: frozen parameter changed",
                  c->name, k);
    }
    int64_t touched = 0;
    for (int64_t i = 0; i < s.n_elem; i++) touched += !in_param(&s, i) && s.values[i] != 0.0f;
    CHECK_MSG(touched == 0, "%s: %lld padding elements updated", c->name, (long long)touched);
    printf("%-13s %d steps: worst relative diff %.2e\n", c->name, STEPS, worst);
    spry_optim_free(o);
    spry_params_free(&s);
}

static void check_clip(spry_safetensors *st, const char *prefix) {
    spry_params s;
    make_store(&s); // f stays trainable with a zero gradient: contributes nothing
    spry_param *pw = &s.items[0], *pb = &s.items[2];
    const float *gw = ref(st, 15, "%s.grad.w", prefix), *gb = ref(st, 3, "%s.grad.b", prefix);
    const float *cw = ref(st, 15, "%s.clipped.w", prefix), *cb = ref(st, 3, "%s.clipped.b", prefix);
    const float *rn = ref(st, 1, "%s.norm", prefix);
    if (gw && gb && cw && cb && rn) {
        memcpy(pw->grad_t.data, gw, 15 * sizeof(float));
        memcpy(pb->grad_t.data, gb, 3 * sizeof(float));
        float norm = spry_clip_grad_norm(&s, 1.0f);
        CHECK_MSG(fabs((double)norm - rn[0]) <= REL_TOL * fmax(1.0, rn[0]), "%s: norm %.9g ref %.9g",
                  prefix, (double)norm, (double)rn[0]);
        double ew = max_rel(pw->grad_t.data, cw, 15), eb = max_rel(pb->grad_t.data, cb, 3);
        CHECK_MSG(ew <= REL_TOL && eb <= REL_TOL, "%s: clipped grads max rel diff %.3g %.3g", prefix,
                  ew, eb);
        // the result is a norm-1 gradient (or the unchanged one)
        float again = spry_clip_grad_norm(&s, 0.0f); // max_norm <= 0: measure only
        CHECK_NEAR(again, fmin(rn[0], 1.0), 1e-5);
        printf("%-13s norm %.7f (ref %.7f), clipped max rel diff %.2e\n", prefix, (double)norm,
               (double)rn[0], fmax(ew, eb));
    }
    spry_params_free(&s);
}

// A large random store (1e6 elements over a few parameters), one param frozen, one no-decay.
// The random values and the 3 steps' gradients are drawn once (big_rand) and copied in.
enum { BIG_STEPS = 3 };
static float *big_rand[1 + BIG_STEPS];

static void make_big(spry_params *s) {
    spry_params_init(s);
    spry_params_add(s, "a", 2, SPRY_SHAPE(700, 1000), 0);
    spry_params_add(s, "frozen", 1, SPRY_SHAPE(1000), 0);
    spry_params_add(s, "bias", 1, SPRY_SHAPE(999), SPRY_PARAM_NO_DECAY);
    spry_params_add(s, "c", 2, SPRY_SHAPE(299, 1001), 0);
    CHECK(spry_params_alloc(s) == SPRY_OK);
    spry_params_set_frozen(s, 1, true);
    for (int k = 0; k <= BIG_STEPS && !big_rand[k]; k++) {
        big_rand[k] = malloc((size_t)s->n_elem * sizeof(float));
        // values ~ N(0, 1); gradients ~ N(0, (2e-3 k)^2): global norms ~2, 4, 6
        spry_rng_fill_normal(big_rand[k], s->n_elem, 7, (uint64_t)k, 0.0f, k ? 2e-3f * (float)k : 1.0f);
    }
    memcpy(s->values, big_rand[0], (size_t)s->n_elem * sizeof(float));
}

static void run_big(spry_params *s, const spry_optim_params *p, int nth) {
    omp_set_num_threads(nth);
    spry_optim *o;
    CHECK(spry_optim_init(s, p, &o) == SPRY_OK);
    if (!o) return;
    for (int k = 1; k <= BIG_STEPS; k++) {
        memcpy(s->grads, big_rand[k], (size_t)s->n_elem * sizeof(float));
        float norm = spry_clip_grad_norm(s, 1.0f);
        CHECK(norm > 1.0f); // clipping is exercised
        spry_optim_step(o, p->lr);
    }
    spry_optim_free(o);
}

static void check_threads(void) {
    const spry_optim_type types[] = {SPRY_OPTIM_ADAMW, SPRY_OPTIM_ADAM, SPRY_OPTIM_SGD};
    for (int t = 0; t < 3; t++) {
        opt_case    c = make_case("big", types[t], 0.1f, t == 2);
        spry_params s1, s2;
        make_big(&s1);
        make_big(&s2);
        run_big(&s1, &c.p, 1);
        run_big(&s2, &c.p, 2);
        size_t bytes = (size_t)s1.n_elem * sizeof(float);
        CHECK_MSG(memcmp(s1.values, s2.values, bytes) == 0 && memcmp(s1.grads, s2.grads, bytes) == 0,
                  "optimizer type %d: 1 and 2 threads differ", (int)types[t]);
        // the frozen parameter kept its initial values; the others moved
        int64_t off = s1.items[1].offset;
        CHECK(memcmp(big_rand[0] + off, s1.values + off, 1000 * sizeof(float)) == 0);
        CHECK(memcmp(big_rand[0], s1.values, 1000 * sizeof(float)) != 0);
        spry_params_free(&s1);
        spry_params_free(&s2);
    }
    for (int k = 0; k <= BIG_STEPS; k++) free(big_rand[k]);
    printf("1e6-element store: AdamW, Adam, SGD+clip bit-identical with 1 and 2 threads\n");
}

static int ensure_reference(const char *dir, const char *path) {
    struct stat fs, gs;
    if (stat(path, &fs) == 0 && (stat(GEN, &gs) != 0 || gs.st_mtime <= fs.st_mtime)) return 0;
    if (system(PY " -c 'import torch' >/dev/null 2>&1") != 0) {
        fprintf(stderr, "skipped: %s missing and " PY " with torch is unavailable\n", path);
        return 77;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, PY " " GEN " --out '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "%s failed\n", cmd);
        return 1;
    }
    return 0;
}

int main(void) {
    const char *bd = getenv("SPRY_BUILD_DIR");
    char        dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/ref", bd ? bd : "build");
    snprintf(path, sizeof path, "%s/optim.safetensors", dir);
    int rc = ensure_reference(dir, path);
    if (rc) return rc;
    spry_safetensors *st;
    if (spry_safetensors_open(path, &st) != SPRY_OK) {
        fprintf(stderr, "%s\n", spry_last_error());
        return 1;
    }
    const opt_case cases[] = {
        make_case("adamw", SPRY_OPTIM_ADAMW, 0.1f, false),
        make_case("adam", SPRY_OPTIM_ADAM, 0.05f, false),
        make_case("sgd", SPRY_OPTIM_SGD, 0.01f, false),
        make_case("sgd_nesterov", SPRY_OPTIM_SGD, 0.01f, true),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_optimizer(st, &cases[i]);
    check_clip(st, "clip");
    check_clip(st, "clip_small");
    spry_safetensors_close(st);
    check_threads();
    return check_exit();
}
