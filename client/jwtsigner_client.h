/*
 * jwtsigner_client.h - C client library for jwt-signer (gRPC over mTLS).
 *
 * One jwtsigner_client holds one gRPC channel. Calls on one handle are
 * thread-safe: any number of threads may call jwtsigner_sign() and
 * jwtsigner_jwks() concurrently. Every call is bounded by the handle's timeout,
 * so no call blocks forever.
 *
 * Ownership: jwtsigner_client_new() returns a handle freed with
 * jwtsigner_client_free(). Results (jwtsigner_token, JWKS strings) are owned by
 * the caller and released with jwtsigner_token_clear() / free().
 *
 * Errors: each call returns 0 on success or the gRPC status code (1..16) of the
 * failure, and fills a jwtsigner_status with the code, its name and the
 * server's message. Local failures (unreadable files, bad arguments) use the
 * codes INVALID_ARGUMENT (3) or INTERNAL (13) with a local message.
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

#define JWTSIGNER_MSG_MAX 512

typedef struct jwtsigner_status {
    int code; /* gRPC status code; 0 = OK */
    char message[JWTSIGNER_MSG_MAX];
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

/* "OK", "INVALID_ARGUMENT", ... for a gRPC status code. */
const char *jwtsigner_status_name(int code);

#ifdef __cplusplus
}
#endif

#endif
