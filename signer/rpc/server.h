/*
 * server.h - the gRPC front end of jwt-signerd (gRPC C core, mTLS only).
 *
 * N worker threads, each with its own completion queue, its own HSM session
 * and several requests outstanding per method, so no lock is shared on the
 * request path. Every call is answered with initial metadata and a status;
 * unknown methods get UNIMPLEMENTED. The RPC layer (signer/rpc) is the only
 * code that includes gRPC and protobuf headers; server.c is the transport,
 * rpc_sign.c, rpc_jwks.c and rpc_admin.c the services, and rpc_call.c holds
 * the one place where a js_status becomes a gRPC status code.
 *
 * Life cycle: js_server_new() (binds the port) -> js_server_start() ->
 * js_server_shutdown() (stop accepting, finish in-flight calls) ->
 * js_server_free().
 */
#ifndef JS_SERVER_H
#define JS_SERVER_H

#include <stdbool.h>

#include "auditlog.h"
#include "config.h"
#include "control.h"
#include "denials.h"
#include "err.h"
#include "hsm.h"
#include "metrics.h"
#include "policy_store.h"
#include "service.h"

/*
 * Limits against hostile peers (gRPC C core 1.51 channel arguments). The
 * connection count itself cannot be capped in 1.51, so these keep each
 * connection's life short unless it does real work:
 * - a peer that has not finished its TLS handshake is dropped after
 *   JS_GRPC_HANDSHAKE_TIMEOUT_MS (gRPC's default is 120 s: an idle TCP flood
 *   would hold a file descriptor per connection for two minutes);
 * - a connection with no call in flight is closed after
 *   JS_GRPC_MAX_CONNECTION_IDLE_MS (clients reconnect on their next call),
 *   and every connection after JS_GRPC_MAX_CONNECTION_AGE_MS (plus a grace
 *   for calls in flight), so certificate rotation and freezes reach every
 *   connection;
 * - server keepalive pings find dead peers; client pings more often than
 *   JS_GRPC_MIN_RECV_PING_INTERVAL_MS without data are a strike, two
 *   strikes close the connection (GOAWAY ENHANCE_YOUR_CALM);
 * - at most JS_GRPC_MAX_CONCURRENT_STREAMS calls per connection and
 *   JS_GRPC_MAX_METADATA_BYTES of request headers.
 */
/* Admin calls per administrator (allowed ones; refusals use the denial
 * budget), and log lines of allowed GetJwks calls per caller. */
#define JS_ADMIN_RATE     5
#define JS_ADMIN_BURST    20
#define JS_JWKS_LOG_RATE  1
#define JS_JWKS_LOG_BURST 5

#define JS_GRPC_HANDSHAKE_TIMEOUT_MS        5000
#define JS_GRPC_MAX_CONNECTION_IDLE_MS      60000
#define JS_GRPC_MAX_CONNECTION_AGE_MS       600000
#define JS_GRPC_MAX_CONNECTION_AGE_GRACE_MS 10000
#define JS_GRPC_KEEPALIVE_TIME_MS           120000
#define JS_GRPC_KEEPALIVE_TIMEOUT_MS        20000
#define JS_GRPC_MIN_RECV_PING_INTERVAL_MS   10000
#define JS_GRPC_MAX_CONCURRENT_STREAMS      64
#define JS_GRPC_MAX_METADATA_BYTES          16384

typedef struct js_server js_server;

/* Everything the server borrows; it must outlive the server (and the audit
 * log must keep running until js_server_shutdown returns: allowed calls wait
 * for their records). */
typedef struct js_server_deps {
    const js_config *cfg;
    const js_service *svc;
    js_policy_store *policies;
    js_snapshot_store *frozen; /* of js_frozen */
    js_snapshot_store *keys;   /* of js_keyring */
    js_control *control;       /* the Admin service acts through it */
    js_audit *audit;
    js_hsm *hsm;
    js_metrics *metrics; /* may be NULL */
    /* Budgets (denials.h): which denials are recorded in full (the rest are
     * folded into counted records), how many Admin calls an administrator
     * may make, and how many GetJwks log lines a caller may cause. */
    js_denials *denials;
    js_denials *admin_rate;
    js_denials *quiet;
    js_tokindex *index; /* issued tokens (tokindex.h); NULL = introspection off */
    const char
        *listen; /* overrides cfg->listen (a re-created listener keeps its port); may be NULL */
} js_server_deps;

/* Opens one HSM session per worker. grpc_init() must have been called. */
js_status js_server_new(const js_server_deps *deps, js_server **out, js_err *err) JS_WUR;

/*
 * The same for Kubernetes' ExternalJWTSigner (k8s.io/externaljwt v1 and
 * v1alpha1; rpc_k8s.c) on the Unix socket cfg->externaljwt_socket:
 * insecure gRPC, each caller identified by its peer credentials
 * (unix:uid=N, rpc_peers.c). At most JS_K8S_WORKERS workers. The socket is
 * created here, accepted on from js_server_start, and removed by shutdown.
 */
js_status js_server_new_k8s(const js_server_deps *deps, js_server **out, js_err *err) JS_WUR;
#define JS_K8S_WORKERS 2
/* Connections open at once on the socket (kube-apiserver keeps one or a
 * few), half of them per uid; the fd watcher keeps room for them. */
#define JS_K8S_MAX_CONNECTIONS 64
/* The largest request: a Sign whose claims are CLAIMS_MAX_BYTES of JSON as
 * base64url (21846 characters) with its framing. Streams per connection:
 * JS_K8S_MAX_STREAMS. Together they bound what one connection can make the
 * signer buffer. */
#define JS_K8S_MAX_REQUEST_BYTES (24 * 1024)
#define JS_K8S_MAX_STREAMS       16

/* The bound port (useful when the config asks for port 0). */
int js_server_port(const js_server *srv);
int js_server_workers(const js_server *srv);

js_status js_server_start(js_server *srv, js_err *err) JS_WUR;

/* Stops accepting new calls and waits for in-flight calls to finish; after
 * grace_ms the remaining calls are cancelled. Joins the workers. */
void js_server_shutdown(js_server *srv, int grace_ms);

/*
 * The same without blocking, for a server being replaced while another keeps
 * serving (a re-created listener, signer/listener.c): drain_begin stops
 * accepting and sends GOAWAY; drain_poll returns true once every call is
 * answered and the workers are joined (then js_server_free). force cancels
 * the calls still in flight (the grace period ran out).
 */
void js_server_drain_begin(js_server *srv);
bool js_server_drain_poll(js_server *srv, bool force);

void js_server_free(js_server *srv);

#endif
