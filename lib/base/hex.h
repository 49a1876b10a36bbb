/*
 * hex.h - the one lower-case hex encoder (digests in audit records, ETags,
 * token digests, policy hashes, escapes).
 */
#ifndef JS_HEX_H
#define JS_HEX_H

#include <stddef.h>
#include <stdint.h>

/* The lower-case hex digit of a nibble (v & 15). */
char js_hex_digit(unsigned v);

/* Writes 2*n hex digits of in[0..n) and a NUL to out, which holds 2*n+1 bytes. */
void js_hex_encode(const uint8_t *in, size_t n, char *out);

#endif
