/*
 * test_logline.c - structured log lines (signer/core/logline.h): the request
 * line carries aud as JSON (a string or an array, not a string holding JSON
 * text), text that is not JSON is still logged, and the folded-denials line
 * has its count and audit_seq (or audit_lost). The one-pass writer is held
 * byte for byte to a copy of the former jansson implementation over
 * generated lines (invalid UTF-8 members left out, every aud shape); the
 * time format is test_clock.c's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "logline.h"
#include "test_jsongen.h"

/* Runs fn with fd 2 redirected to a temporary file; returns the last line
 * written, parsed. */
static json_t *capture(void (*fn)(const void *), const void *arg)
{
    char path[] = "/tmp/test_logline_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn(arg);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_int_equal(buf[n - 1], '\n'); /* one whole line */
    assert_null(memchr(buf, '\n', (size_t)n - 1));
    json_error_t jerr;
    json_t *o = json_loads(buf, 0, &jerr);
    assert_non_null(o);
    return o;
}

static void emit_req(const void *arg)
{
    js_reqlog_emit(arg);
}

static void emit_fold(const void *arg)
{
    js_log_denials_folded(arg);
}

static void test_aud_string_is_json(void **state)
{
    (void)state;
    js_reqlog r = {.method = "SignJwt", .decision = "allow", .aud = "\"https://api.example\""};
    json_t *o = capture(emit_req, &r);
    json_t *aud = json_object_get(o, "aud");
    assert_true(json_is_string(aud));
    assert_string_equal(json_string_value(aud), "https://api.example"); /* not "\"https..." */
    json_decref(o);
}

static void test_aud_array_is_json(void **state)
{
    (void)state;
    js_reqlog r = {.method = "SignJwt", .decision = "deny", .aud = "[\"a\",\"b\"]"};
    json_t *o = capture(emit_req, &r);
    json_t *aud = json_object_get(o, "aud");
    assert_true(json_is_array(aud));
    assert_int_equal(json_array_size(aud), 2);
    assert_string_equal(json_string_value(json_array_get(aud, 1)), "b");
    assert_string_equal(json_string_value(json_object_get(o, "level")), "warn");
    json_decref(o);
}

static void test_aud_not_json_kept_as_text(void **state)
{
    (void)state;
    js_reqlog r = {.method = "SignJwt", .decision = "deny", .aud = "{not json"};
    json_t *o = capture(emit_req, &r);
    assert_string_equal(json_string_value(json_object_get(o, "aud")), "{not json");
    json_decref(o);
    js_reqlog none = {.method = "SignJwt", .decision = "deny"};
    o = capture(emit_req, &none);
    assert_null(json_object_get(o, "aud"));
    json_decref(o);
}

static void test_folded_line(void **state)
{
    (void)state;
    js_foldlog f = {.type = "sign",
                    .caller = "dns:intruder.example",
                    .reason = "policy.no_match",
                    .count = 4990,
                    .audit_seq = 77};
    json_t *o = capture(emit_fold, &f);
    assert_string_equal(json_string_value(json_object_get(o, "event")), "denials_folded");
    assert_string_equal(json_string_value(json_object_get(o, "caller")), "dns:intruder.example");
    assert_null(json_object_get(o, "peer"));
    assert_int_equal(json_integer_value(json_object_get(o, "count")), 4990);
    assert_int_equal(json_integer_value(json_object_get(o, "audit_seq")), 77);
    assert_null(json_object_get(o, "audit_lost"));
    json_decref(o);

    js_foldlog lost = {
        .type = "sign", .peer = "127.0.0.9", .reason = "identity.invalid", .count = 3};
    o = capture(emit_fold, &lost);
    assert_null(json_object_get(o, "caller"));
    assert_string_equal(json_string_value(json_object_get(o, "peer")), "127.0.0.9");
    assert_true(json_is_true(json_object_get(o, "audit_lost")));
    assert_null(json_object_get(o, "audit_seq"));
    json_decref(o);
}

/* ---- the former jansson implementation, the reference ---- */

static char *ref_emit(const char *time, const char *level, json_t *obj)
{
    if (obj == NULL)
        return NULL;
    json_t *line = json_pack("{s:s, s:s}", "time", time, "level", level);
    if (line == NULL) {
        json_decref(obj);
        return NULL;
    }
    json_object_update(line, obj);
    json_decref(obj);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    assert_non_null(text);
    size_t n = strlen(text);
    char *out = malloc(n + 2);
    assert_non_null(out);
    memcpy(out, text, n);
    out[n] = '\n';
    out[n + 1] = '\0';
    free(text);
    return out;
}

static void ref_set_opt(json_t *o, const char *k, const char *v)
{
    if (v != NULL && v[0] != '\0')
        json_object_set_new(o, k, json_string(v));
}

static char *ref_reqlog(const char *time, const js_reqlog *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "event", json_string("request"));
    ref_set_opt(o, "method", r->method);
    ref_set_opt(o, "caller", r->caller);
    ref_set_opt(o, "peer", r->peer);
    ref_set_opt(o, "request_id", r->request_id);
    ref_set_opt(o, "decision", r->decision);
    ref_set_opt(o, "status", r->status);
    ref_set_opt(o, "reason", r->reason);
    ref_set_opt(o, "message", r->message);
    ref_set_opt(o, "key", r->key);
    ref_set_opt(o, "kid", r->kid);
    ref_set_opt(o, "jti", r->jti);
    ref_set_opt(o, "sub", r->sub);
    if (r->aud != NULL && r->aud[0] != '\0') {
        json_t *aud = json_loads(r->aud, JSON_DECODE_ANY, NULL);
        json_object_set_new(o, "aud", aud != NULL ? aud : json_string(r->aud));
    }
    ref_set_opt(o, "audit_seq", r->audit_seq);
    json_object_set_new(o, "latency_us", json_integer(r->latency_us));
    return ref_emit(time,
                    r->decision != NULL && strcmp(r->decision, "allow") == 0 ? "info" : "warn", o);
}

static char *ref_folded(const char *time, const js_foldlog *f)
{
    json_t *o = json_object();
    json_object_set_new(o, "event", json_string("denials_folded"));
    ref_set_opt(o, "type", f->type);
    ref_set_opt(o, "caller", f->caller);
    ref_set_opt(o, "peer", f->peer);
    ref_set_opt(o, "reason", f->reason);
    json_object_set_new(o, "count", json_integer((json_int_t)f->count));
    if (f->audit_seq > 0)
        json_object_set_new(o, "audit_seq", json_integer((json_int_t)f->audit_seq));
    else
        json_object_set_new(o, "audit_lost", json_true());
    return ref_emit(time, "warn", o);
}

typedef struct ev_args {
    const char *level, *event, *message;
} ev_args;

static char *ref_event(const char *time, const ev_args *a)
{
    json_t *o = json_pack("{s:s, s:s}", "event", a->event, "message", a->message ? a->message : "");
    return ref_emit(time, a->level, o);
}

static void emit_event(const void *arg)
{
    const ev_args *a = arg;
    js_log_event(a->level, a->event, a->message);
}

/* fd 2 on a temporary file for a whole run; take() returns what the last
 * call wrote (possibly nothing). */
typedef struct sink {
    int fd, saved;
    char *buf;
    size_t cap;
} sink;

static void sink_open(sink *k)
{
    char path[] = "/tmp/test_logline_XXXXXX";
    k->fd = mkstemp(path);
    assert_true(k->fd >= 0);
    unlink(path);
    k->saved = dup(STDERR_FILENO);
    assert_true(k->saved >= 0);
    assert_true(dup2(k->fd, STDERR_FILENO) >= 0);
    k->cap = 1 << 20;
    k->buf = malloc(k->cap);
    assert_non_null(k->buf);
}

static size_t sink_take(sink *k, void (*fn)(const void *), const void *arg)
{
    assert_int_equal(ftruncate(k->fd, 0), 0);
    assert_int_equal(lseek(k->fd, 0, SEEK_SET), 0);
    fn(arg);
    ssize_t n = pread(k->fd, k->buf, k->cap - 1, 0);
    assert_true(n >= 0);
    k->buf[n] = '\0';
    return (size_t)n;
}

static void sink_close(sink *k)
{
    assert_true(dup2(k->saved, STDERR_FILENO) >= 0);
    close(k->saved);
    close(k->fd);
    free(k->buf);
}

/* The time the line carries ({"time":"T",...), for the reference. */
static void line_time(const char *line, char t[JS_WALL_TIME_LEN + 1])
{
    assert_true(strncmp(line, "{\"time\":\"", 9) == 0);
    const char *e = strchr(line + 9, '"');
    assert_non_null(e);
    assert_int_equal(e - (line + 9), 24);
    memcpy(t, line + 9, 24);
    t[24] = '\0';
}

static void check_same(const char *got, size_t n, char *want)
{
    if (want == NULL) {
        assert_int_equal(n, 0);
        return;
    }
    assert_int_equal(n, strlen(want));
    assert_memory_equal(got, want, n);
    free(want);
}

/* A field: NULL, "", a fixed value, or a generated string. */
static const char *gen_field(jg_rng *r, char *buf, size_t cap)
{
    switch (jg_below(r, 6)) {
    case 0:
        return NULL;
    case 1:
        return "";
    case 2:
        return "allow";
    default:
        jg_string(r, buf, cap, (int)jg_below(r, 2));
        return buf;
    }
}

#define LOG_ROUNDS 6000

static void test_reqlog_differential(void **state)
{
    (void)state;
    jg_rng r = {0x5eed0001ULL};
    sink k;
    sink_open(&k);
    static char f[14][4096];
    char t[JS_WALL_TIME_LEN + 1];
    for (int i = 0; i < LOG_ROUNDS; i++) {
        js_reqlog q = {
            .method = gen_field(&r, f[0], sizeof(f[0])),
            .caller = gen_field(&r, f[1], sizeof(f[1])),
            .peer = gen_field(&r, f[2], sizeof(f[2])),
            .request_id = gen_field(&r, f[3], sizeof(f[3])),
            .decision = jg_below(&r, 2) ? "allow" : gen_field(&r, f[4], sizeof(f[4])),
            .status = gen_field(&r, f[5], sizeof(f[5])),
            .reason = gen_field(&r, f[6], sizeof(f[6])),
            .message = gen_field(&r, f[7], sizeof(f[7])),
            .key = gen_field(&r, f[8], sizeof(f[8])),
            .kid = gen_field(&r, f[9], sizeof(f[9])),
            .jti = gen_field(&r, f[10], sizeof(f[10])),
            .sub = gen_field(&r, f[11], sizeof(f[11])),
            .audit_seq = gen_field(&r, f[12], sizeof(f[12])),
            .latency_us = (int64_t)jg_u64(&r), /* any int64, negative included */
        };
        if (jg_below(&r, 8) != 0) {
            jg_aud(&r, f[13], sizeof(f[13]));
            q.aud = f[13];
        }
        size_t n = sink_take(&k, emit_req, &q);
        assert_true(n > 0);
        line_time(k.buf, t);
        check_same(k.buf, n, ref_reqlog(t, &q));
    }
    sink_close(&k);
}

static void test_folded_differential(void **state)
{
    (void)state;
    jg_rng r = {0x5eed0002ULL};
    sink k;
    sink_open(&k);
    static char f[4][4096];
    char t[JS_WALL_TIME_LEN + 1];
    for (int i = 0; i < LOG_ROUNDS; i++) {
        js_foldlog q = {
            .type = gen_field(&r, f[0], sizeof(f[0])),
            .caller = gen_field(&r, f[1], sizeof(f[1])),
            .peer = gen_field(&r, f[2], sizeof(f[2])),
            .reason = gen_field(&r, f[3], sizeof(f[3])),
            .count = jg_u64(&r),
            .audit_seq = jg_below(&r, 3) == 0 ? 0 : jg_next(&r) >> jg_below(&r, 64),
        };
        size_t n = sink_take(&k, emit_fold, &q);
        assert_true(n > 0);
        line_time(k.buf, t);
        check_same(k.buf, n, ref_folded(t, &q));
    }
    sink_close(&k);
}

static void test_event_differential(void **state)
{
    (void)state;
    jg_rng r = {0x5eed0003ULL};
    sink k;
    sink_open(&k);
    static char f[3][4096];
    char t[JS_WALL_TIME_LEN + 1];
    size_t lines = 0;
    for (int i = 0; i < LOG_ROUNDS; i++) {
        static const char *const levels[] = {"info", "warn", "error", NULL, "\xff", "l\"v"};
        ev_args a = {
            .level = jg_below(&r, 4) ? levels[jg_below(&r, 3)]
                                     : levels[jg_below(&r, sizeof(levels) / sizeof(levels[0]))],
            .event = gen_field(&r, f[1], sizeof(f[1])),
            .message = gen_field(&r, f[2], sizeof(f[2])),
        };
        size_t n = sink_take(&k, emit_event, &a);
        if (n > 0) {
            line_time(k.buf, t);
            lines++;
        } else {
            memcpy(t, "2026-01-01T00:00:00.000Z", 25);
        }
        check_same(k.buf, n, ref_event(t, &a));
    }
    assert_true(lines > LOG_ROUNDS / 2 && lines < LOG_ROUNDS); /* both sides reached */
    sink_close(&k);
}

/* A line longer than the stack buffer is still one whole line, one write. */
static void test_long_line(void **state)
{
    (void)state;
    static char big[20000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    js_reqlog q = {.method = "SignJwt", .decision = "deny", .message = big, .aud = "[\"a\"]"};
    sink k;
    sink_open(&k);
    size_t n = sink_take(&k, emit_req, &q);
    char t[JS_WALL_TIME_LEN + 1];
    line_time(k.buf, t);
    check_same(k.buf, n, ref_reqlog(t, &q));
    assert_true(n > sizeof(big));
    assert_null(memchr(k.buf, '\n', n - 1));
    sink_close(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aud_string_is_json),
        cmocka_unit_test(test_aud_array_is_json),
        cmocka_unit_test(test_aud_not_json_kept_as_text),
        cmocka_unit_test(test_folded_line),
        cmocka_unit_test(test_reqlog_differential),
        cmocka_unit_test(test_folded_differential),
        cmocka_unit_test(test_event_differential),
        cmocka_unit_test(test_long_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
