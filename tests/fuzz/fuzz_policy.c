/*
 * fuzz_policy.c - libFuzzer target for the policy loader: any input must be
 * loaded or rejected cleanly (never crash or leak), a rejection must carry a
 * "policy."/"internal." reason, and a loaded policy must describe itself and
 * evaluate a few claim sets for every caller without breaking its own rules
 * (an allowed token expires within the caller's lifetime and carries the
 * server's claims).
 */
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
    "a",
    "x",
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
    js_policy_free(p);
    return 0;
}
