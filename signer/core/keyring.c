/*
 * keyring.c - the key vault (HSM key objects, self-tested once) and the
 * immutable keyring snapshots built from the key state.
 */
#include "keyring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "clock.h"

#include "jws.h"

#define VAULT_MAX 1024

typedef struct vault_entry {
    char *label;
    js_alg alg;
    js_hsm_key *key;
    char kid[JWK_KID_LEN + 1];
    json_t *jwk; /* public JWK with kid, use, alg */
    /* The public key as PKIX DER (SubjectPublicKeyInfo, RFC 5280
     * §4.1.2.7), for Kubernetes' FetchKeys. */
    uint8_t *spki;
    size_t spki_len;
} vault_entry;

struct js_keyvault {
    js_hsm *hsm;
    js_hsm_session *s;
    vault_entry *e;
    size_t n;
};

struct js_key {
    char *name;
    int can_sign;
    js_alg alg;
    size_t published; /* versions in the JWKS */
    uint32_t version;
    int64_t lifetime;
    char kid[JWK_KID_LEN + 1];
    char *header;
    const js_hsm_key *hsm_key;                   /* borrowed from the vault */
    const vault_entry *pub[JS_KS_MAX_PUBLISHED]; /* the published versions, borrowed */
};

struct js_keyring {
    js_key *keys;
    size_t nkeys;
    char *jwks;
    int64_t built_ms; /* wall clock: start-up or the last key transition */
};

js_status js_keyvault_new(js_hsm *hsm, js_hsm_session *s, js_keyvault **out, js_err *err)
{
    *out = NULL;
    js_keyvault *kv = calloc(1, sizeof(*kv));
    JS_ENSURE_ALLOC(kv, err);
    kv->e = calloc(VAULT_MAX, sizeof(*kv->e));
    if (kv->e == NULL) {
        free(kv);
        return js_err_oom(err);
    }
    kv->hsm = hsm;
    kv->s = s;
    *out = kv;
    return JS_OK;
}

void js_keyvault_free(js_keyvault *kv)
{
    if (kv == NULL)
        return;
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->e[i].label);
        js_hsm_key_free(kv->e[i].key);
        json_decref(kv->e[i].jwk);
        OPENSSL_free(kv->e[i].spki);
    }
    free(kv->e);
    free(kv);
}

static js_status vault_load(js_keyvault *kv, const char *label, js_alg alg, vault_entry **out,
                            js_err *err)
{
    JS_ENSURE(kv->n < VAULT_MAX, err, JS_EINTERNAL, JS_R_KEYRING_VAULT_FULL,
              "more than %d key versions loaded", VAULT_MAX);
    vault_entry *e = &kv->e[kv->n];
    memset(e, 0, sizeof(*e));
    /* js_hsm_key_find() has already signed in the token and verified the
     * signature with OpenSSL against the public key we publish. */
    js_status st = js_hsm_key_find(kv->hsm, kv->s, label, alg, &e->key, err);
    if (st == JS_OK)
        st = jwk_from_pkey(js_hsm_key_public(e->key), alg, NULL, &e->jwk, err);
    if (st == JS_OK)
        st = jwk_thumbprint(e->jwk, e->kid, err);
    if (st == JS_OK && json_object_set_new(e->jwk, "kid", json_string(e->kid)) != 0)
        st = js_err_oom(err);
    if (st == JS_OK && (e->label = strdup(label)) == NULL)
        st = js_err_oom(err);
    if (st == JS_OK) {
        unsigned char *der = NULL;
        int n = i2d_PUBKEY(js_hsm_key_public(e->key), &der);
        if (n <= 0)
            st = js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_CRYPTO,
                            "cannot encode the public key of '%s' as PKIX DER (OpenSSL)", label);
        e->spki = der;
        e->spki_len = n > 0 ? (size_t)n : 0;
    }
    if (st != JS_OK) {
        free(e->label);
        OPENSSL_free(e->spki);
        js_hsm_key_free(e->key);
        json_decref(e->jwk);
        memset(e, 0, sizeof(*e));
        return st;
    }
    e->alg = alg;
    kv->n++;
    *out = e;
    return JS_OK;
}

static js_status vault_entry_get(js_keyvault *kv, const char *label, js_alg alg, vault_entry **out,
                                 js_err *err)
{
    for (size_t i = 0; i < kv->n; i++) {
        if (strcmp(kv->e[i].label, label) == 0) {
            JS_ENSURE(kv->e[i].alg == alg, err, JS_ECONFIG, JS_R_KEYRING_ALG_MISMATCH,
                      "key '%s' was loaded as %s, not %s", label, js_alg_name(kv->e[i].alg),
                      js_alg_name(alg));
            *out = &kv->e[i];
            return JS_OK;
        }
    }
    return vault_load(kv, label, alg, out, err);
}

js_status js_keyvault_get(js_keyvault *kv, const char *label, js_alg alg, const js_hsm_key **key,
                          const char **kid, js_err *err)
{
    vault_entry *e = NULL;
    JS_GUARD(vault_entry_get(kv, label, alg, &e, err));
    if (key != NULL)
        *key = e->key;
    if (kid != NULL)
        *kid = e->kid;
    return JS_OK;
}

js_status js_keyvault_generate(js_keyvault *kv, const char *label, js_alg alg, unsigned rsa_bits,
                               const char **kid, js_err *err)
{
    JS_GUARD(js_hsm_keygen(kv->hsm, kv->s, label, alg, rsa_bits, err));
    return js_keyvault_get(kv, label, alg, NULL, kid, err);
}

void js_keyring_version_label(const char *base, uint32_t n, char *out, size_t cap)
{
    if (n <= 1)
        snprintf(out, cap, "%s", base);
    else
        snprintf(out, cap, "%s.v%u", base, (unsigned)n);
}

void js_keyring_free(js_keyring *kr)
{
    if (kr == NULL)
        return;
    for (size_t i = 0; i < kr->nkeys; i++) {
        free(kr->keys[i].name);
        free(kr->keys[i].header);
    }
    free(kr->keys);
    free(kr->jwks);
    free(kr);
}

static js_status build_key(const js_key_config *kc, const js_keystate *ks, js_keyvault *kv,
                           js_key *k, json_t *jwks_keys, js_err *err)
{
    k->name = strdup(kc->name);
    JS_ENSURE_ALLOC(k->name, err);
    k->alg = kc->alg;
    const js_keyver *pub[JS_KS_MAX_PUBLISHED];
    size_t npub = 0;
    JS_GUARD(js_keystate_published(ks, kc->name, pub, &npub, err));
    k->published = npub;
    for (size_t i = 0; i < npub; i++) {
        vault_entry *e = NULL;
        JS_GUARD(vault_entry_get(kv, pub[i]->label, kc->alg, &e, err));
        k->pub[i] = e;
        JS_ENSURE(json_array_append(jwks_keys, e->jwk) == 0, err, JS_EINTERNAL, JS_R_INTERNAL_OOM,
                  "out of memory");
    }
    const js_keyver *active = NULL;
    js_err ignored;
    if (js_keystate_active(ks, kc->name, &active, &ignored) != JS_OK)
        return JS_OK; /* revoked with no successor: published ones only */
    vault_entry *e = NULL;
    JS_GUARD(vault_entry_get(kv, active->label, kc->alg, &e, err));
    k->can_sign = 1;
    k->version = active->version;
    k->lifetime = active->lifetime;
    k->hsm_key = e->key;
    snprintf(k->kid, sizeof(k->kid), "%s", e->kid);
    k->header = jws_header_json(kc->alg, e->kid);
    JS_ENSURE_ALLOC(k->header, err);
    return JS_OK;
}

js_status js_keyring_build(const js_config *cfg, const js_keystate *ks, js_keyvault *kv,
                           js_keyring **out, js_err *err)
{
    *out = NULL;
    js_keyring *kr = calloc(1, sizeof(*kr));
    JS_ENSURE_ALLOC(kr, err);
    json_t *jwks = json_object();
    json_t *keys = json_array();
    js_status st = JS_OK;
    kr->keys = calloc(cfg->nkeys, sizeof(*kr->keys));
    if (kr->keys == NULL || jwks == NULL || keys == NULL) {
        st = js_err_oom(err);
        goto done;
    }
    for (size_t i = 0; i < cfg->nkeys; i++) {
        kr->nkeys = i + 1;
        st = build_key(&cfg->keys[i], ks, kv, &kr->keys[i], keys, err);
        if (st != JS_OK) {
            js_err_prefix(err, "key '%s': ", cfg->keys[i].name);
            goto done;
        }
    }
    kr->built_ms = js_wall_ms();
    if (json_object_set(jwks, "keys", keys) != 0 ||
        (kr->jwks = json_dumps(jwks, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        st = js_err_oom(err);
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
            return kr->keys[i].can_sign ? &kr->keys[i] : NULL;
    return NULL;
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

uint32_t js_key_version(const js_key *k)
{
    return k->version;
}

const js_hsm_key *js_key_hsm(const js_key *k)
{
    return k->hsm_key;
}

const char *js_key_header(const js_key *k)
{
    return k->header;
}

int64_t js_key_lifetime(const js_key *k)
{
    return k->lifetime;
}

size_t js_key_published(const js_key *k)
{
    return k->published;
}

const char *js_key_published_kid(const js_key *k, size_t i)
{
    return i < k->published ? k->pub[i]->kid : NULL;
}

const uint8_t *js_key_published_spki(const js_key *k, size_t i, size_t *len)
{
    if (i >= k->published) {
        *len = 0;
        return NULL;
    }
    *len = k->pub[i]->spki_len;
    return k->pub[i]->spki;
}

const EVP_PKEY *js_keyring_public_by_kid(const js_keyring *kr, const char *kid, js_alg *alg)
{
    for (size_t i = 0; i < kr->nkeys; i++)
        for (size_t v = 0; v < kr->keys[i].published; v++)
            if (strcmp(kr->keys[i].pub[v]->kid, kid) == 0) {
                *alg = kr->keys[i].alg;
                return js_hsm_key_public(kr->keys[i].pub[v]->key);
            }
    return NULL;
}

int64_t js_keyring_built_ms(const js_keyring *kr)
{
    return kr->built_ms;
}
