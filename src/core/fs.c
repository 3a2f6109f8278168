/*
 * fs.c -- whole-file reads, mkdir -p, a monotonic clock (see fs.h).
 */
#define _POSIX_C_SOURCE 200809L
#include "spry/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

spry_status spry_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return spry_errorf(errno == ENOENT ? SPRY_ERR_NOT_FOUND : SPRY_ERR_IO, "%s: cannot read: %s", path,
                           strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return spry_errorf(SPRY_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    if (max_bytes > 0 && n > max_bytes) {
        fclose(f);
        return spry_errorf(SPRY_ERR_FORMAT, "%s: %zu bytes, more than the limit of %zu for this kind of file", path,
                           n, max_bytes);
    }
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return spry_errorf(SPRY_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    size_t got = fread(b, 1, n, f);
    int    err = ferror(f);
    fclose(f);
    if (got != n || err) {
        free(b);
        return spry_errorf(SPRY_ERR_IO, "%s: read failed", path);
    }
    b[n] = 0;
    *out = b;
    if (len) *len = n;
    return SPRY_OK;
}

spry_status spry_mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return spry_errorf(SPRY_ERR_IO, "%.64s...: path too long", path);
    for (char *q = buf + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(buf, 0755) && errno != EEXIST)
                return spry_errorf(SPRY_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
            *q = '/';
        }
    if (mkdir(buf, 0755) && errno != EEXIST)
        return spry_errorf(SPRY_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    return SPRY_OK;
}

double spry_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
