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

/* Fills jti (CLAIMS_JTI_LEN + 1 bytes) with 128 random bits, base64url. */
js_status claims_new_jti(char jti[CLAIMS_JTI_LEN + 1], js_err *err) JS_WUR;

#endif
