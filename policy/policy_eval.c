/*
 * policy_eval.c - decides one signing request for a matched caller entry
 * (js_policy_evaluate, policy.h): frozen, key, lifetime, audience, subject,
 * scopes, cnf, the claims allowlist, then the fixed claims, in that order, the
 * first failure reported. Validate mode (js_policy_validate, for a unix:
 * caller's pre-built claim set) runs the same audience, subject and
 * allowlist rules, after its own checks of iss, exp, iat, nbf, jti and the
 * lifetime.
 *
 * Pure: no I/O, no locks of its own, no mutation of the policy; the claim set
 * the caller sent is copied and never modified, so any number of threads
 * evaluate one js_policy at once. (glibc's regexec() does take a lock inside
 * the compiled regex_t, so requests matched against the same subject rule at
 * the same moment are serialised there, briefly.)
 */
#include "policy_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

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
    const strlist *allowed = &policy_from(c, F_AUDIENCES)->audiences;
    int64_t max_aud = policy_from(c, F_MAX_AUD)->max_aud;
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
    const rules *sr = policy_from(c, F_SUBJECT);
    shown_s(cid, sizeof(cid), c->id);
    if (sub == NULL) {
        JS_ENSURE(!policy_from(c, F_SUBJECT_REQUIRED)->subject_required, err, JS_EINVAL,
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
    scope_claim sc = policy_from(c, F_SCOPE_CLAIM)->scope_claim;
    const strlist *ceiling = &policy_from(c, F_SCOPES)->scopes;
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

/*
 * RFC 7800 §3.1 confirmation: a cnf the caller sends must have the shape of
 * claims_cnf_check (INVALID claims.cnf); a caller whose rule requires one --
 * `cnf: required`, or an aud (already checked by check_audience) in its
 * cnf_audiences -- and sent none is DENIED policy.cnf. The claim goes into
 * the token as sent: the issuing service saw the end client's certificate
 * (RFC 8705) or DPoP key (RFC 9449); the signer cannot, so it checks the
 * shape only.
 */
static js_status check_cnf(const js_policy_caller *c, const json_t *claims, js_err *err)
{
    char b[96], cid[96];
    const json_t *cnf = json_object_get(claims, "cnf");
    if (cnf != NULL)
        return claims_cnf_check(cnf, err);
    shown_s(cid, sizeof(cid), c->id);
    JS_ENSURE(!policy_from(c, F_CNF)->cnf_required, err, JS_EDENIED, JS_R_POLICY_CNF,
              "cnf: caller '%s' must send a cnf claim (x5t#S256 or jkt; cnf: required)", cid);
    const strlist *ca = &policy_from(c, F_CNF_AUDIENCES)->cnf_audiences;
    const json_t *aud = json_object_get(claims, "aud");
    size_t n = json_is_array(aud) ? json_array_size(aud) : 1;
    for (size_t i = 0; i < n && ca->n > 0; i++) {
        const json_t *a = json_is_array(aud) ? json_array_get(aud, i) : aud;
        JS_ENSURE(!json_is_string(a) || !aud_allowed(ca, a), err, JS_EDENIED, JS_R_POLICY_CNF,
                  "cnf_audiences: tokens for aud '%s' must carry a cnf claim (x5t#S256 or jkt) "
                  "for caller '%s'",
                  shown_n(b, sizeof(b), json_string_value(a), json_string_length(a)), cid);
    }
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
    const rules *cr = policy_from(c, F_CLAIMS);
    const json_t *fixed = policy_from(c, F_FIXED_CLAIMS)->fixed;
    shown_s(cid, sizeof(cid), c->id);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)claims, name, v)
    {
        if (policy_registered_claim(name))
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
                  policy_claim_type_names[rule->type], json_type_name(v));
        if (rule->max_bytes > 0) {
            size_t size = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
            JS_ENSURE(size <= rule->max_bytes, err, JS_EDENIED, JS_R_POLICY_CLAIM,
                      "claims: claim '%s' encodes to %zu bytes; caller '%s' may send at most %zu",
                      shown_s(b, sizeof(b), name), size, cid, rule->max_bytes);
        }
    }
    return JS_OK;
}

/* ---- validate mode ------------------------------------------------------------------ */

/* Member name is an integer NumericDate (RFC 7519 §2; integers only, as
 * claims_apply_server requires of exp, so every verifier reads one instant). */
static bool numeric_date(const json_t *claims, const char *name, int64_t *out)
{
    const json_t *v = json_object_get(claims, name);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* RFC 7519 §4.1.1: the issuer, compared byte for byte (no normalisation). */
static js_status check_token_issuer(const js_policy *p, const json_t *claims, js_err *err)
{
    char b[96], want[96];
    const json_t *iss = json_object_get(claims, "iss");
    shown_s(want, sizeof(want), p->issuer);
    JS_ENSURE(iss != NULL, err, JS_EDENIED, JS_R_POLICY_TOKEN_ISSUER,
              "issuer: the claim set has no iss; it must be '%s'", want);
    JS_ENSURE(json_is_string(iss), err, JS_EDENIED, JS_R_POLICY_TOKEN_ISSUER,
              "issuer: iss must be the string '%s', not %s", want, json_type_name(iss));
    const char *v = json_string_value(iss);
    size_t n = json_string_length(iss);
    JS_ENSURE(n == strlen(p->issuer) && memcmp(v, p->issuer, n) == 0, err, JS_EDENIED,
              JS_R_POLICY_TOKEN_ISSUER, "issuer: iss '%s' is not the policy's issuer '%s'",
              shown_n(b, sizeof(b), v, n), want);
    return JS_OK;
}

/* The registered time claims and jti of a pre-built claim set, checked and
 * read into out (iat, exp, jti). */
static js_status check_token_times(const js_policy_caller *c, const json_t *claims, int64_t now,
                                   int64_t leeway, js_policy_window_fn window_fn, void *window_ctx,
                                   js_policy_validated *out, js_err *err)
{
    char b[96], cid[96];
    int64_t exp, iat, nbf;
    shown_s(cid, sizeof(cid), c->id);
    JS_ENSURE(numeric_date(claims, "exp", &exp), err, JS_EINVAL, JS_R_CLAIMS_EXP_TYPE,
              "exp must be present and an integer NumericDate (seconds since the epoch)");
    JS_ENSURE(exp > now, err, JS_EINVAL, JS_R_CLAIMS_EXP_PAST,
              "exp %" PRId64 " is not in the future (now %" PRId64 ")", exp, now);
    JS_ENSURE(numeric_date(claims, "iat", &iat), err, JS_EINVAL, JS_R_CLAIMS_IAT,
              "iat must be present and an integer NumericDate (seconds since the epoch)");
    JS_ENSURE(iat <= now + leeway, err, JS_EINVAL, JS_R_CLAIMS_IAT,
              "iat %" PRId64 " is in the future (now %" PRId64 ", leeway %" PRId64 " s)", iat, now,
              leeway);
    /* A token that expires before it was issued is malformed, and exp - iat
     * below would pass any max_ttl. */
    JS_ENSURE(iat < exp, err, JS_EINVAL, JS_R_CLAIMS_IAT,
              "iat %" PRId64 " is not before exp %" PRId64, iat, exp);
    if (json_object_get(claims, "nbf") != NULL) {
        JS_ENSURE(numeric_date(claims, "nbf", &nbf), err, JS_EINVAL, JS_R_CLAIMS_NBF,
                  "nbf must be an integer NumericDate (seconds since the epoch)");
        /* iat <= now + leeway, so iat + leeway cannot overflow. */
        JS_ENSURE(nbf <= iat + leeway, err, JS_EINVAL, JS_R_CLAIMS_NBF,
                  "nbf %" PRId64 " is later than iat %" PRId64 " plus the leeway of %" PRId64 " s",
                  nbf, iat, leeway);
    }
    const json_t *jti = json_object_get(claims, "jti");
    JS_ENSURE(json_is_string(jti), err, JS_EINVAL, JS_R_CLAIMS_JTI,
              "jti must be present and a string, not %s", json_type_name(jti));
    const char *j = json_string_value(jti);
    size_t jlen = json_string_length(jti);
    JS_ENSURE(jlen >= 1 && jlen <= JS_POLICY_JTI_MAX, err, JS_EINVAL, JS_R_CLAIMS_JTI,
              "jti is %zu bytes; it must be 1..%d printable ASCII characters", jlen,
              JS_POLICY_JTI_MAX);
    for (size_t i = 0; i < jlen; i++)
        JS_ENSURE((unsigned char)j[i] >= 0x21 && (unsigned char)j[i] <= 0x7e, err, JS_EINVAL,
                  JS_R_CLAIMS_JTI,
                  "jti '%s' has a character that is not printable ASCII (0x21..0x7e) at offset "
                  "%zu",
                  shown_n(b, sizeof(b), j, jlen), i);

    /* An iat far in the past (INT64_MIN) would overflow exp - iat: such a
     * token lives longer than any max_ttl. */
    int64_t max_ttl = policy_from(c, F_MAX_TTL)->max_ttl, life;
    if (__builtin_sub_overflow(exp, iat, &life))
        life = INT64_MAX;
    JS_ENSURE(life <= max_ttl, err, JS_EDENIED, JS_R_POLICY_LIFETIME,
              "max_ttl of caller '%s': the token asks for a lifetime (exp - iat) of %" PRId64
              " s; max_ttl is %" PRId64 " s",
              cid, life, max_ttl);
    /* A token never outlives its key version's publication (claims.h
     * claims_lifetime.window); a pre-built token cannot be shortened. */
    int64_t window = window_fn != NULL ? window_fn(c->default_key, window_ctx) : 0;
    JS_ENSURE(window <= 0 || exp <= now + window, err, JS_EDENIED, JS_R_POLICY_LIFETIME,
              "exp %" PRId64 " is beyond the publication window of the signing key version of "
              "'%s' (%" PRId64 " s from now, latest exp %" PRId64 ")",
              exp, c->default_key, window, now + window);
    out->iat = iat;
    out->exp = exp;
    out->jti = j;
    return JS_OK;
}

js_status js_policy_validate(const js_policy *p, const js_policy_caller *c, const json_t *claims,
                             int64_t now, int64_t leeway, js_policy_window_fn window,
                             void *window_ctx, js_policy_validated *out, js_err *err)
{
    char cid[96];
    JS_ENSURE(out != NULL, err, JS_EINTERNAL, JS_R_POLICY_INTERNAL, "no result storage");
    memset(out, 0, sizeof(*out));
    JS_ENSURE(p != NULL && c != NULL && leeway >= 0, err, JS_EINTERNAL, JS_R_POLICY_INTERNAL,
              "validate needs a policy, a caller entry and a leeway >= 0");
    shown_s(cid, sizeof(cid), c->id);
    /* Only a unix: caller's claim sets are pre-built; a build-mode caller
     * would lose its fixed claims and server-set iat/jti here. */
    JS_ENSURE(c->type == JS_ID_UNIX, err, JS_EINTERNAL, JS_R_POLICY_INTERNAL,
              "validate mode is for unix: callers only, not '%s'", cid);
    JS_ENSURE(json_is_object(claims), err, JS_EINVAL, JS_R_CLAIMS_NOT_OBJECT,
              "the claim set must be a JSON object");
    JS_ENSURE(!js_policy_caller_frozen(c), err, JS_EDENIED, JS_R_POLICY_FROZEN,
              "frozen: caller entry '%s' is frozen", cid);
    JS_ENSURE(p->issuer != NULL, err, JS_EINTERNAL, JS_R_POLICY_NO_ISSUER,
              "the policy does not set issuer");

    js_policy_validated v = {.key_name = c->default_key};
    JS_GUARD(check_token_issuer(p, claims, err));
    JS_GUARD(check_token_times(c, claims, now, leeway, window, window_ctx, &v, err));
    JS_GUARD(check_audience(c, claims, err));
    JS_GUARD(check_subject(c, claims, err));
    /* Scopes are the build mode's (check_scope); kube-apiserver's tokens carry none. */
    static const char *const k_scope_claims[] = {"scope", "scp"};
    for (size_t i = 0; i < COUNT(k_scope_claims); i++)
        JS_ENSURE(json_object_get(claims, k_scope_claims[i]) == NULL, err, JS_EDENIED,
                  JS_R_POLICY_CLAIM,
                  "claims: claim '%s' is refused for caller '%s': pre-built Kubernetes tokens "
                  "carry no scopes",
                  k_scope_claims[i], cid);
    /* cnf binds a token to a client the issuing service saw (RFC 7800);
     * kube-apiserver's tokens carry none, and one here would be a claim the
     * signer cannot vouch for. */
    JS_ENSURE(json_object_get(claims, "cnf") == NULL, err, JS_EDENIED, JS_R_POLICY_CLAIM,
              "claims: claim 'cnf' is refused for caller '%s': pre-built Kubernetes tokens carry "
              "no confirmation claim",
              cid);
    JS_GUARD(check_claims(c, claims, err));
    v.sub = json_string_value(json_object_get(claims, "sub"));
    *out = v;
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
                             js_policy_window_fn window, void *window_ctx, js_policy_result *out,
                             js_err *err)
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
        const strlist *keys = &policy_from(c, F_KEYS)->keys;
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
    claims_lifetime life = {policy_from(c, F_DEFAULT_TTL)->default_ttl,
                            policy_from(c, F_MAX_TTL)->max_ttl,
                            window != NULL ? window(key, window_ctx) : 0};
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
        st = check_cnf(c, claims, err);
    if (st == JS_OK)
        st = check_claims(c, claims, err);

    /* 4. fixed claims, which the caller could not send (checked above) */
    const json_t *fixed = policy_from(c, F_FIXED_CLAIMS)->fixed;
    if (st == JS_OK && fixed != NULL && json_object_update(copy, (json_t *)fixed) != 0)
        st = js_err_oom(err);
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
