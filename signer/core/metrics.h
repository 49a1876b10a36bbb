/*
 * metrics.h - the signer's Prometheus metrics registry.
 *
 * Every worker thread updates the registry directly. There is no global lock
 * on the hot path: counters and histogram buckets are C11 atomics, and the
 * labelled series live in hash tables split into stripes, each with its own
 * mutex, taken only to find (or, the first time, create) a series. Label
 * cardinality is bounded so that a caller cannot grow the registry without
 * limit: at most JS_METRICS_MAX_CALLERS distinct callers and
 * JS_METRICS_MAX_REASONS distinct reasons (likewise methods and decisions);
 * anything beyond is counted under the value "other". Label values are cut to
 * JS_METRICS_LABEL_MAX bytes and made valid UTF-8 without control characters
 * other than newline (which the exposition format escapes).
 *
 * js_metrics_render() writes the Prometheus text exposition format 0.0.4;
 * gauges that belong to other modules (incident mode, key versions, health)
 * are passed in at render time rather than stored here.
 */
#ifndef JS_METRICS_H
#define JS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "decision.h"
#include "err.h"

#define JS_METRICS_MAX_CALLERS   256   /* distinct caller label values, then "other" */
#define JS_METRICS_MAX_REASONS   128   /* distinct reason label values, then "other" */
#define JS_METRICS_MAX_METHODS   32    /* distinct method label values, then "other" */
#define JS_METRICS_MAX_DECISIONS 16    /* distinct decision label values, then "other" */
#define JS_METRICS_MAX_SERIES    16384 /* requests_total series, then caller/reason "other" */
#define JS_METRICS_LABEL_MAX     256   /* bytes of one label value, after sanitising */
#define JS_METRICS_OTHER         "other"

/* Key version states, in the order of js_metrics_gauges.key_versions. */
enum {
    JS_METRICS_KEY_NEXT = 0,
    JS_METRICS_KEY_ACTIVE,
    JS_METRICS_KEY_RETIRING,
    JS_METRICS_KEY_RETIRED,
    JS_METRICS_KEY_REVOKED,
    JS_METRICS_KEY_STATES
};

typedef struct js_metrics js_metrics;

/* Values owned by other modules, read by the caller just before rendering. */
typedef struct js_metrics_gauges {
    int incident_mode;                          /* 1 = on */
    size_t frozen_callers;                      /* identities frozen at run time (FreezeCaller) */
    size_t key_versions[JS_METRICS_KEY_STATES]; /* next, active, retiring, retired, revoked */
    int audit_healthy;                          /* 1 = the audit log is writable */
    int hsm_healthy;                            /* 1 = the HSM can sign */
    uint64_t hsm_recoveries;                    /* HSM sessions re-opened after a fault */
    uint64_t hsm_session_failures;              /* faults that lost a session or key handle */
    int audit_disk_low;                         /* 1 = free space under the watermark */
    uint64_t audit_disk_free_bytes;    /* free space of the audit directory's file system */
    uint64_t listener_recreations;     /* gRPC listeners re-created after accept failed */
    uint64_t denials_folded;           /* denials counted into folded records */
    uint64_t audit_records_lost;       /* records dropped by failed audit batches, no caller told */
    uint64_t audit_last_checkpoint_ms; /* Unix ms of the newest durable checkpoint, 0 = none */
    long open_fds;                     /* open descriptors, -1 = unknown */
    unsigned long fd_limit;            /* RLIMIT_NOFILE in force */
} js_metrics_gauges;

/* Creates an empty registry; free with js_metrics_free(). */
js_status js_metrics_new(js_metrics **out, js_err *err) JS_WUR;

/* Frees the registry (NULL is fine). No thread may still be updating it. */
void js_metrics_free(js_metrics *m);

/*
 * jwt_signer_requests_total{method,caller,decision,reason} += 1.
 * Strings are borrowed for the call only; NULL or "" is counted as "none".
 * m == NULL is a no-op, so callers need not test whether metrics are enabled.
 */
void js_metrics_request(js_metrics *m, const char *method, const char *caller, const char *decision,
                        const char *reason);

/*
 * Everything one call's decision counts, from the decision itself (never
 * from its reason's name): jwt_signer_requests_total with the decision's
 * kind and reason. For a signing method (js_metrics_sign: SignJwt,
 * ExternalJWTSigner.Sign) also: the latency of an
 * allowed request, a rate-limited caller (status JS_ELIMIT), an HSM error
 * (the HSM failed while signing, d->hsm_failed).
 */
void js_metrics_call(js_metrics *m, const char *method, const char *caller, const js_decision *d);
void js_metrics_sign(js_metrics *m, const char *method, const char *caller, const js_decision *d,
                     int64_t latency_us);

/* The method labels of the two signing methods (logs and metrics). */
#define JS_METHOD_SIGN_JWT "SignJwt"
#define JS_METHOD_K8S_SIGN "ExternalJWTSigner.Sign"

/* Observes one signature's latency in jwt_signer_sign_latency_seconds. */
void js_metrics_sign_latency(js_metrics *m, uint64_t micros);

/* jwt_signer_hsm_errors_total += 1. */
void js_metrics_hsm_error(js_metrics *m);

/*
 * Observes one audit batch: its size in jwt_signer_audit_batch_records and its
 * fsync time in jwt_signer_audit_fsync_seconds.
 */
void js_metrics_audit_batch(js_metrics *m, size_t records, uint64_t fsync_micros);

/* jwt_signer_rate_limited_total{caller} += 1 (same caller cap as above). */
void js_metrics_rate_limited(js_metrics *m, const char *caller);

/*
 * Renders every metric in the Prometheus text format 0.0.4 (# HELP, # TYPE,
 * escaped label values, cumulative histogram buckets with _sum and _count),
 * series sorted by label values so the output is stable. g may be NULL, then
 * the gauges are left out. Returns malloc'd text the caller frees, or NULL
 * when out of memory. Safe to call while other threads update the registry;
 * each value is read atomically, the whole is not a snapshot.
 */
char *js_metrics_render(js_metrics *m, const js_metrics_gauges *g);

/* SignJwt counters per caller, for the Admin GetStatus document:
 * {"caller": {"allow": n, "deny": n, "error": n, "rate_limited": n}}.
 * A new reference (an empty object when m is NULL). */
json_t *js_metrics_caller_counts(js_metrics *m);

#endif
