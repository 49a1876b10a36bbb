/*
 * logline.c - JSON log lines on stderr, one write(2) per line.
 *
 * The request line (one per call), the folded-denials line and the event
 * line are written in one pass by jsonw.h into a stack buffer, without a
 * jansson tree or a malloc per member, and their time by js_wall_format
 * (clock.h, the audit records' format too). Their bytes are exactly what the jansson version wrote:
 * time and level first, then the members in order, compact, jansson's escaping; a member that is
 * not valid UTF-8 is left out, as json_object_set_new(o, k, json_string(v)) left it out.
 * tests/unit/test_logline.c holds them to a copy of the jansson version. js_log_emit keeps jansson
 * for the free-form objects of the other callers.
 */
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "jsonw.h"

/* A request line fits here unless a member is unusually long; then the
 * line is measured and written from one malloc'd buffer instead. */
#define LOG_STACK_LINE 2048u

/* The "time" of a line: now, as js_wall_format writes it (clock.h). */
static size_t now_time(char out[JS_WALL_TIME_LEN + 1])
{
    js_wall_format(js_wall_ms(), out);
    return JS_WALL_TIME_LEN;
}

/* Writes text[0..n) to fd 2, retrying short writes; nothing sensible to do
 * if stderr is gone. */
static void write_line(const char *text, size_t n)
{
    const char *p = text;
    size_t left = n;
    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w <= 0)
            break;
        p += w;
        left -= (size_t)w;
    }
}

void js_log_emit(const char *level, json_t *obj)
{
    if (obj == NULL)
        return;
    char t[JS_WALL_TIME_LEN + 1];
    now_time(t);
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
    write_line(text, n + 1);
    free(text);
}

/* ,"k":"v" for a non-empty string, left out when v is NULL, empty or not
 * valid UTF-8 (where json_string() returned NULL). k needs no escape. */
static void put_opt(js_jsonw *w, const char *k, const char *v)
{
    if (v == NULL || v[0] == '\0')
        return;
    size_t mark = js_jsonw_len(w);
    JS_JSONW_LIT(w, ",\"");
    js_jsonw_cstr(w, k);
    JS_JSONW_LIT(w, "\":");
    if (!js_jsonw_string(w, v, strlen(v)))
        js_jsonw_truncate(w, mark); /* undo the key: the member is left out */
}

/* {"time":"T","level":"L" - false when level is not a string jansson
 * accepts (json_pack failed and nothing was written). */
static bool put_head(js_jsonw *w, const char *time, size_t tlen, const char *level)
{
    JS_JSONW_LIT(w, "{\"time\":\"");
    js_jsonw_raw(w, time, tlen);
    JS_JSONW_LIT(w, "\",\"level\":");
    return level != NULL && js_jsonw_string(w, level, strlen(level));
}

/* Builds a line with fill() into the stack, or measured into one malloc'd
 * buffer when it does not fit, and writes it with one write(2). */
typedef bool (*line_fill)(js_jsonw *w, const char *time, size_t tlen, const void *arg);

static void emit_line(line_fill fill, const void *arg)
{
    char t[JS_WALL_TIME_LEN + 1];
    size_t tlen = now_time(t);
    char stack[LOG_STACK_LINE];
    js_jsonw w;
    js_jsonw_init(&w, stack, sizeof(stack));
    if (!fill(&w, t, tlen, arg))
        return;
    JS_JSONW_LIT(&w, "}\n");
    if (js_jsonw_fits(&w)) {
        write_line(stack, js_jsonw_len(&w));
        return;
    }
    size_t need = js_jsonw_len(&w) + 1;
    char *heap = malloc(need);
    if (heap == NULL)
        return;
    js_jsonw_init(&w, heap, need);
    if (fill(&w, t, tlen, arg)) {
        JS_JSONW_LIT(&w, "}\n");
        if (js_jsonw_fits(&w))
            write_line(heap, js_jsonw_len(&w));
    }
    free(heap);
}

typedef struct event_arg {
    const char *level, *event, *message;
} event_arg;

static bool fill_event(js_jsonw *w, const char *time, size_t tlen, const void *arg)
{
    const event_arg *a = arg;
    /* json_pack("{s:s, s:s}") fails on a NULL or invalid UTF-8 string. */
    if (a->event == NULL || !put_head(w, time, tlen, a->level))
        return false;
    JS_JSONW_LIT(w, ",\"event\":");
    if (!js_jsonw_string(w, a->event, strlen(a->event)))
        return false;
    JS_JSONW_LIT(w, ",\"message\":");
    return js_jsonw_string(w, a->message, strlen(a->message));
}

void js_log_event(const char *level, const char *event, const char *message)
{
    event_arg a = {level, event, message ? message : ""};
    emit_line(fill_event, &a);
}

/* The request line's aud: the value of r->aud, which is already JSON (a
 * string or an array, as the pipeline compact-dumped it), not a string
 * holding its text. Canonical text is copied; anything else goes through
 * jansson as before: parsed and re-dumped, or, if it does not parse, logged
 * as a string (and left out if it is not even valid UTF-8). */
static bool put_aud(js_jsonw *w, const char *aud)
{
    size_t n = strlen(aud);
    if (js_jsonw_canonical_strings(aud, n)) {
        JS_JSONW_LIT(w, ",\"aud\":");
        js_jsonw_raw(w, aud, n);
        return true;
    }
    json_t *v = json_loads(aud, JSON_DECODE_ANY, NULL);
    if (v == NULL) {
        put_opt(w, "aud", aud);
        return true;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(v);
    if (text == NULL)
        return false; /* out of memory: no line, as before */
    JS_JSONW_LIT(w, ",\"aud\":");
    js_jsonw_cstr(w, text);
    free(text);
    return true;
}

static bool fill_request(js_jsonw *w, const char *time, size_t tlen, const void *arg)
{
    const js_reqlog *r = arg;
    bool allow = r->decision != NULL && strcmp(r->decision, "allow") == 0;
    if (!put_head(w, time, tlen, allow ? "info" : "warn"))
        return false;
    JS_JSONW_LIT(w, ",\"event\":\"request\"");
    put_opt(w, "method", r->method);
    put_opt(w, "caller", r->caller);
    put_opt(w, "peer", r->peer);
    put_opt(w, "request_id", r->request_id);
    put_opt(w, "decision", r->decision);
    put_opt(w, "status", r->status);
    put_opt(w, "reason", r->reason);
    put_opt(w, "message", r->message);
    put_opt(w, "key", r->key);
    put_opt(w, "kid", r->kid);
    put_opt(w, "jti", r->jti);
    put_opt(w, "sub", r->sub);
    if (r->aud != NULL && r->aud[0] != '\0' && !put_aud(w, r->aud))
        return false;
    put_opt(w, "audit_seq", r->audit_seq);
    JS_JSONW_LIT(w, ",\"latency_us\":");
    js_jsonw_int(w, r->latency_us);
    return true;
}

void js_reqlog_emit(const js_reqlog *r)
{
    emit_line(fill_request, r);
}

static bool fill_folded(js_jsonw *w, const char *time, size_t tlen, const void *arg)
{
    const js_foldlog *f = arg;
    if (!put_head(w, time, tlen, "warn"))
        return false;
    JS_JSONW_LIT(w, ",\"event\":\"denials_folded\"");
    put_opt(w, "type", f->type);
    put_opt(w, "caller", f->caller);
    put_opt(w, "peer", f->peer);
    put_opt(w, "reason", f->reason);
    JS_JSONW_LIT(w, ",\"count\":");
    js_jsonw_int(w, (int64_t)f->count); /* json_integer((json_int_t)count) */
    if (f->audit_seq > 0) {
        JS_JSONW_LIT(w, ",\"audit_seq\":");
        js_jsonw_int(w, (int64_t)f->audit_seq);
    } else {
        JS_JSONW_LIT(w, ",\"audit_lost\":true");
    }
    return true;
}

void js_log_denials_folded(const js_foldlog *f)
{
    emit_line(fill_folded, f);
}
