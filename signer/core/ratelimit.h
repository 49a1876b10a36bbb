/*
 * ratelimit.h - per-identity token buckets, checked before the request body
 * is parsed so that a flood costs little.
 *
 * No global lock on the hot path: buckets live in a hash table split into
 * stripes, each with its own mutex that guards the state of the buckets in
 * it. Incident mode is one atomic flag. A bucket remembers the limits it was
 * filled under: after a policy reload, identities whose limits did not change
 * keep their state; a bucket whose limits changed restarts, full, under the
 * new - except that when the new burst is no larger (incident mode switching
 * on, a tightening reload) its tokens are clamped to min(current, new burst).
 *
 * Time is injected (monotonic nanoseconds) so tests control the clock.
 */
#ifndef JS_RATELIMIT_H
#define JS_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "policy.h"

typedef struct js_ratelimit js_ratelimit;

/* max_identities bounds memory: identities beyond it share one overflow bucket per caller entry. */
js_status js_ratelimit_new(size_t max_identities, js_ratelimit **out, js_err *err) JS_WUR;
void js_ratelimit_free(js_ratelimit *rl);

void js_ratelimit_set_incident(js_ratelimit *rl, bool on);
bool js_ratelimit_incident(const js_ratelimit *rl);

/*
 * Takes one token for identity under caller entry c's limits (its incident
 * rate while incident mode is on). JS_OK if allowed; JS_ELIMIT with
 * *retry_after_ms set (time until one token is available) and err reason
 * "rate.limited" naming the limit otherwise.
 */
js_status js_ratelimit_take(js_ratelimit *rl, const js_policy_caller *c, const char *identity,
                            uint64_t now_ns, uint64_t *retry_after_ms, js_err *err) JS_WUR;

#endif
