/*
 * tensor.h -- the tensor: PyTorch dimension order, byte strides, views.
 *
 * shape[0] is outermost, the last dim is contiguous when the tensor is; strides are in BYTES
 * so block-quantized rows fit. Matmul follows torch.nn.Linear: y = x @ W^T with W (out, in).
 * Tensors are never freed one by one: the arena (activations) or the param store (parameters)
 * that made them owns them.
 */
#ifndef SPRY_TENSOR_H
#define SPRY_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/arena.h"
#include "spry/dtype.h"

#define SPRY_MAX_DIMS 6

enum {
    SPRY_TENSOR_PARAM         = 1u << 0, // lives in a param store
    SPRY_TENSOR_VIEW          = 1u << 1, // data belongs to another tensor
    SPRY_TENSOR_REQUIRES_GRAD = 1u << 2, // backward fills ->grad
};

typedef struct spry_tensor {
    spry_dtype          dtype;
    int                 ndim;
    int64_t             shape[SPRY_MAX_DIMS];
    int64_t             stride[SPRY_MAX_DIMS]; // bytes
    void               *data;
    struct spry_tensor *grad;  // f32, same shape, contiguous; NULL until needed
    uint32_t            flags;
    char                name[64];
} spry_tensor;

// Number of elements.
int64_t spry_tensor_numel(const spry_tensor *t);
// Bytes of a contiguous tensor of this dtype and shape.
size_t spry_tensor_nbytes(const spry_tensor *t);
// True when strides are the row-major strides of shape.
bool spry_tensor_is_contiguous(const spry_tensor *t);
// True when a and b have the same ndim and shape.
bool spry_tensor_same_shape(const spry_tensor *a, const spry_tensor *b);
// Fills shape/stride for a contiguous layout (data untouched).
void spry_tensor_set_shape(spry_tensor *t, spry_dtype dt, int ndim, const int64_t *shape);
// Formats "(2, 3, 4)" into buf (for messages). Returns buf.
const char *spry_tensor_shape_str(const spry_tensor *t, char *buf, size_t n);
// Sets name with printf formatting (truncated to fit).
void spry_tensor_set_name(spry_tensor *t, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// New contiguous tensor in an arena; data uninitialized. NULL on OOM.
spry_tensor *spry_tensor_new(spry_arena *a, spry_dtype dt, int ndim, const int64_t *shape);
// As spry_tensor_new, zero-filled.
spry_tensor *spry_tensor_zeros(spry_arena *a, spry_dtype dt, int ndim, const int64_t *shape);

// Convenience shape literals: SPRY_SHAPE(2, 3) -> (const int64_t[]){2, 3}.
#define SPRY_SHAPE(...) ((const int64_t[]){__VA_ARGS__})

// Element pointer of a 1-6 dim index (no bounds check beyond the debug assert).
static inline float *spry_f32_at2(const spry_tensor *t, int64_t i, int64_t j) {
    return (float *)((char *)t->data + i * t->stride[0] + j * t->stride[1]);
}

#endif
