/*
 * test_jsonw.c - the bounded JSON writer (lib/base/jsonw.h) against jansson
 * 2.14, which it must match byte for byte: a table of escapes (U+2028 and
 * DEL as they are, \u001F upper-case, invalid UTF-8 refused), then
 * differential runs over generated strings (json_stringn + json_dumps), the
 * lossy form (the audit log's former repair-then-json_string), integers
 * (json_integer), the canonical-aud test (true exactly when json_loads +
 * json_dumps give back the same bytes for a string or array of strings),
 * and the bound (every capacity from 0 up).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jsonw.h"
#include "test_jsongen.h"

#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY)
#define ROUNDS     20000

/* jansson's text for s[0..n) as a string, or NULL where json_stringn
 * refuses it. */
static char *jansson_string(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    if (v == NULL)
        return NULL;
    char *t = json_dumps(v, DUMP_FLAGS);
    json_decref(v);
    assert_non_null(t);
    return t;
}

/* jsonw's text for s[0..n) into buf, or NULL when refused. */
static const char *jsonw_string(const char *s, size_t n, char *buf, size_t cap)
{
    js_jsonw w;
    js_jsonw_init(&w, buf, cap);
    if (!js_jsonw_string(&w, s, n)) {
        assert_int_equal(js_jsonw_len(&w), 0); /* nothing appended */
        return NULL;
    }
    const char *t = js_jsonw_finish(&w);
    assert_non_null(t);
    return t;
}

static void check_string(const char *s, size_t n)
{
    static char buf[JS_JSONW_ESC_MAX * 8192 + 3];
    assert_true(n <= 8192);
    char *want = jansson_string(s, n);
    const char *got = jsonw_string(s, n, buf, sizeof(buf));
    assert_int_equal(js_jsonw_utf8_valid(s, n), want != NULL);
    if (want == NULL) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(want);
}

static void test_escapes_table(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *out; /* NULL: refused */
    } rows[] = {
        {"", 0, "\"\""},
        {"abc", 3, "\"abc\""},
        {"\"\\/", 3, "\"\\\"\\\\/\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\x01\x1f\x1b", 3, "\"\\u0001\\u001F\\u001B\""},
        {"\0", 1, "\"\\u0000\""},
        {"\x7f", 1, "\"\x7f\""},
        {"\xe2\x80\xa8\xe2\x80\xa9", 6, "\"\xe2\x80\xa8\xe2\x80\xa9\""},
        {"\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\""},
        {"\xc3\xa9", 2, "\"\xc3\xa9\""},
        {"\xff", 1, NULL},
        {"a\x80", 2, NULL},
        {"\xc0\x80", 2, NULL},
        {"\xed\xa0\x80", 3, NULL},
        {"\xf4\x90\x80\x80", 4, NULL},
        {"\xe2\x82", 2, NULL},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *got = jsonw_string(rows[i].in, rows[i].n, buf, sizeof(buf));
        if (rows[i].out == NULL)
            assert_null(got);
        else
            assert_string_equal(got, rows[i].out);
        check_string(rows[i].in, rows[i].n);
    }
}

static void test_strings_differential(void **state)
{
    (void)state;
    jg_rng r = {0x9e3779b97f4a7c15ULL};
    char s[8192];
    for (int i = 0; i < ROUNDS; i++) {
        size_t n = jg_string(&r, s, sizeof(s), (int)(i % 2));
        check_string(s, n);
        /* any bytes at all, NUL included */
        size_t m = jg_below(&r, 16);
        for (size_t k = 0; k < m; k++)
            s[k] = (char)jg_next(&r);
        check_string(s, m);
    }
}

/* The audit log's former repair (record.c before jsonw): an invalid byte
 * becomes U+FFFD, then json_string() and json_dumps(). */
static char *old_lossy(const char *v)
{
    json_t *js = jg_old_repaired(v);
    assert_non_null(js);
    char *t = json_dumps(js, DUMP_FLAGS);
    json_decref(js);
    return t;
}

static void test_lossy_differential(void **state)
{
    (void)state;
    jg_rng r = {0x1234567887654321ULL};
    static char buf[JS_JSONW_ESC_MAX * 8192 + 3];
    char s[8192];
    for (int i = 0; i < ROUNDS; i++) {
        size_t n = jg_string(&r, s, sizeof(s), 0);
        char *want = old_lossy(s);
        js_jsonw w;
        js_jsonw_init(&w, buf, sizeof(buf));
        js_jsonw_string_lossy(&w, s, n);
        assert_string_equal(js_jsonw_finish(&w), want);
        free(want);
    }
}

static void check_int(int64_t v)
{
    json_t *j = json_integer((json_int_t)v);
    char *want = json_dumps(j, DUMP_FLAGS);
    json_decref(j);
    char buf[32];
    js_jsonw w;
    js_jsonw_init(&w, buf, sizeof(buf));
    js_jsonw_int(&w, v);
    assert_string_equal(js_jsonw_finish(&w), want);
    free(want);
}

static void test_int_differential(void **state)
{
    (void)state;
    static const int64_t fixed[] = {0,   1,          -1,        9,         10,
                                    -10, 1700000000, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        check_int(fixed[i]);
    jg_rng r = {42};
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t x = jg_next(&r) >> jg_below(&r, 64);
        check_int((int64_t)x);
        check_int(-(int64_t)(x >> 1));
    }
    /* json_integer((json_int_t)count) of a uint64_t count above INT64_MAX */
    check_int((int64_t)UINT64_MAX);
}

/* What the canonical test promises: true exactly when jansson loads the text
 * (as both callers do) to a string or an array of strings and dumps it back
 * to the same bytes. */
static void check_canonical(const char *s)
{
    size_t n = strlen(s);
    bool fast = js_jsonw_canonical_strings(s, n);
    bool same = false;
    static const size_t load_flags[] = {JSON_DECODE_ANY, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES};
    for (size_t f = 0; f < 2; f++) {
        json_t *v = json_loads(s, load_flags[f], NULL);
        bool strings = json_is_string(v);
        if (json_is_array(v)) {
            strings = true;
            for (size_t i = 0; i < json_array_size(v); i++)
                strings = strings && json_is_string(json_array_get(v, i));
        }
        char *t = v != NULL ? json_dumps(v, DUMP_FLAGS) : NULL;
        bool s_f = strings && t != NULL && strcmp(t, s) == 0;
        if (f > 0)
            assert_int_equal(s_f, same);
        same = s_f;
        free(t);
        json_decref(v);
    }
    if (fast != same)
        fail_msg("canonical_strings(%s) = %d, jansson round trip = %d", s, fast, same);
}

static void test_canonical_differential(void **state)
{
    (void)state;
    for (size_t i = 0; i < JG_NFIXED_AUDS; i++)
        check_canonical(jg_fixed_auds[i]);
    jg_rng r = {0xfeedfacecafebeefULL};
    char aud[16384];
    size_t fast = 0;
    for (int i = 0; i < ROUNDS * 2; i++) {
        jg_aud(&r, aud, sizeof(aud));
        check_canonical(aud);
        fast += js_jsonw_canonical_strings(aud, strlen(aud));
    }
    /* the generator reaches both sides */
    assert_true(fast > (size_t)ROUNDS / 4 && fast < (size_t)ROUNDS * 2 - ROUNDS / 4);
    print_message("canonical: %zu of %d generated aud texts\n", fast, ROUNDS * 2);
}

/* Every capacity: fits exactly when the text and its NUL fit, then the
 * text is whole; len always says what it needs. */
static void test_bound(void **state)
{
    (void)state;
    jg_rng r = {7};
    char s[256], full[JS_JSONW_ESC_MAX * 256 + 64], small[JS_JSONW_ESC_MAX * 256 + 64];
    for (int i = 0; i < 300; i++) {
        size_t n = jg_string(&r, s, 64, (int)(i % 2));
        js_jsonw w;
        js_jsonw_init(&w, full, sizeof(full));
        JS_JSONW_LIT(&w, "{\"k\":");
        bool ok = js_jsonw_string(&w, s, n);
        JS_JSONW_LIT(&w, ",\"n\":");
        js_jsonw_int(&w, -12345);
        JS_JSONW_LIT(&w, "}");
        const char *want = js_jsonw_finish(&w);
        assert_non_null(want);
        size_t need = js_jsonw_len(&w);
        for (size_t cap = 0; cap <= need + 1; cap++) {
            js_jsonw_init(&w, cap > 0 ? small : NULL, cap);
            JS_JSONW_LIT(&w, "{\"k\":");
            assert_int_equal(js_jsonw_string(&w, s, n), ok);
            JS_JSONW_LIT(&w, ",\"n\":");
            js_jsonw_int(&w, -12345);
            JS_JSONW_LIT(&w, "}");
            assert_int_equal(js_jsonw_len(&w), need);
            assert_int_equal(js_jsonw_fits(&w), cap > need);
            const char *got = js_jsonw_finish(&w);
            if (cap > need)
                assert_string_equal(got, want);
            else
                assert_null(got);
        }
    }
}

/* A member that turns out not to be encodable is undone whole. */
static void test_truncate(void **state)
{
    (void)state;
    char buf[64];
    js_jsonw w;
    js_jsonw_init(&w, buf, sizeof(buf));
    JS_JSONW_LIT(&w, "{\"a\":1");
    size_t mark = js_jsonw_len(&w);
    JS_JSONW_LIT(&w, ",\"b\":");
    if (!js_jsonw_string(&w, "\xff", 1))
        js_jsonw_truncate(&w, mark);
    JS_JSONW_LIT(&w, "}");
    assert_string_equal(js_jsonw_finish(&w), "{\"a\":1}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes_table),
        cmocka_unit_test(test_strings_differential),
        cmocka_unit_test(test_lossy_differential),
        cmocka_unit_test(test_int_differential),
        cmocka_unit_test(test_canonical_differential),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_truncate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
