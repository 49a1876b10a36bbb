/*
 * test_http.c - unit tests for the HTTP endpoint (signer/http.h), started on
 * 127.0.0.1:0 with fake handlers and spoken to by a tiny raw-socket HTTP/1.1
 * client: JWKS 200 with Cache-Control and ETag, 304 on a matching
 * If-None-Match (exact, in a list, weak, "*", split over two fields) and 200
 * otherwise (RFC 7232 section 3.2); HEAD; healthz 200/503; the metrics
 * content type; 404, 405 with Allow, 413 for a body; the refusal of plain
 * HTTP off loopback; bad listen and TLS options; TLS really served; and
 * repeated start/stop without leaking descriptors.
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
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "http.h"

/* The tables of If-None-Match forms below are printf formats. */
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

#define JWKS_BODY "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\"}]}"
#define RESP_MAX  65536

/* ---- fake handlers ----------------------------------------------------------------- */

typedef struct fake {
    const char *jwks; /* NULL = no JWKS */
    atomic_int healthy;
    atomic_int calls;
} fake;

static char *fake_jwks(void *ctx)
{
    fake *f = ctx;
    atomic_fetch_add(&f->calls, 1);
    return f->jwks != NULL ? strdup(f->jwks) : NULL;
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
    (void)ctx;
    return strdup("# TYPE x counter\nx 1\n");
}

typedef struct fx {
    fake f;
    js_http *h;
    int port;
} fx;

static js_http *start(const char *listen, fake *f, js_err *err)
{
    js_http_handlers hd = {fake_jwks, fake_health, fake_metrics, f};
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
    atomic_init(&x->f.healthy, 1);
    js_err err = {0};
    x->h = start("127.0.0.1:0", &x->f, &err);
    if (x->h == NULL) {
        fprintf(stderr, "start: %s: %s\n", err.reason, err.msg);
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

/* Sends req verbatim (it should say Connection: close) and reads to EOF. */
static void http_raw(int port, const char *req, resp *r)
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
    size_t len = strlen(req);
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
    if (strcmp(err.reason, reason) != 0)
        fail_msg("'%s': %s: %s (wanted %s)", listen, err.reason, err.msg, reason);
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
            fail_msg("'%s': %s: %s", ok[i], err.reason, err.msg);
        assert_true(js_http_port(h) > 0);
        js_http_stop(h);
    }
    /* ::1 only where the host has IPv6 loopback; never refused as plain. */
    fake f = {.jwks = JWKS_BODY};
    js_err err = {0};
    js_http *h = start("[::1]:0", &f, &err);
    if (h == NULL)
        assert_string_equal(err.reason, "http.start");
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
    assert_string_equal(err.reason, "http.tls");
    js_http_options missing = {
        .listen = "0.0.0.0:0", .tls_cert_file = "/nonexistent", .tls_key_file = "/nonexistent"};
    assert_int_equal(js_http_start(&missing, &hd, &h, &err), JS_ECONFIG);
    assert_string_equal(err.reason, "http.tls");
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
            fail_msg("round %d: %s: %s", i, err.reason, err.msg);
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

/* A throwaway self-signed P-256 certificate for 127.0.0.1, written as PEM files. */
static void make_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    X509 *c = X509_new();
    assert_non_null(c);
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), 1);
    X509_gmtime_adj(X509_getm_notBefore(c), -60);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    X509_set_pubkey(c, k);
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(c, n);
    assert_true(X509_sign(c, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, c), 1);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    X509_free(c);
    EVP_PKEY_free(k);
}

static void test_tls_served_off_loopback(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_http_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cert[128], key[128];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    make_cert(cert, key);

    fake f = {.jwks = JWKS_BODY};
    atomic_init(&f.healthy, 1);
    js_http_handlers hd = {fake_jwks, fake_health, fake_metrics, &f};
    js_http_options o = {
        .listen = "0.0.0.0:0", .tls_cert_file = cert, .tls_key_file = key, .jwks_max_age = 60};
    js_http *h = NULL;
    js_err err = {0};
    if (js_http_start(&o, &hd, &h, &err) != JS_OK)
        fail_msg("%s: %s", err.reason, err.msg);
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
    assert_string_equal(err.reason, "http.start");
    assert_null(h);
    assert_int_equal(count_fds(), before);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jwks_200, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_304, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_200_on_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwks_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_route, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test(test_plain_refused_off_loopback),
        cmocka_unit_test(test_loopback_names_allowed),
        cmocka_unit_test_setup_teardown(test_bad_options, setup, teardown),
        cmocka_unit_test(test_start_stop_repeatedly),
        cmocka_unit_test(test_tls_served_off_loopback),
        cmocka_unit_test(test_tls_bad_material),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
