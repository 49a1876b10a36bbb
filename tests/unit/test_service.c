/*
 * test_service.c - the SignJwt pipeline (signer/core/service.h) end to end up
 * to and through a real SoftHSM token made for the test, with the injected
 * clock: every request ends in one decision (decision.h) whose kind follows
 * from its status. Allowed (iat and exp from the injected clock, exp capped
 * to the key version's window once), denied by the policy, by no match, by a
 * policy freeze and an administrator's freeze, rate limited (folded, never
 * decoded), an unusable request, no identity, and an error (a key revoked
 * without successor); the denial budget decides folding and whether a
 * refused request is decoded for its request_id.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "b64url.h"
#include "config.h"
#include "decision.h"
#include "frozen.h"
#include "hsm.h"
#include "keyring.h"
#include "keystate.h"
#include "policy.h"
#include "ratelimit.h"
#include "service.h"
#include "test_token.h"

#define TOKEN_LABEL "jsservice"
#define PIN         TEST_TOKEN_PIN
#define URI         "pkcs11:token=" TOKEN_LABEL
#define KEY         "login-es256"
#define LABEL       "login"
#define ISSUER      "https://issuer.example"
#define T0          1700000000LL
#define LIFE        600 /* the key version's window: below max_ttl, so it caps exp */
#define NOW         (T0 + 100)

#define APP     "spiffe://t/app"
#define LIMITED "spiffe://t/limited"
#define COLD    "spiffe://t/cold"

static const char k_policy[] = "version: 1\n"
                               "issuer: \"" ISSUER "\"\n"
                               "defaults:\n"
                               "  keys: [" KEY "]\n"
                               "  max_ttl: 15m\n"
                               "  default_ttl: 5m\n"
                               "  subject: '^[a-z]+$'\n"
                               "callers:\n"
                               "  - id: " APP "\n"
                               "    audiences: [app]\n"
                               "  - id: " LIMITED "\n"
                               "    audiences: [app]\n"
                               "    rate: {per_second: 0.001, burst: 1}\n"
                               "    incident_rate: {per_second: 0.001, burst: 1}\n"
                               "  - id: " COLD "\n"
                               "    audiences: [app]\n"
                               "    frozen: true\n";

typedef struct fixture {
    char dir[64];
    char module[512];
    char shim_ctl[128]; /* "" when not run through the fault-injecting p11shim */
    js_hsm *hsm;
    js_hsm_session *s;
    js_keyvault *kv;
    js_config *cfg;
    const char *kid1;
    js_keyring *keys;    /* version 1 active */
    js_keyring *revoked; /* version 1 revoked, no successor */
    js_policy *policy;
    js_ratelimit *rl;
    js_service *svc;
    int64_t now; /* the injected clock */
} fixture;

static int64_t lifetime(const char *key, void *ctx)
{
    (void)key;
    (void)ctx;
    return LIFE;
}

static int64_t test_clock(void *ctx)
{
    return *(const int64_t *)ctx;
}

/* The keyring of a key state with version 1 active, or revoked. */
static js_status build_keys(fixture *f, bool revoke, js_keyring **out, js_err *err)
{
    js_keystate *ks = NULL;
    js_ks_events ev = {0};
    js_status st = js_keystate_new(&ks, err);
    if (st == JS_OK)
        st = js_keystate_ensure_initial(ks, KEY, LABEL, "ES256", f->kid1, T0, &ev, err);
    if (st == JS_OK)
        st = js_keystate_tick(ks, T0, lifetime, NULL, &ev, err);
    if (st == JS_OK && revoke)
        st = js_keystate_revoke(ks, KEY, f->kid1, T0 + 5, "test", &ev, err);
    if (st == JS_OK)
        st = js_keyring_build(f->cfg, ks, f->kv, out, err);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
    return st;
}

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/js_service_test.XXXXXX");
    if (test_token_setup(f->dir, TOKEN_LABEL, f->module, sizeof(f->module)) != 0)
        goto fail;

    /* Through p11shim (tests/p11shim) when ctest provides it, so a test can
     * make the token fail; the shim forwards to SoftHSM otherwise. */
    const char *shim = getenv("JS_P11SHIM");
    const char *hsm_module = f->module;
    if (shim != NULL && shim[0] != '\0') {
        snprintf(f->shim_ctl, sizeof(f->shim_ctl), "%s/shim.ctl", f->dir);
        if (setenv("JS_P11SHIM_MODULE", f->module, 1) != 0 ||
            setenv("JS_P11SHIM_CONTROL", f->shim_ctl, 1) != 0 ||
            test_write_text(f->shim_ctl, "ok\n"))
            goto fail;
        hsm_module = shim;
    }
    js_err err = {0};
    f->now = NOW;
    if (test_signer_config(f->dir, f->module, TOKEN_LABEL, KEY, LABEL, ISSUER, "policy.yaml",
                           "test/service", &f->cfg, &err) != JS_OK ||
        js_hsm_open(hsm_module, URI, PIN, strlen(PIN), &f->hsm, &err) != JS_OK ||
        js_hsm_session_open(f->hsm, &f->s, &err) != JS_OK ||
        js_keyvault_new(f->hsm, f->s, &f->kv, &err) != JS_OK ||
        js_keyvault_generate(f->kv, LABEL, JS_ALG_ES256, 0, &f->kid1, &err) != JS_OK ||
        build_keys(f, false, &f->keys, &err) != JS_OK ||
        build_keys(f, true, &f->revoked, &err) != JS_OK ||
        js_policy_load_buffer(k_policy, strlen(k_policy), "policy.yaml", &f->policy, &err) !=
            JS_OK ||
        js_ratelimit_new(64, &f->rl, &err) != JS_OK ||
        js_service_new(f->cfg, f->rl, test_clock, &f->now, &f->svc, &err) != JS_OK ||
        js_service_check_policy(f->svc, f->policy, &err) != JS_OK) {
        fprintf(stderr, "set-up: %s: %s\n", js_reason_name(err.reason), err.msg);
        goto fail;
    }
    *state = f;
    return 0;
fail:
    free(f);
    return -1;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    js_service_free(f->svc);
    js_ratelimit_free(f->rl);
    js_policy_free(f->policy);
    js_keyring_free(f->keys);
    js_keyring_free(f->revoked);
    js_keyvault_free(f->kv);
    js_hsm_session_free(f->s);
    js_hsm_free(f->hsm);
    js_config_free(f->cfg);
    int rc = test_token_teardown(f->dir);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* ---- the RPC layer's side, faked ---------------------------------------------- */

/* The request body the pipeline may ask for, and how often it asked. */
typedef struct body {
    const char *claims;
    const char *key;
    const char *request_id;
    js_status fail; /* JS_OK: decodes; else the decoding fails (request.malformed) */
    int calls;
} body;

static js_status decode(void *ctx, js_sign_request *req, js_err *err)
{
    body *b = ctx;
    b->calls++;
    if (b->fail != JS_OK)
        return js_err_set(err, b->fail, JS_R_REQUEST_MALFORMED, "not a message");
    *req = (js_sign_request){(const uint8_t *)b->claims, strlen(b->claims), b->key, b->request_id};
    return JS_OK;
}

typedef struct budget {
    bool full;
    int calls;
} budget;

static bool in_full(void *ctx)
{
    budget *b = ctx;
    b->calls++;
    return b->full;
}

typedef struct call {
    const char *identity; /* NULL: none */
    const js_keyring *keys;
    const js_frozen *frozen;
    body body;
    budget budget;
    js_decision d;
} call;

static void run(fixture *f, call *c)
{
    js_err ierr;
    js_err_set(&ierr, JS_EDENIED, JS_R_IDENTITY_NONE, "no authenticated peer");
    js_sign_input in = {
        .identity = c->identity,
        .identity_err = &ierr,
        .policy = f->policy,
        .frozen = c->frozen,
        .keys = c->keys != NULL ? c->keys : f->keys,
        .session = f->s,
        .decode = decode,
        .decode_ctx = &c->body,
        .in_full = in_full,
        .budget_ctx = &c->budget,
    };
    js_service_decide(f->svc, &in, &c->d);
}

static call request(const char *identity, const char *claims)
{
    call c;
    memset(&c, 0, sizeof(c));
    c.identity = identity;
    c.body = (body){claims, "", "req-1", JS_OK, 0};
    c.budget.full = true;
    return c;
}

#define GOOD_CLAIMS "{\"sub\":\"alice\",\"aud\":\"app\"}"

/* The JWT's payload, parsed. */
static json_t *payload_of(const char *jwt)
{
    const char *p = strchr(jwt, '.');
    assert_non_null(p);
    p++;
    const char *end = strchr(p, '.');
    assert_non_null(end);
    uint8_t buf[4096];
    size_t n = 0;
    js_err err;
    assert_int_equal(b64url_decode(p, (size_t)(end - p), buf, sizeof(buf), &n, &err), JS_OK);
    json_error_t je;
    json_t *o = json_loadb((const char *)buf, n, 0, &je);
    assert_non_null(o);
    return o;
}

static void assert_refused(const call *c, js_decision_kind kind, js_status st, js_reason reason)
{
    const js_decision *d = &c->d;
    if (d->status != st || d->reason != reason)
        fail_msg("want %s, got status %d %s: %s", js_reason_name(reason), (int)d->status,
                 js_reason_name(d->reason), d->msg);
    assert_int_equal(d->kind, kind);
    assert_int_equal(d->kind, js_decision_kind_of(d->status));
    assert_true(d->msg[0] != '\0');
    /* No token leaves a refusal, nor its jti. */
    assert_null(d->token.jwt);
    assert_string_equal(d->token.jti, "");
    assert_string_equal(d->token.token_sha256, "");
}

/* ---- the decisions ------------------------------------------------------------ */

static void test_kind_of_status(void **state)
{
    (void)state;
    static const struct {
        js_status st;
        js_decision_kind kind;
        const char *name;
    } k_rows[] = {
        {JS_OK, JS_DECISION_ALLOW, "allow"},       {JS_EINVAL, JS_DECISION_DENY, "deny"},
        {JS_EDENIED, JS_DECISION_DENY, "deny"},    {JS_ELIMIT, JS_DECISION_DENY, "deny"},
        {JS_ENOTFOUND, JS_DECISION_DENY, "deny"},  {JS_ESTATE, JS_DECISION_DENY, "deny"},
        {JS_EUNAVAIL, JS_DECISION_ERROR, "error"}, {JS_EINTERNAL, JS_DECISION_ERROR, "error"},
        {JS_ECONFIG, JS_DECISION_ERROR, "error"},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        assert_int_equal(js_decision_kind_of(k_rows[i].st), k_rows[i].kind);
        assert_string_equal(js_decision_name(js_decision_kind_of(k_rows[i].st)), k_rows[i].name);
    }
}

static void test_allow(void **state)
{
    fixture *f = *state;
    call c = request(APP, GOOD_CLAIMS);
    run(f, &c);
    const js_decision *d = &c.d;
    if (d->kind != JS_DECISION_ALLOW)
        fail_msg("refused: %s: %s", js_reason_name(d->reason), d->msg);
    assert_int_equal(d->status, JS_OK);
    assert_int_equal(d->reason, JS_R_OK);
    assert_string_equal(d->msg, "");
    assert_false(d->folded);
    assert_int_equal(c.budget.calls, 0); /* an allow never spends the denial budget */
    assert_int_equal(c.body.calls, 1);
    assert_string_equal(d->request_id, "req-1");
    const js_sign_result *t = &d->token;
    assert_non_null(t->jwt);
    assert_string_equal(t->key_name, KEY);
    assert_string_equal(t->kid, f->kid1);
    assert_string_equal(t->alg, "ES256");
    assert_string_equal(t->sub, "alice");
    assert_string_equal(t->aud, "\"app\"");
    assert_int_equal(strlen(t->jti), CLAIMS_JTI_LEN);
    assert_int_equal(strlen(t->token_sha256), JS_SHA256_HEX);
    /* The injected clock: iat is its time, exp its time + default_ttl. */
    assert_int_equal(t->issued_at, NOW);
    assert_int_equal(t->expires_at, NOW + 300);
    json_t *p = payload_of(t->jwt);
    assert_int_equal(json_integer_value(json_object_get(p, "iat")), NOW);
    assert_int_equal(json_integer_value(json_object_get(p, "exp")), NOW + 300);
    assert_string_equal(json_string_value(json_object_get(p, "iss")), ISSUER);
    assert_string_equal(json_string_value(json_object_get(p, "jti")), t->jti);
    json_decref(p);
    js_decision_clear(&c.d);
}

/* An exp within max_ttl but past the key version's window is capped to the
 * window, in the token and in what the decision reports. */
static void test_allow_exp_capped_to_key_window(void **state)
{
    fixture *f = *state;
    char claims[128];
    snprintf(claims, sizeof(claims), "{\"sub\":\"alice\",\"aud\":\"app\",\"exp\":%lld}",
             (long long)(NOW + 800));
    call c = request(APP, claims);
    run(f, &c);
    if (c.d.kind != JS_DECISION_ALLOW)
        fail_msg("refused: %s: %s", js_reason_name(c.d.reason), c.d.msg);
    assert_int_equal(c.d.token.expires_at, NOW + LIFE);
    json_t *p = payload_of(c.d.token.jwt);
    assert_int_equal(json_integer_value(json_object_get(p, "exp")), NOW + LIFE);
    json_decref(p);
    js_decision_clear(&c.d);
}

static void test_deny_policy(void **state)
{
    fixture *f = *state;
    call c = request(APP, "{\"sub\":\"alice\",\"aud\":\"elsewhere\"}");
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, JS_R_POLICY_AUDIENCE);
    assert_false(c.d.folded);
    assert_int_equal(c.budget.calls, 1);
    assert_string_equal(c.d.request_id, "req-1");
    /* What was noted about the request stays for the log and the record. */
    assert_string_equal(c.d.token.sub, "alice");
    js_decision_clear(&c.d);

    /* A key the caller may not use. */
    c = request(APP, GOOD_CLAIMS);
    c.body.key = "other-key";
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, JS_R_POLICY_KEY);
    js_decision_clear(&c.d);

    /* Beyond the denial budget: folded. */
    c = request(APP, "{\"sub\":\"alice\",\"aud\":\"elsewhere\"}");
    c.budget.full = false;
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, JS_R_POLICY_AUDIENCE);
    assert_true(c.d.folded);
    js_decision_clear(&c.d);
}

static void test_deny_malformed(void **state)
{
    fixture *f = *state;
    call c = request(APP, "{\"sub\":");
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_CLAIMS_SYNTAX);
    js_decision_clear(&c.d);

    c = request(APP, GOOD_CLAIMS);
    c.body.fail = JS_EINVAL;
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_REQUEST_MALFORMED);
    assert_string_equal(c.d.request_id, "");
    js_decision_clear(&c.d);

    /* A request_id we would not log is not kept, and refused. */
    c = request(APP, GOOD_CLAIMS);
    c.body.request_id = "has space";
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_REQUEST_REQUEST_ID);
    assert_string_equal(c.d.request_id, "");
    js_decision_clear(&c.d);
}

/* Refused before decoding: no identity, no match, frozen by the policy or by
 * an administrator. Within the budget the body is decoded for its
 * request_id only; beyond it nothing is decoded. */
static void test_deny_before_decoding(void **state)
{
    fixture *f = *state;
    js_frozen *frozen = NULL;
    js_err err;
    assert_int_equal(js_frozen_with(NULL, APP, true, &frozen, &err), JS_OK);
    static const struct {
        const char *identity;
        bool admin_frozen;
        js_reason reason;
    } k_rows[] = {
        {NULL, false, JS_R_IDENTITY_NONE},
        {"spiffe://t/stranger", false, JS_R_POLICY_NO_MATCH},
        {COLD, false, JS_R_POLICY_FROZEN},
        {APP, true, JS_R_ADMIN_FROZEN},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        for (int full = 1; full >= 0; full--) {
            call c = request(k_rows[i].identity, GOOD_CLAIMS);
            c.frozen = k_rows[i].admin_frozen ? frozen : NULL;
            c.budget.full = full != 0;
            run(f, &c);
            assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, k_rows[i].reason);
            assert_int_equal(c.budget.calls, 1);
            assert_int_equal(c.d.folded, !full);
            assert_int_equal(c.body.calls, full ? 1 : 0);
            assert_string_equal(c.d.request_id, full ? "req-1" : "");
            assert_string_equal(c.d.token.key_name, "");
            js_decision_clear(&c.d);
        }
    }
    js_frozen_free(frozen);
}

static void test_rate_limited(void **state)
{
    fixture *f = *state;
    call c = request(LIMITED, GOOD_CLAIMS);
    run(f, &c);
    if (c.d.kind != JS_DECISION_ALLOW)
        fail_msg("first request refused: %s: %s", js_reason_name(c.d.reason), c.d.msg);
    js_decision_clear(&c.d);
    /* Burst 1 at one token per 1000 s: the second is over the rate. */
    c = request(LIMITED, GOOD_CLAIMS);
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_ELIMIT, JS_R_RATE_LIMITED);
    assert_true(c.d.retry_after_ms > 0);
    /* Always folded, and a flood costs no decoding and no budget. */
    assert_true(c.d.folded);
    assert_int_equal(c.body.calls, 0);
    assert_int_equal(c.budget.calls, 0);
    js_decision_clear(&c.d);
}

static void test_error_no_active_key(void **state)
{
    fixture *f = *state;
    call c = request(APP, GOOD_CLAIMS);
    c.keys = f->revoked;
    run(f, &c);
    assert_refused(&c, JS_DECISION_ERROR, JS_EUNAVAIL, JS_R_KEY_NO_ACTIVE);
    /* Errors are never folded, and never spend the denial budget. */
    assert_false(c.d.folded);
    assert_int_equal(c.budget.calls, 0);
    assert_false(c.d.hsm_failed);
    js_decision_clear(&c.d);
}

/* Replaces the shim's rules atomically (it re-reads the file when it changes). */
static void shim_rules(const fixture *f, const char *text)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->shim_ctl);
    assert_int_equal(test_write_text(tmp, text), 0);
    assert_int_equal(rename(tmp, f->shim_ctl), 0);
}

/* The token fails to sign: an error, counted as an HSM error, no token. */
static void test_error_hsm(void **state)
{
    fixture *f = *state;
    if (f->shim_ctl[0] == '\0')
        skip(); /* JS_P11SHIM not set: run through ctest */
    shim_rules(f, "fail C_Sign CKR_FUNCTION_FAILED\nfail C_SignInit CKR_FUNCTION_FAILED\n");
    call c = request(APP, GOOD_CLAIMS);
    run(f, &c);
    shim_rules(f, "ok\n");
    assert_refused(&c, JS_DECISION_ERROR, JS_EUNAVAIL, JS_R_HSM_SIGN);
    assert_true(c.d.hsm_failed);
    assert_false(c.d.folded);
    assert_int_equal(c.budget.calls, 0);
    js_decision_clear(&c.d);
    /* The token works again. */
    c = request(APP, GOOD_CLAIMS);
    run(f, &c);
    assert_int_equal(c.d.kind, JS_DECISION_ALLOW);
    assert_false(c.d.hsm_failed);
    js_decision_clear(&c.d);
}

/* js_decision_fail discards a token already built: no token without its
 * allow (an audit record that could not be queued, for instance). */
static void test_fail_discards_token(void **state)
{
    fixture *f = *state;
    call c = request(APP, GOOD_CLAIMS);
    run(f, &c);
    assert_int_equal(c.d.kind, JS_DECISION_ALLOW);
    js_err err;
    js_err_set(&err, JS_EUNAVAIL, JS_R_AUDIT_IO, "the audit log is failing");
    js_decision_fail(&c.d, &err);
    assert_refused(&c, JS_DECISION_ERROR, JS_EUNAVAIL, JS_R_AUDIT_IO);
    assert_null(c.d.token.scopes);
    assert_int_equal(c.d.token.issued_at, 0);
    assert_string_equal(c.d.token.key_name, KEY); /* what was selected stays */
    js_decision_clear(&c.d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_of_status),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_allow_exp_capped_to_key_window),
        cmocka_unit_test(test_deny_policy),
        cmocka_unit_test(test_deny_malformed),
        cmocka_unit_test(test_deny_before_decoding),
        cmocka_unit_test(test_rate_limited),
        cmocka_unit_test(test_error_no_active_key),
        cmocka_unit_test(test_error_hsm),
        cmocka_unit_test(test_fail_discards_token),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
