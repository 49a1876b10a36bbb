/*
 * fileio.h - THE bounded whole-file reader (the one file loader every caller
 * uses, like OpenSSH's sshbuf_load_file).
 *
 * js_file_read opens with O_CLOEXEC|O_NOCTTY|O_NONBLOCK (a FIFO or a device
 * named by mistake neither blocks the open nor becomes a controlling terminal)
 * and O_NOFOLLOW unless the caller asks to follow, accepts only a regular file,
 * refuses one whose size is over the limit, and reads to the limit plus one
 * byte whatever fstat said, so a file that grows while it is read is caught
 * rather than truncated. It does not build messages: it says what failed
 * (js_file_fail) with the errno and what fstat saw, and the caller words the
 * error in its own reason family (state files use js_statefile_read, which
 * maps to "<domain>.io" / "<domain>.too_large").
 */
#ifndef JS_FILEIO_H
#define JS_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

#include "err.h"

/* What went wrong; JS_FILE_OK (0) on success. */
typedef enum js_file_fail {
    JS_FILE_OK = 0,
    JS_FILE_OPEN,        /* open(2) failed; info.sys_errno (ENOENT: no such file) */
    JS_FILE_NOT_REGULAR, /* fstat failed (info.stat_ok false) or not a regular file */
    JS_FILE_TOO_LARGE,   /* over max, by fstat (info.size) or while reading (grew) */
    JS_FILE_READ,        /* read(2) failed; info.sys_errno */
    JS_FILE_NOMEM,       /* out of memory */
} js_file_fail;

/* What the reader saw, for the caller's message and its own checks (e.g. the
 * PIN file's mode, a size that must not change while reading). */
typedef struct js_file_info {
    int sys_errno;  /* for JS_FILE_OPEN and JS_FILE_READ */
    int stat_ok;    /* fstat succeeded: mode and size below are valid */
    mode_t mode;    /* st_mode of the opened file */
    long long size; /* st_size at open */
} js_file_info;

/* Flags.
 * JS_FILE_FOLLOW: follow a symlink in the last component. Only for files the
 *   operator names in the configuration (config, policy, TLS material, the PIN
 *   file; in a Kubernetes secret volume every file is a symlink), never for
 *   files the daemon writes itself.
 * JS_FILE_SECRET: the content is secret (PIN, private key): every copy the
 *   reader makes or frees is wiped; the caller wipes *out when done. */
#define JS_FILE_FOLLOW 0x1u
#define JS_FILE_SECRET 0x2u

/*
 * Reads the whole regular file at path, at most max bytes (max < SIZE_MAX - 1),
 * into a malloc'd buffer with a NUL after the len bytes (*out; the caller
 * frees it). On failure *out is NULL, *len 0, and no fd is left open.
 * info may be NULL.
 */
js_file_fail js_file_read(const char *path, size_t max, unsigned flags, char **out, size_t *len,
                          js_file_info *info) JS_WUR;

#endif
