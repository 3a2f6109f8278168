// ctest-label: unit
/*
 * test_safetensors.c -- round trips through spry_safetensors_write / _open, and one malformed
 * file per error kind of the reference reader (safetensors/src/tensor.rs tests: header too
 * small/large, invalid header length, not UTF-8, not JSON, invalid info, overflow, overlapping
 * offsets ("json attack"), incomplete buffer / polyglot trailing bytes, duplicate keys, bad
 * metadata), each built byte by byte in a mkdtemp directory and checked for the status and for
 * the offending name/value in spry_last_error().
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spry/safetensors.h"

static int g_fail;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__,      \
                    #cond, spry_last_error());                                                     \
            g_fail = 1;                                                                            \
        }                                                                                          \
    } while (0)

static char g_dir[64];

// g_dir/name in a static buffer (two slots, so two paths can be live at once).
static const char *tpath(const char *name) {
    static char buf[2][384]; // g_dir (64) + "/" + a d_name (256)
    static int  slot;
    slot = !slot;
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_dir, name);
    return buf[slot];
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL) return;
    CHECK(fwrite(p, 1, n, f) == n);
    fclose(f);
}

// 8-byte little-endian header length `hlen`, then `hdr_n` bytes of hdr, then data_len bytes of
// 0xab. hlen is passed separately so it can lie.
static void write_st(const char *path, uint64_t hlen, const char *hdr, size_t hdr_n,
                     size_t data_len) {
    size_t         n = 8 + hdr_n + data_len;
    unsigned char *b = malloc(n + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_n);
    memset(b + 8 + hdr_n, 0xab, data_len);
    write_bytes(path, b, n);
    free(b);
}

// Writes a file whose header is the JSON text hdr (honest length), opens it, expects `want` and
// a message containing the file path, needle1 and needle2 (either may be NULL).
static void expect_bad(int line, const char *label, const char *hdr, size_t data_len,
                       spry_status want, const char *needle1, const char *needle2) {
    const char *path = tpath(label);
    write_st(path, strlen(hdr), hdr, strlen(hdr), data_len);
    spry_safetensors *st = (spry_safetensors *)1;
    spry_status       s  = spry_safetensors_open(path, &st);
    const char       *m  = spry_last_error();
    int ok = s == want && st == NULL && strstr(m, path) && (!needle1 || strstr(m, needle1)) &&
             (!needle2 || strstr(m, needle2));
    if (!ok) {
        fprintf(stderr, "%s:%d: case '%s': got %s, want %s; message: %s (needles '%s', '%s')\n",
                __FILE__, line, label, spry_status_name(s), spry_status_name(want), m,
                needle1 ? needle1 : "", needle2 ? needle2 : "");
        g_fail = 1;
    } else {
        printf("ok %-22s %s\n", label, m);
    }
    spry_safetensors_close(s == SPRY_OK ? st : NULL);
}
#define EXPECT_BAD(label, hdr, data_len, want, n1, n2)                                             \
    expect_bad(__LINE__, label, hdr, data_len, want, n1, n2)

// As expect_bad for raw file bytes.
static void expect_bad_raw(int line, const char *label, const void *bytes, size_t n,
                           spry_status want, const char *needle) {
    const char *path = tpath(label);
    write_bytes(path, bytes, n);
    spry_safetensors *st = (spry_safetensors *)1;
    spry_status       s  = spry_safetensors_open(path, &st);
    const char       *m  = spry_last_error();
    if (s != want || st != NULL || !strstr(m, path) || (needle && !strstr(m, needle))) {
        fprintf(stderr, "%s:%d: case '%s': got %s, want %s; message: %s (needle '%s')\n",
                __FILE__, line, label, spry_status_name(s), spry_status_name(want), m,
                needle ? needle : "");
        g_fail = 1;
    } else {
        printf("ok %-22s %s\n", label, m);
    }
}
#define EXPECT_BAD_RAW(label, bytes, n, want, needle)                                              \
    expect_bad_raw(__LINE__, label, bytes, n, want, needle)

static uint64_t read_u64le(const char *path) {
    unsigned char b[8] = {0};
    FILE         *f    = fopen(path, "rb");
    if (f) {
        CHECK(fread(b, 1, 8, f) == 8);
        fclose(f);
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

// ---------------------------------------------------------------------------------------------

static void test_round_trip(void) {
    const char *path = tpath("rt.safetensors");
    uint16_t    bf[3], hf[3];
    float       f32[6]  = {1, -2, 3.5f, 4, 5e-3f, -6e7f};
    int32_t     i32[4]  = {1, -2, 2147483647, -2147483647 - 1};
    int64_t     i64[3]  = {7, -8, (int64_t)1 << 40};
    float       scalar  = 42.0f;
    float       src[3]  = {0.5f, -1.25f, 3.0f};
    for (int i = 0; i < 3; i++) {
        bf[i] = spry_f32_to_bf16(src[i]);
        hf[i] = spry_f32_to_f16(src[i]);
    }
    // bf16 (6 bytes) first: the writer must still keep every tensor naturally aligned.
#define ENTRY(nm, dt, nd, shp, ptr) {.name = nm, .dtype = dt, .ndim = nd, .shape = shp, .data = ptr}
    const spry_st_entry e[] = {
        ENTRY("w.bf16", SPRY_DTYPE_BF16, 1, SPRY_SHAPE(3), bf),
        ENTRY("w.f32", SPRY_DTYPE_F32, 2, SPRY_SHAPE(2, 3), f32),
        ENTRY("w.f16", SPRY_DTYPE_F16, 1, SPRY_SHAPE(3), hf),
        ENTRY("ids.i32", SPRY_DTYPE_I32, 2, SPRY_SHAPE(2, 2), i32),
        ENTRY("ids.i64", SPRY_DTYPE_I64, 1, SPRY_SHAPE(3), i64),
        ENTRY("scalar", SPRY_DTYPE_F32, 0, NULL, &scalar),
        ENTRY("empty", SPRY_DTYPE_F32, 2, SPRY_SHAPE(2, 0), NULL),
        ENTRY("odd \"name\"\n\xc3\xa9", SPRY_DTYPE_U8, 1, SPRY_SHAPE(1), "z"),
    };
#undef ENTRY
    const int64_t     n      = (int64_t)(sizeof e / sizeof e[0]);
    const char *const meta[] = {"format", "pt", "note", "quote\" back\\slash\ttab"};
    CHECK(spry_safetensors_write(path, e, n, meta, 2) == SPRY_OK);

    uint64_t hlen = read_u64le(path);
    CHECK(hlen % 8 == 0);
    CHECK(file_size(path) == (long)(8 + hlen + 6 + 24 + 6 + 16 + 24 + 4 + 0 + 1));

    spry_safetensors *st = NULL;
    CHECK(spry_safetensors_open(path, &st) == SPRY_OK);
    if (st == NULL) return;
    CHECK(!strcmp(spry_safetensors_path(st), path));
    CHECK(spry_safetensors_n_tensors(st) == n);
    for (int64_t i = 0; i < n; i++) {
        const spry_st_tensor_info *t = spry_safetensors_tensor_at(st, i);
        CHECK(t && !strcmp(t->name, e[i].name)); // header order = given order
        if (!t) continue;
        CHECK(t->dtype == e[i].dtype);
        CHECK(!strcmp(t->st_dtype, spry_dtype_info(e[i].dtype)->st_name));
        CHECK(t->ndim == e[i].ndim);
        int64_t numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            CHECK(t->shape[k] == e[i].shape[k]);
            numel *= e[i].shape[k];
        }
        CHECK(t->numel == numel);
        CHECK(t->nbytes == spry_dtype_nbytes(t->dtype, numel));
        CHECK(t->aligned);
        CHECK(t->nbytes == 0 || !memcmp(t->data, e[i].data, t->nbytes));
        CHECK(spry_safetensors_find(st, e[i].name) == t);
    }
    CHECK(spry_safetensors_tensor_at(st, -1) == NULL);
    CHECK(spry_safetensors_tensor_at(st, n) == NULL);
    CHECK(spry_safetensors_find(st, "nope") == NULL);
    CHECK(spry_safetensors_find(st, "") == NULL);

    // Views.
    spry_tensor v;
    CHECK(spry_safetensors_get(st, "w.f32", &v) == SPRY_OK);
    CHECK(v.dtype == SPRY_DTYPE_F32 && v.ndim == 2 && v.shape[0] == 2 && v.shape[1] == 3);
    CHECK(v.stride[0] == 12 && v.stride[1] == 4 && spry_tensor_is_contiguous(&v));
    CHECK(v.flags == SPRY_TENSOR_VIEW && !strcmp(v.name, "w.f32") && v.grad == NULL);
    CHECK(*spry_f32_at2(&v, 1, 2) == -6e7f);
    CHECK(spry_safetensors_get(st, "w.bf16", &v) == SPRY_OK);
    CHECK(v.stride[0] == 2 && spry_bf16_to_f32(((const uint16_t *)v.data)[1]) == -1.25f);
    CHECK(spry_safetensors_get(st, "w.f16", &v) == SPRY_OK);
    CHECK(spry_f16_to_f32(((const uint16_t *)v.data)[2]) == 3.0f);
    CHECK(spry_safetensors_get(st, "ids.i64", &v) == SPRY_OK);
    CHECK(((const int64_t *)v.data)[2] == (int64_t)1 << 40);
    CHECK(spry_safetensors_get(st, "scalar", &v) == SPRY_OK);
    CHECK(v.ndim == 0 && *(const float *)v.data == 42.0f);
    CHECK(spry_safetensors_get(st, "empty", &v) == SPRY_OK);
    CHECK(v.ndim == 2 && v.shape[1] == 0 && v.stride[1] == 4 && spry_tensor_is_contiguous(&v));
    CHECK(spry_safetensors_get(st, "missing.weight", &v) == SPRY_ERR_NOT_FOUND);
    CHECK(strstr(spry_last_error(), "missing.weight") && strstr(spry_last_error(), "w.bf16"));

    // Metadata.
    CHECK(spry_safetensors_n_meta(st) == 2);
    CHECK(spry_safetensors_meta(st, "format") &&
          !strcmp(spry_safetensors_meta(st, "format"), "pt"));
    CHECK(spry_safetensors_meta(st, "note") &&
          !strcmp(spry_safetensors_meta(st, "note"), meta[3]));
    CHECK(spry_safetensors_meta(st, "absent") == NULL);
    const char *k = NULL, *val = NULL;
    CHECK(spry_safetensors_meta_at(st, 1, &k, &val) && !strcmp(k, "note"));
    CHECK(!spry_safetensors_meta_at(st, 2, &k, &val));

    // Replacing the file while it is mapped: the open handle keeps the old contents.
    float one = 1.0f;
    const spry_st_entry e2 = {.name = "x", .dtype = SPRY_DTYPE_F32, .ndim = 1,
                              .shape = SPRY_SHAPE(1), .data = &one};
    CHECK(spry_safetensors_write(path, &e2, 1, NULL, 0) == SPRY_OK);
    CHECK(spry_safetensors_get(st, "w.f32", &v) == SPRY_OK && ((const float *)v.data)[2] == 3.5f);
    spry_safetensors_close(st);
    CHECK(spry_safetensors_open(path, &st) == SPRY_OK);
    if (st) {
        CHECK(spry_safetensors_n_tensors(st) == 1 && spry_safetensors_n_meta(st) == 0);
        spry_safetensors_close(st);
    }
    spry_safetensors_close(NULL);
}

static void test_valid_edge_cases(void) {
    spry_safetensors *st = NULL;
    // No tensors at all.
    CHECK(spry_safetensors_write(tpath("none.safetensors"), NULL, 0, NULL, 0) == SPRY_OK);
    CHECK(spry_safetensors_open(tpath("none.safetensors"), &st) == SPRY_OK);
    if (st) CHECK(spry_safetensors_n_tensors(st) == 0);
    spry_safetensors_close(st);

    // Whitespace before and after the object (the reference accepts both), unpadded length,
    // zero-size tensors sharing an offset, a dtype spry cannot view, a misaligned F32.
    const char *h = "  \n{\"b\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]},"
                    "\"z0\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[3,3]},"
                    "\"z1\":{\"dtype\":\"F16\",\"shape\":[4,0,2],\"data_offsets\":[3,3]},"
                    "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[3,7]}}\t ";
    char hb[512];
    snprintf(hb, sizeof hb, "%s", h);
    while ((8 + strlen(hb) + 3) % 4 != 1) strcat(hb, " "); // make 'f' misaligned
    h = hb;
    write_st(tpath("ws"), strlen(h), h, strlen(h), 7);
    CHECK(spry_safetensors_open(tpath("ws"), &st) == SPRY_OK);
    if (st) {
        CHECK(spry_safetensors_n_tensors(st) == 4);
        const spry_st_tensor_info *b = spry_safetensors_find(st, "b");
        CHECK(b && b->dtype == SPRY_DTYPE_COUNT && !strcmp(b->st_dtype, "BOOL") && b->nbytes == 3);
        spry_tensor v;
        CHECK(spry_safetensors_get(st, "b", &v) == SPRY_ERR_UNSUPPORTED);
        CHECK(strstr(spry_last_error(), "BOOL") && strstr(spry_last_error(), "'b'"));
        const spry_st_tensor_info *f = spry_safetensors_find(st, "f");
        CHECK(f && f->nbytes == 4 && !f->aligned && (uintptr_t)f->data % 4 == 1);
        CHECK(spry_safetensors_get(st, "z1", &v) == SPRY_OK && v.ndim == 3);
        spry_safetensors_close(st);
    }

    // Seven dims validate but do not fit a spry_tensor.
    h = "{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,2],\"data_offsets\":[0,2]}}";
    write_st(tpath("7d"), strlen(h), h, strlen(h), 2);
    CHECK(spry_safetensors_open(tpath("7d"), &st) == SPRY_OK);
    if (st) {
        spry_tensor v;
        CHECK(spry_safetensors_get(st, "t", &v) == SPRY_ERR_UNSUPPORTED);
        CHECK(strstr(spry_last_error(), "7 dims"));
        spry_safetensors_close(st);
    }
}

static void test_malformed(void) {
    const spry_status F = SPRY_ERR_FORMAT;

    // Length field and file size (HeaderTooSmall, HeaderTooLarge, InvalidHeaderLength).
    EXPECT_BAD_RAW("empty", "", 0, F, "0 bytes");
    EXPECT_BAD_RAW("truncated-len", "\x10\x00\x00\x00\x00", 5, F, "5 bytes");
    EXPECT_BAD_RAW("len-past-eof", "\x3c\0\0\0\0\0\0\0", 8, F, "60");
    EXPECT_BAD_RAW("len-huge", "\x00\x00\x00\x00\x00\x00\xff\xff{}", 10, F, "limit");
    unsigned char big[8];
    uint64_t      over = SPRY_ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) big[i] = (unsigned char)(over >> (8 * i));
    EXPECT_BAD_RAW("len-over-limit", big, 8, F, "100000001");
    const char *full = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    write_st(tpath("trunc-header"), strlen(full), full, 20, 0); // file ends inside the header
    {
        spry_safetensors *st = NULL;
        CHECK(spry_safetensors_open(tpath("trunc-header"), &st) == F && st == NULL);
        CHECK(strstr(spry_last_error(), "past the end of the file"));
    }

    // Header text (InvalidHeader, InvalidHeaderDeserialization).
    EXPECT_BAD("not-json", "hello!!!", 0, F, "0x68", NULL);
    EXPECT_BAD("json-cut", "{", 0, F, "not valid JSON", NULL);
    EXPECT_BAD("json-cut2", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],", 0, F, "not valid JSON",
               NULL);
    EXPECT_BAD("json-array", "[1, 2, 3]", 0, F, "not a JSON object", NULL);
    EXPECT_BAD("json-string", "\"str\"", 0, F, "not a JSON object", NULL);
    EXPECT_BAD("json-trailing", "{} {}", 0, F, "single JSON object", NULL);
    EXPECT_BAD("blank", "        ", 0, F, "whitespace", NULL);
    EXPECT_BAD("non-utf8", "{\"a\xff\":{}}", 0, F, "UTF-8", "0xff");
    EXPECT_BAD_RAW("nul-in-header", "\x08\0\0\0\0\0\0\0{}\0     ", 16, F, "JSON");
    {
        char deep[4100] = "{\"a\":";
        memset(deep + 5, '[', 4000);
        deep[4005] = '\0';
        EXPECT_BAD("deep-nesting", deep, 0, F, "not valid JSON", NULL);
    }

    // Entry structure.
    EXPECT_BAD("entry-not-object", "{\"w\":[1]}", 0, F, "'w'", "an array");
    EXPECT_BAD("missing-offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[]}}", 0, F, "'w'",
               "missing field 'data_offsets'");
    EXPECT_BAD("unknown-field",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4],\"x\":1}}", 4, F,
               "'w'", "unknown field 'x'");
    EXPECT_BAD("dup-field",
               "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
               4, F, "'w'", "'dtype' appears twice");

    // dtype.
    EXPECT_BAD("bad-dtype", "{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
               F, "'w'", "'F33'");
    EXPECT_BAD("lower-dtype", "{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, F, "'f32'", "HINT");
    EXPECT_BAD("dtype-number", "{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, F,
               "'w'", "got 32");

    // shape.
    EXPECT_BAD("shape-negative",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4, F, "'w'",
               "shape[1] = -1");
    EXPECT_BAD("shape-fraction",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4, F, "'w'",
               "shape[0] = 2.5");
    EXPECT_BAD("shape-string",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, F, "'w'",
               "shape[0] = \"2\"");
    EXPECT_BAD("shape-not-array",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16, F, "'w'",
               "shape must be an array, got 4");
    EXPECT_BAD("shape-u64", // test_validation_overflow: too large for the 48-bit cap
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,18446744073709551614],"
               "\"data_offsets\":[0,16]}}",
               16, F, "'w'", "shape[1]");
    EXPECT_BAD("shape-overflow", // each dim is legal, the product overflows 64 bits
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[65536,65536,65536,65536],"
               "\"data_offsets\":[0,16]}}",
               16, F, "'w'", "overflows");
    EXPECT_BAD("f4-odd", "{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, F,
               "'w'", "whole bytes");

    // data_offsets (TensorInvalidInfo, InvalidOffset, MetadataIncompleteBuffer).
    EXPECT_BAD("offsets-size", // test_invalid_info: I32 (2, 2) needs 16 bytes, not 4
               "{\"w\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,4]}}", 4, F, "'w'",
               "span 4 bytes but I32 x 4 elements need 16");
    EXPECT_BAD("offsets-len3",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, F, "'w'",
               "[0,4,8]");
    EXPECT_BAD("offsets-negative",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, F, "'w'",
               "[-4,0]");
    EXPECT_BAD("offsets-reversed",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, F, "'w'",
               "[4, 0] end before");
    EXPECT_BAD("offsets-past-eof", // truncated data section
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 14, F, "'w'",
               "past the end of the data section");
    EXPECT_BAD("offsets-not-zero",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, F, "'w'",
               "gap of 4 bytes");
    EXPECT_BAD("offsets-gap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
               20, F, "'b'", "end of 'a'");
    EXPECT_BAD("offsets-overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, F, "'b'", "overlap tensor 'a'");
    {
        // test_json_attack: ten tensors all claiming [0, 16].
        char h[2048] = "{";
        for (int i = 0; i < 10; i++) {
            size_t l = strlen(h);
            snprintf(h + l, sizeof h - l,
                     "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}",
                     i ? "," : "", i);
        }
        strcat(h, "}");
        EXPECT_BAD("json-attack", h, 16, F, "overlap", "[0, 16]");
    }
    EXPECT_BAD("trailing-bytes", // polyglot guard
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 38, F,
               "34 trailing bytes", NULL);

    // Names and __metadata__.
    EXPECT_BAD("dup-name",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, F, "'a' appears twice", NULL);
    EXPECT_BAD("meta-not-string", "{\"__metadata__\":{\"format\":\"pt\",\"step\":10}}", 0, F,
               "'step'", "got 10");
    EXPECT_BAD("meta-not-object", "{\"__metadata__\":\"pt\"}", 0, F, "__metadata__",
               "\"pt\"");
    EXPECT_BAD("meta-nested", "{\"__metadata__\":{\"cfg\":{\"a\":\"b\"}}}", 0, F, "'cfg'",
               "an object");
    EXPECT_BAD("meta-dup-key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, F,
               "'k' appears twice", NULL);
    EXPECT_BAD("meta-twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, F,
               "'__metadata__' appears twice", NULL);

    // Not a file.
    spry_safetensors *st = (spry_safetensors *)1;
    CHECK(spry_safetensors_open(tpath("does-not-exist"), &st) == SPRY_ERR_IO && st == NULL);
    CHECK(strstr(spry_last_error(), "does-not-exist") && strstr(spry_last_error(), "No such"));
    CHECK(spry_safetensors_open(g_dir, &st) == SPRY_ERR_IO && st == NULL);
    CHECK(strstr(spry_last_error(), "not a regular file"));
}

static bool dir_has_tmp(void) {
    DIR *d = opendir(g_dir);
    bool found = false;
    if (d == NULL) return false;
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (strstr(de->d_name, ".tmp.")) found = true;
    closedir(d);
    return found;
}

static void test_write_errors(void) {
    float               x   = 1.0f;
    const spry_st_entry e[] = {
        {.name = "a", .dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = SPRY_SHAPE(1), .data = &x},
        {.name = "a", .dtype = SPRY_DTYPE_F32, .ndim = 1, .shape = SPRY_SHAPE(1), .data = &x},
    };
    CHECK(spry_safetensors_write(tpath("w1"), e, 2, NULL, 0) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "'a' given twice"));

    spry_st_entry bad = e[0];
    bad.name          = "__metadata__";
    CHECK(spry_safetensors_write(tpath("w2"), &bad, 1, NULL, 0) == SPRY_ERR_ARG);
    bad       = e[0];
    bad.shape = SPRY_SHAPE(-3);
    CHECK(spry_safetensors_write(tpath("w3"), &bad, 1, NULL, 0) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "-3"));
    bad      = e[0];
    bad.data = NULL;
    CHECK(spry_safetensors_write(tpath("w4"), &bad, 1, NULL, 0) == SPRY_ERR_ARG);
    bad      = e[0];
    bad.name = "bad\xff";
    CHECK(spry_safetensors_write(tpath("w5"), &bad, 1, NULL, 0) == SPRY_ERR_ARG);
    const char *const dupmeta[] = {"k", "1", "k", "2"};
    CHECK(spry_safetensors_write(tpath("w6"), e, 1, dupmeta, 2) == SPRY_ERR_ARG);
    CHECK(strstr(spry_last_error(), "'k'"));

    // I/O: a missing directory, and a target that is a directory (rename fails).
    const char *nodir = tpath("no/such/dir/x.safetensors");
    CHECK(spry_safetensors_write(nodir, e, 1, NULL, 0) == SPRY_ERR_IO);
    CHECK(strstr(spry_last_error(), nodir) && strstr(spry_last_error(), "No such"));
    const char *sub = tpath("subdir");
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(spry_safetensors_write(sub, e, 1, NULL, 0) == SPRY_ERR_IO);
    CHECK(strstr(spry_last_error(), sub) && strstr(spry_last_error(), "rename"));
    CHECK(!dir_has_tmp()); // the temp file was removed
    rmdir(sub);
}

static void remove_dir(void) {
    DIR *d = opendir(g_dir);
    if (d == NULL) return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        unlink(tpath(de->d_name));
    }
    closedir(d);
    rmdir(g_dir);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/spry_st_XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_valid_edge_cases();
    test_malformed();
    test_write_errors();
    remove_dir();
    printf("%s\n", g_fail ? "test_safetensors: FAILED" : "test_safetensors: all passed");
    return g_fail;
}
