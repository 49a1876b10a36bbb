/*
 * test_identity.c - caller identity: URI SAN, else first DNS SAN, else CN.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "identity.h"

static const char *const k_uri[] = {"spiffe://example.org/issuer-a"};
static const char *const k_two_uris[] = {"spiffe://example.org/a", "spiffe://example.org/b"};
static const char *const k_dns[] = {"svc.example.org", "other.example.org"};
static const char *const k_ctrl[] = {"spiffe://example.org/a\nforged log line"};
static const char *const k_latin1[] = {"spiffe://example.org/caf\xe9"};

static const struct {
    const char *name;
    identity_names in;
    js_status st;
    const char *want; /* identity or reason */
} k_cases[] = {
    {"uri wins over dns and cn",
     {k_uri, 1, k_dns, 2, "cn"},
     JS_OK,
     "spiffe://example.org/issuer-a"},
    {"first dns when no uri", {NULL, 0, k_dns, 2, "cn"}, JS_OK, "svc.example.org"},
    {"cn when no san", {NULL, 0, NULL, 0, "cn-caller"}, JS_OK, "cn-caller"},
    {"nothing", {NULL, 0, NULL, 0, NULL}, JS_EDENIED, "identity.none"},
    {"two uris are ambiguous", {k_two_uris, 2, k_dns, 1, "cn"}, JS_EDENIED, "identity.ambiguous"},
    {"control character", {k_ctrl, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
    {"empty cn", {NULL, 0, NULL, 0, ""}, JS_EDENIED, "identity.invalid"},
    {"not utf-8", {k_latin1, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        char out[IDENTITY_MAX + 1];
        js_err err;
        js_err_clear(&err);
        js_status st = identity_select(&k_cases[i].in, out, sizeof(out), &err);
        if (st != k_cases[i].st)
            fail_msg("case '%s': status %d, want %d", k_cases[i].name, st, k_cases[i].st);
        if (st == JS_OK)
            assert_string_equal(out, k_cases[i].want);
        else
            assert_string_equal(err.reason, k_cases[i].want);
    }
}

static void test_too_long(void **state)
{
    (void)state;
    static char big[IDENTITY_MAX + 2];
    memset(big, 'a', IDENTITY_MAX + 1);
    big[IDENTITY_MAX + 1] = '\0';
    identity_names in = {NULL, 0, NULL, 0, big};
    char out[IDENTITY_MAX + 1];
    js_err err;
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_EDENIED);
    assert_string_equal(err.reason, "identity.invalid");
    big[IDENTITY_MAX] = '\0'; /* exactly the limit is fine */
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
