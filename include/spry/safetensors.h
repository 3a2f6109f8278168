/*
 * safetensors.h -- read (mmap, zero-copy) and write Hugging Face .safetensors files.
 *
 * Format: 8-byte little-endian u64 N, N bytes of UTF-8 JSON header, then the data section.
 * Header: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...,
 * "__metadata__": {"k": "v"}}; offsets are relative to the start of the data section.
 * Reference: huggingface/safetensors README and safetensors/src/tensor.rs; the validation rules
 * are listed in docs/safetensors.md and shared/notes/inference_serving.md section 2.1.
 *
 * The reader validates the whole header before returning, so any file it opens is safe to index:
 * every tensor lies inside the file, tensors tile the data section exactly (no gaps, overlaps or
 * trailing bytes), and byte sizes match dtype x shape. All safetensors dtypes are accepted by
 * the validator; tensors whose dtype spry has no spry_dtype for (BOOL, U16, F8_*, ...) are
 * listed with dtype == SPRY_DTYPE_COUNT and only fail when a spry_tensor view is requested.
 */
#ifndef SPRY_SAFETENSORS_H
#define SPRY_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/dtype.h"
#include "spry/status.h"
#include "spry/tensor.h"

// Largest header accepted and written (the reference MAX_HEADER_SIZE).
#define SPRY_ST_MAX_HEADER ((uint64_t)100000000)
// Largest integer accepted in "shape" and "data_offsets" (2^48 - 1, the JSON schema's cap).
#define SPRY_ST_MAX_INT ((int64_t)281474976710655)

typedef struct spry_safetensors spry_safetensors; // an open file (opaque)

// One tensor of an open file. Everything points into the spry_safetensors that returned it and
// stays valid until spry_safetensors_close.
typedef struct spry_st_tensor_info {
    const char    *name;     // the header key
    const char    *st_dtype; // dtype as written in the file: "F32", "BF16", "BOOL", ...
    spry_dtype     dtype;    // SPRY_DTYPE_COUNT when spry has no such dtype
    int            ndim;     // 0 for a scalar; may exceed SPRY_MAX_DIMS
    const int64_t *shape;    // (ndim,) PyTorch order
    int64_t        numel;    // product of shape (1 for a scalar, 0 for an empty tensor)
    const void    *data;     // read-only, into the mmap (file offset 8 + N + offset)
    size_t         nbytes;   // END - BEGIN
    uint64_t       offset;   // BEGIN, relative to the data section
    bool           aligned;  // data is a multiple of the element size (safe for typed loads)
} spry_st_tensor_info;

// Opens and validates path: mmaps it read-only and checks the header length (>= 8-byte file,
// N <= SPRY_ST_MAX_HEADER, 8 + N <= file size), that the header is UTF-8 and a JSON object
// (JSON whitespace may surround it), each entry's keys (exactly dtype/shape/data_offsets, right
// types), the dtype name, shape entries (integers in [0, SPRY_ST_MAX_INT]), offsets (two such
// integers, BEGIN <= END, inside the data section, END - BEGIN == numel * dtype size), that the
// tensors tile the data section with no gap, overlap or trailing byte, that no key is repeated,
// and that "__metadata__" is a string -> string object.
// On success *out owns the mapping; release it with spry_safetensors_close. On error returns
// SPRY_ERR_IO (cannot open/stat/map), SPRY_ERR_FORMAT (malformed; the message names the file,
// the tensor, the field and the bad value) or SPRY_ERR_NOMEM, sets *out = NULL, leaves nothing
// open. Never aborts on file contents. Thread-safe (distinct handles share nothing); a handle
// is immutable after open, so concurrent readers of one handle are fine. The file must not be
// truncated by another process while open (the mapping would fault, as with any mmap reader).
spry_status spry_safetensors_open(const char *path, spry_safetensors **out);

// Unmaps and frees. Every pointer obtained from st becomes invalid. st may be NULL.
void spry_safetensors_close(spry_safetensors *st);

// The path given to spry_safetensors_open.
const char *spry_safetensors_path(const spry_safetensors *st);

// Number of tensors (the "__metadata__" entry is not one).
int64_t spry_safetensors_n_tensors(const spry_safetensors *st);

// The i-th tensor in header order, 0 <= i < n_tensors; NULL if i is out of range.
const spry_st_tensor_info *spry_safetensors_tensor_at(const spry_safetensors *st, int64_t i);

// The tensor named name (O(log n)), or NULL if there is none (no error message is set).
const spry_st_tensor_info *spry_safetensors_find(const spry_safetensors *st, const char *name);

// Fills *out with a contiguous view of info's data (row-major byte strides, name set and
// truncated to fit, flags = SPRY_TENSOR_VIEW, grad NULL). out->data points into the read-only
// mapping: never write through it. Returns SPRY_ERR_UNSUPPORTED (message names the tensor) when
// the dtype has no spry_dtype or ndim > SPRY_MAX_DIMS; *out is then zeroed. Check
// info->aligned before typed or SIMD loads: files from writers that do not pad the header (old
// safetensors versions) can hold unaligned tensors.
spry_status spry_st_tensor_view(const spry_st_tensor_info *info, spry_tensor *out);

// spry_safetensors_find + spry_st_tensor_view. SPRY_ERR_NOT_FOUND (message names the tensor and
// the file, with a HINT listing the first names in the file) when absent.
spry_status spry_safetensors_get(const spry_safetensors *st, const char *name, spry_tensor *out);

// Value of "__metadata__"[key], or NULL when absent. Valid until close.
const char *spry_safetensors_meta(const spry_safetensors *st, const char *key);

// Number of "__metadata__" pairs, and the i-th in header order (false if i is out of range).
int64_t spry_safetensors_n_meta(const spry_safetensors *st);
bool spry_safetensors_meta_at(const spry_safetensors *st, int64_t i, const char **key,
                              const char **value);

// A tensor to write: contiguous row-major data of numel(shape) elements of dtype.
typedef struct spry_st_entry {
    const char    *name;  // unique, valid UTF-8, not "__metadata__"
    spry_dtype     dtype;
    int            ndim;  // >= 0 (0 = scalar)
    const int64_t *shape; // (ndim,), each in [0, SPRY_ST_MAX_INT]; may be NULL when ndim == 0
    const void    *data;  // numel * element-size bytes; may be NULL when that is 0
} spry_st_entry;

// Writes n tensors and n_meta metadata pairs (meta_kv = {key0, value0, key1, value1, ...}, all
// valid UTF-8, keys unique; may be NULL when n_meta == 0) to path. The header lists the
// tensors in the given order ("__metadata__" first, omitted when n_meta == 0) and is padded
// with spaces to a multiple of 8 bytes. The data section is laid out in the given order within
// each element size, wider elements first (a stable sort, the reference writer's "descending
// alignment" rule), so every tensor is naturally aligned when the file is mmapped; for a
// single-dtype model that is exactly the given order.
// Atomic: writes "<path>.tmp.<pid>", fsyncs it, renames it over path (readers holding the old
// file mapped keep seeing the old contents) and fsyncs the directory.
// Returns SPRY_ERR_ARG for a bad entry (NULL/duplicate/reserved name, bad dtype or shape, NULL
// data, non-UTF-8 strings, header over SPRY_ST_MAX_HEADER), SPRY_ERR_IO when open/write/fsync/
// rename fails (message has the path and strerror; the temp file is removed, path is
// untouched), SPRY_ERR_NOMEM. Thread-safe for distinct paths.
spry_status spry_safetensors_write(const char *path, const spry_st_entry *entries, int64_t n,
                                   const char *const *meta_kv, int64_t n_meta);

#endif
