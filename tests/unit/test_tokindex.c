/*
 * test_tokindex.c - the issued-token index and revocations
 * (signer/core/tokindex.h): add/find/replace, duplicates with another hash,
 * the bound on live tokens and on revocations, expiry and sweeping, each
 * revocation kind at its cut-off boundaries, refused inputs, concurrent
 * readers and writers (for TSan), the memory an entry really costs, and the
 * rebuild from a real audit log written with auditlog.h (live, expired and
 * denied tokens, revocations, segment skipping by the horizon, damage).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>

#include <cmocka.h>
#include <malloc.h>
#include <pthread.h>
#include <time.h>

#include "test_audit_util.h"
#include "crc32c.h"
#include "hex.h"
#include "tokindex.h"

static test_key g_key;

static js_tokindex *make(size_t max)
{
    js_tokindex *ix = NULL;
    js_err err;
    assert_int_equal(js_tokindex_new(max, &ix, &err), JS_OK);
    return ix;
}

/* A token with every string set; sha256 filled with `h`. */
static js_tok_info tok(const char *jti, uint8_t h, int64_t iat, int64_t exp)
{
    js_tok_info t;
    memset(&t, 0, sizeof(t));
    t.jti = (char *)jti;
    memset(t.sha256, h, sizeof(t.sha256));
    t.caller = "spiffe://example.org/api";
    t.sub = "user-1";
    t.aud_json = "[\"a\",\"b\"]";
    t.scope = "read write";
    t.cnf_json = "{\"jkt\":\"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I\"}";
    t.kid = "kid-1";
    t.iat = iat;
    t.exp = exp;
    return t;
}

static void add_ok(js_tokindex *ix, const js_tok_info *t, int64_t now)
{
    js_err err;
    js_status st = js_tokindex_add(ix, t, now, &err);
    if (st != JS_OK)
        fail_msg("add %s: %s", t->jti, err.msg);
}

static void add_fails(js_tokindex *ix, const js_tok_info *t, int64_t now, js_status want,
                      js_reason reason)
{
    js_err err;
    js_err_clear(&err);
    assert_int_equal(js_tokindex_add(ix, t, now, &err), want);
    assert_int_equal(err.reason, reason);
}

/* ---- add / find ------------------------------------------------------------------------- */

static void test_new_bad_size(void **state)
{
    (void)state;
    js_tokindex *ix = NULL;
    js_err err;
    assert_int_equal(js_tokindex_new(0, &ix, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_TOKINDEX_INVALID);
    assert_null(ix);
    assert_int_equal(js_tokindex_new((size_t)1 << 40, &ix, &err), JS_EINVAL);
    js_tokindex_free(NULL);
    js_tok_info_clear(NULL);
}

static void test_add_find(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    js_tok_info t = tok("jti-1", 0xa1, 1000, 2000);
    add_ok(ix, &t, 1500);
    js_tok_info f;
    assert_true(js_tokindex_find(ix, "jti-1", &f));
    assert_string_equal(f.jti, "jti-1");
    assert_memory_equal(f.sha256, t.sha256, 32);
    assert_string_equal(f.caller, t.caller);
    assert_string_equal(f.sub, t.sub);
    assert_string_equal(f.aud_json, t.aud_json);
    assert_string_equal(f.scope, t.scope);
    assert_string_equal(f.cnf_json, t.cnf_json);
    assert_string_equal(f.kid, t.kid);
    assert_int_equal(f.iat, 1000);
    assert_int_equal(f.exp, 2000);
    js_tok_info_clear(&f);
    assert_null(f.jti);
    /* Absent strings stay absent (NULL, not ""). */
    js_tok_info u = tok("jti-2", 0xa2, 1000, 2000);
    u.sub = u.cnf_json = u.scope = NULL;
    u.aud_json = "";
    add_ok(ix, &u, 1500);
    assert_true(js_tokindex_find(ix, "jti-2", &f));
    assert_null(f.sub);
    assert_null(f.cnf_json);
    assert_null(f.scope);
    assert_string_equal(f.aud_json, "");
    assert_string_equal(f.kid, "kid-1");
    js_tok_info_clear(&f);
    /* Unknown and malformed jti: not found, *out cleared. */
    assert_false(js_tokindex_find(ix, "jti-3", &f));
    assert_null(f.jti);
    assert_false(js_tokindex_find(ix, "", &f));
    assert_false(js_tokindex_find(ix, "jti 1", &f));
    assert_false(js_tokindex_find(ix, "JTI-1", &f));
    assert_int_equal(js_tokindex_count(ix), 2);
    js_tokindex_free(ix);
}

static void test_replace_and_duplicate(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    js_tok_info t = tok("jti-1", 0xa1, 1000, 2000);
    add_ok(ix, &t, 1500);
    /* The same token again (same hash): replaced, still one entry. */
    t.kid = "kid-2";
    add_ok(ix, &t, 1500);
    assert_int_equal(js_tokindex_count(ix), 1);
    js_tok_info f;
    assert_true(js_tokindex_find(ix, "jti-1", &f));
    assert_string_equal(f.kid, "kid-2");
    js_tok_info_clear(&f);
    /* The same jti with another hash (a forged or reused jti): refused, the
     * original kept. One differing byte is enough. */
    js_tok_info d = tok("jti-1", 0xa1, 1000, 3000);
    d.sha256[31] ^= 1;
    d.kid = "evil";
    add_fails(ix, &d, 1500, JS_ESTATE, JS_R_TOKINDEX_DUPLICATE);
    assert_true(js_tokindex_find(ix, "jti-1", &f));
    assert_string_equal(f.kid, "kid-2");
    assert_int_equal(f.exp, 2000);
    js_tok_info_clear(&f);
    assert_int_equal(js_tokindex_count(ix), 1);
    js_tokindex_free(ix);
}

static void test_full(void **state)
{
    (void)state;
    js_tokindex *ix = make(3);
    js_tok_info a = tok("a", 1, 100, 200), b = tok("b", 2, 100, 300), c = tok("c", 3, 100, 400);
    add_ok(ix, &a, 150);
    add_ok(ix, &b, 150);
    add_ok(ix, &c, 150);
    js_tok_info d = tok("d", 4, 100, 500);
    add_fails(ix, &d, 150, JS_EUNAVAIL, JS_R_TOKINDEX_FULL);
    add_fails(ix, &d, 199, JS_EUNAVAIL, JS_R_TOKINDEX_FULL);
    /* Replacing a held token is not an addition: allowed when full. */
    add_ok(ix, &b, 150);
    assert_int_equal(js_tokindex_count(ix), 3);
    /* Once "a" has expired (exp 200 <= now), a full index makes room by
     * dropping it: only live tokens count. */
    add_ok(ix, &d, 200);
    assert_int_equal(js_tokindex_count(ix), 3);
    js_tok_info f;
    assert_false(js_tokindex_find(ix, "a", &f));
    assert_true(js_tokindex_find(ix, "d", &f));
    js_tok_info_clear(&f);
    js_tok_info e = tok("e", 5, 100, 600);
    add_fails(ix, &e, 250, JS_EUNAVAIL, JS_R_TOKINDEX_FULL);
    js_tokindex_free(ix);
}

static void test_expired_not_added(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    js_tok_info t = tok("old", 1, 100, 200);
    add_ok(ix, &t, 200); /* exp == now: already expired */
    add_ok(ix, &t, 500);
    assert_int_equal(js_tokindex_count(ix), 0);
    js_tok_info f;
    assert_false(js_tokindex_find(ix, "old", &f));
    add_ok(ix, &t, 199); /* exp == now + 1: live */
    assert_int_equal(js_tokindex_count(ix), 1);
    js_tokindex_free(ix);
}

static void test_sweep(void **state)
{
    (void)state;
    js_tokindex *ix = make(5000);
    char jti[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(jti, sizeof(jti), "t-%d", i);
        js_tok_info t = tok(jti, (uint8_t)i, 0, 1000 + i);
        add_ok(ix, &t, 0);
    }
    assert_int_equal(js_tokindex_count(ix), 3000);
    js_err err;
    assert_int_equal(js_tokindex_revoke_jti(ix, "t-5", 1005, &err), JS_OK);
    assert_int_equal(js_tokindex_revoke_sub(ix, "user-1", 10, 2000, &err), JS_OK);
    assert_int_equal(js_tokindex_revocation_count(ix), 2);
    assert_int_equal(js_tokindex_sweep(ix, 999), 0);
    /* exp <= now goes: 1000..1999 -> 1000 entries; until 1005 <= 1999. */
    assert_int_equal(js_tokindex_sweep(ix, 1999), 1000);
    assert_int_equal(js_tokindex_count(ix), 2000);
    assert_int_equal(js_tokindex_revocation_count(ix), 1);
    js_tok_info f;
    assert_false(js_tokindex_find(ix, "t-999", &f));
    assert_true(js_tokindex_find(ix, "t-1000", &f));
    js_tok_info_clear(&f);
    assert_int_equal(js_tokindex_sweep(ix, 1999), 0);
    assert_int_equal(js_tokindex_sweep(ix, 2000), 1); /* t-1000; the sub revocation too */
    assert_int_equal(js_tokindex_revocation_count(ix), 0);
    assert_int_equal(js_tokindex_sweep(ix, INT64_MAX), 1999);
    assert_int_equal(js_tokindex_count(ix), 0);
    js_tokindex_free(ix);
}

/* ---- revocations ------------------------------------------------------------------------- */

static void test_revoke_jti(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    js_tok_info a = tok("a", 1, 100, 200), b = tok("b", 2, 100, 200);
    assert_int_equal(js_tokindex_revoked(ix, &a), JS_TOK_NOT_REVOKED);
    js_err err;
    assert_int_equal(js_tokindex_revoke_jti(ix, "a", 200, &err), JS_OK);
    assert_int_equal(js_tokindex_revoked(ix, &a), JS_TOK_REVOKED_JTI);
    assert_int_equal(js_tokindex_revoked(ix, &b), JS_TOK_NOT_REVOKED);
    /* A jti revocation is not a sub or caller one of the same text. */
    js_tok_info c = tok("c", 3, 100, 200);
    c.sub = "a";
    c.caller = "a";
    assert_int_equal(js_tokindex_revoked(ix, &c), JS_TOK_NOT_REVOKED);
    /* Again: idempotent, one revocation. */
    assert_int_equal(js_tokindex_revoke_jti(ix, "a", 150, &err), JS_OK);
    assert_int_equal(js_tokindex_revocation_count(ix), 1);
    /* until moved to the later of the two (200), not 150. */
    js_tokindex_sweep(ix, 150);
    assert_int_equal(js_tokindex_revoked(ix, &a), JS_TOK_REVOKED_JTI);
    js_tokindex_sweep(ix, 200);
    assert_int_equal(js_tokindex_revoked(ix, &a), JS_TOK_NOT_REVOKED);
    js_tokindex_free(ix);
}

typedef js_status (*revoke_fn)(js_tokindex *, const char *, int64_t, int64_t, js_err *);

/* The cut-off rules, the same for sub and caller. */
static void cutoff_cases(revoke_fn revoke, js_tok_revoked kind, bool by_sub)
{
    js_tokindex *ix = make(10);
    js_tok_info t = tok("x", 1, 1000, 5000), other = tok("y", 2, 0, 5000);
    const char *v = by_sub ? t.sub : t.caller;
    if (by_sub)
        other.sub = "user-2";
    else
        other.caller = "spiffe://example.org/other";
    js_err err;
    assert_int_equal(revoke(ix, v, 1000, 5000, &err), JS_OK);
    t.iat = 1000; /* iat == cutoff: revoked */
    assert_int_equal(js_tokindex_revoked(ix, &t), kind);
    t.iat = 999;
    assert_int_equal(js_tokindex_revoked(ix, &t), kind);
    t.iat = INT64_MIN;
    assert_int_equal(js_tokindex_revoked(ix, &t), kind);
    t.iat = 1001; /* issued after the cut-off: stands */
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_NOT_REVOKED);
    assert_int_equal(js_tokindex_revoked(ix, &other), JS_TOK_NOT_REVOKED);
    /* Moving: an earlier cut-off changes nothing ... */
    assert_int_equal(revoke(ix, v, 500, 4000, &err), JS_OK);
    t.iat = 1000;
    assert_int_equal(js_tokindex_revoked(ix, &t), kind);
    /* ... a later one covers more. */
    assert_int_equal(revoke(ix, v, 2000, 6000, &err), JS_OK);
    t.iat = 1001;
    assert_int_equal(js_tokindex_revoked(ix, &t), kind);
    t.iat = 2001;
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_NOT_REVOKED);
    assert_int_equal(js_tokindex_revocation_count(ix), 1);
    /* until is 6000 (the max): 5999 keeps it, 6000 forgets it. */
    t.iat = 1500;
    js_tokindex_sweep(ix, 5999);
    assert_int_equal(js_tokindex_revoked(ix, &t), kind);
    js_tokindex_sweep(ix, 6000);
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_NOT_REVOKED);
    assert_int_equal(js_tokindex_revocation_count(ix), 0);
    /* A token without that member is never covered. */
    assert_int_equal(revoke(ix, v, 2000, 6000, &err), JS_OK);
    if (by_sub)
        t.sub = NULL;
    else
        t.caller = NULL;
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_NOT_REVOKED);
    js_tokindex_free(ix);
}

static void test_revoke_sub(void **state)
{
    (void)state;
    cutoff_cases(js_tokindex_revoke_sub, JS_TOK_REVOKED_SUB, true);
}

static void test_revoke_caller(void **state)
{
    (void)state;
    cutoff_cases(js_tokindex_revoke_caller, JS_TOK_REVOKED_CALLER, false);
}

static void test_revoke_precedence(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    js_tok_info t = tok("x", 1, 1000, 5000);
    js_err err;
    assert_int_equal(js_tokindex_revoke_caller(ix, t.caller, 1000, 5000, &err), JS_OK);
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_REVOKED_CALLER);
    assert_int_equal(js_tokindex_revoke_sub(ix, t.sub, 1000, 5000, &err), JS_OK);
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_REVOKED_SUB);
    assert_int_equal(js_tokindex_revoke_jti(ix, t.jti, 5000, &err), JS_OK);
    assert_int_equal(js_tokindex_revoked(ix, &t), JS_TOK_REVOKED_JTI);
    js_tokindex_free(ix);
}

static void test_revocations_full(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    js_err err;
    char v[32];
    for (int i = 0; i < JS_TOKINDEX_MAX_REVOCATIONS; i++) {
        snprintf(v, sizeof(v), "r-%d", i);
        js_status st = i % 3 == 0   ? js_tokindex_revoke_jti(ix, v, 100 + i % 2, &err)
                       : i % 3 == 1 ? js_tokindex_revoke_sub(ix, v, 1, 100 + i % 2, &err)
                                    : js_tokindex_revoke_caller(ix, v, 1, 100 + i % 2, &err);
        assert_int_equal(st, JS_OK);
    }
    assert_int_equal(js_tokindex_revocation_count(ix), JS_TOKINDEX_MAX_REVOCATIONS);
    js_err_clear(&err);
    assert_int_equal(js_tokindex_revoke_jti(ix, "one-more", 100, &err), JS_ELIMIT);
    assert_int_equal(err.reason, JS_R_TOKINDEX_REVOCATIONS_FULL);
    assert_int_equal(js_tokindex_revoke_sub(ix, "one-more", 1, 100, &err), JS_ELIMIT);
    assert_int_equal(js_tokindex_revoke_caller(ix, "one-more", 1, 100, &err), JS_ELIMIT);
    /* Moving an existing one is not a new revocation. */
    assert_int_equal(js_tokindex_revoke_sub(ix, "r-1", 50, 101, &err), JS_OK);
    /* Half end at 100: room again. */
    js_tokindex_sweep(ix, 100);
    assert_int_equal(js_tokindex_revocation_count(ix), JS_TOKINDEX_MAX_REVOCATIONS / 2);
    assert_int_equal(js_tokindex_revoke_jti(ix, "one-more", 100, &err), JS_OK);
    js_tokindex_free(ix);
}

/* ---- refused input ---------------------------------------------------------------------- */

static void test_invalid(void **state)
{
    (void)state;
    js_tokindex *ix = make(10);
    static const char *const bad_jti[] = {"", "a b", "a\tb", "a\x7f", "caf\xc3\xa9", NULL};
    for (size_t i = 0; i < sizeof(bad_jti) / sizeof(bad_jti[0]); i++) {
        js_tok_info t = tok(bad_jti[i], 1, 0, 100);
        add_fails(ix, &t, 0, JS_EINVAL, JS_R_TOKINDEX_INVALID);
        js_err err;
        assert_int_equal(js_tokindex_revoke_jti(ix, bad_jti[i], 100, &err), JS_EINVAL);
        assert_int_equal(err.reason, JS_R_TOKINDEX_INVALID);
    }
    char jti[130];
    memset(jti, 'j', sizeof(jti));
    jti[128] = '\0'; /* 128: the longest */
    js_tok_info t = tok(jti, 1, 0, 100);
    add_ok(ix, &t, 0);
    jti[128] = 'j';
    jti[129] = '\0'; /* 129: refused */
    t = tok(jti, 1, 0, 100);
    add_fails(ix, &t, 0, JS_EINVAL, JS_R_TOKINDEX_INVALID);
    js_tok_info f;
    assert_false(js_tokindex_find(ix, jti, &f));

    /* Every string member: 4096 bytes is accepted, 4097 refused. */
    char *big = malloc(JS_TOKINDEX_STR_MAX + 2);
    memset(big, 's', JS_TOKINDEX_STR_MAX + 1);
    big[JS_TOKINDEX_STR_MAX + 1] = '\0';
    for (int m = 0; m < 6; m++) {
        js_tok_info u = tok("long", 2, 0, 100);
        char **field[] = {&u.caller, &u.sub, &u.aud_json, &u.scope, &u.cnf_json, &u.kid};
        *field[m] = big;
        add_fails(ix, &u, 0, JS_EINVAL, JS_R_TOKINDEX_INVALID);
        big[JS_TOKINDEX_STR_MAX] = '\0';
        add_ok(ix, &u, 0);
        big[JS_TOKINDEX_STR_MAX] = 's';
    }
    /* All of them at the limit at once: one entry of ~24 KiB. */
    big[JS_TOKINDEX_STR_MAX] = '\0';
    js_tok_info all = tok("all-long", 3, 0, 100);
    all.caller = all.sub = all.aud_json = all.scope = all.cnf_json = all.kid = big;
    add_ok(ix, &all, 0);
    assert_true(js_tokindex_find(ix, "all-long", &f));
    assert_int_equal(strlen(f.kid), JS_TOKINDEX_STR_MAX);
    assert_int_equal(strlen(f.caller), JS_TOKINDEX_STR_MAX);
    js_tok_info_clear(&f);

    js_err err;
    big[JS_TOKINDEX_STR_MAX] = 's';
    assert_int_equal(js_tokindex_revoke_sub(ix, big, 1, 100, &err), JS_EINVAL);
    assert_int_equal(js_tokindex_revoke_caller(ix, big, 1, 100, &err), JS_EINVAL);
    assert_int_equal(js_tokindex_revoke_sub(ix, "", 1, 100, &err), JS_EINVAL);
    assert_int_equal(js_tokindex_revoke_sub(ix, NULL, 1, 100, &err), JS_EINVAL);
    assert_int_equal(js_tokindex_revoke_caller(ix, "", 1, 100, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_TOKINDEX_INVALID);
    assert_int_equal(js_tokindex_revocation_count(ix), 0);
    free(big);
    js_tokindex_free(ix);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define THR_N 3000

typedef struct thr_arg {
    js_tokindex *ix;
    int id;
    int found;
} thr_arg;

static void *writer(void *p)
{
    thr_arg *a = p;
    char jti[32];
    js_err err;
    for (int i = 0; i < THR_N; i++) {
        snprintf(jti, sizeof(jti), "w%d-%d", a->id, i);
        js_tok_info t = tok(jti, (uint8_t)i, i, 100000 + i);
        if (js_tokindex_add(a->ix, &t, 0, &err) != JS_OK)
            return (void *)1;
        if (i % 10 == 0 && js_tokindex_revoke_jti(a->ix, jti, 200000, &err) != JS_OK)
            return (void *)1;
        if (i % 100 == 0 && js_tokindex_revoke_sub(a->ix, "user-1", i, 200000, &err) != JS_OK)
            return (void *)1;
    }
    return NULL;
}

static void *reader(void *p)
{
    thr_arg *a = p;
    char jti[32];
    for (int i = 0; i < THR_N; i++) {
        snprintf(jti, sizeof(jti), "w%d-%d", i % 2, i);
        js_tok_info f;
        if (js_tokindex_find(a->ix, jti, &f)) {
            a->found++;
            (void)js_tokindex_revoked(a->ix, &f);
            js_tok_info_clear(&f);
        }
        (void)js_tokindex_count(a->ix);
        if (i % 500 == 0)
            (void)js_tokindex_sweep(a->ix, 50); /* drops nothing: every exp > 100000 */
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    js_tokindex *ix = make(2 * THR_N);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){.ix = ix, .id = i, .found = 0};
        pthread_create(&th[i], NULL, i < 2 ? writer : reader, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *rv = NULL;
        pthread_join(th[i], &rv);
        assert_null(rv);
    }
    assert_int_equal(js_tokindex_count(ix), 2 * THR_N);
    /* 2 * 300 jti revocations and one sub. */
    assert_int_equal(js_tokindex_revocation_count(ix), 2 * THR_N / 10 + 1);
    /* The sub cut-off ended at the last one given, 2900 (iat = i). */
    static const struct {
        const char *jti;
        js_tok_revoked want;
    } cases[] = {{"w1-2990", JS_TOK_REVOKED_JTI},
                 {"w0-2899", JS_TOK_REVOKED_SUB},
                 {"w0-2900", JS_TOK_REVOKED_JTI},
                 {"w1-2901", JS_TOK_NOT_REVOKED}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        js_tok_info f;
        assert_true(js_tokindex_find(ix, cases[i].jti, &f));
        assert_int_equal(js_tokindex_revoked(ix, &f), cases[i].want);
        js_tok_info_clear(&f);
    }
    js_tokindex_free(ix);
}

/* ---- memory ----------------------------------------------------------------------------- */

#define MEM_N 100000

static void test_bytes_per_entry(void **state)
{
    (void)state;
    /* A typical signer token: claims_new_jti's 22 characters, a SPIFFE
     * caller, a short sub, one audience, two scopes, an RFC 7638 kid. */
    js_tokindex *ix = make(MEM_N);
    struct mallinfo2 before = mallinfo2();
    char jti[32];
    size_t strings = 0;
    for (int i = 0; i < MEM_N; i++) {
        snprintf(jti, sizeof(jti), "Zk3q9XbT0aLmPqRsUv%04d", i % 10000);
        jti[0] = (char)('A' + i / 10000);
        js_tok_info t = tok(jti, (uint8_t)i, 1000, 5000);
        t.caller = "spiffe://example.org/ns/prod/sa/api";
        t.sub = "user-000123";
        t.aud_json = "\"https://api.example.com\"";
        t.scope = "read write";
        t.cnf_json = NULL;
        t.kid = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        add_ok(ix, &t, 0);
        if (i == 0)
            strings = strlen(jti) + strlen(t.caller) + strlen(t.sub) + strlen(t.aud_json) +
                      strlen(t.scope) + strlen(t.kid) + 6;
    }
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(js_tokindex_count(ix), MEM_N);
    size_t used = after.uordblks + after.hblkhd - before.uordblks - before.hblkhd;
    double per = (double)used / MEM_N;
    if (used == 0) /* sanitizers: their allocator does not feed mallinfo2 */
        printf("tokindex: bytes per entry not measured (mallinfo2 reports nothing)\n");
    else
        printf("tokindex: %d entries use %zu bytes: %.1f bytes per entry (%zu of strings, "
               "%.1f fixed; JS_TOKINDEX_ENTRY_BYTES %d)\n",
               MEM_N, used, per, strings, per - (double)strings, JS_TOKINDEX_ENTRY_BYTES);
    if (used > 0)
        assert_true(per - (double)strings <= JS_TOKINDEX_ENTRY_BYTES + 16);
    js_tokindex_free(ix);
}

/* ---- loading from the audit log ----------------------------------------------------------- */

static void append(js_audit *a, const js_audit_event *ev)
{
    uint64_t seq = 0;
    js_err err;
    js_status st = js_audit_append_sync(a, ev, &seq, &err);
    if (st != JS_OK)
        fail_msg("append: %s", err.msg);
}

static void sign_rec_cnf(js_audit *a, const char *jti, uint8_t h, const char *sub, int64_t iat,
                         int64_t exp, const char *decision, const char *cnf)
{
    uint8_t sha[32];
    memset(sha, h, sizeof(sha));
    char hex[65];
    js_hex_encode(sha, sizeof(sha), hex);
    bool allow = strcmp(decision, "allow") == 0;
    js_audit_event ev = {.type = "sign",
                         .caller = "spiffe://example.org/api",
                         .decision = decision,
                         .reason = allow ? "ok" : "policy.audience",
                         .key = "main",
                         .kid = "kid-1",
                         .alg = "ES256",
                         .jti = jti,
                         .sub = sub,
                         .aud_json = "[\"a\", \"b\"]",
                         .iat = iat,
                         .exp = exp,
                         .scopes = "read write",
                         .cnf_json = cnf,
                         .token_sha256 = hex};
    append(a, &ev);
}

static void sign_rec(js_audit *a, const char *jti, uint8_t h, const char *sub, int64_t iat,
                     int64_t exp, const char *decision)
{
    sign_rec_cnf(a, jti, h, sub, iat, exp, decision, NULL);
}

static void revoke_rec(js_audit *a, const char *what, const char *value, int64_t cutoff,
                       int64_t until, const char *decision)
{
    char detail[512];
    if (strcmp(what, "jti") == 0)
        snprintf(detail, sizeof(detail),
                 "{\"what\":\"jti\",\"value\":\"%s\",\"until\":%" PRId64 ",\"reason\":\"test\"}",
                 value, until);
    else
        snprintf(detail, sizeof(detail),
                 "{\"what\":\"%s\",\"value\":\"%s\",\"cutoff\":%" PRId64 ",\"until\":%" PRId64
                 ",\"reason\":\"test\"}",
                 what, value, cutoff, until);
    js_audit_event ev = {.type = "revoke",
                         .caller = "spiffe://example.org/admin",
                         .decision = decision,
                         .reason = strcmp(decision, "allow") == 0 ? "ok" : "admin.denied",
                         .detail_json = detail};
    append(a, &ev);
}

static js_audit *open_log(const char *dir, uint64_t segment_bytes)
{
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.segment_bytes = segment_bytes;
    o.disk_watermark_off = true;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    return a;
}

static void test_load_audit(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    int64_t now = (int64_t)time(NULL);
    js_audit *a = open_log(dir, 0);
    sign_rec(a, "live-1", 1, "alice", now - 10, now + 3600, "allow");
    sign_rec(a, "live-2", 2, "bob", now - 5, now + 3600, "allow");
    sign_rec_cnf(a, "live-3", 3, "carol", now - 5, now + 3600, "allow",
                 "{\"jkt\": \"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I\"}");
    sign_rec(a, "expired", 4, "alice", now - 7200, now - 3600, "allow");
    sign_rec(a, "edge", 5, "alice", now - 100, now, "allow"); /* exp == now: expired */
    sign_rec(a, "denied", 6, "alice", now - 5, now + 3600, "deny");
    sign_rec(a, "errored", 7, "alice", now - 5, now + 3600, "error");
    js_audit_event other = {.type = "admin",
                            .caller = "spiffe://example.org/admin",
                            .decision = "allow",
                            .jti = "admin-rec",
                            .exp = now + 3600,
                            .token_sha256 = "00"};
    append(a, &other);
    revoke_rec(a, "jti", "live-1", 0, now + 3600, "allow");
    revoke_rec(a, "sub", "bob", now - 5, now + 3600, "allow");
    revoke_rec(a, "caller", "spiffe://example.org/x", now - 1, now + 3600, "allow");
    revoke_rec(a, "sub", "carol", now, now - 1, "allow");        /* until past: ignored */
    revoke_rec(a, "sub", "carol", now, now + 3600, "deny");      /* refused: ignored */
    revoke_rec(a, "sub", "bob", now - 100, now + 7200, "allow"); /* cut-off stays, until moves */
    revoke_rec(a, "key", "main", now, now + 3600, "allow");      /* unknown kind: ignored */
    js_audit_close(a);

    js_tokindex *ix = make(100);
    size_t loaded = 99;
    js_err err;
    js_status st = js_tokindex_load_audit(ix, dir, now, 7200, &loaded, &err);
    if (st != JS_OK)
        fail_msg("load: %s", err.msg);
    assert_int_equal(loaded, 3);
    assert_int_equal(js_tokindex_count(ix), 3);
    assert_int_equal(js_tokindex_revocation_count(ix), 3);
    js_tok_info f;
    assert_true(js_tokindex_find(ix, "live-1", &f));
    assert_string_equal(f.caller, "spiffe://example.org/api");
    assert_string_equal(f.sub, "alice");
    assert_string_equal(f.aud_json, "[\"a\",\"b\"]"); /* compact */
    assert_string_equal(f.scope, "read write");
    assert_string_equal(f.kid, "kid-1");
    assert_null(f.cnf_json);
    assert_int_equal(f.iat, now - 10);
    assert_int_equal(f.exp, now + 3600);
    uint8_t want[32];
    memset(want, 1, sizeof(want));
    assert_memory_equal(f.sha256, want, 32);
    assert_int_equal(js_tokindex_revoked(ix, &f), JS_TOK_REVOKED_JTI);
    js_tok_info_clear(&f);
    assert_true(js_tokindex_find(ix, "live-2", &f));
    assert_int_equal(js_tokindex_revoked(ix, &f), JS_TOK_REVOKED_SUB);
    f.iat = now - 4; /* one second after bob's cut-off */
    assert_int_equal(js_tokindex_revoked(ix, &f), JS_TOK_NOT_REVOKED);
    js_tok_info_clear(&f);
    assert_true(js_tokindex_find(ix, "live-3", &f));
    assert_int_equal(js_tokindex_revoked(ix, &f), JS_TOK_NOT_REVOKED);
    assert_string_equal(f.cnf_json, "{\"jkt\":\"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I\"}");
    js_tok_info_clear(&f);
    static const char *const absent[] = {"expired", "edge", "denied", "errored", "admin-rec"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        assert_false(js_tokindex_find(ix, absent[i], &f));
    /* bob's until moved to now + 7200: still revoked after now + 3600. */
    js_tokindex_sweep(ix, now + 3600);
    assert_int_equal(js_tokindex_revocation_count(ix), 1);
    js_tokindex_free(ix);

    /* Loading twice into one index is idempotent (same hashes). */
    ix = make(100);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 7200, &loaded, &err), JS_OK);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 7200, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 3);
    assert_int_equal(js_tokindex_count(ix), 3);
    js_tokindex_free(ix);

    /* Too small an index: the load fails (the signer would refuse to sign). */
    ix = make(2);
    js_err_clear(&err);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 7200, &loaded, &err), JS_EUNAVAIL);
    assert_int_equal(err.reason, JS_R_TOKINDEX_FULL);
    js_tokindex_free(ix);

    /* Later: everything has expired. */
    ix = make(100);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now + 7200, 7200, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 0);
    assert_int_equal(js_tokindex_revocation_count(ix), 0);
    js_tokindex_free(ix);
    tmpdir_remove(dir);
}

/* Segments that cannot hold a live token are not read: a token whose exp is
 * beyond the horizon (impossible for a real signer) shows it. */
static void test_load_skips_old_segments(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    int64_t now = (int64_t)time(NULL);
    js_audit *a = open_log(dir, 2048);
    sign_rec(a, "early", 1, "alice", now, now + 100000, "allow");
    char jti[32];
    for (int i = 0; i < 20; i++) { /* several segments of 2 KiB */
        snprintf(jti, sizeof(jti), "mid-%d", i);
        sign_rec(a, jti, (uint8_t)(10 + i), "bob", now, now + 100000, "allow");
    }
    js_audit_close(a);
    char **paths = NULL;
    size_t n = 0;
    js_err err;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    assert_true(n >= 3);
    js_audit_segments_free(paths, n);
    size_t loaded = 0;
    js_tokindex *ix = make(100);
    /* Horizon wide enough: every segment is read. */
    assert_int_equal(js_tokindex_load_audit(ix, dir, now + 50, 1000, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 21);
    js_tokindex_free(ix);
    /* "Now" 5000 s later with a 1000 s horizon: every segment but the last
     * started long before now - horizon, so only the last is read. */
    ix = make(100);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now + 5000, 1000, &loaded, &err), JS_OK);
    assert_true(loaded < 21);
    js_tok_info f;
    assert_false(js_tokindex_find(ix, "early", &f));
    assert_false(js_tokindex_find(ix, "mid-0", &f));
    js_tokindex_free(ix);
    /* A horizon of 0 (unknown): everything is read. */
    ix = make(100);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now + 5000, 0, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 21);
    js_tokindex_free(ix);
    tmpdir_remove(dir);
}

/* One frame (FORMAT.md §2) around payload. */
static size_t frame(uint8_t *out, const char *payload)
{
    uint32_t len = (uint32_t)strlen(payload);
    uint8_t hdr[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
                      (uint8_t)(len >> 24)};
    uint32_t crc = js_crc32c_update(js_crc32c(hdr, 4), payload, len);
    memcpy(out, hdr, 4);
    for (int i = 0; i < 4; i++)
        out[4 + i] = (uint8_t)(crc >> (8 * i));
    memcpy(out + 8, payload, len);
    return 8 + len;
}

/* Hand-framed segments (FORMAT.md §2 frames written here, not by the
 * writer): a token with cnf and a string aud, records the writer would never
 * make (a bad hash, no jti, no exp, a jti with a space, a revocation with a
 * string cut-off or no detail), a torn tail, and damage. */
static void test_load_framed(void **state)
{
    (void)state;
    char dir[64], path[128];
    tmpdir_make(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/audit-000001.log", dir);
    int64_t now = 1800000000;
    const char *hex = "abababababababababababababababababababababababababababababababab";
    char recs[6][1024];
    snprintf(
        recs[0], sizeof(recs[0]),
        "{\"seq\":1,\"time\":\"2027-01-15T08:00:00.000Z\",\"type\":\"sign\",\"caller\":\"c\","
        "\"decision\":\"allow\",\"reason\":\"ok\",\"kid\":\"k\",\"jti\":\"cnf-1\",\"sub\":\"s\","
        "\"aud\":\"x\",\"iat\":%" PRId64 ",\"exp\":%" PRId64
        ",\"scopes\":\"\",\"cnf\":{\"x5t#S256\":\"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2\"},"
        "\"token_sha256\":\"%s\",\"prev\":\"00\"}",
        now - 10, now + 60, hex);
    /* Not a token: bad hash, no jti, no exp, an over-long sub, a jti with a space. */
    snprintf(
        recs[1], sizeof(recs[1]),
        "{\"seq\":2,\"type\":\"sign\",\"decision\":\"allow\",\"jti\":\"bad-hash\",\"exp\":%" PRId64
        ",\"token_sha256\":\"zz\"}",
        now + 60);
    snprintf(recs[2], sizeof(recs[2]),
             "{\"seq\":3,\"type\":\"sign\",\"decision\":\"allow\",\"exp\":%" PRId64
             ",\"token_sha256\":\"%s\"}",
             now + 60, hex);
    snprintf(recs[3], sizeof(recs[3]),
             "{\"seq\":4,\"type\":\"sign\",\"decision\":\"allow\",\"jti\":\"no-exp\","
             "\"token_sha256\":\"%s\"}",
             hex);
    snprintf(recs[4], sizeof(recs[4]),
             "{\"seq\":5,\"type\":\"sign\",\"decision\":\"allow\",\"jti\":\"a b\",\"exp\":%" PRId64
             ",\"token_sha256\":\"%s\"}",
             now + 60, hex);
    /* Revocations the writer would not make: no detail, a string cut-off,
     * an empty value. */
    snprintf(recs[5], sizeof(recs[5]),
             "{\"seq\":6,\"type\":\"revoke\",\"decision\":\"allow\",\"detail\":{\"what\":\"sub\","
             "\"value\":\"s\",\"cutoff\":\"9\",\"until\":%" PRId64 "}}",
             now + 60);
    uint8_t *buf = malloc(16384);
    size_t len = 0;
    for (int i = 0; i < 6; i++)
        len += frame(buf + len, recs[i]);
    len += frame(buf + len, "{\"seq\":7,\"type\":\"revoke\",\"decision\":\"allow\"}");
    size_t good = len;
    /* A torn tail: half a frame. */
    uint8_t tail[1100];
    size_t tl = frame(tail, "{\"seq\":8,\"type\":\"sign\",\"decision\":\"allow\"}");
    memcpy(buf + len, tail, tl / 2);
    len += tl / 2;
    file_write(path, buf, len);

    js_tokindex *ix = make(10);
    size_t loaded = 0;
    js_err err;
    js_status st = js_tokindex_load_audit(ix, dir, now, 3600, &loaded, &err);
    if (st != JS_OK)
        fail_msg("load: %s", err.msg);
    assert_int_equal(loaded, 1);
    assert_int_equal(js_tokindex_revocation_count(ix), 0);
    js_tok_info f;
    assert_true(js_tokindex_find(ix, "cnf-1", &f));
    assert_string_equal(f.cnf_json,
                        "{\"x5t#S256\":\"bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2\"}");
    assert_string_equal(f.aud_json, "\"x\"");
    assert_string_equal(f.scope, "");
    js_tok_info_clear(&f);
    js_tokindex_free(ix);

    /* Damage in the middle (a flipped payload byte in the second record):
     * the record before it is loaded, then reading stops. */
    size_t first = frame(tail, recs[0]);
    buf[first + 10] ^= 0x01;
    file_write(path, buf, good);
    ix = make(10);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 3600, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 1);
    js_tokindex_free(ix);

    /* Damage in the very first record: nothing can be read. */
    buf[10] ^= 0x01;
    file_write(path, buf, good);
    ix = make(10);
    js_err_clear(&err);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 3600, &loaded, &err), JS_ECONFIG);
    assert_int_equal(err.reason, JS_R_TOKINDEX_LOAD);
    assert_int_equal(loaded, 0);
    js_tokindex_free(ix);

    /* An empty segment and an empty directory: nothing to load. */
    file_write(path, buf, 0);
    ix = make(10);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 3600, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 0);
    unlink(path);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 3600, &loaded, &err), JS_OK);
    assert_int_equal(loaded, 0);
    tmpdir_remove(dir);
    /* No directory at all. */
    js_err_clear(&err);
    assert_int_equal(js_tokindex_load_audit(ix, dir, now, 3600, &loaded, &err), JS_ECONFIG);
    assert_int_equal(err.reason, JS_R_TOKINDEX_LOAD);
    js_tokindex_free(ix);
    free(buf);
}

#define LOAD_N 100000

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 100,000 sign records written by the audit library (no fsync), then
 * loaded; the timing is printed, not asserted. */
static void test_load_timing(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    int64_t now = (int64_t)time(NULL);
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.no_fsync = true;
    o.disk_watermark_off = true;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    double t0 = mono_s();
    char jti[32], hex[65];
    uint8_t sha[32] = {0};
    for (int i = 0; i < LOAD_N; i++) {
        snprintf(jti, sizeof(jti), "Zk3q9XbT0aLmPqRs-%06d", i);
        memcpy(sha, &i, sizeof(i));
        js_hex_encode(sha, sizeof(sha), hex);
        js_audit_event ev = {.type = "sign",
                             .caller = "spiffe://example.org/ns/prod/sa/api",
                             .peer = "ipv4:10.0.0.1:5555",
                             .request_id = "req",
                             .decision = "allow",
                             .reason = "ok",
                             .key = "main",
                             .kid = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
                             .alg = "ES256",
                             .jti = jti,
                             .sub = "user-000123",
                             .aud_json = "\"https://api.example.com\"",
                             .iat = now,
                             .exp = now + 3600,
                             .scopes = "read write",
                             .token_sha256 = hex,
                             .policy_hash = hex};
        while (js_audit_submit(a, &ev, NULL, NULL, &err) != JS_OK)
            sleep_ms(5); /* the queue is full: let the writer catch up */
    }
    assert_true(js_audit_close(a));
    double t1 = mono_s();
    js_tokindex *ix = make(LOAD_N);
    size_t loaded = 0;
    js_status st = js_tokindex_load_audit(ix, dir, now, 7200, &loaded, &err);
    double t2 = mono_s();
    if (st != JS_OK)
        fail_msg("load: %s", err.msg);
    assert_int_equal(loaded, LOAD_N);
    printf("tokindex: wrote %d records in %.2f s; load_audit took %.3f s (%.1f us per record)\n",
           LOAD_N, t1 - t0, t2 - t1, (t2 - t1) * 1e6 / LOAD_N);
    js_tokindex_free(ix);
    tmpdir_remove(dir);
}

int main(void)
{
    test_key_init(&g_key);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_bad_size),
        cmocka_unit_test(test_add_find),
        cmocka_unit_test(test_replace_and_duplicate),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_expired_not_added),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_revoke_jti),
        cmocka_unit_test(test_revoke_sub),
        cmocka_unit_test(test_revoke_caller),
        cmocka_unit_test(test_revoke_precedence),
        cmocka_unit_test(test_revocations_full),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_bytes_per_entry),
        cmocka_unit_test(test_load_audit),
        cmocka_unit_test(test_load_skips_old_segments),
        cmocka_unit_test(test_load_framed),
        cmocka_unit_test(test_load_timing),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    test_key_free(&g_key);
    return rc;
}
