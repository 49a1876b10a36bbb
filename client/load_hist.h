/*
 * load_hist.h - jwt-load's latency histogram and the open-loop schedule
 * arithmetic that feeds it (client/jwt_load.c): pure functions on integers,
 * in a header so tests/unit/test_jwt_load_hist.c can check them without a
 * signer. A private header of jwt-load, not part of the client API.
 *
 * The histogram (in the manner of HdrHistogram): values below 2 * HIST_SUB ns
 * have a bucket each; above, every octave [2^e, 2^(e+1)) is split into
 * HIST_SUB equal buckets, so a bucket is at most 1/HIST_SUB of its values
 * wide and its midpoint within 1/(2 * HIST_SUB) = 1/256 of any of them.
 * Values reach 2^HIST_BITS ns (39 h: the longest run plus a late call's
 * wait); a longer one is counted in the top bucket, a negative one in
 * bucket 0. A histogram is an array of HIST_BUCKETS counts.
 */
#ifndef JS_CLIENT_LOAD_HIST_H
#define JS_CLIENT_LOAD_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB      (1 << HIST_SUB_BITS)
#define HIST_EXACT    (2 * HIST_SUB)
#define HIST_BITS     47
#define HIST_BUCKETS  (HIST_EXACT + (HIST_BITS - HIST_SUB_BITS - 1) * HIST_SUB)
#define HIST_TOP      ((INT64_C(1) << HIST_BITS) - 1)

#define LOAD_NS_PER_S 1000000000LL

static inline size_t hist_index(int64_t v)
{
    if (v < 0)
        v = 0;
    if (v > HIST_TOP)
        v = HIST_TOP;
    uint64_t u = (uint64_t)v;
    if (u < HIST_EXACT)
        return (size_t)u;
    int e = 63 - __builtin_clzll(u); /* HIST_SUB_BITS + 1 .. HIST_BITS - 1 */
    int shift = e - HIST_SUB_BITS;
    return HIST_EXACT + (size_t)(e - HIST_SUB_BITS - 1) * HIST_SUB +
           (size_t)((u >> shift) - HIST_SUB);
}

/* The least value of bucket i (i < HIST_BUCKETS), in ns. */
static inline int64_t hist_lower(size_t i)
{
    if (i < HIST_EXACT)
        return (int64_t)i;
    size_t k = i - HIST_EXACT;
    int shift = (int)(k / HIST_SUB) + 1;
    return (int64_t)(HIST_SUB + k % HIST_SUB) << shift;
}

/* The midpoint of bucket i, in ns. */
static inline int64_t hist_value(size_t i)
{
    if (i < HIST_EXACT)
        return (int64_t)i;
    int shift = (int)((i - HIST_EXACT) / HIST_SUB) + 1;
    return hist_lower(i) + (INT64_C(1) << (shift - 1));
}

/* Nearest rank: the value at or below which at least permille/1000 of the n
 * values lie (integer arithmetic: 0.999 * 1000 in doubles is a hair above
 * 999). counts is a histogram; n > 0 its total. */
static inline int64_t hist_percentile(const long long *counts, long long n, long long permille)
{
    long long rank = (permille * n + 999) / 1000;
    if (rank < 1)
        rank = 1;
    long long seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += counts[i];
        if (seen >= rank)
            return hist_value(i);
    }
    return hist_value(HIST_BUCKETS - 1);
}

/* Open-loop slot i's offset from the start in ns, floor(i * 1e9 / rate),
 * computed without overflow (i * 1e9 would overflow past 9.2e9 slots) and
 * from the start each time, so the schedule does not drift. */
static inline int64_t slot_offset(long long i, long rate)
{
    return (int64_t)(i / rate) * LOAD_NS_PER_S + (int64_t)(i % rate) * LOAD_NS_PER_S / rate;
}

/* How many slots are due before offset ns: the least i with slot_offset(i) >= ns. */
static inline long long slots_before(int64_t ns, long rate)
{
    if (ns <= 0)
        return 0;
    long long whole = ns / LOAD_NS_PER_S, part = ns % LOAD_NS_PER_S;
    return whole * rate + (part * rate + LOAD_NS_PER_S - 1) / LOAD_NS_PER_S;
}

/* Counts in `counts` the value until - slot_offset(j) for every slot j in
 * [first, end) of a schedule at `rate`, as adding them one by one would, but
 * bucket by bucket: the values fall as j rises, so each bucket's share is a
 * run of slots found with slots_before, and the work is bounded by the
 * buckets, not by the slots (a stalled run can drop billions). */
static inline void hist_add_slots(long long *counts, long long first, long long end, int64_t until,
                                  long rate)
{
    if (first >= end)
        return;
    size_t from = hist_index(until - slot_offset(end - 1, rate));
    size_t to = hist_index(until - slot_offset(first, rate));
    for (size_t i = from; i <= to; i++) {
        /* Bucket i holds [lo, hi]: slot offsets [until - hi, until - lo]; bucket
         * 0 also the negative values, the top bucket everything above. */
        long long j_lo = first, j_hi = end;
        if (i + 1 < HIST_BUCKETS) {
            long long s = slots_before(until - (hist_lower(i + 1) - 1), rate);
            if (s > j_lo)
                j_lo = s;
        }
        if (i > 0) {
            long long s = slots_before(until - hist_lower(i) + 1, rate);
            if (s < j_hi)
                j_hi = s;
        }
        if (j_hi > j_lo)
            counts[i] += j_hi - j_lo;
    }
}

#endif
