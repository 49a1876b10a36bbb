/*
 * test_clock.c - the clocks and the one timestamp format (lib/base/clock.h):
 * js_wall_format against gmtime_r + strftime over generated times (years
 * 0..9999, leap days, negative times), exactly 24 characters always, the
 * epoch for a time outside years 0..9999, and the monotonic deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"
#include "test_jsongen.h"

static void check_against_libc(int64_t ms)
{
    int64_t sec = ms / 1000, frac = ms % 1000;
    if (frac < 0) {
        frac += 1000;
        sec -= 1;
    }
    time_t tt = (time_t)sec;
    struct tm tm;
    assert_non_null(gmtime_r(&tt, &tm));
    char want[64];
    snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    char got[JS_WALL_TIME_LEN + 1];
    js_wall_format(ms, got);
    assert_string_equal(got, want);
}

static void test_wall_format_matches_libc(void **state)
{
    (void)state;
    jg_rng r = {0x5eed0004ULL};
    for (int i = 0; i < 200000; i++) {
        int64_t ms;
        switch (jg_below(&r, 4)) {
        case 0: /* 0000-01-01 .. 9999-12-31 */
            ms = -62167219200000LL + (int64_t)jg_below(&r, 315569520000000ULL);
            break;
        case 1: /* now-ish */
            ms = 1700000000000LL + (int64_t)jg_below(&r, 400000000000ULL);
            break;
        case 2: /* around Feb 29 of 2000 and 2100 */
            ms = (int64_t)jg_below(&r, 86400000ULL * 3) +
                 (jg_below(&r, 2) ? 951782400000LL : 4107542400000LL);
            break;
        default: /* before 1970 */
            ms = -(int64_t)jg_below(&r, 62167219200000ULL);
            break;
        }
        check_against_libc(ms);
    }
    char t[JS_WALL_TIME_LEN + 1];
    js_wall_format(1704164645678LL, t);
    assert_string_equal(t, "2024-01-02T03:04:05.678Z");
    js_wall_format(253402300799999LL, t);
    assert_string_equal(t, "9999-12-31T23:59:59.999Z");
    js_wall_format(-62167219200000LL, t);
    assert_string_equal(t, "0000-01-01T00:00:00.000Z");
}

/* A clock gone wild never changes the width: the epoch, 24 characters. */
static void test_wall_format_out_of_range(void **state)
{
    (void)state;
    const int64_t bad[] = {253402300800000LL, -62167219200001LL, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char t[JS_WALL_TIME_LEN + 1];
        memset(t, 'x', sizeof(t));
        js_wall_format(bad[i], t);
        assert_string_equal(t, "1970-01-01T00:00:00.000Z");
        assert_int_equal(strlen(t), JS_WALL_TIME_LEN);
    }
}

static void test_wall_ms_and_deadline(void **state)
{
    (void)state;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t before = (int64_t)ts.tv_sec * 1000;
    int64_t now = js_wall_ms();
    assert_true(now >= before && now < before + 60000);
    struct timespec d = js_mono_deadline(-5); /* negative = now */
    assert_true(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);
    assert_true((int64_t)d.tv_sec * 1000 + d.tv_nsec / 1000000 <= js_mono_ms());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wall_format_matches_libc),
        cmocka_unit_test(test_wall_format_out_of_range),
        cmocka_unit_test(test_wall_ms_and_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
