/*
 * proof.c - inclusion proofs of one audit record against a signed checkpoint
 * (proof.h): the prover keeps every leaf hash of the log, the record to
 * prove and the latest checkpoint, then builds the RFC 9162 §2.1.3 audit
 * path; the checker verifies a proof from its own members only, treating
 * every one of them as untrusted (bounded, type-checked, copies compared).
 */
#include "proof.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "hex.h"
#include "query.h"
#include "record.h"

struct js_audit_prover {
    char *jti;
    uint8_t *leaves; /* leaf hashes, index seq - 1 */
    uint64_t n, cap;
    char *payload; /* the record's payload (a copy), NUL-terminated */
    size_t payload_len;
    uint64_t seq;
    uint64_t matches;
    char *cp_payload; /* the latest checkpoint's payload */
    size_t cp_len;
    js_audit_checkpoint cp;
    bool have_cp;
};

static char *dup_bytes(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* ---- building ------------------------------------------------------------- */

js_status js_audit_prover_new(const char *jti, js_audit_prover **out, js_err *err)
{
    JS_ENSURE(jti != NULL && *jti != '\0', err, JS_EINVAL, JS_R_AUDIT_PROOF,
              "a proof needs a non-empty jti");
    js_audit_prover *p = calloc(1, sizeof(*p));
    JS_ENSURE_ALLOC(p, err);
    p->jti = strdup(jti);
    if (p->jti == NULL) {
        free(p);
        return js_err_set(err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    }
    *out = p;
    return JS_OK;
}

void js_audit_prover_free(js_audit_prover *p)
{
    if (p == NULL)
        return;
    free(p->jti);
    free(p->leaves);
    free(p->payload);
    free(p->cp_payload);
    free(p);
}

uint64_t js_audit_prover_matches(const js_audit_prover *p)
{
    return p->matches;
}

uint64_t js_audit_prover_seq(const js_audit_prover *p)
{
    return p->payload != NULL ? p->seq : 0;
}

js_status js_audit_prover_add(js_audit_prover *p, const js_audit_record *rec, js_err *err)
{
    /* The Merkle leaves are the records in seq order (FORMAT.md §5); a gap
     * would make every index wrong, so refuse and point at verify. */
    if (rec->seq != p->n + 1)
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_SEQ,
                          "%s offset %" PRIu64 ": seq %" PRIu64 " where %" PRIu64
                          " was expected; run `jwt-audit verify`",
                          rec->segment, rec->offset, rec->seq, p->n + 1);
    JS_ENSURE(p->n < JS_AUDIT_PROVE_MAX_RECORDS, err, JS_ELIMIT, JS_R_AUDIT_PROOF,
              "more than %llu records; too large to prove in memory", JS_AUDIT_PROVE_MAX_RECORDS);
    if (p->n == p->cap) {
        uint64_t cap = p->cap ? p->cap * 2 : 1024;
        uint8_t *nl = realloc(p->leaves, (size_t)cap * JS_MERKLE_HASH_LEN);
        JS_ENSURE_ALLOC(nl, err);
        p->leaves = nl;
        p->cap = cap;
    }
    memcpy(p->leaves + p->n * JS_MERKLE_HASH_LEN, rec->leaf_hash, JS_MERKLE_HASH_LEN);
    p->n++;

    if (rec->is_checkpoint) {
        js_audit_checkpoint cp;
        js_status st = js_audit_checkpoint_parse(rec->json, &cp, err);
        if (st != JS_OK) {
            js_err_prefix(err, "%s offset %" PRIu64 ": checkpoint seq %" PRIu64 ": ", rec->segment,
                          rec->offset, rec->seq);
            return st;
        }
        char *copy = dup_bytes(rec->payload, rec->payload_len);
        JS_ENSURE_ALLOC(copy, err);
        free(p->cp_payload);
        p->cp_payload = copy;
        p->cp_len = rec->payload_len;
        p->cp = cp;
        p->have_cp = true;
    }
    const char *jti = js_audit_member_str(rec->json, JS_AUDIT_F_JTI);
    if (jti != NULL && strcmp(jti, p->jti) == 0) {
        p->matches++;
        if (p->payload == NULL) {
            p->payload = dup_bytes(rec->payload, rec->payload_len);
            JS_ENSURE_ALLOC(p->payload, err);
            p->payload_len = rec->payload_len;
            p->seq = rec->seq;
        }
    }
    return JS_OK;
}

/* The proof document; NULL when it cannot be encoded. */
static json_t *proof_encode(const js_audit_prover *p, uint64_t index, uint64_t size,
                            const uint8_t *path, size_t plen, const uint8_t *root)
{
    json_t *jpath = json_array();
    char hex[JS_AUDIT_HEX_LEN + 1], leaf_hex[JS_AUDIT_HEX_LEN + 1], root_hex[JS_AUDIT_HEX_LEN + 1];
    for (size_t i = 0; jpath != NULL && i < plen; i++) {
        js_hex_encode(path + i * JS_MERKLE_HASH_LEN, JS_MERKLE_HASH_LEN, hex);
        if (json_array_append_new(jpath, json_string(hex)) != 0) {
            json_decref(jpath);
            jpath = NULL;
        }
    }
    if (jpath == NULL)
        return NULL;
    js_hex_encode(p->leaves + index * JS_MERKLE_HASH_LEN, JS_MERKLE_HASH_LEN, leaf_hex);
    js_hex_encode(root, JS_MERKLE_HASH_LEN, root_hex);
    /* Payloads are JSON the reader parsed, so valid UTF-8 without NUL: a JSON
     * string carries their exact bytes. */
    return json_pack("{s:s, s:s%, s:I, s:I, s:I, s:s, s:s, s:o, s:s%}", "format",
                     JS_AUDIT_PROOF_FORMAT, "payload", p->payload, p->payload_len, "seq",
                     (json_int_t)p->seq, "leaf_index", (json_int_t)index, "tree_size",
                     (json_int_t)size, "leaf_hash", leaf_hex, "root", root_hex, "audit_path", jpath,
                     "checkpoint", p->cp_payload, p->cp_len);
}

js_status js_audit_prover_build(const js_audit_prover *p, json_t **proof, js_err *err)
{
    JS_ENSURE(p->payload != NULL, err, JS_ENOTFOUND, JS_R_AUDIT_PROOF,
              "no record with jti '%s' in the log", p->jti);
    JS_ENSURE(p->have_cp, err, JS_ESTATE, JS_R_AUDIT_PROOF,
              "the log has no checkpoint: nothing to anchor a proof to");
    uint64_t index = p->seq - 1, size = p->cp.tree_size;
    JS_ENSURE(index < size, err, JS_ESTATE, JS_R_AUDIT_PROOF,
              "the record (seq %" PRIu64 ") is after the latest checkpoint (seq %" PRIu64
              ", tree size %" PRIu64 "): not yet covered by a signature; retry after the "
              "next checkpoint",
              p->seq, p->cp.seq, size);
    JS_ENSURE(size <= p->n, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint seq %" PRIu64 " claims tree size %" PRIu64 " but only %" PRIu64
              " records precede it; run `jwt-audit verify`",
              p->cp.seq, size, p->n);
    /* The root must be the log's: otherwise the proof would not verify and
     * the log itself is damaged (RFC 6962 §2.1). */
    uint8_t root[JS_MERKLE_HASH_LEN];
    js_merkle_root(p->leaves, (size_t)size, root);
    JS_ENSURE(CRYPTO_memcmp(root, p->cp.root, sizeof root) == 0, err, JS_EINVAL, JS_R_AUDIT_ROOT,
              "the records before checkpoint seq %" PRIu64
              " do not hash to its Merkle root; the log is damaged, run `jwt-audit verify`",
              p->cp.seq);
    uint8_t path[JS_AUDIT_PROOF_PATH_MAX * JS_MERKLE_HASH_LEN];
    size_t plen = 0;
    js_err inner;
    if (js_merkle_inclusion_proof(p->leaves, (size_t)size, index, path, JS_AUDIT_PROOF_PATH_MAX,
                                  &plen, &inner) != JS_OK ||
        js_merkle_verify_inclusion(p->leaves + index * JS_MERKLE_HASH_LEN, index, size, path, plen,
                                   root, &inner) != JS_OK)
        return js_err_set(err, JS_EINTERNAL, JS_R_AUDIT_PROOF,
                          "internal error building the proof: %s", inner.msg);
    json_t *doc = proof_encode(p, index, size, path, plen, root);
    JS_ENSURE(doc != NULL, err, JS_EINTERNAL, JS_R_AUDIT_PROOF,
              "cannot encode the proof (payload not UTF-8?)");
    *proof = doc;
    return JS_OK;
}

/* ---- checking ------------------------------------------------------------- */

/* A proof member that must be a string of at most max bytes; *len its length. */
static js_status member_str(const json_t *doc, const char *key, size_t max, const char **out,
                            size_t *len, js_err *err)
{
    const json_t *v = json_object_get(doc, key);
    JS_ENSURE(json_is_string(v), err, JS_EINVAL, JS_R_AUDIT_PROOF,
              "\"%s\" is missing or not a string", key);
    JS_ENSURE(json_string_length(v) <= max, err, JS_EINVAL, JS_R_AUDIT_PROOF,
              "\"%s\" is longer than %zu bytes", key, max);
    *len = json_string_length(v);
    *out = json_string_value(v);
    return JS_OK;
}

static js_status member_u64(const json_t *doc, const char *key, uint64_t *out, js_err *err)
{
    const json_t *v = json_object_get(doc, key);
    JS_ENSURE(json_is_integer(v) && json_integer_value(v) >= 0, err, JS_EINVAL, JS_R_AUDIT_PROOF,
              "\"%s\" is missing or not a non-negative integer", key);
    *out = (uint64_t)json_integer_value(v);
    return JS_OK;
}

/* An optional hex copy of a hash in the proof: absent, or equal to want. */
static bool copy_matches(const json_t *doc, const char *key, const uint8_t want[JS_MERKLE_HASH_LEN])
{
    const json_t *v = json_object_get(doc, key);
    uint8_t h[JS_MERKLE_HASH_LEN];
    if (v == NULL)
        return true;
    return json_is_string(v) &&
           js_audit_unhex(json_string_value(v), json_string_length(v), h, sizeof h) &&
           CRYPTO_memcmp(h, want, sizeof h) == 0;
}

/* The verdict "does not verify": JS_OK, since the check ran. */
static js_status refuse(js_audit_proof_result *res, js_reason reason, const char *fmt, ...)
    JS_PRINTF(3, 4);
static js_status refuse(js_audit_proof_result *res, js_reason reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof res->message, fmt, ap);
    va_end(ap);
    res->valid = false;
    res->reason = reason;
    return JS_OK;
}

/* The well-formed members of a proof (borrowed from the document). */
typedef struct proof_members {
    const char *payload, *cptext;
    size_t plen, cplen;
    uint64_t index, size;
    uint8_t path[JS_AUDIT_PROOF_PATH_MAX * JS_MERKLE_HASH_LEN];
    size_t npath;
} proof_members;

static js_status proof_parse(const json_t *doc, proof_members *m, js_err *err)
{
    const json_t *fmt = json_object_get(doc, "format");
    JS_ENSURE(json_is_string(fmt) && strcmp(json_string_value(fmt), JS_AUDIT_PROOF_FORMAT) == 0,
              err, JS_EINVAL, JS_R_AUDIT_PROOF, "\"format\" is not \"%s\"", JS_AUDIT_PROOF_FORMAT);
    JS_GUARD(member_str(doc, "payload", JS_AUDIT_MAX_PAYLOAD, &m->payload, &m->plen, err));
    JS_GUARD(member_str(doc, "checkpoint", JS_AUDIT_MAX_PAYLOAD, &m->cptext, &m->cplen, err));
    JS_GUARD(member_u64(doc, "leaf_index", &m->index, err));
    JS_GUARD(member_u64(doc, "tree_size", &m->size, err));
    const json_t *jpath = json_object_get(doc, "audit_path");
    JS_ENSURE(json_is_array(jpath) && json_array_size(jpath) <= JS_AUDIT_PROOF_PATH_MAX, err,
              JS_EINVAL, JS_R_AUDIT_PROOF,
              "\"audit_path\" is missing, not an array, or longer than %d hashes",
              JS_AUDIT_PROOF_PATH_MAX);
    m->npath = json_array_size(jpath);
    for (size_t i = 0; i < m->npath; i++) {
        const json_t *h = json_array_get(jpath, i);
        JS_ENSURE(json_is_string(h) &&
                      js_audit_unhex(json_string_value(h), json_string_length(h),
                                     m->path + i * JS_MERKLE_HASH_LEN, JS_MERKLE_HASH_LEN),
                  err, JS_EINVAL, JS_R_AUDIT_PROOF,
                  "audit_path[%zu] is not 64 lower-case hex digits", i);
    }
    return JS_OK;
}

/* The record's "seq" if it is a positive integer. */
static bool record_seq(const json_t *rec, uint64_t *out)
{
    const json_t *v = json_object_get(rec, JS_AUDIT_F_SEQ);
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

js_status js_audit_proof_check(const json_t *proof, EVP_PKEY *pub, js_audit_proof_result *res,
                               js_err *err)
{
    memset(res, 0, sizeof(*res));
    proof_members m;
    JS_GUARD(proof_parse(proof, &m, err));

    /* 1. The checkpoint: parse, then its signature (FORMAT.md §5). */
    json_error_t jerr;
    json_t *cpj = json_loadb(m.cptext, m.cplen, JSON_REJECT_DUPLICATES, &jerr);
    if (cpj == NULL)
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_PROOF, "\"checkpoint\" is not JSON: %s",
                          jerr.text);
    js_audit_checkpoint *cp = &res->checkpoint;
    js_status st = js_audit_checkpoint_parse(cpj, cp, err);
    json_decref(cpj);
    if (st != JS_OK) {
        js_err_prefix(err, "checkpoint: ");
        return st;
    }
    js_err why;
    json_t *rec = NULL;
    uint64_t seq = 0;
    uint8_t leaf[JS_MERKLE_HASH_LEN];
    if (js_audit_checkpoint_verify_sig(cp, pub, &why) != JS_OK) {
        st = refuse(res, why.reason,
                    "the checkpoint's signature does not verify under this key: %s", why.msg);
        goto out;
    }
    /* The signature covers the §5.2 body, not these bytes: the checkpoint
     * must also be the canonical record (FORMAT.md §7 rule 4), as in the log. */
    if (js_audit_checkpoint_check_canonical(cp, (const uint8_t *)m.cptext, m.cplen, &why) !=
        JS_OK) {
        st = refuse(res, why.reason, "%s", why.msg);
        goto out;
    }
    if (cp->tree_size != m.size) {
        st = refuse(res, JS_R_AUDIT_PROOF,
                    "tree_size %" PRIu64 " is not the checkpoint's (%" PRIu64 ")", m.size,
                    cp->tree_size);
        goto out;
    }

    /* 2. The record: its leaf hash, bound to its position (leaf = seq - 1). */
    rec = json_loadb(m.payload, m.plen, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(rec)) {
        st = refuse(res, JS_R_AUDIT_PAYLOAD, "the payload is not a JSON object");
        goto out;
    }
    if (!record_seq(rec, &seq) || seq != m.index + 1) {
        st = refuse(res, JS_R_AUDIT_PROOF,
                    "the payload's seq does not match leaf_index %" PRIu64 " + 1", m.index);
        goto out;
    }
    js_merkle_leaf_hash((const uint8_t *)m.payload, m.plen, leaf);

    /* The convenience copies in the proof ("seq", "leaf_hash", "root") are
     * not trusted, but a proof whose copies disagree with what they copy is
     * refused rather than shown to a reader who may believe them. */
    const json_t *seq_copy = json_object_get(proof, JS_AUDIT_F_SEQ);
    if (!copy_matches(proof, "leaf_hash", leaf) || !copy_matches(proof, "root", cp->root) ||
        (seq_copy != NULL &&
         (!json_is_integer(seq_copy) || json_integer_value(seq_copy) != (json_int_t)seq))) {
        st = refuse(res, JS_R_AUDIT_PROOF,
                    "its seq, leaf_hash or root member disagrees with the payload or the signed "
                    "checkpoint");
        goto out;
    }

    /* 3. The audit path to the signed root (RFC 9162 §2.1.3.2). */
    if (js_merkle_verify_inclusion(leaf, m.index, m.size, m.path, m.npath, cp->root, &why) !=
        JS_OK) {
        st = refuse(res, why.reason, "%s", why.msg);
        goto out;
    }
    res->valid = true;
    res->seq = seq;
    res->record = rec;
    rec = NULL;
    st = JS_OK;
out:
    json_decref(rec);
    return st;
}

void js_audit_proof_result_cleanup(js_audit_proof_result *res)
{
    if (res == NULL)
        return;
    json_decref(res->record);
    res->record = NULL;
}
