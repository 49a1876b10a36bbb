/*
 * ticker.h - a thread that calls a function at a fixed period until it is
 * freed: jwt-signerd's HSM health probe, its fd watcher, the HTTP connection
 * sweeper and the start-up extensions sent to systemd. One copy of the stop
 * flag, condition variable and join that each of them needs, so none of them
 * can get the wake-up or the clock wrong on its own.
 */
#ifndef JS_TICKER_H
#define JS_TICKER_H

#include <stdint.h>

#include "err.h"

typedef struct js_ticker js_ticker;

/* Called on the ticker's thread with no lock of the ticker held, so fn may
 * block (the health probe waits on the HSM for seconds); js_ticker_free
 * then waits for that call to return. */
typedef void (*js_ticker_fn)(void *ctx);

/* Starts a thread that calls fn(ctx) every period_ms (waiting on
 * CLOCK_MONOTONIC, the period counted from the end of the previous call; the
 * first call one period after this returns) until js_ticker_free. ctx is
 * borrowed: it must outlive the ticker. NULL if the thread (or its
 * mutex/condvar) cannot be made, or period_ms < 1 or fn is NULL: the caller
 * reports that with its own reason. */
js_ticker *js_ticker_new(int64_t period_ms, js_ticker_fn fn, void *ctx) JS_WUR;

/* Stops the ticker: wakes its wait at once, waits for a call in progress to
 * return, joins, frees. NULL is a no-op. Must not be called from fn (the
 * thread would join itself). */
void js_ticker_free(js_ticker *t);

#endif
