/*
 * query.c - selecting audit records (query.h).
 */
#include "query.h"

#include <stdlib.h>
#include <string.h>

#include "record.h"

const char *js_audit_member_str(const json_t *rec, const char *key)
{
    const json_t *v = json_object_get(rec, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool member_is(const json_t *rec, const char *key, const char *want)
{
    const char *v = js_audit_member_str(rec, key);
    return v != NULL && strcmp(v, want) == 0;
}

bool js_audit_time_arg_parse(const char *s, int64_t *ms)
{
    size_t n = strlen(s);
    if (n > 0 && n <= 12 && strspn(s, "0123456789") == n) {
        unsigned long long v = strtoull(s, NULL, 10);
        *ms = (int64_t)v * 1000;
        return true;
    }
    return js_audit_rfc3339_parse(s, ms);
}

bool js_audit_record_time(const json_t *rec, int64_t *ms)
{
    const char *t = js_audit_member_str(rec, JS_AUDIT_F_TIME);
    return t != NULL && js_audit_rfc3339_parse(t, ms);
}

bool js_audit_query_match(const js_audit_query *q, const json_t *rec)
{
    if (q->caller != NULL && !member_is(rec, JS_AUDIT_F_CALLER, q->caller))
        return false;
    if (q->sub != NULL && !member_is(rec, JS_AUDIT_F_SUB, q->sub))
        return false;
    if (q->jti != NULL && !member_is(rec, JS_AUDIT_F_JTI, q->jti))
        return false;
    if (q->kid != NULL && !member_is(rec, JS_AUDIT_F_KID, q->kid))
        return false;
    if (q->decision != NULL && !member_is(rec, JS_AUDIT_F_DECISION, q->decision))
        return false;
    if (q->has_since || q->has_until) {
        int64_t t;
        if (!js_audit_record_time(rec, &t))
            return false;
        if (q->has_since && t < q->since_ms)
            return false;
        if (q->has_until && t >= q->until_ms)
            return false;
    }
    return true;
}
