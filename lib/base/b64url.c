/*
 * b64url.c - base64url without padding (RFC 4648 §5), strict on decode.
 *
 * JWS compact serialisation (RFC 7515 §2, Appendix C) uses this encoding for
 * every part. Strict decoding (no padding, no whitespace, zero trailing bits)
 * gives each byte string exactly one accepted encoding, so a token cannot be
 * altered into a different string that decodes to the same bytes.
 */
#include "b64url.h"

#include <stdlib.h>
#include <string.h>

static const char k_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of a base64url character, or -1. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

size_t b64url_encode(const uint8_t *in, size_t n, char *out, size_t out_cap)
{
    size_t need = B64URL_ENCODED_LEN(n);
    if (out_cap == 0)
        return 0;
    if (n > (SIZE_MAX / 4) - 1 || out_cap < need + 1) {
        out[0] = '\0';
        return 0;
    }
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = k_alphabet[(v >> 18) & 63];
        out[o++] = k_alphabet[(v >> 12) & 63];
        out[o++] = k_alphabet[(v >> 6) & 63];
        out[o++] = k_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = k_alphabet[(v >> 18) & 63];
        out[o++] = k_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = k_alphabet[(v >> 18) & 63];
        out[o++] = k_alphabet[(v >> 12) & 63];
        out[o++] = k_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

char *b64url_encode_alloc(const uint8_t *in, size_t n)
{
    if (n > (SIZE_MAX / 4) - 4)
        return NULL;
    size_t cap = B64URL_ENCODED_LEN(n) + 1;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    b64url_encode(in, n, out, cap);
    return out;
}

js_status b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len,
                        js_err *err)
{
    *out_len = 0;
    /* A single leftover character carries only 6 bits: never a valid encoding. */
    JS_ENSURE(n % 4 != 1, err, JS_EINVAL, JS_R_B64URL_LENGTH,
              "base64url: invalid length %zu (RFC 4648 §5, no padding)", n);
    size_t need = (n / 4) * 3 + ((n % 4) ? (n % 4) - 1 : 0);
    JS_ENSURE(need <= cap, err, JS_EINVAL, JS_R_B64URL_TOO_LONG,
              "base64url: decodes to %zu bytes, limit %zu", need, cap);

    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        JS_ENSURE(v >= 0, err, JS_EINVAL, JS_R_B64URL_CHAR,
                  "base64url: invalid character at offset %zu", i);
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* RFC 4648 §3.5: the pad bits must be zero, or two strings decode alike. */
    JS_ENSURE(acc == 0, err, JS_EINVAL, JS_R_B64URL_TRAILING_BITS,
              "base64url: non-zero trailing bits (non-canonical encoding)");
    *out_len = o;
    return JS_OK;
}
