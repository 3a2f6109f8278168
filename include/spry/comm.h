/*
 * comm.h -- collective communication between the processes of a job, on flat buffers.
 *
 * One interface, two implementations:
 *   - single process (always built): world size 1, every collective is a copy or a no-op;
 *   - MPI (built when OpenMPI's headers are found, SPRY_HAVE_MPI): chosen at run time when the
 *     process was started by an MPI launcher (mpirun -n N spry ...; OMPI_COMM_WORLD_SIZE, PMIX_RANK
 *     or PMI_RANK in the environment), so a plain `spry train` never touches MPI.
 * Semantics are MPI's (allreduce, reduce-scatter, all-gather, all-to-all, broadcast, barrier);
 * counts are in elements of the given dtype, displacements in elements. Every call is collective:
 * all ranks must make it with matching arguments. Errors (a failed transfer, a peer that died,
 * mismatched sizes detected locally) return SPRY_ERR_COMM with MPI's message; the library never
 * aborts the job: stopping every rank after a failure the others cannot learn of is the command
 * line's decision (tools/spry/cmd_train.c calls MPI_Abort itself).
 *
 * Non-blocking allreduce / reduce-scatter (spry_comm_i*) let gradient buckets travel while the
 * backward pass computes the next ones; spry_comm_test drives progress, spry_comm_wait finishes.
 */
#ifndef SPRY_COMM_H
#define SPRY_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spry/dtype.h"
#include "spry/status.h"

typedef struct spry_comm spry_comm;
typedef struct spry_comm_req spry_comm_req;

typedef enum spry_reduce_op {
    SPRY_REDUCE_SUM = 0,
    SPRY_REDUCE_MAX,
    SPRY_REDUCE_MIN,
} spry_reduce_op;

// Opens the communicator of this process: MPI's world when launched by an MPI launcher and built
// with MPI, else the single-process one. force_single skips MPI even under a launcher.
// SPRY_ERR_UNSUPPORTED when launched by mpirun with N > 1 but built without MPI; SPRY_ERR_COMM
// when MPI fails to start. *out is NULL on error.
spry_status spry_comm_init(bool force_single, spry_comm **out);
// Finalizes (MPI_Finalize for the MPI world). c may be NULL.
void spry_comm_free(spry_comm *c);

int         spry_comm_rank(const spry_comm *c);
int         spry_comm_size(const spry_comm *c);
// "single" or "mpi (Open MPI v4.1.4)".
const char *spry_comm_backend(const spry_comm *c);
// Seconds spent inside collectives since the last call (then reset): communication time per step.
double      spry_comm_take_time(spry_comm *c);

// In place: buf (n) becomes the reduction over ranks. dtype F32, F64, I32 or I64.
spry_status spry_comm_allreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op);
// send (sum of counts) is reduced over ranks; this rank receives its block, counts[rank]
// elements starting at element sum(counts[:rank]), into recv. send and recv must not overlap.
spry_status spry_comm_reduce_scatter(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                     spry_dtype dt, spry_reduce_op op);
// Every rank contributes counts[rank] elements (send); recv (sum of counts) gets rank r's block
// at displacement sum(counts[:r]). send may alias its own block of recv (in place).
spry_status spry_comm_allgather(spry_comm *c, const void *send, void *recv, const int64_t *counts, spry_dtype dt);
// Personalized exchange: this rank sends send_counts[r] elements from send + send_displs[r] to
// rank r and receives recv_counts[r] elements into recv + recv_displs[r] from rank r.
spry_status spry_comm_alltoallv(spry_comm *c, const void *send, const int64_t *send_counts,
                                const int64_t *send_displs, void *recv, const int64_t *recv_counts,
                                const int64_t *recv_displs, spry_dtype dt);
// buf (nbytes) of rank root is copied to every rank.
spry_status spry_comm_broadcast(spry_comm *c, void *buf, size_t nbytes, int root);
spry_status spry_comm_barrier(spry_comm *c);

// Non-blocking forms of allreduce and reduce-scatter (same arguments; counts is copied). The
// buffers must stay untouched until the request completes. *req is NULL on error.
spry_status spry_comm_iallreduce(spry_comm *c, void *buf, int64_t n, spry_dtype dt, spry_reduce_op op,
                                 spry_comm_req **req);
spry_status spry_comm_ireduce_scatter(spry_comm *c, const void *send, void *recv, const int64_t *counts,
                                      spry_dtype dt, spry_reduce_op op, spry_comm_req **req);
// Drives progress; *done tells whether req completed (it is then freed and must not be reused).
// On error the request is freed too and *done is true.
spry_status spry_comm_test(spry_comm_req *req, bool *done);
// Waits for req and frees it. req may be NULL.
spry_status spry_comm_wait(spry_comm_req *req);

// Agreement on an outcome: every rank returns the most severe (lowest) status over all ranks, and
// the rank that had it (the lowest such rank) in *who (-1 if all were OK; NULL allowed). A rank
// that failed keeps its own message; the others get "rank R failed: <R's message>", so every
// rank can stop with a message instead of waiting in the next collective.
spry_status spry_comm_agree(spry_comm *c, spry_status local, int *who);

// Checks that every rank has the same value of a setting (a batch size, a config hash, a
// dataset size): SPRY_OK when all equal rank 0's, else SPRY_ERR_CONFIG on every rank with
// "ranks disagree on <name>: rank R has X, rank 0 has Y".
spry_status spry_comm_same(spry_comm *c, const char *name, int64_t value);


#endif
