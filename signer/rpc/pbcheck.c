/*
 * pbcheck.c - a bounded walker over the protobuf wire format that refuses
 * string fields protobuf-c would silently truncate or pass on unchecked (see
 * pbcheck.h). Wire format: Protocol Buffers Encoding guide ("Base 128
 * Varints", "Message Structure", "Length-Delimited Records").
 */
#include "pbcheck.h"

#include <inttypes.h>
#include <stdbool.h>

#include "text.h"

/* Protocol Buffers Encoding: field numbers are 1..2^29-1. */
#define PB_FIELD_MAX 0x1FFFFFFFu
/* A varint encodes at most 64 bits in at most 10 bytes. */
#define PB_VARINT_MAX 10

enum {
    PB_WT_VARINT = 0,
    PB_WT_I64 = 1,
    PB_WT_LEN = 2,
    PB_WT_SGROUP = 3,
    PB_WT_EGROUP = 4,
    PB_WT_I32 = 5,
};

/* Reads one varint at p[0..left): false if it is truncated, longer than 10
 * bytes, or its 10th byte carries bits beyond 64. */
static bool read_varint(const uint8_t *p, size_t left, uint64_t *v, size_t *used)
{
    uint64_t x = 0;
    for (size_t i = 0; i < PB_VARINT_MAX && i < left; i++) {
        uint8_t b = p[i];
        if (i == PB_VARINT_MAX - 1 && b > 1)
            return false;
        x |= (uint64_t)(b & 0x7fu) << (7 * i);
        if ((b & 0x80u) == 0) {
            *v = x;
            *used = i + 1;
            return true;
        }
    }
    return false;
}

static js_status malformed(const ProtobufCMessageDescriptor *d, size_t at, const char *what,
                           js_err *err)
{
    return js_err_set(err, JS_EINVAL, JS_R_REQUEST_MALFORMED,
                      "%s is not a valid protobuf message: %s at byte %zu", d->short_name, what,
                      at);
}

/* Length in UTF-8 of a code point js_text_valid decoded. */
static size_t utf8_len(uint32_t cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/*
 * NUL-free, well-formed UTF-8. js_text_valid is the one UTF-8 decoder; it
 * stops at the first character that is not clean text, and only NUL and
 * malformed bytes are this layer's business (other Cc/Cf are the field's own
 * rule), so the scan resumes after each other character. Each call starts
 * where the last one stopped: linear in n.
 */
static js_status check_string(const ProtobufCMessageDescriptor *d,
                              const ProtobufCFieldDescriptor *f, const uint8_t *s, size_t n,
                              js_err *err)
{
    size_t i = 0;
    while (i < n) {
        size_t off = 0;
        uint32_t cp = 0;
        if (js_text_valid((const char *)s + i, n - i, &off, &cp))
            return JS_OK;
        i += off;
        JS_ENSURE(cp != JS_TEXT_NOT_UTF8, err, JS_EINVAL, JS_R_REQUEST_UTF8,
                  "%s.%s is not valid UTF-8 at offset %zu (a protobuf string is UTF-8 text)",
                  d->short_name, f->name, i);
        JS_ENSURE(cp != 0, err, JS_EINVAL, JS_R_REQUEST_NUL,
                  "%s.%s contains a NUL byte at offset %zu", d->short_name, f->name, i);
        i += utf8_len(cp);
    }
    return JS_OK;
}

static js_status walk(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                      unsigned depth, js_err *err)
{
    size_t pos = 0;
    while (pos < len) {
        const size_t tag_at = pos;
        uint64_t tag = 0;
        size_t used = 0;
        if (!read_varint(buf + pos, len - pos, &tag, &used))
            return malformed(d, tag_at, "truncated or overlong tag", err);
        pos += used;
        uint64_t number = tag >> 3;
        unsigned wt = (unsigned)(tag & 7u);
        if (number == 0 || number > PB_FIELD_MAX)
            return malformed(d, tag_at, "field number out of range 1..2^29-1", err);
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)number);
        bool want_len =
            f != NULL && (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES ||
                          f->type == PROTOBUF_C_TYPE_MESSAGE);
        if (want_len && wt != PB_WT_LEN)
            return malformed(d, tag_at, "a string, bytes or message field is not length-delimited",
                             err);
        uint64_t v = 0;
        switch (wt) {
        case PB_WT_VARINT:
            if (!read_varint(buf + pos, len - pos, &v, &used))
                return malformed(d, pos, "truncated or overlong varint", err);
            pos += used;
            break;
        case PB_WT_I64:
            if (len - pos < 8)
                return malformed(d, pos, "truncated 64-bit field", err);
            pos += 8;
            break;
        case PB_WT_I32:
            if (len - pos < 4)
                return malformed(d, pos, "truncated 32-bit field", err);
            pos += 4;
            break;
        case PB_WT_LEN: {
            if (!read_varint(buf + pos, len - pos, &v, &used))
                return malformed(d, pos, "truncated or overlong length", err);
            pos += used;
            if (v > len - pos)
                return malformed(d, pos, "length past the end of the message", err);
            const uint8_t *body = buf + pos;
            size_t n = (size_t)v;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING)
                JS_GUARD(check_string(d, f, body, n, err));
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                JS_ENSURE(depth < JS_PB_MAX_DEPTH, err, JS_EINVAL, JS_R_REQUEST_TOO_DEEP,
                          "%s.%s: messages nested deeper than %d levels", d->short_name, f->name,
                          JS_PB_MAX_DEPTH);
                JS_GUARD(walk(f->descriptor, body, n, depth + 1, err));
            }
            pos += n;
            break;
        }
        case PB_WT_SGROUP:
        case PB_WT_EGROUP:
            /* Deprecated proto2 groups: no proto3 message has one and
             * protobuf-c cannot skip them. */
            return malformed(d, tag_at, "group wire type", err);
        default:
            return malformed(d, tag_at, "unknown wire type", err);
        }
    }
    return JS_OK;
}

js_status js_pb_check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                              js_err *err)
{
    JS_ENSURE(d != NULL && d->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC, err, JS_EINTERNAL,
              JS_R_INTERNAL_BUG, "no message descriptor");
    JS_ENSURE(buf != NULL || len == 0, err, JS_EINTERNAL, JS_R_INTERNAL_BUG, "no message buffer");
    return walk(d, buf, len, 0, err);
}

js_status js_pb_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                       ProtobufCMessage **out, js_err *err)
{
    *out = NULL;
    JS_GUARD(js_pb_check_strings(d, buf, len, err));
    /* protobuf-c reads nothing when len is 0; a non-NULL pointer keeps it
     * from ever seeing NULL. */
    static const uint8_t empty[1] = {0};
    *out = protobuf_c_message_unpack(d, NULL, len, len > 0 ? buf : empty);
    JS_ENSURE(*out != NULL, err, JS_EINVAL, JS_R_REQUEST_MALFORMED,
              "%s is not a valid protobuf message", d->short_name);
    return JS_OK;
}
