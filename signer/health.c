/*
 * health.c - jwt-signerd's own health: the HSM probe behind /healthz and the
 * metrics, and the audit disk watermark the main loop watches.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "clock.h"
#include "daemon.h"
#include "logline.h"
#include "ticker.h"

/* One probe: signs with the audit key (never a JWT key) on the health
 * session. On the probe thread (and once on the main thread at start): the
 * HSM call may take seconds while the HSM heals, and no reader waits for it. */
static void probe_once(daemon_state *d)
{
    pthread_mutex_lock(&d->health_mu);
    d->probe_since_ms = js_mono_ms();
    const js_hsm_key *key = d->health_key;
    pthread_mutex_unlock(&d->health_mu);
    js_err err;
    js_err_clear(&err);
    static const uint8_t probe[] = "jwt-signer health probe";
    uint8_t sig[JS_SIG_MAX];
    size_t len = 0;
    bool ok = js_hsm_sign(d->health_session, key, probe, sizeof(probe) - 1, sig, sizeof(sig), &len,
                          &err) == JS_OK;
    pthread_mutex_lock(&d->health_mu);
    d->hsm_ok = ok;
    snprintf(d->hsm_why, sizeof(d->hsm_why), "%s", ok ? "" : err.msg);
    d->probe_since_ms = 0;
    d->probe_done_ms = js_mono_ms();
    pthread_mutex_unlock(&d->health_mu);
}

/* The probe thread's call (ticker.h): every HEALTH_PROBE_EVERY_S, counted on
 * CLOCK_MONOTONIC from the end of the last probe, so a wall-clock step
 * neither delays nor hurries the next one. */
static void probe_tick(void *arg)
{
    probe_once(arg);
}

js_status health_probe_start(daemon_state *d, js_err *err)
{
    probe_once(d); /* a first answer before anyone asks */
    d->health_probe = js_ticker_new(HEALTH_PROBE_EVERY_S * 1000, probe_tick, d);
    JS_ENSURE(d->health_probe != NULL, err, JS_EINTERNAL, JS_R_HEALTH_THREAD,
              "cannot start the HSM health probe thread");
    return JS_OK;
}

void health_probe_key(daemon_state *d, const js_hsm_key *key)
{
    pthread_mutex_lock(&d->health_mu);
    d->health_key = key;
    pthread_mutex_unlock(&d->health_mu);
}

void health_probe_stop(daemon_state *d)
{
    js_ticker_free(d->health_probe);
    d->health_probe = NULL;
}

/* The last probe's answer, without waiting for the HSM: /healthz and the
 * metrics must answer while the HSM heals (a probe that blocked the HTTP
 * thread for the seconds of a re-initialisation stalled every HTTP client). */
bool hsm_healthy(daemon_state *d, char *why, size_t cap)
{
    pthread_mutex_lock(&d->health_mu);
    bool ok = d->hsm_ok;
    snprintf(why, cap, "%s", d->hsm_why);
    /* An HSM that hangs instead of failing: the probe never answers, and its
     * last answer must not stand for the HSM now. A module re-initialisation
     * (seconds) stays under these bounds. */
    int64_t now = js_mono_ms();
    if (d->probe_since_ms != 0 && now - d->probe_since_ms > HEALTH_PROBE_STUCK_MS) {
        ok = false;
        snprintf(why, cap, "the HSM has not answered the health probe for %lld ms",
                 (long long)(now - d->probe_since_ms));
    } else if (d->probe_done_ms != 0 &&
               now - d->probe_done_ms > HEALTH_PROBE_STUCK_MS + HEALTH_PROBE_EVERY_S * 1000) {
        ok = false;
        snprintf(why, cap, "no HSM health probe has finished for %lld ms",
                 (long long)(now - d->probe_done_ms));
    }
    pthread_mutex_unlock(&d->health_mu);
    /* The probe's own session may be fine while a worker's is still lost
     * (an idle worker heals on its next request): both must be well. */
    js_hsm_health h;
    js_hsm_health_get(d->hsm, &h);
    if (ok && !h.ok) {
        ok = false;
        snprintf(why, cap, "%s", h.why);
    }
    return ok;
}

/* Logs when the audit file system crosses the disk watermark (auditlog.h
 * measures; /healthz and the metrics report it), so an operator hears of
 * it before a full disk stops all signing. */
void disk_check(daemon_state *d)
{
    uint64_t free_bytes = 0;
    bool low = js_audit_disk_low(d->audit, &free_bytes);
    if (low == atomic_load(&d->disk_low))
        return;
    atomic_store(&d->disk_low, low);
    json_t *o = json_pack("{s:s, s:s, s:I, s:I}", "event", low ? "audit_disk_low" : "audit_disk_ok",
                          "dir", d->cfg->audit_dir, "free_bytes", (json_int_t)free_bytes,
                          "watermark_bytes", (json_int_t)d->cfg->audit_min_free_bytes);
    js_log_emit(low ? "warn" : "info", o);
}
