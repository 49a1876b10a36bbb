/*
 * test_snapshot.c - counted snapshots: readers keep the value they started
 * with, old values are freed when the last reader lets go, and concurrent
 * publication never hands a reader a freed value.
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "frozen.h"
#include "snapshot.h"

static atomic_int g_freed;

typedef struct value {
    int magic; /* 0x5eed while alive */
    int n;
} value;

static void free_value(void *p)
{
    value *v = p;
    if (v->magic != 0x5eed) /* may run on a reader thread: no cmocka assert here */
        abort();
    v->magic = 0;
    free(v);
    atomic_fetch_add(&g_freed, 1);
}

static value *value_new(int n)
{
    value *v = malloc(sizeof(*v));
    v->magic = 0x5eed;
    v->n = n;
    return v;
}

static void test_cache_sees_publication_and_keeps_old_until_released(void **state)
{
    (void)state;
    atomic_store(&g_freed, 0);
    js_snapshot_store *s = NULL;
    assert_int_equal(js_snapshot_store_new(value_new(1), free_value, &s, NULL), JS_OK);
    js_snapshot_cache c = {0};
    value *v = js_snapshot_cache_get(&c, s);
    assert_int_equal(v->n, 1);
    js_snapshot *held = js_snapshot_store_acquire(s); /* an in-flight request */
    assert_int_equal(js_snapshot_store_publish(s, value_new(2), NULL), JS_OK);
    assert_int_equal(atomic_load(&g_freed), 0);                      /* still referenced */
    assert_int_equal(((value *)js_snapshot_cache_get(&c, s))->n, 2); /* cache refreshed */
    assert_int_equal(atomic_load(&g_freed), 0);                      /* `held` still has it */
    assert_int_equal(((value *)js_snapshot_value(held))->n, 1);
    js_snapshot_release(held);
    assert_int_equal(atomic_load(&g_freed), 1);
    js_snapshot_cache_clear(&c);
    js_snapshot_store_free(s);
    assert_int_equal(atomic_load(&g_freed), 2);
}

static void test_null_value(void **state)
{
    (void)state;
    js_snapshot_store *s = NULL;
    assert_int_equal(js_snapshot_store_new(NULL, free_value, &s, NULL), JS_OK);
    js_snapshot_cache c = {0};
    assert_null(js_snapshot_cache_get(&c, s));
    js_snapshot_cache_clear(&c);
    js_snapshot_store_free(s);
}

typedef struct race {
    js_snapshot_store *s;
    atomic_int stop;
    atomic_int started; /* readers that have read at least once */
    atomic_long reads;
} race;

static void *reader(void *arg)
{
    race *r = arg;
    js_snapshot_cache c = {0};
    bool first = true;
    while (!atomic_load(&r->stop)) {
        value *v = js_snapshot_cache_get(&c, r->s);
        if (v->magic != 0x5eed) /* a freed value would show here (and to ASan) */
            abort();
        atomic_fetch_add(&r->reads, 1);
        if (first) {
            atomic_fetch_add(&r->started, 1);
            first = false;
        }
    }
    js_snapshot_cache_clear(&c);
    return NULL;
}

static void test_concurrent_publish(void **state)
{
    (void)state;
    atomic_store(&g_freed, 0);
    race r = {0};
    assert_int_equal(js_snapshot_store_new(value_new(0), free_value, &r.s, NULL), JS_OK);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, reader, &r);
    /* Publish only while every reader is reading, however busy the machine. */
    while (atomic_load(&r.started) < 4)
        sched_yield();
    for (int i = 1; i <= 2000; i++)
        assert_int_equal(js_snapshot_store_publish(r.s, value_new(i), NULL), JS_OK);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    js_snapshot_store_free(r.s);
    assert_int_equal(atomic_load(&g_freed), 2001); /* every value freed exactly once */
    assert_true(atomic_load(&r.reads) > 0);
}

static void test_frozen_set(void **state)
{
    (void)state;
    js_frozen *a = NULL, *b = NULL, *c = NULL;
    assert_false(js_frozen_contains(NULL, "x"));
    assert_int_equal(js_frozen_with(NULL, "spiffe://e/b", true, &a, NULL), JS_OK);
    assert_int_equal(js_frozen_with(a, "spiffe://e/a", true, &b, NULL), JS_OK);
    assert_true(js_frozen_contains(b, "spiffe://e/a"));
    assert_true(js_frozen_contains(b, "spiffe://e/b"));
    assert_false(js_frozen_contains(b, "spiffe://e/A")); /* exact, case-sensitive */
    assert_false(js_frozen_contains(b, "spiffe://e/"));
    assert_string_equal(js_frozen_at(b, 0), "spiffe://e/a"); /* sorted */
    assert_int_equal(js_frozen_with(b, "spiffe://e/a", false, &c, NULL), JS_OK);
    assert_int_equal(js_frozen_count(c), 1);
    assert_false(js_frozen_contains(c, "spiffe://e/a"));
    assert_true(js_frozen_contains(b, "spiffe://e/a")); /* b is immutable */
    js_frozen *d = NULL;
    assert_int_equal(js_frozen_with(c, "spiffe://e/b", true, &d, NULL), JS_OK);
    assert_int_equal(js_frozen_count(d), 1); /* no duplicates */
    js_frozen_free(a);
    js_frozen_free(b);
    js_frozen_free(c);
    js_frozen_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_sees_publication_and_keeps_old_until_released),
        cmocka_unit_test(test_null_value),
        cmocka_unit_test(test_concurrent_publish),
        cmocka_unit_test(test_frozen_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
