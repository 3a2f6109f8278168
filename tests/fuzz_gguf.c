/*
 * fuzz_gguf.c -- libFuzzer target for the GGUF reader (OSS-Fuzz's llama.cpp targets feed raw
 * bytes to the loader the same way): any bytes must open cleanly or fail with SPRY_ERR_FORMAT,
 * never crash, leak or read outside the buffer. Each input is copied to an exact-size heap
 * buffer (so ASan sees a read one byte past it) and opened from memory; on success every pair
 * and element is walked, every key and tensor looked up again and every data byte read.
 *
 * Build and run (clang-14, libclang-rt-14-dev): scripts/fuzz.sh builds every tests/fuzz_*.c
 * with the library's sources, or by hand (CORE = the src/core sources):
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *       tests/fuzz_gguf.c src/io/gguf.c $CORE -lm -o fuzz_gguf
 *   ./fuzz_gguf -max_total_time=60 corpus/
 * A good seed corpus is any file written by spry_gguf_writer_write or spry_gguf_export_model.
 */
#include <stdlib.h>
#include <string.h>

#include "spry/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    if (size)
        memcpy(copy, data, size);

    spry_gguf *g   = NULL;
    spry_status st = spry_gguf_open_memory(copy, size, "fuzz", &g);
    if (st != SPRY_OK && (st != SPRY_ERR_FORMAT || g != NULL))
        __builtin_trap();
    if (st == SPRY_OK) {
        unsigned sum = 0;
        for (int64_t i = 0; i < spry_gguf_n_kv(g); i++) {
            const spry_gguf_kv *kv = spry_gguf_kv_at(g, i);
            if (kv->key_len == strlen(kv->key) && spry_gguf_find_key(g, kv->key) != i)
                __builtin_trap();
            for (uint64_t k = 0; k < kv->n; k++) {
                if (kv->elem_type == SPRY_GGUF_TYPE_STRING) {
                    size_t len;
                    const char *s = spry_gguf_kv_str(kv, k, &len);
                    for (size_t c = 0; c < len; c++)
                        sum += (unsigned char)s[c];
                } else {
                    unsigned char v[8];
                    spry_gguf_kv_elem(kv, k, v);
                    sum += v[0];
                }
            }
        }
        for (int64_t i = 0; i < spry_gguf_n_tensors(g); i++) {
            const spry_gguf_tensor *t = spry_gguf_tensor_at(g, i);
            if (spry_gguf_find_tensor(g, t->name) != t)
                __builtin_trap();
            for (size_t k = 0; k < t->nbytes; k++)
                sum += ((const unsigned char *)t->data)[k];
        }
        uint32_t u;
        (void)spry_gguf_get_u32(g, "general.alignment", &u);
        (void)sum;
        spry_gguf_close(g);
    }
    free(copy);
    return 0;
}
