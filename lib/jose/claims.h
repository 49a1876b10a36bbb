/*
 * claims.h - strict parsing of a caller's claim set and the claims the server
 * owns (RFC 7519 §4.1).
 *
 * Parsing is deliberately stricter than RFC 8259 requires: a JSON object at
 * top level, valid UTF-8, no NUL in strings, no duplicate member names (RFC
 * 7519 §4 says a JWT with duplicates must be rejected or use the last one;
 * checkers that disagree on which is "the" aud is a classic smuggling trick),
 * at most CLAIMS_MAX_BYTES and CLAIMS_MAX_DEPTH levels of nesting.
 *
 * The server owns iss, iat, nbf and jti; a caller that sets one gets
 * JS_EINVAL. exp is the caller's to ask for within its lifetime limit.
 */
#ifndef JS_CLAIMS_H
#define JS_CLAIMS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define CLAIMS_MAX_BYTES 16384
#define CLAIMS_MAX_DEPTH 16
/* 128 random bits, base64url: 22 characters. */
#define CLAIMS_JTI_BYTES 16
#define CLAIMS_JTI_LEN   22

/*
 * Parses len bytes into a new JSON object (*out, owned by the caller:
 * json_decref). JS_EINVAL with reasons claims.too_large, claims.empty,
 * claims.syntax, claims.utf8, claims.nul, claims.duplicate_member,
 * claims.not_object, claims.depth.
 */
js_status claims_parse(const uint8_t *buf, size_t len, json_t **out, js_err *err) JS_WUR;

/* Nesting depth of a JSON value: scalars 0, {} or [] 1, ... */
size_t claims_depth(const json_t *v);

/* The lifetime rule a caller is held to, in seconds. */
typedef struct claims_lifetime {
    int64_t default_ttl;
    int64_t max_ttl;
    /* The signing key version's window (keystate.h: a token never outlives
     * its key version's publication): exp is capped, silently, to
     * now + window. 0 = no cap. */
    int64_t window;
} claims_lifetime;

/*
 * Applies the server's rules to a parsed claim set, in place:
 *  - iss, iat, nbf, jti set by the caller -> JS_EINVAL claims.reserved;
 *  - exp, if present, must be an integer NumericDate (RFC 7519 §2) greater
 *    than now (else JS_EINVAL claims.exp_type / claims.exp_past) and at most
 *    now + max_ttl (else JS_EDENIED claims.exp_too_far); absent: now + default_ttl;
 *    then at most now + window when a window is given;
 *  - sets iss, iat = now, exp and jti.
 * A rule failure leaves the claim set unchanged (out of memory may not).
 */
js_status claims_apply_server(json_t *claims, const char *issuer, int64_t now,
                              const claims_lifetime *life, const char *jti, int64_t *exp_out,
                              js_err *err) JS_WUR;

/* A cnf member's value: base64url (no padding) of a SHA-256, 43 characters. */
#define CLAIMS_CNF_THUMBPRINT_BYTES 32
#define CLAIMS_CNF_THUMBPRINT_LEN   43

/*
 * The shape of a cnf (confirmation) claim, RFC 7800 §3.1: a JSON object with
 * exactly one member, either "x5t#S256" (RFC 8705 §3.1: the SHA-256 of the
 * client certificate, mTLS-bound) or "jkt" (RFC 9449 §6.1: the RFC 7638
 * SHA-256 thumbprint of the DPoP key), whose value is the canonical
 * base64url (no padding, zero trailing bits) of exactly 32 bytes, i.e. 43
 * characters. Any other member (RFC 7800's jwk, jwe, kid included) is
 * refused: the signer cannot check them, and a verifier that ignores an
 * unknown confirmation method would accept the token as a bearer token.
 * JS_EINVAL claims.cnf naming the rule broken; JS_OK otherwise.
 */
js_status claims_cnf_check(const json_t *cnf, js_err *err) JS_WUR;

/* Fills jti (CLAIMS_JTI_LEN + 1 bytes) with 128 random bits, base64url. */
js_status claims_new_jti(char jti[CLAIMS_JTI_LEN + 1], js_err *err) JS_WUR;

#endif
