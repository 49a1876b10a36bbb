/*
 * test_jws.c - JWS compact assembly (RFC 7515), ES256 signatures in JOSE form
 * (RFC 7518 §3.4) checked with OpenSSL directly, and JWK thumbprints (RFC 7638).
 * jws_sign_compact_encoded (Kubernetes' ExternalJWTSigner): the caller's
 * base64url payload is signed and returned byte for byte, never re-encoded;
 * it gives the same token as jws_sign_compact over the decoded payload; a
 * failing or misbehaving signer leaves no token.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "b64url.h"
#include "jwk.h"
#include "jws.h"

/* RFC 7638 §3.1: the example RSA key and its thumbprint. */
static void test_thumbprint_rfc7638(void **state)
{
    (void)state;
    json_t *jwk = json_pack(
        "{s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "n",
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
        "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdk"
        "t-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
        "kEgU8awapJzKnqDKgw",
        "e", "AQAB", "alg", "RS256", "kid", "2011-04-29");
    assert_non_null(jwk);
    char kid[JWK_KID_LEN + 1];
    assert_int_equal(jwk_thumbprint(jwk, kid, NULL), JS_OK);
    assert_string_equal(kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    json_decref(jwk);
}

static void test_thumbprint_rejects(void **state)
{
    (void)state;
    js_err err;
    char kid[JWK_KID_LEN + 1];
    json_t *nokty = json_pack("{s:s}", "x", "abc");
    assert_int_equal(jwk_thumbprint(nokty, kid, &err), JS_EINVAL);
    json_t *ec_missing_y = json_pack("{s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", "a");
    assert_int_equal(jwk_thumbprint(ec_missing_y, kid, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "jwk.member");
    json_t *oct = json_pack("{s:s, s:s}", "kty", "oct", "k", "secret");
    assert_int_equal(jwk_thumbprint(oct, kid, &err), JS_EINVAL);
    json_decref(nokty);
    json_decref(ec_missing_y);
    json_decref(oct);
}

/* Extra members (alg, use, kid) never change the thumbprint (§3.2). */
static void test_thumbprint_ignores_optional_members(void **state)
{
    (void)state;
    json_t *a =
        json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x", "AAA", "y", "BBB");
    json_t *b = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "y", "BBB", "use", "sig", "x", "AAA",
                          "crv", "P-256", "kty", "EC", "alg", "ES256");
    char ka[JWK_KID_LEN + 1], kb[JWK_KID_LEN + 1];
    assert_int_equal(jwk_thumbprint(a, ka, NULL), JS_OK);
    assert_int_equal(jwk_thumbprint(b, kb, NULL), JS_OK);
    assert_string_equal(ka, kb);
    json_decref(a);
    json_decref(b);
}

static EVP_PKEY *gen_p256(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* Test signer: OpenSSL ECDSA over SHA-256, converted DER -> r||s. */
static js_status openssl_es256(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig,
                               size_t cap, size_t *sig_len, js_err *err)
{
    EVP_PKEY *pk = ctx;
    uint8_t der[128];
    size_t der_len = sizeof(der);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, pk) == 1 &&
             EVP_DigestSign(m, der, &der_len, in, in_len) == 1;
    EVP_MD_CTX_free(m);
    JS_ENSURE(ok && cap >= 64, err, JS_EINTERNAL, JS_R_HSM_SIGN, "sign failed");
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    JS_ENSURE(es != NULL, err, JS_EINTERNAL, JS_R_HSM_SIGN, "bad DER");
    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
    ECDSA_SIG_free(es);
    *sig_len = 64;
    return JS_OK;
}

/* Independent check: r||s -> DER, EVP_DigestVerify. Returns 1 if valid. */
static int openssl_verify_jose(EVP_PKEY *pk, const char *input, size_t input_len,
                               const uint8_t *sig)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    uint8_t *der = NULL;
    int der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pk) == 1 &&
             EVP_DigestVerify(m, der, (size_t)der_len, (const uint8_t *)input, input_len) == 1;
    EVP_MD_CTX_free(m);
    OPENSSL_free(der);
    return ok;
}

static void test_header_is_fixed(void **state)
{
    (void)state;
    char *h = jws_header_json(JS_ALG_ES256, "KID123");
    assert_string_equal(h, "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"KID123\"}");
    free(h);
    assert_null(jws_header_json(JS_ALG_NONE, "k"));
}

static void test_es256_compact_verifies(void **state)
{
    (void)state;
    EVP_PKEY *pk = gen_p256();
    assert_non_null(pk);
    const char *header = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"k\"}";
    const char *payload = "{\"sub\":\"alice\",\"aud\":\"api\"}";
    char *tok = NULL;
    assert_int_equal(jws_sign_compact(header, strlen(header), payload, strlen(payload),
                                      openssl_es256, pk, &tok, NULL),
                     JS_OK);
    /* Three parts, the first two are exactly the encoded header and payload. */
    char *dot1 = strchr(tok, '.');
    char *dot2 = strrchr(tok, '.');
    assert_non_null(dot1);
    assert_true(dot2 > dot1);
    char enc_h[128];
    b64url_encode((const uint8_t *)header, strlen(header), enc_h, sizeof(enc_h));
    assert_int_equal((size_t)(dot1 - tok), strlen(enc_h));
    assert_memory_equal(tok, enc_h, strlen(enc_h));

    uint8_t sig[128];
    size_t sig_len = 0;
    assert_int_equal(b64url_decode(dot2 + 1, strlen(dot2 + 1), sig, sizeof(sig), &sig_len, NULL),
                     JS_OK);
    assert_int_equal(sig_len, 64); /* JOSE r||s, not DER */
    size_t input_len = (size_t)(dot2 - tok);
    assert_true(openssl_verify_jose(pk, tok, input_len, sig));
    assert_int_equal(jws_verify(JS_ALG_ES256, pk, (uint8_t *)tok, input_len, sig, 64, NULL), JS_OK);

    /* A flipped byte anywhere in the signed input or the signature fails. */
    for (size_t i = 0; i < input_len; i += 7) {
        tok[i] ^= 0x01;
        assert_false(openssl_verify_jose(pk, tok, input_len, sig));
        tok[i] ^= 0x01;
    }
    for (size_t i = 0; i < 64; i++) {
        sig[i] ^= 0x80;
        js_err err;
        assert_false(openssl_verify_jose(pk, tok, input_len, sig));
        assert_int_equal(jws_verify(JS_ALG_ES256, pk, (uint8_t *)tok, input_len, sig, 64, &err),
                         JS_EINVAL);
        sig[i] ^= 0x80;
    }
    /* Wrong length (a DER signature, say) is refused, not misparsed. */
    js_err err;
    assert_int_equal(jws_verify(JS_ALG_ES256, pk, (uint8_t *)tok, input_len, sig, 63, &err),
                     JS_EINVAL);
    free(tok);
    EVP_PKEY_free(pk);
}

static js_status failing_signer(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig,
                                size_t cap, size_t *sig_len, js_err *err)
{
    (void)ctx, (void)in, (void)in_len, (void)sig, (void)cap, (void)sig_len;
    return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_SIGN, "token gone");
}

static void test_no_partial_token_on_sign_failure(void **state)
{
    (void)state;
    char *tok = (char *)"sentinel";
    js_err err;
    assert_int_equal(jws_sign_compact("{}", 2, "{}", 2, failing_signer, NULL, &tok, &err),
                     JS_EUNAVAIL);
    assert_null(tok);
    assert_string_equal(js_reason_name(err.reason), "hsm.sign");
}

/* ---- jws_sign_compact_encoded ---------------------------------------------------- */

/* An RS256 (RSASSA-PKCS1-v1_5, RFC 7518 §3.3) signer: deterministic, so two
 * assemblies of the same input give the same token. Records the signing input
 * it was handed. */
typedef struct rs256_ctx {
    EVP_PKEY *pk;
    char seen[1024];
    size_t seen_len;
    int calls;
} rs256_ctx;

static js_status openssl_rs256(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig,
                               size_t cap, size_t *sig_len, js_err *err)
{
    rs256_ctx *c = ctx;
    c->calls++;
    c->seen_len = in_len < sizeof(c->seen) ? in_len : sizeof(c->seen);
    memcpy(c->seen, in, c->seen_len);
    size_t n = cap;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, c->pk) == 1 &&
             EVP_DigestSign(m, sig, &n, in, in_len) == 1;
    EVP_MD_CTX_free(m);
    JS_ENSURE(ok, err, JS_EINTERNAL, JS_R_HSM_SIGN, "sign failed");
    *sig_len = n;
    return JS_OK;
}

#define KUBE_HEADER "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k8s-kid\"}"
/* Shaped like kube-apiserver's claim set (KEP-740), compact JSON. */
#define KUBE_PAYLOAD                                                                               \
    "{\"aud\":[\"https://kubernetes.default.svc\"],\"exp\":1700003600,\"iat\":1700000000,"         \
    "\"iss\":\"https://issuer.example\",\"jti\":\"0b7a5e3c-6f1d-4e1a-9c5b-2f4e8d9a1b3c\","         \
    "\"kubernetes.io\":{\"namespace\":\"ns\",\"serviceaccount\":{\"name\":\"sa\",\"uid\":\"u\"}}," \
    "\"nbf\":1700000000,\"sub\":\"system:serviceaccount:ns:sa\"}"

/* Splits a compact token at its two dots; asserts there are exactly two. */
static void split3(const char *tok, size_t *dot1, size_t *dot2)
{
    const char *a = strchr(tok, '.');
    assert_non_null(a);
    const char *b = strchr(a + 1, '.');
    assert_non_null(b);
    assert_null(strchr(b + 1, '.'));
    *dot1 = (size_t)(a - tok);
    *dot2 = (size_t)(b - tok);
}

static EVP_PKEY *gen_rsa(void)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    assert_non_null(pk);
    return pk;
}

/* The payload segment is the caller's text byte for byte, the header segment
 * is base64url(header), the signer saw exactly header_b64 "." payload_b64
 * (RFC 7515 §5.1 step 5), and the signature verifies over that. */
static void test_encoded_payload_verbatim(void **state)
{
    (void)state;
    rs256_ctx c = {.pk = gen_rsa()};
    char payload_b64[1024], header_b64[128], input[1200];
    b64url_encode((const uint8_t *)KUBE_PAYLOAD, strlen(KUBE_PAYLOAD), payload_b64,
                  sizeof(payload_b64));
    b64url_encode((const uint8_t *)KUBE_HEADER, strlen(KUBE_HEADER), header_b64,
                  sizeof(header_b64));
    int n = snprintf(input, sizeof(input), "%s.%s", header_b64, payload_b64);
    assert_true(n > 0 && (size_t)n < sizeof(input));

    char *tok = NULL;
    js_err err;
    assert_int_equal(jws_sign_compact_encoded(KUBE_HEADER, strlen(KUBE_HEADER), payload_b64,
                                              strlen(payload_b64), openssl_rs256, &c, &tok, &err),
                     JS_OK);
    size_t d1, d2;
    split3(tok, &d1, &d2);
    assert_int_equal(d1, strlen(header_b64));
    assert_memory_equal(tok, header_b64, d1);
    assert_int_equal(d2 - d1 - 1, strlen(payload_b64));
    assert_memory_equal(tok + d1 + 1, payload_b64, strlen(payload_b64));
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.seen_len, (size_t)n);
    assert_memory_equal(c.seen, input, (size_t)n);
    assert_memory_equal(tok, input, (size_t)n);

    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    assert_int_equal(
        b64url_decode(tok + d2 + 1, strlen(tok + d2 + 1), sig, sizeof(sig), &sig_len, &err), JS_OK);
    assert_int_equal(sig_len, 256);
    assert_int_equal(
        jws_verify(JS_ALG_RS256, c.pk, (const uint8_t *)input, (size_t)n, sig, sig_len, &err),
        JS_OK);
    /* Over anything else it does not verify: one byte of the payload changed. */
    input[d1 + 5] ^= 0x01;
    assert_int_equal(
        jws_verify(JS_ALG_RS256, c.pk, (const uint8_t *)input, (size_t)n, sig, sig_len, &err),
        JS_EINVAL);
    free(tok);
    EVP_PKEY_free(c.pk);
}

/* The payload is copied, not decoded and encoded again: text that a decoder
 * would refuse or normalise (here '=' padding, and characters outside the
 * alphabet) comes out unchanged. Validating it is the caller's job (jws.h). */
static void test_encoded_payload_never_reencoded(void **state)
{
    (void)state;
    EVP_PKEY *pk = gen_p256();
    static const char *const k_segments[] = {"eyJhIjoxfQ==", "e30", "a+b/c", "_-_-", ""};
    for (size_t i = 0; i < sizeof(k_segments) / sizeof(k_segments[0]); i++) {
        const char *seg = k_segments[i];
        char *tok = NULL;
        assert_int_equal(
            jws_sign_compact_encoded("{}", 2, seg, strlen(seg), openssl_es256, pk, &tok, NULL),
            JS_OK);
        /* "{}" is "e30". */
        assert_memory_equal(tok, "e30.", 4);
        assert_memory_equal(tok + 4, seg, strlen(seg));
        assert_int_equal(tok[4 + strlen(seg)], '.');
        const char *sig_b64 = tok + 4 + strlen(seg) + 1;
        assert_int_equal(strlen(sig_b64), 86); /* 64 bytes r||s */
        uint8_t sig[64];
        size_t sig_len = 0;
        assert_int_equal(b64url_decode(sig_b64, 86, sig, sizeof(sig), &sig_len, NULL), JS_OK);
        assert_true(openssl_verify_jose(pk, tok, 4 + strlen(seg), sig));
        free(tok);
    }
    EVP_PKEY_free(pk);
}

/* jws_sign_compact is unchanged by the refactoring: for the same header and
 * payload it gives the same token as jws_sign_compact_encoded over
 * base64url(payload), for every payload length modulo 3. */
static void test_encoded_same_token_as_compact(void **state)
{
    (void)state;
    rs256_ctx c = {.pk = gen_rsa()};
    static const char *const k_payloads[] = {
        "", "{}", "{\"a\":1}", "{\"ab\":1}", "{\"abc\":1}", KUBE_PAYLOAD,
    };
    for (size_t i = 0; i < sizeof(k_payloads) / sizeof(k_payloads[0]); i++) {
        const char *p = k_payloads[i];
        char *a = NULL, *b = NULL;
        char *p_b64 = b64url_encode_alloc((const uint8_t *)p, strlen(p));
        assert_non_null(p_b64);
        assert_int_equal(jws_sign_compact(KUBE_HEADER, strlen(KUBE_HEADER), p, strlen(p),
                                          openssl_rs256, &c, &a, NULL),
                         JS_OK);
        assert_int_equal(jws_sign_compact_encoded(KUBE_HEADER, strlen(KUBE_HEADER), p_b64,
                                                  strlen(p_b64), openssl_rs256, &c, &b, NULL),
                         JS_OK);
        assert_string_equal(a, b);
        /* And the old assembly's layout: b64(header) "." b64(payload) "." b64(sig). */
        size_t d1, d2;
        split3(a, &d1, &d2);
        assert_int_equal(d2 - d1 - 1, strlen(p_b64));
        assert_memory_equal(a + d1 + 1, p_b64, strlen(p_b64));
        assert_int_equal(strlen(a + d2 + 1), B64URL_ENCODED_LEN(256));
        free(a);
        free(b);
        free(p_b64);
    }
    EVP_PKEY_free(c.pk);
}

/* A signer that reports success with a length it cannot have produced. */
static js_status bad_length_signer(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig,
                                   size_t cap, size_t *sig_len, js_err *err)
{
    (void)in, (void)in_len, (void)err;
    memset(sig, 0, cap);
    *sig_len = *(const size_t *)ctx;
    return JS_OK;
}

/* A signer failure or a signature of impossible length: the error comes
 * back, *out is NULL and nothing leaks (ASan builds check the free). */
static void test_encoded_sign_failure(void **state)
{
    (void)state;
    char *tok = (char *)"sentinel";
    js_err err;
    assert_int_equal(jws_sign_compact_encoded("{}", 2, "e30", 3, failing_signer, NULL, &tok, &err),
                     JS_EUNAVAIL);
    assert_null(tok);
    assert_string_equal(js_reason_name(err.reason), "hsm.sign");
    assert_string_equal(err.msg, "token gone");

    static const size_t k_lengths[] = {0, JS_SIG_MAX + 1, SIZE_MAX};
    for (size_t i = 0; i < sizeof(k_lengths) / sizeof(k_lengths[0]); i++) {
        size_t len = k_lengths[i];
        tok = (char *)"sentinel";
        js_err_clear(&err);
        assert_int_equal(
            jws_sign_compact_encoded("{}", 2, "e30", 3, bad_length_signer, &len, &tok, &err),
            JS_EINTERNAL);
        assert_null(tok);
        assert_int_equal(err.reason, JS_R_JWS_SIG_LENGTH);
        /* The same for the old entry point, which shares the code. */
        tok = (char *)"sentinel";
        assert_int_equal(jws_sign_compact("{}", 2, "{}", 2, bad_length_signer, &len, &tok, &err),
                         JS_EINTERNAL);
        assert_null(tok);
        assert_int_equal(err.reason, JS_R_JWS_SIG_LENGTH);
    }
}

static void test_jwk_from_ec_key(void **state)
{
    (void)state;
    EVP_PKEY *pk = gen_p256();
    json_t *jwk = NULL;
    assert_int_equal(jwk_from_pkey(pk, JS_ALG_ES256, "kid-1", &jwk, NULL), JS_OK);
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
    assert_string_equal(json_string_value(json_object_get(jwk, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
    assert_string_equal(json_string_value(json_object_get(jwk, "kid")), "kid-1");
    /* Coordinates are 32 bytes each: 43 base64url characters. */
    assert_int_equal(strlen(json_string_value(json_object_get(jwk, "x"))), 43);
    assert_int_equal(strlen(json_string_value(json_object_get(jwk, "y"))), 43);
    assert_null(json_object_get(jwk, "d")); /* never a private member */
    json_decref(jwk);
    /* An EC key offered as RS256 is refused. */
    js_err err;
    assert_int_equal(jwk_from_pkey(pk, JS_ALG_RS256, NULL, &jwk, &err), JS_ECONFIG);
    assert_null(jwk);
    EVP_PKEY_free(pk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thumbprint_rfc7638),
        cmocka_unit_test(test_thumbprint_rejects),
        cmocka_unit_test(test_thumbprint_ignores_optional_members),
        cmocka_unit_test(test_header_is_fixed),
        cmocka_unit_test(test_es256_compact_verifies),
        cmocka_unit_test(test_no_partial_token_on_sign_failure),
        cmocka_unit_test(test_jwk_from_ec_key),
        cmocka_unit_test(test_encoded_payload_verbatim),
        cmocka_unit_test(test_encoded_payload_never_reencoded),
        cmocka_unit_test(test_encoded_same_token_as_compact),
        cmocka_unit_test(test_encoded_sign_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
