/*
 * clock.h - the clocks: the monotonic clock, for deadlines, latencies and
 * rate limiting; the wall clock (CLOCK_REALTIME) only for timestamps that
 * leave the process (log lines, audit records, events), and the one
 * formatter of those timestamps.
 */
#ifndef JS_CLOCK_H
#define JS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds, microseconds and nanoseconds. */
int64_t js_mono_ms(void);
int64_t js_mono_us(void);
uint64_t js_mono_ns(void);

/* The CLOCK_MONOTONIC time ms milliseconds from now, for pthread_cond_timedwait
 * on a condition variable created with pthread_condattr_setclock(CLOCK_MONOTONIC). */
struct timespec js_mono_deadline(int64_t ms);

/* CLOCK_REALTIME in milliseconds since 1970-01-01T00:00:00Z. */
int64_t js_wall_ms(void);

#define JS_WALL_TIME_LEN 24 /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */

/* ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ" (RFC 3339, UTC, always
 * exactly JS_WALL_TIME_LEN characters, NUL-terminated): the time of every
 * log line and audit record. Pure arithmetic -- gmtime_r would take glibc's
 * timezone lock on every call. A time outside years 0..9999 (a clock gone
 * wild) is written as the epoch, so the width never changes. */
void js_wall_format(int64_t ms, char out[JS_WALL_TIME_LEN + 1]);

#endif
