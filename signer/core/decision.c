/*
 * decision.c - the one value a request ends in (see decision.h).
 */
#include "decision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

js_decision_kind js_decision_kind_of(js_status st)
{
    switch (st) {
    case JS_OK:
        return JS_DECISION_ALLOW;
    case JS_EUNAVAIL:
    case JS_EINTERNAL:
    case JS_ECONFIG: /* answered INTERNAL: a fault of the signer, not of the request */
        return JS_DECISION_ERROR;
    case JS_EINVAL:
    case JS_EDENIED:
    case JS_ELIMIT:
    case JS_ENOTFOUND:
    case JS_ESTATE:
    default:
        return JS_DECISION_DENY;
    }
}

const char *js_decision_name(js_decision_kind k)
{
    switch (k) {
    case JS_DECISION_ALLOW:
        return "allow";
    case JS_DECISION_ERROR:
        return "error";
    case JS_DECISION_DENY:
    default:
        return "deny";
    }
}

void js_sign_result_clear(js_sign_result *res)
{
    if (res == NULL)
        return;
    if (res->jwt != NULL) {
        OPENSSL_cleanse(res->jwt, strlen(res->jwt));
        free(res->jwt);
    }
    free(res->scopes);
    free(res->sub);
    free(res->aud);
    free(res->cnf_json);
    memset(res, 0, sizeof(*res));
}

void js_decision_init(js_decision *d)
{
    memset(d, 0, sizeof(*d));
    d->kind = JS_DECISION_ALLOW;
    d->status = JS_OK;
    d->reason = JS_R_OK;
}

void js_decision_fail(js_decision *d, const js_err *err)
{
    d->status = err->status != JS_OK ? err->status : JS_EINTERNAL;
    d->kind = js_decision_kind_of(d->status);
    d->reason = err->reason;
    snprintf(d->msg, sizeof(d->msg), "%s", err->msg);
    js_sign_result *t = &d->token;
    if (t->jwt != NULL) {
        OPENSSL_cleanse(t->jwt, strlen(t->jwt));
        free(t->jwt);
        t->jwt = NULL;
    }
    free(t->scopes);
    t->scopes = NULL;
    t->jti[0] = '\0'; /* no token carries it */
    t->token_sha256[0] = '\0';
    memset(t->token_digest, 0, sizeof(t->token_digest));
    t->issued_at = 0;
    t->expires_at = 0;
}

void js_decision_allow(js_decision *d)
{
    d->kind = JS_DECISION_ALLOW;
    d->status = JS_OK;
    d->reason = JS_R_OK;
    d->msg[0] = '\0';
}

void js_decision_err(const js_decision *d, js_err *err)
{
    err->status = d->status;
    err->reason = d->reason;
    snprintf(err->msg, sizeof(err->msg), "%s", d->msg);
}

void js_decision_clear(js_decision *d)
{
    if (d != NULL)
        js_sign_result_clear(&d->token);
}
