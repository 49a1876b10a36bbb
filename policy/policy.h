/*
 * policy.h - per-caller signing policy: a pure decision library.
 *
 * No gRPC, no HSM, no threads, no locks and no I/O on the request path:
 * js_policy_load() reads a YAML file once through the bounded reader
 * (statefile.h) and validates it (libyaml via yamldoc), and the result is an
 * immutable js_policy that any number of threads evaluate concurrently. The
 * signer swaps a whole new js_policy in on reload; it never mutates one.
 *
 * Evaluation order (the signer's): identity -> js_policy_match() -> frozen?
 * -> rate limit (signer/core/ratelimit.h) -> parse claims ->
 * js_policy_evaluate() -> sign.
 *
 * Status rule: malformed input is JS_EINVAL; a well-formed request for more
 * than this caller may have is JS_EDENIED. Every deny has a stable reason code
 * ("policy.audience", ...) and a message naming the rule and offending value.
 */
#ifndef JS_POLICY_H
#define JS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "claims.h"
#include "err.h"

typedef struct js_policy js_policy;
typedef struct js_policy_caller js_policy_caller;

#define JS_POLICY_HASH_HEX 64

/* Loads and fully validates a policy file. Errors are JS_ECONFIG with
 * "FILE:LINE: key.path: problem"; a file that cannot be read (missing, not a
 * regular file, a symlink, larger than JS_YAML_MAX_BYTES) is JS_ECONFIG
 * policy.io. The file's SHA-256 is kept (hash_hex). */
js_status js_policy_load(const char *path, js_policy **out, js_err *err) JS_WUR;
/* The same from memory; `name` stands for the file name in messages. */
js_status js_policy_load_buffer(const char *text, size_t len, const char *name, js_policy **out,
                                js_err *err) JS_WUR;
void js_policy_free(js_policy *p);

/* Hex SHA-256 of the policy file's bytes (recorded in audit records). */
const char *js_policy_hash_hex(const js_policy *p);
/* `incident: true` at top level. */
bool js_policy_incident(const js_policy *p);
/* Top-level `issuer`, or NULL when the file does not set one. */
const char *js_policy_issuer(const js_policy *p);
/* Whether identity is listed in top-level `admins` (exact match of the typed
 * identity text of identity.h: a URI, dns:NAME or cn:NAME). */
bool js_policy_is_admin(const js_policy *p, const char *identity);

/* Every key name any caller may use (for the signer to check against its keys). */
size_t js_policy_key_count(const js_policy *p);
const char *js_policy_key_at(const js_policy *p, size_t i);

/* The longest max_ttl of any caller allowed to use `key` (seconds; 0 if none):
 * how long a version of that key must stay published after it stops signing. */
int64_t js_policy_key_max_ttl(const js_policy *p, const char *key);

/* The caller entry for identity (typed text, identity.h): exact match first,
 * else, for a URI identity only, the longest matching prefix pattern (an id
 * ending in "/" and "*", e.g. spiffe://example.org/ns/payments/ followed by
 * "*"). A dns: or cn: identity matches only an entry that names it exactly, so
 * a CN or DNS SAN can never pass for a URI entry. NULL: no match.
 * At load, callers[].id and admins must be typed (identity_parse()): a bare
 * name such as `login.example` is refused with how to write it now. */
const js_policy_caller *js_policy_match(const js_policy *p, const char *identity);

const char *js_policy_caller_id(const js_policy_caller *c); /* the entry's identity or pattern */
bool js_policy_caller_frozen(const js_policy_caller *c);

/* Token-bucket parameters; per_second == 0 means unlimited. */
typedef struct js_rate {
    double per_second;
    double burst;
} js_rate;
js_rate js_policy_caller_rate(const js_policy_caller *c);
js_rate js_policy_caller_incident_rate(const js_policy_caller *c);

/* What an allowed request gets. Owned by the caller: js_policy_result_clear(). */
typedef struct js_policy_result {
    json_t *claims;       /* the final claim set: caller claims + fixed claims + iss/iat/exp/jti */
    const char *key_name; /* borrowed from the policy */
    int64_t exp;
    char *scopes; /* granted scopes, space-separated ("" if none), malloc'd */
} js_policy_result;

/* The lifetime window, in seconds, of the key named key_name (0 = none). */
typedef int64_t (*js_policy_window_fn)(const char *key_name, void *ctx);

/*
 * Evaluates a parsed claim set (claims_parse() output; not modified) for the
 * matched caller `c` of policy `p`, with the requested key name ("" = the
 * caller's default), the server-assigned jti and the time now. On JS_OK *out
 * holds the final claim set; otherwise err names the rule (JS_EINVAL or
 * JS_EDENIED) and *out is empty.
 *
 * window (optional) gives the lifetime window of the key the policy chose,
 * in seconds (0 = none): exp is set once, to the caller's rule capped to
 * now + window (claims.h), so the claim set is final when this returns.
 *
 * Checks run in this order; the first failure is reported (reason codes):
 *   policy.frozen (DENIED); policy.key (DENIED); claims_apply_server's
 *   claims.reserved / claims.exp_type / claims.exp_past (INVALID) and
 *   policy.lifetime (DENIED, exp beyond max_ttl); policy.audience;
 *   policy.subject; policy.scope; policy.fixed_claim (DENIED: the caller sent
 *   a fixed claim); policy.claim. The rule reasons are INVALID for malformed
 *   input and DENIED for a well-formed request for too much. A policy without
 *   issuer gives JS_EINTERNAL policy.no_issuer.
 */
js_status js_policy_evaluate(const js_policy *p, const js_policy_caller *c, const json_t *claims,
                             const char *requested_key, const char *jti, int64_t now,
                             js_policy_window_fn window, void *window_ctx, js_policy_result *out,
                             js_err *err) JS_WUR;
void js_policy_result_clear(js_policy_result *r);

/* Writes the effective rules of every caller (defaults applied) as text, for
 * `jwt-signerd check-policy`. Returns a malloc'd string. */
char *js_policy_describe(const js_policy *p);

#endif
