/*
 * stop_text.c -- stop strings over streamed text (OpenAI's `stop`): the generated text grows by
 * the bytes of each new token (from the streaming detokenizer, which already holds incomplete
 * UTF-8 characters); a stop string may span tokens, so a tail that could still become one is
 * held back and sent only once it cannot. On a match the text ends where the stop string begins
 * (the stop string itself is not returned, as in OpenAI's API).
 *
 * Invariant: no stop string begins before `released` (each released byte was checked when it
 * was released), so the search starts there and costs O(tail * stops) per token.
 */
#include <stdlib.h>
#include <string.h>

#include "serve/serve_internal.h"

// Earliest position >= from where any stop string occurs in t, or (size_t)-1.
static size_t find_stop(const serve_text *t, size_t from, char *const *stops, int n_stops) {
    size_t best = (size_t)-1;
    for (int k = 0; k < n_stops; k++) {
        size_t m = strlen(stops[k]);
        if (!m || m > t->len) continue;
        for (size_t i = from; i + m <= t->len && i < best; i++)
            if (t->buf[i] == stops[k][0] && !memcmp(t->buf + i, stops[k], m)) {
                best = i;
                break;
            }
    }
    return best;
}

int serve_text_append(serve_text *t, const char *s, size_t n, char *const *stops, int n_stops) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *p = realloc(t->buf, cap);
        if (!p) return -1;
        t->buf = p;
        t->cap = cap;
    }
    if (n) memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    size_t at = find_stop(t, t->released, stops, n_stops);
    if (at != (size_t)-1) {
        t->len      = at;
        t->buf[at]  = 0;
        t->released = at;
        return 1;
    }
    // hold back the longest tail that is a proper prefix of a stop string
    size_t rel = t->len;
    for (int k = 0; k < n_stops; k++) {
        size_t m = strlen(stops[k]);
        for (size_t tail = m ? m - 1 : 0; tail > 0; tail--) {
            if (tail > t->len - t->released) continue;
            if (t->len - tail < rel && !memcmp(t->buf + t->len - tail, stops[k], tail)) {
                rel = t->len - tail;
                break;
            }
        }
    }
    t->released = rel;
    return 0;
}

void serve_text_release_all(serve_text *t) { t->released = t->len; }

void serve_text_free(serve_text *t) {
    free(t->buf);
    memset(t, 0, sizeof *t);
}
