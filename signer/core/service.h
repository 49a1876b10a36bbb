/*
 * service.h - the SignJwt and GetJwks logic, independent of gRPC.
 *
 * The RPC layer (server.c) authenticates the transport, extracts the caller
 * identity and picks up the policy snapshot in force; this module decides and
 * signs, and reports every field the request log and the audit record need.
 *
 * Order of checks (issue: evaluation order): identity -> policy match ->
 * frozen? -> rate limit, all in js_service_admit() BEFORE the request body is
 * decoded, so a flood costs little; then js_service_sign(): request fields ->
 * claims parse (strict) -> policy evaluation -> sign in the HSM. Nothing is
 * returned unless the whole token was built.
 *
 * Thread-safety: a js_service is shared by all workers; each passes its own
 * HSM session and its own policy snapshot.
 */
#ifndef JS_SERVICE_H
#define JS_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "claims.h"
#include "config.h"
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

#define JS_REQUEST_ID_MAX 128
#define JS_LOG_SUB_MAX    256
#define JS_SHA256_HEX     64

/* Borrowed view of one request. */
typedef struct js_sign_request {
    const uint8_t *claims;
    size_t claims_len;
    const char *key_name;   /* "" = the caller's default */
    const char *request_id; /* "" = none */
} js_sign_request;

/* A caller admitted past match, frozen and rate checks. Borrowed pointers
 * into the policy snapshot the worker holds for this request. */
typedef struct js_admission {
    const js_policy *policy;
    const js_policy_caller *caller;
    const char *identity;
    const js_keyring *keys; /* the keyring snapshot in force for this request */
} js_admission;

/* Result of a request, allowed or denied. jwt and scopes are malloc'd (free
 * with js_sign_result_clear); the fixed buffers serve logs and audit. */
typedef struct js_sign_result {
    char *jwt;
    char *scopes;
    char kid[JWK_KID_LEN + 1];
    char jti[CLAIMS_JTI_LEN + 1];
    char key_name[JS_KEY_NAME_MAX + 1];
    char alg[16];
    char sub[JS_LOG_SUB_MAX + 1];
    char *aud; /* the request's aud as compact JSON (NULL if absent); malloc'd */
    char token_sha256[JS_SHA256_HEX + 1];
    int64_t issued_at;
    int64_t expires_at;
} js_sign_result;

/* Borrows cfg and rl; they must outlive the service. clock NULL = time(). */
js_status js_service_new(const js_config *cfg, js_ratelimit *rl, js_clock_fn clock, void *clock_ctx,
                         js_service **out, js_err *err) JS_WUR;
void js_service_free(js_service *svc);

/*
 * Match, frozen and rate checks for identity under policy p and the callers
 * frozen at run time. JS_EDENIED (policy.no_match, policy.frozen,
 * admin.frozen) or JS_ELIMIT (rate.limited, with *retry_after_ms).
 */
js_status js_service_admit(const js_service *svc, const js_policy *p, const js_frozen *frozen,
                           const char *identity, js_admission *adm, uint64_t *retry_after_ms,
                           js_err *err) JS_WUR;

js_status js_service_sign(const js_service *svc, js_hsm_session *s, const js_admission *adm,
                          const js_sign_request *req, js_sign_result *res, js_err *err) JS_WUR;
void js_sign_result_clear(js_sign_result *res);

/* Checks that every key a policy names exists in the keyring, and that the
 * policy or the config sets an issuer. Used at start and on every reload. */
js_status js_service_check_policy(const js_service *svc, const js_policy *p, js_err *err) JS_WUR;

/* Validates a request_id: 0..JS_REQUEST_ID_MAX printable ASCII characters. */
js_status js_request_id_check(const char *request_id, js_err *err) JS_WUR;

#endif
