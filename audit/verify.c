/*
 * verify.c - js_audit_verify (FORMAT.md §7): one pass over the log with the
 * shared scan state machine, plus the off-host checkpoint file, which is
 * what turns truncation and rollback (the attacks a hash chain alone cannot
 * see: Ma & Tsudik) into detected tampering.
 */
#include "verify.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scan.h"

const char *js_audit_damage_name(js_audit_damage d)
{
    switch (d) {
    case JS_AUDIT_DAMAGE_NONE:
        return "none";
    case JS_AUDIT_DAMAGE_CRASH:
        return "crash";
    case JS_AUDIT_DAMAGE_TAMPER:
        return "tamper";
    default:
        return "unknown";
    }
}

static void set_bad(js_audit_verify_report *rep, js_audit_damage d, uint64_t seq,
                    const char *segment, uint64_t offset, const js_err *e)
{
    rep->intact = false;
    rep->damage = d;
    rep->bad_seq = seq;
    snprintf(rep->bad_segment, sizeof(rep->bad_segment), "%s", segment ? segment : "");
    rep->bad_offset = offset;
    rep->reason = e->reason;
    snprintf(rep->message, sizeof(rep->message), "%s", e->msg);
}

typedef struct cp_file {
    uint8_t *payload;
    size_t len;
    js_audit_checkpoint cp;
    bool matched;
} cp_file;

static js_status run(const js_audit_verify_opts *opts, EVP_PKEY *pub, EVP_PKEY *const *keys,
                     size_t n_keys, cp_file *cpf, js_audit_verify_report *rep, js_err *err)
{
    js_audit_reader *r = NULL;
    if (opts->mem != NULL)
        JS_GUARD(js_audit_reader_new_mem(opts->mem, opts->n_mem, &r, err));
    else
        JS_GUARD(js_audit_reader_new(opts->segments, opts->n_segments, &r, err));

    js_audit_scan s;
    js_audit_scan_init(&s, pub, true, opts->gap_tolerance_ms);
    s.keys = keys;
    s.n_keys = n_keys;
    s.max_gap_ms = opts->max_gap_ms;
    s.largest_gap_ms = -1;
    size_t end_idx = 0; /* segment of the last valid record (names outlive the reader) */
    uint64_t end_off = 0;
    js_status st = JS_OK;
    for (;;) {
        js_audit_record rec;
        js_err e;
        bool end = false;
        js_status rs = js_audit_reader_read(r, &rec, &end, &e);
        if (rs == JS_OK && end)
            break;
        if (rs == JS_EINVAL) {
            const js_audit_read_error *re = js_audit_reader_error(r);
            js_audit_damage d = re->torn_tail ? JS_AUDIT_DAMAGE_CRASH : JS_AUDIT_DAMAGE_TAMPER;
            if (cpf->payload != NULL && !cpf->matched && cpf->cp.seq > s.last_seq) {
                /* checkpoint.json is written only after its record is
                 * durable, so no crash can lose a record it commits to. */
                d = JS_AUDIT_DAMAGE_TAMPER;
                js_err_prefix(
                    &e, "the checkpoint file commits to seq %" PRIu64 " beyond: ", cpf->cp.seq);
            }
            set_bad(rep, d, s.last_seq + 1, re->segment, re->offset, &e);
            break;
        }
        if (rs != JS_OK) {
            *err = e;
            st = rs;
            break;
        }
        end_idx = rec.segment_index;
        end_off = rec.offset + rec.frame_len;
        if (cpf->payload != NULL && rec.seq == cpf->cp.seq) {
            if (rec.payload_len != cpf->len || memcmp(rec.payload, cpf->payload, cpf->len) != 0) {
                js_err_set(&e, JS_EINVAL, JS_R_AUDIT_CHECKPOINT_FILE,
                           "record %" PRIu64 " differs from the checkpoint file: the log was "
                           "rewritten or replaced",
                           rec.seq);
                set_bad(rep, JS_AUDIT_DAMAGE_TAMPER, rec.seq, rec.segment, rec.offset, &e);
                break;
            }
        }
        if (js_audit_scan_record(&s, &rec, &e) != JS_OK) {
            set_bad(rep, JS_AUDIT_DAMAGE_TAMPER, rec.seq, rec.segment, rec.offset, &e);
            break;
        }
        if (cpf->payload != NULL && rec.seq == cpf->cp.seq)
            cpf->matched = true;
    }
    js_audit_reader_free(r);
    if (st != JS_OK)
        return st;
    if (rep->intact && cpf->payload != NULL && !cpf->matched) {
        js_err e;
        js_err_set(&e, JS_EINVAL, JS_R_AUDIT_TRUNCATED,
                   "the log ends at seq %" PRIu64 " but the checkpoint file commits to seq %" PRIu64
                   " (tree size %" PRIu64 "): the log was truncated or rolled back",
                   s.last_seq, cpf->cp.seq, cpf->cp.tree_size);
        const char *end_seg = opts->mem != NULL ? opts->mem[end_idx].name : opts->segments[end_idx];
        set_bad(rep, JS_AUDIT_DAMAGE_TAMPER, s.last_seq + 1, end_seg, end_off, &e);
    }
    rep->records = s.records;
    rep->checkpoints = s.checkpoints;
    rep->last_seq = s.last_seq;
    memcpy(rep->head, s.head, 32);
    rep->unsigned_tail = s.since_cp;
    rep->restarts = s.restarts;
    rep->key_changes = s.key_changes;
    rep->have_checkpoint = s.have_cp;
    if (s.have_cp)
        rep->latest = s.last_cp;
    rep->checkpoint_file_matched = cpf->matched;
    rep->largest_gap_ms = s.largest_gap_ms;
    rep->largest_gap_seq = s.largest_gap_seq;
    rep->stalls = s.stalls;
    memcpy(rep->stall, s.stall, sizeof(rep->stall));
    return JS_OK;
}

static void keys_free(EVP_PKEY **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        EVP_PKEY_free(keys[i]);
    free(keys);
}

js_status js_audit_verify(const js_audit_verify_opts *opts, js_audit_verify_report *rep,
                          js_err *err)
{
    memset(rep, 0, sizeof(*rep));
    bool mem = opts->mem != NULL;
    JS_ENSURE((mem ? opts->n_mem : opts->n_segments) > 0 && (mem || opts->segments != NULL), err,
              JS_EINVAL, JS_R_AUDIT_USAGE, "no log segments to verify");
    rep->intact = true;
    EVP_PKEY *pub = NULL;
    if (opts->pubkey_path != NULL)
        JS_GUARD(js_audit_pubkey_load(opts->pubkey_path, &pub, err));
    rep->signatures_checked = pub != NULL;
    /* keys[0] is the first key; the rest are candidates for next_key. */
    EVP_PKEY **keys = NULL;
    size_t n_keys = 0;
    if (pub != NULL) {
        keys = malloc(sizeof(*keys));
        if (keys == NULL) {
            EVP_PKEY_free(pub);
            return js_err_oom(err);
        }
        keys[n_keys++] = pub;
        for (size_t i = 0; i < opts->n_key_paths; i++) {
            js_status ks = js_audit_pubkeys_load(opts->key_paths[i], &keys, &n_keys, err);
            if (ks != JS_OK) {
                keys_free(keys, n_keys);
                return ks;
            }
        }
    }
    cp_file cpf;
    memset(&cpf, 0, sizeof(cpf));
    if (opts->checkpoint_path != NULL) {
        js_status st =
            js_audit_checkpoint_load(opts->checkpoint_path, &cpf.payload, &cpf.len, &cpf.cp, err);
        if (st != JS_OK) {
            keys_free(keys, n_keys);
            return st;
        }
        /* After a rotation the file is signed by a later key; that it is
         * the key in force at its seq is checked where the scan meets the
         * record (byte-identical, signature checked with the chained key). */
        bool signed_ok = pub == NULL;
        js_err e;
        for (size_t i = 0; i < n_keys && !signed_ok; i++)
            signed_ok = js_audit_checkpoint_verify_sig(&cpf.cp, keys[i], &e) == JS_OK;
        if (!signed_ok) {
            js_err_prefix(&e, "checkpoint file: ");
            set_bad(rep, JS_AUDIT_DAMAGE_TAMPER, cpf.cp.seq, opts->checkpoint_path, 0, &e);
            free(cpf.payload);
            keys_free(keys, n_keys);
            return JS_OK;
        }
    }
    js_status st = run(opts, pub, keys, n_keys, &cpf, rep, err);
    free(cpf.payload);
    keys_free(keys, n_keys);
    return st;
}
