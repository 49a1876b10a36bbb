/*
 * clock.h - the one reader of the monotonic clock, for deadlines, latencies
 * and rate limiting (never for timestamps that leave the process: those are
 * CLOCK_REALTIME and belong to the caller).
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

#endif
