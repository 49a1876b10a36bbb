/*
 * tls_files.c - reads the TLS certificate, key and client CA for the gRPC
 * server (see tls_files.h).
 */
#include "tls_files.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "statefile.h"

/*
 * The whole file, NUL-terminated, through the one bounded reader
 * (js_statefile_read: regular file, size limit, growth detected). The
 * configured path is resolved first: certificates and keys are commonly
 * deployed as symlinks (a Kubernetes secret volume, certbot's live/
 * directory), which the reader's O_NOFOLLOW would otherwise refuse, and the
 * operator chose this path. Every failure keeps the reason it always had,
 * tls.read (start-up: JS_ECONFIG).
 */
static js_status read_pem(const char *path, char **out, js_err *err)
{
    *out = NULL;
    char real[PATH_MAX];
    JS_ENSURE(realpath(path, real) != NULL, err, JS_ECONFIG, JS_R_TLS_READ, "cannot open %s", path);
    char *buf = NULL;
    size_t n = 0;
    bool absent = false;
    js_err rerr;
    js_err_clear(&rerr);
    js_status st = js_statefile_read(real, JS_TLS_PEM_MAX_BYTES, "tls", &buf, &n, &absent, &rerr);
    if (st == JS_EINTERNAL)
        return js_err_set(err, st, rerr.reason, "%s", rerr.msg);
    JS_ENSURE(st != JS_OK || !absent, err, JS_ECONFIG, JS_R_TLS_READ, "cannot open %s", path);
    if (st != JS_OK || n == 0) {
        free(buf);
        return js_err_set(err, JS_ECONFIG, JS_R_TLS_READ,
                          "%s is empty, unreadable or over %d bytes", path, JS_TLS_PEM_MAX_BYTES);
    }
    *out = buf;
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
    js_status st = read_pem(cfg->tls_cert, &cert, err);
    if (st == JS_OK)
        st = read_pem(cfg->tls_key, &key, err);
    if (st == JS_OK)
        st = read_pem(cfg->tls_client_ca, &ca, err);
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
