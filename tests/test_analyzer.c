// ctest-label: unit
/*
 * test_analyzer.c -- the data analyzer (spry analyze): DeepSpeed's split_index values (incl. the
 * 20-sample 4x8 case of PR #5292), every built-in metric and two user metrics (single value and
 * accumulate) against a direct computation in this file, in both sample modes (items and packed
 * seq_len+1 windows); the index files read back (index_to_metric strictly ascending,
 * index_to_sample rows partition [0, N) grouped by value, percentile_merged = groups of
 * max(1, rows/100) rows with the same concatenation, fitted dtypes incl. negatives);
 * byte-identical output for (workers, threads) in {(1,1), (2,1), (3,2), (4,3)}; malformed inputs
 * and bad parameters give errors.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "spry/analyzer.h"
#include "spry/loader.h"
#include "spry/indexed.h"

#define N_ITEMS 263
#define VOCAB 300

static char g_dir[64];

static int32_t **g_items;
static int64_t *g_len;

static int64_t item_len(int64_t i) { return i == 5 ? 0 : 1 + (i * 7) % 23; }
static int32_t item_tok(int64_t i, int64_t j) {
    return (int32_t)(((i * 31 + j * 17) % 97) * ((i + j) % 3 == 0 ? 3 : 1) % (VOCAB - 10));
}

static void make_dataset(const char *prefix) {
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_U16, SPRY_INDEXED_TABLE_AUTO, &b) ==
          SPRY_OK);
    g_items = calloc(N_ITEMS, sizeof *g_items);
    g_len   = calloc(N_ITEMS, sizeof *g_len);
    for (int64_t i = 0; i < N_ITEMS; i++) {
        g_len[i]   = item_len(i);
        g_items[i] = malloc(sizeof(int32_t) * (size_t)(g_len[i] + 1));
        for (int64_t j = 0; j < g_len[i]; j++)
            g_items[i][j] = item_tok(i, j);
        CHECK(spry_indexed_builder_add_item_i32(b, g_items[i], g_len[i]) == SPRY_OK);
        if (i % 10 == 9)
            spry_indexed_builder_end_document(b);
    }
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
}

// ---- user metrics ----
static spry_status u_mod(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    (void)u, (void)t, (void)n;
    out[0] = (id + 7) % 10;
    return SPRY_OK;
}
static spry_status u_neg(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    (void)u, (void)n;
    out[0] = -((id * 37) % 251) + (n ? t[0] : 0);
    return SPRY_OK;
}
static spry_status u_sum(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    (void)u, (void)id;
    out[0] += 1;
    out[1] += n;
    for (int64_t j = 0; j < n; j++)
        out[2] += t[j];
    return SPRY_OK;
}
static spry_status u_fail(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    (void)u, (void)t, (void)n, (void)out;
    if (id == 100)
        return spry_errorf(SPRY_ERR_ARG, "user metric failed at sample %lld", (long long)id);
    out[0] = 0;
    return SPRY_OK;
}

// ---- expected values: direct computation ----
typedef struct sample_set {
    int64_t n;
    int32_t **tok;
    int64_t *len;
} sample_set;

static sample_set samples(int64_t seq_len) {
    sample_set s = {0};
    if (seq_len == 0) {
        s.n = N_ITEMS, s.tok = g_items, s.len = g_len;
        return s;
    }
    int64_t total = 0;
    for (int64_t i = 0; i < N_ITEMS; i++)
        total += g_len[i];
    int32_t *flat = malloc(sizeof(int32_t) * (size_t)total);
    int64_t k     = 0;
    for (int64_t i = 0; i < N_ITEMS; i++)
        for (int64_t j = 0; j < g_len[i]; j++)
            flat[k++] = g_items[i][j];
    s.n   = (total - 1) / seq_len;
    s.tok = malloc(sizeof(int32_t *) * (size_t)s.n);
    s.len = malloc(sizeof(int64_t) * (size_t)s.n);
    for (int64_t i = 0; i < s.n; i++) {
        s.tok[i] = malloc(sizeof(int32_t) * (size_t)(seq_len + 1));
        memcpy(s.tok[i], flat + i * seq_len, sizeof(int32_t) * (size_t)(seq_len + 1));
        s.len[i] = seq_len + 1;
    }
    free(flat);
    return s;
}

static void free_samples(sample_set *s, int64_t seq_len) {
    if (seq_len == 0)
        return;
    for (int64_t i = 0; i < s->n; i++)
        free(s->tok[i]);
    free(s->tok);
    free(s->len);
}

// value j of item i of an open dataset, as int64
static int64_t get(const spry_indexed *ds, int64_t i, int64_t j) {
    int64_t n;
    const void *p = spry_indexed_item(ds, i, &n);
    switch (spry_indexed_elem_dtype(ds)) {
    case SPRY_INDEXED_DTYPE_U8:
        return ((const uint8_t *)p)[j];
    case SPRY_INDEXED_DTYPE_I8:
        return ((const int8_t *)p)[j];
    case SPRY_INDEXED_DTYPE_U16:
        return ((const uint16_t *)p)[j];
    case SPRY_INDEXED_DTYPE_I16:
        return ((const int16_t *)p)[j];
    case SPRY_INDEXED_DTYPE_U32:
        return ((const uint32_t *)p)[j];
    case SPRY_INDEXED_DTYPE_I32:
        return ((const int32_t *)p)[j];
    case SPRY_INDEXED_DTYPE_U64:
        return (int64_t)((const uint64_t *)p)[j];
    default:
        return ((const int64_t *)p)[j];
    }
}

static spry_indexed *open_out(const char *dir, const char *metric, const char *suffix) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s%s", dir, metric, metric, suffix);
    spry_indexed *ds = NULL;
    spry_status st   = spry_indexed_open(p, SPRY_INDEXED_TABLE_DEEPSPEED, &ds);
    CHECK_MSG(st == SPRY_OK, "%s: %s", p, spry_last_error());
    return ds;
}

static int g_rows_checked, g_max_step;

// Checks the four files of a single-value metric against expected[n].
static void check_single(const char *dir, const char *metric, const int64_t *expected, int64_t n) {
    spry_indexed *s2m = open_out(dir, metric, "_sample_to_metric");
    spry_indexed *i2m = open_out(dir, metric, "_index_to_metric");
    spry_indexed *i2s = open_out(dir, metric, "_index_to_sample");
    spry_indexed *pm  = open_out(dir, metric, "_index_to_sample_percentile_merged");
    if (!s2m || !i2m || !i2s || !pm)
        goto out;
    int64_t lo = expected[0], hi = expected[0];
    for (int64_t i = 0; i < n; i++) {
        if (expected[i] < lo)
            lo = expected[i];
        if (expected[i] > hi)
            hi = expected[i];
    }
    CHECK(spry_indexed_elem_dtype(s2m) == spry_indexed_dtype_fit(lo, hi));
    CHECK(spry_indexed_elem_dtype(i2m) == spry_indexed_dtype_fit(lo, hi));
    CHECK(spry_indexed_elem_dtype(i2s) == spry_indexed_dtype_fit(0, n - 1));
    CHECK(spry_indexed_elem_dtype(pm) == spry_indexed_dtype_fit(0, n - 1));
    CHECK(spry_indexed_n_items(s2m) == n);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len;
        spry_indexed_item(s2m, i, &len);
        if (len != 1 || get(s2m, i, 0) != expected[i])
            bad++;
    }
    CHECK_MSG(bad == 0, "%s: %d sample_to_metric mismatches", metric, bad);
    CHECK(spry_indexed_n_docs(s2m) == 1);
    // index_to_metric strictly ascending; index_to_sample row r = ascending ids with that value
    int64_t rows = spry_indexed_n_items(i2m);
    CHECK(spry_indexed_n_items(i2s) == rows);
    int64_t *seen = calloc((size_t)n, sizeof *seen), total = 0;
    bad = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t v = get(i2m, r, 0), len;
        if (r && v <= get(i2m, r - 1, 0))
            bad++;
        spry_indexed_item(i2s, r, &len);
        int64_t want = 0;
        for (int64_t i = 0; i < n; i++)
            want += expected[i] == v;
        if (len != want || len == 0)
            bad++;
        for (int64_t j = 0; j < len; j++) {
            int64_t id = get(i2s, r, j);
            if (id < 0 || id >= n || seen[id]++ || expected[id] != v)
                bad++;
            if (j && id <= get(i2s, r, j - 1))
                bad++;
        }
        total += len;
    }
    CHECK_MSG(bad == 0 && total == n, "%s: index files bad=%d total=%lld", metric, bad,
              (long long)total);
    // percentile merged: groups of max(1, rows/100) rows, same concatenation
    int64_t step = rows / 100 > 1 ? rows / 100 : 1;
    CHECK(spry_indexed_n_items(pm) == (rows + step - 1) / step);
    int64_t r = 0, j = 0;
    bad = 0;
    for (int64_t m = 0; m < spry_indexed_n_items(pm); m++) {
        int64_t len, want = 0;
        spry_indexed_item(pm, m, &len);
        for (int64_t q = m * step; q < (m + 1) * step && q < rows; q++) {
            int64_t l;
            spry_indexed_item(i2s, q, &l);
            want += l;
        }
        if (len != want)
            bad++;
        for (int64_t k = 0; k < len && r < rows; k++) {
            int64_t l;
            spry_indexed_item(i2s, r, &l);
            if (get(pm, m, k) != get(i2s, r, j))
                bad++;
            if (++j == l)
                r++, j = 0;
        }
    }
    CHECK_MSG(bad == 0, "%s: percentile_merged bad=%d (rows %lld step %lld)", metric, bad,
              (long long)rows, (long long)step);
    g_rows_checked += (int)rows;
    if (step > g_max_step)
        g_max_step = (int)step;
    free(seen);
out:
    spry_indexed_close(s2m), spry_indexed_close(i2m), spry_indexed_close(i2s),
        spry_indexed_close(pm);
}

static void check_accum(const char *dir, const char *metric, const int64_t *expected, int64_t n) {
    spry_indexed *ds = open_out(dir, metric, "_metric_value");
    if (!ds)
        return;
    int64_t lo = expected[0], hi = expected[0], len;
    for (int64_t i = 0; i < n; i++) {
        if (expected[i] < lo)
            lo = expected[i];
        if (expected[i] > hi)
            hi = expected[i];
    }
    CHECK(spry_indexed_n_items(ds) == 1);
    CHECK(spry_indexed_elem_dtype(ds) == spry_indexed_dtype_fit(lo, hi));
    spry_indexed_item(ds, 0, &len);
    CHECK(len == n);
    int bad = 0;
    for (int64_t i = 0; i < n && i < len; i++)
        bad += get(ds, 0, i) != expected[i];
    CHECK_MSG(bad == 0, "%s: %d metric_value mismatches", metric, bad);
    spry_indexed_close(ds);
}

static const char *k_builtins[] = {"seqlen", "total_vocab_freq", "vocab_rarity",
                                   "seqlen_vocab_rarity"};

static spry_status run(const char *data, const char *out, int64_t seq_len, int w, int t) {
    spry_analyzer_metric user[3] = {
        {.name = "mod", .type = SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE, .fn = u_mod},
        {.name = "neg", .type = SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE, .fn = u_neg},
        {.name      = "batch_sum",
         .type      = SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES,
         .accum_len = 3,
         .fn        = u_sum},
    };
    spry_analyzer_params p = spry_analyzer_params_default();
    p.data_prefix = data, p.out_dir = out, p.seq_len = seq_len, p.vocab_size = VOCAB;
    p.n_workers = w, p.n_threads = t, p.builtin = k_builtins, p.n_builtin = 4;
    p.user = user, p.n_user = 3;
    spry_status st = spry_analyze(&p);
    CHECK_MSG(st == SPRY_OK, "w=%d t=%d seq_len=%lld: %s", w, t, (long long)seq_len,
              spry_last_error());
    return st;
}

static void check_all(const char *out, int64_t seq_len) {
    sample_set s = samples(seq_len);
    int64_t n    = s.n;
    int64_t *v = malloc(sizeof(int64_t) * (size_t)n), freq[VOCAB] = {0}, sum3[3] = {0};
    for (int64_t i = 0; i < n; i++) {
        sum3[0]++, sum3[1] += s.len[i];
        for (int64_t j = 0; j < s.len[i]; j++)
            freq[s.tok[i][j]]++, sum3[2] += s.tok[i][j];
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = s.len[i];
    check_single(out, "seqlen", v, n);
    check_accum(out, "total_vocab_freq", freq, VOCAB);
    check_accum(out, "batch_sum", sum3, 3);
    double tot = 0, rar[VOCAB], maxr = 0;
    for (int w = 0; w < VOCAB; w++)
        tot += (double)(freq[w] ? freq[w] : 1);
    for (int w = 0; w < VOCAB; w++) {
        rar[w] = -log((double)(freq[w] ? freq[w] : 1) / tot);
        if (rar[w] > maxr)
            maxr = rar[w];
    }
    int64_t maxlen = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = 0;
        for (int64_t j = 0; j < s.len[i]; j++)
            r += rar[s.tok[i][j]];
        v[i] = (int64_t)r;
        if (s.len[i] > maxlen)
            maxlen = s.len[i];
    }
    check_single(out, "vocab_rarity", v, n);
    int64_t c = (int64_t)llround(pow(10.0, ceil(log10((double)maxlen * maxr)) + 1));
    for (int64_t i = 0; i < n; i++)
        v[i] += s.len[i] * c;
    check_single(out, "seqlen_vocab_rarity", v, n);
    for (int64_t i = 0; i < n; i++)
        v[i] = (i + 7) % 10;
    check_single(out, "mod", v, n);
    for (int64_t i = 0; i < n; i++)
        v[i] = -((i * 37) % 251) + (s.len[i] ? s.tok[i][0] : 0);
    check_single(out, "neg", v, n);
    free(v);
    free_samples(&s, seq_len);
}

static uint8_t *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz + 1);
    *n           = fread(buf, 1, (size_t)sz, f);
    fclose(f);
    return buf;
}

static int same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    uint8_t *x = slurp(a, &na), *y = slurp(b, &nb);
    int ok = x && y && na == nb && !memcmp(x, y, na);
    free(x), free(y);
    return ok;
}

static int compare_dirs(const char *a, const char *b) {
    static const char *single[] = {"seqlen", "vocab_rarity", "seqlen_vocab_rarity", "mod", "neg"};
    static const char *sfx[]    = {"_sample_to_metric", "_index_to_metric", "_index_to_sample",
                                   "_index_to_sample_percentile_merged"};
    int files                   = 0;
    char pa[512], pb[512];
    for (int m = 0; m < 7; m++)
        for (int k = 0; k < (m < 5 ? 4 : 1); k++)
            for (int e = 0; e < 2; e++) {
                const char *name = m < 5 ? single[m] : m == 5 ? "total_vocab_freq" : "batch_sum";
                const char *sf   = m < 5 ? sfx[k] : "_metric_value";
                snprintf(pa, sizeof pa, "%s/%s/%s%s.%s", a, name, name, sf, e ? "idx" : "bin");
                snprintf(pb, sizeof pb, "%s/%s/%s%s.%s", b, name, name, sf, e ? "idx" : "bin");
                CHECK_MSG(same_file(pa, pb), "%s differs from %s", pa, pb);
                files++;
            }
    return files;
}

static void test_split(void) {
    int64_t b[9];
    CHECK(spry_analyzer_split_index(0, 20, 4, b) == SPRY_OK);
    CHECK(b[0] == 0 && b[1] == 5 && b[2] == 10 && b[3] == 15 && b[4] == 20);
    CHECK(spry_analyzer_split_index(0, 5, 8, b) == SPRY_OK); // linspace(0,5,9) -> 0 0 1 1 2 3 3 4 5
    static const int64_t want[9] = {0, 0, 1, 1, 2, 3, 3, 4, 5};
    CHECK(!memcmp(b, want, sizeof want));
    CHECK(spry_analyzer_split_index(0, 10, 3, b) == SPRY_OK);
    CHECK(b[0] == 0 && b[1] == 3 && b[2] == 6 && b[3] == 10);
    CHECK(spry_analyzer_split_index(7, 7, 3, b) == SPRY_OK);
    CHECK(b[0] == 7 && b[3] == 7);
    CHECK(spry_analyzer_split_index(5, 4, 2, b) == SPRY_ERR_ARG);
    CHECK(spry_analyzer_split_index(0, 4, 0, b) == SPRY_ERR_ARG);
    // PR #5292: 20 samples, 4 workers x 8 threads: every range non-decreasing, union [0, 20)
    int64_t w[5], t[9], covered = 0;
    spry_analyzer_split_index(0, 20, 4, w);
    for (int i = 0; i < 4; i++) {
        spry_analyzer_split_index(w[i], w[i + 1], 8, t);
        for (int j = 0; j < 8; j++) {
            CHECK(t[j] <= t[j + 1]);
            covered += t[j + 1] - t[j];
        }
    }
    CHECK(covered == 20);
}

// With a split, the samples are the training loader's: an order-sensitive digest of each
// sample's tokens (a user metric) must equal the digest of spry_loader_sample's tokens.
static spry_status u_first(void *u, int64_t id, const int32_t *t, int64_t n, int64_t *out) {
    (void)u, (void)id;
    int64_t acc = 0;
    for (int64_t j = 0; j < n; j++) acc = acc * 31 + t[j] + 1; // order-sensitive digest
    *out = acc % 1000003;
    return SPRY_OK;
}

static void test_loader_samples(const char *data) {
    char out[160];
    snprintf(out, sizeof out, "%s/out_loader", g_dir);
    spry_analyzer_metric um = {.name = "digest", .type = SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE, .fn = u_first};
    spry_analyzer_params p  = spry_analyzer_params_default();
    p.data_prefix = data, p.out_dir = out, p.seq_len = 8, p.split = "7,2,1", p.eod_id = 0;
    p.user = &um, p.n_user = 1, p.n_threads = 2;
    CHECK_MSG(spry_analyze(&p) == SPRY_OK, "%s", spry_last_error());
    spry_loader_params lp = spry_loader_params_default();
    lp.prefix = data, lp.split = "7,2,1", lp.seq_len = 8, lp.batch_size = 1, lp.eod_id = 0, lp.shuffle = false;
    spry_loader *l = NULL;
    CHECK(spry_loader_init(&lp, &l) == SPRY_OK);
    spry_indexed *s2m = open_out(out, "digest", "_sample_to_metric");
    if (!l || !s2m) {
        spry_loader_free(l), spry_indexed_close(s2m);
        return;
    }
    int64_t n = spry_loader_n_samples(l), bad = 0;
    CHECK(spry_indexed_n_items(s2m) == n);
    for (int64_t k = 0; k < n && k < spry_indexed_n_items(s2m); k++) {
        int32_t t[9];
        int64_t want;
        CHECK(spry_loader_sample(l, k, t) == SPRY_OK);
        u_first(NULL, k, t, 9, &want);
        bad += get(s2m, k, 0) != want;
    }
    CHECK_MSG(bad == 0, "%lld of %lld loader samples differ", (long long)bad, (long long)n);
    printf("analyzer: %lld samples of the training loader (split 7,2,1, eod 0) indexed\n", (long long)n);
    spry_indexed_close(s2m);
    spry_loader_free(l);
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(p, 1, n, f);
    fclose(f);
}

static void test_errors(const char *data) {
    char out[128], bad[128];
    spry_analyzer_params p = spry_analyzer_params_default();
    snprintf(out, sizeof out, "%s/err", g_dir);
    p.data_prefix = data, p.out_dir = out, p.builtin = k_builtins, p.n_builtin = 1;
    CHECK(spry_analyze(NULL) == SPRY_ERR_ARG);
    p.n_workers = 0;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "workers=0") != NULL);
    p.n_workers = 1, p.n_threads = -3;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    p.n_threads           = 1;
    const char *unknown[] = {"perplexity"};
    p.builtin             = unknown;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "perplexity") != NULL);
    const char *twice[] = {"seqlen", "seqlen"};
    p.builtin = twice, p.n_builtin = 2;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    p.n_builtin = 0;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG); // no metric
    // user metric: bad name, missing fn, bad accum_len, failing callback
    spry_analyzer_metric um = {
        .name = "../x", .type = SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE, .fn = u_mod};
    p.user = &um, p.n_user = 1;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    um.name = "ok", um.fn = NULL;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    um.fn = u_sum, um.type = SPRY_METRIC_ACCUMULATE_VALUE_OVER_SAMPLES, um.accum_len = 0;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    um.fn = u_fail, um.type = SPRY_METRIC_SINGLE_VALUE_PER_SAMPLE;
    p.n_workers = 3, p.n_threads = 2;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "sample 100") != NULL);
    p.n_user = 0, p.n_workers = 1, p.n_threads = 1;
    // token outside the vocabulary
    p.builtin = k_builtins + 2, p.n_builtin = 1, p.vocab_size = 50;
    CHECK(spry_analyze(&p) == SPRY_ERR_FORMAT);
    CHECK(strstr(spry_last_error(), "vocabulary") != NULL);
    p.vocab_size = -1;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    p.vocab_size = 0;
    // seq_len larger than the dataset: 0 samples
    p.seq_len = 1000000;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "0 samples") != NULL);
    p.seq_len = -1;
    CHECK(spry_analyze(&p) == SPRY_ERR_ARG);
    p.seq_len = 0;
    // missing dataset, corrupt .idx, truncated .bin
    snprintf(bad, sizeof bad, "%s/missing", g_dir);
    p.data_prefix = bad;
    CHECK(spry_analyze(&p) == SPRY_ERR_IO);
    CHECK(strstr(spry_last_error(), "missing") != NULL);
    snprintf(bad, sizeof bad, "%s/corrupt.idx", g_dir);
    write_bytes(bad, "MMIDIDX\0\0garbage", 16);
    snprintf(bad, sizeof bad, "%s/corrupt.bin", g_dir);
    write_bytes(bad, "\0\0", 2);
    snprintf(bad, sizeof bad, "%s/corrupt", g_dir);
    CHECK(spry_analyze(&p) == SPRY_ERR_FORMAT);
    char src[160], dst[160];
    size_t n;
    snprintf(src, sizeof src, "%s.idx", data);
    uint8_t *idx = slurp(src, &n);
    snprintf(dst, sizeof dst, "%s/trunc.idx", g_dir);
    write_bytes(dst, idx, n);
    snprintf(src, sizeof src, "%s.bin", data);
    uint8_t *bin = slurp(src, &n);
    snprintf(dst, sizeof dst, "%s/trunc.bin", g_dir);
    write_bytes(dst, bin, n - 3);
    snprintf(bad, sizeof bad, "%s/trunc", g_dir);
    CHECK(spry_analyze(&p) == SPRY_ERR_FORMAT);
    free(idx), free(bin);
    // output dir that cannot be created (a file in the way)
    snprintf(bad, sizeof bad, "%s/afile", g_dir);
    write_bytes(bad, "x", 1);
    p.data_prefix = data, p.out_dir = bad;
    CHECK(spry_analyze(&p) != SPRY_OK);
}

// PR #5292's shape through the whole analyzer: 20 samples on 4 workers x 8 threads (empty
// thread ranges) equal 1 x 1; and a one-sample dataset (u8 sample ids, one row).
static void test_small(void) {
    char data[128], a[128], b[128], pa[256], pb[256];
    snprintf(data, sizeof data, "%s/small", g_dir);
    spry_indexed_builder *bld = NULL;
    CHECK(spry_indexed_builder_init(data, SPRY_INDEXED_DTYPE_U16, SPRY_INDEXED_TABLE_AUTO, &bld) ==
          SPRY_OK);
    for (int i = 0; i < 20; i++) {
        int32_t t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        spry_indexed_builder_add_item_i32(bld, t, 1 + (i * 5) % 8);
    }
    CHECK(spry_indexed_builder_finalize(bld) == SPRY_OK);
    spry_indexed_builder_free(bld);
    const char *m[]        = {"seqlen", "vocab_rarity"};
    spry_analyzer_params p = spry_analyzer_params_default();
    p.data_prefix = data, p.builtin = m, p.n_builtin = 2;
    snprintf(a, sizeof a, "%s/small_1x1", g_dir);
    snprintf(b, sizeof b, "%s/small_4x8", g_dir);
    p.out_dir = a;
    CHECK(spry_analyze(&p) == SPRY_OK);
    p.out_dir = b, p.n_workers = 4, p.n_threads = 8;
    CHECK(spry_analyze(&p) == SPRY_OK);
    static const char *sfx[] = {"_sample_to_metric", "_index_to_metric", "_index_to_sample",
                                "_index_to_sample_percentile_merged"};
    for (int k = 0; k < 4; k++) {
        snprintf(pa, sizeof pa, "%s/seqlen/seqlen%s.bin", a, sfx[k]);
        snprintf(pb, sizeof pb, "%s/seqlen/seqlen%s.bin", b, sfx[k]);
        CHECK_MSG(same_file(pa, pb), "%s", pb);
        snprintf(pa, sizeof pa, "%s/vocab_rarity/vocab_rarity%s.idx", a, sfx[k]);
        snprintf(pb, sizeof pb, "%s/vocab_rarity/vocab_rarity%s.idx", b, sfx[k]);
        CHECK_MSG(same_file(pa, pb), "%s", pb);
    }
    int64_t v[20];
    for (int i = 0; i < 20; i++)
        v[i] = 1 + (i * 5) % 8;
    check_single(b, "seqlen", v, 20);
    // one sample
    snprintf(data, sizeof data, "%s/one", g_dir);
    CHECK(spry_indexed_builder_init(data, SPRY_INDEXED_DTYPE_U16, SPRY_INDEXED_TABLE_AUTO, &bld) ==
          SPRY_OK);
    int32_t t[3] = {4, 4, 9};
    spry_indexed_builder_add_item_i32(bld, t, 3);
    CHECK(spry_indexed_builder_finalize(bld) == SPRY_OK);
    spry_indexed_builder_free(bld);
    p.data_prefix = data, p.out_dir = a, p.n_workers = 3, p.n_threads = 3;
    CHECK(spry_analyze(&p) == SPRY_OK);
    v[0] = 3;
    check_single(a, "seqlen", v, 1);
    // rarity: freq(4) = 2, freq(9) = 1, 8 other ids count 1 -> total 11
    v[0] = (int64_t)(2 * -log(2.0 / 11) + -log(1.0 / 11));
    check_single(a, "vocab_rarity", v, 1);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/spry-analyzer-XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    char data[128];
    snprintf(data, sizeof data, "%s/tokens", g_dir);
    make_dataset(data);
    test_split();

    static const int wt[4][2] = {{1, 1}, {2, 1}, {3, 2}, {4, 3}};
    int64_t seq_lens[2]       = {0, 16};
    int files                 = 0;
    for (int s = 0; s < 2; s++) {
        char first[128];
        int64_t n = 0;
        CHECK(spry_analyzer_count_samples(data, seq_lens[s], &n) == SPRY_OK);
        sample_set ss = samples(seq_lens[s]);
        CHECK(n == ss.n);
        free_samples(&ss, seq_lens[s]);
        for (int k = 0; k < 4; k++) {
            char out[128];
            snprintf(out, sizeof out, "%s/out_s%lld_w%d_t%d", g_dir, (long long)seq_lens[s],
                     wt[k][0], wt[k][1]);
            if (run(data, out, seq_lens[s], wt[k][0], wt[k][1]) != SPRY_OK)
                continue;
            if (k == 0) {
                check_all(out, seq_lens[s]);
                snprintf(first, sizeof first, "%s", out);
            } else {
                files += compare_dirs(first, out);
            }
        }
    }
    printf("analyzer: %d index rows checked (largest merge_step %d), %d files byte-compared across "
           "worker/thread counts\n",
           g_rows_checked, g_max_step, files);
    CHECK(g_max_step >= 2);     // some metric has >= 200 distinct values: merging is exercised
    CHECK(files == 3 * 2 * 44); // 3 runs x 2 modes x 22 prefixes x (.bin, .idx)
    test_errors(data);
    test_small();
    test_loader_samples(data);
    for (int64_t i = 0; i < N_ITEMS; i++)
        free(g_items[i]);
    free(g_items), free(g_len);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return check_exit();
}
