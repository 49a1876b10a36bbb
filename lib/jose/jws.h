/*
 * jws.h - JWS compact serialisation (RFC 7515 §7.1) of a JWT (RFC 7519).
 *
 * The protected header is built here, never from caller input: alg, typ and
 * kid only (no jku/jwk/x5u/crit a verifier might be tricked into following).
 * Signing itself is delegated to a callback so that the private key stays in
 * the HSM (production) or in a test's OpenSSL key (unit tests).
 */
#ifndef JS_JWS_H
#define JS_JWS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "alg.h"
#include "err.h"

/*
 * Signs the JWS signing input (ASCII(b64(header) || '.' || b64(payload)),
 * RFC 7515 §5.1 step 5) and writes the JWS signature octets (for ECDSA the
 * r||s form of RFC 7518 §3.4) to sig.
 */
typedef js_status (*jws_sign_fn)(void *ctx, const uint8_t *input, size_t input_len, uint8_t *sig,
                                 size_t sig_cap, size_t *sig_len, js_err *err);

/* The protected header JSON: {"alg":...,"typ":"JWT","kid":...}; malloc'd. */
char *jws_header_json(js_alg alg, const char *kid);

/*
 * Assembles header.payload.signature. header_json and payload_json are the
 * exact bytes to encode. *out is malloc'd and NUL-terminated; nothing is
 * returned unless the whole token was built.
 */
js_status jws_sign_compact(const char *header_json, size_t header_len, const char *payload_json,
                           size_t payload_len, jws_sign_fn sign, void *sign_ctx, char **out,
                           js_err *err) JS_WUR;

/*
 * The same for a payload segment that is already base64url text
 * (payload_b64, copied as is into the signing input, never re-encoded): for
 * Kubernetes' ExternalJWTSigner, whose caller built the payload. The caller
 * has checked that it is canonical base64url of the claims it validated.
 */
js_status jws_sign_compact_encoded(const char *header_json, size_t header_len,
                                   const char *payload_b64, size_t payload_b64_len,
                                   jws_sign_fn sign, void *sign_ctx, char **out,
                                   js_err *err) JS_WUR;

/*
 * Verifies JWS signature octets over input with a public key, with OpenSSL,
 * for alg. For ECDSA, sig is r||s of exactly twice the curve size.
 * JS_OK when valid; JS_EINVAL "jws.bad_signature" when not.
 */
js_status jws_verify(js_alg alg, EVP_PKEY *pub, const uint8_t *input, size_t input_len,
                     const uint8_t *sig, size_t sig_len, js_err *err) JS_WUR;

#endif
