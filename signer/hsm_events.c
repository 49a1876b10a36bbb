/*
 * hsm_events.c - what the HSM tells jwt-signerd (hsm.h observer): each event
 * becomes a log line at once and an audit record ("hsm") once the log can
 * take it; keys whose usage is broader than signing are reported at start.
 */
#include <stdio.h>
#include <string.h>

#include "daemon.h"
#include "logline.h"

/* A key made before keygen limited keys to signing (hsm.h) is still used,
 * but the operator hears of it at every start. */
void log_key_usage(const char *name, const js_hsm_key *key)
{
    const char *warning = key != NULL ? js_hsm_key_warning(key) : NULL;
    if (warning == NULL)
        return;
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "event", "hsm_key_usage", "key", name, "message", warning);
    js_log_emit("warn", o);
}

/*
 * The HSM observer (hsm.h): a log line now, and the event queued for an
 * audit record the main loop writes (hsm_events_flush). It may run on the
 * audit writer thread inside checkpoint signing, so it never waits for the log.
 */
void on_hsm_event(void *ctx, const js_hsm_event *ev)
{
    daemon_state *d = ctx;
    const char *level = ev->kind == JS_HSM_EVENT_KEY_MISMATCH ? "error"
                        : ev->kind == JS_HSM_EVENT_LOST       ? "warn"
                                                              : "info";
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:I, s:s}", "event", js_hsm_event_name(ev->kind), "ckr",
        ev->ckr != NULL ? ev->ckr : "", "label", ev->label != NULL ? ev->label : "", "duration_ms",
        (json_int_t)ev->duration_ms, "message", ev->message != NULL ? ev->message : "");
    js_log_emit(level, o);
    pthread_mutex_lock(&d->hsm_ev_mu);
    if (d->hsm_ev_n < HSM_EVENTS_PENDING) {
        size_t i = d->hsm_ev_n++;
        d->hsm_ev[i].kind = ev->kind;
        snprintf(d->hsm_ev[i].ckr, sizeof(d->hsm_ev[i].ckr), "%s", ev->ckr ? ev->ckr : "");
        snprintf(d->hsm_ev[i].label, sizeof(d->hsm_ev[i].label), "%s", ev->label ? ev->label : "");
        snprintf(d->hsm_ev[i].message, sizeof(d->hsm_ev[i].message), "%s",
                 ev->message ? ev->message : "");
        d->hsm_ev[i].duration_ms = ev->duration_ms;
    } else {
        d->hsm_ev_dropped++;
    }
    pthread_mutex_unlock(&d->hsm_ev_mu);
}

/* Writes the queued HSM events as audit records ("hsm"), once the log can
 * take them: a recovery is recorded as soon as checkpoints sign again. */
void hsm_events_flush(daemon_state *d)
{
    if (!js_audit_healthy(d->audit, NULL))
        return;
    pthread_mutex_lock(&d->hsm_ev_mu);
    size_t n = d->hsm_ev_n;
    uint64_t dropped = d->hsm_ev_dropped;
    hsm_event_copy ev[HSM_EVENTS_PENDING];
    memcpy(ev, d->hsm_ev, n * sizeof(ev[0]));
    d->hsm_ev_n = 0;
    d->hsm_ev_dropped = 0;
    pthread_mutex_unlock(&d->hsm_ev_mu);
    for (size_t i = 0; i < n; i++) {
        js_hsm_health h;
        js_hsm_health_get(d->hsm, &h);
        audit_lifecycle(d, "hsm", js_hsm_event_name(ev[i].kind), NULL,
                        json_pack("{s:s, s:s, s:I, s:s, s:I, s:I}", "ckr", ev[i].ckr, "label",
                                  ev[i].label, "duration_ms", (json_int_t)ev[i].duration_ms,
                                  "message", ev[i].message, "reinits", (json_int_t)h.reinits,
                                  "events_dropped", (json_int_t)(i + 1 == n ? dropped : 0)));
    }
}
