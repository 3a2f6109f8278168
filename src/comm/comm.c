/*
 * comm.c -- the communicator front end (argument checks, time accounting, agreement) and the
 * single-process backend (see comm.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "comm/comm_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double spry_comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool dtype_ok(spry_dtype dt) {
    return dt == SPRY_DTYPE_F32 || dt == SPRY_DTYPE_F64 || dt == SPRY_DTYPE_I32 || dt == SPRY_DTYPE_I64;
}

static size_t esize(spry_dtype dt) { return spry_dtype_nbytes(dt, 1); }

/* ---- single process: one rank, so reductions are copies ------------------------------------ */

static spry_status s_allreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op) {
    (void)c, (void)buf, (void)n, (void)dt, (void)op;
    return SPRY_OK;
}
static spry_status s_reduce_scatter(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                    spry_dtype dt, spry_reduce_op op) {
    (void)c, (void)op;
    memmove(recv, send, (size_t)counts[0] * esize(dt));
    return SPRY_OK;
}
static spry_status s_allgather(spry_comm *c, const void *send, void *recv, const int64_t *counts, spry_dtype dt) {
    (void)c;
    if (send != recv) memmove(recv, send, (size_t)counts[0] * esize(dt));
    return SPRY_OK;
}
static spry_status s_alltoallv(spry_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                               const int64_t *rc, const int64_t *rd, spry_dtype dt) {
    (void)c;
    if (sc[0] != rc[0])
        return spry_errorf(SPRY_ERR_ARG, "alltoallv: rank 0 sends %lld elements to itself but expects %lld",
                           (long long)sc[0], (long long)rc[0]);
    memmove((char *)recv + rd[0] * (int64_t)esize(dt), (const char *)send + sd[0] * (int64_t)esize(dt),
            (size_t)sc[0] * esize(dt));
    return SPRY_OK;
}
static spry_status s_broadcast(spry_comm *c, void *buf, size_t nbytes, int root) {
    (void)c, (void)buf, (void)nbytes, (void)root;
    return SPRY_OK;
}
static spry_status s_barrier(spry_comm *c) {
    (void)c;
    return SPRY_OK;
}
static spry_status s_iallreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op, spry_comm_req *r) {
    (void)r;
    return s_allreduce(c, buf, n, dt, op);
}
static spry_status s_ireduce_scatter(spry_comm *c, const void *send, void *recv, spry_dtype dt, spry_reduce_op op,
                                     spry_comm_req *r) {
    return s_reduce_scatter(c, send, recv, r->counts, dt, op);
}
static spry_status s_test(spry_comm_req *r, bool *done) {
    (void)r;
    *done = true;
    return SPRY_OK;
}
static spry_status s_wait(spry_comm_req *r) {
    (void)r;
    return SPRY_OK;
}
static void s_finalize(spry_comm *c) { (void)c; }

static const spry_comm_vt k_single = {s_allreduce, s_reduce_scatter, s_allgather, s_alltoallv, s_broadcast,
                                      s_barrier,   s_iallreduce,     s_ireduce_scatter, s_test, s_wait,
                                      s_finalize};

/* ---- front end ------------------------------------------------------------------------------ */

static bool launched_by_mpi(int *size) {
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    if (!s) s = getenv("PMI_SIZE");
    if (!s) s = getenv("PMIX_SIZE");
    if (!s && (getenv("PMIX_RANK") || getenv("PMI_RANK"))) s = "1";
    if (!s) return false;
    *size = atoi(s);
    return true;
}

spry_status spry_comm_init(bool force_single, spry_comm **out) {
    *out         = NULL;
    spry_comm *c = calloc(1, sizeof *c);
    if (!c) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    c->vt = &k_single, c->rank = 0, c->size = 1;
    snprintf(c->backend, sizeof c->backend, "single");
    int launched_size = 0;
    if (!force_single && launched_by_mpi(&launched_size)) {
#ifdef SPRY_HAVE_MPI
        spry_status st = spry_comm_mpi_open(c);
        if (st) {
            free(c);
            return st;
        }
#else
        if (launched_size > 1) {
            free(c);
            return spry_errorf(SPRY_ERR_UNSUPPORTED, "comm: launched as one of %d MPI processes, but this spry was "
                               "built without MPI. HINT: install libopenmpi-dev and rebuild", launched_size);
        }
#endif
    }
    *out = c;
    return SPRY_OK;
}

void spry_comm_free(spry_comm *c) {
    if (!c) return;
    c->vt->finalize(c);
    free(c);
}

int         spry_comm_rank(const spry_comm *c) { return c->rank; }
int         spry_comm_size(const spry_comm *c) { return c->size; }
const char *spry_comm_backend(const spry_comm *c) { return c->backend; }

double spry_comm_take_time(spry_comm *c) {
    double t  = c->comm_s;
    c->comm_s = 0;
    return t;
}

static spry_status check_dtype(const char *what, spry_dtype dt) {
    if (!dtype_ok(dt))
        return spry_errorf(SPRY_ERR_ARG, "comm %s: dtype %d is not f32, f64, i32 or i64", what, (int)dt);
    return SPRY_OK;
}

static spry_status check_counts(const spry_comm *c, const char *what, const int64_t *counts) {
    for (int r = 0; r < c->size; r++)
        if (counts[r] < 0)
            return spry_errorf(SPRY_ERR_ARG, "comm %s: count for rank %d is negative (%lld)", what, r, (long long)counts[r]);
    return SPRY_OK;
}

#define TIMED(c, call)                                                                             \
    do {                                                                                           \
        double      t0_ = spry_comm_now();                                                         \
        spry_status st_ = (call);                                                                  \
        (c)->comm_s += spry_comm_now() - t0_;                                                      \
        return st_;                                                                                \
    } while (0)

spry_status spry_comm_allreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op) {
    SPRY_TRY(check_dtype("allreduce", dt));
    if (n < 0) return spry_errorf(SPRY_ERR_ARG, "comm allreduce: negative count %lld", (long long)n);
    TIMED(c, c->vt->allreduce(c, buf, n, dt, op));
}

spry_status spry_comm_reduce_scatter(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                     spry_dtype dt, spry_reduce_op op) {
    SPRY_TRY(check_dtype("reduce_scatter", dt));
    SPRY_TRY(check_counts(c, "reduce_scatter", counts));
    TIMED(c, c->vt->reduce_scatter(c, send, recv, counts, dt, op));
}

spry_status spry_comm_allgather(spry_comm *c, const void *send, void *recv, const int64_t *counts, spry_dtype dt) {
    SPRY_TRY(check_dtype("allgather", dt));
    SPRY_TRY(check_counts(c, "allgather", counts));
    TIMED(c, c->vt->allgather(c, send, recv, counts, dt));
}

spry_status spry_comm_alltoallv(spry_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                                const int64_t *rc, const int64_t *rd, spry_dtype dt) {
    SPRY_TRY(check_dtype("alltoallv", dt));
    SPRY_TRY(check_counts(c, "alltoallv send", sc));
    SPRY_TRY(check_counts(c, "alltoallv recv", rc));
    TIMED(c, c->vt->alltoallv(c, send, sc, sd, recv, rc, rd, dt));
}

spry_status spry_comm_broadcast(spry_comm *c, void *buf, size_t nbytes, int root) {
    if (root < 0 || root >= c->size)
        return spry_errorf(SPRY_ERR_ARG, "comm broadcast: root %d is not a rank of a world of %d", root, c->size);
    TIMED(c, c->vt->broadcast(c, buf, nbytes, root));
}

spry_status spry_comm_barrier(spry_comm *c) { TIMED(c, c->vt->barrier(c)); }

static spry_comm_req *req_new(spry_comm *c) {
    spry_comm_req *r = calloc(1, sizeof *r);
    if (r) r->c = c, r->t_start = spry_comm_now();
    return r;
}

static void req_free(spry_comm_req *r) {
    free(r->counts);
    free(r);
}

spry_status spry_comm_iallreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op,
                                 spry_comm_req **req) {
    *req = NULL;
    SPRY_TRY(check_dtype("iallreduce", dt));
    if (n < 0) return spry_errorf(SPRY_ERR_ARG, "comm iallreduce: negative count %lld", (long long)n);
    spry_comm_req *r = req_new(c);
    if (!r) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    double      t0 = spry_comm_now();
    spry_status st = c->vt->iallreduce(c, buf, n, dt, op, r);
    c->comm_s += spry_comm_now() - t0; // starting may already move most of the data
    if (st) {
        req_free(r);
        return st;
    }
    *req = r;
    return SPRY_OK;
}

spry_status spry_comm_ireduce_scatter(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                      spry_dtype dt, spry_reduce_op op, spry_comm_req **req) {
    *req = NULL;
    SPRY_TRY(check_dtype("ireduce_scatter", dt));
    SPRY_TRY(check_counts(c, "ireduce_scatter", counts));
    spry_comm_req *r = req_new(c);
    if (r) r->counts = malloc(sizeof(int64_t) * (size_t)c->size);
    if (!r || !r->counts) {
        if (r) req_free(r);
        return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    }
    memcpy(r->counts, counts, sizeof(int64_t) * (size_t)c->size);
    double      t0 = spry_comm_now();
    spry_status st = c->vt->ireduce_scatter(c, send, recv, dt, op, r);
    c->comm_s += spry_comm_now() - t0;
    if (st) {
        req_free(r);
        return st;
    }
    *req = r;
    return SPRY_OK;
}

spry_status spry_comm_test(spry_comm_req *r, bool *done) {
    double      t0 = spry_comm_now();
    spry_status st = r->c->vt->test(r, done);
    r->c->comm_s += spry_comm_now() - t0;
    if (st || *done) req_free(r);
    if (st) *done = true;
    return st;
}

spry_status spry_comm_wait(spry_comm_req *r) {
    if (!r) return SPRY_OK;
    double      t0 = spry_comm_now();
    spry_status st = r->c->vt->wait(r);
    r->c->comm_s += spry_comm_now() - t0;
    req_free(r);
    return st;
}

static spry_status agree(spry_comm *c, spry_status local, int *who);

spry_status spry_comm_agree(spry_comm *c, spry_status local, int *who) {
    double t0 = spry_comm_now();
    spry_status st = agree(c, local, who);
    c->comm_s += spry_comm_now() - t0;
    return st;
}

static spry_status agree(spry_comm *c, spry_status local, int *who) {
    if (who) *who = local ? c->rank : -1;
    if (c->size == 1) return local;
    // each rank's status in its own slot; the first failing rank speaks for the job
    int64_t *all = calloc((size_t)c->size, sizeof *all);
    if (!all) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    all[c->rank]   = (int64_t)local;
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", spry_last_error());
    spry_status st = c->vt->allreduce(c, all, c->size, SPRY_DTYPE_I64, SPRY_REDUCE_SUM);
    int first = -1;
    for (int r = 0; r < c->size && !st; r++)
        if (all[r] < 0 && (first < 0 || all[r] < all[first])) first = r; // most severe, then lowest rank
    spry_status result = first < 0 ? SPRY_OK : (spry_status)all[first];
    free(all);
    if (st) return st;
    if (who) *who = first;
    if (first < 0) return SPRY_OK;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", saved);
    st = c->vt->broadcast(c, msg, sizeof msg, first);
    if (st) return st;
    msg[sizeof msg - 1] = 0;
    if (local) return spry_errorf(result, "%s", saved); // the agreed status, this rank's own message
    return spry_errorf(result, "rank %d failed: %s", first, msg);
}

spry_status spry_comm_same(spry_comm *c, const char *name, int64_t value) {
    if (c->size == 1) return SPRY_OK;
    int64_t v0 = value;
    SPRY_TRY(c->vt->broadcast(c, &v0, sizeof v0, 0));
    spry_status local = SPRY_OK;
    if (value != v0)
        local = spry_errorf(SPRY_ERR_CONFIG, "ranks disagree on %s: rank %d has %lld, rank 0 has %lld", name, c->rank,
                            (long long)value, (long long)v0);
    spry_status st = spry_comm_agree(c, local, NULL);
    if (st && !local && strstr(spry_last_error(), "rank ") == spry_last_error()) {
        // "rank R failed: ranks disagree on ..." -> keep the disagreement itself
        const char *m = strstr(spry_last_error(), "ranks disagree");
        if (m) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", m);
            return spry_errorf(st, "%s", msg);
        }
    }
    return st;
}

