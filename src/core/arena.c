/*
 * arena.c -- chunked bump allocator (see arena.h).
 *
 * Chunks form a singly linked list; allocation bumps `used` in the current chunk and moves to
 * the next chunk (reusing one kept from an earlier step, or mallocing a new one) when full.
 */
#include "spry/arena.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64

typedef struct chunk {
    struct chunk *next;
    size_t        cap;
    size_t        used;
    unsigned char *mem;
} chunk;

struct spry_arena {
    chunk *head;    // first chunk
    chunk *cur;     // chunk being filled
    size_t chunk_bytes;
    size_t used_before_cur; // bytes used in chunks before cur
    size_t high_water;
    size_t n_mallocs;
};

static chunk *chunk_new(size_t cap) {
    chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->mem = aligned_alloc(ARENA_ALIGN, (cap + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
    if (!c->mem) {
        free(c);
        return NULL;
    }
    c->next = NULL;
    c->cap  = cap;
    c->used = 0;
    return c;
}

spry_arena *spry_arena_init(size_t chunk_bytes) {
    spry_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->chunk_bytes = chunk_bytes < 4096 ? 4096 : chunk_bytes;
    a->head        = chunk_new(a->chunk_bytes);
    if (!a->head) {
        free(a);
        return NULL;
    }
    a->cur       = a->head;
    a->n_mallocs = 1;
    return a;
}

void spry_arena_free(spry_arena *a) {
    if (!a) return;
    for (chunk *c = a->head; c;) {
        chunk *n = c->next;
        free(c->mem);
        free(c);
        c = n;
    }
    free(a);
}

void *spry_arena_alloc(spry_arena *a, size_t n) {
    size_t need = (n + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (need == 0) need = ARENA_ALIGN;
    while (a->cur->used + need > a->cur->cap) {
        chunk *next = a->cur->next;
        if (next && next->cap < need) {
            // a kept chunk too small for this request: insert a fresh one before it
            next = NULL;
        }
        if (!next) {
            size_t cap = need > a->chunk_bytes ? need : a->chunk_bytes;
            chunk *c   = chunk_new(cap);
            if (!c) return NULL;
            a->n_mallocs++;
            c->next      = a->cur->next;
            a->cur->next = c;
            next         = c;
        }
        a->used_before_cur += a->cur->used;
        a->cur       = next;
        a->cur->used = 0;
    }
    void *p = a->cur->mem + a->cur->used;
    a->cur->used += need;
    size_t total = a->used_before_cur + a->cur->used;
    if (total > a->high_water) a->high_water = total;
    return p;
}

void *spry_arena_calloc(spry_arena *a, size_t n) {
    void *p = spry_arena_alloc(a, n);
    if (p) memset(p, 0, n);
    return p;
}

void spry_arena_reset(spry_arena *a) {
    a->cur             = a->head;
    a->cur->used       = 0;
    a->used_before_cur = 0;
}

spry_arena_mark spry_arena_get_mark(const spry_arena *a) {
    return (spry_arena_mark){.chunk = a->cur, .used = a->cur->used};
}

void spry_arena_rewind(spry_arena *a, spry_arena_mark m) {
    // recompute used_before_cur by walking to the marked chunk
    size_t before = 0;
    chunk *c      = a->head;
    while (c && c != (chunk *)m.chunk) {
        before += c->used;
        c = c->next;
    }
    if (!c) return; // mark from another arena generation: ignore
    a->cur             = c;
    a->cur->used       = m.used;
    a->used_before_cur = before;
}

size_t spry_arena_used(const spry_arena *a) { return a->used_before_cur + a->cur->used; }
size_t spry_arena_high_water(const spry_arena *a) { return a->high_water; }
size_t spry_arena_n_mallocs(const spry_arena *a) { return a->n_mallocs; }
