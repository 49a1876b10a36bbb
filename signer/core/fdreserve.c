/*
 * fdreserve.c - descriptors held back for the HSM, audit log and HTTP server
 * (see fdreserve.h for why).
 */
#include "fdreserve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct js_fdreserve {
    size_t budget;
    /* -1 = empty slot. Slots are swapped atomically: release may run on any
     * thread while the main thread refills. */
    atomic_int fds[JS_FDRESERVE_MAX];
};

js_status js_fdreserve_new(size_t count, js_fdreserve **out, js_err *err)
{
    *out = NULL;
    JS_ENSURE(count <= JS_FDRESERVE_MAX, err, JS_EINTERNAL, JS_R_FD_RESERVE,
              "fd reserve of %zu is over the maximum %d", count, JS_FDRESERVE_MAX);
    js_fdreserve *r = calloc(1, sizeof(*r));
    JS_ENSURE_ALLOC(r, err);
    r->budget = count;
    for (size_t i = 0; i < JS_FDRESERVE_MAX; i++)
        atomic_init(&r->fds[i], -1);
    size_t held = js_fdreserve_refill(r);
    if (held < count) {
        js_fdreserve_free(r);
        return js_err_set(err, JS_EINTERNAL, JS_R_FD_RESERVE,
                          "cannot hold %zu spare file descriptors (got %zu): raise the fd limit",
                          count, held);
    }
    *out = r;
    return JS_OK;
}

size_t js_fdreserve_release(js_fdreserve *r)
{
    size_t n = 0;
    if (r == NULL)
        return 0;
    for (size_t i = 0; i < r->budget; i++) {
        int fd = atomic_exchange(&r->fds[i], -1);
        if (fd >= 0) {
            close(fd);
            n++;
        }
    }
    return n;
}

size_t js_fdreserve_refill(js_fdreserve *r)
{
    size_t held = 0;
    for (size_t i = 0; i < r->budget; i++) {
        if (atomic_load(&r->fds[i]) >= 0) {
            held++;
            continue;
        }
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break; /* EMFILE: still exhausted; try again later */
        int expected = -1;
        if (atomic_compare_exchange_strong(&r->fds[i], &expected, fd))
            held++;
        else
            close(fd);
    }
    return held;
}

size_t js_fdreserve_held(const js_fdreserve *r)
{
    size_t held = 0;
    for (size_t i = 0; r != NULL && i < r->budget; i++)
        if (atomic_load(&((js_fdreserve *)r)->fds[i]) >= 0)
            held++;
    return held;
}

size_t js_fdreserve_budget(const js_fdreserve *r)
{
    return r != NULL ? r->budget : 0;
}

void js_fdreserve_free(js_fdreserve *r)
{
    if (r == NULL)
        return;
    js_fdreserve_release(r);
    free(r);
}

js_status js_fd_raise_limit(unsigned long *soft, unsigned long *hard, js_err *err)
{
    struct rlimit rl;
    JS_ENSURE(getrlimit(RLIMIT_NOFILE, &rl) == 0, err, JS_EINTERNAL, JS_R_FD_LIMIT,
              "getrlimit(RLIMIT_NOFILE) failed");
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    *soft = (unsigned long)rl.rlim_cur;
    *hard = (unsigned long)rl.rlim_max;
    return JS_OK;
}

long js_fd_lowest_free(void)
{
    int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        struct rlimit rl;
        return getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : 0;
    }
    close(fd);
    return fd;
}

long js_fd_open_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

int js_fd_shutdown_listeners(int port, int except_fd)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    int self = dirfd(d), n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end = NULL;
        long fd = strtol(e->d_name, &end, 10);
        if (e->d_name[0] == '.' || end == e->d_name || *end != '\0' || fd == self || fd < 0 ||
            fd > INT32_MAX || fd == except_fd)
            continue;
        struct stat st;
        int listening = 0;
        socklen_t len = sizeof(listening);
        struct sockaddr_storage ss;
        socklen_t slen = sizeof(ss);
        if (fstat((int)fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
            getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening ||
            getsockname((int)fd, (struct sockaddr *)&ss, &slen) != 0)
            continue;
        int bound = -1;
        if (ss.ss_family == AF_INET)
            bound = ntohs(((const struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            bound = ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
        if (bound == port && shutdown((int)fd, SHUT_RDWR) == 0)
            n++;
    }
    closedir(d);
    return n;
}
