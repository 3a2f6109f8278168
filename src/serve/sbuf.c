/*
 * sbuf.c -- a growable byte buffer (kilo's append buffer) and a JSON string writer for the HTTP
 * server. Generated text is bytes and may be ill-formed UTF-8 (an arbitrary id sequence, or
 * text cut inside a character at the end of a generation); JSON must be UTF-8, so every byte of
 * an ill-formed sequence becomes U+FFFD, as Hugging Face's decode (errors="replace") does.
 * Well-formed means RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/serve_internal.h"

static bool sb_reserve(sbuf *b, size_t extra) {
    if (b->oom) return false;
    if (b->n + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p   = p;
    b->cap = cap;
    return true;
}

void sb_put(sbuf *b, const void *s, size_t n) {
    if (!sb_reserve(b, n)) return;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int  k = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)k < sizeof small) {
        sb_put(b, small, (size_t)k);
        return;
    }
    if (!sb_reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

// Length of the well-formed UTF-8 character at s[0..n), or 0 if ill-formed.
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t   k;
    unsigned lo = 0x80, hi = 0xBF; // bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF) k = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0;
    if (n < k || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return k;
}

void sb_json_str(sbuf *b, const char *s, size_t n) {
    if (!s) {
        sb_puts(b, "null");
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    sb_put(b, "\"", 1);
    size_t run = 0; // start of bytes copied verbatim
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        size_t k = c >= 0x80 ? utf8_len(u + i, n - i) : 0;
        if (k) {
            i += k;
            continue;
        }
        sb_put(b, s + run, i - run);
        switch (c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (c < 0x20) sb_printf(b, "\\u%04x", c);
            else sb_puts(b, "\\ufffd"); // one byte of an ill-formed sequence
        }
        i++;
        run = i;
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

void sb_json_cstr(sbuf *b, const char *s) { sb_json_str(b, s, s ? strlen(s) : 0); }

void sb_free(sbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

char *sb_take(sbuf *b, size_t *len) {
    if (!b->oom && !b->p) sb_put(b, "", 0);
    if (b->oom) {
        sb_free(b);
        if (len) *len = 0;
        return NULL;
    }
    char *p = b->p;
    if (len) *len = b->n;
    memset(b, 0, sizeof *b);
    return p;
}
