/*
 * policy.c - the loaded policy (policy.h, policy_int.h): the name tables every
 * part shares (fields, claim types, registered claims), the lookup tables
 * built once at load (exact ids, prefix patterns, key names), which caller
 * entry an identity matches, and the read-only accessors. Nothing here writes
 * to a js_policy after policy_index(), so any number of threads may call in.
 */
#include "policy_int.h"

#include <stdlib.h>
#include <string.h>

const char *const policy_field_names[F_COUNT] = {
    "keys",        "default_key",  "audiences", "max_aud",       "max_ttl",
    "default_ttl", "scope_claim",  "scopes",    "subject",       "subject_required",
    "claims",      "fixed_claims", "rate",      "incident_rate", "frozen",
    "cnf",         "cnf_audiences"};

const char *const policy_claim_type_names[CT_COUNT] = {"any",     "string", "number",
                                                       "boolean", "array",  "object"};

const char *const policy_server_claims[4] = {"iss", "iat", "nbf", "jti"};
const char *const policy_ruled_claims[6] = {"sub", "aud", "exp", "scope", "scp", "cnf"};

/* ---- lookup tables ----------------------------------------------------------------- */

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

js_status policy_index(js_policy *p, js_err *err)
{
    p->nexact = p->npatterns = p->nall_keys = 0; /* built from scratch */
    p->exact = calloc(p->ncallers, sizeof(*p->exact));
    p->patterns = calloc(p->ncallers, sizeof(*p->patterns));
    size_t nk = 0;
    for (size_t i = 0; i < p->ncallers; i++)
        nk += policy_from(&p->callers[i], F_KEYS)->keys.n;
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
        const strlist *keys = &policy_from(c, F_KEYS)->keys;
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
    return p != NULL && identity != NULL && policy_in_list(&p->admins, identity);
}

bool js_policy_introspector(const js_policy *p, const char *identity, const char *const **auds,
                            size_t *naud)
{
    if (auds != NULL)
        *auds = NULL;
    if (naud != NULL)
        *naud = 0;
    if (p == NULL || identity == NULL)
        return false;
    for (size_t i = 0; i < p->nintrospectors; i++) {
        const introspector *e = &p->introspectors[i];
        if (strcmp(e->id, identity) != 0)
            continue;
        if (auds != NULL)
            *auds = e->auds;
        if (naud != NULL)
            *naud = e->audiences.n;
        return true;
    }
    return false;
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
        const strlist *keys = &policy_from(c, F_KEYS)->keys;
        for (size_t k = 0; k < keys->n; k++) {
            int64_t ttl = policy_from(c, F_MAX_TTL)->max_ttl;
            if (strcmp(keys->v[k], key) == 0 && ttl > longest)
                longest = ttl;
        }
    }
    return longest;
}

size_t js_policy_caller_count(const js_policy *p)
{
    return p ? p->ncallers : 0;
}

const js_policy_caller *js_policy_caller_at(const js_policy *p, size_t i)
{
    return p != NULL && i < p->ncallers ? &p->callers[i] : NULL;
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
    /* Prefix patterns are URI entries only (policy_load.c): a dns:, cn: or
     * unix: identity never matches one, whatever its text, so a certificate
     * CN or DNS name that spells a URI cannot take a URI entry's rights. */
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
    return c != NULL && policy_has(&c->own, F_FROZEN) && c->own.frozen;
}

js_identity_type js_policy_caller_type(const js_policy_caller *c)
{
    return c ? c->type : JS_ID_URI;
}

int64_t js_policy_caller_max_ttl(const js_policy_caller *c)
{
    return c ? policy_from(c, F_MAX_TTL)->max_ttl : 0;
}

const char *js_policy_caller_default_key(const js_policy_caller *c)
{
    return c ? c->default_key : NULL;
}

size_t js_policy_caller_key_count(const js_policy_caller *c)
{
    return c ? policy_from(c, F_KEYS)->keys.n : 0;
}

const char *js_policy_caller_key_at(const js_policy_caller *c, size_t i)
{
    if (c == NULL)
        return NULL;
    const strlist *keys = &policy_from(c, F_KEYS)->keys;
    return i < keys->n ? keys->v[i] : NULL;
}

js_rate js_policy_caller_rate(const js_policy_caller *c)
{
    js_rate none = {0, 0};
    return c ? policy_from(c, F_RATE)->rate : none;
}

js_rate js_policy_caller_incident_rate(const js_policy_caller *c)
{
    js_rate none = {0, 0};
    return c ? c->incident_rate : none;
}
