/*
 * fold.c - denial folding (FORMAT.md §3.1, auditlog.h js_audit_note_folded):
 * denials of one (type, caller or peer, reason) are counted in a bounded
 * table under the log's mutex and become one record with a "count" per
 * window, which the writer appends to its next batch; on_fold reports each
 * record once it is durable (or lost).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auditlog_int.h"
#include "clock.h"
#include "record.h"

int64_t audit_folds_due_locked(const js_audit *a, int64_t due)
{
    for (size_t i = 0; i < a->nfolds; i++)
        if (a->folds[i].start_mono + FOLD_WINDOW_MS < due)
            due = a->folds[i].start_mono + FOLD_WINDOW_MS;
    return due;
}

/* Takes due (or, when closing, all) folds into out. Under mu. */
size_t audit_take_folds_locked(js_audit *a, fold_entry *out, bool all)
{
    int64_t now = js_mono_ms();
    size_t n = 0;
    for (size_t i = 0; i < a->nfolds;) {
        if (all || now >= a->folds[i].start_mono + FOLD_WINDOW_MS) {
            out[n++] = a->folds[i];
            a->folds[i] = a->folds[--a->nfolds];
        } else {
            i++;
        }
    }
    return n;
}

/* What a folded record's `done` needs to report it through on_fold. */
typedef struct fold_note {
    js_audit *a;
    fold_entry e;
} fold_note;

static void fold_done(void *ctx, js_status st, uint64_t seq, const js_err *err)
{
    (void)err;
    fold_note *fn = ctx;
    js_audit *a = fn->a;
    js_audit_fold f = {.type = fn->e.type,
                       .caller = fn->e.is_peer ? NULL : fn->e.who,
                       .peer = fn->e.is_peer ? fn->e.who : NULL,
                       .reason = fn->e.reason,
                       .count = fn->e.count,
                       .seq = st == JS_OK ? seq : 0};
    if (a->on_fold != NULL)
        a->on_fold(a->on_fold_ctx, &f);
    free(fn);
}

/* Turns taken folds into items appended to *tail (FORMAT.md §3.1). A fold
 * that cannot be encoded (out of memory) is dropped, never the batch. */
void audit_folds_to_items(js_audit *a, const fold_entry *f, size_t n, item **head, item **tail)
{
    for (size_t i = 0; i < n; i++) {
        bool overflow = strcmp(f[i].type, "denials") == 0;
        js_audit_event ev = {
            .type = f[i].type,
            .caller = f[i].is_peer ? NULL : f[i].who,
            .peer = f[i].is_peer ? f[i].who : NULL,
            .decision = "deny",
            .reason = f[i].reason,
            .message = overflow ? "denials of callers beyond the fold table, folded into one record"
                                : "denied requests folded into one record",
        };
        item *it = calloc(1, sizeof(*it));
        fold_note *fn = malloc(sizeof(*fn));
        js_err e;
        if (it == NULL || fn == NULL ||
            js_audit_event_body(&ev, f[i].count, &it->body, &e) != JS_OK) {
            free(it);
            free(fn);
            continue;
        }
        fn->a = a;
        fn->e = f[i];
        js_wall_format(js_wall_ms(), it->time);
        it->done = fold_done;
        it->ctx = fn;
        it->lost_weight = f[i].count > 0 ? f[i].count : 1;
        if (*tail != NULL)
            (*tail)->next = it;
        else
            *head = it;
        *tail = it;
    }
}

/* FNV-1a over the fold key, a filter before the text compare (the text
 * decides, so collisions cost a strcmp and nothing else). */
static uint64_t fold_hash(const char *type, bool is_peer, const char *who, const char *reason)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *parts[3] = {type, who, reason};
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i]; *p != '\0'; p++)
            h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
        h = (h ^ (uint8_t)(i == 1 && is_peer ? 0xfe : 0xff)) * 0x100000001b3ULL;
    }
    return h;
}

/* Copies at most max bytes of src, never cutting a UTF-8 sequence in two
 * (a cut one would be recorded as U+FFFD: harmless, but avoidable). */
static void copy_bounded(char *dst, const char *src, size_t max)
{
    size_t n = strnlen(src, max + 1);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void js_audit_note_folded(js_audit *a, const char *type, const char *caller, const char *peer,
                          const char *reason)
{
    if (a == NULL)
        return;
    bool is_peer = caller == NULL || caller[0] == '\0';
    /* Bounded copies first, outside the lock: the key is what is recorded. */
    fold_entry k;
    copy_bounded(k.type, type != NULL && type[0] != '\0' ? type : "sign", JS_AUDIT_FOLD_TYPE_MAX);
    copy_bounded(k.who, is_peer ? (peer != NULL ? peer : "") : caller, JS_AUDIT_FOLD_WHO_MAX);
    copy_bounded(k.reason, reason != NULL && reason[0] != '\0' ? reason : "denied",
                 JS_AUDIT_FOLD_REASON_MAX);
    k.is_peer = is_peer;
    k.hash = fold_hash(k.type, k.is_peer, k.who, k.reason);
    pthread_mutex_lock(&a->mu);
    fold_entry *e = NULL;
    for (size_t i = 0; i < a->nfolds && e == NULL; i++)
        if (a->folds[i].hash == k.hash && a->folds[i].is_peer == k.is_peer &&
            strcmp(a->folds[i].who, k.who) == 0 && strcmp(a->folds[i].reason, k.reason) == 0 &&
            strcmp(a->folds[i].type, k.type) == 0)
            e = &a->folds[i];
    if (e == NULL && a->nfolds >= JS_AUDIT_FOLD_MAX - 1) {
        /* The table is bounded: every further triple in this window is
         * counted in one overflow record rather than growing memory or the
         * number of records (FORMAT.md §3.1). */
        memcpy(k.type, "denials", sizeof("denials"));
        memcpy(k.who, "(other)", sizeof("(other)"));
        k.is_peer = false;
        snprintf(k.reason, sizeof(k.reason), "%s", js_reason_name(JS_R_AUDIT_FOLD_OVERFLOW));
        k.hash = fold_hash(k.type, k.is_peer, k.who, k.reason);
        for (size_t i = 0; i < a->nfolds && e == NULL; i++)
            if (a->folds[i].hash == k.hash && strcmp(a->folds[i].type, "denials") == 0 &&
                strcmp(a->folds[i].who, "(other)") == 0)
                e = &a->folds[i];
    }
    if (e == NULL && a->nfolds < JS_AUDIT_FOLD_MAX) {
        e = &a->folds[a->nfolds++];
        *e = k;
        e->count = 0;
        e->start_mono = js_mono_ms();
        pthread_cond_signal(&a->wake);
    }
    if (e != NULL)
        e->count++;
    pthread_mutex_unlock(&a->mu);
}
