/*
 * test_hsm_signer.c - the one HSM signing callback (signer/core/hsm_signer.h)
 * against a real SoftHSM token made for the test: a signature it makes
 * verifies with the key's public half (ES256, JOSE r||s, RFC 7518 §3.4) and
 * leaves failed false; a C_Sign the token refuses (through the fault-injecting
 * p11shim, when ctest provides it) is returned and sets failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "hsm.h"
#include "hsm_signer.h"

#define DEFAULT_MODULE "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
#define TOKEN_LABEL    "jshsmsigner"
#define PIN            "1234abcd"
#define SO_PIN         "so-5678efgh"
#define URI            "pkcs11:token=" TOKEN_LABEL
#define LABEL          "audit"

typedef struct fixture {
    char dir[64];
    char shim_ctl[128]; /* "" when not run through p11shim */
    js_hsm *hsm;
    js_hsm_session *s;
    js_hsm_key *key;
} fixture;

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* Replaces the shim's rules atomically (it re-reads the file when it changes). */
static void shim_rules(const fixture *f, const char *text)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->shim_ctl);
    assert_int_equal(write_text(tmp, text), 0);
    assert_int_equal(rename(tmp, f->shim_ctl), 0);
}

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/js_hsm_signer_test.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    const char *env_mod = getenv("JS_SOFTHSM_MODULE");
    const char *module = env_mod != NULL && env_mod[0] ? env_mod : DEFAULT_MODULE;
    char path[256], tokens[256], cmd[512], conf[512];
    snprintf(path, sizeof(path), "%s/softhsm2.conf", f->dir);
    snprintf(tokens, sizeof(tokens), "%s/tokens", f->dir);
    snprintf(conf, sizeof(conf),
             "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens);
    if (write_text(path, conf) != 0 || setenv("SOFTHSM2_CONF", path, 1) != 0 ||
        mkdir(tokens, 0700) != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label '%s' --pin '%s' --so-pin '%s' "
             ">/dev/null 2>&1",
             TOKEN_LABEL, PIN, SO_PIN);
    if (system(cmd) != 0)
        return -1;
    /* Through p11shim (tests/p11shim) when ctest provides it, so the token
     * can be made to refuse; it forwards to SoftHSM otherwise. */
    const char *shim = getenv("JS_P11SHIM");
    if (shim != NULL && shim[0] != '\0') {
        snprintf(f->shim_ctl, sizeof(f->shim_ctl), "%s/shim.ctl", f->dir);
        if (setenv("JS_P11SHIM_MODULE", module, 1) != 0 ||
            setenv("JS_P11SHIM_CONTROL", f->shim_ctl, 1) != 0 || write_text(f->shim_ctl, "ok\n"))
            return -1;
        module = shim;
    }
    js_err err = {0};
    if (js_hsm_open(module, URI, PIN, strlen(PIN), &f->hsm, &err) != JS_OK ||
        js_hsm_session_open(f->hsm, &f->s, &err) != JS_OK ||
        js_hsm_keygen(f->hsm, f->s, LABEL, JS_ALG_ES256, 0, &err) != JS_OK ||
        js_hsm_key_find(f->hsm, f->s, LABEL, JS_ALG_ES256, &f->key, &err) != JS_OK) {
        fprintf(stderr, "set-up: %s: %s\n", js_reason_name(err.reason), err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    if (f == NULL)
        return 0;
    js_hsm_key_free(f->key);
    js_hsm_session_free(f->s);
    js_hsm_free(f->hsm);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    free(f);
    return 0;
}

/* ES256 r||s verified with the public key (RFC 7518 §3.4). */
static bool es256_verifies(EVP_PKEY *pub, const uint8_t *msg, size_t len, const uint8_t *sig,
                           size_t sig_len)
{
    if (sig_len != 64)
        return false;
    ECDSA_SIG *es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    uint8_t *der = NULL;
    int der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    bool ok = der_len > 0 && EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, pub) == 1 &&
              EVP_DigestVerify(m, der, (size_t)der_len, msg, len) == 1;
    EVP_MD_CTX_free(m);
    OPENSSL_free(der);
    return ok;
}

static void test_signs_with_the_key(void **state)
{
    fixture *f = *state;
    js_hsm_signer signer = {f->s, f->key, true};
    static const uint8_t msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    js_err err = {0};
    assert_int_equal(
        js_hsm_signer_sign(&signer, msg, sizeof(msg) - 1, sig, sizeof(sig), &sig_len, &err), JS_OK);
    assert_false(signer.failed);
    assert_true(es256_verifies(js_hsm_key_public(f->key), msg, sizeof(msg) - 1, sig, sig_len));
}

static void test_a_refused_sign_sets_failed(void **state)
{
    fixture *f = *state;
    if (f->shim_ctl[0] == '\0')
        skip(); /* needs p11shim (JS_P11SHIM) */
    shim_rules(f, "fail C_Sign CKR_FUNCTION_FAILED\nfail C_SignInit CKR_FUNCTION_FAILED\n");
    js_hsm_signer signer = {f->s, f->key, false};
    static const uint8_t msg[] = "checkpoint body";
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    js_err err = {0};
    js_status st =
        js_hsm_signer_sign(&signer, msg, sizeof(msg) - 1, sig, sizeof(sig), &sig_len, &err);
    shim_rules(f, "ok\n");
    assert_int_not_equal(st, JS_OK);
    assert_true(signer.failed);
    /* The same signer signs again once the token does. */
    assert_int_equal(
        js_hsm_signer_sign(&signer, msg, sizeof(msg) - 1, sig, sizeof(sig), &sig_len, &err), JS_OK);
    assert_false(signer.failed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signs_with_the_key),
        cmocka_unit_test(test_a_refused_sign_sets_failed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
