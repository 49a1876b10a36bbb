/*
 * fuzz_certid.c - libFuzzer target for the identity of a DER client
 * certificate (lib/base/certid.h): any bytes are refused cleanly with an
 * identity.* reason (and out left ""), or give an identity that
 * identity_parse reads back with the type identity_type_of says, never a
 * unix: one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "certid.h"
#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[IDENTITY_MAX + 1];
    js_err err = {0};
    if (identity_from_cert_der(data, size, out, sizeof(out), &err) != JS_OK) {
        if (out[0] != '\0' || strncmp(js_reason_name(err.reason), "identity.", 9) != 0)
            abort();
        return 0;
    }
    js_identity_type t;
    if (identity_parse(out, &t, &err) != JS_OK || t != identity_type_of(out) || t == JS_ID_UNIX)
        abort();
    return 0;
}
