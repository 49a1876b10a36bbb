/*
 * http.h - the signer's HTTP endpoint (libmicrohttpd), on its own listen
 * address, separate from the gRPC port: the JWKS and the OIDC discovery
 * document for verifiers, a health check and Prometheus metrics. Read-only:
 * GET and HEAD only, request bodies refused, and everything a peer can hold
 * is bounded (see Limits below).
 *
 *   GET /.well-known/jwks.json  200 application/json (the RFC 7517 section 5
 *                               JWK Set), Cache-Control: public, max-age=N,
 *                               a strong ETag, 304 on a matching If-None-Match
 *                               (RFC 9110 section 13.1.2) whose Content-Length,
 *                               if any, is the 200's (section 8.6); 503 when
 *                               the handler has no JWKS.
 *   GET /.well-known/openid-configuration
 *                               200 application/json (the OpenID Connect
 *                               Discovery 1.0 section 3 provider metadata),
 *                               with exactly the JWKS's caching: the same
 *                               Cache-Control, a strong ETag of its own body,
 *                               304 on a matching If-None-Match, HEAD; 503
 *                               when the handler has no document. js_http
 *                               only serves the bytes: what they say (issuer,
 *                               keys) is the daemon's business.
 *   GET /healthz                200 healthy / 503 unhealthy, JSON body,
 *                               Cache-Control: no-store.
 *   GET /metrics                200 text/plain; version=0.0.4; charset=utf-8.
 *   POST /introspect            RFC 7662 token introspection, for clients
 *                               authenticated by a TLS client certificate
 *                               (see "Introspection" below); only when the
 *                               handler is set (404 otherwise).
 *
 * The JWKS is served as application/json rather than the RFC 7517 section
 * 8.5 type application/jwk-set+json: both are correct for a JWK Set, and
 * application/json is what common JWT libraries and OIDC discovery clients
 * expect (some refuse other types).
 *
 * Plain HTTP is allowed only on a loopback listen address (127.0.0.0/8, ::1,
 * localhost), for development; anywhere else js_http_start refuses unless a
 * TLS certificate and key are configured.
 *
 * Introspection (RFC 7662 §2.1). POST /introspect with an
 * application/x-www-form-urlencoded body (form.h: `token`, optional
 * `token_type_hint`, nothing else used) of at most JS_HTTP_FORM_MAX bytes
 * (64 KiB; larger, by Content-Length or as received, is 413 and the
 * connection closes). RFC 7662 §2.1 requires the caller to authenticate: here
 * only by a TLS client certificate, verified by GnuTLS against
 * js_http_options.tls_client_ca_file, dates and the clientAuth purpose
 * included (the listener then asks every client for a certificate; one that
 * sends none can still fetch the JWKS). The
 * caller's identity is the certificate's typed identity (certid.h, as for
 * gRPC). Plain HTTP has no client authentication, so there every call is
 * refused (401, a JSON error), never answered. js_http reads and bounds the
 * request and hands the identity (or why there is none), the decoded token
 * (or why the request is malformed) and the peer address to the introspect
 * handler, which decides, logs and answers; the answer is sent as
 * application/json with Cache-Control: no-store (RFC 7662 §2.2, RFC 6749
 * §5.1). The request body is held per connection while it arrives: at most
 * CONNECTION_LIMIT * JS_HTTP_FORM_MAX (16 MiB) in all, within the response
 * deadline.
 */
#ifndef JS_HTTP_H
#define JS_HTTP_H

#include "err.h"

/*
 * Limits. The endpoint faces unauthenticated peers and verifiers reject every
 * token while they cannot fetch the JWKS, so everything a peer can hold here
 * is bounded, and a slow peer is cut off by a total deadline rather than an
 * idle timer (libmicrohttpd's own timeout restarts on every byte received, so
 * one header line every few seconds would hold a connection forever).
 *
 * Connections and descriptors. At most JS_HTTP_CONNECTION_LIMIT connections
 * are open (or js_http_options.max_connections, when the daemon's fd limit
 * leaves the HTTP server a smaller share), at most a sixteenth of that from
 * one address (JS_HTTP_PER_IP_LIMIT with the default; at least 2); a
 * connection over the per-address limit is accepted and closed at once. At the global limit new
 * connections wait in the kernel's listen queue (JS_HTTP_LISTEN_BACKLOG) until
 * a slot frees. Descriptors: one per connection, plus the listen socket and
 * at most two per thread (poll and wake-up descriptors; 5 in all measured
 * with 4 threads): at most JS_HTTP_CONNECTION_LIMIT + 1 + 2 * JS_HTTP_THREADS.
 *
 * Deadlines, each measured from a fixed point, never restarted by traffic:
 *  - the request header (request line, header fields, and with TLS the
 *    handshake) must be complete JS_HTTP_HEADER_TIMEOUT_MS after the
 *    connection was accepted, or, on a kept-alive connection, after the
 *    previous response was sent: so this also bounds the idle time between
 *    requests. While JS_HTTP_BUSY_CONNECTIONS or more connections are open
 *    the deadline is JS_HTTP_BUSY_HEADER_TIMEOUT_MS instead.
 *  - the response must be sent within JS_HTTP_RESPONSE_TIMEOUT_MS of the end
 *    of its request header (a peer that does not read is cut off).
 *  - libmicrohttpd's inactivity timeout (JS_HTTP_IDLE_TIMEOUT_SECONDS) stays
 *    as a backstop; it is longer than both, so the deadlines decide.
 * A connection past its deadline is shut down (checked every
 * JS_HTTP_SWEEP_INTERVAL_MS). A connection older than
 * JS_HTTP_MAX_CONNECTION_AGE_SECONDS, or that has made
 * JS_HTTP_MAX_REQUESTS_PER_CONNECTION requests, gets "Connection: close" on
 * its next response, so no connection lives longer than about
 * JS_HTTP_MAX_CONNECTION_AGE_SECONDS + header and response deadlines.
 *
 * Requests. Request line and header fields together must fit in the
 * connection's memory pool (JS_HTTP_MEMORY_LIMIT bytes, which also holds the
 * parsed header list and the response header): a longer request line is 414,
 * longer or more header fields 431, and the connection is closed. Only GET
 * and HEAD (405 otherwise); a request announcing a body (Content-Length other
 * than 0, or Transfer-Encoding) is 413 and the body is never read. The one
 * exception is POST /introspect (POST only, 405 with Allow: POST otherwise),
 * whose body is read up to JS_HTTP_FORM_MAX: a larger Content-Length is 413
 * before the body is read, a chunked body that grows past it closes the
 * connection (libmicrohttpd cannot answer in the middle of a body). 400 for an
 * HTTP/1.1 request without exactly one valid Host (RFC 9112 section 3.2), and
 * for a NUL or control character in the request target, raw or
 * percent-encoded. Pipelined requests are answered one at a time, in order,
 * each under the deadlines above.
 *
 * Worst case. Peers on fewer than CONNECTION_LIMIT / PER_IP_LIMIT (16)
 * addresses cannot fill the server: a client on another address is served at
 * once whatever they send (measured: 200 slow connections from 8 addresses,
 * JWKS fetches from a ninth in about 1 ms). Peers on more addresses (any
 * local process can use all of 127.0.0.0/8) can hold every slot, but each for
 * at most the busy header deadline (2 s), so the server still turns over at
 * least CONNECTION_LIMIT / 2 s = 128 connections a second, in the order they
 * were queued: a new client queued behind k attacking connections is served
 * after about k / 128 s (measured: 1.7 s behind 384 slow connections from 24
 * addresses), at most LISTEN_BACKLOG / 128 = 8 s with a full queue, and
 * beyond that the kernel drops its SYN and the client's TCP retries. No state
 * outlives the attack. Memory: at most CONNECTION_LIMIT * MEMORY_LIMIT (8 MiB)
 * of request buffers, plus one copy of the body per response in flight.
 */
#define JS_HTTP_CONNECTION_LIMIT            256     /* open connections, all clients */
#define JS_HTTP_PER_IP_LIMIT                16      /* open connections from one address */
#define JS_HTTP_LISTEN_BACKLOG              1024    /* connections queued in the kernel */
#define JS_HTTP_HEADER_TIMEOUT_MS           5000    /* accept (or last response) -> header done */
#define JS_HTTP_BUSY_CONNECTIONS            192     /* from this many open connections ... */
#define JS_HTTP_BUSY_HEADER_TIMEOUT_MS      2000    /* ... the header deadline is this */
#define JS_HTTP_RESPONSE_TIMEOUT_MS         10000   /* header done -> response sent */
#define JS_HTTP_IDLE_TIMEOUT_SECONDS        30      /* libmicrohttpd's inactivity timeout */
#define JS_HTTP_MAX_CONNECTION_AGE_SECONDS  60      /* then "Connection: close" */
#define JS_HTTP_MAX_REQUESTS_PER_CONNECTION 100     /* then "Connection: close" */
#define JS_HTTP_SWEEP_INTERVAL_MS           100     /* how often deadlines are checked */
#define JS_HTTP_THREADS                     4       /* internal thread pool */
#define JS_HTTP_MEMORY_LIMIT                32768   /* bytes of memory pool per connection */
#define JS_HTTP_TLS_FILE_MAX                1048576 /* bytes of a PEM certificate or key file */

typedef struct js_http js_http;

/*
 * One POST /introspect, as js_http read it (every pointer valid for the
 * handler call only). Exactly one of these holds: problem != NULL (the
 * request is refused before any introspection: reason http.form,
 * http.body_too_large, or an identity.* reason when the caller is not
 * authenticated), or token != NULL with an identity.
 */
typedef struct js_http_introspect_call {
    const char *identity;  /* typed identity (identity.h), or NULL */
    const js_err *problem; /* why the call is refused, or NULL */
    const char *peer;      /* "ipv4:ADDR:PORT" / "ipv6:[ADDR]:PORT", as gRPC writes it */
    const char *token;     /* the decoded token (may hold NUL bytes), or NULL */
    size_t token_len;
} js_http_introspect_call;

/*
 * Content providers, called from the HTTP threads (so they must be
 * thread-safe). Every returned string is malloc'd and freed by js_http.
 */
typedef struct js_http_handlers {
    /* The current JWKS JSON; NULL = 503. */
    char *(*jwks)(void *ctx);
    /* The current OpenID provider metadata JSON; NULL = 503. */
    char *(*discovery)(void *ctx);
    /* Health: fills *body (JSON like {"hsm":"ok","audit":"ok"}) and returns 1 if healthy. */
    int (*health)(void *ctx, char **body);
    /* Prometheus text; NULL = 503. */
    char *(*metrics)(void *ctx);
    /* POST /introspect (NULL = 404): returns the HTTP status and sets *json
     * to the JSON body (malloc'd; NULL = js_http answers a generic
     * {"error":"server_error"}). */
    unsigned (*introspect)(void *ctx, const js_http_introspect_call *call, char **json);
    /* Called once by js_http_stop after the last handler call (may be NULL):
     * frees what ctx holds for the handlers. */
    void (*release)(void *ctx);
    void *ctx;
} js_http_handlers;

typedef struct js_http_options {
    const char *listen;        /* "host:port", "[v6]:port"; port 0 picks a free port */
    const char *tls_cert_file; /* PEM chain; with tls_key_file, or both NULL */
    const char *tls_key_file;  /* PEM private key */
    /* PEM CA bundle that client certificates must chain to (needs TLS);
     * NULL = no client authentication: every /introspect call is refused. */
    const char *tls_client_ca_file;
    unsigned jwks_max_age; /* seconds, Cache-Control max-age of the JWKS */
    /* Open connections, all clients: 0 = JS_HTTP_CONNECTION_LIMIT; at most
     * that. The daemon lowers it under a small fd limit (its fd budget);
     * the busy deadline starts at three quarters of it. */
    unsigned max_connections;
} js_http_options;

/*
 * Binds the listen address and starts serving. The options are copied; the
 * handlers struct is copied and ctx borrowed until js_http_stop. Errors:
 * JS_ECONFIG with reason http.listen (bad address, cannot bind), http.plain
 * (plain HTTP on a non-loopback address), http.tls (TLS files, the client
 * CA bundle included, unreadable or unsupported, or a client CA without
 * TLS), http.start (libmicrohttpd refused). On failure h->release is not
 * called: ctx stays the caller's.
 */
js_status js_http_start(const js_http_options *o, const js_http_handlers *h, js_http **out,
                        js_err *err) JS_WUR;

/* Counters of the connection guard, for tests and metrics. */
typedef struct js_http_stats {
    unsigned long open;              /* connections open now */
    unsigned long accepted;          /* connections accepted since start */
    unsigned long header_deadline;   /* shut down: request header not complete in time */
    unsigned long response_deadline; /* shut down: response not sent in time */
    unsigned long bad_requests;      /* answered 400 by js_http (Host, request target) */
} js_http_stats;

/* Fills *out (zeros for NULL h). */
void js_http_get_stats(const js_http *h, js_http_stats *out);

/* The listening socket's descriptor (-1 for NULL h), so that nothing else
 * mistakes it for another listener on the same port number. */
int js_http_listen_fd(const js_http *h);

/* The bound TCP port (useful after listening on port 0). */
int js_http_port(const js_http *h);

/* Stops serving, waits for in-flight requests and frees. NULL is fine. */
void js_http_stop(js_http *h);

#endif
