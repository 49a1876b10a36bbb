/*
 * err.h - the one error convention of jwt-signer.
 *
 * Every fallible function returns a js_status and, when it fails, fills a
 * caller-owned js_err with a reason from the closed set in reasons.def (e.g.
 * JS_R_CLAIMS_DUPLICATE_MEMBER, named "claims.duplicate_member") and a human
 * message naming the rule that was broken. Code branches on the status or on
 * the enum, never on a reason's name. Libraries never print and never exit;
 * only main() does. Only signer/rpc maps a js_status to a gRPC status code,
 * in one place.
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

/* The statuses a reason is used with (reasons.def "classes"). */
#define JS_C_OK            (1u << JS_OK)
#define JS_C_INVALID       (1u << JS_EINVAL)
#define JS_C_DENIED        (1u << JS_EDENIED)
#define JS_C_LIMIT         (1u << JS_ELIMIT)
#define JS_C_UNAVAIL       (1u << JS_EUNAVAIL)
#define JS_C_INTERNAL      (1u << JS_EINTERNAL)
#define JS_C_CONFIG        (1u << JS_ECONFIG)
#define JS_C_NOTFOUND      (1u << JS_ENOTFOUND)
#define JS_C_STATE         (1u << JS_ESTATE)
#define JS_C_UNIMPLEMENTED (1u << 14) /* an RPC method we do not serve */
#define JS_C_RECORD        (1u << 15) /* only ever written into audit records */
#define JS_C_ANY           0xffffu    /* the caller picks the status */

/* The closed set of reasons, one per row of reasons.def. JS_R_NONE ("") is
 * the reason of a cleared js_err. */
typedef enum js_reason {
    JS_R_NONE = 0,
#define JS_REASON(id, name, classes, meaning) JS_R_##id,
#include "reasons.def"
#undef JS_REASON
    JS_R_COUNT
} js_reason;

/* The stable name of r ("claims.duplicate_member"); "" for JS_R_NONE and for
 * a value outside the table. */
const char *js_reason_name(js_reason r);
/* The one-line meaning of r from reasons.def. */
const char *js_reason_meaning(js_reason r);
/* The JS_C_* classes of r. */
unsigned js_reason_classes(js_reason r);
/* The reason named "prefix.code" (prefix may be NULL: then code is the whole
 * name); JS_R_NONE when the table has no such row. For the families that are
 * built from a domain (YAML documents, state files) and for parsing names
 * read back from files; never for branching. */
js_reason js_reason_lookup(const char *prefix, const char *code);

#define JS_MSG_MAX 1024

typedef struct js_err {
    js_status status;
    js_reason reason;     /* from the closed set; js_reason_name() names it */
    char msg[JS_MSG_MAX]; /* human message, names the rule */
} js_err;

/* Fills *err (if not NULL) and returns st, so callers can `return js_err_set(...)`. */
js_status js_err_set(js_err *err, js_status st, js_reason reason, const char *fmt, ...)
    JS_PRINTF(4, 5);
#ifdef __clang_analyzer__
/* For the static analyzer only (scripts/analyze.sh). It looks at one file at
 * a time, so it cannot know that js_err_set returns its `st` (never JS_OK);
 * without this model it follows every `return js_err_set(...)` as if it could
 * succeed and reports NULL and uninitialised outputs after each JS_GUARD.
 * The macro calls the same function (a macro does not expand inside itself);
 * ordinary builds never see it. Every caller passes a plain `st`. */
#define js_err_set(err, st, ...) (js_err_set((err), (st), __VA_ARGS__), (st))
#endif

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

/* Allocation failure is an internal error with a fixed reason and message:
 * js_err_oom fills it and returns JS_EINTERNAL. */
js_status js_err_oom(js_err *err);
#ifdef __clang_analyzer__
#define js_err_oom(err) (js_err_oom(err), JS_EINTERNAL) /* as js_err_set above */
#endif
#define JS_ENSURE_ALLOC(ptr, err)                                                                  \
    do {                                                                                           \
        if ((ptr) == NULL)                                                                         \
            return js_err_oom(err);                                                                \
    } while (0)

/* Free and NULL (curl's safefree). */
#define JS_FREE(p)                                                                                 \
    do {                                                                                           \
        free(p);                                                                                   \
        (p) = NULL;                                                                                \
    } while (0)

#endif
