/*
 * test_audit_query.c - selecting audit records (audit/query.h) and the RFC
 * 3339 times a query takes (record.h js_audit_rfc3339_parse): table driven,
 * refusals first-class.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "query.h"
#include "record.h"

static void test_rfc3339(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool ok;
        int64_t ms;
    } rows[] = {
        {"1970-01-01T00:00:00Z", true, 0},
        {"2026-11-23T10:00:00Z", true, 1795428000000},
        {"2026-11-23t10:00:00z", true, 1795428000000},
        {"2026-11-23 10:00:00Z", true, 1795428000000},
        {"2026-11-23T10:00:00.5Z", true, 1795428000500},
        {"2026-11-23T10:00:00.123456789Z", true, 1795428000123},
        {"2026-11-23T11:30:00+01:30", true, 1795428000000},
        {"2026-11-23T08:00:00-02:00", true, 1795428000000},
        {"2024-02-29T00:00:00Z", true, 1709164800000},
        {"2000-02-29T00:00:00Z", true, 951782400000},
        /* refused */
        {"2023-02-29T00:00:00Z", false, 0},
        {"1900-02-29T00:00:00Z", false, 0},
        {"2026-11-23T10:00:60Z", false, 0}, /* leap second */
        {"2026-13-01T00:00:00Z", false, 0},
        {"2026-11-31T00:00:00Z", false, 0},
        {"2026-11-23T24:00:00Z", false, 0},
        {"2026-11-23T10:00:00", false, 0},   /* no offset */
        {"2026-11-23T10:00:00.Z", false, 0}, /* empty fraction */
        {"2026-11-23T10:00:00.1234567890Z", false, 0},
        {"2026-11-23T10:00:00+24:00", false, 0},
        {"2026-11-23T10:00:00Zx", false, 0},
        {"2026-11-23X10:00:00Z", false, 0},
        {"", false, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t ms = -1;
        bool ok = js_audit_rfc3339_parse(rows[i].in, &ms);
        if (ok != rows[i].ok || (ok && ms != rows[i].ms))
            fail_msg("'%s': got %d %lld", rows[i].in, ok, (long long)ms);
    }
}

static void test_time_arg(void **state)
{
    (void)state;
    int64_t ms = 0;
    assert_true(js_audit_time_arg_parse("1795428000", &ms));
    assert_int_equal(ms, 1795428000000);
    assert_true(js_audit_time_arg_parse("2026-11-23T10:00:00Z", &ms));
    assert_int_equal(ms, 1795428000000);
    assert_false(js_audit_time_arg_parse("1234567890123", &ms)); /* 13 digits */
    assert_false(js_audit_time_arg_parse("-5", &ms));
    assert_false(js_audit_time_arg_parse("", &ms));
}

static void test_query_match(void **state)
{
    (void)state;
    json_t *rec =
        json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "seq", (json_int_t)7, "time",
                  "2026-11-23T10:00:00.000Z", "type", "sign", "caller", "spiffe://a", "decision",
                  "allow", "jti", "j1", "sub", "s1", "kid", "k1");
    assert_non_null(rec);
    js_audit_query q = {0};
    assert_true(js_audit_query_match(&q, rec)); /* no filter: everything */
    q.caller = "spiffe://a";
    q.jti = "j1";
    q.sub = "s1";
    q.kid = "k1";
    q.decision = "allow";
    assert_true(js_audit_query_match(&q, rec));
    q.decision = "deny";
    assert_false(js_audit_query_match(&q, rec));
    q.decision = NULL;
    q.caller = "spiffe://A"; /* exact, case-sensitive */
    assert_false(js_audit_query_match(&q, rec));
    q.caller = NULL;
    /* since <= t < until */
    q.has_since = true;
    q.since_ms = 1795428000000;
    assert_true(js_audit_query_match(&q, rec));
    q.since_ms++;
    assert_false(js_audit_query_match(&q, rec));
    q.has_since = false;
    q.has_until = true;
    q.until_ms = 1795428000000;
    assert_false(js_audit_query_match(&q, rec));
    q.until_ms++;
    assert_true(js_audit_query_match(&q, rec));
    /* a member the record lacks, or a record without a time, never matches */
    json_t *bare = json_pack("{s:I, s:s}", "seq", (json_int_t)1, "type", "start");
    assert_non_null(bare);
    assert_false(js_audit_query_match(&q, bare));
    js_audit_query by_jti = {.jti = "j1"};
    assert_false(js_audit_query_match(&by_jti, bare));
    json_decref(bare);
    json_decref(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_time_arg),
        cmocka_unit_test(test_query_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
