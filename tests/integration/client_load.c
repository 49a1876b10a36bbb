/*
 * client_load.c - load driver for integration tests: N threads share ONE
 * jwtsigner_client handle and together make M SignJwt calls (or, with
 * --introspect FILE, M Status/Introspect calls of FILE's tokens: load_args.h).
 *
 * Prints one JSON summary line on stdout:
 *   {"total":M,"answered":A,"ok":K,"by_code":{"OK":..,...},"deadline_exceeded":D,
 *    "elapsed_s":..,"per_second":..,"ok_per_second":..}
 * per_second counts all calls, ok_per_second successful ones. A call is
 * "answered" if it ended with any status but DEADLINE_EXCEEDED; an
 * introspection answered {"active": false} counts as "INACTIVE", not ok. With
 * --out FILE, each successful SignJwt call adds a line "jti jwt" for audit
 * cross-checks (and for --introspect).
 * The first message seen for each failing status goes to stderr.
 * Exit 0 if every call was answered, 1 otherwise, 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jwtsigner_client.h"
#include "load_args.h"

#define NCODES               18 /* gRPC status codes 0..16 and LOAD_INACTIVE */
#define THREADS_MAX          1024
#define REQUESTS_MAX         100000000L
#define ST_DEADLINE_EXCEEDED 4

typedef struct shared {
    jwtsigner_client *client;
    const load_args *la;
    long total;
    atomic_long next; /* index of the next call to make */
    FILE *out;        /* NULL without --out */
    pthread_mutex_t out_lock;
    atomic_int out_failed;
} shared;

typedef struct worker {
    shared *sh;
    pthread_t tid;
    long by_code[NCODES];
    char first_msg[NCODES][JWTSIGNER_MSG_MAX];
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;

    for (;;) {
        long i = atomic_fetch_add(&sh->next, 1);
        if (i >= sh->total)
            break;
        char request_id[32];
        snprintf(request_id, sizeof(request_id), "load-%ld", i);
        jwtsigner_token tok;
        jwtsigner_status st;
        int code = load_call(sh->la, sh->client, i, request_id, &tok, &st);
        if (code < 0 || code >= NCODES)
            code = 2; /* UNKNOWN; the library never returns this, but stay in bounds */
        w->by_code[code]++;
        if (code != 0 && w->first_msg[code][0] == '\0')
            snprintf(w->first_msg[code], sizeof(w->first_msg[code]), "%s",
                     st.message[0] ? st.message : "(no message)");
        if (code == 0 && sh->out != NULL && tok.jwt != NULL) {
            pthread_mutex_lock(&sh->out_lock);
            if (fprintf(sh->out, "%s %s\n", tok.jti, tok.jwt) < 0)
                atomic_store(&sh->out_failed, 1);
            pthread_mutex_unlock(&sh->out_lock);
        }
        jwtsigner_token_clear(&tok);
    }
    return NULL;
}

static void usage(FILE *f)
{
    fputs("Usage: client_load --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
          "                   --threads N --requests M (--claims JSON | --introspect FILE)\n"
          "                   [--key-name K] [--timeout-ms MS] [--out FILE]\n",
          f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"threads", required_argument, NULL, 'n'}, {"requests", required_argument, NULL, 'm'},
        {"out", required_argument, NULL, 'o'},     LOAD_ARGS_LONGOPTS,
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    load_args la = {0};
    const char *out_path = NULL;
    long threads = 0, requests = -1;
    int opt, rc = 1;
    shared sh;
    worker *workers = NULL;
    long started = 0;

    memset(&sh, 0, sizeof(sh));
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int shared_opt = load_args_take("client_load", opt, optarg, &la);
        if (shared_opt < 0)
            return 2;
        if (shared_opt > 0)
            continue;
        switch (opt) {
        case 'n':
            if (load_parse_long(optarg, 1, THREADS_MAX, &threads) != 0) {
                fprintf(stderr, "client_load: --threads must be 1..%d\n", THREADS_MAX);
                return 2;
            }
            break;
        case 'm':
            if (load_parse_long(optarg, 0, REQUESTS_MAX, &requests) != 0) {
                fprintf(stderr, "client_load: --requests must be 0..%ld\n", REQUESTS_MAX);
                return 2;
            }
            break;
        case 'o':
            out_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !load_args_complete(&la) || threads == 0 || requests < 0) {
        usage(stderr);
        return 2;
    }
    if (load_args_prepare("client_load", &la) != 0)
        return 1;

    jwtsigner_status st;
    sh.client = jwtsigner_client_new(&la.opts, &st);
    if (sh.client == NULL) {
        fprintf(stderr, "client_load: %s: %s\n", jwtsigner_status_name(st.code), st.message);
        load_args_cleanup(&la);
        return 1;
    }
    sh.la = &la;
    sh.total = requests;
    atomic_init(&sh.next, 0);
    atomic_init(&sh.out_failed, 0);
    pthread_mutex_init(&sh.out_lock, NULL);
    if (out_path != NULL) {
        sh.out = fopen(out_path, "w");
        if (sh.out == NULL) {
            fprintf(stderr, "client_load: cannot open %s: %s\n", out_path, strerror(errno));
            goto out;
        }
    }
    workers = calloc((size_t)threads, sizeof(*workers));
    if (workers == NULL) {
        fprintf(stderr, "client_load: out of memory\n");
        goto out;
    }

    double t0 = now_s();
    for (started = 0; started < threads; started++) {
        workers[started].sh = &sh;
        int e = pthread_create(&workers[started].tid, NULL, worker_main, &workers[started]);
        if (e != 0) {
            fprintf(stderr, "client_load: pthread_create: %s\n", strerror(e));
            /* Stop the others from taking more work, then join them below. */
            atomic_store(&sh.next, sh.total);
            break;
        }
    }
    for (long i = 0; i < started; i++)
        pthread_join(workers[i].tid, NULL);
    double elapsed = now_s() - t0;
    if (started < threads)
        goto out;

    long by_code[NCODES] = {0};
    for (long i = 0; i < threads; i++)
        for (int k = 0; k < NCODES; k++)
            by_code[k] += workers[i].by_code[k];
    long done = 0;
    for (int k = 0; k < NCODES; k++)
        done += by_code[k];
    long answered = done - by_code[ST_DEADLINE_EXCEEDED];

    printf("{\"total\":%ld,\"answered\":%ld,\"ok\":%ld,\"by_code\":{", requests, answered,
           by_code[0]);
    int first = 1;
    for (int k = 0; k < NCODES; k++) {
        if (by_code[k] == 0)
            continue;
        printf("%s\"%s\":%ld", first ? "" : ",", load_status_name(k), by_code[k]);
        first = 0;
    }
    printf("},\"deadline_exceeded\":%ld,\"elapsed_s\":%.3f,\"per_second\":%.1f,"
           "\"ok_per_second\":%.1f}\n",
           by_code[ST_DEADLINE_EXCEEDED], elapsed, elapsed > 0 ? (double)done / elapsed : 0.0,
           elapsed > 0 ? (double)by_code[0] / elapsed : 0.0);

    for (int k = 1; k < NCODES; k++) {
        for (long i = 0; i < threads; i++) {
            if (workers[i].first_msg[k][0] != '\0') {
                fprintf(stderr, "client_load: %ld x %s, e.g.: %s\n", by_code[k],
                        load_status_name(k), workers[i].first_msg[k]);
                break;
            }
        }
    }
    rc = (answered == requests && done == requests) ? 0 : 1;
out:
    if (sh.out != NULL) {
        if (fclose(sh.out) != 0 || atomic_load(&sh.out_failed)) {
            fprintf(stderr, "client_load: writing %s failed\n", out_path);
            rc = 1;
        }
    }
    if (fflush(stdout) != 0)
        rc = 1;
    free(workers);
    pthread_mutex_destroy(&sh.out_lock);
    jwtsigner_client_free(sh.client);
    load_args_cleanup(&la);
    return rc;
}
