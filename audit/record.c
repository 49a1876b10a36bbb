/*
 * record.c - canonical record encoding and framing (FORMAT.md §2-§4).
 *
 * The payload is built as text with a fixed member order so that the same
 * event always yields the same bytes, in one pass (jsonw.h) with jansson's
 * compact escaping; the verifier re-serialises with jansson itself. Only
 * the framing decoder reads untrusted bytes, and it checks the length
 * against the bound and what is left before using it.
 */
#include "record.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "crc32c.h"
#include "hex.h"
#include "jsonw.h"

static void put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void js_audit_frame_header(const uint8_t *payload, uint32_t len, uint8_t hdr[JS_AUDIT_FRAME_HDR])
{
    put_u32le(hdr, len);
    /* The CRC covers the length too, so a torn or flipped length is caught
     * by the CRC and not only by the bound (FORMAT.md §2). */
    uint32_t crc = js_crc32c_update(js_crc32c(hdr, 4), payload, len);
    put_u32le(hdr + 4, crc);
}

js_status js_audit_frame_decode(const uint8_t *buf, size_t avail, size_t *payload_len, js_err *err)
{
    JS_ENSURE(avail >= JS_AUDIT_FRAME_HDR, err, JS_EINVAL, JS_R_AUDIT_FRAMING,
              "short frame header (%zu of %u bytes)", avail, JS_AUDIT_FRAME_HDR);
    uint32_t len = get_u32le(buf);
    /* Never trust a length before checking it (PostgreSQL xlogreader). */
    JS_ENSURE(len >= JS_AUDIT_MIN_PAYLOAD && len <= JS_AUDIT_MAX_PAYLOAD, err, JS_EINVAL,
              JS_R_AUDIT_FRAMING, "record length %" PRIu32 " outside [%u, %u]", len,
              JS_AUDIT_MIN_PAYLOAD, JS_AUDIT_MAX_PAYLOAD);
    JS_ENSURE(len <= avail - JS_AUDIT_FRAME_HDR, err, JS_EINVAL, JS_R_AUDIT_FRAMING,
              "short record: length %" PRIu32 " but %zu bytes left", len,
              avail - JS_AUDIT_FRAME_HDR);
    uint32_t crc = js_crc32c_update(js_crc32c(buf, 4), buf + JS_AUDIT_FRAME_HDR, len);
    JS_ENSURE(crc == get_u32le(buf + 4), err, JS_EINVAL, JS_R_AUDIT_FRAMING,
              "CRC-32C mismatch (stored %08" PRIx32 ", computed %08" PRIx32 ")", get_u32le(buf + 4),
              crc);
    *payload_len = len;
    return JS_OK;
}

void js_audit_record_hash(const uint8_t *payload, size_t len, uint8_t out[JS_AUDIT_HASH_LEN])
{
    SHA256(payload, len, out);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is not canonical */
}

bool js_audit_unhex(const char *in, size_t in_len, uint8_t *out, size_t n)
{
    if (in == NULL || in_len != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]);
        int lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool digits(const char *s, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return true;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar
 * (Howard Hinnant's days_from_civil); no timegm() so no TZ dependence. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

bool js_audit_time_parse(const char *s, int64_t *ms)
{
    if (s == NULL || strlen(s) != 24)
        return false;
    int y, mo, d, h, mi, se, f;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &se) || s[19] != '.' ||
        !digits(s + 20, 3, &f) || s[23] != 'Z')
        return false;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return false;
    int64_t days = days_from_civil(y, mo, d);
    *ms = ((days * 24 + h) * 60 + mi) * 60000 + (int64_t)se * 1000 + f;
    return true;
}

/* RFC 3339 §5.6 date-time: YYYY-MM-DD(T|t| )HH:MM:SS[.frac](Z|z|+HH:MM|-HH:MM)
 * to ms since the epoch. Leap seconds (:60) are refused. */
bool js_audit_rfc3339_parse(const char *s, int64_t *ms)
{
    int y, mo, d, h, mi, se, frac_ms = 0;
    size_t n = strlen(s);
    if (n < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
        !digits(s + 17, 2, &se))
        return false;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 59)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return false;
    const char *p = s + 19;
    if (*p == '.') {
        p++;
        int nd = 0, scale = 100;
        while (*p >= '0' && *p <= '9') {
            if (nd < 3)
                frac_ms += (*p - '0') * scale;
            scale /= 10;
            nd++;
            p++;
            if (nd > 9)
                return false;
        }
        if (nd == 0)
            return false;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_s = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
    *ms = secs * 1000 + frac_ms;
    return true;
}

/*
 * The serialiser the verifier uses to re-serialise a parsed record's middle
 * members: jansson, compact, in insertion order, without the braces (the
 * writer wraps seq/time before and prev after). It defines "canonical";
 * js_audit_event_body writes the same bytes in one pass with jsonw.h, and
 * tests/unit/test_audit_format.c holds the two to each other.
 */
static char *dump_members(const json_t *o)
{
    char *txt = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (txt == NULL)
        return NULL;
    size_t n = strlen(txt);
    if (n < 2) {
        free(txt);
        return NULL;
    }
    memmove(txt, txt + 1, n - 2);
    txt[n - 2] = '\0';
    return txt;
}

/* A body that fits here is built without an allocation and copied once into
 * the caller's; a larger one is measured first. */
#define BODY_STACK 2048u

/*
 * ,"k":"v" for a string that may be NULL (omitted). A record must never be
 * lost because one of its strings is not valid UTF-8 (a certificate name in
 * Latin-1, a sub cut at a byte limit): such bytes are recorded as U+FFFD
 * instead of failing the record, or the whole batch with it. Valid strings
 * are recorded unchanged. k needs no escape.
 */
static void put_str(js_jsonw *w, const char *k, const char *v)
{
    if (v == NULL)
        return;
    JS_JSONW_LIT(w, ",\"");
    js_jsonw_cstr(w, k);
    JS_JSONW_LIT(w, "\":");
    js_jsonw_string_lossy(w, v, strlen(v));
}

static void put_int(js_jsonw *w, const char *k, int64_t v)
{
    JS_JSONW_LIT(w, ",\"");
    js_jsonw_cstr(w, k);
    JS_JSONW_LIT(w, "\":");
    js_jsonw_int(w, v);
}

/* The members of FORMAT.md §3 in their canonical order; aud, cnf and
 * detail are already encoded (NULL: omitted). */
static void put_body(js_jsonw *w, const js_audit_event *ev, uint64_t count, const char *aud,
                     size_t aud_len, const char *cnf, const char *detail)
{
    JS_JSONW_LIT(w, "\"type\":");
    js_jsonw_string_lossy(w, ev->type, strlen(ev->type));
    put_str(w, "caller", ev->caller);
    put_str(w, "peer", ev->peer);
    put_str(w, "request_id", ev->request_id);
    put_str(w, "decision", ev->decision);
    put_str(w, "reason", ev->reason);
    put_str(w, "message", ev->message);
    put_str(w, "key", ev->key);
    put_str(w, "kid", ev->kid);
    put_str(w, "alg", ev->alg);
    put_str(w, "jti", ev->jti);
    put_str(w, "sub", ev->sub);
    if (aud != NULL) {
        JS_JSONW_LIT(w, ",\"aud\":");
        js_jsonw_raw(w, aud, aud_len);
    }
    if (ev->iat != 0)
        put_int(w, "iat", ev->iat);
    if (ev->exp != 0)
        put_int(w, "exp", ev->exp);
    put_str(w, "scopes", ev->scopes);
    if (cnf != NULL) {
        JS_JSONW_LIT(w, ",\"cnf\":");
        js_jsonw_cstr(w, cnf);
    }
    put_str(w, "token_sha256", ev->token_sha256);
    put_str(w, "policy_hash", ev->policy_hash);
    if (count > 0)
        put_int(w, "count", (int64_t)count); /* json_integer((json_int_t)count) */
    if (detail != NULL) {
        JS_JSONW_LIT(w, ",\"detail\":");
        js_jsonw_cstr(w, detail);
    }
}

/* json_dumps(v) for any value, releasing v; NULL if v is NULL or out of
 * memory. */
static char *dump_value(json_t *v)
{
    char *txt =
        v != NULL ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return txt;
}

js_status js_audit_event_body(const js_audit_event *ev, uint64_t count, char **out, js_err *err)
{
    JS_ENSURE(ev != NULL && ev->type != NULL && ev->type[0] != '\0', err, JS_EINVAL,
              JS_R_AUDIT_EVENT, "audit event without a type");
    const char *aud = NULL;
    size_t aud_len = 0;
    char *aud_dumped = NULL;
    bool oom = false;
    if (ev->aud_json != NULL && ev->aud_json[0] != '\0') {
        /* The aud as the caller sent it: a string or array for a token, but
         * a denied request may carry any JSON value, and the denial must be
         * recorded all the same (FORMAT.md §3). What the pipeline writes (a
         * string or an array of strings, compact) is already what jansson
         * would write back, so it is copied; anything else is parsed and
         * re-dumped. Text that is not JSON at all is kept as a string
         * rather than dropping the record, and left out if it is not even
         * valid UTF-8 (json_string() refuses it). */
        size_t n = strlen(ev->aud_json);
        if (js_jsonw_canonical_strings(ev->aud_json, n)) {
            aud = ev->aud_json;
            aud_len = n;
        } else {
            json_t *v = json_loads(ev->aud_json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
            if (v == NULL)
                v = json_string(ev->aud_json);
            if (v != NULL) {
                aud_dumped = dump_value(v);
                oom = aud_dumped == NULL;
                aud = aud_dumped;
                aud_len = aud != NULL ? strlen(aud) : 0;
            }
        }
    }
    char *detail = NULL;
    if (ev->detail_json != NULL) {
        json_t *d = json_loads(ev->detail_json, JSON_REJECT_DUPLICATES, NULL);
        if (d == NULL || !json_is_object(d)) {
            free(aud_dumped);
            json_decref(d);
            return js_err_set(err, JS_EINVAL, JS_R_AUDIT_EVENT, "detail_json is not a JSON object");
        }
        detail = dump_value(d);
        oom = oom || detail == NULL;
    }
    char *cnf = NULL;
    if (ev->cnf_json != NULL) {
        /* The token's cnf (RFC 7800), an object the pipeline checked
         * (claims_cnf_check); re-dumped so the bytes are the canonical ones. */
        json_t *c = json_loads(ev->cnf_json, JSON_REJECT_DUPLICATES, NULL);
        if (c == NULL || !json_is_object(c)) {
            free(aud_dumped);
            free(detail);
            json_decref(c);
            return js_err_set(err, JS_EINVAL, JS_R_AUDIT_EVENT, "cnf_json is not a JSON object");
        }
        cnf = dump_value(c);
        oom = oom || cnf == NULL;
    }
    char stack[BODY_STACK];
    js_jsonw w;
    char *txt = NULL;
    if (!oom) {
        js_jsonw_init(&w, stack, sizeof(stack));
        put_body(&w, ev, count, aud, aud_len, cnf, detail);
        size_t need = js_jsonw_len(&w) + 1;
        txt = malloc(need);
        if (txt != NULL && js_jsonw_fits(&w)) {
            memcpy(txt, stack, need - 1);
            txt[need - 1] = '\0';
        } else if (txt != NULL) {
            js_jsonw_init(&w, txt, need);
            put_body(&w, ev, count, aud, aud_len, cnf, detail);
            if (js_jsonw_finish(&w) == NULL) { /* the same pass: cannot happen */
                free(txt);
                txt = NULL;
            }
        }
    }
    free(aud_dumped);
    free(detail);
    free(cnf);
    JS_ENSURE(txt != NULL, err, JS_EINVAL, JS_R_AUDIT_EVENT,
              "audit event cannot be encoded (invalid UTF-8 or out of memory)");
    *out = txt;
    return JS_OK;
}

/* FORMAT.md §3: the members between "time" and "prev", in this order. */
static const char *const k_members[] = {
    "type", "caller", "peer", "request_id",   "decision",    "reason", "message",
    "key",  "kid",    "alg",  "jti",          "sub",         "aud",    "iat",
    "exp",  "scopes", "cnf",  "token_sha256", "policy_hash", "count",  "detail",
};

static size_t member_rank(const char *k)
{
    for (size_t i = 0; i < sizeof(k_members) / sizeof(k_members[0]); i++)
        if (strcmp(k, k_members[i]) == 0)
            return i;
    return SIZE_MAX;
}

/* The JSON type the writer gives each member (FORMAT.md §3): iat and exp
 * are non-zero integers (0 is omitted), count an integer >= 1, detail and
 * cnf objects, aud any value, everything else a string. */
static bool member_type_ok(const char *k, const json_t *v)
{
    if (strcmp(k, "aud") == 0)
        return true;
    if (strcmp(k, "iat") == 0 || strcmp(k, "exp") == 0)
        return json_is_integer(v) && json_integer_value(v) != 0;
    if (strcmp(k, "count") == 0)
        return json_is_integer(v) && json_integer_value(v) >= 1;
    if (strcmp(k, "detail") == 0 || strcmp(k, "cnf") == 0)
        return json_is_object(v);
    return json_is_string(v);
}

static const char *str_member(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k)); /* NULL if absent or not a string */
}

/*
 * The rules of FORMAT.md §3.1/§3.2 that hold for every record any writer
 * built on this library writes, whatever event it was given: a "count" is
 * only written by the fold, which always writes decision "deny" and a
 * reason, and the overflow type "denials" is only written by the fold. The
 * per-type value lists of §3.2 (decision "on"/"off" for incident, ...)
 * describe jwt-signerd, not the library, so they are not enforced here: a
 * log the library wrote for another event vocabulary still verifies.
 * NULL if the rules hold, else what is wrong.
 */
static const char *fold_rules_violation(const json_t *o)
{
    const char *type = str_member(o, "type");
    const char *decision = str_member(o, "decision");
    const char *reason = str_member(o, "reason");
    bool folded = json_object_get(o, "count") != NULL;
    if (folded && (decision == NULL || strcmp(decision, "deny") != 0))
        return "a folded record (with \"count\") must have decision \"deny\" (FORMAT.md §3.1)";
    if (folded && (reason == NULL || reason[0] == '\0'))
        return "a folded record (with \"count\") must have a non-empty \"reason\" (FORMAT.md "
               "§3.1)";
    if (type != NULL && strcmp(type, "denials") == 0 && !folded)
        return "a \"denials\" record must have \"count\" (FORMAT.md §3.1)";
    return NULL;
}

js_status js_audit_payload_check_canonical(const uint8_t *payload, size_t len, const json_t *rec,
                                           js_err *err)
{
    json_t *o = (json_t *)rec; /* iteration only; jansson has no const iterator */
    JS_ENSURE(json_is_object(o) && json_object_size(o) >= 4, err, JS_EINVAL,
              JS_R_AUDIT_NONCANONICAL, "record is not an object with seq, time, members and prev");
    const json_t *seq = json_object_get(o, "seq");
    const json_t *time = json_object_get(o, "time");
    const json_t *prev = json_object_get(o, "prev");
    int64_t ms = 0;
    uint8_t ph[JS_AUDIT_HASH_LEN];
    JS_ENSURE(json_is_integer(seq) && json_integer_value(seq) >= 1 && json_is_string(time) &&
                  js_audit_time_parse(json_string_value(time), &ms) && json_is_string(prev) &&
                  js_audit_unhex(json_string_value(prev), json_string_length(prev), ph,
                                 JS_AUDIT_HASH_LEN),
              err, JS_EINVAL, JS_R_AUDIT_NONCANONICAL,
              "record lacks an integer seq, a time of the form YYYY-MM-DDTHH:MM:SS.mmmZ or a hex "
              "prev");
    json_t *mid = json_object();
    JS_ENSURE_ALLOC(mid, err);
    size_t pos = 0, last_rank = 0, n = json_object_size(o);
    const char *bad = NULL, *why = NULL;
    for (void *it = json_object_iter(o); it != NULL && bad == NULL;
         it = json_object_iter_next(o, it), pos++) {
        const char *k = json_object_iter_key(it);
        const char *want = pos == 0 ? "seq" : pos == 1 ? "time" : pos == n - 1 ? "prev" : NULL;
        if (want != NULL) {
            if (strcmp(k, want) != 0) {
                bad = k;
                why = "is where seq (first), time (second) or prev (last) must be";
            }
            continue;
        }
        size_t rank = member_rank(k);
        if (rank == SIZE_MAX) {
            bad = k;
            why = "is not a member of a record (FORMAT.md §3)";
        } else if (!member_type_ok(k, json_object_iter_value(it))) {
            bad = k;
            why = "has a type or value the writer never writes (FORMAT.md §3)";
        } else if (pos > 2 && rank <= last_rank) {
            bad = k;
            why = "is out of the order of FORMAT.md §3";
        } else if (json_object_set(mid, k, json_object_iter_value(it)) != 0) {
            bad = k;
            why = "cannot be copied (out of memory)";
        }
        last_rank = rank;
    }
    if (bad != NULL) {
        json_decref(mid);
        /* The key is untrusted: its length is bounded by the message buffer. */
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_NONCANONICAL, "member \"%.64s\" %s", bad, why);
    }
    const json_t *type = json_object_get(mid, "type");
    const char *rule = fold_rules_violation(mid);
    if (rule != NULL) {
        json_decref(mid);
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_NONCANONICAL, "%s", rule);
    }
    char *body = json_is_string(type) && json_string_length(type) > 0 ? dump_members(mid) : NULL;
    json_decref(mid);
    JS_ENSURE(body != NULL, err, JS_EINVAL, JS_R_AUDIT_NONCANONICAL,
              "record has no type or cannot be re-serialised");
    char *canon = malloc(JS_AUDIT_MAX_PAYLOAD + 1);
    size_t clen = 0;
    js_err e2;
    bool same =
        canon != NULL &&
        js_audit_payload_assemble((uint64_t)json_integer_value(seq), json_string_value(time), body,
                                  ph, canon, JS_AUDIT_MAX_PAYLOAD + 1, &clen, &e2) == JS_OK &&
        clen == len && memcmp(canon, payload, len) == 0;
    free(canon);
    free(body);
    JS_ENSURE(same, err, JS_EINVAL, JS_R_AUDIT_NONCANONICAL,
              "record bytes differ from the canonical serialisation of its members (whitespace, "
              "escaping or number form; FORMAT.md §3)");
    return JS_OK;
}

js_status js_audit_payload_assemble(uint64_t seq, const char *time, const char *body,
                                    const uint8_t prev[JS_AUDIT_HASH_LEN], char *out, size_t cap,
                                    size_t *len, js_err *err)
{
    char hex[JS_AUDIT_HEX_LEN + 1];
    js_hex_encode(prev, JS_AUDIT_HASH_LEN, hex);
    if (cap > JS_AUDIT_MAX_PAYLOAD + 1)
        cap = JS_AUDIT_MAX_PAYLOAD + 1;
    int n = snprintf(out, cap, "{\"seq\":%" PRIu64 ",\"time\":\"%s\",%s,\"prev\":\"%s\"}", seq,
                     time, body, hex);
    JS_ENSURE(n > 0 && (size_t)n < cap, err, JS_ELIMIT, JS_R_AUDIT_RECORD_TOO_LARGE,
              "audit record larger than %u bytes", JS_AUDIT_MAX_PAYLOAD);
    *len = (size_t)n;
    return JS_OK;
}
