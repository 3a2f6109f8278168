/*
 * cpu.c -- run-time CPU feature detection through CPUID (see cpu.h). AMX additionally needs
 * the OS to enable the tile state, which oneDNN requests itself; here it is only reported.
 */
#include "spry/cpu.h"

#include <stdio.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static spry_cpu_features detect(void) {
    spry_cpu_features f = {0};
    unsigned a, b, c, d;
    if (__get_cpuid_count(1, 0, &a, &b, &c, &d)) f.fma = (c >> 12) & 1;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        f.avx2       = (b >> 5) & 1;
        f.avx512f    = (b >> 16) & 1;
        f.avx512bw   = (b >> 30) & 1;
        f.avx512vnni = (c >> 11) & 1;
        f.amx_bf16   = (d >> 22) & 1;
        f.amx_tile   = (d >> 24) & 1;
    }
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512bf16 = (a >> 5) & 1;
    // the OS must save the AVX-512 state (XCR0 bits 5-7) for AVX-512 to be usable
    if (__get_cpuid_count(1, 0, &a, &b, &c, &d) && ((c >> 27) & 1)) {
        unsigned lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        if ((lo & 0xe6) != 0xe6) f.avx512f = f.avx512bw = f.avx512vnni = f.avx512bf16 = false;
    }
    return f;
}
#else
static spry_cpu_features detect(void) { return (spry_cpu_features){0}; }
#endif

spry_cpu_features spry_cpu_detect(void) {
    static spry_cpu_features f;
    static int               done;
    if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
        f = detect();
        __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    }
    return f;
}

const char *spry_cpu_summary(void) {
    static char       buf[128];
    spry_cpu_features f = spry_cpu_detect();
    snprintf(buf, sizeof buf, "%s%s%s%s%s%s%s%s", f.avx2 ? "avx2 " : "", f.fma ? "fma " : "",
             f.avx512f ? "avx512f " : "", f.avx512bw ? "avx512bw " : "",
             f.avx512vnni ? "avx512vnni " : "", f.avx512bf16 ? "avx512bf16 " : "",
             f.amx_tile ? "amx-tile " : "", f.amx_bf16 ? "amx-bf16" : "");
    size_t n = strlen(buf);
    if (n && buf[n - 1] == ' ') buf[n - 1] = 0;
    return buf;
}
