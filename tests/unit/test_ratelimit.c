/*
 * test_ratelimit.c - unit tests for the per-identity token buckets
 * (signer/core/ratelimit.h) with an injected clock: burst then deny with the right
 * retry-after, refill, incident mode tightening at once (and off restoring),
 * reloads that keep or restart state, per-identity isolation under a prefix
 * pattern, the overflow bucket, and concurrent takes that never exceed
 * burst + refill.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "ratelimit.h"

#define MS        UINT64_C(1000000)
#define S         UINT64_C(1000000000)
#define T0        (UINT64_C(1000) * S) /* an arbitrary monotonic start */
#define BASE_TEXT "version: 1\nissuer: https://i\ndefaults: {keys: [k], audiences: [a]}\ncallers:\n"

static const char k_text[] = BASE_TEXT "  - id: cn:fast\n"
                                       "    rate: {per_second: 10, burst: 5}\n"
                                       "    incident_rate: {per_second: 1, burst: 2}\n"
                                       "  - id: cn:slow\n"
                                       "    rate: {per_second: 0.5, burst: 1}\n"
                                       "  - id: cn:same-burst\n"
                                       "    rate: {per_second: 10, burst: 4}\n"
                                       "    incident_rate: {per_second: 2, burst: 4}\n"
                                       "  - id: spiffe://t/ns/*\n"
                                       "    rate: {per_second: 1, burst: 3}\n"
                                       "  - id: cn:free\n";

typedef struct fx {
    js_policy *p;
    js_ratelimit *rl;
} fx;

static js_policy *load(const char *text)
{
    js_policy *p = NULL;
    js_err err = {0};
    if (js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    return p;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    js_err err = {0};
    if (f == NULL)
        return -1;
    f->p = load(k_text);
    if (js_ratelimit_new(1000, &f->rl, &err) != JS_OK) {
        js_policy_free(f->p);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    js_ratelimit_free(f->rl);
    js_policy_free(f->p);
    free(f);
    return 0;
}

/* Takes one token; returns the status and stores retry_after_ms. */
static js_status take(js_ratelimit *rl, const js_policy *p, const char *entry, const char *identity,
                      uint64_t now, uint64_t *retry)
{
    js_err err = {0};
    uint64_t r = 12345;
    const js_policy_caller *c = js_policy_match(p, entry);
    assert_non_null(c);
    js_status st = js_ratelimit_take(rl, c, identity, now, &r, &err);
    if (st == JS_OK) {
        assert_int_equal(r, 0);
    } else {
        assert_int_equal(st, JS_ELIMIT);
        assert_string_equal(js_reason_name(err.reason), "rate.limited");
        assert_non_null(strstr(err.msg, "retry after"));
    }
    if (retry != NULL)
        *retry = r;
    return st;
}

/* n takes at time now must all pass. */
static void take_ok_n(fx *f, const char *entry, const char *identity, uint64_t now, int n)
{
    for (int i = 0; i < n; i++)
        if (take(f->rl, f->p, entry, identity, now, NULL) != JS_OK)
            fail_msg("%s: take %d of %d denied", identity, i + 1, n);
}

static void expect_limited(fx *f, const char *entry, const char *identity, uint64_t now,
                           uint64_t want_retry_ms)
{
    uint64_t r = 0;
    if (take(f->rl, f->p, entry, identity, now, &r) != JS_ELIMIT)
        fail_msg("%s: allowed, want limited", identity);
    if (r != want_retry_ms)
        fail_msg("%s: retry_after_ms %llu, want %llu", identity, (unsigned long long)r,
                 (unsigned long long)want_retry_ms);
}

static void test_burst_then_deny(void **state)
{
    fx *f = *state;
    take_ok_n(f, "cn:fast", "cn:fast", T0, 5);
    expect_limited(f, "cn:fast", "cn:fast", T0, 100); /* one token at 10/s: 100 ms */
    expect_limited(f, "cn:fast", "cn:fast", T0 + 40 * MS, 60);
    expect_limited(f, "cn:fast", "cn:fast", T0 + 99 * MS + 1, 1); /* rounded up, never 0 */
    take_ok_n(f, "cn:fast", "cn:fast", T0 + 100 * MS, 1);
    expect_limited(f, "cn:fast", "cn:fast", T0 + 100 * MS, 100);

    take_ok_n(f, "cn:slow", "cn:slow", T0, 1);
    expect_limited(f, "cn:slow", "cn:slow", T0, 2000); /* 0.5/s */
    expect_limited(f, "cn:slow", "cn:slow", T0 + 1500 * MS, 500);
    take_ok_n(f, "cn:slow", "cn:slow", T0 + 2 * S, 1);

    /* The message names the limit and the caller entry. */
    js_err err = {0};
    uint64_t r = 0;
    assert_int_equal(
        js_ratelimit_take(f->rl, js_policy_match(f->p, "cn:slow"), "cn:slow", T0 + 2 * S, &r, &err),
        JS_ELIMIT);
    assert_non_null(strstr(err.msg, "rate: caller 'cn:slow'"));
    assert_non_null(strstr(err.msg, "0.5/s, burst 1"));
    assert_non_null(strstr(err.msg, "retry after 2000 ms"));
}

static void test_refill(void **state)
{
    fx *f = *state;
    take_ok_n(f, "cn:fast", "cn:fast", T0, 5);
    /* 250 ms at 10/s: 2.5 tokens; two whole ones, then half a token is 50 ms away. */
    take_ok_n(f, "cn:fast", "cn:fast", T0 + 250 * MS, 2);
    expect_limited(f, "cn:fast", "cn:fast", T0 + 250 * MS, 50);
    /* A long idle time refills to the burst, never beyond. */
    take_ok_n(f, "cn:fast", "cn:fast", T0 + 3600 * S, 5);
    expect_limited(f, "cn:fast", "cn:fast", T0 + 3600 * S, 100);
    /* A clock reading older than the last one (another thread's) refills nothing. */
    expect_limited(f, "cn:fast", "cn:fast", T0 + 3599 * S, 100);
}

static void test_unlimited(void **state)
{
    fx *f = *state;
    take_ok_n(f, "cn:free", "cn:free", T0, 10000);
    js_ratelimit_set_incident(f->rl, true);
    take_ok_n(f, "cn:free", "cn:free", T0, 100); /* no incident_rate either */
    js_ratelimit_set_incident(f->rl, false);
}

static void test_incident_switch(void **state)
{
    fx *f = *state;
    assert_false(js_ratelimit_incident(f->rl));
    take_ok_n(f, "cn:fast", "a", T0, 1); /* 4 tokens left under 10/s burst 5 */
    js_ratelimit_set_incident(f->rl, true);
    assert_true(js_ratelimit_incident(f->rl));
    /* Clamped to the incident burst 2 at once, then 1/s. */
    take_ok_n(f, "cn:fast", "a", T0, 2);
    expect_limited(f, "cn:fast", "a", T0, 1000);
    take_ok_n(f, "cn:fast", "a", T0 + S, 1);
    expect_limited(f, "cn:fast", "a", T0 + S, 1000);

    /* An exhausted bucket gets no fresh burst when incident mode switches on. */
    js_ratelimit_set_incident(f->rl, false);
    take_ok_n(f, "cn:fast", "b", T0, 5);
    js_ratelimit_set_incident(f->rl, true);
    expect_limited(f, "cn:fast", "b", T0, 1000);

    /* Off restores the normal limits: the larger burst restarts full. */
    js_ratelimit_set_incident(f->rl, false);
    take_ok_n(f, "cn:fast", "a", T0 + S, 5);
    expect_limited(f, "cn:fast", "a", T0 + S, 100);

    /* With an equal burst, only the refill rate changes: no fresh tokens either way. */
    take_ok_n(f, "cn:same-burst", "c", T0, 4);
    js_ratelimit_set_incident(f->rl, true);
    expect_limited(f, "cn:same-burst", "c", T0, 500); /* 2/s */
    js_ratelimit_set_incident(f->rl, false);
    expect_limited(f, "cn:same-burst", "c", T0, 100); /* 10/s again */
}

static void test_reload(void **state)
{
    fx *f = *state;
    take_ok_n(f, "cn:fast", "cn:fast", T0, 5);
    take_ok_n(f, "cn:slow", "cn:slow", T0, 1);
    expect_limited(f, "cn:fast", "cn:fast", T0, 100);

    /* A new policy: "cn:fast" unchanged (another caller added), "cn:slow" loosened. */
    js_policy *next = load(BASE_TEXT "  - id: cn:added\n"
                                     "  - id: cn:fast\n"
                                     "    rate: {per_second: 10, burst: 5}\n"
                                     "    incident_rate: {per_second: 1, burst: 2}\n"
                                     "  - id: cn:slow\n"
                                     "    rate: {per_second: 1, burst: 3}\n");
    js_policy_free(f->p);
    f->p = next;
    expect_limited(f, "cn:fast", "cn:fast", T0, 100); /* state survived */
    take_ok_n(f, "cn:slow", "cn:slow", T0, 3);        /* restarted full under the new limits */
    expect_limited(f, "cn:slow", "cn:slow", T0, 1000);

    /* Tightened by a reload: what is left is kept, capped at the new burst. */
    take_ok_n(f, "cn:fast", "tight", T0, 1); /* 4 left */
    next = load(BASE_TEXT "  - id: cn:fast\n    rate: {per_second: 10, burst: 2}\n");
    js_policy_free(f->p);
    f->p = next;
    take_ok_n(f, "cn:fast", "tight", T0, 2);
    expect_limited(f, "cn:fast", "tight", T0, 100);
}

static void test_pattern_isolation(void **state)
{
    fx *f = *state;
    /* Identities under one prefix pattern each have their own bucket. */
    take_ok_n(f, "spiffe://t/ns/a", "spiffe://t/ns/a", T0, 3);
    expect_limited(f, "spiffe://t/ns/a", "spiffe://t/ns/a", T0, 1000);
    take_ok_n(f, "spiffe://t/ns/b", "spiffe://t/ns/b", T0, 3);
    expect_limited(f, "spiffe://t/ns/b", "spiffe://t/ns/b", T0, 1000);
    /* And an identity is not confused with a caller entry id of the same text. */
    take_ok_n(f, "cn:fast", "spiffe://t/ns/*", T0, 5);
}

static void test_overflow(void **state)
{
    fx *f = *state;
    js_ratelimit *small = NULL;
    js_err err = {0};
    assert_int_equal(js_ratelimit_new(2, &small, &err), JS_OK);
    js_ratelimit *saved = f->rl;
    f->rl = small;
    const char *pat = "spiffe://t/ns/x";
    take_ok_n(f, pat, "spiffe://t/ns/1", T0, 1);
    take_ok_n(f, pat, "spiffe://t/ns/2", T0, 1);
    /* Beyond max_identities: one shared bucket for the entry (burst 3). */
    take_ok_n(f, pat, "spiffe://t/ns/3", T0, 2);
    take_ok_n(f, pat, "spiffe://t/ns/4", T0, 1);
    uint64_t r = 0;
    assert_int_equal(
        js_ratelimit_take(small, js_policy_match(f->p, pat), "spiffe://t/ns/5", T0, &r, &err),
        JS_ELIMIT);
    assert_non_null(strstr(err.msg, "shared overflow bucket"));
    assert_int_equal(r, 1000);
    /* The two tracked identities keep their own buckets. */
    take_ok_n(f, pat, "spiffe://t/ns/1", T0, 2);
    expect_limited(f, pat, "spiffe://t/ns/1", T0, 1000);
    /* Once a tracked bucket is idle and full again, a new identity may take its
     * place instead of sharing the overflow bucket... */
    take_ok_n(f, pat, "spiffe://t/ns/2", T0 + 10 * S, 1); /* keeps 2 busy */
    take_ok_n(f, pat, "spiffe://t/ns/6", T0 + 10 * S, 3);
    expect_limited(f, pat, "spiffe://t/ns/6", T0 + 10 * S, 1000);

    /* Very long identities share the overflow bucket too. */
    char longid[4200];
    memset(longid, 'a', sizeof(longid) - 1);
    memcpy(longid, "spiffe://t/ns/", 14);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(
        js_ratelimit_take(small, js_policy_match(f->p, pat), longid, T0 + 10 * S, &r, &err), JS_OK);
    f->rl = saved;
    js_ratelimit_free(small);
}

static void test_bad_arguments(void **state)
{
    fx *f = *state;
    js_ratelimit *rl = NULL;
    js_err err = {0};
    uint64_t r = 7;
    assert_int_equal(js_ratelimit_new(0, &rl, &err), JS_ECONFIG);
    assert_null(rl);
    assert_int_equal(js_ratelimit_take(f->rl, NULL, "x", T0, &r, &err), JS_EINTERNAL);
    assert_int_equal(r, 0);
    assert_int_equal(js_ratelimit_take(f->rl, js_policy_match(f->p, "cn:fast"), NULL, T0, &r, &err),
                     JS_EINTERNAL);
    js_ratelimit_free(NULL);
    assert_false(js_ratelimit_incident(NULL));
}

/* ---- concurrency ------------------------------------------------------------------- */

#define THREADS    8
#define PER_THREAD 20000
#define IDENTITIES 4

typedef struct worker {
    js_ratelimit *rl;
    const js_policy_caller *c;
    atomic_uint_fast64_t *clock; /* NULL: a fixed time */
    atomic_uint_fast64_t allowed[IDENTITIES];
    unsigned seed;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    static const char *const ids[IDENTITIES] = {"spiffe://t/ns/w0", "spiffe://t/ns/w1",
                                                "spiffe://t/ns/w2", "spiffe://t/ns/w3"};
    for (int i = 0; i < PER_THREAD; i++) {
        uint64_t now = w->clock ? atomic_fetch_add(w->clock, 10000) + 10000 : T0;
        size_t k = (size_t)i % IDENTITIES;
        uint64_t r;
        js_err err;
        if (js_ratelimit_take(w->rl, w->c, ids[k], now, &r, &err) == JS_OK)
            atomic_fetch_add(&w->allowed[k], 1);
    }
    return NULL;
}

static void run_workers(js_ratelimit *rl, const js_policy_caller *c, atomic_uint_fast64_t *clock,
                        uint64_t allowed[IDENTITIES])
{
    static worker w;
    memset(&w, 0, sizeof(w));
    w.rl = rl;
    w.c = c;
    w.clock = clock;
    for (size_t k = 0; k < IDENTITIES; k++)
        atomic_init(&w.allowed[k], 0);
    pthread_t th[THREADS];
    for (size_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, work, &w), 0);
    for (size_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (size_t k = 0; k < IDENTITIES; k++)
        allowed[k] = atomic_load(&w.allowed[k]);
}

static void test_concurrent(void **state)
{
    fx *f = *state;
    const js_policy_caller *c = js_policy_match(f->p, "spiffe://t/ns/w0"); /* 1/s, burst 3 */
    uint64_t allowed[IDENTITIES];

    /* A frozen clock: exactly the burst, per identity, however many threads race. */
    run_workers(f->rl, c, NULL, allowed);
    for (size_t k = 0; k < IDENTITIES; k++)
        assert_int_equal(allowed[k], 3);

    /* A moving clock: never more than burst + refill over the elapsed time. */
    js_ratelimit *rl = NULL;
    js_err err = {0};
    assert_int_equal(js_ratelimit_new(100, &rl, &err), JS_OK);
    atomic_uint_fast64_t clock;
    atomic_init(&clock, T0);
    run_workers(rl, c, &clock, allowed);
    uint64_t elapsed = atomic_load(&clock) - T0; /* 8 * 20000 * 10 us = 1.6 s */
    uint64_t bound = 3 + elapsed / S + 1;
    for (size_t k = 0; k < IDENTITIES; k++) {
        if (allowed[k] > bound || allowed[k] < 3)
            fail_msg("identity %zu: %llu allowed over %llu ns, bound %llu", k,
                     (unsigned long long)allowed[k], (unsigned long long)elapsed,
                     (unsigned long long)bound);
    }
    js_ratelimit_free(rl);
}

static int reset(void **state)
{
    fx *f = *state;
    js_err err = {0};
    js_ratelimit_free(f->rl);
    f->rl = NULL;
    js_policy_free(f->p);
    f->p = load(k_text);
    return js_ratelimit_new(1000, &f->rl, &err) == JS_OK ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_burst_then_deny, reset),
        cmocka_unit_test_setup(test_refill, reset),
        cmocka_unit_test_setup(test_unlimited, reset),
        cmocka_unit_test_setup(test_incident_switch, reset),
        cmocka_unit_test_setup(test_reload, reset),
        cmocka_unit_test_setup(test_pattern_isolation, reset),
        cmocka_unit_test_setup(test_overflow, reset),
        cmocka_unit_test_setup(test_bad_arguments, reset),
        cmocka_unit_test_setup(test_concurrent, reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
