/*
 * text.h - the one check for "clean text": strings that reach logs, audit
 * records, metrics labels, policy comparisons and operators' screens.
 *
 * Clean text is valid UTF-8 (RFC 3629 §3-4: shortest form only, no UTF-16
 * surrogates U+D800-U+DFFF, nothing above U+10FFFF), contains no NUL, no
 * Unicode control character (general category Cc: C0 U+0000-U+001F, DEL
 * U+007F, C1 U+0080-U+009F) and no format character (category Cf, Unicode
 * 15: soft hyphen, zero-width characters, bidi embeddings, overrides and
 * isolates, BOM, interlinear annotation, tag characters, ...). Cc characters
 * forge log lines and terminal output; Cf characters are invisible or reorder
 * what a reader sees (CVE-2021-42574 "Trojan Source"), so two identities that
 * look the same on a screen could differ. Everything else, letters of any
 * script and emoji included, is clean.
 */
#ifndef JS_TEXT_H
#define JS_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* *bad_cp when the bytes at *bad_offset are not well-formed UTF-8. */
#define JS_TEXT_NOT_UTF8 UINT32_MAX

/*
 * true if s[0..len) is clean text (s may be NULL when len is 0). Otherwise
 * false, with the byte offset of the first offending sequence in *bad_offset
 * and its code point in *bad_cp (JS_TEXT_NOT_UTF8 for malformed UTF-8);
 * either pointer may be NULL.
 */
bool js_text_valid(const char *s, size_t len, size_t *bad_offset, uint32_t *bad_cp);

/* Decodes one UTF-8 sequence at s[0..left) (left >= 1): its length and
 * *cp, or 0 when the bytes are not a well-formed sequence (RFC 3629 §4: no
 * overlong forms, no surrogates, nothing above U+10FFFF, not truncated).
 * The one UTF-8 decoder (text.c, jsonw.c). */
size_t js_utf8_decode(const unsigned char *s, size_t left, uint32_t *cp);

/*
 * The same check as an error. When s[0..len) is not clean text, or longer
 * than max bytes (max 0: no length limit), sets *err with status st and
 * reason `reason`, and a message naming `field`, the byte offset and the code
 * point as U+XXXX with its class (never the raw bytes, which could themselves
 * be the attack), and returns st. JS_OK otherwise. Empty text is clean: a
 * caller that requires a value checks that itself.
 */
js_status js_text_check(const char *field, const char *s, size_t len, size_t max, js_status st,
                        js_reason reason, js_err *err) JS_WUR;

#endif
