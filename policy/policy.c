/*
 * policy.c - loads, validates and evaluates the per-caller signing policy
 * (policy.h; the file format is documented in policy/examples/policy.yaml).
 *
 * Loading goes through yamldoc (bounded tree, unique keys, a line on every
 * node) and stops at the first problem with "FILE:LINE: path: problem",
 * JS_ECONFIG, reason "policy.*". The top-level `defaults` section is parsed
 * into a rules record pre-filled with built-in values; each caller entry is
 * parsed into its own rules record holding only the fields it sets. A field
 * a caller sets REPLACES the inherited value wholesale (lists are not
 * merged), so a caller's effective rules are "own field if set, else the
 * default". Consistency rules that relate two fields (default_ttl <= max_ttl,
 * default_key in keys, incident_rate no looser than rate, ...) are checked on
 * those effective values, with the line of whichever section supplied each.
 *
 * Evaluation is pure: no I/O, no locks, no mutation of the policy; the claim
 * set the caller sent is copied and never modified.
 */
#include "policy.h"
#include "escape.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "identity.h"
#include "text.h"
#include "yamldoc.h"

/* ---- limits (untrusted input is bounded: style rule 5) ---------------------------- */

#define POLICY_MAX_CALLERS    1024
#define POLICY_MAX_ADMINS     64
#define POLICY_MAX_KEYS       32
#define POLICY_KEY_NAME_MAX   64 /* same as the signer's JS_KEY_NAME_MAX */
#define POLICY_MAX_AUDIENCES  64
#define POLICY_AUDIENCE_MAX   1024
#define POLICY_MAX_AUD_LIMIT  100 /* the largest max_aud a file may set */
#define POLICY_MAX_SCOPES     256 /* ceiling entries, and scopes in one request */
#define POLICY_SCOPE_MAX      128
#define POLICY_MAX_CLAIMS     64
#define POLICY_CLAIM_NAME_MAX 128
#define POLICY_MAX_FIXED      64
#define POLICY_ISSUER_MAX     256
#define POLICY_REGEX_MAX      1024
#define POLICY_RATE_MAX       1000000.0
#define POLICY_BURST_MAX      1000000
/* Built-in values when neither defaults nor the caller set a field (the same
 * as the signer configuration's built-in lifetime). */
#define BUILTIN_DEFAULT_TTL (5 * 60)
#define BUILTIN_MAX_TTL     (60 * 60)
#define BUILTIN_MAX_AUD     5

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the data model ---------------------------------------------------------------- */

typedef enum field {
    F_KEYS,
    F_DEFAULT_KEY,
    F_AUDIENCES,
    F_MAX_AUD,
    F_MAX_TTL,
    F_DEFAULT_TTL,
    F_SCOPE_CLAIM,
    F_SCOPES,
    F_SUBJECT,
    F_SUBJECT_REQUIRED,
    F_CLAIMS,
    F_FIXED_CLAIMS,
    F_RATE,
    F_INCIDENT_RATE,
    F_FROZEN,
    F_COUNT
} field;

/* YAML key of each field, in enum order. */
static const char *const k_field_names[F_COUNT] = {
    "keys",        "default_key",  "audiences", "max_aud",       "max_ttl",
    "default_ttl", "scope_claim",  "scopes",    "subject",       "subject_required",
    "claims",      "fixed_claims", "rate",      "incident_rate", "frozen"};

static const char *const k_top_keys[] = {"version",  "issuer",   "admins",
                                         "incident", "defaults", "callers"};
/* defaults: every field but frozen (freezing everyone is not a default). */
static const char *const k_defaults_keys[] = {
    "keys",        "default_key",  "audiences", "max_aud",      "max_ttl",
    "default_ttl", "scope_claim",  "scopes",    "subject",      "subject_required",
    "claims",      "fixed_claims", "rate",      "incident_rate"};
static const char *const k_caller_keys[] = {
    "id",           "keys",        "default_key",   "audiences", "max_aud",          "max_ttl",
    "default_ttl",  "scope_claim", "scopes",        "subject",   "subject_required", "claims",
    "fixed_claims", "rate",        "incident_rate", "frozen"};
static const char *const k_rate_keys[] = {"per_second", "burst"};
static const char *const k_claim_keys[] = {"type", "max_bytes"};

/* Registered claims the server owns (RFC 7519 §4.1.1, .5, .6, .7): never allowed. */
static const char *const k_server_claims[] = {"iss", "iat", "nbf", "jti"};
/* Registered claims governed by their own rule (sub, aud, exp; the scope claims). */
static const char *const k_ruled_claims[] = {"sub", "aud", "exp", "scope", "scp"};

typedef enum scope_claim { SCOPE_STRING, SCOPE_ARRAY } scope_claim;

typedef enum claim_type {
    CT_ANY = 0,
    CT_STRING,
    CT_NUMBER,
    CT_BOOLEAN,
    CT_ARRAY,
    CT_OBJECT
} claim_type;

static const char *const k_claim_type_names[] = {"any",     "string", "number",
                                                 "boolean", "array",  "object"};

typedef struct strlist {
    char **v;
    size_t n;
} strlist;

typedef struct claim_rule {
    char *name;
    claim_type type;
    size_t max_bytes; /* 0: no limit beyond the claim set's own */
} claim_rule;

typedef struct rules {
    uint32_t set;         /* bit per field this section sets */
    size_t line[F_COUNT]; /* line of each field set */
    strlist keys;
    char *default_key;
    strlist audiences;
    int64_t max_aud;
    int64_t max_ttl;
    int64_t default_ttl;
    scope_claim scope_claim;
    strlist scopes;
    char *subject; /* the regex source; NULL: any subject */
    regex_t subject_re;
    bool subject_compiled;
    bool subject_required;
    claim_rule *claims;
    size_t nclaims;
    json_t *fixed; /* object; NULL when none */
    js_rate rate;
    js_rate incident_rate; /* per_second 0 and not set: follow rate */
    bool frozen;
} rules;

struct js_policy_caller {
    char *id; /* typed identity text (identity.h), or a URI prefix pattern */
    js_identity_type type;
    size_t line;
    size_t index;      /* position in callers[] */
    bool pattern;      /* id ends in "/" "*" */
    size_t prefix_len; /* pattern: bytes before the '*' */
    rules own;
    const rules *defaults;
    const char *default_key; /* effective, borrowed from a keys list */
    js_rate incident_rate;   /* effective */
};

struct js_policy {
    char hash_hex[JS_POLICY_HASH_HEX + 1];
    char *issuer;
    strlist admins;
    bool incident;
    rules defaults;
    js_policy_caller *callers;
    size_t ncallers;
    const js_policy_caller **exact; /* sorted by id */
    size_t nexact;
    const js_policy_caller **patterns; /* longest prefix first */
    size_t npatterns;
    const char **all_keys; /* sorted, unique, borrowed */
    size_t nall_keys;
};

static bool has(const rules *r, field f)
{
    return (r->set & (1u << f)) != 0;
}

/* The rules record that supplies field f for caller c. */
static const rules *from(const js_policy_caller *c, field f)
{
    return has(&c->own, f) ? &c->own : c->defaults;
}

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
}

void js_policy_free(js_policy *p)
{
    if (p == NULL)
        return;
    free(p->issuer);
    strlist_free(&p->admins);
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
    static const size_t maxes[] = {POLICY_KEY_NAME_MAX, POLICY_AUDIENCE_MAX, POLICY_SCOPE_MAX,
                                   POLICY_CLAIM_NAME_MAX};
    size_t max = maxes[kind];
    *max_out = max;
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok;
        switch (kind) {
        case SK_KEY_NAME:
            ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
            break;
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
 * be read as a DNS SAN, a CN, or a CN that merely looks like a URI (issue 8):
 * it is refused, with how to write it now. With allow_pattern, a URI may end
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
                    "'%s': admins are exact identities; patterns are not allowed", shown);
    if (star != id + len - 1 || len < 3 || id[len - 2] != '/')
        return fail(ld, line, path, JS_R_POLICY_PATTERN,
                    "'%s': '*' is only allowed as a trailing \"/*\" prefix pattern", shown);
    *pattern = true;
    return JS_OK;
}

static bool in_list(const strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

static bool in_array(const char *const *a, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], s) == 0)
            return true;
    return false;
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

/*
 * glibc's regcomp copies a subexpression once per repetition, so a short
 * pattern such as "(a{255}){255}" or "a+++++{9}" can take gigabytes to
 * compile, and back-references make matching exponential. So before
 * regcomp: no back-references, repetition bounds of at most 255, and an
 * estimate of the compiled size (atoms, each multiplied by the repetitions
 * around it) of at most POLICY_REGEX_COST. Malformed syntax is left to regcomp.
 */
#define POLICY_REGEX_COST  4096u
#define POLICY_REGEX_BOUND 255u
#define POLICY_REGEX_DEPTH 16

typedef struct regex_frame {
    uint64_t sum;  /* estimated size of the group so far */
    uint64_t last; /* size of its last atom or group, which a quantifier repeats */
} regex_frame;

static uint64_t cap_cost(uint64_t v)
{
    return v > POLICY_REGEX_COST + 1 ? POLICY_REGEX_COST + 1 : v;
}

static void regex_add(regex_frame *f, uint64_t atom)
{
    f->sum = cap_cost(f->sum + atom);
    f->last = atom;
}

static void regex_repeat(regex_frame *f, uint64_t times)
{
    f->sum = cap_cost(f->sum + f->last * (times - 1));
    f->last = cap_cost(f->last * times);
}

static js_status regex_check_cost(const loader *ld, size_t line, const char *path, const char *s)
{
    regex_frame st[POLICY_REGEX_DEPTH + 1];
    size_t depth = 0;
    memset(st, 0, sizeof(st));
    for (size_t i = 0; s[i] != '\0'; i++) {
        regex_frame *f = &st[depth];
        switch (s[i]) {
        case '\\':
            if (s[i + 1] >= '1' && s[i + 1] <= '9')
                return fail(ld, line, path, JS_R_POLICY_REGEX,
                            "back-references (\\%c) are not allowed", s[i + 1]);
            if (s[i + 1] != '\0')
                i++;
            regex_add(f, 1);
            break;
        case '[': {
            size_t j = i + 1;
            if (s[j] == '^')
                j++;
            if (s[j] == ']')
                j++;
            while (s[j] != '\0' && s[j] != ']') {
                if (s[j] == '[' && (s[j + 1] == ':' || s[j + 1] == '.' || s[j + 1] == '=')) {
                    char close = s[j + 1];
                    j += 2;
                    while (s[j] != '\0' && !(s[j] == close && s[j + 1] == ']'))
                        j++;
                    if (s[j] != '\0')
                        j++;
                }
                if (s[j] != '\0')
                    j++;
            }
            i = s[j] == '\0' ? j - 1 : j;
            regex_add(f, 1);
            break;
        }
        case '(':
            if (depth == POLICY_REGEX_DEPTH)
                return fail(ld, line, path, JS_R_POLICY_REGEX, "groups nest deeper than %d",
                            POLICY_REGEX_DEPTH);
            depth++;
            memset(&st[depth], 0, sizeof(st[depth]));
            break;
        case ')':
            if (depth > 0) {
                uint64_t g = st[depth].sum;
                depth--;
                regex_add(&st[depth], g ? g : 1);
            }
            break;
        case '*':
        case '+':
        case '?':
            regex_repeat(f, 2);
            break;
        case '{': {
            uint64_t lo = 0, hi = 0;
            size_t j = i + 1;
            bool digits = false;
            while (s[j] >= '0' && s[j] <= '9' && lo <= POLICY_REGEX_BOUND)
                lo = lo * 10 + (uint64_t)(s[j++] - '0'), digits = true;
            hi = lo;
            if (s[j] == ',') {
                j++;
                while (s[j] >= '0' && s[j] <= '9' && hi <= POLICY_REGEX_BOUND)
                    hi = hi * 10 + (uint64_t)(s[j++] - '0'), digits = true;
            }
            if (!digits)
                break; /* not a bound; regcomp decides */
            if (lo > POLICY_REGEX_BOUND || hi > POLICY_REGEX_BOUND)
                return fail(ld, line, path, JS_R_POLICY_REGEX,
                            "repetition bounds above %u are not allowed", POLICY_REGEX_BOUND);
            regex_repeat(f, (hi > lo ? hi : lo) + 1);
            while (s[j] != '\0' && s[j] != '}')
                j++;
            i = s[j] == '\0' ? j - 1 : j;
            break;
        }
        default:
            regex_add(f, 1);
            break;
        }
        if (f->sum > POLICY_REGEX_COST || f->last > POLICY_REGEX_COST)
            return fail(ld, line, path, JS_R_POLICY_REGEX,
                        "regular expression too complex (its repetitions expand beyond %u "
                        "elements)",
                        POLICY_REGEX_COST);
    }
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
    JS_GUARD(regex_check_cost(ld, line, path, s));
    r->subject = strdup(s);
    JS_ENSURE_ALLOC(r->subject, ld->err);
    int rc = regcomp(&r->subject_re, s, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[128];
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
        if (in_array(k_server_claims, COUNT(k_server_claims), name))
            return fail(ld, line, sub, JS_R_POLICY_SERVER_CLAIM,
                        "'%s' is set by the signer (RFC 7519 §4.1) and can never be allowed", name);
        if (in_array(k_ruled_claims, COUNT(k_ruled_claims), name))
            return fail(ld, line, sub, JS_R_POLICY_RULED_CLAIM,
                        "'%s' is governed by its own rule (audiences, subject, max_ttl, "
                        "scope_claim/scopes); it cannot be listed in claims",
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
            for (size_t k = CT_STRING; k < COUNT(k_claim_type_names); k++)
                if (strcmp(ts, k_claim_type_names[k]) == 0)
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
                st = js_err_set(ld->err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
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
                st = js_err_set(ld->err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
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
        if (in_array(k_server_claims, COUNT(k_server_claims), name) ||
            in_array(k_ruled_claims, COUNT(k_ruled_claims), name))
            return fail(ld, line, sub, JS_R_POLICY_REGISTERED_CLAIM,
                        "'%s' is a registered claim with its own rule; it cannot be fixed", name);
        json_t *v;
        JS_GUARD(yaml_to_json(ld, js_yaml_map_value(n, i), sub, &v));
        if (json_object_set_new(r->fixed, name, v) != 0)
            return js_err_set(ld->err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
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
        if (!js_yaml_map_find(map, k_field_names[f], &idx))
            continue;
        const js_yaml_node *v = js_yaml_map_value(map, idx);
        const char *fp = js_yaml_path_key(sub, sizeof(sub), path, k_field_names[f]);
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
    if (has(&c->own, f))
        snprintf(buf, cap, "callers[%zu].%s", c->index, k_field_names[f]);
    else if (has(c->defaults, f))
        snprintf(buf, cap, "defaults.%s", k_field_names[f]);
    else
        snprintf(buf, cap, "built-in %s", k_field_names[f]);
    return buf;
}

static size_t src_line(const js_policy_caller *c, field f)
{
    const rules *r = from(c, f);
    return has(r, f) ? r->line[f] : 0;
}

static bool rate_limited(js_rate r)
{
    return r.per_second > 0;
}

/* a is no looser than b: a limited rate with per_second and burst at most b's. */
static bool rate_tighter(js_rate a, js_rate b)
{
    if (!rate_limited(b))
        return true;
    return rate_limited(a) && a.per_second <= b.per_second && a.burst <= b.burst;
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

    const strlist *keys = &from(c, F_KEYS)->keys;
    if (keys->n == 0)
        return fail(ld, has(from(c, F_KEYS), F_KEYS) ? src_line(c, F_KEYS) : c->line,
                    src_path(pa, sizeof(pa), c, F_KEYS), JS_R_POLICY_NO_KEYS,
                    "caller '%s' has no keys; set keys here or in defaults", id);
    /* default_key: the caller's own; else the inherited one if keys are inherited
     * too; else keys[0] (a default chosen for another key list would surprise). */
    const char *dk = NULL;
    field dkf = F_DEFAULT_KEY;
    if (has(&c->own, F_DEFAULT_KEY) || !has(&c->own, F_KEYS))
        dk = from(c, F_DEFAULT_KEY)->default_key;
    if (dk == NULL) {
        c->default_key = keys->v[0];
    } else {
        if (!in_list(keys, dk))
            return fail(ld, src_line(c, dkf), src_path(pa, sizeof(pa), c, dkf),
                        JS_R_POLICY_DEFAULT_KEY,
                        "caller '%s': default key '%s' is not in its keys (%s)", id, dk,
                        src_path(pb, sizeof(pb), c, F_KEYS));
        for (size_t i = 0; i < keys->n; i++)
            if (strcmp(keys->v[i], dk) == 0)
                c->default_key = keys->v[i];
    }

    if (from(c, F_AUDIENCES)->audiences.n == 0)
        return fail(ld, has(from(c, F_AUDIENCES), F_AUDIENCES) ? src_line(c, F_AUDIENCES) : c->line,
                    src_path(pa, sizeof(pa), c, F_AUDIENCES), JS_R_POLICY_NO_AUDIENCES,
                    "caller '%s' has no audiences, so every request would be denied (aud is "
                    "required); set audiences",
                    id);

    int64_t dttl = from(c, F_DEFAULT_TTL)->default_ttl, mttl = from(c, F_MAX_TTL)->max_ttl;
    if (dttl > mttl) {
        field f =
            has(&c->own, F_DEFAULT_TTL) || !has(&c->own, F_MAX_TTL) ? F_DEFAULT_TTL : F_MAX_TTL;
        return fail(ld, src_line(c, f), src_path(pa, sizeof(pa), c, f), JS_R_POLICY_TTL,
                    "caller '%s': default_ttl (%" PRId64 "s, %s) is longer than max_ttl (%" PRId64
                    "s, %s)",
                    id, dttl, src_path(pb, sizeof(pb), c, F_DEFAULT_TTL), mttl,
                    src_path(pa, sizeof(pa), c, F_MAX_TTL));
    }

    js_rate rate = from(c, F_RATE)->rate;
    const rules *ir = from(c, F_INCIDENT_RATE);
    if (!has(ir, F_INCIDENT_RATE)) {
        c->incident_rate = rate; /* none anywhere: incident mode keeps the normal rate */
    } else if (has(&c->own, F_INCIDENT_RATE) || rate_tighter(ir->incident_rate, rate)) {
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

    const rules *cr = from(c, F_CLAIMS), *fr = from(c, F_FIXED_CLAIMS);
    for (size_t i = 0; i < cr->nclaims; i++)
        if (fr->fixed != NULL && json_object_get(fr->fixed, cr->claims[i].name) != NULL)
            return fail(ld, src_line(c, F_CLAIMS), src_path(pa, sizeof(pa), c, F_CLAIMS),
                        JS_R_POLICY_CLAIM_FIXED,
                        "caller '%s': claim '%s' is both allowed (claims) and fixed (%s); a "
                        "fixed claim cannot be set by the caller",
                        id, js_yaml_printable(shown, sizeof(shown), cr->claims[i].name),
                        src_path(pb, sizeof(pb), c, F_FIXED_CLAIMS));
    return JS_OK;
}

/* The defaults section's own pairs, so a broken default is reported even
 * when every caller happens to override one side. */
static js_status check_defaults(const loader *ld, const rules *d)
{
    if (has(d, F_DEFAULT_KEY) && !in_list(&d->keys, d->default_key))
        return fail(ld, d->line[F_DEFAULT_KEY], "defaults.default_key", JS_R_POLICY_DEFAULT_KEY,
                    "default key '%s' is not in defaults.keys", d->default_key);
    if (d->default_ttl > d->max_ttl) {
        field f = has(d, F_DEFAULT_TTL) ? F_DEFAULT_TTL : F_MAX_TTL;
        return fail(
            ld, d->line[f], f == F_DEFAULT_TTL ? "defaults.default_ttl" : "defaults.max_ttl",
            JS_R_POLICY_TTL, "default_ttl (%" PRId64 "s) is longer than max_ttl (%" PRId64 "s)",
            d->default_ttl, d->max_ttl);
    }
    if (has(d, F_INCIDENT_RATE) && has(d, F_RATE) && !rate_tighter(d->incident_rate, d->rate))
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

static int cmp_exact(const void *a, const void *b)
{
    const js_policy_caller *x = *(const js_policy_caller *const *)a;
    const js_policy_caller *y = *(const js_policy_caller *const *)b;
    return strcmp(x->id, y->id);
}

static int cmp_pattern(const void *a, const void *b)
{
    const js_policy_caller *x = *(const js_policy_caller *const *)a;
    const js_policy_caller *y = *(const js_policy_caller *const *)b;
    if (x->prefix_len != y->prefix_len)
        return x->prefix_len > y->prefix_len ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Lookup tables: exact ids sorted for bsearch, patterns longest first, all keys. */
static js_status index_policy(js_policy *p, js_err *err)
{
    p->exact = calloc(p->ncallers, sizeof(*p->exact));
    p->patterns = calloc(p->ncallers, sizeof(*p->patterns));
    size_t nk = 0;
    for (size_t i = 0; i < p->ncallers; i++)
        nk += from(&p->callers[i], F_KEYS)->keys.n;
    p->all_keys = calloc(nk ? nk : 1, sizeof(*p->all_keys));
    JS_ENSURE_ALLOC(p->exact, err);
    JS_ENSURE_ALLOC(p->patterns, err);
    JS_ENSURE_ALLOC(p->all_keys, err);
    for (size_t i = 0; i < p->ncallers; i++) {
        const js_policy_caller *c = &p->callers[i];
        if (c->pattern)
            p->patterns[p->npatterns++] = c;
        else
            p->exact[p->nexact++] = c;
        const strlist *keys = &from(c, F_KEYS)->keys;
        for (size_t k = 0; k < keys->n; k++) {
            bool seen = false;
            for (size_t j = 0; j < p->nall_keys && !seen; j++)
                seen = strcmp(p->all_keys[j], keys->v[k]) == 0;
            if (!seen)
                p->all_keys[p->nall_keys++] = keys->v[k];
        }
    }
    if (p->nexact > 1)
        qsort(p->exact, p->nexact, sizeof(*p->exact), cmp_exact);
    if (p->npatterns > 1)
        qsort(p->patterns, p->npatterns, sizeof(*p->patterns), cmp_pattern);
    if (p->nall_keys > 1)
        qsort(p->all_keys, p->nall_keys, sizeof(*p->all_keys), cmp_str);
    return JS_OK;
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
    return index_policy(p, ld->err);
}

static void sha256_hex(const void *data, size_t len, char hex[JS_POLICY_HASH_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
        hex[0] = '\0';
        return;
    }
    for (size_t i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[JS_POLICY_HASH_HEX] = '\0';
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
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
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
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    JS_ENSURE(fd >= 0, err, JS_ECONFIG, JS_R_POLICY_IO, "%s: cannot open: %s", path,
              strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0 ||
        (uint64_t)sb.st_size > JS_YAML_MAX_BYTES) {
        close(fd);
        return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO,
                          "%s: not a regular file of at most %u bytes", path, JS_YAML_MAX_BYTES);
    }
    /* Read one byte more than the size so a file growing under us is caught. */
    size_t cap = (size_t)sb.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO, "%s: read failed: %s", path,
                              strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == cap) {
            close(fd);
            free(buf);
            return js_err_set(err, JS_ECONFIG, JS_R_POLICY_IO, "%s: file changed while reading",
                              path);
        }
    }
    close(fd);
    js_status st = js_policy_load_buffer(buf, len, path, out, err);
    free(buf);
    return st;
}

/* ---- accessors --------------------------------------------------------------------- */

const char *js_policy_hash_hex(const js_policy *p)
{
    return p ? p->hash_hex : "";
}

bool js_policy_incident(const js_policy *p)
{
    return p != NULL && p->incident;
}

const char *js_policy_issuer(const js_policy *p)
{
    return p ? p->issuer : NULL;
}

bool js_policy_is_admin(const js_policy *p, const char *identity)
{
    return p != NULL && identity != NULL && in_list(&p->admins, identity);
}

size_t js_policy_key_count(const js_policy *p)
{
    return p ? p->nall_keys : 0;
}

const char *js_policy_key_at(const js_policy *p, size_t i)
{
    return p != NULL && i < p->nall_keys ? p->all_keys[i] : NULL;
}

int64_t js_policy_key_max_ttl(const js_policy *p, const char *key)
{
    int64_t longest = 0;
    for (size_t i = 0; p != NULL && i < p->ncallers; i++) {
        const js_policy_caller *c = &p->callers[i];
        const strlist *keys = &from(c, F_KEYS)->keys;
        for (size_t k = 0; k < keys->n; k++) {
            int64_t ttl = from(c, F_MAX_TTL)->max_ttl;
            if (strcmp(keys->v[k], key) == 0 && ttl > longest)
                longest = ttl;
        }
    }
    return longest;
}

const js_policy_caller *js_policy_match(const js_policy *p, const char *identity)
{
    if (p == NULL || identity == NULL)
        return NULL;
    js_policy_caller key = {.id = (char *)identity};
    const js_policy_caller *kp = &key;
    const js_policy_caller **hit = bsearch(&kp, p->exact, p->nexact, sizeof(*p->exact), cmp_exact);
    if (hit != NULL)
        return *hit;
    /* Prefix patterns are URI entries only (load_caller): a dns: or cn:
     * identity never matches one, whatever its text (issue 8). */
    if (identity_type_of(identity) != JS_ID_URI)
        return NULL;
    /* Longest prefix first; the identity must extend past the '/'. */
    size_t len = strlen(identity);
    for (size_t i = 0; i < p->npatterns; i++) {
        const js_policy_caller *c = p->patterns[i];
        if (len > c->prefix_len && memcmp(identity, c->id, c->prefix_len) == 0)
            return c;
    }
    return NULL;
}

const char *js_policy_caller_id(const js_policy_caller *c)
{
    return c ? c->id : NULL;
}

bool js_policy_caller_frozen(const js_policy_caller *c)
{
    return c != NULL && has(&c->own, F_FROZEN) && c->own.frozen;
}

js_rate js_policy_caller_rate(const js_policy_caller *c)
{
    js_rate none = {0, 0};
    return c ? from(c, F_RATE)->rate : none;
}

js_rate js_policy_caller_incident_rate(const js_policy_caller *c)
{
    js_rate none = {0, 0};
    return c ? c->incident_rate : none;
}

/* ---- evaluation -------------------------------------------------------------------- */

/* Quoted value for a message: printable ASCII kept, everything else \xNN. */
static const char *shown_n(char *buf, size_t cap, const char *s, size_t len)
{
    return js_escape(buf, cap, s, len);
}

static const char *shown_s(char *buf, size_t cap, const char *s)
{
    return js_escape(buf, cap, s, strlen(s));
}

static const char *json_type_name(const json_t *v)
{
    if (v == NULL)
        return "nothing";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    default:
        return "unknown";
    }
}

static bool aud_allowed(const strlist *allowed, const json_t *s)
{
    const char *v = json_string_value(s);
    size_t n = json_string_length(s);
    /* Exact bytes: no case folding, no trailing-slash or Unicode normalisation. */
    for (size_t i = 0; i < allowed->n; i++)
        if (strlen(allowed->v[i]) == n && memcmp(allowed->v[i], v, n) == 0)
            return true;
    return false;
}

/* RFC 7519 §4.1.3: aud is a string or an array of strings; we require it. */
static js_status check_audience(const js_policy_caller *c, const json_t *claims, js_err *err)
{
    char b[96], cid[96];
    const json_t *aud = json_object_get(claims, "aud");
    const strlist *allowed = &from(c, F_AUDIENCES)->audiences;
    int64_t max_aud = from(c, F_MAX_AUD)->max_aud;
    shown_s(cid, sizeof(cid), c->id);
    JS_ENSURE(aud != NULL, err, JS_EINVAL, JS_R_POLICY_AUDIENCE,
              "audiences: aud is required (a string or an array of strings)");
    if (json_is_string(aud)) {
        JS_ENSURE(aud_allowed(allowed, aud), err, JS_EDENIED, JS_R_POLICY_AUDIENCE,
                  "audiences: aud '%s' is not allowed for caller '%s'",
                  shown_n(b, sizeof(b), json_string_value(aud), json_string_length(aud)), cid);
        return JS_OK;
    }
    JS_ENSURE(json_is_array(aud), err, JS_EINVAL, JS_R_POLICY_AUDIENCE,
              "audiences: aud must be a string or an array of strings, not %s",
              json_type_name(aud));
    size_t n = json_array_size(aud);
    JS_ENSURE(n > 0, err, JS_EINVAL, JS_R_POLICY_AUDIENCE,
              "audiences: aud must not be an empty array");
    for (size_t i = 0; i < n; i++)
        JS_ENSURE(json_is_string(json_array_get(aud, i)), err, JS_EINVAL, JS_R_POLICY_AUDIENCE,
                  "audiences: aud[%zu] must be a string, not %s", i,
                  json_type_name(json_array_get(aud, i)));
    JS_ENSURE((int64_t)n <= max_aud, err, JS_EDENIED, JS_R_POLICY_AUDIENCE,
              "audiences: aud has %zu elements; caller '%s' may send at most %" PRId64, n, cid,
              max_aud);
    for (size_t i = 0; i < n; i++) {
        const json_t *a = json_array_get(aud, i);
        for (size_t j = 0; j < i; j++)
            JS_ENSURE(!json_equal(a, json_array_get(aud, j)), err, JS_EINVAL, JS_R_POLICY_AUDIENCE,
                      "audiences: aud[%zu] '%s' repeats aud[%zu]", i,
                      shown_n(b, sizeof(b), json_string_value(a), json_string_length(a)), j);
        JS_ENSURE(aud_allowed(allowed, a), err, JS_EDENIED, JS_R_POLICY_AUDIENCE,
                  "audiences: aud[%zu] '%s' is not allowed for caller '%s'", i,
                  shown_n(b, sizeof(b), json_string_value(a), json_string_length(a)), cid);
    }
    return JS_OK;
}

static js_status check_subject(const js_policy_caller *c, const json_t *claims, js_err *err)
{
    char b[96], cid[96];
    const json_t *sub = json_object_get(claims, "sub");
    const rules *sr = from(c, F_SUBJECT);
    shown_s(cid, sizeof(cid), c->id);
    if (sub == NULL) {
        JS_ENSURE(!from(c, F_SUBJECT_REQUIRED)->subject_required, err, JS_EINVAL,
                  JS_R_POLICY_SUBJECT, "subject: sub is required for caller '%s'", cid);
        return JS_OK;
    }
    JS_ENSURE(json_is_string(sub), err, JS_EINVAL, JS_R_POLICY_SUBJECT,
              "subject: sub must be a string, not %s", json_type_name(sub));
    const char *s = json_string_value(sub);
    size_t len = json_string_length(sub);
    JS_ENSURE(len > 0, err, JS_EINVAL, JS_R_POLICY_SUBJECT, "subject: sub must not be empty");
    /* regexec sees a C string: an embedded NUL would hide the rest. */
    JS_ENSURE(strlen(s) == len, err, JS_EINVAL, JS_R_POLICY_SUBJECT,
              "subject: sub '%s' contains a NUL character", shown_n(b, sizeof(b), s, len));
    /* Without REG_NEWLINE, '.' and bracket expressions match '\n', so an
     * anchored pattern could still span lines; and a permissive pattern
     * (".*") would let invisible or reordering characters (Unicode Cf: bidi
     * overrides, zero-width spaces) into a token and the audit log, where
     * two subjects that look the same would differ. So every Cc and Cf
     * character is refused, whatever the subject rule (text.h). */
    if (js_text_check("sub", s, len, 0, JS_EDENIED, JS_R_POLICY_SUBJECT, err) != JS_OK) {
        js_err_prefix(err, "subject: sub '%s' of caller '%s': ", shown_n(b, sizeof(b), s, len),
                      cid);
        return JS_EDENIED;
    }
    if (sr->subject_compiled)
        JS_ENSURE(regexec(&sr->subject_re, s, 0, NULL, 0) == 0, err, JS_EDENIED,
                  JS_R_POLICY_SUBJECT, "subject: sub '%s' does not match %s for caller '%s'",
                  shown_n(b, sizeof(b), s, len), sr->subject, cid);
    return JS_OK;
}

/* One requested scope token; INVALID if malformed (RFC 6749 §3.3 scope-token). */
static js_status scope_token_ok(const char *s, size_t len, const char *where, js_err *err)
{
    char b[96];
    JS_ENSURE(len > 0, err, JS_EINVAL, JS_R_POLICY_SCOPE, "scopes: %s has an empty element", where);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        JS_ENSURE(ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) || (ch >= 0x5d && ch <= 0x7e), err,
                  JS_EINVAL, JS_R_POLICY_SCOPE,
                  "scopes: %s element '%s' has a character not allowed in a scope (RFC 6749 "
                  "§3.3)",
                  where, shown_n(b, sizeof(b), s, len));
    }
    return JS_OK;
}

typedef struct span {
    const char *s;
    size_t len;
} span;

static js_status check_scope(const js_policy_caller *c, const json_t *claims, char **granted,
                             js_err *err)
{
    char b[96], cid[96];
    scope_claim sc = from(c, F_SCOPE_CLAIM)->scope_claim;
    const strlist *ceiling = &from(c, F_SCOPES)->scopes;
    const char *name = sc == SCOPE_STRING ? "scope" : "scp";
    const char *other = sc == SCOPE_STRING ? "scp" : "scope";
    shown_s(cid, sizeof(cid), c->id);
    /* The other form is not this caller's: denied, not malformed (it is a
     * well-formed claim this caller may not set). */
    JS_ENSURE(json_object_get(claims, other) == NULL, err, JS_EDENIED, JS_R_POLICY_SCOPE,
              "scopes: caller '%s' sends scopes in '%s' (%s), not '%s'", cid, name,
              sc == SCOPE_STRING ? "a space-separated string" : "an array of strings", other);
    const json_t *v = json_object_get(claims, name);
    *granted = NULL;
    if (v == NULL) {
        *granted = strdup("");
        JS_ENSURE_ALLOC(*granted, err);
        return JS_OK;
    }

    span toks[POLICY_MAX_SCOPES];
    size_t n = 0;
    if (sc == SCOPE_STRING) {
        JS_ENSURE(json_is_string(v), err, JS_EINVAL, JS_R_POLICY_SCOPE,
                  "scopes: scope must be a space-separated string, not %s", json_type_name(v));
        const char *s = json_string_value(v);
        size_t len = json_string_length(v), start = 0;
        /* RFC 6749 §3.3: scope = scope-token *( SP scope-token ); so "" and
         * leading, trailing or doubled spaces are empty elements. */
        for (size_t i = 0; i <= len; i++) {
            if (i < len && s[i] != ' ')
                continue;
            JS_ENSURE(n < POLICY_MAX_SCOPES, err, JS_EINVAL, JS_R_POLICY_SCOPE,
                      "scopes: more than %d scopes requested", POLICY_MAX_SCOPES);
            JS_GUARD(scope_token_ok(s + start, i - start, "scope", err));
            toks[n].s = s + start;
            toks[n].len = i - start;
            n++;
            start = i + 1;
        }
    } else {
        JS_ENSURE(json_is_array(v), err, JS_EINVAL, JS_R_POLICY_SCOPE,
                  "scopes: scp must be an array of strings, not %s", json_type_name(v));
        JS_ENSURE(json_array_size(v) > 0, err, JS_EINVAL, JS_R_POLICY_SCOPE,
                  "scopes: scp must not be an empty array; omit it to request no scopes");
        JS_ENSURE(json_array_size(v) <= POLICY_MAX_SCOPES, err, JS_EINVAL, JS_R_POLICY_SCOPE,
                  "scopes: more than %d scopes requested", POLICY_MAX_SCOPES);
        for (size_t i = 0; i < json_array_size(v); i++) {
            const json_t *e = json_array_get(v, i);
            JS_ENSURE(json_is_string(e), err, JS_EINVAL, JS_R_POLICY_SCOPE,
                      "scopes: scp[%zu] must be a string, not %s", i, json_type_name(e));
            JS_GUARD(scope_token_ok(json_string_value(e), json_string_length(e), "scp", err));
            toks[n].s = json_string_value(e);
            toks[n].len = json_string_length(e);
            n++;
        }
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++)
            JS_ENSURE(toks[j].len != toks[i].len || memcmp(toks[j].s, toks[i].s, toks[i].len) != 0,
                      err, JS_EINVAL, JS_R_POLICY_SCOPE, "scopes: scope '%s' is requested twice",
                      shown_n(b, sizeof(b), toks[i].s, toks[i].len));
        total += toks[i].len + 1;
    }
    /* The ceiling: exact tokens; a prefix of an allowed scope is a different scope. */
    for (size_t i = 0; i < n; i++) {
        bool ok = false;
        for (size_t k = 0; k < ceiling->n && !ok; k++)
            ok = strlen(ceiling->v[k]) == toks[i].len &&
                 memcmp(ceiling->v[k], toks[i].s, toks[i].len) == 0;
        JS_ENSURE(ok, err, JS_EDENIED, JS_R_POLICY_SCOPE,
                  "scopes: scope '%s' is not in the scope ceiling of caller '%s'%s",
                  shown_n(b, sizeof(b), toks[i].s, toks[i].len), cid,
                  ceiling->n == 0 ? " (it may request no scopes)" : "");
    }
    char *g = malloc(total + 1);
    JS_ENSURE_ALLOC(g, err);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            g[at++] = ' ';
        memcpy(g + at, toks[i].s, toks[i].len);
        at += toks[i].len;
    }
    g[at] = '\0';
    *granted = g;
    return JS_OK;
}

static bool type_ok(claim_type t, const json_t *v)
{
    switch (t) {
    case CT_STRING:
        return json_is_string(v);
    case CT_NUMBER:
        return json_is_number(v);
    case CT_BOOLEAN:
        return json_is_boolean(v);
    case CT_ARRAY:
        return json_is_array(v);
    case CT_OBJECT:
        return json_is_object(v);
    case CT_ANY:
    default:
        return true;
    }
}

/* Every member not governed by another rule must be on the claims allowlist. */
static js_status check_claims(const js_policy_caller *c, const json_t *claims, js_err *err)
{
    char b[96], cid[96];
    const rules *cr = from(c, F_CLAIMS);
    const json_t *fixed = from(c, F_FIXED_CLAIMS)->fixed;
    shown_s(cid, sizeof(cid), c->id);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)claims, name, v)
    {
        if (in_array(k_server_claims, COUNT(k_server_claims), name) ||
            in_array(k_ruled_claims, COUNT(k_ruled_claims), name))
            continue;
        JS_ENSURE(fixed == NULL || json_object_get(fixed, name) == NULL, err, JS_EDENIED,
                  JS_R_POLICY_FIXED_CLAIM,
                  "fixed_claims: claim '%s' is fixed by the policy for caller '%s'; it cannot be "
                  "overridden",
                  shown_s(b, sizeof(b), name), cid);
        const claim_rule *rule = NULL;
        for (size_t i = 0; i < cr->nclaims && rule == NULL; i++)
            if (strcmp(cr->claims[i].name, name) == 0)
                rule = &cr->claims[i];
        JS_ENSURE(rule != NULL, err, JS_EDENIED, JS_R_POLICY_CLAIM,
                  "claims: claim '%s' is not on the allowlist of caller '%s'",
                  shown_s(b, sizeof(b), name), cid);
        JS_ENSURE(type_ok(rule->type, v), err, JS_EINVAL, JS_R_POLICY_CLAIM,
                  "claims: claim '%s' must be %s %s, not %s", shown_s(b, sizeof(b), name),
                  rule->type == CT_ARRAY || rule->type == CT_OBJECT ? "an" : "a",
                  k_claim_type_names[rule->type], json_type_name(v));
        if (rule->max_bytes > 0) {
            size_t size = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
            JS_ENSURE(size <= rule->max_bytes, err, JS_EDENIED, JS_R_POLICY_CLAIM,
                      "claims: claim '%s' encodes to %zu bytes; caller '%s' may send at most %zu",
                      shown_s(b, sizeof(b), name), size, cid, rule->max_bytes);
        }
    }
    return JS_OK;
}

void js_policy_result_clear(js_policy_result *r)
{
    if (r == NULL)
        return;
    json_decref(r->claims);
    free(r->scopes);
    memset(r, 0, sizeof(*r));
}

js_status js_policy_evaluate(const js_policy *p, const js_policy_caller *c, const json_t *claims,
                             const char *requested_key, const char *jti, int64_t now,
                             js_policy_result *out, js_err *err)
{
    char b[96], cid[96];
    JS_ENSURE(out != NULL, err, JS_EINTERNAL, JS_R_POLICY_INTERNAL, "no result storage");
    memset(out, 0, sizeof(*out));
    JS_ENSURE(p != NULL && c != NULL && jti != NULL, err, JS_EINTERNAL, JS_R_POLICY_INTERNAL,
              "evaluate needs a policy, a caller entry and a jti");
    JS_ENSURE(json_is_object(claims), err, JS_EINVAL, JS_R_CLAIMS_NOT_OBJECT,
              "the claim set must be a JSON object");
    JS_ENSURE(p->issuer != NULL, err, JS_EINTERNAL, JS_R_POLICY_NO_ISSUER,
              "the policy does not set issuer");
    shown_s(cid, sizeof(cid), c->id);
    /* The signer checks this before the rate limit; repeated so the library
     * cannot be misused into signing for a frozen caller. */
    JS_ENSURE(!js_policy_caller_frozen(c), err, JS_EDENIED, JS_R_POLICY_FROZEN,
              "frozen: caller entry '%s' is frozen", cid);

    /* 1. key */
    const char *key = c->default_key;
    if (requested_key != NULL && requested_key[0] != '\0') {
        const strlist *keys = &from(c, F_KEYS)->keys;
        key = NULL;
        for (size_t i = 0; i < keys->n && key == NULL; i++)
            if (strcmp(keys->v[i], requested_key) == 0)
                key = keys->v[i];
        JS_ENSURE(key != NULL, err, JS_EDENIED, JS_R_POLICY_KEY,
                  "keys: key '%s' is not allowed for caller '%s'",
                  shown_s(b, sizeof(b), requested_key), cid);
    }

    /* 2. the server's claims and the lifetime rule (claims.h), on a copy */
    json_t *copy = json_deep_copy(claims);
    JS_ENSURE_ALLOC(copy, err);
    claims_lifetime life = {from(c, F_DEFAULT_TTL)->default_ttl, from(c, F_MAX_TTL)->max_ttl};
    int64_t exp = 0;
    js_status st = claims_apply_server(copy, p->issuer, now, &life, jti, &exp, err);
    if (st == JS_EDENIED && err != NULL && err->reason == JS_R_CLAIMS_EXP_TOO_FAR) {
        /* The ceiling is this caller's max_ttl: report it as the policy rule. */
        err->reason = JS_R_POLICY_LIFETIME;
        js_err_prefix(err, "max_ttl of caller '%s': ", cid);
    }

    /* 3. the per-caller rules, in a fixed order */
    char *granted = NULL;
    if (st == JS_OK)
        st = check_audience(c, claims, err);
    if (st == JS_OK)
        st = check_subject(c, claims, err);
    if (st == JS_OK)
        st = check_scope(c, claims, &granted, err);
    if (st == JS_OK)
        st = check_claims(c, claims, err);

    /* 4. fixed claims, which the caller could not send (checked above) */
    const json_t *fixed = from(c, F_FIXED_CLAIMS)->fixed;
    if (st == JS_OK && fixed != NULL && json_object_update(copy, (json_t *)fixed) != 0)
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    if (st != JS_OK) {
        json_decref(copy);
        free(granted);
        return st;
    }
    out->claims = copy;
    out->key_name = key;
    out->exp = exp;
    out->scopes = granted;
    return JS_OK;
}

/* ---- description for check-policy -------------------------------------------------- */

/* " (defaults)" or " (built-in)" when caller c inherits field f. */
static const char *origin(const js_policy_caller *c, field f)
{
    if (has(&c->own, f))
        return "";
    return has(c->defaults, f) ? "  (defaults)" : "  (built-in)";
}

static void describe_list(FILE *f, const char *label, const strlist *l, const char *empty,
                          const char *from_where)
{
    char b[96];
    fprintf(f, "  %-17s ", label);
    if (l->n == 0)
        fprintf(f, "%s", empty);
    for (size_t i = 0; i < l->n; i++)
        fprintf(f, "%s%s", i ? ", " : "", shown_s(b, sizeof(b), l->v[i]));
    fprintf(f, "%s\n", from_where);
}

static void describe_rate(FILE *f, const char *label, js_rate r, const char *from_where)
{
    if (rate_limited(r))
        fprintf(f, "  %-17s %g/s, burst %g%s\n", label, r.per_second, r.burst, from_where);
    else
        fprintf(f, "  %-17s unlimited%s\n", label, from_where);
}

static void describe_caller(FILE *f, const js_policy_caller *c)
{
    char b[96];
    fprintf(f, "caller %s%s (callers[%zu], line %zu)\n", shown_s(b, sizeof(b), c->id),
            c->pattern ? "  [prefix pattern]" : "", c->index, c->line);
    if (js_policy_caller_frozen(c))
        fprintf(f, "  FROZEN: every request is denied (policy.frozen)\n");
    describe_list(f, "keys:", &from(c, F_KEYS)->keys, "(none)", origin(c, F_KEYS));
    fprintf(f, "  %-17s %s\n", "default key:", c->default_key);
    describe_list(f, "audiences:", &from(c, F_AUDIENCES)->audiences, "(none)",
                  origin(c, F_AUDIENCES));
    fprintf(f, "  %-17s %" PRId64 "%s\n", "max aud:", from(c, F_MAX_AUD)->max_aud,
            origin(c, F_MAX_AUD));
    fprintf(f, "  %-17s default %" PRId64 "s%s, max %" PRId64 "s%s\n",
            "lifetime:", from(c, F_DEFAULT_TTL)->default_ttl, origin(c, F_DEFAULT_TTL),
            from(c, F_MAX_TTL)->max_ttl, origin(c, F_MAX_TTL));
    fprintf(f, "  %-17s %s%s\n", "scope claim:",
            from(c, F_SCOPE_CLAIM)->scope_claim == SCOPE_STRING ? "scope (space-separated string)"
                                                                : "scp (array of strings)",
            origin(c, F_SCOPE_CLAIM));
    describe_list(f, "scope ceiling:", &from(c, F_SCOPES)->scopes,
                  "(none: no scopes may be requested)", origin(c, F_SCOPES));
    const rules *sr = from(c, F_SUBJECT);
    fprintf(f, "  %-17s %s%s, %s%s\n", "subject:", sr->subject ? sr->subject : "(any string)",
            origin(c, F_SUBJECT),
            from(c, F_SUBJECT_REQUIRED)->subject_required ? "required" : "optional",
            origin(c, F_SUBJECT_REQUIRED));
    const rules *cr = from(c, F_CLAIMS);
    fprintf(f, "  %-17s%s%s\n", "extra claims:", cr->nclaims ? "" : " (none)", origin(c, F_CLAIMS));
    for (size_t i = 0; i < cr->nclaims; i++) {
        fprintf(f, "    %s: %s", shown_s(b, sizeof(b), cr->claims[i].name),
                k_claim_type_names[cr->claims[i].type]);
        if (cr->claims[i].max_bytes)
            fprintf(f, ", at most %zu bytes", cr->claims[i].max_bytes);
        fputc('\n', f);
    }
    const json_t *fixed = from(c, F_FIXED_CLAIMS)->fixed;
    fprintf(f, "  %-17s%s%s\n", "fixed claims:", json_object_size(fixed) ? "" : " (none)",
            origin(c, F_FIXED_CLAIMS));
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)fixed, name, v)
    {
        char *enc = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(f, "    %s = %s\n", shown_s(b, sizeof(b), name), enc ? enc : "?");
        free(enc);
    }
    describe_rate(f, "rate:", from(c, F_RATE)->rate, origin(c, F_RATE));
    describe_rate(f, "incident rate:", c->incident_rate, origin(c, F_INCIDENT_RATE));
}

char *js_policy_describe(const js_policy *p)
{
    char *buf = NULL;
    size_t len = 0;
    char b[96];
    if (p == NULL)
        return NULL;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    fprintf(f, "policy sha256 %s\n", p->hash_hex);
    fprintf(f, "issuer: %s\n", p->issuer ? shown_s(b, sizeof(b), p->issuer) : "(not set)");
    fprintf(f, "incident: %s\n", p->incident ? "on" : "off");
    fprintf(f, "admins:");
    if (p->admins.n == 0)
        fprintf(f, " (none)");
    for (size_t i = 0; i < p->admins.n; i++)
        fprintf(f, " %s", shown_s(b, sizeof(b), p->admins.v[i]));
    fprintf(f, "\nkeys used:");
    for (size_t i = 0; i < p->nall_keys; i++)
        fprintf(f, " %s", p->all_keys[i]);
    fprintf(f, "\nmatch order: exact identities, then prefix patterns longest first\n");
    for (size_t i = 0; i < p->ncallers; i++) {
        fputc('\n', f);
        describe_caller(f, &p->callers[i]);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
