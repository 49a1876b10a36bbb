/*
 * test_b64url.c - base64url (RFC 4648 §5) known answers and strict decoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "b64url.h"

/* RFC 4648 §10 vectors (no padding) and RFC 7515 Appendix C. */
static const struct {
    const char *raw;
    size_t len;
    const char *enc;
} k_vectors[] = {
    {"", 0, ""},
    {"f", 1, "Zg"},
    {"fo", 2, "Zm8"},
    {"foo", 3, "Zm9v"},
    {"foob", 4, "Zm9vYg"},
    {"fooba", 5, "Zm9vYmE"},
    {"foobar", 6, "Zm9vYmFy"},
    {"\x03\xec\xff\xe0\xc1", 5, "A-z_4ME"}, /* RFC 7515 Appendix C */
    {"\xfb\xff", 2, "-_8"},                 /* the two URL-safe characters */
};

static void test_encode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_vectors) / sizeof(k_vectors[0]); i++) {
        char out[64];
        size_t n =
            b64url_encode((const uint8_t *)k_vectors[i].raw, k_vectors[i].len, out, sizeof(out));
        assert_int_equal(n, strlen(k_vectors[i].enc));
        assert_string_equal(out, k_vectors[i].enc);
        assert_int_equal(B64URL_ENCODED_LEN(k_vectors[i].len), strlen(k_vectors[i].enc));
    }
}

static void test_decode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_vectors) / sizeof(k_vectors[0]); i++) {
        uint8_t out[64];
        size_t n = 99;
        js_err err;
        assert_int_equal(
            b64url_decode(k_vectors[i].enc, strlen(k_vectors[i].enc), out, sizeof(out), &n, &err),
            JS_OK);
        assert_int_equal(n, k_vectors[i].len);
        assert_memory_equal(out, k_vectors[i].raw, n);
    }
}

static void test_decode_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *reason;
    } bad[] = {
        {"Zg==", "b64url.char"},         /* padding */
        {"Zm9v\n", "b64url.length"},     /* trailing newline */
        {"Zm9\n", "b64url.char"},        /* whitespace */
        {"Zm 9", "b64url.char"},         /* space */
        {"+/8", "b64url.char"},          /* standard alphabet */
        {"Z", "b64url.length"},          /* 6 bits: never valid */
        {"Zm9vY", "b64url.length"},      /* 4n+1 */
        {"Zh", "b64url.trailing_bits"},  /* 'h' leaves non-zero low bits */
        {"Zm9", "b64url.trailing_bits"}, /* 'Zm9' -> "fo" needs 'Zm8' */
        {"Zm9v\x80", "b64url.length"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t out[64];
        size_t n = 0;
        js_err err;
        js_err_clear(&err);
        assert_int_equal(b64url_decode(bad[i].in, strlen(bad[i].in), out, sizeof(out), &n, &err),
                         JS_EINVAL);
        assert_string_equal(js_reason_name(err.reason), bad[i].reason);
    }
}

static void test_decode_capacity(void **state)
{
    (void)state;
    uint8_t out[2];
    size_t n = 0;
    js_err err;
    assert_int_equal(b64url_decode("Zm9v", 4, out, sizeof(out), &n, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "b64url.too_long");
}

static void test_encode_small_buffer(void **state)
{
    (void)state;
    char out[4];
    assert_int_equal(b64url_encode((const uint8_t *)"foobar", 6, out, sizeof(out)), 0);
    assert_string_equal(out, "");
}

static void test_roundtrip_all_lengths(void **state)
{
    (void)state;
    uint8_t raw[300];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(i * 37 + 11);
    for (size_t len = 0; len <= sizeof(raw); len++) {
        char *enc = b64url_encode_alloc(raw, len);
        assert_non_null(enc);
        uint8_t back[300];
        size_t n = 0;
        assert_int_equal(b64url_decode(enc, strlen(enc), back, sizeof(back), &n, NULL), JS_OK);
        assert_int_equal(n, len);
        assert_memory_equal(back, raw, len);
        free(enc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_vectors),      cmocka_unit_test(test_decode_vectors),
        cmocka_unit_test(test_decode_rejects),      cmocka_unit_test(test_decode_capacity),
        cmocka_unit_test(test_encode_small_buffer), cmocka_unit_test(test_roundtrip_all_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
