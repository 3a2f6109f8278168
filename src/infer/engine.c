/*
 * engine.c -- continuous batching over a paged KV cache with prefix caching (see engine.h).
 *
 * Layout of the KV pool: block b holds, for every layer l, the keys of its block_tokens positions
 * d-major (so attention scores 16 keys with one load per dimension), then the values head by
 * head as rows of D floats (a head's values of a block are one contiguous bt * D run):
 *     K: pool[((b * L + l) * 2 + 0) * bt * C + (h * D + d) * bt + t]
 *     V: pool[((b * L + l) * 2 + 1) * bt * C + (h * bt + t) * D + d]
 * The pool and the packed weights sit in 2 MiB-aligned memory marked for transparent huge pages:
 * decode streams all of them every token, and 4 KiB pages cost TLB walks and stop the hardware
 * prefetchers at every page.
 * A sequence's position p lives in block table[p / bt], slot t = p % bt.
 *
 * Block states: in use (ref > 0; shared by every sequence whose prompt prefix hashed to it),
 * cached (ref 0 but holding a full block that a later prompt may reuse; evicted oldest first),
 * free (ref 0, nothing useful). Full blocks are keyed by hash(parent block's key, its tokens), so a
 * key names the whole prefix up to the block's end.
 *
 * Locking: `mu` guards the queues, the pool and the counters; the forward pass runs unlocked on
 * the sequences this step owns, and callbacks run unlocked.
 */
#define _DEFAULT_SOURCE // madvise(MADV_DONTNEED)
#define _POSIX_C_SOURCE 200809L
#include "spry/engine.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "infer/engine_kernels.h"
#include "spry/cpu.h"
#include "spry/dtype.h"

enum { SEQ_WAITING = 0, SEQ_RUNNING };

typedef struct seq {
    int64_t            id, admit_order;
    int32_t           *tokens;   // (cap) prompt then generated
    int64_t            n_tokens, n_prompt, cap, max_tokens, n_gen;
    int64_t            n_cached; // positions whose keys/values are in the blocks
    int32_t           *table;    // (max_blocks) block ids
    int64_t            n_table;
    uint64_t           last_key; // key of the last full block in the table (0: none)
    int64_t            n_keyed;  // full blocks of the table that have keys
    spry_sample_params sp;
    int32_t            stop[8];
    int                n_stop;
    spry_token_fn      cb;
    void              *user;
    int                state;
    bool               cancel;
    struct seq        *next; // waiting queue
} seq;

typedef struct batch_item {
    seq    *s;
    int64_t pos0, n;   // tokens [pos0, pos0 + n) of s this step
    bool    logits;    // the chunk ends the known tokens: sample after it
    bool    all;       // logits for every row of the chunk (spry_engine_score)
} batch_item;

typedef struct event {
    spry_token_fn cb;
    void         *user;
    int64_t       id;
    int32_t       token;
    spry_finish   finish;
} event;

// A weight matrix as the forward pass reads it: (N, K) rows in format fmt.
typedef struct wmat {
    const void *w;
    void       *owned; // converted copy, or NULL when w is the model's f32 tensor
} wmat;

struct spry_engine {
    spry_model        *m;
    wmat              *mats;   // (L * 4 + 1): per layer qkv, proj, fc, fc2; then the LM head
    bool               packed_bf16; // bf16 weights in packed panels (CPU with AVX512-BF16)
    bool               packed_f16;  // f16 weights in packed panels (CPU with AVX-512)
    bool               packed_q;    // Q8_0/Q4_0 weights in spry_qpack panels (CPU with AVX-512 VNNI)
    spry_engine_params p;
    int64_t            L, C, H, D, V, I, max_blocks;
    // the pool
    void    *pool;
    bool     kv_f16;              // f16 elements (else f32)
    int32_t *ref;                 // (n_blocks)
    uint64_t *key;                // (n_blocks) 0 = no key
    int32_t *free_stack;          // blocks with nothing useful
    int64_t  n_free;
    int32_t *lru_prev, *lru_next; // cached blocks, oldest at lru_head
    int32_t  lru_head, lru_tail;
    int64_t  n_cached_blocks;
    int32_t *bucket, *chain;      // key -> block hash table (chained)
    int64_t  n_bucket;
    // sequences
    seq    *wait_head, *wait_tail;
    seq   **running;              // (max_seqs) in admission order
    int     n_running;
    int64_t next_id, next_admit;
    // the step
    batch_item *items;            // (max_seqs + 1)
    int         n_items;
    float      *x, *h, *qkv, *att, *ff, *logits, *scratch; // activations (max_batch_tokens rows)
    uint16_t   *xb;               // (max_batch_tokens, max(C, I)) activations rounded to bf16, or
                                  // spry_qgemm's scratch for as many rows
    int64_t    *tok_pos;          // (max_batch_tokens) position of each batch row
    int32_t    *tok_id;           // (max_batch_tokens)
    int32_t    *tok_item;         // (max_batch_tokens) batch item of each row
    int32_t    *grp;              // (max_batch_tokens + 1) first row of each attention group
    event      *events;
    int         n_events, cap_events;
    // counters
    spry_engine_stats st;
    pthread_mutex_t   mu;
    pthread_cond_t    work;
};

spry_engine_params spry_engine_params_default(void) {
    return (spry_engine_params){.block_tokens = 16, .max_seqs = 32, .max_batch_tokens = 512, .prefix_cache = true};
}

/* ---- the block pool ------------------------------------------------------------------------ */

// Bytes per element of the KV cache.
static size_t kv_es(const spry_engine *e) { return e->kv_f16 ? 2 : 4; }

// The keys (which = 0) or values (1) of layer l in pool block b: bt * C elements.
static char *kv_half(const spry_engine *e, int32_t b, int64_t l, int which) {
    size_t i = ((size_t)b * (size_t)e->L + (size_t)l) * 2 + (size_t)which;
    return (char *)e->pool + i * (size_t)(e->p.block_tokens * e->C) * kv_es(e);
}

static void lru_remove(spry_engine *e, int32_t b) {
    int32_t p = e->lru_prev[b], n = e->lru_next[b];
    if (p >= 0) e->lru_next[p] = n;
    else e->lru_head = n;
    if (n >= 0) e->lru_prev[n] = p;
    else e->lru_tail = p;
    e->lru_prev[b] = e->lru_next[b] = -1;
    e->n_cached_blocks--;
}

static void lru_push(spry_engine *e, int32_t b) {
    e->lru_prev[b] = e->lru_tail, e->lru_next[b] = -1;
    if (e->lru_tail >= 0) e->lru_next[e->lru_tail] = b;
    else e->lru_head = b;
    e->lru_tail = b;
    e->n_cached_blocks++;
}

static int64_t bucket_of(const spry_engine *e, uint64_t k) { return (int64_t)(k & (uint64_t)(e->n_bucket - 1)); }

static int32_t key_find(const spry_engine *e, uint64_t k) {
    for (int32_t b = e->bucket[bucket_of(e, k)]; b >= 0; b = e->chain[b])
        if (e->key[b] == k) return b;
    return -1;
}

static void key_set(spry_engine *e, int32_t b, uint64_t k) {
    e->key[b]        = k;
    int64_t i        = bucket_of(e, k);
    e->chain[b]      = e->bucket[i];
    e->bucket[i]     = b;
}

static void key_clear(spry_engine *e, int32_t b) {
    if (!e->key[b]) return;
    int32_t *p = &e->bucket[bucket_of(e, e->key[b])];
    while (*p >= 0 && *p != b) p = &e->chain[*p];
    if (*p == b) *p = e->chain[b];
    e->key[b] = 0, e->chain[b] = -1;
}

// A block for new keys/values: a free one, else the oldest cached one (its key is dropped).
static int32_t block_alloc(spry_engine *e) {
    int32_t b = -1;
    if (e->n_free > 0) {
        b = e->free_stack[--e->n_free];
    } else if (e->lru_head >= 0) {
        b = e->lru_head;
        lru_remove(e, b);
        key_clear(e, b);
    }
    if (b >= 0) e->ref[b] = 1;
    return b;
}

static void block_release(spry_engine *e, int32_t b) {
    if (--e->ref[b] > 0) return;
    if (e->key[b] && e->p.prefix_cache) lru_push(e, b);
    else key_clear(e, b), e->free_stack[e->n_free++] = b;
}

static uint64_t block_key(uint64_t parent, const int32_t *t, int64_t n) {
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < n; i++) h = (h ^ (uint32_t)t[i]) * 0x100000001b3ull, h ^= h >> 29;
    return h ? h : 1; // 0 means "no key"
}

// Frees every block of s (the sequence keeps its tokens) and forgets its cached positions.
static void seq_drop_blocks(spry_engine *e, seq *s) {
    for (int64_t i = 0; i < s->n_table; i++) block_release(e, s->table[i]);
    s->n_table = 0, s->n_cached = 0, s->last_key = 0, s->n_keyed = 0;
}

// Gives keys to the full blocks of s that have none yet (their tokens are final).
static void seq_key_blocks(spry_engine *e, seq *s) {
    int64_t bt = e->p.block_tokens;
    while (e->p.prefix_cache && s->n_keyed < s->n_cached / bt) {
        int64_t  i = s->n_keyed;
        uint64_t k = block_key(s->last_key, s->tokens + i * bt, bt);
        int32_t  b = s->table[i];
        if (!e->key[b] && key_find(e, k) < 0) key_set(e, b, k);
        s->last_key = k;
        s->n_keyed++;
    }
}

// Makes s's table cover positions [0, upto). False (nothing changed beyond what fits) if the
// pool ran out.
static bool seq_reserve(spry_engine *e, seq *s, int64_t upto) {
    int64_t need = (upto + e->p.block_tokens - 1) / e->p.block_tokens;
    while (s->n_table < need) {
        int32_t b = block_alloc(e);
        if (b < 0) return false;
        s->table[s->n_table++] = b;
    }
    return true;
}

/* ---- requests ------------------------------------------------------------------------------ */

static void seq_free(seq *s) {
    if (!s) return;
    free(s->tokens), free(s->table), free(s);
}

static void push_event(spry_engine *e, seq *s, int32_t token, spry_finish f) {
    if (e->n_events == e->cap_events) {
        int    cap = e->cap_events ? 2 * e->cap_events : 64;
        event *ne  = realloc(e->events, sizeof *ne * (size_t)cap);
        if (!ne) return; // the callback is lost; the sequence still finishes
        e->events = ne, e->cap_events = cap;
    }
    e->events[e->n_events++] = (event){s->cb, s->user, s->id, token, f};
}

spry_status spry_engine_submit(spry_engine *e, const spry_request *r, int64_t *id) {
    *id = -1;
    if (r->n_prompt < 1 || !r->prompt) return spry_errorf(SPRY_ERR_ARG, "prompt: must hold at least one token");
    if (r->max_tokens < 1)
        return spry_errorf(SPRY_ERR_ARG, "max_tokens: must be >= 1, got %lld", (long long)r->max_tokens);
    if (r->n_prompt + r->max_tokens > e->p.n_ctx)
        return spry_errorf(SPRY_ERR_ARG, "This model's maximum context length is %lld tokens. However, you requested "
                           "%lld tokens (%lld in the prompt, %lld for the completion). Please reduce the prompt or "
                           "max_tokens.", (long long)e->p.n_ctx, (long long)(r->n_prompt + r->max_tokens),
                           (long long)r->n_prompt, (long long)r->max_tokens);
    for (int64_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->V)
            return spry_errorf(SPRY_ERR_ARG, "prompt: token %d at %lld is not in the vocabulary of %lld", r->prompt[i],
                               (long long)i, (long long)e->V);
    if (r->n_stop_ids < 0 || r->n_stop_ids > 8)
        return spry_errorf(SPRY_ERR_ARG, "stop ids: at most 8, got %d", r->n_stop_ids);
    seq *s = calloc(1, sizeof *s);
    if (s) {
        s->cap    = r->n_prompt + r->max_tokens;
        s->tokens = malloc(sizeof(int32_t) * (size_t)s->cap);
        s->table  = malloc(sizeof(int32_t) * (size_t)e->max_blocks);
    }
    if (!s || !s->tokens || !s->table) {
        seq_free(s);
        return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for a request");
    }
    memcpy(s->tokens, r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
    s->n_tokens = s->n_prompt = r->n_prompt;
    s->max_tokens = r->max_tokens, s->sp = r->sample, s->cb = r->on_token, s->user = r->user;
    s->n_stop = r->n_stop_ids;
    if (s->n_stop) memcpy(s->stop, r->stop_ids, sizeof(int32_t) * (size_t)s->n_stop);
    pthread_mutex_lock(&e->mu);
    s->id = *id = e->next_id++;
    if (e->wait_tail) e->wait_tail->next = s;
    else e->wait_head = s;
    e->wait_tail = s;
    e->st.waiting++;
    pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->mu);
    return SPRY_OK;
}

void spry_engine_cancel(spry_engine *e, int64_t id) {
    pthread_mutex_lock(&e->mu);
    for (seq *s = e->wait_head; s; s = s->next)
        if (s->id == id) s->cancel = true;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id) e->running[i]->cancel = true;
    pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->mu);
}

void spry_engine_wait_work(spry_engine *e, double seconds) {
    pthread_mutex_lock(&e->mu);
    if (!e->wait_head && e->n_running == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec + seconds;
        ts.tv_sec  = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&e->work, &e->mu, &ts);
    }
    pthread_mutex_unlock(&e->mu);
}

void spry_engine_stats_get(spry_engine *e, spry_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out                  = e->st;
    out->running          = e->n_running;
    out->kv_blocks_total  = e->p.n_blocks;
    out->kv_blocks_cached = e->n_cached_blocks;
    out->kv_blocks_used   = e->p.n_blocks - e->n_free - e->n_cached_blocks;
    pthread_mutex_unlock(&e->mu);
}

int64_t spry_engine_n_ctx(const spry_engine *e) { return e->p.n_ctx; }

/* ---- init ---------------------------------------------------------------------------------- */

void spry_engine_free(spry_engine *e) {
    if (!e) return;
    for (seq *s = e->wait_head, *n; s; s = n) n = s->next, seq_free(s);
    for (int i = 0; i < e->n_running; i++) seq_free(e->running[i]);
    free(e->pool), free(e->ref), free(e->key), free(e->free_stack), free(e->lru_prev), free(e->lru_next);
    free(e->bucket), free(e->chain), free(e->running), free(e->items), free(e->x), free(e->h), free(e->qkv);
    free(e->att), free(e->ff), free(e->logits), free(e->scratch), free(e->tok_pos), free(e->tok_id);
    free(e->tok_item), free(e->grp), free(e->events), free(e->xb);
    for (int64_t i = 0; e->mats && i < e->L * 4 + 1; i++) free(e->mats[i].owned);
    free(e->mats);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->work);
    free(e);
}

// Advises the OS that the whole pages inside [p, p + n) are not needed now (advisory: a failure
// only keeps the memory). Mapped file pages are read again from the file if touched later.
static void drop_pages(const void *p, size_t n) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + n) / page * page;
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

// Hands the whole pages inside the model's layer matrices back to the OS (they read as zeros
// afterwards): the engine computes from its own copies, and the embedding rows (wte) stay.
static void release_matrices(spry_engine *e) {
    for (int64_t l = 0; l < e->L; l++) {
        const spry_block  *b    = &e->m->blocks[l];
        const spry_tensor *ts[] = {b->qkv_w, b->proj_w, b->fc_w, b->fc2_w};
        for (int k = 0; k < 4; k++) drop_pages(ts[k]->data, spry_tensor_nbytes(ts[k]));
    }
}

// size bytes, 2 MiB-aligned and marked for transparent huge pages (advisory: without them it is
// ordinary memory), or NULL; free() it.
static void *alloc_huge(size_t size) {
    void *p = NULL;
    if (size == 0 || posix_memalign(&p, (size_t)2 << 20, size)) return NULL;
    (void)madvise(p, (size + 4095) / 4096 * 4096, MADV_HUGEPAGE);
    return p;
}

// Matrix i (tensor t, (N, K)) as Q8_0/Q4_0 panels for spry_qgemm: from the mapped rows when given
// (their pages are dropped afterwards: the panels are the engine's copy), else quantized from t.
static spry_status pack_quant(spry_engine *e, int64_t i, const spry_tensor *t, int64_t N, int64_t K) {
    const spry_wfmt fmt  = e->p.weight_format;
    const size_t    rows = spry_wfmt_row_bytes(fmt, K) * (size_t)N;
    const void     *src  = e->p.mapped_rows ? e->p.mapped_rows[i] : NULL;
    void           *tmp  = NULL;
    if (!src) {
        if (!(tmp = malloc(rows))) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for converted weights");
        spry_status st = spry_quantize_rows(fmt, t->data, tmp, N, K, e->p.n_threads);
        if (st != SPRY_OK) return free(tmp), st;
        src = tmp;
    }
    e->mats[i].owned = alloc_huge((size_t)spry_qpack_size(fmt, N, K));
    if (!e->mats[i].owned) return free(tmp), spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for packed weights");
    spry_status st = spry_qpack(fmt, src, N, K, e->mats[i].owned, e->p.n_threads);
    if (tmp) free(tmp);
    else drop_pages(src, rows);
    e->mats[i].w = e->mats[i].owned;
    e->packed_q  = true;
    return st;
}

// The model's matrices in the engine's weight format (f32: the model's own tensors).
static spry_status convert_weights(spry_engine *e) {
    int64_t n = e->L * 4 + 1;
    e->mats   = calloc((size_t)n, sizeof(wmat));
    if (!e->mats) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory");
    if ((int)e->p.weight_format < 0 || e->p.weight_format >= SPRY_WFMT_COUNT)
        return spry_errorf(SPRY_ERR_ARG, "engine: weight_format %d is not a format", (int)e->p.weight_format);
    for (int64_t i = 0; i < n; i++) {
        const spry_block *b = &e->m->blocks[i / 4 < e->L ? i / 4 : 0];
        const spry_tensor *t = i == n - 1 ? e->m->wte
                             : (const spry_tensor *[]){b->qkv_w, b->proj_w, b->fc_w, b->fc2_w}[i % 4];
        e->mats[i].w = t->data;
        int64_t N = t->shape[0], K = t->shape[1];
        if (e->p.weight_format == SPRY_WFMT_F32) { // packed panels for the outer-product kernel
            e->mats[i].owned = alloc_huge(sizeof(float) * (size_t)spry_eng_packed_size(N, K));
            if (!e->mats[i].owned) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for packed weights");
            spry_eng_pack_f32(t->data, N, K, e->mats[i].owned);
            e->mats[i].w = e->mats[i].owned;
            continue;
        }
        if (K % spry_wfmt_block(e->p.weight_format))
            return spry_errorf(SPRY_ERR_ARG, "engine: weight_format %s needs input widths that are multiples of %lld; "
                               "a matrix has %lld", spry_wfmt_name(e->p.weight_format),
                               (long long)spry_wfmt_block(e->p.weight_format), (long long)K);
        bool rows_fmt = e->p.weight_format == SPRY_WFMT_Q8_0 || e->p.weight_format == SPRY_WFMT_Q4_0;
        if (rows_fmt && spry_quant_isa_used(e->p.weight_format) == SPRY_QUANT_ISA_AVX512) {
            SPRY_TRY(pack_quant(e, i, t, N, K));
            continue;
        }
        if (rows_fmt && e->p.mapped_rows && e->p.mapped_rows[i]) { // read in place (e.g. an mmapped GGUF)
            e->mats[i].w = e->p.mapped_rows[i];
            continue;
        }
        e->mats[i].owned = malloc(spry_wfmt_row_bytes(e->p.weight_format, K) * (size_t)N);
        if (!e->mats[i].owned) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for converted weights");
        SPRY_TRY(spry_quantize_rows(e->p.weight_format, t->data, e->mats[i].owned, N, K, e->p.n_threads));
        e->mats[i].w = e->mats[i].owned;
        spry_cpu_features f = spry_cpu_detect();
        if (e->p.weight_format == SPRY_WFMT_BF16 && f.avx512f && f.avx512bw && f.avx512bf16) {
            // bf16 rows -> packed panels for the outer-product kernel
            uint16_t *wb = alloc_huge(sizeof(uint16_t) * (size_t)spry_eng_packed_bf16_size(N, K));
            if (!wb) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for packed weights");
            spry_eng_pack_bf16(e->mats[i].owned, N, K, wb);
            free(e->mats[i].owned);
            e->mats[i].w = e->mats[i].owned = wb;
            e->packed_bf16 = true;
        } else if (e->p.weight_format == SPRY_WFMT_F16 && f.avx512f) {
            uint16_t *wh = alloc_huge(sizeof(uint16_t) * (size_t)spry_eng_packed_size(N, K));
            if (!wh) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for packed weights");
            spry_eng_pack_f16(e->mats[i].owned, N, K, wh);
            free(e->mats[i].owned);
            e->mats[i].w = e->mats[i].owned = wh;
            e->packed_f16 = true;
        }
    }
    if (e->p.release_model_matrices) release_matrices(e);
    return SPRY_OK;
}

// What a linear layer does to its output block by block, in the same pass (spry_tile_fn).
typedef struct epilogue {
    enum { EPI_NONE, EPI_GELU, EPI_RESIDUAL } op;
    float *res; // EPI_RESIDUAL: res (M, N) += the block
} epilogue;

static void epilogue_apply(void *user, float *y, int64_t ldy, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    const epilogue *ep = user;
    if (ep->op == EPI_GELU) spry_eng_gelu_block(y + r0 * ldy + c0, ldy, nr, nc);
    else spry_eng_add_block(ep->res + r0 * ldy + c0, y + r0 * ldy + c0, ldy, nr, nc);
}

// Y (M, N) = X (M, K) @ W^T + bias for weight matrix i, in the engine's format, then the epilogue
// (ep->op EPI_NONE: none) on each block of Y as the kernel finishes it. Fails only when spry_gemv
// cannot allocate its activation scratch (SPRY_ERR_NOMEM); spry_qgemm uses e->xb.
static spry_status linear(const spry_engine *e, int64_t i, const float *X, int64_t M, int64_t K, const float *bias,
                          int64_t N, float *Y, epilogue ep) {
    spry_tile_fn epi = ep.op == EPI_NONE ? NULL : epilogue_apply;
    if (e->p.weight_format == SPRY_WFMT_F32) spry_eng_linear_packed(X, M, K, e->mats[i].w, bias, N, Y, epi, &ep);
    else if (e->packed_bf16) spry_eng_linear_packed_bf16(X, M, K, e->mats[i].w, bias, N, Y, e->xb, epi, &ep);
    else if (e->packed_f16) spry_eng_linear_packed_f16(X, M, K, e->mats[i].w, bias, N, Y, epi, &ep);
    else if (e->packed_q)
        return spry_qgemm_ex(Y, X, e->mats[i].w, e->p.weight_format, bias, M, K, N, e->xb, e->p.n_threads, epi, &ep);
    else {
        SPRY_TRY(spry_gemv(Y, X, e->mats[i].w, e->p.weight_format, bias, M, K, N, e->p.n_threads));
        if (epi)
#pragma omp parallel for schedule(static) if (M >= 8)
            for (int64_t r = 0; r < M; r++) epi(&ep, Y, N, r, 1, 0, N);
    }
    return SPRY_OK;
}

spry_status spry_engine_init(spry_model *m, const spry_engine_params *pp, spry_engine **out) {
    *out                       = NULL;
    const spry_model_config *c = &m->cfg;
    spry_engine_params       p = *pp;
    if (c->arch == SPRY_ARCH_BERT)
        return spry_errorf(SPRY_ERR_UNSUPPORTED, "a BERT model is an encoder: it does not generate text (gpt2 or bloom)");
    if (p.n_ctx == 0) p.n_ctx = c->arch == SPRY_ARCH_GPT2 ? c->n_positions : 2048;
    if (p.block_tokens == 0) p.block_tokens = 16;
    if (p.max_seqs == 0) p.max_seqs = 32;
    if (p.max_batch_tokens == 0) p.max_batch_tokens = 512;
    if ((int)p.kv_type < SPRY_KV_AUTO || p.kv_type > SPRY_KV_F16)
        return spry_errorf(SPRY_ERR_ARG, "engine: kv_type %d is not a cache type (auto, f32 or f16)", (int)p.kv_type);
    if (p.kv_type == SPRY_KV_AUTO) p.kv_type = p.weight_format == SPRY_WFMT_F32 ? SPRY_KV_F32 : SPRY_KV_F16;
    if (p.n_ctx < 1 || (c->arch == SPRY_ARCH_GPT2 && p.n_ctx > c->n_positions))
        return spry_errorf(SPRY_ERR_ARG, "engine: n_ctx %lld must be in [1, %lld] for this model", (long long)p.n_ctx,
                           (long long)(c->arch == SPRY_ARCH_GPT2 ? c->n_positions : INT32_MAX));
    if (p.block_tokens < 1 || p.block_tokens > 4096)
        return spry_errorf(SPRY_ERR_ARG, "engine: block_tokens %lld must be in [1, 4096]", (long long)p.block_tokens);
    if (p.max_seqs < 1 || p.max_seqs > 4096)
        return spry_errorf(SPRY_ERR_ARG, "engine: max_seqs %d must be in [1, 4096]", p.max_seqs);
    if (p.max_batch_tokens < 1 || p.max_batch_tokens > 65536)
        return spry_errorf(SPRY_ERR_ARG, "engine: max_batch_tokens %lld must be in [1, 65536]",
                           (long long)p.max_batch_tokens);
    int64_t max_blocks = (p.n_ctx + p.block_tokens - 1) / p.block_tokens;
    if (p.n_blocks == 0) p.n_blocks = max_blocks * p.max_seqs;
    if (p.n_blocks < max_blocks || p.n_blocks > INT32_MAX)
        return spry_errorf(SPRY_ERR_ARG, "engine: n_blocks %lld must hold at least one full context (%lld blocks "
                           "of %lld tokens)", (long long)p.n_blocks, (long long)max_blocks, (long long)p.block_tokens);
    spry_engine *e = calloc(1, sizeof *e);
    if (!e) return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory");
    e->m = m, e->p = p, e->max_blocks = max_blocks, e->kv_f16 = p.kv_type == SPRY_KV_F16;
    e->L = c->n_layer, e->C = c->n_embd, e->H = c->n_head, e->D = c->n_embd / c->n_head, e->V = c->vocab_size;
    e->I = m->blocks[0].fc_w->shape[0];
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    size_t nb = (size_t)p.n_blocks, T = (size_t)p.max_batch_tokens, C = (size_t)e->C;
    for (e->n_bucket = 1; e->n_bucket < 2 * p.n_blocks; e->n_bucket *= 2) {}
    e->pool       = alloc_huge(kv_es(e) * nb * (size_t)(e->L * 2 * p.block_tokens) * C);
    e->ref        = calloc(nb, sizeof(int32_t));
    e->key        = calloc(nb, sizeof(uint64_t));
    e->free_stack = malloc(sizeof(int32_t) * nb);
    e->lru_prev   = malloc(sizeof(int32_t) * nb);
    e->lru_next   = malloc(sizeof(int32_t) * nb);
    e->chain      = malloc(sizeof(int32_t) * nb);
    e->bucket     = malloc(sizeof(int32_t) * (size_t)e->n_bucket);
    e->running    = calloc((size_t)p.max_seqs, sizeof(seq *));
    e->items      = calloc((size_t)p.max_seqs + 1, sizeof(batch_item));
    e->x          = malloc(sizeof(float) * T * C);
    e->h          = malloc(sizeof(float) * T * C);
    e->att        = malloc(sizeof(float) * T * C);
    e->qkv        = malloc(sizeof(float) * T * 3 * C);
    e->ff         = malloc(sizeof(float) * T * (size_t)e->I);
    size_t KX = (size_t)(e->I > e->C ? e->I : e->C), xb_bf16 = sizeof(uint16_t) * T * KX;
    size_t xb_q = (size_t)spry_qgemm_scratch_size((int64_t)T, (int64_t)KX);
    e->xb       = malloc(xb_q > xb_bf16 ? xb_q : xb_bf16);
    e->tok_pos    = malloc(sizeof(int64_t) * T);
    e->tok_id     = malloc(sizeof(int32_t) * T);
    e->tok_item   = malloc(sizeof(int32_t) * T);
    e->grp        = malloc(sizeof(int32_t) * (T + 1));
    // logits for at most one row per sequence of the step; sampling scratch (3V) + penalty counts (V)
    e->logits  = malloc(sizeof(float) * (size_t)(p.max_seqs + 1) * (size_t)e->V);
    e->scratch = malloc(sizeof(float) * 4 * (size_t)e->V);
    if (!e->pool || !e->ref || !e->key || !e->free_stack || !e->lru_prev || !e->lru_next || !e->chain || !e->bucket ||
        !e->running || !e->items || !e->x || !e->h || !e->att || !e->qkv || !e->ff || !e->tok_pos || !e->tok_id ||
        !e->tok_item || !e->grp || !e->logits || !e->scratch || !e->xb) {
        spry_engine_free(e);
        return spry_errorf(SPRY_ERR_NOMEM, "engine: out of memory for %lld KV blocks of %lld tokens (%.1f MiB)",
                           (long long)p.n_blocks, (long long)p.block_tokens,
                           (double)(nb * (size_t)(e->L * 2 * p.block_tokens) * C * kv_es(e)) / (1 << 20));
    }
    spry_status wst = convert_weights(e);
    if (wst) {
        spry_engine_free(e);
        return wst;
    }
    for (int64_t b = 0; b < p.n_blocks; b++) {
        e->free_stack[b] = (int32_t)(p.n_blocks - 1 - b);
        e->lru_prev[b] = e->lru_next[b] = e->chain[b] = -1;
    }
    e->n_free = p.n_blocks;
    e->lru_head = e->lru_tail = -1;
    for (int64_t i = 0; i < e->n_bucket; i++) e->bucket[i] = -1;
    *out = e;
    return SPRY_OK;
}

/* ---- the forward pass ---------------------------------------------------------------------- */

// Where head h of layer l of batch row r's sequence has its keys and values.
static spry_eng_kv head_kv(const spry_engine *e, int64_t l, int64_t h, int64_t r) {
    int64_t D = e->D, bt = e->p.block_tokens;
    return (spry_eng_kv){
        .table   = e->items[e->tok_item[r]].s->table,
        .kbase   = kv_half(e, 0, l, 0) + (size_t)(h * D * bt) * kv_es(e),
        .vbase   = kv_half(e, 0, l, 1) + (size_t)(h * bt * D) * kv_es(e),
        .bstride = (size_t)e->L * 2 * (size_t)(bt * e->C), // elements from one pool block to the next
        .bt      = bt,
        .vstride = D,
        .half    = e->kv_f16,
    };
}

// For head h of layer l and batch rows r0 .. r0 + G - 1 (one sequence, G <= SPRY_ENG_ATTEND_GROUP):
// att row (D) = softmax_j(q . k_j / sqrt(D) + slope (j - p)) v_j over positions j in [0, p] of the
// row's position p, read through the block table; one pass with a running maximum (online
// softmax), each row's bits independent of the group (spry_eng_attend_group).
static void attend(const spry_engine *e, int64_t l, int64_t h, int64_t r0, int G) {
    int64_t           D = e->D, C = e->C, H = e->H;
    bool              bloom = e->m->cfg.arch == SPRY_ARCH_BLOOM;
    const spry_eng_kv kv    = head_kv(e, l, h, r0);
    const float *q[SPRY_ENG_ATTEND_GROUP];
    int64_t      nk[SPRY_ENG_ATTEND_GROUP];
    float       *out[SPRY_ENG_ATTEND_GROUP];
    for (int g = 0; g < G; g++) {
        q[g]   = e->qkv + (r0 + g) * 3 * C + (bloom ? h * 3 * D : h * D);
        nk[g]  = e->tok_pos[r0 + g] + 1;
        out[g] = e->att + (r0 + g) * C + h * D;
    }
    spry_eng_attend_group(G, q, nk, out, &kv, D, 1.0f / sqrtf((float)D), bloom ? spry_alibi_slope(h, H) : 0.0f);
}

// The keys and values of batch rows r .. r + n - 1, head h, layer l (from e->qkv) into their slots:
// consecutive positions of one sequence in one block (n <= 16).
static void store_kv(const spry_engine *e, int64_t l, int64_t r, int64_t n, int64_t h) {
    const int64_t D = e->D, C = e->C, bt = e->p.block_tokens, p = e->tok_pos[r], t = p % bt;
    const bool    bloom = e->m->cfg.arch == SPRY_ARCH_BLOOM;
    const int32_t blk   = e->items[e->tok_item[r]].s->table[p / bt];
    const float  *k = e->qkv + r * 3 * C + (bloom ? h * 3 * D + D : C + h * D);
    const float  *v = e->qkv + r * 3 * C + (bloom ? h * 3 * D + 2 * D : 2 * C + h * D);
    const size_t  es = kv_es(e);
    char *kd = kv_half(e, blk, l, 0) + (size_t)(h * D * bt + t) * es; // keys d-major
    char *vd = kv_half(e, blk, l, 1) + (size_t)((h * bt + t) * D) * es; // values (bt, D)
    spry_eng_store_keys(k, (size_t)(3 * C), n, kd, bt, D, e->kv_f16);
    for (int64_t i = 0; i < n; i++) {
        char *vi = vd + (size_t)(i * D) * es;
        if (e->kv_f16) spry_convert_f32_to_f16(v + i * 3 * C, (uint16_t *)vi, D);
        else memcpy(vi, v + i * 3 * C, sizeof(float) * (size_t)D);
    }
}

// The keys and values of attention group k (its consecutive rows), head h, layer l: runs of rows
// cut where the sequence's positions cross a block.
static void store_group_kv(const spry_engine *e, int64_t l, int64_t k, int64_t h) {
    const int64_t bt = e->p.block_tokens;
    for (int64_t r = e->grp[k], end = e->grp[k + 1]; r < end;) {
        int64_t room = bt - e->tok_pos[r] % bt, n = end - r < room ? end - r : room;
        store_kv(e, l, r, n, h);
        r += n;
    }
}

// Runs the model over the rows of the batch (e->tok_id / tok_pos / tok_item, n rows), storing
// keys and values in the sequences' blocks, and writes the logits of each item that asks for them
// to e->logits (one row per such item, in item order).
static spry_status forward(spry_engine *e, int64_t n) {
    const spry_model        *m = e->m;
    const spry_model_config *c = &m->cfg;
    int64_t C = e->C, H = e->H, I = e->I;
    bool    bloom = c->arch == SPRY_ARCH_BLOOM;
    float   eps   = c->layer_norm_eps;
    const float *wte = m->wte->data;
    // embeddings
#pragma omp parallel for schedule(static) if (n >= 8)
    for (int64_t r = 0; r < n; r++) {
        float       *x  = e->x + r * C;
        const float *te = wte + (int64_t)e->tok_id[r] * C;
        if (bloom) {
            spry_eng_layernorm(te, m->emb_ln_w->data, m->emb_ln_b->data, x, C, eps);
        } else {
            const float *pe = (const float *)m->wpe->data + e->tok_pos[r] * C;
            for (int64_t i = 0; i < C; i++) x[i] = te[i] + pe[i];
        }
    }
    // attention groups: up to SPRY_ENG_ATTEND_GROUP consecutive rows of the same item
    int64_t ng = 0;
    for (int64_t r = 0; r < n; r++)
        if (r == 0 || e->tok_item[r] != e->tok_item[r - 1] || r - e->grp[ng - 1] == SPRY_ENG_ATTEND_GROUP)
            e->grp[ng++] = (int32_t)r;
    e->grp[ng] = (int32_t)n;
    for (int64_t l = 0; l < e->L; l++) {
        const spry_block *b = &m->blocks[l];
#pragma omp parallel for schedule(static) if (n >= 8)
        for (int64_t r = 0; r < n; r++)
            spry_eng_layernorm(e->x + r * C, b->ln1_w->data, b->ln1_b->data, e->h + r * C, C, eps);
        SPRY_TRY(linear(e, l * 4 + 0, e->h, n, C, b->qkv_b->data, 3 * C, e->qkv, (epilogue){EPI_NONE, NULL}));
        // keys and values of the new rows into their blocks (each row and head its own slots), then
        // attention: groups of consecutive rows of one sequence, per head (head-major: a head's keys
        // and values stay in cache); one team for both
        if (ng == n) { // one row per sequence (decode): a row's head reads only what it just stored
#pragma omp parallel
            {
                int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
                int64_t lo = n * H * t / T, hi = n * H * (t + 1) / T;
                for (int64_t rh = lo; rh < hi; rh++) {
                    if (rh + 1 < hi) { // the next head's first keys come in while this one computes
                        spry_eng_kv nx = head_kv(e, l, (rh + 1) % H, (rh + 1) / H);
                        spry_eng_attend_prefetch(&nx, e->tok_pos[(rh + 1) / H] + 1, e->D);
                    }
                    store_kv(e, l, rh / H, 1, rh % H);
                    attend(e, l, rh % H, rh / H, 1);
                }
            }
        } else {
#pragma omp parallel
            {
#pragma omp for schedule(static)
                for (int64_t gh = 0; gh < ng * H; gh++) store_group_kv(e, l, gh / H, gh % H);
#pragma omp for schedule(dynamic, 1)
                for (int64_t gh = 0; gh < ng * H; gh++) {
                    int64_t k = gh % ng;
                    attend(e, l, gh / ng, e->grp[k], (int)(e->grp[k + 1] - e->grp[k]));
                }
            }
        }
        // x += the attention's projection, fused
        SPRY_TRY(linear(e, l * 4 + 1, e->att, n, C, b->proj_b->data, C, e->h, (epilogue){EPI_RESIDUAL, e->x}));
#pragma omp parallel for schedule(static) if (n >= 8)
        for (int64_t r = 0; r < n; r++)
            spry_eng_layernorm(e->x + r * C, b->ln2_w->data, b->ln2_b->data, e->h + r * C, C, eps);
        SPRY_TRY(linear(e, l * 4 + 2, e->h, n, C, b->fc_b->data, I, e->ff, (epilogue){EPI_GELU, NULL}));
        SPRY_TRY(linear(e, l * 4 + 3, e->ff, n, I, b->fc2_b->data, C, e->h, (epilogue){EPI_RESIDUAL, e->x}));
    }
    // final LayerNorm and the LM head on the rows that end an item asking for logits
    int64_t k = 0;
    for (int64_t r = 0; r < n; r++) {
        const batch_item *it = &e->items[e->tok_item[r]];
        if (!it->all && (!it->logits || e->tok_pos[r] != it->pos0 + it->n - 1)) continue;
        spry_eng_layernorm(e->x + r * C, m->lnf_w->data, m->lnf_b->data, e->h + k * C, C, eps);
        k++;
    }
    return k ? linear(e, e->L * 4, e->h, k, C, NULL, e->V, e->logits, (epilogue){EPI_NONE, NULL}) : SPRY_OK;
}

/* ---- the step ------------------------------------------------------------------------------ */

static bool is_stop(const seq *s, int32_t t) {
    for (int i = 0; i < s->n_stop; i++)
        if (s->stop[i] == t) return true;
    return false;
}

// Removes running[i] (keeps the order).
static void running_remove(spry_engine *e, int i) {
    memmove(e->running + i, e->running + i + 1, sizeof(seq *) * (size_t)(e->n_running - i - 1));
    e->n_running--;
}

static void finish(spry_engine *e, seq *s, int32_t token, spry_finish f) {
    push_event(e, s, token, f);
    seq_drop_blocks(e, s);
    e->st.requests_finished++;
}

// Preempts the most recently admitted running sequence other than `keep` (or keep itself if it is
// the only one): blocks freed, back to the head of the queue, recomputed later.
static seq *preempt_newest(spry_engine *e) {
    if (e->n_running == 0) return NULL;
    seq *v = e->running[e->n_running - 1];
    running_remove(e, e->n_running - 1);
    seq_drop_blocks(e, v);
    v->state = SEQ_WAITING;
    v->next  = e->wait_head;
    e->wait_head = v;
    if (!e->wait_tail) e->wait_tail = v;
    e->st.waiting++;
    e->st.preemptions++;
    return v;
}

// Reuses cached blocks for the leading full blocks of s's tokens (at least one token is left to
// compute, whose logits start generation).
static void prefix_lookup(spry_engine *e, seq *s) {
    if (!e->p.prefix_cache) return;
    int64_t  bt = e->p.block_tokens, full = (s->n_tokens - 1) / bt;
    uint64_t k  = 0;
    for (int64_t i = 0; i < full; i++) {
        e->st.prefix_queries++;
        k         = block_key(k, s->tokens + i * bt, bt);
        int32_t b = key_find(e, k);
        if (b < 0) {
            e->st.prefix_queries += full - i - 1;
            break;
        }
        if (e->ref[b]++ == 0) lru_remove(e, b);
        s->table[s->n_table++] = b;
        s->n_cached += bt, s->n_keyed++, s->last_key = k;
        e->st.prefix_hits++;
    }
}

// Builds this step's batch under the lock: cancellations, decode tokens, prompt chunks, admissions.
static int64_t schedule(spry_engine *e) {
    int64_t budget = e->p.max_batch_tokens, rows = 0;
    e->n_items     = 0;
    // cancelled sequences leave first
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->cancel) {
            seq *s = e->running[i];
            finish(e, s, -1, SPRY_FINISH_CANCELLED);
            running_remove(e, i--);
            seq_free(s);
        }
    for (seq **pp = &e->wait_head; *pp;) {
        seq *s = *pp;
        if (!s->cancel) {
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        e->st.waiting--;
        finish(e, s, -1, SPRY_FINISH_CANCELLED);
        seq_free(s);
    }
    e->wait_tail = NULL;
    for (seq *s = e->wait_head; s; s = s->next) e->wait_tail = s;
    // running sequences in admission order: one token for those generating, chunks for the others
    for (int i = 0; i < e->n_running && budget > 0; i++) {
        seq    *s    = e->running[i];
        int64_t left = s->n_tokens - s->n_cached, n = left < budget ? left : budget;
        while (!seq_reserve(e, s, s->n_cached + n)) {
            if (left > 1) { // a prompt chunk waits for blocks instead of evicting anyone
                n = 0;
                break;
            }
            seq *v = preempt_newest(e);
            if (v == s) {
                n = 0;
                break;
            }
        }
        if (i >= e->n_running || e->running[i] != s || n == 0) continue;
        e->items[e->n_items++] = (batch_item){s, s->n_cached, n, n == left, false};
        budget -= n;
    }
    // admissions in arrival order while slots, budget and blocks allow
    while (e->wait_head && e->n_running < e->p.max_seqs && budget > 0) {
        seq *s = e->wait_head;
        prefix_lookup(e, s);
        int64_t left = s->n_tokens - s->n_cached, n = left < budget ? left : budget;
        if (!seq_reserve(e, s, s->n_cached + n)) {
            seq_drop_blocks(e, s); // try again when blocks come back
            break;
        }
        e->wait_head = s->next;
        if (!e->wait_head) e->wait_tail = NULL;
        s->next  = NULL;
        s->state = SEQ_RUNNING;
        s->admit_order           = e->next_admit++;
        e->running[e->n_running++] = s;
        e->st.waiting--;
        e->items[e->n_items++] = (batch_item){s, s->n_cached, n, n == left, false};
        budget -= n;
    }
    for (int it = 0; it < e->n_items; it++) {
        const batch_item *b = &e->items[it];
        for (int64_t j = 0; j < b->n; j++, rows++) {
            e->tok_id[rows]   = b->s->tokens[b->pos0 + j];
            e->tok_pos[rows]  = b->pos0 + j;
            e->tok_item[rows] = it;
        }
    }
    return rows;
}

spry_status spry_engine_step(spry_engine *e, bool *busy) {
    pthread_mutex_lock(&e->mu);
    e->n_events  = 0;
    int64_t rows = schedule(e);
    pthread_mutex_unlock(&e->mu);
    int saved_threads = omp_get_max_threads();
    if (e->p.n_threads > 0) omp_set_num_threads(e->p.n_threads);
    spry_status fst = rows > 0 ? forward(e, rows) : SPRY_OK;
    if (e->p.n_threads > 0) omp_set_num_threads(saved_threads);
    pthread_mutex_lock(&e->mu);
    if (fst) { // the step's sequences end with ERROR; their blocks come back
        char msg[512];
        snprintf(msg, sizeof msg, "%s", spry_last_error());
        for (int it = 0; it < e->n_items; it++) {
            seq *s = e->items[it].s;
            finish(e, s, -1, SPRY_FINISH_ERROR);
            for (int i = 0; i < e->n_running; i++)
                if (e->running[i] == s) running_remove(e, i);
            seq_free(s);
        }
        e->n_items = 0;
        spry_errorf(fst, "%s", msg);
    }
    int64_t k = 0;
    for (int it = 0; it < e->n_items; it++) {
        batch_item *b = &e->items[it];
        seq        *s = b->s;
        s->n_cached   = b->pos0 + b->n;
        if (b->pos0 < s->n_prompt) e->st.prompt_tokens += (s->n_prompt < s->n_cached ? s->n_prompt : s->n_cached) - b->pos0;
        seq_key_blocks(e, s);
        if (!b->logits) continue;
        float *lg = e->logits + (k++) * e->V;
        spry_sample_penalize(lg, e->V, s->tokens, s->n_tokens, s->n_gen, &s->sp, e->scratch + 3 * e->V);
        int32_t tok = spry_sample(lg, e->V, &s->sp, (uint64_t)s->n_tokens, e->scratch);
        s->tokens[s->n_tokens++] = tok;
        s->n_gen++;
        e->st.generated_tokens++;
        spry_finish f = is_stop(s, tok) ? SPRY_FINISH_STOP
                      : s->n_gen >= s->max_tokens || s->n_tokens >= e->p.n_ctx ? SPRY_FINISH_LENGTH
                                                                                : SPRY_FINISH_NONE;
        if (f == SPRY_FINISH_NONE) {
            push_event(e, s, tok, f);
            continue;
        }
        finish(e, s, tok, f);
        for (int i = 0; i < e->n_running; i++)
            if (e->running[i] == s) running_remove(e, i);
        b->s = NULL;
        seq_free(s);
    }
    if (rows > 0) e->st.steps++; // model iterations (idle wake-ups do not count)
    *busy = e->n_running > 0 || e->wait_head != NULL;
    int n_ev = e->n_events;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n_ev; i++) // callbacks run unlocked: they may cancel or submit
        if (e->events[i].cb) e->events[i].cb(e->events[i].user, e->events[i].id, e->events[i].token, e->events[i].finish);
    return fst;
}

spry_status spry_engine_score(spry_engine *e, const int32_t *ids, int64_t n, float *logits) {
    if (n < 1 || n > e->p.n_ctx)
        return spry_errorf(SPRY_ERR_ARG, "score: %lld tokens; must be in [1, %lld]", (long long)n, (long long)e->p.n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->V)
            return spry_errorf(SPRY_ERR_ARG, "score: token %d at %lld is not in the vocabulary of %lld", ids[i],
                               (long long)i, (long long)e->V);
    seq s = {.n_tokens = n, .n_prompt = n, .cap = n};
    s.tokens = (int32_t *)ids; // read only here
    s.table  = malloc(sizeof(int32_t) * (size_t)e->max_blocks);
    if (!s.table) return spry_errorf(SPRY_ERR_NOMEM, "score: out of memory");
    pthread_mutex_lock(&e->mu);
    bool ok = seq_reserve(e, &s, n);
    pthread_mutex_unlock(&e->mu);
    spry_status st = ok ? SPRY_OK : spry_errorf(SPRY_ERR_NOMEM, "score: no free KV blocks for %lld tokens", (long long)n);
    // chunks no larger than the logits buffer (max_seqs + 1 rows)
    int64_t chunk = e->p.max_batch_tokens < e->p.max_seqs + 1 ? e->p.max_batch_tokens : e->p.max_seqs + 1;
    for (int64_t p0 = 0; ok && p0 < n; p0 += chunk) {
        int64_t k = n - p0 < chunk ? n - p0 : chunk;
        e->n_items  = 1;
        e->items[0] = (batch_item){&s, p0, k, true, true};
        for (int64_t j = 0; j < k; j++) e->tok_id[j] = ids[p0 + j], e->tok_pos[j] = p0 + j, e->tok_item[j] = 0;
        spry_status fst = forward(e, k);
        if (fst) {
            st = fst;
            break;
        }
        memcpy(logits + p0 * e->V, e->logits, sizeof(float) * (size_t)(k * e->V));
    }
    e->n_items = 0;
    pthread_mutex_lock(&e->mu);
    for (int64_t i = 0; i < s.n_table; i++) block_release(e, s.table[i]);
    pthread_mutex_unlock(&e->mu);
    free(s.table);
    return st;
}
