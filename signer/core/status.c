/*
 * status.c - one introspection call, whatever the transport (status.h).
 */
#include "status.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "clock.h"
#include "logline.h"

#define AUDIT_TYPE "introspect"

/* The audit reason of an answer audited on its own (forgery evidence);
 * JS_R_NONE for every other answer. */
static js_reason audited_reason(const js_introspection *r)
{
    switch (r->why) {
    case JS_WHY_UNKNOWN_JTI:
        return JS_R_INTROSPECT_UNKNOWN_JTI;
    case JS_WHY_HASH_MISMATCH:
        return JS_R_INTROSPECT_HASH_MISMATCH;
    default:
        return JS_R_NONE;
    }
}

/* An "introspect" audit record: a refusal, or an answer that is evidence of
 * a forgery. Queued, never waited for: nothing is released by it. */
static void audit_record(const js_status_deps *deps, const js_status_call *call,
                         const js_decision *d, js_reason why, const char *kid, const char *jti)
{
    char *detail = NULL;
    if ((kid != NULL && kid[0] != '\0') || (jti != NULL && jti[0] != '\0')) {
        json_t *o = json_object();
        if (o != NULL) {
            if (jti != NULL && jti[0] != '\0')
                json_object_set_new(o, "jti", json_string(jti));
            if (kid != NULL && kid[0] != '\0')
                json_object_set_new(o, "kid", json_string(kid));
            detail = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(o);
        }
    }
    js_audit_event ev = {
        .type = AUDIT_TYPE,
        .caller = call->identity,
        .peer = call->peer,
        .decision = js_decision_name(d->kind == JS_DECISION_ALLOW ? JS_DECISION_DENY : d->kind),
        .reason = js_reason_name(why),
        .message = d->kind == JS_DECISION_ALLOW ? NULL : d->msg,
        .detail_json = detail,
    };
    if (js_audit_submit(deps->audit, &ev, NULL, NULL, NULL) != JS_OK &&
        js_denials_admit(deps->quiet, "audit_record_lost", js_mono_ms()))
        js_log_event("warn", "audit_record_lost",
                     "an introspection record could not be queued for the audit log");
    free(detail);
}

/* Counts a refusal or a forgery answer into its folded record (by
 * identity, or by the peer's address without the port). */
static void fold(const js_status_deps *deps, const js_status_call *call, js_reason why)
{
    char addr[JS_DENIALS_KEY_MAX + 1];
    js_denials_peer_addr(call->peer, addr, sizeof(addr));
    js_audit_note_folded(deps->audit, AUDIT_TYPE, call->identity, addr, js_reason_name(why));
}

/* Whether this call gets a log line (and audit record) of its own from the
 * budget b. */
static bool in_budget(js_denials *b, const js_status_call *call)
{
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(call->identity, call->peer, key, sizeof(key));
    return js_denials_admit(b, key, js_mono_ms());
}

static js_reqlog log_of(const js_status_call *call, const js_decision *d)
{
    js_reqlog log = {
        .method = call->method,
        .caller = call->identity[0] != '\0' ? call->identity : NULL,
        .peer = call->peer,
        .decision = js_decision_name(d->kind),
        .status = call->status_name(d, call->status_ctx),
        .reason = js_reason_name(d->reason),
        .message = d->kind == JS_DECISION_ALLOW ? NULL : d->msg,
        .latency_us = js_mono_us() - call->t0_us,
    };
    return log;
}

/* A refused call: audited and logged in full within the denial budget,
 * folded beyond it (rate-limited calls always fold), counted. */
static void refuse(const js_status_deps *deps, const js_status_call *call, const js_err *err,
                   js_decision *d)
{
    js_decision_fail(d, err);
    d->retry_after_ms = err->status == JS_ELIMIT ? 1000 : 0;
    d->folded = err->status == JS_ELIMIT || !in_budget(deps->denials, call);
    if (d->folded) {
        fold(deps, call, d->reason);
    } else {
        audit_record(deps, call, d, d->reason, NULL, NULL);
        js_reqlog log = log_of(call, d);
        js_reqlog_emit(&log);
    }
    js_metrics_call(deps->metrics, call->method, call->identity, d);
}

/* Admission, before the token is read. */
static js_status admit(const js_status_deps *deps, const js_status_call *call,
                       const char *const **auds, size_t *naud, js_err *err)
{
    if (call->refusal != NULL) {
        *err = *call->refusal;
        return err->status;
    }
    JS_ENSURE(deps->index != NULL, err, JS_ESTATE, JS_R_INTROSPECT_DISABLED,
              "this signer's configuration has no introspection section");
    JS_ENSURE(js_policy_introspector(call->policy, call->identity, auds, naud), err, JS_EDENIED,
              JS_R_INTROSPECT_NOT_ALLOWED,
              "caller '%s' is not an introspector (policy: introspectors)", call->identity);
    JS_ENSURE(js_denials_admit(deps->rate, call->identity, js_mono_ms()), err, JS_ELIMIT,
              JS_R_INTROSPECT_RATE_LIMITED, "introspector '%s' is over %u %s calls per second",
              call->identity, (unsigned)JS_INTROSPECT_RATE, call->method);
    return JS_OK;
}

void js_status_introspect(const js_status_deps *deps, const js_status_call *call, js_decision *d,
                          js_introspection *r, char **json)
{
    js_decision_init(d);
    memset(r, 0, sizeof(*r));
    *json = NULL;
    js_err err;
    js_err_clear(&err);
    const char *const *auds = NULL;
    size_t naud = 0;
    const char *token = NULL;
    size_t token_len = 0;
    js_status st = admit(deps, call, &auds, &naud, &err);
    if (st == JS_OK)
        st = call->token(call->token_ctx, &token, &token_len, &err);
    if (st != JS_OK) {
        refuse(deps, call, &err, d);
        return;
    }
    /* A token too long, empty or malformed is an answer (inactive), not an
     * error (RFC 7662 §2.2). */
    js_introspect_input in = {
        .token = token,
        .token_len = token_len,
        .auds = auds,
        .naud = naud,
        .now = js_wall_ms() / 1000,
        .leeway = deps->leeway,
    };
    js_introspect(call->keys, deps->index, &in, r);
    *json = js_introspection_json(r, js_policy_issuer(call->policy));
    if (*json == NULL) {
        js_introspection_clear(r);
        (void)js_err_oom(&err);
        refuse(deps, call, &err, d);
        return;
    }
    /* Answered: the call is allowed whatever the answer. */
    const char *why = js_introspect_why_name(r->why);
    js_reason audited = audited_reason(r);
    js_metrics_request(deps->metrics, call->method, call->identity, js_decision_name(d->kind), why);
    bool log_it;
    if (r->active) {
        log_it = in_budget(deps->quiet, call);
    } else {
        /* One budget decision for the log line and the audit record. */
        log_it = in_budget(deps->denials, call);
        if (audited != JS_R_NONE) {
            if (log_it)
                audit_record(deps, call, d, audited, r->kid, r->jti);
            else
                fold(deps, call, audited);
        }
    }
    if (log_it) {
        js_reqlog log = log_of(call, d);
        /* The answer's reason (introspect.h), as in the metrics; never told
         * to the caller (RFC 7662 §2.2). */
        log.reason = why;
        log.kid = r->kid[0] != '\0' ? r->kid : NULL;
        log.jti = r->jti[0] != '\0' ? r->jti : NULL;
        if (r->active) {
            log.sub = r->tok.sub;
            log.aud = r->tok.aud_json;
        }
        js_reqlog_emit(&log);
    }
}
