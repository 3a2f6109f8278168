// ctest-label: unit
/*
 * test_random_ltd.c -- random layerwise token dropping (notes/data_efficiency.md section 4 and
 * the test matrix of 6.2): gather/scatter forward and backward (overwrite semantics, finite
 * differences); the reserved-length schedule (DeepSpeed's fixed_linear table, the ViT plateau,
 * stop at max, consumed layer-tokens); the index sampler (sorted, distinct, in range, inclusion
 * probability r/S by chi-square, reproducible per (seed, step, micro, layer, sample)); routed
 * model forwards against independent computations for GPT-2 and BLOOM; pass-through (r >= S,
 * eval) bit-identical to the unrouted model; trainer runs (min = max = S equals the baseline bit
 * for bit, a dropping run is reproducible); state round trip; config errors.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "spry/autograd.h"
#include "spry/random_ltd.h"
#include "spry/rng.h"
#include "spry/trainer.h"

#define F(t) ((float *)(t)->data)

/* ---- gather / scatter: out = scatter(x, idx, gelu(gather(x, idx))) ----------------------------
 */

static double composite_loss(const float *x, const int32_t *idx, const float *w, int64_t B,
                             int64_t T, int64_t C, int64_t K, float *out) {
    spry_ctx *ctx = spry_ctx_init(1 << 16, 1);
    spry_ctx_set_grad(ctx, false);
    spry_tensor *xt = spry_new(ctx, SPRY_DTYPE_F32, 3, SPRY_SHAPE(B, T, C));
    spry_tensor *it = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, K));
    memcpy(xt->data, x, (size_t)(B * T * C) * sizeof(float));
    memcpy(it->data, idx, (size_t)(B * K) * sizeof(int32_t));
    spry_tensor *o = spry_scatter_rows(ctx, xt, it, spry_gelu(ctx, spry_gather_rows(ctx, xt, it)));
    double L       = 0;
    for (int64_t i = 0; i < B * T * C; i++)
        L += (double)w[i] * F(o)[i];
    if (out)
        memcpy(out, o->data, (size_t)(B * T * C) * sizeof(float));
    spry_ctx_free(ctx);
    return L;
}

static void test_gather_scatter(void) {
    enum { B = 2, T = 9, C = 4, K = 4 };
    int32_t idx[B * K];
    spry_random_ltd_sample(3, 0, 0, 0, 0, B, T, K, idx);
    float x[B * T * C], w[B * T * C], out[B * T * C];
    spry_rng_fill_normal(x, B * T * C, 11, 0, 0.0f, 1.0f);
    spry_rng_fill_normal(w, B * T * C, 11, 1, 0.0f, 1.0f);
    composite_loss(x, idx, w, B, T, C, K, out);
    // forward: kept rows carry gelu(x), dropped rows are x unchanged
    int bad = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int kept = 0;
            for (int k = 0; k < K; k++)
                kept |= idx[b * K + k] == t;
            for (int64_t c = 0; c < C; c++) {
                float v = x[(b * T + t) * C + c];
                float e =
                    kept ? 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v)))
                         : v;
                bad += kept ? fabsf(out[(b * T + t) * C + c] - e) > 1e-5f
                            : out[(b * T + t) * C + c] != e;
            }
        }
    CHECK_MSG(bad == 0, "gather/scatter forward: %d wrong elements", bad);
    // backward through the tape vs central differences (float, eps 1e-2 on smooth gelu)
    spry_ctx *ctx   = spry_ctx_init(1 << 16, 2);
    spry_tensor *xt = spry_new(ctx, SPRY_DTYPE_F32, 3, SPRY_SHAPE(B, T, C));
    spry_tensor *it = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, K));
    memcpy(xt->data, x, sizeof x);
    memcpy(it->data, idx, sizeof idx);
    xt->flags |= SPRY_TENSOR_REQUIRES_GRAD;
    xt->grad       = spry_zeros(ctx, SPRY_DTYPE_F32, 3, xt->shape);
    spry_tensor *o = spry_scatter_rows(ctx, xt, it, spry_gelu(ctx, spry_gather_rows(ctx, xt, it)));
    spry_tensor d  = *o;
    d.data         = w;
    CHECK(spry_backward_with(ctx, o, &d) == SPRY_OK);
    double num2 = 0, den2 = 0;
    int passthrough_bad = 0;
    for (int64_t i = 0; i < B * T * C; i++) {
        float xp[B * T * C];
        double h = 1e-2;
        memcpy(xp, x, sizeof x);
        xp[i]     = x[i] + (float)h;
        double lp = composite_loss(xp, idx, w, B, T, C, K, NULL);
        xp[i]     = x[i] - (float)h;
        double lm = composite_loss(xp, idx, w, B, T, C, K, NULL);
        double fd = (lp - lm) / (2 * h), an = F(xt->grad)[i];
        num2 += (fd - an) * (fd - an), den2 += fd * fd;
        int64_t b = i / (T * C), t = i / C % T, kept = 0;
        for (int k = 0; k < K; k++)
            kept |= idx[b * K + k] == t;
        // overwrite semantics: a dropped row's gradient is exactly the upstream gradient
        if (!kept)
            passthrough_bad += F(xt->grad)[i] != w[i];
    }
    printf("gather/scatter backward vs finite differences: nmse %.3g\n", num2 / den2);
    CHECK_MSG(num2 / den2 < 1e-6, "gather/scatter backward vs finite differences: nmse %.3g",
              num2 / den2);
    CHECK(passthrough_bad == 0);
    spry_ctx_free(ctx);
}

/* ---- schedule ------------------------------------------------------------------------------ */

static spry_random_ltd_params params(int64_t L, int64_t lo, int64_t hi, int64_t m, int64_t M,
                                     int64_t R, int64_t p) {
    spry_random_ltd_params q = spry_random_ltd_params_default();
    q.enabled = true, q.total_layer_num = L, q.n_layer_id = hi - lo,
    q.random_ltd_layer_num = hi - lo;
    for (int64_t i = lo; i < hi; i++)
        q.random_ltd_layer_id[i - lo] = i;
    q.min_value = m, q.max_value = M, q.require_steps = R, q.seq_per_step = p;
    return q;
}

static void test_schedule(void) {
    // DeepSpeed's fixed_linear ground truth (tests/unit/runtime/test_data_efficiency.py):
    // min 2, max 10, total 8, step 2 -> {1:2,2:4,3:4,4:6,5:6,6:8,7:8,8:10,9:10,10:10}
    spry_random_ltd_params q = params(4, 1, 3, 2, 10, 8, 2);
    const int64_t want[]     = {2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 10};
    for (int g = 0; g <= 10; g++)
        CHECK_MSG(spry_random_ltd_schedule_value(&q, g) == want[g], "g=%d", g);
    // the ViT plateau (notes 4.5): m 32, M 197, p 8, R 3910
    q = params(12, 1, 11, 32, 197, 3910, 8);
    CHECK(spry_random_ltd_schedule_value(&q, 0) == 32);
    CHECK(spry_random_ltd_schedule_value(&q, 3910) == 192);
    CHECK(spry_random_ltd_schedule_value(&q, 3981) == 192);
    CHECK(spry_random_ltd_schedule_value(&q, 3982) == 197);
    // GPT-3 1.3B: 128 -> 2048, p 16, R 200000
    q = params(24, 1, 23, 128, 2048, 200000, 16);
    CHECK(spry_random_ltd_schedule_value(&q, 0) == 128);
    CHECK(spry_random_ltd_schedule_value(&q, 100000) == 1088);
    CHECK(spry_random_ltd_schedule_value(&q, 200000) == 2048);
    CHECK(spry_random_ltd_schedule_value(&q, 10 * 200000) == 2048);
    // update: stop at max; consumed layer-tokens once per distinct step with the updated r
    q                   = params(4, 1, 3, 2, 10, 8, 2);
    q.global_batch_size = 3;
    spry_random_ltd *ltd;
    CHECK(spry_random_ltd_init(&q, 4, &ltd) == SPRY_OK);
    CHECK(spry_random_ltd_current(ltd) == 2);
    int64_t tokens = 0;
    for (int g = 0; g <= 10; g++) {
        CHECK(spry_random_ltd_update(ltd, g) == want[g]);
        CHECK(spry_random_ltd_update(ltd, g) == want[g]); // a second micro-batch: counted once
        tokens += 3 * (want[g] * 2 + 10 * 2);
    }
    CHECK(spry_random_ltd_consumed_layer_tokens(ltd) == tokens);
    CHECK(spry_random_ltd_update(ltd, 0) == 10); // reached max: never updated again
    // state round trip
    int64_t st[SPRY_RANDOM_LTD_N_STATE];
    CHECK(spry_random_ltd_get_state(ltd, st) == SPRY_RANDOM_LTD_N_STATE);
    spry_random_ltd *l2;
    CHECK(spry_random_ltd_init(&q, 4, &l2) == SPRY_OK);
    CHECK(spry_random_ltd_set_state(l2, st, SPRY_RANDOM_LTD_N_STATE) == SPRY_OK);
    CHECK(spry_random_ltd_current(l2) == 10);
    CHECK(spry_random_ltd_consumed_layer_tokens(l2) == spry_random_ltd_consumed_layer_tokens(ltd));
    CHECK(spry_random_ltd_update(l2, 0) == 10); // the restored counter behaves as the original
    CHECK(spry_random_ltd_update(ltd, 0) == 10);
    CHECK(spry_random_ltd_consumed_layer_tokens(l2) == spry_random_ltd_consumed_layer_tokens(ltd));
    st[3] = 99;
    CHECK(spry_random_ltd_set_state(l2, st, SPRY_RANDOM_LTD_N_STATE) == SPRY_ERR_FORMAT);
    CHECK(spry_random_ltd_set_state(l2, st, 3) == SPRY_ERR_FORMAT);
    spry_random_ltd_free(l2);
    spry_random_ltd_free(ltd);
}

static void test_config_errors(void) {
    spry_random_ltd_params q = params(4, 1, 3, 2, 10, 8, 2);
    CHECK(spry_random_ltd_params_validate(&q, 4) == SPRY_OK);
    CHECK(spry_random_ltd_params_validate(&q, 6) == SPRY_ERR_CONFIG); // total_layer_num != L
    spry_random_ltd_params e = q;
    e.random_ltd_layer_num   = 3;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.random_ltd_layer_id[1] = 1;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.random_ltd_layer_id[1] = 4;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.min_value = -1;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.max_value = 1;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.require_steps = -1;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.seq_per_step = 0;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.schedule_type = "fixed_root";
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.layer_token_lr_enabled = true;
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    e = q, e.model_type = "encoder"; // BERT's; the technique table checks it against the model
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_OK);
    e = q, e.model_type = "seq2seq";
    CHECK(spry_random_ltd_params_validate(&e, 4) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "model_type") != NULL);
}

/* ---- the index sampler ----------------------------------------------------------------------- */

static void test_sampler(void) {
    // sorted, distinct, in range, for several (S, r) incl. r = S
    const int64_t cases[][2] = {{1, 1}, {7, 3}, {16, 16}, {33, 1}, {100, 64}, {2048, 128}};
    int bad                  = 0;
    for (int c = 0; c < 6; c++) {
        int64_t S = cases[c][0], r = cases[c][1], B = 5;
        int32_t *k = malloc((size_t)(B * r) * sizeof *k);
        spry_random_ltd_sample(9, 4, 1, 2, 0, B, S, r, k);
        for (int64_t i = 0; i < B * r; i++)
            bad += k[i] < 0 || k[i] >= S || (i % r && k[i] <= k[i - 1]);
        free(k);
    }
    CHECK_MSG(bad == 0, "%d unsorted / repeated / out-of-range indices", bad);
    // inclusion probability r/S per position: chi-square over N rows, S - 1 = 15 degrees of
    // freedom; 37.7 is the 0.1% critical value (the draws are fixed, so the test is deterministic)
    enum { S = 16, R = 5, N = 4000 };
    int32_t *k     = malloc(sizeof(int32_t) * N * R);
    int64_t cnt[S] = {0};
    spry_random_ltd_sample(1234, 0, 0, 1, 0, N, S, R, k);
    for (int i = 0; i < N * R; i++)
        cnt[k[i]]++;
    double e = (double)N * R / S, chi = 0;
    for (int s = 0; s < S; s++)
        chi += (cnt[s] - e) * (cnt[s] - e) / e;
    printf("inclusion chi-square %.2f (15 dof), ", chi);
    CHECK_MSG(chi < 37.7, "inclusion chi-square %.2f (counts e.g. %lld vs %.1f)", chi,
              (long long)cnt[0], e);
    // pairwise independence across layers: P(position in both layer 1 and layer 2) ~ (r/S)^2
    int32_t *k2 = malloc(sizeof(int32_t) * N * R);
    spry_random_ltd_sample(1234, 0, 0, 2, 0, N, S, R, k2);
    int64_t both = 0;
    for (int b = 0; b < N; b++)
        for (int i = 0; i < R; i++)
            for (int j = 0; j < R; j++)
                both += k[b * R + i] == k2[b * R + j];
    double pe = (double)N * S * (R / (double)S) * (R / (double)S);
    printf("joint inclusions %lld vs %.1f expected\n", (long long)both, pe);
    CHECK_MSG(fabs((double)both - pe) < 5 * sqrt(pe), "joint inclusions %lld vs %.1f",
              (long long)both, pe);
    // reproducible: a recomputed draw is identical; any key component changes it
    int32_t a[4 * 6], b[4 * 6];
    spry_random_ltd_sample(5, 10, 2, 3, 8, 4, 20, 6, a);
    spry_random_ltd_sample(5, 10, 2, 3, 8, 4, 20, 6, b);
    CHECK(!memcmp(a, b, sizeof a));
    spry_random_ltd_sample(5, 10, 2, 3, 8 + 1, 3, 20, 6, b); // rows shift by one sample
    CHECK(!memcmp(a + 6, b, sizeof(int32_t) * 18));
    const int64_t var[4][4] = {{6, 10, 2, 3}, {5, 11, 2, 3}, {5, 10, 3, 3}, {5, 10, 2, 4}};
    for (int v = 0; v < 4; v++) {
        spry_random_ltd_sample((uint64_t)var[v][0], var[v][1], var[v][2], var[v][3], 8, 4, 20, 6,
                               b);
        CHECK_MSG(memcmp(a, b, sizeof a), "key variant %d gave the same indices", v);
    }
    free(k), free(k2);
}

/* ---- routed models --------------------------------------------------------------------------- */

static spry_model *tiny(spry_arch arch, int64_t L, uint64_t seed) {
    spry_model_config c = spry_model_config_gpt2(29, 24, 24, L, 3);
    if (arch == SPRY_ARCH_BLOOM)
        c.arch = SPRY_ARCH_BLOOM, c.n_positions = 0;
    spry_model *m = NULL;
    CHECK(spry_model_init(&c, &m) == SPRY_OK);
    spry_model_init_weights(m, seed);
    return m;
}

// Logits of the model (gradients off) for ids (B, T), copied into out.
static void logits(spry_model *m, const int32_t *ids, int64_t B, int64_t T,
                   const spry_token_route *rt, int64_t n_rt, float *out) {
    spry_ctx *ctx = spry_ctx_init(1 << 20, 2);
    spry_ctx_set_grad(ctx, false);
    spry_tensor *it = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T));
    memcpy(it->data, ids, (size_t)(B * T) * sizeof(int32_t));
    spry_tensor *lg = spry_model_forward_ex(m, ctx, it, rt, n_rt);
    CHECK(spry_ctx_status(ctx) == SPRY_OK);
    memcpy(out, lg->data, (size_t)(B * T * m->cfg.vocab_size) * sizeof(float));
    spry_ctx_free(ctx);
}

// Dropped tokens skip every (routed) layer: their logits are the LM head on ln_f(embedding).
static void embed_only_logits(spry_model *m, const int32_t *ids, int64_t T, float *out) {
    spry_ctx *ctx = spry_ctx_init(1 << 20, 1);
    spry_ctx_set_grad(ctx, false);
    const spry_model_config *c = &m->cfg;
    spry_tensor *it            = spry_new(ctx, SPRY_DTYPE_I32, 1, &T);
    memcpy(it->data, ids, (size_t)T * sizeof(int32_t));
    spry_tensor *x = spry_embedding(ctx, m->wte, it); // (T, C)
    if (c->arch == SPRY_ARCH_GPT2) {
        spry_tensor *pos = spry_new(ctx, SPRY_DTYPE_I32, 1, &T);
        for (int64_t t = 0; t < T; t++)
            ((int32_t *)pos->data)[t] = (int32_t)t;
        x = spry_add(ctx, x, spry_embedding(ctx, m->wpe, pos));
    } else {
        x = spry_layernorm(ctx, x, m->emb_ln_w, m->emb_ln_b, c->layer_norm_eps);
    }
    x = spry_linear(ctx, spry_layernorm(ctx, x, m->lnf_w, m->lnf_b, c->layer_norm_eps), m->wte,
                    NULL);
    memcpy(out, x->data, (size_t)(T * c->vocab_size) * sizeof(float));
    spry_ctx_free(ctx);
}

static float max_abs_diff(const float *a, const float *b, int64_t n) {
    float d = 0;
    for (int64_t i = 0; i < n; i++)
        d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

// A 1-layer model with its layer routed equals, at the kept positions, the plain model on the
// kept subsequence -- for GPT-2 with the position table rows permuted to the kept tokens' original
// positions; for BLOOM with a contiguous kept window (ALiBi sees only differences) -- and at the
// dropped positions the embedding-only logits.
static void test_routed_equals_subsequence(spry_arch arch) {
    enum { B = 2, T = 13, R = 6 };
    const int64_t V = 29;
    spry_model *m   = tiny(arch, 1, 21);
    int32_t ids[B * T], kept[B * R];
    for (int i = 0; i < B * T; i++)
        ids[i] = (int32_t)(spry_rng_uniform(4, 0, (uint64_t)i) * (float)V);
    if (arch == SPRY_ARCH_GPT2) {
        spry_random_ltd_sample(77, 1, 0, 0, 0, B, T, R, kept);
    } else {
        for (int b = 0; b < B; b++)
            for (int j = 0; j < R; j++)
                kept[b * R + j] = 3 + 2 * b + j;
    }
    float *full = malloc(sizeof(float) * B * T * V), *sub = malloc(sizeof(float) * R * V),
          *emb          = malloc(sizeof(float) * T * V);
    spry_token_route rt = {.kept = kept, .r = R};
    logits(m, ids, B, T, &rt, 1, full);
    float worst = 0, worst_drop = 0;
    for (int b = 0; b < B; b++) {
        spry_model *ms = tiny(arch, 1, 21);
        int32_t sid[R];
        for (int j = 0; j < R; j++)
            sid[j] = ids[b * T + kept[b * R + j]];
        if (arch == SPRY_ARCH_GPT2)
            for (int j = 0; j < R; j++)
                memcpy(F(ms->wpe) + j * 24, F(m->wpe) + kept[b * R + j] * 24, 24 * sizeof(float));
        logits(ms, sid, 1, R, NULL, 0, sub);
        for (int j = 0; j < R; j++)
            worst =
                fmaxf(worst, max_abs_diff(full + (b * T + kept[b * R + j]) * V, sub + j * V, V));
        embed_only_logits(m, ids + b * T, T, emb);
        for (int t = 0; t < T; t++) {
            int is_kept = 0;
            for (int j = 0; j < R; j++)
                is_kept |= kept[b * R + j] == t;
            if (!is_kept)
                worst_drop =
                    fmaxf(worst_drop, max_abs_diff(full + (b * T + t) * V, emb + t * V, V));
        }
        spry_model_free(ms);
    }
    printf("%s: routed vs subsequence max |diff| %.3g, dropped vs embedding-only %.3g\n",
           arch == SPRY_ARCH_GPT2 ? "gpt2" : "bloom", (double)worst, (double)worst_drop);
    CHECK_MSG(worst < 1e-5f, "%s: routed kept logits differ from the subsequence by %g",
              arch == SPRY_ARCH_GPT2 ? "gpt2" : "bloom", (double)worst);
    CHECK_MSG(worst_drop < 1e-5f, "%s: dropped logits differ from embedding-only by %g",
              arch == SPRY_ARCH_GPT2 ? "gpt2" : "bloom", (double)worst_drop);
    // BLOOM with gaps: the bias follows the original positions, so the result differs from the
    // window computation (positions compacted to 0..r-1) -- a sanity check that they are used
    if (arch == SPRY_ARCH_BLOOM) {
        int32_t gap[B * R];
        for (int i = 0; i < B * R; i++)
            gap[i] = (int32_t)(i % R) * 2;
        spry_token_route rg = {.kept = gap, .r = R};
        logits(m, ids, B, T, &rg, 1, full);
        int32_t sid[R];
        for (int j = 0; j < R; j++)
            sid[j] = ids[gap[j]];
        logits(m, sid, 1, R, NULL, 0, sub);
        float dk = 0;
        for (int j = 1; j < R; j++)
            dk = fmaxf(dk, max_abs_diff(full + gap[j] * V, sub + j * V, V));
        CHECK_MSG(dk > 1e-4f, "bloom: gapped positions had no effect on ALiBi (%g)", (double)dk);
    }
    free(full), free(sub), free(emb);
    spry_model_free(m);
}

// Loss through the technique's routes (a deep model, middle layers routed) with gradients on.
static float routed_loss(spry_model *m, spry_random_ltd *ltd, const int32_t *tok, int64_t B,
                         int64_t T1, bool training, bool *routed) {
    spry_ctx *ctx  = spry_ctx_init(1 << 20, 2);
    spry_tensor *t = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T1));
    memcpy(t->data, tok, (size_t)(B * T1) * sizeof(int32_t));
    spry_token_route routes[4];
    *routed        = spry_random_ltd_routes(ltd, 3, 0, 0, B, T1 - 1, training, routes, NULL);
    spry_tensor *l = spry_model_loss_ex(m, ctx, t, routes, 4);
    CHECK(spry_backward(ctx, l) == SPRY_OK);
    float v = F(l)[0];
    spry_ctx_free(ctx);
    return v;
}

static void test_passthrough(spry_arch arch) {
    enum { B = 2, T1 = 11 };
    spry_model *m = tiny(arch, 4, 8);
    int32_t tok[B * T1];
    for (int i = 0; i < B * T1; i++)
        tok[i] = (int32_t)(spry_rng_uniform(5, 0, (uint64_t)i) * 29.0f);
    spry_ctx *ctx  = spry_ctx_init(1 << 20, 2);
    spry_tensor *t = spry_new(ctx, SPRY_DTYPE_I32, 2, SPRY_SHAPE(B, T1));
    memcpy(t->data, tok, sizeof tok);
    spry_tensor *l0 = spry_model_loss(m, ctx, t);
    CHECK(spry_backward(ctx, l0) == SPRY_OK);
    float base = F(l0)[0];
    spry_ctx_free(ctx);
    bool routed;
    // r >= S (r = max = S = 10 and r = 12 > S): no routes, bit-identical
    spry_random_ltd *ltd;
    spry_random_ltd_params q = params(4, 1, 3, 10, 10, 5, 1);
    CHECK(spry_random_ltd_init(&q, 4, &ltd) == SPRY_OK);
    float l = routed_loss(m, ltd, tok, B, T1, true, &routed);
    CHECK(!routed && l == base);
    spry_random_ltd_free(ltd);
    q = params(4, 1, 3, 12, 16, 5, 4);
    CHECK(spry_random_ltd_init(&q, 4, &ltd) == SPRY_OK);
    l = routed_loss(m, ltd, tok, B, T1, true, &routed);
    CHECK(!routed && l == base);
    spry_random_ltd_free(ltd);
    // eval (training false): pass-through even with r < S
    q = params(4, 1, 3, 4, 10, 5, 2);
    CHECK(spry_random_ltd_init(&q, 4, &ltd) == SPRY_OK);
    l = routed_loss(m, ltd, tok, B, T1, false, &routed);
    CHECK(!routed && l == base);
    // dropping: differs, finite, and reproducible when recomputed
    float l1 = routed_loss(m, ltd, tok, B, T1, true, &routed);
    CHECK(routed && l1 != base && isfinite(l1));
    float l2 = routed_loss(m, ltd, tok, B, T1, true, &routed);
    CHECK(l1 == l2);
    spry_random_ltd_free(ltd);
    spry_model_free(m);
}

/* ---- trainer integration --------------------------------------------------------------------- */

typedef struct synth {
    int64_t pos;
} synth;
static spry_status synth_next(void *self, int32_t *tokens, int64_t B, int64_t T1) {
    synth *s = self;
    for (int64_t i = 0; i < B * T1; i++)
        tokens[i] = (int32_t)((uint64_t)(s->pos + i) * 7 % 29);
    s->pos += B * T1;
    return SPRY_OK;
}
static int synth_get(void *self, int64_t st[8]) {
    st[0] = ((synth *)self)->pos;
    return 1;
}
static spry_status synth_set(void *self, const int64_t *st, int n) {
    ((synth *)self)->pos = n == 1 ? st[0] : 0;
    return SPRY_OK;
}

// Losses of n steps of a 4-layer GPT-2; with_ltd: the technique with layers 1..2 and [m, M].
// Steps [from, to) (resuming from dir's checkpoint when from > 0; saving after the last step
// when save).
static void train_range(const char *dir, bool with_ltd, int64_t m, int64_t M, int from, int to,
                        bool save, float *loss, int64_t *consumed) {
    int n             = 4;
    spry_model *model = tiny(SPRY_ARCH_GPT2, 4, 3);
    char json[1024];
    spry_ds_config cfg;
    snprintf(json, sizeof json,
             "{\"train_micro_batch_size_per_gpu\": 2, \"gradient_accumulation_steps\": 2,"
             " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 3e-3}},"
             " \"steps_per_print\": 1000, \"csv_monitor\": {\"enabled\": false, \"output_path\": "
             "\"%s\"}}",
             dir);
    CHECK_MSG(spry_ds_config_parse(json, "test", 1, &cfg) == SPRY_OK, "%s", spry_last_error());
    synth s               = {0};
    spry_batch_source src = {
        .self = &s, .next = synth_next, .get_state = synth_get, .set_state = synth_set};
    spry_trainer_params p = spry_trainer_params_default();
    p.out_dir = dir, p.n_steps = n, p.seq_len = 16, p.n_threads = 2, p.progress = 0;
    spry_trainer *tr = NULL;
    CHECK_MSG(spry_trainer_init(model, &cfg, src, &p, &tr) == SPRY_OK, "%s", spry_last_error());
    spry_random_ltd *ltd = NULL;
    if (with_ltd && tr) {
        spry_random_ltd_params q = params(4, 1, 3, m, M, 4, 4);
        const spry_technique_vt *vt;
        void *st;
        q.global_batch_size = 4;
        CHECK(spry_random_ltd_technique(&q, 4, &vt, &st) == SPRY_OK);
        ltd = st;
        CHECK(spry_trainer_add_technique(tr, vt, st) == SPRY_OK);
    }
    if (tr && from > 0)
        CHECK_MSG(spry_trainer_resume(tr, NULL) == SPRY_OK, "%s", spry_last_error());
    for (int i = from; tr && i < to; i++) {
        bool skipped;
        CHECK(spry_trainer_step(tr, &loss[i], &skipped) == SPRY_OK);
    }
    if (tr && save)
        CHECK_MSG(spry_trainer_save(tr) == SPRY_OK, "%s", spry_last_error());
    if (consumed)
        *consumed = ltd ? spry_random_ltd_consumed_layer_tokens(ltd) : 0;
    spry_trainer_free(tr);
    spry_ds_config_free(&cfg);
    spry_model_free(model);
}

static void train(const char *dir, bool with_ltd, int64_t m, int64_t M, int n, float *loss,
                  int64_t *consumed) {
    train_range(dir, with_ltd, m, M, 0, n, false, loss, consumed);
}

static void test_trainer(void) {
    char dir[] = "/tmp/spry_ltd_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    enum { N = 4 };
    float base[N], same[N], drop1[N], drop2[N];
    int64_t consumed = 0;
    train(dir, false, 0, 0, N, base, NULL);
    train(dir, true, 16, 16, N, same, NULL); // min = max = S: never drops
    CHECK_MSG(!memcmp(base, same, sizeof base),
              "min = max = S differs from the baseline: %.9g vs %.9g", (double)base[N - 1],
              (double)same[N - 1]);
    train(dir, true, 4, 16, N, drop1, &consumed); // r = 4, 4, 8, 12 over steps 0..3
    train(dir, true, 4, 16, N, drop2, NULL);
    CHECK(!memcmp(drop1, drop2, sizeof drop1)); // reproducible
    CHECK(drop1[0] != base[0] && drop1[N - 1] != base[N - 1]);
    // consumed layer-tokens: 4 samples per step, r * 2 + 16 * 2 per sample
    CHECK_MSG(consumed == 4 * ((4 + 4 + 8 + 12) * 2 + 4 * 16 * 2), "consumed %lld",
              (long long)consumed);
    // checkpoint after 2 steps, resume, 2 more: the same losses and token count
    float split[N];
    int64_t consumed2 = 0;
    train_range(dir, true, 4, 16, 0, 2, true, split, NULL);
    train_range(dir, true, 4, 16, 2, N, false, split, &consumed2);
    CHECK(!memcmp(split, drop1, sizeof split));
    CHECK_MSG(consumed2 == consumed, "resumed consumed %lld vs %lld", (long long)consumed2,
              (long long)consumed);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    test_gather_scatter();
    test_schedule();
    test_config_errors();
    test_sampler();
    test_routed_equals_subsequence(SPRY_ARCH_GPT2);
    test_routed_equals_subsequence(SPRY_ARCH_BLOOM);
    test_passthrough(SPRY_ARCH_GPT2);
    test_passthrough(SPRY_ARCH_BLOOM);
    test_trainer();
    return check_exit();
}
