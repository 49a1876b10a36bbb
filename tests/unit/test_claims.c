/*
 * test_claims.c - strict claim-set parsing and the server-owned claims,
 * with an injected "now".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "claims.h"

#define NOW 1700000000LL

/* ---- parsing: a table of inputs and the reason each must give ------------------ */

static const struct {
    const char *name;
    const char *json;
    size_t len; /* 0 = strlen */
    js_status st;
    const char *reason;
} k_parse[] = {
    {"object", "{\"sub\":\"a\",\"aud\":\"b\"}", 0, JS_OK, NULL},
    {"empty object", "{}", 0, JS_OK, NULL},
    {"nested within limit", "{\"a\":{\"b\":[1,{\"c\":true}]}}", 0, JS_OK, NULL},
    {"unicode ok", "{\"name\":\"J\xc3\xbcrgen \\u00e9\"}", 0, JS_OK, NULL},
    {"empty input", "", 0, JS_EINVAL, "claims.empty"},
    {"not json", "sub=alice", 0, JS_EINVAL, "claims.syntax"},
    {"truncated", "{\"sub\":\"a\"", 0, JS_EINVAL, "claims.syntax"},
    {"trailing garbage", "{\"sub\":\"a\"} x", 0, JS_EINVAL, "claims.syntax"},
    {"two objects", "{}{}", 0, JS_EINVAL, "claims.syntax"},
    {"array", "[1,2]", 0, JS_EINVAL, "claims.not_object"},
    {"string", "\"hello\"", 0, JS_EINVAL, "claims.syntax"},
    {"number", "42", 0, JS_EINVAL, "claims.syntax"},
    {"null", "null", 0, JS_EINVAL, "claims.syntax"},
    {"duplicate aud", "{\"aud\":\"a\",\"aud\":\"b\"}", 0, JS_EINVAL, "claims.duplicate_member"},
    {"duplicate nested", "{\"x\":{\"k\":1,\"k\":2}}", 0, JS_EINVAL, "claims.duplicate_member"},
    {"duplicate via escape", "{\"aud\":\"a\",\"\\u0061ud\":\"b\"}", 0, JS_EINVAL,
     "claims.duplicate_member"},
    {"invalid utf8", "{\"sub\":\"\xff\xfe\"}", 0, JS_EINVAL, "claims.utf8"},
    {"overlong utf8", "{\"sub\":\"\xc0\xaf\"}", 0, JS_EINVAL, "claims.utf8"},
    {"lone surrogate escape", "{\"sub\":\"\\ud800\"}", 0, JS_EINVAL, "claims.syntax"},
    {"nul escape", "{\"sub\":\"a\\u0000b\"}", 0, JS_EINVAL, "claims.nul"},
    {"raw nul byte", "{\"sub\":\"a\0b\"}", 13, JS_EINVAL, "claims.syntax"},
    {"single quotes", "{'sub':'a'}", 0, JS_EINVAL, "claims.syntax"},
    {"nan", "{\"n\":NaN}", 0, JS_EINVAL, "claims.syntax"},
    {"integer overflow", "{\"exp\":9223372036854775808}", 0, JS_EINVAL, "claims.syntax"},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_parse) / sizeof(k_parse[0]); i++) {
        size_t len = k_parse[i].len ? k_parse[i].len : strlen(k_parse[i].json);
        json_t *out = NULL;
        js_err err;
        js_err_clear(&err);
        js_status st = claims_parse((const uint8_t *)k_parse[i].json, len, &out, &err);
        if (st != k_parse[i].st)
            fail_msg("case '%s': status %d (%s: %s), want %d", k_parse[i].name, st,
                     js_reason_name(err.reason), err.msg, k_parse[i].st);
        if (st == JS_OK) {
            assert_non_null(out);
            json_decref(out);
        } else {
            assert_null(out);
            if (strcmp(js_reason_name(err.reason), k_parse[i].reason) != 0)
                fail_msg("case '%s': reason %s, want %s", k_parse[i].name,
                         js_reason_name(err.reason), k_parse[i].reason);
        }
    }
}

static void test_parse_size_limit(void **state)
{
    (void)state;
    /* Exactly 16 KiB is accepted; one byte more is not. */
    char *buf = malloc(CLAIMS_MAX_BYTES + 2);
    assert_non_null(buf);
    memset(buf, ' ', CLAIMS_MAX_BYTES + 1);
    memcpy(buf, "{\"pad\":\"", 8);
    memset(buf + 8, 'x', CLAIMS_MAX_BYTES - 10);
    memcpy(buf + CLAIMS_MAX_BYTES - 2, "\"}", 2);
    json_t *out = NULL;
    js_err err;
    assert_int_equal(claims_parse((uint8_t *)buf, CLAIMS_MAX_BYTES, &out, &err), JS_OK);
    json_decref(out);
    assert_int_equal(claims_parse((uint8_t *)buf, CLAIMS_MAX_BYTES + 1, &out, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "claims.too_large");
    free(buf);
}

static void test_parse_depth_limit(void **state)
{
    (void)state;
    char buf[256];
    /* {"a":[[[...]]]} with depth = 1 + n */
    for (int n = CLAIMS_MAX_DEPTH - 1; n <= CLAIMS_MAX_DEPTH; n++) {
        size_t o = 0;
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "{\"a\":");
        for (int i = 0; i < n; i++)
            buf[o++] = '[';
        for (int i = 0; i < n; i++)
            buf[o++] = ']';
        buf[o++] = '}';
        buf[o] = '\0';
        json_t *out = NULL;
        js_err err;
        js_status st = claims_parse((uint8_t *)buf, o, &out, &err);
        if (1 + n <= CLAIMS_MAX_DEPTH) {
            assert_int_equal(st, JS_OK);
            json_decref(out);
        } else {
            assert_int_equal(st, JS_EINVAL);
            assert_string_equal(js_reason_name(err.reason), "claims.depth");
        }
    }
}

/* ---- server-owned claims and the lifetime rule --------------------------------- */

static const claims_lifetime k_life = {300, 3600, 0};

static const struct {
    const char *name;
    const char *json;
    js_status st;
    const char *reason;
    int64_t want_exp;
} k_apply[] = {
    {"default lifetime", "{\"sub\":\"a\"}", JS_OK, NULL, NOW + 300},
    {"exp inside max", "{\"exp\":1700001000}", JS_OK, NULL, 1700001000},
    {"exp exactly max", "{\"exp\":1700003600}", JS_OK, NULL, NOW + 3600},
    {"exp one past max", "{\"exp\":1700003601}", JS_EDENIED, "claims.exp_too_far", 0},
    {"exp far future", "{\"exp\":4102444800}", JS_EDENIED, "claims.exp_too_far", 0},
    {"exp now", "{\"exp\":1700000000}", JS_EINVAL, "claims.exp_past", 0},
    {"exp past", "{\"exp\":1600000000}", JS_EINVAL, "claims.exp_past", 0},
    {"exp negative", "{\"exp\":-1}", JS_EINVAL, "claims.exp_past", 0},
    {"exp float", "{\"exp\":1700000100.5}", JS_EINVAL, "claims.exp_type", 0},
    {"exp float integral", "{\"exp\":1700000100.0}", JS_EINVAL, "claims.exp_type", 0},
    {"exp string", "{\"exp\":\"1700000100\"}", JS_EINVAL, "claims.exp_type", 0},
    {"exp null", "{\"exp\":null}", JS_EINVAL, "claims.exp_type", 0},
    {"exp bool", "{\"exp\":true}", JS_EINVAL, "claims.exp_type", 0},
    {"exp max int64", "{\"exp\":9223372036854775807}", JS_EDENIED, "claims.exp_too_far", 0},
    {"iss reserved", "{\"iss\":\"evil\"}", JS_EINVAL, "claims.reserved", 0},
    {"iat reserved", "{\"iat\":1}", JS_EINVAL, "claims.reserved", 0},
    {"nbf reserved", "{\"nbf\":1}", JS_EINVAL, "claims.reserved", 0},
    {"jti reserved", "{\"jti\":\"x\"}", JS_EINVAL, "claims.reserved", 0},
    {"jti null still reserved", "{\"jti\":null}", JS_EINVAL, "claims.reserved", 0},
};

static void test_apply_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_apply) / sizeof(k_apply[0]); i++) {
        json_t *c = NULL;
        js_err err;
        js_err_clear(&err);
        assert_int_equal(
            claims_parse((const uint8_t *)k_apply[i].json, strlen(k_apply[i].json), &c, &err),
            JS_OK);
        char *before = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
        int64_t exp = 0;
        js_status st = claims_apply_server(c, "https://issuer.test", NOW, &k_life,
                                           "AAAAAAAAAAAAAAAAAAAAAA", &exp, &err);
        if (st != k_apply[i].st)
            fail_msg("case '%s': status %d (%s), want %d", k_apply[i].name, st, err.msg,
                     k_apply[i].st);
        if (st == JS_OK) {
            assert_int_equal(exp, k_apply[i].want_exp);
            assert_string_equal(json_string_value(json_object_get(c, "iss")),
                                "https://issuer.test");
            assert_int_equal(json_integer_value(json_object_get(c, "iat")), NOW);
            assert_int_equal(json_integer_value(json_object_get(c, "exp")), exp);
            assert_string_equal(json_string_value(json_object_get(c, "jti")),
                                "AAAAAAAAAAAAAAAAAAAAAA");
        } else {
            if (strcmp(js_reason_name(err.reason), k_apply[i].reason) != 0)
                fail_msg("case '%s': reason %s, want %s", k_apply[i].name,
                         js_reason_name(err.reason), k_apply[i].reason);
            /* A denied claim set is left exactly as it was. */
            char *after = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
            assert_string_equal(before, after);
            free(after);
        }
        free(before);
        json_decref(c);
    }
}

static void test_exp_too_far_message_names_limit(void **state)
{
    (void)state;
    json_t *c = json_pack("{s:I}", "exp", (json_int_t)(NOW + 7200));
    js_err err;
    assert_int_equal(claims_apply_server(c, "i", NOW, &k_life, "j", NULL, &err), JS_EDENIED);
    assert_non_null(strstr(err.msg, "3600"));
    json_decref(c);
}

/* The key version's window caps exp silently, after the caller's own rule:
 * a default exp and an asked-for one are both cut to now + window (and
 * reported through exp_out and the claim), one within it is kept, and an exp
 * beyond max_ttl is still the caller's error, not capped away. */
static void test_window_caps_exp(void **state)
{
    (void)state;
    static const struct {
        int64_t ask; /* 0 = no exp claim */
        int64_t window;
        js_status st;
        int64_t want;
    } cases[] = {
        {0, 120, JS_OK, NOW + 120},          /* default 300 > window */
        {0, 600, JS_OK, NOW + 300},          /* default within it */
        {NOW + 1000, 120, JS_OK, NOW + 120}, /* asked beyond the window */
        {NOW + 60, 120, JS_OK, NOW + 60},    /* asked within it */
        {NOW + 7200, 120, JS_EDENIED, 0},    /* beyond max_ttl: refused */
        {NOW + 1000, 0, JS_OK, NOW + 1000},  /* no window */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *c =
            cases[i].ask ? json_pack("{s:I}", "exp", (json_int_t)cases[i].ask) : json_object();
        claims_lifetime life = {300, 3600, cases[i].window};
        int64_t exp = 0;
        js_err err = {0};
        assert_int_equal(claims_apply_server(c, "i", NOW, &life, "j", &exp, &err), cases[i].st);
        if (cases[i].st == JS_OK) {
            assert_int_equal(exp, cases[i].want);
            assert_int_equal(json_integer_value(json_object_get(c, "exp")), cases[i].want);
        }
        json_decref(c);
    }
}

/* Parse errors must not quote the input: the message reaches the caller, the
 * log line and the audit record, and a fragment may be a claim value. */
static void test_parse_errors_do_not_quote_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"pw\":\"s3cr3t-value\" x}",
        "{\"pw\":\"s3cr3t-value\",\"pw\":1}",
        "{\"pw\": s3cr3t-value}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *out = NULL;
        js_err err;
        js_err_clear(&err);
        assert_int_equal(claims_parse((const uint8_t *)bad[i], strlen(bad[i]), &out, &err),
                         JS_EINVAL);
        if (strstr(err.msg, "s3cr3t") != NULL)
            fail_msg("message quotes the input: %s", err.msg);
    }
}

static void test_jti_random_and_shaped(void **state)
{
    (void)state;
    char a[CLAIMS_JTI_LEN + 1], b[CLAIMS_JTI_LEN + 1];
    assert_int_equal(claims_new_jti(a, NULL), JS_OK);
    assert_int_equal(claims_new_jti(b, NULL), JS_OK);
    assert_int_equal(strlen(a), CLAIMS_JTI_LEN);
    assert_string_not_equal(a, b);
    for (size_t i = 0; i < CLAIMS_JTI_LEN; i++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]));
}

/* ---- cnf (RFC 7800 §3.1; RFC 8705 §3.1 x5t#S256; RFC 9449 §6.1 jkt) ------------- */

/* SHA-256("client cert"), base64url: a real thumbprint. */
#define TP "89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM"

static const struct {
    const char *name;
    const char *cnf; /* the cnf value as JSON */
    bool ok;
    const char *msg_has;
} k_cnf[] = {
    {"x5t#S256", "{\"x5t#S256\":\"" TP "\"}", true, NULL},
    {"jkt", "{\"jkt\":\"" TP "\"}", true, NULL},
    {"all zero bytes", "{\"jkt\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}", true, NULL},
    {"'-' and '_'", "{\"jkt\":\"-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_4\"}", true, NULL},
    {"string", "\"" TP "\"", false, "JSON object"},
    {"array", "[{\"jkt\":\"" TP "\"}]", false, "JSON object"},
    {"null", "null", false, "JSON object"},
    {"number", "1", false, "JSON object"},
    {"empty object", "{}", false, "0 members"},
    {"two members", "{\"jkt\":\"" TP "\",\"x5t#S256\":\"" TP "\"}", false, "2 members"},
    {"known and unknown", "{\"jkt\":\"" TP "\",\"kid\":\"k\"}", false, "2 members"},
    {"RFC 7800 jwk", "{\"jwk\":{\"kty\":\"EC\"}}", false, "not x5t#S256"},
    {"RFC 7800 kid", "{\"kid\":\"k\"}", false, "not x5t#S256"},
    {"x5t (SHA-1)", "{\"x5t\":\"" TP "\"}", false, "not x5t#S256"},
    {"case differs", "{\"X5T#S256\":\"" TP "\"}", false, "not x5t#S256"},
    {"JKT", "{\"JKT\":\"" TP "\"}", false, "not x5t#S256"},
    {"value not a string", "{\"jkt\":1}", false, "must be a string"},
    {"value an object", "{\"jkt\":{}}", false, "must be a string"},
    {"value null", "{\"jkt\":null}", false, "must be a string"},
    {"empty value", "{\"jkt\":\"\"}", false, "0 characters"},
    {"42 characters", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJK\"}", false,
     "42 characters"},
    {"44 characters", "{\"jkt\":\"" TP "A\"}", false, "44 characters"},
    {"padded", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJK=\"}", false,
     "canonical base64url"},
    {"standard base64 '+'", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJK+\"}", false,
     "canonical base64url"},
    {"standard base64 '/'", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1P/KM\"}", false,
     "canonical base64url"},
    {"space", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1P KM\"}", false,
     "canonical base64url"},
    {"non-ASCII", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1P\u00e9M\"}", false, NULL},
    /* the RFC 8705 §3.1 example value ends in '2': low bits 10, not canonical */
    {"non-zero trailing bits", "{\"x5t#S256\":\"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2\"}",
     false, "trailing bits"},
    {"trailing bits 'N'", "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKN\"}", false,
     "trailing bits"},
};

static void test_cnf_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_cnf) / sizeof(k_cnf[0]); i++) {
        json_error_t jerr;
        json_t *v = json_loads(k_cnf[i].cnf, JSON_DECODE_ANY, &jerr);
        if (v == NULL)
            fail_msg("%s: test JSON: %s", k_cnf[i].name, jerr.text);
        js_err err = {0};
        js_status st = claims_cnf_check(v, &err);
        if ((st == JS_OK) != k_cnf[i].ok)
            fail_msg("%s: got %d %s: %s", k_cnf[i].name, st, js_reason_name(err.reason), err.msg);
        if (!k_cnf[i].ok) {
            assert_int_equal(st, JS_EINVAL);
            assert_int_equal(err.reason, JS_R_CLAIMS_CNF);
            if (k_cnf[i].msg_has != NULL && strstr(err.msg, k_cnf[i].msg_has) == NULL)
                fail_msg("%s: message '%s' lacks '%s'", k_cnf[i].name, err.msg, k_cnf[i].msg_has);
        }
        json_decref(v);
    }
    js_err err = {0};
    assert_int_equal(claims_cnf_check(NULL, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_CLAIMS_CNF);
}

/* The caller's member name is not echoed (it may be anything). */
static void test_cnf_message_does_not_quote_member(void **state)
{
    (void)state;
    json_t *v = json_pack("{s:s}", "SECRET-NAME", TP);
    js_err err = {0};
    assert_int_equal(claims_cnf_check(v, &err), JS_EINVAL);
    assert_null(strstr(err.msg, "SECRET-NAME"));
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_size_limit),
        cmocka_unit_test(test_parse_depth_limit),
        cmocka_unit_test(test_apply_table),
        cmocka_unit_test(test_exp_too_far_message_names_limit),
        cmocka_unit_test(test_window_caps_exp),
        cmocka_unit_test(test_parse_errors_do_not_quote_input),
        cmocka_unit_test(test_jti_random_and_shaped),
        cmocka_unit_test(test_cnf_table),
        cmocka_unit_test(test_cnf_message_does_not_quote_member),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
