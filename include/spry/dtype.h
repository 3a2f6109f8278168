/*
 * dtype.h -- the element types and their traits table.
 *
 * A small fixed vocabulary (ggml's type_traits idea). Block-quantized types (int8/int4 rows with
 * scales) take later slots: `block` is the number of elements sharing one `size`-byte block, so
 * byte strides work for them too. F64 exists for the scalar references of the op tests.
 */
#ifndef SPRY_DTYPE_H
#define SPRY_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum spry_dtype {
    SPRY_DTYPE_F32 = 0,
    SPRY_DTYPE_BF16,
    SPRY_DTYPE_F16,
    SPRY_DTYPE_F64,
    SPRY_DTYPE_I32,
    SPRY_DTYPE_I64,
    SPRY_DTYPE_I8,
    SPRY_DTYPE_U8,
    SPRY_DTYPE_COUNT,
} spry_dtype;

typedef struct spry_dtype_traits {
    const char *name;       // "f32"; the safetensors name is st_name ("F32")
    const char *st_name;
    size_t      block_size; // bytes per block
    int64_t     block;      // elements per block (1 for plain types)
    int         is_float;
} spry_dtype_traits;

// Traits of a dtype; dt must be < SPRY_DTYPE_COUNT.
const spry_dtype_traits *spry_dtype_info(spry_dtype dt);

// Bytes used by n elements (n a multiple of the block size).
size_t spry_dtype_nbytes(spry_dtype dt, int64_t n);

// Looks a dtype up by its safetensors name ("F32", "BF16", ...). Returns -1 if unknown.
int spry_dtype_from_st_name(const char *name);

// Scalar conversions. bf16 rounds to nearest even; NaN stays NaN.
static inline uint16_t spry_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}
static inline float spry_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {.u = (uint32_t)h << 16};
    return v.f;
}
float    spry_f16_to_f32(uint16_t h);
uint16_t spry_f32_to_f16(float f);

// Bulk conversions (vectorized where the CPU allows).
void spry_convert_f32_to_bf16(const float *x, uint16_t *y, int64_t n);
void spry_convert_bf16_to_f32(const uint16_t *x, float *y, int64_t n);
// y (n) = f16(x): spry_f32_to_f16's bits for every non-NaN value (NaN stays NaN).
void spry_convert_f32_to_f16(const float *x, uint16_t *y, int64_t n);
// y = f32(f16(x)): rounds to the nearest half (overflow to inf), kept in f32.
void spry_round_f16(const float *x, float *y, int64_t n);

#endif
