/*
 * policy_load.c - reads and validates a policy file into an immutable
 * js_policy (policy.h; the file format is documented in
 * policy/examples/policy.yaml), and frees one.
 *
 * The file is read once through the bounded reader (fileio.h) and parsed
 * through yamldoc (bounded tree, unique keys, a line on every node); loading
 * stops at the first problem with "FILE:LINE: path: problem", JS_ECONFIG,
 * reason "policy.*". The top-level `defaults` section is parsed into a rules
 * record pre-filled with built-in values; each caller entry is parsed into
 * its own rules record holding only the fields it sets (policy_int.h).
 * Consistency rules that relate two fields (default_ttl <= max_ttl,
 * default_key in keys, incident_rate no looser than rate, ...) are checked on
 * a caller's effective values, with the line of whichever section supplied
 * each; so are the extra rules of a unix: (Kubernetes, validate mode)
 * caller: no fixed claims, max_ttl of at least JS_POLICY_KUBE_MIN_MAX_TTL,
 * no cnf requirement; and cnf_audiences within the audiences. The top-level
 * lists of identities (admins, introspectors) are exact typed identities.
 */
#include "fileio.h"
#include "policy_int.h"
#include "regex_cost.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "hex.h"
#include "names.h"
#include "yamldoc.h"

/* Built-in values when neither defaults nor the caller set a field (the same
 * as the signer configuration's built-in lifetime). */
#define BUILTIN_DEFAULT_TTL (5 * 60)
#define BUILTIN_MAX_TTL     (60 * 60)
#define BUILTIN_MAX_AUD     5

/* The keys each mapping of the file may hold. */
static const char *const k_top_keys[] = {"version",  "issuer",   "admins", "introspectors",
                                         "incident", "defaults", "callers"};
/* defaults: every field but frozen (freezing everyone is not a default). */
static const char *const k_defaults_keys[] = {
    "keys",        "default_key",   "audiences", "max_aud",          "max_ttl", "default_ttl",
    "scope_claim", "scopes",        "subject",   "subject_required", "claims",  "fixed_claims",
    "rate",        "incident_rate", "cnf",       "cnf_audiences"};
static const char *const k_caller_keys[] = {
    "id",           "keys",         "default_key",      "audiences",
    "max_aud",      "max_ttl",      "default_ttl",      "scope_claim",
    "scopes",       "subject",      "subject_required", "claims",
    "fixed_claims", "rate",         "incident_rate",    "frozen",
    "cnf",          "cnf_audiences"};
static const char *const k_rate_keys[] = {"per_second", "burst"};
static const char *const k_claim_keys[] = {"type", "max_bytes"};
static const char *const k_introspector_keys[] = {"id", "audiences"};

/* ---- freeing ----------------------------------------------------------------------- */

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    JS_FREE(l->v);
    l->n = 0;
}

static void rules_free(rules *r)
{
    strlist_free(&r->keys);
    JS_FREE(r->default_key);
    strlist_free(&r->audiences);
    strlist_free(&r->scopes);
    JS_FREE(r->subject);
    if (r->subject_compiled)
        regfree(&r->subject_re);
    r->subject_compiled = false;
    for (size_t i = 0; i < r->nclaims; i++)
        free(r->claims[i].name);
    JS_FREE(r->claims);
    r->nclaims = 0;
    json_decref(r->fixed);
    r->fixed = NULL;
    strlist_free(&r->cnf_audiences);
}

void js_policy_free(js_policy *p)
{
    if (p == NULL)
        return;
    free(p->issuer);
    strlist_free(&p->admins);
    for (size_t i = 0; i < p->nintrospectors; i++) {
        free(p->introspectors[i].id);
        strlist_free(&p->introspectors[i].audiences);
        free(p->introspectors[i].auds);
    }
    free(p->introspectors);
    rules_free(&p->defaults);
    for (size_t i = 0; i < p->ncallers; i++) {
        free(p->callers[i].id);
        rules_free(&p->callers[i].own);
    }
    free(p->callers);
    free(p->exact);
    free(p->patterns);
    free(p->all_keys);
    free(p);
}

/* ---- the loader -------------------------------------------------------------------- */

typedef struct loader {
    const js_yaml_doc *doc;
    js_err *err;
} loader;

/* "FILE:LINE: path: problem" (yamldoc.h), with this loader's document. */
#define fail(ld, line, path, code, ...)                                                            \
    js_yaml_fail((ld)->doc, (line), (path), (code), (ld)->err, __VA_ARGS__)

typedef enum str_kind {
    SK_KEY_NAME,  /* [A-Za-z0-9._-] */
    SK_AUDIENCE,  /* any bytes but control characters */
    SK_SCOPE,     /* RFC 6749 §3.3 scope-token */
    SK_CLAIM_NAME /* any bytes but control characters */
} str_kind;

static bool str_ok(str_kind kind, const char *s, size_t *max_out)
{
    static const size_t maxes[] = {JS_KEY_NAME_MAX, POLICY_AUDIENCE_MAX, POLICY_SCOPE_MAX,
                                   POLICY_CLAIM_NAME_MAX};
    size_t max = maxes[kind];
    *max_out = max;
    /* Key names are one kind across the tree (names.h): the same rule as the
     * configuration's keys[].name and a request's key. */
    if (kind == SK_KEY_NAME)
        return js_key_name_ok(s);
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok;
        switch (kind) {
        case SK_SCOPE:
            ok = c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
            break;
        case SK_AUDIENCE:
        case SK_CLAIM_NAME:
        default:
            ok = c >= 0x20 && c != 0x7f;
            break;
        }
        if (!ok)
            return false;
    }
    return true;
}

static const char *str_kind_rule(str_kind kind)
{
    switch (kind) {
    case SK_KEY_NAME:
        return "[A-Za-z0-9._-]";
    case SK_SCOPE:
        return "RFC 6749 scope-token characters, no spaces or quotes";
    case SK_AUDIENCE:
    case SK_CLAIM_NAME:
    default:
        return "no control characters";
    }
}

/* A string scalar checked against kind; *out borrowed from the doc. */
static js_status get_str(const loader *ld, const js_yaml_node *n, const char *path, str_kind kind,
                         const char *what, const char **out)
{
    char shown[64];
    size_t max;
    JS_GUARD(js_yaml_expect_string(ld->doc, n, path, out, ld->err));
    if (!str_ok(kind, *out, &max))
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_VALUE,
                    "'%s' is not a valid %s (1..%zu bytes, %s)",
                    js_yaml_printable(shown, sizeof(shown), *out), what, max, str_kind_rule(kind));
    return JS_OK;
}

/* A sequence of distinct strings of one kind, at most max_n of them. */
static js_status get_strlist(const loader *ld, const js_yaml_node *n, const char *path,
                             str_kind kind, const char *what, size_t max_n, strlist *out)
{
    char sub[JS_YAML_PATH_MAX], shown[64];
    JS_GUARD(js_yaml_expect_type(ld->doc, n, path, JS_YAML_SEQUENCE, ld->err));
    size_t cnt = js_yaml_seq_len(n);
    if (cnt > max_n)
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_COUNT,
                    "at most %zu entries, found %zu", max_n, cnt);
    if (cnt == 0)
        return JS_OK;
    out->v = calloc(cnt, sizeof(*out->v));
    JS_ENSURE_ALLOC(out->v, ld->err);
    for (size_t i = 0; i < cnt; i++) {
        const js_yaml_node *item = js_yaml_seq_item(n, i);
        const char *s;
        js_yaml_path_index(sub, sizeof(sub), path, i);
        JS_GUARD(get_str(ld, item, sub, kind, what, &s));
        for (size_t j = 0; j < i; j++)
            if (strcmp(out->v[j], s) == 0)
                return fail(ld, js_yaml_node_line(item), sub, JS_R_POLICY_DUPLICATE,
                            "duplicate entry '%s' (also %s[%zu])",
                            js_yaml_printable(shown, sizeof(shown), s), path, j);
        out->v[i] = strdup(s);
        JS_ENSURE_ALLOC(out->v[i], ld->err);
        out->n = i + 1;
    }
    return JS_OK;
}

/*
 * An identity of the policy (callers[].id, admins[i]) in the typed text of
 * identity.h: a full URI (URI SAN), dns:NAME (DNS SAN) or cn:NAME (subject
 * CN). A bare name from before identities were typed (`login.example`) could
 * be read as a DNS SAN, a CN, or a CN that merely looks like a URI, so it is
 * refused, with how to write it now. With allow_pattern, a URI may end
 * in "/" "*" (a prefix pattern; *pattern set); dns: and cn: entries are exact
 * names, so a '*' in them is refused rather than silently matched literally.
 */
static js_status get_identity(const loader *ld, const js_yaml_node *n, const char *path,
                              bool allow_pattern, const char **out, js_identity_type *type,
                              bool *pattern)
{
    char shown[64];
    js_err why;
    const char *id;
    JS_GUARD(js_yaml_expect_string(ld->doc, n, path, &id, ld->err));
    size_t line = js_yaml_node_line(n), len = strlen(id);
    js_err_clear(&why);
    if (identity_parse(id, type, &why) != JS_OK)
        return fail(ld, line, path,
                    why.reason == JS_R_IDENTITY_AMBIGUOUS ? JS_R_POLICY_IDENTITY_UNTYPED
                                                          : JS_R_POLICY_IDENTITY,
                    "%s", why.msg);
    *pattern = false;
    *out = id;
    const char *star = strchr(id, '*');
    if (star == NULL)
        return JS_OK;
    js_yaml_printable(shown, sizeof(shown), id);
    if (*type != JS_ID_URI)
        return fail(ld, line, path, JS_R_POLICY_PATTERN,
                    "'%s': '*' patterns are allowed for URI identities only; %s: entries are "
                    "exact names",
                    shown, identity_type_name(*type));
    if (!allow_pattern)
        return fail(ld, line, path, JS_R_POLICY_PATTERN,
                    "'%s': %s must be an exact identity; patterns are not allowed", shown, path);
    if (star != id + len - 1 || len < 3 || id[len - 2] != '/')
        return fail(ld, line, path, JS_R_POLICY_PATTERN,
                    "'%s': '*' is only allowed as a trailing \"/*\" prefix pattern", shown);
    *pattern = true;
    return JS_OK;
}

/* per_second: a positive decimal ("100", "0.5"); no sign, exponent or hex. */
static js_status get_per_second(const loader *ld, const js_yaml_node *n, const char *path,
                                double *out)
{
    const char *s = js_yaml_scalar_str(n);
    bool ok = s != NULL && js_yaml_scalar_is_plain(n);
    size_t i = 0, digits = 0, frac = 0;
    if (ok) {
        while (s[i] >= '0' && s[i] <= '9')
            i++, digits++;
        if (s[i] == '.') {
            i++;
            while (s[i] >= '0' && s[i] <= '9')
                i++, frac++;
            ok = frac > 0;
        }
        ok = ok && digits > 0 && s[i] == '\0' && digits <= 7;
    }
    if (!ok)
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_NUMBER,
                    "must be a positive decimal number such as 100 or 0.5");
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno != 0 || end != s + i || !(v > 0.0) || v > POLICY_RATE_MAX)
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_RANGE,
                    "must be > 0 and at most %.0f", POLICY_RATE_MAX);
    *out = v;
    return JS_OK;
}

static js_status get_rate(const loader *ld, const js_yaml_node *n, const char *path, js_rate *out)
{
    const js_yaml_node *ps, *b;
    char sub[JS_YAML_PATH_MAX];
    int64_t burst;
    JS_GUARD(js_yaml_check_keys(ld->doc, n, path, k_rate_keys, COUNT(k_rate_keys), ld->err));
    JS_GUARD(js_yaml_lookup(ld->doc, n, path, "per_second", true, &ps, ld->err));
    JS_GUARD(get_per_second(ld, ps, js_yaml_path_key(sub, sizeof(sub), path, "per_second"),
                            &out->per_second));
    JS_GUARD(js_yaml_lookup(ld->doc, n, path, "burst", true, &b, ld->err));
    JS_GUARD(js_yaml_expect_int(ld->doc, b, js_yaml_path_key(sub, sizeof(sub), path, "burst"), 1,
                                POLICY_BURST_MAX, &burst, ld->err));
    out->burst = (double)burst;
    return JS_OK;
}

/* The subject regex: anchored at both ends, POSIX ERE, compiled now. */
static js_status get_subject(const loader *ld, const js_yaml_node *n, const char *path, rules *r)
{
    const char *s;
    JS_GUARD(js_yaml_expect_string(ld->doc, n, path, &s, ld->err));
    size_t len = strlen(s);
    size_t line = js_yaml_node_line(n);
    if (len < 2 || len > POLICY_REGEX_MAX)
        return fail(ld, line, path, JS_R_POLICY_REGEX, "must be an anchored regex of 2..%d bytes",
                    POLICY_REGEX_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail(ld, line, path, JS_R_POLICY_REGEX, "must not contain control characters");
    /* A '$' escaped by an odd run of backslashes is a literal, not an anchor. */
    size_t bs = 0;
    for (size_t i = len - 1; i > 0 && s[i - 1] == '\\'; i--)
        bs++;
    if (s[0] != '^' || s[len - 1] != '$' || bs % 2 == 1)
        return fail(ld, line, path, JS_R_POLICY_REGEX_ANCHOR,
                    "must be anchored: start with '^' and end with '$' so it matches the whole "
                    "sub");
    char why[128];
    if (!policy_regex_cost_ok(s, why, sizeof(why)))
        return fail(ld, line, path, JS_R_POLICY_REGEX, "%s", why);
    r->subject = strdup(s);
    JS_ENSURE_ALLOC(r->subject, ld->err);
    int rc = regcomp(&r->subject_re, s, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        regerror(rc, &r->subject_re, why, sizeof(why));
        return fail(ld, line, path, JS_R_POLICY_REGEX, "invalid regular expression: %s", why);
    }
    r->subject_compiled = true;
    return JS_OK;
}

static js_status get_claims(const loader *ld, const js_yaml_node *n, const char *path, rules *r)
{
    char sub[JS_YAML_PATH_MAX], sub2[JS_YAML_PATH_MAX], shown[64];
    JS_GUARD(js_yaml_expect_type(ld->doc, n, path, JS_YAML_MAPPING, ld->err));
    size_t cnt = js_yaml_map_len(n);
    if (cnt > POLICY_MAX_CLAIMS)
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_COUNT,
                    "at most %d claims, found %zu", POLICY_MAX_CLAIMS, cnt);
    if (cnt == 0)
        return JS_OK;
    r->claims = calloc(cnt, sizeof(*r->claims));
    JS_ENSURE_ALLOC(r->claims, ld->err);
    for (size_t i = 0; i < cnt; i++) {
        const char *name = js_yaml_map_key_str(n, i);
        size_t line = js_yaml_map_key_line(n, i);
        size_t max;
        js_yaml_path_key(sub, sizeof(sub), path, name);
        if (!str_ok(SK_CLAIM_NAME, name, &max))
            return fail(ld, line, path, JS_R_POLICY_CLAIM_NAME,
                        "'%s' is not a valid claim name (1..%zu bytes)",
                        js_yaml_printable(shown, sizeof(shown), name), max);
        if (policy_in_array(policy_server_claims, COUNT(policy_server_claims), name))
            return fail(ld, line, sub, JS_R_POLICY_SERVER_CLAIM,
                        "'%s' is set by the signer (RFC 7519 §4.1) and can never be allowed", name);
        if (policy_in_array(policy_ruled_claims, COUNT(policy_ruled_claims), name))
            return fail(ld, line, sub, JS_R_POLICY_RULED_CLAIM,
                        "'%s' is governed by its own rule (audiences, subject, max_ttl, "
                        "scope_claim/scopes, cnf); it cannot be listed in claims",
                        name);
        claim_rule *cr = &r->claims[i];
        cr->name = strdup(name);
        JS_ENSURE_ALLOC(cr->name, ld->err);
        r->nclaims = i + 1;
        const js_yaml_node *v = js_yaml_map_value(n, i);
        JS_GUARD(js_yaml_check_keys(ld->doc, v, sub, k_claim_keys, COUNT(k_claim_keys), ld->err));
        const js_yaml_node *t, *mb;
        JS_GUARD(js_yaml_lookup(ld->doc, v, sub, "type", false, &t, ld->err));
        if (t != NULL) {
            const char *ts;
            js_yaml_path_key(sub2, sizeof(sub2), sub, "type");
            JS_GUARD(js_yaml_expect_string(ld->doc, t, sub2, &ts, ld->err));
            cr->type = CT_ANY;
            for (size_t k = CT_STRING; k < COUNT(policy_claim_type_names); k++)
                if (strcmp(ts, policy_claim_type_names[k]) == 0)
                    cr->type = (claim_type)k;
            if (cr->type == CT_ANY)
                return fail(ld, js_yaml_node_line(t), sub2, JS_R_POLICY_CLAIM_TYPE,
                            "unknown type '%s' (allowed: string, number, boolean, array, object)",
                            js_yaml_printable(shown, sizeof(shown), ts));
        }
        JS_GUARD(js_yaml_lookup(ld->doc, v, sub, "max_bytes", false, &mb, ld->err));
        if (mb != NULL) {
            int64_t m;
            JS_GUARD(js_yaml_expect_int(ld->doc, mb,
                                        js_yaml_path_key(sub2, sizeof(sub2), sub, "max_bytes"), 1,
                                        CLAIMS_MAX_BYTES, &m, ld->err));
            cr->max_bytes = (size_t)m;
        }
    }
    return JS_OK;
}

/* A YAML value as JSON for fixed_claims: quoted scalars are strings; plain
 * scalars true/false are booleans and JSON numbers are numbers (quote them
 * to keep a string); null is refused (a fixed null claim is a typo). */
static js_status yaml_to_json(const loader *ld, const js_yaml_node *n, const char *path,
                              json_t **out)
{
    char sub[JS_YAML_PATH_MAX];
    *out = NULL;
    switch (js_yaml_node_type(n)) {
    case JS_YAML_SCALAR: {
        const char *s = js_yaml_scalar_str(n);
        size_t len = js_yaml_scalar_len(n);
        if (!js_yaml_scalar_is_plain(n)) {
            *out = json_stringn(s, len);
            if (*out == NULL)
                return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_FIXED_CLAIM,
                            "not a valid UTF-8 string");
            return JS_OK;
        }
        if (js_yaml_scalar_is_null(n))
            return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_FIXED_CLAIM,
                        "null is not a useful fixed claim; quote it for the string \"null\"");
        if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
            *out = json_boolean(s[0] == 't');
        } else if ((s[0] >= '0' && s[0] <= '9') || s[0] == '-') {
            json_error_t jerr;
            *out = json_loadb(s, len, JSON_DECODE_ANY, &jerr);
            if (*out == NULL || !json_is_number(*out)) {
                json_decref(*out);
                *out = NULL;
                return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_FIXED_CLAIM,
                            "not a valid JSON number (an int64 or a decimal); quote it for a "
                            "string");
            }
            return JS_OK;
        } else {
            *out = json_stringn(s, len);
        }
        break;
    }
    case JS_YAML_SEQUENCE:
        *out = json_array();
        JS_ENSURE_ALLOC(*out, ld->err);
        for (size_t i = 0; i < js_yaml_seq_len(n); i++) {
            json_t *item;
            js_status st = yaml_to_json(ld, js_yaml_seq_item(n, i),
                                        js_yaml_path_index(sub, sizeof(sub), path, i), &item);
            if (st == JS_OK && json_array_append_new(*out, item) != 0)
                st = js_err_oom(ld->err);
            if (st != JS_OK) {
                json_decref(*out);
                *out = NULL;
                return st;
            }
        }
        return JS_OK;
    case JS_YAML_MAPPING:
        *out = json_object();
        JS_ENSURE_ALLOC(*out, ld->err);
        for (size_t i = 0; i < js_yaml_map_len(n); i++) {
            json_t *item;
            const char *k = js_yaml_map_key_str(n, i);
            js_status st = yaml_to_json(ld, js_yaml_map_value(n, i),
                                        js_yaml_path_key(sub, sizeof(sub), path, k), &item);
            if (st == JS_OK && json_object_set_new(*out, k, item) != 0)
                st = js_err_oom(ld->err);
            if (st != JS_OK) {
                json_decref(*out);
                *out = NULL;
                return st;
            }
        }
        return JS_OK;
    case JS_YAML_NONE:
    default:
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_FIXED_CLAIM,
                    "unsupported YAML node");
    }
    JS_ENSURE_ALLOC(*out, ld->err);
    return JS_OK;
}

static js_status get_fixed(const loader *ld, const js_yaml_node *n, const char *path, rules *r)
{
    char sub[JS_YAML_PATH_MAX], shown[64];
    JS_GUARD(js_yaml_expect_type(ld->doc, n, path, JS_YAML_MAPPING, ld->err));
    size_t cnt = js_yaml_map_len(n);
    if (cnt > POLICY_MAX_FIXED)
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_COUNT,
                    "at most %d fixed claims, found %zu", POLICY_MAX_FIXED, cnt);
    r->fixed = json_object();
    JS_ENSURE_ALLOC(r->fixed, ld->err);
    for (size_t i = 0; i < cnt; i++) {
        const char *name = js_yaml_map_key_str(n, i);
        size_t line = js_yaml_map_key_line(n, i), max;
        js_yaml_path_key(sub, sizeof(sub), path, name);
        if (!str_ok(SK_CLAIM_NAME, name, &max))
            return fail(ld, line, path, JS_R_POLICY_CLAIM_NAME,
                        "'%s' is not a valid claim name (1..%zu bytes)",
                        js_yaml_printable(shown, sizeof(shown), name), max);
        if (policy_registered_claim(name))
            return fail(ld, line, sub, JS_R_POLICY_REGISTERED_CLAIM,
                        "'%s' is a registered claim with its own rule; it cannot be fixed", name);
        json_t *v;
        JS_GUARD(yaml_to_json(ld, js_yaml_map_value(n, i), sub, &v));
        if (json_object_set_new(r->fixed, name, v) != 0)
            return js_err_oom(ld->err);
    }
    size_t bytes = json_dumpb(r->fixed, NULL, 0, JSON_COMPACT);
    if (bytes > CLAIMS_MAX_BYTES / 2)
        return fail(ld, js_yaml_node_line(n), path, JS_R_POLICY_SIZE,
                    "fixed claims encode to %zu bytes; the limit is %d", bytes,
                    CLAIMS_MAX_BYTES / 2);
    return JS_OK;
}

/*
 * Reads the fields of a defaults or caller mapping into r. The mapping's keys
 * were already checked against the section's allowed list.
 */
static js_status get_rules(const loader *ld, const js_yaml_node *map, const char *path, rules *r)
{
    char sub[JS_YAML_PATH_MAX];
    for (size_t f = 0; f < F_COUNT; f++) {
        size_t idx;
        if (!js_yaml_map_find(map, policy_field_names[f], &idx))
            continue;
        const js_yaml_node *v = js_yaml_map_value(map, idx);
        const char *fp = js_yaml_path_key(sub, sizeof(sub), path, policy_field_names[f]);
        const char *s;
        r->set |= 1u << f;
        r->line[f] = js_yaml_node_line(v);
        switch ((field)f) {
        case F_KEYS:
            /* A caller that sets keys without default_key gets keys[0]; see from_default_key. */
            strlist_free(&r->keys);
            JS_GUARD(get_strlist(ld, v, fp, SK_KEY_NAME, "key name", POLICY_MAX_KEYS, &r->keys));
            break;
        case F_DEFAULT_KEY:
            JS_GUARD(get_str(ld, v, fp, SK_KEY_NAME, "key name", &s));
            r->default_key = strdup(s);
            JS_ENSURE_ALLOC(r->default_key, ld->err);
            break;
        case F_AUDIENCES:
            JS_GUARD(get_strlist(ld, v, fp, SK_AUDIENCE, "audience", POLICY_MAX_AUDIENCES,
                                 &r->audiences));
            break;
        case F_MAX_AUD:
            JS_GUARD(
                js_yaml_expect_int(ld->doc, v, fp, 1, POLICY_MAX_AUD_LIMIT, &r->max_aud, ld->err));
            break;
        case F_MAX_TTL:
            JS_GUARD(js_yaml_expect_duration(ld->doc, v, fp, &r->max_ttl, ld->err));
            break;
        case F_DEFAULT_TTL:
            JS_GUARD(js_yaml_expect_duration(ld->doc, v, fp, &r->default_ttl, ld->err));
            break;
        case F_SCOPE_CLAIM:
            JS_GUARD(js_yaml_expect_string(ld->doc, v, fp, &s, ld->err));
            if (strcmp(s, "scope") == 0)
                r->scope_claim = SCOPE_STRING;
            else if (strcmp(s, "scp") == 0)
                r->scope_claim = SCOPE_ARRAY;
            else
                return fail(ld, r->line[f], fp, JS_R_POLICY_SCOPE_CLAIM,
                            "must be \"scope\" (space-separated string, RFC 8693/9068) or "
                            "\"scp\" (array of strings)");
            break;
        case F_SCOPES:
            JS_GUARD(get_strlist(ld, v, fp, SK_SCOPE, "scope", POLICY_MAX_SCOPES, &r->scopes));
            break;
        case F_SUBJECT:
            JS_GUARD(get_subject(ld, v, fp, r));
            break;
        case F_SUBJECT_REQUIRED:
            JS_GUARD(js_yaml_expect_bool(ld->doc, v, fp, &r->subject_required, ld->err));
            break;
        case F_CLAIMS:
            JS_GUARD(get_claims(ld, v, fp, r));
            break;
        case F_FIXED_CLAIMS:
            JS_GUARD(get_fixed(ld, v, fp, r));
            break;
        case F_RATE:
            JS_GUARD(get_rate(ld, v, fp, &r->rate));
            break;
        case F_INCIDENT_RATE:
            JS_GUARD(get_rate(ld, v, fp, &r->incident_rate));
            break;
        case F_FROZEN:
            JS_GUARD(js_yaml_expect_bool(ld->doc, v, fp, &r->frozen, ld->err));
            break;
        case F_CNF:
            JS_GUARD(js_yaml_expect_string(ld->doc, v, fp, &s, ld->err));
            if (strcmp(s, "required") == 0)
                r->cnf_required = true;
            else if (strcmp(s, "optional") == 0)
                r->cnf_required = false;
            else
                return fail(ld, r->line[f], fp, JS_R_POLICY_CNF,
                            "must be \"required\" (every token carries a cnf claim, RFC 7800) or "
                            "\"optional\"");
            break;
        case F_CNF_AUDIENCES:
            strlist_free(&r->cnf_audiences);
            JS_GUARD(get_strlist(ld, v, fp, SK_AUDIENCE, "audience", POLICY_MAX_AUDIENCES,
                                 &r->cnf_audiences));
            break;
        case F_COUNT:
        default:
            break;
        }
    }
    return JS_OK;
}

/* Where field f of caller c comes from, for messages: "callers[2].max_ttl" or
 * "defaults.max_ttl" or "built-in max_ttl". */
static const char *src_path(char *buf, size_t cap, const js_policy_caller *c, field f)
{
    if (policy_has(&c->own, f))
        snprintf(buf, cap, "callers[%zu].%s", c->index, policy_field_names[f]);
    else if (policy_has(c->defaults, f))
        snprintf(buf, cap, "defaults.%s", policy_field_names[f]);
    else
        snprintf(buf, cap, "built-in %s", policy_field_names[f]);
    return buf;
}

static size_t src_line(const js_policy_caller *c, field f)
{
    const rules *r = policy_from(c, f);
    return policy_has(r, f) ? r->line[f] : 0;
}

/* a is no looser than b: a limited rate with per_second and burst at most b's. */
static bool rate_tighter(js_rate a, js_rate b)
{
    if (!policy_rate_limited(b))
        return true;
    return policy_rate_limited(a) && a.per_second <= b.per_second && a.burst <= b.burst;
}

/*
 * A unix: caller is kube-apiserver on the ExternalJWTSigner socket: its
 * claim sets arrive pre-built and are signed as they are (validate mode,
 * js_policy_validate), so what the policy would add or promise beyond them
 * is refused here, on the effective values (an inherited default counts).
 */
static js_status check_kube_caller(const loader *ld, const js_policy_caller *c, const char *id)
{
    char pa[JS_YAML_PATH_MAX];
    const json_t *fixed = policy_from(c, F_FIXED_CLAIMS)->fixed;
    if (json_object_size(fixed) > 0)
        return fail(ld, src_line(c, F_FIXED_CLAIMS), src_path(pa, sizeof(pa), c, F_FIXED_CLAIMS),
                    JS_R_POLICY_FIXED_CLAIM,
                    "caller '%s' is a Kubernetes caller (ExternalJWTSigner): the signer cannot add "
                    "claims to a token kube-apiserver built, so it may have no fixed claims%s",
                    id,
                    policy_has(&c->own, F_FIXED_CLAIMS)
                        ? ""
                        : "; set `fixed_claims: {}` in its entry to override the defaults");
    int64_t mttl = policy_from(c, F_MAX_TTL)->max_ttl;
    if (mttl < JS_POLICY_KUBE_MIN_MAX_TTL)
        return fail(ld, src_line(c, F_MAX_TTL), src_path(pa, sizeof(pa), c, F_MAX_TTL),
                    JS_R_POLICY_TTL,
                    "caller '%s' is a Kubernetes caller (ExternalJWTSigner): max_ttl is %" PRId64
                    "s; it must be at least %ds, the least MetadataResponse "
                    "max_token_expiration_seconds kube-apiserver accepts",
                    id, mttl, JS_POLICY_KUBE_MIN_MAX_TTL);
    /* A pre-built token carries no cnf (js_policy_validate refuses one), so a
     * rule requiring it would deny every request. An entry may still say
     * `cnf: optional` or `cnf_audiences: []` to override the defaults. */
    field cf = policy_from(c, F_CNF)->cnf_required                    ? F_CNF
               : policy_from(c, F_CNF_AUDIENCES)->cnf_audiences.n > 0 ? F_CNF_AUDIENCES
                                                                      : F_COUNT;
    if (cf != F_COUNT)
        return fail(ld, src_line(c, cf), src_path(pa, sizeof(pa), c, cf), JS_R_POLICY_CNF,
                    "caller '%s' is a Kubernetes caller (ExternalJWTSigner): kube-apiserver's "
                    "tokens carry no cnf claim, so it cannot be required%s",
                    id,
                    policy_has(&c->own, cf) ? ""
                    : cf == F_CNF ? "; set `cnf: optional` in its entry to override the defaults"
                                  : "; set `cnf_audiences: []` in its entry to override the "
                                    "defaults");
    return JS_OK;
}

/*
 * Checks the relations between a caller's effective fields and fixes its
 * effective default key and incident rate. Messages name the caller and the
 * section each value comes from; the line is that of the offending field.
 */
static js_status check_caller(const loader *ld, js_policy_caller *c)
{
    char pa[JS_YAML_PATH_MAX], pb[JS_YAML_PATH_MAX], shown[64], idbuf[64];
    const char *id = js_yaml_printable(idbuf, sizeof(idbuf), c->id);

    const strlist *keys = &policy_from(c, F_KEYS)->keys;
    if (keys->n == 0)
        return fail(ld, policy_has(policy_from(c, F_KEYS), F_KEYS) ? src_line(c, F_KEYS) : c->line,
                    src_path(pa, sizeof(pa), c, F_KEYS), JS_R_POLICY_NO_KEYS,
                    "caller '%s' has no keys; set keys here or in defaults", id);
    /* default_key: the caller's own; else the inherited one if keys are inherited
     * too; else keys[0] (a default chosen for another key list would surprise). */
    const char *dk = NULL;
    field dkf = F_DEFAULT_KEY;
    if (policy_has(&c->own, F_DEFAULT_KEY) || !policy_has(&c->own, F_KEYS))
        dk = policy_from(c, F_DEFAULT_KEY)->default_key;
    if (dk == NULL) {
        c->default_key = keys->v[0];
    } else {
        if (!policy_in_list(keys, dk))
            return fail(ld, src_line(c, dkf), src_path(pa, sizeof(pa), c, dkf),
                        JS_R_POLICY_DEFAULT_KEY,
                        "caller '%s': default key '%s' is not in its keys (%s)", id, dk,
                        src_path(pb, sizeof(pb), c, F_KEYS));
        for (size_t i = 0; i < keys->n; i++)
            if (strcmp(keys->v[i], dk) == 0)
                c->default_key = keys->v[i];
    }

    if (policy_from(c, F_AUDIENCES)->audiences.n == 0)
        return fail(ld,
                    policy_has(policy_from(c, F_AUDIENCES), F_AUDIENCES) ? src_line(c, F_AUDIENCES)
                                                                         : c->line,
                    src_path(pa, sizeof(pa), c, F_AUDIENCES), JS_R_POLICY_NO_AUDIENCES,
                    "caller '%s' has no audiences, so every request would be denied (aud is "
                    "required); set audiences",
                    id);

    int64_t dttl = policy_from(c, F_DEFAULT_TTL)->default_ttl,
            mttl = policy_from(c, F_MAX_TTL)->max_ttl;
    if (dttl > mttl) {
        field f = policy_has(&c->own, F_DEFAULT_TTL) || !policy_has(&c->own, F_MAX_TTL)
                      ? F_DEFAULT_TTL
                      : F_MAX_TTL;
        return fail(ld, src_line(c, f), src_path(pa, sizeof(pa), c, f), JS_R_POLICY_TTL,
                    "caller '%s': default_ttl (%" PRId64 "s, %s) is longer than max_ttl (%" PRId64
                    "s, %s)",
                    id, dttl, src_path(pb, sizeof(pb), c, F_DEFAULT_TTL), mttl,
                    src_path(pa, sizeof(pa), c, F_MAX_TTL));
    }

    js_rate rate = policy_from(c, F_RATE)->rate;
    const rules *ir = policy_from(c, F_INCIDENT_RATE);
    if (!policy_has(ir, F_INCIDENT_RATE)) {
        c->incident_rate = rate; /* none anywhere: incident mode keeps the normal rate */
    } else if (policy_has(&c->own, F_INCIDENT_RATE) || rate_tighter(ir->incident_rate, rate)) {
        c->incident_rate = ir->incident_rate;
        if (!rate_tighter(c->incident_rate, rate))
            return fail(ld, src_line(c, F_INCIDENT_RATE),
                        src_path(pa, sizeof(pa), c, F_INCIDENT_RATE), JS_R_POLICY_INCIDENT_RATE,
                        "caller '%s': incident_rate (%g/s, burst %g) is looser than rate "
                        "(%g/s, burst %g); incident mode must tighten",
                        id, c->incident_rate.per_second, c->incident_rate.burst, rate.per_second,
                        rate.burst);
    } else {
        /* An inherited incident rate looser than this caller's own rate is
         * clamped to it, field by field: incident mode never loosens. */
        js_rate inh = ir->incident_rate;
        c->incident_rate.per_second =
            inh.per_second < rate.per_second ? inh.per_second : rate.per_second;
        c->incident_rate.burst = inh.burst < rate.burst ? inh.burst : rate.burst;
    }

    const rules *cr = policy_from(c, F_CLAIMS), *fr = policy_from(c, F_FIXED_CLAIMS);
    for (size_t i = 0; i < cr->nclaims; i++)
        if (fr->fixed != NULL && json_object_get(fr->fixed, cr->claims[i].name) != NULL)
            return fail(ld, src_line(c, F_CLAIMS), src_path(pa, sizeof(pa), c, F_CLAIMS),
                        JS_R_POLICY_CLAIM_FIXED,
                        "caller '%s': claim '%s' is both allowed (claims) and fixed (%s); a "
                        "fixed claim cannot be set by the caller",
                        id, js_yaml_printable(shown, sizeof(shown), cr->claims[i].name),
                        src_path(pb, sizeof(pb), c, F_FIXED_CLAIMS));
    if (c->type == JS_ID_UNIX)
        return check_kube_caller(ld, c, id);

    /* cnf_audiences name audiences the caller may send; any other entry is
     * a typo that would leave that audience's tokens unbound. */
    const strlist *ca = &policy_from(c, F_CNF_AUDIENCES)->cnf_audiences;
    const strlist *aud = &policy_from(c, F_AUDIENCES)->audiences;
    for (size_t i = 0; i < ca->n; i++)
        if (!policy_in_list(aud, ca->v[i]))
            return fail(ld, src_line(c, F_CNF_AUDIENCES),
                        src_path(pa, sizeof(pa), c, F_CNF_AUDIENCES), JS_R_POLICY_CNF,
                        "caller '%s': cnf audience '%s' is not in its audiences (%s)", id,
                        js_yaml_printable(shown, sizeof(shown), ca->v[i]),
                        src_path(pb, sizeof(pb), c, F_AUDIENCES));
    return JS_OK;
}

/* The defaults section's own pairs, so a broken default is reported even
 * when every caller happens to override one side. */
static js_status check_defaults(const loader *ld, const rules *d)
{
    if (policy_has(d, F_DEFAULT_KEY) && !policy_in_list(&d->keys, d->default_key))
        return fail(ld, d->line[F_DEFAULT_KEY], "defaults.default_key", JS_R_POLICY_DEFAULT_KEY,
                    "default key '%s' is not in defaults.keys", d->default_key);
    if (d->default_ttl > d->max_ttl) {
        field f = policy_has(d, F_DEFAULT_TTL) ? F_DEFAULT_TTL : F_MAX_TTL;
        return fail(
            ld, d->line[f], f == F_DEFAULT_TTL ? "defaults.default_ttl" : "defaults.max_ttl",
            JS_R_POLICY_TTL, "default_ttl (%" PRId64 "s) is longer than max_ttl (%" PRId64 "s)",
            d->default_ttl, d->max_ttl);
    }
    if (policy_has(d, F_INCIDENT_RATE) && policy_has(d, F_RATE) &&
        !rate_tighter(d->incident_rate, d->rate))
        return fail(
            ld, d->line[F_INCIDENT_RATE], "defaults.incident_rate", JS_R_POLICY_INCIDENT_RATE,
            "incident_rate (%g/s, burst %g) is looser than rate (%g/s, burst %g); "
            "incident mode must tighten",
            d->incident_rate.per_second, d->incident_rate.burst, d->rate.per_second, d->rate.burst);
    for (size_t i = 0; i < d->nclaims; i++)
        if (d->fixed != NULL && json_object_get(d->fixed, d->claims[i].name) != NULL)
            return fail(ld, d->line[F_CLAIMS], "defaults.claims", JS_R_POLICY_CLAIM_FIXED,
                        "claim '%s' is both allowed (claims) and fixed (fixed_claims)",
                        d->claims[i].name);
    char shown[64];
    for (size_t i = 0; policy_has(d, F_AUDIENCES) && i < d->cnf_audiences.n; i++)
        if (!policy_in_list(&d->audiences, d->cnf_audiences.v[i]))
            return fail(ld, d->line[F_CNF_AUDIENCES], "defaults.cnf_audiences", JS_R_POLICY_CNF,
                        "cnf audience '%s' is not in defaults.audiences",
                        js_yaml_printable(shown, sizeof(shown), d->cnf_audiences.v[i]));
    return JS_OK;
}

static void rules_builtin(rules *r)
{
    memset(r, 0, sizeof(*r));
    r->max_aud = BUILTIN_MAX_AUD;
    r->max_ttl = BUILTIN_MAX_TTL;
    r->default_ttl = BUILTIN_DEFAULT_TTL;
    r->scope_claim = SCOPE_STRING;
    r->subject_required = true;
}

static js_status load_caller(const loader *ld, js_policy *p, const js_yaml_node *item, size_t i)
{
    char path[JS_YAML_PATH_MAX], sub[JS_YAML_PATH_MAX], shown[64];
    js_policy_caller *c = &p->callers[i];
    c->index = i;
    c->line = js_yaml_node_line(item);
    c->defaults = &p->defaults;
    c->own.scope_claim = SCOPE_STRING;
    c->own.subject_required = true;
    js_yaml_path_index(path, sizeof(path), "callers", i);
    JS_GUARD(js_yaml_check_keys(ld->doc, item, path, k_caller_keys, COUNT(k_caller_keys), ld->err));
    const js_yaml_node *idn;
    const char *id;
    JS_GUARD(js_yaml_lookup(ld->doc, item, path, "id", true, &idn, ld->err));
    js_yaml_path_key(sub, sizeof(sub), path, "id");
    JS_GUARD(get_identity(ld, idn, sub, true, &id, &c->type, &c->pattern));
    if (c->pattern)
        c->prefix_len = strlen(id) - 1; /* the bytes before the '*' */
    for (size_t j = 0; j < i; j++)
        if (strcmp(p->callers[j].id, id) == 0)
            return fail(ld, js_yaml_node_line(idn), sub, JS_R_POLICY_DUPLICATE_CALLER,
                        "duplicate caller '%s' (also callers[%zu] on line %zu)",
                        js_yaml_printable(shown, sizeof(shown), id), j, p->callers[j].line);
    c->id = strdup(id);
    JS_ENSURE_ALLOC(c->id, ld->err);
    JS_GUARD(get_rules(ld, item, path, &c->own));
    return check_caller(ld, c);
}

/* admins: up to POLICY_MAX_ADMINS distinct exact typed identities. */
static js_status get_admins(const loader *ld, const js_yaml_node *n, strlist *out)
{
    char sub[JS_YAML_PATH_MAX], shown[64];
    JS_GUARD(js_yaml_expect_type(ld->doc, n, "admins", JS_YAML_SEQUENCE, ld->err));
    size_t cnt = js_yaml_seq_len(n);
    if (cnt > POLICY_MAX_ADMINS)
        return fail(ld, js_yaml_node_line(n), "admins", JS_R_POLICY_COUNT,
                    "at most %d entries, found %zu", POLICY_MAX_ADMINS, cnt);
    if (cnt == 0)
        return JS_OK;
    out->v = calloc(cnt, sizeof(*out->v));
    JS_ENSURE_ALLOC(out->v, ld->err);
    for (size_t i = 0; i < cnt; i++) {
        const js_yaml_node *item = js_yaml_seq_item(n, i);
        const char *s;
        js_identity_type t;
        bool pattern;
        js_yaml_path_index(sub, sizeof(sub), "admins", i);
        JS_GUARD(get_identity(ld, item, sub, false, &s, &t, &pattern));
        /* Admin calls arrive over mTLS only; a Unix socket peer never reaches them. */
        if (t == JS_ID_UNIX)
            return fail(ld, js_yaml_node_line(item), sub, JS_R_POLICY_IDENTITY,
                        "'%s': the Admin API is served over mTLS only, so a unix: identity can "
                        "never be an admin; name the admin's certificate identity",
                        js_yaml_printable(shown, sizeof(shown), s));
        for (size_t j = 0; j < i; j++)
            if (strcmp(out->v[j], s) == 0)
                return fail(ld, js_yaml_node_line(item), sub, JS_R_POLICY_DUPLICATE,
                            "duplicate entry '%s' (also admins[%zu])",
                            js_yaml_printable(shown, sizeof(shown), s), j);
        out->v[i] = strdup(s);
        JS_ENSURE_ALLOC(out->v[i], ld->err);
        out->n = i + 1;
    }
    return JS_OK;
}

/*
 * introspectors: up to POLICY_MAX_INTROSPECTORS entries {id, audiences}, each
 * id an exact typed identity (like admins: introspection is served over mTLS
 * only, so never unix:), no id twice; audiences (optional, at most
 * POLICY_MAX_AUDIENCES distinct) limit which tokens it may ask about.
 */
static js_status get_introspectors(const loader *ld, const js_yaml_node *n, js_policy *p)
{
    char path[JS_YAML_PATH_MAX], sub[JS_YAML_PATH_MAX], shown[64];
    JS_GUARD(js_yaml_expect_type(ld->doc, n, "introspectors", JS_YAML_SEQUENCE, ld->err));
    size_t cnt = js_yaml_seq_len(n);
    if (cnt > POLICY_MAX_INTROSPECTORS)
        return fail(ld, js_yaml_node_line(n), "introspectors", JS_R_POLICY_COUNT,
                    "at most %d entries, found %zu", POLICY_MAX_INTROSPECTORS, cnt);
    if (cnt == 0)
        return JS_OK;
    p->introspectors = calloc(cnt, sizeof(*p->introspectors));
    JS_ENSURE_ALLOC(p->introspectors, ld->err);
    for (size_t i = 0; i < cnt; i++) {
        const js_yaml_node *item = js_yaml_seq_item(n, i), *idn, *an;
        introspector *e = &p->introspectors[i];
        const char *id;
        js_identity_type t;
        bool pattern;
        p->nintrospectors = i + 1; /* so js_policy_free sees the partly filled entry */
        js_yaml_path_index(path, sizeof(path), "introspectors", i);
        JS_GUARD(js_yaml_expect_type(ld->doc, item, path, JS_YAML_MAPPING, ld->err));
        JS_GUARD(js_yaml_check_keys(ld->doc, item, path, k_introspector_keys,
                                    COUNT(k_introspector_keys), ld->err));
        JS_GUARD(js_yaml_lookup(ld->doc, item, path, "id", true, &idn, ld->err));
        js_yaml_path_key(sub, sizeof(sub), path, "id");
        JS_GUARD(get_identity(ld, idn, sub, false, &id, &t, &pattern));
        if (t == JS_ID_UNIX)
            return fail(ld, js_yaml_node_line(idn), sub, JS_R_POLICY_IDENTITY,
                        "'%s': introspection is served over mTLS only, so a unix: identity can "
                        "never be an introspector; name the verifier's certificate identity",
                        js_yaml_printable(shown, sizeof(shown), id));
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->introspectors[j].id, id) == 0)
                return fail(ld, js_yaml_node_line(idn), sub, JS_R_POLICY_DUPLICATE,
                            "duplicate introspector '%s' (also introspectors[%zu])",
                            js_yaml_printable(shown, sizeof(shown), id), j);
        e->id = strdup(id);
        JS_ENSURE_ALLOC(e->id, ld->err);
        JS_GUARD(js_yaml_lookup(ld->doc, item, path, "audiences", false, &an, ld->err));
        if (an == NULL)
            continue;
        js_yaml_path_key(sub, sizeof(sub), path, "audiences");
        JS_GUARD(
            get_strlist(ld, an, sub, SK_AUDIENCE, "audience", POLICY_MAX_AUDIENCES, &e->audiences));
        /* An empty list would read as "any token": say so instead of guessing. */
        if (e->audiences.n == 0)
            return fail(ld, js_yaml_node_line(an), sub, JS_R_POLICY_VALUE,
                        "an empty audiences list is ambiguous; omit audiences to allow any token");
        e->auds = calloc(e->audiences.n, sizeof(*e->auds));
        JS_ENSURE_ALLOC(e->auds, ld->err);
        for (size_t k = 0; k < e->audiences.n; k++)
            e->auds[k] = e->audiences.v[k];
    }
    return JS_OK;
}

static js_status load_top(const loader *ld, js_policy *p)
{
    const js_yaml_node *root = js_yaml_doc_root(ld->doc), *v;
    JS_GUARD(js_yaml_check_keys(ld->doc, root, "", k_top_keys, COUNT(k_top_keys), ld->err));

    int64_t version;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "version", true, &v, ld->err));
    JS_GUARD(js_yaml_expect_int(ld->doc, v, "version", 1, 1, &version, ld->err));

    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "issuer", false, &v, ld->err));
    if (v != NULL) {
        const char *s;
        JS_GUARD(js_yaml_expect_string(ld->doc, v, "issuer", &s, ld->err));
        size_t n = strlen(s);
        if (n == 0 || n > POLICY_ISSUER_MAX)
            return fail(ld, js_yaml_node_line(v), "issuer", JS_R_POLICY_ISSUER,
                        "must be 1..%d bytes", POLICY_ISSUER_MAX);
        /* Copied into every token's iss (RFC 7519 §4.1.1) and into logs. */
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return fail(ld, js_yaml_node_line(v), "issuer", JS_R_POLICY_ISSUER,
                            "must not contain control characters");
        p->issuer = strdup(s);
        JS_ENSURE_ALLOC(p->issuer, ld->err);
    }

    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "admins", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(get_admins(ld, v, &p->admins));

    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "introspectors", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(get_introspectors(ld, v, p));

    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "incident", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(js_yaml_expect_bool(ld->doc, v, "incident", &p->incident, ld->err));

    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "defaults", false, &v, ld->err));
    if (v != NULL) {
        JS_GUARD(js_yaml_check_keys(ld->doc, v, "defaults", k_defaults_keys, COUNT(k_defaults_keys),
                                    ld->err));
        JS_GUARD(get_rules(ld, v, "defaults", &p->defaults));
        JS_GUARD(check_defaults(ld, &p->defaults));
    }

    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "callers", true, &v, ld->err));
    JS_GUARD(js_yaml_expect_type(ld->doc, v, "callers", JS_YAML_SEQUENCE, ld->err));
    size_t n = js_yaml_seq_len(v);
    if (n == 0 || n > POLICY_MAX_CALLERS)
        return fail(ld, js_yaml_node_line(v), "callers", JS_R_POLICY_CALLERS_COUNT,
                    "between 1 and %d callers are required, found %zu", POLICY_MAX_CALLERS, n);
    p->callers = calloc(n, sizeof(*p->callers));
    JS_ENSURE_ALLOC(p->callers, ld->err);
    for (size_t i = 0; i < n; i++) {
        p->ncallers = i + 1; /* so js_policy_free sees the partly filled entry */
        JS_GUARD(load_caller(ld, p, js_yaml_seq_item(v, i), i));
    }
    return policy_index(p, ld->err);
}

static void sha256_hex(const void *data, size_t len, char hex[JS_POLICY_HASH_HEX + 1])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        hex[0] = '\0';
        return;
    }
    js_hex_encode(md, sizeof(md), hex);
}

js_status js_policy_load_buffer(const char *text, size_t len, const char *name, js_policy **out,
                                js_err *err)
{
    *out = NULL;
    JS_ENSURE(text != NULL || len == 0, err, JS_EINTERNAL, JS_R_POLICY_INTERNAL, "no policy text");
    js_yaml_opts opts = {.domain = "policy", .status = JS_ECONFIG};
    js_yaml_doc *doc = NULL;
    JS_GUARD(
        js_yaml_load_buffer(name ? name : "(policy)", text ? text : "", len, &opts, &doc, err));
    js_policy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        js_yaml_doc_free(doc);
        return js_err_oom(err);
    }
    rules_builtin(&p->defaults);
    loader ld = {doc, err};
    js_status st = load_top(&ld, p);
    js_yaml_doc_free(doc);
    if (st == JS_OK) {
        sha256_hex(text ? text : "", len, p->hash_hex);
        if (p->hash_hex[0] == '\0')
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_DIGEST, "SHA-256 failed");
    }
    if (st != JS_OK) {
        js_policy_free(p);
        return st;
    }
    *out = p;
    return JS_OK;
}

js_status js_policy_load(const char *path, js_policy **out, js_err *err)
{
    *out = NULL;
    JS_ENSURE(path != NULL, err, JS_ECONFIG, JS_R_POLICY_IO, "no policy file given");
    /* The one bounded reader (fileio.h). The operator names this file, so a
     * symlink is followed (a Kubernetes ConfigMap volume is all symlinks);
     * whatever fails is JS_ECONFIG policy.io, which start-up reports as a
     * configuration error and ReloadPolicy as FAILED_PRECONDITION, keeping the
     * policy in force. The hash is of exactly the bytes read. */
    char *text = NULL;
    size_t len = 0;
    js_file_info fi;
    switch (js_file_read(path, JS_YAML_MAX_BYTES, JS_FILE_FOLLOW, &text, &len, &fi)) {
    case JS_FILE_OK:
        break;
    case JS_FILE_OPEN:
        return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO, "%s: cannot open: %s", path,
                          strerror(fi.sys_errno));
    case JS_FILE_READ:
        return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO, "%s: read failed: %s", path,
                          strerror(fi.sys_errno));
    case JS_FILE_NOMEM:
        return js_err_oom(err);
    case JS_FILE_TOO_LARGE:
        /* Within the limit by fstat but not while reading: it grew. */
        if (fi.stat_ok && fi.size >= 0 && (unsigned long long)fi.size <= JS_YAML_MAX_BYTES)
            return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO, "%s: file changed while reading",
                              path);
        return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO,
                          "%s: not a regular file of at most %u bytes", path, JS_YAML_MAX_BYTES);
    case JS_FILE_NOT_REGULAR:
    default:
        return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO,
                          "%s: not a regular file of at most %u bytes", path, JS_YAML_MAX_BYTES);
    }
    js_status st = js_policy_load_buffer(text, len, path, out, err);
    free(text);
    return st;
}
