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
#include "jws.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct js_hsm {
    CK_FUNCTION_LIST *mod;
    bool initialized;
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE login_session; /* CK_INVALID_HANDLE when none */
    char *module_path;
    char desc[HSM_DESC_MAX];
};

struct js_hsm_session {
    js_hsm *hsm;
    CK_SESSION_HANDLE h; /* CK_INVALID_HANDLE after a failed reopen */
};

typedef struct hsm_alg hsm_alg;

struct js_hsm_key {
    const hsm_alg *row;
    size_t sig_len;        /* exact signature length: the row's, or the RSA modulus size */
    CK_OBJECT_HANDLE priv; /* token objects: valid in every session (PKCS#11 §2.4) */
    char label[JS_HSM_LABEL_MAX + 1];
    EVP_PKEY *pub;
};

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
    R(CKR_KEY_HANDLE_INVALID, false),
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
    R(CKR_OBJECT_HANDLE_INVALID, false),
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

/*
 * Fills *err for a failed PKCS#11 call and returns its status: device, session
 * and communication errors are JS_EUNAVAIL whatever the context; everything
 * else takes ctx_status, the caller's judgement of what a failure means there.
 * The message is "<context>: <CKR name>"; callers never put a PIN in it.
 */
static js_status hsm_fail(js_err *err, CK_RV rv, js_status ctx_status, const char *reason,
                          const char *fmt, ...) JS_PRINTF(5, 6);

static js_status hsm_fail(js_err *err, CK_RV rv, js_status ctx_status, const char *reason,
                          const char *fmt, ...)
{
    char ctx[JS_MSG_MAX];
    char unknown[48];
    const char *name = NULL;
    js_status st = ctx_status;

    for (size_t i = 0; i < sizeof(k_ckr) / sizeof(k_ckr[0]); i++) {
        if (k_ckr[i].rv == rv) {
            name = k_ckr[i].name;
            if (k_ckr[i].unavailable)
                st = JS_EUNAVAIL;
            break;
        }
    }
    if (name == NULL) {
        if (rv >= CKR_VENDOR_DEFINED)
            snprintf(unknown, sizeof(unknown), "CKR_VENDOR_DEFINED+0x%lx",
                     (unsigned long)(rv - CKR_VENDOR_DEFINED));
        else
            snprintf(unknown, sizeof(unknown), "CKR_0x%lx", (unsigned long)rv);
        name = unknown;
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
 * A label goes into templates and messages: 1..JS_HSM_LABEL_MAX bytes of
 * printable ASCII, so it can be neither truncated nor used to forge log lines.
 */
static js_status check_label(const char *label, js_err *err)
{
    JS_ENSURE(label != NULL, err, JS_EINVAL, "hsm.label", "key label is missing");
    size_t n = strnlen(label, JS_HSM_LABEL_MAX + 1);
    JS_ENSURE(n > 0, err, JS_EINVAL, "hsm.label", "key label is empty");
    JS_ENSURE(n <= JS_HSM_LABEL_MAX, err, JS_EINVAL, "hsm.label",
              "key label is longer than %d bytes", JS_HSM_LABEL_MAX);
    for (size_t i = 0; i < n; i++)
        JS_ENSURE(label[i] >= 0x20 && label[i] < 0x7f, err, JS_EINVAL, "hsm.label",
                  "key label contains a byte outside printable ASCII (offset %zu)", i);
    return JS_OK;
}

/*
 * Finds up to `cap` objects matching tmpl on session s (PKCS#11 §5.10) and
 * reports how many (at most cap; cap = 2 is enough to tell one from several).
 */
static js_status find_objects(js_hsm_session *s, CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl,
                              CK_OBJECT_HANDLE *found, CK_ULONG cap, CK_ULONG *n_found,
                              const char *what, js_err *err)
{
    CK_FUNCTION_LIST *m = s->hsm->mod;
    js_status st = JS_OK;
    bool active = false;

    *n_found = 0;
    CK_RV rv = m->C_FindObjectsInit(s->h, tmpl, n_tmpl);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_EUNAVAIL, "hsm.find", "%s: C_FindObjectsInit", what);
        goto out;
    }
    active = true;
    rv = m->C_FindObjects(s->h, found, cap, n_found);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_EUNAVAIL, "hsm.find", "%s: C_FindObjects", what);
        goto out;
    }
out:
    if (active) {
        rv = m->C_FindObjectsFinal(s->h);
        if (rv != CKR_OK && st == JS_OK)
            st = hsm_fail(err, rv, JS_EUNAVAIL, "hsm.find", "%s: C_FindObjectsFinal", what);
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
        st = js_err_set(err, JS_ECONFIG, "hsm.uri", "token URI %s: %s (RFC 7512)",
                        uri_for_msg(token_uri), uri_result_name(r));
        goto out;
    }
    /* The PIN is configured separately and must never sit in a URI that ends up in logs. */
    if (p11_kit_uri_get_pin_value(uri) != NULL || p11_kit_uri_get_pin_source(uri) != NULL) {
        st = js_err_set(err, JS_ECONFIG, "hsm.uri",
                        "token URI must not carry pin-value or pin-source; configure the PIN "
                        "separately");
        goto out;
    }
    /* p11-kit makes a URI with attributes it did not parse match nothing; say why instead. */
    if (p11_kit_uri_any_unrecognized(uri)) {
        st = js_err_set(err, JS_ECONFIG, "hsm.uri",
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
            st = hsm_fail(err, rv, JS_ECONFIG, "hsm.token", "%s: C_GetSlotList", hsm->module_path);
            goto out;
        }
        if (n == 0 || n > HSM_SLOTS_MAX)
            break;
        free(slots);
        slots = calloc(n, sizeof(*slots));
        if (slots == NULL) {
            st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
            goto out;
        }
        rv = m->C_GetSlotList(CK_TRUE, slots, &n);
        if (rv == CKR_BUFFER_TOO_SMALL && ++attempts < 3)
            continue;
        if (rv != CKR_OK) {
            st = hsm_fail(err, rv, JS_ECONFIG, "hsm.token", "%s: C_GetSlotList", hsm->module_path);
            goto out;
        }
        break;
    }
    if (n > HSM_SLOTS_MAX) {
        st = js_err_set(err, JS_ECONFIG, "hsm.token", "%s: more than %d slots", hsm->module_path,
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
            st = hsm_fail(err, rv, JS_ECONFIG, "hsm.token", "%s: C_GetTokenInfo", hsm->module_path);
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
        st = js_err_set(err, JS_ECONFIG, "hsm.token_not_found",
                        "no initialised token in %s matches %s", hsm->module_path, token_uri);
        goto out;
    }
    if (matches > 1) {
        st = js_err_set(err, JS_ECONFIG, "hsm.token_ambiguous",
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

/* One C_Login as CKU_USER (PKCS#11 §5.6) on the login session. The PIN never enters a message. */
static js_status login(js_hsm *hsm, const char *pin, size_t pin_len, js_err *err)
{
    CK_FUNCTION_LIST *m = hsm->mod;
    /* C_Login takes a non-const pointer: hand it a copy, not the caller's buffer. */
    CK_UTF8CHAR pin_copy[JS_HSM_PIN_MAX];
    js_status st = JS_OK;

    CK_RV rv = m->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                                &hsm->login_session);
    if (rv != CKR_OK) {
        hsm->login_session = CK_INVALID_HANDLE;
        st = hsm_fail(err, rv, JS_ECONFIG, "hsm.session", "%s: C_OpenSession", hsm->desc);
        goto out;
    }
    memcpy(pin_copy, pin, pin_len);
    rv = m->C_Login(hsm->login_session, CKU_USER, pin_copy, (CK_ULONG)pin_len);
    /* Already logged in: another js_hsm in this process shares the module's login state. */
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        st = hsm_fail(err, rv, JS_ECONFIG, "hsm.login", "%s: C_Login as user", hsm->desc);
        goto out;
    }
out:
    OPENSSL_cleanse(pin_copy, sizeof(pin_copy));
    return st;
}

js_status js_hsm_open(const char *module_path, const char *token_uri, const char *pin,
                      size_t pin_len, js_hsm **out, js_err *err)
{
    js_hsm *hsm = NULL;
    P11KitUri *uri = NULL;
    js_status st = JS_OK;

    JS_ENSURE(out != NULL, err, JS_EINTERNAL, "internal.arg", "js_hsm_open: out is NULL");
    *out = NULL;
    JS_ENSURE(module_path != NULL && module_path[0] != '\0', err, JS_ECONFIG, "hsm.module",
              "PKCS#11 module path is missing");
    JS_ENSURE(token_uri != NULL, err, JS_ECONFIG, "hsm.uri", "token URI is missing");
    JS_ENSURE(pin != NULL, err, JS_ECONFIG, "hsm.pin", "PIN is missing");
    JS_ENSURE(pin_len <= JS_HSM_PIN_MAX, err, JS_ECONFIG, "hsm.pin", "PIN is longer than %d bytes",
              JS_HSM_PIN_MAX);

    /* Parse first: a bad URI is reported without loading any code. */
    JS_GUARD(parse_token_uri(token_uri, &uri, err));

    hsm = calloc(1, sizeof(*hsm));
    if (hsm == NULL || (hsm->module_path = strdup(module_path)) == NULL) {
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
        goto out;
    }
    hsm->login_session = CK_INVALID_HANDLE;

    /*
     * Managed mode (flags 0): p11-kit initialises the module with
     * CKF_OS_LOCKING_OK (PKCS#11 §5.4 C_Initialize), which SoftHSM needs for
     * concurrent sessions, and keeps several loads of one module apart.
     */
    hsm->mod = p11_kit_module_load(module_path, 0);
    if (hsm->mod == NULL) {
        const char *why = p11_kit_message();
        st = js_err_set(err, JS_ECONFIG, "hsm.module", "cannot load PKCS#11 module %s: %s",
                        module_path, why ? why : "unknown error");
        goto out;
    }
    CK_RV rv = p11_kit_module_initialize(hsm->mod);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_ECONFIG, "hsm.module", "%s: C_Initialize", module_path);
        goto out;
    }
    hsm->initialized = true;

    st = select_token(hsm, uri, token_uri, err);
    if (st != JS_OK)
        goto out;
    st = login(hsm, pin, pin_len, err);
    if (st != JS_OK)
        goto out;

    *out = hsm;
    hsm = NULL;
out:
    p11_kit_uri_free(uri);
    js_hsm_free(hsm);
    return st;
}

void js_hsm_free(js_hsm *hsm)
{
    if (hsm == NULL)
        return;
    if (hsm->mod != NULL) {
        /*
         * No C_Logout: login state belongs to the whole application (§5.6), and
         * another js_hsm on the same module may still use it. Closing our last
         * session returns the token to the public state; C_Finalize ends it all.
         * Return values are ignored on purpose: there is nothing left to undo.
         */
        if (hsm->login_session != CK_INVALID_HANDLE)
            (void)hsm->mod->C_CloseSession(hsm->login_session);
        if (hsm->initialized)
            (void)p11_kit_module_finalize(hsm->mod);
        p11_kit_module_release(hsm->mod);
    }
    free(hsm->module_path);
    free(hsm);
}

const char *js_hsm_token_description(const js_hsm *hsm)
{
    return hsm != NULL ? hsm->desc : "(no token)";
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions.                                                                                  */

js_status js_hsm_session_open(js_hsm *hsm, js_hsm_session **out, js_err *err)
{
    JS_ENSURE(hsm != NULL && out != NULL, err, JS_EINTERNAL, "internal.arg",
              "js_hsm_session_open: NULL argument");
    *out = NULL;
    js_hsm_session *s = calloc(1, sizeof(*s));
    JS_ENSURE_ALLOC(s, err);
    s->hsm = hsm;
    /* R/W so keygen can create token objects (§5.6: R/O sessions cannot). */
    CK_RV rv =
        hsm->mod->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s->h);
    if (rv != CKR_OK) {
        free(s);
        return hsm_fail(err, rv, JS_EUNAVAIL, "hsm.session", "%s: C_OpenSession", hsm->desc);
    }
    *out = s;
    return JS_OK;
}

void js_hsm_session_free(js_hsm_session *s)
{
    if (s == NULL)
        return;
    if (s->h != CK_INVALID_HANDLE)
        (void)s->hsm->mod->C_CloseSession(s->h); /* nothing to do if it is already gone */
    free(s);
}

/*
 * Replaces s's session with a new one: after the HSM dropped it, or to end a
 * sign operation left active by CKR_BUFFER_TOO_SMALL (§5.2: that return does
 * not terminate the operation, and 2.40 has no way to cancel it).
 */
static CK_RV session_reopen(js_hsm_session *s)
{
    CK_FUNCTION_LIST *m = s->hsm->mod;
    if (s->h != CK_INVALID_HANDLE)
        (void)m->C_CloseSession(s->h); /* usually already invalid: that is why we are here */
    s->h = CK_INVALID_HANDLE;
    CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
    CK_RV rv = m->C_OpenSession(s->hsm->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);
    if (rv == CKR_OK)
        s->h = h;
    return rv;
}

/* ------------------------------------------------------------------------------------------ */
/* Signing.                                                                                   */

static bool session_lost(CK_RV rv)
{
    return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED;
}

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

/*
 * Signs `in` (a digest, or the message when the mechanism hashes) with one
 * C_Sign into a buffer of exactly the signature size: no size query round trip.
 */
static js_status sign_raw(js_hsm_session *s, const js_hsm_key *k, CK_BYTE *in, size_t in_len,
                          uint8_t *sig, size_t *sig_len, js_err *err)
{
    const hsm_alg *row = k->row;
    CK_OBJECT_HANDLE key = k->priv;
    const char *label = k->label;
    const char *fn = "C_SignInit";
    CK_ULONG out_len = (CK_ULONG)k->sig_len;
    CK_RV rv = CKR_SESSION_HANDLE_INVALID;

    if (s->h != CK_INVALID_HANDLE)
        rv = sign_once(s, row, key, in, (CK_ULONG)in_len, sig, &out_len, &fn);
    if (session_lost(rv)) {
        /* A network HSM can drop sessions: open a new one and try once more. */
        CK_RV rv2 = session_reopen(s);
        if (rv2 != CKR_OK)
            return hsm_fail(err, rv2, JS_EUNAVAIL, "hsm.sign",
                            "key '%s': reopening the session after %s failed: C_OpenSession", label,
                            fn);
        out_len = (CK_ULONG)k->sig_len;
        rv = sign_once(s, row, key, in, (CK_ULONG)in_len, sig, &out_len, &fn);
    }
    if (rv == CKR_BUFFER_TOO_SMALL)
        (void)session_reopen(s); /* ends the still active operation; the error below says why */
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_EUNAVAIL, "hsm.sign", "key '%s' on %s: %s", label, s->hsm->desc,
                        fn);
    if (out_len != k->sig_len)
        return js_err_set(err, JS_EUNAVAIL, "hsm.sign",
                          "key '%s': C_Sign returned %lu bytes, expected %zu", label,
                          (unsigned long)out_len, k->sig_len);
    *sig_len = (size_t)out_len;
    return JS_OK;
}

js_status js_hsm_sign(js_hsm_session *s, const js_hsm_key *key, const uint8_t *msg, size_t msg_len,
                      uint8_t *sig, size_t sig_cap, size_t *sig_len, js_err *err)
{
    JS_ENSURE(s != NULL && key != NULL && sig != NULL && sig_len != NULL, err, JS_EINTERNAL,
              "internal.arg", "js_hsm_sign: NULL argument");
    JS_ENSURE(msg != NULL || msg_len == 0, err, JS_EINTERNAL, "internal.arg",
              "js_hsm_sign: NULL message");
    const hsm_alg *row = key->row;
    JS_ENSURE(sig_cap >= key->sig_len, err, JS_EINTERNAL, "hsm.sign",
              "key '%s': signature buffer of %zu bytes, need %zu", key->label, sig_cap,
              key->sig_len);
    *sig_len = 0;

    if (!row->prehash) {
        /* The mechanism hashes (CKM_SHA256_RSA_PKCS[_PSS]) or signs the message (CKM_EDDSA). */
        JS_ENSURE(msg_len <= ULONG_MAX, err, JS_EINVAL, "hsm.sign", "key '%s': message too long",
                  key->label);
        CK_BYTE empty[1] = {0};
        /* C_Sign takes a non-const pointer but only reads the data (PKCS#11 §5.11). */
        CK_BYTE *in = msg_len > 0 ? (CK_BYTE *)(uintptr_t)msg : empty;
        return sign_raw(s, key, in, msg_len, sig, sig_len, err);
    }
    CK_BYTE digest[HSM_DIGEST_MAX];
    unsigned int digest_len = 0;
    JS_ENSURE(EVP_Digest(msg, msg_len, digest, &digest_len, row->md(), NULL) == 1, err,
              JS_EINTERNAL, "hsm.digest", "key '%s': EVP_Digest failed", key->label);
    return sign_raw(s, key, digest, digest_len, sig, sig_len, err);
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
        st = hsm_fail(err, rv, JS_ECONFIG, "hsm.key_type", "key '%s': private key CKA_EC_PARAMS",
                      label);
        goto out;
    }
    CK_ATTRIBUTE qa[] = {{CKA_EC_PARAMS, pub_params, sizeof(pub_params)},
                         {CKA_EC_POINT, point_der, sizeof(point_der)}};
    rv = m->C_GetAttributeValue(s->h, pub, qa, 2);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_ECONFIG, "hsm.public_key",
                      "key '%s': public key CKA_EC_PARAMS/CKA_EC_POINT", label);
        goto out;
    }
    if (qa[0].ulValueLen != row->ec_params_len ||
        memcmp(pub_params, row->ec_params, row->ec_params_len) != 0 ||
        pa[0].ulValueLen != row->ec_params_len ||
        memcmp(priv_params, row->ec_params, row->ec_params_len) != 0) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_type", "key '%s' is not on curve %s (%s)", label,
                        row->ossl_group, js_alg_name(row->alg));
        goto out;
    }
    const uint8_t *point = NULL;
    size_t point_len = 0;
    if (!der_octet_string(point_der, qa[1].ulValueLen, &point, &point_len) ||
        point_len != 1 + 2 * row->field_len || point[0] != 0x04) {
        st = js_err_set(err, JS_ECONFIG, "hsm.public_key",
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
        st = js_err_set(err, JS_ECONFIG, "hsm.public_key",
                        "key '%s': OpenSSL rejected the public key", label);
        goto out;
    }
    /* The point must be on the curve (SEC 1 §3.2.2.1), whatever the token says. */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_public_check(check) != 1) {
        st = js_err_set(err, JS_ECONFIG, "hsm.public_key",
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
    char label_buf[JS_HSM_LABEL_MAX + 1];
    memcpy(label_buf, label, label_len + 1);

    CK_ATTRIBUTE pub_tmpl[4 + HSM_ALG_ATTRS] = {
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_LABEL, label_buf, label_len},
        {CKA_ID, id, HSM_KEY_ID_LEN},
    };
    CK_ULONG n_pub = 4;
    JS_ENSURE(n_alg_attrs <= HSM_ALG_ATTRS, err, JS_EINTERNAL, "hsm.keygen",
              "too many algorithm attributes");
    for (CK_ULONG i = 0; i < n_alg_attrs; i++)
        pub_tmpl[n_pub++] = alg_attrs[i];
    /*
     * Sensitive and not extractable: the token never lets the value out, and
     * then also sets CKA_ALWAYS_SENSITIVE / CKA_NEVER_EXTRACTABLE (§4.9).
     */
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},      {CKA_LABEL, label_buf, label_len},
        {CKA_ID, id, HSM_KEY_ID_LEN},
    };
    CK_RV rv =
        s->hsm->mod->C_GenerateKeyPair(s->h, &mech, pub_tmpl, n_pub, priv_tmpl,
                                       sizeof(priv_tmpl) / sizeof(priv_tmpl[0]), &pub, &priv);
    if (fn_rv != NULL)
        *fn_rv = rv;
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_ECONFIG, "hsm.keygen", "key '%s' (%s) on %s: C_GenerateKeyPair",
                        label, js_alg_name(row->alg), s->hsm->desc);
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
                      rv == CKR_BUFFER_TOO_SMALL ? "hsm.key_size" : "hsm.public_key",
                      "key '%s': public key CKA_MODULUS/CKA_PUBLIC_EXPONENT (at most %d bits)",
                      label, HSM_RSA_BITS_MAX);
        goto out;
    }
    n = BN_bin2bn(n_buf, (int)qa[0].ulValueLen, NULL);
    e = BN_bin2bn(e_buf, (int)qa[1].ulValueLen, NULL);
    if (n == NULL || e == NULL) {
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
        goto out;
    }
    /* RFC 7518 §3.3 (and §3.5 by reference): a key of 2048 bits or larger MUST be used. */
    int bits = BN_num_bits(n);
    if (bits < HSM_RSA_BITS_MIN || bits > HSM_RSA_BITS_MAX) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_size",
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
        st = js_err_set(err, JS_ECONFIG, "hsm.public_key",
                        "key '%s': OpenSSL rejected the RSA public key", label);
        goto out;
    }
    /* n odd and not a prime power, e odd in (2^16, 2^256) (SP 800-56B §6.4.2.1). */
    check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (check == NULL || EVP_PKEY_public_check(check) != 1) {
        st = js_err_set(err, JS_ECONFIG, "hsm.public_key",
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
        return hsm_fail(err, rv, JS_ECONFIG, "hsm.key_type", "key '%s': private key CKA_EC_PARAMS",
                        label);
    CK_ATTRIBUTE qa[] = {{CKA_EC_PARAMS, pub_params, sizeof(pub_params)},
                         {CKA_EC_POINT, point_der, sizeof(point_der)}};
    rv = m->C_GetAttributeValue(s->h, pub, qa, 2);
    if (rv != CKR_OK)
        return hsm_fail(err, rv, JS_ECONFIG, "hsm.public_key",
                        "key '%s': public key CKA_EC_PARAMS/CKA_EC_POINT", label);
    /* Ed448 shares CKK_EC_EDWARDS; RFC 8037 EdDSA here means Ed25519 only. */
    JS_ENSURE(is_ed25519_params(priv_params, pa[0].ulValueLen) &&
                  is_ed25519_params(pub_params, qa[0].ulValueLen),
              err, JS_ECONFIG, "hsm.key_type", "key '%s' is not an Ed25519 key (EdDSA)", label);

    /* The 32-byte key (RFC 8032 §5.1.5), in a DER OCTET STRING or, on some tokens, bare. */
    const uint8_t *point = NULL;
    size_t point_len = 0;
    if (!der_octet_string(point_der, qa[1].ulValueLen, &point, &point_len)) {
        point = point_der;
        point_len = qa[1].ulValueLen;
    }
    JS_ENSURE(point_len == HSM_ED25519_LEN, err, JS_ECONFIG, "hsm.public_key",
              "key '%s': CKA_EC_POINT does not hold a %d-byte Ed25519 public key", label,
              HSM_ED25519_LEN);
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, point, point_len);
    if (pkey == NULL) {
        ERR_clear_error();
        return js_err_set(err, JS_ECONFIG, "hsm.public_key",
                          "key '%s': OpenSSL rejected the Ed25519 public key", label);
    }
    *out = pkey;
    return JS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Keys.                                                                                      */

js_status js_hsm_key_find(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg,
                          js_hsm_key **out, js_err *err)
{
    js_hsm_key *key = NULL;
    js_status st = JS_OK;

    JS_ENSURE(hsm != NULL && s != NULL && out != NULL, err, JS_EINTERNAL, "internal.arg",
              "js_hsm_key_find: NULL argument");
    JS_ENSURE(s->hsm == hsm, err, JS_EINTERNAL, "internal.arg",
              "js_hsm_key_find: session of another js_hsm");
    *out = NULL;
    JS_GUARD(check_label(label, err));
    const hsm_alg *row = alg_row(alg);
    JS_ENSURE(row != NULL, err, JS_ECONFIG, "hsm.alg_unsupported",
              "key '%s': algorithm %s is not supported by the HSM module", label,
              js_alg_name(alg) ? js_alg_name(alg) : "(none)");

    CK_OBJECT_CLASS cls_priv = CKO_PRIVATE_KEY, cls_pub = CKO_PUBLIC_KEY;
    CK_ULONG label_len = (CK_ULONG)strlen(label);
    char label_buf[JS_HSM_LABEL_MAX + 1];
    memcpy(label_buf, label, label_len + 1);
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls_priv, sizeof(cls_priv)},
                           {CKA_LABEL, label_buf, label_len}};
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;

    key = calloc(1, sizeof(*key));
    if (key == NULL) {
        st = js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
        goto out;
    }
    key->row = row;
    memcpy(key->label, label, label_len + 1);

    st = find_objects(s, tmpl, 2, found, 2, &n, label, err);
    if (st != JS_OK)
        goto out;
    if (n == 0) {
        st = js_err_set(err, JS_ENOTFOUND, "hsm.key_not_found",
                        "no private key labelled '%s' on %s", label, hsm->desc);
        goto out;
    }
    if (n > 1) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_ambiguous",
                        "several private keys labelled '%s' on %s", label, hsm->desc);
        goto out;
    }
    key->priv = found[0];

    /* Only public attributes of the private key: type and usage (§4.8-4.9). */
    CK_KEY_TYPE kt = CK_UNAVAILABLE_INFORMATION;
    CK_BBOOL can_sign = CK_FALSE;
    CK_ATTRIBUTE pa[] = {{CKA_KEY_TYPE, &kt, sizeof(kt)}, {CKA_SIGN, &can_sign, sizeof(can_sign)}};
    CK_RV rv = hsm->mod->C_GetAttributeValue(s->h, key->priv, pa, 2);
    if (rv != CKR_OK) {
        st = hsm_fail(err, rv, JS_ECONFIG, "hsm.key_type",
                      "key '%s': private key CKA_KEY_TYPE/CKA_SIGN", label);
        goto out;
    }
    if (kt != row->key_type) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_type",
                        "key '%s' has key type 0x%lx, %s needs 0x%lx", label, (unsigned long)kt,
                        js_alg_name(alg), (unsigned long)row->key_type);
        goto out;
    }
    if (can_sign != CK_TRUE) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_usage", "key '%s' does not have CKA_SIGN=true",
                        label);
        goto out;
    }

    tmpl[0].pValue = &cls_pub;
    st = find_objects(s, tmpl, 2, found, 2, &n, label, err);
    if (st != JS_OK)
        goto out;
    if (n != 1) {
        st = js_err_set(err, JS_ECONFIG, n == 0 ? "hsm.public_key_not_found" : "hsm.key_ambiguous",
                        "%s public key labelled '%s' on %s", n == 0 ? "no" : "several", label,
                        hsm->desc);
        goto out;
    }
    st = row->read_public(s, row, key->priv, found[0], label, &key->pub, err);
    if (st != JS_OK)
        goto out;
    /* RSA signatures are as long as the modulus (RFC 8017 §8.1.1, §8.2.1). */
    key->sig_len = row->sig_len != 0 ? row->sig_len : (size_t)EVP_PKEY_get_size(key->pub);
    if (key->sig_len == 0 || key->sig_len > JS_SIG_MAX) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_size",
                        "key '%s': signatures of %zu bytes do not fit %d", label, key->sig_len,
                        JS_SIG_MAX);
        goto out;
    }

    /*
     * Self-test: the public key we will publish must verify what the private
     * key signs; a label shared by two unrelated keys would otherwise make
     * every token unverifiable.
     */
    uint8_t sig[JS_SIG_MAX];
    size_t sig_len = 0;
    st = js_hsm_sign(s, key, k_selftest_msg, sizeof(k_selftest_msg) - 1, sig, sizeof(sig), &sig_len,
                     err);
    if (st != JS_OK)
        goto out;
    /* Verified the way every verifier will: OpenSSL over the JOSE form. */
    js_err verr;
    if (jws_verify(alg, key->pub, k_selftest_msg, sizeof(k_selftest_msg) - 1, sig, sig_len,
                   &verr) != JS_OK) {
        st = js_err_set(err, JS_ECONFIG, "hsm.key_mismatch",
                        "key '%s': the public key does not verify the private key's signature",
                        label);
        goto out;
    }
    *out = key;
    key = NULL;
out:
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

js_status js_hsm_keygen(js_hsm *hsm, js_hsm_session *s, const char *label, js_alg alg,
                        unsigned rsa_bits, js_err *err)
{
    JS_ENSURE(hsm != NULL && s != NULL, err, JS_EINTERNAL, "internal.arg",
              "js_hsm_keygen: NULL argument");
    JS_ENSURE(s->hsm == hsm, err, JS_EINTERNAL, "internal.arg",
              "js_hsm_keygen: session of another js_hsm");
    JS_GUARD(check_label(label, err));
    const hsm_alg *row = alg_row(alg);
    JS_ENSURE(row != NULL, err, JS_ECONFIG, "hsm.alg_unsupported",
              "key '%s': algorithm %s is not supported by the HSM module", label,
              js_alg_name(alg) ? js_alg_name(alg) : "(none)");
    if (row->key_type == CKK_RSA) {
        if (rsa_bits == 0)
            rsa_bits = HSM_RSA_BITS_DEFAULT;
        /* RFC 7518 §3.3/§3.5: at least 2048 bits; 3072 for keys meant to outlive 2030. */
        JS_ENSURE(rsa_bits == 2048 || rsa_bits == 3072, err, JS_EINVAL, "hsm.key_size",
                  "key '%s': RSA keys are generated with 2048 or 3072 bits, not %u", label,
                  rsa_bits);
    } else {
        JS_ENSURE(rsa_bits == 0, err, JS_EINVAL, "hsm.key_size",
                  "key '%s': a key size applies only to RS256/PS256 keys, not %s", label,
                  js_alg_name(alg));
    }

    /*
     * Any object with that label (key, certificate, data) blocks generation, so
     * js_hsm_key_find() can never become ambiguous. Not atomic with the
     * generation below: keygen is an operator action, not a concurrent path.
     */
    CK_ULONG label_len = (CK_ULONG)strlen(label);
    char label_buf[JS_HSM_LABEL_MAX + 1];
    memcpy(label_buf, label, label_len + 1);
    CK_ATTRIBUTE tmpl[] = {{CKA_LABEL, label_buf, label_len}};
    CK_OBJECT_HANDLE found[1];
    CK_ULONG n = 0;
    JS_GUARD(find_objects(s, tmpl, 1, found, 1, &n, label, err));
    JS_ENSURE(n == 0, err, JS_ECONFIG, "hsm.label_exists",
              "an object labelled '%s' already exists on %s", label, hsm->desc);
    CK_BYTE id[HSM_KEY_ID_LEN];
    JS_ENSURE(RAND_bytes(id, sizeof(id)) == 1, err, JS_EINTERNAL, "hsm.keygen",
              "RAND_bytes failed for CKA_ID");
    return row->keygen(s, row, label, id, rsa_bits, err);
}
