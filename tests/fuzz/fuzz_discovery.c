/*
 * fuzz_discovery.c - libFuzzer target for the OIDC discovery document
 * (signer/core/discovery.h). The input is issuer, jwks_uri and a list of
 * algorithms (one byte each, JS_ALG_NONE..JS_ALG_EDDSA by value mod 6)
 * separated by NUL bytes (an empty jwks_uri = derived). A URL js_discovery_url_ok
 * accepts is an http(s) URL of printable ASCII; a document that is built is
 * JSON whose issuer is the input's byte for byte and whose algorithm list is
 * sorted and has no duplicates.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "discovery.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_url(const char *s)
{
    if (!js_discovery_url_ok(s))
        return;
    size_t n = strlen(s);
    if (n == 0 || n > JS_DISCOVERY_URL_MAX ||
        (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0))
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f || s[i] == '#')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    char *buf = malloc(size + 3);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';
    /* Three NUL-terminated fields; missing ones are empty. */
    const char *issuer = buf;
    const char *uri = issuer + strlen(issuer) + 1;
    if (uri > buf + size)
        uri = buf + size + 1;
    const char *alg_bytes = uri + strlen(uri) + 1;
    if (alg_bytes > buf + size + 1)
        alg_bytes = buf + size + 2;
    check_url(issuer);
    check_url(uri);

    char *out = NULL;
    js_err err = {0};
    js_alg algs[64];
    size_t nalgs = 0;
    for (const char *p = alg_bytes; *p != '\0' && nalgs < sizeof(algs) / sizeof(algs[0]); p++)
        algs[nalgs++] = (js_alg)((unsigned char)*p % (JS_ALG_EDDSA + 1));
    if (js_discovery_build(issuer, uri[0] != '\0' ? uri : NULL, algs, nalgs, &out, &err) == JS_OK) {
        json_t *doc = json_loads(out, 0, NULL);
        const char *iss = json_string_value(json_object_get(doc, "issuer"));
        json_t *names = json_object_get(doc, "id_token_signing_alg_values_supported");
        if (doc == NULL || iss == NULL || strcmp(iss, issuer) != 0 || !json_is_array(names))
            abort();
        for (size_t i = 1; i < json_array_size(names); i++)
            if (strcmp(json_string_value(json_array_get(names, i - 1)),
                       json_string_value(json_array_get(names, i))) >= 0)
                abort(); /* not sorted, or a duplicate */
        json_decref(doc);
        free(out);
    } else if (out != NULL) {
        abort();
    }
    free(buf);
    return 0;
}
