/*
 * frozen.c - an immutable sorted set of frozen identities.
 */
#include "frozen.h"

#include <stdlib.h>
#include <string.h>

#define FROZEN_MAX 4096

struct js_frozen {
    char **ids; /* sorted by strcmp */
    size_t n;
};

void js_frozen_free(js_frozen *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n; i++)
        free(f->ids[i]);
    free(f->ids);
    free(f);
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

bool js_frozen_contains(const js_frozen *f, const char *identity)
{
    if (f == NULL || f->n == 0)
        return false;
    return bsearch(&identity, f->ids, f->n, sizeof(char *), cmp) != NULL;
}

size_t js_frozen_count(const js_frozen *f)
{
    return f != NULL ? f->n : 0;
}

const char *js_frozen_at(const js_frozen *f, size_t i)
{
    return f != NULL && i < f->n ? f->ids[i] : NULL;
}

js_status js_frozen_with(const js_frozen *from, const char *identity, bool add, js_frozen **out,
                         js_err *err)
{
    *out = NULL;
    size_t n = js_frozen_count(from);
    JS_ENSURE(!add || n < FROZEN_MAX, err, JS_EINVAL, JS_R_ADMIN_FROZEN_FULL,
              "at most %d callers can be frozen at run time", FROZEN_MAX);
    js_frozen *f = calloc(1, sizeof(*f));
    JS_ENSURE_ALLOC(f, err);
    f->ids = calloc(n + 1, sizeof(char *));
    if (f->ids == NULL) {
        free(f);
        return js_err_oom(err);
    }
    for (size_t i = 0; i < n; i++) {
        if (!add && strcmp(from->ids[i], identity) == 0)
            continue;
        if ((f->ids[f->n] = strdup(from->ids[i])) == NULL)
            goto oom;
        f->n++;
    }
    if (add && !js_frozen_contains(from, identity)) {
        if ((f->ids[f->n] = strdup(identity)) == NULL)
            goto oom;
        f->n++;
    }
    qsort(f->ids, f->n, sizeof(char *), cmp);
    *out = f;
    return JS_OK;
oom:
    js_frozen_free(f);
    return js_err_oom(err);
}
