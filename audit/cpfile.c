/*
 * cpfile.c - DIR/checkpoint.json (FORMAT.md §5.3), replaced by a thread of
 * its own.
 *
 * Replacing the file atomically costs an fsync of a temp file, a rename and
 * an fsync of the directory: 2-17 ms measured (perf trace) on ext4 over a
 * virtio disk, once per checkpoint -- every second while busy. Done on the
 * writer thread, it held every record queued behind it, the once-a-second
 * stall of issue 11; here it never delays a batch.
 *
 * What still holds: only a durable checkpoint is posted (the writer posts
 * after the batch's fdatasync); files are replaced in checkpoint order,
 * never an older one after a newer one (cwmu, cwritten_seq), whichever
 * thread writes; the close checkpoint is written before js_audit_close
 * returns (audit_cpfile_stop drains), and that wait is bounded like the
 * writer's (a hung disk must not hold a shutdown forever); a failed replace
 * fails the log, as it did on the writer (fail closed; the writer's recovery
 * writes a newer one), unless a newer one was written meanwhile.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "auditlog_int.h"
#include "clock.h"

/* Replaces checkpoint.json with payload (the checkpoint with sequence
 * number seq) unless a newer one was already written. */
static js_status cpfile_write(js_audit *a, const char *payload, size_t len, uint64_t seq,
                              js_err *err)
{
    pthread_mutex_lock(&a->cwmu);
    js_status st = JS_OK;
    if (seq > a->cwritten_seq) {
        char *buf = malloc(len + 1);
        if (buf == NULL) {
            st = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                            "checkpoint.json: out of memory");
        } else {
            memcpy(buf, payload, len);
            buf[len] = '\n';
            st = audit_write_file(a, "checkpoint.json", buf, len + 1, err);
            free(buf);
        }
        if (st == JS_OK)
            a->cwritten_seq = seq;
    }
    pthread_mutex_unlock(&a->cwmu);
    return st;
}

/* On the writer (or the opening) thread: at open, in recovery, and when the
 * checkpoint thread could not be started. Its fsyncs delay the writer, so
 * they count as lateness evidence (FORMAT.md §5.1). */
js_status audit_write_checkpoint_file(js_audit *a, js_err *err)
{
    if (!a->cp_file_pending)
        return JS_OK;
    int64_t t0 = js_mono_ms();
    js_status st = cpfile_write(a, a->pending_cp, a->pending_cp_len, a->pending_cp_seq, err);
    uint64_t took = (uint64_t)(js_mono_ms() - t0); /* two fsyncs inside */
    if (took > a->sync_ms)
        a->sync_ms = took;
    if (st == JS_OK)
        a->cp_file_pending = false;
    return st;
}

void audit_cpfile_post(js_audit *a)
{
    if (!a->cp_file_pending)
        return;
    if (!a->cp_started) {
        js_err err;
        js_err_clear(&err);
        if (audit_write_checkpoint_file(a, &err) != JS_OK)
            audit_set_failed(a, &err);
        return;
    }
    /* Only the newest matters: an older one not yet written is dropped. */
    pthread_mutex_lock(&a->cmu);
    free(a->cbuf);
    a->cbuf = a->pending_cp;
    a->clen = a->pending_cp_len;
    a->cseq = a->pending_cp_seq;
    pthread_cond_signal(&a->cwake);
    pthread_mutex_unlock(&a->cmu);
    a->pending_cp = NULL;
    a->pending_cp_len = 0;
    a->cp_file_pending = false;
}

static void *cpfile_main(void *arg)
{
    js_audit *a = arg;
    pthread_mutex_lock(&a->cmu);
    for (;;) {
        while (a->cbuf == NULL && !a->cstop)
            pthread_cond_wait(&a->cwake, &a->cmu);
        char *buf = a->cbuf;
        if (buf == NULL)
            break; /* stopping, and nothing left to write */
        size_t len = a->clen;
        uint64_t seq = a->cseq;
        a->cbuf = NULL;
        pthread_mutex_unlock(&a->cmu);
        js_err err;
        js_err_clear(&err);
        if (cpfile_write(a, buf, len, seq, &err) != JS_OK) {
            /* Under cwmu (then mu: no thread takes cwmu while holding mu):
             * if the writer's recovery replaced the file with a newer
             * checkpoint since, this failure is moot and must not fail the
             * log it has just recovered. */
            pthread_mutex_lock(&a->cwmu);
            if (a->cwritten_seq < seq)
                audit_set_failed(a, &err);
            pthread_mutex_unlock(&a->cwmu);
        }
        free(buf);
        pthread_mutex_lock(&a->cmu);
    }
    a->cexited = true;
    pthread_cond_broadcast(&a->cexit_cv);
    pthread_mutex_unlock(&a->cmu);
    return NULL;
}

void audit_cpfile_start(js_audit *a)
{
    if (pthread_create(&a->cpthread, NULL, cpfile_main, a) == 0)
        a->cp_started = true;
}

bool audit_cpfile_stop(js_audit *a, const struct timespec *until)
{
    if (!a->cp_started)
        return true;
    pthread_mutex_lock(&a->cmu);
    a->cstop = true;
    pthread_cond_signal(&a->cwake);
    while (!a->cexited && until != NULL &&
           pthread_cond_timedwait(&a->cexit_cv, &a->cmu, until) == 0)
        ;
    bool stuck = until != NULL && !a->cexited;
    pthread_mutex_unlock(&a->cmu);
    if (stuck)
        return false; /* in fsync on a hung disk: it may still use the log */
    pthread_join(a->cpthread, NULL);
    a->cp_started = false;
    return true;
}
