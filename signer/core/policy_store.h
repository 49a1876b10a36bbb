/*
 * policy_store.h - the policy in force, swapped whole on reload (SIGHUP).
 *
 * Readers never take a lock on the request path: each worker keeps a
 * js_policy_cache holding a counted reference to the snapshot it last saw
 * and compares one atomic generation number per request. Only when the
 * generation changed does it take the store's mutex (once per reload per
 * worker) to pick up the new snapshot. A request keeps the snapshot it
 * started with until it is done, and an old policy is freed when its last
 * reader lets go: in-flight requests finish under the policy they began with.
 */
#ifndef JS_POLICY_STORE_H
#define JS_POLICY_STORE_H

#include <stdint.h>

#include "err.h"
#include "policy.h"
#include "snapshot.h"

/* The generic snapshot store, typed for policies (snapshot.h). */
typedef js_snapshot_store js_policy_store;
typedef js_snapshot js_policy_snapshot;

/* Takes ownership of initial. */
js_status js_policy_store_new(js_policy *initial, js_policy_store **out, js_err *err) JS_WUR;
/* Every cache must have been cleared first. */
void js_policy_store_free(js_policy_store *s);

/* Publishes next (ownership taken); the previous policy is freed once unused. */
js_status js_policy_store_swap(js_policy_store *s, js_policy *next, js_err *err) JS_WUR;

/* A counted reference to the current policy; release with _release. */
js_policy_snapshot *js_policy_store_acquire(js_policy_store *s);
void js_policy_snapshot_release(js_policy_snapshot *snap);
const js_policy *js_policy_snapshot_get(const js_policy_snapshot *snap);

/* Per-worker cache; zero-initialise, then js_policy_cache_get per request. */
typedef js_snapshot_cache js_policy_cache;

const js_policy *js_policy_cache_get(js_policy_cache *c, js_policy_store *s);
void js_policy_cache_clear(js_policy_cache *c);

#endif
