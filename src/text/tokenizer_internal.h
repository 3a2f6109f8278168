/*
 * tokenizer_internal.h -- (private) the spry_tokenizer struct and the builder the loaders
 * (tokenizer_io.c) and the trainer (tokenizer_train.c) fill it through (tokenizer.c).
 *
 * Build order: tok_new -> tok_alloc_vocab(n_vocab) -> tok_set_key for each vocabulary entry ->
 * tok_add_added for each added token -> tok_index_vocab -> tok_add_merge in rank order ->
 * steps / flags set directly -> tok_finish. Every builder function returns a spry_status with a
 * message naming `where` (file and field) on bad input.
 */
#ifndef SPRY_TEXT_TOKENIZER_INTERNAL_H
#define SPRY_TEXT_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spry/tokenizer.h"
#include "text/pretok.h"

#define TOK_MAX_STEPS 8

// One pre-tokenizer component: a split (or none) and ByteLevel's add_prefix_space.
typedef struct tok_step {
    uint8_t split;        // spry_pretok_split
    bool    prefix_space; // prepend ' ' to each piece that does not start with one
    bool    byte_level;   // written back as ByteLevel (else as Split with the regex)
} tok_step;

typedef struct tok_added {
    int32_t id;
    char   *content; // NUL-terminated
    size_t  len;
    bool    special, single_word, lstrip, rstrip, normalized;
} tok_added;

typedef struct tok_pair_slot {
    uint64_t key;    // (uint64_t)a << 32 | b; UINT64_MAX = empty
    int32_t  rank;
    int32_t  new_id;
} tok_pair_slot;

struct spry_tokenizer {
    char   *name; // file or description, for messages
    int32_t n_vocab;

    // Per id: vocabulary key (mapped alphabet, NUL-terminated) and decoded bytes. -1 = hole.
    char    *keys;
    int64_t  keys_len, keys_cap;
    int64_t *key_off;  // [n_vocab]
    char    *bytes;    // decoded bytes, each followed by a NUL
    int64_t *byte_off; // [n_vocab]
    uint32_t *byte_len; // [n_vocab]
    uint8_t *special;  // [n_vocab] 1 for special added tokens
    uint8_t *is_added; // [n_vocab] 1 for added tokens (decoded as their content)

    int32_t *vocab_ht; // open addressing over ids by key; -1 empty
    uint64_t vocab_mask;

    int32_t byte_id[256]; // id of each single-byte token

    int32_t        n_merges, merges_cap;
    int32_t       *merge_ab; // [2 * n_merges] left, right ids by rank
    tok_pair_slot *pairs;
    uint64_t       pair_mask;

    tok_step steps[TOK_MAX_STEPS];
    int      n_steps;
    uint8_t  ws; // SPRY_UC_WS_JS or SPRY_UC_WS_UNI
    bool     ignore_merges;

    tok_added *added;
    int        n_added, added_cap;
    // Added-token matcher: candidates by first byte, longest first.
    int32_t *first_start; // [257] offsets into first_list
    int32_t *first_list;
    bool     first_any[256];     // some non-special added token starts with this byte
    bool     first_special[256]; // some special added token starts with this byte
};

// The byte-to-unicode map (shared/notes/inference_serving.md 3.2): code point of each byte's
// character, and the inverse for code points < 0x144 (-1 when none).
extern const uint16_t spry_byte_to_cp[256];
int spry_cp_to_byte(uint32_t cp);

// Appends the UTF-8 of byte b's mapped character to dst (2 bytes at most); returns the length.
static inline int spry_byte_char(uint8_t b, char *dst) {
    uint16_t cp = spry_byte_to_cp[b];
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    dst[0] = (char)(0xC0 | (cp >> 6));
    dst[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

static inline uint64_t spry_tok_hash(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 29;
        s += 8, n -= 8;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, s, n);
        h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    }
    h ^= h >> 32;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 29;
    return h;
}

spry_tokenizer *tok_new(const char *name);
spry_status     tok_alloc_vocab(spry_tokenizer *t, int32_t n_vocab);
spry_status tok_set_key(spry_tokenizer *t, int32_t id, const char *key, size_t len, const char *where);
spry_status tok_add_added(spry_tokenizer *t, const tok_added *a, const char *where);
spry_status tok_index_vocab(spry_tokenizer *t);
int32_t     tok_lookup(const spry_tokenizer *t, const char *key, size_t len);
spry_status tok_add_merge(spry_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                          const char *where);
spry_status tok_finish(spry_tokenizer *t);

#endif
