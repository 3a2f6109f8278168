/*
 * comm_mpi.c -- the MPI backend of spry_comm (OpenMPI from Debian; any MPI-3 library works).
 * MPI errors are returned, not fatal (MPI_ERRORS_RETURN), and become SPRY_ERR_COMM with MPI's
 * message. Only the main thread calls MPI (MPI_THREAD_FUNNELED); OpenMP threads never do.
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"

typedef struct mpi_state {
    MPI_Comm comm;
    bool     we_initialized;
} mpi_state;

#define W(c) (((mpi_state *)(c)->impl)->comm)

static spry_status mpi_err(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return SPRY_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int  len = 0;
    MPI_Error_string(rc, msg, &len);
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return spry_errorf(SPRY_ERR_COMM, "comm %s: %s", what, msg);
}

static MPI_Datatype mpi_type(spry_dtype dt) {
    switch (dt) {
    case SPRY_DTYPE_F64: return MPI_DOUBLE;
    case SPRY_DTYPE_I32: return MPI_INT32_T;
    case SPRY_DTYPE_I64: return MPI_INT64_T;
    default: return MPI_FLOAT;
    }
}

static MPI_Op mpi_op(spry_reduce_op op) { return op == SPRY_REDUCE_MAX ? MPI_MAX : op == SPRY_REDUCE_MIN ? MPI_MIN : MPI_SUM; }

// Element counts as MPI's int; counts beyond INT_MAX would need derived types, which spry's
// buffers (split into buckets) never reach.
static spry_status to_int(const char *what, const int64_t *in, int n, int *out) {
    for (int i = 0; i < n; i++) {
        if (in[i] > INT_MAX)
            return spry_errorf(SPRY_ERR_UNSUPPORTED, "comm %s: %lld elements in one message; at most %d",
                               what, (long long)in[i], INT_MAX);
        out[i] = (int)in[i];
    }
    return SPRY_OK;
}

static spry_status m_allreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op) {
    const int64_t piece = (int64_t)1 << 30;
    size_t        es    = spry_dtype_nbytes(dt, 1);
    for (int64_t off = 0; off < n; off += piece) {
        int k = (int)(n - off < piece ? n - off : piece);
        SPRY_TRY(mpi_err(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + (size_t)off * es, k, mpi_type(dt), mpi_op(op), W(c)),
                         "allreduce"));
    }
    return SPRY_OK;
}

static spry_status m_reduce_scatter(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                    spry_dtype dt, spry_reduce_op op) {
    int *ic = malloc(sizeof(int) * (size_t)c->size);
    if (!ic) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    spry_status st = to_int("reduce_scatter", counts, c->size, ic);
    if (!st) st = mpi_err(MPI_Reduce_scatter(send, recv, ic, mpi_type(dt), mpi_op(op), W(c)), "reduce_scatter");
    free(ic);
    return st;
}

static spry_status m_allgather(spry_comm *c, const void *send, void *recv, const int64_t *counts, spry_dtype dt) {
    int *ic = malloc(sizeof(int) * 2 * (size_t)c->size);
    if (!ic) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    int        *displ = ic + c->size;
    spry_status st    = to_int("allgather", counts, c->size, ic);
    int64_t     off   = 0;
    for (int r = 0; r < c->size && !st; r++) {
        if (off > INT_MAX) st = spry_errorf(SPRY_ERR_UNSUPPORTED, "comm allgather: displacement %lld > %d", (long long)off, INT_MAX);
        displ[r] = (int)off;
        off += counts[r];
    }
    if (!st) {
        size_t      es      = spry_dtype_nbytes(dt, 1);
        const void *own     = (const char *)recv + (size_t)displ[c->rank] * es;
        const void *sendbuf = send == own ? MPI_IN_PLACE : send;
        st = mpi_err(MPI_Allgatherv(sendbuf, ic[c->rank], mpi_type(dt), recv, ic, displ, mpi_type(dt), W(c)), "allgather");
    }
    free(ic);
    return st;
}

static spry_status m_alltoallv(spry_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                               const int64_t *rc, const int64_t *rd, spry_dtype dt) {
    int *v = malloc(sizeof(int) * 4 * (size_t)c->size);
    if (!v) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    int         n  = c->size;
    spry_status st = to_int("alltoallv", sc, n, v);
    if (!st) st = to_int("alltoallv", sd, n, v + n);
    if (!st) st = to_int("alltoallv", rc, n, v + 2 * n);
    if (!st) st = to_int("alltoallv", rd, n, v + 3 * n);
    if (!st)
        st = mpi_err(MPI_Alltoallv(send, v, v + n, mpi_type(dt), recv, v + 2 * n, v + 3 * n, mpi_type(dt), W(c)),
                     "alltoallv");
    free(v);
    return st;
}

static spry_status m_broadcast(spry_comm *c, void *buf, size_t nbytes, int root) {
    const size_t piece = (size_t)1 << 30;
    for (size_t off = 0; off < nbytes; off += piece) {
        int k = (int)(nbytes - off < piece ? nbytes - off : piece);
        SPRY_TRY(mpi_err(MPI_Bcast((char *)buf + off, k, MPI_BYTE, root, W(c)), "broadcast"));
    }
    return SPRY_OK;
}

static spry_status m_barrier(spry_comm *c) { return mpi_err(MPI_Barrier(W(c)), "barrier"); }

static spry_status m_iallreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op, spry_comm_req *r) {
    if (n > INT_MAX)
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "comm iallreduce: %lld elements in one message; at most %d",
                           (long long)n, INT_MAX);
    MPI_Request *q = malloc(sizeof *q);
    if (!q) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    spry_status st = mpi_err(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, mpi_type(dt), mpi_op(op), W(c), q), "iallreduce");
    if (st) free(q);
    else r->impl = q;
    return st;
}

typedef struct rs_req {
    MPI_Request q;
    int         counts[]; // (size) must outlive the operation
} rs_req;

static spry_status m_ireduce_scatter(spry_comm *c, const void *send, void *recv, spry_dtype dt, spry_reduce_op op,
                                     spry_comm_req *r) {
    rs_req *q = malloc(sizeof *q + sizeof(int) * (size_t)c->size);
    if (!q) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    spry_status st = to_int("ireduce_scatter", r->counts, c->size, q->counts);
    if (!st)
        st = mpi_err(MPI_Ireduce_scatter(send, recv, q->counts, mpi_type(dt), mpi_op(op), W(c), &q->q), "ireduce_scatter");
    if (st) free(q);
    else r->impl = q;
    return st;
}

// Both request kinds start with their MPI_Request.
static spry_status m_test(spry_comm_req *r, bool *done) {
    int         flag = 0;
    spry_status st   = mpi_err(MPI_Test((MPI_Request *)r->impl, &flag, MPI_STATUS_IGNORE), "test");
    *done            = flag != 0;
    if (st || *done) free(r->impl), r->impl = NULL;
    return st;
}

static spry_status m_wait(spry_comm_req *r) {
    spry_status st = mpi_err(MPI_Wait((MPI_Request *)r->impl, MPI_STATUS_IGNORE), "wait");
    free(r->impl);
    r->impl = NULL;
    return st;
}

static void m_finalize(spry_comm *c) {
    mpi_state *s = c->impl;
    if (!s) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (s->we_initialized && !finalized) MPI_Finalize();
    free(s);
    c->impl = NULL;
}

static const spry_comm_vt k_mpi = {m_allreduce, m_reduce_scatter, m_allgather, m_alltoallv, m_broadcast,
                                   m_barrier,   m_iallreduce,     m_ireduce_scatter, m_test, m_wait,
                                   m_finalize};

spry_status spry_comm_mpi_open(spry_comm *c) {
    mpi_state *s = calloc(1, sizeof *s);
    if (!s) return spry_errorf(SPRY_ERR_NOMEM, "comm: out of memory");
    int inited = 0, provided = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            free(s);
            return spry_errorf(SPRY_ERR_COMM, "comm: MPI_Init_thread failed (%d)", rc);
        }
        s->we_initialized = true;
    }
    s->comm = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(s->comm, &c->rank);
    MPI_Comm_size(s->comm, &c->size);
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int  len = 0;
    MPI_Get_library_version(lib, &len);
    lib[strcspn(lib, ",\n")] = 0;
    lib[sizeof c->backend - 8] = 0;
    snprintf(c->backend, sizeof c->backend, "mpi (%.50s)", lib);
    c->vt   = &k_mpi;
    c->impl = s;
    return SPRY_OK;
}
