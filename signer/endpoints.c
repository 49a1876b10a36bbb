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
#include "logline.h"

/* The label of POST /introspect in log lines and metrics, and the type of
 * its audit and folded records (as the gRPC method's). */
#define INTROSPECT_METHOD "POST /introspect"
#define INTROSPECT_TYPE   "introspect"
/* Calls a second per introspector over HTTP (its own budget, the same
 * numbers as the gRPC Status service's, JS_INTROSPECT_RATE / _BURST). */
#define HTTP_INTROSPECT_RATE         2000u
#define HTTP_INTROSPECT_BURST        4000u
#define HTTP_INTROSPECT_GLOBAL_RATE  20000u /* all introspectors together */
#define HTTP_INTROSPECT_GLOBAL_BURST 40000u

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

/* The audit record of a refused call or of a forgery-evidence answer:
 * queued, never waited for (nothing is released by it). */
static void introspect_audit(daemon_state *d, const js_http_introspect_call *call,
                             const char *identity, const js_decision *dec, js_reason why,
                             const char *kid, const char *jti)
{
    char *detail = NULL;
    if ((kid != NULL && kid[0] != '\0') || (jti != NULL && jti[0] != '\0')) {
        json_t *o = json_object();
        if (o != NULL) {
            if (jti != NULL && jti[0] != '\0')
                json_object_set_new(o, "jti", json_string(jti));
            if (kid != NULL && kid[0] != '\0')
                json_object_set_new(o, "kid", json_string(kid));
            detail = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
            json_decref(o);
        }
    }
    js_audit_event ev = {
        .type = INTROSPECT_TYPE,
        .caller = identity,
        .peer = call->peer,
        .decision = js_decision_name(dec->kind == JS_DECISION_ALLOW ? JS_DECISION_DENY : dec->kind),
        .reason = js_reason_name(why),
        .message = dec->kind == JS_DECISION_ALLOW ? NULL : dec->msg,
        .detail_json = detail,
    };
    if (js_audit_submit(d->audit, &ev, NULL, NULL, NULL) != JS_OK &&
        js_denials_admit(d->quiet, "audit_record_lost", js_mono_ms()))
        js_log_event("warn", "audit_record_lost",
                     "an introspection record could not be queued for the audit log");
    free(detail);
}

static js_reqlog introspect_log(const js_http_introspect_call *call, const char *identity,
                                const js_decision *dec, int64_t t0_us)
{
    js_reqlog log = {
        .method = INTROSPECT_METHOD,
        .caller = identity[0] != '\0' ? identity : NULL,
        .peer = call->peer,
        .decision = js_decision_name(dec->kind),
        .reason = js_reason_name(dec->reason),
        .message = dec->msg[0] != '\0' ? dec->msg : NULL,
        .latency_us = js_mono_us() - t0_us,
    };
    return log;
}

/* A refusal: audit record and log line in full within the caller's denial
 * budget (folded beyond it; rate-limited calls always fold), the metrics,
 * and the RFC 6749 §5.2 JSON error. */
static unsigned introspect_refuse(daemon_state *d, const js_http_introspect_call *call,
                                  const char *identity, const js_err *err, int64_t t0_us,
                                  char **json)
{
    js_decision dec;
    js_decision_init(&dec);
    js_decision_fail(&dec, err);
    const char *error = NULL;
    unsigned status = refusal_status(&dec, &error);
    char status_text[8];
    snprintf(status_text, sizeof(status_text), "%u", status);
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(identity, call->peer, key, sizeof(key));
    dec.folded = err->status == JS_ELIMIT || !js_denials_admit(d->denials, key, js_mono_ms());
    if (dec.folded) {
        char addr[JS_DENIALS_KEY_MAX + 1];
        js_denials_peer_addr(call->peer, addr, sizeof(addr));
        js_audit_note_folded(d->audit, INTROSPECT_TYPE, identity, addr, js_reason_name(dec.reason));
    } else {
        introspect_audit(d, call, identity, &dec, dec.reason, NULL, NULL);
        js_reqlog log = introspect_log(call, identity, &dec, t0_us);
        log.status = status_text; /* the HTTP status, where gRPC logs its own */
        js_reqlog_emit(&log);
    }
    js_metrics_call(d->metrics, INTROSPECT_METHOD, identity, &dec);
    json_t *o = json_pack("{s:s}", "error", error);
    *json = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return status;
}

static unsigned http_introspect(void *ctx, const js_http_introspect_call *call, char **json)
{
    int64_t t0_us = js_mono_us();
    http_ctx *hc = ctx;
    daemon_state *d = hc->d;
    *json = NULL;
    const char *identity = call->identity != NULL ? call->identity : "";
    js_err err;
    js_err_clear(&err);
    if (call->problem != NULL)
        return introspect_refuse(d, call, identity, call->problem, t0_us, json);
    if (d->index == NULL || hc->introspect_rate == NULL) {
        (void)js_err_set(&err, JS_ESTATE, JS_R_INTROSPECT_DISABLED,
                         "this signer's configuration has no introspection section");
        return introspect_refuse(d, call, identity, &err, t0_us, json);
    }
    js_policy_snapshot *ps = js_policy_store_acquire(d->policies);
    const js_policy *p = ps != NULL ? js_policy_snapshot_get(ps) : NULL;
    const char *const *auds = NULL;
    size_t naud = 0;
    unsigned status;
    if (p == NULL || !js_policy_introspector(p, identity, &auds, &naud)) {
        (void)js_err_set(&err, JS_EDENIED, JS_R_INTROSPECT_NOT_ALLOWED,
                         "caller '%s' is not an introspector (policy: introspectors)", identity);
        status = introspect_refuse(d, call, identity, &err, t0_us, json);
        js_policy_snapshot_release(ps);
        return status;
    }
    if (!js_denials_admit(hc->introspect_rate, identity, js_mono_ms())) {
        (void)js_err_set(&err, JS_ELIMIT, JS_R_INTROSPECT_RATE_LIMITED,
                         "introspector '%s' is over %u introspection calls per second over HTTP",
                         identity, HTTP_INTROSPECT_RATE);
        status = introspect_refuse(d, call, identity, &err, t0_us, json);
        js_policy_snapshot_release(ps);
        return status;
    }

    /* A token too long, empty or malformed is an answer (inactive), not an
     * error (RFC 7662 §2.2). */
    js_introspect_input in = {
        .token = call->token,
        .token_len = call->token_len,
        .auds = auds,
        .naud = naud,
        .now = js_wall_ms() / 1000,
        .leeway = d->cfg->introspection_leeway,
    };
    js_introspection res;
    memset(&res, 0, sizeof(res));
    js_snapshot *ks = js_snapshot_store_acquire(d->keys);
    const js_keyring *kr = js_snapshot_value(ks);
    js_introspect(kr, d->index, &in, &res);
    js_snapshot_release(ks);
    *json = js_introspection_json(&res, js_policy_issuer(p));
    js_policy_snapshot_release(ps);
    if (*json == NULL) {
        js_introspection_clear(&res);
        (void)js_err_oom(&err);
        return introspect_refuse(d, call, identity, &err, t0_us, json);
    }

    /* Answered: the call is allowed whatever the answer. */
    js_decision dec;
    js_decision_init(&dec);
    const char *why = res.why != NULL ? res.why : "malformed";
    js_reason audited = JS_R_NONE;
    if (!res.active && strcmp(why, "unknown_jti") == 0)
        audited = JS_R_INTROSPECT_UNKNOWN_JTI;
    else if (!res.active && strcmp(why, "hash_mismatch") == 0)
        audited = JS_R_INTROSPECT_HASH_MISMATCH;
    js_metrics_request(d->metrics, INTROSPECT_METHOD, identity, js_decision_name(dec.kind), why);
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(identity, call->peer, key, sizeof(key));
    bool log_it;
    if (res.active) {
        log_it = js_denials_admit(d->quiet, key, js_mono_ms());
    } else {
        /* One budget decision for the log line and the audit record. */
        log_it = js_denials_admit(d->denials, key, js_mono_ms());
        if (audited != JS_R_NONE) {
            if (log_it) {
                introspect_audit(d, call, identity, &dec, audited, res.kid, res.jti);
            } else {
                char addr[JS_DENIALS_KEY_MAX + 1];
                js_denials_peer_addr(call->peer, addr, sizeof(addr));
                js_audit_note_folded(d->audit, INTROSPECT_TYPE, identity, addr,
                                     js_reason_name(audited));
            }
        }
    }
    if (log_it) {
        js_reqlog log = introspect_log(call, identity, &dec, t0_us);
        /* The answer's reason (introspect.h), never told to the caller. */
        log.reason = why;
        log.status = "200";
        log.kid = res.kid[0] != '\0' ? res.kid : NULL;
        log.jti = res.jti[0] != '\0' ? res.jti : NULL;
        if (res.active) {
            log.sub = res.tok.sub;
            log.aud = res.tok.aud_json;
        }
        js_reqlog_emit(&log);
    }
    js_introspection_clear(&res);
    return 200;
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
        js_denials_options rate = {.rate = HTTP_INTROSPECT_RATE,
                                   .burst = HTTP_INTROSPECT_BURST,
                                   .global_rate = HTTP_INTROSPECT_GLOBAL_RATE,
                                   .global_burst = HTTP_INTROSPECT_GLOBAL_BURST};
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
