/*
 * test_audit_writer.c - the audit log writer (auditlog.h): group commit under
 * concurrent submitters, checkpoints (open, close, records threshold,
 * heartbeat while idle), rotation, checkpoint.json / audit-key.pem, folding
 * of denials (per type, caller or peer, reason, second; the bounded table's
 * overflow record; on_fold), the disk watermark through a statvfs hook,
 * fail-closed on injected ENOSPC / EIO with recovery (and the count of
 * lost records no caller waited for), and crash recovery at reopen (torn
 * tail beyond the record checkpoint.json names cut aside; damage at or
 * before it, or other damage, refuses to open and changes no file; an
 * operator's accepted loss is cut and recorded).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "test_audit_util.h"
#include "auditlog.h"
#include "checkpoint.h"
#include "clock.h"
#include "reader.h"
#include "record.h"
#include "verify.h"

static test_key g_key;

static int setup(void **state)
{
    (void)state;
    test_key_init(&g_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_key_free(&g_key);
    return 0;
}

/* Verifies the log in dir with the key and its checkpoint.json. */
static void verify_dir(const char *dir, js_audit_verify_report *rep)
{
    char pem[512];
    snprintf(pem, sizeof(pem), "%s/audit-key.pem", dir);
    test_verify_dir(dir, pem, NULL, 0, true, 0, rep);
    if (!rep->intact)
        print_message("verify: %s seq %lu %s@%lu: %s\n", js_reason_name(rep->reason),
                      (unsigned long)rep->bad_seq, rep->bad_segment, (unsigned long)rep->bad_offset,
                      rep->message);
}

/* Counts records of the log by type / checkpoint reason. */
typedef struct log_stats {
    uint64_t records, checkpoints, recovery;
    uint64_t cp_open, cp_close, cp_records, cp_interval, cp_heartbeat, cp_recovery;
    size_t segments;
} log_stats;

static void read_stats(const char *dir, log_stats *ls,
                       bool (*visit)(void *, const js_audit_record *), void *vctx)
{
    memset(ls, 0, sizeof(*ls));
    char **paths = NULL;
    size_t n = 0;
    js_err err;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    ls->segments = n;
    js_audit_reader *r = NULL;
    assert_int_equal(js_audit_reader_new((const char *const *)paths, n, &r, &err), JS_OK);
    js_audit_record rec;
    js_status st;
    bool end = false;
    while ((st = js_audit_reader_read(r, &rec, &end, &err)) == JS_OK && !end) {
        ls->records++;
        if (visit != NULL)
            visit(vctx, &rec);
        if (strcmp(rec.type, "recovery") == 0)
            ls->recovery++;
        if (!rec.is_checkpoint)
            continue;
        ls->checkpoints++;
        const char *why = json_string_value(json_object_get(rec.json, "reason"));
        assert_non_null(why);
        ls->cp_open += strcmp(why, "open") == 0;
        ls->cp_close += strcmp(why, "close") == 0;
        ls->cp_records += strcmp(why, "records") == 0;
        ls->cp_interval += strcmp(why, "interval") == 0;
        ls->cp_heartbeat += strcmp(why, "heartbeat") == 0;
        ls->cp_recovery += strcmp(why, "recovery") == 0;
    }
    assert_int_equal(st, JS_OK);
    assert_true(end);
    js_audit_reader_free(r);
    js_audit_segments_free(paths, n);
}

/* ---- group commit ------------------------------------------------------------------ */

#define GC_THREADS 8
#define GC_PER     250

typedef struct gc_shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t done, failed;
    uint8_t *seen; /* indexed by seq */
    size_t seen_cap;
    bool dup;
    int syncs;
} gc_shared;

static void gc_done(void *ctx, js_status st, uint64_t seq, const js_err *err)
{
    (void)err;
    gc_shared *g = ctx;
    pthread_mutex_lock(&g->mu);
    if (st != JS_OK)
        g->failed++;
    else if (seq >= g->seen_cap || g->seen[seq])
        g->dup = true;
    else
        g->seen[seq] = 1;
    g->done++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct gc_thread {
    js_audit *a;
    gc_shared *g;
    int id;
} gc_thread;

static void *gc_worker(void *arg)
{
    gc_thread *t = arg;
    for (int i = 0; i < GC_PER; i++) {
        char rid[64], jti[64];
        snprintf(rid, sizeof(rid), "req-%d-%d", t->id, i);
        snprintf(jti, sizeof(jti), "jti-%d-%d", t->id, i);
        js_audit_event ev = {.type = "sign",
                             .caller = "spiffe://test/worker",
                             .peer = "ipv4:1.2.3.4",
                             .request_id = rid,
                             .decision = "allow",
                             .reason = "ok",
                             .key = "main",
                             .kid = "kid1",
                             .alg = "ES256",
                             .jti = jti,
                             .sub = "alice",
                             .aud_json = "[\"a\",\"b\"]",
                             .iat = 1700000000,
                             .exp = 1700000300,
                             .scopes = "read write",
                             .token_sha256 = "00ff",
                             .policy_hash = "abcd"};
        js_err err;
        if (js_audit_submit(t->a, &ev, gc_done, t->g, &err) != JS_OK)
            fail_msg("submit failed: %s", err.msg);
    }
    return NULL;
}

static int count_sync(void *ctx, int fd)
{
    gc_shared *g = ctx;
    __atomic_add_fetch(&g->syncs, 1, __ATOMIC_SEQ_CST);
    return fdatasync(fd);
}

static bool gc_visit(void *ctx, const js_audit_record *rec)
{
    gc_shared *g = ctx;
    if (!rec->is_checkpoint && strcmp(rec->type, "sign") == 0) {
        assert_true(rec->seq < g->seen_cap);
        assert_int_equal(g->seen[rec->seq], 1); /* every logged record was acknowledged */
        g->seen[rec->seq] = 2;
    }
    return true;
}

/* g for up to cap sequence numbers; its condition variable waits on
 * CLOCK_MONOTONIC (js_mono_deadline). */
static void gc_shared_init(gc_shared *g, size_t cap)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->seen_cap = cap;
    g->seen = calloc(cap, 1);
    assert_non_null(g->seen);
}

static void test_group_commit_concurrent(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    gc_shared g;
    gc_shared_init(&g, GC_THREADS * GC_PER + 1000);
    js_audit_io io = {.fdatasync = count_sync, .ctx = &g};
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.io = &io;
    o.checkpoint_records = 500;
    /* Only the records threshold cuts checkpoints while the 2,000 records
     * are written: with the default 1 s interval, a run slower than that
     * (ThreadSanitizer, a loaded machine) sealed "interval" checkpoints that
     * reset the count, leaving fewer than three "records" ones. */
    o.checkpoint_interval_ms = 60000;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    pthread_t th[GC_THREADS];
    gc_thread args[GC_THREADS];
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (gc_thread){a, &g, i};
        pthread_create(&th[i], NULL, gc_worker, &args[i]);
    }
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_lock(&g.mu);
    while (g.done < GC_THREADS * GC_PER)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    assert_true(js_audit_healthy(a, NULL));
    js_audit_close(a);
    assert_false(g.dup);
    assert_int_equal(g.failed, 0);
    /* Group commit: far fewer fdatasyncs than records. */
    print_message("group commit: %d records, %d fdatasync calls\n", GC_THREADS * GC_PER, g.syncs);
    assert_true(g.syncs < GC_THREADS * GC_PER / 2);

    log_stats ls;
    read_stats(dir, &ls, gc_visit, &g);
    /* Every acknowledged seq is in the log as that record; seqs of records
     * and checkpoints together are 1..N without a gap. */
    for (size_t s = 0; s < g.seen_cap; s++)
        assert_true(g.seen[s] != 1);
    assert_int_equal(ls.records - ls.checkpoints, GC_THREADS * GC_PER);
    assert_int_equal(ls.cp_records, GC_THREADS * GC_PER / 500);
    assert_int_equal(ls.cp_interval, 0);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    assert_int_equal(rep.records, ls.records);
    assert_int_equal(rep.last_seq, ls.records);
    assert_true(rep.checkpoint_file_matched);
    assert_int_equal(rep.unsigned_tail, 0);
    free(g.seen);
    tmpdir_remove(dir);
}

/* Group commit waits only for announced records (auditlog.h js_audit_expect):
 * an announcement that never turns into a record cannot hold others back
 * beyond the commit delay, announced records are written and acknowledged,
 * and a refused one withdraws its announcement with the refusal. */
static void test_group_commit_expected(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    gc_shared g;
    gc_shared_init(&g, 1000);
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_event ev = {.type = "sign", .caller = "spiffe://test/worker", .decision = "allow"};

    /* Announced and never submitted: a plain record is still written. */
    js_audit_expect(a);
    assert_int_equal(js_audit_submit(a, &ev, gc_done, &g, &err), JS_OK);
    struct timespec until = js_mono_deadline(10000);
    pthread_mutex_lock(&g.mu);
    while (g.done < 1 && pthread_cond_timedwait(&g.cv, &g.mu, &until) == 0)
        ;
    assert_int_equal(g.done, 1);
    pthread_mutex_unlock(&g.mu);
    js_audit_expect_cancel(a);

    /* Announced, then submitted: written and acknowledged, in order. */
    for (int i = 0; i < 3; i++)
        js_audit_expect(a);
    for (int i = 0; i < 3; i++)
        assert_int_equal(js_audit_submit_expected(a, &ev, gc_done, &g, &err), JS_OK);

    /* Refused (too large): the refusal withdraws the announcement. */
    size_t big = JS_AUDIT_MAX_PAYLOAD + 1;
    char *msg = malloc(big + 1);
    assert_non_null(msg);
    memset(msg, 'x', big);
    msg[big] = '\0';
    js_audit_event huge = ev;
    huge.message = msg;
    js_audit_expect(a);
    assert_int_equal(js_audit_submit_expected(a, &huge, gc_done, &g, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_AUDIT_RECORD_TOO_LARGE);
    free(msg);

    pthread_mutex_lock(&g.mu);
    while (g.done < 4 && pthread_cond_timedwait(&g.cv, &g.mu, &until) == 0)
        ;
    assert_int_equal(g.done, 4);
    assert_int_equal(g.failed, 0);
    assert_false(g.dup);
    pthread_mutex_unlock(&g.mu);
    assert_true(js_audit_healthy(a, NULL));
    js_audit_close(a);
    log_stats ls;
    read_stats(dir, &ls, gc_visit, &g);
    assert_int_equal(ls.records - ls.checkpoints, 4);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    assert_true(rep.checkpoint_file_matched);
    free(g.seen);
    tmpdir_remove(dir);
}

/* ---- checkpoints, heartbeat, files ------------------------------------------------- */

/* Waits (up to 10 s) until the last durable checkpoint is newer than after;
 * returns its time. Polling rather than a fixed sleep: under ThreadSanitizer
 * on a loaded CI machine the writer can be slower than any sleep chosen. */
static uint64_t wait_checkpoint_after(js_audit *a, uint64_t after)
{
    for (int i = 0; i < 1000 && js_audit_last_checkpoint_ms(a) <= after; i++)
        sleep_ms(10);
    uint64_t t = js_audit_last_checkpoint_ms(a);
    assert_true(t > after);
    return t;
}

static void test_checkpoints_and_files(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    /* Each reason is forced by its own condition, never by a race between
     * them: the busy interval is far longer than 20 synchronous appends
     * take even under a sanitizer (a 60 ms interval here once sealed every
     * few records before the records threshold was reached, in TSan CI). */
    o.checkpoint_records = 10;
    o.checkpoint_interval_ms = 60000;
    o.heartbeat_ms = 80;
    js_audit *a = NULL;
    js_err err;
    uint64_t before = (uint64_t)js_wall_ms();
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    /* The opening checkpoint is durable when open returns: its time shows. */
    uint64_t t_open = js_audit_last_checkpoint_ms(a);
    assert_true(t_open >= before && t_open <= (uint64_t)js_wall_ms());
    char path[512];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/audit-key.pem", dir);
    uint8_t *pem = file_read(path, &len);
    assert_non_null(pem);
    assert_string_equal((char *)pem, g_key.pem);
    free(pem);
    snprintf(path, sizeof(path), "%s/checkpoint.json", dir);
    uint8_t *cp = file_read(path, &len);
    assert_non_null(cp);
    assert_non_null(strstr((char *)cp, "\"reason\":\"open\""));
    free(cp);

    /* 20 records = two "records" checkpoints and nothing left unsealed... */
    submit_n(a, 20, "busy");
    uint64_t t_busy = js_audit_last_checkpoint_ms(a);
    /* ...so the idle log is sealed by heartbeats, each one moving the last
     * checkpoint time on. */
    uint64_t t_hb1 = wait_checkpoint_after(a, t_busy);
    uint64_t t_hb2 = wait_checkpoint_after(a, t_hb1);
    assert_true(t_hb1 > t_open && t_hb2 <= (uint64_t)js_wall_ms());
    js_audit_close(a);

    log_stats ls;
    read_stats(dir, &ls, NULL, NULL);
    assert_int_equal(ls.cp_open, 1);
    assert_int_equal(ls.cp_close, 1);
    assert_int_equal(ls.cp_records, 2);
    assert_int_equal(ls.cp_interval, 0);
    assert_true(ls.cp_heartbeat >= 2);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    assert_true(rep.signatures_checked);
    assert_true(rep.checkpoint_file_matched);
    assert_string_equal(rep.latest.reason, "close");
    assert_int_equal(rep.latest.seq, rep.last_seq);

    /* checkpoint.json is byte-identical to the last record's payload. */
    cp = file_read(path, &len);
    assert_non_null(cp);
    assert_true(len > 1 && cp[len - 1] == '\n');
    assert_non_null(strstr((char *)cp, "\"reason\":\"close\""));
    free(cp);

    /* Reopen continues the chain; a restart is an "open" checkpoint. Now a
     * short busy interval: records below the threshold are sealed by an
     * "interval" checkpoint (FORMAT.md §5), not left for the heartbeat. */
    o.checkpoint_interval_ms = 60;
    o.heartbeat_ms = 60000;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    uint64_t t_reopen = js_audit_last_checkpoint_ms(a);
    submit_n(a, 3, "again");
    wait_checkpoint_after(a, t_reopen);
    js_audit_close(a);
    read_stats(dir, &ls, NULL, NULL);
    assert_int_equal(ls.cp_open, 2);
    assert_true(ls.cp_interval >= 1);
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    assert_int_equal(rep.restarts, 1);
    tmpdir_remove(dir);
}

static void test_rotation_chains_segments(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.segment_bytes = 2048;
    o.checkpoint_records = 7;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 60, "rot");
    js_audit_close(a);
    log_stats ls;
    read_stats(dir, &ls, NULL, NULL);
    assert_true(ls.segments >= 4);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    /* Dropping a middle segment breaks the global chain. */
    char **paths = NULL;
    size_t n = 0;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    const char *some[8];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 8; i++)
        if (i != 1)
            some[k++] = paths[i];
    js_audit_verify_opts vo = {.segments = some, .n_segments = k};
    assert_int_equal(js_audit_verify(&vo, &rep, &err), JS_OK);
    assert_false(rep.intact);
    assert_int_equal(rep.damage, JS_AUDIT_DAMAGE_TAMPER);
    assert_string_equal(js_reason_name(rep.reason), "audit.seq");
    js_audit_segments_free(paths, n);
    tmpdir_remove(dir);
}

static bool rl_visit(void *ctx, const js_audit_record *rec)
{
    uint64_t *counts = ctx;
    json_t *c = json_object_get(rec->json, "count");
    if (c == NULL)
        return true;
    const char *caller = json_string_value(json_object_get(rec->json, "caller"));
    assert_string_equal(json_string_value(json_object_get(rec->json, "decision")), "deny");
    assert_string_equal(json_string_value(json_object_get(rec->json, "reason")), "rate.limited");
    if (strcmp(caller, "flood") == 0) {
        counts[0] += (uint64_t)json_integer_value(c);
        counts[2]++;
    } else {
        counts[1] += (uint64_t)json_integer_value(c);
    }
    return true;
}

/* The fold window (FORMAT.md §3.1: one record per triple per second). */
#define TEST_FOLD_WINDOW_MS 1000

/* How many fold windows of one triple can hold notes made over span_ms:
 * a window is taken no sooner than TEST_FOLD_WINDOW_MS after its first note and
 * the next one opens only with a later note, so windows start at least
 * TEST_FOLD_WINDOW_MS apart. 1 whenever the notes took less than a window. */
static uint64_t fold_windows_max(int64_t span_ms)
{
    return 1 + (uint64_t)(span_ms / TEST_FOLD_WINDOW_MS);
}

/* on_fold of the rate test: the denials of "flood" reported durable. */
static void rl_hook(void *ctx, const js_audit_fold *f)
{
    _Atomic uint64_t *flood = ctx;
    if (f->caller != NULL && strcmp(f->caller, "flood") == 0 && f->seq != 0)
        atomic_fetch_add(flood, f->count);
}

typedef struct rl_wait {
    _Atomic uint64_t *seen;
    uint64_t want;
} rl_wait;

static bool rl_reported(void *ctx)
{
    const rl_wait *w = ctx;
    return atomic_load(w->seen) >= w->want;
}

static void test_rate_limit_folding(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    _Atomic uint64_t flood_seen;
    atomic_init(&flood_seen, 0);
    o.on_fold = rl_hook;
    o.on_fold_ctx = &flood_seen;
    o.heartbeat_ms = 60000; /* no heartbeats in the record count, however long the waits */
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    int64_t t0 = js_mono_ms();
    for (int i = 0; i < 5000; i++)
        js_audit_note_folded(a, "sign", "flood", NULL, js_reason_name(JS_R_RATE_LIMITED));
    for (int i = 0; i < 3; i++)
        js_audit_note_folded(a, "sign", "small", NULL, js_reason_name(JS_R_RATE_LIMITED));
    int64_t span1 = js_mono_ms() - t0;
    /* The next notes open a new window only once the writer has taken every
     * window of the first 5,000: wait for on_fold to report them all rather
     * than sleep past the window (the writer may be late, say behind an
     * fdatasync). */
    rl_wait w = {&flood_seen, 5000};
    assert_true(test_poll_until(rl_reported, &w, 10000));
    int64_t t2 = js_mono_ms();
    for (int i = 0; i < 7; i++)
        js_audit_note_folded(a, "sign", "flood", NULL, js_reason_name(JS_R_RATE_LIMITED));
    int64_t span2 = js_mono_ms() - t2;
    js_audit_close(a); /* flushes the open fold */
    uint64_t counts[3] = {0, 0, 0};
    log_stats ls;
    read_stats(dir, &ls, rl_visit, counts);
    assert_int_equal(counts[0], 5007);
    assert_int_equal(counts[1], 3);
    assert_int_equal(atomic_load(&flood_seen), 5007);
    /* One record per caller per second: exactly 2 when each burst took
     * less than a window, as they do except on a stalled machine; bounded by
     * the measured time otherwise. */
    uint64_t flood_max = fold_windows_max(span1) + fold_windows_max(span2);
    if (flood_max > 2)
        print_message("slow: bursts took %lld + %lld ms, %llu flood records\n", (long long)span1,
                      (long long)span2, (unsigned long long)counts[2]);
    assert_in_range(counts[2], 2, flood_max);
    /* A flood of 5,007 denials is a handful of records (each extra window
     * adds at most a flood and a small record and their checkpoints). */
    assert_true(ls.records < 20 + 4 * (flood_max - 2));
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    tmpdir_remove(dir);
}

/* ---- folding of any denial (FORMAT.md §3.1) ------------------------------------------ */

typedef struct fold_tally {
    uint64_t by_key[4]; /* caller a/no_match, caller a/frozen, peer, admin */
    uint64_t records[4];
    uint64_t other, overflow_records, total, fold_records;
    uint64_t hook_count, hook_records, hook_lost;
    pthread_mutex_t mu;
} fold_tally;

static bool fold_visit(void *ctx, const js_audit_record *rec)
{
    fold_tally *t = ctx;
    json_t *c = json_object_get(rec->json, "count");
    if (c == NULL)
        return true;
    uint64_t n = (uint64_t)json_integer_value(c);
    const char *type = json_string_value(json_object_get(rec->json, "type"));
    const char *caller = json_string_value(json_object_get(rec->json, "caller"));
    const char *peer = json_string_value(json_object_get(rec->json, "peer"));
    const char *reason = json_string_value(json_object_get(rec->json, "reason"));
    assert_string_equal(json_string_value(json_object_get(rec->json, "decision")), "deny");
    t->total += n;
    t->fold_records++;
    int k = -1;
    if (strcmp(type, "denials") == 0) {
        assert_string_equal(caller, "(other)");
        assert_string_equal(reason, "audit.fold_overflow");
        t->other += n;
        t->overflow_records++;
        return true;
    }
    if (caller != NULL && strcmp(caller, "dns:a.example") == 0)
        k = strcmp(reason, "policy.no_match") == 0 ? 0 : 1;
    else if (caller == NULL && peer != NULL && strcmp(peer, "127.0.0.9") == 0)
        k = 2;
    else if (strcmp(type, "admin") == 0)
        k = 3;
    if (k >= 0) {
        t->by_key[k] += n;
        t->records[k]++;
    }
    return true;
}

static void fold_hook(void *ctx, const js_audit_fold *f)
{
    fold_tally *t = ctx;
    pthread_mutex_lock(&t->mu);
    t->hook_count += f->count;
    t->hook_records++;
    t->hook_lost += f->seq == 0;
    pthread_mutex_unlock(&t->mu);
}

typedef struct fold_wait {
    fold_tally *t;
    uint64_t want; /* denials on_fold reported */
} fold_wait;

static bool fold_hook_reached(void *ctx)
{
    const fold_wait *w = ctx;
    pthread_mutex_lock(&w->t->mu);
    bool done = w->t->hook_count >= w->want;
    pthread_mutex_unlock(&w->t->mu);
    return done;
}

static void test_fold_any_denial(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    fold_tally t;
    memset(&t, 0, sizeof(t));
    pthread_mutex_init(&t.mu, NULL);
    o.on_fold = fold_hook;
    o.on_fold_ctx = &t;
    o.heartbeat_ms = 60000; /* only the folds' own batches, however long the waits */
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    int64_t t0 = js_mono_ms();
    for (int i = 0; i < 3000; i++) {
        js_audit_note_folded(a, "sign", "dns:a.example", NULL, "policy.no_match");
        if (i % 3 == 0)
            js_audit_note_folded(a, "sign", "dns:a.example", NULL, "admin.frozen");
        if (i % 10 == 0)
            js_audit_note_folded(a, "sign", NULL, "127.0.0.9", "identity.invalid");
        if (i % 100 == 0)
            js_audit_note_folded(a, "admin", "cn:mallory", NULL, "admin.not_admin");
    }
    uint64_t w1 = fold_windows_max(js_mono_ms() - t0);
    /* The next notes open a new window only once the writer has taken every
     * window of these 3000 + 1000 + 300 + 30: wait until on_fold reported
     * them all rather than sleep past the window. */
    fold_wait fw = {&t, 4330};
    assert_true(test_poll_until(fold_hook_reached, &fw, 10000));
    int64_t t2 = js_mono_ms();
    for (int i = 0; i < 5; i++)
        js_audit_note_folded(a, "sign", "dns:a.example", NULL, "policy.no_match");
    uint64_t w2 = fold_windows_max(js_mono_ms() - t2);
    js_audit_close(a);
    log_stats ls;
    read_stats(dir, &ls, fold_visit, &t);
    /* One record per window: exactly the counts below when each burst took
     * less than a window, as they do except on a stalled machine; bounded by the
     * measured time otherwise (w1, w2 windows at most). */
    if (w1 + w2 > 2)
        print_message("slow: the bursts may have spanned %llu + %llu windows\n",
                      (unsigned long long)w1, (unsigned long long)w2);
    assert_int_equal(t.by_key[0], 3005);
    assert_in_range(t.records[0], 2, w1 + w2); /* one per window: 3000, then 5 */
    assert_int_equal(t.by_key[1], 1000);
    assert_in_range(t.records[1], 1, w1); /* separate from no_match: per reason */
    assert_int_equal(t.by_key[2], 300);
    assert_in_range(t.records[2], 1, w1);
    assert_int_equal(t.by_key[3], 30);
    assert_int_equal(t.overflow_records, 0);
    /* The hook saw every folded record with the same counts. */
    assert_int_equal(t.hook_count, t.total);
    assert_int_equal(t.hook_records, t.fold_records);
    assert_int_equal(t.hook_lost, 0);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    pthread_mutex_destroy(&t.mu);
    tmpdir_remove(dir);
}

/* More distinct callers than the table holds: the rest are counted in one
 * overflow record, so records per window stay <= JS_AUDIT_FOLD_MAX and no
 * denial goes uncounted. */
static void test_fold_table_overflow(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    char caller[600];
    const int callers = 1000;
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < callers; i++) {
            /* long identities: each is cut to JS_AUDIT_FOLD_WHO_MAX bytes */
            snprintf(caller, sizeof(caller), "spiffe://example.org/%0550d", i);
            js_audit_note_folded(a, "sign", caller, NULL, "policy.no_match");
        }
    js_audit_close(a);
    fold_tally t;
    memset(&t, 0, sizeof(t));
    log_stats ls;
    read_stats(dir, &ls, fold_visit, &t);
    /* Identities that differ only after JS_AUDIT_FOLD_WHO_MAX bytes are cut
     * to the same text and fold together: a bounded record, no count lost. */
    assert_int_equal(t.total, 3u * callers);
    assert_int_equal(t.fold_records, 1);
    tmpdir_remove(dir);

    /* Distinct short identities: JS_AUDIT_FOLD_MAX - 1 entries, then the
     * overflow record. */
    tmpdir_make(dir, sizeof(dir));
    test_opts(&o, dir, &g_key);
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < callers; i++) {
            snprintf(caller, sizeof(caller), "cn:bot-%d", i);
            js_audit_note_folded(a, "sign", caller, NULL, "policy.no_match");
        }
    js_audit_close(a);
    memset(&t, 0, sizeof(t));
    read_stats(dir, &ls, fold_visit, &t);
    assert_int_equal(t.total, 3u * callers);
    assert_int_equal(t.fold_records, JS_AUDIT_FOLD_MAX);
    assert_int_equal(t.overflow_records, 1);
    assert_int_equal(t.other, 3u * (callers - (JS_AUDIT_FOLD_MAX - 1)));
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    tmpdir_remove(dir);
}

/* ---- disk watermark ------------------------------------------------------------------ */

typedef struct fake_disk {
    _Atomic uint64_t free_bytes;
    _Atomic uint64_t total_bytes;
    _Atomic int fail;
    _Atomic int calls;
} fake_disk;

static int fake_statvfs(void *ctx, const char *path, struct statvfs *out)
{
    fake_disk *d = ctx;
    (void)path;
    atomic_fetch_add(&d->calls, 1);
    if (atomic_load(&d->fail)) {
        errno = EIO;
        return -1;
    }
    memset(out, 0, sizeof(*out));
    out->f_frsize = 4096;
    out->f_bsize = 4096;
    out->f_blocks = atomic_load(&d->total_bytes) / 4096;
    out->f_bavail = atomic_load(&d->free_bytes) / 4096;
    out->f_bfree = out->f_bavail;
    return 0;
}

typedef struct disk_wait {
    js_audit *a;
    bool low;          /* wait for js_audit_disk_low == low... */
    bool unknown_free; /* ...or, if set, for free bytes unknown (UINT64_MAX) */
} disk_wait;

static bool disk_reached(void *ctx)
{
    const disk_wait *w = ctx;
    uint64_t free_b = 0;
    bool low = js_audit_disk_low(w->a, &free_b);
    return w->unknown_free ? free_b == UINT64_MAX : low == w->low;
}

/* Waits up to 10 s for js_audit_disk_low to become want: the writer measures
 * about once a JS_AUDIT_DISK_CHECK_MS, later when it is slow or busy. */
static bool wait_disk_low(js_audit *a, bool want)
{
    disk_wait w = {a, want, false};
    return test_poll_until(disk_reached, &w, 10000);
}

static void test_disk_watermark(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    fake_disk d;
    atomic_init(&d.free_bytes, 64ull << 20);
    atomic_init(&d.total_bytes, 1ull << 30);
    atomic_init(&d.fail, 0);
    atomic_init(&d.calls, 0);
    js_audit_io io = {.statvfs = fake_statvfs, .ctx = &d};
    o.io = &io;
    o.min_free_bytes = 16ull << 20;
    o.heartbeat_ms = 60000; /* the watermark is checked even when idle */
    js_audit *a = NULL;
    js_err err;
    int64_t t0 = js_mono_ms();
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    uint64_t free_b = 0;
    assert_false(js_audit_disk_low(a, &free_b)); /* known at open */
    assert_int_equal(free_b, 64ull << 20);
    /* Below the watermark: reported within about a second; the log keeps
     * accepting records. */
    atomic_store(&d.free_bytes, 8ull << 20);
    assert_true(wait_disk_low(a, true));
    assert_true(js_audit_disk_low(a, &free_b));
    assert_int_equal(free_b, 8ull << 20);
    for (int i = 0; i < 2000; i++) {
        js_audit_event ev = {
            .type = "sign", .caller = "dns:x", .decision = "deny", .reason = "policy.no_match"};
        assert_int_equal(js_audit_submit(a, &ev, NULL, NULL, &err), JS_OK);
    }
    /* Above it again. */
    atomic_store(&d.free_bytes, 32ull << 20);
    assert_true(wait_disk_low(a, false));
    /* A percentage rule is not set: 32 MiB of 1 GiB is fine. statvfs
     * failing is "unknown", not low. */
    atomic_store(&d.fail, 1);
    disk_wait unknown = {a, false, true};
    assert_true(test_poll_until(disk_reached, &unknown, 10000));
    assert_false(js_audit_disk_low(a, &free_b));
    assert_int_equal(free_b, UINT64_MAX);
    int calls = atomic_load(&d.calls);
    int64_t elapsed = js_mono_ms() - t0;
    js_audit_close(a);
    /* Once at open, then at most once a JS_AUDIT_DISK_CHECK_MS over the
     * measured time (about 3 s) and 2,000 records: never per record. */
    print_message("disk watermark: %d statvfs calls in %lld ms\n", calls, (long long)elapsed);
    assert_true(calls >= 2);
    assert_true(calls <= 1 + elapsed / JS_AUDIT_DISK_CHECK_MS);
    tmpdir_remove(dir);

    /* The percentage rule: 5% of 1 GiB is ~51 MiB; 40 MiB free is low. */
    tmpdir_make(dir, sizeof(dir));
    test_opts(&o, dir, &g_key);
    atomic_store(&d.fail, 0);
    atomic_store(&d.free_bytes, 40ull << 20);
    o.io = &io;
    o.min_free_bytes = 1ull << 20;
    o.min_free_percent = 5;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    assert_true(js_audit_disk_low(a, NULL));
    js_audit_close(a);
    /* Disabled: never low. */
    o.disk_watermark_off = true;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    assert_false(js_audit_disk_low(a, NULL));
    js_audit_close(a);
    tmpdir_remove(dir);
}

/* ---- fail closed ------------------------------------------------------------------- */

typedef struct fault {
    int write_errno; /* != 0: writes fail (after writing half of the first) */
    int sync_errno;  /* != 0: fdatasync fails */
    bool partial_done;
} fault;

static ssize_t fault_write(void *ctx, int fd, const void *buf, size_t len)
{
    fault *f = ctx;
    int e = __atomic_load_n(&f->write_errno, __ATOMIC_SEQ_CST);
    if (e != 0) {
        if (!f->partial_done && len > 1) {
            /* A torn write: half the batch reaches the file, then ENOSPC. */
            f->partial_done = true;
            return write(fd, buf, len / 2);
        }
        errno = e;
        return -1;
    }
    return write(fd, buf, len);
}

static int fault_sync(void *ctx, int fd)
{
    fault *f = ctx;
    int e = __atomic_load_n(&f->sync_errno, __ATOMIC_SEQ_CST);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return fdatasync(fd);
}

typedef struct fc_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok, unavail;
    char msg[JS_MSG_MAX];
} fc_ctx;

static void fc_done(void *ctx, js_status st, uint64_t seq, const js_err *err)
{
    (void)seq;
    fc_ctx *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->done++;
    if (st == JS_OK)
        c->ok++;
    if (st == JS_EUNAVAIL) {
        c->unavail++;
        assert_non_null(err);
        assert_string_equal(js_reason_name(err->reason), "audit.unavailable");
        snprintf(c->msg, sizeof(c->msg), "%s", err->msg);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static bool fc_visit(void *ctx, const js_audit_record *rec)
{
    (void)ctx;
    const char *rid = json_string_value(json_object_get(rec->json, "request_id"));
    /* Records whose done said UNAVAILABLE were cut by the recovery. */
    if (rid != NULL && strncmp(rid, "lost-", 5) == 0)
        fail_msg("a failed record is in the log: %s", rid);
    return true;
}

static void run_fail_closed(int write_errno, int sync_errno, const char *expect)
{
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    fault f;
    memset(&f, 0, sizeof(f));
    js_audit_io io = {.write = fault_write, .fdatasync = fault_sync, .ctx = &f};
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.io = &io;
    o.retry_ms = 30;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 5, "before");
    uint64_t cp_before = js_audit_last_checkpoint_ms(a);
    assert_true(cp_before > 0);

    __atomic_store_n(&f.write_errno, write_errno, __ATOMIC_SEQ_CST);
    __atomic_store_n(&f.sync_errno, sync_errno, __ATOMIC_SEQ_CST);
    fc_ctx c;
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    int submitted = 0;
    for (int i = 0; i < 20; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "lost-%d", i);
        js_audit_event ev = {.type = "sign", .request_id = rid, .decision = "allow"};
        if (js_audit_submit(a, &ev, fc_done, &c, &err) == JS_OK)
            submitted++;
        else
            assert_int_equal(err.status, JS_EUNAVAIL);
    }
    pthread_mutex_lock(&c.mu);
    while (c.done < submitted)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    assert_int_equal(c.ok, 0);
    assert_int_equal(c.unavail, submitted);
    assert_non_null(strstr(c.msg, expect));
    js_err why;
    assert_false(js_audit_healthy(a, &why));
    assert_non_null(strstr(why.msg, expect));
    /* New submits fail at once, without a callback. */
    js_audit_event ev = {.type = "sign", .request_id = "lost-new"};
    assert_int_equal(js_audit_submit(a, &ev, fc_done, &c, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "audit.unavailable");
    assert_non_null(strstr(err.msg, expect));
    uint64_t cp_failed = js_audit_last_checkpoint_ms(a);
    sleep_ms(100); /* recovery attempts keep failing while the fault lasts */
    assert_false(js_audit_healthy(a, NULL));
    /* Their checkpoints (one every retry_ms) never became durable: the last
     * checkpoint time stands still while the log is failed. */
    assert_int_equal(js_audit_last_checkpoint_ms(a), cp_failed);

    /* The operator fixes the cause: the writer recovers by itself. */
    __atomic_store_n(&f.write_errno, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&f.sync_errno, 0, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 200 && !js_audit_healthy(a, NULL); i++)
        sleep_ms(10);
    assert_true(js_audit_healthy(a, NULL));
    /* The recovery checkpoint is durable: the time moves on again. */
    assert_true(js_audit_last_checkpoint_ms(a) > cp_before);
    submit_n(a, 5, "after");
    js_audit_close(a);

    log_stats ls;
    read_stats(dir, &ls, fc_visit, NULL);
    assert_int_equal(ls.recovery, 1);
    assert_int_equal(ls.cp_recovery, 1);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    tmpdir_remove(dir);
}

static void test_fail_closed_write_enospc(void **state)
{
    (void)state;
    run_fail_closed(ENOSPC, 0, "No space left on device");
}

static void test_fail_closed_fdatasync_eio(void **state)
{
    (void)state;
    /* The data reached the page cache but fdatasync failed: it must not be
     * trusted (never retried as if it succeeded) -- the recovery cuts it. */
    run_fail_closed(0, EIO, "Input/output error");
}

/* ---- recovery at reopen ------------------------------------------------------------ */

static void make_log(const char *dir, int n, js_audit_options *o)
{
    test_opts(o, dir, &g_key);
    o->checkpoint_records = 10;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(o, &a, &err), JS_OK);
    submit_n(a, n, "rec");
    js_audit_close(a);
}

static bool recovery_visit(void *ctx, const js_audit_record *rec)
{
    json_t **out = ctx;
    if (strcmp(rec->type, "recovery") == 0) {
        json_decref(*out);
        *out = json_incref(rec->json);
    }
    return true;
}

/* A crash leaves checkpoint.json behind the log (it is replaced after the
 * batch is durable): a second session appends records and a close
 * checkpoint, then the first session's checkpoint.json is put back. */
static void lagging_anchor(const char *dir, js_audit_options *o)
{
    char cpf[512];
    snprintf(cpf, sizeof(cpf), "%s/checkpoint.json", dir);
    size_t cplen = 0;
    uint8_t *cp = file_read(cpf, &cplen);
    assert_non_null(cp);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(o, &a, &err), JS_OK);
    submit_n(a, 3, "unsigned");
    js_audit_close(a);
    file_write(cpf, cp, cplen);
    free(cp);
}

static void test_reopen_torn_tail(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    make_log(dir, 30, &o);
    lagging_anchor(dir, &o);
    char seg[512], broken[600];
    snprintf(seg, sizeof(seg), "%s/audit-000001.log", dir);
    size_t len = 0;
    uint8_t *data = file_read(seg, &len);
    /* Torn tail 1: the last record (beyond the one checkpoint.json names)
     * cut in the middle. */
    assert_int_equal(truncate(seg, (off_t)(len - 10)), 0);
    js_audit_verify_report rep;
    js_err err;
    const char *segs[1] = {seg};
    js_audit_verify_opts vo = {.segments = segs, .n_segments = 1};
    assert_int_equal(js_audit_verify(&vo, &rep, &err), JS_OK);
    assert_false(rep.intact);
    assert_int_equal(rep.damage, JS_AUDIT_DAMAGE_CRASH);

    js_audit *a = NULL;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_close(a);
    snprintf(broken, sizeof(broken), "%s.broken", seg);
    size_t blen = 0;
    uint8_t *b = file_read(broken, &blen);
    assert_non_null(b);
    free(b);
    json_t *recj = NULL;
    log_stats ls;
    read_stats(dir, &ls, recovery_visit, &recj);
    assert_non_null(recj);
    json_t *d = json_object_get(recj, "detail");
    assert_int_equal(json_integer_value(json_object_get(d, "length")), blen);
    assert_string_equal(json_string_value(json_object_get(d, "saved_as")),
                        "audit-000001.log.broken");
    assert_string_equal(json_string_value(json_object_get(recj, "reason")), "audit.torn_tail");
    json_decref(recj);
    recj = NULL;
    verify_dir(dir, &rep);
    assert_true(rep.intact);

    /* Torn tail 2: garbage appended after the last record. */
    FILE *f = fopen(seg, "ab");
    fwrite("\x17\x00\x00\x00garbage-garbage-garbage!!", 1, 29, f);
    fclose(f);
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_close(a);
    snprintf(broken, sizeof(broken), "%s.broken.1", seg);
    b = file_read(broken, &blen);
    assert_non_null(b);
    assert_int_equal(blen, 29);
    free(b);
    read_stats(dir, &ls, recovery_visit, &recj);
    assert_int_equal(ls.recovery, 2);
    json_decref(recj);
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    free(data);
    tmpdir_remove(dir);
}

static void test_reopen_refuses_damage(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    make_log(dir, 30, &o);
    char seg[512];
    snprintf(seg, sizeof(seg), "%s/audit-000001.log", dir);
    size_t len = 0;
    uint8_t *orig = file_read(seg, &len);

    /* A flipped byte in the middle, valid records after it: not a torn tail. */
    uint8_t *d = malloc(len);
    memcpy(d, orig, len);
    d[len / 2] ^= 0x20;
    file_write(seg, d, len);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "audit.damaged");
    assert_non_null(strstr(err.msg, "audit-000001.log"));
    assert_non_null(strstr(err.msg, "offset"));
    assert_non_null(strstr(err.msg, "seq"));

    /* A record rewritten with a valid CRC: the chain catches it. Find the
     * frame of seq 5 and change one payload byte, recomputing the CRC. */
    memcpy(d, orig, len);
    size_t off = 0;
    for (int s = 1; s < 5; s++)
        off += JS_AUDIT_FRAME_HDR + (size_t)(d[off] | d[off + 1] << 8);
    size_t plen = (size_t)(d[off] | d[off + 1] << 8);
    uint8_t *p = d + off + JS_AUDIT_FRAME_HDR;
    char *c = strstr((char *)p, "\"allow\"");
    assert_non_null(c);
    memcpy(c, "\"alloW\"", 7);
    js_audit_frame_header(p, (uint32_t)plen, d + off);
    file_write(seg, d, len);
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    assert_non_null(strstr(err.msg, "seq 6"));
    assert_non_null(strstr(err.msg, "chain"));

    /* Restore: opens again. */
    file_write(seg, orig, len);
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_close(a);
    free(d);
    free(orig);
    tmpdir_remove(dir);
}

/* ---- damage at or before the record checkpoint.json names ------ */

#define SNAP_MAX 16

/* Every file of a directory, name and bytes: "leave every file untouched". */
typedef struct dir_snap {
    size_t n;
    char name[SNAP_MAX][256];
    uint8_t *data[SNAP_MAX];
    size_t len[SNAP_MAX];
} dir_snap;

static void snap_take(const char *dir, dir_snap *sn)
{
    memset(sn, 0, sizeof(*sn));
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        assert_true(sn->n < SNAP_MAX);
        char p[600];
        snprintf(sn->name[sn->n], sizeof(sn->name[0]), "%s", de->d_name);
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        sn->data[sn->n] = file_read(p, &sn->len[sn->n]);
        assert_non_null(sn->data[sn->n]);
        sn->n++;
    }
    closedir(d);
}

static void snap_free(dir_snap *sn)
{
    for (size_t i = 0; i < sn->n; i++)
        free(sn->data[i]);
    sn->n = 0;
}

static void snap_assert_same(const dir_snap *before, const char *dir)
{
    dir_snap after;
    snap_take(dir, &after);
    if (after.n != before->n)
        fail_msg("%zu files before, %zu after (a refusal must not create or remove files)",
                 before->n, after.n);
    for (size_t i = 0; i < before->n; i++) {
        size_t j = 0;
        while (j < after.n && strcmp(after.name[j], before->name[i]) != 0)
            j++;
        if (j == after.n)
            fail_msg("%s disappeared", before->name[i]);
        if (after.len[j] != before->len[i] ||
            memcmp(after.data[j], before->data[i], before->len[i]) != 0)
            fail_msg("%s changed", before->name[i]);
    }
    snap_free(&after);
}

/* Frame offsets of a segment image: off[i] is the frame of the record i+1
 * records into the segment; returns the count. */
static size_t frame_offsets(const uint8_t *d, size_t len, size_t *off, size_t cap)
{
    size_t n = 0, o = 0;
    while (o + JS_AUDIT_FRAME_HDR <= len && n < cap) {
        size_t plen = (size_t)d[o] | (size_t)d[o + 1] << 8 | (size_t)d[o + 2] << 16;
        if (o + JS_AUDIT_FRAME_HDR + plen > len)
            break;
        off[n++] = o;
        o += JS_AUDIT_FRAME_HDR + plen;
    }
    return n;
}

static void assert_refused(const js_audit_options *o, const char *dir, const char *damage,
                           uint64_t offset, uint64_t seq, uint64_t cp_seq)
{
    dir_snap before;
    snap_take(dir, &before);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(o, &a, &err), JS_ECONFIG);
    assert_null(a);
    assert_string_equal(js_reason_name(err.reason), "audit.anchor_lost");
    char want[128];
    assert_non_null(strstr(err.msg, "audit-000001.log"));
    snprintf(want, sizeof(want), "offset %" PRIu64 " seq %" PRIu64 " is %s", offset, seq, damage);
    if (strstr(err.msg, want) == NULL)
        fail_msg("message lacks \"%s\": %s", want, err.msg);
    snprintf(want, sizeof(want), "checkpoint.json names the checkpoint seq %" PRIu64, cp_seq);
    if (strstr(err.msg, want) == NULL)
        fail_msg("message lacks \"%s\": %s", want, err.msg);
    assert_non_null(strstr(err.msg, "--accept-audit-loss"));
    snap_assert_same(&before, dir);
    /* And again: a refusal is repeatable, nothing was half-done. */
    assert_int_equal(js_audit_open(o, &a, &err), JS_ECONFIG);
    snap_assert_same(&before, dir);
    snap_free(&before);
}

static bool loss_visit(void *ctx, const js_audit_record *rec)
{
    json_t **out = ctx;
    const char *why = json_string_value(json_object_get(rec->json, "reason"));
    if (strcmp(rec->type, "recovery") == 0 && why != NULL &&
        strcmp(why, "audit.loss_accepted") == 0) {
        json_decref(out[0]);
        out[0] = json_incref(rec->json);
    }
    if (strcmp(rec->type, "recovery") == 0 && why != NULL && strcmp(why, "audit.torn_tail") == 0) {
        json_decref(out[1]);
        out[1] = json_incref(rec->json);
    }
    return true;
}

static void test_reopen_refuses_named_damage(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    make_log(dir, 30, &o);
    char seg[512], cpf[512];
    snprintf(seg, sizeof(seg), "%s/audit-000001.log", dir);
    snprintf(cpf, sizeof(cpf), "%s/checkpoint.json", dir);
    size_t len = 0, cplen = 0;
    uint8_t *orig = file_read(seg, &len);
    uint8_t *cp = file_read(cpf, &cplen);
    json_t *cpj = json_loadb((const char *)cp, cplen, 0, NULL);
    assert_non_null(cpj);
    uint64_t cp_seq = (uint64_t)json_integer_value(json_object_get(cpj, "seq"));
    json_decref(cpj);
    size_t off[256];
    size_t nf = frame_offsets(orig, len, off, 256);
    assert_int_equal(nf, cp_seq); /* one segment; the close checkpoint is last */

    /* 1. truncate -s -100: the close checkpoint checkpoint.json names is cut. */
    assert_int_equal(truncate(seg, (off_t)(len - 100)), 0);
    size_t k = nf - 1;
    while (off[k] > len - 100)
        k--;
    assert_refused(&o, dir, "damaged", off[k], k + 1, cp_seq);

    /* 2. Cut cleanly at a record boundary before it: missing, not damaged. */
    assert_int_equal(truncate(seg, (off_t)off[nf - 3]), 0);
    assert_refused(&o, dir, "missing", off[nf - 3], nf - 2, cp_seq);

    /* 3. The whole log removed, checkpoint.json left. */
    char moved[600];
    snprintf(moved, sizeof(moved), "%s.away", dir);
    assert_int_equal(rename(seg, moved), 0);
    assert_refused(&o, dir, "missing", 0, 1, cp_seq);
    assert_int_equal(rename(moved, seg), 0);

    /* 4. The named record present but different: refused, not acceptable. */
    file_write(seg, orig, len);
    uint8_t *mod = malloc(cplen);
    memcpy(mod, cp, cplen);
    /* Another well-formed checkpoint: its signature's first character changed. */
    char *t = strstr((char *)mod, "\"sig\":\"");
    assert_non_null(t);
    t += 7;
    *t = *t == 'A' ? 'B' : 'A';
    file_write(cpf, mod, cplen);
    js_audit *a = NULL;
    js_err err;
    o.accept_loss_reason = "should not matter";
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "audit.anchor_mismatch");
    assert_non_null(strstr(err.msg, "audit-000001.log"));
    o.accept_loss_reason = NULL;
    free(mod);

    /* Intact again: opens. */
    file_write(cpf, cp, cplen);
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_close(a);
    free(cp);
    free(orig);
    tmpdir_remove(dir);
}

static void test_accept_loss_records_it(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    make_log(dir, 30, &o);
    char seg[512], broken[600];
    snprintf(seg, sizeof(seg), "%s/audit-000001.log", dir);
    size_t len = 0;
    uint8_t *orig = file_read(seg, &len);
    size_t off[256];
    size_t nf = frame_offsets(orig, len, off, 256);
    assert_int_equal(truncate(seg, (off_t)(len - 100)), 0);
    size_t k = nf - 1;
    while (off[k] > len - 100)
        k--;

    /* Bad reasons are refused before anything is read. */
    js_audit *a = NULL;
    js_err err;
    o.accept_loss_reason = "";
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "audit.config");
    char big[JS_AUDIT_ACCEPT_REASON_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    o.accept_loss_reason = big;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);

    const char *why = "INC-4711: disk controller fault, accepted by alice";
    o.accept_loss_reason = why;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 2, "after-accept");
    js_audit_close(a);

    json_t *found[2] = {NULL, NULL};
    log_stats ls;
    read_stats(dir, &ls, loss_visit, found);
    assert_non_null(found[0]);
    assert_non_null(found[1]); /* the damaged bytes were cut aside as for a torn tail */
    json_t *d = json_object_get(found[0], "detail");
    assert_string_equal(json_string_value(json_object_get(d, "segment")), "audit-000001.log");
    assert_int_equal(json_integer_value(json_object_get(d, "offset")), off[k]);
    assert_int_equal(json_integer_value(json_object_get(d, "seq")), k + 1);
    assert_string_equal(json_string_value(json_object_get(d, "damage")), "damaged");
    assert_int_equal(json_integer_value(json_object_get(d, "checkpoint_seq")), nf);
    assert_string_equal(json_string_value(json_object_get(d, "operator_reason")), why);
    json_t *named = json_object_get(d, "checkpoint");
    assert_string_equal(json_string_value(json_object_get(named, "reason")), "close");
    assert_int_equal(json_integer_value(json_object_get(named, "seq")), nf);
    assert_int_equal(strlen(json_string_value(json_object_get(d, "checkpoint_sha256"))), 64);
    /* Seq continues from the last good record: the loss record follows the
     * torn-tail record right after it. */
    assert_int_equal(json_integer_value(json_object_get(found[1], "seq")), k + 1);
    assert_int_equal(json_integer_value(json_object_get(found[0], "seq")), k + 2);
    json_decref(found[0]);
    json_decref(found[1]);
    snprintf(broken, sizeof(broken), "%s.broken", seg);
    size_t blen = 0;
    uint8_t *b = file_read(broken, &blen);
    assert_non_null(b);
    assert_int_equal(blen, len - 100 - off[k]);
    free(b);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);

    /* The option left in place on an intact log changes nothing. */
    uint64_t before = ls.recovery;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_close(a);
    read_stats(dir, &ls, NULL, NULL);
    assert_int_equal(ls.recovery, before);
    free(orig);
    tmpdir_remove(dir);
}

/* ---- a failed batch's lost denials are counted ------------------ */

static bool lost_visit(void *ctx, const js_audit_record *rec)
{
    json_t **out = ctx;
    if (strcmp(rec->type, "recovery") == 0) {
        json_decref(*out);
        *out = json_incref(rec->json);
    }
    return true;
}

static void test_lost_denials_counted(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    fault f;
    memset(&f, 0, sizeof(f));
    js_audit_io io = {.write = fault_write, .fdatasync = fault_sync, .ctx = &f};
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.io = &io;
    o.retry_ms = 30;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 3, "before");
    assert_int_equal(js_audit_records_lost(a), 0);

    /* fdatasync fails: every queued denial (no `done`: nobody waits) is
     * dropped with its batch; those refused at submit are the caller's to
     * report and are not counted. */
    __atomic_store_n(&f.sync_errno, EIO, __ATOMIC_SEQ_CST);
    uint64_t accepted = 0;
    for (int i = 0; i < 40; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "lost-%d", i);
        js_audit_event ev = {
            .type = "sign", .request_id = rid, .decision = "deny", .reason = "policy.no_match"};
        if (js_audit_submit(a, &ev, NULL, NULL, &err) == JS_OK)
            accepted++;
        else
            assert_int_equal(err.status, JS_EUNAVAIL);
    }
    assert_true(accepted >= 1);
    for (int i = 0; i < 300 && js_audit_records_lost(a) < accepted; i++)
        sleep_ms(10);
    assert_int_equal(js_audit_records_lost(a), accepted);
    assert_false(js_audit_healthy(a, NULL));

    __atomic_store_n(&f.sync_errno, 0, __ATOMIC_SEQ_CST);
    for (int i = 0; i < 300 && !js_audit_healthy(a, NULL); i++)
        sleep_ms(10);
    assert_true(js_audit_healthy(a, NULL));
    submit_n(a, 2, "after");
    assert_int_equal(js_audit_records_lost(a), accepted); /* a running total */
    js_audit_close(a);

    json_t *recj = NULL;
    log_stats ls;
    read_stats(dir, &ls, lost_visit, &recj);
    assert_int_equal(ls.recovery, 1);
    assert_non_null(recj);
    assert_string_equal(json_string_value(json_object_get(recj, "reason")), "audit.io_recovered");
    json_t *d = json_object_get(recj, "detail");
    assert_int_equal(json_integer_value(json_object_get(d, "lost_records")), accepted);
    assert_int_equal(json_integer_value(json_object_get(d, "lost_denials")), accepted);
    json_decref(recj);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    tmpdir_remove(dir);
}

static void test_bad_events_rejected(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    js_audit *a = NULL;
    js_err err;
    o.origin = "bad origin\n";
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    o.origin = "test.example/audit";
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    /* An aud that is not JSON is recorded as a string, never dropped: a
     * denial of a malformed request must still be in the log. */
    js_audit_event ev = {.type = "sign", .aud_json = "{not json"};
    assert_int_equal(js_audit_submit(a, &ev, NULL, NULL, &err), JS_OK);
    /* Invalid UTF-8 (a Latin-1 name, a multi-byte character cut at a byte
     * limit) is recorded as U+FFFD: the record, and its batch, survive. */
    js_audit_event bad_utf8 = {.type = "sign", .caller = "caf\xe9", .sub = "\xe2\x82"};
    assert_int_equal(js_audit_submit(a, &bad_utf8, NULL, NULL, &err), JS_OK);
    uint64_t seq_after = 0;
    js_audit_event ok_ev = {.type = "sign", .caller = "after"};
    assert_int_equal(js_audit_append_sync(a, &ok_ev, &seq_after, &err), JS_OK);
    js_audit_event ev2 = {.type = NULL};
    assert_int_equal(js_audit_submit(a, &ev2, NULL, NULL, &err), JS_EINVAL);
    char *big = malloc(70000);
    memset(big, 'x', 69999);
    big[69999] = 0;
    js_audit_event ev3 = {.type = "sign", .message = big};
    assert_int_equal(js_audit_submit(a, &ev3, NULL, NULL, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "audit.record_too_large");
    free(big);
    js_audit_event ev4 = {.type = "admin", .detail_json = "{\"k\":[1,2]}"};
    uint64_t seq = 0;
    assert_int_equal(js_audit_append_sync(a, &ev4, &seq, &err), JS_OK);
    assert_true(js_audit_healthy(a, NULL));
    js_audit_close(a);
    /* Another origin refuses to continue this log. */
    o.origin = "other";
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "audit.origin");
    tmpdir_remove(dir);
}

/* ---- lateness evidence (FORMAT.md §5.1 late_ms / late_why) -------------------------- */

/* A signer (or a disk) that is slow once: the call numbered `slow_call`
 * takes delay_ms. Called only from the writer thread. */
typedef struct slow_ctx {
    test_key *key;
    int calls, slow_call;
    long delay_ms;
} slow_ctx;

static js_status slow_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                           size_t *sig_len, js_err *err)
{
    slow_ctx *c = ctx;
    if (++c->calls == c->slow_call)
        sleep_ms(c->delay_ms);
    return test_sign(c->key, msg, len, sig, cap, sig_len, err);
}

static int slow_sync(void *ctx, int fd)
{
    slow_ctx *c = ctx;
    if (++c->calls == c->slow_call)
        sleep_ms(c->delay_ms);
    return fdatasync(fd);
}

/* The largest late_ms among the checkpoints, with its late_why. */
typedef struct late_seen {
    uint64_t late_ms, why_ms, late_cps, records;
    char why[16];
} late_seen;

static bool late_visit(void *ctx, const js_audit_record *rec)
{
    late_seen *ls = ctx;
    ls->records++;
    if (!rec->is_checkpoint)
        return true;
    json_t *l = json_object_get(rec->json, "late_ms");
    if (l == NULL)
        return true;
    ls->late_cps++;
    if ((uint64_t)json_integer_value(l) > ls->late_ms) {
        ls->late_ms = (uint64_t)json_integer_value(l);
        const char *w = json_string_value(json_object_get(rec->json, "late_why"));
        snprintf(ls->why, sizeof(ls->why), "%s", w != NULL ? w : "");
        ls->why_ms = (uint64_t)json_integer_value(json_object_get(rec->json, "late_why_ms"));
    }
    return true;
}

/* Writes an idle log with a 100 ms heartbeat for about 1.5 s while one
 * checkpoint signature (slow_sign) or one fdatasync (slow_sync) takes 700
 * ms; returns what the checkpoints said about it. */
static void run_late(bool slow_disk, late_seen *seen, js_audit_verify_report *rep)
{
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.checkpoint_interval_ms = 100;
    o.heartbeat_ms = 100;
    slow_ctx sc = {.key = &g_key, .slow_call = 3, .delay_ms = 700};
    js_audit_io io = {.fdatasync = slow_sync, .ctx = &sc};
    if (slow_disk)
        o.io = &io;
    else {
        o.sign = slow_sign;
        o.sign_ctx = &sc;
    }
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    sleep_ms(1500);
    js_audit_close(a);
    assert_true(sc.calls >= 3);
    log_stats ls;
    memset(seen, 0, sizeof(*seen));
    read_stats(dir, &ls, late_visit, seen);
    verify_dir(dir, rep);
    tmpdir_remove(dir);
}

static void test_late_checkpoint_signed_evidence(void **state)
{
    (void)state;
    late_seen seen;
    js_audit_verify_report rep;
    /* Slow HSM: the checkpoint after the slow signature is late by about
     * the signing time, and says "sign". */
    run_late(false, &seen, &rep);
    print_message("slow sign: late_ms %lu why %s (%lu ms), %lu late checkpoints\n",
                  (unsigned long)seen.late_ms, seen.why, (unsigned long)seen.why_ms,
                  (unsigned long)seen.late_cps);
    assert_true(seen.late_ms >= 500 && seen.late_ms < 5000);
    assert_string_equal(seen.why, "sign");
    assert_true(seen.why_ms >= 650);
    assert_true(rep.intact); /* the evidence is signed and canonical */
    assert_true(rep.largest_gap_ms >= 600);
    /* Slow disk: the same, "fsync". */
    run_late(true, &seen, &rep);
    print_message("slow fsync: late_ms %lu why %s (%lu ms)\n", (unsigned long)seen.late_ms,
                  seen.why, (unsigned long)seen.why_ms);
    assert_true(seen.late_ms >= 500 && seen.late_ms < 5000);
    assert_string_equal(seen.why, "fsync");
    assert_true(seen.why_ms >= 650);
    assert_true(rep.intact);
}

/* A writer on time writes no late members (old verifiers and logs keep
 * their shape): checkpoints every 100 ms while idle, none late by more than
 * the tolerance unless the machine really was busy, and never many. */
static void test_on_time_checkpoint_has_no_late_members(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.checkpoint_interval_ms = 100;
    o.heartbeat_ms = 100;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    sleep_ms(800);
    js_audit_close(a);
    late_seen seen;
    memset(&seen, 0, sizeof(seen));
    log_stats ls;
    read_stats(dir, &ls, late_visit, &seen);
    assert_true(ls.checkpoints >= 4);
    assert_true(seen.late_cps * 2 < ls.checkpoints);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    assert_int_equal(rep.stalls, 0);
    tmpdir_remove(dir);
}

/* ---- files through a symlink ------------------------------------------------------ */

/* The writer's own checkpoint.json is never read through a symlink (a
 * refusal that changes no file); the files an operator names to the
 * verifier (--checkpoint, --pubkey) are, as before. */
static void test_symlinked_files(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    make_log(dir, 3, &o);
    char cpf[128], copy[128], pem[128], pem_link[128];
    snprintf(cpf, sizeof(cpf), "%s/checkpoint.json", dir);
    snprintf(copy, sizeof(copy), "%s.cp-copy", dir);
    snprintf(pem, sizeof(pem), "%s/audit-key.pem", dir);
    snprintf(pem_link, sizeof(pem_link), "%s.pem-link", dir);
    assert_int_equal(rename(cpf, copy), 0);
    assert_int_equal(symlink(copy, cpf), 0);
    assert_int_equal(symlink(pem, pem_link), 0);

    /* The verifier follows both. */
    uint8_t *payload = NULL;
    size_t len = 0;
    js_audit_checkpoint cp;
    js_err err;
    assert_int_equal(js_audit_checkpoint_load(cpf, &payload, &len, &cp, &err), JS_OK);
    free(payload);
    EVP_PKEY *pub = NULL;
    assert_int_equal(js_audit_pubkey_load(pem_link, &pub, &err), JS_OK);
    EVP_PKEY_free(pub);

    /* The writer does not: it refuses to start and leaves the link. */
    js_audit *a = NULL;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "audit.anchor");
    struct stat sb;
    assert_int_equal(lstat(cpf, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));

    unlink(cpf);
    assert_int_equal(rename(copy, cpf), 0);
    unlink(pem_link);
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    js_audit_close(a);
    tmpdir_remove(dir);
}

/* ---- bounded close ---------------------------------------------------------------- */

/* An fdatasync that hangs (a dead disk) while `stuck`, until `release`. */
typedef struct stuck_disk {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stuck, release, entered;
} stuck_disk;

static int stuck_sync(void *ctx, int fd)
{
    stuck_disk *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->stuck)
        s->entered = true;
    pthread_cond_broadcast(&s->cv);
    while (s->stuck && !s->release)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return fdatasync(fd);
}

/* js_audit_close waits at most close_wait_ms for a writer stuck in
 * fdatasync and says so (nothing freed); called again once the disk is
 * back, it finishes: every record answered, the log intact. */
static void test_close_is_bounded(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    stuck_disk s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    js_audit_io io = {.fdatasync = stuck_sync, .ctx = &s};
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.io = &io;
    o.close_wait_ms = 200;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 2, "before");

    pthread_mutex_lock(&s.mu);
    s.stuck = true;
    pthread_mutex_unlock(&s.mu);
    fc_ctx c;
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    js_audit_event ev = {.type = "sign", .request_id = "stuck", .decision = "allow"};
    assert_int_equal(js_audit_submit(a, &ev, fc_done, &c, &err), JS_OK);
    pthread_mutex_lock(&s.mu);
    while (!s.entered)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);

    int64_t t0 = js_mono_ms();
    assert_false(js_audit_close(a));
    int64_t waited = js_mono_ms() - t0;
    print_message("close with a stuck writer returned after %ld ms\n", (long)waited);
    assert_true(waited >= 150 && waited < 5000);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.done, 0); /* still in flight, not dropped */
    pthread_mutex_unlock(&c.mu);

    pthread_mutex_lock(&s.mu);
    s.release = true;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    assert_true(js_audit_close(a));
    assert_int_equal(c.done, 1);
    assert_int_equal(c.ok, 1);
    js_audit_verify_report rep;
    verify_dir(dir, &rep);
    assert_true(rep.intact);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_commit_concurrent),
        cmocka_unit_test(test_group_commit_expected),
        cmocka_unit_test(test_checkpoints_and_files),
        cmocka_unit_test(test_rotation_chains_segments),
        cmocka_unit_test(test_rate_limit_folding),
        cmocka_unit_test(test_fold_any_denial),
        cmocka_unit_test(test_fold_table_overflow),
        cmocka_unit_test(test_disk_watermark),
        cmocka_unit_test(test_fail_closed_write_enospc),
        cmocka_unit_test(test_fail_closed_fdatasync_eio),
        cmocka_unit_test(test_reopen_torn_tail),
        cmocka_unit_test(test_reopen_refuses_damage),
        cmocka_unit_test(test_reopen_refuses_named_damage),
        cmocka_unit_test(test_accept_loss_records_it),
        cmocka_unit_test(test_lost_denials_counted),
        cmocka_unit_test(test_bad_events_rejected),
        cmocka_unit_test(test_late_checkpoint_signed_evidence),
        cmocka_unit_test(test_on_time_checkpoint_has_no_late_members),
        cmocka_unit_test(test_close_is_bounded),
        cmocka_unit_test(test_symlinked_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
