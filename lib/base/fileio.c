/*
 * fileio.c - the one bounded whole-file reader (see fileio.h).
 */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

static void wipe_free(char *p, size_t n, unsigned flags)
{
    if (p != NULL && (flags & JS_FILE_SECRET))
        OPENSSL_cleanse(p, n);
    free(p);
}

/* Grows buf from *cap to ncap bytes; a secret buffer is copied and the old
 * one wiped, since realloc would leave the old copy in the heap. */
static char *grow(char *buf, size_t *cap, size_t ncap, size_t used, unsigned flags)
{
    if (!(flags & JS_FILE_SECRET)) {
        char *p = realloc(buf, ncap);
        if (p != NULL)
            *cap = ncap;
        return p;
    }
    char *p = malloc(ncap);
    if (p == NULL)
        return NULL;
    memcpy(p, buf, used);
    wipe_free(buf, *cap, flags);
    *cap = ncap;
    return p;
}

js_file_fail js_file_read(const char *path, size_t max, unsigned flags, char **out, size_t *len,
                          js_file_info *info)
{
    js_file_info dummy;
    if (info == NULL)
        info = &dummy;
    memset(info, 0, sizeof(*info));
    *out = NULL;
    *len = 0;
    if (max >= SIZE_MAX - 1)
        max = SIZE_MAX - 2;

    int oflags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    if (!(flags & JS_FILE_FOLLOW))
        oflags |= O_NOFOLLOW;
    int fd = open(path, oflags);
    if (fd < 0) {
        info->sys_errno = errno;
        return JS_FILE_OPEN;
    }
    js_file_fail fail = JS_FILE_OK;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        fail = JS_FILE_NOT_REGULAR;
        goto out;
    }
    info->stat_ok = 1;
    info->mode = sb.st_mode;
    info->size = (long long)sb.st_size;
    if (!S_ISREG(sb.st_mode)) {
        fail = JS_FILE_NOT_REGULAR;
        goto out;
    }
    if (sb.st_size < 0 || (uint64_t)sb.st_size > max) {
        fail = JS_FILE_TOO_LARGE;
        goto out;
    }
    /* A regular file: blocking reads again (O_NONBLOCK only guarded the open). */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);

    /* Room for what fstat said plus one byte (growth) plus the NUL; more only
     * if the file really grows, and never past max + 1 bytes of content. */
    cap = (size_t)sb.st_size + 2;
    buf = malloc(cap);
    if (buf == NULL) {
        fail = JS_FILE_NOMEM;
        goto out;
    }
    for (;;) {
        if (n == cap - 1) {
            if (n > max)
                break;
            size_t ncap = cap - 1 > (max + 1) / 2 ? max + 2 : 2 * (cap - 1) + 1;
            char *p = grow(buf, &cap, ncap, n, flags);
            if (p == NULL) {
                fail = JS_FILE_NOMEM;
                goto out;
            }
            buf = p;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            info->sys_errno = errno;
            fail = JS_FILE_READ;
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > max)
        fail = JS_FILE_TOO_LARGE;
out:
    close(fd);
    if (fail != JS_FILE_OK) {
        wipe_free(buf, cap, flags);
        return fail;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return JS_FILE_OK;
}
