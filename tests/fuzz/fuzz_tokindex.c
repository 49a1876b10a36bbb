/*
 * fuzz_tokindex.c - libFuzzer target for the issued-token index
 * (signer/core/tokindex.h): the input is a sequence of operations (add,
 * find, revoke, revoked, sweep) over a few jti/sub/caller values and small
 * times, so replacements, duplicates, a full index, cut-off boundaries and
 * sweeps happen often. A plain model (arrays, linear search) runs beside
 * the index; any disagreement aborts. Catches chain unlinking, table growth
 * and the full-index sweep going wrong.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokindex.h"

#define MAX_ENTRIES 6
#define NJTI        10
#define NREV        32

static const char *const JTIS[NJTI] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "jj"};
static const char *const SUBS[] = {"s0", "s1", "s2", NULL};
static const char *const CALLERS[] = {"c0", "c1", NULL};

typedef struct m_entry {
    bool used;
    int jti;
    uint8_t h;
    int64_t iat, exp;
    int sub, caller;
} m_entry;

typedef struct m_rev {
    bool used;
    js_tok_revoked kind;
    const char *value;
    int64_t cutoff, until;
} m_rev;

typedef struct model {
    m_entry e[NJTI]; /* indexed by jti */
    m_rev r[NREV];
} model;

typedef struct cursor {
    const uint8_t *p;
    size_t n;
} cursor;

static uint8_t next(cursor *c)
{
    if (c->n == 0)
        return 0;
    c->n--;
    return *c->p++;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static size_t m_count(const model *m)
{
    size_t n = 0;
    for (int i = 0; i < NJTI; i++)
        n += m->e[i].used;
    return n;
}

static size_t m_sweep(model *m, int64_t now)
{
    size_t n = 0;
    for (int i = 0; i < NJTI; i++)
        if (m->e[i].used && m->e[i].exp <= now) {
            m->e[i].used = false;
            n++;
        }
    for (int i = 0; i < NREV; i++)
        if (m->r[i].used && m->r[i].until <= now)
            m->r[i].used = false;
    return n;
}

static size_t m_revcount(const model *m)
{
    size_t n = 0;
    for (int i = 0; i < NREV; i++)
        n += m->r[i].used;
    return n;
}

static js_tok_info info_of(const m_entry *e)
{
    js_tok_info t;
    memset(&t, 0, sizeof(t));
    t.jti = (char *)JTIS[e->jti];
    memset(t.sha256, e->h, sizeof(t.sha256));
    t.sub = (char *)SUBS[e->sub];
    t.caller = (char *)CALLERS[e->caller];
    t.kid = "k";
    t.iat = e->iat;
    t.exp = e->exp;
    return t;
}

static js_tok_revoked m_revoked(const model *m, const js_tok_info *t)
{
    const char *v[] = {NULL, t->jti, t->sub, t->caller};
    for (int k = JS_TOK_REVOKED_JTI; k <= JS_TOK_REVOKED_CALLER; k++) {
        if (v[k] == NULL)
            continue;
        for (int i = 0; i < NREV; i++) {
            const m_rev *r = &m->r[i];
            if (r->used && r->kind == (js_tok_revoked)k && strcmp(r->value, v[k]) == 0 &&
                (k == JS_TOK_REVOKED_JTI || t->iat <= r->cutoff))
                return (js_tok_revoked)k;
        }
    }
    return JS_TOK_NOT_REVOKED;
}

static void op_add(js_tokindex *ix, model *m, cursor *c)
{
    m_entry e = {.used = true,
                 .jti = next(c) % NJTI,
                 .h = next(c) % 3,
                 .iat = next(c),
                 .exp = next(c),
                 .sub = next(c) % 4,
                 .caller = next(c) % 3};
    int64_t now = next(c);
    js_tok_info t = info_of(&e);
    js_err err;
    js_status st = js_tokindex_add(ix, &t, now, &err);
    m_entry *cur = &m->e[e.jti];
    js_status want = JS_OK;
    if (e.exp <= now) {
        want = JS_OK;
    } else if (cur->used) {
        if (cur->h == e.h)
            *cur = e;
        else
            want = JS_ESTATE;
    } else {
        if (m_count(m) >= MAX_ENTRIES) {
            /* A full index drops its expired entries (not the revocations). */
            for (int i = 0; i < NJTI; i++)
                if (m->e[i].used && m->e[i].exp <= now)
                    m->e[i].used = false;
        }
        if (m_count(m) >= MAX_ENTRIES)
            want = JS_EUNAVAIL;
        else
            *cur = e;
    }
    CHECK(st == want);
}

static void op_find(js_tokindex *ix, model *m, cursor *c)
{
    int j = next(c) % NJTI;
    js_tok_info f;
    bool found = js_tokindex_find(ix, JTIS[j], &f);
    CHECK(found == m->e[j].used);
    if (found) {
        const m_entry *e = &m->e[j];
        CHECK(strcmp(f.jti, JTIS[j]) == 0 && f.sha256[0] == e->h && f.sha256[31] == e->h);
        CHECK(f.iat == e->iat && f.exp == e->exp);
        CHECK((f.sub == NULL) == (SUBS[e->sub] == NULL));
        CHECK(f.sub == NULL || strcmp(f.sub, SUBS[e->sub]) == 0);
        CHECK((f.caller == NULL) == (CALLERS[e->caller] == NULL));
        CHECK(f.caller == NULL || strcmp(f.caller, CALLERS[e->caller]) == 0);
        CHECK(m_revoked(m, &f) == js_tokindex_revoked(ix, &f));
        js_tok_info_clear(&f);
    } else {
        CHECK(f.jti == NULL);
    }
}

static void op_revoke(js_tokindex *ix, model *m, cursor *c)
{
    js_tok_revoked kind = (js_tok_revoked)(1 + next(c) % 3);
    uint8_t v = next(c);
    const char *value = kind == JS_TOK_REVOKED_JTI   ? JTIS[v % NJTI]
                        : kind == JS_TOK_REVOKED_SUB ? SUBS[v % 3]
                                                     : CALLERS[v % 2];
    int64_t cutoff = next(c), until = next(c);
    js_err err;
    js_status st = kind == JS_TOK_REVOKED_JTI ? js_tokindex_revoke_jti(ix, value, until, &err)
                   : kind == JS_TOK_REVOKED_SUB
                       ? js_tokindex_revoke_sub(ix, value, cutoff, until, &err)
                       : js_tokindex_revoke_caller(ix, value, cutoff, until, &err);
    CHECK(st == JS_OK);
    if (kind == JS_TOK_REVOKED_JTI)
        cutoff = INT64_MAX;
    int freei = -1;
    for (int i = 0; i < NREV; i++) {
        m_rev *r = &m->r[i];
        if (r->used && r->kind == kind && strcmp(r->value, value) == 0) {
            if (cutoff > r->cutoff)
                r->cutoff = cutoff;
            if (until > r->until)
                r->until = until;
            return;
        }
        if (!r->used && freei < 0)
            freei = i;
    }
    CHECK(freei >= 0); /* 10 + 3 + 2 values: always room */
    m->r[freei] =
        (m_rev){.used = true, .kind = kind, .value = value, .cutoff = cutoff, .until = until};
}

static void op_revoked(js_tokindex *ix, model *m, cursor *c)
{
    m_entry e = {.jti = next(c) % NJTI, .iat = next(c), .sub = next(c) % 4, .caller = next(c) % 3};
    js_tok_info t = info_of(&e);
    CHECK(js_tokindex_revoked(ix, &t) == m_revoked(m, &t));
}

static void op_sweep(js_tokindex *ix, model *m, cursor *c)
{
    int64_t now = next(c);
    CHECK(js_tokindex_sweep(ix, now) == m_sweep(m, now));
}

static void op_invalid(js_tokindex *ix, cursor *c)
{
    static const char *const bad[] = {"", "a b", "\x01", "\xff"};
    const char *j = bad[next(c) % 4];
    js_tok_info t;
    memset(&t, 0, sizeof(t));
    t.jti = (char *)j;
    t.exp = 1000;
    js_err err;
    CHECK(js_tokindex_add(ix, &t, 0, &err) == JS_EINVAL);
    CHECK(js_tokindex_revoke_jti(ix, j, 1000, &err) == JS_EINVAL);
    js_tok_info f;
    CHECK(!js_tokindex_find(ix, j, &f));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    js_tokindex *ix = NULL;
    js_err err;
    if (js_tokindex_new(MAX_ENTRIES, &ix, &err) != JS_OK)
        abort();
    model *m = calloc(1, sizeof(*m));
    if (m == NULL)
        abort();
    cursor c = {data, size};
    for (int ops = 0; c.n > 0 && ops < 4096; ops++) {
        switch (next(&c) % 6) {
        case 0:
            op_add(ix, m, &c);
            break;
        case 1:
            op_find(ix, m, &c);
            break;
        case 2:
            op_revoke(ix, m, &c);
            break;
        case 3:
            op_revoked(ix, m, &c);
            break;
        case 4:
            op_sweep(ix, m, &c);
            break;
        default:
            op_invalid(ix, &c);
            break;
        }
        CHECK(js_tokindex_count(ix) == m_count(m));
        CHECK(js_tokindex_revocation_count(ix) == m_revcount(m));
    }
    free(m);
    js_tokindex_free(ix);
    return 0;
}
