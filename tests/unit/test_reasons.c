/*
 * test_reasons.c - the closed set of reasons (lib/base/reasons.def, err.h).
 *
 * The table itself: every name unique, well formed and in order, every row
 * with classes and a one-line meaning, js_reason_name/js_reason_lookup/
 * js_reason_classes/js_reason_meaning agreeing with the rows. Then the
 * families whose names are built at run time from a domain and a code
 * (yamldoc's "<domain>.<code>", state files' "<domain>.io"/"<domain>.too_large",
 * the Admin text fields' "request.<field>"): every pair used must resolve to
 * a row, or the error would carry JS_R_NONE. The pairs are listed here and,
 * when the build passes JS_SOURCE_DIR, also read from the call sites, so a
 * new code or domain without its row fails here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dirent.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "err.h"

static const struct {
    js_reason id;
    const char *name;
    unsigned classes;
    const char *meaning;
} k_rows[] = {
#define JS_REASON(id, name, classes, meaning) {JS_R_##id, name, classes, meaning},
#include "reasons.def"
#undef JS_REASON
};
#define N_ROWS (sizeof(k_rows) / sizeof(k_rows[0]))

/* Every JS_C_* bit err.h defines. */
#define ALL_CLASSES                                                                                \
    (JS_C_OK | JS_C_INVALID | JS_C_DENIED | JS_C_LIMIT | JS_C_UNAVAIL | JS_C_INTERNAL |            \
     JS_C_CONFIG | JS_C_NOTFOUND | JS_C_STATE | JS_C_UNIMPLEMENTED | JS_C_RECORD)

/* yamldoc.c's structural codes (its yaml_fail calls), the domains that load
 * YAML documents (config.c "config", policy "policy", the default "yaml"),
 * the state files' domains (js_statefile_read/write callers) and codes
 * (statefile.c), and the Admin text fields (js_admin_text callers). */
static const char *const k_yaml_codes[] = {
    "alias",
    "anchor",
    "boolean",
    "duplicate_key",
    "duration",
    "integer",
    "io",
    "key_not_scalar",
    "missing_key",
    "multiple_documents",
    "no_document",
    "nul_in_scalar",
    "range",
    "tag",
    "too_deep",
    "too_large",
    "too_many_nodes",
    "type",
    "unknown_key",
    "yaml_syntax",
};
static const char *const k_yaml_domains[] = {"config", "policy", "yaml"};
static const char *const k_state_domains[] = {"audit", "control", "keystate"};
static const char *const k_state_codes[] = {"io", "too_large"};
static const char *const k_admin_fields[] = {"identity", "reason", "key", "kid"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* [a-z0-9_]+ */
static bool word_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

/* "ok" or [a-z0-9_]+(\.[a-z0-9_]+)+ */
static bool name_ok(const char *name)
{
    if (strcmp(name, "ok") == 0)
        return true;
    size_t parts = 0;
    const char *p = name;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (!word_ok(p, n))
            return false;
        parts++;
        if (dot == NULL)
            break;
        p = dot + 1;
    }
    return parts >= 2;
}

static void test_table_matches_enum(void **state)
{
    (void)state;
    assert_int_equal(N_ROWS, JS_R_COUNT - 1);
    for (size_t i = 0; i < N_ROWS; i++)
        assert_int_equal(k_rows[i].id, (js_reason)(i + 1));
    assert_string_equal(k_rows[0].name, "ok");
    assert_int_equal(k_rows[0].id, JS_R_OK);
}

static void test_names_unique_and_well_formed(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        if (!name_ok(k_rows[i].name))
            fail_msg("reason name '%s' is not \"ok\" or area.what ([a-z0-9_])", k_rows[i].name);
        for (size_t j = i + 1; j < N_ROWS; j++)
            if (strcmp(k_rows[i].name, k_rows[j].name) == 0)
                fail_msg("reason name '%s' is listed twice", k_rows[i].name);
    }
    assert_false(name_ok(""));
    assert_false(name_ok("policy"));
    assert_false(name_ok("policy."));
    assert_false(name_ok(".no_match"));
    assert_false(name_ok("policy..no_match"));
    assert_false(name_ok("Policy.no_match"));
    assert_false(name_ok("policy.no-match"));
}

/* "ok" first, then sorted by name, so a reader finds a row and a merge
 * conflict is local. */
static void test_rows_sorted(void **state)
{
    (void)state;
    for (size_t i = 2; i < N_ROWS; i++)
        if (strcmp(k_rows[i - 1].name, k_rows[i].name) >= 0)
            fail_msg("reasons.def: '%s' must come before '%s'", k_rows[i].name, k_rows[i - 1].name);
}

static void test_classes_and_meanings(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        const char *n = k_rows[i].name, *m = k_rows[i].meaning;
        unsigned c = k_rows[i].classes;
        if (c == 0)
            fail_msg("%s: no classes", n);
        if (c != JS_C_ANY && (c & ~(unsigned)ALL_CLASSES) != 0)
            fail_msg("%s: classes 0x%x has bits err.h does not define", n, c);
        if (c == JS_C_OK && strcmp(n, "ok") != 0)
            fail_msg("%s: only \"ok\" is a success", n);
        if (m[0] == '\0')
            fail_msg("%s: empty meaning", n);
        /* One line, no leftovers of a message's format (values go there). */
        if (strchr(m, '\n') != NULL || strchr(m, '%') != NULL || strstr(m, "\xe2\x80\xa6") != NULL)
            fail_msg("%s: meaning '%s' is not one clean line", n, m);
        if (m[0] == ':' || m[0] == ' ' || m[strlen(m) - 1] == ' ')
            fail_msg("%s: meaning '%s' has stray punctuation or spaces", n, m);
    }
}

static void test_name_lookup_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ROWS; i++) {
        js_reason r = k_rows[i].id;
        const char *n = k_rows[i].name;
        assert_string_equal(js_reason_name(r), n);
        assert_string_equal(js_reason_meaning(r), k_rows[i].meaning);
        assert_int_equal(js_reason_classes(r), k_rows[i].classes);
        assert_int_equal(js_reason_lookup(NULL, n), r);
        const char *dot = strchr(n, '.');
        if (dot == NULL)
            continue;
        char prefix[64];
        size_t plen = (size_t)(dot - n);
        assert_true(plen < sizeof(prefix));
        memcpy(prefix, n, plen);
        prefix[plen] = '\0';
        assert_int_equal(js_reason_lookup(prefix, dot + 1), r);
    }
}

static void test_none_and_out_of_range(void **state)
{
    (void)state;
    assert_string_equal(js_reason_name(JS_R_NONE), "");
    assert_int_equal(js_reason_classes(JS_R_NONE), 0);
    assert_string_equal(js_reason_name(JS_R_COUNT), "");
    assert_string_equal(js_reason_name((js_reason)(JS_R_COUNT + 7)), "");
    assert_string_equal(js_reason_meaning(JS_R_COUNT), "");
    assert_int_equal(js_reason_classes(JS_R_COUNT), 0);
    js_err e;
    js_err_set(&e, JS_EDENIED, JS_R_POLICY_NO_MATCH, "x");
    js_err_clear(&e);
    assert_int_equal(e.reason, JS_R_NONE);
    assert_string_equal(js_reason_name(e.reason), "");
}

static void test_lookup_unknown_names(void **state)
{
    (void)state;
    static const struct {
        const char *prefix, *code;
    } k_bad[] = {
        {NULL, NULL},
        {"policy", NULL},
        {NULL, ""},
        {NULL, "policy"},
        {NULL, "policy."},
        {NULL, ".no_match"},
        {NULL, "no_match"},
        {NULL, "policy.no_such_reason"},
        {NULL, "policy.no_match.extra"},
        {NULL, "POLICY.NO_MATCH"},
        {NULL, " policy.no_match"},
        {"policy", ""},
        {"policy", "no_such_reason"},
        {"policy", "policy.no_match"},
        {"pol", "icy.no_match"},
        {"policy.", "no_match"},
        {"no_such_domain", "io"},
        {"no_such_domain", "type"},
        {"request", "no_such_field"},
        {"yaml", "no_match"},
    };
    for (size_t i = 0; i < COUNT(k_bad); i++)
        if (js_reason_lookup(k_bad[i].prefix, k_bad[i].code) != JS_R_NONE)
            fail_msg("lookup(%s, %s) should be JS_R_NONE",
                     k_bad[i].prefix ? k_bad[i].prefix : "NULL",
                     k_bad[i].code ? k_bad[i].code : "NULL");
}

static void expect_row(const char *prefix, const char *code, unsigned need)
{
    js_reason r = js_reason_lookup(prefix, code);
    if (r == JS_R_NONE)
        fail_msg("%s.%s is built at run time but reasons.def has no such row", prefix, code);
    if ((js_reason_classes(r) & need) != need)
        fail_msg("%s.%s: classes 0x%x lack 0x%x, the status it is used with", prefix, code,
                 js_reason_classes(r), need);
}

static void test_families_resolve(void **state)
{
    (void)state;
    /* yamldoc: every structural code in every domain; config and policy
     * documents are loaded with JS_ECONFIG. */
    for (size_t d = 0; d < COUNT(k_yaml_domains); d++)
        for (size_t c = 0; c < COUNT(k_yaml_codes); c++)
            expect_row(k_yaml_domains[d], k_yaml_codes[c],
                       strcmp(k_yaml_domains[d], "yaml") == 0 ? 0u : JS_C_CONFIG);
    /* state files: I/O errors are UNAVAILABLE (a failed write) or a start-up
     * failure (not a regular file); a file over its limit is one too. */
    for (size_t d = 0; d < COUNT(k_state_domains); d++) {
        expect_row(k_state_domains[d], "io", JS_C_UNAVAIL | JS_C_CONFIG);
        expect_row(k_state_domains[d], "too_large", JS_C_CONFIG);
    }
    for (size_t f = 0; f < COUNT(k_admin_fields); f++)
        expect_row("request", k_admin_fields[f], JS_C_INVALID);
}

/* ---- the same families, read from the call sites --------------------------------- */

#ifdef JS_SOURCE_DIR

typedef struct found {
    char items[64][40];
    size_t n;
} found;

static void found_add(found *f, const char *s, size_t n)
{
    for (size_t i = 0; i < f->n; i++)
        if (strlen(f->items[i]) == n && memcmp(f->items[i], s, n) == 0)
            return;
    assert_true(f->n < COUNT(f->items));
    assert_true(n < sizeof(f->items[0]));
    memcpy(f->items[f->n], s, n);
    f->items[f->n][n] = '\0';
    f->n++;
}

static bool found_has(const found *f, const char *s)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->items[i], s) == 0)
            return true;
    return false;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap * 2 + 65536;
            char *grown = realloc(buf, cap + 1);
            assert_non_null(grown);
            buf = grown;
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0)
            break;
    }
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

/* The first string literal of each call fn(...) in text: a call, not the
 * definition or a prototype (no ';' or '{' before the literal), and not a
 * longer name ending in fn (js_yaml_fail vs yaml_fail). Literals that are
 * not a plain [a-z0-9_]+ word (a comment mentioning fn) are skipped. */
static void scan_calls(const char *text, const char *fn, found *out)
{
    size_t fl = strlen(fn);
    for (const char *p = strstr(text, fn); p != NULL; p = strstr(p + 1, fn)) {
        if (p[fl] != '(')
            continue;
        if (p > text) {
            char b = p[-1];
            if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9') ||
                b == '_')
                continue;
        }
        const char *q = strchr(p + fl, '"');
        if (q == NULL)
            break;
        const char *stop = strpbrk(p + fl, ";{");
        if (stop != NULL && stop < q)
            continue;
        const char *e = strchr(q + 1, '"');
        if (e == NULL)
            break;
        if (word_ok(q + 1, (size_t)(e - q - 1)))
            found_add(out, q + 1, (size_t)(e - q - 1));
    }
}

typedef struct scan {
    found yaml_codes, state_domains, admin_fields;
    size_t files;
} scan;

static void scan_tree(const char *dir, scan *s)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[4096];
        int n = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        assert_true(n > 0 && (size_t)n < sizeof(path));
        struct stat sb;
        if (lstat(path, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            scan_tree(path, s);
            continue;
        }
        size_t len = strlen(de->d_name);
        if (!S_ISREG(sb.st_mode) || len < 3 || strcmp(de->d_name + len - 2, ".c") != 0)
            continue;
        char *text = slurp(path);
        assert_non_null(text);
        s->files++;
        if (strcmp(de->d_name, "yamldoc.c") == 0)
            scan_calls(text, "yaml_fail", &s->yaml_codes);
        scan_calls(text, "js_statefile_read", &s->state_domains);
        scan_calls(text, "js_statefile_write", &s->state_domains);
        scan_calls(text, "js_admin_text", &s->admin_fields);
        free(text);
    }
    closedir(d);
}

static void test_families_from_call_sites(void **state)
{
    (void)state;
    scan *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    static const char *const k_dirs[] = {"lib", "signer", "policy", "audit"};
    for (size_t i = 0; i < COUNT(k_dirs); i++) {
        char dir[4096];
        int n = snprintf(dir, sizeof(dir), "%s/%s", JS_SOURCE_DIR, k_dirs[i]);
        assert_true(n > 0 && (size_t)n < sizeof(dir));
        scan_tree(dir, s);
    }
    assert_true(s->files > 10);
    /* The scanner finds at least the pairs listed above... */
    for (size_t c = 0; c < COUNT(k_yaml_codes); c++)
        if (!found_has(&s->yaml_codes, k_yaml_codes[c]))
            fail_msg("yamldoc.c no longer uses code '%s': update k_yaml_codes", k_yaml_codes[c]);
    for (size_t d = 0; d < COUNT(k_state_domains); d++)
        if (!found_has(&s->state_domains, k_state_domains[d]))
            fail_msg("no state file uses domain '%s': update k_state_domains", k_state_domains[d]);
    for (size_t f = 0; f < COUNT(k_admin_fields); f++)
        if (!found_has(&s->admin_fields, k_admin_fields[f]))
            fail_msg("no Admin text field '%s': update k_admin_fields", k_admin_fields[f]);
    /* ...and every pair the code builds has its row. */
    for (size_t d = 0; d < COUNT(k_yaml_domains); d++)
        for (size_t c = 0; c < s->yaml_codes.n; c++)
            expect_row(k_yaml_domains[d], s->yaml_codes.items[c], 0);
    for (size_t d = 0; d < s->state_domains.n; d++)
        for (size_t c = 0; c < COUNT(k_state_codes); c++)
            expect_row(s->state_domains.items[d], k_state_codes[c], 0);
    for (size_t f = 0; f < s->admin_fields.n; f++)
        expect_row("request", s->admin_fields.items[f], JS_C_INVALID);
    free(s);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_enum),
        cmocka_unit_test(test_names_unique_and_well_formed),
        cmocka_unit_test(test_rows_sorted),
        cmocka_unit_test(test_classes_and_meanings),
        cmocka_unit_test(test_name_lookup_roundtrip),
        cmocka_unit_test(test_none_and_out_of_range),
        cmocka_unit_test(test_lookup_unknown_names),
        cmocka_unit_test(test_families_resolve),
#ifdef JS_SOURCE_DIR
        cmocka_unit_test(test_families_from_call_sites),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
