/*
 * discovery.c - the OpenID provider metadata (see discovery.h). Built with
 * jansson, members in the order of OIDC Discovery 1.0 section 3; the
 * caller passes the algorithms of the keys the keyring publishes (the JWKS's
 * keys), so nothing is parsed per request.
 */
#include "discovery.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

/* The sorted, distinct names of algs[0..n), as a new JSON array. */
static js_status alg_names(const js_alg *algs, size_t n, json_t **out, js_err *err)
{
    const char **names = calloc(n > 0 ? n : 1, sizeof(*names));
    json_t *arr = json_array();
    js_status st = names != NULL && arr != NULL ? JS_OK : js_err_oom(err);
    for (size_t i = 0; st == JS_OK && i < n; i++) {
        names[i] = js_alg_name(algs[i]);
        if (names[i] == NULL)
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
                            "discovery: published algorithm %d has no name", (int)algs[i]);
    }
    if (st == JS_OK)
        qsort(names, n, sizeof(*names), cmp_str);
    for (size_t i = 0; st == JS_OK && i < n; i++)
        if ((i == 0 || strcmp(names[i], names[i - 1]) != 0) &&
            json_array_append_new(arr, json_string(names[i])) != 0)
            st = js_err_oom(err);
    free(names);
    if (st != JS_OK) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    return JS_OK;
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

js_status js_discovery_build(const char *issuer, const char *jwks_uri, const js_alg *algs,
                             size_t nalgs, char **out, js_err *err)
{
    if (out != NULL)
        *out = NULL;
    JS_ENSURE(issuer != NULL && (algs != NULL || nalgs == 0) && out != NULL, err, JS_EINTERNAL,
              JS_R_INTERNAL_BUG, "js_discovery_build: NULL argument");
    json_t *names = NULL;
    JS_GUARD(alg_names(algs, nalgs, &names, err));
    char *derived = NULL;
    if (jwks_uri == NULL) {
        derived = derived_jwks_uri(issuer);
        if (derived == NULL) {
            json_decref(names);
            return js_err_oom(err);
        }
    }
    /* json_pack steals names ("o"), also when it fails; "s" refuses non-UTF-8. */
    json_error_t je;
    json_t *doc = json_pack_ex(&je, 0, "{s:s, s:s, s:[s], s:[s], s:o}", "issuer", issuer,
                               "jwks_uri", jwks_uri != NULL ? jwks_uri : derived,
                               "response_types_supported", "id_token", "subject_types_supported",
                               "public", "id_token_signing_alg_values_supported", names);
    free(derived);
    JS_ENSURE(doc != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
              "discovery: cannot build the document: %s", je.text);
    *out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    JS_ENSURE_ALLOC(*out, err);
    return JS_OK;
}
