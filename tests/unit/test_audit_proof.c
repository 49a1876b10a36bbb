/*
 * test_audit_proof.c - inclusion proofs (audit/proof.h) on a log written by
 * the real writer: a proof for a record verifies, also after a round trip
 * through its JSON text; and, first-class, everything that must not: a
 * tampered leaf (payload, copies), a checkpoint signed by another key or
 * altered, a truncated, extended or altered audit path, a moved index or
 * tree size, malformed proofs; and proofs the prover must refuse to build:
 * a jti not in the log, a record not yet covered by a checkpoint, a log
 * without a checkpoint, a sequence gap, a damaged checkpoint, records that
 * do not hash to the checkpoint's root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_audit_util.h"
#include "checkpoint.h"
#include "merkle.h"
#include "proof.h"
#include "reader.h"
#include "record.h"

#define N_RECORDS 60

static test_key g_key, g_other;
static EVP_PKEY *g_pub, *g_other_pub;
static char g_dir[64];

/* A log of N_RECORDS sign records (jti "j0".."j59", plus "dup" on records 3
 * and 7), a checkpoint every 16 records and a closing one. */
static int setup(void **state)
{
    (void)state;
    test_key_init(&g_key);
    test_key_init(&g_other);
    js_err err;
    if (js_audit_pubkey_parse(g_key.pem, &g_pub, &err) != JS_OK ||
        js_audit_pubkey_parse(g_other.pem, &g_other_pub, &err) != JS_OK)
        return -1;
    tmpdir_make(g_dir, sizeof(g_dir));
    js_audit_options o;
    test_opts(&o, g_dir, &g_key);
    o.checkpoint_records = 16;
    o.no_fsync = true;
    js_audit *a = NULL;
    if (js_audit_open(&o, &a, &err) != JS_OK)
        return -1;
    for (int i = 0; i < N_RECORDS; i++) {
        char rid[32], jti[32];
        snprintf(rid, sizeof(rid), "r%d", i);
        snprintf(jti, sizeof(jti), "j%d", i);
        js_audit_event ev = {.type = "sign",
                             .caller = "svc",
                             .request_id = rid,
                             .decision = "allow",
                             .reason = "ok",
                             .jti = i == 3 || i == 7 ? "dup" : jti,
                             .sub = "u"};
        uint64_t seq;
        if (js_audit_append_sync(a, &ev, &seq, &err) != JS_OK)
            return -1;
    }
    js_audit_close(a);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(g_pub);
    EVP_PKEY_free(g_other_pub);
    test_key_free(&g_key);
    test_key_free(&g_other);
    tmpdir_remove(g_dir);
    return 0;
}

/* Feeds every record of the log to p; the status of the first failure.
 * *count (if not NULL): the records fed. */
static js_status feed_log(js_audit_prover *p, uint64_t *count, js_err *err)
{
    char **paths = NULL;
    size_t n = 0;
    assert_int_equal(js_audit_list_segments(g_dir, &paths, &n, err), JS_OK);
    js_audit_reader *r = NULL;
    assert_int_equal(js_audit_reader_new((const char *const *)paths, n, &r, err), JS_OK);
    js_status st = JS_OK;
    for (;;) {
        js_audit_record rec;
        bool end = false;
        assert_int_equal(js_audit_reader_read(r, &rec, &end, err), JS_OK);
        if (end)
            break;
        st = js_audit_prover_add(p, &rec, err);
        if (st != JS_OK)
            break;
        if (count != NULL)
            *count = rec.seq;
    }
    js_audit_reader_free(r);
    js_audit_segments_free(paths, n);
    return st;
}

/* A record made up by the test (not from a log). */
typedef struct fake_record {
    js_audit_record rec;
    char text[512];
} fake_record;

static void fake(fake_record *f, const char *text)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->text, sizeof(f->text), "%s", text);
    json_error_t jerr;
    f->rec.json = json_loads(f->text, 0, &jerr);
    assert_non_null(f->rec.json);
    f->rec.seq = (uint64_t)json_integer_value(json_object_get(f->rec.json, "seq"));
    f->rec.segment = "mem";
    f->rec.type = json_string_value(json_object_get(f->rec.json, "type"));
    f->rec.is_checkpoint = f->rec.type != NULL && strcmp(f->rec.type, "checkpoint") == 0;
    f->rec.payload = (const uint8_t *)f->text;
    f->rec.payload_len = strlen(f->text);
    js_merkle_leaf_hash(f->rec.payload, f->rec.payload_len, f->rec.leaf_hash);
}

static void fake_free(fake_record *f)
{
    json_decref(f->rec.json);
}

/* The proof of jti from the whole log. */
static json_t *prove(const char *jti)
{
    js_audit_prover *p = NULL;
    js_err err;
    assert_int_equal(js_audit_prover_new(jti, &p, &err), JS_OK);
    assert_int_equal(feed_log(p, NULL, &err), JS_OK);
    json_t *doc = NULL;
    assert_int_equal(js_audit_prover_build(p, &doc, &err), JS_OK);
    js_audit_prover_free(p);
    return doc;
}

/* Checks doc with key; returns the verdict, fills *reason when invalid. */
static bool verdict(const json_t *doc, EVP_PKEY *key, js_reason *reason)
{
    js_audit_proof_result res;
    js_err err;
    assert_int_equal(js_audit_proof_check(doc, key, &res, &err), JS_OK);
    bool ok = res.valid;
    if (ok) {
        assert_non_null(res.record);
    } else {
        assert_null(res.record);
        assert_true(res.message[0] != '\0');
        if (reason != NULL)
            *reason = res.reason;
    }
    js_audit_proof_result_cleanup(&res);
    return ok;
}

/* True when doc is refused: malformed, or a check that says it does not verify. */
static bool refused(const json_t *doc, EVP_PKEY *key)
{
    js_audit_proof_result res;
    js_err err;
    js_status st = js_audit_proof_check(doc, key, &res, &err);
    bool ok = st == JS_OK && res.valid;
    js_audit_proof_result_cleanup(&res);
    return !ok;
}

/* A copy of doc with member key set to v (stolen). */
static json_t *with(const json_t *doc, const char *key, json_t *v)
{
    json_t *c = json_deep_copy(doc);
    assert_non_null(c);
    if (v == NULL)
        json_object_del(c, key);
    else
        assert_int_equal(json_object_set_new(c, key, v), 0);
    return c;
}

/* Flips the first hex digit of s (another valid hex digit). */
static json_t *flipped_hex(const char *s)
{
    char buf[JS_AUDIT_HEX_LEN + 1];
    snprintf(buf, sizeof(buf), "%s", s);
    buf[0] = buf[0] == '0' ? '1' : '0';
    return json_string(buf);
}

/* ---- a proof verifies ----------------------------------------------------- */

static void test_proof_verifies(void **state)
{
    (void)state;
    const char *jtis[] = {"j0", "j1", "j15", "j16", "j33", "j58", "j59"};
    for (size_t i = 0; i < sizeof(jtis) / sizeof(jtis[0]); i++) {
        json_t *doc = prove(jtis[i]);
        assert_string_equal(json_string_value(json_object_get(doc, "format")),
                            JS_AUDIT_PROOF_FORMAT);
        /* As an auditor gets it: the JSON text, read back. */
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        assert_non_null(text);
        json_error_t jerr;
        json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
        assert_non_null(back);
        free(text);

        js_audit_proof_result res;
        js_err err;
        assert_int_equal(js_audit_proof_check(back, g_pub, &res, &err), JS_OK);
        assert_true(res.valid);
        assert_string_equal(json_string_value(json_object_get(res.record, "jti")), jtis[i]);
        assert_int_equal(res.seq, json_integer_value(json_object_get(doc, "leaf_index")) + 1);
        assert_int_equal(res.checkpoint.tree_size,
                         json_integer_value(json_object_get(doc, "tree_size")));
        assert_true(res.seq <= res.checkpoint.tree_size);
        assert_string_equal(res.checkpoint.origin, "test.example/audit");
        js_audit_proof_result_cleanup(&res);
        json_decref(back);
        json_decref(doc);
    }
    /* The copies are optional: a proof without them verifies too. */
    json_t *doc = prove("j20");
    json_object_del(doc, "seq");
    json_object_del(doc, "leaf_hash");
    json_object_del(doc, "root");
    assert_true(verdict(doc, g_pub, NULL));
    json_decref(doc);
    js_audit_prover_free(NULL);
    js_audit_proof_result_cleanup(NULL);
}

static void test_duplicate_jti_proves_the_first(void **state)
{
    (void)state;
    js_audit_prover *p = NULL;
    js_err err;
    assert_int_equal(js_audit_prover_new("dup", &p, &err), JS_OK);
    assert_int_equal(feed_log(p, NULL, &err), JS_OK);
    assert_int_equal(js_audit_prover_matches(p), 2);
    uint64_t seq = js_audit_prover_seq(p);
    assert_true(seq > 0);
    json_t *doc = NULL;
    assert_int_equal(js_audit_prover_build(p, &doc, &err), JS_OK);
    assert_int_equal(json_integer_value(json_object_get(doc, "seq")), seq);
    assert_true(strstr(json_string_value(json_object_get(doc, "payload")),
                       "\"request_id\":\"r3\"") != NULL);
    assert_true(verdict(doc, g_pub, NULL));
    json_decref(doc);
    js_audit_prover_free(p);
}

/* ---- proofs that must not verify ------------------------------------------ */

static void test_tampered_leaf(void **state)
{
    (void)state;
    json_t *good = prove("j9");
    const char *payload = json_string_value(json_object_get(good, "payload"));
    char forged[2048];
    assert_true(strlen(payload) < sizeof(forged));
    snprintf(forged, sizeof(forged), "%s", payload);
    char *sub = strstr(forged, "\"sub\":\"u\"");
    assert_non_null(sub);
    sub[7] = 'v';
    js_reason why = JS_R_NONE;

    /* The payload changed, its leaf_hash copy kept: the copy disagrees. */
    json_t *bad = with(good, "payload", json_string(forged));
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_AUDIT_PROOF);
    /* Without the copy: the path no longer leads to the signed root. */
    json_object_del(bad, "leaf_hash");
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_MERKLE_ROOT_MISMATCH);
    json_decref(bad);

    /* The copies must agree with what they copy. */
    bad =
        with(good, "leaf_hash", flipped_hex(json_string_value(json_object_get(good, "leaf_hash"))));
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_AUDIT_PROOF);
    json_decref(bad);
    bad = with(good, "root", flipped_hex(json_string_value(json_object_get(good, "root"))));
    assert_false(verdict(bad, g_pub, NULL));
    json_decref(bad);
    bad = with(good, "seq", json_integer(json_integer_value(json_object_get(good, "seq")) + 1));
    assert_false(verdict(bad, g_pub, NULL));
    json_decref(bad);
    bad = with(good, "seq", json_string("10"));
    assert_false(verdict(bad, g_pub, NULL));
    json_decref(bad);

    /* The leaf bound to another position. */
    bad = with(good, "leaf_index",
               json_integer(json_integer_value(json_object_get(good, "leaf_index")) + 1));
    assert_false(verdict(bad, g_pub, NULL));
    json_decref(bad);
    /* A payload that is no record. */
    bad = with(good, "payload", json_string("[1,2]"));
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_AUDIT_PAYLOAD);
    json_decref(bad);
    json_decref(good);
}

static void test_wrong_checkpoint_signature_or_key(void **state)
{
    (void)state;
    json_t *good = prove("j40");
    js_reason why = JS_R_NONE;
    /* Another key did not sign it. */
    assert_false(verdict(good, g_other_pub, &why));
    assert_int_equal(why, JS_R_AUDIT_BAD_SIGNATURE);

    /* A checkpoint altered after signing: its root, its size, its signature. */
    const char *cptext = json_string_value(json_object_get(good, "checkpoint"));
    json_error_t jerr;
    json_t *cp = json_loads(cptext, 0, &jerr);
    assert_non_null(cp);
    const char *members[] = {"root", "tree_size", "sig", "time"};
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        json_t *c = json_deep_copy(cp);
        json_t *v = json_object_get(c, members[i]);
        if (json_is_integer(v)) {
            json_object_set_new(c, members[i], json_integer(json_integer_value(v) + 1));
        } else {
            char buf[128];
            snprintf(buf, sizeof(buf), "%s", json_string_value(v));
            size_t k = strcmp(members[i], "time") == 0 ? 3 : 0; /* the year's last digit */
            buf[k] = buf[k] == '0' ? '1' : '0';
            json_object_set_new(c, members[i], json_string(buf));
        }
        char *t = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_t *bad = with(good, "checkpoint", json_string(t));
        assert_true(refused(bad, g_pub));
        json_decref(bad);
        free(t);
        json_decref(c);
    }
    json_decref(cp);

    /* The signed members in other bytes (FORMAT.md §7 rule 4). */
    char extra[4096];
    const char *prev = strstr(cptext, ",\"prev\":");
    assert_non_null(prev);
    snprintf(extra, sizeof(extra), "%.*s,\"x\":\"anything\"%s", (int)(prev - cptext), cptext, prev);
    json_t *bad = with(good, "checkpoint", json_string(extra));
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_AUDIT_NONCANONICAL);
    json_decref(bad);

    /* A tree size other than the checkpoint's. */
    bad = with(good, "tree_size",
               json_integer(json_integer_value(json_object_get(good, "tree_size")) + 1));
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_AUDIT_PROOF);
    json_decref(bad);
    json_decref(good);
}

static void test_truncated_or_altered_path(void **state)
{
    (void)state;
    json_t *good = prove("j21");
    const json_t *path = json_object_get(good, "audit_path");
    size_t n = json_array_size(path);
    assert_true(n > 1);
    js_reason why = JS_R_NONE;

    json_t *p = json_deep_copy(path);
    json_array_remove(p, n - 1);
    json_t *bad = with(good, "audit_path", p);
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_MERKLE_BAD_PATH_LEN);
    json_decref(bad);

    bad = with(good, "audit_path", json_array());
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_MERKLE_BAD_PATH_LEN);
    json_decref(bad);

    p = json_deep_copy(path);
    json_array_append_new(p,
                          json_string("0000000000000000000000000000000000000000000000000000000000"
                                      "000000"));
    bad = with(good, "audit_path", p);
    assert_false(verdict(bad, g_pub, &why));
    assert_int_equal(why, JS_R_MERKLE_BAD_PATH_LEN);
    json_decref(bad);

    for (size_t k = 0; k < n; k++) {
        p = json_deep_copy(path);
        json_array_set_new(p, k, flipped_hex(json_string_value(json_array_get(path, k))));
        bad = with(good, "audit_path", p);
        assert_false(verdict(bad, g_pub, &why));
        assert_int_equal(why, JS_R_MERKLE_ROOT_MISMATCH);
        json_decref(bad);
    }
    json_decref(good);
}

static void test_malformed_proofs(void **state)
{
    (void)state;
    json_t *good = prove("j5");
    json_t *long_path = json_array();
    for (int i = 0; i < JS_AUDIT_PROOF_PATH_MAX + 1; i++)
        json_array_append_new(long_path, json_string("000000000000000000000000000000000000000000"
                                                     "0000000000000000000000"));
    json_error_t jerr;
    const struct {
        const char *member;
        json_t *value; /* NULL: the member removed */
        js_reason reason;
    } cases[] = {
        {"format", NULL, JS_R_AUDIT_PROOF},
        {"format", json_string("jwt-audit-inclusion-proof/v2"), JS_R_AUDIT_PROOF},
        {"payload", NULL, JS_R_AUDIT_PROOF},
        {"payload", json_integer(1), JS_R_AUDIT_PROOF},
        {"checkpoint", NULL, JS_R_AUDIT_PROOF},
        {"checkpoint", json_string("not json"), JS_R_AUDIT_PROOF},
        {"checkpoint", json_string("{\"seq\":3,\"type\":\"checkpoint\"}"), JS_R_AUDIT_CHECKPOINT},
        {"leaf_index", NULL, JS_R_AUDIT_PROOF},
        {"leaf_index", json_integer(-1), JS_R_AUDIT_PROOF},
        {"leaf_index", json_string("4"), JS_R_AUDIT_PROOF},
        {"tree_size", json_real(3.5), JS_R_AUDIT_PROOF},
        {"audit_path", NULL, JS_R_AUDIT_PROOF},
        {"audit_path", json_string("zz"), JS_R_AUDIT_PROOF},
        {"audit_path", json_loads("[\"zz\"]", 0, &jerr), JS_R_AUDIT_PROOF},
        {"audit_path", json_loads("[1]", 0, &jerr), JS_R_AUDIT_PROOF},
        {"audit_path", long_path, JS_R_AUDIT_PROOF},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *bad = with(good, cases[i].member, cases[i].value);
        js_audit_proof_result res;
        js_err err;
        assert_int_equal(js_audit_proof_check(bad, g_pub, &res, &err), JS_EINVAL);
        assert_int_equal(err.reason, cases[i].reason);
        assert_false(res.valid);
        if (cases[i].reason == JS_R_AUDIT_CHECKPOINT)
            assert_true(strncmp(err.msg, "checkpoint: ", 12) == 0);
        js_audit_proof_result_cleanup(&res);
        json_decref(bad);
    }
    /* An oversized payload is refused before it is parsed. */
    char *big = malloc(JS_AUDIT_MAX_PAYLOAD + 2);
    memset(big, 'x', JS_AUDIT_MAX_PAYLOAD + 1);
    big[JS_AUDIT_MAX_PAYLOAD + 1] = '\0';
    json_t *bad = with(good, "payload", json_string(big));
    free(big);
    js_audit_proof_result res;
    js_err err;
    assert_int_equal(js_audit_proof_check(bad, g_pub, &res, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_AUDIT_PROOF);
    js_audit_proof_result_cleanup(&res);
    json_decref(bad);
    /* Not an object at all. */
    json_t *arr = json_array();
    assert_int_equal(js_audit_proof_check(arr, g_pub, &res, &err), JS_EINVAL);
    js_audit_proof_result_cleanup(&res);
    json_decref(arr);
    json_decref(good);
}

/* ---- proofs the prover must refuse ---------------------------------------- */

static void test_jti_not_in_log(void **state)
{
    (void)state;
    js_audit_prover *p = NULL;
    js_err err;
    assert_int_equal(js_audit_prover_new("", &p, &err), JS_EINVAL);
    assert_int_equal(js_audit_prover_new("no-such-jti", &p, &err), JS_OK);
    assert_int_equal(feed_log(p, NULL, &err), JS_OK);
    assert_int_equal(js_audit_prover_matches(p), 0);
    assert_int_equal(js_audit_prover_seq(p), 0);
    json_t *doc = NULL;
    assert_int_equal(js_audit_prover_build(p, &doc, &err), JS_ENOTFOUND);
    assert_int_equal(err.reason, JS_R_AUDIT_PROOF);
    assert_non_null(strstr(err.msg, "no-such-jti"));
    assert_null(doc);
    js_audit_prover_free(p);
}

static void test_record_not_yet_covered(void **state)
{
    (void)state;
    js_audit_prover *p = NULL;
    js_err err;
    assert_int_equal(js_audit_prover_new("late", &p, &err), JS_OK);
    uint64_t last = 0;
    assert_int_equal(feed_log(p, &last, &err), JS_OK);
    assert_true(last > N_RECORDS);
    /* A record after the closing checkpoint: no signature covers it yet. */
    char text[256];
    snprintf(text, sizeof(text), "{\"seq\":%llu,\"type\":\"sign\",\"jti\":\"late\"}",
             (unsigned long long)last + 1);
    fake_record f;
    fake(&f, text);
    assert_int_equal(js_audit_prover_add(p, &f.rec, &err), JS_OK);
    fake_free(&f);
    json_t *doc = NULL;
    assert_int_equal(js_audit_prover_build(p, &doc, &err), JS_ESTATE);
    assert_int_equal(err.reason, JS_R_AUDIT_PROOF);
    assert_non_null(strstr(err.msg, "not yet covered"));
    js_audit_prover_free(p);
}

static void test_log_without_checkpoint(void **state)
{
    (void)state;
    js_audit_prover *p = NULL;
    js_err err;
    assert_int_equal(js_audit_prover_new("a", &p, &err), JS_OK);
    fake_record f;
    fake(&f, "{\"seq\":1,\"type\":\"sign\",\"jti\":\"a\"}");
    assert_int_equal(js_audit_prover_add(p, &f.rec, &err), JS_OK);
    fake_free(&f);
    json_t *doc = NULL;
    assert_int_equal(js_audit_prover_build(p, &doc, &err), JS_ESTATE);
    assert_int_equal(err.reason, JS_R_AUDIT_PROOF);
    js_audit_prover_free(p);
}

static void test_sequence_gap_and_bad_checkpoint(void **state)
{
    (void)state;
    js_audit_prover *p = NULL;
    js_err err;
    assert_int_equal(js_audit_prover_new("a", &p, &err), JS_OK);
    fake_record f;
    fake(&f, "{\"seq\":2,\"type\":\"sign\",\"jti\":\"a\"}");
    assert_int_equal(js_audit_prover_add(p, &f.rec, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_AUDIT_SEQ);
    assert_non_null(strstr(err.msg, "seq 2 where 1 was expected"));
    fake_free(&f);
    assert_int_equal(js_audit_prover_matches(p), 0);

    fake(&f, "{\"seq\":1,\"type\":\"checkpoint\",\"root\":\"zz\"}");
    assert_int_equal(js_audit_prover_add(p, &f.rec, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_AUDIT_CHECKPOINT);
    assert_true(strncmp(err.msg, "mem offset 0: checkpoint seq 1: ", 32) == 0);
    fake_free(&f);
    js_audit_prover_free(p);
}

static void test_records_do_not_match_the_checkpoint(void **state)
{
    (void)state;
    /* The log's records, one of them replaced (as a rewritten log would
     * read): the checkpoints after it no longer match. */
    char **paths = NULL;
    size_t n = 0;
    js_err err;
    assert_int_equal(js_audit_list_segments(g_dir, &paths, &n, &err), JS_OK);
    js_audit_reader *r = NULL;
    assert_int_equal(js_audit_reader_new((const char *const *)paths, n, &r, &err), JS_OK);
    js_audit_prover *p = NULL;
    assert_int_equal(js_audit_prover_new("j2", &p, &err), JS_OK);
    for (;;) {
        js_audit_record rec;
        bool end = false;
        assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_OK);
        if (end)
            break;
        if (rec.seq == 5)
            rec.leaf_hash[0] ^= 1;
        assert_int_equal(js_audit_prover_add(p, &rec, &err), JS_OK);
    }
    js_audit_reader_free(r);
    js_audit_segments_free(paths, n);
    json_t *doc = NULL;
    assert_int_equal(js_audit_prover_build(p, &doc, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_AUDIT_ROOT);
    assert_null(doc);
    js_audit_prover_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proof_verifies),
        cmocka_unit_test(test_duplicate_jti_proves_the_first),
        cmocka_unit_test(test_tampered_leaf),
        cmocka_unit_test(test_wrong_checkpoint_signature_or_key),
        cmocka_unit_test(test_truncated_or_altered_path),
        cmocka_unit_test(test_malformed_proofs),
        cmocka_unit_test(test_jti_not_in_log),
        cmocka_unit_test(test_record_not_yet_covered),
        cmocka_unit_test(test_log_without_checkpoint),
        cmocka_unit_test(test_sequence_gap_and_bad_checkpoint),
        cmocka_unit_test(test_records_do_not_match_the_checkpoint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
