/*
 * report.h - counts over an audit log (jwt-audit stats): per time window,
 * caller and reason, how many requests were allowed, denied or failed, how
 * many were rate-limited and which callers were new; and the lifecycle
 * events (every record that is not a request), by type and event. Records
 * come from the reader (reader.h); nothing here reads a file or prints.
 *
 * Requests are records of type sign, admin and denials; folded records
 * (FORMAT.md §3.1) count as their "count". Denials without an identity are
 * counted under "peer:ADDRESS".
 */
#ifndef JS_AUDIT_REPORT_H
#define JS_AUDIT_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"
#include "reader.h"

/* Distinct (window, caller, reason) rows, and distinct lifecycle
 * (type, event) pairs, a report holds at most (memory bound). */
#define JS_AUDIT_STATS_MAX_ROWS 1000000u

/* One (window, caller, reason) row. */
typedef struct js_audit_stats_row {
    int64_t bucket; /* window start, Unix seconds */
    char *caller;
    char *reason;
    uint64_t allowed, denied, errors, rate_limited;
    bool new_caller; /* the caller's first window in the log (after _finish) */
} js_audit_stats_row;

typedef struct js_audit_stats js_audit_stats;

/* A report with windows of window_s seconds (> 0); free with _free. */
js_status js_audit_stats_new(int64_t window_s, js_audit_stats **out, js_err *err) JS_WUR;

/* Counts one record. JS_EINTERNAL "internal.oom" when memory or the
 * JS_AUDIT_STATS_MAX_ROWS bound runs out (the message says which); the
 * report keeps what it had. */
js_status js_audit_stats_add(js_audit_stats *s, const js_audit_record *rec, js_err *err) JS_WUR;

/* After the last record: marks new callers and sorts the rows by window,
 * caller, reason. */
void js_audit_stats_finish(js_audit_stats *s);

/* The rows (valid until _free); their number. */
size_t js_audit_stats_rows(const js_audit_stats *s, const js_audit_stats_row **rows);

/* Request records without a usable time: not counted. */
uint64_t js_audit_stats_no_time(const js_audit_stats *s);

/* The lifecycle events as a new JSON array (the caller decrefs it) of
 * {"type","event","count"[,"first","last"]} sorted by type then event; the
 * event is the record's decision, or its reason when it has none. */
js_status js_audit_stats_lifecycle(const js_audit_stats *s, json_t **out, js_err *err) JS_WUR;

void js_audit_stats_free(js_audit_stats *s);

#endif
