/*
 * record.h - the canonical encoding of one audit record (FORMAT.md §2-§4):
 * the frame (u32le length, u32le CRC-32C over length||payload, payload),
 * the canonical compact JSON payload, and the small encodings it uses
 * (lower-case hex SHA-256, RFC 3339 UTC times with milliseconds).
 */
#ifndef JS_AUDIT_RECORD_H
#define JS_AUDIT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "auditlog.h"
#include "err.h"

#define JS_AUDIT_FRAME_HDR   8u           /* u32le length + u32le CRC-32C */
#define JS_AUDIT_MAX_PAYLOAD (64u * 1024) /* bytes; checked before a length is trusted */
#define JS_AUDIT_MIN_PAYLOAD 2u           /* "{}" */
#define JS_AUDIT_HASH_LEN    32u
#define JS_AUDIT_HEX_LEN     64u /* hex of a SHA-256 */

/* Writes the 8-byte frame header for payload. len must be in bounds. */
void js_audit_frame_header(const uint8_t *payload, uint32_t len, uint8_t hdr[JS_AUDIT_FRAME_HDR]);

/*
 * Decodes the frame at buf[0..avail): JS_OK with *payload_len when the
 * length is within [JS_AUDIT_MIN_PAYLOAD, JS_AUDIT_MAX_PAYLOAD], the whole
 * frame fits in avail and the CRC matches. JS_EINVAL "audit.framing"
 * otherwise (message says which: short header, bad length, short payload,
 * CRC mismatch).
 */
js_status js_audit_frame_decode(const uint8_t *buf, size_t avail, size_t *payload_len,
                                js_err *err) JS_WUR;

/* SHA-256(payload), the chain hash; and SHA-256(0x00||payload), the leaf. */
void js_audit_record_hash(const uint8_t *payload, size_t len, uint8_t out[JS_AUDIT_HASH_LEN]);

/*
 * The middle of a record's payload for an event: the members after "time"
 * and before "prev", in the canonical order of FORMAT.md §3, compact, no
 * braces (e.g. "\"type\":\"sign\",\"caller\":\"x\""). count > 0 adds
 * "count". *out malloc'd. JS_EINVAL if type is missing or aud_json /
 * detail_json is not valid JSON (detail must be an object).
 */
js_status js_audit_event_body(const js_audit_event *ev, uint64_t count, char **out,
                              js_err *err) JS_WUR;

/*
 * Assembles a payload: {"seq":N,"time":"T",BODY,"prev":"HEX"} into out
 * (cap bytes). JS_ELIMIT "audit.record_too_large" if it exceeds
 * JS_AUDIT_MAX_PAYLOAD or cap.
 */
js_status js_audit_payload_assemble(uint64_t seq, const char *time, const char *body,
                                    const uint8_t prev[JS_AUDIT_HASH_LEN], char *out, size_t cap,
                                    size_t *len, js_err *err) JS_WUR;

/*
 * FORMAT.md §3/§7: a payload must be exactly what the writer would write for
 * its members: "seq" first, "time" (the exact 24-character form) second,
 * "prev" last, the other members known and in the order of §3, and the bytes
 * equal to the writer's own serialisation of them (compact, jansson's
 * escaping and number form). rec is the parsed payload. Checkpoints use
 * js_audit_checkpoint_check_canonical instead. JS_EINVAL
 * "audit.noncanonical" naming the problem.
 */
js_status js_audit_payload_check_canonical(const uint8_t *payload, size_t len, const json_t *rec,
                                           js_err *err) JS_WUR;

/* Strict lower-case hex decode of exactly 2n characters (the encoder is
 * js_hex_encode, hex.h). */
bool js_audit_unhex(const char *in, size_t in_len, uint8_t *out, size_t n);

/* Strict parse of a record's time, "YYYY-MM-DDTHH:MM:SS.mmmZ" exactly as
 * js_wall_format (clock.h) writes it; false if malformed or out of range. */
bool js_audit_time_parse(const char *s, int64_t *ms);

/* Any RFC 3339 §5.6 date-time (YYYY-MM-DD(T|t| )HH:MM:SS[.frac](Z|z|+HH:MM|
 * -HH:MM)) to ms since the epoch, for times people type; leap seconds (:60)
 * are refused. */
bool js_audit_rfc3339_parse(const char *s, int64_t *ms);

#endif
