/*
 * test_config.c - unit tests for jwt-signerd's configuration (signer/core/config.h):
 * a full and a minimal valid file, a table of invalid files each checked for
 * its reason, key path and line (including the keys that moved to the policy
 * file and the audit mapping), js_parse_duration, and js_config_read_pin from
 * a file and from the environment (errors must never carry the PIN). The
 * externaljwt section (Kubernetes' ExternalJWTSigner socket): defaults, the
 * socket path resolved and bounded by sun_path, owner and group by name or
 * number, and a mode that may not grant more than 0660.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "discovery.h"
#include "duration.h"

/* A temporary directory per test group; everything written goes there. */
typedef struct fixture {
    char dir[64];
    char real_dir[PATH_MAX]; /* realpath of dir: config paths resolve against it */
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_config.XXXXXX");
    if (mkdtemp(fx->dir) == NULL || realpath(fx->dir, fx->real_dir) == NULL) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static const char *const k_files[] = {"config.yaml", "pin.txt", "case.yaml"};

static int teardown(void **state)
{
    fixture *fx = *state;
    for (size_t i = 0; i < sizeof(k_files) / sizeof(k_files[0]); i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", fx->dir, k_files[i]);
        unlink(path);
    }
    int rc = rmdir(fx->dir);
    free(fx);
    return rc;
}

/* Writes text to dir/name with mode and returns the path in buf. */
static const char *write_file(const fixture *fx, const char *name, const char *text, mode_t mode,
                              char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", fx->dir, name);
    FILE *f = fopen(buf, "wb");
    assert_non_null(f);
    size_t n = strlen(text);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(buf, mode), 0);
    return buf;
}

static js_config *load_ok(const fixture *fx, const char *text)
{
    char path[PATH_MAX];
    js_config *cfg = NULL;
    js_err err = {0};
    write_file(fx, "config.yaml", text, 0600, path, sizeof(path));
    js_status st = js_config_load(path, &cfg, &err);
    if (st != JS_OK)
        fail_msg("unexpected error: %s (%s)", err.msg, js_reason_name(err.reason));
    assert_non_null(cfg);
    return cfg;
}

static void assert_in_dir(const fixture *fx, const char *got, const char *name)
{
    char want[PATH_MAX * 2];
    snprintf(want, sizeof(want), "%s/%s", fx->real_dir, name);
    assert_string_equal(got, want);
}

/* ---- valid files ------------------------------------------------------------------- */

static const char k_full[] = "# jwt-signerd\n"
                             "listen: \"[::1]:0\"\n"
                             "tls:\n"
                             "  cert: certs/server.crt\n"
                             "  key: /etc/jwt-signer/server.key\n"
                             "  client_ca: ca.crt\n"
                             "workers: 3\n"
                             "hsm:\n"
                             "  module: /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so\n"
                             "  token: \"pkcs11:token=jwt-signer-dev\"\n"
                             "  pin_file: pin.txt\n"
                             "keys:\n"
                             "  - name: dev-es256\n"
                             "    label: jwt-signer-dev-es256\n"
                             "    alg: ES256\n"
                             "  - name: Other.key_2\n"
                             "    label: other label\n"
                             "    alg: ES256\n"
                             "default_key: Other.key_2\n"
                             "issuer: \"https://issuer.example\"\n"
                             "policy: policies/prod.yaml\n"
                             "audit:\n"
                             "  dir: /var/lib/jwt-signer/audit\n"
                             "  key_label: jwt-signer-audit\n"
                             "  origin: \"jwt-signer.example/prod\"\n"
                             "  checkpoint_interval: 2s\n"
                             "  checkpoint_records: 500\n"
                             "  heartbeat: 1m\n"
                             "  segment_bytes: 65536\n"
                             "  fsync: false\n";

static void test_full_config(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, k_full);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/config.yaml", fx->dir);
    assert_string_equal(cfg->path, path);
    assert_string_equal(cfg->listen, "[::1]:0");
    assert_in_dir(fx, cfg->tls_cert, "certs/server.crt");
    assert_string_equal(cfg->tls_key, "/etc/jwt-signer/server.key");
    assert_in_dir(fx, cfg->tls_client_ca, "ca.crt");
    assert_int_equal(cfg->workers, 3);
    assert_string_equal(cfg->hsm_module, "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so");
    assert_string_equal(cfg->hsm_token, "pkcs11:token=jwt-signer-dev");
    assert_in_dir(fx, cfg->pin_file, "pin.txt");
    assert_null(cfg->pin_env);
    assert_int_equal(cfg->nkeys, 2);
    assert_string_equal(cfg->keys[0].name, "dev-es256");
    assert_string_equal(cfg->keys[0].label, "jwt-signer-dev-es256");
    assert_int_equal(cfg->keys[0].alg, JS_ALG_ES256);
    assert_string_equal(cfg->keys[1].name, "Other.key_2");
    assert_string_equal(cfg->keys[1].label, "other label");
    assert_string_equal(cfg->default_key, "Other.key_2");
    assert_ptr_equal(js_config_find_key(cfg, "Other.key_2"), &cfg->keys[1]);
    assert_null(js_config_find_key(cfg, "other.key_2"));
    assert_null(js_config_find_key(NULL, "x"));
    assert_string_equal(cfg->issuer, "https://issuer.example");
    assert_in_dir(fx, cfg->policy_path, "policies/prod.yaml");
    assert_string_equal(cfg->audit_dir, "/var/lib/jwt-signer/audit");
    assert_string_equal(cfg->audit_key_label, "jwt-signer-audit");
    assert_string_equal(cfg->audit_origin, "jwt-signer.example/prod");
    assert_int_equal(cfg->audit_checkpoint_interval_ms, 2000);
    assert_int_equal(cfg->audit_checkpoint_records, 500);
    assert_int_equal(cfg->audit_heartbeat_ms, 60000);
    assert_int_equal(cfg->audit_segment_bytes, 65536);
    assert_false(cfg->audit_fsync);
    js_config_free(cfg);
    js_config_free(NULL);
}

#define L_LISTEN "listen: \"127.0.0.1:8443\"\n"                                       /* 1 */
#define L_TLS    "tls:\n  cert: server.crt\n  key: server.key\n  client_ca: ca.crt\n" /* 2-5 */
#define L_HSM_HEAD                                                                                 \
    "hsm:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  token: \"pkcs11:token=dev\"\n" /* 6-8 */
#define L_HSM    L_HSM_HEAD "  pin_env: JWT_SIGNER_PIN\n"                              /* 9 */
#define L_KEYS   "keys:\n  - name: dev-es256\n    label: jwt-signer-dev-es256\n    alg: ES256\n"
#define L_POLICY "policy: policy.yaml\n"                                 /* 14 */
#define L_AUDIT  "audit:\n  dir: audit\n  key_label: jwt-signer-audit\n" /* 15-17 */
#define L_TAIL   L_POLICY L_AUDIT                                        /* 14-17 */
/* 17 lines, no issuer; text appended with two spaces of indent continues audit. */
#define MINIMAL  L_LISTEN L_TLS L_HSM L_KEYS L_TAIL
#define L_ISSUER "issuer: \"https://issuer.example\"\n"

static void test_minimal_config_defaults(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, MINIMAL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long want = cpus < 1 ? 1 : cpus > JS_CONFIG_MAX_WORKERS ? JS_CONFIG_MAX_WORKERS : cpus;
    assert_int_equal(cfg->workers, want);
    assert_string_equal(cfg->default_key, "dev-es256");
    assert_null(cfg->pin_file);
    assert_string_equal(cfg->pin_env, "JWT_SIGNER_PIN");
    assert_string_equal(cfg->hsm_module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_null(cfg->issuer); /* optional: the policy file may set it */
    assert_in_dir(fx, cfg->policy_path, "policy.yaml");
    assert_in_dir(fx, cfg->audit_dir, "audit"); /* need not exist */
    assert_in_dir(fx, cfg->state_dir, "state"); /* default: next to the config */
    assert_string_equal(cfg->audit_key_label, "jwt-signer-audit");
    assert_null(cfg->audit_origin);
    assert_int_equal(cfg->audit_checkpoint_interval_ms, 1000);
    assert_int_equal(cfg->audit_checkpoint_records, 1000);
    assert_int_equal(cfg->audit_heartbeat_ms, 1000);
    assert_int_equal(cfg->audit_segment_bytes, 64 * 1024 * 1024);
    assert_true(cfg->audit_fsync);
    js_config_free(cfg);

    /* workers: 0 means "one per CPU"; the heartbeat follows the interval; upper bounds. */
    cfg = load_ok(fx, L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER L_POLICY
                  "audit:\n  dir: /srv/audit/\n  key_label: \"audit key\"\n"
                  "  checkpoint_interval: 5m\n  checkpoint_records: 1000000\n"
                  "  segment_bytes: 1099511627776\n  fsync: true\n"
                  "  origin: \"~ origin with spaces and punctuation!\"\n"
                  "workers: 0\n");
    assert_int_equal(cfg->workers, want);
    assert_string_equal(cfg->issuer, "https://issuer.example");
    assert_string_equal(cfg->audit_dir, "/srv/audit/");
    assert_string_equal(cfg->audit_key_label, "audit key");
    assert_string_equal(cfg->audit_origin, "~ origin with spaces and punctuation!");
    assert_int_equal(cfg->audit_checkpoint_interval_ms, 300000);
    assert_int_equal(cfg->audit_heartbeat_ms, 300000);
    assert_int_equal(cfg->audit_checkpoint_records, 1000000);
    assert_true(cfg->audit_segment_bytes == (UINT64_C(1) << 40));
    assert_true(cfg->audit_fsync);
    js_config_free(cfg);

    /* A heartbeat equal to the interval; the audit key label is compared exactly. */
    cfg = load_ok(fx, L_TLS L_HSM L_KEYS L_POLICY
                  "audit:\n  dir: a\n  key_label: JWT-SIGNER-DEV-ES256\n"
                  "  checkpoint_interval: 1h\n  heartbeat: 60m\n  checkpoint_records: 1\n"
                  "listen: \"localhost:65535\"\n"
                  "workers: 256\n");
    assert_int_equal(cfg->workers, JS_CONFIG_MAX_WORKERS);
    assert_string_equal(cfg->listen, "localhost:65535");
    assert_int_equal(cfg->audit_checkpoint_interval_ms, 3600000);
    assert_int_equal(cfg->audit_heartbeat_ms, 3600000);
    assert_int_equal(cfg->audit_checkpoint_records, 1);
    js_config_free(cfg);
}

/* state_dir: relative to the config's directory, or absolute (a packaged
 * install keeps state under /var/lib, the config directory read-only). */
static void test_state_dir(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, MINIMAL "state_dir: run/state\n");
    assert_in_dir(fx, cfg->state_dir, "run/state");
    js_config_free(cfg);
    cfg = load_ok(fx, MINIMAL "state_dir: /var/lib/jwt-signer/state\n");
    assert_string_equal(cfg->state_dir, "/var/lib/jwt-signer/state");
    js_config_free(cfg);
}

/* Every algorithm is accepted; bits (RS256/PS256 only) defaults to 0, meaning 2048. */
static void test_all_algs_and_bits(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, L_LISTEN L_TLS L_HSM
                             "keys:\n"
                             "  - {name: es256, label: l1, alg: ES256}\n"
                             "  - {name: es384, label: l2, alg: ES384}\n"
                             "  - {name: rs256, label: l3, alg: RS256}\n"
                             "  - {name: rs256-3072, label: l4, alg: RS256, bits: 3072}\n"
                             "  - {name: ps256, label: l5, alg: PS256, bits: 2048}\n"
                             "  - {name: ps256-3072, label: l6, alg: PS256, bits: 3072}\n"
                             "  - {name: eddsa, label: l7, alg: EdDSA}\n" L_ISSUER L_TAIL);
    static const struct {
        js_alg alg;
        unsigned bits;
    } want[] = {{JS_ALG_ES256, 0},    {JS_ALG_ES384, 0},    {JS_ALG_RS256, 0}, {JS_ALG_RS256, 3072},
                {JS_ALG_PS256, 2048}, {JS_ALG_PS256, 3072}, {JS_ALG_EDDSA, 0}};
    assert_int_equal(cfg->nkeys, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < cfg->nkeys; i++) {
        assert_int_equal(cfg->keys[i].alg, want[i].alg);
        assert_int_equal(cfg->keys[i].bits, want[i].bits);
        assert_true(js_alg_supported(want[i].alg));
    }
    js_config_free(cfg);
}

/* A config loaded by a relative path still yields absolute paths. */
static void test_relative_config_path(void **state)
{
    const fixture *fx = *state;
    char path[PATH_MAX], cwd[PATH_MAX];
    write_file(fx, "config.yaml", MINIMAL, 0600, path, sizeof(path));
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(fx->dir), 0);
    js_config *cfg = NULL;
    js_err err = {0};
    js_status st = js_config_load("config.yaml", &cfg, &err);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(st, JS_OK);
    assert_in_dir(fx, cfg->tls_cert, "server.crt");
    assert_string_equal(cfg->path, "config.yaml");
    js_config_free(cfg);
}

/* ---- invalid files ----------------------------------------------------------------- */

#define KEY_ITEM(name, alg) "  - name: " name "\n    label: l\n    alg: " alg "\n"
#define L_HTTP              "http:\n  listen: \"127.0.0.1:0\"\n" /* 18-19 */
#define L_EXTJWT            "externaljwt:\n  socket: ext.sock\n" /* 18-19 */
#define JWKS_URI_WANT                                                                              \
    "http.jwks_uri: must be an absolute http:// or https:// URL of 1..2048 printable ASCII "       \
    "characters, without spaces or a fragment"

static const struct {
    const char *name;
    const char *text;
    const char *reason;
    size_t line;        /* 0: the message has no line */
    const char *want;   /* must appear right after "FILE:LINE: " */
    const char *absent; /* must not appear anywhere in the message (or NULL) */
} k_invalid[] = {
    {"unknown top-level key", MINIMAL "bogus: 1\n", "config.unknown_key", 18,
     "unknown key 'bogus' (allowed: listen, tls, workers, hsm, keys, default_key, issuer, "
     "policy, audit, http, key_lifecycle, limits, externaljwt, introspection, state_dir)",
     NULL},
    {"unknown nested key",
     L_LISTEN "tls:\n  cert: a\n  key: b\n  client_ca: c\n  extra: d\n" L_HSM L_KEYS L_TAIL,
     "config.unknown_key", 6, "tls: unknown key 'extra' (allowed: cert, key, client_ca)", NULL},
    {"unknown key in a key entry",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "ES256") "    kid: x\n" L_TAIL,
     "config.unknown_key", 14, "keys[0]: unknown key 'kid'", NULL},
    {"missing listen", L_TLS L_HSM L_KEYS L_TAIL, "config.missing_key", 1,
     "listen: required key is missing", NULL},
    {"missing tls.client_ca", L_LISTEN "tls:\n  cert: a\n  key: b\n" L_HSM L_KEYS L_TAIL,
     "config.missing_key", 3, "tls.client_ca: required key is missing", NULL},
    {"missing policy", L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER L_AUDIT, "config.missing_key", 1,
     "policy: required key is missing", NULL},
    {"missing audit", L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER L_POLICY, "config.missing_key", 1,
     "audit: required key is missing", NULL},
    {"port too large", L_TLS L_HSM L_KEYS L_TAIL "listen: \"127.0.0.1:65536\"\n", "config.listen",
     17, "listen: the port must be a number 0..65535", NULL},
    {"no port", L_TLS L_HSM L_KEYS L_TAIL "listen: localhost\n", "config.listen", 17,
     "listen: expected host:port", NULL},
    {"port not numeric", L_TLS L_HSM L_KEYS L_TAIL "listen: \"host:http\"\n", "config.listen", 17,
     "listen: the port must be", NULL},
    {"negative port", L_TLS L_HSM L_KEYS L_TAIL "listen: \"host:-1\"\n", "config.listen", 17,
     "listen: the port must be", NULL},
    {"unbracketed IPv6", L_TLS L_HSM L_KEYS L_TAIL "listen: \"::1:8443\"\n", "config.listen", 17,
     "listen: an IPv6 address must be in brackets", NULL},
    {"empty host", L_TLS L_HSM L_KEYS L_TAIL "listen: \":8443\"\n", "config.listen", 17,
     "listen: the host part is empty", NULL},
    {"listen is a number", L_TLS L_HSM L_KEYS L_TAIL "listen: [8443]\n", "config.type", 17,
     "listen: expected a string, found a sequence", NULL},
    {"tls not a mapping", L_LISTEN "tls: server.crt\n" L_HSM L_KEYS L_TAIL, "config.type", 2,
     "tls: expected a mapping, found a scalar", NULL},
    {"empty tls path",
     L_LISTEN "tls:\n  cert: \"\"\n  key: b\n  client_ca: c\n" L_HSM L_KEYS L_TAIL, "config.path",
     3, "tls.cert: path must not be empty", NULL},
    {"workers negative", MINIMAL "workers: -1\n", "config.range", 18,
     "workers: -1 is out of range (0..256)", NULL},
    {"workers too large", MINIMAL "workers: 257\n", "config.range", 18, "workers: 257 is out of",
     NULL},
    {"workers not an integer", MINIMAL "workers: four\n", "config.integer", 18,
     "workers: expected a decimal integer, found 'four'", NULL},
    {"workers quoted", MINIMAL "workers: \"4\"\n", "config.integer", 18,
     "workers: expected an integer, found a quoted string", NULL},
    {"workers octal-looking", MINIMAL "workers: 010\n", "config.integer", 18, "workers: ", NULL},
    {"PIN in the file", L_LISTEN L_TLS L_HSM_HEAD "  pin: \"123456\"\n" L_KEYS L_TAIL,
     "config.pin_in_file", 9,
     "hsm.pin: the PIN must not be in the config file; use pin_file or pin_env", "123456"},
    {"PIN in the file next to pin_env",
     L_LISTEN L_TLS L_HSM_HEAD "  pin_env: P\n  pin: 987654\n" L_KEYS L_TAIL, "config.pin_in_file",
     10, "hsm.pin: the PIN must not be", "987654"},
    {"both pin_file and pin_env",
     L_LISTEN L_TLS L_HSM_HEAD "  pin_file: pin.txt\n  pin_env: P\n" L_KEYS L_TAIL,
     "config.pin_source", 10, "hsm: set exactly one of pin_file and pin_env, not both", NULL},
    {"neither pin_file nor pin_env", L_LISTEN L_TLS L_HSM_HEAD L_KEYS L_TAIL, "config.pin_source",
     7, "hsm: set exactly one of pin_file and pin_env", NULL},
    {"pin_env not a variable name",
     L_LISTEN L_TLS L_HSM_HEAD "  pin_env: \"JWT-PIN\"\n" L_KEYS L_TAIL, "config.pin_env", 9,
     "hsm.pin_env: must be an environment variable name", NULL},
    {"token not a PKCS#11 URI",
     L_LISTEN L_TLS "hsm:\n  module: m.so\n  token: jwt-signer-dev\n  pin_env: P\n" L_KEYS L_TAIL,
     "config.token", 8, "hsm.token: must be a PKCS#11 URI", NULL},
    {"hsm module missing",
     L_LISTEN L_TLS "hsm:\n  token: \"pkcs11:\"\n  pin_env: P\n" L_KEYS L_TAIL,
     "config.missing_key", 7, "hsm.module: required key is missing", NULL},
    {"keys empty", L_LISTEN L_TLS L_HSM "keys: []\n" L_TAIL, "config.keys_count", 10,
     "keys: between 1 and 64 keys are required, found 0", NULL},
    {"keys not a sequence", L_LISTEN L_TLS L_HSM "keys: dev-es256\n" L_TAIL, "config.type", 10,
     "keys: expected a sequence", NULL},
    {"key entry not a mapping", L_LISTEN L_TLS L_HSM "keys:\n  - dev-es256\n" L_TAIL, "config.type",
     11, "keys[0]: expected a mapping", NULL},
    {"duplicate key name",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("k1", "ES256") KEY_ITEM("k1", "ES256") L_TAIL,
     "config.duplicate_key_name", 14,
     "keys[1].name: duplicate key name 'k1' (also keys[0] on line 11)", NULL},
    {"bad key name characters",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("\"dev/es256\"", "ES256") L_TAIL, "config.key_name",
     11, "keys[0].name: 'dev/es256' is not a valid key name", NULL},
    {"key name too long",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM(
         "k1234567890123456789012345678901234567890123456789012345678901234", "ES256") L_TAIL,
     "config.key_name", 11, "keys[0].name: ", NULL},
    {"missing alg", L_LISTEN L_TLS L_HSM "keys:\n  - name: a\n    label: b\n" L_TAIL,
     "config.missing_key", 11, "keys[0].alg: required key is missing", NULL},
    {"unknown alg", L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "HS256") L_TAIL, "config.alg", 13,
     "keys[0].alg: unknown alg 'HS256'", NULL},
    {"alg none", L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "none") L_TAIL, "config.alg", 13,
     "keys[0].alg: unknown alg 'none'", NULL},
    {"alg case matters", L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "eddsa") L_TAIL, "config.alg",
     13, "keys[0].alg: unknown alg 'eddsa'", NULL},
    /* bits: RSA only, 2048 or 3072 (RFC 7518 §3.3 requires >= 2048). */
    {"bits on an EC key",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "ES256") "    bits: 2048\n" L_TAIL,
     "config.key_bits", 14, "keys[0].bits: bits applies only to RS256 and PS256 keys, not ES256",
     NULL},
    {"bits on an EdDSA key",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "EdDSA") "    bits: 3072\n" L_TAIL,
     "config.key_bits", 14, "keys[0].bits: bits applies only to RS256 and PS256 keys, not EdDSA",
     NULL},
    {"bits too small",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "RS256") "    bits: 1024\n" L_TAIL,
     "config.key_bits", 14, "keys[0].bits: RSA keys have 2048 or 3072 bits, not 1024", NULL},
    {"bits not offered",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "PS256") "    bits: 4096\n" L_TAIL,
     "config.key_bits", 14, "keys[0].bits: RSA keys have 2048 or 3072 bits, not 4096", NULL},
    {"bits zero", L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "PS256") "    bits: 0\n" L_TAIL,
     "config.key_bits", 14, "keys[0].bits: RSA keys have 2048 or 3072 bits, not 0", NULL},
    {"bits negative",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "RS256") "    bits: -2048\n" L_TAIL,
     "config.range", 14, "keys[0].bits: ", NULL},
    {"bits not an integer",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "RS256") "    bits: \"2048\"\n" L_TAIL,
     "config.integer", 14, "keys[0].bits: ", NULL},
    {"default_key not a key", MINIMAL "default_key: nope\n", "config.default_key", 18,
     "default_key: 'nope' is not the name of a key in keys", NULL},
    {"issuer empty", L_LISTEN L_TLS L_HSM L_KEYS "issuer: \"\"\n" L_TAIL, "config.issuer", 14,
     "issuer: must be 1..256 bytes", NULL},
    {"issuer with no value", L_LISTEN L_TLS L_HSM L_KEYS "issuer:\n" L_TAIL, "config.type", 14,
     "issuer: expected a string, found nothing (null)", NULL},
    {"issuer with a control character", L_LISTEN L_TLS L_HSM L_KEYS "issuer: \"a\\nb\"\n" L_TAIL,
     "config.issuer", 14, "issuer: must not contain control characters", NULL},
    /* Keys whose job moved to the policy file say where they went. */
    {"allowed_callers moved to the policy", MINIMAL "allowed_callers:\n  - spiffe://x\n",
     "config.moved_to_policy", 18,
     "allowed_callers is replaced by the policy file (key 'policy'); move the identities to its "
     "callers",
     NULL},
    {"empty allowed_callers moved too", L_LISTEN "allowed_callers: []\n" L_TLS L_HSM L_KEYS L_TAIL,
     "config.moved_to_policy", 2, "allowed_callers is replaced by the policy file", NULL},
    {"lifetime moved to the policy", MINIMAL "lifetime:\n  default: 5m\n  max: 1h\n",
     "config.moved_to_policy", 18, "lifetime is replaced by max_ttl/default_ttl in the policy file",
     NULL},
    {"old config: first moved key reported, before other problems",
     L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER "lifetime:\n  max: 2h\nallowed_callers: []\nbogus: 1\n",
     "config.moved_to_policy", 15, "lifetime is replaced by max_ttl/default_ttl in the policy file",
     NULL},
    /* policy */
    {"policy empty", L_LISTEN L_TLS L_HSM L_KEYS "policy: \"\"\n" L_AUDIT, "config.path", 14,
     "policy: path must not be empty", NULL},
    {"policy not a string", L_LISTEN L_TLS L_HSM L_KEYS "policy: [a.yaml]\n" L_AUDIT, "config.type",
     14, "policy: expected a string, found a sequence", NULL},
    {"policy with no value", L_LISTEN L_TLS L_HSM L_KEYS "policy:\n" L_AUDIT, "config.type", 14,
     "policy: expected a string, found nothing (null)", NULL},
    /* audit */
    {"audit not a mapping", L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit: /var/audit\n",
     "config.type", 15, "audit: expected a mapping, found a scalar", NULL},
    {"audit empty", L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n", "config.type", 15,
     "audit: expected a mapping, found nothing (null)", NULL},
    {"audit.dir missing", L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  key_label: a\n",
     "config.missing_key", 16, "audit.dir: required key is missing", NULL},
    {"audit.dir empty",
     L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  dir: \"\"\n  key_label: a\n", "config.path",
     16, "audit.dir: path must not be empty", NULL},
    {"audit.key_label missing", L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  dir: a\n",
     "config.missing_key", 16, "audit.key_label: required key is missing", NULL},
    {"audit.key_label empty",
     L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  dir: a\n  key_label: \"\"\n",
     "config.key_label", 17, "audit.key_label: label must be 1..128 printable ASCII characters",
     NULL},
    {"audit.key_label too long",
     L_LISTEN L_TLS L_HSM L_KEYS L_POLICY
     "audit:\n  dir: a\n  key_label: "
     "\"123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890"
     "123456789012345678901234567890123456789\"\n",
     "config.key_label", 17, "audit.key_label: label must be 1..128 printable ASCII characters",
     NULL},
    {"audit.key_label control character",
     L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  dir: a\n  key_label: \"a\\tb\"\n",
     "config.key_label", 17, "audit.key_label: label must be 1..128 printable ASCII characters",
     NULL},
    {"audit.key_label not a string",
     L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  dir: a\n  key_label: {a: b}\n", "config.type",
     17, "audit.key_label: expected a string, found a mapping", NULL},
    {"audit.key_label is the first signing key's label",
     L_LISTEN L_TLS L_HSM L_KEYS L_POLICY "audit:\n  dir: a\n  key_label: jwt-signer-dev-es256\n",
     "config.audit_key_label", 17,
     "audit.key_label: 'jwt-signer-dev-es256' is also the label of signing key keys[0].label "
     "(line 12)",
     NULL},
    {"audit.key_label is another signing key's label",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "ES256") "  - name: b\n    label: audit\n"
                                                           "    alg: ES256\n" L_POLICY
                                                           "audit:\n  dir: a\n  key_label: audit\n",
     "config.audit_key_label", 20,
     "audit.key_label: 'audit' is also the label of signing key keys[1].label (line 15)", NULL},
    {"unknown audit key", MINIMAL "  retry: 1s\n", "config.unknown_key", 18,
     "audit: unknown key 'retry' (allowed: dir, key_label, origin, checkpoint_interval, "
     "checkpoint_records, heartbeat, segment_bytes, fsync, min_free_bytes)",
     NULL},
    {"limits: unknown key", MINIMAL "limits:\n  denials: 5\n", "config.unknown_key", 19,
     "limits: unknown key 'denials' (allowed: denials_per_second, denials_burst, "
     "denials_total_per_second, denials_total_burst)",
     NULL},
    {"limits: zero budget", MINIMAL "limits:\n  denials_burst: 0\n", "config.range", 19,
     "limits.denials_burst: 0 is out of range (1..1000000)", NULL},
    {"audit.origin with a control character", MINIMAL "  origin: \"prod\\tlog\"\n",
     "config.audit_origin", 18, "audit.origin: must be printable ASCII (no control characters)",
     NULL},
    {"audit.origin with DEL", MINIMAL "  origin: \"prod\\x7flog\"\n", "config.audit_origin", 18,
     "audit.origin: must be printable ASCII", NULL},
    {"audit.origin not ASCII", MINIMAL "  origin: \"jwt-sign\xc3\xa9r\"\n", "config.audit_origin",
     18, "audit.origin: must be printable ASCII", NULL},
    {"audit.origin empty", MINIMAL "  origin: \"\"\n", "config.audit_origin", 18,
     "audit.origin: must be 1..256 bytes", NULL},
    {"audit.origin null", MINIMAL "  origin:\n", "config.type", 18,
     "audit.origin: expected a string, found nothing (null)", NULL},
    {"checkpoint_interval with a bad unit", MINIMAL "  checkpoint_interval: 5x\n",
     "config.duration", 18, "audit.checkpoint_interval: duration unit must be s, m, h or d", NULL},
    {"checkpoint_interval in milliseconds", MINIMAL "  checkpoint_interval: 500ms\n",
     "config.duration", 18, "audit.checkpoint_interval: ", NULL},
    {"checkpoint_interval zero", MINIMAL "  checkpoint_interval: 0s\n", "config.duration", 18,
     "audit.checkpoint_interval: duration must be positive", NULL},
    {"checkpoint_interval negative", MINIMAL "  checkpoint_interval: -1m\n", "config.duration", 18,
     "audit.checkpoint_interval: duration must be a positive integer", NULL},
    {"checkpoint_interval without a unit", MINIMAL "  checkpoint_interval: 1\n", "config.duration",
     18, "audit.checkpoint_interval: ", NULL},
    {"checkpoint_interval over ten years", MINIMAL "  checkpoint_interval: 3651d\n",
     "config.duration", 18, "audit.checkpoint_interval: duration is longer than 10 years", NULL},
    {"checkpoint_records zero", MINIMAL "  checkpoint_records: 0\n", "config.range", 18,
     "audit.checkpoint_records: 0 is out of range (1..1000000)", NULL},
    {"checkpoint_records too large", MINIMAL "  checkpoint_records: 1000001\n", "config.range", 18,
     "audit.checkpoint_records: 1000001 is out of range (1..1000000)", NULL},
    {"checkpoint_records not an integer", MINIMAL "  checkpoint_records: many\n", "config.integer",
     18, "audit.checkpoint_records: expected a decimal integer, found 'many'", NULL},
    {"checkpoint_records quoted", MINIMAL "  checkpoint_records: \"10\"\n", "config.integer", 18,
     "audit.checkpoint_records: expected an integer, found a quoted string", NULL},
    {"heartbeat shorter than the interval", MINIMAL "  checkpoint_interval: 10s\n  heartbeat: 5s\n",
     "config.audit_heartbeat", 19,
     "audit.heartbeat: heartbeat (5s) is shorter than checkpoint_interval (10s, line 18)", NULL},
    {"heartbeat before the interval in the file",
     MINIMAL "  heartbeat: 1m\n  checkpoint_interval: 1h\n", "config.audit_heartbeat", 18,
     "audit.heartbeat: heartbeat (60s) is shorter than checkpoint_interval (3600s, line 19)", NULL},
    {"heartbeat not a duration", MINIMAL "  heartbeat: 1h30m\n", "config.duration", 18,
     "audit.heartbeat: ", NULL},
    {"segment_bytes too small", MINIMAL "  segment_bytes: 65535\n", "config.range", 18,
     "audit.segment_bytes: 65535 is out of range (65536..1099511627776)", NULL},
    {"segment_bytes too large", MINIMAL "  segment_bytes: 1099511627777\n", "config.range", 18,
     "audit.segment_bytes: 1099511627777 is out of range", NULL},
    {"segment_bytes with a unit", MINIMAL "  segment_bytes: 64MiB\n", "config.integer", 18,
     "audit.segment_bytes: expected a decimal integer, found '64MiB'", NULL},
    {"fsync not a boolean", MINIMAL "  fsync: yes\n", "config.boolean", 18, "audit.fsync: ", NULL},
    {"fsync quoted", MINIMAL "  fsync: \"false\"\n", "config.boolean", 18, "audit.fsync: ", NULL},
    /* http.jwks_uri (discovery.h): refused at load, naming the key and its line. */
    {"http.jwks_uri empty", MINIMAL L_HTTP "  jwks_uri: \"\"\n", "config.http_jwks_uri", 20,
     JWKS_URI_WANT, NULL},
    {"http.jwks_uri relative", MINIMAL L_HTTP "  jwks_uri: /.well-known/jwks.json\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri without a scheme", MINIMAL L_HTTP "  jwks_uri: issuer.example/jwks.json\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri ftp", MINIMAL L_HTTP "  jwks_uri: \"ftp://issuer.example/jwks.json\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri scheme in upper case", MINIMAL L_HTTP "  jwks_uri: \"HTTPS://x.example/j\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri no authority", MINIMAL L_HTTP "  jwks_uri: \"https:///jwks.json\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri scheme only", MINIMAL L_HTTP "  jwks_uri: \"https://\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri port without host", MINIMAL L_HTTP "  jwks_uri: \"https://:443/j\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri with a space", MINIMAL L_HTTP "  jwks_uri: \"https://x.example/a b\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri with a newline", MINIMAL L_HTTP "  jwks_uri: \"https://x.example/\\nX: y\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri with a tab", MINIMAL L_HTTP "  jwks_uri: \"https://x.example/\\t\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri with DEL", MINIMAL L_HTTP "  jwks_uri: \"https://x.example/\\x7f\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri not ASCII",
     MINIMAL L_HTTP "  jwks_uri: \"https://b\xc3\xbc"
                    "cher.example/j\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri with a fragment", MINIMAL L_HTTP "  jwks_uri: \"https://x.example/j#k\"\n",
     "config.http_jwks_uri", 20, JWKS_URI_WANT, NULL},
    {"http.jwks_uri null", MINIMAL L_HTTP "  jwks_uri:\n", "config.type", 20,
     "http.jwks_uri: expected a string", NULL},
    {"http.jwks_uri a sequence", MINIMAL L_HTTP "  jwks_uri: [\"https://x.example/j\"]\n",
     "config.type", 20, "http.jwks_uri: expected a string", NULL},
    /* http.client_ca (POST /introspect): only over TLS; a path. */
    {"http.client_ca without TLS", MINIMAL L_HTTP "  client_ca: ca.pem\n", "config.http_client_ca",
     20,
     "http.client_ca: needs http.tls_cert and http.tls_key: client certificates only exist over "
     "TLS",
     NULL},
    {"http.client_ca empty",
     MINIMAL L_HTTP "  tls_cert: s.pem\n  tls_key: s.key\n  client_ca: \"\"\n", "config.path", 22,
     "http.client_ca: path must not be empty", NULL},
    {"http.client_ca a sequence",
     MINIMAL L_HTTP "  tls_cert: s.pem\n  tls_key: s.key\n  client_ca: [a]\n", "config.type", 22,
     "http.client_ca: expected a string", NULL},
    /* externaljwt (the Kubernetes ExternalJWTSigner socket): lines 18.. */
    {"externaljwt unknown key", MINIMAL L_EXTJWT "  perms: \"0600\"\n", "config.unknown_key", 20,
     "externaljwt: unknown key 'perms' (allowed: socket, owner, group, mode)", NULL},
    {"externaljwt without socket", MINIMAL "externaljwt:\n  mode: \"0600\"\n", "config.missing_key",
     19, "externaljwt.socket: required key is missing", NULL},
    {"externaljwt empty socket", MINIMAL "externaljwt:\n  socket: \"\"\n", "config.path", 19,
     "externaljwt.socket: path must not be empty", NULL},
    {"externaljwt not a mapping", MINIMAL "externaljwt: ext.sock\n", "config.type", 18,
     "externaljwt: expected a mapping", NULL},
    {"externaljwt empty", MINIMAL "externaljwt:\n", "config.type", 18,
     "externaljwt: expected a mapping", NULL},
    {"externaljwt socket a sequence", MINIMAL "externaljwt:\n  socket: [a]\n", "config.type", 19,
     "externaljwt.socket: expected a string", NULL},
    {"externaljwt mode 0666", MINIMAL L_EXTJWT "  mode: \"0666\"\n", "config.externaljwt", 20,
     "externaljwt.mode: 0666 grants more than 0660", NULL},
    {"externaljwt mode 0777", MINIMAL L_EXTJWT "  mode: \"0777\"\n", "config.externaljwt", 20,
     "externaljwt.mode: 0777 grants more than 0660", NULL},
    {"externaljwt mode 0661", MINIMAL L_EXTJWT "  mode: \"0661\"\n", "config.externaljwt", 20,
     "externaljwt.mode: 0661 grants more than 0660", NULL},
    {"externaljwt mode 0760 (owner execute)", MINIMAL L_EXTJWT "  mode: \"0760\"\n",
     "config.externaljwt", 20, "externaljwt.mode: 0760 grants more than 0660", NULL},
    {"externaljwt mode 0604 (others read)", MINIMAL L_EXTJWT "  mode: \"0604\"\n",
     "config.externaljwt", 20, "externaljwt.mode: 0604 grants more than 0660", NULL},
    {"externaljwt mode 666 without a leading 0", MINIMAL L_EXTJWT "  mode: \"666\"\n",
     "config.externaljwt", 20, "externaljwt.mode: 0666 grants more than 0660", NULL},
    {"externaljwt mode abc", MINIMAL L_EXTJWT "  mode: abc\n", "config.externaljwt", 20,
     "externaljwt.mode: 'abc' is not an octal file mode", NULL},
    {"externaljwt mode blank", MINIMAL L_EXTJWT "  mode: \" 0600\"\n", "config.externaljwt", 20,
     "externaljwt.mode: ' 0600' is not an octal file mode", NULL},
    {"externaljwt mode sign", MINIMAL L_EXTJWT "  mode: \"+600\"\n", "config.externaljwt", 20,
     "externaljwt.mode: '+600' is not an octal file mode", NULL},
    {"externaljwt mode five digits", MINIMAL L_EXTJWT "  mode: \"00660\"\n", "config.externaljwt",
     20, "externaljwt.mode: '00660' is not an octal file mode", NULL},
    {"externaljwt mode empty", MINIMAL L_EXTJWT "  mode: \"\"\n", "config.externaljwt", 20,
     "externaljwt.mode: '' is not an octal file mode", NULL},
    {"externaljwt mode not octal", MINIMAL L_EXTJWT "  mode: \"0680\"\n", "config.externaljwt", 20,
     "externaljwt.mode: '0680' is not an octal file mode", NULL},
    {"externaljwt mode with setuid", MINIMAL L_EXTJWT "  mode: \"4660\"\n", "config.externaljwt",
     20, "externaljwt.mode: '4660' is not an octal file mode", NULL},
    {"externaljwt mode trailing text", MINIMAL L_EXTJWT "  mode: \"0660x\"\n", "config.externaljwt",
     20, "externaljwt.mode: '0660x' is not an octal file mode", NULL},
    {"externaljwt mode a sequence", MINIMAL L_EXTJWT "  mode: [\"0600\"]\n", "config.type", 20,
     "externaljwt.mode: expected a string", NULL},
    {"externaljwt unknown owner", MINIMAL L_EXTJWT "  owner: no-such-user-jwt\n",
     "config.externaljwt", 20, "externaljwt.owner: no user named 'no-such-user-jwt'", NULL},
    {"externaljwt unknown group", MINIMAL L_EXTJWT "  group: no-such-group-jwt\n",
     "config.externaljwt", 20, "externaljwt.group: no group named 'no-such-group-jwt'", NULL},
    {"externaljwt owner -1", MINIMAL L_EXTJWT "  owner: \"-1\"\n", "config.externaljwt", 20,
     "externaljwt.owner: no user named '-1'", NULL},
    /* (uid_t)-1 means "leave unchanged" to chown(2): never an owner. */
    {"externaljwt owner 4294967295", MINIMAL L_EXTJWT "  owner: \"4294967295\"\n",
     "config.externaljwt", 20, "externaljwt.owner: no user named '4294967295'", NULL},
    {"externaljwt group 4294967295", MINIMAL L_EXTJWT "  group: \"4294967295\"\n",
     "config.externaljwt", 20, "externaljwt.group: no group named '4294967295'", NULL},
    {"externaljwt owner empty", MINIMAL L_EXTJWT "  owner: \"\"\n", "config.externaljwt", 20,
     "externaljwt.owner: no user named ''", NULL},
    {"externaljwt duplicate socket", MINIMAL L_EXTJWT "  socket: b.sock\n", "config.duplicate_key",
     20, "duplicate key 'socket' (first on line 19)", NULL},
    {"YAML syntax error", MINIMAL "workers: x: 1\n", "config.yaml_syntax", 18,
     "YAML syntax error: mapping values are not allowed in this context", NULL},
    {"alias", MINIMAL "default_key: *first\n", "config.alias", 18,
     "aliases (*name) are not allowed", NULL},
    {"anchor",
     L_LISTEN L_TLS L_HSM "keys:\n  - name: &n dev\n    label: l\n    alg: ES256\n" L_TAIL,
     "config.anchor", 11, "anchors (&name) are not allowed", NULL},
    {"duplicate mapping key", MINIMAL "policy: \"again.yaml\"\n", "config.duplicate_key", 18,
     "duplicate key 'policy' (first on line 14)", NULL},
    {"duplicate key in audit", MINIMAL "  dir: again\n", "config.duplicate_key", 18,
     "duplicate key 'dir' (first on line 16)", NULL},
    {"tag", MINIMAL "workers: !!int 4\n", "config.tag", 18, "tags (!name) are not allowed", NULL},
    {"two documents", MINIMAL "---\nlisten: x\n", "config.multiple_documents", 18,
     "only one YAML document is allowed", NULL},
    {"root is a sequence", "- listen\n", "config.type", 1, "expected a mapping, found a sequence",
     NULL},
    {"empty file", "", "config.no_document", 0, "no YAML document", NULL},
};

static void test_invalid_configs(void **state)
{
    const fixture *fx = *state;
    char path[128];
    for (size_t i = 0; i < sizeof(k_invalid) / sizeof(k_invalid[0]); i++) {
        write_file(fx, "case.yaml", k_invalid[i].text, 0600, path, sizeof(path));
        js_config *cfg = NULL;
        js_err err = {0};
        js_status st = js_config_load(path, &cfg, &err);
        if (st == JS_OK)
            fail_msg("case '%s': loaded, expected %s", k_invalid[i].name, k_invalid[i].reason);
        assert_null(cfg);
        char want[JS_MSG_MAX + 256];
        if (k_invalid[i].line > 0)
            snprintf(want, sizeof(want), "%s:%zu: %s", path, k_invalid[i].line, k_invalid[i].want);
        else
            snprintf(want, sizeof(want), "%s: %s", path, k_invalid[i].want);
        if (st != JS_ECONFIG || strcmp(js_reason_name(err.reason), k_invalid[i].reason) != 0 ||
            strncmp(err.msg, want, strlen(want)) != 0)
            fail_msg("case '%s':\n  got  %s %s: %s\n  want config %s: %s...", k_invalid[i].name,
                     js_status_name(st), js_reason_name(err.reason), err.msg, k_invalid[i].reason,
                     want);
        if (k_invalid[i].absent != NULL && strstr(err.msg, k_invalid[i].absent) != NULL)
            fail_msg("case '%s': message leaks '%s': %s", k_invalid[i].name, k_invalid[i].absent,
                     err.msg);
    }
}

/* http.jwks_uri: absent = NULL (derived from the issuer); kept as written; 2048 bytes at most. */
static void test_http_jwks_uri(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, MINIMAL L_HTTP);
    assert_string_equal(cfg->http_listen, "127.0.0.1:0");
    assert_null(cfg->http_jwks_uri);
    js_config_free(cfg);
    const char *good[] = {"https://issuer.example/.well-known/jwks.json",
                          "http://127.0.0.1:8080/.well-known/jwks.json",
                          "https://idp.example:8443/tenant/a/keys?format=jwks", "https://h"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), MINIMAL L_HTTP "  jwks_uri: \"%s\"\n", good[i]);
        cfg = load_ok(fx, text);
        assert_string_equal(cfg->http_jwks_uri, good[i]);
        js_config_free(cfg);
    }
    /* The length limit, both sides of it. */
    size_t cap = sizeof(MINIMAL L_HTTP) + JS_DISCOVERY_URL_MAX + 64;
    char *text = malloc(cap);
    assert_non_null(text);
    for (size_t len = JS_DISCOVERY_URL_MAX; len <= JS_DISCOVERY_URL_MAX + 1; len++) {
        int n = snprintf(text, cap, MINIMAL L_HTTP "  jwks_uri: \"https://h/");
        size_t at = (size_t)n, path_len = len - strlen("https://h/");
        memset(text + at, 'a', path_len);
        memcpy(text + at + path_len, "\"\n", 3);
        char path[PATH_MAX];
        write_file(fx, "case.yaml", text, 0600, path, sizeof(path));
        js_err err = {0};
        cfg = NULL;
        js_status st = js_config_load(path, &cfg, &err);
        if (len <= JS_DISCOVERY_URL_MAX) {
            assert_int_equal(st, JS_OK);
            assert_int_equal(strlen(cfg->http_jwks_uri), len);
            js_config_free(cfg);
        } else {
            assert_int_equal(st, JS_ECONFIG);
            assert_string_equal(js_reason_name(err.reason), "config.http_jwks_uri");
            assert_null(cfg);
        }
    }
    free(text);
    assert_false(js_discovery_url_ok(NULL));
}

/* http.client_ca: absent = NULL (no client authentication); resolved against
 * the config file's directory like tls_cert. */
static void test_http_client_ca(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, MINIMAL L_HTTP "  tls_cert: s.pem\n  tls_key: s.key\n");
    assert_null(cfg->http_client_ca);
    js_config_free(cfg);
    cfg = load_ok(fx, MINIMAL L_HTTP "  tls_cert: s.pem\n  tls_key: s.key\n  client_ca: ca.pem\n");
    assert_in_dir(fx, cfg->http_client_ca, "ca.pem");
    js_config_free(cfg);
    cfg = load_ok(fx, MINIMAL L_HTTP
                  "  tls_cert: s.pem\n  tls_key: s.key\n  client_ca: /etc/ssl/intro-ca.pem\n");
    assert_string_equal(cfg->http_client_ca, "/etc/ssl/intro-ca.pem");
    js_config_free(cfg);
}

/* Loads MINIMAL + text as case.yaml; JS_OK or the error, with *cfg set on success. */
static js_status load_case(const fixture *fx, const char *text, js_config **cfg, js_err *err)
{
    char path[PATH_MAX];
    write_file(fx, "case.yaml", text, 0600, path, sizeof(path));
    *cfg = NULL;
    js_err_clear(err);
    return js_config_load(path, cfg, err);
}

/* externaljwt: absent = off (socket NULL, the daemon's own uid/gid, 0660);
 * the socket resolved against the config file's directory; owner and group
 * by name (resolved at load) or number; modes up to 0660. */
static void test_externaljwt(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, MINIMAL);
    assert_null(cfg->externaljwt_socket);
    assert_int_equal(cfg->externaljwt_uid, -1);
    assert_int_equal(cfg->externaljwt_gid, -1);
    assert_int_equal(cfg->externaljwt_mode, 0660);
    js_config_free(cfg);

    /* Only socket: the defaults for the rest. */
    cfg = load_ok(fx, MINIMAL "externaljwt:\n  socket: run/externaljwt.sock\n");
    assert_in_dir(fx, cfg->externaljwt_socket, "run/externaljwt.sock");
    assert_int_equal(cfg->externaljwt_uid, -1);
    assert_int_equal(cfg->externaljwt_gid, -1);
    assert_int_equal(cfg->externaljwt_mode, 0660);
    js_config_free(cfg);

    cfg = load_ok(fx, MINIMAL "externaljwt:\n  socket: /run/jwt-signer/externaljwt.sock\n"
                              "  owner: root\n  group: root\n  mode: \"0600\"\n");
    assert_string_equal(cfg->externaljwt_socket, "/run/jwt-signer/externaljwt.sock");
    assert_int_equal(cfg->externaljwt_uid, 0);
    assert_int_equal(cfg->externaljwt_gid, 0);
    assert_int_equal(cfg->externaljwt_mode, 0600);
    js_config_free(cfg);

    /* Numbers are taken as they are, with no account on this system needed. */
    cfg = load_ok(fx, MINIMAL L_EXTJWT "  owner: 1000\n  group: \"4294967294\"\n");
    assert_int_equal(cfg->externaljwt_uid, 1000);
    assert_int_equal(cfg->externaljwt_gid, 4294967294LL);
    js_config_free(cfg);
    cfg = load_ok(fx, MINIMAL L_EXTJWT "  owner: \"0\"\n  group: 0\n");
    assert_int_equal(cfg->externaljwt_uid, 0);
    assert_int_equal(cfg->externaljwt_gid, 0);
    js_config_free(cfg);

    /* A name other than root resolves to its id on this system. */
    struct passwd *pw = getpwnam("nobody");
    if (pw != NULL) {
        cfg = load_ok(fx, MINIMAL L_EXTJWT "  owner: nobody\n");
        assert_int_equal(cfg->externaljwt_uid, (int64_t)pw->pw_uid);
        assert_int_equal(cfg->externaljwt_gid, -1);
        js_config_free(cfg);
    }

    /* Every mode within 0660 is accepted, with or without the leading 0. */
    static const struct {
        const char *text;
        unsigned mode;
    } k_modes[] = {{"0660", 0660}, {"0600", 0600}, {"0640", 0640}, {"0060", 0060},
                   {"660", 0660},  {"600", 0600},  {"0400", 0400}};
    for (size_t i = 0; i < sizeof(k_modes) / sizeof(k_modes[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), MINIMAL L_EXTJWT "  mode: \"%s\"\n", k_modes[i].text);
        cfg = load_ok(fx, text);
        if (cfg->externaljwt_mode != k_modes[i].mode)
            fail_msg("mode '%s': got %04o", k_modes[i].text, cfg->externaljwt_mode);
        js_config_free(cfg);
    }
}

/* The socket path, once resolved, must fit sockaddr_un.sun_path (107 bytes
 * and the NUL, unix(7)): both sides of the limit, absolute and relative. */
static void test_externaljwt_socket_length(void **state)
{
    const fixture *fx = *state;
    char text[1024], sock[256];
    for (size_t len = JS_CONFIG_SUN_PATH_MAX - 1; len <= JS_CONFIG_SUN_PATH_MAX + 2; len++) {
        /* Absolute: "/" and len - 1 letters. */
        sock[0] = '/';
        memset(sock + 1, 's', len - 1);
        sock[len] = '\0';
        snprintf(text, sizeof(text), MINIMAL "externaljwt:\n  socket: %s\n", sock);
        js_config *cfg = NULL;
        js_err err;
        js_status st = load_case(fx, text, &cfg, &err);
        if (len <= JS_CONFIG_SUN_PATH_MAX) {
            if (st != JS_OK)
                fail_msg("%zu bytes refused: %s", len, err.msg);
            assert_int_equal(strlen(cfg->externaljwt_socket), len);
            js_config_free(cfg);
        } else {
            assert_int_equal(st, JS_ECONFIG);
            assert_null(cfg);
            assert_int_equal(err.reason, JS_R_CONFIG_EXTERNALJWT);
            char want[64];
            snprintf(want, sizeof(want), "the socket path is %zu bytes", len);
            assert_non_null(strstr(err.msg, want));
            assert_non_null(strstr(err.msg, ":19: externaljwt.socket: "));
        }
        /* Relative: counted after resolution against the config directory. */
        size_t prefix = strlen(fx->real_dir) + 1;
        assert_true(len > prefix);
        memset(sock, 'r', len - prefix);
        sock[len - prefix] = '\0';
        snprintf(text, sizeof(text), MINIMAL "externaljwt:\n  socket: %s\n", sock);
        st = load_case(fx, text, &cfg, &err);
        if (len <= JS_CONFIG_SUN_PATH_MAX) {
            if (st != JS_OK)
                fail_msg("relative, %zu bytes resolved, refused: %s", len, err.msg);
            assert_int_equal(strlen(cfg->externaljwt_socket), len);
            assert_in_dir(fx, cfg->externaljwt_socket, sock);
            js_config_free(cfg);
        } else {
            assert_int_equal(st, JS_ECONFIG);
            assert_int_equal(err.reason, JS_R_CONFIG_EXTERNALJWT);
            assert_null(cfg);
        }
    }
}

static void test_missing_file(void **state)
{
    const fixture *fx = *state;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/does-not-exist.yaml", fx->dir);
    js_config *cfg = NULL;
    js_err err = {0};
    assert_int_equal(js_config_load(path, &cfg, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.io");
    assert_non_null(strstr(err.msg, path));
    assert_null(cfg);
}

/* ---- durations --------------------------------------------------------------------- */

static const struct {
    const char *text;
    int64_t seconds; /* 0 = must fail */
} k_durations[] = {
    {"90s", 90},
    {"15m", 900},
    {"12h", 43200},
    {"1d", 86400},
    {"3650d", 315360000},
    {"315360000s", 315360000},
    {"05m", 300},
    {"3651d", 0},
    {"315360001s", 0},
    {"99999999999999999999s", 0},
    {"9223372036854775807d", 0},
    {"0s", 0},
    {"-1m", 0},
    {"+1m", 0},
    {"m", 0},
    {"5", 0},
    {"5x", 0},
    {"5M", 0},
    {"1h30m", 0},
    {" 5m", 0},
    {"5m ", 0},
    {"1.5h", 0},
    {"", 0},
};

static void test_parse_duration(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_durations) / sizeof(k_durations[0]); i++) {
        int64_t got = -1;
        js_err err = {0};
        js_status st = js_parse_duration(k_durations[i].text, &got, &err);
        if (k_durations[i].seconds > 0) {
            if (st != JS_OK)
                fail_msg("'%s': %s", k_durations[i].text, err.msg);
            assert_true(got == k_durations[i].seconds);
        } else {
            if (st != JS_EINVAL)
                fail_msg("'%s' was accepted", k_durations[i].text);
            assert_true(strncmp(js_reason_name(err.reason), "duration.", 9) == 0);
            assert_true(got == -1);
        }
    }
    js_err err = {0};
    int64_t got;
    assert_int_equal(js_parse_duration(NULL, &got, &err), JS_EINVAL);
}

/* ---- the PIN ----------------------------------------------------------------------- */

static void test_read_pin_from_file(void **state)
{
    const fixture *fx = *state;
    char path[PATH_MAX];
    char buf[64];
    size_t len = 0;
    js_err err = {0};
    js_config cfg = {.pin_file = path};

    write_file(fx, "pin.txt", "s3cr3t-PIN\r\n", 0600, path, sizeof(path));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_OK);
    assert_string_equal(buf, "s3cr3t-PIN");
    assert_int_equal(len, 10);

    /* Only the first line counts; no newline at the end is fine too. */
    write_file(fx, "pin.txt", "1234\nsecond line\n", 0640, path, sizeof(path));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_OK);
    assert_string_equal(buf, "1234");
    write_file(fx, "pin.txt", "4321", 0400, path, sizeof(path));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_OK);
    assert_string_equal(buf, "4321");

    /* The operator names the file: a symlink to it is followed (secret volumes). */
    char link[PATH_MAX];
    snprintf(link, sizeof(link), "%s/pin-link.txt", fx->dir);
    assert_int_equal(symlink("pin.txt", link), 0);
    cfg.pin_file = link;
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_OK);
    assert_string_equal(buf, "4321");
    assert_int_equal(unlink(link), 0);
}

/* Over PIN_FILE_MAX (4096 bytes): config.pin_file, unless the mode is wrong,
 * which is said first (the mode check came before the read). */
static void test_read_pin_file_too_large(void **state)
{
    const fixture *fx = *state;
    char path[PATH_MAX];
    char *big = malloc(5001);
    assert_non_null(big);
    memset(big, '7', 5000);
    big[5000] = '\0';
    char buf[64];
    js_err err = {0};
    js_config cfg = {.pin_file = path};
    write_file(fx, "pin.txt", big, 0600, path, sizeof(path));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_file");
    assert_non_null(strstr(err.msg, "larger than 4096 bytes; expected one line"));
    assert_null(strstr(err.msg, "7777"));
    write_file(fx, "pin.txt", big, 0644, path, sizeof(path));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_file_mode");
    free(big);
}

static const struct {
    const char *name;
    const char *content;
    mode_t mode;
    size_t cap;
    const char *reason;
    const char *secret; /* must not appear in the message */
} k_bad_pin_files[] = {
    {"empty file", "", 0600, 64, "config.pin_empty", NULL},
    {"only a newline", "\r\n", 0600, 64, "config.pin_empty", NULL},
    {"empty first line", "\nsecond\n", 0600, 64, "config.pin_empty", "second"},
    {"world-readable", "secret-one\n", 0644, 64, "config.pin_file_mode", "secret-one"},
    {"world-writable", "secret-two\n", 0602, 64, "config.pin_file_mode", "secret-two"},
    {"longer than the buffer", "0123456789\n", 0600, 8, "config.pin_too_long", "0123456"},
};

static void test_read_pin_file_errors(void **state)
{
    const fixture *fx = *state;
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof(k_bad_pin_files) / sizeof(k_bad_pin_files[0]); i++) {
        char buf[64];
        size_t len = 99;
        js_err err = {0};
        js_config cfg = {.pin_file = path};
        write_file(fx, "pin.txt", k_bad_pin_files[i].content, k_bad_pin_files[i].mode, path,
                   sizeof(path));
        memset(buf, 'X', sizeof(buf));
        js_status st = js_config_read_pin(&cfg, buf, k_bad_pin_files[i].cap, &len, &err);
        if (st != JS_ECONFIG || strcmp(js_reason_name(err.reason), k_bad_pin_files[i].reason) != 0)
            fail_msg("case '%s': got %s %s", k_bad_pin_files[i].name, js_reason_name(err.reason),
                     err.msg);
        assert_non_null(strstr(err.msg, path));
        if (k_bad_pin_files[i].secret != NULL)
            assert_null(strstr(err.msg, k_bad_pin_files[i].secret));
        /* Nothing of the PIN is left in the caller's buffer on failure. */
        assert_int_equal(buf[0], '\0');
        assert_int_equal(len, 0);
    }

    /* A file that does not exist. */
    char missing[PATH_MAX];
    snprintf(missing, sizeof(missing), "%s/no-pin.txt", fx->dir);
    js_config cfg = {.pin_file = missing};
    char buf[16];
    js_err err = {0};
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_file");
    assert_non_null(strstr(err.msg, missing));

    /* A directory is not a PIN file. */
    char dir[sizeof(fx->dir)];
    memcpy(dir, fx->dir, sizeof(dir));
    cfg.pin_file = dir;
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_file");
}

static void test_read_pin_from_env(void **state)
{
    (void)state;
    static const char var[] = "JS_TEST_CONFIG_PIN";
    js_config cfg = {.pin_env = (char *)var};
    char buf[64];
    size_t len = 0;
    js_err err = {0};

    assert_int_equal(setenv(var, "env-PIN-7531", 1), 0);
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_OK);
    assert_string_equal(buf, "env-PIN-7531");
    assert_int_equal(len, 12);

    /* Too long for the buffer: the error names the variable, never the value. */
    assert_int_equal(js_config_read_pin(&cfg, buf, 6, &len, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_too_long");
    assert_non_null(strstr(err.msg, var));
    assert_null(strstr(err.msg, "env-PIN"));
    assert_null(strstr(err.msg, "7531"));
    assert_int_equal(buf[0], '\0');

    assert_int_equal(setenv(var, "", 1), 0);
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_empty");
    assert_non_null(strstr(err.msg, var));

    assert_int_equal(unsetenv(var), 0);
    memset(&err, 0, sizeof(err));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "config.pin_env");
    assert_string_equal(err.msg,
                        "environment variable JS_TEST_CONFIG_PIN (hsm.pin_env) is not set");
    assert_int_equal(buf[0], '\0');
    assert_int_equal(len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_minimal_config_defaults),
        cmocka_unit_test(test_state_dir),
        cmocka_unit_test(test_relative_config_path),
        cmocka_unit_test(test_invalid_configs),
        cmocka_unit_test(test_http_jwks_uri),
        cmocka_unit_test(test_http_client_ca),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_read_pin_from_file),
        cmocka_unit_test(test_read_pin_file_errors),
        cmocka_unit_test(test_read_pin_file_too_large),
        cmocka_unit_test(test_read_pin_from_env),
        cmocka_unit_test(test_all_algs_and_bits),
        cmocka_unit_test(test_externaljwt),
        cmocka_unit_test(test_externaljwt_socket_length),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
