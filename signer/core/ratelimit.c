/*
 * ratelimit.c - per-identity token buckets in a striped hash table
 * (ratelimit.h).
 *
 * The table is split into RL_STRIPES stripes chosen by the identity's hash,
 * each a fixed array of chains under its own mutex; a bucket's state is read
 * and updated under its stripe's mutex only, so two callers contend only when
 * their identities share a stripe, and no lock is held for longer than a
 * lookup and a few arithmetic operations. The number of identity buckets is
 * bounded by max_identities (an atomic counter); at the bound, an idle bucket
 * that has refilled completely is recycled (it carries no state worth
 * keeping; the search is bounded), and otherwise the identity shares one
 * overflow bucket per caller entry, keyed by the entry's id.
 *
 * A bucket remembers the (per_second, burst) it is filled under. When the
 * limits in force differ at take time (a reload changed them, or incident
 * mode switched), it continues under the new limits: if the new burst is no
 * larger, its tokens are clamped to min(current, new burst), so switching
 * incident mode on never hands out a fresh burst; otherwise (the limits got
 * looser) it restarts full under the new limits.
 */
#include "ratelimit.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

#define RL_STRIPES 64
/* Longer identities than this share the caller entry's overflow bucket. */
#define RL_IDENTITY_MAX   2048
#define RL_MAX_IDENTITIES (1u << 24)
#define RL_CHAINS_MIN     8u
#define RL_CHAINS_MAX     (1u << 16)
#define NS_PER_S          1e9
/* Buckets examined when looking for one to recycle. */
#define RL_EVICT_BUDGET 512u

typedef struct bucket {
    struct bucket *next;
    uint64_t hash;
    bool overflow; /* key is a caller entry id, shared by identities beyond the bound */
    double per_second;
    double burst;
    double tokens;
    uint64_t last_ns;
    size_t key_len;
    char key[]; /* NUL-terminated */
} bucket;

typedef struct stripe {
    pthread_mutex_t mu;
    bucket **chains;
    size_t nchains; /* a power of two */
} stripe;

struct js_ratelimit {
    stripe stripes[RL_STRIPES];
    size_t nstripes_init; /* stripes whose mutex was initialised */
    size_t max_identities;
    atomic_size_t nidentities;
    atomic_bool incident;
};

/* FNV-1a, 64 bit; the overflow namespace is salted so it never equals an identity's. */
static uint64_t hash_key(const char *s, size_t len, bool overflow)
{
    uint64_t h = overflow ? 0x9e3779b97f4a7c15ull : 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

void js_ratelimit_free(js_ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (size_t s = 0; s < RL_STRIPES; s++) {
        stripe *st = &rl->stripes[s];
        for (size_t i = 0; st->chains != NULL && i < st->nchains; i++) {
            bucket *b = st->chains[i];
            while (b != NULL) {
                bucket *next = b->next;
                free(b);
                b = next;
            }
        }
        free(st->chains);
        if (s < rl->nstripes_init)
            pthread_mutex_destroy(&st->mu);
    }
    free(rl);
}

js_status js_ratelimit_new(size_t max_identities, js_ratelimit **out, js_err *err)
{
    *out = NULL;
    JS_ENSURE(max_identities >= 1 && max_identities <= RL_MAX_IDENTITIES, err, JS_ECONFIG,
              JS_R_RATE_CONFIG, "max_identities must be 1..%u", RL_MAX_IDENTITIES);
    js_ratelimit *rl = calloc(1, sizeof(*rl));
    JS_ENSURE_ALLOC(rl, err);
    rl->max_identities = max_identities;
    atomic_init(&rl->nidentities, 0);
    atomic_init(&rl->incident, false);
    /* About two buckets per chain when full. */
    size_t want = max_identities / RL_STRIPES / 2, nchains = RL_CHAINS_MIN;
    while (nchains < want && nchains < RL_CHAINS_MAX)
        nchains *= 2;
    for (size_t s = 0; s < RL_STRIPES; s++) {
        stripe *st = &rl->stripes[s];
        if (pthread_mutex_init(&st->mu, NULL) != 0) {
            js_ratelimit_free(rl);
            return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_MUTEX,
                              "mutex initialisation failed");
        }
        rl->nstripes_init = s + 1;
        st->nchains = nchains;
        st->chains = calloc(nchains, sizeof(*st->chains));
        if (st->chains == NULL) {
            js_ratelimit_free(rl);
            return js_err_oom(err);
        }
    }
    *out = rl;
    return JS_OK;
}

void js_ratelimit_set_incident(js_ratelimit *rl, bool on)
{
    if (rl != NULL)
        atomic_store(&rl->incident, on);
}

bool js_ratelimit_incident(const js_ratelimit *rl)
{
    return rl != NULL && atomic_load(&((js_ratelimit *)rl)->incident);
}

static stripe *stripe_of(js_ratelimit *rl, uint64_t h)
{
    return &rl->stripes[h % RL_STRIPES];
}

static size_t chain_of(const stripe *st, uint64_t h)
{
    return (size_t)(h / RL_STRIPES) & (st->nchains - 1);
}

static bucket *find(const stripe *st, uint64_t h, const char *key, size_t len, bool overflow)
{
    for (bucket *b = st->chains[chain_of(st, h)]; b != NULL; b = b->next)
        if (b->hash == h && b->overflow == overflow && b->key_len == len &&
            memcmp(b->key, key, len) == 0)
            return b;
    return NULL;
}

/* Tokens b would hold at now under its own limits. */
static double refilled(const bucket *b, uint64_t now_ns)
{
    if (now_ns <= b->last_ns)
        return b->tokens; /* a clock read earlier by another thread: no refill, no debt */
    double t = b->tokens + (double)(now_ns - b->last_ns) / NS_PER_S * b->per_second;
    return t < b->burst ? t : b->burst;
}

/* Removes one identity bucket of st that is idle and full (so it carries no
 * state worth keeping), looking at no more than *budget buckets; under st->mu. */
static bool evict_full(stripe *st, uint64_t now_ns, size_t *budget)
{
    for (size_t i = 0; i<st->nchains && * budget> 0; i++) {
        for (bucket **pp = &st->chains[i]; *pp != NULL && *budget > 0; pp = &(*pp)->next) {
            bucket *b = *pp;
            (*budget)--;
            if (!b->overflow && refilled(b, now_ns) >= b->burst) {
                *pp = b->next;
                free(b);
                return true;
            }
        }
    }
    return false;
}

/* Frees one idle, full identity bucket anywhere, locking one stripe at a
 * time (never two, so no lock order to get wrong); the search is bounded so
 * a table full of busy buckets costs little. */
static bool evict_any(js_ratelimit *rl, size_t from, uint64_t now_ns)
{
    size_t budget = RL_EVICT_BUDGET;
    for (size_t k = 0; k < RL_STRIPES && budget > 0; k++) {
        stripe *st = &rl->stripes[(from + k) % RL_STRIPES];
        pthread_mutex_lock(&st->mu);
        bool done = evict_full(st, now_ns, &budget);
        pthread_mutex_unlock(&st->mu);
        if (done) {
            atomic_fetch_sub(&rl->nidentities, 1);
            return true;
        }
    }
    return false;
}

static bool reserve_identity(js_ratelimit *rl)
{
    size_t cur = atomic_load(&rl->nidentities);
    while (cur < rl->max_identities)
        if (atomic_compare_exchange_weak(&rl->nidentities, &cur, cur + 1))
            return true;
    return false;
}

static bucket *insert(stripe *st, uint64_t h, const char *key, size_t len, bool overflow,
                      js_rate lim, uint64_t now_ns)
{
    bucket *b = malloc(sizeof(*b) + len + 1);
    if (b == NULL)
        return NULL;
    b->hash = h;
    b->overflow = overflow;
    b->per_second = lim.per_second;
    b->burst = lim.burst;
    b->tokens = lim.burst; /* a new identity starts with a full burst */
    b->last_ns = now_ns;
    b->key_len = len;
    memcpy(b->key, key, len);
    b->key[len] = '\0';
    size_t ci = chain_of(st, h);
    b->next = st->chains[ci];
    st->chains[ci] = b;
    return b;
}

typedef enum take_result { TAKE_OK, TAKE_LIMITED, TAKE_NO_ROOM, TAKE_OOM } take_result;

/* Brings b up to now and onto the limits in force, then takes one token. */
static take_result bucket_take(bucket *b, js_rate lim, uint64_t now_ns, double *wait_s)
{
    b->tokens = refilled(b, now_ns);
    if (now_ns > b->last_ns)
        b->last_ns = now_ns;
    if (b->per_second != lim.per_second || b->burst != lim.burst) {
        /* Tighter (or equal) burst: keep what is left, capped; looser: restart full. */
        if (lim.burst > b->burst)
            b->tokens = lim.burst;
        else if (b->tokens > lim.burst)
            b->tokens = lim.burst;
        b->per_second = lim.per_second;
        b->burst = lim.burst;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return TAKE_OK;
    }
    *wait_s = (1.0 - b->tokens) / b->per_second;
    return TAKE_LIMITED;
}

static take_result take_key(js_ratelimit *rl, const char *key, size_t len, bool overflow,
                            js_rate lim, uint64_t now_ns, double *wait_s)
{
    uint64_t h = hash_key(key, len, overflow);
    stripe *st = stripe_of(rl, h);
    for (int attempt = 0;; attempt++) {
        pthread_mutex_lock(&st->mu);
        bucket *b = find(st, h, key, len, overflow);
        if (b == NULL) {
            if (!overflow && !reserve_identity(rl)) {
                pthread_mutex_unlock(&st->mu);
                /* At the bound: recycle an idle full bucket, once, else share. */
                if (attempt == 0 && evict_any(rl, (size_t)(h % RL_STRIPES), now_ns))
                    continue;
                return TAKE_NO_ROOM;
            }
            b = insert(st, h, key, len, overflow, lim, now_ns);
            if (b == NULL) {
                if (!overflow)
                    atomic_fetch_sub(&rl->nidentities, 1);
                pthread_mutex_unlock(&st->mu);
                return TAKE_OOM;
            }
        }
        take_result r = bucket_take(b, lim, now_ns, wait_s);
        pthread_mutex_unlock(&st->mu);
        return r;
    }
}

js_status js_ratelimit_take(js_ratelimit *rl, const js_policy_caller *c, const char *identity,
                            uint64_t now_ns, uint64_t *retry_after_ms, js_err *err)
{
    char shown[96], cid[96];
    JS_ENSURE(retry_after_ms != NULL, err, JS_EINTERNAL, JS_R_RATE_INTERNAL, "no retry_after_ms");
    *retry_after_ms = 0;
    JS_ENSURE(rl != NULL && c != NULL && identity != NULL, err, JS_EINTERNAL, JS_R_RATE_INTERNAL,
              "rate limiter called without a limiter, caller entry or identity");
    bool incident = atomic_load(&rl->incident);
    js_rate lim = incident ? js_policy_caller_incident_rate(c) : js_policy_caller_rate(c);
    if (!(lim.per_second > 0) || !(lim.burst >= 1))
        return JS_OK; /* unlimited */

    size_t len = strlen(identity);
    const char *id = js_policy_caller_id(c);
    double wait_s = 0;
    take_result r = TAKE_NO_ROOM;
    bool shared = false;
    if (len <= RL_IDENTITY_MAX)
        r = take_key(rl, identity, len, false, lim, now_ns, &wait_s);
    if (r == TAKE_NO_ROOM) {
        shared = true;
        r = take_key(rl, id, strlen(id), true, lim, now_ns, &wait_s);
    }
    switch (r) {
    case TAKE_OK:
        return JS_OK;
    case TAKE_LIMITED: {
        /* The time until one whole token, rounded up: retrying sooner fails. */
        double ms = wait_s * 1000.0;
        uint64_t whole = ms >= 1e12 ? (uint64_t)1e12 : (uint64_t)ms;
        if ((double)whole < ms && whole < (uint64_t)1e12)
            whole++; /* ceil without libm */
        *retry_after_ms = whole < 1 ? 1 : whole;
        return js_err_set(
            err, JS_ELIMIT, JS_R_RATE_LIMITED,
            "%s: caller '%s' (policy entry '%s'%s) is over %g/s, burst %g; retry "
            "after %" PRIu64 " ms",
            incident ? "incident_rate" : "rate", js_escape(shown, sizeof(shown), identity, len),
            js_escape(cid, sizeof(cid), id, strlen(id)), shared ? ", shared overflow bucket" : "",
            lim.per_second, lim.burst, *retry_after_ms);
    }
    case TAKE_OOM:
    case TAKE_NO_ROOM:
    default:
        return js_err_oom(err);
    }
}
