/*
 * introspect.h - RFC 7662 token introspection: did this signer issue this
 * exact token, and does it still stand?
 *
 * A token is active only when ALL of these hold, checked in this order (the
 * first failure is the reason kept for the log, the audit record and the
 * metrics; the caller only ever sees {"active": false}, RFC 7662 §2.2):
 *   malformed      not three base64url segments, a header that is not a
 *                  strict JSON object with string alg and kid, a payload that
 *                  is not a strict claim set with a string jti, or too long;
 *   unknown_kid    no published key version (next, active, retiring) has
 *                  the kid: never ours, or a revoked version;
 *   alg_mismatch   the header's alg is not that key's algorithm (alg none
 *                  included);
 *   bad_signature  the signature does not verify with that key;
 *   expired        (checked here first, on the signed exp) exp + leeway <=
 *                  now: the index forgets expired tokens, so a genuine
 *                  token that merely expired must not raise the alarm below;
 *   unknown_jti    the signature verifies but no token with this jti was
 *                  issued here: a token signed with our key that we never
 *                  released, i.e. the key leaked (the alarm);
 *   hash_mismatch  a token with this jti was issued, but not this one: a
 *                  forgery re-using a real jti;
 *   expired        exp + leeway <= now;
 *   revoked_jti, revoked_sub, revoked_caller  (tokindex.h);
 *   audience_not_allowed  the introspector may only ask about some
 *                  audiences (policy `introspectors`) and the token has none
 *                  of them.
 * Signature before index: an unauthenticated string never costs an index
 * lookup that could be timed, and "unknown_jti" means a valid signature.
 */
#ifndef JS_INTROSPECT_H
#define JS_INTROSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "keyring.h"
#include "tokindex.h"

/* The longest token introspected; a longer one is inactive (malformed)
 * without being decoded. */
#define JS_INTROSPECT_TOKEN_MAX (32 * 1024)

typedef struct js_introspect_input {
    const char *token; /* the compact JWS, as received */
    size_t token_len;
    const char *const *auds; /* the introspector's audiences; naud 0 = any */
    size_t naud;
    int64_t now;
    int64_t leeway; /* seconds past exp a token stays active */
} js_introspect_input;

/* The answer's reason: a closed set, named by js_introspect_why_name (the
 * log line's and the metric's reason label; never told to the caller). */
typedef enum js_introspect_why {
    JS_WHY_ACTIVE,
    JS_WHY_MALFORMED,
    JS_WHY_UNKNOWN_KID,
    JS_WHY_ALG_MISMATCH,
    JS_WHY_BAD_SIGNATURE,
    JS_WHY_EXPIRED,
    JS_WHY_UNKNOWN_JTI,
    JS_WHY_HASH_MISMATCH,
    JS_WHY_REVOKED_JTI,
    JS_WHY_REVOKED_SUB,
    JS_WHY_REVOKED_CALLER,
    JS_WHY_AUDIENCE_NOT_ALLOWED,
    JS_WHY_COUNT
} js_introspect_why;

/* "active", "malformed", "unknown_kid", ... (the names above, lower case). */
const char *js_introspect_why_name(js_introspect_why why);

typedef struct js_introspection {
    bool active;
    js_introspect_why why;
    char kid[128];   /* the header's kid, when readable (log, audit) */
    char jti[129];   /* the payload's jti, when readable (log, audit) */
    js_tok_info tok; /* when active: the index entry (owned) */
} js_introspection;

/* Decides one introspection into *out (cleared first; release with
 * js_introspection_clear). Never fails: every problem is an inactive
 * answer with its reason. kr and ix are borrowed for the call. */
void js_introspect(const js_keyring *kr, js_tokindex *ix, const js_introspect_input *in,
                   js_introspection *out);

void js_introspection_clear(js_introspection *r);

/* The RFC 7662 §2.2 answer as compact JSON (malloc'd; NULL on OOM):
 * {"active":false} when inactive; when active "active", "scope" (if any),
 * "client_id" (the issuing caller), "sub" (if any), "aud", "iss", "exp",
 * "iat", "jti", "token_type" ("DPoP" for a token bound to a DPoP key by
 * cnf.jkt, RFC 9449 §6.2; otherwise "Bearer", also for an mTLS-bound one,
 * RFC 8705 §3.2), and "cnf" when the token is sender-constrained. iss is
 * the policy's issuer. */
char *js_introspection_json(const js_introspection *r, const char *iss);

#endif
