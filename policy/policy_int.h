/*
 * policy_int.h - the parts of policy/ share this private header: the data
 * model behind the opaque js_policy and js_policy_caller of policy.h, the
 * limits on policy files and requests, and the small lookups every part uses.
 * Only the .c files of policy/ include it; everything above policy/ sees
 * policy.h.
 *
 * Who does what: policy_load.c builds a js_policy from a file (and frees it),
 * regex_cost.c vets a subject regex before regcomp sees it, policy.c holds
 * the lookup tables, caller matching and the accessors, policy_eval.c decides
 * one request, policy_describe.c writes the effective rules for check-policy.
 *
 * The model: the top-level `defaults` section and each caller entry are
 * parsed into a `rules` record with a bit per field it sets. A field a caller
 * sets REPLACES the inherited value wholesale (lists are not merged), so a
 * caller's effective value of field f is policy_from(c, f)->f. Once loaded, a
 * js_policy is immutable and read by any number of threads.
 */
#ifndef JS_POLICY_INT_H
#define JS_POLICY_INT_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "escape.h"
#include "identity.h"
#include "policy.h"

/* ---- limits: a policy file and a request are untrusted input, so every size and count
 * has a named limit here and exceeding one is an error that names it ---------------- */

#define POLICY_MAX_CALLERS       1024
#define POLICY_MAX_ADMINS        64
#define POLICY_MAX_INTROSPECTORS 256
#define POLICY_MAX_KEYS          32
#define POLICY_MAX_AUDIENCES     64
#define POLICY_AUDIENCE_MAX      1024
#define POLICY_MAX_AUD_LIMIT     100 /* the largest max_aud a file may set */
#define POLICY_MAX_SCOPES        256 /* ceiling entries, and scopes in one request */
#define POLICY_SCOPE_MAX         128
#define POLICY_MAX_CLAIMS        64
#define POLICY_CLAIM_NAME_MAX    128
#define POLICY_MAX_FIXED         64
#define POLICY_ISSUER_MAX        256
#define POLICY_REGEX_MAX         1024 /* bytes of a subject regex (its cost: regex_cost.h) */
#define POLICY_RATE_MAX          1000000.0
#define POLICY_BURST_MAX         1000000

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
    F_CNF,
    F_CNF_AUDIENCES,
    F_COUNT
} field;

/* YAML key of each field, in enum order (policy.c). */
extern const char *const policy_field_names[F_COUNT];

typedef enum scope_claim { SCOPE_STRING, SCOPE_ARRAY } scope_claim;

typedef enum claim_type {
    CT_ANY = 0,
    CT_STRING,
    CT_NUMBER,
    CT_BOOLEAN,
    CT_ARRAY,
    CT_OBJECT,
    CT_COUNT
} claim_type;

/* Name of each claim_type as the file spells it, in enum order (policy.c). */
extern const char *const policy_claim_type_names[CT_COUNT];

/* Registered claims the server owns (RFC 7519 §4.1.1, .5, .6, .7): never allowed. */
extern const char *const policy_server_claims[4];
/* Registered claims governed by their own rule (sub, aud, exp; the scope
 * claims; cnf, RFC 7800). */
extern const char *const policy_ruled_claims[6];

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
    bool cnf_required;     /* cnf: required (default optional) */
    strlist cnf_audiences; /* cnf required when aud contains one of these */
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

/* One introspectors entry: an exact typed identity and the audiences whose
 * tokens it may ask about (none: any). */
typedef struct introspector {
    char *id;
    strlist audiences;
    const char **auds; /* audiences.v as const, for js_policy_introspector */
} introspector;

struct js_policy {
    char hash_hex[JS_POLICY_HASH_HEX + 1];
    char *issuer;
    strlist admins;
    introspector *introspectors;
    size_t nintrospectors;
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

/* ---- shared lookups ---------------------------------------------------------------- */

static inline bool policy_has(const rules *r, field f)
{
    return (r->set & (1u << f)) != 0;
}

/* The rules record that supplies field f for caller c: its own, else the defaults. */
static inline const rules *policy_from(const js_policy_caller *c, field f)
{
    return policy_has(&c->own, f) ? &c->own : c->defaults;
}

static inline bool policy_in_list(const strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

static inline bool policy_in_array(const char *const *a, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i], s) == 0)
            return true;
    return false;
}

/* A claim that the claims allowlist and fixed_claims never govern: the server's
 * own claims and those with a rule of their own. */
static inline bool policy_registered_claim(const char *name)
{
    return policy_in_array(policy_server_claims, COUNT(policy_server_claims), name) ||
           policy_in_array(policy_ruled_claims, COUNT(policy_ruled_claims), name);
}

/* per_second == 0 means unlimited (policy.h). */
static inline bool policy_rate_limited(js_rate r)
{
    return r.per_second > 0;
}

/* Quoted value for a message: printable ASCII kept, everything else \xNN (escape.h). */
static inline const char *shown_n(char *buf, size_t cap, const char *s, size_t len)
{
    return js_escape(buf, cap, s, len);
}

static inline const char *shown_s(char *buf, size_t cap, const char *s)
{
    return js_escape(buf, cap, s, strlen(s));
}

/* ---- between the parts ------------------------------------------------------------- */

/* Builds p's lookup tables once every caller is loaded: exact ids sorted for
 * js_policy_match's bsearch, prefix patterns longest first, and every key
 * name (sorted, unique). policy.c, which also reads them. */
js_status policy_index(js_policy *p, js_err *err) JS_WUR;

#endif
