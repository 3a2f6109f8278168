/*
 * params.c -- the flat parameter store (see params.h).
 */
#include "spry/params.h"

#include <stdlib.h>
#include <string.h>

void spry_params_init(spry_params *p) { memset(p, 0, sizeof *p); }

void spry_params_free(spry_params *p) {
    free(p->items);
    free(p->values);
    free(p->grads);
    memset(p, 0, sizeof *p);
}

int64_t spry_params_add(spry_params *p, const char *name, int ndim, const int64_t *shape,
                        uint32_t pflags) {
    SPRY_ASSERT(p->values == NULL, "spry_params_add(%s) after spry_params_alloc", name);
    if (p->n_items == p->cap) {
        int64_t     cap = p->cap ? 2 * p->cap : 64;
        spry_param *it  = realloc(p->items, (size_t)cap * sizeof *it);
        if (!it) return spry_errorf(SPRY_ERR_NOMEM, "out of memory adding parameter %s", name);
        p->items = it;
        p->cap   = cap;
    }
    spry_param *it = &p->items[p->n_items];
    memset(it, 0, sizeof *it);
    spry_tensor_set_shape(&it->t, SPRY_DTYPE_F32, ndim, shape);
    snprintf(it->t.name, sizeof it->t.name, "%s", name);
    it->t.flags = SPRY_TENSOR_PARAM;
    it->offset  = p->n_elem;
    it->pflags  = pflags;
    // keep every parameter 64-byte aligned inside the flat buffer
    int64_t n = spry_tensor_numel(&it->t);
    p->n_elem += (n + 15) / 16 * 16;
    return p->n_items++;
}

static void point(spry_params *p, int64_t i) {
    spry_param *it  = &p->items[i];
    it->t.data      = p->values + it->offset;
    it->grad_t      = it->t;
    it->grad_t.data = p->grads + it->offset;
    it->grad_t.flags = 0;
    bool frozen     = it->pflags & SPRY_PARAM_FROZEN;
    it->t.grad      = frozen ? NULL : &it->grad_t;
    if (frozen)
        it->t.flags &= ~(uint32_t)SPRY_TENSOR_REQUIRES_GRAD;
    else
        it->t.flags |= SPRY_TENSOR_REQUIRES_GRAD;
}

spry_status spry_params_alloc(spry_params *p) {
    size_t bytes = (size_t)(p->n_elem ? p->n_elem : 16) * sizeof(float);
    p->values    = aligned_alloc(64, bytes);
    p->grads     = aligned_alloc(64, bytes);
    if (!p->values || !p->grads) {
        free(p->values);
        free(p->grads);
        p->values = p->grads = NULL;
        return spry_errorf(SPRY_ERR_NOMEM, "out of memory allocating %zu bytes of parameters",
                           2 * bytes);
    }
    memset(p->values, 0, bytes);
    memset(p->grads, 0, bytes);
    for (int64_t i = 0; i < p->n_items; i++) point(p, i);
    return SPRY_OK;
}

spry_tensor *spry_params_at(spry_params *p, int64_t i) {
    SPRY_ASSERT(i >= 0 && i < p->n_items, "param index %lld out of range", (long long)i);
    return &p->items[i].t;
}

int64_t spry_params_index(const spry_params *p, const char *name) {
    for (int64_t i = 0; i < p->n_items; i++)
        if (!strcmp(p->items[i].t.name, name)) return i;
    return -1;
}

spry_tensor *spry_params_find(spry_params *p, const char *name) {
    int64_t i = spry_params_index(p, name);
    return i < 0 ? NULL : &p->items[i].t;
}

void spry_params_zero_grad(spry_params *p) {
    if (p->grads) memset(p->grads, 0, (size_t)p->n_elem * sizeof(float));
}

void spry_params_set_frozen(spry_params *p, int64_t i, bool frozen) {
    spry_param *it = &p->items[i];
    if (frozen)
        it->pflags |= SPRY_PARAM_FROZEN;
    else
        it->pflags &= ~(uint32_t)SPRY_PARAM_FROZEN;
    if (p->values) point(p, i);
}
