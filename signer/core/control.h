/*
 * control.h - the signer's control plane: every run-time change (policy
 * reload, incident mode, frozen callers, and key rotation/revocation) goes
 * through here, whether it comes from a signal or from the Admin API.
 *
 * One mutex serialises changes (they are rare; the request path never takes
 * it). Each change is published to the workers as a new snapshot, written to
 * the audit log with who asked for it, and the run-time part (incident mode,
 * frozen callers) is persisted atomically to STATE_DIR/runtime.json, so a
 * restart does not silently end an incident or unfreeze a compromised caller.
 */
#ifndef JS_CONTROL_H
#define JS_CONTROL_H

#include <stdbool.h>
#include <stdint.h>

#include "auditlog.h"
#include "checkpoint.h"
#include "config.h"
#include "decision.h"
#include "err.h"
#include "frozen.h"
#include "keyring.h"
#include "keystate.h"
#include "tokindex.h"
#include "metrics.h"
#include "policy_store.h"
#include "ratelimit.h"
#include "service.h"
#include "snapshot.h"

/*
 * Statuses: a change the request asks for wrongly is JS_EINVAL/JS_ENOTFOUND;
 * one the current state or the files on disk do not allow (a policy file
 * that does not load, a key the HSM cannot make) is JS_ESTATE
 * (FAILED_PRECONDITION): JS_ECONFIG is for start-up only, and no run-time
 * change returns it. An HSM or disk failure is JS_EUNAVAIL.
 */
typedef struct js_control js_control;

typedef struct js_control_deps {
    const js_config *cfg;
    js_service *svc;
    js_ratelimit *rl;
    js_policy_store *policies;
    js_snapshot_store *frozen; /* of js_frozen */
    js_audit *audit;
    const char *state_dir;   /* created 0700 if absent */
    js_keyvault *vault;      /* HSM key objects (main thread's session) */
    js_snapshot_store *keys; /* of js_keyring, published after every key change */
    int64_t prepublish;      /* seconds a new version is published before it signs */
    int64_t leeway;          /* seconds added to max_ttl before a version is unpublished */
    js_metrics *metrics;     /* per-caller counters for GetStatus; may be NULL */
    js_tokindex *index;      /* issued tokens and revocations; NULL = introspection off */
    /* Audit key rotation (Admin/RotateAuditKey), done by the daemon, which
     * owns the HSM sessions and the audit signer: label gets the new HSM
     * label (JS_CONTROL_AUDIT_LABEL_MAX), key_id its FORMAT.md §5.4 id.
     * NULL = not available (JS_ESTATE). */
    js_status (*rotate_audit)(void *ctx, const char *by, char *label, char *key_id, js_err *err);
    void *rotate_audit_ctx;
} js_control_deps;

#define JS_CONTROL_AUDIT_LABEL_MAX 96

/* Loads STATE_DIR/runtime.json (absent = nothing frozen, incident off),
 * publishes the frozen set, and applies the saved incident mode on top of
 * the policy's. Loads STATE_DIR/keys.json, makes version 1 of every
 * configured key active on first start, applies due transitions and
 * publishes the first keyring. Borrows everything in deps. */
js_status js_control_new(const js_control_deps *deps, js_control **out, js_err *err) JS_WUR;
void js_control_free(js_control *ctl);

/* `by` names who asked: "SIGHUP", "SIGUSR1", or the admin's identity. */
js_status js_control_reload_policy(js_control *ctl, const char *by, char sha256[65],
                                   js_err *err) JS_WUR;
js_status js_control_set_incident(js_control *ctl, bool on, const char *by, const char *reason,
                                  js_err *err) JS_WUR;
bool js_control_incident(js_control *ctl);
js_status js_control_freeze(js_control *ctl, const char *identity, bool freeze, const char *by,
                            const char *reason, js_err *err) JS_WUR;

/* Applies due key transitions (pre-published versions becoming active,
 * retiring ones leaving the JWKS, automatic rotations); the main thread
 * calls it about once a second. */
void js_control_tick(js_control *ctl);

/* Key versions by state, for metrics (index: js_key_state). */
void js_control_key_counts(js_control *ctl, size_t counts[JS_KS_STATE_COUNT]);

/* Admin request text fields (key, kid, identity, reason): at most max bytes
 * of UTF-8 without control characters; empty only when !required. JS_EINVAL
 * "request.<what>" otherwise. Checked before anything is acted on or audited. */
js_status js_admin_text(const char *what, const char *s, size_t max, bool required,
                        js_err *err) JS_WUR;
#define JS_ADMIN_REASON_MAX 512

/* An audit record of an administrative action, built from the call's one
 * decision (decision.h): durable when allowed (the change is on disk before
 * the reply), queued when refused or failed. Steals detail (may be NULL). */
void js_control_audit_admin(js_control *ctl, const char *admin, const char *action,
                            const js_decision *d, json_t *detail);

/* What RotateKey did. */
typedef struct js_rotate_result {
    uint32_t version;
    char kid[JS_KS_KID_MAX + 1];
    int64_t activate_at;
    bool emergency; /* no version was active: the new one signs at once */
} js_rotate_result;

/* What RevokeKey did. */
typedef struct js_revoke_result {
    int64_t revoked_at;
    char active_kid[JS_KS_KID_MAX + 1]; /* "" = no version of the key is active now */
    bool emergency;
} js_revoke_result;

/*
 * RotateKey: a new version of `key` (pre-published, or active at once when
 * no version is active: an emergency rotation). RevokeKey: version `kid` of
 * `key` is revoked at once. `by` is the administrator. The text fields are
 * checked (js_admin_text) before anything is acted on; the facts for the
 * audit record go into detail.
 */
js_status js_control_rotate_key(js_control *ctl, const char *key, const char *reason,
                                const char *by, js_rotate_result *out, json_t *detail,
                                js_err *err) JS_WUR;
js_status js_control_revoke_key(js_control *ctl, const char *key, const char *kid,
                                const char *reason, const char *by, js_revoke_result *out,
                                json_t *detail, js_err *err) JS_WUR;

/* RotateAuditKey: rotates the audit key through deps.rotate_audit
 * (serialised with the other changes); label gets the new HSM label, key_id
 * its FORMAT.md §5.4 id; facts go into detail. */
js_status js_control_rotate_audit_key(js_control *ctl, const char *reason, const char *by,
                                      char label[JS_CONTROL_AUDIT_LABEL_MAX + 1],
                                      char key_id[JS_AUDIT_KEY_ID_LEN + 1], json_t *detail,
                                      js_err *err) JS_WUR;

/* RevokeToken (issue 13, tokindex.h): exactly one of jti, sub, caller. */
typedef struct js_token_revoke {
    const char *jti;    /* one token */
    const char *sub;    /* every token of this subject issued until now */
    const char *caller; /* every token of this caller (typed identity) issued until now */
    const char *reason;
} js_token_revoke;

typedef struct js_token_revoked {
    int64_t cutoff;     /* sub/caller: tokens with iat <= cutoff are revoked; 0 for a jti */
    int64_t until;      /* when the revocation can be forgotten: no token it covers lives longer */
    uint64_t audit_seq; /* the durable "revoke" record */
} js_token_revoked;

/*
 * Revokes tokens for introspection: the "revoke" audit record (FORMAT.md
 * §3.x: detail what/value/cutoff/until/reason, caller = by) is durable
 * first, then the index applies it (effective for the next lookup). The
 * request is checked first (request.jti, request.sub, request.identity,
 * request.reason, request.malformed). JS_ESTATE introspect.disabled when the
 * configuration has no introspection section (no index to revoke in).
 */
js_status js_control_revoke_token(js_control *ctl, const char *by, const js_token_revoke *req,
                                  js_token_revoked *out, js_err *err) JS_WUR;

/* The longest any token issued now can live: the longest max_ttl of any
 * key's callers plus the key leeway (seconds; tokindex.h horizon). */
int64_t js_control_token_horizon(js_control *ctl);

/* Incident mode, frozen callers, policy hash, per-caller limits: malloc'd JSON. */
char *js_control_status_json(js_control *ctl);

#endif
