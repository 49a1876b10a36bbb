/*
 * b64url.h - base64url without padding (RFC 4648 §5, as used by JWS: RFC 7515 §2).
 *
 * Decoding is strict: only the URL-safe alphabet, no padding, no whitespace,
 * and the unused low bits of the last character must be zero (RFC 4648 §3.5),
 * so every byte string has exactly one accepted encoding.
 */
#ifndef JS_B64URL_H
#define JS_B64URL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Characters needed to encode n bytes (no NUL). */
#define B64URL_ENCODED_LEN(n) ((((n) / 3) * 4) + (((n) % 3) ? ((n) % 3) + 1 : 0))
/* Upper bound of bytes a string of n characters decodes to. */
#define B64URL_DECODED_MAX(n) ((((n) + 3) / 4) * 3)

/*
 * Encodes n bytes into out and NUL-terminates. out_cap must be at least
 * B64URL_ENCODED_LEN(n) + 1. Returns the encoded length, or 0 with out[0]=0
 * if out_cap is too small (n == 0 also returns 0).
 */
size_t b64url_encode(const uint8_t *in, size_t n, char *out, size_t out_cap);

/* Encodes into a malloc'd NUL-terminated string (NULL on OOM). */
char *b64url_encode_alloc(const uint8_t *in, size_t n);

/* Strictly decodes n characters into out (cap bytes). JS_EINVAL on bad input. */
js_status b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len,
                        js_err *err) JS_WUR;

#endif
