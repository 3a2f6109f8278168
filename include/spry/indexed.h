/*
 * indexed.h -- Megatron / DeepSpeed "MMIDIDX" indexed datasets (<prefix>.bin + <prefix>.idx).
 *
 * <prefix>.bin holds the items (documents, sentences, sample ids, ...) as raw little-endian
 * elements of one dtype, concatenated. <prefix>.idx (all little-endian):
 *
 *     magic     9 bytes "MMIDIDX\0\0"        version  u64 = 1         dtype code  u8
 *     count     u64 (number of items)         doc_count u64 (entries of doc_idx)
 *     sizes     i32[count]   elements per item
 *     pointers  i64[count]   byte offset of each item in .bin (exclusive prefix sum)
 *     doc_idx   i64[doc_count]  document boundaries: [0, ..., count]; document d is the items
 *                               [doc_idx[d], doc_idx[d+1])
 *
 * The dtype code has two meanings (shared/notes/data_efficiency.md 3.3): codes 1-5 are u8, i8,
 * i16, i32, i64 in both tables; Megatron-LM (megatron/core/datasets/indexed_dataset.py DType)
 * has 6 f64, 7 f32, 8 u16; DeepSpeed (deepspeed/runtime/data_pipeline/data_sampling/
 * indexed_dataset.py) has 6 u16, 7 u32, 8 u64. The writer writes the table the caller picks
 * (DeepSpeed's by default, the one DeepSpeed's data efficiency uses); the reader accepts both:
 * given SPRY_INDEXED_TABLE_AUTO it infers the table from the element size that makes the item
 * sizes add up to the .bin size (6 and 8 differ in size between the tables); code 7 is 4 bytes
 * in both and is read as DeepSpeed's u32 unless the caller names the Megatron table. Details and
 * the validation rules: docs/data.md.
 */
#ifndef SPRY_INDEXED_H
#define SPRY_INDEXED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/status.h"

// Element types that can appear in a .bin file (the union of both code tables).
typedef enum spry_indexed_dtype {
    SPRY_INDEXED_DTYPE_U8 = 0,
    SPRY_INDEXED_DTYPE_I8,
    SPRY_INDEXED_DTYPE_I16,
    SPRY_INDEXED_DTYPE_I32,
    SPRY_INDEXED_DTYPE_I64,
    SPRY_INDEXED_DTYPE_U16,
    SPRY_INDEXED_DTYPE_U32,
    SPRY_INDEXED_DTYPE_U64,
    SPRY_INDEXED_DTYPE_F32,
    SPRY_INDEXED_DTYPE_F64,
    SPRY_INDEXED_DTYPE_COUNT,
} spry_indexed_dtype;

// Which dtype-code table an .idx file uses.
typedef enum spry_indexed_table {
    SPRY_INDEXED_TABLE_AUTO = 0,  // reader: infer (see the header comment); writer: DEEPSPEED
    SPRY_INDEXED_TABLE_DEEPSPEED, // 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 u16, 7 u32, 8 u64
    SPRY_INDEXED_TABLE_MEGATRON,  // 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f64, 7 f32, 8 u16
} spry_indexed_table;

// ---------------------------------------------------------------------------------------------
// dtype helpers. Pure functions, thread-safe.

// Bytes per element (1, 2, 4 or 8); 0 for an invalid dtype.
size_t spry_indexed_dtype_size(spry_indexed_dtype dt);
// Lowercase name ("u16", "f32", ...); "?" for an invalid dtype.
const char *spry_indexed_dtype_name(spry_indexed_dtype dt);
// "deepspeed", "megatron" or "auto".
const char *spry_indexed_table_name(spry_indexed_table t);
// The code of dt in table t (AUTO means DEEPSPEED), or -1 when the table has no code for it
// (u32/u64 in Megatron's, f32/f64 in DeepSpeed's).
int spry_indexed_dtype_code(spry_indexed_table t, spry_indexed_dtype dt);
// The dtype of code in table t (AUTO means DEEPSPEED), or SPRY_INDEXED_DTYPE_COUNT if unknown.
spry_indexed_dtype spry_indexed_dtype_from_code(spry_indexed_table t, int code);
// Megatron's token dtype for a vocabulary (__best_fitting_dtype / DType.optimal_dtype):
// u16 when vocab_size < 65500, else i32. vocab_size <= 0 (unknown) gives i32.
spry_indexed_dtype spry_indexed_dtype_for_vocab(int64_t vocab_size);
// DeepSpeed's find_fit_int_dtype(lo, hi): for lo >= 0 the smallest of u8/u16/u32/u64 holding
// hi, else the smallest of i8/i16/i32/i64 holding [lo, hi].
spry_indexed_dtype spry_indexed_dtype_fit(int64_t lo, int64_t hi);

// ---------------------------------------------------------------------------------------------
// Writer.

typedef struct spry_indexed_builder spry_indexed_builder; // opaque

// Starts writing <prefix>.bin and <prefix>.idx. Items are streamed to "<prefix>.bin.tmp.<pid>";
// sizes and document boundaries are kept in memory (12 bytes per item, 8 per document).
// dtype: the element type of every item; table: the code table written into the .idx (AUTO =
// DEEPSPEED). Returns SPRY_ERR_ARG when dtype is invalid or has no code in table (message names
// both), SPRY_ERR_IO when the temporary file cannot be created, SPRY_ERR_NOMEM; *out = NULL then.
// A builder is used by one thread at a time.
spry_status spry_indexed_builder_init(const char *prefix, spry_indexed_dtype dtype,
                                      spry_indexed_table table, spry_indexed_builder **out);

// Appends one item of n elements (n >= 0, n <= INT32_MAX as the .idx stores sizes as i32) of
// the builder's dtype, copied from data (may be NULL when n == 0). Returns SPRY_ERR_ARG (bad
// n), SPRY_ERR_IO (write failed), SPRY_ERR_NOMEM; the builder is then failed: later calls
// return the same error and finalize writes nothing.
spry_status spry_indexed_builder_add_item(spry_indexed_builder *b, const void *data, int64_t n);

// As add_item, converting int32 token ids to the builder's dtype. A value the dtype cannot
// hold exactly gives SPRY_ERR_ARG naming the value, its position and the dtype (nothing of the
// item is written; the builder stays usable).
spry_status spry_indexed_builder_add_item_i32(spry_indexed_builder *b, const int32_t *ids,
                                              int64_t n);

// Ends the current document: appends the current item count to doc_idx (Megatron's
// end_document; an empty document is allowed).
spry_status spry_indexed_builder_end_document(spry_indexed_builder *b);

// Writes the .idx and publishes both files: if items were added since the last
// end_document, that document is ended first (so no item is left outside a document). The
// .bin and .idx are written to "<name>.tmp.<pid>", fsynced, then renamed over <prefix>.bin and
// then <prefix>.idx, and the directory is fsynced. A reader that opens the pair between the two
// renames sees a size mismatch and fails validation; it never sees torn data.
// Returns SPRY_ERR_IO (message has the file and strerror; temporaries are removed and the
// old files, if any, are untouched unless the .bin rename had happened) or the builder's
// earlier error. The builder must still be freed.
spry_status spry_indexed_builder_finalize(spry_indexed_builder *b);

// Frees the builder; if it was not finalized, removes its temporary files. b may be NULL.
void spry_indexed_builder_free(spry_indexed_builder *b);

// Number of items and documents added so far.
int64_t spry_indexed_builder_n_items(const spry_indexed_builder *b);
int64_t spry_indexed_builder_n_docs(const spry_indexed_builder *b);

// ---------------------------------------------------------------------------------------------
// Reader.

typedef struct spry_indexed spry_indexed; // an open dataset (opaque, immutable)

// Opens <prefix>.idx and <prefix>.bin (both mmapped read-only) and validates everything before
// returning: idx size >= the 34-byte header, magic, version 1, dtype code (in table, or either
// table for AUTO), the idx size equal to header + count*12 + doc_count*8 exactly, every size in
// [0, INT32_MAX], sum(sizes) * element size equal to the .bin size, pointers equal to the
// exclusive prefix sum of sizes * element size (so every item lies inside the .bin, items do
// not overlap and are aligned), doc_idx[0] == 0, doc_idx non-decreasing and <= count.
// On success *out owns both mappings (release with spry_indexed_close). On error returns
// SPRY_ERR_IO (cannot open/stat/map; message has the path and strerror), SPRY_ERR_FORMAT (the
// message names the file, the field, the bad value and what was expected) or SPRY_ERR_NOMEM;
// *out = NULL and nothing stays open. Never crashes on file contents. The files must not be
// truncated by another process while open (as with any mmap reader). Thread-safe; a handle may
// be read by several threads at once.
spry_status spry_indexed_open(const char *prefix, spry_indexed_table table, spry_indexed **out);

// Unmaps and frees; every pointer obtained from ds becomes invalid. ds may be NULL.
void spry_indexed_close(spry_indexed *ds);

const char        *spry_indexed_prefix(const spry_indexed *ds);     // as given to open
spry_indexed_dtype spry_indexed_elem_dtype(const spry_indexed *ds); // resolved element type
spry_indexed_table spry_indexed_code_table(const spry_indexed *ds); // table used (never AUTO)
int                spry_indexed_code(const spry_indexed *ds);       // the raw dtype code
int64_t            spry_indexed_n_items(const spry_indexed *ds);    // count
int64_t            spry_indexed_n_elems(const spry_indexed *ds);    // sum of all sizes
// Number of documents: doc_count - 1 (0 when doc_count is 0). Items after the last boundary
// (doc_idx[doc_count-1] < count, possible in Megatron files) belong to no document.
int64_t spry_indexed_n_docs(const spry_indexed *ds);

// Item i (0 <= i < n_items; asserts otherwise): a read-only pointer into the .bin mapping,
// aligned for the element type, and its element count in *n. Zero-copy; valid until close.
// For an empty item the pointer is non-NULL but must not be read.
const void *spry_indexed_item(const spry_indexed *ds, int64_t i, int64_t *n);

// Document d (0 <= d < n_docs; asserts otherwise) is the items [*first, *end).
void spry_indexed_doc_range(const spry_indexed *ds, int64_t d, int64_t *first, int64_t *end);

// Copies elements [off, off + n) of item i to dst as int32 token ids (0 <= i < n_items,
// 0 <= off, n >= 0, off + n <= size of item i; asserts otherwise). Returns SPRY_ERR_FORMAT
// naming the file, item, position and value if an element is negative or above INT32_MAX, and
// SPRY_ERR_UNSUPPORTED for float datasets; dst may then be partly written.
spry_status spry_indexed_read_tokens(const spry_indexed *ds, int64_t i, int64_t off, int64_t n,
                                     int32_t *dst);

#endif
