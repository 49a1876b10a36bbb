/*
 * scan.h - the record-by-record integrity state machine shared by the
 * verifier (verify.c) and the writer's crash recovery at open (auditlog.c):
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

typedef struct js_audit_scan {
    /* configuration */
    EVP_PKEY *pub;             /* borrowed; NULL = signatures not checked */
    bool check_gaps;           /* the writer's recovery does not judge old gaps */
    uint64_t gap_tolerance_ms; /* FORMAT.md §7 */
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
    uint64_t since_cp; /* records after the last checkpoint */
} js_audit_scan;

void js_audit_scan_init(js_audit_scan *s, EVP_PKEY *pub, bool check_gaps,
                        uint64_t gap_tolerance_ms);

/* Accepts the next record or says why not (JS_EINVAL, reason "audit.seq",
 * "audit.chain", "audit.checkpoint", "audit.root", "audit.origin",
 * "audit.bad_signature", "audit.gap"); the state is unchanged on failure. */
js_status js_audit_scan_record(js_audit_scan *s, const js_audit_record *rec, js_err *err) JS_WUR;

#endif
