/*
 * jsonw.h - a small bounded JSON text writer for the hot paths (the request
 * log line, the audit record body): one pass into caller storage, no tree,
 * no allocation. Its output is byte-for-byte what jansson 2.14's
 * json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) writes for the same values
 * (no JSON_ENSURE_ASCII, no JSON_ESCAPE_SLASH): `"` and `\` escaped, \b \f
 * \n \r \t, every other byte below 0x20 as \u00XX (upper-case hex), and
 * everything else, U+2028/U+2029 and DEL included, as is. Strings must be
 * valid UTF-8 by jansson's rule (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF); the differential tests (tests/unit/test_jsonw.c,
 * tests/fuzz/fuzz_jsonw.c) hold it to jansson.
 *
 * Bounded: an append that does not fit is not written but still counted, so
 * after a pass js_jsonw_fits() says whether the text fits and js_jsonw_len()
 * how many bytes (without the NUL) it needs: retry with that much storage.
 */
#ifndef JS_JSONW_H
#define JS_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h" /* JS_WUR */

/* The most bytes one input byte of a string becomes ("\u001F"). */
#define JS_JSONW_ESC_MAX 6u

/* Caller storage; fields are private to jsonw.c (a plain struct so it can
 * live on the stack). */
typedef struct js_jsonw {
    char *buf;
    size_t cap;
    size_t len; /* bytes the text needs so far, written or not */
} js_jsonw;

/* Starts an empty text in buf[0..cap) (cap may be 0 to measure only). */
void js_jsonw_init(js_jsonw *w, char *buf, size_t cap);

/* Whether everything appended so far was written, with room for a NUL. */
bool js_jsonw_fits(const js_jsonw *w);

/* The length of the text (what it needs, when it did not fit). */
size_t js_jsonw_len(const js_jsonw *w);

/* NUL-terminates and returns the text, or NULL when it did not fit. */
const char *js_jsonw_finish(js_jsonw *w);

/* Appends n bytes as they are (punctuation, keys known to need no escape,
 * a value already encoded as canonical JSON). */
void js_jsonw_raw(js_jsonw *w, const char *s, size_t n);

/* Appends a string literal as it is (its length known at compile time). */
#define JS_JSONW_LIT(w, lit) js_jsonw_raw((w), "" lit, sizeof(lit) - 1)

/* Appends a NUL-terminated string as it is. */
void js_jsonw_cstr(js_jsonw *w, const char *s);

/* Drops what was appended after the text was len bytes long (len from
 * js_jsonw_len): a member that turned out not to be encodable. */
void js_jsonw_truncate(js_jsonw *w, size_t len);

/* Whether s[0..n) is UTF-8 that jansson's json_stringn() accepts. */
bool js_jsonw_utf8_valid(const char *s, size_t n) JS_WUR;

/* Appends s[0..n) as a JSON string, exactly as jansson dumps it. false, and
 * nothing appended, when s is not valid UTF-8 (where json_stringn() returns
 * NULL). */
bool js_jsonw_string(js_jsonw *w, const char *s, size_t n) JS_WUR;

/* Like js_jsonw_string, but each byte that does not start a valid UTF-8
 * sequence is written as U+FFFD (the audit log's rule: a record is never
 * lost to a bad byte). Always succeeds. */
void js_jsonw_string_lossy(js_jsonw *w, const char *s, size_t n);

/* Appends v in decimal, as jansson dumps a json_integer ("%lld"). */
void js_jsonw_int(js_jsonw *w, int64_t v);

/*
 * Whether s[0..n) is a JSON string, or an array of JSON strings, written
 * exactly as jansson compact-dumps the value json_loads() makes of it (so
 * loading and dumping it would give back the same bytes and can be
 * skipped): no whitespace, no escape jansson would not write (\/, \u for a
 * character that is not a control, lower-case hex, \u0000, which jansson
 * refuses to load), valid UTF-8. false means "not known to be canonical":
 * use jansson.
 */
bool js_jsonw_canonical_strings(const char *s, size_t n) JS_WUR;

#endif
