/*
 * test_keyring.c - the signing keys in force (signer/core/keyring.h) against a
 * real SoftHSM token made for the test: the vault finds, self-tests and caches
 * key pairs and computes their kid (RFC 7638); a keyring built from the key
 * state signs with the active version only and publishes every published
 * version (next, active, retiring) in its JWKS (RFC 7517 section 5); a key
 * revoked with no successor is present but cannot sign; version labels;
 * negative cases: an algorithm other than the one a label was loaded as, a
 * label the token does not hold, a key the state does not know. For
 * Kubernetes' FetchKeys: every published version's kid and PKIX DER public
 * key (js_key_published_kid/_spki) in JWKS order, each DER parsing to that
 * version's public key; out-of-range indexes; when the snapshot was built.
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

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "clock.h"
#include "config.h"
#include "hsm.h"
#include "keyring.h"
#include "jwk.h"
#include "keystate.h"
#include "test_token.h"

#define TOKEN_LABEL "jskeyring"
#define PIN         TEST_TOKEN_PIN
#define URI         "pkcs11:token=" TOKEN_LABEL
#define KEY         "login-es256"
#define LABEL       "login"
#define T0          1700000000LL
#define LIFE        3600

typedef struct fixture {
    char dir[64];
    char module[512];
    js_hsm *hsm;
    js_hsm_session *s;
    js_keyvault *kv;
    js_config *cfg;
    const char *kid1; /* borrowed from the vault */
} fixture;

static void ok(js_status st, const js_err *err)
{
    if (st != JS_OK)
        fail_msg("unexpected error: %s: %s", js_reason_name(err->reason), err->msg);
}

static int64_t lifetime(const char *key, void *ctx)
{
    (void)key;
    (void)ctx;
    return LIFE;
}

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/js_keyring_test.XXXXXX");
    if (test_token_setup(f->dir, TOKEN_LABEL, f->module, sizeof(f->module)) != 0)
        goto fail;
    js_err err = {0};
    if (test_signer_config(f->dir, f->module, TOKEN_LABEL, KEY, LABEL, "https://issuer.example",
                           "policy.yaml", "test/keyring", &f->cfg, &err) != JS_OK ||
        js_hsm_open(f->module, URI, PIN, strlen(PIN), &f->hsm, &err) != JS_OK ||
        js_hsm_session_open(f->hsm, &f->s, &err) != JS_OK ||
        js_keyvault_new(f->hsm, f->s, &f->kv, &err) != JS_OK ||
        js_keyvault_generate(f->kv, LABEL, JS_ALG_ES256, 0, &f->kid1, &err) != JS_OK) {
        fprintf(stderr, "set-up: %s: %s\n", js_reason_name(err.reason), err.msg);
        goto fail;
    }
    *state = f;
    return 0;
fail:
    free(f);
    return -1;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    js_keyvault_free(f->kv);
    js_hsm_session_free(f->s);
    js_hsm_free(f->hsm);
    js_config_free(f->cfg);
    int rc = test_token_teardown(f->dir);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* A key state with version 1 of KEY active under LABEL and its lifetime sampled. */
static js_keystate *state_v1(const fixture *f)
{
    js_keystate *ks = NULL;
    js_ks_events ev = {0};
    js_err err = {0};
    ok(js_keystate_new(&ks, &err), &err);
    ok(js_keystate_ensure_initial(ks, KEY, LABEL, "ES256", f->kid1, T0, &ev, &err), &err);
    ok(js_keystate_tick(ks, T0, lifetime, NULL, &ev, &err), &err);
    js_ks_events_cleanup(&ev);
    return ks;
}

/* The kids in a JWKS document, in order, as one comma-separated string. */
static void jwks_kids(const char *jwks, char *out, size_t cap)
{
    json_error_t je;
    json_t *doc = json_loads(jwks, 0, &je);
    assert_non_null(doc);
    json_t *keys = json_object_get(doc, "keys");
    assert_true(json_is_array(keys));
    out[0] = '\0';
    size_t at = 0;
    for (size_t i = 0; i < json_array_size(keys); i++) {
        json_t *k = json_array_get(keys, i);
        /* Public parts only (RFC 7518 section 6.2.1): never "d". */
        assert_null(json_object_get(k, "d"));
        assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
        assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
        int n = snprintf(out + at, cap - at, "%s%s", i ? "," : "",
                         json_string_value(json_object_get(k, "kid")));
        assert_true(n > 0 && (size_t)n < cap - at);
        at += (size_t)n;
    }
    json_decref(doc);
}

static void test_version_label(void **state)
{
    (void)state;
    char buf[64];
    js_keyring_version_label("login", 1, buf, sizeof(buf));
    assert_string_equal(buf, "login");
    js_keyring_version_label("login", 0, buf, sizeof(buf));
    assert_string_equal(buf, "login");
    js_keyring_version_label("login", 2, buf, sizeof(buf));
    assert_string_equal(buf, "login.v2");
    js_keyring_version_label("login", 4294967295u, buf, sizeof(buf));
    assert_string_equal(buf, "login.v4294967295");
}

static void test_vault_caches_and_checks(void **state)
{
    fixture *f = *state;
    const js_hsm_key *k1 = NULL, *k2 = NULL;
    const char *kid = NULL, *kid2 = NULL;
    js_err err = {0};
    ok(js_keyvault_get(f->kv, LABEL, JS_ALG_ES256, &k1, &kid, &err), &err);
    ok(js_keyvault_get(f->kv, LABEL, JS_ALG_ES256, &k2, &kid2, &err), &err);
    assert_ptr_equal(k1, k2); /* found once, then cached */
    assert_ptr_equal(kid, kid2);
    assert_string_equal(kid, f->kid1);
    /* RFC 7638 thumbprint, base64url of SHA-256: 43 characters. */
    assert_int_equal(strlen(kid), 43);

    /* The same label as another algorithm is a configuration error. */
    assert_int_equal(js_keyvault_get(f->kv, LABEL, JS_ALG_ES384, NULL, NULL, &err), JS_ECONFIG);
    assert_int_equal(err.reason, JS_R_KEYRING_ALG_MISMATCH);

    /* A label the token does not hold. */
    js_err_clear(&err);
    assert_int_not_equal(js_keyvault_get(f->kv, "no-such-label", JS_ALG_ES256, NULL, NULL, &err),
                         JS_OK);
    assert_true(strncmp(js_reason_name(err.reason), "hsm.", 4) == 0);
}

static void test_build_active(void **state)
{
    fixture *f = *state;
    js_keystate *ks = state_v1(f);
    js_keyring *kr = NULL;
    js_err err = {0};
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    assert_int_equal(js_keyring_count(kr), 1);
    const js_key *k = js_keyring_find(kr, KEY);
    assert_non_null(k);
    assert_ptr_equal(js_keyring_at(kr, 0), k);
    assert_string_equal(js_key_name(k), KEY);
    assert_string_equal(js_key_kid(k), f->kid1);
    assert_int_equal(js_key_alg(k), JS_ALG_ES256);
    assert_int_equal(js_key_version(k), 1);
    assert_int_equal(js_key_lifetime(k), LIFE);
    assert_non_null(js_key_hsm(k));
    /* The protected header names the algorithm and the kid (RFC 7515 section 4.1). */
    json_error_t je;
    json_t *h = json_loads(js_key_header(k), 0, &je);
    assert_non_null(h);
    assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(h, "kid")), f->kid1);
    json_decref(h);
    char kids[256];
    jwks_kids(js_keyring_jwks(kr), kids, sizeof(kids));
    assert_string_equal(kids, f->kid1);
    /* Unknown names are not found, not defaulted. */
    assert_null(js_keyring_find(kr, "other"));
    assert_null(js_keyring_find(kr, ""));
    js_keyring_free(kr);
    js_keystate_free(ks);
}

static void test_rotation_publishes_next(void **state)
{
    fixture *f = *state;
    js_keystate *ks = state_v1(f);
    js_err err = {0};
    char label2[64];
    uint32_t n = js_keystate_next_version(ks, KEY);
    assert_int_equal(n, 2);
    js_keyring_version_label(LABEL, n, label2, sizeof(label2));
    const char *kid2 = NULL;
    ok(js_keyvault_generate(f->kv, label2, JS_ALG_ES256, 0, &kid2, &err), &err);
    assert_string_not_equal(kid2, f->kid1);
    uint32_t v = 0;
    js_ks_events ev = {0};
    ok(js_keystate_rotate(ks, KEY, label2, "ES256", kid2, T0 + 10, 300, &v, &ev, &err), &err);
    ok(js_keystate_tick(ks, T0 + 10, lifetime, NULL, &ev, &err), &err);

    /* Pre-published: both in the JWKS, the old one still signs. */
    js_keyring *kr = NULL;
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    char kids[256], want[256];
    jwks_kids(js_keyring_jwks(kr), kids, sizeof(kids));
    snprintf(want, sizeof(want), "%s,%s", f->kid1, kid2);
    assert_string_equal(kids, want);
    assert_string_equal(js_key_kid(js_keyring_find(kr, KEY)), f->kid1);
    js_keyring_free(kr);

    /* After the pre-publication period the new version signs; the old one
     * stays published while its tokens may still be alive. */
    ok(js_keystate_tick(ks, T0 + 400, lifetime, NULL, &ev, &err), &err);
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    const js_key *k = js_keyring_find(kr, KEY);
    assert_string_equal(js_key_kid(k), kid2);
    assert_int_equal(js_key_version(k), 2);
    jwks_kids(js_keyring_jwks(kr), kids, sizeof(kids));
    assert_string_equal(kids, want);
    js_keyring_free(kr);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_revoked_cannot_sign(void **state)
{
    fixture *f = *state;
    js_keystate *ks = state_v1(f);
    js_err err = {0};
    js_ks_events ev = {0};
    ok(js_keystate_revoke(ks, KEY, f->kid1, T0 + 5, "test", &ev, &err), &err);
    js_keyring *kr = NULL;
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    /* The key is configured, so it is present, but nothing signs and the
     * revoked version left the JWKS at once. */
    assert_int_equal(js_keyring_count(kr), 1);
    assert_null(js_keyring_find(kr, KEY));
    char kids[256];
    jwks_kids(js_keyring_jwks(kr), kids, sizeof(kids));
    assert_string_equal(kids, "");
    js_keyring_free(kr);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_state_label_missing_in_token(void **state)
{
    fixture *f = *state;
    js_keystate *ks = NULL;
    js_ks_events ev = {0};
    js_err err = {0};
    ok(js_keystate_new(&ks, &err), &err);
    /* The state names a label the token does not hold: building fails closed. */
    ok(js_keystate_ensure_initial(ks, KEY, "gone", "ES256", "kid-gone", T0, &ev, &err), &err);
    ok(js_keystate_tick(ks, T0, lifetime, NULL, &ev, &err), &err);
    js_keyring *kr = NULL;
    assert_int_not_equal(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), JS_OK);
    assert_null(kr);
    assert_non_null(strstr(err.msg, KEY));
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

/* Published version i of k: its DER parses (d2i_PUBKEY, the whole buffer) to
 * the public key of the vault's key under label, re-encodes to the same
 * bytes, and its kid is that key's RFC 7638 thumbprint. */
static void assert_published(const fixture *f, const js_key *k, size_t i, const char *label,
                             const char *want_kid)
{
    const char *kid = js_key_published_kid(k, i);
    assert_non_null(kid);
    assert_string_equal(kid, want_kid);
    size_t len = 0;
    const uint8_t *der = js_key_published_spki(k, i, &len);
    assert_non_null(der);
    assert_true(len > 0);
    const unsigned char *p = der;
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)len);
    assert_non_null(pub);
    assert_ptr_equal(p, der + len); /* no trailing bytes */

    const js_hsm_key *hk = NULL;
    const char *vkid = NULL;
    js_err err = {0};
    ok(js_keyvault_get(f->kv, label, JS_ALG_ES256, &hk, &vkid, &err), &err);
    assert_string_equal(vkid, want_kid);
    assert_int_equal(EVP_PKEY_eq(pub, js_hsm_key_public(hk)), 1);

    unsigned char *again = NULL;
    int n = i2d_PUBKEY(pub, &again);
    assert_int_equal(n, (int)len);
    assert_memory_equal(again, der, len);
    OPENSSL_free(again);

    json_t *jwk = NULL;
    char tp[JWK_KID_LEN + 1];
    ok(jwk_from_pkey(pub, JS_ALG_ES256, NULL, &jwk, &err), &err);
    ok(jwk_thumbprint(jwk, tp, &err), &err);
    assert_string_equal(tp, kid);
    json_decref(jwk);
    EVP_PKEY_free(pub);
}

/* Past the last published version: NULL, and the length is 0. */
static void assert_no_published(const js_key *k, size_t i)
{
    assert_null(js_key_published_kid(k, i));
    size_t len = 12345;
    assert_null(js_key_published_spki(k, i, &len));
    assert_int_equal(len, 0);
}

/* FetchKeys' view of a rotation: v1 alone; v1 and the pre-published v2 (in
 * JWKS order); v2 signing with v1 retiring; v2 alone once v1 has retired. */
static void test_published_spki(void **state)
{
    fixture *f = *state;
    js_keystate *ks = state_v1(f);
    js_err err = {0};
    js_keyring *kr = NULL;
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    const js_key *k = js_keyring_find(kr, KEY);
    assert_int_equal(js_key_published(k), 1);
    assert_published(f, k, 0, LABEL, f->kid1);
    assert_no_published(k, 1);
    assert_no_published(k, SIZE_MAX);
    js_keyring_free(kr);

    const char *label2 = "spki.v2", *kid2 = NULL;
    ok(js_keyvault_generate(f->kv, label2, JS_ALG_ES256, 0, &kid2, &err), &err);
    uint32_t v = 0;
    js_ks_events ev = {0};
    ok(js_keystate_rotate(ks, KEY, label2, "ES256", kid2, T0 + 10, 300, &v, &ev, &err), &err);
    ok(js_keystate_tick(ks, T0 + 10, lifetime, NULL, &ev, &err), &err);
    char kids[256], want[256];
    snprintf(want, sizeof(want), "%s,%s", f->kid1, kid2);
    static const int64_t k_at[] = {T0 + 10, T0 + 400};
    for (size_t t = 0; t < sizeof(k_at) / sizeof(k_at[0]); t++) {
        ok(js_keystate_tick(ks, k_at[t], lifetime, NULL, &ev, &err), &err);
        ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
        k = js_keyring_find(kr, KEY);
        assert_int_equal(js_key_published(k), 2);
        /* The same versions, in the same order, as the JWKS. */
        jwks_kids(js_keyring_jwks(kr), kids, sizeof(kids));
        assert_string_equal(kids, want);
        assert_published(f, k, 0, LABEL, f->kid1);
        assert_published(f, k, 1, label2, kid2);
        assert_no_published(k, 2);
        /* Two keys: two different DERs. */
        size_t l0 = 0, l1 = 0;
        const uint8_t *d0 = js_key_published_spki(k, 0, &l0);
        const uint8_t *d1 = js_key_published_spki(k, 1, &l1);
        assert_true(l0 != l1 || memcmp(d0, d1, l0) != 0);
        js_keyring_free(kr);
    }
    /* Long after v1 stopped signing, it has left the JWKS and FetchKeys. */
    ok(js_keystate_tick(ks, T0 + 400 + 10 * LIFE, lifetime, NULL, &ev, &err), &err);
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    k = js_keyring_find(kr, KEY);
    assert_int_equal(js_key_published(k), 1);
    assert_published(f, k, 0, label2, kid2);
    assert_no_published(k, 1);
    js_keyring_free(kr);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

/* Every version revoked: the configured key has nothing to publish. */
static void test_published_none_when_revoked(void **state)
{
    fixture *f = *state;
    js_keystate *ks = state_v1(f);
    js_err err = {0};
    js_ks_events ev = {0};
    ok(js_keystate_revoke(ks, KEY, f->kid1, T0 + 5, "test", &ev, &err), &err);
    js_keyring *kr = NULL;
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    const js_key *k = js_keyring_at(kr, 0);
    assert_non_null(k);
    assert_int_equal(js_key_published(k), 0);
    assert_no_published(k, 0);
    js_keyring_free(kr);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

/* js_keyring_built_ms: the wall clock when the snapshot was built (FetchKeys'
 * data_timestamp), not the key state's times; each build is a new instant. */
static void test_built_ms(void **state)
{
    fixture *f = *state;
    js_keystate *ks = state_v1(f);
    js_err err = {0};
    js_keyring *kr = NULL;
    int64_t before = js_wall_ms();
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr, &err), &err);
    int64_t after = js_wall_ms();
    int64_t built = js_keyring_built_ms(kr);
    assert_true(built >= before);
    assert_true(built <= after);
    assert_true(after - before < 5000);
    assert_true(built > (T0 + 1000000) * 1000); /* not the key state's (test) clock */
    js_keyring *kr2 = NULL;
    usleep(5000);
    ok(js_keyring_build(f->cfg, ks, f->kv, &kr2, &err), &err);
    assert_true(js_keyring_built_ms(kr2) > built);
    js_keyring_free(kr2);
    js_keyring_free(kr);
    js_keystate_free(ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_label),
        cmocka_unit_test(test_vault_caches_and_checks),
        cmocka_unit_test(test_build_active),
        cmocka_unit_test(test_rotation_publishes_next),
        cmocka_unit_test(test_revoked_cannot_sign),
        cmocka_unit_test(test_state_label_missing_in_token),
        cmocka_unit_test(test_published_spki),
        cmocka_unit_test(test_published_none_when_revoked),
        cmocka_unit_test(test_built_ms),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
