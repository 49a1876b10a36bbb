/*
 * keyring.c - loads and self-tests the configured signing keys.
 */
#include "keyring.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jws.h"

struct js_key {
    char *name;
    js_alg alg;
    char kid[JWK_KID_LEN + 1];
    char *header; /* protected header JSON */
    js_hsm_key *hsm_key;
};

struct js_keyring {
    js_key *keys;
    size_t nkeys;
    size_t default_idx;
    char *jwks;
};

void js_keyring_free(js_keyring *kr)
{
    if (kr == NULL)
        return;
    for (size_t i = 0; i < kr->nkeys; i++) {
        free(kr->keys[i].name);
        free(kr->keys[i].header);
        js_hsm_key_free(kr->keys[i].hsm_key);
    }
    free(kr->keys);
    free(kr->jwks);
    free(kr);
}

typedef struct selftest_ctx {
    js_hsm_session *s;
    const js_hsm_key *key;
} selftest_ctx;

static js_status selftest_sign(void *ctx, const uint8_t *in, size_t in_len, uint8_t *sig,
                               size_t cap, size_t *sig_len, js_err *err)
{
    const selftest_ctx *c = ctx;
    return js_hsm_sign(c->s, c->key, in, in_len, sig, cap, sig_len, err);
}

/* Sign a fixed message in the HSM and verify it with OpenSSL against the
 * public key we publish: proves the private and public objects belong
 * together and that the token can sign, before any caller relies on it. */
static js_status key_selftest(js_hsm_session *s, const js_key *k, js_err *err)
{
    static const char msg[] = "jwt-signer start-up self-test";
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    selftest_ctx ctx = {s, k->hsm_key};
    JS_GUARD(selftest_sign(&ctx, (const uint8_t *)msg, sizeof(msg) - 1, sig, sizeof(sig), &sig_len,
                           err));
    return jws_verify(k->alg, js_hsm_key_public(k->hsm_key), (const uint8_t *)msg, sizeof(msg) - 1,
                      sig, sig_len, err);
}

static js_status key_load(const js_key_config *kc, js_hsm *hsm, js_hsm_session *s, js_key *k,
                          json_t *jwks_keys, js_err *err)
{
    k->alg = kc->alg;
    k->name = strdup(kc->name);
    JS_ENSURE_ALLOC(k->name, err);
    JS_GUARD(js_hsm_key_find(hsm, s, kc->label, kc->alg, &k->hsm_key, err));

    json_t *jwk = NULL;
    JS_GUARD(jwk_from_pkey(js_hsm_key_public(k->hsm_key), k->alg, NULL, &jwk, err));
    js_status st = jwk_thumbprint(jwk, k->kid, err);
    if (st == JS_OK && json_object_set_new(jwk, "kid", json_string(k->kid)) != 0)
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
    if (st == JS_OK && json_array_append(jwks_keys, jwk) != 0)
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
    json_decref(jwk);
    JS_GUARD(st);

    k->header = jws_header_json(k->alg, k->kid);
    JS_ENSURE_ALLOC(k->header, err);
    JS_GUARD(key_selftest(s, k, err));
    return JS_OK;
}

js_status js_keyring_load(const js_config *cfg, js_hsm *hsm, js_hsm_session *s, js_keyring **out,
                          js_err *err)
{
    *out = NULL;
    js_keyring *kr = calloc(1, sizeof(*kr));
    JS_ENSURE_ALLOC(kr, err);
    json_t *jwks = json_object();
    json_t *keys = json_array();
    js_status st = JS_OK;
    kr->keys = calloc(cfg->nkeys, sizeof(*kr->keys));
    if (kr->keys == NULL || jwks == NULL || keys == NULL) {
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < cfg->nkeys; i++) {
        kr->nkeys = i + 1;
        st = key_load(&cfg->keys[i], hsm, s, &kr->keys[i], keys, err);
        if (st != JS_OK) {
            js_err_prefix(err, "key '%s' (label '%s'): ", cfg->keys[i].name, cfg->keys[i].label);
            goto done;
        }
        if (cfg->default_key != NULL && strcmp(cfg->default_key, cfg->keys[i].name) == 0)
            kr->default_idx = i;
    }
    if (json_object_set(jwks, "keys", keys) != 0 ||
        (kr->jwks = json_dumps(jwks, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
done:
    json_decref(keys);
    json_decref(jwks);
    if (st != JS_OK) {
        js_keyring_free(kr);
        return st;
    }
    *out = kr;
    return JS_OK;
}

const js_key *js_keyring_find(const js_keyring *kr, const char *name)
{
    for (size_t i = 0; i < kr->nkeys; i++)
        if (strcmp(kr->keys[i].name, name) == 0)
            return &kr->keys[i];
    return NULL;
}

const js_key *js_keyring_default(const js_keyring *kr)
{
    return kr->nkeys > 0 ? &kr->keys[kr->default_idx] : NULL;
}

size_t js_keyring_count(const js_keyring *kr)
{
    return kr->nkeys;
}

const js_key *js_keyring_at(const js_keyring *kr, size_t i)
{
    return i < kr->nkeys ? &kr->keys[i] : NULL;
}

const char *js_keyring_jwks(const js_keyring *kr)
{
    return kr->jwks;
}

const char *js_key_name(const js_key *k)
{
    return k->name;
}

const char *js_key_kid(const js_key *k)
{
    return k->kid;
}

js_alg js_key_alg(const js_key *k)
{
    return k->alg;
}

const js_hsm_key *js_key_hsm(const js_key *k)
{
    return k->hsm_key;
}

const char *js_key_header(const js_key *k)
{
    return k->header;
}
