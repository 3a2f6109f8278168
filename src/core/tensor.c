/*
 * tensor.c -- tensor shape helpers and arena constructors (see tensor.h).
 */
#include "spry/tensor.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "spry/status.h"

int64_t spry_tensor_numel(const spry_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t spry_tensor_nbytes(const spry_tensor *t) {
    return spry_dtype_nbytes(t->dtype, spry_tensor_numel(t));
}

void spry_tensor_set_shape(spry_tensor *t, spry_dtype dt, int ndim, const int64_t *shape) {
    SPRY_ASSERT(ndim >= 0 && ndim <= SPRY_MAX_DIMS, "ndim %d out of range", ndim);
    t->dtype = dt;
    t->ndim  = ndim;
    int64_t s = (int64_t)spry_dtype_info(dt)->block_size;
    for (int i = ndim - 1; i >= 0; i--) {
        t->shape[i]  = shape[i];
        t->stride[i] = s;
        s *= shape[i];
    }
    for (int i = ndim; i < SPRY_MAX_DIMS; i++) {
        t->shape[i]  = 1;
        t->stride[i] = 0;
    }
}

bool spry_tensor_is_contiguous(const spry_tensor *t) {
    int64_t s = (int64_t)spry_dtype_info(t->dtype)->block_size;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool spry_tensor_same_shape(const spry_tensor *a, const spry_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *spry_tensor_shape_str(const spry_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

void spry_tensor_set_name(spry_tensor *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
}

// Bytes of a contiguous tensor, or SIZE_MAX when the shape is negative or the size overflows.
static size_t checked_nbytes(spry_dtype dt, int ndim, const int64_t *shape) {
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return SIZE_MAX;
        if (shape[i] && n > (uint64_t)INT64_MAX / (uint64_t)shape[i]) return SIZE_MAX;
        n *= (uint64_t)shape[i];
    }
    size_t es = spry_dtype_info(dt)->block_size;
    if (n > SIZE_MAX / 2 / es) return SIZE_MAX;
    return (size_t)n * es / (size_t)spry_dtype_info(dt)->block;
}

spry_tensor *spry_tensor_new(spry_arena *a, spry_dtype dt, int ndim, const int64_t *shape) {
    if (checked_nbytes(dt, ndim, shape) == SIZE_MAX) return NULL;
    spry_tensor *t = spry_arena_alloc(a, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    spry_tensor_set_shape(t, dt, ndim, shape);
    t->data = spry_arena_alloc(a, spry_tensor_nbytes(t));
    return t->data ? t : NULL;
}

spry_tensor *spry_tensor_zeros(spry_arena *a, spry_dtype dt, int ndim, const int64_t *shape) {
    spry_tensor *t = spry_tensor_new(a, dt, ndim, shape);
    if (t) memset(t->data, 0, spry_tensor_nbytes(t));
    return t;
}
