/*
 * health.c - jwt-signerd's own health: the HSM probe behind /healthz and the
 * metrics, and the audit disk watermark the main loop watches.
 */
#include <inttypes.h>
#include <stdio.h>

#include "clock.h"
#include "daemon.h"
#include "logline.h"

/* Signs a probe with the audit key (never a JWT key) on the health
 * session; the result is cached for a second so probes cannot load the HSM. */
bool hsm_healthy(daemon_state *d, char *why, size_t cap)
{
    pthread_mutex_lock(&d->health_mu);
    int64_t now = js_mono_ms() / 1000;
    if (now != d->health_checked) {
        js_err err;
        js_err_clear(&err);
        static const uint8_t probe[] = "jwt-signer health probe";
        uint8_t sig[JS_SIG_MAX];
        size_t len = 0;
        d->hsm_ok = js_hsm_sign(d->health_session, d->audit_key, probe, sizeof(probe) - 1, sig,
                                sizeof(sig), &len, &err) == JS_OK;
        snprintf(d->hsm_why, sizeof(d->hsm_why), "%s", d->hsm_ok ? "" : err.msg);
        d->health_checked = now;
    }
    bool ok = d->hsm_ok;
    snprintf(why, cap, "%s", d->hsm_why);
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
