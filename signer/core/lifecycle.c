/*
 * lifecycle.c - lifecycle and administrative audit records (see lifecycle.h).
 */
#include "lifecycle.h"

#include <stdint.h>
#include <stdlib.h>

#include "logline.h"

js_status js_lifecycle_audit(js_audit *audit, js_lifecycle_mode mode, const char *type,
                             const char *caller, const char *decision, const js_err *why,
                             json_t *detail)
{
    return js_lifecycle_audit_seq(audit, mode, type, caller, decision, why, detail, NULL, NULL);
}

js_status js_lifecycle_audit_seq(js_audit *audit, js_lifecycle_mode mode, const char *type,
                                 const char *caller, const char *decision, const js_err *why,
                                 json_t *detail, uint64_t *seq_out, js_err *err_out)
{
    /* Sorted keys: the record's bytes do not depend on how detail was built. */
    char *text = detail != NULL ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(detail);
    js_audit_event ev = {
        .type = type,
        .caller = caller,
        .decision = decision,
        .reason = why != NULL ? js_reason_name(why->reason) : NULL,
        .message = why != NULL ? why->msg : NULL,
        .detail_json = text,
    };
    js_err err;
    js_err_clear(&err);
    uint64_t seq = 0;
    js_status st = mode == JS_LIFECYCLE_DURABLE ? js_audit_append_sync(audit, &ev, &seq, &err)
                                                : js_audit_submit(audit, &ev, NULL, NULL, &err);
    if (st != JS_OK) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "audit_record_lost", "record", type,
                              "reason", js_reason_name(err.reason), "message", err.msg);
        js_log_emit("error", o);
    }
    free(text);
    if (seq_out != NULL)
        *seq_out = seq;
    if (st != JS_OK && err_out != NULL)
        *err_out = err;
    return st;
}
