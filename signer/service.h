/*
 * service.h - the SignJwt and GetJwks logic, independent of gRPC.
 *
 * The RPC layer (server.c) authenticates the transport, extracts the caller
 * identity, decodes the protobuf and hands a js_sign_request here; this module
 * decides and signs, and reports every field the request log needs. Keeping
 * it free of gRPC lets unit tests and, later, other front ends drive it.
 *
 * Order of checks: caller allowed? -> request fields -> claims parse (strict)
 * -> server-owned claims and lifetime -> key -> sign in the HSM. Nothing is
 * returned unless the whole token was built.
 *
 * Thread-safety: a js_service is immutable and shared; each worker passes its
 * own HSM session.
 */
#ifndef JS_SERVICE_H
#define JS_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "claims.h"
#include "config.h"
#include "err.h"
#include "hsm.h"
#include "jwk.h"
#include "keyring.h"

typedef struct js_service js_service;

/* Returns the current time in Unix seconds; injectable for tests. */
typedef int64_t (*js_clock_fn)(void *ctx);

#define JS_REQUEST_ID_MAX 128
#define JS_LOG_SUB_MAX    256
#define JS_LOG_AUD_MAX    512

/* Borrowed view of one request. */
typedef struct js_sign_request {
    const char *identity; /* verified caller identity */
    const uint8_t *claims;
    size_t claims_len;
    const char *key_name;   /* "" = default */
    const char *request_id; /* "" = none */
} js_sign_request;

/* Result of a request, allowed or denied. jwt is malloc'd (free with
 * js_sign_result_clear); the fixed buffers serve the request log. */
typedef struct js_sign_result {
    char *jwt;
    char kid[JWK_KID_LEN + 1];
    char jti[CLAIMS_JTI_LEN + 1];
    char key_name[JS_KEY_NAME_MAX + 1];
    char sub[JS_LOG_SUB_MAX + 1];
    char aud[JS_LOG_AUD_MAX + 1];
    int64_t issued_at;
    int64_t expires_at;
} js_sign_result;

/* The service borrows cfg and kr; they must outlive it. clock NULL = time(). */
js_status js_service_new(const js_config *cfg, const js_keyring *kr, js_clock_fn clock,
                         void *clock_ctx, js_service **out, js_err *err) JS_WUR;
void js_service_free(js_service *svc);

js_status js_service_sign(const js_service *svc, js_hsm_session *s, const js_sign_request *req,
                          js_sign_result *res, js_err *err) JS_WUR;
void js_sign_result_clear(js_sign_result *res);

const char *js_service_jwks(const js_service *svc);

/* Validates a request_id: 0..JS_REQUEST_ID_MAX printable ASCII characters. */
js_status js_request_id_check(const char *request_id, js_err *err) JS_WUR;

#endif
