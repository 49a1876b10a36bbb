/*
 * watchdog.h - an upper bound on a sequence of waits the caller cannot bound
 * one by one (jwt-signerd's shutdown: gRPC's drain, the audit records calls
 * wait for, the final checkpoint, the HSM). A thread waits on a condition
 * variable (CLOCK_MONOTONIC) until the caller says it is done or the limit
 * passes; then it reports the stage the caller was in, once.
 */
#ifndef JS_WATCHDOG_H
#define JS_WATCHDOG_H

#include <stdbool.h>
#include <stdint.h>

typedef struct js_watchdog js_watchdog;

/* Called at most once, on the watchdog's thread, when limit_ms passed
 * before js_watchdog_stop: stage is the last one set, elapsed_ms the time
 * since js_watchdog_start. It may end the process (_exit); if it returns,
 * js_watchdog_stop still joins and frees. */
typedef void (*js_watchdog_fn)(void *ctx, const char *stage, int64_t elapsed_ms);

/* Starts watching; stage names what the caller waits for first. stage
 * strings are borrowed for the watchdog's life (string literals). NULL when
 * no thread or memory could be had: the caller goes on unbounded (and should
 * say so); every function here accepts NULL. */
js_watchdog *js_watchdog_start(int64_t limit_ms, const char *stage, js_watchdog_fn expired,
                               void *ctx);

/* Names what the caller waits for now (reported if the limit passes). */
void js_watchdog_stage(js_watchdog *w, const char *stage);

/* Ends the watch, joins the thread and frees w. True if the limit had
 * passed (expired was called). */
bool js_watchdog_stop(js_watchdog *w);

#endif
