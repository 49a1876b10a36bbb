/*
 * policy_describe.c - writes a loaded policy's effective rules as text
 * (js_policy_describe, policy.h) for `jwt-signerd check-policy`: every
 * caller with its defaults applied, and where each inherited value comes
 * from. Untrusted strings are written escaped (escape.h). The text goes to a
 * memory stream; nothing here touches a file. A unix: caller (validate mode)
 * gets only the rules that apply to a pre-built claim set.
 */
#include "policy_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* " (defaults)" or " (built-in)" when caller c inherits field f. */
static const char *origin(const js_policy_caller *c, field f)
{
    if (policy_has(&c->own, f))
        return "";
    return policy_has(c->defaults, f) ? "  (defaults)" : "  (built-in)";
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
    if (policy_rate_limited(r))
        fprintf(f, "  %-17s %g/s, burst %g%s\n", label, r.per_second, r.burst, from_where);
    else
        fprintf(f, "  %-17s unlimited%s\n", label, from_where);
}

static void describe_scopes(FILE *f, const js_policy_caller *c)
{
    fprintf(f, "  %-17s %s%s\n", "scope claim:",
            policy_from(c, F_SCOPE_CLAIM)->scope_claim == SCOPE_STRING
                ? "scope (space-separated string)"
                : "scp (array of strings)",
            origin(c, F_SCOPE_CLAIM));
    describe_list(f, "scope ceiling:", &policy_from(c, F_SCOPES)->scopes,
                  "(none: no scopes may be requested)", origin(c, F_SCOPES));
}

static void describe_caller(FILE *f, const js_policy_caller *c)
{
    char b[96];
    fprintf(f, "caller %s%s (callers[%zu], line %zu)\n", shown_s(b, sizeof(b), c->id),
            c->pattern ? "  [prefix pattern]" : "", c->index, c->line);
    bool validate = c->type == JS_ID_UNIX;
    if (js_policy_caller_frozen(c))
        fprintf(f, "  FROZEN: every request is denied (policy.frozen)\n");
    if (validate)
        fprintf(f, "  %-17s validates pre-built claims (ExternalJWTSigner); adds none\n", "mode:");
    describe_list(f, "keys:", &policy_from(c, F_KEYS)->keys, "(none)", origin(c, F_KEYS));
    fprintf(f, "  %-17s %s%s\n", "default key:", c->default_key,
            validate ? "  (signs every token)" : "");
    describe_list(f, "audiences:", &policy_from(c, F_AUDIENCES)->audiences, "(none)",
                  origin(c, F_AUDIENCES));
    fprintf(f, "  %-17s %" PRId64 "%s\n", "max aud:", policy_from(c, F_MAX_AUD)->max_aud,
            origin(c, F_MAX_AUD));
    if (validate) {
        fprintf(f, "  %-17s max %" PRId64 "s (exp - iat; Metadata reports it)%s\n",
                "lifetime:", policy_from(c, F_MAX_TTL)->max_ttl, origin(c, F_MAX_TTL));
        fprintf(f, "  %-17s none (scope and scp are refused)\n", "scopes:");
    } else {
        fprintf(f, "  %-17s default %" PRId64 "s%s, max %" PRId64 "s%s\n",
                "lifetime:", policy_from(c, F_DEFAULT_TTL)->default_ttl, origin(c, F_DEFAULT_TTL),
                policy_from(c, F_MAX_TTL)->max_ttl, origin(c, F_MAX_TTL));
        describe_scopes(f, c);
    }
    const rules *sr = policy_from(c, F_SUBJECT);
    fprintf(f, "  %-17s %s%s, %s%s\n", "subject:", sr->subject ? sr->subject : "(any string)",
            origin(c, F_SUBJECT),
            policy_from(c, F_SUBJECT_REQUIRED)->subject_required ? "required" : "optional",
            origin(c, F_SUBJECT_REQUIRED));
    if (validate) {
        fprintf(f, "  %-17s refused (pre-built tokens carry none)\n", "cnf:");
    } else {
        fprintf(f, "  %-17s %s%s\n",
                "cnf:", policy_from(c, F_CNF)->cnf_required ? "required" : "optional",
                origin(c, F_CNF));
        describe_list(f, "cnf audiences:", &policy_from(c, F_CNF_AUDIENCES)->cnf_audiences,
                      "(none)", origin(c, F_CNF_AUDIENCES));
    }
    const rules *cr = policy_from(c, F_CLAIMS);
    fprintf(f, "  %-17s%s%s\n", "extra claims:", cr->nclaims ? "" : " (none)", origin(c, F_CLAIMS));
    for (size_t i = 0; i < cr->nclaims; i++) {
        fprintf(f, "    %s: %s", shown_s(b, sizeof(b), cr->claims[i].name),
                policy_claim_type_names[cr->claims[i].type]);
        if (cr->claims[i].max_bytes)
            fprintf(f, ", at most %zu bytes", cr->claims[i].max_bytes);
        fputc('\n', f);
    }
    const json_t *fixed = policy_from(c, F_FIXED_CLAIMS)->fixed;
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
    describe_rate(f, "rate:", policy_from(c, F_RATE)->rate, origin(c, F_RATE));
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
    fprintf(f, "\nintrospectors:");
    if (p->nintrospectors == 0)
        fprintf(f, " (none)");
    for (size_t i = 0; i < p->nintrospectors; i++) {
        const introspector *e = &p->introspectors[i];
        fprintf(f, "\n  %s: ", shown_s(b, sizeof(b), e->id));
        if (e->audiences.n == 0)
            fprintf(f, "any audience");
        for (size_t k = 0; k < e->audiences.n; k++)
            fprintf(f, "%s%s", k ? ", " : "aud ", shown_s(b, sizeof(b), e->audiences.v[k]));
    }
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
