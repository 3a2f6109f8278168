/*
 * fs.h -- small file-system helpers shared by the library: whole-file reads, mkdir -p, a
 * monotonic clock.
 */
#ifndef SPRY_FS_H
#define SPRY_FS_H

#include <stddef.h>

#include "spry/status.h"

// Reads the regular file at path into a malloc'd, NUL-terminated buffer (*out, free() it) of
// *len bytes (the NUL not counted; len may be NULL). max_bytes > 0 refuses larger files with
// SPRY_ERR_FORMAT naming the file, its size and the limit -- never a silent truncation.
// Errors: SPRY_ERR_NOT_FOUND (no such file), SPRY_ERR_IO (unreadable, not a regular file),
// SPRY_ERR_NOMEM; *out is NULL then.
spry_status spry_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

// Creates path and its missing parents (mode 0755), as mkdir -p. SPRY_ERR_IO naming the
// component that could not be created.
spry_status spry_mkdir_p(const char *path);

// Seconds on a monotonic clock (for rates and ETAs).
double spry_now(void);

#endif
