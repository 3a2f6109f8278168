/*
 * registry.c -- the op table, built from ops.def (see op_def.h).
 */
#include "op_def.h"

#define SPRY_OP(e, sym) [SPRY_OP_##e] = &sym,
const spry_op_def *const spry_op_defs[SPRY_OP_COUNT] = {
#include "ops.def"
};
#undef SPRY_OP
_Static_assert(sizeof spry_op_defs / sizeof spry_op_defs[0] == SPRY_OP_COUNT, "op table size");
