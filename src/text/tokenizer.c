/*
 * tokenizer.c -- byte-level BPE: the tokenizer's tables and their builder, encode (pre-tokenize,
 * BPE per pre-token with a cache, multi-threaded over safe cuts), decode and streaming decode.
 *
 * BPE per pre-token follows OpenAI's encoder.py (and gpt-3-encoder): start from one token per
 * byte; repeatedly take the adjacent pair with the lowest merge rank and merge all its
 * non-overlapping occurrences from left to right. Short pre-tokens use that loop directly (ranks
 * of untouched pairs are kept); long ones (> BPE_SMALL bytes) use a heap of (rank, position) as
 * HF tokenizers' word.rs does, which is the same whenever each merge's parts are made by
 * earlier merges (true of every trained merge list). Results are cached per pre-token string.
 * See tokenizer.h for the contracts and docs/tokenizer.md for the semantics decisions.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "text/tokenizer_internal.h"
#include "text/unicode.h"

#define BPE_SMALL       64         // pre-tokens up to this many bytes use the direct loop
#define CACHE_MAX_KEY   256        // longer pre-tokens are not cached
#define PAR_MIN_BYTES   (1 << 16)  // shorter texts are encoded on one thread
#define PAR_MIN_CHUNK   (1 << 15)

// ---------------------------------------------------------------------------------------------
// The byte-to-unicode map

const uint16_t spry_byte_to_cp[256] = {
    // 0x00..0x20 -> U+0100..U+0120
    0x100, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B, 0x10C,
    0x10D, 0x10E, 0x10F, 0x110, 0x111, 0x112, 0x113, 0x114, 0x115, 0x116, 0x117, 0x118, 0x119,
    0x11A, 0x11B, 0x11C, 0x11D, 0x11E, 0x11F, 0x120,
    // 0x21..0x7E -> themselves
    0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2E, 0x2F,
    0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E,
    0x3F, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x4B, 0x4C, 0x4D,
    0x4E, 0x4F, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x5B, 0x5C,
    0x5D, 0x5E, 0x5F, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x6B,
    0x6C, 0x6D, 0x6E, 0x6F, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A,
    0x7B, 0x7C, 0x7D, 0x7E,
    // 0x7F..0xA0 -> U+0121..U+0142
    0x121, 0x122, 0x123, 0x124, 0x125, 0x126, 0x127, 0x128, 0x129, 0x12A, 0x12B, 0x12C, 0x12D,
    0x12E, 0x12F, 0x130, 0x131, 0x132, 0x133, 0x134, 0x135, 0x136, 0x137, 0x138, 0x139, 0x13A,
    0x13B, 0x13C, 0x13D, 0x13E, 0x13F, 0x140, 0x141, 0x142,
    // 0xA1..0xAC -> themselves
    0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC,
    // 0xAD -> U+0143
    0x143,
    // 0xAE..0xFF -> themselves
    0xAE, 0xAF, 0xB0, 0xB1, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xBB, 0xBC,
    0xBD, 0xBE, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xCB,
    0xCC, 0xCD, 0xCE, 0xCF, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9,
    0xEA, 0xEB, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF,
};

int spry_cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp < 0x100 || cp > 0x143) return -1;
    uint32_t k = cp - 0x100; // the k-th of the bytes 0x00..0x20, 0x7F..0xA0, 0xAD
    return k < 33 ? (int)k : k < 67 ? (int)(0x7F + k - 33) : 0xAD;
}

_Static_assert(sizeof spry_byte_to_cp / sizeof spry_byte_to_cp[0] == 256, "256 bytes");

// ---------------------------------------------------------------------------------------------
// Token lists

spry_status spry_tokens_push(spry_tokens *t, int32_t id) {
    if (t->n == t->cap) {
        int64_t cap = t->cap ? t->cap * 2 : 256;
        int32_t *p = realloc(t->ids, (size_t)cap * sizeof *p);
        if (!p) return spry_errorf(SPRY_ERR_NOMEM, "tokens: cannot grow to %lld ids", (long long)cap);
        t->ids = p, t->cap = cap;
    }
    t->ids[t->n++] = id;
    return SPRY_OK;
}

static spry_status tokens_append(spry_tokens *t, const int32_t *ids, int64_t n) {
    if (t->n + n > t->cap) {
        int64_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + n) cap *= 2;
        int32_t *p = realloc(t->ids, (size_t)cap * sizeof *p);
        if (!p) return spry_errorf(SPRY_ERR_NOMEM, "tokens: cannot grow to %lld ids", (long long)cap);
        t->ids = p, t->cap = cap;
    }
    memcpy(t->ids + t->n, ids, (size_t)n * sizeof *ids);
    t->n += n;
    return SPRY_OK;
}

void spry_tokens_free(spry_tokens *t) {
    if (!t) return;
    free(t->ids);
    t->ids = NULL, t->n = t->cap = 0;
}

// ---------------------------------------------------------------------------------------------
// Builder

spry_tokenizer *tok_new(const char *name) {
    spry_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->name = strdup(name ? name : "tokenizer");
    if (!t->name) {
        free(t);
        return NULL;
    }
    t->ws = SPRY_UC_WS_UNI;
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return t;
}

spry_status tok_alloc_vocab(spry_tokenizer *t, int32_t n_vocab) {
    if (n_vocab <= 0) return spry_errorf(SPRY_ERR_FORMAT, "%s: model.vocab: empty vocabulary", t->name);
    size_t n = (size_t)n_vocab;
    t->n_vocab  = n_vocab;
    t->key_off  = malloc(n * sizeof *t->key_off);
    t->special  = calloc(n, 1);
    t->is_added = calloc(n, 1);
    if (!t->key_off || !t->special || !t->is_added)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: cannot allocate a vocabulary of %d", t->name, n_vocab);
    for (int32_t i = 0; i < n_vocab; i++) t->key_off[i] = -1;
    return SPRY_OK;
}

spry_status tok_set_key(spry_tokenizer *t, int32_t id, const char *key, size_t len,
                        const char *where) {
    if (id < 0 || id >= t->n_vocab)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: id %d out of range", t->name, where, id);
    if (t->key_off[id] >= 0) {
        const char *old = t->keys + t->key_off[id];
        if (strlen(old) == len && !memcmp(old, key, len)) return SPRY_OK;
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: id %d is given to both \"%s\" and \"%.*s\"",
                           t->name, where, id, old, (int)len, key);
    }
    if (len == 0) return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: empty token (id %d)", t->name, where, id);
    if (memchr(key, 0, len))
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: token with id %d contains a NUL", t->name, where, id);
    if (t->keys_len + (int64_t)len + 1 > t->keys_cap) {
        int64_t cap = t->keys_cap ? t->keys_cap : 1 << 16;
        while (cap < t->keys_len + (int64_t)len + 1) cap *= 2;
        char *p = realloc(t->keys, (size_t)cap);
        if (!p) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for the vocabulary", t->name);
        t->keys = p, t->keys_cap = cap;
    }
    memcpy(t->keys + t->keys_len, key, len);
    t->keys[t->keys_len + (int64_t)len] = 0;
    t->key_off[id] = t->keys_len;
    t->keys_len += (int64_t)len + 1;
    return SPRY_OK;
}

spry_status tok_add_added(spry_tokenizer *t, const tok_added *a, const char *where) {
    if (a->len == 0) return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: empty content", t->name, where);
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].id == a->id)
            return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: id %d is already the added token \"%s\"",
                               t->name, where, a->id, t->added[i].content);
        if (t->added[i].len == a->len && !memcmp(t->added[i].content, a->content, a->len))
            return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: \"%s\" is added twice (ids %d and %d)",
                               t->name, where, t->added[i].content, t->added[i].id, a->id);
    }
    SPRY_TRY(tok_set_key(t, a->id, a->content, a->len, where));
    if (t->n_added == t->added_cap) {
        int cap = t->added_cap ? t->added_cap * 2 : 8;
        tok_added *p = realloc(t->added, (size_t)cap * sizeof *p);
        if (!p) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", t->name);
        t->added = p, t->added_cap = cap;
    }
    tok_added *d = &t->added[t->n_added];
    *d = *a;
    d->content = malloc(a->len + 1);
    if (!d->content) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", t->name);
    memcpy(d->content, a->content, a->len);
    d->content[a->len] = 0;
    t->n_added++;
    t->is_added[a->id] = 1;
    t->special[a->id] = a->special;
    return SPRY_OK;
}

int32_t tok_lookup(const spry_tokenizer *t, const char *key, size_t len) {
    if (!t->vocab_ht) return -1;
    uint64_t h = spry_tok_hash(key, len) & t->vocab_mask;
    for (;; h = (h + 1) & t->vocab_mask) {
        int32_t id = t->vocab_ht[h];
        if (id < 0) return -1;
        const char *k = t->keys + t->key_off[id];
        if (!memcmp(k, key, len) && k[len] == 0) return id;
    }
}

spry_status tok_index_vocab(spry_tokenizer *t) {
    uint64_t cap = 1024;
    while (cap < (uint64_t)t->n_vocab * 2) cap *= 2;
    free(t->vocab_ht);
    t->vocab_ht = malloc(cap * sizeof *t->vocab_ht);
    if (!t->vocab_ht) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", t->name);
    t->vocab_mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++) t->vocab_ht[i] = -1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->key_off[id] < 0) continue;
        const char *k = t->keys + t->key_off[id];
        size_t len = strlen(k);
        uint64_t h = spry_tok_hash(k, len) & t->vocab_mask;
        for (;; h = (h + 1) & t->vocab_mask) {
            int32_t o = t->vocab_ht[h];
            if (o < 0) {
                t->vocab_ht[h] = id;
                break;
            }
            if (!strcmp(t->keys + t->key_off[o], k))
                return spry_errorf(SPRY_ERR_FORMAT, "%s: token \"%s\" has two ids, %d and %d",
                                   t->name, k, o, id);
        }
    }
    // Single-byte tokens.
    for (int b = 0; b < 256; b++) {
        char c[2];
        int n = spry_byte_char((uint8_t)b, c);
        t->byte_id[b] = tok_lookup(t, c, (size_t)n);
    }
    return SPRY_OK;
}

static inline uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static inline uint64_t pair_hash(uint64_t key) {
    key ^= key >> 31;
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 29);
}

static void pair_insert(tok_pair_slot *tab, uint64_t mask, uint64_t key, int32_t rank, int32_t nid) {
    for (uint64_t h = pair_hash(key) & mask;; h = (h + 1) & mask) {
        if (tab[h].key == UINT64_MAX || tab[h].key == key) {
            tab[h].key = key, tab[h].rank = rank, tab[h].new_id = nid;
            return;
        }
    }
}

// Rank of the pair (a, b) and its merged id, or INT32_MAX when (a, b) is not a merge.
static inline int32_t pair_rank(const spry_tokenizer *t, int32_t a, int32_t b, int32_t *nid) {
    uint64_t key = pair_key(a, b);
    for (uint64_t h = pair_hash(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        const tok_pair_slot *s = &t->pairs[h];
        if (s->key == key) {
            *nid = s->new_id;
            return s->rank;
        }
        if (s->key == UINT64_MAX) return INT32_MAX;
    }
}

static spry_status pairs_grow(spry_tokenizer *t, uint64_t cap) {
    tok_pair_slot *tab = malloc(cap * sizeof *tab);
    if (!tab) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for merges", t->name);
    for (uint64_t i = 0; i < cap; i++) tab[i].key = UINT64_MAX;
    if (t->pairs)
        for (uint64_t i = 0; i <= t->pair_mask; i++)
            if (t->pairs[i].key != UINT64_MAX)
                pair_insert(tab, cap - 1, t->pairs[i].key, t->pairs[i].rank, t->pairs[i].new_id);
    free(t->pairs);
    t->pairs = tab, t->pair_mask = cap - 1;
    return SPRY_OK;
}

spry_status tok_add_merge(spry_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                          const char *where) {
    int32_t ia = tok_lookup(t, a, alen), ib = tok_lookup(t, b, blen);
    if (ia < 0)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: token \"%.*s\" is not in the vocabulary",
                           t->name, where, (int)alen, a);
    if (ib < 0)
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %s: token \"%.*s\" is not in the vocabulary",
                           t->name, where, (int)blen, b);
    char  buf[512];
    char *ab = alen + blen <= sizeof buf ? buf : malloc(alen + blen);
    if (!ab) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", t->name);
    memcpy(ab, a, alen);
    memcpy(ab + alen, b, blen);
    int32_t iab = tok_lookup(t, ab, alen + blen);
    if (iab < 0) {
        spry_status st = spry_errorf(SPRY_ERR_FORMAT,
                                     "%s: %s: merged token \"%.*s\" is not in the vocabulary",
                                     t->name, where, (int)(alen + blen), ab);
        if (ab != buf) free(ab);
        return st;
    }
    if (ab != buf) free(ab);
    if (t->n_merges == t->merges_cap) {
        int32_t cap = t->merges_cap ? t->merges_cap * 2 : 1024;
        int32_t *p = realloc(t->merge_ab, (size_t)cap * 2 * sizeof *p);
        if (!p) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory for merges", t->name);
        t->merge_ab = p, t->merges_cap = cap;
    }
    if (!t->pairs || (uint64_t)(t->n_merges + 1) * 2 > t->pair_mask + 1)
        SPRY_TRY(pairs_grow(t, t->pairs ? (t->pair_mask + 1) * 2 : 4096));
    int32_t rank = t->n_merges++;
    t->merge_ab[2 * rank] = ia, t->merge_ab[2 * rank + 1] = ib;
    // A repeated pair takes the later rank, as OpenAI's dict(zip(merges, range)) and HF do.
    pair_insert(t->pairs, t->pair_mask, pair_key(ia, ib), rank, iab);
    return SPRY_OK;
}

// Decoded bytes of each token: the byte-to-unicode inverse of its key, or the key's own bytes
// when a character is outside that alphabet (HF's ByteLevel decoder); added tokens decode to
// their content.
static spry_status build_bytes(spry_tokenizer *t) {
    int64_t total = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->key_off[id] >= 0) total += (int64_t)strlen(t->keys + t->key_off[id]) + 1;
    t->bytes    = malloc((size_t)(total ? total : 1));
    size_t nv = t->n_vocab > 0 ? (size_t)t->n_vocab : 1;
    t->byte_off = malloc(nv * sizeof *t->byte_off);
    t->byte_len = malloc(nv * sizeof *t->byte_len);
    if (!t->bytes || !t->byte_off || !t->byte_len)
        return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", t->name);
    int64_t off = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->key_off[id] < 0) {
            t->byte_off[id] = -1, t->byte_len[id] = 0;
            continue;
        }
        const uint8_t *k = (const uint8_t *)t->keys + t->key_off[id];
        size_t n = strlen((const char *)k);
        t->byte_off[id] = off;
        bool mapped = !t->is_added[id];
        size_t o = 0;
        for (size_t i = 0; mapped && i < n;) {
            uint32_t cp;
            int l = spry_utf8_next(k + i, n - i, &cp);
            int b = cp == UINT32_MAX ? -1 : spry_cp_to_byte(cp);
            if (b < 0) mapped = false;
            else t->bytes[off + (int64_t)o++] = (char)b;
            i += (size_t)l;
        }
        if (!mapped) {
            memcpy(t->bytes + off, k, n);
            o = n;
        }
        t->bytes[off + (int64_t)o] = 0;
        t->byte_len[id] = (uint32_t)o;
        off += (int64_t)o + 1;
    }
    return SPRY_OK;
}

spry_status tok_finish(spry_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        if (t->byte_id[b] < 0) {
            char c[3] = {0};
            spry_byte_char((uint8_t)b, c);
            return spry_errorf(SPRY_ERR_FORMAT,
                               "%s: model.vocab: no token for byte 0x%02X (\"%s\"); byte-level BPE "
                               "needs all 256 single-byte tokens",
                               t->name, b, c);
        }
    }
    if (!t->pairs) SPRY_TRY(pairs_grow(t, 16));
    SPRY_TRY(build_bytes(t));
    // Added-token matcher.
    t->first_start = calloc(257, sizeof *t->first_start);
    t->first_list  = malloc((size_t)(t->n_added ? t->n_added : 1) * sizeof *t->first_list);
    if (!t->first_start || !t->first_list) return spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", t->name);
    for (int i = 0; i < t->n_added; i++) {
        uint8_t c = (uint8_t)t->added[i].content[0];
        t->first_start[c + 1]++;
        if (t->added[i].special) t->first_special[c] = true;
        else t->first_any[c] = true;
    }
    for (int c = 0; c < 256; c++) t->first_start[c + 1] += t->first_start[c];
    int32_t fill[256];
    for (int c = 0; c < 256; c++) fill[c] = t->first_start[c];
    for (int i = 0; i < t->n_added; i++) t->first_list[fill[(uint8_t)t->added[i].content[0]]++] = i;
    for (int c = 0; c < 256; c++) {
        // insertion sort by length, longest first (lists are short)
        int32_t *l = t->first_list + t->first_start[c];
        int      n = t->first_start[c + 1] - t->first_start[c];
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && t->added[l[j - 1]].len < t->added[l[j]].len; j--) {
                int32_t x = l[j];
                l[j] = l[j - 1], l[j - 1] = x;
            }
    }
    return SPRY_OK;
}

void spry_tokenizer_free(spry_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->first_start);
    free(t->first_list);
    free(t->name);
    free(t->keys);
    free(t->key_off);
    free(t->bytes);
    free(t->byte_off);
    free(t->byte_len);
    free(t->special);
    free(t->is_added);
    free(t->vocab_ht);
    free(t->merge_ab);
    free(t->pairs);
    free(t);
}

// ---------------------------------------------------------------------------------------------
// Vocabulary queries

int32_t spry_tokenizer_n_vocab(const spry_tokenizer *t) { return t->n_vocab; }
int32_t spry_tokenizer_n_merges(const spry_tokenizer *t) { return t->n_merges; }

const char *spry_tokenizer_token_bytes(const spry_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab || t->byte_off[id] < 0) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->byte_len[id];
    return t->bytes + t->byte_off[id];
}

int32_t spry_tokenizer_vocab_id(const spry_tokenizer *t, const char *key) {
    return tok_lookup(t, key, strlen(key));
}

const char *spry_tokenizer_vocab_key(const spry_tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab || t->key_off[id] < 0) return NULL;
    return t->keys + t->key_off[id];
}

int32_t spry_tokenizer_special_id(const spry_tokenizer *t, const char *content) {
    size_t n = strlen(content);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, content, n)) return t->added[i].id;
    return -1;
}

bool spry_tokenizer_is_special(const spry_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && t->special[id];
}

// ---------------------------------------------------------------------------------------------
// The per-thread cache and scratch space

typedef struct cache_slot {
    uint64_t h; // 0 = empty
    uint32_t key_off, key_len;
    uint32_t ids_off, n_ids;
} cache_slot;

struct spry_tokenizer_cache {
    const spry_tokenizer *tok;
    cache_slot *slots;
    uint64_t    mask;
    int64_t     n, max_entries;
    uint8_t    *keys;
    size_t      keys_len, keys_cap;
    int32_t    *ids;
    size_t      ids_len, ids_cap;
    // BPE scratch
    int32_t *sym, *rk, *nid, *old, *prev, *next;
    int64_t *heap;
    size_t   scratch_cap;
    uint8_t *buf; // prefix-space copies and mapped keys
    size_t   buf_cap;
};

spry_status spry_tokenizer_cache_init(int64_t max_entries, spry_tokenizer_cache **out) {
    *out = NULL;
    spry_tokenizer_cache *c = calloc(1, sizeof *c);
    if (!c) return spry_errorf(SPRY_ERR_NOMEM, "tokenizer cache: out of memory");
    c->max_entries = max_entries > 0 ? max_entries : (int64_t)1 << 20;
    *out = c;
    return SPRY_OK;
}

void spry_tokenizer_cache_free(spry_tokenizer_cache *c) {
    if (!c) return;
    free(c->slots);
    free(c->keys);
    free(c->ids);
    free(c->sym), free(c->rk), free(c->nid), free(c->old), free(c->prev), free(c->next);
    free(c->heap);
    free(c->buf);
    free(c);
}

static void cache_clear(spry_tokenizer_cache *c) {
    if (c->slots) memset(c->slots, 0, (c->mask + 1) * sizeof *c->slots);
    c->n = 0, c->keys_len = 0, c->ids_len = 0;
}

static bool cache_get(const spry_tokenizer_cache *c, uint64_t h, const uint8_t *s, size_t n,
                      const int32_t **ids, uint32_t *n_ids) {
    if (!c->slots) return false;
    for (uint64_t i = h & c->mask;; i = (i + 1) & c->mask) {
        const cache_slot *e = &c->slots[i];
        if (e->h == 0) return false;
        if (e->h == h && e->key_len == n && !memcmp(c->keys + e->key_off, s, n)) {
            *ids = c->ids + e->ids_off, *n_ids = e->n_ids;
            return true;
        }
    }
}

static bool grow_bytes(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need) cap2 *= 2;
    void *q = realloc(*p, cap2 * elem);
    if (!q) return false;
    *p = q, *cap = cap2;
    return true;
}

// Inserts; on any allocation failure the entry is just not cached.
static void cache_put(spry_tokenizer_cache *c, uint64_t h, const uint8_t *s, size_t n,
                      const int32_t *ids, size_t n_ids) {
    if (c->n >= c->max_entries || c->keys_len + n > UINT32_MAX / 2 || c->ids_len + n_ids > UINT32_MAX / 2)
        cache_clear(c);
    if (!c->slots || (uint64_t)(c->n + 1) * 2 > c->mask + 1) {
        uint64_t cap = c->slots ? (c->mask + 1) * 2 : 4096;
        cache_slot *tab = calloc(cap, sizeof *tab);
        if (!tab) return;
        if (c->slots)
            for (uint64_t i = 0; i <= c->mask; i++) {
                if (!c->slots[i].h) continue;
                uint64_t j = c->slots[i].h & (cap - 1);
                while (tab[j].h) j = (j + 1) & (cap - 1);
                tab[j] = c->slots[i];
            }
        free(c->slots);
        c->slots = tab, c->mask = cap - 1;
    }
    if (!grow_bytes((void **)&c->keys, &c->keys_cap, c->keys_len + n, 1)) return;
    if (!grow_bytes((void **)&c->ids, &c->ids_cap, c->ids_len + n_ids, sizeof *c->ids)) return;
    uint64_t i = h & c->mask;
    while (c->slots[i].h) i = (i + 1) & c->mask;
    cache_slot *e = &c->slots[i];
    e->h = h, e->key_off = (uint32_t)c->keys_len, e->key_len = (uint32_t)n;
    e->ids_off = (uint32_t)c->ids_len, e->n_ids = (uint32_t)n_ids;
    memcpy(c->keys + c->keys_len, s, n);
    memcpy(c->ids + c->ids_len, ids, n_ids * sizeof *ids);
    c->keys_len += n, c->ids_len += n_ids, c->n++;
}

static bool cache_scratch(spry_tokenizer_cache *c, size_t n) {
    if (n <= c->scratch_cap) return true;
    size_t cap = c->scratch_cap ? c->scratch_cap : 256;
    while (cap < n) cap *= 2;
    int32_t **arrs[] = {&c->sym, &c->rk, &c->nid, &c->old, &c->prev, &c->next};
    for (size_t k = 0; k < sizeof arrs / sizeof arrs[0]; k++) {
        int32_t *p = realloc(*arrs[k], cap * sizeof *p);
        if (!p) return false;
        *arrs[k] = p;
    }
    int64_t *hp = realloc(c->heap, 2 * cap * sizeof *hp);
    if (!hp) return false;
    c->heap = hp;
    c->scratch_cap = cap;
    return true;
}

// ---------------------------------------------------------------------------------------------
// BPE of one pre-token

// The direct loop (encoder.py): sym[0..m) starts as byte tokens; rk[i] is the rank of the pair
// (sym[i], sym[i+1]) and nid[i] its merged id. Returns the final m.
static size_t bpe_small(const spry_tokenizer *t, spry_tokenizer_cache *c, const uint8_t *s, size_t n) {
    int32_t *sym = c->sym, *rk = c->rk, *nid = c->nid, *old = c->old;
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[s[i]];
    for (size_t i = 0; i + 1 < m; i++) rk[i] = pair_rank(t, sym[i], sym[i + 1], &nid[i]);
    while (m > 1) {
        int32_t best = INT32_MAX;
        size_t  bi = 0;
        for (size_t i = 0; i + 1 < m; i++)
            if (rk[i] < best) best = rk[i], bi = i;
        if (best == INT32_MAX) break;
        int32_t a = sym[bi], b = sym[bi + 1], ab = nid[bi];
        // Merge every occurrence of (a, b) from bi on; old[w] = source index, -1 if merged.
        size_t w = bi, i = bi;
        while (i < m) {
            if (i + 1 < m && sym[i] == a && sym[i + 1] == b) {
                sym[w] = ab, old[w] = -1;
                w++, i += 2;
            } else {
                sym[w] = sym[i], old[w] = (int32_t)i;
                w++, i++;
            }
        }
        m = w;
        // Pairs left of bi-1 are unchanged; others keep their rank when both sides were copied
        // from adjacent positions (old[j] >= j, so rk[old[j]] is still unread).
        for (size_t j = bi ? bi - 1 : 0; j + 1 < m; j++) {
            bool keep = j >= bi && old[j] >= 0 && old[j + 1] == old[j] + 1;
            if (keep) rk[j] = rk[old[j]], nid[j] = nid[old[j]];
            else rk[j] = pair_rank(t, sym[j], sym[j + 1], &nid[j]);
        }
    }
    return m;
}

// Heap order: rank in the high 32 bits, position in the low 32 (smaller = first).
static inline void heap_push(int64_t *hp, size_t *n, int64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (hp[p] <= v) break;
        hp[i] = hp[p], i = p;
    }
    hp[i] = v;
}

static inline int64_t heap_pop(int64_t *hp, size_t *n) {
    int64_t top = hp[0], v = hp[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= m) break;
        size_t r = l + 1, k = r < m && hp[r] < hp[l] ? r : l;
        if (hp[k] >= v) break;
        hp[i] = hp[k], i = k;
    }
    if (m) hp[i] = v;
    return top;
}

// The heap form (HF word.rs merge_all) for long pre-tokens: symbols in a linked list; entries
// (rank, left position) are skipped when stale. Writes the result into c->sym, returns its length.
static size_t bpe_heap(const spry_tokenizer *t, spry_tokenizer_cache *c, const uint8_t *s, size_t n) {
    int32_t *sym = c->sym, *prev = c->prev, *next = c->next, *nid = c->nid;
    int64_t *hp = c->heap;
    size_t   nh = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[s[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = pair_rank(t, sym[i], sym[i + 1], &nid[i]);
        if (r != INT32_MAX) heap_push(hp, &nh, (int64_t)r << 32 | (int64_t)i);
    }
    while (nh) {
        int64_t e = heap_pop(hp, &nh);
        int32_t r = (int32_t)(e >> 32), i = (int32_t)(e & 0xFFFFFFFF);
        if (sym[i] < 0 || next[i] < 0) continue; // merged away, or now last
        int32_t j = next[i], ab = -1;
        if (pair_rank(t, sym[i], sym[j], &ab) != r) continue; // the pair here changed
        sym[i] = ab;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        if (prev[i] >= 0) {
            int32_t p = prev[i], x;
            int32_t rp = pair_rank(t, sym[p], sym[i], &x);
            if (rp != INT32_MAX) heap_push(hp, &nh, (int64_t)rp << 32 | (int64_t)p);
        }
        if (next[i] >= 0) {
            int32_t x;
            int32_t rn = pair_rank(t, sym[i], sym[next[i]], &x);
            if (rn != INT32_MAX) heap_push(hp, &nh, (int64_t)rn << 32 | (int64_t)i);
        }
    }
    size_t m = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[m++] = sym[i];
    return m;
}

// Encodes one pre-token s[0..n) (n >= 1) and appends its ids.
static spry_status encode_piece(const spry_tokenizer *t, spry_tokenizer_cache *c, const uint8_t *s,
                                size_t n, spry_tokens *out) {
    if (n == 1) return spry_tokens_push(out, t->byte_id[s[0]]);
    uint64_t h = 0;
    if (n <= CACHE_MAX_KEY) {
        h = spry_tok_hash(s, n) | 1;
        const int32_t *ids;
        uint32_t       n_ids;
        if (cache_get(c, h, s, n, &ids, &n_ids)) return tokens_append(out, ids, n_ids);
    }
    if (t->ignore_merges) {
        // A pre-token that is itself in the vocabulary is emitted whole (HF ignore_merges).
        if (!grow_bytes((void **)&c->buf, &c->buf_cap, 2 * n, 1))
            return spry_errorf(SPRY_ERR_NOMEM, "encode: out of memory");
        size_t k = 0;
        for (size_t i = 0; i < n; i++) k += (size_t)spry_byte_char(s[i], (char *)c->buf + k);
        int32_t id = tok_lookup(t, (const char *)c->buf, k);
        if (id >= 0) return spry_tokens_push(out, id);
    }
    if (n > INT32_MAX)
        return spry_errorf(SPRY_ERR_ARG, "encode: a pre-token of %zu bytes (the limit is 2^31 - 1)", n);
    if (!cache_scratch(c, n)) return spry_errorf(SPRY_ERR_NOMEM, "encode: out of memory");
    size_t m = n <= BPE_SMALL ? bpe_small(t, c, s, n) : bpe_heap(t, c, s, n);
    if (h) cache_put(c, h, s, n, c->sym, m);
    return tokens_append(out, c->sym, (int64_t)m);
}

// Pre-tokenizes s[0..n) from step k on and encodes each final piece. prefix: whether step k may
// add its prefix space (false for a chunk that does not start its segment).
static spry_status encode_steps(const spry_tokenizer *t, spry_tokenizer_cache *c, const uint8_t *s,
                                size_t n, int k, bool prefix, spry_tokens *out) {
    if (n == 0) return SPRY_OK;
    while (k < t->n_steps && t->steps[k].split == SPRY_PRETOK_NONE && !t->steps[k].prefix_space) k++;
    if (k == t->n_steps) return encode_piece(t, c, s, n, out);
    const tok_step *st = &t->steps[k];
    uint8_t *copy = NULL;
    if (prefix && st->prefix_space && s[0] != ' ') {
        copy = malloc(n + 1);
        if (!copy) return spry_errorf(SPRY_ERR_NOMEM, "encode: out of memory");
        copy[0] = ' ';
        memcpy(copy + 1, s, n);
        s = copy, n++;
    }
    spry_status rc = SPRY_OK;
    for (size_t pos = 0; pos < n && rc == SPRY_OK;) {
        size_t end = spry_pretok_next((spry_pretok_split)st->split, s, n, pos, t->ws);
        rc = encode_steps(t, c, s + pos, end - pos, k + 1, true, out);
        pos = end;
    }
    free(copy);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Added tokens and the segment list

// A segment of the input: text to pre-tokenize, or one added token.
typedef struct segment {
    size_t  off, len;
    int32_t id;    // >= 0: an added token; -1: text
    bool    start; // text that starts its segment (step 0 may add its prefix space)
} segment;

typedef struct seglist {
    segment *v;
    size_t   n, cap;
} seglist;

static spry_status seg_push(seglist *l, size_t off, size_t len, int32_t id, bool start) {
    if (len == 0 && id < 0) return SPRY_OK;
    if (l->n == l->cap) {
        size_t   cap = l->cap ? l->cap * 2 : 16;
        segment *p = realloc(l->v, cap * sizeof *p);
        if (!p) return spry_errorf(SPRY_ERR_NOMEM, "encode: out of memory");
        l->v = p, l->cap = cap;
    }
    l->v[l->n++] = (segment){off, len, id, start};
    return SPRY_OK;
}

// Class of the character ending at i (before) or starting at i (HF's single_word test: a word
// character is a letter or number, as Rust's char::is_alphanumeric).
static uint8_t class_near(const uint8_t *s, size_t n, size_t i, bool before) {
    uint8_t cls;
    if (!before) {
        spry_utf8_class(s + i, n - i, &cls);
        return cls;
    }
    for (size_t k = 1; k <= 4 && k <= i; k++) {
        if (k < 4 && (s[i - k] & 0xC0) == 0x80) continue;
        int l = spry_utf8_class(s + i - k, n - (i - k), &cls);
        return (size_t)l == k ? cls : 0; // otherwise s[i-1] is an invalid byte: "other"
    }
    return 0;
}

static bool is_word_char(const uint8_t *s, size_t n, size_t i, bool before) {
    return class_near(s, n, i, before) & (SPRY_UC_L | SPRY_UC_N);
}

static bool is_ws_at(const uint8_t *s, size_t n, size_t i, int *len) {
    uint8_t cls;
    *len = spry_utf8_class(s + i, n - i, &cls);
    return cls & SPRY_UC_WS_UNI;
}

// Splits text into text segments and added tokens (HF AddedVocabulary: leftmost-longest matches;
// single_word, lstrip, rstrip).
static spry_status split_added(const spry_tokenizer *t, const uint8_t *s, size_t n, bool parse_special,
                               seglist *segs) {
    bool any = false;
    for (int c = 0; c < 256 && !any; c++) any = t->first_any[c] || (parse_special && t->first_special[c]);
    if (!any) return seg_push(segs, 0, n, -1, true);
    size_t text_start = 0, i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (!(t->first_any[c] || (parse_special && t->first_special[c]))) {
            i++;
            continue;
        }
        const tok_added *hit = NULL;
        for (int32_t k = t->first_start[c]; k < t->first_start[c + 1]; k++) {
            const tok_added *a = &t->added[t->first_list[k]];
            if (a->special && !parse_special) continue;
            if (a->len <= n - i && !memcmp(s + i, a->content, a->len)) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->len;
        if (hit->single_word && ((start > 0 && is_word_char(s, n, start, true)) ||
                                 (stop < n && is_word_char(s, n, stop, false)))) {
            i = stop; // rejected: its text stays ordinary text
            continue;
        }
        if (hit->lstrip) {
            while (start > text_start) {
                size_t j = start - 1;
                while (j > text_start && (s[j] & 0xC0) == 0x80) j--;
                int l;
                if (!is_ws_at(s, n, j, &l) || j + (size_t)l != start) break;
                start = j;
            }
        }
        if (hit->rstrip) {
            int l;
            while (stop < n && is_ws_at(s, n, stop, &l)) stop += (size_t)l;
        }
        SPRY_TRY(seg_push(segs, text_start, start - text_start, -1, true));
        SPRY_TRY(seg_push(segs, start, stop - start, hit->id, false));
        text_start = i = stop;
    }
    return seg_push(segs, text_start, n - text_start, -1, true);
}

spry_encode_params spry_encode_params_default(void) {
    return (spry_encode_params){.parse_special = false, .n_threads = 1, .cache = NULL};
}

static spry_status encode_segment(const spry_tokenizer *t, spry_tokenizer_cache *c, const uint8_t *s,
                                  const segment *g, spry_tokens *out) {
    if (g->id >= 0) return spry_tokens_push(out, g->id);
    return encode_steps(t, c, s + g->off, g->len, 0, g->start, out);
}

spry_status spry_tokenizer_encode(const spry_tokenizer *t, const char *text, size_t len,
                                  const spry_encode_params *p, spry_tokens *out) {
    spry_encode_params dp = spry_encode_params_default();
    if (!p) p = &dp;
    const uint8_t *s = (const uint8_t *)text;
    seglist segs = {0};
    spry_status rc = split_added(t, s, len, p->parse_special, &segs);
    if (rc != SPRY_OK) {
        free(segs.v);
        return rc;
    }
    int nt = p->n_threads;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
#else
    nt = 1;
#endif
    bool cuttable = t->n_steps > 0 && t->steps[0].split != SPRY_PRETOK_NONE;
    if (nt <= 1 || len < PAR_MIN_BYTES || !cuttable) {
        spry_tokenizer_cache *c = p->cache;
        if (!c && (rc = spry_tokenizer_cache_init(0, &c)) != SPRY_OK) {
            free(segs.v);
            return rc;
        }
        SPRY_ASSERT(!c->tok || c->tok == t, "a tokenizer cache was used with another tokenizer");
        c->tok = t;
        for (size_t i = 0; i < segs.n && rc == SPRY_OK; i++) rc = encode_segment(t, c, s, &segs.v[i], out);
        if (c != p->cache) spry_tokenizer_cache_free(c);
        free(segs.v);
        return rc;
    }
    // Cut long text segments at safe places into chunks of about len / (8 nt) bytes.
    seglist work = {0};
    size_t  target = len / ((size_t)nt * 8);
    if (target < PAR_MIN_CHUNK) target = PAR_MIN_CHUNK;
    for (size_t i = 0; i < segs.n && rc == SPRY_OK; i++) {
        segment g = segs.v[i];
        if (g.id >= 0) {
            rc = seg_push(&work, g.off, g.len, g.id, false);
            continue;
        }
        size_t a = g.off, end = g.off + g.len;
        bool   start = g.start;
        while (rc == SPRY_OK && a < end) {
            size_t q = a + target;
            while (q < end && !spry_pretok_safe_cut(s, end, q)) q++;
            if (q > end) q = end;
            rc = seg_push(&work, a, q - a, -1, start);
            a = q, start = false;
        }
    }
    free(segs.v);
    spry_tokens *parts = rc == SPRY_OK ? calloc(work.n ? work.n : 1, sizeof *parts) : NULL;
    if (!parts) {
        free(work.v);
        return rc != SPRY_OK ? rc : spry_errorf(SPRY_ERR_NOMEM, "encode: out of memory");
    }
    int failed = 0;
    spry_status first_err = SPRY_OK;
    char        err_msg[256] = "";
#pragma omp parallel num_threads(nt)
    {
        spry_tokenizer_cache *c = NULL;
        spry_status           trc = SPRY_OK;
#ifdef _OPENMP
        bool own = !(omp_get_thread_num() == 0 && p->cache);
#else
        bool own = !p->cache;
#endif
        if (own) trc = spry_tokenizer_cache_init(0, &c);
        else c = p->cache;
        if (c) {
            SPRY_ASSERT(!c->tok || c->tok == t, "a tokenizer cache was used with another tokenizer");
            c->tok = t;
        }
#pragma omp for schedule(dynamic, 1)
        for (size_t i = 0; i < work.n; i++) {
            int f;
#pragma omp atomic read
            f = failed;
            if (f || trc != SPRY_OK) continue;
            trc = encode_segment(t, c, s, &work.v[i], &parts[i]);
        }
        if (trc != SPRY_OK) {
#pragma omp critical(spry_tok_err)
            {
                if (first_err == SPRY_OK) {
                    first_err = trc;
                    snprintf(err_msg, sizeof err_msg, "%s", spry_last_error());
                }
            }
#pragma omp atomic write
            failed = 1;
        }
        if (own) spry_tokenizer_cache_free(c);
    }
    rc = first_err != SPRY_OK ? spry_errorf(first_err, "%s", err_msg) : SPRY_OK;
    for (size_t i = 0; i < work.n; i++) {
        if (rc == SPRY_OK) rc = tokens_append(out, parts[i].ids, parts[i].n);
        spry_tokens_free(&parts[i]);
    }
    free(parts);
    free(work.v);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Decoding

static spry_status check_id(const spry_tokenizer *t, int32_t id, int64_t pos) {
    if (id < 0 || id >= t->n_vocab)
        return spry_errorf(SPRY_ERR_ARG, "decode: ids[%lld] = %d is out of range [0, %d)",
                           (long long)pos, id, t->n_vocab);
    if (t->byte_off[id] < 0)
        return spry_errorf(SPRY_ERR_ARG, "decode: ids[%lld] = %d is not a token of %s",
                           (long long)pos, id, t->name);
    return SPRY_OK;
}

spry_status spry_tokenizer_decode(const spry_tokenizer *t, const int32_t *ids, int64_t n,
                                  bool skip_special, char **out, size_t *out_len) {
    *out = NULL, *out_len = 0;
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        SPRY_TRY(check_id(t, ids[i], i));
        if (!(skip_special && t->special[ids[i]])) total += t->byte_len[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf) return spry_errorf(SPRY_ERR_NOMEM, "decode: cannot allocate %zu bytes", total + 1);
    size_t o = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && t->special[id]) continue;
        memcpy(buf + o, t->bytes + t->byte_off[id], t->byte_len[id]);
        o += t->byte_len[id];
    }
    buf[o] = 0;
    *out = buf, *out_len = o;
    return SPRY_OK;
}

struct spry_tokenizer_stream {
    const spry_tokenizer *tok;
    bool                  skip_special;
    uint8_t               held[4];
    int                   n_held;
    char                 *buf;
    size_t                cap;
};

spry_status spry_tokenizer_stream_init(const spry_tokenizer *tok, bool skip_special,
                                       spry_tokenizer_stream **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return spry_errorf(SPRY_ERR_NOMEM, "decode stream: out of memory");
    (*out)->tok = tok, (*out)->skip_special = skip_special;
    return SPRY_OK;
}

void spry_tokenizer_stream_free(spry_tokenizer_stream *s) {
    if (!s) return;
    free(s->buf);
    free(s);
}

// Length of the tail of b[0..n) that is an incomplete but so far well-formed UTF-8 sequence.
static size_t utf8_incomplete_tail(const uint8_t *b, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = b[n - k];
        if (c < 0x80) return 0;
        if (c < 0xC0) continue; // a continuation byte: look further back
        size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (need <= k) return 0; // complete, or not a lead byte at all
        uint8_t lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        for (size_t j = 1; j < k; j++) {
            uint8_t d = b[n - k + j];
            if (d < (j == 1 ? lo : 0x80) || d > (j == 1 ? hi : 0xBF)) return 0;
        }
        return k;
    }
    return 0;
}

spry_status spry_tokenizer_stream_push(spry_tokenizer_stream *s, int32_t id, const char **bytes,
                                       size_t *len) {
    *bytes = "", *len = 0;
    SPRY_TRY(check_id(s->tok, id, 0));
    size_t tl = s->skip_special && s->tok->special[id] ? 0 : s->tok->byte_len[id];
    size_t n = (size_t)s->n_held + tl;
    if (!grow_bytes((void **)&s->buf, &s->cap, n + 1, 1))
        return spry_errorf(SPRY_ERR_NOMEM, "decode stream: out of memory");
    memcpy(s->buf, s->held, (size_t)s->n_held);
    memcpy(s->buf + s->n_held, s->tok->bytes + s->tok->byte_off[id], tl);
    size_t keep = utf8_incomplete_tail((const uint8_t *)s->buf, n);
    memcpy(s->held, s->buf + n - keep, keep);
    s->n_held = (int)keep;
    s->buf[n - keep] = 0;
    *bytes = s->buf, *len = n - keep;
    return SPRY_OK;
}

void spry_tokenizer_stream_flush(spry_tokenizer_stream *s, const char **bytes, size_t *len) {
    // held[] has room for 4 bytes but at most 3 are used; return them from a stable place.
    if (s->n_held && grow_bytes((void **)&s->buf, &s->cap, 4, 1)) {
        memcpy(s->buf, s->held, (size_t)s->n_held);
        s->buf[s->n_held] = 0;
        *bytes = s->buf, *len = (size_t)s->n_held;
    } else {
        *bytes = "", *len = 0;
    }
    s->n_held = 0;
}
