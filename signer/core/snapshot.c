/*
 * snapshot.c - counted snapshots and per-reader caches (see snapshot.h).
 */
#include "snapshot.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct js_snapshot {
    void *value;
    js_snapshot_free_fn free_fn;
    atomic_uint_fast64_t refs;
};

struct js_snapshot_store {
    pthread_mutex_t mu; /* guards `current`; taken on publish and cache refresh only */
    js_snapshot *current;
    js_snapshot_free_fn free_fn;
    atomic_uint_fast64_t generation;
};

static js_snapshot *snapshot_new(void *value, js_snapshot_free_fn free_fn)
{
    js_snapshot *snap = calloc(1, sizeof(*snap));
    if (snap == NULL)
        return NULL;
    snap->value = value;
    snap->free_fn = free_fn;
    atomic_init(&snap->refs, 1);
    return snap;
}

void js_snapshot_release(js_snapshot *snap)
{
    if (snap == NULL)
        return;
    if (atomic_fetch_sub(&snap->refs, 1) == 1) {
        if (snap->value != NULL)
            snap->free_fn(snap->value);
        free(snap);
    }
}

void *js_snapshot_value(const js_snapshot *snap)
{
    return snap->value;
}

js_status js_snapshot_store_new(void *initial, js_snapshot_free_fn free_fn, js_snapshot_store **out,
                                js_err *err)
{
    *out = NULL;
    js_snapshot_store *s = calloc(1, sizeof(*s));
    js_snapshot *snap = snapshot_new(initial, free_fn);
    if (s == NULL || snap == NULL || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        free(snap);
        if (initial != NULL)
            free_fn(initial);
        return js_err_oom(err);
    }
    s->current = snap;
    s->free_fn = free_fn;
    atomic_init(&s->generation, 1);
    *out = s;
    return JS_OK;
}

void js_snapshot_store_free(js_snapshot_store *s)
{
    if (s == NULL)
        return;
    js_snapshot_release(s->current);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

js_status js_snapshot_store_publish(js_snapshot_store *s, void *next, js_err *err)
{
    js_snapshot *snap = snapshot_new(next, s->free_fn);
    if (snap == NULL) {
        if (next != NULL)
            s->free_fn(next);
        return js_err_oom(err);
    }
    pthread_mutex_lock(&s->mu);
    js_snapshot *old = s->current;
    s->current = snap;
    /* Bumped under the mutex so a cache that sees the new generation also
     * finds the new snapshot when it takes the mutex. */
    atomic_fetch_add(&s->generation, 1);
    pthread_mutex_unlock(&s->mu);
    js_snapshot_release(old);
    return JS_OK;
}

js_snapshot *js_snapshot_store_acquire(js_snapshot_store *s)
{
    pthread_mutex_lock(&s->mu);
    js_snapshot *snap = s->current;
    atomic_fetch_add(&snap->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return snap;
}

void *js_snapshot_cache_get(js_snapshot_cache *c, js_snapshot_store *s)
{
    uint64_t gen = atomic_load_explicit(&s->generation, memory_order_acquire);
    if (c->snap == NULL || c->generation != gen) {
        pthread_mutex_lock(&s->mu);
        js_snapshot *snap = s->current;
        atomic_fetch_add(&snap->refs, 1);
        c->generation = atomic_load(&s->generation);
        pthread_mutex_unlock(&s->mu);
        js_snapshot_release(c->snap);
        c->snap = snap;
    }
    return c->snap->value;
}

void js_snapshot_cache_clear(js_snapshot_cache *c)
{
    js_snapshot_release(c->snap);
    c->snap = NULL;
    c->generation = 0;
}
