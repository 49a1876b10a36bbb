/*
 * introspect.c - RFC 7662 token introspection (see introspect.h).
 */
#include "introspect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "alg.h"
#include "b64url.h"
#include "claims.h"
#include "jws.h"

/* A JOSE header we read: alg, kid, typ and nothing large. */
#define HEADER_MAX 1024

const char *js_introspect_why_name(js_introspect_why why)
{
    static const char *const names[JS_WHY_COUNT] = {
        [JS_WHY_ACTIVE] = "active",
        [JS_WHY_MALFORMED] = "malformed",
        [JS_WHY_UNKNOWN_KID] = "unknown_kid",
        [JS_WHY_ALG_MISMATCH] = "alg_mismatch",
        [JS_WHY_BAD_SIGNATURE] = "bad_signature",
        [JS_WHY_EXPIRED] = "expired",
        [JS_WHY_UNKNOWN_JTI] = "unknown_jti",
        [JS_WHY_HASH_MISMATCH] = "hash_mismatch",
        [JS_WHY_REVOKED_JTI] = "revoked_jti",
        [JS_WHY_REVOKED_SUB] = "revoked_sub",
        [JS_WHY_REVOKED_CALLER] = "revoked_caller",
        [JS_WHY_AUDIENCE_NOT_ALLOWED] = "audience_not_allowed",
    };
    return (unsigned)why < JS_WHY_COUNT ? names[why] : "malformed";
}

static void inactive(js_introspection *out, js_introspect_why why)
{
    out->active = false;
    out->why = why;
}

/* Strict base64url of at most cap bytes into a malloc'd buffer. */
static bool decode_segment(const char *s, size_t n, size_t cap, uint8_t **buf, size_t *len)
{
    *buf = malloc(cap > 0 ? cap : 1);
    if (*buf == NULL)
        return false;
    if (b64url_decode(s, n, *buf, cap, len, NULL) != JS_OK) {
        free(*buf);
        *buf = NULL;
        return false;
    }
    return true;
}

/* The header's alg and kid (strings), parsed as strictly as a claim set. */
static bool read_header(const char *seg, size_t n, char *alg, size_t alg_cap, char *kid,
                        size_t kid_cap)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    if (n > B64URL_ENCODED_LEN(HEADER_MAX) || !decode_segment(seg, n, HEADER_MAX, &raw, &len))
        return false;
    json_t *h = NULL;
    bool ok = claims_parse(raw, len, &h, NULL) == JS_OK;
    free(raw);
    const json_t *a = ok ? json_object_get(h, "alg") : NULL;
    const json_t *k = ok ? json_object_get(h, "kid") : NULL;
    ok = json_is_string(a) && json_is_string(k) && json_string_length(a) < alg_cap &&
         json_string_length(k) < kid_cap && json_string_length(k) > 0;
    if (ok) {
        snprintf(alg, alg_cap, "%s", json_string_value(a));
        snprintf(kid, kid_cap, "%s", json_string_value(k));
    }
    json_decref(h);
    return ok;
}

/* The payload's jti (a string of 1..128 characters) and exp (an integer). */
static bool read_jti(const char *seg, size_t n, char *jti, size_t cap, int64_t *exp)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    if (n > B64URL_ENCODED_LEN(CLAIMS_MAX_BYTES) ||
        !decode_segment(seg, n, CLAIMS_MAX_BYTES, &raw, &len))
        return false;
    json_t *c = NULL;
    bool ok = claims_parse(raw, len, &c, NULL) == JS_OK;
    free(raw);
    const json_t *j = ok ? json_object_get(c, "jti") : NULL;
    ok = json_is_string(j) && json_string_length(j) > 0 && json_string_length(j) < cap;
    if (ok)
        snprintf(jti, cap, "%s", json_string_value(j));
    const json_t *e = ok ? json_object_get(c, "exp") : NULL;
    ok = ok && json_is_integer(e);
    if (ok)
        *exp = (int64_t)json_integer_value(e);
    json_decref(c);
    return ok;
}

/* Whether the token's aud (compact JSON: a string or an array) names one of
 * auds. */
static bool audience_allowed(const char *aud_json, const char *const *auds, size_t naud)
{
    if (naud == 0)
        return true;
    if (aud_json == NULL)
        return false;
    json_t *aud = json_loads(aud_json, JSON_DECODE_ANY, NULL);
    bool found = false;
    for (size_t i = 0; i < naud && !found; i++) {
        if (json_is_string(aud)) {
            found = strcmp(json_string_value(aud), auds[i]) == 0;
            continue;
        }
        size_t k;
        json_t *v;
        json_array_foreach(aud, k, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), auds[i]) == 0)
                found = true;
        }
    }
    json_decref(aud);
    return found;
}

void js_introspect(const js_keyring *kr, js_tokindex *ix, const js_introspect_input *in,
                   js_introspection *out)
{
    memset(out, 0, sizeof(*out));
    inactive(out, JS_WHY_MALFORMED);
    const char *t = in->token;
    size_t n = in->token_len;
    if (t == NULL || n == 0 || n > JS_INTROSPECT_TOKEN_MAX || memchr(t, '\0', n) != NULL)
        return;
    const char *dot1 = memchr(t, '.', n);
    const char *dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', n - (size_t)(dot1 + 1 - t)) : NULL;
    if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', n - (size_t)(dot2 + 1 - t)) != NULL)
        return;
    char alg_name[16];
    if (!read_header(t, (size_t)(dot1 - t), alg_name, sizeof(alg_name), out->kid, sizeof(out->kid)))
        return;
    js_alg alg;
    const EVP_PKEY *pub = js_keyring_public_by_kid(kr, out->kid, &alg);
    if (pub == NULL) {
        inactive(out, JS_WHY_UNKNOWN_KID);
        return;
    }
    if (strcmp(alg_name, js_alg_name(alg)) != 0) {
        inactive(out, JS_WHY_ALG_MISMATCH);
        return;
    }
    const char *sig_seg = dot2 + 1;
    size_t sig_seg_len = n - (size_t)(sig_seg - t);
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    if (sig_seg_len > B64URL_ENCODED_LEN(JS_SIG_MAX) ||
        !decode_segment(sig_seg, sig_seg_len, JS_SIG_MAX, &sig, &sig_len))
        return;
    js_status vst = jws_verify(alg, (EVP_PKEY *)pub, (const uint8_t *)t, (size_t)(dot2 - t), sig,
                               sig_len, NULL);
    free(sig);
    if (vst != JS_OK) {
        inactive(out, JS_WHY_BAD_SIGNATURE);
        return;
    }
    int64_t exp = 0;
    if (!read_jti(dot1 + 1, (size_t)(dot2 - dot1 - 1), out->jti, sizeof(out->jti), &exp))
        return;
    /* The signature verified: exp is what we (or a leaked key) signed. Past
     * exp + leeway the token is expired whether or not the index still holds
     * it (the index forgets tokens once they expire): never the unknown_jti
     * alarm for a genuine token that merely expired. */
    if (exp <= in->now - in->leeway) {
        inactive(out, JS_WHY_EXPIRED);
        return;
    }
    js_tok_info found;
    memset(&found, 0, sizeof(found));
    if (!js_tokindex_find(ix, out->jti, &found)) {
        inactive(out, JS_WHY_UNKNOWN_JTI);
        return;
    }
    uint8_t digest[32];
    unsigned int dlen = 0;
    bool same = EVP_Digest(t, n, digest, &dlen, EVP_sha256(), NULL) == 1 && dlen == 32 &&
                CRYPTO_memcmp(digest, found.sha256, 32) == 0;
    js_introspect_why why = JS_WHY_ACTIVE;
    js_tok_revoked rv;
    if (!same)
        why = JS_WHY_HASH_MISMATCH;
    else if (found.exp + in->leeway <= in->now)
        why = JS_WHY_EXPIRED;
    else if ((rv = js_tokindex_revoked(ix, &found)) != JS_TOK_NOT_REVOKED)
        why = rv == JS_TOK_REVOKED_JTI   ? JS_WHY_REVOKED_JTI
              : rv == JS_TOK_REVOKED_SUB ? JS_WHY_REVOKED_SUB
                                         : JS_WHY_REVOKED_CALLER;
    else if (!audience_allowed(found.aud_json, in->auds, in->naud))
        why = JS_WHY_AUDIENCE_NOT_ALLOWED;
    if (why != JS_WHY_ACTIVE) {
        js_tok_info_clear(&found);
        inactive(out, why);
        return;
    }
    out->active = true;
    out->why = JS_WHY_ACTIVE;
    out->tok = found;
}

void js_introspection_clear(js_introspection *r)
{
    if (r == NULL)
        return;
    js_tok_info_clear(&r->tok);
    memset(r, 0, sizeof(*r));
}

/* A member holding a JSON text the index keeps (aud, cnf), parsed back. */
static int set_json_text(json_t *o, const char *key, const char *text)
{
    if (text == NULL)
        return 0;
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v != NULL ? json_object_set_new(o, key, v) : -1;
}

char *js_introspection_json(const js_introspection *r, const char *iss)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    int bad = json_object_set_new(o, "active", json_boolean(r->active));
    if (r->active) {
        const js_tok_info *t = &r->tok;
        if (t->scope != NULL && t->scope[0] != '\0')
            bad |= json_object_set_new(o, "scope", json_string(t->scope));
        if (t->caller != NULL)
            bad |= json_object_set_new(o, "client_id", json_string(t->caller));
        if (t->sub != NULL)
            bad |= json_object_set_new(o, "sub", json_string(t->sub));
        bad |= set_json_text(o, "aud", t->aud_json);
        if (iss != NULL)
            bad |= json_object_set_new(o, "iss", json_string(iss));
        bad |= json_object_set_new(o, "exp", json_integer(t->exp));
        bad |= json_object_set_new(o, "iat", json_integer(t->iat));
        bad |= json_object_set_new(o, "jti", json_string(t->jti));
        bad |= set_json_text(o, "cnf", t->cnf_json);
        /* RFC 9449 §6.2: a token bound to a DPoP key (cnf.jkt) is "DPoP". */
        bool dpop = json_object_get(json_object_get(o, "cnf"), "jkt") != NULL;
        bad |= json_object_set_new(o, "token_type", json_string(dpop ? "DPoP" : "Bearer"));
    }
    char *s = bad == 0 ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return s;
}
