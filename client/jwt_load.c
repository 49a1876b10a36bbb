/*
 * jwt_load.c - jwt-load, the load generator operators run to size a
 * deployment: SignJwt calls (or, with --introspect FILE, Status/Introspect
 * calls of FILE's tokens) against a running jwt-signer for a fixed time, then
 * a summary of what happened: calls, outcome by gRPC status (with the first
 * message of each), achieved throughput against the target, and latency
 * percentiles.
 *
 * Two ways to load a server (jwt-load(1) explains both):
 * - open loop, --rate N: call i is due at t0 + i/N whatever happened before,
 *   and its latency is measured from that intended start. A closed-loop
 *   driver that waits for each reply before the next call stops sending when
 *   the server stalls, so a stall shows up as one slow call instead of as
 *   every call that should have been made meanwhile ("coordinated
 *   omission"). --concurrency caps the calls in flight (one worker thread
 *   each); a call due while every worker is busy starts late, when one frees
 *   up ("late"), and one still waiting when the run ends is never made
 *   ("dropped"). Both are reported; a dropped call fails the run. A dropped
 *   call is still counted in the percentiles, at a lower bound of the wait it
 *   would have had: from its slot to when the run ended, or later, when the
 *   first worker came free (before then none could have made it). Left out,
 *   a stall that lasts past the end would vanish from the percentiles.
 * - closed loop, --concurrency N alone: N workers call back to back, and
 *   latency is each call's own duration.
 *
 * Bounded whatever the duration or rate: the latencies go into a fixed
 * log-linear histogram (client/load_hist.h: at most 1/128 relative bucket
 * width, 1 ns to 39 h), never a per-call array, and dropped calls go in a
 * bucket at a time; at most CONCURRENCY_MAX threads; one client handle
 * (one gRPC channel) shared by all of them, as the client library allows.
 * SIGINT or SIGTERM ends the run early and still prints the summary of the
 * calls made, then exits 128 + the signal's number as a shell would (130,
 * 143), so an interrupted run never passes for a complete one; a second
 * signal ends it at once. Only main() prints and exits.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "duration.h"
#include "jsonw.h"
#include "jwtsigner_client.h"
#include "load_args.h"
#include "load_hist.h"
#include "text.h"

#define PROG "jwt-load"

/* Option bounds: every number on the command line is range-checked. */
#define RATE_MAX           1000000L /* calls per second */
#define CONCURRENCY_MAX    1024L    /* worker threads, so calls in flight */
#define OPEN_CONCURRENCY   64L      /* open loop default: the signer's streams a connection */
#define DURATION_DEFAULT_S 10
#define DURATION_MAX_S     86400 /* 24 h */
#define WARMUP_MAX_S       3600
#define NS_PER_S           LOAD_NS_PER_S
#define STOP_POLL_NS       100000000LL /* a sleeping worker notices an interrupt within 100 ms */
#define START_LEAD_NS      2000000LL   /* t0 this far after the workers are released */
#define PROGRESS_PERIOD_NS NS_PER_S
#define INTERRUPT_NOTE_NS                                                                          \
    500000000LL /* calls still in flight this long after an interrupt: say so */
#define NCODES        (LOAD_INACTIVE + 1) /* gRPC status codes 0..16 and INACTIVE */
#define FIRST_MSG_MAX (2 * JWTSIGNER_MSG_MAX + 16)

/* Exit statuses (jwt-load --help, jwt-load(1) EXIT STATUS); an interrupted
 * run exits EXIT_SIGNAL + the signal's number, as shells report it. */
enum { EXIT_ALL_OK = 0, EXIT_NOT_ALL_OK = 1, EXIT_USAGE = 2, EXIT_SIGNAL = 128 };

/* The latency histograms (client/load_hist.h), with the exact maximum kept
 * apart: [LAT_ALL] every measured call, [LAT_OK] the OK ones. */
enum { LAT_ALL = 0, LAT_OK = 1 };
#define NPCT 4 /* the percentiles reported (pct_permille), then the maximum at [NPCT] */

typedef struct hist {
    atomic_llong n[HIST_BUCKETS];
} hist;

/* The first message seen for a status: the thread that takes `taken` writes
 * text, then sets `ready`; the summary reads text only once ready. */
typedef struct first_msg {
    atomic_flag taken;
    atomic_bool ready;
    char text[FIRST_MSG_MAX];
} first_msg;

/* One run. Set up by main before the workers start, shared by pointer; every
 * field the workers change is atomic. */
typedef struct run {
    jwtsigner_client *client; /* shared by every worker (jwtsigner_client.h: thread-safe) */
    const load_args *la;
    long rate;        /* calls per second; 0 = closed loop */
    long concurrency; /* worker threads */
    long pid;         /* in request ids */
    int64_t duration_s;
    int64_t warmup_s;
    bool progress;
    /* CLOCK_MONOTONIC ns, fixed before the workers are released */
    int64_t t0;           /* the run's start: open loop, slot 0 */
    int64_t measure_from; /* t0 + warmup: calls intended from here on are measured */
    int64_t end;          /* measure_from + duration: no call starts at or after it */
    atomic_llong stop_at; /* end, or earlier once interrupted */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate; /* workers wait here until main says go */
    bool go;             /* under gate_lock */
    atomic_llong next;   /* open loop: the next slot; closed loop: the next request id */
    atomic_int alive;    /* workers not yet finished */
    /* measured calls */
    atomic_llong by_code[NCODES];
    atomic_llong late;      /* open loop: started after their slot (every worker was busy) */
    atomic_llong started;   /* open loop: measured slots started */
    atomic_llong max_ns[2]; /* the slowest measured call, exactly: [LAT_ALL], [LAT_OK] */
    atomic_llong last_done;
    atomic_llong first_free; /* the earliest a worker stopped for good: its last call's
                                end, or t0 if it made none (LLONG_MAX until one stops) */
    atomic_llong in_flight;
    atomic_llong max_in_flight;
    hist lat[2]; /* [LAT_ALL] every measured call, [LAT_OK] the OK ones */
    hist tick;   /* every call since the last progress line (progress only) */
    atomic_llong warm_calls;
    atomic_llong warm_errors;
    first_msg first[NCODES];      /* by status, from any call */
    long long snap[HIST_BUCKETS]; /* main's: a histogram's counts, read once */
} run;

/* What the summary says, computed once every worker has finished. */
typedef struct summary {
    long long by_code[NCODES];
    long long calls, ok, errors;
    long long due, late, dropped; /* open loop */
    long long warm_calls, warm_errors, max_in_flight;
    double elapsed_s, per_s, ok_per_s;
    /* [LAT_ALL], [LAT_OK]: p50 p90 p99 p99.9 max, in ms; has[] says whether there are any */
    double lat_ms[2][NPCT + 1];
    bool has[2];
    double dropped_min_ms; /* open loop: the least lower bound a dropped call was given */
    bool interrupted;
} summary;

static const long long pct_permille[NPCT] = {500, 900, 990, 999};
static const char *const pct_name[NPCT + 1] = {"p50", "p90", "p99", "p99.9", "max"};
static const char *const pct_key[NPCT + 1] = {"p50", "p90", "p99", "p999", "max"};

static int64_t now_ns(void)
{
    return (int64_t)js_mono_ns();
}

/* --- the histogram ------------------------------------------------------------------- */

static void hist_add(hist *h, int64_t v)
{
    atomic_fetch_add_explicit(&h->n[hist_index(v)], 1, memory_order_relaxed);
}

static void atomic_max(atomic_llong *a, long long v)
{
    long long cur = atomic_load(a);
    while (v > cur && !atomic_compare_exchange_weak(a, &cur, v)) {
    }
}

static void atomic_min(atomic_llong *a, long long v)
{
    long long cur = atomic_load(a);
    while (v < cur && !atomic_compare_exchange_weak(a, &cur, v)) {
    }
}

/* --- the workers --------------------------------------------------------------------- */

/* Sleeps until t (CLOCK_MONOTONIC ns) in steps of at most STOP_POLL_NS.
 * false when the run is to stop before then. */
static bool wait_until(run *r, int64_t t)
{
    for (;;) {
        int64_t now = now_ns(), stop = atomic_load(&r->stop_at);
        if (now >= stop)
            return false;
        if (now >= t)
            return true;
        int64_t wake = t < now + STOP_POLL_NS ? t : now + STOP_POLL_NS;
        if (wake > stop)
            wake = stop;
        struct timespec ts = {.tv_sec = (time_t)(wake / NS_PER_S),
                              .tv_nsec = (long)(wake % NS_PER_S)};
        (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    }
}

/* A failed call in one line: the server's message, and gRPC's own account
 * of the failure (the transport text) only when the server said nothing (the
 * library then puts the status name as the message); when the server did
 * answer, the transport text merely repeats it. */
static void describe(int code, const jwtsigner_status *st, char *out, size_t cap)
{
    bool said = st->message[0] != '\0' && strcmp(st->message, load_status_name(code)) != 0;
    bool transport = !said && st->transport[0] != '\0';
    snprintf(out, cap, "%s%s%s%s", st->message[0] ? st->message : "(no message)",
             transport ? " (transport: " : "", transport ? st->transport : "",
             transport ? ")" : "");
}

static void note_first(first_msg *f, int code, const jwtsigner_status *st)
{
    if (atomic_flag_test_and_set(&f->taken))
        return;
    describe(code, st, f->text, sizeof(f->text));
    atomic_store_explicit(&f->ready, true, memory_order_release);
}

/* One call intended at `intended` (open loop: its slot; closed loop: now).
 * Returns when it ended (CLOCK_MONOTONIC ns). */
static int64_t one_call(run *r, long long i, int64_t intended)
{
    char request_id[64];
    snprintf(request_id, sizeof(request_id), "jwt-load-%ld-%lld", r->pid, i);
    long long now_in = atomic_fetch_add(&r->in_flight, 1) + 1;
    atomic_max(&r->max_in_flight, now_in);
    jwtsigner_status st;
    memset(&st, 0, sizeof(st));
    int code = load_call(r->la, r->client, (long)i, request_id, NULL, &st);
    int64_t done = now_ns();
    atomic_fetch_sub(&r->in_flight, 1);
    if (code < 0 || code >= NCODES)
        code = 2; /* UNKNOWN: the library never returns it, but stay in bounds */
    if (code != 0)
        note_first(&r->first[code], code, &st);
    int64_t latency = done - intended;
    if (r->progress)
        hist_add(&r->tick, latency);
    if (intended < r->measure_from) {
        atomic_fetch_add(&r->warm_calls, 1);
        if (code != 0)
            atomic_fetch_add(&r->warm_errors, 1);
        return done;
    }
    atomic_fetch_add(&r->by_code[code], 1);
    hist_add(&r->lat[LAT_ALL], latency);
    atomic_max(&r->max_ns[LAT_ALL], latency);
    if (code == 0) {
        hist_add(&r->lat[LAT_OK], latency);
        atomic_max(&r->max_ns[LAT_OK], latency);
    }
    atomic_max(&r->last_done, done);
    return done;
}

static void *worker_main(void *arg)
{
    run *r = arg;

    pthread_mutex_lock(&r->gate_lock);
    while (!r->go)
        pthread_cond_wait(&r->gate, &r->gate_lock);
    pthread_mutex_unlock(&r->gate_lock);

    /* The default 50 us timer slack would wake a worker that much after its
     * slot, time the signer would be charged with; 1 ns asks for the slot. */
    if (r->rate > 0)
        (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    int64_t free_since = r->t0; /* open loop: when this worker's last call ended */
    for (;;) {
        long long i = atomic_fetch_add(&r->next, 1);
        int64_t intended;
        if (r->rate > 0) {
            intended = r->t0 + slot_offset(i, r->rate);
            if (intended >= r->end)
                break;
            /* Taken after its time: every worker was busy when it was due (or
             * this process did not get the CPU): it starts late, now. */
            bool late = now_ns() > intended;
            if (!wait_until(r, intended))
                break;
            if (intended >= r->measure_from) {
                atomic_fetch_add(&r->started, 1);
                if (late)
                    atomic_fetch_add(&r->late, 1);
            }
        } else {
            if (!wait_until(r, r->t0))
                break;
            intended = now_ns();
        }
        free_since = one_call(r, i, intended);
    }
    /* A worker takes the next slot as soon as its call ends: it was busy
     * until free_since. A slot left unstarted (dropped) could not have been
     * made before the earliest worker came free (summarize's lower bound). */
    atomic_min(&r->first_free, free_since);
    atomic_fetch_sub(&r->alive, 1);
    return NULL;
}

/* --- output -------------------------------------------------------------------------- */

static const char *call_name(const run *r)
{
    return r->la->introspect != NULL ? "Introspect" : "SignJwt";
}

static void summarize(run *r, bool interrupted, summary *s)
{
    memset(s, 0, sizeof(*s));
    s->interrupted = interrupted;
    for (int k = 0; k < NCODES; k++) {
        s->by_code[k] = atomic_load(&r->by_code[k]);
        s->calls += s->by_code[k];
    }
    s->ok = s->by_code[0];
    s->errors = s->calls - s->ok;
    s->warm_calls = atomic_load(&r->warm_calls);
    s->warm_errors = atomic_load(&r->warm_errors);
    s->max_in_flight = atomic_load(&r->max_in_flight);
    int64_t stop = atomic_load(&r->stop_at);
    if (r->rate > 0) {
        s->due =
            slots_before(stop - r->t0, r->rate) - slots_before(r->measure_from - r->t0, r->rate);
        if (s->due < 0)
            s->due = 0;
        s->late = atomic_load(&r->late);
        long long started = atomic_load(&r->started);
        s->dropped = s->due > started ? s->due - started : 0;
    }
    int64_t last = atomic_load(&r->last_done);
    int64_t until = last > stop ? last : stop;
    s->elapsed_s = until > r->measure_from ? (double)(until - r->measure_from) / 1e9 : 0.0;
    if (s->elapsed_s > 0) {
        s->per_s = (double)s->calls / s->elapsed_s;
        s->ok_per_s = (double)s->ok / s->elapsed_s;
    }
    for (int l = LAT_ALL; l <= LAT_OK; l++) {
        long long *counts = r->snap, n = 0;
        for (size_t i = 0; i < HIST_BUCKETS; i++)
            n += counts[i] = atomic_load(&r->lat[l].n[i]);
        int64_t max = atomic_load(&r->max_ns[l]);
        if (l == LAT_ALL && s->dropped > 0) {
            /* The dropped calls, at a lower bound: a dropped call was never
             * started, so it waited at least until the run stopped, and no
             * worker could have taken it before first_free (every worker
             * came free for good at or after it). Which slots were dropped
             * is not recorded; taken to be the last ones due, the latest
             * slots, the bound is the least it can be. */
            int64_t gave_up = stop;
            int64_t first_free = atomic_load(&r->first_free);
            if (first_free != LLONG_MAX && first_free > gave_up)
                gave_up = first_free;
            long long last_due = slots_before(stop - r->t0, r->rate);
            long long first_dropped = last_due - s->dropped;
            hist_add_slots(counts, first_dropped, last_due, gave_up - r->t0, r->rate);
            n += s->dropped;
            int64_t longest = gave_up - r->t0 - slot_offset(first_dropped, r->rate);
            if (longest > max)
                max = longest;
            s->dropped_min_ms =
                (double)(gave_up - r->t0 - slot_offset(last_due - 1, r->rate)) / 1e6;
        }
        s->has[l] = n > 0;
        if (n == 0)
            continue;
        for (int q = 0; q < NPCT; q++) {
            int64_t v = hist_percentile(counts, n, pct_permille[q]);
            s->lat_ms[l][q] = (double)(v < max ? v : max) / 1e6; /* a midpoint may pass it */
        }
        s->lat_ms[l][NPCT] = (double)max / 1e6;
    }
}

/* A status's first message for a terminal: clean text only (text.h; a
 * server could send bidi overrides). */
static const char *printable(const char *msg)
{
    return js_text_valid(msg, strlen(msg), NULL, NULL) ? msg : "(not clean text; --json shows it)";
}

static const char *first_text(run *r, int k)
{
    return atomic_load_explicit(&r->first[k].ready, memory_order_acquire) ? r->first[k].text : NULL;
}

static void print_human(run *r, const summary *s)
{
    printf("target      %s, %s", r->la->opts.target, call_name(r));
    if (r->la->introspect != NULL)
        printf(" of %zu tokens from %s", r->la->ntokens, r->la->introspect);
    printf("\n");
    if (r->rate > 0)
        printf("mode        open loop: %ld calls/s for %llds, at most %ld in flight\n", r->rate,
               (long long)r->duration_s, r->concurrency);
    else
        printf("mode        closed loop: %ld workers back to back for %llds\n", r->concurrency,
               (long long)r->duration_s);
    printf("elapsed     %.3f s%s\n", s->elapsed_s, s->interrupted ? " (interrupted)" : "");
    if (s->warm_calls > 0)
        printf("warmup      %lld calls, %lld errors (not counted below)\n", s->warm_calls,
               s->warm_errors);
    printf("calls       %lld (ok %lld, errors %lld), at most %lld in flight\n", s->calls, s->ok,
           s->errors, s->max_in_flight);
    if (r->rate > 0) {
        printf("schedule    %lld due, %lld started late, %lld dropped\n", s->due, s->late,
               s->dropped);
        printf("throughput  %.1f calls/s of %ld/s (%.1f%%), ok %.1f/s\n", s->per_s, r->rate,
               100.0 * s->per_s / (double)r->rate, s->ok_per_s);
    } else {
        printf("throughput  %.1f calls/s, ok %.1f/s\n", s->per_s, s->ok_per_s);
    }
    if (s->has[LAT_ALL]) {
        printf("latency     ms, %s\n",
               r->rate > 0 ? "from each call's intended start" : "of each call");
        if (s->dropped > 0)
            printf(
                "            all: with the %lld dropped calls at a lower bound (%.3f ms and up)\n",
                s->dropped, s->dropped_min_ms);
        /* Refusals are often quick: with errors, the OK calls' own column;
         * with dropped calls, the calls made. */
        bool both = (s->errors > 0 || s->dropped > 0) && s->has[LAT_OK];
        if (both)
            printf("  %-9s %10s %10s\n", "", "all", "ok");
        for (int q = 0; q <= NPCT; q++) {
            printf("  %-9s %10.3f", pct_name[q], s->lat_ms[LAT_ALL][q]);
            if (both)
                printf(" %10.3f", s->lat_ms[LAT_OK][q]);
            printf("\n");
        }
    }
    printf("status\n");
    for (int k = 0; k < NCODES; k++) {
        if (s->by_code[k] == 0)
            continue;
        printf("  %-19s %10lld", load_status_name(k), s->by_code[k]);
        const char *msg = k != 0 ? first_text(r, k) : NULL;
        if (msg != NULL)
            printf("  first: %s", printable(msg));
        printf("\n");
    }
    if (s->warm_errors > 0)
        for (int k = 1; k < NCODES; k++)
            if (s->by_code[k] == 0 && first_text(r, k) != NULL)
                printf("  %-19s %10s  first (warmup): %s\n", load_status_name(k), "-",
                       printable(first_text(r, k)));
}

/* v with `decimals` digits after the point (finite by construction). */
static void json_num(js_jsonw *w, int decimals, double v)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.*f", decimals, v);
    js_jsonw_raw(w, buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0);
}

static void json_key(js_jsonw *w, bool *first, const char *key)
{
    if (!*first)
        JS_JSONW_LIT(w, ",");
    *first = false;
    js_jsonw_string_lossy(w, key, strlen(key));
    JS_JSONW_LIT(w, ":");
}

/* "key":{"p50":..,"p90":..,"p99":..,"p999":..,"max":..} in ms, or null. */
static void json_latency(js_jsonw *w, bool *first, const char *key, const summary *s, int l)
{
    json_key(w, first, key);
    if (!s->has[l]) {
        JS_JSONW_LIT(w, "null");
        return;
    }
    bool f = true;
    JS_JSONW_LIT(w, "{");
    for (int q = 0; q <= NPCT; q++) {
        json_key(w, &f, pct_key[q]);
        json_num(w, 3, s->lat_ms[l][q]);
    }
    JS_JSONW_LIT(w, "}");
}

static void json_summary(js_jsonw *w, run *r, const summary *s)
{
    bool f = true;
    JS_JSONW_LIT(w, "{");
    json_key(w, &f, "call");
    js_jsonw_cstr(w, r->la->introspect != NULL ? "\"Introspect\"" : "\"SignJwt\"");
    json_key(w, &f, "mode");
    js_jsonw_cstr(w, r->rate > 0 ? "\"open\"" : "\"closed\"");
    json_key(w, &f, "target_per_second");
    if (r->rate > 0)
        js_jsonw_int(w, r->rate);
    else
        JS_JSONW_LIT(w, "null");
    json_key(w, &f, "concurrency");
    js_jsonw_int(w, r->concurrency);
    json_key(w, &f, "duration_s");
    js_jsonw_int(w, r->duration_s);
    json_key(w, &f, "warmup_s");
    js_jsonw_int(w, r->warmup_s);
    json_key(w, &f, "interrupted");
    js_jsonw_cstr(w, s->interrupted ? "true" : "false");
    json_key(w, &f, "elapsed_s");
    json_num(w, 3, s->elapsed_s);
    json_key(w, &f, "calls");
    js_jsonw_int(w, s->calls);
    json_key(w, &f, "ok");
    js_jsonw_int(w, s->ok);
    json_key(w, &f, "errors");
    js_jsonw_int(w, s->errors);
    if (r->rate > 0) {
        json_key(w, &f, "due");
        js_jsonw_int(w, s->due);
        json_key(w, &f, "late");
        js_jsonw_int(w, s->late);
        json_key(w, &f, "dropped");
        js_jsonw_int(w, s->dropped);
    }
    json_key(w, &f, "warmup_calls");
    js_jsonw_int(w, s->warm_calls);
    json_key(w, &f, "warmup_errors");
    js_jsonw_int(w, s->warm_errors);
    json_key(w, &f, "max_in_flight");
    js_jsonw_int(w, s->max_in_flight);
    json_key(w, &f, "per_second");
    json_num(w, 1, s->per_s);
    json_key(w, &f, "ok_per_second");
    json_num(w, 1, s->ok_per_s);
    json_latency(w, &f, "latency_ms", s, LAT_ALL);
    json_latency(w, &f, "ok_latency_ms", s, LAT_OK);
    bool bf = true;
    json_key(w, &f, "by_status");
    JS_JSONW_LIT(w, "{");
    for (int k = 0; k < NCODES; k++) {
        if (s->by_code[k] == 0)
            continue;
        json_key(w, &bf, load_status_name(k));
        js_jsonw_int(w, s->by_code[k]);
    }
    JS_JSONW_LIT(w, "}");
    bool mf = true;
    json_key(w, &f, "first_error");
    JS_JSONW_LIT(w, "{");
    for (int k = 1; k < NCODES; k++) {
        const char *msg = first_text(r, k);
        if (msg == NULL)
            continue;
        json_key(w, &mf, load_status_name(k));
        js_jsonw_string_lossy(w, msg, strlen(msg));
    }
    JS_JSONW_LIT(w, "}}");
}

/* One JSON line on stdout; -1 when out of memory. */
static int print_json(run *r, const summary *s)
{
    js_jsonw w;
    js_jsonw_init(&w, NULL, 0);
    json_summary(&w, r, s); /* measures */
    size_t cap = js_jsonw_len(&w) + 1;
    char *buf = malloc(cap);
    if (buf == NULL)
        return -1;
    js_jsonw_init(&w, buf, cap);
    json_summary(&w, r, s);
    const char *text = js_jsonw_finish(&w);
    if (text != NULL)
        printf("%s\n", text);
    free(buf);
    return text != NULL ? 0 : -1;
}

/* One progress line on stderr, overwritten in place: what the last period did. */
static void print_progress(run *r, int64_t now, int64_t period_ns)
{
    long long *counts = r->snap, n = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++)
        n += counts[i] = atomic_exchange(&r->tick.n[i], 0);
    long long ok =
        atomic_load(&r->by_code[0]) + atomic_load(&r->warm_calls) - atomic_load(&r->warm_errors);
    long long errors = atomic_load(&r->warm_errors);
    for (int k = 1; k < NCODES; k++)
        errors += atomic_load(&r->by_code[k]);
    char p99[32] = "-";
    if (n > 0)
        snprintf(p99, sizeof(p99), "%.3f ms", (double)hist_percentile(counts, n, 990) / 1e6);
    /* Fixed widths and trailing blanks: a shorter line still covers the last. */
    fprintf(stderr, "\r%-6s %5llds/%llds %10.1f calls/s  ok %lld  errors %lld  p99 %s    ",
            now < r->measure_from ? "warmup" : "", (long long)((now - r->t0) / NS_PER_S),
            (long long)(r->warmup_s + r->duration_s),
            period_ns > 0 ? (double)n * 1e9 / (double)period_ns : 0.0, ok, errors, p99);
    fflush(stderr);
}

/* --- options and main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("Usage: jwt-load --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
          "                (--claims JSON | --introspect FILE)\n"
          "                (--rate N [--concurrency C] | --concurrency N)\n"
          "                [--duration D] [--warmup D] [--key-name K] [--timeout-ms MS]\n"
          "                [--json] [--progress | --no-progress]\n"
          "       jwt-load --help | --version\n"
          "\n"
          "Loads a jwt-signer with SignJwt calls (or Status/Introspect calls of the\n"
          "tokens in FILE, one a line) for a while and prints what happened.\n"
          "\n"
          "  --rate N          open loop: N calls per second (1..1000000) on a fixed\n"
          "                    schedule; latency from each call's intended start\n"
          "  --concurrency N   with --rate: at most N calls in flight (1..1024, default\n"
          "                    64); alone: closed loop, N workers calling back to back\n"
          "  --duration D      how long to measure: 30s, 2m, 1h (default 10s, at most 24h)\n"
          "  --warmup D        run this long first, not measured (at most 1h; 0s: none)\n"
          "  --claims JSON     the claims to sign (SignJwt)\n"
          "  --introspect FILE introspect FILE's tokens instead (an inactive answer fails)\n"
          "  --key-name K      the key to sign with (default: the caller's default key)\n"
          "  --timeout-ms MS   per-call deadline, 1..3600000 (default 5000)\n"
          "  --target, --ca, --cert, --key\n"
          "                    the signer's address, the CA for its certificate, this\n"
          "                    client's certificate and key (mTLS)\n"
          "  --json            one JSON summary line instead of the table\n"
          "  --progress, --no-progress\n"
          "                    force the once-a-second progress line on stderr on or off\n"
          "                    (default: on when stderr is a terminal)\n"
          "\n"
          "Ctrl-C (SIGINT) or SIGTERM ends the run early and prints the summary of the\n"
          "calls made; a second one ends it at once.\n"
          "\n"
          "In open loop a dropped call (still waiting when the run ended) counts in the\n"
          "\"all\" percentiles at a lower bound of its wait.\n"
          "\n"
          "Exit status: 0 every call answered OK (and none was dropped); 1 otherwise,\n"
          "or no call was made, or the signer could not be reached; 2 usage error;\n"
          "130 (SIGINT) or 143 (SIGTERM) the run was interrupted, its summary printed.\n"
          "See jwt-load(1).\n",
          f);
}

static int usage_error(const char *fmt, ...) JS_PRINTF(1, 2);

/* One line naming the option at fault, and the exit status of a usage error. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n" PROG ": try '" PROG " --help'\n", stderr);
    return EXIT_USAGE;
}

/* --duration / --warmup: a js_parse_duration duration of 1 s .. max_s, or
 * with zero_ok also zero in any unit ("0s": no warm-up); -1 after a usage
 * error naming the option. */
static int parse_span(const char *opt, const char *arg, bool zero_ok, int64_t max_s,
                      const char *max_text, int64_t *out)
{
    js_err err;
    int64_t s = 0;
    size_t zeros = strspn(arg, "0");
    if (zero_ok && zeros > 0 && arg[zeros] != '\0' && strchr("smhd", arg[zeros]) != NULL &&
        arg[zeros + 1] == '\0') {
        *out = 0;
        return 0;
    }
    if (js_parse_duration(arg, &s, &err) != JS_OK) {
        (void)usage_error("%s: %s (not '%s')", opt, err.msg, arg);
        return -1;
    }
    if (s > max_s) {
        (void)usage_error("%s must be at most %s (not '%s')", opt, max_text, arg);
        return -1;
    }
    *out = s;
    return 0;
}

/* Starts the workers and runs the clock: progress, signals, the end. Returns
 * the signal that interrupted the run (SIGINT, SIGTERM), 0 when none did, or
 * -1 when not every worker could start. */
static int drive(run *r, pthread_t *tids, const sigset_t *sigs)
{
    long started = 0;
    for (; started < r->concurrency; started++) {
        int e = pthread_create(&tids[started], NULL, worker_main, r);
        if (e != 0) {
            fprintf(stderr, PROG ": cannot start worker %ld: %s\n", started + 1, strerror(e));
            break;
        }
        atomic_fetch_add(&r->alive, 1);
    }
    pthread_mutex_lock(&r->gate_lock);
    r->t0 = now_ns() + START_LEAD_NS;
    r->measure_from = r->t0 + r->warmup_s * NS_PER_S;
    r->end = r->measure_from + r->duration_s * NS_PER_S;
    /* Fewer workers than asked would measure something else: stop at once. */
    atomic_store(&r->stop_at, started == r->concurrency ? r->end : 0);
    r->go = true;
    pthread_cond_broadcast(&r->gate);
    pthread_mutex_unlock(&r->gate_lock);

    int interrupted = started == r->concurrency ? 0 : -1;
    int64_t last_tick = r->t0, next_tick = r->t0 + PROGRESS_PERIOD_NS;
    bool printed = false, said_waiting = false;
    int64_t interrupted_at = 0;
    while (atomic_load(&r->alive) > 0) {
        int64_t now = now_ns();
        int64_t wake = next_tick < now + STOP_POLL_NS ? next_tick : now + STOP_POLL_NS;
        int64_t wait = wake > now ? wake - now : 0;
        struct timespec ts = {.tv_sec = (time_t)(wait / NS_PER_S),
                              .tv_nsec = (long)(wait % NS_PER_S)};
        int sig = sigtimedwait(sigs, NULL, &ts);
        now = now_ns();
        if (sig == SIGINT || sig == SIGTERM) {
            if (interrupted != 0) {
                /* The second one (or any before every worker started): end now, no summary. */
                signal(sig, SIG_DFL);
                pthread_sigmask(SIG_UNBLOCK, sigs, NULL);
                raise(sig);
                _exit(128 + sig);
            }
            interrupted = sig;
            long long stop = atomic_load(&r->stop_at);
            while (now < stop && !atomic_compare_exchange_weak(&r->stop_at, &stop, now)) {
            }
            interrupted_at = now;
        }
        /* No call can be cancelled: the ones in flight end within --timeout-ms.
         * Said once, if they are still going half a second after the interrupt. */
        long long busy = atomic_load(&r->in_flight);
        if (interrupted > 0 && !said_waiting && now - interrupted_at >= INTERRUPT_NOTE_NS &&
            busy > 0) {
            fprintf(stderr,
                    "%s" PROG ": interrupted: waiting for %lld calls in flight (each ends "
                    "within --timeout-ms); interrupt again to quit without a summary\n",
                    printed ? "\n" : "", busy);
            said_waiting = true;
            printed = false; /* the cursor is on a fresh line */
        }
        if (r->progress && now >= next_tick) {
            print_progress(r, now, now - last_tick);
            printed = true;
            last_tick = now;
            next_tick += PROGRESS_PERIOD_NS;
            if (next_tick <= now) /* a stalled clock: no burst of lines */
                next_tick = now + PROGRESS_PERIOD_NS;
        }
    }
    for (long i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (printed)
        fputc('\n', stderr);
    return interrupted;
}

int main(int argc, char **argv)
{
    enum {
        OPT_RATE = 256,
        OPT_CONC,
        OPT_DURATION,
        OPT_WARMUP,
        OPT_JSON,
        OPT_PROG,
        OPT_NOPROG,
        OPT_VERSION
    };
    static const struct option longopts[] = {
        {"rate", required_argument, NULL, OPT_RATE},
        {"concurrency", required_argument, NULL, OPT_CONC},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"json", no_argument, NULL, OPT_JSON},
        {"progress", no_argument, NULL, OPT_PROG},
        {"no-progress", no_argument, NULL, OPT_NOPROG},
        LOAD_ARGS_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    load_args la = {0};
    long rate = 0, concurrency = 0;
    int64_t duration_s = DURATION_DEFAULT_S, warmup_s = 0;
    int json = 0, progress = -1, opt;

    opterr = 0; /* our messages, naming the option */
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        int shared_opt = load_args_take(PROG, opt, optarg, &la);
        if (shared_opt < 0)
            return EXIT_USAGE;
        if (shared_opt > 0)
            continue;
        switch (opt) {
        case OPT_RATE:
            if (load_parse_long(optarg, 1, RATE_MAX, &rate) != 0)
                return usage_error("--rate must be a whole number of calls per second, "
                                   "1..1000000 (not '%s')",
                                   optarg);
            break;
        case OPT_CONC:
            if (load_parse_long(optarg, 1, CONCURRENCY_MAX, &concurrency) != 0)
                return usage_error("--concurrency must be 1..1024 (not '%s')", optarg);
            break;
        case OPT_DURATION:
            if (parse_span("--duration", optarg, false, DURATION_MAX_S, "24h", &duration_s) != 0)
                return EXIT_USAGE;
            break;
        case OPT_WARMUP:
            if (parse_span("--warmup", optarg, true, WARMUP_MAX_S, "1h", &warmup_s) != 0)
                return EXIT_USAGE;
            break;
        case OPT_JSON:
            json = 1;
            break;
        case OPT_PROG:
            progress = 1;
            break;
        case OPT_NOPROG:
            progress = 0;
            break;
        case 'h':
            usage(stdout);
            return EXIT_ALL_OK;
        case OPT_VERSION:
            printf(PROG " %s\n", JS_VERSION);
            return EXIT_ALL_OK;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        case '?':
        default:
            return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind != argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (rate == 0 && concurrency == 0)
        return usage_error("give --rate N (open loop) or --concurrency N (closed loop)");
    const char *missing = la.opts.target == NULL      ? "--target"
                          : la.opts.ca_file == NULL   ? "--ca"
                          : la.opts.cert_file == NULL ? "--cert"
                          : la.opts.key_file == NULL  ? "--key"
                                                      : NULL;
    if (missing != NULL)
        return usage_error("%s is required", missing);
    if ((la.claims == NULL) == (la.introspect == NULL))
        return usage_error("give exactly one of --claims JSON and --introspect FILE");
    if (la.introspect != NULL && la.key_name != NULL)
        return usage_error("--key-name is for SignJwt, not with --introspect");
    if (rate > 0 && concurrency == 0)
        concurrency = OPEN_CONCURRENCY;

    if (load_args_prepare(PROG, &la) != 0)
        return EXIT_NOT_ALL_OK;

    /* Every thread, gRPC's included, inherits this mask: the signals wait for
     * main's sigtimedwait instead of killing the process mid-run. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int rc = EXIT_NOT_ALL_OK;
    pthread_t *tids = NULL;
    run *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        load_args_cleanup(&la);
        return EXIT_NOT_ALL_OK;
    }
    pthread_mutex_init(&r->gate_lock, NULL);
    pthread_cond_init(&r->gate, NULL);
    for (int k = 0; k < NCODES; k++)
        atomic_flag_clear(&r->first[k].taken);
    atomic_init(&r->first_free, LLONG_MAX);
    r->la = &la;
    r->rate = rate;
    r->concurrency = concurrency;
    r->pid = (long)getpid();
    r->duration_s = duration_s;
    r->warmup_s = warmup_s;
    r->progress = progress >= 0 ? progress == 1 : isatty(STDERR_FILENO) == 1;

    jwtsigner_status st;
    r->client = jwtsigner_client_new(&la.opts, &st);
    if (r->client == NULL) {
        fprintf(stderr, PROG ": %s: %s\n", jwtsigner_status_name(st.code), st.message);
        goto out;
    }
    /* Connect (TCP, TLS, HTTP/2) before the clock starts, with a call any
     * authenticated client may make: the first measured calls then see the
     * connection a long-lived client has, and an unreachable signer or a
     * refused certificate is said once instead of counted N times. */
    char *jwks = NULL;
    int code = jwtsigner_jwks(r->client, &jwks, &st);
    if (code != 0) {
        char why[FIRST_MSG_MAX];
        describe(code, &st, why, sizeof(why));
        fprintf(stderr, PROG ": cannot reach the signer at %s: %s: %s\n", la.opts.target,
                jwtsigner_status_name(code), why);
        goto out;
    }
    free(jwks);

    tids = calloc((size_t)concurrency, sizeof(*tids));
    if (tids == NULL) {
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    int interrupted = drive(r, tids, &sigs);
    if (interrupted < 0)
        goto out;
    summary s;
    summarize(r, interrupted > 0, &s);
    if (!json)
        print_human(r, &s);
    else if (print_json(r, &s) != 0) {
        fprintf(stderr, PROG ": out of memory\n");
        goto out;
    }
    if (s.calls == 0)
        fprintf(stderr, PROG ": no call was made\n");
    rc = s.calls > 0 && s.ok == s.calls && s.dropped == 0 && s.warm_errors == 0 ? EXIT_ALL_OK
                                                                                : EXIT_NOT_ALL_OK;
    /* Cut short, a run did not measure what was asked, however its calls went:
     * say so as a shell does, so `timeout 60 jwt-load ...` does not pass. */
    if (interrupted > 0)
        rc = EXIT_SIGNAL + interrupted;
out:
    if (fflush(stdout) != 0) {
        fprintf(stderr, PROG ": writing the summary failed\n");
        rc = EXIT_NOT_ALL_OK;
    }
    free(tids);
    jwtsigner_client_free(r->client);
    pthread_cond_destroy(&r->gate);
    pthread_mutex_destroy(&r->gate_lock);
    free(r);
    load_args_cleanup(&la);
    return rc;
}
