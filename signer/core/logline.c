/*
 * logline.c - JSON log lines on stderr, one write(2) per line.
 */
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void fmt_time(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03ldZ", date, ts.tv_nsec / 1000000L);
}

void js_log_emit(const char *level, json_t *obj)
{
    if (obj == NULL)
        return;
    char t[48];
    fmt_time(t, sizeof(t));
    /* time and level first, for humans reading the raw stream. */
    json_t *line = json_pack("{s:s, s:s}", "time", t, "level", level);
    if (line == NULL) {
        json_decref(obj);
        return;
    }
    json_object_update(line, obj);
    json_decref(obj);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL)
        return;
    size_t n = strlen(text);
    text[n] = '\n'; /* replace the NUL: one write, one line */
    const char *p = text;
    size_t left = n + 1;
    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w <= 0)
            break; /* nothing sensible to do if stderr is gone */
        p += w;
        left -= (size_t)w;
    }
    free(text);
}

void js_log_event(const char *level, const char *event, const char *message)
{
    json_t *o = json_pack("{s:s, s:s}", "event", event, "message", message ? message : "");
    js_log_emit(level, o);
}

static void set_opt(json_t *o, const char *k, const char *v)
{
    if (v != NULL && v[0] != '\0')
        json_object_set_new(o, k, json_string(v));
}

void js_reqlog_emit(const js_reqlog *r)
{
    json_t *o = json_object();
    if (o == NULL)
        return;
    json_object_set_new(o, "event", json_string("request"));
    set_opt(o, "method", r->method);
    set_opt(o, "caller", r->caller);
    set_opt(o, "peer", r->peer);
    set_opt(o, "request_id", r->request_id);
    set_opt(o, "decision", r->decision);
    set_opt(o, "status", r->status);
    set_opt(o, "reason", r->reason);
    set_opt(o, "message", r->message);
    set_opt(o, "key", r->key);
    set_opt(o, "kid", r->kid);
    set_opt(o, "jti", r->jti);
    set_opt(o, "sub", r->sub);
    if (r->aud != NULL && r->aud[0] != '\0') {
        /* r->aud is already JSON: log the value, not a string holding its
         * text (which would encode it twice). Text that does not parse is
         * logged as a string rather than dropped. */
        json_t *aud = json_loads(r->aud, JSON_DECODE_ANY, NULL);
        json_object_set_new(o, "aud", aud != NULL ? aud : json_string(r->aud));
    }
    set_opt(o, "audit_seq", r->audit_seq);
    json_object_set_new(o, "latency_us", json_integer(r->latency_us));
    js_log_emit(r->decision != NULL && strcmp(r->decision, "allow") == 0 ? "info" : "warn", o);
}

void js_log_denials_folded(const js_foldlog *f)
{
    json_t *o = json_object();
    if (o == NULL)
        return;
    json_object_set_new(o, "event", json_string("denials_folded"));
    set_opt(o, "type", f->type);
    set_opt(o, "caller", f->caller);
    set_opt(o, "peer", f->peer);
    set_opt(o, "reason", f->reason);
    json_object_set_new(o, "count", json_integer((json_int_t)f->count));
    if (f->audit_seq > 0)
        json_object_set_new(o, "audit_seq", json_integer((json_int_t)f->audit_seq));
    else
        json_object_set_new(o, "audit_lost", json_true());
    js_log_emit("warn", o);
}
