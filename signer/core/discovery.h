/*
 * discovery.h - the OpenID Connect Discovery 1.0 provider metadata that
 * jwt-signerd serves at /.well-known/openid-configuration, and the rule for
 * the one URL the configuration may give it (http.jwks_uri).
 *
 * The document is built from the policy's issuer and the algorithms of the
 * keys the keyring publishes, so it changes with a policy reload and a key
 * rotation exactly when they do.
 * Members (section 3): issuer, jwks_uri, response_types_supported
 * ["id_token"], subject_types_supported ["public"], and
 * id_token_signing_alg_values_supported: the "alg" of every key the JWKS
 * publishes, sorted, without duplicates (empty when none is published).
 */
#ifndef JS_DISCOVERY_H
#define JS_DISCOVERY_H

#include <stdbool.h>

#include "alg.h"
#include "err.h"

#define JS_DISCOVERY_URL_MAX   2048 /* bytes of http.jwks_uri */
#define JS_DISCOVERY_JWKS_PATH "/.well-known/jwks.json"

/*
 * An absolute http or https URL (RFC 3986 section 4.3, scheme in lower
 * case) with a non-empty authority, 1..JS_DISCOVERY_URL_MAX bytes of
 * printable ASCII without spaces, and no fragment (OIDC Discovery section 3
 * URLs name a document, not a part of one). Reads at most the limit plus one
 * byte; NULL is invalid.
 */
bool js_discovery_url_ok(const char *s);

/*
 * The metadata JSON into *out (malloc'd, caller frees; NULL on error). issuer is copied
 * byte for byte; jwks_uri NULL = derived: issuer without one trailing slash
 * + JS_DISCOVERY_JWKS_PATH. algs[0..nalgs) are the algorithms of the
 * published keys, in any order, repeats allowed (nalgs 0: none published).
 * Errors: JS_EINTERNAL internal.bug (a NULL argument, an issuer or jwks_uri
 * that is not UTF-8, an algorithm without a name), internal.oom.
 */
js_status js_discovery_build(const char *issuer, const char *jwks_uri, const js_alg *algs,
                             size_t nalgs, char **out, js_err *err) JS_WUR;

#endif
