/*
 * gguf.h -- GGUF v3 files (ggml / llama.cpp): a validating mmap reader, an atomic writer, and
 * export / import of spry's GPT-2 and BLOOM models in the layout llama.cpp loads.
 *
 * Format (ggml docs/gguf.md): header {u32 magic "GGUF", u32 version, u64 tensor_count,
 * u64 metadata_kv_count}; metadata_kv_count key/value pairs (key = u64 length + bytes, u32 value
 * type, value); tensor_count tensor infos (name, u32 n_dims, u64 ne[n_dims] innermost first,
 * u32 ggml type, u64 offset); padding to ALIGNMENT (general.alignment, default 32); the data
 * section, each tensor at its offset, padded to ALIGNMENT. All little-endian.
 * The reader makes every check ggml's gguf.cpp makes (listed above spry_gguf_open); the notes
 * are shared/notes/inference_serving.md sections 2.2 and 7.2. ggml type ids here are GGUF's own
 * vocabulary (spry_ggml_type), independent of spry_dtype.
 */
#ifndef SPRY_GGUF_H
#define SPRY_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/model.h"
#include "spry/quant.h"
#include "spry/status.h"
#include "spry/tokenizer.h"

#define SPRY_GGUF_MAGIC 0x46554747u // "GGUF" read as a little-endian u32
#define SPRY_GGUF_VERSION 3u        // written; 2 and 3 are read
#define SPRY_GGUF_DEFAULT_ALIGNMENT 32u
#define SPRY_GGUF_MAX_STRING ((uint64_t)1 << 30) // GGUF_MAX_STRING_LENGTH (1 GiB)
#define SPRY_GGUF_MAX_ARRAY ((uint64_t)1 << 30)  // GGUF_MAX_ARRAY_ELEMENTS
#define SPRY_GGUF_MAX_DIMS 4                     // GGML_MAX_DIMS
#define SPRY_GGUF_MAX_NAME 64                    // GGML_MAX_NAME: names are < 64 bytes
#define SPRY_GGUF_MAX_KEY 65535                  // the spec's key limit (writer only)

// Metadata value types (the numbers are the file's).
typedef enum spry_gguf_type {
    SPRY_GGUF_TYPE_UINT8   = 0,
    SPRY_GGUF_TYPE_INT8    = 1,
    SPRY_GGUF_TYPE_UINT16  = 2,
    SPRY_GGUF_TYPE_INT16   = 3,
    SPRY_GGUF_TYPE_UINT32  = 4,
    SPRY_GGUF_TYPE_INT32   = 5,
    SPRY_GGUF_TYPE_FLOAT32 = 6,
    SPRY_GGUF_TYPE_BOOL    = 7, // one byte; any non-zero byte reads as true (as ggml does)
    SPRY_GGUF_TYPE_STRING  = 8,
    SPRY_GGUF_TYPE_ARRAY   = 9,
    SPRY_GGUF_TYPE_UINT64  = 10,
    SPRY_GGUF_TYPE_INT64   = 11,
    SPRY_GGUF_TYPE_FLOAT64 = 12,
    SPRY_GGUF_TYPE_COUNT,
} spry_gguf_type;

// "UINT32", "STRING", ... ("?" for an id out of range). Never NULL.
const char *spry_gguf_type_name(spry_gguf_type t);
// Bytes of one value of a scalar type (0 for STRING, ARRAY and ids out of range).
size_t spry_gguf_type_size(spry_gguf_type t);

// Tensor element types: ggml's ggml_type ids (the numbers are the file's; gaps are ids ggml
// removed). Every id listed has a row in the traits table, so foreign files are at least read.
typedef enum spry_ggml_type {
    SPRY_GGML_TYPE_F32     = 0,
    SPRY_GGML_TYPE_F16     = 1,
    SPRY_GGML_TYPE_Q4_0    = 2,
    SPRY_GGML_TYPE_Q4_1    = 3,
    SPRY_GGML_TYPE_Q5_0    = 6,
    SPRY_GGML_TYPE_Q5_1    = 7,
    SPRY_GGML_TYPE_Q8_0    = 8,
    SPRY_GGML_TYPE_Q8_1    = 9,
    SPRY_GGML_TYPE_Q2_K    = 10,
    SPRY_GGML_TYPE_Q3_K    = 11,
    SPRY_GGML_TYPE_Q4_K    = 12,
    SPRY_GGML_TYPE_Q5_K    = 13,
    SPRY_GGML_TYPE_Q6_K    = 14,
    SPRY_GGML_TYPE_Q8_K    = 15,
    SPRY_GGML_TYPE_IQ2_XXS = 16,
    SPRY_GGML_TYPE_IQ2_XS  = 17,
    SPRY_GGML_TYPE_IQ3_XXS = 18,
    SPRY_GGML_TYPE_IQ1_S   = 19,
    SPRY_GGML_TYPE_IQ4_NL  = 20,
    SPRY_GGML_TYPE_IQ3_S   = 21,
    SPRY_GGML_TYPE_IQ2_S   = 22,
    SPRY_GGML_TYPE_IQ4_XS  = 23,
    SPRY_GGML_TYPE_I8      = 24,
    SPRY_GGML_TYPE_I16     = 25,
    SPRY_GGML_TYPE_I32     = 26,
    SPRY_GGML_TYPE_I64     = 27,
    SPRY_GGML_TYPE_F64     = 28,
    SPRY_GGML_TYPE_IQ1_M   = 29,
    SPRY_GGML_TYPE_BF16    = 30,
    SPRY_GGML_TYPE_TQ1_0   = 34,
    SPRY_GGML_TYPE_TQ2_0   = 35,
    SPRY_GGML_TYPE_MXFP4   = 39,
    SPRY_GGML_TYPE_COUNT, // one past the largest id (not every id below it is valid)
} spry_ggml_type;

typedef struct spry_ggml_type_traits {
    int id;             // spry_ggml_type
    const char *name;   // "F32", "Q8_0", ... (ggml's names, upper case)
    int64_t block;      // elements per block (1 for plain types, 32 or 256 for quants)
    size_t block_bytes; // bytes per block (ggml-common.h's static_asserts)
} spry_ggml_type_traits;

// Traits of ggml type id, or NULL when id is not a type spry knows (removed or future ids).
const spry_ggml_type_traits *spry_ggml_type_info(int id);

// ---------------------------------------------------------------------------------------------
// Reader

typedef struct spry_gguf spry_gguf; // an open file (opaque, immutable after open)

// One metadata pair. Points into the spry_gguf that returned it; valid until spry_gguf_close.
typedef struct spry_gguf_kv {
    const char *key;          // NUL-terminated copy of the key
    size_t key_len;           // its bytes (a key may hold NUL bytes; lookups compare all)
    spry_gguf_type type;      // SPRY_GGUF_TYPE_ARRAY for arrays
    spry_gguf_type elem_type; // arrays: the element type (never ARRAY); scalars: == type
    uint64_t n;               // arrays: element count (may be 0); scalars: 1
    const void *data;         // numeric scalar or array: n little-endian values in the
                              // file, possibly unaligned (read with memcpy); else NULL
    const char *const *str;   // STRING or string array: n NUL-terminated copies; else NULL
    const uint64_t *str_len;  // their byte lengths (a string may hold NUL bytes)
} spry_gguf_kv;

// One tensor info. Points into the spry_gguf that returned it; valid until spry_gguf_close.
typedef struct spry_gguf_tensor {
    char name[SPRY_GGUF_MAX_NAME];  // NUL-terminated (cut at an embedded NUL, as ggml)
    uint32_t n_dims;                // 0..4
    int64_t ne[SPRY_GGUF_MAX_DIMS]; // innermost first (ggml ne order); 1 past n_dims
    int type;                       // spry_ggml_type id (always in the traits table)
    int64_t numel;                  // ne[0] * ne[1] * ne[2] * ne[3]
    size_t nbytes;                  // numel / block * block_bytes
    uint64_t offset;                // relative to the data section
    const void *data;               // read-only, into the mapping (data section + offset)
} spry_gguf_tensor;

// Opens path, mmaps it read-only and validates it completely. Checks, in file order, each a
// SPRY_ERR_FORMAT whose message is "<path>: <what> (<value>)":
//   - the file holds the 4-byte magic "GGUF" and the rest of the 24-byte header;
//   - version: 0, a byte-swapped (big-endian) value, 1 and > 3 are rejected; 2 and 3 read;
//   - tensor_count and metadata_kv_count: at most INT64_MAX, and no more records than the
//     remaining bytes can hold (every KV needs >= 14 bytes, every tensor info >= 24);
//   - every string (keys, values, tensor names): length <= 1 GiB and within the file;
//   - keys: not empty, not repeated; value types known; ARRAY: element type known and not
//     ARRAY (nested arrays are rejected, as ggml does), count <= 2^30, count * element size
//     (8 per string length prefix) within the file;
//   - general.alignment, when present: type UINT32, a non-zero power of two (default 32);
//   - tensor names: < 64 bytes, not repeated; n_dims <= 4; every ne >= 0; the element count
//     below INT64_MAX; the ggml type id in the traits table; ne[0] a multiple of the type's
//     block size; the byte size representable;
//   - the data section starts at the first ALIGNMENT multiple after the infos, and each
//     tensor's offset equals the sum of the earlier tensors' sizes each padded to ALIGNMENT
//     (ggml's rule: tensors in info order, densely, with alignment padding);
//   - the data section, padding after the last tensor included, lies within the file (ggml's
//     full-read rule; every GGUF writer pads the last tensor). Bytes after it are allowed.
// A truncated file fails one of these checks; nothing is read outside the file.
// On success *out owns the mapping; release it with spry_gguf_close. Otherwise returns
// SPRY_ERR_IO (cannot open/stat/map; message names the path), SPRY_ERR_FORMAT or
// SPRY_ERR_NOMEM, sets *out = NULL and leaves nothing open. Never aborts on file contents.
// Thread-safe (handles share nothing); a handle is immutable, so concurrent readers are fine.
// The file must not be truncated by another process while open (the mapping would fault).
spry_status spry_gguf_open(const char *path, spry_gguf **out);

// As spry_gguf_open on the bytes data[0..size), which are borrowed, not copied: they must stay
// unchanged until spry_gguf_close. name stands for the path in messages. Tensor data pointers
// point into data (aligned to ALIGNMENT only when data is). Used by the fuzz target.
spry_status spry_gguf_open_memory(const void *data, size_t size, const char *name, spry_gguf **out);

// Unmaps and frees. Every pointer obtained from g becomes invalid. g may be NULL.
void spry_gguf_close(spry_gguf *g);

const char *spry_gguf_path(const spry_gguf *g);     // the path (or name) given to open
uint32_t spry_gguf_version(const spry_gguf *g);     // 2 or 3
size_t spry_gguf_alignment(const spry_gguf *g);     // ALIGNMENT used for the layout
uint64_t spry_gguf_data_offset(const spry_gguf *g); // file offset of the data section
uint64_t spry_gguf_data_size(const spry_gguf *g);   // its size, last padding included

// Metadata: count, the i-th pair in file order (NULL if i is out of range), and the index of
// the pair whose key equals key (all strlen(key) bytes; O(1)), or -1 (no message is set).
int64_t spry_gguf_n_kv(const spry_gguf *g);
const spry_gguf_kv *spry_gguf_kv_at(const spry_gguf *g, int64_t i);
int64_t spry_gguf_find_key(const spry_gguf *g, const char *key);

// Typed getters for scalars. Return SPRY_OK and set *out; SPRY_ERR_NOT_FOUND when the key is
// absent ("<path>: key '<key>' not found"); SPRY_ERR_FORMAT when it has another type
// ("<path>: key '<key>' has the wrong type (INT32, expected UINT32)"), *out untouched. No
// conversion between types: llama.cpp reads hyperparameters with the same strictness.
spry_status spry_gguf_get_u32(const spry_gguf *g, const char *key, uint32_t *out);
spry_status spry_gguf_get_i32(const spry_gguf *g, const char *key, int32_t *out);
spry_status spry_gguf_get_u64(const spry_gguf *g, const char *key, uint64_t *out);
spry_status spry_gguf_get_f32(const spry_gguf *g, const char *key, float *out);
spry_status spry_gguf_get_bool(const spry_gguf *g, const char *key, bool *out);
// A STRING value: *out is NUL-terminated and valid until close; *len (may be NULL) its bytes.
spry_status spry_gguf_get_str(const spry_gguf *g, const char *key, const char **out, size_t *len);
// An ARRAY whose elements are elem_type: *out is the pair (read elements with the accessors
// below, or kv->str / kv->data). Errors as the scalar getters; the message of a wrong type
// names both ("ARRAY of INT32, expected ARRAY of STRING" or "UINT32, expected ARRAY of ...").
spry_status spry_gguf_get_arr(const spry_gguf *g, const char *key, spry_gguf_type elem_type,
                              const spry_gguf_kv **out);

// Element i of an array pair (or i == 0 of a scalar of the same type). A wrong type or i >= n
// is a programmer error and aborts (check kv->elem_type and kv->n first).
const char *spry_gguf_kv_str(const spry_gguf_kv *kv, uint64_t i, size_t *len); // len may be NULL
int32_t spry_gguf_kv_i32(const spry_gguf_kv *kv, uint64_t i);
uint32_t spry_gguf_kv_u32(const spry_gguf_kv *kv, uint64_t i);
float spry_gguf_kv_f32(const spry_gguf_kv *kv, uint64_t i);
// Any numeric type: copies spry_gguf_type_size(kv->elem_type) bytes of element i to out.
void spry_gguf_kv_elem(const spry_gguf_kv *kv, uint64_t i, void *out);

// Tensors: count, the i-th in file order (NULL if out of range), by name (O(1), NULL if absent).
int64_t spry_gguf_n_tensors(const spry_gguf *g);
const spry_gguf_tensor *spry_gguf_tensor_at(const spry_gguf *g, int64_t i);
const spry_gguf_tensor *spry_gguf_find_tensor(const spry_gguf *g, const char *name);

// ---------------------------------------------------------------------------------------------
// Writer

typedef struct spry_gguf_writer spry_gguf_writer; // a list of pairs and tensors (opaque)

// An empty writer. Returns SPRY_ERR_NOMEM (*out = NULL).
spry_status spry_gguf_writer_init(spry_gguf_writer **out);
// Frees w and its copies (never the tensor data). w may be NULL.
void spry_gguf_writer_free(spry_gguf_writer *w);

// Sets key to a scalar value (copied). A key set again keeps its place and takes the new value
// and type. Keys must be 1..65535 bytes. general.alignment may only be set as a UINT32 power of
// two; it is then the file's ALIGNMENT. Return SPRY_ERR_ARG (message names the key and value;
// w unchanged) or SPRY_ERR_NOMEM. Not thread-safe on one writer.
spry_status spry_gguf_set_u8(spry_gguf_writer *w, const char *key, uint8_t v);
spry_status spry_gguf_set_i8(spry_gguf_writer *w, const char *key, int8_t v);
spry_status spry_gguf_set_u16(spry_gguf_writer *w, const char *key, uint16_t v);
spry_status spry_gguf_set_i16(spry_gguf_writer *w, const char *key, int16_t v);
spry_status spry_gguf_set_u32(spry_gguf_writer *w, const char *key, uint32_t v);
spry_status spry_gguf_set_i32(spry_gguf_writer *w, const char *key, int32_t v);
spry_status spry_gguf_set_f32(spry_gguf_writer *w, const char *key, float v);
spry_status spry_gguf_set_bool(spry_gguf_writer *w, const char *key, bool v);
spry_status spry_gguf_set_u64(spry_gguf_writer *w, const char *key, uint64_t v);
spry_status spry_gguf_set_i64(spry_gguf_writer *w, const char *key, int64_t v);
spry_status spry_gguf_set_f64(spry_gguf_writer *w, const char *key, double v);
// A STRING (s NUL-terminated, copied; any bytes, at most 1 GiB).
spry_status spry_gguf_set_str(spry_gguf_writer *w, const char *key, const char *s);
// An ARRAY of n values of the scalar type elem_type (not STRING/ARRAY), copied from data
// (n * spry_gguf_type_size(elem_type) bytes, little-endian; BOOL bytes are written as 0/1).
// n <= 2^30; data may be NULL when n == 0.
spry_status spry_gguf_set_arr(spry_gguf_writer *w, const char *key, spry_gguf_type elem_type,
                              const void *data, uint64_t n);
// An ARRAY of n STRINGs (each NUL-terminated, copied; NULL entries are SPRY_ERR_ARG).
spry_status spry_gguf_set_arr_str(spry_gguf_writer *w, const char *key, const char *const *strs,
                                  uint64_t n);

// Appends a tensor: name (1..63 bytes, unique), ggml type id (in the traits table), n_dims
// (0..4) sizes ne[] innermost first (each >= 0, ne[0] a multiple of the block size), and data,
// nbytes = numel / block * block_bytes bytes, which is NOT copied: it must stay valid until
// spry_gguf_writer_write returns (may be NULL when nbytes == 0). Returns SPRY_ERR_ARG (message
// names the tensor and the field) or SPRY_ERR_NOMEM; w unchanged on error.
spry_status spry_gguf_add_tensor(spry_gguf_writer *w, const char *name, int type, uint32_t n_dims,
                                 const int64_t *ne, const void *data);

// Writes a GGUF v3 file: header (u64 counts), the pairs in insertion order, the tensor infos in
// insertion order with offsets laid out densely, zero padding to ALIGNMENT (when there are
// tensors), each tensor's data followed by zero padding to ALIGNMENT. Atomic: writes
// "<path>.tmp.<pid>", fsyncs it, renames it over path and fsyncs the directory. Returns
// SPRY_ERR_IO (message has the path and strerror; the temp file is removed, path untouched) or
// SPRY_ERR_NOMEM. w is unchanged and may be written again.
spry_status spry_gguf_writer_write(const spry_gguf_writer *w, const char *path);

// ---------------------------------------------------------------------------------------------
// spry models <-> GGUF (src/io/gguf_model.c)
//
// Export writes exactly what llama.cpp's gpt2 / bloom loaders read (notes section 2.2, "Making
// a GGUF that llama.cpp loads"): general.architecture, general.file_type (u32),
// general.quantization_version (u32, only for quantized files, i.e. never yet),
// {arch}.context_length / embedding_length / feed_forward_length / block_count /
// attention.head_count (u32) (+ attention.head_count_kv for bloom), attention.layer_norm_epsilon
// (f32); tensors token_embd, position_embd (gpt2) or token_embd_norm (bloom), output_norm,
// output (a copy of the tied embedding), blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm,
// ffn_up, ffn_down}.{weight,bias}, dims innermost first (a (out, in) matrix is {in, out}).
// BLOOM's per-head interleaved fused QKV rows are re-ordered to [Q; K; V] (weight and bias);
// GPT-2's are already [Q; K; V]. With a tokenizer: tokenizer.ggml.model "gpt2", .pre "gpt-2"
// or "bloom", .tokens (vocabulary keys by id, padded to the model's vocab with "[PAD<i>]"),
// .token_type (i32: 1 normal, 3 control = special added tokens, 5 unused = padding), .merges
// ("a b" by rank), .bos_token_id / .eos_token_id (u32) and, when the tokenizer has "<unk>" /
// "<pad>", .unknown_token_id / .padding_token_id.

typedef struct spry_gguf_export_params {
    // 2-D matrices: SPRY_GGML_TYPE_F32, _F16, _BF16, _Q8_0 or _Q4_0 (F32); 1-D tensors are always
    // F32, and quantized files keep position_embd F32 (general.quantization_version 2 is written).
    int wtype;
    // NULL: no tokenizer.* keys; llama.cpp then refuses the file, spry reads it (NULL).
    const spry_tokenizer *tok;
    // general.name; NULL: omitted (NULL).
    const char *name;
    // BLOOM's {arch}.context_length (0: 2048); GPT-2 always writes n_positions, which
    // llama.cpp requires to equal position_embd's rows (0).
    int64_t context_length;
    // With tok: -1 looks up "<|endoftext|>" (gpt2) or "<s>" / "</s>" (bloom), the key is
    // omitted when absent; >= 0 is written as given (-1). Ignored without tok.
    int32_t bos_id, eos_id;
} spry_gguf_export_params;

// The defaults noted above: F32, no tokenizer, no name, BLOOM context 2048, ids looked up.
spry_gguf_export_params spry_gguf_export_params_default(void);

// Writes m to path as a GGUF v3 file (spry_gguf_writer_write: atomic). p may be NULL
// (defaults). The tokenizer's merges are read through spry_tokenizer_save into a temporary
// "<path>.tok.<pid>" (tokenizer.h has no merge accessor), removed afterwards. Returns
// SPRY_ERR_ARG (bad wtype or ids, a tokenizer with more tokens than the model's vocab or a
// merge it cannot write as "a b"; message names the parameter and value), SPRY_ERR_IO,
// SPRY_ERR_NOMEM. Thread-safe for distinct paths.
spry_status spry_gguf_export_model(const spry_model *m, const char *path,
                                   const spry_gguf_export_params *p);

// Reads a gpt2 / bloom GGUF (as written by spry_gguf_export_model or llama.cpp's converter)
// into a new model: the config from the {arch}.* keys (strict types: u32 counts, f32 epsilon;
// vocab from token_embd's ne[1]; head_count_kv, when present, must equal head_count), every
// tensor checked for presence, type and shape, F32 / F16 / BF16 / Q8_0 / Q4_0 data converted to
// f32 (quantizing the result again gives the file's blocks back exactly), BLOOM's
// QKV order restored; output.weight, when present, must equal token_embd.weight (spry ties
// them). Returns SPRY_ERR_IO / SPRY_ERR_FORMAT (messages name the file and the key or tensor
// and the value), SPRY_ERR_UNSUPPORTED (another architecture, quantized types other than
// Q8_0 and Q4_0, head_count_kv != head_count, an untied output), SPRY_ERR_CONFIG (sizes spry
// rejects), SPRY_ERR_NOMEM; *out = NULL on error. Thread-safe.
spry_status spry_gguf_import_model(const char *path, spry_model **out);

// Pointers into g's mapping for the matrices a serving engine can read in place
// (spry_engine_params.mapped_rows): rows[4 l + 0..3] = blk.l.attn_qkv / attn_output / ffn_up /
// ffn_down, rows[4 L] = the LM head (output.weight, else token_embd.weight), each set when the
// tensor is stored as fmt (Q8_0 or Q4_0) with m's shape, else NULL (BLOOM's QKV is always NULL:
// GGUF orders its rows differently from spry). rows has room for 4 L + 1 entries; returns how
// many were set. g must stay open while the pointers are used.
int64_t spry_gguf_engine_rows(const spry_gguf *g, const spry_model *m, spry_wfmt fmt, const void **rows);

#endif
