/*
 * pretok.c -- the GPT-2 and BLOOM pre-tokenizer scanners (see pretok.h for the regexes).
 *
 * How the GPT-2 regex is evaluated without backtracking, at position p with character c:
 *   1. c == '\'' followed by s t m d (2 bytes) or re ve ll (3 bytes): a contraction (ASCII,
 *      case-sensitive, exactly as the regex).
 *   2. c == ' ' followed by a letter / number / "other" character: the space plus the maximal run
 *      of that class (the ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` alternatives).
 *   3. c a letter / number / other: the maximal run of its class.
 *   4. c whitespace: let the whitespace run be [p, q). If q == n, or the run is one character,
 *      the match is [p, q) (`\s+(?!\S)` at the end, or `\s+`); otherwise `\s+(?!\S)` backtracks
 *      one character so the last whitespace character can join the next word: [p, q - last).
 * Every character falls into exactly one of letter, number, whitespace, other (an invalid byte is
 * "other"), so some alternative always matches and pre-tokens tile the text.
 *
 * Safe cuts (pretok.h): if s[q-1] is an ASCII letter and s[q] is ' ', then under GPT-2 the token
 * holding s[q-1] is a contraction or a letter run, and both end at q; no alternative looks past a
 * letter except the letter run itself, which stops at ' ' and at the end alike. Under BLOOM,
 * s[q-1] is in an allowed run that stops at q (space is excluded). Scanning restarts at q in
 * both cases, so encoding [0, q) and [q, n) separately gives the same pre-tokens.
 */
#include "text/pretok.h"

#include "text/unicode.h"

const char spry_pretok_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char spry_pretok_bloom_regex[] =
    " ?[^(\\s|[.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C])]+";

// Character kinds for the GPT-2 regex.
enum { K_OTHER = 0, K_L = 1, K_N = 2, K_WS = 3 };

static inline int kind_of(uint8_t cls, uint8_t ws) {
    if (cls & ws) return K_WS;
    if (cls & SPRY_UC_L) return K_L;
    if (cls & SPRY_UC_N) return K_N;
    return K_OTHER;
}

// Kind of the character at s[i] and its byte length.
static inline int kind_at(const uint8_t *s, size_t n, size_t i, uint8_t ws, int *len) {
    uint8_t cls;
    if (s[i] < 0x80) {
        cls = spry_uc_stage2[s[i]]; // block 0 covers U+0000..U+00FF
        *len = 1;
    } else {
        *len = spry_utf8_class(s + i, n - i, &cls);
    }
    return kind_of(cls, ws);
}

// End of the maximal run of characters of kind k starting at i.
static inline size_t run_end(const uint8_t *s, size_t n, size_t i, int k, uint8_t ws) {
    while (i < n) {
        int len;
        if (kind_at(s, n, i, ws, &len) != k) break;
        i += (size_t)len;
    }
    return i;
}

size_t spry_pretok_gpt2_next(const uint8_t *s, size_t n, size_t pos, uint8_t ws) {
    uint8_t c = s[pos];
    if (c == '\'' && pos + 1 < n) {
        uint8_t d = s[pos + 1];
        if (d == 's' || d == 't' || d == 'm' || d == 'd') return pos + 2;
        if (pos + 2 < n) {
            uint8_t e = s[pos + 2];
            if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l'))
                return pos + 3;
        }
    }
    int len;
    int k = kind_at(s, n, pos, ws, &len);
    if (c == ' ' && pos + 1 < n) {
        int len2;
        int k2 = kind_at(s, n, pos + 1, ws, &len2);
        if (k2 != K_WS) return run_end(s, n, pos + 1 + (size_t)len2, k2, ws);
    }
    if (k != K_WS) return run_end(s, n, pos + (size_t)len, k, ws);
    // A whitespace run [pos, q); remember where its last character starts.
    size_t q = pos + (size_t)len, last = pos;
    while (q < n) {
        int l2;
        if (kind_at(s, n, q, ws, &l2) != K_WS) break;
        last = q;
        q += (size_t)l2;
    }
    if (q == n || last == pos) return q;
    return last;
}

// BLOOM's excluded characters besides whitespace: ( ) | . , ! ? … 。 ， 、 । ۔ ،
static inline bool bloom_excluded_cp(uint32_t cp) {
    switch (cp) {
    case '(': case ')': case '|': case '.': case ',': case '!': case '?':
    case 0x2026: case 0x3002: case 0xFF0C: case 0x3001: case 0x0964: case 0x06D4: case 0x060C:
        return true;
    default: return false;
    }
}

// Whether the character at s[i] may be in a BLOOM match, and its length.
static inline bool bloom_allowed(const uint8_t *s, size_t n, size_t i, uint8_t ws, int *len) {
    uint32_t cp;
    if (s[i] < 0x80) {
        cp = s[i];
        *len = 1;
    } else {
        *len = spry_utf8_next(s + i, n - i, &cp);
        if (cp == UINT32_MAX) return true; // an invalid byte is "other": allowed
    }
    if (spry_uc_class(cp) & ws) return false;
    return !bloom_excluded_cp(cp);
}

size_t spry_pretok_bloom_next(const uint8_t *s, size_t n, size_t pos, uint8_t ws) {
    int len;
    size_t i = pos;
    if (s[i] == ' ' && i + 1 < n && bloom_allowed(s, n, i + 1, ws, &len)) i += 1;
    if (bloom_allowed(s, n, i, ws, &len)) { // a match: [pos, end of the allowed run)
        i += (size_t)len;
        while (i < n && bloom_allowed(s, n, i, ws, &len)) i += (size_t)len;
        return i;
    }
    // A gap: excluded characters up to the next position where a match starts (an allowed
    // character, or a space followed by one).
    i = pos;
    while (i < n) {
        if (bloom_allowed(s, n, i, ws, &len)) break;
        if (s[i] == ' ' && i + 1 < n) {
            int l2;
            if (bloom_allowed(s, n, i + 1, ws, &l2)) break;
        }
        i += (size_t)len;
    }
    return i;
}
