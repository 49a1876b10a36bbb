/*
 * test_discovery.c - unit tests for the OIDC discovery document
 * (signer/core/discovery.h): every member, the issuer copied byte for byte
 * (trailing slash, path, non-ASCII, characters JSON escapes), the derived and
 * the configured jwks_uri, the algorithm list sorted and without duplicates,
 * an empty list when no key is published, and refusals (NULL arguments, an
 * algorithm without a name, an issuer or jwks_uri that is not UTF-8). And
 * js_discovery_url_ok's table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "discovery.h"

static const js_alg ES256[] = {JS_ALG_ES256};

/* Builds and parses the document; the caller decrefs. */
static json_t *build(const char *issuer, const char *jwks_uri, const js_alg *algs, size_t n)
{
    char *out = NULL;
    js_err err = {0};
    js_status st = js_discovery_build(issuer, jwks_uri, algs, n, &out, &err);
    if (st != JS_OK)
        fail_msg("build: %s: %s", js_reason_name(err.reason), err.msg);
    json_error_t je;
    json_t *doc = json_loads(out, JSON_REJECT_DUPLICATES, &je);
    if (doc == NULL)
        fail_msg("not JSON (%s): %s", je.text, out);
    free(out);
    return doc;
}

static void assert_array(const json_t *doc, const char *member, const char *const *want, size_t n)
{
    const json_t *a = json_object_get(doc, member);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(a, i)), want[i]);
}

static void test_members(void **state)
{
    (void)state;
    char *out = NULL;
    js_err err = {0};
    assert_int_equal(js_discovery_build("https://issuer.example", NULL, ES256, 1, &out, &err),
                     JS_OK);
    /* Compact, members in the order of OIDC Discovery 1.0 section 3. */
    assert_string_equal(out, "{\"issuer\":\"https://issuer.example\","
                             "\"jwks_uri\":\"https://issuer.example/.well-known/jwks.json\","
                             "\"response_types_supported\":[\"id_token\"],"
                             "\"subject_types_supported\":[\"public\"],"
                             "\"id_token_signing_alg_values_supported\":[\"ES256\"]}");
    free(out);
}

static void test_issuer_byte_for_byte(void **state)
{
    (void)state;
    static const struct {
        const char *issuer, *jwks_uri;
    } k[] = {
        {"https://issuer.example", "https://issuer.example/.well-known/jwks.json"},
        /* One trailing slash is dropped for the JWKS URL, never from the issuer. */
        {"https://issuer.example/", "https://issuer.example/.well-known/jwks.json"},
        {"https://issuer.example//", "https://issuer.example//.well-known/jwks.json"},
        {"https://idp.example/tenants/a", "https://idp.example/tenants/a/.well-known/jwks.json"},
        {"https://b\xc3\xbc"
         "cher.example/\"q\"\\",
         "https://b\xc3\xbc"
         "cher.example/\"q\"\\"
         "/.well-known/jwks.json"},
        /* Not a URL: copied all the same (the document is data). */
        {"jwt-signer", "jwt-signer/.well-known/jwks.json"},
    };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        json_t *doc = build(k[i].issuer, NULL, ES256, 1);
        assert_string_equal(json_string_value(json_object_get(doc, "issuer")), k[i].issuer);
        assert_string_equal(json_string_value(json_object_get(doc, "jwks_uri")), k[i].jwks_uri);
        json_decref(doc);
    }
}

static void test_configured_jwks_uri(void **state)
{
    (void)state;
    json_t *doc = build("https://issuer.example", "https://cdn.example/keys.json", ES256, 1);
    assert_string_equal(json_string_value(json_object_get(doc, "jwks_uri")),
                        "https://cdn.example/keys.json");
    assert_string_equal(json_string_value(json_object_get(doc, "issuer")),
                        "https://issuer.example");
    json_decref(doc);
}

static void test_algs_sorted_distinct(void **state)
{
    (void)state;
    /* Keys in any order, several of one algorithm. */
    const js_alg algs[] = {JS_ALG_RS256, JS_ALG_ES256, JS_ALG_RS256, JS_ALG_PS256,
                           JS_ALG_EDDSA, JS_ALG_ES256, JS_ALG_ES384};
    json_t *doc = build("https://i", NULL, algs, sizeof(algs) / sizeof(algs[0]));
    const char *want[] = {"ES256", "ES384", "EdDSA", "PS256", "RS256"};
    assert_array(doc, "id_token_signing_alg_values_supported", want, 5);
    const char *rt[] = {"id_token"}, *st[] = {"public"};
    assert_array(doc, "response_types_supported", rt, 1);
    assert_array(doc, "subject_types_supported", st, 1);
    assert_int_equal(json_object_size(doc), 5);
    json_decref(doc);
}

/* No key published (every version revoked): the JWKS is empty, so is the list. */
static void test_no_key_published(void **state)
{
    (void)state;
    json_t *doc = build("https://i", NULL, NULL, 0);
    assert_array(doc, "id_token_signing_alg_values_supported", NULL, 0);
    assert_string_equal(json_string_value(json_object_get(doc, "issuer")), "https://i");
    json_decref(doc);
}

static void test_refusals(void **state)
{
    (void)state;
    static const js_alg none[] = {JS_ALG_ES256, JS_ALG_NONE};
    static const struct {
        const char *issuer, *jwks_uri;
        const js_alg *algs;
        size_t n;
        js_reason reason;
    } k[] = {
        {NULL, NULL, ES256, 1, JS_R_INTERNAL_BUG},
        {"https://i", NULL, NULL, 1, JS_R_INTERNAL_BUG},
        {"https://i", NULL, none, 2, JS_R_INTERNAL_BUG},
        {"https://\xff", NULL, ES256, 1, JS_R_INTERNAL_BUG},
        {"https://i", "https://\xc3", ES256, 1, JS_R_INTERNAL_BUG},
    };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        char *out = (char *)"untouched";
        js_err err = {0};
        js_status st =
            js_discovery_build(k[i].issuer, k[i].jwks_uri, k[i].algs, k[i].n, &out, &err);
        if (st == JS_OK)
            fail_msg("case %zu: built %s", i, out);
        assert_int_equal(st, JS_EINTERNAL);
        assert_int_equal(err.reason, k[i].reason);
        assert_null(out);
    }
    js_err err = {0};
    assert_int_equal(js_discovery_build("https://i", NULL, ES256, 1, NULL, &err), JS_EINTERNAL);
}

static void test_url_ok(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        bool ok;
    } k[] = {
        {"https://issuer.example/.well-known/jwks.json", true},
        {"http://127.0.0.1:8080/.well-known/jwks.json", true},
        {"https://[::1]:8443/jwks", true},
        {"https://h?x=1", true},
        {"https://h", true},
        {"", false},
        {"https://", false},
        {"http://", false},
        {"https:///jwks", false},
        {"https://?x", false},
        {"https://:443/", false},
        {"https://@h/", false},
        {"HTTPS://h/", false},
        {"ftp://h/", false},
        {"//h/jwks", false},
        {"/jwks", false},
        {"h/jwks", false},
        {"https:h", false},
        {"https://h/a b", false},
        {"https://h/\t", false},
        {"https://h/\r\nX: y", false},
        {"https://h/\x7f", false},
        {"https://h/\xc3\xa9", false},
        {"https://h/#frag", false},
        {" https://h/", false},
    };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
        if (js_discovery_url_ok(k[i].url) != k[i].ok)
            fail_msg("'%s': want %s", k[i].url, k[i].ok ? "ok" : "refused");
    assert_false(js_discovery_url_ok(NULL));
    /* The limit: JS_DISCOVERY_URL_MAX bytes, not one more. */
    char big[JS_DISCOVERY_URL_MAX + 2];
    memcpy(big, "https://h/", 10);
    memset(big + 10, 'a', sizeof(big) - 11);
    big[JS_DISCOVERY_URL_MAX] = '\0';
    assert_true(js_discovery_url_ok(big));
    big[JS_DISCOVERY_URL_MAX] = 'a';
    big[JS_DISCOVERY_URL_MAX + 1] = '\0';
    assert_false(js_discovery_url_ok(big));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_issuer_byte_for_byte),
        cmocka_unit_test(test_configured_jwks_uri),
        cmocka_unit_test(test_algs_sorted_distinct),
        cmocka_unit_test(test_no_key_published),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_url_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
