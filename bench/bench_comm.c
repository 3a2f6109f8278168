/*
 * bench_comm.c -- spry_comm's collectives against the alpha-beta model, under mpirun.
 *   usage: mpirun -n 2 bench_comm [--elems N] [--min-bytes B] [--max-bytes B] [--reps R]
 *
 * Contract. Every rank runs the same sequence. For each message size (powers of 4 from
 * --min-bytes to --max-bytes, plus 4*N bytes for --elems N, the f32 gradient of a model) it
 * times spry_comm_broadcast from rank 0 and spry_comm_allreduce (f32, SUM, in place): one
 * untimed warm-up, then R repetitions, each started right after a barrier; a repetition's time
 * is the largest over the ranks (a broadcast root may return before its message has landed),
 * and a size's time is the median of its repetitions. With 2 ranks a broadcast is one
 * point-to-point transfer, so a least-squares fit of t = alpha + bytes / B over the sizes
 * >= 1 MiB gives the link bandwidth B, and the smallest size gives the latency alpha (its time
 * less bytes / B). Rank 0 prints alpha and B, then for every size the measured allreduce time
 * next to the ring allreduce model (Patarasuk & Yuan 2009; NCCL's and Horovod's cost model)
 *     t_ring = 2 (N-1) alpha + 2 (N-1) / N * bytes / B,
 * and their ratio (meas/model = allreduce_s / ring_model_s). The model has no term for the
 * reduction arithmetic (the N-1 additions per element): it is assumed hidden behind the
 * transfers. One more column times spry_comm_iallreduce + spry_comm_wait, the path data-parallel
 * training takes for its gradient buckets (OpenMPI runs MPI_Iallreduce with other algorithms than
 * the blocking MPI_Allreduce). With more than 2 ranks the fit is of MPI's broadcast tree, not of
 * one link, and the figures say so. Lines for scripts:
 *     FIT alpha_s=<s> bandwidth_Bps=<bytes/s> ranks=<N>
 *     ELEMS elems=<N> bytes=<b> broadcast_s=<s> allreduce_s=<s> model_s=<s> ratio=<measured/model>
 *           iallreduce_s=<s>
 * Exit 0; 2 for bad options or a single rank; 1 when a collective fails (every rank stops).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if SPRY_HAVE_MPI
#include <mpi.h>
#endif
#include "spry/comm.h"
#include "spry/log.h"

#include "bench_util.h"

#define KIB ((int64_t)1 << 10)
#define MIB ((int64_t)1 << 20)
#define MAX_SIZES 64

static void usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -n N bench_comm [options]\n"
            "  --elems N       also time a message of N f32 elements (a model's gradient), 0 = none\n"
            "                  (30044544: gpt-mini, 6 layers, width 384, vocab 50257, 256 positions)\n"
            "  --min-bytes B   smallest message, a multiple of 4 (4096 = 4 KiB)\n"
            "  --max-bytes B   largest power-of-4 message (268435456 = 256 MiB)\n"
            "  --reps R        timed repetitions per size, 0 = clamp(1 GiB / bytes, 5, 51) (0)\n"
            "Times broadcast from rank 0, f32 SUM allreduce, and iallreduce + wait (median of R, each\n"
            "after a barrier), fits alpha and B from the broadcasts and compares allreduce with the\n"
            "ring model 2(N-1) alpha + 2(N-1)/N bytes/B. Rank 0 prints.\n");
}

// A failed collective: this rank says why and stops the job (the others may be waiting in one).
static void check(spry_comm *c, spry_status st, const char *what) {
    if (!st) return;
    fprintf(stderr, "bench_comm: rank %d: %s: %s\n", spry_comm_rank(c), what, spry_last_error());
#if SPRY_HAVE_MPI
    if (spry_comm_size(c) > 1) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    exit(1);
}

static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t *out) {
    char *end;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || *end || x < lo) {
        fprintf(stderr, "bench_comm: %s must be an integer >= %lld, got '%s'\n", opt, (long long)lo, v ? v : "");
        return 2;
    }
    *out = x;
    return 0;
}

typedef enum op_kind { OP_BROADCAST, OP_ALLREDUCE, OP_IALLREDUCE } op_kind;

// The median over reps of the time of one collective on buf (bytes), each repetition after a
// barrier, a repetition's time being the slowest rank's.
static double time_op(spry_comm *c, op_kind op, float *buf, int64_t bytes, int reps, double *scratch) {
    int64_t n = bytes / 4;
    for (int r = -1; r < reps; r++) { // r = -1: warm-up
        check(c, spry_comm_barrier(c), "barrier");
        double t0 = now();
        if (op == OP_BROADCAST) {
            check(c, spry_comm_broadcast(c, buf, (size_t)bytes, 0), "broadcast");
        } else if (op == OP_ALLREDUCE) {
            check(c, spry_comm_allreduce(c, buf, n, SPRY_DTYPE_F32, SPRY_REDUCE_SUM), "allreduce");
        } else {
            spry_comm_req *req = NULL;
            check(c, spry_comm_iallreduce(c, buf, n, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, &req), "iallreduce");
            check(c, spry_comm_wait(req), "wait");
        }
        double t = now() - t0;
        check(c, spry_comm_allreduce(c, &t, 1, SPRY_DTYPE_F64, SPRY_REDUCE_MAX), "allreduce (max time)");
        if (r >= 0) scratch[r] = t;
    }
    return median(scratch, reps);
}

static double ring_model(int N, double alpha, double bw, double bytes) {
    return 2.0 * (N - 1) * alpha + 2.0 * (N - 1) / N * bytes / bw;
}

int main(int argc, char **argv) {
    int64_t elems = 30044544, min_bytes = 4 * KIB, max_bytes = 256 * MIB, reps_opt = 0;
    for (int i = 1; i < argc; i += 2) { // options come in pairs (--help returns)
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        int64_t *iv = !strcmp(a, "--elems") ? &elems : !strcmp(a, "--min-bytes") ? &min_bytes
                    : !strcmp(a, "--max-bytes") ? &max_bytes : !strcmp(a, "--reps") ? &reps_opt : NULL;
        if (!iv) {
            fprintf(stderr, "bench_comm: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (parse_i64(a, v, iv == &elems || iv == &reps_opt ? 0 : 4, iv)) return 2;
    }
    if (min_bytes % 4 || max_bytes < min_bytes || elems > ((int64_t)1 << 30)) {
        fprintf(stderr, "bench_comm: need 4 | --min-bytes <= --max-bytes and --elems <= 2^30\n");
        return 2;
    }

    spry_comm  *c  = NULL;
    spry_status st = spry_comm_init(false, &c);
    if (st) {
        fprintf(stderr, "bench_comm: %s\n", spry_last_error());
        return 1;
    }
    int rank = spry_comm_rank(c), N = spry_comm_size(c);
    if (N < 2) {
        fprintf(stderr, "bench_comm: 1 rank (%s): collectives are copies. HINT: mpirun -n 2 %s\n",
                spry_comm_backend(c), argv[0]);
        spry_comm_free(c);
        return 2;
    }

    // sizes: powers of 4 from min_bytes to max_bytes, and the gradient, in increasing order
    int64_t sizes[MAX_SIZES];
    int     n_sizes = 0, grad_i = -1;
    for (int64_t b = min_bytes; b <= max_bytes && n_sizes < MAX_SIZES - 1; b *= 4) sizes[n_sizes++] = b;
    if (elems > 0) {
        int64_t g = 4 * elems;
        int     j = n_sizes;
        while (j > 0 && sizes[j - 1] > g) sizes[j] = sizes[j - 1], j--;
        sizes[j] = g, grad_i = j, n_sizes++;
    }
    int64_t big = sizes[n_sizes - 1];
    float  *buf = malloc((size_t)big);
    int     max_reps = reps_opt > 0 ? (int)reps_opt : 51;
    double *scratch  = malloc(sizeof(double) * (size_t)max_reps);
    double  t_bc[MAX_SIZES], t_ar[MAX_SIZES], t_iar[MAX_SIZES];
    if (!buf || !scratch) {
        fprintf(stderr, "bench_comm: rank %d: out of memory (%lld bytes)\n", rank, (long long)big);
        check(c, SPRY_ERR_NOMEM, "out of memory");
        return 1;
    }
    // small values: the repeated sums stay far below f32's range; pages touched before timing
    for (int64_t i = 0; i < big / 4; i++) buf[i] = 1.0f / (float)(rank + 1);

    if (rank == 0)
        printf("bench_comm: %d ranks (%s), %d sizes from %lld B to %lld B; median of %s after 1 warm-up\n", N,
               spry_comm_backend(c), n_sizes, (long long)sizes[0], (long long)big,
               reps_opt > 0 ? "--reps repetitions" : "clamp(1 GiB / bytes, 5, 51) repetitions");
    for (int s = 0; s < n_sizes; s++) {
        int64_t r = reps_opt > 0 ? reps_opt : (1 << 30) / sizes[s];
        int     reps = (int)(reps_opt > 0 ? r : r < 5 ? 5 : r > 51 ? 51 : r);
        t_bc[s] = time_op(c, OP_BROADCAST, buf, sizes[s], reps, scratch);
        t_ar[s] = time_op(c, OP_ALLREDUCE, buf, sizes[s], reps, scratch);
        t_iar[s] = time_op(c, OP_IALLREDUCE, buf, sizes[s], reps, scratch);
    }

    // B: least squares of t = a + bytes * (1 / B) over sizes >= 1 MiB; alpha from the smallest size
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int    k  = 0;
    for (int s = 0; s < n_sizes; s++) {
        if (sizes[s] < MIB) continue;
        double x = (double)sizes[s], y = t_bc[s];
        sx += x, sy += y, sxx += x * x, sxy += x * y, k++;
    }
    double slope = k >= 2 ? (k * sxy - sx * sy) / (k * sxx - sx * sx) : k == 1 ? sy / sx : 0;
    if (rank == 0 && !(slope > 0)) {
        fprintf(stderr, "bench_comm: no bandwidth fit (%d sizes >= 1 MiB, slope %g). HINT: --max-bytes >= 4194304\n",
                k, slope);
    }
    double bw    = slope > 0 ? 1.0 / slope : 0;
    double alpha = t_bc[0] - (bw > 0 ? (double)sizes[0] / bw : 0);
    if (alpha < 0) alpha = 0;

    if (rank == 0 && bw > 0) {
        printf("fit (broadcast from rank 0, %s): alpha = %.2f us (the %lld B broadcast less bytes/B), "
               "B = %.3f GB/s (least squares over %d sizes >= 1 MiB)\n",
               N == 2 ? "one point-to-point transfer" : "MPI's broadcast tree, not one link", alpha * 1e6,
               (long long)sizes[0], bw / 1e9, k);
        printf("FIT alpha_s=%.4g bandwidth_Bps=%.4g ranks=%d\n", alpha, bw, N);
        printf("ring allreduce model (N = %d): t = 2(N-1) alpha + 2(N-1)/N bytes/B; reduction arithmetic assumed hidden\n",
               N);
        printf("%12s %10s %12s %12s %12s %12s %10s\n", "bytes", "MiB", "broadcast_s", "allreduce_s", "ring_model_s",
               "iallreduce_s", "meas/model");
        for (int s = 0; s < n_sizes; s++) {
            double m = ring_model(N, alpha, bw, (double)sizes[s]);
            printf("%12lld %10.3f %12.4g %12.4g %12.4g %12.4g %10.2f%s\n", (long long)sizes[s],
                   (double)sizes[s] / MIB, t_bc[s], t_ar[s], m, t_iar[s], t_ar[s] / m, s == grad_i ? "  <- --elems" : "");
        }
        if (grad_i >= 0) {
            double m = ring_model(N, alpha, bw, (double)sizes[grad_i]);
            printf("ELEMS elems=%lld bytes=%lld broadcast_s=%.6g allreduce_s=%.6g model_s=%.6g ratio=%.3f "
                   "iallreduce_s=%.6g\n", (long long)elems, (long long)sizes[grad_i], t_bc[grad_i], t_ar[grad_i], m,
                   t_ar[grad_i] / m, t_iar[grad_i]);
        }
    }
    free(scratch);
    free(buf);
    spry_comm_free(c);
    return bw > 0 ? 0 : 1;
}
