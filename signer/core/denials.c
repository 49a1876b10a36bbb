/*
 * denials.c - the denial budget (denials.h): token buckets per key in a
 * fixed, striped table, plus one overflow bucket and one global bucket.
 *
 * Buckets count milli-tokens: a full record costs 1000, and `rate` tokens
 * per second refill `rate` milli-tokens per millisecond, so the arithmetic
 * is exact integers with no division on the hot path.
 */
#include "denials.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define STRIPES         64u /* power of two: a stripe is hash & (STRIPES - 1) */
#define TOKEN           1000u
#define GETRANDOM_TRIES 8

typedef struct bucket {
    uint64_t milli;  /* tokens * 1000, <= burst * 1000 */
    int64_t last_ms; /* last refill */
} bucket;

typedef struct slot {
    uint64_t hash; /* 0 = free */
    bucket b;
} slot;

typedef struct stripe {
    pthread_mutex_t mu;
    slot *slots; /* per_stripe of them */
} stripe;

struct js_denials {
    uint64_t sip_k0, sip_k1; /* SipHash key: random per process */
    uint32_t rate, burst, global_rate, global_burst;
    size_t per_stripe;
    stripe stripes[STRIPES];
    pthread_mutex_t omu; /* overflow bucket */
    bucket overflow;
    pthread_mutex_t gmu; /* global bucket */
    bucket global;
    atomic_uint_fast64_t admitted, folded, overflowed;
};

/* ---- SipHash-2-4 (Aumasson & Bernstein, 2012): a keyed hash, so which keys
 * share a stripe or collide cannot be chosen by someone who picks keys. --- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t siphash24(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len - len % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- buckets ------------------------------------------------------------------------ */

static void bucket_fill(bucket *b, uint32_t burst, int64_t now_ms)
{
    b->milli = (uint64_t)burst * TOKEN;
    b->last_ms = now_ms;
}

/* Refills by the time elapsed (a clock going back refills nothing). */
static void bucket_refill(bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
    uint64_t cap = (uint64_t)burst * TOKEN;
    if (now_ms > b->last_ms) {
        uint64_t el = (uint64_t)(now_ms - b->last_ms);
        /* el * rate cannot overflow before it exceeds cap for any sane el;
         * clamp el first so it never does. */
        if (el > cap)
            el = cap;
        b->milli += el * rate;
        if (b->milli > cap)
            b->milli = cap;
        b->last_ms = now_ms;
    }
}

static bool bucket_take(bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
    bucket_refill(b, rate, burst, now_ms);
    if (b->milli < TOKEN)
        return false;
    b->milli -= TOKEN;
    return true;
}

/* A bucket that would be full by now carries no state: its slot is free. */
static bool bucket_idle(const bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
    uint64_t cap = (uint64_t)burst * TOKEN;
    if (now_ms <= b->last_ms)
        return b->milli >= cap;
    uint64_t el = (uint64_t)(now_ms - b->last_ms);
    return el >= cap || b->milli + el * rate >= cap;
}

/* ---- public API --------------------------------------------------------------------- */

js_status js_denials_new(const js_denials_options *opts, js_denials **out, js_err *err)
{
    js_denials_options o;
    memset(&o, 0, sizeof(o));
    if (opts != NULL)
        o = *opts;
    uint32_t rate = o.rate ? o.rate : JS_DENIALS_RATE;
    uint32_t burst = o.burst ? o.burst : JS_DENIALS_BURST;
    uint32_t grate = o.global_rate ? o.global_rate : JS_DENIALS_GLOBAL_RATE;
    uint32_t gburst = o.global_burst ? o.global_burst : JS_DENIALS_GLOBAL_BURST;
    uint32_t max_keys = o.max_keys ? o.max_keys : JS_DENIALS_MAX_KEYS;
    /* Bounded so milli-token arithmetic stays far from overflow. */
    JS_ENSURE(rate <= 1000000 && burst <= 1000000 && grate <= 1000000 && gburst <= 1000000 &&
                  max_keys <= 1u << 20,
              err, JS_EINVAL, JS_R_DENIALS_CONFIG, "denial budget values out of range");
    js_denials *d = calloc(1, sizeof(*d));
    JS_ENSURE_ALLOC(d, err);
    uint8_t seed[16];
    size_t got = 0;
    for (int i = 0; i < GETRANDOM_TRIES && got < sizeof(seed); i++) {
        ssize_t n = getrandom(seed + got, sizeof(seed) - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    if (got < sizeof(seed)) {
        free(d);
        return js_err_set(err, JS_EINTERNAL, JS_R_DENIALS_ENTROPY, "getrandom failed");
    }
    d->sip_k0 = load_le64(seed);
    d->sip_k1 = load_le64(seed + 8);
    d->rate = rate;
    d->burst = burst;
    d->global_rate = grate;
    d->global_burst = gburst;
    d->per_stripe = (max_keys + STRIPES - 1) / STRIPES;
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&d->stripes[i].mu, NULL);
        d->stripes[i].slots = calloc(d->per_stripe, sizeof(slot));
        if (d->stripes[i].slots == NULL) {
            js_denials_free(d);
            return js_err_oom(err);
        }
    }
    pthread_mutex_init(&d->omu, NULL);
    pthread_mutex_init(&d->gmu, NULL);
    bucket_fill(&d->overflow, burst, 0);
    d->overflow.last_ms = INT64_MIN / 2; /* full whatever the clock's origin */
    bucket_fill(&d->global, gburst, 0);
    d->global.last_ms = INT64_MIN / 2;
    atomic_init(&d->admitted, 0);
    atomic_init(&d->folded, 0);
    atomic_init(&d->overflowed, 0);
    *out = d;
    return JS_OK;
}

void js_denials_free(js_denials *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < STRIPES; i++) {
        if (d->stripes[i].slots == NULL)
            continue; /* _new failed here; later stripes were never set up */
        free(d->stripes[i].slots);
        pthread_mutex_destroy(&d->stripes[i].mu);
    }
    free(d);
}

/* The per-key decision, under the key's stripe lock (or the overflow lock). */
static bool key_take(js_denials *d, uint64_t h, int64_t now_ms)
{
    h |= 1; /* 0 marks a free slot */
    stripe *s = &d->stripes[(h >> 1) & (STRIPES - 1)];
    pthread_mutex_lock(&s->mu);
    slot *hit = NULL, *free_slot = NULL;
    for (size_t i = 0; i < d->per_stripe; i++) {
        slot *sl = &s->slots[i];
        if (sl->hash == h) {
            hit = sl;
            break;
        }
        if (free_slot == NULL && (sl->hash == 0 || bucket_idle(&sl->b, d->rate, d->burst, now_ms)))
            free_slot = sl;
    }
    if (hit == NULL && free_slot != NULL) {
        hit = free_slot;
        hit->hash = h;
        bucket_fill(&hit->b, d->burst, now_ms);
    }
    bool ok = false;
    if (hit != NULL)
        ok = bucket_take(&hit->b, d->rate, d->burst, now_ms);
    pthread_mutex_unlock(&s->mu);
    if (hit != NULL)
        return ok;
    /* The table is full of keys still inside their budget: this key shares
     * the overflow bucket, so many identities still cost one budget. */
    atomic_fetch_add_explicit(&d->overflowed, 1, memory_order_relaxed);
    pthread_mutex_lock(&d->omu);
    ok = bucket_take(&d->overflow, d->rate, d->burst, now_ms);
    pthread_mutex_unlock(&d->omu);
    return ok;
}

bool js_denials_admit(js_denials *d, const char *key, int64_t now_ms)
{
    if (key == NULL)
        key = "";
    size_t len = strnlen(key, JS_DENIALS_KEY_MAX);
    uint64_t h = siphash24(d->sip_k0, d->sip_k1, (const uint8_t *)key, len);
    bool ok = key_take(d, h, now_ms);
    if (ok) {
        /* Only a denial the key's own budget allows reaches the global
         * bucket, so a flood from one key does not contend on it. */
        pthread_mutex_lock(&d->gmu);
        ok = bucket_take(&d->global, d->global_rate, d->global_burst, now_ms);
        pthread_mutex_unlock(&d->gmu);
    }
    atomic_fetch_add_explicit(ok ? &d->admitted : &d->folded, 1, memory_order_relaxed);
    return ok;
}

void js_denials_stats_get(const js_denials *d, js_denials_stats *out)
{
    js_denials *m = (js_denials *)d; /* atomic loads need a non-const object in C11 */
    out->admitted = atomic_load_explicit(&m->admitted, memory_order_relaxed);
    out->folded = atomic_load_explicit(&m->folded, memory_order_relaxed);
    out->overflowed = atomic_load_explicit(&m->overflowed, memory_order_relaxed);
}

/* The address in a gRPC peer string, without its port: "ipv4:A.B.C.D:PORT",
 * "ipv6:[ADDR]:PORT", else the whole string ("unix:PATH"). The port changes
 * per connection; the address does not. Sets *addr, returns its length. */
static size_t peer_addr(const char *peer, const char **addr)
{
    const char *p = peer != NULL ? peer : "";
    *addr = p;
    if (strncmp(p, "ipv4:", 5) == 0) {
        *addr = p + 5;
        const char *colon = strrchr(*addr, ':');
        return colon != NULL ? (size_t)(colon - *addr) : strlen(*addr);
    }
    if (strncmp(p, "ipv6:", 5) == 0) {
        *addr = p + 5;
        const char *close = strchr(*addr, ']');
        if ((*addr)[0] == '[' && close != NULL) {
            (*addr)++;
            return (size_t)(close - *addr);
        }
        return strlen(*addr);
    }
    return strlen(p);
}

/* Appends n bytes of s to out[*o..], truncating at cap (room kept for the NUL). */
static void put(char *out, size_t cap, size_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *o + 1 < cap; i++)
        out[(*o)++] = s[i];
}

void js_denials_peer_addr(const char *peer, char *out, size_t cap)
{
    if (cap == 0)
        return;
    const char *addr;
    size_t alen = peer_addr(peer, &addr);
    size_t o = 0;
    put(out, cap, &o, addr, alen);
    out[o] = '\0';
}

void js_denials_key(const char *identity, const char *peer, char *out, size_t cap)
{
    if (cap == 0)
        return;
    if (identity != NULL && identity[0] != '\0') {
        size_t n = strnlen(identity, cap - 1);
        memcpy(out, identity, n);
        out[n] = '\0';
        return;
    }
    const char *addr;
    size_t alen = peer_addr(peer, &addr);
    size_t o = 0;
    put(out, cap, &o, "peer ", 5);
    put(out, cap, &o, addr, alen);
    out[o] = '\0';
}
