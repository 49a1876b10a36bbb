/*
 * verify.h - the audit log verifier behind `jwt-audit verify` (FORMAT.md §7).
 *
 * API agreed with the jwt-audit CLI; changes must be coordinated.
 *
 * Checks, in one pass from seq 1: framing (length bound, CRC-32C), sequence
 * continuity, the SHA-256 hash chain, every checkpoint's Merkle root
 * (recomputed, RFC 6962 §2.1), tree size, chain head and previous-checkpoint
 * link, every checkpoint's signature (when a public key is given), the gap
 * between consecutive checkpoints, and that the log contains and extends an
 * off-host checkpoint file (so truncation and rollback are caught).
 * Stops at the first problem and says where and whether it looks like crash
 * damage (a torn tail) or tampering (anything else).
 */
#ifndef JS_AUDIT_VERIFY_H
#define JS_AUDIT_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "err.h"
#include "reader.h"
#include "scan.h"

typedef struct js_audit_verify_opts {
    const char *const *segments; /* segment paths, in log order */
    size_t n_segments;
    const js_audit_segment_mem *mem; /* or in-memory images (if non-NULL, segments is ignored) */
    size_t n_mem;
    const char *pubkey_path; /* audit-key.pem; NULL = signatures not checked */
    /* Further PEM files (one or more public keys each) a checkpoint may
     * announce as the next audit key (FORMAT.md §5.4); used only with
     * pubkey_path, each only once announced by the key before it. */
    const char *const *key_paths;
    size_t n_key_paths;
    const char *checkpoint_path; /* off-host checkpoint.json; NULL = none */
    /* Extra slack allowed between consecutive checkpoints on top of
     * 2 * max(heartbeat_ms, interval_ms); 0 = 1000 ms (FORMAT.md §7). */
    uint64_t gap_tolerance_ms;
    /* The largest gap between checkpoints tolerated without the writer's
     * signed late_ms evidence (jwt-audit verify --max-gap); 0 = the default
     * 2 * max(heartbeat_ms, interval_ms) + gap_tolerance_ms. */
    uint64_t max_gap_ms;
} js_audit_verify_opts;

typedef enum js_audit_damage {
    JS_AUDIT_DAMAGE_NONE = 0,
    JS_AUDIT_DAMAGE_CRASH,  /* torn tail: bad length/CRC/short frame at the very end */
    JS_AUDIT_DAMAGE_TAMPER, /* anything else */
} js_audit_damage;

#define JS_AUDIT_SEGNAME_MAX 512

typedef struct js_audit_verify_report {
    bool intact;            /* everything checked passed */
    js_audit_damage damage; /* NONE when intact */
    /* The first problem (when !intact): */
    uint64_t bad_seq; /* seq of the bad record (or the seq expected there) */
    char bad_segment[JS_AUDIT_SEGNAME_MAX];
    uint64_t bad_offset; /* byte offset of the bad frame in bad_segment */
    js_reason reason;    /* e.g. JS_R_AUDIT_CHAIN, JS_R_AUDIT_FRAMING, JS_R_AUDIT_BAD_SIGNATURE */
    char message[JS_MSG_MAX];

    /* What was read (up to the problem, if any): */
    uint64_t records;             /* valid records, checkpoints included */
    uint64_t checkpoints;         /* checkpoints whose root/head/links (and sig if a key) passed */
    uint64_t last_seq;            /* seq of the last valid record */
    uint8_t head[32];             /* chain hash of the last valid record */
    uint64_t unsigned_tail;       /* records after the last good checkpoint */
    uint64_t restarts;            /* "open" checkpoints after the first: writer restarts */
    uint64_t key_changes;         /* audit keys followed through next_key (FORMAT.md §5.4) */
    bool signatures_checked;      /* a public key was given */
    bool have_checkpoint;         /* latest is valid */
    js_audit_checkpoint latest;   /* the latest good checkpoint */
    bool checkpoint_file_matched; /* --checkpoint given and found, byte-identical, in the log */
    /* Gaps between checkpoints of a running writer (FORMAT.md §7 rule 5): */
    int64_t largest_gap_ms;                    /* -1 when no two such checkpoints were seen */
    uint64_t largest_gap_seq;                  /* the later checkpoint of that gap */
    uint64_t stalls;                           /* gaps over the limit covered by signed late_ms */
    js_audit_stall stall[JS_AUDIT_STALLS_MAX]; /* the first min(stalls, MAX) */
} js_audit_verify_report;

/*
 * Runs the verifier. Returns JS_OK when verification ran (rep->intact says
 * the verdict); an error when it could not run: no segments, a segment that
 * cannot be opened (JS_ENOTFOUND/JS_EUNAVAIL), a bad public key or an
 * unreadable checkpoint file (JS_EINVAL). A checkpoint file that parses but
 * is not signed by the key, or is not in the log, is a verdict (tamper).
 */
js_status js_audit_verify(const js_audit_verify_opts *opts, js_audit_verify_report *rep,
                          js_err *err) JS_WUR;

/* "none" / "crash" / "tamper". */
const char *js_audit_damage_name(js_audit_damage d);

#endif
