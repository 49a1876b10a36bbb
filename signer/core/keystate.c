/*
 * keystate.c - versions and states of the named signing keys, their
 * transitions on an injected clock, and the atomic JSON state file.
 * See keystate.h for the model and the guarantees.
 */
#include "keystate.h"
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

typedef struct ks_key {
    char name[JS_KEY_NAME_MAX + 1];
    /* The kid of version 1, kept after that record is pruned so that a
     * restart can still tell whether the token holds the same key. */
    char initial_kid[JS_KS_KID_MAX + 1];
    /* Highest version number ever given: numbers (and so HSM labels) are
     * never reused, even after old records were pruned. */
    uint32_t last_version;
    int64_t rotation_period;
    js_keyver *v; /* oldest first */
    size_t n;
    size_t cap;
} ks_key;

struct js_keystate {
    ks_key *keys;
    size_t n;
    size_t cap;
};

/* ---- names and small helpers ---------------------------------------------------------- */

static const char *const k_state_names[JS_KS_STATE_COUNT] = {"none",     "next",    "active",
                                                             "retiring", "retired", "revoked"};

const char *js_key_state_name(js_key_state st)
{
    if ((int)st < 0 || st >= JS_KS_STATE_COUNT)
        return "?";
    return k_state_names[st];
}

bool js_key_state_parse(const char *name, js_key_state *out)
{
    for (int i = JS_KS_NEXT; i < JS_KS_STATE_COUNT; i++) {
        if (strcmp(name, k_state_names[i]) == 0) {
            *out = (js_key_state)i;
            return true;
        }
    }
    return false;
}

bool js_key_state_published(js_key_state st)
{
    switch (st) {
    case JS_KS_NEXT:
    case JS_KS_ACTIVE:
    case JS_KS_RETIRING:
        return true;
    case JS_KS_NONE:
    case JS_KS_RETIRED:
    case JS_KS_REVOKED:
    case JS_KS_STATE_COUNT:
    default:
        return false;
    }
}

void js_ks_events_cleanup(js_ks_events *events)
{
    if (events == NULL)
        return;
    free(events->ev);
    memset(events, 0, sizeof(*events));
}

/* Makes room for `more` events up front, so a state change is never made
 * whose audit event could not be reported. */
static js_status ev_reserve(js_ks_events *events, size_t more, js_err *err)
{
    if (events == NULL || events->count + more <= events->cap)
        return JS_OK;
    size_t nc = events->cap ? events->cap : 16;
    while (nc < events->count + more)
        nc *= 2;
    js_ks_event *ne = realloc(events->ev, nc * sizeof(*ne));
    JS_ENSURE_ALLOC(ne, err);
    events->ev = ne;
    events->cap = nc;
    return JS_OK;
}

/* Only after ev_reserve: cannot fail. */
static void ev_push(js_ks_events *events, js_ks_event_kind kind, const ks_key *k,
                    const js_keyver *v, js_key_state from, js_key_state to, int64_t at)
{
    if (events == NULL || events->count >= events->cap)
        return;
    js_ks_event *e = &events->ev[events->count++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    snprintf(e->key, sizeof(e->key), "%s", k->name);
    if (v != NULL) {
        e->version = v->version;
        snprintf(e->kid, sizeof(e->kid), "%s", v->kid);
    }
    e->from = from;
    e->to = to;
    e->at = at;
}

static void transition(js_ks_events *events, const ks_key *k, js_keyver *v, js_key_state to,
                       int64_t at)
{
    js_key_state from = v->state;
    v->state = to;
    ev_push(events, JS_KS_EV_TRANSITION, k, v, from, to, at);
}

/* Marks the event just pushed (if any) as an emergency activation. */
static void mark_emergency(js_ks_events *events)
{
    if (events != NULL && events->count > 0)
        events->ev[events->count - 1].emergency = true;
}

/* Identifier-like strings: printable ASCII without space (labels, kids, algs). */
static bool token_ok(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

/* The reason ends up in audit records and status output: no control bytes. */
static bool reason_ok(const char *s)
{
    size_t n = strnlen(s, JS_KS_REASON_MAX + 1);
    if (n > JS_KS_REASON_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] >= 0x7f)
            return false;
    return true;
}

static js_status check_now(int64_t now, js_err *err)
{
    JS_ENSURE(now > 0 && now <= JS_KS_TIME_MAX, err, JS_EINVAL, JS_R_KEYSTATE_BAD_TIME,
              "time %" PRId64 " is out of range", now);
    return JS_OK;
}

static js_status check_ids(const char *key, const char *label, const char *alg, const char *kid,
                           js_err *err)
{
    JS_ENSURE(js_key_name_ok(key), err, JS_EINVAL, JS_R_KEYSTATE_BAD_NAME,
              "key name must be 1..%d of [A-Za-z0-9._-]", JS_KEY_NAME_MAX);
    JS_ENSURE(label != NULL && token_ok(label, JS_KS_LABEL_MAX), err, JS_EINVAL,
              JS_R_KEYSTATE_BAD_LABEL, "key '%s': label must be 1..%d printable characters", key,
              JS_KS_LABEL_MAX);
    JS_ENSURE(alg != NULL && token_ok(alg, JS_KS_ALG_MAX), err, JS_EINVAL, JS_R_KEYSTATE_BAD_ALG,
              "key '%s': alg must be 1..%d printable characters", key, JS_KS_ALG_MAX);
    JS_ENSURE(kid != NULL && token_ok(kid, JS_KS_KID_MAX), err, JS_EINVAL, JS_R_KEYSTATE_BAD_KID,
              "key '%s': kid must be 1..%d printable characters", key, JS_KS_KID_MAX);
    return JS_OK;
}

static ks_key *find_key(const js_keystate *ks, const char *name)
{
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].name, name) == 0)
            return &ks->keys[i];
    return NULL;
}

static js_keyver *find_state(const ks_key *k, js_key_state st)
{
    /* Newest first: "the newest next" when a file ever held several. */
    for (size_t i = k->n; i > 0; i--)
        if (k->v[i - 1].state == st)
            return &k->v[i - 1];
    return NULL;
}

static size_t count_published(const ks_key *k)
{
    size_t c = 0;
    for (size_t i = 0; i < k->n; i++)
        c += js_key_state_published(k->v[i].state) ? 1 : 0;
    return c;
}

static const js_keyver *find_kid_any(const js_keystate *ks, const char *kid, const ks_key **key)
{
    for (size_t i = 0; i < ks->n; i++)
        for (size_t j = 0; j < ks->keys[i].n; j++)
            if (strcmp(ks->keys[i].v[j].kid, kid) == 0) {
                if (key != NULL)
                    *key = &ks->keys[i];
                return &ks->keys[i].v[j];
            }
    return NULL;
}

static bool label_used(const js_keystate *ks, const char *label)
{
    for (size_t i = 0; i < ks->n; i++)
        for (size_t j = 0; j < ks->keys[i].n; j++)
            if (strcmp(ks->keys[i].v[j].label, label) == 0)
                return true;
    return false;
}

static js_status key_reserve(ks_key *k, size_t more, js_err *err)
{
    if (k->n + more <= k->cap)
        return JS_OK;
    size_t nc = k->cap ? k->cap * 2 : 4;
    while (nc < k->n + more)
        nc *= 2;
    js_keyver *nv = realloc(k->v, nc * sizeof(*nv));
    JS_ENSURE_ALLOC(nv, err);
    k->v = nv;
    k->cap = nc;
    return JS_OK;
}

static js_status add_key(js_keystate *ks, const char *name, ks_key **out, js_err *err)
{
    JS_ENSURE(ks->n < JS_KS_MAX_KEYS, err, JS_ELIMIT, JS_R_KEYSTATE_TOO_MANY_KEYS,
              "key '%s': the state holds at most %d keys", name, JS_KS_MAX_KEYS);
    if (ks->n == ks->cap) {
        size_t nc = ks->cap ? ks->cap * 2 : 4;
        ks_key *nk = realloc(ks->keys, nc * sizeof(*nk));
        JS_ENSURE_ALLOC(nk, err);
        ks->keys = nk;
        ks->cap = nc;
    }
    ks_key *k = &ks->keys[ks->n];
    memset(k, 0, sizeof(*k));
    snprintf(k->name, sizeof(k->name), "%s", name);
    ks->n++;
    *out = k;
    return JS_OK;
}

static void remove_version(ks_key *k, size_t i)
{
    memmove(&k->v[i], &k->v[i + 1], (k->n - i - 1) * sizeof(k->v[0]));
    k->n--;
}

/* A record may be forgotten: retired ones once JS_KS_RETIRED_KEEP has passed
 * since they left the JWKS (or at any age when `any_retired`), revoked ones
 * only after JS_KS_REVOKED_KEEP. Published versions never. */
static bool forgettable(const js_keyver *v, int64_t now, bool any_retired)
{
    switch (v->state) {
    case JS_KS_RETIRED:
        return any_retired || now - v->unpublish_at >= JS_KS_RETIRED_KEEP;
    case JS_KS_REVOKED:
        return now - v->revoked_at >= JS_KS_REVOKED_KEEP;
    case JS_KS_NONE:
    case JS_KS_NEXT:
    case JS_KS_ACTIVE:
    case JS_KS_RETIRING:
    case JS_KS_STATE_COUNT:
    default:
        return false;
    }
}

/* ---- lifecycle ------------------------------------------------------------------------ */

js_status js_keystate_new(js_keystate **out, js_err *err)
{
    *out = calloc(1, sizeof(**out));
    JS_ENSURE_ALLOC(*out, err);
    return JS_OK;
}

void js_keystate_free(js_keystate *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        free(ks->keys[i].v);
    free(ks->keys);
    free(ks);
}

js_status js_keystate_ensure_initial(js_keystate *ks, const char *key, const char *label,
                                     const char *alg, const char *kid, int64_t now,
                                     js_ks_events *events, js_err *err)
{
    JS_GUARD(check_ids(key, label, alg, kid, err));
    JS_GUARD(check_now(now, err));
    ks_key *k = find_key(ks, key);
    if (k != NULL) {
        /* The record of version 1 may be pruned; initial_kid never is. */
        JS_ENSURE(strcmp(k->initial_kid, kid) == 0, err, JS_ECONFIG, JS_R_KEYSTATE_KID_MISMATCH,
                  "key '%s': the token's key under label '%s' has kid '%s' but the state file "
                  "recorded version 1 with kid '%s'; the state file and the token disagree",
                  key, label, kid, k->initial_kid);
        return JS_OK;
    }
    const ks_key *other = NULL;
    JS_ENSURE(find_kid_any(ks, kid, &other) == NULL, err, JS_ECONFIG, JS_R_KEYSTATE_DUPLICATE_KID,
              "key '%s': kid '%s' is already recorded for key '%s'", key, kid,
              other ? other->name : "?");
    JS_ENSURE(!label_used(ks, label), err, JS_ECONFIG, JS_R_KEYSTATE_DUPLICATE_LABEL,
              "key '%s': label '%s' is already recorded for another version", key, label);
    JS_GUARD(ev_reserve(events, 1, err));
    JS_ENSURE(ks->n < JS_KS_MAX_KEYS, err, JS_ELIMIT, JS_R_KEYSTATE_TOO_MANY_KEYS,
              "key '%s': the state holds at most %d keys", key, JS_KS_MAX_KEYS);
    /* Reserve the version before adding the key, so a failure leaves no
     * half-made key behind. */
    ks_key tmp = {0};
    JS_GUARD(key_reserve(&tmp, 1, err));
    ks_key *nk = NULL;
    js_status st = add_key(ks, key, &nk, err);
    if (st != JS_OK) {
        free(tmp.v);
        return st;
    }
    nk->v = tmp.v;
    nk->cap = tmp.cap;
    snprintf(nk->initial_kid, sizeof(nk->initial_kid), "%s", kid);
    nk->last_version = 1;
    js_keyver *v = &nk->v[nk->n++];
    memset(v, 0, sizeof(*v));
    v->version = 1;
    snprintf(v->label, sizeof(v->label), "%s", label);
    snprintf(v->alg, sizeof(v->alg), "%s", alg);
    snprintf(v->kid, sizeof(v->kid), "%s", kid);
    v->created = v->publish_at = v->activate_at = now;
    v->state = JS_KS_NONE;
    transition(events, nk, v, JS_KS_ACTIVE, now);
    return JS_OK;
}

js_status js_keystate_rotate(js_keystate *ks, const char *key, const char *label, const char *alg,
                             const char *kid, int64_t now, int64_t prepublish,
                             uint32_t *version_out, js_ks_events *events, js_err *err)
{
    JS_GUARD(check_ids(key, label, alg, kid, err));
    JS_GUARD(check_now(now, err));
    JS_ENSURE(prepublish >= 0 && prepublish <= JS_KS_MAX_PERIOD, err, JS_EINVAL,
              JS_R_KEYSTATE_BAD_PERIOD,
              "key '%s': pre-publication of %" PRId64 " s is out of range", key, prepublish);
    ks_key *k = find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    const js_keyver *pending = find_state(k, JS_KS_NEXT);
    JS_ENSURE(pending == NULL, err, JS_ESTATE, JS_R_KEYSTATE_ROTATION_PENDING,
              "key '%s': version %" PRIu32 " (kid '%s') is already waiting to become active at "
              "%" PRId64 "; one rotation at a time",
              key, pending ? pending->version : 0, pending ? pending->kid : "",
              pending ? pending->activate_at : 0);
    const ks_key *other = NULL;
    JS_ENSURE(find_kid_any(ks, kid, &other) == NULL, err, JS_EINVAL, JS_R_KEYSTATE_DUPLICATE_KID,
              "key '%s': kid '%s' is already recorded for key '%s'; a new version needs a new key",
              key, kid, other ? other->name : "?");
    JS_ENSURE(!label_used(ks, label), err, JS_EINVAL, JS_R_KEYSTATE_DUPLICATE_LABEL,
              "key '%s': label '%s' is already recorded", key, label);
    JS_ENSURE(count_published(k) < JS_KS_MAX_PUBLISHED, err, JS_ELIMIT,
              JS_R_KEYSTATE_TOO_MANY_PUBLISHED,
              "key '%s': %d versions are already published; wait for retiring ones to retire", key,
              JS_KS_MAX_PUBLISHED);
    JS_ENSURE(k->last_version < UINT32_MAX, err, JS_ELIMIT, JS_R_KEYSTATE_VERSION_OVERFLOW,
              "key '%s': no version numbers left", key);
    size_t victim = SIZE_MAX;
    if (k->n >= JS_KS_MAX_VERSIONS) {
        /* Make room by forgetting the oldest forgettable record (retired at
         * any age; revoked only after JS_KS_REVOKED_KEEP). */
        for (size_t i = 0; i < k->n && victim == SIZE_MAX; i++)
            if (forgettable(&k->v[i], now, true))
                victim = i;
        JS_ENSURE(victim != SIZE_MAX, err, JS_ELIMIT, JS_R_KEYSTATE_TOO_MANY_VERSIONS,
                  "key '%s': %d versions are recorded and none may be forgotten yet (revoked "
                  "kids are kept %d days)",
                  key, JS_KS_MAX_VERSIONS, JS_KS_REVOKED_KEEP / 86400);
    }
    JS_GUARD(ev_reserve(events, 2, err));
    JS_GUARD(key_reserve(k, 1, err));
    if (victim != SIZE_MAX) {
        js_keyver *old = &k->v[victim];
        ev_push(events, JS_KS_EV_FORGOTTEN, k, old, old->state, old->state, now);
        remove_version(k, victim);
    }
    js_keyver *v = &k->v[k->n++];
    memset(v, 0, sizeof(*v));
    v->version = ++k->last_version;
    snprintf(v->label, sizeof(v->label), "%s", label);
    snprintf(v->alg, sizeof(v->alg), "%s", alg);
    snprintf(v->kid, sizeof(v->kid), "%s", kid);
    /* No version can sign: pre-publication would only prolong the outage,
     * so the new version activates at the next tick (keystate.h). */
    bool emergency = find_state(k, JS_KS_ACTIVE) == NULL;
    v->created = v->publish_at = now;
    v->activate_at = emergency ? now : now + prepublish;
    v->state = JS_KS_NONE;
    transition(events, k, v, JS_KS_NEXT, now);
    if (emergency)
        mark_emergency(events);
    if (version_out != NULL)
        *version_out = v->version;
    return JS_OK;
}

js_status js_keystate_revoke(js_keystate *ks, const char *key, const char *kid, int64_t now,
                             const char *reason, js_ks_events *events, js_err *err)
{
    JS_GUARD(check_now(now, err));
    JS_ENSURE(key != NULL && kid != NULL, err, JS_EINVAL, JS_R_KEYSTATE_BAD_NAME,
              "key name and kid are required");
    if (reason == NULL)
        reason = "";
    JS_ENSURE(reason_ok(reason), err, JS_EINVAL, JS_R_KEYSTATE_BAD_REASON,
              "revocation reason must be at most %d printable characters", JS_KS_REASON_MAX);
    ks_key *k = find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    js_keyver *v = NULL;
    for (size_t i = 0; i < k->n && v == NULL; i++)
        if (strcmp(k->v[i].kid, kid) == 0)
            v = &k->v[i];
    JS_ENSURE(v != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KID, "key '%s' has no kid '%s'",
              key, kid);
    if (v->state == JS_KS_REVOKED)
        return JS_OK; /* terminal; a retried admin call is not an error */
    JS_GUARD(ev_reserve(events, 2, err));
    bool was_active = v->state == JS_KS_ACTIVE;
    v->revoked_at = now;
    snprintf(v->reason, sizeof(v->reason), "%s", reason);
    transition(events, k, v, JS_KS_REVOKED, now);
    if (was_active) {
        /* Emergency promotion: the next version is already in every
         * verifier's JWKS cache or on its way, and a leaked key must stop
         * signing now. It inherits the lifetime mark, so it can sign at once. */
        js_keyver *nx = find_state(k, JS_KS_NEXT);
        if (nx != NULL) {
            nx->activate_at = now;
            if (nx->lifetime < v->lifetime)
                nx->lifetime = v->lifetime;
            transition(events, k, nx, JS_KS_ACTIVE, now);
            mark_emergency(events);
        }
    }
    return JS_OK;
}

js_status js_keystate_set_rotation(js_keystate *ks, const char *key, int64_t period_seconds,
                                   js_err *err)
{
    JS_ENSURE(key != NULL, err, JS_EINVAL, JS_R_KEYSTATE_BAD_NAME, "key name is required");
    ks_key *k = find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    JS_ENSURE(period_seconds >= 0 && period_seconds <= JS_KS_MAX_PERIOD, err, JS_EINVAL,
              JS_R_KEYSTATE_BAD_PERIOD,
              "key '%s': rotation period of %" PRId64 " s is out of range", key, period_seconds);
    k->rotation_period = period_seconds;
    return JS_OK;
}

js_status js_keystate_tick(js_keystate *ks, int64_t now, js_ks_lifetime_fn lifetime_fn, void *ctx,
                           js_ks_events *events, js_err *err)
{
    JS_GUARD(check_now(now, err));
    JS_ENSURE(lifetime_fn != NULL, err, JS_EINVAL, JS_R_KEYSTATE_NO_LIFETIME,
              "tick needs a lifetime function");
    /* Sample and check every lifetime, and reserve every event, before
     * changing anything: the tick either fails whole or applies whole. */
    int64_t lifetimes[JS_KS_MAX_KEYS];
    size_t worst = 0;
    for (size_t i = 0; i < ks->n; i++) {
        int64_t l = lifetime_fn(ks->keys[i].name, ctx);
        JS_ENSURE(l >= 0 && l <= JS_KS_MAX_LIFETIME, err, JS_EINTERNAL, JS_R_KEYSTATE_BAD_LIFETIME,
                  "key '%s': token lifetime %" PRId64 " s is out of range 0..%d", ks->keys[i].name,
                  l, JS_KS_MAX_LIFETIME);
        lifetimes[i] = l;
        worst += ks->keys[i].n * 2 + 2;
    }
    JS_GUARD(ev_reserve(events, worst, err));

    for (size_t i = 0; i < ks->n; i++) {
        ks_key *k = &ks->keys[i];
        int64_t l = lifetimes[i];
        js_keyver *act = find_state(k, JS_KS_ACTIVE);
        if (act != NULL && act->lifetime < l)
            act->lifetime = l;

        js_keyver *nx = find_state(k, JS_KS_NEXT);
        /* With no active version the key cannot sign: the next one takes
         * over at once (an emergency activation, see keystate.h). */
        bool emergency = nx != NULL && act == NULL;
        if (nx != NULL && (nx->activate_at <= now || emergency)) {
            int64_t inherited = l;
            if (act != NULL) {
                act->retire_at = now;
                act->unpublish_at = now + act->lifetime;
                if (act->lifetime > inherited)
                    inherited = act->lifetime;
                transition(events, k, act, JS_KS_RETIRING, now);
            }
            nx->activate_at = now;
            nx->lifetime = inherited;
            transition(events, k, nx, JS_KS_ACTIVE, now);
            if (emergency)
                mark_emergency(events);
        }

        for (size_t j = 0; j < k->n; j++) {
            js_keyver *v = &k->v[j];
            if (v->state == JS_KS_RETIRING && v->unpublish_at <= now)
                transition(events, k, v, JS_KS_RETIRED, now);
        }

        for (size_t j = k->n; j > 0; j--) {
            js_keyver *v = &k->v[j - 1];
            if (forgettable(v, now, false)) {
                ev_push(events, JS_KS_EV_FORGOTTEN, k, v, v->state, v->state, now);
                remove_version(k, j - 1);
            }
        }

        act = find_state(k, JS_KS_ACTIVE);
        if (k->rotation_period > 0 && act != NULL && find_state(k, JS_KS_NEXT) == NULL &&
            now - act->activate_at >= k->rotation_period)
            ev_push(events, JS_KS_EV_ROTATION_DUE, k, act, JS_KS_ACTIVE, JS_KS_ACTIVE, now);
    }
    return JS_OK;
}

/* ---- queries -------------------------------------------------------------------------- */

js_status js_keystate_active(const js_keystate *ks, const char *key, const js_keyver **out,
                             js_err *err)
{
    *out = NULL;
    const ks_key *k = find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    const js_keyver *v = find_state(k, JS_KS_ACTIVE);
    JS_ENSURE(v != NULL, err, JS_EUNAVAIL, JS_R_KEYSTATE_NO_ACTIVE,
              "key '%s' has no active version (revoked without a successor): an administrator "
              "must call Admin/RotateKey, which makes a new version active immediately",
              key);
    *out = v;
    return JS_OK;
}

uint32_t js_keystate_next_version(const js_keystate *ks, const char *key)
{
    const ks_key *k = find_key(ks, key);
    if (k == NULL)
        return 1;
    return k->last_version < UINT32_MAX ? k->last_version + 1 : 0;
}

js_status js_keystate_published(const js_keystate *ks, const char *key,
                                const js_keyver *out[JS_KS_MAX_PUBLISHED], size_t *count,
                                js_err *err)
{
    *count = 0;
    const ks_key *k = find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    for (size_t i = 0; i < k->n; i++) {
        if (!js_key_state_published(k->v[i].state))
            continue;
        /* Guaranteed by rotate and load; checked so a bug cannot overflow. */
        JS_ENSURE(*count < JS_KS_MAX_PUBLISHED, err, JS_EINTERNAL, JS_R_INTERNAL_BUG,
                  "key '%s' has more than %d published versions", key, JS_KS_MAX_PUBLISHED);
        out[(*count)++] = &k->v[i];
    }
    return JS_OK;
}

const js_keyver *js_keystate_find_kid(const js_keystate *ks, const char *kid, const char **key_out)
{
    const ks_key *k = NULL;
    const js_keyver *v = find_kid_any(ks, kid, &k);
    if (key_out != NULL)
        *key_out = v != NULL ? k->name : NULL;
    return v;
}

void js_keystate_counts(const js_keystate *ks, size_t counts[JS_KS_STATE_COUNT])
{
    memset(counts, 0, JS_KS_STATE_COUNT * sizeof(counts[0]));
    for (size_t i = 0; i < ks->n; i++)
        for (size_t j = 0; j < ks->keys[i].n; j++) {
            js_key_state st = ks->keys[i].v[j].state;
            if ((int)st >= 0 && st < JS_KS_STATE_COUNT)
                counts[st]++;
        }
}

size_t js_keystate_key_count(const js_keystate *ks)
{
    return ks->n;
}

const char *js_keystate_key_name(const js_keystate *ks, size_t key_index)
{
    return key_index < ks->n ? ks->keys[key_index].name : NULL;
}

int64_t js_keystate_key_rotation(const js_keystate *ks, size_t key_index)
{
    return key_index < ks->n ? ks->keys[key_index].rotation_period : 0;
}

size_t js_keystate_version_count(const js_keystate *ks, size_t key_index)
{
    return key_index < ks->n ? ks->keys[key_index].n : 0;
}

const js_keyver *js_keystate_version_at(const js_keystate *ks, size_t key_index, size_t i)
{
    if (key_index >= ks->n || i >= ks->keys[key_index].n)
        return NULL;
    return &ks->keys[key_index].v[i];
}

js_status js_keystate_cap_exp(const js_keystate *ks, const char *key, uint32_t version, int64_t now,
                              int64_t exp, int64_t *capped, js_err *err)
{
    *capped = 0;
    const ks_key *k = find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    const js_keyver *v = NULL;
    for (size_t i = 0; i < k->n && v == NULL; i++)
        if (k->v[i].version == version)
            v = &k->v[i];
    JS_ENSURE(v != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_VERSION,
              "key '%s' has no version %" PRIu32, key, version);
    JS_ENSURE(v->state == JS_KS_ACTIVE, err, JS_EDENIED, JS_R_KEYSTATE_NOT_ACTIVE,
              "key '%s' version %" PRIu32 " is %s and may not sign", key, version,
              js_key_state_name(v->state));
    JS_ENSURE(v->lifetime > 0, err, JS_EUNAVAIL, JS_R_KEYSTATE_LIFETIME_UNKNOWN,
              "key '%s' version %" PRIu32 ": token lifetime not sampled yet (tick first)", key,
              version);
    /* The version retires at some time >= now and stays published for its
     * lifetime mark after that, which never decreases: now + mark is a
     * bound every future unpublish_at respects. */
    int64_t limit = now + v->lifetime;
    *capped = exp < limit ? exp : limit;
    return JS_OK;
}

/* ---- persistence: load ---------------------------------------------------------------- */

typedef struct loader {
    const char *path;
    js_err *err;
} loader;

static js_status bad(const loader *ld, js_reason reason, const char *where, const char *what)
{
    return js_err_set(ld->err, JS_ECONFIG, reason, "%s: %s: %s", ld->path, where, what);
}

/* Every member listed and nothing else: a typo in a hand-edited file must not
 * silently drop a revocation. */
static js_status only_members(const loader *ld, json_t *obj, const char *where,
                              const char *const *names, size_t n)
{
    const char *name;
    json_t *val;
    json_object_foreach(obj, name, val)
    {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(name, names[i]) == 0;
        if (!known) {
            char what[200];
            snprintf(what, sizeof(what), "unknown member '%.64s'", name);
            return bad(ld, JS_R_KEYSTATE_UNKNOWN_MEMBER, where, what);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (json_object_get(obj, names[i]) == NULL) {
            char what[120];
            snprintf(what, sizeof(what), "missing member '%s'", names[i]);
            return bad(ld, JS_R_KEYSTATE_MISSING_MEMBER, where, what);
        }
    }
    return JS_OK;
}

static js_status get_int(const loader *ld, json_t *obj, const char *where, const char *name,
                         int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(obj, name);
    char at[160];
    snprintf(at, sizeof(at), "%s.%s", where, name);
    if (!json_is_integer(v))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        char what[120];
        snprintf(what, sizeof(what), "%lld is out of range %" PRId64 "..%" PRId64, (long long)x, lo,
                 hi);
        return bad(ld, JS_R_KEYSTATE_RANGE, at, what);
    }
    *out = (int64_t)x;
    return JS_OK;
}

static js_status get_str(const loader *ld, json_t *obj, const char *where, const char *name,
                         char *out, size_t cap, bool (*ok)(const char *))
{
    json_t *v = json_object_get(obj, name);
    char at[160];
    snprintf(at, sizeof(at), "%s.%s", where, name);
    if (!json_is_string(v))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be a string");
    const char *s = json_string_value(v);
    if (json_string_length(v) >= cap || strlen(s) != json_string_length(v) || !ok(s))
        return bad(ld, JS_R_KEYSTATE_INVALID, at, "not a valid value");
    snprintf(out, cap, "%s", s);
    return JS_OK;
}

static bool label_valid(const char *s)
{
    return token_ok(s, JS_KS_LABEL_MAX);
}
static bool alg_valid(const char *s)
{
    return token_ok(s, JS_KS_ALG_MAX);
}
static bool kid_valid(const char *s)
{
    return token_ok(s, JS_KS_KID_MAX);
}

static const char *const k_version_members[] = {
    "version",     "label",     "alg",          "kid",        "state",    "created", "publish_at",
    "activate_at", "retire_at", "unpublish_at", "revoked_at", "lifetime", "reason"};

static js_status load_version(const loader *ld, json_t *jv, const char *where, js_keyver *v)
{
    if (!json_is_object(jv))
        return bad(ld, JS_R_KEYSTATE_TYPE, where, "must be an object");
    JS_GUARD(only_members(ld, jv, where, k_version_members,
                          sizeof(k_version_members) / sizeof(k_version_members[0])));
    memset(v, 0, sizeof(*v));
    int64_t num = 0;
    JS_GUARD(get_int(ld, jv, where, "version", 1, UINT32_MAX, &num));
    v->version = (uint32_t)num;
    JS_GUARD(get_str(ld, jv, where, "label", v->label, sizeof(v->label), label_valid));
    JS_GUARD(get_str(ld, jv, where, "alg", v->alg, sizeof(v->alg), alg_valid));
    JS_GUARD(get_str(ld, jv, where, "kid", v->kid, sizeof(v->kid), kid_valid));
    JS_GUARD(get_str(ld, jv, where, "reason", v->reason, sizeof(v->reason), reason_ok));
    json_t *js = json_object_get(jv, "state");
    char at[160];
    snprintf(at, sizeof(at), "%s.state", where);
    if (!json_is_string(js))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be a string");
    if (!js_key_state_parse(json_string_value(js), &v->state)) {
        char what[120];
        snprintf(what, sizeof(what), "unknown state '%.32s'", json_string_value(js));
        return bad(ld, JS_R_KEYSTATE_UNKNOWN_STATE, at, what);
    }
    JS_GUARD(get_int(ld, jv, where, "created", 1, JS_KS_TIME_MAX, &v->created));
    JS_GUARD(get_int(ld, jv, where, "publish_at", 1, JS_KS_TIME_MAX, &v->publish_at));
    JS_GUARD(get_int(ld, jv, where, "activate_at", 1, JS_KS_TIME_MAX, &v->activate_at));
    JS_GUARD(get_int(ld, jv, where, "retire_at", 0, JS_KS_TIME_MAX, &v->retire_at));
    JS_GUARD(get_int(ld, jv, where, "unpublish_at", 0, JS_KS_TIME_MAX, &v->unpublish_at));
    JS_GUARD(get_int(ld, jv, where, "revoked_at", 0, JS_KS_TIME_MAX, &v->revoked_at));
    JS_GUARD(get_int(ld, jv, where, "lifetime", 0, JS_KS_MAX_LIFETIME, &v->lifetime));

    /* Timestamps each state needs to make its next transition. */
    if (v->state == JS_KS_REVOKED && v->revoked_at == 0)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "a revoked version needs revoked_at");
    if (v->state != JS_KS_REVOKED && v->revoked_at != 0)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "only a revoked version has revoked_at");
    if ((v->state == JS_KS_RETIRING || v->state == JS_KS_RETIRED) &&
        (v->retire_at == 0 || v->unpublish_at < v->retire_at))
        return bad(ld, JS_R_KEYSTATE_INVALID, where,
                   "a retiring or retired version needs retire_at <= unpublish_at");
    return JS_OK;
}

static const char *const k_key_members[] = {"name", "initial_kid", "last_version",
                                            "rotation_period", "versions"};

static js_status load_key(const loader *ld, js_keystate *ks, json_t *jk, size_t idx)
{
    char where[64];
    snprintf(where, sizeof(where), "keys[%zu]", idx);
    if (!json_is_object(jk))
        return bad(ld, JS_R_KEYSTATE_TYPE, where, "must be an object");
    JS_GUARD(only_members(ld, jk, where, k_key_members,
                          sizeof(k_key_members) / sizeof(k_key_members[0])));
    char name[JS_KEY_NAME_MAX + 1];
    JS_GUARD(get_str(ld, jk, where, "name", name, sizeof(name), js_key_name_ok));
    if (find_key(ks, name) != NULL)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "duplicate key name");
    json_t *jvs = json_object_get(jk, "versions");
    char at[96];
    snprintf(at, sizeof(at), "%s.versions", where);
    if (!json_is_array(jvs))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be an array");
    if (json_array_size(jvs) > JS_KS_MAX_VERSIONS)
        return bad(ld, JS_R_KEYSTATE_INVALID, at, "too many versions");

    ks_key *k = NULL;
    JS_GUARD(add_key(ks, name, &k, ld->err));
    JS_GUARD(
        get_str(ld, jk, where, "initial_kid", k->initial_kid, sizeof(k->initial_kid), kid_valid));
    int64_t x = 0;
    JS_GUARD(get_int(ld, jk, where, "last_version", 1, UINT32_MAX, &x));
    k->last_version = (uint32_t)x;
    JS_GUARD(get_int(ld, jk, where, "rotation_period", 0, JS_KS_MAX_PERIOD, &k->rotation_period));
    JS_GUARD(key_reserve(k, json_array_size(jvs), ld->err));

    size_t n_active = 0, n_next = 0, n_pub = 0;
    for (size_t j = 0; j < json_array_size(jvs); j++) {
        char vw[96];
        snprintf(vw, sizeof(vw), "%s.versions[%zu]", where, j);
        js_keyver v;
        JS_GUARD(load_version(ld, json_array_get(jvs, j), vw, &v));
        if (v.version > k->last_version)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "version is above last_version");
        if (k->n > 0 && v.version <= k->v[k->n - 1].version)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "versions must be in increasing order");
        if (v.version == 1 && strcmp(v.kid, k->initial_kid) != 0)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "version 1 kid differs from initial_kid");
        if (find_kid_any(ks, v.kid, NULL) != NULL)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "duplicate kid");
        if (label_used(ks, v.label))
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "duplicate label");
        n_active += v.state == JS_KS_ACTIVE;
        n_next += v.state == JS_KS_NEXT;
        n_pub += js_key_state_published(v.state);
        k->v[k->n++] = v;
    }
    if (n_active > 1)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "more than one active version");
    if (n_next > 1)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "more than one next version");
    if (n_pub > JS_KS_MAX_PUBLISHED)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "too many published versions");
    return JS_OK;
}

static js_status parse_state(const loader *ld, const char *buf, size_t len, js_keystate *ks)
{
    json_error_t jerr;
    /* Duplicate members are rejected: two "state" members must not let one
     * silently win. */
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return js_err_set(ld->err, JS_ECONFIG, JS_R_KEYSTATE_MALFORMED,
                          "%s:%d:%d: malformed JSON: %s", ld->path, jerr.line, jerr.column,
                          jerr.text);
    js_status st = JS_OK;
    static const char *const members[] = {"format", "version", "keys"};
    if (!json_is_object(root)) {
        st = bad(ld, JS_R_KEYSTATE_TYPE, "top level", "must be an object");
        goto out;
    }
    st = only_members(ld, root, "top level", members, 3);
    if (st != JS_OK)
        goto out;
    json_t *f = json_object_get(root, "format");
    if (!json_is_string(f) || strcmp(json_string_value(f), JS_KS_FORMAT) != 0) {
        st = bad(ld, JS_R_KEYSTATE_FORMAT, "format", "must be \"" JS_KS_FORMAT "\"");
        goto out;
    }
    int64_t ver = 0;
    st = get_int(ld, root, "top level", "version", 1, INT32_MAX, &ver);
    if (st != JS_OK)
        goto out;
    if (ver != JS_KS_FORMAT_VERSION) {
        st = bad(ld, JS_R_KEYSTATE_FORMAT, "version", "unsupported format version");
        goto out;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        st = bad(ld, JS_R_KEYSTATE_TYPE, "keys", "must be an array");
        goto out;
    }
    if (json_array_size(keys) > JS_KS_MAX_KEYS) {
        st = bad(ld, JS_R_KEYSTATE_INVALID, "keys", "too many keys");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(keys) && st == JS_OK; i++)
        st = load_key(ld, ks, json_array_get(keys, i), i);
out:
    json_decref(root);
    return st;
}

js_status js_keystate_load(const char *path, js_keystate **out, js_err *err)
{
    *out = NULL;
    JS_ENSURE(path != NULL, err, JS_EINVAL, JS_R_KEYSTATE_IO, "no state file path");
    js_keystate *ks = NULL;
    JS_GUARD(js_keystate_new(&ks, err));
    char *buf = NULL;
    size_t len = 0;
    bool absent = false;
    js_status st = js_statefile_read(path, JS_KS_FILE_MAX, "keystate", &buf, &len, &absent, err);
    if (st != JS_OK || absent) {
        if (st != JS_OK) {
            js_keystate_free(ks);
            return st;
        }
        *out = ks; /* a missing file is an empty state */
        return JS_OK;
    }
    loader ld = {.path = path, .err = err};
    st = parse_state(&ld, buf, len, ks);
    free(buf);
    if (st != JS_OK) {
        js_keystate_free(ks);
        return st;
    }
    *out = ks;
    return JS_OK;
}

/* ---- persistence: save ---------------------------------------------------------------- */

static json_t *version_json(const js_keyver *v)
{
    return json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "version",
        (json_int_t)v->version, "label", v->label, "alg", v->alg, "kid", v->kid, "state",
        js_key_state_name(v->state), "created", (json_int_t)v->created, "publish_at",
        (json_int_t)v->publish_at, "activate_at", (json_int_t)v->activate_at, "retire_at",
        (json_int_t)v->retire_at, "unpublish_at", (json_int_t)v->unpublish_at, "revoked_at",
        (json_int_t)v->revoked_at, "lifetime", (json_int_t)v->lifetime, "reason", v->reason);
}

static json_t *state_json(const js_keystate *ks)
{
    json_t *keys = json_array();
    json_t *root = json_pack("{s:s, s:i, s:o}", "format", JS_KS_FORMAT, "version",
                             JS_KS_FORMAT_VERSION, "keys", keys);
    if (root == NULL)
        return NULL;
    for (size_t i = 0; i < ks->n; i++) {
        const ks_key *k = &ks->keys[i];
        json_t *vs = json_array();
        json_t *jk = json_pack("{s:s, s:s, s:I, s:I, s:o}", "name", k->name, "initial_kid",
                               k->initial_kid, "last_version", (json_int_t)k->last_version,
                               "rotation_period", (json_int_t)k->rotation_period, "versions", vs);
        if (jk == NULL || json_array_append_new(keys, jk) != 0) {
            json_decref(root);
            return NULL;
        }
        for (size_t j = 0; j < k->n; j++) {
            if (json_array_append_new(vs, version_json(&k->v[j])) != 0) {
                json_decref(root);
                return NULL;
            }
        }
    }
    return root;
}

js_status js_keystate_save(const js_keystate *ks, const char *path, js_err *err)
{
    JS_ENSURE(path != NULL && path[0] != '\0', err, JS_EINVAL, JS_R_KEYSTATE_IO,
              "no state file path");
    json_t *root = state_json(ks);
    JS_ENSURE_ALLOC(root, err);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    JS_ENSURE_ALLOC(text, err);
    size_t len = strlen(text);
    /* Never write a file the next start would refuse to load. */
    js_status st = len <= JS_KS_FILE_MAX
                       ? js_statefile_write(path, text, len, "keystate", err)
                       : js_err_set(err, JS_EINTERNAL, JS_R_KEYSTATE_TOO_LARGE,
                                    "%s: state would be %zu bytes; the limit is %d", path, len,
                                    JS_KS_FILE_MAX);
    free(text);
    return st;
}
