/*
 * auditlog.h - the signer's side of the audit log: an append-only,
 * hash-chained, checkpointed record of every decision, durable before any
 * token is released. Format: audit/FORMAT.md.
 *
 * Group commit: worker threads hand records to js_audit_submit(), which only
 * queues them; one writer thread takes every queued record, writes them with
 * one write and makes them durable with one fdatasync per batch, then hands the
 * batch to a notifier thread, which calls each record's `done` callback while
 * the writer goes on with the next batch. No worker waits on fsync: the
 * signer sends a token's reply from that callback.
 *
 * Threads that run callbacks:
 *   done, on_fold   the notifier thread, batch after batch in order; the
 *                   writer thread instead for a small batch when nothing
 *                   else waits (no record queued, the notifier idle: the
 *                   hand-off would only add a wake-up to the reply), and
 *                   when the hand-off cannot be allocated (out of memory:
 *                   that batch's callbacks may then run before those of an
 *                   earlier batch still queued to the notifier) or the
 *                   notifier could not be started. Never the submitting
 *                   thread.
 *   sign            the writer thread; during js_audit_open (recovery and
 *                   the opening checkpoint) the opening thread, before the
 *                   writer exists. Never two at once.
 *   on_batch        the writer thread (the opening thread during open).
 *
 * Fail closed: once a write or fdatasync fails, every queued and new record
 * fails with JS_EUNAVAIL (reason "audit.unavailable", message saying why).
 * An fdatasync error is never retried as if it had succeeded: the writer
 * truncates the segment back to its last durable offset and retries that
 * recovery every retry_ms; when it succeeds, a RECOVERY record notes it and
 * the log resumes.
 *
 * Checkpoints (RFC 6962-style, signed in the HSM through `sign`) are written
 * at open, at close, every checkpoint_interval_ms or checkpoint_records while
 * busy, and every heartbeat_ms when idle. A checkpoint made more than
 * JS_AUDIT_LATE_TOLERANCE_MS after that schedule (measured on the monotonic
 * clock from the previous checkpoint's making) records late_ms and, when one
 * delay explains it, late_why ("stalled": the writer woke late, the process
 * did not run; "fsync"; "sign") with late_why_ms -- signed, so a verifier
 * can tell a stall from a cut (FORMAT.md §5.1, §7 rule 5).
 */
#ifndef JS_AUDITLOG_H
#define JS_AUDITLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include "err.h"

typedef struct js_audit js_audit;

/* Signs a checkpoint body with the audit key (ES256, JOSE r||s). Called from
 * the writer thread, and from js_audit_open's thread before the writer starts
 * -- never concurrently, so it may own one HSM session. */
typedef js_status (*js_audit_sign_fn)(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
                                      size_t cap, size_t *sig_len, js_err *err);

/* Optional I/O hooks for fault-injection tests; NULL members = the real calls. */
typedef struct js_audit_io {
    ssize_t (*write)(void *ctx, int fd, const void *buf, size_t len);
    int (*fdatasync)(void *ctx, int fd);
    int (*statvfs)(void *ctx, const char *path, struct statvfs *out); /* disk watermark */
    void *ctx;
} js_audit_io;

/* Free space below which js_audit_disk_low() reports true: 256 MiB is about
 * two minutes of records at the benchmarked peak (~5,000 durable signs/s of
 * ~470 bytes, ~2.4 MB/s; README "make bench") and hours at ordinary rates:
 * time for an alert to reach someone before a full disk stops all signing
 * (fail closed). */
#define JS_AUDIT_MIN_FREE_DEFAULT (256ull * 1024 * 1024)
#define JS_AUDIT_DISK_CHECK_MS    1000 /* statvfs at most this often */

/* Limits of a folded record's members (FORMAT.md §3.1); longer text is cut. */
#define JS_AUDIT_FOLD_TYPE_MAX   16u
#define JS_AUDIT_FOLD_WHO_MAX    512u /* caller identity or peer address */
#define JS_AUDIT_FOLD_REASON_MAX 64u
#define JS_AUDIT_FOLD_MAX        256u /* distinct (type, caller, reason) per window */

/* One folded record, as reported to on_fold once it is durable (or lost). */
typedef struct js_audit_fold {
    const char *type;   /* "sign", "admin", or "denials" for the overflow record */
    const char *caller; /* NULL when the denials had no identity (then peer) */
    const char *peer;   /* NULL when caller is set */
    const char *reason;
    uint64_t count; /* denials this record stands for */
    uint64_t seq;   /* its sequence number; 0 if the log failed and it was lost */
} js_audit_fold;

typedef struct js_audit_options {
    const char *dir;                 /* log directory (created 0700 if absent) */
    const char *origin;              /* log origin id, fixed for the log's lifetime */
    uint64_t checkpoint_interval_ms; /* 0 = 1000 */
    uint64_t checkpoint_records;     /* 0 = 1000 */
    uint64_t heartbeat_ms;           /* 0 = checkpoint_interval_ms */
    uint64_t segment_bytes;          /* rotation size; 0 = 64 MiB */
    uint64_t retry_ms;               /* recovery retry after an I/O failure; 0 = 1000 */
    uint64_t close_wait_ms;          /* js_audit_close's bound; 0 = JS_AUDIT_CLOSE_WAIT_MS */
    bool no_fsync;                   /* benchmarks only: skip fdatasync */
    js_audit_sign_fn sign;
    void *sign_ctx;
    const char *pubkey_pem; /* the audit key's public key, written as DIR/audit-key.pem */
    const js_audit_io *io;  /* NULL = real I/O */
    /* Called on the writer thread after each durable batch (metrics); during
     * js_audit_open on the opening thread. */
    void (*on_batch)(void *ctx, size_t records, uint64_t fsync_us);
    void *on_batch_ctx;
    /* Called once per folded record (the notifier thread, or the writer
     * when memory runs out: see the top of this file), so the daemon writes
     * one summary log line per record: the log line and the audit record
     * then always carry the same count. NULL = none. */
    void (*on_fold)(void *ctx, const js_audit_fold *f);
    void *on_fold_ctx;
    /* Called on the writer thread once per key rotation made durable
     * (js_audit_rotate_key, FORMAT.md §5.4), before its caller is woken: a
     * caller that counts the calls knows every rotation in force once
     * js_audit_rotate_key returned JS_OK, and once js_audit_close returned
     * true (the closing checkpoint may be the one that announces a pending
     * rotation). NULL = none. */
    void (*on_key_rotated)(void *ctx);
    void *on_key_rotated_ctx;
    /* Disk watermark: js_audit_disk_low() is true while the log directory's
     * file system has less than min_free_bytes (0 = JS_AUDIT_MIN_FREE_DEFAULT)
     * or less than min_free_percent % (0 = no percentage rule) available to
     * the signer's user. disk_watermark_off disables the check. */
    uint64_t min_free_bytes;
    uint32_t min_free_percent;
    bool disk_watermark_off;
    /* Start-up recovery (FORMAT.md §8): damage at or before the record
     * DIR/checkpoint.json names is not a crash (the file is replaced only
     * after that record is durable), so js_audit_open refuses it
     * (JS_ECONFIG, reason "audit.anchor_lost") and changes no file. An
     * operator who has investigated sets this to why the loss is accepted
     * (1..JS_AUDIT_ACCEPT_REASON_MAX bytes): recovery then proceeds and an
     * audit.loss_accepted RECOVERY record names the segment, offset, first
     * lost seq, the checkpoint that named it and this text. Ignored when
     * nothing named is lost. NULL = refuse. */
    const char *accept_loss_reason;
} js_audit_options;

/* Longest operator reason accepted in js_audit_options.accept_loss_reason. */
#define JS_AUDIT_ACCEPT_REASON_MAX 512u

/* The content of one record. Strings may be NULL (omitted). */
typedef struct js_audit_event {
    const char *type;   /* "sign", "start", "stop", "policy", "incident", "key", "admin", ... */
    const char *caller; /* identity */
    const char *peer;
    const char *request_id;
    const char *decision; /* "allow" | "deny" | "error" */
    const char *reason;   /* stable reason code */
    const char *message;
    const char *key; /* key name */
    const char *kid;
    const char *alg;
    const char *jti;
    const char *sub;
    const char *aud_json; /* aud as compact JSON (string or array) */
    int64_t iat;          /* 0 = absent */
    int64_t exp;
    const char *scopes;       /* granted scopes, space-separated */
    const char *cnf_json;     /* the token's cnf claim as a JSON object (RFC 7800) */
    const char *token_sha256; /* hex SHA-256 of the issued JWT, never the JWT */
    const char *policy_hash;  /* hex SHA-256 of the policy file in force */
    const char *detail_json;  /* extra JSON object for lifecycle/admin events */
} js_audit_event;

/* Called exactly once per submitted record, from the notifier thread or
 * the writer thread (see "Threads that run callbacks" above):
 * st == JS_OK with the record's sequence number once it is durable, or
 * JS_EUNAVAIL (err says why) if it never will be. */
typedef void (*js_audit_done_fn)(void *ctx, js_status st, uint64_t seq, const js_err *err);

/* Opens the log in opts->dir: crash recovery (see FORMAT.md §8) and the
 * opening checkpoint, written on the calling thread; then the notifier and
 * writer threads start. Refuses
 * (JS_ECONFIG) on damage that is not a torn tail, naming segment, offset and
 * sequence, and on any loss of the record checkpoint.json names (unless
 * opts->accept_loss_reason); a refusal changes no file. */
js_status js_audit_open(const js_audit_options *opts, js_audit **out, js_err *err) JS_WUR;

/* Queues one record; never blocks on I/O. If the log is failed or closing,
 * returns JS_EUNAVAIL at once and `done` is not called. done may be NULL. */
js_status js_audit_submit(js_audit *a, const js_audit_event *ev, js_audit_done_fn done, void *ctx,
                          js_err *err) JS_WUR;

/*
 * Group commit waits only for records on their way (PostgreSQL's
 * commit_delay with commit_siblings): a caller that will soon submit a
 * record -- a request being decided -- announces it with js_audit_expect and
 * then either submits it with js_audit_submit_expected, which queues the
 * record and withdraws the announcement in one step, or withdraws it with
 * js_audit_expect_cancel. The writer delays a batch (at most
 * COMMIT_DELAY_US) only while announced records are outstanding, so a lone
 * record at light load is written at once, and a busy signer still fills
 * its batches. Every js_audit_expect must be matched by exactly one of the
 * other two.
 */
void js_audit_expect(js_audit *a);
void js_audit_expect_cancel(js_audit *a);
js_status js_audit_submit_expected(js_audit *a, const js_audit_event *ev, js_audit_done_fn done,
                                   void *ctx, js_err *err) JS_WUR;

/* Queues and waits until durable (lifecycle events from the main thread). */
js_status js_audit_append_sync(js_audit *a, const js_audit_event *ev, uint64_t *seq,
                               js_err *err) JS_WUR;

/*
 * Counts one folded denial (FORMAT.md §3.1): a denial the daemon's budget
 * (signer/core/denials.h) did not admit in full, or any rate-limited one. The
 * writer turns the denials of one (type, caller or peer, reason) into one
 * record with a "count", at most one per second per triple, so a flood
 * cannot fill the disk; on_fold then reports each record. caller NULL or ""
 * = no identity: the record names the peer address instead. Never blocks on
 * I/O, never allocates: one mutex and a scan of at most JS_AUDIT_FOLD_MAX
 * 64-bit hashes. Beyond JS_AUDIT_FOLD_MAX distinct triples in a window the
 * rest are counted in one overflow record (caller "(other)").
 */
void js_audit_note_folded(js_audit *a, const char *type, const char *caller, const char *peer,
                          const char *reason);

/* Disk watermark (js_audit_options.min_free_bytes): true while free space in
 * the log directory's file system is below it. *free_bytes (may be NULL)
 * gets the last measured free space (UINT64_MAX before the first
 * measurement or if statvfs fails). The writer measures at most once every
 * JS_AUDIT_DISK_CHECK_MS; this call only reads the last result (atomics),
 * so /healthz and metrics may call it freely. The log keeps writing below
 * the watermark: it is a warning, the fail-closed rule is unchanged. */
bool js_audit_disk_low(js_audit *a, uint64_t *free_bytes);

/* Records dropped because their batch failed while no caller was waiting
 * for them (denials, folded denials, asynchronous control events), since
 * open. Each recovery record counts those of its outage in its detail
 * ("lost_records", "lost_denials"; FORMAT.md §6). Any thread. */
uint64_t js_audit_records_lost(js_audit *a);

/* The signed "time" (Unix milliseconds) of the newest checkpoint that is
 * durable in the log, 0 before the first (js_audit_open writes one, so 0
 * only while it has not). Set by the writer once the checkpoint's batch is
 * fdatasync'd; it stops advancing while the writer is stalled or the log is
 * failed, which is what it is for (a staleness alert). Any thread. */
uint64_t js_audit_last_checkpoint_ms(js_audit *a);

/* False (and why) while the log cannot be written. */
bool js_audit_healthy(js_audit *a, js_err *why);

/*
 * Audit key rotation (FORMAT.md §5.4). Keeps the key in force and the new
 * one as DIR/audit-key-ID.pem (ID = js_audit_pubkey_id), then asks the
 * writer to seal a checkpoint at once that announces the new key (next_key)
 * and is signed by the key in force; every later checkpoint is signed
 * through `sign`/`sign_ctx`, and DIR/audit-key.pem becomes pubkey_pem, once
 * that checkpoint is durable. Waits up to timeout_ms for it: JS_OK (new_id,
 * if non-NULL, gets the new key's id); JS_EUNAVAIL "audit.rotate_pending"
 * when not durable yet (the request stays queued: sign_ctx must stay valid
 * until the log is closed); JS_ESTATE when the log is failed, closing or
 * already rotating, or was opened without pubkey_pem. The previous
 * sign_ctx is no longer used once this returns JS_OK. Any thread.
 */
js_status js_audit_rotate_key(js_audit *a, js_audit_sign_fn sign, void *sign_ctx,
                              const char *pubkey_pem, uint64_t timeout_ms, char *new_id,
                              js_err *err) JS_WUR;

/* How long js_audit_close waits for the writer's last batch by default: as
 * long as js_audit_append_sync waits for a record. */
#define JS_AUDIT_CLOSE_WAIT_MS 30000u

/*
 * Flushes, writes a final checkpoint, stops the writer, closes files and
 * frees the log; true. Every record submitted before it has had its `done`
 * called when it returns (the notifier is stopped only after the writer's
 * last batch is delivered).
 *
 * Bounded: it waits at most close_wait_ms for the writer's last batch (one
 * write, one fdatasync, one checkpoint signature). A writer stuck longer (a
 * hung disk or HSM) is left running and false is returned with nothing
 * freed: the log, sign_ctx, the I/O hooks and every pending `done` context
 * must then stay valid, so the caller should exit (or call js_audit_close
 * again, which waits again). NULL: true.
 */
bool js_audit_close(js_audit *a);

#endif
