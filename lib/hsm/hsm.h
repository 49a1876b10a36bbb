/*
 * hsm.h - the only door to the HSM. Nothing outside hsm.c includes pkcs11.h.
 *
 * A js_hsm is one loaded PKCS#11 module (via p11-kit), one token chosen by a
 * PKCS#11 URI (RFC 7512) and one login. Worker threads each open their own
 * js_hsm_session: PKCS#11 sessions must not be used by two threads at once,
 * and one session per worker keeps the signing path free of global locks.
 *
 * Private keys are created inside the token with CKA_SENSITIVE=true and
 * CKA_EXTRACTABLE=false, and this module has no function that reads private
 * key attributes: there is no code path that can export a private key.
 *
 * Ownership: js_hsm_open() returns a js_hsm the caller frees with
 * js_hsm_free() after every session and key found through it is freed.
 * Keys (js_hsm_key) are immutable after js_hsm_key_find() and may be shared by
 * all threads; they are freed with js_hsm_key_free().
 *
 * Self-healing. A PKCS#11 error that means "the session or the objects are
 * gone" (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
 * CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID, CKR_DEVICE_REMOVED,
 * CKR_TOKEN_NOT_PRESENT, CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_ERROR) makes the
 * js_hsm_session that saw it re-open its PKCS#11 session, log in again if the
 * token forgot the login (the PIN is kept for this, wiped in js_hsm_free) and
 * find its keys again by label, accepting only the key it already knows: same
 * type, CKA_SIGN, the same public key, and a first signature that verifies
 * under it. If that does not bring the key back, the module is re-initialised
 * (C_Finalize + C_Initialize + login; SoftHSM 2.6.1 needs it to see a token
 * whose directory vanished and came back), coordinated so that no other
 * thread is inside the module meanwhile. Callers keep calling js_hsm_sign():
 * a sign that cannot be served while healing is JS_EUNAVAIL with reason
 * "hsm.recovering" (waiting for the backoff) or "hsm.unavailable" (the attempt
 * failed; the message names the CKR), or "hsm.key_mismatch" (the object under
 * the label is another key) — never a signature from another key. A session
 * that failed to heal leaves the HSM alone for 50 ms, doubling to 2 s; the
 * module re-initialisation backs off the same way.
 */
#ifndef JS_HSM_H
#define JS_HSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "alg.h"
#include "err.h"
#include "names.h" /* JS_LABEL_MAX, js_label_ok */

typedef struct js_hsm js_hsm;
typedef struct js_hsm_session js_hsm_session;
typedef struct js_hsm_key js_hsm_key;

#define JS_HSM_PIN_MAX 256

/*
 * What the daemon reports (/healthz, metrics). `ok` is false from the first
 * session found lost until any session signs again (the HSM works again;
 * sessions still marked lost heal on their next use: an idle worker's, or a
 * replaced server's, must not keep the HSM "down"). A session that fails
 * again after that starts a new outage.
 */
typedef struct js_hsm_health {
    bool ok;
    unsigned sessions_lost; /* sessions marked lost, not yet used again */
    uint64_t failures;      /* session losses seen (each session counted once per loss) */
    uint64_t recoveries;    /* outages ended: ok went from false back to true */
    uint64_t session_heals; /* sessions that signed again after a loss */
    uint64_t reinits;       /* module re-initialisations attempted */
    uint64_t reinit_failures;
    uint64_t key_mismatches; /* re-found objects refused: not the key this signer loaded */
    int64_t last_change_ms;  /* wall clock (ms since 1970) of the last change of ok; 0 = never */
    char why[JS_MSG_MAX];    /* when !ok: the loss, its CKR name and the token; else "" */
} js_hsm_health;

/* Copies the current health (one mutex; cheap enough for every /healthz or scrape). */
void js_hsm_health_get(js_hsm *hsm, js_hsm_health *out);

typedef enum js_hsm_event_kind {
    JS_HSM_EVENT_LOST = 1,     /* health went bad: a session or its objects are gone */
    JS_HSM_EVENT_RECOVERED,    /* health is good again; duration_ms since JS_HSM_EVENT_LOST */
    JS_HSM_EVENT_KEY_MISMATCH, /* an object found under a key's label is not that key: refused */
    JS_HSM_EVENT_REINIT,       /* the module was re-initialised (C_Finalize, C_Initialize, login) */
} js_hsm_event_kind;

/* Strings are valid only during the callback. */
typedef struct js_hsm_event {
    js_hsm_event_kind kind;
    const char *ckr;   /* LOST: the CKR name that revealed it, e.g. "CKR_DEVICE_REMOVED"; else "" */
    const char *label; /* the key label involved, or "" */
    int64_t duration_ms; /* RECOVERED: from the loss to the first good signature */
    const char *message; /* one sentence for a log line or audit record; never the PIN */
} js_hsm_event;

/* "hsm_session_lost", "hsm_recovered", "hsm_key_mismatch", "hsm_module_reinitialised". */
const char *js_hsm_event_name(js_hsm_event_kind kind);

/*
 * Called on every event, from the thread that noticed it (a worker inside
 * js_hsm_sign, the audit writer, the health probe), after every lock of this
 * module is released: it may log, count, write an audit record or call
 * js_hsm_health_get; it should be quick, and must not free the js_hsm.
 */
typedef void (*js_hsm_observer_fn)(void *ctx, const js_hsm_event *ev);

/*
 * Sets the observer. Call once, right after js_hsm_open() and before any
 * other thread uses the js_hsm (it is read without a lock).
 */
void js_hsm_set_observer(js_hsm *hsm, js_hsm_observer_fn fn, void *ctx);

/*
 * Loads the module at module_path, finds the one token matching token_uri
 * (a "pkcs11:" URI; only token attributes are used), and logs in as the user
 * with pin (pin_len bytes). The caller owns pin and wipes it after the call.
 * Errors name the module, the URI or the PKCS#11 return value, never the PIN.
 * A wrong PIN is JS_ECONFIG with reason "hsm.login".
 */
js_status js_hsm_open(const char *module_path, const char *token_uri, const char *pin,
                      size_t pin_len, js_hsm **out, js_err *err) JS_WUR;
void js_hsm_free(js_hsm *hsm);

/* A short description of the token ("label 'x', serial 'y'") for logs. */
const char *js_hsm_token_description(const js_hsm *hsm);

/* One session per worker thread. Thread-safe to call concurrently. */
js_status js_hsm_session_open(js_hsm *hsm, js_hsm_session **out, js_err *err) JS_WUR;
/*
 * A session that opens its PKCS#11 session on first use, the way a lost one
 * heals (no module call now, so it cannot fail for the HSM's sake). For the
 * gRPC workers: a listener re-created while the HSM is being re-initialised
 * must not wait for the HSM to come back before it accepts connections.
 */
js_status js_hsm_session_new_deferred(js_hsm *hsm, js_hsm_session **out, js_err *err) JS_WUR;
void js_hsm_session_free(js_hsm_session *s);

/*
 * Finds the key pair labelled `label` (exactly one private key with CKA_SIGN
 * and one public key, same CKA_LABEL), checks its type fits `alg` (EC curve,
 * CKK_RSA of 2048..4096 bits per RFC 7518 §3.3, or Ed25519), reads the public
 * key into an EVP_PKEY and checks with one signature that the pair matches.
 * JS_ENOTFOUND if no such private key; a wrong key type is JS_ECONFIG
 * "hsm.key_type", an RSA key outside 2048..4096 bits "hsm.key_size".
 * Usage beyond signing is not an error but a warning (js_hsm_key_warning).
 * A session lost before the call is healed first (see above).
 */
js_status js_hsm_key_find(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg,
                          js_hsm_key **out, js_err *err) JS_WUR;
void js_hsm_key_free(js_hsm_key *key);

js_alg js_hsm_key_alg(const js_hsm_key *key);
const char *js_hsm_key_label(const js_hsm_key *key);
/* Borrowed: valid as long as the key. */
EVP_PKEY *js_hsm_key_public(const js_hsm_key *key);
/* The exact length of this key's signatures (RSA: the modulus size); 0 for NULL. */
size_t js_hsm_key_sig_len(const js_hsm_key *key);
/*
 * NULL, or a warning found by js_hsm_key_find() for the caller to log at
 * start: the key also allows CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE or
 * CKA_SIGN_RECOVER (or its public half CKA_ENCRYPT/CKA_WRAP), as keys made
 * before key generation said CKA_SIGN only did. Borrowed: valid as long as the key.
 */
const char *js_hsm_key_warning(const js_hsm_key *key);

/*
 * Signs the JWS signing input msg (RFC 7515 §5.1 step 5) with key, inside the
 * token, on session s (which only the calling thread uses). The output is the
 * JWS signature octets, of exactly js_hsm_key_sig_len(key) bytes (sig_cap must
 * be at least that; JS_SIG_MAX always is):
 *  - ES256/ES384: the digest is computed here with OpenSSL (SoftHSM has no
 *    CKM_ECDSA_SHA256), CKM_ECDSA signs it, and the result is the JOSE r||s
 *    form (RFC 7518 §3.4), 64 or 96 bytes;
 *  - RS256: CKM_SHA256_RSA_PKCS (RFC 7518 §3.3), modulus-size bytes;
 *  - PS256: CKM_SHA256_RSA_PKCS_PSS, MGF1-SHA256, 32-byte salt (RFC 7518
 *    §3.5), modulus-size bytes;
 *  - EdDSA: CKM_EDDSA over msg itself (RFC 8037 §3.1), 64 bytes.
 * HSM trouble is JS_EUNAVAIL; a lost session heals itself (see the top of
 * this file), so the caller just tries again on a later request.
 */
js_status js_hsm_sign(js_hsm_session *s, const js_hsm_key *key, const uint8_t *msg, size_t msg_len,
                      uint8_t *sig, size_t sig_cap, size_t *sig_len, js_err *err) JS_WUR;

/*
 * Generates a key pair for alg inside the token: private key CKA_TOKEN,
 * CKA_PRIVATE, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, CKA_SIGN and
 * nothing else (CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_SIGN_RECOVER false);
 * public key CKA_TOKEN, CKA_VERIFY (CKA_ENCRYPT, CKA_WRAP, CKA_DERIVE,
 * CKA_VERIFY_RECOVER false); both labelled `label` with a random CKA_ID.
 * ES256/ES384: P-256/P-384; RS256/PS256: RSA with rsa_bits (2048 or 3072; 0
 * means 2048) and public exponent 65537; EdDSA: Ed25519. rsa_bits must be 0
 * for the other algorithms (JS_EINVAL "hsm.key_size" otherwise).
 * Refuses (JS_ECONFIG, "hsm.label_exists") if a key with that label exists.
 */
js_status js_hsm_keygen(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg,
                        unsigned rsa_bits, js_err *err) JS_WUR;

#endif
