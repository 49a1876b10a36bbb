/*
 * endpoints.c - what jwt-signerd serves over HTTP (signer/http): the JWKS of
 * the keyring in force, the OIDC discovery document (the issuer of the policy
 * in force, the JWKS URL and the algorithms the JWKS publishes), /healthz
 * (HSM, audit log, gRPC listener, audit disk), /metrics, and POST
 * /introspect (RFC 7662) for the policy's introspectors when the
 * configuration has an introspection section. The handlers run on
 * libmicrohttpd's threads and only read snapshots, atomics, the health
 * probe's cache and the issued-token index.
 *
 * Introspection over HTTP is decided, logged, audited and counted like the
 * gRPC Status/Introspect call (signer/rpc/rpc_status.c): refusals (no
 * client identity, not an introspector, over the introspector's rate, a
 * malformed request) are audited and logged within the caller's denial
 * budget and folded beyond it; an answer is allowed whatever it says, its
 * reason goes only to the log line (active answers within the quiet
 * budget), the metrics, and for unknown_jti / hash_mismatch (forgery
 * evidence) an audit record of its own.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "clock.h"
#include "daemon.h"
#include "discovery.h"
#include "introspect.h"
#include "status.h"
#include "logline.h"

/* The label of POST /introspect in log lines and metrics. */
#define INTROSPECT_METHOD "POST /introspect"

/* What the HTTP handlers get as ctx: the daemon, and the introspection
 * rate budget the HTTP listener owns (freed by http_release at js_http_stop). */
typedef struct http_ctx {
    daemon_state *d;
    js_denials *introspect_rate; /* NULL when introspection is off */
} http_ctx;

static char *http_jwks(void *ctx)
{
    daemon_state *d = ((http_ctx *)ctx)->d;
    js_snapshot *snap = js_snapshot_store_acquire(d->keys);
    const js_keyring *kr = js_snapshot_value(snap);
    char *out = kr != NULL ? strdup(js_keyring_jwks(kr)) : NULL;
    js_snapshot_release(snap);
    return out;
}

/*
 * Built per request from the current policy and keyring snapshots, like the
 * JWKS, so a reload (SIGHUP, ReloadPolicy) or a rotation shows at once, and
 * the ETag (of the body) changes with it: the algorithms are those of the
 * keys with a version in the JWKS. NULL = 503.
 */
static char *http_discovery(void *ctx)
{
    daemon_state *d = ((http_ctx *)ctx)->d;
    js_policy_snapshot *ps = js_policy_store_acquire(d->policies);
    js_snapshot *ks = js_snapshot_store_acquire(d->keys);
    const js_policy *p = ps != NULL ? js_policy_snapshot_get(ps) : NULL;
    const js_keyring *kr = js_snapshot_value(ks);
    const char *issuer = p != NULL ? js_policy_issuer(p) : NULL;
    size_t nkeys = kr != NULL ? js_keyring_count(kr) : 0;
    js_alg *algs = calloc(nkeys > 0 ? nkeys : 1, sizeof(*algs));
    size_t nalgs = 0;
    for (size_t i = 0; algs != NULL && i < nkeys; i++) {
        const js_key *k = js_keyring_at(kr, i);
        if (js_key_published(k) > 0)
            algs[nalgs++] = js_key_alg(k);
    }
    char *out = NULL;
    js_err err;
    js_err_clear(&err);
    if (issuer != NULL && kr != NULL && algs != NULL &&
        js_discovery_build(issuer, d->cfg->http_jwks_uri, algs, nalgs, &out, &err) != JS_OK)
        out = NULL;
    free(algs);
    js_snapshot_release(ks);
    js_policy_snapshot_release(ps);
    return out;
}

static int http_health(void *ctx, char **body)
{
    daemon_state *d = ((http_ctx *)ctx)->d;
    char hsm_why[JS_MSG_MAX];
    bool hsm = hsm_healthy(d, hsm_why, sizeof(hsm_why));
    js_err aerr;
    js_err_clear(&aerr);
    bool audit = js_audit_healthy(d->audit, &aerr);
    bool grpc = !atomic_load(&d->listener_down);
    bool ok = hsm && audit && grpc;
    /* Below the disk watermark the signer still works: 200, "degraded". */
    uint64_t free_bytes = 0;
    bool low = js_audit_disk_low(d->audit, &free_bytes);
    char disk[96];
    if (low)
        snprintf(disk, sizeof(disk), "low: %" PRIu64 " bytes free", free_bytes);
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s}", "status", !ok ? "unhealthy" : (low ? "degraded" : "ok"), "hsm",
        hsm ? "ok" : hsm_why, "audit", audit ? "ok" : aerr.msg, "grpc",
        grpc ? "ok" : "listener lost; re-creating", "audit_disk", low ? disk : "ok");
    *body = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return ok;
}

static char *http_metrics(void *ctx)
{
    daemon_state *d = ((http_ctx *)ctx)->d;
    js_metrics_gauges g;
    memset(&g, 0, sizeof(g));
    g.incident_mode = js_control_incident(d->control);
    js_snapshot *fs = js_snapshot_store_acquire(d->frozen);
    g.frozen_callers = js_frozen_count(js_snapshot_value(fs));
    js_snapshot_release(fs);
    size_t counts[JS_KS_STATE_COUNT] = {0};
    js_control_key_counts(d->control, counts);
    for (size_t i = 0; i < JS_METRICS_KEY_STATES; i++)
        g.key_versions[i] = counts[JS_KS_NEXT + i];
    g.audit_healthy = js_audit_healthy(d->audit, NULL);
    g.listener_recreations = atomic_load(&d->listener_recreations);
    js_hsm_health hh;
    js_hsm_health_get(d->hsm, &hh);
    g.hsm_recoveries = hh.recoveries;
    g.hsm_session_failures = hh.failures;
    uint64_t free_bytes = 0;
    g.audit_disk_low = js_audit_disk_low(d->audit, &free_bytes);
    g.audit_disk_free_bytes = free_bytes == UINT64_MAX ? 0 : free_bytes;
    js_denials_stats ds;
    js_denials_stats_get(d->denials, &ds);
    g.denials_folded = ds.folded;
    g.audit_records_lost = js_audit_records_lost(d->audit);
    g.audit_last_checkpoint_ms = js_audit_last_checkpoint_ms(d->audit);
    g.open_fds = js_fd_open_count();
    g.fd_limit = d->fd_limit;
    char why[JS_MSG_MAX];
    g.hsm_healthy = hsm_healthy(d, why, sizeof(why));
    return js_metrics_render(d->metrics, &g);
}

/* ---- POST /introspect ---------------------------------------------------------------- */

/* The RFC 6749 §5.2 / RFC 7662 §2.3 error body of a refusal, and its status. */
static unsigned refusal_status(const js_decision *dec, const char **error)
{
    switch (dec->reason) {
    case JS_R_IDENTITY_NONE:
    case JS_R_IDENTITY_AMBIGUOUS:
    case JS_R_IDENTITY_INVALID:
        *error = "invalid_client"; /* the client did not authenticate (RFC 6749 §5.2) */
        return 401;
    case JS_R_INTROSPECT_NOT_ALLOWED:
        *error = "access_denied";
        return 403;
    case JS_R_HTTP_FORM:
        *error = "invalid_request";
        return 400;
    case JS_R_HTTP_BODY_TOO_LARGE:
        *error = "invalid_request";
        return 413;
    case JS_R_INTROSPECT_RATE_LIMITED:
        *error = "temporarily_unavailable";
        return 429;
    case JS_R_INTROSPECT_DISABLED:
        *error = "temporarily_unavailable";
        return 503;
    default:
        *error = "server_error";
        return 500;
    }
}

/* The HTTP status of a decision, as its log line shows it. */
static const char *http_status_of(const js_decision *dec, void *ctx)
{
    char *buf = ctx; /* 8 bytes */
    const char *error = NULL;
    unsigned status = dec->kind == JS_DECISION_ALLOW ? 200 : refusal_status(dec, &error);
    snprintf(buf, 8, "%u", status);
    return buf;
}

/* The token the HTTP layer already parsed from the form (bounded there). */
static js_status http_token(void *ctx, const char **token, size_t *len, js_err *err)
{
    const js_http_introspect_call *call = ctx;
    JS_ENSURE(call->token != NULL, err, JS_EINVAL, JS_R_HTTP_FORM, "no token parameter");
    *token = call->token;
    *len = call->token_len;
    return JS_OK;
}

/* POST /introspect: the same call as gRPC Status/Introspect (status.h);
 * here only the reply differs: the RFC 7662 JSON, or the RFC 6749 §5.2
 * error body with its HTTP status. */
static unsigned http_introspect(void *ctx, const js_http_introspect_call *call, char **json)
{
    int64_t t0_us = js_mono_us();
    http_ctx *hc = ctx;
    daemon_state *d = hc->d;
    *json = NULL;
    js_policy_snapshot *ps = js_policy_store_acquire(d->policies);
    js_snapshot *ks = js_snapshot_store_acquire(d->keys);
    char status_text[8];
    js_status_call sc = {
        .method = INTROSPECT_METHOD,
        .identity = call->identity != NULL ? call->identity : "",
        .refusal = call->problem,
        .peer = call->peer,
        .policy = js_policy_snapshot_get(ps),
        .keys = js_snapshot_value(ks),
        .token = http_token,
        .token_ctx = (void *)call,
        .t0_us = t0_us,
        .status_name = http_status_of,
        .status_ctx = status_text,
    };
    js_status_deps deps = {
        .audit = d->audit,
        .metrics = d->metrics,
        .denials = d->denials,
        .quiet = d->quiet,
        .rate = hc->introspect_rate,
        .index = d->index,
        .leeway = d->cfg->introspection_leeway,
    };
    js_decision dec;
    js_introspection res;
    js_status_introspect(&deps, &sc, &dec, &res, json);
    js_introspection_clear(&res);
    js_snapshot_release(ks);
    js_policy_snapshot_release(ps);
    if (dec.kind == JS_DECISION_ALLOW)
        return 200;
    const char *error = NULL;
    unsigned status = refusal_status(&dec, &error);
    json_t *o = json_pack("{s:s}", "error", error);
    *json = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return status;
}

static void http_release(void *ctx)
{
    http_ctx *hc = ctx;
    if (hc == NULL)
        return;
    js_denials_free(hc->introspect_rate);
    free(hc);
}

js_status start_http(daemon_state *d, js_err *err)
{
    if (d->cfg->http_listen == NULL)
        return JS_OK;
    JS_GUARD(js_hsm_session_open(d->hsm, &d->health_session, err));
    JS_GUARD(health_probe_start(d, err));
    js_http_options o = {
        .listen = d->cfg->http_listen,
        .tls_cert_file = d->cfg->http_tls_cert,
        .tls_key_file = d->cfg->http_tls_key,
        .tls_client_ca_file = d->cfg->http_client_ca,
        .jwks_max_age = (unsigned)d->cfg->http_jwks_max_age,
        .max_connections = d->http_max_connections,
    };
    http_ctx *hc = calloc(1, sizeof(*hc));
    JS_ENSURE_ALLOC(hc, err);
    hc->d = d;
    if (d->index != NULL) {
        /* Its own budget, the same numbers as the gRPC Status service's. */
        js_denials_options rate = {.rate = JS_INTROSPECT_RATE,
                                   .burst = JS_INTROSPECT_BURST,
                                   .global_rate = JS_INTROSPECT_GLOBAL_RATE,
                                   .global_burst = JS_INTROSPECT_GLOBAL_BURST};
        js_status st = js_denials_new(&rate, &hc->introspect_rate, err);
        if (st != JS_OK) {
            http_release(hc);
            return st;
        }
    }
    js_http_handlers h = {
        .jwks = http_jwks,
        .discovery = http_discovery,
        .health = http_health,
        .metrics = http_metrics,
        .introspect = d->index != NULL ? http_introspect : NULL,
        .release = http_release,
        .ctx = hc,
    };
    js_status st = js_http_start(&o, &h, &d->http, err);
    if (st != JS_OK) {
        http_release(hc);
        return st;
    }
    json_t *lo = json_pack("{s:s, s:s, s:i}", "event", "http_listening", "address",
                           d->cfg->http_listen, "port", js_http_port(d->http));
    js_log_emit("info", lo);
    return JS_OK;
}
