/*
 * service.c - the SignJwt pipeline: admits, decodes, decides and signs one
 * request into one decision (see service.h).
 */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "b64url.h"
#include "clock.h"
#include "hex.h"
#include "hsm_signer.h"
#include "jws.h"
#include "names.h"

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

/* Copies sub and aud (as compact JSON) of the request, whole, for the log
 * line and the audit record: a record must name exactly what the token says
 * (a truncated sub would hide the token from `jwt-audit show --sub`, and a
 * truncated JSON text would be invalid). Both are bounded by
 * CLAIMS_MAX_BYTES. Out of memory leaves them NULL. */
static void note_sub_aud(const json_t *claims, js_sign_result *res)
{
    const json_t *sub = json_object_get(claims, "sub");
    if (json_is_string(sub))
        res->sub = strdup(json_string_value(sub));
    const json_t *aud = json_object_get(claims, "aud");
    if (aud != NULL)
        res->aud = json_dumps(aud, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* The request's cnf (RFC 7800) for the audit record, only when its shape is
 * valid (claims_cnf_check): the policy refuses any other with claims.cnf, and
 * the record keeps no untrusted object. Compact, member order kept: the
 * bytes the token carries. */
static void note_cnf(const json_t *claims, js_sign_result *res)
{
    const json_t *cnf = json_object_get(claims, "cnf");
    js_err ignored;
    if (cnf != NULL && claims_cnf_check(cnf, &ignored) == JS_OK)
        res->cnf_json = json_dumps(cnf, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/* A caller admitted past match, frozen and rate checks, with everything the
 * rest of the pipeline needs: borrowed from the input's snapshots. */
typedef struct admission {
    const js_policy *policy;
    const js_policy_caller *caller;
    const char *identity;
    const js_keyring *keys;
} admission;

/* Match, frozen and rate checks, before the request body is decoded.
 * JS_EDENIED (policy.no_match, policy.frozen, admin.frozen) or JS_ELIMIT
 * (rate.limited, with *retry_after_ms). */
static js_status admit(const js_service *svc, const js_sign_input *in, admission *adm,
                       uint64_t *retry_after_ms, js_err *err)
{
    const char *identity = in->identity;
    const js_policy_caller *c = js_policy_match(in->policy, identity);
    JS_ENSURE(c != NULL, err, JS_EDENIED, JS_R_POLICY_NO_MATCH,
              "caller '%s' matches no entry of the policy", identity);
    JS_ENSURE(!js_policy_caller_frozen(c), err, JS_EDENIED, JS_R_POLICY_FROZEN,
              "caller '%s' is frozen (policy entry '%s')", identity, js_policy_caller_id(c));
    JS_ENSURE(!js_frozen_contains(in->frozen, identity), err, JS_EDENIED, JS_R_ADMIN_FROZEN,
              "caller '%s' is frozen by an administrator", identity);
    JS_GUARD(js_ratelimit_take(svc->rl, c, identity, js_mono_ns(), retry_after_ms, err));
    *adm = (admission){in->policy, c, identity, in->keys};
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
    for (size_t i = 0; i < js_policy_caller_count(p); i++) {
        const js_policy_caller *c = js_policy_caller_at(p, i);
        if (js_policy_caller_type(c) != JS_ID_UNIX)
            continue;
        JS_ENSURE(svc->cfg->externaljwt_socket != NULL, err, JS_ECONFIG,
                  JS_R_CONFIG_EXTERNALJWT_ALG,
                  "the policy has a Kubernetes caller '%s' but the configuration has no "
                  "externaljwt section (the Unix socket it would call)",
                  js_policy_caller_id(c));
        for (size_t k = 0; k < js_policy_caller_key_count(c); k++) {
            const char *name = js_policy_caller_key_at(c, k);
            const js_key_config *kc = js_config_find_key(svc->cfg, name);
            if (kc == NULL)
                continue; /* reported above */
            JS_ENSURE(js_k8s_alg_ok(kc->alg), err, JS_ECONFIG, JS_R_CONFIG_EXTERNALJWT_ALG,
                      "key '%s' is %s, but the Kubernetes caller '%s' may sign with it: "
                      "kube-apiserver accepts only RS256, ES256, ES384 and ES512 in a "
                      "service-account token (k8s.io/externaljwt); give that caller a key of one "
                      "of those algorithms",
                      name, js_alg_name(kc->alg), js_policy_caller_id(c));
        }
    }
    /* The policy names the issuer; a config issuer, kept for
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

/* SHA-256 of the token, binary (the token index) and hex (what the audit log
 * keeps instead of the token). */
static void token_digest(js_sign_result *res)
{
    unsigned int n = 0;
    EVP_Digest(res->jwt, strlen(res->jwt), res->token_digest, &n, EVP_sha256(), NULL);
    js_hex_encode(res->token_digest, sizeof(res->token_digest), res->token_sha256);
}

/* The lifetime window of key_name's active version, so the policy sets exp
 * once (a token never outlives its key version's publication, keystate.h).
 * 0 when there is none: sign() then refuses (key.no_active,
 * key.lifetime_unknown). */
static int64_t key_window(const char *key_name, void *keys)
{
    const js_key *k = js_keyring_find(keys, key_name);
    return k != NULL ? js_key_lifetime(k) : 0;
}

/* The request fields, the claims and the policy: the final claim set in
 * *pr, with the jti in res. */
static js_status evaluate(const admission *adm, const js_sign_request *req, int64_t now,
                          js_sign_result *res, js_policy_result *pr, js_err *err)
{
    JS_GUARD(js_request_id_check(req->request_id, err));
    if (req->key_name[0] != '\0')
        JS_ENSURE(js_key_name_ok(req->key_name), err, JS_EINVAL, JS_R_REQUEST_KEY_NAME,
                  "key name must be 1-%d characters of [A-Za-z0-9._-]", JS_KEY_NAME_MAX);
    json_t *claims = NULL;
    JS_GUARD(claims_parse(req->claims, req->claims_len, &claims, err));
    note_sub_aud(claims, res);
    note_cnf(claims, res);
    js_status st = claims_new_jti(res->jti, err);
    if (st == JS_OK)
        st = js_policy_evaluate(adm->policy, adm->caller, claims, req->key_name, res->jti, now,
                                key_window, (void *)adm->keys, pr, err);
    json_decref(claims);
    return st;
}

/*
 * Signs the claim set with the key the policy chose. The policy only names
 * configured keys (js_service_check_policy); a key without an active
 * version was revoked with no successor.
 */
static js_status sign(const admission *adm, js_hsm_session *s, int64_t now, js_policy_result *pr,
                      js_sign_result *res, bool *hsm_failed, js_err *err)
{
    const js_key *key = js_keyring_find(adm->keys, pr->key_name);
    JS_ENSURE(key != NULL, err, JS_EUNAVAIL, JS_R_KEY_NO_ACTIVE,
              "key '%s' has no active version (revoked without a successor): an administrator "
              "must call Admin/RotateKey, which makes a new version active immediately "
              "(emergency rotation)",
              pr->key_name);
    JS_ENSURE(js_key_lifetime(key) > 0, err, JS_EUNAVAIL, JS_R_KEY_LIFETIME_UNKNOWN,
              "key '%s' has no known publication window yet", pr->key_name);
    snprintf(res->key_name, sizeof(res->key_name), "%s", js_key_name(key));
    snprintf(res->kid, sizeof(res->kid), "%s", js_key_kid(key));
    snprintf(res->alg, sizeof(res->alg), "%s", js_alg_name(js_key_alg(key)));
    char *payload = json_dumps(pr->claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
    JS_ENSURE_ALLOC(payload, err);
    const char *header = js_key_header(key);
    js_hsm_signer signer = {s, js_key_hsm(key), false};
    js_status st = jws_sign_compact(header, strlen(header), payload, strlen(payload),
                                    js_hsm_signer_sign, &signer, &res->jwt, err);
    free(payload);
    *hsm_failed = signer.failed;
    JS_GUARD(st);
    res->issued_at = now;
    res->expires_at = pr->exp;
    res->scopes = pr->scopes;
    pr->scopes = NULL;
    token_digest(res);
    return JS_OK;
}

/* Everything after admission: decode, evaluate, sign. */
static js_status decide_admitted(const js_service *svc, const js_sign_input *in,
                                 const admission *adm, js_decision *d, js_err *err)
{
    js_sign_request req;
    memset(&req, 0, sizeof(req));
    JS_GUARD(in->decode(in->decode_ctx, &req, err));
    /* Only log and record a request_id we accept (printable, bounded). */
    if (js_request_id_check(req.request_id, NULL) == JS_OK)
        snprintf(d->request_id, sizeof(d->request_id), "%s", req.request_id);
    int64_t now = svc->clock(svc->clock_ctx);
    js_policy_result pr;
    memset(&pr, 0, sizeof(pr));
    js_status st = evaluate(adm, &req, now, &d->token, &pr, err);
    if (st == JS_OK)
        st = sign(adm, in->session, now, &pr, &d->token, &d->hsm_failed, err);
    js_policy_result_clear(&pr);
    return st;
}

bool js_k8s_alg_ok(js_alg alg)
{
    /* ES512 is also accepted by kube-apiserver; the signer has no ES512. */
    return alg == JS_ALG_RS256 || alg == JS_ALG_ES256 || alg == JS_ALG_ES384;
}

/* The payload segment of a Kubernetes Sign request: canonical base64url of a
 * claim set parsed as strictly as claims_json. The caller releases *claims. */
static js_status k8s_claims(const js_sign_request *req, json_t **claims, js_err *err)
{
    JS_ENSURE(req->claims_len > 0, err, JS_EINVAL, JS_R_CLAIMS_EMPTY, "claims is empty");
    JS_ENSURE(req->claims_len <= B64URL_ENCODED_LEN(CLAIMS_MAX_BYTES), err, JS_EINVAL,
              JS_R_CLAIMS_TOO_LARGE, "claims is %zu characters; the limit is %zu (%d bytes)",
              req->claims_len, (size_t)B64URL_ENCODED_LEN(CLAIMS_MAX_BYTES), CLAIMS_MAX_BYTES);
    uint8_t *raw = malloc(CLAIMS_MAX_BYTES);
    JS_ENSURE_ALLOC(raw, err);
    size_t n = 0;
    js_status st =
        b64url_decode((const char *)req->claims, req->claims_len, raw, CLAIMS_MAX_BYTES, &n, err);
    if (st != JS_OK)
        js_err_prefix(err, "claims: ");
    else
        st = claims_parse(raw, n, claims, err);
    free(raw);
    return st;
}

/* Validates the pre-built claims and signs them as sent (service.h). */
static js_status k8s_decide_admitted(const js_service *svc, const js_sign_input *in,
                                     const admission *adm, js_decision *d, js_err *err)
{
    js_sign_request req;
    memset(&req, 0, sizeof(req));
    JS_GUARD(in->decode(in->decode_ctx, &req, err));
    int64_t now = svc->clock(svc->clock_ctx);
    js_sign_result *res = &d->token;
    json_t *claims = NULL;
    JS_GUARD(k8s_claims(&req, &claims, err));
    note_sub_aud(claims, res);
    note_cnf(claims, res);
    js_policy_validated v;
    memset(&v, 0, sizeof(v));
    js_status st = js_policy_validate(adm->policy, adm->caller, claims, now, JS_K8S_LEEWAY_S,
                                      key_window, (void *)adm->keys, &v, err);
    if (st == JS_OK)
        snprintf(res->jti, sizeof(res->jti), "%s", v.jti);
    json_decref(claims); /* v borrows from it: done with v */
    JS_GUARD(st);
    const js_key *key = js_keyring_find(adm->keys, v.key_name);
    JS_ENSURE(key != NULL, err, JS_EUNAVAIL, JS_R_KEY_NO_ACTIVE,
              "key '%s' has no active version (revoked without a successor): an administrator "
              "must call Admin/RotateKey",
              v.key_name);
    snprintf(res->key_name, sizeof(res->key_name), "%s", js_key_name(key));
    snprintf(res->kid, sizeof(res->kid), "%s", js_key_kid(key));
    snprintf(res->alg, sizeof(res->alg), "%s", js_alg_name(js_key_alg(key)));
    /* Checked at every policy load; checked again where it matters. */
    JS_ENSURE(js_k8s_alg_ok(js_key_alg(key)), err, JS_ECONFIG, JS_R_CONFIG_EXTERNALJWT_ALG,
              "key '%s' is %s; kube-apiserver accepts only RS256, ES256, ES384 and ES512",
              v.key_name, res->alg);
    /* The header is alg, typ and kid only (jws.h), as kube-apiserver requires. */
    const char *header = js_key_header(key);
    js_hsm_signer signer = {in->session, js_key_hsm(key), false};
    st = jws_sign_compact_encoded(header, strlen(header), (const char *)req.claims, req.claims_len,
                                  js_hsm_signer_sign, &signer, &res->jwt, err);
    d->hsm_failed = signer.failed;
    JS_GUARD(st);
    res->issued_at = v.iat;
    res->expires_at = v.exp;
    token_digest(res);
    return JS_OK;
}

typedef js_status (*decide_fn)(const js_service *svc, const js_sign_input *in, const admission *adm,
                               js_decision *d, js_err *err);

static void decide_with(const js_service *svc, const js_sign_input *in, js_decision *d,
                        decide_fn decide_admitted_fn);

void js_service_decide_k8s(const js_service *svc, const js_sign_input *in, js_decision *d)
{
    decide_with(svc, in, d, k8s_decide_admitted);
}

void js_service_decide(const js_service *svc, const js_sign_input *in, js_decision *d)
{
    decide_with(svc, in, d, decide_admitted);
}

/* Admission, then decide_admitted_fn, into one decision (service.h). */
static void decide_with(const js_service *svc, const js_sign_input *in, js_decision *d,
                        decide_fn decide_admitted_fn)
{
    js_decision_init(d);
    js_err err;
    js_err_clear(&err);
    admission adm;
    memset(&adm, 0, sizeof(adm));
    /* identity -> match -> frozen -> rate, before the body is decoded. */
    js_status st;
    if (in->identity == NULL) {
        err = *in->identity_err;
        st = err.status;
    } else {
        st = admit(svc, in, &adm, &d->retry_after_ms, &err);
    }
    if (st == JS_ELIMIT) {
        /* Rate limited: nothing is decoded and the denial is folded, so a
         * flood stays cheap. */
        d->folded = true;
    } else if (st != JS_OK) {
        /* A refused caller (no identity, no match, frozen) within its denial
         * budget still gets its request envelope decoded, for the request_id
         * its audit record and log line carry; beyond the budget nothing is
         * decoded. */
        /* Only refusals are folded; an error (the signer's fault) is
         * always recorded in full (service.h). */
        d->folded = js_decision_kind_of(st) == JS_DECISION_DENY && !in->in_full(in->budget_ctx);
        js_sign_request req;
        memset(&req, 0, sizeof(req));
        js_err ignored;
        if (!d->folded && in->decode(in->decode_ctx, &req, &ignored) == JS_OK &&
            js_request_id_check(req.request_id, NULL) == JS_OK)
            snprintf(d->request_id, sizeof(d->request_id), "%s", req.request_id);
    } else {
        st = decide_admitted_fn(svc, in, &adm, d, &err);
        /* Denials decided after admission (malformed request, policy) take
         * their budget decision now; errors (HSM, audit) are never folded. */
        if (st != JS_OK && js_decision_kind_of(st) == JS_DECISION_DENY)
            d->folded = !in->in_full(in->budget_ctx);
    }
    if (st == JS_OK)
        js_decision_allow(d);
    else
        js_decision_fail(d, &err);
}
