/*
 * test_denials.c - the denial budget (signer/core/denials.h): per-key burst and
 * rate, the global bound, the overflow bucket when the key table is full,
 * concurrent admits from several threads, the budget key of a request, and
 * the daemon's use of it with the audit log: a 5,000-denial burst writes a
 * bounded number of records whose counts add up, and the log verifies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>

#include <cmocka.h>
#include <pthread.h>
#include <time.h>

#include "test_audit_util.h"
#include "clock.h"
#include "denials.h"
#include "reader.h"
#include "record.h"
#include "verify.h"

static js_denials *make(uint32_t rate, uint32_t burst, uint32_t grate, uint32_t gburst,
                        uint32_t max_keys)
{
    js_denials_options o = {.rate = rate,
                            .burst = burst,
                            .global_rate = grate,
                            .global_burst = gburst,
                            .max_keys = max_keys};
    js_denials *d = NULL;
    js_err err;
    assert_int_equal(js_denials_new(&o, &d, &err), JS_OK);
    return d;
}

static void test_rejects_out_of_range(void **state)
{
    (void)state;
    js_denials_options o = {.rate = 2000000};
    js_denials *d = NULL;
    js_err err;
    assert_int_equal(js_denials_new(&o, &d, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "denials.config");
    assert_null(d);
    js_denials_free(NULL); /* accepted */
}

static void test_per_key_burst_then_rate(void **state)
{
    (void)state;
    js_denials *d = make(5, 10, 100000, 100000, 0);
    int64_t t = 1000000;
    int ok = 0;
    for (int i = 0; i < 100; i++)
        ok += js_denials_admit(d, "dns:intruder.example", t);
    assert_int_equal(ok, 10); /* the burst, then everything folds */
    /* 5/s: one more every 200 ms, not before. */
    assert_false(js_denials_admit(d, "dns:intruder.example", t + 199));
    assert_true(js_denials_admit(d, "dns:intruder.example", t + 200));
    assert_false(js_denials_admit(d, "dns:intruder.example", t + 201));
    /* Over 10 s of flood: the burst is gone, 5 per second. */
    ok = 0;
    for (int64_t ms = 1; ms <= 10000; ms++)
        for (int k = 0; k < 3; k++)
            ok += js_denials_admit(d, "dns:intruder.example", t + 200 + ms);
    assert_int_equal(ok, 50);
    /* A clock stepping back refills nothing. */
    assert_false(js_denials_admit(d, "dns:intruder.example", t));
    /* Other keys have their own budget. */
    assert_true(js_denials_admit(d, "cn:other", t + 10200));
    js_denials_stats s;
    js_denials_stats_get(d, &s);
    assert_int_equal(s.admitted, 10 + 1 + 50 + 1);
    assert_int_equal(s.admitted + s.folded, 100 + 3 + 30000 + 1 + 1);
    assert_int_equal(s.overflowed, 0);
    js_denials_free(d);
}

static void test_identity_and_peer_keys_distinct(void **state)
{
    (void)state;
    js_denials *d = make(1, 1, 1000, 1000, 0);
    assert_true(js_denials_admit(d, "spiffe://example.org/a", 5000));
    assert_false(js_denials_admit(d, "spiffe://example.org/a", 5000));
    assert_true(js_denials_admit(d, "spiffe://example.org/b", 5000));
    assert_true(js_denials_admit(d, "peer 127.0.0.1", 5000));
    assert_false(js_denials_admit(d, "peer 127.0.0.1", 5000));
    assert_true(js_denials_admit(d, "peer 127.0.0.2", 5000));
    js_denials_free(d);
}

/* Many identities: whatever their number, the global bucket bounds the
 * full records per second. */
static void test_global_bound_many_keys(void **state)
{
    (void)state;
    js_denials *d = make(5, 10, 50, 100, 0);
    char key[64];
    int64_t t = 0;
    int first = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "spiffe://attacker/%d", i);
        first += js_denials_admit(d, key, t);
    }
    assert_int_equal(first, 100); /* global burst */
    for (int sec = 1; sec <= 5; sec++) {
        int ok = 0;
        for (int i = 0; i < 20000; i++) {
            snprintf(key, sizeof(key), "spiffe://attacker/%d-%d", sec, i);
            ok += js_denials_admit(d, key, t + sec * 1000 - 1000 + i / 20);
        }
        assert_true(ok <= 50 + 1);
        assert_true(ok >= 45);
    }
    js_denials_free(d);
}

/* A full table: unknown keys share one overflow bucket, so 10,000
 * identities at one instant get at most (tracked slots + one burst). */
static void test_overflow_bucket_bound(void **state)
{
    (void)state;
    js_denials *d = make(5, 3, 1000000, 1000000, 64); /* one slot per stripe */
    char key[64];
    int ok = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof(key), "cn:bot-%d", i);
        ok += js_denials_admit(d, key, 7000);
    }
    js_denials_stats s;
    js_denials_stats_get(d, &s);
    assert_true(s.overflowed > 9000);
    /* each tracked key once (its first denial), plus the overflow burst */
    assert_true(ok <= 64 + 3);
    assert_true(ok >= 3);
    /* A tracked key that has refilled frees its slot: once time passes,
     * new keys are tracked again. */
    assert_true(js_denials_admit(d, "cn:late", 7000 + 10000));
    js_denials_free(d);
}

typedef struct thr {
    js_denials *d;
    int id;
    int same_ok;
    int distinct_ok;
} thr;

static void *thr_main(void *arg)
{
    thr *t = arg;
    char key[64];
    for (int i = 0; i < 20000; i++) {
        t->same_ok += js_denials_admit(t->d, "dns:shared.example", 42);
        snprintf(key, sizeof(key), "dns:t%d-%d.example", t->id, i % 500);
        t->distinct_ok += js_denials_admit(t->d, key, 42);
    }
    return NULL;
}

static void test_concurrent_admits(void **state)
{
    (void)state;
    js_denials *d = make(5, 10, 1000000, 1000000, 0);
    enum { N = 4 };
    pthread_t th[N];
    thr t[N];
    for (int i = 0; i < N; i++) {
        t[i] = (thr){.d = d, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
    }
    int same = 0, distinct = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        same += t[i].same_ok;
        distinct += t[i].distinct_ok;
    }
    /* One instant: the shared key gets exactly its burst, never more. */
    assert_int_equal(same, 10);
    /* 4 x 500 keys, 10 each -- unless a stripe filled (then overflow). */
    js_denials_stats s;
    js_denials_stats_get(d, &s);
    if (s.overflowed == 0)
        assert_int_equal(distinct, N * 500 * 10);
    else
        assert_true(distinct <= N * 500 * 10 + 10);
    assert_int_equal(s.admitted, (uint64_t)(same + distinct));
    assert_int_equal(s.admitted + s.folded, (uint64_t)N * 20000 * 2);
    js_denials_free(d);
}

static void test_key_of_request(void **state)
{
    (void)state;
    char k[JS_DENIALS_KEY_MAX + 1];
    js_denials_key("spiffe://example.org/a", "ipv4:127.0.0.1:5555", k, sizeof(k));
    assert_string_equal(k, "spiffe://example.org/a");
    js_denials_key("", "ipv4:127.0.0.1:5555", k, sizeof(k));
    assert_string_equal(k, "peer 127.0.0.1");
    js_denials_key(NULL, "ipv6:[::1]:40000", k, sizeof(k));
    assert_string_equal(k, "peer ::1");
    js_denials_key(NULL, "unix:/run/x.sock", k, sizeof(k));
    assert_string_equal(k, "peer unix:/run/x.sock");
    js_denials_key(NULL, NULL, k, sizeof(k));
    assert_string_equal(k, "peer ");
    char small[8];
    js_denials_key(NULL, "ipv4:127.0.0.1:5555", small, sizeof(small));
    assert_string_equal(small, "peer 12");
}

/* The bare peer address: js_denials_key's without "peer " (folded denials). */
static void test_peer_addr(void **state)
{
    (void)state;
    static const struct {
        const char *peer, *addr;
    } cases[] = {
        {"ipv4:127.0.0.1:5555", "127.0.0.1"},
        {"ipv6:[::1]:40000", "::1"},
        {"ipv6:[fe80::1%eth0]:1", "fe80::1%eth0"},
        {"ipv6:::1", "::1"},           /* no brackets: kept whole */
        {"ipv4:10.0.0.1", "10.0.0.1"}, /* no port */
        {"unix:/run/x.sock", "unix:/run/x.sock"},
        {"", ""},
        {NULL, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char a[JS_DENIALS_KEY_MAX + 1], k[JS_DENIALS_KEY_MAX + 1];
        js_denials_peer_addr(cases[i].peer, a, sizeof(a));
        assert_string_equal(a, cases[i].addr);
        /* the key is exactly "peer " + the address */
        js_denials_key(NULL, cases[i].peer, k, sizeof(k));
        assert_memory_equal(k, "peer ", 5);
        assert_string_equal(k + 5, a);
    }
    char small[4];
    js_denials_peer_addr("ipv4:127.0.0.1:5555", small, sizeof(small));
    assert_string_equal(small, "127");
}

/* ---- with the audit log: what signer/rpc does for each denial --------------------- */

typedef struct burst_tally {
    uint64_t full, folded_sum, fold_records, checkpoints, other;
    int64_t first_ms, last_ms;
    uint64_t per_second[64]; /* records by second since the first */
} burst_tally;

static void burst_visit(burst_tally *t, const js_audit_record *rec)
{
    int64_t ms = 0;
    const char *time = json_string_value(json_object_get(rec->json, "time"));
    assert_true(js_audit_time_parse(time, &ms));
    if (t->first_ms == 0)
        t->first_ms = ms;
    int64_t sec = (ms - t->first_ms) / 1000;
    if (sec >= 0 && sec < 64)
        t->per_second[sec]++;
    if (rec->is_checkpoint) {
        t->checkpoints++;
        return;
    }
    json_t *c = json_object_get(rec->json, "count");
    if (c != NULL) {
        t->folded_sum += (uint64_t)json_integer_value(c);
        t->fold_records++;
    } else if (json_object_get(rec->json, "decision") != NULL) {
        t->full++;
    } else {
        t->other++;
    }
}

/* 5,000 denials from one identity as fast as 4 threads can make them, plus
 * a no-identity peer: full records within the budget, the rest folded into
 * at most one record per (caller, reason) per second. */
typedef struct burst_ctx {
    js_denials *d;
    js_audit *a;
    int n;
    const char *identity;
    const char *peer;
    _Atomic uint64_t admitted, folded;
} burst_ctx;

static void *burst_main(void *arg)
{
    burst_ctx *b = arg;
    char key[JS_DENIALS_KEY_MAX + 1];
    js_denials_key(b->identity, b->peer, key, sizeof(key));
    for (int i = 0; i < b->n; i++) {
        if (js_denials_admit(b->d, key, js_mono_ms())) {
            js_audit_event ev = {.type = "sign",
                                 .caller = b->identity,
                                 .peer = b->peer,
                                 .decision = "deny",
                                 .reason = "policy.no_match",
                                 .message = "no policy entry matches the caller"};
            js_err err;
            assert_int_equal(js_audit_submit(b->a, &ev, NULL, NULL, &err), JS_OK);
            atomic_fetch_add(&b->admitted, 1);
        } else {
            /* no identity: the record names the peer's bare address */
            char addr[JS_DENIALS_KEY_MAX + 1];
            js_denials_peer_addr(b->peer, addr, sizeof(addr));
            const char *peer = b->identity[0] == '\0' ? addr : NULL;
            js_audit_note_folded(b->a, "sign", b->identity, peer, "policy.no_match");
            atomic_fetch_add(&b->folded, 1);
        }
    }
    return NULL;
}

static void test_burst_with_audit(void **state)
{
    (void)state;
    test_key k;
    test_key_init(&k);
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &k);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_denials *d = NULL;
    assert_int_equal(js_denials_new(NULL, &d, &err), JS_OK);

    burst_ctx b = {.d = d, .a = a, .n = 1250, .identity = "dns:intruder.example"};
    atomic_init(&b.admitted, 0);
    atomic_init(&b.folded, 0);
    pthread_t th[4];
    int64_t t0 = js_mono_ms();
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, burst_main, &b), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* The same from a peer without identity, spread over ~2.5 s. */
    burst_ctx p = {.d = d, .a = a, .n = 1, .identity = "", .peer = "ipv4:127.0.0.9:4000"};
    atomic_init(&p.admitted, 0);
    atomic_init(&p.folded, 0);
    for (int i = 0; i < 250; i++) {
        burst_main(&p);
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    int64_t elapsed = js_mono_ms() - t0;
    js_audit_close(a);

    uint64_t admitted = atomic_load(&b.admitted) + atomic_load(&p.admitted);
    uint64_t folded = atomic_load(&b.folded) + atomic_load(&p.folded);
    assert_int_equal(admitted + folded, 5250);
    /* Full records: each key's burst plus its rate over the elapsed time. */
    uint64_t bound = 2 * (JS_DENIALS_BURST + JS_DENIALS_RATE * (uint64_t)(elapsed / 1000 + 1));
    assert_true(admitted <= bound);
    assert_true(admitted >= JS_DENIALS_BURST + 1);

    char **paths = NULL;
    size_t n = 0;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    js_audit_reader *r = NULL;
    assert_int_equal(js_audit_reader_new((const char *const *)paths, n, &r, &err), JS_OK);
    burst_tally t;
    memset(&t, 0, sizeof(t));
    js_audit_record rec;
    bool end = false;
    while (js_audit_reader_read(r, &rec, &end, &err) == JS_OK && !end)
        burst_visit(&t, &rec);
    assert_true(end);
    js_audit_reader_free(r);
    /* Every denial is in the log: in full, or in a count. */
    assert_int_equal(t.full, admitted);
    assert_int_equal(t.folded_sum, folded);
    /* Folded records: at most 2 keys x 1 reason per started second. */
    assert_true(t.fold_records <= 2 * (uint64_t)(elapsed / 1000 + 2));
    /* Records per second (checkpoints included) stay small: before the
     * budget this burst wrote 5,000 records in under a second. */
    for (int s = 0; s < 64; s++)
        assert_true(t.per_second[s] <= JS_DENIALS_BURST * 2 + JS_DENIALS_RATE * 2 + 8);
    print_message("burst: %" PRIu64 " full, %" PRIu64 " folded into %" PRIu64 " records, %" PRIu64
                  " checkpoints, %" PRId64 " ms\n",
                  t.full, t.folded_sum, t.fold_records, t.checkpoints, elapsed);

    char pem[512], cpf[512];
    snprintf(pem, sizeof(pem), "%s/audit-key.pem", dir);
    snprintf(cpf, sizeof(cpf), "%s/checkpoint.json", dir);
    js_audit_verify_opts vo = {.segments = (const char *const *)paths,
                               .n_segments = n,
                               .pubkey_path = pem,
                               .checkpoint_path = cpf};
    js_audit_verify_report rep;
    assert_int_equal(js_audit_verify(&vo, &rep, &err), JS_OK);
    assert_true(rep.intact);
    js_audit_segments_free(paths, n);
    js_denials_free(d);
    tmpdir_remove(dir);
    test_key_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rejects_out_of_range),
        cmocka_unit_test(test_per_key_burst_then_rate),
        cmocka_unit_test(test_identity_and_peer_keys_distinct),
        cmocka_unit_test(test_global_bound_many_keys),
        cmocka_unit_test(test_overflow_bucket_bound),
        cmocka_unit_test(test_concurrent_admits),
        cmocka_unit_test(test_key_of_request),
        cmocka_unit_test(test_peer_addr),
        cmocka_unit_test(test_burst_with_audit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
