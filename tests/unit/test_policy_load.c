/*
 * test_policy_load.c - unit tests for loading and validating policy files
 * (policy/policy.h): the example file loads and reads as documented; a table
 * of broken files, each checked for its reason code, its line and the words
 * of its message; file errors and the bounded reader; and a leak-free
 * failure at every step.
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
#include <sys/stat.h>
#include <unistd.h>

#include "policy.h"

/* The repository root comes from CMake (JS_SOURCE_DIR): __FILE__ is not it
 * when the build maps file prefixes (-ffile-prefix-map, as Debian's package
 * build does). */
static const char *example_path(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/policy/examples/policy.yaml", JS_SOURCE_DIR);
    return buf;
}

static void test_example_loads(void **state)
{
    (void)state;
    char path[4096];
    js_policy *p = NULL;
    js_err err = {0};
    js_status st = js_policy_load(example_path(path, sizeof(path)), &p, &err);
    if (st != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    assert_string_equal(js_policy_issuer(p), "https://issuer.example.org");
    assert_true(js_policy_is_admin(p, "spiffe://example.org/ops/admin"));
    assert_false(js_policy_incident(p));
    assert_int_equal(strlen(js_policy_hash_hex(p)), JS_POLICY_HASH_HEX);

    const js_policy_caller *c = js_policy_match(p, "spiffe://example.org/ns/payments/checkout");
    assert_non_null(c);
    assert_string_equal(js_policy_caller_id(c), "spiffe://example.org/ns/payments/*");
    assert_false(js_policy_caller_frozen(c));
    js_rate r = js_policy_caller_incident_rate(c);
    assert_true(r.per_second == 0.2 && r.burst == 1);
    c = js_policy_match(p, "spiffe://example.org/ns/payments/legacy-batch");
    assert_true(js_policy_caller_frozen(c));
    assert_null(js_policy_match(p, "spiffe://example.org/ops/admin"));
    /* The example's DNS-typed entry: only a DNS SAN identity reaches it, and a
     * CN holding the admin's SPIFFE ID is neither that admin nor a caller. */
    c = js_policy_match(p, "dns:reports.internal.example");
    assert_non_null(c);
    assert_string_equal(js_policy_caller_id(c), "dns:reports.internal.example");
    assert_null(js_policy_match(p, "cn:reports.internal.example"));
    assert_null(js_policy_match(p, "reports.internal.example"));
    assert_false(js_policy_is_admin(p, "cn:spiffe://example.org/ops/admin"));
    assert_null(js_policy_match(p, "cn:spiffe://example.org/ns/payments/checkout"));

    /* Three services, distinct keys. */
    assert_int_equal(js_policy_key_count(p), 4);

    /* A request each service would really make. */
    static const struct {
        const char *id, *claims, *scopes;
    } reqs[] = {
        {"spiffe://example.org/login",
         "{\"aud\":[\"api.example.com\",\"app\"],\"sub\":\"123e4567-e89b-12d3-a456-"
         "426614174000\",\"scope\":\"profile orders:read\",\"amr\":[\"pwd\",\"otp\"]}",
         "profile orders:read"},
        {"spiffe://example.org/sso",
         "{\"aud\":[\"app\",\"reports.example.com\"],\"sub\":\"123e4567-e89b-12d3-a456-"
         "426614174000\",\"scp\":[\"openid\",\"groups\"],\"groups\":[\"eng\"]}",
         "openid groups"},
        {"spiffe://example.org/ns/payments/checkout",
         "{\"aud\":\"payments.example.com\",\"sub\":\"acct_0123456789abcdefABCDEFGH\","
         "\"scope\":\"payments:authorize\",\"amount_minor\":1999,\"currency\":\"EUR\","
         "\"cnf\":{\"x5t#S256\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM\"}}",
         "payments:authorize"},
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        json_t *claims = NULL;
        js_policy_result res;
        assert_int_equal(
            claims_parse((const uint8_t *)reqs[i].claims, strlen(reqs[i].claims), &claims, &err),
            JS_OK);
        st = js_policy_evaluate(p, js_policy_match(p, reqs[i].id), claims, "",
                                "AAAAAAAAAAAAAAAAAAAAAA", 1700000000, NULL, NULL, &res, &err);
        if (st != JS_OK)
            fail_msg("%s: %s: %s", reqs[i].id, js_reason_name(err.reason), err.msg);
        assert_string_equal(res.scopes, reqs[i].scopes);
        js_policy_result_clear(&res);
        json_decref(claims);
    }
    /* cnf: required for payments, and for sso's admin console audience. */
    static const struct {
        const char *id, *claims;
    } unbound[] = {
        {"spiffe://example.org/ns/payments/checkout",
         "{\"aud\":\"payments.example.com\",\"sub\":\"acct_0123456789abcdefABCDEFGH\"}"},
        {"spiffe://example.org/sso", "{\"aud\":\"admin.example.com\",\"sub\":\"123e4567-e89b-"
                                     "12d3-a456-426614174000\"}"},
    };
    for (size_t i = 0; i < sizeof(unbound) / sizeof(unbound[0]); i++) {
        json_t *claims = NULL;
        js_policy_result res;
        assert_int_equal(claims_parse((const uint8_t *)unbound[i].claims, strlen(unbound[i].claims),
                                      &claims, &err),
                         JS_OK);
        st = js_policy_evaluate(p, js_policy_match(p, unbound[i].id), claims, "",
                                "AAAAAAAAAAAAAAAAAAAAAA", 1700000000, NULL, NULL, &res, &err);
        assert_int_equal(st, JS_EDENIED);
        assert_int_equal(err.reason, JS_R_POLICY_CNF);
        js_policy_result_clear(&res);
        json_decref(claims);
    }
    const char *const *auds = NULL;
    size_t naud = 0;
    assert_true(js_policy_introspector(p, "spiffe://example.org/ns/payments/api", &auds, &naud));
    assert_int_equal(naud, 1);
    assert_string_equal(auds[0], "payments.example.com");
    assert_true(js_policy_introspector(p, "spiffe://example.org/ops/admin", &auds, &naud));
    assert_int_equal(naud, 0);
    assert_false(js_policy_introspector(p, "spiffe://example.org/login", &auds, &naud));
    char *d = js_policy_describe(p);
    assert_non_null(d);
    assert_non_null(strstr(d, "spiffe://example.org/ns/payments/*  [prefix pattern]"));
    assert_non_null(strstr(d, "  cnf:              required\n"));
    free(d);
    js_policy_free(p);
}

/* The example's commented unix: (Kubernetes) entry, uncommented, loads and
 * validates what kube-apiserver sends: the documentation cannot rot. */
static void test_example_kube_entry(void **state)
{
    (void)state;
    char path[4096], line[512];
    FILE *f = fopen(example_path(path, sizeof(path)), "r");
    assert_non_null(f);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    bool in_entry = false;
    size_t uncommented = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "  # - id: unix:uid=0", 20) == 0)
            in_entry = true;
        else if (in_entry && strncmp(line, "  #   ", 6) != 0)
            in_entry = false;
        if (in_entry) {
            fprintf(out, "  %s", line + 4); /* drop the "# " after the indent */
            uncommented++;
        } else {
            fputs(line, out);
        }
    }
    fclose(f);
    assert_int_equal(fclose(out), 0);
    assert_true(uncommented >= 8);

    js_policy *p = NULL;
    js_err err = {0};
    if (js_policy_load_buffer(text, len, "policy.yaml", &p, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    free(text);
    const js_policy_caller *c = js_policy_match(p, "unix:uid=0");
    assert_non_null(c);
    assert_int_equal(js_policy_caller_type(c), JS_ID_UNIX);
    assert_int_equal(js_policy_caller_max_ttl(c), 86400);
    assert_string_equal(js_policy_caller_default_key(c), "k8s-sa-es256");
    static const char claims_text[] =
        "{\"aud\":[\"https://kubernetes.default.svc\"],\"exp\":1700003600,\"iat\":1700000000,"
        "\"iss\":\"https://issuer.example.org\",\"jti\":\"2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901\","
        "\"kubernetes.io\":{\"namespace\":\"kube-system\",\"serviceaccount\":{\"name\":"
        "\"default\",\"uid\":\"d4c3b2a1-6f5e-4b7a-9d8c-5c4b3a2f1e0d\"}},\"nbf\":1700000000,"
        "\"sub\":\"system:serviceaccount:kube-system:default\"}";
    json_t *claims = NULL;
    assert_int_equal(claims_parse((const uint8_t *)claims_text, strlen(claims_text), &claims, &err),
                     JS_OK);
    js_policy_validated v;
    if (js_policy_validate(p, c, claims, 1700000000, 60, NULL, NULL, &v, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    json_decref(claims);
    char *d = js_policy_describe(p);
    assert_non_null(strstr(d, "validates pre-built claims (ExternalJWTSigner)"));
    free(d);
    js_policy_free(p);
}

/* ---- broken files ------------------------------------------------------------------ */

/* Lines shared by most cases; a case appends its caller entries. */
#define HEAD "version: 1\nissuer: https://i\n"
#define C1   "callers:\n  - id: spiffe://t/a\n    keys: [k]\n    audiences: [a]\n"
/* A unix: (Kubernetes, validate mode) caller on lines 3..6. */
#define U1 "callers:\n  - id: unix:uid=1000\n    keys: [k]\n    audiences: [a]\n"

typedef struct lcase {
    const char *name;
    const char *text;
    const char *reason;
    size_t line;         /* expected "t.yaml:LINE:" (0: no line) */
    const char *msg_has; /* words the message must contain */
} lcase;

static const lcase k_load_cases[] = {
    /* structure and types */
    {"empty file", "", "policy.no_document", 0, "empty"},
    {"not a mapping", "- a\n", "policy.type", 1, "mapping"},
    {"yaml syntax", "version: 1\ncallers: [\n", "policy.yaml_syntax", 0, NULL},
    {"duplicate top key", HEAD "version: 1\n" C1, "policy.duplicate_key", 3, "version"},
    {"unknown top key", HEAD "callerz: []\n" C1, "policy.unknown_key", 3, "'callerz'"},
    {"version missing", "issuer: x\n" C1, "policy.missing_key", 1, "version"},
    {"version 2", "version: 2\n" C1, "policy.range", 1, "version"},
    {"callers missing", HEAD, "policy.missing_key", 1, "callers"},
    {"callers empty", HEAD "callers: []\n", "policy.callers_count", 3, "between 1"},
    {"callers not a list", HEAD "callers: {a: 1}\n", "policy.type", 3, "sequence"},
    {"caller id missing", HEAD "callers:\n  - keys: [k]\n", "policy.missing_key", 4,
     "callers[0].id"},
    {"unknown caller key", HEAD C1 "    audience: [b]\n", "policy.unknown_key", 7, "'audience'"},
    {"frozen in defaults", HEAD "defaults:\n  frozen: true\n" C1, "policy.unknown_key", 4,
     "'frozen'"},
    {"unknown rate key", HEAD C1 "    rate: {per_second: 1, burst: 1, refill: 2}\n",
     "policy.unknown_key", 7, "'refill'"},
    {"keys is a scalar", HEAD "callers:\n  - id: spiffe://t/a\n    keys: k\n", "policy.type", 5,
     "callers[0].keys"},
    {"frozen yes", HEAD C1 "    frozen: yes\n", "policy.boolean", 7, "frozen"},
    {"max_aud quoted", HEAD C1 "    max_aud: \"3\"\n", "policy.integer", 7, "max_aud"},
    {"max_aud zero", HEAD C1 "    max_aud: 0\n", "policy.range", 7, "max_aud"},
    {"incident not a bool", "version: 1\nincident: on\n" C1, "policy.boolean", 2, "incident"},
    {"issuer control char", "version: 1\nissuer: \"a\\tb\"\n" C1, "policy.issuer", 2, "control"},
    {"issuer empty", "version: 1\nissuer: \"\"\n" C1, "policy.issuer", 2, "1..256"},

    /* durations */
    {"max_ttl words", HEAD C1 "    max_ttl: 15 minutes\n", "policy.duration", 7, "max_ttl"},
    {"default_ttl zero", HEAD C1 "    default_ttl: 0s\n", "policy.duration", 7, "positive"},
    {"max_ttl number", HEAD C1 "    max_ttl: 900\n", "policy.duration", 7,
     "positive integer followed by"},
    {"default longer than max", HEAD C1 "    max_ttl: 5m\n    default_ttl: 10m\n", "policy.ttl", 8,
     "default_ttl (600s"},
    {"inherited default longer", HEAD "defaults:\n  default_ttl: 20m\n" C1 "    max_ttl: 15m\n",
     "policy.ttl", 9, "defaults.default_ttl"},
    {"defaults default longer", HEAD "defaults:\n  max_ttl: 1m\n" C1 "    max_ttl: 1h\n",
     "policy.ttl", 4, "defaults.max_ttl"},

    /* regexes */
    {"invalid regex", HEAD C1 "    subject: '^([a-z]$'\n", "policy.regex", 7,
     "invalid regular expression"},
    {"unanchored start", HEAD C1 "    subject: '[a-z]+$'\n", "policy.regex_anchor", 7, "anchored"},
    {"unanchored end", HEAD C1 "    subject: '^[a-z]+'\n", "policy.regex_anchor", 7, "anchored"},
    {"escaped dollar", HEAD C1 "    subject: '^[a-z]+\\$'\n", "policy.regex_anchor", 7, "anchored"},
    {"regex nested repetition", HEAD C1 "    subject: '^((a{200}){200})$'\n", "policy.regex", 7,
     "too complex"},
    {"regex stacked quantifiers", HEAD C1 "    subject: '^a+++++++++++++{4}$'\n", "policy.regex", 7,
     "too complex"},
    {"regex big bound", HEAD C1 "    subject: '^a{1000}$'\n", "policy.regex", 7, "above 255"},
    {"regex big upper bound", HEAD C1 "    subject: '^a{1,256}$'\n", "policy.regex", 7,
     "above 255"},
    {"regex back-reference", HEAD C1 "    subject: '^(a)\\1$'\n", "policy.regex", 7,
     "back-references"},
    {"regex nesting", HEAD C1 "    subject: '^((((((((((((((((((a))))))))))))))))))$'\n",
     "policy.regex", 7, "deeper"},
    {"regex in defaults", HEAD "defaults:\n  subject: '^(a|$'\n" C1, "policy.regex", 4,
     "defaults.subject"},

    /* callers and patterns */
    {"duplicate caller", HEAD C1 "  - id: spiffe://t/a\n", "policy.duplicate_caller", 7, "line 4"},
    {"duplicate pattern",
     HEAD "callers:\n  - id: s://t/*\n    keys: [k]\n    audiences: [a]\n"
          "  - id: s://t/*\n",
     "policy.duplicate_caller", 7, "s://t/*"},
    {"star in the middle", HEAD "callers:\n  - id: spiffe://t/*/x\n", "policy.pattern", 4,
     "trailing"},
    {"star without slash", HEAD "callers:\n  - id: spiffe://t/a*\n", "policy.pattern", 4,
     "trailing"},
    {"star alone", HEAD "callers:\n  - id: '*'\n", "policy.identity_untyped", 4, "has no type"},
    {"star after scheme only", HEAD "callers:\n  - id: 'spiffe:*'\n", "policy.pattern", 4,
     "trailing"},
    {"two stars", HEAD "callers:\n  - id: spiffe://*/*\n", "policy.pattern", 4, "trailing"},
    {"caller id with space", HEAD "callers:\n  - id: spiffe://t/a b\n", "policy.identity", 4,
     "space"},
    {"admin pattern", "version: 1\nadmins: [spiffe://t/*]\n" C1, "policy.pattern", 2, "exact"},
    {"admin duplicate", "version: 1\nadmins: ['cn:a', 'cn:a']\n" C1, "policy.duplicate", 2,
     "'cn:a'"},

    /* typed identities: an old-style bare entry is refused with how
     * to write it now, at its own line */
    {"bare caller id", HEAD "callers:\n  - id: login.example\n", "policy.identity_untyped", 4,
     "callers[0].id: identity 'login.example' has no type; write it as dns:login.example (DNS "
     "SAN), cn:login.example (subject CN) or a full URI"},
    {"bare caller id after a good one", HEAD C1 "  - id: legacy-batch\n", "policy.identity_untyped",
     7, "callers[1].id"},
    {"bare admin", "version: 1\nadmins: [ops-admin]\n" C1, "policy.identity_untyped", 2,
     "admins[0]: identity 'ops-admin' has no type; write it as dns:ops-admin"},
    {"bare admin on its line",
     "version: 1\nadmins:\n  - spiffe://t/admin\n  - admin.example.org\n" C1,
     "policy.identity_untyped", 4, "admins[1]"},
    {"upper-case type", HEAD "callers:\n  - id: DNS:login.example\n", "policy.identity_untyped", 4,
     "lower case"},
    {"dns name in upper case", HEAD "callers:\n  - id: dns:Login.example\n", "policy.identity", 4,
     "lower case"},
    {"dns holding a uri", HEAD "callers:\n  - id: dns:spiffe://t/a\n", "policy.identity", 4,
     "host name"},
    {"empty cn", HEAD "callers:\n  - id: 'cn:'\n", "policy.identity", 4, "empty"},
    {"empty id", HEAD "callers:\n  - id: ''\n", "policy.identity", 4, "empty"},
    {"cn with bidi override", HEAD "callers:\n  - id: \"cn:adm\\u202ein\"\n", "policy.identity", 4,
     "U+202E"},
    {"uri with C1", HEAD "callers:\n  - id: \"spiffe://t/a\\u0085\"\n", "policy.identity", 4,
     "U+0085"},
    {"admin with zero-width space", "version: 1\nadmins: [\"cn:ad\\u200bmin\"]\n" C1,
     "policy.identity", 2, "U+200B"},
    {"cn pattern", HEAD "callers:\n  - id: 'cn:ops/*'\n", "policy.pattern", 4,
     "URI identities only"},
    {"cn with star in admins", "version: 1\nadmins: ['cn:a*']\n" C1, "policy.pattern", 2,
     "URI identities only"},
    {"admin not a string", "version: 1\nadmins: [[a]]\n" C1, "policy.type", 2, "admins[0]"},

    /* keys */
    {"default key not in keys", HEAD C1 "    default_key: other\n", "policy.default_key", 7,
     "'other'"},
    {"defaults default key not in keys", HEAD "defaults:\n  keys: [k]\n  default_key: j\n" C1,
     "policy.default_key", 5, "'j'"},
    {"inherited default key not in keys",
     HEAD "defaults:\n  default_key: j\n  keys: [j]\ncallers:\n  - id: cn:a\n    audiences: [a]\n"
          "    default_key: k\n",
     "policy.default_key", 9, "'k'"},
    {"no keys", HEAD "callers:\n  - id: spiffe://t/a\n    audiences: [a]\n", "policy.no_keys", 4,
     "no keys"},
    {"empty keys", HEAD "callers:\n  - id: spiffe://t/a\n    keys: []\n    audiences: [a]\n",
     "policy.no_keys", 5, "no keys"},
    {"bad key name", HEAD "callers:\n  - id: spiffe://t/a\n    keys: [\"k 1\"]\n", "policy.value",
     5, "key name"},
    {"duplicate key", HEAD "callers:\n  - id: spiffe://t/a\n    keys: [k, k]\n", "policy.duplicate",
     5, "'k'"},

    /* audiences */
    {"no audiences", HEAD "callers:\n  - id: spiffe://t/a\n    keys: [k]\n", "policy.no_audiences",
     4, "no audiences"},
    {"duplicate audience", HEAD "callers:\n  - id: cn:x\n    keys: [k]\n    audiences: [a, b, a]\n",
     "policy.duplicate", 6, "'a'"},
    {"empty audience", HEAD "callers:\n  - id: cn:x\n    keys: [k]\n    audiences: [\"\"]\n",
     "policy.value", 6, "audience"},
    {"audience not a string", HEAD "callers:\n  - id: cn:x\n    keys: [k]\n    audiences: [[a]]\n",
     "policy.type", 6, "audiences[0]"},

    /* scopes */
    {"scope_claim unknown", HEAD C1 "    scope_claim: scopes\n", "policy.scope_claim", 7,
     "\"scp\""},
    {"scope with space", HEAD C1 "    scopes: [\"a b\"]\n", "policy.value", 7, "scope"},
    {"scope with quote", HEAD C1 "    scopes: ['a\"b']\n", "policy.value", 7, "scope"},
    {"duplicate scope", HEAD C1 "    scopes: [a, b, a]\n", "policy.duplicate", 7, "'a'"},

    /* claims */
    {"claims allow iss", HEAD C1 "    claims:\n      iss: {}\n", "policy.server_claim", 8, "'iss'"},
    {"claims allow jti", HEAD C1 "    claims:\n      jti: {type: string}\n", "policy.server_claim",
     8, "'jti'"},
    {"claims allow sub", HEAD C1 "    claims:\n      sub: {}\n", "policy.ruled_claim", 8, "'sub'"},
    {"claims allow scp", HEAD C1 "    claims:\n      scp: {}\n", "policy.ruled_claim", 8, "'scp'"},
    {"claim type unknown", HEAD C1 "    claims:\n      x: {type: int}\n", "policy.claim_type", 8,
     "'int'"},
    {"claim max_bytes zero", HEAD C1 "    claims:\n      x: {max_bytes: 0}\n", "policy.range", 8,
     "max_bytes"},
    {"claim unknown key", HEAD C1 "    claims:\n      x: {size: 3}\n", "policy.unknown_key", 8,
     "'size'"},
    {"claim rule not a mapping", HEAD C1 "    claims:\n      x: string\n", "policy.type", 8,
     "claims.x"},
    {"claims a list", HEAD C1 "    claims: [a]\n", "policy.type", 7, "mapping"},

    /* fixed claims */
    {"fixed exp", HEAD C1 "    fixed_claims:\n      exp: 1\n", "policy.registered_claim", 8,
     "'exp'"},
    {"fixed iss", HEAD C1 "    fixed_claims:\n      iss: x\n", "policy.registered_claim", 8,
     "'iss'"},
    {"fixed aud", HEAD C1 "    fixed_claims:\n      aud: x\n", "policy.registered_claim", 8,
     "'aud'"},
    {"fixed null", HEAD C1 "    fixed_claims:\n      azp: ~\n", "policy.fixed_claim", 8, "null"},
    {"fixed bad number", HEAD C1 "    fixed_claims:\n      n: 99999999999999999999\n",
     "policy.fixed_claim", 8, "number"},
    {"claim both allowed and fixed",
     HEAD C1 "    claims:\n      azp: {}\n    fixed_claims:\n      azp: x\n", "policy.claim_fixed",
     8, "caller 'spiffe://t/a': claim 'azp'"},

    /* unix: callers (validate mode): the extra rules on effective values */
    {"unix caller with fixed claims", HEAD U1 "    fixed_claims:\n      azp: kube\n",
     "policy.fixed_claim", 8,
     "callers[0].fixed_claims: caller 'unix:uid=1000' is a Kubernetes caller (ExternalJWTSigner): "
     "the signer cannot add claims"},
    {"unix caller inherits fixed claims", HEAD "defaults:\n  fixed_claims: {azp: x}\n" U1,
     "policy.fixed_claim", 4, "defaults.fixed_claims: caller 'unix:uid=1000'"},
    {"unix caller inherits fixed claims: the hint", HEAD "defaults:\n  fixed_claims: {azp: x}\n" U1,
     "policy.fixed_claim", 4, "set `fixed_claims: {}` in its entry"},
    {"unix caller max_ttl 599s", HEAD U1 "    max_ttl: 599s\n", "policy.ttl", 7,
     "callers[0].max_ttl: caller 'unix:uid=1000' is a Kubernetes caller (ExternalJWTSigner): "
     "max_ttl is 599s; it must be at least 600s"},
    {"unix caller inherits max_ttl 5m", HEAD "defaults:\n  max_ttl: 5m\n" U1, "policy.ttl", 4,
     "defaults.max_ttl: caller 'unix:uid=1000'"},
    {"unix caller fixed claims after a good one",
     HEAD U1 "    fixed_claims: {}\n  - id: unix:uid=0\n    keys: [k]\n    audiences: [a]\n"
             "    max_ttl: 9m\n",
     "policy.ttl", 11, "'unix:uid=0'"},
    {"unix admin", "version: 1\nadmins: ['unix:uid=0']\n" C1, "policy.identity", 2,
     "admins[0]: 'unix:uid=0': the Admin API is served over mTLS only"},
    {"unix admin after a good one", "version: 1\nadmins:\n  - cn:ops\n  - unix:uid=1000\n" C1,
     "policy.identity", 4, "admins[1]"},
    {"unix duplicate caller", HEAD U1 "  - id: unix:uid=1000\n", "policy.duplicate_caller", 7,
     "line 4"},
    {"unix leading zero", HEAD "callers:\n  - id: unix:uid=01000\n", "policy.identity", 4,
     "e.g. unix:uid=1000"},
    {"unix upper case", HEAD "callers:\n  - id: UNIX:uid=0\n", "policy.identity", 4, "unix:uid=N"},
    {"unix without uid=", HEAD "callers:\n  - id: 'unix:0'\n", "policy.identity", 4, "unix:uid=N"},
    {"unix negative", HEAD "callers:\n  - id: unix:uid=-1\n", "policy.identity", 4, "no sign"},
    {"unix (uid_t)-1", HEAD "callers:\n  - id: unix:uid=4294967295\n", "policy.identity", 4,
     "0..4294967294"},
    {"unix with gid", HEAD "callers:\n  - id: 'unix:uid=0,gid=0'\n", "policy.identity", 4,
     "unix:uid=N"},
    {"unix pattern", HEAD "callers:\n  - id: 'unix:uid=1*'\n", "policy.identity", 4, "unix:uid=N"},
    {"unix empty", HEAD "callers:\n  - id: 'unix:'\n", "policy.identity", 4, "unix:uid=N"},

    /* rates */
    {"per_second zero", HEAD C1 "    rate: {per_second: 0, burst: 1}\n", "policy.range", 7,
     "per_second"},
    {"per_second negative", HEAD C1 "    rate: {per_second: -1, burst: 1}\n", "policy.number", 7,
     "positive"},
    {"per_second words", HEAD C1 "    rate: {per_second: fast, burst: 1}\n", "policy.number", 7,
     "per_second"},
    {"burst zero", HEAD C1 "    rate: {per_second: 1, burst: 0}\n", "policy.range", 7, "burst"},
    {"burst fractional", HEAD C1 "    rate: {per_second: 1, burst: 1.5}\n", "policy.integer", 7,
     "burst"},
    {"burst missing", HEAD C1 "    rate: {per_second: 1}\n", "policy.missing_key", 7, "burst"},
    {"incident looser per_second",
     HEAD C1 "    rate: {per_second: 1, burst: 5}\n    incident_rate: {per_second: 2, burst: 5}\n",
     "policy.incident_rate", 8, "must tighten"},
    {"incident looser burst",
     HEAD C1 "    rate: {per_second: 1, burst: 5}\n    incident_rate: {per_second: 1, burst: 6}\n",
     "policy.incident_rate", 8, "must tighten"},
    {"defaults incident looser",
     HEAD "defaults:\n  rate: {per_second: 1, burst: 5}\n  incident_rate: {per_second: 9, "
          "burst: 1}\n" C1,
     "policy.incident_rate", 5, "defaults.incident_rate"},
    {"own incident looser than inherited rate",
     HEAD "defaults:\n  rate: {per_second: 1, burst: 5}\n" C1
          "    incident_rate: {per_second: 2, burst: 5}\n",
     "policy.incident_rate", 9, "looser"},
};

/* Checks one case; returns a description of the mismatch or NULL. */
static const char *check_load_case(const lcase *tc, char *why, size_t cap)
{
    js_policy *p = NULL;
    js_err err = {0};
    js_status st = js_policy_load_buffer(tc->text, strlen(tc->text), "t.yaml", &p, &err);
    if (st == JS_OK) {
        js_policy_free(p);
        snprintf(why, cap, "%s: loaded, want %s", tc->name, tc->reason);
        return why;
    }
    char where[32];
    if (tc->line > 0)
        snprintf(where, sizeof(where), "t.yaml:%zu: ", tc->line);
    else
        snprintf(where, sizeof(where), "t.yaml");
    if (p != NULL || st != JS_ECONFIG || strcmp(js_reason_name(err.reason), tc->reason) != 0 ||
        strncmp(err.msg, where, strlen(where)) != 0 ||
        (tc->msg_has != NULL && strstr(err.msg, tc->msg_has) == NULL)) {
        snprintf(why, cap, "%s: got %s %s \"%s\"; want %s at \"%s\" with \"%s\"", tc->name,
                 js_status_name(st), js_reason_name(err.reason), err.msg, tc->reason, where,
                 tc->msg_has ? tc->msg_has : "");
        return why;
    }
    return NULL;
}

static void test_load_errors(void **state)
{
    (void)state;
    size_t bad = 0, n = sizeof(k_load_cases) / sizeof(k_load_cases[0]);
    for (size_t i = 0; i < n; i++) {
        char why[JS_MSG_MAX + 512];
        if (check_load_case(&k_load_cases[i], why, sizeof(why)) != NULL) {
            printf("MISMATCH %s\n", why);
            bad++;
        }
    }
    printf("load error table: %zu cases, %zu mismatches\n", n, bad);
    assert_int_equal(bad, 0);
}

/* Valid files that exercise the inheritance rules. */
static void test_inheritance(void **state)
{
    (void)state;
    static const char text[] =
        "version: 1\n"
        "issuer: https://i\n"
        "defaults:\n"
        "  keys: [k1, k2]\n"
        "  default_key: k2\n"
        "  audiences: [d]\n"
        "  scopes: [s1]\n"
        "callers:\n"
        "  - id: cn:inherits\n"
        "  - id: cn:own-keys\n"
        "    keys: [k3, k2]\n" /* default key: its first, not the inherited k2 */
        "  - id: cn:own-keys-default\n"
        "    keys: [k3, k2]\n"
        "    default_key: k2\n"
        "  - id: cn:widen\n"
        "    audiences: [other]\n" /* replaces, not merged: d is not allowed */
        "    scopes: []\n";        /* replaces: no scopes */
    js_policy *p = NULL;
    js_err err = {0};
    if (js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    static const struct {
        const char *id, *key, *claims;
        js_status st;
        const char *want;
    } cases[] = {
        {"cn:inherits", "", "{\"aud\":\"d\",\"sub\":\"x\",\"scope\":\"s1\"}", JS_OK, "k2"},
        {"cn:own-keys", "", "{\"aud\":\"d\",\"sub\":\"x\"}", JS_OK, "k3"},
        {"cn:own-keys", "k1", "{\"aud\":\"d\",\"sub\":\"x\"}", JS_EDENIED, "policy.key"},
        {"cn:own-keys-default", "", "{\"aud\":\"d\",\"sub\":\"x\"}", JS_OK, "k2"},
        {"cn:widen", "", "{\"aud\":\"other\",\"sub\":\"x\"}", JS_OK, "k2"},
        {"cn:widen", "", "{\"aud\":\"d\",\"sub\":\"x\"}", JS_EDENIED, "policy.audience"},
        {"cn:widen", "", "{\"aud\":\"other\",\"sub\":\"x\",\"scope\":\"s1\"}", JS_EDENIED,
         "policy.scope"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *claims = NULL;
        js_policy_result res;
        assert_int_equal(
            claims_parse((const uint8_t *)cases[i].claims, strlen(cases[i].claims), &claims, &err),
            JS_OK);
        const js_policy_caller *c = js_policy_match(p, cases[i].id);
        assert_non_null(c);
        js_status st = js_policy_evaluate(p, c, claims, cases[i].key, "AAAAAAAAAAAAAAAAAAAAAA",
                                          1700000000, NULL, NULL, &res, &err);
        json_decref(claims);
        if (st != cases[i].st)
            fail_msg("case %zu (%s): %s, want %s: %s", i, cases[i].id, js_status_name(st),
                     js_status_name(cases[i].st), err.msg);
        if (st == JS_OK)
            assert_string_equal(res.key_name, cases[i].want);
        else
            assert_string_equal(js_reason_name(err.reason), cases[i].want);
        js_policy_result_clear(&res);
    }
    /* Unused defaults keys still count for nobody; k1 only through "inherits"/"widen". */
    assert_int_equal(js_policy_key_count(p), 3);
    js_policy_free(p);
}

static void test_file_errors(void **state)
{
    (void)state;
    js_policy *p = NULL;
    js_err err = {0};
    assert_int_equal(js_policy_load("/nonexistent/policy.yaml", &p, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "policy.io");
    assert_non_null(strstr(err.msg, "/nonexistent/policy.yaml"));
    assert_null(p);
    assert_int_equal(js_policy_load("/tmp", &p, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "policy.io");

    /* A file's name is in its messages, and the hash is of its bytes. */
    char path[] = "/tmp/test_policy_load.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "version: 1\ncallers:\n  - id: cn:a\n    keys: [k]\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(js_policy_load(path, &p, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "policy.no_audiences");
    assert_int_equal(strncmp(err.msg, path, strlen(path)), 0);
    unlink(path);
}

/* The file goes through the one bounded reader (fileio.h): the hash is of
 * the bytes read; a symlink is followed (the operator names this file, and a
 * Kubernetes ConfigMap volume is all symlinks) and gives the same hash; a file
 * over the YAML limit and a FIFO are refused as JS_ECONFIG policy.io, like any
 * unreadable policy file, without blocking on the FIFO. */
/* Repetition bounds: {m,n} is read as two numbers, so an upper bound within
 * the limit loads (it once read {1,200} as 1200) and one over it does not
 * (the table above); {m,} and {,n} load too. */
static void test_regex_bounds_ok(void **state)
{
    (void)state;
    static const char *const subjects[] = {"'^[a-z]{1,200}$'", "'^[a-z]{3,}$'", "'^x{,255}$'",
                                           "'^[a-z]{255}$'"};
    for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        char text[1024];
        snprintf(text, sizeof(text), HEAD C1 "    subject: %s\n", subjects[i]);
        js_policy *p = NULL;
        js_err err = {0};
        if (js_policy_load_buffer(text, strlen(text), "t.yaml", &p, &err) != JS_OK)
            fail_msg("%s: %s: %s", subjects[i], js_reason_name(err.reason), err.msg);
        js_policy_free(p);
    }
}

static void test_file_reader(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_policy_load.XXXXXX";
    char path[4096], link[4096], big[4096];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/policy.yaml", dir);
    snprintf(link, sizeof(link), "%s/link.yaml", dir);
    snprintf(big, sizeof(big), "%s/big.yaml", dir);
    static const char text[] =
        "version: 1\nissuer: i\ncallers: [{id: 'cn:a', keys: [k], audiences: [x]}]\n";
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);

    js_policy *p = NULL, *q = NULL;
    js_err err = {0};
    assert_int_equal(js_policy_load(path, &p, &err), JS_OK);
    assert_int_equal(js_policy_load_buffer(text, strlen(text), "t", &q, &err), JS_OK);
    assert_string_equal(js_policy_hash_hex(p), js_policy_hash_hex(q));
    js_policy_free(p);
    js_policy_free(q);
    p = NULL;

    assert_int_equal(symlink(path, link), 0);
    assert_int_equal(js_policy_load(link, &p, &err), JS_OK);
    assert_int_equal(js_policy_load_buffer(text, strlen(text), "t", &q, &err), JS_OK);
    assert_string_equal(js_policy_hash_hex(p), js_policy_hash_hex(q));
    js_policy_free(p);
    js_policy_free(q);
    p = NULL;

    char fifo[4096];
    snprintf(fifo, sizeof(fifo), "%s/fifo.yaml", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(js_policy_load(fifo, &p, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "policy.io");
    assert_non_null(strstr(err.msg, "not a regular file"));
    assert_null(p);
    unlink(fifo);

    f = fopen(big, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < 1024 * 1024 / 16 + 1; i++)
        assert_int_equal(fwrite("# padding line.\n", 1, 16, f), 16);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(js_policy_load(big, &p, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "policy.io");
    assert_non_null(strstr(err.msg, big));
    assert_null(p);

    unlink(big);
    unlink(link);
    unlink(path);
    rmdir(dir);
}

static void test_same_bytes_same_hash(void **state)
{
    (void)state;
    static const char a[] = "version: 1\ncallers: [{id: 'cn:a', keys: [k], audiences: [x]}]\n";
    static const char b[] = "version: 1\ncallers: [{id: 'cn:a', keys: [k], audiences: [x]}]  \n";
    js_policy *pa = NULL, *pb = NULL, *pc = NULL;
    js_err err = {0};
    assert_int_equal(js_policy_load_buffer(a, strlen(a), "a", &pa, &err), JS_OK);
    assert_int_equal(js_policy_load_buffer(b, strlen(b), "b", &pb, &err), JS_OK);
    assert_int_equal(js_policy_load_buffer(a, strlen(a), "c", &pc, &err), JS_OK);
    assert_string_equal(js_policy_hash_hex(pa), js_policy_hash_hex(pc));
    assert_string_not_equal(js_policy_hash_hex(pa), js_policy_hash_hex(pb));
    js_policy_free(pa);
    js_policy_free(pb);
    js_policy_free(pc);
    js_policy_free(NULL);
}

/* Every prefix of a valid file is either valid or a clean error: no crash,
 * no leak (under ASan), never a half-built policy. */
static void test_truncations(void **state)
{
    char path[4096];
    (void)state;
    FILE *f = fopen(example_path(path, sizeof(path)), "rb");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_true(n > 0 && n < sizeof(buf));
    for (size_t len = 0; len <= n; len += 7) {
        js_policy *p = NULL;
        js_err err = {0};
        js_status st = js_policy_load_buffer(buf, len, "ex", &p, &err);
        if (st == JS_OK)
            assert_non_null(p);
        else
            assert_null(p);
        js_policy_free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_loads), cmocka_unit_test(test_example_kube_entry),
        cmocka_unit_test(test_load_errors),   cmocka_unit_test(test_inheritance),
        cmocka_unit_test(test_file_errors),   cmocka_unit_test(test_same_bytes_same_hash),
        cmocka_unit_test(test_truncations),   cmocka_unit_test(test_regex_bounds_ok),
        cmocka_unit_test(test_file_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
