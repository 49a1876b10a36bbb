/*
 * jwtsigner_client.c - blocking unary gRPC calls to jwt-signer over mTLS, on
 * the gRPC C core.
 *
 * This is the only client file that calls grpc_* (the core API changes between
 * gRPC minor versions). A handle owns one channel and the methods of the
 * Signer, Admin and Status services, registered once at connect. Every call goes
 * through unary_call(): it runs one batch on a pluck completion queue of its
 * own for the call's duration, the way gRPC's own blocking C++ stub does, so
 * concurrent calls on one handle share nothing mutable but the channel, which
 * gRPC makes thread-safe, and the handle's pool of idle completion queues.
 * Creating and destroying a queue per call (a pollset, its mutexes, a shutdown
 * and drain) was a fixed cost on every token; a queue whose every operation
 * has been plucked holds nothing of the call that used it, so it is kept for
 * the next call instead.
 * The public functions only build a request message and check the reply
 * against the contract in proto/jwtsigner/v1/signer.proto.
 *
 * The Kubernetes ExternalJWTSigner handle (jwtsigner_k8s_*) is the same
 * client on another channel -- insecure gRPC to a "unix:" target, as
 * kube-apiserver dials it -- with the three methods of that service
 * registered instead (proto/externaljwt/v1/api.proto; v1alpha1 has the same
 * messages under another package name, so only the method paths differ). Its
 * calls go through the same unary_call(), queue pool and status handling.
 */
#include "jwtsigner_client.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "externaljwt/v1/api.pb-c.h"
#include "jwtsigner/v1/signer.pb-c.h"

/* PEM files larger than this are refused: a CA bundle or a key is a few KiB. */
#define PEM_FILE_MAX       (1024 * 1024)
#define DEFAULT_TIMEOUT_MS 5000
/*
 * Extra time the client waits for the batch beyond the call's own deadline.
 * gRPC ends the call at its deadline; this only guards against a core bug
 * leaving us blocked, after which the call is cancelled and awaited.
 */
#define PLUCK_GRACE_MS 10000

/*
 * Idle completion queues a handle keeps for reuse. Calls beyond this many in
 * flight at once still work: their queues are created and destroyed per call,
 * as without the pool. Each idle queue is a few hundred bytes.
 */
#define CQ_POOL_MAX 64

/* A SHA-256 in hex, as ReloadPolicyResponse.sha256 carries it. */
#define SHA256_HEX_LEN 64

/* Every method this client calls; the index into method_paths and c->methods. */
typedef enum method_id {
    M_SIGN_JWT,
    M_GET_JWKS,
    M_ROTATE_KEY,
    M_REVOKE_KEY,
    M_SET_INCIDENT_MODE,
    M_FREEZE_CALLER,
    M_UNFREEZE_CALLER,
    M_RELOAD_POLICY,
    M_GET_STATUS,
    M_ROTATE_AUDIT_KEY,
    M_REVOKE_TOKEN,
    M_INTROSPECT,
    /* k8s.io/externaljwt ExternalJWTSigner: registered on a jwtsigner_k8s handle only. */
    M_K8S_SIGN,
    M_K8S_FETCH_KEYS,
    M_K8S_METADATA,
    M_COUNT
} method_id;

/* The first ExternalJWTSigner method; those before it belong to the mTLS handle. */
#define M_K8S_FIRST M_K8S_SIGN

static const char *const method_paths[M_COUNT] = {
    [M_SIGN_JWT] = "/jwtsigner.v1.Signer/SignJwt",
    [M_GET_JWKS] = "/jwtsigner.v1.Signer/GetJwks",
    [M_ROTATE_KEY] = "/jwtsigner.v1.Admin/RotateKey",
    [M_REVOKE_KEY] = "/jwtsigner.v1.Admin/RevokeKey",
    [M_SET_INCIDENT_MODE] = "/jwtsigner.v1.Admin/SetIncidentMode",
    [M_FREEZE_CALLER] = "/jwtsigner.v1.Admin/FreezeCaller",
    [M_UNFREEZE_CALLER] = "/jwtsigner.v1.Admin/UnfreezeCaller",
    [M_RELOAD_POLICY] = "/jwtsigner.v1.Admin/ReloadPolicy",
    [M_GET_STATUS] = "/jwtsigner.v1.Admin/GetStatus",
    [M_ROTATE_AUDIT_KEY] = "/jwtsigner.v1.Admin/RotateAuditKey",
    [M_REVOKE_TOKEN] = "/jwtsigner.v1.Admin/RevokeToken",
    [M_INTROSPECT] = "/jwtsigner.v1.Status/Introspect",
    [M_K8S_SIGN] = "/v1.ExternalJWTSigner/Sign",
    [M_K8S_FETCH_KEYS] = "/v1.ExternalJWTSigner/FetchKeys",
    [M_K8S_METADATA] = "/v1.ExternalJWTSigner/Metadata",
};

/* The same methods as published in package v1alpha1 (kube-apiserver 1.32-1.33). */
static const char *const k8s_v1alpha1_paths[M_COUNT - M_K8S_FIRST] = {
    [M_K8S_SIGN - M_K8S_FIRST] = "/v1alpha1.ExternalJWTSigner/Sign",
    [M_K8S_FETCH_KEYS - M_K8S_FIRST] = "/v1alpha1.ExternalJWTSigner/FetchKeys",
    [M_K8S_METADATA - M_K8S_FIRST] = "/v1alpha1.ExternalJWTSigner/Metadata",
};

struct jwtsigner_client {
    grpc_channel *channel;
    /* From grpc_channel_register_call, owned by the channel; read-only after new().
     * NULL for the methods of the other kind of handle. */
    void *methods[M_COUNT];
    int timeout_ms;
    /*
     * Idle pluck completion queues, each with no operation pending: a call
     * takes one for its whole duration (one call per queue at a time, so never
     * more than one plucker) and gives it back once its batch was plucked.
     * cq_lock guards cq_idle and cq_n_idle only; it is never held across a
     * gRPC call.
     */
    pthread_mutex_t cq_lock;
    grpc_completion_queue *cq_idle[CQ_POOL_MAX];
    size_t cq_n_idle;
};

/* A distinct type, so an ExternalJWTSigner handle cannot be passed to jwtsigner_sign(). */
struct jwtsigner_k8s {
    jwtsigner_client *client;
};

const char *jwtsigner_status_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
    case 1:
        return "CANCELLED";
    case 2:
        return "UNKNOWN";
    case 3:
        return "INVALID_ARGUMENT";
    case 4:
        return "DEADLINE_EXCEEDED";
    case 5:
        return "NOT_FOUND";
    case 6:
        return "ALREADY_EXISTS";
    case 7:
        return "PERMISSION_DENIED";
    case 8:
        return "RESOURCE_EXHAUSTED";
    case 9:
        return "FAILED_PRECONDITION";
    case 10:
        return "ABORTED";
    case 11:
        return "OUT_OF_RANGE";
    case 12:
        return "UNIMPLEMENTED";
    case 13:
        return "INTERNAL";
    case 14:
        return "UNAVAILABLE";
    case 15:
        return "DATA_LOSS";
    case 16:
        return "UNAUTHENTICATED";
    default:
        return "UNKNOWN";
    }
}

/* Fills *st and returns its code, so callers can `return set_status(...)`. */
__attribute__((format(printf, 3, 4))) static int set_status(jwtsigner_status *st, int code,
                                                            const char *fmt, ...)
{
    st->code = code;
    st->transport[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
    return code;
}
/* set_status(st, GRPC_STATUS_OK, "OK") without formatting: the success path of every call. */
static void set_status_ok(jwtsigner_status *st)
{
    st->code = GRPC_STATUS_OK;
    st->transport[0] = '\0';
    memcpy(st->message, "OK", sizeof("OK"));
}
#ifdef __clang_analyzer__
/* For the static analyzer only (scripts/analyze.sh): it does not inline
 * variadic functions, so it cannot see that set_status returns `code`; every
 * caller passes a constant. */
#define set_status(st, code, ...) (set_status((st), (code), __VA_ARGS__), (code))
#endif

/*
 * Copies the server's status message into st->message. It is text from the
 * network that the CLI prints to a terminal, so control bytes become '?'.
 */
static void copy_details(jwtsigner_status *st, grpc_slice details)
{
    const unsigned char *p = GRPC_SLICE_START_PTR(details);
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n > sizeof(st->message) - 1)
        n = sizeof(st->message) - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];
        st->message[i] = (char)((ch < 0x20 || ch == 0x7f) ? '?' : ch);
    }
    st->message[n] = '\0';
}

/* Copies gRPC's error_string (text from the local library, describing what
 * the network did) as printable ASCII: anything else becomes '?'. */
static void copy_printable(char *out, size_t cap, const char *s)
{
    size_t i = 0;
    for (; s[i] != '\0' && i + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = (char)((ch < 0x20 || ch >= 0x7f) ? '?' : ch);
    }
    out[i] = '\0';
}

/* Overwrites a buffer that held key material; the compiler may not drop it. */
static void wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        OPENSSL_cleanse(p, n);
}

/*
 * Reads a whole PEM file, at most PEM_FILE_MAX bytes, into a NUL-terminated
 * malloc'd buffer (*len excludes the NUL). The caller wipes and frees it.
 */
static int read_pem_file(const char *what, const char *path, char **out, size_t *len,
                         jwtsigner_status *st)
{
    int rc = 0;
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0;

    *out = NULL;
    *len = 0;
    f = fopen(path, "rb");
    if (f == NULL) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "cannot open %s file '%s': %s", what,
                        path, strerror(errno));
        goto out;
    }
    /* One spare byte tells "exactly the limit" from "over the limit". */
    buf = malloc(PEM_FILE_MAX + 2);
    if (buf == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory reading %s file", what);
        goto out;
    }
    n = fread(buf, 1, PEM_FILE_MAX + 1, f);
    if (ferror(f)) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "cannot read %s file '%s'", what, path);
        goto out;
    }
    if (n > PEM_FILE_MAX) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "%s file '%s' is larger than %d bytes",
                        what, path, PEM_FILE_MAX);
        goto out;
    }
    if (n == 0) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "%s file '%s' is empty", what, path);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
out:
    if (buf != NULL) {
        wipe(buf, PEM_FILE_MAX + 2);
        free(buf);
    }
    if (f != NULL)
        fclose(f);
    return rc;
}

/*
 * Checks the PEM material before handing it to gRPC. gRPC accepts anything at
 * credential creation and only fails at the TLS handshake, as an opaque
 * UNAVAILABLE; a wrong file or a key that does not belong to the certificate
 * is a local mistake and is reported as such here.
 */
static int check_pem(const char *ca, const char *cert, const char *key, jwtsigner_status *st)
{
    int rc = 0;
    BIO *bio = NULL;
    X509 *x = NULL;
    EVP_PKEY *pkey = NULL;

    bio = BIO_new_mem_buf(ca, -1);
    if (bio == NULL || (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "CA file holds no PEM certificate");
        goto out;
    }
    X509_free(x);
    x = NULL;
    BIO_free(bio);

    bio = BIO_new_mem_buf(cert, -1);
    if (bio == NULL || (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                        "certificate file holds no PEM certificate");
        goto out;
    }
    BIO_free(bio);

    bio = BIO_new_mem_buf(key, -1);
    /* No passphrase callback: an encrypted key must fail, not prompt. */
    if (bio == NULL || (pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"")) == NULL) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                        "key file holds no unencrypted PEM private key");
        goto out;
    }
    if (X509_check_private_key(x, pkey) != 1) {
        rc = set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                        "private key does not match the client certificate");
        goto out;
    }
out:
    /* Parse failures leave reasons on this thread's OpenSSL error queue. */
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    X509_free(x);
    BIO_free(bio);
    return rc;
}

/* The teardown of client_alloc (defined with jwtsigner_client_free, below). */
static void client_release(jwtsigner_client *c);

/*
 * Storage for a handle and its queue pool's lock, and gRPC itself:
 * grpc_init(), balanced by client_release(). NULL with *st filled on failure.
 */
static jwtsigner_client *client_alloc(int timeout_ms, jwtsigner_status *st)
{
    jwtsigner_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&c->cq_lock, NULL) != 0) {
        free(c);
        set_status(st, GRPC_STATUS_INTERNAL, "cannot create a mutex");
        return NULL;
    }
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
    grpc_init();
    return c;
}

/*
 * Creates c's channel to target and registers the methods [first, end) on
 * it, the ExternalJWTSigner ones under api's package name. Returns 0 or the
 * status code with *st filled; client_release() undoes a partial connect.
 */
static int client_connect(jwtsigner_client *c, const char *target, grpc_channel_credentials *creds,
                          const grpc_channel_args *args, method_id first, method_id end,
                          jwtsigner_k8s_api api, jwtsigner_status *st)
{
    /* Never NULL: on a bad target gRPC returns a lame channel whose calls fail. */
    c->channel = grpc_channel_create(target, creds, args);
    if (c->channel == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL, "cannot create a channel to '%s'", target);
    for (size_t i = (size_t)first; i < (size_t)end; i++) {
        const char *path = (i >= M_K8S_FIRST && api == JWTSIGNER_K8S_V1ALPHA1)
                               ? k8s_v1alpha1_paths[i - M_K8S_FIRST]
                               : method_paths[i];
        c->methods[i] = grpc_channel_register_call(c->channel, path, NULL, NULL);
        if (c->methods[i] == NULL)
            return set_status(st, GRPC_STATUS_INTERNAL, "cannot register method %s", path);
    }
    return 0;
}

jwtsigner_client *jwtsigner_client_new(const jwtsigner_options *opts, jwtsigner_status *st)
{
    jwtsigner_status local;
    jwtsigner_client *c = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    size_t ca_len = 0, cert_len = 0, key_len = 0;
    grpc_channel_credentials *creds = NULL;
    int ok = 0;

    if (st == NULL)
        st = &local;
    set_status(st, GRPC_STATUS_OK, "OK");

    if (opts == NULL || opts->target == NULL || opts->target[0] == '\0' || opts->ca_file == NULL ||
        opts->ca_file[0] == '\0' || opts->cert_file == NULL || opts->cert_file[0] == '\0' ||
        opts->key_file == NULL || opts->key_file[0] == '\0') {
        set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                   "target, CA file, certificate file and key file are all required");
        goto out;
    }
    if (read_pem_file("CA", opts->ca_file, &ca, &ca_len, st) != 0 ||
        read_pem_file("certificate", opts->cert_file, &cert, &cert_len, st) != 0 ||
        read_pem_file("key", opts->key_file, &key, &key_len, st) != 0)
        goto out;
    if (check_pem(ca, cert, key, st) != 0)
        goto out;

    c = client_alloc(opts->timeout_ms, st);
    if (c == NULL)
        goto out;
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    /* gRPC copies the PEM strings, so our key buffer can be wiped right after. */
    creds = grpc_ssl_credentials_create(ca, &pair, NULL, NULL);
    if (creds == NULL) {
        set_status(st, GRPC_STATUS_INTERNAL, "gRPC refused the TLS credentials");
        goto out;
    }
    if (client_connect(c, opts->target, creds, NULL, 0, M_K8S_FIRST, JWTSIGNER_K8S_V1, st) != 0)
        goto out;
    ok = 1;

out:
    if (creds != NULL)
        grpc_channel_credentials_release(creds);
    if (!ok) {
        client_release(c);
        c = NULL;
    }
    wipe(key, key_len);
    free(key);
    free(cert);
    free(ca);
    return c;
}

/*
 * Shuts a completion queue down and destroys it. Operations still pending on
 * it complete first (with the shutdown), so this never frees a queue a batch
 * still points at.
 */
static void cq_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
}

/* An idle queue from the pool, or a new one; NULL only if gRPC cannot make one. */
static grpc_completion_queue *cq_take(jwtsigner_client *c)
{
    grpc_completion_queue *cq = NULL;
    pthread_mutex_lock(&c->cq_lock);
    if (c->cq_n_idle > 0)
        cq = c->cq_idle[--c->cq_n_idle];
    pthread_mutex_unlock(&c->cq_lock);
    if (cq == NULL)
        cq = grpc_completion_queue_create_for_pluck(NULL);
    return cq;
}

/*
 * Gives back a queue from cq_take. `idle` says every operation started on it
 * was plucked, so no event of this call can reach the next one; any other
 * queue, and one the full pool has no room for, is destroyed.
 */
static void cq_give(jwtsigner_client *c, grpc_completion_queue *cq, int idle)
{
    if (idle) {
        pthread_mutex_lock(&c->cq_lock);
        if (c->cq_n_idle < CQ_POOL_MAX) {
            c->cq_idle[c->cq_n_idle++] = cq;
            cq = NULL;
        }
        pthread_mutex_unlock(&c->cq_lock);
    }
    if (cq != NULL)
        cq_destroy(cq);
}

/* Also for a handle whose channel was never made; NULL is accepted. */
static void client_release(jwtsigner_client *c)
{
    if (c == NULL)
        return;
    if (c->channel != NULL)
        grpc_channel_destroy(c->channel);
    for (size_t i = 0; i < c->cq_n_idle; i++)
        cq_destroy(c->cq_idle[i]);
    pthread_mutex_destroy(&c->cq_lock);
    free(c);
    /* Balances the grpc_init() of client_alloc(). */
    grpc_shutdown();
}

/* No call may be in flight on c: the pool and the channel go with it. */
void jwtsigner_client_free(jwtsigner_client *c)
{
    client_release(c);
}

/*
 * Runs one unary call of method m: sends `req`, and on status OK decodes the
 * reply as a `resp_desc` message into *resp (the caller frees it with
 * protobuf_c_message_free_unpacked). Returns 0 or the status code, with *st
 * filled either way; a reply that does not decode is INTERNAL. The only place
 * that runs a gRPC batch.
 */
static int unary_call(jwtsigner_client *c, method_id m, const ProtobufCMessage *req,
                      const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                      jwtsigner_status *st)
{
    int rc = 0;
    grpc_completion_queue *cq = NULL;
    grpc_call *call = NULL;
    grpc_byte_buffer *send_bb = NULL;
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    const char *error_string = NULL;
    grpc_byte_buffer_reader reader;
    int reader_live = 0;
    grpc_slice all = grpc_empty_slice();
    int tag_storage = 0;
    void *tag = &tag_storage;
    /* Set once every operation started on cq has been plucked (or none was). */
    int cq_idle = 0;

    *resp = NULL;
    if (c->methods[m] == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL, "%s is not a method of this kind of handle",
                          method_paths[m]);
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);

    cq = cq_take(c);
    if (cq == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "cannot create a completion queue");
        goto out;
    }
    gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                         gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN));
    call = grpc_channel_create_registered_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               c->methods[m], deadline, NULL);
    if (call == NULL) {
        cq_idle = 1;
        rc = set_status(st, GRPC_STATUS_INTERNAL, "cannot create a call");
        goto out;
    }
    size_t req_len = protobuf_c_message_get_packed_size(req);
    grpc_slice req_slice = grpc_slice_malloc(req_len);
    if (req_len > 0)
        protobuf_c_message_pack(req, GRPC_SLICE_START_PTR(req_slice));
    send_bb = grpc_raw_byte_buffer_create(&req_slice, 1);
    grpc_slice_unref(req_slice);

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    ops[5].data.recv_status_on_client.error_string = &error_string;

    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, tag, NULL);
    if (ce != GRPC_CALL_OK) {
        /* A batch that did not start queues no completion. */
        cq_idle = 1;
        rc = set_status(st, GRPC_STATUS_INTERNAL, "cannot start the call (grpc_call_error %d)",
                        (int)ce);
        goto out;
    }
    grpc_event ev = grpc_completion_queue_pluck(
        cq, tag, gpr_time_add(deadline, gpr_time_from_millis(PLUCK_GRACE_MS, GPR_TIMESPAN)), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        /* The ops point into this frame: the batch must finish before we return. */
        grpc_call_cancel(call, NULL);
        ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    /* Our one batch's event was plucked, failed or not: nothing else is pending. */
    if (ev.type == GRPC_OP_COMPLETE)
        cq_idle = 1;
    if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "the call's batch did not complete");
        goto out;
    }

    if (status != GRPC_STATUS_OK) {
        /* Codes outside 1..16 (a broken peer) count as UNKNOWN, as in gRPC. */
        rc = (status > 0 && status <= 16) ? (int)status : GRPC_STATUS_UNKNOWN;
        st->code = rc;
        st->transport[0] = '\0';
        if (GRPC_SLICE_LENGTH(details) > 0)
            copy_details(st, details);
        else
            snprintf(st->message, sizeof(st->message), "%s", jwtsigner_status_name(rc));
        if (error_string != NULL)
            copy_printable(st->transport, sizeof(st->transport), error_string);
        goto out;
    }
    if (recv_bb == NULL) {
        rc =
            set_status(st, GRPC_STATUS_INTERNAL, "malformed response: status OK without a message");
        goto out;
    }
    if (!grpc_byte_buffer_reader_init(&reader, recv_bb)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "cannot read the response message");
        goto out;
    }
    reader_live = 1;
    /*
     * A reply of one slice (the usual case: a small message from one frame)
     * is decoded where it lies; only a reply in pieces is first copied into
     * one slice of our own, which is wiped below.
     */
    const uint8_t *bytes = NULL;
    size_t nbytes = 0;
    if (reader.buffer_out->data.raw.slice_buffer.count == 1) {
        grpc_slice one = reader.buffer_out->data.raw.slice_buffer.slices[0];
        bytes = GRPC_SLICE_START_PTR(one);
        nbytes = GRPC_SLICE_LENGTH(one);
    } else {
        all = grpc_byte_buffer_reader_readall(&reader);
        bytes = GRPC_SLICE_START_PTR(all);
        nbytes = GRPC_SLICE_LENGTH(all);
    }
    /* An empty reply is valid protobuf (all fields default); the checks are the caller's. */
    *resp = protobuf_c_message_unpack(resp_desc, NULL, nbytes, bytes);
    if (*resp == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "malformed response: %s does not decode",
                        resp_desc->short_name);
        goto out;
    }
    set_status_ok(st);
out:
    if (reader_live) {
        /* A SignJwt reply holds a bearer token. */
        wipe(GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all));
        grpc_slice_unref(all);
        grpc_byte_buffer_reader_destroy(&reader);
    }
    if (call != NULL)
        grpc_call_unref(call);
    if (cq != NULL)
        cq_give(c, cq, cq_idle);
    if (send_bb != NULL)
        grpc_byte_buffer_destroy(send_bb);
    if (recv_bb != NULL)
        grpc_byte_buffer_destroy(recv_bb);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(details);
    gpr_free((void *)error_string);
    return rc;
}

/* strdup of a protobuf string field; proto3 strings unpack as "" not NULL. */
static char *dup_field(const char *s)
{
    return strdup(s != NULL ? s : "");
}

/* The base64url alphabet, RFC 4648 §5. strspn scans with a byte table. */
static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * A compact JWS (RFC 7515 §7.1) is three base64url segments joined by two
 * dots; anything else from the server is a malformed response, not a token.
 */
static int is_compact_jws(const char *s)
{
    for (int i = 0; i < 3; i++) {
        size_t n = strspn(s, b64url_alphabet);
        if (n == 0 || s[n] != (i < 2 ? '.' : '\0'))
            return 0;
        s += n + 1;
    }
    return 1;
}

void jwtsigner_token_clear(jwtsigner_token *t)
{
    if (t == NULL)
        return;
    /* The token is a bearer credential until it expires. */
    if (t->jwt != NULL)
        wipe(t->jwt, strlen(t->jwt));
    free(t->jwt);
    free(t->kid);
    free(t->jti);
    memset(t, 0, sizeof(*t));
}

/* Frees an unpacked reply; NULL is accepted. */
static void free_reply(ProtobufCMessage *resp)
{
    if (resp != NULL)
        protobuf_c_message_free_unpacked(resp, NULL);
}

/* A required name argument: present and non-empty. */
static int is_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* NULL reads as "", which is what proto3 sends for an absent string. */
static char *opt_str(const char *s)
{
    return (char *)(s != NULL ? s : "");
}

int jwtsigner_sign(jwtsigner_client *c, const char *claims_json, size_t claims_len,
                   const char *key_name, const char *request_id, jwtsigner_token *out,
                   jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || (claims_json == NULL && claims_len > 0))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_sign: missing handle, claims or output");

    Jwtsigner__V1__SignJwtRequest req = JWTSIGNER__V1__SIGN_JWT_REQUEST__INIT;
    req.claims_json.data = (uint8_t *)claims_json;
    req.claims_json.len = claims_len;
    req.key = opt_str(key_name);
    req.request_id = opt_str(request_id);

    rc = unary_call(c, M_SIGN_JWT, &req.base, &jwtsigner__v1__sign_jwt_response__descriptor, &msg,
                    st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__SignJwtResponse *resp = (Jwtsigner__V1__SignJwtResponse *)msg;
    if (resp->jwt == NULL || !is_compact_jws(resp->jwt)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "malformed response: jwt is not a compact JWS");
        goto out;
    }
    out->jwt = dup_field(resp->jwt);
    out->kid = dup_field(resp->kid);
    out->jti = dup_field(resp->jti);
    if (out->jwt == NULL || out->kid == NULL || out->jti == NULL) {
        jwtsigner_token_clear(out);
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
    out->issued_at = resp->issued_at;
    out->expires_at = resp->expires_at;
    out->audit_seq = resp->audit_seq;
out:
    if (msg != NULL) {
        /* The unpacked reply holds the token too. */
        Jwtsigner__V1__SignJwtResponse *r = (Jwtsigner__V1__SignJwtResponse *)msg;
        if (r->jwt != NULL)
            wipe(r->jwt, strlen(r->jwt));
    }
    free_reply(msg);
    return rc;
}

/*
 * A JSON document from the server must at least open as an object; the
 * library does not parse JSON (the CLI does, to print it).
 */
static int looks_like_json_object(const char *s)
{
    if (s == NULL)
        return 0;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return *s == '{';
}

int jwtsigner_jwks(jwtsigner_client *c, char **jwks_out, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (jwks_out != NULL)
        *jwks_out = NULL;
    if (c == NULL || jwks_out == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_jwks: missing handle or output");

    Jwtsigner__V1__GetJwksRequest req = JWTSIGNER__V1__GET_JWKS_REQUEST__INIT;
    rc = unary_call(c, M_GET_JWKS, &req.base, &jwtsigner__v1__get_jwks_response__descriptor, &msg,
                    st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__GetJwksResponse *resp = (Jwtsigner__V1__GetJwksResponse *)msg;
    if (resp->jwks_json == NULL || resp->jwks_json[0] != '{') {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: jwks_json is not a JSON object");
        goto out;
    }
    *jwks_out = strdup(resp->jwks_json);
    if (*jwks_out == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
out:
    free_reply(msg);
    return rc;
}

/* ---- Admin service ------------------------------------------------------------------ */

void jwtsigner_rotate_result_clear(jwtsigner_rotate_result *r)
{
    if (r == NULL)
        return;
    free(r->key);
    free(r->kid);
    memset(r, 0, sizeof(*r));
}

void jwtsigner_revoke_result_clear(jwtsigner_revoke_result *r)
{
    if (r == NULL)
        return;
    free(r->key);
    free(r->kid);
    free(r->active_kid);
    memset(r, 0, sizeof(*r));
}

int jwtsigner_admin_rotate(jwtsigner_client *c, const char *key, const char *reason,
                           jwtsigner_rotate_result *out, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || !is_set(key))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_rotate: missing handle, key name or output");

    Jwtsigner__V1__RotateKeyRequest req = JWTSIGNER__V1__ROTATE_KEY_REQUEST__INIT;
    req.key = (char *)key;
    req.reason = opt_str(reason);
    rc = unary_call(c, M_ROTATE_KEY, &req.base, &jwtsigner__v1__rotate_key_response__descriptor,
                    &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__RotateKeyResponse *resp = (Jwtsigner__V1__RotateKeyResponse *)msg;
    if (resp->key == NULL || strcmp(resp->key, key) != 0) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: RotateKey answered for another key");
        goto out;
    }
    if (resp->version == 0 || !is_set(resp->kid)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: RotateKey gave no new version or kid");
        goto out;
    }
    out->key = dup_field(resp->key);
    out->kid = dup_field(resp->kid);
    if (out->key == NULL || out->kid == NULL) {
        jwtsigner_rotate_result_clear(out);
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
    out->version = resp->version;
    out->activate_at = resp->activate_at;
out:
    free_reply(msg);
    return rc;
}

int jwtsigner_admin_revoke(jwtsigner_client *c, const char *key, const char *kid,
                           const char *reason, jwtsigner_revoke_result *out, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || !is_set(key) || !is_set(kid))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_revoke: missing handle, key name, kid or output");

    Jwtsigner__V1__RevokeKeyRequest req = JWTSIGNER__V1__REVOKE_KEY_REQUEST__INIT;
    req.key = (char *)key;
    req.kid = (char *)kid;
    req.reason = opt_str(reason);
    rc = unary_call(c, M_REVOKE_KEY, &req.base, &jwtsigner__v1__revoke_key_response__descriptor,
                    &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__RevokeKeyResponse *resp = (Jwtsigner__V1__RevokeKeyResponse *)msg;
    /* Revocation is the leaked-key case: success must name exactly what was asked. */
    if (resp->key == NULL || strcmp(resp->key, key) != 0 || resp->kid == NULL ||
        strcmp(resp->kid, kid) != 0) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: RevokeKey answered for another key or kid");
        goto out;
    }
    if (resp->active_kid != NULL && strcmp(resp->active_kid, kid) == 0) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: RevokeKey reports the revoked kid as active");
        goto out;
    }
    out->key = dup_field(resp->key);
    out->kid = dup_field(resp->kid);
    out->active_kid = dup_field(resp->active_kid);
    if (out->key == NULL || out->kid == NULL || out->active_kid == NULL) {
        jwtsigner_revoke_result_clear(out);
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
    out->revoked_at = resp->revoked_at;
out:
    free_reply(msg);
    return rc;
}

int jwtsigner_admin_incident(jwtsigner_client *c, int on, const char *reason, int *now_on,
                             jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (c == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_incident: missing handle");

    Jwtsigner__V1__SetIncidentModeRequest req = JWTSIGNER__V1__SET_INCIDENT_MODE_REQUEST__INIT;
    req.on = on != 0;
    req.reason = opt_str(reason);
    rc = unary_call(c, M_SET_INCIDENT_MODE, &req.base,
                    &jwtsigner__v1__set_incident_mode_response__descriptor, &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__SetIncidentModeResponse *resp = (Jwtsigner__V1__SetIncidentModeResponse *)msg;
    if (now_on != NULL)
        *now_on = resp->on != 0;
    /* A script must never read success while the mode is not what it asked for. */
    if ((resp->on != 0) != (on != 0)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: incident mode is %s after a request to turn it %s",
                        resp->on ? "on" : "off", on ? "on" : "off");
        goto out;
    }
out:
    free_reply(msg);
    return rc;
}

int jwtsigner_admin_freeze(jwtsigner_client *c, const char *identity, const char *reason,
                           int freeze, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (c == NULL || !is_set(identity))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_freeze: missing handle or identity");

    /* FreezeCaller and UnfreezeCaller share their message types. */
    Jwtsigner__V1__FreezeCallerRequest req = JWTSIGNER__V1__FREEZE_CALLER_REQUEST__INIT;
    req.identity = (char *)identity;
    req.reason = opt_str(reason);
    rc = unary_call(c, freeze ? M_FREEZE_CALLER : M_UNFREEZE_CALLER, &req.base,
                    &jwtsigner__v1__freeze_caller_response__descriptor, &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__FreezeCallerResponse *resp = (Jwtsigner__V1__FreezeCallerResponse *)msg;
    if (resp->identity == NULL || strcmp(resp->identity, identity) != 0) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: %s answered for another identity",
                        freeze ? "FreezeCaller" : "UnfreezeCaller");
        goto out;
    }
    if ((resp->frozen != 0) != (freeze != 0)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: caller is %s after a request to %s it",
                        resp->frozen ? "frozen" : "not frozen", freeze ? "freeze" : "unfreeze");
        goto out;
    }
out:
    free_reply(msg);
    return rc;
}

static int is_sha256_hex(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')))
            return 0;
    }
    return n == SHA256_HEX_LEN;
}

/* A key id (FORMAT.md §5.4): 43 base64url characters. */
static int is_key_id(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0' && n <= 43; n++) {
        char ch = s[n];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return n == 43;
}

int jwtsigner_admin_rotate_audit_key(jwtsigner_client *c, const char *reason,
                                     jwtsigner_audit_key_result *out, jwtsigner_status *st)
{
    jwtsigner_status local;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (c == NULL || out == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_rotate_audit_key: missing handle or output");
    memset(out, 0, sizeof(*out));
    Jwtsigner__V1__RotateAuditKeyRequest req = JWTSIGNER__V1__ROTATE_AUDIT_KEY_REQUEST__INIT;
    req.reason = (char *)(reason != NULL ? reason : "");
    int rc = unary_call(c, M_ROTATE_AUDIT_KEY, &req.base,
                        &jwtsigner__v1__rotate_audit_key_response__descriptor, &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__RotateAuditKeyResponse *resp = (Jwtsigner__V1__RotateAuditKeyResponse *)msg;
    if (resp->label == NULL || resp->label[0] == '\0' ||
        strlen(resp->label) >= sizeof(out->label) || resp->key_id == NULL ||
        !is_key_id(resp->key_id)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: RotateAuditKey gave no label or key id");
        goto out;
    }
    snprintf(out->label, sizeof(out->label), "%s", resp->label);
    snprintf(out->key_id, sizeof(out->key_id), "%s", resp->key_id);
out:
    free_reply(msg);
    return rc;
}

int jwtsigner_admin_reload(jwtsigner_client *c, char **sha256_out, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (sha256_out != NULL)
        *sha256_out = NULL;
    if (c == NULL || sha256_out == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_reload: missing handle or output");

    Jwtsigner__V1__ReloadPolicyRequest req = JWTSIGNER__V1__RELOAD_POLICY_REQUEST__INIT;
    rc = unary_call(c, M_RELOAD_POLICY, &req.base,
                    &jwtsigner__v1__reload_policy_response__descriptor, &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__ReloadPolicyResponse *resp = (Jwtsigner__V1__ReloadPolicyResponse *)msg;
    if (resp->sha256 == NULL || !is_sha256_hex(resp->sha256)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "malformed response: sha256 is not %d hex digits",
                        SHA256_HEX_LEN);
        goto out;
    }
    *sha256_out = strdup(resp->sha256);
    if (*sha256_out == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
out:
    free_reply(msg);
    return rc;
}

int jwtsigner_admin_status(jwtsigner_client *c, char **json_out, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (json_out != NULL)
        *json_out = NULL;
    if (c == NULL || json_out == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_status: missing handle or output");

    Jwtsigner__V1__GetStatusRequest req = JWTSIGNER__V1__GET_STATUS_REQUEST__INIT;
    rc = unary_call(c, M_GET_STATUS, &req.base, &jwtsigner__v1__get_status_response__descriptor,
                    &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__GetStatusResponse *resp = (Jwtsigner__V1__GetStatusResponse *)msg;
    if (!looks_like_json_object(resp->status_json)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: status_json is not a JSON object");
        goto out;
    }
    *json_out = strdup(resp->status_json);
    if (*json_out == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
out:
    free_reply(msg);
    return rc;
}

int jwtsigner_admin_revoke_token(jwtsigner_client *c, jwtsigner_revoke_what what, const char *value,
                                 const char *reason, jwtsigner_revoke_token_result *out,
                                 jwtsigner_status *st)
{
    jwtsigner_status local;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || !is_set(value) ||
        (what != JWTSIGNER_REVOKE_JTI && what != JWTSIGNER_REVOKE_SUB &&
         what != JWTSIGNER_REVOKE_CALLER))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_admin_revoke_token: missing handle, jti/sub/caller or output");

    /* Exactly one of jti, sub and caller is set (signer.proto). */
    Jwtsigner__V1__RevokeTokenRequest req = JWTSIGNER__V1__REVOKE_TOKEN_REQUEST__INIT;
    req.jti = opt_str(what == JWTSIGNER_REVOKE_JTI ? value : NULL);
    req.sub = opt_str(what == JWTSIGNER_REVOKE_SUB ? value : NULL);
    req.caller = opt_str(what == JWTSIGNER_REVOKE_CALLER ? value : NULL);
    req.reason = opt_str(reason);
    int rc = unary_call(c, M_REVOKE_TOKEN, &req.base,
                        &jwtsigner__v1__revoke_token_response__descriptor, &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__RevokeTokenResponse *resp = (Jwtsigner__V1__RevokeTokenResponse *)msg;
    /* A revocation without a durable record or a lifetime did not happen. */
    if (resp->audit_seq == 0 || resp->until <= 0 || resp->cutoff < 0 ||
        (what != JWTSIGNER_REVOKE_JTI && resp->cutoff == 0)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: RevokeToken gave no audit record, until or cut-off");
        goto out;
    }
    out->cutoff = resp->cutoff;
    out->until = resp->until;
    out->audit_seq = resp->audit_seq;
out:
    free_reply(msg);
    return rc;
}

/* ---- Status service ----------------------------------------------------------------- */

void jwtsigner_introspection_clear(jwtsigner_introspection *r)
{
    if (r == NULL)
        return;
    free(r->json);
    free(r->scope);
    free(r->client_id);
    free(r->sub);
    for (size_t i = 0; i < r->naud; i++)
        free(r->aud[i]);
    free(r->aud);
    free(r->iss);
    free(r->jti);
    free(r->token_type);
    free(r->cnf_json);
    memset(r, 0, sizeof(*r));
}

/* An inactive answer carries nothing but active = false (RFC 7662 §2.2). */
static int inactive_is_bare(const Jwtsigner__V1__IntrospectResponse *r)
{
    const char *const strs[] = {r->scope, r->client_id,  r->sub,     r->iss,
                                r->jti,   r->token_type, r->cnf_json};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (strs[i] != NULL && strs[i][0] != '\0')
            return 0;
    return r->n_aud == 0 && r->exp == 0 && r->iat == 0;
}

/* Copies the typed members of an active answer; 0, or -1 out of memory. */
static int copy_introspection(const Jwtsigner__V1__IntrospectResponse *r,
                              jwtsigner_introspection *out)
{
    out->scope = dup_field(r->scope);
    out->client_id = dup_field(r->client_id);
    out->sub = dup_field(r->sub);
    out->iss = dup_field(r->iss);
    out->jti = dup_field(r->jti);
    out->token_type = dup_field(r->token_type);
    out->cnf_json = dup_field(r->cnf_json);
    if (out->scope == NULL || out->client_id == NULL || out->sub == NULL || out->iss == NULL ||
        out->jti == NULL || out->token_type == NULL || out->cnf_json == NULL)
        return -1;
    if (r->n_aud > 0) {
        out->aud = calloc(r->n_aud, sizeof(*out->aud));
        if (out->aud == NULL)
            return -1;
        for (size_t i = 0; i < r->n_aud; i++) {
            out->aud[i] = dup_field(r->aud[i]);
            if (out->aud[i] == NULL)
                return -1;
            out->naud = i + 1;
        }
    }
    out->exp = r->exp;
    out->iat = r->iat;
    return 0;
}

int jwtsigner_introspect(jwtsigner_client *c, const char *token, jwtsigner_introspection *out,
                         jwtsigner_status *st)
{
    jwtsigner_status local;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || !is_set(token))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_introspect: missing handle, token or output");

    Jwtsigner__V1__IntrospectRequest req = JWTSIGNER__V1__INTROSPECT_REQUEST__INIT;
    req.token = (char *)token;
    int rc = unary_call(c, M_INTROSPECT, &req.base, &jwtsigner__v1__introspect_response__descriptor,
                        &msg, st);
    if (rc != 0)
        goto out;
    Jwtsigner__V1__IntrospectResponse *resp = (Jwtsigner__V1__IntrospectResponse *)msg;
    if (!looks_like_json_object(resp->json)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "malformed response: json is not a JSON object");
        goto out;
    }
    if (resp->active ? !is_set(resp->jti) || !is_set(resp->client_id) || resp->exp <= 0
                     : !inactive_is_bare(resp)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        resp->active
                            ? "malformed response: an active answer without jti, client_id or exp"
                            : "malformed response: an inactive answer with token members "
                              "(RFC 7662 section 2.2)");
        goto out;
    }
    out->active = resp->active != 0;
    out->json = dup_field(resp->json);
    if (out->json == NULL || (out->active && copy_introspection(resp, out) != 0)) {
        jwtsigner_introspection_clear(out);
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
out:
    free_reply(msg);
    return rc;
}

/* ---- Kubernetes ExternalJWTSigner --------------------------------------------------- */

/* The longest path connect(2) takes: sockaddr_un's sun_path less its NUL. */
#define UNIX_PATH_LEN_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
/* Latest Timestamp the proto allows: 9999-12-31T23:59:59Z (google/protobuf/timestamp.proto). */
#define TIMESTAMP_SECONDS_MAX INT64_C(253402300799)
#define NANOS_MAX             999999999

/* A non-empty string of base64url characters, nothing else (no padding). */
static int is_b64url(const char *s)
{
    return s != NULL && s[0] != '\0' && s[strspn(s, b64url_alphabet)] == '\0';
}

/*
 * Builds the gRPC target "unix:/abs/path" for socket_path into out. gRPC
 * parses the target as a URI, so '%', '?' and '#' would not reach connect(2)
 * as written; such a path (and one with control bytes) is refused rather than
 * escaped, as is one longer than sun_path.
 */
static int k8s_target(const char *socket_path, char *out, size_t cap, jwtsigner_status *st)
{
    char cwd[PATH_MAX];
    const char *dir = "";
    const char *sep = "";

    if (socket_path == NULL || socket_path[0] == '\0')
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "the socket path is empty");
    if (socket_path[0] != '/') {
        if (getcwd(cwd, sizeof(cwd)) == NULL)
            return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                              "cannot make socket path '%s' absolute: %s", socket_path,
                              strerror(errno));
        dir = cwd;
        sep = strcmp(cwd, "/") == 0 ? "" : "/";
    }
    int n = snprintf(out, cap, "unix:%s%s%s", dir, sep, socket_path);
    if (n < 0 || (size_t)n >= cap || (size_t)n - strlen("unix:") > UNIX_PATH_LEN_MAX)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "socket path '%s' is too long: a Unix socket path is at most %zu bytes",
                          socket_path, (size_t)UNIX_PATH_LEN_MAX);
    for (const char *p = out; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch == 0x7f || ch == '%' || ch == '?' || ch == '#')
            return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                              "socket path holds a character gRPC's target syntax does not "
                              "pass through (%%, ?, # or a control byte); use a path without it");
    }
    return 0;
}

int jwtsigner_k8s_new(const char *socket_path, jwtsigner_k8s_api api, int timeout_ms,
                      jwtsigner_k8s **out, jwtsigner_status *st)
{
    jwtsigner_status local;
    char target[sizeof("unix:") + PATH_MAX + 1];
    jwtsigner_k8s *k = NULL;
    grpc_channel_credentials *creds = NULL;
    int rc = 0;

    if (st == NULL)
        st = &local;
    if (out == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "jwtsigner_k8s_new: missing output");
    *out = NULL;
    if (api != JWTSIGNER_K8S_V1 && api != JWTSIGNER_K8S_V1ALPHA1)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_k8s_new: unknown API version %d", (int)api);
    rc = k8s_target(socket_path, target, sizeof(target), st);
    if (rc != 0)
        return rc;

    k = calloc(1, sizeof(*k));
    if (k == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
    k->client = client_alloc(timeout_ms, st);
    if (k->client == NULL) {
        rc = st->code;
        goto out;
    }
    /*
     * Insecure, as kube-apiserver dials the socket: its file permissions and
     * the signer's SO_PEERCRED check of the caller are the access control.
     * The receive limit bounds what a wrong or hostile peer can make us hold.
     */
    creds = grpc_insecure_credentials_create();
    if (creds == NULL) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "gRPC refused insecure credentials");
        goto out;
    }
    grpc_arg arg = {.type = GRPC_ARG_INTEGER,
                    .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                    .value.integer = JWTSIGNER_K8S_REPLY_MAX};
    grpc_channel_args args = {.num_args = 1, .args = &arg};
    rc = client_connect(k->client, target, creds, &args, M_K8S_FIRST, M_COUNT, api, st);
    if (rc != 0)
        goto out;
    set_status_ok(st);
    *out = k;
    k = NULL;
out:
    if (creds != NULL)
        grpc_channel_credentials_release(creds);
    jwtsigner_k8s_free(k);
    return rc;
}

void jwtsigner_k8s_free(jwtsigner_k8s *k)
{
    if (k == NULL)
        return;
    client_release(k->client);
    free(k);
}

void jwtsigner_k8s_token_clear(jwtsigner_k8s_token *t)
{
    if (t == NULL)
        return;
    /* The assembled token is a bearer credential until it expires. */
    if (t->token != NULL)
        wipe(t->token, strlen(t->token));
    if (t->signature != NULL)
        wipe(t->signature, strlen(t->signature));
    free(t->header);
    free(t->signature);
    free(t->token);
    memset(t, 0, sizeof(*t));
}

int jwtsigner_k8s_sign(jwtsigner_k8s *k, const char *claims_b64url, jwtsigner_k8s_token *out,
                       jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (k == NULL || out == NULL || claims_b64url == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_k8s_sign: missing handle, claims or output");
    size_t claims_len = strnlen(claims_b64url, JWTSIGNER_K8S_CLAIMS_MAX + 1);
    if (claims_len > JWTSIGNER_K8S_CLAIMS_MAX)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "claims: longer than %d characters",
                          JWTSIGNER_K8S_CLAIMS_MAX);
    if (claims_len == 0)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT, "claims: empty");
    /* kube-apiserver sends the payload segment as is: base64url without padding. */
    if (!is_b64url(claims_b64url))
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "claims: not base64url (RFC 4648 section 5, no padding): the JWT "
                          "payload segment, e.g. from basenc --base64url | tr -d '=\\n'");

    V1__SignJWTRequest req = V1__SIGN_JWTREQUEST__INIT;
    req.claims = (char *)claims_b64url;
    rc = unary_call(k->client, M_K8S_SIGN, &req.base, &v1__sign_jwtresponse__descriptor, &msg, st);
    if (rc != 0)
        goto out;
    V1__SignJWTResponse *resp = (V1__SignJWTResponse *)msg;
    if (!is_b64url(resp->header) || !is_b64url(resp->signature)) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: Sign's %s is empty or not base64url",
                        !is_b64url(resp->header) ? "header" : "signature");
        goto out;
    }
    size_t hlen = strlen(resp->header), slen = strlen(resp->signature);
    out->header = strdup(resp->header);
    out->signature = strdup(resp->signature);
    /* The reply is bounded (JWTSIGNER_K8S_REPLY_MAX) and so are the claims: no overflow. */
    out->token = malloc(hlen + 1 + claims_len + 1 + slen + 1);
    if (out->header == NULL || out->signature == NULL || out->token == NULL) {
        jwtsigner_k8s_token_clear(out);
        rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
        goto out;
    }
    /* kube-apiserver: response.Header + "." + claims + "." + response.Signature. */
    char *p = out->token;
    memcpy(p, resp->header, hlen);
    p += hlen;
    *p++ = '.';
    memcpy(p, claims_b64url, claims_len);
    p += claims_len;
    *p++ = '.';
    memcpy(p, resp->signature, slen);
    p[slen] = '\0';
out:
    if (msg != NULL) {
        V1__SignJWTResponse *r = (V1__SignJWTResponse *)msg;
        if (r->signature != NULL)
            wipe(r->signature, strlen(r->signature));
    }
    free_reply(msg);
    return rc;
}

void jwtsigner_k8s_keys_clear(jwtsigner_k8s_keys *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->count; i++) {
        free(k->keys[i].key_id);
        free(k->keys[i].der);
        free(k->keys[i].pem);
    }
    free(k->keys);
    memset(k, 0, sizeof(*k));
}

/*
 * Checks that der is exactly one PKIX SubjectPublicKeyInfo (RFC 5280 section
 * 4.1.2.7) and writes it as a PEM "PUBLIC KEY" into a malloc'd string.
 * NULL if it does not parse, has bytes after it, or on out of memory.
 */
static char *spki_der_to_pem(const unsigned char *der, size_t der_len)
{
    char *pem = NULL;
    BIO *bio = NULL;
    const unsigned char *p = der;
    EVP_PKEY *pkey = NULL;

    if (der_len == 0 || der_len > LONG_MAX)
        return NULL;
    pkey = d2i_PUBKEY(NULL, &p, (long)der_len);
    if (pkey == NULL || p != der + der_len)
        goto out;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_PUBKEY(bio, pkey) != 1)
        goto out;
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || data == NULL)
        goto out;
    pem = malloc((size_t)n + 1);
    if (pem == NULL)
        goto out;
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
out:
    /* A key that does not parse leaves reasons on this thread's OpenSSL error queue. */
    ERR_clear_error();
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    return pem;
}

/* Room for the start of a key_id quoted in a message (printable ASCII only, see copy_printable). */
#define KID_SHOWN 65

/* Checks one FetchKeys key (index i) and copies it into *out; 0 or INTERNAL with *st filled. */
static int k8s_copy_key(const V1__Key *key, size_t i, jwtsigner_k8s_key *out, jwtsigner_status *st)
{
    char shown[KID_SHOWN];

    if (key == NULL || !is_set(key->key_id))
        return set_status(st, GRPC_STATUS_INTERNAL, "malformed response: key #%zu has no key_id",
                          i + 1);
    if (strlen(key->key_id) > JWTSIGNER_K8S_KID_MAX)
        return set_status(st, GRPC_STATUS_INTERNAL,
                          "malformed response: key #%zu's key_id is longer than %d bytes", i + 1,
                          JWTSIGNER_K8S_KID_MAX);
    out->key_id = strdup(key->key_id);
    if (out->key_id == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
    copy_printable(shown, sizeof(shown), key->key_id);
    out->exclude_from_oidc_discovery = key->exclude_from_oidc_discovery != 0;
    if (key->key.len == 0 || key->key.data == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL,
                          "malformed response: key #%zu (key_id '%s') has no key bytes", i + 1,
                          shown);
    out->pem = spki_der_to_pem(key->key.data, key->key.len);
    if (out->pem == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL,
                          "malformed response: key #%zu (key_id '%s') is not a PKIX public key "
                          "(SubjectPublicKeyInfo DER, %zu bytes): kube-apiserver would refuse it",
                          i + 1, shown, key->key.len);
    out->der = malloc(key->key.len);
    if (out->der == NULL)
        return set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
    memcpy(out->der, key->key.data, key->key.len);
    out->der_len = key->key.len;
    return 0;
}

int jwtsigner_k8s_fetch_keys(jwtsigner_k8s *k, jwtsigner_k8s_keys *out, jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (k == NULL || out == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_k8s_fetch_keys: missing handle or output");

    V1__FetchKeysRequest req = V1__FETCH_KEYS_REQUEST__INIT;
    rc = unary_call(k->client, M_K8S_FETCH_KEYS, &req.base, &v1__fetch_keys_response__descriptor,
                    &msg, st);
    if (rc != 0)
        goto out;
    V1__FetchKeysResponse *resp = (V1__FetchKeysResponse *)msg;
    if (resp->n_keys > JWTSIGNER_K8S_KEYS_MAX) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "malformed response: %zu keys, more than %d",
                        resp->n_keys, JWTSIGNER_K8S_KEYS_MAX);
        goto out;
    }
    const Google__Protobuf__Timestamp *ts = resp->data_timestamp;
    if (ts == NULL || ts->seconds < 0 || ts->seconds > TIMESTAMP_SECONDS_MAX || ts->nanos < 0 ||
        ts->nanos > NANOS_MAX) {
        rc = set_status(st, GRPC_STATUS_INTERNAL, "malformed response: data_timestamp is %s",
                        ts == NULL ? "missing" : "outside 1970-01-01..9999-12-31");
        goto out;
    }
    if (resp->refresh_hint_seconds <= 0) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: refresh_hint_seconds is %lld, not positive",
                        (long long)resp->refresh_hint_seconds);
        goto out;
    }
    if (resp->n_keys > 0) {
        out->keys = calloc(resp->n_keys, sizeof(*out->keys));
        if (out->keys == NULL) {
            rc = set_status(st, GRPC_STATUS_INTERNAL, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < resp->n_keys; i++) {
        out->count = i + 1; /* so a failure below frees what key i holds */
        rc = k8s_copy_key(resp->keys[i], i, &out->keys[i], st);
        if (rc != 0)
            goto out;
        /* A verifier picks the key by kid: two keys under one kid are ambiguous. */
        for (size_t j = 0; j < i; j++)
            if (strcmp(out->keys[j].key_id, out->keys[i].key_id) == 0) {
                char shown[KID_SHOWN];
                copy_printable(shown, sizeof(shown), out->keys[i].key_id);
                rc = set_status(st, GRPC_STATUS_INTERNAL,
                                "malformed response: key_id '%s' appears twice", shown);
                goto out;
            }
    }
    out->data_timestamp_seconds = ts->seconds;
    out->data_timestamp_nanos = ts->nanos;
    out->refresh_hint_seconds = resp->refresh_hint_seconds;
out:
    if (rc != 0)
        jwtsigner_k8s_keys_clear(out);
    free_reply(msg);
    return rc;
}

int jwtsigner_k8s_metadata(jwtsigner_k8s *k, int64_t *max_token_expiration_seconds,
                           jwtsigner_status *st)
{
    jwtsigner_status local;
    int rc = 0;
    ProtobufCMessage *msg = NULL;

    if (st == NULL)
        st = &local;
    if (max_token_expiration_seconds != NULL)
        *max_token_expiration_seconds = 0;
    if (k == NULL || max_token_expiration_seconds == NULL)
        return set_status(st, GRPC_STATUS_INVALID_ARGUMENT,
                          "jwtsigner_k8s_metadata: missing handle or output");

    V1__MetadataRequest req = V1__METADATA_REQUEST__INIT;
    rc = unary_call(k->client, M_K8S_METADATA, &req.base, &v1__metadata_response__descriptor, &msg,
                    st);
    if (rc != 0)
        goto out;
    V1__MetadataResponse *resp = (V1__MetadataResponse *)msg;
    if (resp->max_token_expiration_seconds < JWTSIGNER_K8S_MIN_MAX_EXPIRATION) {
        rc = set_status(st, GRPC_STATUS_INTERNAL,
                        "malformed response: max_token_expiration_seconds is %lld, below "
                        "kube-apiserver's minimum of %d",
                        (long long)resp->max_token_expiration_seconds,
                        JWTSIGNER_K8S_MIN_MAX_EXPIRATION);
        goto out;
    }
    *max_token_expiration_seconds = resp->max_token_expiration_seconds;
out:
    free_reply(msg);
    return rc;
}
