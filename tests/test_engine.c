// ctest-label: ref
/*
 * test_engine.c -- the serving engine (engine.h) against PyTorch and against itself.
 *
 * With the golden files of scripts/ref/gen_models.py (tiny GPT-2 with 3 heads of width 10 and
 * BLOOM with 6 heads of width 6, float64 PyTorch; fixture "ref"; exit 77 without them):
 *   - logits of every position through the engine's paged forward (spry_engine_score, block size
 *     3 so sequences span several blocks, chunks of 4 positions): NMSE <= 1e-10 against PyTorch
 *     with an f32 KV cache, <= 1e-8 with an f16 one;
 *   - 20 greedy tokens after a 4-token prompt equal PyTorch's greedy continuation (recomputed
 *     without a cache in float64), and spry_generate_cached's (the single-sequence KV path).
 * On random models of the same shapes:
 *   - batch invariance: 8 concurrent requests (greedy and seeded sampling with penalties, different
 *     prompt lengths) give exactly the tokens of the same requests run one at a time;
 *   - a pool of one context's worth of blocks forces preemption (counted) and changes nothing;
 *   - prefix cache: a second prompt sharing 3 full blocks reuses them (hits counted) and gives
 *     the tokens of a cache-less engine;
 *   - cancellation: the callback gets CANCELLED and every block comes back;
 *   - stop ids end a request with STOP; max_tokens with LENGTH;
 *   - errors: prompt + max_tokens above n_ctx (OpenAI's wording), empty prompt, unknown token,
 *     bad engine parameters -- each SPRY_ERR_ARG with a message, nothing queued.
 * Weight formats (a GPT-2 of width 64 with init std 0.2, so logits are far from uniform):
 *   - bf16, f16, Q8_0, Q4_0 (with their default f16 KV cache), and f32 with an f16 cache: logits
 *     over 40 positions within a mean KL(f32 || format) of KL_MAX[fmt] of the f32 engine's, and 8
 *     concurrent requests == the same requests run alone.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spry/engine.h"
#include "spry/hf_checkpoint.h"
#include "spry/kv_cache.h"
#include "spry/safetensors.h"

#define LOGITS_NMSE        1e-10
#define LOGITS_NMSE_F16_KV 1e-8 // keys and values rounded to 11 significant bits
#define MAXTOK      64

typedef struct result {
    int32_t     tok[MAXTOK];
    int         n;
    spry_finish finish;
} result;

// Callbacks land in sink->r[id - sink->first].
typedef struct sink {
    result *r;
    int64_t first;
} sink;

static void on_token(void *user, int64_t id, int32_t token, spry_finish f) {
    sink   *k = user;
    result *r = k->r + (id - k->first);
    if (token >= 0 && r->n < MAXTOK) r->tok[r->n++] = token;
    if (f != SPRY_FINISH_NONE) r->finish = f;
}

static void run_all(spry_engine *e) {
    bool busy = true;
    for (int guard = 0; busy && guard < 100000; guard++) CHECK(spry_engine_step(e, &busy) == SPRY_OK);
}

static void test_reference(const char *dir, const char *arch) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, arch);
    spry_model *m;
    if (spry_model_load_dir(path, &m)) {
        CHECK_MSG(0, "%s: %s", arch, spry_last_error());
        return;
    }
    snprintf(path, sizeof path, "%s/%s/ref.safetensors", dir, arch);
    spry_safetensors *ref;
    if (spry_safetensors_open(path, &ref)) {
        CHECK_MSG(0, "%s", spry_last_error());
        spry_model_free(m);
        return;
    }
    const spry_st_tensor_info *tk = spry_safetensors_find(ref, "tokens"), *lg = spry_safetensors_find(ref, "logits");
    const spry_st_tensor_info *gr = spry_safetensors_find(ref, "greedy");
    CHECK(tk && lg && gr);
    spry_engine_params p = spry_engine_params_default();
    p.block_tokens = 3, p.max_seqs = 3, p.max_batch_tokens = 8, p.n_threads = 2;
    int64_t V = m->cfg.vocab_size, B = tk->shape[0], T1 = tk->shape[1], T = T1 - 1;
    float  *ours = malloc(sizeof(float) * (size_t)(T * V));
    double  worst = 0, worst16 = 0;
    spry_engine *e;
    for (int kv = 1; kv >= 0; kv--) { // the f16 cache, then the f32 one (kept for the tokens below)
        p.kv_type = kv ? SPRY_KV_F16 : SPRY_KV_F32;
        CHECK(spry_engine_init(m, &p, &e) == SPRY_OK);
        double *w = kv ? &worst16 : &worst;
        for (int64_t b = 0; b < B; b++) {
            int32_t ids[64];
            for (int64_t t = 0; t < T; t++) ids[t] = ((const int32_t *)tk->data)[b * T1 + t];
            CHECK(spry_engine_score(e, ids, T, ours) == SPRY_OK);
            const float *theirs = (const float *)lg->data + b * T * V;
            double       num = 0, den = 0;
            for (int64_t i = 0; i < T * V; i++) {
                num += ((double)ours[i] - theirs[i]) * ((double)ours[i] - theirs[i]);
                den += (double)theirs[i] * theirs[i];
            }
            *w = fmax(*w, num / den);
        }
        if (kv) spry_engine_free(e);
    }
    CHECK_MSG(worst <= LOGITS_NMSE, "%s: engine logits NMSE %.3g", arch, worst);
    CHECK_MSG(worst16 <= LOGITS_NMSE_F16_KV, "%s: engine logits NMSE %.3g with an f16 cache", arch, worst16);
    // greedy continuation: PyTorch, the engine, the single-sequence cache
    const int32_t *g = gr->data;
    int64_t        ng = gr->shape[0], np = 4;
    result         r[1] = {0};
    sink           k    = {r, 0};
    spry_request   q    = {.prompt = g, .n_prompt = np, .max_tokens = ng - np, .on_token = on_token, .user = &k};
    q.sample             = spry_sample_params_default();
    q.sample.temperature = 0;
    int64_t id;
    CHECK(spry_engine_submit(e, &q, &id) == SPRY_OK && id == 0);
    run_all(e);
    int same = r[0].n == ng - np;
    for (int i = 0; same && i < r[0].n; i++) same = r[0].tok[i] == g[np + i];
    CHECK_MSG(same && r[0].finish == SPRY_FINISH_LENGTH, "%s: engine greedy tokens differ from PyTorch's", arch);
    spry_kv_cache *kv;
    spry_ctx      *ctx = spry_ctx_init(1 << 20, 2);
    CHECK(spry_kv_cache_init(m, ng, &kv) == SPRY_OK);
    int32_t out[64];
    int64_t nout;
    CHECK(spry_generate_cached(m, ctx, kv, g, np, ng - np, -1, &q.sample, out, &nout) == SPRY_OK);
    CHECK_MSG(nout == ng && !memcmp(out, g, sizeof(int32_t) * (size_t)ng), "%s: KV-cache greedy differs", arch);
    printf("%s: engine logits NMSE %.2e vs PyTorch (%.2e with an f16 cache); %lld greedy tokens equal PyTorch's\n",
           arch, worst, worst16, (long long)(ng - np));
    spry_kv_cache_free(kv);
    spry_ctx_free(ctx);
    free(ours);
    spry_engine_free(e);
    spry_safetensors_close(ref);
    spry_model_free(m);
}

/* ---- the engine against itself --------------------------------------------------------------- */

#define NREQ 8

static spry_request make_req(int i, int32_t *prompts, sink *res) {
    int32_t *pr = prompts + i * 32;
    int      n  = 3 + 5 * i % 17; // 3 .. 19 tokens
    for (int t = 0; t < n; t++) pr[t] = (int32_t)((i * 31 + t * 7 + 1) % 90);
    spry_request q = {.prompt = pr, .n_prompt = n, .max_tokens = 10 + i, .on_token = on_token, .user = res};
    q.sample = spry_sample_params_default();
    if (i % 2) { // seeded sampling with penalties on the odd ones
        q.sample.temperature = 0.9f, q.sample.top_p = 0.95f, q.sample.seed = (uint64_t)(100 + i);
        q.sample.frequency_penalty = 0.5f, q.sample.repetition_penalty = 1.2f;
    } else {
        q.sample.temperature = 0;
    }
    return q;
}

// Runs the NREQ requests concurrently (all submitted at once) on engine params p; ids 0..NREQ-1.
static void run_batch(spry_model *m, spry_engine_params p, result *res, spry_engine_stats *st) {
    int32_t      prompts[NREQ * 32];
    spry_engine *e;
    memset(res, 0, sizeof(result) * NREQ);
    sink k = {res, 0};
    CHECK(spry_engine_init(m, &p, &e) == SPRY_OK);
    for (int i = 0; i < NREQ; i++) {
        spry_request q = make_req(i, prompts, &k);
        int64_t      id;
        CHECK(spry_engine_submit(e, &q, &id) == SPRY_OK && id == i);
    }
    run_all(e);
    spry_engine_stats_get(e, st);
    spry_engine_free(e);
}

static void test_batching(spry_arch arch) {
    spry_model_config c = spry_model_config_gpt2(97, 48, 30, 2, 3);
    if (arch == SPRY_ARCH_BLOOM) c.arch = SPRY_ARCH_BLOOM, c.n_positions = 0;
    spry_model *m;
    CHECK(spry_model_init(&c, &m) == SPRY_OK);
    spry_model_init_weights(m, 7);
    const char *name = arch == SPRY_ARCH_GPT2 ? "gpt2" : "bloom";
    // one at a time
    result alone[NREQ];
    memset(alone, 0, sizeof alone);
    spry_engine_params p = spry_engine_params_default();
    p.n_ctx = 48, p.block_tokens = 4, p.n_threads = 2, p.max_batch_tokens = 16;
    for (int i = 0; i < NREQ; i++) {
        int32_t      prompts[NREQ * 32];
        spry_engine *e;
        CHECK(spry_engine_init(m, &p, &e) == SPRY_OK);
        sink         k = {alone + i, 0}; // a fresh engine: id 0
        spry_request q = make_req(i, prompts, &k);
        int64_t      id;
        CHECK(spry_engine_submit(e, &q, &id) == SPRY_OK && id == 0);
        run_all(e);
        spry_engine_free(e);
        CHECK(alone[i].n == 10 + i || alone[i].finish == SPRY_FINISH_STOP);
    }
    // together, with a roomy pool and with a pool of exactly one context (preemption)
    for (int tight = 0; tight < 2; tight++) {
        result            res[NREQ];
        spry_engine_stats st;
        spry_engine_params q = p;
        q.n_blocks           = tight ? 12 : 0; // 48 tokens / 4
        run_batch(m, q, res, &st);
        int same = 1;
        for (int i = 0; i < NREQ; i++)
            same = same && res[i].n == alone[i].n && !memcmp(res[i].tok, alone[i].tok, sizeof(int32_t) * (size_t)res[i].n);
        CHECK_MSG(same, "%s: %d concurrent requests differ from sequential ones (tight pool %d)", name, NREQ, tight);
        CHECK(st.running == 0 && st.waiting == 0 && st.kv_blocks_used == 0 && st.requests_finished == NREQ);
        if (tight) CHECK_MSG(st.preemptions > 0, "%s: a one-context pool must preempt", name);
        printf("%s: %d concurrent requests == sequential (%s pool: %lld steps, %lld preemptions)\n", name, NREQ,
               tight ? "one-context" : "roomy", (long long)st.steps, (long long)st.preemptions);
    }
    // prefix cache: B shares A's first 12 tokens (3 blocks of 4)
    int32_t a[20], b[20];
    for (int t = 0; t < 20; t++) a[t] = b[t] = (int32_t)((t * 13 + 5) % 97);
    for (int t = 12; t < 20; t++) b[t] = (int32_t)((t * 3 + 1) % 97);
    result       r[2];
    sink         ka = {r, 0}, kb = {r, 1}; // A's tokens in r[0] (id 0), then B's in r[0] (id 1)
    spry_request qa = {.prompt = a, .n_prompt = 20, .max_tokens = 6, .on_token = on_token, .user = &ka};
    spry_request qb = qa;
    qb.prompt = b, qb.user = &kb;
    qa.sample = qb.sample = spry_sample_params_default();
    qa.sample.temperature = qb.sample.temperature = 0;
    int32_t ref_b[MAXTOK];
    int     nref_b = 0;
    for (int cache = 0; cache < 2; cache++) {
        spry_engine_params q = p;
        q.prefix_cache       = cache;
        spry_engine *e;
        memset(r, 0, sizeof r);
        CHECK(spry_engine_init(m, &q, &e) == SPRY_OK);
        int64_t id;
        qa.user = &ka;
        CHECK(spry_engine_submit(e, &qa, &id) == SPRY_OK);
        run_all(e);
        memset(r, 0, sizeof r);
        CHECK(spry_engine_submit(e, &qb, &id) == SPRY_OK && id == 1);
        run_all(e);
        spry_engine_stats st;
        spry_engine_stats_get(e, &st);
        if (!cache) {
            memcpy(ref_b, r[0].tok, sizeof(int32_t) * (size_t)r[0].n), nref_b = r[0].n;
            CHECK(st.prefix_hits == 0);
        } else {
            CHECK_MSG(st.prefix_hits == 3, "%s: prefix hits %lld, want 3", name, (long long)st.prefix_hits);
            CHECK(r[0].n == nref_b && !memcmp(r[0].tok, ref_b, sizeof(int32_t) * (size_t)nref_b));
            CHECK(st.kv_blocks_used == 0 && st.kv_blocks_cached > 0);
        }
        spry_engine_free(e);
    }
    // cancellation, stop ids, errors
    spry_engine *e;
    CHECK(spry_engine_init(m, &p, &e) == SPRY_OK);
    memset(r, 0, sizeof r);
    spry_request qc = qa;
    qc.max_tokens   = 20, qc.user = &ka;
    int64_t id;
    CHECK(spry_engine_submit(e, &qc, &id) == SPRY_OK);
    bool busy;
    for (int s = 0; s < 4; s++) spry_engine_step(e, &busy);
    spry_engine_stats st;
    spry_engine_stats_get(e, &st);
    CHECK(st.running == 1 && st.kv_blocks_used > 0);
    spry_engine_cancel(e, id);
    run_all(e);
    spry_engine_stats_get(e, &st);
    CHECK(r[0].finish == SPRY_FINISH_CANCELLED && st.kv_blocks_used == 0 && st.running == 0);
    // stop id: qa's third greedy token, given as a stop id, ends it there (or earlier)
    result r0[1] = {0};
    sink   k2 = {r0, 1}, k3 = {r, 2};
    spry_request qq = qa;
    qq.user         = &k2;
    CHECK(spry_engine_submit(e, &qq, &id) == SPRY_OK && id == 1);
    run_all(e);
    int32_t stop = r0[0].tok[2];
    memset(r, 0, sizeof r);
    spry_request qs = qa;
    qs.stop_ids = &stop, qs.n_stop_ids = 1, qs.user = &k3;
    CHECK(spry_engine_submit(e, &qs, &id) == SPRY_OK && id == 2);
    run_all(e);
    CHECK(r[0].finish == SPRY_FINISH_STOP && r[0].n <= 3 && r[0].tok[r[0].n - 1] == stop);
    // errors
    spry_request bad = qa;
    bad.max_tokens   = 40; // 20 + 40 > 48
    CHECK(spry_engine_submit(e, &bad, &id) == SPRY_ERR_ARG && strstr(spry_last_error(), "maximum context length is 48"));
    bad = qa, bad.n_prompt = 0;
    CHECK(spry_engine_submit(e, &bad, &id) == SPRY_ERR_ARG);
    int32_t oov = 97;
    bad = qa, bad.prompt = &oov, bad.n_prompt = 1;
    CHECK(spry_engine_submit(e, &bad, &id) == SPRY_ERR_ARG && strstr(spry_last_error(), "vocabulary"));
    bad = qa, bad.max_tokens = 0;
    CHECK(spry_engine_submit(e, &bad, &id) == SPRY_ERR_ARG);
    spry_engine_stats_get(e, &st);
    CHECK(st.waiting == 0);
    spry_engine_free(e);
    spry_engine_params bp = p;
    bp.n_blocks = 5; // < one context
    spry_engine *e2;
    CHECK(spry_engine_init(m, &bp, &e2) == SPRY_ERR_ARG && e2 == NULL && strstr(spry_last_error(), "n_blocks"));
    bp = p, bp.n_ctx = 49; // GPT-2: above n_positions
    if (arch == SPRY_ARCH_GPT2) CHECK(spry_engine_init(m, &bp, &e2) == SPRY_ERR_ARG && strstr(spry_last_error(), "n_ctx"));
    spry_model_free(m);
}

/* ---- weight formats ---------------------------------------------------------------------------- */

static double mean_kl(const float *p_logits, const float *q_logits, int64_t n, int64_t V) {
    double total = 0;
    for (int64_t r = 0; r < n; r++) {
        const float *a = p_logits + r * V, *b = q_logits + r * V;
        double       ma = -INFINITY, mb = -INFINITY, sa = 0, sb = 0, kl = 0;
        for (int64_t i = 0; i < V; i++) ma = fmax(ma, a[i]), mb = fmax(mb, b[i]);
        for (int64_t i = 0; i < V; i++) sa += exp(a[i] - ma), sb += exp(b[i] - mb);
        for (int64_t i = 0; i < V; i++) {
            double pa = exp(a[i] - ma) / sa, lpa = a[i] - ma - log(sa), lpb = b[i] - mb - log(sb);
            kl += pa * (lpa - lpb);
        }
        total += kl;
    }
    return total / (double)n;
}

static void test_formats(void) {
    // f32 bf16 f16 q8_0 q4_0 (every format but f32 with an f16 KV cache, AUTO), then f32 weights
    // with an f16 cache: measured 0, 5.0e-5, 5.9e-7, 5.9e-4, 8.0e-2, 1.8e-7 (Q4_0 steps are 16x
    // coarser than Q8_0, so ~250x the KL); the bounds leave 2.5-5x room
    static const double KL_MAX[SPRY_WFMT_COUNT + 1] = {0, 2e-4, 2e-6, 2e-3, 0.2, 1e-6};
    spry_model_config   c = spry_model_config_gpt2(97, 64, 64, 2, 4);
    c.init_std            = 0.2f;
    spry_model *m;
    CHECK(spry_model_init(&c, &m) == SPRY_OK);
    spry_model_init_weights(m, 3);
    int32_t ids[40];
    for (int t = 0; t < 40; t++) ids[t] = (int32_t)((t * 37 + 11) % 97);
    float *ref = malloc(sizeof(float) * 40 * 97), *got = malloc(sizeof(float) * 40 * 97);
    spry_engine_params p = spry_engine_params_default();
    p.n_ctx = 64, p.block_tokens = 8, p.n_threads = 2, p.max_batch_tokens = 16;
    for (int f = 0; f <= SPRY_WFMT_COUNT; f++) {
        const bool  f16_kv = f == SPRY_WFMT_COUNT;
        const char *name   = f16_kv ? "f32 (f16 cache)" : spry_wfmt_name(f);
        p.weight_format    = f16_kv ? SPRY_WFMT_F32 : (spry_wfmt)f;
        p.kv_type          = f16_kv ? SPRY_KV_F16 : SPRY_KV_AUTO;
        spry_engine *e;
        CHECK_MSG(spry_engine_init(m, &p, &e) == SPRY_OK, "%s: %s", name, spry_last_error());
        CHECK(spry_engine_score(e, ids, 40, f ? got : ref) == SPRY_OK);
        spry_engine_free(e);
        double kl = f ? mean_kl(ref, got, 40, 97) : 0;
        CHECK_MSG(kl <= KL_MAX[f], "%s: mean KL %.3g > %.3g", name, kl, KL_MAX[f]);
        // batch invariance in this format
        result alone[NREQ], res[NREQ];
        memset(alone, 0, sizeof alone);
        spry_engine_params q = p;
        q.n_ctx              = 48;
        for (int i = 0; i < NREQ; i++) {
            int32_t      prompts[NREQ * 32];
            sink         k = {alone + i, 0};
            spry_engine *e1;
            CHECK(spry_engine_init(m, &q, &e1) == SPRY_OK);
            spry_request r = make_req(i, prompts, &k);
            int64_t      id;
            CHECK(spry_engine_submit(e1, &r, &id) == SPRY_OK);
            run_all(e1);
            spry_engine_free(e1);
        }
        spry_engine_stats st;
        run_batch(m, q, res, &st);
        int same = 1;
        for (int i = 0; i < NREQ; i++)
            same = same && res[i].n == alone[i].n && !memcmp(res[i].tok, alone[i].tok, sizeof(int32_t) * (size_t)res[i].n);
        CHECK_MSG(same, "%s: concurrent requests differ from sequential ones", name);
        printf("%s weights: mean KL vs f32 %.2e (bound %.0e); %d concurrent == sequential\n", name, kl, KL_MAX[f],
               NREQ);
    }
    p.kv_type = (spry_kv_type)7;
    spry_engine *eb;
    CHECK(spry_engine_init(m, &p, &eb) == SPRY_ERR_ARG && eb == NULL && strstr(spry_last_error(), "kv_type 7"));
    p.kv_type = SPRY_KV_AUTO;
    // widths that are not multiples of 32 cannot be Q8_0
    spry_model_config c2 = spry_model_config_gpt2(97, 48, 30, 1, 3);
    spry_model       *m2;
    CHECK(spry_model_init(&c2, &m2) == SPRY_OK);
    spry_engine *e2;
    p.weight_format = SPRY_WFMT_Q8_0, p.n_ctx = 48;
    CHECK(spry_engine_init(m2, &p, &e2) == SPRY_ERR_ARG && e2 == NULL && strstr(spry_last_error(), "multiples of 32"));
    spry_model_free(m2);
    free(ref), free(got);
    spry_model_free(m);
}

int main(void) {
    const char *build = getenv("SPRY_BUILD_DIR");
    char        dir[1024];
    snprintf(dir, sizeof dir, "%s/ref", build ? build : "build");
    test_batching(SPRY_ARCH_GPT2);
    test_batching(SPRY_ARCH_BLOOM);
    test_formats();
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/gpt2/ref.safetensors", dir);
    FILE *f = fopen(probe, "rb");
    if (!f) {
        printf("no golden files in %s (python3-torch missing?): PyTorch parity skipped\n", dir);
        return check_exit() ? check_exit() : 77;
    }
    fclose(f);
    test_reference(dir, "gpt2");
    test_reference(dir, "bloom");
    return check_exit();
}
