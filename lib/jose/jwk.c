/*
 * jwk.c - public key -> JWK (RFC 7517, RFC 7518 §6, RFC 8037 §2) and the
 * RFC 7638 thumbprint used as "kid".
 *
 * Using the thumbprint as kid means the key id is derived from the key itself:
 * a verifier can recompute it, and two different keys never share a kid.
 */
#include "jwk.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/sha.h>

#include "b64url.h"

#define JWK_COORD_MAX 66   /* P-521 coordinate bytes; bigger than we use */
#define JWK_RSA_MAX   1024 /* 8192-bit modulus */

static js_status set_b64(json_t *obj, const char *name, const uint8_t *buf, size_t n, js_err *err)
{
    char *s = b64url_encode_alloc(buf, n);
    JS_ENSURE_ALLOC(s, err);
    int rc = json_object_set_new(obj, name, json_string(s));
    free(s);
    JS_ENSURE(rc == 0, err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    return JS_OK;
}

static js_status set_bn(json_t *obj, const char *name, const EVP_PKEY *pk, const char *param,
                        int pad, js_err *err)
{
    BIGNUM *bn = NULL;
    uint8_t buf[JWK_RSA_MAX];
    JS_ENSURE(EVP_PKEY_get_bn_param(pk, param, &bn) == 1, err, JS_EINTERNAL, JS_R_JWK_PARAM,
              "public key has no parameter %s", param);
    int len = pad > 0 ? pad : BN_num_bytes(bn);
    if (len <= 0 || (size_t)len > sizeof(buf) || BN_bn2binpad(bn, buf, len) != len) {
        BN_free(bn);
        return js_err_set(err, JS_EINTERNAL, JS_R_JWK_PARAM, "public key parameter %s too large",
                          param);
    }
    BN_free(bn);
    return set_b64(obj, name, buf, (size_t)len, err);
}

static js_status jwk_members(const EVP_PKEY *pk, js_alg alg, json_t *jwk, js_err *err)
{
    switch (alg) {
    case JS_ALG_ES256:
    case JS_ALG_ES384: {
        /* RFC 7518 §6.2.1.2: coordinates are padded to the curve size. */
        const char *crv = alg == JS_ALG_ES256 ? "P-256" : "P-384";
        const char *group = alg == JS_ALG_ES256 ? "prime256v1" : "secp384r1";
        int size = alg == JS_ALG_ES256 ? 32 : 48;
        char gname[32] = {0};
        size_t glen = 0;
        JS_ENSURE(EVP_PKEY_is_a(pk, "EC") &&
                      EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, gname,
                                                     sizeof(gname), &glen) == 1 &&
                      strcmp(gname, group) == 0,
                  err, JS_ECONFIG, JS_R_JWK_KEY_TYPE, "%s needs an EC key on %s", js_alg_name(alg),
                  crv);
        JS_ENSURE(json_object_set_new(jwk, "kty", json_string("EC")) == 0 &&
                      json_object_set_new(jwk, "crv", json_string(crv)) == 0,
                  err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        JS_GUARD(set_bn(jwk, "x", pk, OSSL_PKEY_PARAM_EC_PUB_X, size, err));
        JS_GUARD(set_bn(jwk, "y", pk, OSSL_PKEY_PARAM_EC_PUB_Y, size, err));
        return JS_OK;
    }
    case JS_ALG_RS256:
    case JS_ALG_PS256:
        JS_ENSURE(EVP_PKEY_is_a(pk, "RSA"), err, JS_ECONFIG, JS_R_JWK_KEY_TYPE,
                  "%s needs an RSA key", js_alg_name(alg));
        JS_ENSURE(json_object_set_new(jwk, "kty", json_string("RSA")) == 0, err, JS_EINTERNAL,
                  JS_R_INTERNAL_OOM, "out of memory");
        /* RFC 7518 §6.3.1: unsigned big-endian, no leading zero octets. */
        JS_GUARD(set_bn(jwk, "n", pk, OSSL_PKEY_PARAM_RSA_N, 0, err));
        JS_GUARD(set_bn(jwk, "e", pk, OSSL_PKEY_PARAM_RSA_E, 0, err));
        return JS_OK;
    case JS_ALG_EDDSA: {
        uint8_t raw[32];
        size_t n = sizeof(raw); /* in: the buffer size; out: the key length */
        JS_ENSURE(EVP_PKEY_is_a(pk, "ED25519") && EVP_PKEY_get_raw_public_key(pk, raw, &n) == 1 &&
                      n == sizeof(raw),
                  err, JS_ECONFIG, JS_R_JWK_KEY_TYPE, "EdDSA needs an Ed25519 key");
        JS_ENSURE(json_object_set_new(jwk, "kty", json_string("OKP")) == 0 &&
                      json_object_set_new(jwk, "crv", json_string("Ed25519")) == 0,
                  err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        return set_b64(jwk, "x", raw, n, err); /* RFC 8037 §2 */
    }
    case JS_ALG_NONE:
    default:
        return js_err_set(err, JS_ECONFIG, JS_R_JWK_ALG, "no JWK form for this algorithm");
    }
}

js_status jwk_from_pkey(const EVP_PKEY *pk, js_alg alg, const char *kid, json_t **out, js_err *err)
{
    *out = NULL;
    json_t *jwk = json_object();
    JS_ENSURE_ALLOC(jwk, err);
    js_status st = jwk_members(pk, alg, jwk, err);
    if (st == JS_OK && (json_object_set_new(jwk, "use", json_string("sig")) != 0 ||
                        json_object_set_new(jwk, "alg", json_string(js_alg_name(alg))) != 0 ||
                        (kid != NULL && json_object_set_new(jwk, "kid", json_string(kid)) != 0)))
        st = js_err_oom(err);
    if (st != JS_OK) {
        json_decref(jwk);
        return st;
    }
    *out = jwk;
    return JS_OK;
}

js_status jwk_thumbprint(const json_t *jwk, char kid[JWK_KID_LEN + 1], js_err *err)
{
    /* RFC 7638 §3.2: the required members of each key type. */
    static const struct {
        const char *kty;
        const char *members[3];
    } k_required[] = {
        {"EC", {"crv", "x", "y"}},
        {"RSA", {"e", "n", NULL}},
        {"OKP", {"crv", "x", NULL}},
    };
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    JS_ENSURE(kty != NULL, err, JS_EINVAL, JS_R_JWK_KTY, "JWK has no kty");
    json_t *canon = json_object();
    JS_ENSURE_ALLOC(canon, err);
    js_status st = js_err_set(err, JS_EINVAL, JS_R_JWK_KTY, "unsupported kty '%s'", kty);
    for (size_t i = 0; i < sizeof(k_required) / sizeof(k_required[0]); i++) {
        if (strcmp(k_required[i].kty, kty) != 0)
            continue;
        st = JS_OK;
        json_object_set_new(canon, "kty", json_string(kty));
        for (size_t m = 0; m < 3 && k_required[i].members[m] != NULL; m++) {
            const char *name = k_required[i].members[m];
            json_t *v = json_object_get(jwk, name);
            if (!json_is_string(v)) {
                st = js_err_set(err, JS_EINVAL, JS_R_JWK_MEMBER, "JWK lacks string member '%s'",
                                name);
                break;
            }
            json_object_set(canon, name, v);
        }
        break;
    }
    char *text = NULL;
    if (st == JS_OK) {
        /* §3.3: lexicographic member order, no whitespace. Member values are
         * base64url or fixed names, so JSON escaping cannot differ. */
        text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
        if (text == NULL)
            st = js_err_oom(err);
    }
    json_decref(canon);
    if (st != JS_OK)
        return st;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)text, strlen(text), digest);
    free(text);
    b64url_encode(digest, sizeof(digest), kid, JWK_KID_LEN + 1);
    return JS_OK;
}
