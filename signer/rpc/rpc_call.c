/*
 * rpc_call.c - what every call handler of the RPC layer shares (rpc_call.h):
 * the one js_status -> gRPC status mapping, the reply batch, reading the
 * request bytes, the caller identity from the client certificate, the
 * denial budget and the answers to calls that carry nothing to decide
 * (no request message, an unknown method).
 */
#include "rpc_call.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "auditlog.h"
#include "clock.h"
#include "denials.h"
#include "identity.h"
#include "logline.h"
#include "metrics.h"
#include "tsan_annotate.h"

#define MAX_SAN_NAMES 32

/* The one mapping from our error convention to gRPC status codes. */
grpc_status_code rpc_status_code(js_status st)
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

const char *rpc_status_name(grpc_status_code c)
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

/* ---- call contexts -------------------------------------------------------------- */

void rpc_call_free(call_ctx *c)
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
    js_decision_clear(&c->d);
    gpr_free(c->peer);
    free(c);
}

/* Sends the whole reply in one batch; the completion comes back on w->cq.
 *
 * After grpc_call_start_batch succeeds, c belongs to the worker that takes the
 * completion and may be freed at any moment (an allowed SignJwt replies from
 * the audit notifier thread, auditlog.h): nothing here may touch c afterwards. Status details
 * and trailing metadata live in locals; gRPC copies them during the call. */
void rpc_reply(call_ctx *c, grpc_status_code code, js_reason why, const char *msg,
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
    grpc_call *call = c->call;
    c->state = CALL_REPLYING;
    JS_TAG_HANDOFF(c); /* our last access to c: the worker may free it from here on */
    grpc_call_error rc = grpc_call_start_batch(call, ops, n, c, NULL);
    /* From here on, c may already be freed (see above). */
    grpc_slice_unref(details);
    for (size_t i = 0; i < ntrailing; i++) {
        grpc_slice_unref(trailing[i].key);
        grpc_slice_unref(trailing[i].value);
    }
    if (rc != GRPC_CALL_OK) {
        js_log_event("error", "reply_failed", "grpc_call_start_batch failed");
        rpc_call_free(c);
    }
}

void rpc_reply_decision(call_ctx *c, const js_decision *d, const uint8_t *body, size_t body_len)
{
    /* rpc_reply reads d before it starts the batch that may free c. */
    rpc_reply(c, rpc_status_code(d->status), d->reason, d->msg, body, body_len, d->retry_after_ms);
}

js_reqlog rpc_reqlog_of(const char *method, const char *identity, const char *peer,
                        const js_decision *d, int64_t t0_us)
{
    return (js_reqlog){
        .method = method,
        .caller = identity,
        .peer = peer,
        .decision = js_decision_name(d->kind),
        .status = rpc_status_name(rpc_status_code(d->status)),
        .reason = js_reason_name(d->reason),
        .message = d->kind == JS_DECISION_ALLOW ? NULL : d->msg,
        .latency_us = js_mono_us() - t0_us,
    };
}

/* ---- request handling ----------------------------------------------------------- */

/* Copies the request payload into one contiguous, bounded buffer. */
js_status rpc_read_request(grpc_byte_buffer *bb, grpc_slice *out, js_err *err)
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
js_status rpc_call_identity(grpc_call *call, char *out, size_t cap, js_err *err)
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

/*
 * One decision per denial (denials.h): true = audit record and log line in
 * full; false = folded into a counted record (the audit log reports each
 * folded record once it is written, through on_fold: one log line,
 * signer/audit_key.c). Keyed by the identity, or by the peer address when
 * there is none.
 */
bool rpc_denial_in_full(const call_ctx *c)
{
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(c->identity, c->peer, key, sizeof(key));
    return js_denials_admit(c->w->srv->denials, key, js_mono_ms());
}

/* Counts a denial into its folded record: by identity, or by the peer's
 * address (without the port, which changes with every connection). */
void rpc_fold_denial(const call_ctx *c, const char *type, js_reason why)
{
    char addr[JS_DENIALS_KEY_MAX + 1];
    js_denials_peer_addr(c->peer, addr, sizeof(addr));
    js_audit_note_folded(c->w->srv->audit, type, c->identity, addr, js_reason_name(why));
}

/*
 * A call that ended without a request message: the client reset the stream
 * (HTTP/2 RST_STREAM, "rapid reset") or half-closed without sending one.
 * Nothing was asked, so nothing is decided: no audit record, and a log line
 * only within the caller's denial budget; the metrics count every one.
 */
void rpc_no_message(call_ctx *c, const char *method)
{
    js_server *srv = c->w->srv;
    const char *deny = js_decision_name(JS_DECISION_DENY);
    const char *reason = js_reason_name(JS_R_REQUEST_MISSING);
    js_metrics_request(srv->metrics, method, c->identity, deny, reason);
    /* Not a denial (nothing was asked): its log lines have their own budget,
     * so cancelled calls never use up a caller's denial budget. */
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(c->identity, c->peer, key, sizeof(key));
    if (js_denials_admit(srv->quiet, key, js_mono_ms())) {
        js_reqlog log = {
            .method = method,
            .caller = c->identity,
            .peer = c->peer,
            .decision = deny,
            .status = rpc_status_name(GRPC_STATUS_CANCELLED),
            .reason = reason,
            .message = "the call ended without a request message (stream reset)",
            .latency_us = js_mono_us() - c->t0_us,
        };
        js_reqlog_emit(&log);
    }
    rpc_reply(c, GRPC_STATUS_CANCELLED, JS_R_REQUEST_MISSING, "no request message", NULL, 0, 0);
}

void rpc_handle_unknown(call_ctx *c)
{
    char method[256];
    size_t mlen = GRPC_SLICE_LENGTH(c->details.method);
    if (mlen >= sizeof(method))
        mlen = sizeof(method) - 1;
    memcpy(method, GRPC_SLICE_START_PTR(c->details.method), mlen);
    method[mlen] = '\0';
    char msg[320];
    snprintf(msg, sizeof(msg), "method %s is not implemented", method);
    rpc_reply(c, GRPC_STATUS_UNIMPLEMENTED, JS_R_RPC_UNIMPLEMENTED, msg, NULL, 0, 0);
}
