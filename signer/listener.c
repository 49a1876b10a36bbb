/*
 * listener.c - jwt-signerd's gRPC listener under descriptor pressure.
 *
 * The fd budget (fdreserve.h). The HTTP server may hold a quarter of the fd
 * limit (at most its default, http.h); the HSM module and the audit log need
 * FD_CORE more (SoftHSM opens its object files on every operation, C_Initialize
 * its whole token directory), and the ExternalJWTSigner's capped
 * connections their room (JS_K8S_MAX_CONNECTIONS, rpc_peers.c). gRPC 1.51
 * cannot cap its connections, so a
 * watcher thread does (fd_watch_tick): when the descriptors still free come
 * within the HTTP server's unused share plus FD_MARGIN, it shuts gRPC's
 * listener down and hands back the FD_CORE descriptors held in reserve; the
 * main loop re-creates the listener once the flood's descriptors are gone
 * (listener_check), and keeps the replaced server serving the connections it
 * had. If gRPC hits EMFILE anyway (its listener then dies by itself), the same
 * happens from its log callback (listener_grpc_log), which also turns gRPC's
 * own diagnostics into our JSON lines.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "daemon.h"
#include "logline.h"
#include "ticker.h"

#define FD_CORE      32
#define FD_LIMIT_MIN 256
/* The ExternalJWTSigner's listening socket and one being refused. */
#define FD_K8S_EXTRA 2
/* Descriptors gRPC may still take between two looks of the fd watcher. */
#define FD_MARGIN 16
/* How often the fd watcher looks (ticker.h counts in ms). */
#define FD_WATCH_MS 1
/* gRPC log lines written per second, at most (the rest are counted). */
#define GRPC_LOG_PER_SECOND 20
/* A lost gRPC listener is re-created at most this often. */
#define LISTENER_RETRY_MS 1000
/* Calls on a replaced listener's connections get this long to finish once
 * it is drained. */
#define LISTENER_DRAIN_MS 10000

/* ---- gRPC's log callback ---------------------------------------------------------------- */

/* Writes the count of gRPC log lines folded in earlier seconds, if any. */
void listener_grpc_log_flush(listener_flags *lf, long long second)
{
    long long seen = atomic_load(&lf->log_second);
    if (seen == second || !atomic_compare_exchange_strong(&lf->log_second, &seen, second))
        return;
    atomic_store(&lf->log_lines, 0);
    unsigned long long folded = atomic_exchange(&lf->log_folded, 0);
    if (folded > 0) {
        json_t *o = json_pack("{s:s, s:I, s:s}", "event", "grpc_log_folded", "count",
                              (json_int_t)folded, "message",
                              "gRPC log lines over the per-second budget were counted, not "
                              "written (e.g. failed TLS handshakes)");
        js_log_emit("warn", o);
    }
}

/* gRPC's own diagnostics (e.g. a client's failed TLS handshake) become JSON
 * lines like ours, so the stderr stream stays machine-readable. */
void listener_grpc_log(listener_flags *lf, const gpr_log_func_args *args)
{
    /* Only running out of descriptors or kernel memory kills the listener
     * this way; "Invalid argument" is a listener we shut down ourselves. */
    const char *m = args->message;
    if (m != NULL && strncmp(m, "Failed accept4: ", 16) == 0 &&
        (strstr(m, "Too many open files") != NULL || strstr(m, "No buffer space") != NULL ||
         strstr(m, "Cannot allocate memory") != NULL) &&
        !atomic_exchange(&lf->lost, true))
        js_fdreserve_release(atomic_load(&lf->reserve));
    listener_grpc_log_flush(lf, (long long)(js_mono_ms() / 1000));
    if (atomic_fetch_add(&lf->log_lines, 1) >= GRPC_LOG_PER_SECOND) {
        atomic_fetch_add(&lf->log_folded, 1);
        return;
    }
    const char *level = args->severity == GPR_LOG_SEVERITY_ERROR ? "warn" : "debug";
    char where[256];
    snprintf(where, sizeof(where), "%s:%d", args->file != NULL ? args->file : "?", args->line);
    json_t *o = json_pack("{s:s, s:s, s:s}", "event", "grpc", "message",
                          args->message != NULL ? args->message : "", "source", where);
    js_log_emit(level, o);
}

/* ---- the fd budget and its watcher -------------------------------------------------- */

/* Raises the fd limit to the hard limit and holds the reserve. */
js_status fd_setup(daemon_state *d, js_err *err)
{
    unsigned long soft = 0, hard = 0;
    JS_GUARD(js_fd_raise_limit(&soft, &hard, err));
    d->fd_limit = soft;
    JS_ENSURE(soft >= FD_LIMIT_MIN, err, JS_ECONFIG, JS_R_FD_LIMIT,
              "the file descriptor limit is %lu; jwt-signerd needs at least %d (raise the hard "
              "limit: ulimit -Hn, systemd LimitNOFILE=)",
              soft, FD_LIMIT_MIN);
    /* The HTTP server's share: a quarter of the limit, at most its default
     * (http.h), so slow HTTP clients alone can never exhaust descriptors. */
    unsigned long http = soft / 4;
    d->http_max_connections =
        http < JS_HTTP_CONNECTION_LIMIT ? (unsigned)http : JS_HTTP_CONNECTION_LIMIT;
    size_t reserve = FD_CORE;
    JS_GUARD(js_fdreserve_new(reserve, &d->fd_reserve, err));
    atomic_store(&d->lf->reserve, d->fd_reserve);
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "event", "fd_limit", "soft", (json_int_t)soft,
                  "hard", (json_int_t)hard, "reserved", (json_int_t)reserve, "http_connections",
                  (json_int_t)d->http_max_connections, "open", (json_int_t)js_fd_open_count());
    js_log_emit("info", o);
    return JS_OK;
}

/*
 * The fd watcher: gRPC 1.51 accepts connections until descriptors run out
 * and has no connection limit, so the signer keeps one here. Every
 * FD_WATCH_MS it reads the lowest free descriptor; when the descriptors left
 * come within the HTTP server's unused share plus FD_MARGIN, it shuts the
 * gRPC listener down (connections already accepted keep working) and hands
 * the reserve back, so the HTTP server and the HSM always have theirs. The
 * main loop re-creates the listener (listener_check).
 */
static void fd_watch_tick(void *arg)
{
    daemon_state *d = arg;
    if (atomic_load(&d->lf->lost))
        return;
    js_http_stats hs;
    js_http_get_stats(d->http, &hs);
    unsigned long http_room = d->http != NULL && d->http_max_connections > hs.open
                                  ? d->http_max_connections - hs.open
                                  : 0;
    /* The ExternalJWTSigner's connections are capped and kept room
     * for whole (kube-apiserver must always get in). */
    unsigned long k8s_room =
        d->cfg->externaljwt_socket != NULL ? JS_K8S_MAX_CONNECTIONS + FD_K8S_EXTRA : 0;
    long lowest = js_fd_lowest_free();
    if (lowest < 0 || (unsigned long)lowest + http_room + k8s_room + FD_MARGIN < d->fd_limit)
        return;
    if (atomic_exchange(&d->lf->lost, true))
        return;
    int closed = js_fd_shutdown_listeners(atomic_load(&d->lf->port), js_http_listen_fd(d->http));
    js_fdreserve_release(d->fd_reserve);
    atomic_fetch_add(&d->listener_sheds, 1);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:i}", "event", "grpc_listener_shed", "message",
                          "descriptors nearly exhausted: gRPC listener shut down, reserve "
                          "handed back to the HSM and audit log",
                          "lowest_free_fd", (json_int_t)lowest, "http_room", (json_int_t)http_room,
                          "sockets_shut", closed);
    js_log_emit("warn", o);
}

js_status fd_watch_start(daemon_state *d, js_err *err)
{
    atomic_store(&d->lf->port, js_server_port(d->srv));
    d->fd_watch = js_ticker_new(FD_WATCH_MS, fd_watch_tick, d);
    JS_ENSURE(d->fd_watch != NULL, err, JS_EINTERNAL, JS_R_FD_WATCH,
              "cannot start the fd watcher thread");
    return JS_OK;
}

void fd_watch_stop(daemon_state *d)
{
    js_ticker_free(d->fd_watch);
    d->fd_watch = NULL;
}

/* ---- the gRPC server and its re-creation ---------------------------------------------- */

/* What both gRPC servers borrow from the daemon. */
static js_server_deps server_deps(daemon_state *d, const char *listen)
{
    return (js_server_deps){
        .cfg = d->cfg,
        .svc = d->svc,
        .policies = d->policies,
        .frozen = d->frozen,
        .keys = d->keys,
        .control = d->control,
        .audit = d->audit,
        .hsm = d->hsm,
        .metrics = d->metrics,
        .listen = listen,
        .denials = d->denials,
        .admin_rate = d->admin_rate,
        .quiet = d->quiet,
        .index = d->index,
    };
}

/* Kubernetes' ExternalJWTSigner on its Unix socket, when configured. Not
 * re-created like the mTLS listener: its accept loop is the signer's own
 * (rpc_peers.c) and waits out a lack of descriptors. */
js_status start_k8s(daemon_state *d, js_err *err)
{
    if (d->cfg->externaljwt_socket == NULL)
        return JS_OK;
    js_server_deps sdeps = server_deps(d, NULL);
    js_status st = js_server_new_k8s(&sdeps, &d->k8s, err);
    if (st == JS_OK)
        st = js_server_start(d->k8s, err);
    if (st != JS_OK) {
        js_server_free(d->k8s);
        d->k8s = NULL;
        return st;
    }
    json_t *o = json_pack("{s:s, s:s, s:i}", "event", "externaljwt_listening", "socket",
                          d->cfg->externaljwt_socket, "workers", js_server_workers(d->k8s));
    js_log_emit("info", o);
    return JS_OK;
}

js_status start_grpc(daemon_state *d, const char *listen, js_err *err)
{
    js_server_deps sdeps = server_deps(d, listen);
    js_status st = js_server_new(&sdeps, &d->srv, err);
    if (st == JS_OK)
        st = js_server_start(d->srv, err);
    if (st != JS_OK) {
        js_server_free(d->srv);
        d->srv = NULL;
        return st;
    }
    if (listen == NULL) {
        /* A re-created listener must come back on the port clients know,
         * even when the configuration asked for port 0. */
        const char *colon = strrchr(d->cfg->listen, ':');
        size_t hostlen = colon != NULL ? (size_t)(colon - d->cfg->listen) : strlen(d->cfg->listen);
        snprintf(d->listen_again, sizeof(d->listen_again), "%.*s:%d", (int)hostlen, d->cfg->listen,
                 js_server_port(d->srv));
    }
    return JS_OK;
}

/* Drains and frees the replaced servers whose time has come. */
static void retired_check(daemon_state *d, int64_t now_ms)
{
    for (size_t i = 0; i < RETIRED_SERVERS; i++) {
        if (d->retired[i].srv == NULL || now_ms < d->retired[i].drain_at_ms)
            continue;
        if (!d->retired[i].draining) {
            js_server_drain_begin(d->retired[i].srv);
            d->retired[i].draining = true;
        }
        bool force = now_ms >= d->retired[i].drain_at_ms + LISTENER_DRAIN_MS;
        if (!js_server_drain_poll(d->retired[i].srv, force))
            continue;
        js_server_free(d->retired[i].srv);
        d->retired[i].srv = NULL;
        d->retired[i].draining = false;
    }
}

/* Keeps srv serving its existing connections until every one of them must
 * have ended by itself (max connection age plus its grace, server.h). */
static void retire_server(daemon_state *d, js_server *srv, int64_t now_ms)
{
    size_t slot = 0;
    for (size_t i = 0; i < RETIRED_SERVERS; i++) {
        if (d->retired[i].srv == NULL) {
            slot = i;
            break;
        }
        if (d->retired[i].drain_at_ms < d->retired[slot].drain_at_ms)
            slot = i;
    }
    if (d->retired[slot].srv != NULL) {
        /* All slots taken (a repeated flood): the oldest goes now, its calls
         * cancelled (waiting out a grace here would stall the main loop). */
        js_server_shutdown(d->retired[slot].srv, 0);
        js_server_free(d->retired[slot].srv);
    }
    d->retired[slot].srv = srv;
    d->retired[slot].draining = false;
    d->retired[slot].drain_at_ms =
        now_ms + JS_GRPC_MAX_CONNECTION_AGE_MS + JS_GRPC_MAX_CONNECTION_AGE_GRACE_MS + 1000;
}

/*
 * The gRPC listener died (accept4 failed, see listener_flags). The connections
 * it accepted before are fine and are not cut: its listening sockets are shut
 * down (the kernel resets what was queued on them and routes new connections
 * only to the new listener), a new server listens on the same address, and
 * the old one keeps serving its connections until they end by themselves
 * (idle or age limits: clients then reconnect to the new listener without
 * failing a call); the flood's half-open connections time out of it
 * (handshake timeout). Retried every LISTENER_RETRY_MS until it works.
 */
void listener_check(daemon_state *d, int64_t now_ms)
{
    retired_check(d, now_ms);
    if (!atomic_load(&d->lf->lost)) {
        /* Take the fd reserve back once descriptors are plentiful again: at
         * least as many left free afterwards as the reserve holds, so taking
         * it back never starves the HSM or the audit log it protects. */
        size_t held = js_fdreserve_held(d->fd_reserve);
        size_t budget = js_fdreserve_budget(d->fd_reserve);
        long open = held < budget ? js_fd_open_count() : -1;
        if (open >= 0 && (unsigned long)open + 2 * (budget - held) + held <= d->fd_limit) {
            js_fdreserve_refill(d->fd_reserve);
            /* The watcher may have shed the listener meanwhile: hand it back. */
            if (atomic_load(&d->lf->lost))
                js_fdreserve_release(d->fd_reserve);
        }
        return;
    }
    if (now_ms < d->listener_retry_ms)
        return;
    const char *colon = strrchr(d->listen_again, ':');
    int port = colon != NULL ? (int)strtol(colon + 1, NULL, 10) : 0;
    if (d->listener_lost_ms == 0) {
        d->listener_lost_ms = now_ms;
        atomic_store(&d->listener_down, true);
        int closed = js_fd_shutdown_listeners(port, js_http_listen_fd(d->http));
        json_t *o = json_pack("{s:s, s:s, s:I, s:i}", "event", "grpc_listener_lost", "message",
                              "gRPC stopped accepting connections (descriptors nearly or fully "
                              "exhausted); re-creating the listener once they are free",
                              "open_fds", (json_int_t)js_fd_open_count(), "sockets_shut", closed);
        js_log_emit("error", o);
    }
    /* Listen again only once the flood's descriptors are gone: the reserve
     * back, the HTTP server's unused share and twice the margin still free. */
    long open = js_fd_open_count();
    js_http_stats hs;
    js_http_get_stats(d->http, &hs);
    unsigned long http_room = d->http != NULL && d->http_max_connections > hs.open
                                  ? d->http_max_connections - hs.open
                                  : 0;
    size_t budget = js_fdreserve_budget(d->fd_reserve);
    if (open < 0 || (unsigned long)open + budget + http_room + 2 * FD_MARGIN > d->fd_limit ||
        js_fdreserve_refill(d->fd_reserve) < budget) {
        js_fdreserve_release(d->fd_reserve);
        return;
    }
    js_server *old = d->srv;
    d->srv = NULL;
    js_err err;
    js_err_clear(&err);
    if (start_grpc(d, d->listen_again, &err) != JS_OK) {
        d->srv = old;
        d->listener_retry_ms = now_ms + LISTENER_RETRY_MS;
        js_fdreserve_release(d->fd_reserve);
        json_t *o = json_pack("{s:s, s:s, s:s}", "event", "grpc_listener_retry", "reason",
                              js_reason_name(err.reason), "message", err.msg);
        js_log_emit("warn", o);
        return;
    }
    retire_server(d, old, now_ms);
    int64_t down_ms = now_ms - d->listener_lost_ms;
    atomic_store(&d->lf->lost, false);
    atomic_store(&d->listener_down, false);
    atomic_fetch_add(&d->listener_recreations, 1);
    d->listener_lost_ms = 0;
    json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "event", "grpc_listener_recreated", "address",
                          d->listen_again, "down_ms", (json_int_t)down_ms, "open_fds",
                          (json_int_t)js_fd_open_count());
    js_log_emit("info", o);
    audit_lifecycle(
        d, "listener", "recreated", NULL,
        json_pack("{s:s, s:I}", "address", d->listen_again, "down_ms", (json_int_t)down_ms));
}

void retired_drain_all(daemon_state *d)
{
    for (size_t i = 0; i < RETIRED_SERVERS; i++) {
        if (d->retired[i].srv == NULL || d->retired[i].draining)
            continue;
        js_server_drain_begin(d->retired[i].srv);
        d->retired[i].draining = true;
    }
}

void retired_finish_all(daemon_state *d, int64_t deadline_ms)
{
    for (size_t i = 0; i < RETIRED_SERVERS; i++) {
        if (d->retired[i].srv == NULL)
            continue;
        /* Draining since retired_drain_all: what is left of the one grace. */
        int64_t left = deadline_ms - js_mono_ms();
        js_server_shutdown(d->retired[i].srv, left > 0 ? (int)left : 0);
        js_server_free(d->retired[i].srv);
        d->retired[i].srv = NULL;
        d->retired[i].draining = false;
    }
}
