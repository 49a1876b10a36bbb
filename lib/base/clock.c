/*
 * clock.c - the monotonic and wall clocks, and the timestamp format (see
 * clock.h).
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

int64_t js_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Days since 1970-01-01 to the proleptic Gregorian y-m-d (Howard Hinnant's
 * civil_from_days, valid for any int64 day count in range here). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static void put_digits(char *out, unsigned v, int width)
{
    for (int k = width - 1; k >= 0; k--) {
        out[k] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z in ms. */
#define WALL_MIN_MS (-62167219200000LL)
#define WALL_MAX_MS (253402300799999LL)

void js_wall_format(int64_t ms, char out[JS_WALL_TIME_LEN + 1])
{
    if (ms < WALL_MIN_MS || ms > WALL_MAX_MS)
        ms = 0;
    int64_t sec = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        sec -= 1;
    }
    int64_t days = sec / 86400, sod = sec % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    put_digits(out, (unsigned)y, 4);
    out[4] = '-';
    put_digits(out + 5, mo, 2);
    out[7] = '-';
    put_digits(out + 8, d, 2);
    out[10] = 'T';
    put_digits(out + 11, (unsigned)(sod / 3600), 2);
    out[13] = ':';
    put_digits(out + 14, (unsigned)(sod / 60 % 60), 2);
    out[16] = ':';
    put_digits(out + 17, (unsigned)(sod % 60), 2);
    out[19] = '.';
    put_digits(out + 20, (unsigned)frac, 3);
    out[23] = 'Z';
    out[24] = '\0';
}
