/*
 * test_config.c - unit tests for jwt-signerd's configuration (signer/config.h):
 * a full and a minimal valid file, a table of invalid files each checked for
 * its reason, key path and line, js_parse_duration, and js_config_read_pin from
 * a file and from the environment (errors must never carry the PIN).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
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
        fail_msg("unexpected error: %s (%s)", err.msg, err.reason);
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
                             "lifetime:\n"
                             "  default: 90s\n"
                             "  max: 2h\n"
                             "allowed_callers:\n"
                             "  - spiffe://example.org/issuer-a\n"
                             "  - \"spiffe://example.org/issuer-b\"\n";

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
    assert_int_equal(cfg->default_ttl, 90);
    assert_int_equal(cfg->max_ttl, 7200);
    assert_int_equal(cfg->nallowed_callers, 2);
    assert_string_equal(cfg->allowed_callers[0], "spiffe://example.org/issuer-a");
    assert_string_equal(cfg->allowed_callers[1], "spiffe://example.org/issuer-b");
    js_config_free(cfg);
    js_config_free(NULL);
}

#define L_LISTEN "listen: \"127.0.0.1:8443\"\n"                                       /* 1 */
#define L_TLS    "tls:\n  cert: server.crt\n  key: server.key\n  client_ca: ca.crt\n" /* 2-5 */
#define L_HSM_HEAD                                                                                 \
    "hsm:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  token: \"pkcs11:token=dev\"\n" /* 6-8 */
#define L_HSM     L_HSM_HEAD "  pin_env: JWT_SIGNER_PIN\n"                             /* 9 */
#define L_KEYS    "keys:\n  - name: dev-es256\n    label: jwt-signer-dev-es256\n    alg: ES256\n"
#define L_ISSUER  "issuer: \"https://issuer.example\"\n"                  /* 14 */
#define L_CALLERS "allowed_callers:\n  - spiffe://example.org/issuer-a\n" /* 15-16 */
#define MINIMAL   L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS          /* 16 lines */

static void test_minimal_config_defaults(void **state)
{
    const fixture *fx = *state;
    js_config *cfg = load_ok(fx, MINIMAL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long want = cpus < 1 ? 1 : cpus > JS_CONFIG_MAX_WORKERS ? JS_CONFIG_MAX_WORKERS : cpus;
    assert_int_equal(cfg->workers, want);
    assert_int_equal(cfg->default_ttl, 300);
    assert_int_equal(cfg->max_ttl, 3600);
    assert_string_equal(cfg->default_key, "dev-es256");
    assert_null(cfg->pin_file);
    assert_string_equal(cfg->pin_env, "JWT_SIGNER_PIN");
    assert_string_equal(cfg->hsm_module, "/usr/lib/softhsm/libsofthsm2.so");
    assert_int_equal(cfg->nallowed_callers, 1);
    js_config_free(cfg);

    /* workers: 0 means "one per CPU"; an empty caller list is allowed; one bound of lifetime. */
    cfg = load_ok(fx, L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER "allowed_callers: []\n"
                                                           "workers: 0\n"
                                                           "lifetime:\n  max: 10m\n");
    assert_int_equal(cfg->workers, want);
    assert_int_equal(cfg->nallowed_callers, 0);
    assert_int_equal(cfg->default_ttl, 300);
    assert_int_equal(cfg->max_ttl, 600);
    js_config_free(cfg);

    cfg = load_ok(fx, L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: \"localhost:65535\"\n"
                                                            "workers: 256\n");
    assert_int_equal(cfg->workers, JS_CONFIG_MAX_WORKERS);
    assert_string_equal(cfg->listen, "localhost:65535");
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

static const struct {
    const char *name;
    const char *text;
    const char *reason;
    size_t line;        /* 0: the message has no line */
    const char *want;   /* must appear right after "FILE:LINE: " */
    const char *absent; /* must not appear anywhere in the message (or NULL) */
} k_invalid[] = {
    {"unknown top-level key", MINIMAL "bogus: 1\n", "config.unknown_key", 17,
     "unknown key 'bogus' (allowed: listen, tls, workers, hsm, keys, default_key, issuer, "
     "lifetime, allowed_callers)",
     NULL},
    {"unknown nested key",
     L_LISTEN
     "tls:\n  cert: a\n  key: b\n  client_ca: c\n  extra: d\n" L_HSM L_KEYS L_ISSUER L_CALLERS,
     "config.unknown_key", 6, "tls: unknown key 'extra' (allowed: cert, key, client_ca)", NULL},
    {"unknown key in a key entry",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "ES256") "    kid: x\n" L_ISSUER L_CALLERS,
     "config.unknown_key", 14, "keys[0]: unknown key 'kid'", NULL},
    {"unknown key in lifetime", MINIMAL "lifetime:\n  default: 5m\n  maximum: 1h\n",
     "config.unknown_key", 19, "lifetime: unknown key 'maximum'", NULL},
    {"missing listen", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS, "config.missing_key", 1,
     "listen: required key is missing", NULL},
    {"missing tls.client_ca",
     L_LISTEN "tls:\n  cert: a\n  key: b\n" L_HSM L_KEYS L_ISSUER L_CALLERS, "config.missing_key",
     3, "tls.client_ca: required key is missing", NULL},
    {"missing allowed_callers", L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER, "config.missing_key", 1,
     "allowed_callers: required key is missing", NULL},
    {"port too large", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: \"127.0.0.1:65536\"\n",
     "config.listen", 16, "listen: the port must be a number 0..65535", NULL},
    {"no port", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: localhost\n", "config.listen", 16,
     "listen: expected host:port", NULL},
    {"port not numeric", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: \"host:http\"\n",
     "config.listen", 16, "listen: the port must be", NULL},
    {"negative port", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: \"host:-1\"\n",
     "config.listen", 16, "listen: the port must be", NULL},
    {"unbracketed IPv6", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: \"::1:8443\"\n",
     "config.listen", 16, "listen: an IPv6 address must be in brackets", NULL},
    {"empty host", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: \":8443\"\n", "config.listen", 16,
     "listen: the host part is empty", NULL},
    {"listen is a number", L_TLS L_HSM L_KEYS L_ISSUER L_CALLERS "listen: [8443]\n", "config.type",
     16, "listen: expected a string, found a sequence", NULL},
    {"tls not a mapping", L_LISTEN "tls: server.crt\n" L_HSM L_KEYS L_ISSUER L_CALLERS,
     "config.type", 2, "tls: expected a mapping, found a scalar", NULL},
    {"empty tls path",
     L_LISTEN "tls:\n  cert: \"\"\n  key: b\n  client_ca: c\n" L_HSM L_KEYS L_ISSUER L_CALLERS,
     "config.path", 3, "tls.cert: path must not be empty", NULL},
    {"workers negative", MINIMAL "workers: -1\n", "config.range", 17,
     "workers: -1 is out of range (0..256)", NULL},
    {"workers too large", MINIMAL "workers: 257\n", "config.range", 17, "workers: 257 is out of",
     NULL},
    {"workers not an integer", MINIMAL "workers: four\n", "config.integer", 17,
     "workers: expected a decimal integer, found 'four'", NULL},
    {"workers quoted", MINIMAL "workers: \"4\"\n", "config.integer", 17,
     "workers: expected an integer, found a quoted string", NULL},
    {"workers octal-looking", MINIMAL "workers: 010\n", "config.integer", 17, "workers: ", NULL},
    {"PIN in the file", L_LISTEN L_TLS L_HSM_HEAD "  pin: \"123456\"\n" L_KEYS L_ISSUER L_CALLERS,
     "config.pin_in_file", 9,
     "hsm.pin: the PIN must not be in the config file; use pin_file or pin_env", "123456"},
    {"PIN in the file next to pin_env",
     L_LISTEN L_TLS L_HSM_HEAD "  pin_env: P\n  pin: 987654\n" L_KEYS L_ISSUER L_CALLERS,
     "config.pin_in_file", 10, "hsm.pin: the PIN must not be", "987654"},
    {"both pin_file and pin_env",
     L_LISTEN L_TLS L_HSM_HEAD "  pin_file: pin.txt\n  pin_env: P\n" L_KEYS L_ISSUER L_CALLERS,
     "config.pin_source", 10, "hsm: set exactly one of pin_file and pin_env, not both", NULL},
    {"neither pin_file nor pin_env", L_LISTEN L_TLS L_HSM_HEAD L_KEYS L_ISSUER L_CALLERS,
     "config.pin_source", 7, "hsm: set exactly one of pin_file and pin_env", NULL},
    {"pin_env not a variable name",
     L_LISTEN L_TLS L_HSM_HEAD "  pin_env: \"JWT-PIN\"\n" L_KEYS L_ISSUER L_CALLERS,
     "config.pin_env", 9, "hsm.pin_env: must be an environment variable name", NULL},
    {"token not a PKCS#11 URI",
     L_LISTEN L_TLS
     "hsm:\n  module: m.so\n  token: jwt-signer-dev\n  pin_env: P\n" L_KEYS L_ISSUER L_CALLERS,
     "config.token", 8, "hsm.token: must be a PKCS#11 URI", NULL},
    {"hsm module missing",
     L_LISTEN L_TLS "hsm:\n  token: \"pkcs11:\"\n  pin_env: P\n" L_KEYS L_ISSUER L_CALLERS,
     "config.missing_key", 7, "hsm.module: required key is missing", NULL},
    {"keys empty", L_LISTEN L_TLS L_HSM "keys: []\n" L_ISSUER L_CALLERS, "config.keys_count", 10,
     "keys: between 1 and 64 keys are required, found 0", NULL},
    {"keys not a sequence", L_LISTEN L_TLS L_HSM "keys: dev-es256\n" L_ISSUER L_CALLERS,
     "config.type", 10, "keys: expected a sequence", NULL},
    {"key entry not a mapping", L_LISTEN L_TLS L_HSM "keys:\n  - dev-es256\n" L_ISSUER L_CALLERS,
     "config.type", 11, "keys[0]: expected a mapping", NULL},
    {"duplicate key name",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("k1", "ES256") KEY_ITEM("k1", "ES256")
         L_ISSUER L_CALLERS,
     "config.duplicate_key_name", 14,
     "keys[1].name: duplicate key name 'k1' (also keys[0] on line 11)", NULL},
    {"bad key name characters",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("\"dev/es256\"", "ES256") L_ISSUER L_CALLERS,
     "config.key_name", 11, "keys[0].name: 'dev/es256' is not a valid key name", NULL},
    {"key name too long",
     L_LISTEN L_TLS L_HSM
     "keys:\n" KEY_ITEM("k1234567890123456789012345678901234567890123456789012345678901234",
                        "ES256") L_ISSUER L_CALLERS,
     "config.key_name", 11, "keys[0].name: ", NULL},
    {"missing alg", L_LISTEN L_TLS L_HSM "keys:\n  - name: a\n    label: b\n" L_ISSUER L_CALLERS,
     "config.missing_key", 11, "keys[0].alg: required key is missing", NULL},
    {"unknown alg", L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "HS256") L_ISSUER L_CALLERS,
     "config.alg", 13, "keys[0].alg: unknown alg 'HS256'", NULL},
    {"alg none", L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "none") L_ISSUER L_CALLERS,
     "config.alg", 13, "keys[0].alg: unknown alg 'none'", NULL},
    {"unsupported alg",
     L_LISTEN L_TLS L_HSM "keys:\n" KEY_ITEM("a", "ES256") KEY_ITEM("b", "PS256")
         L_ISSUER L_CALLERS,
     "config.alg_unsupported", 16, "keys[1].alg: alg PS256 is not supported by this build", NULL},
    {"default_key not a key", MINIMAL "default_key: nope\n", "config.default_key", 17,
     "default_key: 'nope' is not the name of a key in keys", NULL},
    {"duration with a bad unit", MINIMAL "lifetime:\n  default: 5x\n", "config.duration", 18,
     "lifetime.default: duration unit must be s, m, h or d", NULL},
    {"zero duration", MINIMAL "lifetime:\n  default: 0s\n", "config.duration", 18,
     "lifetime.default: duration must be positive", NULL},
    {"negative duration", MINIMAL "lifetime:\n  default: -1m\n", "config.duration", 18,
     "lifetime.default: duration must be a positive integer", NULL},
    {"duration without a number", MINIMAL "lifetime:\n  default: m\n", "config.duration", 18,
     "lifetime.default: ", NULL},
    {"duration over ten years", MINIMAL "lifetime:\n  max: 3651d\n", "config.duration", 18,
     "lifetime.max: duration is longer than 10 years", NULL},
    {"default longer than max", MINIMAL "lifetime:\n  default: 2h\n  max: 1h\n", "config.lifetime",
     18, "lifetime.default: default (7200s) is longer than max (3600s)", NULL},
    {"default longer than the default max", MINIMAL "lifetime:\n  default: 2h\n", "config.lifetime",
     18, "lifetime.default: default (7200s) is longer than max", NULL},
    {"lifetime not a mapping", MINIMAL "lifetime: 5m\n", "config.type", 17,
     "lifetime: expected a mapping", NULL},
    {"issuer empty", L_LISTEN L_TLS L_HSM L_KEYS "issuer: \"\"\n" L_CALLERS, "config.issuer", 14,
     "issuer: must be 1..256 bytes", NULL},
    {"issuer with no value", L_LISTEN L_TLS L_HSM L_KEYS "issuer:\n" L_CALLERS, "config.type", 14,
     "issuer: expected a string, found nothing (null)", NULL},
    {"issuer with a control character", L_LISTEN L_TLS L_HSM L_KEYS "issuer: \"a\\nb\"\n" L_CALLERS,
     "config.issuer", 14, "issuer: must not contain control characters", NULL},
    {"allowed_callers not a sequence",
     L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER "allowed_callers: spiffe://x\n", "config.type", 15,
     "allowed_callers: expected a sequence, found a scalar", NULL},
    {"duplicate caller",
     L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER
     "allowed_callers:\n  - spiffe://a\n  - spiffe://b\n  - spiffe://a\n",
     "config.duplicate_caller", 18,
     "allowed_callers[2]: duplicate caller 'spiffe://a' (also allowed_callers[0] on line 16)",
     NULL},
    {"empty caller", L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER "allowed_callers:\n  - \"\"\n",
     "config.caller", 16, "allowed_callers[0]: must not be empty", NULL},
    {"caller not a string", L_LISTEN L_TLS L_HSM L_KEYS L_ISSUER "allowed_callers:\n  - {a: b}\n",
     "config.type", 16, "allowed_callers[0]: expected a string, found a mapping", NULL},
    {"YAML syntax error", MINIMAL "workers: x: 1\n", "config.yaml_syntax", 17,
     "YAML syntax error: mapping values are not allowed in this context", NULL},
    {"alias", MINIMAL "default_key: *first\n", "config.alias", 17,
     "aliases (*name) are not allowed", NULL},
    {"anchor",
     L_LISTEN L_TLS L_HSM
     "keys:\n  - name: &n dev\n    label: l\n    alg: ES256\n" L_ISSUER L_CALLERS,
     "config.anchor", 11, "anchors (&name) are not allowed", NULL},
    {"duplicate mapping key", MINIMAL "issuer: \"https://again\"\n", "config.duplicate_key", 17,
     "duplicate key 'issuer' (first on line 14)", NULL},
    {"tag", MINIMAL "workers: !!int 4\n", "config.tag", 17, "tags (!name) are not allowed", NULL},
    {"two documents", MINIMAL "---\nlisten: x\n", "config.multiple_documents", 17,
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
        if (st != JS_ECONFIG || strcmp(err.reason, k_invalid[i].reason) != 0 ||
            strncmp(err.msg, want, strlen(want)) != 0)
            fail_msg("case '%s':\n  got  %s %s: %s\n  want config %s: %s...", k_invalid[i].name,
                     js_status_name(st), err.reason, err.msg, k_invalid[i].reason, want);
        if (k_invalid[i].absent != NULL && strstr(err.msg, k_invalid[i].absent) != NULL)
            fail_msg("case '%s': message leaks '%s': %s", k_invalid[i].name, k_invalid[i].absent,
                     err.msg);
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
    assert_string_equal(err.reason, "config.io");
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
            assert_true(strncmp(err.reason, "duration.", 9) == 0);
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
        if (st != JS_ECONFIG || strcmp(err.reason, k_bad_pin_files[i].reason) != 0)
            fail_msg("case '%s': got %s %s", k_bad_pin_files[i].name, err.reason, err.msg);
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
    assert_string_equal(err.reason, "config.pin_file");
    assert_non_null(strstr(err.msg, missing));

    /* A directory is not a PIN file. */
    char dir[sizeof(fx->dir)];
    memcpy(dir, fx->dir, sizeof(dir));
    cfg.pin_file = dir;
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), NULL, &err), JS_ECONFIG);
    assert_string_equal(err.reason, "config.pin_file");
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
    assert_string_equal(err.reason, "config.pin_too_long");
    assert_non_null(strstr(err.msg, var));
    assert_null(strstr(err.msg, "env-PIN"));
    assert_null(strstr(err.msg, "7531"));
    assert_int_equal(buf[0], '\0');

    assert_int_equal(setenv(var, "", 1), 0);
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_ECONFIG);
    assert_string_equal(err.reason, "config.pin_empty");
    assert_non_null(strstr(err.msg, var));

    assert_int_equal(unsetenv(var), 0);
    memset(&err, 0, sizeof(err));
    assert_int_equal(js_config_read_pin(&cfg, buf, sizeof(buf), &len, &err), JS_ECONFIG);
    assert_string_equal(err.reason, "config.pin_env");
    assert_string_equal(err.msg,
                        "environment variable JS_TEST_CONFIG_PIN (hsm.pin_env) is not set");
    assert_int_equal(buf[0], '\0');
    assert_int_equal(len, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),          cmocka_unit_test(test_minimal_config_defaults),
        cmocka_unit_test(test_relative_config_path), cmocka_unit_test(test_invalid_configs),
        cmocka_unit_test(test_missing_file),         cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_read_pin_from_file),   cmocka_unit_test(test_read_pin_file_errors),
        cmocka_unit_test(test_read_pin_from_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
