/*
 * rpc_sign.c - the SignJwt handler: the caller's identity, the snapshots in
 * force and a decoder for the request go to the pipeline (service.h), which
 * returns one decision (decision.h); the audit record, the log line, the
 * metrics and the reply are all built from that decision. An allowed token
 * goes out only once its audit record is durable.
 */
#include "rpc_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* The request body, decoded when the pipeline asks for it; it lives until
 * the decision is made. */
typedef struct sign_body {
    call_ctx *c;
    const rpc_sign_variant *v;
    grpc_slice raw;
    ProtobufCMessage *msg;
} sign_body;

static js_status decode_body(void *ctx, js_sign_request *out, js_err *err)
{
    sign_body *b = ctx;
    JS_GUARD(rpc_read_request(b->c->request, &b->raw, err));
    /* pbcheck first: protobuf-c would cut a string at an embedded NUL. */
    JS_GUARD(js_pb_unpack(b->v->request, GRPC_SLICE_START_PTR(b->raw), GRPC_SLICE_LENGTH(b->raw),
                          &b->msg, err));
    b->v->fields(b->msg, out);
    return JS_OK;
}

static void sign_body_clear(sign_body *b)
{
    if (b->msg != NULL)
        protobuf_c_message_free_unpacked(b->msg, NULL);
    grpc_slice_unref(b->raw);
}

static bool budget(void *ctx)
{
    return rpc_denial_in_full(ctx);
}

/* The request log line and the metrics of a decision recorded in full. */
static void sign_log(const call_ctx *c, const char *method, uint64_t seq)
{
    const js_decision *d = &c->d;
    const js_sign_result *t = &d->token;
    bool ok = d->kind == JS_DECISION_ALLOW;
    char seqbuf[24] = "";
    if (seq > 0)
        snprintf(seqbuf, sizeof(seqbuf), "%llu", (unsigned long long)seq);
    js_reqlog log = rpc_reqlog_of(method, c->identity, c->peer, d, c->t0_us);
    log.request_id = d->request_id;
    log.key = t->key_name;
    log.kid = t->kid;
    log.jti = ok ? t->jti : NULL;
    log.sub = t->sub;
    log.aud = t->aud;
    log.audit_seq = seqbuf;
    js_reqlog_emit(&log);
    js_metrics_sign(c->w->srv->metrics, method, c->identity, d, log.latency_us);
}

/* The audit record of a SignJwt decision (audit/FORMAT.md §3.2). */
static void sign_event(const call_ctx *c, const char *policy_hash, js_audit_event *ev)
{
    const js_decision *d = &c->d;
    const js_sign_result *t = &d->token;
    bool ok = d->kind == JS_DECISION_ALLOW;
    memset(ev, 0, sizeof(*ev));
    ev->type = "sign";
    ev->caller = c->identity;
    ev->peer = c->peer;
    ev->request_id = d->request_id;
    ev->decision = js_decision_name(d->kind);
    ev->reason = js_reason_name(d->reason);
    ev->message = ok ? NULL : d->msg;
    ev->key = t->key_name;
    ev->kid = t->kid;
    ev->alg = t->alg;
    ev->jti = ok ? t->jti : NULL;
    ev->sub = t->sub;
    ev->aud_json = t->aud;
    ev->cnf_json = t->cnf_json; /* RFC 7800, as the token carries it (FORMAT.md §3) */
    ev->iat = ok ? t->issued_at : 0;
    ev->exp = ok ? t->expires_at : 0;
    ev->scopes = ok ? t->scopes : NULL;
    ev->token_sha256 = ok ? t->token_sha256 : NULL;
    ev->policy_hash = policy_hash;
}

/* The variant of a call's signing method: SignJwt or ExternalJWTSigner Sign. */
static const rpc_sign_variant *variant_of(const call_ctx *c);

/* Puts an allowed token into the issued-token index (tokindex.h) once its
 * record is durable, before it is released: introspection must never call a
 * released token forged. A full index fails the call (fail closed). */
static js_status index_token(js_tokindex *ix, const call_ctx *c, js_err *err)
{
    const js_sign_result *t = &c->d.token;
    js_tok_info info = {
        .jti = (char *)t->jti,
        .caller = (char *)c->identity,
        .sub = t->sub,
        .aud_json = t->aud,
        .scope = t->scopes,
        .cnf_json = t->cnf_json,
        .kid = (char *)t->kid,
        .iat = t->issued_at,
        .exp = t->expires_at,
    };
    memcpy(info.sha256, t->token_digest, sizeof(info.sha256));
    return js_tokindex_add(ix, &info, (int64_t)time(NULL), err);
}

/* Sends an allowed token once its audit record is durable, or fails closed.
 * Runs on the audit notifier thread or the audit writer thread (auditlog.h,
 * "Threads that run callbacks"); grpc_call_start_batch may be called from
 * any thread, and this is the call's only batch. */
static void sign_audit_done(void *ctx, js_status st, uint64_t seq, const js_err *aerr)
{
    call_ctx *c = ctx;
    js_decision *d = &c->d;
    const rpc_sign_variant *v = variant_of(c);
    uint8_t *buf = NULL;
    size_t len = 0;
    js_server *srv = c->w->srv;
    if (st == JS_OK) {
        js_err perr;
        js_err_clear(&perr);
        if ((srv->index != NULL && index_token(srv->index, c, &perr) != JS_OK) ||
            v->pack(d, seq, &buf, &len, &perr) != JS_OK)
            js_decision_fail(d, &perr);
    } else {
        /* Fail closed: no token leaves without its record. */
        js_decision_fail(d, aerr);
    }
    /* The record is durable whenever st is JS_OK, even if the reply then
     * failed: the log line names it so the two can be matched. */
    sign_log(c, v->method, st == JS_OK ? seq : 0);
    rpc_reply_decision(c, d, buf, len); /* c may be gone after this */
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    rpc_audit_wait_end(srv);
}

/* ---- SignJwt ---- */

static void signjwt_fields(const ProtobufCMessage *m, js_sign_request *out)
{
    const Jwtsigner__V1__SignJwtRequest *r = (const Jwtsigner__V1__SignJwtRequest *)m;
    *out = (js_sign_request){r->claims_json.data, r->claims_json.len, r->key, r->request_id};
}

/* The caller identity from its verified client certificate. */
static js_status signjwt_identity(call_ctx *c, js_err *err)
{
    c->peer = grpc_call_get_peer(c->call);
    return rpc_call_identity(c->call, c->identity, sizeof(c->identity), err);
}

static js_status signjwt_pack(const js_decision *d, uint64_t audit_seq, uint8_t **buf, size_t *len,
                              js_err *err)
{
    Jwtsigner__V1__SignJwtResponse resp = JWTSIGNER__V1__SIGN_JWT_RESPONSE__INIT;
    resp.jwt = d->token.jwt;
    resp.kid = (char *)d->token.kid;
    resp.jti = (char *)d->token.jti;
    resp.issued_at = d->token.issued_at;
    resp.expires_at = d->token.expires_at;
    resp.audit_seq = audit_seq;
    *len = jwtsigner__v1__sign_jwt_response__get_packed_size(&resp);
    *buf = malloc(*len > 0 ? *len : 1);
    JS_ENSURE_ALLOC(*buf, err);
    jwtsigner__v1__sign_jwt_response__pack(&resp, *buf);
    return JS_OK;
}

static const rpc_sign_variant k_signjwt = {
    .method = JS_METHOD_SIGN_JWT,
    .request = &jwtsigner__v1__sign_jwt_request__descriptor,
    .fields = signjwt_fields,
    .decide = js_service_decide,
    .identity = signjwt_identity,
    .pack = signjwt_pack,
};

static const rpc_sign_variant *variant_of(const call_ctx *c)
{
    return c->kind == CALL_K8S ? rpc_k8s_sign_variant : &k_signjwt;
}

void rpc_handle_sign(call_ctx *c)
{
    rpc_sign_run(c, &k_signjwt);
}

/* ---- shared by the signing methods ---- */

void rpc_sign_run(call_ctx *c, const rpc_sign_variant *v)
{
    c->t0_us = js_mono_us();
    worker *w = c->w;
    js_server *srv = w->srv;
    /* Counted from the start of the handler, not from the audit hand-off: a
     * cancelled shutdown waits for this count to reach 0 before it joins the
     * workers and frees the server, so no handler may then still be between
     * its work (the HSM may be slow) and handing the call to the audit log,
     * whose callback uses the server. Every path below ends it once. */
    rpc_audit_wait_begin(srv);
    /* This call's record is on its way: the audit writer may hold a batch
     * for it (group commit). Every path below withdraws it once. */
    js_audit_expect(srv->audit);
    js_err ierr;
    js_err_clear(&ierr);
    js_status ist = v->identity(c, &ierr);
    if (c->request == NULL) {
        js_audit_expect_cancel(srv->audit);
        rpc_no_message(c, v->method);
        rpc_audit_wait_end(srv);
        return;
    }
    const js_policy *policy = js_policy_cache_get(&w->policy, srv->policies);
    sign_body body = {c, v, grpc_empty_slice(), NULL};
    js_sign_input in = {
        .identity = ist == JS_OK ? c->identity : NULL,
        .identity_err = &ierr,
        .policy = policy,
        .frozen = js_snapshot_cache_get(&w->frozen, srv->frozen),
        .keys = js_snapshot_cache_get(&w->keys, srv->keys),
        .session = w->session,
        .decode = decode_body,
        .decode_ctx = &body,
        .in_full = budget,
        .budget_ctx = c,
    };
    js_decision *d = &c->d;
    v->decide(srv->svc, &in, d);
    sign_body_clear(&body);

    js_audit_event ev;
    if (d->kind == JS_DECISION_ALLOW) {
        /* The reply goes out from sign_audit_done once the record is durable. */
        sign_event(c, js_policy_hash_hex(policy), &ev);
        js_err aerr;
        js_err_clear(&aerr);
        if (js_audit_submit_expected(srv->audit, &ev, sign_audit_done, c, &aerr) == JS_OK)
            return; /* sign_audit_done ends the count */
        /* Fail closed: the token is discarded. Whatever the log said, this
         * is the signer's failure, never the caller's: an error. */
        if (js_decision_kind_of(aerr.status) != JS_DECISION_ERROR)
            aerr.status = JS_EUNAVAIL;
        js_decision_fail(d, &aerr);
    } else if (d->folded) {
        /* Folded: at most one counted record (and one log line) per caller,
         * per reason, per second (FORMAT.md §3.1). */
        js_audit_expect_cancel(srv->audit);
        rpc_fold_denial(c, "sign", d->reason);
        js_metrics_sign(srv->metrics, v->method, c->identity, d, 0);
        rpc_reply_decision(c, d, NULL, 0); /* c may be gone after this */
        rpc_audit_wait_end(srv);
        return;
    } else {
        /* A refusal carries no token, so its reply need not wait for the
         * disk; if the log is failing, the refusal still stands. */
        sign_event(c, js_policy_hash_hex(policy), &ev);
        /* While the log is failing every such refusal would say so: one line
         * a second is enough (the failure itself is logged by the audit log
         * and /healthz). */
        if (js_audit_submit_expected(srv->audit, &ev, NULL, NULL, NULL) != JS_OK &&
            js_denials_admit(srv->quiet, "audit_record_lost", js_mono_ms()))
            js_log_event("warn", "audit_record_lost",
                         "a denial could not be queued for the audit log");
    }
    sign_log(c, v->method, 0);
    rpc_reply_decision(c, d, NULL, 0); /* c may be gone after this */
    rpc_audit_wait_end(srv);
}
