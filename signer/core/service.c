/*
 * service.c - decides and signs one SignJwt request (see service.h).
 */
#include "service.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include <openssl/evp.h>

#include "jws.h"

struct js_service {
    const js_config *cfg;
    js_ratelimit *rl;
    js_clock_fn clock;
    void *clock_ctx;
};

static int64_t system_clock(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

js_status js_service_new(const js_config *cfg, js_ratelimit *rl, js_clock_fn clock, void *clock_ctx,
                         js_service **out, js_err *err)
{
    *out = NULL;
    js_service *svc = calloc(1, sizeof(*svc));
    JS_ENSURE_ALLOC(svc, err);
    svc->cfg = cfg;
    svc->rl = rl;
    svc->clock = clock != NULL ? clock : system_clock;
    svc->clock_ctx = clock_ctx;
    *out = svc;
    return JS_OK;
}

void js_service_free(js_service *svc)
{
    free(svc);
}

void js_sign_result_clear(js_sign_result *res)
{
    if (res == NULL)
        return;
    if (res->jwt != NULL) {
        OPENSSL_cleanse(res->jwt, strlen(res->jwt));
        free(res->jwt);
    }
    free(res->scopes);
    free(res->aud);
    memset(res, 0, sizeof(*res));
}

js_status js_request_id_check(const char *request_id, js_err *err)
{
    size_t n = strlen(request_id);
    JS_ENSURE(n <= JS_REQUEST_ID_MAX, err, JS_EINVAL, JS_R_REQUEST_REQUEST_ID,
              "request_id is %zu characters; the limit is %d", n, JS_REQUEST_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)request_id[i];
        JS_ENSURE(c >= 0x21 && c <= 0x7e, err, JS_EINVAL, JS_R_REQUEST_REQUEST_ID,
                  "request_id must be printable ASCII without spaces");
    }
    return JS_OK;
}

/* Key names as the configuration allows them: [A-Za-z0-9._-]{1,64}. */
static int key_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JS_KEY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Copies sub (truncated: logs only) and aud (whole, as compact JSON: it goes
 * into the audit record, where a truncated JSON text would be invalid) of the
 * request for the log line and the audit record. */
static void note_sub_aud(const json_t *claims, js_sign_result *res)
{
    const json_t *sub = json_object_get(claims, "sub");
    if (json_is_string(sub))
        snprintf(res->sub, sizeof(res->sub), "%s", json_string_value(sub));
    const json_t *aud = json_object_get(claims, "aud");
    if (aud != NULL)
        res->aud = json_dumps(aud, JSON_COMPACT | JSON_ENCODE_ANY);
}

typedef struct hsm_sign_ctx {
    js_hsm_session *s;
    const js_hsm_key *key;
} hsm_sign_ctx;

static js_status hsm_sign_cb(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig, size_t cap,
                             size_t *sig_len, js_err *err)
{
    const hsm_sign_ctx *c = ctx;
    return js_hsm_sign(c->s, c->key, in, in_len, sig, cap, sig_len, err);
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

js_status js_service_admit(const js_service *svc, const js_policy *p, const js_frozen *frozen,
                           const char *identity, js_admission *adm, uint64_t *retry_after_ms,
                           js_err *err)
{
    memset(adm, 0, sizeof(*adm));
    *retry_after_ms = 0;
    const js_policy_caller *c = js_policy_match(p, identity);
    JS_ENSURE(c != NULL, err, JS_EDENIED, JS_R_POLICY_NO_MATCH,
              "caller '%s' matches no entry of the policy", identity);
    JS_ENSURE(!js_policy_caller_frozen(c), err, JS_EDENIED, JS_R_POLICY_FROZEN,
              "caller '%s' is frozen (policy entry '%s')", identity, js_policy_caller_id(c));
    JS_ENSURE(!js_frozen_contains(frozen, identity), err, JS_EDENIED, JS_R_ADMIN_FROZEN,
              "caller '%s' is frozen by an administrator", identity);
    JS_GUARD(js_ratelimit_take(svc->rl, c, identity, mono_ns(), retry_after_ms, err));
    adm->policy = p;
    adm->caller = c;
    adm->identity = identity;
    return JS_OK;
}

js_status js_service_check_policy(const js_service *svc, const js_policy *p, js_err *err)
{
    for (size_t i = 0; i < js_policy_key_count(p); i++) {
        const char *name = js_policy_key_at(p, i);
        JS_ENSURE(js_config_find_key(svc->cfg, name) != NULL, err, JS_ECONFIG,
                  JS_R_POLICY_UNKNOWN_KEY,
                  "the policy names key '%s', which is not in the signer's configuration", name);
    }
    /* The policy names the issuer (issue 3); a config issuer, kept for
     * compatibility, must agree with it so no one is surprised by iss. */
    const char *iss = js_policy_issuer(p);
    JS_ENSURE(iss != NULL, err, JS_ECONFIG, JS_R_POLICY_NO_ISSUER,
              "the policy does not set issuer");
    JS_ENSURE(svc->cfg->issuer == NULL || strcmp(svc->cfg->issuer, iss) == 0, err, JS_ECONFIG,
              JS_R_POLICY_ISSUER_MISMATCH,
              "the policy's issuer '%s' differs from the configuration's '%s'", iss,
              svc->cfg->issuer);
    return JS_OK;
}

/* Hex SHA-256 of the token: what the audit log keeps instead of the token. */
static void token_digest(const char *jwt, char hex[JS_SHA256_HEX + 1])
{
    uint8_t d[32];
    unsigned int n = 0;
    EVP_Digest(jwt, strlen(jwt), d, &n, EVP_sha256(), NULL);
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[JS_SHA256_HEX] = '\0';
}

js_status js_service_sign(const js_service *svc, js_hsm_session *s, const js_admission *adm,
                          const js_sign_request *req, js_sign_result *res, js_err *err)
{
    memset(res, 0, sizeof(*res));
    JS_GUARD(js_request_id_check(req->request_id, err));
    if (req->key_name[0] != '\0')
        JS_ENSURE(key_name_valid(req->key_name), err, JS_EINVAL, JS_R_REQUEST_KEY_NAME,
                  "key name must be 1-%d characters of [A-Za-z0-9._-]", JS_KEY_NAME_MAX);

    json_t *claims = NULL;
    JS_GUARD(claims_parse(req->claims, req->claims_len, &claims, err));
    note_sub_aud(claims, res);

    int64_t now = svc->clock(svc->clock_ctx);
    js_policy_result pr;
    memset(&pr, 0, sizeof(pr));
    js_status st = claims_new_jti(res->jti, err);
    if (st == JS_OK)
        st = js_policy_evaluate(adm->policy, adm->caller, claims, req->key_name, res->jti, now, &pr,
                                err);
    json_decref(claims);
    if (st != JS_OK) {
        res->jti[0] = '\0'; /* no token carries it */
        js_policy_result_clear(&pr);
        return st;
    }

    /* The policy only names configured keys (js_service_check_policy); a
     * key without an active version was revoked with no successor. */
    const js_key *key = js_keyring_find(adm->keys, pr.key_name);
    char *payload = NULL;
    if (key == NULL)
        st = js_err_set(err, JS_EUNAVAIL, JS_R_KEY_NO_ACTIVE,
                        "key '%s' has no active version (revoked without a successor): an "
                        "administrator must call Admin/RotateKey, which makes a new version "
                        "active immediately (emergency rotation)",
                        pr.key_name);
    /* A token never outlives its key version's publication (keystate.h):
     * exp is capped to now + the version's lifetime window. */
    if (st == JS_OK && js_key_lifetime(key) <= 0)
        st = js_err_set(err, JS_EUNAVAIL, JS_R_KEY_LIFETIME_UNKNOWN,
                        "key '%s' has no known publication window yet", pr.key_name);
    if (st == JS_OK && pr.exp > now + js_key_lifetime(key)) {
        pr.exp = now + js_key_lifetime(key);
        if (json_object_set_new(pr.claims, "exp", json_integer(pr.exp)) != 0)
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    if (st == JS_OK) {
        snprintf(res->key_name, sizeof(res->key_name), "%s", js_key_name(key));
        snprintf(res->kid, sizeof(res->kid), "%s", js_key_kid(key));
        snprintf(res->alg, sizeof(res->alg), "%s", js_alg_name(js_key_alg(key)));
        payload = json_dumps(pr.claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (payload == NULL)
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    if (st == JS_OK) {
        const char *header = js_key_header(key);
        hsm_sign_ctx ctx = {s, js_key_hsm(key)};
        st = jws_sign_compact(header, strlen(header), payload, strlen(payload), hsm_sign_cb, &ctx,
                              &res->jwt, err);
    }
    free(payload);
    if (st != JS_OK) {
        res->jti[0] = '\0';
        js_policy_result_clear(&pr);
        return st;
    }
    res->issued_at = now;
    res->expires_at = pr.exp;
    res->scopes = pr.scopes;
    pr.scopes = NULL;
    js_policy_result_clear(&pr);
    token_digest(res->jwt, res->token_sha256);
    return JS_OK;
}
