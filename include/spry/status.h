/*
 * status.h -- status codes, the thread-local error message, assertions.
 *
 * Two kinds of failure (STYLE.md section 4): programmer errors abort through SPRY_ASSERT with
 * file:line and a message; environment errors (files, configs, user input, OOM) return a
 * negative spry_status and leave a message naming file, field and value in a thread-local
 * buffer read with spry_last_error() (SQLite's sqlite3_errmsg pattern).
 */
#ifndef SPRY_STATUS_H
#define SPRY_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum spry_status {
    SPRY_OK              = 0,
    SPRY_ERR_IO          = -1,  // open/read/write/rename failed
    SPRY_ERR_FORMAT      = -2,  // a file's contents are malformed
    SPRY_ERR_CONFIG      = -3,  // a config key has a wrong type or value
    SPRY_ERR_NOMEM       = -4,  // an allocation failed
    SPRY_ERR_ARG         = -5,  // a bad argument from the user (CLI, request)
    SPRY_ERR_UNSUPPORTED = -6,  // valid, but not implemented here
    SPRY_ERR_NOT_FOUND   = -7,  // a named tensor/key/file is absent
    SPRY_ERR_COMM        = -8,  // a collective failed, or another rank of the job failed
} spry_status;

// Short constant name of a status ("SPRY_ERR_IO"). Never NULL.
const char *spry_status_name(spry_status st);

// Formats a message into this thread's error buffer and returns st unchanged, so callers write
// `return spry_errorf(SPRY_ERR_IO, "%s: cannot open: %s", path, strerror(errno));`.
spry_status spry_errorf(spry_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// The last message set by spry_errorf on this thread ("" if none). Valid until the next call.
const char *spry_last_error(void);

// Propagates a non-OK status to the caller.
#define SPRY_TRY(expr)                                                                             \
    do {                                                                                           \
        spry_status spry_try_st_ = (expr);                                                         \
        if (spry_try_st_ != SPRY_OK) return spry_try_st_;                                          \
    } while (0)

// Always-on invariant check for programmer errors; never for anything a user can cause.
#define SPRY_ASSERT(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: assertion failed: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
