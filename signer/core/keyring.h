/*
 * keyring.h - the signing keys in force, as an immutable snapshot.
 *
 * A js_keyring says, for every configured key name, which version signs now
 * (its HSM key, kid, header and the lifetime cap that keeps its tokens inside
 * its publication window) and holds the JWKS of every published version
 * (next, active, retiring; keystate.h). It is built on the main thread from
 * the key state and published to workers as a snapshot (snapshot.h) after
 * every start, rotation, revocation and timed transition.
 *
 * HSM key objects come from a js_keyvault: each label is found once (with
 * js_hsm_key_find's self-test signature, verified by OpenSSL), its JWK built,
 * and kept for the life of the daemon (snapshots borrow them).
 */
#ifndef JS_KEYRING_H
#define JS_KEYRING_H

#include <stdint.h>

#include "alg.h"
#include "config.h"
#include "err.h"
#include "hsm.h"
#include "jwk.h"
#include "keystate.h"

typedef struct js_keyvault js_keyvault;
typedef struct js_keyring js_keyring;
typedef struct js_key js_key;

/* s is the main thread's session (only the main thread uses the vault). */
js_status js_keyvault_new(js_hsm *hsm, js_hsm_session *s, js_keyvault **out, js_err *err) JS_WUR;
void js_keyvault_free(js_keyvault *kv);

/* The key pair labelled `label`: found, self-tested and its kid (RFC 7638)
 * computed on first use, then cached. */
js_status js_keyvault_get(js_keyvault *kv, const char *label, js_alg alg, const js_hsm_key **key,
                          const char **kid, js_err *err) JS_WUR;

/* Generates a new key pair in the token for alg (rsa_bits for RS/PS) and
 * loads it into the vault. */
js_status js_keyvault_generate(js_keyvault *kv, const char *label, js_alg alg, unsigned rsa_bits,
                               const char **kid, js_err *err) JS_WUR;

/* The label of version n of a key whose version 1 is `base`: base itself for
 * n == 1 (the label the configuration names), "base.vN" after that. */
void js_keyring_version_label(const char *base, uint32_t n, char *out, size_t cap);

/* Builds a snapshot of every configured key from the state. A key with no
 * active version (revoked, no successor) is present but cannot sign. */
js_status js_keyring_build(const js_config *cfg, const js_keystate *ks, js_keyvault *kv,
                           js_keyring **out, js_err *err) JS_WUR;
void js_keyring_free(js_keyring *kr);

/* The active version of key `name`; NULL if no such key or none is active. */
const js_key *js_keyring_find(const js_keyring *kr, const char *name);
size_t js_keyring_count(const js_keyring *kr);
const js_key *js_keyring_at(const js_keyring *kr, size_t i);

/* The JWKS document (RFC 7517 §5) of every published version. */
const char *js_keyring_jwks(const js_keyring *kr);

const char *js_key_name(const js_key *k);
const char *js_key_kid(const js_key *k);
js_alg js_key_alg(const js_key *k);
/* How many of the key's versions the JWKS publishes (next, active,
 * retiring); 0 when none is (every version revoked). */
size_t js_key_published(const js_key *k);
/* Published version i (0 .. js_key_published(k) - 1, in the JWKS's order):
 * its kid, and its public key as PKIX DER (SubjectPublicKeyInfo, RFC 5280
 * §4.1.2.7; Kubernetes' FetchKeys). Borrowed; NULL past the end. */
const char *js_key_published_kid(const js_key *k, size_t i);
const uint8_t *js_key_published_spki(const js_key *k, size_t i, size_t *len);
/* The public key of the published version (any key; next, active or
 * retiring) whose kid is `kid`, and its algorithm; NULL when no published
 * version has that kid (never issued here, or revoked: revoked versions
 * leave the JWKS at once). Borrowed from the vault. For introspection. */
const EVP_PKEY *js_keyring_public_by_kid(const js_keyring *kr, const char *kid, js_alg *alg);
/* Wall-clock ms when this snapshot was built: start-up or the last key
 * transition (rotation, revocation, a timed step), i.e. when the key set
 * last changed. */
int64_t js_keyring_built_ms(const js_keyring *kr);
uint32_t js_key_version(const js_key *k);
const js_hsm_key *js_key_hsm(const js_key *k);
/* The protected header JSON for this key (built once). */
const char *js_key_header(const js_key *k);
/* Seconds a token of this version may live so it expires before the version
 * leaves the JWKS (keystate.h); 0 = no cap known yet (fail closed). */
int64_t js_key_lifetime(const js_key *k);

#endif
