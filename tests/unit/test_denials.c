/*
 * test_denials.c - the denial budget (signer/denials.h): per-key burst and
 * rate, the global bound, the overflow bucket when the key table is full,
 * concurrent admits from several threads, and the budget key of a request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <pthread.h>

#include "denials.h"

static js_denials *make(uint32_t rate, uint32_t burst, uint32_t grate, uint32_t gburst,
                        uint32_t max_keys)
{
    js_denials_options o = {.rate = rate,
                            .burst = burst,
                            .global_rate = grate,
                            .global_burst = gburst,
                            .max_keys = max_keys};
    js_denials *d = NULL;
    js_err err;
    assert_int_equal(js_denials_new(&o, &d, &err), JS_OK);
    return d;
}

static void test_rejects_out_of_range(void **state)
{
    (void)state;
    js_denials_options o = {.rate = 2000000};
    js_denials *d = NULL;
    js_err err;
    assert_int_equal(js_denials_new(&o, &d, &err), JS_EINVAL);
    assert_string_equal(err.reason, "denials.config");
    assert_null(d);
    js_denials_free(NULL); /* accepted */
}

static void test_per_key_burst_then_rate(void **state)
{
    (void)state;
    js_denials *d = make(5, 10, 100000, 100000, 0);
    int64_t t = 1000000;
    int ok = 0;
    for (int i = 0; i < 100; i++)
        ok += js_denials_admit(d, "dns:intruder.example", t);
    assert_int_equal(ok, 10); /* the burst, then everything folds */
    /* 5/s: one more every 200 ms, not before. */
    assert_false(js_denials_admit(d, "dns:intruder.example", t + 199));
    assert_true(js_denials_admit(d, "dns:intruder.example", t + 200));
    assert_false(js_denials_admit(d, "dns:intruder.example", t + 201));
    /* Over 10 s of flood: the burst is gone, 5 per second. */
    ok = 0;
    for (int64_t ms = 1; ms <= 10000; ms++)
        for (int k = 0; k < 3; k++)
            ok += js_denials_admit(d, "dns:intruder.example", t + 200 + ms);
    assert_int_equal(ok, 50);
    /* A clock stepping back refills nothing. */
    assert_false(js_denials_admit(d, "dns:intruder.example", t));
    /* Other keys have their own budget. */
    assert_true(js_denials_admit(d, "cn:other", t + 10200));
    js_denials_stats s;
    js_denials_stats_get(d, &s);
    assert_int_equal(s.admitted, 10 + 1 + 50 + 1);
    assert_int_equal(s.admitted + s.folded, 100 + 3 + 30000 + 1 + 1);
    assert_int_equal(s.overflowed, 0);
    js_denials_free(d);
}

static void test_identity_and_peer_keys_distinct(void **state)
{
    (void)state;
    js_denials *d = make(1, 1, 1000, 1000, 0);
    assert_true(js_denials_admit(d, "spiffe://example.org/a", 5000));
    assert_false(js_denials_admit(d, "spiffe://example.org/a", 5000));
    assert_true(js_denials_admit(d, "spiffe://example.org/b", 5000));
    assert_true(js_denials_admit(d, "peer:127.0.0.1", 5000));
    assert_false(js_denials_admit(d, "peer:127.0.0.1", 5000));
    assert_true(js_denials_admit(d, "peer:127.0.0.2", 5000));
    js_denials_free(d);
}

/* Many identities: whatever their number, the global bucket bounds the
 * full records per second. */
static void test_global_bound_many_keys(void **state)
{
    (void)state;
    js_denials *d = make(5, 10, 50, 100, 0);
    char key[64];
    int64_t t = 0;
    int first = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "spiffe://attacker/%d", i);
        first += js_denials_admit(d, key, t);
    }
    assert_int_equal(first, 100); /* global burst */
    for (int sec = 1; sec <= 5; sec++) {
        int ok = 0;
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof(key), "spiffe://attacker/%d-%d", sec, i);
            ok += js_denials_admit(d, key, t + sec * 1000 - 1000 + i / 20);
        }
        assert_true(ok <= 50 + 1);
        assert_true(ok >= 45);
    }
    js_denials_free(d);
}

/* A full table: unknown keys share one overflow bucket, so 10,000
 * identities at one instant get at most (tracked slots + one burst). */
static void test_overflow_bucket_bound(void **state)
{
    (void)state;
    js_denials *d = make(5, 3, 1000000, 1000000, 64); /* one slot per stripe */
    char key[64];
    int ok = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "cn:bot-%d", i);
        ok += js_denials_admit(d, key, 7000);
    }
    js_denials_stats s;
    js_denials_stats_get(d, &s);
    assert_true(s.overflowed > 9000);
    /* each tracked key once (its first denial), plus the overflow burst */
    assert_true(ok <= 64 + 3);
    assert_true(ok >= 3);
    /* A tracked key that has refilled frees its slot: once time passes,
     * new keys are tracked again. */
    assert_true(js_denials_admit(d, "cn:late", 7000 + 10000));
    js_denials_free(d);
}

typedef struct thr {
    js_denials *d;
    int id;
    int same_ok;
    int distinct_ok;
} thr;

static void *thr_main(void *arg)
{
    thr *t = arg;
    char key[64];
    for (int i = 0; i < 20000; i++) {
        t->same_ok += js_denials_admit(t->d, "dns:shared.example", 42);
        snprintf(key, sizeof(key), "dns:t%d-%d.example", t->id, i % 500);
        t->distinct_ok += js_denials_admit(t->d, key, 42);
    }
    return NULL;
}

static void test_concurrent_admits(void **state)
{
    (void)state;
    js_denials *d = make(5, 10, 1000000, 1000000, 0);
    enum { N = 4 };
    pthread_t th[N];
    thr t[N];
    for (int i = 0; i < N; i++) {
        t[i] = (thr){.d = d, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
    }
    int same = 0, distinct = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        same += t[i].same_ok;
        distinct += t[i].distinct_ok;
    }
    /* One instant: the shared key gets exactly its burst, never more. */
    assert_int_equal(same, 10);
    /* 4 x 500 keys, 10 each -- unless a stripe filled (then overflow). */
    js_denials_stats s;
    js_denials_stats_get(d, &s);
    if (s.overflowed == 0)
        assert_int_equal(distinct, N * 500 * 10);
    else
        assert_true(distinct <= N * 500 * 10 + 10);
    assert_int_equal(s.admitted, (uint64_t)(same + distinct));
    assert_int_equal(s.admitted + s.folded, (uint64_t)N * 20000 * 2);
    js_denials_free(d);
}

static void test_key_of_request(void **state)
{
    (void)state;
    char k[JS_DENIALS_KEY_MAX + 1];
    js_denials_key("spiffe://example.org/a", "ipv4:127.0.0.1:5555", k, sizeof(k));
    assert_string_equal(k, "spiffe://example.org/a");
    js_denials_key("", "ipv4:127.0.0.1:5555", k, sizeof(k));
    assert_string_equal(k, "peer:127.0.0.1");
    js_denials_key(NULL, "ipv6:[::1]:40000", k, sizeof(k));
    assert_string_equal(k, "peer:::1");
    js_denials_key(NULL, "unix:/run/x.sock", k, sizeof(k));
    assert_string_equal(k, "peer:unix:/run/x.sock");
    js_denials_key(NULL, NULL, k, sizeof(k));
    assert_string_equal(k, "peer:");
    char small[8];
    js_denials_key(NULL, "ipv4:127.0.0.1:5555", small, sizeof(small));
    assert_string_equal(small, "peer:12");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects_out_of_range),
        cmocka_unit_test(test_per_key_burst_then_rate),
        cmocka_unit_test(test_identity_and_peer_keys_distinct),
        cmocka_unit_test(test_global_bound_many_keys),
        cmocka_unit_test(test_overflow_bucket_bound),
        cmocka_unit_test(test_concurrent_admits),
        cmocka_unit_test(test_key_of_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
