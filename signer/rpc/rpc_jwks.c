/*
 * rpc_jwks.c - the GetJwks handler: the keyring snapshot's JWKS for any
 * authenticated caller, its log lines within a per-caller budget.
 */
#include "rpc_call.h"

#include <stdlib.h>

#include <grpc/support/alloc.h>

#include "clock.h"
#include "denials.h"
#include "jwtsigner/v1/signer.pb-c.h"
#include "keyring.h"
#include "logline.h"
#include "metrics.h"
#include "pbcheck.h"

void rpc_handle_jwks(call_ctx *c)
{
    int64_t t0 = js_mono_us();
    js_err err;
    js_err_clear(&err);
    char identity[IDENTITY_MAX + 1] = "";
    char *peer = grpc_call_get_peer(c->call);
    uint8_t *buf = NULL;
    size_t len = 0;
    js_status st = rpc_call_identity(c->call, identity, sizeof(identity), &err);
    if (st == JS_OK && c->request != NULL) {
        /* The request message has no fields, but it must still be a
         * well-formed message (pbcheck.h). */
        grpc_slice raw = grpc_empty_slice();
        st = rpc_read_request(c->request, &raw, &err);
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
    /* One decision for the log line, the metrics and the reply. */
    js_decision *d = &c->d;
    js_decision_init(d);
    if (st != JS_OK)
        js_decision_fail(d, &err);
    js_reqlog log = rpc_reqlog_of("GetJwks", identity, peer, d, t0);
    /* The JWKS is cheap to serve and public, so any caller may ask often;
     * its log lines are kept within a per-caller budget (metrics count all). */
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(identity, peer, key, sizeof(key));
    if (js_denials_admit(c->w->srv->quiet, key, js_mono_ms()))
        js_reqlog_emit(&log);
    js_metrics_call(c->w->srv->metrics, "GetJwks", identity, d);
    gpr_free(peer);
    rpc_reply_decision(c, d, buf, len); /* c may be gone after this */
    free(buf);
}
