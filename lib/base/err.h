/*
 * err.h - the one error convention of jwt-signer.
 *
 * Every fallible function returns a js_status and, when it fails, fills a
 * caller-owned js_err with a stable machine-readable reason code (e.g.
 * "claims.duplicate_member") and a human message naming the rule that was
 * broken. Libraries never print and never exit; only main() does. Only
 * signer/rpc maps a js_status to a gRPC status code, in one place.
 *
 * Messages may name the offending value for claims the caller sent, but never
 * a secret (PIN, private key material, a token).
 */
#ifndef JS_ERR_H
#define JS_ERR_H

#include <stddef.h>

#define JS_WUR          __attribute__((warn_unused_result))
#define JS_PRINTF(f, a) __attribute__((format(printf, f, a)))

typedef enum js_status {
    JS_OK = 0,
    JS_EINVAL,    /* malformed input                  -> INVALID_ARGUMENT */
    JS_EDENIED,   /* well-formed, more than permitted -> PERMISSION_DENIED */
    JS_ELIMIT,    /* over the caller's rate           -> RESOURCE_EXHAUSTED */
    JS_EUNAVAIL,  /* HSM or audit log trouble         -> UNAVAILABLE */
    JS_EINTERNAL, /* a bug or out of memory           -> INTERNAL */
    JS_ECONFIG,   /* bad configuration (start-up only) */
    JS_ENOTFOUND, /* a named thing does not exist           -> NOT_FOUND */
    JS_ESTATE,    /* not possible in the current state     -> FAILED_PRECONDITION */
} js_status;

#define JS_REASON_MAX 64
#define JS_MSG_MAX    1024

typedef struct js_err {
    js_status status;
    char reason[JS_REASON_MAX]; /* stable code, dotted lower case */
    char msg[JS_MSG_MAX];       /* human message, names the rule */
} js_err;

/* Fills *err (if not NULL) and returns st, so callers can `return js_err_set(...)`. */
js_status js_err_set(js_err *err, js_status st, const char *reason, const char *fmt, ...)
    JS_PRINTF(4, 5);

/* Prefixes the message already in *err with context ("key 'x': ..."). */
void js_err_prefix(js_err *err, const char *fmt, ...) JS_PRINTF(2, 3);

void js_err_clear(js_err *err);

/* Short lower-case name of a status ("invalid", "denied", ...). */
const char *js_status_name(js_status st);

/* Guard macros: the happy path reads straight down, failures branch out. */
#define JS_GUARD(expr)                                                                             \
    do {                                                                                           \
        js_status js_guard_st_ = (expr);                                                           \
        if (js_guard_st_ != JS_OK)                                                                 \
            return js_guard_st_;                                                                   \
    } while (0)

#define JS_ENSURE(cond, err, st, reason, ...)                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return js_err_set((err), (st), (reason), __VA_ARGS__);                                 \
    } while (0)

/* Allocation failure is an internal error with a fixed reason. */
#define JS_ENSURE_ALLOC(ptr, err)                                                                  \
    JS_ENSURE((ptr) != NULL, (err), JS_EINTERNAL, "internal.oom", "out of memory")

/* Free and NULL (curl's safefree). */
#define JS_FREE(p)                                                                                 \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

#endif
