/*
 * test_policy_validate.c - validate mode (js_policy_validate, policy.h): the
 * pre-built claim set kube-apiserver sends on the ExternalJWTSigner socket,
 * checked for a unix: caller and signed as is. A kube-shaped claim set
 * passes; then one table of single-member changes, each refused with its
 * status AND reason (negative cases first-class), the window, the misuse
 * guards, the new caller accessors and describe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"
#include "policy.h"

#define NOW    INT64_C(1700000000)
#define LEEWAY INT64_C(60)
#define DAY    INT64_C(86400)

#define KUBE   "unix:uid=1000"
#define ROOT   "unix:uid=0"
#define FROZEN "unix:uid=2"
#define LOGIN  "spiffe://t/login"

#define ISSUER "https://issuer.test"
#define SA_SUB "system:serviceaccount:payments:deployer"
#define JTI    "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define A64      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

/* defaults carry a fixed claim and a short max_ttl, so the kube entries show
 * that overriding both is what makes them loadable. */
static const char k_policy[] =
    "version: 1\n"
    "issuer: \"" ISSUER "\"\n"
    "admins: [spiffe://t/admin]\n"
    "defaults:\n"
    "  keys: [k-default]\n"
    "  max_ttl: 15m\n"
    "  fixed_claims: {azp: login}\n"
    "  rate: {per_second: 10, burst: 20}\n"
    "callers:\n"
    "  - id: " KUBE "\n"
    "    keys: [k8s-es256, k8s-rs256]\n"
    "    audiences: [\"https://kubernetes.default.svc\", \"https://jwt-signer.test\"]\n"
    "    max_aud: 2\n"
    "    max_ttl: 24h\n"
    "    subject: "
    "'^system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?$'\n"
    "    claims:\n"
    "      kubernetes.io: {type: object, max_bytes: 512}\n"
    "      extra: {type: string, max_bytes: 8}\n"
    "    fixed_claims: {}\n"
    "  - id: " ROOT "\n"
    "    keys: [k8s-es384]\n"
    "    audiences: [a]\n"
    "    max_ttl: 10m\n" /* exactly the least kube-apiserver accepts */
    "    subject_required: false\n"
    "    fixed_claims: {}\n"
    "  - id: " FROZEN "\n"
    "    keys: [k8s-es256]\n"
    "    audiences: [a]\n"
    "    max_ttl: 1h\n"
    "    fixed_claims: {}\n"
    "    frozen: true\n"
    "  - id: " LOGIN "\n"
    "    keys: [k-login]\n"
    "    audiences: [app]\n"
    "  - id: spiffe://t/ns/*\n"
    "    keys: [k-ns]\n"
    "    audiences: [app]\n";

/* What kube-apiserver puts in a bound service-account token. */
static const char k_kube_claims[] =
    "{\"aud\":[\"https://kubernetes.default.svc\",\"https://jwt-signer.test\"],"
    "\"exp\":1700003600,\"iat\":1700000000,\"iss\":\"" ISSUER "\","
    "\"jti\":\"" JTI "\","
    "\"kubernetes.io\":{\"namespace\":\"payments\",\"node\":{\"name\":\"node-1\","
    "\"uid\":\"0f1e2d3c-4b5a-4697-a8b9-cadbecfd0e1f\"},\"pod\":{\"name\":\"deployer-7d9f\","
    "\"uid\":\"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d\"},\"serviceaccount\":{\"name\":"
    "\"deployer\",\"uid\":\"d4c3b2a1-6f5e-4b7a-9d8c-5c4b3a2f1e0d\"},\"warnafter\":1700000600},"
    "\"nbf\":1700000000,\"sub\":\"" SA_SUB "\"}";

static int setup(void **state)
{
    js_policy *p = NULL;
    js_err err = {0};
    if (js_policy_load_buffer(k_policy, strlen(k_policy), "t.yaml", &p, &err) != JS_OK) {
        fprintf(stderr, "policy load failed: %s: %s\n", js_reason_name(err.reason), err.msg);
        return -1;
    }
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    js_policy_free(*state);
    return 0;
}

static json_t *kube_claims(void)
{
    json_t *c = NULL;
    js_err err = {0};
    assert_int_equal(claims_parse((const uint8_t *)k_kube_claims, strlen(k_kube_claims), &c, &err),
                     JS_OK);
    return c;
}

/* ---- the happy path ---------------------------------------------------------------- */

static void test_kube_claims_pass(void **state)
{
    const js_policy *p = *state;
    json_t *claims = kube_claims();
    char *before = json_dumps(claims, JSON_SORT_KEYS | JSON_COMPACT);
    js_policy_validated v;
    js_err err = {0};
    js_status st =
        js_policy_validate(p, js_policy_match(p, KUBE), claims, NOW, LEEWAY, NULL, NULL, &v, &err);
    if (st != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    assert_string_equal(v.key_name, "k8s-es256"); /* the caller's default key */
    assert_int_equal(v.iat, NOW);
    assert_int_equal(v.exp, NOW + 3600);
    assert_string_equal(v.jti, JTI);
    assert_string_equal(v.sub, SA_SUB);
    /* Borrowed from the claim set, which is left exactly as it was. */
    assert_ptr_equal(v.jti, json_string_value(json_object_get(claims, "jti")));
    char *after = json_dumps(claims, JSON_SORT_KEYS | JSON_COMPACT);
    assert_string_equal(before, after);
    free(before);
    free(after);
    json_decref(claims);
}

/* ---- one change at a time ---------------------------------------------------------- */

typedef struct vcase {
    const char *name;
    const char *member; /* the member changed */
    const char *value;  /* its new JSON value; NULL: removed */
    js_status st;
    const char *reason;  /* NULL when st == JS_OK */
    const char *msg_has; /* optional substring of the message */
} vcase;

#define OK(n, m, v)                                                                                \
    {                                                                                              \
        n, m, v, JS_OK, NULL, NULL                                                                 \
    }
#define NO(n, m, v, st, r, msg)                                                                    \
    {                                                                                              \
        n, m, v, st, r, msg                                                                        \
    }

static const vcase k_cases[] = {
    /* iss: byte for byte the policy's issuer */
    NO("iss missing", "iss", NULL, JS_EDENIED, "policy.token_issuer", "has no iss"),
    NO("iss a number", "iss", "5", JS_EDENIED, "policy.token_issuer", "not number"),
    NO("iss an array", "iss", "[\"" ISSUER "\"]", JS_EDENIED, "policy.token_issuer", "array"),
    NO("iss trailing slash", "iss", "\"" ISSUER "/\"", JS_EDENIED, "policy.token_issuer",
       "iss 'https://issuer.test/' is not the policy's issuer 'https://issuer.test'"),
    NO("iss other case", "iss", "\"https://ISSUER.test\"", JS_EDENIED, "policy.token_issuer",
       "ISSUER"),
    NO("iss prefix", "iss", "\"https://issuer.tes\"", JS_EDENIED, "policy.token_issuer", NULL),
    NO("iss with newline", "iss", "\"" ISSUER "\\n\"", JS_EDENIED, "policy.token_issuer", "\\x0a"),
    NO("iss look-alike", "iss", "\"https://\\u0456ssuer.test\"", JS_EDENIED, "policy.token_issuer",
       "\\xd1\\x96"),

    /* exp */
    NO("exp missing", "exp", NULL, JS_EINVAL, "claims.exp_type", NULL),
    NO("exp a string", "exp", "\"1700003600\"", JS_EINVAL, "claims.exp_type", "integer"),
    NO("exp fractional", "exp", "1700003600.5", JS_EINVAL, "claims.exp_type", NULL),
    NO("exp null", "exp", "null", JS_EINVAL, "claims.exp_type", NULL),
    NO("exp now", "exp", "1700000000", JS_EINVAL, "claims.exp_past", "not in the future"),
    NO("exp past", "exp", "1699999999", JS_EINVAL, "claims.exp_past", NULL),
    NO("exp negative", "exp", "-1", JS_EINVAL, "claims.exp_past", NULL),
    OK("exp one second left", "exp", "1700000001"),

    /* iat */
    NO("iat missing", "iat", NULL, JS_EINVAL, "claims.iat", "present"),
    NO("iat a string", "iat", "\"1700000000\"", JS_EINVAL, "claims.iat", NULL),
    NO("iat fractional", "iat", "1700000000.25", JS_EINVAL, "claims.iat", NULL),
    NO("iat true", "iat", "true", JS_EINVAL, "claims.iat", NULL),
    NO("iat beyond leeway", "iat", "1700000061", JS_EINVAL, "claims.iat", "in the future"),
    OK("iat at the leeway", "iat", "1700000060"),

    /* nbf: optional, not after iat + leeway */
    OK("nbf missing", "nbf", NULL),
    NO("nbf a string", "nbf", "\"1700000000\"", JS_EINVAL, "claims.nbf", NULL),
    NO("nbf fractional", "nbf", "1700000000.5", JS_EINVAL, "claims.nbf", NULL),
    NO("nbf null", "nbf", "null", JS_EINVAL, "claims.nbf", NULL),
    NO("nbf beyond iat and leeway", "nbf", "1700000061", JS_EINVAL, "claims.nbf", "later than iat"),
    OK("nbf at iat and leeway", "nbf", "1700000060"),
    OK("nbf before iat", "nbf", "1699999000"),

    /* jti */
    NO("jti missing", "jti", NULL, JS_EINVAL, "claims.jti", "present"),
    NO("jti a number", "jti", "7", JS_EINVAL, "claims.jti", "number"),
    NO("jti empty", "jti", "\"\"", JS_EINVAL, "claims.jti", "1..128"),
    NO("jti with space", "jti", "\"a b\"", JS_EINVAL, "claims.jti", "offset 1"),
    NO("jti with tab", "jti", "\"a\\tb\"", JS_EINVAL, "claims.jti", "\\x09"),
    NO("jti with DEL", "jti", "\"ab\\u007f\"", JS_EINVAL, "claims.jti", "offset 2"),
    NO("jti not ascii", "jti", "\"caf\\u00e9\"", JS_EINVAL, "claims.jti", "printable ASCII"),
    NO("jti 129 characters", "jti", "\"" A64 A64 "a\"", JS_EINVAL, "claims.jti", "129 bytes"),
    OK("jti 128 characters", "jti", "\"" A64 A64 "\""),
    OK("jti one character", "jti", "\"~\""),

    /* lifetime: exp - iat within max_ttl (24h); iat is NOW */
    NO("lifetime one second over", "exp", "1700086401", JS_EDENIED, "policy.lifetime",
       "lifetime (exp - iat) of 86401 s; max_ttl is 86400 s"),
    OK("lifetime exactly max_ttl", "exp", "1700086400"),
    NO("lifetime a year", "exp", "1731536000", JS_EDENIED, "policy.lifetime", "max_ttl"),

    /* aud: the same rule as build mode */
    NO("aud missing", "aud", NULL, JS_EINVAL, "policy.audience", "required"),
    NO("aud not allowed", "aud", "\"https://evil.example\"", JS_EDENIED, "policy.audience",
       "not allowed"),
    NO("aud one of two not allowed", "aud", "[\"https://kubernetes.default.svc\",\"x\"]",
       JS_EDENIED, "policy.audience", "aud[1] 'x'"),
    NO("aud over max_aud", "aud",
       "[\"https://kubernetes.default.svc\",\"https://jwt-signer.test\",\"x\"]", JS_EDENIED,
       "policy.audience", "at most 2"),
    NO("aud empty array", "aud", "[]", JS_EINVAL, "policy.audience", "empty"),
    NO("aud not strings", "aud", "[1]", JS_EINVAL, "policy.audience", "aud[0]"),
    NO("aud repeated", "aud",
       "[\"https://kubernetes.default.svc\",\"https://kubernetes.default.svc\"]", JS_EINVAL,
       "policy.audience", "repeats"),
    NO("aud an object", "aud", "{}", JS_EINVAL, "policy.audience", "object"),
    NO("aud other case", "aud", "\"https://Kubernetes.default.svc\"", JS_EDENIED, "policy.audience",
       NULL),
    OK("aud a single string", "aud", "\"https://jwt-signer.test\""),

    /* sub: the same rule as build mode */
    NO("sub missing", "sub", NULL, JS_EINVAL, "policy.subject", "required"),
    NO("sub a number", "sub", "5", JS_EINVAL, "policy.subject", "string"),
    NO("sub empty", "sub", "\"\"", JS_EINVAL, "policy.subject", "empty"),
    NO("sub not a service account", "sub", "\"admin\"", JS_EDENIED, "policy.subject",
       "does not match"),
    NO("sub upper case namespace", "sub", "\"system:serviceaccount:Payments:deployer\"", JS_EDENIED,
       "policy.subject", NULL),
    NO("sub with zero-width space", "sub", "\"system:serviceaccount:payments:deploy\\u200ber\"",
       JS_EDENIED, "policy.subject", "U+200B"),
    NO("sub with newline", "sub", "\"system:serviceaccount:payments:deployer\\nx\"", JS_EDENIED,
       "policy.subject", NULL),
    OK("sub another service account", "sub", "\"system:serviceaccount:kube-system:default\""),

    /* every other member: scopes refused, the rest on the allowlist */
    NO("scope", "scope", "\"openid\"", JS_EDENIED, "policy.claim", "no scopes"),
    NO("scp", "scp", "[\"openid\"]", JS_EDENIED, "policy.claim", "'scp'"),
    NO("claim not on the allowlist", "foo", "1", JS_EDENIED, "policy.claim", "allowlist"),
    NO("defaults' fixed claim is just a claim here", "azp", "\"login\"", JS_EDENIED, "policy.claim",
       "allowlist"),
    NO("kubernetes.io a string", "kubernetes.io", "\"payments\"", JS_EINVAL, "policy.claim",
       "must be an object"),
    NO("kubernetes.io too large", "kubernetes.io",
       "{\"namespace\":\"" A64 A64 A64 A64 A64 A64 A64 A64 "\"}", JS_EDENIED, "policy.claim",
       "at most 512"),
    NO("extra over max_bytes", "extra", "\"12345678\"", JS_EDENIED, "policy.claim", "10 bytes"),
    OK("extra within max_bytes", "extra", "\"123456\""),
    OK("kubernetes.io missing", "kubernetes.io", NULL),
};

static void run_case(const js_policy *p, const vcase *tc)
{
    json_t *claims = kube_claims();
    if (tc->value == NULL) {
        json_object_del(claims, tc->member);
    } else {
        json_error_t jerr;
        json_t *v = json_loads(tc->value, JSON_DECODE_ANY, &jerr);
        if (v == NULL)
            fail_msg("%s: bad test value %s: %s", tc->name, tc->value, jerr.text);
        assert_int_equal(json_object_set_new(claims, tc->member, v), 0);
    }
    js_policy_validated out;
    js_err err = {0};
    js_status st = js_policy_validate(p, js_policy_match(p, KUBE), claims, NOW, LEEWAY, NULL, NULL,
                                      &out, &err);
    json_decref(claims);
    if (st != tc->st)
        fail_msg("%s: status %s, want %s (%s: %s)", tc->name, js_status_name(st),
                 js_status_name(tc->st), js_reason_name(err.reason), err.msg);
    if (st == JS_OK) {
        assert_string_equal(out.key_name, "k8s-es256");
        return;
    }
    if (strcmp(js_reason_name(err.reason), tc->reason) != 0)
        fail_msg("%s: reason %s, want %s (%s)", tc->name, js_reason_name(err.reason), tc->reason,
                 err.msg);
    if (tc->msg_has != NULL && strstr(err.msg, tc->msg_has) == NULL)
        fail_msg("%s: message \"%s\" lacks \"%s\"", tc->name, err.msg, tc->msg_has);
    /* A refused claim set leaves nothing to sign with. */
    assert_null(out.key_name);
    assert_null(out.jti);
    assert_null(out.sub);
    assert_int_equal(out.exp, 0);
}

static void test_validate_table(void **state)
{
    const js_policy *p = *state;
    size_t allowed = 0, denied = 0;
    for (size_t i = 0; i < COUNT(k_cases); i++) {
        run_case(p, &k_cases[i]);
        if (k_cases[i].st == JS_OK)
            allowed++;
        else
            denied++;
    }
    printf("validate table: %zu allowed, %zu refused cases\n", allowed, denied);
}

/* The first failure is the one reported, in the documented order. */
static void test_order(void **state)
{
    const js_policy *p = *state;
    static const struct {
        const char *drop[4];
        const char *reason;
    } cases[] = {
        {{"iss", "exp", "iat", "jti"}, "policy.token_issuer"},
        {{"exp", "iat", "jti", "aud"}, "claims.exp_type"},
        {{"iat", "jti", "aud", "sub"}, "claims.iat"},
        {{"jti", "aud", "sub", NULL}, "claims.jti"},
        {{"aud", "sub", NULL, NULL}, "policy.audience"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        json_t *claims = kube_claims();
        for (size_t j = 0; j < 4 && cases[i].drop[j] != NULL; j++)
            json_object_del(claims, cases[i].drop[j]);
        json_object_set_new(claims, "scope", json_string("x"));
        js_policy_validated out;
        js_err err = {0};
        assert_int_not_equal(js_policy_validate(p, js_policy_match(p, KUBE), claims, NOW, LEEWAY,
                                                NULL, NULL, &out, &err),
                             JS_OK);
        assert_string_equal(js_reason_name(err.reason), cases[i].reason);
        json_decref(claims);
    }
    /* A frozen caller is refused before anything about its claims. */
    json_t *claims = json_object();
    js_policy_validated out;
    js_err err = {0};
    assert_int_equal(js_policy_validate(p, js_policy_match(p, FROZEN), claims, NOW, LEEWAY, NULL,
                                        NULL, &out, &err),
                     JS_EDENIED);
    assert_string_equal(js_reason_name(err.reason), "policy.frozen");
    json_decref(claims);
}

/* ---- the key version's publication window ------------------------------------------ */

typedef struct window_ctx {
    int64_t window;
    const char *asked; /* the key name the policy asked about */
} window_ctx;

static int64_t window_of(const char *key_name, void *ctx)
{
    window_ctx *w = ctx;
    w->asked = key_name;
    return w->window;
}

static js_status validate_exp(const js_policy *p, int64_t exp, window_ctx *w, js_err *err)
{
    json_t *claims = kube_claims();
    json_object_set_new(claims, "exp", json_integer(exp));
    js_policy_validated out;
    js_status st = js_policy_validate(p, js_policy_match(p, KUBE), claims, NOW, LEEWAY, window_of,
                                      w, &out, err);
    json_decref(claims);
    return st;
}

static void test_window(void **state)
{
    const js_policy *p = *state;
    js_err err = {0};
    window_ctx w = {3600, NULL};
    assert_int_equal(validate_exp(p, NOW + 3600, &w, &err), JS_OK);
    assert_string_equal(w.asked, "k8s-es256");
    /* Beyond the window: refused, never shortened (the claims are signed as is). */
    assert_int_equal(validate_exp(p, NOW + 3601, &w, &err), JS_EDENIED);
    assert_string_equal(js_reason_name(err.reason), "policy.lifetime");
    assert_non_null(strstr(err.msg, "publication window"));
    assert_non_null(strstr(err.msg, "k8s-es256"));
    /* No window: only max_ttl counts. */
    w.window = 0;
    assert_int_equal(validate_exp(p, NOW + DAY, &w, &err), JS_OK);
}

/* A token that expires before (or when) it was issued is refused: exp - iat
 * would otherwise be negative and pass any max_ttl. */
static void test_exp_before_iat(void **state)
{
    const js_policy *p = *state;
    static const struct {
        int64_t iat, exp;
    } k_bad[] = {{NOW + 50, NOW + 10}, {NOW + 10, NOW + 10}};
    for (size_t i = 0; i < COUNT(k_bad); i++) {
        json_t *claims = kube_claims();
        json_object_set_new(claims, "iat", json_integer(k_bad[i].iat));
        json_object_set_new(claims, "nbf", json_integer(k_bad[i].iat));
        json_object_set_new(claims, "exp", json_integer(k_bad[i].exp));
        js_policy_validated out;
        js_err err = {0};
        assert_int_equal(js_policy_validate(p, js_policy_match(p, KUBE), claims, NOW, LEEWAY, NULL,
                                            NULL, &out, &err),
                         JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), "claims.iat");
        assert_non_null(strstr(err.msg, "not before exp"));
        json_decref(claims);
    }
}

/* ---- misuse and other callers ------------------------------------------------------ */

static void test_guards(void **state)
{
    const js_policy *p = *state;
    json_t *claims = kube_claims();
    const js_policy_caller *kube = js_policy_match(p, KUBE);
    js_policy_validated out;
    js_err err = {0};
    /* A build-mode caller never gets validate mode: it would lose its fixed
     * claims and the server's iat and jti. */
    assert_int_equal(js_policy_validate(p, js_policy_match(p, LOGIN), claims, NOW, LEEWAY, NULL,
                                        NULL, &out, &err),
                     JS_EINTERNAL);
    assert_string_equal(js_reason_name(err.reason), "policy.internal");
    assert_int_equal(js_policy_validate(p, js_policy_match(p, "spiffe://t/ns/x"), claims, NOW,
                                        LEEWAY, NULL, NULL, &out, &err),
                     JS_EINTERNAL);
    assert_int_equal(js_policy_validate(p, NULL, claims, NOW, LEEWAY, NULL, NULL, &out, &err),
                     JS_EINTERNAL);
    assert_int_equal(js_policy_validate(NULL, kube, claims, NOW, LEEWAY, NULL, NULL, &out, &err),
                     JS_EINTERNAL);
    assert_int_equal(js_policy_validate(p, kube, claims, NOW, -1, NULL, NULL, &out, &err),
                     JS_EINTERNAL);
    assert_int_equal(js_policy_validate(p, kube, claims, NOW, LEEWAY, NULL, NULL, NULL, &err),
                     JS_EINTERNAL);
    json_t *arr = json_array();
    assert_int_equal(js_policy_validate(p, kube, arr, NOW, LEEWAY, NULL, NULL, &out, &err),
                     JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "claims.not_object");
    assert_int_equal(js_policy_validate(p, kube, NULL, NOW, LEEWAY, NULL, NULL, &out, &err),
                     JS_EINVAL);
    json_decref(arr);

    /* An iss with an embedded NUL is not the issuer (no C string comparison). */
    json_object_set_new(claims, "iss", json_stringn(ISSUER "\0x", sizeof(ISSUER) + 1));
    assert_int_equal(js_policy_validate(p, kube, claims, NOW, LEEWAY, NULL, NULL, &out, &err),
                     JS_EDENIED);
    assert_string_equal(js_reason_name(err.reason), "policy.token_issuer");
    assert_non_null(strstr(err.msg, "\\x00"));
    /* The same for jti. */
    json_object_set_new(claims, "iss", json_string(ISSUER));
    json_object_set_new(claims, "jti", json_stringn("ab\0c", 4));
    assert_int_equal(js_policy_validate(p, kube, claims, NOW, LEEWAY, NULL, NULL, &out, &err),
                     JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "claims.jti");
    json_decref(claims);

    /* iat long ago (nbf dropped, which may not follow iat by more than the
     * leeway): the lifetime exp - iat is over max_ttl, also when it would
     * overflow. An iat in the past within max_ttl is fine. */
    claims = kube_claims();
    json_object_del(claims, "nbf");
    static const struct {
        json_int_t iat;
        js_status st;
        const char *msg_has;
    } past[] = {
        {NOW - 3600, JS_OK, NULL},
        {NOW + 3600 - DAY, JS_OK, NULL},
        {NOW + 3600 - DAY - 1, JS_EDENIED, "of 86401 s"},
        {INT64_C(1600000000), JS_EDENIED, "max_ttl is 86400 s"},
        {INT64_MIN, JS_EDENIED, "9223372036854775807 s"},
        {INT64_MIN + 1, JS_EDENIED, "9223372036854775807 s"},
    };
    for (size_t i = 0; i < COUNT(past); i++) {
        json_object_set_new(claims, "iat", json_integer(past[i].iat));
        js_err_clear(&err);
        js_status st = js_policy_validate(p, kube, claims, NOW, LEEWAY, NULL, NULL, &out, &err);
        if (st != past[i].st)
            fail_msg("iat %" PRId64 ": %s %s", (int64_t)past[i].iat, js_status_name(st), err.msg);
        if (st != JS_OK) {
            assert_string_equal(js_reason_name(err.reason), "policy.lifetime");
            if (strstr(err.msg, past[i].msg_has) == NULL)
                fail_msg("iat %" PRId64 ": \"%s\" lacks \"%s\"", (int64_t)past[i].iat, err.msg,
                         past[i].msg_has);
        }
    }
    json_decref(claims);

    /* A caller whose subject is optional: no sub is fine, out.sub is NULL. */
    claims = json_pack("{s:s, s:s, s:I, s:I, s:s}", "iss", ISSUER, "aud", "a", "iat",
                       (json_int_t)NOW, "exp", (json_int_t)(NOW + 600), "jti", "j");
    assert_int_equal(
        js_policy_validate(p, js_policy_match(p, ROOT), claims, NOW, 0, NULL, NULL, &out, &err),
        JS_OK);
    assert_null(out.sub);
    assert_string_equal(out.key_name, "k8s-es384");
    json_object_set_new(claims, "exp", json_integer(NOW + 601));
    assert_int_equal(
        js_policy_validate(p, js_policy_match(p, ROOT), claims, NOW, 0, NULL, NULL, &out, &err),
        JS_EDENIED);
    assert_string_equal(js_reason_name(err.reason), "policy.lifetime");
    /* Leeway 0: an iat one second ahead is refused. */
    json_object_set_new(claims, "exp", json_integer(NOW + 600));
    json_object_set_new(claims, "iat", json_integer(NOW + 1));
    assert_int_equal(
        js_policy_validate(p, js_policy_match(p, ROOT), claims, NOW, 0, NULL, NULL, &out, &err),
        JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "claims.iat");
    json_decref(claims);
}

static void test_no_issuer(void **state)
{
    (void)state;
    static const char text[] = "version: 1\n"
                               "callers:\n"
                               "  - id: unix:uid=7\n"
                               "    keys: [k]\n"
                               "    audiences: [a]\n";
    js_policy *p = NULL;
    js_err err = {0};
    assert_int_equal(js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err), JS_OK);
    json_t *claims = kube_claims();
    js_policy_validated out;
    assert_int_equal(js_policy_validate(p, js_policy_match(p, "unix:uid=7"), claims, NOW, LEEWAY,
                                        NULL, NULL, &out, &err),
                     JS_EINTERNAL);
    assert_string_equal(js_reason_name(err.reason), "policy.no_issuer");
    json_decref(claims);
    js_policy_free(p);
}

/* ---- accessors, matching, describe ------------------------------------------------- */

static void test_accessors(void **state)
{
    const js_policy *p = *state;
    assert_int_equal(js_policy_caller_count(p), 5);
    static const char *const ids[] = {KUBE, ROOT, FROZEN, LOGIN, "spiffe://t/ns/*"};
    static const js_identity_type types[] = {JS_ID_UNIX, JS_ID_UNIX, JS_ID_UNIX, JS_ID_URI,
                                             JS_ID_URI};
    for (size_t i = 0; i < COUNT(ids); i++) {
        const js_policy_caller *c = js_policy_caller_at(p, i);
        assert_non_null(c);
        assert_string_equal(js_policy_caller_id(c), ids[i]);
        assert_int_equal(js_policy_caller_type(c), types[i]);
    }
    assert_null(js_policy_caller_at(p, 5));
    assert_null(js_policy_caller_at(NULL, 0));
    assert_int_equal(js_policy_caller_count(NULL), 0);

    const js_policy_caller *kube = js_policy_match(p, KUBE);
    assert_ptr_equal(kube, js_policy_caller_at(p, 0));
    assert_int_equal(js_policy_caller_max_ttl(kube), DAY);
    assert_int_equal(js_policy_caller_max_ttl(js_policy_match(p, ROOT)), 600);
    assert_int_equal(js_policy_caller_max_ttl(js_policy_match(p, LOGIN)), 900); /* inherited */
    assert_string_equal(js_policy_caller_default_key(kube), "k8s-es256");
    assert_int_equal(js_policy_caller_key_count(kube), 2);
    assert_string_equal(js_policy_caller_key_at(kube, 0), "k8s-es256");
    assert_string_equal(js_policy_caller_key_at(kube, 1), "k8s-rs256");
    assert_null(js_policy_caller_key_at(kube, 2));
    /* Inherited keys count as the caller's. */
    static const char text[] = "version: 1\n"
                               "defaults:\n"
                               "  keys: [k1, k2]\n"
                               "  default_key: k2\n"
                               "  audiences: [a]\n"
                               "callers:\n"
                               "  - id: unix:uid=3\n";
    js_policy *q = NULL;
    js_err err = {0};
    assert_int_equal(js_policy_load_buffer(text, strlen(text), "t.yaml", &q, &err), JS_OK);
    const js_policy_caller *c = js_policy_match(q, "unix:uid=3");
    assert_int_equal(js_policy_caller_key_count(c), 2);
    assert_string_equal(js_policy_caller_key_at(c, 1), "k2");
    assert_string_equal(js_policy_caller_default_key(c), "k2");
    assert_int_equal(js_policy_caller_max_ttl(c), 3600); /* built-in */
    js_policy_free(q);

    assert_int_equal(js_policy_caller_max_ttl(NULL), 0);
    assert_null(js_policy_caller_default_key(NULL));
    assert_int_equal(js_policy_caller_key_count(NULL), 0);
    assert_null(js_policy_caller_key_at(NULL, 0));
    assert_int_equal(js_policy_caller_type(NULL), JS_ID_URI);
}

static void test_match(void **state)
{
    const js_policy *p = *state;
    static const struct {
        const char *identity, *want;
    } cases[] = {
        {"unix:uid=1000", KUBE},  {"unix:uid=0", ROOT},
        {"unix:uid=01000", NULL}, /* exact text only */
        {"unix:uid=10000", NULL}, {"unix:uid=100", NULL},
        {"UNIX:uid=1000", NULL},  {"cn:unix:uid=1000", NULL},
        {"dns:unix", NULL},       {"spiffe://t/ns/unix:uid=0", "spiffe://t/ns/*"},
    };
    for (size_t i = 0; i < COUNT(cases); i++) {
        const js_policy_caller *c = js_policy_match(p, cases[i].identity);
        const char *got = c ? js_policy_caller_id(c) : NULL;
        if ((got == NULL) != (cases[i].want == NULL) ||
            (got != NULL && strcmp(got, cases[i].want) != 0))
            fail_msg("'%s' matched %s, want %s", cases[i].identity, got ? got : "nothing",
                     cases[i].want ? cases[i].want : "nothing");
    }
    assert_false(js_policy_is_admin(p, ROOT));
}

static void test_describe(void **state)
{
    const js_policy *p = *state;
    char *d = js_policy_describe(p);
    assert_non_null(d);
    const char *kube = strstr(d, "caller unix:uid=1000");
    const char *login = strstr(d, "caller " LOGIN);
    assert_non_null(kube);
    assert_non_null(login);
    static const char *const want[] = {
        "mode:             validates pre-built claims (ExternalJWTSigner)",
        "default key:      k8s-es256  (signs every token)",
        "lifetime:         max 86400s",
        "none (scope and scp are refused)",
        "kubernetes.io: object, at most 512 bytes",
        "fixed claims:     (none)",
    };
    for (size_t i = 0; i < COUNT(want); i++) {
        const char *at = strstr(kube, want[i]);
        if (at == NULL || at > strstr(kube, "caller unix:uid=0"))
            fail_msg("describe of %s lacks \"%s\":\n%s", KUBE, want[i], d);
    }
    /* A build-mode caller keeps its own lines and no mode line. */
    assert_null(strstr(login, "validates pre-built"));
    assert_non_null(strstr(login, "scope claim:"));
    assert_non_null(strstr(login, "lifetime:         default 300s"));
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kube_claims_pass),
        cmocka_unit_test(test_validate_table),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_exp_before_iat),
        cmocka_unit_test(test_guards),
        cmocka_unit_test(test_no_issuer),
        cmocka_unit_test(test_accessors),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
