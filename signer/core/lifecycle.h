/*
 * lifecycle.h - one audit record of something the daemon did or was asked to
 * do outside the request path (start, stop, policy loads, HSM events, a
 * re-created listener, Admin actions), built the same way wherever it comes
 * from, and logged as audit_record_lost when the log does not take it.
 */
#ifndef JS_LIFECYCLE_H
#define JS_LIFECYCLE_H

#include <jansson.h>

#include "auditlog.h"
#include "err.h"

/*
 * How the record is written. A change of state is durable before the code
 * that reports it goes on (DURABLE: js_audit_append_sync, append and
 * fdatasync). A refusal changes nothing and carries no secret, so it is only
 * queued (QUEUED: js_audit_submit): a refused caller must not be able to buy
 * an fdatasync per request.
 */
typedef enum js_lifecycle_mode { JS_LIFECYCLE_DURABLE, JS_LIFECYCLE_QUEUED } js_lifecycle_mode;

/*
 * Writes one record {type, caller, decision, reason and message from why,
 * detail as compact JSON with sorted keys} to audit. caller, decision and
 * why may be NULL (absent). detail is stolen (decref'd here, even on
 * failure); NULL = no detail. A record the log refuses is logged as an
 * audit_record_lost line naming type, reason and message; the status is
 * returned too, but callers need not act on it: the daemon refuses tokens by
 * itself while the log is failing.
 */
js_status js_lifecycle_audit(js_audit *audit, js_lifecycle_mode mode, const char *type,
                             const char *caller, const char *decision, const js_err *why,
                             json_t *detail);

/* The same, with the record's sequence number (DURABLE only; 0 otherwise)
 * in *seq and the log's error in *err (both may be NULL): for an action
 * that must not take effect unless its record is durable. */
js_status js_lifecycle_audit_seq(js_audit *audit, js_lifecycle_mode mode, const char *type,
                                 const char *caller, const char *decision, const js_err *why,
                                 json_t *detail, uint64_t *seq, js_err *err);

#endif
