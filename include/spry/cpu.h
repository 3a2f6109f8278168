/*
 * cpu.h -- CPU features detected at run time. The same binary runs everywhere: kernels compiled
 * for AVX-512 are chosen at load time (target_clones) only where the CPU has them, oneDNN picks
 * its own AVX-512/VNNI/BF16/AMX code at run time, and the portable paths run elsewhere.
 */
#ifndef SPRY_CPU_H
#define SPRY_CPU_H

#include <stdbool.h>

typedef struct spry_cpu_features {
    bool avx2, fma, avx512f, avx512bw, avx512vnni, avx512bf16, amx_tile, amx_bf16;
} spry_cpu_features;

// Features of the CPU this process runs on (cached after the first call). Thread safe.
spry_cpu_features spry_cpu_detect(void);
// A one-line summary such as "avx2 fma avx512f avx512bf16" (static buffer).
const char *spry_cpu_summary(void);

#endif
