/*
 * merkle.h - RFC 6962 / RFC 9162 Merkle tree hashing for the audit log:
 * leaf and node hashes, an incremental frontier the writer appends record
 * hashes to (root at any time, O(log n) memory), and, over a full array of
 * leaf hashes, the root, inclusion proofs and their verification, and
 * consistency proofs and their verification.
 *
 * All hashes are SHA-256 (32 bytes). Arrays of hashes (leaves, paths,
 * proofs) are flat byte arrays of count * JS_MERKLE_HASH_LEN bytes. Leaf and node hashes are domain
 * separated by a 0x00 / 0x01 prefix (RFC 6962 §2.1, RFC 9162 §2.1.1) so a
 * leaf can never be passed off as an interior node (second-preimage attack).
 * Nothing here allocates, prints or exits; all buffers are caller-owned.
 */
#ifndef JS_MERKLE_H
#define JS_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define JS_MERKLE_HASH_LEN 32
/* A tree of at most 2^64 - 1 leaves has at most 64 levels, so no audit path
 * or consistency proof is longer than 64 hashes (RFC 9162 §2.1.3, §2.1.4). */
#define JS_MERKLE_MAX_DEPTH 64

/* MTH(D[i]) = SHA-256(0x00 || entry) (RFC 6962 §2.1). */
void js_merkle_leaf_hash(const uint8_t *entry, size_t len, uint8_t out[JS_MERKLE_HASH_LEN]);

/* SHA-256(0x01 || left || right) (RFC 6962 §2.1). */
void js_merkle_node_hash(const uint8_t left[JS_MERKLE_HASH_LEN],
                         const uint8_t right[JS_MERKLE_HASH_LEN], uint8_t out[JS_MERKLE_HASH_LEN]);

/* MTH({}) = SHA-256 of the empty string (RFC 6962 §2.1): e3b0c442...b855. */
void js_merkle_empty_root(uint8_t out[JS_MERKLE_HASH_LEN]);

/*
 * The incremental frontier ("compact range" of the whole tree): nodes[k]
 * holds the root of the complete subtree of 2^k leaves that is present when
 * bit k of size is set. Appending is a binary-counter carry; the root folds
 * the present subtrees right to left, which is exactly MTH of RFC 6962 §2.1
 * because that definition splits at the largest power of two < n.
 * Caller storage: _init, no cleanup needed.
 */
typedef struct js_merkle_frontier {
    uint64_t size;
    uint8_t nodes[JS_MERKLE_MAX_DEPTH][JS_MERKLE_HASH_LEN];
} js_merkle_frontier;

void js_merkle_frontier_init(js_merkle_frontier *f);

/* Appends one leaf hash (already js_merkle_leaf_hash()ed). O(log n).
 * A tree cannot hold more than 2^64 - 1 leaves; an append beyond that is
 * ignored (unreachable in practice: it is 2^64 records). */
void js_merkle_frontier_append(js_merkle_frontier *f, const uint8_t leaf_hash[JS_MERKLE_HASH_LEN]);

/* The root of the tree of f->size leaves (the empty root for size 0). */
void js_merkle_frontier_root(const js_merkle_frontier *f, uint8_t out[JS_MERKLE_HASH_LEN]);

/* MTH over n leaf hashes (RFC 6962 §2.1); the empty root for n == 0.
 * O(n) time, O(log n) stack. */
void js_merkle_root(const uint8_t *leaves, size_t n, uint8_t out[JS_MERKLE_HASH_LEN]);

/*
 * The audit path PATH(index, D[n]) (RFC 6962 §2.1.1, RFC 9162 §2.1.3.1),
 * ordered from the leaf's sibling up to the root's child, written to
 * path[0..*path_len). path_cap is the number of 32-byte slots in path;
 * JS_MERKLE_MAX_DEPTH is always enough. Errors: JS_EINVAL
 * "merkle.bad_index" (index >= n), JS_ELIMIT "merkle.path_cap".
 */
js_status js_merkle_inclusion_proof(const uint8_t *leaves, size_t n, uint64_t index, uint8_t *path,
                                    size_t path_cap, size_t *path_len, js_err *err) JS_WUR;

/*
 * Verifies an audit path with the algorithm of RFC 9162 §2.1.3.2: JS_OK when
 * leaf_hash at index in a tree of tree_size leaves hashes up to root;
 * otherwise JS_EINVAL with reason "merkle.bad_index" (index >= tree_size),
 * "merkle.bad_path_len" (path too long or too short) or "merkle.root_mismatch".
 * The root comparison is constant-time.
 */
js_status js_merkle_verify_inclusion(const uint8_t leaf_hash[JS_MERKLE_HASH_LEN], uint64_t index,
                                     uint64_t tree_size, const uint8_t *path, size_t path_len,
                                     const uint8_t root[JS_MERKLE_HASH_LEN], js_err *err) JS_WUR;

/*
 * The consistency proof PROOF(m, D[n]) (RFC 6962 §2.1.2, RFC 9162 §2.1.4.1)
 * between the first m leaves and all n leaves, 0 < m <= n (empty for m == n).
 * Errors: JS_EINVAL "merkle.bad_size", JS_ELIMIT "merkle.path_cap".
 */
js_status js_merkle_consistency_proof(const uint8_t *leaves, size_t n, uint64_t m, uint8_t *proof,
                                      size_t proof_cap, size_t *proof_len, js_err *err) JS_WUR;

/*
 * Verifies a consistency proof with the algorithm of RFC 9162 §2.1.4.2: JS_OK
 * when the tree of size2 with root2 extends the tree of size1 with root1.
 * Errors (JS_EINVAL): "merkle.bad_size" (size1 > size2 or size1 == 0 with a
 * non-empty proof), "merkle.bad_path_len", "merkle.root_mismatch".
 */
js_status js_merkle_verify_consistency(uint64_t size1, uint64_t size2,
                                       const uint8_t root1[JS_MERKLE_HASH_LEN],
                                       const uint8_t root2[JS_MERKLE_HASH_LEN],
                                       const uint8_t *proof, size_t proof_len, js_err *err) JS_WUR;

#endif
