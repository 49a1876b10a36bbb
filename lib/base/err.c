/*
 * err.c - fills js_err records; see err.h for the convention.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    unsigned classes;
    const char *meaning;
} k_reasons[JS_R_COUNT] = {
    [JS_R_NONE] = {"", 0, "no error"},
#define JS_REASON(id, name, classes, meaning) [JS_R_##id] = {name, classes, meaning},
#include "reasons.def"
#undef JS_REASON
};

const char *js_reason_name(js_reason r)
{
    return (unsigned)r < JS_R_COUNT ? k_reasons[r].name : "";
}

const char *js_reason_meaning(js_reason r)
{
    return (unsigned)r < JS_R_COUNT ? k_reasons[r].meaning : "";
}

unsigned js_reason_classes(js_reason r)
{
    return (unsigned)r < JS_R_COUNT ? k_reasons[r].classes : 0;
}

js_reason js_reason_lookup(const char *prefix, const char *code)
{
    if (code == NULL)
        return JS_R_NONE;
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    for (unsigned r = JS_R_NONE + 1; r < JS_R_COUNT; r++) {
        const char *n = k_reasons[r].name;
        if (plen > 0 && (strncmp(n, prefix, plen) != 0 || n[plen] != '.'))
            continue;
        if (strcmp(n + (plen > 0 ? plen + 1 : 0), code) == 0)
            return (js_reason)r;
    }
    return JS_R_NONE;
}

js_status(js_err_set)(js_err *err, js_status st, js_reason reason, const char *fmt, ...)
{
    if (err == NULL)
        return st;
    err->status = st;
    err->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return st;
}

js_status(js_err_oom)(js_err *err)
{
    return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
}

void js_err_prefix(js_err *err, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char prefix[JS_MSG_MAX];
    char old[JS_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    old[sizeof(old) - 1] = '\0';
    /* Truncation is acceptable here: the message stays a valid string. */
    size_t plen = strnlen(prefix, sizeof(err->msg) - 1);
    size_t olen = strnlen(old, sizeof(err->msg) - 1 - plen);
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, old, olen);
    err->msg[plen + olen] = '\0';
}

void js_err_clear(js_err *err)
{
    if (err == NULL)
        return;
    memset(err, 0, sizeof(*err));
}

const char *js_status_name(js_status st)
{
    switch (st) {
    case JS_OK:
        return "ok";
    case JS_EINVAL:
        return "invalid";
    case JS_EDENIED:
        return "denied";
    case JS_ELIMIT:
        return "rate_limited";
    case JS_EUNAVAIL:
        return "unavailable";
    case JS_EINTERNAL:
        return "internal";
    case JS_ECONFIG:
        return "config";
    case JS_ENOTFOUND:
        return "not_found";
    case JS_ESTATE:
        return "failed_precondition";
    default:
        return "unknown";
    }
}
