/*
 * test_audit_util.h - shared helpers of the audit unit tests: a test audit key
 * (OpenSSL P-256 in place of the HSM) and its sign callback, temporary
 * directories, whole-file reads, sleeping and polling with a deadline,
 * appending records and verifying a log directory. Header-only (static) so
 * each test stays one file per module; include it after <cmocka.h> (the
 * helpers assert).
 */
#ifndef TEST_AUDIT_UTIL_H
#define TEST_AUDIT_UTIL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auditlog.h"
#include "clock.h"
#include "reader.h"
#include "verify.h"

typedef struct test_key {
    EVP_PKEY *pkey;
    char *pem; /* public key PEM */
} test_key;

static inline void test_key_init(test_key *k)
{
    k->pkey = EVP_EC_gen("P-256");
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k->pkey);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    k->pem = calloc(1, (size_t)n + 1);
    memcpy(k->pem, p, (size_t)n);
    BIO_free(b);
}

static inline void test_key_free(test_key *k)
{
    EVP_PKEY_free(k->pkey);
    free(k->pem);
}

/* js_audit_sign_fn: ES256 with the test key, JOSE r||s (RFC 7518 §3.4). */
static inline js_status test_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig,
                                  size_t cap, size_t *sig_len, js_err *err)
{
    test_key *k = ctx;
    uint8_t der[80];
    size_t dlen = sizeof(der);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    int ok = EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
             EVP_DigestSign(m, der, &dlen, msg, len) == 1;
    EVP_MD_CTX_free(m);
    if (!ok || cap < 64)
        return js_err_set(err, JS_EUNAVAIL, JS_R_HSM_SIGN, "test signing failed");
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(es, &r, &s);
    BN_bn2binpad(r, sig, 32);
    BN_bn2binpad(s, sig + 32, 32);
    ECDSA_SIG_free(es);
    *sig_len = 64;
    return JS_OK;
}

static inline void tmpdir_make(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/test_audit_XXXXXX");
    if (mkdtemp(out) == NULL)
        abort();
}

static inline void tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    char p[1024];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline uint8_t *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    b[*len] = 0;
    fclose(f);
    return b;
}

static inline void file_write(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        abort();
    fwrite(data, 1, len, f);
    fclose(f);
}

static inline void test_opts(js_audit_options *o, const char *dir, test_key *k)
{
    memset(o, 0, sizeof(*o));
    o->dir = dir;
    o->origin = "test.example/audit";
    o->sign = test_sign;
    o->sign_ctx = k;
    o->pubkey_pem = k->pem;
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls cond(ctx) every 10 ms until it holds or timeout_ms have passed on the
 * monotonic clock; returns whether it held. For an outcome the writer thread
 * reaches in its own time: a fixed sleep is too short on a slow (sanitizer,
 * loaded CI) machine, a generous deadline costs nothing when it passes. */
static inline bool test_poll_until(bool (*cond)(void *ctx), void *ctx, int64_t timeout_ms)
{
    int64_t until = js_mono_ms() + timeout_ms;
    for (;;) {
        if (cond(ctx))
            return true;
        if (js_mono_ms() >= until)
            return cond(ctx);
        sleep_ms(10);
    }
}

/* Appends n "sign" records request_id PREFIX-0..n-1 and waits for each. */
static inline void submit_n(js_audit *a, int n, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char rid[64];
        snprintf(rid, sizeof(rid), "%s-%d", prefix, i);
        js_audit_event ev = {
            .type = "sign", .caller = "c", .request_id = rid, .decision = "allow", .reason = "ok"};
        uint64_t seq = 0;
        js_err err;
        assert_int_equal(js_audit_append_sync(a, &ev, &seq, &err), JS_OK);
        assert_true(seq > 0);
    }
}

/* Verifies every segment in dir with the first key pubkey_path, the key
 * files keys[0..nkeys) and, when cp_file, dir/checkpoint.json; max_gap_ms 0
 * = the verifier's default. The verify call itself must succeed (rep says
 * whether the log is intact). */
static inline void test_verify_dir(const char *dir, const char *pubkey_path,
                                   const char *const *keys, size_t nkeys, bool cp_file,
                                   uint64_t max_gap_ms, js_audit_verify_report *rep)
{
    char **paths = NULL;
    size_t n = 0;
    js_err err;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    assert_true(n > 0);
    char cpf[512];
    snprintf(cpf, sizeof(cpf), "%s/checkpoint.json", dir);
    js_audit_verify_opts vo = {.segments = (const char *const *)paths,
                               .n_segments = n,
                               .pubkey_path = pubkey_path,
                               .key_paths = keys,
                               .n_key_paths = nkeys,
                               .checkpoint_path = cp_file ? cpf : NULL,
                               .max_gap_ms = max_gap_ms};
    assert_int_equal(js_audit_verify(&vo, rep, &err), JS_OK);
    js_audit_segments_free(paths, n);
}

#endif
