/*
 * test_hsm.c - hsm.c against a real SoftHSM token made in a temporary
 * directory: token selection by PKCS#11 URI (RFC 7512), login failures that
 * must not leak the PIN, key generation policy (sensitive, never extractable),
 * key lookup errors, signatures of every algorithm (ES256/ES384 RFC 7518 §3.4,
 * RS256 §3.3, PS256 §3.5, EdDSA RFC 8037) verified independently with OpenSSL,
 * wrong key types and RSA keys below 2048 bits refused, recovery from a dropped session, and
 * concurrent signing on one session per thread. Through the fault-injecting shim
 * (tests/p11shim, SoftHSM behind it): the self-healing state machine — recovery after every
 * handle died, backoff while the token stays away, module re-initialisation, a different key
 * under the same label refused, health counters and observer events, and signers on several
 * threads while all that happens. Key generation gives signing keys no other usage. The test
 * inspects the token through its own PKCS#11 session (only the test does this besides hsm.c) to
 * check attributes the module API deliberately cannot read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "clock.h"
#include "hsm.h"

#define DEFAULT_MODULE "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
#define TOKEN_LABEL    "jstest"
#define TOKEN2_LABEL   "jstest-other"
#define PIN            "1234abcd"
#define WRONG_PIN      "9876zyxw"
#define SO_PIN         "so-5678efgh"
#define URI            "pkcs11:token=" TOKEN_LABEL
#define THREAD_SIGNS   200

#if defined(__SANITIZE_ADDRESS__)
/*
 * SoftHSM 2.6.1 leaks an ASN1_STRING in every C_SignInit with an Ed25519 key;
 * tests/lsan.supp suppresses it by the C_SignInit frame, which only a slow
 * unwind through libcrypto (built without frame pointers) can see.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}
#endif

typedef struct fixture {
    char dir[64];
    char module[512];
    char shim_ctl[128];
} fixture;

/* ---------------------------------------------------------------------------------------- */
/* Token set-up and helpers.                                                                */

static int run_quiet(const char *cmd)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "%s >/dev/null 2>&1", cmd);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -1;
    return system(line);
}

static int init_token(const char *label)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label '%s' --pin '%s' --so-pin '%s'", label, PIN,
             SO_PIN);
    return run_quiet(cmd);
}

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/js_hsm_test.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        goto fail;
    const char *mod = getenv("JS_SOFTHSM_MODULE");
    snprintf(f->module, sizeof(f->module), "%s", mod != NULL && mod[0] ? mod : DEFAULT_MODULE);

    char path[256], tokens[256];
    snprintf(path, sizeof(path), "%s/softhsm2.conf", f->dir);
    snprintf(tokens, sizeof(tokens), "%s/tokens", f->dir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        goto fail;
    fprintf(fp, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens);
    if (fclose(fp) != 0)
        goto fail;
    /* SoftHSM reads SOFTHSM2_CONF in C_Initialize, so this must precede any js_hsm_open. */
    if (setenv("SOFTHSM2_CONF", path, 1) != 0)
        goto fail;
    /* The fault-injecting shim (tests/p11shim) forwards to this module, driven by this file. */
    snprintf(f->shim_ctl, sizeof(f->shim_ctl), "%s/shim.ctl", f->dir);
    if (setenv("JS_P11SHIM_MODULE", f->module, 1) != 0 ||
        setenv("JS_P11SHIM_CONTROL", f->shim_ctl, 1) != 0)
        goto fail;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "mkdir -m 0700 '%s'", tokens);
    if (run_quiet(cmd) != 0 || init_token(TOKEN_LABEL) != 0 || init_token(TOKEN2_LABEL) != 0)
        goto fail;
    *state = f;
    return 0;
fail:
    free(f);
    return -1;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = run_quiet(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static js_hsm *open_ok(const fixture *f)
{
    js_hsm *hsm = NULL;
    js_err err;
    js_err_clear(&err);
    js_status st = js_hsm_open(f->module, URI, PIN, strlen(PIN), &hsm, &err);
    if (st != JS_OK)
        print_error("js_hsm_open: %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_int_equal(st, JS_OK);
    assert_non_null(hsm);
    return hsm;
}

static js_hsm_session *session_ok(js_hsm *hsm)
{
    js_hsm_session *s = NULL;
    js_err err;
    assert_int_equal(js_hsm_session_open(hsm, &s, &err), JS_OK);
    assert_non_null(s);
    return s;
}

static js_hsm_key *keygen_find_alg_ok(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg)
{
    js_err err;
    js_hsm_key *key = NULL;
    js_status st = js_hsm_keygen(hsm, s, label, alg, 0, &err);
    if (st != JS_OK)
        print_error("keygen: %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_int_equal(st, JS_OK);
    st = js_hsm_key_find(hsm, s, label, alg, &key, &err);
    if (st != JS_OK)
        print_error("find: %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_int_equal(st, JS_OK);
    assert_non_null(key);
    return key;
}

static js_hsm_key *keygen_find_ok(js_hsm *hsm, js_hsm_session *s, const char *label)
{
    return keygen_find_alg_ok(hsm, s, label, JS_ALG_ES256);
}

/* Independent check of a JOSE ECDSA signature: r||s -> DER ECDSA-Sig-Value, EVP_DigestVerify. */
static bool es_verify(EVP_PKEY *pub, const EVP_MD *md_alg, size_t field_len, const uint8_t *msg,
                      size_t msg_len, const uint8_t *sig, size_t sig_len)
{
    if (sig_len != 2 * field_len)
        return false;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)field_len, NULL);
    BIGNUM *s = BN_bin2bn(sig + field_len, (int)field_len, NULL);
    unsigned char *der = NULL;
    int der_len = -1;
    bool ok = false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (es == NULL || r == NULL || s == NULL || md == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto out;
    }
    der_len = i2d_ECDSA_SIG(es, &der);
    if (der_len > 0 && EVP_DigestVerifyInit(md, NULL, md_alg, NULL, pub) == 1)
        ok = EVP_DigestVerify(md, der, (size_t)der_len, msg, msg_len) == 1;
out:
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    return ok;
}

static bool es256_verify(EVP_PKEY *pub, const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                         size_t sig_len)
{
    return es_verify(pub, EVP_sha256(), 32, msg, msg_len, sig, sig_len);
}

/*
 * Independent OpenSSL verification of a JWS signature for alg: ECDSA via
 * es_verify, RS256 PKCS#1 v1.5 with SHA-256, PS256 PSS with MGF1-SHA256 and a
 * 32-byte salt (RFC 7518 §3.5), EdDSA pure Ed25519 over the message.
 */
static bool alg_verify(js_alg alg, EVP_PKEY *pub, const uint8_t *msg, size_t msg_len,
                       const uint8_t *sig, size_t sig_len)
{
    if (alg == JS_ALG_ES256)
        return es_verify(pub, EVP_sha256(), 32, msg, msg_len, sig, sig_len);
    if (alg == JS_ALG_ES384)
        return es_verify(pub, EVP_sha384(), 48, msg, msg_len, sig, sig_len);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok =
        md != NULL &&
        EVP_DigestVerifyInit(md, &pctx, alg == JS_ALG_EDDSA ? NULL : EVP_sha256(), NULL, pub) == 1;
    if (ok && alg == JS_ALG_PS256)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1;
    ok = ok && EVP_DigestVerify(md, sig, sig_len, msg, msg_len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

/* The test's own PKCS#11 view of the token, for what hsm.c must not expose. */
typedef struct tp11 {
    CK_FUNCTION_LIST *m;
    CK_SESSION_HANDLE h;
    CK_SLOT_ID slot;
} tp11;

static void tp11_open(const fixture *f, tp11 *t)
{
    memset(t, 0, sizeof(*t));
    t->m = p11_kit_module_load(f->module, 0);
    assert_non_null(t->m);
    assert_int_equal(p11_kit_module_initialize(t->m), CKR_OK);
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    assert_int_equal(t->m->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
    bool found = false;
    for (CK_ULONG i = 0; i < n && !found; i++) {
        CK_TOKEN_INFO ti;
        assert_int_equal(t->m->C_GetTokenInfo(slots[i], &ti), CKR_OK);
        size_t len = p11_kit_space_strlen(ti.label, sizeof(ti.label));
        if (len == strlen(TOKEN_LABEL) && memcmp(ti.label, TOKEN_LABEL, len) == 0) {
            t->slot = slots[i];
            found = true;
        }
    }
    assert_true(found);
    assert_int_equal(
        t->m->C_OpenSession(t->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &t->h),
        CKR_OK);
    CK_UTF8CHAR pin[] = PIN;
    CK_RV rv = t->m->C_Login(t->h, CKU_USER, pin, (CK_ULONG)strlen(PIN));
    assert_true(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
}

static void tp11_close(tp11 *t)
{
    assert_int_equal(t->m->C_CloseSession(t->h), CKR_OK);
    assert_int_equal(p11_kit_module_finalize(t->m), CKR_OK);
    p11_kit_module_release(t->m);
}

/* Returns the one object of class cls labelled label (fails the test otherwise). */
static CK_OBJECT_HANDLE tp11_find(tp11 *t, CK_OBJECT_CLASS cls, const char *label)
{
    char lab[JS_LABEL_MAX + 1];
    snprintf(lab, sizeof(lab), "%s", label);
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, lab, strlen(lab)}};
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    assert_int_equal(t->m->C_FindObjectsInit(t->h, tmpl, 2), CKR_OK);
    assert_int_equal(t->m->C_FindObjects(t->h, found, 2, &n), CKR_OK);
    assert_int_equal(t->m->C_FindObjectsFinal(t->h), CKR_OK);
    assert_int_equal(n, 1);
    return found[0];
}

static void tp11_set_label(tp11 *t, CK_OBJECT_HANDLE o, const char *label)
{
    char lab[JS_LABEL_MAX + 1];
    snprintf(lab, sizeof(lab), "%s", label);
    CK_ATTRIBUTE a[] = {{CKA_LABEL, lab, strlen(lab)}};
    assert_int_equal(t->m->C_SetAttributeValue(t->h, o, a, 1), CKR_OK);
}

/* ---------------------------------------------------------------------------------------- */
/* Opening: module, URI, login.                                                             */

static void test_open_ok(void **state)
{
    js_hsm *hsm = open_ok(*state);
    const char *d = js_hsm_token_description(hsm);
    assert_non_null(strstr(d, "token '" TOKEN_LABEL "'"));
    assert_non_null(strstr(d, "serial '"));
    js_hsm_free(hsm);
    js_hsm_free(NULL); /* free accepts NULL */
}

static void test_wrong_pin(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = (js_hsm *)0x1;
    js_err err;
    js_err_clear(&err);
    assert_int_equal(js_hsm_open(f->module, URI, WRONG_PIN, strlen(WRONG_PIN), &hsm, &err),
                     JS_ECONFIG);
    assert_null(hsm);
    assert_int_equal(err.status, JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.login");
    assert_non_null(strstr(err.msg, TOKEN_LABEL));
    assert_non_null(strstr(err.msg, "CKR_PIN_INCORRECT"));
    assert_null(strstr(err.msg, WRONG_PIN));
    assert_null(strstr(err.msg, PIN));

    /* And the token still accepts the right PIN afterwards. */
    js_hsm_free(open_ok(f));
}

static void test_pin_too_long(void **state)
{
    const fixture *f = *state;
    char pin[JS_HSM_PIN_MAX + 2];
    memset(pin, 'p', sizeof(pin) - 1);
    pin[sizeof(pin) - 1] = '\0';
    js_hsm *hsm = NULL;
    js_err err;
    assert_int_equal(js_hsm_open(f->module, URI, pin, strlen(pin), &hsm, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.pin");
    assert_null(strstr(err.msg, "pppp"));
    assert_null(hsm);
}

static void test_uri_no_match(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = NULL;
    js_err err;
    assert_int_equal(
        js_hsm_open(f->module, "pkcs11:token=no-such-token", PIN, strlen(PIN), &hsm, &err),
        JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.token_not_found");
    assert_non_null(strstr(err.msg, "no-such-token"));
    assert_null(hsm);

    /* A serial that does not exist narrows a matching label to nothing. */
    assert_int_equal(
        js_hsm_open(f->module, URI ";serial=0000000000000000", PIN, strlen(PIN), &hsm, &err),
        JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.token_not_found");
}

static void test_uri_ambiguous(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = NULL;
    js_err err;
    /* "pkcs11:" matches every token; SoftHSM here has two initialised ones. */
    assert_int_equal(js_hsm_open(f->module, "pkcs11:", PIN, strlen(PIN), &hsm, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.token_ambiguous");
    assert_null(hsm);
    /* Both share the manufacturer. */
    assert_int_equal(js_hsm_open(f->module, "pkcs11:manufacturer=SoftHSM%20project", PIN,
                                 strlen(PIN), &hsm, &err),
                     JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.token_ambiguous");
}

static void test_uri_malformed(void **state)
{
    const fixture *f = *state;
    static const char *const bad[] = {
        "token=" TOKEN_LABEL,                    /* no scheme */
        "http://example.com/" TOKEN_LABEL,       /* other scheme */
        "pkcs11:token=%zz",                      /* bad percent-encoding */
        "pkcs11:token",                          /* attribute without value */
        "pkcs11:token=" TOKEN_LABEL ";object=k", /* object attributes are not for a token */
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        js_hsm *hsm = NULL;
        js_err err;
        js_err_clear(&err);
        assert_int_equal(js_hsm_open(f->module, bad[i], PIN, strlen(PIN), &hsm, &err), JS_ECONFIG);
        assert_string_equal(js_reason_name(err.reason), "hsm.uri");
        assert_null(hsm);
    }
}

static void test_uri_with_pin_refused(void **state)
{
    const fixture *f = *state;
    static const char *const bad[] = {
        URI "?pin-value=" PIN, URI "?pin-source=file:/etc/pin",
        URI ";pin-value=" PIN,             /* accepted in the path by p11-kit for compatibility */
        "pkcs11:token=%zz?pin-value=" PIN, /* malformed AND carrying a PIN */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        js_hsm *hsm = NULL;
        js_err err;
        js_err_clear(&err);
        assert_int_equal(js_hsm_open(f->module, bad[i], PIN, strlen(PIN), &hsm, &err), JS_ECONFIG);
        assert_string_equal(js_reason_name(err.reason), "hsm.uri");
        assert_null(strstr(err.msg, PIN));
        assert_null(hsm);
    }
}

static void test_module_missing(void **state)
{
    (void)state;
    js_hsm *hsm = NULL;
    js_err err;
    js_err_clear(&err);
    assert_int_equal(js_hsm_open("/nonexistent/dir/libnope.so", URI, PIN, strlen(PIN), &hsm, &err),
                     JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.module");
    assert_non_null(strstr(err.msg, "/nonexistent/dir/libnope.so"));
    assert_null(hsm);

    /* A file that exists but is not a PKCS#11 module. */
    assert_int_equal(js_hsm_open("/etc/hostname", URI, PIN, strlen(PIN), &hsm, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.module");

    assert_int_equal(js_hsm_open("", URI, PIN, strlen(PIN), &hsm, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.module");
}

/* ---------------------------------------------------------------------------------------- */
/* Keys.                                                                                    */

static void test_keygen_and_find(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "kf-es256");

    assert_int_equal(js_hsm_key_alg(key), JS_ALG_ES256);
    assert_string_equal(js_hsm_key_label(key), "kf-es256");
    EVP_PKEY *pub = js_hsm_key_public(key);
    assert_non_null(pub);
    assert_true(EVP_PKEY_is_a(pub, "EC"));
    char group[64];
    size_t glen = 0;
    assert_int_equal(EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                                    sizeof(group), &glen),
                     1);
    assert_string_equal(group, "prime256v1");
    assert_int_equal(EVP_PKEY_get_bits(pub), 256);

    /* Finding it again (on a second session) gives the same public key. */
    js_hsm_session *s2 = session_ok(hsm);
    js_hsm_key *again = NULL;
    js_err err;
    assert_int_equal(js_hsm_key_find(hsm, s2, "kf-es256", JS_ALG_ES256, &again, &err), JS_OK);
    assert_int_equal(EVP_PKEY_eq(pub, js_hsm_key_public(again)), 1);

    js_hsm_key_free(again);
    js_hsm_key_free(key);
    js_hsm_key_free(NULL);
    js_hsm_session_free(s2);
    js_hsm_session_free(s);
    js_hsm_session_free(NULL);
    js_hsm_free(hsm);
}

static void test_keygen_label_exists(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key_free(keygen_find_ok(hsm, s, "dup-label"));

    js_err err;
    js_err_clear(&err);
    assert_int_equal(js_hsm_keygen(hsm, s, "dup-label", JS_ALG_ES256, 0, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.label_exists");
    assert_non_null(strstr(err.msg, "dup-label"));

    /* Still exactly one pair: find is not ambiguous. */
    js_hsm_key *key = NULL;
    assert_int_equal(js_hsm_key_find(hsm, s, "dup-label", JS_ALG_ES256, &key, &err), JS_OK);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

static void test_find_missing(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = (js_hsm_key *)0x1;
    js_err err;
    js_err_clear(&err);
    assert_int_equal(js_hsm_key_find(hsm, s, "no-such-key", JS_ALG_ES256, &key, &err),
                     JS_ENOTFOUND);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_not_found");
    assert_non_null(strstr(err.msg, "no-such-key"));
    assert_null(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

static void test_bad_label_and_alg(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = NULL;
    js_err err;
    char too_long[JS_LABEL_MAX + 2];
    memset(too_long, 'a', sizeof(too_long) - 1);
    too_long[sizeof(too_long) - 1] = '\0';
    const char *const bad[] = {"", too_long, "line\nbreak", "tab\there", NULL};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(js_hsm_key_find(hsm, s, bad[i], JS_ALG_ES256, &key, &err), JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), "hsm.label");
        assert_int_equal(js_hsm_keygen(hsm, s, bad[i], JS_ALG_ES256, 0, &err), JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), "hsm.label");
    }
    /* A label of exactly the maximum length is fine. */
    too_long[JS_LABEL_MAX] = '\0';
    js_hsm_key_free(keygen_find_ok(hsm, s, too_long));

    /* "none" and values outside the enum have no table row and are refused by name. */
    static const js_alg algs[] = {JS_ALG_NONE, (js_alg)99};
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        assert_int_equal(js_hsm_keygen(hsm, s, "alg-test", algs[i], 0, &err), JS_ECONFIG);
        assert_string_equal(js_reason_name(err.reason), "hsm.alg_unsupported");
        assert_int_equal(js_hsm_key_find(hsm, s, "dup-label", algs[i], &key, &err), JS_ECONFIG);
        assert_string_equal(js_reason_name(err.reason), "hsm.alg_unsupported");
    }
    assert_null(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

static void test_private_key_not_extractable(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key_free(keygen_find_ok(hsm, s, "attr-key"));

    tp11 t;
    tp11_open(f, &t);
    CK_OBJECT_HANDLE priv = tp11_find(&t, CKO_PRIVATE_KEY, "attr-key");
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, never_extr = CK_FALSE,
             always_sens = CK_FALSE, token = CK_FALSE, private_ = CK_FALSE, sign = CK_FALSE;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_NEVER_EXTRACTABLE, &never_extr, sizeof(never_extr)},
        {CKA_ALWAYS_SENSITIVE, &always_sens, sizeof(always_sens)},
        {CKA_TOKEN, &token, sizeof(token)},
        {CKA_PRIVATE, &private_, sizeof(private_)},
        {CKA_SIGN, &sign, sizeof(sign)},
    };
    assert_int_equal(t.m->C_GetAttributeValue(t.h, priv, a, sizeof(a) / sizeof(a[0])), CKR_OK);
    assert_int_equal(sensitive, CK_TRUE);
    assert_int_equal(extractable, CK_FALSE);
    assert_int_equal(never_extr, CK_TRUE);
    assert_int_equal(always_sens, CK_TRUE);
    assert_int_equal(token, CK_TRUE);
    assert_int_equal(private_, CK_TRUE);
    assert_int_equal(sign, CK_TRUE);

    /* The token refuses to reveal the private value. */
    uint8_t value[128];
    CK_ATTRIBUTE v[] = {{CKA_VALUE, value, sizeof(value)}};
    assert_int_equal(t.m->C_GetAttributeValue(t.h, priv, v, 1), CKR_ATTRIBUTE_SENSITIVE);

    /* Both halves carry the same 16-byte random CKA_ID. */
    CK_OBJECT_HANDLE pub = tp11_find(&t, CKO_PUBLIC_KEY, "attr-key");
    uint8_t id1[32], id2[32];
    CK_ATTRIBUTE i1[] = {{CKA_ID, id1, sizeof(id1)}}, i2[] = {{CKA_ID, id2, sizeof(id2)}};
    assert_int_equal(t.m->C_GetAttributeValue(t.h, priv, i1, 1), CKR_OK);
    assert_int_equal(t.m->C_GetAttributeValue(t.h, pub, i2, 1), CKR_OK);
    assert_int_equal(i1[0].ulValueLen, 16);
    assert_int_equal(i2[0].ulValueLen, 16);
    assert_memory_equal(id1, id2, 16);

    tp11_close(&t);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* Two pairs, then pair B's public key takes pair A's label: find must notice the mismatch. */
static void test_find_mismatched_pair(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key_free(keygen_find_ok(hsm, s, "mm-a"));
    js_hsm_key_free(keygen_find_ok(hsm, s, "mm-b"));

    tp11 t;
    tp11_open(f, &t);
    CK_OBJECT_HANDLE pub_a = tp11_find(&t, CKO_PUBLIC_KEY, "mm-a");
    CK_OBJECT_HANDLE pub_b = tp11_find(&t, CKO_PUBLIC_KEY, "mm-b");
    assert_int_equal(t.m->C_DestroyObject(t.h, pub_a), CKR_OK);

    js_hsm_key *key = NULL;
    js_err err;
    assert_int_equal(js_hsm_key_find(hsm, s, "mm-a", JS_ALG_ES256, &key, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.public_key_not_found");

    tp11_set_label(&t, pub_b, "mm-a");
    assert_int_equal(js_hsm_key_find(hsm, s, "mm-a", JS_ALG_ES256, &key, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_mismatch");
    assert_null(key);
    tp11_close(&t);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

static void test_find_ambiguous_and_unusable(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key_free(keygen_find_ok(hsm, s, "amb-1"));
    js_hsm_key_free(keygen_find_ok(hsm, s, "amb-2"));
    js_hsm_key_free(keygen_find_ok(hsm, s, "nosign"));

    tp11 t;
    tp11_open(f, &t);
    tp11_set_label(&t, tp11_find(&t, CKO_PRIVATE_KEY, "amb-2"), "amb-1");
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE a[] = {{CKA_SIGN, &no, sizeof(no)}};
    assert_int_equal(t.m->C_SetAttributeValue(t.h, tp11_find(&t, CKO_PRIVATE_KEY, "nosign"), a, 1),
                     CKR_OK);

    js_hsm_key *key = NULL;
    js_err err;
    assert_int_equal(js_hsm_key_find(hsm, s, "amb-1", JS_ALG_ES256, &key, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_ambiguous");
    assert_int_equal(js_hsm_key_find(hsm, s, "nosign", JS_ALG_ES256, &key, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_usage");
    assert_null(key);
    tp11_close(&t);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* ---------------------------------------------------------------------------------------- */
/* Signing.                                                                                 */

static void test_sign_verify(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "sign-es256");
    EVP_PKEY *pub = js_hsm_key_public(key);

    static const uint8_t msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";
    const size_t msg_len = sizeof(msg) - 1;
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    js_err err;
    assert_int_equal(js_hsm_sign(s, key, msg, msg_len, sig, sizeof(sig), &sig_len, &err), JS_OK);
    assert_int_equal(sig_len, 64);
    assert_true(es256_verify(pub, msg, msg_len, sig, sig_len));

    /* Every single-bit flip, in r and in s, breaks the signature. */
    for (size_t i = 0; i < sig_len; i += 7) {
        sig[i] ^= 0x01;
        assert_false(es256_verify(pub, msg, msg_len, sig, sig_len));
        sig[i] ^= 0x01;
    }
    /* So does a changed message. */
    uint8_t other[sizeof(msg)];
    memcpy(other, msg, sizeof(msg));
    other[0] ^= 0x20;
    assert_false(es256_verify(pub, other, msg_len, sig, sig_len));

    /* ECDSA is randomised: a second signature differs and verifies too. */
    uint8_t sig2[64];
    size_t sig2_len = 0;
    assert_int_equal(js_hsm_sign(s, key, msg, msg_len, sig2, sizeof(sig2), &sig2_len, &err), JS_OK);
    assert_true(es256_verify(pub, msg, msg_len, sig2, sig2_len));
    assert_memory_not_equal(sig, sig2, 64);

    /* Empty signing input is still a message. */
    assert_int_equal(js_hsm_sign(s, key, NULL, 0, sig, sizeof(sig), &sig_len, &err), JS_OK);
    assert_true(es256_verify(pub, (const uint8_t *)"", 0, sig, sig_len));

    /* A buffer one byte short is refused before the HSM is asked. */
    assert_int_equal(js_hsm_sign(s, key, msg, msg_len, sig, 63, &sig_len, &err), JS_EINTERNAL);
    assert_string_equal(js_reason_name(err.reason), "hsm.sign");
    assert_int_equal(js_hsm_sign(s, key, NULL, 5, sig, sizeof(sig), &sig_len, &err), JS_EINTERNAL);

    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* A deferred session (the gRPC workers') makes no module call when created
 * and opens its PKCS#11 session on its first sign; freeing one never used is
 * fine too. */
static void test_deferred_session_opens_on_first_use(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "deferred-es256");
    EVP_PKEY *pub = js_hsm_key_public(key);
    js_err err;
    js_hsm_session *unused = NULL;
    assert_int_equal(js_hsm_session_new_deferred(hsm, &unused, &err), JS_OK);
    js_hsm_session_free(unused);
    assert_int_equal(js_hsm_session_new_deferred(NULL, &unused, &err), JS_EINTERNAL);

    js_hsm_session *d = NULL;
    assert_int_equal(js_hsm_session_new_deferred(hsm, &d, &err), JS_OK);
    static const uint8_t msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkIn0";
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            js_hsm_sign(d, key, msg, sizeof(msg) - 1, sig, sizeof(sig), &sig_len, &err), JS_OK);
        assert_true(es256_verify(pub, msg, sizeof(msg) - 1, sig, sig_len));
    }
    js_hsm_session_free(d);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* ES384 is one more table row: SHA-384, P-384, 96-byte r||s (RFC 7518 §3.4). */
static void test_es384_sign_verify_and_type_mismatch(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_alg_ok(hsm, s, "sign-es384", JS_ALG_ES384);
    assert_int_equal(js_hsm_key_alg(key), JS_ALG_ES384);
    assert_int_equal(EVP_PKEY_get_bits(js_hsm_key_public(key)), 384);

    static const uint8_t msg[] = "eyJhbGciOiJFUzM4NCJ9.e30";
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    js_err err;
    assert_int_equal(js_hsm_sign(s, key, msg, sizeof(msg) - 1, sig, sizeof(sig), &sig_len, &err),
                     JS_OK);
    assert_int_equal(sig_len, 96);
    assert_true(
        es_verify(js_hsm_key_public(key), EVP_sha384(), 48, msg, sizeof(msg) - 1, sig, sig_len));
    sig[95] ^= 0x80;
    assert_false(
        es_verify(js_hsm_key_public(key), EVP_sha384(), 48, msg, sizeof(msg) - 1, sig, sig_len));
    assert_int_equal(js_hsm_sign(s, key, msg, sizeof(msg) - 1, sig, 64, &sig_len, &err),
                     JS_EINTERNAL);

    /* A P-384 key is not an ES256 key, and a P-256 key is not an ES384 key. */
    js_hsm_key *wrong = NULL;
    assert_int_equal(js_hsm_key_find(hsm, s, "sign-es384", JS_ALG_ES256, &wrong, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_type");
    js_hsm_key_free(keygen_find_ok(hsm, s, "p256-only"));
    assert_int_equal(js_hsm_key_find(hsm, s, "p256-only", JS_ALG_ES384, &wrong, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_type");
    assert_null(wrong);

    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* ---------------------------------------------------------------------------------------- */
/* Every algorithm.                                                                         */

/* The private key labelled label: sensitive, never extractable, and its secret unreadable. */
static void check_private_key_policy(const fixture *f, const char *label, CK_ATTRIBUTE_TYPE secret)
{
    tp11 t;
    tp11_open(f, &t);
    CK_OBJECT_HANDLE priv = tp11_find(&t, CKO_PRIVATE_KEY, label);
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, never_extr = CK_FALSE,
             always_sens = CK_FALSE, sign = CK_FALSE;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_NEVER_EXTRACTABLE, &never_extr, sizeof(never_extr)},
        {CKA_ALWAYS_SENSITIVE, &always_sens, sizeof(always_sens)},
        {CKA_SIGN, &sign, sizeof(sign)},
    };
    assert_int_equal(t.m->C_GetAttributeValue(t.h, priv, a, sizeof(a) / sizeof(a[0])), CKR_OK);
    assert_int_equal(sensitive, CK_TRUE);
    assert_int_equal(extractable, CK_FALSE);
    assert_int_equal(never_extr, CK_TRUE);
    assert_int_equal(always_sens, CK_TRUE);
    assert_int_equal(sign, CK_TRUE);
    uint8_t value[1024];
    CK_ATTRIBUTE v[] = {{secret, value, sizeof(value)}};
    assert_int_equal(t.m->C_GetAttributeValue(t.h, priv, v, 1), CKR_ATTRIBUTE_SENSITIVE);
    CK_BBOOL verify = CK_FALSE;
    CK_ATTRIBUTE pv[] = {{CKA_VERIFY, &verify, sizeof(verify)}};
    assert_int_equal(t.m->C_GetAttributeValue(t.h, tp11_find(&t, CKO_PUBLIC_KEY, label), pv, 1),
                     CKR_OK);
    assert_int_equal(verify, CK_TRUE);
    tp11_close(&t);
}

static const struct alg_case {
    const char *label;
    js_alg alg;
    unsigned bits;         /* keygen rsa_bits; the public key's size in bits */
    bool keygen;           /* false: the RSA pair of the row before, found as another alg */
    size_t sig_len;        /* exact signature length */
    const char *pkey_type; /* EVP_PKEY_is_a name */
    CK_ATTRIBUTE_TYPE secret;
} k_alg_cases[] = {
    {"all-es256", JS_ALG_ES256, 256, true, 64, "EC", CKA_VALUE},
    {"all-es384", JS_ALG_ES384, 384, true, 96, "EC", CKA_VALUE},
    /* RSA keygen is slow in SoftHSM: one 2048 and one 3072 pair, each used as RS256 and PS256. */
    {"all-rsa2048", JS_ALG_RS256, 2048, true, 256, "RSA", CKA_PRIVATE_EXPONENT},
    {"all-rsa2048", JS_ALG_PS256, 2048, false, 256, "RSA", CKA_PRIVATE_EXPONENT},
    {"all-rsa3072", JS_ALG_PS256, 3072, true, 384, "RSA", CKA_PRIVATE_EXPONENT},
    {"all-rsa3072", JS_ALG_RS256, 3072, false, 384, "RSA", CKA_PRIVATE_EXPONENT},
    {"all-ed25519", JS_ALG_EDDSA, 256, true, 64, "ED25519", CKA_VALUE},
};

static void test_all_algs_sign_verify(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *s = session_ok(hsm);
    static const uint8_t msg[] = "eyJhbGciOiJYIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4In0";
    const size_t msg_len = sizeof(msg) - 1;

    for (size_t i = 0; i < sizeof(k_alg_cases) / sizeof(k_alg_cases[0]); i++) {
        const struct alg_case *c = &k_alg_cases[i];
        js_err err;
        js_err_clear(&err);
        if (c->keygen) {
            unsigned rsa_bits = c->pkey_type[0] == 'R' ? c->bits : 0;
            js_status st = js_hsm_keygen(hsm, s, c->label, c->alg, rsa_bits, &err);
            if (st != JS_OK)
                print_error("%s keygen: %s: %s\n", c->label, js_reason_name(err.reason), err.msg);
            assert_int_equal(st, JS_OK);
        }
        js_hsm_key *key = NULL;
        js_status st = js_hsm_key_find(hsm, s, c->label, c->alg, &key, &err);
        if (st != JS_OK)
            print_error("%s find: %s: %s\n", c->label, js_reason_name(err.reason), err.msg);
        assert_int_equal(st, JS_OK);
        assert_int_equal(js_hsm_key_alg(key), c->alg);
        EVP_PKEY *pub = js_hsm_key_public(key);
        assert_true(EVP_PKEY_is_a(pub, c->pkey_type));
        assert_int_equal(EVP_PKEY_get_bits(pub), c->bits);
        assert_int_equal(js_hsm_key_sig_len(key), c->sig_len);

        uint8_t sig[JS_SIG_MAX];
        size_t sig_len = 0;
        assert_int_equal(js_hsm_sign(s, key, msg, msg_len, sig, sizeof(sig), &sig_len, &err),
                         JS_OK);
        assert_int_equal(sig_len, c->sig_len);
        assert_true(alg_verify(c->alg, pub, msg, msg_len, sig, sig_len));
        /* A flipped byte anywhere (first, middle, last) breaks it; so does another message. */
        const size_t at[] = {0, sig_len / 2, sig_len - 1};
        for (size_t k = 0; k < 3; k++) {
            sig[at[k]] ^= 0x01;
            assert_false(alg_verify(c->alg, pub, msg, msg_len, sig, sig_len));
            sig[at[k]] ^= 0x01;
        }
        assert_false(alg_verify(c->alg, pub, msg, msg_len - 1, sig, sig_len));
        /* An RS256 signature is not a PS256 one, and the other way round (RFC 7518 §3.3/§3.5). */
        if (c->alg == JS_ALG_RS256 || c->alg == JS_ALG_PS256)
            assert_false(alg_verify(c->alg == JS_ALG_RS256 ? JS_ALG_PS256 : JS_ALG_RS256, pub, msg,
                                    msg_len, sig, sig_len));
        /* Ed25519 is deterministic (RFC 8032 §5.1.6); PKCS#1 v1.5 too; ECDSA and PSS are not. */
        uint8_t sig2[JS_SIG_MAX];
        size_t sig2_len = 0;
        assert_int_equal(js_hsm_sign(s, key, msg, msg_len, sig2, sizeof(sig2), &sig2_len, &err),
                         JS_OK);
        assert_int_equal(sig2_len, sig_len);
        bool same = memcmp(sig, sig2, sig_len) == 0;
        assert_int_equal(same, c->alg == JS_ALG_EDDSA || c->alg == JS_ALG_RS256);
        /* Empty input is still a message. */
        assert_int_equal(js_hsm_sign(s, key, NULL, 0, sig, sizeof(sig), &sig_len, &err), JS_OK);
        assert_true(alg_verify(c->alg, pub, (const uint8_t *)"", 0, sig, sig_len));
        /* A buffer one byte short is refused before the HSM is asked. */
        assert_int_equal(js_hsm_sign(s, key, msg, msg_len, sig, c->sig_len - 1, &sig_len, &err),
                         JS_EINTERNAL);
        assert_string_equal(js_reason_name(err.reason), "hsm.sign");

        if (c->keygen)
            check_private_key_policy(f, c->label, c->secret);
        if (c->alg == JS_ALG_EDDSA) {
            /* SoftHSM 2.6.1 takes (and keeps) the curve as the DER OID 1.3.101.112 (RFC 8410). */
            tp11 t;
            tp11_open(f, &t);
            uint8_t params[32];
            CK_ATTRIBUTE a[] = {{CKA_EC_PARAMS, params, sizeof(params)}};
            assert_int_equal(
                t.m->C_GetAttributeValue(t.h, tp11_find(&t, CKO_PUBLIC_KEY, c->label), a, 1),
                CKR_OK);
            static const uint8_t oid[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
            assert_int_equal(a[0].ulValueLen, sizeof(oid));
            assert_memory_equal(params, oid, sizeof(oid));
            tp11_close(&t);
        }
        js_hsm_key_free(key);
    }
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* A key of the wrong type for the requested alg is refused, whatever the pairing. */
static void test_wrong_key_type_for_alg(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_err err;
    assert_int_equal(js_hsm_keygen(hsm, s, "wt-ec", JS_ALG_ES256, 0, &err), JS_OK);
    assert_int_equal(js_hsm_keygen(hsm, s, "wt-ed", JS_ALG_EDDSA, 0, &err), JS_OK);
    assert_int_equal(js_hsm_keygen(hsm, s, "wt-rsa", JS_ALG_RS256, 0, &err), JS_OK);
    static const struct {
        const char *label;
        js_alg alg;
    } wrong[] = {
        {"wt-ec", JS_ALG_RS256},  {"wt-ec", JS_ALG_PS256},  {"wt-ec", JS_ALG_EDDSA},
        {"wt-ed", JS_ALG_ES256},  {"wt-ed", JS_ALG_ES384},  {"wt-ed", JS_ALG_RS256},
        {"wt-rsa", JS_ALG_ES256}, {"wt-rsa", JS_ALG_ES384}, {"wt-rsa", JS_ALG_EDDSA},
    };
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
        js_hsm_key *key = NULL;
        js_err_clear(&err);
        assert_int_equal(js_hsm_key_find(hsm, s, wrong[i].label, wrong[i].alg, &key, &err),
                         JS_ECONFIG);
        assert_string_equal(js_reason_name(err.reason), "hsm.key_type");
        assert_null(key);
    }
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* RFC 7518 §3.3: RS256/PS256 keys MUST be >= 2048 bits; keygen sizes are 2048 or 3072 only. */
static void test_rsa_key_size(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *s = session_ok(hsm);
    js_err err;
    static const struct {
        js_alg alg;
        unsigned bits;
    } bad[] = {
        {JS_ALG_RS256, 1024}, {JS_ALG_PS256, 4096}, {JS_ALG_RS256, 2047},
        {JS_ALG_ES256, 2048}, {JS_ALG_EDDSA, 3072}, {JS_ALG_ES384, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        js_err_clear(&err);
        assert_int_equal(js_hsm_keygen(hsm, s, "size-test", bad[i].alg, bad[i].bits, &err),
                         JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), "hsm.key_size");
    }
    js_hsm_key *key = NULL;
    assert_int_equal(js_hsm_key_find(hsm, s, "size-test", JS_ALG_RS256, &key, &err), JS_ENOTFOUND);

    /* A 1024-bit pair made behind our back (here by the test's own session) is not used. */
    tp11 t;
    tp11_open(f, &t);
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = 1024;
    CK_BYTE f4[] = {0x01, 0x00, 0x01};
    char label[] = "rsa-1024";
    CK_ATTRIBUTE pub_tmpl[] = {{CKA_TOKEN, &yes, sizeof(yes)},
                               {CKA_VERIFY, &yes, sizeof(yes)},
                               {CKA_MODULUS_BITS, &bits, sizeof(bits)},
                               {CKA_PUBLIC_EXPONENT, f4, sizeof(f4)},
                               {CKA_LABEL, label, strlen(label)}};
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},      {CKA_LABEL, label, strlen(label)}};
    CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
    CK_OBJECT_HANDLE pub, priv;
    assert_int_equal(t.m->C_GenerateKeyPair(t.h, &mech, pub_tmpl, 5, priv_tmpl, 6, &pub, &priv),
                     CKR_OK);
    tp11_close(&t);
    for (js_alg alg = JS_ALG_RS256; alg <= JS_ALG_PS256; alg++) {
        js_err_clear(&err);
        assert_int_equal(js_hsm_key_find(hsm, s, "rsa-1024", alg, &key, &err), JS_ECONFIG);
        assert_string_equal(js_reason_name(err.reason), "hsm.key_size");
        assert_non_null(strstr(err.msg, "RSA-1024"));
        assert_null(key);
    }
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* Lists the session handles SoftHSM currently knows (they are small integers). */
static size_t live_sessions(CK_FUNCTION_LIST *raw, CK_SESSION_HANDLE *out, size_t cap)
{
    size_t n = 0;
    for (CK_SESSION_HANDLE h = 1; h <= 256 && n < cap; h++) {
        CK_SESSION_INFO info;
        if (raw->C_GetSessionInfo(h, &info) == CKR_OK)
            out[n++] = h;
    }
    return n;
}

static bool contains(const CK_SESSION_HANDLE *v, size_t n, CK_SESSION_HANDLE h)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == h)
            return true;
    return false;
}

/* The HSM drops a worker's session: the next js_hsm_sign reopens it once and succeeds. */
static void test_sign_after_session_dropped(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *setup = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, setup, "drop-key");

    /* The raw module (same dlopen as the managed one) reaches every session of the process. */
    CK_FUNCTION_LIST *raw = p11_kit_module_load(f->module, P11_KIT_MODULE_UNMANAGED);
    assert_non_null(raw);
    CK_SESSION_HANDLE before[64], after[64];
    size_t nb = live_sessions(raw, before, 64);
    js_hsm_session *s = session_ok(hsm);
    size_t na = live_sessions(raw, after, 64);
    assert_int_equal(na, nb + 1);
    CK_SESSION_HANDLE victim = CK_INVALID_HANDLE;
    for (size_t i = 0; i < na; i++)
        if (!contains(before, nb, after[i]))
            victim = after[i];
    assert_int_not_equal(victim, CK_INVALID_HANDLE);

    static const uint8_t msg[] = "a.b";
    uint8_t sig[64];
    size_t sig_len = 0;
    js_err err;
    assert_int_equal(js_hsm_sign(s, key, msg, 3, sig, sizeof(sig), &sig_len, &err), JS_OK);
    assert_int_equal(raw->C_CloseSession(victim), CKR_OK);

    js_status st = js_hsm_sign(s, key, msg, 3, sig, sizeof(sig), &sig_len, &err);
    if (st != JS_OK)
        print_error("sign after drop: %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_int_equal(st, JS_OK);
    assert_true(es256_verify(js_hsm_key_public(key), msg, 3, sig, sig_len));
    /* ... and keeps working on the new session. */
    assert_int_equal(js_hsm_sign(s, key, msg, 3, sig, sizeof(sig), &sig_len, &err), JS_OK);

    p11_kit_module_release(raw);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_session_free(setup);
    js_hsm_free(hsm);
}

typedef struct worker {
    js_hsm *hsm;
    const js_hsm_key *key;
    int id;
    int signed_ok;
    int verified;
    js_err err;
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    js_hsm_session *s = NULL;
    if (js_hsm_session_open(w->hsm, &s, &w->err) != JS_OK)
        return NULL;
    for (int i = 0; i < THREAD_SIGNS; i++) {
        char msg[64];
        int len = snprintf(msg, sizeof(msg), "header.payload-%d-%d", w->id, i);
        uint8_t sig[64];
        size_t sig_len = 0;
        if (js_hsm_sign(s, w->key, (const uint8_t *)msg, (size_t)len, sig, sizeof(sig), &sig_len,
                        &w->err) != JS_OK)
            break;
        w->signed_ok++;
        if (es256_verify(js_hsm_key_public(w->key), (const uint8_t *)msg, (size_t)len, sig,
                         sig_len))
            w->verified++;
    }
    js_hsm_session_free(s);
    return NULL;
}

static void test_two_threads_sign(void **state)
{
    js_hsm *hsm = open_ok(*state);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "mt-key");

    worker w[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].hsm = hsm;
        w[i].key = key;
        w[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        if (w[i].signed_ok != THREAD_SIGNS)
            print_error("worker %d: %s: %s\n", i, js_reason_name(w[i].err.reason), w[i].err.msg);
        assert_int_equal(w[i].signed_ok, THREAD_SIGNS);
        assert_int_equal(w[i].verified, THREAD_SIGNS);
    }
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* ---------------------------------------------------------------------------------------- */
/* Key usage: CKA_SIGN only.                                                                */

static CK_BBOOL tp11_bool(tp11 *t, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type)
{
    CK_BBOOL v = CK_TRUE;
    CK_ATTRIBUTE a = {type, &v, sizeof(v)};
    assert_int_equal(t->m->C_GetAttributeValue(t->h, o, &a, 1), CKR_OK);
    return v;
}

static void test_keygen_sign_only(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_ok(f);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *rsa = keygen_find_alg_ok(hsm, s, "use-rsa", JS_ALG_RS256);
    js_hsm_key *ec = keygen_find_alg_ok(hsm, s, "use-ec", JS_ALG_ES256);
    assert_null(js_hsm_key_warning(rsa));
    assert_null(js_hsm_key_warning(ec));

    tp11 t;
    tp11_open(f, &t);
    static const char *labels[] = {"use-rsa", "use-ec"};
    for (size_t i = 0; i < 2; i++) {
        CK_OBJECT_HANDLE priv = tp11_find(&t, CKO_PRIVATE_KEY, labels[i]);
        CK_OBJECT_HANDLE pub = tp11_find(&t, CKO_PUBLIC_KEY, labels[i]);
        assert_int_equal(tp11_bool(&t, priv, CKA_SIGN), CK_TRUE);
        assert_int_equal(tp11_bool(&t, priv, CKA_DECRYPT), CK_FALSE);
        assert_int_equal(tp11_bool(&t, priv, CKA_UNWRAP), CK_FALSE);
        assert_int_equal(tp11_bool(&t, priv, CKA_DERIVE), CK_FALSE);
        assert_int_equal(tp11_bool(&t, priv, CKA_SIGN_RECOVER), CK_FALSE);
        assert_int_equal(tp11_bool(&t, pub, CKA_VERIFY), CK_TRUE);
        assert_int_equal(tp11_bool(&t, pub, CKA_ENCRYPT), CK_FALSE);
        assert_int_equal(tp11_bool(&t, pub, CKA_WRAP), CK_FALSE);
    }
    /* The token itself refuses to decrypt with the new RSA key (the reproduction). */
    CK_MECHANISM mech = {CKM_RSA_PKCS, NULL, 0};
    CK_RV rv = t.m->C_DecryptInit(t.h, &mech, tp11_find(&t, CKO_PRIVATE_KEY, "use-rsa"));
    assert_int_equal(rv, CKR_KEY_FUNCTION_NOT_PERMITTED);

    /* A key made the old way (decrypt and unwrap allowed) is found, with a warning. */
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE old_use[] = {{CKA_DECRYPT, &yes, sizeof(yes)}, {CKA_UNWRAP, &yes, sizeof(yes)}};
    assert_int_equal(
        t.m->C_SetAttributeValue(t.h, tp11_find(&t, CKO_PRIVATE_KEY, "use-rsa"), old_use, 2),
        CKR_OK);
    js_hsm_key *old = NULL;
    js_err err;
    assert_int_equal(js_hsm_key_find(hsm, s, "use-rsa", JS_ALG_RS256, &old, &err), JS_OK);
    const char *w = js_hsm_key_warning(old);
    assert_non_null(w);
    assert_non_null(strstr(w, "CKA_DECRYPT"));
    assert_non_null(strstr(w, "CKA_UNWRAP"));
    assert_null(strstr(w, "CKA_DERIVE"));
    assert_non_null(strstr(w, "use-rsa"));
    tp11_close(&t);
    js_hsm_key_free(old);
    js_hsm_key_free(rsa);
    js_hsm_key_free(ec);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

/* ---------------------------------------------------------------------------------------- */
/* Self-healing through the fault-injecting shim.                                           */

typedef struct observed {
    pthread_mutex_t mu;
    int lost, recovered, mismatch, reinit;
    char last_ckr[64];
    int64_t last_duration;
    char last_msg[JS_MSG_MAX];
} observed;

static void observe(void *ctx, const js_hsm_event *ev)
{
    observed *o = ctx;
    pthread_mutex_lock(&o->mu);
    switch (ev->kind) {
    case JS_HSM_EVENT_LOST:
        o->lost++;
        snprintf(o->last_ckr, sizeof(o->last_ckr), "%s", ev->ckr);
        break;
    case JS_HSM_EVENT_RECOVERED:
        o->recovered++;
        o->last_duration = ev->duration_ms;
        break;
    case JS_HSM_EVENT_KEY_MISMATCH:
        o->mismatch++;
        break;
    case JS_HSM_EVENT_REINIT:
        o->reinit++;
        break;
    default:
        break;
    }
    snprintf(o->last_msg, sizeof(o->last_msg), "%s", ev->message);
    pthread_mutex_unlock(&o->mu);
}

/* Replaces the shim's control file atomically (a new inode: the shim sees the change). */
static void shim_ctl(const fixture *f, const char *text)
{
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->shim_ctl);
    FILE *fp = fopen(tmp, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(rename(tmp, f->shim_ctl), 0);
}

static const char *shim_path(void)
{
    const char *p = getenv("JS_P11SHIM");
    if (p == NULL || p[0] == '\0')
        fail_msg("JS_P11SHIM is not set (ctest sets it to the built p11shim module)");
    return p;
}

static unsigned long shim_calls(const char *fn)
{
    void *dl = dlopen(shim_path(), RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(dl);
    /* POSIX dlsym: the object-to-function pointer conversion goes through memcpy (ISO C). */
    void *sym = dlsym(dl, "p11shim_calls");
    assert_non_null(sym);
    unsigned long (*calls)(const char *) = NULL;
    memcpy(&calls, &sym, sizeof(calls));
    unsigned long n = calls(fn);
    dlclose(dl);
    return n;
}

static js_hsm *open_shim(const fixture *f, observed *o)
{
    shim_ctl(f, "ok\n");
    js_hsm *hsm = NULL;
    js_err err;
    js_status st = js_hsm_open(shim_path(), URI, PIN, strlen(PIN), &hsm, &err);
    if (st != JS_OK)
        print_error("js_hsm_open(shim): %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_int_equal(st, JS_OK);
    if (o != NULL) {
        memset(o, 0, sizeof(*o));
        assert_int_equal(pthread_mutex_init(&o->mu, NULL), 0);
        js_hsm_set_observer(hsm, observe, o);
    }
    return hsm;
}

static js_status sign_msg(js_hsm_session *s, const js_hsm_key *k, const char *msg, uint8_t *sig,
                          size_t *len, js_err *err)
{
    return js_hsm_sign(s, k, (const uint8_t *)msg, strlen(msg), sig, JS_SIG_MAX, len, err);
}

/* Every handle dies (token pulled and put back): the next sign re-opens, logs in, re-finds. */
static void test_heal_after_invalidate(void **state)
{
    const fixture *f = *state;
    observed o;
    js_hsm *hsm = open_shim(f, &o);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "heal-key");
    js_hsm_session *w = session_ok(hsm); /* a worker: uses the key's handle from key_find */
    uint8_t sig[JS_SIG_MAX];
    size_t len = 0;
    js_err err;
    assert_int_equal(sign_msg(w, key, "a.b", sig, &len, &err), JS_OK);
    js_hsm_health h;
    js_hsm_health_get(hsm, &h);
    assert_true(h.ok);
    assert_int_equal(h.failures, 0);

    unsigned long logins = shim_calls("C_Login");
    shim_ctl(f, "invalidate\n");
    js_status st = sign_msg(w, key, "c.d", sig, &len, &err);
    if (st != JS_OK)
        print_error("sign after invalidate: %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_int_equal(st, JS_OK);
    assert_true(es256_verify(js_hsm_key_public(key), (const uint8_t *)"c.d", 3, sig, len));
    /* Every session was closed, so the token forgot the login: it logged in again. */
    assert_true(shim_calls("C_Login") > logins);
    js_hsm_health_get(hsm, &h);
    assert_true(h.ok);
    assert_int_equal(h.failures, 1);
    assert_int_equal(h.recoveries, 1);
    assert_int_equal(h.session_heals, 1);
    assert_int_equal(h.sessions_lost, 0);
    assert_true(h.last_change_ms > 0);
    assert_int_equal(o.lost, 1);
    assert_int_equal(o.recovered, 1);
    assert_string_equal(o.last_ckr, "CKR_SESSION_HANDLE_INVALID");
    assert_true(o.last_duration >= 0 && o.last_duration < 2000);

    /* Object handles only (SoftHSM with its token directory gone): the same recovery. */
    shim_ctl(f, "invalidate-objects\n");
    assert_int_equal(sign_msg(w, key, "e.f", sig, &len, &err), JS_OK);
    assert_true(es256_verify(js_hsm_key_public(key), (const uint8_t *)"e.f", 3, sig, len));
    assert_int_equal(o.lost, 2);
    assert_string_equal(o.last_ckr, "CKR_KEY_HANDLE_INVALID");

    /* The other session heals on its own when it is next used; so do find and keygen. */
    js_hsm_key *again = NULL;
    assert_int_equal(js_hsm_key_find(hsm, s, "heal-key", JS_ALG_ES256, &again, &err), JS_OK);
    js_hsm_key_free(again);
    js_hsm_health_get(hsm, &h);
    assert_true(h.ok);
    assert_int_equal(h.reinits, 0); /* re-opening sessions was enough */

    js_hsm_key_free(key);
    js_hsm_session_free(w);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
    pthread_mutex_destroy(&o.mu);
}

/*
 * The token stays away: signs fail fast with JS_EUNAVAIL naming the CKR, the
 * HSM is tried only as the backoff allows, the module is re-initialised, and
 * signing comes back by itself once the token is back.
 */
static void test_backoff_while_failing(void **state)
{
    const fixture *f = *state;
    observed o;
    js_hsm *hsm = open_shim(f, &o);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "backoff-key");
    uint8_t sig[JS_SIG_MAX];
    size_t len = 0;
    js_err err;
    assert_int_equal(sign_msg(s, key, "a.b", sig, &len, &err), JS_OK);

    shim_ctl(f, "invalidate\nfail * CKR_DEVICE_REMOVED\n");
    unsigned long opens = shim_calls("C_OpenSession"), inits = shim_calls("C_Initialize");
    unsigned long signs = shim_calls("C_Sign");
    int64_t t0 = js_mono_ms();
    int attempts = 0, recovering = 0, unavailable = 0;
    bool named = false;
    while (js_mono_ms() - t0 < 1000) {
        memset(sig, 0, sizeof(sig));
        len = 0;
        js_status st = sign_msg(s, key, "x.y", sig, &len, &err);
        assert_int_equal(st, JS_EUNAVAIL);
        assert_int_equal(len, 0);
        attempts++;
        if (strcmp(js_reason_name(err.reason), "hsm.recovering") == 0)
            recovering++;
        else if (strcmp(js_reason_name(err.reason), "hsm.unavailable") == 0)
            unavailable++;
        else
            fail_msg("unexpected reason %s: %s", js_reason_name(err.reason), err.msg);
        named = named || strstr(err.msg, "CKR_DEVICE_REMOVED") != NULL;
        assert_null(strstr(err.msg, PIN));
    }
    unsigned long open_tries = shim_calls("C_OpenSession") - opens;
    unsigned long init_tries = shim_calls("C_Initialize") - inits;
    print_message("      backoff: %d signs in 1 s, %d recovering, %d unavailable; "
                  "%lu C_OpenSession, %lu C_Initialize\n",
                  attempts, recovering, unavailable, open_tries, init_tries);
    js_hsm_health h;
    js_hsm_health_get(hsm, &h);
    print_message("      health: ok %d lost %u failures %llu reinits %llu (%llu failed): %s\n",
                  h.ok, h.sessions_lost, (unsigned long long)h.failures,
                  (unsigned long long)h.reinits, (unsigned long long)h.reinit_failures, h.why);
    print_message("      last error: %s: %s\n", js_reason_name(err.reason), err.msg);
    assert_true(named);
    assert_true(attempts > 100);
    assert_true(recovering > attempts - 30); /* almost all answered without touching the HSM */
    /* 50+100+200+400 ms: a handful of tries per second, for the session and the module. */
    assert_true(open_tries <= 16);
    assert_true(init_tries >= 1 && init_tries <= 8);
    assert_int_equal(shim_calls("C_Sign"), signs);
    assert_false(h.ok);
    assert_int_equal(h.sessions_lost, 1);
    assert_true(h.reinit_failures >= 1);
    assert_non_null(strstr(h.why, "CKR_DEVICE_REMOVED"));
    assert_int_equal(o.lost, 1);
    assert_int_equal(o.recovered, 0);

    /* The token is back: recovery within the 2 s backoff cap, no restart. */
    shim_ctl(f, "ok\n");
    int64_t t1 = js_mono_ms();
    js_status st = JS_EUNAVAIL;
    while (st != JS_OK && js_mono_ms() - t1 < 5000) {
        st = sign_msg(s, key, "back.again", sig, &len, &err);
        if (st != JS_OK)
            usleep(5000);
    }
    int64_t took = js_mono_ms() - t1;
    print_message("      recovered %lld ms after the fault ended\n", (long long)took);
    assert_int_equal(st, JS_OK);
    assert_true(took <=
                4000); /* 2 s backoff cap + one attempt, with room for a loaded CI machine */
    assert_true(es256_verify(js_hsm_key_public(key), (const uint8_t *)"back.again", 10, sig, len));
    js_hsm_health_get(hsm, &h);
    assert_true(h.ok);
    assert_int_equal(h.recoveries, 1);
    assert_true(h.reinits >= 2);
    assert_int_equal(o.recovered, 1);
    assert_true(o.reinit >= 1);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
    pthread_mutex_destroy(&o.mu);
}

/* After a loss, another key under the same label is refused, never used to sign. */
static void test_swapped_key_refused(void **state)
{
    const fixture *f = *state;
    observed o;
    js_hsm *hsm = open_shim(f, &o);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "swap-key");
    js_hsm_key *key2 = keygen_find_ok(hsm, s, "swap-priv");
    js_hsm_key_free(keygen_find_ok(hsm, s, "swap-other"));
    uint8_t sig[JS_SIG_MAX];
    size_t len = 0;
    js_err err;
    assert_int_equal(sign_msg(s, key, "a.b", sig, &len, &err), JS_OK);
    assert_int_equal(sign_msg(s, key2, "a.b", sig, &len, &err), JS_OK);

    /* 1: a whole new pair under the label (public key differs). */
    tp11 t;
    tp11_open(f, &t);
    assert_int_equal(t.m->C_DestroyObject(t.h, tp11_find(&t, CKO_PRIVATE_KEY, "swap-key")), CKR_OK);
    assert_int_equal(t.m->C_DestroyObject(t.h, tp11_find(&t, CKO_PUBLIC_KEY, "swap-key")), CKR_OK);
    assert_int_equal(js_hsm_keygen(hsm, s, "swap-key", JS_ALG_ES256, 0, &err), JS_OK);
    /* 2: only the private key replaced (public key unchanged: only the signature tells). */
    assert_int_equal(t.m->C_DestroyObject(t.h, tp11_find(&t, CKO_PRIVATE_KEY, "swap-priv")),
                     CKR_OK);
    tp11_set_label(&t, tp11_find(&t, CKO_PRIVATE_KEY, "swap-other"), "swap-priv");
    tp11_close(&t);

    shim_ctl(f, "invalidate\n");
    memset(sig, 0, sizeof(sig));
    len = 0;
    assert_int_equal(sign_msg(s, key, "c.d", sig, &len, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_mismatch");
    assert_non_null(strstr(err.msg, "swap-key"));
    assert_int_equal(len, 0);
    assert_int_equal(sign_msg(s, key2, "c.d", sig, &len, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "hsm.key_mismatch");
    assert_int_equal(len, 0);
    uint8_t zero[JS_SIG_MAX] = {0};
    assert_memory_equal(sig, zero, sizeof(sig)); /* the foreign signature was wiped */
    /* Refused again and again, but searched for only as the backoff allows (50, 100, 200 ms). */
    unsigned long finds = shim_calls("C_FindObjectsInit");
    int calls = 0;
    for (int64_t t0 = js_mono_ms(); js_mono_ms() - t0 < 300; calls++) {
        assert_int_equal(sign_msg(s, key, "e.f", sig, &len, &err), JS_EUNAVAIL);
        assert_string_equal(js_reason_name(err.reason), "hsm.key_mismatch");
    }
    unsigned long searched = shim_calls("C_FindObjectsInit") - finds;
    assert_true(calls > 50);
    assert_true(searched <= 8); /* two searches (private, public) per re-check */
    js_hsm_health h;
    js_hsm_health_get(hsm, &h);
    assert_true(h.key_mismatches >= 2 && h.key_mismatches <= 6);
    assert_false(h.ok);
    assert_int_equal(o.mismatch, (int)h.key_mismatches);
    js_hsm_key_free(key2);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
    pthread_mutex_destroy(&o.mu);
}

typedef struct fault_worker {
    js_hsm *hsm;
    const js_hsm_key *key;
    atomic_int *stop;
    atomic_int ok, failed; /* read by the test thread while the worker runs */
    int bad;
} fault_worker;

static void *fault_worker_main(void *arg)
{
    fault_worker *w = arg;
    js_hsm_session *s = NULL;
    js_err err;
    if (js_hsm_session_open(w->hsm, &s, &err) != JS_OK)
        return NULL;
    for (int i = 0; !atomic_load(w->stop) && i < 200000; i++) {
        char msg[32];
        snprintf(msg, sizeof(msg), "m.%d", i);
        uint8_t sig[JS_SIG_MAX];
        size_t len = 0;
        if (sign_msg(s, w->key, msg, sig, &len, &err) != JS_OK) {
            atomic_fetch_add(&w->failed, 1);
            usleep(1000);
            continue;
        }
        if (es256_verify(js_hsm_key_public(w->key), (const uint8_t *)msg, strlen(msg), sig, len))
            atomic_fetch_add(&w->ok, 1);
        else
            w->bad++;
    }
    js_hsm_session_free(s);
    return NULL;
}

/* test_heal_under_load's bound on each wait for the workers: generous, as it
 * only ends a failing run (a passing one waits about the backoff). */
#define HEAL_WAIT_MS 20000

/* Two signing threads while handles die and the module is re-initialised under them. */
static void test_heal_under_load(void **state)
{
    const fixture *f = *state;
    js_hsm *hsm = open_shim(f, NULL);
    js_hsm_session *s = session_ok(hsm);
    js_hsm_key *key = keygen_find_ok(hsm, s, "load-key");
    atomic_int stop;
    atomic_init(&stop, 0);
    fault_worker w[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        atomic_init(&w[i].ok, 0);
        atomic_init(&w[i].failed, 0);
        w[i].hsm = hsm;
        w[i].key = key;
        w[i].stop = &stop;
        assert_int_equal(pthread_create(&th[i], NULL, fault_worker_main, &w[i]), 0);
    }
    usleep(200000);
    shim_ctl(f, "invalidate\n");
    usleep(200000);
    shim_ctl(f, "invalidate\nfail * CKR_DEVICE_REMOVED\n");
    /* Each worker fails under the fault (polled, not slept: on a loaded
     * machine a worker may not run for a while). A failure counted after the
     * rules were replaced is followed only by attempts made under them, so
     * any success counted after `before` is a sign made after "ok". */
    int failed0[2] = {atomic_load(&w[0].failed), atomic_load(&w[1].failed)};
    int64_t until = js_mono_ms() + HEAL_WAIT_MS;
    while ((atomic_load(&w[0].failed) == failed0[0] || atomic_load(&w[1].failed) == failed0[1]) &&
           js_mono_ms() < until)
        usleep(10000);
    int before[2] = {atomic_load(&w[0].ok), atomic_load(&w[1].ok)};
    shim_ctl(f, "ok\n");
    /* Until both sign again: the backoff (at most 2 s) and the module's
     * re-initialisation take their time, longer under a sanitizer. */
    int64_t t_ok = js_mono_ms();
    until = t_ok + HEAL_WAIT_MS;
    while ((atomic_load(&w[0].ok) <= before[0] || atomic_load(&w[1].ok) <= before[1]) &&
           js_mono_ms() < until)
        usleep(10000);
    int64_t healed_ms = js_mono_ms() - t_ok;
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    js_hsm_health h;
    js_hsm_health_get(hsm, &h);
    print_message("      under load: ok %d+%d, failed %d+%d, reinits %llu, recoveries %llu, both "
                  "signing %lld ms after ok\n",
                  atomic_load(&w[0].ok), atomic_load(&w[1].ok), atomic_load(&w[0].failed),
                  atomic_load(&w[1].failed), (unsigned long long)h.reinits,
                  (unsigned long long)h.recoveries, (long long)healed_ms);
    /* Healing is bounded by the backoff (at most 2 s) plus one module
     * re-initialisation: a generous 10 s still catches a backoff gone wrong. */
    assert_true(healed_ms < 10000);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(w[i].bad, 0);
        /* failing under the fault... */
        assert_true(atomic_load(&w[i].failed) > failed0[i]);
        /* ...and signing again after it, without a restart */
        assert_true(atomic_load(&w[i].ok) > before[i]);
    }
    assert_true(h.ok);
    assert_true(h.reinits >= 1);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(hsm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_ok),
        cmocka_unit_test(test_wrong_pin),
        cmocka_unit_test(test_pin_too_long),
        cmocka_unit_test(test_uri_no_match),
        cmocka_unit_test(test_uri_ambiguous),
        cmocka_unit_test(test_uri_malformed),
        cmocka_unit_test(test_uri_with_pin_refused),
        cmocka_unit_test(test_module_missing),
        cmocka_unit_test(test_keygen_and_find),
        cmocka_unit_test(test_keygen_label_exists),
        cmocka_unit_test(test_find_missing),
        cmocka_unit_test(test_bad_label_and_alg),
        cmocka_unit_test(test_private_key_not_extractable),
        cmocka_unit_test(test_find_mismatched_pair),
        cmocka_unit_test(test_find_ambiguous_and_unusable),
        cmocka_unit_test(test_deferred_session_opens_on_first_use),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_es384_sign_verify_and_type_mismatch),
        cmocka_unit_test(test_all_algs_sign_verify),
        cmocka_unit_test(test_wrong_key_type_for_alg),
        cmocka_unit_test(test_rsa_key_size),
        cmocka_unit_test(test_sign_after_session_dropped),
        cmocka_unit_test(test_two_threads_sign),
        cmocka_unit_test(test_keygen_sign_only),
        cmocka_unit_test(test_heal_after_invalidate),
        cmocka_unit_test(test_backoff_while_failing),
        cmocka_unit_test(test_swapped_key_refused),
        cmocka_unit_test(test_heal_under_load),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
