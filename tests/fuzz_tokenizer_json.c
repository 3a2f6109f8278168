/*
 * fuzz_tokenizer_json.c -- libFuzzer target for the tokenizer.json parser: any bytes must load
 * or fail with a status, never crash or leak; a loaded tokenizer encodes and decodes its own
 * input. Built and run by scripts/fuzz.sh.
 */
#include <stdlib.h>
#include <string.h>

#include "spry/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    spry_tokenizer *tok = NULL;
    if (spry_tokenizer_parse_json((const char *)data, size, "fuzz", &tok) != SPRY_OK) return 0;
    spry_tokens ids = {0};
    if (spry_tokenizer_encode(tok, (const char *)data, size < 256 ? size : 256, NULL, &ids) == SPRY_OK) {
        char  *out = NULL;
        size_t n   = 0;
        if (spry_tokenizer_decode(tok, ids.ids, ids.n, false, &out, &n) == SPRY_OK) free(out);
    }
    spry_tokens_free(&ids);
    spry_tokenizer_free(tok);
    return 0;
}
