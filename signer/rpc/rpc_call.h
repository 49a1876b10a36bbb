/*
 * rpc_call.h - private to the RPC layer (signer/rpc): the server, its
 * workers and the context of one call, shared by the transport (server.c),
 * the per-call helpers (rpc_call.c) and the per-service handlers
 * (rpc_sign.c, rpc_jwks.c, rpc_admin.c). Nothing outside signer/rpc
 * includes it.
 *
 * A call context belongs to the worker whose completion queue takes its
 * events; once rpc_reply() has started the reply batch it may be freed at
 * any moment, so nothing may touch it afterwards.
 */
#ifndef JS_RPC_CALL_H
#define JS_RPC_CALL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "decision.h"
#include "identity.h"
#include "server.h"

#define METHOD_SIGN "/jwtsigner.v1.Signer/SignJwt"
#define METHOD_JWKS "/jwtsigner.v1.Signer/GetJwks"
/* claims_json is at most 16 KiB; leave room for the other fields. */
#define MAX_REQUEST_BYTES (64 * 1024)

typedef enum call_kind { CALL_SIGN, CALL_JWKS, CALL_ADMIN, CALL_UNKNOWN } call_kind;

/* jwtsigner.v1.Admin, in the order of the proto. */
typedef enum admin_method {
    ADMIN_ROTATE,
    ADMIN_REVOKE,
    ADMIN_INCIDENT,
    ADMIN_FREEZE,
    ADMIN_UNFREEZE,
    ADMIN_RELOAD,
    ADMIN_STATUS,
    ADMIN_ROTATE_AUDIT,
    ADMIN_COUNT
} admin_method;

typedef enum call_state { CALL_REQUESTED, CALL_REPLYING } call_state;

typedef struct worker worker;

typedef struct call_ctx {
    call_kind kind;
    admin_method admin; /* CALL_ADMIN only */
    call_state state;
    worker *w;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details; /* generic calls only */
    grpc_byte_buffer *request;
    grpc_byte_buffer *reply;
    int cancelled;
    /* An allowed SignJwt waits here for its audit record to be durable. */
    int64_t t0_us;
    char *peer;
    char identity[IDENTITY_MAX + 1];
    js_decision d; /* how the call ended: reply, log line, audit record, metrics */
} call_ctx;

struct worker {
    int idx;
    js_server *srv;
    grpc_completion_queue *cq;
    js_hsm_session *session;
    js_policy_cache policy;   /* this worker's view of the policy in force */
    js_snapshot_cache frozen; /* ... and of the callers frozen at run time */
    js_snapshot_cache keys;   /* ... and of the keyring */
    pthread_t thread;
    int started;
};

struct js_server {
    const js_config *cfg;
    const js_service *svc;
    js_policy_store *policies;
    js_snapshot_store *frozen;
    js_snapshot_store *keys;
    js_control *control;
    js_audit *audit;
    js_metrics *metrics;
    js_denials *denials;    /* denials recorded in full vs folded */
    js_denials *admin_rate; /* Admin calls per administrator */
    js_denials *quiet;      /* log lines of allowed GetJwks calls */
    grpc_server *server;
    grpc_completion_queue *shutdown_cq;
    void *method_sign;
    void *method_jwks;
    void *method_admin[ADMIN_COUNT];
    worker *workers;
    int nworkers;
    int port;
    int grpc_started;
    atomic_bool shutting_down;
    int drained;   /* the shutdown tag has come */
    int cancelled; /* calls were cancelled when the drain grace ran out */
    /* SignJwt handlers from their start until their reply is sent: while
     * deciding, and (allowed calls) while waiting for the audit record,
     * whose reply goes out from the audit notifier and needs the worker
     * queues alive.
     * Counted up without a lock; counted down under audit_mu, which
     * signals audit_cv at zero, so shutdown sleeps instead of polling and
     * the last notifier is done with the server once shutdown sees zero. */
    atomic_int awaiting_audit;
    pthread_mutex_t audit_mu;
    pthread_cond_t audit_cv; /* CLOCK_MONOTONIC */
    int audit_sync_ok;       /* audit_mu and audit_cv initialised */
};

/* An allowed SignJwt starts / stops waiting for its audit record (server.c). */
void rpc_audit_wait_begin(js_server *srv);
void rpc_audit_wait_end(js_server *srv);

/* The Admin methods' paths, by admin_method (rpc_admin.c). */
extern const char *const js_rpc_admin_paths[ADMIN_COUNT];

/* ---- rpc_call.c: per-call helpers ---- */

/* The one mapping from our error convention to gRPC status codes. */
grpc_status_code rpc_status_code(js_status st);
const char *rpc_status_name(grpc_status_code c);

void rpc_call_free(call_ctx *c);

/* Sends the whole reply in one batch (initial metadata, the message when
 * code is OK and body is set, the status with "reason: message" details
 * and the jwt-signer-reason / retry-after-ms trailers). c may be gone when
 * it returns. */
void rpc_reply(call_ctx *c, grpc_status_code code, js_reason why, const char *msg,
               const uint8_t *body, size_t body_len, uint64_t retry_after_ms);
/* The reply of decision d (c->d, or one of the caller's): its status,
 * reason, message and retry-after; body only when allowed. */
void rpc_reply_decision(call_ctx *c, const js_decision *d, const uint8_t *body, size_t body_len);

/* Copies the request payload into one contiguous buffer of at most
 * MAX_REQUEST_BYTES (release *out with grpc_slice_unref). */
js_status rpc_read_request(grpc_byte_buffer *bb, grpc_slice *out, js_err *err) JS_WUR;

/* The caller identity from the verified client certificate (identity.h). */
js_status rpc_call_identity(grpc_call *call, char *out, size_t cap, js_err *err) JS_WUR;

/* The denial budget (denials.h): true = audit record and log line in full. */
bool rpc_denial_in_full(const call_ctx *c);
/* Counts a denial into its folded record (type "sign" or "admin"). */
void rpc_fold_denial(const call_ctx *c, const char *type, js_reason why);
/* A call that ended without a request message (stream reset). */
void rpc_no_message(call_ctx *c, const char *method);

/* ---- the handlers, one per service ---- */
void rpc_handle_sign(call_ctx *c);    /* rpc_sign.c */
void rpc_handle_jwks(call_ctx *c);    /* rpc_jwks.c */
void rpc_handle_admin(call_ctx *c);   /* rpc_admin.c */
void rpc_handle_unknown(call_ctx *c); /* rpc_call.c */

#endif
