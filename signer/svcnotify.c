/*
 * svcnotify.c - sd_notify(3) messages for systemd's Type=notify.
 */
#include "svcnotify.h"

#include <stdio.h>
#include <stdlib.h>

#include <systemd/sd-daemon.h>

#define STATUS_MAX 200

struct js_svcnotify {
    int64_t watchdog_ms; /* 0: no watchdog */
    int64_t last_ping_ms;
};

js_svcnotify *js_svcnotify_new(void)
{
    js_svcnotify *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return NULL;
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID is ours (or unset). */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000)
        n->watchdog_ms = (int64_t)(usec / 1000);
    return n;
}

void js_svcnotify_free(js_svcnotify *n)
{
    free(n);
}

void js_svcnotify_ready(js_svcnotify *n, const char *status)
{
    if (n == NULL)
        return;
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
    if (n == NULL || n->watchdog_ms == 0 || now_ms - n->last_ping_ms < n->watchdog_ms / 2)
        return;
    sd_notify(0, "WATCHDOG=1");
    n->last_ping_ms = now_ms;
}

int64_t js_svcnotify_watchdog_ms(const js_svcnotify *n)
{
    return n != NULL ? n->watchdog_ms : 0;
}
