/*
 * indexed.c -- Megatron / DeepSpeed MMIDIDX indexed datasets: an atomic builder and a validating,
 * zero-copy mmap reader (see indexed.h; the format and both dtype-code tables are in
 * shared/notes/data_efficiency.md 3.3 and docs/data.md).
 *
 * References: Megatron-LM megatron/core/datasets/indexed_dataset.py (_IndexWriter, _IndexReader,
 * DType), DeepSpeed deepspeed/runtime/data_pipeline/data_sampling/indexed_dataset.py
 * (MMapIndexedDataset, dtypes). Megatron's reader trusts the file; this one checks every field
 * first, so a corrupt file gives an error naming the file, field and value instead of a crash.
 * The .idx arrays start at byte 34 and are therefore unaligned: they are read with memcpy. The
 * host is assumed little-endian (as the format is).
 */
#define _POSIX_C_SOURCE 200809L

#include "spry/indexed.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define IDX_MAGIC        "MMIDIDX\0\0"
#define IDX_MAGIC_LEN    9
#define IDX_VERSION      1
#define IDX_HEADER_BYTES 34 // magic 9 + version 8 + code 1 + count 8 + doc_count 8

// ---------------------------------------------------------------------------------------------
// dtype tables. To add a type: a spry_indexed_dtype value, a k_dtypes row, and its code in the
// table(s) that define one.

typedef struct dtype_def {
    const char *name;
    size_t      size;
} dtype_def;

static const dtype_def k_dtypes[SPRY_INDEXED_DTYPE_COUNT] = {
    [SPRY_INDEXED_DTYPE_U8] = {"u8", 1},   [SPRY_INDEXED_DTYPE_I8] = {"i8", 1},
    [SPRY_INDEXED_DTYPE_I16] = {"i16", 2}, [SPRY_INDEXED_DTYPE_I32] = {"i32", 4},
    [SPRY_INDEXED_DTYPE_I64] = {"i64", 8}, [SPRY_INDEXED_DTYPE_U16] = {"u16", 2},
    [SPRY_INDEXED_DTYPE_U32] = {"u32", 4}, [SPRY_INDEXED_DTYPE_U64] = {"u64", 8},
    [SPRY_INDEXED_DTYPE_F32] = {"f32", 4}, [SPRY_INDEXED_DTYPE_F64] = {"f64", 8},
};

#define N_CODES 9 // codes 1..8; slot 0 unused
// DeepSpeed: deepspeed/runtime/data_pipeline/data_sampling/indexed_dataset.py `dtypes`.
static const spry_indexed_dtype k_deepspeed_codes[N_CODES] = {
    SPRY_INDEXED_DTYPE_COUNT, SPRY_INDEXED_DTYPE_U8,  SPRY_INDEXED_DTYPE_I8,
    SPRY_INDEXED_DTYPE_I16,   SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_DTYPE_I64,
    SPRY_INDEXED_DTYPE_U16,   SPRY_INDEXED_DTYPE_U32, SPRY_INDEXED_DTYPE_U64,
};
// Megatron-LM: megatron/core/datasets/indexed_dataset.py `DType`.
static const spry_indexed_dtype k_megatron_codes[N_CODES] = {
    SPRY_INDEXED_DTYPE_COUNT, SPRY_INDEXED_DTYPE_U8,  SPRY_INDEXED_DTYPE_I8,
    SPRY_INDEXED_DTYPE_I16,   SPRY_INDEXED_DTYPE_I32, SPRY_INDEXED_DTYPE_I64,
    SPRY_INDEXED_DTYPE_F64,   SPRY_INDEXED_DTYPE_F32, SPRY_INDEXED_DTYPE_U16,
};

static const spry_indexed_dtype *table_codes(spry_indexed_table t) {
    return t == SPRY_INDEXED_TABLE_MEGATRON ? k_megatron_codes : k_deepspeed_codes;
}

static bool dtype_valid(spry_indexed_dtype dt) {
    return (unsigned)dt < (unsigned)SPRY_INDEXED_DTYPE_COUNT;
}

size_t spry_indexed_dtype_size(spry_indexed_dtype dt) {
    return dtype_valid(dt) ? k_dtypes[dt].size : 0;
}

const char *spry_indexed_dtype_name(spry_indexed_dtype dt) {
    return dtype_valid(dt) ? k_dtypes[dt].name : "?";
}

const char *spry_indexed_table_name(spry_indexed_table t) {
    switch (t) {
    case SPRY_INDEXED_TABLE_AUTO: return "auto";
    case SPRY_INDEXED_TABLE_DEEPSPEED: return "deepspeed";
    case SPRY_INDEXED_TABLE_MEGATRON: return "megatron";
    }
    return "?";
}

int spry_indexed_dtype_code(spry_indexed_table t, spry_indexed_dtype dt) {
    if (!dtype_valid(dt)) return -1;
    const spry_indexed_dtype *codes = table_codes(t);
    for (int c = 1; c < N_CODES; c++)
        if (codes[c] == dt) return c;
    return -1;
}

spry_indexed_dtype spry_indexed_dtype_from_code(spry_indexed_table t, int code) {
    if (code < 1 || code >= N_CODES) return SPRY_INDEXED_DTYPE_COUNT;
    return table_codes(t)[code];
}

spry_indexed_dtype spry_indexed_dtype_for_vocab(int64_t vocab_size) {
    return vocab_size > 0 && vocab_size < 65500 ? SPRY_INDEXED_DTYPE_U16 : SPRY_INDEXED_DTYPE_I32;
}

spry_indexed_dtype spry_indexed_dtype_fit(int64_t lo, int64_t hi) {
    if (lo >= 0) {
        if (hi <= 255) return SPRY_INDEXED_DTYPE_U8;
        if (hi <= 65535) return SPRY_INDEXED_DTYPE_U16;
        if (hi <= 4294967295LL) return SPRY_INDEXED_DTYPE_U32;
        return SPRY_INDEXED_DTYPE_U64;
    }
    if (lo >= -128 && hi <= 127) return SPRY_INDEXED_DTYPE_I8;
    if (lo >= -32768 && hi <= 32767) return SPRY_INDEXED_DTYPE_I16;
    if (lo >= INT32_MIN && hi <= INT32_MAX) return SPRY_INDEXED_DTYPE_I32;
    return SPRY_INDEXED_DTYPE_I64;
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

static char *str_cat(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char  *s  = malloc(na + nb + 1);
    if (s == NULL) return NULL;
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

static inline uint64_t load_u64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline int64_t load_i64(const uint8_t *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline int32_t load_i32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

// Best-effort fsync of the directory holding path so renames are durable.
static void fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char        dir[4096];
    if (slash == NULL) {
        strcpy(dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); // some file systems refuse directory fsync; the files are already synced
        close(fd);
    }
}

// ---------------------------------------------------------------------------------------------
// Builder.

struct spry_indexed_builder {
    char              *bin_path, *idx_path; // final names
    char              *bin_tmp, *idx_tmp;   // "<name>.tmp.<pid>"
    FILE              *bin;                 // open while adding
    spry_indexed_dtype dtype;
    spry_indexed_table table;
    size_t             esize;
    int32_t           *sizes; // (n_items,)
    int64_t            n_items, cap_items;
    int64_t           *doc_idx; // (n_doc_idx,), starts [0]
    int64_t            n_doc_idx, cap_doc_idx;
    void              *scratch; // conversion buffer for add_item_i32
    size_t             scratch_cap;
    spry_status        failed; // sticky: SPRY_OK until an I/O or allocation error
    bool               finalized;
};

static spry_status builder_fail(spry_indexed_builder *b, spry_status st) {
    b->failed = st;
    return st;
}

static spry_status builder_failed_msg(const spry_indexed_builder *b) {
    return spry_errorf(b->failed, "%s: the builder failed earlier (%s); nothing will be written",
                       b->bin_path, spry_status_name(b->failed));
}

// Grows *arr (elements of esz bytes) to hold at least need elements.
static bool grow(void **arr, int64_t *cap, int64_t need, size_t esz) {
    if (need <= *cap) return true;
    int64_t nc = *cap ? *cap : 1024;
    while (nc < need) nc *= 2;
    void *p = realloc(*arr, (size_t)nc * esz);
    if (p == NULL) return false;
    *arr = p;
    *cap = nc;
    return true;
}

spry_status spry_indexed_builder_init(const char *prefix, spry_indexed_dtype dtype,
                                      spry_indexed_table table, spry_indexed_builder **out) {
    *out = NULL;
    if (prefix == NULL) return spry_errorf(SPRY_ERR_ARG, "indexed builder: prefix is NULL");
    if (table == SPRY_INDEXED_TABLE_AUTO) table = SPRY_INDEXED_TABLE_DEEPSPEED;
    if (!dtype_valid(dtype) || (table != SPRY_INDEXED_TABLE_DEEPSPEED &&
                                table != SPRY_INDEXED_TABLE_MEGATRON))
        return spry_errorf(SPRY_ERR_ARG, "%s: indexed builder: bad dtype %d or table %d", prefix,
                           (int)dtype, (int)table);
    if (spry_indexed_dtype_code(table, dtype) < 0)
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: dtype %s has no code in %s's table HINT: %s", prefix,
                           spry_indexed_dtype_name(dtype), spry_indexed_table_name(table),
                           table == SPRY_INDEXED_TABLE_MEGATRON
                               ? "use i64 (or i32), or the DeepSpeed table"
                               : "use the Megatron table for f32/f64");

    spry_indexed_builder *b = calloc(1, sizeof *b);
    if (b == NULL) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", prefix);
    b->dtype = dtype;
    b->table = table;
    b->esize = k_dtypes[dtype].size;
    char pid[32];
    snprintf(pid, sizeof pid, ".tmp.%ld", (long)getpid());
    b->bin_path = str_cat(prefix, ".bin");
    b->idx_path = str_cat(prefix, ".idx");
    if (b->bin_path && b->idx_path) {
        b->bin_tmp = str_cat(b->bin_path, pid);
        b->idx_tmp = str_cat(b->idx_path, pid);
    }
    if (!b->bin_tmp || !b->idx_tmp || !grow((void **)&b->doc_idx, &b->cap_doc_idx, 1, 8)) {
        spry_indexed_builder_free(b);
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", prefix);
    }
    b->doc_idx[0]  = 0;
    b->n_doc_idx   = 1;
    b->bin         = fopen(b->bin_tmp, "wb");
    if (b->bin == NULL) {
        spry_status s =
            spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", b->bin_tmp, strerror(errno));
        spry_indexed_builder_free(b);
        return s;
    }
    *out = b;
    return SPRY_OK;
}

spry_status spry_indexed_builder_add_item(spry_indexed_builder *b, const void *data, int64_t n) {
    if (b->failed != SPRY_OK) return builder_failed_msg(b);
    if (b->finalized)
        return spry_errorf(SPRY_ERR_ARG, "%s: add_item after finalize", b->bin_path);
    if (n < 0 || n > INT32_MAX || (n > 0 && data == NULL))
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: item %lld: length %lld is not in [0, 2147483647] or data is NULL",
                           b->bin_path, (long long)b->n_items, (long long)n);
    if (!grow((void **)&b->sizes, &b->cap_items, b->n_items + 1, sizeof(int32_t))) {
        spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory at item %lld", b->bin_path,
                    (long long)b->n_items);
        return builder_fail(b, SPRY_ERR_NOMEM);
    }
    if (n > 0 && fwrite(data, b->esize, (size_t)n, b->bin) != (size_t)n) {
        spry_errorf(SPRY_ERR_IO, "%s: write failed at item %lld: %s", b->bin_tmp,
                    (long long)b->n_items, strerror(errno));
        return builder_fail(b, SPRY_ERR_IO);
    }
    b->sizes[b->n_items++] = (int32_t)n;
    return SPRY_OK;
}

// Converts ids to the builder's dtype into dst; returns the index of the first id the dtype
// cannot hold exactly, or -1.
#define CONVERT_IDS(T, lo, hi)                                                                     \
    do {                                                                                           \
        T *d = dst;                                                                                \
        for (int64_t i = 0; i < n; i++) {                                                          \
            if ((double)ids[i] < (double)(lo) || (double)ids[i] > (double)(hi)) return i;          \
            d[i] = (T)ids[i];                                                                      \
        }                                                                                          \
        return -1;                                                                                 \
    } while (0)

static int64_t convert_ids(spry_indexed_dtype dt, const int32_t *ids, int64_t n, void *dst) {
    switch (dt) {
    case SPRY_INDEXED_DTYPE_U8: CONVERT_IDS(uint8_t, 0, UINT8_MAX);
    case SPRY_INDEXED_DTYPE_I8: CONVERT_IDS(int8_t, INT8_MIN, INT8_MAX);
    case SPRY_INDEXED_DTYPE_I16: CONVERT_IDS(int16_t, INT16_MIN, INT16_MAX);
    case SPRY_INDEXED_DTYPE_U16: CONVERT_IDS(uint16_t, 0, UINT16_MAX);
    case SPRY_INDEXED_DTYPE_I32: CONVERT_IDS(int32_t, INT32_MIN, INT32_MAX);
    case SPRY_INDEXED_DTYPE_U32: CONVERT_IDS(uint32_t, 0, UINT32_MAX);
    case SPRY_INDEXED_DTYPE_I64: CONVERT_IDS(int64_t, INT32_MIN, INT32_MAX);
    case SPRY_INDEXED_DTYPE_U64: CONVERT_IDS(uint64_t, 0, INT32_MAX);
    case SPRY_INDEXED_DTYPE_F64: CONVERT_IDS(double, INT32_MIN, INT32_MAX);
    case SPRY_INDEXED_DTYPE_F32: {
        float *d = dst;
        for (int64_t i = 0; i < n; i++) {
            d[i] = (float)ids[i];
            if ((double)d[i] != (double)ids[i]) return i; // above 2^24 and not representable
        }
        return -1;
    }
    case SPRY_INDEXED_DTYPE_COUNT: break;
    }
    return 0;
}

spry_status spry_indexed_builder_add_item_i32(spry_indexed_builder *b, const int32_t *ids,
                                              int64_t n) {
    if (b->failed != SPRY_OK) return builder_failed_msg(b);
    if (n < 0 || n > INT32_MAX || (n > 0 && ids == NULL))
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: item %lld: length %lld is not in [0, 2147483647] or ids is NULL",
                           b->bin_path, (long long)b->n_items, (long long)n);
    size_t need = (size_t)n * b->esize;
    if (need > b->scratch_cap) {
        void *p = realloc(b->scratch, need);
        if (p == NULL) {
            spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory at item %lld", b->bin_path,
                        (long long)b->n_items);
            return builder_fail(b, SPRY_ERR_NOMEM);
        }
        b->scratch     = p;
        b->scratch_cap = need;
    }
    int64_t bad = n > 0 ? convert_ids(b->dtype, ids, n, b->scratch) : -1;
    if (bad >= 0)
        return spry_errorf(SPRY_ERR_ARG,
                           "%s: item %lld: token %lld = %d does not fit dtype %s HINT: pick a "
                           "wider dtype (spry_indexed_dtype_for_vocab)",
                           b->bin_path, (long long)b->n_items, (long long)bad, (int)ids[bad],
                           k_dtypes[b->dtype].name);
    return spry_indexed_builder_add_item(b, b->scratch, n);
}

spry_status spry_indexed_builder_end_document(spry_indexed_builder *b) {
    if (b->failed != SPRY_OK) return builder_failed_msg(b);
    if (b->finalized)
        return spry_errorf(SPRY_ERR_ARG, "%s: end_document after finalize", b->bin_path);
    if (!grow((void **)&b->doc_idx, &b->cap_doc_idx, b->n_doc_idx + 1, sizeof(int64_t))) {
        spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory at document %lld", b->bin_path,
                    (long long)(b->n_doc_idx - 1));
        return builder_fail(b, SPRY_ERR_NOMEM);
    }
    b->doc_idx[b->n_doc_idx++] = b->n_items;
    return SPRY_OK;
}

int64_t spry_indexed_builder_n_items(const spry_indexed_builder *b) { return b->n_items; }
int64_t spry_indexed_builder_n_docs(const spry_indexed_builder *b) { return b->n_doc_idx - 1; }

// Closes f after flushing and fsyncing it; false (errno set) on any failure.
static bool close_synced(FILE *f) {
    bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    int  e  = errno;
    if (fclose(f) != 0 && ok) return false;
    errno = e;
    return ok;
}

static bool write_idx(const spry_indexed_builder *b, FILE *f) {
    uint8_t hdr[IDX_HEADER_BYTES];
    uint64_t version = IDX_VERSION, count = (uint64_t)b->n_items,
             doc_count = (uint64_t)b->n_doc_idx;
    memcpy(hdr, IDX_MAGIC, IDX_MAGIC_LEN);
    memcpy(hdr + 9, &version, 8);
    hdr[17] = (uint8_t)spry_indexed_dtype_code(b->table, b->dtype);
    memcpy(hdr + 18, &count, 8);
    memcpy(hdr + 26, &doc_count, 8);
    if (fwrite(hdr, 1, sizeof hdr, f) != sizeof hdr) return false;
    size_t n = (size_t)b->n_items;
    if (n > 0 && fwrite(b->sizes, sizeof(int32_t), n, f) != n) return false;
    // pointers: exclusive prefix sum of sizes * element size, written in chunks.
    int64_t chunk[1024], ptr = 0;
    for (int64_t i = 0; i < b->n_items;) {
        int64_t k = 0;
        for (; k < 1024 && i < b->n_items; k++, i++) {
            chunk[k] = ptr;
            ptr += (int64_t)b->sizes[i] * (int64_t)b->esize;
        }
        if (fwrite(chunk, sizeof(int64_t), (size_t)k, f) != (size_t)k) return false;
    }
    return fwrite(b->doc_idx, sizeof(int64_t), (size_t)b->n_doc_idx, f) == (size_t)b->n_doc_idx;
}

spry_status spry_indexed_builder_finalize(spry_indexed_builder *b) {
    if (b->failed != SPRY_OK) return builder_failed_msg(b);
    if (b->finalized) return spry_errorf(SPRY_ERR_ARG, "%s: finalized twice", b->bin_path);
    if (b->doc_idx[b->n_doc_idx - 1] != b->n_items) SPRY_TRY(spry_indexed_builder_end_document(b));

    FILE *bin = b->bin;
    b->bin    = NULL;
    if (!close_synced(bin)) {
        spry_errorf(SPRY_ERR_IO, "%s: write/fsync failed: %s", b->bin_tmp, strerror(errno));
        return builder_fail(b, SPRY_ERR_IO);
    }
    FILE *idx = fopen(b->idx_tmp, "wb");
    if (idx == NULL) {
        spry_errorf(SPRY_ERR_IO, "%s: cannot create: %s", b->idx_tmp, strerror(errno));
        return builder_fail(b, SPRY_ERR_IO);
    }
    bool ok = write_idx(b, idx);
    int  e  = errno;
    ok      = close_synced(idx) && ok;
    if (!ok) {
        spry_errorf(SPRY_ERR_IO, "%s: write/fsync failed: %s", b->idx_tmp, strerror(e ? e : errno));
        return builder_fail(b, SPRY_ERR_IO);
    }
    if (rename(b->bin_tmp, b->bin_path) != 0) {
        spry_errorf(SPRY_ERR_IO, "%s: cannot rename %s over it: %s", b->bin_path, b->bin_tmp,
                    strerror(errno));
        return builder_fail(b, SPRY_ERR_IO);
    }
    if (rename(b->idx_tmp, b->idx_path) != 0) {
        spry_errorf(SPRY_ERR_IO, "%s: cannot rename %s over it: %s", b->idx_path, b->idx_tmp,
                    strerror(errno));
        return builder_fail(b, SPRY_ERR_IO);
    }
    fsync_dir(b->idx_path);
    b->finalized = true;
    return SPRY_OK;
}

void spry_indexed_builder_free(spry_indexed_builder *b) {
    if (b == NULL) return;
    if (b->bin) fclose(b->bin);
    if (!b->finalized) {
        if (b->bin_tmp) unlink(b->bin_tmp);
        if (b->idx_tmp) unlink(b->idx_tmp);
    }
    free(b->bin_path);
    free(b->idx_path);
    free(b->bin_tmp);
    free(b->idx_tmp);
    free(b->sizes);
    free(b->doc_idx);
    free(b->scratch);
    free(b);
}

// ---------------------------------------------------------------------------------------------
// Reader.

struct spry_indexed {
    char              *prefix, *idx_path, *bin_path;
    const uint8_t     *idx; // mapping of the .idx (NULL if empty)
    size_t             idx_size;
    const uint8_t     *bin; // mapping of the .bin (NULL if empty)
    size_t             bin_size;
    spry_indexed_dtype dtype;
    spry_indexed_table table;
    int                code;
    size_t             esize;
    int64_t            count, doc_count, n_elems;
    const uint8_t     *sizes;    // i32[count], unaligned, inside idx
    const uint8_t     *pointers; // i64[count], unaligned
    const uint8_t     *doc_idx;  // i64[doc_count], unaligned
};

// A non-NULL address handed out for empty items of an empty .bin.
static const uint64_t k_empty_item = 0;

// mmaps path read-only; an empty file gives *data = NULL, *size = 0.
static spry_status map_file(const char *path, const uint8_t **data, size_t *size) {
    *data  = NULL;
    *size  = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s%s", path, strerror(errno),
                           errno == ENOENT ? " HINT: pass the prefix without .bin/.idx" : "");
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        spry_status s = spry_errorf(SPRY_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return spry_errorf(SPRY_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            spry_status s = spry_errorf(SPRY_ERR_IO, "%s: cannot mmap %lld bytes: %s", path,
                                        (long long)st.st_size, strerror(errno));
            close(fd);
            return s;
        }
        *data = p;
        *size = (size_t)st.st_size;
    }
    close(fd);
    return SPRY_OK;
}

void spry_indexed_close(spry_indexed *ds) {
    if (ds == NULL) return;
    if (ds->idx) munmap((void *)ds->idx, ds->idx_size);
    if (ds->bin) munmap((void *)ds->bin, ds->bin_size);
    free(ds->prefix);
    free(ds->idx_path);
    free(ds->bin_path);
    free(ds);
}

// Writes the 9 magic bytes as a C string literal ("MMIDIDX\0\0") into buf (>= 40 bytes).
static void describe_magic(const uint8_t *m, char *buf) {
    char *p = buf;
    for (int i = 0; i < IDX_MAGIC_LEN; i++) {
        if (m[i] >= 0x20 && m[i] < 0x7f && m[i] != '"' && m[i] != '\\')
            *p++ = (char)m[i];
        else
            p += sprintf(p, "\\x%02x", m[i]);
    }
    *p = '\0';
}

// Resolves the dtype of code under table (AUTO: by the element size that matches the .bin).
static spry_status resolve_dtype(spry_indexed *ds, spry_indexed_table table) {
    int code = ds->code;
    if (table != SPRY_INDEXED_TABLE_AUTO) {
        spry_indexed_dtype dt = spry_indexed_dtype_from_code(table, code);
        if (dt == SPRY_INDEXED_DTYPE_COUNT)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: field 'dtype code' = %d is not in %s's table (codes 1-8)",
                               ds->idx_path, code, spry_indexed_table_name(table));
        ds->dtype = dt;
        ds->table = table;
        return SPRY_OK;
    }
    if (code < 1 || code >= N_CODES)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: field 'dtype code' = %d is not in Megatron's or DeepSpeed's "
                           "table (codes 1-8)",
                           ds->idx_path, code);
    spry_indexed_dtype d_ds = k_deepspeed_codes[code], d_mg = k_megatron_codes[code];
    size_t             s_ds = k_dtypes[d_ds].size, s_mg = k_dtypes[d_mg].size;
    ds->table               = SPRY_INDEXED_TABLE_DEEPSPEED;
    ds->dtype               = d_ds;
    if (s_ds == s_mg || ds->n_elems == 0) return SPRY_OK; // 1-5 agree; 7 is u32 (documented)
    // Codes 6 and 8: the element sizes differ (2 vs 8 bytes); the .bin size decides.
    uint64_t n = (uint64_t)ds->n_elems;
    if (n <= UINT64_MAX / 8 && n * s_mg == ds->bin_size && n * s_ds != ds->bin_size) {
        ds->table = SPRY_INDEXED_TABLE_MEGATRON;
        ds->dtype = d_mg;
    }
    return SPRY_OK; // a size matching neither is reported by the .bin size check
}

static spry_status validate(spry_indexed *ds, spry_indexed_table table) {
    const char *ip = ds->idx_path;
    if (ds->idx_size < IDX_HEADER_BYTES)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: truncated: file size = %zu bytes, the header needs %d", ip,
                           ds->idx_size, IDX_HEADER_BYTES);
    const uint8_t *h = ds->idx;
    if (memcmp(h, IDX_MAGIC, IDX_MAGIC_LEN) != 0) {
        char got[48];
        describe_magic(h, got);
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: field 'magic' = \"%s\", expected \"MMIDIDX\\x00\\x00\" HINT: not "
                           "an mmap indexed dataset (Megatron's old 'cached' format is not "
                           "supported)",
                           ip, got);
    }
    uint64_t version = load_u64(h + 9);
    if (version != IDX_VERSION)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: field 'version' = %llu, expected %d", ip,
                           (unsigned long long)version, IDX_VERSION);
    ds->code           = h[17];
    uint64_t count     = load_u64(h + 18);
    uint64_t doc_count = load_u64(h + 26);
    size_t   body      = ds->idx_size - IDX_HEADER_BYTES;
    if (count > body / 12)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: field 'count' = %llu: a %zu-byte file holds at most %zu items "
                           "(truncated or corrupt)",
                           ip, (unsigned long long)count, ds->idx_size, body / 12);
    size_t rest = body - (size_t)count * 12;
    if (doc_count > rest / 8)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: field 'doc_count' = %llu: only %zu bytes remain after %llu items "
                           "(room for %zu entries; truncated or corrupt)",
                           ip, (unsigned long long)doc_count, rest, (unsigned long long)count,
                           rest / 8);
    if (rest != (size_t)doc_count * 8)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: file size = %zu bytes, expected %zu for count = %llu and "
                           "doc_count = %llu (%zu trailing bytes)",
                           ip, ds->idx_size, ds->idx_size - (rest - (size_t)doc_count * 8),
                           (unsigned long long)count, (unsigned long long)doc_count,
                           rest - (size_t)doc_count * 8);
    ds->count     = (int64_t)count;
    ds->doc_count = (int64_t)doc_count;
    ds->sizes     = h + IDX_HEADER_BYTES;
    ds->pointers  = ds->sizes + 4 * count;
    ds->doc_idx   = ds->pointers + 8 * count;

    // sizes: non-negative; their sum (checked) is the element count of the .bin.
    int64_t n_elems = 0;
    for (int64_t i = 0; i < ds->count; i++) {
        int32_t s = load_i32(ds->sizes + 4 * i);
        if (s < 0)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: field 'sizes[%lld]' = %d is negative", ip,
                               (long long)i, (int)s);
        if (n_elems > INT64_MAX - s)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: field 'sizes': the sum overflows at %lld", ip,
                               (long long)i);
        n_elems += s;
    }
    ds->n_elems = n_elems;
    SPRY_TRY(resolve_dtype(ds, table));
    ds->esize = k_dtypes[ds->dtype].size;

    uint64_t need = 0;
    bool     ok   = (uint64_t)n_elems <= UINT64_MAX / ds->esize;
    if (ok) need = (uint64_t)n_elems * ds->esize;
    if (!ok || need != ds->bin_size)
        return spry_errorf(SPRY_ERR_FORMAT,
                           "%s: file size = %zu bytes, but the sizes in %s sum to %lld elements "
                           "of %s (code %d, %s table) = %s%llu bytes%s",
                           ds->bin_path, ds->bin_size, ip, (long long)n_elems,
                           k_dtypes[ds->dtype].name, ds->code, spry_indexed_table_name(ds->table),
                           ok ? "" : "more than ", ok ? (unsigned long long)need : UINT64_MAX,
                           ok && need > ds->bin_size ? " (sizes exceed the .bin: truncated?)"
                                                     : "");

    // pointers: exactly the exclusive prefix sum (so each item is inside the .bin and aligned).
    int64_t expect = 0;
    for (int64_t i = 0; i < ds->count; i++) {
        int64_t p = load_i64(ds->pointers + 8 * i);
        if (p != expect)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: field 'pointers[%lld]' = %lld, expected %lld (the sum of the "
                               "earlier sizes x %zu bytes; .bin is %zu bytes)",
                               ip, (long long)i, (long long)p, (long long)expect, ds->esize,
                               ds->bin_size);
        expect += (int64_t)load_i32(ds->sizes + 4 * i) * (int64_t)ds->esize;
    }

    // doc_idx: starts at 0, non-decreasing, within [0, count].
    int64_t prev = 0;
    for (int64_t j = 0; j < ds->doc_count; j++) {
        int64_t v = load_i64(ds->doc_idx + 8 * j);
        if (j == 0 && v != 0)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: field 'doc_idx[0]' = %lld, expected 0", ip,
                               (long long)v);
        if (v < prev)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: field 'doc_idx[%lld]' = %lld is less than doc_idx[%lld] = "
                               "%lld (document index not monotonic)",
                               ip, (long long)j, (long long)v, (long long)(j - 1), (long long)prev);
        if (v > ds->count)
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: field 'doc_idx[%lld]' = %lld exceeds count = %lld", ip,
                               (long long)j, (long long)v, (long long)ds->count);
        prev = v;
    }
    return SPRY_OK;
}

spry_status spry_indexed_open(const char *prefix, spry_indexed_table table, spry_indexed **out) {
    *out = NULL;
    if (prefix == NULL) return spry_errorf(SPRY_ERR_ARG, "indexed open: prefix is NULL");
    if ((unsigned)table > (unsigned)SPRY_INDEXED_TABLE_MEGATRON)
        return spry_errorf(SPRY_ERR_ARG, "%s: indexed open: bad table %d", prefix, (int)table);
    spry_indexed *ds = calloc(1, sizeof *ds);
    if (ds == NULL) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", prefix);
    ds->prefix   = str_cat(prefix, "");
    ds->idx_path = str_cat(prefix, ".idx");
    ds->bin_path = str_cat(prefix, ".bin");
    spry_status s;
    if (!ds->prefix || !ds->idx_path || !ds->bin_path) {
        s = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", prefix);
        goto fail;
    }
    s = map_file(ds->idx_path, &ds->idx, &ds->idx_size);
    if (s == SPRY_OK) s = map_file(ds->bin_path, &ds->bin, &ds->bin_size);
    if (s == SPRY_OK) s = validate(ds, table);
    if (s != SPRY_OK) goto fail;
    *out = ds;
    return SPRY_OK;
fail:
    spry_indexed_close(ds);
    return s;
}

const char *spry_indexed_prefix(const spry_indexed *ds) { return ds->prefix; }
spry_indexed_dtype spry_indexed_elem_dtype(const spry_indexed *ds) { return ds->dtype; }
spry_indexed_table spry_indexed_code_table(const spry_indexed *ds) { return ds->table; }
int spry_indexed_code(const spry_indexed *ds) { return ds->code; }
int64_t spry_indexed_n_items(const spry_indexed *ds) { return ds->count; }
int64_t spry_indexed_n_elems(const spry_indexed *ds) { return ds->n_elems; }
int64_t spry_indexed_n_docs(const spry_indexed *ds) {
    return ds->doc_count > 0 ? ds->doc_count - 1 : 0;
}

const void *spry_indexed_item(const spry_indexed *ds, int64_t i, int64_t *n) {
    SPRY_ASSERT(i >= 0 && i < ds->count, "%s: item %lld of %lld", ds->prefix, (long long)i,
                (long long)ds->count);
    *n = load_i32(ds->sizes + 4 * i);
    if (ds->bin == NULL) return &k_empty_item;
    return ds->bin + load_i64(ds->pointers + 8 * i);
}

void spry_indexed_doc_range(const spry_indexed *ds, int64_t d, int64_t *first, int64_t *end) {
    SPRY_ASSERT(d >= 0 && d < spry_indexed_n_docs(ds), "%s: document %lld of %lld", ds->prefix,
                (long long)d, (long long)spry_indexed_n_docs(ds));
    *first = load_i64(ds->doc_idx + 8 * d);
    *end   = load_i64(ds->doc_idx + 8 * (d + 1));
}

// dst[k] = src[k] for k < n, flagging any value outside [0, INT32_MAX]. The loop has no early
// exit so the compiler can vectorize it; the bad position is searched for only on failure.
#define COPY_TOKENS(T, check)                                                                      \
    do {                                                                                           \
        const T *src = (const T *)p;                                                               \
        int      bad = 0;                                                                          \
        for (int64_t k = 0; k < n; k++) {                                                          \
            T v = src[k];                                                                          \
            if (check) bad |= (v < 0) | ((uint64_t)v > (uint64_t)INT32_MAX);                       \
            dst[k] = (int32_t)v;                                                                   \
        }                                                                                          \
        if (bad) {                                                                                 \
            for (int64_t k = 0; k < n; k++) {                                                      \
                T v = src[k];                                                                      \
                if (v < 0 || (uint64_t)v > (uint64_t)INT32_MAX)                                    \
                    return spry_errorf(SPRY_ERR_FORMAT,                                            \
                                       "%s: item %lld, element %lld = %lld is not a token id "     \
                                       "(must be in [0, 2147483647])",                             \
                                       ds->bin_path, (long long)i, (long long)(off + k),           \
                                       (long long)v);                                              \
            }                                                                                      \
        }                                                                                          \
        return SPRY_OK;                                                                            \
    } while (0)

spry_status spry_indexed_read_tokens(const spry_indexed *ds, int64_t i, int64_t off, int64_t n,
                                     int32_t *dst) {
    int64_t len;
    const uint8_t *base = spry_indexed_item(ds, i, &len);
    SPRY_ASSERT(off >= 0 && n >= 0 && off <= len && n <= len - off,
                "%s: item %lld: range [%lld, %lld) of %lld", ds->prefix, (long long)i,
                (long long)off, (long long)(off + n), (long long)len);
    if (n == 0) return SPRY_OK;
    const uint8_t *p = base + (size_t)off * ds->esize;
    // -Wtype-limits would flag `v < 0` on unsigned types; the `check` flag keeps it out of them.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtype-limits"
#endif
    switch (ds->dtype) {
    case SPRY_INDEXED_DTYPE_U8: COPY_TOKENS(uint8_t, 0);
    case SPRY_INDEXED_DTYPE_U16: COPY_TOKENS(uint16_t, 0);
    case SPRY_INDEXED_DTYPE_I8: COPY_TOKENS(int8_t, 1);
    case SPRY_INDEXED_DTYPE_I16: COPY_TOKENS(int16_t, 1);
    case SPRY_INDEXED_DTYPE_I32: COPY_TOKENS(int32_t, 1);
    case SPRY_INDEXED_DTYPE_U32: COPY_TOKENS(uint32_t, 1);
    case SPRY_INDEXED_DTYPE_I64: COPY_TOKENS(int64_t, 1);
    case SPRY_INDEXED_DTYPE_U64: COPY_TOKENS(uint64_t, 1);
    case SPRY_INDEXED_DTYPE_F32:
    case SPRY_INDEXED_DTYPE_F64:
    case SPRY_INDEXED_DTYPE_COUNT: break;
    }
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    return spry_errorf(SPRY_ERR_UNSUPPORTED,
                       "%s: dtype %s (code %d, %s table) holds no token ids HINT: token data "
                       "uses an integer dtype",
                       ds->idx_path, k_dtypes[ds->dtype].name, ds->code,
                       spry_indexed_table_name(ds->table));
}
