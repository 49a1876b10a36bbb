/*
 * test_http.c - unit tests for the HTTP endpoint (signer/http/http.h), started on
 * 127.0.0.1:0 with fake handlers and spoken to by a tiny raw-socket HTTP/1.1
 * client: JWKS 200 with Cache-Control and ETag, 304 on a matching
 * If-None-Match (exact, in a list, weak, "*", split over two fields) and 200
 * otherwise (RFC 7232 section 3.2); HEAD; the OIDC discovery document served
 * through the same machinery (its own ETag, 304, HEAD, 503 without a
 * document or a handler, 404 for near-miss paths); healthz 200/503; the metrics
 * content type; 404, 405 with Allow, 413 for a body; the refusal of plain
 * HTTP off loopback; bad listen and TLS options; TLS really served; and
 * repeated start/stop without leaking descriptors.
 *
 * Hostile clients: a 304 carries the 200's Content-Length, never 0;
 * a NUL or control character in the request target (raw or percent-encoded)
 * and a missing, repeated or invalid Host are 400; oversized request lines and
 * headers, many headers, bodies, pipelining and connection retirement; and the
 * connection guard: slowloris connections (a header line now and then, nothing
 * at all, an idle keep-alive) are closed by the total header deadline while a
 * normal client is served at once, per-address limits hold with 200 slow
 * connections from 8 addresses, a client that does not read its response is
 * cut off by the response deadline, and no descriptor is ever shut down after
 * the server closed it and the process reused it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certid.h"
#include "clock.h"
#include "form.h"
#include "http.h"
#include "identity.h"
#include "test_cert.h"

/* The tables of If-None-Match forms below are printf formats. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

#define JWKS_BODY "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\"}]}"
#define OIDC_BODY "{\"issuer\":\"https://issuer.example\",\"jwks_uri\":\"https://j/\"}"
#define OIDC_PATH "/.well-known/openid-configuration"
#define RESP_MAX  65536

/* ---- fake handlers ----------------------------------------------------------------- */

typedef struct fake {
    const char *jwks;           /* NULL = no JWKS */
    _Atomic(const char *) oidc; /* NULL = no discovery document */
    atomic_int healthy;
    atomic_int calls;
    /* 0: a short text; else a body of this many bytes. Atomic: the test
     * changes it while the server's threads may be answering /metrics. */
    atomic_size_t metrics_size;
    /* The last POST /introspect the handler saw. */
    atomic_int introspect_calls;
    char last_identity[600];
    char last_reason[64];
    char last_token[512];
    size_t last_token_len;
    char last_peer[80];
} fake;

static char *fake_jwks(void *ctx)
{
    fake *f = ctx;
    atomic_fetch_add(&f->calls, 1);
    return f->jwks != NULL ? strdup(f->jwks) : NULL;
}

static char *fake_discovery(void *ctx)
{
    fake *f = ctx;
    const char *doc = atomic_load(&f->oidc);
    return doc != NULL ? strdup(doc) : NULL;
}

static int fake_health(void *ctx, char **body)
{
    fake *f = ctx;
    int ok = atomic_load(&f->healthy);
    *body =
        strdup(ok ? "{\"hsm\":\"ok\",\"audit\":\"ok\"}" : "{\"hsm\":\"ok\",\"audit\":\"fail\"}");
    return ok;
}

static char *fake_metrics(void *ctx)
{
    fake *f = ctx;
    size_t size = atomic_load(&f->metrics_size);
    if (size == 0)
        return strdup("# TYPE x counter\nx 1\n");
    char *big = malloc(size + 1);
    if (big != NULL) {
        memset(big, '#', size);
        big[size] = '\0';
    }
    return big;
}

/* The handler ran on an MHD thread and bumped introspect_calls after it
 * wrote the last_* fields: loading the counter here orders those writes
 * before the test's reads (the reply came back through a socket, which
 * ThreadSanitizer does not see as an ordering). */
static void fake_seen(fake *f)
{
    (void)atomic_load(&f->introspect_calls);
}

/* Records the call and answers like the daemon would: 401 / 400 / 413 for
 * a refusal, else 200 with the token's length. */
static unsigned fake_introspect(void *ctx, const js_http_introspect_call *call, char **json)
{
    fake *f = ctx;
    snprintf(f->last_identity, sizeof(f->last_identity), "%s",
             call->identity != NULL ? call->identity : "(none)");
    snprintf(f->last_reason, sizeof(f->last_reason), "%s",
             call->problem != NULL ? js_reason_name(call->problem->reason) : "ok");
    snprintf(f->last_peer, sizeof(f->last_peer), "%s", call->peer);
    f->last_token_len = call->token_len;
    f->last_token[0] = '\0';
    if (call->token != NULL && call->token_len < sizeof(f->last_token)) {
        memcpy(f->last_token, call->token, call->token_len);
        f->last_token[call->token_len] = '\0';
    }
    atomic_fetch_add(&f->introspect_calls, 1);
    char buf[128];
    unsigned status = 200;
    if (call->problem == NULL) {
        snprintf(buf, sizeof(buf), "{\"active\":false,\"len\":%zu}", call->token_len);
    } else {
        snprintf(buf, sizeof(buf), "{\"error\":\"%s\"}", js_reason_name(call->problem->reason));
        status = call->problem->reason == JS_R_HTTP_FORM             ? 400
                 : call->problem->reason == JS_R_HTTP_BODY_TOO_LARGE ? 413
                                                                     : 401;
    }
    *json = strdup(buf);
    return status;
}

typedef struct fx {
    fake f;
    js_http *h;
    int port;
} fx;

static js_http *start(const char *listen, fake *f, js_err *err)
{
    js_http_handlers hd = {.jwks = fake_jwks,
                           .discovery = fake_discovery,
                           .health = fake_health,
                           .metrics = fake_metrics,
                           .introspect = fake_introspect,
                           .ctx = f};
    js_http_options o = {.listen = listen, .jwks_max_age = 300};
    js_http *h = NULL;
    if (js_http_start(&o, &hd, &h, err) != JS_OK)
        return NULL;
    return h;
}

static int setup(void **state)
{
    fx *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return -1;
    x->f.jwks = JWKS_BODY;
    atomic_init(&x->f.oidc, OIDC_BODY);
    atomic_init(&x->f.healthy, 1);
    js_err err = {0};
    x->h = start("127.0.0.1:0", &x->f, &err);
    if (x->h == NULL) {
        fprintf(stderr, "start: %s: %s\n", js_reason_name(err.reason), err.msg);
        free(x);
        return -1;
    }
    x->port = js_http_port(x->h);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    js_http_stop(x->h);
    free(x);
    return 0;
}

/* ---- a tiny HTTP/1.1 client -------------------------------------------------------- */

typedef struct resp {
    int status;
    char raw[RESP_MAX];
    const char *headers; /* inside raw, after the status line */
    const char *body;    /* inside raw */
    size_t body_len;
} resp;

/* Sends len bytes of req verbatim (it should say Connection: close) and reads to EOF. */
static void http_rawn(int port, const char *req, size_t len, resp *r)
{
    memset(r, 0, sizeof(*r));
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(send(s, req, len, MSG_NOSIGNAL), (ssize_t)len);
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(s, r->raw + got, sizeof(r->raw) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == sizeof(r->raw) - 1)
            break;
    }
    close(s);
    r->raw[got] = '\0';
    assert_true(strncmp(r->raw, "HTTP/1.1 ", 9) == 0);
    r->status = (int)strtol(r->raw + 9, NULL, 10);
    r->headers = strstr(r->raw, "\r\n");
    assert_non_null(r->headers);
    const char *end = strstr(r->raw, "\r\n\r\n");
    assert_non_null(end);
    r->body = end + 4;
    r->body_len = got - (size_t)(r->body - r->raw);
}

static void http_raw(int port, const char *req, resp *r)
{
    http_rawn(port, req, strlen(req), r);
}

static void http_get(int port, const char *method, const char *path, const char *extra, resp *r)
{
    char req[2048];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\n%sConnection: close\r\n\r\n",
             method, path, extra != NULL ? extra : "");
    http_raw(port, req, r);
}

/* The value of header name (case-insensitive) into out, or 0 if absent. */
static int header(const resp *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *end = r->body - 2;
    for (const char *p = r->headers + 2; p < end;) {
        const char *eol = strstr(p, "\r\n");
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= outlen)
                vl = outlen - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 1;
        }
        p = eol + 2;
    }
    return 0;
}

static void assert_header(const resp *r, const char *name, const char *want)
{
    char v[512];
    if (!header(r, name, v, sizeof(v)))
        fail_msg("header %s missing in:\n%s", name, r->raw);
    assert_string_equal(v, want);
}

static void expected_etag(const char *body, char out[40])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(body, strlen(body), md, &mdlen, EVP_sha256(), NULL), 1);
    out[0] = '"';
    for (int i = 0; i < 16; i++)
        snprintf(out + 1 + 2 * i, 3, "%02x", md[i]);
    out[33] = '"';
    out[34] = '\0';
}

/* ---- JWKS -------------------------------------------------------------------------- */

static void test_jwks_200(void **state)
{
    fx *x = *state;
    resp r;
    char etag[40];
    expected_etag(JWKS_BODY, etag);
    http_get(x->port, "GET", "/.well-known/jwks.json", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "Cache-Control", "public, max-age=300");
    assert_header(&r, "ETag", etag);
    assert_int_equal(r.body_len, strlen(JWKS_BODY));
    assert_memory_equal(r.body, JWKS_BODY, r.body_len);
}

static void test_jwks_304(void **state)
{
    fx *x = *state;
    resp r;
    char etag[40], hdr[512];
    expected_etag(JWKS_BODY, etag);
    const char *forms[] = {"If-None-Match: %s\r\n",
                           "If-None-Match: \"0000\", %s\r\n",
                           "If-None-Match: \"a\",W/%s , \"b\"\r\n",
                           "if-none-match: W/%s\r\n",
                           "If-None-Match: \"a\"\r\nIf-None-Match: %s\r\n",
                           "If-None-Match: *\r\n%.0s"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        snprintf(hdr, sizeof(hdr), forms[i], etag);
        http_get(x->port, "GET", "/.well-known/jwks.json", hdr, &r);
        if (r.status != 304)
            fail_msg("form %zu: status %d for %s", i, r.status, hdr);
        assert_int_equal(r.body_len, 0);
        assert_header(&r, "ETag", etag);
        assert_header(&r, "Cache-Control", "public, max-age=300");
    }
}

static void test_jwks_200_on_mismatch(void **state)
{
    fx *x = *state;
    resp r;
    char etag[40], hdr[512];
    expected_etag(JWKS_BODY, etag);
    /* Other tags, a tag that is only a prefix of ours, malformed lists. */
    const char *forms[] = {
        "If-None-Match: \"deadbeef\"\r\n",   "If-None-Match: \"0123\", W/\"4567\"\r\n",
        "If-None-Match: %.9s\"\r\n",         "If-None-Match: garbage %s\r\n",
        "If-None-Match: \"unterminated\r\n", "If-Match: %s\r\n"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        snprintf(hdr, sizeof(hdr), forms[i], etag);
        http_get(x->port, "GET", "/.well-known/jwks.json", hdr, &r);
        if (r.status != 200)
            fail_msg("form %zu: status %d for %s", i, r.status, hdr);
        assert_int_equal(r.body_len, strlen(JWKS_BODY));
        assert_header(&r, "ETag", etag);
    }
}

static void test_jwks_head(void **state)
{
    fx *x = *state;
    resp r;
    char len[32];
    http_get(x->port, "HEAD", "/.well-known/jwks.json", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    snprintf(len, sizeof(len), "%zu", strlen(JWKS_BODY));
    assert_header(&r, "Content-Length", len);
    assert_header(&r, "Content-Type", "application/json");
}

static void test_jwks_unavailable(void **state)
{
    fx *x = *state;
    resp r;
    x->f.jwks = NULL;
    http_get(x->port, "GET", "/.well-known/jwks.json", NULL, &r);
    x->f.jwks = JWKS_BODY;
    assert_int_equal(r.status, 503);
    assert_header(&r, "Cache-Control", "no-store");
}

/* ---- OIDC discovery: the JWKS's caching machinery, its own body -------------------- */

static void test_discovery_200(void **state)
{
    fx *x = *state;
    resp r;
    char etag[40];
    expected_etag(OIDC_BODY, etag);
    http_get(x->port, "GET", OIDC_PATH, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "Cache-Control", "public, max-age=300");
    assert_header(&r, "ETag", etag);
    assert_int_equal(r.body_len, strlen(OIDC_BODY));
    assert_memory_equal(r.body, OIDC_BODY, r.body_len);
}

static void test_discovery_304_and_change(void **state)
{
    fx *x = *state;
    resp r;
    char etag[40], jwks_etag[40], hdr[512];
    expected_etag(OIDC_BODY, etag);
    snprintf(hdr, sizeof(hdr), "If-None-Match: %s\r\n", etag);
    http_get(x->port, "GET", OIDC_PATH, hdr, &r);
    assert_int_equal(r.status, 304);
    assert_int_equal(r.body_len, 0);
    assert_header(&r, "ETag", etag);
    assert_header(&r, "Cache-Control", "public, max-age=300");
    /* The 304's Content-Length is the 200's (RFC 9110 section 8.6). */
    char len[32];
    snprintf(len, sizeof(len), "%zu", strlen(OIDC_BODY));
    assert_header(&r, "Content-Length", len);
    /* The JWKS's tag does not revalidate the discovery document. */
    expected_etag(JWKS_BODY, jwks_etag);
    snprintf(hdr, sizeof(hdr), "If-None-Match: %s\r\n", jwks_etag);
    http_get(x->port, "GET", OIDC_PATH, hdr, &r);
    assert_int_equal(r.status, 200);
    /* A new document (a policy reload) gets a new tag: the old one is 200. */
    const char *next = "{\"issuer\":\"https://other.example\"}";
    atomic_store(&x->f.oidc, next);
    snprintf(hdr, sizeof(hdr), "If-None-Match: %s\r\n", etag);
    http_get(x->port, "GET", OIDC_PATH, hdr, &r);
    atomic_store(&x->f.oidc, OIDC_BODY);
    assert_int_equal(r.status, 200);
    char etag2[40];
    expected_etag(next, etag2);
    assert_header(&r, "ETag", etag2);
    assert_string_not_equal(etag, etag2);
    assert_int_equal(r.body_len, strlen(next));
}

static void test_discovery_head(void **state)
{
    fx *x = *state;
    resp r;
    char len[32];
    http_get(x->port, "HEAD", OIDC_PATH, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    snprintf(len, sizeof(len), "%zu", strlen(OIDC_BODY));
    assert_header(&r, "Content-Length", len);
    assert_header(&r, "Content-Type", "application/json");
}

static void test_discovery_refusals(void **state)
{
    fx *x = *state;
    resp r;
    /* No document: 503, not cached. */
    atomic_store(&x->f.oidc, NULL);
    http_get(x->port, "GET", OIDC_PATH, NULL, &r);
    atomic_store(&x->f.oidc, OIDC_BODY);
    assert_int_equal(r.status, 503);
    assert_header(&r, "Cache-Control", "no-store");
    /* Near misses of the path are 404; other methods 405; a body 413. */
    const char *near[] = {OIDC_PATH "/", "/.well-known/openid-configuration.json",
                          "/.well-known/OPENID-CONFIGURATION", "//.well-known/openid-configuration",
                          "/x/.well-known/openid-configuration"};
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        http_get(x->port, "GET", near[i], NULL, &r);
        if (r.status != 404)
            fail_msg("%s: status %d", near[i], r.status);
    }
    http_get(x->port, "POST", OIDC_PATH, NULL, &r);
    assert_int_equal(r.status, 405);
    http_get(x->port, "GET", OIDC_PATH, "Content-Length: 5\r\n", &r);
    assert_int_equal(r.status, 413);
}

static void test_discovery_no_handler(void **state)
{
    (void)state;
    fake f = {.jwks = JWKS_BODY};
    js_err err = {0};
    js_http_handlers hd = {.jwks = fake_jwks, .ctx = &f};
    js_http_options o = {.listen = "127.0.0.1:0", .jwks_max_age = 60};
    js_http *h = NULL;
    assert_int_equal(js_http_start(&o, &hd, &h, &err), JS_OK);
    resp r;
    http_get(js_http_port(h), "GET", OIDC_PATH, NULL, &r);
    assert_int_equal(r.status, 503);
    http_get(js_http_port(h), "GET", "/.well-known/jwks.json", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Cache-Control", "public, max-age=60");
    js_http_stop(h);
}

/* ---- healthz, metrics, errors ------------------------------------------------------ */

static void test_healthz(void **state)
{
    fx *x = *state;
    resp r;
    http_get(x->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "Cache-Control", "no-store");
    assert_string_equal(r.body, "{\"hsm\":\"ok\",\"audit\":\"ok\"}");
    atomic_store(&x->f.healthy, 0);
    http_get(x->port, "GET", "/healthz", NULL, &r);
    atomic_store(&x->f.healthy, 1);
    assert_int_equal(r.status, 503);
    assert_header(&r, "Cache-Control", "no-store");
    assert_string_equal(r.body, "{\"hsm\":\"ok\",\"audit\":\"fail\"}");
}

static void test_metrics_route(void **state)
{
    fx *x = *state;
    resp r;
    http_get(x->port, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    assert_string_equal(r.body, "# TYPE x counter\nx 1\n");
}

static void test_errors(void **state)
{
    fx *x = *state;
    resp r;
    http_get(x->port, "GET", "/nope", NULL, &r);
    assert_int_equal(r.status, 404);
    http_get(x->port, "GET", "/.well-known/jwks.json/", NULL, &r);
    assert_int_equal(r.status, 404);
    const char *methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        http_get(x->port, methods[i], "/metrics", NULL, &r);
        assert_int_equal(r.status, 405);
        assert_header(&r, "Allow", "GET, HEAD");
    }
    /* A POST with a body: refused, the body never reaches a handler. */
    http_raw(x->port,
             "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
             "hello",
             &r);
    assert_int_equal(r.status, 405);
    /* A GET announcing a body is refused too. */
    http_raw(x->port,
             "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
             "hello",
             &r);
    assert_int_equal(r.status, 413);
    /* The server still answers afterwards. */
    http_get(x->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
}

/* ---- start-up rules ---------------------------------------------------------------- */

static void expect_refusal(const char *listen, const char *reason)
{
    fake f = {.jwks = JWKS_BODY};
    js_err err = {0};
    js_http *h = start(listen, &f, &err);
    if (h != NULL) {
        js_http_stop(h);
        fail_msg("'%s' started", listen);
    }
    if (strcmp(js_reason_name(err.reason), reason) != 0)
        fail_msg("'%s': %s: %s (wanted %s)", listen, js_reason_name(err.reason), err.msg, reason);
    assert_int_equal(err.status, JS_ECONFIG);
}

static void test_plain_refused_off_loopback(void **state)
{
    (void)state;
    expect_refusal("0.0.0.0:0", "http.plain");
    expect_refusal(":0", "http.plain");
    expect_refusal("[::]:0", "http.plain");
    expect_refusal("192.0.2.1:0", "http.plain");
    js_err err = {0};
    fake f = {.jwks = JWKS_BODY};
    assert_int_equal(js_http_start(&(js_http_options){.listen = "0.0.0.0:0"},
                                   &(js_http_handlers){.ctx = &f}, &(js_http *){NULL}, &err),
                     JS_ECONFIG);
    assert_non_null(strstr(err.msg, "loopback"));
}

static void test_loopback_names_allowed(void **state)
{
    (void)state;
    const char *ok[] = {"localhost:0", "127.1.2.3:0", "LOCALHOST:0"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        fake f = {.jwks = JWKS_BODY};
        js_err err = {0};
        js_http *h = start(ok[i], &f, &err);
        if (h == NULL)
            fail_msg("'%s': %s: %s", ok[i], js_reason_name(err.reason), err.msg);
        assert_true(js_http_port(h) > 0);
        js_http_stop(h);
    }
    /* ::1 only where the host has IPv6 loopback; never refused as plain. */
    fake f = {.jwks = JWKS_BODY};
    js_err err = {0};
    js_http *h = start("[::1]:0", &f, &err);
    if (h == NULL)
        assert_string_equal(js_reason_name(err.reason), "http.start");
    js_http_stop(h);
}

static void test_bad_options(void **state)
{
    fx *x = *state;
    expect_refusal("", "http.listen");
    expect_refusal("127.0.0.1", "http.listen");
    expect_refusal("127.0.0.1:", "http.listen");
    expect_refusal("127.0.0.1:65536", "http.listen");
    expect_refusal("127.0.0.1:8x", "http.listen");
    expect_refusal("::1:80", "http.listen");
    expect_refusal("[::1:80", "http.listen");
    expect_refusal("no-such-host.invalid:0", "http.listen");
    /* The port our fixture holds is taken. */
    char busy[64];
    snprintf(busy, sizeof(busy), "127.0.0.1:%d", x->port);
    expect_refusal(busy, "http.start");

    fake f = {0};
    js_http_handlers hd = {.ctx = &f};
    js_http *h = NULL;
    js_err err = {0};
    js_http_options only_cert = {.listen = "0.0.0.0:0", .tls_cert_file = "/nonexistent"};
    assert_int_equal(js_http_start(&only_cert, &hd, &h, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "http.tls");
    js_http_options missing = {
        .listen = "0.0.0.0:0", .tls_cert_file = "/nonexistent", .tls_key_file = "/nonexistent"};
    assert_int_equal(js_http_start(&missing, &hd, &h, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "http.tls");
    assert_null(h);
    assert_int_equal(js_http_start(NULL, &hd, &h, &err), JS_EINVAL);
    js_http_stop(NULL);
    assert_int_equal(js_http_port(NULL), 0);
}

static size_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    size_t n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n;
}

static void test_start_stop_repeatedly(void **state)
{
    (void)state;
    size_t before = count_fds();
    for (int i = 0; i < 40; i++) {
        fake f = {.jwks = JWKS_BODY};
        atomic_init(&f.healthy, 1);
        js_err err = {0};
        js_http *h = start("127.0.0.1:0", &f, &err);
        if (h == NULL)
            fail_msg("round %d: %s: %s", i, js_reason_name(err.reason), err.msg);
        if (i % 8 == 0) {
            resp r;
            http_get(js_http_port(h), "GET", "/.well-known/jwks.json", NULL, &r);
            assert_int_equal(r.status, 200);
        }
        js_http_stop(h);
    }
    assert_int_equal(count_fds(), before);
}

/* ---- TLS --------------------------------------------------------------------------- */

static void test_tls_served_off_loopback(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_http_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cert[128], key[128];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    test_make_cert("127.0.0.1", cert, key);

    fake f = {.jwks = JWKS_BODY};
    atomic_init(&f.healthy, 1);
    js_http_handlers hd = {.jwks = fake_jwks,
                           .discovery = fake_discovery,
                           .health = fake_health,
                           .metrics = fake_metrics,
                           .ctx = &f};
    js_http_options o = {
        .listen = "0.0.0.0:0", .tls_cert_file = cert, .tls_key_file = key, .jwks_max_age = 60};
    js_http *h = NULL;
    js_err err = {0};
    if (js_http_start(&o, &hd, &h, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    int port = js_http_port(h);

    /* One HTTPS request with OpenSSL as the client. */
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_load_verify_locations(ctx, cert, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, s);
    assert_int_equal(SSL_connect(ssl), 1);
    const char req[] =
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(SSL_write(ssl, req, (int)strlen(req)), (int)strlen(req));
    char buf[4096];
    size_t got = 0;
    for (;;) {
        int n = SSL_read(ssl, buf + got, (int)(sizeof(buf) - 1 - got));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    SSL_free(ssl);
    close(s);
    SSL_CTX_free(ctx);
    js_http_stop(h);
    unlink(cert);
    unlink(key);
    rmdir(dir);
    assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
    assert_non_null(strstr(buf, "Cache-Control: public, max-age=60\r\n"));
    assert_non_null(strstr(buf, JWKS_BODY));
}

static void test_tls_bad_material(void **state)
{
    (void)state;
    char path[] = "/tmp/test_http_bad_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a pem\n", 10), 10);
    close(fd);
    size_t before = count_fds();
    fake f = {0};
    js_http_handlers hd = {.ctx = &f};
    js_http_options o = {.listen = "127.0.0.1:0", .tls_cert_file = path, .tls_key_file = path};
    js_http *h = NULL;
    js_err err = {0};
    assert_int_equal(js_http_start(&o, &hd, &h, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "http.start");
    assert_null(h);
    assert_int_equal(count_fds(), before);
    unlink(path);
}

/* ---- hostile clients --------------------------------------------------------------- */

static double mono_s(void)
{
    return (double)js_mono_ns() / 1e9;
}

/* A TCP connection to 127.0.0.1:port from the loopback address src (e.g. "127.0.0.2"). */
static int connect_from(const char *src, int port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in b = {0};
    b.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, src, &b.sin_addr), 1);
    assert_int_equal(bind(s, (struct sockaddr *)&b, sizeof(b)), 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    return s;
}

/* 1 if the peer has closed s (EOF or reset) within wait_ms, 0 if it is still open. */
static int peer_closed(int s, int wait_ms)
{
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, wait_ms) <= 0)
        return 0;
    char buf[4096];
    for (;;) {
        ssize_t n = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return 1;
        if (n < 0)
            return 0;
    }
}

/* A normal client is served at once while slow peers are held: this bound
 * leaves a sanitizer build on a loaded machine room and stays well under the
 * header deadlines the slow peers are held to (a client made to wait for
 * them would take that long). */
#define NORMAL_LATENCY_MAX_MS 1500
_Static_assert(NORMAL_LATENCY_MAX_MS < JS_HTTP_BUSY_HEADER_TIMEOUT_MS,
               "a normal client's bound must tell it from one held up by slow peers");

/* How long to poll for a state the server reaches on its own threads
 * (accepting, refusing over a limit, counting): a fixed sleep is too short
 * for a sanitizer build on a loaded machine; a poll ends once it holds. */
#define SETTLE_MS 3000 /* under the 5 s header deadline, which would end held connections */

static void sleep_10ms(void)
{
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls the server's count of open connections until it is want, at most
 * SETTLE_MS; returns the last count. */
static unsigned long wait_open(const js_http *h, unsigned long want)
{
    double until = mono_s() + SETTLE_MS / 1000.0;
    for (;;) {
        js_http_stats st;
        js_http_get_stats(h, &st);
        if (st.open == want || mono_s() >= until)
            return st.open;
        sleep_10ms();
    }
}

/*
 * Reads one response from a kept-alive connection: the header (a byte at a
 * time, so nothing of a pipelined next response is consumed), then
 * Content-Length bytes of body unless the response has none (HEAD, 304).
 * Returns 0 on EOF before a whole response.
 */
static int read_response(int s, int has_body, resp *r)
{
    memset(r, 0, sizeof(*r));
    size_t got = 0;
    while (got < 4 || memcmp(r->raw + got - 4, "\r\n\r\n", 4) != 0) {
        if (got == sizeof(r->raw) - 1 || recv(s, r->raw + got, 1, 0) != 1)
            return 0;
        got++;
    }
    r->raw[got] = '\0';
    r->status = (int)strtol(r->raw + 9, NULL, 10);
    r->headers = strstr(r->raw, "\r\n");
    r->body = r->raw + got;
    char cl[32];
    size_t want = 0;
    if (has_body && header(r, "Content-Length", cl, sizeof(cl)))
        want = (size_t)strtoul(cl, NULL, 10);
    if (want > sizeof(r->raw) - 1 - got)
        return 0;
    size_t head = got;
    while (got - head < want) {
        ssize_t n = recv(s, r->raw + got, want - (got - head), 0);
        if (n <= 0)
            return 0;
        got += (size_t)n;
    }
    r->raw[got] = '\0';
    r->body_len = got - head;
    return 1;
}

static void send_all(int s, const char *p, size_t len)
{
    assert_int_equal(send(s, p, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* RFC 9110 section 8.6: a 304 carries the 200's Content-Length or none, never 0. */
static void test_304_content_length(void **state)
{
    fx *x = *state;
    char etag[40], req[512], want[32];
    expected_etag(JWKS_BODY, etag);
    snprintf(want, sizeof(want), "%zu", strlen(JWKS_BODY));
    /* Kept alive: a 304 followed by a 200 on the same connection proves the framing. */
    int s = connect_from("127.0.0.1", x->port);
    resp r;
    for (int round = 0; round < 2; round++) {
        snprintf(req, sizeof(req),
                 "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nIf-None-Match: %s\r\n\r\n",
                 etag);
        send_all(s, req, strlen(req));
        assert_true(read_response(s, 0, &r));
        assert_int_equal(r.status, 304);
        char cl[32];
        if (header(&r, "Content-Length", cl, sizeof(cl)))
            assert_string_equal(cl, want);
        assert_header(&r, "ETag", etag);
        assert_header(&r, "Cache-Control", "public, max-age=300");
        assert_int_equal(r.body_len, 0);
        const char get[] = "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n";
        send_all(s, get, strlen(get));
        assert_true(read_response(s, 1, &r));
        assert_int_equal(r.status, 200);
        assert_header(&r, "Content-Length", want);
        assert_int_equal(r.body_len, strlen(JWKS_BODY));
        assert_memory_equal(r.body, JWKS_BODY, r.body_len);
    }
    close(s);
    /* HEAD with a matching tag: 304 too, same rule. */
    snprintf(req, sizeof(req), "If-None-Match: %s\r\n", etag);
    http_get(x->port, "HEAD", "/.well-known/jwks.json", req, &r);
    assert_int_equal(r.status, 304);
    char cl[32];
    if (header(&r, "Content-Length", cl, sizeof(cl)))
        assert_string_equal(cl, want);
}

/* A NUL or control character in the request target is 400, never a route. */
static void test_target_nul_and_controls(void **state)
{
    fx *x = *state;
    resp r;
    static const struct {
        const char *req;
        size_t len;
    } bad[] = {
#define RAW(s) {s, sizeof(s) - 1}
        RAW("GET /healthz\0/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /.well-known/jwks.json\0\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz?a=\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz%00/../x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /metrics?x=%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz%0d%0aX:%20y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz\x01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /healthz\x7f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        RAW("GET /heal\tthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
#undef RAW
    };
    js_http_stats before, after;
    js_http_get_stats(x->h, &before);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http_rawn(x->port, bad[i].req, bad[i].len, &r);
        if (r.status != 400)
            fail_msg("case %zu: status %d", i, r.status);
        if (strstr(r.body, "ok") != NULL)
            fail_msg("case %zu served a body: %s", i, r.body);
    }
    js_http_get_stats(x->h, &after);
    assert_int_equal(after.bad_requests - before.bad_requests, sizeof(bad) / sizeof(bad[0]));
    /* Percent-encoding that decodes to printable bytes, and a query, are fine. */
    http_get(x->port, "GET", "/%68ealthz", NULL, &r);
    assert_int_equal(r.status, 200);
    http_get(x->port, "GET", "/healthz?probe=1&x=%41", NULL, &r);
    assert_int_equal(r.status, 200);
    http_get(x->port, "GET", "/healthz%2fx", NULL, &r);
    assert_int_equal(r.status, 404);
}

/* RFC 9112 section 3.2: Host is required on HTTP/1.1, at most once, and valid. */
static void test_host_rules(void **state)
{
    fx *x = *state;
    resp r;
    const char *bad[] = {
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\"b\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\x01\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http_raw(x->port, bad[i], &r);
        if (r.status != 400)
            fail_msg("case %zu: status %d for %s", i, r.status, bad[i]);
    }
    const char *good[] = {
        "GET /healthz HTTP/1.0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nhost: jwks.example.com\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        http_raw(x->port, good[i], &r);
        if (r.status != 200)
            fail_msg("case %zu: status %d for %s", i, r.status, good[i]);
    }
}

/* Oversized request lines and headers, many headers, bodies: refused, bounded. */
static void test_request_size_limits(void **state)
{
    fx *x = *state;
    resp r;
    size_t cap = 4 * JS_HTTP_MEMORY_LIMIT;
    char *req = malloc(cap);
    assert_non_null(req);

    /* A request line longer than the connection's memory: 414. */
    int n = snprintf(req, cap, "GET /");
    memset(req + n, 'a', (size_t)JS_HTTP_MEMORY_LIMIT);
    n += JS_HTTP_MEMORY_LIMIT;
    n += snprintf(req + n, cap - (size_t)n, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    http_rawn(x->port, req, (size_t)n, &r);
    assert_int_equal(r.status, 414);

    /* One header field longer than the memory: 431. */
    n = snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'b', (size_t)JS_HTTP_MEMORY_LIMIT);
    n += JS_HTTP_MEMORY_LIMIT;
    n += snprintf(req + n, cap - (size_t)n, "\r\nConnection: close\r\n\r\n");
    http_rawn(x->port, req, (size_t)n, &r);
    assert_int_equal(r.status, 431);

    /* Thousands of tiny header fields: their list lives in the same memory, 431. */
    n = snprintf(req, cap, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 5000 && (size_t)n + 16 < cap - 64; i++)
        n += snprintf(req + n, cap - (size_t)n, "a%d: b\r\n", i);
    n += snprintf(req + n, cap - (size_t)n, "Connection: close\r\n\r\n");
    http_rawn(x->port, req, (size_t)n, &r);
    assert_int_equal(r.status, 431);
    free(req);

    /* Bodies: chunked, a huge length, a GET with a body. Never read, never served. */
    const char *bodies[] = {
        "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n"
        "Connection: close\r\n\r\n",
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        http_raw(x->port, bodies[i], &r);
        if (r.status != 413 && r.status != 400)
            fail_msg("case %zu: status %d", i, r.status);
    }
    /* Unknown and odd methods, HTTP/0.9 and 2.0 request lines. */
    http_get(x->port, "TRACE", "/healthz", NULL, &r);
    assert_int_equal(r.status, 405);
    http_get(x->port, "CONNECT", "/healthz", NULL, &r);
    assert_int_equal(r.status, 405);
    http_raw(x->port, "GET /healthz HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 505);
    /* Still serving. */
    http_get(x->port, "GET", "/healthz", NULL, &r);
    assert_int_equal(r.status, 200);
}

/* Pipelined requests are answered in order; a connection retires after its quota. */
static void test_pipelining_and_retirement(void **state)
{
    fx *x = *state;
    int s = connect_from("127.0.0.1", x->port);
    const char three[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                         "HEAD /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n"
                         "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(s, three, strlen(three));
    resp r;
    assert_true(read_response(s, 1, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"hsm\":\"ok\",\"audit\":\"ok\"}");
    assert_true(read_response(s, 0, &r));
    assert_int_equal(r.status, 200);
    assert_true(read_response(s, 1, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "# TYPE x counter\nx 1\n");

    /* 3 requests so far: the JS_HTTP_MAX_REQUESTS_PER_CONNECTION-th says close, then EOF. */
    const char one[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char v[32];
    for (int i = 4; i <= JS_HTTP_MAX_REQUESTS_PER_CONNECTION; i++) {
        send_all(s, one, strlen(one));
        assert_true(read_response(s, 1, &r));
        assert_int_equal(r.status, 200);
        int closing = header(&r, "Connection", v, sizeof(v)) && strcasecmp(v, "close") == 0;
        if (closing != (i == JS_HTTP_MAX_REQUESTS_PER_CONNECTION))
            fail_msg("request %d: Connection: close is %d", i, closing);
    }
    assert_true(peer_closed(s, 2000));
    close(s);
}

/* A slow peer. */
typedef struct slow {
    int s;
    double opened, closed; /* closed: 0 while open */
} slow;

/*
 * Slowloris: connections that send a request line and then one
 * header line every 500 ms, connections that send nothing, and a kept-alive
 * connection left idle after one answer are all closed by the header
 * deadline (a total, not restarted by the drip), while a normal client is
 * served at once. Meanwhile the test process (which shares its descriptor
 * table with the server) keeps recycling descriptor numbers with socket pairs:
 * none of them may ever be shut down by the server's sweeper.
 */
static void test_header_deadline(void **state)
{
    fx *x = *state;
    enum { DRIP = 6, SILENT = 3, PAIRS = 24 };
    slow drip[DRIP], silent[SILENT], idle;
    double t0 = mono_s();
    const char line[] = "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < DRIP; i++) {
        drip[i] = (slow){connect_from("127.0.0.2", x->port), mono_s(), 0};
        send_all(drip[i].s, line, strlen(line));
    }
    for (int i = 0; i < SILENT; i++)
        silent[i] = (slow){connect_from("127.0.0.3", x->port), mono_s(), 0};
    idle = (slow){connect_from("127.0.0.4", x->port), 0, 0};
    const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(idle.s, get, strlen(get));
    resp r;
    assert_true(read_response(idle.s, 1, &r));
    assert_int_equal(r.status, 200);
    idle.opened = mono_s(); /* the idle time counts from the end of the answer */

    int pairs[PAIRS][2];
    for (int i = 0; i < PAIRS; i++)
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]), 0);

    double worst_normal = 0;
    int open_left = DRIP + SILENT + 1;
    for (int tick = 0; open_left > 0 && mono_s() - t0 < 12.0; tick++) {
        /* Drip one header line per connection every 500 ms. */
        if (tick % 5 == 0)
            for (int i = 0; i < DRIP; i++)
                if (drip[i].closed == 0)
                    (void)send(drip[i].s, "X-Drip: 1\r\n", 11, MSG_NOSIGNAL);
        /* A normal client is served promptly throughout. */
        if (tick % 5 == 2) {
            double a = mono_s();
            http_get(x->port, "GET", "/.well-known/jwks.json", NULL, &r);
            assert_int_equal(r.status, 200);
            if (mono_s() - a > worst_normal)
                worst_normal = mono_s() - a;
        }
        /* Recycle descriptor numbers: close and reopen a few socket pairs. */
        for (int i = tick % 4; i < PAIRS; i += 4) {
            close(pairs[i][0]);
            close(pairs[i][1]);
            assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[i]), 0);
        }
        slow *all[DRIP + SILENT + 1];
        int n = 0;
        for (int i = 0; i < DRIP; i++)
            all[n++] = &drip[i];
        for (int i = 0; i < SILENT; i++)
            all[n++] = &silent[i];
        all[n++] = &idle;
        for (int i = 0; i < n; i++)
            if (all[i]->closed == 0 && peer_closed(all[i]->s, 0)) {
                all[i]->closed = mono_s();
                open_left--;
            }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    double lo = JS_HTTP_HEADER_TIMEOUT_MS / 1000.0;
    double hi = lo + 1.0;
    for (int i = 0; i < DRIP; i++) {
        double held = drip[i].closed - drip[i].opened;
        print_message("drip %d: closed after %.2f s\n", i, held);
        assert_true(drip[i].closed > 0 && held >= lo - 0.05 && held <= hi);
        close(drip[i].s);
    }
    for (int i = 0; i < SILENT; i++) {
        double held = silent[i].closed - silent[i].opened;
        print_message("silent %d: closed after %.2f s\n", i, held);
        assert_true(silent[i].closed > 0 && held >= lo - 0.05 && held <= hi);
        close(silent[i].s);
    }
    double held = idle.closed - idle.opened;
    print_message("idle keep-alive: closed %.2f s after its answer\n", held);
    assert_true(idle.closed > 0 && held >= lo - 0.1 && held <= hi);
    close(idle.s);
    print_message("normal client: worst latency %.1f ms\n", worst_normal * 1000);
    assert_true(worst_normal < NORMAL_LATENCY_MAX_MS / 1000.0);

    /* No socket pair was touched: each end still carries data both ways. */
    for (int i = 0; i < PAIRS; i++) {
        assert_int_equal(send(pairs[i][0], "p", 1, MSG_NOSIGNAL), 1);
        assert_int_equal(send(pairs[i][1], "q", 1, MSG_NOSIGNAL), 1);
        char c;
        assert_int_equal(recv(pairs[i][1], &c, 1, MSG_DONTWAIT), 1);
        assert_int_equal(recv(pairs[i][0], &c, 1, MSG_DONTWAIT), 1);
        close(pairs[i][0]);
        close(pairs[i][1]);
    }
    js_http_stats st;
    js_http_get_stats(x->h, &st);
    assert_true(st.header_deadline >= DRIP + SILENT + 1);
    assert_int_equal(st.open, 0);
}

/*
 * 200 slow connections from 8 addresses (127.0.0.2-.9): each address holds
 * at most JS_HTTP_PER_IP_LIMIT (the rest are closed at once), a client from
 * 127.0.0.1 is served promptly all along, and the held ones go at the deadline.
 */
static void test_per_address_limits(void **state)
{
    fx *x = *state;
    enum { ADDRS = 8, PER = 25 };
    int socks[ADDRS][PER];
    const char line[] = "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n";
    for (int a = 0; a < ADDRS; a++) {
        char src[16];
        snprintf(src, sizeof(src), "127.0.0.%d", a + 2);
        for (int i = 0; i < PER; i++) {
            socks[a][i] = connect_from(src, x->port);
            (void)send(socks[a][i], line, strlen(line), MSG_NOSIGNAL);
        }
    }
    double t0 = mono_s();
    /* Those over the per-address limit are closed at once (that is, long
     * before the header deadline closes the rest): polled until every
     * address holds exactly its limit, as the server accepts and refuses on
     * its own threads. */
    int per[ADDRS];
    for (double until = t0 + SETTLE_MS / 1000.0;;) {
        int settled = 1;
        for (int a = 0; a < ADDRS; a++) {
            per[a] = 0;
            for (int i = 0; i < PER; i++)
                per[a] += !peer_closed(socks[a][i], 0);
            settled = settled && per[a] == JS_HTTP_PER_IP_LIMIT;
        }
        if (settled || mono_s() >= until)
            break;
        sleep_10ms();
    }
    int held = 0;
    for (int a = 0; a < ADDRS; a++) {
        assert_int_equal(per[a], JS_HTTP_PER_IP_LIMIT);
        held += per[a];
    }
    /* The server's count follows its own closes: polled too. */
    assert_int_equal(wait_open(x->h, (unsigned long)held), (unsigned long)held);
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        double a0 = mono_s();
        resp r;
        http_get(x->port, "GET", "/.well-known/jwks.json", NULL, &r);
        assert_int_equal(r.status, 200);
        if (mono_s() - a0 > worst)
            worst = mono_s() - a0;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    print_message("%d slow connections held by 8 addresses; normal client worst %.1f ms\n", held,
                  worst * 1000);
    assert_true(worst < NORMAL_LATENCY_MAX_MS / 1000.0);
    /* All gone by the deadline. */
    double limit = JS_HTTP_HEADER_TIMEOUT_MS / 1000.0 + 1.0;
    for (int a = 0; a < ADDRS; a++)
        for (int i = 0; i < PER; i++) {
            double left = limit - (mono_s() - t0);
            assert_true(peer_closed(socks[a][i], left > 0 ? (int)(left * 1000) : 0));
            close(socks[a][i]);
        }
    print_message("all closed %.2f s after the attack began\n", mono_s() - t0);
}

/*
 * The documented worst case: peers on more addresses than
 * CONNECTION_LIMIT / PER_IP_LIMIT fill every slot. The server then holds at
 * most JS_HTTP_CONNECTION_LIMIT, switches to the busy header deadline, and a
 * normal client waits in the listen queue about that long, then is served.
 */
static void test_global_limit_busy(void **state)
{
    fx *x = *state;
    enum { ADDRS = 24, PER = JS_HTTP_PER_IP_LIMIT, N = ADDRS * PER };
    static int socks[N];
    const char line[] = "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n";
    double t0 = mono_s();
    for (int a = 0; a < ADDRS; a++) {
        char src[16];
        snprintf(src, sizeof(src), "127.0.1.%d", a + 1);
        for (int i = 0; i < PER; i++) {
            socks[a * PER + i] = connect_from(src, x->port);
            (void)send(socks[a * PER + i], line, strlen(line), MSG_NOSIGNAL);
        }
    }
    /* The server holds JS_HTTP_CONNECTION_LIMIT of them once it has
     * accepted that many (polled: it accepts on its own threads). */
    unsigned long n_open = wait_open(x->h, JS_HTTP_CONNECTION_LIMIT);
    assert_int_equal(n_open, JS_HTTP_CONNECTION_LIMIT);
    double a0 = mono_s();
    resp r;
    http_get(x->port, "GET", "/.well-known/jwks.json", NULL, &r);
    double waited = mono_s() - a0;
    assert_int_equal(r.status, 200);
    print_message("%d slow connections from %d addresses, %lu held; a normal client waited %.2f "
                  "s\n",
                  N, ADDRS, n_open, waited);
    assert_true(waited < JS_HTTP_BUSY_HEADER_TIMEOUT_MS / 1000.0 + 1.0);
    /* Everything queued or held is gone within two busy deadlines and a normal one. */
    double limit = (2 * JS_HTTP_BUSY_HEADER_TIMEOUT_MS + JS_HTTP_HEADER_TIMEOUT_MS) / 1000.0 + 1;
    for (int i = 0; i < N; i++) {
        double left = limit - (mono_s() - t0);
        assert_true(peer_closed(socks[i], left > 0 ? (int)(left * 1000) : 0));
        close(socks[i]);
    }
    print_message("all %d closed %.2f s after the attack began\n", N, mono_s() - t0);
}

/*
 * A client that sends a request and never reads the (large) answer is cut
 * off by the response deadline; a normal client is served meanwhile.
 */
static void test_response_deadline(void **state)
{
    fx *x = *state;
    atomic_store(&x->f.metrics_size, 32u << 20); /* more than any socket buffers hold */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    int small = 4096;
    assert_int_equal(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)x->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(s, req, strlen(req));
    double t0 = mono_s();
    js_http_stats st;
    for (;;) {
        js_http_get_stats(x->h, &st);
        if (st.response_deadline > 0 || mono_s() - t0 > JS_HTTP_RESPONSE_TIMEOUT_MS / 1000.0 + 3)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    double at = mono_s() - t0;
    print_message("non-reading client cut off after %.2f s\n", at);
    assert_int_equal(st.response_deadline, 1);
    assert_true(at >= JS_HTTP_RESPONSE_TIMEOUT_MS / 1000.0 - 0.2);
    atomic_store(&x->f.metrics_size, 0);
    resp r;
    http_get(x->port, "GET", "/metrics", NULL, &r);
    assert_int_equal(r.status, 200);
    close(s);
    /* The server closed its end: its count of open connections falls back to 0. */
    for (int i = 0; i < 50; i++) {
        js_http_get_stats(x->h, &st);
        if (st.open == 0)
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(st.open, 0);
}

/*
 * With TLS the handshake is part of the header deadline: a peer that opens a
 * connection and sends half a ClientHello, or nothing, is closed by it.
 */
static void test_tls_handshake_deadline(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_http_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cert[128], key[128];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    test_make_cert("127.0.0.1", cert, key);
    fake f = {.jwks = JWKS_BODY};
    atomic_init(&f.healthy, 1);
    js_http_handlers hd = {.jwks = fake_jwks,
                           .discovery = fake_discovery,
                           .health = fake_health,
                           .metrics = fake_metrics,
                           .ctx = &f};
    js_http_options o = {.listen = "127.0.0.1:0", .tls_cert_file = cert, .tls_key_file = key};
    js_http *h = NULL;
    js_err err = {0};
    if (js_http_start(&o, &hd, &h, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    int port = js_http_port(h);
    double t0 = mono_s();
    int silent = connect_from("127.0.0.5", port);
    int partial = connect_from("127.0.0.6", port);
    /* A TLS record header announcing a 512-byte handshake message, then 5 of its bytes. */
    send_all(partial, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03", 10);
    double lo = JS_HTTP_HEADER_TIMEOUT_MS / 1000.0 - 0.05, hi = lo + 1.5;
    assert_true(peer_closed(silent, (int)(hi * 1000)));
    double t_silent = mono_s() - t0;
    assert_true(peer_closed(partial, (int)((hi - t_silent) * 1000) + 1));
    double t_partial = mono_s() - t0;
    print_message("TLS: silent peer closed after %.2f s, half a ClientHello after %.2f s\n",
                  t_silent, t_partial);
    assert_true(t_silent >= lo && t_partial >= lo && t_partial <= hi);
    close(silent);
    close(partial);
    js_http_stop(h);
    unlink(cert);
    unlink(key);
    rmdir(dir);
}

/* ---- POST /introspect: the form (form.h) ------------------------------------------- */

static void test_form_parse(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *token; /* NULL = refused */
        js_reason why;
    } k_rows[] = {
        {"token=abc", "abc", JS_R_OK},
        {"token=a.b.c&token_type_hint=access_token", "a.b.c", JS_R_OK},
        {"token_type_hint=access_token&token=x", "x", JS_R_OK},
        {"foo=1&token=x&bar=%41&baz", "x", JS_R_OK}, /* others ignored */
        {"&&token=x&&", "x", JS_R_OK},               /* empty pairs skipped */
        {"token=a+b%2Bc%2e", "a b+c.", JS_R_OK},     /* '+' is a space */
        {"tok%65n=y", "y", JS_R_OK},                 /* names compare decoded */
        {"token=", "", JS_R_OK},                     /* empty: inactive, not an error */
        {"token", "", JS_R_OK},
        {"token=x=y", "x=y", JS_R_OK},
        {"token_type_hint_x=1&token=x", "x", JS_R_OK},
        {"", NULL, JS_R_HTTP_FORM},
        {"tokens=x", NULL, JS_R_HTTP_FORM},
        {"TOKEN=x", NULL, JS_R_HTTP_FORM},
        {"token=x&token=y", NULL, JS_R_HTTP_FORM},
        {"token=x&token", NULL, JS_R_HTTP_FORM},
        {"token=x&token_type_hint=a&token_type_hint=b", NULL, JS_R_HTTP_FORM},
        {"token=a%zz", NULL, JS_R_HTTP_FORM},
        {"token=a%4", NULL, JS_R_HTTP_FORM},
        {"token=a%", NULL, JS_R_HTTP_FORM},
        {"token=x&other=%g0", NULL, JS_R_HTTP_FORM}, /* strict everywhere */
        {"tok%6=x", NULL, JS_R_HTTP_FORM},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        char *tok = (char *)1;
        size_t n = 99;
        js_err err = {0};
        js_status st = js_http_form_token(k_rows[i].body, strlen(k_rows[i].body), &tok, &n, &err);
        if (k_rows[i].token == NULL) {
            if (st != JS_EINVAL || err.reason != k_rows[i].why)
                fail_msg("row %zu '%s': want refusal, got %d", i, k_rows[i].body, (int)st);
            assert_null(tok);
            assert_int_equal(n, 0);
        } else {
            if (st != JS_OK)
                fail_msg("row %zu '%s': %s", i, k_rows[i].body, err.msg);
            assert_int_equal(n, strlen(k_rows[i].token));
            assert_memory_equal(tok, k_rows[i].token, n);
            assert_int_equal(tok[n], '\0');
            free(tok);
        }
    }
    /* A decoded NUL stays in the token (its length says so). */
    char *tok = NULL;
    size_t n = 0;
    js_err err = {0};
    assert_int_equal(js_http_form_token("token=a%00b", 11, &tok, &n, &err), JS_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(tok, "a\0b", 3);
    free(tok);
    /* The size limit. */
    size_t big = JS_HTTP_FORM_MAX + 1;
    char *body = malloc(big);
    assert_non_null(body);
    memcpy(body, "token=", 6);
    memset(body + 6, 'a', big - 6);
    assert_int_equal(js_http_form_token(body, big, &tok, &n, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_HTTP_BODY_TOO_LARGE);
    assert_int_equal(js_http_form_token(body, big - 1, &tok, &n, &err), JS_OK);
    assert_int_equal(n, big - 1 - 6);
    free(tok);
    free(body);
}

static void test_form_type(void **state)
{
    (void)state;
    assert_true(js_http_form_type_ok("application/x-www-form-urlencoded"));
    assert_true(js_http_form_type_ok("Application/X-WWW-Form-Urlencoded"));
    assert_true(js_http_form_type_ok("application/x-www-form-urlencoded; charset=UTF-8"));
    assert_true(js_http_form_type_ok(" application/x-www-form-urlencoded ;charset=utf-8"));
    assert_false(js_http_form_type_ok(NULL));
    assert_false(js_http_form_type_ok(""));
    assert_false(js_http_form_type_ok("application/json"));
    assert_false(js_http_form_type_ok("application/x-www-form-urlencodedx"));
    assert_false(js_http_form_type_ok("multipart/form-data; boundary=x"));
}

/* ---- the client certificate's identity (certid.h) ---------------------------------- */

/* A self-signed certificate with the given names as DER (malloc'd). A URI
 * may hold a NUL: uri_lens gives each length (0 = strlen). */
static unsigned char *san_cert_der(const char *cn, const char *const *uris, const size_t *uri_lens,
                                   size_t nuris, const char *const *dns, size_t ndns, size_t *len)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 7);
    X509_gmtime_adj(X509_getm_notBefore(c), -60);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    X509_set_pubkey(c, k);
    X509_NAME *n = X509_get_subject_name(c);
    if (cn != NULL)
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c, n);
    if (nuris + ndns > 0) {
        GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
        for (size_t i = 0; i < nuris + ndns; i++) {
            GENERAL_NAME *g = GENERAL_NAME_new();
            ASN1_IA5STRING *v = ASN1_IA5STRING_new();
            const char *text = i < nuris ? uris[i] : dns[i - nuris];
            size_t tl =
                i < nuris && uri_lens != NULL && uri_lens[i] != 0 ? uri_lens[i] : strlen(text);
            assert_int_equal(ASN1_STRING_set(v, text, (int)tl), 1);
            GENERAL_NAME_set0_value(g, i < nuris ? GEN_URI : GEN_DNS, v);
            sk_GENERAL_NAME_push(gens, g);
        }
        assert_int_equal(X509_add1_ext_i2d(c, NID_subject_alt_name, gens, 0, 0), 1);
        GENERAL_NAMES_free(gens);
    }
    assert_true(X509_sign(c, k, EVP_sha256()) > 0);
    unsigned char *der = NULL;
    int dl = i2d_X509(c, &der);
    assert_true(dl > 0);
    unsigned char *out = malloc((size_t)dl + 1);
    memcpy(out, der, (size_t)dl);
    OPENSSL_free(der);
    X509_free(c);
    EVP_PKEY_free(k);
    *len = (size_t)dl;
    return out;
}

static void test_cert_identity(void **state)
{
    (void)state;
    static const char *const one_uri[] = {"spiffe://example.org/issuer-a"};
    static const char *const two_uris[] = {"spiffe://example.org/a", "spiffe://example.org/b"};
    static const char *const dns2[] = {"Login.Internal.Example", "other.example"};
    static const char *const bad_scheme[] = {"dns:evil.example"};
    static const char *const nul_uri[] = {"spiffe://x/issuer-a\0.evil"};
    static const size_t nul_len[] = {25};
    static const struct {
        const char *cn;
        const char *const *uris;
        const size_t *uri_lens;
        size_t nuris;
        const char *const *dns;
        size_t ndns;
        const char *want; /* NULL = refused with why */
        js_reason why;
    } k_rows[] = {
        {"cn-ignored", one_uri, NULL, 1, dns2, 2, "spiffe://example.org/issuer-a", JS_R_OK},
        {"cn-ignored", NULL, NULL, 0, dns2, 2, "dns:login.internal.example", JS_R_OK},
        {"legacy-batch", NULL, NULL, 0, NULL, 0, "cn:legacy-batch", JS_R_OK},
        {NULL, two_uris, NULL, 2, NULL, 0, NULL, JS_R_IDENTITY_AMBIGUOUS},
        {NULL, bad_scheme, NULL, 1, NULL, 0, NULL, JS_R_IDENTITY_AMBIGUOUS},
        {NULL, nul_uri, nul_len, 1, NULL, 0, NULL, JS_R_IDENTITY_INVALID},
        {NULL, NULL, NULL, 0, NULL, 0, NULL, JS_R_IDENTITY_NONE},
    };
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        size_t len = 0;
        unsigned char *der = san_cert_der(k_rows[i].cn, k_rows[i].uris, k_rows[i].uri_lens,
                                          k_rows[i].nuris, k_rows[i].dns, k_rows[i].ndns, &len);
        char out[IDENTITY_MAX + 1];
        js_err err = {0};
        js_status st = identity_from_cert_der(der, len, out, sizeof(out), &err);
        if (k_rows[i].want != NULL) {
            if (st != JS_OK)
                fail_msg("row %zu: %s", i, err.msg);
            assert_string_equal(out, k_rows[i].want);
        } else {
            if (st != JS_EDENIED || err.reason != k_rows[i].why)
                fail_msg("row %zu: want %s, got %d %s", i, js_reason_name(k_rows[i].why), (int)st,
                         js_reason_name(err.reason));
            assert_string_equal(out, "");
        }
        /* Not DER with trailing bytes, and a cut certificate. */
        if (i == 0) {
            der[len] = 0;
            assert_int_equal(identity_from_cert_der(der, len + 1, out, sizeof(out), &err),
                             JS_EDENIED);
            assert_int_equal(err.reason, JS_R_IDENTITY_INVALID);
            assert_int_equal(identity_from_cert_der(der, len - 1, out, sizeof(out), &err),
                             JS_EDENIED);
            assert_int_equal(identity_from_cert_der(der, 0, out, sizeof(out), &err), JS_EDENIED);
        }
        free(der);
    }
}

/* ---- POST /introspect over plain HTTP and over mTLS -------------------------------- */

static void test_introspect_plain(void **state)
{
    fx *x = *state;
    resp r;
    /* Plain HTTP has no client authentication: refused, the body never read. */
    const char req[] = "POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       "application/x-www-form-urlencoded\r\nContent-Length: 9\r\n"
                       "Connection: close\r\n\r\ntoken=abc";
    http_raw(x->port, req, &r);
    fake_seen(&x->f);
    assert_int_equal(r.status, 401);
    assert_header(&r, "Content-Type", "application/json");
    assert_header(&r, "Cache-Control", "no-store");
    assert_string_equal(x->f.last_identity, "(none)");
    assert_string_equal(x->f.last_reason, "identity.none");
    assert_int_equal(x->f.last_token_len, 0);
    assert_true(strncmp(x->f.last_peer, "ipv4:127.0.0.1:", 15) == 0);
    /* Only POST; other routes keep GET and HEAD. */
    http_get(x->port, "GET", "/introspect", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "POST");
    http_get(x->port, "POST", "/metrics", NULL, &r);
    assert_int_equal(r.status, 405);
    assert_header(&r, "Allow", "GET, HEAD");
    http_get(x->port, "POST", "/introspect/", NULL, &r);
    assert_int_equal(r.status, 404);
}

static void test_introspect_no_handler(void **state)
{
    (void)state;
    fake f = {.jwks = JWKS_BODY};
    js_http_handlers hd = {.jwks = fake_jwks, .ctx = &f};
    js_http_options o = {.listen = "127.0.0.1:0"};
    js_http *h = NULL;
    js_err err = {0};
    assert_int_equal(js_http_start(&o, &hd, &h, &err), JS_OK);
    resp r;
    http_get(js_http_port(h), "POST", "/introspect", NULL, &r);
    assert_int_equal(r.status, 404);
    js_http_stop(h);
    /* A client CA needs TLS. */
    o.tls_client_ca_file = "/nonexistent";
    assert_int_equal(js_http_start(&o, &hd, &h, &err), JS_ECONFIG);
    assert_int_equal(err.reason, JS_R_HTTP_TLS);
}

static int g_released;
static void count_release(void *ctx)
{
    (void)ctx;
    g_released++;
}

/* One request over TLS, with a client certificate when cert != NULL; reads
 * to EOF (or until the server closes). r->status 0 = no answer at all. */
static void tls_rawn(int port, const char *cert, const char *key, const char *req, size_t len,
                     resp *r)
{
    memset(r, 0, sizeof(*r));
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    if (cert != NULL) {
        assert_int_equal(SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, s);
    assert_int_equal(SSL_connect(ssl), 1);
    size_t off = 0;
    while (off < len) {
        int n = SSL_write(ssl, req + off, (int)(len - off > 16384 ? 16384 : len - off));
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    size_t got = 0;
    for (;;) {
        int n = SSL_read(ssl, r->raw + got, (int)(sizeof(r->raw) - 1 - got));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    r->raw[got] = '\0';
    SSL_free(ssl);
    close(s);
    SSL_CTX_free(ctx);
    if (got == 0)
        return;
    assert_true(strncmp(r->raw, "HTTP/1.1 ", 9) == 0);
    r->status = (int)strtol(r->raw + 9, NULL, 10);
    r->headers = strstr(r->raw, "\r\n");
    const char *end = strstr(r->raw, "\r\n\r\n");
    assert_non_null(end);
    r->body = end + 4;
    r->body_len = got - (size_t)(r->body - r->raw);
}

static void post_form(int port, const char *cert, const char *key, const char *type,
                      const char *body, resp *r)
{
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     type, strlen(body), body);
    assert_true(n > 0 && (size_t)n < sizeof(req));
    tls_rawn(port, cert, key, req, (size_t)n, r);
}

static void test_introspect_mtls(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_http_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char scert[128], skey[128], ccert[128], ckey[128], ocert[128], okey[128];
    snprintf(scert, sizeof(scert), "%s/server.pem", dir);
    snprintf(skey, sizeof(skey), "%s/server.key", dir);
    snprintf(ccert, sizeof(ccert), "%s/client.pem", dir);
    snprintf(ckey, sizeof(ckey), "%s/client.key", dir);
    snprintf(ocert, sizeof(ocert), "%s/other.pem", dir);
    snprintf(okey, sizeof(okey), "%s/other.key", dir);
    test_make_cert("127.0.0.1", scert, skey);
    test_make_cert("introspector-a", ccert, ckey);
    test_make_cert("introspector-a", ocert, okey); /* same name, not trusted */

    fake f = {.jwks = JWKS_BODY};
    atomic_init(&f.healthy, 1);
    g_released = 0;
    /* The client's self-signed certificate is the whole trust list. */
    js_http_handlers hd = {
        .jwks = fake_jwks, .introspect = fake_introspect, .release = count_release, .ctx = &f};
    js_http_options o = {.listen = "127.0.0.1:0",
                         .tls_cert_file = scert,
                         .tls_key_file = skey,
                         .tls_client_ca_file = ccert};
    js_http *h = NULL;
    js_err err = {0};
    if (js_http_start(&o, &hd, &h, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    int port = js_http_port(h);
    const char *form = "application/x-www-form-urlencoded";
    resp r;

    /* The JWKS needs no client certificate. */
    const char get[] =
        "GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tls_rawn(port, NULL, NULL, get, strlen(get), &r);
    fake_seen(&f);
    assert_int_equal(r.status, 200);
    /* No client certificate, or one that does not chain to the CA: 401. */
    post_form(port, NULL, NULL, form, "token=abc", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 401);
    assert_string_equal(f.last_reason, "identity.none");
    post_form(port, ocert, okey, form, "token=abc", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 401);
    assert_string_equal(f.last_reason, "identity.none");
    assert_string_equal(f.last_identity, "(none)");
    /* The introspector: its identity and the decoded token reach the handler. */
    post_form(port, ccert, ckey, form, "token=a.b%2Ec+d&token_type_hint=access_token&x=1", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 200);
    assert_header(&r, "Cache-Control", "no-store");
    assert_header(&r, "Content-Type", "application/json");
    assert_string_equal(f.last_identity, "cn:introspector-a");
    assert_string_equal(f.last_reason, "ok");
    assert_string_equal(f.last_token, "a.b.c d");
    /* Malformed requests: 400, with the caller's identity for the log. */
    post_form(port, ccert, ckey, form, "token=a%zz", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 400);
    assert_string_equal(f.last_reason, "http.form");
    assert_string_equal(f.last_identity, "cn:introspector-a");
    post_form(port, ccert, ckey, "application/json", "{\"token\":\"x\"}", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 400);
    post_form(port, ccert, ckey, form, "nothing=here", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 400);
    /* An empty body (Content-Length: 0) has no token. */
    post_form(port, ccert, ckey, form, "", &r);
    fake_seen(&f);
    assert_int_equal(r.status, 400);
    /* Announced larger than 64 KiB: 413 before any of it is read. */
    char big[512];
    int n = snprintf(big, sizeof(big),
                     "POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                     "Content-Length: 1048576\r\nConnection: close\r\n\r\ntoken=",
                     form);
    tls_rawn(port, ccert, ckey, big, (size_t)n, &r);
    fake_seen(&f);
    assert_int_equal(r.status, 413);
    assert_string_equal(f.last_reason, "http.body_too_large");
    /* Exactly 64 KiB is read and parsed. */
    size_t blen = JS_HTTP_FORM_MAX;
    char *body = malloc(blen + 1);
    memcpy(body, "token=", 6);
    memset(body + 6, 'q', blen - 6);
    body[blen] = '\0';
    char *req = malloc(blen + 512);
    n = snprintf(req, blen + 512,
                 "POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 form, blen, body);
    tls_rawn(port, ccert, ckey, req, (size_t)n, &r);
    fake_seen(&f);
    assert_int_equal(r.status, 200);
    assert_int_equal(f.last_token_len, blen - 6);
    /* A chunked body that grows past 64 KiB: the connection is closed. */
    int before = atomic_load(&f.introspect_calls);
    size_t ccap = 100 * 1024, clen = 0;
    char *chunked = malloc(ccap);
    assert_non_null(chunked);
    clen += (size_t)snprintf(chunked, ccap,
                             "POST /introspect HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                             form);
    for (int i = 0; i < 9; i++) { /* 72 KiB */
        clen += (size_t)snprintf(chunked + clen, ccap - clen, "2000\r\n");
        memset(chunked + clen, 'z', 0x2000);
        clen += 0x2000;
        memcpy(chunked + clen, "\r\n", 2);
        clen += 2;
    }
    assert_true(clen < ccap);
    tls_rawn(port, ccert, ckey, chunked, clen, &r);
    fake_seen(&f);
    assert_int_equal(r.status, 0);
    assert_int_equal(atomic_load(&f.introspect_calls), before + 1);
    assert_string_equal(f.last_reason, "http.body_too_large");
    free(chunked);
    free(req);
    free(body);

    js_http_stop(h);
    assert_int_equal(g_released, 1);
    const char *files[] = {scert, skey, ccert, ckey, ocert, okey};
    for (size_t i = 0; i < 6; i++)
        unlink(files[i]);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jwks_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_304, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_200_on_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discovery_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discovery_304_and_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discovery_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_discovery_refusals, setup, teardown),
        cmocka_unit_test(test_discovery_no_handler),
        cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test(test_plain_refused_off_loopback),
        cmocka_unit_test(test_loopback_names_allowed),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test(test_start_stop_repeatedly),
        cmocka_unit_test(test_tls_served_off_loopback),
        cmocka_unit_test(test_tls_bad_material),
        cmocka_unit_test_setup_teardown(test_304_content_length, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_nul_and_controls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_size_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_and_retirement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_per_address_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_global_limit_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_deadline, setup, teardown),
        cmocka_unit_test(test_tls_handshake_deadline),
        cmocka_unit_test(test_form_parse),
        cmocka_unit_test(test_form_type),
        cmocka_unit_test(test_cert_identity),
        cmocka_unit_test_setup_teardown(test_introspect_plain, setup, teardown),
        cmocka_unit_test(test_introspect_no_handler),
        cmocka_unit_test(test_introspect_mtls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
