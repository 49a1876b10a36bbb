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
 *
 * Kubernetes' ExternalJWTSigner (js_service_decide_k8s): a kube-shaped
 * pre-built payload is validated and signed as sent (the token's payload
 * segment is the caller's text byte for byte, the header alg/typ/kid only,
 * the signature verifies, the decision records jti/sub/aud/iat/exp and the
 * token's SHA-256); one table of refusals, each with its status and reason
 * (base64url, JSON, size, issuer, times, lifetime, audience, subject,
 * claims); admission before decoding; js_k8s_alg_ok and the policy check
 * that a unix: caller has a socket and only keys kube-apiserver accepts.
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
#include <openssl/evp.h>

#include "b64url.h"
#include "config.h"
#include "decision.h"
#include "frozen.h"
#include "hsm.h"
#include "jws.h"
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
#define BOUND   "spiffe://t/bound"
/* SHA-256("client cert"), base64url (RFC 8705 x5t#S256 / RFC 9449 jkt shape). */
#define CNF_TP "89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM"

/* Kubernetes (unix:) callers of the ExternalJWTSigner policy (k_k8s_policy). */
#define KUBE         "unix:uid=1000"
#define KUBE_COLD    "unix:uid=1001"
#define KUBE_LIMITED "unix:uid=1002"
#define KUBE_SUBJECT "^system:serviceaccount:[a-z0-9-]+:[a-z0-9-]+$"

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
                               "    frozen: true\n"
                               "  - id: " BOUND "\n"
                               "    audiences: [app, pay]\n"
                               "    cnf_audiences: [pay]\n";

/* The same key, and unix: callers in validate mode; the signer's config for
 * it (K8S_CONFIG_FMT) has the externaljwt section a unix: caller needs. */
static const char k_k8s_policy[] = "version: 1\n"
                                   "issuer: \"" ISSUER "\"\n"
                                   "defaults:\n"
                                   "  keys: [" KEY "]\n"
                                   "  max_ttl: 15m\n"
                                   "  default_ttl: 5m\n"
                                   "  subject: '^[a-z]+$'\n"
                                   "callers:\n"
                                   "  - id: " KUBE "\n"
                                   "    audiences: [\"https://kubernetes.default.svc\", api]\n"
                                   "    max_aud: 2\n"
                                   "    max_ttl: 1h\n"
                                   "    subject: '" KUBE_SUBJECT "'\n"
                                   "    claims:\n"
                                   "      kubernetes.io: {type: object, max_bytes: 2048}\n"
                                   "  - id: " KUBE_COLD "\n"
                                   "    audiences: [api]\n"
                                   "    max_ttl: 1h\n"
                                   "    frozen: true\n"
                                   "  - id: " KUBE_LIMITED "\n"
                                   "    audiences: [api]\n"
                                   "    max_ttl: 1h\n"
                                   "    rate: {per_second: 0.001, burst: 1}\n"
                                   "    incident_rate: {per_second: 0.001, burst: 1}\n"
                                   "  - id: " APP "\n"
                                   "    audiences: [app]\n";

/* Keys of every algorithm (only KEY is on the token: js_service_check_policy
 * reads the configuration, not the keyring) and the externaljwt section. */
#define K8S_CONFIG_FMT                                                                             \
    "listen: \"127.0.0.1:0\"\n"                                                                    \
    "tls:\n  cert: server.crt\n  key: server.key\n  client_ca: ca.crt\n"                           \
    "hsm:\n  module: %s\n  token: \"pkcs11:token=" TOKEN_LABEL "\"\n  pin_file: pin.txt\n"         \
    "keys:\n"                                                                                      \
    "  - {name: " KEY ", label: " LABEL ", alg: ES256}\n"                                          \
    "  - {name: k8s-rs256, label: k8s-rs, alg: RS256}\n"                                           \
    "  - {name: k8s-es384, label: k8s-es384, alg: ES384}\n"                                        \
    "  - {name: k8s-ps256, label: k8s-ps, alg: PS256}\n"                                           \
    "  - {name: k8s-eddsa, label: k8s-ed, alg: EdDSA}\n"                                           \
    "default_key: " KEY "\n"                                                                       \
    "issuer: \"" ISSUER "\"\n"                                                                     \
    "policy: policy-k8s.yaml\n"                                                                    \
    "audit:\n  dir: audit\n  key_label: audit\n  origin: \"test/service-k8s\"\n"                   \
    "externaljwt:\n  socket: externaljwt.sock\n"

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
    js_config *kcfg;    /* with externaljwt and keys of every algorithm */
    js_policy *kpolicy; /* k_k8s_policy */
    js_service *ksvc;   /* on kcfg */
    int64_t now;        /* the injected clock */
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

/* Writes and loads k8s config (K8S_CONFIG_FMT) into f->kcfg. */
static js_status k8s_config(fixture *f, js_err *err)
{
    char path[128], text[2048];
    snprintf(path, sizeof(path), "%s/config-k8s.yaml", f->dir);
    snprintf(text, sizeof(text), K8S_CONFIG_FMT, f->module);
    if (test_write_text(path, text) != 0)
        return js_err_set(err, JS_EUNAVAIL, JS_R_CONFIG_IO, "cannot write %s", path);
    return js_config_load(path, &f->kcfg, err);
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
        js_service_check_policy(f->svc, f->policy, &err) != JS_OK || k8s_config(f, &err) != JS_OK ||
        js_policy_load_buffer(k_k8s_policy, strlen(k_k8s_policy), "policy-k8s.yaml", &f->kpolicy,
                              &err) != JS_OK ||
        js_service_new(f->kcfg, f->rl, test_clock, &f->now, &f->ksvc, &err) != JS_OK ||
        js_service_check_policy(f->ksvc, f->kpolicy, &err) != JS_OK) {
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
    js_service_free(f->ksvc);
    js_policy_free(f->kpolicy);
    js_config_free(f->kcfg);
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

static void run_on(const fixture *f, call *c, bool k8s)
{
    js_err ierr;
    js_err_set(&ierr, JS_EDENIED, JS_R_IDENTITY_NONE, "no authenticated peer");
    js_sign_input in = {
        .identity = c->identity,
        .identity_err = &ierr,
        .policy = k8s ? f->kpolicy : f->policy,
        .frozen = c->frozen,
        .keys = c->keys != NULL ? c->keys : f->keys,
        .session = f->s,
        .decode = decode,
        .decode_ctx = &c->body,
        .in_full = in_full,
        .budget_ctx = &c->budget,
    };
    if (k8s)
        js_service_decide_k8s(f->ksvc, &in, &c->d);
    else
        js_service_decide(f->svc, &in, &c->d);
}

static void run(fixture *f, call *c)
{
    run_on(f, c, false);
}

/* An ExternalJWTSigner Sign request: the payload in claims, no key, no
 * request_id (rpc_k8s.c). */
static void run_k8s(fixture *f, call *c)
{
    run_on(f, c, true);
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

/* cnf (RFC 7800): carried into the token as sent and noted, compact, for
 * the audit record; malformed is INVALID claims.cnf; required (here by
 * cnf_audiences) and missing is DENIED policy.cnf. */
static void test_cnf(void **state)
{
    fixture *f = *state;
    static const char k_cnf[] = "{\"x5t#S256\":\"" CNF_TP "\"}";
    /* optional: with and without */
    call c = request(APP, "{\"sub\":\"alice\",\"aud\":\"app\",\"cnf\": { \"x5t#S256\" : \"" CNF_TP
                          "\" }}");
    run(f, &c);
    if (c.d.kind != JS_DECISION_ALLOW)
        fail_msg("refused: %s: %s", js_reason_name(c.d.reason), c.d.msg);
    assert_string_equal(c.d.token.cnf_json, k_cnf);
    json_t *p = payload_of(c.d.token.jwt);
    char *got = json_dumps(json_object_get(p, "cnf"), JSON_COMPACT);
    assert_string_equal(got, k_cnf);
    free(got);
    json_decref(p);
    js_decision_clear(&c.d);

    c = request(APP, GOOD_CLAIMS);
    run(f, &c);
    assert_int_equal(c.d.kind, JS_DECISION_ALLOW);
    assert_null(c.d.token.cnf_json);
    p = payload_of(c.d.token.jwt);
    assert_null(json_object_get(p, "cnf"));
    json_decref(p);
    js_decision_clear(&c.d);

    /* malformed: refused, and nothing of it noted */
    static const char *const bad[] = {
        "{\"sub\":\"alice\",\"aud\":\"app\",\"cnf\":{}}",
        "{\"sub\":\"alice\",\"aud\":\"app\",\"cnf\":\"" CNF_TP "\"}",
        "{\"sub\":\"alice\",\"aud\":\"app\",\"cnf\":{\"jkt\":\"" CNF_TP "\",\"x5t#S256\":\"" CNF_TP
        "\"}}",
        "{\"sub\":\"alice\",\"aud\":\"app\",\"cnf\":{\"jkt\":\"" CNF_TP "=\"}}",
        "{\"sub\":\"alice\",\"aud\":\"app\",\"cnf\":{\"jwk\":{\"kty\":\"EC\"}}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = request(BOUND, bad[i]);
        run(f, &c);
        assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_CLAIMS_CNF);
        assert_null(c.d.token.cnf_json);
        js_decision_clear(&c.d);
    }

    /* required for aud pay: missing is PERMISSION_DENIED, present allowed */
    c = request(BOUND, "{\"sub\":\"alice\",\"aud\":[\"app\",\"pay\"]}");
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, JS_R_POLICY_CNF);
    js_decision_clear(&c.d);
    c = request(BOUND, "{\"sub\":\"alice\",\"aud\":\"pay\",\"cnf\":{\"jkt\":\"" CNF_TP "\"}}");
    run(f, &c);
    assert_int_equal(c.d.kind, JS_DECISION_ALLOW);
    assert_string_equal(c.d.token.cnf_json, "{\"jkt\":\"" CNF_TP "\"}");
    js_decision_clear(&c.d);
    c = request(BOUND, GOOD_CLAIMS);
    run(f, &c);
    assert_int_equal(c.d.kind, JS_DECISION_ALLOW);
    js_decision_clear(&c.d);

    /* refused for another rule: a valid cnf stays noted for the record */
    c = request(BOUND,
                "{\"sub\":\"alice\",\"aud\":\"elsewhere\",\"cnf\":{\"jkt\":\"" CNF_TP "\"}}");
    run(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, JS_R_POLICY_AUDIENCE);
    assert_string_equal(c.d.token.cnf_json, "{\"jkt\":\"" CNF_TP "\"}");
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

/* ---- Kubernetes' ExternalJWTSigner (js_service_decide_k8s) ---------------------- */

/* A claim set shaped like kube-apiserver's (KEP-740), compact, valid at NOW:
 * exp = NOW + LIFE, the key version's window exactly. */
#define K_AUD   "\"aud\":[\"https://kubernetes.default.svc\"]"
#define K_EXP   "\"exp\":1700000700"
#define K_IAT   "\"iat\":1700000100"
#define K_NBF   "\"nbf\":1700000100"
#define K_ISS   "\"iss\":\"" ISSUER "\""
#define K_JTI_V "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901"
#define K_JTI   "\"jti\":\"" K_JTI_V "\""
#define K_SUB_V "system:serviceaccount:payments:deployer"
#define K_SUB   "\"sub\":\"" K_SUB_V "\""
#define K_KIO                                                                                      \
    "\"kubernetes.io\":{\"namespace\":\"payments\",\"pod\":{\"name\":\"deployer-7d9f\","           \
    "\"uid\":\"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d\"},\"serviceaccount\":{\"name\":\"deployer\"," \
    "\"uid\":\"d4c3b2a1-6f5e-4b7a-9d8c-5c4b3a2f1e0d\"}}"
#define KUBE_JSON_WITH(aud, exp, iat, nbf, iss, jti, sub, extra)                                   \
    "{" aud "," exp "," iat "," nbf "," iss "," jti "," K_KIO "," sub extra "}"
#define KUBE_JSON KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, K_JTI, K_SUB, "")

/* base64url of text, malloc'd. */
static char *b64_of(const char *text)
{
    char *p = b64url_encode_alloc((const uint8_t *)text, strlen(text));
    assert_non_null(p);
    return p;
}

static call k8s_request(const char *identity, const char *payload)
{
    call c = request(identity, payload);
    c.body.request_id = "";
    return c;
}

/* Lower-case hex SHA-256 of s, computed here (not with the code under test). */
static void sha256_hex(const char *s, char out[JS_SHA256_HEX + 1])
{
    uint8_t d[32];
    unsigned n = 0;
    assert_int_equal(EVP_Digest(s, strlen(s), d, &n, EVP_sha256(), NULL), 1);
    assert_int_equal(n, 32);
    for (size_t i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Checks an allowed decision's token: payload segment == payload byte for
 * byte, header exactly {"alg":"ES256","typ":"JWT","kid":kid1}, a signature
 * that verifies with the key's public key over the first two segments, and
 * token_sha256 the hash of the whole token. */
static void assert_k8s_token(const fixture *f, const call *c, const char *payload)
{
    const js_decision *d = &c->d;
    if (d->kind != JS_DECISION_ALLOW)
        fail_msg("refused: %s: %s", js_reason_name(d->reason), d->msg);
    const char *jwt = d->token.jwt;
    assert_non_null(jwt);
    const char *dot1 = strchr(jwt, '.');
    assert_non_null(dot1);
    const char *dot2 = strchr(dot1 + 1, '.');
    assert_non_null(dot2);
    assert_null(strchr(dot2 + 1, '.'));
    /* The payload segment, byte for byte as sent. */
    assert_int_equal((size_t)(dot2 - dot1 - 1), strlen(payload));
    assert_memory_equal(dot1 + 1, payload, strlen(payload));
    /* The header: alg, typ and kid, nothing else (k8s.io/externaljwt). */
    char want_h[256], got_h[256];
    snprintf(want_h, sizeof(want_h), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid1);
    size_t hn = 0;
    js_err err;
    assert_int_equal(
        b64url_decode(jwt, (size_t)(dot1 - jwt), (uint8_t *)got_h, sizeof(got_h) - 1, &hn, &err),
        JS_OK);
    got_h[hn] = '\0';
    assert_string_equal(got_h, want_h);
    /* The signature, with the public key of the key that signed. */
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    assert_int_equal(b64url_decode(dot2 + 1, strlen(dot2 + 1), sig, sizeof(sig), &sig_len, &err),
                     JS_OK);
    const js_key *k = js_keyring_find(f->keys, KEY);
    assert_non_null(k);
    assert_int_equal(jws_verify(JS_ALG_ES256, js_hsm_key_public(js_key_hsm(k)),
                                (const uint8_t *)jwt, (size_t)(dot2 - jwt), sig, sig_len, &err),
                     JS_OK);
    char want_sha[JS_SHA256_HEX + 1];
    sha256_hex(jwt, want_sha);
    assert_string_equal(d->token.token_sha256, want_sha);
    assert_string_equal(d->token.key_name, KEY);
    assert_string_equal(d->token.kid, f->kid1);
    assert_string_equal(d->token.alg, "ES256");
}

static void test_k8s_allow(void **state)
{
    fixture *f = *state;
    char *payload = b64_of(KUBE_JSON);
    call c = k8s_request(KUBE, payload);
    run_k8s(f, &c);
    assert_k8s_token(f, &c, payload);
    const js_decision *d = &c.d;
    assert_int_equal(d->status, JS_OK);
    assert_int_equal(d->reason, JS_R_OK);
    assert_false(d->folded);
    assert_int_equal(c.budget.calls, 0);
    assert_int_equal(c.body.calls, 1);
    /* What the audit record says: the token's own jti, sub, aud and times
     * (the signer adds and changes nothing). */
    assert_string_equal(d->token.jti, K_JTI_V);
    assert_string_equal(d->token.sub, K_SUB_V);
    assert_string_equal(d->token.aud, "[\"https://kubernetes.default.svc\"]");
    assert_int_equal(d->token.issued_at, NOW);
    assert_int_equal(d->token.expires_at, NOW + LIFE);
    assert_null(d->token.scopes);
    js_decision_clear(&c.d);
    free(payload);

    /* Two audiences, no nbf, iat within the leeway ahead, a shorter life, a
     * jti that is not a UUID (any 1..128 printable characters). */
    static const char *const k_more[] = {
        KUBE_JSON_WITH("\"aud\":[\"https://kubernetes.default.svc\",\"api\"]", K_EXP, K_IAT, K_NBF,
                       K_ISS, K_JTI, K_SUB, ""),
        "{\"aud\":\"api\",\"exp\":1700000400,\"iat\":1700000160,\"iss\":\"" ISSUER
        "\",\"jti\":\"x\",\"sub\":\"system:serviceaccount:kube-system:default\"}",
    };
    for (size_t i = 0; i < sizeof(k_more) / sizeof(k_more[0]); i++) {
        payload = b64_of(k_more[i]);
        c = k8s_request(KUBE, payload);
        run_k8s(f, &c);
        assert_k8s_token(f, &c, payload);
        js_decision_clear(&c.d);
        free(payload);
    }
}

/* The longest Kubernetes subject (namespace 63, name 253 characters: 339
 * bytes) is recorded whole: the audit record names exactly what the token
 * says, so `jwt-audit show --sub` finds it. */
static void test_k8s_long_sub_recorded_whole(void **state)
{
    fixture *f = *state;
    char sub[400];
    int n = snprintf(sub, sizeof(sub), "system:serviceaccount:%.63s:%.253s",
                     "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
                     "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss"
                     "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss"
                     "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss"
                     "ssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss");
    assert_int_equal(n, 339);
    char json[2048];
    snprintf(json, sizeof(json),
             "{" K_AUD "," K_EXP "," K_IAT "," K_NBF "," K_ISS "," K_JTI ",\"sub\":\"%s\"}", sub);
    char *payload = b64_of(json);
    call c = k8s_request(KUBE, payload);
    run_k8s(f, &c);
    assert_k8s_token(f, &c, payload);
    assert_string_equal(c.d.token.sub, sub);
    js_decision_clear(&c.d);
    free(payload);
}

/* The size limit is exact: a claim set of CLAIMS_MAX_BYTES (padded with JSON
 * whitespace, which is part of the signed payload) is signed as sent. */
static void test_k8s_allow_max_size(void **state)
{
    fixture *f = *state;
    char *json = malloc(CLAIMS_MAX_BYTES + 1);
    assert_non_null(json);
    size_t n = strlen(KUBE_JSON);
    memcpy(json, KUBE_JSON, n);
    memset(json + n, ' ', CLAIMS_MAX_BYTES - n);
    json[CLAIMS_MAX_BYTES] = '\0';
    char *payload = b64_of(json);
    assert_int_equal(strlen(payload), B64URL_ENCODED_LEN(CLAIMS_MAX_BYTES));
    call c = k8s_request(KUBE, payload);
    run_k8s(f, &c);
    assert_k8s_token(f, &c, payload);
    js_decision_clear(&c.d);
    free(payload);
    free(json);
}

/* One row per rule; raw is sent as is, else base64url(json). */
static const struct {
    const char *name;
    const char *json;
    const char *raw;
    js_status st;
    js_reason reason;
} k_k8s_refusals[] = {
    /* base64url (RFC 4648 §5, strict): never a second encoding of a payload. */
    {"not base64url", NULL, "eyJ!", JS_EINVAL, JS_R_B64URL_CHAR},
    {"padding", NULL, "e30=", JS_EINVAL, JS_R_B64URL_CHAR},
    {"double padding", NULL, "eyJhIjoxfQ==", JS_EINVAL, JS_R_B64URL_CHAR},
    {"standard alphabet", NULL, "e3+/", JS_EINVAL, JS_R_B64URL_CHAR},
    {"trailing newline", NULL, "e30\n", JS_EINVAL, JS_R_B64URL_CHAR},
    {"space", NULL, "e3 0", JS_EINVAL, JS_R_B64URL_CHAR},
    {"non-zero trailing bits", NULL, "e31", JS_EINVAL, JS_R_B64URL_TRAILING_BITS},
    {"impossible length", NULL, "e30AA", JS_EINVAL, JS_R_B64URL_LENGTH},
    {"a whole token", NULL, "e30.e30.e30", JS_EINVAL, JS_R_B64URL_CHAR},
    {"empty", NULL, "", JS_EINVAL, JS_R_CLAIMS_EMPTY},
    /* JSON, as strictly as claims_json. */
    {"not JSON", "not json", NULL, JS_EINVAL, JS_R_CLAIMS_SYNTAX},
    {"truncated JSON", "{\"iss\":", NULL, JS_EINVAL, JS_R_CLAIMS_SYNTAX},
    {"JSON array", "[" KUBE_JSON "]", NULL, JS_EINVAL, JS_R_CLAIMS_NOT_OBJECT},
    /* A top-level scalar is a syntax error to claims_parse, as for claims_json. */
    {"JSON string", "\"" K_SUB_V "\"", NULL, JS_EINVAL, JS_R_CLAIMS_SYNTAX},
    {"duplicate member",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, K_JTI, K_SUB,
                    ",\"iss\":\"https://evil.example\""),
     NULL, JS_EINVAL, JS_R_CLAIMS_DUPLICATE_MEMBER},
    {"NUL in a string", "{\"iss\":\"a\\u0000b\"}", NULL, JS_EINVAL, JS_R_CLAIMS_NUL},
    {"not UTF-8", "{\"iss\":\"\xff\"}", NULL, JS_EINVAL, JS_R_CLAIMS_UTF8},
    /* The policy, validating (the signer cannot fix a claim). */
    {"wrong iss",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, "\"iss\":\"https://evil.example\"", K_JTI, K_SUB,
                    ""),
     NULL, JS_EDENIED, JS_R_POLICY_TOKEN_ISSUER},
    {"iss with a trailing slash",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, "\"iss\":\"" ISSUER "/\"", K_JTI, K_SUB, ""), NULL,
     JS_EDENIED, JS_R_POLICY_TOKEN_ISSUER},
    {"no iss", "{" K_AUD "," K_EXP "," K_IAT "," K_JTI "," K_SUB "}", NULL, JS_EDENIED,
     JS_R_POLICY_TOKEN_ISSUER},
    {"exp now", KUBE_JSON_WITH(K_AUD, "\"exp\":1700000100", K_IAT, K_NBF, K_ISS, K_JTI, K_SUB, ""),
     NULL, JS_EINVAL, JS_R_CLAIMS_EXP_PAST},
    {"exp past",
     KUBE_JSON_WITH(K_AUD, "\"exp\":1600000000", "\"iat\":1599999000", "\"nbf\":1599999000", K_ISS,
                    K_JTI, K_SUB, ""),
     NULL, JS_EINVAL, JS_R_CLAIMS_EXP_PAST},
    {"exp a float",
     KUBE_JSON_WITH(K_AUD, "\"exp\":1700000700.5", K_IAT, K_NBF, K_ISS, K_JTI, K_SUB, ""), NULL,
     JS_EINVAL, JS_R_CLAIMS_EXP_TYPE},
    {"lifetime over max_ttl (1h)",
     KUBE_JSON_WITH(K_AUD, "\"exp\":1700000300", "\"iat\":1699996600", "\"nbf\":1699996600", K_ISS,
                    K_JTI, K_SUB, ""),
     NULL, JS_EDENIED, JS_R_POLICY_LIFETIME},
    {"exp beyond the key version's window",
     KUBE_JSON_WITH(K_AUD, "\"exp\":1700000701", K_IAT, K_NBF, K_ISS, K_JTI, K_SUB, ""), NULL,
     JS_EDENIED, JS_R_POLICY_LIFETIME},
    {"iat beyond the leeway",
     KUBE_JSON_WITH(K_AUD, K_EXP, "\"iat\":1700000161", K_NBF, K_ISS, K_JTI, K_SUB, ""), NULL,
     JS_EINVAL, JS_R_CLAIMS_IAT},
    {"no iat", "{" K_AUD "," K_EXP "," K_ISS "," K_JTI "," K_SUB "}", NULL, JS_EINVAL,
     JS_R_CLAIMS_IAT},
    {"nbf after iat plus the leeway",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, "\"nbf\":1700000161", K_ISS, K_JTI, K_SUB, ""), NULL,
     JS_EINVAL, JS_R_CLAIMS_NBF},
    {"no jti", "{" K_AUD "," K_EXP "," K_IAT "," K_ISS "," K_SUB "}", NULL, JS_EINVAL,
     JS_R_CLAIMS_JTI},
    {"jti with a space",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, "\"jti\":\"a b\"", K_SUB, ""), NULL,
     JS_EINVAL, JS_R_CLAIMS_JTI},
    {"aud not allowed",
     KUBE_JSON_WITH("\"aud\":[\"https://elsewhere.example\"]", K_EXP, K_IAT, K_NBF, K_ISS, K_JTI,
                    K_SUB, ""),
     NULL, JS_EDENIED, JS_R_POLICY_AUDIENCE},
    {"sub not a service account",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, K_JTI, "\"sub\":\"alice\"", ""), NULL,
     JS_EDENIED, JS_R_POLICY_SUBJECT},
    {"claim not allowed",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, K_JTI, K_SUB, ",\"admin\":true"), NULL,
     JS_EDENIED, JS_R_POLICY_CLAIM},
    {"scope", KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, K_JTI, K_SUB, ",\"scope\":\"x\""),
     NULL, JS_EDENIED, JS_R_POLICY_CLAIM},
    {"cnf",
     KUBE_JSON_WITH(K_AUD, K_EXP, K_IAT, K_NBF, K_ISS, K_JTI, K_SUB,
                    ",\"cnf\":{\"jkt\":\"" CNF_TP "\"}"),
     NULL, JS_EDENIED, JS_R_POLICY_CLAIM},
};

static void test_k8s_refusals(void **state)
{
    fixture *f = *state;
    for (size_t i = 0; i < sizeof(k_k8s_refusals) / sizeof(k_k8s_refusals[0]); i++) {
        char *payload = k_k8s_refusals[i].raw != NULL ? strdup(k_k8s_refusals[i].raw)
                                                      : b64_of(k_k8s_refusals[i].json);
        assert_non_null(payload);
        call c = k8s_request(KUBE, payload);
        run_k8s(f, &c);
        if (c.d.status != k_k8s_refusals[i].st || c.d.reason != k_k8s_refusals[i].reason)
            fail_msg("case '%s': want %s, got status %d %s: %s", k_k8s_refusals[i].name,
                     js_reason_name(k_k8s_refusals[i].reason), (int)c.d.status,
                     js_reason_name(c.d.reason), c.d.msg);
        assert_refused(&c, JS_DECISION_DENY, k_k8s_refusals[i].st, k_k8s_refusals[i].reason);
        assert_int_equal(c.body.calls, 1);
        assert_int_equal(c.budget.calls, 1); /* a denial spends the budget */
        assert_false(c.d.folded);
        assert_false(c.d.hsm_failed);
        js_decision_clear(&c.d);
        free(payload);
    }
}

/* A valid payload padded with '=' to a multiple of 4, as standard base64
 * would write it: refused, never signed under a second spelling. */
static void test_k8s_padding(void **state)
{
    fixture *f = *state;
    char *b64 = b64_of(KUBE_JSON);
    size_t n = strlen(b64);
    assert_true(n % 4 != 0); /* KUBE_JSON's length is not a multiple of 3 */
    char padded[2048];
    assert_true(n + 3 < sizeof(padded));
    memcpy(padded, b64, n);
    while (n % 4 != 0)
        padded[n++] = '=';
    padded[n] = '\0';
    call c = k8s_request(KUBE, padded);
    run_k8s(f, &c);
    if (c.d.status != JS_EINVAL || strncmp(js_reason_name(c.d.reason), "b64url.", 7) != 0)
        fail_msg("padded payload: got %s: %s", js_reason_name(c.d.reason), c.d.msg);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, c.d.reason);
    js_decision_clear(&c.d);
    free(b64);
}

/* Over the size limit: refused by its length before anything is decoded (the
 * payload is not even base64url: a decoder would say b64url.char), however
 * large. At the limit, the decoder runs. */
static void test_k8s_too_large(void **state)
{
    fixture *f = *state;
    const size_t limit = B64URL_ENCODED_LEN(CLAIMS_MAX_BYTES);
    const size_t sizes[] = {limit + 1, limit + 4, 4u << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *payload = malloc(sizes[i] + 1);
        assert_non_null(payload);
        memset(payload, '!', sizes[i]);
        payload[sizes[i]] = '\0';
        call c = k8s_request(KUBE, payload);
        run_k8s(f, &c);
        assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_CLAIMS_TOO_LARGE);
        js_decision_clear(&c.d);
        free(payload);
    }
    char *payload = malloc(limit + 1);
    assert_non_null(payload);
    memset(payload, '!', limit);
    payload[limit] = '\0';
    call c = k8s_request(KUBE, payload);
    run_k8s(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_B64URL_CHAR);
    js_decision_clear(&c.d);
    free(payload);

    /* A valid claim set one byte over CLAIMS_MAX_BYTES. */
    char *json = malloc(CLAIMS_MAX_BYTES + 2);
    assert_non_null(json);
    size_t n = strlen(KUBE_JSON);
    memcpy(json, KUBE_JSON, n);
    memset(json + n, ' ', CLAIMS_MAX_BYTES + 1 - n);
    json[CLAIMS_MAX_BYTES + 1] = '\0';
    payload = b64_of(json);
    c = k8s_request(KUBE, payload);
    run_k8s(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_CLAIMS_TOO_LARGE);
    js_decision_clear(&c.d);
    free(payload);
    free(json);
}

/* Admission comes first: no identity, no match, frozen by the policy or an
 * administrator are refused before the payload is decoded (the payload here
 * is not base64url, and the reason is still admission's); within the budget
 * only the envelope is decoded (for a request_id), beyond it nothing. */
static void test_k8s_admission_before_decoding(void **state)
{
    fixture *f = *state;
    js_frozen *frozen = NULL;
    js_err err;
    assert_int_equal(js_frozen_with(NULL, KUBE, true, &frozen, &err), JS_OK);
    static const struct {
        const char *identity;
        bool admin_frozen;
        js_reason reason;
    } k_rows[] = {
        {NULL, false, JS_R_IDENTITY_NONE},
        {"unix:uid=4242", false, JS_R_POLICY_NO_MATCH},
        {"unix:uid=01000", false, JS_R_POLICY_NO_MATCH}, /* exact match only */
        {KUBE_COLD, false, JS_R_POLICY_FROZEN},
        {KUBE, true, JS_R_ADMIN_FROZEN},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        for (int full = 1; full >= 0; full--) {
            call c = k8s_request(k_rows[i].identity, "!!!!");
            c.frozen = k_rows[i].admin_frozen ? frozen : NULL;
            c.budget.full = full != 0;
            run_k8s(f, &c);
            assert_refused(&c, JS_DECISION_DENY, JS_EDENIED, k_rows[i].reason);
            assert_int_equal(c.budget.calls, 1);
            assert_int_equal(c.d.folded, !full);
            assert_int_equal(c.body.calls, full ? 1 : 0);
            assert_string_equal(c.d.token.key_name, "");
            assert_null(c.d.token.sub);
            js_decision_clear(&c.d);
        }
    }
    js_frozen_free(frozen);

    /* Rate limited: folded, nothing decoded, no budget spent. */
    char *payload = b64_of(KUBE_JSON);
    call c = k8s_request(KUBE_LIMITED, payload);
    run_k8s(f, &c);
    assert_int_equal(c.body.calls, 1); /* the first is admitted (and refused: aud) */
    js_decision_clear(&c.d);
    c = k8s_request(KUBE_LIMITED, "!!!!");
    run_k8s(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_ELIMIT, JS_R_RATE_LIMITED);
    assert_true(c.d.folded);
    assert_int_equal(c.body.calls, 0);
    assert_int_equal(c.budget.calls, 0);
    js_decision_clear(&c.d);
    free(payload);
}

/* Validate mode is for unix: callers only: a build-mode caller reaching the
 * Kubernetes path is the signer's error, never a token. */
static void test_k8s_build_mode_caller(void **state)
{
    fixture *f = *state;
    char *payload = b64_of(KUBE_JSON);
    call c = k8s_request(APP, payload);
    run_k8s(f, &c);
    assert_refused(&c, JS_DECISION_ERROR, JS_EINTERNAL, JS_R_POLICY_INTERNAL);
    js_decision_clear(&c.d);
    free(payload);
}

/* The key revoked without a successor: an error after validation, and the
 * token's jti is not reported for a token that was never made. */
static void test_k8s_error_no_active_key(void **state)
{
    fixture *f = *state;
    char *payload = b64_of(KUBE_JSON);
    call c = k8s_request(KUBE, payload);
    c.keys = f->revoked;
    run_k8s(f, &c);
    assert_refused(&c, JS_DECISION_ERROR, JS_EUNAVAIL, JS_R_KEY_NO_ACTIVE);
    assert_false(c.d.folded);
    assert_int_equal(c.budget.calls, 0);
    js_decision_clear(&c.d);
    free(payload);
}

/* The token fails to sign: an HSM error, no token, no jti. */
static void test_k8s_error_hsm(void **state)
{
    fixture *f = *state;
    if (f->shim_ctl[0] == '\0')
        skip(); /* JS_P11SHIM not set: run through ctest */
    char *payload = b64_of(KUBE_JSON);
    shim_rules(f, "fail C_Sign CKR_FUNCTION_FAILED\nfail C_SignInit CKR_FUNCTION_FAILED\n");
    call c = k8s_request(KUBE, payload);
    run_k8s(f, &c);
    shim_rules(f, "ok\n");
    assert_refused(&c, JS_DECISION_ERROR, JS_EUNAVAIL, JS_R_HSM_SIGN);
    assert_true(c.d.hsm_failed);
    js_decision_clear(&c.d);
    free(payload);
}

/* The jti is recorded whole up to JS_POLICY_JTI_MAX (128) characters, the
 * longest validate mode accepts; one more is refused. An envelope that does
 * not decode is request.malformed. */
static void test_k8s_jti_bounds_and_malformed(void **state)
{
    fixture *f = *state;
    char jti[JS_POLICY_JTI_MAX + 2], json[2048];
    for (size_t len = JS_POLICY_JTI_MAX; len <= JS_POLICY_JTI_MAX + 1; len++) {
        memset(jti, 'j', len);
        jti[len] = '\0';
        snprintf(json, sizeof(json),
                 "{" K_AUD "," K_EXP "," K_IAT "," K_NBF "," K_ISS ",\"jti\":\"%s\"," K_SUB "}",
                 jti);
        char *payload = b64_of(json);
        call c = k8s_request(KUBE, payload);
        run_k8s(f, &c);
        if (len <= JS_POLICY_JTI_MAX) {
            assert_k8s_token(f, &c, payload);
            assert_string_equal(c.d.token.jti, jti);
        } else {
            assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_CLAIMS_JTI);
        }
        js_decision_clear(&c.d);
        free(payload);
    }
    assert_true(JS_POLICY_JTI_MAX <= JS_JTI_MAX);

    char *payload = b64_of(KUBE_JSON);
    call c = k8s_request(KUBE, payload);
    c.body.fail = JS_EINVAL;
    run_k8s(f, &c);
    assert_refused(&c, JS_DECISION_DENY, JS_EINVAL, JS_R_REQUEST_MALFORMED);
    assert_null(c.d.token.sub);
    js_decision_clear(&c.d);
    free(payload);
}

static void test_k8s_alg_ok(void **state)
{
    (void)state;
    static const struct {
        js_alg alg;
        bool ok;
    } k_rows[] = {
        {JS_ALG_RS256, true},  {JS_ALG_ES256, true},  {JS_ALG_ES384, true},
        {JS_ALG_PS256, false}, {JS_ALG_EDDSA, false}, {JS_ALG_NONE, false},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++)
        if (js_k8s_alg_ok(k_rows[i].alg) != k_rows[i].ok)
            fail_msg("%s: want %s",
                     js_alg_name(k_rows[i].alg) ? js_alg_name(k_rows[i].alg) : "none",
                     k_rows[i].ok ? "accepted" : "refused");
}

/* A policy of one unix: caller (KUBE) with these keys (default: the first),
 * plus a build-mode caller with build_keys. */
static js_policy *k8s_policy_with(const char *keys, const char *build_keys)
{
    char text[1024];
    snprintf(text, sizeof(text),
             "version: 1\n"
             "issuer: \"" ISSUER "\"\n"
             "callers:\n"
             "  - id: " KUBE "\n"
             "    keys: [%s]\n"
             "    audiences: [api]\n"
             "    max_ttl: 1h\n"
             "    subject: '" KUBE_SUBJECT "'\n"
             "  - id: " APP "\n"
             "    keys: [%s]\n"
             "    audiences: [app]\n",
             keys, build_keys);
    js_policy *p = NULL;
    js_err err;
    if (js_policy_load_buffer(text, strlen(text), "policy-k8s.yaml", &p, &err) != JS_OK)
        fail_msg("policy: %s: %s", js_reason_name(err.reason), err.msg);
    return p;
}

/* js_service_check_policy (start and every reload): a unix: caller may only
 * use keys kube-apiserver accepts, every one of them (not just the default),
 * and needs the externaljwt socket; build-mode callers are unaffected. */
static void test_k8s_check_policy(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *keys;
        const char *bad; /* NULL: accepted */
        const char *alg;
    } k_rows[] = {
        {KEY, NULL, NULL},
        {"k8s-rs256, k8s-es384, " KEY, NULL, NULL},
        {"k8s-ps256", "k8s-ps256", "PS256"},
        {"k8s-eddsa", "k8s-eddsa", "EdDSA"},
        {KEY ", k8s-eddsa", "k8s-eddsa", "EdDSA"},
        {"k8s-rs256, k8s-ps256", "k8s-ps256", "PS256"},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        /* The build-mode caller may use any algorithm. */
        js_policy *p = k8s_policy_with(k_rows[i].keys, "k8s-ps256, k8s-eddsa");
        js_err err;
        js_err_clear(&err);
        js_status st = js_service_check_policy(f->ksvc, p, &err);
        if (k_rows[i].bad == NULL) {
            if (st != JS_OK)
                fail_msg("keys [%s]: refused: %s", k_rows[i].keys, err.msg);
        } else {
            if (st != JS_ECONFIG || err.reason != JS_R_CONFIG_EXTERNALJWT_ALG)
                fail_msg("keys [%s]: want config.externaljwt_alg, got %s %s: %s", k_rows[i].keys,
                         js_status_name(st), js_reason_name(err.reason), err.msg);
            char want[64];
            snprintf(want, sizeof(want), "key '%s' is %s", k_rows[i].bad, k_rows[i].alg);
            if (strstr(err.msg, want) == NULL || strstr(err.msg, "kube-apiserver") == NULL ||
                strstr(err.msg, KUBE) == NULL)
                fail_msg("keys [%s]: the message should name the key, its algorithm, the "
                         "caller and kube-apiserver: %s",
                         k_rows[i].keys, err.msg);
        }
        js_policy_free(p);
    }

    /* No externaljwt section in the configuration: a unix: caller could
     * never call, so the policy is refused. */
    js_policy *p = k8s_policy_with(KEY, KEY);
    js_err err;
    js_err_clear(&err);
    assert_null(f->cfg->externaljwt_socket);
    assert_int_equal(js_service_check_policy(f->svc, p, &err), JS_ECONFIG);
    assert_int_equal(err.reason, JS_R_CONFIG_EXTERNALJWT_ALG);
    assert_non_null(strstr(err.msg, KUBE));
    assert_non_null(strstr(err.msg, "externaljwt"));
    js_policy_free(p);
    /* And a policy without unix: callers needs none. */
    assert_int_equal(js_service_check_policy(f->svc, f->policy, &err), JS_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_of_status),
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_allow_exp_capped_to_key_window),
        cmocka_unit_test(test_deny_policy),
        cmocka_unit_test(test_deny_malformed),
        cmocka_unit_test(test_cnf),
        cmocka_unit_test(test_deny_before_decoding),
        cmocka_unit_test(test_rate_limited),
        cmocka_unit_test(test_error_no_active_key),
        cmocka_unit_test(test_error_hsm),
        cmocka_unit_test(test_fail_discards_token),
        cmocka_unit_test(test_k8s_allow),
        cmocka_unit_test(test_k8s_long_sub_recorded_whole),
        cmocka_unit_test(test_k8s_allow_max_size),
        cmocka_unit_test(test_k8s_refusals),
        cmocka_unit_test(test_k8s_padding),
        cmocka_unit_test(test_k8s_too_large),
        cmocka_unit_test(test_k8s_admission_before_decoding),
        cmocka_unit_test(test_k8s_build_mode_caller),
        cmocka_unit_test(test_k8s_error_no_active_key),
        cmocka_unit_test(test_k8s_error_hsm),
        cmocka_unit_test(test_k8s_jti_bounds_and_malformed),
        cmocka_unit_test(test_k8s_alg_ok),
        cmocka_unit_test(test_k8s_check_policy),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
