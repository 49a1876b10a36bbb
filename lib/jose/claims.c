/*
 * claims.c - strict claim-set parsing and the server-owned claims.
 * See claims.h for the rules and why they are this strict.
 */
#include "claims.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/rand.h>

#include "b64url.h"

/* jansson's error texts quote the input ("... near '<fragment>'"); that
 * fragment may be a claim value, and messages go to the caller, the log line
 * and the audit record. Keep only the description; position is reported
 * separately. */
static void describe(const json_error_t *jerr, char *out, size_t cap)
{
    const char *near = strstr(jerr->text, " near ");
    int n = near != NULL ? (int)(near - jerr->text) : (int)strlen(jerr->text);
    snprintf(out, cap, "%.*s", n, jerr->text);
}

js_status claims_parse(const uint8_t *buf, size_t len, json_t **out, js_err *err)
{
    *out = NULL;
    JS_ENSURE(len <= CLAIMS_MAX_BYTES, err, JS_EINVAL, JS_R_CLAIMS_TOO_LARGE,
              "claims_json is %zu bytes; the limit is %d", len, CLAIMS_MAX_BYTES);
    JS_ENSURE(len > 0, err, JS_EINVAL, JS_R_CLAIMS_EMPTY,
              "claims_json is empty; send a JSON object");

    /* JSON_REJECT_DUPLICATES: RFC 7519 §4 duplicate-name rule, strict form.
     * No JSON_DECODE_ANY: the top level must be an object or an array (checked
     * below). No JSON_ALLOW_NUL: "\u0000" in a string is rejected, so C
     * string comparisons downstream see the whole value. */
    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        char what[JSON_ERROR_TEXT_LENGTH];
        describe(&jerr, what, sizeof(what));
        switch (json_error_code(&jerr)) {
        case json_error_duplicate_key:
            return js_err_set(err, JS_EINVAL, JS_R_CLAIMS_DUPLICATE_MEMBER,
                              "claims_json has a duplicate member name at offset %d "
                              "(RFC 7519 §4: member names must be unique)",
                              jerr.position);
        case json_error_invalid_utf8:
            return js_err_set(err, JS_EINVAL, JS_R_CLAIMS_UTF8,
                              "claims_json is not valid UTF-8 (offset %d)", jerr.position);
        case json_error_null_character:
        case json_error_null_byte_in_key:
            return js_err_set(err, JS_EINVAL, JS_R_CLAIMS_NUL,
                              "claims_json contains a NUL character (offset %d)", jerr.position);
        default:
            return js_err_set(err, JS_EINVAL, JS_R_CLAIMS_SYNTAX,
                              "claims_json is not valid JSON: %s at line %d column %d", what,
                              jerr.line, jerr.column);
        }
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return js_err_set(err, JS_EINVAL, JS_R_CLAIMS_NOT_OBJECT,
                          "claims_json must be a JSON object (RFC 7519 §7.2 step 10)");
    }
    size_t depth = claims_depth(root);
    if (depth > CLAIMS_MAX_DEPTH) {
        json_decref(root);
        return js_err_set(err, JS_EINVAL, JS_R_CLAIMS_DEPTH,
                          "claims_json nests %zu levels deep; the limit is %d", depth,
                          CLAIMS_MAX_DEPTH);
    }
    *out = root;
    return JS_OK;
}

size_t claims_depth(const json_t *v)
{
    size_t max = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *child;
        json_object_foreach((json_t *)v, k, child)
        {
            size_t d = claims_depth(child);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child)
        {
            size_t d = claims_depth(child);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    return 0;
}

/* Registered claims only the server may set (RFC 7519 §4.1.1, .5, .6, .7). */
static const char *const k_server_claims[] = {"iss", "iat", "nbf", "jti"};

js_status claims_apply_server(json_t *claims, const char *issuer, int64_t now,
                              const claims_lifetime *life, const char *jti, int64_t *exp_out,
                              js_err *err)
{
    for (size_t i = 0; i < sizeof(k_server_claims) / sizeof(k_server_claims[0]); i++)
        JS_ENSURE(json_object_get(claims, k_server_claims[i]) == NULL, err, JS_EINVAL,
                  JS_R_CLAIMS_RESERVED, "claim '%s' is set by the signer; callers may not send it",
                  k_server_claims[i]);

    int64_t exp;
    const json_t *jexp = json_object_get(claims, "exp");
    if (jexp != NULL) {
        /* RFC 7519 §2 allows non-integer NumericDates; we do not, so every
         * verifier reads the same instant (and floats cannot hide 2^63). */
        JS_ENSURE(json_is_integer(jexp), err, JS_EINVAL, JS_R_CLAIMS_EXP_TYPE,
                  "exp must be an integer NumericDate (seconds since the epoch)");
        exp = (int64_t)json_integer_value(jexp);
        JS_ENSURE(exp > now, err, JS_EINVAL, JS_R_CLAIMS_EXP_PAST,
                  "exp %" PRId64 " is not in the future (now %" PRId64 ")", exp, now);
        JS_ENSURE(exp - now <= life->max_ttl, err, JS_EDENIED, JS_R_CLAIMS_EXP_TOO_FAR,
                  "exp %" PRId64 " exceeds the maximum lifetime of %" PRId64
                  " s (latest allowed %" PRId64 ")",
                  exp, life->max_ttl, now + life->max_ttl);
    } else {
        exp = now + life->default_ttl;
    }
    if (life->window > 0 && exp - now > life->window)
        exp = now + life->window;

    static const char *const names[] = {"iss", "iat", "exp", "jti"};
    json_t *vals[] = {json_string(issuer), json_integer(now), json_integer(exp), json_string(jti)};
    bool ok = true;
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        ok = ok && vals[i] != NULL;
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        if (ok)
            /* _set_new takes the reference, also when it fails. */
            ok = json_object_set_new(claims, names[i], vals[i]) == 0;
        else
            json_decref(vals[i]); /* not handed over (NULL is fine) */
    }
    if (!ok)
        return js_err_oom(err); /* the claim set may be changed (see claims.h) */
    if (exp_out != NULL)
        *exp_out = exp;
    return JS_OK;
}

js_status claims_cnf_check(const json_t *cnf, js_err *err)
{
    static const char *const methods[] = {"x5t#S256", "jkt"};
    JS_ENSURE(json_is_object(cnf), err, JS_EINVAL, JS_R_CLAIMS_CNF,
              "cnf must be a JSON object with one member, x5t#S256 or jkt (RFC 7800 §3.1)");
    size_t n = json_object_size(cnf);
    JS_ENSURE(n == 1, err, JS_EINVAL, JS_R_CLAIMS_CNF,
              "cnf has %zu members; it must have exactly one, x5t#S256 (RFC 8705) or jkt (RFC "
              "9449)",
              n);
    void *it = json_object_iter((json_t *)cnf);
    const char *name = json_object_iter_key(it);
    const json_t *v = json_object_iter_value(it);
    bool known = false;
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]) && !known; i++)
        known = strcmp(name, methods[i]) == 0;
    /* The member name is the caller's text: only its length is reported. */
    JS_ENSURE(known, err, JS_EINVAL, JS_R_CLAIMS_CNF,
              "cnf member (%zu bytes) is not x5t#S256 (RFC 8705 §3.1) or jkt (RFC 9449 §6.1); "
              "no other confirmation method is accepted",
              strlen(name));
    JS_ENSURE(json_is_string(v), err, JS_EINVAL, JS_R_CLAIMS_CNF,
              "cnf.%s must be a string: the base64url SHA-256 (43 characters)", name);
    size_t len = json_string_length(v);
    JS_ENSURE(len == CLAIMS_CNF_THUMBPRINT_LEN, err, JS_EINVAL, JS_R_CLAIMS_CNF,
              "cnf.%s is %zu characters; it must be the base64url of a SHA-256, exactly %d "
              "characters without padding",
              name, len, CLAIMS_CNF_THUMBPRINT_LEN);
    /* The strict decoder (b64url.h) refuses padding, characters outside the
     * URL-safe alphabet and non-zero trailing bits, so one thumbprint has
     * one accepted spelling and a verifier's byte comparison cannot differ. */
    uint8_t raw[B64URL_DECODED_MAX(CLAIMS_CNF_THUMBPRINT_LEN)];
    size_t got = 0;
    js_err why;
    js_err_clear(&why);
    JS_ENSURE(b64url_decode(json_string_value(v), len, raw, sizeof(raw), &got, &why) == JS_OK &&
                  got == CLAIMS_CNF_THUMBPRINT_BYTES,
              err, JS_EINVAL, JS_R_CLAIMS_CNF,
              "cnf.%s is not the canonical base64url (RFC 4648 §5, no padding, zero trailing "
              "bits) of %d bytes: %s",
              name, CLAIMS_CNF_THUMBPRINT_BYTES, why.msg[0] ? why.msg : "wrong length");
    return JS_OK;
}

js_status claims_new_jti(char jti[CLAIMS_JTI_LEN + 1], js_err *err)
{
    uint8_t raw[CLAIMS_JTI_BYTES];
    JS_ENSURE(RAND_bytes(raw, sizeof(raw)) == 1, err, JS_EINTERNAL, JS_R_INTERNAL_RAND,
              "random number generator failed");
    size_t n = b64url_encode(raw, sizeof(raw), jti, CLAIMS_JTI_LEN + 1);
    JS_ENSURE(n == CLAIMS_JTI_LEN, err, JS_EINTERNAL, JS_R_INTERNAL_JTI, "jti encoding failed");
    return JS_OK;
}
