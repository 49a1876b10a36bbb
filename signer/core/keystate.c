/*
 * keystate.c - versions and states of the named signing keys and their
 * transitions on an injected clock (the lifecycle rules; the state file is
 * keystate_file.c). See keystate.h for the model and the guarantees.
 */
#include "keystate.h"
#include "keystate_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
bool ks_token_ok(const char *s, size_t max)
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
bool ks_reason_ok(const char *s)
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
    /* The one HSM-label rule (names.h): the configuration accepts exactly these. */
    JS_ENSURE(js_label_ok(label), err, JS_EINVAL, JS_R_KEYSTATE_BAD_LABEL,
              "key '%s': label must be 1..%d printable ASCII characters", key, JS_LABEL_MAX);
    JS_ENSURE(alg != NULL && ks_token_ok(alg, JS_KS_ALG_MAX), err, JS_EINVAL, JS_R_KEYSTATE_BAD_ALG,
              "key '%s': alg must be 1..%d printable characters", key, JS_KS_ALG_MAX);
    JS_ENSURE(kid != NULL && ks_token_ok(kid, JS_KS_KID_MAX), err, JS_EINVAL, JS_R_KEYSTATE_BAD_KID,
              "key '%s': kid must be 1..%d printable characters", key, JS_KS_KID_MAX);
    return JS_OK;
}

ks_key *ks_find_key(const js_keystate *ks, const char *name)
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

const js_keyver *ks_find_kid_any(const js_keystate *ks, const char *kid, const ks_key **key)
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

bool ks_label_used(const js_keystate *ks, const char *label)
{
    for (size_t i = 0; i < ks->n; i++)
        for (size_t j = 0; j < ks->keys[i].n; j++)
            if (strcmp(ks->keys[i].v[j].label, label) == 0)
                return true;
    return false;
}

js_status ks_key_reserve(ks_key *k, size_t more, js_err *err)
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

js_status ks_add_key(js_keystate *ks, const char *name, ks_key **out, js_err *err)
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
    ks_key *k = ks_find_key(ks, key);
    if (k != NULL) {
        /* The record of version 1 may be pruned; initial_kid never is. */
        JS_ENSURE(strcmp(k->initial_kid, kid) == 0, err, JS_ECONFIG, JS_R_KEYSTATE_KID_MISMATCH,
                  "key '%s': the token's key under label '%s' has kid '%s' but the state file "
                  "recorded version 1 with kid '%s'; the state file and the token disagree",
                  key, label, kid, k->initial_kid);
        return JS_OK;
    }
    const ks_key *other = NULL;
    JS_ENSURE(ks_find_kid_any(ks, kid, &other) == NULL, err, JS_ECONFIG,
              JS_R_KEYSTATE_DUPLICATE_KID, "key '%s': kid '%s' is already recorded for key '%s'",
              key, kid, other ? other->name : "?");
    JS_ENSURE(!ks_label_used(ks, label), err, JS_ECONFIG, JS_R_KEYSTATE_DUPLICATE_LABEL,
              "key '%s': label '%s' is already recorded for another version", key, label);
    JS_GUARD(ev_reserve(events, 1, err));
    JS_ENSURE(ks->n < JS_KS_MAX_KEYS, err, JS_ELIMIT, JS_R_KEYSTATE_TOO_MANY_KEYS,
              "key '%s': the state holds at most %d keys", key, JS_KS_MAX_KEYS);
    /* Reserve the version before adding the key, so a failure leaves no
     * half-made key behind. */
    ks_key tmp = {0};
    JS_GUARD(ks_key_reserve(&tmp, 1, err));
    ks_key *nk = NULL;
    js_status st = ks_add_key(ks, key, &nk, err);
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
    ks_key *k = ks_find_key(ks, key);
    JS_ENSURE(k != NULL, err, JS_ENOTFOUND, JS_R_KEYSTATE_UNKNOWN_KEY, "no key named '%s'", key);
    const js_keyver *pending = find_state(k, JS_KS_NEXT);
    JS_ENSURE(pending == NULL, err, JS_ESTATE, JS_R_KEYSTATE_ROTATION_PENDING,
              "key '%s': version %" PRIu32 " (kid '%s') is already waiting to become active at "
              "%" PRId64 "; one rotation at a time",
              key, pending ? pending->version : 0, pending ? pending->kid : "",
              pending ? pending->activate_at : 0);
    const ks_key *other = NULL;
    JS_ENSURE(ks_find_kid_any(ks, kid, &other) == NULL, err, JS_EINVAL, JS_R_KEYSTATE_DUPLICATE_KID,
              "key '%s': kid '%s' is already recorded for key '%s'; a new version needs a new key",
              key, kid, other ? other->name : "?");
    JS_ENSURE(!ks_label_used(ks, label), err, JS_EINVAL, JS_R_KEYSTATE_DUPLICATE_LABEL,
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
    JS_GUARD(ks_key_reserve(k, 1, err));
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
    JS_ENSURE(ks_reason_ok(reason), err, JS_EINVAL, JS_R_KEYSTATE_BAD_REASON,
              "revocation reason must be at most %d printable characters", JS_KS_REASON_MAX);
    ks_key *k = ks_find_key(ks, key);
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
    ks_key *k = ks_find_key(ks, key);
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
    const ks_key *k = ks_find_key(ks, key);
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
    const ks_key *k = ks_find_key(ks, key);
    if (k == NULL)
        return 1;
    return k->last_version < UINT32_MAX ? k->last_version + 1 : 0;
}

js_status js_keystate_published(const js_keystate *ks, const char *key,
                                const js_keyver *out[JS_KS_MAX_PUBLISHED], size_t *count,
                                js_err *err)
{
    *count = 0;
    const ks_key *k = ks_find_key(ks, key);
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
    const js_keyver *v = ks_find_kid_any(ks, kid, &k);
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
    const ks_key *k = ks_find_key(ks, key);
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
