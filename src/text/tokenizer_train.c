/*
 * tokenizer_train.c -- learning a byte-level BPE (HF tokenizers' BpeTrainer with the ByteLevel
 * pre-tokenizer; Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
 * Units"; GPT-2's byte-level variant).
 *
 * 1. Count pre-tokens (GPT-2 regex, Unicode whitespace) over all texts, with the special tokens'
 *    occurrences cut out; threads count disjoint chunks (cut at safe places) and the maps are
 *    merged, so the counts do not depend on the thread count.
 * 2. Each unique pre-token ("word") is a sequence of token ids, starting with its bytes. Pair
 *    counts (weighted by word count) and, per pair, the words it occurs in are kept up to date
 *    incrementally: merging (a, b) -> X in a word changes only the pairs next to each merged
 *    occurrence (HF's Word::merge), so one merge costs time proportional to the words that hold
 *    (a, b), not to the corpus.
 * 3. A max-heap on (count, then smallest (a, b)) with lazy updates: a popped entry whose count is
 *    stale is pushed back with the current count (counts of existing pairs only fall; pairs with
 *    the new token are pushed once, after the merge step that creates them).
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "spry/log.h"
#include "text/tokenizer_internal.h"
#include "text/unicode.h"

spry_tokenizer_train_params spry_tokenizer_train_params_default(void) {
    return (spry_tokenizer_train_params){
        .vocab_size = 4096, .special = NULL, .n_special = 0, .min_frequency = 2, .n_threads = 1,
        .verbose = false};
}

// ---------------------------------------------------------------------------------------------
// Word counts

typedef struct word_slot {
    uint64_t h; // 0 = empty
    uint64_t off;
    uint32_t len;
    int64_t  count;
} word_slot;

typedef struct word_map {
    word_slot *slots;
    uint64_t   mask;
    int64_t    n;
    uint8_t   *blob;
    size_t     blob_len, blob_cap;
    bool       oom;
} word_map;

static void wm_free(word_map *m) {
    free(m->slots);
    free(m->blob);
    memset(m, 0, sizeof *m);
}

static bool wm_grow(word_map *m) {
    uint64_t   cap = m->slots ? (m->mask + 1) * 2 : 1 << 14;
    word_slot *s = calloc(cap, sizeof *s);
    if (!s) return false;
    for (uint64_t i = 0; m->slots && i <= m->mask; i++) {
        if (!m->slots[i].h) continue;
        uint64_t j = m->slots[i].h & (cap - 1);
        while (s[j].h) j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s, m->mask = cap - 1;
    return true;
}

static void wm_add(word_map *m, const uint8_t *w, size_t n, int64_t count) {
    if (m->oom) return;
    if ((!m->slots || (uint64_t)(m->n + 1) * 2 > m->mask + 1) && !wm_grow(m)) {
        m->oom = true;
        return;
    }
    uint64_t h = spry_tok_hash(w, n) | 1;
    uint64_t i = h & m->mask;
    for (;; i = (i + 1) & m->mask) {
        word_slot *e = &m->slots[i];
        if (!e->h) break;
        if (e->h == h && e->len == n && !memcmp(m->blob + e->off, w, n)) {
            e->count += count;
            return;
        }
    }
    if (m->blob_len + n > m->blob_cap) {
        size_t cap = m->blob_cap ? m->blob_cap : 1 << 16;
        while (cap < m->blob_len + n) cap *= 2;
        uint8_t *b = realloc(m->blob, cap);
        if (!b) {
            m->oom = true;
            return;
        }
        m->blob = b, m->blob_cap = cap;
    }
    memcpy(m->blob + m->blob_len, w, n);
    m->slots[i] = (word_slot){.h = h, .off = m->blob_len, .len = (uint32_t)n, .count = count};
    m->blob_len += n;
    m->n++;
}

// A piece of input text to count.
typedef struct span {
    const uint8_t *s;
    size_t         n;
} span;

typedef struct span_list {
    span  *v;
    size_t n, cap;
} span_list;

static bool spans_push(span_list *l, const uint8_t *s, size_t n) {
    if (n == 0) return true;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        span  *p = realloc(l->v, cap * sizeof *p);
        if (!p) return false;
        l->v = p, l->cap = cap;
    }
    l->v[l->n++] = (span){s, n};
    return true;
}

// Cuts text into spans: special tokens removed (leftmost-longest), long stretches cut at safe
// places into chunks of about `chunk` bytes.
static bool make_spans(const uint8_t *s, size_t n, const char *const *special, int n_special,
                       size_t chunk, span_list *out) {
    size_t start = 0, i = 0;
    while (i <= n) {
        size_t hit = 0;
        if (i < n)
            for (int k = 0; k < n_special; k++) {
                size_t l = strlen(special[k]);
                if (l > hit && l <= n - i && !memcmp(s + i, special[k], l)) hit = l;
            }
        if (i < n && !hit) {
            i++;
            continue;
        }
        // [start, i) is text: cut it.
        size_t a = start;
        while (a < i) {
            size_t q = a + chunk;
            while (q < i && !spry_pretok_safe_cut(s, i, q)) q++;
            if (q > i) q = i;
            if (!spans_push(out, s + a, q - a)) return false;
            a = q;
        }
        if (i == n) break;
        i += hit;
        start = i;
    }
    return true;
}

static void count_span(word_map *m, const span *sp) {
    for (size_t pos = 0; pos < sp->n;) {
        size_t end = spry_pretok_gpt2_next(sp->s, sp->n, pos, SPRY_UC_WS_UNI);
        wm_add(m, sp->s + pos, end - pos, 1);
        pos = end;
    }
}

// ---------------------------------------------------------------------------------------------
// The merge loop

typedef struct pair_info {
    int32_t  a, b;
    int64_t  count;
    int32_t *where; // word indices (may repeat; a word without the pair is skipped)
    int32_t  n_where, cap_where;
    int32_t  stamp; // last merge step that raised the count (+1)
} pair_info;

typedef struct heap_entry {
    int64_t count;
    int32_t a, b;
} heap_entry;

typedef struct trainer {
    // words
    int32_t *sym;   // all words' symbols
    int64_t *woff;  // [n_words] start in sym
    int32_t *wlen;  // [n_words] current length
    int64_t *wcnt;  // [n_words] occurrences
    int32_t  n_words;
    // pairs
    pair_info *pairs;
    int32_t    n_pairs, cap_pairs;
    int32_t   *ptab; // open addressing: pair index, -1 empty
    uint64_t   pmask;
    // heap
    heap_entry *heap;
    size_t      n_heap, cap_heap;
    // tokens: bytes of each id
    uint8_t *tbytes;
    int64_t *toff;
    int32_t *tlen;
    int32_t  n_tok, cap_tok;
    // token string (bytes) -> id
    int32_t *ttab;
    uint64_t tmask;
    // merges
    int32_t *merges; // [2 * n] (a, b)
    int32_t  n_merges, cap_merges;
    int32_t *touched; // pairs whose count rose in the current step
    int32_t  n_touched, cap_touched, step;
    size_t   tbytes_len, tbytes_cap;
    int32_t  n_special;
} trainer;

static inline uint64_t pk(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }
static inline uint64_t ph(uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    return k ^ (k >> 33);
}

static bool ptab_grow(trainer *T) {
    uint64_t cap = T->ptab ? (T->pmask + 1) * 2 : 1 << 16;
    int32_t *tab = malloc(cap * sizeof *tab);
    if (!tab) return false;
    for (uint64_t i = 0; i < cap; i++) tab[i] = -1;
    for (int32_t p = 0; p < T->n_pairs; p++) {
        uint64_t j = ph(pk(T->pairs[p].a, T->pairs[p].b)) & (cap - 1);
        while (tab[j] >= 0) j = (j + 1) & (cap - 1);
        tab[j] = p;
    }
    free(T->ptab);
    T->ptab = tab, T->pmask = cap - 1;
    return true;
}

// Index of pair (a, b), created with count 0 when absent (-1 on OOM).
static int32_t pair_get(trainer *T, int32_t a, int32_t b) {
    uint64_t j = ph(pk(a, b)) & T->pmask;
    for (;; j = (j + 1) & T->pmask) {
        int32_t p = T->ptab[j];
        if (p < 0) break;
        if (T->pairs[p].a == a && T->pairs[p].b == b) return p;
    }
    if ((uint64_t)(T->n_pairs + 1) * 2 > T->pmask + 1) {
        if (!ptab_grow(T)) return -1;
        return pair_get(T, a, b);
    }
    if (T->n_pairs == T->cap_pairs) {
        int32_t    cap = T->cap_pairs ? T->cap_pairs * 2 : 1 << 14;
        pair_info *np = realloc(T->pairs, (size_t)cap * sizeof *np);
        if (!np) return -1;
        T->pairs = np, T->cap_pairs = cap;
    }
    int32_t p = T->n_pairs++;
    T->pairs[p] = (pair_info){.a = a, .b = b};
    T->ptab[j] = p;
    return p;
}

static bool where_add(pair_info *pi, int32_t w) {
    if (pi->n_where && pi->where[pi->n_where - 1] == w) return true;
    if (pi->n_where == pi->cap_where) {
        int32_t  cap = pi->cap_where ? pi->cap_where * 2 : 4;
        int32_t *p = realloc(pi->where, (size_t)cap * sizeof *p);
        if (!p) return false;
        pi->where = p, pi->cap_where = cap;
    }
    pi->where[pi->n_where++] = w;
    return true;
}

// Heap order: higher count first; equal counts: smaller (a, b) first.
static inline bool heap_before(const heap_entry *x, const heap_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static bool heap_push(trainer *T, heap_entry e) {
    if (T->n_heap == T->cap_heap) {
        size_t      cap = T->cap_heap ? T->cap_heap * 2 : 1 << 14;
        heap_entry *h = realloc(T->heap, cap * sizeof *h);
        if (!h) return false;
        T->heap = h, T->cap_heap = cap;
    }
    size_t i = T->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_before(&e, &T->heap[p])) break;
        T->heap[i] = T->heap[p], i = p;
    }
    T->heap[i] = e;
    return true;
}

static heap_entry heap_pop(trainer *T) {
    heap_entry top = T->heap[0], v = T->heap[--T->n_heap];
    size_t     i = 0, n = T->n_heap;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n) break;
        size_t r = l + 1, k = r < n && heap_before(&T->heap[r], &T->heap[l]) ? r : l;
        if (!heap_before(&T->heap[k], &v)) break;
        T->heap[i] = T->heap[k], i = k;
    }
    if (n) T->heap[i] = v;
    return top;
}

static bool ttab_insert(trainer *T, int32_t id);

static bool ttab_grow(trainer *T) {
    uint64_t cap = T->ttab ? (T->tmask + 1) * 2 : 1 << 13;
    int32_t *tab = malloc(cap * sizeof *tab);
    if (!tab) return false;
    for (uint64_t i = 0; i < cap; i++) tab[i] = -1;
    free(T->ttab);
    T->ttab = tab, T->tmask = cap - 1;
    for (int32_t id = T->n_special; id < T->n_tok; id++)
        if (!ttab_insert(T, id)) return false;
    return true;
}

static int32_t ttab_find(const trainer *T, const uint8_t *s, size_t n) {
    for (uint64_t j = spry_tok_hash(s, n) & T->tmask;; j = (j + 1) & T->tmask) {
        int32_t id = T->ttab[j];
        if (id < 0) return -1;
        if ((size_t)T->tlen[id] == n && !memcmp(T->tbytes + T->toff[id], s, n)) return id;
    }
}

static bool ttab_insert(trainer *T, int32_t id) {
    const uint8_t *s = T->tbytes + T->toff[id];
    size_t         n = (size_t)T->tlen[id];
    uint64_t       j = spry_tok_hash(s, n) & T->tmask;
    while (T->ttab[j] >= 0) j = (j + 1) & T->tmask;
    T->ttab[j] = id;
    return true;
}

// Adds a token with bytes s[0..n) (the id of an equal existing indexed token is returned
// instead). Special tokens are not indexed: they are matched by content, not by bytes.
static int32_t tok_add(trainer *T, const uint8_t *s, size_t n, bool index) {
    if (index && T->ttab) {
        int32_t id = ttab_find(T, s, n);
        if (id >= 0) return id;
    }
    if (T->n_tok == T->cap_tok) {
        int32_t cap = T->cap_tok ? T->cap_tok * 2 : 1024;
        int64_t *o = realloc(T->toff, (size_t)cap * sizeof *o);
        if (!o) return -1;
        T->toff = o;
        int32_t *l = realloc(T->tlen, (size_t)cap * sizeof *l);
        if (!l) return -1;
        T->tlen = l, T->cap_tok = cap;
    }
    if (T->tbytes_len + n > T->tbytes_cap) {
        size_t cap = T->tbytes_cap ? T->tbytes_cap : 1 << 16;
        while (cap < T->tbytes_len + n) cap *= 2;
        uint8_t *b = realloc(T->tbytes, cap);
        if (!b) return -1;
        T->tbytes = b, T->tbytes_cap = cap;
    }
    // s may point into tbytes: copy with memmove semantics before the length changes.
    memmove(T->tbytes + T->tbytes_len, s, n);
    int32_t id = T->n_tok++;
    T->toff[id] = (int64_t)T->tbytes_len, T->tlen[id] = (int32_t)n;
    T->tbytes_len += n;
    if (!index) return id;
    if (!T->ttab || (uint64_t)T->n_tok * 2 > T->tmask + 1) {
        if (!ttab_grow(T)) return -1;
    } else {
        ttab_insert(T, id);
    }
    return id;
}

static void trainer_free(trainer *T) {
    free(T->sym), free(T->woff), free(T->wlen), free(T->wcnt);
    for (int32_t p = 0; p < T->n_pairs; p++) free(T->pairs[p].where);
    free(T->pairs), free(T->ptab), free(T->heap);
    free(T->tbytes), free(T->toff), free(T->tlen), free(T->ttab), free(T->merges), free(T->touched);
}

// Applies count delta d * (word count) to pair (x, y); registers word w for positive deltas.
static bool change(trainer *T, int32_t x, int32_t y, int d, int32_t w) {
    int32_t p = pair_get(T, x, y);
    if (p < 0) return false;
    pair_info *pi = &T->pairs[p];
    pi->count += d * T->wcnt[w];
    if (d < 0) return true;
    if (!where_add(pi, w)) return false;
    if (pi->stamp != T->step + 1) {
        pi->stamp = T->step + 1;
        if (T->n_touched == T->cap_touched) {
            int32_t  cap = T->cap_touched ? T->cap_touched * 2 : 1024;
            int32_t *t2 = realloc(T->touched, (size_t)cap * sizeof *t2);
            if (!t2) return false;
            T->touched = t2, T->cap_touched = cap;
        }
        T->touched[T->n_touched++] = p;
    }
    return true;
}

// Merges every non-overlapping (a, b) in word w, left to right, into x (HF Word::merge).
static bool merge_word(trainer *T, int32_t w, int32_t a, int32_t b, int32_t x) {
    int32_t *s = T->sym + T->woff[w];
    int32_t  n = T->wlen[w], o = 0;
    for (int32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (o > 0) {
                if (!change(T, s[o - 1], a, -1, w) || !change(T, s[o - 1], x, +1, w)) return false;
            }
            if (i + 2 < n) {
                if (!change(T, b, s[i + 2], -1, w) || !change(T, x, s[i + 2], +1, w)) return false;
            }
            s[o++] = x;
            i += 2;
        } else {
            s[o++] = s[i++];
        }
    }
    T->wlen[w] = o;
    return true;
}

typedef struct word_ref {
    const uint8_t *s;
    uint32_t       len;
    int64_t        count;
} word_ref;

static int cmp_word(const void *x, const void *y) {
    const word_ref *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int    c = memcmp(a->s, b->s, n);
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

// The special token whose content equals the byte-to-unicode key of bytes s[0..n), or -1
// (HF's trainer then reuses that token's id).
static int32_t special_with_key(const spry_tokenizer_train_params *p, const uint8_t *s, size_t n) {
    for (int i = 0; i < p->n_special; i++) {
        const char *c = p->special[i];
        size_t      o = 0;
        bool        eq = true;
        for (size_t k = 0; k < n && eq; k++) {
            char buf[2];
            int  l = spry_byte_char(s[k], buf);
            eq = !strncmp(c + o, buf, (size_t)l) && c[o] != 0;
            o += (size_t)l;
        }
        if (eq && c[o] == 0) return i;
    }
    return -1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static spry_status build_result(trainer *T, const spry_tokenizer_train_params *p, spry_tokenizer **out);

spry_status spry_tokenizer_train(const char *const *texts, const size_t *lens, int n_texts,
                                 const spry_tokenizer_train_params *p, spry_tokenizer **out) {
    *out = NULL;
    spry_tokenizer_train_params dp = spry_tokenizer_train_params_default();
    if (!p) p = &dp;
    if (p->n_special < 0 || (p->n_special > 0 && !p->special))
        return spry_errorf(SPRY_ERR_ARG, "tokenizer train: n_special = %d without special tokens", p->n_special);
    for (int i = 0; i < p->n_special; i++) {
        if (!p->special[i] || !p->special[i][0])
            return spry_errorf(SPRY_ERR_ARG, "tokenizer train: special token %d is empty", i);
        for (int j = 0; j < i; j++)
            if (!strcmp(p->special[i], p->special[j]))
                return spry_errorf(SPRY_ERR_ARG, "tokenizer train: special token \"%s\" is given twice",
                                   p->special[i]);
    }
    if (p->vocab_size < p->n_special + 256)
        return spry_errorf(SPRY_ERR_ARG,
                           "tokenizer train: vocab_size %d is less than %d special tokens + 256 byte tokens",
                           p->vocab_size, p->n_special);
    double t0 = now_s();
    int    nt = p->n_threads;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
#else
    nt = 1;
#endif
    if (nt < 1) nt = 1;

    // 1. Count words.
    size_t total = 0;
    for (int i = 0; i < n_texts; i++) total += lens[i];
    size_t    chunk = total / ((size_t)nt * 8) + (1 << 16);
    span_list spans = {0};
    for (int i = 0; i < n_texts; i++)
        if (!make_spans((const uint8_t *)texts[i], lens[i], p->special, p->n_special, chunk, &spans)) {
            free(spans.v);
            return spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
        }
    word_map *maps = calloc((size_t)nt, sizeof *maps);
    if (!maps) {
        free(spans.v);
        return spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (size_t i = 0; i < spans.n; i++) {
#ifdef _OPENMP
        int th = omp_get_thread_num();
#else
        int th = 0;
#endif
        count_span(&maps[th], &spans.v[i]);
    }
    free(spans.v);
    word_map all = maps[0];
    for (int k = 1; k < nt; k++) {
        for (uint64_t i = 0; maps[k].slots && i <= maps[k].mask; i++) {
            const word_slot *e = &maps[k].slots[i];
            if (e->h) wm_add(&all, maps[k].blob + e->off, e->len, e->count);
        }
        all.oom |= maps[k].oom;
        wm_free(&maps[k]);
    }
    free(maps);
    if (all.oom) {
        wm_free(&all);
        return spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory counting words");
    }
    // Unique words in byte order (deterministic layout).
    word_ref *words = malloc((size_t)(all.n ? all.n : 1) * sizeof *words);
    if (!words) {
        wm_free(&all);
        return spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    }
    int64_t nw = 0, nsym = 0;
    for (uint64_t i = 0; all.slots && i <= all.mask; i++)
        if (all.slots[i].h) {
            words[nw++] = (word_ref){all.blob + all.slots[i].off, all.slots[i].len, all.slots[i].count};
            nsym += all.slots[i].len;
        }
    if (nw) qsort(words, (size_t)nw, sizeof *words, cmp_word);
    if (p->verbose)
        spry_log(SPRY_LOG_INFO, "tokenizer train: %zu bytes, %lld unique pre-tokens (%.2f s)", total,
                 (long long)nw, now_s() - t0);

    // 2. Tokens: specials, then the 256 bytes by the code point of their character.
    trainer T = {.n_special = p->n_special};
    spry_status st = SPRY_OK;
    for (int i = 0; i < p->n_special && st == SPRY_OK; i++)
        if (tok_add(&T, (const uint8_t *)p->special[i], strlen(p->special[i]), false) != i)
            st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    int32_t byte_tok[256];
    for (uint32_t cp = 0; cp < 0x144 && st == SPRY_OK; cp++) {
        int b = spry_cp_to_byte(cp);
        if (b < 0) continue;
        uint8_t c = (uint8_t)b;
        int32_t sp = special_with_key(p, &c, 1);
        if (sp >= 0) {
            st = spry_errorf(SPRY_ERR_ARG,
                             "tokenizer train: special token \"%s\" is the byte token of 0x%02X",
                             p->special[sp], b);
            break;
        }
        byte_tok[b] = tok_add(&T, &c, 1, true);
        if (byte_tok[b] < 0) st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    }
    // Words as byte tokens.
    if (st == SPRY_OK) {
        T.sym = malloc((size_t)(nsym ? nsym : 1) * sizeof *T.sym);
        T.woff = malloc((size_t)(nw ? nw : 1) * sizeof *T.woff);
        T.wlen = malloc((size_t)(nw ? nw : 1) * sizeof *T.wlen);
        T.wcnt = malloc((size_t)(nw ? nw : 1) * sizeof *T.wcnt);
        if (!T.sym || !T.woff || !T.wlen || !T.wcnt || !ptab_grow(&T) || nw > INT32_MAX)
            st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    }
    if (st == SPRY_OK) {
        int64_t o = 0;
        for (int64_t w = 0; w < nw; w++) {
            T.woff[w] = o, T.wlen[w] = (int32_t)words[w].len, T.wcnt[w] = words[w].count;
            for (uint32_t i = 0; i < words[w].len; i++) T.sym[o++] = byte_tok[words[w].s[i]];
        }
        T.n_words = (int32_t)nw;
    }
    free(words);
    wm_free(&all);
    // Initial pair counts.
    for (int32_t w = 0; w < T.n_words && st == SPRY_OK; w++) {
        const int32_t *s = T.sym + T.woff[w];
        for (int32_t i = 0; i + 1 < T.wlen[w]; i++)
            if (!change(&T, s[i], s[i + 1], +1, w)) {
                st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
                break;
            }
    }
    for (int32_t q = 0; q < T.n_pairs && st == SPRY_OK; q++)
        if (T.pairs[q].count > 0 && !heap_push(&T, (heap_entry){T.pairs[q].count, T.pairs[q].a, T.pairs[q].b}))
            st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    T.step = 1; // stamps 1 were the initial counts

    // 3. Merges.
    int64_t min_freq = p->min_frequency > 1 ? p->min_frequency : 1;
    while (st == SPRY_OK && T.n_tok < p->vocab_size && T.n_heap) {
        heap_entry e = heap_pop(&T);
        int32_t    q = pair_get(&T, e.a, e.b);
        if (q < 0) {
            st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
            break;
        }
        int64_t cur = T.pairs[q].count;
        if (cur != e.count) {
            if (cur > 0 && !heap_push(&T, (heap_entry){cur, e.a, e.b}))
                st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
            continue;
        }
        if (cur < min_freq) break;
        // New token: bytes of a then b (tok_add may move tbytes, so build it in a buffer).
        size_t   la = (size_t)T.tlen[e.a], lb = (size_t)T.tlen[e.b];
        uint8_t *nb = malloc(la + lb);
        if (!nb) {
            st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
            break;
        }
        memcpy(nb, T.tbytes + T.toff[e.a], la);
        memcpy(nb + la, T.tbytes + T.toff[e.b], lb);
        int32_t x = p->n_special ? special_with_key(p, nb, la + lb) : -1;
        if (x < 0) x = tok_add(&T, nb, la + lb, true);
        free(nb);
        if (x >= 0 && T.n_merges == T.cap_merges) {
            int32_t  cap = T.cap_merges ? T.cap_merges * 2 : 1024;
            int32_t *m2 = realloc(T.merges, (size_t)cap * 2 * sizeof *m2);
            if (m2) T.merges = m2, T.cap_merges = cap;
            else x = -1;
        }
        if (x < 0) {
            st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
            break;
        }
        T.merges[2 * T.n_merges] = e.a, T.merges[2 * T.n_merges + 1] = e.b;
        T.n_merges++;
        // Apply to every word holding the pair; pairs that gain are pushed afterwards.
        int32_t  n_where = T.pairs[q].n_where;
        int32_t *where = T.pairs[q].where;
        T.pairs[q].where = NULL, T.pairs[q].n_where = T.pairs[q].cap_where = 0;
        T.n_touched = 0;
        for (int32_t k = 0; k < n_where && st == SPRY_OK; k++)
            if (!merge_word(&T, where[k], e.a, e.b, x))
                st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
        free(where);
        q = pair_get(&T, e.a, e.b);
        if (q >= 0) T.pairs[q].count = 0;
        // Pairs whose count rose all hold x; push each once with its count after the step.
        for (int32_t k = 0; k < T.n_touched && st == SPRY_OK; k++) {
            const pair_info *r = &T.pairs[T.touched[k]];
            if (r->count > 0 && !heap_push(&T, (heap_entry){r->count, r->a, r->b}))
                st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
        }
        T.step++;
        if (p->verbose && T.n_merges % 1000 == 0)
            spry_log(SPRY_LOG_INFO, "tokenizer train: %d merges, vocab %d (%.2f s)", T.n_merges, T.n_tok,
                     now_s() - t0);
    }
    if (st == SPRY_OK) st = build_result(&T, p, out);
    if (st == SPRY_OK && p->verbose)
        spry_log(SPRY_LOG_INFO, "tokenizer train: done, %d merges, vocab %d (%.2f s)", T.n_merges, T.n_tok,
                 now_s() - t0);
    trainer_free(&T);
    return st;
}

// Builds the spry_tokenizer from the trainer's tokens and merges via the shared builder.
static spry_status build_result(trainer *T, const spry_tokenizer_train_params *p, spry_tokenizer **out) {
    spry_tokenizer *t = tok_new("trained tokenizer");
    if (!t) return spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
    spry_status st = tok_alloc_vocab(t, T->n_tok);
    char       *key = NULL;
    size_t      key_cap = 0;
    for (int32_t id = p->n_special; id < T->n_tok && st == SPRY_OK; id++) {
        size_t n = (size_t)T->tlen[id];
        if (2 * n + 1 > key_cap) {
            key_cap = 2 * n + 64;
            char *k2 = realloc(key, key_cap);
            if (!k2) {
                st = spry_errorf(SPRY_ERR_NOMEM, "tokenizer train: out of memory");
                break;
            }
            key = k2;
        }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) o += (size_t)spry_byte_char(T->tbytes[T->toff[id] + (int64_t)i], key + o);
        st = tok_set_key(t, id, key, o, "vocab");
    }
    free(key);
    for (int i = 0; i < p->n_special && st == SPRY_OK; i++) {
        tok_added a = {.id = i, .content = (char *)p->special[i], .len = strlen(p->special[i]),
                       .special = true, .normalized = false};
        st = tok_add_added(t, &a, "special tokens");
    }
    if (st == SPRY_OK) st = tok_index_vocab(t);
    for (int32_t r = 0; r < T->n_merges && st == SPRY_OK; r++) {
        const char *a = spry_tokenizer_vocab_key(t, T->merges[2 * r]);
        const char *b = spry_tokenizer_vocab_key(t, T->merges[2 * r + 1]);
        st = tok_add_merge(t, a, strlen(a), b, strlen(b), "merges");
    }
    if (st == SPRY_OK) {
        t->steps[0] = (tok_step){.split = SPRY_PRETOK_GPT2, .prefix_space = false, .byte_level = true};
        t->n_steps = 1;
        t->ws = SPRY_UC_WS_UNI;
        st = tok_finish(t);
    }
    if (st != SPRY_OK) {
        spry_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SPRY_OK;
}

// ---------------------------------------------------------------------------------------------
// Files

typedef struct path_list {
    char **v;
    size_t n, cap;
} path_list;

static bool paths_push(path_list *l, const char *p) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return false;
        l->v = v, l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(p))) return false;
    l->n++;
    return true;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static spry_status collect(const char *path, path_list *out, int depth) {
    struct stat sb;
    if (stat(path, &sb) != 0) return spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISREG(sb.st_mode)) {
        if (!paths_push(out, path)) return spry_errorf(SPRY_ERR_NOMEM, "out of memory");
        return SPRY_OK;
    }
    if (!S_ISDIR(sb.st_mode)) return spry_errorf(SPRY_ERR_IO, "%s: not a file or directory", path);
    if (depth > 32) return spry_errorf(SPRY_ERR_IO, "%s: directories nested too deeply", path);
    DIR *d = opendir(path);
    if (!d) return spry_errorf(SPRY_ERR_IO, "%s: cannot open directory: %s", path, strerror(errno));
    path_list names = {0};
    struct dirent *e;
    spry_status st = SPRY_OK;
    while ((e = readdir(d)) && st == SPRY_OK)
        if (e->d_name[0] != '.' && !paths_push(&names, e->d_name)) st = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    closedir(d);
    if (names.n) qsort(names.v, names.n, sizeof *names.v, cmp_str);
    for (size_t i = 0; i < names.n && st == SPRY_OK; i++) {
        size_t la = strlen(path), lb = strlen(names.v[i]);
        char  *full = malloc(la + lb + 2);
        if (!full) {
            st = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(full, la + lb + 2, "%s%s%s", path, la && path[la - 1] == '/' ? "" : "/", names.v[i]);
        st = collect(full, out, depth + 1);
        free(full);
    }
    for (size_t i = 0; i < names.n; i++) free(names.v[i]);
    free(names.v);
    return st;
}

spry_status spry_tokenizer_train_files(const char *const *paths, int n_paths,
                                       const spry_tokenizer_train_params *p, spry_tokenizer **out) {
    *out = NULL;
    path_list files = {0};
    spry_status st = SPRY_OK;
    for (int i = 0; i < n_paths && st == SPRY_OK; i++) st = collect(paths[i], &files, 0);
    char  **texts = st == SPRY_OK ? calloc(files.n ? files.n : 1, sizeof *texts) : NULL;
    size_t *lens = st == SPRY_OK ? calloc(files.n ? files.n : 1, sizeof *lens) : NULL;
    if (st == SPRY_OK && (!texts || !lens)) st = spry_errorf(SPRY_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < files.n && st == SPRY_OK; i++) {
        FILE *f = fopen(files.v[i], "rb");
        if (!f) {
            st = spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", files.v[i], strerror(errno));
            break;
        }
        size_t cap = 1 << 16, n = 0;
        char  *b = malloc(cap);
        while (b) {
            size_t got = fread(b + n, 1, cap - n, f);
            n += got;
            if (n < cap) break;
            char *b2 = realloc(b, cap * 2);
            if (!b2) {
                free(b);
                b = NULL;
                break;
            }
            b = b2, cap *= 2;
        }
        bool bad = ferror(f);
        fclose(f);
        if (!b) st = spry_errorf(SPRY_ERR_NOMEM, "%s: out of memory", files.v[i]);
        else if (bad) st = spry_errorf(SPRY_ERR_IO, "%s: read failed", files.v[i]);
        texts[i] = b, lens[i] = n;
    }
    if (st == SPRY_OK && files.n > (size_t)INT32_MAX) st = spry_errorf(SPRY_ERR_ARG, "too many files");
    if (st == SPRY_OK) {
        if (p && p->verbose) spry_log(SPRY_LOG_INFO, "tokenizer train: %zu files", files.n);
        st = spry_tokenizer_train((const char *const *)texts, lens, (int)files.n, p, out);
    }
    for (size_t i = 0; i < files.n; i++) {
        if (texts) free(texts[i]);
        free(files.v[i]);
    }
    free(texts);
    free(lens);
    free(files.v);
    return st;
}
