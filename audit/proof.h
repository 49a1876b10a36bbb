/*
 * proof.h - inclusion proofs of one audit record against a signed
 * checkpoint (jwt-audit prove, check-proof): build one for the record of a
 * token (found by jti) from the records of a log, and check one without the
 * log, with only the audit public key. Nothing here reads a file or prints.
 *
 * A proof is a JSON object (JS_AUDIT_PROOF_FORMAT): the record's exact
 * payload bytes as the string "payload", its "leaf_index" (seq - 1), the
 * "tree_size" of the checkpoint, the RFC 9162 §2.1.3 "audit_path" (hex,
 * from the leaf's sibling up), and the whole signed checkpoint record as the
 * string "checkpoint" (FORMAT.md §5). Its "seq", "leaf_hash" and "root"
 * members are convenience copies for a reader: never trusted, but a proof
 * whose copies disagree with what they copy does not verify.
 */
#ifndef JS_AUDIT_PROOF_H
#define JS_AUDIT_PROOF_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "checkpoint.h"
#include "err.h"
#include "merkle.h"
#include "reader.h"

#define JS_AUDIT_PROOF_FORMAT "jwt-audit-inclusion-proof/v1"

/* Bounds for untrusted proofs and for the log a proof is built from. */
#define JS_AUDIT_PROOF_PATH_MAX    JS_MERKLE_MAX_DEPTH /* RFC 9162 §2.1.3: at most tree height */
#define JS_AUDIT_PROVE_MAX_RECORDS (256ull * 1024 * 1024) /* 8 GiB of leaf hashes */

/* ---- building a proof (jwt-audit prove) ---------------------------------- */

typedef struct js_audit_prover js_audit_prover;

/* A prover for the first record whose "jti" member is jti (copied, not
 * empty); free with js_audit_prover_free. */
js_status js_audit_prover_new(const char *jti, js_audit_prover **out, js_err *err) JS_WUR;

/*
 * Feeds the next record of the log. The Merkle leaves are the records in
 * seq order from seq 1 (FORMAT.md §5), so rec must be record number
 * (records fed so far + 1). Keeps every leaf hash, the first record with
 * the jti and the latest checkpoint. Errors:
 *   JS_EINVAL "audit.seq"        rec->seq is not the one expected (a gap:
 *                                the message says where; run verify)
 *   JS_EINVAL "audit.checkpoint" a checkpoint record that does not parse
 *   JS_ELIMIT "audit.proof"      more than JS_AUDIT_PROVE_MAX_RECORDS
 *   JS_EINTERNAL "internal.oom"
 * After an error the prover keeps what it had: js_audit_prover_build can
 * still prove from the records before (a torn tail after the latest
 * checkpoint does not affect what it covers).
 */
js_status js_audit_prover_add(js_audit_prover *p, const js_audit_record *rec, js_err *err) JS_WUR;

/* How many records fed so far had the jti. */
uint64_t js_audit_prover_matches(const js_audit_prover *p);

/* The seq of the record that will be proven (the first with the jti); 0
 * when none has been kept. */
uint64_t js_audit_prover_seq(const js_audit_prover *p);

/*
 * The proof of the kept record against the latest checkpoint fed, as a new
 * JSON object (the caller decrefs it). The log's records must hash to the
 * checkpoint's root (RFC 6962 §2.1), and the proof is verified before it is
 * returned. Errors:
 *   JS_ENOTFOUND "audit.proof"    no record with the jti
 *   JS_ESTATE "audit.proof"       no checkpoint, or the record is after the
 *                                 latest one (not yet covered by a signature)
 *   JS_EINVAL "audit.checkpoint"  the checkpoint claims more records than precede it
 *   JS_EINVAL "audit.root"        the records do not hash to its root
 *   JS_EINTERNAL                  the proof cannot be built or encoded
 */
js_status js_audit_prover_build(const js_audit_prover *p, json_t **proof, js_err *err) JS_WUR;

void js_audit_prover_free(js_audit_prover *p);

/* ---- checking a proof (jwt-audit check-proof) ---------------------------- */

/* The outcome of a check that ran. Caller storage: js_audit_proof_check
 * fills it, js_audit_proof_result_cleanup releases it. */
typedef struct js_audit_proof_result {
    bool valid; /* the verdict: the record is in the log the checkpoint signs */
    /* When !valid: why (e.g. JS_R_AUDIT_BAD_SIGNATURE, JS_R_MERKLE_ROOT_MISMATCH). */
    js_reason reason;
    char message[JS_MSG_MAX];
    /* When valid: */
    uint64_t seq;                   /* the record's seq */
    json_t *record;                 /* its payload, parsed (owned by the result) */
    js_audit_checkpoint checkpoint; /* the signed checkpoint it is proven against */
} js_audit_proof_result;

/*
 * Checks proof under the audit public key pub, in this order: the
 * checkpoint's ES256 signature (FORMAT.md §5.2) and that it is the
 * canonical record (FORMAT.md §7 rule 4); the tree size; the record's leaf
 * hash (RFC 6962 §2.1) bound to its position (seq == leaf_index + 1); the
 * convenience copies; the audit path up to the signed root (RFC 9162
 * §2.1.3.2). Returns JS_OK when the check ran (res->valid is the verdict);
 * JS_EINVAL when proof is not a well-formed proof: "audit.proof" naming the
 * member (format, payload, checkpoint, leaf_index, tree_size, audit_path,
 * all size-bounded), or "audit.checkpoint" when the checkpoint does not
 * parse (the message starts with "checkpoint: ").
 */
js_status js_audit_proof_check(const json_t *proof, EVP_PKEY *pub, js_audit_proof_result *res,
                               js_err *err) JS_WUR;

/* Releases what res holds (the record); res may be NULL. */
void js_audit_proof_result_cleanup(js_audit_proof_result *res);

#endif
