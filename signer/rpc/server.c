/*
 * server.c - the transport of the gRPC server for jwtsigner.v1.Signer,
 * jwtsigner.v1.Admin and jwtsigner.v1.Status (see server.h): the server and its channel arguments,
 * the listener, one completion queue and thread per worker, shutdown.
 *
 * Call flow per worker thread (all on the worker's own completion queue):
 *   request_registered_call (armed several times per method)
 *     -> event: re-arm, then the service's handler (rpc_sign.c, rpc_jwks.c,
 *        rpc_admin.c, rpc_status.c) decodes, has the core decide (with the worker's own
 *        HSM session) and sends one reply batch: SEND_INITIAL_METADATA,
 *        SEND_MESSAGE (on success), SEND_STATUS_FROM_SERVER,
 *        RECV_CLOSE_ON_SERVER; an allowed token's batch goes out from the
 *        audit log's notifier (or writer) thread once its record is durable
 *     -> event: reply done, release everything.
 * Initial metadata is always sent: a status without it leaves a gRPC client
 * waiting until its deadline. A generic request_call stays armed so that an
 * unregistered method is answered UNIMPLEMENTED instead of hanging.
 */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "clock.h"
#include "logline.h"
#include "policy_store.h"
#include "rpc_call.h"
#include "tls_files.h"
#include "tsan_annotate.h"

/* Outstanding requested calls per worker: enough to keep a worker busy
 * while its last reply is in flight. */
#define PENDING_SIGN    8
#define PENDING_JWKS    2
#define PENDING_STATUS  4
#define PENDING_UNKNOWN 1
#define PENDING_K8S     2
/* While shutdown waits for the audit log to answer allowed tokens, a line
 * this often says so. The audit log answers every record, durable or
 * failed, so the wait ends when its writer does; a writer stuck in the
 * kernel holds it, and the line says why the signer does not stop. */
#define AUDIT_WAIT_REPORT_MS 5000

static grpc_arg int_arg(const char *key, int value)
{
    grpc_arg a;
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key;
    a.value.integer = value;
    return a;
}

/* Arms one requested call of `kind` (and admin or ExternalJWTSigner method)
 * on worker w's queue. */
static int call_arm_method(worker *w, call_kind kind, admin_method am, k8s_method km)
{
    js_server *srv = w->srv;
    if (atomic_load(&srv->shutting_down))
        return 0;
    call_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->kind = kind;
    c->admin = am;
    c->k8s = km;
    c->state = CALL_REQUESTED;
    c->w = w;
    grpc_metadata_array_init(&c->req_md);
    grpc_call_error rc;
    JS_TAG_HANDOFF(c);
    if (kind == CALL_UNKNOWN) {
        grpc_call_details_init(&c->details);
        rc = grpc_server_request_call(srv->server, &c->call, &c->details, &c->req_md, w->cq, w->cq,
                                      c);
    } else {
        void *method = kind == CALL_SIGN     ? srv->method_sign
                       : kind == CALL_JWKS   ? srv->method_jwks
                       : kind == CALL_STATUS ? srv->method_introspect
                       : kind == CALL_K8S    ? srv->method_k8s[km]
                                             : srv->method_admin[am];
        rc = grpc_server_request_registered_call(srv->server, method, &c->call, &c->deadline,
                                                 &c->req_md, &c->request, w->cq, w->cq, c);
    }
    if (rc != GRPC_CALL_OK) {
        rpc_call_free(c);
        return -1;
    }
    return 0;
}

static int call_arm(worker *w, call_kind kind)
{
    return call_arm_method(w, kind, ADMIN_COUNT, K8S_COUNT);
}

/* ---- workers -------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        call_ctx *c = ev.tag;
        JS_TAG_TAKEN(c);
        if (c->state == CALL_REPLYING) {
            rpc_call_free(c);
            continue;
        }
        if (!ev.success) {
            /* A requested call that will never come: the server is shutting down. */
            rpc_call_free(c);
            continue;
        }
        /* Re-arm first so the next request does not wait for this one. */
        if (call_arm_method(w, c->kind, c->admin, c->k8s) != 0)
            js_log_event("error", "rearm_failed", "cannot re-arm a requested call");
        switch (c->kind) {
        case CALL_SIGN:
            rpc_handle_sign(c);
            break;
        case CALL_JWKS:
            rpc_handle_jwks(c);
            break;
        case CALL_ADMIN:
            rpc_handle_admin(c);
            break;
        case CALL_STATUS:
            rpc_handle_status(c);
            break;
        case CALL_K8S:
            rpc_handle_k8s(c);
            break;
        case CALL_UNKNOWN:
        default:
            rpc_handle_unknown(c);
            break;
        }
    }
    return NULL;
}

/* The mTLS server (k8s false) or the ExternalJWTSigner server (k8s true). */
static js_status server_new(const js_server_deps *deps, bool k8s, js_server **out, js_err *err)
{
    *out = NULL;
    js_server *srv = calloc(1, sizeof(*srv));
    JS_ENSURE_ALLOC(srv, err);
    const js_config *cfg = deps->cfg;
    js_hsm *hsm = deps->hsm;
    srv->cfg = cfg;
    srv->svc = deps->svc;
    srv->policies = deps->policies;
    srv->frozen = deps->frozen;
    srv->keys = deps->keys;
    srv->metrics = deps->metrics;
    srv->control = deps->control;
    srv->audit = deps->audit;
    srv->denials = deps->denials;
    srv->admin_rate = deps->admin_rate;
    srv->quiet = deps->quiet;
    srv->index = deps->index;
    atomic_init(&srv->shutting_down, false);
    atomic_init(&srv->awaiting_audit, 0);
    pthread_condattr_t ca;
    bool sync_ok = pthread_condattr_init(&ca) == 0;
    if (sync_ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0)
        sync_ok = false;
    if (sync_ok && pthread_cond_init(&srv->audit_cv, &ca) != 0)
        sync_ok = false;
    if (sync_ok && pthread_mutex_init(&srv->audit_mu, NULL) != 0) {
        pthread_cond_destroy(&srv->audit_cv);
        sync_ok = false;
    }
    pthread_condattr_destroy(&ca);
    if (!sync_ok) {
        free(srv);
        return js_err_set(err, JS_EINTERNAL, JS_R_SERVER_THREAD,
                          "cannot create the audit wait condition");
    }
    srv->audit_sync_ok = 1;
    srv->k8s = k8s;
    srv->nworkers = cfg->workers > 0 ? cfg->workers : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (k8s && srv->nworkers > JS_K8S_WORKERS)
        srv->nworkers = JS_K8S_WORKERS;
    if (srv->nworkers <= 0)
        srv->nworkers = 1;
    js_status st = JS_OK;
    grpc_server_credentials *creds = NULL;
    if (!k8s) {
        js_denials_options rate = {.rate = JS_INTROSPECT_RATE,
                                   .burst = JS_INTROSPECT_BURST,
                                   .global_rate = JS_INTROSPECT_GLOBAL_RATE,
                                   .global_burst = JS_INTROSPECT_GLOBAL_BURST};
        st = js_denials_new(&rate, &srv->introspect_rate, err);
        if (st != JS_OK)
            goto fail;
    }

    srv->workers = calloc((size_t)srv->nworkers, sizeof(*srv->workers));
    if (srv->workers == NULL) {
        st = js_err_oom(err);
        goto fail;
    }
    for (int i = 0; i < srv->nworkers; i++) {
        srv->workers[i].idx = i;
        srv->workers[i].srv = srv;
        /* Opened on the worker's first call: a listener re-created while the
         * HSM recovers accepts connections at once (the HSM was checked at
         * start with every key's self-test). */
        st = js_hsm_session_new_deferred(hsm, &srv->workers[i].session, err);
        if (st != JS_OK)
            goto fail;
    }

    /* Limits against hostile peers (server.h lists them with their reasons). */
    grpc_arg args[] = {
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                k8s ? JS_K8S_MAX_REQUEST_BYTES : MAX_REQUEST_BYTES),
        int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, 4 * 1024 * 1024),
        int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, JS_GRPC_HANDSHAKE_TIMEOUT_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, JS_GRPC_MAX_CONNECTION_IDLE_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_AGE_MS, JS_GRPC_MAX_CONNECTION_AGE_MS),
        int_arg(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, JS_GRPC_MAX_CONNECTION_AGE_GRACE_MS),
        int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, JS_GRPC_KEEPALIVE_TIME_MS),
        int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, JS_GRPC_KEEPALIVE_TIMEOUT_MS),
        int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                JS_GRPC_MIN_RECV_PING_INTERVAL_MS),
        int_arg(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2),
        int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                k8s ? JS_K8S_MAX_STREAMS : JS_GRPC_MAX_CONCURRENT_STREAMS),
        int_arg(GRPC_ARG_MAX_METADATA_SIZE, JS_GRPC_MAX_METADATA_BYTES),
    };
    grpc_channel_args chargs = {sizeof(args) / sizeof(args[0]), args};
    srv->server = grpc_server_create(&chargs, NULL);
    if (k8s) {
        for (int m = 0; m < K8S_COUNT; m++)
            srv->method_k8s[m] =
                grpc_server_register_method(srv->server, js_rpc_k8s_paths[m], NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    } else {
        srv->method_sign = grpc_server_register_method(
            srv->server, METHOD_SIGN, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        srv->method_jwks = grpc_server_register_method(
            srv->server, METHOD_JWKS, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        for (int m = 0; m < ADMIN_COUNT; m++)
            srv->method_admin[m] =
                grpc_server_register_method(srv->server, js_rpc_admin_paths[m], NULL,
                                            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        srv->method_introspect = grpc_server_register_method(
            srv->server, METHOD_INTROSPECT, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    for (int i = 0; i < srv->nworkers; i++) {
        srv->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(srv->server, srv->workers[i].cq, NULL);
    }
    srv->shutdown_cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->shutdown_cq, NULL);

    if (k8s) {
        /* No port: the Unix socket, accepted on by rpc_peers.c once started. */
        st = rpc_peers_new(srv, err);
        if (st != JS_OK)
            goto fail;
        *out = srv;
        return JS_OK;
    }
    st = js_tls_server_credentials(cfg, &creds, err);
    if (st != JS_OK)
        goto fail;
    const char *listen = deps->listen != NULL ? deps->listen : cfg->listen;
    srv->port = grpc_server_add_http2_port(srv->server, listen, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        st = js_err_set(err, JS_ECONFIG, JS_R_LISTEN_BIND, "cannot listen on %s", listen);
        goto fail;
    }
    *out = srv;
    return JS_OK;
fail:
    js_server_free(srv);
    return st;
}

js_status js_server_new(const js_server_deps *deps, js_server **out, js_err *err)
{
    return server_new(deps, false, out, err);
}

js_status js_server_new_k8s(const js_server_deps *deps, js_server **out, js_err *err)
{
    return server_new(deps, true, out, err);
}

int js_server_port(const js_server *srv)
{
    return srv->port;
}

int js_server_workers(const js_server *srv)
{
    return srv->nworkers;
}

js_status js_server_start(js_server *srv, js_err *err)
{
    grpc_server_start(srv->server);
    srv->grpc_started = 1;
    for (int i = 0; i < srv->nworkers; i++) {
        worker *w = &srv->workers[i];
        if (srv->k8s) {
            for (int m = 0; m < K8S_COUNT; m++)
                for (int k = 0; k < PENDING_K8S; k++)
                    JS_ENSURE(call_arm_method(w, CALL_K8S, ADMIN_COUNT, (k8s_method)m) == 0, err,
                              JS_EINTERNAL, JS_R_SERVER_ARM, "cannot request calls");
            JS_ENSURE(call_arm(w, CALL_UNKNOWN) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
            JS_ENSURE(pthread_create(&w->thread, NULL, worker_main, w) == 0, err, JS_EINTERNAL,
                      JS_R_SERVER_THREAD, "cannot start worker thread %d", i);
            w->started = 1;
            continue;
        }
        for (int k = 0; k < PENDING_SIGN; k++)
            JS_ENSURE(call_arm(w, CALL_SIGN) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        for (int k = 0; k < PENDING_JWKS; k++)
            JS_ENSURE(call_arm(w, CALL_JWKS) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        for (int m = 0; m < ADMIN_COUNT; m++)
            JS_ENSURE(call_arm_method(w, CALL_ADMIN, (admin_method)m, K8S_COUNT) == 0, err,
                      JS_EINTERNAL, JS_R_SERVER_ARM, "cannot request calls");
        for (int k = 0; k < PENDING_STATUS; k++)
            JS_ENSURE(call_arm(w, CALL_STATUS) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        for (int k = 0; k < PENDING_UNKNOWN; k++)
            JS_ENSURE(call_arm(w, CALL_UNKNOWN) == 0, err, JS_EINTERNAL, JS_R_SERVER_ARM,
                      "cannot request calls");
        JS_ENSURE(pthread_create(&w->thread, NULL, worker_main, w) == 0, err, JS_EINTERNAL,
                  JS_R_SERVER_THREAD, "cannot start worker thread %d", i);
        w->started = 1;
    }
    if (srv->k8s)
        JS_GUARD(rpc_peers_start(srv->peers, err));
    return JS_OK;
}

void js_server_drain_begin(js_server *srv)
{
    if (srv == NULL || srv->server == NULL || atomic_load(&srv->shutting_down))
        return;
    atomic_store(&srv->shutting_down, true);
    /* The ExternalJWTSigner's socket: no new connection from here on. */
    rpc_peers_stop(srv->peers);
    /* Stop accepting; GOAWAY to every connection (clients move to a new
     * connection without failing the calls they had not yet sent); the tag
     * arrives once every in-flight call is done. */
    grpc_server_shutdown_and_notify(srv->server, srv->shutdown_cq, srv);
}

void rpc_audit_wait_begin(js_server *srv)
{
    atomic_fetch_add(&srv->awaiting_audit, 1);
}

void rpc_audit_wait_end(js_server *srv)
{
    /* Under the lock: once shutdown (or a drain poll) sees zero, the last
     * caller has let go of srv. */
    pthread_mutex_lock(&srv->audit_mu);
    if (atomic_fetch_sub(&srv->awaiting_audit, 1) == 1)
        pthread_cond_broadcast(&srv->audit_cv);
    pthread_mutex_unlock(&srv->audit_mu);
}

/* No SignJwt handler is running or waiting for its audit record any more. */
static bool audit_waits_done(js_server *srv)
{
    pthread_mutex_lock(&srv->audit_mu);
    bool done = atomic_load(&srv->awaiting_audit) == 0;
    pthread_mutex_unlock(&srv->audit_mu);
    return done;
}

/* Once the shutdown tag has come and every allowed call has its reply: the
 * workers drain their queues and are joined, then the server is destroyed.
 * In that order: a worker reads srv->server to re-arm until it is joined
 * (its shutting_down check may precede the drain), and grpc_server_destroy
 * wants every tag of grpc_server_request_*call received first (grpc/grpc.h;
 * the shutdown has already failed the requests still pending). */
static void drain_finish(js_server *srv)
{
    for (int i = 0; i < srv->nworkers; i++)
        if (srv->workers[i].cq != NULL)
            grpc_completion_queue_shutdown(srv->workers[i].cq);
    for (int i = 0; i < srv->nworkers; i++) {
        if (srv->workers[i].started)
            pthread_join(srv->workers[i].thread, NULL);
        srv->workers[i].started = 0;
    }
    grpc_server_destroy(srv->server);
    srv->server = NULL;
}

bool js_server_drain_poll(js_server *srv, bool force)
{
    if (srv == NULL || srv->server == NULL)
        return true;
    if (!srv->drained) {
        if (force && !srv->cancelled) {
            js_log_event("warn", "drain_grace_expired", "cancelling calls still in flight");
            grpc_server_cancel_all_calls(srv->server);
            srv->cancelled = 1;
        }
        grpc_event ev =
            grpc_completion_queue_next(srv->shutdown_cq, gpr_time_0(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            return false;
        srv->drained = 1;
    }
    /* Tokens still waiting for their audit records reply from the audit
     * notifier through the worker queues: those close only afterwards. */
    if (!audit_waits_done(srv))
        return false;
    drain_finish(srv);
    return true;
}

void js_server_shutdown(js_server *srv, int grace_ms)
{
    if (srv == NULL || srv->server == NULL)
        return;
    js_server_drain_begin(srv);
    if (!srv->drained) {
        gpr_timespec grace =
            gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(grace_ms, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(srv->shutdown_cq, grace, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            js_log_event("warn", "shutdown_grace_expired", "cancelling calls still in flight");
            grpc_server_cancel_all_calls(srv->server);
            grpc_completion_queue_next(srv->shutdown_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        }
        srv->drained = 1;
    }
    /* After a cancelled shutdown the tag can come while tokens still await
     * their audit records; their replies (success or UNAVAILABLE) need the
     * worker queues, so those close only once every one has gone out. The
     * audit log answers every record, durable or failed. */
    pthread_mutex_lock(&srv->audit_mu);
    while (atomic_load(&srv->awaiting_audit) > 0) {
        struct timespec until = js_mono_deadline(AUDIT_WAIT_REPORT_MS);
        if (pthread_cond_timedwait(&srv->audit_cv, &srv->audit_mu, &until) == ETIMEDOUT &&
            atomic_load(&srv->awaiting_audit) > 0)
            js_log_event(
                "warn", "shutdown_waiting_for_audit",
                "SignJwt calls are still being decided or waiting for their audit records");
    }
    pthread_mutex_unlock(&srv->audit_mu);
    drain_finish(srv);
}

static void drain_and_destroy(grpc_completion_queue *cq)
{
    if (cq == NULL)
        return;
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        /* Leftover requested calls of workers that never ran. */
        if (ev.type == GRPC_OP_COMPLETE && ev.tag != NULL) {
            JS_TAG_TAKEN(ev.tag);
            rpc_call_free(ev.tag);
        }
    }
    grpc_completion_queue_destroy(cq);
}

void js_server_free(js_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->server != NULL) {
        if (srv->grpc_started) {
            js_server_shutdown(srv, 0);
        } else {
            /* Never started: gRPC allows destroy without shutdown. */
            grpc_server_destroy(srv->server);
            srv->server = NULL;
        }
    }
    for (int i = 0; i < srv->nworkers && srv->workers != NULL; i++) {
        drain_and_destroy(srv->workers[i].cq);
        js_hsm_session_free(srv->workers[i].session);
        js_policy_cache_clear(&srv->workers[i].policy);
        js_snapshot_cache_clear(&srv->workers[i].frozen);
        js_snapshot_cache_clear(&srv->workers[i].keys);
    }
    drain_and_destroy(srv->shutdown_cq);
    rpc_peers_free(srv->peers);
    js_denials_free(srv->introspect_rate);
    free(srv->workers);
    if (srv->audit_sync_ok) {
        pthread_cond_destroy(&srv->audit_cv);
        pthread_mutex_destroy(&srv->audit_mu);
    }
    free(srv);
}
