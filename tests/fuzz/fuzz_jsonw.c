/*
 * fuzz_jsonw.c - libFuzzer target, differential: the one-pass JSON writer
 * (lib/base/jsonw.h) against jansson 2.14 for any bytes. js_jsonw_string
 * must write exactly json_dumps(json_stringn(...)) and refuse exactly what
 * json_stringn refuses (invalid UTF-8); the lossy form must write what the
 * audit log's former repair (U+FFFD per bad byte, then json_string) did;
 * js_jsonw_canonical_strings must be true exactly when json_loads +
 * json_dumps give back the same bytes for a string or an array of strings.
 * Any difference aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jsonw.h"
#include "../unit/test_jsongen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FLAGS  (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY)
#define MAX_IN 4096

static void same_or_abort(const char *want, js_jsonw *w)
{
    const char *got = js_jsonw_finish(w);
    if (got == NULL || strcmp(got, want) != 0)
        abort();
}

static bool jansson_round_trip(const char *s, size_t flags)
{
    json_t *v = json_loads(s, flags, NULL);
    bool strings = json_is_string(v);
    if (json_is_array(v)) {
        strings = true;
        for (size_t i = 0; i < json_array_size(v); i++)
            strings = strings && json_is_string(json_array_get(v, i));
    }
    char *t = v != NULL ? json_dumps(v, FLAGS) : NULL;
    bool same = strings && t != NULL && strcmp(t, s) == 0;
    free(t);
    json_decref(v);
    return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_IN)
        return 0;
    static char out[MAX_IN * JS_JSONW_ESC_MAX + 3];
    const char *in = (const char *)data;
    js_jsonw w;

    /* Any bytes, NUL included. */
    json_t *v = json_stringn(in, size);
    js_jsonw_init(&w, out, sizeof(out));
    bool ok = js_jsonw_string(&w, in, size);
    if (ok != (v != NULL) || ok != js_jsonw_utf8_valid(in, size))
        abort();
    if (v != NULL) {
        char *want = json_dumps(v, FLAGS);
        if (want == NULL)
            abort();
        same_or_abort(want, &w);
        free(want);
    } else if (js_jsonw_len(&w) != 0) {
        abort(); /* a refused string appends nothing */
    }
    json_decref(v);

    /* The input as a C string (up to its first NUL). */
    static char cstr[MAX_IN + 1];
    memcpy(cstr, in, size);
    cstr[size] = '\0';
    size_t clen = strlen(cstr);
    json_t *rep = jg_old_repaired(cstr);
    if (rep == NULL)
        abort();
    char *want = json_dumps(rep, FLAGS);
    json_decref(rep);
    js_jsonw_init(&w, out, sizeof(out));
    js_jsonw_string_lossy(&w, cstr, clen);
    same_or_abort(want, &w);
    free(want);

    bool fast = js_jsonw_canonical_strings(cstr, clen);
    if (fast != jansson_round_trip(cstr, JSON_DECODE_ANY) ||
        fast != jansson_round_trip(cstr, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES))
        abort();
    return 0;
}
