// ctest-label: unit
/*
 * test_gguf.c -- the GGUF reader, writer and model export / import (gguf.h).
 *
 * 1. Writer -> reader round trips of every value type and of tensors of several ggml types at
 *    several alignments; the writer's bytes against a file built here byte by byte.
 * 2. One malformed file per check of ggml's reader (ggml tests/test-gguf.cpp names them
 *    HEADER_BAD_MAGIC, KV_DUPLICATE_KEY, TENSORS_BAD_OFFSET, ...), each built byte by byte, opened
 *    from a file and from memory: SPRY_ERR_FORMAT with the file name and the field in the message.
 * 3. Every truncation of a small valid file fails cleanly.
 * 4. Tiny random GPT-2 and BLOOM models (odd sizes) exported to F32 and F16 GGUF: key names and
 *    types, tensor names, types and ne against shared/notes/inference_serving.md section 2.2,
 *    BLOOM's QKV re-order, the tokenizer keys, and import back bit for bit (F16: to f16 rounding);
 *    import errors on edited copies of an exported file.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "spry/dtype.h"
#include "spry/engine.h"
#include "spry/gguf.h"
#include "spry/quant.h"

// ---------------------------------------------------------------------------------------------
// Scratch directory and files

static char g_dir[64];

// g_dir/name in a static buffer (four slots, so several paths can be live at once).
static const char *tpath(const char *name) {
    static char buf[4][384];
    static int slot;
    slot = (slot + 1) % 4;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_dir, name);
    return buf[slot];
}

static bool write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = n == 0 || fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

// The whole file, malloc'd (NULL on error); *n its size.
static unsigned char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(sz > 0 ? (size_t)sz : 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}

static bool dir_has(const char *needle) {
    DIR *d     = opendir(g_dir);
    bool found = false;
    if (!d)
        return false;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (strstr(de->d_name, needle))
            found = true;
    closedir(d);
    return found;
}

static bool has(const char *s) { return strstr(spry_last_error(), s) != NULL; }

// ---------------------------------------------------------------------------------------------
// A byte builder for hand-made files

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n) {
    if (b->cap - b->n < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->n < n)
            cap *= 2;
        b->p   = realloc(b->p, cap);
        b->cap = cap;
        SPRY_ASSERT(b->p, "out of memory");
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void hdr(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    u32(b, version);
    u64(b, n_tensors);
    u64(b, n_kv);
}
static void kv_u32(buf *b, const char *key, uint32_t v) {
    str(b, key);
    u32(b, SPRY_GGUF_TYPE_UINT32);
    u32(b, v);
}
static void kv_str(buf *b, const char *key, const char *v) {
    str(b, key);
    u32(b, SPRY_GGUF_TYPE_STRING);
    str(b, v);
}
static void tinfo(buf *b, const char *name, uint32_t n_dims, const int64_t *ne, int32_t type,
                  uint64_t off) {
    str(b, name);
    u32(b, n_dims);
    put(b, ne, 8 * (size_t)n_dims);
    put(b, &type, 4);
    u64(b, off);
}
static void zeros(buf *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        put(b, "", 1);
}
static void pad(buf *b, size_t a) {
    while (b->n % a)
        put(b, "", 1);
}
static void fill(buf *b, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(seed * 31u + i * 7u);
        put(b, &c, 1);
    }
}

// The small valid file of the truncation and cross-check tests: 3 pairs, 2 tensors.
static void good_file(buf *b) {
    hdr(b, 3, 2, 3);
    kv_str(b, "general.name", "tiny");
    str(b, "a.arr");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_INT32);
    u64(b, 3);
    int32_t v[3] = {1, -2, 3};
    put(b, v, sizeof v);
    kv_u32(b, "general.alignment", 32);
    tinfo(b, "t0", 2, (int64_t[]){3, 2}, SPRY_GGML_TYPE_F32, 0);
    tinfo(b, "t1", 1, (int64_t[]){32}, SPRY_GGML_TYPE_Q8_0, 32);
    pad(b, 32);
    fill(b, 24, 1); // t0: 6 f32
    pad(b, 32);
    fill(b, 34, 2); // t1: one Q8_0 block
    pad(b, 32);
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips

static void test_value_round_trip(void) {
    spry_gguf_writer *w;
    CHECK(spry_gguf_writer_init(&w) == SPRY_OK);
    CHECK(spry_gguf_set_u8(w, "v.u8", 200) == SPRY_OK);
    CHECK(spry_gguf_set_i8(w, "v.i8", -100) == SPRY_OK);
    CHECK(spry_gguf_set_u16(w, "v.u16", 60000) == SPRY_OK);
    CHECK(spry_gguf_set_i16(w, "v.i16", -30000) == SPRY_OK);
    CHECK(spry_gguf_set_u32(w, "v.u32", 4000000000u) == SPRY_OK);
    CHECK(spry_gguf_set_i32(w, "v.i32", -2000000000) == SPRY_OK);
    CHECK(spry_gguf_set_f32(w, "v.f32", 1.5e-5f) == SPRY_OK);
    CHECK(spry_gguf_set_bool(w, "v.bool", true) == SPRY_OK);
    CHECK(spry_gguf_set_u64(w, "v.u64", 18000000000000000000ull) == SPRY_OK);
    CHECK(spry_gguf_set_i64(w, "v.i64", -9000000000000000000ll) == SPRY_OK);
    CHECK(spry_gguf_set_f64(w, "v.f64", 3.141592653589793) == SPRY_OK);
    CHECK(spry_gguf_set_str(w, "v.str", "h\xc3\xa9llo wörld") == SPRY_OK);
    CHECK(spry_gguf_set_str(w, "v.empty", "") == SPRY_OK);
    CHECK(spry_gguf_set_u32(w, "v.replaced", 7) == SPRY_OK);
    CHECK(spry_gguf_set_str(w, "v.replaced", "now a string") == SPRY_OK); // keeps its place

    uint8_t au8[]   = {0, 1, 255};
    int8_t ai8[]    = {-128, 0, 127};
    uint16_t au16[] = {1, 65535};
    int16_t ai16[]  = {-32768, 32767};
    uint32_t au32[] = {0, 1, 4294967295u};
    int32_t ai32[]  = {-5, 0, 5, 2147483647};
    float af32[]    = {0.25f, -1e30f};
    uint8_t abool[] = {1, 0, 7}; // written as 1, 0, 1
    uint64_t au64[] = {1ull << 63};
    int64_t ai64[]  = {-1, 1ll << 40};
    double af64[]   = {-0.5, 1e300};
    struct {
        const char *key;
        spry_gguf_type t;
        const void *data;
        uint64_t n;
    } arrs[] = {
        {"a.u8", SPRY_GGUF_TYPE_UINT8, au8, 3},     {"a.i8", SPRY_GGUF_TYPE_INT8, ai8, 3},
        {"a.u16", SPRY_GGUF_TYPE_UINT16, au16, 2},  {"a.i16", SPRY_GGUF_TYPE_INT16, ai16, 2},
        {"a.u32", SPRY_GGUF_TYPE_UINT32, au32, 3},  {"a.i32", SPRY_GGUF_TYPE_INT32, ai32, 4},
        {"a.f32", SPRY_GGUF_TYPE_FLOAT32, af32, 2}, {"a.bool", SPRY_GGUF_TYPE_BOOL, abool, 3},
        {"a.u64", SPRY_GGUF_TYPE_UINT64, au64, 1},  {"a.i64", SPRY_GGUF_TYPE_INT64, ai64, 2},
        {"a.f64", SPRY_GGUF_TYPE_FLOAT64, af64, 2}, {"a.empty", SPRY_GGUF_TYPE_FLOAT32, NULL, 0},
    };
    int n_arrs = (int)(sizeof arrs / sizeof arrs[0]);
    for (int i = 0; i < n_arrs; i++)
        CHECK(spry_gguf_set_arr(w, arrs[i].key, arrs[i].t, arrs[i].data, arrs[i].n) == SPRY_OK);
    const char *strs[] = {"a", "", "Ġthe", "[PAD5]"};
    CHECK(spry_gguf_set_arr_str(w, "a.str", strs, 4) == SPRY_OK);
    CHECK(spry_gguf_set_arr_str(w, "a.str0", NULL, 0) == SPRY_OK);
    const char *path = tpath("values.gguf");
    CHECK(spry_gguf_writer_write(w, path) == SPRY_OK);
    spry_gguf_writer_free(w);

    spry_gguf *g;
    CHECK_MSG(spry_gguf_open(path, &g) == SPRY_OK, "%s", spry_last_error());
    if (!g)
        return;
    CHECK(spry_gguf_version(g) == 3 && spry_gguf_n_tensors(g) == 0);
    CHECK(spry_gguf_n_kv(g) == 14 + n_arrs + 2);
    CHECK(spry_gguf_alignment(g) == 32);
    uint32_t u32v = 0;
    int32_t i32v  = 0;
    uint64_t u64v = 0;
    float f32v    = 0;
    bool bv       = false;
    CHECK(spry_gguf_get_u32(g, "v.u32", &u32v) == SPRY_OK && u32v == 4000000000u);
    CHECK(spry_gguf_get_i32(g, "v.i32", &i32v) == SPRY_OK && i32v == -2000000000);
    CHECK(spry_gguf_get_u64(g, "v.u64", &u64v) == SPRY_OK && u64v == 18000000000000000000ull);
    CHECK(spry_gguf_get_f32(g, "v.f32", &f32v) == SPRY_OK && f32v == 1.5e-5f);
    CHECK(spry_gguf_get_bool(g, "v.bool", &bv) == SPRY_OK && bv);
    const char *s = NULL;
    size_t len    = 0;
    CHECK(spry_gguf_get_str(g, "v.str", &s, &len) == SPRY_OK && !strcmp(s, "h\xc3\xa9llo wörld"));
    CHECK(len == strlen("h\xc3\xa9llo wörld"));
    CHECK(spry_gguf_get_str(g, "v.empty", &s, &len) == SPRY_OK && len == 0 && s[0] == 0);
    CHECK(spry_gguf_get_str(g, "v.replaced", &s, NULL) == SPRY_OK && !strcmp(s, "now a string"));
    CHECK(spry_gguf_find_key(g, "v.replaced") == 13); // replaced in place, not appended
    // the small types through the generic accessor, in file order
    struct {
        const char *key;
        spry_gguf_type t;
        int64_t v;
    } small[] = {{"v.u8", SPRY_GGUF_TYPE_UINT8, 200},
                 {"v.i8", SPRY_GGUF_TYPE_INT8, -100},
                 {"v.u16", SPRY_GGUF_TYPE_UINT16, 60000},
                 {"v.i16", SPRY_GGUF_TYPE_INT16, -30000},
                 {"v.i64", SPRY_GGUF_TYPE_INT64, -9000000000000000000ll}};
    for (int i = 0; i < 5; i++) {
        const spry_gguf_kv *kv = spry_gguf_kv_at(g, spry_gguf_find_key(g, small[i].key));
        CHECK(kv && kv->type == small[i].t && kv->elem_type == small[i].t && kv->n == 1);
        if (!kv)
            continue;
        int64_t v = 0;
        switch (small[i].t) {
        case SPRY_GGUF_TYPE_UINT8:
            v = *(const uint8_t *)kv->data;
            break;
        case SPRY_GGUF_TYPE_INT8:
            v = *(const int8_t *)kv->data;
            break;
        case SPRY_GGUF_TYPE_UINT16: {
            uint16_t x;
            spry_gguf_kv_elem(kv, 0, &x);
            v = x;
        } break;
        case SPRY_GGUF_TYPE_INT16: {
            int16_t x;
            spry_gguf_kv_elem(kv, 0, &x);
            v = x;
        } break;
        default:
            spry_gguf_kv_elem(kv, 0, &v);
            break;
        }
        CHECK_MSG(v == small[i].v, "%s = %lld", small[i].key, (long long)v);
    }
    double d = 0;
    spry_gguf_kv_elem(spry_gguf_kv_at(g, spry_gguf_find_key(g, "v.f64")), 0, &d);
    CHECK(d == 3.141592653589793);
    // arrays: type, count and bytes (bools normalized to 0/1)
    for (int i = 0; i < n_arrs; i++) {
        const spry_gguf_kv *kv = NULL;
        CHECK(spry_gguf_get_arr(g, arrs[i].key, arrs[i].t, &kv) == SPRY_OK);
        if (!kv)
            continue;
        CHECK(kv->type == SPRY_GGUF_TYPE_ARRAY && kv->n == arrs[i].n && kv->str == NULL);
        size_t es = spry_gguf_type_size(arrs[i].t);
        if (arrs[i].t == SPRY_GGUF_TYPE_BOOL) {
            const uint8_t *b = kv->data;
            CHECK(b[0] == 1 && b[1] == 0 && b[2] == 1);
        } else if (arrs[i].n) {
            CHECK_MSG(!memcmp(kv->data, arrs[i].data, es * arrs[i].n), "%s", arrs[i].key);
        }
    }
    const spry_gguf_kv *kv = NULL;
    CHECK(spry_gguf_get_arr(g, "a.i32", SPRY_GGUF_TYPE_INT32, &kv) == SPRY_OK);
    CHECK(kv && spry_gguf_kv_i32(kv, 3) == 2147483647 && spry_gguf_kv_i32(kv, 0) == -5);
    CHECK(spry_gguf_get_arr(g, "a.u32", SPRY_GGUF_TYPE_UINT32, &kv) == SPRY_OK);
    CHECK(kv && spry_gguf_kv_u32(kv, 2) == 4294967295u);
    CHECK(spry_gguf_get_arr(g, "a.f32", SPRY_GGUF_TYPE_FLOAT32, &kv) == SPRY_OK);
    CHECK(kv && spry_gguf_kv_f32(kv, 1) == -1e30f);
    CHECK(spry_gguf_get_arr(g, "a.str", SPRY_GGUF_TYPE_STRING, &kv) == SPRY_OK);
    CHECK(kv && kv->n == 4);
    for (uint64_t i = 0; kv && i < 4; i++) {
        CHECK(!strcmp(spry_gguf_kv_str(kv, i, &len), strs[i]) && len == strlen(strs[i]));
        CHECK(!strcmp(kv->str[i], strs[i]) && kv->str_len[i] == strlen(strs[i]));
    }
    CHECK(spry_gguf_get_arr(g, "a.str0", SPRY_GGUF_TYPE_STRING, &kv) == SPRY_OK && kv->n == 0);

    // getter errors: absent key, wrong scalar type, array vs scalar, wrong element type
    CHECK(spry_gguf_get_u32(g, "no.such.key", &u32v) == SPRY_ERR_NOT_FOUND);
    CHECK(has("no.such.key") && has("not found") && has(path));
    CHECK(spry_gguf_get_u32(g, "v.i32", &u32v) == SPRY_ERR_FORMAT && u32v == 4000000000u);
    CHECK(has("'v.i32'") && has("wrong type (INT32, expected UINT32)") && has(path));
    CHECK(spry_gguf_get_f32(g, "v.f64", &f32v) == SPRY_ERR_FORMAT && has("FLOAT64"));
    CHECK(spry_gguf_get_str(g, "a.str", &s, NULL) == SPRY_ERR_FORMAT);
    CHECK(has("ARRAY of STRING, expected STRING"));
    CHECK(spry_gguf_get_arr(g, "a.i32", SPRY_GGUF_TYPE_STRING, &kv) == SPRY_ERR_FORMAT);
    CHECK(has("ARRAY of INT32, expected ARRAY of STRING"));
    CHECK(spry_gguf_get_arr(g, "v.u32", SPRY_GGUF_TYPE_UINT32, &kv) == SPRY_ERR_FORMAT);
    CHECK(has("UINT32, expected ARRAY of UINT32"));
    CHECK(spry_gguf_get_arr(g, "nope", SPRY_GGUF_TYPE_UINT32, &kv) == SPRY_ERR_NOT_FOUND);
    CHECK(spry_gguf_kv_at(g, -1) == NULL && spry_gguf_kv_at(g, 1000) == NULL);
    CHECK(spry_gguf_find_tensor(g, "x") == NULL && spry_gguf_tensor_at(g, 0) == NULL);
    spry_gguf_close(g);
    CHECK(!dir_has(".tmp."));
}

// Tensors of several types, shapes and alignments, written, read back and compared.
static void test_tensor_round_trip(void) {
    typedef struct {
        const char *name;
        int type;
        uint32_t n_dims;
        int64_t ne[4];
    } tdef;
    const tdef defs[] = {
        {"f32.2d", SPRY_GGML_TYPE_F32, 2, {5, 3}},
        {"f16.1d", SPRY_GGML_TYPE_F16, 1, {7}},
        {"bf16.3d", SPRY_GGML_TYPE_BF16, 3, {3, 1, 2}},
        {"q8_0", SPRY_GGML_TYPE_Q8_0, 2, {64, 3}},
        {"q4_0", SPRY_GGML_TYPE_Q4_0, 2, {32, 5}},
        {"q4_k", SPRY_GGML_TYPE_Q4_K, 1, {256}},
        {"q6_k", SPRY_GGML_TYPE_Q6_K, 2, {256, 2}},
        {"i32.4d", SPRY_GGML_TYPE_I32, 4, {2, 1, 3, 2}},
        {"i8", SPRY_GGML_TYPE_I8, 1, {13}},
        {"f64", SPRY_GGML_TYPE_F64, 1, {3}},
        {"empty", SPRY_GGML_TYPE_F32, 2, {4, 0}},
        {"scalar", SPRY_GGML_TYPE_F32, 0, {0}},
        {"mxfp4", SPRY_GGML_TYPE_MXFP4, 1, {64}},
    };
    const int nt      = (int)(sizeof defs / sizeof defs[0]);
    uint32_t aligns[] = {0 /* default 32 */, 1, 8, 64, 4096};
    for (size_t ai = 0; ai < sizeof aligns / sizeof aligns[0]; ai++) {
        spry_gguf_writer *w;
        CHECK(spry_gguf_writer_init(&w) == SPRY_OK);
        CHECK(spry_gguf_set_str(w, "general.architecture", "test") == SPRY_OK);
        if (aligns[ai])
            CHECK(spry_gguf_set_u32(w, "general.alignment", aligns[ai]) == SPRY_OK);
        unsigned char *data[16];
        size_t nbytes[16];
        for (int i = 0; i < nt; i++) {
            const spry_ggml_type_traits *tt = spry_ggml_type_info(defs[i].type);
            int64_t numel                   = 1;
            for (uint32_t d = 0; d < defs[i].n_dims; d++)
                numel *= defs[i].ne[d];
            nbytes[i] = (size_t)(numel / tt->block) * tt->block_bytes;
            data[i]   = malloc(nbytes[i] + 1);
            for (size_t k = 0; k < nbytes[i]; k++)
                data[i][k] = (unsigned char)(k * 13 + i + ai);
            CHECK_MSG(spry_gguf_add_tensor(w, defs[i].name, defs[i].type, defs[i].n_dims,
                                           defs[i].ne, data[i]) == SPRY_OK,
                      "%s", spry_last_error());
        }
        const char *path = tpath("tensors.gguf");
        CHECK(spry_gguf_writer_write(w, path) == SPRY_OK);
        spry_gguf_writer_free(w);

        spry_gguf *g;
        CHECK_MSG(spry_gguf_open(path, &g) == SPRY_OK, "%s", spry_last_error());
        if (!g)
            continue;
        uint64_t A = aligns[ai] ? aligns[ai] : 32;
        CHECK(spry_gguf_alignment(g) == A && spry_gguf_n_tensors(g) == nt);
        CHECK(spry_gguf_data_offset(g) % A == 0);
        struct stat sb;
        stat(path, &sb);
        CHECK((uint64_t)sb.st_size == spry_gguf_data_offset(g) + spry_gguf_data_size(g));
        for (int i = 0; i < nt; i++) {
            const spry_gguf_tensor *t = spry_gguf_tensor_at(g, i);
            CHECK(t && t == spry_gguf_find_tensor(g, defs[i].name));
            if (!t)
                continue;
            CHECK(!strcmp(t->name, defs[i].name) && t->type == defs[i].type);
            CHECK(t->n_dims == defs[i].n_dims && t->nbytes == nbytes[i]);
            for (uint32_t d = 0; d < 4; d++)
                CHECK(t->ne[d] == (d < defs[i].n_dims ? defs[i].ne[d] : 1));
            CHECK(t->offset % A == 0 && (uintptr_t)t->data % A == 0); // mmap is page aligned
            CHECK(nbytes[i] == 0 || !memcmp(t->data, data[i], nbytes[i]));
        }
        spry_gguf_close(g);
        for (int i = 0; i < nt; i++)
            free(data[i]);
    }
}

// The reader on a file built here, and the writer's bytes for the same content.
static void test_cross_check(void) {
    buf b = {0};
    good_file(&b);
    spry_gguf *g;
    CHECK_MSG(spry_gguf_open_memory(b.p, b.n, "good", &g) == SPRY_OK, "%s", spry_last_error());
    if (g) {
        CHECK(spry_gguf_n_kv(g) == 3 && spry_gguf_n_tensors(g) == 2);
        const spry_gguf_tensor *t1 = spry_gguf_find_tensor(g, "t1");
        CHECK(t1 && t1->offset == 32 && t1->nbytes == 34 && t1->numel == 32);
        CHECK(t1 && t1->data == b.p + spry_gguf_data_offset(g) + 32);
        CHECK(spry_gguf_data_size(g) == 96 && spry_gguf_data_offset(g) + 96 == b.n);
        spry_gguf_close(g);
    }
    // the writer makes exactly these bytes
    spry_gguf_writer *w;
    CHECK(spry_gguf_writer_init(&w) == SPRY_OK);
    CHECK(spry_gguf_set_str(w, "general.name", "tiny") == SPRY_OK);
    int32_t v[3] = {1, -2, 3};
    CHECK(spry_gguf_set_arr(w, "a.arr", SPRY_GGUF_TYPE_INT32, v, 3) == SPRY_OK);
    CHECK(spry_gguf_set_u32(w, "general.alignment", 32) == SPRY_OK);
    size_t hdr_end      = b.n - 96;
    unsigned char *data = b.p + hdr_end;
    CHECK(spry_gguf_add_tensor(w, "t0", SPRY_GGML_TYPE_F32, 2, (int64_t[]){3, 2}, data) == SPRY_OK);
    CHECK(spry_gguf_add_tensor(w, "t1", SPRY_GGML_TYPE_Q8_0, 1, (int64_t[]){32}, data + 32) ==
          SPRY_OK);
    const char *path = tpath("cross.gguf");
    CHECK(spry_gguf_writer_write(w, path) == SPRY_OK);
    spry_gguf_writer_free(w);
    size_t n;
    unsigned char *got = read_bytes(path, &n);
    CHECK(got && n == b.n && !memcmp(got, b.p, n));
    free(got);
    free(b.p);
}

// ---------------------------------------------------------------------------------------------
// 2. Malformed files, one per check

typedef struct bad_case {
    const char *name;
    void (*build)(buf *b);
    const char *want; // in the message, besides the file name
} bad_case;

// Tensor-info prefix: header with n tensors and no pairs.
static void b_empty(buf *b) { (void)b; }
static void b_magic(buf *b) {
    put(b, "GGML", 4);
    u32(b, 3);
    u64(b, 0);
    u64(b, 0);
}
static void b_magic_short(buf *b) { put(b, "GGU", 3); }
static void b_version0(buf *b) { hdr(b, 0, 0, 0); }
static void b_version1(buf *b) { hdr(b, 1, 0, 0); }
static void b_version4(buf *b) { hdr(b, 4, 0, 0); }
static void b_version_be(buf *b) { hdr(b, 0x03000000u, 0, 0); }
static void b_header_short(buf *b) {
    put(b, "GGUF", 4);
    u32(b, 3);
    u32(b, 0);
}
static void b_kvcount_short(buf *b) {
    put(b, "GGUF", 4);
    u32(b, 3);
    u64(b, 0);
    u32(b, 0);
}
static void b_ntensors_neg(buf *b) { hdr(b, 3, 1ull << 63, 0); }
static void b_ntensors_big(buf *b) {
    hdr(b, 3, 1000, 0);
    zeros(b, 100);
}
static void b_nkv_neg(buf *b) { hdr(b, 3, 0, (1ull << 63) + 5); }
static void b_nkv_big(buf *b) {
    hdr(b, 3, 0, 1000);
    zeros(b, 100);
}
static void b_key_huge(buf *b) {
    hdr(b, 3, 0, 1);
    u64(b, (1ull << 30) + 1);
    zeros(b, 64);
}
static void b_key_past_end(buf *b) {
    hdr(b, 3, 0, 1);
    u64(b, 500);
    zeros(b, 64);
}
static void b_key_empty(buf *b) {
    hdr(b, 3, 0, 1);
    u64(b, 0);
    u32(b, SPRY_GGUF_TYPE_UINT8);
    zeros(b, 8);
}
static void b_key_dup(buf *b) {
    hdr(b, 3, 0, 2);
    kv_u32(b, "x.y", 1);
    kv_str(b, "x.y", "again");
}
static void b_type_short(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "kkkkkkkk");
    put(b, "\x04\x00", 2);
}
static void b_type_bad(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, 13);
    zeros(b, 8);
}
static void b_type_neg(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, 0xffffffffu);
    zeros(b, 8);
}
static void b_nested(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u64(b, 1);
    u32(b, SPRY_GGUF_TYPE_UINT8);
    u64(b, 1);
    zeros(b, 1);
}
static void b_elem_bad(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, 77);
    u64(b, 0);
}
static void b_arr_too_long(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_UINT8);
    u64(b, (1ull << 30) + 1);
    zeros(b, 64);
}
static void b_arr_past_end(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_UINT32);
    u64(b, 100);
    zeros(b, 396);
}
static void b_arr_overflow(buf *b) { // 2^30 u64s: the byte count must not wrap
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_FLOAT64);
    u64(b, 1ull << 30);
    zeros(b, 64);
}
static void b_strarr_past_end(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_STRING);
    u64(b, 1000);
    zeros(b, 64);
}
static void b_str_huge(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_STRING);
    u64(b, (1ull << 30) + 1);
    zeros(b, 64);
}
static void b_str_elem_past_end(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_ARRAY);
    u32(b, SPRY_GGUF_TYPE_STRING);
    u64(b, 2);
    str(b, "ok");
    u64(b, 1000);
    zeros(b, 16);
}
static void b_value_short(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "k");
    u32(b, SPRY_GGUF_TYPE_UINT64);
    zeros(b, 5);
}
static void b_align_type(buf *b) {
    hdr(b, 3, 0, 1);
    str(b, "general.alignment");
    u32(b, SPRY_GGUF_TYPE_UINT64);
    u64(b, 32);
}
static void b_align_zero(buf *b) {
    hdr(b, 3, 0, 1);
    kv_u32(b, "general.alignment", 0);
}
static void b_align_48(buf *b) {
    hdr(b, 3, 0, 1);
    kv_u32(b, "general.alignment", 48);
}
static void b_name_long(buf *b) {
    hdr(b, 3, 1, 0);
    char name[65];
    memset(name, 'n', 64);
    name[64] = 0;
    tinfo(b, name, 1, (int64_t[]){1}, SPRY_GGML_TYPE_F32, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_name_dup(buf *b) {
    hdr(b, 3, 2, 0);
    tinfo(b, "t", 1, (int64_t[]){1}, SPRY_GGML_TYPE_F32, 0);
    tinfo(b, "t", 1, (int64_t[]){1}, SPRY_GGML_TYPE_F32, 32);
    pad(b, 32);
    zeros(b, 64);
}
static void b_ndims(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 5, (int64_t[]){1, 1, 1, 1, 1}, SPRY_GGML_TYPE_F32, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_ndims_short(buf *b) { // long enough for the count check, cut inside n_dims
    hdr(b, 3, 1, 0);
    str(b, "tttttttttttttttttttt");
    zeros(b, 2);
}
static void b_ne_neg(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 2, (int64_t[]){2, -3}, SPRY_GGML_TYPE_F32, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_ne_overflow(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 2, (int64_t[]){1ll << 32, 1ll << 32}, SPRY_GGML_TYPE_F32, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_type4(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 1, (int64_t[]){32}, 4, 0); // Q4_2, removed from ggml
    pad(b, 32);
    zeros(b, 32);
}
static void b_type_neg_t(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 1, (int64_t[]){32}, -1, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_type_future(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 1, (int64_t[]){32}, 1000, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_block(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 2, (int64_t[]){33, 2}, SPRY_GGML_TYPE_Q8_0, 0);
    pad(b, 32);
    zeros(b, 96);
}
static void b_bytes_overflow(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 2, (int64_t[]){1ll << 31, 1ll << 31}, SPRY_GGML_TYPE_F32, 0);
    pad(b, 32);
    zeros(b, 32);
}
static void b_offset_first(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 1, (int64_t[]){4}, SPRY_GGML_TYPE_F32, 32);
    pad(b, 32);
    zeros(b, 64);
}
static void b_offset_unpadded(buf *b) {
    hdr(b, 3, 2, 0);
    tinfo(b, "t0", 1, (int64_t[]){6}, SPRY_GGML_TYPE_F32, 0);
    tinfo(b, "t1", 1, (int64_t[]){6}, SPRY_GGML_TYPE_F32, 24);
    pad(b, 32);
    zeros(b, 64);
}
static void b_offset_custom_align(buf *b) {
    hdr(b, 3, 2, 1);
    kv_u32(b, "general.alignment", 64);
    tinfo(b, "t0", 1, (int64_t[]){6}, SPRY_GGML_TYPE_F32, 0);
    tinfo(b, "t1", 1, (int64_t[]){6}, SPRY_GGML_TYPE_F32, 32);
    pad(b, 64);
    zeros(b, 128);
}
static void b_offset_overlap(buf *b) {
    hdr(b, 3, 2, 0);
    tinfo(b, "t0", 1, (int64_t[]){6}, SPRY_GGML_TYPE_F32, 0);
    tinfo(b, "t1", 1, (int64_t[]){6}, SPRY_GGML_TYPE_F32, 0);
    pad(b, 32);
    zeros(b, 64);
}
static void b_data_short(buf *b) {
    good_file(b);
    b->n -= 40; // inside t1's 34 bytes
}
static void b_data_pad_missing(buf *b) {
    good_file(b);
    b->n -= 10; // t1 complete, its padding cut
}
static void b_data_start(buf *b) {
    hdr(b, 3, 1, 0);
    tinfo(b, "t", 2, (int64_t[]){0, 5}, SPRY_GGML_TYPE_F32, 0); // no bytes, but needs alignment
}

static const bad_case k_bad[] = {
    {"HEADER_EMPTY", b_empty, "magic"},
    {"HEADER_SHORT_MAGIC", b_magic_short, "magic: truncated"},
    {"HEADER_BAD_MAGIC", b_magic, "bad magic"},
    {"HEADER_BAD_VERSION_0", b_version0, "bad version (0)"},
    {"HEADER_BAD_VERSION_1", b_version1, "version (1)"},
    {"HEADER_BAD_VERSION_FUTURE", b_version4, "version (4)"},
    {"HEADER_BAD_VERSION_ENDIAN", b_version_be, "version (0x03000000)"},
    {"HEADER_SHORT_N_TENSORS", b_header_short, "tensor_count: truncated"},
    {"HEADER_SHORT_N_KV", b_kvcount_short, "metadata_kv_count: truncated"},
    {"HEADER_BAD_N_TENSORS_NEG", b_ntensors_neg, "tensor_count (9223372036854775808)"},
    {"HEADER_BAD_N_TENSORS", b_ntensors_big, "tensor_count (1000)"},
    {"HEADER_BAD_N_KV_NEG", b_nkv_neg, "metadata_kv_count (9223372036854775813)"},
    {"HEADER_BAD_N_KV", b_nkv_big, "metadata_kv_count (1000)"},
    {"KV_BAD_KEY_SIZE", b_key_huge, "key of kv 0: string length (1073741825) exceeds the 1 GiB"},
    {"KV_KEY_PAST_END", b_key_past_end, "key of kv 0: string length (500) runs past the end"},
    {"KV_EMPTY_KEY", b_key_empty, "key of kv 0 is empty"},
    {"KV_DUPLICATE_KEY", b_key_dup, "duplicate key 'x.y' (kv 0 and 1)"},
    {"KV_SHORT_TYPE", b_type_short, "value type of kv 0: truncated"},
    {"KV_BAD_TYPE", b_type_bad, "key 'k': unknown value type (13)"},
    {"KV_BAD_TYPE_NEG", b_type_neg, "unknown value type (4294967295)"},
    {"KV_NESTED_ARRAY", b_nested, "key 'k': nested arrays"},
    {"KV_BAD_ARRAY_TYPE", b_elem_bad, "key 'k': unknown array element type (77)"},
    {"KV_ARRAY_TOO_LONG", b_arr_too_long, "array length (1073741825)"},
    {"KV_ARRAY_PAST_END", b_arr_past_end, "key 'k': 100 values of UINT32"},
    {"KV_ARRAY_BYTES_OVERFLOW", b_arr_overflow, "1073741824 values of FLOAT64"},
    {"KV_STRING_ARRAY_PAST_END", b_strarr_past_end, "array of 1000 STRINGs runs past"},
    {"KV_BAD_VALUE_SIZE", b_str_huge, "value of key 'k': string length (1073741825)"},
    {"KV_STRING_ELEMENT_PAST_END", b_str_elem_past_end, "key 'k' element 1: string length (1000)"},
    {"KV_SHORT_VALUE", b_value_short, "key 'k': 1 values of UINT64"},
    {"KV_BAD_ALIGN_TYPE", b_align_type, "general.alignment has the wrong type (UINT64"},
    {"KV_BAD_ALIGN_ZERO", b_align_zero, "general.alignment (0)"},
    {"KV_BAD_ALIGN", b_align_48, "general.alignment (48) is not"},
    {"TENSORS_BAD_NAME_SIZE", b_name_long, "tensor 0: name length (64) must be < 64"},
    {"TENSORS_DUPLICATE_NAME", b_name_dup, "duplicate tensor name 't' (tensors 0 and 1)"},
    {"TENSORS_BAD_N_DIMS", b_ndims, "tensor 't': n_dims (5)"},
    {"TENSORS_SHORT_N_DIMS", b_ndims_short, "n_dims: truncated"},
    {"TENSORS_BAD_SHAPE", b_ne_neg, "tensor 't': ne[1] (-3) is negative"},
    {"TENSORS_NE_TOO_BIG", b_ne_overflow, "tensor 't': element count of ne (4294967296"},
    {"TENSORS_BAD_TYPE", b_type4, "tensor 't': unknown ggml type (4)"},
    {"TENSORS_BAD_TYPE_NEG", b_type_neg_t, "unknown ggml type (-1)"},
    {"TENSORS_BAD_TYPE_FUTURE", b_type_future, "unknown ggml type (1000)"},
    {"TENSORS_BAD_BLOCK", b_block, "ne[0] (33) is not a multiple of the Q8_0 block size (32)"},
    {"TENSORS_BYTES_OVERFLOW", b_bytes_overflow, "tensor 't': byte size"},
    {"TENSORS_BAD_OFFSET", b_offset_first, "tensor 't': offset (32) must be 0"},
    {"TENSORS_BAD_ALIGN", b_offset_unpadded, "tensor 't1': offset (24) must be 32"},
    {"TENSORS_INCONSISTENT_ALIGN", b_offset_custom_align, "tensor 't1': offset (32) must be 64"},
    {"TENSORS_OVERLAP", b_offset_overlap, "tensor 't1': offset (0) must be 32"},
    {"DATA_NOT_ENOUGH_DATA", b_data_short, "tensor 't1': data"},
    {"DATA_NO_FINAL_PADDING", b_data_pad_missing, "padding after the last tensor"},
    {"DATA_BAD_START", b_data_start, "data section start"},
};

static void test_malformed(void) {
    for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; i++) {
        const bad_case *c = &k_bad[i];
        buf b             = {0};
        c->build(&b);
        char fname[96];
        snprintf(fname, sizeof fname, "%s.gguf", c->name);
        const char *path = tpath(fname);
        CHECK(write_bytes(path, b.p, b.n));
        spry_gguf *g   = (spry_gguf *)&b; // must be reset to NULL
        spry_status st = spry_gguf_open(path, &g);
        CHECK_MSG(st == SPRY_ERR_FORMAT && g == NULL && has(path) && has(c->want),
                  "%s: status %s, message: %s", c->name, spry_status_name(st), spry_last_error());
        spry_gguf_close(st == SPRY_OK ? g : NULL);
        // the same bytes from memory, at an odd address (unaligned loads must be fine)
        unsigned char *copy = malloc(b.n + 1);
        if (b.n)
            memcpy(copy + 1, b.p, b.n);
        g  = NULL;
        st = spry_gguf_open_memory(copy + 1, b.n, c->name, &g);
        CHECK_MSG(st == SPRY_ERR_FORMAT && g == NULL && has(c->name) && has(c->want),
                  "%s (memory): status %s, message: %s", c->name, spry_status_name(st),
                  spry_last_error());
        if (st == SPRY_OK)
            spry_gguf_close(g);
        free(copy);
        free(b.p);
        unlink(path);
    }
    spry_gguf *g = NULL;
    CHECK(spry_gguf_open(tpath("does-not-exist.gguf"), &g) == SPRY_ERR_IO && g == NULL);
    CHECK(has("does-not-exist.gguf") && has("No such"));
    CHECK(spry_gguf_open(g_dir, &g) == SPRY_ERR_IO && has("not a regular file"));

    // the limits themselves are accepted: a 63-byte name, 4 dims, version 2, alignment 1
    buf b = {0};
    hdr(&b, 2, 1, 1);
    kv_u32(&b, "general.alignment", 1);
    char name[64];
    memset(name, 'n', 63);
    name[63] = 0;
    tinfo(&b, name, 4, (int64_t[]){1, 1, 1, 3}, SPRY_GGML_TYPE_I8, 0);
    fill(&b, 3, 9);
    CHECK_MSG(spry_gguf_open_memory(b.p, b.n, "limits", &g) == SPRY_OK, "%s", spry_last_error());
    if (g) {
        CHECK(spry_gguf_version(g) == 2 && spry_gguf_alignment(g) == 1);
        CHECK(spry_gguf_find_tensor(g, name) != NULL);
        spry_gguf_close(g);
    }
    free(b.p);
    // a key with an embedded NUL is one key; a name with one is cut there (as ggml does)
    b = (buf){0};
    hdr(&b, 3, 1, 2);
    u64(&b, 3);
    put(&b, "a\0b", 3);
    u32(&b, SPRY_GGUF_TYPE_UINT8);
    put(&b, "\x05", 1);
    kv_u32(&b, "a", 1);
    u64(&b, 3);
    put(&b, "t\0x", 3);
    u32(&b, 1);
    u64(&b, 1);
    u32(&b, SPRY_GGML_TYPE_I8);
    u64(&b, 0);
    pad(&b, 32);
    zeros(&b, 32);
    CHECK_MSG(spry_gguf_open_memory(b.p, b.n, "nul", &g) == SPRY_OK, "%s", spry_last_error());
    if (g) {
        const spry_gguf_kv *kv = spry_gguf_kv_at(g, 0);
        CHECK(kv->key_len == 3 && !memcmp(kv->key, "a\0b", 4));
        CHECK(spry_gguf_find_key(g, "a") == 1);
        CHECK(spry_gguf_find_tensor(g, "t") != NULL);
        spry_gguf_close(g);
    }
    free(b.p);
}

// ---------------------------------------------------------------------------------------------
// 3. Every truncation of a valid file fails cleanly (from a file and from memory)

static void test_truncation(void) {
    buf b = {0};
    good_file(&b);
    const char *path = tpath("trunc.gguf");
    int fails        = 0;
    for (size_t n = 0; n < b.n; n++) {
        spry_gguf *g = NULL;
        // an exact-size heap copy, so ASan catches any read past the end
        unsigned char *copy = malloc(n ? n : 1);
        memcpy(copy, b.p, n);
        spry_status st = spry_gguf_open_memory(copy, n, "trunc-mem", &g);
        if (st != SPRY_ERR_FORMAT || g != NULL || !has("trunc-mem")) {
            fails++;
            fprintf(stderr, "truncation at %zu: %s %s\n", n, spry_status_name(st),
                    spry_last_error());
        }
        spry_gguf_close(g);
        free(copy);
        CHECK(write_bytes(path, b.p, n));
        st = spry_gguf_open(path, &g);
        if (st != SPRY_ERR_FORMAT || g != NULL || !has(path))
            fails++;
        spry_gguf_close(g);
    }
    CHECK_MSG(fails == 0, "%d truncations did not fail cleanly", fails);
    spry_gguf *g = NULL;
    CHECK(spry_gguf_open_memory(b.p, b.n, "full", &g) == SPRY_OK);
    spry_gguf_close(g);
    // trailing bytes after the data section are allowed
    zeros(&b, 5);
    CHECK(spry_gguf_open_memory(b.p, b.n, "trailing", &g) == SPRY_OK);
    spry_gguf_close(g);
    free(b.p);
    unlink(path);
}

// ---------------------------------------------------------------------------------------------
// Writer argument errors

static void test_writer_errors(void) {
    spry_gguf_writer *w;
    CHECK(spry_gguf_writer_init(&w) == SPRY_OK);
    float x[64] = {0};
    CHECK(spry_gguf_set_u32(w, "", 1) == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_u32(w, NULL, 1) == SPRY_ERR_ARG);
    char *longkey = malloc(70000);
    memset(longkey, 'k', 69999);
    longkey[69999] = 0;
    CHECK(spry_gguf_set_u8(w, longkey, 1) == SPRY_ERR_ARG && has("69999"));
    free(longkey);
    CHECK(spry_gguf_set_u64(w, "general.alignment", 32) == SPRY_ERR_ARG);
    CHECK(has("general.alignment must be UINT32, not UINT64"));
    CHECK(spry_gguf_set_str(w, "general.alignment", "32") == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_u32(w, "general.alignment", 48) == SPRY_ERR_ARG && has("(48)"));
    CHECK(spry_gguf_set_u32(w, "general.alignment", 0) == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_arr(w, "k", SPRY_GGUF_TYPE_STRING, x, 1) == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_arr(w, "k", SPRY_GGUF_TYPE_ARRAY, x, 1) == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_arr(w, "k", (spry_gguf_type)99, x, 1) == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_arr(w, "k", SPRY_GGUF_TYPE_UINT8, NULL, 3) == SPRY_ERR_ARG);
    CHECK(spry_gguf_set_arr(w, "k", SPRY_GGUF_TYPE_UINT8, x, (1ull << 30) + 1) == SPRY_ERR_ARG);
    const char *strs[] = {"a", NULL};
    CHECK(spry_gguf_set_arr_str(w, "k", strs, 2) == SPRY_ERR_ARG && has("string 1 is NULL"));
    CHECK(spry_gguf_set_str(w, "k", NULL) == SPRY_ERR_ARG);

    int64_t ne[4] = {4, 2, 1, 1};
    char name[65];
    memset(name, 'n', 64);
    name[64] = 0;
    CHECK(spry_gguf_add_tensor(w, name, SPRY_GGML_TYPE_F32, 1, ne, x) == SPRY_ERR_ARG);
    CHECK(spry_gguf_add_tensor(w, "", SPRY_GGML_TYPE_F32, 1, ne, x) == SPRY_ERR_ARG);
    CHECK(spry_gguf_add_tensor(w, "t", 4, 1, ne, x) == SPRY_ERR_ARG && has("(4)"));
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_F32, 5, ne, x) == SPRY_ERR_ARG);
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_Q8_0, 2, ne, x) == SPRY_ERR_ARG);
    CHECK(has("'t'") && has("block size (32)"));
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_F32, 2, (int64_t[]){2, -1}, x) ==
          SPRY_ERR_ARG);
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_F32, 2, ne, NULL) == SPRY_ERR_ARG);
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_F32, 2, (int64_t[]){1ll << 40, 1ll << 40},
                               x) == SPRY_ERR_ARG);
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_F32, 2, ne, x) == SPRY_OK);
    CHECK(spry_gguf_add_tensor(w, "t", SPRY_GGML_TYPE_F32, 2, ne, x) == SPRY_ERR_ARG);
    CHECK(has("'t' given twice"));
    CHECK(spry_gguf_set_u32(w, "general.alignment", 64) == SPRY_OK);

    // I/O: a missing directory, and a target that is a directory (rename fails)
    const char *nodir = tpath("no/such/dir/x.gguf");
    CHECK(spry_gguf_writer_write(w, nodir) == SPRY_ERR_IO && has(nodir) && has("No such"));
    const char *sub = tpath("subdir");
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(spry_gguf_writer_write(w, sub) == SPRY_ERR_IO && has("rename"));
    CHECK(!dir_has(".tmp."));
    rmdir(sub);
    // the failed calls left w usable, and general.alignment applies
    const char *path = tpath("after_errors.gguf");
    CHECK(spry_gguf_writer_write(w, path) == SPRY_OK);
    spry_gguf *g = NULL;
    CHECK(spry_gguf_open(path, &g) == SPRY_OK && spry_gguf_n_kv(g) == 1);
    CHECK(g && spry_gguf_alignment(g) == 64 && spry_gguf_n_tensors(g) == 1);
    spry_gguf_close(g);
    spry_gguf_writer_free(w);
    spry_gguf_writer_free(NULL);
    spry_gguf_close(NULL);

    // the type tables
    CHECK(spry_ggml_type_info(SPRY_GGML_TYPE_Q8_K)->block_bytes == 292);
    CHECK(spry_ggml_type_info(SPRY_GGML_TYPE_Q4_K)->block == 256);
    CHECK(spry_ggml_type_info(5) == NULL && spry_ggml_type_info(31) == NULL);
    CHECK(!strcmp(spry_gguf_type_name(SPRY_GGUF_TYPE_FLOAT32), "FLOAT32"));
    CHECK(!strcmp(spry_gguf_type_name((spry_gguf_type)42), "?"));
}

// ---------------------------------------------------------------------------------------------
// 4. Models

// Copies a GGUF through the reader and the writer, with optional edits.
typedef struct edit {
    const char *skip_key, *u64_key; // drop a pair / re-type a u32 pair as UINT64
    const char *str_key, *str_val;  // set a string pair
    const char *u32_key;            // set a u32 pair to u32_val
    uint32_t u32_val;
    const char *skip_tensor, *q8_tensor; // drop a tensor / replace it by Q8_0 zeros
    const char *transpose_tensor;        // swap ne[0] and ne[1]
    const char *poke_tensor;             // change its first byte
    const char *extra_tensor;            // append a copy of the first 1-D tensor under this name
} edit;

static spry_status rewrite(const char *src, const char *dst, const edit *e) {
    spry_gguf *g;
    SPRY_TRY(spry_gguf_open(src, &g));
    spry_gguf_writer *w;
    spry_status st = spry_gguf_writer_init(&w);
    void *bufs[4]  = {0};
    int nb         = 0;
    for (int64_t i = 0; !st && i < spry_gguf_n_kv(g); i++) {
        const spry_gguf_kv *kv = spry_gguf_kv_at(g, i);
        const char *k          = kv->key;
        if (e->skip_key && !strcmp(k, e->skip_key))
            continue;
        unsigned char v[8] = {0};
        if (kv->type != SPRY_GGUF_TYPE_ARRAY && kv->type != SPRY_GGUF_TYPE_STRING)
            spry_gguf_kv_elem(kv, 0, v);
        if (e->u64_key && !strcmp(k, e->u64_key)) {
            uint32_t u;
            memcpy(&u, v, 4);
            st = spry_gguf_set_u64(w, k, u);
            continue;
        }
        if (e->str_key && !strcmp(k, e->str_key)) {
            st = spry_gguf_set_str(w, k, e->str_val);
            continue;
        }
        if (e->u32_key && !strcmp(k, e->u32_key)) {
            st = spry_gguf_set_u32(w, k, e->u32_val);
            continue;
        }
        switch (kv->type) {
        case SPRY_GGUF_TYPE_UINT8:
            st = spry_gguf_set_u8(w, k, v[0]);
            break;
        case SPRY_GGUF_TYPE_INT8:
            st = spry_gguf_set_i8(w, k, (int8_t)v[0]);
            break;
        case SPRY_GGUF_TYPE_BOOL:
            st = spry_gguf_set_bool(w, k, v[0] != 0);
            break;
        case SPRY_GGUF_TYPE_UINT16: {
            uint16_t x;
            memcpy(&x, v, 2);
            st = spry_gguf_set_u16(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_INT16: {
            int16_t x;
            memcpy(&x, v, 2);
            st = spry_gguf_set_i16(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_UINT32: {
            uint32_t x;
            memcpy(&x, v, 4);
            st = spry_gguf_set_u32(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_INT32: {
            int32_t x;
            memcpy(&x, v, 4);
            st = spry_gguf_set_i32(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_FLOAT32: {
            float x;
            memcpy(&x, v, 4);
            st = spry_gguf_set_f32(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_UINT64: {
            uint64_t x;
            memcpy(&x, v, 8);
            st = spry_gguf_set_u64(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_INT64: {
            int64_t x;
            memcpy(&x, v, 8);
            st = spry_gguf_set_i64(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_FLOAT64: {
            double x;
            memcpy(&x, v, 8);
            st = spry_gguf_set_f64(w, k, x);
        } break;
        case SPRY_GGUF_TYPE_STRING:
            st = spry_gguf_set_str(w, k, kv->str[0]);
            break;
        case SPRY_GGUF_TYPE_ARRAY:
            if (kv->elem_type == SPRY_GGUF_TYPE_STRING)
                st = spry_gguf_set_arr_str(w, k, kv->str, kv->n);
            else
                st = spry_gguf_set_arr(w, k, kv->elem_type, kv->data, kv->n);
            break;
        default:
            st = SPRY_ERR_FORMAT;
            break;
        }
    }
    const spry_gguf_tensor *first_1d = NULL;
    for (int64_t i = 0; !st && i < spry_gguf_n_tensors(g); i++) {
        const spry_gguf_tensor *t = spry_gguf_tensor_at(g, i);
        if (e->skip_tensor && !strcmp(t->name, e->skip_tensor))
            continue;
        if (!first_1d && t->n_dims == 1)
            first_1d = t;
        int64_t ne[4];
        int type         = t->type;
        const void *data = t->data;
        memcpy(ne, t->ne, sizeof ne);
        if (e->q8_tensor && !strcmp(t->name, e->q8_tensor)) { // a quantized type spry cannot read
            type     = SPRY_GGML_TYPE_Q4_1;
            bufs[nb] = calloc((size_t)(t->numel / 32 * 20) + 1, 1);
            data     = bufs[nb++];
        }
        if (e->transpose_tensor && !strcmp(t->name, e->transpose_tensor)) {
            ne[0] = t->ne[1];
            ne[1] = t->ne[0];
        }
        if (e->poke_tensor && !strcmp(t->name, e->poke_tensor)) {
            unsigned char *p = malloc(t->nbytes);
            memcpy(p, t->data, t->nbytes);
            p[0] ^= 0x55;
            bufs[nb++] = p;
            data       = p;
        }
        st = spry_gguf_add_tensor(w, t->name, type, t->n_dims, ne, data);
    }
    if (!st && e->extra_tensor && first_1d)
        st = spry_gguf_add_tensor(w, e->extra_tensor, first_1d->type, 1, first_1d->ne,
                                  first_1d->data);
    if (!st)
        st = spry_gguf_writer_write(w, dst);
    spry_gguf_writer_free(w);
    spry_gguf_close(g);
    for (int i = 0; i < nb; i++)
        free(bufs[i]);
    return st;
}

// The key table of the notes (section 2.2): name and type, per architecture.
static void check_keys(const spry_gguf *g, const spry_model *m, uint32_t ftype, int64_t ctx) {
    const spry_model_config *c = &m->cfg;
    bool bl                    = c->arch == SPRY_ARCH_BLOOM;
    const char *arch = bl ? "bloom" : "gpt2", *s = NULL;
    CHECK(spry_gguf_get_str(g, "general.architecture", &s, NULL) == SPRY_OK && !strcmp(s, arch));
    uint32_t u = 99;
    CHECK(spry_gguf_get_u32(g, "general.file_type", &u) == SPRY_OK && u == ftype);
    CHECK(spry_gguf_find_key(g, "general.quantization_version") < 0); // nothing quantized
    struct {
        const char *k;
        int64_t v;
    } hp[] = {{"context_length", ctx},
              {"embedding_length", c->n_embd},
              {"feed_forward_length", c->n_inner},
              {"block_count", c->n_layer},
              {"attention.head_count", c->n_head},
              {"attention.head_count_kv", bl ? c->n_head : -1}};
    char key[96];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, hp[i].k);
        if (hp[i].v < 0) {
            CHECK(spry_gguf_find_key(g, key) < 0);
            continue;
        }
        CHECK_MSG(spry_gguf_get_u32(g, key, &u) == SPRY_OK && u == (uint32_t)hp[i].v, "%s: %s", key,
                  spry_last_error());
    }
    float eps = 0;
    snprintf(key, sizeof key, "%s.attention.layer_norm_epsilon", arch);
    CHECK(spry_gguf_get_f32(g, key, &eps) == SPRY_OK && eps == c->layer_norm_eps);
    CHECK(spry_gguf_version(g) == 3 && spry_gguf_alignment(g) == 32);
}

// The tensor table of the notes: name, ne (innermost first), type.
static void check_tensors(const spry_gguf *g, const spry_model *m, int wtype) {
    const spry_model_config *c = &m->cfg;
    bool bl                    = c->arch == SPRY_ARCH_BLOOM;
    int64_t C = c->n_embd, V = c->vocab_size, I = c->n_inner, P = c->n_positions;
    typedef struct {
        char name[64];
        int64_t ne0, ne1; // ne1 = 0: a 1-D tensor
    } row;
    row rows[64];
    int n = 0;
#define ROW(a, b, ...)                                                                             \
    do {                                                                                           \
        snprintf(rows[n].name, 64, __VA_ARGS__);                                                   \
        rows[n].ne0 = (a), rows[n].ne1 = (b), n++;                                                 \
    } while (0)
    ROW(C, V, "token_embd.weight");
    if (bl) {
        ROW(C, 0, "token_embd_norm.weight");
        ROW(C, 0, "token_embd_norm.bias");
    } else {
        ROW(C, P, "position_embd.weight");
    }
    ROW(C, 0, "output_norm.weight");
    ROW(C, 0, "output_norm.bias");
    ROW(C, V, "output.weight");
    for (int l = 0; l < (int)c->n_layer; l++) {
        ROW(C, 0, "blk.%d.attn_norm.weight", l);
        ROW(C, 0, "blk.%d.attn_norm.bias", l);
        ROW(C, 3 * C, "blk.%d.attn_qkv.weight", l);
        ROW(3 * C, 0, "blk.%d.attn_qkv.bias", l);
        ROW(C, C, "blk.%d.attn_output.weight", l);
        ROW(C, 0, "blk.%d.attn_output.bias", l);
        ROW(C, 0, "blk.%d.ffn_norm.weight", l);
        ROW(C, 0, "blk.%d.ffn_norm.bias", l);
        ROW(C, I, "blk.%d.ffn_up.weight", l);
        ROW(I, 0, "blk.%d.ffn_up.bias", l);
        ROW(I, C, "blk.%d.ffn_down.weight", l);
        ROW(C, 0, "blk.%d.ffn_down.bias", l);
    }
#undef ROW
    CHECK(spry_gguf_n_tensors(g) == n);
    for (int i = 0; i < n; i++) {
        const spry_gguf_tensor *t = spry_gguf_find_tensor(g, rows[i].name);
        CHECK_MSG(t != NULL, "%s missing", rows[i].name);
        if (!t)
            continue;
        bool two = rows[i].ne1 > 0;
        CHECK_MSG(t->n_dims == (two ? 2u : 1u) && t->ne[0] == rows[i].ne0 &&
                      t->ne[1] == (two ? rows[i].ne1 : 1) && t->ne[2] == 1 && t->ne[3] == 1,
                  "%s: n_dims %u ne (%lld, %lld)", t->name, t->n_dims, (long long)t->ne[0],
                  (long long)t->ne[1]);
        CHECK_MSG(t->type == (two ? wtype : SPRY_GGML_TYPE_F32), "%s: type %d", t->name, t->type);
    }
}

// The F32 file's data: GPT-2 matrices as spry holds them, BLOOM's QKV re-ordered.
static void check_data(const spry_gguf *g, const spry_model *m) {
    const spry_tensor *te      = m->wte;
    const spry_gguf_tensor *t  = spry_gguf_find_tensor(g, "token_embd.weight");
    const spry_gguf_tensor *to = spry_gguf_find_tensor(g, "output.weight");
    CHECK(t && to && !memcmp(t->data, te->data, spry_tensor_nbytes(te)));
    CHECK(t && to && !memcmp(to->data, te->data, spry_tensor_nbytes(te)));
    int64_t C = m->cfg.n_embd, H = m->cfg.n_head, D = C / H;
    for (int l = 0; l < (int)m->cfg.n_layer; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", l);
        const spry_gguf_tensor *qw = spry_gguf_find_tensor(g, name);
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", l);
        const spry_gguf_tensor *qb = spry_gguf_find_tensor(g, name);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        const spry_gguf_tensor *fd = spry_gguf_find_tensor(g, name);
        if (!qw || !qb || !fd)
            continue;
        const float *w = m->blocks[l].qkv_w->data, *b = m->blocks[l].qkv_b->data;
        const float *gw = qw->data, *gb = qb->data;
        CHECK(!memcmp(fd->data, m->blocks[l].fc2_w->data, spry_tensor_nbytes(m->blocks[l].fc2_w)));
        if (m->cfg.arch == SPRY_ARCH_GPT2) { // spry's (3C, C) rows are already [Q; K; V]
            CHECK(!memcmp(gw, w, sizeof(float) * (size_t)(3 * C * C)));
            CHECK(!memcmp(gb, b, sizeof(float) * (size_t)(3 * C)));
            continue;
        }
        int bad = 0; // GGUF row j*C + h*D + d is spry row h*3D + j*D + d
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < 3; j++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t rg = j * C + h * D + d, rs = h * 3 * D + j * D + d;
                    bad += memcmp(gw + rg * C, w + rs * C, sizeof(float) * (size_t)C) != 0;
                    bad += gb[rg] != b[rs];
                }
        CHECK_MSG(bad == 0, "layer %d: %d QKV rows out of place", l, bad);
    }
}

static spry_model *tiny_model(spry_arch arch, int64_t V, int64_t L, uint64_t seed) {
    spry_model_config cfg = spry_model_config_gpt2(V, 23, 48, L, 3);
    cfg.n_inner           = 160; // not 4C; a multiple of 32 (the Q8_0 edit below)
    if (arch == SPRY_ARCH_BLOOM) {
        cfg.arch        = SPRY_ARCH_BLOOM;
        cfg.n_positions = 0;
    }
    spry_model *m = NULL;
    if (spry_model_init(&cfg, &m) != SPRY_OK)
        return NULL;
    spry_model_init_weights(m, seed);
    // non-trivial norms and biases, so a swapped bias or norm shows
    for (int64_t i = 0; i < m->params.n_items; i++) {
        spry_tensor *t = &m->params.items[i].t;
        if (t->ndim != 1)
            continue;
        float *p = t->data;
        for (int64_t k = 0; k < t->shape[0]; k++)
            p[k] += 0.01f * (float)((k * 7 + i) % 13);
    }
    return m;
}

static void test_model(spry_arch arch, int wtype) {
    bool bl       = arch == SPRY_ARCH_BLOOM;
    spry_model *m = tiny_model(arch, 97, 2, bl ? 11 : 7);
    CHECK(m != NULL);
    if (!m)
        return;
    char name[64];
    snprintf(name, sizeof name, "%s_%d.gguf", bl ? "bloom" : "gpt2", wtype);
    const char *path          = tpath(name);
    spry_gguf_export_params p = spry_gguf_export_params_default();
    p.wtype                   = wtype;
    p.context_length          = 77; // BLOOM only
    CHECK_MSG(spry_gguf_export_model(m, path, &p) == SPRY_OK, "%s", spry_last_error());
    spry_gguf *g = NULL;
    CHECK_MSG(spry_gguf_open(path, &g) == SPRY_OK, "%s", spry_last_error());
    if (g) {
        uint32_t ftype = wtype == SPRY_GGML_TYPE_F32 ? 0 : wtype == SPRY_GGML_TYPE_F16 ? 1 : 32;
        check_keys(g, m, ftype, bl ? 77 : m->cfg.n_positions);
        check_tensors(g, m, wtype);
        if (wtype == SPRY_GGML_TYPE_F32)
            check_data(g, m);
        CHECK(spry_gguf_find_key(g, "tokenizer.ggml.model") < 0); // no tokenizer given
        spry_gguf_close(g);
    }
    spry_model *r = NULL;
    CHECK_MSG(spry_gguf_import_model(path, &r) == SPRY_OK, "%s", spry_last_error());
    if (r) {
        const spry_model_config *a = &m->cfg, *b = &r->cfg;
        CHECK(a->arch == b->arch && a->vocab_size == b->vocab_size && a->n_embd == b->n_embd);
        CHECK(a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_inner == b->n_inner);
        CHECK(a->n_positions == b->n_positions && a->layer_norm_eps == b->layer_norm_eps);
        CHECK(r->params.n_items == m->params.n_items && r->params.n_elem == m->params.n_elem);
        int bad = 0;
        for (int64_t i = 0; i < m->params.n_items && r->params.n_items == m->params.n_items; i++) {
            const spry_tensor *x = &m->params.items[i].t, *y = &r->params.items[i].t;
            int64_t n = spry_tensor_numel(x);
            CHECK(!strcmp(x->name, y->name) && spry_tensor_same_shape(x, y));
            float *want = malloc(sizeof(float) * (size_t)n);
            if (x->ndim == 2 && wtype == SPRY_GGML_TYPE_F16)
                spry_round_f16(x->data, want, n);
            else if (x->ndim == 2 && wtype == SPRY_GGML_TYPE_BF16)
                for (int64_t k = 0; k < n; k++)
                    want[k] = spry_bf16_to_f32(spry_f32_to_bf16(((float *)x->data)[k]));
            else
                memcpy(want, x->data, sizeof(float) * (size_t)n);
            if (memcmp(want, y->data, sizeof(float) * (size_t)n)) {
                bad++;
                fprintf(stderr, "param %s differs after the round trip\n", x->name);
            }
            free(want);
        }
        CHECK(bad == 0);
        spry_model_free(r);
    }
    // reader -> writer copies byte for byte
    if (wtype == SPRY_GGML_TYPE_F32) {
        const char *copy = tpath("copy.gguf");
        edit e           = {0};
        CHECK(rewrite(path, copy, &e) == SPRY_OK);
        size_t na, nb;
        unsigned char *a = read_bytes(path, &na), *b = read_bytes(copy, &nb);
        CHECK(a && b && na == nb && !memcmp(a, b, na));
        free(a);
        free(b);
    }
    spry_model_free(m);
}

static spry_tokenizer *tiny_tokenizer(bool bloom) {
    static const char text[] =
        "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs "
        "over and over again, quicker than the brown dog, the lazy one. Über naïve café! "
        "1234 5678 the the the fox fox dog dog over over lazy lazy brown brown quick.";
    const char *texts[]           = {text};
    size_t lens[]                 = {sizeof text - 1};
    const char *sp_gpt2[]         = {"<|endoftext|>"};
    const char *sp_bloom[]        = {"<unk>", "<s>", "</s>", "<pad>"};
    spry_tokenizer_train_params p = spry_tokenizer_train_params_default();
    p.vocab_size                  = 290;
    p.special                     = bloom ? sp_bloom : sp_gpt2;
    p.n_special                   = bloom ? 4 : 1;
    spry_tokenizer *tok           = NULL;
    if (spry_tokenizer_train(texts, lens, 1, &p, &tok) != SPRY_OK)
        return NULL;
    return tok;
}

static void test_tokenizer_keys(bool bloom) {
    spry_tokenizer *tok = tiny_tokenizer(bloom);
    CHECK_MSG(tok != NULL, "%s", spry_last_error());
    spry_model *m = tiny_model(bloom ? SPRY_ARCH_BLOOM : SPRY_ARCH_GPT2, 300, 1, 3);
    if (!tok || !m) {
        spry_tokenizer_free(tok);
        spry_model_free(m);
        return;
    }
    const char *path          = tpath(bloom ? "bloom_tok.gguf" : "gpt2_tok.gguf");
    spry_gguf_export_params p = spry_gguf_export_params_default();
    p.tok                     = tok;
    p.name                    = "tiny";
    CHECK_MSG(spry_gguf_export_model(m, path, &p) == SPRY_OK, "%s", spry_last_error());
    CHECK(!dir_has(".tok.") && !dir_has(".tmp."));
    spry_gguf *g = NULL;
    CHECK_MSG(spry_gguf_open(path, &g) == SPRY_OK, "%s", spry_last_error());
    if (g) {
        const char *s = NULL;
        CHECK(spry_gguf_get_str(g, "general.name", &s, NULL) == SPRY_OK && !strcmp(s, "tiny"));
        CHECK(spry_gguf_get_str(g, "tokenizer.ggml.model", &s, NULL) == SPRY_OK &&
              !strcmp(s, "gpt2"));
        CHECK(spry_gguf_get_str(g, "tokenizer.ggml.pre", &s, NULL) == SPRY_OK &&
              !strcmp(s, bloom ? "bloom" : "gpt-2"));
        const spry_gguf_kv *toks = NULL, *types = NULL, *merges = NULL;
        CHECK(spry_gguf_get_arr(g, "tokenizer.ggml.tokens", SPRY_GGUF_TYPE_STRING, &toks) ==
              SPRY_OK);
        CHECK(spry_gguf_get_arr(g, "tokenizer.ggml.token_type", SPRY_GGUF_TYPE_INT32, &types) ==
              SPRY_OK);
        CHECK(spry_gguf_get_arr(g, "tokenizer.ggml.merges", SPRY_GGUF_TYPE_STRING, &merges) ==
              SPRY_OK);
        int32_t nv = spry_tokenizer_n_vocab(tok);
        if (toks && types && merges) {
            CHECK(toks->n == 300 && types->n == 300 && nv <= 300 && nv > 256);
            int bad = 0;
            for (int32_t id = 0; id < 300; id++) {
                const char *k = id < nv ? spry_tokenizer_vocab_key(tok, id) : NULL;
                char padname[32];
                snprintf(padname, sizeof padname, "[PAD%d]", id);
                int32_t want = !k ? 5 : spry_tokenizer_is_special(tok, id) ? 3 : 1;
                bad += strcmp(spry_gguf_kv_str(toks, (uint64_t)id, NULL), k ? k : padname) != 0;
                bad += spry_gguf_kv_i32(types, (uint64_t)id) != want;
            }
            CHECK_MSG(bad == 0, "%d token / token_type mismatches", bad);
            CHECK(merges->n == (uint64_t)spry_tokenizer_n_merges(tok) && merges->n > 10);
            bad = 0;
            for (uint64_t r = 0; r < merges->n; r++) { // "a b": a, b and ab are tokens
                char ab[256];
                const char *mstr = spry_gguf_kv_str(merges, r, NULL);
                const char *sp   = strchr(mstr + 1, ' ');
                if (!sp || strlen(mstr) >= sizeof ab) {
                    bad++;
                    continue;
                }
                char a[256];
                memcpy(a, mstr, (size_t)(sp - mstr));
                a[sp - mstr] = 0;
                snprintf(ab, sizeof ab, "%s%s", a, sp + 1);
                bad += spry_tokenizer_vocab_id(tok, a) < 0 ||
                       spry_tokenizer_vocab_id(tok, sp + 1) < 0 ||
                       spry_tokenizer_vocab_id(tok, ab) < 0;
            }
            CHECK_MSG(bad == 0, "%d malformed merges", bad);
        }
        uint32_t bos = 99, eos = 99, unk = 99, padid = 99;
        CHECK(spry_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &bos) == SPRY_OK);
        CHECK(spry_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos) == SPRY_OK);
        if (bloom) { // the notes' table: 1 / 2, unknown 0, padding 3
            CHECK(bos == 1 && eos == 2);
            CHECK(spry_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &unk) == SPRY_OK &&
                  unk == 0);
            CHECK(spry_gguf_get_u32(g, "tokenizer.ggml.padding_token_id", &padid) == SPRY_OK &&
                  padid == 3);
        } else {
            int32_t eot = spry_tokenizer_special_id(tok, "<|endoftext|>");
            CHECK(eot >= 0 && bos == (uint32_t)eot && eos == (uint32_t)eot);
            CHECK(spry_gguf_find_key(g, "tokenizer.ggml.unknown_token_id") < 0);
        }
        spry_gguf_close(g);
    }
    spry_model *r = NULL; // the tokenizer keys do not disturb the import
    CHECK_MSG(spry_gguf_import_model(path, &r) == SPRY_OK, "%s", spry_last_error());
    CHECK(r && r->cfg.vocab_size == 300);
    spry_model_free(r);

    // explicit ids; a tokenizer larger than the model is refused
    p.bos_id = 5;
    p.eos_id = 6;
    CHECK(spry_gguf_export_model(m, path, &p) == SPRY_OK);
    g          = NULL;
    uint32_t v = 0;
    CHECK(spry_gguf_open(path, &g) == SPRY_OK);
    CHECK(g && spry_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &v) == SPRY_OK && v == 5);
    CHECK(g && spry_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &v) == SPRY_OK && v == 6);
    spry_gguf_close(g);
    p.eos_id = 300;
    CHECK(spry_gguf_export_model(m, path, &p) == SPRY_ERR_ARG && has("eos_token_id (300)"));
    spry_model_free(m);
    m        = tiny_model(bloom ? SPRY_ARCH_BLOOM : SPRY_ARCH_GPT2, 200, 1, 3);
    p.eos_id = -1;
    CHECK(m && spry_gguf_export_model(m, tpath("small_vocab.gguf"), &p) == SPRY_ERR_ARG);
    CHECK(has("vocab_size (200)"));
    p.tok   = NULL;
    p.wtype = SPRY_GGML_TYPE_Q8_0;
    CHECK(m && spry_gguf_export_model(m, tpath("q8.gguf"), &p) == SPRY_ERR_ARG && has("multiples of 32"));
    CHECK(!dir_has(".tok.") && !dir_has(".tmp."));
    spry_model_free(m);
    spry_tokenizer_free(tok);
}

// Import errors, each on an edited copy of an exported file.
static void test_import_errors(void) {
    spry_model *m  = tiny_model(SPRY_ARCH_GPT2, 97, 2, 5);
    spry_model *mb = tiny_model(SPRY_ARCH_BLOOM, 97, 2, 5);
    char src[400], bsrc[400]; // own copies: tpath's buffers are reused
    snprintf(src, sizeof src, "%s", tpath("imp_src.gguf"));
    snprintf(bsrc, sizeof bsrc, "%s", tpath("imp_bloom.gguf"));
    CHECK(m && mb && spry_gguf_export_model(m, src, NULL) == SPRY_OK);
    CHECK(spry_gguf_export_model(mb, bsrc, NULL) == SPRY_OK);
    spry_model_free(m);
    spry_model_free(mb);
    struct {
        const char *what;
        bool bloom;
        edit e;
        spry_status want;
        const char *msg1, *msg2;
    } cases[] = {
        {"u64 hparam",
         false,
         {.u64_key = "gpt2.block_count"},
         SPRY_ERR_FORMAT,
         "'gpt2.block_count' has the wrong type (UINT64, expected UINT32)",
         NULL},
        {"missing hparam",
         false,
         {.skip_key = "gpt2.embedding_length"},
         SPRY_ERR_FORMAT,
         "'gpt2.embedding_length' not found",
         NULL},
        {"missing eps",
         false,
         {.skip_key = "gpt2.attention.layer_norm_epsilon"},
         SPRY_ERR_FORMAT,
         "gpt2.attention.layer_norm_epsilon",
         "not found"},
        {"missing arch",
         false,
         {.skip_key = "general.architecture"},
         SPRY_ERR_FORMAT,
         "general.architecture",
         "not found"},
        {"other arch",
         false,
         {.str_key = "general.architecture", .str_val = "llama"},
         SPRY_ERR_UNSUPPORTED,
         "('llama')",
         NULL},
        {"missing tensor",
         false,
         {.skip_tensor = "blk.1.ffn_norm.bias"},
         SPRY_ERR_FORMAT,
         "tensor 'blk.1.ffn_norm.bias' not found",
         NULL},
        {"missing embedding",
         false,
         {.skip_tensor = "token_embd.weight"},
         SPRY_ERR_FORMAT,
         "'token_embd.weight' not found",
         NULL},
        {"transposed",
         false,
         {.transpose_tensor = "blk.0.ffn_up.weight"},
         SPRY_ERR_FORMAT,
         "tensor 'blk.0.ffn_up.weight' has ne (160, 48",
         NULL},
        {"quantized",
         false,
         {.q8_tensor = "blk.0.ffn_down.weight"},
         SPRY_ERR_UNSUPPORTED,
         "'blk.0.ffn_down.weight' has type Q4_1",
         NULL},
        {"untied",
         false,
         {.poke_tensor = "output.weight"},
         SPRY_ERR_UNSUPPORTED,
         "'output.weight' differs",
         NULL},
        {"extra tensor",
         false,
         {.extra_tensor = "blk.2.attn_norm.weight"},
         SPRY_ERR_FORMAT,
         "unexpected tensor 'blk.2.attn_norm.weight'",
         NULL},
        {"bad context",
         false,
         {.u32_key = "gpt2.context_length", .u32_val = 24},
         SPRY_ERR_FORMAT,
         "'position_embd.weight' has ne (48, 23",
         NULL},
        {"bad heads",
         false,
         {.u32_key = "gpt2.attention.head_count", .u32_val = 5},
         SPRY_ERR_CONFIG,
         "n_head",
         NULL},
        {"gqa",
         true,
         {.u32_key = "bloom.attention.head_count_kv", .u32_val = 1},
         SPRY_ERR_UNSUPPORTED,
         "bloom.attention.head_count_kv (1)",
         NULL},
        {"bloom no emb norm",
         true,
         {.skip_tensor = "token_embd_norm.bias"},
         SPRY_ERR_FORMAT,
         "'token_embd_norm.bias' not found",
         NULL},
        {"no output", false, {.skip_tensor = "output.weight"}, SPRY_OK, NULL, NULL},
        {"bloom no output", true, {.skip_tensor = "output.weight"}, SPRY_OK, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *dst = tpath("imp_edit.gguf");
        CHECK_MSG(rewrite(cases[i].bloom ? bsrc : src, dst, &cases[i].e) == SPRY_OK, "%s: %s",
                  cases[i].what, spry_last_error());
        spry_model *r  = (spry_model *)&cases[i]; // must be reset to NULL
        spry_status st = spry_gguf_import_model(dst, &r);
        bool ok        = st == cases[i].want && (st != SPRY_OK) == (r == NULL);
        if (st != SPRY_OK)
            ok = ok && has(dst) && has(cases[i].msg1) && (!cases[i].msg2 || has(cases[i].msg2));
        CHECK_MSG(ok, "%s: status %s, message: %s", cases[i].what, spry_status_name(st),
                  spry_last_error());
        if (st == SPRY_OK)
            spry_model_free(r);
    }
    spry_model *r = NULL;
    CHECK(spry_gguf_import_model(tpath("nope.gguf"), &r) == SPRY_ERR_IO && r == NULL);
}

// Q8_0 / Q4_0 export: keys (file_type 7 / 2, quantization_version 2), tensor types (matrices and
// token_embd quantized; norms, biases and position_embd F32), import within the format's error,
// and quantize(import(file)) == the file's blocks byte for byte (the engine's requantization of
// an imported model is exact).
static void test_quantized(spry_arch arch, int wtype) {
    spry_model_config c = spry_model_config_gpt2(97, 32, 64, 2, 4);
    if (arch == SPRY_ARCH_BLOOM) c.arch = SPRY_ARCH_BLOOM, c.n_positions = 0;
    spry_model *m = NULL;
    CHECK(spry_model_init(&c, &m) == SPRY_OK);
    if (!m) return;
    spry_model_init_weights(m, 5);
    spry_wfmt fmt = wtype == SPRY_GGML_TYPE_Q8_0 ? SPRY_WFMT_Q8_0 : SPRY_WFMT_Q4_0;
    char      name[64];
    snprintf(name, sizeof name, "%s_%s.gguf", arch == SPRY_ARCH_BLOOM ? "bloom" : "gpt2", spry_wfmt_name(fmt));
    const char             *path = tpath(name);
    spry_gguf_export_params p    = spry_gguf_export_params_default();
    p.wtype                      = wtype;
    CHECK_MSG(spry_gguf_export_model(m, path, &p) == SPRY_OK, "%s", spry_last_error());
    spry_gguf *g = NULL;
    CHECK(spry_gguf_open(path, &g) == SPRY_OK);
    spry_model *r = NULL;
    CHECK_MSG(spry_gguf_import_model(path, &r) == SPRY_OK, "%s", spry_last_error());
    if (!g || !r) {
        spry_gguf_close(g), spry_model_free(r), spry_model_free(m);
        return;
    }
    uint32_t v = 0;
    CHECK(spry_gguf_get_u32(g, "general.file_type", &v) == SPRY_OK && v == (fmt == SPRY_WFMT_Q8_0 ? 7u : 2u));
    CHECK(spry_gguf_get_u32(g, "general.quantization_version", &v) == SPRY_OK && v == 2);
    int bad_type = 0, bad_bytes = 0;
    for (int64_t i = 0; i < spry_gguf_n_tensors(g); i++) {
        const spry_gguf_tensor *t = spry_gguf_tensor_at(g, i);
        bool want_q = t->n_dims == 2 && strcmp(t->name, "position_embd.weight");
        if ((t->type == wtype) != want_q) bad_type++;
        if (!want_q) continue;
        // the imported f32 values quantize back to the file's blocks
        const char *nm  = t->name;
        float      *f   = malloc(sizeof(float) * (size_t)t->numel);
        void       *q   = malloc(t->nbytes);
        CHECK(spry_dequantize_rows(fmt, t->data, f, t->ne[1], t->ne[0]) == SPRY_OK);
        CHECK(spry_quantize_rows(fmt, f, q, t->ne[1], t->ne[0], 1) == SPRY_OK);
        if (memcmp(q, t->data, t->nbytes)) bad_bytes++, fprintf(stderr, "%s: requantized blocks differ\n", nm);
        free(f), free(q);
    }
    CHECK_MSG(bad_type == 0, "%d tensors of the wrong type", bad_type);
    CHECK(bad_bytes == 0);
    // imported parameters are within half a quantization step of the originals (per block)
    double worst = 0;
    for (int64_t i = 0; i < m->params.n_elem; i++) {
        double d = fabs((double)m->params.values[i] - r->params.values[i]);
        worst    = d > worst ? d : worst;
    }
    double step = fmt == SPRY_WFMT_Q8_0 ? 1.0 / 127 : 1.0 / 8; // of each block's max |x|
    CHECK_MSG(worst <= 0.6 * step * 0.2, "worst import error %.3g", worst); // |x| < 0.2 here
    printf("%s %s: file_type, quantization_version, tensor types ok; worst import error %.2e; requantized "
           "blocks identical\n", arch == SPRY_ARCH_BLOOM ? "bloom" : "gpt2", spry_wfmt_name(fmt), worst);
    // an engine reading the matrices in place from the mapping (and releasing the model's copies)
    // scores exactly as one that converts the imported model
    int64_t      L = c.n_layer, V = c.vocab_size;
    const void **rows = calloc((size_t)(4 * L + 1), sizeof *rows);
    spry_model  *r2   = NULL;
    CHECK(spry_gguf_import_model(path, &r2) == SPRY_OK);
    int64_t n_mapped = rows && r2 ? spry_gguf_engine_rows(g, r2, fmt, rows) : -1;
    CHECK_MSG(n_mapped == (arch == SPRY_ARCH_BLOOM ? 3 * L + 1 : 4 * L + 1), "%lld matrices mapped", (long long)n_mapped);
    CHECK(spry_gguf_engine_rows(g, r2, SPRY_WFMT_BF16, rows) == 0 && rows[0] == NULL); // only Q8_0/Q4_0 in place
    if (r2) spry_gguf_engine_rows(g, r2, fmt, rows);
    spry_engine_params ep = spry_engine_params_default();
    ep.weight_format      = fmt, ep.n_threads = 1;
    spry_engine *e1 = NULL, *e2 = NULL;
    CHECK(spry_engine_init(r, &ep, &e1) == SPRY_OK);
    ep.mapped_rows = rows, ep.release_model_matrices = true;
    CHECK(r2 && spry_engine_init(r2, &ep, &e2) == SPRY_OK);
    int32_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = (int32_t)((i * 37 + 5) % V);
    float *l1 = malloc(sizeof(float) * 12 * (size_t)V), *l2 = malloc(sizeof(float) * 12 * (size_t)V);
    if (e1 && e2 && l1 && l2) {
        CHECK(spry_engine_score(e1, ids, 12, l1) == SPRY_OK && spry_engine_score(e2, ids, 12, l2) == SPRY_OK);
        CHECK_MSG(!memcmp(l1, l2, sizeof(float) * 12 * (size_t)V), "mapped %s logits differ", spry_wfmt_name(fmt));
        // the model's MLP matrix (256 x 64 floats) gave its whole pages back: they read as zeros
        const float *fw = r2->blocks[0].fc_w->data;
        long         page = sysconf(_SC_PAGESIZE) / 4, zero = 0;
        for (long k = page; k < 2 * page; k++) zero += fw[k] == 0.0f;
        CHECK_MSG(zero == page, "%ld of a released page's %ld values are zero", zero, page);
    }
    free(l1), free(l2), free(rows);
    spry_engine_free(e1), spry_engine_free(e2);
    spry_model_free(r2);
    spry_gguf_close(g);
    spry_model_free(r);
    spry_model_free(m);
}

static void remove_dir(void) {
    DIR *d = opendir(g_dir);
    if (!d)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        unlink(tpath(de->d_name));
    }
    closedir(d);
    rmdir(g_dir);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/spry_gguf_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_value_round_trip();
    test_tensor_round_trip();
    test_cross_check();
    test_malformed();
    test_truncation();
    test_writer_errors();
    test_model(SPRY_ARCH_GPT2, SPRY_GGML_TYPE_F32);
    test_model(SPRY_ARCH_BLOOM, SPRY_GGML_TYPE_F32);
    test_model(SPRY_ARCH_GPT2, SPRY_GGML_TYPE_F16);
    test_model(SPRY_ARCH_BLOOM, SPRY_GGML_TYPE_F16);
    test_model(SPRY_ARCH_BLOOM, SPRY_GGML_TYPE_BF16);
    test_tokenizer_keys(false);
    test_tokenizer_keys(true);
    test_import_errors();
    test_quantized(SPRY_ARCH_GPT2, SPRY_GGML_TYPE_Q8_0);
    test_quantized(SPRY_ARCH_GPT2, SPRY_GGML_TYPE_Q4_0);
    test_quantized(SPRY_ARCH_BLOOM, SPRY_GGML_TYPE_Q8_0);
    test_quantized(SPRY_ARCH_BLOOM, SPRY_GGML_TYPE_Q4_0);
    remove_dir();
    return check_exit();
}
