/*
 * test_yamldoc.c - unit tests for the bounded YAML tree (lib/base/yamldoc.h):
 * node types and lines, every structural rejection (aliases, anchors, tags,
 * duplicate and non-scalar keys, depth, size, node count, several documents),
 * and the strict typed readers, mostly as tables of inputs and expected reasons.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "yamldoc.h"

static const js_yaml_opts k_opts = {.domain = "yaml", .status = JS_ECONFIG};

static js_yaml_doc *load_ok(const char *text)
{
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    js_status st = js_yaml_load_buffer("t.yaml", text, strlen(text), &k_opts, &doc, &err);
    if (st != JS_OK)
        fail_msg("unexpected error: %s (%s)", err.msg, js_reason_name(err.reason));
    assert_non_null(doc);
    return doc;
}

/* Loads text expecting failure with reason and a message starting "t.yaml:LINE: ". */
static void load_fails(const char *text, size_t len, const js_yaml_opts *opts, const char *reason,
                       size_t line)
{
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    js_status st = js_yaml_load_buffer("t.yaml", text, len, opts, &doc, &err);
    if (st == JS_OK)
        fail_msg("expected %s, but it loaded: %.60s", reason, text);
    assert_null(doc);
    assert_int_equal(st, opts ? opts->status : JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), reason);
    char prefix[64];
    if (line > 0)
        snprintf(prefix, sizeof(prefix), "t.yaml:%zu: ", line);
    else
        snprintf(prefix, sizeof(prefix), "t.yaml: ");
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
        fail_msg("message '%s' does not start with '%s'", err.msg, prefix);
}

/* ---- tree shape and lines ---------------------------------------------------------- */

static void test_node_types_and_lines(void **state)
{
    (void)state;
    js_yaml_doc *doc = load_ok("# comment\n"
                               "name: plain\n"
                               "quoted: \"a b\"\n"
                               "single: 'x'\n"
                               "list:\n"
                               "  - one\n"
                               "  - [2, 3]\n"
                               "map:\n"
                               "  inner: {k: v}\n"
                               "empty:\n"
                               "tilde: ~\n"
                               "block: |\n"
                               "  text\n");
    assert_string_equal(js_yaml_doc_name(doc), "t.yaml");
    const js_yaml_node *root = js_yaml_doc_root(doc);
    assert_int_equal(js_yaml_node_type(root), JS_YAML_MAPPING);
    assert_int_equal(js_yaml_node_line(root), 2);
    assert_int_equal(js_yaml_map_len(root), 8);

    assert_string_equal(js_yaml_map_key_str(root, 0), "name");
    assert_int_equal(js_yaml_map_key_line(root, 0), 2);
    const js_yaml_node *name = js_yaml_map_value(root, 0);
    assert_int_equal(js_yaml_node_type(name), JS_YAML_SCALAR);
    assert_string_equal(js_yaml_scalar_str(name), "plain");
    assert_int_equal(js_yaml_scalar_len(name), 5);
    assert_true(js_yaml_scalar_is_plain(name));
    assert_false(js_yaml_scalar_is_null(name));

    const js_yaml_node *quoted = js_yaml_map_get(root, "quoted");
    assert_string_equal(js_yaml_scalar_str(quoted), "a b");
    assert_false(js_yaml_scalar_is_plain(quoted));
    assert_int_equal(js_yaml_node_line(quoted), 3);
    assert_false(js_yaml_scalar_is_plain(js_yaml_map_get(root, "single")));

    const js_yaml_node *list = js_yaml_map_get(root, "list");
    assert_int_equal(js_yaml_node_type(list), JS_YAML_SEQUENCE);
    assert_int_equal(js_yaml_seq_len(list), 2);
    assert_int_equal(js_yaml_node_line(js_yaml_seq_item(list, 0)), 6);
    const js_yaml_node *flow = js_yaml_seq_item(list, 1);
    assert_int_equal(js_yaml_node_type(flow), JS_YAML_SEQUENCE);
    assert_int_equal(js_yaml_node_line(flow), 7);
    assert_string_equal(js_yaml_scalar_str(js_yaml_seq_item(flow, 1)), "3");
    assert_null(js_yaml_seq_item(flow, 2));

    const js_yaml_node *inner = js_yaml_map_get(js_yaml_map_get(root, "map"), "inner");
    assert_int_equal(js_yaml_node_type(inner), JS_YAML_MAPPING);
    assert_int_equal(js_yaml_node_line(inner), 9);
    assert_string_equal(js_yaml_scalar_str(js_yaml_map_get(inner, "k")), "v");

    /* "empty:" has no value: a null scalar reported on the key's line. */
    const js_yaml_node *empty = js_yaml_map_get(root, "empty");
    assert_true(js_yaml_scalar_is_null(empty));
    assert_int_equal(js_yaml_node_line(empty), 10);
    assert_true(js_yaml_scalar_is_null(js_yaml_map_get(root, "tilde")));
    const js_yaml_node *block = js_yaml_map_get(root, "block");
    assert_string_equal(js_yaml_scalar_str(block), "text\n");
    assert_false(js_yaml_scalar_is_plain(block));

    size_t idx = 99;
    assert_true(js_yaml_map_find(root, "list", &idx));
    assert_int_equal(idx, 3);
    assert_false(js_yaml_map_find(root, "nope", &idx));
    assert_null(js_yaml_map_get(root, "nope"));
    /* Wrong-type and NULL accessors return neutral values, never crash. */
    assert_null(js_yaml_scalar_str(list));
    assert_int_equal(js_yaml_seq_len(root), 0);
    assert_int_equal(js_yaml_map_len(list), 0);
    assert_null(js_yaml_map_get(list, "x"));
    assert_int_equal(js_yaml_node_type(NULL), JS_YAML_NONE);
    assert_int_equal(js_yaml_node_line(NULL), 0);
    js_yaml_doc_free(doc);
    js_yaml_doc_free(NULL);
}

static void test_scalar_root_and_empty_document(void **state)
{
    (void)state;
    js_yaml_doc *doc = load_ok("just text\n");
    assert_string_equal(js_yaml_scalar_str(js_yaml_doc_root(doc)), "just text");
    js_yaml_doc_free(doc);
    /* "---" alone is one document whose root is null. */
    doc = load_ok("---\n");
    assert_true(js_yaml_scalar_is_null(js_yaml_doc_root(doc)));
    js_yaml_doc_free(doc);
}

/* ---- structural rejections --------------------------------------------------------- */

static const struct {
    const char *name;
    const char *text;
    const char *reason;
    size_t line;
} k_bad[] = {
    {"duplicate key", "a: 1\nb: 2\na: 3\n", "yaml.duplicate_key", 3},
    {"duplicate key nested", "top:\n  x: 1\n  y: 2\n  x: 3\n", "yaml.duplicate_key", 4},
    {"duplicate flow key", "{a: 1, a: 2}\n", "yaml.duplicate_key", 1},
    {"anchor", "a: &x 1\nb: 2\n", "yaml.anchor", 1},
    {"alias", "a: 1\nb: *x\n", "yaml.alias", 2},
    {"billion laughs", "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n", "yaml.anchor", 1},
    {"tag on scalar", "a: 1\nb: !!str 2\n", "yaml.tag", 2},
    {"local tag", "a: !mine x\n", "yaml.tag", 1},
    {"tag on mapping", "a: !!map {k: v}\n", "yaml.tag", 1},
    {"sequence as key", "? [a, b]\n: v\n", "yaml.key_not_scalar", 1},
    {"mapping as key", "{{a: b}: c}\n", "yaml.key_not_scalar", 1},
    {"two documents", "a: 1\n---\nb: 2\n", "yaml.multiple_documents", 2},
    {"empty input", "", "yaml.no_document", 0},
    {"only a comment", "# nothing\n", "yaml.no_document", 0},
    {"unclosed flow", "a: 1\nb: [1, 2\nc: 3\n", "yaml.yaml_syntax", 3},
    {"bad indentation", "a:\n  b: 1\n c: 2\n", "yaml.yaml_syntax", 3},
    {"unterminated quote", "a: 1\nb: \"open\n", "yaml.yaml_syntax", 3},
    {"tab indentation", "a:\n\tb: 1\n", "yaml.yaml_syntax", 2},
    {"NUL escape", "a: 1\nb: \"x\\0y\"\n", "yaml.nul_in_scalar", 2},
    {"invalid UTF-8", "a: \xff\xfe\n", "yaml.yaml_syntax", 0},
};

static void test_structural_rejections(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        print_message("case: %s\n", k_bad[i].name);
        load_fails(k_bad[i].text, strlen(k_bad[i].text), &k_opts, k_bad[i].reason, k_bad[i].line);
    }
}

static void test_duplicate_key_message(void **state)
{
    (void)state;
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    const char *text = "a: 1\nb: 2\nc: 3\nb: 4\na: 5\n";
    assert_int_equal(js_yaml_load_buffer("t.yaml", text, strlen(text), &k_opts, &doc, &err),
                     JS_ECONFIG);
    /* The earliest repeat in the file is reported, with the line of the original. */
    assert_string_equal(err.msg, "t.yaml:4: duplicate key 'b' (first on line 2)");
}

/* A mapping with many keys: the duplicate check is by sorting, and still exact. */
static void test_duplicate_key_in_large_mapping(void **state)
{
    (void)state;
    enum { N = 5000 };
    size_t cap = (size_t)N * 16 + 64;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t used = 0;
    for (int i = 0; i < N; i++)
        used += (size_t)snprintf(text + used, cap - used, "k%d: %d\n", N - i, i);
    js_yaml_doc *doc = load_ok(text);
    assert_int_equal(js_yaml_map_len(js_yaml_doc_root(doc)), N);
    js_yaml_doc_free(doc);
    snprintf(text + used, cap - used, "k%d: again\n", 1234);
    js_err err = {0};
    assert_int_equal(js_yaml_load_buffer("t.yaml", text, strlen(text), &k_opts, &doc, &err),
                     JS_ECONFIG);
    char want[96];
    snprintf(want, sizeof(want), "t.yaml:%d: duplicate key 'k1234' (first on line %d)", N + 1,
             N - 1234 + 1);
    assert_string_equal(err.msg, want);
    free(text);
}

static char *nested(size_t depth)
{
    char *s = malloc(2 * depth + 2);
    assert_non_null(s);
    memset(s, '[', depth);
    memset(s + depth, ']', depth);
    s[2 * depth] = '\n';
    s[2 * depth + 1] = '\0';
    return s;
}

static void test_depth_limit(void **state)
{
    (void)state;
    char *ok = nested(JS_YAML_MAX_DEPTH);
    js_yaml_doc_free(load_ok(ok));
    free(ok);
    char *deep = nested(JS_YAML_MAX_DEPTH + 1);
    load_fails(deep, strlen(deep), &k_opts, "yaml.too_deep", 1);
    free(deep);
    /* Block style counts the same way, and opts can lower the limit. */
    const js_yaml_opts shallow = {.domain = "yaml", .status = JS_ECONFIG, .max_depth = 2};
    const char *three = "a:\n  b:\n    c: 1\n";
    load_fails(three, strlen(three), &shallow, "yaml.too_deep", 3);
    /* Asking for more than the hard cap gets the cap. */
    const js_yaml_opts greedy = {.domain = "yaml", .status = JS_ECONFIG, .max_depth = 1000};
    deep = nested(JS_YAML_MAX_DEPTH + 1);
    load_fails(deep, strlen(deep), &greedy, "yaml.too_deep", 1);
    free(deep);
}

static void test_size_limit(void **state)
{
    (void)state;
    size_t len = JS_YAML_MAX_BYTES + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '#', len); /* one huge comment: only the size rule can reject it */
    load_fails(big, len, &k_opts, "yaml.too_large", 0);
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    assert_int_equal(js_yaml_load_buffer("t.yaml", big, len, NULL, &doc, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "yaml.too_large");

    /* The same through a file. */
    char dir[] = "/tmp/test_yamldoc.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/big.yaml", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(big, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(js_yaml_load_file(path, &k_opts, &doc, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.too_large");
    assert_non_null(strstr(err.msg, path));
    assert_null(doc);

    /* A small file loads, and its path names it in messages. */
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite("a: 1\n", 1, 5, f), 5);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(js_yaml_load_file(path, &k_opts, &doc, &err), JS_OK);
    assert_string_equal(js_yaml_doc_name(doc), path);
    assert_string_equal(js_yaml_scalar_str(js_yaml_map_get(js_yaml_doc_root(doc), "a")), "1");
    js_yaml_doc_free(doc);

    const js_yaml_opts tiny = {.domain = "yaml", .status = JS_ECONFIG, .max_bytes = 4};
    assert_int_equal(js_yaml_load_file(path, &tiny, &doc, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.too_large");

    /* Config and policy files are named by the operator: a symlink is followed. */
    char link[64];
    snprintf(link, sizeof(link), "%s/link.yaml", dir);
    assert_int_equal(symlink("big.yaml", link), 0);
    assert_int_equal(js_yaml_load_file(link, &k_opts, &doc, &err), JS_OK);
    js_yaml_doc_free(doc);
    assert_int_equal(unlink(link), 0);

    assert_int_equal(unlink(path), 0);
    assert_int_equal(js_yaml_load_file(path, &k_opts, &doc, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.io");
    assert_int_equal(js_yaml_load_file(dir, &k_opts, &doc, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.io");
    assert_int_equal(rmdir(dir), 0);
    free(big);
}

static void test_size_limit_exact(void **state)
{
    (void)state;
    /* A comment padded to exactly the limit, then a value: accepted. */
    size_t len = JS_YAML_MAX_BYTES;
    char *buf = malloc(len);
    assert_non_null(buf);
    memset(buf, '#', len);
    memcpy(buf + len - 6, "\na: 1\n", 6);
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    assert_int_equal(js_yaml_load_buffer("t.yaml", buf, len, &k_opts, &doc, &err), JS_OK);
    assert_string_equal(js_yaml_scalar_str(js_yaml_map_get(js_yaml_doc_root(doc), "a")), "1");
    js_yaml_doc_free(doc);
    free(buf);
}

static void test_node_limit(void **state)
{
    (void)state;
    const js_yaml_opts few = {.domain = "yaml", .status = JS_ECONFIG, .max_nodes = 5};
    const char *four = "[a, b, c, d]\n"; /* 5 nodes: the sequence and four scalars */
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    assert_int_equal(js_yaml_load_buffer("t.yaml", four, strlen(four), &few, &doc, &err), JS_OK);
    js_yaml_doc_free(doc);
    const char *five = "[a, b, c, d,\n e]\n";
    load_fails(five, strlen(five), &few, "yaml.too_many_nodes", 2);
}

/* ---- typed readers ----------------------------------------------------------------- */

static const struct {
    const char *value; /* YAML text of the value */
    int64_t min, max;
    const char *reason; /* NULL = accepted */
    int64_t want;
} k_ints[] = {
    {"42", 0, 100, NULL, 42},
    {"0", 0, 100, NULL, 0},
    {"-7", -10, 10, NULL, -7},
    {"9223372036854775807", INT64_MIN, INT64_MAX, NULL, INT64_MAX},
    {"-9223372036854775808", INT64_MIN, INT64_MAX, NULL, INT64_MIN},
    {"9223372036854775808", INT64_MIN, INT64_MAX, "yaml.range", 0},
    {"101", 0, 100, "yaml.range", 0},
    {"-1", 0, 100, "yaml.range", 0},
    {"007", 0, 100, "yaml.integer", 0},
    {"0x10", 0, 100, "yaml.integer", 0},
    {"+1", 0, 100, "yaml.integer", 0},
    {"1e3", 0, 10000, "yaml.integer", 0},
    {"1_000", 0, 10000, "yaml.integer", 0},
    {"4.0", 0, 100, "yaml.integer", 0},
    {"\"4\"", 0, 100, "yaml.integer", 0},
    {"four", 0, 100, "yaml.integer", 0},
    {"-x", 0, 100, "yaml.integer", 0},
    {"--1", 0, 100, "yaml.integer", 0},
    {"", 0, 100, "yaml.integer", 0},
    {"[1]", 0, 100, "yaml.integer", 0},
};

static void test_expect_int(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_ints) / sizeof(k_ints[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "pad: 0\nv: %s\n", k_ints[i].value);
        print_message("int case: %s\n", k_ints[i].value);
        js_yaml_doc *doc = load_ok(text);
        js_err err = {0};
        int64_t out = 12345;
        js_status st = js_yaml_expect_int(doc, js_yaml_map_get(js_yaml_doc_root(doc), "v"), "sec.v",
                                          k_ints[i].min, k_ints[i].max, &out, &err);
        if (k_ints[i].reason == NULL) {
            assert_int_equal(st, JS_OK);
            assert_true(out == k_ints[i].want);
        } else {
            assert_int_equal(st, JS_ECONFIG);
            assert_string_equal(js_reason_name(err.reason), k_ints[i].reason);
            assert_true(strncmp(err.msg, "t.yaml:2: sec.v: ", 17) == 0);
            assert_true(out == 12345);
        }
        js_yaml_doc_free(doc);
    }
}

static const struct {
    const char *value;
    int result; /* 0 false, 1 true, -1 error */
} k_bools[] = {
    {"true", 1},      {"false", 0}, {"True", -1},   {"FALSE", -1}, {"yes", -1},
    {"no", -1},       {"on", -1},   {"off", -1},    {"y", -1},     {"1", -1},
    {"\"true\"", -1}, {"", -1},     {"{a: b}", -1},
};

static void test_expect_bool(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(k_bools) / sizeof(k_bools[0]); i++) {
        char text[64];
        snprintf(text, sizeof(text), "v: %s\n", k_bools[i].value);
        js_yaml_doc *doc = load_ok(text);
        js_err err = {0};
        bool out = false;
        js_status st =
            js_yaml_expect_bool(doc, js_yaml_map_get(js_yaml_doc_root(doc), "v"), "v", &out, &err);
        if (k_bools[i].result < 0) {
            assert_int_equal(st, JS_ECONFIG);
            assert_string_equal(js_reason_name(err.reason), "yaml.boolean");
            assert_true(strncmp(err.msg, "t.yaml:1: v: ", 13) == 0);
        } else {
            assert_int_equal(st, JS_OK);
            assert_int_equal(out, k_bools[i].result);
        }
        js_yaml_doc_free(doc);
    }
}

static void test_expect_string_and_duration(void **state)
{
    (void)state;
    js_yaml_doc *doc = load_ok("s: hello\n"
                               "q: \"\"\n"
                               "n:\n"
                               "t: ~\n"
                               "m: {a: b}\n"
                               "d: 15m\n"
                               "dq: \"2h\"\n"
                               "bad: 5x\n");
    const js_yaml_node *root = js_yaml_doc_root(doc);
    js_err err = {0};
    const char *s = NULL;
    assert_int_equal(js_yaml_expect_string(doc, js_yaml_map_get(root, "s"), "s", &s, &err), JS_OK);
    assert_string_equal(s, "hello");
    /* A quoted empty string is a string; a bare key or ~ is null. */
    assert_int_equal(js_yaml_expect_string(doc, js_yaml_map_get(root, "q"), "q", &s, &err), JS_OK);
    assert_string_equal(s, "");
    assert_int_equal(js_yaml_expect_string(doc, js_yaml_map_get(root, "n"), "n", &s, &err),
                     JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.type");
    assert_string_equal(err.msg, "t.yaml:3: n: expected a string, found nothing (null)");
    assert_int_equal(js_yaml_expect_string(doc, js_yaml_map_get(root, "t"), "t", &s, &err),
                     JS_ECONFIG);
    assert_int_equal(js_yaml_expect_string(doc, js_yaml_map_get(root, "m"), "m", &s, &err),
                     JS_ECONFIG);
    assert_string_equal(err.msg, "t.yaml:5: m: expected a string, found a mapping");

    int64_t secs = 0;
    assert_int_equal(js_yaml_expect_duration(doc, js_yaml_map_get(root, "d"), "d", &secs, &err),
                     JS_OK);
    assert_int_equal(secs, 900);
    assert_int_equal(js_yaml_expect_duration(doc, js_yaml_map_get(root, "dq"), "dq", &secs, &err),
                     JS_OK);
    assert_int_equal(secs, 7200);
    assert_int_equal(
        js_yaml_expect_duration(doc, js_yaml_map_get(root, "bad"), "x.bad", &secs, &err),
        JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.duration");
    assert_true(strncmp(err.msg, "t.yaml:8: x.bad: ", 17) == 0);

    assert_int_equal(
        js_yaml_expect_type(doc, js_yaml_map_get(root, "s"), "s", JS_YAML_SEQUENCE, &err),
        JS_ECONFIG);
    assert_string_equal(err.msg, "t.yaml:1: s: expected a sequence, found a scalar");

    /* A missing node (NULL) is an error for every reader, not a crash. */
    int64_t i64 = 0;
    bool b = false;
    assert_int_equal(js_yaml_expect_int(doc, NULL, "x", 0, 1, &i64, &err), JS_ECONFIG);
    assert_int_equal(js_yaml_expect_bool(doc, NULL, "x", &b, &err), JS_ECONFIG);
    assert_int_equal(js_yaml_expect_string(doc, NULL, "x", &s, &err), JS_ECONFIG);
    assert_int_equal(js_yaml_expect_duration(doc, NULL, "x", &secs, &err), JS_ECONFIG);
    js_yaml_doc_free(doc);
}

static void test_check_keys_and_lookup(void **state)
{
    (void)state;
    js_yaml_doc *doc = load_ok("outer:\n"
                               "  a: 1\n"
                               "  b: 2\n"
                               "  \"zz\\x01\": 3\n");
    const js_yaml_node *outer = js_yaml_map_get(js_yaml_doc_root(doc), "outer");
    static const char *const allowed[] = {"a", "b", "c"};
    js_err err = {0};
    assert_int_equal(js_yaml_check_keys(doc, outer, "outer", allowed, 3, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.unknown_key");
    /* The control byte is not echoed. */
    assert_string_equal(err.msg, "t.yaml:4: outer: unknown key 'zz?' (allowed: a, b, c)");
    js_yaml_doc_free(doc);

    doc = load_ok("outer:\n  a: 1\n  b: 2\n");
    outer = js_yaml_map_get(js_yaml_doc_root(doc), "outer");
    assert_int_equal(js_yaml_check_keys(doc, outer, "outer", allowed, 3, &err), JS_OK);
    const js_yaml_node *v = NULL;
    assert_int_equal(js_yaml_lookup(doc, outer, "outer", "c", false, &v, &err), JS_OK);
    assert_null(v);
    assert_int_equal(js_yaml_lookup(doc, outer, "outer", "b", true, &v, &err), JS_OK);
    assert_string_equal(js_yaml_scalar_str(v), "2");
    assert_int_equal(js_yaml_lookup(doc, outer, "outer", "c", true, &v, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.missing_key");
    assert_string_equal(err.msg, "t.yaml:2: outer.c: required key is missing");
    assert_int_equal(
        js_yaml_lookup(doc, js_yaml_map_get(outer, "a"), "outer.a", "x", false, &v, &err),
        JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "yaml.type");
    assert_int_equal(js_yaml_check_keys(doc, js_yaml_doc_root(doc), "", allowed, 3, &err),
                     JS_ECONFIG);
    /* An empty path (the top level) is left out of the message. */
    assert_string_equal(err.msg, "t.yaml:1: unknown key 'outer' (allowed: a, b, c)");
    js_yaml_doc_free(doc);
}

static void test_paths_and_printable(void **state)
{
    (void)state;
    char buf[JS_YAML_PATH_MAX];
    assert_string_equal(js_yaml_path_key(buf, sizeof(buf), "", "listen"), "listen");
    assert_string_equal(js_yaml_path_key(buf, sizeof(buf), "tls", "cert"), "tls.cert");
    assert_string_equal(js_yaml_path_index(buf, sizeof(buf), "keys", 3), "keys[3]");
    char small[8];
    assert_string_equal(js_yaml_printable(small, sizeof(small), "abcdefghij"), "abcd...");
    assert_string_equal(js_yaml_printable(small, sizeof(small), "a\nb\x1b"), "a?b?");
    assert_string_equal(js_yaml_printable(small, sizeof(small), "abcdefg"), "abcdefg");
}

static void test_default_domain(void **state)
{
    (void)state;
    js_yaml_doc *doc = NULL;
    js_err err = {0};
    const char *text = "a: *x\n";
    assert_int_equal(js_yaml_load_buffer(NULL, text, strlen(text), NULL, &doc, &err), JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "yaml.alias");
    assert_string_equal(err.msg, "(buffer):1: aliases (*name) are not allowed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_types_and_lines),
        cmocka_unit_test(test_scalar_root_and_empty_document),
        cmocka_unit_test(test_structural_rejections),
        cmocka_unit_test(test_duplicate_key_message),
        cmocka_unit_test(test_duplicate_key_in_large_mapping),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_size_limit_exact),
        cmocka_unit_test(test_node_limit),
        cmocka_unit_test(test_expect_int),
        cmocka_unit_test(test_expect_bool),
        cmocka_unit_test(test_expect_string_and_duration),
        cmocka_unit_test(test_check_keys_and_lookup),
        cmocka_unit_test(test_paths_and_printable),
        cmocka_unit_test(test_default_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
