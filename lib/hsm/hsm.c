/*
 * hsm.c - the only module that talks PKCS#11 (v2.40). It loads the module
 * through p11-kit, selects one token by a PKCS#11 URI (RFC 7512), logs in
 * once on a session kept open for the life of the js_hsm (PKCS#11 §5.6: login
 * state is per application, so every later session is logged in too), finds
 * key pairs by label, signs inside the token and generates non-extractable
 * key pairs. Every CK_RV goes through hsm_fail(), the one place that names it
 * and maps it to a js_status. What differs between JWS algorithms (mechanism,
 * digest, key type, curve, public key reader, key generation template) is a
 * row of k_algs: ES256/ES384 (RFC 7518 §3.4), RS256 (§3.3), PS256 (§3.5) and
 * EdDSA with Ed25519 (RFC 8037 §3.1).
 */
#include "hsm.h"
#include "clock.h"
#include "jws.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

/* Upper bounds for what we read from the token (all far above real values). */
#define HSM_SLOTS_MAX     1024
#define HSM_DESC_MAX      128
#define HSM_EC_PARAMS_MAX 64  /* a DER OID of a named curve is ~10 bytes */
#define HSM_EC_POINT_MAX  160 /* OCTET STRING of 04||X||Y for P-521 is 136 */
#define HSM_KEY_ID_LEN    16
#define HSM_DIGEST_MAX    EVP_MAX_MD_SIZE
/* RS256/PS256 keys: RFC 7518 §3.3 and §3.5 require >= 2048 bits; 4096 bounds JS_SIG_MAX. */
#define HSM_RSA_BITS_MIN     2048
#define HSM_RSA_BITS_MAX     4096
#define HSM_RSA_BITS_DEFAULT 2048
#define HSM_RSA_MOD_MAX      (HSM_RSA_BITS_MAX / 8)
#define HSM_RSA_EXP_MAX      32 /* 256 bits, the SP 800-56B bound OpenSSL checks too */
#define HSM_ED25519_LEN      32 /* RFC 8032 §5.1.5 public key, §5.1.6 signature is 64 */

/* Message of the key self-test signature made by js_hsm_key_find(). */
static const uint8_t k_selftest_msg[] = "jwt-signer key pair self-test";

/*
 * Self-healing (see hsm.h): a session that lost its PKCS#11 session or its
 * object handles re-opens, logs in again and re-finds its keys; a session
 * that failed to do so waits HSM_BACKOFF_MIN_MS, doubling up to
 * HSM_BACKOFF_MAX_MS, before it touches the HSM again. The module-wide
 * re-initialisation (C_Finalize + C_Initialize, which SoftHSM 2.6.1 needs to
 * see a token whose directory vanished and came back) backs off the same way.
 */
#define HSM_BACKOFF_MIN_MS 50
#define HSM_BACKOFF_MAX_MS 2000
/* How long a signer waits for another thread's module re-initialisation. */
#define HSM_REINIT_WAIT_MS 1000
/* Keys one session remembers handles for (key versions in use at once). */
#define HSM_CACHE_KEYS  32
#define HSM_PENDING_MAX 4
#define HSM_CKR_NAME    48

/*
 * The module gate: every use of the module holds `gate` for reading; a
 * module re-initialisation holds it for writing, because C_Finalize must not
 * run while another thread is inside a call (PKCS#11 §5.4), and so does a
 * C_Login (login_alone). New readers wait while `reinit_pending` is set, so a
 * writer is never starved.
 */
struct js_hsm {
    CK_FUNCTION_LIST *mod;
    bool initialized; /* C_Initialize succeeded and no C_Finalize since (written under the gate) */
    bool ready;       /* token selected and logged in: sessions can be opened */
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE login_session; /* keeps the login (§5.6); CK_INVALID_HANDLE when none */
    char *module_path;
    char *token_uri;
    P11KitUri *uri;
    /* For re-login after the token forgot us; wiped (OPENSSL_cleanse) in js_hsm_free. */
    CK_UTF8CHAR *pin;
    size_t pin_len;
    char desc[HSM_DESC_MAX];
    js_hsm_observer_fn observer;
    void *observer_ctx;

    pthread_rwlock_t gate;
    atomic_bool reinit_pending;
    atomic_bool down;            /* !health.ok, readable without mu */
    _Atomic uint64_t epoch;      /* +1 per re-initialisation: older session handles are dead */
    _Atomic uint64_t handle_gen; /* +1 per re-open anywhere: key handle hints are not trusted */
    _Atomic uint64_t next_key_id;

    pthread_mutex_t mu; /* guards what follows */
    pthread_cond_t reinit_done;
    bool reinit_running;
    unsigned login_waiters; /* threads waiting to log in alone (login_alone) */
    int64_t reinit_next_ms; /* monotonic */
    uint32_t reinit_backoff_ms;
    int64_t outage_start_ms; /* monotonic, when `health.ok` went false */
    js_hsm_health health;
};

/* One key's object handle as this session knows it. */
typedef struct hsm_cached {
    uint64_t key_id; /* js_hsm_key.id; 0 = free slot */
    CK_OBJECT_HANDLE priv;
    bool verified; /* a signature with priv verified under the key's public key */
    bool refused;  /* re-found object is not this key: refuse until retry_ms */
    int64_t retry_ms;
    uint32_t backoff_ms;
} hsm_cached;

struct js_hsm_session {
    js_hsm *hsm;
    CK_SESSION_HANDLE h; /* CK_INVALID_HANDLE when none */
    uint64_t epoch;      /* module epoch h was opened in; a stale h is never used or closed */
    bool lost;           /* a loss was seen and no signature has worked since (health) */
    bool reopen;         /* h is dead or useless: re-open before the next call */
    bool opened;         /* has had a handle: a deferred session before its first call has not */
    CK_RV lost_rv;
    uint64_t fail_epoch; /* module epoch of the last failed attempt */
    int64_t next_try_ms; /* monotonic: no HSM call before this while lost */
    uint32_t backoff_ms;
    hsm_cached cache[HSM_CACHE_KEYS];
    size_t cache_next;
};

typedef struct hsm_alg hsm_alg;

/* Immutable after js_hsm_key_find(): shared by every session and thread. */
struct js_hsm_key {
    const hsm_alg *row;
    uint64_t id;           /* unique per js_hsm: the session caches' key, never reused */
    size_t sig_len;        /* exact signature length: the row's, or the RSA modulus size */
    CK_OBJECT_HANDLE hint; /* the handle the self-test used, valid while hint_gen/epoch hold */
    uint64_t hint_gen;
    uint64_t hint_epoch;
    char label[JS_LABEL_MAX + 1];
    char warning[JS_MSG_MAX]; /* empty, or why the key's attributes are weaker than ours */
    EVP_PKEY *pub;
};

/* Observer events collected under locks and delivered after every lock is released. */
typedef struct hsm_pending {
    int n;
    struct {
        js_hsm_event_kind kind;
        int64_t duration_ms;
        char ckr[HSM_CKR_NAME];
        char label[JS_LABEL_MAX + 1];
        char msg[JS_MSG_MAX];
    } e[HSM_PENDING_MAX];
} hsm_pending;

/* ------------------------------------------------------------------------------------------ */
/* CK_RV mapping: the one place return values are named and classified.                       */

static const struct {
    CK_RV rv;
    const char *name;
    bool unavailable; /* device, session or communication trouble: retrying later may work */
} k_ckr[] = {
#define R(x, u)                                                                                    \
    {                                                                                              \
        x, #x, u                                                                                   \
    }
    R(CKR_OK, false),
    R(CKR_CANCEL, false),
    R(CKR_HOST_MEMORY, false),
    R(CKR_SLOT_ID_INVALID, true),
    R(CKR_GENERAL_ERROR, true),
    R(CKR_FUNCTION_FAILED, true),
    R(CKR_ARGUMENTS_BAD, false),
    R(CKR_NO_EVENT, false),
    R(CKR_NEED_TO_CREATE_THREADS, false),
    R(CKR_CANT_LOCK, false),
    R(CKR_ATTRIBUTE_READ_ONLY, false),
    R(CKR_ATTRIBUTE_SENSITIVE, false),
    R(CKR_ATTRIBUTE_TYPE_INVALID, false),
    R(CKR_ATTRIBUTE_VALUE_INVALID, false),
    R(CKR_ACTION_PROHIBITED, false),
    R(CKR_DATA_INVALID, false),
    R(CKR_DATA_LEN_RANGE, false),
    R(CKR_DEVICE_ERROR, true),
    R(CKR_DEVICE_MEMORY, true),
    R(CKR_DEVICE_REMOVED, true),
    R(CKR_ENCRYPTED_DATA_INVALID, false),
    R(CKR_ENCRYPTED_DATA_LEN_RANGE, false),
    R(CKR_FUNCTION_CANCELED, true),
    R(CKR_FUNCTION_NOT_PARALLEL, false),
    R(CKR_FUNCTION_NOT_SUPPORTED, false),
    R(CKR_KEY_HANDLE_INVALID, true),
    R(CKR_KEY_SIZE_RANGE, false),
    R(CKR_KEY_TYPE_INCONSISTENT, false),
    R(CKR_KEY_NOT_NEEDED, false),
    R(CKR_KEY_CHANGED, false),
    R(CKR_KEY_NEEDED, false),
    R(CKR_KEY_INDIGESTIBLE, false),
    R(CKR_KEY_FUNCTION_NOT_PERMITTED, false),
    R(CKR_KEY_NOT_WRAPPABLE, false),
    R(CKR_KEY_UNEXTRACTABLE, false),
    R(CKR_MECHANISM_INVALID, false),
    R(CKR_MECHANISM_PARAM_INVALID, false),
    R(CKR_OBJECT_HANDLE_INVALID, true),
    R(CKR_OPERATION_ACTIVE, false),
    R(CKR_OPERATION_NOT_INITIALIZED, false),
    R(CKR_PIN_INCORRECT, false),
    R(CKR_PIN_INVALID, false),
    R(CKR_PIN_LEN_RANGE, false),
    R(CKR_PIN_EXPIRED, false),
    R(CKR_PIN_LOCKED, false),
    R(CKR_SESSION_CLOSED, true),
    R(CKR_SESSION_COUNT, true),
    R(CKR_SESSION_HANDLE_INVALID, true),
    R(CKR_SESSION_PARALLEL_NOT_SUPPORTED, false),
    R(CKR_SESSION_READ_ONLY, false),
    R(CKR_SESSION_EXISTS, false),
    R(CKR_SESSION_READ_ONLY_EXISTS, false),
    R(CKR_SESSION_READ_WRITE_SO_EXISTS, false),
    R(CKR_SIGNATURE_INVALID, false),
    R(CKR_SIGNATURE_LEN_RANGE, false),
    R(CKR_TEMPLATE_INCOMPLETE, false),
    R(CKR_TEMPLATE_INCONSISTENT, false),
    R(CKR_TOKEN_NOT_PRESENT, true),
    R(CKR_TOKEN_NOT_RECOGNIZED, true),
    R(CKR_TOKEN_WRITE_PROTECTED, false),
    R(CKR_UNWRAPPING_KEY_SIZE_RANGE, false),
    R(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, false),
    R(CKR_USER_ALREADY_LOGGED_IN, false),
    R(CKR_USER_NOT_LOGGED_IN, true), /* the token lost our login, e.g. it restarted */
    R(CKR_USER_PIN_NOT_INITIALIZED, false),
    R(CKR_USER_TYPE_INVALID, false),
    R(CKR_USER_ANOTHER_ALREADY_LOGGED_IN, false),
    R(CKR_USER_TOO_MANY_TYPES, false),
    R(CKR_WRAPPED_KEY_INVALID, false),
    R(CKR_WRAPPED_KEY_LEN_RANGE, false),
    R(CKR_WRAPPING_KEY_HANDLE_INVALID, false),
    R(CKR_WRAPPING_KEY_SIZE_RANGE, false),
    R(CKR_WRAPPING_KEY_TYPE_INCONSISTENT, false),
    R(CKR_RANDOM_SEED_NOT_SUPPORTED, false),
    R(CKR_RANDOM_NO_RNG, false),
    R(CKR_DOMAIN_PARAMS_INVALID, false),
    R(CKR_CURVE_NOT_SUPPORTED, false),
    R(CKR_BUFFER_TOO_SMALL, false),
    R(CKR_SAVED_STATE_INVALID, false),
    R(CKR_INFORMATION_SENSITIVE, false),
    R(CKR_STATE_UNSAVEABLE, false),
    R(CKR_CRYPTOKI_NOT_INITIALIZED, false),
    R(CKR_CRYPTOKI_ALREADY_INITIALIZED, false),
    R(CKR_MUTEX_BAD, false),
    R(CKR_MUTEX_NOT_LOCKED, false),
    R(CKR_NEW_PIN_MODE, false),
    R(CKR_NEXT_OTP, false),
    R(CKR_EXCEEDED_MAX_ITERATIONS, false),
    R(CKR_FIPS_SELF_TEST_FAILED, true),
    R(CKR_LIBRARY_LOAD_FAILED, false),
    R(CKR_PIN_TOO_WEAK, false),
    R(CKR_PUBLIC_KEY_INVALID, false),
    R(CKR_FUNCTION_REJECTED, false),
#undef R
};

/* The name of rv ("CKR_DEVICE_REMOVED"), written to buf (cap >= HSM_CKR_NAME); returns buf. */
static const char *ckr_name(CK_RV rv, char *buf, size_t cap)
{
    for (size_t i = 0; i < sizeof(k_ckr) / sizeof(k_ckr[0]); i++) {
        if (k_ckr[i].rv == rv) {
            snprintf(buf, cap, "%s", k_ckr[i].name);
            return buf;
        }
    }
    if (rv >= CKR_VENDOR_DEFINED)
        snprintf(buf, cap, "CKR_VENDOR_DEFINED+0x%lx", (unsigned long)(rv - CKR_VENDOR_DEFINED));
    else
        snprintf(buf, cap, "CKR_0x%lx", (unsigned long)rv);
    return buf;
}

/*
 * Fills *err for a failed PKCS#11 call and returns its status: device, session
 * and communication errors are JS_EUNAVAIL whatever the context; everything
 * else takes ctx_status, the caller's judgement of what a failure means there.
 * The message is "<context>: <CKR name>"; callers never put a PIN in it.
 */
static js_status hsm_fail(js_err *err, CK_RV rv, js_status ctx_status, js_reason reason,
                          const char *fmt, ...) JS_PRINTF(5, 6);

static js_status hsm_fail(js_err *err, CK_RV rv, js_status ctx_status, js_reason reason,
                          const char *fmt, ...)
{
    char ctx[JS_MSG_MAX];
    char name[HSM_CKR_NAME];
    js_status st = ctx_status;

    ckr_name(rv, name, sizeof(name));
    for (size_t i = 0; i < sizeof(k_ckr) / sizeof(k_ckr[0]); i++) {
        if (k_ckr[i].rv == rv) {
            if (k_ckr[i].unavailable)
                st = JS_EUNAVAIL;
            break;
        }
    }
    if (st == JS_OK) /* CKR_OK is never a failure; do not let a caller bug hide one */
        st = JS_EINTERNAL;

    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    return js_err_set(err, st, reason, "%s: %s", ctx, name);
}

/* ------------------------------------------------------------------------------------------ */
/* Algorithm table.                                                                           */

typedef js_status (*hsm_read_public_fn)(js_hsm_session *s, const hsm_alg *row,
                                        CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub,
                                        const char *label, EVP_PKEY **out, js_err *err);
/* id: the random CKA_ID of both halves; rsa_bits: 2048..4096 for RSA rows, else 0. */
typedef js_status (*hsm_keygen_fn)(js_hsm_session *s, const hsm_alg *row, const char *label,
                                   CK_BYTE *id, unsigned rsa_bits, js_err *err);
/* Verifies a JWS signature (as js_hsm_sign returns it) with OpenSSL; for the key self-test. */

struct hsm_alg {
    js_alg alg;
    CK_KEY_TYPE key_type;
    CK_MECHANISM_TYPE sign_mech;
    CK_MECHANISM_TYPE keygen_mech;
    /* The JWS hash (RFC 7518 §3.1), or NULL for EdDSA (Ed25519 hashes inside, RFC 8032). */
    const EVP_MD *(*md)(void);
    bool prehash; /* md is computed here and C_Sign gets the digest (CKM_ECDSA) */
    /* RSASSA-PSS: CK_RSA_PKCS_PSS_PARAMS for C_SignInit (PKCS#11 v2.40 §2.1.14). */
    bool pss;
    CK_MECHANISM_TYPE pss_hash;
    CK_RSA_PKCS_MGF_TYPE pss_mgf;
    CK_ULONG pss_salt_len;
    size_t sig_len; /* exact JWS signature length; 0 = variable (RSA: modulus size) */
    /* EC: the curve as the DER OID PKCS#11 puts in CKA_EC_PARAMS, OpenSSL's name, field size. */
    const uint8_t *ec_params;
    size_t ec_params_len;
    const char *ossl_group;
    size_t field_len;
    hsm_read_public_fn read_public;
    hsm_keygen_fn keygen;
};

static js_status ec_read_public(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE priv,
                                CK_OBJECT_HANDLE pub, const char *label, EVP_PKEY **out,
                                js_err *err);
static js_status ec_keygen(js_hsm_session *s, const hsm_alg *row, const char *label, CK_BYTE *id,
                           unsigned rsa_bits, js_err *err);
static js_status rsa_read_public(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE priv,
                                 CK_OBJECT_HANDLE pub, const char *label, EVP_PKEY **out,
                                 js_err *err);
static js_status rsa_keygen(js_hsm_session *s, const hsm_alg *row, const char *label, CK_BYTE *id,
                            unsigned rsa_bits, js_err *err);
static js_status ed_read_public(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE priv,
                                CK_OBJECT_HANDLE pub, const char *label, EVP_PKEY **out,
                                js_err *err);
static js_status ed_keygen(js_hsm_session *s, const hsm_alg *row, const char *label, CK_BYTE *id,
                           unsigned rsa_bits, js_err *err);

/* prime256v1 = 1.2.840.10045.3.1.7, secp384r1 = 1.3.132.0.34 (RFC 5480 §2.1.1.1) */
static const uint8_t k_oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t k_oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
/*
 * Ed25519 in CKA_EC_PARAMS (PKCS#11 v3.0 §2.3.10): the DER OID id-Ed25519
 * 1.3.101.112 (RFC 8410 §3), or the PrintableString "edwards25519". Tokens
 * differ in which they write and accept, so both are read; keygen tries the OID.
 */
static const uint8_t k_oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
static const uint8_t k_str_ed25519[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                        'd',  's',  '2', '5', '5', '1', '9'};

/*
 * One row per JWS alg (RFC 7518 §3.1). ES256: SoftHSM has no CKM_ECDSA_SHA256,
 * so SHA-256 is computed here and CKM_ECDSA signs the digest; its output is
 * r||s padded to the field size, already the JOSE form (RFC 7518 §3.4).
 * ES384 is the same with SHA-384 on P-384 (96-byte r||s).
 * RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 with SHA-256, hashed by the token
 * (CKM_SHA256_RSA_PKCS); the signature is as long as the modulus.
 * PS256 (RFC 7518 §3.5): RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a salt
 * as long as the hash (32 bytes).
 * EdDSA (RFC 8037 §3.1): Ed25519 over the signing input itself (CKM_EDDSA
 * without parameters is pure Ed25519), a 64-byte signature.
 */
static const hsm_alg k_algs[] = {
    {
        .alg = JS_ALG_ES256,
        .key_type = CKK_EC,
        .sign_mech = CKM_ECDSA,
        .keygen_mech = CKM_EC_KEY_PAIR_GEN,
        .md = EVP_sha256,
        .prehash = true,
        .sig_len = 64,
        .ec_params = k_oid_p256,
        .ec_params_len = sizeof(k_oid_p256),
        .ossl_group = "prime256v1",
        .field_len = 32,
        .read_public = ec_read_public,
        .keygen = ec_keygen,
    },
    {
        .alg = JS_ALG_ES384,
        .key_type = CKK_EC,
        .sign_mech = CKM_ECDSA,
        .keygen_mech = CKM_EC_KEY_PAIR_GEN,
        .md = EVP_sha384,
        .prehash = true,
        .sig_len = 96,
        .ec_params = k_oid_p384,
        .ec_params_len = sizeof(k_oid_p384),
        .ossl_group = "secp384r1",
        .field_len = 48,
        .read_public = ec_read_public,
        .keygen = ec_keygen,
    },
    {
        .alg = JS_ALG_RS256,
        .key_type = CKK_RSA,
        .sign_mech = CKM_SHA256_RSA_PKCS,
        .keygen_mech = CKM_RSA_PKCS_KEY_PAIR_GEN,
        .md = EVP_sha256,
        .read_public = rsa_read_public,
        .keygen = rsa_keygen,
    },
    {
        .alg = JS_ALG_PS256,
        .key_type = CKK_RSA,
        .sign_mech = CKM_SHA256_RSA_PKCS_PSS,
        .keygen_mech = CKM_RSA_PKCS_KEY_PAIR_GEN,
        .md = EVP_sha256,
        .pss = true,
        .pss_hash = CKM_SHA256,
        .pss_mgf = CKG_MGF1_SHA256,
        .pss_salt_len = 32,
        .read_public = rsa_read_public,
        .keygen = rsa_keygen,
    },
    {
        .alg = JS_ALG_EDDSA,
        .key_type = CKK_EC_EDWARDS,
        .sign_mech = CKM_EDDSA,
        .keygen_mech = CKM_EC_EDWARDS_KEY_PAIR_GEN,
        .sig_len = 64,
        .ec_params = k_oid_ed25519,
        .ec_params_len = sizeof(k_oid_ed25519),
        .ossl_group = "Ed25519",
        .field_len = HSM_ED25519_LEN,
        .read_public = ed_read_public,
        .keygen = ed_keygen,
    },
};

static const hsm_alg *alg_row(js_alg alg)
{
    for (size_t i = 0; i < sizeof(k_algs) / sizeof(k_algs[0]); i++)
        if (k_algs[i].alg == alg)
            return &k_algs[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers.                                                                             */

/* Copies a blank-padded PKCS#11 string (§3.2 CK_TOKEN_INFO) for a log line: trimmed, printable. */
static void printable_field(char *dst, size_t cap, const unsigned char *src, size_t max_len)
{
    size_t n = p11_kit_space_strlen(src, max_len);
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = (src[i] >= 0x20 && src[i] < 0x7f && src[i] != '\'') ? (char)src[i] : '?';
    dst[n] = '\0';
}

/*
 * A label goes into templates and messages: the HSM label rule of names.h
 * (1..JS_LABEL_MAX bytes of printable ASCII), so it can be neither truncated
 * nor used to forge log lines. The rest only says what is wrong with it.
 */
static js_status check_label(const char *label, js_err *err)
{
    if (js_label_ok(label))
        return JS_OK;
    JS_ENSURE(label != NULL, err, JS_EINVAL, JS_R_HSM_LABEL, "key label is missing");
    size_t n = strnlen(label, JS_LABEL_MAX + 1);
    JS_ENSURE(n > 0, err, JS_EINVAL, JS_R_HSM_LABEL, "key label is empty");
    JS_ENSURE(n <= JS_LABEL_MAX, err, JS_EINVAL, JS_R_HSM_LABEL,
              "key label is longer than %d bytes", JS_LABEL_MAX);
    for (size_t i = 0; i < n; i++)
        JS_ENSURE(label[i] >= 0x20 && label[i] < 0x7f, err, JS_EINVAL, JS_R_HSM_LABEL,
                  "key label contains a byte outside printable ASCII (offset %zu)", i);
    return js_err_set(err, JS_EINVAL, JS_R_HSM_LABEL, "key label is not valid");
}

/*
 * Finds up to `cap` objects matching tmpl on session s (PKCS#11 §5.10) and
 * reports how many (at most cap; cap = 2 is enough to tell one from several).
 */
static js_status find_objects(js_hsm_session *s, CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl,
                              CK_OBJECT_HANDLE *found, CK_ULONG cap, CK_ULONG *n_found,
                              const char *what, CK_RV *rv_out, js_err *err)
{
    CK_FUNCTION_LIST *m = s->hsm->mod;
    js_status st = JS_OK;
    bool active = false;

    *n_found = 0;
    CK_RV rv = m->C_FindObjectsInit(s->h, tmpl, n_tmpl);
    *rv_out = rv;
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_FIND, "%s: C_FindObjectsInit", what);
        goto out;
    }
    active = true;
    rv = m->C_FindObjects(s->h, found, cap, n_found);
    *rv_out = rv;
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_FIND, "%s: C_FindObjects", what);
        goto out;
    }
out:
    if (active) {
        rv = m->C_FindObjectsFinal(s->h);
        if (rv != CKR_OK && st == JS_OK)
            *rv_out = rv,
            st = hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_FIND, "%s: C_FindObjectsFinal", what);
    }
    return st;
}

/* Parses a DER definite length (X.690 §8.1.3, §10.1: minimal form) at p[*off], bounded by n. */
static bool der_length(const uint8_t *p, size_t n, size_t *off, size_t *len)
{
    if (*off >= n)
        return false;
    uint8_t b = p[(*off)++];
    if (b < 0x80) {
        *len = b;
        return true;
    }
    size_t nbytes = b & 0x7f;
    if (nbytes == 0 || nbytes > 2 || n - *off < nbytes) /* 0x80 = indefinite, not DER */
        return false;
    size_t v = 0;
    for (size_t i = 0; i < nbytes; i++)
        v = (v << 8) | p[(*off)++];
    if (v < 0x80 || (nbytes == 2 && v < 0x100)) /* not the shortest form */
        return false;
    *len = v;
    return true;
}

/*
 * CKA_EC_POINT is the DER encoding of an OCTET STRING holding the X9.62 point
 * (PKCS#11 v2.40 §2.3.3). Strict: one TLV spanning exactly the attribute.
 */
static bool der_octet_string(const uint8_t *p, size_t n, const uint8_t **val, size_t *val_len)
{
    size_t off = 0, len = 0;
    if (n < 2 || p[off++] != 0x04)
        return false;
    if (!der_length(p, n, &off, &len))
        return false;
    if (len != n - off)
        return false;
    *val = p + off;
    *val_len = len;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Time, events and health.                                                                   */

static uint32_t backoff_next(uint32_t cur)
{
    return cur >= HSM_BACKOFF_MAX_MS / 2 ? HSM_BACKOFF_MAX_MS : cur * 2;
}

/*
 * "The session or the objects are gone": the token was removed, restarted or
 * forgot our login. Only these lead to re-opening; CKR_CRYPTOKI_NOT_INITIALIZED
 * is added for a module that was finalised under us.
 */
static bool rv_gone(CK_RV rv)
{
    switch (rv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_DEVICE_ERROR:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
        return true;
    default:
        return false;
    }
}

static void pend_add(hsm_pending *p, js_hsm_event_kind kind, CK_RV rv, const char *label,
                     int64_t duration_ms, const char *fmt, ...) JS_PRINTF(6, 7);

static void pend_add(hsm_pending *p, js_hsm_event_kind kind, CK_RV rv, const char *label,
                     int64_t duration_ms, const char *fmt, ...)
{
    if (p == NULL || p->n >= HSM_PENDING_MAX)
        return;
    int i = p->n++;
    p->e[i].kind = kind;
    p->e[i].duration_ms = duration_ms;
    if (rv != CKR_OK)
        ckr_name(rv, p->e[i].ckr, sizeof(p->e[i].ckr));
    else
        p->e[i].ckr[0] = '\0';
    snprintf(p->e[i].label, sizeof(p->e[i].label), "%s", label != NULL ? label : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->e[i].msg, sizeof(p->e[i].msg), fmt, ap);
    va_end(ap);
}

/* Delivers collected events; the caller holds no lock of ours. */
static void pend_flush(js_hsm *hsm, hsm_pending *p)
{
    if (hsm->observer == NULL)
        return;
    for (int i = 0; i < p->n; i++) {
        js_hsm_event ev = {
            .kind = p->e[i].kind,
            .ckr = p->e[i].ckr,
            .label = p->e[i].label,
            .duration_ms = p->e[i].duration_ms,
            .message = p->e[i].msg,
        };
        hsm->observer(hsm->observer_ctx, &ev);
    }
    p->n = 0;
}

const char *js_hsm_event_name(js_hsm_event_kind kind)
{
    switch (kind) {
    case JS_HSM_EVENT_LOST:
        return "hsm_session_lost";
    case JS_HSM_EVENT_RECOVERED:
        return "hsm_recovered";
    case JS_HSM_EVENT_KEY_MISMATCH:
        return "hsm_key_mismatch";
    case JS_HSM_EVENT_REINIT:
        return "hsm_module_reinitialised";
    default:
        return "hsm_event";
    }
}

/*
 * A session noticed a loss (rv from fn). Health is the module's, not each
 * session's: the HSM is unhealthy from the first loss until any session signs
 * again (note_healed). Sessions that stay idle heal on their next use and do
 * not keep the HSM "lost" (a worker with no calls, or a replaced server's).
 * A session still marked lost that fails again after the HSM had recovered
 * starts a new outage.
 */
static void note_lost(js_hsm_session *s, CK_RV rv, const char *fn, const char *label,
                      hsm_pending *pend)
{
    js_hsm *hsm = s->hsm;
    s->reopen = true;
    bool first = !s->lost;
    if (first) {
        s->lost = true;
        s->lost_rv = rv;
        s->next_try_ms = 0; /* the first re-open is immediate; later ones back off */
        s->backoff_ms = HSM_BACKOFF_MIN_MS;
    }
    char name[HSM_CKR_NAME];
    ckr_name(rv, name, sizeof(name));
    pthread_mutex_lock(&hsm->mu);
    if (first) {
        hsm->health.failures++;
        hsm->health.sessions_lost++;
    }
    if (hsm->health.ok) {
        hsm->health.ok = false;
        atomic_store(&hsm->down, true);
        hsm->health.last_change_ms = js_wall_ms();
        hsm->outage_start_ms = js_mono_ms();
        snprintf(hsm->health.why, sizeof(hsm->health.why),
                 "HSM session lost: %s in %s (key '%s') on %s; re-opening with backoff", name, fn,
                 label != NULL ? label : "-", hsm->desc);
        pend_add(pend, JS_HSM_EVENT_LOST, rv, label, 0, "%s", hsm->health.why);
    }
    pthread_mutex_unlock(&hsm->mu);
}

/* The session signed again after a loss: the HSM works again. */
static void note_healed(js_hsm_session *s, const char *label, hsm_pending *pend)
{
    js_hsm *hsm = s->hsm;
    /* A session that never saw the loss (re-opened only because the module
     * was re-initialised) also proves the HSM works: `down` is read without
     * the lock so a healthy sign costs one atomic load. */
    if (!s->lost && !atomic_load(&hsm->down))
        return;
    bool was_lost = s->lost;
    s->lost = false;
    s->backoff_ms = HSM_BACKOFF_MIN_MS;
    s->next_try_ms = 0;
    pthread_mutex_lock(&hsm->mu);
    if (was_lost) {
        hsm->health.session_heals++;
        if (hsm->health.sessions_lost > 0)
            hsm->health.sessions_lost--;
    }
    if (!hsm->health.ok) {
        atomic_store(&hsm->down, false);
        int64_t took = js_mono_ms() - hsm->outage_start_ms;
        hsm->health.ok = true;
        hsm->health.recoveries++;
        hsm->health.last_change_ms = js_wall_ms();
        hsm->health.why[0] = '\0';
        pend_add(pend, JS_HSM_EVENT_RECOVERED, CKR_OK, label, took,
                 "HSM recovered on %s after %lld ms (session re-opened, logged in, keys found "
                 "and checked)",
                 hsm->desc, (long long)took);
    }
    pthread_mutex_unlock(&hsm->mu);
}

/* A failed recovery attempt: the session leaves the HSM alone until next_try_ms. */
static void schedule_retry(js_hsm_session *s, int64_t not_before)
{
    s->reopen = true;
    int64_t now = js_mono_ms();
    s->fail_epoch = atomic_load(&s->hsm->epoch);
    if (s->backoff_ms < HSM_BACKOFF_MIN_MS)
        s->backoff_ms = HSM_BACKOFF_MIN_MS;
    s->next_try_ms = now + s->backoff_ms;
    if (not_before > s->next_try_ms) /* the module's own backoff: retry when it allows */
        s->next_try_ms = not_before;
    s->backoff_ms = backoff_next(s->backoff_ms);
}

void js_hsm_health_get(js_hsm *hsm, js_hsm_health *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof(*out));
    if (hsm == NULL)
        return;
    pthread_mutex_lock(&hsm->mu);
    *out = hsm->health;
    pthread_mutex_unlock(&hsm->mu);
}

void js_hsm_set_observer(js_hsm *hsm, js_hsm_observer_fn fn, void *ctx)
{
    if (hsm == NULL)
        return;
    hsm->observer = fn;
    hsm->observer_ctx = ctx;
}

/* ------------------------------------------------------------------------------------------ */
/* Module, token and login.                                                                   */

/* Returns `uri` for a message, or a placeholder if it may carry a PIN (RFC 7512 §2.3 pin-value). */
static const char *uri_for_msg(const char *uri)
{
    for (const char *p = uri; *p != '\0'; p++)
        if ((p[0] == 'p' || p[0] == 'P') && (p[1] == 'i' || p[1] == 'I') &&
            (p[2] == 'n' || p[2] == 'N'))
            return "(URI not shown: it mentions a PIN)";
    return uri;
}

static const char *uri_result_name(int r)
{
    switch (r) {
    case P11_KIT_URI_BAD_SCHEME:
        return "not a pkcs11: URI";
    case P11_KIT_URI_BAD_ENCODING:
        return "bad percent-encoding";
    case P11_KIT_URI_BAD_SYNTAX:
        return "bad syntax";
    case P11_KIT_URI_BAD_VERSION:
        return "bad version";
    case P11_KIT_URI_NOT_FOUND:
        return "not found";
    case P11_KIT_URI_UNEXPECTED:
        return "unexpected error";
    default:
        return "parse error";
    }
}

static js_status parse_token_uri(const char *token_uri, P11KitUri **out, js_err *err)
{
    js_status st = JS_OK;
    P11KitUri *uri = p11_kit_uri_new();
    JS_ENSURE_ALLOC(uri, err);

    int r = p11_kit_uri_parse(token_uri, P11_KIT_URI_FOR_TOKEN, uri);
    if (r != P11_KIT_URI_OK) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_URI, "token URI %s: %s (RFC 7512)",
                        uri_for_msg(token_uri), uri_result_name(r));
        goto out;
    }
    /* The PIN is configured separately and must never sit in a URI that ends up in logs. */
    if (p11_kit_uri_get_pin_value(uri) != NULL || p11_kit_uri_get_pin_source(uri) != NULL) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_URI,
                        "token URI must not carry pin-value or pin-source; configure the PIN "
                        "separately");
        goto out;
    }
    /* p11-kit makes a URI with attributes it did not parse match nothing; say why instead. */
    if (p11_kit_uri_any_unrecognized(uri)) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_URI,
                        "token URI %s has path attributes other than token, manufacturer, "
                        "serial and model",
                        token_uri);
        goto out;
    }
    *out = uri;
    uri = NULL;
out:
    p11_kit_uri_free(uri);
    return st;
}

/* Finds the one present, initialised token matching uri (PKCS#11 §5.5 C_GetSlotList). */
static js_status select_token(js_hsm *hsm, P11KitUri *uri, const char *token_uri, js_err *err)
{
    CK_FUNCTION_LIST *m = hsm->mod;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0;
    js_status st = JS_OK;
    CK_RV rv;
    int attempts = 0;

    /* The slot list can grow between the two calls (hot plug): retry a few times. */
    for (;;) {
        rv = m->C_GetSlotList(CK_TRUE, NULL, &n);
        if (rv != CKR_OK) {
            st = hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_TOKEN, "%s: C_GetSlotList",
                          hsm->module_path);
            goto out;
        }
        if (n == 0 || n > HSM_SLOTS_MAX)
            break;
        free(slots);
        slots = calloc(n, sizeof(*slots));
        if (slots == NULL) {
            st = js_err_oom(err);
            goto out;
        }
        rv = m->C_GetSlotList(CK_TRUE, slots, &n);
        if (rv == CKR_BUFFER_TOO_SMALL && ++attempts < 3)
            continue;
        if (rv != CKR_OK) {
            st = hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_TOKEN, "%s: C_GetSlotList",
                          hsm->module_path);
            goto out;
        }
        break;
    }
    if (n > HSM_SLOTS_MAX) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_TOKEN, "%s: more than %d slots", hsm->module_path,
                        HSM_SLOTS_MAX);
        goto out;
    }

    size_t matches = 0;
    CK_TOKEN_INFO info, chosen;
    memset(&chosen, 0, sizeof(chosen));
    for (CK_ULONG i = 0; i < n; i++) {
        rv = m->C_GetTokenInfo(slots[i], &info);
        if (rv == CKR_TOKEN_NOT_PRESENT) /* removed since C_GetSlotList */
            continue;
        if (rv != CKR_OK) {
            st = hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_TOKEN, "%s: C_GetTokenInfo",
                          hsm->module_path);
            goto out;
        }
        /* An uninitialised token (SoftHSM always offers one) cannot hold keys or log in. */
        if (!(info.flags & CKF_TOKEN_INITIALIZED))
            continue;
        if (!p11_kit_uri_match_token_info(uri, &info))
            continue;
        if (++matches == 1) {
            hsm->slot = slots[i];
            chosen = info;
        }
    }
    if (matches == 0) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_TOKEN_NOT_FOUND,
                        "no initialised token in %s matches %s", hsm->module_path, token_uri);
        goto out;
    }
    if (matches > 1) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_TOKEN_AMBIGUOUS,
                        "%zu tokens in %s match %s; add token= or serial= to the URI", matches,
                        hsm->module_path, token_uri);
        goto out;
    }
    char label[33], serial[17];
    printable_field(label, sizeof(label), chosen.label, sizeof(chosen.label));
    printable_field(serial, sizeof(serial), chosen.serialNumber, sizeof(chosen.serialNumber));
    snprintf(hsm->desc, sizeof(hsm->desc), "token '%s' (serial '%s')", label, serial);
out:
    free(slots);
    return st;
}

/* C_Login as CKU_USER on h with the kept PIN (PKCS#11 §5.6). The PIN never enters a message. */
static CK_RV login_on(js_hsm *hsm, CK_SESSION_HANDLE h)
{
    /* C_Login takes a non-const pointer: hand it a copy, wiped after the call. */
    CK_UTF8CHAR pin_copy[JS_HSM_PIN_MAX];
    memcpy(pin_copy, hsm->pin, hsm->pin_len);
    CK_RV rv = hsm->mod->C_Login(h, CKU_USER, pin_copy, (CK_ULONG)hsm->pin_len);
    OPENSSL_cleanse(pin_copy, sizeof(pin_copy));
    /* Already logged in: login state is per application (§5.6), another session did it. */
    return rv == CKR_USER_ALREADY_LOGGED_IN ? CKR_OK : rv;
}

/*
 * C_Login with the gate held for writing: SoftHSM 2.6.1 is not safe when
 * C_Login runs while another thread signs (seen in test_heal_under_load: a
 * C_Sign crashed in EC_POINT_new while another session logged in again after
 * a token loss). Logins are rare (first open, after a loss), so they run
 * alone. Called with the gate held for reading, returns with it held for
 * reading; a re-initialisation in between killed h: CKR_SESSION_HANDLE_INVALID.
 */
static CK_RV login_alone(js_hsm *hsm, CK_SESSION_HANDLE h)
{
    uint64_t epoch = atomic_load(&hsm->epoch);
    pthread_rwlock_unlock(&hsm->gate);
    pthread_mutex_lock(&hsm->mu);
    hsm->login_waiters++;
    atomic_store(&hsm->reinit_pending, true); /* new readers wait: the writer is not starved */
    pthread_mutex_unlock(&hsm->mu);

    pthread_rwlock_wrlock(&hsm->gate);
    CK_RV rv = CKR_SESSION_HANDLE_INVALID;
    if (atomic_load(&hsm->epoch) == epoch && hsm->ready) {
        CK_SESSION_INFO info;
        rv = hsm->mod->C_GetSessionInfo(h, &info);
        /* Another thread may have logged the application in meanwhile (§5.6). */
        if (rv == CKR_OK && info.state != CKS_RW_USER_FUNCTIONS &&
            info.state != CKS_RO_USER_FUNCTIONS)
            rv = login_on(hsm, h);
    }
    pthread_rwlock_unlock(&hsm->gate);

    pthread_mutex_lock(&hsm->mu);
    if (--hsm->login_waiters == 0 && !hsm->reinit_running)
        atomic_store(&hsm->reinit_pending, false);
    pthread_cond_broadcast(&hsm->reinit_done);
    pthread_mutex_unlock(&hsm->mu);
    pthread_rwlock_rdlock(&hsm->gate);
    if (rv == CKR_OK && atomic_load(&hsm->epoch) != epoch)
        rv = CKR_SESSION_HANDLE_INVALID;
    return rv;
}

/*
 * Opens an R/W session (keygen creates token objects; §5.6: R/O sessions
 * cannot) and makes sure the application is logged in: only if the token
 * forgot us (first open, token restarted or came back) does this call C_Login
 * (alone, login_alone, when the caller holds the gate for reading; directly
 * when it holds it for writing). *fn names the call that failed.
 */
static CK_RV open_logged_in_ex(js_hsm *hsm, CK_SESSION_HANDLE *out, const char **fn, bool read_gate)
{
    CK_FUNCTION_LIST *m = hsm->mod;
    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
    CK_SESSION_INFO info;

    *out = CK_INVALID_HANDLE;
    *fn = "C_OpenSession";
    uint64_t epoch = atomic_load(&hsm->epoch);
    CK_RV rv = m->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);
    if (rv != CKR_OK)
        return rv;
    *fn = "C_GetSessionInfo";
    rv = m->C_GetSessionInfo(h, &info);
    if (rv == CKR_OK && info.state != CKS_RW_USER_FUNCTIONS &&
        info.state != CKS_RO_USER_FUNCTIONS) {
        *fn = "C_Login";
        rv = read_gate ? login_alone(hsm, h) : login_on(hsm, h);
    }
    if (rv != CKR_OK) {
        /* login_alone let go of the gate: after a re-initialisation in
         * between, h may name another thread's session. Never close it. */
        if (atomic_load(&hsm->epoch) == epoch)
            (void)m->C_CloseSession(h);
        return rv;
    }
    *out = h;
    return CKR_OK;
}

/* The same, for a caller holding the gate for reading (every caller but module_start). */
static CK_RV open_logged_in(js_hsm *hsm, CK_SESSION_HANDLE *out, const char **fn)
{
    return open_logged_in_ex(hsm, out, fn, true);
}

/* C_Initialize, select the token, open the login session. Holds the gate for writing (or is
 * js_hsm_open, before anyone else can see hsm). */
static js_status module_start(js_hsm *hsm, js_err *err)
{
    /*
     * Managed mode (see js_hsm_open): p11-kit initialises the module with
     * CKF_OS_LOCKING_OK (PKCS#11 §5.4 C_Initialize), which SoftHSM needs for
     * concurrent sessions.
     */
    CK_RV rv = p11_kit_module_initialize(hsm->mod);
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_MODULE, "%s: C_Initialize", hsm->module_path);
    hsm->initialized = true;
    JS_GUARD(select_token(hsm, hsm->uri, hsm->token_uri, err));
    const char *fn = "C_OpenSession";
    rv = open_logged_in_ex(hsm, &hsm->login_session, &fn, false);
    if (rv != CKR_OK) {
        bool is_login = strcmp(fn, "C_Login") == 0;
        return hsm_fail(err, rv, JS_ECONFIG, is_login ? JS_R_HSM_LOGIN : JS_R_HSM_SESSION,
                        "%s: %s%s", hsm->desc, fn, is_login ? " as user" : "");
    }
    hsm->ready = true;
    return JS_OK;
}

/* Closes the login session and finalises the module; every handle dies (§5.4 C_Finalize). */
static void module_stop(js_hsm *hsm)
{
    /*
     * No C_Logout: login state belongs to the whole application (§5.6), and
     * another js_hsm on the same module may still use it. Return values are
     * ignored on purpose: there is nothing left to undo.
     */
    if (hsm->login_session != CK_INVALID_HANDLE)
        (void)hsm->mod->C_CloseSession(hsm->login_session);
    hsm->login_session = CK_INVALID_HANDLE;
    if (hsm->initialized)
        (void)p11_kit_module_finalize(hsm->mod);
    hsm->initialized = false;
    hsm->ready = false;
}

js_status js_hsm_open(const char *module_path, const char *token_uri, const char *pin,
                      size_t pin_len, js_hsm **out, js_err *err)
{
    js_hsm *hsm = NULL;
    P11KitUri *uri = NULL;
    js_status st = JS_OK;

    JS_ENSURE(out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARG, "js_hsm_open: out is NULL");
    *out = NULL;
    JS_ENSURE(module_path != NULL && module_path[0] != '\0', err, JS_ECONFIG, JS_R_HSM_MODULE,
              "PKCS#11 module path is missing");
    JS_ENSURE(token_uri != NULL, err, JS_ECONFIG, JS_R_HSM_URI, "token URI is missing");
    JS_ENSURE(pin != NULL, err, JS_ECONFIG, JS_R_HSM_PIN, "PIN is missing");
    JS_ENSURE(pin_len <= JS_HSM_PIN_MAX, err, JS_ECONFIG, JS_R_HSM_PIN,
              "PIN is longer than %d bytes", JS_HSM_PIN_MAX);

    /* Parse first: a bad URI is reported without loading any code. */
    JS_GUARD(parse_token_uri(token_uri, &uri, err));

    hsm = calloc(1, sizeof(*hsm));
    JS_ENSURE_ALLOC(hsm, err);
    hsm->uri = uri;
    hsm->login_session = CK_INVALID_HANDLE;
    hsm->reinit_backoff_ms = HSM_BACKOFF_MIN_MS;
    hsm->health.ok = true;
    atomic_init(&hsm->reinit_pending, false);
    atomic_init(&hsm->down, false);
    atomic_init(&hsm->epoch, 1);
    atomic_init(&hsm->handle_gen, 1);
    atomic_init(&hsm->next_key_id, 1);
    pthread_condattr_t ca;
    bool sync_ok = pthread_rwlock_init(&hsm->gate, NULL) == 0;
    sync_ok = pthread_mutex_init(&hsm->mu, NULL) == 0 && sync_ok;
    sync_ok = pthread_condattr_init(&ca) == 0 && sync_ok;
    sync_ok = sync_ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&hsm->reinit_done, &ca) == 0;
    (void)pthread_condattr_destroy(&ca);
    /* The PIN is kept for re-login after the token forgets us; js_hsm_free wipes it. */
    hsm->pin = malloc(pin_len > 0 ? pin_len : 1);
    hsm->module_path = strdup(module_path);
    hsm->token_uri = strdup(token_uri);
    if (!sync_ok || hsm->pin == NULL || hsm->module_path == NULL || hsm->token_uri == NULL) {
        st = js_err_oom(err);
        goto out;
    }
    memcpy(hsm->pin, pin, pin_len);
    hsm->pin_len = pin_len;

    /*
     * Managed mode (flags 0): p11-kit initialises the module with
     * CKF_OS_LOCKING_OK, and keeps several loads of one module apart.
     */
    hsm->mod = p11_kit_module_load(module_path, 0);
    if (hsm->mod == NULL) {
        const char *why = p11_kit_message();
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_MODULE, "cannot load PKCS#11 module %s: %s",
                        module_path, why ? why : "unknown error");
        goto out;
    }
    st = module_start(hsm, err);
    if (st != JS_OK)
        goto out;
    *out = hsm;
    hsm = NULL;
out:
    js_hsm_free(hsm);
    return st;
}

void js_hsm_free(js_hsm *hsm)
{
    if (hsm == NULL)
        return;
    if (hsm->mod != NULL) {
        module_stop(hsm);
        p11_kit_module_release(hsm->mod);
    }
    if (hsm->pin != NULL)
        OPENSSL_cleanse(hsm->pin, hsm->pin_len);
    free(hsm->pin);
    p11_kit_uri_free(hsm->uri);
    free(hsm->module_path);
    free(hsm->token_uri);
    pthread_rwlock_destroy(&hsm->gate);
    pthread_mutex_destroy(&hsm->mu);
    pthread_cond_destroy(&hsm->reinit_done);
    free(hsm);
}

const char *js_hsm_token_description(const js_hsm *hsm)
{
    return hsm != NULL ? hsm->desc : "(no token)";
}

/* ------------------------------------------------------------------------------------------ */
/* The module gate and module re-initialisation.                                             */

/* Enters the gate for reading; waits (bounded) while another thread re-initialises. */
static js_status gate_enter(js_hsm *hsm, js_err *err)
{
    if (atomic_load(&hsm->reinit_pending)) {
        /* reinit_done uses CLOCK_MONOTONIC (pthread_condattr_setclock in js_hsm_open). */
        struct timespec until = js_mono_deadline(HSM_REINIT_WAIT_MS);
        pthread_mutex_lock(&hsm->mu);
        int rc = 0;
        while ((hsm->reinit_running || hsm->login_waiters > 0) && rc == 0)
            rc = pthread_cond_timedwait(&hsm->reinit_done, &hsm->mu, &until);
        bool still = hsm->reinit_running || hsm->login_waiters > 0;
        pthread_mutex_unlock(&hsm->mu);
        JS_ENSURE(!still, err, JS_EUNAVAIL, JS_R_HSM_RECOVERING,
                  "the PKCS#11 module %s is being re-initialised; try again", hsm->module_path);
    }
    pthread_rwlock_rdlock(&hsm->gate);
    return JS_OK;
}

static void gate_exit(js_hsm *hsm)
{
    pthread_rwlock_unlock(&hsm->gate);
}

/*
 * C_Finalize + C_Initialize + token selection + login, for a module whose
 * token stays unusable after it came back (SoftHSM 2.6.1 keeps a token whose
 * directory vanished invalid until C_Initialize; found by experiment). Only
 * if no other thread did it since the caller saw `seen_epoch`, and not more
 * often than the module backoff allows. *retry_at: when a caller may try
 * again (monotonic ms). The caller holds no gate.
 */
static js_status module_reinit(js_hsm *hsm, uint64_t seen_epoch, const char *cause,
                               int64_t *retry_at, hsm_pending *pend, js_err *err)
{
    int64_t now = js_mono_ms();
    *retry_at = 0;
    pthread_mutex_lock(&hsm->mu);
    if (atomic_load(&hsm->epoch) != seen_epoch || hsm->reinit_running) {
        /* Done or under way elsewhere: the caller's next gate_enter waits for it. */
        pthread_mutex_unlock(&hsm->mu);
        return JS_OK;
    }
    if (now < hsm->reinit_next_ms) {
        int64_t wait = hsm->reinit_next_ms - now;
        *retry_at = hsm->reinit_next_ms;
        pthread_mutex_unlock(&hsm->mu);
        return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_RECOVERING,
                          "%s; re-initialising the PKCS#11 module backs off, next attempt in "
                          "%lld ms",
                          cause, (long long)wait);
    }
    hsm->reinit_running = true;
    atomic_store(&hsm->reinit_pending, true);
    pthread_mutex_unlock(&hsm->mu);

    pthread_rwlock_wrlock(&hsm->gate);
    module_stop(hsm);
    js_err rerr;
    js_err_clear(&rerr);
    js_status st = module_start(hsm, &rerr);
    /* Every handle of the old epoch died in C_Finalize, whatever module_start did. */
    atomic_fetch_add(&hsm->epoch, 1);
    atomic_fetch_add(&hsm->handle_gen, 1);
    pthread_rwlock_unlock(&hsm->gate);

    pthread_mutex_lock(&hsm->mu);
    hsm->reinit_running = false;
    if (hsm->login_waiters == 0)
        atomic_store(&hsm->reinit_pending, false);
    hsm->health.reinits++;
    if (st == JS_OK) {
        hsm->reinit_backoff_ms = HSM_BACKOFF_MIN_MS;
        hsm->reinit_next_ms = 0;
    } else {
        hsm->health.reinit_failures++;
        hsm->reinit_next_ms = js_mono_ms() + hsm->reinit_backoff_ms;
        *retry_at = hsm->reinit_next_ms;
        hsm->reinit_backoff_ms = backoff_next(hsm->reinit_backoff_ms);
    }
    pthread_cond_broadcast(&hsm->reinit_done);
    pthread_mutex_unlock(&hsm->mu);
    if (st != JS_OK)
        return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_UNAVAILABLE,
                          "%s; re-initialising the PKCS#11 module failed: %s", cause, rerr.msg);
    pend_add(pend, JS_HSM_EVENT_REINIT, CKR_OK, NULL, 0,
             "PKCS#11 module %s re-initialised (C_Finalize, C_Initialize, login) after: %s",
             hsm->module_path, cause);
    return JS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions.                                                                                  */

js_status js_hsm_session_open(js_hsm *hsm, js_hsm_session **out, js_err *err)
{
    JS_ENSURE(hsm != NULL && out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_session_open: NULL argument");
    *out = NULL;
    js_hsm_session *s = calloc(1, sizeof(*s));
    JS_ENSURE_ALLOC(s, err);
    s->hsm = hsm;
    s->h = CK_INVALID_HANDLE;
    s->backoff_ms = HSM_BACKOFF_MIN_MS;
    js_status st = gate_enter(hsm, err);
    if (st != JS_OK) {
        free(s);
        return st;
    }
    const char *fn = "C_OpenSession";
    CK_RV rv = hsm->ready ? open_logged_in(hsm, &s->h, &fn) : CKR_CRYPTOKI_NOT_INITIALIZED;
    s->epoch = atomic_load(&hsm->epoch);
    s->opened = rv == CKR_OK;
    gate_exit(hsm);
    if (rv != CKR_OK) {
        free(s);
        return hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_SESSION, "%s: %s", hsm->desc, fn);
    }
    *out = s;
    return JS_OK;
}

js_status js_hsm_session_new_deferred(js_hsm *hsm, js_hsm_session **out, js_err *err)
{
    JS_ENSURE(hsm != NULL && out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_session_new_deferred: NULL argument");
    *out = NULL;
    js_hsm_session *s = calloc(1, sizeof(*s));
    JS_ENSURE_ALLOC(s, err);
    s->hsm = hsm;
    s->h = CK_INVALID_HANDLE; /* session_ready opens it on the first call */
    s->backoff_ms = HSM_BACKOFF_MIN_MS;
    s->epoch = atomic_load(&hsm->epoch);
    *out = s;
    return JS_OK;
}

void js_hsm_session_free(js_hsm_session *s)
{
    if (s == NULL)
        return;
    js_hsm *hsm = s->hsm;
    js_err err;
    /* Nothing to close for a session without a handle (a deferred one never
     * used): no need to wait at the gate for a re-initialisation. */
    if (s->h != CK_INVALID_HANDLE && gate_enter(hsm, &err) == JS_OK) {
        /* A handle of an older epoch may now name another thread's session: never close it. */
        if (s->h != CK_INVALID_HANDLE && s->epoch == atomic_load(&hsm->epoch))
            (void)hsm->mod->C_CloseSession(s->h); /* nothing to do if it is already gone */
        gate_exit(hsm);
    }
    if (s->lost) {
        pthread_mutex_lock(&hsm->mu);
        if (hsm->health.sessions_lost > 0)
            hsm->health.sessions_lost--;
        pthread_mutex_unlock(&hsm->mu);
    }
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/*
 * Replaces s's PKCS#11 session with a new, logged-in one and forgets its key
 * handles. Also ends a sign operation left active by CKR_BUFFER_TOO_SMALL
 * (§5.2: that return does not terminate it, and 2.40 cannot cancel it).
 * Caller holds the gate.
 */
static CK_RV session_reopen(js_hsm_session *s, const char **fn)
{
    js_hsm *hsm = s->hsm;
    uint64_t epoch = atomic_load(&hsm->epoch);
    if (s->h != CK_INVALID_HANDLE && s->epoch == epoch)
        (void)hsm->mod->C_CloseSession(s->h); /* usually already invalid: that is why we are here */
    s->h = CK_INVALID_HANDLE;
    s->epoch = epoch;
    memset(s->cache, 0, sizeof(s->cache));
    s->cache_next = 0;
    /* The key handle hints die with a session that had a handle; a deferred
     * session's first open (js_hsm_session_new_deferred) lost nothing. */
    if (s->opened)
        atomic_fetch_add(&hsm->handle_gen, 1);
    *fn = "C_OpenSession";
    if (!hsm->ready)
        return CKR_CRYPTOKI_NOT_INITIALIZED; /* the last re-initialisation failed */
    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv = open_logged_in(hsm, &h, fn);
    if (rv == CKR_OK) {
        s->h = h;
        s->reopen = false;
        s->opened = true;
    }
    return rv;
}

/*
 * Makes s usable for a call: re-opens it when its handle died with an older
 * module epoch or after a loss, unless the backoff says not yet. *want_reinit:
 * re-opening failed and a module re-initialisation may help. Caller holds the gate.
 */
static js_status session_ready(js_hsm_session *s, bool *want_reinit, hsm_pending *pend, js_err *err)
{
    js_hsm *hsm = s->hsm;
    uint64_t epoch = atomic_load(&hsm->epoch);
    char name[HSM_CKR_NAME];
    if (s->reopen && s->fail_epoch == epoch) {
        int64_t now = js_mono_ms();
        if (now < s->next_try_ms)
            return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_RECOVERING,
                              "HSM session lost (%s) on %s; recovering, next attempt in %lld ms",
                              ckr_name(s->lost_rv, name, sizeof(name)), hsm->desc,
                              (long long)(s->next_try_ms - now));
    }
    if (s->h != CK_INVALID_HANDLE && s->epoch == epoch && !s->reopen)
        return JS_OK;
    const char *fn = "C_OpenSession";
    CK_RV rv = session_reopen(s, &fn);
    if (rv == CKR_OK)
        return JS_OK;
    note_lost(s, rv, fn, NULL, pend);
    schedule_retry(s, 0);
    /* A wrong PIN will not get better by re-initialising; anything else might. */
    *want_reinit = rv != CKR_PIN_INCORRECT && rv != CKR_PIN_LOCKED && rv != CKR_PIN_EXPIRED;
    return hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_UNAVAILABLE,
                    "re-opening the HSM session on %s after %s: %s", hsm->desc,
                    ckr_name(s->lost_rv, name, sizeof(name)), fn);
}

/* ------------------------------------------------------------------------------------------ */
/* Key handles per session: re-found by label, checked against the key we know.               */

typedef enum resolve_result {
    RESOLVE_OK,
    RESOLVE_GONE,     /* a "session or object gone" CK_RV: heal the session */
    RESOLVE_MISSING,  /* not found, ambiguous, unreadable: heal the module if after a loss */
    RESOLVE_MISMATCH, /* another key under this label: refuse, never heal into it */
} resolve_result;

/*
 * Finds the private key labelled key->label on s again: exactly one private
 * key of the right type with CKA_SIGN, and exactly one public key with that
 * label equal to the public key this signer loaded at start. A private key
 * found this way is trusted only after its first signature verifies under
 * that public key (finish_sign). Caller holds the gate.
 */
static resolve_result resolve_key(js_hsm_session *s, const js_hsm_key *key, CK_OBJECT_HANDLE *out,
                                  CK_RV *rv_out, js_err *err)
{
    js_hsm *hsm = s->hsm;
    const hsm_alg *row = key->row;
    CK_OBJECT_CLASS cls_priv = CKO_PRIVATE_KEY, cls_pub = CKO_PUBLIC_KEY;
    CK_ULONG label_len = (CK_ULONG)strlen(key->label);
    char label_buf[JS_LABEL_MAX + 1];
    memcpy(label_buf, key->label, label_len + 1);
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls_priv, sizeof(cls_priv)},
                           {CKA_LABEL, label_buf, label_len}};
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    EVP_PKEY *pk = NULL;

    *rv_out = CKR_OK;
    if (find_objects(s, tmpl, 2, found, 2, &n, key->label, rv_out, err) != JS_OK)
        return rv_gone(*rv_out) ? RESOLVE_GONE : RESOLVE_MISSING;
    if (n != 1) {
        js_err_set(err, JS_EUNAVAIL, n == 0 ? JS_R_HSM_KEY_NOT_FOUND : JS_R_HSM_KEY_AMBIGUOUS,
                   "key '%s': %s private key with this label on %s after re-opening the session",
                   key->label, n == 0 ? "no" : "more than one", hsm->desc);
        return RESOLVE_MISSING;
    }
    CK_OBJECT_HANDLE priv = found[0];
    CK_KEY_TYPE kt = CK_UNAVAILABLE_INFORMATION;
    CK_BBOOL can_sign = CK_FALSE;
    CK_ATTRIBUTE pa[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)}, {CKA_SIGN, &can_sign, sizeof(can_sign)}};
    CK_RV rv = hsm->mod->C_GetAttributeValue(s->h, priv, pa, 2);
    if (rv != CKR_OK) {
        *rv_out = rv;
        hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_UNAVAILABLE,
                 "key '%s': private key CKA_KEY_TYPE/CKA_SIGN", key->label);
        return rv_gone(rv) ? RESOLVE_GONE : RESOLVE_MISSING;
    }
    tmpl[0].pValue = &cls_pub;
    if (find_objects(s, tmpl, 2, found, 2, &n, key->label, rv_out, err) != JS_OK)
        return rv_gone(*rv_out) ? RESOLVE_GONE : RESOLVE_MISSING;
    js_err rerr;
    if (kt != row->key_type || can_sign != CK_TRUE || n != 1 ||
        row->read_public(s, row, priv, found[0], key->label, &pk, &rerr) != JS_OK ||
        EVP_PKEY_eq(pk, key->pub) != 1) {
        EVP_PKEY_free(pk);
        ERR_clear_error();
        js_err_set(err, JS_EUNAVAIL, JS_R_HSM_KEY_MISMATCH,
                   "key '%s': the key now labelled '%s' on %s is not the key this signer loaded "
                   "(type, usage or public key differ); refusing to sign with it",
                   key->label, key->label, hsm->desc);
        return RESOLVE_MISMATCH;
    }
    EVP_PKEY_free(pk);
    *out = priv;
    return RESOLVE_OK;
}

static hsm_cached *cache_slot(js_hsm_session *s, uint64_t key_id)
{
    for (size_t i = 0; i < HSM_CACHE_KEYS; i++)
        if (s->cache[i].key_id == key_id)
            return &s->cache[i];
    hsm_cached *c = &s->cache[s->cache_next];
    s->cache_next = (s->cache_next + 1) % HSM_CACHE_KEYS;
    memset(c, 0, sizeof(*c));
    c->key_id = key_id;
    c->priv = CK_INVALID_HANDLE;
    return c;
}

static void refuse_key(js_hsm_session *s, hsm_cached *c, const js_hsm_key *key, const js_err *why,
                       hsm_pending *pend)
{
    c->refused = true;
    c->priv = CK_INVALID_HANDLE;
    c->verified = false;
    if (c->backoff_ms < HSM_BACKOFF_MIN_MS)
        c->backoff_ms = HSM_BACKOFF_MIN_MS;
    c->retry_ms = js_mono_ms() + c->backoff_ms;
    c->backoff_ms = backoff_next(c->backoff_ms);
    pthread_mutex_lock(&s->hsm->mu);
    s->hsm->health.key_mismatches++;
    pthread_mutex_unlock(&s->hsm->mu);
    pend_add(pend, JS_HSM_EVENT_KEY_MISMATCH, CKR_OK, key->label, 0, "%s", why->msg);
}

/*
 * The object handle of key on s: from s's cache, from the key's own handle
 * while nothing was re-opened since js_hsm_key_find, or re-found by label.
 */
static resolve_result key_handle(js_hsm_session *s, const js_hsm_key *key, hsm_cached **out,
                                 CK_RV *rv, hsm_pending *pend, js_err *err)
{
    js_hsm *hsm = s->hsm;
    hsm_cached *c = cache_slot(s, key->id);
    *out = c;
    *rv = CKR_OK;
    if (c->refused) {
        int64_t now = js_mono_ms();
        if (now < c->retry_ms) {
            js_err_set(err, JS_EUNAVAIL, JS_R_HSM_KEY_MISMATCH,
                       "key '%s': the object under this label on %s is not the key this signer "
                       "loaded; checking again in %lld ms",
                       key->label, hsm->desc, (long long)(c->retry_ms - now));
            return RESOLVE_MISMATCH;
        }
    } else if (c->priv != CK_INVALID_HANDLE) {
        return RESOLVE_OK;
    }
    if (!c->refused && key->hint_gen == atomic_load(&hsm->handle_gen) &&
        key->hint_epoch == atomic_load(&hsm->epoch)) {
        c->priv = key->hint; /* proven by js_hsm_key_find's self-test, nothing re-opened since */
        c->verified = true;
        return RESOLVE_OK;
    }
    CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE;
    js_err rerr;
    js_err_clear(&rerr);
    resolve_result r = resolve_key(s, key, &priv, rv, &rerr);
    if (r == RESOLVE_MISMATCH)
        refuse_key(s, c, key, &rerr, pend);
    if (r != RESOLVE_OK) {
        if (err != NULL)
            *err = rerr;
        return r;
    }
    c->refused = false;
    c->priv = priv;
    c->verified = false;
    return RESOLVE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Signing.                                                                                   */

/* C_SignInit + one C_Sign (§5.11) into sig (cap bytes); *fn names the call that failed. */
static CK_RV sign_once(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE key, CK_BYTE *in,
                       CK_ULONG in_len, CK_BYTE *sig, CK_ULONG *sig_len, const char **fn)
{
    CK_FUNCTION_LIST *m = s->hsm->mod;
    CK_MECHANISM mech = {row->sign_mech, NULL, 0};
    CK_RSA_PKCS_PSS_PARAMS pss = {row->pss_hash, row->pss_mgf, row->pss_salt_len};
    if (row->pss) {
        mech.pParameter = &pss;
        mech.ulParameterLen = sizeof(pss);
    }

    *fn = "C_SignInit";
    CK_RV rv = m->C_SignInit(s->h, &mech, key);
    if (rv != CKR_OK)
        return rv;
    *fn = "C_Sign";
    return m->C_Sign(s->h, in, in_len, sig, sig_len);
}

/* One signature request: what C_Sign gets, and the JWS signing input for checking a re-found key.
 */
typedef struct sign_req {
    const js_hsm_key *key;
    const uint8_t *msg;
    size_t msg_len;
    CK_BYTE *in; /* the digest (CKM_ECDSA) or msg itself */
    size_t in_len;
    uint8_t *sig;
    size_t *sig_len;
} sign_req;

/*
 * One signing attempt with healing, under the gate: re-opens once at once
 * when the session or its objects are gone, then leaves further attempts to
 * the backoff. *want_reinit: only a module re-initialisation can help now.
 */
static js_status sign_locked(js_hsm_session *s, const sign_req *r, bool *want_reinit,
                             hsm_pending *pend, js_err *err)
{
    js_hsm *hsm = s->hsm;
    const js_hsm_key *k = r->key;
    char name[HSM_CKR_NAME];

    JS_GUARD(session_ready(s, want_reinit, pend, err));
    for (int attempt = 0;; attempt++) {
        hsm_cached *c = NULL;
        CK_RV rv = CKR_OK;
        const char *fn = "C_FindObjects";
        resolve_result res = key_handle(s, k, &c, &rv, pend, err);
        if (res == RESOLVE_MISMATCH)
            return JS_EUNAVAIL; /* the key backs off on its own (refuse_key) */
        if (res == RESOLVE_OK) {
            CK_ULONG out_len = (CK_ULONG)k->sig_len;
            rv = sign_once(s, k->row, c->priv, r->in, (CK_ULONG)r->in_len, r->sig, &out_len, &fn);
            if (rv == CKR_OK) {
                if (out_len != k->sig_len)
                    return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_SIGN,
                                      "key '%s': C_Sign returned %lu bytes, expected %zu", k->label,
                                      (unsigned long)out_len, k->sig_len);
                if (!c->verified) {
                    /* The first signature of a re-found key proves it is ours (RFC 7515 §5.2). */
                    js_err verr;
                    if (jws_verify(k->row->alg, k->pub, r->msg, r->msg_len, r->sig, out_len,
                                   &verr) != JS_OK) {
                        js_err_set(&verr, JS_EUNAVAIL, JS_R_HSM_KEY_MISMATCH,
                                   "key '%s': the private key now labelled '%s' on %s does not "
                                   "match the public key this signer loaded; refusing to sign "
                                   "with it",
                                   k->label, k->label, hsm->desc);
                        refuse_key(s, c, k, &verr, pend);
                        if (err != NULL)
                            *err = verr;
                        OPENSSL_cleanse(r->sig, out_len);
                        return JS_EUNAVAIL;
                    }
                    c->verified = true;
                }
                note_healed(s, k->label, pend);
                *r->sig_len = (size_t)out_len;
                return JS_OK;
            }
            if (rv == CKR_BUFFER_TOO_SMALL) {
                const char *rfn = NULL;
                (void)session_reopen(s, &rfn); /* ends the active operation; error below */
            }
            if (!rv_gone(rv))
                return hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_SIGN, "key '%s' on %s: %s", k->label,
                                hsm->desc, fn);
        } else if (res == RESOLVE_MISSING && !s->lost) {
            return JS_EUNAVAIL; /* a key deleted in normal operation: err says so */
        }
        /* Gone, or still missing after a loss. */
        if (res == RESOLVE_GONE || res == RESOLVE_OK)
            note_lost(s, rv, fn, k->label, pend);
        if (attempt > 0) {
            /* Re-opening did not bring the key back: only the module can. */
            schedule_retry(s, 0);
            *want_reinit = true;
            if (res == RESOLVE_MISSING)
                return JS_EUNAVAIL;
            return hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_UNAVAILABLE,
                            "key '%s' on %s: %s after re-opening the session", k->label, hsm->desc,
                            fn);
        }
        const char *rfn = "C_OpenSession";
        CK_RV rrv = session_reopen(s, &rfn);
        if (rrv != CKR_OK) {
            schedule_retry(s, 0);
            *want_reinit = rrv != CKR_PIN_INCORRECT && rrv != CKR_PIN_LOCKED;
            return hsm_fail(err, rrv, JS_EUNAVAIL, JS_R_HSM_UNAVAILABLE,
                            "key '%s': re-opening the HSM session on %s after %s: %s", k->label,
                            hsm->desc, ckr_name(s->lost_rv, name, sizeof(name)), rfn);
        }
    }
}

/* Signs with healing: at most one module re-initialisation per call. */
static js_status sign_healing(js_hsm_session *s, const sign_req *r, hsm_pending *pend, js_err *err)
{
    js_hsm *hsm = s->hsm;
    for (int round = 0;; round++) {
        bool want_reinit = false;
        JS_GUARD(gate_enter(hsm, err));
        uint64_t seen = atomic_load(&hsm->epoch);
        js_status st = sign_locked(s, r, &want_reinit, pend, err);
        gate_exit(hsm);
        if (st == JS_OK || !want_reinit || round > 0)
            return st;
        int64_t retry_at = 0;
        char cause[JS_MSG_MAX];
        snprintf(cause, sizeof(cause), "%s", err != NULL ? err->msg : "HSM session lost");
        js_status rst = module_reinit(hsm, seen, cause, &retry_at, pend, err);
        if (rst != JS_OK) {
            /* Retry when the module's backoff allows; the failed attempt's new epoch is no
             * reason to try again sooner. */
            s->fail_epoch = atomic_load(&hsm->epoch);
            if (retry_at > s->next_try_ms)
                s->next_try_ms = retry_at;
            return rst;
        }
        /* Re-initialised (here or by another thread): the next round re-opens at once. */
    }
}

js_status js_hsm_sign(js_hsm_session *s, const js_hsm_key *key, const uint8_t *msg, size_t msg_len,
                      uint8_t *sig, size_t sig_cap, size_t *sig_len, js_err *err)
{
    JS_ENSURE(s != NULL && key != NULL && sig != NULL && sig_len != NULL, err, JS_EINTERNAL,
              JS_R_INTERNAL_ARG, "js_hsm_sign: NULL argument");
    JS_ENSURE(msg != NULL || msg_len == 0, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_sign: NULL message");
    const hsm_alg *row = key->row;
    JS_ENSURE(sig_cap >= key->sig_len, err, JS_EINTERNAL, JS_R_HSM_SIGN,
              "key '%s': signature buffer of %zu bytes, need %zu", key->label, sig_cap,
              key->sig_len);
    *sig_len = 0;

    CK_BYTE empty[1] = {0};
    CK_BYTE digest[HSM_DIGEST_MAX];
    sign_req r = {.key = key, .msg = msg, .msg_len = msg_len, .sig = sig, .sig_len = sig_len};
    if (!row->prehash) {
        /* The mechanism hashes (CKM_SHA256_RSA_PKCS[_PSS]) or signs the message (CKM_EDDSA). */
        JS_ENSURE(msg_len <= ULONG_MAX, err, JS_EINVAL, JS_R_HSM_SIGN, "key '%s': message too long",
                  key->label);
        /* C_Sign takes a non-const pointer but only reads the data (PKCS#11 §5.11). */
        r.in = msg_len > 0 ? (CK_BYTE *)(uintptr_t)msg : empty;
        r.in_len = msg_len;
    } else {
        unsigned int digest_len = 0;
        JS_ENSURE(EVP_Digest(msg, msg_len, digest, &digest_len, row->md(), NULL) == 1, err,
                  JS_EINTERNAL, JS_R_HSM_DIGEST, "key '%s': EVP_Digest failed", key->label);
        r.in = digest;
        r.in_len = digest_len;
    }
    hsm_pending pend;
    pend.n = 0;
    js_status st = sign_healing(s, &r, &pend, err);
    pend_flush(s->hsm, &pend);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* EC keys (CKK_EC, PKCS#11 v2.40 §2.3.3-2.3.4).                                              */

static js_status ec_read_public(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE priv,
                                CK_OBJECT_HANDLE pub, const char *label, EVP_PKEY **out,
                                js_err *err)
{
    CK_FUNCTION_LIST *m = s->hsm->mod;
    uint8_t priv_params[HSM_EC_PARAMS_MAX], pub_params[HSM_EC_PARAMS_MAX];
    uint8_t point_der[HSM_EC_POINT_MAX];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL, *check = NULL;
    EVP_PKEY *pkey = NULL;
    js_status st = JS_OK;
    CK_RV rv;

    /* CKA_EC_PARAMS of the private key is public domain information, not key material. */
    CK_ATTRIBUTE pa[] = {{CKA_EC_PARAMS, priv_params, sizeof(priv_params)}};
    rv = m->C_GetAttributeValue(s->h, priv, pa, 1);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_KEY_TYPE, "key '%s': private key CKA_EC_PARAMS",
                      label);
        goto out;
    }
    CK_ATTRIBUTE qa[] = {{CKA_EC_PARAMS, pub_params, sizeof(pub_params)},
                         {CKA_EC_POINT, point_der, sizeof(point_der)}};
    rv = m->C_GetAttributeValue(s->h, pub, qa, 2);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                      "key '%s': public key CKA_EC_PARAMS/CKA_EC_POINT", label);
        goto out;
    }
    if (qa[0].ulValueLen != row->ec_params_len ||
        memcmp(pub_params, row->ec_params, row->ec_params_len) != 0 ||
        pa[0].ulValueLen != row->ec_params_len ||
        memcmp(priv_params, row->ec_params, row->ec_params_len) != 0) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_TYPE, "key '%s' is not on curve %s (%s)",
                        label, row->ossl_group, js_alg_name(row->alg));
        goto out;
    }
    const uint8_t *point = NULL;
    size_t point_len = 0;
    if (!der_octet_string(point_der, qa[1].ulValueLen, &point, &point_len) ||
        point_len != 1 + 2 * row->field_len || point[0] != 0x04) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                        "key '%s': CKA_EC_POINT is not a DER OCTET STRING holding an "
                        "uncompressed %s point",
                        label, row->ossl_group);
        goto out;
    }

    /* OpenSSL 3 provider API (EVP_PKEY_fromdata); the EC_KEY API is deprecated. */
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, row->ossl_group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, point_len) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                        "key '%s': OpenSSL rejected the public key", label);
        goto out;
    }
    /* The point must be on the curve (SEC 1 §3.2.2.1), whatever the token says. */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_public_check(check) != 1) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                        "key '%s': public key is not a valid %s point", label, row->ossl_group);
        goto out;
    }
    *out = pkey;
    pkey = NULL;
out:
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return st;
}

/*
 * C_GenerateKeyPair with row->keygen_mech. The common templates are the key
 * policy; alg_attrs (at most HSM_ALG_ATTRS) are the public key's
 * algorithm-specific attributes (curve, modulus size, exponent). *fn_rv is the
 * raw CK_RV so a caller can retry with another encoding; the return maps it.
 */
#define HSM_ALG_ATTRS 2
static js_status generate_pair(js_hsm_session *s, const hsm_alg *row, const char *label,
                               CK_BYTE *id, const CK_ATTRIBUTE *alg_attrs, CK_ULONG n_alg_attrs,
                               CK_RV *fn_rv, js_err *err)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    CK_MECHANISM mech = {row->keygen_mech, NULL, 0};
    CK_ULONG label_len = (CK_ULONG)strlen(label);
    /* The templates want non-const pointers: copy the label. */
    char label_buf[JS_LABEL_MAX + 1];
    memcpy(label_buf, label, label_len + 1);

    /* A signing key pair does one thing: the private key only signs, the public
     * key only verifies; no encrypt, decrypt, wrap, unwrap, derive or recover
     * (SoftHSM's defaults allow more). */
    CK_ATTRIBUTE pub_tmpl[8 + HSM_ALG_ATTRS] = {
        {CKA_TOKEN, &yes, sizeof(yes)},    {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_ENCRYPT, &no, sizeof(no)},    {CKA_WRAP, &no, sizeof(no)},
        {CKA_DERIVE, &no, sizeof(no)},     {CKA_VERIFY_RECOVER, &no, sizeof(no)},
        {CKA_LABEL, label_buf, label_len}, {CKA_ID, id, HSM_KEY_ID_LEN},
    };
    CK_ULONG n_pub = 8;
    JS_ENSURE(n_alg_attrs <= HSM_ALG_ATTRS, err, JS_EINTERNAL, JS_R_HSM_KEYGEN,
              "too many algorithm attributes");
    for (CK_ULONG i = 0; i < n_alg_attrs; i++)
        pub_tmpl[n_pub++] = alg_attrs[i];
    /*
     * Sensitive and not extractable: the token never lets the value out, and
     * then also sets CKA_ALWAYS_SENSITIVE / CKA_NEVER_EXTRACTABLE (§4.9).
     */
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},      {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)},  {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},       {CKA_LABEL, label_buf, label_len},
        {CKA_ID, id, HSM_KEY_ID_LEN},        {CKA_DECRYPT, &no, sizeof(no)},
        {CKA_UNWRAP, &no, sizeof(no)},       {CKA_DERIVE, &no, sizeof(no)},
        {CKA_SIGN_RECOVER, &no, sizeof(no)},
    };
    CK_RV rv =
        s->hsm->mod->C_GenerateKeyPair(s->h, &mech, pub_tmpl, n_pub, priv_tmpl,
                                       sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), &pub, &priv);
    if (fn_rv != NULL)
        *fn_rv = rv;
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_KEYGEN,
                        "key '%s' (%s) on %s: C_GenerateKeyPair", label, js_alg_name(row->alg),
                        s->hsm->desc);
    return JS_OK;
}

/* CKM_EC_KEY_PAIR_GEN (§2.3.7) on the row's named curve. */
static js_status ec_keygen(js_hsm_session *s, const hsm_alg *row, const char *label, CK_BYTE *id,
                           unsigned rsa_bits, js_err *err)
{
    (void)rsa_bits;
    CK_BYTE params[HSM_EC_PARAMS_MAX];
    memcpy(params, row->ec_params, row->ec_params_len);
    CK_ATTRIBUTE attrs[] = {{CKA_EC_PARAMS, params, row->ec_params_len}};
    return generate_pair(s, row, label, id, attrs, 1, NULL, err);
}

/* ------------------------------------------------------------------------------------------ */
/* RSA keys (CKK_RSA, PKCS#11 v2.40 §2.1.2-2.1.3) for RS256 and PS256.                       */

/* CKM_RSA_PKCS_KEY_PAIR_GEN (§2.1.4), public exponent 65537 (F4). */
static js_status rsa_keygen(js_hsm_session *s, const hsm_alg *row, const char *label, CK_BYTE *id,
                            unsigned rsa_bits, js_err *err)
{
    CK_ULONG bits = rsa_bits;
    CK_BYTE f4[] = {0x01, 0x00, 0x01};
    CK_ATTRIBUTE attrs[] = {{CKA_MODULUS_BITS, &bits, sizeof(bits)},
                            {CKA_PUBLIC_EXPONENT, f4, sizeof(f4)}};
    return generate_pair(s, row, label, id, attrs, 2, NULL, err);
}

static js_status rsa_read_public(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE priv,
                                 CK_OBJECT_HANDLE pub, const char *label, EVP_PKEY **out,
                                 js_err *err)
{
    (void)row;
    (void)priv; /* the self-test in js_hsm_key_find() proves the pair belongs together */
    uint8_t n_buf[HSM_RSA_MOD_MAX], e_buf[HSM_RSA_EXP_MAX];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL, *check = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL;
    js_status st = JS_OK;

    CK_ATTRIBUTE qa[] = {{CKA_MODULUS, n_buf, sizeof(n_buf)},
                         {CKA_PUBLIC_EXPONENT, e_buf, sizeof(e_buf)}};
    CK_RV rv = s->hsm->mod->C_GetAttributeValue(s->h, pub, qa, 2);
    if (rv != CKR_OK) {
        /* CKR_BUFFER_TOO_SMALL: a modulus above HSM_RSA_BITS_MAX (or a huge exponent). */
        st = hsm_fail(err, rv, JS_ECONFIG,
                      rv == CKR_BUFFER_TOO_SMALL ? JS_R_HSM_KEY_SIZE : JS_R_HSM_PUBLIC_KEY,
                      "key '%s': public key CKA_MODULUS/CKA_PUBLIC_EXPONENT (at most %d bits)",
                      label, HSM_RSA_BITS_MAX);
        goto out;
    }
    n = BN_bin2bn(n_buf, (int)qa[0].ulValueLen, NULL);
    e = BN_bin2bn(e_buf, (int)qa[1].ulValueLen, NULL);
    if (n == NULL || e == NULL) {
        st = js_err_oom(err);
        goto out;
    }
    /* RFC 7518 §3.3 (and §3.5 by reference): a key of 2048 bits or larger MUST be used. */
    int bits = BN_num_bits(n);
    if (bits < HSM_RSA_BITS_MIN || bits > HSM_RSA_BITS_MAX) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_SIZE,
                        "key '%s' is RSA-%d; %s needs %d..%d bits (RFC 7518 §3.3)", label, bits,
                        js_alg_name(row->alg), HSM_RSA_BITS_MIN, HSM_RSA_BITS_MAX);
        goto out;
    }

    /* OpenSSL 3 provider API (EVP_PKEY_fromdata); the RSA_* API is deprecated. */
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                        "key '%s': OpenSSL rejected the RSA public key", label);
        goto out;
    }
    /* n odd and not a prime power, e odd in (2^16, 2^256) (SP 800-56B §6.4.2.1). */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_public_check(check) != 1) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                        "key '%s': the RSA public key fails OpenSSL's public key check", label);
        goto out;
    }
    *out = pkey;
    pkey = NULL;
out:
    ERR_clear_error();
    EVP_PKEY_CTX_free(check);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Ed25519 keys (CKK_EC_EDWARDS, PKCS#11 v3.0 §2.3.10) for EdDSA (RFC 8037).                  */

static bool is_ed25519_params(const uint8_t *p, CK_ULONG n)
{
    return (n == sizeof(k_oid_ed25519) && memcmp(p, k_oid_ed25519, n) == 0) ||
           (n == sizeof(k_str_ed25519) && memcmp(p, k_str_ed25519, n) == 0);
}

/* CKM_EC_EDWARDS_KEY_PAIR_GEN; the curve as an OID first, as a PrintableString if refused. */
static js_status ed_keygen(js_hsm_session *s, const hsm_alg *row, const char *label, CK_BYTE *id,
                           unsigned rsa_bits, js_err *err)
{
    (void)rsa_bits;
    CK_BYTE oid[sizeof(k_oid_ed25519)], str[sizeof(k_str_ed25519)];
    memcpy(oid, k_oid_ed25519, sizeof(oid));
    memcpy(str, k_str_ed25519, sizeof(str));
    CK_ATTRIBUTE attrs[] = {{CKA_EC_PARAMS, oid, sizeof(oid)}};
    CK_RV rv = CKR_OK;
    js_status st = generate_pair(s, row, label, id, attrs, 1, &rv, err);
    if (rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_CURVE_NOT_SUPPORTED ||
        rv == CKR_DOMAIN_PARAMS_INVALID || rv == CKR_TEMPLATE_INCONSISTENT) {
        attrs[0].pValue = str;
        attrs[0].ulValueLen = sizeof(str);
        st = generate_pair(s, row, label, id, attrs, 1, NULL, err);
    }
    return st;
}

static js_status ed_read_public(js_hsm_session *s, const hsm_alg *row, CK_OBJECT_HANDLE priv,
                                CK_OBJECT_HANDLE pub, const char *label, EVP_PKEY **out,
                                js_err *err)
{
    (void)row;
    CK_FUNCTION_LIST *m = s->hsm->mod;
    uint8_t priv_params[HSM_EC_PARAMS_MAX], pub_params[HSM_EC_PARAMS_MAX];
    uint8_t point_der[HSM_EC_POINT_MAX];

    /* CKA_EC_PARAMS of the private key is public domain information, not key material. */
    CK_ATTRIBUTE pa[] = {{CKA_EC_PARAMS, priv_params, sizeof(priv_params)}};
    CK_RV rv = m->C_GetAttributeValue(s->h, priv, pa, 1);
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_KEY_TYPE,
                        "key '%s': private key CKA_EC_PARAMS", label);
    CK_ATTRIBUTE qa[] = {{CKA_EC_PARAMS, pub_params, sizeof(pub_params)},
                         {CKA_EC_POINT, point_der, sizeof(point_der)}};
    rv = m->C_GetAttributeValue(s->h, pub, qa, 2);
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                        "key '%s': public key CKA_EC_PARAMS/CKA_EC_POINT", label);
    /* Ed448 shares CKK_EC_EDWARDS; RFC 8037 EdDSA here means Ed25519 only. */
    JS_ENSURE(is_ed25519_params(priv_params, pa[0].ulValueLen) &&
                  is_ed25519_params(pub_params, qa[0].ulValueLen),
              err, JS_ECONFIG, JS_R_HSM_KEY_TYPE, "key '%s' is not an Ed25519 key (EdDSA)", label);

    /* The 32-byte key (RFC 8032 §5.1.5), in a DER OCTET STRING or, on some tokens, bare. */
    const uint8_t *point = NULL;
    size_t point_len = 0;
    if (!der_octet_string(point_der, qa[1].ulValueLen, &point, &point_len)) {
        point = point_der;
        point_len = qa[1].ulValueLen;
    }
    JS_ENSURE(point_len == HSM_ED25519_LEN, err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
              "key '%s': CKA_EC_POINT does not hold a %d-byte Ed25519 public key", label,
              HSM_ED25519_LEN);
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, point, point_len);
    if (pkey == NULL) {
        ERR_clear_error();
        return js_err_set(err, JS_ECONFIG, JS_R_HSM_PUBLIC_KEY,
                          "key '%s': OpenSSL rejected the Ed25519 public key", label);
    }
    *out = pkey;
    return JS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Keys.                                                                                      */

/*
 * Enters the gate with s ready for a call (re-opened if it was lost or its
 * handle died with an older module epoch). Returns with the gate held on JS_OK.
 */
static js_status session_enter(js_hsm_session *s, hsm_pending *pend, js_err *err)
{
    js_hsm *hsm = s->hsm;
    for (int round = 0;; round++) {
        bool want_reinit = false;
        JS_GUARD(gate_enter(hsm, err));
        uint64_t seen = atomic_load(&hsm->epoch);
        js_status st = session_ready(s, &want_reinit, pend, err);
        if (st == JS_OK) {
            /*
             * Find and keygen run rarely (start, reload, operator): probe the
             * session first, so one that died quietly is re-opened now rather
             * than failing the operator's request.
             */
            CK_SESSION_INFO info;
            CK_RV rv = hsm->mod->C_GetSessionInfo(s->h, &info);
            if (!rv_gone(rv))
                return JS_OK;
            note_lost(s, rv, "C_GetSessionInfo", NULL, pend);
            const char *fn = "C_OpenSession";
            rv = session_reopen(s, &fn);
            if (rv == CKR_OK)
                return JS_OK;
            schedule_retry(s, 0);
            want_reinit = true;
            st = hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_UNAVAILABLE,
                          "re-opening the HSM session on %s: %s", hsm->desc, fn);
        }
        gate_exit(hsm);
        if (!want_reinit || round > 0)
            return st;
        int64_t retry_at = 0;
        char cause[JS_MSG_MAX];
        snprintf(cause, sizeof(cause), "%s", err != NULL ? err->msg : "HSM session lost");
        st = module_reinit(hsm, seen, cause, &retry_at, pend, err);
        if (st != JS_OK) {
            s->fail_epoch = atomic_load(&hsm->epoch);
            if (retry_at > s->next_try_ms)
                s->next_try_ms = retry_at;
            return st;
        }
    }
}

/*
 * Usage beyond signing (issue: keys made before key generation said CKA_SIGN
 * only): a signing key should not decrypt, unwrap, derive or sign-recover, and
 * its public half should not encrypt or wrap. Returns a warning in key->warning.
 */
static void check_usage(js_hsm_session *s, js_hsm_key *key, CK_OBJECT_HANDLE priv,
                        CK_OBJECT_HANDLE pub)
{
    static const struct {
        CK_ATTRIBUTE_TYPE type;
        bool on_private;
        const char *name;
    } k_extra[] = {
        {CKA_DECRYPT, true, "CKA_DECRYPT"},         {CKA_UNWRAP, true, "CKA_UNWRAP"},
        {CKA_DERIVE, true, "CKA_DERIVE"},           {CKA_SIGN_RECOVER, true, "CKA_SIGN_RECOVER"},
        {CKA_ENCRYPT, false, "public CKA_ENCRYPT"}, {CKA_WRAP, false, "public CKA_WRAP"},
    };
    char found[JS_MSG_MAX] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof(k_extra) / sizeof(k_extra[0]); i++) {
        CK_BBOOL v = CK_FALSE;
        CK_ATTRIBUTE a = {k_extra[i].type, &v, sizeof(v)};
        /* An attribute a key type does not have (CKR_ATTRIBUTE_TYPE_INVALID) is not a use. */
        CK_RV rv =
            s->hsm->mod->C_GetAttributeValue(s->h, k_extra[i].on_private ? priv : pub, &a, 1);
        if (rv != CKR_OK || a.ulValueLen != sizeof(v) || v != CK_TRUE)
            continue;
        int n = snprintf(found + used, sizeof(found) - used, "%s%s", used > 0 ? ", " : "",
                         k_extra[i].name);
        if (n > 0 && (size_t)n < sizeof(found) - used)
            used += (size_t)n;
    }
    if (used > 0 &&
        snprintf(key->warning, sizeof(key->warning),
                 "key '%s' on %s also allows %s; a signing key should have CKA_SIGN only "
                 "(generate a new key version with jwt-signerd keygen and retire this one)",
                 key->label, s->hsm->desc, found) < 0)
        key->warning[0] = '\0';
}

js_status js_hsm_key_find(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg,
                          js_hsm_key **out, js_err *err)
{
    js_hsm_key *key = NULL;
    js_status st = JS_OK;
    hsm_pending pend;
    pend.n = 0;

    JS_ENSURE(hsm != NULL && s != NULL && out != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_key_find: NULL argument");
    JS_ENSURE(s->hsm == hsm, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_key_find: session of another js_hsm");
    *out = NULL;
    JS_GUARD(check_label(label, err));
    const hsm_alg *row = alg_row(alg);
    JS_ENSURE(row != NULL, err, JS_ECONFIG, JS_R_HSM_ALG_UNSUPPORTED,
              "key '%s': algorithm %s is not supported by the HSM module", label,
              js_alg_name(alg) ? js_alg_name(alg) : "(none)");

    CK_OBJECT_CLASS cls_priv = CKO_PRIVATE_KEY, cls_pub = CKO_PUBLIC_KEY;
    CK_ULONG label_len = (CK_ULONG)strlen(label);
    char label_buf[JS_LABEL_MAX + 1];
    memcpy(label_buf, label, label_len + 1);
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls_priv, sizeof(cls_priv)},
                           {CKA_LABEL, label_buf, label_len}};
    CK_OBJECT_HANDLE found[2], priv = CK_INVALID_HANDLE;
    CK_ULONG n = 0;
    CK_RV rv = CKR_OK;
    const char *fn = "C_FindObjects";

    key = calloc(1, sizeof(*key));
    JS_ENSURE_ALLOC(key, err);
    key->row = row;
    key->id = atomic_fetch_add(&hsm->next_key_id, 1);
    memcpy(key->label, label, label_len + 1);

    st = session_enter(s, &pend, err);
    if (st != JS_OK) {
        pend_flush(hsm, &pend);
        js_hsm_key_free(key);
        return st;
    }
    st = find_objects(s, tmpl, 2, found, 2, &n, label, &rv, err);
    if (st != JS_OK)
        goto out;
    if (n == 0) {
        st = js_err_set(err, JS_ENOTFOUND, JS_R_HSM_KEY_NOT_FOUND,
                        "no private key labelled '%s' on %s", label, hsm->desc);
        goto out;
    }
    if (n > 1) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_AMBIGUOUS,
                        "several private keys labelled '%s' on %s", label, hsm->desc);
        goto out;
    }
    priv = found[0];

    /* Only public attributes of the private key: type and usage (§4.8-4.9). */
    CK_KEY_TYPE kt = CK_UNAVAILABLE_INFORMATION;
    CK_BBOOL can_sign = CK_FALSE;
    CK_ATTRIBUTE pa[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)}, {CKA_SIGN, &can_sign, sizeof(can_sign)}};
    fn = "C_GetAttributeValue";
    rv = hsm->mod->C_GetAttributeValue(s->h, priv, pa, 2);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_ECONFIG, JS_R_HSM_KEY_TYPE,
                      "key '%s': private key CKA_KEY_TYPE/CKA_SIGN", label);
        goto out;
    }
    if (kt != row->key_type) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_TYPE,
                        "key '%s' has key type 0x%lx, %s needs 0x%lx", label, (unsigned long)kt,
                        js_alg_name(alg), (unsigned long)row->key_type);
        goto out;
    }
    if (can_sign != CK_TRUE) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_USAGE, "key '%s' does not have CKA_SIGN=true",
                        label);
        goto out;
    }

    tmpl[0].pValue = &cls_pub;
    fn = "C_FindObjects";
    st = find_objects(s, tmpl, 2, found, 2, &n, label, &rv, err);
    if (st != JS_OK)
        goto out;
    if (n != 1) {
        st = js_err_set(
            err, JS_ECONFIG, n == 0 ? JS_R_HSM_PUBLIC_KEY_NOT_FOUND : JS_R_HSM_KEY_AMBIGUOUS,
            "%s public key labelled '%s' on %s", n == 0 ? "no" : "several", label, hsm->desc);
        goto out;
    }
    st = row->read_public(s, row, priv, found[0], label, &key->pub, err);
    if (st != JS_OK)
        goto out;
    /* RSA signatures are as long as the modulus (RFC 8017 §8.1.1, §8.2.1). */
    key->sig_len = row->sig_len != 0 ? row->sig_len : (size_t)EVP_PKEY_get_size(key->pub);
    if (key->sig_len == 0 || key->sig_len > JS_SIG_MAX) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_SIZE,
                        "key '%s': signatures of %zu bytes do not fit %d", label, key->sig_len,
                        JS_SIG_MAX);
        goto out;
    }
    check_usage(s, key, priv, found[0]);

    /*
     * Self-test: the public key we will publish must verify what the private
     * key signs; a label shared by two unrelated keys would otherwise make
     * every token unverifiable. Signed here on the gate we hold (js_hsm_sign
     * would enter it again).
     */
    uint8_t sig[JS_SIG_MAX];
    CK_BYTE digest[HSM_DIGEST_MAX];
    CK_BYTE *in = (CK_BYTE *)(uintptr_t)k_selftest_msg;
    CK_ULONG in_len = sizeof(k_selftest_msg) - 1;
    if (row->prehash) {
        unsigned int dlen = 0;
        if (EVP_Digest(k_selftest_msg, in_len, digest, &dlen, row->md(), NULL) != 1) {
            st = js_err_set(err, JS_EINTERNAL, JS_R_HSM_DIGEST, "key '%s': EVP_Digest failed",
                            label);
            goto out;
        }
        in = digest;
        in_len = dlen;
    }
    CK_ULONG sig_len = (CK_ULONG)key->sig_len;
    rv = sign_once(s, row, priv, in, in_len, sig, &sig_len, &fn);
    if (rv == CKR_BUFFER_TOO_SMALL) {
        const char *rfn = NULL;
        (void)session_reopen(s, &rfn); /* ends the active operation */
    }
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_EUNAVAIL, JS_R_HSM_SIGN, "key '%s' on %s: %s", label, hsm->desc,
                      fn);
        goto out;
    }
    /* Verified the way every verifier will: OpenSSL over the JOSE form. */
    js_err verr;
    if (sig_len != key->sig_len ||
        jws_verify(alg, key->pub, k_selftest_msg, sizeof(k_selftest_msg) - 1, sig, sig_len,
                   &verr) != JS_OK) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_KEY_MISMATCH,
                        "key '%s': the public key does not verify the private key's signature",
                        label);
        goto out;
    }
    /* Every session may use this handle until something is re-opened (§2.4: token objects). */
    key->hint = priv;
    key->hint_gen = atomic_load(&hsm->handle_gen);
    key->hint_epoch = atomic_load(&hsm->epoch);
    hsm_cached *c = cache_slot(s, key->id);
    c->priv = priv;
    c->verified = true;
    note_healed(s, label, &pend);
    *out = key;
    key = NULL;
out:
    if (st != JS_OK && rv_gone(rv))
        note_lost(s, rv, fn, label, &pend);
    gate_exit(hsm);
    pend_flush(hsm, &pend);
    js_hsm_key_free(key);
    return st;
}

void js_hsm_key_free(js_hsm_key *key)
{
    if (key == NULL)
        return;
    EVP_PKEY_free(key->pub);
    free(key);
}

js_alg js_hsm_key_alg(const js_hsm_key *key)
{
    return key != NULL ? key->row->alg : JS_ALG_NONE;
}

const char *js_hsm_key_label(const js_hsm_key *key)
{
    return key != NULL ? key->label : NULL;
}

EVP_PKEY *js_hsm_key_public(const js_hsm_key *key)
{
    return key != NULL ? key->pub : NULL;
}

size_t js_hsm_key_sig_len(const js_hsm_key *key)
{
    return key != NULL ? key->sig_len : 0;
}

const char *js_hsm_key_warning(const js_hsm_key *key)
{
    return key != NULL && key->warning[0] != '\0' ? key->warning : NULL;
}

js_status js_hsm_keygen(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg,
                        unsigned rsa_bits, js_err *err)
{
    JS_ENSURE(hsm != NULL && s != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_keygen: NULL argument");
    JS_ENSURE(s->hsm == hsm, err, JS_EINTERNAL, JS_R_INTERNAL_ARG,
              "js_hsm_keygen: session of another js_hsm");
    JS_GUARD(check_label(label, err));
    const hsm_alg *row = alg_row(alg);
    JS_ENSURE(row != NULL, err, JS_ECONFIG, JS_R_HSM_ALG_UNSUPPORTED,
              "key '%s': algorithm %s is not supported by the HSM module", label,
              js_alg_name(alg) ? js_alg_name(alg) : "(none)");
    if (row->key_type == CKK_RSA) {
        if (rsa_bits == 0)
            rsa_bits = HSM_RSA_BITS_DEFAULT;
        /* RFC 7518 §3.3/§3.5: at least 2048 bits; 3072 for keys meant to outlive 2030. */
        JS_ENSURE(rsa_bits == 2048 || rsa_bits == 3072, err, JS_EINVAL, JS_R_HSM_KEY_SIZE,
                  "key '%s': RSA keys are generated with 2048 or 3072 bits, not %u", label,
                  rsa_bits);
    } else {
        JS_ENSURE(rsa_bits == 0, err, JS_EINVAL, JS_R_HSM_KEY_SIZE,
                  "key '%s': a key size applies only to RS256/PS256 keys, not %s", label,
                  js_alg_name(alg));
    }
    CK_BYTE id[HSM_KEY_ID_LEN];
    JS_ENSURE(RAND_bytes(id, sizeof(id)) == 1, err, JS_EINTERNAL, JS_R_HSM_KEYGEN,
              "RAND_bytes failed for CKA_ID");

    hsm_pending pend;
    pend.n = 0;
    js_status st = session_enter(s, &pend, err);
    if (st != JS_OK) {
        pend_flush(hsm, &pend);
        return st;
    }
    /*
     * Any object with that label (key, certificate, data) blocks generation, so
     * js_hsm_key_find() can never become ambiguous. Not atomic with the
     * generation below: keygen is an operator action, not a concurrent path.
     */
    CK_ULONG label_len = (CK_ULONG)strlen(label);
    char label_buf[JS_LABEL_MAX + 1];
    memcpy(label_buf, label, label_len + 1);
    CK_ATTRIBUTE tmpl[] = {{CKA_LABEL, label_buf, label_len}};
    CK_OBJECT_HANDLE found[1];
    CK_ULONG n = 0;
    CK_RV rv = CKR_OK;
    st = find_objects(s, tmpl, 1, found, 1, &n, label, &rv, err);
    if (st == JS_OK && n != 0)
        st = js_err_set(err, JS_ECONFIG, JS_R_HSM_LABEL_EXISTS,
                        "an object labelled '%s' already exists on %s", label, hsm->desc);
    if (st == JS_OK)
        st = row->keygen(s, row, label, id, rsa_bits, err);
    if (st != JS_OK && rv_gone(rv))
        note_lost(s, rv, "C_FindObjects", label, &pend);
    gate_exit(hsm);
    pend_flush(hsm, &pend);
    return st;
}
