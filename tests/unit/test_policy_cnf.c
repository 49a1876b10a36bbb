/*
 * test_policy_cnf.c - unit tests for the cnf rules of the policy (RFC 7800
 * confirmation; policy.h): `cnf: required | optional` and `cnf_audiences`
 * per caller and in defaults, evaluated (policy.cnf, claims.cnf) and checked
 * at load; cnf in a pre-built (unix:) token; check-policy output; and the
 * top-level `introspectors` list (js_policy_introspector) with its load
 * errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"
#include "policy.h"

#define NOW INT64_C(1700000000)
#define JTI "AAAAAAAAAAAAAAAAAAAAAA"
/* 43 characters, 32 bytes, last character's low bits zero. */
#define TP  "dGhpcyBpcyBhIHRodW1icHJpbnQgb2YgMzIgYnl0ZXM"
#define TP2 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static const char k_policy[] = "version: 1\n"
                               "issuer: \"https://issuer.test\"\n"
                               "defaults:\n"
                               "  keys: [k]\n"
                               "  audiences: [api, admin, pay]\n"
                               "  max_aud: 3\n"
                               "  subject_required: false\n"
                               "  cnf_audiences: [admin]\n"
                               "callers:\n"
                               "  - id: spiffe://t/opt\n"
                               "  - id: spiffe://t/req\n"
                               "    cnf: required\n"
                               "  - id: spiffe://t/none\n"
                               "    cnf_audiences: []\n"
                               "  - id: spiffe://t/pay\n"
                               "    cnf: optional\n"
                               "    cnf_audiences: [pay]\n"
                               "  - id: unix:uid=0\n"
                               "    max_ttl: 1h\n"
                               "    cnf_audiences: []\n"
                               "    audiences: [k8s]\n";

static js_policy *load(const char *text)
{
    js_policy *p = NULL;
    js_err err = {0};
    js_status st = js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err);
    if (st != JS_OK)
        fail_msg("load: %s: %s", js_reason_name(err.reason), err.msg);
    return p;
}

typedef struct eval_case {
    const char *caller;
    const char *claims;
    js_status status;
    js_reason reason;
    const char *msg_has; /* NULL: not checked */
} eval_case;

static const eval_case k_eval[] = {
    /* optional: no cnf, either kind, any aud outside cnf_audiences */
    {"spiffe://t/opt", "{\"aud\":\"api\"}", JS_OK, JS_R_OK, NULL},
    {"spiffe://t/opt", "{\"aud\":\"api\",\"cnf\":{\"x5t#S256\":\"" TP "\"}}", JS_OK, JS_R_OK, NULL},
    {"spiffe://t/opt", "{\"aud\":\"api\",\"cnf\":{\"jkt\":\"" TP2 "\"}}", JS_OK, JS_R_OK, NULL},
    /* inherited cnf_audiences: admin needs a cnf, as a string or in an array */
    {"spiffe://t/opt", "{\"aud\":\"admin\"}", JS_EDENIED, JS_R_POLICY_CNF, "cnf_audiences"},
    {"spiffe://t/opt", "{\"aud\":[\"api\",\"admin\"]}", JS_EDENIED, JS_R_POLICY_CNF, "'admin'"},
    {"spiffe://t/opt", "{\"aud\":[\"api\",\"admin\"],\"cnf\":{\"jkt\":\"" TP "\"}}", JS_OK, JS_R_OK,
     NULL},
    /* required */
    {"spiffe://t/req", "{\"aud\":\"api\"}", JS_EDENIED, JS_R_POLICY_CNF, "cnf: required"},
    {"spiffe://t/req", "{\"aud\":\"api\",\"cnf\":{\"x5t#S256\":\"" TP "\"}}", JS_OK, JS_R_OK, NULL},
    /* an own empty cnf_audiences overrides the defaults */
    {"spiffe://t/none", "{\"aud\":\"admin\"}", JS_OK, JS_R_OK, NULL},
    /* an own list replaces the inherited one wholesale */
    {"spiffe://t/pay", "{\"aud\":\"admin\"}", JS_OK, JS_R_OK, NULL},
    {"spiffe://t/pay", "{\"aud\":\"pay\"}", JS_EDENIED, JS_R_POLICY_CNF, "'pay'"},
    /* a malformed cnf is refused whatever the rule, INVALID */
    {"spiffe://t/opt", "{\"aud\":\"api\",\"cnf\":{}}", JS_EINVAL, JS_R_CLAIMS_CNF, "0 members"},
    {"spiffe://t/opt", "{\"aud\":\"api\",\"cnf\":\"x\"}", JS_EINVAL, JS_R_CLAIMS_CNF, "object"},
    {"spiffe://t/req", "{\"aud\":\"api\",\"cnf\":{\"jwk\":{}}}", JS_EINVAL, JS_R_CLAIMS_CNF,
     "not x5t#S256"},
    {"spiffe://t/req", "{\"aud\":\"api\",\"cnf\":{\"jkt\":\"" TP "\",\"x5t#S256\":\"" TP "\"}}",
     JS_EINVAL, JS_R_CLAIMS_CNF, "2 members"},
    /* the audience rule runs first */
    {"spiffe://t/req", "{\"aud\":\"nope\"}", JS_EDENIED, JS_R_POLICY_AUDIENCE, NULL},
};

static void test_evaluate(void **state)
{
    (void)state;
    js_policy *p = load(k_policy);
    for (size_t i = 0; i < sizeof(k_eval) / sizeof(k_eval[0]); i++) {
        const eval_case *tc = &k_eval[i];
        json_t *claims = NULL;
        js_err err = {0};
        if (claims_parse((const uint8_t *)tc->claims, strlen(tc->claims), &claims, &err) != JS_OK)
            fail_msg("case %zu: parse: %s", i, err.msg);
        const js_policy_caller *c = js_policy_match(p, tc->caller);
        assert_non_null(c);
        js_policy_result r;
        js_status st = js_policy_evaluate(p, c, claims, "", JTI, NOW, NULL, NULL, &r, &err);
        if (st != tc->status || (st != JS_OK && err.reason != tc->reason))
            fail_msg("case %zu (%s %s): got %d %s: %s", i, tc->caller, tc->claims, st,
                     js_reason_name(err.reason), err.msg);
        if (tc->msg_has != NULL && strstr(err.msg, tc->msg_has) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, tc->msg_has);
        if (st == JS_OK) {
            /* the token carries cnf exactly as sent */
            const json_t *want = json_object_get(claims, "cnf");
            const json_t *got = json_object_get(r.claims, "cnf");
            assert_true(want == NULL ? got == NULL : json_equal(want, got));
        }
        js_policy_result_clear(&r);
        json_decref(claims);
    }
    js_policy_free(p);
}

/* A pre-built (Kubernetes) token never carries cnf: policy.claim. */
static void test_validate_refuses_cnf(void **state)
{
    (void)state;
    js_policy *p = load(k_policy);
    const js_policy_caller *c = js_policy_match(p, "unix:uid=0");
    assert_non_null(c);
    char buf[512];
    for (int with = 0; with < 2; with++) {
        snprintf(buf, sizeof(buf),
                 "{\"iss\":\"https://issuer.test\",\"aud\":\"k8s\",\"exp\":%lld,\"iat\":%lld,"
                 "\"jti\":\"j1\"%s}",
                 (long long)(NOW + 600), (long long)NOW,
                 with ? ",\"cnf\":{\"jkt\":\"" TP "\"}" : "");
        json_t *claims = NULL;
        js_err err = {0};
        assert_int_equal(claims_parse((const uint8_t *)buf, strlen(buf), &claims, &err), JS_OK);
        js_policy_validated v;
        js_status st = js_policy_validate(p, c, claims, NOW, 30, NULL, NULL, &v, &err);
        if (with) {
            assert_int_equal(st, JS_EDENIED);
            assert_int_equal(err.reason, JS_R_POLICY_CLAIM);
            assert_non_null(strstr(err.msg, "'cnf'"));
        } else if (st != JS_OK) {
            fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
        }
        json_decref(claims);
    }
    js_policy_free(p);
}

typedef struct load_case {
    const char *text;
    js_reason reason;
    const char *msg_has;
} load_case;

#define HEAD   "version: 1\nissuer: i\n"
#define CALLER "callers:\n  - id: spiffe://t/a\n    keys: [k]\n    audiences: [api, admin]\n"

static const load_case k_load[] = {
    {HEAD CALLER "    cnf: maybe\n", JS_R_POLICY_CNF, "\"required\""},
    {HEAD CALLER "    cnf: true\n", JS_R_POLICY_CNF, "\"optional\""},
    {HEAD CALLER "    cnf: [required]\n", JS_R_POLICY_TYPE, NULL},
    {HEAD CALLER "    cnf_audiences: [other]\n", JS_R_POLICY_CNF,
     "'other' is not in its audiences"},
    {HEAD CALLER "    cnf_audiences: [api, api]\n", JS_R_POLICY_DUPLICATE, NULL},
    {HEAD CALLER "    cnf_audiences: api\n", JS_R_POLICY_TYPE, NULL},
    {HEAD "defaults: {audiences: [api], cnf_audiences: [x]}\n" CALLER, JS_R_POLICY_CNF,
     "defaults.audiences"},
    /* an inherited list is held to the caller's own audiences too */
    {HEAD "defaults: {cnf_audiences: [x]}\n" CALLER, JS_R_POLICY_CNF, "defaults.cnf_audiences"},
    {HEAD CALLER "    claims: {cnf: {type: object}}\n", JS_R_POLICY_RULED_CLAIM, "cnf"},
    {HEAD CALLER "    fixed_claims: {cnf: {jkt: x}}\n", JS_R_POLICY_REGISTERED_CLAIM, "cnf"},
    /* Kubernetes callers: own or inherited requirements are refused */
    {HEAD "callers:\n  - id: unix:uid=0\n    keys: [k]\n    audiences: [a]\n    max_ttl: 1h\n"
          "    cnf: required\n",
     JS_R_POLICY_CNF, "Kubernetes"},
    {HEAD "callers:\n  - id: unix:uid=0\n    keys: [k]\n    audiences: [a]\n    max_ttl: 1h\n"
          "    cnf_audiences: [a]\n",
     JS_R_POLICY_CNF, "Kubernetes"},
    {HEAD "defaults: {cnf: required}\n"
          "callers:\n  - id: unix:uid=0\n    keys: [k]\n    audiences: [a]\n    max_ttl: 1h\n",
     JS_R_POLICY_CNF, "`cnf: optional`"},
    {HEAD "defaults: {cnf_audiences: [a]}\n"
          "callers:\n  - id: unix:uid=0\n    keys: [k]\n    audiences: [a]\n    max_ttl: 1h\n",
     JS_R_POLICY_CNF, "`cnf_audiences: []`"},
    /* introspectors */
    {HEAD "introspectors: x\n" CALLER, JS_R_POLICY_TYPE, NULL},
    {HEAD "introspectors: [spiffe://t/v]\n" CALLER, JS_R_POLICY_TYPE, NULL},
    {HEAD "introspectors: [{audiences: [a]}]\n" CALLER, JS_R_POLICY_MISSING_KEY, NULL},
    {HEAD "introspectors: [{id: spiffe://t/v, aud: [a]}]\n" CALLER, JS_R_POLICY_UNKNOWN_KEY, NULL},
    {HEAD "introspectors: [{id: verifier.t}]\n" CALLER, JS_R_POLICY_IDENTITY_UNTYPED, NULL},
    {HEAD "introspectors: [{id: \"unix:uid=0\"}]\n" CALLER, JS_R_POLICY_IDENTITY, "mTLS only"},
    {HEAD "introspectors: [{id: \"spiffe://t/ns/*\"}]\n" CALLER, JS_R_POLICY_PATTERN,
     "exact identity"},
    {HEAD "introspectors: [{id: dns:v.t}, {id: dns:v.t}]\n" CALLER, JS_R_POLICY_DUPLICATE,
     "introspectors[0]"},
    {HEAD "introspectors: [{id: dns:v.t, audiences: []}]\n" CALLER, JS_R_POLICY_VALUE,
     "omit audiences"},
    {HEAD "introspectors: [{id: dns:v.t, audiences: [a, a]}]\n" CALLER, JS_R_POLICY_DUPLICATE,
     NULL},
    {HEAD "introspectors: [{id: dns:v.t, audiences: [\"\"]}]\n" CALLER, JS_R_POLICY_VALUE, NULL},
};

static void test_load_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_load) / sizeof(k_load[0]); i++) {
        js_policy *p = NULL;
        js_err err = {0};
        js_status st =
            js_policy_load_buffer(k_load[i].text, strlen(k_load[i].text), "t.yaml", &p, &err);
        if (st != JS_ECONFIG || err.reason != k_load[i].reason)
            fail_msg("case %zu: got %d %s: %s\n%s", i, st, js_reason_name(err.reason), err.msg,
                     k_load[i].text);
        if (k_load[i].msg_has != NULL && strstr(err.msg, k_load[i].msg_has) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, k_load[i].msg_has);
        assert_null(p);
    }
}

/* The count limits: 256 introspectors, 64 audiences each. */
static void test_introspector_limits(void **state)
{
    (void)state;
    for (int over = 0; over < 2; over++) {
        size_t n = 256 + (size_t)over, cap = 64 * n + 4096;
        char *text = malloc(cap);
        assert_non_null(text);
        size_t at = (size_t)snprintf(text, cap, "%s", HEAD "introspectors:\n");
        for (size_t i = 0; i < n; i++)
            at += (size_t)snprintf(text + at, cap - at, "  - id: dns:v%zu.t\n", i);
        snprintf(text + at, cap - at, "%s", CALLER);
        js_policy *p = NULL;
        js_err err = {0};
        js_status st = js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err);
        if (over) {
            assert_int_equal(st, JS_ECONFIG);
            assert_int_equal(err.reason, JS_R_POLICY_COUNT);
        } else {
            assert_int_equal(st, JS_OK);
            assert_true(js_policy_introspector(p, "dns:v255.t", NULL, NULL));
        }
        js_policy_free(p);
        free(text);
    }
    for (int over = 0; over < 2; over++) {
        size_t n = 64 + (size_t)over;
        char text[4096];
        size_t at = (size_t)snprintf(text, sizeof(text), "%s",
                                     HEAD "introspectors:\n  - id: dns:v.t\n    audiences: [");
        for (size_t i = 0; i < n; i++)
            at += (size_t)snprintf(text + at, sizeof(text) - at, "%sa%zu", i ? ", " : "", i);
        snprintf(text + at, sizeof(text) - at, "%s", "]\n" CALLER);
        js_policy *p = NULL;
        js_err err = {0};
        js_status st = js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err);
        if (over) {
            assert_int_equal(st, JS_ECONFIG);
            assert_int_equal(err.reason, JS_R_POLICY_COUNT);
        } else {
            assert_int_equal(st, JS_OK);
            const char *const *auds = NULL;
            size_t naud = 0;
            assert_true(js_policy_introspector(p, "dns:v.t", &auds, &naud));
            assert_int_equal(naud, 64);
            assert_string_equal(auds[63], "a63");
        }
        js_policy_free(p);
    }
}

static void test_introspectors(void **state)
{
    (void)state;
    js_policy *p = load(HEAD "admins: [spiffe://t/admin]\n"
                             "introspectors:\n"
                             "  - id: spiffe://t/pay-api\n"
                             "    audiences: [pay, \"https://pay.example\"]\n"
                             "  - id: dns:verifier.t\n"
                             "  - {id: \"cn:Legacy Verifier\"}\n" CALLER);
    const char *const *auds = (const char *const *)1;
    size_t naud = 99;
    assert_true(js_policy_introspector(p, "spiffe://t/pay-api", &auds, &naud));
    assert_int_equal(naud, 2);
    assert_string_equal(auds[0], "pay");
    assert_string_equal(auds[1], "https://pay.example");
    assert_true(js_policy_introspector(p, "dns:verifier.t", &auds, &naud));
    assert_int_equal(naud, 0);
    assert_true(js_policy_introspector(p, "cn:Legacy Verifier", NULL, NULL));
    /* exact typed identities only: no other type, prefix or case variant */
    static const char *const not_in[] = {"cn:verifier.t",        "dns:VERIFIER.t",
                                         "spiffe://t/pay-api/x", "spiffe://t/pay",
                                         "spiffe://t/admin",     "",
                                         "spiffe://t/a"};
    for (size_t i = 0; i < sizeof(not_in) / sizeof(not_in[0]); i++) {
        auds = (const char *const *)1;
        naud = 99;
        assert_false(js_policy_introspector(p, not_in[i], &auds, &naud));
        assert_null(auds);
        assert_int_equal(naud, 0);
    }
    assert_false(js_policy_introspector(p, NULL, &auds, &naud));
    assert_false(js_policy_introspector(NULL, "dns:verifier.t", &auds, &naud));
    /* admins are not introspectors by being admins */
    assert_true(js_policy_is_admin(p, "spiffe://t/admin"));

    char *d = js_policy_describe(p);
    assert_non_null(d);
    assert_non_null(strstr(d, "introspectors:\n  spiffe://t/pay-api: aud pay, "
                              "https://pay.example\n  dns:verifier.t: any audience\n"));
    free(d);
    js_policy_free(p);

    p = load(HEAD CALLER);
    assert_false(js_policy_introspector(p, "spiffe://t/a", NULL, NULL));
    d = js_policy_describe(p);
    assert_non_null(strstr(d, "introspectors: (none)\n"));
    free(d);
    js_policy_free(p);
}

static void test_describe(void **state)
{
    (void)state;
    js_policy *p = load(k_policy);
    char *d = js_policy_describe(p);
    assert_non_null(d);
    const char *opt = strstr(d, "caller spiffe://t/opt");
    const char *req = strstr(d, "caller spiffe://t/req");
    const char *none = strstr(d, "caller spiffe://t/none");
    const char *pay = strstr(d, "caller spiffe://t/pay");
    const char *kube = strstr(d, "caller unix:uid=0");
    assert_true(opt && req && none && pay && kube);
    assert_non_null(strstr(opt, "  cnf:              optional  (built-in)\n"
                                "  cnf audiences:    admin  (defaults)\n"));
    assert_non_null(strstr(req, "  cnf:              required\n"));
    assert_non_null(strstr(none, "  cnf audiences:    (none)\n"));
    assert_non_null(strstr(pay, "  cnf:              optional\n"
                                "  cnf audiences:    pay\n"));
    assert_non_null(strstr(kube, "  cnf:              refused (pre-built tokens carry none)\n"));
    free(d);
    js_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evaluate),      cmocka_unit_test(test_validate_refuses_cnf),
        cmocka_unit_test(test_load_errors),   cmocka_unit_test(test_introspector_limits),
        cmocka_unit_test(test_introspectors), cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
