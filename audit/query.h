/*
 * query.h - selecting audit records (jwt-audit show): exact matches of the
 * members people search by, a decision, and a time window; and the time
 * arguments such a query takes. Pure functions over parsed records
 * (reader.h); nothing here reads a file or prints.
 */
#ifndef JS_AUDIT_QUERY_H
#define JS_AUDIT_QUERY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

/* Record members (FORMAT.md §3) that queries and reports read. */
#define JS_AUDIT_F_SEQ      "seq"
#define JS_AUDIT_F_TIME     "time"
#define JS_AUDIT_F_TYPE     "type"
#define JS_AUDIT_F_CALLER   "caller"
#define JS_AUDIT_F_DECISION "decision"
#define JS_AUDIT_F_REASON   "reason"
#define JS_AUDIT_F_KEY      "key"
#define JS_AUDIT_F_KID      "kid"
#define JS_AUDIT_F_JTI      "jti"
#define JS_AUDIT_F_SUB      "sub"
#define JS_AUDIT_F_COUNT    "count"

/* A record matches when every member given equals the record's (exact
 * string match; a record without the member does not match) and, with a
 * window, its own time t satisfies since <= t < until. Borrowed strings. */
typedef struct js_audit_query {
    const char *caller, *sub, *jti, *kid;
    const char *decision; /* "allow" or "deny" */
    bool has_since, has_until;
    int64_t since_ms, until_ms; /* ms since the epoch */
} js_audit_query;

bool js_audit_query_match(const js_audit_query *q, const json_t *rec);

/* A time argument (--since, --until): RFC 3339 (js_audit_rfc3339_parse) or
 * Unix seconds (at most 12 digits). */
bool js_audit_time_arg_parse(const char *s, int64_t *ms);

/* The record's own "time", ms since the epoch; false if absent or not RFC 3339. */
bool js_audit_record_time(const json_t *rec, int64_t *ms);

/* The record member key if it is a string, else NULL (borrowed). */
const char *js_audit_member_str(const json_t *rec, const char *key);

#endif
