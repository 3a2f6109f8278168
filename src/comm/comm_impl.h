/*
 * comm_impl.h -- what a communicator backend provides (comm.c: single process; comm_mpi.c: MPI).
 * Arguments are checked by comm.c before they get here.
 */
#ifndef SPRY_COMM_IMPL_H
#define SPRY_COMM_IMPL_H

#include "spry/comm.h"

typedef struct spry_comm_vt {
    spry_status (*allreduce)(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op);
    spry_status (*reduce_scatter)(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                  spry_dtype dt, spry_reduce_op op);
    spry_status (*allgather)(spry_comm *c, const void *send, void *recv, const int64_t *counts, spry_dtype dt);
    spry_status (*alltoallv)(spry_comm *c, const void *send, const int64_t *sc, const int64_t *sd, void *recv,
                             const int64_t *rc, const int64_t *rd, spry_dtype dt);
    spry_status (*broadcast)(spry_comm *c, void *buf, size_t nbytes, int root);
    spry_status (*barrier)(spry_comm *c);
    // non-blocking: start fills req->impl; test/wait finish it
    spry_status (*iallreduce)(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op, spry_comm_req *r);
    spry_status (*ireduce_scatter)(spry_comm *c, const void *send, void *recv, spry_dtype dt, spry_reduce_op op,
                                   spry_comm_req *r);
    spry_status (*test)(spry_comm_req *r, bool *done);
    spry_status (*wait)(spry_comm_req *r);
    void (*finalize)(spry_comm *c);
} spry_comm_vt;

struct spry_comm {
    const spry_comm_vt *vt;
    int                 rank, size;
    char                backend[64];
    double              comm_s; // time inside collectives since the last spry_comm_take_time
    void               *impl;
};

struct spry_comm_req {
    spry_comm *c;
    int64_t   *counts;  // (size) reduce-scatter counts, owned
    void      *impl;    // backend request
    double     t_start; // for the time accounting
};

// The MPI backend: starts MPI (the caller checked that a launcher started this process) and
// fills c's rank, size, backend name and table. Absent without SPRY_HAVE_MPI.
spry_status spry_comm_mpi_open(spry_comm *c);
// Monotonic seconds (for the time spent in collectives).
double spry_comm_now(void);

#endif
