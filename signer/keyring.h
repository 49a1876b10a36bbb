/*
 * keyring.h - the signing keys the daemon serves, loaded from the HSM at start.
 *
 * Each configured key is found in the token, its public key read and turned
 * into a JWK whose RFC 7638 thumbprint is the kid, and a self-test signature
 * is made in the HSM and verified with OpenSSL. Any failure refuses start-up
 * with a message naming the key and the reason.
 *
 * A js_keyring is immutable after js_keyring_load() and shared by all worker
 * threads without locks; js_keyring_free() releases it (after the workers).
 */
#ifndef JS_KEYRING_H
#define JS_KEYRING_H

#include "alg.h"
#include "config.h"
#include "err.h"
#include "hsm.h"
#include "jwk.h"

typedef struct js_keyring js_keyring;
typedef struct js_key js_key;

js_status js_keyring_load(const js_config *cfg, js_hsm *hsm, js_hsm_session *s, js_keyring **out,
                          js_err *err) JS_WUR;
void js_keyring_free(js_keyring *kr);

/* NULL if no key has that name. */
const js_key *js_keyring_find(const js_keyring *kr, const char *name);
const js_key *js_keyring_default(const js_keyring *kr);
size_t js_keyring_count(const js_keyring *kr);
const js_key *js_keyring_at(const js_keyring *kr, size_t i);

/* The JWKS document (RFC 7517 §5) of every key, built once at load. */
const char *js_keyring_jwks(const js_keyring *kr);

const char *js_key_name(const js_key *k);
const char *js_key_kid(const js_key *k);
js_alg js_key_alg(const js_key *k);
const js_hsm_key *js_key_hsm(const js_key *k);
/* The protected header JSON for this key (built once). */
const char *js_key_header(const js_key *k);

#endif
