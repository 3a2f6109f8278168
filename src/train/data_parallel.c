/*
 * data_parallel.c -- gradient buckets, ZeRO partitions, the sharded norm (see data_parallel.h).
 */
#include "spry/data_parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spry/loss_scale.h"
#include "spry/optim.h"

typedef struct bucket {
    int64_t        lo, hi;   // elements [lo, hi) of the flat buffer
    int64_t        pending;  // parameter uses still to run in this backward pass
    bool           started;
    spry_comm_req *req;      // the reduction in flight, or NULL
    int64_t       *counts;   // (world) stage 2: bucket ∩ partition of each rank
} bucket;

struct spry_dp {
    spry_comm      *comm;
    spry_params    *store;
    spry_dp_params  p;
    int             rank, world;
    int64_t        *part;     // (world + 1) partition bounds
    bucket         *buckets;  // in the order they complete: from the end of the buffer
    int64_t         n_buckets;
    int64_t        *bucket_of; // (n_items) bucket index of each parameter
    int64_t        *uses;      // (n_items) uses left on the tape in this backward pass
    float          *gshard;    // (owned) stage 2: the reduced gradient of this partition
    spry_status     hook_st;   // first error seen inside the backward hook
};

void spry_dp_partition(const spry_dp *d, int r, int64_t *lo, int64_t *hi) {
    if (d->p.stage == 0) {
        *lo = 0, *hi = d->store->n_elem;
        return;
    }
    *lo = d->part[r], *hi = d->part[r + 1];
}

int64_t spry_dp_owned(const spry_dp *d) {
    int64_t lo, hi;
    spry_dp_partition(d, d->rank, &lo, &hi);
    return hi - lo;
}

void spry_dp_free(spry_dp *d) {
    if (!d) return;
    for (int64_t b = 0; b < d->n_buckets; b++) {
        spry_comm_wait(d->buckets[b].req);
        free(d->buckets[b].counts);
    }
    free(d->part), free(d->buckets), free(d->bucket_of), free(d->uses), free(d->gshard), free(d);
}

spry_status spry_dp_init(spry_comm *comm, spry_params *store, const spry_dp_params *p, spry_dp **out) {
    *out = NULL;
    if (p->stage < 0 || p->stage > 2)
        return spry_errorf(SPRY_ERR_CONFIG, "zero_optimization.stage: %d is not supported (0, 1 or 2)", p->stage);
    if (p->bucket_elems < 1)
        return spry_errorf(SPRY_ERR_CONFIG, "zero_optimization.reduce_bucket_size: must be >= 1, got %lld",
                           (long long)p->bucket_elems);
    spry_dp *d = calloc(1, sizeof *d);
    if (!d) return spry_errorf(SPRY_ERR_NOMEM, "data parallel: out of memory");
    d->comm = comm, d->store = store, d->p = *p;
    d->rank = spry_comm_rank(comm), d->world = spry_comm_size(comm);
    int64_t n = store->n_elem, nch = (n + SPRY_NORM_CHUNK - 1) / SPRY_NORM_CHUNK, W = d->world;
    d->part      = malloc(sizeof(int64_t) * (size_t)(W + 1));
    d->bucket_of = malloc(sizeof(int64_t) * (size_t)(store->n_items ? store->n_items : 1));
    d->uses      = calloc((size_t)(store->n_items ? store->n_items : 1), sizeof(int64_t));
    d->buckets   = calloc((size_t)(store->n_items ? store->n_items : 1), sizeof(bucket));
    if (!d->part || !d->bucket_of || !d->uses || !d->buckets) goto oom;
    // partitions: whole norm chunks, as even as chunks allow
    for (int64_t r = 0; r <= W; r++) {
        int64_t b  = (nch * r / W) * SPRY_NORM_CHUNK;
        d->part[r] = b < n ? b : n;
    }
    // buckets: parameters from the last one back, cut when a bucket reaches bucket_elems; a
    // bucket runs from its first parameter's offset to the next bucket's start (padding included)
    int64_t end = n;
    for (int64_t k = store->n_items - 1; k >= 0; k--) {
        int64_t lo = k == 0 ? 0 : store->items[k].offset;
        d->bucket_of[k] = d->n_buckets;
        if (end - lo >= p->bucket_elems || k == 0) {
            d->buckets[d->n_buckets++] = (bucket){.lo = lo, .hi = end};
            end = lo;
        }
    }
    if (p->stage == 2) {
        int64_t own = d->part[d->rank + 1] - d->part[d->rank];
        d->gshard   = malloc(sizeof(float) * (size_t)(own ? own : 1));
        if (!d->gshard) goto oom;
        for (int64_t b = 0; b < d->n_buckets; b++) {
            bucket *bk = &d->buckets[b];
            bk->counts = malloc(sizeof(int64_t) * (size_t)W);
            if (!bk->counts) goto oom;
            for (int r = 0; r < W; r++) {
                int64_t lo = bk->lo > d->part[r] ? bk->lo : d->part[r];
                int64_t hi = bk->hi < d->part[r + 1] ? bk->hi : d->part[r + 1];
                bk->counts[r] = hi > lo ? hi - lo : 0;
            }
        }
    }
    *out = d;
    return SPRY_OK;
oom:
    spry_dp_free(d);
    return spry_errorf(SPRY_ERR_NOMEM, "data parallel: out of memory");
}

// The parameter whose values contain element offset off (binary search over offsets), or -1.
static int64_t param_at(const spry_params *P, int64_t off) {
    int64_t lo = 0, hi = P->n_items - 1, ans = -1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        if (P->items[mid].offset <= off) ans = mid, lo = mid + 1;
        else hi = mid - 1;
    }
    if (ans >= 0 && off >= P->items[ans].offset + spry_tensor_numel(&P->items[ans].t)) return -1;
    return ans;
}

// The parameter a node input belongs to (parameters and views of them), or -1.
static int64_t param_of(const spry_dp *d, const spry_tensor *s) {
    if (!s || !(s->flags & SPRY_TENSOR_PARAM) || !s->data) return -1;
    const float *v = s->data, *base = d->store->values;
    if (v < base || v >= base + d->store->n_elem) return -1;
    return param_at(d->store, (int64_t)(v - base));
}

// Reduces one bucket: non-blocking during the backward pass (overlap), blocking after it (MPI's
// blocking collectives pick better algorithms for large messages and need no extra buffers).
static spry_status start_bucket(spry_dp *d, bucket *bk, bool blocking) {
    bk->started = true;
    float *g    = d->store->grads + bk->lo;
    if (d->p.stage == 2) {
        int64_t lo = bk->lo > d->part[d->rank] ? bk->lo : d->part[d->rank];
        float  *recv = bk->counts[d->rank] ? d->gshard + (lo - d->part[d->rank]) : d->gshard;
        if (blocking) return spry_comm_reduce_scatter(d->comm, g, recv, bk->counts, SPRY_DTYPE_F32, SPRY_REDUCE_SUM);
        return spry_comm_ireduce_scatter(d->comm, g, recv, bk->counts, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, &bk->req);
    }
    if (blocking) return spry_comm_allreduce(d->comm, g, bk->hi - bk->lo, SPRY_DTYPE_F32, SPRY_REDUCE_SUM);
    return spry_comm_iallreduce(d->comm, g, bk->hi - bk->lo, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, &bk->req);
}

// Drives the reductions in flight (MPI progresses non-blocking collectives inside MPI calls).
static spry_status poll(spry_dp *d) {
    for (int64_t b = 0; b < d->n_buckets; b++) {
        bucket *bk = &d->buckets[b];
        if (!bk->req) continue;
        bool done = false;
        spry_status st = spry_comm_test(bk->req, &done);
        if (done) bk->req = NULL;
        SPRY_TRY(st);
    }
    return SPRY_OK;
}

static void on_node(void *user, const spry_node *n) {
    spry_dp *d = user;
    if (d->hook_st) return;
    for (int i = 0; i < n->n_src; i++) {
        int64_t k = param_of(d, n->src[i]);
        if (k < 0 || d->uses[k] <= 0 || --d->uses[k] > 0) continue;
        bucket *bk = &d->buckets[d->bucket_of[k]];
        if (--bk->pending == 0 && !bk->started) d->hook_st = start_bucket(d, bk, false);
    }
    if (!d->hook_st) d->hook_st = poll(d);
}

spry_status spry_dp_arm(spry_dp *d, spry_ctx *ctx) {
    for (int64_t b = 0; b < d->n_buckets; b++) d->buckets[b].started = false, d->buckets[b].pending = 0;
    if (!d->p.overlap || d->world == 1) return SPRY_OK;
    const spry_params *P = d->store;
    memset(d->uses, 0, sizeof(int64_t) * (size_t)P->n_items);
    for (const spry_node *n = ctx->tape; n; n = n->prev)
        for (int i = 0; i < n->n_src; i++) {
            int64_t k = param_of(d, n->src[i]);
            if (k >= 0) d->uses[k]++;
        }
    // a bucket waits for the parameters that are used; unused ones (frozen, absent) are ready
    for (int64_t k = 0; k < P->n_items; k++)
        if (d->uses[k] > 0) d->buckets[d->bucket_of[k]].pending++;
    d->hook_st               = SPRY_OK;
    ctx->on_backward_node    = on_node;
    ctx->on_backward_user    = d;
    return SPRY_OK;
}

spry_status spry_dp_reduce(spry_dp *d, spry_ctx *ctx) {
    if (ctx && ctx->on_backward_user == d) ctx->on_backward_node = NULL, ctx->on_backward_user = NULL;
    if (d->world == 1) return SPRY_OK;
    spry_status st = d->hook_st;
    d->hook_st     = SPRY_OK;
    // buckets in flight finish first (the same order on every rank), then the ones not started
    // during the backward pass (no overlap, or never touched) go, blocking
    for (int64_t b = 0; b < d->n_buckets; b++) {
        spry_status w = spry_comm_wait(d->buckets[b].req);
        d->buckets[b].req = NULL;
        if (!st) st = w;
    }
    for (int64_t b = 0; b < d->n_buckets && !st; b++)
        if (!d->buckets[b].started) st = start_bucket(d, &d->buckets[b], true);
    SPRY_TRY(st);
    // average: the sum over ranks times 1/world
    float   inv = 1.0f / (float)d->world;
    float  *g   = d->p.stage == 2 ? d->gshard : d->store->grads;
    int64_t n   = d->p.stage == 2 ? d->part[d->rank + 1] - d->part[d->rank] : d->store->n_elem;
    float  *dst = d->p.stage == 2 ? d->store->grads + d->part[d->rank] : d->store->grads;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = g[i] * inv;
    return SPRY_OK;
}

spry_status spry_dp_clip(spry_dp *d, float max_norm, float *norm) {
    if (d->p.stage < 2 || d->world == 1) {
        *norm = spry_clip_grad_norm(d->store, max_norm);
        return isnan(*norm) && !spry_has_inf_or_nan(d->store->grads, d->store->n_elem)
                   ? spry_errorf(SPRY_ERR_NOMEM, "clip: out of memory") : SPRY_OK;
    }
    // stage 2: each rank sums the squares of its chunks; the chunk sums are gathered and added in
    // chunk order, exactly as the unsharded norm adds them
    int64_t  n = d->store->n_elem, nch = (n + SPRY_NORM_CHUNK - 1) / SPRY_NORM_CHUNK, W = d->world;
    int64_t *cnt  = malloc(sizeof(int64_t) * (size_t)W);
    double  *part = calloc((size_t)(nch ? nch : 1), sizeof *part);
    spry_status st = cnt && part ? SPRY_OK : spry_errorf(SPRY_ERR_NOMEM, "clip: out of memory");
    int64_t  c0 = d->part[d->rank] / SPRY_NORM_CHUNK;
    int64_t  c1 = (d->part[d->rank + 1] + SPRY_NORM_CHUNK - 1) / SPRY_NORM_CHUNK;
    if (!st) {
        for (int r = 0; r < W; r++)
            cnt[r] = (d->part[r + 1] + SPRY_NORM_CHUNK - 1) / SPRY_NORM_CHUNK - d->part[r] / SPRY_NORM_CHUNK;
        spry_grad_sq_chunks(d->store->grads, n, c0, c1, part + c0);
        st = spry_comm_allgather(d->comm, part + c0, part, cnt, SPRY_DTYPE_F64);
    }
    double total = 0;
    for (int64_t c = 0; c < nch && !st; c++) total += part[c];
    free(cnt), free(part);
    SPRY_TRY(st);
    *norm   = (float)sqrt(total);
    float s = spry_clip_coef(*norm, max_norm);
    if (s < 1.0f) {
        float *g = d->store->grads + d->part[d->rank];
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < d->part[d->rank + 1] - d->part[d->rank]; i++) g[i] *= s;
    }
    return SPRY_OK;
}

spry_status spry_dp_overflow(spry_dp *d, bool *overflow) {
    int64_t lo = 0, hi = d->store->n_elem;
    if (d->p.stage == 2) lo = d->part[d->rank], hi = d->part[d->rank + 1];
    int32_t flag = spry_has_inf_or_nan(d->store->grads + lo, hi - lo);
    if (d->p.stage == 2 && d->world > 1)
        SPRY_TRY(spry_comm_allreduce(d->comm, &flag, 1, SPRY_DTYPE_I32, SPRY_REDUCE_MAX));
    *overflow = flag != 0;
    return SPRY_OK;
}

spry_status spry_dp_gather_params(spry_dp *d) {
    if (d->p.stage == 0 || d->world == 1) return SPRY_OK;
    int64_t *cnt = malloc(sizeof(int64_t) * (size_t)d->world);
    if (!cnt) return spry_errorf(SPRY_ERR_NOMEM, "data parallel: out of memory");
    for (int r = 0; r < d->world; r++) cnt[r] = d->part[r + 1] - d->part[r];
    spry_status st = spry_comm_allgather(d->comm, d->store->values + d->part[d->rank], d->store->values, cnt,
                                         SPRY_DTYPE_F32);
    free(cnt);
    return st;
}
