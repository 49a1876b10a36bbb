/*
 * hsm_signer.c - the HSM signing callback (see hsm_signer.h).
 */
#include "hsm_signer.h"

js_status js_hsm_signer_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                             size_t *sig_len, js_err *err)
{
    js_hsm_signer *signer = ctx;
    js_status st = js_hsm_sign(signer->s, signer->key, msg, len, sig, cap, sig_len, err);
    signer->failed = st != JS_OK;
    return st;
}
