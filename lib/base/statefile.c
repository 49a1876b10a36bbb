/*
 * statefile.c - bounded reads and crash-safe replacement of state files
 * (see statefile.h).
 */
#include "statefile.h"

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
    *out = NULL;
    *len = 0;
    *absent = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) {
            *absent = true;
            return JS_OK;
        }
        return io_err(err, domain, "%s: cannot open: %s", path, strerror(errno));
    }
    js_reason reason = js_reason_lookup(domain, "too_large");
    struct stat sb;
    js_status st = JS_OK;
    char *buf = NULL;
    size_t n = 0;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        reason = js_reason_lookup(domain, "io");
        st = js_err_set(err, JS_ECONFIG, reason, "%s: not a regular file", path);
        goto out;
    }
    if ((size_t)sb.st_size > max) {
        st = js_err_set(err, JS_ECONFIG, reason, "%s: %lld bytes; the limit is %zu", path,
                        (long long)sb.st_size, max);
        goto out;
    }
    /* Read to the limit plus one, whatever fstat said: the file may grow. */
    buf = malloc(max + 2);
    if (buf == NULL) {
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        goto out;
    }
    while (n < max + 1) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = io_err(err, domain, "%s: read failed: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max) {
        st = js_err_set(err, JS_ECONFIG, reason, "%s: larger than %zu bytes", path, max);
        goto out;
    }
    buf[n] = '\0';
out:
    close(fd);
    if (st != JS_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return JS_OK;
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
    char tmp[4200];
    int fd = -1;
    JS_GUARD(create_temp(path, tmp, sizeof(tmp), &fd, domain, err));
    js_status st = write_all(fd, data, len, tmp, domain, err);
    if (st == JS_OK && fsync(fd) != 0)
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
    return sync_dir(path, domain, err);
}
