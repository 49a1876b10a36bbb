/*
 * keystate_int.h - what keystate.c (the lifecycle rules) and keystate_file.c
 * (the state file) share: the representation behind js_keystate and the
 * lookups and checks both need. Private to signer/core.
 */
#ifndef JS_KEYSTATE_INT_H
#define JS_KEYSTATE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keystate.h"

typedef struct ks_key {
    char name[JS_KEY_NAME_MAX + 1];
    /* The kid of version 1, kept after that record is pruned so that a
     * restart can still tell whether the token holds the same key. */
    char initial_kid[JS_KS_KID_MAX + 1];
    /* Highest version number ever given: numbers (and so HSM labels) are
     * never reused, even after old records were pruned. */
    uint32_t last_version;
    int64_t rotation_period;
    js_keyver *v; /* oldest first */
    size_t n;
    size_t cap;
} ks_key;

struct js_keystate {
    ks_key *keys;
    size_t n;
    size_t cap;
};

bool ks_token_ok(const char *s, size_t max);
bool ks_reason_ok(const char *s);
ks_key *ks_find_key(const js_keystate *ks, const char *name);
const js_keyver *ks_find_kid_any(const js_keystate *ks, const char *kid, const ks_key **key);
bool ks_label_used(const js_keystate *ks, const char *label);
js_status ks_key_reserve(ks_key *k, size_t more, js_err *err);
js_status ks_add_key(js_keystate *ks, const char *name, ks_key **out, js_err *err);

#endif
