/*
 * auditlog.c - the audit log writer (auditlog.h, FORMAT.md).
 *
 * Threads: workers call js_audit_submit(), which builds the record's member
 * text (no seq, no chain yet) and queues it under a mutex -- it never touches
 * a file. One writer thread takes the whole queue, assigns seq and prev in
 * order, appends any due checkpoint, writes the batch with one write and one
 * fdatasync (group commit), and only then calls each `done`.
 *
 * Failure: a write or fdatasync error fails the batch and everything queued
 * (fail closed). An fdatasync error is never retried as if it succeeded: the
 * kernel may already have dropped the dirty pages (PostgreSQL "fsyncgate",
 * 2018), so recovery truncates the segment back to the last offset known to
 * be durable, syncs that, and re-writes from the chain state of the last
 * durable record, starting with a RECOVERY record and a checkpoint.
 *
 * Writer-only state (fd, chain, tree) is touched by the writer thread only,
 * and by js_audit_open before the thread starts / js_audit_close after join.
 */
#include "auditlog.h"

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

#include <openssl/sha.h>

#include "checkpoint.h"
#include "merkle.h"
#include "reader.h"
#include "record.h"
#include "scan.h"

#define QUEUE_MAX      100000u /* queued records before submit fails (memory bound) */
#define FOLD_WINDOW_MS 1000    /* one folded record per (type, caller, reason) per window */
/* Group commit delay (PostgreSQL's commit_delay): a batch smaller than
 * COMMIT_TARGET waits up to COMMIT_DELAY_US for more records before its
 * write + fdatasync. Measured here: without it, 64 busy clients produced
 * 2.5 records per fdatasync (~1,900 journal commits/s on a 2-core machine). */
#define COMMIT_TARGET   32
#define COMMIT_DELAY_US 500
#define SEGMENT_MAX     (512ull * 1024 * 1024)
#define DEFAULT_SEG     (64ull * 1024 * 1024)
#define PATH_MAX_AUDIT  4096u
#define RECORD_OVERHEAD 160u /* {"seq":20 digits,"time":"...",...,"prev":"64 hex"} */

typedef struct item {
    struct item *next;
    char *body;
    char time[25];
    uint64_t seq; /* assigned by the writer */
    js_audit_done_fn done;
    void *ctx;
    /* Denials this record stands for when no caller waits for it (a denial
     * submitted without `done`: 1; a folded record: its count); 0 when a
     * caller is told of a failure. Counted if its batch fails (issue 9). */
    uint64_t lost_weight;
} item;

/* One open fold (FORMAT.md §3.1): denials of one (type, who, reason)
 * counted since start_mono. */
typedef struct fold_entry {
    uint64_t hash; /* of type, is_peer, who, reason: compared before the text */
    char type[JS_AUDIT_FOLD_TYPE_MAX + 1];
    char who[JS_AUDIT_FOLD_WHO_MAX + 1]; /* caller identity, or peer address */
    bool is_peer;
    char reason[JS_AUDIT_FOLD_REASON_MAX + 1];
    uint64_t count;
    int64_t start_mono;
} fold_entry;

/* The chain state after some record: what a batch advances and commits. */
typedef struct chain_state {
    uint64_t next_seq;
    uint8_t head[32];
    js_merkle_frontier tree;
    uint8_t last_cp_hash[32];
    uint64_t since_cp;
    /* The key that signs the next checkpoint (FORMAT.md §5.4): it changes
     * with the chain, so a batch that never becomes durable leaves the old
     * key in force and the announcement is made again. */
    js_audit_sign_fn sign;
    void *sign_ctx;
    bool announced; /* a checkpoint in this state announced the pending key */
} chain_state;

typedef struct batch {
    uint8_t *buf;
    size_t len, cap;
    char *cp_payload; /* the last checkpoint in the batch (for checkpoint.json) */
    size_t cp_len;
    bool has_cp;
    size_t nrec;         /* records in the batch (for the on_batch hook) */
    int64_t cp_mono;     /* monotonic ms when its checkpoint was made (has_cp) */
    uint64_t cp_sign_ms; /* how long signing that checkpoint took */
} batch;

struct js_audit {
    /* configuration (immutable after open) */
    char *dir;
    char *origin;
    uint64_t interval_ms, records_thr, heartbeat_ms, segment_bytes, retry_ms;
    bool no_fsync;
    void (*on_batch)(void *ctx, size_t records, uint64_t fsync_us);
    void *on_batch_ctx;
    void (*on_fold)(void *ctx, const js_audit_fold *f);
    void *on_fold_ctx;
    uint64_t min_free_bytes;
    uint32_t min_free_percent;
    bool watermark_off;
    /* The notifier thread runs `done` callbacks of finished batches, so the
     * writer can start the next write + fdatasync while replies go out. */
    pthread_t notifier;
    bool notifier_started;
    pthread_mutex_t nmu;
    pthread_cond_t nwake;
    struct done_batch *nhead, *ntail;
    bool nstop;
    bool nsync_init; /* nmu and nwake initialised */
    js_audit_io io;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    item *qhead, *qtail;
    size_t qlen;
    bool failed;
    js_err why;
    bool closing;
    fold_entry *folds; /* JS_AUDIT_FOLD_MAX of them */
    size_t nfolds;
    pthread_t thread;
    bool thread_started;
    /* Audit key rotation (js_audit_rotate_key, FORMAT.md §5.4) */
    char *pubkey_pem; /* the key in force (audit-key.pem) */
    bool rot_pending;
    js_audit_sign_fn rot_sign;
    void *rot_sign_ctx;
    char *rot_pem;
    char rot_id[JS_AUDIT_KEY_ID_LEN + 1];
    uint64_t rot_done; /* rotations made durable */
    pthread_cond_t rot_cv;

    /* writer-only */
    int fd;
    unsigned long seg_num;
    uint64_t seg_size; /* durable bytes in the current segment */
    chain_state durable;
    int64_t last_cp_mono;
    int64_t fail_mono;
    /* Lateness evidence (FORMAT.md §5.1 late_ms/late_why): when the last
     * durable checkpoint was made (0 = none yet in this process), and the
     * largest delays of each kind since then: the writer waking after its
     * deadline (the process did not run), an fdatasync, the checkpoint's
     * own signing. */
    int64_t cp_made_mono;
    uint64_t stall_ms, sync_ms, sign_ms;
    bool cp_file_pending; /* checkpoint.json could not be written */
    char *pending_cp;
    size_t pending_cp_len;
    char *accept_reason; /* js_audit_options.accept_loss_reason, or NULL */
    int64_t disk_check_mono;
    /* Dropped records no caller waited for, since the last recovery record
     * (which reports them), and the denials they stood for. */
    uint64_t lost_records, lost_denials;

    /* records dropped since open (js_audit_records_lost), read by anyone */
    _Atomic uint64_t lost_total;

    /* disk watermark, written by the writer, read by anyone */
    atomic_bool disk_low;
    _Atomic uint64_t disk_free;
};

/* ---- small helpers -------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ssize_t io_write(js_audit *a, int fd, const void *buf, size_t len)
{
    return a->io.write != NULL ? a->io.write(a->io.ctx, fd, buf, len) : write(fd, buf, len);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int io_sync(js_audit *a, int fd)
{
    if (a->no_fsync)
        return 0;
    return a->io.fdatasync != NULL ? a->io.fdatasync(a->io.ctx, fd) : fdatasync(fd);
}

static js_status write_all(js_audit *a, int fd, const uint8_t *p, size_t len, const char *what,
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

static js_status sync_fd(js_audit *a, int fd, const char *what, js_err *err)
{
    JS_ENSURE(io_sync(a, fd) == 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
              "audit log %s fdatasync failed: %s", what, strerror(errno));
    return JS_OK;
}

static js_status sync_dir(js_audit *a, js_err *err)
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

/* Writes DIR/name atomically: temp file, write, fdatasync, rename, fsync dir. */
static js_status write_atomic(js_audit *a, const char *name, const void *data, size_t len,
                              mode_t mode, js_err *err)
{
    char path[PATH_MAX_AUDIT], tmp[PATH_MAX_AUDIT + 8];
    snprintf(path, sizeof(path), "%s/%s", a->dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    JS_ENSURE(fd >= 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "cannot create %s: %s", tmp,
              strerror(errno));
    js_status st = write_all(a, fd, data, len, name, err);
    if (st == JS_OK)
        st = sync_fd(a, fd, name, err);
    close(fd);
    if (st == JS_OK && rename(tmp, path) != 0)
        st = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "cannot rename %s: %s", tmp,
                        strerror(errno));
    if (st == JS_OK)
        st = sync_dir(a, err);
    if (st != JS_OK)
        unlink(tmp);
    return st;
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

static void batch_free(batch *b)
{
    free(b->buf);
    free(b->cp_payload);
    memset(b, 0, sizeof(*b));
}

/* Appends one framed record with the next seq; advances the chain state. */
static js_status batch_add(batch *b, chain_state *cs, const char *time, const char *body,
                           bool is_cp, js_err *err)
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
    int64_t now = mono_ms();
    if (now > due_ms)
        a->stall_ms = max_u64(a->stall_ms, (uint64_t)(now - due_ms));
}

/* A checkpoint (FORMAT.md §5) over the records before it, signed through
 * opts->sign (the HSM audit key). */
static js_status batch_add_checkpoint(js_audit *a, batch *b, chain_state *cs, const char *reason,
                                      js_err *err)
{
    js_audit_checkpoint cp;
    memset(&cp, 0, sizeof(cp));
    cp.seq = cs->next_seq;
    cp.tree_size = cs->next_seq - 1;
    snprintf(cp.origin, sizeof(cp.origin), "%s", a->origin);
    cp.time_ms = js_audit_now_ms();
    js_audit_time_format(cp.time_ms, cp.time);
    snprintf(cp.reason, sizeof(cp.reason), "%s", reason);
    js_merkle_frontier_root(&cs->tree, cp.root);
    memcpy(cp.head, cs->head, 32);
    memcpy(cp.prev_checkpoint, cs->last_cp_hash, 32);
    cp.heartbeat_ms = a->heartbeat_ms;
    cp.interval_ms = a->interval_ms;
    int64_t made = mono_ms();
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
    b->cp_sign_ms = (uint64_t)(mono_ms() - made);
    if (st != JS_OK || cp.sig_len != 64)
        return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                          "audit checkpoint signing failed: %s",
                          st != JS_OK ? serr.msg : "signature is not ES256 r||s");
    char *members = NULL;
    JS_GUARD(js_audit_checkpoint_members(&cp, &members, err));
    st = batch_add(b, cs, cp.time, members, true, err);
    free(members);
    if (st == JS_OK && announce) {
        cs->sign = next_sign;
        cs->sign_ctx = next_ctx;
        cs->announced = true;
    }
    return st;
}

/* The announcing checkpoint is durable: the new key is in force. Writes
 * DIR/audit-key.pem (the old and new keys were kept as audit-key-ID.pem
 * when the rotation was asked for) and wakes js_audit_rotate_key. */
static js_status rotation_commit(js_audit *a, js_err *err)
{
    a->durable.announced = false;
    pthread_mutex_lock(&a->mu);
    char *pem = a->rot_pem;
    char *old = a->pubkey_pem;
    a->pubkey_pem = pem;
    a->rot_pem = NULL;
    a->rot_pending = false;
    a->rot_done++;
    pthread_cond_broadcast(&a->rot_cv);
    pthread_mutex_unlock(&a->mu);
    free(old);
    if (pem == NULL)
        return JS_OK;
    return write_atomic(a, "audit-key.pem", pem, strlen(pem), 0644, err);
}

/* Body of a RECOVERY record. */
static js_status recovery_body(const char *reason, const char *message, json_t *detail, char **out,
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

static js_status open_segment(js_audit *a, unsigned long num, bool create, js_err *err)
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
    JS_GUARD(open_segment(a, a->seg_num + 1, true, err));
    if (a->seg_size != 0) {
        /* Leftover of an earlier failed rotation: nothing in it is durable. */
        JS_ENSURE(ftruncate(a->fd, 0) == 0, err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                  "cannot truncate new segment: %s", strerror(errno));
        a->seg_size = 0;
    }
    return sync_dir(a, err);
}

/* One write, one fdatasync; on success the batch is durable and committed. */
static js_status write_batch(js_audit *a, batch *b, chain_state *work, js_err *err)
{
    JS_GUARD(maybe_rotate(a, b->len, err));
    JS_GUARD(write_all(a, a->fd, b->buf, b->len, "write", err));
    int64_t t0 = mono_us();
    JS_GUARD(sync_fd(a, a->fd, "segment", err));
    uint64_t sync_us = (uint64_t)(mono_us() - t0);
    if (a->on_batch != NULL)
        a->on_batch(a->on_batch_ctx, b->nrec, sync_us);
    a->seg_size += b->len;
    a->durable = *work;
    if (work->announced)
        JS_GUARD(rotation_commit(a, err));
    if (b->has_cp) {
        /* The next checkpoint's schedule starts at this one's making; what
         * delayed it since (its signing, this fdatasync) is evidence. */
        a->cp_made_mono = b->cp_mono;
        a->stall_ms = 0;
        a->sign_ms = b->cp_sign_ms;
        a->sync_ms = 0;
    }
    a->sync_ms = max_u64(a->sync_ms, sync_us / 1000);
    if (b->has_cp) {
        a->last_cp_mono = mono_ms();
        free(a->pending_cp);
        a->pending_cp = b->cp_payload;
        a->pending_cp_len = b->cp_len;
        b->cp_payload = NULL;
        a->cp_file_pending = true;
    }
    return JS_OK;
}

/* DIR/checkpoint.json: the latest checkpoint, atomically, for shipping
 * off-host (FORMAT.md §5.3). */
static js_status write_checkpoint_file(js_audit *a, js_err *err)
{
    if (!a->cp_file_pending)
        return JS_OK;
    char *buf = malloc(a->pending_cp_len + 1);
    JS_ENSURE_ALLOC(buf, err);
    memcpy(buf, a->pending_cp, a->pending_cp_len);
    buf[a->pending_cp_len] = '\n';
    int64_t t0 = mono_ms();
    js_status st = write_atomic(a, "checkpoint.json", buf, a->pending_cp_len + 1, 0644, err);
    a->sync_ms = max_u64(a->sync_ms, (uint64_t)(mono_ms() - t0)); /* two fsyncs inside */
    free(buf);
    if (st == JS_OK)
        a->cp_file_pending = false;
    return st;
}

/* ---- the writer thread ---------------------------------------------------------------- */

static void set_failed(js_audit *a, const js_err *why)
{
    pthread_mutex_lock(&a->mu);
    if (!a->failed) {
        a->failed = true;
        a->why = *why;
    }
    a->fail_mono = mono_ms();
    pthread_mutex_unlock(&a->mu);
}

static void finish_items(item *it, js_status st, const js_err *why)
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

typedef struct done_batch {
    item *items;
    js_status st;
    js_err why;
    struct done_batch *next;
} done_batch;

/* Hands a finished batch to the notifier, in order. Without memory for the
 * hand-off the callbacks run here: slower, never lost. */
static void deliver(js_audit *a, item *items, js_status st, const js_err *why)
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
    done_batch *d = calloc(1, sizeof(*d));
    if (d == NULL || !a->notifier_started) {
        free(d);
        finish_items(items, st, why);
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
        pthread_mutex_unlock(&a->nmu);
        while (d != NULL) {
            done_batch *next = d->next;
            finish_items(d->items, d->st, d->st == JS_OK ? NULL : &d->why);
            free(d);
            d = next;
        }
        pthread_mutex_lock(&a->nmu);
    }
    pthread_mutex_unlock(&a->nmu);
    return NULL;
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
        JS_GUARD(batch_add(b, cs, it->time, it->body, false, err));
        if (cs->since_cp >= a->records_thr)
            JS_GUARD(batch_add_checkpoint(a, b, cs, "records", err));
    }
    if (closing)
        return batch_add_checkpoint(a, b, cs, "close", err);
    pthread_mutex_lock(&a->mu);
    bool rotate = a->rot_pending && !cs->announced;
    pthread_mutex_unlock(&a->mu);
    /* A rotation request is sealed at once: the caller waits for it. */
    if ((rotate || mono_ms() >= cp_due(a, cs)) && !(b->has_cp && cs->since_cp == 0 && !rotate))
        return batch_add_checkpoint(a, b, cs, cs->since_cp > 0 ? "interval" : "heartbeat", err);
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
    JS_GUARD(sync_fd(a, a->fd, "segment", err));
    json_t *d = json_pack("{s:s, s:I, s:I, s:I}", "segment", "", "durable_offset",
                          (json_int_t)a->seg_size, "lost_records", (json_int_t)a->lost_records,
                          "lost_denials", (json_int_t)a->lost_denials);
    JS_ENSURE_ALLOC(d, err);
    char seg[32];
    snprintf(seg, sizeof(seg), "audit-%06lu.log", a->seg_num);
    json_object_set_new(d, "segment", json_string(seg));
    char *body = NULL;
    js_status st = recovery_body("audit.io_recovered", why.msg, d, &body, err);
    json_decref(d);
    JS_GUARD(st);
    chain_state work = a->durable;
    batch b;
    memset(&b, 0, sizeof(b));
    char t[25];
    js_audit_time_format(js_audit_now_ms(), t);
    st = batch_add(&b, &work, t, body, false, err);
    free(body);
    if (st == JS_OK)
        st = batch_add_checkpoint(a, &b, &work, "recovery", err);
    if (st == JS_OK)
        st = write_batch(a, &b, &work, err);
    batch_free(&b);
    if (st == JS_OK)
        a->lost_records = a->lost_denials = 0; /* the durable record reports them */
    if (st == JS_OK)
        st = write_checkpoint_file(a, err);
    return st;
}

static int64_t next_due_locked(js_audit *a)
{
    if (a->failed)
        return a->fail_mono + (int64_t)a->retry_ms;
    int64_t due = cp_due(a, &a->durable);
    if (a->rot_pending)
        due = mono_ms();
    for (size_t i = 0; i < a->nfolds; i++)
        if (a->folds[i].start_mono + FOLD_WINDOW_MS < due)
            due = a->folds[i].start_mono + FOLD_WINDOW_MS;
    if (!a->watermark_off && a->disk_check_mono + JS_AUDIT_DISK_CHECK_MS < due)
        due = a->disk_check_mono + JS_AUDIT_DISK_CHECK_MS;
    return due;
}

static void wait_until(js_audit *a, int64_t due_ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(due_ms / 1000);
    ts.tv_nsec = (long)(due_ms % 1000) * 1000000L;
    pthread_cond_timedwait(&a->wake, &a->mu, &ts);
}

/* Takes due (or, when closing, all) folds into out. Under mu. */
static size_t take_folds_locked(js_audit *a, fold_entry *out, bool all)
{
    int64_t now = mono_ms();
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
static void folds_to_items(js_audit *a, const fold_entry *f, size_t n, item **head, item **tail)
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
        js_audit_time_format(js_audit_now_ms(), it->time);
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

/* Disk watermark (auditlog.h): at most once per JS_AUDIT_DISK_CHECK_MS, on
 * the writer thread, never per record. */
static void disk_check(js_audit *a, bool force)
{
    if (a->watermark_off)
        return;
    int64_t now = mono_ms();
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

static void *writer_main(void *arg)
{
    js_audit *a = arg;
    fold_entry *folds = calloc(JS_AUDIT_FOLD_MAX, sizeof(*folds));
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->closing && a->qhead == NULL) {
            int64_t due = next_due_locked(a);
            if (mono_ms() >= due)
                break;
            wait_until(a, due);
            note_wake(a, due);
        }
        if (!a->no_fsync && !a->closing && !a->failed && a->qhead != NULL &&
            a->qlen < COMMIT_TARGET) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += COMMIT_DELAY_US * 1000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (a->qlen < COMMIT_TARGET && !a->closing &&
                   pthread_cond_timedwait(&a->wake, &a->mu, &until) == 0)
                ;
            note_wake(a, (int64_t)until.tv_sec * 1000 + until.tv_nsec / 1000000);
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
        size_t nf = (!failed && folds != NULL) ? take_folds_locked(a, folds, closing) : 0;
        bool retry_due = failed && mono_ms() >= a->fail_mono + (int64_t)a->retry_ms;
        pthread_mutex_unlock(&a->mu);

        disk_check(a, false);
        folds_to_items(a, folds, nf, &items, &tail);

        js_err err;
        js_err_clear(&err);
        if (failed) {
            deliver(a, items, JS_EUNAVAIL, &why);
            if (closing)
                break;
            if (retry_due) {
                if (try_recover(a, &err) == JS_OK) {
                    pthread_mutex_lock(&a->mu);
                    a->failed = false;
                    js_err_clear(&a->why);
                    continue;
                }
                set_failed(a, &err); /* keep the first cause, retry later */
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
            st = write_batch(a, &b, &work, &err);
        batch_free(&b);
        if (st != JS_OK) {
            if (st != JS_EUNAVAIL)
                js_err_set(&err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log failed: %s",
                           err.msg);
            set_failed(a, &err);
            pthread_mutex_lock(&a->mu);
            why = a->why;
            pthread_mutex_unlock(&a->mu);
            deliver(a, items, JS_EUNAVAIL, &why);
        } else {
            deliver(a, items, JS_OK, NULL);
            if (write_checkpoint_file(a, &err) != JS_OK)
                set_failed(a, &err);
        }
        if (closing)
            break;
        pthread_mutex_lock(&a->mu);
    }
    free(folds);
    return NULL;
}

/* ---- public API ----------------------------------------------------------------------- */

js_status js_audit_submit(js_audit *a, const js_audit_event *ev, js_audit_done_fn done, void *ctx,
                          js_err *err)
{
    item *it = calloc(1, sizeof(*it));
    JS_ENSURE_ALLOC(it, err);
    js_status st = js_audit_event_body(ev, 0, &it->body, err);
    if (st != JS_OK) {
        free(it);
        return st;
    }
    /* Bound here, so one oversized event is the caller's error and cannot
     * fail a whole batch (seq, time and prev add at most RECORD_OVERHEAD). */
    if (strlen(it->body) > JS_AUDIT_MAX_PAYLOAD - RECORD_OVERHEAD) {
        free(it->body);
        free(it);
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_RECORD_TOO_LARGE,
                          "audit record larger than %u bytes", JS_AUDIT_MAX_PAYLOAD);
    }
    js_audit_time_format(js_audit_now_ms(), it->time);
    it->done = done;
    it->ctx = ctx;
    it->lost_weight = done == NULL ? 1 : 0;
    pthread_mutex_lock(&a->mu);
    if (a->failed || a->closing || a->qlen >= QUEUE_MAX) {
        if (a->failed)
            st = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "%s", a->why.msg);
        else if (a->closing)
            st = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log is closing");
        else
            st =
                js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE,
                           "audit log queue full (%u records): the disk cannot keep up", QUEUE_MAX);
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
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    return JS_OK;
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
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += SYNC_WAIT_S;
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
        memcpy(k.reason, "audit.fold_overflow", sizeof("audit.fold_overflow"));
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
        e->start_mono = mono_ms();
        pthread_cond_signal(&a->wake);
    }
    if (e != NULL)
        e->count++;
    pthread_mutex_unlock(&a->mu);
}

void js_audit_note_rate_limited(js_audit *a, const char *caller, const char *reason)
{
    js_audit_note_folded(a, "sign", caller, NULL, reason != NULL ? reason : "rate_limited");
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

bool js_audit_healthy(js_audit *a, js_err *why)
{
    pthread_mutex_lock(&a->mu);
    bool ok = !a->failed;
    if (!ok && why != NULL)
        *why = a->why;
    pthread_mutex_unlock(&a->mu);
    return ok;
}

static void stop_notifier(js_audit *a)
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

static void audit_free(js_audit *a)
{
    if (a == NULL)
        return;
    stop_notifier(a);
    if (a->fd >= 0)
        close(a->fd);
    finish_items(a->qhead, JS_EUNAVAIL, &a->why);
    if (a->nsync_init) {
        pthread_cond_destroy(&a->nwake);
        pthread_mutex_destroy(&a->nmu);
    }
    pthread_cond_destroy(&a->wake);
    pthread_cond_destroy(&a->rot_cv);
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

void js_audit_close(js_audit *a)
{
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    a->closing = true;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    if (a->thread_started)
        pthread_join(a->thread, NULL);
    /* Every batch the writer finished is delivered before we return. */
    stop_notifier(a);
    js_err_set(&a->why, JS_EUNAVAIL, JS_R_AUDIT_UNAVAILABLE, "audit log is closed");
    audit_free(a);
}

/* ---- open: crash recovery (FORMAT.md §8) ---------------------------------------------- */

typedef struct torn_info {
    bool present;
    char segment[PATH_MAX_AUDIT];
    uint64_t offset;
    uint64_t length;
    uint8_t sha256[32];
    char saved_as[PATH_MAX_AUDIT + 32];
} torn_info;

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

static unsigned long seg_number_of(const char *path)
{
    const char *b = base_name(path);
    unsigned long v = 0;
    for (const char *p = b + 6; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (unsigned long)(*p - '0');
    return v;
}

/* Copies the torn tail aside to DIR/<segment>.broken[.N] (etcd's practice),
 * then truncates the segment to the end of its last valid record. */
static js_status cut_torn_tail(js_audit *a, const char *path, uint64_t offset, torn_info *ti,
                               js_err *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    JS_ENSURE(fd >= 0, err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot open %s: %s", path,
              strerror(errno));
    struct stat st;
    js_status rc = JS_OK;
    uint8_t *tail = NULL;
    size_t len = 0;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < offset) {
        rc = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot stat %s", path);
        goto out;
    }
    len = (size_t)((uint64_t)st.st_size - offset);
    tail = malloc(len ? len : 1);
    if (tail == NULL) {
        rc = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        goto out;
    }
    if (pread(fd, tail, len, (off_t)offset) != (ssize_t)len) {
        rc = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot read the tail of %s", path);
        goto out;
    }
    SHA256(tail, len, ti->sha256);
    char bpath[PATH_MAX_AUDIT + 32];
    int bfd = -1;
    for (unsigned i = 0; i < 1000 && bfd < 0; i++) {
        if (i == 0)
            snprintf(bpath, sizeof(bpath), "%s.broken", path);
        else
            snprintf(bpath, sizeof(bpath), "%s.broken.%u", path, i);
        bfd = open(bpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (bfd < 0 && errno != EEXIST)
            break;
    }
    if (bfd < 0) {
        rc = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot create %s.broken: %s", path,
                        strerror(errno));
        goto out;
    }
    rc = write_all(a, bfd, tail, len, "broken-tail copy", err);
    if (rc == JS_OK)
        rc = sync_fd(a, bfd, "broken-tail copy", err);
    close(bfd);
    if (rc == JS_OK)
        rc = sync_dir(a, err);
    if (rc == JS_OK && (ftruncate(fd, (off_t)offset) != 0 || io_sync(a, fd) != 0))
        rc = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_RECOVERY, "cannot truncate %s: %s", path,
                        strerror(errno));
    if (rc == JS_OK) {
        ti->present = true;
        snprintf(ti->segment, sizeof(ti->segment), "%s", base_name(path));
        snprintf(ti->saved_as, sizeof(ti->saved_as), "%s", base_name(bpath));
        ti->offset = offset;
        ti->length = len;
    }
out:
    free(tail);
    close(fd);
    return rc;
}

/* DIR/checkpoint.json as found at open: the local anchor (FORMAT.md §5.3). */
typedef struct anchor {
    bool present;
    uint8_t *payload; /* its exact bytes, without the trailing newline */
    size_t len;
    js_audit_checkpoint cp;
} anchor;

/* Where the log lost a record the anchor names (damaged or missing). */
typedef struct loss_info {
    bool present;
    char segment[PATH_MAX_AUDIT];
    uint64_t offset;
    uint64_t seq; /* the first record damaged or missing */
    bool damaged; /* false: the log simply ends before the named record */
} loss_info;

/* Loads DIR/checkpoint.json if it exists. A file that exists but cannot be
 * read as a checkpoint refuses the start: it is the anchor this log promised
 * (FORMAT.md §5.3), never silently dropped. */
static js_status anchor_load(const js_audit *a, anchor *an, js_err *err)
{
    char path[PATH_MAX_AUDIT];
    snprintf(path, sizeof(path), "%s/checkpoint.json", a->dir);
    js_err e;
    js_status st = js_audit_checkpoint_load(path, &an->payload, &an->len, &an->cp, &e);
    if (st == JS_ENOTFOUND)
        return JS_OK;
    if (st != JS_OK)
        return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_ANCHOR,
                          "audit log anchor unreadable, refusing to start (no file was changed): "
                          "%s",
                          e.msg);
    an->present = true;
    return JS_OK;
}

/* The refusal for a lost named record (FORMAT.md §8). */
static js_status anchor_refusal(const anchor *an, const loss_info *li, js_err *err)
{
    return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_ANCHOR_LOST,
                      "audit log lost a record checkpoint.json names, refusing to start (no file "
                      "was changed): segment %s offset %" PRIu64 " seq %" PRIu64
                      " is %s, but checkpoint.json names the checkpoint seq %" PRIu64
                      " (time %s, reason %s), so this is not crash damage; after investigating, "
                      "start once with --accept-audit-loss REASON to cut the log there and "
                      "record the loss",
                      li->segment, li->offset, li->seq,
                      li->damaged ? "damaged" : "missing (the log ends before it)", an->cp.seq,
                      an->cp.time, an->cp.reason);
}

/* Scans every segment with the verifier's state machine. Anything but a torn
 * tail beyond the record checkpoint.json names refuses to open (JS_ECONFIG)
 * naming segment, offset and seq -- before any file is changed. A loss of
 * the named record is cut only when the operator accepted it (li). */
static js_status recover_scan(js_audit *a, char **paths, size_t n, EVP_PKEY *pub, const anchor *an,
                              torn_info *ti, loss_info *li, js_err *err)
{
    js_audit_reader *r = NULL;
    JS_GUARD(js_audit_reader_new((const char *const *)paths, n, &r, err));
    js_audit_scan s;
    js_audit_scan_init(&s, NULL, false, 0);
    js_status st = JS_OK;
    bool ended = false;
    for (;;) {
        js_audit_record rec;
        js_err e;
        js_status rs = js_audit_reader_next(r, &rec, &e);
        if (rs == JS_ENOTFOUND && e.reason == JS_R_AUDIT_END) {
            ended = true;
            break;
        }
        if (rs == JS_EINVAL) {
            const js_audit_read_error *re = js_audit_reader_error(r);
            if (!re->torn_tail) {
                st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED,
                                "audit log damaged, refusing to start: segment %s offset %" PRIu64
                                " seq %" PRIu64 ": %s",
                                re->segment, re->offset, s.last_seq + 1, e.msg);
                break;
            }
            /* A torn write can only hit records after the last one
             * checkpoint.json names: that file is replaced after its record
             * is durable. Damage at or before it is not a crash. */
            if (an->present && s.last_seq + 1 <= an->cp.seq) {
                li->present = true;
                li->damaged = true;
                snprintf(li->segment, sizeof(li->segment), "%s", re->segment);
                li->offset = re->offset;
                li->seq = s.last_seq + 1;
                if (a->accept_reason == NULL) {
                    st = anchor_refusal(an, li, err);
                    break;
                }
            }
            char path[PATH_MAX_AUDIT];
            snprintf(path, sizeof(path), "%s", re->segment);
            st = cut_torn_tail(a, path, re->offset, ti, err);
            break;
        }
        if (rs != JS_OK) {
            st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED, "%s", e.msg);
            break;
        }
        if (js_audit_scan_record(&s, &rec, &e) != JS_OK) {
            st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED,
                            "audit log damaged, refusing to start: segment %s offset %" PRIu64
                            " seq %" PRIu64 ": %s",
                            rec.segment, rec.offset, rec.seq, e.msg);
            break;
        }
        if (an->present && rec.seq == an->cp.seq &&
            (rec.payload_len != an->len || memcmp(rec.payload, an->payload, an->len) != 0)) {
            st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_ANCHOR_MISMATCH,
                            "audit log does not match checkpoint.json, refusing to start (no file "
                            "was changed): segment %s offset %" PRIu64 " seq %" PRIu64
                            " differs from the checkpoint checkpoint.json names",
                            rec.segment, rec.offset, rec.seq);
            break;
        }
    }
    js_audit_reader_free(r);
    if (st == JS_OK && ended && an->present && s.last_seq < an->cp.seq) {
        /* The log ends cleanly before the named record: truncated at a record
         * boundary, or rolled back. */
        struct stat sb;
        li->present = true;
        li->damaged = false;
        snprintf(li->segment, sizeof(li->segment), "%s", paths[n - 1]);
        li->offset = stat(paths[n - 1], &sb) == 0 ? (uint64_t)sb.st_size : 0;
        li->seq = s.last_seq + 1;
        if (a->accept_reason == NULL)
            st = anchor_refusal(an, li, err);
    }
    JS_GUARD(st);
    if (s.have_cp) {
        JS_ENSURE(strcmp(s.last_cp.origin, a->origin) == 0, err, JS_ECONFIG, JS_R_AUDIT_ORIGIN,
                  "audit log in %s has origin \"%s\", not \"%s\"", a->dir, s.last_cp.origin,
                  a->origin);
        /* The last checkpoint's signature vouches for everything before it
         * (its root was recomputed above), so one verification suffices. */
        /* After a rotation (FORMAT.md §5.4) the last checkpoint may be the
         * announcing one, signed by the previous key: it must name ours.
         * One that names another key means we were started with the wrong
         * audit key: refused, so no checkpoint breaks the key chain. */
        char id[JS_AUDIT_KEY_ID_LEN + 1] = "";
        if (pub != NULL)
            JS_GUARD(js_audit_pubkey_id(pub, id, err));
        if (pub != NULL && s.last_cp.next_key[0] != '\0') {
            JS_ENSURE(strcmp(s.last_cp.next_key, id) == 0, err, JS_ECONFIG, JS_R_AUDIT_KEY_CHAIN,
                      "audit log checkpoint seq %" PRIu64 " announced audit key %s but this "
                      "signer's audit key is %s: start with the announced key",
                      s.last_cp.seq, s.last_cp.next_key, id);
        } else if (pub != NULL) {
            js_err e;
            if (js_audit_checkpoint_verify_sig(&s.last_cp, pub, &e) != JS_OK)
                return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED,
                                  "audit log damaged, refusing to start: checkpoint seq %" PRIu64
                                  ": %s",
                                  s.last_cp.seq, e.msg);
        }
    }
    a->durable.next_seq = s.last_seq + 1;
    memcpy(a->durable.head, s.head, 32);
    a->durable.tree = s.tree;
    memcpy(a->durable.last_cp_hash, s.last_cp_hash, 32);
    a->durable.since_cp = s.since_cp;
    return JS_OK;
}

/* Body of the audit.loss_accepted RECOVERY record (FORMAT.md §8). */
static js_status loss_body(const js_audit *a, const anchor *an, const loss_info *li, char **out,
                           js_err *err)
{
    char hex[65];
    uint8_t h[32];
    SHA256(an->payload, an->len, h);
    js_audit_hex(h, 32, hex);
    json_t *cp = json_loadb((const char *)an->payload, an->len, 0, NULL);
    json_t *d = json_object();
    js_status st = JS_OK;
    if (cp == NULL || d == NULL ||
        json_object_set_new(d, "segment", json_string(base_name(li->segment))) != 0 ||
        json_object_set_new(d, "offset", json_integer((json_int_t)li->offset)) != 0 ||
        json_object_set_new(d, "seq", json_integer((json_int_t)li->seq)) != 0 ||
        json_object_set_new(d, "damage", json_string(li->damaged ? "damaged" : "missing")) != 0 ||
        json_object_set_new(d, "checkpoint_seq", json_integer((json_int_t)an->cp.seq)) != 0 ||
        json_object_set_new(d, "checkpoint_sha256", json_string(hex)) != 0 ||
        json_object_set_new(d, "checkpoint", json_incref(cp)) != 0 ||
        json_object_set_new(d, "operator_reason", json_string(a->accept_reason)) != 0)
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    if (st == JS_OK)
        st = recovery_body("audit.loss_accepted",
                           "the operator accepted the loss of records checkpoint.json named", d,
                           out, err);
    json_decref(cp);
    json_decref(d);
    return st;
}

static js_status open_log(js_audit *a, const js_audit_options *opts, js_err *err)
{
    if (mkdir(a->dir, 0700) != 0 && errno != EEXIST)
        return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DIR,
                          "cannot create audit log directory %s: %s", a->dir, strerror(errno));
    EVP_PKEY *pub = NULL;
    if (opts->pubkey_pem != NULL)
        JS_GUARD(js_audit_pubkey_parse(opts->pubkey_pem, &pub, err));
    /* Nothing in DIR is written before the scan has accepted the log: a
     * refusal leaves every file as it was (FORMAT.md §8). */
    anchor an;
    memset(&an, 0, sizeof(an));
    char **paths = NULL;
    size_t n = 0;
    js_status st = anchor_load(a, &an, err);
    if (st == JS_OK)
        st = js_audit_list_segments(a->dir, &paths, &n, err);
    torn_info ti;
    memset(&ti, 0, sizeof(ti));
    loss_info li;
    memset(&li, 0, sizeof(li));
    if (st == JS_OK && n > 0) {
        st = recover_scan(a, paths, n, pub, &an, &ti, &li, err);
    } else if (st == JS_OK && an.present) {
        /* checkpoint.json names a record but no segment is left. */
        li.present = true;
        snprintf(li.segment, sizeof(li.segment), "%s/audit-000001.log", a->dir);
        li.seq = 1;
        if (a->accept_reason == NULL)
            st = anchor_refusal(&an, &li, err);
    }
    EVP_PKEY_free(pub);
    unsigned long last = n > 0 ? seg_number_of(paths[n - 1]) : 1;
    js_audit_segments_free(paths, n);
    char *loss_rec = NULL; /* the audit.loss_accepted record, when a loss was accepted */
    if (st == JS_OK && li.present)
        st = loss_body(a, &an, &li, &loss_rec, err);
    free(an.payload);
    if (st == JS_OK && opts->pubkey_pem != NULL)
        st =
            write_atomic(a, "audit-key.pem", opts->pubkey_pem, strlen(opts->pubkey_pem), 0644, err);
    if (st == JS_OK && last == 0)
        st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DIR, "bad segment name in %s", a->dir);
    if (st == JS_OK)
        st = open_segment(a, last, true, err);
    if (st == JS_OK && n == 0)
        st = sync_dir(a, err);
    if (st != JS_OK) {
        free(loss_rec);
        return st;
    }

    /* The first batch: the RECOVERY record for a cut tail, then the opening
     * checkpoint. Written here, before the writer thread exists. */
    chain_state work = a->durable;
    batch b;
    memset(&b, 0, sizeof(b));
    st = JS_OK;
    if (ti.present) {
        char hex[65];
        js_audit_hex(ti.sha256, 32, hex);
        json_t *d = json_pack("{s:s, s:I, s:I, s:s, s:s}", "segment", ti.segment, "offset",
                              (json_int_t)ti.offset, "length", (json_int_t)ti.length, "sha256", hex,
                              "saved_as", ti.saved_as);
        char *body = NULL;
        st = d == NULL ? js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory")
                       : recovery_body("audit.torn_tail",
                                       "torn tail cut at start-up (crash damage)", d, &body, err);
        json_decref(d);
        char t[25];
        js_audit_time_format(js_audit_now_ms(), t);
        if (st == JS_OK)
            st = batch_add(&b, &work, t, body, false, err);
        free(body);
    }
    if (st == JS_OK && loss_rec != NULL) {
        char t[25];
        js_audit_time_format(js_audit_now_ms(), t);
        st = batch_add(&b, &work, t, loss_rec, false, err);
    }
    free(loss_rec);
    if (st == JS_OK)
        st = batch_add_checkpoint(a, &b, &work, "open", err);
    if (st == JS_OK)
        st = write_batch(a, &b, &work, err);
    batch_free(&b);
    if (st == JS_OK)
        st = write_checkpoint_file(a, err);
    return st;
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->wake, &ca);
    pthread_cond_init(&a->rot_cv, &ca);
    pthread_condattr_destroy(&ca);
    a->dir = strdup(opts->dir);
    a->origin = strdup(opts->origin);
    a->folds = calloc(JS_AUDIT_FOLD_MAX, sizeof(*a->folds));
    atomic_init(&a->disk_low, false);
    atomic_init(&a->disk_free, UINT64_MAX);
    if (a->dir == NULL || a->origin == NULL || a->folds == NULL) {
        audit_free(a);
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    a->interval_ms = opts->checkpoint_interval_ms ? opts->checkpoint_interval_ms : 1000;
    a->records_thr = opts->checkpoint_records ? opts->checkpoint_records : 1000;
    a->heartbeat_ms = opts->heartbeat_ms ? opts->heartbeat_ms : a->interval_ms;
    a->segment_bytes = opts->segment_bytes ? opts->segment_bytes : DEFAULT_SEG;
    if (a->segment_bytes > SEGMENT_MAX)
        a->segment_bytes = SEGMENT_MAX;
    a->retry_ms = opts->retry_ms ? opts->retry_ms : 1000;
    a->no_fsync = opts->no_fsync;
    a->durable.sign = opts->sign;
    a->durable.sign_ctx = opts->sign_ctx;
    if (opts->pubkey_pem != NULL && (a->pubkey_pem = strdup(opts->pubkey_pem)) == NULL) {
        audit_free(a);
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    if (opts->io != NULL)
        a->io = *opts->io;
    a->on_batch = opts->on_batch;
    a->on_batch_ctx = opts->on_batch_ctx;
    a->on_fold = opts->on_fold;
    a->on_fold_ctx = opts->on_fold_ctx;
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
            return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
        }
    }
    js_merkle_frontier_init(&a->durable.tree);
    a->durable.next_seq = 1;

    js_status st = open_log(a, opts, err);
    if (st == JS_OK)
        disk_check(a, true); /* the state is known before the first caller asks */
    if (st == JS_OK) {
        pthread_mutex_init(&a->nmu, NULL);
        pthread_cond_init(&a->nwake, NULL);
        a->nsync_init = true;
        if (pthread_create(&a->notifier, NULL, notifier_main, a) == 0)
            a->notifier_started = true;
    }
    if (st == JS_OK && pthread_create(&a->thread, NULL, writer_main, a) != 0)
        st = js_err_set(err, JS_EINTERNAL, JS_R_AUDIT_THREAD, "cannot start the audit writer");
    if (st != JS_OK) {
        audit_free(a);
        return st;
    }
    a->thread_started = true;
    *out = a;
    return JS_OK;
}

/* FORMAT.md §5.4. Keys are kept as audit-key-ID.pem before the request is
 * queued, so a verifier finds the new key as soon as a checkpoint names it. */
js_status js_audit_rotate_key(js_audit *a, js_audit_sign_fn sign, void *sign_ctx,
                              const char *pubkey_pem, uint64_t timeout_ms, char *new_id,
                              js_err *err)
{
    JS_ENSURE(sign != NULL && pubkey_pem != NULL, err, JS_EINVAL, JS_R_AUDIT_ROTATE,
              "a key rotation needs the new key's signing callback and public key");
    EVP_PKEY *pub = NULL, *old = NULL;
    JS_GUARD(js_audit_pubkey_parse(pubkey_pem, &pub, err));
    char id[JS_AUDIT_KEY_ID_LEN + 1], old_id[JS_AUDIT_KEY_ID_LEN + 1];
    js_status st = js_audit_pubkey_id(pub, id, err);
    EVP_PKEY_free(pub);
    JS_GUARD(st);
    pthread_mutex_lock(&a->mu);
    char *cur = a->pubkey_pem != NULL ? strdup(a->pubkey_pem) : NULL;
    bool busy = a->rot_pending || a->closing || a->failed;
    pthread_mutex_unlock(&a->mu);
    if (cur == NULL || busy) {
        free(cur);
        return js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE,
                          busy ? "the audit log is failed, closing or already rotating its key"
                               : "the audit log has no public key to rotate from");
    }
    st = js_audit_pubkey_parse(cur, &old, err);
    if (st == JS_OK)
        st = js_audit_pubkey_id(old, old_id, err);
    EVP_PKEY_free(old);
    if (st == JS_OK && strcmp(id, old_id) == 0)
        st = js_err_set(err, JS_EINVAL, JS_R_AUDIT_ROTATE, "the new audit key is the key in force");
    char name[JS_AUDIT_KEY_ID_LEN + 32];
    if (st == JS_OK) {
        snprintf(name, sizeof(name), "audit-key-%s.pem", old_id);
        st = write_atomic(a, name, cur, strlen(cur), 0644, err);
    }
    free(cur);
    if (st == JS_OK) {
        snprintf(name, sizeof(name), "audit-key-%s.pem", id);
        st = write_atomic(a, name, pubkey_pem, strlen(pubkey_pem), 0644, err);
    }
    char *pem = st == JS_OK ? strdup(pubkey_pem) : NULL;
    if (st == JS_OK && pem == NULL)
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    JS_GUARD(st);
    pthread_mutex_lock(&a->mu);
    if (a->rot_pending || a->closing || a->failed) {
        pthread_mutex_unlock(&a->mu);
        free(pem);
        return js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE,
                          "the audit log is failed, closing or already rotating its key");
    }
    uint64_t done = a->rot_done;
    a->rot_pending = true;
    a->rot_sign = sign;
    a->rot_sign_ctx = sign_ctx;
    a->rot_pem = pem;
    memcpy(a->rot_id, id, sizeof(a->rot_id));
    pthread_cond_signal(&a->wake);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000);
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (a->rot_done == done && !a->closing &&
           pthread_cond_timedwait(&a->rot_cv, &a->mu, &until) == 0)
        ;
    bool ok = a->rot_done != done;
    pthread_mutex_unlock(&a->mu);
    if (new_id != NULL)
        memcpy(new_id, id, JS_AUDIT_KEY_ID_LEN + 1);
    JS_ENSURE(ok, err, JS_EUNAVAIL, JS_R_AUDIT_ROTATE_PENDING,
              "the audit key rotation is not durable yet (the log is failing or slow); it "
              "stays pending and takes effect with the next durable checkpoint");
    return JS_OK;
}
