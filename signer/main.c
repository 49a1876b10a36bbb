/*
 * main.c - jwt-signerd: the signing proxy daemon, and its keygen subcommand.
 *
 *   jwt-signerd --config FILE                 serve until SIGTERM/SIGINT
 *   jwt-signerd keygen --config FILE --key NAME
 *                                             generate NAME's key pair in the HSM
 *
 * Start-up is all-or-nothing: configuration, PIN, token login, every key
 * found and self-tested, port bound — or exit 1 with a message that says
 * what and why. Signals are blocked in every thread and taken synchronously
 * here with sigwait(), so no handler runs inside gRPC or PKCS#11 code.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "config.h"
#include "hsm.h"
#include "jwk.h"
#include "keyring.h"
#include "logline.h"
#include "server.h"
#include "service.h"

#define EXIT_USAGE 2
/* How long in-flight calls get to finish after SIGTERM. */
#define SHUTDOWN_GRACE_MS 10000

static void usage(FILE *out)
{
    fputs("usage: jwt-signerd --config FILE\n"
          "       jwt-signerd keygen --config FILE --key NAME\n"
          "       jwt-signerd --help | --version\n"
          "\n"
          "Serves jwtsigner.v1.Signer over mutually authenticated gRPC and signs JWTs\n"
          "with keys held in a PKCS#11 token. Logs are JSON lines on stderr.\n"
          "SIGTERM/SIGINT: stop accepting, finish in-flight calls, exit 0.\n"
          "\n"
          "keygen generates the key pair named NAME in the configuration (its label and\n"
          "alg) inside the token: sensitive, non-extractable. It refuses to overwrite an\n"
          "existing key with the same label, and prints the new key's public JWK.\n",
          out);
}

/* gRPC's own diagnostics (e.g. a client's failed TLS handshake) become JSON
 * lines like ours, so the stderr stream stays machine-readable. */
static void grpc_log_to_json(gpr_log_func_args *args)
{
    const char *level = args->severity == GPR_LOG_SEVERITY_ERROR ? "warn" : "debug";
    char where[256];
    snprintf(where, sizeof(where), "%s:%d", args->file != NULL ? args->file : "?", args->line);
    json_t *o = json_pack("{s:s, s:s, s:s}", "event", "grpc", "message",
                          args->message != NULL ? args->message : "", "source", where);
    js_log_emit(level, o);
}

static void log_failure(const char *event, const js_err *err)
{
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "event", event, "reason", err->reason, "message", err->msg);
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
    const js_key_config *kc = NULL;
    if (st == JS_OK) {
        kc = js_config_find_key(cfg, key_name);
        if (kc == NULL)
            st = js_err_set(&err, JS_ECONFIG, "keygen.unknown_key", "no key named '%s' in %s",
                            key_name, config_path);
    }
    if (st == JS_OK)
        st = js_hsm_session_open(hsm, &s, &err);
    if (st == JS_OK)
        st = js_hsm_keygen(hsm, s, kc->label, kc->alg, &err);
    if (st == JS_OK)
        st = js_hsm_key_find(hsm, s, kc->label, kc->alg, &key, &err);
    char kid[JWK_KID_LEN + 1] = "";
    if (st == JS_OK)
        st = jwk_from_pkey(js_hsm_key_public(key), kc->alg, NULL, &jwk, &err);
    if (st == JS_OK)
        st = jwk_thumbprint(jwk, kid, &err);
    if (st == JS_OK) {
        json_object_set_new(jwk, "kid", json_string(kid));
        char *text = json_dumps(jwk, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", text != NULL ? text : "{}");
        free(text);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "keygen", "key", kc->name, "label",
                              kc->label, "kid", kid);
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

static int cmd_serve(const char *config_path)
{
    js_err err;
    js_err_clear(&err);
    js_config *cfg = NULL;
    js_hsm *hsm = NULL;
    js_hsm_session *s = NULL;
    js_keyring *kr = NULL;
    js_service *svc = NULL;
    js_server *srv = NULL;
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
    js_status st = open_hsm(config_path, &cfg, &hsm, &err);
    if (st == JS_OK)
        st = js_hsm_session_open(hsm, &s, &err);
    if (st == JS_OK)
        st = js_keyring_load(cfg, hsm, s, &kr, &err);
    if (st == JS_OK)
        st = js_service_new(cfg, kr, NULL, NULL, &svc, &err);
    if (st == JS_OK)
        st = js_server_new(cfg, svc, hsm, &srv, &err);
    if (st == JS_OK)
        st = js_server_start(srv, &err);
    if (st != JS_OK) {
        log_failure("startup_failed", &err);
        goto out;
    }

    for (size_t i = 0; i < js_keyring_count(kr); i++) {
        const js_key *k = js_keyring_at(kr, i);
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "key_ready", "key", js_key_name(k),
                              "alg", js_alg_name(js_key_alg(k)), "kid", js_key_kid(k));
        js_log_emit("info", o);
    }
    char addr[300];
    const char *colon = strrchr(cfg->listen, ':');
    size_t hostlen = colon != NULL ? (size_t)(colon - cfg->listen) : strlen(cfg->listen);
    snprintf(addr, sizeof(addr), "%.*s:%d", (int)hostlen, cfg->listen, js_server_port(srv));
    json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:s}", "event", "listening", "address", addr,
                          "port", js_server_port(srv), "workers", js_server_workers(srv), "token",
                          js_hsm_token_description(hsm));
    js_log_emit("info", o);

    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT) {
            json_t *so = json_pack("{s:s, s:s}", "event", "stopping", "signal",
                                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
            js_log_emit("info", so);
            break;
        }
        /* SIGHUP (policy reload) and SIGUSR1 (incident mode) come with the
         * policy engine; until then they are logged and ignored. */
        js_log_event("warn", "signal_ignored",
                     sig == SIGHUP ? "SIGHUP: nothing to reload yet"
                                   : "SIGUSR1: no incident mode yet");
    }
    js_server_shutdown(srv, SHUTDOWN_GRACE_MS);
    js_log_event("info", "stopped", "all in-flight calls answered");
    rc = 0;
out:
    js_server_free(srv);
    js_service_free(svc);
    js_keyring_free(kr);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
    js_config_free(cfg);
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
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    const char *key_name = NULL;
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
    if (optind != argc || config_path == NULL || (keygen && key_name == NULL) ||
        (!keygen && key_name != NULL)) {
        usage(stderr);
        return EXIT_USAGE;
    }
    return keygen ? cmd_keygen(config_path, key_name) : cmd_serve(config_path);
}
