/*
 * server.c - gRPC C core server for jwtsigner.v1.Signer (see server.h).
 *
 * Call flow per worker thread (all on the worker's own completion queue):
 *   request_registered_call (armed several times per method)
 *     -> event: re-arm, decode, decide and sign with the worker's own HSM
 *        session, then one reply batch: SEND_INITIAL_METADATA, SEND_MESSAGE
 *        (on success), SEND_STATUS_FROM_SERVER, RECV_CLOSE_ON_SERVER
 *     -> event: reply done, release everything.
 * Initial metadata is always sent: a status without it leaves a gRPC client
 * waiting until its deadline. A generic request_call stays armed so that an
 * unregistered method is answered UNIMPLEMENTED instead of hanging.
 */
#include "server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>

#include "auditlog.h"
#include "control.h"
#include "denials.h"
#include "frozen.h"
#include "identity.h"
#include "jwtsigner/v1/signer.pb-c.h"
#include <protobuf-c/protobuf-c.h>
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"
#include "policy_store.h"

#define METHOD_SIGN "/jwtsigner.v1.Signer/SignJwt"
#define METHOD_JWKS "/jwtsigner.v1.Signer/GetJwks"
/* Outstanding requested calls per worker: enough to keep a worker busy
 * while its last reply is in flight. */
#define PENDING_SIGN    8
#define PENDING_JWKS    2
#define PENDING_UNKNOWN 1
/* claims_json is at most 16 KiB; leave room for the other fields. */
#define MAX_REQUEST_BYTES (64 * 1024)
#define PEM_MAX_BYTES     (1024 * 1024)
#define MAX_SAN_NAMES     32

typedef enum call_kind { CALL_SIGN, CALL_JWKS, CALL_ADMIN, CALL_UNKNOWN } call_kind;

/* jwtsigner.v1.Admin, in the order of the proto. */
typedef enum admin_method {
    ADMIN_ROTATE,
    ADMIN_REVOKE,
    ADMIN_INCIDENT,
    ADMIN_FREEZE,
    ADMIN_UNFREEZE,
    ADMIN_RELOAD,
    ADMIN_STATUS,
    ADMIN_ROTATE_AUDIT,
    ADMIN_COUNT
} admin_method;

static const char *const k_admin_paths[ADMIN_COUNT] = {
    "/jwtsigner.v1.Admin/RotateKey",       "/jwtsigner.v1.Admin/RevokeKey",
    "/jwtsigner.v1.Admin/SetIncidentMode", "/jwtsigner.v1.Admin/FreezeCaller",
    "/jwtsigner.v1.Admin/UnfreezeCaller",  "/jwtsigner.v1.Admin/ReloadPolicy",
    "/jwtsigner.v1.Admin/GetStatus",       "/jwtsigner.v1.Admin/RotateAuditKey",
};
static const char *const k_admin_actions[ADMIN_COUNT] = {
    "rotate", "revoke", "incident", "freeze", "unfreeze", "reload", "status", "rotate_audit_key",
};
typedef enum call_state { CALL_REQUESTED, CALL_REPLYING } call_state;

typedef struct worker worker;

typedef struct call_ctx {
    call_kind kind;
    admin_method admin; /* CALL_ADMIN only */
    call_state state;
    worker *w;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details; /* generic calls only */
    grpc_byte_buffer *request;
    grpc_byte_buffer *reply;
    int cancelled;
    /* An allowed SignJwt waits here for its audit record to be durable. */
    int64_t t0_us;
    char *peer;
    char identity[IDENTITY_MAX + 1];
    char request_id[JS_REQUEST_ID_MAX + 1];
    js_sign_result res;
} call_ctx;

struct worker {
    int idx;
    js_server *srv;
    grpc_completion_queue *cq;
    js_hsm_session *session;
    js_policy_cache policy;   /* this worker's view of the policy in force */
    js_snapshot_cache frozen; /* ... and of the callers frozen at run time */
    js_snapshot_cache keys;   /* ... and of the keyring */
    pthread_t thread;
    int started;
};

struct js_server {
    const js_config *cfg;
    const js_service *svc;
    js_policy_store *policies;
    js_snapshot_store *frozen;
    js_snapshot_store *keys;
    js_control *control;
    js_audit *audit;
    js_metrics *metrics;
    js_denials *denials;    /* denials recorded in full vs folded */
    js_denials *admin_rate; /* Admin calls per administrator */
    js_denials *quiet;      /* log lines of allowed GetJwks calls */
    grpc_server *server;
    grpc_completion_queue *shutdown_cq;
    void *method_sign;
    void *method_jwks;
    void *method_admin[ADMIN_COUNT];
    worker *workers;
    int nworkers;
    int port;
    int grpc_started;
    atomic_bool shutting_down;
    int drained;   /* the shutdown tag has come */
    int cancelled; /* calls were cancelled when the drain grace ran out */
    /* Allowed SignJwt calls waiting for their audit record; their replies
     * go out from the audit notifier and need the worker queues alive. */
    atomic_int awaiting_audit;
};

/* The one mapping from our error convention to gRPC status codes. */
static grpc_status_code status_to_grpc(js_status st)
{
    switch (st) {
    case JS_OK:
        return GRPC_STATUS_OK;
    case JS_EINVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case JS_EDENIED:
        return GRPC_STATUS_PERMISSION_DENIED;
    case JS_ELIMIT:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case JS_EUNAVAIL:
        return GRPC_STATUS_UNAVAILABLE;
    case JS_ENOTFOUND:
        return GRPC_STATUS_NOT_FOUND;
    case JS_ESTATE:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case JS_EINTERNAL:
    case JS_ECONFIG:
    default:
        return GRPC_STATUS_INTERNAL;
    }
}

static const char *grpc_status_name(grpc_status_code c)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((int)c >= 0 && (size_t)c < sizeof(names) / sizeof(names[0]))
        return names[c];
    return "UNKNOWN";
}

static grpc_arg int_arg(const char *key, int value)
{
    grpc_arg a;
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key;
    a.value.integer = value;
    return a;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- call contexts -------------------------------------------------------------- */

static void call_free(call_ctx *c)
{
    if (c == NULL)
        return;
    grpc_metadata_array_destroy(&c->req_md);
    if (c->kind == CALL_UNKNOWN)
        grpc_call_details_destroy(&c->details);
    if (c->request != NULL)
        grpc_byte_buffer_destroy(c->request);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    if (c->call != NULL)
        grpc_call_unref(c->call);
    js_sign_result_clear(&c->res);
    gpr_free(c->peer);
    free(c);
}

/* Arms one requested call of `kind` (and admin method) on worker w's queue. */
static int call_arm_method(worker *w, call_kind kind, admin_method am)
{
    js_server *srv = w->srv;
    if (atomic_load(&srv->shutting_down))
        return 0;
    call_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->kind = kind;
    c->admin = am;
    c->state = CALL_REQUESTED;
    c->w = w;
    grpc_metadata_array_init(&c->req_md);
    grpc_call_error rc;
    if (kind == CALL_UNKNOWN) {
        grpc_call_details_init(&c->details);
        rc = grpc_server_request_call(srv->server, &c->call, &c->details, &c->req_md, w->cq, w->cq,
                                      c);
    } else {
        void *method = kind == CALL_SIGN   ? srv->method_sign
                       : kind == CALL_JWKS ? srv->method_jwks
                                           : srv->method_admin[am];
        rc = grpc_server_request_registered_call(srv->server, method, &c->call, &c->deadline,
                                                 &c->req_md, &c->request, w->cq, w->cq, c);
    }
    if (rc != GRPC_CALL_OK) {
        call_free(c);
        return -1;
    }
    return 0;
}

static int call_arm(worker *w, call_kind kind)
{
    return call_arm_method(w, kind, ADMIN_COUNT);
}

/* Sends the whole reply in one batch; the completion comes back on w->cq.
 *
 * After grpc_call_start_batch succeeds, c belongs to the worker that takes the
 * completion and may be freed at any moment (this function also runs on the
 * audit writer thread): nothing here may touch c afterwards. Status details
 * and trailing metadata live in locals; gRPC copies them during the call. */
static void call_reply(call_ctx *c, grpc_status_code code, js_reason why, const char *msg,
                       const uint8_t *body, size_t body_len, uint64_t retry_after_ms)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    size_t n = 0;
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (code == GRPC_STATUS_OK && body != NULL) {
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)body, body_len);
        c->reply = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    grpc_slice details = grpc_empty_slice();
    grpc_metadata trailing[2];
    memset(trailing, 0, sizeof(trailing));
    size_t ntrailing = 0;
    if (code != GRPC_STATUS_OK) {
        /* "reason: message": the stable code first, for scripts and humans. */
        const char *reason = js_reason_name(why);
        char text[JS_MSG_MAX + 80];
        snprintf(text, sizeof(text), "%s: %s", reason, msg);
        details = grpc_slice_from_copied_string(text);
        if (reason != NULL && reason[0] != '\0') {
            trailing[ntrailing].key = grpc_slice_from_static_string("jwt-signer-reason");
            trailing[ntrailing].value = grpc_slice_from_copied_string(reason);
            ntrailing++;
        }
        if (code == GRPC_STATUS_RESOURCE_EXHAUSTED && retry_after_ms > 0) {
            char ms[32];
            snprintf(ms, sizeof(ms), "%llu", (unsigned long long)retry_after_ms);
            trailing[ntrailing].key = grpc_slice_from_static_string("retry-after-ms");
            trailing[ntrailing].value = grpc_slice_from_copied_string(ms);
            ntrailing++;
        }
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = code != GRPC_STATUS_OK ? &details : NULL;
    ops[n].data.send_status_from_server.trailing_metadata_count = ntrailing;
    ops[n].data.send_status_from_server.trailing_metadata = ntrailing ? trailing : NULL;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    c->state = CALL_REPLYING;
    grpc_call_error rc = grpc_call_start_batch(c->call, ops, n, c, NULL);
    /* From here on, c may already be freed (see above). */
    grpc_slice_unref(details);
    for (size_t i = 0; i < ntrailing; i++) {
        grpc_slice_unref(trailing[i].key);
        grpc_slice_unref(trailing[i].value);
    }
    if (rc != GRPC_CALL_OK) {
        js_log_event("error", "reply_failed", "grpc_call_start_batch failed");
        call_free(c);
    }
}

/* ---- request handling ----------------------------------------------------------- */

/* Copies the request payload into one contiguous, bounded buffer. */
static js_status read_request(grpc_byte_buffer *bb, grpc_slice *out, js_err *err)
{
    JS_ENSURE(bb != NULL, err, JS_EINVAL, JS_R_REQUEST_MISSING, "request message missing");
    JS_ENSURE(grpc_byte_buffer_length(bb) <= MAX_REQUEST_BYTES, err, JS_EINVAL,
              JS_R_REQUEST_TOO_LARGE, "request is larger than %d bytes", MAX_REQUEST_BYTES);
    grpc_byte_buffer_reader r;
    JS_ENSURE(grpc_byte_buffer_reader_init(&r, bb) == 1, err, JS_EINVAL, JS_R_REQUEST_UNREADABLE,
              "request message cannot be read");
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return JS_OK;
}

/* The caller identity from the verified client certificate (identity.h). */
static js_status call_identity(grpc_call *call, char *out, size_t cap, js_err *err)
{
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    JS_ENSURE(ctx != NULL, err, JS_EDENIED, JS_R_IDENTITY_NONE, "no authenticated peer");
    js_status st;
    if (!grpc_auth_context_peer_is_authenticated(ctx)) {
        st = js_err_set(err, JS_EDENIED, JS_R_IDENTITY_NONE, "peer is not authenticated");
        goto done;
    }
    const char *uris[MAX_SAN_NAMES];
    const char *dns[MAX_SAN_NAMES];
    identity_names names = {uris, 0, dns, 0, NULL};
    /* gRPC gives each name with its length; identity_select reads C strings,
     * so a name with an embedded NUL ("spiffe://x/issuer-a\0.evil") would be
     * cut short into someone else's identity: refuse it here. */
    static const struct {
        const char *property;
        const char *what;
    } k_names[] = {
        {"peer_uri", "URI SAN"}, {"peer_dns", "DNS SAN"}, {GRPC_X509_CN_PROPERTY_NAME, "CN"}};
    for (size_t k = 0; k < sizeof(k_names) / sizeof(k_names[0]); k++) {
        grpc_auth_property_iterator it =
            grpc_auth_context_find_properties_by_name(ctx, k_names[k].property);
        const grpc_auth_property *p;
        while ((p = grpc_auth_property_iterator_next(&it)) != NULL) {
            if (p->value == NULL || strnlen(p->value, p->value_length) != p->value_length) {
                st = js_err_set(err, JS_EDENIED, JS_R_IDENTITY_INVALID,
                                "client certificate %s contains a NUL character", k_names[k].what);
                goto done;
            }
            if (k == 0 && names.nuris < MAX_SAN_NAMES)
                uris[names.nuris++] = p->value;
            else if (k == 1 && names.ndns < MAX_SAN_NAMES)
                dns[names.ndns++] = p->value;
            else if (k == 2 && names.cn == NULL)
                names.cn = p->value;
        }
    }
    st = identity_select(&names, out, cap, err);
done:
    grpc_auth_context_release(ctx);
    return st;
}

static const char *decision_of(grpc_status_code code)
{
    if (code == GRPC_STATUS_OK)
        return "allow";
    if (code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_UNAVAILABLE)
        return "error";
    return "deny";
}

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
        .decision = decision_of(code),
        .status = grpc_status_name(code),
        .reason = js_reason_name(code == GRPC_STATUS_OK ? JS_R_OK : err->reason),
        .message = code == GRPC_STATUS_OK ? NULL : err->msg,
        .key = res->key_name,
        .kid = res->kid,
        .jti = code == GRPC_STATUS_OK ? res->jti : NULL,
        .sub = res->sub,
        .aud = res->aud,
        .audit_seq = seqbuf,
        .latency_us = mono_us() - c->t0_us,
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
    grpc_status_code code = status_to_grpc(st);
    js_server *srv = c->w->srv;
    log_sign(c, code, &err, st == JS_OK ? seq : 0);
    call_reply(c, code, err.reason, err.msg, buf, len, 0); /* c may be gone after this */
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    atomic_fetch_sub(&srv->awaiting_audit, 1);
}

/* Milliseconds of the monotonic clock, for the budgets (denials.h). */
static int64_t mono_ms(void)
{
    return mono_us() / 1000;
}

/*
 * One decision per denial (denials.h): true = audit record and log line in
 * full; false = folded into a counted record (the audit writer reports each
 * folded record as one log line, main.c). Keyed by the identity, or by the
 * peer address when there is none.
 */
static bool denial_in_full(const call_ctx *c)
{
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(c->identity, c->peer, key, sizeof(key));
    return js_denials_admit(c->w->srv->denials, key, mono_ms());
}

/* Counts a denial into its folded record: by identity, or by the peer's
 * address (without the port, which changes with every connection). */
static void fold_denial(const call_ctx *c, const char *type, js_reason why)
{
    char peer[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(NULL, c->peer, peer, sizeof(peer));
    const char *addr = strncmp(peer, "peer ", 5) == 0 ? peer + 5 : peer;
    js_audit_note_folded(c->w->srv->audit, type, c->identity, addr, js_reason_name(why));
}

/*
 * A call that ended without a request message: the client reset the stream
 * (HTTP/2 RST_STREAM, "rapid reset") or half-closed without sending one.
 * Nothing was asked, so nothing is decided: no audit record, and a log line
 * only within the caller's denial budget; the metrics count every one.
 */
static void handle_no_message(call_ctx *c, const char *method)
{
    js_server *srv = c->w->srv;
    js_metrics_request(srv->metrics, method, c->identity, "deny", "request.missing");
    /* Not a denial (nothing was asked): its log lines have their own budget,
     * so cancelled calls never use up a caller's denial budget. */
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(c->identity, c->peer, key, sizeof(key));
    if (js_denials_admit(srv->quiet, key, mono_ms())) {
        js_reqlog log = {
            .method = method,
            .caller = c->identity,
            .peer = c->peer,
            .decision = "deny",
            .status = grpc_status_name(GRPC_STATUS_CANCELLED),
            .reason = "request.missing",
            .message = "the call ended without a request message (stream reset)",
            .latency_us = mono_us() - c->t0_us,
        };
        js_reqlog_emit(&log);
    }
    call_reply(c, GRPC_STATUS_CANCELLED, JS_R_REQUEST_MISSING, "no request message", NULL, 0, 0);
}

static void handle_sign(call_ctx *c)
{
    c->t0_us = mono_us();
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
    js_status st = call_identity(c->call, c->identity, sizeof(c->identity), &err);
    if (c->request == NULL) {
        handle_no_message(c, "SignJwt");
        return;
    }
    if (st == JS_OK)
        st = js_service_admit(srv->svc, policy, frozen, c->identity, &adm, &retry_ms, &err);
    /* A refused caller (no identity, no match, frozen) within its denial
     * budget still gets its request envelope decoded, for the request_id its
     * audit record and log line carry. Beyond the budget, and when rate
     * limited, nothing is decoded: a flood must stay cheap. */
    bool decided = st != JS_OK && st != JS_ELIMIT;
    bool full = decided ? denial_in_full(c) : true;
    bool decode = st == JS_OK || (decided && full);
    js_err derr;
    js_err_clear(&derr);
    js_status dst = decode ? read_request(c->request, &raw, &derr) : JS_EDENIED;
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
        full = denial_in_full(c);

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
        fold_denial(c, "sign", err.reason);
        grpc_status_code code = status_to_grpc(st);
        js_metrics_request(srv->metrics, "SignJwt", c->identity, decision_of(code),
                           js_reason_name(err.reason));
        if (st == JS_ELIMIT)
            js_metrics_rate_limited(srv->metrics, c->identity);
        call_reply(c, code, err.reason, err.msg, NULL, 0, retry_ms);
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
            js_denials_admit(srv->quiet, "audit_record_lost", mono_ms()))
            js_log_event("warn", "audit_record_lost",
                         "a denial could not be queued for the audit log");
    }
    grpc_status_code code = status_to_grpc(st);
    log_sign(c, code, &err, 0);
    call_reply(c, code, err.reason, err.msg, NULL, 0, retry_ms);
}

static void handle_jwks(call_ctx *c)
{
    int64_t t0 = mono_us();
    js_err err;
    js_err_clear(&err);
    char identity[IDENTITY_MAX + 1] = "";
    char *peer = grpc_call_get_peer(c->call);
    uint8_t *buf = NULL;
    size_t len = 0;
    js_status st = call_identity(c->call, identity, sizeof(identity), &err);
    if (st == JS_OK && c->request != NULL) {
        /* The request message has no fields, but it must still be a
         * well-formed message (pbcheck.h). */
        grpc_slice raw = grpc_empty_slice();
        st = read_request(c->request, &raw, &err);
        if (st == JS_OK)
            st = js_pb_check_strings(&jwtsigner__v1__get_jwks_request__descriptor,
                                     GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), &err);
        grpc_slice_unref(raw);
    }
    if (st == JS_OK) {
        /* The JWKS is public: any authenticated caller may read it. */
        Jwtsigner__V1__GetJwksResponse resp = JWTSIGNER__V1__GET_JWKS_RESPONSE__INIT;
        const js_keyring *kr = js_snapshot_cache_get(&c->w->keys, c->w->srv->keys);
        resp.jwks_json = (char *)js_keyring_jwks(kr);
        len = jwtsigner__v1__get_jwks_response__get_packed_size(&resp);
        buf = malloc(len > 0 ? len : 1);
        if (buf == NULL)
            st = js_err_set(&err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        else
            jwtsigner__v1__get_jwks_response__pack(&resp, buf);
    }
    grpc_status_code code = status_to_grpc(st);
    js_reqlog log = {
        .method = "GetJwks",
        .caller = identity,
        .peer = peer,
        .decision = st == JS_OK ? "allow" : "deny",
        .status = grpc_status_name(code),
        .reason = js_reason_name(st == JS_OK ? JS_R_OK : err.reason),
        .message = st == JS_OK ? NULL : err.msg,
        .latency_us = mono_us() - t0,
    };
    /* The JWKS is cheap to serve and public, so any caller may ask often;
     * its log lines are kept within a per-caller budget (metrics count all). */
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(identity, peer, key, sizeof(key));
    if (js_denials_admit(c->w->srv->quiet, key, mono_ms()))
        js_reqlog_emit(&log);
    js_metrics_request(c->w->srv->metrics, "GetJwks", identity, log.decision, log.reason);
    call_reply(c, code, err.reason, err.msg, buf, len, 0);
    free(buf);
    gpr_free(peer);
}

/* ---- the Admin service ------------------------------------------------------------- */

/* Packs any response message into a malloc'd buffer. */
static uint8_t *pack_message(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len > 0 ? *len : 1);
    if (buf != NULL)
        protobuf_c_message_pack(m, buf);
    return buf;
}

static js_status admin_dispatch(call_ctx *c, const uint8_t *data, size_t len, const char *admin,
                                uint8_t **out, size_t *out_len, json_t *detail, js_err *err)
{
    js_control *ctl = c->w->srv->control;
    js_status st;
    switch (c->admin) {
    case ADMIN_INCIDENT: {
        ProtobufCMessage *m = NULL;
        JS_GUARD(js_pb_unpack(&jwtsigner__v1__set_incident_mode_request__descriptor, data, len, &m,
                              err));
        Jwtsigner__V1__SetIncidentModeRequest *rq = (Jwtsigner__V1__SetIncidentModeRequest *)m;
        bool on = rq->on != 0;
        st = js_admin_text("reason", rq->reason, JS_ADMIN_REASON_MAX, false, err);
        json_object_set_new(detail, "on", json_boolean(on));
        if (st == JS_OK) {
            json_object_set_new(detail, "reason", json_string(rq->reason));
            st = js_control_set_incident(ctl, on, admin, rq->reason, err);
        }
        jwtsigner__v1__set_incident_mode_request__free_unpacked(rq, NULL);
        JS_GUARD(st);
        Jwtsigner__V1__SetIncidentModeResponse r = JWTSIGNER__V1__SET_INCIDENT_MODE_RESPONSE__INIT;
        r.on = js_control_incident(ctl);
        *out = pack_message(&r.base, out_len);
        break;
    }
    case ADMIN_FREEZE:
    case ADMIN_UNFREEZE: {
        ProtobufCMessage *m = NULL;
        JS_GUARD(
            js_pb_unpack(&jwtsigner__v1__freeze_caller_request__descriptor, data, len, &m, err));
        Jwtsigner__V1__FreezeCallerRequest *rq = (Jwtsigner__V1__FreezeCallerRequest *)m;
        bool freeze = c->admin == ADMIN_FREEZE;
        st = js_admin_text("identity", rq->identity, IDENTITY_MAX, true, err);
        if (st == JS_OK)
            st = js_admin_text("reason", rq->reason, JS_ADMIN_REASON_MAX, false, err);
        if (st == JS_OK) {
            json_object_set_new(detail, "identity", json_string(rq->identity));
            json_object_set_new(detail, "reason", json_string(rq->reason));
            st = js_control_freeze(ctl, rq->identity, freeze, admin, rq->reason, err);
        }
        Jwtsigner__V1__FreezeCallerResponse r = JWTSIGNER__V1__FREEZE_CALLER_RESPONSE__INIT;
        r.identity = rq->identity;
        r.frozen = freeze;
        if (st == JS_OK)
            *out = pack_message(&r.base, out_len);
        jwtsigner__v1__freeze_caller_request__free_unpacked(rq, NULL);
        JS_GUARD(st);
        break;
    }
    case ADMIN_RELOAD: {
        JS_GUARD(
            js_pb_check_strings(&jwtsigner__v1__reload_policy_request__descriptor, data, len, err));
        char sha[65] = "";
        JS_GUARD(js_control_reload_policy(ctl, admin, sha, err));
        json_object_set_new(detail, "sha256", json_string(sha));
        Jwtsigner__V1__ReloadPolicyResponse r = JWTSIGNER__V1__RELOAD_POLICY_RESPONSE__INIT;
        r.sha256 = sha;
        *out = pack_message(&r.base, out_len);
        break;
    }
    case ADMIN_STATUS: {
        JS_GUARD(
            js_pb_check_strings(&jwtsigner__v1__get_status_request__descriptor, data, len, err));
        char *json = js_control_status_json(ctl);
        JS_ENSURE_ALLOC(json, err);
        Jwtsigner__V1__GetStatusResponse r = JWTSIGNER__V1__GET_STATUS_RESPONSE__INIT;
        r.status_json = json;
        *out = pack_message(&r.base, out_len);
        free(json);
        break;
    }
    case ADMIN_ROTATE_AUDIT:
        return js_control_rotate_audit_key(ctl, data, len, admin, out, out_len, detail, err);
    case ADMIN_ROTATE:
    case ADMIN_REVOKE:
        return js_control_key_admin(ctl, c->admin == ADMIN_ROTATE, data, len, admin, out, out_len,
                                    detail, err);
    case ADMIN_COUNT:
    default:
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_ADMIN, "unknown admin method");
    }
    JS_ENSURE(*out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    return JS_OK;
}

/*
 * Every admin call, allowed or denied, is an audit record carrying the
 * caller's identity; only identities in the policy's `admins` may act.
 * Refusals go through the denial budget like any other (a refused call is
 * queued for the log, never waits for the disk); allowed calls are never
 * folded, but an administrator gets at most JS_ADMIN_RATE calls a second
 * (burst JS_ADMIN_BURST), so a stolen admin certificate cannot turn the
 * Admin API into a flood of durable records.
 */
static void handle_admin(call_ctx *c)
{
    c->t0_us = mono_us();
    js_server *srv = c->w->srv;
    js_err err;
    js_err_clear(&err);
    c->peer = grpc_call_get_peer(c->call);
    const char *method = k_admin_paths[c->admin] + sizeof("/jwtsigner.v1.") - 1;
    grpc_slice raw = grpc_empty_slice();
    uint8_t *buf = NULL;
    size_t len = 0;
    const js_policy *policy = js_policy_cache_get(&c->w->policy, srv->policies);

    js_status st = call_identity(c->call, c->identity, sizeof(c->identity), &err);
    if (c->request == NULL) {
        handle_no_message(c, method);
        return;
    }
    if (st == JS_OK && !js_policy_is_admin(policy, c->identity))
        st = js_err_set(&err, JS_EDENIED, JS_R_ADMIN_NOT_ADMIN,
                        "caller '%s' is not an administrator (policy: admins)", c->identity);
    if (st == JS_OK && !js_denials_admit(srv->admin_rate, c->identity, mono_ms()))
        st = js_err_set(&err, JS_ELIMIT, JS_R_ADMIN_RATE_LIMITED,
                        "administrator '%s' is over %u Admin calls per second", c->identity,
                        JS_ADMIN_RATE);
    bool full = st == JS_OK || (st != JS_ELIMIT && denial_in_full(c));
    if (!full || st == JS_ELIMIT) {
        fold_denial(c, "admin", err.reason);
        grpc_status_code code = status_to_grpc(st);
        js_metrics_request(srv->metrics, method, c->identity, decision_of(code),
                           js_reason_name(err.reason));
        call_reply(c, code, err.reason, err.msg, NULL, 0, st == JS_ELIMIT ? 1000 : 0);
        return;
    }
    json_t *detail = json_object();
    if (st == JS_OK)
        st = read_request(c->request, &raw, &err);
    if (st == JS_OK)
        st = admin_dispatch(c, GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), c->identity, &buf,
                            &len, detail, &err);
    grpc_slice_unref(raw);
    grpc_status_code code = status_to_grpc(st);
    js_control_audit_admin(srv->control, c->identity, k_admin_actions[c->admin],
                           st == JS_OK ? "allow" : decision_of(code), st == JS_OK ? NULL : &err,
                           detail);
    js_reqlog log = {
        .method = method,
        .caller = c->identity,
        .peer = c->peer,
        .decision = decision_of(code),
        .status = grpc_status_name(code),
        .reason = js_reason_name(st == JS_OK ? JS_R_OK : err.reason),
        .message = st == JS_OK ? NULL : err.msg,
        .latency_us = mono_us() - c->t0_us,
    };
    js_reqlog_emit(&log);
    js_metrics_request(srv->metrics, log.method, c->identity, log.decision, log.reason);
    call_reply(c, code, err.reason, err.msg, buf, len, 0);
    free(buf);
}

static void handle_unknown(call_ctx *c)
{
    char method[256];
    size_t mlen = GRPC_SLICE_LENGTH(c->details.method);
    if (mlen >= sizeof(method))
        mlen = sizeof(method) - 1;
    memcpy(method, GRPC_SLICE_START_PTR(c->details.method), mlen);
    method[mlen] = '\0';
    char msg[320];
    snprintf(msg, sizeof(msg), "method %s is not implemented", method);
    call_reply(c, GRPC_STATUS_UNIMPLEMENTED, JS_R_RPC_UNIMPLEMENTED, msg, NULL, 0, 0);
}

/* ---- workers -------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        call_ctx *c = ev.tag;
        if (c->state == CALL_REPLYING) {
            call_free(c);
            continue;
        }
        if (!ev.success) {
            /* A requested call that will never come: the server is shutting down. */
            call_free(c);
            continue;
        }
        /* Re-arm first so the next request does not wait for this one. */
        if (call_arm_method(w, c->kind, c->admin) != 0)
            js_log_event("error", "rearm_failed", "cannot re-arm a requested call");
        switch (c->kind) {
        case CALL_SIGN:
            handle_sign(c);
            break;
        case CALL_JWKS:
            handle_jwks(c);
            break;
        case CALL_ADMIN:
            handle_admin(c);
            break;
        case CALL_UNKNOWN:
        default:
            handle_unknown(c);
            break;
        }
    }
    return NULL;
}

/* ---- set-up and tear-down ------------------------------------------------------- */

static js_status read_pem(const char *path, char **out, js_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    JS_ENSURE(f != NULL, err, JS_ECONFIG, JS_R_TLS_READ, "cannot open %s", path);
    char *buf = malloc(PEM_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    size_t n = fread(buf, 1, PEM_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n == 0 || n > PEM_MAX_BYTES) {
        OPENSSL_cleanse(buf, PEM_MAX_BYTES + 1);
        free(buf);
        return js_err_set(err, JS_ECONFIG, JS_R_TLS_READ,
                          "%s is empty, unreadable or over %d bytes", path, PEM_MAX_BYTES);
    }
    buf[n] = '\0';
    *out = buf;
    return JS_OK;
}

static void free_secret_pem(char *p)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, strlen(p));
        free(p);
    }
}

static js_status make_credentials(const js_config *cfg, grpc_server_credentials **out, js_err *err)
{
    char *cert = NULL, *key = NULL, *ca = NULL;
    js_status st = read_pem(cfg->tls_cert, &cert, err);
    if (st == JS_OK)
        st = read_pem(cfg->tls_key, &key, err);
    if (st == JS_OK)
        st = read_pem(cfg->tls_client_ca, &ca, err);
    if (st == JS_OK) {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        /* mTLS is not optional: the caller's certificate is its identity. */
        *out = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
        if (*out == NULL)
            st = js_err_set(err, JS_ECONFIG, JS_R_TLS_CREDENTIALS, "cannot create TLS credentials");
    }
    free(cert);
    free_secret_pem(key);
    free(ca);
    return st;
}

js_status js_server_new(const js_server_deps *deps, js_server **out, js_err *err)
{
    *out = NULL;
    js_server *srv = calloc(1, sizeof(*srv));
    JS_ENSURE_ALLOC(srv, err);
    const js_config *cfg = deps->cfg;
    js_hsm *hsm = deps->hsm;
    srv->cfg = cfg;
    srv->svc = deps->svc;
    srv->policies = deps->policies;
    srv->frozen = deps->frozen;
    srv->keys = deps->keys;
    srv->metrics = deps->metrics;
    srv->control = deps->control;
    srv->audit = deps->audit;
    srv->denials = deps->denials;
    srv->admin_rate = deps->admin_rate;
    srv->quiet = deps->quiet;
    atomic_init(&srv->shutting_down, false);
    atomic_init(&srv->awaiting_audit, 0);
    srv->nworkers = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (srv->nworkers <= 0)
        srv->nworkers = 1;
    js_status st = JS_OK;
    grpc_server_credentials *creds = NULL;

    srv->workers = calloc((size_t)srv->nworkers, sizeof(*srv->workers));
    if (srv->workers == NULL) {
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < srv->nworkers; i++) {
        srv->workers[i].idx = i;
        srv->workers[i].srv = srv;
        st = js_hsm_session_open(hsm, &srv->workers[i].session, err);
        if (st != JS_OK)
            goto fail;
    }

    /* Limits against hostile peers (server.h lists them with their reasons). */
    grpc_arg args[] = {
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, MAX_REQUEST_BYTES),
        int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, 4 * 1024 * 1024),
        int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, JS_GRPC_HANDSHAKE_TIMEOUT_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, JS_GRPC_MAX_CONNECTION_IDLE_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_AGE_MS, JS_GRPC_MAX_CONNECTION_AGE_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, JS_GRPC_MAX_CONNECTION_AGE_GRACE_MS),
        int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, JS_GRPC_KEEPALIVE_TIME_MS),
        int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, JS_GRPC_KEEPALIVE_TIMEOUT_MS),
        int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                JS_GRPC_MIN_RECV_PING_INTERVAL_MS),
        int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2),
        int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, JS_GRPC_MAX_CONCURRENT_STREAMS),
        int_arg(GRPC_ARG_MAX_METADATA_SIZE, JS_GRPC_MAX_METADATA_BYTES),
    };
    grpc_channel_args chargs = {sizeof(args) / sizeof(args[0]), args};
    srv->server = grpc_server_create(&chargs, NULL);
    srv->method_sign = grpc_server_register_method(srv->server, METHOD_SIGN, NULL,
                                                   GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    srv->method_jwks = grpc_server_register_method(srv->server, METHOD_JWKS, NULL,
                                                   GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    for (int m = 0; m < ADMIN_COUNT; m++)
        srv->method_admin[m] = grpc_server_register_method(
            srv->server, k_admin_paths[m], NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    for (int i = 0; i < srv->nworkers; i++) {
        srv->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(srv->server, srv->workers[i].cq, NULL);
    }
    srv->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);

    st = make_credentials(cfg, &creds, err);
    if (st != JS_OK)
        goto fail;
    const char *listen = deps->listen != NULL ? deps->listen : cfg->listen;
    srv->port = grpc_server_add_http2_port(srv->server, listen, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        st = js_err_set(err, JS_ECONFIG, JS_R_LISTEN_BIND, "cannot listen on %s", listen);
        goto fail;
    }
    *out = srv;
    return JS_OK;
fail:
    js_server_free(srv);
    return st;
}

int js_server_port(const js_server *srv)
{
    return srv->port;
}

int js_server_workers(const js_server *srv)
{
    return srv->nworkers;
}

js_status js_server_start(js_server *srv, js_err *err)
{
    grpc_server_start(srv->server);
    srv->grpc_started = 1;
    for (int i = 0; i < srv->nworkers; i++) {
        worker *w = &srv->workers[i];
        for (int k = 0; k < PENDING_SIGN; k++)
            JS_ENSURE(call_arm(w, CALL_SIGN) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        for (int k = 0; k < PENDING_JWKS; k++)
            JS_ENSURE(call_arm(w, CALL_JWKS) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        for (int m = 0; m < ADMIN_COUNT; m++)
            JS_ENSURE(call_arm_method(w, CALL_ADMIN, (admin_method)m) == 0, err, JS_EINTERNAL,
                      JS_R_SERVER_ARM, "cannot request calls");
        for (int k = 0; k < PENDING_UNKNOWN; k++)
            JS_ENSURE(call_arm(w, CALL_UNKNOWN) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        JS_ENSURE(pthread_create(&w->thread, NULL, worker_main, w) == 0, err, JS_EINTERNAL,
                  JS_R_SERVER_THREAD, "cannot start worker thread %d", i);
        w->started = 1;
    }
    return JS_OK;
}

void js_server_drain_begin(js_server *srv)
{
    if (srv == NULL || srv->server == NULL || atomic_load(&srv->shutting_down))
        return;
    atomic_store(&srv->shutting_down, true);
    /* Stop accepting; GOAWAY to every connection (clients move to a new
     * connection without failing the calls they had not yet sent); the tag
     * arrives once every in-flight call is done. */
    grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, srv);
}

/* Once the shutdown tag has come and every allowed call has its reply: the
 * server is destroyed and the workers joined. */
static void drain_finish(js_server *srv)
{
    grpc_server_destroy(srv->server);
    srv->server = NULL;
    for (int i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].cq != NULL)
            grpc_completion_queue_shutdown(srv->workers[i].cq);
    for (int i = 0; i < srv->nworkers; i++) {
        if (srv->workers[i].started)
            pthread_join(srv->workers[i].thread, NULL);
        srv->workers[i].started = 0;
    }
}

bool js_server_drain_poll(js_server *srv, bool force)
{
    if (srv == NULL || srv->server == NULL)
        return true;
    if (!srv->drained) {
        if (force && !srv->cancelled) {
            js_log_event("warn", "drain_grace_expired", "cancelling calls still in flight");
            grpc_server_cancel_all_calls(srv->server);
            srv->cancelled = 1;
        }
        grpc_event ev =
            grpc_completion_queue_next(srv->shutdown_cq, gpr_time_0(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            return false;
        srv->drained = 1;
    }
    /* Tokens still waiting for their audit records reply from the audit
     * notifier through the worker queues: those close only afterwards. */
    if (atomic_load(&srv->awaiting_audit) > 0)
        return false;
    drain_finish(srv);
    return true;
}

void js_server_shutdown(js_server *srv, int grace_ms)
{
    if (srv == NULL || srv->server == NULL)
        return;
    js_server_drain_begin(srv);
    if (!srv->drained) {
        gpr_timespec grace =
            gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(grace_ms, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(srv->shutdown_cq, grace, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            js_log_event("warn", "shutdown_grace_expired", "cancelling calls still in flight");
            grpc_server_cancel_all_calls(srv->server);
            grpc_completion_queue_next(srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
        srv->drained = 1;
    }
    /* After a cancelled shutdown the tag can come while tokens still await
     * their audit records; their replies (success or UNAVAILABLE) need the
     * worker queues, so those close only once every one has gone out. The
     * audit log answers every record, durable or failed. */
    while (atomic_load(&srv->awaiting_audit) > 0) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    drain_finish(srv);
}

static void drain_and_destroy(grpc_completion_queue *cq)
{
    if (cq == NULL)
        return;
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        /* Leftover requested calls of workers that never ran. */
        if (ev.type == GRPC_OP_COMPLETE && ev.tag != NULL)
            call_free(ev.tag);
    }
    grpc_completion_queue_destroy(cq);
}

void js_server_free(js_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->server != NULL) {
        if (srv->grpc_started) {
            js_server_shutdown(srv, 0);
        } else {
            /* Never started: gRPC allows destroy without shutdown. */
            grpc_server_destroy(srv->server);
            srv->server = NULL;
        }
    }
    for (int i = 0; i < srv->nworkers && srv->workers != NULL; i++) {
        drain_and_destroy(srv->workers[i].cq);
        js_hsm_session_free(srv->workers[i].session);
        js_policy_cache_clear(&srv->workers[i].policy);
        js_snapshot_cache_clear(&srv->workers[i].frozen);
        js_snapshot_cache_clear(&srv->workers[i].keys);
    }
    drain_and_destroy(srv->shutdown_cq);
    free(srv->workers);
    free(srv);
}
