/*
 * fuzz_safetensors.c -- libFuzzer target for the safetensors reader (the analogue of
 * safetensors/fuzz/fuzz_targets/fuzz_target_1.rs): any bytes must open cleanly or fail with a
 * status, never crash, leak or read outside the mapping. Each input is written to a per-process
 * temp file and opened; on success every tensor is viewed and every data byte read.
 *
 * Build and run (clang-14, libclang-rt-14-dev; CORE = the src/core sources):
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *       tests/fuzz_safetensors.c src/io/safetensors.c $CORE -lcjson -lm -o fuzz_st
 *   ./fuzz_st -max_total_time=60 corpus/
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "spry/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (path[0] == '\0') snprintf(path, sizeof path, "/tmp/spry_fuzz_st_%ld", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL) return 0;
    size_t w = fwrite(data, 1, size, f);
    fclose(f);
    if (w != size) return 0;

    spry_safetensors *st = NULL;
    if (spry_safetensors_open(path, &st) == SPRY_OK) {
        unsigned sum = 0;
        for (int64_t i = 0; i < spry_safetensors_n_tensors(st); i++) {
            const spry_st_tensor_info *t = spry_safetensors_tensor_at(st, i);
            spry_tensor                v;
            (void)spry_st_tensor_view(t, &v);
            for (size_t k = 0; k < t->nbytes; k++) sum += ((const unsigned char *)t->data)[k];
            if (spry_safetensors_find(st, t->name) == NULL) __builtin_trap();
        }
        for (int64_t i = 0; i < spry_safetensors_n_meta(st); i++) {
            const char *k = NULL, *v = NULL;
            if (!spry_safetensors_meta_at(st, i, &k, &v)) __builtin_trap();
            sum += (unsigned)strlen(k) + (unsigned)strlen(v);
        }
        (void)sum;
        spry_safetensors_close(st);
    }
    return 0;
}
