/*
 * bench_hsm.c - raw HSM signing throughput: N threads, each with its own
 * PKCS#11 session, sign a 32-byte-digest message in a loop for a fixed time
 * through lib/hsm/hsm.c (C_SignInit + C_Sign per signature, nothing else).
 * This is the ceiling the end-to-end benchmark (bench.py) is compared with,
 * measured in the same run on the same token.
 *
 * It also reports the process CPU time (getrusage RUSAGE_SELF, user +
 * system, over the signing loop only) per signature: the HSM's own cost of a
 * token, which bench.py sets against the signer's CPU per token. SoftHSM
 * runs in this process, so RUSAGE_SELF is all of it; the main thread only
 * waits in pthread_join meanwhile.
 *
 *   bench_hsm MODULE TOKEN_URI PIN_FILE LABEL THREADS SECONDS
 * prints one JSON line:
 *   {"threads":N,"signatures":S,"seconds":T,"per_second":R,"cpu_us_per_signature":C}
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/crypto.h>

#include "clock.h"
#include "hsm.h"

typedef struct bench {
    js_hsm *hsm;
    const js_hsm_key *key;
    double seconds;
    atomic_ullong total;
    atomic_int failed;
} bench;

static double now_s(void)
{
    return (double)js_mono_ns() / 1e9;
}

/* User + system CPU time of the whole process so far, in microseconds. */
static double cpu_us(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void *run(void *arg)
{
    bench *b = arg;
    js_hsm_session *s = NULL;
    js_err err;
    if (js_hsm_session_open(b->hsm, &s, &err) != JS_OK) {
        atomic_store(&b->failed, 1);
        return NULL;
    }
    static const uint8_t msg[] = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9";
    unsigned long long n = 0;
    double end = now_s() + b->seconds;
    while (now_s() < end) {
        uint8_t sig[JS_SIG_MAX];
        size_t len = 0;
        for (int i = 0; i < 64; i++) {
            if (js_hsm_sign(s, b->key, msg, sizeof(msg) - 1, sig, sizeof(sig), &len, &err) !=
                JS_OK) {
                atomic_store(&b->failed, 1);
                goto out;
            }
            n++;
        }
    }
out:
    atomic_fetch_add(&b->total, n);
    js_hsm_session_free(s);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s MODULE TOKEN_URI PIN_FILE LABEL THREADS SECONDS\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    long threads = strtol(argv[5], &end, 10);
    if (*end != '\0' || threads < 1 || threads > 64)
        return 2;
    double seconds = strtod(argv[6], &end);
    if (*end != '\0' || seconds <= 0 || seconds > 600)
        return 2;
    char pin[JS_HSM_PIN_MAX + 2] = "";
    FILE *f = fopen(argv[3], "r");
    if (f == NULL || fgets(pin, sizeof(pin), f) == NULL) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        return 1;
    }
    fclose(f);
    pin[strcspn(pin, "\r\n")] = '\0';

    js_err err;
    bench b = {.seconds = seconds};
    js_hsm_session *s = NULL;
    js_hsm_key *key = NULL;
    if (js_hsm_open(argv[1], argv[2], pin, strlen(pin), &b.hsm, &err) != JS_OK ||
        js_hsm_session_open(b.hsm, &s, &err) != JS_OK ||
        js_hsm_key_find(b.hsm, s, argv[4], JS_ALG_ES256, &key, &err) != JS_OK) {
        OPENSSL_cleanse(pin, sizeof(pin));
        fprintf(stderr, "bench_hsm: %s\n", err.msg);
        return 1;
    }
    OPENSSL_cleanse(pin, sizeof(pin));
    b.key = key;
    pthread_t tids[64];
    double cpu0 = cpu_us();
    double t0 = now_s();
    for (long i = 0; i < threads; i++)
        pthread_create(&tids[i], NULL, run, &b);
    for (long i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    double elapsed = now_s() - t0;
    double cpu = cpu_us() - cpu0;
    unsigned long long total = atomic_load(&b.total);
    printf("{\"threads\":%ld,\"signatures\":%llu,\"seconds\":%.3f,\"per_second\":%.1f,"
           "\"cpu_us_per_signature\":%.2f}\n",
           threads, total, elapsed, (double)total / elapsed, total > 0 ? cpu / (double)total : 0.0);
    js_hsm_key_free(key);
    js_hsm_session_free(s);
    js_hsm_free(b.hsm);
    return atomic_load(&b.failed) ? 1 : 0;
}
