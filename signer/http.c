/*
 * http.c - the JWKS / health / metrics HTTP endpoint on libmicrohttpd (see
 * http.h).
 *
 * We resolve the listen address ourselves (so the loopback rule is checked on
 * the address actually bound) and hand it to libmicrohttpd, which binds it
 * (reporting why through its logger if it cannot) and runs a small internal
 * thread pool with
 * connection limits and an idle timeout so slow clients cannot pin it. Every
 * request is answered from the first access-handler call: nothing here reads
 * a request body.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define LISTEN_MAX    256 /* bytes of the listen option */
#define ETAG_HEX      32  /* 128 bits of SHA-256 are plenty to tell JWKS versions apart */
#define START_LOG_MAX 200

#define PATH_JWKS    "/.well-known/jwks.json"
#define PATH_HEALTH  "/healthz"
#define PATH_METRICS "/metrics"

#define TYPE_JSON    "application/json"
#define TYPE_TEXT    "text/plain; charset=utf-8"
#define TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"

struct js_http {
    struct MHD_Daemon *daemon;
    js_http_handlers h;
    char jwks_cache_control[64];
    int port;
    char *tls_cert; /* PEM, NUL-terminated; kept until stop */
    char *tls_key;  /* PEM, wiped and freed at stop */
    size_t tls_key_len;
    atomic_int log_done; /* 1 once the first libmicrohttpd message is kept */
    char start_log[START_LOG_MAX];
};

/* ---- listen address ---------------------------------------------------------------- */

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127; /* 127.0.0.0/8 */
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

/*
 * Splits "host:port" or "[v6]:port" into host and port (0-65535). An empty
 * host means every interface (and so needs TLS).
 */
static js_status parse_listen(const char *listen, char host[LISTEN_MAX], char port[8], js_err *err)
{
    JS_ENSURE(listen != NULL && listen[0] != '\0', err, JS_ECONFIG, "http.listen",
              "http listen address is empty");
    size_t n = strnlen(listen, LISTEN_MAX);
    JS_ENSURE(n < LISTEN_MAX, err, JS_ECONFIG, "http.listen",
              "http listen address is longer than %d bytes", LISTEN_MAX - 1);
    const char *colon;
    const char *hs = listen;
    size_t hl;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        JS_ENSURE(close != NULL && close[1] == ':', err, JS_ECONFIG, "http.listen",
                  "http listen '%s': expected [ipv6]:port", listen);
        hs = listen + 1;
        hl = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        JS_ENSURE(colon != NULL && memchr(listen, ':', (size_t)(colon - listen)) == NULL, err,
                  JS_ECONFIG, "http.listen",
                  "http listen '%s': expected host:port (IPv6 in brackets)", listen);
        hl = (size_t)(colon - listen);
    }
    const char *ps = colon + 1;
    size_t pl = strlen(ps);
    unsigned long v = 0;
    JS_ENSURE(pl >= 1 && pl <= 5, err, JS_ECONFIG, "http.listen",
              "http listen '%s': port must be 0-65535", listen);
    for (size_t i = 0; i < pl; i++) {
        JS_ENSURE(ps[i] >= '0' && ps[i] <= '9', err, JS_ECONFIG, "http.listen",
                  "http listen '%s': port must be 0-65535", listen);
        v = v * 10 + (unsigned long)(ps[i] - '0');
    }
    JS_ENSURE(v <= 65535, err, JS_ECONFIG, "http.listen", "http listen '%s': port must be 0-65535",
              listen);
    memcpy(host, hs, hl);
    host[hl] = '\0';
    memcpy(port, ps, pl + 1);
    return JS_OK;
}

/*
 * Resolves the listen address into *sa and checks the plain-HTTP rule on the
 * address that will actually be bound. libmicrohttpd creates, binds and owns
 * the socket (MHD_OPTION_SOCK_ADDR), so it closes it on every path.
 */
static js_status resolve_listen(const js_http_options *o, int tls, struct sockaddr_storage *sa,
                                int *ipv6, js_err *err)
{
    char host[LISTEN_MAX];
    char port[8];
    JS_GUARD(parse_listen(o->listen, host, port, err));

    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    /* "localhost" means loopback, whatever the resolver's order of ::1 and 127.0.0.1. */
    const char *node = host;
    if (host[0] == '\0')
        node = NULL; /* every interface */
    else if (strcasecmp(host, "localhost") == 0)
        node = "127.0.0.1";
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(node, port, &hints, &ai);
    JS_ENSURE(rc == 0 && ai != NULL, err, JS_ECONFIG, "http.listen",
              "http listen '%s': cannot resolve: %s", o->listen, gai_strerror(rc));

    js_status st = JS_OK;
    if (ai->ai_addrlen > sizeof(*sa) || (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)) {
        st = js_err_set(err, JS_ECONFIG, "http.listen", "http listen '%s': not an IP address",
                        o->listen);
    } else if (!tls && !is_loopback(ai->ai_addr)) {
        st = js_err_set(err, JS_ECONFIG, "http.plain",
                        "http listen '%s' is not a loopback address: plain HTTP is allowed "
                        "only on 127.0.0.0/8, ::1 or localhost; configure a TLS certificate "
                        "and key",
                        o->listen);
    } else {
        memset(sa, 0, sizeof(*sa));
        memcpy(sa, ai->ai_addr, ai->ai_addrlen);
        *ipv6 = ai->ai_family == AF_INET6;
    }
    freeaddrinfo(ai);
    return st;
}

/* ---- TLS material ------------------------------------------------------------------ */

/* Reads a whole PEM file (at most JS_HTTP_TLS_FILE_MAX bytes), NUL-terminated. */
static js_status read_pem(const char *path, const char *what, char **out, size_t *len, js_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    JS_ENSURE(fd >= 0, err, JS_ECONFIG, "http.tls", "http TLS %s '%s': %s", what, path,
              strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0 ||
        sb.st_size > JS_HTTP_TLS_FILE_MAX) {
        close(fd);
        return js_err_set(err, JS_ECONFIG, "http.tls",
                          "http TLS %s '%s': not a regular file of 1 to %d bytes", what, path,
                          JS_HTTP_TLS_FILE_MAX);
    }
    size_t size = (size_t)sb.st_size;
    char *p = malloc(size + 1);
    if (p == NULL) {
        close(fd);
        return js_err_set(err, JS_EINTERNAL, "internal.oom", "out of memory");
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, p + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != size) {
        OPENSSL_cleanse(p, size);
        free(p);
        return js_err_set(err, JS_ECONFIG, "http.tls", "http TLS %s '%s': short read", what, path);
    }
    p[size] = '\0';
    *out = p;
    *len = size;
    return JS_OK;
}

/* ---- responses --------------------------------------------------------------------- */

/*
 * Queues a response. body is malloc'd and owned (freed by libmicrohttpd) when
 * owned != 0, otherwise static. For HEAD, libmicrohttpd sends the headers
 * (with the GET Content-Length) and leaves out the body.
 */
static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               char *body, int owned, const char *cache_control, const char *etag)
{
    size_t len = body != NULL ? strlen(body) : 0;
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    if (type != NULL)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (cache_control != NULL)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, cache_control);
    if (etag != NULL)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, etag);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    (void)MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_static(struct MHD_Connection *c, unsigned status, const char *text)
{
    return respond(c, status, TYPE_TEXT, (char *)(uintptr_t)text, 0, "no-store", NULL);
}

/* ---- ETag and If-None-Match (RFC 7232) --------------------------------------------- */

/* A strong entity-tag (RFC 7232 section 2.3): a quoted prefix of the body's SHA-256. */
static int make_etag(const char *body, size_t len, char out[ETAG_HEX + 3])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 < ETAG_HEX)
        return 0;
    static const char hex[] = "0123456789abcdef";
    out[0] = '"';
    for (size_t i = 0; i < ETAG_HEX / 2; i++) {
        out[1 + 2 * i] = hex[md[i] >> 4];
        out[2 + 2 * i] = hex[md[i] & 0x0f];
    }
    out[ETAG_HEX + 1] = '"';
    out[ETAG_HEX + 2] = '\0';
    return 1;
}

/*
 * Does one If-None-Match field value match our tag? RFC 7232 section 3.2:
 * If-None-Match = "*" / 1#entity-tag, compared with the weak comparison of
 * section 2.3.2 (a W/ prefix on either side is ignored), and "*" matches any
 * current representation. Parsing stops at the first malformed element, which
 * then counts as no match (the safe answer is a full 200).
 */
static int inm_matches(const char *v, const char *etag)
{
    const char *opaque = etag + 1; /* our tag without the quotes */
    size_t olen = strlen(etag) - 2;
    const char *p = v;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return 0;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return 0;
        const char *q = strchr(p + 1, '"');
        if (q == NULL)
            return 0;
        if ((size_t)(q - p - 1) == olen && memcmp(p + 1, opaque, olen) == 0)
            return 1;
        p = q + 1;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != ',' && *p != '\0')
            return 0;
    }
}

typedef struct inm_state {
    const char *etag;
    int matched;
} inm_state;

/* Every If-None-Match field counts: a client may send the list split over several. */
static enum MHD_Result inm_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    inm_state *s = cls;
    if (key != NULL && value != NULL && strcasecmp(key, MHD_HTTP_HEADER_IF_NONE_MATCH) == 0 &&
        inm_matches(value, s->etag)) {
        s->matched = 1;
        return MHD_NO; /* stop iterating */
    }
    return MHD_YES;
}

/* ---- routes ------------------------------------------------------------------------ */

/* RFC 7517 section 5: the JWK Set, cacheable, revalidated by ETag (RFC 7232). */
static enum MHD_Result serve_jwks(js_http *h, struct MHD_Connection *c)
{
    char *body = h->h.jwks != NULL ? h->h.jwks(h->h.ctx) : NULL;
    if (body == NULL)
        return respond_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, "jwks unavailable\n");
    char etag[ETAG_HEX + 3];
    if (!make_etag(body, strlen(body), etag)) {
        free(body);
        return respond_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
    }
    inm_state s = {etag, 0};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, inm_iter, &s);
    if (s.matched) {
        /* RFC 7232 section 4.1: 304 has no body but repeats ETag and Cache-Control. */
        free(body);
        return respond(c, MHD_HTTP_NOT_MODIFIED, NULL, NULL, 0, h->jwks_cache_control, etag);
    }
    return respond(c, MHD_HTTP_OK, TYPE_JSON, body, 1, h->jwks_cache_control, etag);
}

static enum MHD_Result serve_health(js_http *h, struct MHD_Connection *c)
{
    char *body = NULL;
    int ok = h->h.health != NULL ? h->h.health(h->h.ctx, &body) : 0;
    unsigned status = ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    if (body == NULL)
        return respond(
            c, status, TYPE_JSON,
            (char *)(uintptr_t)(ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unhealthy\"}"), 0,
            "no-store", NULL);
    return respond(c, status, TYPE_JSON, body, 1, "no-store", NULL);
}

static enum MHD_Result serve_metrics(js_http *h, struct MHD_Connection *c)
{
    char *body = h->h.metrics != NULL ? h->h.metrics(h->h.ctx) : NULL;
    if (body == NULL)
        return respond_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, "metrics unavailable\n");
    return respond(c, MHD_HTTP_OK, TYPE_METRICS, body, 1, "no-store", NULL);
}

/* A request that announces a body (we never read one). */
static int has_body(struct MHD_Connection *c)
{
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te != NULL)
        return 1;
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl == NULL)
        return 0;
    for (const char *p = cl; *p != '\0'; p++)
        if (*p != '0' && *p != ' ' && *p != '\t')
            return 1;
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    js_http *h = cls;
    /* Per-request state is one of two addresses (never written): waiting or answered. */
    static const char k_waiting = 0, k_answered = 0;

    if (*con_cls == (const void *)&k_answered) {
        /* Body bytes after an early refusal: drop them, the connection then closes. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    enum { R_NONE, R_JWKS, R_HEALTH, R_METRICS } route = R_NONE;
    if (strcmp(url, PATH_JWKS) == 0)
        route = R_JWKS;
    else if (strcmp(url, PATH_HEALTH) == 0)
        route = R_HEALTH;
    else if (strcmp(url, PATH_METRICS) == 0)
        route = R_METRICS;

    if (*con_cls == NULL) {
        /*
         * First call, headers only. Refusals are answered now, before any body is read.
         * A good request is answered on the next call, once libmicrohttpd has seen the
         * whole (empty) request, so that the connection can be kept alive.
         */
        *con_cls = (void *)(uintptr_t)&k_answered;
        if (route == R_NONE)
            return respond_static(c, MHD_HTTP_NOT_FOUND, "not found\n");
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
            return respond_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
        if (has_body(c))
            return respond_static(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not accepted\n");
        *con_cls = (void *)(uintptr_t)&k_waiting;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* cannot happen: a request with a body was refused */
        return MHD_YES;
    }
    *con_cls = (void *)(uintptr_t)&k_answered;
    switch (route) {
    case R_JWKS:
        return serve_jwks(h, c);
    case R_HEALTH:
        return serve_health(h, c);
    case R_METRICS:
        return serve_metrics(h, c);
    case R_NONE:
    default:
        return respond_static(c, MHD_HTTP_NOT_FOUND, "not found\n");
    }
}

/*
 * libmicrohttpd's log: kept (the first message only) so that a failed start
 * can say why; later messages are dropped, libraries never print.
 */
static void on_log(void *cls, const char *fmt, va_list ap) JS_PRINTF(2, 0);
static void on_log(void *cls, const char *fmt, va_list ap)
{
    js_http *h = cls;
    if (atomic_exchange(&h->log_done, 1) != 0)
        return;
    vsnprintf(h->start_log, sizeof(h->start_log), fmt, ap);
    size_t n = strlen(h->start_log);
    while (n > 0 && (h->start_log[n - 1] == '\n' || h->start_log[n - 1] == '\r'))
        h->start_log[--n] = '\0';
}

/* ---- start / stop ------------------------------------------------------------------ */

static void http_free(js_http *h)
{
    if (h == NULL)
        return;
    if (h->tls_key != NULL) {
        OPENSSL_cleanse(h->tls_key, h->tls_key_len);
        free(h->tls_key);
    }
    free(h->tls_cert);
    free(h);
}

js_status js_http_start(const js_http_options *o, const js_http_handlers *hd, js_http **out,
                        js_err *err)
{
    JS_ENSURE(o != NULL && hd != NULL && out != NULL, err, JS_EINVAL, "http.invalid",
              "js_http_start: NULL argument");
    *out = NULL;
    int tls = o->tls_cert_file != NULL || o->tls_key_file != NULL;
    JS_ENSURE(!tls || (o->tls_cert_file != NULL && o->tls_key_file != NULL), err, JS_ECONFIG,
              "http.tls", "http TLS needs both a certificate file and a key file");
    JS_ENSURE(!tls || MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES, err, JS_ECONFIG,
              "http.tls", "http TLS requested but libmicrohttpd was built without TLS");

    js_http *h = calloc(1, sizeof(*h));
    JS_ENSURE_ALLOC(h, err);
    h->h = *hd;
    atomic_init(&h->log_done, 0);
    snprintf(h->jwks_cache_control, sizeof(h->jwks_cache_control), "public, max-age=%u",
             o->jwks_max_age);

    js_status st = JS_OK;
    size_t cert_len = 0;
    if (tls) {
        st = read_pem(o->tls_cert_file, "certificate", &h->tls_cert, &cert_len, err);
        if (st == JS_OK)
            st = read_pem(o->tls_key_file, "key", &h->tls_key, &h->tls_key_len, err);
        if (st != JS_OK) {
            http_free(h);
            return st;
        }
    }

    struct sockaddr_storage sa;
    int ipv6 = 0;
    st = resolve_listen(o, tls, &sa, &ipv6, err);
    if (st != JS_OK) {
        http_free(h);
        return st;
    }

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    if (tls)
        flags |= MHD_USE_TLS;
    /*
     * The logger must come first (libmicrohttpd prints to stderr until it is set). The TLS
     * options come last: with plain HTTP they are replaced by the END marker.
     */
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_log, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)JS_HTTP_THREADS, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)JS_HTTP_CONNECTION_LIMIT, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)JS_HTTP_PER_IP_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)JS_HTTP_TIMEOUT_SECONDS, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)JS_HTTP_MEMORY_LIMIT, tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, h->tls_cert,
        MHD_OPTION_HTTPS_MEM_KEY, h->tls_key, MHD_OPTION_END);
    if (h->daemon == NULL) {
        st = js_err_set(err, JS_ECONFIG, "http.start", "http listen '%s': cannot start: %s",
                        o->listen, h->start_log[0] ? h->start_log : "libmicrohttpd refused");
        http_free(h);
        return st;
    }
    /* Later messages (per-connection trouble) are not kept: see on_log. */
    atomic_store(&h->log_done, 1);

    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? (int)info->port : 0;
    *out = h;
    return JS_OK;
}

int js_http_port(const js_http *h)
{
    return h != NULL ? h->port : 0;
}

void js_http_stop(js_http *h)
{
    if (h == NULL)
        return;
    if (h->daemon != NULL)
        MHD_stop_daemon(h->daemon); /* joins the threads, closes the listen socket */
    http_free(h);
}
