// ctest-label: unit
/*
 * test_sample.c -- sampling: greedy is argmax, top-k/top-p restrict the support as Hugging Face's
 * warpers do (min-p included), penalties change exactly the logits they should, empirical frequencies match softmax(logits / T) (within 4 standard errors), a seed
 * and position give the same token, and spry_generate stops at the stop id.
 */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "spry/sample.h"

int main(void) {
    float logits[5] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f};
    float scratch[15];
    spry_sample_params p = spry_sample_params_default();
    p.temperature = 0;
    CHECK(spry_sample(logits, 5, &p, 0, scratch) == 1);
    p.temperature = 1, p.top_k = 1;
    for (int i = 0; i < 50; i++) CHECK(spry_sample(logits, 5, &p, (uint64_t)i, scratch) == 1);
    p.top_k = 2;
    int seen[5] = {0};
    for (int i = 0; i < 2000; i++) seen[spry_sample(logits, 5, &p, (uint64_t)i, scratch)]++;
    CHECK(seen[0] == 0 && seen[3] == 0 && seen[4] == 0 && seen[1] > seen[2] && seen[2] > 0);
    // top_p: p(1) = 0.5146..., p(2) = 0.3121...; top_p 0.5 keeps only token 1, 0.8 keeps 1 and 2
    p.top_k = 0, p.top_p = 0.5f;
    for (int i = 0; i < 50; i++) CHECK(spry_sample(logits, 5, &p, (uint64_t)i, scratch) == 1);
    p.top_p = 0.8f;
    int s2[5] = {0};
    for (int i = 0; i < 2000; i++) s2[spry_sample(logits, 5, &p, (uint64_t)i, scratch)]++;
    CHECK(s2[1] + s2[2] == 2000 && s2[2] > 0);
    // frequencies vs softmax(logits / 0.7)
    p.top_p = 1.0f, p.temperature = 0.7f;
    int    cnt[5] = {0}, N = 20000;
    double z = 0, q[5];
    for (int v = 0; v < 5; v++) z += exp(logits[v] / 0.7);
    for (int v = 0; v < 5; v++) q[v] = exp(logits[v] / 0.7) / z;
    for (int i = 0; i < N; i++) cnt[spry_sample(logits, 5, &p, (uint64_t)i, scratch)]++;
    for (int v = 0; v < 5; v++) {
        double se = sqrt(q[v] * (1 - q[v]) / N);
        CHECK_MSG(fabs(cnt[v] / (double)N - q[v]) < 4 * se + 1e-4, "token %d: %.4f vs %.4f", v, cnt[v] / (double)N, q[v]);
    }
    // determinism
    p.seed = 99;
    CHECK(spry_sample(logits, 5, &p, 17, scratch) == spry_sample(logits, 5, &p, 17, scratch));

    // min_p (HF MinPLogitsWarper): T = 1, p(1) = 0.5146, p(2) = 0.3121, p(0) = 0.0696; min_p 0.5 keeps 1 and 2 (0.3121 >= 0.2573)
    p.temperature = 1.0f, p.top_p = 1.0f, p.top_k = 0, p.min_p = 0.5f, p.seed = 0;
    int s3[5] = {0};
    for (int i = 0; i < 3000; i++) s3[spry_sample(logits, 5, &p, (uint64_t)i, scratch)]++;
    CHECK(s3[1] + s3[2] == 3000 && s3[2] > 0);
    p.min_p = 0.7f; // 0.3121 < 0.36: only token 1
    for (int i = 0; i < 50; i++) CHECK(spry_sample(logits, 5, &p, (uint64_t)i, scratch) == 1);
    p.min_p = 0.0f;

    // penalties, by hand: repetition 2 over the context, frequency 0.5 and presence 0.25 over the
    // generated part (the last 3 of 5 context tokens)
    float             lg[5] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f}, counts[5];
    int32_t           ctxt[5] = {3, 1, 1, 1, 4};
    spry_sample_params pq = spry_sample_params_default();
    pq.repetition_penalty = 2.0f;
    spry_sample_penalize(lg, 5, ctxt, 5, 3, &pq, counts);
    CHECK(lg[0] == 1.0f && lg[1] == 1.5f && lg[2] == 2.5f && lg[3] == -2.0f && lg[4] == 0.0f);
    pq.repetition_penalty = 1.0f, pq.frequency_penalty = 0.5f, pq.presence_penalty = 0.25f;
    spry_sample_penalize(lg, 5, ctxt, 5, 3, &pq, counts);
    // generated: 1, 1, 4 -> token 1: count 2 -> -1.25; token 4: count 1 -> -0.75; token 3 (prompt) untouched
    CHECK_NEAR(lg[1], 1.5 - 1.25, 1e-6);
    CHECK_NEAR(lg[4], 0.0 - 0.75, 1e-6);
    CHECK(lg[3] == -2.0f && lg[0] == 1.0f);

    // generate: a tiny model, greedy, stop id honoured, output length bounded
    spry_model_config mc = spry_model_config_gpt2(11, 16, 12, 1, 2);
    spry_model       *m;
    CHECK(spry_model_init(&mc, &m) == SPRY_OK);
    spry_model_init_weights(m, 3);
    spry_ctx *ctx = spry_ctx_init(1 << 20, 1);
    int32_t   prompt[2] = {1, 2}, out[40];
    int64_t   n;
    spry_sample_params g = spry_sample_params_default();
    g.temperature = 0;
    CHECK(spry_generate(m, ctx, prompt, 2, 30, -1, &g, out, &n) == SPRY_OK && n == 32);
    CHECK(out[0] == 1 && out[1] == 2);
    int32_t stop = out[2];
    CHECK(spry_generate(m, ctx, prompt, 2, 30, stop, &g, out, &n) == SPRY_OK && n == 3);
    int32_t bad[1] = {11};
    CHECK(spry_generate(m, ctx, bad, 1, 3, -1, &g, out, &n) == SPRY_ERR_ARG);
    spry_ctx_free(ctx);
    spry_model_free(m);
    return check_exit();
}
