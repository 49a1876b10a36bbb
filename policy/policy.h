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
 * Two modes, chosen by the caller's identity type (identity.h):
 *  - build (every mTLS identity): the caller sends some claims, the policy
 *    checks them and adds the server's and the fixed ones
 *    (js_policy_evaluate);
 *  - validate (a `unix:uid=N` caller: kube-apiserver on the ExternalJWTSigner
 *    socket): the claim set is pre-built and signed as is, so the policy
 *    only checks it (js_policy_validate). At load such an entry must have no
 *    effective fixed_claims, no cnf requirement and a max_ttl of at least
 *    JS_POLICY_KUBE_MIN_MAX_TTL, and `admins` and `introspectors` may not
 *    name a unix: identity.
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
#include "identity.h"

typedef struct js_policy js_policy;
typedef struct js_policy_caller js_policy_caller;

#define JS_POLICY_HASH_HEX 64

/* The shortest max_ttl a unix: (Kubernetes) caller may have: kube-apiserver
 * requires MetadataResponse.max_token_expiration_seconds >= 600
 * (k8s.io/externaljwt), and Metadata reports the caller's max_ttl. */
#define JS_POLICY_KUBE_MIN_MAX_TTL 600
/* The longest jti of a pre-built claim set (js_policy_validate). */
#define JS_POLICY_JTI_MAX 128

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

/*
 * Whether identity (typed text, identity.h; exact match, no patterns) is in
 * top-level `introspectors`: who may ask the token status endpoint about a
 * token (RFC 7662). On true, *auds and *naud (either may be NULL) get the
 * audiences the entry is limited to, borrowed from the policy: *naud 0 means
 * any token; otherwise only a token whose aud includes one of them may be
 * reported active. false: not an introspector (*auds NULL, *naud 0). A unix:
 * identity is never one (introspection is served over mTLS only).
 */
bool js_policy_introspector(const js_policy *p, const char *identity, const char *const **auds,
                            size_t *naud);

/* Every key name any caller may use (for the signer to check against its keys). */
size_t js_policy_key_count(const js_policy *p);
const char *js_policy_key_at(const js_policy *p, size_t i);

/* The longest max_ttl of any caller allowed to use `key` (seconds; 0 if none):
 * how long a version of that key must stay published after it stops signing. */
int64_t js_policy_key_max_ttl(const js_policy *p, const char *key);

/* The caller entries in file order, for checks over all of them (e.g. that
 * every key a unix: caller may use has an algorithm kube-apiserver accepts,
 * at start and on every reload). i >= count: NULL. */
size_t js_policy_caller_count(const js_policy *p);
const js_policy_caller *js_policy_caller_at(const js_policy *p, size_t i);

/* The caller entry for identity (typed text, identity.h): exact match first,
 * else, for a URI identity only, the longest matching prefix pattern (an id
 * ending in "/" and "*", e.g. spiffe://example.org/ns/payments/ followed by
 * "*"). A dns:, cn: or unix: identity matches only an entry that names it
 * exactly, so a CN or DNS SAN can never pass for a URI entry. NULL: no match.
 * At load, callers[].id and admins must be typed (identity_parse()): a bare
 * name such as `login.example` is refused with how to write it now. */
const js_policy_caller *js_policy_match(const js_policy *p, const char *identity);

const char *js_policy_caller_id(const js_policy_caller *c); /* the entry's identity or pattern */
bool js_policy_caller_frozen(const js_policy_caller *c);
/* The type of the entry's id (identity.h); JS_ID_UNIX means validate mode
 * (js_policy_validate). A prefix pattern is JS_ID_URI. NULL: JS_ID_URI. */
js_identity_type js_policy_caller_type(const js_policy_caller *c);
/* The caller's effective max_ttl in seconds (defaults applied); for a unix:
 * caller, what Metadata reports (>= JS_POLICY_KUBE_MIN_MAX_TTL). NULL: 0. */
int64_t js_policy_caller_max_ttl(const js_policy_caller *c);
/* The caller's effective default key (borrowed from the policy; NULL for
 * NULL): the key a request that names none, and every validate-mode
 * request, is signed with. */
const char *js_policy_caller_default_key(const js_policy_caller *c);
/* The caller's effective keys (defaults applied), in file order, borrowed.
 * i >= count: NULL. */
size_t js_policy_caller_key_count(const js_policy_caller *c);
const char *js_policy_caller_key_at(const js_policy_caller *c, size_t i);

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
 *   policy.subject; policy.scope; claims.cnf (INVALID: a cnf that is not
 *   one x5t#S256 or jkt member with a 43-character base64url SHA-256,
 *   claims.h) and policy.cnf (DENIED: no cnf, and the caller's `cnf:
 *   required`, or an aud in its `cnf_audiences`, requires one);
 *   policy.fixed_claim (DENIED: the caller sent a fixed claim); policy.claim.
 *   A valid cnf goes into the token as sent. The rule reasons are INVALID for malformed
 *   input and DENIED for a well-formed request for too much. A policy without
 *   issuer gives JS_EINTERNAL policy.no_issuer.
 */
js_status js_policy_evaluate(const js_policy *p, const js_policy_caller *c, const json_t *claims,
                             const char *requested_key, const char *jti, int64_t now,
                             js_policy_window_fn window, void *window_ctx, js_policy_result *out,
                             js_err *err) JS_WUR;
void js_policy_result_clear(js_policy_result *r);

/* What a validated pre-built claim set is signed with; pointers borrowed
 * (key_name from the policy, jti and sub from the claim set: valid while
 * both live). */
typedef struct js_policy_validated {
    const char *key_name; /* the caller's default key */
    int64_t iat;
    int64_t exp;
    const char *jti;
    const char *sub; /* NULL when the claim set has none */
} js_policy_validated;

/*
 * Validate mode (ExternalJWTSigner Sign): checks a pre-built claim set
 * (claims_parse() output; not modified) of the unix: caller `c` of policy
 * `p` at time now, allowing `leeway` seconds (>= 0) of clock skew for iat
 * and nbf. The signer adds and changes nothing, so every rule is a check.
 * window (optional) gives the lifetime window of the caller's default key
 * in seconds (0 = none), as for js_policy_evaluate; here a token beyond it
 * is refused, not shortened. On JS_OK *out is filled; otherwise err names
 * the rule and *out is zeroed.
 *
 * Checks run in this order; the first failure is reported (reason codes):
 *   policy.frozen (DENIED); policy.no_issuer (INTERNAL: no issuer in the
 *   policy); policy.token_issuer (DENIED: iss missing, not a string, or not
 *   byte for byte the policy's issuer); claims.exp_type (INVALID: exp missing
 *   or not an integer NumericDate); claims.exp_past (INVALID: exp <= now);
 *   claims.iat (INVALID: missing, not an integer, or after now + leeway);
 *   claims.nbf (INVALID: present and not an integer or after iat + leeway);
 *   claims.jti (INVALID: missing, or not 1..JS_POLICY_JTI_MAX printable
 *   ASCII characters without space); policy.lifetime (DENIED: exp - iat over
 *   max_ttl, or exp beyond now + window); policy.audience and policy.subject
 *   (the same rules as js_policy_evaluate); policy.claim (DENIED: scope,
 *   scp or cnf, which pre-built Kubernetes tokens never carry, or any other member
 *   but iss/sub/aud/exp/iat/nbf/jti not on the caller's `claims` allowlist;
 *   INVALID or DENIED for its type and max_bytes as in evaluate).
 * A caller entry that is not a unix: identity, or missing arguments, is
 * JS_EINTERNAL policy.internal (build-mode callers never get validate mode);
 * claims that are not an object, JS_EINVAL claims.not_object; both before
 * policy.frozen.
 */
js_status js_policy_validate(const js_policy *p, const js_policy_caller *c, const json_t *claims,
                             int64_t now, int64_t leeway, js_policy_window_fn window,
                             void *window_ctx, js_policy_validated *out, js_err *err) JS_WUR;

/* Writes the effective rules of every caller (defaults applied) as text, for
 * `jwt-signerd check-policy`. Returns a malloc'd string. */
char *js_policy_describe(const js_policy *p);

#endif
