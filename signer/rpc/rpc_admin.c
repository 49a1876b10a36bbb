/*
 * rpc_admin.c - the jwtsigner.v1.Admin service: administrators only (the
 * policy's admins), rate limited per administrator, every call audited.
 */
#include "rpc_call.h"

#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "clock.h"
#include "control.h"
#include "denials.h"
#include "jwtsigner/v1/signer.pb-c.h"
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"
#include "policy_store.h"

const char *const js_rpc_admin_paths[ADMIN_COUNT] = {
    "/jwtsigner.v1.Admin/RotateKey",       "/jwtsigner.v1.Admin/RevokeKey",
    "/jwtsigner.v1.Admin/SetIncidentMode", "/jwtsigner.v1.Admin/FreezeCaller",
    "/jwtsigner.v1.Admin/UnfreezeCaller",  "/jwtsigner.v1.Admin/ReloadPolicy",
    "/jwtsigner.v1.Admin/GetStatus",       "/jwtsigner.v1.Admin/RotateAuditKey",
};
static const char *const k_admin_actions[ADMIN_COUNT] = {
    "rotate", "revoke", "incident", "freeze", "unfreeze", "reload", "status", "rotate_audit_key",
};

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
void rpc_handle_admin(call_ctx *c)
{
    c->t0_us = js_mono_us();
    js_server *srv = c->w->srv;
    js_err err;
    js_err_clear(&err);
    c->peer = grpc_call_get_peer(c->call);
    const char *method = js_rpc_admin_paths[c->admin] + sizeof("/jwtsigner.v1.") - 1;
    grpc_slice raw = grpc_empty_slice();
    uint8_t *buf = NULL;
    size_t len = 0;
    const js_policy *policy = js_policy_cache_get(&c->w->policy, srv->policies);

    js_status st = rpc_call_identity(c->call, c->identity, sizeof(c->identity), &err);
    if (c->request == NULL) {
        rpc_no_message(c, method);
        return;
    }
    if (st == JS_OK && !js_policy_is_admin(policy, c->identity))
        st = js_err_set(&err, JS_EDENIED, JS_R_ADMIN_NOT_ADMIN,
                        "caller '%s' is not an administrator (policy: admins)", c->identity);
    if (st == JS_OK && !js_denials_admit(srv->admin_rate, c->identity, js_mono_ms()))
        st = js_err_set(&err, JS_ELIMIT, JS_R_ADMIN_RATE_LIMITED,
                        "administrator '%s' is over %u Admin calls per second", c->identity,
                        JS_ADMIN_RATE);
    bool full = st == JS_OK || (st != JS_ELIMIT && rpc_denial_in_full(c));
    if (!full || st == JS_ELIMIT) {
        rpc_fold_denial(c, "admin", err.reason);
        grpc_status_code code = rpc_status_code(st);
        js_metrics_request(srv->metrics, method, c->identity, rpc_decision_of(code),
                           js_reason_name(err.reason));
        rpc_reply(c, code, err.reason, err.msg, NULL, 0, st == JS_ELIMIT ? 1000 : 0);
        return;
    }
    json_t *detail = json_object();
    if (st == JS_OK)
        st = rpc_read_request(c->request, &raw, &err);
    if (st == JS_OK)
        st = admin_dispatch(c, GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), c->identity, &buf,
                            &len, detail, &err);
    grpc_slice_unref(raw);
    grpc_status_code code = rpc_status_code(st);
    js_control_audit_admin(srv->control, c->identity, k_admin_actions[c->admin],
                           st == JS_OK ? "allow" : rpc_decision_of(code), st == JS_OK ? NULL : &err,
                           detail);
    js_reqlog log = {
        .method = method,
        .caller = c->identity,
        .peer = c->peer,
        .decision = rpc_decision_of(code),
        .status = rpc_status_name(code),
        .reason = js_reason_name(st == JS_OK ? JS_R_OK : err.reason),
        .message = st == JS_OK ? NULL : err.msg,
        .latency_us = js_mono_us() - c->t0_us,
    };
    js_reqlog_emit(&log);
    js_metrics_request(srv->metrics, log.method, c->identity, log.decision, log.reason);
    rpc_reply(c, code, err.reason, err.msg, buf, len, 0);
    free(buf);
}
