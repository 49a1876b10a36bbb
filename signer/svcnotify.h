/*
 * svcnotify.h - telling the service manager what jwt-signerd is doing
 * (sd_notify(3), systemd.service(5) Type=notify): progress while it starts,
 * READY once every listener is bound, RELOADING/READY around a policy
 * reload, STOPPING when a stop begins, and WATCHDOG keep-alives while the
 * main loop turns.
 *
 * Without a service manager (NOTIFY_SOCKET unset: a shell, a container, the
 * tests) every call does nothing and no thread is started. libsystemd's
 * sd_notify does the socket work; this file only decides what to say and
 * when.
 */
#ifndef JS_SIGNERD_SVCNOTIFY_H
#define JS_SIGNERD_SVCNOTIFY_H

#include <stdint.h>

typedef struct js_svcnotify js_svcnotify;

/* Reads the watchdog interval systemd set (WATCHDOG_USEC for this pid).
 * progress_every_ms: how often js_svcnotify_starting looks for progress
 * (the daemon: 10 s). NULL only when out of memory. */
js_svcnotify *js_svcnotify_new(int64_t progress_every_ms);
/* Ends the start-up thread if it still runs. */
void js_svcnotify_free(js_svcnotify *n);

/* Start-up may take minutes: the audit log's recovery scan and the issued-
 * token index read the whole log. Until js_svcnotify_ready, a thread looks
 * every progress_every_ms and, when this process used CPU time since its
 * last look, extends systemd's start timeout by a minute (EXTEND_TIMEOUT_USEC)
 * with a STATUS line. A start that makes no progress (a hung HSM login) gets
 * no extension and ends at the unit's TimeoutStartSec. */
void js_svcnotify_starting(js_svcnotify *n);
/* READY=1 with a STATUS= line (printable text; cut at 200 bytes); ends the
 * start-up thread first. */
void js_svcnotify_ready(js_svcnotify *n, const char *status);
/* RELOADING=1 before a policy reload; js_svcnotify_ready after it. */
void js_svcnotify_reloading(js_svcnotify *n);
/* STOPPING=1: in-flight calls are being answered, then the process exits. */
void js_svcnotify_stopping(js_svcnotify *n);
/* Called by the main loop on every turn: WATCHDOG=1 every 5 s (or half the
 * watchdog interval if that is shorter). The keep-alives prove that the main
 * loop turns, nothing more: one that stops turning (a deadlock, a wait that
 * never ends) stops them, and systemd kills and restarts the daemon after
 * WatchdogSec. */
void js_svcnotify_tick(js_svcnotify *n, int64_t now_ms);
/* The watchdog interval in ms, 0 when systemd set none. */
int64_t js_svcnotify_watchdog_ms(const js_svcnotify *n);

#endif
