/*
 * test_audit_format.c - the on-disk format (audit/FORMAT.md): frame
 * encode/decode round trip, the length bound and CRC (which covers the
 * length), canonical payload bytes, the hash chain, time and hex encodings,
 * checkpoint parsing, signed body and signature check, and the reader's
 * handling of short, oversized and non-JSON frames. The one-pass body
 * encoder is held byte for byte to a copy of the former jansson one over
 * generated events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <openssl/sha.h>

#include "test_audit_util.h"
#include "checkpoint.h"
#include "hex.h"
#include "merkle.h"
#include "reader.h"
#include "record.h"
#include "test_jsongen.h"
#include "verify.h"
#include "clock.h"

/* Appends a frame for payload to buf at *len. */
static void put_frame(uint8_t *buf, size_t *len, const char *payload)
{
    size_t pl = strlen(payload);
    js_audit_frame_header((const uint8_t *)payload, (uint32_t)pl, buf + *len);
    memcpy(buf + *len + JS_AUDIT_FRAME_HDR, payload, pl);
    *len += JS_AUDIT_FRAME_HDR + pl;
}

static void test_frame_round_trip(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t len = 0;
    put_frame(buf, &len, "{\"seq\":1}");
    assert_int_equal(len, 8 + 9);
    /* u32le length */
    assert_int_equal(buf[0], 9);
    assert_int_equal(buf[1] | buf[2] | buf[3], 0);
    size_t pl = 0;
    assert_int_equal(js_audit_frame_decode(buf, len, &pl, NULL), JS_OK);
    assert_int_equal(pl, 9);
    assert_memory_equal(buf + 8, "{\"seq\":1}", 9);
}

static void test_frame_rejects(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t len = 0, pl = 0;
    js_err err;
    put_frame(buf, &len, "{\"seq\":1,\"type\":\"x\"}");
    /* short header / short payload */
    assert_int_equal(js_audit_frame_decode(buf, 7, &pl, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "audit.framing");
    assert_int_equal(js_audit_frame_decode(buf, len - 1, &pl, &err), JS_EINVAL);
    /* CRC mismatch in the payload, in the CRC itself */
    buf[10] ^= 1;
    assert_int_equal(js_audit_frame_decode(buf, len, &pl, &err), JS_EINVAL);
    assert_non_null(strstr(err.msg, "CRC"));
    buf[10] ^= 1;
    buf[5] ^= 1;
    assert_int_equal(js_audit_frame_decode(buf, len, &pl, &err), JS_EINVAL);
    buf[5] ^= 1;
    /* The CRC covers the length: a smaller length that still fits fails. */
    buf[0] -= 1;
    assert_int_equal(js_audit_frame_decode(buf, len, &pl, &err), JS_EINVAL);
    assert_non_null(strstr(err.msg, "CRC"));
    buf[0] += 1;
    /* Lengths out of bounds are refused before anything is read for them. */
    uint8_t big[8] = {0x01, 0x00, 0x01, 0x00, 0, 0, 0, 0}; /* 65537 */
    assert_int_equal(js_audit_frame_decode(big, sizeof(big), &pl, &err), JS_EINVAL);
    assert_non_null(strstr(err.msg, "outside"));
    uint8_t huge[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    assert_int_equal(js_audit_frame_decode(huge, sizeof(huge), &pl, &err), JS_EINVAL);
    uint8_t zero[16] = {0};
    assert_int_equal(js_audit_frame_decode(zero, sizeof(zero), &pl, &err), JS_EINVAL);
    assert_int_equal(js_audit_frame_decode(buf, len, &pl, &err), JS_OK);
}

static void test_event_canonical(void **state)
{
    (void)state;
    js_audit_event ev = {.type = "sign",
                         .caller = "spiffe://x",
                         .peer = "ipv4:1.2.3.4:5",
                         .request_id = "r1",
                         .decision = "allow",
                         .reason = "ok",
                         .key = "main",
                         .kid = "k1",
                         .alg = "ES256",
                         .jti = "j1",
                         .sub = "s\"q",
                         .aud_json = "[\"a\", \"b\"]",
                         .iat = 10,
                         .exp = 20,
                         .scopes = "read",
                         .token_sha256 = "ab",
                         .policy_hash = "cd",
                         .detail_json = "{\"x\": 1}"};
    char *body = NULL;
    js_err err;
    assert_int_equal(js_audit_event_body(&ev, 3, &body, &err), JS_OK);
    assert_string_equal(body,
                        "\"type\":\"sign\",\"caller\":\"spiffe://x\",\"peer\":\"ipv4:1.2.3.4:5\","
                        "\"request_id\":\"r1\",\"decision\":\"allow\",\"reason\":\"ok\","
                        "\"key\":\"main\",\"kid\":\"k1\",\"alg\":\"ES256\",\"jti\":\"j1\","
                        "\"sub\":\"s\\\"q\",\"aud\":[\"a\",\"b\"],\"iat\":10,\"exp\":20,"
                        "\"scopes\":\"read\",\"token_sha256\":\"ab\",\"policy_hash\":\"cd\","
                        "\"count\":3,\"detail\":{\"x\":1}");
    uint8_t prev[32];
    memset(prev, 0, sizeof(prev));
    char out[JS_AUDIT_MAX_PAYLOAD + 1];
    size_t len = 0;
    assert_int_equal(js_audit_payload_assemble(7, "2024-01-02T03:04:05.678Z", body, prev, out,
                                               sizeof(out), &len, &err),
                     JS_OK);
    assert_int_equal(len, strlen(out));
    assert_true(strncmp(out, "{\"seq\":7,\"time\":\"2024-01-02T03:04:05.678Z\",\"type\":", 50) ==
                0);
    assert_non_null(strstr(out, ",\"prev\":\"0000000000000000000000000000000000000000000000000"
                                "000000000000000\"}"));
    json_t *j = json_loadb(out, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    json_decref(j);
    free(body);
    /* Only type is mandatory; absent members are omitted. */
    js_audit_event min = {.type = "start"};
    assert_int_equal(js_audit_event_body(&min, 0, &body, &err), JS_OK);
    assert_string_equal(body, "\"type\":\"start\"");
    free(body);
    js_audit_event bad = {.type = "x", .detail_json = "[1]"};
    assert_int_equal(js_audit_event_body(&bad, 0, &body, &err), JS_EINVAL);
    /* Invalid UTF-8 is recorded as U+FFFD, never a lost record. */
    js_audit_event badutf = {.type = "x", .caller = "\xff\xfe"};
    assert_int_equal(js_audit_event_body(&badutf, 0, &body, &err), JS_OK);
    assert_non_null(strstr(body, "\"caller\":\"\xef\xbf\xbd\xef\xbf\xbd\""));
    free(body);
    body = NULL;
}

static void test_time_and_hex(void **state)
{
    (void)state;
    char t[25];
    js_wall_format(0, t);
    assert_string_equal(t, "1970-01-01T00:00:00.000Z");
    js_wall_format(1704164645678, t);
    assert_string_equal(t, "2024-01-02T03:04:05.678Z");
    int64_t ms = 0;
    assert_true(js_audit_time_parse(t, &ms));
    assert_int_equal(ms, 1704164645678);
    assert_true(js_audit_time_parse("2000-02-29T23:59:59.999Z", &ms));
    js_wall_format(ms, t);
    assert_string_equal(t, "2000-02-29T23:59:59.999Z");
    assert_false(js_audit_time_parse("2024-01-02T03:04:05Z", &ms));
    assert_false(js_audit_time_parse("2024-13-02T03:04:05.678Z", &ms));
    assert_false(js_audit_time_parse("2024-01-02 03:04:05.678Z", &ms));
    assert_false(js_audit_time_parse("2024-01-02T03:04:05.678+00:00", &ms));
    uint8_t b[2] = {0xAB, 0x01}, o[2];
    char h[5];
    js_hex_encode(b, 2, h);
    assert_string_equal(h, "ab01");
    assert_true(js_audit_unhex("ab01", 4, o, 2));
    assert_memory_equal(o, b, 2);
    assert_false(js_audit_unhex("AB01", 4, o, 2)); /* upper case is not canonical */
    assert_false(js_audit_unhex("ab0", 3, o, 2));
    assert_false(js_audit_unhex("ab0g", 4, o, 2));
}

/* Builds a tiny valid log in memory by hand, from FORMAT.md alone: this is
 * what an independent verifier would do. */
static size_t hand_log(uint8_t *buf, test_key *k, bool break_chain)
{
    size_t len = 0;
    uint8_t prev[32], leaf[32];
    memset(prev, 0, 32);
    js_merkle_frontier tree;
    js_merkle_frontier_init(&tree);
    char payload[1024], hex[65];
    for (int seq = 1; seq <= 3; seq++) {
        js_hex_encode(prev, 32, hex);
        if (break_chain && seq == 3)
            hex[0] = hex[0] == '0' ? '1' : '0';
        snprintf(payload, sizeof(payload),
                 "{\"seq\":%d,\"time\":\"2024-01-01T00:00:0%d.000Z\",\"type\":\"sign\","
                 "\"decision\":\"allow\",\"prev\":\"%s\"}",
                 seq, seq, hex);
        put_frame(buf, &len, payload);
        SHA256((const uint8_t *)payload, strlen(payload), prev);
        js_merkle_leaf_hash((const uint8_t *)payload, strlen(payload), leaf);
        js_merkle_frontier_append(&tree, leaf);
    }
    js_audit_checkpoint cp;
    memset(&cp, 0, sizeof(cp));
    cp.seq = 4;
    cp.tree_size = 3;
    snprintf(cp.origin, sizeof(cp.origin), "hand");
    snprintf(cp.time, sizeof(cp.time), "2024-01-01T00:00:04.000Z");
    snprintf(cp.reason, sizeof(cp.reason), "close");
    js_merkle_frontier_root(&tree, cp.root);
    memcpy(cp.head, prev, 32);
    cp.heartbeat_ms = 1000;
    cp.interval_ms = 1000;
    char *body = NULL;
    size_t blen = 0;
    js_err err;
    assert_int_equal(js_audit_checkpoint_body(&cp, &body, &blen, &err), JS_OK);
    assert_true(strncmp(body, "jwt-signer-audit-checkpoint/v1\norigin hand\nseq 4\ntree_size 3\n",
                        60) == 0);
    assert_int_equal(
        test_sign(k, (const uint8_t *)body, blen, cp.sig, sizeof(cp.sig), &cp.sig_len, &err),
        JS_OK);
    free(body);
    char *members = NULL;
    assert_int_equal(js_audit_checkpoint_members(&cp, &members, &err), JS_OK);
    js_hex_encode(prev, 32, hex);
    snprintf(payload, sizeof(payload), "{\"seq\":4,\"time\":\"%s\",%s,\"prev\":\"%s\"}", cp.time,
             members, hex);
    free(members);
    put_frame(buf, &len, payload);
    return len;
}

static void test_chain_and_checkpoint(void **state)
{
    (void)state;
    test_key k;
    test_key_init(&k);
    char dir[64], pem[128];
    tmpdir_make(dir, sizeof(dir));
    snprintf(pem, sizeof(pem), "%s/key.pem", dir);
    file_write(pem, (const uint8_t *)k.pem, strlen(k.pem));
    uint8_t buf[4096];
    size_t len = hand_log(buf, &k, false);
    js_audit_segment_mem m = {.name = "mem", .data = buf, .len = len};
    js_audit_verify_opts vo = {.mem = &m, .n_mem = 1, .pubkey_path = pem};
    js_audit_verify_report rep;
    js_err err;
    assert_int_equal(js_audit_verify(&vo, &rep, &err), JS_OK);
    if (!rep.intact)
        fail_msg("%s: %s", js_reason_name(rep.reason), rep.message);
    assert_int_equal(rep.records, 4);
    assert_int_equal(rep.checkpoints, 1);
    assert_int_equal(rep.latest.tree_size, 3);
    assert_int_equal(rep.unsigned_tail, 0);

    /* A broken chain at seq 3 (valid CRC) is tampering at seq 3. */
    len = hand_log(buf, &k, true);
    m.len = len;
    assert_int_equal(js_audit_verify(&vo, &rep, &err), JS_OK);
    assert_false(rep.intact);
    assert_int_equal(rep.damage, JS_AUDIT_DAMAGE_TAMPER);
    assert_int_equal(rep.bad_seq, 3);
    assert_string_equal(js_reason_name(rep.reason), "audit.chain");

    /* Another key: the checkpoint signature fails. */
    test_key other;
    test_key_init(&other);
    file_write(pem, (const uint8_t *)other.pem, strlen(other.pem));
    len = hand_log(buf, &k, false);
    m.len = len;
    assert_int_equal(js_audit_verify(&vo, &rep, &err), JS_OK);
    assert_false(rep.intact);
    assert_string_equal(js_reason_name(rep.reason), "audit.bad_signature");
    assert_int_equal(rep.bad_seq, 4);
    test_key_free(&other);
    tmpdir_remove(dir);
    test_key_free(&k);
}

static void test_reader_framing_errors(void **state)
{
    (void)state;
    uint8_t buf[512];
    size_t len = 0;
    put_frame(buf, &len, "{\"seq\":1,\"type\":\"a\"}");
    size_t first = len;
    put_frame(buf, &len, "{\"seq\":2,\"type\":\"b\"}");
    js_audit_segment_mem m = {.name = "seg", .data = buf, .len = len};
    js_audit_reader *r = NULL;
    js_err err;
    js_audit_record rec;
    bool end = false;
    assert_int_equal(js_audit_reader_new_mem(&m, 1, &r, &err), JS_OK);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_OK);
    assert_int_equal(rec.seq, 1);
    assert_int_equal(rec.offset, 0);
    assert_string_equal(rec.type, "a");
    assert_false(rec.is_checkpoint);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_OK);
    assert_int_equal(rec.offset, first);
    assert_false(end);
    /* The end is a return value, not an error, and stays the end. */
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_OK);
    assert_true(end);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_OK);
    assert_true(end);
    js_audit_reader_free(r);

    /* Torn tail: the last frame is short; nothing valid after. */
    m.len = len - 3;
    assert_int_equal(js_audit_reader_new_mem(&m, 1, &r, &err), JS_OK);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_OK);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_EINVAL);
    const js_audit_read_error *re = js_audit_reader_error(r);
    assert_non_null(re);
    assert_true(re->torn_tail);
    assert_int_equal(re->offset, first);
    js_audit_reader_free(r);

    /* Damage in the first frame with a valid frame after it: not torn. */
    buf[9] ^= 1;
    m.len = len;
    assert_int_equal(js_audit_reader_new_mem(&m, 1, &r, &err), JS_OK);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_EINVAL);
    assert_false(js_audit_reader_error(r)->torn_tail);
    js_audit_reader_free(r);
    buf[9] ^= 1;

    /* Valid CRC but not a record: tampering, never a torn write. */
    len = 0;
    put_frame(buf, &len, "[1,2,3]");
    m.len = len;
    assert_int_equal(js_audit_reader_new_mem(&m, 1, &r, &err), JS_OK);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "audit.payload");
    assert_false(js_audit_reader_error(r)->torn_tail);
    js_audit_reader_free(r);
    len = 0;
    put_frame(buf, &len, "{\"seq\":1,\"seq\":2,\"type\":\"a\"}"); /* duplicate member */
    m.len = len;
    assert_int_equal(js_audit_reader_new_mem(&m, 1, &r, &err), JS_OK);
    assert_int_equal(js_audit_reader_read(r, &rec, &end, &err), JS_EINVAL);
    js_audit_reader_free(r);
}

static void test_checkpoint_parse_rejects(void **state)
{
    (void)state;
    js_audit_checkpoint cp;
    js_err err;
    const char *bad[] = {
        "{\"seq\":2,\"type\":\"checkpoint\"}",
        "{\"seq\":2,\"time\":\"2024-01-01T00:00:00.000Z\",\"type\":\"checkpoint\",\"reason\":"
        "\"open\",\"origin\":\"o\",\"tree_size\":5,\"root\":\"00\",\"prev\":\"00\"}",
        "{\"seq\":1,\"time\":\"2024-01-01T00:00:00.000Z\",\"type\":\"checkpoint\",\"reason\":"
        "\"bogus\",\"origin\":\"o\",\"tree_size\":0}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        assert_non_null(j);
        assert_int_equal(js_audit_checkpoint_parse(j, &cp, &err), JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), "audit.checkpoint");
        json_decref(j);
    }
    assert_true(js_audit_origin_valid("jwt-signer.prod/eu-1"));
    assert_false(js_audit_origin_valid(""));
    assert_false(js_audit_origin_valid("a b"));
    assert_false(js_audit_origin_valid("a\nb"));
}

/* FORMAT.md §5.1/§5.2: the late members are optional, come in the stated
 * combinations, are re-serialised in place (between interval_ms and sig)
 * and are part of the signed body; malformed ones are refused. */
static char *late_cp(const char *late)
{
    char zeros[65], sig[87];
    memset(zeros, '0', 64);
    zeros[64] = '\0';
    memset(sig, 'A', 86);
    sig[86] = '\0';
    char *s = malloc(1024);
    assert_non_null(s);
    snprintf(s, 1024,
             "{\"seq\":2,\"time\":\"2024-01-01T00:00:00.000Z\",\"type\":\"checkpoint\","
             "\"reason\":\"heartbeat\",\"origin\":\"o\",\"tree_size\":1,\"root\":\"%s\","
             "\"prev_checkpoint\":\"%s\",\"heartbeat_ms\":1000,\"interval_ms\":1000%s,"
             "\"sig\":\"%s\",\"prev\":\"%s\"}",
             zeros, zeros, late, sig, zeros);
    return s;
}

static void test_checkpoint_late_members(void **state)
{
    (void)state;
    const char *good[] = {"", ",\"late_ms\":4800",
                          ",\"late_ms\":4800,\"late_why\":\"stalled\",\"late_why_ms\":4700",
                          ",\"late_ms\":900,\"late_why\":\"fsync\",\"late_why_ms\":0",
                          ",\"late_ms\":900,\"late_why\":\"sign\",\"late_why_ms\":850"};
    const char *body_tail[] = {"interval_ms 1000\n", "interval_ms 1000\nlate_ms 4800\n",
                               "interval_ms 1000\nlate_ms 4800\nlate_why stalled\n"
                               "late_why_ms 4700\n",
                               "late_ms 900\nlate_why fsync\nlate_why_ms 0\n",
                               "late_ms 900\nlate_why sign\nlate_why_ms 850\n"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char *p = late_cp(good[i]);
        json_t *j = json_loads(p, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(j);
        js_audit_checkpoint cp;
        js_err err;
        if (js_audit_checkpoint_parse(j, &cp, &err) != JS_OK)
            fail_msg("%s: %s", good[i], err.msg);
        assert_int_equal(
            js_audit_checkpoint_check_canonical(&cp, (const uint8_t *)p, strlen(p), &err), JS_OK);
        char *body = NULL;
        size_t blen = 0;
        assert_int_equal(js_audit_checkpoint_body(&cp, &body, &blen, &err), JS_OK);
        size_t tl = strlen(body_tail[i]);
        assert_true(blen >= tl);
        assert_memory_equal(body + blen - tl, body_tail[i], tl); /* the last lines */
        free(body);
        json_decref(j);
        free(p);
    }
    const char *bad[] = {
        ",\"late_ms\":0",
        ",\"late_ms\":-5",
        ",\"late_ms\":\"4800\"",
        ",\"late_ms\":316224000001",
        ",\"late_why\":\"stalled\",\"late_why_ms\":4700",
        ",\"late_ms\":4800,\"late_why\":\"stalled\"",
        ",\"late_ms\":4800,\"late_why_ms\":4700",
        ",\"late_ms\":4800,\"late_why\":\"lazy\",\"late_why_ms\":4700",
        ",\"late_ms\":4800,\"late_why\":\"sign\",\"late_why_ms\":-1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = late_cp(bad[i]);
        json_t *j = json_loads(p, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(j);
        js_audit_checkpoint cp;
        js_err err;
        if (js_audit_checkpoint_parse(j, &cp, &err) != JS_EINVAL)
            fail_msg("accepted: %s", bad[i]);
        assert_string_equal(js_reason_name(err.reason), "audit.checkpoint");
        json_decref(j);
        free(p);
    }
    /* Members out of place (late_ms after sig) are not canonical. */
    char *p = late_cp("");
    char *moved = malloc(strlen(p) + 32);
    assert_non_null(moved);
    const char *at = strstr(p, ",\"prev\":");
    snprintf(moved, strlen(p) + 32, "%.*s,\"late_ms\":4800%s", (int)(at - p), p, at);
    json_t *j = json_loads(moved, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    js_audit_checkpoint cp;
    js_err err;
    assert_int_equal(js_audit_checkpoint_parse(j, &cp, &err), JS_OK);
    assert_int_equal(
        js_audit_checkpoint_check_canonical(&cp, (const uint8_t *)moved, strlen(moved), &err),
        JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "audit.noncanonical");
    json_decref(j);
    free(moved);
    free(p);
}

/* Every member the writer can write, with escapes and UTF-8: the canonical
 * check accepts exactly what js_audit_event_body + assemble produce. */
#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"

static void check_canon(const char *payload, js_status want, const char *what)
{
    json_t *j = json_loads(payload, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(j);
    js_err err;
    js_status st =
        js_audit_payload_check_canonical((const uint8_t *)payload, strlen(payload), j, &err);
    json_decref(j);
    if (st != want)
        fail_msg("%s: got %d, want %d (%s)", what, st, want, st != JS_OK ? err.msg : "");
    if (st != JS_OK)
        assert_string_equal(js_reason_name(err.reason), "audit.noncanonical");
}

/* The cnf member (RFC 7800, FORMAT.md §3): an object after scopes and
 * before token_sha256; a record without one (every record written before
 * it existed) is unchanged and still canonical. */
static void test_event_cnf(void **state)
{
    (void)state;
    js_audit_event ev = {.type = "sign",
                         .caller = "spiffe://x",
                         .decision = "allow",
                         .reason = "ok",
                         .jti = "j1",
                         .aud_json = "\"a\"",
                         .iat = 10,
                         .exp = 20,
                         .scopes = "read",
                         .cnf_json =
                             "{ \"x5t#S256\": \"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM\" }",
                         .token_sha256 = "ab",
                         .policy_hash = "cd"};
    static const char with[] =
        "\"type\":\"sign\",\"caller\":\"spiffe://x\",\"decision\":\"allow\",\"reason\":\"ok\","
        "\"jti\":\"j1\",\"aud\":\"a\",\"iat\":10,\"exp\":20,\"scopes\":\"read\","
        "\"cnf\":{\"x5t#S256\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM\"},"
        "\"token_sha256\":\"ab\",\"policy_hash\":\"cd\"";
    static const char without[] =
        "\"type\":\"sign\",\"caller\":\"spiffe://x\",\"decision\":\"allow\",\"reason\":\"ok\","
        "\"jti\":\"j1\",\"aud\":\"a\",\"iat\":10,\"exp\":20,\"scopes\":\"read\","
        "\"token_sha256\":\"ab\",\"policy_hash\":\"cd\"";
    char *body = NULL;
    js_err err;
    uint8_t prev[32];
    memset(prev, 0x11, sizeof(prev));
    char out[JS_AUDIT_MAX_PAYLOAD + 1];
    size_t len = 0;
    for (int has = 1; has >= 0; has--) {
        ev.cnf_json = has ? ev.cnf_json : NULL;
        assert_int_equal(js_audit_event_body(&ev, 0, &body, &err), JS_OK);
        assert_string_equal(body, has ? with : without);
        assert_int_equal(js_audit_payload_assemble(3, "2026-12-06T00:00:00.000Z", body, prev, out,
                                                   sizeof(out), &len, &err),
                         JS_OK);
        free(body);
        check_canon(out, JS_OK, has ? "with cnf" : "without cnf (the old form)");
    }
    /* cnf anywhere else, or not an object, is not what the writer writes */
    static const struct {
        const char *text, *what;
    } bad[] = {
        {"{\"seq\":3,\"time\":\"2026-12-06T00:00:00.000Z\",\"type\":\"sign\",\"cnf\":{\"jkt\":"
         "\"x\"},\"scopes\":\"read\",\"prev\":\"" ZERO64 "\"}",
         "cnf before scopes"},
        {"{\"seq\":3,\"time\":\"2026-12-06T00:00:00.000Z\",\"type\":\"sign\",\"token_sha256\":"
         "\"ab\",\"cnf\":{\"jkt\":\"x\"},\"prev\":\"" ZERO64 "\"}",
         "cnf after token_sha256"},
        {"{\"seq\":3,\"time\":\"2026-12-06T00:00:00.000Z\",\"type\":\"sign\",\"cnf\":\"jkt\","
         "\"prev\":\"" ZERO64 "\"}",
         "cnf a string"},
        {"{\"seq\":3,\"time\":\"2026-12-06T00:00:00.000Z\",\"type\":\"sign\",\"cnf\":[],"
         "\"prev\":\"" ZERO64 "\"}",
         "cnf an array"},
        {"{\"seq\":3,\"time\":\"2026-12-06T00:00:00.000Z\",\"type\":\"sign\",\"cnf\":{\"jkt\": "
         "\"x\"},\"prev\":\"" ZERO64 "\"}",
         "cnf not compact"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        check_canon(bad[i].text, JS_EINVAL, bad[i].what);
    check_canon("{\"seq\":3,\"time\":\"2026-12-06T00:00:00.000Z\",\"type\":\"sign\",\"cnf\":{"
                "\"jkt\":\"x\"},\"prev\":\"" ZERO64 "\"}",
                JS_OK, "cnf alone");
    /* the writer refuses a cnf that is not an object (a caller's bug) */
    static const char *const not_obj[] = {"[1]", "\"s\"", "not json", "{\"a\":1,\"a\":2}", ""};
    for (size_t i = 0; i < sizeof(not_obj) / sizeof(not_obj[0]); i++) {
        ev.cnf_json = not_obj[i];
        assert_int_equal(js_audit_event_body(&ev, 0, &body, &err), JS_EINVAL);
        assert_int_equal(err.reason, JS_R_AUDIT_EVENT);
    }
}

static void test_payload_canonical(void **state)
{
    (void)state;
    js_audit_event ev = {.type = "sign",
                         .caller = "dns:\xc3\xa9t\xc3\xa9.example",
                         .request_id = "r\t1",
                         .decision = "deny",
                         .reason = "policy.no_match",
                         .message = "quote \" slash / control \x01",
                         .aud_json = "[1.5, {\"a\": null}, 1e3]",
                         .iat = -5,
                         .detail_json = "{\"b\": [true, false], \"a\": \"x\"}"};
    char *body = NULL;
    js_err err;
    assert_int_equal(js_audit_event_body(&ev, 2, &body, &err), JS_OK);
    uint8_t prev[32];
    memset(prev, 0xab, sizeof(prev));
    char out[JS_AUDIT_MAX_PAYLOAD + 1];
    size_t len = 0;
    assert_int_equal(js_audit_payload_assemble(12, "2026-01-02T03:04:05.006Z", body, prev, out,
                                               sizeof(out), &len, &err),
                     JS_OK);
    free(body);
    check_canon(out, JS_OK, "as written");
    /* Each change keeps the JSON meaning but not the bytes, or adds or
     * moves a member. */
    static const struct {
        const char *from, *to, *what;
    } bad[] = {
        {"\"seq\":12,", "\"seq\": 12,", "whitespace"},
        {"\"reason\":\"policy.no_match\"", "\"reason\":\"policy\\u002eno_match\"", "escape"},
        {"\"reason\":\"policy.no_match\"", "\"reason\":\"policy\\/no_match\"", "escaped slash"},
        {"\"count\":2", "\"count\":2.0", "number form"},
        {"\"count\":2", "\"count\":2,\"zz\":1", "unknown member"},
        {"\"decision\":\"deny\",\"reason\":\"policy.no_match\"",
         "\"reason\":\"policy.no_match\",\"decision\":\"deny\"", "reordered"},
        {"{\"seq\":12,\"time\":\"2026-01-02T03:04:05.006Z\"",
         "{\"time\":\"2026-01-02T03:04:05.006Z\",\"seq\":12", "time before seq"},
        {"2026-01-02T03:04:05.006Z", "2026-01-02T03:04:05Z", "time without ms"},
        {"2026-01-02T03:04:05.006Z", "2026-01-02T03:04:05.006+00:00", "time with offset"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *at = strstr(out, bad[i].from);
        assert_non_null(at);
        char v[JS_AUDIT_MAX_PAYLOAD + 64];
        int n = snprintf(v, sizeof(v), "%.*s%s%s", (int)(at - out), out, bad[i].to,
                         at + strlen(bad[i].from));
        assert_true(n > 0 && (size_t)n < sizeof(v));
        check_canon(v, JS_EINVAL, bad[i].what);
    }
    /* prev not last. */
    check_canon("{\"seq\":1,\"time\":\"2026-01-02T03:04:05.006Z\",\"prev\":\"00000000000000000000"
                "000000000000000000000000000000000000000000000\",\"type\":\"x\"}",
                JS_EINVAL, "prev not last");
}

/* Builds {"seq":7,"time":T,MIDDLE,"prev":"00..0"} for the rules tests. */
static void rec_with(char *out, size_t cap, const char *middle)
{
    int n = snprintf(out, cap,
                     "{\"seq\":7,\"time\":\"2026-01-02T03:04:05.006Z\",%s,\"prev\":\"0000000000"
                     "000000000000000000000000000000000000000000000000000000\"}",
                     middle);
    assert_true(n > 0 && (size_t)n < cap);
}

/* FORMAT.md §3.1/§3.2: a "count" (a folded record) only with decision
 * "deny" and a reason; type "denials" only folded. Canonical bytes that
 * break these rules are still refused. */
static void test_fold_rules(void **state)
{
    (void)state;
    static const struct {
        const char *middle, *what;
    } bad[] = {
        {"\"type\":\"sign\",\"caller\":\"dns:a\",\"decision\":\"allow\",\"reason\":\"ok\","
         "\"count\":3",
         "folded allow"},
        {"\"type\":\"sign\",\"caller\":\"dns:a\",\"decision\":\"error\",\"reason\":\"hsm.x\","
         "\"count\":1",
         "folded error"},
        {"\"type\":\"sign\",\"caller\":\"dns:a\",\"reason\":\"rate_limited\",\"count\":1",
         "folded without decision"},
        {"\"type\":\"admin\",\"caller\":\"dns:a\",\"decision\":\"deny\",\"count\":2",
         "folded without reason"},
        {"\"type\":\"sign\",\"caller\":\"dns:a\",\"decision\":\"deny\",\"reason\":\"\","
         "\"count\":2",
         "folded with an empty reason"},
        {"\"type\":\"denials\",\"caller\":\"(other)\",\"decision\":\"deny\","
         "\"reason\":\"audit.fold_overflow\"",
         "denials without count"},
        {"\"type\":\"denials\",\"caller\":\"(other)\",\"decision\":\"allow\","
         "\"reason\":\"audit.fold_overflow\",\"count\":9",
         "denials allowed"},
    };
    char v[1024];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rec_with(v, sizeof(v), bad[i].middle);
        check_canon(v, JS_EINVAL, bad[i].what);
        /* Refused by the fold rule itself, not by the bytes. */
        json_t *j = json_loads(v, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(j);
        js_err e;
        assert_int_equal(js_audit_payload_check_canonical((const uint8_t *)v, strlen(v), j, &e),
                         JS_EINVAL);
        json_decref(j);
        if (strstr(e.msg, "FORMAT.md §3.1") == NULL)
            fail_msg("%s: refused for another reason: %s", bad[i].what, e.msg);
    }
    /* What jwt-signerd writes: folds by caller and by peer, the overflow
     * record, a full denial with the empty key/kid/alg it carries, and
     * records with no decision at all. */
    static const char *const good[] = {
        "\"type\":\"sign\",\"caller\":\"dns:a\",\"decision\":\"deny\",\"reason\":\"rate_limited\","
        "\"message\":\"denied requests folded into one record\",\"count\":4990",
        "\"type\":\"admin\",\"peer\":\"ipv4:127.0.0.1\",\"decision\":\"deny\","
        "\"reason\":\"identity.none\",\"message\":\"m\",\"count\":1",
        "\"type\":\"denials\",\"caller\":\"(other)\",\"decision\":\"deny\","
        "\"reason\":\"audit.fold_overflow\",\"message\":\"m\",\"count\":12",
        "\"type\":\"sign\",\"caller\":\"dns:a\",\"peer\":\"ipv4:127.0.0.1:5\",\"request_id\":\"\","
        "\"decision\":\"deny\",\"reason\":\"policy.no_match\",\"message\":\"m\",\"key\":\"\","
        "\"kid\":\"\",\"alg\":\"\",\"policy_hash\":\"ab\"",
        "\"type\":\"stop\",\"detail\":{\"cause\":\"signal\"}",
        "\"type\":\"recovery\",\"reason\":\"audit.torn_tail\",\"message\":\"m\","
        "\"detail\":{\"segment\":\"audit-000001.log\",\"offset\":8}",
        "\"type\":\"incident\",\"caller\":\"SIGUSR1\",\"decision\":\"on\","
        "\"detail\":{\"cause\":\"SIGUSR1\",\"reason\":\"signal\",\"state\":\"on\"}",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        rec_with(v, sizeof(v), good[i]);
        check_canon(v, JS_OK, good[i]);
    }
    /* The fold's own encoder writes a record the check accepts. */
    js_audit_event ev = {.type = "sign",
                         .peer = "ipv6:[::1]",
                         .decision = "deny",
                         .reason = "identity.none",
                         .message = "denied requests folded into one record"};
    char *body = NULL;
    js_err err;
    assert_int_equal(js_audit_event_body(&ev, 3, &body, &err), JS_OK);
    rec_with(v, sizeof(v), body);
    free(body);
    check_canon(v, JS_OK, "encoded fold");
}

/* FORMAT.md §1: audit- + at least 6 digits (the writer's %06lu) + .log. */
static void test_segment_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        unsigned long num;
    } cases[] = {
        {"audit-000001.log", 1},
        {"audit-000042.log", 42},
        {"audit-999999.log", 999999},
        {"audit-1000000.log", 1000000},
        {"audit-123456789.log", 123456789},
        {"audit-4.log", 0},
        {"audit-00004.log", 0},
        {"audit-0000004.log", 0}, /* 7 digits with a leading zero: not %06lu */
        {"audit-000000.log", 0},  /* numbered from 1 */
        {"audit-1234567890.log", 0},
        {"audit-000001.log.broken", 0},
        {"audit-000001.LOG", 0},
        {"audit-+00001.log", 0},
        {"xaudit-000001.log", 0},
        {"", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (js_audit_segment_number(cases[i].name) != cases[i].num)
            fail_msg("%s: got %lu, want %lu", cases[i].name, js_audit_segment_number(cases[i].name),
                     cases[i].num);

    char dir[64], p[256];
    tmpdir_make(dir, sizeof(dir));
    static const char *const files[] = {"audit-000002.log",       "audit-000001.log", "audit-4.log",
                                        "audit-00004.log",        "audit-000000.log", "notes.txt",
                                        "audit-000001.log.broken"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        file_write(p, (const uint8_t *)"", 0);
    }
    char **paths = NULL, **strays = NULL;
    size_t n = 0, ns = 0;
    js_err err;
    assert_int_equal(js_audit_list_segments_ex(dir, &paths, &n, &strays, &ns, &err), JS_OK);
    assert_int_equal(n, 2);
    snprintf(p, sizeof(p), "%s/audit-000001.log", dir);
    assert_string_equal(paths[0], p);
    snprintf(p, sizeof(p), "%s/audit-000002.log", dir);
    assert_string_equal(paths[1], p);
    assert_int_equal(ns, 3); /* audit-4, audit-00004, audit-000000; not notes.txt or .broken */
    bool seen[3] = {false, false, false};
    for (size_t i = 0; i < ns; i++) {
        seen[0] |= strcmp(strays[i], "audit-4.log") == 0;
        seen[1] |= strcmp(strays[i], "audit-00004.log") == 0;
        seen[2] |= strcmp(strays[i], "audit-000000.log") == 0;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    js_audit_segments_free(paths, n);
    js_audit_segments_free(strays, ns);
    /* The plain listing ignores the strays the same way. */
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    assert_int_equal(n, 2);
    js_audit_segments_free(paths, n);
    tmpdir_remove(dir);
}

/* ---- js_audit_event_body before jsonw (a jansson tree), the reference ---- */

static int ref_add_str(json_t *o, const char *k, const char *v)
{
    if (v == NULL)
        return 0;
    json_t *js = jg_old_repaired(v);
    return json_object_set_new(o, k, js);
}

static char *ref_dump_members(const json_t *o)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (txt == NULL)
        return NULL;
    size_t n = strlen(txt);
    if (n < 2) {
        free(txt);
        return NULL;
    }
    memmove(txt, txt + 1, n - 2);
    txt[n - 2] = '\0';
    return txt;
}

static js_status ref_event_body(const js_audit_event *ev, uint64_t count, char **out, js_err *err)
{
    JS_ENSURE(ev != NULL && ev->type != NULL && ev->type[0] != '\0', err, JS_EINVAL,
              JS_R_AUDIT_EVENT, "audit event without a type");
    json_t *aud = NULL;
    json_t *detail = NULL;
    if (ev->aud_json != NULL && ev->aud_json[0] != '\0') {
        aud = json_loads(ev->aud_json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (aud == NULL)
            aud = json_string(ev->aud_json);
    }
    if (ev->detail_json != NULL) {
        detail = json_loads(ev->detail_json, JSON_REJECT_DUPLICATES, NULL);
        if (detail == NULL || !json_is_object(detail)) {
            json_decref(aud);
            json_decref(detail);
            return js_err_set(err, JS_EINVAL, JS_R_AUDIT_EVENT, "detail_json is not a JSON object");
        }
    }
    json_t *cnf = NULL;
    if (ev->cnf_json != NULL) {
        cnf = json_loads(ev->cnf_json, JSON_REJECT_DUPLICATES, NULL);
        if (cnf == NULL || !json_is_object(cnf)) {
            json_decref(aud);
            json_decref(detail);
            json_decref(cnf);
            return js_err_set(err, JS_EINVAL, JS_R_AUDIT_EVENT, "cnf_json is not a JSON object");
        }
    }
    json_t *o = json_object();
    int rc = o == NULL ? -1 : 0;
    rc |= ref_add_str(o, "type", ev->type);
    rc |= ref_add_str(o, "caller", ev->caller);
    rc |= ref_add_str(o, "peer", ev->peer);
    rc |= ref_add_str(o, "request_id", ev->request_id);
    rc |= ref_add_str(o, "decision", ev->decision);
    rc |= ref_add_str(o, "reason", ev->reason);
    rc |= ref_add_str(o, "message", ev->message);
    rc |= ref_add_str(o, "key", ev->key);
    rc |= ref_add_str(o, "kid", ev->kid);
    rc |= ref_add_str(o, "alg", ev->alg);
    rc |= ref_add_str(o, "jti", ev->jti);
    rc |= ref_add_str(o, "sub", ev->sub);
    if (aud != NULL)
        rc |= json_object_set_new(o, "aud", aud);
    if (ev->iat != 0)
        rc |= json_object_set_new(o, "iat", json_integer(ev->iat));
    if (ev->exp != 0)
        rc |= json_object_set_new(o, "exp", json_integer(ev->exp));
    rc |= ref_add_str(o, "scopes", ev->scopes);
    if (cnf != NULL)
        rc |= json_object_set_new(o, "cnf", cnf);
    rc |= ref_add_str(o, "token_sha256", ev->token_sha256);
    rc |= ref_add_str(o, "policy_hash", ev->policy_hash);
    if (count > 0)
        rc |= json_object_set_new(o, "count", json_integer((json_int_t)count));
    if (detail != NULL)
        rc |= json_object_set_new(o, "detail", detail);
    char *txt = rc == 0 ? ref_dump_members(o) : NULL;
    json_decref(o);
    JS_ENSURE(txt != NULL, err, JS_EINVAL, JS_R_AUDIT_EVENT,
              "audit event cannot be encoded (invalid UTF-8 or out of memory)");
    *out = txt;
    return JS_OK;
}

static const char *gen_member(jg_rng *r, char *buf, size_t cap)
{
    switch (jg_below(r, 5)) {
    case 0:
        return NULL;
    case 1:
        return "";
    default:
        jg_string(r, buf, cap, (int)jg_below(r, 2));
        return buf;
    }
}

static int64_t gen_int(jg_rng *r)
{
    if (jg_below(r, 3) == 0)
        return 0;
    int64_t v = (int64_t)(jg_next(r) >> (1 + jg_below(r, 63)));
    return jg_below(r, 4) == 0 ? -v : jg_below(r, 8) == 0 ? (int64_t)jg_next(r) : v;
}

static void test_event_body_differential(void **state)
{
    (void)state;
    static const char *const cnfs[] = {
        "{\"jkt\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM\"}",
        "{\"x5t#S256\":\"89lghcUqh0M0TBB3zZraPDi17xuaYP7ROCnn7z1PJKM\"}",
        "{ \"jkt\" : \"x\" }",
        "{}",
        "[1]",
        "not json",
        "{\"a\":1,\"a\":2}",
    };
    static const char *const details[] = {
        "{\"x\":1}",
        "{}",
        "{\"a\":\"\\u00e9\",\"b\":[1,2.5,null]}",
        "{ \"a\" : 1 }",
        "{\"a\":1,\"a\":2}",
        "[1]",
        "\"s\"",
        "not json",
        "{\"a\":\"\xff\"}",
        "{\"k\":\"\\/\"}",
    };
    jg_rng r = {0x5eed00a1ULL};
    static char f[16][4096];
    size_t ok = 0, verified = 0;
    for (int i = 0; i < 8000; i++) {
        js_audit_event ev = {
            .type = jg_below(&r, 20) == 0 ? gen_member(&r, f[0], sizeof(f[0]))
                                          : (jg_below(&r, 2) ? "sign" : "admin"),
            .caller = gen_member(&r, f[1], sizeof(f[1])),
            .peer = gen_member(&r, f[2], sizeof(f[2])),
            .request_id = gen_member(&r, f[3], sizeof(f[3])),
            .decision = gen_member(&r, f[4], sizeof(f[4])),
            .reason = gen_member(&r, f[5], sizeof(f[5])),
            .message = gen_member(&r, f[6], sizeof(f[6])),
            .key = gen_member(&r, f[7], sizeof(f[7])),
            .kid = gen_member(&r, f[8], sizeof(f[8])),
            .alg = gen_member(&r, f[9], sizeof(f[9])),
            .jti = gen_member(&r, f[10], sizeof(f[10])),
            .sub = gen_member(&r, f[11], sizeof(f[11])),
            .iat = gen_int(&r),
            .exp = gen_int(&r),
            .scopes = gen_member(&r, f[12], sizeof(f[12])),
            .token_sha256 = gen_member(&r, f[13], sizeof(f[13])),
            .policy_hash = gen_member(&r, f[14], sizeof(f[14])),
            .detail_json = jg_below(&r, 6) == 0
                               ? details[jg_below(&r, sizeof(details) / sizeof(details[0]))]
                               : NULL,
            .cnf_json =
                jg_below(&r, 4) == 0 ? cnfs[jg_below(&r, sizeof(cnfs) / sizeof(cnfs[0]))] : NULL,
        };
        if (jg_below(&r, 6) != 0) {
            jg_aud(&r, f[15], sizeof(f[15]));
            ev.aud_json = f[15];
        }
        uint64_t count = jg_below(&r, 3) == 0 ? jg_u64(&r) : 0;
        char *want = NULL, *got = NULL;
        js_err e1, e2;
        js_status s1 = ref_event_body(&ev, count, &want, &e1);
        js_status s2 = js_audit_event_body(&ev, count, &got, &e2);
        assert_int_equal(s2, s1);
        if (s1 != JS_OK) {
            assert_int_equal(e2.reason, e1.reason);
            assert_string_equal(e2.msg, e1.msg);
            continue;
        }
        assert_string_equal(got, want);
        ok++;
        /* The verifier, which re-serialises with jansson, accepts it. */
        uint8_t prev[JS_AUDIT_HASH_LEN] = {0};
        static char payload[JS_AUDIT_MAX_PAYLOAD + 1];
        size_t len = 0;
        js_err e3;
        if (count == 0 && strcmp(ev.type, "denials") != 0 &&
            js_audit_payload_assemble(1, "2026-12-06T00:00:00.000Z", got, prev, payload,
                                      sizeof(payload), &len, &e3) == JS_OK) {
            json_t *rec = json_loadb(payload, len, JSON_REJECT_DUPLICATES, NULL);
            assert_non_null(rec);
            assert_int_equal(
                js_audit_payload_check_canonical((const uint8_t *)payload, len, rec, &e3), JS_OK);
            json_decref(rec);
            verified++;
        }
        free(want);
        free(got);
    }
    assert_true(ok > 6000 && verified > 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_round_trip),
        cmocka_unit_test(test_frame_rejects),
        cmocka_unit_test(test_event_canonical),
        cmocka_unit_test(test_time_and_hex),
        cmocka_unit_test(test_chain_and_checkpoint),
        cmocka_unit_test(test_reader_framing_errors),
        cmocka_unit_test(test_checkpoint_parse_rejects),
        cmocka_unit_test(test_checkpoint_late_members),
        cmocka_unit_test(test_payload_canonical),
        cmocka_unit_test(test_event_cnf),
        cmocka_unit_test(test_fold_rules),
        cmocka_unit_test(test_segment_names),
        cmocka_unit_test(test_event_body_differential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
