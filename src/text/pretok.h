/*
 * pretok.h -- (private) the pre-tokenizers: hand-written scanners equivalent to the two regexes
 * byte-level BPE tokenizers use (shared/notes/inference_serving.md sections 3.3 and 3.4):
 *
 *   GPT-2  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *          leftmost-first alternation; it matches at every position, so the pre-tokens tile
 *          the text.
 *   BLOOM  Split(" ?[^(\s|[.,!?…。，、।۔،])]+", Isolated): matches and the gaps between them are
 *          pre-tokens (the class excludes ( ) | whitespace and . , ! ? … 。 ， 、 । ۔ ،).
 *
 * Scanners work on bytes with the invalid-byte rule of unicode.h and never backtrack: each call is
 * O(length of the pre-token it returns), so a whole text is linear.
 */
#ifndef SPRY_TEXT_PRETOK_H
#define SPRY_TEXT_PRETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum spry_pretok_split {
    SPRY_PRETOK_NONE  = 0, // no split: the piece passes through whole
    SPRY_PRETOK_GPT2  = 1,
    SPRY_PRETOK_BLOOM = 2,
} spry_pretok_split;

// The exact pattern strings (as they appear in tokenizer.json once JSON-unescaped).
extern const char spry_pretok_gpt2_regex[];
extern const char spry_pretok_bloom_regex[];

// End (exclusive) of the pre-token that starts at s[pos], pos < n. ws is the whitespace class bit
// (SPRY_UC_WS_JS or SPRY_UC_WS_UNI).
size_t spry_pretok_gpt2_next(const uint8_t *s, size_t n, size_t pos, uint8_t ws);
size_t spry_pretok_bloom_next(const uint8_t *s, size_t n, size_t pos, uint8_t ws);

static inline size_t spry_pretok_next(spry_pretok_split k, const uint8_t *s, size_t n, size_t pos,
                                      uint8_t ws) {
    switch (k) {
    case SPRY_PRETOK_GPT2: return spry_pretok_gpt2_next(s, n, pos, ws);
    case SPRY_PRETOK_BLOOM: return spry_pretok_bloom_next(s, n, pos, ws);
    default: return n;
    }
}

// True when s[q] may start a chunk that is pre-tokenized independently of s[0..q) for both
// scanners: s[q-1] is an ASCII letter and s[q] is a space (0 < q < n). A pre-token ends at q
// and no scanner looks across it (proof in pretok.c).
static inline bool spry_pretok_safe_cut(const uint8_t *s, size_t n, size_t q) {
    if (q == 0 || q >= n || s[q] != ' ') return false;
    uint8_t c = s[q - 1] | 0x20;
    return c >= 'a' && c <= 'z';
}

#endif
