/*
 * jws.c - compact JWS assembly and OpenSSL verification.
 *
 * Verification exists for the signer's start-up self-test (every key must
 * produce a signature OpenSSL accepts before we serve) and for tests; the
 * signer never needs to verify tokens on the request path.
 */
#include "jws.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "b64url.h"

char *jws_header_json(js_alg alg, const char *kid)
{
    const char *name = js_alg_name(alg);
    if (name == NULL || kid == NULL)
        return NULL;
    /* RFC 7515 §4.1: alg is required; typ "JWT" per RFC 7519 §5.1; kid
     * selects the JWK (RFC 7515 §4.1.4). Member order is fixed. */
    json_t *h = json_pack("{s:s, s:s, s:s}", "alg", name, "typ", "JWT", "kid", kid);
    if (h == NULL)
        return NULL;
    char *s = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    return s;
}

/* Signs tok[0..input_len) (the signing input) and appends "." and the
 * base64url signature; tok has room for it (cap). Frees tok on failure. */
static js_status sign_and_append(char *tok, size_t input_len, size_t cap, jws_sign_fn sign,
                                 void *sign_ctx, char **out, js_err *err)
{
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    js_status st = sign(sign_ctx, (const uint8_t *)tok, input_len, sig, sizeof(sig), &sig_len, err);
    if (st == JS_OK && (sig_len == 0 || sig_len > sizeof(sig)))
        st = js_err_set(err, JS_EINTERNAL, JS_R_JWS_SIG_LENGTH, "signature of invalid length %zu",
                        sig_len);
    if (st != JS_OK) {
        free(tok);
        return st;
    }
    size_t off = input_len;
    tok[off++] = '.';
    off += b64url_encode(sig, sig_len, tok + off, cap - off);
    tok[off] = '\0';
    *out = tok;
    return JS_OK;
}

js_status jws_sign_compact(const char *header_json, size_t header_len, const char *payload_json,
                           size_t payload_len, jws_sign_fn sign, void *sign_ctx, char **out,
                           js_err *err)
{
    *out = NULL;
    size_t hlen = B64URL_ENCODED_LEN(header_len);
    size_t plen = B64URL_ENCODED_LEN(payload_len);
    size_t slen_max = B64URL_ENCODED_LEN(JS_SIG_MAX);
    size_t cap = hlen + 1 + plen + 1 + slen_max + 1;
    char *tok = malloc(cap);
    JS_ENSURE_ALLOC(tok, err);
    size_t off = b64url_encode((const uint8_t *)header_json, header_len, tok, cap);
    tok[off++] = '.';
    off += b64url_encode((const uint8_t *)payload_json, payload_len, tok + off, cap - off);
    return sign_and_append(tok, off, cap, sign, sign_ctx, out, err);
}

js_status jws_sign_compact_encoded(const char *header_json, size_t header_len,
                                   const char *payload_b64, size_t payload_b64_len,
                                   jws_sign_fn sign, void *sign_ctx, char **out, js_err *err)
{
    *out = NULL;
    size_t hlen = B64URL_ENCODED_LEN(header_len);
    size_t slen_max = B64URL_ENCODED_LEN(JS_SIG_MAX);
    size_t cap = hlen + 1 + payload_b64_len + 1 + slen_max + 1;
    char *tok = malloc(cap);
    JS_ENSURE_ALLOC(tok, err);
    size_t off = b64url_encode((const uint8_t *)header_json, header_len, tok, cap);
    tok[off++] = '.';
    /* The payload segment exactly as the caller built it (k8s.io/externaljwt:
     * "must not be encoded again"). */
    memcpy(tok + off, payload_b64, payload_b64_len);
    off += payload_b64_len;
    return sign_and_append(tok, off, cap, sign, sign_ctx, out, err);
}

/* r||s (RFC 7518 §3.4) -> DER ECDSA-Sig-Value, which OpenSSL verifies. */
static js_status ecdsa_jose_to_der(const uint8_t *sig, size_t sig_len, size_t coord, uint8_t **der,
                                   int *der_len, js_err *err)
{
    JS_ENSURE(sig_len == 2 * coord, err, JS_EINVAL, JS_R_JWS_BAD_SIGNATURE,
              "ECDSA signature is %zu bytes; expected %zu (r||s)", sig_len, 2 * coord);
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)coord, NULL);
    BIGNUM *s = BN_bin2bn(sig + coord, (int)coord, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return js_err_oom(err);
    }
    *der = NULL;
    *der_len = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    JS_ENSURE(*der_len > 0, err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    return JS_OK;
}

js_status jws_verify(js_alg alg, EVP_PKEY *pub, const uint8_t *input, size_t input_len,
                     const uint8_t *sig, size_t sig_len, js_err *err)
{
    const EVP_MD *md = NULL;
    size_t coord = 0;
    switch (alg) {
    case JS_ALG_ES256:
        md = EVP_sha256();
        coord = 32;
        break;
    case JS_ALG_ES384:
        md = EVP_sha384();
        coord = 48;
        break;
    case JS_ALG_RS256:
    case JS_ALG_PS256:
        md = EVP_sha256();
        break;
    case JS_ALG_EDDSA:
        md = NULL; /* Ed25519 hashes internally (RFC 8032) */
        break;
    case JS_ALG_NONE:
    default:
        return js_err_set(err, JS_EINVAL, JS_R_JWS_ALG, "cannot verify this algorithm");
    }

    uint8_t *der = NULL;
    int der_len = 0;
    const uint8_t *vsig = sig;
    size_t vsig_len = sig_len;
    if (coord != 0) {
        JS_GUARD(ecdsa_jose_to_der(sig, sig_len, coord, &der, &der_len, err));
        vsig = der;
        vsig_len = (size_t)der_len;
    }

    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = mctx != NULL && EVP_DigestVerifyInit(mctx, &pctx, md, NULL, pub) == 1;
    if (ok && alg == JS_ALG_PS256) {
        /* RFC 7518 §3.5: MGF1 with SHA-256, salt length = hash length. */
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1;
    }
    int valid = ok && EVP_DigestVerify(mctx, vsig, vsig_len, input, input_len) == 1;
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    if (!valid)
        ERR_clear_error(); /* leave no stale OpenSSL error for the next caller */
    JS_ENSURE(ok, err, JS_EINTERNAL, JS_R_JWS_VERIFY_SETUP, "cannot set up signature verification");
    JS_ENSURE(valid, err, JS_EINVAL, JS_R_JWS_BAD_SIGNATURE, "signature does not verify");
    return JS_OK;
}
