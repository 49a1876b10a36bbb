/*
 * http.c - the JWKS / OIDC discovery / health / metrics HTTP endpoint on
 * libmicrohttpd (see http.h).
 *
 * We resolve the listen address ourselves (so the loopback rule is checked on
 * the address actually bound) and hand it to libmicrohttpd, which binds it
 * (reporting why through its logger if it cannot) and runs a small internal
 * thread pool with connection limits. Every request is answered from the
 * first access-handler call: nothing here reads a request body.
 *
 * libmicrohttpd 0.9.75 has only an inactivity timeout, which every byte
 * received restarts, so a peer sending one header line every few seconds
 * would hold its connection forever (slowloris). The connection guard below
 * adds total deadlines: each connection is tracked from libmicrohttpd's
 * "connection started" notification, its phase (waiting for a request
 * header, or answering one) is moved on by the access handler and the
 * "request completed" notification, and a sweeper thread shuts down (never
 * closes: libmicrohttpd owns the descriptor) every connection past the
 * deadline of its phase. libmicrohttpd calls the "connection closed"
 * notification before it closes the descriptor (MHD_cleanup_connections in
 * daemon.c), and the entry is removed there under the same mutex the sweeper
 * holds while calling shutdown(2): so a descriptor is only ever shut down
 * while it still belongs to its connection, never after it was closed and
 * reused for something else.
 */
#include "http.h"

#include "certid.h"
#include "clock.h"
#include "fileio.h"
#include "form.h"
#include "hex.h"
#include "identity.h"
#include "ticker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
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

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define LISTEN_MAX    256 /* bytes of the listen option */
#define ETAG_HEX      32  /* 128 bits of SHA-256 are plenty to tell JWKS versions apart */
#define START_LOG_MAX 200

#define PATH_JWKS       "/.well-known/jwks.json"
#define PATH_OIDC       "/.well-known/openid-configuration"
#define PATH_HEALTH     "/healthz"
#define PATH_METRICS    "/metrics"
#define PATH_INTROSPECT "/introspect"

#define TYPE_JSON    "application/json"
#define TYPE_TEXT    "text/plain; charset=utf-8"
#define TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* Bytes of a peer address as gRPC writes it: "ipv6:[" ADDR "]:" PORT. */
#define PEER_MAX (INET6_ADDRSTRLEN + 16)

/* Where a tracked connection is: each phase has its own deadline. */
typedef enum conn_phase {
    PHASE_HEADER, /* waiting for (the rest of) a request header */
    PHASE_ANSWER, /* header received, the response is being made and sent */
} conn_phase;

/* Where the current request is, for the access handler's repeated calls. */
typedef enum req_state {
    REQ_NEW,      /* first call still to come: check and refuse early */
    REQ_WAITING,  /* checked, answered on the next call (the request is then complete) */
    REQ_BODY,     /* POST /introspect: its body is being collected (http_conn.body) */
    REQ_ANSWERED, /* a response is queued; body bytes are dropped */
} req_state;

/*
 * One connection, from MHD_CONNECTION_NOTIFY_STARTED to
 * MHD_CONNECTION_NOTIFY_CLOSED (libmicrohttpd's socket context). fd, phase,
 * since_ms, shut and the list links belong to js_http.mu; the rest is only
 * touched by the libmicrohttpd thread that serves the connection.
 */
typedef struct http_conn {
    struct http_conn *prev, *next;
    int fd;           /* owned by libmicrohttpd; we may only shutdown(2) it */
    conn_phase phase; /* mu */
    int64_t since_ms; /* mu: when the phase began (monotonic) */
    int shut;         /* mu: shutdown(2) done */
    int64_t accepted_ms;
    unsigned requests; /* requests whose header was received */
    /* The current request, reset by the URI log callback (on_uri). */
    req_state req;
    size_t target_len; /* bytes of the raw request target before the first NUL */
    int bad_target;    /* a NUL or control byte, percent-encoded, in the target */
    /* POST /introspect: the body so far (at most JS_HTTP_FORM_MAX bytes,
     * wiped and freed when the request completes: it holds a token). */
    char *body;
    size_t body_len;
    char identity[IDENTITY_MAX + 1]; /* POST /introspect: the client's */
} http_conn;

struct js_http {
    struct MHD_Daemon *daemon;
    js_http_handlers h;
    char jwks_cache_control[64];
    int port;
    char *tls_cert; /* PEM, NUL-terminated; kept until stop */
    char *tls_key;  /* PEM, wiped and freed at stop */
    size_t tls_key_len;
    char *client_ca;     /* PEM CA bundle for client certificates, or NULL; kept until stop */
    atomic_int log_done; /* 1 once the first libmicrohttpd message is kept */
    char start_log[START_LOG_MAX];

    /* The connection guard (see the file comment). */
    pthread_mutex_t mu;
    int mu_ready;              /* mu initialised */
    js_ticker *sweeper;        /* NULL: not running */
    http_conn *conns;          /* mu: every tracked connection */
    atomic_ulong open;         /* entries in conns (changed under mu) */
    unsigned max_connections;  /* MHD_OPTION_CONNECTION_LIMIT */
    unsigned busy_connections; /* from here on, the short header deadline */
    unsigned per_ip;           /* MHD_OPTION_PER_IP_CONNECTION_LIMIT */
    atomic_ulong accepted;
    atomic_ulong header_deadline;
    atomic_ulong response_deadline;
    atomic_ulong bad_requests;
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
    JS_ENSURE(listen != NULL && listen[0] != '\0', err, JS_ECONFIG, JS_R_HTTP_LISTEN,
              "http listen address is empty");
    size_t n = strnlen(listen, LISTEN_MAX);
    JS_ENSURE(n < LISTEN_MAX, err, JS_ECONFIG, JS_R_HTTP_LISTEN,
              "http listen address is longer than %d bytes", LISTEN_MAX - 1);
    const char *colon;
    const char *hs = listen;
    size_t hl;
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        JS_ENSURE(close != NULL && close[1] == ':', err, JS_ECONFIG, JS_R_HTTP_LISTEN,
                  "http listen '%s': expected [ipv6]:port", listen);
        hs = listen + 1;
        hl = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(listen, ':');
        JS_ENSURE(colon != NULL && memchr(listen, ':', (size_t)(colon - listen)) == NULL, err,
                  JS_ECONFIG, JS_R_HTTP_LISTEN,
                  "http listen '%s': expected host:port (IPv6 in brackets)", listen);
        hl = (size_t)(colon - listen);
    }
    const char *ps = colon + 1;
    size_t pl = strlen(ps);
    unsigned long v = 0;
    JS_ENSURE(pl >= 1 && pl <= 5, err, JS_ECONFIG, JS_R_HTTP_LISTEN,
              "http listen '%s': port must be 0-65535", listen);
    for (size_t i = 0; i < pl; i++) {
        JS_ENSURE(ps[i] >= '0' && ps[i] <= '9', err, JS_ECONFIG, JS_R_HTTP_LISTEN,
                  "http listen '%s': port must be 0-65535", listen);
        v = v * 10 + (unsigned long)(ps[i] - '0');
    }
    JS_ENSURE(v <= 65535, err, JS_ECONFIG, JS_R_HTTP_LISTEN,
              "http listen '%s': port must be 0-65535", listen);
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
    JS_ENSURE(rc == 0 && ai != NULL, err, JS_ECONFIG, JS_R_HTTP_LISTEN,
              "http listen '%s': cannot resolve: %s", o->listen, gai_strerror(rc));

    js_status st = JS_OK;
    if (ai->ai_addrlen > sizeof(*sa) || (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HTTP_LISTEN, "http listen '%s': not an IP address",
                        o->listen);
    } else if (!tls && !is_loopback(ai->ai_addr)) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HTTP_PLAIN,
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

/* Reads a whole PEM file (1 to JS_HTTP_TLS_FILE_MAX bytes), NUL-terminated,
 * with the one bounded reader (fileio.h). A symlink is followed: the operator
 * names the file. The key is secret, so every copy is wiped. */
static js_status read_pem(const char *path, const char *what, char **out, size_t *len, js_err *err)
{
    js_file_info fi;
    switch (
        js_file_read(path, JS_HTTP_TLS_FILE_MAX, JS_FILE_FOLLOW | JS_FILE_SECRET, out, len, &fi)) {
    case JS_FILE_OK:
        break;
    case JS_FILE_OPEN:
        return js_err_set(err, JS_ECONFIG, JS_R_HTTP_TLS, "http TLS %s '%s': %s", what, path,
                          strerror(fi.sys_errno));
    case JS_FILE_NOT_REGULAR:
    case JS_FILE_TOO_LARGE:
        return js_err_set(err, JS_ECONFIG, JS_R_HTTP_TLS,
                          "http TLS %s '%s': not a regular file of 1 to %d bytes", what, path,
                          JS_HTTP_TLS_FILE_MAX);
    case JS_FILE_READ:
        return js_err_set(err, JS_ECONFIG, JS_R_HTTP_TLS, "http TLS %s '%s': short read", what,
                          path);
    case JS_FILE_NOMEM:
    default:
        return js_err_oom(err);
    }
    if (*len == 0 || (long long)*len != fi.size) {
        /* Empty, or changed between fstat and the end of the read. */
        int empty = fi.size == 0;
        OPENSSL_cleanse(*out, *len);
        JS_FREE(*out);
        *len = 0;
        if (empty)
            return js_err_set(err, JS_ECONFIG, JS_R_HTTP_TLS,
                              "http TLS %s '%s': not a regular file of 1 to %d bytes", what, path,
                              JS_HTTP_TLS_FILE_MAX);
        return js_err_set(err, JS_ECONFIG, JS_R_HTTP_TLS, "http TLS %s '%s': short read", what,
                          path);
    }
    return JS_OK;
}

/* ---- responses --------------------------------------------------------------------- */

/* What to answer. */
typedef struct reply {
    unsigned status;
    const char *type; /* Content-Type, or NULL */
    char *body;       /* len bytes: malloc'd and handed over when owned, else static */
    size_t len;       /* also the Content-Length of HEAD and 304 answers */
    int owned;
    const char *cache_control; /* or NULL */
    const char *etag;          /* or NULL */
    int close;                 /* "Connection: close": the connection ends after this answer */
    const char *allow;         /* Allow of a 405; NULL = "GET, HEAD" */
} reply;

/*
 * Queues a response. libmicrohttpd sends Content-Length: len and leaves the
 * body out for HEAD and for 304, so a 304 built from the 200's body carries
 * exactly the length the 200 would have, which RFC 9110 section 8.6 allows
 * (and nothing else, e.g. not the "Content-Length: 0" of an empty buffer).
 * With close, libmicrohttpd closes the connection once the answer is sent
 * (RFC 9112 section 9.6).
 */
static enum MHD_Result respond(struct MHD_Connection *c, const reply *rp)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        rp->len, rp->body, rp->owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        if (rp->owned)
            free(rp->body);
        return MHD_NO;
    }
    if (rp->type != NULL)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rp->type);
    if (rp->cache_control != NULL)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, rp->cache_control);
    if (rp->etag != NULL)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, rp->etag);
    if (rp->status == MHD_HTTP_METHOD_NOT_ALLOWED)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW,
                                      rp->allow != NULL ? rp->allow : "GET, HEAD");
    if (rp->close)
        (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    (void)MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ret = MHD_queue_response(c, rp->status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result respond_static(struct MHD_Connection *c, unsigned status, const char *text,
                                      int close)
{
    reply rp = {.status = status,
                .type = TYPE_TEXT,
                .body = (char *)(uintptr_t)text,
                .len = strlen(text),
                .cache_control = "no-store",
                .close = close};
    return respond(c, &rp);
}

/* A malloc'd body (NULL-safe), handed over to respond(). */
static enum MHD_Result respond_owned(struct MHD_Connection *c, unsigned status, const char *type,
                                     char *body, const char *cache_control, const char *etag,
                                     int close)
{
    reply rp = {.status = status,
                .type = type,
                .body = body,
                .len = strlen(body),
                .owned = 1,
                .cache_control = cache_control,
                .etag = etag,
                .close = close};
    return respond(c, &rp);
}

/* ---- ETag and If-None-Match (RFC 7232) --------------------------------------------- */

/* A strong entity-tag (RFC 7232 section 2.3): a quoted prefix of the body's SHA-256. */
static int make_etag(const char *body, size_t len, char out[ETAG_HEX + 3])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(body, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 < ETAG_HEX)
        return 0;
    out[0] = '"';
    js_hex_encode(md, ETAG_HEX / 2, out + 1); /* its NUL is replaced by the closing quote */
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

/* ---- the connection guard ---------------------------------------------------------- */

static http_conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

/* Wipes and frees the collected request body (it may hold a token). */
static void conn_drop_body(http_conn *conn)
{
    if (conn->body != NULL) {
        OPENSSL_cleanse(conn->body, conn->body_len);
        free(conn->body);
    }
    conn->body = NULL;
    conn->body_len = 0;
}

static void conn_set_phase(js_http *h, http_conn *conn, conn_phase phase)
{
    pthread_mutex_lock(&h->mu);
    conn->phase = phase;
    conn->since_ms = js_mono_ms();
    pthread_mutex_unlock(&h->mu);
}

/*
 * MHD_OPTION_NOTIFY_CONNECTION, on the thread serving the connection:
 * tracking starts when libmicrohttpd has accepted a connection (within its
 * limits) and ends before it closes the descriptor.
 */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    js_http *h = cls;
    switch (code) {
    case MHD_CONNECTION_NOTIFY_STARTED: {
        *socket_context = NULL;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        http_conn *conn = calloc(1, sizeof(*conn));
        if (conn == NULL || ci == NULL) {
            /* No connection goes untracked: without memory it is refused at once. */
            free(conn);
            if (ci != NULL)
                (void)shutdown(ci->connect_fd, SHUT_RDWR);
            return;
        }
        conn->fd = ci->connect_fd;
        conn->accepted_ms = js_mono_ms();
        atomic_fetch_add(&h->accepted, 1);
        pthread_mutex_lock(&h->mu);
        conn->phase = PHASE_HEADER;
        conn->since_ms = conn->accepted_ms;
        conn->next = h->conns;
        if (h->conns != NULL)
            h->conns->prev = conn;
        h->conns = conn;
        atomic_fetch_add(&h->open, 1);
        pthread_mutex_unlock(&h->mu);
        *socket_context = conn;
        return;
    }
    case MHD_CONNECTION_NOTIFY_CLOSED: {
        http_conn *conn = *socket_context;
        if (conn == NULL)
            return;
        pthread_mutex_lock(&h->mu);
        if (conn->prev != NULL)
            conn->prev->next = conn->next;
        else
            h->conns = conn->next;
        if (conn->next != NULL)
            conn->next->prev = conn->prev;
        atomic_fetch_sub(&h->open, 1);
        pthread_mutex_unlock(&h->mu);
        conn_drop_body(conn);
        free(conn);
        *socket_context = NULL;
        return;
    }
    default:
        return;
    }
}

/*
 * MHD_OPTION_NOTIFY_COMPLETED: a response was sent (or the request ended).
 * The next request header is now awaited, under the header deadline again:
 * this bounds the idle time of a kept-alive connection.
 */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)con_cls;
    (void)toe;
    http_conn *conn = conn_of(c);
    if (conn != NULL) {
        conn_drop_body(conn);
        conn_set_phase(cls, conn, PHASE_HEADER);
    }
}

/*
 * MHD_OPTION_URI_LOG_CALLBACK: called once per request with the raw request
 * target, before libmicrohttpd splits off the query and percent-decodes it.
 * It starts the request's state; the return value is the access handler's
 * *con_cls. The target is a C string here, so a NUL byte inside it makes it
 * shorter than the target on the request line: on_request compares.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    http_conn *conn = conn_of(c);
    if (conn == NULL)
        return NULL;
    conn->req = REQ_NEW;
    conn_drop_body(conn);
    conn->target_len = uri != NULL ? strlen(uri) : 0;
    conn->bad_target = 0;
    return conn;
}

/*
 * MHD_OPTION_UNESCAPE_CALLBACK: libmicrohttpd's percent-decoding (of the
 * path and of each query key and value), noting a decoded NUL or control
 * character: a NUL would end the C string the routes are matched on, so
 * "/healthz%00x" would be served as /healthz.
 */
static size_t on_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    size_t n = MHD_http_unescape(s);
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (b < 0x20 || b == 0x7f) {
            http_conn *conn = conn_of(c);
            if (conn != NULL)
                conn->bad_target = 1;
            break;
        }
    }
    return n;
}

/*
 * The sweeper: every JS_HTTP_SWEEP_INTERVAL_MS, shuts down each connection
 * past the deadline of its phase. shutdown(2) wakes libmicrohttpd's poll on
 * that descriptor, it reads end-of-file and closes the connection itself. The
 * call is made under mu, and an entry leaves the list (under mu) before
 * libmicrohttpd closes its descriptor, so the descriptor is still the
 * connection's.
 */
static void sweep(void *arg)
{
    js_http *h = arg;
    pthread_mutex_lock(&h->mu);
    int64_t now = js_mono_ms();
    int64_t header_ms = atomic_load(&h->open) >= h->busy_connections
                            ? JS_HTTP_BUSY_HEADER_TIMEOUT_MS
                            : JS_HTTP_HEADER_TIMEOUT_MS;
    for (http_conn *conn = h->conns; conn != NULL; conn = conn->next) {
        int64_t limit = conn->phase == PHASE_HEADER ? header_ms : JS_HTTP_RESPONSE_TIMEOUT_MS;
        if (conn->shut || now - conn->since_ms < limit)
            continue;
        (void)shutdown(conn->fd, SHUT_RDWR);
        conn->shut = 1;
        atomic_fetch_add(conn->phase == PHASE_HEADER ? &h->header_deadline : &h->response_deadline,
                         1);
    }
    pthread_mutex_unlock(&h->mu);
}

/* ---- request checks ---------------------------------------------------------------- */

/*
 * Is v a valid Host field value? RFC 9110 section 7.2: uri-host [ ":" port ],
 * with uri-host a reg-name, IPv4address or IP-literal (RFC 3986 section
 * 3.2.2): only these characters. Empty is valid (RFC 9112 section 3.2).
 */
static int host_valid(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
            continue;
        if (strchr("-._~!$&'()*+,;=%:[]", *p) == NULL)
            return 0;
    }
    return 1;
}

typedef struct host_state {
    unsigned count;
    int invalid;
} host_state;

static enum MHD_Result host_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    host_state *s = cls;
    if (key != NULL && strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        s->count++;
        if (value == NULL || !host_valid(value))
            s->invalid = 1;
    }
    return MHD_YES;
}

/*
 * Why the request must be answered 400, or NULL. RFC 9112 section 3.2: 400
 * for an HTTP/1.1 request without Host, and for any request with more than
 * one Host or an invalid one (libmicrohttpd's strict mode also refuses a
 * missing Host; the rule is kept here too so it does not hang on a library
 * option). And a request target holding a NUL or a control character.
 */
static const char *request_problem(const http_conn *conn, struct MHD_Connection *c, const char *url,
                                   const char *version)
{
    /*
     * libmicrohttpd parses the request line in place (parse_initial_message_line
     * in connection.c): the target starts at url and ends at the NUL written over
     * the space before the version. If on_uri saw a shorter C string, the target
     * holds a NUL byte. Any other layout counts as a problem: fail closed.
     */
    uintptr_t u = (uintptr_t)url, v = (uintptr_t)version;
    if (v <= u || v - u - 1 != conn->target_len)
        return "NUL in the request target\n";
    if (conn->bad_target)
        return "control character in the request target\n";
    host_state hs = {0, 0};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, host_iter, &hs);
    if (hs.count > 1 || hs.invalid)
        return "invalid Host header\n";
    if (hs.count == 0 && strcmp(version, MHD_HTTP_VERSION_1_0) != 0)
        return "HTTP/1.1 request without Host header\n";
    return NULL;
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

/* Should this answer end the connection (age or request count, see http.h)? */
static int conn_retiring(const http_conn *conn)
{
    return conn->requests >= JS_HTTP_MAX_REQUESTS_PER_CONNECTION ||
           js_mono_ms() - conn->accepted_ms >= (int64_t)JS_HTTP_MAX_CONNECTION_AGE_SECONDS * 1000;
}

/* ---- routes ------------------------------------------------------------------------ */

/*
 * A cacheable JSON document (the JWKS, the discovery metadata): body (owned,
 * NULL = 503 with `unavailable`), Cache-Control public with the JWKS's
 * max-age, revalidated by ETag (RFC 9110 section 13.1.2).
 */
static enum MHD_Result serve_cached(js_http *h, struct MHD_Connection *c, char *body,
                                    const char *unavailable, int close)
{
    if (body == NULL)
        return respond_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, unavailable, close);
    char etag[ETAG_HEX + 3];
    if (!make_etag(body, strlen(body), etag)) {
        free(body);
        return respond_static(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n", close);
    }
    inm_state s = {etag, 0};
    (void)MHD_get_connection_values(c, MHD_HEADER_KIND, inm_iter, &s);
    /*
     * RFC 9110 section 15.4.5: a 304 has no content but repeats ETag and
     * Cache-Control. It is built from the 200's body so that its Content-Length
     * is the 200's (section 8.6); libmicrohttpd does not send the body.
     */
    return respond_owned(c, s.matched ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK,
                         s.matched ? NULL : TYPE_JSON, body, h->jwks_cache_control, etag, close);
}

/* RFC 7517 section 5: the JWK Set. */
static enum MHD_Result serve_jwks(js_http *h, struct MHD_Connection *c, int close)
{
    char *body = h->h.jwks != NULL ? h->h.jwks(h->h.ctx) : NULL;
    return serve_cached(h, c, body, "jwks unavailable\n", close);
}

/* OpenID Connect Discovery 1.0 section 4: the provider metadata, cached like the JWKS it names. */
static enum MHD_Result serve_discovery(js_http *h, struct MHD_Connection *c, int close)
{
    char *body = h->h.discovery != NULL ? h->h.discovery(h->h.ctx) : NULL;
    return serve_cached(h, c, body, "discovery unavailable\n", close);
}

static enum MHD_Result serve_health(js_http *h, struct MHD_Connection *c, int close)
{
    char *body = NULL;
    int ok = h->h.health != NULL ? h->h.health(h->h.ctx, &body) : 0;
    unsigned status = ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    if (body == NULL) {
        const char *text = ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unhealthy\"}";
        reply rp = {.status = status,
                    .type = TYPE_JSON,
                    .body = (char *)(uintptr_t)text,
                    .len = strlen(text),
                    .cache_control = "no-store",
                    .close = close};
        return respond(c, &rp);
    }
    return respond_owned(c, status, TYPE_JSON, body, "no-store", NULL, close);
}

static enum MHD_Result serve_metrics(js_http *h, struct MHD_Connection *c, int close)
{
    char *body = h->h.metrics != NULL ? h->h.metrics(h->h.ctx) : NULL;
    if (body == NULL)
        return respond_static(c, MHD_HTTP_SERVICE_UNAVAILABLE, "metrics unavailable\n", close);
    return respond_owned(c, MHD_HTTP_OK, TYPE_METRICS, body, "no-store", NULL, close);
}

/* ---- POST /introspect (RFC 7662) ---------------------------------------------------- */

/* The peer's address as gRPC writes it ("ipv4:ADDR:PORT", "ipv6:[ADDR]:PORT"),
 * so that the daemon keys its budgets the same way for both transports. */
static void peer_text(struct MHD_Connection *c, char out[PEER_MAX])
{
    snprintf(out, PEER_MAX, "unknown");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
    char a[INET6_ADDRSTRLEN];
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        if (inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a)) != NULL)
            snprintf(out, PEER_MAX, "ipv4:%s:%u", a, (unsigned)ntohs(in->sin_port));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof(a)) != NULL)
            snprintf(out, PEER_MAX, "ipv6:[%s]:%u", a, (unsigned)ntohs(in6->sin6_port));
    }
}

/*
 * The caller's identity from its TLS client certificate: GnuTLS verifies the
 * chain against the client CA bundle (MHD_OPTION_HTTPS_MEM_TRUST; validity
 * dates and the clientAuth purpose included), then certid.h reads the leaf's
 * names exactly as the gRPC listener does. Plain HTTP, no client CA, no certificate, or one that
 * does not verify: JS_EDENIED identity.none.
 */
static js_status peer_identity(const js_http *h, struct MHD_Connection *c, char *out, size_t cap,
                               js_err *err)
{
    out[0] = '\0';
    JS_ENSURE(h->client_ca != NULL, err, JS_EDENIED, JS_R_IDENTITY_NONE,
              h->tls_cert != NULL ? "no client CA configured (http.client_ca): the HTTP listener "
                                    "cannot authenticate clients"
                                  : "plain HTTP has no client authentication; introspection "
                                    "needs HTTPS with a client certificate (http.client_ca)");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t s = ci != NULL ? (gnutls_session_t)ci->tls_session : NULL;
    JS_ENSURE(s != NULL, err, JS_EDENIED, JS_R_IDENTITY_NONE, "no TLS session");
    JS_ENSURE(gnutls_certificate_type_get(s) == GNUTLS_CRT_X509, err, JS_EDENIED,
              JS_R_IDENTITY_NONE, "the client did not present an X.509 certificate");
    /* The chain to the trust list, validity dates, and the purpose: a
     * certificate whose extended key usage leaves out clientAuth (a server's
     * certificate from the same CA) does not authenticate a client
     * (RFC 5280 §4.2.1.12; one without the extension is good for any use). */
    gnutls_typed_vdata_st purpose = {.type = GNUTLS_DT_KEY_PURPOSE_OID,
                                     .data = (unsigned char *)(uintptr_t)GNUTLS_KP_TLS_WWW_CLIENT,
                                     .size = 0};
    unsigned status = 0;
    int rc = gnutls_certificate_verify_peers(s, &purpose, 1, &status);
    JS_ENSURE(rc != GNUTLS_E_NO_CERTIFICATE_FOUND, err, JS_EDENIED, JS_R_IDENTITY_NONE,
              "the client presented no certificate");
    JS_ENSURE(rc == GNUTLS_E_SUCCESS && status == 0, err, JS_EDENIED, JS_R_IDENTITY_NONE,
              "the client certificate does not verify against http.client_ca (GnuTLS status "
              "0x%x)",
              status);
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(s, &n);
    JS_ENSURE(chain != NULL && n > 0, err, JS_EDENIED, JS_R_IDENTITY_NONE,
              "the client presented no certificate");
    return identity_from_cert_der(chain[0].data, chain[0].size, out, cap, err);
}

/* The handler's answer (a JSON body, Cache-Control: no-store; RFC 7662 §2.2). */
static enum MHD_Result introspect_answer(js_http *h, struct MHD_Connection *c,
                                         const js_http_introspect_call *call, int close)
{
    char *json = NULL;
    unsigned status = h->h.introspect(h->h.ctx, call, &json);
    if (status < 200 || status > 599)
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    if (json == NULL) {
        static const char k_err[] = "{\"error\":\"server_error\"}";
        reply rp = {.status = MHD_HTTP_INTERNAL_SERVER_ERROR,
                    .type = TYPE_JSON,
                    .body = (char *)(uintptr_t)k_err,
                    .len = sizeof(k_err) - 1,
                    .cache_control = "no-store",
                    .close = close};
        return respond(c, &rp);
    }
    return respond_owned(c, status, TYPE_JSON, json, "no-store", NULL, close);
}

/* A call refused before its body is read (the connection then closes). */
static enum MHD_Result introspect_refuse(js_http *h, struct MHD_Connection *c, const char *identity,
                                         const js_err *problem)
{
    char peer[PEER_MAX];
    peer_text(c, peer);
    js_http_introspect_call call = {.identity = identity, .problem = problem, .peer = peer};
    return introspect_answer(h, c, &call, 1);
}

/*
 * The first call of a POST /introspect (headers only): refusals that need no
 * body are answered now, before any of it is read: no client identity (401),
 * a body not a form (400) or announced larger than JS_HTTP_FORM_MAX (413).
 */
static enum MHD_Result introspect_start(js_http *h, http_conn *conn, struct MHD_Connection *c,
                                        const char *method)
{
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        reply rp = {.status = MHD_HTTP_METHOD_NOT_ALLOWED,
                    .type = TYPE_TEXT,
                    .body = (char *)(uintptr_t) "method not allowed\n",
                    .len = strlen("method not allowed\n"),
                    .cache_control = "no-store",
                    .close = 1,
                    .allow = "POST"};
        return respond(c, &rp);
    }
    js_err err;
    js_err_clear(&err);
    if (peer_identity(h, c, conn->identity, sizeof(conn->identity), &err) != JS_OK)
        return introspect_refuse(h, c, NULL, &err);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!js_http_form_type_ok(ct)) {
        (void)js_err_set(&err, JS_EINVAL, JS_R_HTTP_FORM,
                         "the request body must be application/x-www-form-urlencoded (RFC 7662 "
                         "section 2.1)");
        return introspect_refuse(h, c, conn->identity, &err);
    }
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        /* libmicrohttpd has already refused a Content-Length that is not a number. */
        unsigned long long v = 0;
        int big = 0;
        for (const char *p = cl; *p >= '0' && *p <= '9'; p++) {
            v = v * 10 + (unsigned long long)(*p - '0');
            if (v > JS_HTTP_FORM_MAX) {
                big = 1;
                break;
            }
        }
        if (big) {
            (void)js_err_set(&err, JS_EINVAL, JS_R_HTTP_BODY_TOO_LARGE,
                             "the request body is larger than %d bytes", JS_HTTP_FORM_MAX);
            return introspect_refuse(h, c, conn->identity, &err);
        }
    }
    conn->req = REQ_BODY;
    return MHD_YES;
}

/*
 * The following calls: collects the body (at most JS_HTTP_FORM_MAX bytes;
 * a chunked body that grows past it is refused and the connection closed,
 * since libmicrohttpd cannot queue an answer in the middle of a body), then,
 * on the last call, parses the form and answers.
 */
static enum MHD_Result introspect_body(js_http *h, http_conn *conn, struct MHD_Connection *c,
                                       const char *data, size_t *size)
{
    js_err err;
    js_err_clear(&err);
    if (*size != 0) {
        size_t n = *size;
        *size = 0;
        if (conn->body_len + n > JS_HTTP_FORM_MAX) {
            conn->req = REQ_ANSWERED;
            conn_drop_body(conn);
            char peer[PEER_MAX];
            peer_text(c, peer);
            (void)js_err_set(&err, JS_EINVAL, JS_R_HTTP_BODY_TOO_LARGE,
                             "the request body is larger than %d bytes", JS_HTTP_FORM_MAX);
            js_http_introspect_call call = {
                .identity = conn->identity, .problem = &err, .peer = peer};
            char *json = NULL;
            (void)h->h.introspect(h->h.ctx, &call, &json); /* for its log line and metrics */
            free(json);
            return MHD_NO;
        }
        if (conn->body == NULL) {
            conn->body = malloc(JS_HTTP_FORM_MAX);
            if (conn->body == NULL)
                return MHD_NO;
        }
        memcpy(conn->body + conn->body_len, data, n);
        conn->body_len += n;
        return MHD_YES;
    }
    conn->req = REQ_ANSWERED;
    char peer[PEER_MAX];
    peer_text(c, peer);
    js_http_introspect_call call = {.identity = conn->identity, .peer = peer};
    char *token = NULL;
    size_t token_len = 0;
    if (js_http_form_token(conn->body, conn->body_len, &token, &token_len, &err) != JS_OK)
        call.problem = &err;
    call.token = token;
    call.token_len = token_len;
    enum MHD_Result ret =
        introspect_answer(h, c, &call, call.problem != NULL || conn_retiring(conn));
    if (token != NULL) {
        OPENSSL_cleanse(token, token_len);
        free(token);
    }
    conn_drop_body(conn);
    return ret;
}

typedef enum route { R_NONE, R_JWKS, R_OIDC, R_HEALTH, R_METRICS, R_INTROSPECT } route;

static route route_of(const char *url)
{
    if (strcmp(url, PATH_JWKS) == 0)
        return R_JWKS;
    if (strcmp(url, PATH_OIDC) == 0)
        return R_OIDC;
    if (strcmp(url, PATH_HEALTH) == 0)
        return R_HEALTH;
    if (strcmp(url, PATH_METRICS) == 0)
        return R_METRICS;
    if (strcmp(url, PATH_INTROSPECT) == 0)
        return R_INTROSPECT;
    return R_NONE;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    js_http *h = cls;
    http_conn *conn = *con_cls; /* from on_uri */
    if (conn == NULL)
        return MHD_NO; /* untracked (no memory when it was accepted): close it */

    switch (conn->req) {
    case REQ_NEW:
        /*
         * First call, headers only: the header deadline is met, the answer
         * deadline starts. Refusals are answered now, before any body is read.
         * A good request is answered on the next call, once libmicrohttpd has
         * seen the whole (empty) request, so that the connection can be kept alive.
         */
        conn_set_phase(h, conn, PHASE_ANSWER);
        conn->requests++;
        conn->req = REQ_ANSWERED;
        {
            const char *problem = request_problem(conn, c, url, version);
            if (problem != NULL) {
                atomic_fetch_add(&h->bad_requests, 1);
                return respond_static(c, MHD_HTTP_BAD_REQUEST, problem, 1);
            }
        }
        if (route_of(url) == R_NONE || (route_of(url) == R_INTROSPECT && h->h.introspect == NULL))
            return respond_static(c, MHD_HTTP_NOT_FOUND, "not found\n", conn_retiring(conn));
        if (route_of(url) == R_INTROSPECT)
            return introspect_start(h, conn, c, method);
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
            return respond_static(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", 1);
        if (has_body(c))
            return respond_static(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body not accepted\n", 1);
        conn->req = REQ_WAITING;
        return MHD_YES;
    case REQ_WAITING:
        if (*upload_data_size != 0) {
            *upload_data_size = 0; /* cannot happen: a request with a body was refused */
            return MHD_YES;
        }
        conn->req = REQ_ANSWERED;
        break;
    case REQ_BODY:
        return introspect_body(h, conn, c, upload_data, upload_data_size);
    case REQ_ANSWERED:
    default:
        /* Body bytes after an early refusal: drop them, the connection then closes. */
        *upload_data_size = 0;
        return MHD_YES;
    }

    int close = conn_retiring(conn);
    switch (route_of(url)) {
    case R_JWKS:
        return serve_jwks(h, c, close);
    case R_OIDC:
        return serve_discovery(h, c, close);
    case R_HEALTH:
        return serve_health(h, c, close);
    case R_METRICS:
        return serve_metrics(h, c, close);
    case R_INTROSPECT: /* answered from REQ_BODY */
    case R_NONE:
    default:
        return respond_static(c, MHD_HTTP_NOT_FOUND, "not found\n", close);
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

/* Stops the sweeper (if running) and frees; the daemon is already stopped. */
static void http_free(js_http *h)
{
    if (h == NULL)
        return;
    js_ticker_free(h->sweeper);
    if (h->mu_ready)
        pthread_mutex_destroy(&h->mu);
    if (h->tls_key != NULL) {
        OPENSSL_cleanse(h->tls_key, h->tls_key_len);
        free(h->tls_key);
    }
    free(h->tls_cert);
    free(h->client_ca);
    free(h);
}

/* The mutex and the sweeper thread. */
static js_status guard_start(js_http *h, js_err *err)
{
    h->mu_ready = pthread_mutex_init(&h->mu, NULL) == 0;
    JS_ENSURE(h->mu_ready, err, JS_EINTERNAL, JS_R_INTERNAL_OOM,
              "http: cannot create the connection guard's lock");
    /* The sweeper's first look comes one interval after this: no connection
     * is accepted before MHD_start_daemon, which runs after this. */
    h->sweeper = js_ticker_new(JS_HTTP_SWEEP_INTERVAL_MS, sweep, h);
    JS_ENSURE(h->sweeper != NULL, err, JS_EINTERNAL, JS_R_INTERNAL_OOM,
              "http: cannot start the connection sweeper thread");
    return JS_OK;
}

js_status js_http_start(const js_http_options *o, const js_http_handlers *hd, js_http **out,
                        js_err *err)
{
    JS_ENSURE(o != NULL && hd != NULL && out != NULL, err, JS_EINVAL, JS_R_HTTP_INVALID,
              "js_http_start: NULL argument");
    *out = NULL;
    int tls = o->tls_cert_file != NULL || o->tls_key_file != NULL;
    JS_ENSURE(!tls || (o->tls_cert_file != NULL && o->tls_key_file != NULL), err, JS_ECONFIG,
              JS_R_HTTP_TLS, "http TLS needs both a certificate file and a key file");
    JS_ENSURE(tls || o->tls_client_ca_file == NULL, err, JS_ECONFIG, JS_R_HTTP_TLS,
              "an http client CA needs TLS (a certificate and a key): client certificates "
              "only exist over TLS");
    JS_ENSURE(!tls || MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES, err, JS_ECONFIG,
              JS_R_HTTP_TLS, "http TLS requested but libmicrohttpd was built without TLS");

    js_http *h = calloc(1, sizeof(*h));
    JS_ENSURE_ALLOC(h, err);
    h->h = *hd;
    atomic_init(&h->log_done, 0);
    atomic_init(&h->open, 0);
    atomic_init(&h->accepted, 0);
    atomic_init(&h->header_deadline, 0);
    atomic_init(&h->response_deadline, 0);
    atomic_init(&h->bad_requests, 0);
    snprintf(h->jwks_cache_control, sizeof(h->jwks_cache_control), "public, max-age=%u",
             o->jwks_max_age);
    h->max_connections = o->max_connections > 0 && o->max_connections < JS_HTTP_CONNECTION_LIMIT
                             ? o->max_connections
                             : JS_HTTP_CONNECTION_LIMIT;
    /* JS_HTTP_BUSY_CONNECTIONS is three quarters of the default limit. */
    h->busy_connections = h->max_connections * 3 / 4;
    /* One address may hold a sixteenth of the slots (JS_HTTP_PER_IP_LIMIT of
     * the default 256), at least 2: eight attacking addresses then hold at
     * most half of them, whatever the limit. */
    h->per_ip = h->max_connections / 16 < 2 ? 2 : h->max_connections / 16;

    js_status st = JS_OK;
    size_t cert_len = 0;
    if (tls) {
        st = read_pem(o->tls_cert_file, "certificate", &h->tls_cert, &cert_len, err);
        if (st == JS_OK)
            st = read_pem(o->tls_key_file, "key", &h->tls_key, &h->tls_key_len, err);
        size_t ca_len = 0;
        if (st == JS_OK && o->tls_client_ca_file != NULL)
            st = read_pem(o->tls_client_ca_file, "client CA", &h->client_ca, &ca_len, err);
        if (st != JS_OK) {
            http_free(h);
            return st;
        }
    }

    struct sockaddr_storage sa;
    int ipv6 = 0;
    st = resolve_listen(o, tls, &sa, &ipv6, err);
    if (st == JS_OK)
        st = guard_start(h, err);
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
     * options come last: with plain HTTP they are replaced by the END marker. Strict mode 1
     * refuses a space in the request target and an HTTP/1.1 request without Host.
     */
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_log, h,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)JS_HTTP_THREADS, MHD_OPTION_CONNECTION_LIMIT, h->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, h->per_ip, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned int)JS_HTTP_LISTEN_BACKLOG, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)JS_HTTP_IDLE_TIMEOUT_SECONDS, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)JS_HTTP_MEMORY_LIMIT, MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        h, MHD_OPTION_URI_LOG_CALLBACK, on_uri, h, MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, h,
        tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, h->tls_cert, MHD_OPTION_HTTPS_MEM_KEY,
        h->tls_key,
        /* With a trust list libmicrohttpd asks each client for a certificate
         * (GNUTLS_CERT_REQUEST: one without is still served the JWKS) and
         * GnuTLS verifies it against the list (peer_identity). */
        h->client_ca != NULL ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, h->client_ca,
        MHD_OPTION_END);
    if (h->daemon == NULL) {
        st = js_err_set(err, JS_ECONFIG, JS_R_HTTP_START, "http listen '%s': cannot start: %s",
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

int js_http_listen_fd(const js_http *h)
{
    if (h == NULL || h->daemon == NULL)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    return info != NULL ? (int)info->listen_fd : -1;
}

int js_http_port(const js_http *h)
{
    return h != NULL ? h->port : 0;
}

void js_http_get_stats(const js_http *h, js_http_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (h == NULL)
        return;
    out->open = atomic_load(&h->open);
    out->accepted = atomic_load(&h->accepted);
    out->header_deadline = atomic_load(&h->header_deadline);
    out->response_deadline = atomic_load(&h->response_deadline);
    out->bad_requests = atomic_load(&h->bad_requests);
}

void js_http_stop(js_http *h)
{
    if (h == NULL)
        return;
    /*
     * libmicrohttpd first: it joins its threads and closes every connection, each
     * leaving the guard's list; then the sweeper stops (http_free).
     */
    if (h->daemon != NULL)
        MHD_stop_daemon(h->daemon);
    /* No handler runs any more: the daemon's context for them can go. */
    if (h->h.release != NULL)
        h->h.release(h->h.ctx);
    http_free(h);
}
