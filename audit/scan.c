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

/* FORMAT.md §5.4: the key a checkpoint signed by the current key announces
 * must be one of the keys given; it signs every checkpoint after this one. */
static js_status find_next_key(const js_audit_scan *s, const js_audit_checkpoint *cp,
                               EVP_PKEY **next, js_err *err)
{
    for (size_t i = 0; i < s->n_keys; i++) {
        char id[JS_AUDIT_KEY_ID_LEN + 1];
        if (s->keys[i] != NULL && js_audit_pubkey_id(s->keys[i], id, err) == JS_OK &&
            strcmp(id, cp->next_key) == 0) {
            *next = s->keys[i];
            return JS_OK;
        }
    }
    return js_err_set(err, JS_EINVAL, JS_R_AUDIT_KEY_UNKNOWN,
                      "checkpoint %" PRIu64 " announces audit key %s, which is not among the "
                      "keys given (audit-key-*.pem next to the log, --keys FILE)",
                      cp->seq, cp->next_key);
}

static js_status check_checkpoint(const js_audit_scan *s, const js_audit_record *rec,
                                  js_audit_checkpoint *cp, int64_t *gap_out, bool *stall,
                                  EVP_PKEY **next, js_err *err)
{
    JS_GUARD(js_audit_checkpoint_parse(rec->json, cp, err));
    JS_GUARD(js_audit_checkpoint_check_canonical(cp, rec->payload, rec->payload_len, err));
    /* RFC 6962 §2.1: the root over records 1..seq-1, recomputed here. */
    uint8_t root[32];
    js_merkle_frontier_root(&s->tree, root);
    JS_ENSURE(s->tree.size == cp->tree_size && CRYPTO_memcmp(root, cp->root, 32) == 0, err,
              JS_EINVAL, JS_R_AUDIT_ROOT,
              "checkpoint root does not match the Merkle root of records 1..%" PRIu64,
              cp->tree_size);
    JS_ENSURE(CRYPTO_memcmp(cp->prev_checkpoint, s->last_cp_hash, 32) == 0, err, JS_EINVAL,
              JS_R_AUDIT_PREV_CHECKPOINT, "checkpoint does not link to the previous checkpoint");
    JS_ENSURE(!s->have_cp || strcmp(cp->origin, s->last_cp.origin) == 0, err, JS_EINVAL,
              JS_R_AUDIT_ORIGIN, "checkpoint origin \"%s\" differs from \"%s\"", cp->origin,
              s->last_cp.origin);
    /* The signature first: late_ms below is evidence only once it is known
     * to be the writer's (with a key). */
    *next = NULL;
    if (s->pub != NULL)
        JS_GUARD(js_audit_checkpoint_verify_sig(cp, s->pub, err));
    if (s->pub != NULL && cp->next_key[0] != '\0')
        JS_GUARD(find_next_key(s, cp, next, err));
    *gap_out = -1;
    *stall = false;
    if (s->check_gaps && s->have_cp && strcmp(cp->reason, "open") != 0 &&
        strcmp(cp->reason, "recovery") != 0) {
        /* FORMAT.md §7 rule 5: a writer that is up seals at least every
         * max(heartbeat, interval); twice that plus a tolerance is allowed
         * for a slow HSM or disk. Restarts and recoveries are exempt (and
         * visible as "open"/"recovery" checkpoints). Beyond the limit, only
         * the later checkpoint's own signed late_ms can account for the
         * excess: then the writer was stalled and said so (a stall, reported);
         * otherwise the gap is unexplained. */
        uint64_t period = max_u64(s->last_cp.heartbeat_ms, s->last_cp.interval_ms);
        uint64_t allowed = s->max_gap_ms != 0 ? s->max_gap_ms : 2 * period + s->gap_tolerance_ms;
        int64_t gap = cp->time_ms - s->last_cp.time_ms;
        *gap_out = gap;
        if (gap > 0 && (uint64_t)gap > allowed) {
            JS_ENSURE((uint64_t)gap <= allowed + cp->late_ms, err, JS_EINVAL, JS_R_AUDIT_GAP,
                      "%" PRId64 " ms between checkpoints %" PRIu64 " and %" PRIu64
                      " (at most %" PRIu64 " ms allowed, %" PRIu64
                      " ms of it accounted for by the writer's signed late_ms): an unexplained "
                      "gap; sealed intervals may be missing",
                      gap, s->last_cp.seq, cp->seq, allowed, cp->late_ms);
            *stall = true;
        }
    }
    return JS_OK;
}

js_status js_audit_scan_record(js_audit_scan *s, const js_audit_record *rec, js_err *err)
{
    JS_ENSURE(rec->seq == s->last_seq + 1, err, JS_EINVAL, JS_R_AUDIT_SEQ,
              "sequence gap: seq %" PRIu64 " where %" PRIu64 " was expected", rec->seq,
              s->last_seq + 1);
    json_t *prev = json_object_get(rec->json, "prev");
    uint8_t ph[32];
    JS_ENSURE(json_is_string(prev) &&
                  js_audit_unhex(json_string_value(prev), json_string_length(prev), ph, 32),
              err, JS_EINVAL, JS_R_AUDIT_CHAIN, "record has no valid \"prev\" hash");
    JS_ENSURE(CRYPTO_memcmp(ph, s->head, 32) == 0, err, JS_EINVAL, JS_R_AUDIT_CHAIN,
              "hash chain broken: \"prev\" is not the hash of record %" PRIu64, s->last_seq);
    js_audit_checkpoint cp;
    int64_t gap = -1;
    bool stall = false;
    EVP_PKEY *next = NULL;
    if (rec->is_checkpoint)
        JS_GUARD(check_checkpoint(s, rec, &cp, &gap, &stall, &next, err));
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
        if (gap > s->largest_gap_ms) {
            s->largest_gap_ms = gap;
            s->largest_gap_seq = cp.seq;
        }
        if (stall) {
            if (s->stalls < JS_AUDIT_STALLS_MAX) {
                js_audit_stall *t = &s->stall[s->stalls];
                t->from_seq = s->last_cp.seq;
                t->seq = cp.seq;
                t->gap_ms = gap;
                t->late_ms = cp.late_ms;
                memcpy(t->late_why, cp.late_why, sizeof(t->late_why));
                t->late_why_ms = cp.late_why_ms;
            }
            s->stalls++;
        }
        if (next != NULL) {
            s->pub = next;
            s->key_changes++;
        }
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
