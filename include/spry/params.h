/*
 * params.h -- the parameter store: named parameters in one flat buffer (llm.c's
 * malloc_and_point_parameters).
 *
 * Two phases: spry_params_add() declares each parameter (name, shape), spry_params_alloc()
 * carves one f32 buffer for the values and one for the gradients, and every parameter tensor is
 * a view into them. The optimizer is one loop over the flat buffers, an allreduce is one call,
 * ZeRO-1 is a range of the buffer, a checkpoint is one write plus the name table.
 */
#ifndef SPRY_PARAMS_H
#define SPRY_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "spry/status.h"
#include "spry/tensor.h"

enum {
    SPRY_PARAM_NO_DECAY = 1u << 0, // excluded from weight decay (biases, norms: DeepSpeed default)
    SPRY_PARAM_FROZEN   = 1u << 1, // no gradient, never updated
};

typedef struct spry_param {
    spry_tensor t;      // view into values; t.grad points at grad_t unless frozen
    spry_tensor grad_t; // view into grads
    int64_t     offset; // element offset in the flat buffers
    uint32_t    pflags; // SPRY_PARAM_*
} spry_param;

typedef struct spry_params {
    spry_param *items;
    int64_t     n_items, cap;
    int64_t     n_elem; // total elements
    float      *values; // (n_elem)
    float      *grads;  // (n_elem)
} spry_params;

// Empty store. Never fails.
void spry_params_init(spry_params *p);
void spry_params_free(spry_params *p);

// Declares a parameter before alloc; returns its index or a negative status on OOM. The name is
// copied (truncated to 63 chars). Asserts that alloc has not happened yet.
int64_t spry_params_add(spry_params *p, const char *name, int ndim, const int64_t *shape,
                        uint32_t pflags);
// Allocates values and grads (both zeroed, 64-byte aligned) and points the tensors at them.
spry_status spry_params_alloc(spry_params *p);

// The tensor of a parameter by index / by name (NULL if absent).
spry_tensor *spry_params_at(spry_params *p, int64_t i);
spry_tensor *spry_params_find(spry_params *p, const char *name);
int64_t      spry_params_index(const spry_params *p, const char *name); // -1 if absent

// Zeroes all gradients.
void spry_params_zero_grad(spry_params *p);
// Marks a parameter frozen (no grad) or trainable again.
void spry_params_set_frozen(spry_params *p, int64_t i, bool frozen);

#endif
