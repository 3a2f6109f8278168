/*
 * bench_infer.c -- prompt processing and generation speed of the serving engine (engine.h) on
 * GPT-2 124M shapes with random weights, batch 1, llama-bench's pp/tg convention:
 *   pp<N>: one prefill of N prompt tokens (logits of the last only), tokens/s, median of 5 runs;
 *   tg<N>: N tokens generated greedily after a 1-token prompt, tokens/s, median of 3 runs.
 * Also measures this machine's memory read bandwidth (a streaming AVX-512 sum over 1 GiB with the
 * same threads, best of 12) and prints the decode bound: read bandwidth / bytes of weights read per
 * token (every matrix once, the LM head included; embeddings are one row).
 *
 *   bench_infer [--format f32|bf16|f16|q8_0|q4_0] [--kv-type auto|f32|f16] [--pp 256] [--tg 128] [--threads 2]
 *               [--layers 12] [--embd 768] [--heads 12]
 * prints one line: SPRY format=<f> pp<N>_tokens_per_s=.. tg<N>_tokens_per_s=.. weight_mb=..
 *                  read_gbs=.. tg_bound_tokens_per_s=..
 */
#define _POSIX_C_SOURCE 200809L
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spry/cpu.h"
#include "spry/engine.h"

#include "bench_util.h"

// Sum of p[0..n) with 8 independent AVX-512 accumulators: a load-bound loop (n % 128 == 0).
__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n) {
    __m512 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 128)
        for (int k = 0; k < 8; k++) a[k] = _mm512_add_ps(a[k], _mm512_loadu_ps(p + i + 16 * k));
    for (int k = 1; k < 8; k++) a[0] = _mm512_add_ps(a[0], a[k]);
    return _mm512_reduce_add_ps(a[0]);
}

static float sum_scalar(const float *p, size_t n) {
    float a[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int k = 0; k < 8; k++) a[k] += p[i + k];
    return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
}

// Bytes per second of a streaming read over 1 GiB (each thread sums its half with independent
// vector accumulators, so loads, not adds, bound it), best of 12.
static double read_bandwidth(int threads) {
    size_t n   = (size_t)256 << 20;
    float *buf = malloc(n * sizeof(float));
    if (!buf) return 0;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i & 7);
    bool   avx = spry_cpu_detect().avx512f;
    double best = 0, sink = 0;
    for (int rep = 0; rep < 12; rep++) {
        double t0 = now(), s = 0;
#pragma omp parallel num_threads(threads) reduction(+ : s)
        {
            int    t = omp_get_thread_num(), nt = omp_get_num_threads();
            size_t chunk = n / (size_t)nt / 128 * 128, lo = (size_t)t * chunk;
            s += avx ? sum_avx512(buf + lo, chunk) : sum_scalar(buf + lo, chunk);
        }
        double t = now() - t0;
        sink += s;
        double bw = (double)(n / (size_t)threads / 128 * 128 * (size_t)threads * sizeof(float)) / t;
        if (bw > best) best = bw;
    }
    free(buf);
    return sink >= 0 ? best : 0;
}

static void on_token(void *user, int64_t id, int32_t token, spry_finish f) {
    (void)id, (void)token;
    if (f != SPRY_FINISH_NONE) *(int *)user = 1;
}

static double run_once(spry_engine *e, const int32_t *prompt, int64_t n_prompt, int64_t n_new) {
    int          done = 0;
    spry_request q    = {.prompt = prompt, .n_prompt = n_prompt, .max_tokens = n_new, .on_token = on_token, .user = &done};
    q.sample             = spry_sample_params_default();
    q.sample.temperature = 0;
    int64_t id;
    if (spry_engine_submit(e, &q, &id)) return -1;
    double t0   = now();
    bool   busy = true;
    while (busy && !done)
        if (spry_engine_step(e, &busy)) return -1;
    return now() - t0;
}

int main(int argc, char **argv) {
    int64_t pp = 256, tg = 128, L = 12, C = 768, H = 12;
    int     threads = 2;
    int     fmt     = SPRY_WFMT_F32;
    int     kv      = SPRY_KV_AUTO;
    for (int i = 1; i < argc; i += 2) { // options come in pairs
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--pp")) pp = atoll(v);
        else if (!strcmp(a, "--tg")) tg = atoll(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--layers")) L = atoll(v);
        else if (!strcmp(a, "--embd")) C = atoll(v);
        else if (!strcmp(a, "--heads")) H = atoll(v);
        else if (!strcmp(a, "--format") && spry_wfmt_from_name(v) >= 0) fmt = spry_wfmt_from_name(v);
        else if (!strcmp(a, "--kv-type") && (!strcmp(v, "auto") || !strcmp(v, "f32") || !strcmp(v, "f16")))
            kv = !strcmp(v, "auto") ? SPRY_KV_AUTO : !strcmp(v, "f32") ? SPRY_KV_F32 : SPRY_KV_F16;
        else {
            fprintf(stderr, "usage: bench_infer [--format f32|bf16|f16|q8_0|q4_0 (f32)] [--kv-type auto|f32|f16 (auto)] "
                            "[--pp 256] [--tg 128] [--threads 2] [--layers 12] [--embd 768] [--heads 12]\n");
            return 2;
        }
    }
    omp_set_num_threads(threads);
    spry_model_config c = spry_model_config_gpt2(50257, 1024, C, L, H);
    spry_model       *m;
    if (spry_model_init(&c, &m)) {
        fprintf(stderr, "bench_infer: %s\n", spry_last_error());
        return 1;
    }
    spry_model_init_weights(m, 1);
    spry_engine_params p = spry_engine_params_default();
    p.n_ctx = 1024, p.max_seqs = 1, p.max_batch_tokens = pp, p.n_threads = threads, p.prefix_cache = false;
    p.n_blocks = 1024 / p.block_tokens, p.weight_format = (spry_wfmt)fmt;
    p.kv_type = (spry_kv_type)kv;
    spry_engine *e;
    if (spry_engine_init(m, &p, &e)) {
        fprintf(stderr, "bench_infer: %s\n", spry_last_error());
        return 1;
    }
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)pp);
    for (int64_t i = 0; i < pp; i++) prompt[i] = (int32_t)((i * 7919) % 50257);
    double tp[5], tt[3];
    run_once(e, prompt, pp, 1); // warm-up
    for (int r = 0; r < 5; r++) tp[r] = run_once(e, prompt, pp, 1);
    run_once(e, prompt, 1, tg);
    // the machine's bandwidth moves with its neighbours' load: measured right before and after
    // the generation runs, and the higher one taken (the stricter bound)
    double bw0 = read_bandwidth(threads);
    for (int r = 0; r < 3; r++) tt[r] = run_once(e, prompt, 1, tg);
    double bw1 = read_bandwidth(threads);
    // weights read per generated token: every layer matrix and the LM head, in the format
    double wbytes = (double)spry_wfmt_row_bytes((spry_wfmt)fmt, C) * (double)(L * (3 * C + C + 4 * C) + 50257) +
                    (double)spry_wfmt_row_bytes((spry_wfmt)fmt, 4 * C) * (double)(L * C);
    double bw     = bw0 > bw1 ? bw0 : bw1;
    printf("SPRY format=%s kv=%s pp%lld_tokens_per_s=%.1f tg%lld_tokens_per_s=%.2f weight_mb=%.1f read_gbs=%.2f "
           "tg_bound_tokens_per_s=%.2f threads=%d\n",
           spry_wfmt_name((spry_wfmt)fmt),
           kv == SPRY_KV_F16 || (kv == SPRY_KV_AUTO && fmt != SPRY_WFMT_F32) ? "f16" : "f32", (long long)pp, (double)pp / median(tp, 5), (long long)tg, (double)tg / median(tt, 3), wbytes / 1e6,
           bw / 1e9, bw / wbytes, threads);
    spry_engine_free(e);
    spry_model_free(m);
    free(prompt);
    return 0;
}
