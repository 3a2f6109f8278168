/*
 * metrics.c -- the server's counters and latency histograms in Prometheus' text format
 * (https://prometheus.io/docs/instrumenting/exposition_formats/, version 0.0.4). Names follow
 * vLLM's (vllm:num_requests_running, vllm:kv_cache_usage_perc, vllm:time_to_first_token_seconds,
 * ...) with a spry_ prefix and underscores; buckets are vLLM's. The engine's counters are read
 * from a spry_engine_stats snapshot at render time; the rest are kept by server.c under its lock.
 */
#include <string.h>

#include "serve/serve_internal.h"

static const double k_ttft[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
static const double k_itl[]  = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                                0.2,   0.3,    0.4,   0.5,  0.75,  1.0,  2.5,   5.0, 10.0};
static const double k_e2e[]  = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0, 15.0,
                                20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};
static const unsigned k_status[] = {200, 204, 400, 401, 404, 405, 413, 500, 501, 503};
#define N_STATUS (int)(sizeof k_status / sizeof k_status[0]) // slot N_STATUS: any other status
_Static_assert(sizeof k_ttft / sizeof *k_ttft <= SERVE_HIST_MAX, "TTFT buckets fit");
_Static_assert(sizeof k_itl / sizeof *k_itl <= SERVE_HIST_MAX, "ITL buckets fit");
_Static_assert(sizeof k_e2e / sizeof *k_e2e <= SERVE_HIST_MAX, "E2E buckets fit");
_Static_assert(sizeof k_status / sizeof *k_status < sizeof((serve_metrics *)0)->http /
                                                        sizeof(int64_t), "status slots fit");

void serve_metrics_init(serve_metrics *m) {
    memset(m, 0, sizeof *m);
    m->ttft.le = k_ttft, m->ttft.n = (int)(sizeof k_ttft / sizeof *k_ttft);
    m->itl.le = k_itl, m->itl.n = (int)(sizeof k_itl / sizeof *k_itl);
    m->e2e.le = k_e2e, m->e2e.n = (int)(sizeof k_e2e / sizeof *k_e2e);
}

void serve_hist_observe(serve_hist *h, double v) {
    int i = 0;
    while (i < h->n && v > h->le[i]) i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

void serve_metrics_count_status(serve_metrics *m, unsigned status) {
    int i = 0;
    while (i < N_STATUS && k_status[i] != status) i++;
    m->http[i]++;
}

static void head(sbuf *b, const char *name, const char *type, const char *help) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(sbuf *b, const char *name, const char *type, const char *help, double v) {
    head(b, name, type, help);
    sb_printf(b, "%s %.17g\n", name, v);
}

static void hist(sbuf *b, const char *name, const char *help, const serve_hist *h) {
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], (unsigned long long)cum);
    }
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    sb_printf(b, "%s_sum %.17g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

void serve_metrics_render(const serve_metrics *m, const spry_engine_stats *st, bool ready,
                          int64_t pending, sbuf *b) {
    static const char *const reasons[SERVE_END_COUNT] = {"stop", "length", "cancelled", "error"};
    scalar(b, "spry_ready", "gauge", "1 once the model is loaded and the engine runs", ready);
    scalar(b, "spry_requests_total", "counter", "Generation requests accepted.",
           (double)m->requests);
    head(b, "spry_requests_finished_total", "counter", "Generation requests finished, by reason.");
    for (int i = 0; i < SERVE_END_COUNT; i++)
        sb_printf(b, "spry_requests_finished_total{reason=\"%s\"} %lld\n", reasons[i],
                  (long long)m->finished[i]);
    scalar(b, "spry_requests_rejected_total", "counter",
           "Generation requests refused with 503 because the queue was full.",
           (double)m->rejected_full);
    head(b, "spry_http_responses_total", "counter", "HTTP responses, by status code.");
    for (int i = 0; i <= N_STATUS; i++) {
        if (i < N_STATUS)
            sb_printf(b, "spry_http_responses_total{code=\"%u\"} %lld\n", k_status[i],
                      (long long)m->http[i]);
        else
            sb_printf(b, "spry_http_responses_total{code=\"other\"} %lld\n", (long long)m->http[i]);
    }
    scalar(b, "spry_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.",
           (double)m->prompt_tokens);
    scalar(b, "spry_generation_tokens_total", "counter", "Tokens generated and delivered.",
           (double)m->gen_tokens);
    scalar(b, "spry_requests_pending", "gauge",
           "Requests submitted to the engine and not finished (running + waiting).",
           (double)pending);
    spry_engine_stats z = {0};
    if (!st) st = &z;
    scalar(b, "spry_num_requests_running", "gauge", "Sequences in the running batch.",
           (double)st->running);
    scalar(b, "spry_num_requests_waiting", "gauge", "Requests waiting for admission.",
           (double)st->waiting);
    double usage =
        st->kv_blocks_total ? (double)st->kv_blocks_used / (double)st->kv_blocks_total : 0;
    scalar(b, "spry_kv_cache_usage_ratio", "gauge", "KV blocks in use / KV blocks in the pool.",
           usage);
    scalar(b, "spry_kv_blocks_used", "gauge", "KV blocks held by sequences.",
           (double)st->kv_blocks_used);
    scalar(b, "spry_kv_blocks_total", "gauge", "KV blocks in the pool.",
           (double)st->kv_blocks_total);
    scalar(b, "spry_kv_blocks_cached", "gauge", "Free KV blocks still holding a reusable prefix.",
           (double)st->kv_blocks_cached);
    scalar(b, "spry_prefix_cache_queries_total", "counter",
           "Prompt blocks looked up in the prefix cache.", (double)st->prefix_queries);
    scalar(b, "spry_prefix_cache_hits_total", "counter", "Prompt blocks found in the prefix cache.",
           (double)st->prefix_hits);
    scalar(
        b, "spry_engine_prompt_tokens_total", "counter",
        "Prompt tokens the engine computed (prefix-cache hits excluded, recomputation included).",
        (double)st->prompt_tokens);
    scalar(b, "spry_engine_generation_tokens_total", "counter", "Tokens the engine sampled.",
           (double)st->generated_tokens);
    scalar(b, "spry_preemptions_total", "counter",
           "Sequences preempted for KV blocks (recomputed later).", (double)st->preemptions);
    scalar(b, "spry_engine_steps_total", "counter", "Engine iterations.", (double)st->steps);
    hist(b, "spry_time_to_first_token_seconds", "Time from arrival to the first generated token.",
         &m->ttft);
    hist(b, "spry_inter_token_latency_seconds", "Time between consecutive tokens of a request.",
         &m->itl);
    hist(b, "spry_e2e_request_latency_seconds", "Time from arrival to the last token.", &m->e2e);
}
