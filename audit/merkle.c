/*
 * merkle.c - RFC 6962 / RFC 9162 Merkle tree hashing: leaf and node hashes,
 * the writer's incremental frontier, roots, inclusion and consistency proofs
 * over an array of leaf hashes, and the RFC 9162 verification algorithms.
 * Pure computation over caller buffers: no allocation, no I/O. Recursion
 * depth is bounded by the tree height (at most 64).
 */
#include "merkle.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define HLEN JS_MERKLE_HASH_LEN

static void sha256_parts(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                         const uint8_t *c, size_t clen, uint8_t out[HLEN])
{
    /* SHA256_* is deprecated in OpenSSL 3; EVP_Digest* cannot fail for
     * SHA-256 short of memory exhaustion, in which case out is zeroed, which
     * can never match a real root. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int olen = 0;
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        (alen > 0 && EVP_DigestUpdate(ctx, a, alen) != 1) ||
        (blen > 0 && EVP_DigestUpdate(ctx, b, blen) != 1) ||
        (clen > 0 && EVP_DigestUpdate(ctx, c, clen) != 1) ||
        EVP_DigestFinal_ex(ctx, out, &olen) != 1 || olen != HLEN)
        memset(out, 0, HLEN);
    EVP_MD_CTX_free(ctx);
}

void js_merkle_leaf_hash(const uint8_t *entry, size_t len, uint8_t out[HLEN])
{
    /* RFC 6962 §2.1: MTH({d(0)}) = SHA-256(0x00 || d(0)). */
    static const uint8_t prefix = 0x00;
    sha256_parts(&prefix, 1, entry, entry != NULL ? len : 0, NULL, 0, out);
}

void js_merkle_node_hash(const uint8_t left[HLEN], const uint8_t right[HLEN], uint8_t out[HLEN])
{
    /* RFC 6962 §2.1: SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])). Inputs
     * may alias out: the digest is finalised after all inputs are read. */
    static const uint8_t prefix = 0x01;
    uint8_t l[HLEN], r[HLEN];
    memcpy(l, left, HLEN);
    memcpy(r, right, HLEN);
    sha256_parts(&prefix, 1, l, HLEN, r, HLEN, out);
}

void js_merkle_empty_root(uint8_t out[HLEN])
{
    /* RFC 6962 §2.1: the hash of an empty list is the hash of an empty string. */
    sha256_parts(NULL, 0, NULL, 0, NULL, 0, out);
}

/* ---- frontier ----------------------------------------------------------- */

void js_merkle_frontier_init(js_merkle_frontier *f)
{
    memset(f, 0, sizeof *f);
}

void js_merkle_frontier_append(js_merkle_frontier *f, const uint8_t leaf_hash[HLEN])
{
    if (f->size == UINT64_MAX)
        return;
    uint8_t h[HLEN];
    memcpy(h, leaf_hash, HLEN);
    /* Binary-counter carry: every set low bit is a complete left sibling
     * subtree of the same height, which merges with the new one. */
    unsigned k = 0;
    while (k < JS_MERKLE_MAX_DEPTH && ((f->size >> k) & 1u) != 0) {
        js_merkle_node_hash(f->nodes[k], h, h);
        k++;
    }
    memcpy(f->nodes[k], h, HLEN);
    f->size++;
}

void js_merkle_frontier_root(const js_merkle_frontier *f, uint8_t out[HLEN])
{
    if (f->size == 0) {
        js_merkle_empty_root(out);
        return;
    }
    /* RFC 6962 §2.1 splits at the largest power of two < n, so the tree is
     * the set-bit subtrees from largest (left) to smallest (right), joined
     * right-to-left: fold from the lowest set bit upwards. */
    uint8_t acc[HLEN];
    int have = 0;
    for (unsigned k = 0; k < JS_MERKLE_MAX_DEPTH; k++) {
        if (((f->size >> k) & 1u) == 0)
            continue;
        if (!have) {
            memcpy(acc, f->nodes[k], HLEN);
            have = 1;
        } else {
            js_merkle_node_hash(f->nodes[k], acc, acc);
        }
    }
    memcpy(out, acc, HLEN);
}

/* ---- full trees --------------------------------------------------------- */

/* The largest power of two strictly less than n (n >= 2), RFC 6962 §2.1 "k". */
static uint64_t split_point(uint64_t n)
{
    uint64_t k = 1;
    while ((k << 1) < n)
        k <<= 1;
    return k;
}

/* MTH(D[0:n]) for n >= 1. */
static void mth(const uint8_t *leaves, uint64_t n, uint8_t out[HLEN])
{
    if (n == 1) {
        memcpy(out, leaves, HLEN);
        return;
    }
    uint64_t k = split_point(n);
    uint8_t l[HLEN], r[HLEN];
    mth(leaves, k, l);
    mth(leaves + k * HLEN, n - k, r);
    js_merkle_node_hash(l, r, out);
}

void js_merkle_root(const uint8_t *leaves, size_t n, uint8_t out[HLEN])
{
    if (n == 0) {
        js_merkle_empty_root(out);
        return;
    }
    mth(leaves, n, out);
}

/* Appends one hash to a caller proof buffer, bounded by cap. */
static js_status push(uint8_t *buf, size_t cap, size_t *len, const uint8_t h[HLEN], js_err *err)
{
    JS_ENSURE(*len < cap, err, JS_ELIMIT, JS_R_MERKLE_PATH_CAP,
              "proof needs more than %zu hashes of output space", cap);
    memcpy(buf + *len * HLEN, h, HLEN);
    (*len)++;
    return JS_OK;
}

/* RFC 6962 §2.1.1 PATH(m, D[n]): the deeper part first, then the sibling at
 * this level, so the path runs from the leaf upwards. */
static js_status path_rec(const uint8_t *leaves, uint64_t n, uint64_t m, uint8_t *path, size_t cap,
                          size_t *len, js_err *err)
{
    if (n <= 1)
        return JS_OK;
    uint64_t k = split_point(n);
    uint8_t sib[HLEN];
    if (m < k) {
        JS_GUARD(path_rec(leaves, k, m, path, cap, len, err));
        mth(leaves + k * HLEN, n - k, sib);
    } else {
        JS_GUARD(path_rec(leaves + k * HLEN, n - k, m - k, path, cap, len, err));
        mth(leaves, k, sib);
    }
    return push(path, cap, len, sib, err);
}

js_status js_merkle_inclusion_proof(const uint8_t *leaves, size_t n, uint64_t index, uint8_t *path,
                                    size_t path_cap, size_t *path_len, js_err *err)
{
    *path_len = 0;
    JS_ENSURE(index < n, err, JS_EINVAL, JS_R_MERKLE_BAD_INDEX,
              "leaf index %llu is not in a tree of %zu leaves", (unsigned long long)index, n);
    return path_rec(leaves, n, index, path, path_cap, path_len, err);
}

js_status js_merkle_verify_inclusion(const uint8_t leaf_hash[HLEN], uint64_t index,
                                     uint64_t tree_size, const uint8_t *path, size_t path_len,
                                     const uint8_t root[HLEN], js_err *err)
{
    /* RFC 9162 §2.1.3.2, step by step. */
    JS_ENSURE(index < tree_size, err, JS_EINVAL, JS_R_MERKLE_BAD_INDEX,
              "leaf index %llu is not in a tree of %llu leaves", (unsigned long long)index,
              (unsigned long long)tree_size);
    JS_ENSURE(path_len <= JS_MERKLE_MAX_DEPTH, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
              "audit path of %zu hashes is longer than any tree", path_len);
    uint64_t fn = index, sn = tree_size - 1;
    uint8_t r[HLEN];
    memcpy(r, leaf_hash, HLEN);
    for (size_t i = 0; i < path_len; i++) {
        const uint8_t *p = path + i * HLEN;
        JS_ENSURE(sn != 0, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
                  "audit path is longer than the tree of %llu leaves needs",
                  (unsigned long long)tree_size);
        if ((fn & 1u) != 0 || fn == sn) {
            js_merkle_node_hash(p, r, r);
            if ((fn & 1u) == 0) {
                while ((fn & 1u) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            js_merkle_node_hash(r, p, r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    JS_ENSURE(sn == 0, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
              "audit path is shorter than the tree of %llu leaves needs",
              (unsigned long long)tree_size);
    JS_ENSURE(CRYPTO_memcmp(r, root, HLEN) == 0, err, JS_EINVAL, JS_R_MERKLE_ROOT_MISMATCH,
              "audit path does not lead to the expected root (RFC 9162 §2.1.3.2)");
    return JS_OK;
}

/* RFC 6962 §2.1.2 SUBPROOF(m, D[n], b). */
static js_status subproof(const uint8_t *leaves, uint64_t n, uint64_t m, int whole, uint8_t *proof,
                          size_t cap, size_t *len, js_err *err)
{
    uint8_t h[HLEN];
    if (m == n) {
        if (whole)
            return JS_OK;
        mth(leaves, n, h);
        return push(proof, cap, len, h, err);
    }
    uint64_t k = split_point(n);
    if (m <= k) {
        JS_GUARD(subproof(leaves, k, m, whole, proof, cap, len, err));
        mth(leaves + k * HLEN, n - k, h);
    } else {
        JS_GUARD(subproof(leaves + k * HLEN, n - k, m - k, 0, proof, cap, len, err));
        mth(leaves, k, h);
    }
    return push(proof, cap, len, h, err);
}

js_status js_merkle_consistency_proof(const uint8_t *leaves, size_t n, uint64_t m, uint8_t *proof,
                                      size_t proof_cap, size_t *proof_len, js_err *err)
{
    *proof_len = 0;
    JS_ENSURE(m > 0 && m <= n, err, JS_EINVAL, JS_R_MERKLE_BAD_SIZE,
              "consistency proof needs 0 < m <= n (m=%llu, n=%zu)", (unsigned long long)m, n);
    return subproof(leaves, n, m, 1, proof, proof_cap, proof_len, err);
}

js_status js_merkle_verify_consistency(uint64_t size1, uint64_t size2, const uint8_t root1[HLEN],
                                       const uint8_t root2[HLEN], const uint8_t *proof,
                                       size_t proof_len, js_err *err)
{
    JS_ENSURE(size1 <= size2, err, JS_EINVAL, JS_R_MERKLE_BAD_SIZE,
              "tree of %llu leaves cannot extend one of %llu", (unsigned long long)size2,
              (unsigned long long)size1);
    if (size1 == size2) {
        JS_ENSURE(proof_len == 0, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
                  "consistency proof between equal sizes must be empty");
        JS_ENSURE(CRYPTO_memcmp(root1, root2, HLEN) == 0, err, JS_EINVAL, JS_R_MERKLE_ROOT_MISMATCH,
                  "two trees of %llu leaves have different roots", (unsigned long long)size1);
        return JS_OK;
    }
    if (size1 == 0) {
        /* Every tree extends the empty tree; nothing to prove. */
        JS_ENSURE(proof_len == 0, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
                  "consistency proof from the empty tree must be empty");
        return JS_OK;
    }
    /* RFC 9162 §2.1.4.2, step by step. Step 1: an empty path fails. */
    JS_ENSURE(proof_len > 0 && proof_len <= 2 * JS_MERKLE_MAX_DEPTH, err, JS_EINVAL,
              JS_R_MERKLE_BAD_PATH_LEN, "consistency proof of %zu hashes is impossible", proof_len);
    /* Step 2: if size1 is a power of two, first_hash is prepended. */
    int prepend = (size1 & (size1 - 1)) == 0;
    size_t total = proof_len + (prepend ? 1u : 0u);
    uint64_t fn = size1 - 1, sn = size2 - 1;
    while ((fn & 1u) != 0) {
        fn >>= 1;
        sn >>= 1;
    }
    uint8_t fr[HLEN], sr[HLEN];
    memcpy(fr, prepend ? root1 : proof, HLEN);
    memcpy(sr, fr, HLEN);
    for (size_t i = 1; i < total; i++) {
        const uint8_t *c = proof + (prepend ? i - 1 : i) * HLEN;
        JS_ENSURE(sn != 0, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
                  "consistency proof is longer than needed");
        if ((fn & 1u) != 0 || fn == sn) {
            js_merkle_node_hash(c, fr, fr);
            js_merkle_node_hash(c, sr, sr);
            while ((fn & 1u) == 0 && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            js_merkle_node_hash(sr, c, sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    JS_ENSURE(sn == 0, err, JS_EINVAL, JS_R_MERKLE_BAD_PATH_LEN,
              "consistency proof is shorter than needed");
    JS_ENSURE(CRYPTO_memcmp(fr, root1, HLEN) == 0 && CRYPTO_memcmp(sr, root2, HLEN) == 0, err,
              JS_EINVAL, JS_R_MERKLE_ROOT_MISMATCH,
              "consistency proof does not lead to both roots (RFC 9162 §2.1.4.2)");
    return JS_OK;
}
