/*
 * report.c - counts over an audit log (report.h).
 */
#include "report.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "query.h"

struct js_audit_stats {
    int64_t window;
    js_audit_stats_row *rows;
    size_t n, cap;
    json_t *index;      /* "bucket\x1f" caller "\x1f" reason -> row index */
    json_t *first_seen; /* caller -> first bucket */
    json_t *lifecycle;  /* "type\x1fevent" -> {type, event, count, first, last} */
    uint64_t no_time;   /* records without a usable time, skipped */
};

static js_status oom(js_err *err)
{
    return js_err_oom(err);
}

js_status js_audit_stats_new(int64_t window_s, js_audit_stats **out, js_err *err)
{
    JS_ENSURE(window_s > 0, err, JS_EINVAL, JS_R_AUDIT_USAGE, "the window must be positive");
    js_audit_stats *s = calloc(1, sizeof(*s));
    JS_ENSURE_ALLOC(s, err);
    s->window = window_s;
    s->index = json_object();
    s->first_seen = json_object();
    s->lifecycle = json_object();
    if (s->index == NULL || s->first_seen == NULL || s->lifecycle == NULL) {
        js_audit_stats_free(s);
        return oom(err);
    }
    *out = s;
    return JS_OK;
}

void js_audit_stats_free(js_audit_stats *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->rows[i].caller);
        free(s->rows[i].reason);
    }
    free(s->rows);
    json_decref(s->index);
    json_decref(s->first_seen);
    json_decref(s->lifecycle);
    free(s);
}

size_t js_audit_stats_rows(const js_audit_stats *s, const js_audit_stats_row **rows)
{
    *rows = s->rows;
    return s->n;
}

uint64_t js_audit_stats_no_time(const js_audit_stats *s)
{
    return s->no_time;
}

/* Requests are what a caller asked for: signing (and its folded denials),
 * administration, and the fold-overflow record (FORMAT.md §3.1). Every
 * other type (start, stop, policy, key, incident, hsm, recovery, checkpoint)
 * is something the signer did, with a pseudo-caller such as "SIGHUP" or
 * "start" at most: never a caller, an error or a new caller. */
static bool is_request_type(const char *type)
{
    return type != NULL && (strcmp(type, "sign") == 0 || strcmp(type, "admin") == 0 ||
                            strcmp(type, "introspect") == 0 || strcmp(type, "denials") == 0);
}

/* Tallies a lifecycle record by (type, decision = the event). */
static js_status stats_lifecycle(js_audit_stats *c, const js_audit_record *rec, js_err *err)
{
    const char *type = rec->type;
    /* The event is the decision ("load", "on", "next"...), or for records
     * without one (checkpoints) the reason ("open", "heartbeat"...). */
    const char *event = js_audit_member_str(rec->json, JS_AUDIT_F_DECISION);
    if (event == NULL)
        event = js_audit_member_str(rec->json, JS_AUDIT_F_REASON);
    if (event == NULL)
        event = "";
    size_t klen = strlen(type) + strlen(event) + 2;
    char *key = malloc(klen);
    if (key == NULL)
        return oom(err);
    snprintf(key, klen, "%s\x1f%s", type, event);
    json_t *o = json_object_get(c->lifecycle, key);
    if (o == NULL) {
        if (json_object_size(c->lifecycle) >= JS_AUDIT_STATS_MAX_ROWS) {
            free(key);
            return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM,
                              "more than %u distinct lifecycle events", JS_AUDIT_STATS_MAX_ROWS);
        }
        o = json_pack("{s:s, s:s, s:I}", "type", type, "event", event, "count", (json_int_t)0);
        if (o == NULL || json_object_set_new(c->lifecycle, key, o) != 0) {
            free(key);
            return oom(err);
        }
    }
    free(key);
    json_int_t n = json_integer_value(json_object_get(o, "count")) + 1;
    const char *t = js_audit_member_str(rec->json, JS_AUDIT_F_TIME);
    int64_t ms;
    bool ok = json_object_set_new(o, "count", json_integer(n)) == 0;
    if (ok && t != NULL && js_audit_record_time(rec->json, &ms)) {
        if (json_object_get(o, "first") == NULL)
            ok = json_object_set_new(o, "first", json_string(t)) == 0;
        ok = ok && json_object_set_new(o, "last", json_string(t)) == 0;
    }
    return ok ? JS_OK : oom(err);
}

static bool is_rate_limited(const char *reason)
{
    /* By reason code only: since any denial may be folded into a record
     * with a "count" (FORMAT.md §3.1), a count no longer means a rate
     * limit. The reason is rate.limited from the table; "rate_limited" is
     * how logs written before the table named it, and they stay readable. */
    return reason != NULL && (strcmp(reason, js_reason_name(JS_R_RATE_LIMITED)) == 0 ||
                              strcmp(reason, "rate_limited") == 0);
}

js_status js_audit_stats_add(js_audit_stats *c, const js_audit_record *rec, js_err *err)
{
    if (!is_request_type(rec->type))
        return stats_lifecycle(c, rec, err);
    const char *decision = js_audit_member_str(rec->json, JS_AUDIT_F_DECISION);
    if (decision == NULL)
        return JS_OK; /* not a request outcome */
    int64_t t;
    if (!js_audit_record_time(rec->json, &t)) {
        c->no_time++;
        return JS_OK;
    }
    int64_t secs = t >= 0 ? t / 1000 : -((-t + 999) / 1000);
    int64_t bucket =
        secs >= 0 ? secs - secs % c->window : secs - (c->window + secs % c->window) % c->window;
    const char *caller = js_audit_member_str(rec->json, JS_AUDIT_F_CALLER);
    const char *reason = js_audit_member_str(rec->json, JS_AUDIT_F_REASON);
    /* Denials without an identity are recorded under their peer address
     * (FORMAT.md §3.1): a row per address, not one row for all of them. */
    char peer_caller[160];
    const char *peer = caller == NULL ? js_audit_member_str(rec->json, "peer") : NULL;
    if (peer != NULL && strlen(peer) < sizeof(peer_caller) - 5) {
        snprintf(peer_caller, sizeof(peer_caller), "peer:%s", peer);
        caller = peer_caller;
    }
    if (caller == NULL)
        caller = "";
    if (reason == NULL)
        reason = "";
    int64_t count = 1;
    const json_t *jc = json_object_get(rec->json, JS_AUDIT_F_COUNT);
    if (json_is_integer(jc)) {
        count = (int64_t)json_integer_value(jc);
        if (count < 1 || count > INT32_MAX)
            count = 1; /* a hostile count cannot inflate the numbers beyond reason */
    }

    char *key = NULL;
    size_t klen = strlen(caller) + strlen(reason) + 32;
    key = malloc(klen);
    if (key == NULL)
        return oom(err);
    snprintf(key, klen, "%" PRId64 "\x1f%s\x1f%s", bucket, caller, reason);
    const json_t *idx = json_object_get(c->index, key);
    size_t i;
    if (idx != NULL) {
        i = (size_t)json_integer_value(idx);
    } else {
        if (c->n >= JS_AUDIT_STATS_MAX_ROWS) {
            free(key);
            return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM,
                              "more than %u distinct (window, caller, reason) rows; use a "
                              "longer --window",
                              JS_AUDIT_STATS_MAX_ROWS);
        }
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 64;
            js_audit_stats_row *nr = realloc(c->rows, cap * sizeof *nr);
            if (nr == NULL) {
                free(key);
                return oom(err);
            }
            c->rows = nr;
            c->cap = cap;
        }
        i = c->n;
        js_audit_stats_row *r = &c->rows[i];
        memset(r, 0, sizeof *r);
        r->bucket = bucket;
        r->caller = strdup(caller);
        r->reason = strdup(reason);
        if (r->caller == NULL || r->reason == NULL ||
            json_object_set_new(c->index, key, json_integer((json_int_t)i)) != 0) {
            free(r->caller);
            free(r->reason);
            free(key);
            return oom(err);
        }
        c->n++;
    }
    free(key);
    js_audit_stats_row *r = &c->rows[i];
    if (strcmp(decision, "allow") == 0)
        r->allowed += (uint64_t)count;
    else if (strcmp(decision, "deny") == 0)
        r->denied += (uint64_t)count;
    else
        r->errors += (uint64_t)count;
    if (strcmp(decision, "allow") != 0 && is_rate_limited(reason))
        r->rate_limited += (uint64_t)count;

    const json_t *fs = json_object_get(c->first_seen, caller);
    if (fs == NULL || json_integer_value(fs) > bucket)
        if (json_object_set_new(c->first_seen, caller, json_integer(bucket)) != 0)
            return oom(err);
    return JS_OK;
}

static int row_cmp(const void *a, const void *b)
{
    const js_audit_stats_row *x = a, *y = b;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    int c = strcmp(x->caller, y->caller);
    return c != 0 ? c : strcmp(x->reason, y->reason);
}

void js_audit_stats_finish(js_audit_stats *s)
{
    for (size_t i = 0; i < s->n; i++) {
        const json_t *fs = json_object_get(s->first_seen, s->rows[i].caller);
        s->rows[i].new_caller = fs != NULL && json_integer_value(fs) == s->rows[i].bucket;
    }
    if (s->n > 0)
        qsort(s->rows, s->n, sizeof *s->rows, row_cmp);
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

js_status js_audit_stats_lifecycle(const js_audit_stats *s, json_t **out, js_err *err)
{
    size_t n = json_object_size(s->lifecycle), i = 0;
    const char **keys = calloc(n ? n : 1, sizeof *keys);
    json_t *arr = json_array();
    if (keys == NULL || arr == NULL) {
        free(keys);
        json_decref(arr);
        return oom(err);
    }
    const char *k;
    json_t *v;
    json_object_foreach(s->lifecycle, k, v) keys[i++] = k;
    qsort(keys, n, sizeof *keys, key_cmp);
    for (i = 0; i < n; i++) {
        if (json_array_append(arr, json_object_get(s->lifecycle, keys[i])) != 0) {
            free(keys);
            json_decref(arr);
            return oom(err);
        }
    }
    free(keys);
    *out = arr;
    return JS_OK;
}
