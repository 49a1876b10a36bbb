/*
 * main.c - jwt-signerd: the signing proxy daemon, and its keygen subcommand.
 *
 *   jwt-signerd --config FILE [--accept-audit-loss REASON]
 *                                             serve until SIGTERM/SIGINT
 *   jwt-signerd keygen --config FILE --key NAME | --audit-key
 *                                             generate a key pair in the HSM
 *   jwt-signerd check-policy FILE             validate a policy, print its rules
 *
 * Signals while serving: SIGHUP reloads the policy (an invalid file keeps
 * the old one), SIGUSR1 toggles incident mode, SIGTERM/SIGINT stop.
 *
 * Start-up is all-or-nothing: configuration, PIN, token login, every key
 * found and self-tested, port bound — or exit 1 with a message that says
 * what and why. Signals are blocked in every thread and taken synchronously
 * here with sigwait(), so no handler runs inside gRPC or PKCS#11 code.
 */
#include <errno.h>
#include <inttypes.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "auditlog.h"
#include "config.h"
#include "control.h"
#include "denials.h"
#include "fdreserve.h"
#include "frozen.h"
#include "hsm.h"
#include "hsm_signer.h"
#include "jwk.h"
#include "http.h"
#include "keyring.h"
#include "lifecycle.h"
#include "logline.h"
#include "metrics.h"
#include "policy.h"
#include "policy_store.h"
#include "ratelimit.h"
#include "server.h"
#include "service.h"
#include "statefile.h"
#include "text.h"

#define EXIT_USAGE 2
/* How long in-flight calls get to finish after SIGTERM. */
#define SHUTDOWN_GRACE_MS 10000
/* Identities tracked by the rate limiter before they share overflow buckets. */
#define RATELIMIT_MAX_IDENTITIES 65536

static void usage(FILE *out)
{
    fputs("usage: jwt-signerd --config FILE [--accept-audit-loss REASON]\n"
          "       jwt-signerd keygen --config FILE (--key NAME | --audit-key)\n"
          "       jwt-signerd check-policy FILE\n"
          "       jwt-signerd --help | --version\n"
          "\n"
          "Serves jwtsigner.v1.Signer over mutually authenticated gRPC and signs JWTs\n"
          "with keys held in a PKCS#11 token. Logs are JSON lines on stderr.\n"
          "SIGHUP: reload the policy (an invalid file keeps the old one). SIGUSR1: toggle\n"
          "incident mode. SIGTERM/SIGINT: stop accepting, finish in-flight calls, exit 0.\n"
          "\n"
          "keygen generates the key pair named NAME in the configuration (its label and\n"
          "alg), or with --audit-key the audit log's checkpoint key (audit.key_label,\n"
          "ES256), inside the token: sensitive, non-extractable. It refuses to overwrite\n"
          "an existing key with the same label, and prints the new key's public JWK.\n"
          "\n"
          "check-policy validates a policy file and prints the effective rules per caller;\n"
          "exit 0 when valid, 1 with FILE:LINE and the problem otherwise.\n"
          "\n"
          "--accept-audit-loss REASON: at start, the audit log refuses (startup_failed,\n"
          "exit 1, no file changed) when a record that checkpoint.json names is damaged\n"
          "or missing: that is not crash damage (audit/FORMAT.md section 8). After\n"
          "investigating, start ONCE with this option: recovery cuts the log at the\n"
          "damage and writes an audit.loss_accepted record naming the segment, offset,\n"
          "sequence number, the checkpoint and REASON (1-512 bytes of printable text,\n"
          "e.g. who accepted it and the incident ticket). Remove it after that start.\n",
          out);
}

/*
 * The fd budget (fdreserve.h). The HTTP server may hold a quarter of the fd
 * limit (at most its default, http.h); the HSM module and the audit log need
 * FD_CORE more (SoftHSM opens its object files on every operation, C_Initialize
 * its whole token directory). gRPC 1.51 cannot cap its connections, so a
 * watcher thread does (fd_watch_main): when the descriptors still free come
 * within the HTTP server's unused share plus FD_MARGIN, it shuts gRPC's
 * listener down and hands back the FD_CORE descriptors held in reserve; the
 * main loop re-creates the listener once the flood's descriptors are gone.
 * If gRPC hits EMFILE anyway (its listener then dies by itself), the same
 * happens from its log callback.
 */
#define FD_CORE      32
#define FD_LIMIT_MIN 256
/* Descriptors gRPC may still take between two looks of the fd watcher. */
#define FD_MARGIN 16
/* How often the fd watcher looks. */
#define FD_WATCH_US 1000
/* gRPC log lines written per second, at most (the rest are counted). */
#define GRPC_LOG_PER_SECOND 20
/* A lost gRPC listener is re-created at most this often. */
#define LISTENER_RETRY_MS 1000
/* Calls on a replaced listener's connections get this long to finish once
 * it is drained. */
#define LISTENER_DRAIN_MS 10000
/* HSM events waiting for their audit record, at most. */
#define HSM_EVENTS_PENDING 16
/* Replaced servers kept serving their existing connections, at most. */
#define RETIRED_SERVERS 4

/*
 * gRPC's log callback takes no context, so the one piece of state it must
 * reach lives here, in main's file: gRPC 1.51's listener stops for good after
 * accept4 fails (EMFILE, ENFILE, ENOBUFS...) and says so only in a log line.
 * The callback hands the reserved descriptors back at once and flags the
 * listener for re-creation by the main loop.
 */
static struct {
    atomic_bool lost;
    _Atomic(js_fdreserve *) reserve;
    /* gRPC's own log lines (e.g. one per failed TLS handshake, which any
     * unauthenticated peer can cause) within GRPC_LOG_PER_SECOND; the rest
     * are counted and reported as one grpc_log_folded line. */
    atomic_bool watch_stop; /* the fd watcher ends */
    atomic_int port;        /* the gRPC port, for the watcher */
    atomic_llong log_second;
    atomic_ullong log_lines;
    atomic_ullong log_folded;
} g_listener;

/* gRPC's own diagnostics (e.g. a client's failed TLS handshake) become JSON
 * lines like ours, so the stderr stream stays machine-readable. */
/* Writes the count of gRPC log lines folded in earlier seconds, if any. */
static void grpc_log_flush(long long second)
{
    long long seen = atomic_load(&g_listener.log_second);
    if (seen == second || !atomic_compare_exchange_strong(&g_listener.log_second, &seen, second))
        return;
    atomic_store(&g_listener.log_lines, 0);
    unsigned long long folded = atomic_exchange(&g_listener.log_folded, 0);
    if (folded > 0) {
        json_t *o = json_pack("{s:s, s:I, s:s}", "event", "grpc_log_folded", "count",
                              (json_int_t)folded, "message",
                              "gRPC log lines over the per-second budget were counted, not "
                              "written (e.g. failed TLS handshakes)");
        js_log_emit("warn", o);
    }
}

static void grpc_log_to_json(gpr_log_func_args *args)
{
    /* Only running out of descriptors or kernel memory kills the listener
     * this way; "Invalid argument" is a listener we shut down ourselves. */
    const char *m = args->message;
    if (m != NULL && strncmp(m, "Failed accept4: ", 16) == 0 &&
        (strstr(m, "Too many open files") != NULL || strstr(m, "No buffer space") != NULL ||
         strstr(m, "Cannot allocate memory") != NULL) &&
        !atomic_exchange(&g_listener.lost, true))
        js_fdreserve_release(atomic_load(&g_listener.reserve));
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    grpc_log_flush((long long)ts.tv_sec);
    if (atomic_fetch_add(&g_listener.log_lines, 1) >= GRPC_LOG_PER_SECOND) {
        atomic_fetch_add(&g_listener.log_folded, 1);
        return;
    }
    const char *level = args->severity == GPR_LOG_SEVERITY_ERROR ? "warn" : "debug";
    char where[256];
    snprintf(where, sizeof(where), "%s:%d", args->file != NULL ? args->file : "?", args->line);
    json_t *o = json_pack("{s:s, s:s, s:s}", "event", "grpc", "message",
                          args->message != NULL ? args->message : "", "source", where);
    js_log_emit(level, o);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_failure(const char *event, const js_err *err)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "event", event, "reason", js_reason_name(err->reason),
                          "message", err->msg);
    js_log_emit("error", o);
}

/* Loads config, reads the PIN, opens and logs into the token; the PIN is
 * wiped before this returns, whatever happens. */
static js_status open_hsm(const char *config_path, js_config **cfg, js_hsm **hsm, js_err *err)
{
    JS_GUARD(js_config_load(config_path, cfg, err));
    char pin[JS_HSM_PIN_MAX + 1];
    size_t pin_len = 0;
    js_status st = js_config_read_pin(*cfg, pin, sizeof(pin), &pin_len, err);
    if (st == JS_OK)
        st = js_hsm_open((*cfg)->hsm_module, (*cfg)->hsm_token, pin, pin_len, hsm, err);
    OPENSSL_cleanse(pin, sizeof(pin));
    return st;
}

static int cmd_keygen(const char *config_path, const char *key_name)
{
    js_err err;
    js_err_clear(&err);
    js_config *cfg = NULL;
    js_hsm *hsm = NULL;
    js_hsm_session *s = NULL;
    js_hsm_key *key = NULL;
    json_t *jwk = NULL;
    int rc = 1;

    js_status st = open_hsm(config_path, &cfg, &hsm, &err);
    const char *name = key_name != NULL ? key_name : "audit";
    const char *label = NULL;
    js_alg alg = JS_ALG_ES256; /* the audit key is always ES256 (FORMAT.md) */
    unsigned bits = 0;         /* RSA modulus size from keys[].bits; 0 = default / not RSA */
    if (st == JS_OK && key_name != NULL) {
        const js_key_config *kc = js_config_find_key(cfg, key_name);
        if (kc == NULL)
            st = js_err_set(&err, JS_ECONFIG, JS_R_KEYGEN_UNKNOWN_KEY, "no key named '%s' in %s",
                            key_name, config_path);
        else
            label = kc->label, alg = kc->alg, bits = kc->bits;
    } else if (st == JS_OK) {
        label = cfg->audit_key_label;
    }
    if (st == JS_OK)
        st = js_hsm_session_open(hsm, &s, &err);
    if (st == JS_OK)
        st = js_hsm_keygen(hsm, s, label, alg, bits, &err);
    if (st == JS_OK)
        st = js_hsm_key_find(hsm, s, label, alg, &key, &err);
    char kid[JWK_KID_LEN + 1] = "";
    if (st == JS_OK)
        st = jwk_from_pkey(js_hsm_key_public(key), alg, NULL, &jwk, &err);
    if (st == JS_OK)
        st = jwk_thumbprint(jwk, kid, &err);
    if (st == JS_OK) {
        json_object_set_new(jwk, "kid", json_string(kid));
        char *text = json_dumps(jwk, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", text != NULL ? text : "{}");
        free(text);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "keygen", "key", name, "label",
                              label, "kid", kid);
        js_log_emit("info", o);
        rc = 0;
    } else {
        log_failure("keygen_failed", &err);
    }
    json_decref(jwk);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
    js_config_free(cfg);
    return rc;
}

static int cmd_check_policy(const char *path)
{
    js_err err;
    js_err_clear(&err);
    js_policy *p = NULL;
    if (js_policy_load(path, &p, &err) != JS_OK) {
        fprintf(stderr, "jwt-signerd: %s\n", err.msg);
        return 1;
    }
    char *text = js_policy_describe(p);
    printf("%s: valid (sha256 %s)\n%s", path, js_policy_hash_hex(p), text != NULL ? text : "");
    free(text);
    js_policy_free(p);
    return 0;
}

/* Audit key rotations one process makes (each keeps an HSM session). */
#define AUDIT_ROTATIONS_MAX 16
/* STATE_DIR/audit-key.json: {"label":L,"generation":N}, the audit key in
 * force after a rotation, so a restart signs with it (FORMAT.md §5.4). */
#define AUDIT_KEY_STATE     "audit-key.json"
#define AUDIT_KEY_STATE_MAX 4096

/* An HSM event kept for its audit record (the observer's strings are only
 * valid during the callback). */
typedef struct hsm_event_copy {
    js_hsm_event_kind kind;
    char ckr[40];
    char label[64];
    int64_t duration_ms;
    char message[256];
} hsm_event_copy;

/* Everything the serving daemon owns; main() passes it around explicitly. */
typedef struct daemon_state {
    const char *config_path;
    const char *accept_audit_loss; /* --accept-audit-loss REASON, or NULL */
    js_config *cfg;
    js_hsm *hsm;
    js_hsm_session *session;       /* start-up and reloads (main thread) */
    js_hsm_session *audit_session; /* only the audit writer uses it */
    js_hsm_key *audit_key;
    js_hsm_signer audit_signer; /* the audit log's sign_ctx: its session and key */
    /* Audit keys rotated in (Admin/RotateAuditKey, FORMAT.md §5.4): each on
     * its own session (the writer may be signing on the one before), kept
     * until exit because the writer may still hold the previous one. */
    struct audit_rotated {
        js_hsm_session *s;
        js_hsm_key *key;
        js_hsm_signer signer;
    } * audit_rotated[AUDIT_ROTATIONS_MAX];
    size_t n_audit_rotated;
    unsigned audit_generation;                        /* N of the label <audit.key_label>-N */
    char audit_label[JS_CONTROL_AUDIT_LABEL_MAX + 1]; /* the audit key in force */
    js_keyvault *vault;
    js_snapshot_store *keys; /* of js_keyring */
    js_ratelimit *rl;
    js_service *svc;
    js_policy_store *policies;
    js_snapshot_store *frozen;
    js_audit *audit;
    js_control *control;
    js_server *srv;
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
    pthread_t fd_watch;
    bool fd_watch_started;
    atomic_ullong listener_sheds; /* listeners shut down by the fd watcher */
    /* /healthz: an HSM probe on its own session, at most once a second. */
    pthread_mutex_t health_mu;
    js_hsm_session *health_session;
    int64_t health_checked;
    bool hsm_ok;
    char hsm_why[JS_MSG_MAX];
    char state_dir[4096];
} daemon_state;

/* A lifecycle record, durable before we go on (lifecycle.h). */
static void audit_lifecycle(daemon_state *d, const char *type, const char *decision,
                            const js_err *why, json_t *detail)
{
    (void)js_lifecycle_audit(d->audit, JS_LIFECYCLE_DURABLE, type, NULL, decision, why, detail);
}

static char *pubkey_pem(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (bio != NULL && PEM_write_bio_PUBKEY(bio, pk) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        out = n > 0 ? strndup(data, (size_t)n) : NULL;
    }
    BIO_free(bio);
    return out;
}

/* A key made before keygen limited keys to signing (hsm.h) is still used,
 * but the operator hears of it at every start. */
static void log_key_usage(const char *name, const js_hsm_key *key)
{
    const char *warning = key != NULL ? js_hsm_key_warning(key) : NULL;
    if (warning == NULL)
        return;
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "event", "hsm_key_usage", "key", name, "message", warning);
    js_log_emit("warn", o);
}

static void on_audit_batch(void *ctx, size_t records, uint64_t fsync_us)
{
    js_metrics_audit_batch(ctx, records, fsync_us);
}

/*
 * The HSM observer (hsm.h): a log line now, and the event queued for an
 * audit record the main loop writes (hsm_events_flush). It may run on the
 * audit writer thread inside checkpoint signing, so it never waits for the log.
 */
static void on_hsm_event(void *ctx, const js_hsm_event *ev)
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

/* One log line per folded audit record, with the same count (logline.h). */
static void on_audit_fold(void *ctx, const js_audit_fold *f)
{
    (void)ctx;
    js_foldlog l = {f->type, f->caller, f->peer, f->reason, f->count, f->seq};
    js_log_denials_folded(&l);
}

/* The audit key in force: audit.key_label, or the label a rotation saved
 * in STATE_DIR/audit-key.json. */
static js_status load_audit_label(daemon_state *d, js_err *err)
{
    snprintf(d->audit_label, sizeof(d->audit_label), "%s", d->cfg->audit_key_label);
    d->audit_generation = 1;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", d->state_dir, AUDIT_KEY_STATE);
    char *text = NULL;
    size_t len = 0;
    bool absent = false;
    JS_GUARD(js_statefile_read(path, AUDIT_KEY_STATE_MAX, "audit", &text, &len, &absent, err));
    if (absent)
        return JS_OK;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    json_t *l = json_object_get(j, "label");
    json_t *g = json_object_get(j, "generation");
    bool ok = json_is_string(l) && json_string_length(l) >= 1 &&
              json_string_length(l) <= JS_CONTROL_AUDIT_LABEL_MAX && json_is_integer(g) &&
              json_integer_value(g) >= 1 && json_integer_value(g) <= 1000000;
    if (ok) {
        snprintf(d->audit_label, sizeof(d->audit_label), "%s", json_string_value(l));
        d->audit_generation = (unsigned)json_integer_value(g);
    }
    json_decref(j);
    JS_ENSURE(ok, err, JS_ECONFIG, JS_R_AUDIT_KEY_STATE,
              "%s: not {\"label\":LABEL,\"generation\":N}", path);
    return JS_OK;
}

static js_status save_audit_label(daemon_state *d, js_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", d->state_dir, AUDIT_KEY_STATE);
    json_t *j = json_pack("{s:s, s:I}", "label", d->audit_label, "generation",
                          (json_int_t)d->audit_generation);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    JS_ENSURE_ALLOC(text, err);
    js_status st = js_statefile_write(path, text, strlen(text), "audit", err);
    free(text);
    return st;
}

/* Admin/RotateAuditKey (control.h rotate_audit), under the control mutex:
 * a new ES256 key in the HSM (hsm.c keygen: sensitive, non-extractable,
 * sign-only) labelled <audit.key_label>-N on a session of its own, handed
 * to the writer (js_audit_rotate_key), then saved as the key in force. */
static js_status rotate_audit_key(void *ctx, const char *by, char *label_out, char *key_id,
                                  js_err *err)
{
    daemon_state *d = ctx;
    JS_ENSURE(d->n_audit_rotated < AUDIT_ROTATIONS_MAX, err, JS_ESTATE, JS_R_AUDIT_ROTATE,
              "at most %d audit key rotations per process: restart the signer first",
              AUDIT_ROTATIONS_MAX);
    struct audit_rotated *r = calloc(1, sizeof(*r));
    JS_ENSURE_ALLOC(r, err);
    js_status st = js_hsm_session_open(d->hsm, &r->s, err);
    unsigned gen = d->audit_generation;
    char label[JS_CONTROL_AUDIT_LABEL_MAX + 1] = "";
    /* A label left by a rotation that never completed is skipped, never
     * reused: its key may have been seen by no one, but it is not ours. */
    for (int tries = 0; st == JS_OK && tries < 16; tries++) {
        gen++;
        int n = snprintf(label, sizeof(label), "%s-%u", d->cfg->audit_key_label, gen);
        if (n <= 0 || (size_t)n >= sizeof(label)) {
            st = js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE, "audit key label too long");
            break;
        }
        js_hsm_key *old = NULL;
        js_err e2;
        if (js_hsm_key_find(d->hsm, r->s, label, JS_ALG_ES256, &old, &e2) == JS_OK) {
            js_hsm_key_free(old);
            label[0] = '\0';
            continue;
        }
        break;
    }
    if (st == JS_OK && label[0] == '\0')
        st = js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE, "no free audit key label");
    if (st == JS_OK)
        st = js_hsm_keygen(d->hsm, r->s, label, JS_ALG_ES256, 0, err);
    if (st == JS_OK)
        st = js_hsm_key_find(d->hsm, r->s, label, JS_ALG_ES256, &r->key, err);
    char *pem = st == JS_OK ? pubkey_pem(js_hsm_key_public(r->key)) : NULL;
    if (st == JS_OK && pem == NULL)
        st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    r->signer.s = r->s;
    r->signer.key = r->key;
    /* The writer holds r->signer once the request is queued: JS_OK (done) or
     * JS_EUNAVAIL (not durable yet) from js_audit_rotate_key (auditlog.h). */
    bool queued = false;
    if (st == JS_OK) {
        st = js_audit_rotate_key(d->audit, js_hsm_signer_sign, &r->signer, pem, 10000, key_id, err);
        queued = st == JS_OK || st == JS_EUNAVAIL;
    }
    free(pem);
    if (!queued) {
        js_hsm_key_free(r->key);
        js_hsm_session_free(r->s);
        free(r);
        return st;
    }
    /* Pending or done, the writer holds r->signer: kept until exit. */
    d->audit_rotated[d->n_audit_rotated++] = r;
    JS_GUARD(st);
    snprintf(d->audit_label, sizeof(d->audit_label), "%s", label);
    d->audit_generation = gen;
    snprintf(label_out, JS_CONTROL_AUDIT_LABEL_MAX + 1, "%s", label);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "audit_key_rotated", "label", label,
                          "key_id", key_id, "by", by);
    js_log_emit("info", o);
    JS_GUARD(save_audit_label(d, err));
    return JS_OK;
}

static js_status open_audit(daemon_state *d, const char *issuer, js_err *err)
{
    const js_config *cfg = d->cfg;
    JS_GUARD(load_audit_label(d, err));
    JS_GUARD(js_hsm_session_open(d->hsm, &d->audit_session, err));
    js_status st =
        js_hsm_key_find(d->hsm, d->audit_session, d->audit_label, JS_ALG_ES256, &d->audit_key, err);
    if (st != JS_OK) {
        js_err_prefix(err, "audit key (label '%s'): ", d->audit_label);
        return st;
    }
    log_key_usage("audit key", d->audit_key);
    char *pem = pubkey_pem(js_hsm_key_public(d->audit_key));
    JS_ENSURE_ALLOC(pem, err);
    d->audit_signer.s = d->audit_session;
    d->audit_signer.key = d->audit_key;
    js_audit_options opts = {
        .dir = cfg->audit_dir,
        .origin = cfg->audit_origin != NULL ? cfg->audit_origin : issuer,
        .checkpoint_interval_ms = cfg->audit_checkpoint_interval_ms,
        .checkpoint_records = cfg->audit_checkpoint_records,
        .heartbeat_ms = cfg->audit_heartbeat_ms,
        .segment_bytes = cfg->audit_segment_bytes,
        .no_fsync = !cfg->audit_fsync,
        .sign = js_hsm_signer_sign,
        .sign_ctx = &d->audit_signer,
        .pubkey_pem = pem,
        .on_batch = on_audit_batch,
        .on_batch_ctx = d->metrics,
        .on_fold = on_audit_fold,
        .on_fold_ctx = d,
        .min_free_bytes = cfg->audit_min_free_bytes,
        .disk_watermark_off = cfg->audit_min_free_bytes == 0,
    };
    if (!cfg->audit_fsync)
        js_log_event("warn", "audit_fsync_disabled",
                     "audit.fsync is false: records are NOT durable before tokens are released "
                     "(benchmarks and tests only)");
    opts.accept_loss_reason = d->accept_audit_loss;
    if (d->accept_audit_loss != NULL) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s}", "event", "audit_accept_loss", "reason", d->accept_audit_loss,
            "message",
            "--accept-audit-loss given: start-up recovery accepts the loss of records "
            "checkpoint.json names, if any, and records it in the log; remove the option now");
        js_log_emit("warn", o);
    }
    st = js_audit_open(&opts, &d->audit, err);
    free(pem);
    return st;
}

static json_t *policy_detail(const js_policy *p, const char *path)
{
    return json_pack("{s:s, s:s, s:b}", "path", path, "sha256", js_policy_hash_hex(p), "incident",
                     js_policy_incident(p));
}

static void free_frozen(void *f)
{
    js_frozen_free(f);
}

static void free_keyring(void *k)
{
    js_keyring_free(k);
}

/* ---- HTTP handlers (run on libmicrohttpd's threads) ---------------------------------- */

static char *http_jwks(void *ctx)
{
    daemon_state *d = ctx;
    js_snapshot *snap = js_snapshot_store_acquire(d->keys);
    const js_keyring *kr = js_snapshot_value(snap);
    char *out = kr != NULL ? strdup(js_keyring_jwks(kr)) : NULL;
    js_snapshot_release(snap);
    return out;
}

/* Signs a probe with the audit key (never a JWT key) on the health
 * session; the result is cached for a second so probes cannot load the HSM. */
static bool hsm_healthy(daemon_state *d, char *why, size_t cap)
{
    pthread_mutex_lock(&d->health_mu);
    int64_t now = (int64_t)time(NULL);
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

static js_status start_http(daemon_state *d, js_err *err)
{
    if (d->cfg->http_listen == NULL)
        return JS_OK;
    JS_GUARD(js_hsm_session_open(d->hsm, &d->health_session, err));
    js_http_options o = {
        .listen = d->cfg->http_listen,
        .tls_cert_file = d->cfg->http_tls_cert,
        .tls_key_file = d->cfg->http_tls_key,
        .jwks_max_age = (unsigned)d->cfg->http_jwks_max_age,
        .max_connections = d->http_max_connections,
    };
    js_http_handlers h = {http_jwks, http_health, http_metrics, d};
    JS_GUARD(js_http_start(&o, &h, &d->http, err));
    json_t *lo = json_pack("{s:s, s:s, s:i}", "event", "http_listening", "address",
                           d->cfg->http_listen, "port", js_http_port(d->http));
    js_log_emit("info", lo);
    return JS_OK;
}

static js_status start_grpc(daemon_state *d, const char *listen, js_err *err)
{
    js_server_deps sdeps = {
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
    };
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

/* Drains and frees retired servers whose time has come (or all, at stop). */
static void retired_check(daemon_state *d, int64_t now_ms, bool all)
{
    for (size_t i = 0; i < RETIRED_SERVERS; i++) {
        if (d->retired[i].srv == NULL || (!all && now_ms < d->retired[i].drain_at_ms))
            continue;
        if (!d->retired[i].draining) {
            js_server_drain_begin(d->retired[i].srv);
            d->retired[i].draining = true;
        }
        bool force = all || now_ms >= d->retired[i].drain_at_ms + LISTENER_DRAIN_MS;
        if (all)
            js_server_shutdown(d->retired[i].srv, SHUTDOWN_GRACE_MS);
        else if (!js_server_drain_poll(d->retired[i].srv, force))
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
 * The gRPC listener died (accept4 failed, see g_listener). The connections
 * it accepted before are fine and are not cut: its listening sockets are shut
 * down (the kernel resets what was queued on them and routes new connections
 * only to the new listener), a new server listens on the same address, and
 * the old one keeps serving its connections until they end by themselves
 * (idle or age limits: clients then reconnect to the new listener without
 * failing a call); the flood's half-open connections time out of it
 * (handshake timeout). Retried every LISTENER_RETRY_MS until it works.
 */
static void listener_check(daemon_state *d, int64_t now_ms)
{
    retired_check(d, now_ms, false);
    if (!atomic_load(&g_listener.lost)) {
        /* Take the fd reserve back once descriptors are plentiful again: at
         * least as many left free afterwards as the reserve holds, so taking
         * it back never starves the HSM or the audit log it protects. */
        size_t held = js_fdreserve_held(d->fd_reserve);
        size_t budget = js_fdreserve_budget(d->fd_reserve);
        long open = held < budget ? js_fd_open_count() : -1;
        if (open >= 0 && (unsigned long)open + 2 * (budget - held) + held <= d->fd_limit) {
            js_fdreserve_refill(d->fd_reserve);
            /* The watcher may have shed the listener meanwhile: hand it back. */
            if (atomic_load(&g_listener.lost))
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
    atomic_store(&g_listener.lost, false);
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

/* Writes the queued HSM events as audit records ("hsm"), once the log can
 * take them: a recovery is recorded as soon as checkpoints sign again. */
static void hsm_events_flush(daemon_state *d)
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

/* Logs when the audit file system crosses the disk watermark (auditlog.h
 * measures; /healthz and the metrics report it), so an operator hears of
 * it before a full disk stops all signing. */
static void disk_check(daemon_state *d)
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

/*
 * The fd watcher: gRPC 1.51 accepts connections until descriptors run out
 * and has no connection limit, so the signer keeps one here. Every
 * FD_WATCH_US it reads the lowest free descriptor; when the descriptors left
 * come within the HTTP server's unused share plus FD_MARGIN, it shuts the
 * gRPC listener down (connections already accepted keep working) and hands
 * the reserve back, so the HTTP server and the HSM always have theirs. The
 * main loop re-creates the listener (listener_check).
 */
static void *fd_watch_main(void *arg)
{
    daemon_state *d = arg;
    while (!atomic_load(&g_listener.watch_stop)) {
        struct timespec ts = {0, FD_WATCH_US * 1000L};
        nanosleep(&ts, NULL);
        if (atomic_load(&g_listener.lost))
            continue;
        js_http_stats hs;
        js_http_get_stats(d->http, &hs);
        unsigned long http_room = d->http != NULL && d->http_max_connections > hs.open
                                      ? d->http_max_connections - hs.open
                                      : 0;
        long lowest = js_fd_lowest_free();
        if (lowest < 0 || (unsigned long)lowest + http_room + FD_MARGIN < d->fd_limit)
            continue;
        if (atomic_exchange(&g_listener.lost, true))
            continue;
        int closed =
            js_fd_shutdown_listeners(atomic_load(&g_listener.port), js_http_listen_fd(d->http));
        js_fdreserve_release(d->fd_reserve);
        atomic_fetch_add(&d->listener_sheds, 1);
        json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:i}", "event", "grpc_listener_shed", "message",
                              "descriptors nearly exhausted: gRPC listener shut down, reserve "
                              "handed back to the HSM and audit log",
                              "lowest_free_fd", (json_int_t)lowest, "http_room",
                              (json_int_t)http_room, "sockets_shut", closed);
        js_log_emit("warn", o);
    }
    return NULL;
}

/* Raises the fd limit to the hard limit and holds the reserve. */
static js_status fd_setup(daemon_state *d, js_err *err)
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
    atomic_store(&g_listener.reserve, d->fd_reserve);
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "event", "fd_limit", "soft", (json_int_t)soft,
                  "hard", (json_int_t)hard, "reserved", (json_int_t)reserve, "http_connections",
                  (json_int_t)d->http_max_connections, "open", (json_int_t)js_fd_open_count());
    js_log_emit("info", o);
    return JS_OK;
}

static void fd_watch_stop(daemon_state *d)
{
    if (!d->fd_watch_started)
        return;
    atomic_store(&g_listener.watch_stop, true);
    pthread_join(d->fd_watch, NULL);
    d->fd_watch_started = false;
}

static void daemon_free(daemon_state *d)
{
    fd_watch_stop(d);
    js_http_stop(d->http);
    js_server_free(d->srv);
    for (size_t i = 0; i < RETIRED_SERVERS; i++)
        js_server_free(d->retired[i].srv);
    js_control_free(d->control);
    js_audit_close(d->audit);
    js_snapshot_store_free(d->frozen);
    js_service_free(d->svc);
    js_policy_store_free(d->policies);
    js_ratelimit_free(d->rl);
    js_denials_free(d->denials);
    js_denials_free(d->admin_rate);
    js_denials_free(d->quiet);
    js_snapshot_store_free(d->keys);
    js_keyvault_free(d->vault);
    js_hsm_key_free(d->audit_key);
    js_hsm_session_free(d->audit_session);
    for (size_t i = 0; i < d->n_audit_rotated; i++) {
        js_hsm_key_free(d->audit_rotated[i]->key);
        js_hsm_session_free(d->audit_rotated[i]->s);
        free(d->audit_rotated[i]);
    }
    js_hsm_session_free(d->session);
    js_hsm_session_free(d->health_session);
    js_metrics_free(d->metrics);
    js_hsm_free(d->hsm);
    js_config_free(d->cfg);
    atomic_store(&g_listener.reserve, NULL);
    js_fdreserve_free(d->fd_reserve);
}

static js_status daemon_start(daemon_state *d, js_err *err)
{
    JS_GUARD(fd_setup(d, err));
    JS_GUARD(open_hsm(d->config_path, &d->cfg, &d->hsm, err));
    js_hsm_set_observer(d->hsm, on_hsm_event, d);
    JS_GUARD(js_hsm_session_open(d->hsm, &d->session, err));
    JS_GUARD(js_metrics_new(&d->metrics, err));
    JS_GUARD(js_keyvault_new(d->hsm, d->session, &d->vault, err));
    JS_GUARD(js_snapshot_store_new(NULL, free_keyring, &d->keys, err));
    JS_GUARD(js_ratelimit_new(RATELIMIT_MAX_IDENTITIES, &d->rl, err));
    js_denials_options deny_opts = {
        .rate = (uint32_t)d->cfg->denials_per_second,
        .burst = (uint32_t)d->cfg->denials_burst,
        .global_rate = (uint32_t)d->cfg->denials_total_per_second,
        .global_burst = (uint32_t)d->cfg->denials_total_burst,
    };
    JS_GUARD(js_denials_new(&deny_opts, &d->denials, err));
    js_denials_options admin_opts = {.rate = JS_ADMIN_RATE, .burst = JS_ADMIN_BURST};
    JS_GUARD(js_denials_new(&admin_opts, &d->admin_rate, err));
    js_denials_options quiet_opts = {.rate = JS_JWKS_LOG_RATE, .burst = JS_JWKS_LOG_BURST};
    JS_GUARD(js_denials_new(&quiet_opts, &d->quiet, err));
    JS_GUARD(js_service_new(d->cfg, d->rl, NULL, NULL, &d->svc, err));

    js_policy *p = NULL;
    JS_GUARD(js_policy_load(d->cfg->policy_path, &p, err));
    js_status st = js_service_check_policy(d->svc, p, err);
    if (st != JS_OK) {
        js_policy_free(p);
        return st;
    }
    js_ratelimit_set_incident(d->rl, js_policy_incident(p));
    json_t *pdetail = policy_detail(p, d->cfg->policy_path);
    char issuer[512];
    snprintf(issuer, sizeof(issuer), "%s", js_policy_issuer(p));
    JS_GUARD(js_policy_store_new(p, &d->policies, err));

    /* Run-time state (incident mode, frozen callers, the audit key in
     * force) lives next to the configuration file, in STATE_DIR =
     * <config dir>/state. */
    const char *slash = strrchr(d->cfg->path, '/');
    int dirlen = slash != NULL ? (int)(slash - d->cfg->path) : 1;
    snprintf(d->state_dir, sizeof(d->state_dir), "%.*s/state", dirlen,
             slash != NULL ? d->cfg->path : ".");
    st = open_audit(d, issuer, err);
    if (st != JS_OK) {
        json_decref(pdetail);
        return st;
    }
    /* Version 1 of every configured key, found and self-tested in the HSM
     * (the vault keeps it for the keyring the control plane builds). */
    json_t *keys = json_array();
    for (size_t i = 0; i < d->cfg->nkeys; i++) {
        const js_key_config *kc = &d->cfg->keys[i];
        const char *kid = NULL;
        const js_hsm_key *hk = NULL;
        st = js_keyvault_get(d->vault, kc->label, kc->alg, &hk, &kid, err);
        if (st != JS_OK) {
            js_err_prefix(err, "key '%s' (label '%s'): ", kc->name, kc->label);
            json_decref(keys);
            json_decref(pdetail);
            return st;
        }
        log_key_usage(kc->name, hk);
        json_array_append_new(keys,
                              json_pack("{s:s, s:s, s:s, s:s}", "key", kc->name, "alg",
                                        js_alg_name(kc->alg), "label", kc->label, "kid", kid));
    }
    audit_lifecycle(d, "start", NULL, NULL,
                    json_pack("{s:s, s:o, s:b}", "version", "0.1.0", "keys", keys, "incident",
                              js_ratelimit_incident(d->rl)));
    audit_lifecycle(d, "policy", "load", NULL, pdetail);

    JS_GUARD(js_snapshot_store_new(NULL, free_frozen, &d->frozen, err));
    js_control_deps cdeps = {
        .cfg = d->cfg,
        .svc = d->svc,
        .rl = d->rl,
        .policies = d->policies,
        .frozen = d->frozen,
        .audit = d->audit,
        .state_dir = d->state_dir,
        .vault = d->vault,
        .keys = d->keys,
        .prepublish = d->cfg->key_prepublish,
        .leeway = d->cfg->key_leeway,
        .metrics = d->metrics,
        .rotate_audit = rotate_audit_key,
        .rotate_audit_ctx = d,
    };
    JS_GUARD(js_control_new(&cdeps, &d->control, err));
    JS_GUARD(start_grpc(d, NULL, err));
    JS_GUARD(start_http(d, err));
    atomic_store(&g_listener.port, js_server_port(d->srv));
    atomic_store(&g_listener.watch_stop, false);
    JS_ENSURE(pthread_create(&d->fd_watch, NULL, fd_watch_main, d) == 0, err, JS_EINTERNAL,
              JS_R_FD_WATCH, "cannot start the fd watcher thread");
    d->fd_watch_started = true;
    return JS_OK;
}

static int cmd_serve(const char *config_path, const char *accept_audit_loss)
{
    js_err err;
    js_err_clear(&err);
    daemon_state d;
    memset(&d, 0, sizeof(d));
    pthread_mutex_init(&d.health_mu, NULL);
    pthread_mutex_init(&d.hsm_ev_mu, NULL);
    d.config_path = config_path;
    d.accept_audit_loss = accept_audit_loss;
    int rc = 1;

    /* Block the signals we handle before any thread exists, so that every
     * thread inherits the mask and only sigwait() below receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    gpr_set_log_function(grpc_log_to_json);
    grpc_init();
    if (daemon_start(&d, &err) != JS_OK) {
        log_failure("startup_failed", &err);
        goto out;
    }

    js_snapshot *ksnap = js_snapshot_store_acquire(d.keys);
    const js_keyring *kr = js_snapshot_value(ksnap);
    for (size_t i = 0; i < js_keyring_count(kr); i++) {
        const js_key *k = js_keyring_at(kr, i);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "key_ready", "key", js_key_name(k),
                              "alg", js_alg_name(js_key_alg(k)), "kid", js_key_kid(k));
        js_log_emit("info", o);
    }
    js_snapshot_release(ksnap);
    char addr[300];
    const char *colon = strrchr(d.cfg->listen, ':');
    size_t hostlen = colon != NULL ? (size_t)(colon - d.cfg->listen) : strlen(d.cfg->listen);
    snprintf(addr, sizeof(addr), "%.*s:%d", (int)hostlen, d.cfg->listen, js_server_port(d.srv));
    json_t *o =
        json_pack("{s:s, s:s, s:i, s:i, s:s, s:b}", "event", "listening", "address", addr, "port",
                  js_server_port(d.srv), "workers", js_server_workers(d.srv), "token",
                  js_hsm_token_description(d.hsm), "incident", js_ratelimit_incident(d.rl));
    js_log_emit("info", o);

    int64_t last_tick_ms = mono_ms();
    for (;;) {
        /* A signal, or every 250 ms the listener check and once a second the
         * key schedule (keystate.h). */
        struct timespec wait = {0, 250 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &wait);
        int64_t now_ms = mono_ms();
        listener_check(&d, now_ms);
        disk_check(&d);
        hsm_events_flush(&d);
        grpc_log_flush(now_ms / 1000);
        if (now_ms - last_tick_ms >= 1000) {
            last_tick_ms = now_ms;
            js_control_tick(d.control);
        }
        if (sig < 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT) {
            json_t *so = json_pack("{s:s, s:s}", "event", "stopping", "signal",
                                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
            js_log_emit("info", so);
            break;
        }
        js_err cerr;
        js_err_clear(&cerr);
        /* Failures are logged and audited by the control plane itself. */
        if (sig == SIGHUP && js_control_reload_policy(d.control, "SIGHUP", NULL, &cerr) != JS_OK)
            continue;
        if (sig == SIGUSR1 && js_control_set_incident(d.control, !js_control_incident(d.control),
                                                      "SIGUSR1", "signal", &cerr) != JS_OK)
            log_failure("incident_switch_failed", &cerr);
    }
    /* In-flight calls finish first (allowed ones wait for their records),
     * then the stop record and the final checkpoint. */
    fd_watch_stop(&d);
    js_server_shutdown(d.srv, SHUTDOWN_GRACE_MS);
    retired_check(&d, mono_ms(), true);
    audit_lifecycle(&d, "stop", NULL, NULL, json_pack("{s:s}", "cause", "signal"));
    js_log_event("info", "stopped", "all in-flight calls answered");
    rc = 0;
out:
    daemon_free(&d);
    /* Not grpc_shutdown(): that may finish on a detached thread after main
     * returns, leaving gRPC objects (seen: TLS state) unreleased at exit. */
    grpc_shutdown_blocking();
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"audit-key", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"accept-audit-loss", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    if (argc == 3 && strcmp(argv[1], "check-policy") == 0)
        return cmd_check_policy(argv[2]);
    const char *config_path = NULL;
    const char *key_name = NULL;
    const char *accept_loss = NULL;
    int audit_key = 0;
    int keygen = 0;
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "keygen") == 0) {
        keygen = 1;
        first = 2;
    }
    optind = first;
    int c;
    while ((c = getopt_long(argc, argv, "c:k:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'k':
            key_name = optarg;
            break;
        case 'a':
            audit_key = 1;
            break;
        case 'L':
            accept_loss = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("jwt-signerd 0.1.0\n");
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    bool keygen_ok = keygen && ((key_name != NULL) != (audit_key != 0));
    bool serve_ok = !keygen && key_name == NULL && !audit_key;
    if (optind != argc || config_path == NULL || !(keygen_ok || serve_ok) ||
        (keygen && accept_loss != NULL)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (accept_loss != NULL) {
        /* It is written into the audit log and log lines: printable text only. */
        js_err err;
        if (js_text_check("--accept-audit-loss", accept_loss, strlen(accept_loss),
                          JS_AUDIT_ACCEPT_REASON_MAX, JS_EINVAL, JS_R_AUDIT_CONFIG,
                          &err) != JS_OK ||
            accept_loss[0] == '\0') {
            fprintf(stderr, "jwt-signerd: --accept-audit-loss needs a reason: %s\n",
                    accept_loss[0] == '\0' ? "it is empty" : err.msg);
            return EXIT_USAGE;
        }
    }
    return keygen ? cmd_keygen(config_path, key_name) : cmd_serve(config_path, accept_loss);
}
