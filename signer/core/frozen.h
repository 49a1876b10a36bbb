/*
 * frozen.h - callers frozen at run time (admin FreezeCaller), on top of the
 * policy's `frozen: true` entries.
 *
 * An immutable sorted set of exact identities, published to workers as a
 * snapshot (snapshot.h) and checked at admission with a binary search.
 */
#ifndef JS_FROZEN_H
#define JS_FROZEN_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"

typedef struct js_frozen js_frozen;

/* A copy of `from` (NULL = empty) with identity added (add) or removed. */
js_status js_frozen_with(const js_frozen *from, const char *identity, bool add, js_frozen **out,
                         js_err *err) JS_WUR;
void js_frozen_free(js_frozen *f);
bool js_frozen_contains(const js_frozen *f, const char *identity);
size_t js_frozen_count(const js_frozen *f);
const char *js_frozen_at(const js_frozen *f, size_t i);

#endif
