/*
 * fuzz_http_form.c - libFuzzer target for the introspection request body
 * (signer/http/form.h): any bytes are parsed or refused cleanly with
 * http.form / http.body_too_large; a parsed token is never longer than the
 * body, is NUL-terminated, and parsing the same bytes again gives the same
 * token (no hidden state). The content-type check takes the bytes as a C
 * string.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "form.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > JS_HTTP_FORM_MAX + 16)
        return 0;
    const char *body = (const char *)data;
    char *tok = NULL;
    size_t n = 0;
    js_err err = {0};
    js_status st = js_http_form_token(body, size, &tok, &n, &err);
    if (st == JS_OK) {
        if (tok == NULL || n > size || tok[n] != '\0')
            abort();
        char *again = NULL;
        size_t m = 0;
        if (js_http_form_token(body, size, &again, &m, &err) != JS_OK || m != n ||
            memcmp(tok, again, n) != 0)
            abort();
        free(again);
        free(tok);
    } else {
        if (tok != NULL || n != 0 || st != JS_EINVAL ||
            (err.reason != JS_R_HTTP_FORM && err.reason != JS_R_HTTP_BODY_TOO_LARGE))
            abort();
        if (err.reason == JS_R_HTTP_BODY_TOO_LARGE && size <= JS_HTTP_FORM_MAX)
            abort();
    }
    char ct[256];
    size_t cl = size < sizeof(ct) - 1 ? size : sizeof(ct) - 1;
    memcpy(ct, data, cl);
    ct[cl] = '\0';
    (void)js_http_form_type_ok(ct);
    return 0;
}
