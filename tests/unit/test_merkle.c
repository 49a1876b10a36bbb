/*
 * test_merkle.c - RFC 6962 / RFC 9162 Merkle trees: known answers from the
 * Certificate Transparency reference implementation, the writer's frontier
 * against the full-tree root, and inclusion and consistency proofs that
 * verify when right and fail for every kind of wrong input.
 *
 * Known answers: transparency-dev/merkle (the Go successor of the CT C++
 * reference, google/certificate-transparency merkle_tree_test.cc):
 * testonly/constants.go (LeafInputs, NodeHashes, RootHashes) and
 * proof/verify_test.go (inclusionProofs, consistencyProofs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "merkle.h"

#define H JS_MERKLE_HASH_LEN

/* testonly/constants.go LeafInputs(). */
static const struct {
    const char *data;
    size_t len;
} k_leaves[8] = {
    {"", 0},
    {"\x00", 1},
    {"\x10", 1},
    {"\x20\x21", 2},
    {"\x30\x31", 2},
    {"\x40\x41\x42\x43", 4},
    {"\x50\x51\x52\x53\x54\x55\x56\x57", 8},
    {"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f", 16},
};

/* testonly/constants.go RootHashes(): root of the first n leaves, n = 0..8. */
static const char *const k_roots[9] = {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

/* testonly/constants.go NodeHashes()[0]: the leaf hashes. */
static const char *const k_leaf_hashes[8] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
};

/* proof/verify_test.go inclusionProofs (leaf there is 1-based; index here). */
static const struct {
    uint64_t index, size;
    size_t n;
    const char *path[3];
} k_inclusion[] = {
    {0, 1, 0, {NULL, NULL, NULL}},
    {0,
     8,
     3,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {5,
     8,
     3,
     {"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2, 3, 1, {"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125", NULL, NULL}},
    {1,
     5,
     3,
     {"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"}},
};

/* proof/verify_test.go consistencyProofs. */
static const struct {
    uint64_t size1, size2;
    size_t n;
    const char *proof[3];
} k_consistency[] = {
    {1, 1, 0, {NULL, NULL, NULL}},
    {1,
     8,
     3,
     {"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
      "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"}},
    {6,
     8,
     3,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
    {2,
     5,
     2,
     {"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
      "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b", NULL}},
    {6,
     7,
     3,
     {"0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
      "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"}},
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void unhex(const char *hex, uint8_t out[H])
{
    assert_int_equal(strlen(hex), 2 * H);
    for (size_t i = 0; i < H; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        assert_true(hi >= 0 && lo >= 0);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
}

static void assert_hash_hex(const uint8_t got[H], const char *want_hex)
{
    uint8_t want[H];
    unhex(want_hex, want);
    assert_memory_equal(got, want, H);
}

/* The 8 reference leaf hashes, flat. */
static void ref_leaf_hashes(uint8_t out[8 * H])
{
    for (size_t i = 0; i < 8; i++)
        js_merkle_leaf_hash((const uint8_t *)k_leaves[i].data, k_leaves[i].len, out + i * H);
}

/* n synthetic leaf hashes (entries "i:<i>"), malloc'd. */
static uint8_t *synthetic_leaves(size_t n)
{
    uint8_t *leaves = malloc(n > 0 ? n * H : 1);
    assert_non_null(leaves);
    for (size_t i = 0; i < n; i++) {
        uint8_t entry[16];
        uint64_t v = i * 2654435761u;
        memcpy(entry, &v, sizeof v);
        memcpy(entry + 8, &i, sizeof i < 8 ? sizeof i : 8);
        js_merkle_leaf_hash(entry, 1 + i % 16, leaves + i * H);
    }
    return leaves;
}

/* ---- known answers ------------------------------------------------------ */

static void test_empty_root(void **state)
{
    (void)state;
    uint8_t out[H];
    js_merkle_empty_root(out);
    assert_hash_hex(out, k_roots[0]);
    js_merkle_root(NULL, 0, out);
    assert_hash_hex(out, k_roots[0]);
    js_merkle_frontier f;
    js_merkle_frontier_init(&f);
    js_merkle_frontier_root(&f, out);
    assert_hash_hex(out, k_roots[0]);
}

static void test_leaf_hashes(void **state)
{
    (void)state;
    uint8_t leaves[8 * H];
    ref_leaf_hashes(leaves);
    for (size_t i = 0; i < 8; i++)
        assert_hash_hex(leaves + i * H, k_leaf_hashes[i]);
}

static void test_node_hash(void **state)
{
    (void)state;
    uint8_t leaves[8 * H], out[H];
    ref_leaf_hashes(leaves);
    /* NodeHashes()[1][0] = node(leaf0, leaf1) = root of size 2. */
    js_merkle_node_hash(leaves, leaves + H, out);
    assert_hash_hex(out, k_roots[2]);
    /* Aliasing the output with an input is allowed. */
    memcpy(out, leaves, H);
    js_merkle_node_hash(out, leaves + H, out);
    assert_hash_hex(out, k_roots[2]);
}

static void test_reference_roots(void **state)
{
    (void)state;
    uint8_t leaves[8 * H], out[H];
    ref_leaf_hashes(leaves);
    js_merkle_frontier f;
    js_merkle_frontier_init(&f);
    for (size_t n = 1; n <= 8; n++) {
        js_merkle_root(leaves, n, out);
        assert_hash_hex(out, k_roots[n]);
        js_merkle_frontier_append(&f, leaves + (n - 1) * H);
        assert_int_equal(f.size, n);
        js_merkle_frontier_root(&f, out);
        assert_hash_hex(out, k_roots[n]);
    }
}

static void test_frontier_matches_full_root(void **state)
{
    (void)state;
    const size_t max = 300;
    uint8_t *leaves = synthetic_leaves(max);
    js_merkle_frontier f;
    js_merkle_frontier_init(&f);
    for (size_t n = 0; n <= max; n++) {
        uint8_t a[H], b[H];
        if (n > 0)
            js_merkle_frontier_append(&f, leaves + (n - 1) * H);
        js_merkle_frontier_root(&f, a);
        js_merkle_root(leaves, n, b);
        assert_memory_equal(a, b, H);
    }
    free(leaves);
}

static void test_reference_inclusion(void **state)
{
    (void)state;
    uint8_t leaves[8 * H];
    ref_leaf_hashes(leaves);
    for (size_t t = 0; t < sizeof k_inclusion / sizeof k_inclusion[0]; t++) {
        uint8_t path[JS_MERKLE_MAX_DEPTH * H], root[H];
        size_t len = 99;
        js_err err;
        assert_int_equal(js_merkle_inclusion_proof(leaves, k_inclusion[t].size,
                                                   k_inclusion[t].index, path, JS_MERKLE_MAX_DEPTH,
                                                   &len, &err),
                         JS_OK);
        assert_int_equal(len, k_inclusion[t].n);
        for (size_t i = 0; i < len; i++)
            assert_hash_hex(path + i * H, k_inclusion[t].path[i]);
        unhex(k_roots[k_inclusion[t].size], root);
        assert_int_equal(js_merkle_verify_inclusion(leaves + k_inclusion[t].index * H,
                                                    k_inclusion[t].index, k_inclusion[t].size, path,
                                                    len, root, &err),
                         JS_OK);
    }
}

static void test_reference_consistency(void **state)
{
    (void)state;
    uint8_t leaves[8 * H];
    ref_leaf_hashes(leaves);
    for (size_t t = 0; t < sizeof k_consistency / sizeof k_consistency[0]; t++) {
        uint8_t proof[2 * JS_MERKLE_MAX_DEPTH * H], r1[H], r2[H];
        size_t len = 99;
        js_err err;
        assert_int_equal(js_merkle_consistency_proof(leaves, k_consistency[t].size2,
                                                     k_consistency[t].size1, proof,
                                                     2 * JS_MERKLE_MAX_DEPTH, &len, &err),
                         JS_OK);
        assert_int_equal(len, k_consistency[t].n);
        for (size_t i = 0; i < len; i++)
            assert_hash_hex(proof + i * H, k_consistency[t].proof[i]);
        unhex(k_roots[k_consistency[t].size1], r1);
        unhex(k_roots[k_consistency[t].size2], r2);
        assert_int_equal(js_merkle_verify_consistency(k_consistency[t].size1,
                                                      k_consistency[t].size2, r1, r2, proof, len,
                                                      &err),
                         JS_OK);
    }
}

/* ---- every proof, and every way of getting it wrong ---------------------- */

static void test_all_inclusion_proofs(void **state)
{
    (void)state;
    const size_t max = 64;
    uint8_t *leaves = synthetic_leaves(max);
    uint8_t bogus[H];
    memset(bogus, 0xab, H);
    for (size_t n = 1; n <= max; n++) {
        uint8_t root[H];
        js_merkle_root(leaves, n, root);
        for (uint64_t i = 0; i < n; i++) {
            uint8_t path[(JS_MERKLE_MAX_DEPTH + 1) * H];
            size_t len = 0;
            js_err err;
            const uint8_t *leaf = leaves + i * H;
            assert_int_equal(
                js_merkle_inclusion_proof(leaves, n, i, path, JS_MERKLE_MAX_DEPTH, &len, &err),
                JS_OK);
            assert_int_equal(js_merkle_verify_inclusion(leaf, i, n, path, len, root, &err), JS_OK);

            /* Wrong index (every other one), wrong size. */
            for (uint64_t j = 0; j < n; j++)
                if (j != i && memcmp(leaves + j * H, leaf, H) != 0)
                    assert_int_not_equal(
                        js_merkle_verify_inclusion(leaf, j, n, path, len, root, &err), JS_OK);
            assert_int_not_equal(js_merkle_verify_inclusion(leaf, n, n, path, len, root, &err),
                                 JS_OK);
            assert_int_not_equal(js_merkle_verify_inclusion(leaf, i, 2 * n, path, len, root, &err),
                                 JS_OK);
            if (n > 1 && i < n / 2)
                assert_int_not_equal(
                    js_merkle_verify_inclusion(leaf, i, n / 2, path, len, root, &err), JS_OK);
            /* Wrong leaf, wrong root. */
            assert_int_not_equal(js_merkle_verify_inclusion(bogus, i, n, path, len, root, &err),
                                 JS_OK);
            assert_int_not_equal(js_merkle_verify_inclusion(leaf, i, n, path, len, bogus, &err),
                                 JS_OK);
            /* Every path element, one bit flipped. */
            for (size_t k = 0; k < len; k++) {
                path[k * H + 5] ^= 0x08;
                assert_int_not_equal(js_merkle_verify_inclusion(leaf, i, n, path, len, root, &err),
                                     JS_OK);
                assert_string_equal(js_reason_name(err.reason), "merkle.root_mismatch");
                path[k * H + 5] ^= 0x08;
            }
            /* Truncated, extended. */
            if (len > 0)
                assert_int_not_equal(
                    js_merkle_verify_inclusion(leaf, i, n, path, len - 1, root, &err), JS_OK);
            memcpy(path + len * H, root, H);
            assert_int_not_equal(js_merkle_verify_inclusion(leaf, i, n, path, len + 1, root, &err),
                                 JS_OK);
        }
    }
    free(leaves);
}

static void test_all_consistency_proofs(void **state)
{
    (void)state;
    const size_t max = 40;
    uint8_t *leaves = synthetic_leaves(max);
    uint8_t bogus[H];
    memset(bogus, 0xcd, H);
    for (size_t n = 1; n <= max; n++) {
        uint8_t r2[H];
        js_merkle_root(leaves, n, r2);
        for (uint64_t m = 1; m <= n; m++) {
            uint8_t proof[(2 * JS_MERKLE_MAX_DEPTH + 1) * H], r1[H];
            size_t len = 0;
            js_err err;
            js_merkle_root(leaves, m, r1);
            assert_int_equal(js_merkle_consistency_proof(leaves, n, m, proof,
                                                         2 * JS_MERKLE_MAX_DEPTH, &len, &err),
                             JS_OK);
            assert_int_equal(js_merkle_verify_consistency(m, n, r1, r2, proof, len, &err), JS_OK);
            if (m == n)
                continue;
            assert_int_not_equal(js_merkle_verify_consistency(m, n, bogus, r2, proof, len, &err),
                                 JS_OK);
            assert_int_not_equal(js_merkle_verify_consistency(m, n, r1, bogus, proof, len, &err),
                                 JS_OK);
            assert_int_not_equal(js_merkle_verify_consistency(n, m, r2, r1, proof, len, &err),
                                 JS_OK);
            assert_int_not_equal(js_merkle_verify_consistency(m, n, r1, r2, proof, 0, &err), JS_OK);
            for (size_t k = 0; k < len; k++) {
                proof[k * H] ^= 0x10;
                assert_int_not_equal(js_merkle_verify_consistency(m, n, r1, r2, proof, len, &err),
                                     JS_OK);
                proof[k * H] ^= 0x10;
            }
            assert_int_not_equal(js_merkle_verify_consistency(m, n, r1, r2, proof, len - 1, &err),
                                 JS_OK);
            memcpy(proof + len * H, r1, H);
            assert_int_not_equal(js_merkle_verify_consistency(m, n, r1, r2, proof, len + 1, &err),
                                 JS_OK);
        }
    }
    free(leaves);
}

static void test_edge_cases(void **state)
{
    (void)state;
    uint8_t leaves[8 * H], path[JS_MERKLE_MAX_DEPTH * H], empty[H];
    size_t len = 0;
    js_err err;
    ref_leaf_hashes(leaves);
    js_merkle_empty_root(empty);

    /* Index out of range, and an empty tree, have no proofs. */
    assert_int_equal(js_merkle_inclusion_proof(leaves, 8, 8, path, JS_MERKLE_MAX_DEPTH, &len, &err),
                     JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "merkle.bad_index");
    assert_int_equal(js_merkle_inclusion_proof(leaves, 0, 0, path, JS_MERKLE_MAX_DEPTH, &len, &err),
                     JS_EINVAL);
    assert_int_equal(js_merkle_verify_inclusion(leaves, 0, 0, path, 0, empty, &err), JS_EINVAL);

    /* Too small an output buffer is refused, not overrun. */
    assert_int_equal(js_merkle_inclusion_proof(leaves, 8, 3, path, 2, &len, &err), JS_ELIMIT);
    assert_string_equal(js_reason_name(err.reason), "merkle.path_cap");

    /* A path longer than any tree is refused before it is read. */
    assert_int_equal(
        js_merkle_verify_inclusion(leaves, 0, 8, path, JS_MERKLE_MAX_DEPTH + 1, empty, &err),
        JS_EINVAL);

    /* Consistency: sizes that are always consistent, and time travel. */
    assert_int_equal(js_merkle_verify_consistency(0, 0, empty, empty, NULL, 0, &err), JS_OK);
    assert_int_equal(js_merkle_verify_consistency(0, 5, empty, leaves, NULL, 0, &err), JS_OK);
    assert_int_equal(js_merkle_verify_consistency(0, 5, empty, leaves, empty, 1, &err), JS_EINVAL);
    assert_int_equal(js_merkle_verify_consistency(1, 1, leaves, leaves + H, NULL, 0, &err),
                     JS_EINVAL);
    assert_int_equal(js_merkle_verify_consistency(2, 1, leaves, leaves, NULL, 0, &err), JS_EINVAL);
    assert_int_equal(js_merkle_verify_consistency(1, 2, leaves, leaves, NULL, 0, &err), JS_EINVAL);
    assert_int_equal(
        js_merkle_consistency_proof(leaves, 8, 0, path, JS_MERKLE_MAX_DEPTH, &len, &err),
        JS_EINVAL);
    assert_int_equal(
        js_merkle_consistency_proof(leaves, 8, 9, path, JS_MERKLE_MAX_DEPTH, &len, &err),
        JS_EINVAL);

    /* The frontier of a large tree: a carry through many levels. */
    js_merkle_frontier f;
    js_merkle_frontier_init(&f);
    for (size_t i = 0; i < 1024; i++)
        js_merkle_frontier_append(&f, leaves + (i % 8) * H);
    assert_int_equal(f.size, 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_root),
        cmocka_unit_test(test_leaf_hashes),
        cmocka_unit_test(test_node_hash),
        cmocka_unit_test(test_reference_roots),
        cmocka_unit_test(test_frontier_matches_full_root),
        cmocka_unit_test(test_reference_inclusion),
        cmocka_unit_test(test_reference_consistency),
        cmocka_unit_test(test_all_inclusion_proofs),
        cmocka_unit_test(test_all_consistency_proofs),
        cmocka_unit_test(test_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
