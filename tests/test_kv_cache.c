// ctest-label: unit
/*
 * test_kv_cache.c -- incremental decoding equals the full forward: for GPT-2 and BLOOM (odd
 * widths, non-power-of-2 heads) the last-token logits after a prefill, and after a prefill
 * followed by single-token steps, match spry_model_forward over the whole sequence; greedy
 * decoding with the cache produces exactly spry_generate's tokens; the context limit and bad ids
 * are errors that leave the cache untouched.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spry/kv_cache.h"
#include "spry/sample.h"

static double nmse_last(const float *got, const spry_tensor *logits, int64_t t, int64_t V) {
    double num = 0, den = 0;
    const float *ref = (const float *)logits->data + t * V;
    for (int64_t v = 0; v < V; v++) num += (got[v] - ref[v]) * (double)(got[v] - ref[v]), den += (double)ref[v] * ref[v];
    return num / den;
}

static void check_arch(spry_arch arch) {
    spry_model_config mc = spry_model_config_gpt2(53, 40, 30, 2, 3);
    if (arch == SPRY_ARCH_BLOOM) mc.arch = SPRY_ARCH_BLOOM, mc.n_positions = 0, mc.n_head = 6, mc.n_embd = 36, mc.n_inner = 144;
    spry_model *m;
    CHECK(spry_model_init(&mc, &m) == SPRY_OK);
    spry_model_init_weights(m, 11);
    for (int64_t i = 0; i < m->params.n_elem; i++) // non-trivial biases and norms
        if (m->params.values[i] == 0.0f) m->params.values[i] = 0.01f * (float)((i * 7919) % 13 - 6);
    spry_ctx      *ctx = spry_ctx_init(1 << 20, 2);
    spry_kv_cache *kv;
    CHECK(spry_kv_cache_init(m, 32, &kv) == SPRY_OK);
    int32_t ids[7] = {3, 17, 42, 5, 0, 52, 9};
    float   lg[64];
    // reference: full forward over 7 tokens
    spry_ctx *rc = spry_ctx_init(1 << 20, 2);
    spry_ctx_set_grad(rc, false);
    spry_tensor *tid = spry_new(rc, SPRY_DTYPE_I32, 2, (int64_t[]){1, 7});
    memcpy(tid->data, ids, sizeof ids);
    spry_tensor *ref = spry_model_forward(m, rc, tid);
    // prefill of all 7
    CHECK(spry_model_decode(m, ctx, kv, ids, 7, lg) == SPRY_OK && kv->n == 7);
    double e1 = nmse_last(lg, ref, 6, 53);
    CHECK_MSG(e1 < 1e-10, "arch %d: prefill logits NMSE %.3g", (int)arch, e1);
    // prefill 3, then 4 single steps: every step's logits match the forward's row
    spry_kv_cache_clear(kv);
    CHECK(spry_model_decode(m, ctx, kv, ids, 3, lg) == SPRY_OK);
    CHECK(nmse_last(lg, ref, 2, 53) < 1e-10);
    for (int t = 3; t < 7; t++) {
        CHECK(spry_model_decode(m, ctx, kv, &ids[t], 1, lg) == SPRY_OK);
        double e = nmse_last(lg, ref, t, 53);
        CHECK_MSG(e < 1e-10, "arch %d: step %d NMSE %.3g", (int)arch, t, e);
    }
    // greedy with the cache == spry_generate (which recomputes the whole window)
    int32_t out[40];
    int64_t n_out;
    spry_sample_params g = spry_sample_params_default();
    g.temperature = 0;
    CHECK(spry_generate(m, rc, ids, 7, 20, -1, &g, out, &n_out) == SPRY_OK && n_out == 27);
    spry_kv_cache_clear(kv);
    CHECK(spry_model_decode(m, ctx, kv, ids, 7, lg) == SPRY_OK);
    bool same = true;
    for (int t = 7; t < 27; t++) {
        int32_t best = 0;
        for (int v = 1; v < 53; v++) best = lg[v] > lg[best] ? v : best;
        same = same && best == out[t];
        CHECK(spry_model_decode(m, ctx, kv, &best, 1, lg) == SPRY_OK);
    }
    CHECK_MSG(same, "arch %d: greedy continuation with the cache differs", (int)arch);
    // the library loop over the cache gives spry_generate's tokens, also when sampling
    int32_t out2[40];
    int64_t n2;
    CHECK(spry_generate_cached(m, ctx, kv, ids, 7, 20, -1, &g, out2, &n2) == SPRY_OK && n2 == 27);
    CHECK(!memcmp(out, out2, sizeof(int32_t) * 27));
    g.temperature = 0.9f, g.top_k = 10, g.seed = 5, g.repetition_penalty = 1.2f;
    CHECK(spry_generate(m, rc, ids, 7, 12, -1, &g, out, &n_out) == SPRY_OK);
    CHECK(spry_generate_cached(m, ctx, kv, ids, 7, 12, -1, &g, out2, &n2) == SPRY_OK && n2 == n_out);
    CHECK_MSG(!memcmp(out, out2, sizeof(int32_t) * (size_t)n_out), "arch %d: sampled tokens differ", (int)arch);
    CHECK(spry_generate_cached(m, ctx, kv, ids, 7, 30, -1, &g, out2, &n2) == SPRY_ERR_ARG);
    spry_kv_cache_clear(kv); // refill to 27 positions for the limit checks below
    CHECK(spry_model_decode(m, ctx, kv, ids, 7, lg) == SPRY_OK);
    for (int t = 7; t < 27; t++) CHECK(spry_model_decode(m, ctx, kv, &ids[t % 7], 1, lg) == SPRY_OK);
    // limits
    CHECK(kv->n == 27);
    int32_t many[8] = {0};
    CHECK(spry_model_decode(m, ctx, kv, many, 8, lg) == SPRY_ERR_ARG && kv->n == 27);
    CHECK(strstr(spry_last_error(), "exceed the context of 32") != NULL);
    int32_t bad = 53;
    CHECK(spry_model_decode(m, ctx, kv, &bad, 1, lg) == SPRY_ERR_ARG && kv->n == 27);
    spry_kv_cache *tmp;
    if (arch == SPRY_ARCH_GPT2) CHECK(spry_kv_cache_init(m, 41, &tmp) == SPRY_ERR_ARG && tmp == NULL);
    spry_kv_cache_free(kv);
    spry_ctx_free(ctx);
    spry_ctx_free(rc);
    spry_model_free(m);
}

int main(void) {
    check_arch(SPRY_ARCH_GPT2);
    check_arch(SPRY_ARCH_BLOOM);
    return check_exit();
}
