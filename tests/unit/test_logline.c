/*
 * test_logline.c - structured log lines (signer/core/logline.h): the request
 * line carries aud as JSON (a string or an array, not a string holding JSON
 * text), text that is not JSON is still logged, and the folded-denials line
 * has its count and audit_seq (or audit_lost).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "logline.h"

/* Runs fn with fd 2 redirected to a temporary file; returns the last line
 * written, parsed. */
static json_t *capture(void (*fn)(const void *), const void *arg)
{
    char path[] = "/tmp/test_logline_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn(arg);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_int_equal(buf[n - 1], '\n'); /* one whole line */
    assert_null(memchr(buf, '\n', (size_t)n - 1));
    json_error_t jerr;
    json_t *o = json_loads(buf, 0, &jerr);
    assert_non_null(o);
    return o;
}

static void emit_req(const void *arg)
{
    js_reqlog_emit(arg);
}

static void emit_fold(const void *arg)
{
    js_log_denials_folded(arg);
}

static void test_aud_string_is_json(void **state)
{
    (void)state;
    js_reqlog r = {.method = "SignJwt", .decision = "allow", .aud = "\"https://api.example\""};
    json_t *o = capture(emit_req, &r);
    json_t *aud = json_object_get(o, "aud");
    assert_true(json_is_string(aud));
    assert_string_equal(json_string_value(aud), "https://api.example"); /* not "\"https..." */
    json_decref(o);
}

static void test_aud_array_is_json(void **state)
{
    (void)state;
    js_reqlog r = {.method = "SignJwt", .decision = "deny", .aud = "[\"a\",\"b\"]"};
    json_t *o = capture(emit_req, &r);
    json_t *aud = json_object_get(o, "aud");
    assert_true(json_is_array(aud));
    assert_int_equal(json_array_size(aud), 2);
    assert_string_equal(json_string_value(json_array_get(aud, 1)), "b");
    assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
    json_decref(o);
}

static void test_aud_not_json_kept_as_text(void **state)
{
    (void)state;
    js_reqlog r = {.method = "SignJwt", .decision = "deny", .aud = "{not json"};
    json_t *o = capture(emit_req, &r);
    assert_string_equal(json_string_value(json_object_get(o, "aud")), "{not json");
    json_decref(o);
    js_reqlog none = {.method = "SignJwt", .decision = "deny"};
    o = capture(emit_req, &none);
    assert_null(json_object_get(o, "aud"));
    json_decref(o);
}

static void test_folded_line(void **state)
{
    (void)state;
    js_foldlog f = {.type = "sign",
                    .caller = "dns:intruder.example",
                    .reason = "policy.no_match",
                    .count = 4990,
                    .audit_seq = 77};
    json_t *o = capture(emit_fold, &f);
    assert_string_equal(json_string_value(json_object_get(o, "event")), "denials_folded");
    assert_string_equal(json_string_value(json_object_get(o, "caller")), "dns:intruder.example");
    assert_null(json_object_get(o, "peer"));
    assert_int_equal(json_integer_value(json_object_get(o, "count")), 4990);
    assert_int_equal(json_integer_value(json_object_get(o, "audit_seq")), 77);
    assert_null(json_object_get(o, "audit_lost"));
    json_decref(o);

    js_foldlog lost = {
        .type = "sign", .peer = "127.0.0.9", .reason = "identity.invalid", .count = 3};
    o = capture(emit_fold, &lost);
    assert_null(json_object_get(o, "caller"));
    assert_string_equal(json_string_value(json_object_get(o, "peer")), "127.0.0.9");
    assert_true(json_is_true(json_object_get(o, "audit_lost")));
    assert_null(json_object_get(o, "audit_seq"));
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aud_string_is_json),
        cmocka_unit_test(test_aud_array_is_json),
        cmocka_unit_test(test_aud_not_json_kept_as_text),
        cmocka_unit_test(test_folded_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
