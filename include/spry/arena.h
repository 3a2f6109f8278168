/*
 * arena.h -- the step arena: a chunked bump allocator (ggml context, kilo's abuf).
 *
 * Activations, saved-for-backward tensors, the tape and temporaries of one training step or one
 * request live here and die together at spry_arena_reset(). The arena grows by adding chunks,
 * never by realloc, so pointers stay valid until reset/rewind. It records a high-water mark so a
 * caller can size it once and then run steps with zero mallocs.
 */
#ifndef SPRY_ARENA_H
#define SPRY_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct spry_arena spry_arena;

typedef struct spry_arena_mark {
    void  *chunk;
    size_t used;
} spry_arena_mark;

// Creates an arena whose first chunk holds chunk_bytes (grows by chunks of at least that size).
// Returns NULL on OOM.
spry_arena *spry_arena_init(size_t chunk_bytes);
void        spry_arena_free(spry_arena *a);

// Returns 64-byte aligned memory of n bytes, or NULL on OOM (the arena stays usable).
void *spry_arena_alloc(spry_arena *a, size_t n);
// As spry_arena_alloc, zero-filled.
void *spry_arena_calloc(spry_arena *a, size_t n);

// Frees everything allocated since init; keeps the chunks for reuse.
void spry_arena_reset(spry_arena *a);
// Inner scopes: everything allocated after a mark is released by rewinding to it.
spry_arena_mark spry_arena_get_mark(const spry_arena *a);
void            spry_arena_rewind(spry_arena *a, spry_arena_mark m);

size_t spry_arena_used(const spry_arena *a);       // bytes in use now
size_t spry_arena_high_water(const spry_arena *a); // most bytes ever in use
size_t spry_arena_n_mallocs(const spry_arena *a);  // chunks allocated so far

#endif
