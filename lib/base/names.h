/*
 * names.h - one validator and one length limit per kind of name, so a name
 * accepted in one place (the configuration, a request, a state file) is
 * accepted, and bounded, the same way everywhere else.
 *
 *   key name      keys[].name, a request's key, the key state file:
 *                 [A-Za-z0-9._-], 1..JS_KEY_NAME_MAX bytes
 *   HSM label     CKA_LABEL of a key object (PKCS#11 §4.4): printable ASCII
 *                 (0x20..0x7e), 1..JS_LABEL_MAX bytes, so a label can be
 *                 neither truncated in a template nor used to forge a log line
 *   env name      hsm.pin_env: a POSIX portable environment variable name
 *                 (XBD 8.1), [A-Za-z_][A-Za-z0-9_]*, 1..JS_ENV_NAME_MAX bytes
 *
 * Each validator reads at most its limit plus one byte of s; NULL is invalid.
 * Callers word their own errors (they know the field and the reason).
 */
#ifndef JS_NAMES_H
#define JS_NAMES_H

#include <stdbool.h>

#define JS_KEY_NAME_MAX 64
#define JS_LABEL_MAX    128
#define JS_ENV_NAME_MAX 128

bool js_key_name_ok(const char *s);
bool js_label_ok(const char *s);
bool js_env_name_ok(const char *s);

#endif
