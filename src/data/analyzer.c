/*
 * analyzer.c -- DeepSpeed Data Efficiency's data analyzer (include/spry/analyzer.h): map over
 * workers x threads sample ranges (OpenMP), in-memory reduce, MMIDIDX output files.
 *
 * Memory: 8 bytes per sample per single-value metric (the values), 16 bytes per sample during a
 * metric's reduce (value, id pairs), 8 bytes per item (token offsets), and per task one sample
 * buffer plus accum_len int64 per accumulate metric.
 */
#include "spry/analyzer.h"

#include "spry/loader.h"

#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spry/fs.h"
#include "spry/indexed.h"

#define MAX_METRICS 64
#define MSG_LEN 512

static const char *const k_builtin[] = {"seqlen", "total_vocab_freq", "vocab_rarity",
                                        "seqlen_vocab_rarity"};

spry_analyzer_params spry_analyzer_params_default(void) {
    spry_analyzer_params p;
    memset(&p, 0, sizeof p);
    p.n_workers = 1;
    p.n_threads = 1;
    p.eod_id    = -1;
    p.pad_id    = -1;
    return p;
}

int spry_analyzer_is_builtin(const char *name) {
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof k_builtin / sizeof k_builtin[0]; i++)
        if (!strcmp(name, k_builtin[i]))
            return 1;
    return 0;
}

spry_status spry_analyzer_split_index(int64_t a, int64_t b, int k, int64_t *bounds) {
    if (a > b || k < 1 || !bounds)
        return spry_errorf(SPRY_ERR_ARG,
                           "split_index: need start <= end and parts >= 1, got "
                           "start=%lld end=%lld parts=%d",
                           (long long)a, (long long)b, k);
    // np.linspace(a, b, k + 1, dtype=int): y = arange(k + 1) * (delta / div) + start in double,
    // y[-1] = stop, then truncation toward zero.
    double step = ((double)b - (double)a) / (double)k;
    for (int i = 0; i < k; i++)
        bounds[i] = (int64_t)((double)i * step + (double)a);
    bounds[k] = b;
    for (int i = 1; i <= k; i++) // guards double rounding; never triggers for |b| < 2^53
        if (bounds[i] < bounds[i - 1])
            bounds[i] = bounds[i - 1];
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Samples.

typedef struct sampler {
    spry_indexed *ds;
    spry_loader *ld; // windows of a split through the training loader (split given), else NULL
    int64_t seq_len;
    int64_t n_items;
    int64_t *starts; // [n_items + 1] token offset of each item in the concatenation
    int64_t n;       // samples
    int64_t max_len; // longest sample (tokens)
    int64_t pad;     // encoder samples: a sample's tokens end at its first pad (-1: none)
} sampler;

static void sampler_free(sampler *s) {
    spry_loader_free(s->ld);
    spry_indexed_close(s->ds);
    free(s->starts);
    memset(s, 0, sizeof *s);
}

static spry_status sampler_open(const char *prefix, int64_t seq_len, const char *split, int64_t eod_id,
                                int64_t pad_id, sampler *s) {
    memset(s, 0, sizeof *s);
    if (!prefix)
        return spry_errorf(SPRY_ERR_ARG, "analyzer: data_prefix is required");
    if (seq_len < 0 || seq_len > INT32_MAX - 1)
        return spry_errorf(SPRY_ERR_ARG, "analyzer: seq_len must be in [0, %d], got %lld",
                           INT32_MAX - 1, (long long)seq_len);
    SPRY_TRY(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &s->ds));
    spry_indexed_dtype dt = spry_indexed_elem_dtype(s->ds);
    if (dt == SPRY_INDEXED_DTYPE_F32 || dt == SPRY_INDEXED_DTYPE_F64) {
        sampler_free(s);
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s.idx: dtype %s: a token dataset needs integer "
                           "elements",
                           prefix, spry_indexed_dtype_name(dt));
    }
    s->seq_len = seq_len;
    s->n_items = spry_indexed_n_items(s->ds);
    s->starts  = malloc(sizeof(int64_t) * (size_t)(s->n_items + 1));
    if (!s->starts) {
        sampler_free(s);
        return spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory for %lld item offsets",
                           (long long)s->n_items);
    }
    s->starts[0] = 0;
    for (int64_t i = 0; i < s->n_items; i++) {
        int64_t len;
        (void)spry_indexed_item(s->ds, i, &len);
        s->starts[i + 1] = s->starts[i] + len;
        if (seq_len == 0 && len > s->max_len)
            s->max_len = len;
    }
    if (seq_len > 0 && split) { // the training loader's own samples (same split, eod, packing)
        spry_loader_params lp = spry_loader_params_default();
        lp.dataset = s->ds, lp.split = split, lp.seq_len = seq_len, lp.batch_size = 1, lp.eod_id = eod_id;
        lp.shuffle = false, lp.pad_id = pad_id;
        s->pad     = pad_id;
        spry_status st = spry_loader_init(&lp, &s->ld);
        if (st) {
            sampler_free(s);
            return st;
        }
        s->n       = spry_loader_n_samples(s->ld);
        s->max_len = seq_len + 1;
    } else if (seq_len == 0) {
        s->n = s->n_items;
    } else {
        int64_t tokens = s->starts[s->n_items];
        s->n           = tokens > 0 ? (tokens - 1) / seq_len : 0;
        s->max_len     = seq_len + 1;
    }
    return SPRY_OK;
}

// Copies sample id's tokens to buf[max_len]; *n = its length.
static spry_status sampler_read(const sampler *s, int64_t id, int32_t *buf, int64_t *n) {
    if (s->ld) {
        *n = s->seq_len + 1;
        SPRY_TRY(spry_loader_sample(s->ld, id, buf));
        if (s->pad >= 0) // the real tokens (BERT's padding_mask)
            for (*n = 0; *n < s->seq_len && buf[*n] != (int32_t)s->pad;) ++*n;
        return SPRY_OK;
    }
    if (s->seq_len == 0) {
        int64_t len;
        (void)spry_indexed_item(s->ds, id, &len);
        *n = len;
        return spry_indexed_read_tokens(s->ds, id, 0, len, buf);
    }
    int64_t pos = id * s->seq_len, need = s->seq_len + 1, got = 0;
    // the item holding token pos: the last i with starts[i] <= pos (skipping empty items)
    int64_t lo = 0, hi = s->n_items; // starts[lo] <= pos < starts[hi]
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s->starts[mid] <= pos)
            lo = mid;
        else
            hi = mid;
    }
    for (int64_t it = lo; got < need && it < s->n_items; it++) {
        int64_t off = pos + got - s->starts[it], len = s->starts[it + 1] - s->starts[it];
        if (off >= len)
            continue;
        int64_t take = len - off < need - got ? len - off : need - got;
        SPRY_TRY(spry_indexed_read_tokens(s->ds, it, off, take, buf + got));
        got += take;
    }
    *n = got;
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Built-in metric callbacks.

typedef struct vocab_ctx {
    int64_t vocab;
    const double *rarity; // [vocab] -ln p, NULL for the counting pass
    int64_t c;            // seqlen_vocab_rarity multiplier
} vocab_ctx;

static spry_status m_seqlen(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    (void)u, (void)id, (void)t;
    out[0] = n;
    return SPRY_OK;
}

static spry_status check_token(const vocab_ctx *v, int64_t id, int64_t j, int32_t tok) {
    if (tok < 0 || tok >= v->vocab)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "analyzer: sample %lld token %lld: id %d outside the "
                           "vocabulary [0, %lld) (raise --vocab-size)",
                           (long long)id, (long long)j, tok, (long long)v->vocab);
    return SPRY_OK;
}

static spry_status m_vocab_freq(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    const vocab_ctx *v = u;
    for (int64_t j = 0; j < n; j++) {
        SPRY_TRY(check_token(v, id, j, t[j]));
        out[t[j]]++;
    }
    return SPRY_OK;
}

static spry_status rarity_sum(const vocab_ctx *v, int64_t id, const int32_t *t, int64_t n,
                              int64_t *out) {
    double sum = 0;
    for (int64_t j = 0; j < n; j++) {
        SPRY_TRY(check_token(v, id, j, t[j]));
        sum += v->rarity[t[j]];
    }
    *out = (int64_t)sum;
    return SPRY_OK;
}

static spry_status m_vocab_rarity(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    return rarity_sum(u, id, t, n, out);
}

static spry_status m_seqlen_vocab_rarity(void *u, int64_t id, const int32_t *t, int64_t n,
                                         int64_t *out) {
    const vocab_ctx *v = u;
    int64_t r;
    SPRY_TRY(rarity_sum(v, id, t, n, &r));
    if (n > 0 && v->c > (INT64_MAX - r) / n)
        return spry_errorf(SPRY_ERR_ARG,
                           "analyzer: seqlen_vocab_rarity overflows int64 for "
                           "sample %lld (seqlen %lld, C %lld)",
                           (long long)id, (long long)n, (long long)v->c);
    *out = n * v->c + r;
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Map.

typedef struct metric {
    const char *name;
    spry_metric_type type;
    int64_t accum_len;
    spry_metric_fn fn;
    void *user;
    int64_t *values; // single: [n_samples]
    int64_t *acc;    // accumulate: [accum_len], the reduced sum
} metric;

typedef struct task {
    int64_t begin, end;
    spry_status st;
    char msg[MSG_LEN];
} task;

// Accumulators are per OpenMP thread (not per task) so memory does not grow with workers x
// threads; integer sums do not depend on the order, an overflow is an error.
static spry_status run_map(const sampler *s, metric *ms, int nm, int workers, int threads) {
    int nt = workers * threads, n_omp = nt < 256 ? nt : 256;
    int64_t *wb       = malloc(sizeof(int64_t) * (size_t)(workers + 1));
    int64_t *tb       = malloc(sizeof(int64_t) * (size_t)(threads + 1));
    task *tasks       = calloc((size_t)nt, sizeof *tasks);
    int64_t **accs    = calloc((size_t)n_omp, sizeof *accs); // [n_omp][acc_total]
    int64_t acc_total = 0;
    for (int m = 0; m < nm; m++)
        if (ms[m].type == SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES)
            acc_total += ms[m].accum_len;
    spry_status st = SPRY_OK;
    if (!wb || !tb || !tasks || !accs) {
        st = spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory for %d tasks", nt);
        goto done;
    }
    SPRY_ASSERT(spry_analyzer_split_index(0, s->n, workers, wb) == SPRY_OK, "split");
    for (int w = 0; w < workers; w++) {
        SPRY_ASSERT(spry_analyzer_split_index(wb[w], wb[w + 1], threads, tb) == SPRY_OK, "split");
        for (int t = 0; t < threads; t++) {
            task *k  = &tasks[w * threads + t];
            k->begin = tb[t], k->end = tb[t + 1];
        }
    }
    for (int i = 0; i < n_omp && acc_total; i++)
        if (!(accs[i] = calloc((size_t)acc_total, sizeof(int64_t)))) {
            st = spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory for %lld accumulators",
                             (long long)acc_total);
            goto done;
        }
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_omp)
    for (int ti = 0; ti < nt; ti++) {
        task *k      = &tasks[ti];
        int64_t *acc = accs[omp_get_thread_num() % n_omp];
        int32_t *buf = malloc(sizeof(int32_t) * (size_t)(s->max_len > 0 ? s->max_len : 1));
        if (!buf) {
            k->st = SPRY_ERR_NOMEM;
            snprintf(k->msg, MSG_LEN, "analyzer: out of memory for a %lld-token sample",
                     (long long)s->max_len);
            continue;
        }
        for (int64_t id = k->begin; id < k->end && k->st == SPRY_OK; id++) {
            int64_t n   = 0;
            k->st       = sampler_read(s, id, buf, &n);
            int64_t off = 0;
            for (int m = 0; m < nm && k->st == SPRY_OK; m++) {
                if (ms[m].type == SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE) {
                    k->st = ms[m].fn(ms[m].user, id, buf, n, &ms[m].values[id]);
                } else {
                    k->st = ms[m].fn(ms[m].user, id, buf, n, acc + off);
                    off += ms[m].accum_len;
                }
            }
            if (k->st != SPRY_OK)
                snprintf(k->msg, MSG_LEN, "%s", spry_last_error());
        }
        free(buf);
    }
    for (int ti = 0; ti < nt; ti++)
        if (tasks[ti].st != SPRY_OK) {
            st = spry_errorf(tasks[ti].st, "%s", tasks[ti].msg);
            goto done;
        }
    int64_t off = 0;
    for (int m = 0; m < nm; m++) {
        if (ms[m].type != SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES)
            continue;
        for (int i = 0; i < n_omp; i++)
            for (int64_t j = 0; j < ms[m].accum_len; j++)
                if (__builtin_add_overflow(ms[m].acc[j], accs[i][off + j], &ms[m].acc[j])) {
                    st = spry_errorf(SPRY_ERR_ARG,
                                     "analyzer: metric '%s': element %lld of the "
                                     "accumulated value overflows int64",
                                     ms[m].name, (long long)j);
                    goto done;
                }
        off += ms[m].accum_len;
    }
done:
    if (accs)
        for (int i = 0; i < n_omp; i++)
            free(accs[i]);
    free(accs);
    free(tasks);
    free(wb);
    free(tb);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Output.

// Appends v[n] converted to dt (every value fits: dt came from spry_indexed_dtype_fit).
static spry_status add_i64(spry_indexed_builder *b, spry_indexed_dtype dt, const int64_t *v,
                           int64_t n, void *scratch) {
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case SPRY_INDEXED_DTYPE_U8:
            ((uint8_t *)scratch)[i] = (uint8_t)v[i];
            break;
        case SPRY_INDEXED_DTYPE_I8:
            ((int8_t *)scratch)[i] = (int8_t)v[i];
            break;
        case SPRY_INDEXED_DTYPE_U16:
            ((uint16_t *)scratch)[i] = (uint16_t)v[i];
            break;
        case SPRY_INDEXED_DTYPE_I16:
            ((int16_t *)scratch)[i] = (int16_t)v[i];
            break;
        case SPRY_INDEXED_DTYPE_U32:
            ((uint32_t *)scratch)[i] = (uint32_t)v[i];
            break;
        case SPRY_INDEXED_DTYPE_I32:
            ((int32_t *)scratch)[i] = (int32_t)v[i];
            break;
        case SPRY_INDEXED_DTYPE_U64:
            ((uint64_t *)scratch)[i] = (uint64_t)v[i];
            break;
        default:
            ((int64_t *)scratch)[i] = v[i];
            break;
        }
    }
    return spry_indexed_builder_add_item(b, scratch, n);
}

static char *path_join(const char *dir, const char *name, const char *suffix) {
    size_t len = strlen(dir) + strlen(name) * 2 + strlen(suffix) + 4;
    char *p    = malloc(len);
    if (p)
        snprintf(p, len, "%s/%s/%s%s", dir, name, name, suffix);
    return p;
}

typedef struct writer {
    spry_indexed_builder *b;
    spry_indexed_dtype dt;
    char *prefix;
} writer;

static spry_status writer_open(writer *w, const char *dir, const char *name, const char *suffix,
                               spry_indexed_dtype dt) {
    w->b      = NULL;
    w->dt     = dt;
    w->prefix = path_join(dir, name, suffix);
    if (!w->prefix)
        return spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory");
    return spry_indexed_builder_init(w->prefix, dt, SPRY_INDEXED_TABLE_DEEPSPEED, &w->b);
}

static void writer_close(writer *w) {
    spry_indexed_builder_free(w->b);
    free(w->prefix);
    w->b = NULL, w->prefix = NULL;
}

typedef struct pair {
    int64_t value, id;
} pair;

static int pair_cmp(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static spry_status write_accumulate(const char *dir, const metric *m) {
    int64_t lo = m->acc[0], hi = m->acc[0];
    for (int64_t j = 1; j < m->accum_len; j++) {
        if (m->acc[j] < lo)
            lo = m->acc[j];
        if (m->acc[j] > hi)
            hi = m->acc[j];
    }
    writer w      = {0};
    void *scratch = malloc(sizeof(int64_t) * (size_t)m->accum_len);
    spry_status st =
        scratch ? writer_open(&w, dir, m->name, "_metric_value", spry_indexed_dtype_fit(lo, hi))
                : spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory");
    if (!st)
        st = add_i64(w.b, w.dt, m->acc, m->accum_len, scratch);
    if (!st)
        st = spry_indexed_builder_finalize(w.b);
    writer_close(&w);
    free(scratch);
    return st;
}

static spry_status write_single(const char *dir, const metric *m, int64_t n) {
    pair *pairs    = malloc(sizeof(pair) * (size_t)n);
    int64_t *rows  = malloc(sizeof(int64_t) * (size_t)(n + 1)); // row starts in pairs
    int64_t *ids   = malloc(sizeof(int64_t) * (size_t)n);
    void *scratch  = malloc(sizeof(int64_t) * (size_t)n);
    writer w       = {0};
    spry_status st = SPRY_OK;
    if (!pairs || !rows || !ids || !scratch) {
        st = spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory for %lld samples", (long long)n);
        goto done;
    }
    int64_t lo = m->values[0], hi = m->values[0];
    for (int64_t i = 0; i < n; i++) {
        pairs[i].value = m->values[i], pairs[i].id = i;
        if (m->values[i] < lo)
            lo = m->values[i];
        if (m->values[i] > hi)
            hi = m->values[i];
    }
    spry_indexed_dtype vdt = spry_indexed_dtype_fit(lo, hi), sdt = spry_indexed_dtype_fit(0, n - 1);
    // sample_to_metric: n items of one value, dataset order
    st = writer_open(&w, dir, m->name, "_sample_to_metric", vdt);
    for (int64_t i = 0; i < n && !st; i++)
        st = add_i64(w.b, vdt, &m->values[i], 1, scratch);
    if (!st)
        st = spry_indexed_builder_finalize(w.b);
    writer_close(&w);
    if (st)
        goto done;

    qsort(pairs, (size_t)n, sizeof *pairs, pair_cmp);
    int64_t n_rows = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || pairs[i].value != pairs[i - 1].value)
            rows[n_rows++] = i;
    rows[n_rows] = n;
    for (int64_t i = 0; i < n; i++)
        ids[i] = pairs[i].id;

    st = writer_open(&w, dir, m->name, "_index_to_metric", vdt);
    for (int64_t r = 0; r < n_rows && !st; r++)
        st = add_i64(w.b, vdt, &pairs[rows[r]].value, 1, scratch);
    if (!st)
        st = spry_indexed_builder_finalize(w.b);
    writer_close(&w);
    if (st)
        goto done;

    st = writer_open(&w, dir, m->name, "_index_to_sample", sdt);
    for (int64_t r = 0; r < n_rows && !st; r++)
        st = add_i64(w.b, sdt, ids + rows[r], rows[r + 1] - rows[r], scratch);
    if (!st)
        st = spry_indexed_builder_finalize(w.b);
    writer_close(&w);
    if (st)
        goto done;

    int64_t step = n_rows / 100 > 1 ? n_rows / 100 : 1; // DeepSpeed's merge_step
    st           = writer_open(&w, dir, m->name, "_index_to_sample_percentile_merged", sdt);
    for (int64_t r = 0; r < n_rows && !st; r += step) {
        int64_t e = r + step < n_rows ? r + step : n_rows;
        st        = add_i64(w.b, sdt, ids + rows[r], rows[e] - rows[r], scratch);
    }
    if (!st)
        st = spry_indexed_builder_finalize(w.b);
    writer_close(&w);
done:
    free(pairs);
    free(rows);
    free(ids);
    free(scratch);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Driver.

static int name_ok(const char *s) {
    if (!s || !*s || !strcmp(s, ".") || !strcmp(s, "..") || strlen(s) > 200)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

static spry_status scan_max_token(const sampler *s, int64_t *max_tok) {
    int64_t best = -1;
    int32_t buf[4096];
    for (int64_t i = 0; i < s->n_items; i++) {
        int64_t len = s->starts[i + 1] - s->starts[i];
        for (int64_t off = 0; off < len; off += 4096) {
            int64_t take = len - off < 4096 ? len - off : 4096;
            SPRY_TRY(spry_indexed_read_tokens(s->ds, i, off, take, buf));
            for (int64_t j = 0; j < take; j++)
                if (buf[j] > best)
                    best = buf[j];
        }
    }
    *max_tok = best;
    return SPRY_OK;
}

spry_status spry_analyzer_count_samples(const char *data_prefix, int64_t seq_len, int64_t *n) {
    sampler s;
    SPRY_TRY(sampler_open(data_prefix, seq_len, NULL, -1, -1, &s));
    *n = s.n;
    sampler_free(&s);
    return SPRY_OK;
}

spry_status spry_analyze(const spry_analyzer_params *p) {
    if (!p)
        return spry_errorf(SPRY_ERR_ARG, "analyzer: params are NULL");
    if (!p->out_dir || !*p->out_dir)
        return spry_errorf(SPRY_ERR_ARG, "analyzer: out_dir is required");
    if (p->n_workers < 1 || p->n_threads < 1 || p->n_workers > 4096 || p->n_threads > 4096 ||
        (int64_t)p->n_workers * p->n_threads > 65536)
        return spry_errorf(SPRY_ERR_ARG,
                           "analyzer: workers and threads must be in [1, 4096] with "
                           "workers*threads <= 65536, got workers=%d threads=%d",
                           p->n_workers, p->n_threads);
    if (p->vocab_size < 0 || p->vocab_size > INT32_MAX)
        return spry_errorf(SPRY_ERR_ARG, "analyzer: vocab_size must be in [0, %d], got %lld",
                           INT32_MAX, (long long)p->vocab_size);
    if (p->n_builtin < 0 || p->n_user < 0 || p->n_builtin + p->n_user > MAX_METRICS ||
        (p->n_builtin && !p->builtin) || (p->n_user && !p->user))
        return spry_errorf(SPRY_ERR_ARG,
                           "analyzer: between 1 and %d metrics are needed, got "
                           "%d built-in + %d user",
                           MAX_METRICS, p->n_builtin, p->n_user);
    if (p->n_builtin + p->n_user == 0)
        return spry_errorf(SPRY_ERR_ARG, "analyzer: no metric requested");

    metric ms[MAX_METRICS];
    int nm = 0, need_vocab = 0, need_rarity = 0;
    vocab_ctx vc = {0};
    memset(ms, 0, sizeof ms);
    for (int i = 0; i < p->n_builtin + p->n_user; i++) {
        metric *m = &ms[nm++];
        if (i < p->n_builtin) {
            const char *b = p->builtin[i];
            if (!spry_analyzer_is_builtin(b))
                return spry_errorf(SPRY_ERR_ARG,
                                   "analyzer: unknown metric '%s' (built-in: seqlen, "
                                   "total_vocab_freq, vocab_rarity, "
                                   "seqlen_vocab_rarity)",
                                   b ? b : "(null)");
            m->name = b, m->type = SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE, m->user = &vc;
            if (!strcmp(b, "seqlen"))
                m->fn = m_seqlen;
            else if (!strcmp(b, "total_vocab_freq"))
                m->fn = m_vocab_freq, m->type = SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES,
                need_vocab = 1;
            else if (!strcmp(b, "vocab_rarity"))
                m->fn = m_vocab_rarity, need_rarity = 1;
            else
                m->fn = m_seqlen_vocab_rarity, need_rarity = 1;
        } else {
            const spry_analyzer_metric *u = &p->user[i - p->n_builtin];
            if (!name_ok(u->name) || !u->fn ||
                (u->type != SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE &&
                 u->type != SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES) ||
                (u->type == SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES &&
                 (u->accum_len < 1 || u->accum_len > ((int64_t)1 << 31))))
                return spry_errorf(SPRY_ERR_ARG,
                                   "analyzer: user metric %d ('%s'): needs a name of "
                                   "[A-Za-z0-9_.-], a callback, a valid type and "
                                   "for accumulate metrics accum_len in [1, 2^31] "
                                   "(got %lld)",
                                   i - p->n_builtin, u->name ? u->name : "(null)",
                                   (long long)u->accum_len);
            m->name = u->name, m->type = u->type, m->accum_len = u->accum_len, m->fn = u->fn,
            m->user = u->user;
        }
        for (int j = 0; j < nm - 1; j++)
            if (!strcmp(ms[j].name, m->name))
                return spry_errorf(SPRY_ERR_ARG, "analyzer: metric '%s' requested twice", m->name);
    }
    need_vocab |= need_rarity;

    sampler s;
    SPRY_TRY(sampler_open(p->data_prefix, p->seq_len, p->split, p->eod_id, p->pad_id, &s));
    spry_status st = SPRY_OK;
    double *rarity = NULL;
    if (s.n == 0) {
        st = spry_errorf(SPRY_ERR_ARG,
                         "analyzer: %s gives 0 samples (items %lld, tokens %lld, "
                         "seq_len %lld)",
                         p->data_prefix, (long long)s.n_items, (long long)s.starts[s.n_items],
                         (long long)p->seq_len);
        goto done;
    }
    vc.vocab = p->vocab_size;
    if (need_vocab && vc.vocab == 0) {
        int64_t mx;
        if ((st = scan_max_token(&s, &mx)))
            goto done;
        vc.vocab = mx + 1 > 0 ? mx + 1 : 1;
    }
    for (int m = 0; m < nm; m++) {
        if (!strcmp(ms[m].name, "total_vocab_freq") && ms[m].fn == m_vocab_freq)
            ms[m].accum_len = vc.vocab;
        if (ms[m].type == SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE)
            ms[m].values = malloc(sizeof(int64_t) * (size_t)s.n);
        else
            ms[m].acc = calloc((size_t)ms[m].accum_len, sizeof(int64_t));
        if (!ms[m].values && !ms[m].acc) {
            st = spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory for metric '%s'", ms[m].name);
            goto done;
        }
    }
    if (need_rarity) {
        // pass 1: corpus token counts
        metric freq = {.name      = "total_vocab_freq",
                       .type      = SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES,
                       .accum_len = vc.vocab,
                       .fn        = m_vocab_freq,
                       .user      = &vc};
        freq.acc    = calloc((size_t)vc.vocab, sizeof(int64_t));
        rarity      = malloc(sizeof(double) * (size_t)vc.vocab);
        if (!freq.acc || !rarity) {
            free(freq.acc);
            st = spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory for %lld vocabulary counts",
                             (long long)vc.vocab);
            goto done;
        }
        st = run_map(&s, &freq, 1, p->n_workers, p->n_threads);
        if (!st) {
            double total = 0, max_r = 0;
            for (int64_t w = 0; w < vc.vocab; w++)
                total += (double)(freq.acc[w] ? freq.acc[w] : 1);
            for (int64_t w = 0; w < vc.vocab; w++) {
                rarity[w] = -log((double)(freq.acc[w] ? freq.acc[w] : 1) / total);
                if (rarity[w] > max_r)
                    max_r = rarity[w];
            }
            double x = (double)s.max_len * max_r;
            int e    = x > 1 ? (int)ceil(log10(x)) : 0;
            if (e + 1 > 18) {
                st = spry_errorf(SPRY_ERR_ARG,
                                 "analyzer: seqlen_vocab_rarity multiplier 10^%d "
                                 "overflows int64",
                                 e + 1);
            } else {
                vc.c = 1;
                for (int i = 0; i <= e; i++)
                    vc.c *= 10;
            }
            vc.rarity = rarity;
        }
        free(freq.acc);
        if (st)
            goto done;
    }
    if ((st = run_map(&s, ms, nm, p->n_workers, p->n_threads)))
        goto done;
    for (int m = 0; m < nm && !st; m++) {
        size_t len = strlen(p->out_dir) + strlen(ms[m].name) + 2;
        char *dir  = malloc(len);
        if (!dir) {
            st = spry_errorf(SPRY_ERR_NOMEM, "analyzer: out of memory");
            break;
        }
        snprintf(dir, len, "%s/%s", p->out_dir, ms[m].name);
        st = spry_mkdir_p(dir);
        free(dir);
        if (st)
            break;
        st = ms[m].type == SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE
                 ? write_single(p->out_dir, &ms[m], s.n)
                 : write_accumulate(p->out_dir, &ms[m]);
    }
done:
    for (int m = 0; m < nm; m++)
        free(ms[m].values), free(ms[m].acc);
    free(rarity);
    sampler_free(&s);
    return st;
}
