/*
 * test_jwt_load_hist.c - jwt-load's latency histogram and open-loop schedule
 * arithmetic (client/load_hist.h): every bucket's bounds (monotonic, no
 * gaps, each value's midpoint within 1/256 of it), clamping below 0 and
 * above the top, nearest-rank percentiles (including the rank 0.999 * 1000
 * must give, 999, not 1000), the schedule (slot_offset and slots_before
 * inverse to each other) and hist_add_slots, the bucket-at-a-time count of
 * dropped calls, against adding the slots one by one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "load_hist.h"

/* |midpoint - v| <= v / 256, in integers. */
static void assert_close(int64_t mid, int64_t v)
{
    int64_t d = mid > v ? mid - v : v - mid;
    assert_true(d * 2 * HIST_SUB <= v);
}

static void test_buckets_cover_without_gaps(void **state)
{
    (void)state;
    assert_int_equal(hist_lower(0), 0);
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        int64_t lo = hist_lower(i);
        int64_t hi = i + 1 < HIST_BUCKETS ? hist_lower(i + 1) - 1 : HIST_TOP;
        assert_true(hi >= lo);
        /* Every value from lo to hi is in bucket i, and lo - 1 in the one before. */
        assert_int_equal(hist_index(lo), i);
        assert_int_equal(hist_index(hi), i);
        assert_int_equal(hist_index(lo + (hi - lo) / 2), i);
        if (i > 0)
            assert_int_equal(hist_index(lo - 1), i - 1);
        /* At most 1/128 of its values wide, so the midpoint within 1/256. */
        assert_true((hi - lo + 1) * HIST_SUB <= (lo > 0 ? lo : 1) || i < HIST_EXACT);
        int64_t mid = hist_value(i);
        assert_int_equal(hist_index(mid), i);
        if (i < HIST_EXACT)
            assert_int_equal(mid, lo); /* one value a bucket: exact */
        assert_close(mid, lo);
        assert_close(mid, hi);
    }
}

static void test_index_monotonic_and_clamped(void **state)
{
    (void)state;
    size_t prev = 0;
    for (int64_t v = 0; v < 100000; v++) {
        size_t i = hist_index(v);
        assert_true(i == prev || i == prev + 1);
        prev = i;
        assert_close(hist_value(i), v);
    }
    /* Larger values, growing by about 1/1000 each step. */
    for (int64_t v = 100000; v <= HIST_TOP; v += v / 1000) {
        size_t i = hist_index(v);
        assert_true(i >= prev);
        prev = i;
        assert_close(hist_value(i), v);
    }
    assert_int_equal(hist_index(-1), 0);
    assert_int_equal(hist_index(INT64_MIN), 0);
    assert_int_equal(hist_index(HIST_TOP), HIST_BUCKETS - 1);
    assert_int_equal(hist_index(HIST_TOP + 1), HIST_BUCKETS - 1);
    assert_int_equal(hist_index(INT64_MAX), HIST_BUCKETS - 1);
}

static long long *new_counts(void)
{
    long long *c = calloc(HIST_BUCKETS, sizeof(*c));
    assert_non_null(c);
    return c;
}

static void test_percentile_nearest_rank(void **state)
{
    (void)state;
    long long *c = new_counts();
    /* 1..200 ns, one bucket each: the rank-th value exactly. */
    for (int64_t v = 1; v <= 200; v++)
        c[hist_index(v)]++;
    assert_int_equal(hist_percentile(c, 200, 500), 100);
    assert_int_equal(hist_percentile(c, 200, 900), 180);
    assert_int_equal(hist_percentile(c, 200, 990), 198);
    assert_int_equal(hist_percentile(c, 200, 999), 200); /* rank ceil(199.8) */
    assert_int_equal(hist_percentile(c, 200, 0), 1);     /* rank at least 1 */
    assert_int_equal(hist_percentile(c, 200, 1000), 200);
    memset(c, 0, HIST_BUCKETS * sizeof(*c));
    /* 999 values of 10 and one of 20: p99.9 is rank 999, so 10. */
    c[hist_index(10)] = 999;
    c[hist_index(20)] = 1;
    assert_int_equal(hist_percentile(c, 1000, 999), 10);
    assert_int_equal(hist_percentile(c, 1000, 1000), 20);
    memset(c, 0, HIST_BUCKETS * sizeof(*c));
    /* One value: every percentile is it (its bucket's midpoint). */
    int64_t one_s = 1000000000;
    c[hist_index(one_s)] = 1;
    for (long long pm = 0; pm <= 1000; pm += 100)
        assert_close(hist_percentile(c, 1, pm), one_s);
    free(c);
}

static const long rates[] = {1, 3, 7, 50, 1000, 65537, 999983, 1000000};

static void test_schedule(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(rates) / sizeof(rates[0]); k++) {
        long rate = rates[k];
        assert_int_equal(slot_offset(0, rate), 0);
        assert_int_equal(slot_offset(rate, rate), 1000000000);
        assert_int_equal(slots_before(0, rate), 0);
        assert_int_equal(slots_before(-5, rate), 0);
        for (long long i = 1; i < 3000; i++) {
            int64_t off = slot_offset(i, rate);
            assert_true(off > slot_offset(i - 1, rate));
            /* slots_before(ns) is the least i with slot_offset(i) >= ns. */
            assert_int_equal(slots_before(off, rate), i);
            assert_int_equal(slots_before(off + 1, rate), i + 1);
        }
        /* A day of slots at this rate, without overflow. */
        long long day = 86400LL * rate;
        assert_int_equal(slot_offset(day, rate), 86400LL * 1000000000);
        assert_int_equal(slots_before(86400LL * 1000000000, rate), day);
    }
}

/* hist_add_slots against one hist_index per slot. */
static void check_slots(long long first, long long end, int64_t until, long rate)
{
    long long *want = new_counts(), *got = new_counts();
    for (long long j = first; j < end; j++)
        want[hist_index(until - slot_offset(j, rate))]++;
    hist_add_slots(got, first, end, until, rate);
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        if (want[i] != got[i])
            fail_msg("rate %ld slots [%lld, %lld) until %lld: bucket %zu has %lld, want %lld", rate,
                     first, end, (long long)until, i, got[i], want[i]);
    free(want);
    free(got);
}

static void test_add_slots_matches_one_by_one(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(rates) / sizeof(rates[0]); k++) {
        long rate = rates[k];
        long long n = rate < 20000 ? rate * 3 : 20000;
        int64_t span = slot_offset(n, rate);
        /* Values from one slot's spacing (and less) up to many seconds. */
        check_slots(0, n, span, rate);
        check_slots(0, n, span + 3000000000LL, rate);
        check_slots(n / 3, n, span + 17, rate);
        check_slots(n, 2 * n, 2 * span + 123456789, rate);
        check_slots(0, n, span / 2, rate);                   /* later slots negative: bucket 0 */
        check_slots(5, 5, span, rate);                       /* none */
        check_slots(0, 1, HIST_TOP + 1000000000000LL, rate); /* past the top */
    }
    /* The slots a run at 1000000/s for 24 h would drop, bucket by bucket. */
    long long *got = new_counts();
    long long n = 86400LL * 1000000, total = 0;
    hist_add_slots(got, 0, n, slot_offset(n, 1000000), 1000000);
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        total += got[i];
    assert_int_equal(total, n);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_cover_without_gaps),
        cmocka_unit_test(test_index_monotonic_and_clamped),
        cmocka_unit_test(test_percentile_nearest_rank),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_add_slots_matches_one_by_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
