/*
 * rpc_k8s.c - Kubernetes' ExternalJWTSigner (k8s.io/externaljwt, KEP-740) on
 * the Unix socket of rpc_peers.c, in both published packages: v1
 * (kube-apiserver 1.34+) and v1alpha1 (1.32-1.33).
 *
 * The two packages' messages are identical on the wire (same names, numbers
 * and types; tests/unit/test_k8s_proto.c proves it with the generated code of
 * both), so one set of handlers serves both with v1's generated code; only
 * the method paths differ.
 *
 *   Sign       the caller's pre-built claims are validated, not evaluated
 *              (service.h js_service_decide_k8s), and signed as sent; the
 *              decision is audited and the reply waits for its record, like
 *              SignJwt (rpc_sign.c). Returns base64url header and signature.
 *   FetchKeys  every published version (next, active, retiring) of the keys
 *              the caller may sign with, as PKIX DER; refresh_hint_seconds
 *              half the pre-publication period (at most a minute), so
 *              kube-apiserver fetches a new key before any token carries it
 *              and drops a revoked one soon; data_timestamp = when the
 *              keyring last changed (start-up or any key's transition).
 *   Metadata   max_token_expiration_seconds = the caller's max_ttl (at least
 *              600 s: the policy refuses less for a unix: caller).
 * FetchKeys and Metadata return public data: they are logged within the
 * caller's quiet budget and counted, not audited (like GetJwks).
 */
#include "rpc_call.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>

#include "clock.h"
#include "denials.h"
#include "externaljwt/v1/api.pb-c.h"
#include "keyring.h"
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"
#include "policy_store.h"

const char *const js_rpc_k8s_paths[K8S_COUNT] = {
    [K8S_V1_SIGN] = "/v1.ExternalJWTSigner/Sign",
    [K8S_V1_FETCH_KEYS] = "/v1.ExternalJWTSigner/FetchKeys",
    [K8S_V1_METADATA] = "/v1.ExternalJWTSigner/Metadata",
    [K8S_V1ALPHA1_SIGN] = "/v1alpha1.ExternalJWTSigner/Sign",
    [K8S_V1ALPHA1_FETCH_KEYS] = "/v1alpha1.ExternalJWTSigner/FetchKeys",
    [K8S_V1ALPHA1_METADATA] = "/v1alpha1.ExternalJWTSigner/Metadata",
};

/* The largest key_id kube-apiserver accepts (k8s.io/externaljwt Key); our
 * kids are RFC 7638 thumbprints. */
#define K8S_KEY_ID_MAX 1024
_Static_assert(JWK_KID_LEN <= K8S_KEY_ID_MAX, "a kid kube-apiserver would refuse");
/* The longest refresh hint: after an emergency revocation kube-apiserver
 * stops trusting the key within this long. */
#define K8S_REFRESH_MAX_S 60

/* ---- Sign ---------------------------------------------------------------------- */

static void k8s_sign_fields(const ProtobufCMessage *m, js_sign_request *out)
{
    const V1__SignJWTRequest *r = (const V1__SignJWTRequest *)m;
    *out = (js_sign_request){(const uint8_t *)r->claims, strlen(r->claims), "", ""};
}

static js_status k8s_identity(call_ctx *c, js_err *err)
{
    return rpc_peers_identity(c->w->srv->peers, c->call, c->identity, sizeof(c->identity), &c->peer,
                              err);
}

/* header.payload.signature -> the header and signature segments, as kube-apiserver
 * assembles them again around the payload it sent. */
static js_status k8s_sign_pack(const js_decision *d, uint64_t audit_seq, uint8_t **buf, size_t *len,
                               js_err *err)
{
    (void)audit_seq; /* the published response has no field for it */
    const char *jwt = d->token.jwt;
    const char *dot1 = strchr(jwt, '.');
    const char *dot2 = strrchr(jwt, '.');
    JS_ENSURE(dot1 != NULL && dot2 != NULL && dot2 > dot1, err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
              "the signed token is not header.payload.signature");
    size_t hlen = (size_t)(dot1 - jwt);
    char *header = malloc(hlen + 1);
    JS_ENSURE_ALLOC(header, err);
    memcpy(header, jwt, hlen);
    header[hlen] = '\0';
    V1__SignJWTResponse resp = V1__SIGN_JWTRESPONSE__INIT;
    resp.header = header;
    resp.signature = (char *)dot2 + 1;
    *len = v1__sign_jwtresponse__get_packed_size(&resp);
    *buf = malloc(*len > 0 ? *len : 1);
    if (*buf != NULL)
        v1__sign_jwtresponse__pack(&resp, *buf);
    free(header);
    JS_ENSURE_ALLOC(*buf, err);
    return JS_OK;
}

static const rpc_sign_variant k_k8s_sign = {
    .method = JS_METHOD_K8S_SIGN,
    .request = &v1__sign_jwtrequest__descriptor,
    .fields = k8s_sign_fields,
    .decide = js_service_decide_k8s,
    .identity = k8s_identity,
    .pack = k8s_sign_pack,
};

const rpc_sign_variant *const rpc_k8s_sign_variant = &k_k8s_sign;

/* ---- FetchKeys and Metadata ------------------------------------------------------- */

/* The caller's policy entry; FetchKeys and Metadata need no more (a frozen
 * caller may still fetch the keys that verify the tokens it already has). */
static js_status k8s_caller(call_ctx *c, const js_policy **policy, const js_policy_caller **caller,
                            js_err *err)
{
    JS_GUARD(k8s_identity(c, err));
    *policy = js_policy_cache_get(&c->w->policy, c->w->srv->policies);
    *caller = js_policy_match(*policy, c->identity);
    JS_ENSURE(*caller != NULL, err, JS_EDENIED, JS_R_POLICY_NO_MATCH,
              "caller '%s' matches no entry of the policy", c->identity);
    return JS_OK;
}

/* The request has no fields, but it must still be a well-formed message. */
static js_status k8s_empty_request(call_ctx *c, const ProtobufCMessageDescriptor *desc, js_err *err)
{
    grpc_slice raw = grpc_empty_slice();
    js_status st = rpc_read_request(c->request, &raw, err);
    if (st == JS_OK)
        st = js_pb_check_strings(desc, GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), err);
    grpc_slice_unref(raw);
    return st;
}

/* Counts (keys NULL) or fills the published versions of every key the
 * caller may use, in the caller's key order. */
static size_t each_published(const js_keyring *kr, const js_policy_caller *caller, V1__Key *keys)
{
    size_t n = 0;
    for (size_t i = 0; i < js_policy_caller_key_count(caller); i++) {
        const char *name = js_policy_caller_key_at(caller, i);
        for (size_t k = 0; k < js_keyring_count(kr); k++) {
            const js_key *key = js_keyring_at(kr, k);
            if (strcmp(js_key_name(key), name) != 0)
                continue;
            for (size_t v = 0; v < js_key_published(key); v++, n++) {
                if (keys == NULL)
                    continue;
                size_t dlen = 0;
                const uint8_t *der = js_key_published_spki(key, v, &dlen);
                v1__key__init(&keys[n]);
                keys[n].key_id = (char *)js_key_published_kid(key, v);
                keys[n].key.data = (uint8_t *)der;
                keys[n].key.len = dlen;
                /* Every key we return may sign bound tokens, so kube-apiserver
                 * publishes it in its own discovery document too. */
                keys[n].exclude_from_oidc_discovery = false;
            }
        }
    }
    return n;
}

static js_status fetch_keys_pack(call_ctx *c, const js_policy_caller *caller, uint8_t **buf,
                                 size_t *len, js_err *err)
{
    const js_keyring *kr = js_snapshot_cache_get(&c->w->keys, c->w->srv->keys);
    /* Bounded: the caller's keys (the policy's limit) times
     * JS_KS_MAX_PUBLISHED versions each. */
    size_t n = each_published(kr, caller, NULL);
    V1__Key *keys = calloc(n > 0 ? n : 1, sizeof(*keys));
    V1__Key **ptrs = calloc(n > 0 ? n : 1, sizeof(*ptrs));
    if (keys == NULL || ptrs == NULL) {
        free(keys);
        free(ptrs);
        return js_err_oom(err);
    }
    each_published(kr, caller, keys);
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &keys[i];
    int64_t built_ms = js_keyring_built_ms(kr);
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    ts.seconds = built_ms / 1000;
    ts.nanos = (int32_t)(built_ms % 1000) * 1000000;
    V1__FetchKeysResponse resp = V1__FETCH_KEYS_RESPONSE__INIT;
    resp.n_keys = n;
    resp.keys = ptrs;
    resp.data_timestamp = &ts;
    /* Half the pre-publication period, so a new version is fetched at least
     * once before it signs (keystate.h) whatever the phase of the polls, and
     * at most K8S_REFRESH_MAX_S, so a revoked one is dropped soon. */
    int64_t hint = c->w->srv->cfg->key_prepublish / 2;
    if (hint > K8S_REFRESH_MAX_S)
        hint = K8S_REFRESH_MAX_S;
    resp.refresh_hint_seconds = hint > 0 ? hint : 1;
    *len = v1__fetch_keys_response__get_packed_size(&resp);
    *buf = malloc(*len > 0 ? *len : 1);
    if (*buf != NULL)
        v1__fetch_keys_response__pack(&resp, *buf);
    free(keys);
    free(ptrs);
    JS_ENSURE_ALLOC(*buf, err);
    return JS_OK;
}

static js_status metadata_pack(const js_policy_caller *caller, uint8_t **buf, size_t *len,
                               js_err *err)
{
    V1__MetadataResponse resp = V1__METADATA_RESPONSE__INIT;
    resp.max_token_expiration_seconds = js_policy_caller_max_ttl(caller);
    *len = v1__metadata_response__get_packed_size(&resp);
    *buf = malloc(*len > 0 ? *len : 1);
    JS_ENSURE_ALLOC(*buf, err);
    v1__metadata_response__pack(&resp, *buf);
    return JS_OK;
}

static bool k8s_is_keys(k8s_method m)
{
    return m == K8S_V1_FETCH_KEYS || m == K8S_V1ALPHA1_FETCH_KEYS;
}

/* FetchKeys or Metadata: one decision for the reply, the log line and the
 * metrics. */
static void k8s_read_call(call_ctx *c)
{
    c->t0_us = js_mono_us();
    bool keys = k8s_is_keys(c->k8s);
    const char *method = keys ? "ExternalJWTSigner.FetchKeys" : "ExternalJWTSigner.Metadata";
    js_err err;
    js_err_clear(&err);
    uint8_t *buf = NULL;
    size_t len = 0;
    const js_policy *policy = NULL;
    const js_policy_caller *caller = NULL;
    js_status st = k8s_caller(c, &policy, &caller, &err);
    if (st == JS_OK && c->request == NULL) {
        rpc_no_message(c, method);
        return;
    }
    if (st == JS_OK)
        st = k8s_empty_request(
            c, keys ? &v1__fetch_keys_request__descriptor : &v1__metadata_request__descriptor,
            &err);
    if (st == JS_OK)
        st = keys ? fetch_keys_pack(c, caller, &buf, &len, &err)
                  : metadata_pack(caller, &buf, &len, &err);
    js_decision *d = &c->d;
    js_decision_init(d);
    if (st != JS_OK)
        js_decision_fail(d, &err);
    js_reqlog log = rpc_reqlog_of(method, c->identity, c->peer, d, c->t0_us);
    /* kube-apiserver calls FetchKeys periodically and whenever it meets an
     * unknown kid: its log lines are kept within a per-caller budget
     * (metrics count all). */
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(c->identity, c->peer, key, sizeof(key));
    if (js_denials_admit(c->w->srv->quiet, key, js_mono_ms()))
        js_reqlog_emit(&log);
    js_metrics_call(c->w->srv->metrics, method, c->identity, d);
    rpc_reply_decision(c, d, buf, len); /* c may be gone after this */
    free(buf);
}

void rpc_handle_k8s(call_ctx *c)
{
    if (c->k8s == K8S_V1_SIGN || c->k8s == K8S_V1ALPHA1_SIGN)
        rpc_sign_run(c, &k_k8s_sign);
    else
        k8s_read_call(c);
}
