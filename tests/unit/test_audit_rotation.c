/*
 * test_audit_rotation.c - audit key rotation (FORMAT.md §5.4): a checkpoint's
 * next_key member in the canonical bytes and the signed body; the writer's
 * js_audit_rotate_key (announce with the old key, sign with the new one,
 * audit-key.pem and audit-key-ID.pem, a restart with the new key); the
 * verifier following the key chain across segments and refusing a key no
 * checkpoint announced, an announcement signed over by another key, and an
 * announced key it was not given.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_audit_util.h"
#include "auditlog.h"
#include "checkpoint.h"
#include "reader.h"
#include "record.h"
#include "verify.h"

static test_key g_a, g_b, g_c;

static int setup(void **state)
{
    (void)state;
    test_key_init(&g_a);
    test_key_init(&g_b);
    test_key_init(&g_c);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_key_free(&g_a);
    test_key_free(&g_b);
    test_key_free(&g_c);
    return 0;
}

static void key_id(test_key *k, char *out)
{
    js_err err;
    assert_int_equal(js_audit_pubkey_id(k->pkey, out, &err), JS_OK);
    assert_int_equal(strlen(out), JS_AUDIT_KEY_ID_LEN);
}

static void sample_cp(js_audit_checkpoint *cp)
{
    memset(cp, 0, sizeof(*cp));
    cp->seq = 5;
    cp->tree_size = 4;
    snprintf(cp->origin, sizeof(cp->origin), "test.example/audit");
    snprintf(cp->time, sizeof(cp->time), "2026-01-02T03:04:05.678Z");
    assert_true(js_audit_time_parse(cp->time, &cp->time_ms));
    snprintf(cp->reason, sizeof(cp->reason), "interval");
    memset(cp->root, 0x11, 32);
    memset(cp->head, 0x22, 32);
    memset(cp->prev_checkpoint, 0x33, 32);
    cp->heartbeat_ms = 1000;
    cp->interval_ms = 1000;
}

static void sign_cp(js_audit_checkpoint *cp, test_key *k)
{
    char *body = NULL;
    size_t blen = 0;
    js_err err;
    assert_int_equal(js_audit_checkpoint_body(cp, &body, &blen, &err), JS_OK);
    assert_int_equal(
        test_sign(k, (const uint8_t *)body, blen, cp->sig, sizeof(cp->sig), &cp->sig_len, &err),
        JS_OK);
    free(body);
}

/* next_key round-trips through the canonical bytes and is the signed body's
 * last line; without it neither the bytes nor the body change. */
static void test_next_key_canonical_and_signed(void **state)
{
    (void)state;
    js_audit_checkpoint cp;
    sample_cp(&cp);
    sign_cp(&cp, &g_a);
    char *plain_body = NULL;
    size_t plain_len = 0;
    js_err err;
    assert_int_equal(js_audit_checkpoint_body(&cp, &plain_body, &plain_len, &err), JS_OK);
    assert_null(strstr(plain_body, "next_key"));
    char buf[4096];
    size_t len = 0;
    assert_int_equal(js_audit_checkpoint_payload(&cp, buf, sizeof(buf), &len, &err), JS_OK);
    buf[len] = '\0';
    assert_null(strstr(buf, "next_key"));

    key_id(&g_b, cp.next_key);
    sign_cp(&cp, &g_a);
    char *body = NULL;
    size_t blen = 0;
    assert_int_equal(js_audit_checkpoint_body(&cp, &body, &blen, &err), JS_OK);
    char line[128];
    snprintf(line, sizeof(line), "next_key %s\n", cp.next_key);
    assert_true(blen > strlen(line));
    assert_string_equal(body + blen - strlen(line), line);
    assert_int_equal(memcmp(body, plain_body, plain_len), 0);
    free(body);
    free(plain_body);

    assert_int_equal(js_audit_checkpoint_payload(&cp, buf, sizeof(buf), &len, &err), JS_OK);
    buf[len] = '\0';
    char member[128];
    snprintf(member, sizeof(member), ",\"next_key\":\"%s\",\"sig\":", cp.next_key);
    assert_non_null(strstr(buf, member));
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    js_audit_checkpoint back;
    assert_int_equal(js_audit_checkpoint_parse(j, &back, &err), JS_OK);
    assert_string_equal(back.next_key, cp.next_key);
    assert_int_equal(js_audit_checkpoint_check_canonical(&back, (const uint8_t *)buf, len, &err),
                     JS_OK);
    assert_int_equal(js_audit_checkpoint_verify_sig(&back, g_a.pkey, &err), JS_OK);
    assert_int_not_equal(js_audit_checkpoint_verify_sig(&back, g_b.pkey, &err), JS_OK);
    /* next_key changed or removed: not what was signed. */
    back.next_key[0] = back.next_key[0] == 'A' ? 'B' : 'A';
    assert_int_equal(js_audit_checkpoint_verify_sig(&back, g_a.pkey, &err), JS_EINVAL);
    back.next_key[0] = '\0';
    assert_int_equal(js_audit_checkpoint_verify_sig(&back, g_a.pkey, &err), JS_EINVAL);

    /* Malformed ids are refused: short, long, not base64url, not a string. */
    const char *bad[] = {"abc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object_set_new(j, "next_key", json_string(bad[i]));
        assert_int_equal(js_audit_checkpoint_parse(j, &back, &err), JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), "audit.checkpoint");
    }
    json_object_set_new(j, "next_key", json_integer(7));
    assert_int_equal(js_audit_checkpoint_parse(j, &back, &err), JS_EINVAL);
    json_decref(j);
}

/* A sign callback that changes keys after `after` signatures, announcing
 * nothing: what a writer using an unannounced key would produce. */
typedef struct switch_signer {
    test_key *first, *then;
    int n, after;
} switch_signer;

static js_status switch_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                             size_t *sig_len, js_err *err)
{
    switch_signer *s = ctx;
    test_key *k = s->n++ < s->after ? s->first : s->then;
    return test_sign(k, msg, len, sig, cap, sig_len, err);
}

static void write_pem(const char *dir, const char *name, const char *pem)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    file_write(p, (const uint8_t *)pem, strlen(pem));
}

/* Verifies DIR with first key `first` (a PEM file written for it) and the
 * extra key files given. */
static void verify_dir(const char *dir, test_key *first, const char *const *keys, size_t nkeys,
                       bool with_cp_file, js_audit_verify_report *rep)
{
    char pk[256];
    snprintf(pk, sizeof(pk), "%s.first.pem", dir);
    file_write(pk, (const uint8_t *)first->pem, strlen(first->pem));
    test_verify_dir(dir, pk, keys, nkeys, with_cp_file, 3600000, rep);
    unlink(pk);
}

/* Old -> new across segments and a restart: the writer announces B with A,
 * signs with B after; reopened with B it keeps B. The verifier given A and
 * B's file follows the chain; checkpoint.json (signed by B) matches. */
static void test_rotation_across_segments_and_restart(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_a);
    o.segment_bytes = 2048;
    o.checkpoint_records = 5;
    o.checkpoint_interval_ms = 3600000;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 12, "before");
    char id_b[JS_AUDIT_KEY_ID_LEN + 1], id_a[JS_AUDIT_KEY_ID_LEN + 1];
    key_id(&g_a, id_a);
    key_id(&g_b, id_b);
    char got[JS_AUDIT_KEY_ID_LEN + 1] = "";
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, g_b.pem, 10000, got, &err), JS_OK);
    assert_string_equal(got, id_b);
    /* The same key again is refused. */
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, g_b.pem, 10000, NULL, &err),
                     JS_EINVAL);
    submit_n(a, 12, "after");
    js_audit_close(a);

    /* audit-key.pem is B; both keys are kept by id. */
    char p[256];
    size_t len = 0;
    snprintf(p, sizeof(p), "%s/audit-key.pem", dir);
    uint8_t *cur = file_read(p, &len);
    assert_non_null(cur);
    assert_string_equal((char *)cur, g_b.pem);
    free(cur);
    char key_a[256], key_b[256];
    snprintf(key_a, sizeof(key_a), "%s/audit-key-%s.pem", dir, id_a);
    snprintf(key_b, sizeof(key_b), "%s/audit-key-%s.pem", dir, id_b);
    assert_int_equal(access(key_a, R_OK), 0);
    assert_int_equal(access(key_b, R_OK), 0);

    /* Restart with B (A would be refused: the log announced B). */
    js_audit_options o2 = o;
    o2.sign_ctx = &g_a;
    o2.pubkey_pem = g_a.pem;
    a = NULL;
    assert_int_equal(js_audit_open(&o2, &a, &err), JS_ECONFIG);
    test_opts(&o2, dir, &g_b);
    o2.segment_bytes = 2048;
    o2.checkpoint_records = 5;
    o2.checkpoint_interval_ms = 3600000;
    assert_int_equal(js_audit_open(&o2, &a, &err), JS_OK);
    submit_n(a, 12, "restarted");
    js_audit_close(a);

    char **paths = NULL;
    size_t n = 0;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    assert_true(n >= 3); /* the rotation is followed across segments */
    js_audit_segments_free(paths, n);

    js_audit_verify_report rep;
    const char *keys[] = {key_b};
    verify_dir(dir, &g_a, keys, 1, true, &rep);
    assert_true(rep.intact);
    assert_int_equal(rep.key_changes, 1);
    assert_int_equal(rep.restarts, 1);
    assert_true(rep.checkpoint_file_matched);

    /* Without B's key the announcement cannot be followed. */
    verify_dir(dir, &g_a, NULL, 0, false, &rep);
    assert_false(rep.intact);
    assert_string_equal(js_reason_name(rep.reason), "audit.key_unknown");
    /* Starting from B skips nothing: A's checkpoints do not verify with B. */
    verify_dir(dir, &g_b, NULL, 0, false, &rep);
    assert_false(rep.intact);
    assert_string_equal(js_reason_name(rep.reason), "audit.bad_signature");
    tmpdir_remove(dir);
}

/* A checkpoint signed by a key no checkpoint announced fails, even when
 * that key is among those given. */
static void test_unannounced_key_fails(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    switch_signer sw = {.first = &g_a, .then = &g_b, .after = 3};
    test_opts(&o, dir, &g_a);
    o.sign = switch_sign;
    o.sign_ctx = &sw;
    o.checkpoint_records = 5;
    o.checkpoint_interval_ms = 3600000;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 30, "r");
    js_audit_close(a);
    write_pem(dir, "b.pem.keys", g_b.pem);
    char kb[256];
    snprintf(kb, sizeof(kb), "%s/b.pem.keys", dir);
    const char *keys[] = {kb};
    js_audit_verify_report rep;
    verify_dir(dir, &g_a, keys, 1, false, &rep);
    assert_false(rep.intact);
    assert_string_equal(js_reason_name(rep.reason), "audit.bad_signature");
    assert_int_equal(rep.checkpoints, 3);
    assert_int_equal(rep.key_changes, 0);
    tmpdir_remove(dir);
}

/* next_key announces C, but the checkpoints after it are signed by B: they
 * fail although B is given. */
static void test_announced_x_signed_by_y_fails(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_a);
    o.checkpoint_records = 5;
    o.checkpoint_interval_ms = 3600000;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 7, "before");
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, g_c.pem, 10000, NULL, &err), JS_OK);
    submit_n(a, 7, "after");
    js_audit_close(a);
    write_pem(dir, "bc.keys", g_b.pem);
    char p[256];
    snprintf(p, sizeof(p), "%s/bc.keys", dir);
    FILE *f = fopen(p, "ab");
    assert_non_null(f);
    fputs(g_c.pem, f); /* a keys file with two keys */
    fclose(f);
    const char *keys[] = {p};
    js_audit_verify_report rep;
    verify_dir(dir, &g_a, keys, 1, false, &rep);
    assert_false(rep.intact);
    assert_string_equal(js_reason_name(rep.reason), "audit.bad_signature");
    assert_int_equal(rep.key_changes, 1);
    tmpdir_remove(dir);
}

/* Misuse: no new key, a log without a public key. */
static void test_rotate_refusals(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_a);
    o.pubkey_pem = NULL;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, NULL, 1000, NULL, &err), JS_EINVAL);
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, "not a key", 1000, NULL, &err),
                     JS_EINVAL);
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, g_b.pem, 1000, NULL, &err), JS_ESTATE);
    js_audit_close(a);
    tmpdir_remove(dir);
}

/* The old key's signer, held while `slow` is set (at most 10 s): the
 * announcing checkpoint is not durable until the test lets it be. */
typedef struct slow_key {
    const test_key *key;
    atomic_bool slow;
} slow_key;

static js_status slow_sign(void *ctx, const uint8_t *msg, size_t len, uint8_t *sig, size_t cap,
                           size_t *sig_len, js_err *err)
{
    slow_key *k = ctx;
    for (int i = 0; i < 1000 && atomic_load(&k->slow); i++)
        sleep_ms(10);
    return test_sign((void *)k->key, msg, len, sig, cap, sig_len, err);
}

/* The on_key_rotated hook's count. */
static void count_rotation(void *ctx)
{
    atomic_fetch_add((atomic_int *)ctx, 1);
}

static bool one_rotation(void *ctx)
{
    return atomic_load((atomic_int *)ctx) >= 1;
}

/* A log signed by A through sk, counting rotations in *count, three records
 * in it, and a rotation to B left pending: A's signer is held (sk->slow)
 * past the call's 20 ms wait, and still held when this returns. */
static js_audit *open_pending(const char *dir, slow_key *sk, atomic_int *count)
{
    atomic_init(&sk->slow, false);
    atomic_init(count, 0);
    js_audit_options o;
    test_opts(&o, dir, &g_a);
    o.sign = slow_sign;
    o.sign_ctx = sk;
    o.checkpoint_interval_ms = 3600000;
    o.heartbeat_ms = 3600000;
    o.on_key_rotated = count_rotation;
    o.on_key_rotated_ctx = count;
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    submit_n(a, 3, "before");
    atomic_store(&sk->slow, true);
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_b, g_b.pem, 20, NULL, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "audit.rotate_pending");
    return a;
}

static void assert_audit_key(const char *dir, const char *pem)
{
    char p[256];
    size_t len = 0;
    snprintf(p, sizeof(p), "%s/audit-key.pem", dir);
    uint8_t *cur = file_read(p, &len);
    assert_non_null(cur);
    assert_string_equal((char *)cur, pem);
    free(cur);
}

/* A rotation not durable within the call's wait: JS_EUNAVAIL
 * audit.rotate_pending, still queued; on_key_rotated is called when the
 * writer makes it durable (what the signer counts to finish it), a second
 * rotation is refused while it is pending, and an on-time rotation is
 * counted before js_audit_rotate_key returns JS_OK. */
static void test_pending_rotation_counted(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    slow_key sk = {.key = &g_a};
    atomic_int count;
    js_audit *a = open_pending(dir, &sk, &count);
    js_err err;
    /* One at a time: a second is refused while the first is pending. */
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_c, g_c.pem, 20, NULL, &err), JS_ESTATE);
    assert_int_equal(atomic_load(&count), 0);
    atomic_store(&sk.slow, false); /* the HSM answers again */
    assert_true(test_poll_until(one_rotation, &count, 10000));
    assert_int_equal(atomic_load(&count), 1);
    /* On time: counted when the call returns. */
    assert_int_equal(js_audit_rotate_key(a, test_sign, &g_c, g_c.pem, 10000, NULL, &err), JS_OK);
    assert_int_equal(atomic_load(&count), 2);
    js_audit_close(a);
    assert_audit_key(dir, g_c.pem);
    tmpdir_remove(dir);
}

/* A rotation still pending when close is called is counted before
 * js_audit_close returns, whichever checkpoint made it durable (the held
 * one, or the closing one that announces a rotation still pending): the
 * signer finishes it then. */
static void test_pending_rotation_closed(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    slow_key sk = {.key = &g_a};
    atomic_int count;
    js_audit *a = open_pending(dir, &sk, &count);
    atomic_store(&sk.slow, false);
    assert_true(js_audit_close(a));
    assert_int_equal(atomic_load(&count), 1);
    assert_audit_key(dir, g_b.pem);
    tmpdir_remove(dir);
}

/* The key files a verifier finds next to the log (FORMAT.md §5.4): only
 * audit-key-*.pem, appended to the keys already given, at most
 * JS_AUDIT_KEYS_MAX in all; a directory that cannot be opened adds none. */
static void test_key_files_near(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    static const char *const names[] = {"audit-key-AAAA.pem", "audit-key-BBBB.pem",
                                        "audit-key.pem",      "audit-key-CCCC.pem.tmp.1.0",
                                        "other.pem",          "audit-000001.log"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        write_pem(dir, names[i], "x");
    char seg[128];
    snprintf(seg, sizeof(seg), "%s/audit-000001.log", dir);
    char **paths = calloc(1, sizeof(*paths));
    assert_non_null(paths);
    paths[0] = strdup("given.pem");
    size_t n = 1;
    js_err err;
    assert_int_equal(js_audit_key_files_near(seg, &paths, &n, &err), JS_OK);
    assert_int_equal(n, 3);
    assert_string_equal(paths[0], "given.pem");
    for (size_t i = 1; i < n; i++)
        assert_non_null(strstr(paths[i], "/audit-key-"));
    /* No directory: nothing added. */
    assert_int_equal(js_audit_key_files_near("/nonexistent-dir/audit-000001.log", &paths, &n, &err),
                     JS_OK);
    assert_int_equal(n, 3);
    js_audit_segments_free(paths, n);

    /* Over the limit in all: refused, naming the directory. */
    paths = calloc(JS_AUDIT_KEYS_MAX, sizeof(*paths));
    assert_non_null(paths);
    for (n = 0; n < JS_AUDIT_KEYS_MAX - 1; n++)
        paths[n] = strdup("given.pem");
    assert_int_equal(js_audit_key_files_near(seg, &paths, &n, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "audit.pubkey");
    assert_non_null(strstr(err.msg, "more than"));
    assert_int_equal(n, JS_AUDIT_KEYS_MAX);
    js_audit_segments_free(paths, n);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_key_canonical_and_signed),
        cmocka_unit_test(test_rotation_across_segments_and_restart),
        cmocka_unit_test(test_unannounced_key_fails),
        cmocka_unit_test(test_announced_x_signed_by_y_fails),
        cmocka_unit_test(test_rotate_refusals),
        cmocka_unit_test(test_pending_rotation_counted),
        cmocka_unit_test(test_pending_rotation_closed),
        cmocka_unit_test(test_key_files_near),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
