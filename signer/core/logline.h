/*
 * logline.h - structured log lines: one JSON object per line on stderr.
 *
 * Each line is written with a single write(2) so lines from concurrent
 * workers never interleave. What may be logged is decided by the callers'
 * structs below: never a token, never a PIN, never claim values beyond sub
 * and aud.
 */
#ifndef JS_LOGLINE_H
#define JS_LOGLINE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Adds "time" (RFC 3339, UTC, milliseconds) and "level", writes obj as one
 * line to fd 2, and releases obj (steals the reference). */
void js_log_emit(const char *level, json_t *obj);

/* A lifecycle event: {"event":event,"message":message}. */
void js_log_event(const char *level, const char *event, const char *message);

/* One request's line: SignJwt, GetJwks or an Admin call, built by the RPC
 * layer from the call's one decision (decision.h), like its audit record,
 * metrics and reply (fields may be NULL / 0 when not known). */
typedef struct js_reqlog {
    const char *method;     /* "SignJwt", "GetJwks", "Admin/FreezeCaller", ... */
    const char *caller;     /* identity from the certificate */
    const char *peer;       /* transport address, unauthenticated */
    const char *request_id; /* caller correlation id */
    const char *decision;   /* "allow" | "deny" | "error" (js_decision_name) */
    const char *status;     /* gRPC status name */
    const char *reason;     /* stable reason code */
    const char *message;    /* human message */
    const char *key;        /* key name */
    const char *kid;
    const char *jti;
    const char *sub;       /* the token's sub, if a string */
    const char *aud;       /* the token's aud as compact JSON (string or array) */
    const char *audit_seq; /* the audit record sequence number, as text */
    int64_t latency_us;
} js_reqlog;

void js_reqlog_emit(const js_reqlog *r);

/*
 * Folded denials: instead of one line per denied request beyond the denial
 * budget (signer/core/denials.h), one line per folded audit record, i.e. at most
 * one per (type, caller or peer, reason) per second:
 *   {"event":"denials_folded","type":"sign","caller":"dns:x","reason":
 *    "policy.no_match","count":4995,"audit_seq":1234}
 * "audit_lost":true instead of audit_seq when the audit log failed and the
 * record was not written. Call it from js_audit_options.on_fold, so the log
 * line and the audit record always carry the same count. Strings may be NULL.
 */
typedef struct js_foldlog {
    const char *type; /* "sign", "admin", "denials" (the fold table overflowed) */
    const char *caller;
    const char *peer; /* set when there was no identity */
    const char *reason;
    uint64_t count;
    uint64_t audit_seq; /* 0 = lost */
} js_foldlog;

void js_log_denials_folded(const js_foldlog *f);

#endif
