/*
 * service.c - decides and signs one SignJwt request (see service.h).
 */
#include "service.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jws.h"

struct js_service {
    const js_config *cfg;
    const js_keyring *kr;
    js_clock_fn clock;
    void *clock_ctx;
};

static int64_t system_clock(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

js_status js_service_new(const js_config *cfg, const js_keyring *kr, js_clock_fn clock,
                         void *clock_ctx, js_service **out, js_err *err)
{
    *out = NULL;
    js_service *svc = calloc(1, sizeof(*svc));
    JS_ENSURE_ALLOC(svc, err);
    svc->cfg = cfg;
    svc->kr = kr;
    svc->clock = clock != NULL ? clock : system_clock;
    svc->clock_ctx = clock_ctx;
    *out = svc;
    return JS_OK;
}

void js_service_free(js_service *svc)
{
    free(svc);
}

void js_sign_result_clear(js_sign_result *res)
{
    if (res == NULL)
        return;
    free(res->jwt);
    memset(res, 0, sizeof(*res));
}

const char *js_service_jwks(const js_service *svc)
{
    return js_keyring_jwks(svc->kr);
}

js_status js_request_id_check(const char *request_id, js_err *err)
{
    size_t n = strlen(request_id);
    JS_ENSURE(n <= JS_REQUEST_ID_MAX, err, JS_EINVAL, "request.request_id",
              "request_id is %zu characters; the limit is %d", n, JS_REQUEST_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)request_id[i];
        JS_ENSURE(c >= 0x21 && c <= 0x7e, err, JS_EINVAL, "request.request_id",
                  "request_id must be printable ASCII without spaces");
    }
    return JS_OK;
}

/* Key names as the configuration allows them: [A-Za-z0-9._-]{1,64}. */
static int key_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > JS_KEY_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int caller_allowed(const js_config *cfg, const char *identity)
{
    /* Exact, case-sensitive comparison: identities are not normalised. */
    for (size_t i = 0; i < cfg->nallowed_callers; i++)
        if (strcmp(cfg->allowed_callers[i], identity) == 0)
            return 1;
    return 0;
}

/* Copies sub and aud (compact JSON) for the request log, truncated. */
static void note_sub_aud(const json_t *claims, js_sign_result *res)
{
    const json_t *sub = json_object_get(claims, "sub");
    if (json_is_string(sub))
        snprintf(res->sub, sizeof(res->sub), "%s", json_string_value(sub));
    const json_t *aud = json_object_get(claims, "aud");
    if (aud != NULL) {
        char *a = json_dumps(aud, JSON_COMPACT | JSON_ENCODE_ANY);
        if (a != NULL)
            snprintf(res->aud, sizeof(res->aud), "%s", a);
        free(a);
    }
}

typedef struct hsm_sign_ctx {
    js_hsm_session *s;
    const js_hsm_key *key;
} hsm_sign_ctx;

static js_status hsm_sign_cb(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig, size_t cap,
                             size_t *sig_len, js_err *err)
{
    const hsm_sign_ctx *c = ctx;
    return js_hsm_sign(c->s, c->key, in, in_len, sig, cap, sig_len, err);
}

js_status js_service_sign(const js_service *svc, js_hsm_session *s, const js_sign_request *req,
                          js_sign_result *res, js_err *err)
{
    memset(res, 0, sizeof(*res));
    JS_ENSURE(caller_allowed(svc->cfg, req->identity), err, JS_EDENIED, "caller.not_allowed",
              "caller '%s' is not on the allowed list", req->identity);
    JS_GUARD(js_request_id_check(req->request_id, err));

    const js_key *key;
    if (req->key_name[0] == '\0') {
        key = js_keyring_default(svc->kr);
    } else {
        JS_ENSURE(key_name_valid(req->key_name), err, JS_EINVAL, "request.key_name",
                  "key name must be 1-%d characters of [A-Za-z0-9._-]", JS_KEY_NAME_MAX);
        key = js_keyring_find(svc->kr, req->key_name);
        /* Well-formed but not ours to give: PERMISSION_DENIED, and the same
         * answer whether or not such a key exists elsewhere. */
        JS_ENSURE(key != NULL, err, JS_EDENIED, "key.not_allowed",
                  "key '%s' is not available to this caller", req->key_name);
    }
    snprintf(res->key_name, sizeof(res->key_name), "%s", js_key_name(key));
    snprintf(res->kid, sizeof(res->kid), "%s", js_key_kid(key));

    json_t *claims = NULL;
    JS_GUARD(claims_parse(req->claims, req->claims_len, &claims, err));
    note_sub_aud(claims, res);

    int64_t now = svc->clock(svc->clock_ctx);
    claims_lifetime life = {svc->cfg->default_ttl, svc->cfg->max_ttl};
    js_status st = claims_new_jti(res->jti, err);
    if (st == JS_OK)
        st = claims_apply_server(claims, svc->cfg->issuer, now, &life, res->jti, &res->expires_at,
                                 err);
    char *payload = NULL;
    if (st == JS_OK) {
        payload = json_dumps(claims, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (payload == NULL)
            st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
    }
    json_decref(claims);
    if (st != JS_OK) {
        res->jti[0] = '\0'; /* no token carries it */
        return st;
    }

    const char *header = js_key_header(key);
    hsm_sign_ctx ctx = {s, js_key_hsm(key)};
    st = jws_sign_compact(header, strlen(header), payload, strlen(payload), hsm_sign_cb, &ctx,
                          &res->jwt, err);
    free(payload);
    if (st != JS_OK) {
        res->jti[0] = '\0';
        return st;
    }
    res->issued_at = now;
    return JS_OK;
}
