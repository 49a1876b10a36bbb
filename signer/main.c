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
 *
 * This file is the wiring: arguments, start-up order, the main loop and
 * shutdown. The daemon's parts are the files next to it (daemon.h lists
 * them), each handed the daemon_state cmd_serve owns.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "clock.h"
#include "daemon.h"
#include "frozen.h"
#include "logline.h"
#include "policy.h"
#include "svcnotify.h"
#include "text.h"
#include "watchdog.h"

#define EXIT_USAGE 2
/* The whole stop, at most: the calls' grace (SHUTDOWN_GRACE_MS), then time
 * for the audit log to answer the records calls still wait for (durable or
 * failed), write the stop record and the closing checkpoint, and for gRPC
 * and the HSM to let go. Beyond it the process exits (shutdown_abandoned). */
#define SHUTDOWN_LIMIT_MS (SHUTDOWN_GRACE_MS + 20000)
/* Identities tracked by the rate limiter before they share overflow buckets. */
#define RATELIMIT_MAX_IDENTITIES 65536

static void usage(FILE *out)
{
    fputs("usage: jwt-signerd --config FILE [--accept-audit-loss REASON]\n"
          "       jwt-signerd keygen --config FILE (--key NAME | --audit-key)\n"
          "       jwt-signerd check-policy FILE\n"
          "       jwt-signerd --help | --version\n"
          "(short forms: -c FILE for --config, -k NAME for --key, -h, -V)\n"
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
 * The one mutable global, because gRPC's log callback takes no context
 * argument (gpr_set_log_function(gpr_log_func), no user pointer): the state
 * it shares with the listener code (listener_flags, daemon.h). gRPC 1.51's
 * listener stops for good after accept4 fails (EMFILE, ENFILE, ENOBUFS...)
 * and says so only in a log line; the callback hands the reserved
 * descriptors back at once and flags the listener for re-creation by the
 * main loop. Everything else reaches it through daemon_state.lf.
 */
static listener_flags g_listener;

static void grpc_log_to_json(gpr_log_func_args *args)
{
    listener_grpc_log(&g_listener, args);
}

/*
 * A stop that cannot finish: something it waits for (gRPC's drain, an audit
 * record or checkpoint behind a hung disk or HSM) will not come. Say what was
 * abandoned and exit at once, freeing nothing a stuck thread may still use.
 * Nothing promised is lost: a token whose record is not durable was never
 * released, and the audit log's torn tail, if any, is recovered at the next
 * start (FORMAT.md §8).
 */
static _Noreturn void exit_abandoned(const char *stage, int64_t elapsed_ms, int64_t limit_ms)
{
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:I, s:s}", "event", "shutdown_abandoned", "stage", stage,
                  "elapsed_ms", (json_int_t)elapsed_ms, "limit_ms", (json_int_t)limit_ms, "message",
                  "shutdown did not finish in time: exiting without waiting for the rest");
    js_log_emit("error", o);
    _exit(1);
}

/* The stop ran past SHUTDOWN_LIMIT_MS (js_watchdog_fn). */
static void shutdown_abandoned(void *ctx, const char *stage, int64_t elapsed_ms)
{
    (void)ctx;
    exit_abandoned(stage, elapsed_ms, SHUTDOWN_LIMIT_MS);
}

void log_failure(const char *event, const js_err *err)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "event", event, "reason", js_reason_name(err->reason),
                          "message", err->msg);
    js_log_emit("error", o);
}

/* Loads config, reads the PIN, opens and logs into the token; the PIN is
 * wiped before this returns, whatever happens. */
js_status open_hsm(const char *config_path, js_config **cfg, js_hsm **hsm, js_err *err)
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

static void daemon_free(daemon_state *d)
{
    fd_watch_stop(d);
    js_http_stop(d->http);
    health_probe_stop(d);
    js_server_free(d->srv);
    js_server_free(d->k8s);
    for (size_t i = 0; i < RETIRED_SERVERS; i++)
        js_server_free(d->retired[i].srv);
    js_control_free(d->control);
    js_tokindex_free(d->index);
    /* A writer stuck in the disk or the HSM still uses the audit session,
     * its key and the metrics: then nothing more may be freed. */
    int64_t close_ms = js_mono_ms();
    bool closed = js_audit_close(d->audit);
    /* The stop may have made a pending audit key rotation durable: finished
     * (or said to be lost) even when the writer is left stuck, since the
     * count it reads holds durable rotations only. */
    audit_key_after_close(d);
    if (!closed)
        exit_abandoned("closing the audit log: its writer is stuck in the disk or the HSM",
                       js_mono_ms() - close_ms, JS_AUDIT_CLOSE_WAIT_MS);
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
        free(d->audit_rotated[i]->by);
        free(d->audit_rotated[i]);
    }
    js_hsm_session_free(d->session);
    js_hsm_session_free(d->health_session);
    js_metrics_free(d->metrics);
    js_hsm_free(d->hsm);
    js_config_free(d->cfg);
    atomic_store(&d->lf->reserve, NULL);
    js_fdreserve_free(d->fd_reserve);
}

/*
 * The issued-token index (tokindex.h), rebuilt from the audit log: every
 * token still live and every revocation still in force, so a restart
 * changes no introspection answer. Before any server starts.
 */
static js_status load_token_index(daemon_state *d, js_err *err)
{
    if (d->index == NULL)
        return JS_OK;
    int64_t t0 = js_mono_ms();
    size_t loaded = 0;
    JS_GUARD(js_tokindex_load_audit(d->index, d->cfg->audit_dir,
                                    (int64_t)time(NULL) - d->cfg->introspection_leeway,
                                    js_control_token_horizon(d->control), &loaded, err));
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:I, s:I}", "event", "token_index_loaded", "tokens", (json_int_t)loaded,
        "revocations", (json_int_t)js_tokindex_revocation_count(d->index), "max_tokens",
        (json_int_t)d->cfg->introspection_max_tokens, "ms", (json_int_t)(js_mono_ms() - t0));
    js_log_emit("info", o);
    return JS_OK;
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

    /* Run-time state (incident mode, frozen callers, key versions, the
     * audit key in force): config state_dir, default <config dir>/state. */
    JS_ENSURE(strlen(d->cfg->state_dir) < sizeof(d->state_dir), err, JS_ECONFIG, JS_R_CONFIG_PATH,
              "state_dir is longer than %zu bytes", sizeof(d->state_dir) - 1);
    snprintf(d->state_dir, sizeof(d->state_dir), "%s", d->cfg->state_dir);
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
                    json_pack("{s:s, s:o, s:b}", "version", JS_VERSION, "keys", keys, "incident",
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
    if (d->cfg->introspection)
        JS_GUARD(js_tokindex_new(d->cfg->introspection_max_tokens, &d->index, err));
    cdeps.index = d->index;
    JS_GUARD(js_control_new(&cdeps, &d->control, err));
    JS_GUARD(load_token_index(d, err));
    JS_GUARD(start_grpc(d, NULL, err));
    JS_GUARD(start_k8s(d, err));
    JS_GUARD(start_http(d, err));
    return fd_watch_start(d, err);
}

static int cmd_serve(const char *config_path, const char *accept_audit_loss)
{
    js_err err;
    js_err_clear(&err);
    daemon_state d;
    memset(&d, 0, sizeof(d));
    pthread_mutex_init(&d.health_mu, NULL);
    pthread_mutex_init(&d.hsm_ev_mu, NULL);
    pthread_mutex_init(&d.audit_rot_mu, NULL);
    d.lf = &g_listener;
    d.config_path = config_path;
    d.accept_audit_loss = accept_audit_loss;
    js_watchdog *stop_watch = NULL; /* bounds the stop once SIGTERM/SIGINT came */
    js_svcnotify *notify = NULL;
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
    notify = js_svcnotify_new(10000);
    if (notify == NULL) {
        js_log_event("error", "startup_failed", "out of memory");
        goto out;
    }
    js_svcnotify_starting(notify);
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
    size_t nkeys = js_keyring_count(kr);
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
    /* Type=notify: systemd starts what depends on us only now, when every
     * listener is bound, every key self-tested and the audit log open. */
    char status[400];
    snprintf(status, sizeof(status), "serving on %s, %zu keys%s", addr, nkeys,
             js_ratelimit_incident(d.rl) ? ", incident mode" : "");
    js_svcnotify_ready(notify, status);

    int64_t last_tick_ms = js_mono_ms();
    for (;;) {
        /* A signal, or every 250 ms the listener check and once a second the
         * key schedule (keystate.h). */
        struct timespec wait = {0, 250 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &wait);
        int64_t now_ms = js_mono_ms();
        listener_check(&d, now_ms);
        disk_check(&d);
        hsm_events_flush(&d);
        listener_grpc_log_flush(d.lf, now_ms / 1000);
        js_svcnotify_tick(notify, now_ms);
        if (now_ms - last_tick_ms >= 1000) {
            last_tick_ms = now_ms;
            js_control_tick(d.control);
            audit_key_check_pending(&d);
            if (d.index != NULL)
                js_tokindex_sweep(d.index, (int64_t)time(NULL) - d.cfg->introspection_leeway);
        }
        if (sig < 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT) {
            json_t *so = json_pack("{s:s, s:s}", "event", "stopping", "signal",
                                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
            js_log_emit("info", so);
            js_svcnotify_stopping(notify);
            break;
        }
        js_err cerr;
        js_err_clear(&cerr);
        /* Failures are logged and audited by the control plane itself. */
        if (sig == SIGHUP) {
            /* systemctl reload: RELOADING until the policy in force is known
             * again (a refused file keeps the old one: still ready). */
            js_svcnotify_reloading(notify);
            js_status rs = js_control_reload_policy(d.control, "SIGHUP", NULL, &cerr);
            js_svcnotify_ready(notify, rs == JS_OK
                                           ? "serving; policy reloaded"
                                           : "serving; policy reload refused, old policy in force");
            continue;
        }
        if (sig == SIGUSR1 && js_control_set_incident(d.control, !js_control_incident(d.control),
                                                      "SIGUSR1", "signal", &cerr) != JS_OK)
            log_failure("incident_switch_failed", &cerr);
    }
    /* In-flight calls finish first (allowed ones wait for their records),
     * then the stop record and the final checkpoint. The current server and
     * the ones a re-created listener replaced drain together, within one
     * grace; the whole stop within SHUTDOWN_LIMIT_MS. */
    stop_watch =
        js_watchdog_start(SHUTDOWN_LIMIT_MS, "stopping the fd watcher", shutdown_abandoned, NULL);
    if (stop_watch == NULL)
        js_log_event("warn", "shutdown_unbounded",
                     "cannot start the shutdown watchdog: the stop has no upper bound");
    fd_watch_stop(&d);
    js_watchdog_stage(stop_watch, "answering in-flight calls and their audit records");
    int64_t grace_end_ms = js_mono_ms() + SHUTDOWN_GRACE_MS;
    retired_drain_all(&d);
    /* Both servers drain together: GOAWAY to kube-apiserver too. */
    js_server_drain_begin(d.k8s);
    js_server_shutdown(d.srv, SHUTDOWN_GRACE_MS);
    {
        int64_t left = grace_end_ms - js_mono_ms();
        js_server_shutdown(d.k8s, left > 0 ? (int)left : 0);
    }
    js_watchdog_stage(stop_watch, "answering in-flight calls of replaced listeners");
    retired_finish_all(&d, grace_end_ms);
    js_watchdog_stage(stop_watch, "writing the stop audit record");
    audit_lifecycle(&d, "stop", NULL, NULL, json_pack("{s:s}", "cause", "signal"));
    js_log_event("info", "stopped", "all in-flight calls answered");
    js_watchdog_stage(stop_watch, "closing the audit log and releasing the HSM");
    rc = 0;
out:
    daemon_free(&d);
    js_watchdog_stage(stop_watch, "shutting gRPC down");
    /* Not grpc_shutdown(): that may finish on a detached thread after main
     * returns, leaving gRPC objects (seen: TLS state) unreleased at exit. */
    grpc_shutdown_blocking();
    js_watchdog_stop(stop_watch);
    js_svcnotify_free(notify);
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
    if (argc == 3 && strcmp(argv[1], "check-policy") == 0) {
        if (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        return cmd_check_policy(argv[2]);
    }
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
            printf("jwt-signerd %s\n", JS_VERSION);
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
