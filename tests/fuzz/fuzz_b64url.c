/*
 * fuzz_b64url.c - libFuzzer target: strict base64url decoding accepts only
 * canonical encodings, so decode-then-encode must give back the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    uint8_t out[4096];
    size_t n = 0;
    if (b64url_decode((const char *)data, size, out, sizeof(out), &n, NULL) != JS_OK)
        return 0;
    char back[4096 * 2];
    size_t m = b64url_encode(out, n, back, sizeof(back));
    if (m != size || memcmp(back, data, size) != 0)
        abort(); /* a non-canonical encoding was accepted */
    return 0;
}
