/*
 * metrics.c - the Prometheus metrics registry (see metrics.h).
 *
 * Label values are interned once per registry into bounded "label sets"
 * (callers, reasons, methods, decisions); a requests_total series is then
 * keyed by the four interned pointers, so finding it is a pointer compare in
 * one stripe of a hash table. Both tables are striped: a thread locks only
 * the stripe its key hashes to, and only to look up or insert; the counts
 * themselves are atomics. Entries are never removed before js_metrics_free,
 * so the pointers stay valid for render.
 */
#include "metrics.h"

#include <jansson.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES        32  /* mutexes per table */
#define LABEL_BUCKETS  16  /* hash buckets per stripe of a label set */
#define SERIES_BUCKETS 128 /* hash buckets per stripe of the series table */
#define LABEL_NONE     "none"
#define RENDER_INITIAL 4096
#define RENDER_MAX     (64u * 1024u * 1024u) /* a hard stop far above the cardinality caps */

/* ---- hashing and label sanitising -------------------------------------------------- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

#define FNV_BASIS UINT64_C(0xcbf29ce484222325)

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return 0;
    if (n < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/*
 * Copies src into out (JS_METRICS_LABEL_MAX bytes) as valid UTF-8: invalid
 * bytes and control characters other than '\n' become '?', and the value is
 * cut at a character boundary. NULL and "" become "none" so that a series
 * never carries an empty label value (which Prometheus treats as absent).
 */
static void sanitize_label(const char *src, char out[JS_METRICS_LABEL_MAX])
{
    if (src == NULL || src[0] == '\0') {
        memcpy(out, LABEL_NONE, sizeof(LABEL_NONE));
        return;
    }
    const unsigned char *s = (const unsigned char *)src;
    size_t n = strnlen(src, 4 * JS_METRICS_LABEL_MAX);
    size_t o = 0;
    size_t i = 0;
    while (i < n) {
        size_t len = utf8_seq(s + i, n - i);
        if (len == 0 || (len == 1 && ((s[i] < 0x20 && s[i] != '\n') || s[i] == 0x7F))) {
            if (o + 1 >= JS_METRICS_LABEL_MAX)
                break;
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + len >= JS_METRICS_LABEL_MAX)
            break;
        memcpy(out + o, s + i, len);
        o += len;
        i += len;
    }
    out[o] = '\0';
}

/* ---- striped tables ---------------------------------------------------------------- */

typedef struct node {
    struct node *next;
    uint64_t hash;
} node;

/* One interned label value; rate_limited is used only in the caller set. */
typedef struct label {
    node hdr; /* first member: a label is a node */
    _Atomic uint64_t rate_limited;
    size_t len;
    char value[]; /* NUL-terminated, sanitised */
} label;

typedef struct label_set {
    pthread_mutex_t mu[STRIPES];
    node *buckets[STRIPES][LABEL_BUCKETS];
    atomic_size_t count; /* interned values, never above cap */
    size_t cap;
    label *other; /* not in the table; where values beyond cap go */
} label_set;

typedef struct series {
    node hdr;
    const label *method, *caller, *decision, *reason;
    _Atomic uint64_t count;
} series;

typedef struct series_table {
    pthread_mutex_t mu[STRIPES];
    node *buckets[STRIPES][SERIES_BUCKETS];
    atomic_size_t count;
} series_table;

/*
 * A histogram over integer observations (microseconds or records). counts[i]
 * is the non-cumulative count of bucket i; counts[nbounds] is the +Inf
 * overflow. Render accumulates them, so _count always equals the +Inf bucket.
 */
typedef struct histogram {
    const uint64_t *bounds; /* upper bounds, ascending, in observation units */
    const char *const *le;  /* the same bounds as rendered in the le label */
    size_t nbounds;
    _Atomic uint64_t counts[16];
    _Atomic uint64_t sum;
    int seconds; /* 1: observations are microseconds, render _sum in seconds */
} histogram;

struct js_metrics {
    label_set methods, callers, decisions, reasons;
    series_table requests;
    _Atomic uint64_t hsm_errors;
    histogram sign_latency, batch_records, fsync_seconds;
};

/* Bucket bounds (the brief's sign latency ladder; fsync a decade lower). */
static const uint64_t k_sign_bounds[] = {500,   1000,   2000,   5000,   10000,   25000,
                                         50000, 100000, 250000, 500000, 1000000, 2500000};
static const char *const k_sign_le[] = {"0.0005", "0.001", "0.002", "0.005", "0.01", "0.025",
                                        "0.05",   "0.1",   "0.25",  "0.5",   "1",    "2.5"};
static const uint64_t k_fsync_bounds[] = {100,   250,   500,    1000,   2500,   5000,   10000,
                                          25000, 50000, 100000, 250000, 500000, 1000000};
static const char *const k_fsync_le[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025",
                                         "0.005",  "0.01",    "0.025",  "0.05",  "0.1",
                                         "0.25",   "0.5",     "1"};
static const uint64_t k_batch_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
static const char *const k_batch_le[] = {"1",  "2",   "4",   "8",   "16",  "32",
                                         "64", "128", "256", "512", "1024"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(NELEM(k_sign_bounds) == NELEM(k_sign_le), "sign buckets");
_Static_assert(NELEM(k_fsync_bounds) == NELEM(k_fsync_le), "fsync buckets");
_Static_assert(NELEM(k_batch_bounds) == NELEM(k_batch_le), "batch buckets");
_Static_assert(NELEM(k_fsync_bounds) < 16 && NELEM(k_sign_bounds) < 16, "histogram size");

static label *label_alloc(const char *value, size_t len, uint64_t hash)
{
    label *l = calloc(1, sizeof(*l) + len + 1);
    if (l == NULL)
        return NULL;
    l->hdr.hash = hash;
    l->len = len;
    atomic_init(&l->rate_limited, 0);
    memcpy(l->value, value, len + 1);
    return l;
}

static js_status label_set_init(label_set *s, size_t cap, js_err *err)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&s->mu[i], NULL);
    atomic_init(&s->count, 0);
    s->cap = cap;
    s->other = label_alloc(JS_METRICS_OTHER, strlen(JS_METRICS_OTHER), 0);
    JS_ENSURE_ALLOC(s->other, err);
    return JS_OK;
}

static void label_set_cleanup(label_set *s)
{
    for (size_t i = 0; i < STRIPES; i++) {
        for (size_t b = 0; b < LABEL_BUCKETS; b++) {
            node *n = s->buckets[i][b];
            while (n != NULL) {
                node *next = n->next;
                free(n);
                n = next;
            }
        }
        pthread_mutex_destroy(&s->mu[i]);
    }
    free(s->other);
}

/*
 * Returns the interned entry for raw (sanitised first), creating it while the
 * set is under its cap; afterwards, and on allocation failure, the "other"
 * entry. Never NULL.
 */
static label *intern(label_set *s, const char *raw)
{
    char v[JS_METRICS_LABEL_MAX] = {0}; /* zeroed: the analyzer cannot follow sanitize_label */
    sanitize_label(raw, v);
    size_t len = strlen(v);
    if (strcmp(v, JS_METRICS_OTHER) == 0)
        return s->other;
    uint64_t h = fnv1a(FNV_BASIS, v, len);
    size_t stripe = (size_t)(h % STRIPES);
    size_t bucket = (size_t)((h / STRIPES) % LABEL_BUCKETS);

    pthread_mutex_lock(&s->mu[stripe]);
    label *found = NULL;
    for (node *n = s->buckets[stripe][bucket]; n != NULL; n = n->next) {
        label *l = (label *)n;
        if (n->hash == h && l->len == len && memcmp(l->value, v, len) == 0) {
            found = l;
            break;
        }
    }
    if (found == NULL) {
        /* The cap is global across stripes, so it is claimed atomically. */
        if (atomic_fetch_add(&s->count, 1) >= s->cap) {
            atomic_fetch_sub(&s->count, 1);
        } else {
            found = label_alloc(v, len, h);
            if (found == NULL) {
                atomic_fetch_sub(&s->count, 1);
            } else {
                found->hdr.next = s->buckets[stripe][bucket];
                s->buckets[stripe][bucket] = &found->hdr;
            }
        }
    }
    pthread_mutex_unlock(&s->mu[stripe]);
    return found != NULL ? found : s->other;
}

static void series_table_init(series_table *t)
{
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&t->mu[i], NULL);
    atomic_init(&t->count, 0);
}

static void series_table_cleanup(series_table *t)
{
    for (size_t i = 0; i < STRIPES; i++) {
        for (size_t b = 0; b < SERIES_BUCKETS; b++) {
            node *n = t->buckets[i][b];
            while (n != NULL) {
                node *next = n->next;
                free(n);
                n = next;
            }
        }
        pthread_mutex_destroy(&t->mu[i]);
    }
}

/* The four label addresses, a byte at a time from the low end (the same
 * value fnv1a over the pointer array gives on a little-endian machine). By
 * value rather than through the pointers' bytes: the static analyzer cannot
 * read a pointer's representation a byte at a time and calls it garbage. */
static uint64_t series_hash(const label *a, const label *b, const label *c, const label *d)
{
    const label *k[4] = {a, b, c, d};
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < 4; i++) {
        uint64_t v = (uint64_t)(uintptr_t)k[i];
        for (size_t byte = 0; byte < sizeof(uintptr_t); byte++) {
            h ^= (v >> (8 * byte)) & 0xFF;
            h *= UINT64_C(0x100000001b3);
        }
    }
    return h;
}

/*
 * Finds or creates the series for the four interned labels. Past
 * JS_METRICS_MAX_SERIES, new combinations fold into caller="other",
 * reason="other", which adds at most methods x decisions more series.
 * Returns NULL only when out of memory.
 */
static series *series_get(js_metrics *m, const label *method, const label *caller,
                          const label *decision, const label *reason, int capped)
{
    series_table *t = &m->requests;
    uint64_t h = series_hash(method, caller, decision, reason);
    size_t stripe = (size_t)(h % STRIPES);
    size_t bucket = (size_t)((h / STRIPES) % SERIES_BUCKETS);
    series *found = NULL;
    int full = 0;

    pthread_mutex_lock(&t->mu[stripe]);
    for (node *n = t->buckets[stripe][bucket]; n != NULL; n = n->next) {
        series *s = (series *)n;
        if (s->method == method && s->caller == caller && s->decision == decision &&
            s->reason == reason) {
            found = s;
            break;
        }
    }
    if (found == NULL) {
        if (capped && atomic_fetch_add(&t->count, 1) >= JS_METRICS_MAX_SERIES) {
            atomic_fetch_sub(&t->count, 1);
            full = 1;
        } else {
            found = calloc(1, sizeof(*found));
            if (found != NULL) {
                found->hdr.hash = h;
                found->method = method;
                found->caller = caller;
                found->decision = decision;
                found->reason = reason;
                atomic_init(&found->count, 0);
                found->hdr.next = t->buckets[stripe][bucket];
                t->buckets[stripe][bucket] = &found->hdr;
            } else if (capped) {
                atomic_fetch_sub(&t->count, 1);
            }
        }
    }
    pthread_mutex_unlock(&t->mu[stripe]);
    if (full)
        return series_get(m, method, m->callers.other, decision, m->reasons.other, 0);
    return found;
}

static void histogram_init(histogram *hg, const uint64_t *bounds, const char *const *le, size_t n,
                           int seconds)
{
    hg->bounds = bounds;
    hg->le = le;
    hg->nbounds = n;
    hg->seconds = seconds;
    for (size_t i = 0; i < NELEM(hg->counts); i++)
        atomic_init(&hg->counts[i], 0);
    atomic_init(&hg->sum, 0);
}

static void histogram_observe(histogram *hg, uint64_t v)
{
    size_t i = 0;
    while (i < hg->nbounds && v > hg->bounds[i]) /* le means "less than or equal" */
        i++;
    atomic_fetch_add_explicit(&hg->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&hg->sum, v, memory_order_relaxed);
}

/* ---- public API: updates ----------------------------------------------------------- */

js_status js_metrics_new(js_metrics **out, js_err *err)
{
    JS_ENSURE(out != NULL, err, JS_EINVAL, JS_R_METRICS_INVALID, "js_metrics_new: out is NULL");
    *out = NULL;
    js_metrics *m = calloc(1, sizeof(*m));
    JS_ENSURE_ALLOC(m, err);
    js_status st = label_set_init(&m->methods, JS_METRICS_MAX_METHODS, err);
    if (st == JS_OK)
        st = label_set_init(&m->callers, JS_METRICS_MAX_CALLERS, err);
    if (st == JS_OK)
        st = label_set_init(&m->decisions, JS_METRICS_MAX_DECISIONS, err);
    if (st == JS_OK)
        st = label_set_init(&m->reasons, JS_METRICS_MAX_REASONS, err);
    series_table_init(&m->requests);
    atomic_init(&m->hsm_errors, 0);
    histogram_init(&m->sign_latency, k_sign_bounds, k_sign_le, NELEM(k_sign_bounds), 1);
    histogram_init(&m->fsync_seconds, k_fsync_bounds, k_fsync_le, NELEM(k_fsync_bounds), 1);
    histogram_init(&m->batch_records, k_batch_bounds, k_batch_le, NELEM(k_batch_bounds), 0);
    if (st != JS_OK) {
        js_metrics_free(m); /* label sets not yet initialised are all zero: safe */
        return st;
    }
    *out = m;
    return JS_OK;
}

void js_metrics_free(js_metrics *m)
{
    if (m == NULL)
        return;
    label_set *sets[] = {&m->methods, &m->callers, &m->decisions, &m->reasons};
    for (size_t i = 0; i < NELEM(sets); i++) {
        if (sets[i]->cap != 0) /* initialised */
            label_set_cleanup(sets[i]);
    }
    series_table_cleanup(&m->requests);
    free(m);
}

void js_metrics_request(js_metrics *m, const char *method, const char *caller, const char *decision,
                        const char *reason)
{
    if (m == NULL)
        return;
    series *s = series_get(m, intern(&m->methods, method), intern(&m->callers, caller),
                           intern(&m->decisions, decision), intern(&m->reasons, reason), 1);
    if (s != NULL) /* out of memory: the count is lost rather than the request */
        atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

void js_metrics_call(js_metrics *m, const char *method, const char *caller, const js_decision *d)
{
    js_metrics_request(m, method, caller, js_decision_name(d->kind), js_reason_name(d->reason));
}

void js_metrics_sign(js_metrics *m, const char *method, const char *caller, const js_decision *d,
                     int64_t latency_us)
{
    js_metrics_call(m, method, caller, d);
    if (d->kind == JS_DECISION_ALLOW)
        js_metrics_sign_latency(m, latency_us > 0 ? (uint64_t)latency_us : 0);
    else if (d->status == JS_ELIMIT)
        js_metrics_rate_limited(m, caller);
    else if (d->hsm_failed)
        js_metrics_hsm_error(m);
}

void js_metrics_sign_latency(js_metrics *m, uint64_t micros)
{
    if (m != NULL)
        histogram_observe(&m->sign_latency, micros);
}

void js_metrics_hsm_error(js_metrics *m)
{
    if (m != NULL)
        atomic_fetch_add_explicit(&m->hsm_errors, 1, memory_order_relaxed);
}

void js_metrics_audit_batch(js_metrics *m, size_t records, uint64_t fsync_micros)
{
    if (m == NULL)
        return;
    histogram_observe(&m->batch_records, (uint64_t)records);
    histogram_observe(&m->fsync_seconds, fsync_micros);
}

void js_metrics_rate_limited(js_metrics *m, const char *caller)
{
    if (m == NULL)
        return;
    label *l = intern(&m->callers, caller);
    atomic_fetch_add_explicit(&l->rate_limited, 1, memory_order_relaxed);
}

/* ---- rendering --------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    int failed;
} buf;

static void buf_reserve(buf *b, size_t more)
{
    if (b->failed)
        return;
    if (more > RENDER_MAX || b->len + more + 1 > RENDER_MAX) {
        b->failed = 1;
        return;
    }
    size_t need = b->len + more + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : RENDER_INITIAL;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->failed = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_put(buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    if (b->failed)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_printf(buf *b, const char *fmt, ...) JS_PRINTF(2, 3);
static void buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        b->failed = 1; /* every format here is short; long values go through buf_label */
        return;
    }
    buf_put(b, tmp, (size_t)n);
}

/* A label value, escaped as the text format 0.0.4 requires: \\ \" \n. */
static void buf_label(buf *b, const char *name, const char *value, int first)
{
    if (!first)
        buf_put(b, ",", 1);
    buf_put(b, name, strlen(name));
    buf_put(b, "=\"", 2);
    for (const char *p = value; *p != '\0'; p++) {
        switch (*p) {
        case '\\':
            buf_put(b, "\\\\", 2);
            break;
        case '"':
            buf_put(b, "\\\"", 2);
            break;
        case '\n':
            buf_put(b, "\\n", 2);
            break;
        default:
            buf_put(b, p, 1);
            break;
        }
    }
    buf_put(b, "\"", 1);
}

static void buf_header(buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Microseconds as an exact decimal number of seconds. */
static void buf_seconds(buf *b, uint64_t micros)
{
    buf_printf(b, "%" PRIu64 ".%06" PRIu64, micros / 1000000u, micros % 1000000u);
}

static void render_histogram(buf *b, const char *name, const char *help, histogram *hg)
{
    buf_header(b, name, "histogram", help);
    uint64_t cum = 0;
    for (size_t i = 0; i <= hg->nbounds; i++) {
        cum += atomic_load_explicit(&hg->counts[i], memory_order_relaxed);
        buf_printf(b, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name,
                   i < hg->nbounds ? hg->le[i] : "+Inf", cum);
    }
    uint64_t sum = atomic_load_explicit(&hg->sum, memory_order_relaxed);
    buf_printf(b, "%s_sum ", name);
    if (hg->seconds)
        buf_seconds(b, sum);
    else
        buf_printf(b, "%" PRIu64, sum);
    buf_printf(b, "\n%s_count %" PRIu64 "\n", name, cum);
}

typedef struct series_row {
    const series *s;
    uint64_t count;
} series_row;

static int cmp_series(const void *a, const void *b)
{
    const series *x = ((const series_row *)a)->s, *y = ((const series_row *)b)->s;
    int c = strcmp(x->method->value, y->method->value);
    if (c == 0)
        c = strcmp(x->caller->value, y->caller->value);
    if (c == 0)
        c = strcmp(x->decision->value, y->decision->value);
    if (c == 0)
        c = strcmp(x->reason->value, y->reason->value);
    return c;
}

static int cmp_label(const void *a, const void *b)
{
    return strcmp((*(const label *const *)a)->value, (*(const label *const *)b)->value);
}

static void render_requests(buf *b, js_metrics *m)
{
    buf_header(b, "jwt_signer_requests_total", "counter",
               "Signing requests by method, caller, decision and reason.");
    series_table *t = &m->requests;
    /* At most MAX_SERIES capped series plus the uncapped "other" fold. */
    size_t max =
        JS_METRICS_MAX_SERIES + (JS_METRICS_MAX_METHODS + 1) * (JS_METRICS_MAX_DECISIONS + 1);
    series_row *rows = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < STRIPES && !b->failed; i++) {
        pthread_mutex_lock(&t->mu[i]);
        for (size_t k = 0; k < SERIES_BUCKETS; k++) {
            for (node *nd = t->buckets[i][k]; nd != NULL && n < max; nd = nd->next) {
                if (n == cap) {
                    size_t ncap = cap ? cap * 2 : 64;
                    series_row *r = realloc(rows, ncap * sizeof(*r));
                    if (r == NULL) {
                        b->failed = 1;
                        break;
                    }
                    rows = r;
                    cap = ncap;
                }
                series *s = (series *)nd;
                rows[n].s = s;
                rows[n].count = atomic_load_explicit(&s->count, memory_order_relaxed);
                n++;
            }
        }
        pthread_mutex_unlock(&t->mu[i]);
    }
    if (!b->failed && n > 0)
        qsort(rows, n, sizeof(*rows), cmp_series);
    for (size_t i = 0; i < n && !b->failed; i++) {
        buf_put(b, "jwt_signer_requests_total{", 26);
        buf_label(b, "method", rows[i].s->method->value, 1);
        buf_label(b, "caller", rows[i].s->caller->value, 0);
        buf_label(b, "decision", rows[i].s->decision->value, 0);
        buf_label(b, "reason", rows[i].s->reason->value, 0);
        buf_printf(b, "} %" PRIu64 "\n", rows[i].count);
    }
    free(rows);
}

static void render_rate_limited(buf *b, js_metrics *m)
{
    buf_header(b, "jwt_signer_rate_limited_total", "counter",
               "Requests refused by the per-caller rate limit.");
    label_set *s = &m->callers;
    label *rows[JS_METRICS_MAX_CALLERS + 1];
    size_t n = 0;
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_lock(&s->mu[i]);
        for (size_t k = 0; k < LABEL_BUCKETS; k++)
            for (node *nd = s->buckets[i][k]; nd != NULL && n < JS_METRICS_MAX_CALLERS;
                 nd = nd->next)
                rows[n++] = (label *)nd;
        pthread_mutex_unlock(&s->mu[i]);
    }
    rows[n++] = s->other;
    qsort(rows, n, sizeof(rows[0]), cmp_label);
    for (size_t i = 0; i < n && !b->failed; i++) {
        uint64_t v = atomic_load_explicit(&rows[i]->rate_limited, memory_order_relaxed);
        if (v == 0)
            continue; /* callers seen only in requests_total */
        buf_put(b, "jwt_signer_rate_limited_total{", 30);
        buf_label(b, "caller", rows[i]->value, 1);
        buf_printf(b, "} %" PRIu64 "\n", v);
    }
}

static void render_gauges(buf *b, const js_metrics_gauges *g)
{
    static const char *const states[JS_METRICS_KEY_STATES] = {"next", "active", "retiring",
                                                              "retired", "revoked"};
    buf_header(b, "jwt_signer_incident_mode", "gauge", "1 while incident mode is on.");
    buf_printf(b, "jwt_signer_incident_mode %d\n", g->incident_mode ? 1 : 0);
    buf_header(b, "jwt_signer_frozen_callers", "gauge",
               "Caller identities frozen at run time (Admin FreezeCaller, kept across restarts); "
               "the policy's frozen entries are not counted.");
    buf_printf(b, "jwt_signer_frozen_callers %zu\n", g->frozen_callers);
    buf_header(b, "jwt_signer_key_versions", "gauge", "Key versions by state.");
    for (size_t i = 0; i < JS_METRICS_KEY_STATES; i++)
        buf_printf(b, "jwt_signer_key_versions{state=\"%s\"} %zu\n", states[i], g->key_versions[i]);
    buf_header(b, "jwt_signer_audit_healthy", "gauge", "1 while the audit log is writable.");
    buf_printf(b, "jwt_signer_audit_healthy %d\n", g->audit_healthy ? 1 : 0);
    buf_header(b, "jwt_signer_hsm_healthy", "gauge", "1 while the HSM can sign.");
    buf_printf(b, "jwt_signer_hsm_healthy %d\n", g->hsm_healthy ? 1 : 0);
    buf_header(b, "jwt_signer_hsm_recoveries_total", "counter",
               "HSM outages ended: the HSM signed again after a lost session or key handle.");
    buf_printf(b, "jwt_signer_hsm_recoveries_total %" PRIu64 "\n", g->hsm_recoveries);
    buf_header(b, "jwt_signer_hsm_session_failures_total", "counter",
               "HSM faults that lost a session or key handle.");
    buf_printf(b, "jwt_signer_hsm_session_failures_total %" PRIu64 "\n", g->hsm_session_failures);
    buf_header(b, "jwt_signer_audit_disk_low", "gauge",
               "1 while the audit file system's free space is under the watermark.");
    buf_printf(b, "jwt_signer_audit_disk_low %d\n", g->audit_disk_low ? 1 : 0);
    buf_header(b, "jwt_signer_audit_disk_free_bytes", "gauge",
               "Free space of the audit directory's file system.");
    buf_printf(b, "jwt_signer_audit_disk_free_bytes %" PRIu64 "\n", g->audit_disk_free_bytes);
    buf_header(b, "jwt_signer_grpc_listener_recreations_total", "counter",
               "gRPC listeners re-created after accept failed (descriptor exhaustion).");
    buf_printf(b, "jwt_signer_grpc_listener_recreations_total %" PRIu64 "\n",
               g->listener_recreations);
    buf_header(b, "jwt_signer_denials_folded_total", "counter",
               "Denials over the per-caller budget, counted into folded audit records and log "
               "lines.");
    buf_printf(b, "jwt_signer_denials_folded_total %" PRIu64 "\n", g->denials_folded);
    buf_header(b, "jwt_signer_audit_records_lost_total", "counter",
               "Audit records dropped when their batch failed and no caller was waiting for them "
               "(denials, folded denials); each recovery record counts its outage's.");
    buf_printf(b, "jwt_signer_audit_records_lost_total %" PRIu64 "\n", g->audit_records_lost);
    /* Seconds with the checkpoint's millisecond precision; a plain 0 before
     * the first. An alert compares time() with it (audit.heartbeat). */
    buf_header(b, "jwt_signer_audit_last_checkpoint_timestamp_seconds", "gauge",
               "Unix time of the newest signed audit checkpoint that is durable; 0 before the "
               "first.");
    if (g->audit_last_checkpoint_ms == 0)
        buf_printf(b, "jwt_signer_audit_last_checkpoint_timestamp_seconds 0\n");
    else
        buf_printf(b,
                   "jwt_signer_audit_last_checkpoint_timestamp_seconds %" PRIu64 ".%03" PRIu64 "\n",
                   g->audit_last_checkpoint_ms / 1000, g->audit_last_checkpoint_ms % 1000);
    if (g->open_fds >= 0) {
        buf_header(b, "jwt_signer_open_fds", "gauge", "Open file descriptors.");
        buf_printf(b, "jwt_signer_open_fds %ld\n", g->open_fds);
    }
    buf_header(b, "jwt_signer_fd_limit", "gauge", "RLIMIT_NOFILE in force.");
    buf_printf(b, "jwt_signer_fd_limit %lu\n", g->fd_limit);
}

char *js_metrics_render(js_metrics *m, const js_metrics_gauges *g)
{
    if (m == NULL)
        return NULL;
    buf b = {0};
    render_requests(&b, m);
    render_rate_limited(&b, m);
    buf_header(&b, "jwt_signer_hsm_errors_total", "counter", "HSM operations that failed.");
    buf_printf(&b, "jwt_signer_hsm_errors_total %" PRIu64 "\n",
               atomic_load_explicit(&m->hsm_errors, memory_order_relaxed));
    render_histogram(&b, "jwt_signer_sign_latency_seconds", "Time to sign one token.",
                     &m->sign_latency);
    render_histogram(&b, "jwt_signer_audit_batch_records", "Audit records per fsync batch.",
                     &m->batch_records);
    render_histogram(&b, "jwt_signer_audit_fsync_seconds", "Time of one audit log fsync.",
                     &m->fsync_seconds);
    if (g != NULL)
        render_gauges(&b, g);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

json_t *js_metrics_caller_counts(js_metrics *m)
{
    json_t *out = json_object();
    if (m == NULL || out == NULL)
        return out;
    series_table *t = &m->requests;
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_lock(&t->mu[i]);
        for (size_t k = 0; k < SERIES_BUCKETS; k++) {
            for (node *nd = t->buckets[i][k]; nd != NULL; nd = nd->next) {
                const series *se = (const series *)nd;
                if (strcmp(se->method->value, JS_METHOD_SIGN_JWT) != 0 &&
                    strcmp(se->method->value, JS_METHOD_K8S_SIGN) != 0)
                    continue;
                json_t *c = json_object_get(out, se->caller->value);
                if (c == NULL) {
                    c = json_pack("{s:I, s:I, s:I, s:I}", "allow", (json_int_t)0, "deny",
                                  (json_int_t)0, "error", (json_int_t)0, "rate_limited",
                                  (json_int_t)atomic_load(&((label *)se->caller)->rate_limited));
                    json_object_set_new(out, se->caller->value, c);
                }
                json_t *v = json_object_get(c, se->decision->value);
                if (v != NULL)
                    json_integer_set(v,
                                     json_integer_value(v) + (json_int_t)atomic_load(&se->count));
            }
        }
        pthread_mutex_unlock(&t->mu[i]);
    }
    return out;
}
