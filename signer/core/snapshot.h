/*
 * snapshot.h - an immutable value published to worker threads, replaced
 * whole, read without a lock on the request path.
 *
 * Readers keep a js_snapshot_cache: one atomic load of the store's
 * generation per request; only when it changed do they take the store's
 * mutex (once per publication per worker) to pick up the new value with a
 * counted reference. A reader keeps the value it started a request with;
 * an old value is destroyed when its last reader lets go. Used for the
 * policy, the set of frozen callers and the keyring.
 */
#ifndef JS_SNAPSHOT_H
#define JS_SNAPSHOT_H

#include <stdint.h>

#include "err.h"

typedef struct js_snapshot_store js_snapshot_store;
typedef struct js_snapshot js_snapshot;
typedef void (*js_snapshot_free_fn)(void *value);

/* Takes ownership of initial (may be NULL); free_fn destroys values. */
js_status js_snapshot_store_new(void *initial, js_snapshot_free_fn free_fn, js_snapshot_store **out,
                                js_err *err) JS_WUR;
/* Every cache must have been cleared first. */
void js_snapshot_store_free(js_snapshot_store *s);

/* Publishes next (ownership taken, also on failure). */
js_status js_snapshot_store_publish(js_snapshot_store *s, void *next, js_err *err) JS_WUR;

/* A counted reference to the current value; release with _release. */
js_snapshot *js_snapshot_store_acquire(js_snapshot_store *s);
void js_snapshot_release(js_snapshot *snap);
void *js_snapshot_value(const js_snapshot *snap);

/* Per-reader cache; zero-initialise, then js_snapshot_cache_get per request. */
typedef struct js_snapshot_cache {
    js_snapshot *snap;
    uint64_t generation;
} js_snapshot_cache;

void *js_snapshot_cache_get(js_snapshot_cache *c, js_snapshot_store *s);
void js_snapshot_cache_clear(js_snapshot_cache *c);

#endif
