/*
 * reader.h - iterate over the records of an audit log (FORMAT.md): segment
 * files in the order given (or in-memory segment images), frame by frame.
 *
 * API agreed with the jwt-audit CLI; changes must be coordinated.
 *
 * The reader checks framing only (length bound, CRC-32C over length||payload,
 * the payload is one JSON object with an unsigned "seq" and a string "type");
 * it does not check sequence continuity, the hash chain, Merkle roots or
 * signatures -- that is verify.h. Every byte read is untrusted: a length is
 * checked against JS_AUDIT_MAX_PAYLOAD before anything is read for it.
 */
#ifndef JS_AUDIT_READER_H
#define JS_AUDIT_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

/* An in-memory segment image (tests, fuzzing); borrowed, not copied. */
typedef struct js_audit_segment_mem {
    const char *name; /* reported as the segment name */
    const uint8_t *data;
    size_t len;
} js_audit_segment_mem;

/* One record as read. Every pointer is borrowed from the reader and valid
 * only until the next js_audit_reader_read() or js_audit_reader_free(). */
typedef struct js_audit_record {
    uint64_t seq;           /* the payload's "seq" */
    const char *segment;    /* path (or name) of the segment it was read from */
    size_t segment_index;   /* index into the list given to _new */
    uint64_t offset;        /* byte offset of the frame (its header) in that segment */
    uint64_t frame_len;     /* header + payload bytes */
    const uint8_t *payload; /* the raw payload bytes (canonical JSON, not NUL-terminated) */
    size_t payload_len;
    json_t *json;          /* the parsed payload (borrowed: json_incref to keep it) */
    const char *type;      /* the payload's "type" */
    bool is_checkpoint;    /* type == "checkpoint" */
    uint8_t hash[32];      /* SHA-256(payload): the chain hash (the next record's "prev") */
    uint8_t leaf_hash[32]; /* SHA-256(0x00 || payload): the RFC 6962 Merkle leaf hash */
} js_audit_record;

/* Where and why reading stopped with a framing error. */
typedef struct js_audit_read_error {
    const char *segment; /* borrowed from the reader */
    size_t segment_index;
    uint64_t offset;     /* offset of the damaged frame */
    uint64_t bytes_left; /* bytes from offset to the end of that segment */
    /* True when this looks like a torn write: the damage is in the last
     * segment and no valid frame starts anywhere after offset. */
    bool torn_tail;
} js_audit_read_error;

typedef struct js_audit_reader js_audit_reader;

/* Reads the segment files paths[0..n) in that order (copies the strings).
 * Files are opened lazily; a file that cannot be opened is an error from
 * js_audit_reader_read (JS_ENOTFOUND / JS_EUNAVAIL), not from _new. */
js_status js_audit_reader_new(const char *const *paths, size_t n, js_audit_reader **out,
                              js_err *err) JS_WUR;

/* The same over in-memory images (borrowed; must outlive the reader). */
js_status js_audit_reader_new_mem(const js_audit_segment_mem *segs, size_t n, js_audit_reader **out,
                                  js_err *err) JS_WUR;

/*
 * Next record. End of stream is a return value, not an error:
 *   JS_OK, *end false: *rec filled;
 *   JS_OK, *end true:  the clean end of the last segment (*rec untouched;
 *                      every later call says the same);
 *   JS_EINVAL on a framing or payload error (reason "audit.framing" or
 *     "audit.payload", message names segment, offset and the seq expected
 *     from the previous record) -- then js_audit_reader_error() says where,
 *     and the reader stays stopped;
 *   JS_ENOTFOUND / JS_EUNAVAIL (reason "audit.io") if a file cannot be
 *     opened or read.
 */
js_status js_audit_reader_read(js_audit_reader *r, js_audit_record *rec, bool *end,
                               js_err *err) JS_WUR;

/* Valid after js_audit_reader_read returned JS_EINVAL. */
const js_audit_read_error *js_audit_reader_error(const js_audit_reader *r);

void js_audit_reader_free(js_audit_reader *r);

/* The segment number of a file name without directory (FORMAT.md §1):
 * "audit-" + at least 6 digits (exactly the writer's zero-padded "%06lu",
 * 1..999999999) + ".log"; 0 for any other name (audit-4.log, audit-00004.log,
 * audit-0000004.log, audit-000000.log). */
unsigned long js_audit_segment_number(const char *name);

/* Lists DIR/audit-NNNNNN.log in segment order (malloc'd array of malloc'd
 * paths; free with js_audit_segments_free). *n == 0 if there are none.
 * Files that are not segment names are ignored. */
js_status js_audit_list_segments(const char *dir, char ***paths, size_t *n, js_err *err) JS_WUR;
/* The same, and (when strays != NULL) the stray names: "audit-*.log" files
 * that are not segment names by FORMAT.md §1 (file names only, malloc'd;
 * free with js_audit_segments_free), so a tool can report them. */
js_status js_audit_list_segments_ex(const char *dir, char ***paths, size_t *n, char ***strays,
                                    size_t *n_strays, js_err *err) JS_WUR;
void js_audit_segments_free(char **paths, size_t n);

/* FORMAT.md §5.4: the audit keys kept next to the log (DIR/audit-key-ID.pem,
 * the writer keeps every key it used there), DIR being the directory of the
 * segment path given. Appends their paths to *paths and *n (a list freed with
 * js_audit_segments_free; it may already hold other key files); nothing when
 * DIR cannot be opened. More than JS_AUDIT_KEYS_MAX in the list: JS_EINVAL
 * "audit.pubkey". */
js_status js_audit_key_files_near(const char *segment, char ***paths, size_t *n,
                                  js_err *err) JS_WUR;

#endif
