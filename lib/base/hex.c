/*
 * hex.c - lower-case hex encoding (see hex.h).
 */
#include "hex.h"

char js_hex_digit(unsigned v)
{
    return "0123456789abcdef"[v & 15u];
}

void js_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = js_hex_digit(in[i] >> 4);
        out[2 * i + 1] = js_hex_digit(in[i]);
    }
    out[2 * n] = '\0';
}
