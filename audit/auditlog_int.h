/*
 * auditlog_int.h - private to the audit log writer (auditlog.h is the public
 * API): the js_audit struct and the functions its concept files share.
 *
 *   auditlog.c  open/close, submit (the queue), append_sync, status getters
 *   writer.c    the writer thread: batching, chain state, checkpoints,
 *               segment I/O (write + fdatasync), checkpoint.json, disk watermark
 *   notifier.c  the notifier thread that runs `done` callbacks of finished batches
 *   fold.c      denial folding (FORMAT.md §3.1)
 *   recovery.c  start-up scan, torn-tail repair, the checkpoint.json anchor (§8)
 *   keyrot.c    audit key rotation (§5.4)
 *
 * Threads: fields under "shared, under mu" are read and written under mu;
 * "writer-only" fields by the writer thread only, and by js_audit_open before
 * the thread starts / js_audit_close after it is joined.
 */
#ifndef JS_AUDITLOG_INT_H
#define JS_AUDITLOG_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "auditlog.h"
#include "checkpoint.h"
#include "err.h"
#include "merkle.h"

#define QUEUE_MAX      100000u /* queued records before submit fails (memory bound) */
#define FOLD_WINDOW_MS 1000    /* one folded record per (type, caller, reason) per window */
/* Group commit delay (PostgreSQL's commit_delay and commit_siblings): a
 * batch smaller than COMMIT_TARGET waits up to COMMIT_DELAY_US for more
 * records before its write + fdatasync, but only while records announced by
 * js_audit_expect are still on their way: waiting when nothing is coming
 * only adds latency (it put 500 us on every token at light load). */
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
     * caller is told of a failure. Counted if its batch fails. */
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
    uint64_t cp_seq; /* its sequence number */
    bool has_cp;
    size_t nrec;         /* records in the batch (for the on_batch hook) */
    int64_t cp_mono;     /* monotonic ms when its checkpoint was made (has_cp) */
    int64_t cp_wall_ms;  /* that checkpoint's signed "time", Unix ms */
    uint64_t cp_sign_ms; /* how long signing that checkpoint took */
} batch;

/* A finished batch on its way to the notifier. */
typedef struct done_batch {
    item *items;
    js_status st;
    js_err why;
    struct done_batch *next;
} done_batch;

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
    void (*on_key_rotated)(void *ctx);
    void *on_key_rotated_ctx;
    uint64_t min_free_bytes;
    uint32_t min_free_percent;
    bool watermark_off;
    js_audit_io io;

    /* The notifier thread (notifier.c) runs `done` callbacks of finished
     * batches, so the writer can start the next write + fdatasync while
     * replies go out. Its queue is under nmu. */
    pthread_t notifier;
    bool notifier_started;
    pthread_mutex_t nmu;
    pthread_cond_t nwake;
    done_batch *nhead, *ntail;
    bool nbusy; /* the notifier is running callbacks */
    bool nstop;
    bool nsync_init; /* nmu and nwake initialised */

    /* The checkpoint.json thread (cpfile.c): the newest durable checkpoint
     * not yet written, under cmu; the file's replacements, in checkpoint
     * order whichever thread makes them, under cwmu. */
    pthread_t cpthread;
    bool cp_started;
    pthread_mutex_t cmu;
    pthread_cond_t cwake;
    char *cbuf;
    size_t clen;
    uint64_t cseq;
    bool cstop;
    bool cexited;            /* the thread has returned (audit_cpfile_stop) */
    pthread_cond_t cexit_cv; /* signalled when it does */
    pthread_mutex_t cwmu;
    uint64_t cwritten_seq;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    item *qhead, *qtail;
    size_t qlen;
    bool commit_waiting; /* the writer is in its group-commit delay */
    /* Records announced by js_audit_expect and not yet submitted or
     * withdrawn; changed without mu, but a change that ends the writer's
     * delay is signalled under mu (auditlog.c). */
    atomic_size_t expected;
    bool failed;
    js_err why;
    bool closing;
    fold_entry *folds; /* JS_AUDIT_FOLD_MAX of them */
    size_t nfolds;
    pthread_t thread;
    bool thread_started;
    bool writer_exited;     /* the writer thread has returned (js_audit_close) */
    pthread_cond_t exit_cv; /* signalled when it does */
    uint64_t close_wait_ms; /* js_audit_close's bound */
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
    bool cp_file_pending; /* pending_cp is not yet written or posted */
    char *pending_cp;
    size_t pending_cp_len;
    uint64_t pending_cp_seq;
    char *accept_reason; /* js_audit_options.accept_loss_reason, or NULL */
    int64_t disk_check_mono;
    /* Dropped records no caller waited for, since the last recovery record
     * (which reports them), and the denials they stood for. */
    uint64_t lost_records, lost_denials;

    /* records dropped since open (js_audit_records_lost), read by anyone */
    _Atomic uint64_t lost_total;

    /* the newest durable checkpoint's "time" (js_audit_last_checkpoint_ms):
     * written by the writer (the opening thread during open), read by anyone */
    _Atomic uint64_t last_cp_wall_ms;

    /* disk watermark, written by the writer, read by anyone */
    atomic_bool disk_low;
    _Atomic uint64_t disk_free;
};

/* ---- writer.c ---- */

/* The writer thread's body (pthread_create argument: the js_audit). */
void *audit_writer_main(void *arg);
/* Writes all of p to fd through the I/O hooks (js_audit_io.write);
 * JS_EUNAVAIL "audit.unavailable" naming `what` on failure. */
js_status audit_write_all(js_audit *a, int fd, const uint8_t *p, size_t len, const char *what,
                          js_err *err) JS_WUR;
/* fdatasync through the hooks (js_audit_io.fdatasync); 0 when no_fsync. */
int audit_io_sync(js_audit *a, int fd);
js_status audit_sync_fd(js_audit *a, int fd, const char *what, js_err *err) JS_WUR;
/* fsync of the log directory (after a segment is created or renamed). */
js_status audit_sync_dir(js_audit *a, js_err *err) JS_WUR;
/* Replaces DIR/name atomically with js_statefile_write (O_EXCL|O_NOFOLLOW
 * temp file, fsync, rename, fsync dir): checkpoint.json and the audit key
 * files. JS_EUNAVAIL "audit.unavailable" on failure. */
js_status audit_write_file(js_audit *a, const char *name, const void *data, size_t len,
                           js_err *err) JS_WUR;
void audit_batch_free(batch *b);
/* Appends one framed record with the next seq; advances the chain state. */
js_status audit_batch_add(batch *b, chain_state *cs, const char *time, const char *body, bool is_cp,
                          js_err *err) JS_WUR;
/* A checkpoint (FORMAT.md §5) over the records before it, signed through the
 * chain's signing callback. */
js_status audit_batch_add_checkpoint(js_audit *a, batch *b, chain_state *cs, const char *reason,
                                     js_err *err) JS_WUR;
/* Body of a RECOVERY record with the given reason, message and detail. */
js_status audit_recovery_body(const char *reason, const char *message, json_t *detail, char **out,
                              js_err *err) JS_WUR;
js_status audit_open_segment(js_audit *a, unsigned long num, bool create, js_err *err) JS_WUR;
/* One write, one fdatasync; on success the batch is durable and committed. */
js_status audit_write_batch(js_audit *a, batch *b, chain_state *work, js_err *err) JS_WUR;
/* Fails the log (fail closed); the first cause is kept. Takes mu. */
void audit_set_failed(js_audit *a, const js_err *why);
/* Disk watermark: statvfs at most once per JS_AUDIT_DISK_CHECK_MS (or now). */
void audit_disk_check(js_audit *a, bool force);

/* ---- notifier.c ---- */

/* Starts the notifier thread; without it, callbacks run on the writer. */
void audit_notifier_start(js_audit *a);
/* Stops it once every batch handed to it has been delivered. */
void audit_notifier_stop(js_audit *a);
/* Hands a finished batch to the notifier (in order); counts lost records. */
void audit_deliver(js_audit *a, item *items, js_status st, const js_err *why);
/* At most this many callbacks of a batch run on the writer thread itself
 * when nothing else waits for it (notifier.c). */
#define DELIVER_DIRECT_MAX 4
/* Calls each item's `done` and frees the items. */
void audit_finish_items(item *it, js_status st, const js_err *why);

/* ---- cpfile.c ---- */

/* DIR/checkpoint.json from the last durable checkpoint, if one is pending,
 * on the calling thread (open, recovery). */
js_status audit_write_checkpoint_file(js_audit *a, js_err *err) JS_WUR;
/* After a durable batch, on the writer: hands the pending checkpoint to the
 * checkpoint.json thread (writes it here if that thread is absent). */
void audit_cpfile_post(js_audit *a);
/* Starts the thread; without it, the writer replaces the file itself. */
void audit_cpfile_start(js_audit *a);
/* Writes what is pending, then stops the thread; waits until `until`
 * (CLOCK_MONOTONIC; NULL: for as long as it takes) and returns false,
 * leaving it running, if it has not returned by then. */
bool audit_cpfile_stop(js_audit *a, const struct timespec *until);

/* ---- fold.c ---- */

/* The earliest end of an open fold window, if before due. Under mu. */
int64_t audit_folds_due_locked(const js_audit *a, int64_t due);
/* Takes due (or, when all, every) folds into out. Under mu. */
size_t audit_take_folds_locked(js_audit *a, fold_entry *out, bool all);
/* Turns taken folds into items appended to the list (FORMAT.md §3.1). */
void audit_folds_to_items(js_audit *a, const fold_entry *f, size_t n, item **head, item **tail);

/* ---- recovery.c ---- */

/* Start-up (FORMAT.md §8): scans the log against checkpoint.json, cuts a
 * torn tail aside, then writes the first batch (RECOVERY records, the
 * opening checkpoint) and checkpoint.json. Refuses without changing a file. */
js_status audit_open_log(js_audit *a, const js_audit_options *opts, js_err *err) JS_WUR;

/* ---- keyrot.c ---- */

/* The announcing checkpoint is durable: the new key is in force. */
js_status audit_rotation_commit(js_audit *a, js_err *err) JS_WUR;

#endif
