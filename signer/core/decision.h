/*
 * decision.h - the one value a request ends in.
 *
 * Every request (SignJwt, GetJwks, an Admin call) ends in one js_decision:
 * allow, deny or error, the status, the reason (reasons.def) and the human
 * message, plus, for SignJwt, the token that was built. The reply, the
 * request log line, the audit record and the metrics are all built from this
 * one value, so they cannot disagree about what happened.
 *
 * The kind follows from the status in one place (js_decision_kind_of):
 *   JS_OK                              -> allow
 *   JS_EUNAVAIL, JS_EINTERNAL,
 *   JS_ECONFIG                         -> error (the signer, its HSM or its audit
 *                                         log failed; the caller did nothing wrong)
 *   everything else                    -> deny (the request was refused)
 */
#ifndef JS_DECISION_H
#define JS_DECISION_H

#include <stdbool.h>
#include <stdint.h>

#include "claims.h"
#include "err.h"
#include "jwk.h"
#include "names.h"

typedef enum js_decision_kind {
    JS_DECISION_ALLOW,
    JS_DECISION_DENY,
    JS_DECISION_ERROR,
} js_decision_kind;

#define JS_REQUEST_ID_MAX 128
#define JS_SHA256_HEX     64
/* A jti we record: ours is CLAIMS_JTI_LEN; a pre-built (Kubernetes) token's
 * is checked to be 1..JS_JTI_MAX printable ASCII (policy.h). */
#define JS_JTI_MAX 128

/* The token a SignJwt request produced, and what the request log and the
 * audit record say about it. jwt, scopes, sub, aud and cnf_json are malloc'd
 * (js_sign_result_clear frees them, wiping the token); the fixed buffers
 * may be set for a refused request too (key, kid, alg once a key was
 * selected; sub and aud once the claims were parsed). */
typedef struct js_sign_result {
    char *jwt;
    char *scopes;
    char kid[JWK_KID_LEN + 1];
    char jti[JS_JTI_MAX + 1]; /* ours (CLAIMS_JTI_LEN), or a pre-built token's */
    char key_name[JS_KEY_NAME_MAX + 1];
    char alg[16];
    /* The request's sub, whole (the audit record must match the token;
     * bounded by CLAIMS_MAX_BYTES); NULL if absent or not a string. */
    char *sub;
    char *aud; /* the request's aud as compact JSON (NULL if absent); malloc'd */
    /* The request's cnf claim (RFC 7800) as compact JSON, once its shape was
     * checked (claims_cnf_check); NULL if absent or malformed. malloc'd. */
    char *cnf_json;
    char token_sha256[JS_SHA256_HEX + 1];
    uint8_t token_digest[32]; /* the same SHA-256, binary (the token index's key check) */
    int64_t issued_at;
    int64_t expires_at;
} js_sign_result;

void js_sign_result_clear(js_sign_result *res);

typedef struct js_decision {
    js_decision_kind kind;
    js_status status;
    js_reason reason;     /* JS_R_OK when allowed */
    char msg[JS_MSG_MAX]; /* "" when allowed */
    /* A rate-limited caller may retry after this many milliseconds. */
    uint64_t retry_after_ms;
    /* The failure came from the HSM (counted as an HSM error). */
    bool hsm_failed;
    /* A denial beyond the caller's denial budget (denials.h): counted into
     * a folded record instead of an audit record and log line of its own. */
    bool folded;
    /* The request's request_id, once accepted (printable, bounded); "" = none. */
    char request_id[JS_REQUEST_ID_MAX + 1];
    js_sign_result token; /* SignJwt only; jwt set only when allowed */
} js_decision;

/* The kind of decision a status means (see above). */
js_decision_kind js_decision_kind_of(js_status st);

/* "allow", "deny" or "error": the word the log line, the audit record and
 * the metrics use. */
const char *js_decision_name(js_decision_kind k);

/* An empty decision (allow, no token yet). */
void js_decision_init(js_decision *d);

/* Ends d as the failure err describes (deny or error by its status). A
 * token already built is discarded (fail closed: no token without its
 * allow), and so is its jti; what was noted about the request stays. */
void js_decision_fail(js_decision *d, const js_err *err);

/* Ends d as allowed (status JS_OK, reason JS_R_OK, no message). */
void js_decision_allow(js_decision *d);

/* The decision as a js_err (for callers that speak js_err). */
void js_decision_err(const js_decision *d, js_err *err);

/* Frees the token; d may be reused after js_decision_init. */
void js_decision_clear(js_decision *d);

#endif
