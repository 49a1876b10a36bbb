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
#include "status.h"

/* The method's label in logs and metrics. */
#define METHOD_NAME "Introspect"

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
static js_status pack_answer(const js_introspection *r, char *json, uint8_t **buf, size_t *len,
                             js_err *err)
{
    js_status st = JS_OK;
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
    return st;
}

/* The request, read once the caller is admitted (status.h). The token is
 * a bearer credential: every copy of it is wiped. */
typedef struct status_body {
    call_ctx *c;
    Jwtsigner__V1__IntrospectRequest *rq;
} status_body;

static js_status read_token(void *ctx, const char **token, size_t *len, js_err *err)
{
    status_body *b = ctx;
    grpc_slice raw = grpc_empty_slice();
    JS_GUARD(rpc_read_request(b->c->request, &raw, err));
    ProtobufCMessage *m = NULL;
    js_status st = js_pb_unpack(&jwtsigner__v1__introspect_request__descriptor,
                                GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), &m, err);
    OPENSSL_cleanse(GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw));
    grpc_slice_unref(raw);
    JS_GUARD(st);
    b->rq = (Jwtsigner__V1__IntrospectRequest *)m;
    *token = b->rq->token;
    *len = strlen(b->rq->token);
    return JS_OK;
}

static const char *grpc_status_of(const js_decision *d, void *ctx)
{
    (void)ctx;
    return rpc_status_name(rpc_status_code(d->status));
}

void rpc_handle_status(call_ctx *c)
{
    c->t0_us = js_mono_us();
    js_server *srv = c->w->srv;
    c->peer = grpc_call_get_peer(c->call);
    js_err ierr;
    js_err_clear(&ierr);
    js_status ist = rpc_call_identity(c->call, c->identity, sizeof(c->identity), &ierr);
    if (ist != JS_OK)
        c->identity[0] = '\0';
    if (c->request == NULL) {
        rpc_no_message(c, METHOD_NAME);
        return;
    }
    status_body body = {c, NULL};
    js_status_call call = {
        .method = METHOD_NAME,
        .identity = c->identity,
        .refusal = ist != JS_OK ? &ierr : NULL,
        .peer = c->peer,
        .policy = js_policy_cache_get(&c->w->policy, srv->policies),
        .keys = js_snapshot_cache_get(&c->w->keys, srv->keys),
        .token = read_token,
        .token_ctx = &body,
        .t0_us = c->t0_us,
        .status_name = grpc_status_of,
    };
    js_status_deps deps = {
        .audit = srv->audit,
        .metrics = srv->metrics,
        .denials = srv->denials,
        .quiet = srv->quiet,
        .rate = srv->introspect_rate,
        .index = srv->index,
        .leeway = srv->cfg->introspection_leeway,
    };
    js_introspection res;
    char *json = NULL;
    js_decision *d = &c->d;
    js_status_introspect(&deps, &call, d, &res, &json);
    if (body.rq != NULL) {
        OPENSSL_cleanse(body.rq->token, strlen(body.rq->token));
        jwtsigner__v1__introspect_request__free_unpacked(body.rq, NULL);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    js_err perr;
    js_err_clear(&perr);
    if (d->kind == JS_DECISION_ALLOW && pack_answer(&res, json, &buf, &len, &perr) != JS_OK)
        js_decision_fail(d, &perr);
    js_introspection_clear(&res);
    free(json);
    rpc_reply_decision(c, d, buf, len); /* c may be gone after this */
    free(buf);
}
