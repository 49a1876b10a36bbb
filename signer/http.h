/*
 * http.h - the signer's HTTP endpoint (libmicrohttpd), on its own listen
 * address, separate from the gRPC port: the JWKS for verifiers, a health
 * check and Prometheus metrics. Read-only: GET and HEAD only, request bodies
 * refused.
 *
 *   GET /.well-known/jwks.json  200 application/json (the RFC 7517 section 5
 *                               JWK Set), Cache-Control: public, max-age=N,
 *                               a strong ETag, 304 on a matching If-None-Match
 *                               (RFC 7232 section 3.2); 503 when the handler
 *                               has no JWKS.
 *   GET /healthz                200 healthy / 503 unhealthy, JSON body,
 *                               Cache-Control: no-store.
 *   GET /metrics                200 text/plain; version=0.0.4; charset=utf-8.
 *
 * The JWKS is served as application/json rather than the RFC 7517 section
 * 8.5 type application/jwk-set+json: both are correct for a JWK Set, and
 * application/json is what common JWT libraries and OIDC discovery clients
 * expect (some refuse other types).
 *
 * Plain HTTP is allowed only on a loopback listen address (127.0.0.0/8, ::1,
 * localhost), for development; anywhere else js_http_start refuses unless a
 * TLS certificate and key are configured.
 */
#ifndef JS_HTTP_H
#define JS_HTTP_H

#include "err.h"

#define JS_HTTP_CONNECTION_LIMIT 64      /* open connections, all clients */
#define JS_HTTP_PER_IP_LIMIT     16      /* open connections from one address */
#define JS_HTTP_TIMEOUT_SECONDS  10      /* idle connection timeout */
#define JS_HTTP_THREADS          2       /* internal thread pool */
#define JS_HTTP_MEMORY_LIMIT     32768   /* bytes of request buffer per connection */
#define JS_HTTP_TLS_FILE_MAX     1048576 /* bytes of a PEM certificate or key file */

typedef struct js_http js_http;

/*
 * Content providers, called from the HTTP threads (so they must be
 * thread-safe). Every returned string is malloc'd and freed by js_http.
 */
typedef struct js_http_handlers {
    /* The current JWKS JSON; NULL = 503. */
    char *(*jwks)(void *ctx);
    /* Health: fills *body (JSON like {"hsm":"ok","audit":"ok"}) and returns 1 if healthy. */
    int (*health)(void *ctx, char **body);
    /* Prometheus text; NULL = 503. */
    char *(*metrics)(void *ctx);
    void *ctx;
} js_http_handlers;

typedef struct js_http_options {
    const char *listen;        /* "host:port", "[v6]:port"; port 0 picks a free port */
    const char *tls_cert_file; /* PEM chain; with tls_key_file, or both NULL */
    const char *tls_key_file;  /* PEM private key */
    unsigned jwks_max_age;     /* seconds, Cache-Control max-age of the JWKS */
} js_http_options;

/*
 * Binds the listen address and starts serving. The options are copied; the
 * handlers struct is copied and ctx borrowed until js_http_stop. Errors:
 * JS_ECONFIG with reason http.listen (bad address, cannot bind), http.plain
 * (plain HTTP on a non-loopback address), http.tls (TLS files unreadable or
 * unsupported), http.start (libmicrohttpd refused).
 */
js_status js_http_start(const js_http_options *o, const js_http_handlers *h, js_http **out,
                        js_err *err) JS_WUR;

/* The bound TCP port (useful after listening on port 0). */
int js_http_port(const js_http *h);

/* Stops serving, waits for in-flight requests and frees. NULL is fine. */
void js_http_stop(js_http *h);

#endif
