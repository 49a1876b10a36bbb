/*
 * rpc_status.c - the jwtsigner.v1.Status service: RFC 7662 token
 * introspection (introspect.h) for the policy's introspectors, rate limited
 * per introspector, its refusals folded like any other.
 *
 * An answer, active or not, is an allowed call (status OK): RFC 7662 §2.2
 * tells the caller nothing but {"active":false}, so why a token is inactive
 * goes only to the signer's log line (within the caller's denial budget),
 * the metrics (reason label) and, for the two answers that are evidence of a
 * forgery -- unknown_jti (a valid signature on a token we never issued: the
 * key leaked) and hash_mismatch (a real jti on another token) -- an audit
 * record of its own, counted into a folded record beyond the budget. Other
 * answers are not audited. Active answers are logged within the quiet budget
 * (a verifier may introspect on every sensitive request).
 */
#include "rpc_call.h"

#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <protobuf-c/protobuf-c.h>

#include "auditlog.h"
#include "clock.h"
#include "denials.h"
#include "introspect.h"
#include "jwtsigner/v1/signer.pb-c.h"
#include "keyring.h"
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"
#include "policy_store.h"

/* The method's label in logs, metrics and folded records. */
#define METHOD_NAME "Introspect"
#define FOLD_TYPE   "introspect"

/* The audit reason of an inactive answer that is audited on its own
 * (forgery evidence); JS_R_NONE for every other answer. */
static js_reason audited_reason(const js_introspection *r)
{
    if (r->active || r->why == NULL)
        return JS_R_NONE;
    if (strcmp(r->why, "unknown_jti") == 0)
        return JS_R_INTROSPECT_UNKNOWN_JTI;
    if (strcmp(r->why, "hash_mismatch") == 0)
        return JS_R_INTROSPECT_HASH_MISMATCH;
    return JS_R_NONE;
}

/* A JSON string member of the answer, or "" (proto3 strings are never NULL). */
static char *member_str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return (char *)(s != NULL ? s : "");
}

/*
 * Packs the answer: the RFC 7662 JSON, and the typed fields read back from
 * that same JSON, so the two can never disagree. Inactive: active = false
 * and the JSON only.
 */
static js_status pack_answer(const js_introspection *r, const char *iss, uint8_t **buf, size_t *len,
                             js_err *err)
{
    js_status st = JS_OK;
    char *json = js_introspection_json(r, iss);
    json_t *doc = NULL;
    char *cnf = NULL;
    char **aud = NULL;
    Jwtsigner__V1__IntrospectResponse resp = JWTSIGNER__V1__INTROSPECT_RESPONSE__INIT;
    if (json == NULL) {
        st = js_err_oom(err);
        goto out;
    }
    resp.active = r->active;
    resp.json = json;
    if (r->active) {
        doc = json_loads(json, 0, NULL);
        if (!json_is_object(doc)) {
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
                            "the introspection answer is not a JSON object");
            goto out;
        }
        resp.scope = member_str(doc, "scope");
        resp.client_id = member_str(doc, "client_id");
        resp.sub = member_str(doc, "sub");
        resp.iss = member_str(doc, "iss");
        resp.jti = member_str(doc, "jti");
        resp.token_type = member_str(doc, "token_type");
        resp.exp = json_integer_value(json_object_get(doc, "exp"));
        resp.iat = json_integer_value(json_object_get(doc, "iat"));
        /* aud: a string or an array of strings (RFC 7519 §4.1.3). */
        const json_t *a = json_object_get(doc, "aud");
        size_t n = json_is_array(a) ? json_array_size(a) : json_is_string(a) ? 1 : 0;
        if (n > 0) {
            aud = calloc(n, sizeof(*aud));
            if (aud == NULL) {
                st = js_err_oom(err);
                goto out;
            }
            for (size_t i = 0; i < n; i++) {
                const json_t *v = json_is_array(a) ? json_array_get(a, i) : a;
                if (json_is_string(v))
                    aud[resp.n_aud++] = (char *)json_string_value(v);
            }
            resp.aud = aud;
        }
        const json_t *c = json_object_get(doc, "cnf");
        if (c != NULL) {
            cnf = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER);
            if (cnf == NULL) {
                st = js_err_oom(err);
                goto out;
            }
            resp.cnf_json = cnf;
        }
    }
    *len = jwtsigner__v1__introspect_response__get_packed_size(&resp);
    *buf = malloc(*len > 0 ? *len : 1);
    if (*buf == NULL) {
        st = js_err_oom(err);
        goto out;
    }
    jwtsigner__v1__introspect_response__pack(&resp, *buf);
out:
    free(aud);
    free(cnf);
    json_decref(doc);
    free(json);
    return st;
}

/* The audit record of a refused call, or of an answer that is evidence of
 * a forgery: queued, never waited for (nothing is released by it). */
static void audit_introspect(const call_ctx *c, const js_decision *d, js_reason why,
                             const char *kid, const char *jti)
{
    js_server *srv = c->w->srv;
    char *detail = NULL;
    if (kid != NULL || jti != NULL) {
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
        .type = FOLD_TYPE,
        .caller = c->identity,
        .peer = c->peer,
        .decision = js_decision_name(d->kind == JS_DECISION_ALLOW ? JS_DECISION_DENY : d->kind),
        .reason = js_reason_name(why),
        .message = d->kind == JS_DECISION_ALLOW ? NULL : d->msg,
        .detail_json = detail,
    };
    if (js_audit_submit(srv->audit, &ev, NULL, NULL, NULL) != JS_OK &&
        js_denials_admit(srv->quiet, "audit_record_lost", js_mono_ms()))
        js_log_event("warn", "audit_record_lost",
                     "an introspection record could not be queued for the audit log");
    free(detail);
}

/* A refused call (not an introspector, over its rate, a bad request,
 * introspection off): audited and logged in full within the caller's denial
 * budget, folded beyond it (rate-limited calls always fold). */
static void refuse(call_ctx *c, const js_err *err, bool budget_checked)
{
    js_server *srv = c->w->srv;
    js_decision *d = &c->d;
    js_decision_fail(d, err);
    d->retry_after_ms = err->status == JS_ELIMIT ? 1000 : 0;
    if (!budget_checked)
        d->folded = err->status == JS_ELIMIT || !rpc_denial_in_full(c);
    if (d->folded) {
        rpc_fold_denial(c, FOLD_TYPE, d->reason);
    } else {
        audit_introspect(c, d, d->reason, NULL, NULL);
        js_reqlog log = rpc_reqlog_of(METHOD_NAME, c->identity, c->peer, d, c->t0_us);
        js_reqlog_emit(&log);
    }
    js_metrics_call(srv->metrics, METHOD_NAME, c->identity, d);
    rpc_reply_decision(c, d, NULL, 0); /* c may be gone after this */
}

/* Reads and checks the request (pbcheck.h), and answers it into *buf. The
 * token is a bearer credential: every copy of it is wiped. */
static js_status answer(call_ctx *c, const js_policy *policy, const char *const *auds, size_t naud,
                        js_introspection *res, uint8_t **buf, size_t *len, js_err *err)
{
    js_server *srv = c->w->srv;
    JS_ENSURE(srv->index != NULL, err, JS_ESTATE, JS_R_INTROSPECT_DISABLED,
              "this signer's configuration has no introspection section");
    grpc_slice raw = grpc_empty_slice();
    JS_GUARD(rpc_read_request(c->request, &raw, err));
    ProtobufCMessage *m = NULL;
    js_status st = js_pb_unpack(&jwtsigner__v1__introspect_request__descriptor,
                                GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), &m, err);
    OPENSSL_cleanse(GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw));
    grpc_slice_unref(raw);
    JS_GUARD(st);
    Jwtsigner__V1__IntrospectRequest *rq = (Jwtsigner__V1__IntrospectRequest *)m;
    /* A token too long, empty or malformed is an answer (inactive), not an
     * error (RFC 7662 §2.2); the gRPC message limit bounds what arrives. */
    js_introspect_input in = {
        .token = rq->token,
        .token_len = strlen(rq->token),
        .auds = auds,
        .naud = naud,
        .now = js_wall_ms() / 1000,
        .leeway = srv->cfg->introspection_leeway,
    };
    const js_keyring *kr = js_snapshot_cache_get(&c->w->keys, srv->keys);
    js_introspect(kr, srv->index, &in, res);
    OPENSSL_cleanse(rq->token, in.token_len);
    jwtsigner__v1__introspect_request__free_unpacked(rq, NULL);
    return pack_answer(res, js_policy_issuer(policy), buf, len, err);
}

void rpc_handle_status(call_ctx *c)
{
    c->t0_us = js_mono_us();
    js_server *srv = c->w->srv;
    js_err err;
    js_err_clear(&err);
    c->peer = grpc_call_get_peer(c->call);
    const js_policy *policy = js_policy_cache_get(&c->w->policy, srv->policies);
    js_decision *d = &c->d;
    js_decision_init(d);

    js_status st = rpc_call_identity(c->call, c->identity, sizeof(c->identity), &err);
    if (c->request == NULL) {
        rpc_no_message(c, METHOD_NAME);
        return;
    }
    const char *const *auds = NULL;
    size_t naud = 0;
    if (st == JS_OK && !js_policy_introspector(policy, c->identity, &auds, &naud))
        st = js_err_set(&err, JS_EDENIED, JS_R_INTROSPECT_NOT_ALLOWED,
                        "caller '%s' is not an introspector (policy: introspectors)", c->identity);
    if (st == JS_OK && !js_denials_admit(srv->introspect_rate, c->identity, js_mono_ms()))
        st = js_err_set(&err, JS_ELIMIT, JS_R_INTROSPECT_RATE_LIMITED,
                        "introspector '%s' is over %u Introspect calls per second", c->identity,
                        JS_INTROSPECT_RATE);
    if (st != JS_OK) {
        refuse(c, &err, false);
        return;
    }

    js_introspection res;
    memset(&res, 0, sizeof(res));
    uint8_t *buf = NULL;
    size_t len = 0;
    if (answer(c, policy, auds, naud, &res, &buf, &len, &err) != JS_OK) {
        js_introspection_clear(&res);
        refuse(c, &err, false);
        return;
    }

    /* Answered: the call is allowed whatever the answer. */
    const char *why = res.why != NULL ? res.why : "malformed";
    js_reason audited = audited_reason(&res);
    js_metrics_request(srv->metrics, METHOD_NAME, c->identity, js_decision_name(d->kind), why);
    bool log_it;
    if (res.active) {
        char key[JS_DENIALS_KEY_MAX + 1];
        js_denials_key(c->identity, c->peer, key, sizeof(key));
        log_it = js_denials_admit(srv->quiet, key, js_mono_ms());
    } else {
        /* One budget decision for the log line and the audit record. */
        log_it = rpc_denial_in_full(c);
        if (audited != JS_R_NONE) {
            if (log_it)
                audit_introspect(c, d, audited, res.kid, res.jti);
            else
                rpc_fold_denial(c, FOLD_TYPE, audited);
        }
    }
    if (log_it) {
        js_reqlog log = rpc_reqlog_of(METHOD_NAME, c->identity, c->peer, d, c->t0_us);
        /* The answer's reason (introspect.h), as in the metrics; never told
         * to the caller (RFC 7662 §2.2). */
        log.reason = why;
        log.kid = res.kid[0] != '\0' ? res.kid : NULL;
        log.jti = res.jti[0] != '\0' ? res.jti : NULL;
        if (res.active) {
            log.sub = res.tok.sub;
            log.aud = res.tok.aud_json;
        }
        js_reqlog_emit(&log);
    }
    js_introspection_clear(&res);
    rpc_reply_decision(c, d, buf, len); /* c may be gone after this */
    free(buf);
}
