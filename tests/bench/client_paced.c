/*
 * client_paced.c - paced (open-loop) load generator for make bench: SignJwt
 * calls (or, with --introspect FILE, Status/Introspect calls of FILE's
 * tokens: load_args.h) sent on a fixed schedule, latency measured from the
 * SCHEDULED send time.
 *
 * A closed-loop driver (client_load) waits for each reply before sending the
 * next request, so when the signer stalls it simply stops sending and the
 * stall shows up as one slow call instead of as every call that should have
 * been sent meanwhile ("coordinated omission"). Here call i is due at
 * t0 + i/RATE on CLOCK_MONOTONIC whatever happened before; a pool of sender
 * threads takes the slots in order (one atomic counter), each sleeps until its
 * slot's time (clock_nanosleep TIMER_ABSTIME), sends, and records
 * completion - scheduled. A stall, or a pool too small to keep up, therefore
 * counts against every call it delayed; "late_sends" says how many calls left
 * more than 1 ms after their slot (the generator itself fell behind).
 *
 * Threads share --connections client handles (thread t uses handle
 * t % connections): the signer allows 64 calls in flight per connection
 * (JS_GRPC_MAX_CONCURRENT_STREAMS), so driving 1,000 concurrent calls takes
 * at least 16. Before the schedule starts, --warmup calls (not measured) open
 * the connections and warm the TLS sessions and caches.
 *
 *   client_paced --target HOST:PORT --ca FILE --cert FILE --key FILE
 *                (--claims JSON | --introspect FILE)
 *                --rate R (--duration S | --requests N) [--threads N] [--connections C]
 *                [--warmup N] [--key-name K] [--timeout-ms MS]
 *
 * Prints one JSON line on stdout:
 *   {"rate":R,"achieved":A,"count":N,"ok":K,"errors":E,"late_sends":L,"max_in_flight":M,
 *    "elapsed_s":T,"p50_ms":..,"p90_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..}
 * Percentiles are nearest-rank over every scheduled call. The first failure's
 * message goes to stderr (an introspection answered {"active": false} is a
 * failure). Exit 0 if every call succeeded, 1 otherwise, 2 on a
 * usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "jwtsigner_client.h"
#include "load_args.h"

#define THREADS_MAX     1024
#define CONNECTIONS_MAX 64
#define REQUESTS_MAX    10000000L /* 80 MB of latencies at most */
#define RATE_MAX        10000000.0
#define LATE_NS         1000000LL /* a send more than 1 ms after its slot is late */

typedef struct shared {
    jwtsigner_client **clients;
    long connections;
    const load_args *la;
    double rate;
    long total;
    long warmup;
    int64_t t0_ns;      /* slot 0's time; set by main between the barriers */
    int64_t *latency;   /* [total] completion - scheduled, ns; preallocated */
    int64_t *lag;       /* [total] actual send - scheduled, ns: the generator's own delay */
    int64_t *completed; /* [total] completion time, ns */
    atomic_long next_warm;
    atomic_long next; /* index of the next slot to take */
    atomic_long ok;
    atomic_long errors;
    atomic_long late;
    atomic_long in_flight;
    atomic_long max_in_flight;
    atomic_flag first_error;
    pthread_barrier_t warmed; /* every thread's warm-up done, main picks t0 */
    pthread_barrier_t go;     /* t0 published */
} shared;

typedef struct worker {
    shared *sh;
    long index;
    pthread_t tid;
} worker;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int one_call(shared *sh, jwtsigner_client *c, long i, const char *kind)
{
    char request_id[40];
    snprintf(request_id, sizeof(request_id), "%s-%ld", kind, i);
    jwtsigner_status st;
    int code = load_call(sh->la, c, i, request_id, NULL, &st);
    if (code != 0 && !atomic_flag_test_and_set(&sh->first_error))
        fprintf(stderr, "client_paced: %s call %ld: %s: %s%s%s\n", kind, i, load_status_name(code),
                st.message[0] ? st.message : "(no message)", st.transport[0] ? "; transport: " : "",
                st.transport);
    return code;
}

static void note_in_flight(shared *sh, long delta)
{
    long now = atomic_fetch_add(&sh->in_flight, delta) + delta;
    long max = atomic_load(&sh->max_in_flight);
    while (now > max && !atomic_compare_exchange_weak(&sh->max_in_flight, &max, now)) {
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    shared *sh = w->sh;
    jwtsigner_client *c = sh->clients[w->index % sh->connections];

    for (;;) {
        long i = atomic_fetch_add(&sh->next_warm, 1);
        if (i >= sh->warmup)
            break;
        if (one_call(sh, c, i, "warmup") != 0)
            atomic_fetch_add(&sh->errors, 1);
    }
    pthread_barrier_wait(&sh->warmed);
    pthread_barrier_wait(&sh->go);

    /* The default 50 us timer slack lets clock_nanosleep wake that much
     * after the slot, which would count against the signer; 1 ns asks for
     * the slot itself (send_lag_* in the summary shows what is left). */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    for (;;) {
        long i = atomic_fetch_add(&sh->next, 1);
        if (i >= sh->total)
            break;
        /* i / rate in ns, from the start each time: no drift from summing. */
        int64_t sched = sh->t0_ns + (int64_t)llround((double)i * 1e9 / sh->rate);
        struct timespec ts = {.tv_sec = (time_t)(sched / 1000000000LL),
                              .tv_nsec = (long)(sched % 1000000000LL)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
        }
        int64_t lag = now_ns() - sched;
        sh->lag[i] = lag;
        if (lag > LATE_NS)
            atomic_fetch_add(&sh->late, 1);
        note_in_flight(sh, 1);
        int code = one_call(sh, c, i, "paced");
        int64_t done = now_ns();
        note_in_flight(sh, -1);
        sh->latency[i] = done - sched;
        sh->completed[i] = done;
        atomic_fetch_add(code == 0 ? &sh->ok : &sh->errors, 1);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest value with at least permille/1000 of the sample
 * at or below it. Integer arithmetic: in doubles 0.999 * 1000 is a hair above
 * 999, and ceil would make p99.9 of 1,000 calls their maximum. */
static double pct_ms(const int64_t *sorted, long n, long long permille)
{
    long long rank = (permille * n + 999) / 1000;
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1e6;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static void usage(FILE *f)
{
    fputs("Usage: client_paced --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
          "                    (--claims JSON | --introspect FILE)\n"
          "                    --rate R (--duration S | --requests N) [--threads N]\n"
          "                    [--connections C] [--warmup N] [--key-name K] [--timeout-ms MS]\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"rate", required_argument, NULL, 'r'},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'm'},
        {"threads", required_argument, NULL, 'n'},
        {"connections", required_argument, NULL, 'C'},
        {"warmup", required_argument, NULL, 'w'},
        LOAD_ARGS_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    load_args la = {0};
    long threads = 64, connections = 1, requests = -1, warmup = 0;
    double rate = 0, duration = 0;
    int opt, rc = 1;
    shared sh;
    worker *workers = NULL;
    long started = 0;
    int barriers = 0;

    memset(&sh, 0, sizeof(sh));
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int shared_opt = load_args_take("client_paced", opt, optarg, &la);
        if (shared_opt < 0)
            return 2;
        if (shared_opt > 0)
            continue;
        switch (opt) {
        case 'r':
            if (parse_double(optarg, 0.001, RATE_MAX, &rate) != 0) {
                fprintf(stderr, "client_paced: --rate must be 0.001..%.0f\n", RATE_MAX);
                return 2;
            }
            break;
        case 'd':
            if (parse_double(optarg, 0.001, 3600, &duration) != 0) {
                fprintf(stderr, "client_paced: --duration must be 0.001..3600 seconds\n");
                return 2;
            }
            break;
        case 'm':
            if (load_parse_long(optarg, 1, REQUESTS_MAX, &requests) != 0) {
                fprintf(stderr, "client_paced: --requests must be 1..%ld\n", REQUESTS_MAX);
                return 2;
            }
            break;
        case 'n':
            if (load_parse_long(optarg, 1, THREADS_MAX, &threads) != 0) {
                fprintf(stderr, "client_paced: --threads must be 1..%d\n", THREADS_MAX);
                return 2;
            }
            break;
        case 'C':
            if (load_parse_long(optarg, 1, CONNECTIONS_MAX, &connections) != 0) {
                fprintf(stderr, "client_paced: --connections must be 1..%d\n", CONNECTIONS_MAX);
                return 2;
            }
            break;
        case 'w':
            if (load_parse_long(optarg, 0, REQUESTS_MAX, &warmup) != 0) {
                fprintf(stderr, "client_paced: --warmup must be 0..%ld\n", REQUESTS_MAX);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !load_args_complete(&la) || rate <= 0 ||
        (requests < 0) == (duration <= 0)) {
        usage(stderr);
        return 2;
    }
    if (requests < 0) {
        double n = ceil(rate * duration);
        if (n < 1 || n > (double)REQUESTS_MAX) {
            fprintf(stderr, "client_paced: rate x duration must be 1..%ld calls\n", REQUESTS_MAX);
            return 2;
        }
        requests = (long)n;
    }
    if (load_args_prepare("client_paced", &la) != 0)
        return 1;

    sh.connections = connections;
    sh.la = &la;
    sh.rate = rate;
    sh.total = requests;
    sh.warmup = warmup;
    atomic_flag_clear(&sh.first_error);
    sh.clients = calloc((size_t)connections, sizeof(*sh.clients));
    sh.latency = calloc((size_t)requests, sizeof(*sh.latency));
    sh.lag = calloc((size_t)requests, sizeof(*sh.lag));
    sh.completed = calloc((size_t)requests, sizeof(*sh.completed));
    workers = calloc((size_t)threads, sizeof(*workers));
    if (sh.clients == NULL || sh.latency == NULL || sh.lag == NULL || sh.completed == NULL ||
        workers == NULL) {
        fprintf(stderr, "client_paced: out of memory\n");
        goto out;
    }
    for (long i = 0; i < connections; i++) {
        jwtsigner_status st;
        sh.clients[i] = jwtsigner_client_new(&la.opts, &st);
        if (sh.clients[i] == NULL) {
            fprintf(stderr, "client_paced: %s: %s\n", jwtsigner_status_name(st.code), st.message);
            goto out;
        }
    }
    /* Every slot's storage is touched now, not on the clock. */
    memset(sh.latency, 0, (size_t)requests * sizeof(*sh.latency));
    memset(sh.completed, 0, (size_t)requests * sizeof(*sh.completed));

    if (pthread_barrier_init(&sh.warmed, NULL, (unsigned)threads + 1) != 0 ||
        pthread_barrier_init(&sh.go, NULL, (unsigned)threads + 1) != 0) {
        fprintf(stderr, "client_paced: pthread_barrier_init failed\n");
        goto out;
    }
    barriers = 1;
    for (started = 0; started < threads; started++) {
        workers[started].sh = &sh;
        workers[started].index = started;
        int e = pthread_create(&workers[started].tid, NULL, worker_main, &workers[started]);
        if (e != 0) {
            /* The barriers count every thread: without them all, nothing can run. */
            fprintf(stderr, "client_paced: pthread_create: %s\n", strerror(e));
            exit(1);
        }
    }
    pthread_barrier_wait(&sh.warmed);
    long warm_errors = atomic_load(&sh.errors);
    atomic_store(&sh.errors, 0);
    /* A little lead so every thread is back from the barrier before slot 0. */
    sh.t0_ns = now_ns() + 2000000LL;
    pthread_barrier_wait(&sh.go);
    for (long i = 0; i < started; i++)
        pthread_join(workers[i].tid, NULL);

    int64_t last = sh.t0_ns;
    for (long i = 0; i < requests; i++)
        if (sh.completed[i] > last)
            last = sh.completed[i];
    double elapsed = (double)(last - sh.t0_ns) / 1e9;
    qsort(sh.latency, (size_t)requests, sizeof(*sh.latency), cmp_i64);
    qsort(sh.lag, (size_t)requests, sizeof(*sh.lag), cmp_i64);
    long ok = atomic_load(&sh.ok), errors = atomic_load(&sh.errors);
    printf("{\"rate\":%.1f,\"achieved\":%.1f,\"count\":%ld,\"ok\":%ld,\"errors\":%ld,"
           "\"warmup_errors\":%ld,\"late_sends\":%ld,\"max_in_flight\":%ld,\"threads\":%ld,"
           "\"connections\":%ld,\"elapsed_s\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"send_lag_p50_ms\":%.3f,"
           "\"send_lag_p99_ms\":%.3f}\n",
           rate, elapsed > 0 ? (double)requests / elapsed : 0.0, requests, ok, errors, warm_errors,
           atomic_load(&sh.late), atomic_load(&sh.max_in_flight), threads, connections, elapsed,
           pct_ms(sh.latency, requests, 500), pct_ms(sh.latency, requests, 900),
           pct_ms(sh.latency, requests, 990), pct_ms(sh.latency, requests, 999),
           (double)sh.latency[requests - 1] / 1e6, pct_ms(sh.lag, requests, 500),
           pct_ms(sh.lag, requests, 990));
    rc = (errors == 0 && warm_errors == 0 && ok == requests) ? 0 : 1;
out:
    if (fflush(stdout) != 0)
        rc = 1;
    if (barriers) {
        pthread_barrier_destroy(&sh.warmed);
        pthread_barrier_destroy(&sh.go);
    }
    if (sh.clients != NULL)
        for (long i = 0; i < connections; i++)
            jwtsigner_client_free(sh.clients[i]);
    free(sh.clients);
    free(sh.latency);
    free(sh.lag);
    free(sh.completed);
    free(workers);
    load_args_cleanup(&la);
    return rc;
}
