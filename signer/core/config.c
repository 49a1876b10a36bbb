/*
 * config.c - loads and validates jwt-signerd's YAML configuration (config.h).
 *
 * The file is read through yamldoc (bounded, no aliases, unique keys, lines
 * on every node) and then checked against the schema below in one pass that
 * stops at the first problem. Every error is JS_ECONFIG, reason "config.*",
 * message "FILE:LINE: key.path: problem". Unknown keys are errors at every
 * level so that a misspelt key never silently falls back to a default.
 */
#include "config.h"
#include "duration.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "discovery.h"
#include "fileio.h"
#include "hsm.h" /* JS_HSM_PIN_MAX */
#include "names.h"
#include "yamldoc.h"

#define ISSUER_MAX 256
/* A PIN file holds one short line; anything bigger is the wrong file. */
#define PIN_FILE_MAX 4096

static const char *const k_top_keys[] = {"listen",      "tls",           "workers",       "hsm",
                                         "keys",        "default_key",   "issuer",        "policy",
                                         "audit",       "http",          "key_lifecycle", "limits",
                                         "externaljwt", "introspection", "state_dir"};
static const char *const k_limits_keys[] = {"denials_per_second", "denials_burst",
                                            "denials_total_per_second", "denials_total_burst"};
static const char *const k_http_keys[] = {"listen",       "tls_cert", "tls_key",
                                          "jwks_max_age", "jwks_uri", "client_ca"};
static const char *const k_lifecycle_keys[] = {"prepublish", "leeway"};
static const char *const k_externaljwt_keys[] = {"socket", "owner", "group", "mode"};
static const char *const k_introspection_keys[] = {"max_tokens", "leeway"};
static const char *const k_tls_keys[] = {"cert", "key", "client_ca"};
static const char *const k_hsm_keys[] = {"module", "token", "pin_file", "pin_env"};
static const char *const k_key_keys[] = {"name", "label", "alg", "bits", "rotation_period"};
static const char *const k_audit_keys[] = {
    "dir",       "key_label",     "origin", "checkpoint_interval", "checkpoint_records",
    "heartbeat", "segment_bytes", "fsync",  "min_free_bytes"};

/*
 * Top-level keys of earlier versions whose job moved to the policy file. They
 * are rejected with a message saying where they went rather than as unknown.
 */
static const struct {
    const char *key;
    const char *problem;
} k_moved_keys[] = {
    {"allowed_callers", "allowed_callers is replaced by the policy file (key 'policy'); move "
                        "the identities to its callers"},
    {"lifetime", "lifetime is replaced by max_ttl/default_ttl in the policy file"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the parse context ------------------------------------------------------------- */

typedef struct loader {
    const js_yaml_doc *doc;
    const char *dir; /* absolute directory of the config file, for relative paths */
    js_err *err;
} loader;

/* "FILE:LINE: path: problem" (yamldoc.h), with this loader's document. */
#define fail(ld, line, path, code, ...)                                                            \
    js_yaml_fail((ld)->doc, (line), (path), (code), (ld)->err, __VA_ARGS__)

static js_status dup_str(const char *s, char **out, js_err *err)
{
    *out = strdup(s);
    JS_ENSURE_ALLOC(*out, err);
    return JS_OK;
}

/*
 * The string under map[key]. *node (optional) receives the value node so the
 * caller can report a later problem on its line. Absent and optional: *out = NULL.
 */
static js_status get_string(const loader *ld, const js_yaml_node *map, const char *map_path,
                            const char *key, bool required, const char **out,
                            const js_yaml_node **node)
{
    const js_yaml_node *v;
    char path[JS_YAML_PATH_MAX];
    *out = NULL;
    JS_GUARD(js_yaml_lookup(ld->doc, map, map_path, key, required, &v, ld->err));
    if (node)
        *node = v;
    if (v == NULL)
        return JS_OK;
    return js_yaml_expect_string(ld->doc, v, js_yaml_path_key(path, sizeof(path), map_path, key),
                                 out, ld->err);
}

/* A required, non-empty path, resolved against the config file's directory. */
static js_status get_path(const loader *ld, const js_yaml_node *map, const char *map_path,
                          const char *key, char **out)
{
    const char *s;
    const js_yaml_node *v;
    char path[JS_YAML_PATH_MAX];
    JS_GUARD(get_string(ld, map, map_path, key, true, &s, &v));
    js_yaml_path_key(path, sizeof(path), map_path, key);
    if (s[0] == '\0')
        return fail(ld, js_yaml_node_line(v), path, JS_R_CONFIG_PATH, "path must not be empty");
    size_t need = s[0] == '/' ? strlen(s) + 1 : strlen(ld->dir) + 1 + strlen(s) + 1;
    if (need > PATH_MAX)
        return fail(ld, js_yaml_node_line(v), path, JS_R_CONFIG_PATH,
                    "path is longer than %d bytes", PATH_MAX - 1);
    *out = malloc(need);
    JS_ENSURE_ALLOC(*out, ld->err);
    if (s[0] == '/')
        memcpy(*out, s, need);
    else
        snprintf(*out, need, "%s/%s", ld->dir, s);
    return JS_OK;
}

/* ---- sections ---------------------------------------------------------------------- */

/* state_dir: run-time state (incident mode, frozen callers, key versions, the
 * audit key in force). Default <config dir>/state; a packaged install puts it
 * under /var/lib (the configuration directory is read-only to the daemon). */
static js_status load_state_dir(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    if (js_yaml_map_get(root, "state_dir") != NULL)
        return get_path(ld, root, "", "state_dir", &cfg->state_dir);
    size_t need = strlen(ld->dir) + sizeof("/state");
    cfg->state_dir = malloc(need);
    JS_ENSURE_ALLOC(cfg->state_dir, ld->err);
    snprintf(cfg->state_dir, need, "%s/state", ld->dir);
    return JS_OK;
}

static bool host_char(char c, bool bracketed)
{
    if (bracketed)
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
               c == ':' || c == '.';
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' ||
           c == '-' || c == '_';
}

/* "host:port" or "[v6]:port"; port 0..65535 where 0 asks for an ephemeral port. */
static js_status check_listen(const loader *ld, const js_yaml_node *v, const char *s)
{
    size_t line = js_yaml_node_line(v);
    const char *host = s, *host_end, *port;
    bool bracketed = s[0] == '[';
    if (bracketed) {
        host = s + 1;
        host_end = strchr(host, ']');
        if (host_end == NULL || host_end[1] != ':')
            return fail(ld, line, "listen", JS_R_CONFIG_LISTEN,
                        "expected host:port or [ipv6]:port, e.g. 127.0.0.1:8443");
        port = host_end + 2;
    } else {
        host_end = strrchr(s, ':');
        if (host_end == NULL)
            return fail(ld, line, "listen", JS_R_CONFIG_LISTEN,
                        "expected host:port or [ipv6]:port, e.g. 127.0.0.1:8443");
        port = host_end + 1;
    }
    if (host_end == host)
        return fail(ld, line, "listen", JS_R_CONFIG_LISTEN, "the host part is empty");
    for (const char *p = host; p < host_end; p++) {
        if (*p == ':' && !bracketed)
            return fail(ld, line, "listen", JS_R_CONFIG_LISTEN,
                        "an IPv6 address must be in brackets, e.g. [::1]:8443");
        if (!host_char(*p, bracketed))
            return fail(ld, line, "listen", JS_R_CONFIG_LISTEN,
                        "invalid character in the host part");
    }
    size_t nport = strlen(port);
    bool digits = nport >= 1 && nport <= 5;
    for (size_t i = 0; digits && i < nport; i++)
        digits = port[i] >= '0' && port[i] <= '9';
    if (!digits)
        return fail(ld, line, "listen", JS_R_CONFIG_LISTEN, "the port must be a number 0..65535");
    errno = 0;
    char *end = NULL;
    long p = strtol(port, &end, 10);
    if (errno != 0 || end != port + nport || p < 0 || p > 65535)
        return fail(ld, line, "listen", JS_R_CONFIG_LISTEN, "the port must be a number 0..65535");
    return JS_OK;
}

static js_status load_tls(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *tls;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "tls", true, &tls, ld->err));
    JS_GUARD(js_yaml_check_keys(ld->doc, tls, "tls", k_tls_keys, COUNT(k_tls_keys), ld->err));
    JS_GUARD(get_path(ld, tls, "tls", "cert", &cfg->tls_cert));
    JS_GUARD(get_path(ld, tls, "tls", "key", &cfg->tls_key));
    JS_GUARD(get_path(ld, tls, "tls", "client_ca", &cfg->tls_client_ca));
    return JS_OK;
}

static js_status load_workers(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *v;
    int64_t n = 0;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "workers", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(js_yaml_expect_int(ld->doc, v, "workers", 0, JS_CONFIG_MAX_WORKERS, &n, ld->err));
    if (n == 0) {
        /* One worker per online CPU, clamped: sysconf may fail (-1) or report a huge box. */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus < 1 ? 1 : cpus > JS_CONFIG_MAX_WORKERS ? JS_CONFIG_MAX_WORKERS : cpus;
    }
    cfg->workers = (int)n;
    return JS_OK;
}

static js_status load_hsm(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *hsm, *v;
    const char *s;
    size_t i;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "hsm", true, &hsm, ld->err));
    JS_GUARD(js_yaml_expect_type(ld->doc, hsm, "hsm", JS_YAML_MAPPING, ld->err));
    /* Checked before unknown keys so the message says what to do instead. Never echo it. */
    if (js_yaml_map_find(hsm, "pin", &i))
        return fail(ld, js_yaml_map_key_line(hsm, i), "hsm.pin", JS_R_CONFIG_PIN_IN_FILE,
                    "the PIN must not be in the config file; use pin_file or pin_env");
    JS_GUARD(js_yaml_check_keys(ld->doc, hsm, "hsm", k_hsm_keys, COUNT(k_hsm_keys), ld->err));
    JS_GUARD(get_path(ld, hsm, "hsm", "module", &cfg->hsm_module));

    JS_GUARD(get_string(ld, hsm, "hsm", "token", true, &s, &v));
    /* RFC 7512 §2.3: the scheme is "pkcs11:"; the HSM module parses the rest. */
    if (strncmp(s, "pkcs11:", 7) != 0)
        return fail(ld, js_yaml_node_line(v), "hsm.token", JS_R_CONFIG_TOKEN,
                    "must be a PKCS#11 URI starting with \"pkcs11:\" (RFC 7512)");
    JS_GUARD(dup_str(s, &cfg->hsm_token, ld->err));

    bool has_file = js_yaml_map_get(hsm, "pin_file") != NULL;
    bool has_env = js_yaml_map_get(hsm, "pin_env") != NULL;
    if (has_file && has_env)
        return fail(ld, js_yaml_map_key_line(hsm, js_yaml_map_find(hsm, "pin_env", &i) ? i : 0),
                    "hsm", JS_R_CONFIG_PIN_SOURCE,
                    "set exactly one of pin_file and pin_env, not both");
    if (!has_file && !has_env)
        return fail(ld, js_yaml_node_line(hsm), "hsm", JS_R_CONFIG_PIN_SOURCE,
                    "set exactly one of pin_file and pin_env");
    if (has_file)
        return get_path(ld, hsm, "hsm", "pin_file", &cfg->pin_file);
    JS_GUARD(get_string(ld, hsm, "hsm", "pin_env", true, &s, &v));
    if (!js_env_name_ok(s))
        return fail(ld, js_yaml_node_line(v), "hsm.pin_env", JS_R_CONFIG_PIN_ENV,
                    "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most %d)",
                    JS_ENV_NAME_MAX);
    return dup_str(s, &cfg->pin_env, ld->err);
}

static js_status load_key(const loader *ld, const js_yaml_node *item, const char *path,
                          js_key_config *key)
{
    const char *s;
    const js_yaml_node *v;
    char sub[JS_YAML_PATH_MAX];
    char shown[48];
    JS_GUARD(js_yaml_check_keys(ld->doc, item, path, k_key_keys, COUNT(k_key_keys), ld->err));

    JS_GUARD(get_string(ld, item, path, "name", true, &s, &v));
    if (!js_key_name_ok(s))
        return fail(ld, js_yaml_node_line(v), js_yaml_path_key(sub, sizeof(sub), path, "name"),
                    JS_R_CONFIG_KEY_NAME,
                    "'%s' is not a valid key name ([A-Za-z0-9._-], 1..%d bytes)",
                    js_yaml_printable(shown, sizeof(shown), s), JS_KEY_NAME_MAX);
    JS_GUARD(dup_str(s, &key->name, ld->err));

    JS_GUARD(get_string(ld, item, path, "label", true, &s, &v));
    /* The one HSM-label rule (names.h), as the HSM and the key state apply it. */
    if (!js_label_ok(s))
        return fail(ld, js_yaml_node_line(v), js_yaml_path_key(sub, sizeof(sub), path, "label"),
                    JS_R_CONFIG_KEY_LABEL, "label must be 1..%d printable ASCII characters",
                    JS_LABEL_MAX);
    JS_GUARD(dup_str(s, &key->label, ld->err));

    JS_GUARD(get_string(ld, item, path, "alg", true, &s, &v));
    js_alg alg = js_alg_from_name(s);
    js_yaml_path_key(sub, sizeof(sub), path, "alg");
    if (alg == JS_ALG_NONE)
        return fail(ld, js_yaml_node_line(v), sub, JS_R_CONFIG_ALG,
                    "unknown alg '%s' (JOSE names: ES256, ES384, RS256, PS256, EdDSA)",
                    js_yaml_printable(shown, sizeof(shown), s));
    if (!js_alg_supported(alg))
        return fail(ld, js_yaml_node_line(v), sub, JS_R_CONFIG_ALG_UNSUPPORTED,
                    "alg %s is not supported by this build", js_alg_name(alg));
    key->alg = alg;

    /* bits: the RSA modulus size for keygen; RFC 7518 §3.3/§3.5 require >= 2048. */
    JS_GUARD(js_yaml_lookup(ld->doc, item, path, "bits", false, &v, ld->err));
    if (v == NULL)
        return JS_OK;
    js_yaml_path_key(sub, sizeof(sub), path, "bits");
    if (alg != JS_ALG_RS256 && alg != JS_ALG_PS256)
        return fail(ld, js_yaml_node_line(v), sub, JS_R_CONFIG_KEY_BITS,
                    "bits applies only to RS256 and PS256 keys, not %s", js_alg_name(alg));
    int64_t bits = 0;
    JS_GUARD(js_yaml_expect_int(ld->doc, v, sub, 0, INT32_MAX, &bits, ld->err));
    if (bits != 2048 && bits != 3072)
        return fail(ld, js_yaml_node_line(v), sub, JS_R_CONFIG_KEY_BITS,
                    "RSA keys have 2048 or 3072 bits, not %lld", (long long)bits);
    key->bits = (unsigned)bits;
    return JS_OK;
}

/* keys[].rotation_period: automatic rotation (optional). */
static js_status load_rotation(const loader *ld, const js_yaml_node *item, const char *path,
                               js_key_config *key)
{
    const js_yaml_node *v;
    char sub[JS_YAML_PATH_MAX];
    JS_GUARD(js_yaml_lookup(ld->doc, item, path, "rotation_period", false, &v, ld->err));
    if (v == NULL)
        return JS_OK;
    js_yaml_path_key(sub, sizeof(sub), path, "rotation_period");
    return js_yaml_expect_duration(ld->doc, v, sub, &key->rotation_period, ld->err);
}

static js_status load_keys(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *keys;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "keys", true, &keys, ld->err));
    JS_GUARD(js_yaml_expect_type(ld->doc, keys, "keys", JS_YAML_SEQUENCE, ld->err));
    size_t n = js_yaml_seq_len(keys);
    if (n == 0 || n > JS_CONFIG_MAX_KEYS)
        return fail(ld, js_yaml_node_line(keys), "keys", JS_R_CONFIG_KEYS_COUNT,
                    "between 1 and %d keys are required, found %zu", JS_CONFIG_MAX_KEYS, n);
    cfg->keys = calloc(n, sizeof(*cfg->keys));
    JS_ENSURE_ALLOC(cfg->keys, ld->err);
    for (size_t i = 0; i < n; i++) {
        char path[JS_YAML_PATH_MAX], sub[JS_YAML_PATH_MAX];
        const js_yaml_node *item = js_yaml_seq_item(keys, i);
        js_yaml_path_index(path, sizeof(path), "keys", i);
        cfg->nkeys = i + 1; /* so js_config_free sees a partly filled entry */
        JS_GUARD(load_key(ld, item, path, &cfg->keys[i]));
        JS_GUARD(load_rotation(ld, item, path, &cfg->keys[i]));
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->keys[j].name, cfg->keys[i].name) != 0)
                continue;
            const js_yaml_node *first = js_yaml_map_get(js_yaml_seq_item(keys, j), "name");
            return fail(ld, js_yaml_node_line(js_yaml_map_get(item, "name")),
                        js_yaml_path_key(sub, sizeof(sub), path, "name"),
                        JS_R_CONFIG_DUPLICATE_KEY_NAME,
                        "duplicate key name '%s' (also keys[%zu] on line %zu)", cfg->keys[i].name,
                        j, js_yaml_node_line(first));
        }
    }
    return JS_OK;
}

static js_status load_default_key(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const char *s;
    const js_yaml_node *v;
    char shown[48];
    JS_GUARD(get_string(ld, root, "", "default_key", false, &s, &v));
    if (s == NULL)
        return dup_str(cfg->keys[0].name, &cfg->default_key, ld->err);
    if (js_config_find_key(cfg, s) == NULL)
        return fail(ld, js_yaml_node_line(v), "default_key", JS_R_CONFIG_DEFAULT_KEY,
                    "'%s' is not the name of a key in keys",
                    js_yaml_printable(shown, sizeof(shown), s));
    return dup_str(s, &cfg->default_key, ld->err);
}

static js_status load_issuer(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const char *s;
    const js_yaml_node *v;
    JS_GUARD(get_string(ld, root, "", "issuer", false, &s, &v));
    if (s == NULL)
        return JS_OK; /* the policy file may set it; the signer checks one of them does */
    size_t n = strlen(s);
    if (n == 0 || n > ISSUER_MAX)
        return fail(ld, js_yaml_node_line(v), "issuer", JS_R_CONFIG_ISSUER, "must be 1..%d bytes",
                    ISSUER_MAX);
    /* It is copied into every token's "iss" (RFC 7519 §4.1.1) and into logs. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail(ld, js_yaml_node_line(v), "issuer", JS_R_CONFIG_ISSUER,
                        "must not contain control characters");
    return dup_str(s, &cfg->issuer, ld->err);
}

/* Optional audit.* durations, stored in milliseconds. */
static js_status get_duration_ms(const loader *ld, const js_yaml_node *map, const char *key,
                                 uint64_t *out, const js_yaml_node **node)
{
    const js_yaml_node *v;
    char path[JS_YAML_PATH_MAX];
    int64_t seconds;
    JS_GUARD(js_yaml_lookup(ld->doc, map, "audit", key, false, &v, ld->err));
    *node = v;
    if (v == NULL)
        return JS_OK;
    JS_GUARD(js_yaml_expect_duration(ld->doc, v, js_yaml_path_key(path, sizeof(path), "audit", key),
                                     &seconds, ld->err));
    *out = (uint64_t)seconds * 1000u; /* js_parse_duration: 1s..10 years */
    return JS_OK;
}

static js_status get_uint_in(const loader *ld, const js_yaml_node *map, const char *parent,
                             const char *key, int64_t min, int64_t max, uint64_t *out)
{
    const js_yaml_node *v;
    char path[JS_YAML_PATH_MAX];
    int64_t n;
    JS_GUARD(js_yaml_lookup(ld->doc, map, parent, key, false, &v, ld->err));
    if (v == NULL)
        return JS_OK;
    JS_GUARD(js_yaml_expect_int(ld->doc, v, js_yaml_path_key(path, sizeof(path), parent, key), min,
                                max, &n, ld->err));
    *out = (uint64_t)n;
    return JS_OK;
}

static js_status get_uint(const loader *ld, const js_yaml_node *map, const char *key, int64_t min,
                          int64_t max, uint64_t *out)
{
    return get_uint_in(ld, map, "audit", key, min, max, out);
}

/* audit.key_label names the audit key pair, which must not be a signing key. */
static js_status load_audit_key_label(const loader *ld, const js_yaml_node *root,
                                      const js_yaml_node *audit, js_config *cfg)
{
    const char *s;
    const js_yaml_node *v;
    char shown[48];
    JS_GUARD(get_string(ld, audit, "audit", "key_label", true, &s, &v));
    if (!js_label_ok(s))
        return fail(ld, js_yaml_node_line(v), "audit.key_label", JS_R_CONFIG_KEY_LABEL,
                    "label must be 1..%d printable ASCII characters", JS_LABEL_MAX);
    for (size_t i = 0; i < cfg->nkeys; i++) {
        if (strcmp(cfg->keys[i].label, s) != 0)
            continue;
        const js_yaml_node *kl =
            js_yaml_map_get(js_yaml_seq_item(js_yaml_map_get(root, "keys"), i), "label");
        return fail(ld, js_yaml_node_line(v), "audit.key_label", JS_R_CONFIG_AUDIT_KEY_LABEL,
                    "'%s' is also the label of signing key keys[%zu].label (line %zu); the audit "
                    "key must be a key pair of its own",
                    js_yaml_printable(shown, sizeof(shown), s), i, js_yaml_node_line(kl));
    }
    return dup_str(s, &cfg->audit_key_label, ld->err);
}

static js_status load_audit_origin(const loader *ld, const js_yaml_node *audit, js_config *cfg)
{
    const char *s;
    const js_yaml_node *v;
    JS_GUARD(get_string(ld, audit, "audit", "origin", false, &s, &v));
    if (s == NULL)
        return JS_OK; /* NULL: the signer uses the issuer */
    size_t n = strlen(s);
    if (n == 0 || n > JS_CONFIG_AUDIT_ORIGIN_MAX)
        return fail(ld, js_yaml_node_line(v), "audit.origin", JS_R_CONFIG_AUDIT_ORIGIN,
                    "must be 1..%d bytes", JS_CONFIG_AUDIT_ORIGIN_MAX);
    /* It is the first line of every signed checkpoint: printable ASCII only. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
            return fail(ld, js_yaml_node_line(v), "audit.origin", JS_R_CONFIG_AUDIT_ORIGIN,
                        "must be printable ASCII (no control characters)");
    return dup_str(s, &cfg->audit_origin, ld->err);
}

static js_status load_audit(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *audit, *iv = NULL, *hv = NULL, *fv;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "audit", true, &audit, ld->err));
    JS_GUARD(
        js_yaml_check_keys(ld->doc, audit, "audit", k_audit_keys, COUNT(k_audit_keys), ld->err));
    JS_GUARD(get_path(ld, audit, "audit", "dir", &cfg->audit_dir));
    JS_GUARD(load_audit_key_label(ld, root, audit, cfg));
    JS_GUARD(load_audit_origin(ld, audit, cfg));

    cfg->audit_checkpoint_interval_ms = JS_CONFIG_AUDIT_INTERVAL_MS;
    JS_GUARD(
        get_duration_ms(ld, audit, "checkpoint_interval", &cfg->audit_checkpoint_interval_ms, &iv));
    cfg->audit_checkpoint_records = JS_CONFIG_AUDIT_RECORDS;
    JS_GUARD(get_uint(ld, audit, "checkpoint_records", 1, JS_CONFIG_AUDIT_RECORDS_MAX,
                      &cfg->audit_checkpoint_records));
    cfg->audit_heartbeat_ms = cfg->audit_checkpoint_interval_ms;
    JS_GUARD(get_duration_ms(ld, audit, "heartbeat", &cfg->audit_heartbeat_ms, &hv));
    if (cfg->audit_heartbeat_ms < cfg->audit_checkpoint_interval_ms)
        return fail(ld, js_yaml_node_line(hv), "audit.heartbeat", JS_R_CONFIG_AUDIT_HEARTBEAT,
                    "heartbeat (%" PRIu64 "s) is shorter than checkpoint_interval (%" PRIu64
                    "s, line %zu)",
                    cfg->audit_heartbeat_ms / 1000u, cfg->audit_checkpoint_interval_ms / 1000u,
                    js_yaml_node_line(iv));
    cfg->audit_segment_bytes = JS_CONFIG_AUDIT_SEGMENT_BYTES;
    JS_GUARD(get_uint(ld, audit, "segment_bytes", JS_CONFIG_AUDIT_SEGMENT_MIN,
                      (int64_t)JS_CONFIG_AUDIT_SEGMENT_MAX, &cfg->audit_segment_bytes));

    /* The disk watermark (auditlog.h); 0 turns the check off. */
    cfg->audit_min_free_bytes = JS_CONFIG_AUDIT_MIN_FREE_BYTES;
    JS_GUARD(get_uint(ld, audit, "min_free_bytes", 0, (int64_t)JS_CONFIG_AUDIT_MIN_FREE_MAX,
                      &cfg->audit_min_free_bytes));

    cfg->audit_fsync = true;
    JS_GUARD(js_yaml_lookup(ld->doc, audit, "audit", "fsync", false, &fv, ld->err));
    if (fv != NULL)
        JS_GUARD(js_yaml_expect_bool(ld->doc, fv, "audit.fsync", &cfg->audit_fsync, ld->err));
    return JS_OK;
}

/* http: the JWKS / health / metrics endpoint (optional; absent = off). */
static js_status load_http(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *h, *v;
    cfg->http_jwks_max_age = 300;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "http", false, &h, ld->err));
    if (h == NULL)
        return JS_OK;
    JS_GUARD(js_yaml_expect_type(ld->doc, h, "http", JS_YAML_MAPPING, ld->err));
    JS_GUARD(js_yaml_check_keys(ld->doc, h, "http", k_http_keys, COUNT(k_http_keys), ld->err));
    const char *s;
    JS_GUARD(get_string(ld, h, "http", "listen", true, &s, &v));
    JS_GUARD(check_listen(ld, v, s));
    JS_GUARD(dup_str(s, &cfg->http_listen, ld->err));
    JS_GUARD(js_yaml_lookup(ld->doc, h, "http", "tls_cert", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(get_path(ld, h, "http", "tls_cert", &cfg->http_tls_cert));
    JS_GUARD(js_yaml_lookup(ld->doc, h, "http", "tls_key", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(get_path(ld, h, "http", "tls_key", &cfg->http_tls_key));
    if ((cfg->http_tls_cert == NULL) != (cfg->http_tls_key == NULL))
        return fail(ld, js_yaml_node_line(h), "http", JS_R_CONFIG_HTTP_TLS,
                    "tls_cert and tls_key go together");
    /* The CA bundle client certificates must chain to (POST /introspect,
     * http.h): only over TLS. */
    JS_GUARD(js_yaml_lookup(ld->doc, h, "http", "client_ca", false, &v, ld->err));
    if (v != NULL && cfg->http_tls_cert == NULL)
        return fail(ld, js_yaml_node_line(v), "http.client_ca", JS_R_CONFIG_HTTP_CLIENT_CA,
                    "needs http.tls_cert and http.tls_key: client certificates only exist "
                    "over TLS");
    if (v != NULL)
        JS_GUARD(get_path(ld, h, "http", "client_ca", &cfg->http_client_ca));
    JS_GUARD(js_yaml_lookup(ld->doc, h, "http", "jwks_max_age", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(js_yaml_expect_duration(ld->doc, v, "http.jwks_max_age", &cfg->http_jwks_max_age,
                                         ld->err));
    /* The JWKS's public URL in the discovery document (discovery.h); absent =
     * derived from the policy's issuer. */
    JS_GUARD(get_string(ld, h, "http", "jwks_uri", false, &s, &v));
    if (s != NULL && !js_discovery_url_ok(s))
        return fail(ld, js_yaml_node_line(v), "http.jwks_uri", JS_R_CONFIG_HTTP_JWKS_URI,
                    "must be an absolute http:// or https:// URL of 1..%d printable ASCII "
                    "characters, without spaces or a fragment",
                    JS_DISCOVERY_URL_MAX);
    if (s != NULL)
        JS_GUARD(dup_str(s, &cfg->http_jwks_uri, ld->err));
    return JS_OK;
}

/* externaljwt.owner / .group: a name (resolved now, so a typo fails at load)
 * or a decimal id. *out stays -1 when the key is absent. */
static js_status load_socket_id(const loader *ld, const js_yaml_node *m, const char *key,
                                bool group, int64_t *out)
{
    const char *s;
    const js_yaml_node *v;
    char path[JS_YAML_PATH_MAX];
    *out = -1;
    JS_GUARD(get_string(ld, m, "externaljwt", key, false, &s, &v));
    if (s == NULL)
        return JS_OK;
    js_yaml_path_key(path, sizeof(path), "externaljwt", key);
    char *end = NULL;
    errno = 0;
    unsigned long n = s[0] >= '0' && s[0] <= '9' ? strtoul(s, &end, 10) : 0;
    if (end != NULL && *end == '\0' && errno == 0 && n < 0xffffffffUL) {
        *out = (int64_t)n;
        return JS_OK;
    }
    char buf[16384];
    int rc;
    if (group) {
        struct group gr, *res = NULL;
        rc = getgrnam_r(s, &gr, buf, sizeof(buf), &res);
        if (rc == 0 && res != NULL)
            *out = (int64_t)res->gr_gid;
    } else {
        struct passwd pw, *res = NULL;
        rc = getpwnam_r(s, &pw, buf, sizeof(buf), &res);
        if (rc == 0 && res != NULL)
            *out = (int64_t)res->pw_uid;
    }
    /* getpwnam_r(3): these also mean "not found". */
    if (rc != 0 && rc != ENOENT && rc != ESRCH && rc != EBADF && rc != EPERM)
        return fail(ld, js_yaml_node_line(v), path, JS_R_CONFIG_EXTERNALJWT,
                    "cannot look up %s '%s': %s", group ? "group" : "user", s, strerror(rc));
    if (*out < 0)
        return fail(ld, js_yaml_node_line(v), path, JS_R_CONFIG_EXTERNALJWT,
                    "no %s named '%s' on this system (a name or a numeric id)",
                    group ? "group" : "user", s);
    return JS_OK;
}

/*
 * externaljwt: Kubernetes' ExternalJWTSigner on a Unix socket (optional;
 * absent = off). The socket's owner, group and mode are the first gate (only
 * kube-apiserver should reach it); the policy then matches each peer's
 * credentials. The mode may not grant anything beyond 0660.
 */
static js_status load_externaljwt(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *m, *v;
    cfg->externaljwt_uid = -1;
    cfg->externaljwt_gid = -1;
    cfg->externaljwt_mode = JS_CONFIG_EXTERNALJWT_MODE;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "externaljwt", false, &m, ld->err));
    if (m == NULL)
        return JS_OK;
    JS_GUARD(js_yaml_expect_type(ld->doc, m, "externaljwt", JS_YAML_MAPPING, ld->err));
    JS_GUARD(js_yaml_check_keys(ld->doc, m, "externaljwt", k_externaljwt_keys,
                                COUNT(k_externaljwt_keys), ld->err));
    JS_GUARD(get_path(ld, m, "externaljwt", "socket", &cfg->externaljwt_socket));
    JS_GUARD(js_yaml_lookup(ld->doc, m, "externaljwt", "socket", true, &v, ld->err));
    size_t n = strlen(cfg->externaljwt_socket);
    if (n > JS_CONFIG_SUN_PATH_MAX)
        return fail(ld, js_yaml_node_line(v), "externaljwt.socket", JS_R_CONFIG_EXTERNALJWT,
                    "the socket path is %zu bytes; a Unix socket path holds at most %d (unix(7)): "
                    "use a shorter directory, e.g. /run/jwt-signer/externaljwt.sock",
                    n, JS_CONFIG_SUN_PATH_MAX);
    JS_GUARD(load_socket_id(ld, m, "owner", false, &cfg->externaljwt_uid));
    JS_GUARD(load_socket_id(ld, m, "group", true, &cfg->externaljwt_gid));
    const char *s;
    JS_GUARD(get_string(ld, m, "externaljwt", "mode", false, &s, &v));
    if (s != NULL) {
        /* Octal text, as chmod(1) takes it: "0660", "660", "0600"; 1..4
         * digits 0-7 and nothing else (no sign, no blanks). */
        size_t digits = strlen(s);
        bool octal = digits >= 1 && digits <= 4;
        for (size_t i = 0; i < digits && octal; i++)
            octal = s[i] >= '0' && s[i] <= '7';
        unsigned long mode = octal ? strtoul(s, NULL, 8) : 0;
        if (!octal || mode > 0777)
            return fail(ld, js_yaml_node_line(v), "externaljwt.mode", JS_R_CONFIG_EXTERNALJWT,
                        "'%s' is not an octal file mode such as \"0660\" (quote it in YAML)", s);
        if ((mode & ~(unsigned long)JS_CONFIG_EXTERNALJWT_MODE) != 0)
            return fail(ld, js_yaml_node_line(v), "externaljwt.mode", JS_R_CONFIG_EXTERNALJWT,
                        "%04lo grants more than 0660: the socket signs Kubernetes service-account "
                        "tokens, so only its owner and group (kube-apiserver) may connect",
                        mode);
        cfg->externaljwt_mode = (unsigned)mode;
    }
    return JS_OK;
}

/* introspection: the issued-token index and RFC 7662 introspection
 * (optional; absent = off). */
static js_status load_introspection(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *m, *v;
    cfg->introspection_max_tokens = JS_CONFIG_INDEX_DEFAULT;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "introspection", false, &m, ld->err));
    if (m == NULL)
        return JS_OK;
    cfg->introspection = true;
    JS_GUARD(js_yaml_expect_type(ld->doc, m, "introspection", JS_YAML_MAPPING, ld->err));
    JS_GUARD(js_yaml_check_keys(ld->doc, m, "introspection", k_introspection_keys,
                                COUNT(k_introspection_keys), ld->err));
    JS_GUARD(get_uint_in(ld, m, "introspection", "max_tokens", 1, JS_CONFIG_INDEX_MAX,
                         &cfg->introspection_max_tokens));
    JS_GUARD(js_yaml_lookup(ld->doc, m, "introspection", "leeway", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(js_yaml_expect_duration(ld->doc, v, "introspection.leeway",
                                         &cfg->introspection_leeway, ld->err));
    return JS_OK;
}

/* limits: the denial budget (denials.h); defaults there. */
static js_status load_limits(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *m;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "limits", false, &m, ld->err));
    if (m == NULL)
        return JS_OK;
    JS_GUARD(js_yaml_expect_type(ld->doc, m, "limits", JS_YAML_MAPPING, ld->err));
    JS_GUARD(
        js_yaml_check_keys(ld->doc, m, "limits", k_limits_keys, COUNT(k_limits_keys), ld->err));
    JS_GUARD(get_uint_in(ld, m, "limits", "denials_per_second", 1, JS_CONFIG_LIMIT_MAX,
                         &cfg->denials_per_second));
    JS_GUARD(
        get_uint_in(ld, m, "limits", "denials_burst", 1, JS_CONFIG_LIMIT_MAX, &cfg->denials_burst));
    JS_GUARD(get_uint_in(ld, m, "limits", "denials_total_per_second", 1, JS_CONFIG_LIMIT_MAX,
                         &cfg->denials_total_per_second));
    JS_GUARD(get_uint_in(ld, m, "limits", "denials_total_burst", 1, JS_CONFIG_LIMIT_MAX,
                         &cfg->denials_total_burst));
    return JS_OK;
}

/* key_lifecycle: pre-publication delay and retirement leeway. */
static js_status load_lifecycle(const loader *ld, const js_yaml_node *root, js_config *cfg)
{
    const js_yaml_node *m, *v;
    /* Default pre-publication: the JWKS cache max-age, so every verifier has
     * fetched a new kid before any token carries it. */
    cfg->key_prepublish = cfg->http_jwks_max_age;
    cfg->key_leeway = 60;
    JS_GUARD(js_yaml_lookup(ld->doc, root, "", "key_lifecycle", false, &m, ld->err));
    if (m == NULL)
        return JS_OK;
    JS_GUARD(js_yaml_expect_type(ld->doc, m, "key_lifecycle", JS_YAML_MAPPING, ld->err));
    JS_GUARD(js_yaml_check_keys(ld->doc, m, "key_lifecycle", k_lifecycle_keys,
                                COUNT(k_lifecycle_keys), ld->err));
    JS_GUARD(js_yaml_lookup(ld->doc, m, "key_lifecycle", "prepublish", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(js_yaml_expect_duration(ld->doc, v, "key_lifecycle.prepublish",
                                         &cfg->key_prepublish, ld->err));
    JS_GUARD(js_yaml_lookup(ld->doc, m, "key_lifecycle", "leeway", false, &v, ld->err));
    if (v != NULL)
        JS_GUARD(
            js_yaml_expect_duration(ld->doc, v, "key_lifecycle.leeway", &cfg->key_leeway, ld->err));
    return JS_OK;
}

static js_status load_all(const loader *ld, js_config *cfg)
{
    const js_yaml_node *root = js_yaml_doc_root(ld->doc);
    const char *s;
    const js_yaml_node *v;
    JS_GUARD(js_yaml_expect_type(ld->doc, root, "", JS_YAML_MAPPING, ld->err));
    /* Before unknown keys, so the message says where the setting went. */
    for (size_t i = 0; i < js_yaml_map_len(root); i++)
        for (size_t k = 0; k < COUNT(k_moved_keys); k++)
            if (strcmp(js_yaml_map_key_str(root, i), k_moved_keys[k].key) == 0)
                return fail(ld, js_yaml_map_key_line(root, i), NULL, JS_R_CONFIG_MOVED_TO_POLICY,
                            "%s", k_moved_keys[k].problem);
    JS_GUARD(js_yaml_check_keys(ld->doc, root, "", k_top_keys, COUNT(k_top_keys), ld->err));
    JS_GUARD(get_string(ld, root, "", "listen", true, &s, &v));
    JS_GUARD(check_listen(ld, v, s));
    JS_GUARD(dup_str(s, &cfg->listen, ld->err));
    JS_GUARD(load_tls(ld, root, cfg));
    JS_GUARD(load_workers(ld, root, cfg));
    JS_GUARD(load_hsm(ld, root, cfg));
    JS_GUARD(load_keys(ld, root, cfg));
    JS_GUARD(load_default_key(ld, root, cfg));
    JS_GUARD(load_issuer(ld, root, cfg));
    JS_GUARD(get_path(ld, root, "", "policy", &cfg->policy_path));
    JS_GUARD(load_state_dir(ld, root, cfg));
    JS_GUARD(load_audit(ld, root, cfg));
    JS_GUARD(load_http(ld, root, cfg));
    JS_GUARD(load_lifecycle(ld, root, cfg));
    JS_GUARD(load_limits(ld, root, cfg));
    JS_GUARD(load_externaljwt(ld, root, cfg));
    JS_GUARD(load_introspection(ld, root, cfg));
    return JS_OK;
}

/* The absolute directory holding path, so relative paths survive a later chdir. */
static js_status config_dir(const char *path, char **out, js_err *err)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (slash == NULL)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    JS_ENSURE_ALLOC(dir, err);
    char *abs = realpath(dir, NULL);
    int e = errno;
    free(dir);
    if (abs == NULL)
        return js_err_set(err, JS_ECONFIG, JS_R_CONFIG_IO, "%s: cannot resolve its directory: %s",
                          path, strerror(e));
    *out = abs;
    return JS_OK;
}

js_status js_config_load(const char *path, js_config **out, js_err *err)
{
    JS_ENSURE(path != NULL && out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARGS,
              "js_config_load: bad arguments");
    *out = NULL;
    const js_yaml_opts opts = {.domain = "config", .status = JS_ECONFIG};
    js_yaml_doc *doc = NULL;
    JS_GUARD(js_yaml_load_file(path, &opts, &doc, err));

    js_config *cfg = calloc(1, sizeof(*cfg));
    char *dir = NULL;
    js_status st = cfg ? JS_OK : js_err_oom(err);
    if (st == JS_OK)
        st = dup_str(path, &cfg->path, err);
    if (st == JS_OK)
        st = config_dir(path, &dir, err);
    if (st == JS_OK) {
        const loader ld = {.doc = doc, .dir = dir, .err = err};
        st = load_all(&ld, cfg);
    }
    free(dir);
    js_yaml_doc_free(doc);
    if (st != JS_OK) {
        js_config_free(cfg);
        return st;
    }
    *out = cfg;
    return JS_OK;
}

void js_config_free(js_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_client_ca);
    free(cfg->hsm_module);
    free(cfg->hsm_token);
    free(cfg->pin_file);
    free(cfg->pin_env);
    free(cfg->http_listen);
    free(cfg->http_tls_cert);
    free(cfg->http_tls_key);
    free(cfg->http_client_ca);
    free(cfg->http_jwks_uri);
    free(cfg->externaljwt_socket);
    for (size_t i = 0; i < cfg->nkeys; i++) {
        free(cfg->keys[i].name);
        free(cfg->keys[i].label);
    }
    free(cfg->keys);
    free(cfg->default_key);
    free(cfg->issuer);
    free(cfg->policy_path);
    free(cfg->state_dir);
    free(cfg->audit_dir);
    free(cfg->audit_key_label);
    free(cfg->audit_origin);
    free(cfg);
}

const js_key_config *js_config_find_key(const js_config *cfg, const char *name)
{
    if (cfg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < cfg->nkeys; i++)
        if (cfg->keys[i].name != NULL && strcmp(cfg->keys[i].name, name) == 0)
            return &cfg->keys[i];
    return NULL;
}

/* ---- the PIN ----------------------------------------------------------------------- */

/* Copies pin[0..n) into the caller's buffer; the message never includes the PIN. */
static js_status deliver_pin(const char *what, const char *pin, size_t n, char *buf, size_t cap,
                             size_t *len, js_err *err)
{
    JS_ENSURE(n > 0, err, JS_ECONFIG, JS_R_CONFIG_PIN_EMPTY, "%s: the PIN is empty", what);
    JS_ENSURE(memchr(pin, '\0', n) == NULL, err, JS_ECONFIG, JS_R_CONFIG_PIN_INVALID,
              "%s: the PIN contains a NUL byte", what);
    JS_ENSURE(n <= JS_HSM_PIN_MAX && n < cap, err, JS_ECONFIG, JS_R_CONFIG_PIN_TOO_LONG,
              "%s: the PIN is longer than %zu bytes", what,
              (size_t)JS_HSM_PIN_MAX < cap - 1 ? (size_t)JS_HSM_PIN_MAX : cap - 1);
    memcpy(buf, pin, n);
    buf[n] = '\0';
    if (len)
        *len = n;
    return JS_OK;
}

static js_status read_pin_file(const char *path, char *buf, size_t cap, size_t *len, js_err *err)
{
    char *text = NULL;
    size_t got = 0;
    js_file_info fi;
    js_file_fail ff =
        js_file_read(path, PIN_FILE_MAX, JS_FILE_FOLLOW | JS_FILE_SECRET, &text, &got, &fi);
    if (ff == JS_FILE_OPEN)
        return js_err_set(err, JS_ECONFIG, JS_R_CONFIG_PIN_FILE, "pin_file %s: cannot open: %s",
                          path, strerror(fi.sys_errno));
    if (ff == JS_FILE_NOT_REGULAR)
        return js_err_set(err, JS_ECONFIG, JS_R_CONFIG_PIN_FILE, "pin_file %s: not a regular file",
                          path);
    /*
     * A library cannot warn, so the line is drawn where the PIN is certainly
     * exposed: readable (or replaceable) by every user. Group access is left to
     * the deployment (e.g. a root:jwt-signer 0640 file). Checked before the
     * other outcomes of the read, as it was when it came before the read.
     */
    js_status st = JS_OK;
    if (fi.stat_ok && (fi.mode & (S_IROTH | S_IWOTH)))
        st = js_err_set(err, JS_ECONFIG, JS_R_CONFIG_PIN_FILE_MODE,
                        "pin_file %s: must not be accessible by all users (mode %04o); "
                        "chmod o-rw",
                        path, (unsigned)(fi.mode & 07777));
    else if (ff == JS_FILE_READ)
        st = js_err_set(err, JS_ECONFIG, JS_R_CONFIG_PIN_FILE, "pin_file %s: read failed: %s", path,
                        strerror(fi.sys_errno));
    else if (ff == JS_FILE_TOO_LARGE)
        st = js_err_set(err, JS_ECONFIG, JS_R_CONFIG_PIN_FILE,
                        "pin_file %s: larger than %d bytes; expected one line", path, PIN_FILE_MAX);
    else if (ff != JS_FILE_OK)
        st = js_err_oom(err);
    if (st == JS_OK) {
        /* The first line, without its terminator (LF or CRLF). */
        const char *nl = memchr(text, '\n', got);
        size_t n = nl ? (size_t)(nl - text) : got;
        while (n > 0 && (text[n - 1] == '\r' || text[n - 1] == '\n'))
            n--;
        char what[JS_MSG_MAX / 2];
        snprintf(what, sizeof(what), "pin_file %s", path);
        st = deliver_pin(what, text, n, buf, cap, len, err);
    }
    if (text != NULL) {
        OPENSSL_cleanse(text, got);
        free(text);
    }
    return st;
}

js_status js_config_read_pin(const js_config *cfg, char *buf, size_t cap, size_t *len, js_err *err)
{
    JS_ENSURE(cfg != NULL && buf != NULL && cap > 0, err, JS_EINTERNAL, JS_R_INTERNAL_ARGS,
              "js_config_read_pin: bad arguments");
    buf[0] = '\0';
    if (len)
        *len = 0;
    if (cfg->pin_file != NULL)
        return read_pin_file(cfg->pin_file, buf, cap, len, err);
    JS_ENSURE(cfg->pin_env != NULL, err, JS_ECONFIG, JS_R_CONFIG_PIN_SOURCE,
              "neither pin_file nor pin_env is configured");
    /*
     * The environment's copy is not ours to wipe (getenv returns the process's
     * own storage); main may unsetenv it once the PIN has been used.
     */
    const char *v = getenv(cfg->pin_env);
    JS_ENSURE(v != NULL, err, JS_ECONFIG, JS_R_CONFIG_PIN_ENV,
              "environment variable %s (hsm.pin_env) is not set", cfg->pin_env);
    char what[JS_MSG_MAX / 2];
    snprintf(what, sizeof(what), "environment variable %s", cfg->pin_env);
    return deliver_pin(what, v, strlen(v), buf, cap, len, err);
}
