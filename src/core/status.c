/*
 * status.c -- status names and the thread-local error message (see status.h).
 */
#include "spry/status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char g_error[1024];

const char *spry_status_name(spry_status st) {
    switch (st) {
    case SPRY_OK: return "SPRY_OK";
    case SPRY_ERR_IO: return "SPRY_ERR_IO";
    case SPRY_ERR_FORMAT: return "SPRY_ERR_FORMAT";
    case SPRY_ERR_CONFIG: return "SPRY_ERR_CONFIG";
    case SPRY_ERR_NOMEM: return "SPRY_ERR_NOMEM";
    case SPRY_ERR_ARG: return "SPRY_ERR_ARG";
    case SPRY_ERR_UNSUPPORTED: return "SPRY_ERR_UNSUPPORTED";
    case SPRY_ERR_NOT_FOUND: return "SPRY_ERR_NOT_FOUND";
    case SPRY_ERR_COMM: return "SPRY_ERR_COMM";
    }
    return "SPRY_ERR_UNKNOWN";
}

spry_status spry_errorf(spry_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *spry_last_error(void) { return g_error; }
