/*
 * test_curriculum.c -- DeepSpeed Data Efficiency config, curriculum scheduler and sampler
 * (curriculum.h): DeepSpeed's ground-truth schedule tables (notes/data_efficiency.md 2.1, 6.1),
 * config defaults and errors, and the sampler items of notes 6.2 on small index files written
 * here with the indexed.h writer.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "spry/curriculum.h"
#include "spry/indexed.h"
#include "spry/log.h"

static char g_dir[256];

// JSON with ' for " (readability).
static spry_status parse(const char *json_q, spry_data_efficiency_config *cfg) {
    char *t = strdup(json_q);
    for (char *p = t; *p; p++)
        if (*p == '\'') *p = '"';
    spry_status st = spry_data_efficiency_parse(t, "test.json", cfg);
    free(t);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Scheduler.

static void test_schedules(void) {
    spry_data_efficiency_config cfg;
    // DeepSpeed TestLegacyCurriculumScheduler::test_fixed_linear (legacy block) and the same
    // through the data_efficiency tree.
    const char *lin_legacy =
        "{'curriculum_learning': {'enabled': true, 'curriculum_type': 'seqlen', 'min_difficulty': 2,"
        " 'max_difficulty': 10, 'schedule_type': 'fixed_linear',"
        " 'schedule_config': {'total_curriculum_step': 8, 'difficulty_step': 2}}}";
    const int64_t lin_want[11] = {0, 2, 4, 4, 6, 6, 8, 8, 10, 10, 10};
    CHECK(parse(lin_legacy, &cfg) == SPRY_OK);
    CHECK(cfg.cl_enabled && cfg.legacy && cfg.n_metrics == 1);
    CHECK(!strcmp(cfg.metrics[0].name, "seqlen_truncate"));
    CHECK(cfg.metrics[0].clustering_type == SPRY_CL_CLUSTERING_SINGLE_CLUSTER);
    spry_cl_scheduler sc;
    spry_cl_scheduler_init(&sc, &cfg.metrics[0].schedule);
    CHECK(sc.current == 2);
    for (int t = 1; t <= 10; t++) CHECK_MSG(spry_cl_scheduler_update(&sc, t) == lin_want[t], "t=%d", t);

    const char *lin_new =
        "{'data_efficiency': {'enabled': true, 'data_sampling': {'enabled': true,"
        " 'curriculum_learning': {'enabled': true, 'data_cluster_path': '/tmp',"
        " 'curriculum_metrics': {'dummy_metric': {'index_to_sample_path': 'dummy',"
        " 'index_to_metric_path': 'dummy', 'difficulty_type': 'value',"
        " 'clustering_type': 'single_cluster', 'min_difficulty': 2, 'max_difficulty': 10,"
        " 'schedule_type': 'fixed_root', 'schedule_config': {'total_curriculum_step': 8,"
        " 'difficulty_step': 2, 'root_degree': 1}}}}}}}";
    CHECK(parse(lin_new, &cfg) == SPRY_OK);
    CHECK(cfg.n_warnings == 0 && !cfg.legacy && cfg.n_metrics == 1);
    CHECK(!strcmp(cfg.metrics[0].name, "dummy_metric"));
    for (int t = 1; t <= 10; t++)
        CHECK_MSG(spry_cl_schedule_value(&cfg.metrics[0].schedule, t) == lin_want[t], "t=%d", t);

    // test_fixed_discrete: D = [1..5], S = [2, 4, 6, 8].
    const char *disc =
        "{'curriculum_learning': {'enabled': true, 'curriculum_type': 'seqlen', 'min_difficulty': 1,"
        " 'max_difficulty': 5, 'schedule_type': 'fixed_discrete',"
        " 'schedule_config': {'difficulty': [1,2,3,4,5], 'max_step': [2,4,6,8]}}}";
    const int64_t disc_want[13] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5};
    CHECK(parse(disc, &cfg) == SPRY_OK);
    spry_cl_scheduler_init(&sc, &cfg.metrics[0].schedule);
    for (int t = 1; t <= 12; t++)
        CHECK_MSG(spry_cl_scheduler_update(&sc, t) == disc_want[t], "t=%d", t);

    // Paper configs (notes 2.1): GPT seqlen linear 80..2048 over 110000 steps, step 8.
    spry_cl_schedule s = {.type = SPRY_CL_SCHEDULE_FIXED_LINEAR, .min_difficulty = 80,
                          .max_difficulty = 2048, .total_curriculum_step = 110000,
                          .difficulty_step = 8, .root_degree = 1, .clamp_min = true};
    const int64_t gt[6][2] = {{1, 80},      {1000, 96},    {10000, 256},
                              {55000, 1064}, {109999, 2040}, {110000, 2048}};
    for (int i = 0; i < 6; i++)
        CHECK_MSG(spry_cl_schedule_value(&s, gt[i][0]) == gt[i][1], "t=%lld got %lld",
                  (long long)gt[i][0], (long long)spry_cl_schedule_value(&s, gt[i][0]));
    CHECK(spry_cl_schedule_value(&s, 200000) == 2048); // t > T clamps
    // voc fixed_root degree 2, 1..100, step 1.
    spry_cl_schedule r = {.type = SPRY_CL_SCHEDULE_FIXED_ROOT, .min_difficulty = 1,
                          .max_difficulty = 100, .total_curriculum_step = 110000,
                          .difficulty_step = 1, .root_degree = 2, .clamp_min = true};
    const int64_t vt[7][2] = {{1, 1},      {100, 3},     {1000, 10},  {10000, 30},
                              {27500, 50}, {55000, 71}, {110000, 100}};
    for (int i = 0; i < 7; i++)
        CHECK_MSG(spry_cl_schedule_value(&r, vt[i][0]) == vt[i][1], "t=%lld got %lld",
                  (long long)vt[i][0], (long long)spry_cl_schedule_value(&r, vt[i][0]));
    CHECK(spry_cl_schedule_value(&r, 1000000) == 100);

    // min not a multiple of difficulty_step: DeepSpeed gives 0 early; spry clamps to min.
    spry_cl_schedule q = {.type = SPRY_CL_SCHEDULE_FIXED_LINEAR, .min_difficulty = 5,
                          .max_difficulty = 100, .total_curriculum_step = 100,
                          .difficulty_step = 8, .root_degree = 1, .clamp_min = false};
    CHECK(spry_cl_schedule_value(&q, 1) == 0);
    CHECK(spry_cl_schedule_value(&q, 4) == 8); // floor(0.04*95+5) = 8
    q.clamp_min = true;
    CHECK(spry_cl_schedule_value(&q, 1) == 5);
    CHECK(spry_cl_schedule_value(&q, 4) == 8);
    // The config key spry_clamp_min_difficulty: false selects DeepSpeed's values.
    CHECK(parse("{'curriculum_learning': {'enabled': true, 'curriculum_type': 'seqlen',"
                " 'min_difficulty': 5, 'max_difficulty': 100, 'schedule_type': 'fixed_linear',"
                " 'spry_clamp_min_difficulty': false,"
                " 'schedule_config': {'total_curriculum_step': 100, 'difficulty_step': 8}}}",
                &cfg) == SPRY_OK);
    CHECK(!cfg.metrics[0].schedule.clamp_min);
    CHECK(spry_cl_schedule_value(&cfg.metrics[0].schedule, 1) == 0);
}

static int64_t down_after_max(void *user, int64_t t) {
    (void)user;
    return t <= 3 ? 10 * t : 1; // reaches max 30 at t = 3, then would go down
}

static void test_custom_and_stop_at_max(void) {
    spry_cl_schedule s = {.type = SPRY_CL_SCHEDULE_CUSTOM, .min_difficulty = 10,
                          .max_difficulty = 30, .custom = down_after_max};
    spry_cl_scheduler sc;
    spry_cl_scheduler_init(&sc, &s);
    CHECK(spry_cl_scheduler_update(&sc, 1) == 10);
    CHECK(spry_cl_scheduler_update(&sc, 2) == 20);
    CHECK(spry_cl_scheduler_update(&sc, 3) == 30);
    CHECK(spry_cl_scheduler_update(&sc, 4) == 30); // stop-at-max: not re-evaluated
    CHECK(spry_cl_scheduler_update(&sc, 100) == 30);
}

// ---------------------------------------------------------------------------------------------
// Config.

static void test_config(void) {
    spry_data_efficiency_config cfg;
    CHECK(parse("{}", &cfg) == SPRY_OK);
    CHECK(cfg.seed == 1234 && cfg.num_epochs == 1000 && cfg.num_workers == 0);
    CHECK(!cfg.enabled && !cfg.data_sampling_enabled && !cfg.cl_enabled && !cfg.pin_memory);
    CHECK(!cfg.data_routing_enabled && !cfg.random_ltd.enabled && cfg.n_metrics == 0);
    // Disabled CL: its metrics are not validated (as DeepSpeed).
    CHECK(parse("{'data_efficiency': {'seed': 7, 'data_sampling': {'num_epochs': 3,"
                " 'curriculum_learning': {'enabled': false, 'curriculum_metrics': 5}}}}",
                &cfg) == SPRY_OK);
    CHECK(cfg.seed == 7 && cfg.num_epochs == 3);

    const char *bad[][2] = {
        {"{'data_efficiency': {'seed': 'x'}}", "data_efficiency.seed"},
        {"{'data_efficiency': {'enabled': 1}}", "data_efficiency.enabled"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true}}}}",
         "curriculum_metrics"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'single_cluster', 'max_difficulty': 3, 'schedule_type': 'fixed_linear'}}}}}}",
         "curriculum_metrics.m.min_difficulty"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'schedule_based', 'index_to_sample_path': 'x', 'min_difficulty': 1,"
         " 'max_difficulty': 3, 'schedule_type': 'fixed_linear'}}}}}}",
         "index_to_metric_path"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'rank', 'clustering_type':"
         " 'single_cluster', 'min_difficulty': 1, 'max_difficulty': 3}}}}}}",
         "difficulty_type: \"rank\""},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'single_cluster', 'min_difficulty': 1, 'max_difficulty': 3, 'schedule_type':"
         " 'fixed_linear', 'schedule_config': {'total_curriculum_step': 10}}}}}}}",
         "schedule_config.difficulty_step: missing"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'single_cluster', 'min_difficulty': 1, 'max_difficulty': 3, 'schedule_type':"
         " 'fixed_discrete', 'schedule_config': {'difficulty': [1,2,3], 'max_step': [5]}}}}}}}",
         "len(difficulty) == len(max_step) + 1"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'single_cluster', 'min_difficulty': 1, 'max_difficulty': 3, 'schedule_type':"
         " 'fixed_cubic'}}}}}}",
         "unsupported curriculum schedule type \"fixed_cubic\""},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'single_cluster', 'min_difficulty': 9, 'max_difficulty': 3, 'schedule_type':"
         " 'custom'}}}}}}",
         "min_difficulty 9 > max_difficulty 3"},
        {"{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
         " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
         " 'single_cluster', 'min_difficulty': 1.5, 'max_difficulty': 3, 'schedule_type':"
         " 'custom'}}}}}}",
         "min_difficulty: expected an integer (1.5)"},
        {"{'curriculum_learning': {'enabled': true, 'curriculum_type': 'vocab'}}",
         "curriculum_type: \"vocab\""},
        {"{'data_efficiency': {'data_routing': {'random_ltd': {'enabled': true,"
         " 'total_layer_num': 4}}}}",
         "random_ltd.random_ltd_layer_num: missing"},
    };
    spry_log_set_level(SPRY_LOG_ERROR);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        spry_status st = parse(bad[i][0], &cfg);
        CHECK_MSG(st == SPRY_ERR_CONFIG, "case %zu: %s", i, spry_status_name(st));
        CHECK_MSG(strstr(spry_last_error(), bad[i][1]) != NULL, "case %zu: \"%s\" lacks \"%s\"",
                  i, spry_last_error(), bad[i][1]);
        CHECK(strstr(spry_last_error(), "test.json") != NULL);
        CHECK(cfg.n_metrics == 0 && cfg.seed == 1234); // defaults after an error
    }
    CHECK(spry_data_efficiency_parse("[1]", "x", &cfg) == SPRY_ERR_FORMAT);

    // Parent/child: the child decides (DeepSpeed), each parent that is off is warned about.
    CHECK(parse("{'data_efficiency': {'data_sampling': {'curriculum_learning': {'enabled': true,"
                " 'curriculum_metrics': {'m': {'difficulty_type': 'value', 'clustering_type':"
                " 'single_cluster', 'min_difficulty': 1, 'max_difficulty': 3, 'schedule_type':"
                " 'custom'}}}}}}",
                &cfg) == SPRY_OK);
    CHECK(cfg.cl_enabled && cfg.n_warnings == 2);

    // random_ltd: the paper's GPT block, kept for random_ltd.h.
    CHECK(parse("{'train_batch_size': 512, 'data_efficiency': {'enabled': true, 'seed': 99,"
                " 'data_routing': {'enabled': true, 'random_ltd': {'enabled': true,"
                " 'total_layer_num': 24, 'random_ltd_layer_num': 3, 'random_ltd_layer_id': [1,2,22],"
                " 'model_mask_name': 'attention_mask', 'model_type': 'decoder',"
                " 'hidden_state_order': 'seq_batch_dim', 'random_ltd_schedule': {'min_value': 128,"
                " 'max_value': 2048, 'schedule_type': 'fixed_linear', 'schedule_config':"
                " {'require_steps': 200000, 'seq_per_step': 16}}}}}}",
                &cfg) == SPRY_OK);
    const spry_random_ltd_params *p = &cfg.random_ltd;
    CHECK(p->enabled && p->total_layer_num == 24 && p->random_ltd_layer_num == 3);
    CHECK(p->n_layer_id == 3 && p->random_ltd_layer_id[2] == 22);
    CHECK(p->model_mask_name && !strcmp(p->model_mask_name, "attention_mask"));
    CHECK(!strcmp(p->model_type, "decoder") && !strcmp(p->hidden_state_order, "seq_batch_dim"));
    CHECK(p->min_value == 128 && p->max_value == 2048 && p->require_steps == 200000);
    CHECK(p->seq_per_step == 16 && !p->layer_token_lr_enabled && p->seed == 99);
    CHECK(cfg.n_warnings == 0);
}

// ---------------------------------------------------------------------------------------------
// Sampler fixtures.

// Writes <dir>/<name> with one item per row.
static void write_rows(const char *name, int64_t n_rows, const int64_t *row_len,
                       const int64_t *data, spry_indexed_dtype dt) {
    char prefix[512];
    snprintf(prefix, sizeof prefix, "%s/%s", g_dir, name);
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, dt, SPRY_INDEXED_TABLE_DEEPSPEED, &b) == SPRY_OK);
    int64_t off = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        uint8_t buf[8 * 256];
        size_t  es = spry_indexed_dtype_size(dt);
        for (int64_t j = 0; j < row_len[r]; j++) {
            uint64_t v = (uint64_t)data[off + j];
            memcpy(buf + (size_t)j * es, &v, es); // little-endian host
        }
        CHECK(spry_indexed_builder_add_item(b, buf, row_len[r]) == SPRY_OK);
        off += row_len[r];
    }
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
}

#define N_DS 100
static int64_t value_of(int64_t i) { return i % 10; }        // "val": 10 rows of 10
static int64_t pct_of(int64_t i) { return (i * 37) % N_DS; } // "pct": a permutation

static void write_fixtures(void) {
    int64_t len[N_DS], data[N_DS], vals[10], one[N_DS];
    for (int v = 0; v < 10; v++) {
        len[v]  = 10;
        vals[v] = v;
        one[v]  = 1;
        for (int k = 0; k < 10; k++) data[v * 10 + k] = v + 10 * k;
    }
    write_rows("val_index_to_sample", 10, len, data, SPRY_INDEXED_DTYPE_U8);
    write_rows("val_index_to_metric", 10, one, vals, SPRY_INDEXED_DTYPE_U8);
    // pct: row r = the sample with pct_of == r (one per row), u16 ids.
    for (int64_t i = 0; i < N_DS; i++) {
        len[i]             = 1;
        data[pct_of(i)]    = i;
    }
    write_rows("pct_index_to_sample_percentile_merged", N_DS, len, data, SPRY_INDEXED_DTYPE_U16);
    // Bad: an id outside [0, N).
    int64_t bad[2] = {3, 100}, blen[1] = {2};
    write_rows("bad_index_to_sample", 1, blen, bad, SPRY_INDEXED_DTYPE_U8);
}

static void metric(spry_data_efficiency_config *cfg, const char *name, const char *file,
                   const char *mfile, spry_cl_difficulty_type dt, spry_cl_clustering_type ct,
                   const int64_t *D, const int64_t *S, int n_levels) {
    spry_cl_metric *m = &cfg->metrics[cfg->n_metrics++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    if (file) snprintf(m->index_to_sample_path, sizeof m->index_to_sample_path, "%s/%s", g_dir, file);
    if (mfile)
        snprintf(m->index_to_metric_path, sizeof m->index_to_metric_path, "%s/%s", g_dir, mfile);
    m->difficulty_type         = dt;
    m->clustering_type         = ct;
    m->schedule.type           = SPRY_CL_SCHEDULE_FIXED_DISCRETE;
    m->schedule.n_levels       = n_levels;
    m->schedule.clamp_min      = true;
    m->schedule.min_difficulty = D[0];
    m->schedule.max_difficulty = D[n_levels - 1];
    for (int i = 0; i < n_levels; i++) m->schedule.difficulty[i] = D[i];
    for (int i = 0; i + 1 < n_levels; i++) m->schedule.max_step[i] = S[i];
}

static void base_cfg(spry_data_efficiency_config *cfg) {
    spry_data_efficiency_config_default(cfg);
    cfg->cl_enabled = true;
}

static spry_cl_sampler *make(const spry_data_efficiency_config *cfg, int64_t micro, int64_t dp,
                             int64_t rank, int64_t ga) {
    spry_cl_sampler_params p = spry_cl_sampler_params_default();
    p.n_samples = N_DS;
    p.micro_batch = micro;
    p.dp_size = dp;
    p.dp_rank = rank;
    p.grad_accum = ga;
    spry_cl_sampler *s = NULL;
    spry_status st = spry_cl_sampler_init(cfg, &p, &s);
    CHECK_MSG(st == SPRY_OK, "%s", spry_last_error());
    return s;
}

// Sorted-set equality of a cluster with the ids satisfying pred.
static bool cluster_is(const spry_cl_sampler *s, int c, bool (*pred)(int64_t)) {
    int64_t n, want = 0;
    const int64_t *ids = spry_cl_sampler_cluster(s, c, &n);
    int seen[N_DS] = {0};
    for (int64_t j = 0; j < n; j++) {
        if (ids[j] < 0 || ids[j] >= N_DS || seen[ids[j]]++ || !pred(ids[j])) return false;
    }
    for (int64_t i = 0; i < N_DS; i++) want += pred(i);
    return want == n;
}

static bool v_le2(int64_t i) { return value_of(i) <= 2; }
static bool v_3to5(int64_t i) { return value_of(i) > 2 && value_of(i) <= 5; }
static bool v_6to9(int64_t i) { return value_of(i) > 5; }
static bool p_lt10(int64_t i) { return pct_of(i) < 10; }
static bool p_10to30(int64_t i) { return pct_of(i) >= 10 && pct_of(i) < 30; }
static bool p_ge30(int64_t i) { return pct_of(i) >= 30; }
static bool m_first(int64_t i) { return value_of(i) <= 4 && pct_of(i) < 50; }
static bool m_second(int64_t i) { return !m_first(i); }

static void test_clusters(void) {
    spry_data_efficiency_config cfg;
    int64_t ids[64], n, d[SPRY_CL_MAX_METRICS], step;
    // Value clusters: (prev, cur] at d = 2, 5, 9 (steps 1, 2, 3+).
    base_cfg(&cfg);
    const int64_t D[3] = {2, 5, 9}, S[2] = {1, 2};
    metric(&cfg, "val", "val_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, D, S, 3);
    spry_cl_sampler *s = make(&cfg, 4, 1, 0, 1);
    if (!s) return;
    for (int k = 0; k < 3; k++) {
        CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_OK);
        CHECK(n == 4 && step == k + 1 && d[0] == D[k]);
        for (int64_t j = 0; j < n; j++) CHECK(value_of(ids[j]) <= d[0]); // only eligible ids
    }
    CHECK(spry_cl_sampler_n_clusters(s) == 3);
    CHECK(cluster_is(s, 0, v_le2) && cluster_is(s, 1, v_3to5) && cluster_is(s, 2, v_6to9));
    spry_cl_sampler_free(s);

    // Percentile clusters: [spp prev, spp cur) with spp = 100 / 100 = 1; the last ends at N.
    base_cfg(&cfg);
    const int64_t P[3] = {10, 30, 100};
    metric(&cfg, "pct", "pct_index_to_sample_percentile_merged", NULL,
           SPRY_CL_DIFFICULTY_PERCENTILE, SPRY_CL_CLUSTERING_SCHEDULE_BASED, P, S, 3);
    s = make(&cfg, 4, 1, 0, 1);
    if (!s) return;
    for (int k = 0; k < 3; k++) CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_OK);
    CHECK(spry_cl_sampler_n_clusters(s) == 3);
    CHECK(cluster_is(s, 0, p_lt10) && cluster_is(s, 1, p_10to30) && cluster_is(s, 2, p_ge30));
    spry_cl_sampler_free(s);

    // Two schedule_based metrics + a single_cluster one: intersection minus earlier clusters.
    base_cfg(&cfg);
    const int64_t D2[2] = {4, 9}, P2[2] = {50, 100}, S2[1] = {1}, L[2] = {80, 2048};
    metric(&cfg, "val", "val_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, D2, S2, 2);
    metric(&cfg, "pct", "pct_index_to_sample_percentile_merged", NULL,
           SPRY_CL_DIFFICULTY_PERCENTILE, SPRY_CL_CLUSTERING_SCHEDULE_BASED, P2, S2, 2);
    metric(&cfg, "seqlen_truncate", NULL, NULL, SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SINGLE_CLUSTER, L, S2, 2);
    s = make(&cfg, 8, 1, 0, 1);
    if (!s) return;
    CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_OK);
    CHECK(d[0] == 4 && d[1] == 50 && d[2] == 80);
    for (int64_t j = 0; j < n; j++) CHECK(m_first(ids[j]));
    CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_OK);
    CHECK(d[0] == 9 && d[1] == 100 && d[2] == 2048);
    CHECK(spry_cl_sampler_n_clusters(s) == 2);
    CHECK(cluster_is(s, 0, m_first) && cluster_is(s, 1, m_second));
    spry_cl_sampler_free(s);

    // Only single_cluster metrics: one cluster of all data, difficulty only reported.
    base_cfg(&cfg);
    metric(&cfg, "seqlen_truncate", NULL, NULL, SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SINGLE_CLUSTER, L, S2, 2);
    s = make(&cfg, 8, 1, 0, 1);
    if (!s) return;
    for (int k = 0; k < 3; k++) CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_OK);
    CHECK(d[0] == 2048 && spry_cl_sampler_n_clusters(s) == 1);
    int64_t cn;
    spry_cl_sampler_cluster(s, 0, &cn);
    CHECK(cn == N_DS);
    spry_cl_sampler_free(s);
}

static void test_loop_fill_and_cycle(void) {
    spry_data_efficiency_config cfg;
    int64_t ids[64], n;
    // One cluster of 10 (value 0) until step 100; G = 32 > 3 x 10: every batch still full.
    base_cfg(&cfg);
    const int64_t D[2] = {0, 9}, S[1] = {100};
    metric(&cfg, "val", "val_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, D, S, 2);
    spry_cl_sampler *s = make(&cfg, 32, 1, 0, 1);
    if (!s) return;
    for (int k = 0; k < 5; k++) {
        CHECK(spry_cl_sampler_next(s, ids, &n, NULL, NULL) == SPRY_OK);
        CHECK(n == 32);
        int cnt[N_DS] = {0};
        for (int64_t j = 0; j < n; j++) cnt[ids[j]]++;
        for (int64_t i = 0; i < N_DS; i++)
            CHECK(value_of(i) == 0 ? (cnt[i] >= 2 && cnt[i] <= 5) : cnt[i] == 0);
    }
    spry_cl_sampler_free(s);
    // Every eligible sample exactly once per cycle: G = 5, two batches = the whole cluster.
    s = make(&cfg, 5, 1, 0, 1);
    if (!s) return;
    for (int cycle = 0; cycle < 3; cycle++) {
        int cnt[N_DS] = {0};
        for (int k = 0; k < 2; k++) {
            CHECK(spry_cl_sampler_next(s, ids, &n, NULL, NULL) == SPRY_OK);
            for (int64_t j = 0; j < n; j++) cnt[ids[j]]++;
        }
        for (int64_t i = 0; i < N_DS; i++) CHECK(cnt[i] == (value_of(i) == 0));
    }
    spry_cl_sampler_free(s);
}

static void test_dp_and_accum(void) {
    int64_t a, b;
    // Python round (ties to even): len 5 over 2 -> [0,2) [2,5); len 10 over 4 -> 0,2,5,8,10.
    spry_cl_dp_slice(5, 2, 0, &a, &b);
    CHECK(a == 0 && b == 2);
    spry_cl_dp_slice(5, 2, 1, &a, &b);
    CHECK(a == 2 && b == 5);
    spry_cl_dp_slice(7, 2, 0, &a, &b);
    CHECK(a == 0 && b == 4); // round(3.5) = 4
    const int64_t edges[5] = {0, 2, 5, 8, 10};
    for (int r = 0; r < 4; r++) {
        spry_cl_dp_slice(10, 4, r, &a, &b);
        CHECK(a == edges[r] && b == edges[r + 1]);
    }
    for (int64_t len = 1; len < 40; len++)
        for (int64_t dp = 1; dp <= 8; dp++) {
            int64_t prev = 0, lo = len, hi = 0;
            for (int64_t r = 0; r < dp; r++) {
                spry_cl_dp_slice(len, dp, r, &a, &b);
                CHECK(a == prev);
                prev = b;
                lo   = b - a < lo ? b - a : lo;
                hi   = b - a > hi ? b - a : hi;
            }
            CHECK(prev == len && hi - lo <= 1);
        }

    // micro 2 x dp 3 x accum 4: each chunk = union of the ranks' slices; difficulty constant
    // over the 4 micro-steps of one optimizer step.
    spry_data_efficiency_config cfg;
    base_cfg(&cfg);
    const int64_t D[3] = {2, 5, 9}, S[2] = {1, 2};
    metric(&cfg, "val", "val_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, D, S, 3);
    spry_cl_sampler *all = make(&cfg, 2, 3, 0, 4), *rk[3];
    for (int r = 0; r < 3; r++) rk[r] = make(&cfg, 2, 3, r, 4);
    if (!all || !rk[0] || !rk[1] || !rk[2]) return;
    CHECK(spry_cl_sampler_global_batch(all) == 24);
    for (int k = 0; k < 12; k++) {
        int64_t chunk[6], n, d[1], step, part[2], pn, pd[1], ps;
        CHECK(spry_cl_sampler_next_chunk(all, chunk, &n, d, &step) == SPRY_OK);
        CHECK(n == 6 && step == k / 4 + 1 && d[0] == D[k / 4]);
        int64_t o = 0;
        for (int r = 0; r < 3; r++) {
            CHECK(spry_cl_sampler_next(rk[r], part, &pn, pd, &ps) == SPRY_OK);
            CHECK(pn == 2 && pd[0] == d[0] && ps == step);
            for (int64_t j = 0; j < pn; j++) CHECK(part[j] == chunk[o + j]);
            o += pn;
        }
        CHECK(o == n);
    }
    CHECK(spry_cl_sampler_consumed(all) == 72 && spry_cl_sampler_curriculum_step(all) == 3);
    spry_cl_sampler_free(all);
    for (int r = 0; r < 3; r++) spry_cl_sampler_free(rk[r]);
}

static void two_metric_cfg(spry_data_efficiency_config *cfg, uint64_t seed) {
    base_cfg(cfg);
    cfg->seed = seed;
    const int64_t D[4] = {1, 3, 6, 9}, S[3] = {2, 4, 6}, P[3] = {20, 60, 100}, PS[2] = {3, 5};
    metric(cfg, "val", "val_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, D, S, 4);
    metric(cfg, "pct", "pct_index_to_sample_percentile_merged", NULL,
           SPRY_CL_DIFFICULTY_PERCENTILE, SPRY_CL_CLUSTERING_SCHEDULE_BASED, P, PS, 3);
}

static void run(spry_cl_sampler *s, int k, int64_t *out) {
    for (int i = 0; i < k; i++) {
        int64_t n, d[2], step;
        CHECK(spry_cl_sampler_next_chunk(s, out + i * 8, &n, d, &step) == SPRY_OK);
        CHECK(n == 4);
        out[i * 8 + 4] = d[0];
        out[i * 8 + 5] = d[1];
        out[i * 8 + 6] = step;
        out[i * 8 + 7] = 0;
    }
}

static void test_resume_and_determinism(void) {
    spry_data_efficiency_config cfg, cfg2;
    two_metric_cfg(&cfg, 1234);
    two_metric_cfg(&cfg2, 99);
    enum { K = 40 };
    static int64_t a[K * 8], b[K * 8], c[K * 8];
    spry_cl_sampler *s1 = make(&cfg, 2, 2, 0, 3), *s2 = make(&cfg, 2, 2, 0, 3),
                    *s3 = make(&cfg2, 2, 2, 0, 3);
    if (!s1 || !s2 || !s3) return;
    run(s1, K, a);
    run(s2, K, b);
    run(s3, K, c);
    CHECK(!memcmp(a, b, sizeof a));  // same seed, same batches
    CHECK(memcmp(a, c, sizeof a));   // another seed, other batches
    spry_cl_sampler_free(s2);
    spry_cl_sampler_free(s3);

    // Checkpoint mid global batch (after 7 chunks of 3 per batch) and resume in a new sampler.
    spry_cl_sampler *r0 = make(&cfg, 2, 2, 0, 3);
    if (!r0) return;
    static int64_t x[K * 8], y[K * 8];
    run(r0, 7, x);
    int64_t  ns = spry_cl_sampler_state_size(r0);
    int64_t *st = malloc(sizeof(int64_t) * (size_t)ns);
    CHECK(spry_cl_sampler_get_state(r0, st, ns - 1) == -1);
    CHECK(spry_cl_sampler_get_state(r0, st, ns) == ns);
    run(r0, K - 7, x + 7 * 8);
    CHECK(!memcmp(x, a, sizeof x));
    spry_cl_sampler *r1 = make(&cfg, 2, 2, 0, 3);
    if (!r1) return;
    CHECK(spry_cl_sampler_set_state(r1, st, ns) == SPRY_OK);
    CHECK(spry_cl_sampler_curriculum_step(r1) == 3 && spry_cl_sampler_consumed(r1) == 28);
    run(r1, K - 7, y);
    CHECK(!memcmp(y, a + 7 * 8, sizeof(int64_t) * 8 * (K - 7))); // identical continuation

    // Corrupted states are errors naming the field; the sampler is unchanged.
    int64_t save = st[0];
    st[0]        = 5;
    CHECK(spry_cl_sampler_set_state(r1, st, ns) == SPRY_ERR_FORMAT);
    CHECK(strstr(spry_last_error(), "magic") != NULL);
    st[0] = save;
    CHECK(spry_cl_sampler_set_state(r1, st, ns - 1) == SPRY_ERR_FORMAT);
    int64_t last = st[ns - 1];
    st[ns - 1]   = N_DS;
    CHECK(spry_cl_sampler_set_state(r1, st, ns) == SPRY_ERR_FORMAT);
    st[ns - 1] = last;
    for (int64_t i = 0; i < ns; i++) { // fuzz-ish: no crash on any single-field corruption
        int64_t v = st[i];
        st[i]     = -v - 1;
        (void)spry_cl_sampler_set_state(r1, st, ns);
        st[i] = v;
    }
    CHECK(spry_cl_sampler_set_state(r1, st, ns) == SPRY_OK);
    run(r1, K - 7, y);
    CHECK(!memcmp(y, a + 7 * 8, sizeof(int64_t) * 8 * (K - 7)));
    free(st);
    spry_cl_sampler_free(r0);
    spry_cl_sampler_free(r1);
    spry_cl_sampler_free(s1);
}

static int64_t g_calls;
static int64_t custom_half(void *user, int64_t t) {
    g_calls++;
    return *(int64_t *)user + t; // 3 + t, max 9
}

static void test_sampler_errors_and_custom(void) {
    spry_data_efficiency_config cfg;
    spry_cl_sampler_params p = spry_cl_sampler_params_default();
    spry_cl_sampler *s = NULL;
    int64_t ids[8], n, d[1], step;
    base_cfg(&cfg);
    const int64_t D[2] = {1, 9}, S[1] = {5};
    metric(&cfg, "val", "bad_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, D, S, 2);
    p.n_samples = N_DS;
    CHECK(spry_cl_sampler_init(&cfg, &p, &s) == SPRY_ERR_FORMAT && s == NULL);
    CHECK(strstr(spry_last_error(), "sample id 100") != NULL);
    snprintf(cfg.metrics[0].index_to_sample_path, SPRY_CL_PATH_MAX, "%s/missing", g_dir);
    CHECK(spry_cl_sampler_init(&cfg, &p, &s) == SPRY_ERR_IO && s == NULL);
    p.micro_batch = 0;
    CHECK(spry_cl_sampler_init(&cfg, &p, &s) == SPRY_ERR_CONFIG);
    cfg.cl_enabled = false;
    p.micro_batch  = 1;
    CHECK(spry_cl_sampler_init(&cfg, &p, &s) == SPRY_ERR_CONFIG);
    // Schedules built in C are checked too (no division by zero on max 0 / T 0).
    base_cfg(&cfg);
    const int64_t Z[2] = {0, 0};
    metric(&cfg, "pct", "pct_index_to_sample_percentile_merged", NULL,
           SPRY_CL_DIFFICULTY_PERCENTILE, SPRY_CL_CLUSTERING_SCHEDULE_BASED, Z, S, 2);
    CHECK(spry_cl_sampler_init(&cfg, &p, &s) == SPRY_ERR_CONFIG && s == NULL);
    cfg.metrics[0].schedule = (spry_cl_schedule){.type = SPRY_CL_SCHEDULE_FIXED_LINEAR,
                                                 .min_difficulty = 1, .max_difficulty = 100,
                                                 .difficulty_step = 1};
    CHECK(spry_cl_sampler_init(&cfg, &p, &s) == SPRY_ERR_CONFIG && s == NULL);
    CHECK(strstr(spry_last_error(), "total_curriculum_step 0") != NULL);

    // Nothing eligible (value difficulty below every metric value).
    base_cfg(&cfg);
    const int64_t Dn[2] = {-5, 9};
    metric(&cfg, "val", "val_index_to_sample", "val_index_to_metric", SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SCHEDULE_BASED, Dn, S, 2);
    s = make(&cfg, 2, 1, 0, 1);
    if (!s) return;
    CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "val=-5") != NULL);
    spry_cl_sampler_free(s);

    // Custom schedule via the C API; missing callback is an error.
    cfg.metrics[0].schedule.type           = SPRY_CL_SCHEDULE_CUSTOM;
    cfg.metrics[0].schedule.min_difficulty = 4;
    s = make(&cfg, 2, 1, 0, 1);
    if (!s) return;
    CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_ERR_CONFIG);
    CHECK(strstr(spry_last_error(), "callback") != NULL);
    int64_t base = 3;
    CHECK(spry_cl_sampler_set_custom_schedule(s, "nope", custom_half, &base) == SPRY_ERR_NOT_FOUND);
    CHECK(spry_cl_sampler_set_custom_schedule(s, "val", custom_half, &base) == SPRY_OK);
    for (int t = 1; t <= 8; t++) {
        CHECK(spry_cl_sampler_next(s, ids, &n, d, &step) == SPRY_OK);
        CHECK(step == t && d[0] == (3 + t < 9 ? 3 + t : 9));
        for (int64_t j = 0; j < n; j++) CHECK(value_of(ids[j]) <= d[0]);
    }
    CHECK(g_calls == 6); // stop-at-max: not evaluated after reaching 9 at t = 6
    spry_cl_sampler_free(s);

    // num_epochs bounds the length.
    base_cfg(&cfg);
    cfg.num_epochs = 1;
    const int64_t L[2] = {8, 16};
    metric(&cfg, "seqlen_truncate", NULL, NULL, SPRY_CL_DIFFICULTY_VALUE,
           SPRY_CL_CLUSTERING_SINGLE_CLUSTER, L, S, 2);
    s = make(&cfg, 8, 1, 0, 1);
    if (!s) return;
    int64_t total = 0;
    for (int k = 0; k < 20; k++) {
        CHECK(spry_cl_sampler_next(s, ids, &n, NULL, NULL) == SPRY_OK);
        total += n;
    }
    CHECK(total == 104); // stops once >= N consumed (13 batches of 8)
    spry_cl_sampler_free(s);
}

static void test_post_process(void) {
    int32_t in[2 * 9], out[64];
    for (int i = 0; i < 18; i++) in[i] = i;
    // truncate: keep s + 1 tokens of each row.
    CHECK(spry_cl_seqlen_truncate(in, 2, 9, 3, out) == 4);
    CHECK(out[0] == 0 && out[3] == 3 && out[4] == 9 && out[7] == 12);
    CHECK(spry_cl_seqlen_truncate(in, 2, 9, 8, out) == 9 && out[17] == 17);
    CHECK(spry_cl_seqlen_truncate(in, 2, 9, 100, out) == 9);
    // reshape S = 8, s = 3: chunks of 4: row0 [0..3] [4..7], row1 [9..12] [13..16], tails
    // [5..8] [14..17]; num_row = min(ceil(18/4)=5, 6) = 5, odd -> 4.
    int64_t T1o;
    CHECK(spry_cl_seqlen_reshape_capacity(2, 9, 3) == 24);
    CHECK(spry_cl_seqlen_reshape(in, 2, 9, 3, out, &T1o) == 4 && T1o == 4);
    const int32_t want[16] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16};
    CHECK(!memcmp(out, want, sizeof want));
    // s = 2: chunks of 3, 3 per row + tails = 8 rows; ceil(18/3) = 6 rows (even): no tails.
    CHECK(spry_cl_seqlen_reshape(in, 2, 9, 2, out, &T1o) == 6 && T1o == 3);
    CHECK(out[9] == 9 && out[15] == 15 && out[17] == 17);
    CHECK(spry_cl_seqlen_reshape(in, 2, 9, 8, out, &T1o) == 2 && T1o == 9);
    // BERT padding trim: longest real length 11 -> 16; 17 -> T = 20.
    int32_t tok[2 * 20];
    for (int i = 0; i < 40; i++) tok[i] = 0;
    for (int i = 0; i < 11; i++) tok[i] = 5;
    tok[20 + 3] = 7;
    CHECK(spry_cl_pad_trim_len(tok, 2, 20, 0) == 16);
    tok[20 + 16] = 7;
    CHECK(spry_cl_pad_trim_len(tok, 2, 20, 0) == 20);
    for (int i = 0; i < 40; i++) tok[i] = 0;
    CHECK(spry_cl_pad_trim_len(tok, 2, 20, 0) == 0);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/spry_test_curriculum.XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_schedules();
    test_custom_and_stop_at_max();
    test_config();
    write_fixtures();
    test_clusters();
    test_loop_fill_and_cycle();
    test_dp_and_accum();
    test_resume_and_determinism();
    test_sampler_errors_and_custom();
    test_post_process();
    char cmd[512];
    const char *names[] = {"val_index_to_sample", "val_index_to_metric",
                           "pct_index_to_sample_percentile_merged", "bad_index_to_sample"};
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < 2; e++) {
            snprintf(cmd, sizeof cmd, "%s/%s.%s", g_dir, names[i], e ? "idx" : "bin");
            unlink(cmd);
        }
    rmdir(g_dir);
    return check_exit();
}
