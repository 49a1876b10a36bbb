/*
 * test_svcnotify.c - what jwt-signerd tells systemd (signer/svcnotify.c),
 * read from a datagram socket standing in for systemd's NOTIFY_SOCKET:
 * nothing without one; the start-up extensions only while the process makes
 * progress; READY with its status; keep-alives at their pace; RELOADING and
 * STOPPING.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "svcnotify.h"

typedef struct fixture {
    char dir[64];
    char path[96];
    int fd;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_svcnotify.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/notify", fx->dir);
    fx->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fx->fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx->path);
    assert_int_equal(bind(fx->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", fx->path, 1), 0);
    char usec[32];
    snprintf(usec, sizeof(usec), "%d", 400000); /* WatchdogSec=0.4s */
    assert_int_equal(setenv("WATCHDOG_USEC", usec, 1), 0);
    char pid[32];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    assert_int_equal(setenv("WATCHDOG_PID", pid, 1), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    close(fx->fd);
    unlink(fx->path);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* The next datagram, or "" when none is waiting. */
static const char *next_msg(const fixture *fx, char *buf, size_t cap)
{
    ssize_t n = recv(fx->fd, buf, cap - 1, 0);
    if (n < 0) {
        assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        n = 0;
    }
    buf[n] = '\0';
    return buf;
}

/* The next datagram within ms, or "" when none came: the start-up thread
 * may be slow to look (a sanitizer, a busy machine), so never just once. */
static const char *wait_msg(const fixture *fx, char *buf, size_t cap, int ms)
{
    struct pollfd p = {.fd = fx->fd, .events = POLLIN};
    int r;
    while ((r = poll(&p, 1, ms)) < 0 && errno == EINTR)
        ;
    assert_true(r >= 0);
    return next_msg(fx, buf, cap);
}

static void burn_cpu_ms(long ms)
{
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    volatile unsigned long x = 0;
    do {
        for (int i = 0; i < 100000; i++)
            x += (unsigned long)i;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    } while ((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < ms);
}

static void test_silent_without_notify_socket(void **state)
{
    fixture *fx = *state;
    unsetenv("NOTIFY_SOCKET");
    js_svcnotify *n = js_svcnotify_new(50);
    assert_non_null(n);
    js_svcnotify_starting(n);
    burn_cpu_ms(150);
    js_svcnotify_ready(n, "serving");
    js_svcnotify_tick(n, 1000000);
    js_svcnotify_stopping(n);
    js_svcnotify_free(n);
    char buf[512];
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "");
}

static void test_start_extended_only_on_progress(void **state)
{
    fixture *fx = *state;
    char buf[512];
    js_svcnotify *n = js_svcnotify_new(50);
    assert_non_null(n);
    js_svcnotify_starting(n);
    burn_cpu_ms(300); /* progress: extensions */
    const char *m = wait_msg(fx, buf, sizeof(buf), 5000);
    assert_non_null(strstr(m, "EXTEND_TIMEOUT_USEC=60000000\n"));
    assert_non_null(strstr(m, "STATUS=starting for "));
    /* The looks after the burn may still see its last CPU time (a look the
     * scheduler delays sees it late): drain until twelve looks (600 ms) in a
     * row sent nothing, within 10 s. */
    int drained = 0;
    while (drained < 16 && wait_msg(fx, buf, sizeof(buf), 600)[0] != '\0')
        drained++;
    assert_true(drained < 16);
    /* Asleep (a hung HSM login, say): no CPU used, no extension. */
    struct timespec pause = {0, 300 * 1000 * 1000};
    nanosleep(&pause, NULL);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "");
    js_svcnotify_ready(n, "serving on 127.0.0.1:8443, 1 keys");
    assert_string_equal(next_msg(fx, buf, sizeof(buf)),
                        "READY=1\nSTATUS=serving on 127.0.0.1:8443, 1 keys");
    /* The start-up thread has ended: nothing more however busy we are. */
    burn_cpu_ms(150);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "");
    js_svcnotify_free(n);
}

static void test_watchdog_pace_reload_stop(void **state)
{
    fixture *fx = *state;
    char buf[512];
    js_svcnotify *n = js_svcnotify_new(50);
    assert_non_null(n);
    assert_int_equal(js_svcnotify_watchdog_ms(n), 400);
    js_svcnotify_tick(n, 10000);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "WATCHDOG=1");
    js_svcnotify_tick(n, 10199); /* half the interval (200 ms) not yet passed */
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "");
    js_svcnotify_tick(n, 10200);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "WATCHDOG=1");
    js_svcnotify_reloading(n);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "RELOADING=1\nSTATUS=reloading the policy");
    js_svcnotify_ready(n, "serving; policy reloaded");
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "READY=1\nSTATUS=serving; policy reloaded");
    js_svcnotify_stopping(n);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)),
                        "STOPPING=1\nSTATUS=stopping: answering in-flight calls");
    js_svcnotify_free(n);
    js_svcnotify_free(NULL);
}

static void test_long_watchdog_pings_every_5s(void **state)
{
    fixture *fx = *state;
    char buf[512];
    assert_int_equal(setenv("WATCHDOG_USEC", "120000000", 1), 0); /* WatchdogSec=2min */
    js_svcnotify *n = js_svcnotify_new(50);
    assert_non_null(n);
    assert_int_equal(js_svcnotify_watchdog_ms(n), 120000);
    js_svcnotify_tick(n, 100000);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "WATCHDOG=1");
    js_svcnotify_tick(n, 104999);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "");
    js_svcnotify_tick(n, 105000);
    assert_string_equal(next_msg(fx, buf, sizeof(buf)), "WATCHDOG=1");
    js_svcnotify_free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_silent_without_notify_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_extended_only_on_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_pace_reload_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_watchdog_pings_every_5s, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
