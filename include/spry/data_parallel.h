/*
 * data_parallel.h -- data-parallel gradient synchronisation and ZeRO stages 1 and 2 over a
 * spry_comm, on the flat parameter store (DeepSpeed's zero_optimization, Rajbhandari et al. 2020).
 *
 *   stage 0: gradients are allreduced and averaged; every rank keeps the whole optimizer state.
 *   stage 1: as 0, but rank r keeps optimizer state only for its partition [lo_r, hi_r) of the
 *            flat buffers, updates those parameters and all-gathers the updated values.
 *   stage 2: as 1, but gradients are reduce-scattered: rank r receives the averaged gradient of
 *            its partition only (a (hi_r - lo_r) buffer).
 * Partitions are contiguous, in rank order, and whole chunks of SPRY_NORM_CHUNK elements, so the
 * sharded gradient norm is the unsharded one bit for bit, and every stage gives the same update.
 *
 * Gradients travel in buckets: contiguous ranges of the flat buffer of about bucket_elems
 * elements (DeepSpeed's reduce_bucket_size), cut at parameter boundaries from the end of the
 * buffer (the last layers' gradients are complete first). With overlap (overlap_comm), a
 * bucket's non-blocking reduction starts during the backward pass as soon as the last node
 * touching its parameters has run; otherwise all buckets are reduced after the backward pass.
 */
#ifndef SPRY_DATA_PARALLEL_H
#define SPRY_DATA_PARALLEL_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/comm.h"
#include "spry/ops.h"
#include "spry/params.h"

typedef struct spry_dp_params {
    int     stage;        // ZeRO stage 0, 1 or 2 (0)
    int64_t bucket_elems; // reduce_bucket_size in elements (DeepSpeed: 5e8)
    bool    overlap;      // overlap_comm: reduce buckets during the backward pass (false)
} spry_dp_params;

typedef struct spry_dp spry_dp;

// Sets up partitions and buckets for store on comm (neither owned). SPRY_ERR_CONFIG for a stage
// other than 0-2 or bucket_elems < 1; SPRY_ERR_NOMEM. *out NULL on error.
spry_status spry_dp_init(spry_comm *comm, spry_params *store, const spry_dp_params *p, spry_dp **out);
void        spry_dp_free(spry_dp *d);

// Rank r's partition [*lo, *hi) of the flat buffers (the whole buffer for stage 0).
void spry_dp_partition(const spry_dp *d, int r, int64_t *lo, int64_t *hi);
// Bytes of f32 optimizer state per element of that partition is the optimizer's business; this
// is the partition's element count for this rank.
int64_t spry_dp_owned(const spry_dp *d);

// Before the backward pass whose gradients complete the step (the last micro-batch): with
// overlap, counts each parameter's uses on ctx's tape and installs ctx's backward hook so that
// buckets start as they become complete. Without overlap (or one rank) it does nothing.
spry_status spry_dp_arm(spry_dp *d, spry_ctx *ctx);
// After that backward pass: finishes every bucket's reduction and averages over ranks. Then the
// store's gradients hold the global mean: everywhere (stage 0/1) or on this rank's partition
// (stage 2; the rest of the buffer is stale). Removes ctx's hook. One rank: nothing to do.
spry_status spry_dp_reduce(spry_dp *d, spry_ctx *ctx);
// Global gradient norm (over the partitions for stage 2) and clipping with torch's rule on the
// gradients this rank will use; *norm is identical on every rank.
spry_status spry_dp_clip(spry_dp *d, float max_norm, float *norm);
// Whether any gradient this rank uses is inf/NaN on any rank (fp16 overflow agreement).
spry_status spry_dp_overflow(spry_dp *d, bool *overflow);
// After the optimizer updated this rank's partition: all-gathers parameter values (stage >= 1).
spry_status spry_dp_gather_params(spry_dp *d);

#endif
