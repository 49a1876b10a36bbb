/*
 * test_text.c - the clean-text check (lib/base/text.h): every edge of the Cc
 * and Cf ranges, malformed UTF-8 (overlongs, surrogates, truncated and
 * out-of-range sequences), NUL, and clean text in several scripts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "text.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Encodes cp as UTF-8 (cp <= U+10FFFF, surrogates included on purpose). */
static size_t enc(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* "ab" + cp + "c": a bad cp is reported at offset 2 with its value. */
static void expect_cp(uint32_t cp, bool clean)
{
    char buf[8];
    size_t n = 2;
    buf[0] = 'a';
    buf[1] = 'b';
    n += enc(cp, buf + n);
    buf[n++] = 'c';
    size_t off = 99;
    uint32_t bad = 0;
    bool ok = js_text_valid(buf, n, &off, &bad);
    if (ok != clean)
        fail_msg("U+%04X: valid=%d, want %d", (unsigned)cp, ok, clean);
    if (!clean && (off != 2 || bad != cp))
        fail_msg("U+%04X: reported offset %zu cp U+%04X", (unsigned)cp, off, (unsigned)bad);
}

/* Every range of Cc and Cf (Unicode 15.0), with the code points on either side. */
static const struct {
    uint32_t lo, hi;
} k_bad_ranges[] = {
    {0x0000, 0x001F},   {0x007F, 0x009F},   {0x00AD, 0x00AD},   {0x0600, 0x0605},
    {0x061C, 0x061C},   {0x06DD, 0x06DD},   {0x070F, 0x070F},   {0x0890, 0x0891},
    {0x08E2, 0x08E2},   {0x180E, 0x180E},   {0x200B, 0x200F},   {0x202A, 0x202E},
    {0x2060, 0x2064},   {0x2066, 0x206F},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},
    {0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3},
    {0x1D173, 0x1D17A}, {0xE0001, 0xE0001}, {0xE0020, 0xE007F},
};

static bool in_bad_range(uint32_t cp)
{
    for (size_t i = 0; i < COUNT(k_bad_ranges); i++)
        if (cp >= k_bad_ranges[i].lo && cp <= k_bad_ranges[i].hi)
            return true;
    return false;
}

static void test_range_edges(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(k_bad_ranges); i++) {
        uint32_t lo = k_bad_ranges[i].lo, hi = k_bad_ranges[i].hi;
        expect_cp(lo, false);
        expect_cp(hi, false);
        expect_cp(lo + (hi - lo) / 2, false);
        /* The neighbours are clean unless they belong to an adjacent range
         * (U+0020 after C0 is clean; U+2065 between two bidi ranges is clean). */
        if (lo > 0 && !in_bad_range(lo - 1))
            expect_cp(lo - 1, true);
        if (!in_bad_range(hi + 1))
            expect_cp(hi + 1, true);
    }
    expect_cp(0x2065, true); /* unassigned, between 2060-2064 and 2066-206F */
}

/* Characters that hide or reorder text on an operator's screen (NEL, RLO,
 * the bidi isolates, LRM/RLM, BOM, C1 and DEL), one by one. */
static void test_hiding_characters(void **state)
{
    (void)state;
    static const uint32_t bad[] = {0x0085, 0x202E, 0x2066, 0x2069, 0x200E,
                                   0x200F, 0xFEFF, 0x0080, 0x009F, 0x007F};
    for (size_t i = 0; i < COUNT(bad); i++)
        expect_cp(bad[i], false);
    const char *s = "issuer\xc2\x85"
                    "a\xe2\x80\xae";
    size_t off;
    uint32_t cp;
    assert_false(js_text_valid(s, strlen(s), &off, &cp));
    assert_int_equal(off, 6);
    assert_int_equal(cp, 0x85);
}

static const struct {
    const char *name;
    const char *bytes;
    size_t len;
    size_t off; /* where the malformed sequence starts */
} k_malformed[] = {
#define B(s) s, sizeof(s) - 1
    {"lone continuation", B("ab\x80"), 2},
    {"continuation after ascii", B("a\xbf"), 1},
    {"overlong NUL (C0 80)", B("x\xc0\x80"), 1},
    {"overlong slash (C1 AF)", B("x\xc1\xaf"), 1},
    {"overlong 3-byte (E0 9F BF)", B("x\xe0\x9f\xbf"), 1},
    {"overlong 3-byte NUL (E0 80 80)", B("x\xe0\x80\x80"), 1},
    {"overlong 4-byte (F0 8F BF BF)", B("x\xf0\x8f\xbf\xbf"), 1},
    {"surrogate low edge (ED A0 80)", B("x\xed\xa0\x80"), 1},
    {"surrogate high edge (ED BF BF)", B("x\xed\xbf\xbf"), 1},
    {"above U+10FFFF (F4 90 80 80)", B("x\xf4\x90\x80\x80"), 1},
    {"F5 lead", B("x\xf5\x80\x80\x80"), 1},
    {"FF byte", B("x\xff"), 1},
    {"FE byte", B("x\xfe"), 1},
    {"truncated 2-byte", B("xy\xc3"), 2},
    {"truncated 3-byte", B("xy\xe2\x82"), 2},
    {"truncated 4-byte", B("xy\xf0\x9f\x98"), 2},
    {"bad second byte", B("x\xc3\x28"), 1},
    {"bad third byte", B("x\xe2\x82\x28"), 1},
    {"bad fourth byte", B("x\xf0\x9f\x98\x28"), 1},
    {"latin-1 e acute", B("caf\xe9"), 3},
#undef B
};

static void test_malformed(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(k_malformed); i++) {
        size_t off = 99;
        uint32_t cp = 0;
        if (js_text_valid(k_malformed[i].bytes, k_malformed[i].len, &off, &cp))
            fail_msg("case '%s' accepted", k_malformed[i].name);
        if (off != k_malformed[i].off || cp != JS_TEXT_NOT_UTF8)
            fail_msg("case '%s': offset %zu cp %u", k_malformed[i].name, off, (unsigned)cp);
    }
}

static void test_nul(void **state)
{
    (void)state;
    size_t off = 99;
    uint32_t cp = 1;
    assert_false(js_text_valid("ok\0more", 7, &off, &cp));
    assert_int_equal(off, 2);
    assert_int_equal(cp, 0);
    assert_false(js_text_valid("\0", 1, NULL, NULL));
}

static void test_clean(void **state)
{
    (void)state;
    static const char *const clean[] = {
        "",
        "spiffe://example.org/issuer-a",
        "dns:login.internal.example",
        "cn:legacy batch ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./",
        "caf\xc3\xa9",                                      /* café */
        "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82", /* привет */
        "\xe6\x9d\xb1\xe4\xba\xac",                         /* 東京 */
        "\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a",                 /* عربي (RTL letters are fine) */
        "\xf0\x9f\x98\x80 \xf0\x9f\x94\x91",                /* emoji */
        "\xc2\xa0",                                         /* NBSP: Zs, visible as a space */
        "\xc2\xa1\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80", /* edges of each length */
        "\xef\xbf\xbd\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",         /* U+FFFD, U+10000, U+10FFFF */
    };
    for (size_t i = 0; i < COUNT(clean); i++) {
        size_t off = 0;
        uint32_t cp = 0;
        if (!js_text_valid(clean[i], strlen(clean[i]), &off, &cp))
            fail_msg("clean case %zu refused at %zu (cp %u)", i, off, (unsigned)cp);
    }
    assert_true(js_text_valid(NULL, 0, NULL, NULL));
}

static void test_check_messages(void **state)
{
    (void)state;
    js_err err;
    const char *s = "issuer\xc2\x85"
                    "a";
    js_err_clear(&err);
    assert_int_equal(
        js_text_check("identity", s, strlen(s), 64, JS_EDENIED, JS_R_IDENTITY_INVALID, &err),
        JS_EDENIED);
    assert_string_equal(js_reason_name(err.reason), "identity.invalid");
    assert_non_null(strstr(err.msg, "identity"));
    assert_non_null(strstr(err.msg, "U+0085"));
    assert_non_null(strstr(err.msg, "byte 6"));
    assert_null(strstr(err.msg, "\xc2\x85")); /* never the raw bytes */

    s = "a\xe2\x80\xae"
        "b";
    assert_int_equal(js_text_check("sub", s, strlen(s), 0, JS_EINVAL, JS_R_POLICY_SUBJECT, &err),
                     JS_EINVAL);
    assert_non_null(strstr(err.msg, "U+202E"));
    assert_non_null(strstr(err.msg, "format character"));
    assert_null(strstr(err.msg, "\xe2\x80\xae"));

    assert_int_equal(
        js_text_check("request_id", "ok\0x", 4, 0, JS_EINVAL, JS_R_REQUEST_REQUEST_ID, &err),
        JS_EINVAL);
    assert_non_null(strstr(err.msg, "NUL"));
    assert_non_null(strstr(err.msg, "request_id"));

    assert_int_equal(
        js_text_check("key", "x\xc0\x80", 3, 0, JS_EINVAL, JS_R_REQUEST_KEY_NAME, &err), JS_EINVAL);
    assert_non_null(strstr(err.msg, "UTF-8"));

    assert_int_equal(js_text_check("reason", "abcdef", 6, 5, JS_EINVAL, JS_R_REQUEST_REASON, &err),
                     JS_EINVAL);
    assert_non_null(strstr(err.msg, "at most 5"));

    js_err_clear(&err);
    assert_int_equal(js_text_check("reason", "abcde", 5, 5, JS_EINVAL, JS_R_REQUEST_REASON, &err),
                     JS_OK);
    assert_int_equal(
        js_text_check("reason", "\xf0\x9f\x98\x80", 4, 0, JS_EINVAL, JS_R_REQUEST_REASON, &err),
        JS_OK);
    assert_int_equal(js_text_check("empty", "", 0, 5, JS_EINVAL, JS_R_REQUEST_REASON, &err), JS_OK);
    assert_int_equal(js_text_check("x", "\x7f", 1, 0, JS_EINVAL, JS_R_REQUEST_REASON, NULL),
                     JS_EINVAL);
}

/* Every code point once: Cc/Cf agree with the range table; no surrogate is
 * accepted, everything else in U+0000-U+10FFFF is (classes aside). */
static void test_exhaustive(void **state)
{
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        char buf[4];
        size_t n = enc(cp, buf);
        bool want = !in_bad_range(cp) && !(cp >= 0xD800 && cp <= 0xDFFF);
        if (js_text_valid(buf, n, NULL, NULL) != want)
            fail_msg("U+%04X: want %s", (unsigned)cp, want ? "clean" : "refused");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_edges), cmocka_unit_test(test_hiding_characters),
        cmocka_unit_test(test_malformed),   cmocka_unit_test(test_nul),
        cmocka_unit_test(test_clean),       cmocka_unit_test(test_check_messages),
        cmocka_unit_test(test_exhaustive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
