/*
 * fuzz_policy.c - libFuzzer target for the policy loader: any input must be
 * loaded or rejected cleanly (never crash or leak), a rejection must carry a
 * "policy."/"internal." reason, and a loaded policy must describe itself and
 * evaluate a few claim sets for every caller without breaking its own rules
 * (an allowed token expires within the caller's lifetime and carries the
 * server's claims). Every unix: caller also validates a few pre-built
 * (Kubernetes-shaped) claim sets: one that passes has the policy's issuer,
 * a lifetime within max_ttl (>= 600, a load rule) and the default key; a
 * build-mode caller is never validated.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"
#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const k_identities[] = {
    "spiffe://example.org/login",
    "spiffe://example.org/sso",
    "spiffe://example.org/ns/payments/checkout",
    "spiffe://t/a",
    "dns:reports.internal.example",
    "dns:login.t",
    "cn:Legacy Batch",
    "cn:spiffe://example.org/login",
    "unix:uid=0",
    "unix:uid=1000",
    "a",
    "x",
};

/* Pre-built claim sets; iss is set to the policy's issuer at run time. */
static const char *const k_kube_claims[] = {
    "{\"aud\":[\"a\"],\"exp\":1700003600,\"iat\":1700000000,\"nbf\":1700000000,"
    "\"jti\":\"j-1\",\"sub\":\"system:serviceaccount:ns:sa\",\"kubernetes.io\":{\"namespace\":"
    "\"ns\"}}",
    "{\"aud\":\"https://kubernetes.default.svc\",\"exp\":1700000600,\"iat\":1700000000,"
    "\"jti\":\"j-2\",\"sub\":\"system:serviceaccount:kube-system:default\"}",
    "{\"aud\":\"a\",\"exp\":1700090000,\"iat\":1700000000,\"jti\":\"j-3\"}",
};

static const char *const k_claims[] = {
    "{\"aud\":\"a\",\"sub\":\"123e4567-e89b-12d3-a456-426614174000\"}",
    "{\"aud\":[\"api.example.com\",\"app\"],\"sub\":\"123e4567-e89b-12d3-a456-426614174000\","
    "\"scope\":\"profile email\"}",
    "{\"aud\":\"payments.example.com\",\"scp\":[\"openid\"],\"exp\":1700000100,\"x\":{\"y\":1}}",
};

#define NOW 1700000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    js_policy *p = NULL;
    js_err err = {0};
    if (js_policy_load_buffer((const char *)data, size, "fuzz", &p, &err) != JS_OK) {
        if (p != NULL || (strncmp(js_reason_name(err.reason), "policy.", 7) != 0 &&
                          strncmp(js_reason_name(err.reason), "internal.", 9) != 0))
            abort();
        return 0;
    }
    if (strlen(js_policy_hash_hex(p)) != JS_POLICY_HASH_HEX)
        abort();
    free(js_policy_describe(p));
    for (size_t i = 0; i < js_policy_key_count(p); i++)
        if (js_policy_key_at(p, i) == NULL)
            abort();
    for (size_t i = 0; i < sizeof(k_identities) / sizeof(k_identities[0]); i++) {
        const js_policy_caller *c = js_policy_match(p, k_identities[i]);
        if (c == NULL)
            continue;
        for (size_t j = 0; j < sizeof(k_claims) / sizeof(k_claims[0]); j++) {
            json_t *claims = NULL;
            js_policy_result res;
            if (claims_parse((const uint8_t *)k_claims[j], strlen(k_claims[j]), &claims, &err) !=
                JS_OK)
                abort();
            js_status st = js_policy_evaluate(p, c, claims, "", "AAAAAAAAAAAAAAAAAAAAAA", NOW, NULL,
                                              NULL, &res, &err);
            if (st == JS_OK) {
                if (res.exp <= NOW || res.key_name == NULL || res.scopes == NULL ||
                    json_object_get(res.claims, "iss") == NULL ||
                    json_integer_value(json_object_get(res.claims, "exp")) != res.exp ||
                    js_policy_caller_frozen(c))
                    abort();
            } else if (res.claims != NULL || res.scopes != NULL) {
                abort();
            }
            js_policy_result_clear(&res);
            json_decref(claims);
        }
    }
    for (size_t i = 0; i < js_policy_caller_count(p); i++) {
        const js_policy_caller *c = js_policy_caller_at(p, i);
        const char *dk = js_policy_caller_default_key(c);
        bool dk_listed = false;
        for (size_t k = 0; k < js_policy_caller_key_count(c); k++)
            dk_listed = dk_listed || strcmp(js_policy_caller_key_at(c, k), dk) == 0;
        if (c == NULL || !dk_listed || js_policy_caller_key_at(c, js_policy_caller_key_count(c)))
            abort();
        bool kube = js_policy_caller_type(c) == JS_ID_UNIX;
        if (kube && js_policy_caller_max_ttl(c) < JS_POLICY_KUBE_MIN_MAX_TTL)
            abort();
        for (size_t j = 0; j < sizeof(k_kube_claims) / sizeof(k_kube_claims[0]); j++) {
            json_t *claims = NULL;
            js_policy_validated v;
            if (claims_parse((const uint8_t *)k_kube_claims[j], strlen(k_kube_claims[j]), &claims,
                             &err) != JS_OK)
                abort();
            if (js_policy_issuer(p) != NULL)
                json_object_set_new(claims, "iss", json_string(js_policy_issuer(p)));
            js_status st = js_policy_validate(p, c, claims, NOW, 60, NULL, NULL, &v, &err);
            if (!kube && st != JS_EINTERNAL)
                abort();
            if (st == JS_OK &&
                (v.exp <= NOW || v.exp - v.iat > js_policy_caller_max_ttl(c) || v.key_name != dk ||
                 v.jti == NULL || js_policy_caller_frozen(c) || js_policy_issuer(p) == NULL))
                abort();
            if (st != JS_OK && (v.key_name != NULL || v.jti != NULL || v.exp != 0))
                abort();
            json_decref(claims);
        }
    }
    js_policy_free(p);
    return 0;
}
