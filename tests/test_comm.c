// ctest-label: dist
/*
 * test_comm.c -- the communicator (comm.h) with any world size: N = 1 when run plainly (the
 * single-process backend), N = 2 or 3 under mpirun (tests/mpi_tests.cmake, the MPI backend).
 *
 * Rank r's element i is val(dt, r, i), an integer small enough that every sum over ranks is exact
 * in f32, so each rank computes the expected result itself and every element is compared exactly.
 * Guard elements after (and gaps between) the blocks a collective writes must stay untouched.
 * Checked:
 *   allreduce SUM/MAX/MIN for f32, f64, i32, i64 with n = 0, 1, 1000, and 3M f32 (SUM, MAX);
 *   reduce_scatter with uneven counts (rank 1's is 0 when N > 1), every dtype and op, and 3M f32;
 *   allgather with uneven counts (rank 1's is 0 when N > 1), separate buffers and in place;
 *   alltoallv with counts (some 0) and displacements (reversed order, gaps) that depend on ranks;
 *   broadcast of 0, 1000 and 1M bytes from every root; barrier;
 *   iallreduce and ireduce_scatter: six requests in flight, three polled with spry_comm_test, three
 *     waited for, the caller's counts overwritten after the start (they are copied);
 *   spry_comm_agree: all OK -> OK, who = -1; two ranks failing differently -> the most severe
 *     status and the same `who` everywhere; rank N-1 fails with SPRY_ERR_CONFIG -> every rank gets
 *     SPRY_ERR_CONFIG, who = N-1, the others a message "rank N-1 failed: <original text>";
 *   argument errors return SPRY_ERR_ARG with a message, never abort: negative counts, bf16,
 *     broadcast root -1 and N, and a failed non-blocking start leaves *req NULL;
 *   spry_comm_take_time >= 0 and reset to 0; the backend is "single" without a launcher, "mpi..."
 *     under mpirun; rank and size are consistent over ranks.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spry/comm.h"

static int g_rank, g_size; // this rank and the world size, for messages and formulas

static const spry_dtype k_dtypes[]  = {SPRY_DTYPE_F32, SPRY_DTYPE_F64, SPRY_DTYPE_I32,
                                       SPRY_DTYPE_I64};
static const spry_reduce_op k_ops[] = {SPRY_REDUCE_SUM, SPRY_REDUCE_MAX, SPRY_REDUCE_MIN};
static const char *k_op_names[]     = {"sum", "max", "min"};

#define LARGE_N (3 * 1024 * 1024) // f32 elements of the large cases (12 MiB)

/* ---- values and comparisons ----------------------------------------------------------------- */

// Rank r's element i: in [-32768, 32767], the winner of MAX/MIN changes with i, no period over
// the large buffers; for i64 shifted into the high bits (plus r in the low ones).
static int64_t val(spry_dtype dt, int r, int64_t i) {
    int64_t v = ((int64_t)r * 7919 + (i % 65536) * 104729 + i / 65536) % 65536 - 32768;
    return dt == SPRY_DTYPE_I64 ? v * ((int64_t)1 << 33) + r : v;
}

static int64_t reduce2(spry_reduce_op op, int64_t a, int64_t b) {
    switch (op) {
    case SPRY_REDUCE_MAX:
        return a > b ? a : b;
    case SPRY_REDUCE_MIN:
        return a < b ? a : b;
    default:
        return a + b;
    }
}

// The reduction of element i over all ranks.
static int64_t reduced(spry_dtype dt, spry_reduce_op op, int64_t i) {
    int64_t acc = val(dt, 0, i);
    for (int r = 1; r < g_size; r++)
        acc = reduce2(op, acc, val(dt, r, i));
    return acc;
}

static size_t esize(spry_dtype dt) { return spry_dtype_nbytes(dt, 1); }

static void put(void *buf, spry_dtype dt, int64_t i, int64_t v) {
    switch (dt) {
    case SPRY_DTYPE_F32:
        ((float *)buf)[i] = (float)v;
        break;
    case SPRY_DTYPE_F64:
        ((double *)buf)[i] = (double)v;
        break;
    case SPRY_DTYPE_I32:
        ((int32_t *)buf)[i] = (int32_t)v;
        break;
    default:
        ((int64_t *)buf)[i] = v;
        break;
    }
}

// Exact comparison; every expected value is representable in dt.
static bool same(const void *buf, spry_dtype dt, int64_t i, int64_t want) {
    switch (dt) {
    case SPRY_DTYPE_F32:
        return ((const float *)buf)[i] == (float)want;
    case SPRY_DTYPE_F64:
        return ((const double *)buf)[i] == (double)want;
    case SPRY_DTYPE_I32:
        return ((const int32_t *)buf)[i] == (int32_t)want;
    default:
        return ((const int64_t *)buf)[i] == want;
    }
}

static void fmt_elem(char *s, size_t n, const void *buf, spry_dtype dt, int64_t i) {
    switch (dt) {
    case SPRY_DTYPE_F32:
        snprintf(s, n, "%.9g", (double)((const float *)buf)[i]);
        break;
    case SPRY_DTYPE_F64:
        snprintf(s, n, "%.17g", ((const double *)buf)[i]);
        break;
    case SPRY_DTYPE_I32:
        snprintf(s, n, "%d", (int)((const int32_t *)buf)[i]);
        break;
    default:
        snprintf(s, n, "%lld", (long long)((const int64_t *)buf)[i]);
        break;
    }
}

// One CHECK for a whole buffer: got (n) against want (n), reporting the count and first mismatch.
static void check_elems(const char *what, const void *got, spry_dtype dt, const int64_t *want,
                        int64_t n) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!same(got, dt, i, want[i])) {
            if (first < 0)
                first = i;
            bad++;
        }
    char g[64] = "";
    if (bad)
        fmt_elem(g, sizeof g, got, dt, first);
    CHECK_MSG(bad == 0, "rank %d: %s: %lld of %lld elements wrong, first [%lld] = %s, want %lld",
              g_rank, what, (long long)bad, (long long)n, (long long)first, g,
              bad ? (long long)want[first] : 0LL);
}

#define SENTINEL ((int64_t)-12345) // written where nothing may be written; not a val()

static void check_status(const char *what, spry_status st) {
    CHECK_MSG(st == SPRY_OK, "rank %d: %s: %s: %s", g_rank, what, spry_status_name(st),
              spry_last_error());
}

/* ---- allreduce --------------------------------------------------------------------------------
 */

static void allreduce_case(spry_comm *c, spry_dtype dt, spry_reduce_op op, int64_t n) {
    char what[128];
    snprintf(what, sizeof what, "allreduce %s %s n=%lld", spry_dtype_info(dt)->name, k_op_names[op],
             (long long)n);
    void *buf     = xmalloc((size_t)(n + 1) * esize(dt));
    int64_t *want = xmalloc((size_t)(n + 1) * sizeof *want);
    for (int64_t i = 0; i < n; i++)
        put(buf, dt, i, val(dt, g_rank, i)), want[i] = reduced(dt, op, i);
    put(buf, dt, n, SENTINEL), want[n] = SENTINEL; // guard
    check_status(what, spry_comm_allreduce(c, buf, n, dt, op));
    check_elems(what, buf, dt, want, n + 1);
    free(buf), free(want);
}

static void test_allreduce(spry_comm *c) {
    const int64_t ns[] = {0, 1, 1000};
    for (size_t d = 0; d < 4; d++)
        for (size_t o = 0; o < 3; o++)
            for (size_t k = 0; k < 3; k++)
                allreduce_case(c, k_dtypes[d], k_ops[o], ns[k]);
    allreduce_case(c, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, LARGE_N);
    allreduce_case(c, SPRY_DTYPE_F32, SPRY_REDUCE_MAX, LARGE_N + 7);
}

/* ---- reduce_scatter ---------------------------------------------------------------------------
 */

// Uneven counts: base + 37 r elements for rank r, and none for rank 1 when there is one.
static void uneven_counts(int64_t *counts, int64_t base, int64_t *displ, int64_t *total) {
    int64_t off = 0;
    for (int r = 0; r < g_size; r++) {
        counts[r] = r == 1 ? 0 : base + 37 * r;
        displ[r]  = off;
        off += counts[r];
    }
    *total = off;
}

static void reduce_scatter_case(spry_comm *c, spry_dtype dt, spry_reduce_op op, int64_t base) {
    char what[128];
    snprintf(what, sizeof what, "reduce_scatter %s %s base=%lld", spry_dtype_info(dt)->name,
             k_op_names[op], (long long)base);
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)g_size),
            *displ  = xmalloc(sizeof(int64_t) * (size_t)g_size);
    int64_t total;
    uneven_counts(counts, base, displ, &total);
    int64_t mine  = counts[g_rank];
    void *send    = xmalloc((size_t)total * esize(dt));
    void *recv    = xmalloc((size_t)(mine + 1) * esize(dt));
    int64_t *want = xmalloc((size_t)(mine + 1) * sizeof *want);
    for (int64_t i = 0; i < total; i++)
        put(send, dt, i, val(dt, g_rank, i));
    for (int64_t i = 0; i <= mine; i++)
        put(recv, dt, i, SENTINEL);
    for (int64_t i = 0; i < mine; i++)
        want[i] = reduced(dt, op, displ[g_rank] + i);
    want[mine] = SENTINEL;
    check_status(what, spry_comm_reduce_scatter(c, send, recv, counts, dt, op));
    check_elems(what, recv, dt, want, mine + 1);
    // the send buffer is input only
    int64_t *sent = xmalloc((size_t)total * sizeof *sent);
    for (int64_t i = 0; i < total; i++)
        sent[i] = val(dt, g_rank, i);
    check_elems("reduce_scatter send untouched", send, dt, sent, total);
    free(sent), free(want), free(recv), free(send), free(displ), free(counts);
}

static void test_reduce_scatter(spry_comm *c) {
    for (size_t d = 0; d < 4; d++)
        for (size_t o = 0; o < 3; o++)
            reduce_scatter_case(c, k_dtypes[d], k_ops[o], 100);
    reduce_scatter_case(c, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, LARGE_N / g_size);
}

/* ---- allgather --------------------------------------------------------------------------------
 */

static void allgather_case(spry_comm *c, spry_dtype dt, bool in_place) {
    char what[128];
    snprintf(what, sizeof what, "allgather %s %s", spry_dtype_info(dt)->name,
             in_place ? "in place" : "separate");
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)g_size),
            *displ  = xmalloc(sizeof(int64_t) * (size_t)g_size);
    int64_t total;
    uneven_counts(counts, 50, displ, &total);
    int64_t mine  = counts[g_rank];
    void *recv    = xmalloc((size_t)(total + 1) * esize(dt));
    int64_t *want = xmalloc((size_t)(total + 1) * sizeof *want);
    for (int64_t i = 0; i <= total; i++)
        put(recv, dt, i, SENTINEL);
    // rank r's block holds val(dt, r, 1000 + k): distinct per rank and per element
    for (int r = 0; r < g_size; r++)
        for (int64_t k = 0; k < counts[r]; k++)
            want[displ[r] + k] = val(dt, r, 1000 + k);
    want[total] = SENTINEL;
    void *own   = (char *)recv + (size_t)displ[g_rank] * esize(dt);
    void *send  = in_place ? own : xmalloc((size_t)mine * esize(dt));
    for (int64_t k = 0; k < mine; k++)
        put(send, dt, k, val(dt, g_rank, 1000 + k));
    check_status(what, spry_comm_allgather(c, send, recv, counts, dt));
    check_elems(what, recv, dt, want, total + 1);
    if (!in_place)
        free(send);
    free(want), free(recv), free(displ), free(counts);
}

static void test_allgather(spry_comm *c) {
    for (size_t d = 0; d < 4; d++) {
        allgather_case(c, k_dtypes[d], false);
        allgather_case(c, k_dtypes[d], true);
    }
}

/* ---- alltoallv --------------------------------------------------------------------------------
 */

// Elements rank s sends to rank d (0 to 5, some 0).
static int64_t a2a_count(int s, int d) { return (s * 3 + d * 5 + 1) % 6; }
// The k-th element sent from s to d.
static int64_t a2a_val(int s, int d, int64_t k) { return s * 1000 + d * 100 + k; }

static void alltoallv_case(spry_comm *c, spry_dtype dt) {
    char what[128];
    snprintf(what, sizeof what, "alltoallv %s", spry_dtype_info(dt)->name);
    int n       = g_size;
    int64_t *sc = xmalloc(sizeof(int64_t) * 4 * (size_t)n), *sd = sc + n, *rc = sc + 2 * n,
            *rd = sc + 3 * n;
    // send blocks in reverse rank order with a gap of 1 before each; receive blocks in rank order
    // with a gap of 2 before each
    int64_t send_n = 0, recv_n = 0;
    for (int d = n - 1; d >= 0; d--) {
        sc[d] = a2a_count(g_rank, d);
        sd[d] = send_n + 1;
        send_n += 1 + sc[d];
    }
    for (int s = 0; s < n; s++) {
        rc[s] = a2a_count(s, g_rank);
        rd[s] = recv_n + 2;
        recv_n += 2 + rc[s];
    }
    recv_n += 1; // a trailing guard
    void *send    = xmalloc((size_t)send_n * esize(dt));
    void *recv    = xmalloc((size_t)recv_n * esize(dt));
    int64_t *want = xmalloc((size_t)recv_n * sizeof *want);
    for (int64_t i = 0; i < send_n; i++)
        put(send, dt, i, SENTINEL);
    for (int d = 0; d < n; d++)
        for (int64_t k = 0; k < sc[d]; k++)
            put(send, dt, sd[d] + k, a2a_val(g_rank, d, k));
    for (int64_t i = 0; i < recv_n; i++)
        put(recv, dt, i, SENTINEL), want[i] = SENTINEL;
    for (int s = 0; s < n; s++)
        for (int64_t k = 0; k < rc[s]; k++)
            want[rd[s] + k] = a2a_val(s, g_rank, k);
    check_status(what, spry_comm_alltoallv(c, send, sc, sd, recv, rc, rd, dt));
    check_elems(what, recv, dt, want, recv_n);
    free(want), free(recv), free(send), free(sc);
}

static void test_alltoallv(spry_comm *c) {
    for (size_t d = 0; d < 4; d++)
        alltoallv_case(c, k_dtypes[d]);
}

/* ---- broadcast, barrier -----------------------------------------------------------------------
 */

static void test_broadcast(spry_comm *c) {
    const size_t sizes[] = {0, 1000, 1 << 20};
    for (size_t s = 0; s < 3; s++)
        for (int root = 0; root < g_size; root++) {
            size_t nb          = sizes[s];
            unsigned char *buf = xmalloc(nb + 1);
            for (size_t i = 0; i <= nb; i++)
                buf[i] = 0xEE;
            if (g_rank == root)
                for (size_t i = 0; i < nb; i++)
                    buf[i] = (unsigned char)(i * 31 + (size_t)root * 7 + 1);
            char what[64];
            snprintf(what, sizeof what, "broadcast %zu bytes from %d", nb, root);
            check_status(what, spry_comm_broadcast(c, buf, nb, root));
            size_t bad = 0;
            for (size_t i = 0; i < nb; i++)
                bad += buf[i] != (unsigned char)(i * 31 + (size_t)root * 7 + 1);
            CHECK_MSG(bad == 0 && buf[nb] == 0xEE, "rank %d: %s: %zu bytes wrong, guard %#x",
                      g_rank, what, bad, buf[nb]);
            free(buf);
        }
    check_status("barrier", spry_comm_barrier(c));
}

/* ---- non-blocking -----------------------------------------------------------------------------
 */

typedef struct nb_case {
    spry_dtype dt;
    spry_reduce_op op;
    int64_t n;    // allreduce: elements; reduce_scatter: base of the uneven counts
    bool scatter; // ireduce_scatter instead of iallreduce
    bool poll;    // finish with spry_comm_test, else spry_comm_wait
} nb_case;

static void test_nonblocking(spry_comm *c) {
    const nb_case cases[] = {
        {SPRY_DTYPE_F32, SPRY_REDUCE_SUM, 1 << 20, false, true},
        {SPRY_DTYPE_I64, SPRY_REDUCE_MAX, 1000, false, false},
        {SPRY_DTYPE_F64, SPRY_REDUCE_SUM, 300, true, true},
        {SPRY_DTYPE_F32, SPRY_REDUCE_SUM, 1 << 18, true, false},
        {SPRY_DTYPE_I32, SPRY_REDUCE_MIN, 1, false, true},
        {SPRY_DTYPE_F64, SPRY_REDUCE_MIN, 0, false, false},
    };
    enum { N_CASE = sizeof cases / sizeof cases[0] };
    spry_comm_req *req[N_CASE];
    void *send[N_CASE], *recv[N_CASE];
    int64_t *want[N_CASE], n_out[N_CASE];
    int64_t *counts = xmalloc(sizeof(int64_t) * (size_t)g_size),
            *displ  = xmalloc(sizeof(int64_t) * (size_t)g_size);
    for (int k = 0; k < N_CASE; k++) {
        const nb_case *q = &cases[k];
        char what[64];
        snprintf(what, sizeof what, "nonblocking case %d start", k);
        if (!q->scatter) {
            n_out[k] = q->n;
            send[k]  = NULL;
            recv[k]  = xmalloc((size_t)(q->n + 1) * esize(q->dt));
            want[k]  = xmalloc((size_t)(q->n + 1) * sizeof(int64_t));
            for (int64_t i = 0; i < q->n; i++)
                put(recv[k], q->dt, i, val(q->dt, g_rank, i + k));
            for (int64_t i = 0; i < q->n; i++)
                want[k][i] = reduced(q->dt, q->op, i + k);
            check_status(what, spry_comm_iallreduce(c, recv[k], q->n, q->dt, q->op, &req[k]));
        } else {
            int64_t total;
            uneven_counts(counts, q->n, displ, &total);
            n_out[k] = counts[g_rank];
            send[k]  = xmalloc((size_t)total * esize(q->dt));
            recv[k]  = xmalloc((size_t)(n_out[k] + 1) * esize(q->dt));
            want[k]  = xmalloc((size_t)(n_out[k] + 1) * sizeof(int64_t));
            for (int64_t i = 0; i < total; i++)
                put(send[k], q->dt, i, val(q->dt, g_rank, i + k));
            for (int64_t i = 0; i < n_out[k]; i++)
                want[k][i] = reduced(q->dt, q->op, displ[g_rank] + i + k);
            check_status(what, spry_comm_ireduce_scatter(c, send[k], recv[k], counts, q->dt, q->op,
                                                         &req[k]));
            for (int r = 0; r < g_size; r++)
                counts[r] = -1; // the request keeps its own copy
        }
        put(recv[k], q->dt, n_out[k], SENTINEL), want[k][n_out[k]] = SENTINEL;
        CHECK_MSG(req[k] != NULL, "rank %d: %s: no request", g_rank, what);
    }
    // poll the polled ones round-robin until all are done, then wait for the rest
    bool done[N_CASE] = {false};
    for (int left = 1; left;) {
        left = 0;
        for (int k = 0; k < N_CASE; k++) {
            if (!cases[k].poll || done[k] || !req[k])
                continue;
            spry_status st = spry_comm_test(req[k], &done[k]);
            if (st) { // the request is freed on error too
                check_status("spry_comm_test", st);
                done[k] = true;
            }
            left += !done[k];
        }
    }
    for (int k = 0; k < N_CASE; k++) {
        if (!cases[k].poll)
            check_status("spry_comm_wait", spry_comm_wait(req[k]));
        char what[64];
        snprintf(what, sizeof what, "nonblocking case %d (%s)", k,
                 cases[k].scatter ? "ireduce_scatter" : "iallreduce");
        check_elems(what, recv[k], cases[k].dt, want[k], n_out[k] + 1);
        free(send[k]), free(recv[k]), free(want[k]);
    }
    check_status("spry_comm_wait(NULL)", spry_comm_wait(NULL));
    free(displ), free(counts);
}

/* ---- agreement --------------------------------------------------------------------------------
 */

static void test_agree(spry_comm *c) {
    int who = 123;
    spry_errorf(SPRY_ERR_IO, "an earlier, unrelated error");
    spry_status st = spry_comm_agree(c, SPRY_OK, &who);
    CHECK_MSG(st == SPRY_OK && who == -1, "rank %d: agree(all OK) = %s, who %d", g_rank,
              spry_status_name(st), who);
    check_status("agree(all OK, who NULL)", spry_comm_agree(c, SPRY_OK, NULL));

    // only the last rank fails
    const int bad     = g_size - 1;
    const char *orig  = "config: key 'optimizer.lr' is -1; HINT: use a positive learning rate";
    spry_status local = SPRY_OK;
    if (g_rank == bad)
        local = spry_errorf(SPRY_ERR_CONFIG, "%s", orig);
    else
        spry_errorf(SPRY_OK, "%s", "");
    who             = 123;
    st              = spry_comm_agree(c, local, &who);
    const char *msg = spry_last_error();
    CHECK_MSG(st == SPRY_ERR_CONFIG && who == bad, "rank %d: agree(rank %d fails) = %s, who %d",
              g_rank, bad, spry_status_name(st), who);
    CHECK_MSG(strstr(msg, orig) != NULL, "rank %d: agree message '%s' lacks '%s'", g_rank, msg,
              orig);
    if (g_rank != bad) {
        char head[64];
        snprintf(head, sizeof head, "rank %d failed", bad);
        CHECK_MSG(strstr(msg, head) != NULL, "rank %d: agree message '%s' lacks '%s'", g_rank, msg,
                  head);
    }
    // two ranks fail differently: every rank gets the most severe status (the lowest value) and
    // the same `who`; a failing rank keeps its own message
    if (g_size > 1) {
        spry_status mine = g_rank == 0 ? SPRY_ERR_IO : g_rank == g_size - 1 ? SPRY_ERR_COMM : SPRY_OK;
        if (mine) spry_errorf(mine, "own failure of rank %d", g_rank);
        st = spry_comm_agree(c, mine, &who);
        CHECK_MSG(st == SPRY_ERR_COMM && who == g_size - 1, "rank %d: agree(IO on 0, COMM on %d) = %s, who %d",
                  g_rank, g_size - 1, spry_status_name(st), who);
        char own[64];
        snprintf(own, sizeof own, mine ? "own failure of rank %d" : "rank %d failed", mine ? g_rank : g_size - 1);
        CHECK_MSG(strstr(spry_last_error(), own) != NULL, "rank %d: message '%s' lacks '%s'", g_rank,
                  spry_last_error(), own);
    }
    // everyone can go on afterwards
    check_status("agree(all OK again)", spry_comm_agree(c, SPRY_OK, &who));
    CHECK(who == -1);
}

/* ---- argument errors --------------------------------------------------------------------------
 */

// Argument errors are found locally before any transfer, so every rank sees the same status.
static void expect_arg_error(const char *what, spry_status st) {
    CHECK_MSG(st == SPRY_ERR_ARG && spry_last_error()[0] != 0, "rank %d: %s: %s, message '%s'",
              g_rank, what, spry_status_name(st), spry_last_error());
    spry_errorf(SPRY_OK, "%s", ""); // so that the next case shows its own message
}

static void test_arg_errors(spry_comm *c) {
    float buf[8] = {0}, out[8] = {0};
    int64_t *counts = xmalloc(sizeof(int64_t) * 4 * (size_t)g_size), *zeros = counts + g_size;
    for (int r = 0; r < g_size; r++)
        counts[r] = 1, zeros[r] = 0, zeros[g_size + r] = 0, zeros[2 * g_size + r] = 0;
    static char marker; // a non-NULL request the errors must clear
    spry_comm_req *req = (spry_comm_req *)(void *)&marker;

    spry_errorf(SPRY_OK, "%s", "");
    expect_arg_error("allreduce n=-1",
                     spry_comm_allreduce(c, buf, -1, SPRY_DTYPE_F32, SPRY_REDUCE_SUM));
    expect_arg_error("allreduce bf16",
                     spry_comm_allreduce(c, buf, 4, SPRY_DTYPE_BF16, SPRY_REDUCE_SUM));
    expect_arg_error("allreduce u8",
                     spry_comm_allreduce(c, buf, 4, SPRY_DTYPE_U8, SPRY_REDUCE_MAX));
    expect_arg_error("iallreduce n=-5",
                     spry_comm_iallreduce(c, buf, -5, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, &req));
    CHECK(req == NULL);
    req = (spry_comm_req *)(void *)&marker;
    expect_arg_error("iallreduce bf16",
                     spry_comm_iallreduce(c, buf, 4, SPRY_DTYPE_BF16, SPRY_REDUCE_SUM, &req));
    CHECK(req == NULL);

    expect_arg_error(
        "reduce_scatter bf16",
        spry_comm_reduce_scatter(c, buf, out, counts, SPRY_DTYPE_BF16, SPRY_REDUCE_SUM));
    counts[g_size - 1] = -2;
    expect_arg_error(
        "reduce_scatter negative count",
        spry_comm_reduce_scatter(c, buf, out, counts, SPRY_DTYPE_F32, SPRY_REDUCE_SUM));
    req = (spry_comm_req *)(void *)&marker;
    expect_arg_error(
        "ireduce_scatter negative count",
        spry_comm_ireduce_scatter(c, buf, out, counts, SPRY_DTYPE_F32, SPRY_REDUCE_SUM, &req));
    CHECK(req == NULL);
    expect_arg_error("allgather negative count",
                     spry_comm_allgather(c, buf, out, counts, SPRY_DTYPE_F32));
    counts[g_size - 1] = 1;
    expect_arg_error("allgather bf16", spry_comm_allgather(c, buf, out, counts, SPRY_DTYPE_BF16));

    int64_t *sc = zeros, *sd = zeros + g_size, *rc = zeros + 2 * g_size;
    expect_arg_error("alltoallv bf16",
                     spry_comm_alltoallv(c, buf, sc, sd, out, rc, sd, SPRY_DTYPE_BF16));
    sc[0] = -1;
    expect_arg_error("alltoallv negative send count",
                     spry_comm_alltoallv(c, buf, sc, sd, out, rc, sd, SPRY_DTYPE_F32));
    sc[0] = 0, rc[0] = -1;
    expect_arg_error("alltoallv negative recv count",
                     spry_comm_alltoallv(c, buf, sc, sd, out, rc, sd, SPRY_DTYPE_F32));

    expect_arg_error("broadcast root -1", spry_comm_broadcast(c, buf, sizeof buf, -1));
    expect_arg_error("broadcast root N", spry_comm_broadcast(c, buf, sizeof buf, g_size));
    free(counts);
    // still usable
    check_status("barrier after argument errors", spry_comm_barrier(c));
}

/* ---- identity and time ------------------------------------------------------------------------
 */

static bool under_launcher(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_SIZE") ||
           getenv("PMIX_RANK") || getenv("PMI_RANK");
}

static void test_identity(spry_comm *c) {
    CHECK(g_size >= 1 && g_rank >= 0 && g_rank < g_size);
    const char *be = spry_comm_backend(c);
    if (under_launcher())
        CHECK_MSG(strncmp(be, "mpi", 3) == 0, "rank %d: backend '%s' under a launcher", g_rank, be);
    else
        CHECK_MSG(strcmp(be, "single") == 0 && g_size == 1,
                  "rank %d: backend '%s', size %d without a launcher", g_rank, be, g_size);
    // every rank has the same size and a distinct rank
    int64_t v[3] = {g_size, g_size, g_rank};
    check_status("allreduce size", spry_comm_allreduce(c, v, 1, SPRY_DTYPE_I64, SPRY_REDUCE_MAX));
    check_status("allreduce size",
                 spry_comm_allreduce(c, v + 1, 1, SPRY_DTYPE_I64, SPRY_REDUCE_MIN));
    check_status("allreduce rank",
                 spry_comm_allreduce(c, v + 2, 1, SPRY_DTYPE_I64, SPRY_REDUCE_SUM));
    CHECK_MSG(v[0] == g_size && v[1] == g_size && v[2] == (int64_t)g_size * (g_size - 1) / 2,
              "rank %d: size max %lld min %lld, rank sum %lld", g_rank, (long long)v[0],
              (long long)v[1], (long long)v[2]);
}

static void test_time(spry_comm *c) {
    double t = spry_comm_take_time(c); // everything so far
    CHECK_MSG(t >= 0, "rank %d: take_time %g", g_rank, t);
    CHECK_NEAR(spry_comm_take_time(c), 0, 0); // reset, nothing since
    check_status("barrier", spry_comm_barrier(c));
    t = spry_comm_take_time(c);
    CHECK_MSG(t >= 0 && t < 60, "rank %d: take_time after a barrier %g", g_rank, t);
    CHECK_NEAR(spry_comm_take_time(c), 0, 0);
}

int main(void) {
    spry_comm *c;
    spry_status st = spry_comm_init(false, &c);
    if (st) {
        fprintf(stderr, "test_comm: spry_comm_init: %s: %s\n", spry_status_name(st),
                spry_last_error());
        return 1;
    }
    g_rank = spry_comm_rank(c), g_size = spry_comm_size(c);

    test_identity(c);
    test_allreduce(c);
    test_reduce_scatter(c);
    test_allgather(c);
    test_alltoallv(c);
    test_broadcast(c);
    test_nonblocking(c);
    test_agree(c);
    test_arg_errors(c);
    test_time(c);

    // every rank learns the job's failures and exits non-zero if there were any
    int64_t fails = g_check_fail;
    check_status("allreduce failures",
                 spry_comm_allreduce(c, &fails, 1, SPRY_DTYPE_I64, SPRY_REDUCE_SUM));
    int64_t others = fails - g_check_fail;
    CHECK_MSG(others == 0, "rank %d: %lld failures on the other ranks", g_rank, (long long)others);
    printf("test_comm: rank %d of %d (%s): %d passed, %d failed\n", g_rank, g_size,
           spry_comm_backend(c), g_check_pass, g_check_fail);
    fflush(stdout);
    spry_comm_free(c);
    return check_exit();
}
