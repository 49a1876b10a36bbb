/*
 * keystate.h - the lifecycle of every named signing key: its versions, their
 * states, the transitions between them on an injected clock, and the atomic
 * state file that carries them across restarts.
 *
 * Pure: no HSM, no gRPC, no clock of its own, no I/O except load/save. The
 * caller generates key pairs in the HSM, decides the labels and kids (RFC 7638
 * thumbprints), and turns the reported events into audit records.
 *
 * States of a version (README, "Key lifecycle"):
 *   next     published in the JWKS, not signing yet (pre-publication, so no
 *            verifier ever sees a kid it has not fetched)
 *   active   signs; at most one per key (none only after the active one was
 *            revoked with no `next` to promote, until the next rotation)
 *   retiring published for verification only, until every token it signed
 *            has expired: unpublish_at = retire_at + lifetime
 *   retired  unpublished
 *   revoked  unpublished at once, never signs again; terminal
 *
 * Lifetimes: lifetime_fn(key) returns the longest token lifetime any caller
 * may get with that key (max_ttl) plus a verification leeway, in seconds. Each
 * version records the highest value sampled while it was active (its
 * `lifetime`), and its unpublish_at is computed from that high-water mark when
 * it stops signing. js_keystate_cap_exp() caps a token to now + lifetime, so a
 * token signed by version V always satisfies exp <= V.unpublish_at: V retires
 * at some time >= now, and the mark never decreases. A token therefore never
 * outlives its key's publication, even when the policy lowers max_ttl between
 * signing and retirement (the mark keeps the old, longer value).
 *
 * Thread-safety: none. The daemon calls this module from its main thread
 * only and publishes immutable snapshots (JWKS, active kid, caps) to workers.
 * The leeway in lifetime_fn must cover the time a worker can still sign from
 * a snapshot taken before a tick retired the version.
 *
 * Ownership: js_keystate_new/js_keystate_load return a state the caller frees
 * with js_keystate_free (NULL is fine). A `const js_keyver *` returned by a
 * query borrows from the state and is valid until the next call that may
 * change it (ensure_initial, rotate, revoke, tick, set_rotation, free).
 */
#ifndef JS_KEYSTATE_H
#define JS_KEYSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "names.h" /* JS_KEY_NAME_MAX, JS_LABEL_MAX */

/* Bounds (bytes exclude the terminating NUL). */
#define JS_KS_LABEL_MAX  JS_LABEL_MAX /* HSM label (names.h); here also without space */
#define JS_KS_ALG_MAX    16           /* "ES256", "EdDSA", ... */
#define JS_KS_KID_MAX    128          /* RFC 7638 SHA-256 thumbprint is 43 */
#define JS_KS_REASON_MAX 256          /* printable ASCII and space */

#define JS_KS_MAX_KEYS      64 /* named keys in one state */
#define JS_KS_MAX_PUBLISHED 16 /* next + active + retiring per key: bounds the JWKS */
#define JS_KS_MAX_VERSIONS  64 /* records per key, including retired and revoked */

/* Retired records are dropped this long after they left the JWKS. */
#define JS_KS_RETIRED_KEEP (7 * 86400)
/* Revoked records are kept at least this long after revocation, so a restart
 * still knows (and refuses) the kid; they are never dropped earlier, even to
 * make room: rotate fails with JS_ELIMIT instead. */
#define JS_KS_REVOKED_KEEP (30 * 86400)

#define JS_KS_MAX_LIFETIME   (31 * 86400)     /* bound on lifetime_fn() */
#define JS_KS_MAX_PERIOD     (3650LL * 86400) /* pre-publication and rotation period */
#define JS_KS_TIME_MAX       253402300799LL   /* 9999-12-31T23:59:59Z */
#define JS_KS_FILE_MAX       (1024 * 1024)    /* state file size limit */
#define JS_KS_FORMAT         "jwt-signer-keystate"
#define JS_KS_FORMAT_VERSION 1

typedef enum js_key_state {
    JS_KS_NONE = 0, /* "from" of an event that created a version */
    JS_KS_NEXT,
    JS_KS_ACTIVE,
    JS_KS_RETIRING,
    JS_KS_RETIRED,
    JS_KS_REVOKED,
    JS_KS_STATE_COUNT
} js_key_state;

/* One version of a named key. Timestamps are Unix seconds; 0 = not (yet) set. */
typedef struct js_keyver {
    uint32_t version; /* 1, 2, 3, ... never reused */
    char label[JS_KS_LABEL_MAX + 1];
    char alg[JS_KS_ALG_MAX + 1];
    char kid[JS_KS_KID_MAX + 1];
    js_key_state state;
    int64_t created;
    int64_t publish_at;   /* entered the JWKS */
    int64_t activate_at;  /* planned while next, actual once active */
    int64_t retire_at;    /* stopped signing */
    int64_t unpublish_at; /* leaves the JWKS: retire_at + lifetime */
    int64_t revoked_at;
    int64_t lifetime; /* high-water mark of lifetime_fn() while active; 0 = not sampled */
    char reason[JS_KS_REASON_MAX + 1]; /* revocation reason */
} js_keyver;

typedef enum js_ks_event_kind {
    JS_KS_EV_TRANSITION,   /* version moved from -> to */
    JS_KS_EV_ROTATION_DUE, /* the active version is older than the rotation period */
    JS_KS_EV_FORGOTTEN,    /* a retired/revoked record was pruned from the state */
} js_ks_event_kind;

typedef struct js_ks_event {
    js_ks_event_kind kind;
    char key[JS_KEY_NAME_MAX + 1];
    uint32_t version;
    char kid[JS_KS_KID_MAX + 1];
    js_key_state from; /* JS_KS_NONE when the version was created */
    js_key_state to;
    int64_t at;
    /* An emergency activation: the version became (or, created by rotate,
     * will at the next tick become) active before its pre-publication period
     * ended, because no version of the key could sign. Verifiers that cache
     * the JWKS may not have fetched its kid yet. */
    bool emergency;
} js_ks_event;

/* Growable list of events; zero-initialise, pass to calls (they append),
 * release with js_ks_events_cleanup. Events are only appended for changes
 * that were made, and the change is never made if the event cannot be. */
typedef struct js_ks_events {
    js_ks_event *ev;
    size_t count;
    size_t cap;
} js_ks_events;

void js_ks_events_cleanup(js_ks_events *events);

/* Longest token lifetime plus leeway for `key`, seconds, 0..JS_KS_MAX_LIFETIME. */
typedef int64_t (*js_ks_lifetime_fn)(const char *key, void *ctx);

typedef struct js_keystate js_keystate;

js_status js_keystate_new(js_keystate **out, js_err *err) JS_WUR;
void js_keystate_free(js_keystate *ks);

/* A missing file is an empty state. A file that is unreadable, larger than
 * JS_KS_FILE_MAX, not the expected JSON, or inconsistent is JS_ECONFIG with a
 * message naming the file and the member ("keys[0].versions[1].state: ...").
 * Temp files left by an interrupted save are never read. */
js_status js_keystate_load(const char *path, js_keystate **out, js_err *err) JS_WUR;

/* Atomic and crash-safe: a new file in the same directory (O_CREAT|O_EXCL,
 * mode 0600), fsync, rename over path, fsync the directory. After a crash the
 * path holds either the old or the new state. */
js_status js_keystate_save(const js_keystate *ks, const char *path, js_err *err) JS_WUR;

/* First start of a configured key: creates version 1 `active` under `label`.
 * Idempotent: a key that already has a history is left as it is (even with no
 * active version left after a revocation). JS_ECONFIG "keystate.kid_mismatch"
 * if version 1 was recorded with a different kid (a different key now sits
 * under that label: the state file and the token disagree). */
js_status js_keystate_ensure_initial(js_keystate *ks, const char *key, const char *label,
                                     const char *alg, const char *kid, int64_t now,
                                     js_ks_events *events, js_err *err) JS_WUR;

/* Adds version N+1 as `next` (published now, activate_at = now + prepublish)
 * and stores its number in *version_out. When the key has no active version
 * (its last one was revoked with no successor), the rotation is an
 * emergency: activate_at = now whatever prepublish says, the event reports
 * emergency, and the next tick makes the version active at once; signing
 * must not wait out a pre-publication period for a key that cannot sign. One rotation at a time:
 * JS_ESTATE "keystate.rotation_pending" if a `next` exists. The kid and label must be new (never
 * seen in the state, revoked ones included). JS_ELIMIT if the key would exceed JS_KS_MAX_PUBLISHED
 * or JS_KS_MAX_VERSIONS (the oldest retired records are dropped first to make room; revoked ones
 * younger than JS_KS_REVOKED_KEEP never are). Promotion happens in js_keystate_tick, also with
 * prepublish 0: call tick right after. */
js_status js_keystate_rotate(js_keystate *ks, const char *key, const char *label, const char *alg,
                             const char *kid, int64_t now, int64_t prepublish,
                             uint32_t *version_out, js_ks_events *events, js_err *err) JS_WUR;

/* Revokes the version of `key` with `kid` at once, from any state. If it was
 * the active one, the newest `next` (already published) becomes active at
 * once (an emergency activation: its event says so); without a `next` the
 * key has no active version and signing with it fails until a rotation,
 * which then activates at once (js_keystate_rotate). Revoking a revoked kid again changes nothing
 * and reports no event (the first reason stays). JS_ENOTFOUND if unknown. */
js_status js_keystate_revoke(js_keystate *ks, const char *key, const char *kid, int64_t now,
                             const char *reason, js_ks_events *events, js_err *err) JS_WUR;

/* Applies what is due at `now`, key by key:
 *   - samples lifetime_fn(key) into the active version's lifetime mark;
 *   - next -> active when activate_at <= now; the previous active becomes
 *     retiring with retire_at = now, unpublish_at = now + its lifetime mark;
 *   - next -> active at once, whatever its activate_at, when no version is
 *     active (an emergency activation, reported in the event): also heals a
 *     state file written before emergency rotations existed;
 *   - retiring -> retired when unpublish_at <= now;
 *   - retired records older than JS_KS_RETIRED_KEEP and revoked ones older
 *     than JS_KS_REVOKED_KEEP are forgotten (JS_KS_EV_FORGOTTEN);
 *   - reports JS_KS_EV_ROTATION_DUE, at every tick until the caller rotates,
 *     when a rotation period is set, the active version has been active that
 *     long and no `next` exists. A key with no active version (revoked) gets
 *     no such event: recovering from a revocation is a human decision.
 * Call it at start-up (before the first signature: it samples the lifetimes),
 * after rotate, after a policy reload and periodically. Fails only if
 * lifetime_fn returns a value out of range, before changing anything. */
js_status js_keystate_tick(js_keystate *ks, int64_t now, js_ks_lifetime_fn lifetime_fn, void *ctx,
                           js_ks_events *events, js_err *err) JS_WUR;

/* Rotation period for `key` in seconds, 0 = none (the default). Persisted. */
js_status js_keystate_set_rotation(js_keystate *ks, const char *key, int64_t period_seconds,
                                   js_err *err) JS_WUR;

/* ---- queries ----------------------------------------------------------------------- */

/* The active version of `key`: JS_ENOTFOUND "keystate.unknown_key", or
 * JS_EUNAVAIL "keystate.no_active" when it was revoked with no successor
 * (the message says that RotateKey makes a new version active at once). */
js_status js_keystate_active(const js_keystate *ks, const char *key, const js_keyver **out,
                             js_err *err) JS_WUR;

/* The number js_keystate_rotate will give `key`'s next version (1 for an
 * unknown key, 0 when no numbers are left). Use it to name the HSM label
 * ("<base>.v<N>") before generating the key: numbers are never reused, even
 * after the records of old versions were forgotten, so the label of a
 * revoked key's HSM object is never taken again. */
uint32_t js_keystate_next_version(const js_keystate *ks, const char *key);

/* The published versions (next, active, retiring) of `key`, oldest first, at
 * most JS_KS_MAX_PUBLISHED: the key's part of the JWKS. */
js_status js_keystate_published(const js_keystate *ks, const char *key,
                                const js_keyver *out[JS_KS_MAX_PUBLISHED], size_t *count,
                                js_err *err) JS_WUR;

/* The version with this kid in any key (NULL if none); *key_out (optional)
 * gets the key's name, borrowed like the version. */
const js_keyver *js_keystate_find_kid(const js_keystate *ks, const char *kid, const char **key_out);

/* Number of versions in each state over all keys (for metrics). */
void js_keystate_counts(const js_keystate *ks, size_t counts[JS_KS_STATE_COUNT]);

/* Iteration for status output: keys in creation order, versions oldest first. */
size_t js_keystate_key_count(const js_keystate *ks);
const char *js_keystate_key_name(const js_keystate *ks, size_t key_index);
int64_t js_keystate_key_rotation(const js_keystate *ks, size_t key_index);
size_t js_keystate_version_count(const js_keystate *ks, size_t key_index);
const js_keyver *js_keystate_version_at(const js_keystate *ks, size_t key_index, size_t i);

/* The latest exp allowed for a token signed at `now` with `version` of `key`
 * that asked for `exp`: min(exp, now + the version's lifetime mark), so the
 * token expires before the version leaves the JWKS (see the top of this
 * file). Only the active version may sign: JS_EDENIED "keystate.not_active"
 * otherwise; JS_EUNAVAIL "keystate.lifetime_unknown" before the first tick
 * sampled its lifetime (fail closed rather than guess). */
js_status js_keystate_cap_exp(const js_keystate *ks, const char *key, uint32_t version, int64_t now,
                              int64_t exp, int64_t *capped, js_err *err) JS_WUR;

/* "next", "active", ... ("none" for JS_KS_NONE, "?" for anything else). */
const char *js_key_state_name(js_key_state st);
/* true and *out set if name is one of the five version states. */
bool js_key_state_parse(const char *name, js_key_state *out);
/* next, active and retiring are in the JWKS. */
bool js_key_state_published(js_key_state st);

#endif
