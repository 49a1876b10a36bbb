/*
 * svcnotify.c - sd_notify(3) messages for systemd's Type=notify.
 */
#include "svcnotify.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "ticker.h"

#define STATUS_MAX 200
/* Keep-alives at least this often, whatever WatchdogSec is: a missed one or
 * two must not matter. */
#define PING_EVERY_MAX_MS 5000
/* Each sign of progress during start-up moves systemd's start deadline to
 * now + this. */
#define EXTEND_BY_USEC 60000000ULL
/* CPU time used since the last look that counts as progress. */
#define PROGRESS_CPU_NS 10000000LL

struct js_svcnotify {
    int64_t watchdog_ms; /* 0: no watchdog */
    int64_t ping_every_ms;
    int64_t last_ping_ms;
    int64_t progress_every_ms;
    /* The start-up thread: runs from js_svcnotify_starting until
     * stop_starting; NULL when not running. t0 and cpu_seen are set before
     * it starts and then only touched by it. */
    js_ticker *starting;
    struct timespec t0;
    int64_t cpu_seen;
};

static int64_t cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

js_svcnotify *js_svcnotify_new(int64_t progress_every_ms)
{
    js_svcnotify *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID is ours (or unset). */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
        n->watchdog_ms = (int64_t)(usec / 1000);
        n->ping_every_ms =
            n->watchdog_ms / 2 < PING_EVERY_MAX_MS ? n->watchdog_ms / 2 : PING_EVERY_MAX_MS;
    }
    n->progress_every_ms = progress_every_ms > 0 ? progress_every_ms : 10000;
    return n;
}

/* Every progress_every_ms during start-up (ticker.h): an extension of
 * systemd's start deadline, but only when the process used CPU since the last
 * look, so a start hung on something (an HSM login) still times out. */
static void starting_tick(void *arg)
{
    js_svcnotify *n = arg;
    int64_t cpu = cpu_ns();
    if (cpu - n->cpu_seen < PROGRESS_CPU_NS)
        return; /* no progress: no extension */
    n->cpu_seen = cpu;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    sd_notifyf(0,
               "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=starting for %lld s: recovering the audit "
               "log and rebuilding the token index (minutes for a large log)",
               EXTEND_BY_USEC, (long long)(now.tv_sec - n->t0.tv_sec));
}

void js_svcnotify_starting(js_svcnotify *n)
{
    if (n == NULL || n->starting != NULL || getenv("NOTIFY_SOCKET") == NULL)
        return;
    clock_gettime(CLOCK_MONOTONIC, &n->t0);
    n->cpu_seen = cpu_ns();
    /* Without the thread the start simply gets no extension. */
    n->starting = js_ticker_new(n->progress_every_ms, starting_tick, n);
}

static void stop_starting(js_svcnotify *n)
{
    js_ticker_free(n->starting);
    n->starting = NULL;
}

void js_svcnotify_free(js_svcnotify *n)
{
    if (n == NULL)
        return;
    stop_starting(n);
    free(n);
}

void js_svcnotify_ready(js_svcnotify *n, const char *status)
{
    if (n == NULL)
        return;
    stop_starting(n);
    /* %.*s: a status line is never longer than STATUS_MAX, and a newline in
     * it could not start a second assignment: callers pass our own text. */
    sd_notifyf(0, "READY=1\nSTATUS=%.*s", STATUS_MAX, status != NULL ? status : "");
}

void js_svcnotify_reloading(js_svcnotify *n)
{
    if (n == NULL)
        return;
    sd_notify(0, "RELOADING=1\nSTATUS=reloading the policy");
}

void js_svcnotify_stopping(js_svcnotify *n)
{
    if (n == NULL)
        return;
    sd_notify(0, "STOPPING=1\nSTATUS=stopping: answering in-flight calls");
}

void js_svcnotify_tick(js_svcnotify *n, int64_t now_ms)
{
    if (n == NULL || n->watchdog_ms == 0 || now_ms - n->last_ping_ms < n->ping_every_ms)
        return;
    sd_notify(0, "WATCHDOG=1");
    n->last_ping_ms = now_ms;
}

int64_t js_svcnotify_watchdog_ms(const js_svcnotify *n)
{
    return n != NULL ? n->watchdog_ms : 0;
}
