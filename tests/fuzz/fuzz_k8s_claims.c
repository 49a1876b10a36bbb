/*
 * fuzz_k8s_claims.c - libFuzzer target for the payload of Kubernetes'
 * ExternalJWTSigner Sign request (SignJWTRequest.claims): the input is that
 * base64url text, taken through the path js_service_decide_k8s takes it
 * (service.c, whose helper is static): the length limit, strict base64url
 * decoding, claims_parse and js_policy_validate for the unix: callers of a
 * fixed policy, then jws_sign_compact_encoded with a fake signer. Never a
 * crash or a leak; a payload that decodes is the one canonical encoding of
 * its bytes; a refusal zeroes the result and carries a b64url./claims./
 * policy. reason; a claim set that validates has the policy's issuer, a jti
 * of 1..JS_POLICY_JTI_MAX printable characters, iat/exp as in the JSON, exp
 * in the future and within max_ttl and the key window; and the token signed
 * carries the payload byte for byte.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"
#include "claims.h"
#include "jws.h"
#include "policy.h"
#include "service.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() naming the broken rule, so a replayed finding says what it broke. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_k8s_claims.c:%d: %s\n", __LINE__, #cond);                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define NOW    INT64_C(1700000000)
#define WINDOW INT64_C(3000) /* the signing key version's window, seconds */
#define ISSUER "https://issuer.example"

/* Two unix: callers with different rules, and a build-mode one (never
 * validated). */
static const char k_policy[] = "version: 1\n"
                               "issuer: \"" ISSUER "\"\n"
                               "callers:\n"
                               "  - id: unix:uid=1000\n"
                               "    keys: [k8s-es256]\n"
                               "    audiences: [\"https://kubernetes.default.svc\", api]\n"
                               "    max_aud: 2\n"
                               "    max_ttl: 1h\n"
                               "    subject: '^system:serviceaccount:[a-z0-9-]+:[a-z0-9-]+$'\n"
                               "    claims:\n"
                               "      kubernetes.io: {type: object, max_bytes: 512}\n"
                               "  - id: unix:uid=0\n"
                               "    keys: [k8s-rs256, k8s-es384]\n"
                               "    audiences: [a, b]\n"
                               "    max_ttl: 10m\n"
                               "    subject_required: false\n"
                               "    claims:\n"
                               "      s: {type: string, max_bytes: 8}\n"
                               "      n: {type: number}\n"
                               "      b: {type: boolean}\n"
                               "      l: {type: array, max_bytes: 32}\n"
                               "  - id: spiffe://t/app\n"
                               "    keys: [k-app]\n"
                               "    audiences: [app]\n";

static int64_t window(const char *key, void *ctx)
{
    (void)key;
    (void)ctx;
    return WINDOW;
}

/* A fixed 64-byte "signature": the path under test is assembly, not crypto. */
static js_status fake_sign(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig, size_t cap,
                           size_t *sig_len, js_err *err)
{
    (void)ctx, (void)in, (void)in_len, (void)err;
    CHECK(cap >= 64);
    memset(sig, 0xa5, 64);
    *sig_len = 64;
    return JS_OK;
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* The checks on one validated (or refused) claim set of caller c. */
static void check_validated(const js_policy *p, const js_policy_caller *c, const json_t *claims,
                            js_status st, const js_policy_validated *v, const js_err *err,
                            const char *payload, size_t payload_len)
{
    if (st != JS_OK) {
        CHECK(v->key_name == NULL && v->jti == NULL && v->sub == NULL && v->iat == 0 &&
              v->exp == 0);
        const char *r = js_reason_name(err->reason);
        CHECK(has_prefix(r, "claims.") || has_prefix(r, "policy."));
        return;
    }
    const json_t *iss = json_object_get(claims, "iss");
    CHECK(json_is_string(iss) && json_string_length(iss) == strlen(ISSUER) &&
          strcmp(json_string_value(iss), js_policy_issuer(p)) == 0);
    /* jti: the JSON's, 1..JS_POLICY_JTI_MAX printable ASCII, no space; it
     * fits the decision's field (decision.h JS_JTI_MAX). */
    const json_t *jti = json_object_get(claims, "jti");
    CHECK(v->jti != NULL && json_is_string(jti) && v->jti == json_string_value(jti));
    size_t jn = strlen(v->jti);
    CHECK(jn >= 1 && jn <= JS_POLICY_JTI_MAX && jn <= JS_JTI_MAX && jn == json_string_length(jti));
    for (size_t i = 0; i < jn; i++)
        CHECK((unsigned char)v->jti[i] >= 0x21 && (unsigned char)v->jti[i] <= 0x7e);
    /* iat and exp: the JSON's integers, and within every bound. */
    const json_t *iat = json_object_get(claims, "iat"), *exp = json_object_get(claims, "exp");
    CHECK(json_is_integer(iat) && json_integer_value(iat) == v->iat);
    CHECK(json_is_integer(exp) && json_integer_value(exp) == v->exp);
    CHECK(v->exp > NOW);
    CHECK(v->iat <= NOW + JS_K8S_LEEWAY_S);
    CHECK(v->exp <= NOW + WINDOW);
    CHECK(v->iat < v->exp);
    CHECK(v->exp - v->iat <= js_policy_caller_max_ttl(c));
    const json_t *nbf = json_object_get(claims, "nbf");
    CHECK(nbf == NULL ||
          (json_is_integer(nbf) && json_integer_value(nbf) <= v->iat + JS_K8S_LEEWAY_S));
    CHECK(v->key_name != NULL && strcmp(v->key_name, js_policy_caller_default_key(c)) == 0);
    CHECK(json_object_get(claims, "scope") == NULL && json_object_get(claims, "scp") == NULL);

    /* Signed as sent: the middle segment is the payload, byte for byte. */
    static const char k_header[] = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k\"}";
    char *tok = NULL;
    CHECK(jws_sign_compact_encoded(k_header, strlen(k_header), payload, payload_len, fake_sign,
                                   NULL, &tok, NULL) == JS_OK);
    size_t hlen = B64URL_ENCODED_LEN(strlen(k_header));
    CHECK(strlen(tok) == hlen + 1 + payload_len + 1 + B64URL_ENCODED_LEN(64));
    CHECK(tok[hlen] == '.' && memcmp(tok + hlen + 1, payload, payload_len) == 0 &&
          tok[hlen + 1 + payload_len] == '.');
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* service.c k8s_claims: empty and oversize are refused before decoding. */
    if (size == 0 || size > B64URL_ENCODED_LEN(CLAIMS_MAX_BYTES))
        return 0;
    const char *payload = (const char *)data;
    uint8_t *raw = malloc(CLAIMS_MAX_BYTES);
    if (raw == NULL)
        return 0;
    size_t n = 0;
    js_err err = {0};
    if (b64url_decode(payload, size, raw, CLAIMS_MAX_BYTES, &n, &err) != JS_OK) {
        CHECK(has_prefix(js_reason_name(err.reason), "b64url."));
        free(raw);
        return 0;
    }
    /* Strict base64url: the input is the one encoding of what it decodes to,
     * so the token signs exactly the bytes that were validated. */
    char *again = b64url_encode_alloc(raw, n);
    CHECK(again != NULL && strlen(again) == size && memcmp(again, payload, size) == 0);
    free(again);

    json_t *claims = NULL;
    if (claims_parse(raw, n, &claims, &err) != JS_OK) {
        CHECK(claims == NULL && has_prefix(js_reason_name(err.reason), "claims."));
        free(raw);
        return 0;
    }
    free(raw);
    js_policy *p = NULL;
    CHECK(js_policy_load_buffer(k_policy, strlen(k_policy), "fuzz", &p, &err) == JS_OK);
    for (size_t i = 0; i < js_policy_caller_count(p); i++) {
        const js_policy_caller *c = js_policy_caller_at(p, i);
        js_policy_validated v;
        memset(&v, 0xff, sizeof(v)); /* whatever was there is overwritten */
        js_status st =
            js_policy_validate(p, c, claims, NOW, JS_K8S_LEEWAY_S, window, NULL, &v, &err);
        if (js_policy_caller_type(c) != JS_ID_UNIX) {
            /* Build-mode callers never get validate mode. */
            CHECK(st == JS_EINTERNAL && err.reason == JS_R_POLICY_INTERNAL);
            continue;
        }
        check_validated(p, c, claims, st, &v, &err, payload, size);
    }
    js_policy_free(p);
    json_decref(claims);
    return 0;
}
