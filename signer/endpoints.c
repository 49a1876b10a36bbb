/*
 * endpoints.c - what jwt-signerd serves over HTTP (signer/http): the JWKS of
 * the keyring in force, the OIDC discovery document (the issuer of the policy
 * in force, the JWKS URL and the algorithms the JWKS publishes), /healthz
 * (HSM, audit log, gRPC listener, audit disk) and /metrics. The handlers run
 * on libmicrohttpd's threads and only read snapshots, atomics and the health
 * probe's cache.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "discovery.h"
#include "logline.h"

static char *http_jwks(void *ctx)
{
    daemon_state *d = ctx;
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
    daemon_state *d = ctx;
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
    daemon_state *d = ctx;
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
    daemon_state *d = ctx;
    js_metrics_gauges g;
    memset(&g, 0, sizeof(g));
    g.incident_mode = js_control_incident(d->control);
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
    g.open_fds = js_fd_open_count();
    g.fd_limit = d->fd_limit;
    char why[JS_MSG_MAX];
    g.hsm_healthy = hsm_healthy(d, why, sizeof(why));
    return js_metrics_render(d->metrics, &g);
}

js_status start_http(daemon_state *d, js_err *err)
{
    if (d->cfg->http_listen == NULL)
        return JS_OK;
    JS_GUARD(js_hsm_session_open(d->hsm, &d->health_session, err));
    js_http_options o = {
        .listen = d->cfg->http_listen,
        .tls_cert_file = d->cfg->http_tls_cert,
        .tls_key_file = d->cfg->http_tls_key,
        .tls_client_ca_file = d->cfg->http_client_ca,
        .jwks_max_age = (unsigned)d->cfg->http_jwks_max_age,
        .max_connections = d->http_max_connections,
    };
    js_http_handlers h = {.jwks = http_jwks,
                          .discovery = http_discovery,
                          .health = http_health,
                          .metrics = http_metrics,
                          .ctx = d};
    JS_GUARD(js_http_start(&o, &h, &d->http, err));
    json_t *lo = json_pack("{s:s, s:s, s:i}", "event", "http_listening", "address",
                           d->cfg->http_listen, "port", js_http_port(d->http));
    js_log_emit("info", lo);
    return JS_OK;
}
