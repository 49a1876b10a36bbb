/*
 * identity.c - chooses the caller identity: URI SAN, else DNS SAN, else CN.
 */
#include "identity.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

/* Valid UTF-8 without control characters (C0, DEL): identities go into
 * logs, audit records and comparisons. */
static int identity_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > IDENTITY_MAX)
        return 0;
    json_t *utf8 = json_string(s); /* jansson validates UTF-8 (RFC 3629) */
    if (utf8 == NULL)
        return 0;
    json_decref(utf8);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static js_status identity_take(const char *name, const char *kind, char *out, size_t cap,
                               js_err *err)
{
    JS_ENSURE(identity_valid(name), err, JS_EDENIED, "identity.invalid",
              "client certificate %s is empty, too long, not UTF-8 or has control characters",
              kind);
    JS_ENSURE(strlen(name) < cap, err, JS_EINTERNAL, "identity.buffer",
              "identity buffer too small");
    snprintf(out, cap, "%s", name);
    return JS_OK;
}

js_status identity_select(const identity_names *names, char *out, size_t cap, js_err *err)
{
    if (cap > 0)
        out[0] = '\0';
    if (names->nuris > 0) {
        /* Two URI SANs would make "the" identity ambiguous (SPIFFE X509-SVID §2). */
        JS_ENSURE(names->nuris == 1, err, JS_EDENIED, "identity.ambiguous",
                  "client certificate has %zu URI SANs; exactly one is allowed", names->nuris);
        return identity_take(names->uris[0], "URI SAN", out, cap, err);
    }
    if (names->ndns > 0)
        return identity_take(names->dns[0], "DNS SAN", out, cap, err);
    if (names->cn != NULL)
        return identity_take(names->cn, "CN", out, cap, err);
    return js_err_set(err, JS_EDENIED, "identity.none",
                      "client certificate has no URI SAN, DNS SAN or CN");
}
