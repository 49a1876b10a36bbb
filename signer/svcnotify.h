/*
 * svcnotify.h - telling the service manager what jwt-signerd is doing
 * (sd_notify(3), systemd.service(5) Type=notify): READY once every listener
 * is bound, RELOADING/READY around a policy reload, STOPPING when a stop
 * begins, and WATCHDOG keep-alives while the main loop turns.
 *
 * Without a service manager (NOTIFY_SOCKET unset: a shell, a container, the
 * tests) every call does nothing. libsystemd's sd_notify does the socket
 * work; this file only decides what to say and when.
 */
#ifndef JS_SIGNERD_SVCNOTIFY_H
#define JS_SIGNERD_SVCNOTIFY_H

#include <stdint.h>

typedef struct js_svcnotify js_svcnotify;

/* Reads the watchdog interval systemd set (WATCHDOG_USEC for this pid).
 * NULL only when out of memory. */
js_svcnotify *js_svcnotify_new(void);
void js_svcnotify_free(js_svcnotify *n);

/* READY=1 with a STATUS= line (printable text; cut at 200 bytes). */
void js_svcnotify_ready(js_svcnotify *n, const char *status);
/* RELOADING=1 before a policy reload; js_svcnotify_ready after it. */
void js_svcnotify_reloading(js_svcnotify *n);
/* STOPPING=1: in-flight calls are being answered, then the process exits. */
void js_svcnotify_stopping(js_svcnotify *n);
/* Called by the main loop on every turn: WATCHDOG=1 once half the watchdog
 * interval has passed since the last one. A main loop that stops turning
 * (a deadlock, a hang in a signal's work) stops the keep-alives, and systemd
 * kills and restarts the daemon after WatchdogSec. */
void js_svcnotify_tick(js_svcnotify *n, int64_t now_ms);
/* The watchdog interval in ms, 0 when systemd set none. */
int64_t js_svcnotify_watchdog_ms(const js_svcnotify *n);

#endif
