/*
 * policy_store.c - counted policy snapshots and per-worker caches.
 */
#include "policy_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct js_policy_snapshot {
    js_policy *policy;
    atomic_uint_fast64_t refs;
};

struct js_policy_store {
    pthread_mutex_t mu; /* guards `current`; taken only on reload and cache refresh */
    js_policy_snapshot *current;
    atomic_uint_fast64_t generation;
};

static js_policy_snapshot *snapshot_new(js_policy *p)
{
    js_policy_snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        return NULL;
    snap->policy = p;
    atomic_init(&snap->refs, 1);
    return snap;
}

void js_policy_snapshot_release(js_policy_snapshot *snap)
{
    if (snap == NULL)
        return;
    if (atomic_fetch_sub(&snap->refs, 1) == 1) {
        js_policy_free(snap->policy);
        free(snap);
    }
}

const js_policy *js_policy_snapshot_get(const js_policy_snapshot *snap)
{
    return snap->policy;
}

js_status js_policy_store_new(js_policy *initial, js_policy_store **out, js_err *err)
{
    *out = NULL;
    js_policy_store *s = calloc(1, sizeof(*s));
    js_policy_snapshot *snap = snapshot_new(initial);
    if (s == NULL || snap == NULL || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        free(snap);
        return js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
    }
    s->current = snap;
    atomic_init(&s->generation, 1);
    *out = s;
    return JS_OK;
}

void js_policy_store_free(js_policy_store *s)
{
    if (s == NULL)
        return;
    js_policy_snapshot_release(s->current);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

js_status js_policy_store_swap(js_policy_store *s, js_policy *next, js_err *err)
{
    js_policy_snapshot *snap = snapshot_new(next);
    if (snap == NULL) {
        js_policy_free(next);
        return js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
    }
    pthread_mutex_lock(&s->mu);
    js_policy_snapshot *old = s->current;
    s->current = snap;
    /* Bumped under the mutex so a cache that sees the new generation also
     * finds the new snapshot when it takes the mutex. */
    atomic_fetch_add(&s->generation, 1);
    pthread_mutex_unlock(&s->mu);
    js_policy_snapshot_release(old);
    return JS_OK;
}

js_policy_snapshot *js_policy_store_acquire(js_policy_store *s)
{
    pthread_mutex_lock(&s->mu);
    js_policy_snapshot *snap = s->current;
    atomic_fetch_add(&snap->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return snap;
}

const js_policy *js_policy_cache_get(js_policy_cache *c, js_policy_store *s)
{
    uint64_t gen = atomic_load_explicit(&s->generation, memory_order_acquire);
    if (c->snap == NULL || c->generation != gen) {
        pthread_mutex_lock(&s->mu);
        js_policy_snapshot *snap = s->current;
        atomic_fetch_add(&snap->refs, 1);
        c->generation = atomic_load(&s->generation);
        pthread_mutex_unlock(&s->mu);
        js_policy_snapshot_release(c->snap);
        c->snap = snap;
    }
    return c->snap->policy;
}

void js_policy_cache_clear(js_policy_cache *c)
{
    js_policy_snapshot_release(c->snap);
    c->snap = NULL;
    c->generation = 0;
}
