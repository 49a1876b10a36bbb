/*
 * fuzz_claims.c - libFuzzer target for the claims parser and the server
 * claim rules: any input must be accepted or rejected cleanly, never crash,
 * leak, or produce an accepted claim set that violates the rules.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *c = NULL;
    js_err err;
    if (claims_parse(data, size, &c, &err) != JS_OK)
        return 0;
    if (!json_is_object(c) || claims_depth(c) > CLAIMS_MAX_DEPTH)
        abort();
    claims_lifetime life = {300, 3600, 0};
    int64_t exp = 0;
    if (claims_apply_server(c, "https://fuzz", 1700000000, &life, "AAAAAAAAAAAAAAAAAAAAAA", &exp,
                            &err) == JS_OK) {
        if (exp <= 1700000000 || exp > 1700000000 + 3600)
            abort();
        char *out = json_dumps(c, JSON_COMPACT);
        free(out);
    }
    json_decref(c);
    return 0;
}
