/*
 * notifier.c - the audit log's notifier thread: it runs the `done` callbacks
 * of finished batches, in order, so the writer can start the next write +
 * fdatasync while replies go out. When the hand-off cannot be allocated (or
 * the thread could not be started), the writer runs the callbacks itself:
 * slower, never lost.
 *
 * When nothing else waits -- no record queued for the writer, the notifier
 * idle -- a small batch's callbacks run on the writer thread at once: the
 * hand-off would only add a thread wake-up (a context switch, tens of
 * microseconds on a small VM) to a lone token's latency, and there is no
 * next batch for the writer to start meanwhile. Order is kept: the notifier
 * has nothing earlier. The callbacks write their log lines to stderr: if
 * the log's reader stalls, the writer then stalls with the workers and the
 * notifier, and checkpoints made after it carry late_ms (FORMAT.md §5.1).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "auditlog_int.h"

void audit_finish_items(item *it, js_status st, const js_err *why)
{
    while (it != NULL) {
        item *next = it->next;
        if (it->done != NULL)
            it->done(it->ctx, st, st == JS_OK ? it->seq : 0, st == JS_OK ? NULL : why);
        free(it->body);
        free(it);
        it = next;
    }
}

/* True if the writer should run these callbacks itself (see the top). */
static bool deliver_direct(js_audit *a, const item *items)
{
    size_t n = 0;
    for (const item *it = items; it != NULL; it = it->next)
        if (++n > DELIVER_DIRECT_MAX)
            return false;
    pthread_mutex_lock(&a->mu);
    bool queued = a->qhead != NULL;
    pthread_mutex_unlock(&a->mu);
    if (queued)
        return false;
    pthread_mutex_lock(&a->nmu);
    bool idle = a->nhead == NULL && !a->nbusy;
    pthread_mutex_unlock(&a->nmu);
    return idle;
}

/* Hands a finished batch to the notifier, in order. Without memory for the
 * hand-off the callbacks run here: slower, never lost. */
void audit_deliver(js_audit *a, item *items, js_status st, const js_err *why)
{
    if (items == NULL)
        return;
    if (st != JS_OK) {
        /* Nobody is told of these records' loss: count them for the next
         * recovery record and the metric (FORMAT.md §6). */
        uint64_t n = 0;
        for (const item *it = items; it != NULL; it = it->next) {
            if (it->lost_weight > 0) {
                n++;
                a->lost_denials += it->lost_weight;
            }
        }
        a->lost_records += n;
        atomic_fetch_add(&a->lost_total, n);
    }
    if (st == JS_OK && a->notifier_started && deliver_direct(a, items)) {
        audit_finish_items(items, st, why);
        return;
    }
    done_batch *d = calloc(1, sizeof(*d));
    if (d == NULL || !a->notifier_started) {
        free(d);
        audit_finish_items(items, st, why);
        return;
    }
    d->items = items;
    d->st = st;
    if (why != NULL)
        d->why = *why;
    pthread_mutex_lock(&a->nmu);
    if (a->ntail != NULL)
        a->ntail->next = d;
    else
        a->nhead = d;
    a->ntail = d;
    pthread_cond_signal(&a->nwake);
    pthread_mutex_unlock(&a->nmu);
}

static void *notifier_main(void *arg)
{
    js_audit *a = arg;
    pthread_mutex_lock(&a->nmu);
    for (;;) {
        while (a->nhead == NULL && !a->nstop)
            pthread_cond_wait(&a->nwake, &a->nmu);
        done_batch *d = a->nhead;
        a->nhead = a->ntail = NULL;
        if (d == NULL && a->nstop)
            break;
        a->nbusy = true;
        pthread_mutex_unlock(&a->nmu);
        while (d != NULL) {
            done_batch *next = d->next;
            audit_finish_items(d->items, d->st, d->st == JS_OK ? NULL : &d->why);
            free(d);
            d = next;
        }
        pthread_mutex_lock(&a->nmu);
        a->nbusy = false;
    }
    pthread_mutex_unlock(&a->nmu);
    return NULL;
}

void audit_notifier_start(js_audit *a)
{
    pthread_mutex_init(&a->nmu, NULL);
    pthread_cond_init(&a->nwake, NULL);
    a->nsync_init = true;
    if (pthread_create(&a->notifier, NULL, notifier_main, a) == 0)
        a->notifier_started = true;
}

void audit_notifier_stop(js_audit *a)
{
    if (!a->notifier_started)
        return;
    pthread_mutex_lock(&a->nmu);
    a->nstop = true;
    pthread_cond_signal(&a->nwake);
    pthread_mutex_unlock(&a->nmu);
    pthread_join(a->notifier, NULL);
    a->notifier_started = false;
}
