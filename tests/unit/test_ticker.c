/*
 * test_ticker.c - the periodic thread (lib/base/ticker.h): it calls again
 * and again, never sooner than a period after the previous call ended; free
 * wakes a long wait at once, waits for a call in progress and stops the
 * calls; bad arguments and NULL are refused or ignored. Timing is asserted
 * only as lower bounds or with generous deadlines (this also runs under
 * ThreadSanitizer on a busy machine).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"
#include "ticker.h"

/* What the ticked function saw. Atomics: the test thread polls them while
 * the ticker's thread writes them. */
typedef struct ticks {
    atomic_int calls;
    atomic_int in_call;      /* 1 while a slow call runs */
    atomic_int finished;     /* slow calls that reached their end */
    atomic_llong first_ms;   /* start of the first call */
    atomic_llong last_end;   /* end of the previous call */
    atomic_llong min_gap_ms; /* shortest end-to-start gap between calls */
    long sleep_ms;           /* each call sleeps this long (0: none) */
} ticks;

static void ticks_init(ticks *t, long sleep_ms)
{
    atomic_init(&t->calls, 0);
    atomic_init(&t->in_call, 0);
    atomic_init(&t->finished, 0);
    atomic_init(&t->first_ms, 0);
    atomic_init(&t->last_end, 0);
    atomic_init(&t->min_gap_ms, INT64_MAX);
    t->sleep_ms = sleep_ms;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void on_tick(void *ctx)
{
    ticks *t = ctx;
    int64_t now = js_mono_ms();
    if (atomic_fetch_add(&t->calls, 1) == 0)
        atomic_store(&t->first_ms, now);
    int64_t last = atomic_load(&t->last_end);
    if (last != 0 && now - last < atomic_load(&t->min_gap_ms))
        atomic_store(&t->min_gap_ms, now - last);
    if (t->sleep_ms > 0) {
        atomic_store(&t->in_call, 1);
        sleep_ms(t->sleep_ms);
        atomic_fetch_add(&t->finished, 1);
        atomic_store(&t->in_call, 0);
    }
    atomic_store(&t->last_end, js_mono_ms());
}

/* Polls (never a fixed sleep and an exact count) until *v reaches want or
 * limit_ms passes; true if it did. */
static int wait_for(atomic_int *v, int want, int64_t limit_ms)
{
    int64_t until = js_mono_ms() + limit_ms;
    while (atomic_load(v) < want) {
        if (js_mono_ms() > until)
            return 0;
        sleep_ms(1);
    }
    return 1;
}

static void test_calls_repeatedly(void **state)
{
    (void)state;
    ticks t;
    ticks_init(&t, 0);
    int64_t before = js_mono_ms();
    js_ticker *tk = js_ticker_new(10, on_tick, &t);
    assert_non_null(tk);
    assert_true(wait_for(&t.calls, 2, 5000));
    js_ticker_free(tk);
    /* The first call comes a period after the start, not at once. */
    assert_true(atomic_load(&t.first_ms) - before >= 10);
}

static void test_period_counts_from_the_end_of_a_call(void **state)
{
    (void)state;
    ticks t;
    ticks_init(&t, 30); /* each call longer than the period */
    js_ticker *tk = js_ticker_new(10, on_tick, &t);
    assert_non_null(tk);
    assert_true(wait_for(&t.calls, 3, 5000));
    js_ticker_free(tk);
    /* A slow call is followed by a full period, never by a catch-up burst. */
    assert_true(atomic_load(&t.min_gap_ms) >= 10);
    assert_true(atomic_load(&t.min_gap_ms) != INT64_MAX);
}

static void test_free_is_prompt_with_a_long_period(void **state)
{
    (void)state;
    ticks t;
    ticks_init(&t, 0);
    js_ticker *tk = js_ticker_new(60000, on_tick, &t);
    assert_non_null(tk);
    int64_t t0 = js_mono_ms();
    js_ticker_free(tk);
    /* free wakes the wait: no waiting out the 60 s period. */
    assert_true(js_mono_ms() - t0 < 2000);
    assert_int_equal(atomic_load(&t.calls), 0);
}

static void test_free_waits_for_a_call_in_progress(void **state)
{
    (void)state;
    ticks t;
    ticks_init(&t, 200);
    js_ticker *tk = js_ticker_new(10, on_tick, &t);
    assert_non_null(tk);
    assert_true(wait_for(&t.in_call, 1, 5000));
    js_ticker_free(tk);
    /* The call that was sleeping ran to its end before free returned, and
     * nothing calls after free (the thread is joined). */
    int calls = atomic_load(&t.calls);
    assert_int_equal(atomic_load(&t.in_call), 0);
    assert_true(calls >= 1);
    assert_int_equal(atomic_load(&t.finished), calls);
    sleep_ms(50);
    assert_int_equal(atomic_load(&t.calls), calls);
}

static void test_bad_arguments_and_null(void **state)
{
    (void)state;
    ticks t;
    ticks_init(&t, 0);
    assert_null(js_ticker_new(0, on_tick, &t));
    assert_null(js_ticker_new(-5, on_tick, &t));
    assert_null(js_ticker_new(10, NULL, &t));
    js_ticker_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_repeatedly),
        cmocka_unit_test(test_period_counts_from_the_end_of_a_call),
        cmocka_unit_test(test_free_is_prompt_with_a_long_period),
        cmocka_unit_test(test_free_waits_for_a_call_in_progress),
        cmocka_unit_test(test_bad_arguments_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
