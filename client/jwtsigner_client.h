/*
 * jwtsigner_client.h - C client library for jwt-signer (gRPC over mTLS), and
 * for its Kubernetes ExternalJWTSigner socket (jwtsigner_k8s_*, below).
 *
 * One jwtsigner_client holds one gRPC channel. Calls on one handle are
 * thread-safe: any number of threads may call jwtsigner_sign(),
 * jwtsigner_jwks() and the jwtsigner_admin_*() calls concurrently. Every call
 * is bounded by the handle's timeout, so no call blocks forever.
 *
 * Ownership: jwtsigner_client_new() returns a handle freed with
 * jwtsigner_client_free(). Results (jwtsigner_token, the admin result structs,
 * introspection answers, returned strings) are owned by the caller and
 * released with jwtsigner_token_clear(), jwtsigner_rotate_result_clear(),
 * jwtsigner_revoke_result_clear(), jwtsigner_introspection_clear() or free().
 *
 * Errors: each call returns 0 on success or the gRPC status code (1..16) of the
 * failure, and fills a jwtsigner_status with the code, its name and the
 * server's message. Local failures (unreadable files, bad arguments) use the
 * codes INVALID_ARGUMENT (3) or INTERNAL (13) with a local message. A reply
 * that does not decode or breaks the contract in signer.proto is INTERNAL (13).
 */
#ifndef JWTSIGNER_CLIENT_H
#define JWTSIGNER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jwtsigner_client jwtsigner_client;

typedef struct jwtsigner_options {
    const char *target;    /* "host:port" */
    const char *ca_file;   /* PEM CA bundle that the server certificate must chain to */
    const char *cert_file; /* this client's certificate chain, PEM */
    const char *key_file;  /* this client's private key, PEM */
    int timeout_ms;        /* per-call deadline; <= 0 means 5000 */
} jwtsigner_options;

#define JWTSIGNER_MSG_MAX 1280 /* a server message (JS_MSG_MAX) with its reason */

typedef struct jwtsigner_status {
    int code; /* gRPC status code; 0 = OK */
    char message[JWTSIGNER_MSG_MAX];
    /* gRPC's own description of a failed call (its error_string: connection
     * and TLS handshake failures), printable ASCII; "" when the server
     * answered or gRPC gave none. For diagnostics: see jwtsigner_tls_hint. */
    char transport[JWTSIGNER_MSG_MAX];
} jwtsigner_status;

typedef struct jwtsigner_token {
    char *jwt; /* compact JWS, NUL-terminated */
    char *kid;
    char *jti;
    int64_t issued_at;
    int64_t expires_at;
    uint64_t audit_seq;
} jwtsigner_token;

/* Creates a handle. Reads the PEM files now; does not connect until first use. */
jwtsigner_client *jwtsigner_client_new(const jwtsigner_options *opts, jwtsigner_status *st);
void jwtsigner_client_free(jwtsigner_client *c);

/*
 * Signs claims_json (claims_len bytes of a JSON object) with key_name (NULL or
 * "" = the caller's default key). request_id may be NULL. On success fills
 * *out (free with jwtsigner_token_clear) and returns 0.
 */
int jwtsigner_sign(jwtsigner_client *c, const char *claims_json, size_t claims_len,
                   const char *key_name, const char *request_id, jwtsigner_token *out,
                   jwtsigner_status *st);
void jwtsigner_token_clear(jwtsigner_token *t);

/* Fetches the JWKS JSON; *jwks_out is malloc'd, free() it. */
int jwtsigner_jwks(jwtsigner_client *c, char **jwks_out, jwtsigner_status *st);

/*
 * Administration (service jwtsigner.v1.Admin, signer.proto). The server allows
 * these only to identities in the policy's `admins`; anyone else gets
 * PERMISSION_DENIED (7). `reason` is free text for the audit record and may be
 * NULL (sent as ""). Required names (key, kid, identity) must be non-empty, or
 * the call fails locally with INVALID_ARGUMENT.
 */

typedef struct jwtsigner_rotate_result {
    char *key;           /* key name, as the server echoed it */
    uint32_t version;    /* the new version's number (>= 1) */
    char *kid;           /* the new version's kid, published now as `next` */
    int64_t activate_at; /* Unix seconds when it starts signing */
} jwtsigner_rotate_result;

typedef struct jwtsigner_revoke_result {
    char *key;
    char *kid;          /* the revoked version */
    int64_t revoked_at; /* Unix seconds */
    char *active_kid;   /* the version that signs now; "" if none is left */
} jwtsigner_revoke_result;

/* Frees the strings of a result and zeroes it; NULL is accepted. */
void jwtsigner_rotate_result_clear(jwtsigner_rotate_result *r);
void jwtsigner_revoke_result_clear(jwtsigner_revoke_result *r);

/* RotateKey: a new version of key; on success fills *out (clear it after use). */
int jwtsigner_admin_rotate(jwtsigner_client *c, const char *key, const char *reason,
                           jwtsigner_rotate_result *out, jwtsigner_status *st);

/* RevokeKey: revokes version kid of key at once; fills *out. */
int jwtsigner_admin_revoke(jwtsigner_client *c, const char *key, const char *kid,
                           const char *reason, jwtsigner_revoke_result *out, jwtsigner_status *st);

/* SetIncidentMode: on != 0 turns it on; *now_on (may be NULL) gets the server's state. */
int jwtsigner_admin_incident(jwtsigner_client *c, int on, const char *reason, int *now_on,
                             jwtsigner_status *st);

/*
 * FreezeCaller (freeze != 0) or UnfreezeCaller (freeze == 0) for an exact
 * caller identity. Succeeds only if the server confirms that identity is now
 * in the requested state.
 */
int jwtsigner_admin_freeze(jwtsigner_client *c, const char *identity, const char *reason,
                           int freeze, jwtsigner_status *st);

/* ReloadPolicy: *sha256_out (malloc'd, free() it) is the policy hash now in force, 64 hex digits.
 */
int jwtsigner_admin_reload(jwtsigner_client *c, char **sha256_out, jwtsigner_status *st);

/* RotateAuditKey: a new audit log key (audit/FORMAT.md §5.4). */
typedef struct jwtsigner_audit_key_result {
    char label[128]; /* HSM label of the audit key now in force */
    char key_id[44]; /* its key id, base64url SHA-256 of its SPKI DER */
} jwtsigner_audit_key_result;
int jwtsigner_admin_rotate_audit_key(jwtsigner_client *c, const char *reason,
                                     jwtsigner_audit_key_result *out, jwtsigner_status *st);

/* GetStatus: *json_out (malloc'd, free() it) is the status document, a JSON object. */
int jwtsigner_admin_status(jwtsigner_client *c, char **json_out, jwtsigner_status *st);

/*
 * RevokeToken (issue 13): revokes issued tokens for introspection -- one token
 * by its jti, or every token of a subject or of a caller identity issued up to
 * now (a cut-off). Tokens already handed out are unchanged; only verifiers
 * that introspect see the revocation. value must be non-empty (else
 * INVALID_ARGUMENT locally). On success fills *out.
 */
typedef enum jwtsigner_revoke_what {
    JWTSIGNER_REVOKE_JTI,
    JWTSIGNER_REVOKE_SUB,
    JWTSIGNER_REVOKE_CALLER,
} jwtsigner_revoke_what;

typedef struct jwtsigner_revoke_token_result {
    int64_t cutoff;     /* sub/caller: tokens with iat <= cutoff are revoked; 0 for a jti */
    int64_t until;      /* Unix seconds when the revocation can be forgotten */
    uint64_t audit_seq; /* audit log sequence number of the revocation's record */
} jwtsigner_revoke_token_result;

int jwtsigner_admin_revoke_token(jwtsigner_client *c, jwtsigner_revoke_what what, const char *value,
                                 const char *reason, jwtsigner_revoke_token_result *out,
                                 jwtsigner_status *st);

/*
 * Introspect (service jwtsigner.v1.Status, RFC 7662): whether the signer
 * issued exactly this token and it still stands. Only identities in the
 * policy's `introspectors` may ask (anyone else: PERMISSION_DENIED, 7). An
 * inactive answer is a success (return 0, out->active 0): RFC 7662 §2.2 gives
 * no reason, and none of the other members is set. token is the compact JWS
 * (NUL-terminated); the signer answers inactive for a malformed or oversized
 * one, though a token beyond the signer's gRPC message limit fails with
 * RESOURCE_EXHAUSTED (8). Locally refused: NULL or empty token.
 */
typedef struct jwtsigner_introspection {
    int active;
    char *json; /* the RFC 7662 JSON answer as the signer sent it; {"active":false} when inactive */
    /* When active (all "" / 0 / NULL otherwise; strings malloc'd): */
    char *scope;     /* space-separated scopes; "" if none */
    char *client_id; /* the caller the token was issued to */
    char *sub;
    char **aud; /* naud strings */
    size_t naud;
    char *iss;
    int64_t exp;
    int64_t iat;
    char *jti;
    char *token_type; /* "Bearer" or "DPoP" */
    char *cnf_json;   /* the cnf claim (RFC 7800) as compact JSON; "" if none */
} jwtsigner_introspection;

/* Frees the strings of an answer and zeroes it; NULL is accepted. */
void jwtsigner_introspection_clear(jwtsigner_introspection *r);

int jwtsigner_introspect(jwtsigner_client *c, const char *token, jwtsigner_introspection *out,
                         jwtsigner_status *st);

/*
 * Kubernetes ExternalJWTSigner (k8s.io/externaljwt, KEP-740): the service
 * kube-apiserver calls on a Unix domain socket to have its service-account
 * tokens signed. A jwtsigner_k8s handle speaks it as kube-apiserver does --
 * insecure gRPC over the socket, whose file permissions and the signer's
 * SO_PEERCRED check are the access control -- so an operator can check the
 * socket by hand. Same rules as jwtsigner_client: calls on one handle are
 * thread-safe, each is bounded by the handle's timeout, results belong to the
 * caller, errors are the gRPC status code with *st filled. A reply that breaks
 * the published contract (or what kube-apiserver accepts) is INTERNAL (13)
 * with a message saying what is wrong; a reply larger than
 * JWTSIGNER_K8S_REPLY_MAX bytes is refused by gRPC as RESOURCE_EXHAUSTED (8).
 */

typedef struct jwtsigner_k8s jwtsigner_k8s;

/* The published versions; they differ only in the proto package of the method paths. */
typedef enum jwtsigner_k8s_api {
    JWTSIGNER_K8S_V1,       /* "/v1.ExternalJWTSigner/...", kube-apiserver 1.34+ */
    JWTSIGNER_K8S_V1ALPHA1, /* "/v1alpha1.ExternalJWTSigner/...", kube-apiserver 1.32-1.33 */
} jwtsigner_k8s_api;

#define JWTSIGNER_K8S_REPLY_MAX  (256 * 1024) /* bytes of one reply message */
#define JWTSIGNER_K8S_CLAIMS_MAX (64 * 1024)  /* characters of the base64url claims sent (65536) */
#define JWTSIGNER_K8S_KEYS_MAX   256          /* keys in a FetchKeys reply */
#define JWTSIGNER_K8S_KID_MAX    1024         /* bytes of a kid: kube-apiserver's limit */
/* Metadata below this is refused: kube-apiserver's minimum token lifetime (10 minutes). */
#define JWTSIGNER_K8S_MIN_MAX_EXPIRATION 600

/*
 * Creates a handle for the socket at socket_path (a relative path is taken
 * from the current directory; the absolute path must fit sockaddr_un, 107
 * bytes, and may not hold '%', '?', '#' or control bytes, which the gRPC
 * target URI would read differently). Does not connect until first use.
 * timeout_ms <= 0 means 5000. Returns 0 and *out (free with
 * jwtsigner_k8s_free), or INVALID_ARGUMENT / INTERNAL with *out NULL.
 */
int jwtsigner_k8s_new(const char *socket_path, jwtsigner_k8s_api api, int timeout_ms,
                      jwtsigner_k8s **out, jwtsigner_status *st);
/* NULL is accepted. No call may be in flight on k. */
void jwtsigner_k8s_free(jwtsigner_k8s *k);

typedef struct jwtsigner_k8s_token {
    char *header;    /* base64url JOSE header, as the signer returned it */
    char *signature; /* base64url signature, as the signer returned it */
    /* header "." claims "." signature: the token exactly as kube-apiserver
     * assembles it from the request's claims and the reply */
    char *token;
} jwtsigner_k8s_token;
/* Wipes the token (a bearer credential), frees the strings, zeroes *t; NULL is accepted. */
void jwtsigner_k8s_token_clear(jwtsigner_k8s_token *t);

/*
 * Sign: asks the signer to sign claims_b64url, the JWT payload already
 * base64url-encoded (unpadded, RFC 7515 section 2), 1..JWTSIGNER_K8S_CLAIMS_MAX
 * characters of the base64url alphabet (anything else fails locally with
 * INVALID_ARGUMENT: kube-apiserver never sends it). The reply's header and
 * signature must be non-empty base64url. The JOSE header's content (alg, kid,
 * typ) is not parsed here. On success fills *out (jwtsigner_k8s_token_clear).
 */
int jwtsigner_k8s_sign(jwtsigner_k8s *k, const char *claims_b64url, jwtsigner_k8s_token *out,
                       jwtsigner_status *st);

typedef struct jwtsigner_k8s_key {
    char *key_id;                    /* 1..JWTSIGNER_K8S_KID_MAX bytes */
    unsigned char *der;              /* PKIX SubjectPublicKeyInfo DER, as sent */
    size_t der_len;                  /* >= 1 */
    char *pem;                       /* the same key as "-----BEGIN PUBLIC KEY-----" PEM */
    int exclude_from_oidc_discovery; /* 0 or 1 */
} jwtsigner_k8s_key;

typedef struct jwtsigner_k8s_keys {
    jwtsigner_k8s_key *keys; /* count entries; NULL when count is 0 */
    size_t count;
    int64_t data_timestamp_seconds; /* when the key set last changed, Unix seconds */
    int32_t data_timestamp_nanos;   /* 0..999999999 */
    int64_t refresh_hint_seconds;   /* > 0 */
} jwtsigner_k8s_keys;
/* Frees every key and zeroes *k; NULL is accepted. */
void jwtsigner_k8s_keys_clear(jwtsigner_k8s_keys *k);

/*
 * FetchKeys: the signer's public keys. Checked as a verifier needs them: at
 * most JWTSIGNER_K8S_KEYS_MAX keys, each with a distinct non-empty key_id of
 * at most JWTSIGNER_K8S_KID_MAX bytes and a key that parses as PKIX DER
 * (exactly, with no trailing bytes); data_timestamp set, within years
 * 1970..9999; refresh_hint_seconds > 0. On success fills *out.
 */
int jwtsigner_k8s_fetch_keys(jwtsigner_k8s *k, jwtsigner_k8s_keys *out, jwtsigner_status *st);

/* Metadata: *max_token_expiration_seconds, which must be at least
 * JWTSIGNER_K8S_MIN_MAX_EXPIRATION. */
int jwtsigner_k8s_metadata(jwtsigner_k8s *k, int64_t *max_token_expiration_seconds,
                           jwtsigner_status *st);

/* "OK", "INVALID_ARGUMENT", ... for a gRPC status code. */
const char *jwtsigner_status_name(int code);

#ifdef __cplusplus
}
#endif

#endif
