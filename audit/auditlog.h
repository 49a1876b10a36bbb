/*
 * auditlog.h - the signer's side of the audit log: an append-only,
 * hash-chained, checkpointed record of every decision, durable before any
 * token is released. Format: audit/FORMAT.md.
 *
 * Group commit: worker threads hand records to js_audit_submit(), which only
 * queues them; one writer thread takes every queued record, writes them with
 * one write and makes them durable with one fdatasync per batch, then calls
 * each record's `done` callback (from the writer thread). No worker waits on
 * fsync: the signer sends a token's reply from that callback.
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
 * busy, and every heartbeat_ms when idle.
 */
#ifndef JS_AUDITLOG_H
#define JS_AUDITLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

typedef struct js_audit js_audit;

/* Signs a checkpoint body with the audit key (ES256, JOSE r||s). Called only
 * from the writer thread (which may therefore own one HSM session). */
typedef js_status (*js_audit_sign_fn)(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
                                      size_t cap, size_t *sig_len, js_err *err);

/* Optional I/O hooks for fault-injection tests; NULL members = the real calls. */
typedef struct js_audit_io {
    ssize_t (*write)(void *ctx, int fd, const void *buf, size_t len);
    int (*fdatasync)(void *ctx, int fd);
    void *ctx;
} js_audit_io;

typedef struct js_audit_options {
    const char *dir;                 /* log directory (created 0700 if absent) */
    const char *origin;              /* log origin id, fixed for the log's lifetime */
    uint64_t checkpoint_interval_ms; /* 0 = 1000 */
    uint64_t checkpoint_records;     /* 0 = 1000 */
    uint64_t heartbeat_ms;           /* 0 = checkpoint_interval_ms */
    uint64_t segment_bytes;          /* rotation size; 0 = 64 MiB */
    uint64_t retry_ms;               /* recovery retry after an I/O failure; 0 = 1000 */
    bool no_fsync;                   /* benchmarks only: skip fdatasync */
    js_audit_sign_fn sign;
    void *sign_ctx;
    const char *pubkey_pem; /* the audit key's public key, written as DIR/audit-key.pem */
    const js_audit_io *io;  /* NULL = real I/O */
    /* Called on the writer thread after each durable batch (metrics). */
    void (*on_batch)(void *ctx, size_t records, uint64_t fsync_us);
    void *on_batch_ctx;
} js_audit_options;

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
    const char *token_sha256; /* hex SHA-256 of the issued JWT, never the JWT */
    const char *policy_hash;  /* hex SHA-256 of the policy file in force */
    const char *detail_json;  /* extra JSON object for lifecycle/admin events */
} js_audit_event;

/* Called exactly once per submitted record, from the writer thread:
 * st == JS_OK with the record's sequence number once it is durable, or
 * JS_EUNAVAIL (err says why) if it never will be. */
typedef void (*js_audit_done_fn)(void *ctx, js_status st, uint64_t seq, const js_err *err);

/* Opens the log in opts->dir: crash recovery (see FORMAT.md), then the writer
 * thread starts and an opening checkpoint is written. Refuses (JS_ECONFIG)
 * on damage that is not a torn tail, naming segment, offset and sequence. */
js_status js_audit_open(const js_audit_options *opts, js_audit **out, js_err *err) JS_WUR;

/* Queues one record; never blocks on I/O. If the log is failed or closing,
 * returns JS_EUNAVAIL at once and `done` is not called. done may be NULL. */
js_status js_audit_submit(js_audit *a, const js_audit_event *ev, js_audit_done_fn done, void *ctx,
                          js_err *err) JS_WUR;

/* Queues and waits until durable (lifecycle events from the main thread). */
js_status js_audit_append_sync(js_audit *a, const js_audit_event *ev, uint64_t *seq,
                               js_err *err) JS_WUR;

/* Counts a rate-limited denial; the writer folds them into at most one record
 * per caller per second, with a count, so a flood cannot fill the disk. */
void js_audit_note_rate_limited(js_audit *a, const char *caller, const char *reason);

/* False (and why) while the log cannot be written. */
bool js_audit_healthy(js_audit *a, js_err *why);

/* Flushes, writes a final checkpoint, stops the writer, closes files. */
void js_audit_close(js_audit *a);

#endif
