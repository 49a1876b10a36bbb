/*
 * tls_files.c - reads the TLS certificate, key and client CA for the gRPC
 * server (see tls_files.h).
 */
#include "tls_files.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "fileio.h"

/*
 * The whole file, NUL-terminated, through the one bounded reader (fileio.h:
 * regular file, size limit, growth detected). The operator names these files
 * in the configuration, so a symlink is followed (a Kubernetes secret volume
 * is symlinks); the private key is read as a secret, so every copy the
 * reader makes is wiped. Every failure keeps the reason it always had,
 * tls.read (start-up: JS_ECONFIG).
 */
static js_status read_pem(const char *path, unsigned flags, char **out, js_err *err)
{
    *out = NULL;
    size_t n = 0;
    js_file_info info;
    js_file_fail fail =
        js_file_read(path, JS_TLS_PEM_MAX_BYTES, JS_FILE_FOLLOW | flags, out, &n, &info);
    switch (fail) {
    case JS_FILE_OK:
        break;
    case JS_FILE_NOMEM:
        return js_err_oom(err);
    case JS_FILE_OPEN:
        return js_err_set(err, JS_ECONFIG, JS_R_TLS_READ, "cannot open %s", path);
    case JS_FILE_NOT_REGULAR:
    case JS_FILE_TOO_LARGE:
    case JS_FILE_READ:
    default:
        return js_err_set(err, JS_ECONFIG, JS_R_TLS_READ,
                          "%s is empty, unreadable or over %d bytes", path, JS_TLS_PEM_MAX_BYTES);
    }
    /* gRPC takes PEM as a C string: a NUL inside would cut the file short
     * silently (and hide the rest from the wipe of a private key). */
    if (n > 0 && memchr(*out, '\0', n) != NULL) {
        OPENSSL_cleanse(*out, n);
        free(*out);
        *out = NULL;
        return js_err_set(err, JS_ECONFIG, JS_R_TLS_READ, "%s contains a NUL byte", path);
    }
    if (n == 0) {
        free(*out);
        *out = NULL;
        return js_err_set(err, JS_ECONFIG, JS_R_TLS_READ,
                          "%s is empty, unreadable or over %d bytes", path, JS_TLS_PEM_MAX_BYTES);
    }
    return JS_OK;
}

static void free_secret_pem(char *p)
{
    if (p != NULL) {
        OPENSSL_cleanse(p, strlen(p));
        free(p);
    }
}

js_status js_tls_server_credentials(const js_config *cfg, grpc_server_credentials **out,
                                    js_err *err)
{
    *out = NULL;
    char *cert = NULL, *key = NULL, *ca = NULL;
    js_status st = read_pem(cfg->tls_cert, 0, &cert, err);
    if (st == JS_OK)
        st = read_pem(cfg->tls_key, JS_FILE_SECRET, &key, err);
    if (st == JS_OK)
        st = read_pem(cfg->tls_client_ca, 0, &ca, err);
    if (st == JS_OK) {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        /* mTLS is not optional: the caller's certificate is its identity. */
        *out = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1, GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
        if (*out == NULL)
            st = js_err_set(err, JS_ECONFIG, JS_R_TLS_CREDENTIALS, "cannot create TLS credentials");
    }
    free(cert);
    free_secret_pem(key);
    free(ca);
    return st;
}
