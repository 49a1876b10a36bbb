/*
 * rpc_call.h - private to the RPC layer (signer/rpc): the server, its
 * workers and the context of one call, shared by the transport (server.c),
 * the per-call helpers (rpc_call.c) and the per-service handlers
 * (rpc_sign.c, rpc_jwks.c, rpc_admin.c, rpc_status.c). Nothing outside signer/rpc
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
#include <protobuf-c/protobuf-c.h>

#include "decision.h"
#include "identity.h"
#include "logline.h"
#include "server.h"
#include "status.h" /* JS_INTROSPECT_RATE ... */

#define METHOD_SIGN       "/jwtsigner.v1.Signer/SignJwt"
#define METHOD_JWKS       "/jwtsigner.v1.Signer/GetJwks"
#define METHOD_INTROSPECT "/jwtsigner.v1.Status/Introspect"
/* claims_json is at most 16 KiB; leave room for the other fields. */
#define MAX_REQUEST_BYTES (64 * 1024)

typedef enum call_kind {
    CALL_SIGN,
    CALL_JWKS,
    CALL_ADMIN,
    CALL_STATUS, /* jwtsigner.v1.Status/Introspect */
    CALL_K8S,
    CALL_UNKNOWN
} call_kind;

/* k8s.io/externaljwt ExternalJWTSigner, in both published packages (the
 * messages are identical on the wire; rpc_k8s.c). */
typedef enum k8s_method {
    K8S_V1_SIGN,
    K8S_V1_FETCH_KEYS,
    K8S_V1_METADATA,
    K8S_V1ALPHA1_SIGN,
    K8S_V1ALPHA1_FETCH_KEYS,
    K8S_V1ALPHA1_METADATA,
    K8S_COUNT
} k8s_method;

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
    ADMIN_REVOKE_TOKEN,
    ADMIN_COUNT
} admin_method;

typedef enum call_state { CALL_REQUESTED, CALL_REPLYING } call_state;

typedef struct worker worker;
typedef struct rpc_peers rpc_peers;

typedef struct call_ctx {
    call_kind kind;
    admin_method admin; /* CALL_ADMIN only */
    k8s_method k8s;     /* CALL_K8S only */
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
    js_denials *denials;         /* denials recorded in full vs folded */
    js_denials *admin_rate;      /* Admin calls per administrator */
    js_denials *quiet;           /* log lines of allowed GetJwks and Introspect calls */
    js_denials *introspect_rate; /* Introspect calls per introspector (owned) */
    js_tokindex *index;          /* issued tokens and revocations; NULL = introspection off */
    grpc_server *server;
    grpc_completion_queue *shutdown_cq;
    void *method_sign;
    void *method_jwks;
    void *method_introspect;
    void *method_admin[ADMIN_COUNT];
    void *method_k8s[K8S_COUNT];
    /* The ExternalJWTSigner server (js_server_new_k8s): its Unix socket and
     * the peer credentials of every connection it handed to gRPC. NULL for
     * the mTLS server. */
    rpc_peers *peers;
    bool k8s; /* serves ExternalJWTSigner on the Unix socket, not the mTLS services */
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

/* The ExternalJWTSigner methods' paths, by k8s_method (rpc_k8s.c). */
extern const char *const js_rpc_k8s_paths[K8S_COUNT];

/* ---- rpc_peers.c: the Unix socket of the ExternalJWTSigner and its peers ---- */

/* Creates the listening socket (owner, group and mode from the
 * configuration) into srv->peers, before any thread of srv runs. */
js_status rpc_peers_new(js_server *srv, js_err *err) JS_WUR;
/* Starts the thread that accepts connections, reads each peer's
 * credentials (SO_PEERCRED) and hands the connection to the gRPC server
 * (grpc_server_add_channel_from_fd). The server must be started. */
js_status rpc_peers_start(rpc_peers *peers, js_err *err) JS_WUR;
/* Stops accepting, closes and removes the socket; connections already
 * handed to gRPC are gRPC's to close. */
void rpc_peers_stop(rpc_peers *peers);
void rpc_peers_free(rpc_peers *peers);
/* The typed identity (unix:uid=N) and the peer text
 * ("unix:pid=P,uid=U,gid=G", gpr_malloc'd into *peer) of a call on the
 * socket, from the credentials read when its connection was accepted.
 * JS_EDENIED identity.none when the call's connection is unknown. */
js_status rpc_peers_identity(rpc_peers *peers, grpc_call *call, char *identity, size_t cap,
                             char **peer, js_err *err) JS_WUR;

/* ---- rpc_sign.c: the signing methods (SignJwt and ExternalJWTSigner Sign) ---- */

/* How a signing method differs from SignJwt: its request message, how the
 * pipeline decides, and its reply. Everything else (identity, the audit
 * record before the reply, the log line, the metrics, folding) is shared. */
typedef struct rpc_sign_variant {
    const char *method; /* the log line's "method" */
    const ProtobufCMessageDescriptor *request;
    /* The request fields for the pipeline; borrows from m. */
    void (*fields)(const ProtobufCMessage *m, js_sign_request *out);
    void (*decide)(const js_service *svc, const js_sign_input *in, js_decision *d);
    /* The identity of the call's peer (and its peer text, gpr_malloc'd). */
    js_status (*identity)(call_ctx *c, js_err *err);
    /* Packs the reply of an allowed decision into *buf (malloc'd). */
    js_status (*pack)(const js_decision *d, uint64_t audit_seq, uint8_t **buf, size_t *len,
                      js_err *err);
} rpc_sign_variant;
void rpc_sign_run(call_ctx *c, const rpc_sign_variant *v);
/* ExternalJWTSigner Sign's variant (rpc_k8s.c). */
extern const rpc_sign_variant *const rpc_k8s_sign_variant;

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

/* The request log line of decision d (logline.h): its kind, status, reason
 * and message (none when allowed), the latency since t0_us. Borrows every
 * string; the caller adds what only it knows (token fields). */
js_reqlog rpc_reqlog_of(const char *method, const char *identity, const char *peer,
                        const js_decision *d, int64_t t0_us);

/* Copies the request payload into one contiguous buffer of at most
 * MAX_REQUEST_BYTES (release *out with grpc_slice_unref). */
js_status rpc_read_request(grpc_byte_buffer *bb, grpc_slice *out, js_err *err) JS_WUR;

/* The caller identity from the verified client certificate (identity.h). */
js_status rpc_call_identity(grpc_call *call, char *out, size_t cap, js_err *err) JS_WUR;

/* The denial budget (denials.h): true = audit record and log line in full. */
bool rpc_denial_in_full(const call_ctx *c);
/* Counts a denial into its folded record (type "sign", "admin" or "introspect"). */
void rpc_fold_denial(const call_ctx *c, const char *type, js_reason why);
/* A call that ended without a request message (stream reset). */
void rpc_no_message(call_ctx *c, const char *method);

/* ---- the handlers, one per service ---- */
void rpc_handle_sign(call_ctx *c);    /* rpc_sign.c */
void rpc_handle_jwks(call_ctx *c);    /* rpc_jwks.c */
void rpc_handle_admin(call_ctx *c);   /* rpc_admin.c */
void rpc_handle_status(call_ctx *c);  /* rpc_status.c */
void rpc_handle_k8s(call_ctx *c);     /* rpc_k8s.c */
void rpc_handle_unknown(call_ctx *c); /* rpc_call.c */

#endif
