/*
 * form.h - the body of an RFC 7662 §2.1 introspection request: an
 * application/x-www-form-urlencoded form (WHATWG URL "application/
 * x-www-form-urlencoded parsing", with strict percent-decoding) from which
 * only `token` and `token_type_hint` are taken. Pure functions over bytes,
 * for the HTTP listener (http.c) and its unit tests.
 */
#ifndef JS_HTTP_FORM_H
#define JS_HTTP_FORM_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Bytes of an introspection request body, at most (a larger one is 413). The
 * longest token the signer introspects is 32 KiB (JS_INTROSPECT_TOKEN_MAX),
 * so any honest request fits with room for its percent-encoding. */
#define JS_HTTP_FORM_MAX (64 * 1024)

/* Is ct (a Content-Type field value, may be NULL) application/
 * x-www-form-urlencoded, in any case, with or without parameters? */
bool js_http_form_type_ok(const char *ct);

/*
 * Parses body[0..len) (len <= JS_HTTP_FORM_MAX) and returns the decoded
 * `token` in *token (malloc'd, NUL-terminated, *token_len bytes, which may
 * hold NUL bytes: the caller uses the length; the caller frees). Pairs are
 * separated by '&' (empty ones skipped), name and value by the first '=';
 * '+' is a space and '%' must be followed by two hex digits. Parameters
 * other than token and token_type_hint are ignored (RFC 7662 §2.1 allows
 * extensions), token_type_hint is only a hint and is not used (§2.1: the
 * server may ignore it). JS_EINVAL with reason http.form: a malformed
 * percent escape anywhere in the body, no token, or token or
 * token_type_hint given more than once (RFC 6749 §3.1); a body over
 * JS_HTTP_FORM_MAX is http.body_too_large. On failure *token is NULL.
 */
js_status js_http_form_token(const char *body, size_t len, char **token, size_t *token_len,
                             js_err *err) JS_WUR;

#endif
