/*
 * statefile.h - small state files that must survive crashes: read bounded,
 * replaced atomically.
 *
 * The daemon keeps its run-time state (key versions, frozen callers,
 * incident mode) in files like these. A replace writes a new temp file in the
 * same directory (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: a stale temp file or
 * a planted symlink is never opened), fsyncs it, renames it over the target
 * and fsyncs the directory, so after a crash the file is either the old or
 * the new version. Reason codes are "<domain>.io" and "<domain>.too_large".
 */
#ifndef JS_STATEFILE_H
#define JS_STATEFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Reads the whole regular file at path (no symlink followed) into a malloc'd,
 * NUL-terminated buffer of at most max bytes, with js_file_read (fileio.h).
 * A missing file sets *absent and returns JS_OK with *out NULL. Larger than
 * max: JS_ECONFIG "<domain>.too_large". */
js_status js_statefile_read(const char *path, size_t max, const char *domain, char **out,
                            size_t *len, bool *absent, js_err *err) JS_WUR;

/* Atomically replaces path with len bytes of data (see above). */
js_status js_statefile_write(const char *path, const void *data, size_t len, const char *domain,
                             js_err *err) JS_WUR;

/* JS_STATEFILE_NO_SYNC: still a new temp file and a rename, but no fsync of
 * the file or the directory. Only for the audit log's test-only
 * `audit.fsync: false` (benchmarks), never for state the daemon relies on. */
#define JS_STATEFILE_NO_SYNC 0x1u
js_status js_statefile_write_flags(const char *path, const void *data, size_t len,
                                   const char *domain, unsigned flags, js_err *err) JS_WUR;

#endif
