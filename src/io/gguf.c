/*
 * gguf.c -- GGUF v3 reader (mmap, validated up front) and atomic writer (see gguf.h).
 *
 * The reader mirrors ggml's gguf_init_from_reader (ggml src/gguf.cpp) check for check; where
 * ggml relies on C++ exceptions or allocation failure to stop a hostile count, spry checks the
 * count against the bytes left before allocating anything, so memory stays proportional to the
 * file. Decisions: tensor names are cut at an embedded NUL (ggml_set_name does the same, and
 * its duplicate check then compares the cut names); keys keep every byte; the data section must
 * hold the padding after the last tensor (ggml reads ctx->size, padding included, when it loads
 * the data); bytes after the data section are allowed; the host is assumed little-endian.
 * Reference: ggml docs/gguf.md, src/gguf.cpp; shared/notes/inference_serving.md section 2.2.
 */
#define _POSIX_C_SOURCE 200809L

#include "spry/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads and writes little-endian values with memcpy: port it to this host"
#endif

// Longest key or name quoted in an error message (the message buffer is 1 KiB).
#define SHOWN 160

// Smallest possible records, used to bound the header's counts by the bytes left: a KV is a
// u64 key length, >= 1 key byte, a u32 type and >= 1 value byte; a tensor info a u64 name
// length, a u32 n_dims, a u32 type and a u64 offset.
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_BYTES 24u

// ---------------------------------------------------------------------------------------------
// Type tables. To add a ggml type: append {id, name, block, block_bytes} below (sizes from
// ggml-common.h's static_asserts) and the enum value in gguf.h; the reader and writer use it.

static const char *const k_gguf_type_names[SPRY_GGUF_TYPE_COUNT] = {
    "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
    "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64",
};
static const size_t k_gguf_type_sizes[SPRY_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4,
                                                               1, 0, 0, 8, 8, 8};

const char *spry_gguf_type_name(spry_gguf_type t) {
    return (unsigned)t < SPRY_GGUF_TYPE_COUNT ? k_gguf_type_names[t] : "?";
}

size_t spry_gguf_type_size(spry_gguf_type t) {
    return (unsigned)t < SPRY_GGUF_TYPE_COUNT ? k_gguf_type_sizes[t] : 0;
}

static const spry_ggml_type_traits k_ggml_types[] = {
    {SPRY_GGML_TYPE_F32, "F32", 1, 4},
    {SPRY_GGML_TYPE_F16, "F16", 1, 2},
    {SPRY_GGML_TYPE_Q4_0, "Q4_0", 32, 18}, // fp16 d; u8 qs[16]
    {SPRY_GGML_TYPE_Q4_1, "Q4_1", 32, 20}, // fp16 d, m; u8 qs[16]
    {SPRY_GGML_TYPE_Q5_0, "Q5_0", 32, 22}, // fp16 d; u8 qh[4]; u8 qs[16]
    {SPRY_GGML_TYPE_Q5_1, "Q5_1", 32, 24}, // fp16 d, m; u8 qh[4]; u8 qs[16]
    {SPRY_GGML_TYPE_Q8_0, "Q8_0", 32, 34}, // fp16 d; i8 qs[32]
    {SPRY_GGML_TYPE_Q8_1, "Q8_1", 32, 36}, // fp16 d, s; i8 qs[32]
    {SPRY_GGML_TYPE_Q2_K, "Q2_K", 256, 84},
    {SPRY_GGML_TYPE_Q3_K, "Q3_K", 256, 110},
    {SPRY_GGML_TYPE_Q4_K, "Q4_K", 256, 144},
    {SPRY_GGML_TYPE_Q5_K, "Q5_K", 256, 176},
    {SPRY_GGML_TYPE_Q6_K, "Q6_K", 256, 210},
    {SPRY_GGML_TYPE_Q8_K, "Q8_K", 256, 292},
    {SPRY_GGML_TYPE_IQ2_XXS, "IQ2_XXS", 256, 66},
    {SPRY_GGML_TYPE_IQ2_XS, "IQ2_XS", 256, 74},
    {SPRY_GGML_TYPE_IQ3_XXS, "IQ3_XXS", 256, 98},
    {SPRY_GGML_TYPE_IQ1_S, "IQ1_S", 256, 50},
    {SPRY_GGML_TYPE_IQ4_NL, "IQ4_NL", 32, 18},
    {SPRY_GGML_TYPE_IQ3_S, "IQ3_S", 256, 110},
    {SPRY_GGML_TYPE_IQ2_S, "IQ2_S", 256, 82},
    {SPRY_GGML_TYPE_IQ4_XS, "IQ4_XS", 256, 136},
    {SPRY_GGML_TYPE_I8, "I8", 1, 1},
    {SPRY_GGML_TYPE_I16, "I16", 1, 2},
    {SPRY_GGML_TYPE_I32, "I32", 1, 4},
    {SPRY_GGML_TYPE_I64, "I64", 1, 8},
    {SPRY_GGML_TYPE_F64, "F64", 1, 8},
    {SPRY_GGML_TYPE_IQ1_M, "IQ1_M", 256, 56},
    {SPRY_GGML_TYPE_BF16, "BF16", 1, 2},
    {SPRY_GGML_TYPE_TQ1_0, "TQ1_0", 256, 54},
    {SPRY_GGML_TYPE_TQ2_0, "TQ2_0", 256, 66},
    {SPRY_GGML_TYPE_MXFP4, "MXFP4", 32, 17}, // u8 e (E8M0); u8 qs[16]
};
#define N_GGML_TYPES ((int)(sizeof k_ggml_types / sizeof k_ggml_types[0]))

const spry_ggml_type_traits *spry_ggml_type_info(int id) {
    for (int i = 0; i < N_GGML_TYPES; i++)
        if (k_ggml_types[i].id == id)
            return &k_ggml_types[i];
    return NULL;
}

static uint64_t pad_to(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }

static bool is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// FNV-1a, for the key and name hash tables.
static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h             = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

// ---------------------------------------------------------------------------------------------
// An open-addressing table of indices with their hashes; equality is decided by the caller.

typedef struct htab {
    int64_t *idx; // (cap) -1 = empty
    uint64_t *hv; // (cap)
    uint64_t cap; // power of two
    int64_t n;
} htab;

static void htab_free(htab *h) {
    free(h->idx);
    free(h->hv);
    memset(h, 0, sizeof *h);
}

static bool htab_put_raw(htab *h, uint64_t hv, int64_t i) {
    uint64_t k = hv & (h->cap - 1);
    while (h->idx[k] >= 0)
        k = (k + 1) & (h->cap - 1);
    h->idx[k] = i;
    h->hv[k]  = hv;
    h->n++;
    return true;
}

// Adds (hv, i), growing so the table stays at most half full. False on OOM.
static bool htab_put(htab *h, uint64_t hv, int64_t i) {
    if ((uint64_t)(h->n + 1) * 2 > h->cap) {
        uint64_t cap  = h->cap ? h->cap * 2 : 16;
        int64_t *idx  = malloc(cap * sizeof *idx);
        uint64_t *hvs = malloc(cap * sizeof *hvs);
        if (!idx || !hvs) {
            free(idx);
            free(hvs);
            return false;
        }
        for (uint64_t k = 0; k < cap; k++)
            idx[k] = -1;
        htab old = *h;
        *h       = (htab){.idx = idx, .hv = hvs, .cap = cap, .n = 0};
        for (uint64_t k = 0; k < old.cap; k++)
            if (old.idx[k] >= 0)
                htab_put_raw(h, old.hv[k], old.idx[k]);
        htab_free(&old);
    }
    return htab_put_raw(h, hv, i);
}

// Calls eq(ctx, i) on each index with hash hv until it returns true; that index, or -1.
static int64_t htab_find(const htab *h, uint64_t hv, bool (*eq)(const void *, int64_t),
                         const void *ctx) {
    if (h->cap == 0)
        return -1;
    for (uint64_t k = hv & (h->cap - 1); h->idx[k] >= 0; k = (k + 1) & (h->cap - 1))
        if (h->hv[k] == hv && eq(ctx, h->idx[k]))
            return h->idx[k];
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Reader state.

struct spry_gguf {
    char *path;
    const unsigned char *base; // the file's bytes
    size_t size;
    void *map; // mmap of the file (NULL for open_memory / an empty file)
    size_t map_size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset, data_size;

    int64_t n_kv, kv_cap;
    spry_gguf_kv *kvs;   // (n_kv) public view, pointers set after parsing
    uint64_t *key_off;   // (n_kv) key offsets in pool while parsing
    uint64_t *str_first; // (n_kv) first string-table index of STRING kvs
    htab kv_tab;

    int64_t n_tensors, tensor_cap;
    spry_gguf_tensor *tensors;
    htab tensor_tab;

    char *pool; // every key and string value, each NUL-terminated
    size_t pool_len, pool_cap;
    uint64_t *soff; // (ns) string-table offsets into pool
    uint64_t *slen; // (ns) lengths
    char **sptr;    // (ns) pool + soff, filled after parsing
    uint64_t ns, scap;
};

// The parse cursor.
typedef struct cur {
    const spry_gguf *g;
    size_t pos;
} cur;

static size_t left(const cur *c) { return c->g->size - c->pos; }

static spry_status truncated(const cur *c, const char *what, size_t need) {
    return spry_errorf(SPRY_ERR_FORMAT,
                       "%s: %s: truncated (needs %zu bytes at offset %zu, the file has %zu). "
                       "HINT: the file is incomplete",
                       c->g->path, what, need, c->pos, c->g->size);
}

static spry_status rd(cur *c, void *dst, size_t n, const char *what) {
    if (left(c) < n)
        return truncated(c, what, n);
    memcpy(dst, c->g->base + c->pos, n);
    c->pos += n;
    return SPRY_OK;
}

static spry_status nomem(const spry_gguf *g) {
    return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory while reading the GGUF metadata",
                       g->path);
}

// Appends s[0..n) and a NUL to the pool; *off is where it starts.
static bool pool_add(spry_gguf *g, const void *s, size_t n, uint64_t *off) {
    if (g->pool_cap - g->pool_len < n + 1) {
        size_t cap = g->pool_cap ? g->pool_cap : 4096;
        while (cap - g->pool_len < n + 1)
            cap *= 2;
        char *p = realloc(g->pool, cap);
        if (!p)
            return false;
        g->pool     = p;
        g->pool_cap = cap;
    }
    memcpy(g->pool + g->pool_len, s, n);
    g->pool[g->pool_len + n] = '\0';
    *off                     = g->pool_len;
    g->pool_len += n + 1;
    return true;
}

// Reads a GGUF string (u64 length + bytes) with ggml's limits; what names it in messages.
static spry_status rd_str(cur *c, const char *what, const unsigned char **s, uint64_t *len) {
    SPRY_TRY(rd(c, len, 8, what));
    if (*len > SPRY_GGUF_MAX_STRING)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: string length (%llu) exceeds the 1 GiB limit",
                           c->g->path, what, (unsigned long long)*len);
    if (*len > left(c))
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: %s: string length (%llu) runs past the end of the file (%zu bytes "
                           "left)",
                           c->g->path, what, (unsigned long long)*len, left(c));
    *s = c->g->base + c->pos;
    c->pos += (size_t)*len;
    return SPRY_OK;
}

// Reserves room for k more strings in the string table. False on OOM.
static bool strtab_reserve(spry_gguf *g, uint64_t k) {
    if (g->scap - g->ns >= k)
        return true;
    uint64_t cap = g->scap ? g->scap : 64;
    while (cap - g->ns < k)
        cap *= 2;
    uint64_t *o = realloc(g->soff, cap * sizeof *o);
    if (!o)
        return false;
    g->soff     = o;
    uint64_t *l = realloc(g->slen, cap * sizeof *l);
    if (!l)
        return false;
    g->slen = l;
    g->scap = cap;
    return true;
}

typedef struct key_probe {
    const spry_gguf *g;
    const void *key;
    size_t len;
    bool parsing; // keys are pool offsets while parsing, pointers afterwards
} key_probe;

static bool key_eq(const void *ctx, int64_t i) {
    const key_probe *p = ctx;
    const char *k      = p->parsing ? p->g->pool + p->g->key_off[i] : p->g->kvs[i].key;
    return p->g->kvs[i].key_len == p->len && memcmp(k, p->key, p->len) == 0;
}

typedef struct name_probe {
    const spry_gguf *g;
    const char *name;
} name_probe;

static bool name_eq(const void *ctx, int64_t i) {
    const name_probe *p = ctx;
    return strcmp(p->g->tensors[i].name, p->name) == 0;
}

// A key or tensor name for a message: at most SHOWN bytes.
#define SHOW(s) SHOWN, (s)

// ---------------------------------------------------------------------------------------------
// Parsing: header, key/value pairs, tensor infos, layout.

static spry_status parse_header(spry_gguf *g, cur *c, uint64_t *n_tensors, uint64_t *n_kv) {
    const char *path = g->path;
    unsigned char magic[4];
    SPRY_TRY(rd(c, magic, 4, "magic"));
    if (memcmp(magic, "GGUF", 4) != 0) {
        uint32_t m;
        memcpy(&m, magic, 4);
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: bad magic (0x%08x, expected 0x%08x \"GGUF\"). HINT: is this a GGUF "
                           "file?",
                           path, m, SPRY_GGUF_MAGIC);
    }
    SPRY_TRY(rd(c, &g->version, 4, "version"));
    uint32_t v = g->version;
    if (v == 0)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: bad version (0)", path);
    if ((v & 0xffffu) == 0)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: version (0x%08x) is extremely large. HINT: a big-endian file? "
                           "spry reads little-endian GGUF only",
                           path, v);
    if (v == 1)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: version (1) is no longer supported. HINT: convert it again with "
                           "a current llama.cpp",
                           path);
    if (v > SPRY_GGUF_VERSION)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: version (%u) is newer than the supported %u", path,
                           v, SPRY_GGUF_VERSION);
    SPRY_TRY(rd(c, n_tensors, 8, "tensor_count"));
    SPRY_TRY(rd(c, n_kv, 8, "metadata_kv_count"));
    if (*n_tensors > (uint64_t)INT64_MAX)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor_count (%llu) is negative as an int64", path,
                           (unsigned long long)*n_tensors);
    if (*n_kv > (uint64_t)INT64_MAX)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: metadata_kv_count (%llu) is negative as an int64",
                           path, (unsigned long long)*n_kv);
    size_t rest = left(c);
    if (*n_tensors > rest / MIN_TENSOR_BYTES)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor_count (%llu) is more than the remaining %zu bytes can hold",
                           path, (unsigned long long)*n_tensors, rest);
    if (*n_kv > (rest - *n_tensors * MIN_TENSOR_BYTES) / MIN_KV_BYTES)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: metadata_kv_count (%llu) is more than the remaining %zu bytes can "
                           "hold",
                           path, (unsigned long long)*n_kv, rest);
    return SPRY_OK;
}

// Reads one value of key (type/elem/n already read) and fills the KV record i.
static spry_status parse_value(spry_gguf *g, cur *c, int64_t i, const char *key) {
    spry_gguf_kv *kv = &g->kvs[i];
    const char *path = g->path;
    char what[SHOWN + 64];
    if (kv->elem_type == SPRY_GGUF_TYPE_STRING) {
        // every string needs at least its 8-byte length: bound n before allocating
        if (kv->n > left(c) / 8)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: key '%.*s': array of %llu STRINGs runs past the end of the "
                               "file (%zu bytes left)",
                               path, SHOW(key), (unsigned long long)kv->n, left(c));
        if (!strtab_reserve(g, kv->n))
            return nomem(g);
        g->str_first[i] = g->ns;
        for (uint64_t k = 0; k < kv->n; k++) {
            const unsigned char *s;
            uint64_t len, off;
            if (kv->type == SPRY_GGUF_TYPE_ARRAY)
                snprintf(what, sizeof what, "key '%.*s' element %llu", SHOW(key),
                         (unsigned long long)k);
            else
                snprintf(what, sizeof what, "value of key '%.*s'", SHOW(key));
            SPRY_TRY(rd_str(c, what, &s, &len));
            if (!pool_add(g, s, (size_t)len, &off))
                return nomem(g);
            g->soff[g->ns]   = off;
            g->slen[g->ns++] = len;
        }
        return SPRY_OK;
    }
    size_t esize = k_gguf_type_sizes[kv->elem_type];
    if (kv->n > left(c) / esize)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: key '%.*s': %llu values of %s (%zu bytes each) run past the end "
                           "of the file (%zu bytes left)",
                           path, SHOW(key), (unsigned long long)kv->n,
                           k_gguf_type_names[kv->elem_type], esize, left(c));
    kv->data = g->base + c->pos;
    c->pos += (size_t)kv->n * esize;
    return SPRY_OK;
}

static spry_status parse_kvs(spry_gguf *g, cur *c, uint64_t n_kv) {
    const char *path = g->path;
    char what[64];
    for (uint64_t i = 0; i < n_kv; i++) {
        if (g->n_kv == g->kv_cap) {
            int64_t cap = g->kv_cap ? g->kv_cap * 2 : 16;
            void *a     = realloc(g->kvs, (size_t)cap * sizeof *g->kvs);
            if (!a)
                return nomem(g);
            g->kvs  = a;
            void *b = realloc(g->key_off, (size_t)cap * sizeof *g->key_off);
            if (!b)
                return nomem(g);
            g->key_off = b;
            void *d    = realloc(g->str_first, (size_t)cap * sizeof *g->str_first);
            if (!d)
                return nomem(g);
            g->str_first = d;
            g->kv_cap    = cap;
        }
        int64_t ki       = g->n_kv;
        spry_gguf_kv *kv = &g->kvs[ki];
        memset(kv, 0, sizeof *kv);
        g->str_first[ki] = 0;

        const unsigned char *key;
        uint64_t klen, off;
        snprintf(what, sizeof what, "key of kv %llu", (unsigned long long)i);
        SPRY_TRY(rd_str(c, what, &key, &klen));
        if (klen == 0)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: key of kv %llu is empty (length 0)", path,
                               (unsigned long long)i);
        key_probe kp = {.g = g, .key = key, .len = (size_t)klen, .parsing = true};
        uint64_t hv  = hash_bytes(key, (size_t)klen);
        int64_t j    = htab_find(&g->kv_tab, hv, key_eq, &kp);
        if (j >= 0)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: duplicate key '%.*s' (kv %lld and %llu)", path,
                               (int)(klen < SHOWN ? klen : SHOWN), (const char *)key, (long long)j,
                               (unsigned long long)i);
        if (!pool_add(g, key, (size_t)klen, &off))
            return nomem(g);
        g->key_off[ki] = off;
        kv->key_len    = (size_t)klen;
        const char *k  = g->pool + off; // valid until the next pool_add

        uint32_t type = 0;
        snprintf(what, sizeof what, "value type of kv %llu", (unsigned long long)i);
        SPRY_TRY(rd(c, &type, 4, what));
        char kcopy[SHOWN + 1]; // the key for messages (the pool may move below)
        snprintf(kcopy, sizeof kcopy, "%s", k);
        if (type >= SPRY_GGUF_TYPE_COUNT)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: key '%s': unknown value type (%u)", path,
                               kcopy, type);
        kv->type = kv->elem_type = (spry_gguf_type)type;
        kv->n                    = 1;
        if (type == SPRY_GGUF_TYPE_ARRAY) {
            uint32_t elem = 0;
            uint64_t n    = 0;
            snprintf(what, sizeof what, "array element type of kv %llu", (unsigned long long)i);
            SPRY_TRY(rd(c, &elem, 4, what));
            if (elem == SPRY_GGUF_TYPE_ARRAY)
                return spry_errorf(SPRY_ERR_FORMAT,
                                   "%s: key '%s': nested arrays are not supported (element type "
                                   "%u)",
                                   path, kcopy, elem);
            if (elem >= SPRY_GGUF_TYPE_COUNT)
                return spry_errorf(SPRY_ERR_FORMAT, "%s: key '%s': unknown array element type (%u)",
                                   path, kcopy, elem);
            snprintf(what, sizeof what, "array length of kv %llu", (unsigned long long)i);
            SPRY_TRY(rd(c, &n, 8, what));
            if (n > SPRY_GGUF_MAX_ARRAY)
                return spry_errorf(SPRY_ERR_FORMAT,
                                   "%s: key '%s': array length (%llu) exceeds the 2^30 element "
                                   "limit",
                                   path, kcopy, (unsigned long long)n);
            kv->elem_type = (spry_gguf_type)elem;
            kv->n         = n;
        }
        SPRY_TRY(parse_value(g, c, ki, kcopy));
        if (!htab_put(&g->kv_tab, hv, ki))
            return nomem(g);
        g->n_kv++;
    }

    // general.alignment: UINT32, a power of two
    g->alignment   = SPRY_GGUF_DEFAULT_ALIGNMENT;
    const char *ak = "general.alignment";
    key_probe kp   = {.g = g, .key = ak, .len = strlen(ak), .parsing = true};
    int64_t ai     = htab_find(&g->kv_tab, hash_bytes(ak, kp.len), key_eq, &kp);
    if (ai >= 0) {
        const spry_gguf_kv *kv = &g->kvs[ai];
        if (kv->type != SPRY_GGUF_TYPE_UINT32)
            return spry_errorf(
                SPRY_ERR_FORMAT,
                "%s: general.alignment has the wrong type (%s%s%s, expected UINT32)", path,
                spry_gguf_type_name(kv->type), kv->type == SPRY_GGUF_TYPE_ARRAY ? " of " : "",
                kv->type == SPRY_GGUF_TYPE_ARRAY ? spry_gguf_type_name(kv->elem_type) : "");
        uint32_t a;
        memcpy(&a, kv->data, 4);
        if (!is_pow2(a))
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: general.alignment (%u) is not a non-zero power of two", path,
                               a);
        g->alignment = a;
    }
    return SPRY_OK;
}

static spry_status parse_tensor_infos(spry_gguf *g, cur *c, uint64_t n_tensors) {
    const char *path = g->path;
    char what[96];
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (g->n_tensors == g->tensor_cap) {
            int64_t cap = g->tensor_cap ? g->tensor_cap * 2 : 16;
            void *a     = realloc(g->tensors, (size_t)cap * sizeof *g->tensors);
            if (!a)
                return nomem(g);
            g->tensors    = a;
            g->tensor_cap = cap;
        }
        spry_gguf_tensor *t = &g->tensors[g->n_tensors];
        memset(t, 0, sizeof *t);

        const unsigned char *s;
        uint64_t len;
        snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)i);
        SPRY_TRY(rd_str(c, what, &s, &len));
        if (len >= SPRY_GGUF_MAX_NAME)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor %llu: name length (%llu) must be < %d: '%.*s'", path,
                               (unsigned long long)i, (unsigned long long)len, SPRY_GGUF_MAX_NAME,
                               (int)(len < SHOWN ? len : SHOWN), (const char *)s);
        memcpy(t->name, s, (size_t)len); // t->name[len] is 0 from the memset
        name_probe np = {.g = g, .name = t->name};
        uint64_t hv   = hash_bytes(t->name, strlen(t->name));
        int64_t j     = htab_find(&g->tensor_tab, hv, name_eq, &np);
        if (j >= 0)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: duplicate tensor name '%s' (tensors %lld and %llu)", path,
                               t->name, (long long)j, (unsigned long long)i);

        snprintf(what, sizeof what, "tensor '%s' n_dims", t->name);
        SPRY_TRY(rd(c, &t->n_dims, 4, what));
        if (t->n_dims > SPRY_GGUF_MAX_DIMS)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%s': n_dims (%u) is more than %d",
                               path, t->name, t->n_dims, SPRY_GGUF_MAX_DIMS);
        bool zero = false;
        for (uint32_t d = 0; d < SPRY_GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d < t->n_dims) {
                snprintf(what, sizeof what, "tensor '%s' ne[%u]", t->name, d);
                SPRY_TRY(rd(c, &t->ne[d], 8, what));
            }
            if (t->ne[d] < 0)
                return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%s': ne[%u] (%lld) is negative",
                                   path, t->name, d, (long long)t->ne[d]);
            zero = zero || t->ne[d] == 0;
        }
        const int64_t *ne = t->ne;
        if (!zero && (INT64_MAX / ne[1] <= ne[0] || INT64_MAX / ne[2] <= ne[0] * ne[1] ||
                      INT64_MAX / ne[3] <= ne[0] * ne[1] * ne[2]))
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%s': element count of ne (%lld, %lld, %lld, %lld) "
                               "overflows int64",
                               path, t->name, (long long)ne[0], (long long)ne[1], (long long)ne[2],
                               (long long)ne[3]);
        t->numel = zero ? 0 : ne[0] * ne[1] * ne[2] * ne[3];

        int32_t type = -1;
        snprintf(what, sizeof what, "tensor '%s' type", t->name);
        SPRY_TRY(rd(c, &type, 4, what));
        const spry_ggml_type_traits *tt = spry_ggml_type_info(type);
        if (tt == NULL)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%s': unknown ggml type (%d)", path,
                               t->name, (int)type);
        t->type = type;
        if (ne[0] % tt->block != 0)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%s': ne[0] (%lld) is not a multiple of the %s block "
                               "size (%lld)",
                               path, t->name, (long long)ne[0], tt->name, (long long)tt->block);
        if ((uint64_t)(t->numel / tt->block) > SIZE_MAX / tt->block_bytes)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%s': byte size of %lld %s elements overflows", path,
                               t->name, (long long)t->numel, tt->name);
        t->nbytes = (size_t)(t->numel / tt->block) * tt->block_bytes;

        snprintf(what, sizeof what, "tensor '%s' offset", t->name);
        SPRY_TRY(rd(c, &t->offset, 8, what));
        if (!htab_put(&g->tensor_tab, hv, g->n_tensors))
            return nomem(g);
        g->n_tensors++;
    }
    return SPRY_OK;
}

// The data section: where it starts, every offset, and that it lies within the file.
static spry_status check_layout(spry_gguf *g, cur *c) {
    const char *path = g->path;
    uint64_t A       = g->alignment;
    uint64_t off     = g->n_tensors > 0 ? pad_to(c->pos, A) : c->pos;
    if (off > g->size)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: data section start (%llu, the infos' end %zu padded to %llu) is "
                           "past the end of the file (%zu bytes)",
                           path, (unsigned long long)off, c->pos, (unsigned long long)A, g->size);
    g->data_offset = off;
    uint64_t total = 0;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const spry_gguf_tensor *t = &g->tensors[i];
        if (t->offset != total)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%s': offset (%llu) must be %llu: tensors are stored "
                               "in info order, each padded to the alignment (%llu)",
                               path, t->name, (unsigned long long)t->offset,
                               (unsigned long long)total, (unsigned long long)A);
        if ((uint64_t)t->nbytes > UINT64_MAX - A || pad_to(t->nbytes, A) > UINT64_MAX - total)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%s': data section size overflows",
                               path, t->name);
        total += pad_to(t->nbytes, A);
    }
    uint64_t room = g->size - off;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        const spry_gguf_tensor *t = &g->tensors[i];
        if (t->nbytes > room || t->offset > room - t->nbytes)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%s': data [%llu, %llu) runs past the end of the file "
                               "(%zu bytes)",
                               path, t->name, (unsigned long long)(off + t->offset),
                               (unsigned long long)(off + t->offset + t->nbytes), g->size);
    }
    if (total > room)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: data section: the padding after the last tensor ends at %llu, past "
                           "the end of the file (%zu bytes)",
                           path, (unsigned long long)(off + total), g->size);
    g->data_size = total;
    return SPRY_OK;
}

// Sets every public pointer now that the pool and string table no longer move.
static spry_status finish(spry_gguf *g) {
    if (g->ns > 0) {
        g->sptr = malloc(g->ns * sizeof *g->sptr);
        if (!g->sptr)
            return nomem(g);
        for (uint64_t k = 0; k < g->ns; k++)
            g->sptr[k] = g->pool + g->soff[k];
    }
    for (int64_t i = 0; i < g->n_kv; i++) {
        spry_gguf_kv *kv = &g->kvs[i];
        kv->key          = g->pool + g->key_off[i];
        if (kv->elem_type == SPRY_GGUF_TYPE_STRING && kv->n > 0) {
            kv->str     = (const char *const *)(g->sptr + g->str_first[i]);
            kv->str_len = g->slen + g->str_first[i];
        }
    }
    for (int64_t i = 0; i < g->n_tensors; i++)
        g->tensors[i].data = g->base + g->data_offset + g->tensors[i].offset;
    return SPRY_OK;
}

static spry_status parse(spry_gguf *g) {
    cur c              = {.g = g, .pos = 0};
    uint64_t n_tensors = 0, n_kv = 0;
    SPRY_TRY(parse_header(g, &c, &n_tensors, &n_kv));
    SPRY_TRY(parse_kvs(g, &c, n_kv));
    SPRY_TRY(parse_tensor_infos(g, &c, n_tensors));
    SPRY_TRY(check_layout(g, &c));
    return finish(g);
}

void spry_gguf_close(spry_gguf *g) {
    if (!g)
        return;
    if (g->map)
        munmap(g->map, g->map_size);
    htab_free(&g->kv_tab);
    htab_free(&g->tensor_tab);
    free(g->kvs);
    free(g->key_off);
    free(g->str_first);
    free(g->tensors);
    free(g->pool);
    free(g->soff);
    free(g->slen);
    free(g->sptr);
    free(g->path);
    free(g);
}

static spry_gguf *gguf_new(const char *path) {
    spry_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    size_t n = strlen(path) + 1;
    g->path  = malloc(n);
    if (!g->path) {
        free(g);
        return NULL;
    }
    memcpy(g->path, path, n);
    return g;
}

spry_status spry_gguf_open_memory(const void *data, size_t size, const char *name,
                                  spry_gguf **out) {
    *out = NULL;
    if (!name)
        name = "<memory>";
    spry_gguf *g = gguf_new(name);
    if (!g)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", name);
    g->base        = size ? data : (const unsigned char *)"";
    g->size        = size;
    spry_status st = parse(g);
    if (st) {
        spry_gguf_close(g);
        return st;
    }
    *out = g;
    return SPRY_OK;
}

spry_status spry_gguf_open(const char *path, spry_gguf **out) {
    *out   = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        spry_status st = spry_errorf(SPRY_ERR_IO, "%s: not a regular file", path);
        close(fd);
        return st;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return spry_errorf(SPRY_ERR_IO, "%s: file too large to map", path);
    }
    spry_gguf *g = gguf_new(path);
    if (!g) {
        close(fd);
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    }
    g->size = (size_t)sb.st_size;
    g->base = (const unsigned char *)"";
    if (g->size > 0) {
        void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            spry_status st = spry_errorf(SPRY_ERR_IO, "%s: cannot mmap %zu bytes: %s", path,
                                         g->size, strerror(errno));
            close(fd);
            spry_gguf_close(g);
            return st;
        }
        g->map      = m;
        g->map_size = g->size;
        g->base     = m;
    }
    close(fd);
    spry_status st = parse(g);
    if (st) {
        spry_gguf_close(g);
        return st;
    }
    *out = g;
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Reader queries.

const char *spry_gguf_path(const spry_gguf *g) { return g->path; }
uint32_t spry_gguf_version(const spry_gguf *g) { return g->version; }
size_t spry_gguf_alignment(const spry_gguf *g) { return (size_t)g->alignment; }
uint64_t spry_gguf_data_offset(const spry_gguf *g) { return g->data_offset; }
uint64_t spry_gguf_data_size(const spry_gguf *g) { return g->data_size; }
int64_t spry_gguf_n_kv(const spry_gguf *g) { return g->n_kv; }
int64_t spry_gguf_n_tensors(const spry_gguf *g) { return g->n_tensors; }

const spry_gguf_kv *spry_gguf_kv_at(const spry_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

int64_t spry_gguf_find_key(const spry_gguf *g, const char *key) {
    key_probe kp = {.g = g, .key = key, .len = strlen(key), .parsing = false};
    return htab_find(&g->kv_tab, hash_bytes(key, kp.len), key_eq, &kp);
}

const spry_gguf_tensor *spry_gguf_tensor_at(const spry_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const spry_gguf_tensor *spry_gguf_find_tensor(const spry_gguf *g, const char *name) {
    name_probe np = {.g = g, .name = name};
    int64_t i     = htab_find(&g->tensor_tab, hash_bytes(name, strlen(name)), name_eq, &np);
    return i >= 0 ? &g->tensors[i] : NULL;
}

// Formats "INT32" or "ARRAY of INT32".
static const char *type_desc(spry_gguf_type type, spry_gguf_type elem, char *buf, size_t n) {
    if (type == SPRY_GGUF_TYPE_ARRAY)
        snprintf(buf, n, "ARRAY of %s", spry_gguf_type_name(elem));
    else
        snprintf(buf, n, "%s", spry_gguf_type_name(type));
    return buf;
}

// The pair key with the given type (elem for arrays), or an error.
static spry_status get_typed(const spry_gguf *g, const char *key, spry_gguf_type type,
                             spry_gguf_type elem, const spry_gguf_kv **out) {
    int64_t i = spry_gguf_find_key(g, key);
    if (i < 0)
        return spry_errorf(SPRY_ERR_NOT_FOUND, "%s: key '%.*s' not found", g->path, SHOW(key));
    const spry_gguf_kv *kv = &g->kvs[i];
    if (kv->type != type || kv->elem_type != elem) {
        char have[48], want[48];
        return spry_errorf(SPRY_ERR_FORMAT, "%s: key '%.*s' has the wrong type (%s, expected %s)",
                           g->path, SHOW(key), type_desc(kv->type, kv->elem_type, have, 48),
                           type_desc(type, elem, want, 48));
    }
    *out = kv;
    return SPRY_OK;
}

#define GETTER(fn, ctype, gtype)                                                                   \
    spry_status fn(const spry_gguf *g, const char *key, ctype *out) {                              \
        const spry_gguf_kv *kv = NULL;                                                             \
        SPRY_TRY(get_typed(g, key, gtype, gtype, &kv));                                            \
        memcpy(out, kv->data, sizeof *out);                                                        \
        return SPRY_OK;                                                                            \
    }
GETTER(spry_gguf_get_u32, uint32_t, SPRY_GGUF_TYPE_UINT32)
GETTER(spry_gguf_get_i32, int32_t, SPRY_GGUF_TYPE_INT32)
GETTER(spry_gguf_get_u64, uint64_t, SPRY_GGUF_TYPE_UINT64)
GETTER(spry_gguf_get_f32, float, SPRY_GGUF_TYPE_FLOAT32)
#undef GETTER

spry_status spry_gguf_get_bool(const spry_gguf *g, const char *key, bool *out) {
    const spry_gguf_kv *kv = NULL;
    SPRY_TRY(get_typed(g, key, SPRY_GGUF_TYPE_BOOL, SPRY_GGUF_TYPE_BOOL, &kv));
    *out = *(const unsigned char *)kv->data != 0;
    return SPRY_OK;
}

spry_status spry_gguf_get_str(const spry_gguf *g, const char *key, const char **out, size_t *len) {
    const spry_gguf_kv *kv = NULL;
    SPRY_TRY(get_typed(g, key, SPRY_GGUF_TYPE_STRING, SPRY_GGUF_TYPE_STRING, &kv));
    *out = kv->str[0];
    if (len)
        *len = (size_t)kv->str_len[0];
    return SPRY_OK;
}

spry_status spry_gguf_get_arr(const spry_gguf *g, const char *key, spry_gguf_type elem_type,
                              const spry_gguf_kv **out) {
    return get_typed(g, key, SPRY_GGUF_TYPE_ARRAY, elem_type, out);
}

const char *spry_gguf_kv_str(const spry_gguf_kv *kv, uint64_t i, size_t *len) {
    SPRY_ASSERT(kv->elem_type == SPRY_GGUF_TYPE_STRING && i < kv->n,
                "key '%s': element %llu of %llu, type %s", kv->key, (unsigned long long)i,
                (unsigned long long)kv->n, spry_gguf_type_name(kv->elem_type));
    if (len)
        *len = (size_t)kv->str_len[i];
    return kv->str[i];
}

void spry_gguf_kv_elem(const spry_gguf_kv *kv, uint64_t i, void *out) {
    size_t es = spry_gguf_type_size(kv->elem_type);
    SPRY_ASSERT(es > 0 && i < kv->n, "key '%s': element %llu of %llu, type %s", kv->key,
                (unsigned long long)i, (unsigned long long)kv->n,
                spry_gguf_type_name(kv->elem_type));
    memcpy(out, (const unsigned char *)kv->data + i * es, es);
}

#define ELEM(fn, ctype, gtype)                                                                     \
    ctype fn(const spry_gguf_kv *kv, uint64_t i) {                                                 \
        SPRY_ASSERT(kv->elem_type == gtype, "key '%s' holds %s, not %s", kv->key,                  \
                    spry_gguf_type_name(kv->elem_type), spry_gguf_type_name(gtype));               \
        ctype v;                                                                                   \
        spry_gguf_kv_elem(kv, i, &v);                                                              \
        return v;                                                                                  \
    }
ELEM(spry_gguf_kv_i32, int32_t, SPRY_GGUF_TYPE_INT32)
ELEM(spry_gguf_kv_u32, uint32_t, SPRY_GGUF_TYPE_UINT32)
ELEM(spry_gguf_kv_f32, float, SPRY_GGUF_TYPE_FLOAT32)
#undef ELEM

// ---------------------------------------------------------------------------------------------
// Writer. Each pair is kept serialized (key, type, value exactly as in the file), so writing is
// a copy and a huge string array costs its file size once. Tensors keep the caller's pointer.

typedef struct wkv {
    char *key; // NUL-terminated
    unsigned char *blob;
    size_t blob_len;
} wkv;

typedef struct wtensor {
    char name[SPRY_GGUF_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[SPRY_GGUF_MAX_DIMS];
    int type;
    size_t nbytes;
    const void *data;
} wtensor;

struct spry_gguf_writer {
    wkv *kvs;
    int64_t n_kv, kv_cap;
    wtensor *ts;
    int64_t n_t, t_cap;
    uint32_t alignment;
};

spry_status spry_gguf_writer_init(spry_gguf_writer **out) {
    *out = calloc(1, sizeof **out);
    if (!*out)
        return spry_errorf(SPRY_ERR_NOMEM, "gguf writer: out of memory");
    (*out)->alignment = SPRY_GGUF_DEFAULT_ALIGNMENT;
    return SPRY_OK;
}

void spry_gguf_writer_free(spry_gguf_writer *w) {
    if (!w)
        return;
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].blob);
    }
    free(w->kvs);
    free(w->ts);
    free(w);
}

// A growable byte buffer.
typedef struct bbuf {
    unsigned char *p;
    size_t len, cap;
    bool oom;
} bbuf;

static void bb_put(bbuf *b, const void *s, size_t n) {
    if (b->oom || n == 0)
        return;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p   = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void bb_u32(bbuf *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(bbuf *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(bbuf *b, const char *s, size_t n) {
    bb_u64(b, n);
    bb_put(b, s, n);
}

static spry_status check_key(const char *key) {
    if (!key || !key[0])
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: key is NULL or empty");
    size_t n = strlen(key);
    if (n > SPRY_GGUF_MAX_KEY)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: key '%.*s...' is %zu bytes (max %d)",
                           SHOW(key), n, SPRY_GGUF_MAX_KEY);
    return SPRY_OK;
}

// Stores a serialized pair (takes blob), replacing an earlier value of key in place.
static spry_status put_kv(spry_gguf_writer *w, const char *key, bbuf *b) {
    if (b->oom) {
        free(b->p);
        return spry_errorf(SPRY_ERR_NOMEM, "gguf writer: out of memory for key '%.*s'", SHOW(key));
    }
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kvs[i].key, key)) {
            free(w->kvs[i].blob);
            w->kvs[i].blob     = b->p;
            w->kvs[i].blob_len = b->len;
            return SPRY_OK;
        }
    }
    if (w->n_kv == w->kv_cap) {
        int64_t cap = w->kv_cap ? w->kv_cap * 2 : 16;
        wkv *a      = realloc(w->kvs, (size_t)cap * sizeof *a);
        if (!a) {
            free(b->p);
            return spry_errorf(SPRY_ERR_NOMEM, "gguf writer: out of memory");
        }
        w->kvs    = a;
        w->kv_cap = cap;
    }
    size_t n = strlen(key) + 1;
    char *k  = malloc(n);
    if (!k) {
        free(b->p);
        return spry_errorf(SPRY_ERR_NOMEM, "gguf writer: out of memory");
    }
    memcpy(k, key, n);
    w->kvs[w->n_kv++] = (wkv){.key = k, .blob = b->p, .blob_len = b->len};
    return SPRY_OK;
}

// Starts a pair's serialization: key and value type.
static void kv_begin(bbuf *b, const char *key, spry_gguf_type type) {
    bb_str(b, key, strlen(key));
    bb_u32(b, (uint32_t)type);
}

static spry_status set_scalar(spry_gguf_writer *w, const char *key, spry_gguf_type type,
                              const void *v) {
    SPRY_TRY(check_key(key));
    bool align = !strcmp(key, "general.alignment");
    if (align && type != SPRY_GGUF_TYPE_UINT32)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: general.alignment must be UINT32, not %s",
                           spry_gguf_type_name(type));
    if (align) {
        uint32_t a;
        memcpy(&a, v, 4);
        if (!is_pow2(a))
            return spry_errorf(SPRY_ERR_ARG,
                               "gguf writer: general.alignment (%u) is not a power of two", a);
    }
    bbuf b = {0};
    kv_begin(&b, key, type);
    bb_put(&b, v, k_gguf_type_sizes[type]);
    SPRY_TRY(put_kv(w, key, &b));
    if (align)
        memcpy(&w->alignment, v, 4);
    return SPRY_OK;
}

#define SETTER(fn, ctype, gtype)                                                                   \
    spry_status fn(spry_gguf_writer *w, const char *key, ctype v) {                                \
        return set_scalar(w, key, gtype, &v);                                                      \
    }
SETTER(spry_gguf_set_u8, uint8_t, SPRY_GGUF_TYPE_UINT8)
SETTER(spry_gguf_set_i8, int8_t, SPRY_GGUF_TYPE_INT8)
SETTER(spry_gguf_set_u16, uint16_t, SPRY_GGUF_TYPE_UINT16)
SETTER(spry_gguf_set_i16, int16_t, SPRY_GGUF_TYPE_INT16)
SETTER(spry_gguf_set_u32, uint32_t, SPRY_GGUF_TYPE_UINT32)
SETTER(spry_gguf_set_i32, int32_t, SPRY_GGUF_TYPE_INT32)
SETTER(spry_gguf_set_f32, float, SPRY_GGUF_TYPE_FLOAT32)
SETTER(spry_gguf_set_u64, uint64_t, SPRY_GGUF_TYPE_UINT64)
SETTER(spry_gguf_set_i64, int64_t, SPRY_GGUF_TYPE_INT64)
SETTER(spry_gguf_set_f64, double, SPRY_GGUF_TYPE_FLOAT64)
#undef SETTER

spry_status spry_gguf_set_bool(spry_gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, SPRY_GGUF_TYPE_BOOL, &b);
}

// Checks that key is not general.alignment (which must be a UINT32 scalar).
static spry_status not_alignment(const char *key, const char *what) {
    if (!strcmp(key, "general.alignment"))
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: general.alignment must be UINT32, not %s",
                           what);
    return SPRY_OK;
}

spry_status spry_gguf_set_str(spry_gguf_writer *w, const char *key, const char *s) {
    SPRY_TRY(check_key(key));
    SPRY_TRY(not_alignment(key, "STRING"));
    if (!s)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: key '%.*s': NULL string", SHOW(key));
    size_t n = strlen(s);
    if (n > SPRY_GGUF_MAX_STRING)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: key '%.*s': string of %zu bytes (max 1 GiB)",
                           SHOW(key), n);
    bbuf b = {0};
    kv_begin(&b, key, SPRY_GGUF_TYPE_STRING);
    bb_str(&b, s, n);
    return put_kv(w, key, &b);
}

spry_status spry_gguf_set_arr(spry_gguf_writer *w, const char *key, spry_gguf_type elem_type,
                              const void *data, uint64_t n) {
    SPRY_TRY(check_key(key));
    SPRY_TRY(not_alignment(key, "ARRAY"));
    size_t es = spry_gguf_type_size(elem_type);
    if (es == 0)
        return spry_errorf(SPRY_ERR_ARG,
                           "gguf writer: key '%.*s': array element type %s (%d) is not a scalar "
                           "type",
                           SHOW(key), spry_gguf_type_name(elem_type), (int)elem_type);
    if (n > SPRY_GGUF_MAX_ARRAY || (n > 0 && !data))
        return spry_errorf(SPRY_ERR_ARG,
                           "gguf writer: key '%.*s': array of %llu elements (max 2^30) or NULL "
                           "data",
                           SHOW(key), (unsigned long long)n);
    bbuf b = {0};
    kv_begin(&b, key, SPRY_GGUF_TYPE_ARRAY);
    bb_u32(&b, (uint32_t)elem_type);
    bb_u64(&b, n);
    if (elem_type == SPRY_GGUF_TYPE_BOOL) {
        for (uint64_t i = 0; i < n; i++) {
            uint8_t v = ((const uint8_t *)data)[i] ? 1 : 0;
            bb_put(&b, &v, 1);
        }
    } else {
        bb_put(&b, data, (size_t)n * es);
    }
    return put_kv(w, key, &b);
}

spry_status spry_gguf_set_arr_str(spry_gguf_writer *w, const char *key, const char *const *strs,
                                  uint64_t n) {
    SPRY_TRY(check_key(key));
    SPRY_TRY(not_alignment(key, "ARRAY"));
    if (n > SPRY_GGUF_MAX_ARRAY || (n > 0 && !strs))
        return spry_errorf(SPRY_ERR_ARG,
                           "gguf writer: key '%.*s': array of %llu strings (max 2^30) or NULL",
                           SHOW(key), (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++)
        if (!strs[i])
            return spry_errorf(SPRY_ERR_ARG, "gguf writer: key '%.*s': string %llu is NULL",
                               SHOW(key), (unsigned long long)i);
    bbuf b = {0};
    kv_begin(&b, key, SPRY_GGUF_TYPE_ARRAY);
    bb_u32(&b, SPRY_GGUF_TYPE_STRING);
    bb_u64(&b, n);
    for (uint64_t i = 0; i < n; i++)
        bb_str(&b, strs[i], strlen(strs[i]));
    return put_kv(w, key, &b);
}

spry_status spry_gguf_add_tensor(spry_gguf_writer *w, const char *name, int type, uint32_t n_dims,
                                 const int64_t *ne, const void *data) {
    if (!name || !name[0] || strlen(name) >= SPRY_GGUF_MAX_NAME)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor name '%.*s' must be 1..%d bytes",
                           SHOW(name ? name : "(null)"), SPRY_GGUF_MAX_NAME - 1);
    const spry_ggml_type_traits *tt = spry_ggml_type_info(type);
    if (!tt)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor '%s': unknown ggml type (%d)", name,
                           type);
    if (n_dims > SPRY_GGUF_MAX_DIMS || (n_dims > 0 && !ne))
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor '%s': n_dims (%u) must be 0..%d",
                           name, n_dims, SPRY_GGUF_MAX_DIMS);
    wtensor t = {.n_dims = n_dims, .type = type, .data = data};
    memcpy(t.name, name, strlen(name) + 1);
    uint64_t numel = 1;
    bool ovf = false, zero = false;
    for (uint32_t d = 0; d < SPRY_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0)
            return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor '%s': ne[%u] (%lld) is negative",
                               name, d, (long long)t.ne[d]);
        zero = zero || t.ne[d] == 0;
        if (!ovf && t.ne[d] != 0 && numel > (uint64_t)INT64_MAX / (uint64_t)t.ne[d])
            ovf = true;
        if (!ovf)
            numel *= (uint64_t)t.ne[d];
    }
    if (zero) { // an empty tensor: the other dims may be anything
        ovf   = false;
        numel = 0;
    }
    if (ovf || numel / (uint64_t)tt->block > SIZE_MAX / tt->block_bytes)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor '%s': too many elements", name);
    if (t.ne[0] % tt->block != 0)
        return spry_errorf(SPRY_ERR_ARG,
                           "gguf writer: tensor '%s': ne[0] (%lld) is not a multiple of the %s "
                           "block size (%lld)",
                           name, (long long)t.ne[0], tt->name, (long long)tt->block);
    t.nbytes = (size_t)(numel / (uint64_t)tt->block) * tt->block_bytes;
    if (t.nbytes > 0 && !data)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor '%s': data is NULL", name);
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->ts[i].name, name))
            return spry_errorf(SPRY_ERR_ARG, "gguf writer: tensor name '%s' given twice", name);
    if (w->n_t == w->t_cap) {
        int64_t cap = w->t_cap ? w->t_cap * 2 : 16;
        wtensor *a  = realloc(w->ts, (size_t)cap * sizeof *a);
        if (!a)
            return spry_errorf(SPRY_ERR_NOMEM, "gguf writer: out of memory");
        w->ts    = a;
        w->t_cap = cap;
    }
    w->ts[w->n_t++] = t;
    return SPRY_OK;
}

// Buffered output to a file descriptor; the first error sticks.
typedef struct fout {
    int fd;
    unsigned char *buf;
    size_t len, cap;
    uint64_t pos; // bytes written so far (buffered included)
    int err;      // errno of the first failure, 0 if none
} fout;

static void write_all(fout *f, const void *p, size_t n) {
    const char *s = p;
    while (n > 0 && !f->err) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t r    = write(f->fd, s, chunk);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            f->err = r == 0 ? EIO : errno;
            return;
        }
        s += r;
        n -= (size_t)r;
    }
}

static void fo_flush(fout *f) {
    write_all(f, f->buf, f->len);
    f->len = 0;
}

static void fo_put(fout *f, const void *p, size_t n) {
    if (n == 0)
        return;
    f->pos += n;
    if (n > f->cap - f->len) {
        fo_flush(f);
        if (n >= f->cap) { // big blocks (tensor data) go straight out
            write_all(f, p, n);
            return;
        }
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
}

static void fo_pad(fout *f, uint64_t align) {
    static const unsigned char zeros[64];
    uint64_t n = pad_to(f->pos, align) - f->pos;
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        fo_put(f, zeros, k);
        n -= k;
    }
}

// Best-effort fsync of path's directory so the rename is durable.
static void fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    size_t n          = slash == NULL ? 1 : (slash == path ? 1 : (size_t)(slash - path));
    char *dir         = malloc(n + 1);
    if (!dir)
        return;
    if (slash == NULL)
        memcpy(dir, ".", 1);
    else
        memcpy(dir, path, n);
    dir[n] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); // some file systems refuse directory fsync; the data is already safe
        close(fd);
    }
    free(dir);
}

spry_status spry_gguf_writer_write(const spry_gguf_writer *w, const char *path) {
    if (!path)
        return spry_errorf(SPRY_ERR_ARG, "gguf writer: NULL path");
    size_t tlen = strlen(path) + 32;
    char *tmp   = malloc(tlen);
    fout f      = {.fd = -1, .cap = (size_t)1 << 20};
    f.buf       = malloc(f.cap);
    if (!tmp || !f.buf) {
        free(tmp);
        free(f.buf);
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    f.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f.fd < 0) {
        spry_status st = spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(f.buf);
        return st;
    }

    uint32_t magic = SPRY_GGUF_MAGIC, version = SPRY_GGUF_VERSION;
    uint64_t n_t = (uint64_t)w->n_t, n_kv = (uint64_t)w->n_kv, A = w->alignment;
    fo_put(&f, &magic, 4);
    fo_put(&f, &version, 4);
    fo_put(&f, &n_t, 8);
    fo_put(&f, &n_kv, 8);
    for (int64_t i = 0; i < w->n_kv; i++)
        fo_put(&f, w->kvs[i].blob, w->kvs[i].blob_len);
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];
        uint64_t nlen    = strlen(t->name);
        uint32_t type    = (uint32_t)t->type;
        fo_put(&f, &nlen, 8);
        fo_put(&f, t->name, (size_t)nlen);
        fo_put(&f, &t->n_dims, 4);
        fo_put(&f, t->ne, 8 * (size_t)t->n_dims);
        fo_put(&f, &type, 4);
        fo_put(&f, &off, 8);
        off += pad_to(t->nbytes, A);
    }
    if (w->n_t > 0)
        fo_pad(&f, A);
    for (int64_t i = 0; i < w->n_t; i++) {
        fo_put(&f, w->ts[i].data, w->ts[i].nbytes);
        fo_pad(&f, A);
    }
    fo_flush(&f);

    spry_status st = SPRY_OK;
    if (f.err)
        st = spry_errorf(SPRY_ERR_IO, "%s: write failed: %s", tmp, strerror(f.err));
    else if (fsync(f.fd) != 0)
        st = spry_errorf(SPRY_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(f.fd) != 0 && !st)
        st = spry_errorf(SPRY_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = spry_errorf(SPRY_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp,
                         strerror(errno));
    if (st)
        unlink(tmp);
    else
        fsync_dir(path);
    free(tmp);
    free(f.buf);
    return st;
}
