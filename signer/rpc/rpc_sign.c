/*
 * rpc_sign.c - the SignJwt handler: decodes the request, has the service
 * (service.h) decide and sign, writes the audit record, the log line and
 * the metrics, and replies; an allowed token goes out only once its audit
 * record is durable.
 */
#include "rpc_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/support/alloc.h>
#include <openssl/crypto.h>
#include <protobuf-c/protobuf-c.h>

#include "auditlog.h"
#include "clock.h"
#include "denials.h"
#include "jwtsigner/v1/signer.pb-c.h"
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"
#include "policy_store.h"

static void log_sign(const call_ctx *c, grpc_status_code code, const js_err *err, uint64_t seq)
{
    const js_sign_result *res = &c->res;
    char seqbuf[24] = "";
    if (seq > 0)
        snprintf(seqbuf, sizeof(seqbuf), "%llu", (unsigned long long)seq);
    js_reqlog log = {
        .method = "SignJwt",
        .caller = c->identity,
        .peer = c->peer,
        .request_id = c->request_id,
        .decision = rpc_decision_of(code),
        .status = rpc_status_name(code),
        .reason = js_reason_name(code == GRPC_STATUS_OK ? JS_R_OK : err->reason),
        .message = code == GRPC_STATUS_OK ? NULL : err->msg,
        .key = res->key_name,
        .kid = res->kid,
        .jti = code == GRPC_STATUS_OK ? res->jti : NULL,
        .sub = res->sub,
        .aud = res->aud,
        .audit_seq = seqbuf,
        .latency_us = js_mono_us() - c->t0_us,
    };
    js_reqlog_emit(&log);
    js_metrics *m = c->w->srv->metrics;
    js_metrics_request(m, "SignJwt", c->identity, log.decision, log.reason);
    if (code == GRPC_STATUS_OK)
        js_metrics_sign_latency(m, (uint64_t)log.latency_us);
    else if (code == GRPC_STATUS_RESOURCE_EXHAUSTED)
        js_metrics_rate_limited(m, c->identity);
    else if (strncmp(log.reason, "hsm.", 4) == 0)
        js_metrics_hsm_error(m);
}

/* The audit record of a SignJwt decision (audit/FORMAT.md). */
static void sign_event(const call_ctx *c, const js_err *err, const char *policy_hash,
                       js_audit_event *ev)
{
    const js_sign_result *res = &c->res;
    bool ok = res->jwt != NULL;
    memset(ev, 0, sizeof(*ev));
    ev->type = "sign";
    ev->caller = c->identity;
    ev->peer = c->peer;
    ev->request_id = c->request_id;
    ev->decision = ok ? "allow" : "deny";
    ev->reason = js_reason_name(ok ? JS_R_OK : err->reason);
    ev->message = ok ? NULL : err->msg;
    ev->key = res->key_name;
    ev->kid = res->kid;
    ev->alg = res->alg;
    ev->jti = ok ? res->jti : NULL;
    ev->sub = res->sub[0] != '\0' ? res->sub : NULL;
    ev->aud_json = res->aud;
    ev->iat = ok ? res->issued_at : 0;
    ev->exp = ok ? res->expires_at : 0;
    ev->scopes = ok ? res->scopes : NULL;
    ev->token_sha256 = ok ? res->token_sha256 : NULL;
    ev->policy_hash = policy_hash;
}

/* Sends an allowed token once its audit record is durable; runs on the
 * audit writer thread (grpc_call_start_batch may be called from any thread,
 * and this is the call's only batch). */
static void sign_audit_done(void *ctx, js_status st, uint64_t seq, const js_err *aerr)
{
    call_ctx *c = ctx;
    js_err err;
    js_err_clear(&err);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (st == JS_OK) {
        Jwtsigner__V1__SignJwtResponse resp = JWTSIGNER__V1__SIGN_JWT_RESPONSE__INIT;
        resp.jwt = c->res.jwt;
        resp.kid = c->res.kid;
        resp.jti = c->res.jti;
        resp.issued_at = c->res.issued_at;
        resp.expires_at = c->res.expires_at;
        resp.audit_seq = seq;
        len = jwtsigner__v1__sign_jwt_response__get_packed_size(&resp);
        buf = malloc(len > 0 ? len : 1);
        if (buf == NULL)
            st = js_err_set(&err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        else
            jwtsigner__v1__sign_jwt_response__pack(&resp, buf);
    } else {
        /* Fail closed: no token leaves without its record. */
        err = *aerr;
    }
    grpc_status_code code = rpc_status_code(st);
    js_server *srv = c->w->srv;
    log_sign(c, code, &err, st == JS_OK ? seq : 0);
    rpc_reply(c, code, err.reason, err.msg, buf, len, 0); /* c may be gone after this */
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    atomic_fetch_sub(&srv->awaiting_audit, 1);
}

void rpc_handle_sign(call_ctx *c)
{
    c->t0_us = js_mono_us();
    worker *w = c->w;
    js_server *srv = w->srv;
    js_err err;
    js_err_clear(&err);
    c->peer = grpc_call_get_peer(c->call);
    grpc_slice raw = grpc_empty_slice();
    Jwtsigner__V1__SignJwtRequest *req = NULL;
    uint64_t retry_ms = 0;
    const js_policy *policy = js_policy_cache_get(&w->policy, srv->policies);
    const js_frozen *frozen = js_snapshot_cache_get(&w->frozen, srv->frozen);
    js_admission adm;

    /* identity -> match -> frozen -> rate, before the body is decoded. */
    js_status st = rpc_call_identity(c->call, c->identity, sizeof(c->identity), &err);
    if (c->request == NULL) {
        rpc_no_message(c, "SignJwt");
        return;
    }
    if (st == JS_OK)
        st = js_service_admit(srv->svc, policy, frozen, c->identity, &adm, &retry_ms, &err);
    /* A refused caller (no identity, no match, frozen) within its denial
     * budget still gets its request envelope decoded, for the request_id its
     * audit record and log line carry. Beyond the budget, and when rate
     * limited, nothing is decoded: a flood must stay cheap. */
    bool decided = st != JS_OK && st != JS_ELIMIT;
    bool full = decided ? rpc_denial_in_full(c) : true;
    bool decode = st == JS_OK || (decided && full);
    js_err derr;
    js_err_clear(&derr);
    js_status dst = decode ? rpc_read_request(c->request, &raw, &derr) : JS_EDENIED;
    if (dst == JS_OK) {
        /* pbcheck first: protobuf-c would cut a string at an embedded NUL. */
        ProtobufCMessage *m = NULL;
        dst = js_pb_unpack(&jwtsigner__v1__sign_jwt_request__descriptor, GRPC_SLICE_START_PTR(raw),
                           GRPC_SLICE_LENGTH(raw), &m, &derr);
        req = (Jwtsigner__V1__SignJwtRequest *)m;
    }
    /* Only log and record a request_id we accept (printable, bounded). */
    if (req != NULL && js_request_id_check(req->request_id, NULL) == JS_OK)
        snprintf(c->request_id, sizeof(c->request_id), "%s", req->request_id);
    if (st == JS_OK && dst != JS_OK) {
        st = dst;
        err = derr;
    }
    if (st == JS_OK && req != NULL) {
        adm.keys = js_snapshot_cache_get(&w->keys, srv->keys);
        js_sign_request sr = {req->claims_json.data, req->claims_json.len, req->key,
                              req->request_id};
        st = js_service_sign(srv->svc, w->session, &adm, &sr, &c->res, &err);
    }
    if (req != NULL)
        jwtsigner__v1__sign_jwt_request__free_unpacked(req, NULL);
    grpc_slice_unref(raw);
    /* Denials decided after admission (malformed request, policy) take
     * their budget decision now; errors (HSM, audit) are never folded. */
    if (!decided && st != JS_OK && st != JS_ELIMIT && st != JS_EUNAVAIL && st != JS_EINTERNAL)
        full = rpc_denial_in_full(c);

    if (st == JS_OK) {
        /* The reply goes out from sign_audit_done once the record is durable. */
        js_audit_event ev;
        sign_event(c, &err, js_policy_hash_hex(policy), &ev);
        js_err aerr;
        js_err_clear(&aerr);
        atomic_fetch_add(&srv->awaiting_audit, 1);
        if (js_audit_submit(srv->audit, &ev, sign_audit_done, c, &aerr) == JS_OK)
            return;
        atomic_fetch_sub(&srv->awaiting_audit, 1);
        js_sign_result_clear(&c->res); /* fail closed: the token is discarded */
        err = aerr;
        st = aerr.status;
    } else if (st == JS_ELIMIT || !full) {
        /* Folded: at most one counted record (and one log line) per caller,
         * per reason, per second (FORMAT.md). */
        rpc_fold_denial(c, "sign", err.reason);
        grpc_status_code code = rpc_status_code(st);
        js_metrics_request(srv->metrics, "SignJwt", c->identity, rpc_decision_of(code),
                           js_reason_name(err.reason));
        if (st == JS_ELIMIT)
            js_metrics_rate_limited(srv->metrics, c->identity);
        rpc_reply(c, code, err.reason, err.msg, NULL, 0, retry_ms);
        return;
    } else {
        /* A denial carries no token, so its reply need not wait for the disk;
         * if the log is failing, the refusal still stands. */
        js_audit_event ev;
        sign_event(c, &err, js_policy_hash_hex(policy), &ev);
        /* While the log is failing every such denial would say so: one line
         * a second is enough (the failure itself is logged by the audit log
         * and /healthz). */
        if (js_audit_submit(srv->audit, &ev, NULL, NULL, NULL) != JS_OK &&
            js_denials_admit(srv->quiet, "audit_record_lost", js_mono_ms()))
            js_log_event("warn", "audit_record_lost",
                         "a denial could not be queued for the audit log");
    }
    grpc_status_code code = rpc_status_code(st);
    log_sign(c, code, &err, 0);
    rpc_reply(c, code, err.reason, err.msg, NULL, 0, retry_ms);
}
