/*
 * jwk.h - public keys as JSON Web Keys (RFC 7517) and their thumbprints
 * (RFC 7638), which are our key ids.
 *
 * Only public parameters are ever read: this module cannot emit a private key.
 */
#ifndef JS_JWK_H
#define JS_JWK_H

#include <jansson.h>
#include <openssl/evp.h>

#include "alg.h"
#include "err.h"

/* SHA-256 thumbprint, base64url: 43 characters. */
#define JWK_KID_LEN 43

/*
 * Builds the public JWK of pk for alg: kty and its required members (EC: crv,
 * x, y; RSA: n, e; OKP: crv, x), plus "use":"sig", "alg" and, if kid is not
 * NULL, "kid". *out is a new reference.
 */
js_status jwk_from_pkey(const EVP_PKEY *pk, js_alg alg, const char *kid, json_t **out,
                        js_err *err) JS_WUR;

/*
 * RFC 7638 thumbprint of a JWK: SHA-256 over the required members only, in
 * lexicographic order, no whitespace (§3.2, §3.3), base64url without padding.
 */
js_status jwk_thumbprint(const json_t *jwk, char kid[JWK_KID_LEN + 1], js_err *err) JS_WUR;

#endif
