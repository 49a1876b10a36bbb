/*
 * discovery.c - the OpenID provider metadata (see discovery.h). Built with
 * jansson, members in the order of OIDC Discovery 1.0 section 3, from the
 * JWKS string the keyring already made, so the algorithms listed are by
 * construction those of the keys the JWKS publishes.
 */
#include "discovery.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* JWKs read from the JWK Set at most: far above any keyring (keyring.h). */
#define JWKS_KEYS_MAX 1024

bool js_discovery_url_ok(const char *s)
{
    if (s == NULL)
        return false;
    size_t n = strnlen(s, JS_DISCOVERY_URL_MAX + 1);
    if (n == 0 || n > JS_DISCOVERY_URL_MAX)
        return false;
    size_t scheme;
    if (strncmp(s, "https://", 8) == 0)
        scheme = 8;
    else if (strncmp(s, "http://", 7) == 0)
        scheme = 7;
    else
        return false;
    /* Printable ASCII only: no control characters, no space, nothing a log
     * line or a header could be split on, and no fragment. */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '#')
            return false;
    }
    /* RFC 3986 section 3.2: the authority ends at the next '/', '?' (or the end). */
    size_t host = strcspn(s + scheme, "/?");
    return host > 0 && s[scheme] != '@' && s[scheme] != ':';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The sorted, distinct "alg" values of jwks's keys, as a new JSON array. */
static js_status algs_of(const char *jwks, json_t **out, js_err *err)
{
    json_error_t je;
    json_t *set = json_loads(jwks, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = json_object_get(set, "keys");
    size_t n = json_array_size(keys);
    if (!json_is_array(keys) || n > JWKS_KEYS_MAX) {
        json_decref(set);
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
                          "discovery: the JWKS is not a JWK Set of at most %d keys", JWKS_KEYS_MAX);
    }
    const char **algs = calloc(n > 0 ? n : 1, sizeof(*algs));
    json_t *arr = json_array();
    js_status st = JS_OK;
    if (algs == NULL || arr == NULL) {
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        goto done;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        /* Every JWK the keyring publishes carries alg (RFC 7517 section 4.4). */
        const char *alg = json_string_value(json_object_get(json_array_get(keys, i), "alg"));
        if (alg == NULL) {
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
                            "discovery: JWKS key %zu has no alg", i);
            goto done;
        }
        algs[m++] = alg;
    }
    qsort(algs, m, sizeof(*algs), cmp_str);
    for (size_t i = 0; i < m; i++) {
        if (i > 0 && strcmp(algs[i], algs[i - 1]) == 0)
            continue;
        if (json_array_append_new(arr, json_string(algs[i])) != 0) {
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
            goto done;
        }
    }
    *out = arr;
    arr = NULL;
done:
    json_decref(arr);
    free(algs);
    json_decref(set); /* after the array: algs borrowed its strings */
    return st;
}

/* issuer without one trailing slash + JS_DISCOVERY_JWKS_PATH. */
static char *derived_jwks_uri(const char *issuer)
{
    size_t n = strlen(issuer);
    if (n > 0 && issuer[n - 1] == '/')
        n--;
    size_t plen = strlen(JS_DISCOVERY_JWKS_PATH);
    char *u = malloc(n + plen + 1);
    if (u == NULL)
        return NULL;
    memcpy(u, issuer, n);
    memcpy(u + n, JS_DISCOVERY_JWKS_PATH, plen + 1);
    return u;
}

js_status js_discovery_build(const char *issuer, const char *jwks_uri, const char *jwks, char **out,
                             js_err *err)
{
    if (out != NULL)
        *out = NULL;
    JS_ENSURE(issuer != NULL && jwks != NULL && out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
              "js_discovery_build: NULL argument");
    json_t *algs = NULL;
    JS_GUARD(algs_of(jwks, &algs, err));
    char *derived = NULL;
    if (jwks_uri == NULL) {
        derived = derived_jwks_uri(issuer);
        if (derived == NULL) {
            json_decref(algs);
            return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        }
    }
    /* json_pack steals algs ("o"), also when it fails; "s" refuses non-UTF-8. */
    json_error_t je;
    json_t *doc = json_pack_ex(&je, 0, "{s:s, s:s, s:[s], s:[s], s:o}", "issuer", issuer,
                               "jwks_uri", jwks_uri != NULL ? jwks_uri : derived,
                               "response_types_supported", "id_token", "subject_types_supported",
                               "public", "id_token_signing_alg_values_supported", algs);
    free(derived);
    JS_ENSURE(doc != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
              "discovery: cannot build the document: %s", je.text);
    *out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    JS_ENSURE_ALLOC(*out, err);
    return JS_OK;
}
