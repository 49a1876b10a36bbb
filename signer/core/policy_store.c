/*
 * policy_store.c - the policy in force as a counted snapshot (snapshot.c).
 */
#include "policy_store.h"

#include <stdlib.h>

static void free_policy(void *p)
{
    js_policy_free(p);
}

js_status js_policy_store_new(js_policy *initial, js_policy_store **out, js_err *err)
{
    return js_snapshot_store_new(initial, free_policy, out, err);
}

void js_policy_store_free(js_policy_store *s)
{
    js_snapshot_store_free(s);
}

js_status js_policy_store_swap(js_policy_store *s, js_policy *next, js_err *err)
{
    return js_snapshot_store_publish(s, next, err);
}

js_policy_snapshot *js_policy_store_acquire(js_policy_store *s)
{
    return js_snapshot_store_acquire(s);
}

void js_policy_snapshot_release(js_policy_snapshot *snap)
{
    js_snapshot_release(snap);
}

const js_policy *js_policy_snapshot_get(const js_policy_snapshot *snap)
{
    return js_snapshot_value(snap);
}

const js_policy *js_policy_cache_get(js_policy_cache *c, js_policy_store *s)
{
    return js_snapshot_cache_get(c, s);
}

void js_policy_cache_clear(js_policy_cache *c)
{
    js_snapshot_cache_clear(c);
}
