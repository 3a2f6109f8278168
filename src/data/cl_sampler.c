/*
 * cl_sampler.c -- the curriculum data sampler (curriculum.h): DeepSpeed's DeepSpeedDataSampler
 * (runtime/data_pipeline/data_sampling/data_sampler.py; notes/data_efficiency.md 2.4-2.6) plus
 * Megatron's seqlen post-processing callbacks (notes 2.3).
 *
 * Differences from DeepSpeed, on purpose: clusters live in memory instead of mmap files under
 * data_cluster_path; a cluster asked for more ids than it has left loops (reshuffling at every
 * wrap) until filled, where DeepSpeed wraps once and returns a short batch (PR #8520); the
 * checkpoint state carries the sampler's own RNG (DeepSpeed saves numpy's global one, #8405);
 * every rank computes the same batches from the same seed, so no broadcast is needed; the
 * difficulties travel with each chunk instead of being read as "current" state.
 * The RNG is splitmix64 (one 64-bit word of state); bounded ints by rejection.
 */
#include "spry/curriculum.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/indexed.h"
#include "spry/log.h"

#define CL_STATE_MAGIC   0x4c435053LL // "SPCL"
#define CL_STATE_VERSION 1
#define CL_STATE_HEADER  12

typedef struct cl_index {
    int64_t  n_rows;
    int64_t  total;   // ids in all rows
    int64_t *row_off; // (n_rows + 1) offsets into ids
    int64_t *ids;     // (total) sample ids, rows concatenated in ascending metric order
    int64_t *values;  // (n_rows) metric value of each row (value-based only)
} cl_index;

struct spry_cl_sampler {
    spry_data_efficiency_config cfg;
    spry_cl_sampler_params      p;
    int64_t                     N, G, chunk; // samples, global batch, micro x dp
    int64_t                     limit;       // num_epochs x N: samples to consume
    int                         nm;
    spry_cl_scheduler           sched[SPRY_CL_MAX_METRICS];
    cl_index                    idx[SPRY_CL_MAX_METRICS];
    int64_t                     cur[SPRY_CL_MAX_METRICS];
    bool                        started;
    int64_t                     step, consumed;
    uint64_t                    rng;
    int                         n_clusters, cap_clusters;
    int64_t                   **cl_ids;
    int64_t                    *cl_size, *cl_pos;
    int64_t                    *batch; // (G) the current global batch
    int64_t                     batch_len, batch_pos, batch_step;
    int64_t                     batch_diff[SPRY_CL_MAX_METRICS];
    int64_t                    *chunk_buf; // (chunk)
    uint8_t                    *mark;      // (N) scratch: in a cluster / eligibility counts
    int64_t                    *scratch;   // (N)
    int64_t                    *counts;    // (cap_clusters) scratch for draws
};

// ---------------------------------------------------------------------------------------------
// RNG: splitmix64 (Steele, Lea, Flood 2014).

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Uniform in [0, n), n >= 1, without modulo bias.
static uint64_t rng_below(uint64_t *s, uint64_t n) {
    uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
    uint64_t r     = rng_next(s);
    while (r >= limit) r = rng_next(s);
    return r % n;
}

static void shuffle(uint64_t *s, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)rng_below(s, (uint64_t)i + 1);
        int64_t t = a[i];
        a[i]      = a[j];
        a[j]      = t;
    }
}

// ---------------------------------------------------------------------------------------------
// Index files.

static spry_status elem_i64(const spry_indexed *ds, const void *base, int64_t j, int64_t item,
                            int64_t *out) {
    switch (spry_indexed_elem_dtype(ds)) {
    case SPRY_INDEXED_DTYPE_U8: *out = ((const uint8_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_I8: *out = ((const int8_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_I16: *out = ((const int16_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_U16: *out = ((const uint16_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_I32: *out = ((const int32_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_U32: *out = ((const uint32_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_I64: *out = ((const int64_t *)base)[j]; return SPRY_OK;
    case SPRY_INDEXED_DTYPE_U64: {
        uint64_t v = ((const uint64_t *)base)[j];
        if (v > (uint64_t)INT64_MAX)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: item %lld: value %llu does not fit int64",
                               spry_indexed_prefix(ds), (long long)item, (unsigned long long)v);
        *out = (int64_t)v;
        return SPRY_OK;
    }
    default:
        return spry_errorf(SPRY_ERR_FORMAT, "%s: element type %s (expected an integer type)",
                           spry_indexed_prefix(ds),
                           spry_indexed_dtype_name(spry_indexed_elem_dtype(ds)));
    }
}

static void index_free(cl_index *x) {
    free(x->row_off);
    free(x->ids);
    free(x->values);
    memset(x, 0, sizeof *x);
}

static spry_status load_index_rows(const spry_cl_metric *m, int64_t N, cl_index *x) {
    spry_indexed *ds = NULL;
    SPRY_TRY(spry_indexed_open(m->index_to_sample_path, SPRY_INDEXED_TABLE_AUTO, &ds));
    spry_status st = SPRY_OK;
    x->n_rows      = spry_indexed_n_items(ds);
    x->total       = spry_indexed_n_elems(ds);
    x->row_off     = malloc(sizeof(int64_t) * (size_t)(x->n_rows + 1));
    x->ids         = malloc(sizeof(int64_t) * (size_t)(x->total > 0 ? x->total : 1));
    if (!x->row_off || !x->ids) {
        spry_indexed_close(ds);
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for %lld ids",
                           m->index_to_sample_path, (long long)x->total);
    }
    int64_t off = 0;
    for (int64_t i = 0; i < x->n_rows && st == SPRY_OK; i++) {
        int64_t     n;
        const void *row = spry_indexed_item(ds, i, &n);
        x->row_off[i]   = off;
        for (int64_t j = 0; j < n && st == SPRY_OK; j++) {
            int64_t v = 0;
            st        = elem_i64(ds, row, j, i, &v);
            if (st == SPRY_OK && (v < 0 || v >= N))
                st = spry_errorf(SPRY_ERR_FORMAT,
                                 "%s: row %lld: sample id %lld outside the dataset [0, %lld) "
                                 "(metric %s; HINT: analyze the same dataset, in the same order)",
                                 m->index_to_sample_path, (long long)i, (long long)v,
                                 (long long)N, m->name);
            x->ids[off++] = v;
        }
    }
    x->row_off[x->n_rows] = off;
    spry_indexed_close(ds);
    return st;
}

static spry_status load_index_values(const spry_cl_metric *m, cl_index *x) {
    spry_indexed *ds = NULL;
    SPRY_TRY(spry_indexed_open(m->index_to_metric_path, SPRY_INDEXED_TABLE_AUTO, &ds));
    spry_status st = SPRY_OK;
    if (spry_indexed_n_items(ds) != x->n_rows) {
        st = spry_errorf(SPRY_ERR_FORMAT,
                         "%s: %lld rows but %s has %lld (metric %s: the two files must come from "
                         "one analysis)",
                         m->index_to_metric_path, (long long)spry_indexed_n_items(ds),
                         m->index_to_sample_path, (long long)x->n_rows, m->name);
        spry_indexed_close(ds);
        return st;
    }
    x->values = malloc(sizeof(int64_t) * (size_t)(x->n_rows > 0 ? x->n_rows : 1));
    if (!x->values) {
        spry_indexed_close(ds);
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", m->index_to_metric_path);
    }
    for (int64_t i = 0; i < x->n_rows && st == SPRY_OK; i++) {
        int64_t     n;
        const void *row = spry_indexed_item(ds, i, &n);
        if (n != 1) {
            st = spry_errorf(SPRY_ERR_FORMAT, "%s: row %lld has %lld values (expected 1)",
                             m->index_to_metric_path, (long long)i, (long long)n);
            break;
        }
        st = elem_i64(ds, row, 0, i, &x->values[i]);
        if (st == SPRY_OK && i > 0 && x->values[i] <= x->values[i - 1])
            st = spry_errorf(SPRY_ERR_FORMAT,
                             "%s: row %lld: value %lld after %lld (expected strictly ascending)",
                             m->index_to_metric_path, (long long)i, (long long)x->values[i],
                             (long long)x->values[i - 1]);
    }
    spry_indexed_close(ds);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Life cycle.

spry_cl_sampler_params spry_cl_sampler_params_default(void) {
    return (spry_cl_sampler_params){
        .n_samples = 0, .micro_batch = 1, .dp_size = 1, .dp_rank = 0, .grad_accum = 1,
        .drop_last = false};
}

void spry_cl_sampler_free(spry_cl_sampler *s) {
    if (!s) return;
    for (int i = 0; i < SPRY_CL_MAX_METRICS; i++) index_free(&s->idx[i]);
    for (int c = 0; c < s->n_clusters; c++) free(s->cl_ids[c]);
    free(s->cl_ids);
    free(s->cl_size);
    free(s->cl_pos);
    free(s->counts);
    free(s->batch);
    free(s->chunk_buf);
    free(s->mark);
    free(s->scratch);
    free(s);
}

spry_status spry_cl_sampler_init(const spry_data_efficiency_config *cfg,
                                 const spry_cl_sampler_params *p, spry_cl_sampler **out) {
    *out = NULL;
    if (!cfg->cl_enabled || cfg->n_metrics < 1 || cfg->n_metrics > SPRY_CL_MAX_METRICS)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "curriculum sampler: curriculum learning is not enabled or has no "
                           "metrics (data_efficiency.data_sampling.curriculum_learning)");
    if (p->n_samples <= 0 || p->micro_batch <= 0 || p->dp_size <= 0 || p->grad_accum <= 0 ||
        p->dp_rank < 0 || p->dp_rank >= p->dp_size)
        return spry_errorf(SPRY_ERR_CONFIG,
                           "curriculum sampler: n_samples %lld, micro_batch %lld, dp_size %lld, "
                           "dp_rank %lld, grad_accum %lld (need positive sizes, 0 <= rank < dp)",
                           (long long)p->n_samples, (long long)p->micro_batch,
                           (long long)p->dp_size, (long long)p->dp_rank, (long long)p->grad_accum);
    if (p->micro_batch > INT32_MAX / p->dp_size / p->grad_accum)
        return spry_errorf(SPRY_ERR_CONFIG, "curriculum sampler: global batch too large");
    for (int i = 0; i < cfg->n_metrics; i++) {
        const spry_cl_metric   *m  = &cfg->metrics[i];
        const spry_cl_schedule *sc = &m->schedule;
        bool ok = sc->min_difficulty <= sc->max_difficulty;
        if (sc->type == SPRY_CL_SCHEDULE_FIXED_LINEAR || sc->type == SPRY_CL_SCHEDULE_FIXED_ROOT)
            ok = ok && sc->total_curriculum_step > 0 && sc->difficulty_step > 0 &&
                 sc->root_degree > 0;
        else if (sc->type == SPRY_CL_SCHEDULE_FIXED_DISCRETE)
            ok = ok && sc->n_levels >= 1 && sc->n_levels <= SPRY_CL_MAX_LEVELS;
        else if (sc->type != SPRY_CL_SCHEDULE_CUSTOM)
            ok = false;
        if (m->difficulty_type == SPRY_CL_DIFFICULTY_PERCENTILE) ok = ok && sc->max_difficulty > 0;
        if (!ok)
            return spry_errorf(SPRY_ERR_CONFIG,
                               "curriculum sampler: metric \"%s\": invalid schedule (type %d, min "
                               "%lld, max %lld, total_curriculum_step %lld, difficulty_step %lld, "
                               "root_degree %lld, %d levels)",
                               m->name, (int)sc->type, (long long)sc->min_difficulty,
                               (long long)sc->max_difficulty, (long long)sc->total_curriculum_step,
                               (long long)sc->difficulty_step, (long long)sc->root_degree,
                               sc->n_levels);
    }
    spry_cl_sampler *s = calloc(1, sizeof *s);
    if (!s) return spry_errorf(SPRY_ERR_NOMEM, "curriculum sampler: out of memory");
    s->cfg   = *cfg;
    s->p     = *p;
    s->N     = p->n_samples;
    s->chunk = p->micro_batch * p->dp_size;
    s->G     = s->chunk * p->grad_accum;
    s->nm    = cfg->n_metrics;
    s->rng   = cfg->seed;
    s->limit = cfg->num_epochs > 0 && cfg->num_epochs <= INT64_MAX / s->N
                   ? cfg->num_epochs * s->N
                   : INT64_MAX;
    s->batch     = malloc(sizeof(int64_t) * (size_t)s->G);
    s->chunk_buf = malloc(sizeof(int64_t) * (size_t)s->chunk);
    s->mark      = malloc((size_t)s->N);
    s->scratch   = malloc(sizeof(int64_t) * (size_t)s->N);
    if (!s->batch || !s->chunk_buf || !s->mark || !s->scratch) {
        spry_cl_sampler_free(s);
        return spry_errorf(SPRY_ERR_NOMEM, "curriculum sampler: out of memory (N = %lld)",
                           (long long)p->n_samples);
    }
    for (int i = 0; i < s->nm; i++) {
        const spry_cl_metric *m = &cfg->metrics[i];
        spry_cl_scheduler_init(&s->sched[i], &m->schedule);
        s->cur[i] = m->schedule.min_difficulty;
        if (m->clustering_type != SPRY_CL_CLUSTERING_SCHEDULE_BASED) continue;
        spry_status st = load_index_rows(m, s->N, &s->idx[i]);
        if (st == SPRY_OK && m->difficulty_type == SPRY_CL_DIFFICULTY_VALUE)
            st = load_index_values(m, &s->idx[i]);
        if (st != SPRY_OK) {
            spry_cl_sampler_free(s);
            return st;
        }
    }
    *out = s;
    return SPRY_OK;
}

spry_status spry_cl_sampler_set_custom_schedule(spry_cl_sampler *s, const char *metric,
                                                spry_cl_custom_fn fn, void *user) {
    for (int i = 0; i < s->nm; i++) {
        if (strcmp(s->cfg.metrics[i].name, metric)) continue;
        s->sched[i].s.type        = SPRY_CL_SCHEDULE_CUSTOM;
        s->sched[i].s.custom      = fn;
        s->sched[i].s.custom_user = user;
        return SPRY_OK;
    }
    return spry_errorf(SPRY_ERR_NOT_FOUND, "curriculum sampler: no metric named \"%s\"", metric);
}

// ---------------------------------------------------------------------------------------------
// Clusters.

static spry_status add_cluster(spry_cl_sampler *s, const int64_t *ids, int64_t n) {
    if (n == 0) return SPRY_OK; // "no matched data thus skipped"
    if (s->n_clusters == s->cap_clusters) {
        int cap = s->cap_clusters ? 2 * s->cap_clusters : 16;
        int64_t **a = realloc(s->cl_ids, sizeof(int64_t *) * (size_t)cap);
        if (a) s->cl_ids = a;
        int64_t *b = realloc(s->cl_size, sizeof(int64_t) * (size_t)cap);
        if (b) s->cl_size = b;
        int64_t *c = realloc(s->cl_pos, sizeof(int64_t) * (size_t)cap);
        if (c) s->cl_pos = c;
        int64_t *d = realloc(s->counts, sizeof(int64_t) * (size_t)cap);
        if (d) s->counts = d;
        if (!a || !b || !c || !d) return spry_errorf(SPRY_ERR_NOMEM, "curriculum sampler: out of memory");
        s->cap_clusters = cap;
    }
    int64_t *copy = malloc(sizeof(int64_t) * (size_t)n);
    if (!copy) return spry_errorf(SPRY_ERR_NOMEM, "curriculum sampler: out of memory");
    memcpy(copy, ids, sizeof(int64_t) * (size_t)n);
    shuffle(&s->rng, copy, n);
    s->cl_ids[s->n_clusters]  = copy;
    s->cl_size[s->n_clusters] = n;
    s->cl_pos[s->n_clusters]  = 0;
    s->n_clusters++;
    return SPRY_OK;
}

// The positions [*a, *b) of metric i's concatenated ids with difficulty in (lo, hi]
// (value) or in the percentile range [spp lo, spp hi) (percentile; the end is the total at max).
static void metric_range(const spry_cl_sampler *s, int i, int64_t lo, int64_t hi, bool first,
                         int64_t *a, int64_t *b) {
    const cl_index *x = &s->idx[i];
    if (s->cfg.metrics[i].difficulty_type == SPRY_CL_DIFFICULTY_VALUE) {
        int64_t r0 = 0, r1 = 0;
        while (r0 < x->n_rows && !first && x->values[r0] <= lo) r0++;
        r1 = r0;
        while (r1 < x->n_rows && x->values[r1] <= hi) r1++;
        *a = x->row_off[r0];
        *b = x->row_off[r1 > r0 ? r1 : r0];
        return;
    }
    int64_t M   = s->sched[i].s.max_difficulty;
    int64_t spp = x->total / M;
    int64_t st  = lo <= 0 ? 0 : spp * lo;
    int64_t en  = hi >= M ? x->total : spp * hi;
    if (en < 0) en = 0;
    if (st > x->total) st = x->total;
    if (en > x->total) en = x->total;
    if (st > en) st = en;
    *a = st;
    *b = en;
}

// Builds the cluster for the new difficulties nd (prev = s->cur unless first).
static spry_status make_cluster(spry_cl_sampler *s, const int64_t *nd, bool first) {
    int need = 0, only = -1;
    for (int i = 0; i < s->nm; i++)
        if (s->cfg.metrics[i].clustering_type == SPRY_CL_CLUSTERING_SCHEDULE_BASED) {
            need++;
            only = i;
        }
    if (need == 0) {
        if (s->n_clusters > 0) return SPRY_OK;
        for (int64_t j = 0; j < s->N; j++) s->scratch[j] = j;
        return add_cluster(s, s->scratch, s->N);
    }
    if (need == 1) {
        int64_t a, b;
        metric_range(s, only, first ? 0 : s->cur[only], nd[only], first, &a, &b);
        return add_cluster(s, s->idx[only].ids + a, b - a);
    }
    // Several schedule_based metrics: cumulative sets intersected (a sample counts once per
    // metric, as the rows of one index partition the samples), minus existing clusters.
    memset(s->mark, 0, (size_t)s->N);
    for (int i = 0; i < s->nm; i++) {
        if (s->cfg.metrics[i].clustering_type != SPRY_CL_CLUSTERING_SCHEDULE_BASED) continue;
        int64_t a, b;
        metric_range(s, i, 0, nd[i], true, &a, &b);
        for (int64_t j = a; j < b; j++) s->mark[s->idx[i].ids[j]]++;
    }
    for (int c = 0; c < s->n_clusters; c++)
        for (int64_t j = 0; j < s->cl_size[c]; j++) s->mark[s->cl_ids[c][j]] = 0;
    int64_t n = 0;
    for (int64_t j = 0; j < s->N; j++)
        if (s->mark[j] == (uint8_t)need) s->scratch[n++] = j; // ascending, as np.intersect1d
    return add_cluster(s, s->scratch, n);
}

// ---------------------------------------------------------------------------------------------
// Drawing.

static spry_status draw_global(spry_cl_sampler *s) {
    for (int i = 0; i < s->nm; i++)
        if (s->sched[i].s.type == SPRY_CL_SCHEDULE_CUSTOM && !s->sched[i].s.custom)
            return spry_errorf(SPRY_ERR_CONFIG,
                               "curriculum sampler: metric \"%s\" has schedule_type custom but no "
                               "callback (HINT: spry_cl_sampler_set_custom_schedule)",
                               s->cfg.metrics[i].name);
    int64_t t = s->step + 1, nd[SPRY_CL_MAX_METRICS];
    bool    changed = !s->started;
    for (int i = 0; i < s->nm; i++) {
        nd[i] = spry_cl_scheduler_update(&s->sched[i], t);
        if (nd[i] != s->cur[i]) changed = true;
    }
    if (changed) SPRY_TRY(make_cluster(s, nd, !s->started));
    s->step = t;
    s->started = true;
    for (int i = 0; i < s->nm; i++) s->cur[i] = nd[i];
    int64_t total = 0;
    for (int c = 0; c < s->n_clusters; c++) total += s->cl_size[c];
    if (total == 0) {
        char buf[256] = "";
        size_t  o = 0;
        for (int i = 0; i < s->nm && o < sizeof buf - 1; i++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%s=%lld", i ? ", " : "",
                                  s->cfg.metrics[i].name, (long long)nd[i]);
        return spry_errorf(SPRY_ERR_CONFIG,
                           "curriculum sampler: no sample is eligible at step %lld (%s) "
                           "(HINT: raise min_difficulty)",
                           (long long)t, buf);
    }
    // Size-weighted cluster draws (np_rng.choice(p = size / total) then bincount).
    for (int c = 0; c < s->n_clusters; c++) s->counts[c] = 0;
    for (int64_t g = 0; g < s->G; g++) {
        int64_t u = (int64_t)rng_below(&s->rng, (uint64_t)total);
        int     c = 0;
        while (u >= s->cl_size[c]) u -= s->cl_size[c++];
        s->counts[c]++;
    }
    // Take from each cluster in order, looping (with a reshuffle at every wrap) until filled.
    int64_t n = 0;
    for (int c = 0; c < s->n_clusters; c++) {
        int64_t want = s->counts[c];
        while (want > 0) {
            int64_t avail = s->cl_size[c] - s->cl_pos[c];
            if (avail == 0) {
                shuffle(&s->rng, s->cl_ids[c], s->cl_size[c]);
                s->cl_pos[c] = 0;
                continue;
            }
            int64_t k = want < avail ? want : avail;
            memcpy(s->batch + n, s->cl_ids[c] + s->cl_pos[c], sizeof(int64_t) * (size_t)k);
            s->cl_pos[c] += k;
            n += k;
            want -= k;
        }
    }
    shuffle(&s->rng, s->batch, n);
    s->batch_len  = n;
    s->batch_pos  = 0;
    s->batch_step = t;
    for (int i = 0; i < s->nm; i++) s->batch_diff[i] = nd[i];
    return SPRY_OK;
}

spry_status spry_cl_sampler_next_chunk(spry_cl_sampler *s, int64_t *ids, int64_t *n,
                                       int64_t *difficulties, int64_t *step) {
    *n = 0;
    if (s->consumed >= s->limit) return SPRY_OK;
    if (s->batch_pos >= s->batch_len) SPRY_TRY(draw_global(s));
    int64_t len = s->batch_len - s->batch_pos;
    if (len > s->chunk) len = s->chunk;
    memcpy(ids, s->batch + s->batch_pos, sizeof(int64_t) * (size_t)len);
    s->batch_pos += len;
    s->consumed += len;
    *n = len;
    if (difficulties)
        for (int i = 0; i < s->nm; i++) difficulties[i] = s->batch_diff[i];
    if (step) *step = s->batch_step;
    return SPRY_OK;
}

spry_status spry_cl_sampler_next(spry_cl_sampler *s, int64_t *ids, int64_t *n,
                                 int64_t *difficulties, int64_t *step) {
    int64_t len = 0, a, b;
    *n          = 0;
    SPRY_TRY(spry_cl_sampler_next_chunk(s, s->chunk_buf, &len, difficulties, step));
    if (len == 0 || (len < s->chunk && s->p.drop_last)) return SPRY_OK;
    spry_cl_dp_slice(len, s->p.dp_size, s->p.dp_rank, &a, &b);
    memcpy(ids, s->chunk_buf + a, sizeof(int64_t) * (size_t)(b - a));
    *n = b - a;
    return SPRY_OK;
}

void spry_cl_dp_slice(int64_t len, int64_t dp, int64_t r, int64_t *start, int64_t *end) {
    *start = (int64_t)nearbyint((double)r * (double)len / (double)dp);
    *end   = (int64_t)nearbyint((double)(r + 1) * (double)len / (double)dp);
}

int     spry_cl_sampler_n_metrics(const spry_cl_sampler *s) { return s->nm; }
int64_t spry_cl_sampler_global_batch(const spry_cl_sampler *s) { return s->G; }
int64_t spry_cl_sampler_curriculum_step(const spry_cl_sampler *s) { return s->step; }
int64_t spry_cl_sampler_consumed(const spry_cl_sampler *s) { return s->consumed; }
int     spry_cl_sampler_n_clusters(const spry_cl_sampler *s) { return s->n_clusters; }

const int64_t *spry_cl_sampler_cluster(const spry_cl_sampler *s, int c, int64_t *size) {
    SPRY_ASSERT(c >= 0 && c < s->n_clusters, "cluster %d of %d", c, s->n_clusters);
    *size = s->cl_size[c];
    return s->cl_ids[c];
}

// ---------------------------------------------------------------------------------------------
// Checkpoint state.
//   [0] magic [1] version [2] N [3] G [4] n_metrics [5] step [6] consumed [7] rng [8] started
//   [9] batch_len [10] batch_pos [11] batch_step, cur[nm], batch_diff[nm], n_clusters,
//   per cluster: size, pos, ids[size]; then batch[batch_len].

int64_t spry_cl_sampler_state_size(const spry_cl_sampler *s) {
    int64_t n = CL_STATE_HEADER + 2 * s->nm + 1 + s->batch_len;
    for (int c = 0; c < s->n_clusters; c++) n += 2 + s->cl_size[c];
    return n;
}

int64_t spry_cl_sampler_get_state(const spry_cl_sampler *s, int64_t *buf, int64_t cap) {
    int64_t need = spry_cl_sampler_state_size(s), o = 0;
    if (cap < need) return -1;
    int64_t h[CL_STATE_HEADER] = {CL_STATE_MAGIC, CL_STATE_VERSION, s->N, s->G, s->nm, s->step,
                                  s->consumed, (int64_t)s->rng, s->started, s->batch_len,
                                  s->batch_pos, s->batch_step};
    for (int i = 0; i < CL_STATE_HEADER; i++) buf[o++] = h[i];
    for (int i = 0; i < s->nm; i++) buf[o++] = s->cur[i];
    for (int i = 0; i < s->nm; i++) buf[o++] = s->batch_diff[i];
    buf[o++] = s->n_clusters;
    for (int c = 0; c < s->n_clusters; c++) {
        buf[o++] = s->cl_size[c];
        buf[o++] = s->cl_pos[c];
        memcpy(buf + o, s->cl_ids[c], sizeof(int64_t) * (size_t)s->cl_size[c]);
        o += s->cl_size[c];
    }
    memcpy(buf + o, s->batch, sizeof(int64_t) * (size_t)s->batch_len);
    o += s->batch_len;
    return o;
}

#define STATE_BAD(field, val)                                                                      \
    spry_errorf(SPRY_ERR_FORMAT, "curriculum sampler state: %s = %lld is invalid", field,         \
                (long long)(val))

spry_status spry_cl_sampler_set_state(spry_cl_sampler *s, const int64_t *buf, int64_t n) {
    if (!buf || n < CL_STATE_HEADER) return STATE_BAD("length", n);
    if (buf[0] != CL_STATE_MAGIC) return STATE_BAD("magic", buf[0]);
    if (buf[1] != CL_STATE_VERSION) return STATE_BAD("version", buf[1]);
    if (buf[2] != s->N) return STATE_BAD("n_samples (this sampler's differs)", buf[2]);
    if (buf[3] != s->G) return STATE_BAD("global batch (this sampler's differs)", buf[3]);
    if (buf[4] != s->nm) return STATE_BAD("n_metrics (this config's differs)", buf[4]);
    if (buf[5] < 0) return STATE_BAD("curriculum_step", buf[5]);
    if (buf[6] < 0) return STATE_BAD("consumed_samples", buf[6]);
    if (buf[8] != 0 && buf[8] != 1) return STATE_BAD("started", buf[8]);
    if (buf[9] < 0 || buf[9] > s->G) return STATE_BAD("batch_len", buf[9]);
    if (buf[10] < 0 || buf[10] > buf[9]) return STATE_BAD("batch_pos", buf[10]);
    int64_t o = CL_STATE_HEADER, blen = buf[9];
    if (n < o + 2 * s->nm + 1) return STATE_BAD("length", n);
    const int64_t *cur = buf + o, *bd = buf + o + s->nm;
    o += 2 * s->nm;
    int64_t nc = buf[o++];
    if (nc < 0 || nc > s->N) return STATE_BAD("n_clusters", nc);
    // Validate everything before touching the sampler.
    int64_t o2 = o, total = 0;
    for (int64_t c = 0; c < nc; c++) {
        if (o2 + 2 > n) return STATE_BAD("length", n);
        int64_t size = buf[o2], pos = buf[o2 + 1];
        if (size < 1 || size > s->N - total) return STATE_BAD("cluster size", size);
        if (pos < 0 || pos > size) return STATE_BAD("cluster position", pos);
        o2 += 2;
        if (o2 + size > n) return STATE_BAD("length", n);
        for (int64_t j = 0; j < size; j++)
            if (buf[o2 + j] < 0 || buf[o2 + j] >= s->N) return STATE_BAD("sample id", buf[o2 + j]);
        o2 += size;
        total += size;
    }
    if (o2 + blen != n) return STATE_BAD("length", n);
    for (int64_t j = 0; j < blen; j++)
        if (buf[o2 + j] < 0 || buf[o2 + j] >= s->N) return STATE_BAD("batch sample id", buf[o2 + j]);
    // Rebuild the clusters.
    int64_t **ids = calloc((size_t)(nc > 0 ? nc : 1), sizeof(int64_t *));
    int64_t  *sz = malloc(sizeof(int64_t) * (size_t)(nc > 0 ? nc : 1));
    int64_t  *ps = malloc(sizeof(int64_t) * (size_t)(nc > 0 ? nc : 1));
    int64_t  *cn = malloc(sizeof(int64_t) * (size_t)(nc > 0 ? nc : 1));
    bool      ok = ids && sz && ps && cn;
    for (int64_t c = 0; ok && c < nc; c++) {
        sz[c]  = buf[o];
        ps[c]  = buf[o + 1];
        ids[c] = malloc(sizeof(int64_t) * (size_t)sz[c]);
        if (!ids[c]) {
            ok = false;
            break;
        }
        memcpy(ids[c], buf + o + 2, sizeof(int64_t) * (size_t)sz[c]);
        o += 2 + sz[c];
    }
    if (!ok) {
        for (int64_t c = 0; ids && c < nc; c++) free(ids[c]);
        free(ids);
        free(sz);
        free(ps);
        free(cn);
        return spry_errorf(SPRY_ERR_NOMEM, "curriculum sampler state: out of memory");
    }
    for (int c = 0; c < s->n_clusters; c++) free(s->cl_ids[c]);
    free(s->cl_ids);
    free(s->cl_size);
    free(s->cl_pos);
    free(s->counts);
    s->cl_ids       = ids;
    s->cl_size      = sz;
    s->cl_pos       = ps;
    s->counts       = cn;
    s->n_clusters   = (int)nc;
    s->cap_clusters = (int)(nc > 0 ? nc : 1);
    s->step         = buf[5];
    s->consumed     = buf[6];
    s->rng          = (uint64_t)buf[7];
    s->started      = buf[8] != 0;
    s->batch_len    = blen;
    s->batch_pos    = buf[10];
    s->batch_step   = buf[11];
    memcpy(s->batch, buf + o, sizeof(int64_t) * (size_t)blen);
    for (int i = 0; i < s->nm; i++) {
        s->cur[i]            = cur[i];
        s->batch_diff[i]     = bd[i];
        s->sched[i].current  = cur[i];
    }
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Post-processing helpers.

int64_t spry_cl_seqlen_truncate(const int32_t *in, int64_t B, int64_t T1, int64_t s,
                                int32_t *out) {
    if (s < 1) s = 1;
    int64_t T = s + 1 < T1 ? s + 1 : T1;
    for (int64_t b = 0; b < B; b++) memmove(out + b * T, in + b * T1, sizeof(int32_t) * (size_t)T);
    return T;
}

int64_t spry_cl_seqlen_reshape_capacity(int64_t B, int64_t T1, int64_t s) {
    if (s < 1) s = 1;
    if (s + 1 >= T1) return B * T1;
    return (B * (T1 / (s + 1)) + B) * (s + 1);
}

int64_t spry_cl_seqlen_reshape(const int32_t *in, int64_t B, int64_t T1, int64_t s, int32_t *out,
                               int64_t *T1_out) {
    if (s < 1) s = 1;
    if (s + 1 >= T1) {
        memmove(out, in, sizeof(int32_t) * (size_t)(B * T1));
        *T1_out = T1;
        return B;
    }
    int64_t w = s + 1, per = T1 / w, rows = B * per + B, r = 0;
    int64_t num_row = (B * T1 + w - 1) / w;
    if (num_row > rows) num_row = rows;
    if (num_row > 1 && num_row % 2 == 1) num_row--;
    for (int64_t b = 0; b < B && r < num_row; b++)
        for (int64_t k = 0; k < per && r < num_row; k++, r++)
            memcpy(out + r * w, in + b * T1 + k * w, sizeof(int32_t) * (size_t)w);
    for (int64_t b = 0; b < B && r < num_row; b++, r++)
        memcpy(out + r * w, in + b * T1 + (T1 - w), sizeof(int32_t) * (size_t)w);
    *T1_out = w;
    return num_row;
}

int64_t spry_cl_pad_trim_len(const int32_t *tokens, int64_t B, int64_t T, int32_t pad_id) {
    int64_t longest = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t n = T;
        while (n > 0 && tokens[b * T + n - 1] == pad_id) n--;
        if (n > longest) longest = n;
    }
    int64_t L = (longest + 7) / 8 * 8;
    return L < T ? L : T;
}
