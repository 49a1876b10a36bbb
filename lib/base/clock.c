/*
 * clock.c - the monotonic clock (see clock.h).
 */
#include "clock.h"

static struct timespec now(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC cannot fail on Linux for a valid pointer. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

int64_t js_mono_ms(void)
{
    struct timespec ts = now();
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t js_mono_us(void)
{
    struct timespec ts = now();
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t js_mono_ns(void)
{
    struct timespec ts = now();
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec js_mono_deadline(int64_t ms)
{
    struct timespec ts = now();
    if (ms < 0)
        ms = 0;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}
