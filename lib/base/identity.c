/*
 * identity.c - chooses the caller identity (URI SAN, else DNS SAN, else CN)
 * and writes it as typed text, writes a Unix socket peer's `unix:uid=N`, and
 * checks identity texts written by operators. See identity.h for the forms
 * and why they carry their type.
 */
#include "identity.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "text.h"
#include "yamldoc.h"

#define PREFIX_DNS      "dns:"
#define PREFIX_CN       "cn:"
#define PREFIX_UNIX     "unix:"
#define PREFIX_UNIX_UID "unix:uid="
/* Digits of IDENTITY_UNIX_UID_MAX (4294967294). */
#define UNIX_UID_DIGITS_MAX 10

static bool is_alpha(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Length of the RFC 3986 §3.1 scheme before the first ':' (scheme = ALPHA
 * *( ALPHA / DIGIT / "+" / "-" / "." )), or 0 if s does not start with one. */
static size_t scheme_len(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    if (!is_alpha(u[0]))
        return 0;
    size_t i = 1;
    while (is_alpha(u[i]) || is_digit(u[i]) || u[i] == '+' || u[i] == '-' || u[i] == '.')
        i++;
    return u[i] == ':' ? i : 0;
}

/* The scheme s[0..n) is `name` (lower case), compared in any case. */
static bool scheme_is(const char *s, size_t n, const char *name)
{
    if (strlen(name) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)name[i])
            return false;
    return true;
}

/* The schemes that would read as another identity type. */
static bool scheme_is_type(const char *s, size_t n)
{
    return scheme_is(s, n, "dns") || scheme_is(s, n, "cn") || scheme_is(s, n, "unix");
}

/* A URI as RFC 5280 §4.2.1.6 carries it (IA5String): printable ASCII without
 * spaces, a scheme, something after it. Returns a problem or NULL. */
static const char *uri_problem(const char *s)
{
    size_t n = scheme_len(s);
    if (n == 0)
        return "does not start with a URI scheme and ':' (RFC 3986 §3.1)";
    if (s[n + 1] == '\0')
        return "has nothing after its scheme";
    for (const unsigned char *u = (const unsigned char *)s; *u != '\0'; u++)
        if (*u <= 0x20 || *u >= 0x7f)
            return "has a space or a non-ASCII character (a URI is ASCII, RFC 3986 §2)";
    return NULL;
}

/* A host name (RFC 1034 §3.5 / RFC 1123 §2.1 letters, digits, hyphens; '_'
 * too, as internal service names use it): dot-separated labels of 1..63, no
 * label starting or ending with '-', no trailing dot, no wildcard. Upper
 * case only when allow_upper. Returns a problem or NULL. */
static const char *dns_problem(const char *s, bool allow_upper)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > IDENTITY_DNS_MAX)
        return "is not a host name of 1..253 characters";
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > IDENTITY_LABEL_MAX)
                return "has an empty label or one longer than 63 characters";
            if (s[i - 1] == '-' || s[i - label] == '-')
                return "has a label starting or ending with '-'";
            label = 0;
            continue;
        }
        if (c >= 'A' && c <= 'Z' && !allow_upper)
            return "has upper-case letters; write it in lower case (DNS names compare "
                   "case-insensitively)";
        if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '_'))
            return "is not a host name (letters, digits, '-', '_' and dots only)";
        label++;
    }
    return NULL;
}

/* ---- identity_select ---------------------------------------------------------------- */

static js_status put(char *out, size_t cap, const char *prefix, const char *name, const char *field,
                     js_err *err)
{
    size_t n = strlen(prefix) + strlen(name);
    JS_ENSURE(n <= IDENTITY_MAX, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "client certificate %s gives an identity of %zu bytes; at most %d are allowed", field,
              n, IDENTITY_MAX);
    JS_ENSURE(n < cap, err, JS_EINTERNAL, JS_R_IDENTITY_BUFFER, "identity buffer too small");
    snprintf(out, cap, "%s%s", prefix, name);
    return JS_OK;
}

static js_status clean(const char *name, const char *field, js_err *err)
{
    char what[64];
    snprintf(what, sizeof(what), "client certificate %s", field);
    JS_ENSURE(name[0] != '\0', err, JS_EDENIED, JS_R_IDENTITY_INVALID, "%s is empty", what);
    return js_text_check(what, name, strlen(name), IDENTITY_MAX, JS_EDENIED, JS_R_IDENTITY_INVALID,
                         err);
}

static js_status take_uri(const char *uri, char *out, size_t cap, js_err *err)
{
    char shown[64];
    JS_GUARD(clean(uri, "URI SAN", err));
    const char *why = uri_problem(uri);
    JS_ENSURE(why == NULL, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "client certificate URI SAN '%s' %s", js_yaml_printable(shown, sizeof(shown), uri),
              why);
    JS_ENSURE(!scheme_is_type(uri, scheme_len(uri)), err, JS_EDENIED, JS_R_IDENTITY_AMBIGUOUS,
              "client certificate URI SAN '%s' uses a scheme that reads as another identity "
              "type (dns:, cn: or unix:)",
              js_yaml_printable(shown, sizeof(shown), uri));
    return put(out, cap, "", uri, "URI SAN", err);
}

static js_status take_dns(const char *name, char *out, size_t cap, js_err *err)
{
    char shown[64], low[IDENTITY_DNS_MAX + 1];
    JS_GUARD(clean(name, "DNS SAN", err));
    const char *why = dns_problem(name, true);
    JS_ENSURE(why == NULL, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "client certificate DNS SAN '%s' %s", js_yaml_printable(shown, sizeof(shown), name),
              why);
    size_t n = strlen(name); /* <= IDENTITY_DNS_MAX: dns_problem checked */
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)lower((unsigned char)name[i]);
    return put(out, cap, PREFIX_DNS, low, "DNS SAN", err);
}

static js_status take_cn(const char *cn, char *out, size_t cap, js_err *err)
{
    JS_GUARD(clean(cn, "CN", err));
    return put(out, cap, PREFIX_CN, cn, "CN", err);
}

js_status identity_select(const identity_names *names, char *out, size_t cap, js_err *err)
{
    if (cap > 0)
        out[0] = '\0';
    if (names->nuris > 0) {
        /* Two URI SANs would make "the" identity ambiguous (SPIFFE X509-SVID §2). */
        JS_ENSURE(names->nuris == 1, err, JS_EDENIED, JS_R_IDENTITY_AMBIGUOUS,
                  "client certificate has %zu URI SANs; exactly one is allowed", names->nuris);
        return take_uri(names->uris[0], out, cap, err);
    }
    if (names->ndns > 0)
        return take_dns(names->dns[0], out, cap, err);
    if (names->cn != NULL)
        return take_cn(names->cn, out, cap, err);
    return js_err_set(err, JS_EDENIED, JS_R_IDENTITY_NONE,
                      "client certificate has no URI SAN, DNS SAN or CN");
}

/* ---- identity_from_peer ------------------------------------------------------------ */

js_status identity_from_peer(unsigned long uid, char *out, size_t cap, js_err *err)
{
    if (cap > 0)
        out[0] = '\0';
    JS_ENSURE(uid <= IDENTITY_UNIX_UID_MAX, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "Unix socket peer uid %lu is not a user (at most %lu; (uid_t)-1 means none)", uid,
              IDENTITY_UNIX_UID_MAX);
    char buf[sizeof(PREFIX_UNIX_UID) + UNIX_UID_DIGITS_MAX];
    int n = snprintf(buf, sizeof(buf), PREFIX_UNIX_UID "%lu", uid);
    JS_ENSURE(n > 0 && (size_t)n < sizeof(buf), err, JS_EINTERNAL, JS_R_IDENTITY_BUFFER,
              "identity buffer too small");
    return put(out, cap, "", buf, "peer uid", err);
}

/* ---- identity_parse ----------------------------------------------------------------- */

/* `unix:uid=N`: N decimal 0..IDENTITY_UNIX_UID_MAX, no sign, no leading zero
 * (one spelling per uid, so one string comparison matches it), nothing after. */
static bool unix_ok(const char *text)
{
    const char *d = text + sizeof(PREFIX_UNIX_UID) - 1;
    if (strncmp(text, PREFIX_UNIX_UID, sizeof(PREFIX_UNIX_UID) - 1) != 0 ||
        !is_digit((unsigned char)d[0]))
        return false;
    size_t n = 0;
    unsigned long long v = 0; /* 10 digits fit: no overflow */
    while (is_digit((unsigned char)d[n])) {
        if (++n > UNIX_UID_DIGITS_MAX)
            return false;
        v = v * 10 + (unsigned long long)(d[n - 1] - '0');
    }
    return d[n] == '\0' && (d[0] != '0' || n == 1) && v <= IDENTITY_UNIX_UID_MAX;
}

js_status identity_parse(const char *text, js_identity_type *type, js_err *err)
{
    char shown[64];
    JS_ENSURE(text != NULL && text[0] != '\0', err, JS_EINVAL, JS_R_IDENTITY_INVALID,
              "an identity must not be empty; write dns:NAME, cn:NAME, unix:uid=N or a full URI");
    JS_GUARD(js_text_check("identity", text, strlen(text), IDENTITY_MAX, JS_EINVAL,
                           JS_R_IDENTITY_INVALID, err));
    const char *q = js_yaml_printable(shown, sizeof(shown), text);
    size_t sl = scheme_len(text);
    if (sl == 3 && strncmp(text, "dns", 3) == 0) {
        const char *why = dns_problem(text + 4, false);
        JS_ENSURE(why == NULL, err, JS_EINVAL, JS_R_IDENTITY_INVALID,
                  "identity '%s': the DNS name %s", q, why);
        if (type != NULL)
            *type = JS_ID_DNS;
        return JS_OK;
    }
    if (sl == 2 && strncmp(text, "cn", 2) == 0) {
        JS_ENSURE(text[3] != '\0', err, JS_EINVAL, JS_R_IDENTITY_INVALID,
                  "identity '%s': the CN after cn: is empty", q);
        if (type != NULL)
            *type = JS_ID_CN;
        return JS_OK;
    }
    if (scheme_is(text, sl, "unix")) {
        /* Any case: `UNIX:uid=0` must not pass for a URI that merely reads
         * like the Unix peer root. */
        JS_ENSURE(unix_ok(text), err, JS_EINVAL, JS_R_IDENTITY_INVALID,
                  "identity '%s': a Unix socket peer is written unix:uid=N with N its decimal "
                  "uid (0..%lu, no sign or leading zeros), e.g. unix:uid=1000",
                  q, IDENTITY_UNIX_UID_MAX);
        if (type != NULL)
            *type = JS_ID_UNIX;
        return JS_OK;
    }
    JS_ENSURE(!scheme_is_type(text, sl), err, JS_EINVAL, JS_R_IDENTITY_AMBIGUOUS,
              "identity '%s': write the type in lower case (dns: or cn:)", q);
    /* A CN may hold anything, so a text with a scheme could also be a CN or a
     * DNS name: only the prefix says which field it came from. */
    if (sl == 0) {
        char s[40]; /* shorter: the text is quoted three times */
        js_yaml_printable(s, sizeof(s), text);
        return js_err_set(err, JS_EINVAL, JS_R_IDENTITY_AMBIGUOUS,
                          "identity '%s' has no type; write it as dns:%s (DNS SAN), cn:%s "
                          "(subject CN) or a full URI such as spiffe://... (URI SAN)",
                          s, s, s);
    }
    const char *why = uri_problem(text);
    JS_ENSURE(why == NULL, err, JS_EINVAL, JS_R_IDENTITY_INVALID, "identity '%s': the URI %s", q,
              why);
    if (type != NULL)
        *type = JS_ID_URI;
    return JS_OK;
}

js_identity_type identity_type_of(const char *text)
{
    if (strncmp(text, PREFIX_DNS, sizeof(PREFIX_DNS) - 1) == 0)
        return JS_ID_DNS;
    if (strncmp(text, PREFIX_CN, sizeof(PREFIX_CN) - 1) == 0)
        return JS_ID_CN;
    if (strncmp(text, PREFIX_UNIX, sizeof(PREFIX_UNIX) - 1) == 0)
        return JS_ID_UNIX;
    return JS_ID_URI;
}

const char *identity_type_name(js_identity_type t)
{
    switch (t) {
    case JS_ID_URI:
        return "uri";
    case JS_ID_DNS:
        return "dns";
    case JS_ID_CN:
        return "cn";
    case JS_ID_UNIX:
        return "unix";
    default:
        return "unknown";
    }
}
