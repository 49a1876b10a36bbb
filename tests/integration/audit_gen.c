/*
 * audit_gen.c - writes a real audit log without the signer daemon, for the
 * jwt-audit integration tests: the auditlog.h writer (group commit,
 * checkpoints, rotation) with an in-process OpenSSL P-256 key as the
 * checkpoint signer (ES256, JOSE r||s as RFC 7518 §3.4 requires), and a
 * deterministic mix of allowed, denied and rate-limited requests.
 *
 *   audit_gen [--tokens] [--ttl S] [--key-out FILE] [--origin O] DIR COUNT [OTHER_PUBKEY_PEM]
 *
 * Record i (0-based) of COUNT: caller "spiffe://test/svc-(i % 3)" (the last
 * quarter of the records come from "spiffe://test/late" instead), denied
 * with reason "policy.aud_not_allowed" when i % 4 == 3, else allowed with
 * reason "ok" and jti "jti-%05d" (i); sub "user-(i % 5)", key "main", kid
 * "kid-1". Then 7 rate-limited denials of svc-0 (folded by the writer).
 * The audit public key is written by the log to DIR/audit-key.pem; an
 * unrelated public key goes to OTHER_PUBKEY_PEM (wrong-key tests).
 * Prints a JSON summary of what was submitted to stdout.
 *
 * --tokens: instead, COUNT (up to 10,000,000) "sign" allow records of live
 * tokens as the signer writes them when it issues one (service.c), and
 * nothing else: record i has jti "t" + i in 21 digits (22 characters, as
 * long as the signer's), token_sha256 = SHA-256 of the jti (distinct per
 * token), caller "spiffe://example.org/issuer-(i % 8)", sub "user-(i %
 * 100000)", aud "https://api.example.com", scopes "read write", a 43-character
 * kid, iat now and exp now + --ttl (default 3600 s). The signer rebuilds its
 * issued-token index from these at start (make bench: its memory per token
 * and rebuild time). For speed the log is written without fdatasync and
 * with a checkpoint every 10,000 records. --key-out FILE writes the
 * checkpoint key (PKCS#8 PEM, mode 0600, O_EXCL) so it can be imported into
 * the HSM as the signer's audit key (the signer verifies the last
 * checkpoint with it at start); --origin O sets the log's origin (the
 * signer refuses a log whose origin is not its audit.origin or issuer).
 *
 * AUDIT_GEN_STALL_MS=N: before closing, stay idle with one checkpoint
 * signature taking N ms (a stalled heartbeat: the next checkpoint records
 * late_ms and late_why "sign", FORMAT.md §5.1), for the test vectors.
 */
#include <fcntl.h>
#include <getopt.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include "auditlog.h"
#include "hex.h"

#define COUNT_MAX        100000UL
#define TOKENS_COUNT_MAX 10000000UL
#define TTL_MAX          (366L * 86400)

/* The checkpoint signer: the key, and a one-time delay armed by main. */
typedef struct gen_signer {
    EVP_PKEY *key;
    _Atomic long stall_ms;
} gen_signer;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static js_status sign_es256(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                            size_t *sig_len, js_err *err)
{
    gen_signer *gs = ctx;
    long stall = atomic_exchange(&gs->stall_ms, 0);
    if (stall > 0)
        sleep_ms(stall);
    EVP_PKEY *key = gs->key;
    uint8_t der[128];
    size_t der_len = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && cap >= 64 &&
             EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, der, &der_len, msg, len) == 1;
    EVP_MD_CTX_free(md);
    ECDSA_SIG *es = NULL;
    if (ok) {
        const unsigned char *p = der;
        es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
        ok = es != NULL && BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) == 32 &&
             BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) == 32;
    }
    ECDSA_SIG_free(es);
    if (!ok)
        return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_SIGN, "ES256 signing failed");
    *sig_len = 64;
    return JS_OK;
}

static char *pubkey_pem(EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b != NULL && PEM_write_bio_PUBKEY(b, key) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(b, &data);
        out = n > 0 ? malloc((size_t)n + 1) : NULL;
        if (out != NULL) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(b);
    return out;
}

/* An unrelated P-256 public key, for wrong-key tests. */
static bool write_other_key(const char *path)
{
    EVP_PKEY *other = EVP_EC_gen("P-256");
    char *opem = other != NULL ? pubkey_pem(other) : NULL;
    FILE *f = opem != NULL ? fopen(path, "w") : NULL;
    bool ok = f != NULL && fputs(opem, f) >= 0;
    if (f != NULL && fclose(f) != 0)
        ok = false;
    free(opem);
    EVP_PKEY_free(other);
    return ok;
}

/* The checkpoint key's private half, PKCS#8 PEM, to a new file only the
 * owner can read (for importing into the HSM). */
static bool write_private_key(const char *path, EVP_PKEY *key)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    bool ok = PEM_write_PKCS8PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
    if (fclose(f) != 0)
        ok = false;
    return ok;
}

/* --tokens: COUNT sign records of live tokens (see the top of the file).
 * Every 1,000th is appended synchronously, which bounds the queue. */
static bool write_tokens(js_audit *a, unsigned long count, long ttl)
{
    int64_t now = (int64_t)time(NULL);
    static const char kid[] = "kHgWv1pZ3n8QxR2cT5yB7dL0fJ4mA6sE9uK1oP3wX5z";
    for (unsigned long i = 0; i < count; i++) {
        char caller[64], jti[32], sub[32], sha_hex[2 * SHA256_DIGEST_LENGTH + 1];
        uint8_t sha[SHA256_DIGEST_LENGTH];
        snprintf(caller, sizeof caller, "spiffe://example.org/issuer-%lu", i % 8);
        snprintf(jti, sizeof jti, "t%021lu", i);
        snprintf(sub, sizeof sub, "user-%lu", i % 100000);
        SHA256((const unsigned char *)jti, strlen(jti), sha);
        js_hex_encode(sha, sizeof sha, sha_hex);
        js_audit_event ev = {
            .type = "sign",
            .caller = caller,
            .peer = "127.0.0.1:5555",
            .request_id = jti,
            .decision = "allow",
            .reason = "ok",
            .key = "main",
            .kid = kid,
            .alg = "ES256",
            .jti = jti,
            .sub = sub,
            .aud_json = "\"https://api.example.com\"",
            .iat = now,
            .exp = now + ttl,
            .scopes = "read write",
            .token_sha256 = sha_hex,
        };
        js_err err;
        uint64_t seq = 0;
        js_status st = i % 1000 == 999 ? js_audit_append_sync(a, &ev, &seq, &err)
                                       : js_audit_submit(a, &ev, NULL, NULL, &err);
        if (st != JS_OK) {
            fprintf(stderr, "audit_gen: token record %lu: %s\n", i, err.msg);
            return false;
        }
    }
    return true;
}

static void usage(FILE *f)
{
    fputs("usage: audit_gen [--tokens] [--ttl S] [--key-out FILE] [--origin O] DIR COUNT "
          "[OTHER_PUBKEY_PEM]\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tokens", no_argument, NULL, 'T'},        {"ttl", required_argument, NULL, 't'},
        {"key-out", required_argument, NULL, 'k'}, {"origin", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    bool tokens = false;
    long ttl = 3600;
    const char *key_out = NULL;
    const char *origin = "test.jwt-signer.example/audit-gen";
    char *end = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'T':
            tokens = true;
            break;
        case 't':
            errno = 0;
            ttl = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || ttl < 1 || ttl > TTL_MAX) {
                fprintf(stderr, "audit_gen: --ttl must be 1..%ld seconds\n", TTL_MAX);
                return 2;
            }
            break;
        case 'k':
            key_out = optarg;
            break;
        case 'o':
            origin = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    argc -= optind - 1;
    argv += optind - 1;
    if (argc < 3 || argc > 4) {
        usage(stderr);
        return 2;
    }
    unsigned long count_max = tokens ? TOKENS_COUNT_MAX : COUNT_MAX;
    errno = 0;
    unsigned long count = strtoul(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0' || argv[2][0] == '-' || count > count_max) {
        fprintf(stderr, "audit_gen: COUNT must be 0..%lu\n", count_max);
        return 2;
    }
    EVP_PKEY *key = EVP_EC_gen("P-256");
    char *pem = key != NULL ? pubkey_pem(key) : NULL;
    if (pem == NULL) {
        fprintf(stderr, "audit_gen: cannot make a P-256 key\n");
        EVP_PKEY_free(key);
        return 1;
    }
    const char *failed = argc == 4 && !write_other_key(argv[3])                ? argv[3]
                         : key_out != NULL && !write_private_key(key_out, key) ? key_out
                                                                               : NULL;
    if (failed != NULL) {
        fprintf(stderr, "audit_gen: cannot write %s\n", failed);
        free(pem);
        EVP_PKEY_free(key);
        return 1;
    }

    long stall_ms = 0;
    const char *stall = getenv("AUDIT_GEN_STALL_MS");
    if (stall != NULL) {
        stall_ms = strtol(stall, &end, 10);
        if (end == stall || *end != '\0' || stall_ms < 1 || stall_ms > 60000) {
            fprintf(stderr, "audit_gen: AUDIT_GEN_STALL_MS must be 1..60000\n");
            free(pem);
            EVP_PKEY_free(key);
            return 2;
        }
    }
    gen_signer gs = {.key = key};
    atomic_init(&gs.stall_ms, 0);
    js_audit_options opts = {
        .dir = argv[1],
        .origin = origin,
        .checkpoint_interval_ms = tokens ? 1000 : 200,
        .checkpoint_records = tokens ? 10000 : 50,
        .no_fsync = tokens,
        .sign = sign_es256,
        .sign_ctx = &gs,
        .pubkey_pem = pem,
    };
    /* AUDIT_GEN_SEGMENT_BYTES: a small rotation size, for logs of several
     * segments (segment order tests). */
    const char *segbytes = getenv("AUDIT_GEN_SEGMENT_BYTES");
    if (segbytes != NULL)
        opts.segment_bytes = strtoull(segbytes, NULL, 10);
    js_audit *a = NULL;
    js_err err;
    if (js_audit_open(&opts, &a, &err) != JS_OK) {
        fprintf(stderr, "audit_gen: open: %s\n", err.msg);
        free(pem);
        EVP_PKEY_free(key);
        return 1;
    }
    if (tokens) {
        bool ok = write_tokens(a, count, ttl);
        js_audit_close(a);
        if (ok)
            printf("{\"records\":%lu,\"tokens\":%lu,\"ttl\":%ld}\n", count, count, ttl);
        free(pem);
        EVP_PKEY_free(key);
        return ok ? 0 : 1;
    }
    /* Lifecycle records as the daemon writes them (signer/core/lifecycle.c,
     * for jwt-signerd and the control plane): no caller, or a pseudo-caller
     * ("start", "SIGHUP"), and a decision that is an event, not a request
     * outcome. jwt-audit stats must list them apart from requests. */
    const js_audit_event life[] = {
        {.type = "start", .detail_json = "{\"version\":\"audit_gen\"}"},
        {.type = "key",
         .caller = "start",
         .decision = "active",
         .detail_json = "{\"key\":\"main\"}"},
        {.type = "policy",
         .caller = "SIGHUP",
         .decision = "error",
         .reason = "policy.invalid",
         .message = "policy.yaml: bad entry"},
        {.type = "policy", .caller = "SIGHUP", .decision = "reload"},
        {.type = "incident", .caller = "spiffe://test/ops", .decision = "on"},
    };
    for (size_t i = 0; i < sizeof life / sizeof life[0]; i++) {
        uint64_t seq = 0;
        if (js_audit_append_sync(a, &life[i], &seq, &err) != JS_OK) {
            fprintf(stderr, "audit_gen: lifecycle record %zu: %s\n", i, err.msg);
            js_audit_close(a);
            free(pem);
            EVP_PKEY_free(key);
            return 1;
        }
    }
    unsigned long allowed = 0, denied = 0;
    for (unsigned long i = 0; i < count; i++) {
        char caller[64], jti[32], sub[32];
        if (i >= count - count / 4)
            snprintf(caller, sizeof caller, "spiffe://test/late");
        else
            snprintf(caller, sizeof caller, "spiffe://test/svc-%lu", i % 3);
        snprintf(jti, sizeof jti, "jti-%05lu", i);
        snprintf(sub, sizeof sub, "user-%lu", i % 5);
        bool deny = i % 4 == 3;
        js_audit_event ev = {
            .type = "sign",
            .caller = caller,
            .peer = "127.0.0.1:5555",
            .request_id = jti,
            .decision = deny ? "deny" : "allow",
            .reason = deny ? "policy.aud_not_allowed" : "ok",
            .key = "main",
            .kid = "kid-1",
            .alg = "ES256",
            .jti = deny ? NULL : jti,
            .sub = sub,
            .aud_json = "\"https://api.example\"",
            .iat = deny ? 0 : 1795000000,
            .exp = deny ? 0 : 1795000900,
            .token_sha256 =
                deny ? NULL : "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        };
        if (deny)
            denied++;
        else
            allowed++;
        /* Every 10th synchronously: group commit sees both small and big
         * batches. */
        uint64_t seq = 0;
        js_status st = i % 10 == 9 ? js_audit_append_sync(a, &ev, &seq, &err)
                                   : js_audit_submit(a, &ev, NULL, NULL, &err);
        if (st != JS_OK) {
            fprintf(stderr, "audit_gen: record %lu: %s\n", i, err.msg);
            js_audit_close(a);
            free(pem);
            EVP_PKEY_free(key);
            return 1;
        }
    }
    for (int i = 0; i < 7; i++)
        js_audit_note_folded(a, "sign", "spiffe://test/svc-0", NULL,
                             js_reason_name(JS_R_RATE_LIMITED));
    /* Denials beyond the denial budget (FORMAT.md §3.1): an identity that
     * matches no policy entry, and a peer without an identity. */
    for (int i = 0; i < 40; i++)
        js_audit_note_folded(a, "sign", "dns:intruder.example", NULL, "policy.no_match");
    for (int i = 0; i < 9; i++)
        js_audit_note_folded(a, "sign", NULL, "127.0.0.9", "identity.invalid");
    if (stall_ms > 0) {
        /* Idle: the folds and an interval checkpoint go out, then one
         * signature stalls, and the heartbeat after it is late. */
        sleep_ms(1500);
        atomic_store(&gs.stall_ms, stall_ms);
        sleep_ms(stall_ms + 800);
    }
    js_audit_close(a);
    printf("{\"records\":%lu,\"allowed\":%lu,\"denied\":%lu,\"rate_limited\":7,"
           "\"folded\":49,\"lifecycle\":{\"start\":1,\"key\":1,\"policy\":2,\"incident\":1}}\n",
           count, allowed, denied);
    free(pem);
    EVP_PKEY_free(key);
    return 0;
}
