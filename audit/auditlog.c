/*
 * auditlog.c - the audit log's public entry points (auditlog.h, FORMAT.md):
 * open and close, the queue js_audit_submit feeds, js_audit_append_sync and
 * the status getters. The work is done by the writer thread (writer.c), the
 * notifier thread (notifier.c), denial folding (fold.c), start-up recovery
 * (recovery.c) and key rotation (keyrot.c); auditlog_int.h holds the struct
 * they share.
 *
 * Threads: workers call js_audit_submit(), which builds the record's member
 * text (no seq, no chain yet) and queues it under a mutex -- it never touches
 * a file. One writer thread takes the whole queue and makes it durable; the
 * notifier thread then calls each `done`.
 */
#include "auditlog.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auditlog_int.h"
#include "clock.h"
#include "record.h"

/* ---- the queue ------------------------------------------------------------------------ */

/* ---- public API ----------------------------------------------------------------------- */

void js_audit_expect(js_audit *a)
{
    atomic_fetch_add(&a->expected, 1);
}

/* Withdraws one announcement; under mu the caller may hold. */
static bool expect_drop(js_audit *a)
{
    return atomic_fetch_sub(&a->expected, 1) == 1 && a->commit_waiting;
}

void js_audit_expect_cancel(js_audit *a)
{
    /* The writer checks `expected` under mu and waits on `wake` under mu:
     * taking mu to signal means it either saw the new count or is waiting
     * now, so the last withdrawal ends its delay at once. */
    if (atomic_fetch_sub(&a->expected, 1) == 1) {
        pthread_mutex_lock(&a->mu);
        if (a->commit_waiting)
            pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->mu);
    }
}

static js_status submit(js_audit *a, const js_audit_event *ev, js_audit_done_fn done, void *ctx,
                        bool expected, js_err *err)
{
    item *it = calloc(1, sizeof(*it));
    js_status st = it != NULL ? js_audit_event_body(ev, 0, &it->body, err) : js_err_oom(err);
    /* Bound here, so one oversized event is the caller's error and cannot
     * fail a whole batch (seq, time and prev add at most RECORD_OVERHEAD). */
    if (st == JS_OK && strlen(it->body) > JS_AUDIT_MAX_PAYLOAD - RECORD_OVERHEAD) {
        free(it->body);
        st = js_err_set(err, JS_EINVAL, JS_R_AUDIT_RECORD_TOO_LARGE,
                        "audit record larger than %u bytes", JS_AUDIT_MAX_PAYLOAD);
    }
    if (st != JS_OK) {
        free(it);
        if (expected)
            js_audit_expect_cancel(a);
        return st;
    }
    js_wall_format(js_wall_ms(), it->time);
    it->done = done;
    it->ctx = ctx;
    it->lost_weight = done == NULL ? 1 : 0;
    pthread_mutex_lock(&a->mu);
    /* Queued (or refused) and no longer expected, in one step under mu. */
    bool last = expected && expect_drop(a);
    if (a->failed || a->closing || a->qlen >= QUEUE_MAX) {
        if (a->failed)
            st = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "%s", a->why.msg);
        else if (a->closing)
            st = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log is closing");
        else
            st =
                js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                           "audit log queue full (%u records): the disk cannot keep up", QUEUE_MAX);
        if (last)
            pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->mu);
        free(it->body);
        free(it);
        return st;
    }
    if (a->qtail != NULL)
        a->qtail->next = it;
    else
        a->qhead = it;
    a->qtail = it;
    a->qlen++;
    /* Wake the writer only when it has something to do: an idle writer
     * waits for a first record; one in its group-commit delay, for the
     * batch to fill or the last announced record. A busy writer takes the
     * queue when it is done, unwoken (each needless wake-up is a context
     * switch per record). */
    if (a->qlen == 1 || last || (a->commit_waiting && a->qlen >= COMMIT_TARGET))
        pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    return JS_OK;
}

js_status js_audit_submit(js_audit *a, const js_audit_event *ev, js_audit_done_fn done, void *ctx,
                          js_err *err)
{
    return submit(a, ev, done, ctx, false, err);
}

js_status js_audit_submit_expected(js_audit *a, const js_audit_event *ev, js_audit_done_fn done,
                                   void *ctx, js_err *err)
{
    return submit(a, ev, done, ctx, true, err);
}

/* How long append_sync waits for its record. A writer stuck in the HSM or
 * in fdatasync must not hold its callers (the control plane, shutdown)
 * forever; the record may still land later, but is not confirmed. */
#define SYNC_WAIT_S 30

/* Shared by the waiter and the writer's callback; the last one frees it,
 * so a callback after a timed-out wait never touches a dead stack frame. */
typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    js_status st;
    uint64_t seq;
    js_err err;
} sync_wait;

static void sync_release(sync_wait *w)
{
    pthread_mutex_lock(&w->mu);
    bool last = --w->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
    }
}

static void sync_done(void *ctx, js_status st, uint64_t seq, const js_err *err)
{
    sync_wait *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->st = st;
    w->seq = seq;
    if (err != NULL)
        w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    sync_release(w);
}

js_status js_audit_append_sync(js_audit *a, const js_audit_event *ev, uint64_t *seq, js_err *err)
{
    sync_wait *w = calloc(1, sizeof(*w));
    JS_ENSURE_ALLOC(w, err);
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    w->refs = 2;
    js_status st = js_audit_submit(a, ev, sync_done, w, err);
    if (st != JS_OK) {
        w->refs = 1; /* the callback will never run */
        sync_release(w);
        return st;
    }
    struct timespec until = js_mono_deadline((int64_t)SYNC_WAIT_S * 1000);
    pthread_mutex_lock(&w->mu);
    while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    bool done = w->done;
    st = done ? w->st : JS_EUNAVAIL;
    if (done && st == JS_OK && seq != NULL)
        *seq = w->seq;
    if (done && st != JS_OK && err != NULL)
        *err = w->err;
    pthread_mutex_unlock(&w->mu);
    if (!done)
        js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                   "audit log did not confirm the record within %d s", SYNC_WAIT_S);
    sync_release(w);
    return st;
}

bool js_audit_disk_low(js_audit *a, uint64_t *free_bytes)
{
    if (free_bytes != NULL)
        *free_bytes = atomic_load(&a->disk_free);
    return atomic_load(&a->disk_low);
}

uint64_t js_audit_records_lost(js_audit *a)
{
    return atomic_load(&a->lost_total);
}

uint64_t js_audit_last_checkpoint_ms(js_audit *a)
{
    return atomic_load(&a->last_cp_wall_ms);
}

bool js_audit_healthy(js_audit *a, js_err *why)
{
    pthread_mutex_lock(&a->mu);
    bool ok = !a->failed;
    if (!ok && why != NULL)
        *why = a->why;
    pthread_mutex_unlock(&a->mu);
    return ok;
}

static void audit_free(js_audit *a)
{
    if (a == NULL)
        return;
    audit_notifier_stop(a);
    (void)audit_cpfile_stop(a, NULL); /* idle on these paths: close stopped it */
    if (a->fd >= 0)
        close(a->fd);
    audit_finish_items(a->qhead, JS_EUNAVAIL, &a->why);
    if (a->nsync_init) {
        pthread_cond_destroy(&a->nwake);
        pthread_mutex_destroy(&a->nmu);
    }
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->cwake);
    pthread_cond_destroy(&a->cexit_cv);
    pthread_mutex_destroy(&a->cmu);
    pthread_mutex_destroy(&a->cwmu);
    free(a->cbuf);
    pthread_cond_destroy(&a->rot_cv);
    pthread_cond_destroy(&a->exit_cv);
    pthread_mutex_destroy(&a->mu);
    free(a->pubkey_pem);
    free(a->rot_pem);
    free(a->folds);
    free(a->pending_cp);
    free(a->accept_reason);
    free(a->dir);
    free(a->origin);
    free(a);
}

bool js_audit_close(js_audit *a)
{
    if (a == NULL)
        return true;
    /* Bounded: a writer stuck in fdatasync (a hung disk) or in the HSM must
     * not hold the shutdown forever. The wait is on a condition variable the
     * writer signals as it returns, so the join below never blocks. */
    pthread_mutex_lock(&a->mu);
    a->closing = true;
    pthread_cond_signal(&a->wake);
    struct timespec until = js_mono_deadline((int64_t)a->close_wait_ms);
    while (a->thread_started && !a->writer_exited &&
           pthread_cond_timedwait(&a->exit_cv, &a->mu, &until) == 0)
        ;
    bool stuck = a->thread_started && !a->writer_exited;
    pthread_mutex_unlock(&a->mu);
    if (stuck)
        return false; /* nothing freed: the writer may still use it */
    if (a->thread_started)
        pthread_join(a->thread, NULL);
    /* Every batch the writer finished is delivered, and checkpoint.json
     * names the close checkpoint, before we return -- within the same bound. */
    audit_notifier_stop(a);
    if (!audit_cpfile_stop(a, &until))
        return false; /* nothing freed: the checkpoint.json thread may still use it */
    js_err_set(&a->why, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log is closed");
    audit_free(a);
    return true;
}

js_status js_audit_open(const js_audit_options *opts, js_audit **out, js_err *err)
{
    JS_ENSURE(opts != NULL && opts->dir != NULL && opts->sign != NULL, err, JS_ECONFIG,
              JS_R_AUDIT_CONFIG, "audit log needs a directory and a signing callback");
    JS_ENSURE(js_audit_origin_valid(opts->origin), err, JS_ECONFIG, JS_R_AUDIT_CONFIG,
              "audit origin must be 1..%d characters of [A-Za-z0-9._:/@-]", JS_AUDIT_ORIGIN_MAX);
    JS_ENSURE(strlen(opts->dir) < PATH_MAX_AUDIT - 64, err, JS_ECONFIG, JS_R_AUDIT_CONFIG,
              "audit log directory path too long");
    js_audit *a = calloc(1, sizeof(*a));
    JS_ENSURE_ALLOC(a, err);
    a->fd = -1;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->cmu, NULL);
    pthread_mutex_init(&a->cwmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->wake, &ca);
    pthread_cond_init(&a->cwake, &ca);
    pthread_cond_init(&a->cexit_cv, &ca);
    pthread_cond_init(&a->rot_cv, &ca);
    pthread_cond_init(&a->exit_cv, &ca);
    pthread_condattr_destroy(&ca);
    a->dir = strdup(opts->dir);
    a->origin = strdup(opts->origin);
    a->folds = calloc(JS_AUDIT_FOLD_MAX, sizeof(*a->folds));
    atomic_init(&a->disk_low, false);
    atomic_init(&a->disk_free, UINT64_MAX);
    atomic_init(&a->last_cp_wall_ms, 0);
    if (a->dir == NULL || a->origin == NULL || a->folds == NULL) {
        audit_free(a);
        return js_err_oom(err);
    }
    a->interval_ms = opts->checkpoint_interval_ms ? opts->checkpoint_interval_ms : 1000;
    a->records_thr = opts->checkpoint_records ? opts->checkpoint_records : 1000;
    a->heartbeat_ms = opts->heartbeat_ms ? opts->heartbeat_ms : a->interval_ms;
    a->segment_bytes = opts->segment_bytes ? opts->segment_bytes : DEFAULT_SEG;
    if (a->segment_bytes > SEGMENT_MAX)
        a->segment_bytes = SEGMENT_MAX;
    a->retry_ms = opts->retry_ms ? opts->retry_ms : 1000;
    a->close_wait_ms = opts->close_wait_ms ? opts->close_wait_ms : JS_AUDIT_CLOSE_WAIT_MS;
    a->no_fsync = opts->no_fsync;
    a->durable.sign = opts->sign;
    a->durable.sign_ctx = opts->sign_ctx;
    if (opts->pubkey_pem != NULL && (a->pubkey_pem = strdup(opts->pubkey_pem)) == NULL) {
        audit_free(a);
        return js_err_oom(err);
    }
    if (opts->io != NULL)
        a->io = *opts->io;
    a->on_batch = opts->on_batch;
    a->on_batch_ctx = opts->on_batch_ctx;
    a->on_fold = opts->on_fold;
    a->on_fold_ctx = opts->on_fold_ctx;
    a->on_key_rotated = opts->on_key_rotated;
    a->on_key_rotated_ctx = opts->on_key_rotated_ctx;
    a->min_free_bytes = opts->min_free_bytes ? opts->min_free_bytes : JS_AUDIT_MIN_FREE_DEFAULT;
    a->min_free_percent = opts->min_free_percent > 100 ? 100 : opts->min_free_percent;
    a->watermark_off = opts->disk_watermark_off;
    if (opts->accept_loss_reason != NULL) {
        size_t rl = strlen(opts->accept_loss_reason);
        if (rl == 0 || rl > JS_AUDIT_ACCEPT_REASON_MAX) {
            audit_free(a);
            return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_CONFIG,
                              "the reason for accepting an audit loss must be 1..%u bytes",
                              JS_AUDIT_ACCEPT_REASON_MAX);
        }
        a->accept_reason = strdup(opts->accept_loss_reason);
        if (a->accept_reason == NULL) {
            audit_free(a);
            return js_err_oom(err);
        }
    }
    js_merkle_frontier_init(&a->durable.tree);
    a->durable.next_seq = 1;

    js_status st = audit_open_log(a, opts, err);
    if (st == JS_OK)
        audit_disk_check(a, true); /* the state is known before the first caller asks */
    if (st == JS_OK) {
        audit_notifier_start(a);
        audit_cpfile_start(a);
    }
    if (st == JS_OK && pthread_create(&a->thread, NULL, audit_writer_main, a) != 0)
        st = js_err_set(err, JS_EINTERNAL, JS_R_AUDIT_THREAD, "cannot start the audit writer");
    if (st != JS_OK) {
        audit_free(a);
        return st;
    }
    a->thread_started = true;
    *out = a;
    return JS_OK;
}
