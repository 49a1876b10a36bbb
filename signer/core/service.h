/*
 * service.h - the SignJwt pipeline, independent of gRPC: one function takes
 * the caller's identity and the request and returns one decision
 * (decision.h), from which the RPC layer builds the reply, the log line,
 * the audit record and the metrics.
 *
 * The RPC layer authenticates the transport, extracts the caller identity,
 * picks up the snapshots in force (policy, frozen callers, keyring) and
 * hands over a decoder for the request body; it never decides. GetJwks and
 * the Admin service are not here (signer/rpc, control.h).
 *
 * Order of checks: identity -> policy match -> frozen? -> rate limit, all
 * BEFORE the request body is decoded, so a flood costs little; then the
 * request fields -> claims parse (strict) -> policy evaluation -> sign in
 * the HSM. No token is returned unless the whole token was built.
 *
 * Thread-safety: a js_service is shared by all workers; each passes its own
 * HSM session and its own snapshots.
 */
#ifndef JS_SERVICE_H
#define JS_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "claims.h"
#include "config.h"
#include "decision.h"
#include "err.h"
#include "frozen.h"
#include "hsm.h"
#include "jwk.h"
#include "keyring.h"
#include "policy.h"
#include "ratelimit.h"

typedef struct js_service js_service;

/* Returns the current time in Unix seconds; injectable for tests. */
typedef int64_t (*js_clock_fn)(void *ctx);

/* Borrowed view of one request. */
typedef struct js_sign_request {
    const uint8_t *claims;
    size_t claims_len;
    const char *key_name;   /* "" = the caller's default */
    const char *request_id; /* "" = none */
} js_sign_request;

/* How the RPC layer hands over the request body: called at most once, only
 * for an admitted caller, or for a refused one whose denial is recorded in
 * full (for the request_id its audit record and log line carry). *req may
 * borrow from ctx until js_service_decide returns. */
typedef js_status (*js_sign_decode_fn)(void *ctx, js_sign_request *req, js_err *err);

/* The denial budget (denials.h): true = this denial gets an audit record
 * and a log line of its own, false = it is folded into a counted record.
 * Asked at most once per request, only for denials (never for errors). */
typedef bool (*js_denial_budget_fn)(void *ctx);

/* One SignJwt request as the RPC layer sees it. Everything is borrowed. */
typedef struct js_sign_input {
    const char *identity;       /* the caller, or NULL: the transport found none */
    const js_err *identity_err; /* why not, when identity is NULL */
    const js_policy *policy;    /* the snapshots in force for this request */
    const js_frozen *frozen;
    const js_keyring *keys;
    js_hsm_session *session; /* the worker's own */
    js_sign_decode_fn decode;
    void *decode_ctx;
    js_denial_budget_fn in_full;
    void *budget_ctx;
} js_sign_input;

/* Borrows cfg and rl; they must outlive the service. clock NULL = time(). */
js_status js_service_new(const js_config *cfg, js_ratelimit *rl, js_clock_fn clock, void *clock_ctx,
                         js_service **out, js_err *err) JS_WUR;
void js_service_free(js_service *svc);

/*
 * Decides one SignJwt request into *d (js_decision_init'ed here; release
 * with js_decision_clear). Allowed: d->token holds the signed token. Refused:
 * deny with policy.no_match, policy.frozen, admin.frozen, rate.limited (with
 * retry_after_ms), request.* or a policy rule; error (HSM, no active key,
 * internal) with its reason. d->folded says whether a denial went beyond
 * the caller's denial budget.
 */
void js_service_decide(const js_service *svc, const js_sign_input *in, js_decision *d);

/*
 * Kubernetes' ExternalJWTSigner (k8s.io/externaljwt; KEP-740): kube-apiserver
 * sends a claim set it built, base64url-encoded, and gets back the header and
 * signature of the token it then assembles itself.
 *
 * js_service_decide_k8s decides one Sign request: the same admission as
 * SignJwt (match, frozen, rate limit; before the body is decoded), then the
 * payload is decoded (strict base64url, at most CLAIMS_MAX_BYTES), parsed as
 * strictly as claims_json, and validated instead of evaluated
 * (js_policy_validate: the signer cannot add or change a claim), and
 * base64url(header) "." payload is signed as sent, with the caller's default
 * key. The decode callback hands over the payload text in req->claims.
 * Allowed: d->token.jwt holds the assembled token and d->token the jti, sub,
 * aud, iat, exp, key, kid and alg for the audit record.
 */
void js_service_decide_k8s(const js_service *svc, const js_sign_input *in, js_decision *d);

/* iat/nbf skew allowed between kube-apiserver and the signer, seconds. */
#define JS_K8S_LEEWAY_S 60

/* The algorithms kube-apiserver accepts in a token header (RS256, ES256,
 * ES384, ES512: k8s.io/externaljwt SignJWTResponse.header) that the signer
 * has: RS256, ES256, ES384. */
bool js_k8s_alg_ok(js_alg alg);

/* Checks that every key a policy names exists in the keyring, and that the
 * policy or the config sets an issuer. Used at start and on every reload.
 * A unix: (Kubernetes) caller needs the externaljwt socket configured, and
 * every key it may use must have an algorithm kube-apiserver accepts
 * (config.externaljwt_alg). */
js_status js_service_check_policy(const js_service *svc, const js_policy *p, js_err *err) JS_WUR;

/* Validates a request_id: 0..JS_REQUEST_ID_MAX printable ASCII characters. */
js_status js_request_id_check(const char *request_id, js_err *err) JS_WUR;

#endif
