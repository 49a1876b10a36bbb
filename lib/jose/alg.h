/*
 * alg.h - the JWS algorithms jwt-signer can sign with (RFC 7518 §3, RFC 8037).
 *
 * All five are generated and signed inside the token (lib/hsm/hsm.c):
 * ES256, ES384 (ECDSA, JOSE r||s), RS256 (PKCS#1 v1.5), PS256 (RSASSA-PSS,
 * MGF1-SHA256, salt 32) with 2048- or 3072-bit keys, and EdDSA (Ed25519).
 */
#ifndef JS_ALG_H
#define JS_ALG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum js_alg {
    JS_ALG_NONE = 0, /* never valid; "none" is never accepted (RFC 8725 §3.1) */
    JS_ALG_ES256,
    JS_ALG_ES384,
    JS_ALG_RS256,
    JS_ALG_PS256,
    JS_ALG_EDDSA,
} js_alg;

/* Maximum signature size over every algorithm (RSA-4096 = 512 bytes). */
#define JS_SIG_MAX 512

/* The JOSE "alg" name, e.g. "ES256"; NULL for JS_ALG_NONE. */
const char *js_alg_name(js_alg alg);

/* Parses a JOSE alg name (exact, case-sensitive). Returns JS_ALG_NONE if unknown. */
js_alg js_alg_from_name(const char *name);

/* True when this build can generate keys for and sign with alg. */
bool js_alg_supported(js_alg alg);

#endif
