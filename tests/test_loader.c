// ctest-label: unit
/*
 * test_loader.c -- the GPT sample loader: Megatron's split arithmetic (expected values from
 * get_train_valid_test_split_ run in Python), exact packing (the concatenated stream rebuilt
 * from the samples, with and without an eod id, empty documents), split selection, shuffle
 * determinism (same seed same order, other seed other order, each epoch a permutation), epoch
 * wrap inside a batch, exact resume from spry_loader_state, and the errors for bad parameters.
 * Prints the measured loader time per batch (B=8, T=256); no timing threshold.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "spry/indexed.h"
#include "spry/loader.h"
#include "spry/rng.h"

static char g_dir[64];

// ---------------------------------------------------------------------------------------------
// Split arithmetic.

typedef struct split_case {
    const char *split;
    int64_t n;
    int64_t want[4];
} split_case;

static void test_split_bounds(void) {
    // Values printed by Megatron's get_train_valid_test_split_ (Python 3).
    const split_case cases[] = {
        {"949,50,1", 1000, {0, 949, 999, 1000}},
        {"8,1,1", 10, {0, 8, 9, 10}},
        {"1,0,0", 37, {0, 37, 37, 37}},
        {"949,50", 1000, {0, 950, 1000, 1000}}, // missing weight padded with 0
        {"969, 30, 1", 1000, {0, 969, 999, 1000}},
        {"1/1/1", 10, {0, 4, 7, 10}},
        {"1,1,1", 5, {0, 1, 3, 5}},
        {"949,50,1", 500, {0, 475, 500, 500}}, // 474.5 rounds half to even, then the excess fix
        {"8,1,1", 25, {0, 21, 23, 25}},
        {"98,1,1", 250, {0, 246, 248, 250}},
        {"2,1", 7, {0, 5, 7, 7}},
        {"1,1,1", 3, {0, 1, 2, 3}},
        {"949,50,1", 57, {0, 54, 57, 57}},
        {"100", 9, {0, 9, 9, 9}},
        {" 0.5 , 0.25,0.25 ", 8, {0, 4, 6, 8}},
        {"1,1,1", 0, {0, 0, 0, 0}},
        {"0,1,1", 3, {0, 0, 1, 3}}, // Megatron gives [0, -1, 1, 3]; clamped (documented)
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t b[4]  = {-9, -9, -9, -9};
        spry_status s = spry_loader_split_bounds(cases[c].split, cases[c].n, b);
        CHECK_MSG(s == SPRY_OK && !memcmp(b, cases[c].want, sizeof b),
                  "\"%s\" on %lld: got [%lld, %lld, %lld, %lld] (%s)", cases[c].split,
                  (long long)cases[c].n, (long long)b[0], (long long)b[1], (long long)b[2],
                  (long long)b[3], spry_last_error());
    }
    // Errors name the string and the bad weight.
    const char *bad[][2] = {
        {"949,-50,1", "-50"}, {"abc", "\"abc\""},    {"1,,1", "weight \"\""},
        {"", "weight \"\""},  {"0,0,0", "sum to 0"}, {"1,2,3,4", "more than three"},
        {"nan", "nan"},       {"1,inf", "inf"},      {"9x,1", "9x"},
        {"1/2,3", "1/2"},
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        int64_t b[4];
        spry_status s = spry_loader_split_bounds(bad[c][0], 100, b);
        CHECK_MSG(s == SPRY_ERR_ARG && strstr(spry_last_error(), bad[c][1]) &&
                      strstr(spry_last_error(), bad[c][0]),
                  "\"%s\": %s: \"%s\"", bad[c][0], spry_status_name(s), spry_last_error());
    }
}

// ---------------------------------------------------------------------------------------------
// A test dataset: document d has len(d) tokens token(d, j) >= 1 (0 is the eod id); some
// documents are empty, some have two items.

static int64_t doc_len(int64_t d) {
    if (d % 13 == 5)
        return 0;
    return 1 + (int64_t)(spry_rng_uniform(3, 0, (uint64_t)d) * 60.0f);
}
static int32_t token(int64_t d, int64_t j) { return (int32_t)(1 + (d * 1009 + j * 7) % 60000); }

static void build_docs(const char *prefix, int64_t n_docs, spry_indexed_dtype dt) {
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, dt, SPRY_INDEXED_TABLE_AUTO, &b) == SPRY_OK);
    if (!b)
        return;
    int32_t ids[64];
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t n = doc_len(d);
        for (int64_t j = 0; j < n; j++)
            ids[j] = token(d, j);
        if (d % 7 == 3 && n >= 2) { // two items in this document
            CHECK(spry_indexed_builder_add_item_i32(b, ids, n / 2) == SPRY_OK);
            CHECK(spry_indexed_builder_add_item_i32(b, ids + n / 2, n - n / 2) == SPRY_OK);
        } else if (d % 13 == 5 && d % 2) { // an empty document with one empty item
            CHECK(spry_indexed_builder_add_item_i32(b, ids, 0) == SPRY_OK);
        } else if (n > 0) {
            CHECK(spry_indexed_builder_add_item_i32(b, ids, n) == SPRY_OK);
        }
        CHECK(spry_indexed_builder_end_document(b) == SPRY_OK);
    }
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
}

// The expected stream of documents [d0, d1): tokens, each non-empty document followed by eod.
static int32_t *expected_stream(int64_t d0, int64_t d1, int64_t eod, int64_t *n_out) {
    int64_t n = 0;
    for (int64_t d = d0; d < d1; d++)
        n += doc_len(d) + (eod >= 0 && doc_len(d) > 0);
    int32_t *s = malloc((size_t)n * sizeof *s + 1);
    int64_t k  = 0;
    for (int64_t d = d0; d < d1; d++) {
        for (int64_t j = 0; j < doc_len(d); j++)
            s[k++] = token(d, j);
        if (eod >= 0 && doc_len(d) > 0)
            s[k++] = (int32_t)eod;
    }
    *n_out = n;
    return s;
}

static spry_loader_params base_params(const char *prefix) {
    spry_loader_params p = spry_loader_params_default();
    p.prefix             = prefix;
    p.split              = "1,0,0";
    p.seq_len            = 16;
    p.batch_size         = 4;
    p.eod_id             = 0;
    p.shuffle            = false;
    return p;
}

static void test_defaults(void) {
    spry_loader_params p = spry_loader_params_default();
    CHECK(p.prefix == NULL && p.dataset == NULL && p.table == SPRY_INDEXED_TABLE_AUTO);
    CHECK(!strcmp(p.split, "969, 30, 1") && p.which == SPRY_LOADER_SPLIT_TRAIN);
    CHECK(p.seq_len == 1024 && p.batch_size == 8 && p.seed == 1234 && p.eod_id == -1 && p.shuffle);
}

// Packing: unshuffled batches, read in order, rebuild the stream exactly.
static void test_packing(const char *prefix, int64_t n_docs, int64_t eod, int64_t T) {
    spry_loader_params p = base_params(prefix);
    p.eod_id             = eod;
    p.seq_len            = T;
    spry_loader *l       = NULL;
    CHECK_MSG(spry_loader_init(&p, &l) == SPRY_OK, "%s", spry_last_error());
    if (!l)
        return;
    int64_t n_tok;
    int32_t *want = expected_stream(0, n_docs, eod, &n_tok);
    CHECK(spry_loader_n_tokens(l) == n_tok);
    int64_t n_samples = spry_loader_n_samples(l);
    CHECK(n_samples == (n_tok - 1) / T); // Megatron: (tokens - 1) // seq_length
    int32_t *batch  = malloc((size_t)(4 * (T + 1)) * sizeof *batch);
    int32_t *stream = malloc((size_t)(n_samples * T + 1) * sizeof *stream);
    int64_t got = 0, bad_overlap = 0;
    for (int64_t served = 0; served < n_samples;) {
        CHECK(spry_loader_next(l, batch) == SPRY_OK);
        for (int b = 0; b < 4 && served < n_samples; b++, served++) {
            const int32_t *row = batch + b * (T + 1);
            if (served > 0 && stream[got] != row[0])
                bad_overlap++; // overlap by one token
            memcpy(stream + got, row, (size_t)(T + 1) * sizeof *row);
            got += T;
        }
    }
    CHECK(bad_overlap == 0);
    CHECK_MSG(memcmp(stream, want, (size_t)(got + 1) * sizeof *want) == 0,
              "stream differs (eod %lld, T %lld)", (long long)eod, (long long)T);
    // Random access agrees.
    int32_t *one = malloc((size_t)(T + 1) * sizeof *one);
    for (int64_t k = 0; k < n_samples; k += 7) {
        CHECK(spry_loader_sample(l, k, one) == SPRY_OK);
        CHECK(memcmp(one, want + k * T, (size_t)(T + 1) * sizeof *one) == 0);
    }
    free(one);
    free(batch);
    free(stream);
    free(want);
    spry_loader_free(l);
}

// The split selects documents by Megatron's arithmetic and packs only those.
static void test_split_select(const char *prefix, int64_t n_docs) {
    int64_t bounds[4];
    CHECK(spry_loader_split_bounds("8,1,1", n_docs, bounds) == SPRY_OK);
    for (int w = 0; w < 3; w++) {
        spry_loader_params p = base_params(prefix);
        p.split              = "8,1,1";
        p.which              = (spry_loader_split)w;
        p.seq_len            = 8;
        spry_loader *l       = NULL;
        CHECK_MSG(spry_loader_init(&p, &l) == SPRY_OK, "%s", spry_last_error());
        if (!l)
            continue;
        int64_t a, b;
        spry_loader_doc_range(l, &a, &b);
        CHECK(a == bounds[w] && b == bounds[w + 1]);
        int64_t n_tok;
        int32_t *want = expected_stream(a, b, 0, &n_tok);
        CHECK(spry_loader_n_tokens(l) == n_tok);
        int32_t s[9];
        int64_t last = spry_loader_n_samples(l) - 1;
        CHECK(spry_loader_sample(l, 0, s) == SPRY_OK && !memcmp(s, want, sizeof s));
        CHECK(spry_loader_sample(l, last, s) == SPRY_OK && !memcmp(s, want + last * 8, sizeof s));
        free(want);
        spry_loader_free(l);
    }
}

static int32_t *run_batches(const spry_loader_params *p, int64_t n_batches, spry_loader_pos *end) {
    spry_loader *l = NULL;
    CHECK_MSG(spry_loader_init(p, &l) == SPRY_OK, "%s", spry_last_error());
    if (!l)
        return NULL;
    size_t row = (size_t)(p->seq_len + 1), per = (size_t)p->batch_size * row;
    int32_t *out = malloc((size_t)n_batches * per * sizeof *out);
    for (int64_t i = 0; i < n_batches; i++)
        CHECK(spry_loader_next(l, out + (size_t)i * per) == SPRY_OK);
    if (end)
        *end = spry_loader_state(l);
    spry_loader_free(l);
    return out;
}

// Which sample k (unshuffled numbering) row equals; -1 if none.
static int64_t identify(const spry_loader *l, const int32_t *row, int64_t T) {
    int32_t s[64];
    for (int64_t k = 0; k < spry_loader_n_samples(l); k++) {
        spry_loader_sample(l, k, s);
        if (!memcmp(s, row, (size_t)(T + 1) * sizeof *s))
            return k;
    }
    return -1;
}

static void test_shuffle_resume(const char *prefix) {
    spry_loader_params p = base_params(prefix);
    p.shuffle            = true;
    p.seed               = 42;
    p.seq_len            = 32;
    spry_loader *l       = NULL;
    CHECK(spry_loader_init(&p, &l) == SPRY_OK);
    if (!l)
        return;
    int64_t n = spry_loader_n_samples(l), T = p.seq_len, B = 3;
    while (n % B == 0)
        B++; // batches must straddle epoch ends
    p.batch_size = B;
    CHECK(n > 20);
    size_t per  = (size_t)(B * (T + 1));
    int64_t n_b = (3 * n) / B + 2; // a bit over three epochs
    int32_t *a  = run_batches(&p, n_b, NULL);
    int32_t *a2 = run_batches(&p, n_b, NULL);
    CHECK(a && a2 && !memcmp(a, a2, (size_t)n_b * per * sizeof *a)); // same seed, same order
    p.seed     = 43;
    int32_t *c = run_batches(&p, n_b, NULL);
    CHECK(c && memcmp(a, c, (size_t)n_b * per * sizeof *a) != 0); // another seed, another order
    p.seed = 42;
    if (!a || !a2 || !c)
        return;

    // Each epoch is a permutation of the samples; epochs differ in order.
    int64_t *order = malloc((size_t)(3 * n) * sizeof *order);
    for (int64_t s = 0; s < 3 * n; s++)
        order[s] = identify(l, a + s * (T + 1), T);
    for (int e = 0; e < 3; e++) {
        char *seen = calloc((size_t)n, 1);
        int ok     = 1;
        for (int64_t s = 0; s < n; s++) {
            int64_t k = order[e * n + s];
            if (k < 0 || seen[k])
                ok = 0;
            if (k >= 0)
                seen[k] = 1;
        }
        CHECK_MSG(ok, "epoch %d is not a permutation of the %lld samples", e, (long long)n);
        free(seen);
    }
    CHECK(memcmp(order, order + n, (size_t)n * sizeof *order) != 0);
    int64_t moved = 0;
    for (int64_t s = 0; s < n; s++)
        moved += order[s] != s;
    CHECK(moved > n / 2); // actually shuffled

    // Epoch wrap inside a batch: after n / B + 1 batches the position is in epoch 1.
    spry_loader_pos pos;
    int32_t *w = run_batches(&p, n / B + 1, &pos);
    CHECK(pos.epoch == 1 && pos.index == B * (n / B + 1) - n);
    free(w);

    // Resume: stop after k batches, restore the state into a fresh loader, continue.
    for (int64_t k = 1; k < n_b; k += 5) {
        spry_loader_pos st;
        int32_t *head  = run_batches(&p, k, &st);
        spry_loader *r = NULL;
        CHECK(spry_loader_init(&p, &r) == SPRY_OK);
        if (!r)
            break;
        CHECK(spry_loader_set_state(r, st) == SPRY_OK);
        CHECK(spry_loader_state(r).epoch == st.epoch && spry_loader_state(r).index == st.index);
        int32_t *tail = malloc(per * sizeof *tail);
        int same      = 1;
        for (int64_t i = k; i < n_b; i++) {
            CHECK(spry_loader_next(r, tail) == SPRY_OK);
            same &= !memcmp(tail, a + (size_t)i * per, per * sizeof *tail);
        }
        CHECK_MSG(same, "resume after %lld batches (epoch %lld, index %lld) differs", (long long)k,
                  (long long)st.epoch, (long long)st.index);
        free(tail);
        free(head);
        spry_loader_free(r);
    }
    // set_state rejects a position outside the epoch.
    CHECK(spry_loader_set_state(l, (spry_loader_pos){0, n}) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "index") != NULL);
    CHECK(spry_loader_set_state(l, (spry_loader_pos){-1, 0}) == SPRY_ERR_ARG);
    CHECK(spry_loader_state(l).epoch == 0 && spry_loader_state(l).index == 0);
    free(order);
    free(a);
    free(a2);
    free(c);
    spry_loader_free(l);
}

static void test_errors(const char *prefix) {
    spry_loader *l       = NULL;
    spry_loader_params p = base_params(prefix);
    p.seq_len            = 100000000;
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && l == NULL);
    CHECK(strstr(spry_last_error(), "seq_len = 100000000") && strstr(spry_last_error(), "HINT"));
    p         = base_params(prefix);
    p.seq_len = 0;
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && strstr(spry_last_error(), "seq_len = 0"));
    p            = base_params(prefix);
    p.batch_size = 0;
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && strstr(spry_last_error(), "batch_size"));
    p        = base_params(prefix);
    p.eod_id = -2;
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && strstr(spry_last_error(), "eod_id = -2"));
    p       = base_params(prefix);
    p.split = "949,x,1";
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && strstr(spry_last_error(), "\"x\""));
    p       = base_params(prefix);
    p.which = SPRY_LOADER_SPLIT_TEST; // "1,0,0": the test split is empty
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && strstr(spry_last_error(), "test split"));
    p = base_params("/nonexistent-spry/data");
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_IO &&
          strstr(spry_last_error(), "/nonexistent-spry/data.idx"));
    p = base_params(NULL);
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG);

    // Float data and out-of-range token values.
    char fp[128];
    snprintf(fp, sizeof fp, "%s/float", g_dir);
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(fp, SPRY_INDEXED_DTYPE_F32, SPRY_INDEXED_TABLE_MEGATRON, &b) ==
          SPRY_OK);
    const int32_t ids[4] = {1, 2, 3, 4};
    if (b) {
        CHECK(spry_indexed_builder_add_item_i32(b, ids, 4) == SPRY_OK);
        CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
        spry_indexed_builder_free(b);
    }
    p         = base_params(fp);
    p.table   = SPRY_INDEXED_TABLE_MEGATRON;
    p.seq_len = 2;
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_UNSUPPORTED && strstr(spry_last_error(), "f32"));
    snprintf(fp, sizeof fp, "%s/neg", g_dir);
    CHECK(spry_indexed_builder_init(fp, SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_TABLE_AUTO, &b) ==
          SPRY_OK);
    const int32_t neg[6] = {1, 2, 3, -4, 5, 6};
    if (b) {
        CHECK(spry_indexed_builder_add_item_i32(b, neg, 6) == SPRY_OK);
        CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
        spry_indexed_builder_free(b);
    }
    p            = base_params(fp);
    p.seq_len    = 2;
    p.batch_size = 1;
    CHECK(spry_loader_init(&p, &l) == SPRY_OK);
    if (l) {
        int32_t row[3];
        CHECK(spry_loader_next(l, row) == SPRY_OK); // tokens 1 2 3
        CHECK(spry_loader_next(l, row) == SPRY_ERR_FORMAT);
        CHECK(strstr(spry_last_error(), "-4") && strstr(spry_last_error(), "neg.bin"));
        CHECK(spry_loader_state(l).index == 1); // unchanged by the failed call
        spry_loader_free(l);
    }
}

// A shared dataset handle serves several loaders (train and valid).
static void test_shared_dataset(const char *prefix) {
    spry_indexed *ds = NULL;
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_OK);
    if (!ds)
        return;
    spry_loader_params p = base_params(NULL);
    p.dataset            = ds;
    p.split              = "949,50,1";
    p.seq_len            = 8;
    spry_loader *tr = NULL, *va = NULL;
    CHECK(spry_loader_init(&p, &tr) == SPRY_OK);
    p.which = SPRY_LOADER_SPLIT_VALID;
    CHECK(spry_loader_init(&p, &va) == SPRY_OK);
    int64_t a, b, c, d;
    if (tr && va) {
        spry_loader_doc_range(tr, &a, &b);
        spry_loader_doc_range(va, &c, &d);
        CHECK(a == 0 && b == c && d <= spry_indexed_n_docs(ds));
    }
    spry_loader_free(tr);
    spry_loader_free(va);
    spry_indexed_close(ds); // after the loaders: they borrowed it
}

// Loader time per batch at the training shape B=8, T=256 on ~4M u16 tokens, shuffled.
static void measure(void) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/big", g_dir);
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_U16, SPRY_INDEXED_TABLE_AUTO, &b) ==
          SPRY_OK);
    if (!b)
        return;
    int32_t ids[2000];
    for (int j = 0; j < 2000; j++)
        ids[j] = (j * 37) % 50000 + 1;
    for (int d = 0; d < 2000; d++) {
        CHECK(spry_indexed_builder_add_item_i32(b, ids, 500 + d % 1500) == SPRY_OK);
        spry_indexed_builder_end_document(b);
    }
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
    spry_loader_params p = spry_loader_params_default();
    p.prefix             = prefix;
    p.seq_len            = 256;
    p.batch_size         = 8;
    p.eod_id             = 0;
    spry_loader *l       = NULL;
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(spry_loader_init(&p, &l) == SPRY_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!l)
        return;
    int32_t *batch = malloc(8 * 257 * sizeof *batch);
    int64_t n_b    = 2000;
    for (int64_t i = 0; i < n_b; i++)
        CHECK(spry_loader_next(l, batch) == SPRY_OK);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    double init_ms =
        (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
    double us = ((double)(t2.tv_sec - t1.tv_sec) * 1e6 + (double)(t2.tv_nsec - t1.tv_nsec) * 1e-3) /
                (double)n_b;
    printf(
        "loader: %lld tokens, %lld samples/epoch; init %.2f ms; %.2f us per batch (B=8, T=256)\n",
        (long long)spry_loader_n_tokens(l), (long long)spry_loader_n_samples(l), init_ms, us);
    free(batch);
    spry_loader_free(l);
}

static void cleanup(void) {
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    if (rmdir(g_dir) != 0)
        fprintf(stderr, "cannot remove %s\n", g_dir);
}

// Encoder samples: every non-empty document cut into chunks of <= T tokens, right-padded, in
// order, against the documents themselves (two-item and empty documents included).
static void test_encoder_samples(const char *prefix, int64_t n_docs, int64_t T) {
    spry_loader_params p = base_params(prefix);
    p.eod_id = -1, p.pad_id = 65000, p.seq_len = T;
    spry_loader *l = NULL;
    CHECK(spry_loader_init(&p, &l) == SPRY_OK);
    if (!l) return;
    int64_t  k = 0, bad = 0;
    int32_t *row = malloc(sizeof(int32_t) * (size_t)(T + 1));
    for (int64_t d = 0; d < n_docs; d++)
        for (int64_t c = 0; c * T < doc_len(d); c++, k++) {
            if (k >= spry_loader_n_samples(l)) { bad++; continue; }
            CHECK(spry_loader_sample(l, k, row) == SPRY_OK);
            int64_t n = doc_len(d) - c * T < T ? doc_len(d) - c * T : T;
            for (int64_t t = 0; t <= T; t++)
                bad += row[t] != (t < n ? token(d, c * T + t) : 65000);
        }
    CHECK_MSG(bad == 0 && k == spry_loader_n_samples(l), "encoder samples (T=%lld): %lld wrong, %lld chunks vs %lld samples",
              (long long)T, (long long)bad, (long long)k, (long long)spry_loader_n_samples(l));
    free(row);
    spry_loader_free(l);
    p.eod_id = 0; // padding and eod exclude each other
    CHECK(spry_loader_init(&p, &l) == SPRY_ERR_ARG && l == NULL);
    CHECK(strstr(spry_last_error(), "pad_id") != NULL);
}

int main(void) {
    strcpy(g_dir, "/tmp/spry_test_loader_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_split_bounds();
    test_defaults();
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/docs", g_dir);
    const int64_t n_docs = 300;
    build_docs(prefix, n_docs, SPRY_INDEXED_DTYPE_U16);
    test_packing(prefix, n_docs, 0, 16);  // with eod
    test_packing(prefix, n_docs, -1, 16); // without
    test_packing(prefix, n_docs, 0, 1);   // T = 1: every token starts a sample
    test_packing(prefix, n_docs, 7, 61);
    char prefix32[128];
    snprintf(prefix32, sizeof prefix32, "%s/docs32", g_dir);
    build_docs(prefix32, n_docs, SPRY_INDEXED_DTYPE_I32); // another dtype, same stream
    test_packing(prefix32, n_docs, 0, 16);
    test_split_select(prefix, n_docs);
    test_encoder_samples(prefix, n_docs, 16);
    test_encoder_samples(prefix, n_docs, 5);
    test_shuffle_resume(prefix);
    test_errors(prefix);
    test_shared_dataset(prefix);
    measure();
    cleanup();
    return check_exit();
}
