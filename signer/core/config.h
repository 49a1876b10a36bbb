/*
 * config.h - jwt-signerd's configuration file (YAML, read with libyaml).
 *
 * The file is validated completely at load: unknown keys, wrong types, bad
 * durations, missing required keys and contradictions are errors that name
 * the key and its line ("config.yaml:12: keys[0].alg: ..."). Relative paths
 * in the file are resolved against the directory holding the file, so a
 * config directory can be moved as a whole.
 *
 * The PIN is never in this file: only where it comes from (pin_file or
 * pin_env). js_config_read_pin() fetches it into a caller buffer that the
 * caller wipes.
 *
 * Who may sign what, and for how long, is not here: it is in the policy file
 * named by `policy` (policy/policy.h). The keys this file used to carry for
 * that (allowed_callers, lifetime) are rejected with an error saying where
 * they went. The audit log (audit/auditlog.h) is configured by the required
 * `audit` mapping.
 *
 * A js_config is immutable after js_config_load() and is read by every
 * thread; it is a plain record (fields public, read-only by convention) freed
 * with js_config_free().
 */
#ifndef JS_CONFIG_H
#define JS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alg.h"
#include "err.h"
#include "names.h" /* JS_KEY_NAME_MAX */

#define JS_CONFIG_MAX_KEYS    64
#define JS_CONFIG_MAX_WORKERS 256

/* audit.* defaults and bounds. */
#define JS_CONFIG_AUDIT_INTERVAL_MS    1000u
#define JS_CONFIG_AUDIT_RECORDS        1000u
#define JS_CONFIG_AUDIT_RECORDS_MAX    1000000u
#define JS_CONFIG_AUDIT_SEGMENT_BYTES  (64u * 1024u * 1024u)
#define JS_CONFIG_AUDIT_SEGMENT_MIN    65536u
#define JS_CONFIG_AUDIT_SEGMENT_MAX    (UINT64_C(1) << 40)
#define JS_CONFIG_AUDIT_MIN_FREE_BYTES (256u * 1024u * 1024u) /* = JS_AUDIT_MIN_FREE_DEFAULT */
#define JS_CONFIG_AUDIT_MIN_FREE_MAX   (UINT64_C(1) << 50)
#define JS_CONFIG_LIMIT_MAX            1000000
#define JS_CONFIG_AUDIT_ORIGIN_MAX     256
/* introspection.max_tokens: default and bounds. */
#define JS_CONFIG_INDEX_DEFAULT 1000000u
#define JS_CONFIG_INDEX_MAX     100000000u
/* sockaddr_un.sun_path holds 108 bytes on Linux, NUL included (unix(7)). */
#define JS_CONFIG_SUN_PATH_MAX 107
/* The ExternalJWTSigner socket's mode may grant at most owner and group
 * read/write: kube-apiserver is the only intended peer. */
#define JS_CONFIG_EXTERNALJWT_MODE 0660u

typedef struct js_key_config {
    char *name;    /* [A-Za-z0-9._-]{1,64}, unique */
    char *label;   /* CKA_LABEL of the key pair in the token */
    js_alg alg;    /* must be js_alg_supported() */
    unsigned bits; /* RSA modulus size for keygen: 2048 or 3072 (RS256/PS256 only); 0 = absent,
                      meaning 2048 */
    int64_t rotation_period; /* automatic rotation, seconds; 0 = manual only */
} js_key_config;

typedef struct js_config {
    char *path;   /* the file this was loaded from */
    char *listen; /* "host:port" for gRPC; required */

    char *tls_cert;      /* server certificate chain, PEM */
    char *tls_key;       /* server private key, PEM */
    char *tls_client_ca; /* CA bundle that client certificates must chain to */

    int workers; /* 1..JS_CONFIG_MAX_WORKERS; 0 in the file or absent = CPUs */

    char *hsm_module; /* path of the PKCS#11 module */
    char *hsm_token;  /* PKCS#11 URI selecting the token (RFC 7512) */
    char *pin_file;   /* exactly one of pin_file, pin_env */
    char *pin_env;

    js_key_config *keys;
    size_t nkeys;
    char *default_key; /* name of one of keys; defaults to the first */

    /*
     * iss of every token; optional (NULL when absent) because the policy file
     * may set it instead. The signer requires at least one of the two.
     */
    char *issuer;

    char *policy_path; /* the policy file (policy/policy.h); required */
    /* state_dir: incident mode, frozen callers, key versions, the audit key in
     * force; default <config dir>/state (never NULL once loaded). */
    char *state_dir;

    /* audit: the audit log (audit/auditlog.h); the mapping is required. */
    char *audit_dir;       /* log directory; required; need not exist yet */
    char *audit_key_label; /* CKA_LABEL of the ES256 audit key pair; required, 1..128 bytes,
                              differs from every keys[].label */
    char *audit_origin;    /* log origin id, printable ASCII 1..256; NULL = use the issuer */
    uint64_t audit_checkpoint_interval_ms; /* checkpoint_interval; default 1000 */
    uint64_t audit_checkpoint_records;     /* 1..1000000; default 1000 */
    uint64_t audit_heartbeat_ms;           /* >= the interval; default = the interval */
    uint64_t audit_segment_bytes;          /* 65536..2^40; default 64 MiB */
    bool audit_fsync;              /* default true; false is for benchmarks and tests only */
    uint64_t audit_min_free_bytes; /* disk watermark; default 256 MiB; 0 = no check */
    /* limits: the denial budget (denials.h); 0 = its default. */
    uint64_t denials_per_second;
    uint64_t denials_burst;
    uint64_t denials_total_per_second;
    uint64_t denials_total_burst;

    /* http: JWKS, health and metrics over HTTP (libmicrohttpd); NULL = off.
     * Plain HTTP only on loopback; elsewhere tls_cert and tls_key. */
    char *http_listen;
    char *http_tls_cert;
    char *http_tls_key;
    char *http_client_ca;      /* client certificates' CA bundle (POST /introspect); NULL = none */
    int64_t http_jwks_max_age; /* seconds; default 300 */
    char *http_jwks_uri;       /* the JWKS's public URL for discovery (discovery.h);
                                  NULL = issuer + /.well-known/jwks.json */

    /* externaljwt: Kubernetes' ExternalJWTSigner on a Unix domain socket
     * (k8s.io/externaljwt; signer/rpc/rpc_k8s.c); NULL socket = off. */
    char *externaljwt_socket;  /* absolute path, at most JS_CONFIG_SUN_PATH_MAX bytes */
    int64_t externaljwt_uid;   /* owner; -1 = the daemon's own */
    int64_t externaljwt_gid;   /* group; -1 = the daemon's own */
    unsigned externaljwt_mode; /* permission bits, a subset of 0660; default 0660 */

    /* introspection: the issued-token index (tokindex.h) and RFC 7662
     * introspection (introspect.h); off when the section is absent. */
    bool introspection;
    uint64_t introspection_max_tokens; /* the index cap; default JS_CONFIG_INDEX_DEFAULT */
    int64_t introspection_leeway;      /* seconds a token stays active past exp; default 0 */

    /* key_lifecycle (keystate.h). */
    int64_t key_prepublish; /* a new version is published this long before it signs;
                               default http_jwks_max_age */
    int64_t key_leeway;     /* added to the longest max_ttl before unpublishing; default 60 */
} js_config;

js_status js_config_load(const char *path, js_config **out, js_err *err) JS_WUR;
void js_config_free(js_config *cfg);

const js_key_config *js_config_find_key(const js_config *cfg, const char *name);

/*
 * Reads the PIN from pin_file (first line, trailing CR/LF removed) or from the
 * environment variable pin_env into buf (NUL-terminated). The caller wipes buf
 * with OPENSSL_cleanse. Errors name the file or variable, never the content.
 */
js_status js_config_read_pin(const js_config *cfg, char *buf, size_t cap, size_t *len,
                             js_err *err) JS_WUR;

#endif
