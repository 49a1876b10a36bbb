/*
 * statefile.c - bounded reads and crash-safe replacement of state files
 * (see statefile.h).
 */
#include "statefile.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static js_status io_err(js_err *err, const char *domain, const char *fmt, ...) JS_PRINTF(3, 4);

static js_status io_err(js_err *err, const char *domain, const char *fmt, ...)
{
    /* The "<domain>.io" rows of reasons.def (audit.io, control.io, keystate.io). */
    js_reason reason = js_reason_lookup(domain, "io");
    char msg[JS_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return js_err_set(err, JS_EUNAVAIL, reason, "%s", msg);
}

js_status js_statefile_read(const char *path, size_t max, const char *domain, char **out,
                            size_t *len, bool *absent, js_err *err)
{
    *absent = false;
    js_file_info fi;
    switch (js_file_read(path, max, 0, out, len, &fi)) {
    case JS_FILE_OK:
        return JS_OK;
    case JS_FILE_OPEN:
        if (fi.sys_errno == ENOENT) {
            *absent = true;
            return JS_OK;
        }
        return io_err(err, domain, "%s: cannot open: %s", path, strerror(fi.sys_errno));
    case JS_FILE_NOT_REGULAR:
        return js_err_set(err, JS_ECONFIG, js_reason_lookup(domain, "io"), "%s: not a regular file",
                          path);
    case JS_FILE_TOO_LARGE:
        /* Over the limit when opened, or grew past it while being read. */
        if (fi.size > 0 && (unsigned long long)fi.size > max)
            return js_err_set(err, JS_ECONFIG, js_reason_lookup(domain, "too_large"),
                              "%s: %lld bytes; the limit is %zu", path, fi.size, max);
        return js_err_set(err, JS_ECONFIG, js_reason_lookup(domain, "too_large"),
                          "%s: larger than %zu bytes", path, max);
    case JS_FILE_READ:
        return io_err(err, domain, "%s: read failed: %s", path, strerror(fi.sys_errno));
    case JS_FILE_NOMEM:
    default:
        return js_err_oom(err);
    }
}

static js_status write_all(int fd, const char *p, size_t len, const char *tmp, const char *domain,
                           js_err *err)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return io_err(err, domain, "%s: write failed: %s", tmp,
                          n == 0 ? "short write" : strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return JS_OK;
}

static js_status sync_dir(const char *path, const char *domain, js_err *err)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return io_err(err, domain, "%s: cannot open directory: %s", dir, strerror(errno));
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    if (rc != 0)
        return io_err(err, domain, "%s: directory fsync failed: %s", dir, strerror(e));
    return JS_OK;
}

/* Creates PATH.tmp.<pid>.<n> with O_EXCL: a stale temp file from a crash, or
 * a planted symlink, is never opened, just skipped. */
static js_status create_temp(const char *path, char *tmp, size_t cap, int *fd_out,
                             const char *domain, js_err *err)
{
    *fd_out = -1;
    for (unsigned n = 0; n < 100; n++) {
        int w = snprintf(tmp, cap, "%s.tmp.%ld.%u", path, (long)getpid(), n);
        if (w <= 0 || (size_t)w >= cap)
            return io_err(err, domain, "%s: path too long", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) {
            *fd_out = fd;
            return JS_OK;
        }
        if (errno != EEXIST)
            return io_err(err, domain, "%s: cannot create: %s", tmp, strerror(errno));
    }
    return io_err(err, domain, "%s: too many stale temp files", path);
}

js_status js_statefile_write(const char *path, const void *data, size_t len, const char *domain,
                             js_err *err)
{
    return js_statefile_write_flags(path, data, len, domain, 0, err);
}

js_status js_statefile_write_flags(const char *path, const void *data, size_t len,
                                   const char *domain, unsigned flags, js_err *err)
{
    char tmp[4200];
    int fd = -1;
    bool sync = (flags & JS_STATEFILE_NO_SYNC) == 0;
    JS_GUARD(create_temp(path, tmp, sizeof(tmp), &fd, domain, err));
    js_status st = write_all(fd, data, len, tmp, domain, err);
    if (st == JS_OK && sync && fsync(fd) != 0)
        st = io_err(err, domain, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == JS_OK)
        st = io_err(err, domain, "%s: close failed: %s", tmp, strerror(errno));
    if (st == JS_OK && rename(tmp, path) != 0)
        st = io_err(err, domain, "cannot rename %s: %s", tmp, strerror(errno));
    if (st != JS_OK) {
        unlink(tmp);
        return st;
    }
    /* The rename is durable only once the directory entry is on disk. */
    return sync ? sync_dir(path, domain, err) : JS_OK;
}
