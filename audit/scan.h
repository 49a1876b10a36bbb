/*
 * scan.h - the record-by-record integrity state machine shared by the
 * verifier (verify.c) and the writer's crash recovery at open (recovery.c):
 * sequence continuity, the SHA-256 chain, and per checkpoint its Merkle root
 * (RFC 6962 §2.1, recomputed with an incremental frontier), tree size, chain
 * head, previous-checkpoint link, origin, signature and the heartbeat gap.
 * Internal to audit/; caller storage (_init, nothing to free).
 */
#ifndef JS_AUDIT_SCAN_H
#define JS_AUDIT_SCAN_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "checkpoint.h"
#include "err.h"
#include "merkle.h"
#include "reader.h"

/* A gap between two checkpoints of a running writer that is over the limit
 * but covered by the later checkpoint's signed late_ms (FORMAT.md §7 rule
 * 5): a stall, reported, not tampering. */
typedef struct js_audit_stall {
    uint64_t from_seq, seq; /* the earlier and the later checkpoint */
    int64_t gap_ms;         /* time(seq) - time(from_seq) */
    uint64_t late_ms;       /* the later checkpoint's late_ms */
    char late_why[16];      /* its late_why, or "" */
    uint64_t late_why_ms;
} js_audit_stall;

#define JS_AUDIT_STALLS_MAX 32 /* stalls kept for the report; more are only counted */

typedef struct js_audit_scan {
    /* configuration */
    EVP_PKEY *pub; /* borrowed; NULL = signatures not checked */
    /* Keys a checkpoint may announce (FORMAT.md §5.4 next_key), borrowed;
     * one becomes pub only once a checkpoint signed by pub names its id. */
    EVP_PKEY *const *keys;
    size_t n_keys;
    bool check_gaps;           /* the writer's recovery does not judge old gaps */
    uint64_t gap_tolerance_ms; /* FORMAT.md §7 */
    uint64_t max_gap_ms;       /* the limit itself if non-zero (replaces 2*period+tolerance) */
    /* state after the last accepted record */
    uint64_t last_seq;
    uint8_t head[32]; /* chain hash of record last_seq (zeros before the first) */
    js_merkle_frontier tree;
    bool have_cp;
    js_audit_checkpoint last_cp;
    uint8_t last_cp_hash[32]; /* record hash of last_cp (zeros if none) */
    uint64_t records;
    uint64_t checkpoints;
    uint64_t restarts;
    uint64_t key_changes; /* announced keys followed (FORMAT.md §5.4) */
    uint64_t since_cp;    /* records after the last checkpoint */
    /* gaps between checkpoints of a running writer (not across open/recovery) */
    int64_t largest_gap_ms;
    uint64_t largest_gap_seq; /* the later checkpoint of the largest gap (0 = none) */
    uint64_t stalls;          /* covered gaps over the limit */
    js_audit_stall stall[JS_AUDIT_STALLS_MAX];
} js_audit_scan;

void js_audit_scan_init(js_audit_scan *s, EVP_PKEY *pub, bool check_gaps,
                        uint64_t gap_tolerance_ms);

/* Accepts the next record or says why not (JS_EINVAL, reason "audit.seq",
 * "audit.chain", "audit.checkpoint", "audit.root", "audit.origin",
 * "audit.bad_signature", "audit.gap"); the state is unchanged on failure. */
js_status js_audit_scan_record(js_audit_scan *s, const js_audit_record *rec, js_err *err) JS_WUR;

#endif
