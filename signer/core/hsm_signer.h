/*
 * hsm_signer.h - an HSM key on an HSM session as a signing callback: the one
 * adapter from js_hsm_sign to the callbacks that sign JWS signing inputs
 * (jws.h jws_sign_fn) and audit checkpoints (auditlog.h js_audit_sign_fn).
 */
#ifndef JS_HSM_SIGNER_H
#define JS_HSM_SIGNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "hsm.h"

/* s and key are borrowed: they must outlive every use of the signer. The
 * session must be one no other thread signs on meanwhile (hsm.h), e.g. the
 * audit writer's own session or a worker's. */
typedef struct js_hsm_signer {
    js_hsm_session *s;
    const js_hsm_key *key;
    /* Set by every js_hsm_signer_sign: the HSM refused or failed, so a
     * caller of jws_sign_compact can tell an HSM error from its own. */
    bool failed;
} js_hsm_signer;

/* ctx is a js_hsm_signer *: js_hsm_sign(ctx->s, ctx->key, ...), and
 * ctx->failed says whether it failed. Has the shape of jws_sign_fn and
 * js_audit_sign_fn, so it is passed as either. */
js_status js_hsm_signer_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                             size_t *sig_len, js_err *err);

#endif
