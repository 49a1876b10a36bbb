/*
 * form.c - the introspection request's form body (form.h): one pass over
 * the '&'-separated pairs, each name decoded to compare it, every value
 * checked for well-formed escapes, the token's value decoded into a copy.
 */
#include "form.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Decodes s[0..n) into out (at least n bytes; may be NULL to only check) and
 * returns the decoded length, or -1 for a '%' not followed by two hex digits.
 */
static long decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3)
                return -1;
            int hi = hexval((unsigned char)s[i + 1]);
            int lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (out != NULL)
            out[o] = (char)c;
        o++;
    }
    return (long)o;
}

bool js_http_form_type_ok(const char *ct)
{
    static const char k_type[] = "application/x-www-form-urlencoded";
    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, k_type, sizeof(k_type) - 1) != 0)
        return false;
    const char *p = ct + sizeof(k_type) - 1;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';';
}

/* The parameters taken from the form (RFC 7662 §2.1). */
#define NAME_TOKEN "token"
#define NAME_HINT  "token_type_hint"

js_status js_http_form_token(const char *body, size_t len, char **token, size_t *token_len,
                             js_err *err)
{
    *token = NULL;
    *token_len = 0;
    JS_ENSURE(len <= JS_HTTP_FORM_MAX, err, JS_EINVAL, JS_R_HTTP_BODY_TOO_LARGE,
              "the request body is larger than %d bytes", JS_HTTP_FORM_MAX);
    JS_ENSURE(body != NULL || len == 0, err, JS_EINVAL, JS_R_HTTP_FORM, "no request body");
    const char *tok = NULL; /* the token's raw value */
    size_t tok_n = 0;
    bool hint = false;
    size_t pos = 0;
    while (pos < len) {
        const char *pair = body + pos;
        const char *amp = memchr(pair, '&', len - pos);
        size_t plen = amp != NULL ? (size_t)(amp - pair) : len - pos;
        pos += plen + 1;
        if (plen == 0)
            continue;
        const char *eq = memchr(pair, '=', plen);
        size_t nlen = eq != NULL ? (size_t)(eq - pair) : plen;
        const char *val = eq != NULL ? eq + 1 : pair + plen;
        size_t vlen = plen - nlen - (eq != NULL ? 1 : 0);
        /* Every escape must be well formed, even in ignored parameters. */
        long dn = decode(pair, nlen, NULL);
        JS_ENSURE(dn >= 0, err, JS_EINVAL, JS_R_HTTP_FORM,
                  "malformed percent-encoding in a form parameter name");
        JS_ENSURE(decode(val, vlen, NULL) >= 0, err, JS_EINVAL, JS_R_HTTP_FORM,
                  "malformed percent-encoding in a form parameter value");
        /* Names compare decoded ("tok%65n" is token); a longer one matches neither. */
        char name[sizeof(NAME_HINT)];
        if ((size_t)dn >= sizeof(name))
            continue;
        (void)decode(pair, nlen, name);
        if ((size_t)dn == sizeof(NAME_TOKEN) - 1 && memcmp(name, NAME_TOKEN, (size_t)dn) == 0) {
            JS_ENSURE(tok == NULL, err, JS_EINVAL, JS_R_HTTP_FORM,
                      "the form has more than one token parameter (RFC 6749 section 3.1)");
            tok = val;
            tok_n = vlen;
        } else if ((size_t)dn == sizeof(NAME_HINT) - 1 &&
                   memcmp(name, NAME_HINT, (size_t)dn) == 0) {
            JS_ENSURE(!hint, err, JS_EINVAL, JS_R_HTTP_FORM,
                      "the form has more than one token_type_hint parameter (RFC 6749 "
                      "section 3.1)");
            hint = true;
        }
    }
    JS_ENSURE(tok != NULL, err, JS_EINVAL, JS_R_HTTP_FORM,
              "the form has no token parameter (RFC 7662 section 2.1)");
    char *out = malloc(tok_n + 1);
    JS_ENSURE_ALLOC(out, err);
    long n = decode(tok, tok_n, out);
    out[n] = '\0';
    *token = out;
    *token_len = (size_t)n;
    return JS_OK;
}
