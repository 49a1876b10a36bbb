/*
 * fuzz_identity.c - libFuzzer target for the typed identity (identity.h):
 * any bytes, as operator text (identity_parse) and as each certificate field
 * (identity_select), must be accepted or refused cleanly with an identity.*
 * reason, and the forms must agree: a selected identity parses with the type
 * identity_type_of gives it; a parsed unix: identity is exactly what
 * identity_from_peer writes for its uid; no certificate field ever yields a
 * unix: identity.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reason(const js_err *err)
{
    if (strncmp(js_reason_name(err->reason), "identity.", 9) != 0)
        abort();
}

/* The certificate gave this identity: it must read back as what it is. */
static void check_selected(const char *out)
{
    js_err err = {0};
    js_identity_type t;
    if (identity_parse(out, &t, &err) != JS_OK || t != identity_type_of(out) || t == JS_ID_UNIX)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > IDENTITY_MAX + 64)
        return 0;
    char text[IDENTITY_MAX + 65];
    memcpy(text, data, size);
    text[size] = '\0'; /* an embedded NUL just ends the text early */

    js_err err = {0};
    js_identity_type t;
    if (identity_parse(text, &t, &err) == JS_OK) {
        if (t != identity_type_of(text))
            abort();
        if (t == JS_ID_UNIX) {
            /* One spelling per uid: the text is what the peer would get. */
            unsigned long uid = strtoul(text + 9, NULL, 10);
            char peer[IDENTITY_MAX + 1];
            if (identity_from_peer(uid, peer, sizeof(peer), &err) != JS_OK ||
                strcmp(peer, text) != 0)
                abort();
        }
    } else {
        check_reason(&err);
    }

    const char *one[1] = {text};
    const identity_names as[3] = {
        {one, 1, NULL, 0, NULL}, /* URI SAN */
        {NULL, 0, one, 1, NULL}, /* DNS SAN */
        {NULL, 0, NULL, 0, text} /* CN */
    };
    for (size_t i = 0; i < 3; i++) {
        char out[IDENTITY_MAX + 1];
        if (identity_select(&as[i], out, sizeof(out), &err) == JS_OK)
            check_selected(out);
        else
            check_reason(&err);
    }
    return 0;
}
