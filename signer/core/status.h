/*
 * status.h - one introspection call (RFC 7662), whatever the transport:
 * gRPC jwtsigner.v1.Status/Introspect (signer/rpc/rpc_status.c) and HTTP
 * POST /introspect (signer/endpoints.c) both hand the call here and only
 * map the outcome onto their own reply.
 *
 * Order: the transport's own refusal (no authenticated identity, a malformed
 * request envelope) -> introspection on? -> the policy's introspectors ->
 * the per-introspector rate, all before the token is read; then the token
 * (through the transport's callback) -> js_introspect (introspect.h).
 *
 * An answer, active or not, is an allowed call: RFC 7662 §2.2 tells the
 * caller nothing but {"active":false}, so why a token is inactive goes only
 * to the log line (within the caller's denial budget), the metrics (reason
 * label) and, for the two answers that are evidence of a forgery --
 * unknown_jti (a valid signature on a token never issued here: the key
 * leaked) and hash_mismatch (a real jti on another token) -- an "introspect"
 * audit record of its own (folded beyond the budget). Active answers are
 * logged within the quiet budget. A refusal is audited and logged within the
 * denial budget, folded beyond it (rate-limited calls always fold).
 */
#ifndef JS_STATUS_H
#define JS_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auditlog.h"
#include "decision.h"
#include "denials.h"
#include "err.h"
#include "introspect.h"
#include "keyring.h"
#include "metrics.h"
#include "policy.h"
#include "tokindex.h"

/* Introspect calls per introspector, and over all of them, on each
 * transport: a verifier may introspect on every sensitive request, so the
 * budget is generous; it bounds what one stolen introspector certificate
 * can cost the signer. */
#define JS_INTROSPECT_RATE         2000
#define JS_INTROSPECT_BURST        4000
#define JS_INTROSPECT_GLOBAL_RATE  20000
#define JS_INTROSPECT_GLOBAL_BURST 40000

/* What the daemon lends every call. */
typedef struct js_status_deps {
    js_audit *audit;
    js_metrics *metrics; /* may be NULL */
    js_denials *denials; /* refusals and forgery evidence in full vs folded */
    js_denials *quiet;   /* log lines of active answers */
    js_denials *rate;    /* Introspect calls per introspector */
    js_tokindex *index;  /* NULL = introspection off (introspect.disabled) */
    int64_t leeway;      /* introspection.leeway */
} js_status_deps;

/* Hands over the token once the caller is admitted; *token may borrow from
 * ctx until js_status_introspect returns. */
typedef js_status (*js_status_token_fn)(void *ctx, const char **token, size_t *len, js_err *err);

/* One call as the transport sees it; everything borrowed. */
typedef struct js_status_call {
    const char *method;    /* "Introspect" or "POST /introspect" (logs, metrics) */
    const char *identity;  /* "" when the transport found none */
    const js_err *refusal; /* the transport's own refusal, or NULL */
    const char *peer;
    const js_policy *policy;
    const js_keyring *keys;
    js_status_token_fn token;
    void *token_ctx;
    int64_t t0_us;
    /* The transport's status for the log line of a decision (a gRPC status
     * name, an HTTP status). */
    const char *(*status_name)(const js_decision *d, void *ctx);
    void *status_ctx;
} js_status_call;

/*
 * Decides one call into *d (js_decision_init'ed here): allowed = answered,
 * with *json the RFC 7662 answer (malloc'd, the caller frees) and *r the
 * introspection (js_introspection_clear); otherwise refused with its status
 * and reason (retry_after_ms set when rate-limited) and *json NULL. The log
 * line, the metrics and the audit records are done here.
 */
void js_status_introspect(const js_status_deps *deps, const js_status_call *call, js_decision *d,
                          js_introspection *r, char **json);

#endif
