/*
 * pbcheck.h - checks the raw bytes of a protobuf request before it is
 * unpacked, so nothing is lost in the unpacking.
 *
 * protobuf-c unpacks a proto3 `string` into a NUL-terminated C string and
 * keeps no length: "dev-es256\0../x" becomes "dev-es256", and every later
 * strlen() silently agrees. It does not check UTF-8 either, though proto3
 * requires a string to be UTF-8 (Protocol Buffers Language Guide, proto3,
 * "Scalar Value Types": "A string must always contain UTF-8 encoded or 7-bit
 * ASCII text"). This module walks the wire format (Protocol Buffers Encoding:
 * tag = field_number << 3 | wire_type, base-128 varints, length-delimited
 * fields), generically over a message descriptor, and refuses:
 *   - a string field (PROTOBUF_C_TYPE_STRING) holding a NUL byte    request.nul
 *   - a string field that is not well-formed UTF-8 (RFC 3629)        request.utf8
 *   - bytes that are not a well-formed message: a varint longer than
 *     10 bytes or overflowing 64 bits, a length past the end, field
 *     number 0 or above 2^29-1, wire types 3/4 (groups) and 6/7, a known
 *     string or message field with another wire type                 request.malformed
 *   - sub-messages nested deeper than JS_PB_MAX_DEPTH                request.too_deep
 * Unknown fields are skipped (after their bounds are checked), as the proto3
 * rules for forward compatibility require. Fields of type `bytes` are not
 * text and may hold anything. Control and format characters that are valid
 * UTF-8 pass here: which of them a field allows is the field's own rule.
 *
 * Pure and bounded: no allocation, recursion only into sub-messages (at most
 * JS_PB_MAX_DEPTH levels), every length checked against what is left.
 */
#ifndef JS_PBCHECK_H
#define JS_PBCHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "err.h"

/* Sub-message nesting allowed below the top-level message. */
#define JS_PB_MAX_DEPTH 16

/*
 * JS_OK when buf[0..len) is a well-formed encoding of message type d whose
 * string fields (at any depth) are NUL-free UTF-8. Otherwise JS_EINVAL with
 * the reason above and a message naming the field and the offset inside it
 * ("SignJwtRequest.key contains a NUL byte at offset 9"), never the bytes.
 * buf may be NULL when len is 0.
 */
js_status js_pb_check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                              js_err *err) JS_WUR;

/*
 * js_pb_check_strings, then protobuf_c_message_unpack: *out is the unpacked
 * message (free it with protobuf_c_message_free_unpacked(*out, NULL)), or
 * NULL with JS_EINVAL (reason as above; "request.malformed" when protobuf-c
 * refuses the bytes).
 */
js_status js_pb_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                       ProtobufCMessage **out, js_err *err) JS_WUR;

#endif
