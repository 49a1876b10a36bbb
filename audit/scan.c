/*
 * scan.c - see scan.h. The order of checks follows the trust order: a record
 * must sit at the next position (seq) and commit to its predecessor (prev)
 * before anything it claims is believed; a checkpoint's root is recomputed
 * from the leaves seen, never taken from the record.
 */
#include "scan.h"

#include <inttypes.h>
#include <string.h>

#include <openssl/crypto.h>

#include "record.h"

void js_audit_scan_init(js_audit_scan *s, EVP_PKEY *pub, bool check_gaps, uint64_t gap_tolerance_ms)
{
    memset(s, 0, sizeof(*s));
    s->pub = pub;
    s->check_gaps = check_gaps;
    s->gap_tolerance_ms = gap_tolerance_ms ? gap_tolerance_ms : 1000;
    js_merkle_frontier_init(&s->tree);
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static js_status check_checkpoint(const js_audit_scan *s, const js_audit_record *rec,
                                  js_audit_checkpoint *cp, js_err *err)
{
    JS_GUARD(js_audit_checkpoint_parse(rec->json, cp, err));
    JS_GUARD(js_audit_checkpoint_check_canonical(cp, rec->payload, rec->payload_len, err));
    /* RFC 6962 §2.1: the root over records 1..seq-1, recomputed here. */
    uint8_t root[32];
    js_merkle_frontier_root(&s->tree, root);
    JS_ENSURE(s->tree.size == cp->tree_size && CRYPTO_memcmp(root, cp->root, 32) == 0, err,
              JS_EINVAL, "audit.root",
              "checkpoint root does not match the Merkle root of records 1..%" PRIu64,
              cp->tree_size);
    JS_ENSURE(CRYPTO_memcmp(cp->prev_checkpoint, s->last_cp_hash, 32) == 0, err, JS_EINVAL,
              "audit.prev_checkpoint", "checkpoint does not link to the previous checkpoint");
    JS_ENSURE(!s->have_cp || strcmp(cp->origin, s->last_cp.origin) == 0, err, JS_EINVAL,
              "audit.origin", "checkpoint origin \"%s\" differs from \"%s\"", cp->origin,
              s->last_cp.origin);
    if (s->check_gaps && s->have_cp && strcmp(cp->reason, "open") != 0 &&
        strcmp(cp->reason, "recovery") != 0) {
        /* FORMAT.md §7: a writer that is up seals at least every
         * max(heartbeat, interval); twice that plus a tolerance is allowed
         * for a slow HSM or disk. Restarts and recoveries are exempt (and
         * visible as "open"/"recovery" checkpoints). */
        uint64_t period = max_u64(s->last_cp.heartbeat_ms, s->last_cp.interval_ms);
        uint64_t allowed = 2 * period + s->gap_tolerance_ms;
        int64_t gap = cp->time_ms - s->last_cp.time_ms;
        JS_ENSURE(gap <= 0 || (uint64_t)gap <= allowed, err, JS_EINVAL, "audit.gap",
                  "%" PRId64 " ms between checkpoints %" PRIu64 " and %" PRIu64 " (at most %" PRIu64
                  " ms allowed): records may be missing",
                  gap, s->last_cp.seq, cp->seq, allowed);
    }
    if (s->pub != NULL)
        JS_GUARD(js_audit_checkpoint_verify_sig(cp, s->pub, err));
    return JS_OK;
}

js_status js_audit_scan_record(js_audit_scan *s, const js_audit_record *rec, js_err *err)
{
    JS_ENSURE(rec->seq == s->last_seq + 1, err, JS_EINVAL, "audit.seq",
              "sequence gap: seq %" PRIu64 " where %" PRIu64 " was expected", rec->seq,
              s->last_seq + 1);
    json_t *prev = json_object_get(rec->json, "prev");
    uint8_t ph[32];
    JS_ENSURE(json_is_string(prev) &&
                  js_audit_unhex(json_string_value(prev), json_string_length(prev), ph, 32),
              err, JS_EINVAL, "audit.chain", "record has no valid \"prev\" hash");
    JS_ENSURE(CRYPTO_memcmp(ph, s->head, 32) == 0, err, JS_EINVAL, "audit.chain",
              "hash chain broken: \"prev\" is not the hash of record %" PRIu64, s->last_seq);
    js_audit_checkpoint cp;
    if (rec->is_checkpoint)
        JS_GUARD(check_checkpoint(s, rec, &cp, err));
    else
        /* FORMAT.md §7 rule 1: bytes as the writer serialises them, so one
         * record has one encoding and two verifiers read the same thing. */
        JS_GUARD(js_audit_payload_check_canonical(rec->payload, rec->payload_len, rec->json, err));

    js_merkle_frontier_append(&s->tree, rec->leaf_hash);
    memcpy(s->head, rec->hash, 32);
    s->last_seq = rec->seq;
    s->records++;
    if (rec->is_checkpoint) {
        if (s->have_cp && strcmp(cp.reason, "open") == 0)
            s->restarts++;
        s->last_cp = cp;
        s->have_cp = true;
        memcpy(s->last_cp_hash, rec->hash, 32);
        s->checkpoints++;
        s->since_cp = 0;
    } else {
        s->since_cp++;
    }
    return JS_OK;
}
