/*
 * ticker.c - a periodic thread with a prompt stop (see ticker.h).
 */
#include "ticker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "clock.h"

struct js_ticker {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled by js_ticker_free */
    bool stopping;     /* under mu */
    int64_t period_ms;
    js_ticker_fn fn;
    void *ctx;
    pthread_t thread;
};

static void *tick_main(void *arg)
{
    js_ticker *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stopping) {
        /* A deadline on CLOCK_MONOTONIC, taken after the previous call: a
         * wall-clock step neither delays nor hurries the next call, and a
         * slow call (an HSM healing) is never followed by a burst. */
        struct timespec until = js_mono_deadline(t->period_ms);
        /* 0 is a signal or a spurious wake-up: wait on for the same deadline. */
        while (!t->stopping && pthread_cond_timedwait(&t->cv, &t->mu, &until) == 0)
            ;
        if (t->stopping)
            break;
        /* Outside the lock: fn may take seconds, and js_ticker_free must
         * still be able to say stop meanwhile. */
        pthread_mutex_unlock(&t->mu);
        t->fn(t->ctx);
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

js_ticker *js_ticker_new(int64_t period_ms, js_ticker_fn fn, void *ctx)
{
    if (period_ms < 1 || fn == NULL)
        return NULL;
    js_ticker *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        free(t);
        return NULL;
    }
    bool cv_ok =
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&t->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cv_ok) {
        free(t);
        return NULL;
    }
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        pthread_cond_destroy(&t->cv);
        free(t);
        return NULL;
    }
    t->period_ms = period_ms;
    t->fn = fn;
    t->ctx = ctx;
    if (pthread_create(&t->thread, NULL, tick_main, t) != 0) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        free(t);
        return NULL;
    }
    return t;
}

void js_ticker_free(js_ticker *t)
{
    if (t == NULL)
        return;
    /* From fn itself the join cannot succeed and t would be freed under the
     * running thread: a programming error, stopped here (libsodium's
     * sodium_misuse), not a use-after-free later. */
    if (pthread_equal(pthread_self(), t->thread))
        abort();
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    /* A call in progress finishes first: the caller may free what ctx
     * points to as soon as this returns. */
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}
