/*
 * audit_gen.c - writes a real audit log without the signer daemon, for the
 * jwt-audit integration tests: the auditlog.h writer (group commit,
 * checkpoints, rotation) with an in-process OpenSSL P-256 key as the
 * checkpoint signer (ES256, JOSE r||s as RFC 7518 §3.4 requires), and a
 * deterministic mix of allowed, denied and rate-limited requests.
 *
 *   audit_gen DIR COUNT [OTHER_PUBKEY_PEM]
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
 * AUDIT_GEN_STALL_MS=N: before closing, stay idle with one checkpoint
 * signature taking N ms (a stalled heartbeat: the next checkpoint records
 * late_ms and late_why "sign", FORMAT.md §5.1), for the test vectors.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auditlog.h"

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

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: audit_gen DIR COUNT [OTHER_PUBKEY_PEM]\n");
        return 2;
    }
    char *end = NULL;
    unsigned long count = strtoul(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || count > 100000) {
        fprintf(stderr, "audit_gen: COUNT must be 0..100000\n");
        return 2;
    }
    EVP_PKEY *key = EVP_EC_gen("P-256");
    char *pem = key != NULL ? pubkey_pem(key) : NULL;
    if (pem == NULL) {
        fprintf(stderr, "audit_gen: cannot make a P-256 key\n");
        EVP_PKEY_free(key);
        return 1;
    }
    if (argc == 4 && !write_other_key(argv[3])) {
        fprintf(stderr, "audit_gen: cannot write %s\n", argv[3]);
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
        .origin = "test.jwt-signer.example/audit-gen",
        .checkpoint_interval_ms = 200,
        .checkpoint_records = 50,
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
