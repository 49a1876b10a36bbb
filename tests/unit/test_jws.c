/*
 * test_jws.c - JWS compact assembly (RFC 7515), ES256 signatures in JOSE form
 * (RFC 7518 §3.4) checked with OpenSSL directly, and JWK thumbprints (RFC 7638).
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
