/*
 * test_token.h - the SoftHSM fixture the core's unit tests share (keyring,
 * pipeline, control plane): a temporary directory, a SoftHSM configuration
 * whose token directory lives in it, one initialised token, and a signer
 * configuration naming one ES256 key on that token. Real parts, made for the
 * test; nothing here is mocked.
 *
 * Header-only (static functions), included by one test file each.
 */
#ifndef JS_TEST_TOKEN_H
#define JS_TEST_TOKEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "err.h"

#define TEST_TOKEN_MODULE "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
#define TEST_TOKEN_PIN    "1234abcd"
#define TEST_TOKEN_SO_PIN "so-5678efgh"

/* system(3) with the command's output discarded; -1 if it does not fit. */
static inline int test_run_quiet(const char *cmd)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s >/dev/null 2>&1", cmd);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -1;
    return system(line);
}

/* Writes text to path; 0 on success. */
static inline int test_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/*
 * Makes dir (a mkdtemp template of at most 64 bytes, e.g.
 * "/tmp/js_x_test.XXXXXX"), a SoftHSM configuration in it (SOFTHSM2_CONF is
 * set, so this must precede any js_hsm_open) and a token labelled `label`
 * with TEST_TOKEN_PIN. module (cap bytes) gets JS_SOFTHSM_MODULE or the
 * Debian path. 0 on success.
 */
static inline int test_token_setup(char dir[64], const char *label, char *module, size_t cap)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    const char *mod = getenv("JS_SOFTHSM_MODULE");
    snprintf(module, cap, "%s", mod != NULL && mod[0] ? mod : TEST_TOKEN_MODULE);
    char path[256], tokens[256], cmd[512], conf[512];
    snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
    snprintf(tokens, sizeof(tokens), "%s/tokens", dir);
    snprintf(conf, sizeof(conf),
             "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens);
    if (test_write_text(path, conf) != 0 || setenv("SOFTHSM2_CONF", path, 1) != 0 ||
        mkdir(tokens, 0700) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label '%s' --pin '%s' --so-pin '%s'", label,
             TEST_TOKEN_PIN, TEST_TOKEN_SO_PIN);
    return test_run_quiet(cmd) == 0 ? 0 : -1;
}

/* Removes dir and everything in it; 0 on success. */
static inline int test_token_teardown(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return test_run_quiet(cmd) == 0 ? 0 : -1;
}

/*
 * Writes dir/config.yaml for a signer on `module`, token `token_label`, with
 * one ES256 key `key` under HSM label `label`, the policy file `policy` and
 * the audit origin `origin`, and loads it into *cfg.
 */
static inline js_status test_signer_config(const char *dir, const char *module,
                                           const char *token_label, const char *key,
                                           const char *label, const char *issuer,
                                           const char *policy, const char *origin, js_config **cfg,
                                           js_err *err)
{
    char path[256], text[2048];
    snprintf(path, sizeof(path), "%s/config.yaml", dir);
    snprintf(text, sizeof(text),
             "listen: \"127.0.0.1:0\"\n"
             "tls:\n  cert: server.crt\n  key: server.key\n  client_ca: ca.crt\n"
             "hsm:\n  module: %s\n  token: \"pkcs11:token=%s\"\n  pin_file: pin.txt\n"
             "keys:\n  - name: %s\n    label: %s\n    alg: ES256\n"
             "issuer: \"%s\"\n"
             "policy: %s\n"
             "audit:\n  dir: audit\n  key_label: audit\n  origin: \"%s\"\n",
             module, token_label, key, label, issuer, policy, origin);
    if (test_write_text(path, text) != 0)
        return js_err_set(err, JS_EUNAVAIL, JS_R_CONFIG_IO, "cannot write %s", path);
    return js_config_load(path, cfg, err);
}

#endif
