/*
 * log.c -- leveled logging to stderr (see log.h).
 */
#include "spry/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_level = -1;

static int level_from_env(void) {
    const char *s = getenv("SPRY_LOG_LEVEL");
    if (!s) return SPRY_LOG_INFO;
    if (!strcmp(s, "error")) return SPRY_LOG_ERROR;
    if (!strcmp(s, "warn")) return SPRY_LOG_WARN;
    if (!strcmp(s, "debug")) return SPRY_LOG_DEBUG;
    return SPRY_LOG_INFO;
}

static int   g_rank;
static FILE *g_rank_file;

void spry_log_set_level(spry_log_level level) { g_level = (int)level; }

int spry_log_set_rank(int rank, const char *dir) {
    g_rank = rank;
    if (g_rank_file) fclose(g_rank_file), g_rank_file = NULL;
    if (rank == 0 || !dir) return 0;
    char path[1200];
    snprintf(path, sizeof path, "%s/rank%d.log", dir, rank);
    g_rank_file = fopen(path, "a");
    return g_rank_file ? 0 : -1;
}

void spry_log(spry_log_level level, const char *fmt, ...) {
    if (g_level < 0) g_level = level_from_env();
    if ((int)level > g_level) return;
    static const char *tags[] = {"error", "warn", "info", "debug"};
    char    buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (g_rank == 0) {
        fprintf(stderr, "spry %s: %s\n", tags[level], buf);
        return;
    }
    if (level == SPRY_LOG_ERROR) fprintf(stderr, "spry %s (rank %d): %s\n", tags[level], g_rank, buf);
    if (g_rank_file) {
        fprintf(g_rank_file, "spry %s: %s\n", tags[level], buf);
        fflush(g_rank_file);
    }
}
