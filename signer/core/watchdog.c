/*
 * watchdog.c - an upper bound on a sequence of waits (see watchdog.h).
 */
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"

struct js_watchdog {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled by js_watchdog_stop */
    const char *stage;
    bool stopping;
    bool expired;
    int64_t start_ms;
    struct timespec until;
    js_watchdog_fn fn;
    void *ctx;
    pthread_t thread;
};

static void *watch_main(void *arg)
{
    js_watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &w->until) == ETIMEDOUT)
            break;
    }
    const char *stage = w->stage;
    bool expired = !w->stopping;
    w->expired = expired;
    pthread_mutex_unlock(&w->mu);
    /* Outside the lock: fn may block or end the process, and the caller may
     * still be setting stages. */
    if (expired)
        w->fn(w->ctx, stage, js_mono_ms() - w->start_ms);
    return NULL;
}

js_watchdog *js_watchdog_start(int64_t limit_ms, const char *stage, js_watchdog_fn expired,
                               void *ctx)
{
    js_watchdog *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    pthread_condattr_t ca;
    bool ok = pthread_condattr_init(&ca) == 0;
    ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&w->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok) {
        free(w);
        return NULL;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->stage = stage;
    w->fn = expired;
    w->ctx = ctx;
    w->start_ms = js_mono_ms();
    w->until = js_mono_deadline(limit_ms);
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void js_watchdog_stage(js_watchdog *w, const char *stage)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stage = stage;
    pthread_mutex_unlock(&w->mu);
}

bool js_watchdog_stop(js_watchdog *w)
{
    if (w == NULL)
        return false;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    bool expired = w->expired;
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return expired;
}
