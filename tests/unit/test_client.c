/*
 * test_client.c - the client library (client/jwtsigner_client.h) without a
 * signer: calls that fail (connection refused: UNAVAILABLE) and calls that
 * reach their deadline (a peer that accepts TCP and never answers TLS:
 * DEADLINE_EXCEEDED), one after another and from many threads at once on one
 * handle. A handle reuses the completion queue of a finished call for the
 * next one, so these are the paths where a queue is handed on after a failed
 * call, including more calls in flight than the handle keeps idle queues for;
 * each call must still end with its own status, in bounded time, and
 * jwtsigner_client_free must return. Calls that succeed are covered by the
 * integration tests against a real signer (client_load, jwt-sign).
 * The token status calls (introspect, revoke-token) likewise: local refusals
 * before any network, then the transport's status.
 * The ExternalJWTSigner handle (jwtsigner_k8s_*) the same way over a Unix
 * socket: local refusals (bad path, bad claims) before any network, no socket
 * (UNAVAILABLE) and a socket nobody answers on (DEADLINE_EXCEEDED).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "jwtsigner_client.h"
#include "test_cert.h"

#define ST_INVALID_ARGUMENT  3
#define ST_DEADLINE_EXCEEDED 4
#define ST_UNAVAILABLE       14
/* More threads than the handle keeps idle queues (CQ_POOL_MAX, 64). */
#define MANY_THREADS 72
#define CLAIMS       "{\"sub\":\"u\"}"

typedef struct fixture {
    char dir[64];
    char ca[128], cert[128], key[128];
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_client.XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    snprintf(fx->cert, sizeof(fx->cert), "%s/cert.pem", fx->dir);
    snprintf(fx->key, sizeof(fx->key), "%s/key.pem", fx->dir);
    snprintf(fx->ca, sizeof(fx->ca), "%s", fx->cert);
    test_make_cert("localhost", fx->cert, fx->key);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    int rc = system(cmd);
    free(fx);
    return rc == 0 ? 0 : -1;
}

/*
 * A TCP listener on 127.0.0.1 that never accepts: the kernel completes the
 * TCP handshake and the TLS handshake then waits forever. *port gets its port.
 */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 128), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port on 127.0.0.1 where nothing listens (bound, then closed). */
static int closed_port(void)
{
    int port = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static jwtsigner_client *client_for(const fixture *fx, int port, int timeout_ms)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    jwtsigner_options o = {.target = target,
                           .ca_file = fx->ca,
                           .cert_file = fx->cert,
                           .key_file = fx->key,
                           .timeout_ms = timeout_ms};
    jwtsigner_status st;
    jwtsigner_client *c = jwtsigner_client_new(&o, &st);
    if (c == NULL)
        fail_msg("jwtsigner_client_new: %d %s", st.code, st.message);
    return c;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct caller {
    jwtsigner_client *c;
    int calls;
    int codes[4];
    double longest_s;
    pthread_t tid;
} caller;

static void *caller_main(void *arg)
{
    caller *k = arg;
    for (int i = 0; i < k->calls; i++) {
        jwtsigner_token tok;
        jwtsigner_status st;
        double t0 = now_s();
        k->codes[i] = jwtsigner_sign(k->c, CLAIMS, strlen(CLAIMS), NULL, NULL, &tok, &st);
        double dt = now_s() - t0;
        if (dt > k->longest_s)
            k->longest_s = dt;
        if (k->codes[i] != st.code || st.message[0] == '\0' || tok.jwt != NULL)
            k->codes[i] = -1;
        jwtsigner_token_clear(&tok);
    }
    return NULL;
}

/* Runs `threads` callers of `calls` calls each and checks every code is `want`. */
static void run_callers(jwtsigner_client *c, int threads, int calls, int want, double max_s)
{
    caller *ks = calloc((size_t)threads, sizeof(*ks));
    assert_non_null(ks);
    assert_true(calls <= 4);
    for (int t = 0; t < threads; t++) {
        ks[t].c = c;
        ks[t].calls = calls;
        assert_int_equal(pthread_create(&ks[t].tid, NULL, caller_main, &ks[t]), 0);
    }
    for (int t = 0; t < threads; t++)
        assert_int_equal(pthread_join(ks[t].tid, NULL), 0);
    for (int t = 0; t < threads; t++) {
        for (int i = 0; i < calls; i++)
            if (ks[t].codes[i] != want)
                fail_msg("thread %d call %d: code %d, want %d", t, i, ks[t].codes[i], want);
        if (ks[t].longest_s > max_s)
            fail_msg("thread %d: a call took %.3f s", t, ks[t].longest_s);
    }
    free(ks);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    jwtsigner_token tok;
    jwtsigner_status st;
    assert_int_equal(jwtsigner_sign(NULL, CLAIMS, strlen(CLAIMS), NULL, NULL, &tok, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(st.code, ST_INVALID_ARGUMENT);
    assert_null(tok.jwt);
    jwtsigner_client_free(NULL);
}

/* Connection refused: every call, first to last, is UNAVAILABLE with a message. */
static void test_refused_calls_reuse_queues(void **state)
{
    fixture *fx = *state;
    jwtsigner_client *c = client_for(fx, closed_port(), 5000);
    run_callers(c, 1, 4, ST_UNAVAILABLE, 5.0);
    run_callers(c, 1, 4, ST_UNAVAILABLE, 5.0);
    run_callers(c, MANY_THREADS, 2, ST_UNAVAILABLE, 5.0);
    run_callers(c, 1, 4, ST_UNAVAILABLE, 5.0);
    char *jwks = NULL;
    jwtsigner_status st;
    assert_int_equal(jwtsigner_jwks(c, &jwks, &st), ST_UNAVAILABLE);
    assert_null(jwks);
    jwtsigner_client_free(c);
}

/*
 * A peer that never answers: each call ends at its own deadline, including a
 * call on a queue whose previous call ended there, and calls beyond the pool.
 */
static void test_deadline_calls_reuse_queues(void **state)
{
    fixture *fx = *state;
    int port = 0;
    int lfd = silent_listener(&port);
    jwtsigner_client *c = client_for(fx, port, 200);
    double t0 = now_s();
    run_callers(c, 1, 3, ST_DEADLINE_EXCEEDED, 3.0);
    /* Three calls of 200 ms each, one after another. */
    assert_true(now_s() - t0 >= 0.55);
    run_callers(c, MANY_THREADS, 2, ST_DEADLINE_EXCEEDED, 5.0);
    run_callers(c, 2, 2, ST_DEADLINE_EXCEEDED, 3.0);
    jwtsigner_client_free(c);
    close(lfd);
}

/*
 * Token status (issue 13): Introspect and Admin RevokeToken. Bad arguments
 * fail locally, before any network (the handle's target has no listener and a
 * 5 s deadline, so a call that went out would be UNAVAILABLE instead); calls
 * that do go out end in the transport's status with nothing filled in.
 */
static void test_token_status_bad_arguments(void **state)
{
    fixture *fx = *state;
    jwtsigner_client *c = client_for(fx, closed_port(), 5000);
    jwtsigner_status st;
    jwtsigner_introspection in;
    jwtsigner_revoke_token_result rv;

    assert_int_equal(jwtsigner_introspect(NULL, "a.b.c", &in, &st), ST_INVALID_ARGUMENT);
    assert_int_equal(in.active, 0);
    assert_null(in.json);
    assert_int_equal(jwtsigner_introspect(c, NULL, &in, &st), ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_introspect(c, "", &in, &st), ST_INVALID_ARGUMENT);
    assert_int_equal(st.code, ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_introspect(c, "a.b.c", NULL, &st), ST_INVALID_ARGUMENT);

    assert_int_equal(jwtsigner_admin_revoke_token(NULL, JWTSIGNER_REVOKE_JTI, "j", NULL, &rv, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_admin_revoke_token(c, JWTSIGNER_REVOKE_SUB, "", "r", &rv, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_admin_revoke_token(c, JWTSIGNER_REVOKE_CALLER, NULL, "r", &rv, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_admin_revoke_token(c, (jwtsigner_revoke_what)9, "j", "r", &rv, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_admin_revoke_token(c, JWTSIGNER_REVOKE_JTI, "j", "r", NULL, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(rv.audit_seq, 0);
    assert_int_equal(rv.until, 0);

    /* Well-formed calls go out (both methods are registered on the handle). */
    assert_int_equal(jwtsigner_introspect(c, "a.b.c", &in, &st), ST_UNAVAILABLE);
    assert_null(in.json);
    for (int w = JWTSIGNER_REVOKE_JTI; w <= JWTSIGNER_REVOKE_CALLER; w++) {
        assert_int_equal(
            jwtsigner_admin_revoke_token(c, (jwtsigner_revoke_what)w, "v", NULL, &rv, &st),
            ST_UNAVAILABLE);
        assert_int_equal(rv.audit_seq, 0);
    }
    jwtsigner_introspection_clear(&in);
    jwtsigner_introspection_clear(NULL);
    jwtsigner_client_free(c);
}

/* A peer that never answers: the new methods end at the handle's deadline too. */
static void test_token_status_deadline(void **state)
{
    fixture *fx = *state;
    int port = 0;
    int lfd = silent_listener(&port);
    jwtsigner_client *c = client_for(fx, port, 200);
    jwtsigner_status st;
    jwtsigner_introspection in;
    jwtsigner_revoke_token_result rv;
    double t0 = now_s();
    assert_int_equal(jwtsigner_introspect(c, "a.b.c", &in, &st), ST_DEADLINE_EXCEEDED);
    assert_int_equal(
        jwtsigner_admin_revoke_token(c, JWTSIGNER_REVOKE_SUB, "alice", "test", &rv, &st),
        ST_DEADLINE_EXCEEDED);
    double dt = now_s() - t0;
    assert_true(dt >= 0.35 && dt < 3.0);
    assert_null(in.json);
    jwtsigner_client_free(c);
    close(lfd);
}

/* A Unix socket listener at path that never accepts: connect succeeds, nothing answers. */
static int silent_unix_listener(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof(a.sun_path));
    memcpy(a.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 128), 0);
    return fd;
}

static void test_k8s_bad_arguments(void **state)
{
    (void)state;
    jwtsigner_k8s *k = NULL;
    jwtsigner_status st;
    char path[200];

    assert_int_equal(jwtsigner_k8s_new("/tmp/x.sock", JWTSIGNER_K8S_V1, 0, NULL, &st),
                     ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_k8s_new(NULL, JWTSIGNER_K8S_V1, 0, &k, &st), ST_INVALID_ARGUMENT);
    assert_null(k);
    assert_int_equal(jwtsigner_k8s_new("", JWTSIGNER_K8S_V1, 0, &k, &st), ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_k8s_new("/tmp/x.sock", (jwtsigner_k8s_api)7, 0, &k, &st),
                     ST_INVALID_ARGUMENT);
    /* sun_path holds 107 bytes and a NUL: 108 is one too many. */
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[108] = '\0';
    assert_int_equal(jwtsigner_k8s_new(path, JWTSIGNER_K8S_V1, 0, &k, &st), ST_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "at most 107 bytes"));
    path[107] = '\0';
    assert_int_equal(jwtsigner_k8s_new(path, JWTSIGNER_K8S_V1, 0, &k, &st), 0);
    jwtsigner_k8s_free(k);
    k = NULL;
    /* The gRPC target is a URI: these would not reach connect(2) as written. */
    static const char *const uri_bytes[] = {"/tmp/a%2fb", "/tmp/a?b", "/tmp/a#b", "/tmp/a\nb"};
    for (size_t i = 0; i < sizeof(uri_bytes) / sizeof(uri_bytes[0]); i++) {
        assert_int_equal(jwtsigner_k8s_new(uri_bytes[i], JWTSIGNER_K8S_V1, 0, &k, &st),
                         ST_INVALID_ARGUMENT);
        assert_null(k);
    }

    /* Claims are refused before any network: no socket exists at this path. */
    assert_int_equal(
        jwtsigner_k8s_new("/nonexistent/k8s.sock", JWTSIGNER_K8S_V1ALPHA1, 100, &k, &st), 0);
    jwtsigner_k8s_token tok;
    static const char *const bad_claims[] = {"", "eyJ=", "eyJ.eyJ", "ey J", "eyJ+/"};
    for (size_t i = 0; i < sizeof(bad_claims) / sizeof(bad_claims[0]); i++) {
        assert_int_equal(jwtsigner_k8s_sign(k, bad_claims[i], &tok, &st), ST_INVALID_ARGUMENT);
        assert_int_equal(st.code, ST_INVALID_ARGUMENT);
        assert_null(tok.token);
    }
    char *big = malloc(JWTSIGNER_K8S_CLAIMS_MAX + 2);
    assert_non_null(big);
    memset(big, 'A', JWTSIGNER_K8S_CLAIMS_MAX + 1);
    big[JWTSIGNER_K8S_CLAIMS_MAX + 1] = '\0';
    assert_int_equal(jwtsigner_k8s_sign(k, big, &tok, &st), ST_INVALID_ARGUMENT);
    free(big);
    assert_int_equal(jwtsigner_k8s_sign(NULL, "eyJ9", &tok, &st), ST_INVALID_ARGUMENT);
    assert_int_equal(jwtsigner_k8s_sign(k, NULL, &tok, &st), ST_INVALID_ARGUMENT);
    jwtsigner_k8s_keys keys;
    assert_int_equal(jwtsigner_k8s_fetch_keys(NULL, &keys, &st), ST_INVALID_ARGUMENT);
    assert_int_equal(keys.count, 0);
    assert_int_equal(jwtsigner_k8s_metadata(k, NULL, &st), ST_INVALID_ARGUMENT);
    jwtsigner_k8s_free(k);
    jwtsigner_k8s_free(NULL);
    jwtsigner_k8s_token_clear(NULL);
    jwtsigner_k8s_keys_clear(NULL);
}

/* No socket: every method, both versions, is UNAVAILABLE at once; a relative path is made absolute.
 */
static void test_k8s_no_socket(void **state)
{
    fixture *fx = *state;
    char path[128];
    jwtsigner_status st;
    snprintf(path, sizeof(path), "%s/none.sock", fx->dir);
    for (int api = JWTSIGNER_K8S_V1; api <= JWTSIGNER_K8S_V1ALPHA1; api++) {
        jwtsigner_k8s *k = NULL;
        assert_int_equal(jwtsigner_k8s_new(path, (jwtsigner_k8s_api)api, 5000, &k, &st), 0);
        double t0 = now_s();
        jwtsigner_k8s_token tok;
        assert_int_equal(jwtsigner_k8s_sign(k, "eyJzdWIiOiJ1In0", &tok, &st), ST_UNAVAILABLE);
        assert_null(tok.token);
        jwtsigner_k8s_keys keys;
        assert_int_equal(jwtsigner_k8s_fetch_keys(k, &keys, &st), ST_UNAVAILABLE);
        assert_null(keys.keys);
        int64_t max = -1;
        assert_int_equal(jwtsigner_k8s_metadata(k, &max, &st), ST_UNAVAILABLE);
        assert_int_equal(max, 0);
        assert_true(now_s() - t0 < 4.0);
        jwtsigner_k8s_free(k);
    }

    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(fx->dir), 0);
    jwtsigner_k8s *k = NULL;
    assert_int_equal(jwtsigner_k8s_new("none.sock", JWTSIGNER_K8S_V1, 5000, &k, &st), 0);
    int64_t max = 0;
    assert_int_equal(jwtsigner_k8s_metadata(k, &max, &st), ST_UNAVAILABLE);
    /* gRPC names the target it dialled: the absolute path. */
    if (strstr(st.message, path) == NULL && strstr(st.transport, path) == NULL)
        fail_msg("no '%s' in '%s' / '%s'", path, st.message, st.transport);
    jwtsigner_k8s_free(k);
    assert_int_equal(chdir(cwd), 0);
}

/* A socket that accepts nothing: each call ends at the handle's deadline. */
static void test_k8s_deadline(void **state)
{
    fixture *fx = *state;
    char path[128];
    jwtsigner_status st;
    snprintf(path, sizeof(path), "%s/silent.sock", fx->dir);
    int lfd = silent_unix_listener(path);
    jwtsigner_k8s *k = NULL;
    assert_int_equal(jwtsigner_k8s_new(path, JWTSIGNER_K8S_V1, 200, &k, &st), 0);
    double t0 = now_s();
    int64_t max = 0;
    assert_int_equal(jwtsigner_k8s_metadata(k, &max, &st), ST_DEADLINE_EXCEEDED);
    jwtsigner_k8s_keys keys;
    assert_int_equal(jwtsigner_k8s_fetch_keys(k, &keys, &st), ST_DEADLINE_EXCEEDED);
    double dt = now_s() - t0;
    assert_true(dt >= 0.35 && dt < 3.0);
    jwtsigner_k8s_free(k);
    close(lfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test_setup_teardown(test_refused_calls_reuse_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_calls_reuse_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_status_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_status_deadline, setup, teardown),
        cmocka_unit_test(test_k8s_bad_arguments),
        cmocka_unit_test_setup_teardown(test_k8s_no_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_k8s_deadline, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
