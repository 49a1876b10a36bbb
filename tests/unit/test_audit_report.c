/*
 * test_audit_report.c - counts over an audit log (audit/report.h): windows,
 * callers and reasons, folded counts, rate limits, new callers, peers,
 * lifecycle events, records without a time, and hostile counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "report.h"

/* Adds the record given as JSON text (type taken from it). */
static void add(js_audit_stats *s, const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    assert_non_null(j);
    js_audit_record rec;
    memset(&rec, 0, sizeof(rec));
    rec.json = j;
    rec.type = json_string_value(json_object_get(j, "type"));
    js_err err;
    assert_int_equal(js_audit_stats_add(s, &rec, &err), JS_OK);
    json_decref(j);
}

static void test_stats_rows_and_lifecycle(void **state)
{
    (void)state;
    js_audit_stats *s = NULL;
    js_err err;
    assert_int_equal(js_audit_stats_new(0, &s, &err), JS_EINVAL);
    assert_int_equal(js_audit_stats_new(60, &s, &err), JS_OK);
    /* window 1: b allowed, a denied 5 times (folded, rate limited) */
    add(s, "{\"seq\":1,\"time\":\"2026-11-23T10:00:01.000Z\",\"type\":\"sign\",\"caller\":\"b\","
           "\"decision\":\"allow\",\"reason\":\"ok\"}");
    add(s, "{\"seq\":2,\"time\":\"2026-11-23T10:00:02.000Z\",\"type\":\"sign\",\"caller\":\"a\","
           "\"decision\":\"deny\",\"reason\":\"rate.limited\",\"count\":5}");
    /* window 2: a allowed again (not new), a peer denial, an error, a hostile count */
    add(s, "{\"seq\":3,\"time\":\"2026-11-23T10:01:00.000Z\",\"type\":\"sign\",\"caller\":\"a\","
           "\"decision\":\"allow\",\"reason\":\"ok\",\"count\":-7}");
    add(s, "{\"seq\":4,\"time\":\"2026-11-23T10:01:10.000Z\",\"type\":\"sign\",\"peer\":\"ipv4:1.2."
           "3.4\","
           "\"decision\":\"deny\",\"reason\":\"identity.missing\"}");
    add(s, "{\"seq\":5,\"time\":\"2026-11-23T10:01:20.000Z\",\"type\":\"admin\",\"caller\":\"a\","
           "\"decision\":\"error\",\"reason\":\"hsm.unavailable\"}");
    /* not counted as requests */
    add(s, "{\"seq\":6,\"type\":\"sign\",\"caller\":\"a\",\"decision\":\"allow\"}"); /* no time */
    add(s, "{\"seq\":7,\"time\":\"2026-11-23T10:00:00.000Z\",\"type\":\"start\",\"decision\":"
           "\"start\"}");
    add(s, "{\"seq\":8,\"time\":\"2026-11-23T10:02:00.000Z\",\"type\":\"checkpoint\",\"reason\":"
           "\"open\"}");
    add(s, "{\"seq\":9,\"time\":\"2026-11-23T10:03:00.000Z\",\"type\":\"checkpoint\",\"reason\":"
           "\"open\"}");
    js_audit_stats_finish(s);
    assert_int_equal(js_audit_stats_no_time(s), 1);

    const js_audit_stats_row *r = NULL;
    size_t n = js_audit_stats_rows(s, &r);
    assert_int_equal(n, 5);
    /* sorted by window, caller, reason */
    assert_string_equal(r[0].caller, "a");
    assert_int_equal(r[0].denied, 5);
    assert_int_equal(r[0].rate_limited, 5);
    assert_true(r[0].new_caller);
    assert_string_equal(r[1].caller, "b");
    assert_int_equal(r[1].allowed, 1);
    assert_true(r[1].new_caller);
    assert_int_equal(r[2].bucket, r[0].bucket + 60);
    assert_string_equal(r[2].caller, "a");
    assert_string_equal(r[2].reason, "hsm.unavailable");
    assert_int_equal(r[2].errors, 1);
    assert_false(r[2].new_caller);
    assert_string_equal(r[3].reason, "ok");
    assert_int_equal(r[3].allowed, 1); /* a count < 1 counts once */
    assert_string_equal(r[4].caller, "peer:ipv4:1.2.3.4");
    assert_int_equal(r[4].denied, 1);

    json_t *lc = NULL;
    assert_int_equal(js_audit_stats_lifecycle(s, &lc, &err), JS_OK);
    assert_int_equal(json_array_size(lc), 2);
    const json_t *cp = json_array_get(lc, 0);
    assert_string_equal(json_string_value(json_object_get(cp, "type")), "checkpoint");
    assert_string_equal(json_string_value(json_object_get(cp, "event")), "open");
    assert_int_equal(json_integer_value(json_object_get(cp, "count")), 2);
    assert_string_equal(json_string_value(json_object_get(cp, "first")),
                        "2026-11-23T10:02:00.000Z");
    assert_string_equal(json_string_value(json_object_get(cp, "last")), "2026-11-23T10:03:00.000Z");
    assert_string_equal(json_string_value(json_object_get(json_array_get(lc, 1), "type")), "start");
    json_decref(lc);
    js_audit_stats_free(s);
    js_audit_stats_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_rows_and_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
