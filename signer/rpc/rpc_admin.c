/*
 * rpc_admin.c - the jwtsigner.v1.Admin service: administrators only (the
 * policy's admins), rate limited per administrator, every call audited.
 */
#include "rpc_call.h"

#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "clock.h"
#include "control.h"
#include "denials.h"
#include "jwtsigner/v1/signer.pb-c.h"
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"
#include "policy_store.h"
#include "tokindex.h"

const char *const js_rpc_admin_paths[ADMIN_COUNT] = {
    "/jwtsigner.v1.Admin/RotateKey",       "/jwtsigner.v1.Admin/RevokeKey",
    "/jwtsigner.v1.Admin/SetIncidentMode", "/jwtsigner.v1.Admin/FreezeCaller",
    "/jwtsigner.v1.Admin/UnfreezeCaller",  "/jwtsigner.v1.Admin/ReloadPolicy",
    "/jwtsigner.v1.Admin/GetStatus",       "/jwtsigner.v1.Admin/RotateAuditKey",
    "/jwtsigner.v1.Admin/RevokeToken",
};
static const char *const k_admin_actions[ADMIN_COUNT] = {
    "rotate", "revoke", "incident",         "freeze",       "unfreeze",
    "reload", "status", "rotate_audit_key", "revoke_token",
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

/* Unpacks the request message of type desc (checked first: pbcheck.h). */
#define UNPACK(desc, type, var)                                                                    \
    ProtobufCMessage *var##_m = NULL;                                                              \
    JS_GUARD(js_pb_unpack(&(desc), data, len, &var##_m, err));                                     \
    type *var = (type *)var##_m

static js_status admin_incident(js_control *ctl, const uint8_t *data, size_t len, const char *admin,
                                uint8_t **out, size_t *out_len, json_t *detail, js_err *err)
{
    UNPACK(jwtsigner__v1__set_incident_mode_request__descriptor,
           Jwtsigner__V1__SetIncidentModeRequest, rq);
    bool on = rq->on != 0;
    js_status st = js_admin_text("reason", rq->reason, JS_ADMIN_REASON_MAX, false, err);
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
    return JS_OK;
}

static js_status admin_freeze(js_control *ctl, bool freeze, const uint8_t *data, size_t len,
                              const char *admin, uint8_t **out, size_t *out_len, json_t *detail,
                              js_err *err)
{
    UNPACK(jwtsigner__v1__freeze_caller_request__descriptor, Jwtsigner__V1__FreezeCallerRequest,
           rq);
    js_status st = js_admin_text("identity", rq->identity, IDENTITY_MAX, true, err);
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
    return st;
}

static js_status admin_reload(js_control *ctl, const uint8_t *data, size_t len, const char *admin,
                              uint8_t **out, size_t *out_len, json_t *detail, js_err *err)
{
    JS_GUARD(
        js_pb_check_strings(&jwtsigner__v1__reload_policy_request__descriptor, data, len, err));
    char sha[65] = "";
    JS_GUARD(js_control_reload_policy(ctl, admin, sha, err));
    json_object_set_new(detail, "sha256", json_string(sha));
    Jwtsigner__V1__ReloadPolicyResponse r = JWTSIGNER__V1__RELOAD_POLICY_RESPONSE__INIT;
    r.sha256 = sha;
    *out = pack_message(&r.base, out_len);
    return JS_OK;
}

static js_status admin_status(js_control *ctl, const uint8_t *data, size_t len, uint8_t **out,
                              size_t *out_len, js_err *err)
{
    JS_GUARD(js_pb_check_strings(&jwtsigner__v1__get_status_request__descriptor, data, len, err));
    char *json = js_control_status_json(ctl);
    JS_ENSURE_ALLOC(json, err);
    Jwtsigner__V1__GetStatusResponse r = JWTSIGNER__V1__GET_STATUS_RESPONSE__INIT;
    r.status_json = json;
    *out = pack_message(&r.base, out_len);
    free(json);
    return JS_OK;
}

static js_status admin_rotate(js_control *ctl, const uint8_t *data, size_t len, const char *admin,
                              uint8_t **out, size_t *out_len, json_t *detail, js_err *err)
{
    UNPACK(jwtsigner__v1__rotate_key_request__descriptor, Jwtsigner__V1__RotateKeyRequest, rq);
    js_rotate_result res;
    js_status st = js_control_rotate_key(ctl, rq->key, rq->reason, admin, &res, detail, err);
    if (st == JS_OK) {
        Jwtsigner__V1__RotateKeyResponse r = JWTSIGNER__V1__ROTATE_KEY_RESPONSE__INIT;
        r.key = rq->key;
        r.version = res.version;
        r.kid = res.kid;
        r.activate_at = res.activate_at;
        *out = pack_message(&r.base, out_len);
    }
    jwtsigner__v1__rotate_key_request__free_unpacked(rq, NULL);
    return st;
}

static js_status admin_revoke(js_control *ctl, const uint8_t *data, size_t len, const char *admin,
                              uint8_t **out, size_t *out_len, json_t *detail, js_err *err)
{
    UNPACK(jwtsigner__v1__revoke_key_request__descriptor, Jwtsigner__V1__RevokeKeyRequest, rq);
    js_revoke_result res;
    js_status st =
        js_control_revoke_key(ctl, rq->key, rq->kid, rq->reason, admin, &res, detail, err);
    if (st == JS_OK) {
        Jwtsigner__V1__RevokeKeyResponse r = JWTSIGNER__V1__REVOKE_KEY_RESPONSE__INIT;
        r.key = rq->key;
        r.kid = rq->kid;
        r.revoked_at = res.revoked_at;
        r.active_kid = res.active_kid;
        *out = pack_message(&r.base, out_len);
    }
    jwtsigner__v1__revoke_key_request__free_unpacked(rq, NULL);
    return st;
}

static js_status admin_rotate_audit(js_control *ctl, const uint8_t *data, size_t len,
                                    const char *admin, uint8_t **out, size_t *out_len,
                                    json_t *detail, js_err *err)
{
    UNPACK(jwtsigner__v1__rotate_audit_key_request__descriptor,
           Jwtsigner__V1__RotateAuditKeyRequest, rq);
    char label[JS_CONTROL_AUDIT_LABEL_MAX + 1];
    char key_id[JS_AUDIT_KEY_ID_LEN + 1];
    js_status st = js_control_rotate_audit_key(ctl, rq->reason, admin, label, key_id, detail, err);
    jwtsigner__v1__rotate_audit_key_request__free_unpacked(rq, NULL);
    JS_GUARD(st);
    Jwtsigner__V1__RotateAuditKeyResponse r = JWTSIGNER__V1__ROTATE_AUDIT_KEY_RESPONSE__INIT;
    r.label = label;
    r.key_id = key_id;
    *out = pack_message(&r.base, out_len);
    return JS_OK;
}

/*
 * RevokeToken: exactly one of jti, sub and caller, each bounded (a jti as the
 * index keeps it, a sub as the audit record can hold it, a caller as a typed
 * identity), the reason printable; checked before anything is acted on. The
 * control plane writes the durable "revoke" record and applies it.
 */
static js_status admin_revoke_token(js_control *ctl, const uint8_t *data, size_t len,
                                    const char *admin, uint8_t **out, size_t *out_len,
                                    json_t *detail, js_err *err)
{
    UNPACK(jwtsigner__v1__revoke_token_request__descriptor, Jwtsigner__V1__RevokeTokenRequest, rq);
    /* What is revoked, its request.* name (js_admin_text) and its bound. */
    const char *what = "caller", *name = "identity", *value = rq->caller;
    size_t max = IDENTITY_MAX;
    if (rq->jti[0] != '\0') {
        what = name = "jti";
        value = rq->jti;
        max = JS_JTI_MAX;
    } else if (rq->sub[0] != '\0') {
        what = name = "sub";
        value = rq->sub;
        max = JS_TOKINDEX_STR_MAX;
    }
    int n = (rq->jti[0] != '\0') + (rq->sub[0] != '\0') + (rq->caller[0] != '\0');
    js_status st = JS_OK;
    if (n != 1)
        st =
            js_err_set(err, JS_EINVAL, JS_R_REQUEST_MALFORMED,
                       "RevokeTokenRequest needs exactly one of jti, sub and caller (%d given)", n);
    if (st == JS_OK)
        st = js_admin_text(name, value, max, true, err);
    if (st == JS_OK)
        st = js_admin_text("reason", rq->reason, JS_ADMIN_REASON_MAX, false, err);
    js_token_revoked res;
    memset(&res, 0, sizeof(res));
    if (st == JS_OK) {
        json_object_set_new(detail, "what", json_string(what));
        json_object_set_new(detail, "value", json_string(value));
        json_object_set_new(detail, "reason", json_string(rq->reason));
        js_token_revoke req = {
            .jti = rq->jti[0] != '\0' ? rq->jti : NULL,
            .sub = rq->sub[0] != '\0' ? rq->sub : NULL,
            .caller = rq->caller[0] != '\0' ? rq->caller : NULL,
            .reason = rq->reason,
        };
        st = js_control_revoke_token(ctl, admin, &req, &res, err);
    }
    jwtsigner__v1__revoke_token_request__free_unpacked(rq, NULL);
    JS_GUARD(st);
    json_object_set_new(detail, "revoke_seq", json_integer((json_int_t)res.audit_seq));
    Jwtsigner__V1__RevokeTokenResponse r = JWTSIGNER__V1__REVOKE_TOKEN_RESPONSE__INIT;
    r.cutoff = res.cutoff;
    r.until = res.until;
    r.audit_seq = res.audit_seq;
    *out = pack_message(&r.base, out_len);
    return JS_OK;
}

/* Decodes the request of method am, has the control plane act, and packs
 * the response into *out (malloc'd). Facts for the audit record go into
 * detail. */
static js_status admin_dispatch(js_control *ctl, admin_method am, const uint8_t *data, size_t len,
                                const char *admin, uint8_t **out, size_t *out_len, json_t *detail,
                                js_err *err)
{
    *out = NULL;
    js_status st;
    switch (am) {
    case ADMIN_INCIDENT:
        st = admin_incident(ctl, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_FREEZE:
    case ADMIN_UNFREEZE:
        st = admin_freeze(ctl, am == ADMIN_FREEZE, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_RELOAD:
        st = admin_reload(ctl, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_STATUS:
        st = admin_status(ctl, data, len, out, out_len, err);
        break;
    case ADMIN_ROTATE:
        st = admin_rotate(ctl, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_REVOKE:
        st = admin_revoke(ctl, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_ROTATE_AUDIT:
        st = admin_rotate_audit(ctl, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_REVOKE_TOKEN:
        st = admin_revoke_token(ctl, data, len, admin, out, out_len, detail, err);
        break;
    case ADMIN_COUNT:
    default:
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_ADMIN, "unknown admin method");
    }
    JS_GUARD(st);
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
 * Admin API into a flood of durable records. The call ends in one decision
 * (c->d), from which the audit record, the log line, the metrics and the
 * reply are built.
 */
void rpc_handle_admin(call_ctx *c)
{
    c->t0_us = js_mono_us();
    js_server *srv = c->w->srv;
    js_err err;
    js_err_clear(&err);
    c->peer = grpc_call_get_peer(c->call);
    const char *method = js_rpc_admin_paths[c->admin] + sizeof("/jwtsigner.v1.") - 1;
    const js_policy *policy = js_policy_cache_get(&c->w->policy, srv->policies);
    js_decision *d = &c->d;
    js_decision_init(d);

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
    if (st != JS_OK) {
        js_decision_fail(d, &err);
        d->retry_after_ms = st == JS_ELIMIT ? 1000 : 0;
        d->folded = st == JS_ELIMIT || !rpc_denial_in_full(c);
    }
    if (d->folded) {
        rpc_fold_denial(c, "admin", d->reason);
        js_metrics_call(srv->metrics, method, c->identity, d);
        rpc_reply_decision(c, d, NULL, 0);
        return;
    }
    json_t *detail = json_object();
    grpc_slice raw = grpc_empty_slice();
    uint8_t *buf = NULL;
    size_t len = 0;
    if (st == JS_OK)
        st = rpc_read_request(c->request, &raw, &err);
    if (st == JS_OK)
        st = admin_dispatch(srv->control, c->admin, GRPC_SLICE_START_PTR(raw),
                            GRPC_SLICE_LENGTH(raw), c->identity, &buf, &len, detail, &err);
    grpc_slice_unref(raw);
    if (st != JS_OK)
        js_decision_fail(d, &err);
    js_control_audit_admin(srv->control, c->identity, k_admin_actions[c->admin], d, detail);
    js_reqlog log = rpc_reqlog_of(method, c->identity, c->peer, d, c->t0_us);
    js_reqlog_emit(&log);
    js_metrics_call(srv->metrics, method, c->identity, d);
    rpc_reply_decision(c, d, buf, len);
    free(buf);
}
