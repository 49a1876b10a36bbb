/*
 * test_fdreserve.c - the descriptor reserve: held at start, handed back at
 * once when descriptors run out, taken again only when they are free, and
 * never more than its budget. Runs under a low RLIMIT_NOFILE set here.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdreserve.h"

#define LIMIT 64

static int set_limit(rlim_t soft)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rl.rlim_cur = soft;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

/* Opens descriptors until EMFILE; returns how many, stored in fds. */
static int exhaust(int *fds, int cap)
{
    int n = 0;
    while (n < cap) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        fds[n++] = fd;
    }
    return n;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

static void test_over_max_refused(void **state)
{
    (void)state;
    js_err err;
    js_err_clear(&err);
    js_fdreserve *r = NULL;
    assert_int_equal(js_fdreserve_new(JS_FDRESERVE_MAX + 1, &r, &err), JS_EINTERNAL);
    assert_null(r);
}

static void test_not_enough_descriptors_refused(void **state)
{
    (void)state;
    assert_int_equal(set_limit(LIMIT), 0);
    int fds[LIMIT];
    int n = exhaust(fds, LIMIT);
    /* Free 3: a reserve of 8 cannot be held. */
    close_all(fds + n - 3, 3);
    js_err err;
    js_err_clear(&err);
    js_fdreserve *r = NULL;
    assert_int_equal(js_fdreserve_new(8, &r, &err), JS_EINTERNAL);
    assert_null(r);
    assert_string_equal(js_reason_name(err.reason), "fd.reserve");
    close_all(fds, n - 3);
}

static void test_release_hands_back_and_refill_takes_again(void **state)
{
    (void)state;
    assert_int_equal(set_limit(LIMIT), 0);
    js_err err;
    js_err_clear(&err);
    js_fdreserve *r = NULL;
    assert_int_equal(js_fdreserve_new(8, &r, &err), JS_OK);
    assert_int_equal(js_fdreserve_held(r), 8);
    assert_int_equal(js_fdreserve_budget(r), 8);

    /* A flood takes every other descriptor. */
    int fds[LIMIT];
    int n = exhaust(fds, LIMIT);
    assert_true(n > 0);
    assert_int_equal(open("/dev/null", O_RDONLY), -1);

    /* Released: exactly the budget is free again for the HSM and the log. */
    assert_int_equal(js_fdreserve_release(r), 8);
    assert_int_equal(js_fdreserve_held(r), 0);
    assert_int_equal(js_fdreserve_release(r), 0); /* idempotent */
    int extra[16];
    int m = exhaust(extra, 16);
    assert_int_equal(m, 8);
    /* None free: the lowest free descriptor is the limit itself. */
    assert_int_equal(js_fd_lowest_free(), LIMIT);

    /* Still exhausted: refill cannot take anything. */
    assert_int_equal(js_fdreserve_refill(r), 0);
    close_all(extra, m);
    /* The flood ends: refill takes the budget and no more. */
    close_all(fds, n);
    assert_int_equal(js_fdreserve_refill(r), 8);
    assert_int_equal(js_fdreserve_held(r), 8);
    assert_int_equal(js_fdreserve_refill(r), 8);
    js_fdreserve_free(r);
}

static void test_raise_limit_and_count(void **state)
{
    (void)state;
    assert_int_equal(set_limit(LIMIT), 0);
    unsigned long soft = 0, hard = 0;
    js_err err;
    js_err_clear(&err);
    assert_int_equal(js_fd_raise_limit(&soft, &hard, &err), JS_OK);
    assert_int_equal(soft, hard);
    long before = js_fd_open_count();
    assert_true(before >= 3);
    /* Every descriptor below the lowest free one is open. */
    long lowest = js_fd_lowest_free();
    assert_true(lowest >= 3 && lowest <= before);
    int low = open("/dev/null", O_RDONLY);
    assert_int_equal(low, lowest);
    assert_true(js_fd_lowest_free() > lowest);
    close(low);
    assert_int_equal(js_fd_lowest_free(), lowest);
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(js_fd_open_count(), before + 1);
    close(fd);
    assert_int_equal(js_fd_open_count(), before);
}

/* A listening socket on 127.0.0.1 with a kernel-chosen port. */
static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
    close(fd);
    return rc;
}

static void test_shutdown_listeners_only_that_port(void **state)
{
    (void)state;
    int p1 = 0, p2 = 0;
    int l1 = listen_any(&p1), l2 = listen_any(&p2);
    assert_true(l1 >= 0 && l2 >= 0);
    assert_int_equal(connect_to(p1), 0);
    /* The excepted descriptor is left alone. */
    assert_int_equal(js_fd_shutdown_listeners(p1, l1), 0);
    assert_int_equal(connect_to(p1), 0);
    assert_int_equal(js_fd_shutdown_listeners(p1, -1), 1);
    /* Shut down, the socket leaves the kernel's lookup: connections are refused. */
    assert_int_equal(connect_to(p1), -1);
    assert_int_equal(connect_to(p2), 0);
    /* Not listening any more: a second call finds nothing. */
    assert_int_equal(js_fd_shutdown_listeners(p1, -1), 0);
    close(l1);
    close(l2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_over_max_refused),
        cmocka_unit_test(test_not_enough_descriptors_refused),
        cmocka_unit_test(test_release_hands_back_and_refill_takes_again),
        cmocka_unit_test(test_raise_limit_and_count),
        cmocka_unit_test(test_shutdown_listeners_only_that_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
