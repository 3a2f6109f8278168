/*
 * safetensors.c -- Hugging Face .safetensors reader (mmap, zero-copy) and atomic writer.
 *
 * The reader mirrors the checks of the reference implementation (safetensors/src/tensor.rs:
 * SafeTensors::read_metadata, Metadata::validate) plus what its serde map does not do: repeated
 * keys are rejected, unknown per-tensor fields are rejected (the JSON schema's
 * additionalProperties: false) and integers are capped at 48 bits (the schema's maximum).
 * Decisions: JSON whitespace is allowed before and after the header object (as the reference
 * parser allows, for page-aligned writers); integer-valued JSON numbers written as 2.0 or 2e0
 * are accepted (cJSON keeps only the double); the host is assumed little-endian.
 */
#define _POSIX_C_SOURCE 200809L

#include "spry/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

// Longest name or value quoted in an error message (the message buffer is 1 KiB).
#define NAME_MAX_SHOWN 160

// ---------------------------------------------------------------------------------------------
// The safetensors dtype vocabulary (Rust `Dtype`), with bit sizes. spry maps a subset of these
// to spry_dtype through spry_dtype_from_st_name; the rest are validated but not viewable.
// To add one: append {name, bits}; the reader picks it up.

typedef struct st_dtype_def {
    const char *name;
    int         bits;
} st_dtype_def;

static const st_dtype_def k_st_dtypes[] = {
    {"BOOL", 8},        {"F4", 4},          {"F6_E2M3", 6},     {"F6_E3M2", 6},
    {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8},     {"F8_E4M3", 8},
    {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
    {"U16", 16},        {"F16", 16},        {"BF16", 16},       {"I32", 32},
    {"U32", 32},        {"F32", 32},        {"C64", 64},        {"F64", 64},
    {"I64", 64},        {"U64", 64},
};
#define N_ST_DTYPES ((int)(sizeof k_st_dtypes / sizeof k_st_dtypes[0]))

static const st_dtype_def *st_dtype_find(const char *name) {
    for (int i = 0; i < N_ST_DTYPES; i++)
        if (!strcmp(k_st_dtypes[i].name, name)) return &k_st_dtypes[i];
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Small helpers: checked arithmetic, UTF-8, describing a JSON value for a message.

static bool mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}

// True when s[0..n) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
static bool utf8_valid(const unsigned char *s, size_t n, size_t *bad_at) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t   len;
        unsigned lo = 0x80, hi = 0xbf; // allowed range of the second byte
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            *bad_at = i;
            return false;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) {
            *bad_at = i;
            return false;
        }
        for (size_t k = 2; k < len; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) {
                *bad_at = i;
                return false;
            }
        }
        i += len;
    }
    return true;
}

static bool json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// A short human description of a JSON value: 2.5, "abc", null, an array, ...
static const char *describe(const cJSON *v, char *buf, size_t n) {
    if (v == NULL) snprintf(buf, n, "nothing");
    else if (cJSON_IsNumber(v)) snprintf(buf, n, "%.17g", v->valuedouble);
    else if (cJSON_IsString(v)) snprintf(buf, n, "\"%.40s\"", v->valuestring);
    else if (cJSON_IsBool(v)) snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNull(v)) snprintf(buf, n, "null");
    else if (cJSON_IsArray(v)) snprintf(buf, n, "an array");
    else if (cJSON_IsObject(v)) snprintf(buf, n, "an object");
    else snprintf(buf, n, "an invalid value");
    return buf;
}

// Reads a JSON integer in [0, SPRY_ST_MAX_INT]. False if v is not one.
static bool json_uint(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > (double)SPRY_ST_MAX_INT || d != (double)(int64_t)d) return false;
    *out = (int64_t)d;
    return true;
}

// ---------------------------------------------------------------------------------------------
// Reader.

struct spry_safetensors {
    char                *path;
    void                *map;       // whole file, PROT_READ
    size_t               map_size;  // file size
    uint64_t             header_len;
    int64_t              n;
    spry_st_tensor_info *infos;     // (n,) header order
    int64_t             *by_name;   // (n,) indices sorted by name
    int64_t              n_meta;
    char               **meta;      // (2 * n_meta,) key, value, ...
};

// Parse-time record of one tensor before the layout check.
typedef struct st_rec {
    int64_t  idx;          // header order
    uint64_t begin, end;
} st_rec;

static int rec_cmp(const void *pa, const void *pb) {
    const st_rec *a = pa, *b = pb;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end) return a->end < b->end ? -1 : 1;
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

// qsort has no context argument: sort by name through a file-static pointer is not
// thread-safe, so sort pointers to the infos instead and recover indices afterwards.
static int info_ptr_cmp(const void *pa, const void *pb) {
    const spry_st_tensor_info *a = *(const spry_st_tensor_info *const *)pa;
    const spry_st_tensor_info *b = *(const spry_st_tensor_info *const *)pb;
    return strcmp(a->name, b->name);
}

static int str_ptr_cmp(const void *pa, const void *pb) {
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char  *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void spry_safetensors_close(spry_safetensors *st) {
    if (st == NULL) return;
    if (st->infos) {
        for (int64_t i = 0; i < st->n; i++) {
            free((char *)st->infos[i].name);
            free((int64_t *)st->infos[i].shape);
        }
    }
    if (st->meta) {
        for (int64_t i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    }
    if (st->map) munmap(st->map, st->map_size);
    free(st->infos);
    free(st->by_name);
    free(st->meta);
    free(st->path);
    free(st);
}

static spry_status nomem(const char *path) {
    return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory while reading the safetensors header",
                       path);
}

// "__metadata__": a string -> string object. Fills st->meta.
static spry_status parse_metadata(spry_safetensors *st, const cJSON *m) {
    const char *path = st->path;
    char        d[64];
    if (!cJSON_IsObject(m))
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: __metadata__ must be an object of strings, got %s. HINT: "
                           "safetensors allows only a string->string map there",
                           path, describe(m, d, sizeof d));
    int64_t n = cJSON_GetArraySize(m);
    st->meta  = calloc((size_t)(2 * n + 1), sizeof *st->meta);
    if (st->meta == NULL) return nomem(path);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, m) {
        if (!cJSON_IsString(kv))
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: __metadata__ key '%.*s' must map to a string, got %s. HINT: "
                               "safetensors metadata is a string->string map; encode other "
                               "values as strings",
                               path, NAME_MAX_SHOWN, kv->string, describe(kv, d, sizeof d));
        int64_t i = st->n_meta;
        st->meta[2 * i]     = dup_str(kv->string);
        st->meta[2 * i + 1] = dup_str(kv->valuestring);
        st->n_meta++;
        if (!st->meta[2 * i] || !st->meta[2 * i + 1]) return nomem(path);
    }
    // Repeated keys: sort a copy of the key pointers.
    const char **keys = malloc((size_t)(n + 1) * sizeof *keys);
    if (keys == NULL) return nomem(path);
    for (int64_t i = 0; i < n; i++) keys[i] = st->meta[2 * i];
    qsort(keys, (size_t)n, sizeof *keys, str_ptr_cmp);
    for (int64_t i = 1; i < n; i++) {
        if (!strcmp(keys[i - 1], keys[i])) {
            spry_status e = spry_errorf(SPRY_ERR_FORMAT,
                                        "%s: __metadata__ key '%.*s' appears twice", path,
                                        NAME_MAX_SHOWN, keys[i]);
            free(keys);
            return e;
        }
    }
    free(keys);
    return SPRY_OK;
}

// One tensor entry {"dtype", "shape", "data_offsets"}. Fills *info (name, dtype, shape, numel,
// nbytes, offset) and *rec; the data pointer is set once the layout is validated.
static spry_status parse_entry(spry_safetensors *st, const cJSON *e, uint64_t data_size,
                               spry_st_tensor_info *info, st_rec *rec) {
    const char *path = st->path;
    const char *name = e->string;
    char        d[64];
    int         nm = NAME_MAX_SHOWN;

    info->name = dup_str(name);
    if (info->name == NULL) return nomem(path);
    if (!cJSON_IsObject(e))
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': expected an object with dtype, shape and "
                           "data_offsets, got %s",
                           path, nm, name, describe(e, d, sizeof d));

    const cJSON *jdtype = NULL, *jshape = NULL, *joffs = NULL;
    const cJSON *f;
    cJSON_ArrayForEach(f, e) {
        const cJSON **slot = !strcmp(f->string, "dtype")          ? &jdtype
                             : !strcmp(f->string, "shape")        ? &jshape
                             : !strcmp(f->string, "data_offsets") ? &joffs
                                                                  : NULL;
        if (slot == NULL)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%.*s': unknown field '%.*s'. HINT: a safetensors "
                               "entry has only dtype, shape and data_offsets",
                               path, nm, name, nm, f->string);
        if (*slot != NULL)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%.*s': field '%s' appears twice",
                               path, nm, name, f->string);
        *slot = f;
    }
    const char *missing = !jdtype ? "dtype" : !jshape ? "shape" : !joffs ? "data_offsets" : NULL;
    if (missing)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%.*s': missing field '%s'", path, nm,
                           name, missing);

    // dtype
    if (!cJSON_IsString(jdtype))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%.*s': dtype must be a string, got %s",
                           path, nm, name, describe(jdtype, d, sizeof d));
    const st_dtype_def *dt = st_dtype_find(jdtype->valuestring);
    if (dt == NULL)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': unknown dtype '%.40s'. HINT: safetensors dtypes "
                           "are upper case: F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL, ...",
                           path, nm, name, jdtype->valuestring);
    info->st_dtype = dt->name;
    int sd         = spry_dtype_from_st_name(dt->name);
    info->dtype    = sd < 0 ? SPRY_DTYPE_COUNT : (spry_dtype)sd;

    // shape
    if (!cJSON_IsArray(jshape))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: tensor '%.*s': shape must be an array, got %s",
                           path, nm, name, describe(jshape, d, sizeof d));
    int      ndim  = cJSON_GetArraySize(jshape);
    int64_t *shape = malloc((size_t)(ndim + 1) * sizeof *shape);
    if (shape == NULL) return nomem(path);
    info->shape    = shape;
    info->ndim     = ndim;
    uint64_t numel = 1;
    bool     ovf   = false;
    int      k     = 0;
    cJSON_ArrayForEach(f, jshape) {
        if (!json_uint(f, &shape[k]))
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%.*s': shape[%d] = %s is not an integer in [0, %lld]",
                               path, nm, name, k, describe(f, d, sizeof d),
                               (long long)SPRY_ST_MAX_INT);
        ovf = ovf || !mul_u64(numel, (uint64_t)shape[k], &numel);
        k++;
    }
    uint64_t nbits = 0;
    if (ovf || numel > (uint64_t)INT64_MAX || !mul_u64(numel, (uint64_t)dt->bits, &nbits))
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': shape has too many elements (overflows 64 bits)",
                           path, nm, name);
    if (nbits % 8 != 0)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': %llu elements of %s (%d bits) do not fill whole "
                           "bytes",
                           path, nm, name, (unsigned long long)numel, dt->name, dt->bits);
    info->numel = (int64_t)numel;

    // data_offsets
    int64_t b = 0, en = 0;
    if (!cJSON_IsArray(joffs) || cJSON_GetArraySize(joffs) != 2 ||
        !json_uint(joffs->child, &b) || !json_uint(joffs->child->next, &en)) {
        char *txt = cJSON_PrintUnformatted(joffs);
        spry_status s =
            spry_errorf(SPRY_ERR_FORMAT,
                        "%s: tensor '%.*s': data_offsets = %.60s is not [BEGIN, END] with "
                        "integers in [0, %lld]",
                        path, nm, name, txt ? txt : "?", (long long)SPRY_ST_MAX_INT);
        free(txt);
        return s;
    }
    if (en < b)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': data_offsets [%lld, %lld] end before they begin",
                           path, nm, name, (long long)b, (long long)en);
    if ((uint64_t)(en - b) != nbits / 8)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': data_offsets [%lld, %lld] span %lld bytes but %s "
                           "x %llu elements need %llu",
                           path, nm, name, (long long)b, (long long)en, (long long)(en - b),
                           dt->name, (unsigned long long)numel, (unsigned long long)(nbits / 8));
    if ((uint64_t)en > data_size)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: tensor '%.*s': data_offsets [%lld, %lld] reach past the end of "
                           "the data section (%llu bytes, file %zu bytes). HINT: the file is "
                           "probably truncated; download or write it again",
                           path, nm, name, (long long)b, (long long)en,
                           (unsigned long long)data_size, st->map_size);
    info->offset = (uint64_t)b;
    info->nbytes = (size_t)(en - b);
    rec->begin   = (uint64_t)b;
    rec->end     = (uint64_t)en;
    return SPRY_OK;
}

// Tensors must tile [0, data_size) exactly, in offset order (Metadata::validate).
static spry_status check_layout(const spry_safetensors *st, st_rec *recs, uint64_t data_size) {
    const char *path = st->path;
    int         nm   = NAME_MAX_SHOWN;
    qsort(recs, (size_t)st->n, sizeof *recs, rec_cmp);
    uint64_t    expect = 0;
    const char *prev   = NULL;
    for (int64_t i = 0; i < st->n; i++) {
        const st_rec *r    = &recs[i];
        const char   *name = st->infos[r->idx].name;
        if (r->begin < expect)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%.*s': data_offsets [%llu, %llu] overlap tensor "
                               "'%.*s' that ends at %llu. HINT: tensors must not share bytes",
                               path, nm, name, (unsigned long long)r->begin,
                               (unsigned long long)r->end, nm, prev, (unsigned long long)expect);
        if (r->begin > expect)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: tensor '%.*s': data_offsets [%llu, %llu] leave a gap of %llu "
                               "bytes after offset %llu%s%.*s%s",
                               path, nm, name, (unsigned long long)r->begin,
                               (unsigned long long)r->end,
                               (unsigned long long)(r->begin - expect), (unsigned long long)expect,
                               prev ? " (end of '" : "", nm, prev ? prev : "", prev ? "')" : "");
        expect = r->end;
        prev   = name;
    }
    if (expect != data_size)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: %llu trailing bytes after the last tensor (tensors cover %llu of "
                           "%llu data bytes). HINT: safetensors files end with the last tensor; "
                           "extra bytes are rejected",
                           path, (unsigned long long)(data_size - expect),
                           (unsigned long long)expect, (unsigned long long)data_size);
    return SPRY_OK;
}

// Parses and validates the header text (a NUL-terminated copy of the N header bytes).
static spry_status parse_header(spry_safetensors *st, const char *hdr, size_t hlen) {
    const char *path = st->path;
    size_t      bad  = 0;
    if (!utf8_valid((const unsigned char *)hdr, hlen, &bad))
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: header is not valid UTF-8 (byte 0x%02x at header offset %zu)",
                           path, (unsigned)(unsigned char)hdr[bad], bad);
    size_t lead = 0;
    while (lead < hlen && json_ws(hdr[lead])) lead++;
    if (lead == hlen)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: header (%zu bytes) is empty or only whitespace",
                           path, hlen);
    if (hdr[lead] != '{')
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: header is not a JSON object: it starts with byte 0x%02x at header "
                           "offset %zu, not '{'. HINT: is this a safetensors file?",
                           path, (unsigned)(unsigned char)hdr[lead], lead);

    const char *end  = NULL;
    cJSON      *root = cJSON_ParseWithOpts(hdr, &end, 0);
    if (root == NULL) {
        size_t at = end ? (size_t)(end - hdr) : 0;
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: header is not valid JSON (error near header offset %zu: '%.20s')",
                           path, at, at < hlen ? hdr + at : "");
    }
    size_t tail = (size_t)(end - hdr);
    while (tail < hlen && json_ws(hdr[tail])) tail++;
    if (!cJSON_IsObject(root) || tail != hlen) {
        cJSON_Delete(root);
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: header is not a single JSON object (unexpected byte at header "
                           "offset %zu of %zu)",
                           path, tail, hlen);
    }

    spry_status  s         = SPRY_OK;
    uint64_t     data_size = (uint64_t)st->map_size - 8 - st->header_len;
    int64_t      n_keys    = cJSON_GetArraySize(root);
    st_rec      *recs      = calloc((size_t)n_keys + 1, sizeof *recs);
    st->infos              = calloc((size_t)n_keys + 1, sizeof *st->infos);
    st->by_name            = calloc((size_t)n_keys + 1, sizeof *st->by_name);
    const cJSON *meta      = NULL;
    if (!recs || !st->infos || !st->by_name) {
        s = nomem(path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (meta != NULL) {
                s = spry_errorf(SPRY_ERR_FORMAT, "%s: key '__metadata__' appears twice", path);
                goto done;
            }
            meta = e;
            continue;
        }
        int64_t i   = st->n++;
        recs[i].idx = i;
        s           = parse_entry(st, e, data_size, &st->infos[i], &recs[i]);
        if (s != SPRY_OK) goto done;
    }
    if (meta && (s = parse_metadata(st, meta)) != SPRY_OK) goto done;

    // Repeated tensor names: sort pointers by name, compare neighbours, keep the index.
    {
        const spry_st_tensor_info **ptrs = malloc((size_t)(st->n + 1) * sizeof *ptrs);
        if (ptrs == NULL) {
            s = nomem(path);
            goto done;
        }
        for (int64_t i = 0; i < st->n; i++) ptrs[i] = &st->infos[i];
        qsort(ptrs, (size_t)st->n, sizeof *ptrs, info_ptr_cmp);
        for (int64_t i = 0; i < st->n; i++) {
            st->by_name[i] = ptrs[i] - st->infos;
            if (i > 0 && !strcmp(ptrs[i - 1]->name, ptrs[i]->name)) {
                s = spry_errorf(SPRY_ERR_FORMAT,
                                "%s: tensor name '%.*s' appears twice in the header. HINT: "
                                "safetensors forbids duplicate keys",
                                path, NAME_MAX_SHOWN, ptrs[i]->name);
                break;
            }
        }
        free(ptrs);
        if (s != SPRY_OK) goto done;
    }

    if ((s = check_layout(st, recs, data_size)) != SPRY_OK) goto done;

    const unsigned char *data = (const unsigned char *)st->map + 8 + st->header_len;
    for (int64_t i = 0; i < st->n; i++) {
        spry_st_tensor_info *t = &st->infos[i];
        t->data                = data + t->offset;
        int                  bits = st_dtype_find(t->st_dtype)->bits;
        uintptr_t            esize = bits >= 8 ? (uintptr_t)bits / 8 : 1;
        t->aligned                 = ((uintptr_t)t->data % esize) == 0;
    }
done:
    free(recs);
    cJSON_Delete(root);
    return s;
}

spry_status spry_safetensors_open(const char *path, spry_safetensors **out) {
    *out = NULL;
    if (path == NULL) return spry_errorf(SPRY_ERR_ARG, "safetensors: path is NULL");
    spry_safetensors *st = calloc(1, sizeof *st);
    if (st == NULL || (st->path = dup_str(path)) == NULL) {
        free(st);
        return nomem(path);
    }

    spry_status s  = SPRY_OK;
    char       *hdr = NULL;
    int         fd  = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s = spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        s = spry_errorf(SPRY_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        s = spry_errorf(SPRY_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    if (sb.st_size < 8) {
        s = spry_errorf(SPRY_ERR_FORMAT,
                        "%s: file is %lld bytes, too small for the 8-byte header length. HINT: "
                        "the file is empty or truncated",
                        path, (long long)sb.st_size);
        goto fail;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        s = spry_errorf(SPRY_ERR_IO, "%s: file too large to map", path);
        goto fail;
    }
    st->map_size = (size_t)sb.st_size;
    st->map      = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        s       = spry_errorf(SPRY_ERR_IO, "%s: cannot mmap %zu bytes: %s", path, st->map_size,
                              strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;

    const unsigned char *p = st->map;
    uint64_t             n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | p[i];
    if (n > SPRY_ST_MAX_HEADER) {
        s = spry_errorf(SPRY_ERR_FORMAT,
                        "%s: header length %llu is over the %llu-byte limit. HINT: the first 8 "
                        "bytes must be the little-endian JSON header size; is this a safetensors "
                        "file?",
                        path, (unsigned long long)n, (unsigned long long)SPRY_ST_MAX_HEADER);
        goto fail;
    }
    if (n > (uint64_t)st->map_size - 8) {
        s = spry_errorf(SPRY_ERR_FORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes). HINT: "
                        "the file is truncated or not a safetensors file",
                        path, (unsigned long long)n, st->map_size);
        goto fail;
    }
    st->header_len = n;
    hdr            = malloc((size_t)n + 1);
    if (hdr == NULL) {
        s = nomem(path);
        goto fail;
    }
    memcpy(hdr, p + 8, (size_t)n);
    hdr[n] = '\0';
    s      = parse_header(st, hdr, (size_t)n);
    free(hdr);
    if (s != SPRY_OK) goto fail;
    *out = st;
    return SPRY_OK;

fail:
    if (fd >= 0) close(fd);
    spry_safetensors_close(st);
    return s;
}

const char *spry_safetensors_path(const spry_safetensors *st) { return st->path; }

int64_t spry_safetensors_n_tensors(const spry_safetensors *st) { return st->n; }

const spry_st_tensor_info *spry_safetensors_tensor_at(const spry_safetensors *st, int64_t i) {
    return (i >= 0 && i < st->n) ? &st->infos[i] : NULL;
}

const spry_st_tensor_info *spry_safetensors_find(const spry_safetensors *st, const char *name) {
    int64_t lo = 0, hi = st->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int     c   = strcmp(st->infos[st->by_name[mid]].name, name);
        if (c == 0) return &st->infos[st->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

spry_status spry_st_tensor_view(const spry_st_tensor_info *info, spry_tensor *out) {
    memset(out, 0, sizeof *out);
    if (info->dtype >= SPRY_DTYPE_COUNT)
        return spry_errorf(SPRY_ERR_UNSUPPORTED,
                           "tensor '%.*s': dtype %s has no spry dtype. HINT: convert it to F32, "
                           "BF16 or F16 before loading",
                           NAME_MAX_SHOWN, info->name, info->st_dtype);
    if (info->ndim > SPRY_MAX_DIMS)
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "tensor '%.*s': %d dims, spry supports %d",
                           NAME_MAX_SHOWN, info->name, info->ndim, SPRY_MAX_DIMS);
    // numel * element size was validated against the file size, so the strides cannot overflow
    spry_tensor_set_shape(out, info->dtype, info->ndim, info->shape);
    out->data  = (void *)(uintptr_t)info->data; // read-only mapping: see the header contract
    out->flags = SPRY_TENSOR_VIEW;
    snprintf(out->name, sizeof out->name, "%s", info->name);
    return SPRY_OK;
}

spry_status spry_safetensors_get(const spry_safetensors *st, const char *name, spry_tensor *out) {
    const spry_st_tensor_info *info = spry_safetensors_find(st, name);
    if (info == NULL) {
        memset(out, 0, sizeof *out);
        char   some[256] = "";
        size_t len       = 0;
        for (int64_t i = 0; i < st->n && i < 4 && len < sizeof some - 64; i++)
            len += (size_t)snprintf(some + len, sizeof some - len, "%s'%.40s'", i ? ", " : "",
                                    st->infos[i].name);
        return spry_errorf(SPRY_ERR_NOT_FOUND,
                           "%s: no tensor named '%.*s' (%lld tensors). HINT: the file has %s%s",
                           st->path, NAME_MAX_SHOWN, name, (long long)st->n,
                           st->n ? some : "no tensors", st->n > 4 ? ", ..." : "");
    }
    return spry_st_tensor_view(info, out);
}

const char *spry_safetensors_meta(const spry_safetensors *st, const char *key) {
    for (int64_t i = 0; i < st->n_meta; i++)
        if (!strcmp(st->meta[2 * i], key)) return st->meta[2 * i + 1];
    return NULL;
}

int64_t spry_safetensors_n_meta(const spry_safetensors *st) { return st->n_meta; }

bool spry_safetensors_meta_at(const spry_safetensors *st, int64_t i, const char **key,
                              const char **value) {
    if (i < 0 || i >= st->n_meta) return false;
    if (key) *key = st->meta[2 * i];
    if (value) *value = st->meta[2 * i + 1];
    return true;
}

// ---------------------------------------------------------------------------------------------
// Writer.

typedef struct strbuf {
    char  *p;
    size_t len, cap;
    bool   oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p   = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_int(strbuf *b, long long v) {
    char t[32];
    int  n = snprintf(t, sizeof t, "%lld", v);
    sb_put(b, t, (size_t)n);
}

// A JSON string literal; s is valid UTF-8 (checked by the caller).
static void sb_json_str(strbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char t[2] = {'\\', (char)c};
            sb_put(b, t, 2);
        } else if (c < 0x20) {
            char t[8];
            snprintf(t, sizeof t, "\\u%04x", c);
            sb_put(b, t, 6);
        } else {
            sb_put(b, s, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static bool str_ok(const char *s) {
    size_t bad;
    return s != NULL && utf8_valid((const unsigned char *)s, strlen(s), &bad);
}

// Writes all of buf, retrying short writes and EINTR.
static bool write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        size_t  chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t w     = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

// Checks the writer's arguments and computes each tensor's byte size.
static spry_status check_entries(const char *path, const spry_st_entry *entries, int64_t n,
                                 const char *const *meta_kv, int64_t n_meta, size_t *nbytes) {
    int nm = NAME_MAX_SHOWN;
    for (int64_t i = 0; i < n; i++) {
        const spry_st_entry *e = &entries[i];
        if (!str_ok(e->name) || !strcmp(e->name, "__metadata__"))
            return spry_errorf(SPRY_ERR_ARG,
                               "%s: entry %lld: name is NULL, not UTF-8 or '__metadata__'", path,
                               (long long)i);
        if ((unsigned)e->dtype >= SPRY_DTYPE_COUNT || e->ndim < 0 ||
            (e->ndim > 0 && e->shape == NULL))
            return spry_errorf(SPRY_ERR_ARG, "%s: tensor '%.*s': bad dtype %d or ndim %d", path,
                               nm, e->name, (int)e->dtype, e->ndim);
        uint64_t numel = 1;
        bool     ok    = true;
        for (int k = 0; k < e->ndim; k++) {
            if (e->shape[k] < 0 || e->shape[k] > SPRY_ST_MAX_INT)
                return spry_errorf(SPRY_ERR_ARG, "%s: tensor '%.*s': shape[%d] = %lld is invalid",
                                   path, nm, e->name, k, (long long)e->shape[k]);
            ok = ok && mul_u64(numel, (uint64_t)e->shape[k], &numel);
        }
        uint64_t bytes = 0;
        size_t   esize = spry_dtype_nbytes(e->dtype, 1);
        if (!ok || !mul_u64(numel, esize, &bytes) || bytes > (uint64_t)SPRY_ST_MAX_INT)
            return spry_errorf(SPRY_ERR_ARG, "%s: tensor '%.*s': too many elements", path, nm,
                               e->name);
        if (bytes > 0 && e->data == NULL)
            return spry_errorf(SPRY_ERR_ARG, "%s: tensor '%.*s': data is NULL", path, nm,
                               e->name);
        nbytes[i] = (size_t)bytes;
    }
    for (int64_t i = 0; i < 2 * n_meta; i++)
        if (!str_ok(meta_kv[i]))
            return spry_errorf(SPRY_ERR_ARG, "%s: metadata %s %lld is NULL or not UTF-8", path,
                               i % 2 ? "value" : "key", (long long)(i / 2));
    // Repeated names / keys: quadratic is fine for metadata, sort the tensor names.
    for (int64_t i = 0; i < n_meta; i++)
        for (int64_t j = 0; j < i; j++)
            if (!strcmp(meta_kv[2 * i], meta_kv[2 * j]))
                return spry_errorf(SPRY_ERR_ARG, "%s: metadata key '%.*s' given twice", path, nm,
                                   meta_kv[2 * i]);
    const char **names = malloc((size_t)(n + 1) * sizeof *names);
    if (names == NULL) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < n; i++) names[i] = entries[i].name;
    qsort(names, (size_t)n, sizeof *names, str_ptr_cmp);
    for (int64_t i = 1; i < n; i++) {
        if (!strcmp(names[i - 1], names[i])) {
            spry_status s = spry_errorf(SPRY_ERR_ARG, "%s: tensor name '%.*s' given twice", path,
                                        nm, names[i]);
            free(names);
            return s;
        }
    }
    free(names);
    return SPRY_OK;
}

// Best-effort fsync of path's directory so the rename is durable.
static void fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char       *dir   = NULL;
    if (slash == NULL) {
        dir = dup_str(".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        dir      = malloc(n + 1);
        if (dir) {
            memcpy(dir, path, n);
            dir[n] = '\0';
        }
    }
    if (dir == NULL) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); // some file systems refuse directory fsync; the data is already safe
        close(fd);
    }
    free(dir);
}

spry_status spry_safetensors_write(const char *path, const spry_st_entry *entries, int64_t n,
                                   const char *const *meta_kv, int64_t n_meta) {
    if (path == NULL || n < 0 || n_meta < 0 || (n > 0 && entries == NULL) ||
        (n_meta > 0 && meta_kv == NULL))
        return spry_errorf(SPRY_ERR_ARG, "safetensors write: NULL path/entries or negative count");

    spry_status s      = SPRY_OK;
    size_t     *nbytes = calloc((size_t)n + 1, sizeof *nbytes);
    uint64_t   *offs   = calloc((size_t)n + 1, sizeof *offs);
    int64_t    *order  = calloc((size_t)n + 1, sizeof *order);
    strbuf      h      = {0};
    char       *tmp    = NULL;
    int         fd     = -1;
    if (!nbytes || !offs || !order) {
        s = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if ((s = check_entries(path, entries, n, meta_kv, n_meta, nbytes)) != SPRY_OK) goto done;

    // Data layout: stable by element size, widest first (insertion sort keeps equal sizes in
    // the given order; n is the tensor count of one file).
    int64_t m = 0;
    for (size_t esize = 8; esize >= 1; esize /= 2)
        for (int64_t i = 0; i < n; i++)
            if (spry_dtype_nbytes(entries[i].dtype, 1) == esize) order[m++] = i;
    SPRY_ASSERT(m == n, "dtype element sizes must be 1, 2, 4 or 8 bytes");
    uint64_t pos = 0;
    for (int64_t j = 0; j < n; j++) {
        offs[order[j]] = pos;
        pos += nbytes[order[j]];
    }

    // Header: __metadata__ first, then the tensors in the given order.
    sb_puts(&h, "{");
    if (n_meta > 0) {
        sb_puts(&h, "\"__metadata__\":{");
        for (int64_t i = 0; i < n_meta; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_str(&h, meta_kv[2 * i]);
            sb_puts(&h, ":");
            sb_json_str(&h, meta_kv[2 * i + 1]);
        }
        sb_puts(&h, "}");
    }
    for (int64_t i = 0; i < n; i++) {
        const spry_st_entry *e = &entries[i];
        if (i || n_meta > 0) sb_puts(&h, ",");
        sb_json_str(&h, e->name);
        sb_puts(&h, ":{\"dtype\":\"");
        sb_puts(&h, spry_dtype_info(e->dtype)->st_name);
        sb_puts(&h, "\",\"shape\":[");
        for (int k = 0; k < e->ndim; k++) {
            if (k) sb_puts(&h, ",");
            sb_int(&h, (long long)e->shape[k]);
        }
        sb_puts(&h, "],\"data_offsets\":[");
        sb_int(&h, (long long)offs[i]);
        sb_puts(&h, ",");
        sb_int(&h, (long long)(offs[i] + nbytes[i]));
        sb_puts(&h, "]}");
    }
    sb_puts(&h, "}");
    while (!h.oom && h.len % 8 != 0) sb_puts(&h, " ");
    if (h.oom) {
        s = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory building the header", path);
        goto done;
    }
    if (h.len > SPRY_ST_MAX_HEADER) {
        s = spry_errorf(SPRY_ERR_ARG, "%s: header would be %zu bytes, over the %llu-byte limit",
                        path, h.len, (unsigned long long)SPRY_ST_MAX_HEADER);
        goto done;
    }

    size_t tlen = strlen(path) + 32;
    tmp         = malloc(tlen);
    if (tmp == NULL) {
        s = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, tlen, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        s = spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL; // nothing to remove
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    bool ok = write_all(fd, len8, 8) && write_all(fd, h.p, h.len);
    for (int64_t j = 0; ok && j < n; j++)
        ok = write_all(fd, entries[order[j]].data, nbytes[order[j]]);
    if (!ok) {
        s = spry_errorf(SPRY_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (fsync(fd) != 0) {
        s = spry_errorf(SPRY_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
        goto done;
    }
    int rc = close(fd);
    fd     = -1;
    if (rc != 0) {
        s = spry_errorf(SPRY_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        s = spry_errorf(SPRY_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp,
                        strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
    fsync_dir(path);

done:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(h.p);
    free(nbytes);
    free(offs);
    free(order);
    return s;
}
