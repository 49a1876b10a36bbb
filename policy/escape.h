/*
 * escape.h - quoting untrusted values (claim values, identities) for deny
 * messages and log lines: bounded, and every byte outside printable ASCII
 * (control characters, DEL, non-ASCII such as a Cyrillic look-alike letter)
 * and the backslash and quote characters are written as \xNN, so a value can
 * neither forge a log line nor hide what it really is.
 */
#ifndef JS_POLICY_ESCAPE_H
#define JS_POLICY_ESCAPE_H

#include <stddef.h>

/* Writes the escaped form of s[0..len) into buf (cap bytes, cap >= 8),
 * truncated with "..." when it does not fit; returns buf. */
const char *js_escape(char *buf, size_t cap, const char *s, size_t len);

#endif
