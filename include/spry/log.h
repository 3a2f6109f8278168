/*
 * log.h -- leveled logging to stderr.
 *
 * SPRY_LOG_LEVEL (environment: error, warn, info, debug) or spry_log_set_level() choose what is
 * printed; info is the default.
 */
#ifndef SPRY_LOG_H
#define SPRY_LOG_H

typedef enum spry_log_level {
    SPRY_LOG_ERROR = 0,
    SPRY_LOG_WARN,
    SPRY_LOG_INFO,
    SPRY_LOG_DEBUG,
} spry_log_level;

void spry_log_set_level(spry_log_level level);
// Rank-aware logging for multi-process jobs: rank 0 logs as usual; another rank writes its errors
// to stderr prefixed with its rank and everything else to <dir>/rank<R>.log when dir is given
// (else drops it). Returns 0, or -1 if the file cannot be opened (then only errors are shown).
int spry_log_set_rank(int rank, const char *dir);
void spry_log(spry_log_level level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#define SPRY_LOG_ERR(...)   spry_log(SPRY_LOG_ERROR, __VA_ARGS__)
#define SPRY_LOG_WARN(...)  spry_log(SPRY_LOG_WARN, __VA_ARGS__)
#define SPRY_LOG_INFO(...)  spry_log(SPRY_LOG_INFO, __VA_ARGS__)
#define SPRY_LOG_DEBUG(...) spry_log(SPRY_LOG_DEBUG, __VA_ARGS__)

#endif
