/*
 * faultio.c - an LD_PRELOAD I/O wrapper for fail-closed tests.
 *
 * While the file named by JS_FAULT_TRIGGER exists, writes to and
 * fdatasync/fsync of any file whose path contains JS_FAULT_MATCH (default
 * "audit-") fail: writes with ENOSPC (a full disk), syncs with EIO (the
 * kernel lost dirty pages). Everything else passes straight through. The
 * product is not changed or told; it sees what a failing disk shows it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int faulty(int fd)
{
    const char *trigger = getenv("JS_FAULT_TRIGGER");
    if (trigger == NULL || access(trigger, F_OK) != 0)
        return 0;
    const char *match = getenv("JS_FAULT_MATCH");
    if (match == NULL)
        match = "audit-";
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    return strstr(path, match) != NULL;
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

ssize_t write(int fd, const void *buf, size_t len)
{
    if (faulty(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return REAL("write", ssize_t(*)(int, const void *, size_t))(fd, buf, len);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (faulty(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return REAL("writev", ssize_t(*)(int, const struct iovec *, int))(fd, iov, cnt);
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (faulty(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return REAL("pwrite", ssize_t(*)(int, const void *, size_t, off_t))(fd, buf, len, off);
}

int fdatasync(int fd)
{
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return REAL("fdatasync", int (*)(int))(fd);
}

int fsync(int fd)
{
    if (faulty(fd)) {
        errno = EIO;
        return -1;
    }
    return REAL("fsync", int (*)(int))(fd);
}
