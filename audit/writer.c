/*
 * writer.c - the audit log's writer thread (auditlog.h, FORMAT.md §4-§6).
 *
 * The writer takes the whole queue, assigns seq and prev in order, appends
 * any due checkpoint, writes the batch with one write and one fdatasync
 * (group commit), and only then hands the batch to the notifier, which calls
 * each `done`.
 *
 * Failure: a write or fdatasync error fails the batch and everything queued
 * (fail closed). An fdatasync error is never retried as if it succeeded: the
 * kernel may already have dropped the dirty pages (PostgreSQL "fsyncgate",
 * 2018), so recovery truncates the segment back to the last offset known to
 * be durable, syncs that, and re-writes from the chain state of the last
 * durable record, starting with a RECOVERY record and a checkpoint.
 *
 * Writer-only state (fd, chain, tree) is touched by this thread only, and by
 * js_audit_open before the thread starts / js_audit_close after join.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "auditlog_int.h"
#include "clock.h"
#include "record.h"
#include "statefile.h"

/* ---- I/O through the fault-injection hooks ------------------------------------------ */

static ssize_t io_write(js_audit *a, int fd, const void *buf, size_t len)
{
    return a->io.write != NULL ? a->io.write(a->io.ctx, fd, buf, len) : write(fd, buf, len);
}

int audit_io_sync(js_audit *a, int fd)
{
    if (a->no_fsync)
        return 0;
    return a->io.fdatasync != NULL ? a->io.fdatasync(a->io.ctx, fd) : fdatasync(fd);
}

js_status audit_write_all(js_audit *a, int fd, const uint8_t *p, size_t len, const char *what,
                          js_err *err)
{
    while (len > 0) {
        ssize_t n = io_write(a, fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log %s failed: %s",
                              what, n == 0 ? "short write" : strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return JS_OK;
}

js_status audit_sync_fd(js_audit *a, int fd, const char *what, js_err *err)
{
    JS_ENSURE(audit_io_sync(a, fd) == 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
              "audit log %s fdatasync failed: %s", what, strerror(errno));
    return JS_OK;
}

js_status audit_sync_dir(js_audit *a, js_err *err)
{
    if (a->no_fsync)
        return JS_OK;
    int dfd = open(a->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    JS_ENSURE(dfd >= 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
              "audit log directory %s cannot be opened: %s", a->dir, strerror(errno));
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    JS_ENSURE(rc == 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
              "audit log directory fsync failed: %s", strerror(e));
    return JS_OK;
}

static void seg_path(const js_audit *a, unsigned long num, char *out, size_t cap)
{
    snprintf(out, cap, "%s/audit-%06lu.log", a->dir, num);
}

/* Writes DIR/name with the one atomic writer (statefile.h: O_EXCL|O_NOFOLLOW
 * temp file, fsync, rename, fsync dir): a stale temp file or a planted
 * symlink is never opened. Its failure fails the log like any other write. */
js_status audit_write_file(js_audit *a, const char *name, const void *data, size_t len, js_err *err)
{
    char path[PATH_MAX_AUDIT];
    snprintf(path, sizeof(path), "%s/%s", a->dir, name);
    js_err e;
    js_err_clear(&e);
    /* audit.fsync: false (a test-only switch) skips every fsync of the log,
     * these small files included, as it always has. */
    if (js_statefile_write_flags(path, data, len, "audit", a->no_fsync ? JS_STATEFILE_NO_SYNC : 0,
                                 &e) == JS_OK)
        return JS_OK;
    return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log %s failed: %s", name,
                      e.msg);
}
/* ---- batch encoding ------------------------------------------------------------------- */

static js_status batch_reserve(batch *b, size_t more, js_err *err)
{
    if (b->len + more <= b->cap)
        return JS_OK;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + more)
        nc *= 2;
    uint8_t *nb = realloc(b->buf, nc);
    JS_ENSURE_ALLOC(nb, err);
    b->buf = nb;
    b->cap = nc;
    return JS_OK;
}

void audit_batch_free(batch *b)
{
    free(b->buf);
    free(b->cp_payload);
    memset(b, 0, sizeof(*b));
}

/* Appends one framed record with the next seq; advances the chain state. */
js_status audit_batch_add(batch *b, chain_state *cs, const char *time, const char *body, bool is_cp,
                          js_err *err)
{
    JS_GUARD(batch_reserve(b, JS_AUDIT_FRAME_HDR + JS_AUDIT_MAX_PAYLOAD + 1, err));
    char *payload = (char *)b->buf + b->len + JS_AUDIT_FRAME_HDR;
    size_t plen = 0;
    JS_GUARD(js_audit_payload_assemble(cs->next_seq, time, body, cs->head, payload,
                                       JS_AUDIT_MAX_PAYLOAD + 1, &plen, err));
    js_audit_frame_header((const uint8_t *)payload, (uint32_t)plen, b->buf + b->len);
    uint8_t leaf[32];
    js_merkle_leaf_hash((const uint8_t *)payload, plen, leaf);
    js_merkle_frontier_append(&cs->tree, leaf);
    js_audit_record_hash((const uint8_t *)payload, plen, cs->head);
    if (is_cp) {
        char *copy = malloc(plen);
        JS_ENSURE_ALLOC(copy, err);
        memcpy(copy, payload, plen);
        free(b->cp_payload);
        b->cp_payload = copy;
        b->cp_len = plen;
        b->cp_seq = cs->next_seq;
        b->has_cp = true;
        memcpy(cs->last_cp_hash, cs->head, 32);
        cs->since_cp = 0;
    } else {
        cs->since_cp++;
    }
    cs->next_seq++;
    b->len += JS_AUDIT_FRAME_HDR + plen;
    b->nrec++;
    return JS_OK;
}

/* FORMAT.md §5.1: how late this checkpoint is against its schedule -- the
 * previous checkpoint's making plus the interval (records pending) or the
 * heartbeat (idle) -- measured on the monotonic clock, and the largest cause
 * the writer saw since then. The writer says so itself, signed, so a verifier
 * can tell a stalled writer from a log with sealed intervals cut out. */
static void note_late(const js_audit *a, const chain_state *cs, js_audit_checkpoint *cp,
                      int64_t now)
{
    if (a->cp_made_mono == 0)
        return; /* the first checkpoint of this process ("open"): no schedule */
    int64_t due = a->cp_made_mono + (int64_t)(cs->since_cp > 0 ? a->interval_ms : a->heartbeat_ms);
    if (now - due <= JS_AUDIT_LATE_TOLERANCE_MS)
        return;
    cp->late_ms = (uint64_t)(now - due);
    if (cp->late_ms > JS_AUDIT_LATE_MAX_MS)
        cp->late_ms = JS_AUDIT_LATE_MAX_MS;
    const char *why = "stalled";
    uint64_t why_ms = a->stall_ms;
    if (a->sync_ms > why_ms) {
        why = "fsync";
        why_ms = a->sync_ms;
    }
    if (a->sign_ms > why_ms) {
        why = "sign";
        why_ms = a->sign_ms;
    }
    /* A cause is named only when it was seen to take more than the
     * tolerance; otherwise the writer does not know why (busy, say). */
    if (why_ms > JS_AUDIT_LATE_TOLERANCE_MS) {
        snprintf(cp->late_why, sizeof(cp->late_why), "%s", why);
        cp->late_why_ms = why_ms < JS_AUDIT_LATE_MAX_MS ? why_ms : JS_AUDIT_LATE_MAX_MS;
    }
}

static uint64_t max_u64(uint64_t x, uint64_t y)
{
    return x > y ? x : y;
}

/* The writer meant to run at due_ms and runs now: anything beyond that the
 * process (or its thread) was not scheduled -- SIGSTOP, a VM pause, swap. */
static void note_wake(js_audit *a, int64_t due_ms)
{
    int64_t now = js_mono_ms();
    if (now > due_ms)
        a->stall_ms = max_u64(a->stall_ms, (uint64_t)(now - due_ms));
}

/* A checkpoint (FORMAT.md §5) over the records before it, signed through
 * opts->sign (the HSM audit key). */
js_status audit_batch_add_checkpoint(js_audit *a, batch *b, chain_state *cs, const char *reason,
                                     js_err *err)
{
    js_audit_checkpoint cp;
    memset(&cp, 0, sizeof(cp));
    cp.seq = cs->next_seq;
    cp.tree_size = cs->next_seq - 1;
    snprintf(cp.origin, sizeof(cp.origin), "%s", a->origin);
    cp.time_ms = js_wall_ms();
    js_wall_format(cp.time_ms, cp.time);
    snprintf(cp.reason, sizeof(cp.reason), "%s", reason);
    js_merkle_frontier_root(&cs->tree, cp.root);
    memcpy(cp.head, cs->head, 32);
    memcpy(cp.prev_checkpoint, cs->last_cp_hash, 32);
    cp.heartbeat_ms = a->heartbeat_ms;
    cp.interval_ms = a->interval_ms;
    int64_t made = js_mono_ms();
    note_late(a, cs, &cp, made);
    /* FORMAT.md §5.4: the first checkpoint after a rotation request names
     * the new key and is signed by the old one; every later one in this
     * chain is signed by the new key. */
    js_audit_sign_fn sign = cs->sign;
    void *sign_ctx = cs->sign_ctx;
    pthread_mutex_lock(&a->mu);
    bool announce = a->rot_pending && !cs->announced;
    js_audit_sign_fn next_sign = a->rot_sign;
    void *next_ctx = a->rot_sign_ctx;
    if (announce)
        memcpy(cp.next_key, a->rot_id, sizeof(cp.next_key));
    pthread_mutex_unlock(&a->mu);
    char *body = NULL;
    size_t blen = 0;
    JS_GUARD(js_audit_checkpoint_body(&cp, &body, &blen, err));
    js_err serr;
    js_err_clear(&serr);
    js_status st =
        sign(sign_ctx, (const uint8_t *)body, blen, cp.sig, sizeof(cp.sig), &cp.sig_len, &serr);
    free(body);
    b->cp_mono = made;
    b->cp_wall_ms = cp.time_ms;
    b->cp_sign_ms = (uint64_t)(js_mono_ms() - made);
    if (st != JS_OK || cp.sig_len != 64)
        return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                          "audit checkpoint signing failed: %s",
                          st != JS_OK ? serr.msg : "signature is not ES256 r||s");
    char *members = NULL;
    JS_GUARD(js_audit_checkpoint_members(&cp, &members, err));
    st = audit_batch_add(b, cs, cp.time, members, true, err);
    free(members);
    if (st == JS_OK && announce) {
        cs->sign = next_sign;
        cs->sign_ctx = next_ctx;
        cs->announced = true;
    }
    return st;
}

/* Body of a RECOVERY record. */
js_status audit_recovery_body(const char *reason, const char *message, json_t *detail, char **out,
                              js_err *err)
{
    char *d = json_dumps(detail, JSON_COMPACT | JSON_PRESERVE_ORDER);
    JS_ENSURE_ALLOC(d, err);
    js_audit_event ev = {
        .type = "recovery", .reason = reason, .message = message, .detail_json = d};
    js_status st = js_audit_event_body(&ev, 0, out, err);
    free(d);
    return st;
}

/* ---- segment I/O ---------------------------------------------------------------------- */

js_status audit_open_segment(js_audit *a, unsigned long num, bool create, js_err *err)
{
    char path[PATH_MAX_AUDIT];
    seg_path(a, num, path, sizeof(path));
    int flags = O_WRONLY | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0);
    int fd = open(path, flags, 0600);
    JS_ENSURE(fd >= 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "cannot open segment %s: %s", path,
              strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "cannot stat %s", path);
    }
    if (a->fd >= 0)
        close(a->fd);
    a->fd = fd;
    a->seg_num = num;
    a->seg_size = (uint64_t)st.st_size;
    return JS_OK;
}

/* Size-based rotation, at batch boundaries: the chain simply continues in the
 * next file (FORMAT.md §6). A new segment is made durable (its directory
 * entry synced) before anything is written to it. */
static js_status maybe_rotate(js_audit *a, size_t len, js_err *err)
{
    if (a->seg_size == 0 || a->seg_size + len <= a->segment_bytes)
        return JS_OK;
    JS_GUARD(audit_open_segment(a, a->seg_num + 1, true, err));
    if (a->seg_size != 0) {
        /* Leftover of an earlier failed rotation: nothing in it is durable. */
        JS_ENSURE(ftruncate(a->fd, 0) == 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                  "cannot truncate new segment: %s", strerror(errno));
        a->seg_size = 0;
    }
    return audit_sync_dir(a, err);
}

/* One write, one fdatasync; on success the batch is durable and committed. */
js_status audit_write_batch(js_audit *a, batch *b, chain_state *work, js_err *err)
{
    JS_GUARD(maybe_rotate(a, b->len, err));
    JS_GUARD(audit_write_all(a, a->fd, b->buf, b->len, "write", err));
    int64_t t0 = js_mono_us();
    JS_GUARD(audit_sync_fd(a, a->fd, "segment", err));
    uint64_t sync_us = (uint64_t)(js_mono_us() - t0);
    if (a->on_batch != NULL)
        a->on_batch(a->on_batch_ctx, b->nrec, sync_us);
    a->seg_size += b->len;
    a->durable = *work;
    if (work->announced)
        JS_GUARD(audit_rotation_commit(a, err));
    if (b->has_cp) {
        /* The next checkpoint's schedule starts at this one's making; what
         * delayed it since (its signing, this fdatasync) is evidence. */
        a->cp_made_mono = b->cp_mono;
        atomic_store(&a->last_cp_wall_ms, b->cp_wall_ms > 0 ? (uint64_t)b->cp_wall_ms : 0);
        a->stall_ms = 0;
        a->sign_ms = b->cp_sign_ms;
        a->sync_ms = 0;
    }
    a->sync_ms = max_u64(a->sync_ms, sync_us / 1000);
    if (b->has_cp) {
        a->last_cp_mono = js_mono_ms();
        free(a->pending_cp);
        a->pending_cp = b->cp_payload;
        a->pending_cp_len = b->cp_len;
        a->pending_cp_seq = b->cp_seq;
        b->cp_payload = NULL;
        a->cp_file_pending = true;
    }
    return JS_OK;
}

/* ---- the writer thread ---------------------------------------------------------------- */

void audit_set_failed(js_audit *a, const js_err *why)
{
    pthread_mutex_lock(&a->mu);
    if (!a->failed) {
        a->failed = true;
        a->why = *why;
    }
    a->fail_mono = js_mono_ms();
    /* From another thread (checkpoint.json's), the writer may be asleep
     * until a heartbeat: its recovery is due in retry_ms. Its waits re-check
     * their conditions, so a needless wake-up costs nothing. */
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
}

/* Time-based checkpoint due? (FORMAT.md §5: every interval while busy,
 * every heartbeat when idle -- an empty interval is sealed too.) */
static int64_t cp_due(const js_audit *a, const chain_state *cs)
{
    return a->last_cp_mono + (int64_t)(cs->since_cp > 0 ? a->interval_ms : a->heartbeat_ms);
}

/* Encodes a batch: queued items (folded records among them), checkpoints at
 * the records threshold and when due. Returns JS_OK with b empty if there
 * was nothing to write. Items are numbered in queue order. */
static js_status encode_batch(js_audit *a, batch *b, chain_state *cs, item *items, bool closing,
                              js_err *err)
{
    for (item *it = items; it != NULL; it = it->next) {
        it->seq = cs->next_seq;
        JS_GUARD(audit_batch_add(b, cs, it->time, it->body, false, err));
        if (cs->since_cp >= a->records_thr)
            JS_GUARD(audit_batch_add_checkpoint(a, b, cs, "records", err));
    }
    if (closing)
        return audit_batch_add_checkpoint(a, b, cs, "close", err);
    pthread_mutex_lock(&a->mu);
    bool rotate = a->rot_pending && !cs->announced;
    pthread_mutex_unlock(&a->mu);
    /* A rotation request is sealed at once: the caller waits for it. */
    if ((rotate || js_mono_ms() >= cp_due(a, cs)) && !(b->has_cp && cs->since_cp == 0 && !rotate))
        return audit_batch_add_checkpoint(a, b, cs, cs->since_cp > 0 ? "interval" : "heartbeat",
                                          err);
    return JS_OK;
}

/* Recovery after an I/O failure (auditlog.h): cut what is not known to be
 * durable, sync that, then a RECOVERY record and a checkpoint. */
static js_status try_recover(js_audit *a, js_err *err)
{
    js_err why;
    pthread_mutex_lock(&a->mu);
    why = a->why;
    pthread_mutex_unlock(&a->mu);
    JS_ENSURE(ftruncate(a->fd, (off_t)a->seg_size) == 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
              "audit log recovery: truncate failed: %s", strerror(errno));
    JS_GUARD(audit_sync_fd(a, a->fd, "segment", err));
    json_t *d = json_pack("{s:s, s:I, s:I, s:I}", "segment", "", "durable_offset",
                          (json_int_t)a->seg_size, "lost_records", (json_int_t)a->lost_records,
                          "lost_denials", (json_int_t)a->lost_denials);
    JS_ENSURE_ALLOC(d, err);
    char seg[32];
    snprintf(seg, sizeof(seg), "audit-%06lu.log", a->seg_num);
    json_object_set_new(d, "segment", json_string(seg));
    char *body = NULL;
    js_status st =
        audit_recovery_body(js_reason_name(JS_R_AUDIT_IO_RECOVERED), why.msg, d, &body, err);
    json_decref(d);
    JS_GUARD(st);
    chain_state work = a->durable;
    batch b;
    memset(&b, 0, sizeof(b));
    char t[25];
    js_wall_format(js_wall_ms(), t);
    st = audit_batch_add(&b, &work, t, body, false, err);
    free(body);
    if (st == JS_OK)
        st = audit_batch_add_checkpoint(a, &b, &work, "recovery", err);
    if (st == JS_OK)
        st = audit_write_batch(a, &b, &work, err);
    audit_batch_free(&b);
    if (st == JS_OK)
        a->lost_records = a->lost_denials = 0; /* the durable record reports them */
    if (st == JS_OK)
        st = audit_write_checkpoint_file(a, err);
    return st;
}

static int64_t next_due_locked(js_audit *a)
{
    if (a->failed)
        return a->fail_mono + (int64_t)a->retry_ms;
    int64_t due = cp_due(a, &a->durable);
    if (a->rot_pending)
        due = js_mono_ms();
    due = audit_folds_due_locked(a, due);
    if (!a->watermark_off && a->disk_check_mono + JS_AUDIT_DISK_CHECK_MS < due)
        due = a->disk_check_mono + JS_AUDIT_DISK_CHECK_MS;
    return due;
}

/* A CLOCK_MONOTONIC time in microseconds (js_mono_us) as the absolute
 * timespec pthread_cond_timedwait takes (the condition variables are created
 * on CLOCK_MONOTONIC). */
static struct timespec mono_timespec_us(int64_t us)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(us / 1000000);
    ts.tv_nsec = (long)(us % 1000000) * 1000L;
    return ts;
}

static void wait_until(js_audit *a, int64_t due_ms)
{
    struct timespec ts = mono_timespec_us(due_ms * 1000);
    pthread_cond_timedwait(&a->wake, &a->mu, &ts);
}

/* Disk watermark (auditlog.h): at most once per JS_AUDIT_DISK_CHECK_MS, on
 * the writer thread, never per record. */
void audit_disk_check(js_audit *a, bool force)
{
    if (a->watermark_off)
        return;
    int64_t now = js_mono_ms();
    if (!force && now < a->disk_check_mono + JS_AUDIT_DISK_CHECK_MS)
        return;
    a->disk_check_mono = now;
    struct statvfs sv;
    int rc = a->io.statvfs != NULL ? a->io.statvfs(a->io.ctx, a->dir, &sv) : statvfs(a->dir, &sv);
    if (rc != 0) {
        /* Unknown is not low: the write path reports real failures. */
        atomic_store(&a->disk_free, UINT64_MAX);
        atomic_store(&a->disk_low, false);
        return;
    }
    uint64_t unit = sv.f_frsize != 0 ? (uint64_t)sv.f_frsize : (uint64_t)sv.f_bsize;
    uint64_t avail = (uint64_t)sv.f_bavail;
    uint64_t free_bytes = unit != 0 && avail > UINT64_MAX / unit ? UINT64_MAX : avail * unit;
    bool low = free_bytes < a->min_free_bytes;
    if (a->min_free_percent > 0 && sv.f_blocks > 0)
        low = low || avail * 100 < (uint64_t)sv.f_blocks * a->min_free_percent;
    atomic_store(&a->disk_free, free_bytes);
    atomic_store(&a->disk_low, low);
}

void *audit_writer_main(void *arg)
{
    js_audit *a = arg;
    fold_entry *folds = calloc(JS_AUDIT_FOLD_MAX, sizeof(*folds));
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->closing && a->qhead == NULL) {
            int64_t due = next_due_locked(a);
            if (js_mono_ms() >= due)
                break;
            wait_until(a, due);
            note_wake(a, due);
        }
        if (!a->no_fsync && !a->closing && !a->failed && a->qhead != NULL &&
            a->qlen < COMMIT_TARGET && atomic_load(&a->expected) > 0) {
            /* Group commit: records are on their way (js_audit_expect); wait
             * for them, bounded, rather than pay an fdatasync each. */
            int64_t until_us = js_mono_us() + COMMIT_DELAY_US;
            struct timespec until = mono_timespec_us(until_us);
            a->commit_waiting = true;
            while (a->qlen < COMMIT_TARGET && atomic_load(&a->expected) > 0 && !a->closing &&
                   pthread_cond_timedwait(&a->wake, &a->mu, &until) == 0)
                ;
            a->commit_waiting = false;
            note_wake(a, until_us / 1000);
        }
        item *items = a->qhead;
        item *tail = a->qtail;
        a->qhead = a->qtail = NULL;
        a->qlen = 0;
        bool closing = a->closing;
        bool failed = a->failed;
        js_err why = a->why;
        /* While failed, folds stay counted in the table (bounded) and are
         * written after recovery. */
        size_t nf = (!failed && folds != NULL) ? audit_take_folds_locked(a, folds, closing) : 0;
        bool retry_due = failed && js_mono_ms() >= a->fail_mono + (int64_t)a->retry_ms;
        pthread_mutex_unlock(&a->mu);

        audit_disk_check(a, false);
        audit_folds_to_items(a, folds, nf, &items, &tail);

        js_err err;
        js_err_clear(&err);
        if (failed) {
            audit_deliver(a, items, JS_EUNAVAIL, &why);
            if (closing)
                break;
            if (retry_due) {
                if (try_recover(a, &err) == JS_OK) {
                    pthread_mutex_lock(&a->mu);
                    a->failed = false;
                    js_err_clear(&a->why);
                    continue;
                }
                audit_set_failed(a, &err); /* keep the first cause, retry later */
            }
            pthread_mutex_lock(&a->mu);
            continue;
        }

        chain_state work = a->durable;
        batch b;
        memset(&b, 0, sizeof(b));
        js_status st = folds == NULL ? js_err_set(&err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                                                  "audit writer out of memory")
                                     : encode_batch(a, &b, &work, items, closing, &err);
        if (st == JS_OK && b.len > 0)
            st = audit_write_batch(a, &b, &work, &err);
        audit_batch_free(&b);
        if (st != JS_OK) {
            if (st != JS_EUNAVAIL)
                js_err_set(&err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log failed: %s",
                           err.msg);
            audit_set_failed(a, &err);
            pthread_mutex_lock(&a->mu);
            why = a->why;
            pthread_mutex_unlock(&a->mu);
            audit_deliver(a, items, JS_EUNAVAIL, &why);
        } else {
            audit_deliver(a, items, JS_OK, NULL);
            audit_cpfile_post(a);
        }
        if (closing)
            break;
        pthread_mutex_lock(&a->mu);
    }
    free(folds);
    pthread_mutex_lock(&a->mu);
    a->writer_exited = true;
    pthread_cond_broadcast(&a->exit_cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}
