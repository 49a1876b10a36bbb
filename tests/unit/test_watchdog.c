/*
 * test_watchdog.c - the upper bound on a sequence of waits
 * (signer/core/watchdog.h): stopped in time it never fires; past its limit
 * it fires once, naming the last stage, with the time elapsed; NULL is
 * accepted everywhere.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "clock.h"
#include "watchdog.h"

typedef struct fired {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    char stage[64];
    int64_t elapsed_ms;
} fired;

static void on_expired(void *ctx, const char *stage, int64_t elapsed_ms)
{
    fired *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->count++;
    snprintf(f->stage, sizeof(f->stage), "%s", stage != NULL ? stage : "(null)");
    f->elapsed_ms = elapsed_ms;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void fired_init(fired *f)
{
    memset(f, 0, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
}

static void fired_destroy(fired *f)
{
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

static void test_stopped_in_time_never_fires(void **state)
{
    (void)state;
    fired f;
    fired_init(&f);
    js_watchdog *w = js_watchdog_start(10000, "first", on_expired, &f);
    assert_non_null(w);
    js_watchdog_stage(w, "second");
    int64_t t0 = js_mono_ms();
    assert_false(js_watchdog_stop(w));
    /* Stop wakes the thread at once: no wait for the limit. */
    assert_true(js_mono_ms() - t0 < 1000);
    assert_int_equal(f.count, 0);
    fired_destroy(&f);
}

static void test_fires_once_past_the_limit_naming_the_stage(void **state)
{
    (void)state;
    fired f;
    fired_init(&f);
    js_watchdog *w = js_watchdog_start(50, "draining", on_expired, &f);
    assert_non_null(w);
    js_watchdog_stage(w, "closing the audit log");
    pthread_mutex_lock(&f.mu);
    while (f.count == 0)
        pthread_cond_wait(&f.cv, &f.mu);
    pthread_mutex_unlock(&f.mu);
    assert_true(js_watchdog_stop(w));
    assert_int_equal(f.count, 1);
    assert_string_equal(f.stage, "closing the audit log");
    assert_true(f.elapsed_ms >= 50);
    fired_destroy(&f);
}

static void test_null_is_accepted(void **state)
{
    (void)state;
    js_watchdog_stage(NULL, "x");
    assert_false(js_watchdog_stop(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stopped_in_time_never_fires),
        cmocka_unit_test(test_fires_once_past_the_limit_naming_the_stage),
        cmocka_unit_test(test_null_is_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
