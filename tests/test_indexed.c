// ctest-label: unit
/*
 * test_indexed.c -- the MMIDIDX .bin/.idx builder and reader: round trips for every dtype code
 * of both tables (explicit table and AUTO detection), the exact byte layout of a small .idx,
 * empty items and documents, many documents, the dtype helpers (find_fit boundaries, Megatron's
 * vocab rule), atomic publication, and corrupt files (truncated, bad magic/version/dtype code,
 * sizes exceeding the .bin, bad pointers, non-monotonic doc_idx, random byte flips), each of
 * which must give an error naming the file and the bad value.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "spry/indexed.h"
#include "spry/rng.h"

static char g_dir[64];

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static uint8_t *read_all(const char *p, size_t *n) {
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

static void write_all(const char *p, const void *data, size_t n) {
    FILE *f = fopen(p, "wb");
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
}

// Element e of item i in a test pattern: varied, covering each type's extremes.
static void pattern_value(spry_indexed_dtype dt, int64_t i, int64_t e, void *out) {
    int64_t k = i * 7919 + e * 104729;
    switch (dt) {
    case SPRY_INDEXED_DTYPE_U8:
        *(uint8_t *)out = (uint8_t)(e == 0 ? 255 : k % 256);
        break;
    case SPRY_INDEXED_DTYPE_I8:
        *(int8_t *)out = (int8_t)(e == 0 ? -128 : k % 256 - 128);
        break;
    case SPRY_INDEXED_DTYPE_I16:
        *(int16_t *)out = (int16_t)(e == 0 ? -32768 : k % 65536 - 32768);
        break;
    case SPRY_INDEXED_DTYPE_U16:
        *(uint16_t *)out = (uint16_t)(e == 0 ? 65535 : k % 65536);
        break;
    case SPRY_INDEXED_DTYPE_I32:
        *(int32_t *)out = e == 0 ? INT32_MIN : (int32_t)(k - 5000000);
        break;
    case SPRY_INDEXED_DTYPE_U32:
        *(uint32_t *)out = e == 0 ? UINT32_MAX : (uint32_t)k;
        break;
    case SPRY_INDEXED_DTYPE_I64:
        *(int64_t *)out = e == 0 ? INT64_MIN : k * 1000003 - 7;
        break;
    case SPRY_INDEXED_DTYPE_U64:
        *(uint64_t *)out = e == 0 ? UINT64_MAX : (uint64_t)k << 20;
        break;
    case SPRY_INDEXED_DTYPE_F32:
        *(float *)out = e == 0 ? -1.5e30f : (float)k * 0.25f;
        break;
    case SPRY_INDEXED_DTYPE_F64:
        *(double *)out = e == 0 ? 1e300 : (double)k * -0.125;
        break;
    default:
        break;
    }
}

// Item lengths of the round-trip dataset: includes empty items; documents of 0..3 items.
static const int64_t k_lens[] = {5, 0, 1, 17, 3, 0, 0, 64, 2, 9};
static const int k_doc_ends[] = {2, 2, 3, 7, 7, 10}; // empty documents at 2 and 7
#define N_ITEMS 10
#define N_DOCS 6

static void build_pattern(const char *prefix, spry_indexed_dtype dt, spry_indexed_table table) {
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, dt, table, &b) == SPRY_OK);
    if (!b)
        return;
    uint8_t buf[64 * 8];
    int d = 0;
    for (int64_t i = 0; i < N_ITEMS; i++) {
        for (int64_t e = 0; e < k_lens[i]; e++)
            pattern_value(dt, i, e, buf + e * spry_indexed_dtype_size(dt));
        CHECK(spry_indexed_builder_add_item(b, k_lens[i] ? buf : NULL, k_lens[i]) == SPRY_OK);
        while (d < N_DOCS && k_doc_ends[d] == i + 1) {
            CHECK(spry_indexed_builder_end_document(b) == SPRY_OK);
            d++;
        }
    }
    CHECK(spry_indexed_builder_n_items(b) == N_ITEMS);
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
}

static void verify_pattern(const char *prefix, spry_indexed_table open_table,
                           spry_indexed_dtype want_dt, spry_indexed_dtype written_dt) {
    spry_indexed *ds = NULL;
    spry_status s    = spry_indexed_open(prefix, open_table, &ds);
    CHECK_MSG(s == SPRY_OK, "%s open %s: %s", spry_indexed_dtype_name(written_dt),
              spry_indexed_table_name(open_table), spry_last_error());
    if (!ds)
        return;
    CHECK_MSG(spry_indexed_elem_dtype(ds) == want_dt, "written %s, read %s, want %s",
              spry_indexed_dtype_name(written_dt),
              spry_indexed_dtype_name(spry_indexed_elem_dtype(ds)),
              spry_indexed_dtype_name(want_dt));
    CHECK(spry_indexed_n_items(ds) == N_ITEMS);
    CHECK(spry_indexed_n_docs(ds) == N_DOCS);
    int64_t total = 0;
    for (int i = 0; i < N_ITEMS; i++)
        total += k_lens[i];
    CHECK(spry_indexed_n_elems(ds) == total);
    int64_t prev_end = 0;
    for (int64_t d = 0; d < N_DOCS; d++) {
        int64_t a, b;
        spry_indexed_doc_range(ds, d, &a, &b);
        CHECK(a == prev_end && b == k_doc_ends[d]);
        prev_end = b;
    }
    size_t esz = spry_indexed_dtype_size(written_dt);
    uint8_t want[64 * 8];
    for (int64_t i = 0; i < N_ITEMS; i++) {
        int64_t n;
        const void *p = spry_indexed_item(ds, i, &n);
        CHECK(p != NULL && n == k_lens[i]);
        CHECK(((uintptr_t)p % esz) == 0); // aligned for typed loads
        for (int64_t e = 0; e < n; e++)
            pattern_value(written_dt, i, e, want + e * esz);
        CHECK_MSG(n == 0 || memcmp(p, want, (size_t)n * esz) == 0, "%s item %lld",
                  spry_indexed_dtype_name(written_dt), (long long)i);
    }
    spry_indexed_close(ds);
}

static void test_code_tables(void) {
    // DeepSpeed: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 u16, 7 u32, 8 u64.
    const spry_indexed_dtype ds[9] = {
        SPRY_INDEXED_DTYPE_COUNT, SPRY_INDEXED_DTYPE_U8,  SPRY_INDEXED_DTYPE_I8,
        SPRY_INDEXED_DTYPE_I16,   SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_DTYPE_I64,
        SPRY_INDEXED_DTYPE_U16,   SPRY_INDEXED_DTYPE_U32, SPRY_INDEXED_DTYPE_U64};
    // Megatron: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16.
    const spry_indexed_dtype mg[9] = {
        SPRY_INDEXED_DTYPE_COUNT, SPRY_INDEXED_DTYPE_U8,  SPRY_INDEXED_DTYPE_I8,
        SPRY_INDEXED_DTYPE_I16,   SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_DTYPE_I64,
        SPRY_INDEXED_DTYPE_F64,   SPRY_INDEXED_DTYPE_F32, SPRY_INDEXED_DTYPE_U16};
    for (int c = 1; c <= 8; c++) {
        CHECK(spry_indexed_dtype_from_code(SPRY_INDEXED_TABLE_DEEPSPEED, c) == ds[c]);
        CHECK(spry_indexed_dtype_from_code(SPRY_INDEXED_TABLE_MEGATRON, c) == mg[c]);
        CHECK(spry_indexed_dtype_code(SPRY_INDEXED_TABLE_DEEPSPEED, ds[c]) == c);
        CHECK(spry_indexed_dtype_code(SPRY_INDEXED_TABLE_MEGATRON, mg[c]) == c);
    }
    CHECK(spry_indexed_dtype_from_code(SPRY_INDEXED_TABLE_MEGATRON, 0) == SPRY_INDEXED_DTYPE_COUNT);
    CHECK(spry_indexed_dtype_from_code(SPRY_INDEXED_TABLE_MEGATRON, 9) == SPRY_INDEXED_DTYPE_COUNT);
    CHECK(spry_indexed_dtype_code(SPRY_INDEXED_TABLE_MEGATRON, SPRY_INDEXED_DTYPE_U32) == -1);
    CHECK(spry_indexed_dtype_code(SPRY_INDEXED_TABLE_DEEPSPEED, SPRY_INDEXED_DTYPE_F32) == -1);
    CHECK(spry_indexed_dtype_code(SPRY_INDEXED_TABLE_AUTO, SPRY_INDEXED_DTYPE_U16) == 6);

    // find_fit_int_dtype boundaries.
    CHECK(spry_indexed_dtype_fit(0, 255) == SPRY_INDEXED_DTYPE_U8);
    CHECK(spry_indexed_dtype_fit(0, 256) == SPRY_INDEXED_DTYPE_U16);
    CHECK(spry_indexed_dtype_fit(0, 65535) == SPRY_INDEXED_DTYPE_U16);
    CHECK(spry_indexed_dtype_fit(0, 65536) == SPRY_INDEXED_DTYPE_U32);
    CHECK(spry_indexed_dtype_fit(0, 4294967295LL) == SPRY_INDEXED_DTYPE_U32);
    CHECK(spry_indexed_dtype_fit(0, 4294967296LL) == SPRY_INDEXED_DTYPE_U64);
    CHECK(spry_indexed_dtype_fit(-1, 127) == SPRY_INDEXED_DTYPE_I8);
    CHECK(spry_indexed_dtype_fit(-128, 5) == SPRY_INDEXED_DTYPE_I8);
    CHECK(spry_indexed_dtype_fit(-129, 5) == SPRY_INDEXED_DTYPE_I16);
    CHECK(spry_indexed_dtype_fit(-1, 128) == SPRY_INDEXED_DTYPE_I16);
    CHECK(spry_indexed_dtype_fit(-1, 32768) == SPRY_INDEXED_DTYPE_I32);
    CHECK(spry_indexed_dtype_fit(-1, 2147483648LL) == SPRY_INDEXED_DTYPE_I64);
    // Megatron's token dtype rule.
    CHECK(spry_indexed_dtype_for_vocab(50257) == SPRY_INDEXED_DTYPE_U16);
    CHECK(spry_indexed_dtype_for_vocab(65499) == SPRY_INDEXED_DTYPE_U16);
    CHECK(spry_indexed_dtype_for_vocab(65500) == SPRY_INDEXED_DTYPE_I32);
    CHECK(spry_indexed_dtype_for_vocab(0) == SPRY_INDEXED_DTYPE_I32);
}

static void test_round_trip_all_codes(void) {
    const spry_indexed_table tables[2] = {SPRY_INDEXED_TABLE_DEEPSPEED,
                                          SPRY_INDEXED_TABLE_MEGATRON};
    for (int t = 0; t < 2; t++) {
        for (int code = 1; code <= 8; code++) {
            spry_indexed_dtype dt = spry_indexed_dtype_from_code(tables[t], code);
            char prefix[128];
            snprintf(prefix, sizeof prefix, "%s/rt_%s_%d", g_dir,
                     spry_indexed_table_name(tables[t]), code);
            build_pattern(prefix, dt, tables[t]);
            // The code in the file is the one of the selected table.
            char ip[160];
            size_t n;
            snprintf(ip, sizeof ip, "%s.idx", prefix);
            uint8_t *raw = read_all(ip, &n);
            CHECK(raw && n > 17 && raw[17] == code);
            free(raw);
            verify_pattern(prefix, tables[t], dt, dt);
            // AUTO: codes 6 and 8 are told apart by size; 7 (4 bytes in both) reads as u32.
            spry_indexed_dtype want = dt;
            if (tables[t] == SPRY_INDEXED_TABLE_MEGATRON && code == 7)
                want = SPRY_INDEXED_DTYPE_U32;
            verify_pattern(prefix, SPRY_INDEXED_TABLE_AUTO, want, dt);
        }
    }
    // Default (AUTO) writer table is DeepSpeed's.
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/rt_default", g_dir);
    build_pattern(prefix, SPRY_INDEXED_DTYPE_U16, SPRY_INDEXED_TABLE_AUTO);
    spry_indexed *ds = NULL;
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_OK);
    if (ds) {
        CHECK(spry_indexed_code(ds) == 6);
        CHECK(spry_indexed_code_table(ds) == SPRY_INDEXED_TABLE_DEEPSPEED);
        spry_indexed_close(ds);
    }
    // A dtype the table has no code for is refused.
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_U32, SPRY_INDEXED_TABLE_MEGATRON,
                                    &b) == SPRY_ERR_ARG);
    CHECK(b == NULL && strstr(spry_last_error(), "u32") && strstr(spry_last_error(), "megatron"));
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_F32, SPRY_INDEXED_TABLE_DEEPSPEED,
                                    &b) == SPRY_ERR_ARG);
}

// The exact bytes of a small .idx, written out by hand from the format (Megatron's
// _IndexWriter): magic, version, code, count, doc_count, sizes, pointers, doc_idx.
static void test_exact_layout(void) {
    char prefix[128], ip[160], bp[160];
    snprintf(prefix, sizeof prefix, "%s/layout", g_dir);
    snprintf(ip, sizeof ip, "%s.idx", prefix);
    snprintf(bp, sizeof bp, "%s.bin", prefix);
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_TABLE_MEGATRON,
                                    &b) == SPRY_OK);
    if (!b)
        return;
    const int32_t a[3] = {7, -1, 300}, c[1] = {42};
    CHECK(spry_indexed_builder_add_item_i32(b, a, 3) == SPRY_OK);
    CHECK(spry_indexed_builder_add_item_i32(b, c, 0) == SPRY_OK);
    CHECK(spry_indexed_builder_end_document(b) == SPRY_OK);
    CHECK(spry_indexed_builder_add_item_i32(b, c, 1) == SPRY_OK);
    // Not published before finalize.
    CHECK(!file_exists(ip) && !file_exists(bp));
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK); // ends the open document
    spry_indexed_builder_free(b);

    uint8_t want[34 + 3 * 4 + 3 * 8 + 3 * 8];
    memcpy(want, "MMIDIDX\0\0", 9);
    uint64_t u;
    u                = 1, memcpy(want + 9, &u, 8);
    want[17]         = 4; // int32 in both tables
    u                = 3, memcpy(want + 18, &u, 8);
    u                = 3, memcpy(want + 26, &u, 8);
    int32_t sizes[3] = {3, 0, 1};
    int64_t ptrs[3] = {0, 12, 12}, docs[3] = {0, 2, 3};
    memcpy(want + 34, sizes, 12);
    memcpy(want + 46, ptrs, 24);
    memcpy(want + 70, docs, 24);
    size_t n;
    uint8_t *got = read_all(ip, &n);
    CHECK(got && n == sizeof want && memcmp(got, want, sizeof want) == 0);
    free(got);
    got                 = read_all(bp, &n);
    int32_t bin_want[4] = {7, -1, 300, 42};
    CHECK(got && n == 16 && memcmp(got, bin_want, 16) == 0);
    free(got);
    // No temporaries left behind.
    char tmp[200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", ip, (long)getpid());
    CHECK(!file_exists(tmp));
}

static void test_builder_errors(void) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/berr", g_dir);
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_U8, SPRY_INDEXED_TABLE_DEEPSPEED,
                                    &b) == SPRY_OK);
    if (!b)
        return;
    const int32_t bad[3] = {1, 300, 2}, good[2] = {0, 255};
    CHECK(spry_indexed_builder_add_item_i32(b, bad, 3) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "300") && strstr(spry_last_error(), "u8"));
    CHECK(spry_indexed_builder_add_item(b, good, -1) == SPRY_ERR_ARG);
    CHECK(spry_indexed_builder_add_item_i32(b, good, 2) == SPRY_OK); // still usable
    CHECK(spry_indexed_builder_n_items(b) == 1);
    char tmp[200];
    snprintf(tmp, sizeof tmp, "%s.bin.tmp.%ld", prefix, (long)getpid());
    CHECK(file_exists(tmp));
    spry_indexed_builder_free(b); // not finalized: temporaries removed, nothing published
    CHECK(!file_exists(tmp));
    snprintf(tmp, sizeof tmp, "%s.bin", prefix);
    CHECK(!file_exists(tmp));
    // A directory that does not exist.
    CHECK(spry_indexed_builder_init("/nonexistent-spry-dir/x", SPRY_INDEXED_DTYPE_U8,
                                    SPRY_INDEXED_TABLE_DEEPSPEED, &b) == SPRY_ERR_IO);
    CHECK(b == NULL && strstr(spry_last_error(), "/nonexistent-spry-dir/x.bin"));
}

static void test_many_documents(void) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/many", g_dir);
    const int64_t n_docs    = 20000;
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_U16, SPRY_INDEXED_TABLE_MEGATRON,
                                    &b) == SPRY_OK);
    if (!b)
        return;
    int32_t ids[40];
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t n = (int64_t)(spry_rng_uniform(7, 0, (uint64_t)d) * 40.0f);
        for (int64_t j = 0; j < n; j++)
            ids[j] = (int32_t)((d * 31 + j) % 65536);
        CHECK(spry_indexed_builder_add_item_i32(b, ids, n) == SPRY_OK);
        CHECK(spry_indexed_builder_end_document(b) == SPRY_OK);
    }
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
    spry_indexed *ds = NULL;
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_OK);
    if (!ds)
        return;
    CHECK(spry_indexed_n_docs(ds) == n_docs && spry_indexed_n_items(ds) == n_docs);
    CHECK(spry_indexed_code(ds) == 8 && spry_indexed_elem_dtype(ds) == SPRY_INDEXED_DTYPE_U16);
    int bad = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        int64_t a, e, n;
        spry_indexed_doc_range(ds, d, &a, &e);
        const uint16_t *p = spry_indexed_item(ds, d, &n);
        int64_t want_n    = (int64_t)(spry_rng_uniform(7, 0, (uint64_t)d) * 40.0f);
        if (a != d || e != d + 1 || n != want_n)
            bad++;
        for (int64_t j = 0; j < n; j++)
            if (p[j] != (uint16_t)((d * 31 + j) % 65536))
                bad++;
        int32_t tok[40];
        if (spry_indexed_read_tokens(ds, d, 0, n, tok) != SPRY_OK)
            bad++;
        for (int64_t j = 0; j < n; j++)
            if (tok[j] != (int32_t)p[j])
                bad++;
    }
    CHECK_MSG(bad == 0, "%d mismatches", bad);
    spry_indexed_close(ds);
}

static void test_read_tokens(void) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/tok", g_dir);
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_I16, SPRY_INDEXED_TABLE_DEEPSPEED,
                                    &b) == SPRY_OK);
    if (!b)
        return;
    const int32_t ids[5] = {1, 2, -7, 4, 5};
    CHECK(spry_indexed_builder_add_item_i32(b, ids, 5) == SPRY_OK);
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
    spry_indexed *ds = NULL;
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_OK);
    if (!ds)
        return;
    int32_t out[5];
    CHECK(spry_indexed_read_tokens(ds, 0, 0, 2, out) == SPRY_OK && out[0] == 1 && out[1] == 2);
    CHECK(spry_indexed_read_tokens(ds, 0, 3, 2, out) == SPRY_OK && out[0] == 4 && out[1] == 5);
    CHECK(spry_indexed_read_tokens(ds, 0, 0, 5, out) == SPRY_ERR_FORMAT);
    CHECK(strstr(spry_last_error(), "tok.bin") && strstr(spry_last_error(), "-7") &&
          strstr(spry_last_error(), "element 2"));
    spry_indexed_close(ds);
    // Float data holds no token ids.
    snprintf(prefix, sizeof prefix, "%s/rt_megatron_7", g_dir); // f32 from the round trip
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_MEGATRON, &ds) == SPRY_OK);
    if (!ds)
        return;
    CHECK(spry_indexed_read_tokens(ds, 0, 0, 1, out) == SPRY_ERR_UNSUPPORTED);
    CHECK(strstr(spry_last_error(), "f32") != NULL);
    spry_indexed_close(ds);
}

// ---------------------------------------------------------------------------------------------
// Corrupt files.

// A valid base dataset: i32 (code 4), sizes {3, 0, 2, 4}, doc_idx {0, 1, 3, 4}.
static void build_base(const char *prefix) {
    spry_indexed_builder *b = NULL;
    CHECK(spry_indexed_builder_init(prefix, SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_TABLE_DEEPSPEED,
                                    &b) == SPRY_OK);
    if (!b)
        return;
    const int32_t v[4]    = {10, 11, 12, 13};
    const int64_t lens[4] = {3, 0, 2, 4};
    for (int i = 0; i < 4; i++) {
        CHECK(spry_indexed_builder_add_item_i32(b, v, lens[i]) == SPRY_OK);
        if (i != 1)
            CHECK(spry_indexed_builder_end_document(b) == SPRY_OK);
    }
    CHECK(spry_indexed_builder_finalize(b) == SPRY_OK);
    spry_indexed_builder_free(b);
}

// Offsets in the base .idx (count = 4, doc_count = 4).
#define OFF_VERSION 9
#define OFF_CODE 17
#define OFF_COUNT 18
#define OFF_DOCS 26
#define OFF_SIZES 34
#define OFF_PTRS (34 + 4 * 4)
#define OFF_DOCIDX (34 + 4 * 4 + 8 * 4)

typedef struct corrupt_case {
    const char *name;
    size_t off; // where to write
    int width;  // 1, 4 or 8 bytes; 0 = truncate the file to off bytes
    int64_t value;
    bool bin;                  // corrupt the .bin instead (only truncation)
    const char *want_file;     // ".idx" or ".bin": the message must name it
    const char *want1, *want2; // substrings the message must contain
} corrupt_case;

static void test_corrupt(void) {
    char base[128], ip[160], bp[160];
    snprintf(base, sizeof base, "%s/base", g_dir);
    build_base(base);
    snprintf(ip, sizeof ip, "%s.idx", base);
    snprintf(bp, sizeof bp, "%s.bin", base);
    size_t n_idx, n_bin;
    uint8_t *idx = read_all(ip, &n_idx);
    uint8_t *bin = read_all(bp, &n_bin);
    CHECK(idx && bin && n_idx == OFF_DOCIDX + 32 && n_bin == 36);
    if (!idx || !bin)
        return;
    spry_indexed *ds = NULL;
    CHECK(spry_indexed_open(base, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_OK);
    CHECK(ds && spry_indexed_n_docs(ds) == 3);
    spry_indexed_close(ds);

    const corrupt_case cases[] = {
        {"empty idx", 0, 0, 0, false, ".idx", "truncated", "= 0 bytes"},
        {"truncated header", 20, 0, 0, false, ".idx", "truncated", "= 20 bytes"},
        {"truncated arrays", OFF_DOCIDX + 20, 0, 0, false, ".idx", "doc_count", "= 4"},
        {"truncated sizes", OFF_SIZES + 6, 0, 0, false, ".idx", "'count' = 4", "truncated"},
        {"bad magic", 6, 1, 'Y', false, ".idx", "'magic'", "MMIDIDY"},
        {"bad version", OFF_VERSION, 8, 2, false, ".idx", "'version' = 2", "expected 1"},
        {"dtype code 9", OFF_CODE, 1, 9, false, ".idx", "'dtype code' = 9", "1-8"},
        {"dtype code 0", OFF_CODE, 1, 0, false, ".idx", "'dtype code' = 0", "1-8"},
        {"huge count", OFF_COUNT, 8, INT64_MAX, false, ".idx", "'count' = 9223372036854775807",
         "at most"},
        {"huge doc_count", OFF_DOCS, 8, 1LL << 61, false, ".idx",
         "'doc_count' = 2305843009213693952", "truncated"},
        {"trailing bytes", OFF_DOCS, 8, 3, false, ".idx", "8 trailing bytes", "doc_count = 3"},
        {"negative size", OFF_SIZES + 4, 4, -5, false, ".idx", "'sizes[1]' = -5", "negative"},
        {"sizes exceed bin", OFF_SIZES + 12, 4, 40, false, ".bin", "exceed", "45 elements"},
        {"size below bin", OFF_SIZES, 4, 1, false, ".bin", "= 36 bytes", "28 bytes"},
        {"truncated bin", 30, 0, 0, true, ".bin", "= 30 bytes", "sizes exceed"},
        {"bad pointer", OFF_PTRS + 16, 8, 8, false, ".idx", "'pointers[2]' = 8", "expected 12"},
        {"pointer past bin", OFF_PTRS + 24, 8, 1000000, false, ".idx", "'pointers[3]' = 1000000",
         "expected 20"},
        {"doc_idx[0] != 0", OFF_DOCIDX, 8, 1, false, ".idx", "'doc_idx[0]' = 1", "expected 0"},
        {"doc_idx not monotonic", OFF_DOCIDX + 16, 8, 0, false, ".idx", "'doc_idx[2]' = 0",
         "not monotonic"},
        {"doc_idx beyond count", OFF_DOCIDX + 24, 8, 9, false, ".idx", "'doc_idx[3]' = 9",
         "count = 4"},
    };
    char prefix[128], cp[160];
    snprintf(prefix, sizeof prefix, "%s/corrupt", g_dir);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const corrupt_case *k = &cases[c];
        uint8_t *mi = malloc(n_idx), *mb = malloc(n_bin);
        memcpy(mi, idx, n_idx);
        memcpy(mb, bin, n_bin);
        size_t ni = n_idx, nb = n_bin;
        if (k->width == 0) {
            if (k->bin)
                nb = k->off;
            else
                ni = k->off;
        } else if (k->width == 1) {
            mi[k->off] = (uint8_t)k->value;
        } else if (k->width == 4) {
            int32_t v = (int32_t)k->value;
            memcpy(mi + k->off, &v, 4);
        } else {
            memcpy(mi + k->off, &k->value, 8);
        }
        snprintf(cp, sizeof cp, "%s.idx", prefix);
        write_all(cp, mi, ni);
        snprintf(cp, sizeof cp, "%s.bin", prefix);
        write_all(cp, mb, nb);
        free(mi);
        free(mb);
        ds              = NULL;
        spry_status s   = spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds);
        const char *msg = spry_last_error();
        char want_path[200];
        snprintf(want_path, sizeof want_path, "%s%s", prefix, k->want_file);
        CHECK_MSG(s == SPRY_ERR_FORMAT && ds == NULL, "%s: status %s", k->name,
                  spry_status_name(s));
        CHECK_MSG(strstr(msg, want_path) && strstr(msg, k->want1) && strstr(msg, k->want2),
                  "%s: message \"%s\" lacks \"%s\", \"%s\" or \"%s\"", k->name, msg, want_path,
                  k->want1, k->want2);
        spry_indexed_close(ds);
    }
    // Explicit table: code 8 is u16 for Megatron, u64 for DeepSpeed; the .bin decides validity.
    uint8_t *mi = malloc(n_idx);
    memcpy(mi, idx, n_idx);
    mi[OFF_CODE] = 7; // 4-byte in both tables: valid either way
    snprintf(cp, sizeof cp, "%s.idx", prefix);
    write_all(cp, mi, n_idx);
    snprintf(cp, sizeof cp, "%s.bin", prefix);
    write_all(cp, bin, n_bin);
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_MEGATRON, &ds) == SPRY_OK);
    CHECK(ds && spry_indexed_elem_dtype(ds) == SPRY_INDEXED_DTYPE_F32);
    spry_indexed_close(ds);
    mi[OFF_CODE] = 8;
    snprintf(cp, sizeof cp, "%s.idx", prefix);
    write_all(cp, mi, n_idx);
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_MEGATRON, &ds) == SPRY_ERR_FORMAT);
    CHECK(strstr(spry_last_error(), "u16") && strstr(spry_last_error(), "corrupt.bin"));
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_ERR_FORMAT);
    free(mi);

    // Missing files.
    snprintf(cp, sizeof cp, "%s.bin", prefix);
    unlink(cp);
    CHECK(spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_ERR_IO);
    CHECK(strstr(spry_last_error(), "corrupt.bin") != NULL);
    CHECK(spry_indexed_open("/nonexistent-spry/x", SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_ERR_IO);
    CHECK(strstr(spry_last_error(), "/nonexistent-spry/x.idx") != NULL);
    CHECK(spry_indexed_open(g_dir, SPRY_INDEXED_TABLE_AUTO, &ds) != SPRY_OK); // "<dir>.idx"

    // Random byte flips in the .idx: open either fails cleanly or yields a consistent dataset.
    int opened = 0;
    for (uint64_t t = 0; t < 400; t++) {
        uint8_t *m = malloc(n_idx);
        memcpy(m, idx, n_idx);
        uint32_t r[4];
        spry_philox(99, 1, t, r);
        int n_flips = 1 + (int)(r[3] % 3);
        for (int f = 0; f < n_flips; f++)
            m[r[f] % n_idx] ^= (uint8_t)(1u << (r[f] >> 29));
        size_t len = (r[3] >> 8) % 8 == 0 ? (r[3] >> 12) % n_idx : n_idx; // sometimes truncate
        snprintf(cp, sizeof cp, "%s.idx", prefix);
        write_all(cp, m, len);
        snprintf(cp, sizeof cp, "%s.bin", prefix);
        write_all(cp, bin, n_bin);
        free(m);
        ds = NULL;
        if (spry_indexed_open(prefix, SPRY_INDEXED_TABLE_AUTO, &ds) == SPRY_OK) {
            opened++;
            int64_t total = 0;
            for (int64_t i = 0; i < spry_indexed_n_items(ds); i++) {
                int64_t n;
                const uint8_t *p = spry_indexed_item(ds, i, &n);
                for (int64_t e = 0;
                     e < n * (int64_t)spry_indexed_dtype_size(spry_indexed_elem_dtype(ds)); e++)
                    total += p[e]; // ASan checks every byte is inside the mapping
            }
            for (int64_t d = 0; d < spry_indexed_n_docs(ds); d++) {
                int64_t a, b;
                spry_indexed_doc_range(ds, d, &a, &b);
                CHECK(0 <= a && a <= b && b <= spry_indexed_n_items(ds));
            }
            (void)total;
            spry_indexed_close(ds);
        } else {
            CHECK(ds == NULL && strstr(spry_last_error(), "corrupt.") != NULL);
        }
    }
    printf("byte flips: %d of 400 still valid (flips in doc_idx/unused bits)\n", opened);
    free(idx);
    free(bin);
}

// Removes every file in g_dir, then the directory.
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

int main(void) {
    strcpy(g_dir, "/tmp/spry_test_indexed_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_code_tables();
    test_round_trip_all_codes();
    test_exact_layout();
    test_builder_errors();
    test_many_documents();
    test_read_tokens();
    test_corrupt();
    cleanup();
    return check_exit();
}
