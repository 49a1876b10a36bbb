/*
 * daemon.h - what the files of jwt-signerd share: the state the serving
 * daemon owns (daemon_state, created by main.c's cmd_serve and passed to
 * everything explicitly) and the functions each file offers the others.
 * Private to the program; no library includes it.
 *
 *   main.c        arguments, start-up order, the main loop, shutdown
 *   commands.c    the keygen and check-policy subcommands
 *   listener.c    the gRPC listener: fd budget and watcher, re-creation,
 *                 replaced servers, gRPC's own log lines
 *   audit_key.c   the audit log opened with the HSM audit key; key rotation
 *   hsm_events.c  HSM observer events: log lines now, audit records later
 *   health.c      the HSM health probe and the audit disk watermark
 *   endpoints.c   the HTTP endpoints (JWKS, OIDC discovery, /healthz, /metrics)
 */
#ifndef JS_SIGNERD_DAEMON_H
#define JS_SIGNERD_DAEMON_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/support/log.h>
#include <jansson.h>

#include "auditlog.h"
#include "config.h"
#include "control.h"
#include "denials.h"
#include "err.h"
#include "fdreserve.h"
#include "hsm.h"
#include "hsm_signer.h"
#include "http.h"
#include "keyring.h"
#include "lifecycle.h"
#include "metrics.h"
#include "policy_store.h"
#include "ratelimit.h"
#include "server.h"
#include "service.h"
#include "snapshot.h"
#include "ticker.h"

/* Seconds between two HSM health probes (health.c). */
#define HEALTH_PROBE_EVERY_S 1
/* A probe in the HSM longer than this reports the HSM unhealthy (health.c). */
#define HEALTH_PROBE_STUCK_MS 10000
/* How long in-flight calls get to finish after SIGTERM (the current server
 * and the replaced ones drain together, within this one grace). */
#define SHUTDOWN_GRACE_MS 10000
/* Replaced servers kept serving their existing connections, at most. */
#define RETIRED_SERVERS 4
/* HSM events waiting for their audit record, at most. */
#define HSM_EVENTS_PENDING 16
/* Audit key rotations one process makes (each keeps an HSM session). */
#define AUDIT_ROTATIONS_MAX 16

/*
 * What gRPC's log callback shares with the listener code (listener.c). The
 * callback takes no context argument (gpr_set_log_function), so main.c holds
 * the one instance as its only mutable global (g_listener) and hands
 * everything else a pointer to it (daemon_state.lf). Atomics: the callback
 * runs on any gRPC thread, the fd watcher on its own.
 */
typedef struct listener_flags {
    /* gRPC 1.51's listener stops for good after accept4 fails (EMFILE,
     * ENFILE, ENOBUFS...) and says so only in a log line: the listener is
     * lost, to be re-created by the main loop (listener_check). */
    atomic_bool lost;
    _Atomic(js_fdreserve *) reserve; /* handed back the moment it is lost */
    atomic_int port;                 /* the gRPC port, for the watcher */
    /* gRPC's own log lines (e.g. one per failed TLS handshake, which any
     * unauthenticated peer can cause) within GRPC_LOG_PER_SECOND; the rest
     * are counted and reported as one grpc_log_folded line. */
    atomic_llong log_second;
    atomic_ullong log_lines;
    atomic_ullong log_folded;
} listener_flags;

/* An HSM event kept for its audit record (the observer's strings are only
 * valid during the callback). */
typedef struct hsm_event_copy {
    js_hsm_event_kind kind;
    char ckr[40];
    char label[64];
    int64_t duration_ms;
    char message[256];
} hsm_event_copy;

/* An audit key rotated in (Admin/RotateAuditKey, FORMAT.md §5.4). */
typedef struct audit_rotated {
    js_hsm_session *s;
    js_hsm_key *key;
    js_hsm_signer signer;
    unsigned generation;                        /* N of <audit.key_label>-N */
    char label[JS_CONTROL_AUDIT_LABEL_MAX + 1]; /* its HSM label */
    char key_id[JS_AUDIT_KEY_ID_LEN + 1];       /* FORMAT.md §5.4 id */
    char *by;                                   /* who asked (for the log line) */
    uint64_t target; /* durable once audit_rotations_durable reaches it */
} audit_rotated;

/* Everything the serving daemon owns; main() passes it around explicitly. */
typedef struct daemon_state {
    const char *config_path;
    const char *accept_audit_loss; /* --accept-audit-loss REASON, or NULL */
    listener_flags *lf;            /* main.c's g_listener */
    js_config *cfg;
    js_hsm *hsm;
    js_hsm_session *session;       /* start-up and reloads (main thread) */
    js_hsm_session *audit_session; /* only the audit writer uses it */
    js_hsm_key *audit_key;
    js_hsm_signer audit_signer; /* the audit log's sign_ctx: its session and key */
    /* Audit keys rotated in: each on its own session (the writer may be
     * signing on the one before), kept until exit because the writer may
     * still hold the previous one. */
    audit_rotated *audit_rotated[AUDIT_ROTATIONS_MAX];
    size_t n_audit_rotated;
    /* audit_rot_mu guards the four below: an Admin thread rotates (under
     * the control mutex), the main loop finishes a rotation the writer made
     * durable only after the Admin call gave up waiting, and retries a state
     * file that could not be saved (audit_key.c). */
    pthread_mutex_t audit_rot_mu;
    unsigned audit_generation;                        /* N of the label <audit.key_label>-N */
    char audit_label[JS_CONTROL_AUDIT_LABEL_MAX + 1]; /* the audit key in force */
    audit_rotated *audit_pending; /* queued in the writer, not finished here; or NULL */
    /* Rotations the writer made durable (its on_key_rotated hook; the
     * writer thread writes, any thread reads). */
    atomic_uint_fast64_t audit_rotations_durable;
    bool audit_state_dirty; /* audit-key.json not saved since the last change */
    js_keyvault *vault;
    js_snapshot_store *keys; /* of js_keyring */
    js_ratelimit *rl;
    js_service *svc;
    js_policy_store *policies;
    js_snapshot_store *frozen;
    js_audit *audit;
    js_control *control;
    js_tokindex *index; /* issued tokens and revocations; NULL = introspection off */
    js_server *srv;
    js_server *k8s; /* ExternalJWTSigner on its Unix socket; NULL = not configured */
    /* Servers whose listener died: they keep serving the connections they
     * had until those end by themselves (listener_check). */
    struct {
        js_server *srv;
        int64_t drain_at_ms; /* begin the drain (GOAWAY) then */
        bool draining;
    } retired[RETIRED_SERVERS];
    js_metrics *metrics;
    js_http *http;
    js_fdreserve *fd_reserve;
    js_denials *denials;    /* denials in full vs folded (denials.h) */
    js_denials *admin_rate; /* Admin calls per administrator */
    js_denials *quiet;      /* GetJwks log lines per caller */
    atomic_bool disk_low;   /* last watermark state seen (logged on change) */
    /* HSM events (hsm.h observer) waiting for their audit record: the
     * observer runs on whatever thread noticed (even the audit writer), so
     * the main loop writes the records. Bounded; overflow is counted. */
    pthread_mutex_t hsm_ev_mu;
    hsm_event_copy hsm_ev[HSM_EVENTS_PENDING];
    size_t hsm_ev_n;
    uint64_t hsm_ev_dropped;
    char listen_again[300];    /* host:port the gRPC listener is re-created on */
    int64_t listener_lost_ms;  /* when the main loop noticed; 0 = listening */
    int64_t listener_retry_ms; /* next re-creation attempt */
    atomic_bool listener_down; /* read by /healthz */
    atomic_uint_fast64_t listener_recreations;
    unsigned long fd_limit;
    unsigned http_max_connections; /* the HTTP server's share of the fd limit */
    js_ticker *fd_watch;           /* the fd watcher (listener.c); NULL: not running */
    atomic_ullong listener_sheds;  /* listeners shut down by the fd watcher */
    /* /healthz: an HSM probe on its own session, once a second on its own
     * thread (health.c); readers take the last answer under health_mu. */
    pthread_mutex_t health_mu;
    js_ticker *health_probe; /* the probe thread; NULL: not running */
    /* under health_mu: the key the probe signs with, the audit key in force
     * (audit_key, then the newest completed rotation's). Not the start-up
     * key for ever: an operator may destroy a rotated-out audit key, and the
     * probe must not call the HSM unhealthy for that. */
    const js_hsm_key *health_key;
    js_hsm_session *health_session;
    bool hsm_ok;
    char hsm_why[JS_MSG_MAX];
    int64_t probe_since_ms; /* monotonic start of the probe in the HSM now; 0: none */
    int64_t probe_done_ms;  /* monotonic end of the last probe */
    char state_dir[4096];
} daemon_state;

/* A lifecycle record, durable before we go on (lifecycle.h). A failure is
 * logged: the daemon still refuses tokens by itself when the log is failing. */
static inline void audit_lifecycle(daemon_state *d, const char *type, const char *decision,
                                   const js_err *why, json_t *detail)
{
    (void)js_lifecycle_audit(d->audit, JS_LIFECYCLE_DURABLE, type, NULL, decision, why, detail);
}

/* ---- main.c -------------------------------------------------------------------------- */

/* Loads the configuration, reads the PIN, opens and logs into the token; the
 * PIN is wiped before this returns, whatever happens. */
js_status open_hsm(const char *config_path, js_config **cfg, js_hsm **hsm, js_err *err) JS_WUR;
/* An error log line {"event":event,"reason","message"}. */
void log_failure(const char *event, const js_err *err);

/* ---- commands.c ---------------------------------------------------------------------- */

/* jwt-signerd keygen: key_name NULL = the audit key. Exit status. */
int cmd_keygen(const char *config_path, const char *key_name);
/* jwt-signerd check-policy FILE. Exit status. */
int cmd_check_policy(const char *path);

/* ---- listener.c ---------------------------------------------------------------------- */

/* The body of gRPC's log callback: gRPC's diagnostics as JSON lines (at most
 * GRPC_LOG_PER_SECOND a second), and a listener killed by accept4 flagged. */
void listener_grpc_log(listener_flags *lf, const gpr_log_func_args *args);
/* Reports the gRPC log lines folded in seconds before `second`, if any. */
void listener_grpc_log_flush(listener_flags *lf, long long second);
/* Raises the fd limit, sizes the HTTP server's share, holds the reserve. */
js_status fd_setup(daemon_state *d, js_err *err) JS_WUR;
/* Starts the fd watcher thread (after the gRPC and HTTP servers). */
js_status fd_watch_start(daemon_state *d, js_err *err) JS_WUR;
void fd_watch_stop(daemon_state *d);
/* The ExternalJWTSigner server in d->k8s when the configuration has an
 * externaljwt section (listener.c). */
js_status start_k8s(daemon_state *d, js_err *err) JS_WUR;

/* A new gRPC server in d->srv, listening on listen (NULL = the configured
 * address, whose bound port later re-creations reuse). */
js_status start_grpc(daemon_state *d, const char *listen, js_err *err) JS_WUR;
/* The main loop's look at the listener: re-creates a lost one, takes the fd
 * reserve back, drains replaced servers whose time has come. */
void listener_check(daemon_state *d, int64_t now_ms);
/* At shutdown: begins draining every replaced server (GOAWAY), so their
 * calls finish alongside the current server's. */
void retired_drain_all(daemon_state *d);
/* At shutdown: waits for the replaced servers until deadline_ms (monotonic),
 * then cancels what is left; frees them. */
void retired_finish_all(daemon_state *d, int64_t deadline_ms);

/* ---- audit_key.c --------------------------------------------------------------------- */

/* Finds the audit key in force in the HSM and opens the audit log with it. */
js_status open_audit(daemon_state *d, const char *issuer, js_err *err) JS_WUR;
/* A rotation the writer made durable after Admin/RotateAuditKey answered
 * UNAVAILABLE (audit.rotate_pending): now in force here too (the probe's
 * key, STATE_DIR/audit-key.json, a log line). Main loop, once a second. */
void audit_key_check_pending(daemon_state *d);
/* After js_audit_close (whatever it returned): finishes a rotation the stop
 * made durable, makes a last attempt at an unsaved state file (and says
 * what to write when it fails), and says so when a pending rotation was
 * never made durable. */
void audit_key_after_close(daemon_state *d);
/* control.h's rotate_audit (ctx: the daemon_state). */
js_status rotate_audit_key(void *ctx, const char *by, char *label_out, char *key_id,
                           js_err *err) JS_WUR;

/* ---- hsm_events.c -------------------------------------------------------------------- */

/* The HSM observer (hsm.h); ctx: the daemon_state. */
void on_hsm_event(void *ctx, const js_hsm_event *ev);
/* Writes the queued HSM events as audit records (main loop). */
void hsm_events_flush(daemon_state *d);
/* Warns about a key whose usage is broader than signing (hsm.h). */
void log_key_usage(const char *name, const js_hsm_key *key);

/* ---- health.c ------------------------------------------------------------------------ */

/* The HSM's health for /healthz and the metrics: the last probe's answer
 * (a probe a second on the probe thread), never waiting for the HSM. */
bool hsm_healthy(daemon_state *d, char *why, size_t cap);
/* Probes once, then starts the probe thread (needs health_session and the
 * key open_audit gave the probe). */
js_status health_probe_start(daemon_state *d, js_err *err);
/* From now on the probe signs with key (a completed audit key rotation's,
 * kept until exit). */
void health_probe_key(daemon_state *d, const js_hsm_key *key);
/* Ends the probe thread (before the health session or the audit key go). */
void health_probe_stop(daemon_state *d);
/* Logs when the audit file system crosses the disk watermark. */
void disk_check(daemon_state *d);

/* ---- endpoints.c --------------------------------------------------------------------- */

/* Starts the HTTP server (JWKS, /healthz, /metrics) if http.listen is set. */
js_status start_http(daemon_state *d, js_err *err) JS_WUR;

#endif
