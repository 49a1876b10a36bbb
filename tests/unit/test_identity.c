/*
 * test_identity.c - the typed caller identity (lib/base/identity.h): selection
 * from certificate names (URI SAN, else first DNS SAN, else CN) into
 * `URI` / `dns:NAME` / `cn:NAME`, a Unix socket peer's `unix:uid=N`, and the
 * check of operator-written identities. Negative cases first: one kind of
 * name passing for another (a certificate passing for the Unix peer root).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <cmocka.h>

#include "identity.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *const k_uri[] = {"spiffe://example.org/issuer-a"};
static const char *const k_two_uris[] = {"spiffe://example.org/a", "spiffe://example.org/b"};
static const char *const k_dns[] = {"svc.example.org", "other.example.org"};
static const char *const k_dns_upper[] = {"Login.Example.ORG"};
static const char *const k_dns_spiffe[] = {"spiffe://example.org/issuer-a"};
static const char *const k_dns_wild[] = {"*.example.org"};
static const char *const k_dns_hyphen[] = {"-bad.example.org"};
static const char *const k_dns_dot[] = {"example.org."};
static const char *const k_uri_dns_scheme[] = {"dns:login.example"};
static const char *const k_uri_cn_scheme[] = {"CN:admin"};
static const char *const k_uri_noscheme[] = {"example.org/issuer-a"};
static const char *const k_uri_space[] = {"spiffe://example.org/a b"};
static const char *const k_uri_empty_rest[] = {"spiffe:"};
static const char *const k_ctrl[] = {"spiffe://example.org/a\nforged log line"};
static const char *const k_c1[] = {"spiffe://example.org/issuer\xc2\x85"
                                   "a"};
static const char *const k_latin1[] = {"spiffe://example.org/caf\xe9"};
static const char *const k_uri_unix_root[] = {"unix:uid=0"};
static const char *const k_uri_unix_upper[] = {"UNIX:uid=0"};
static const char *const k_uri_unix_url[] = {"Unix:///run/kube/sa.sock"};

static const struct {
    const char *name;
    identity_names in;
    js_status st;
    const char *want; /* identity or reason */
} k_cases[] = {
    /* one kind of name passing for another */
    {"cn holding a spiffe id is a cn",
     {NULL, 0, NULL, 0, "spiffe://example.org/ops/admin"},
     JS_OK,
     "cn:spiffe://example.org/ops/admin"},
    {"dns san holding a spiffe id is refused",
     {NULL, 0, k_dns_spiffe, 1, NULL},
     JS_EDENIED,
     "identity.invalid"},
    {"uri san with dns scheme",
     {k_uri_dns_scheme, 1, NULL, 0, NULL},
     JS_EDENIED,
     "identity.ambiguous"},
    {"uri san with cn scheme (any case)",
     {k_uri_cn_scheme, 1, NULL, 0, NULL},
     JS_EDENIED,
     "identity.ambiguous"},
    /* a certificate can never be the Unix peer root */
    {"uri san unix:uid=0", {k_uri_unix_root, 1, NULL, 0, NULL}, JS_EDENIED, "identity.ambiguous"},
    {"uri san with unix scheme in upper case",
     {k_uri_unix_upper, 1, NULL, 0, NULL},
     JS_EDENIED,
     "identity.ambiguous"},
    {"uri san with unix scheme as a socket url",
     {k_uri_unix_url, 1, NULL, 0, NULL},
     JS_EDENIED,
     "identity.ambiguous"},
    {"cn unix:uid=0 is a cn", {NULL, 0, NULL, 0, "unix:uid=0"}, JS_OK, "cn:unix:uid=0"},
    {"cn with C1 and bidi override",
     {NULL, 0, NULL, 0,
      "issuer\xc2\x85"
      "a\xe2\x80\xae"},
     JS_EDENIED,
     "identity.invalid"},
    {"cn with zero-width space",
     {NULL, 0, NULL, 0, "adm\xe2\x80\x8bin"},
     JS_EDENIED,
     "identity.invalid"},
    {"cn with BOM",
     {NULL, 0, NULL, 0,
      "\xef\xbb\xbf"
      "admin"},
     JS_EDENIED,
     "identity.invalid"},
    {"uri with C1", {k_c1, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
    {"control character", {k_ctrl, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
    {"not utf-8", {k_latin1, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
    {"uri without scheme", {k_uri_noscheme, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
    {"uri with space", {k_uri_space, 1, NULL, 0, NULL}, JS_EDENIED, "identity.invalid"},
    {"uri with nothing after scheme",
     {k_uri_empty_rest, 1, NULL, 0, NULL},
     JS_EDENIED,
     "identity.invalid"},
    {"dns wildcard", {NULL, 0, k_dns_wild, 1, NULL}, JS_EDENIED, "identity.invalid"},
    {"dns label with leading hyphen",
     {NULL, 0, k_dns_hyphen, 1, NULL},
     JS_EDENIED,
     "identity.invalid"},
    {"dns trailing dot", {NULL, 0, k_dns_dot, 1, NULL}, JS_EDENIED, "identity.invalid"},
    {"nothing", {NULL, 0, NULL, 0, NULL}, JS_EDENIED, "identity.none"},
    {"two uris are ambiguous", {k_two_uris, 2, k_dns, 1, "cn"}, JS_EDENIED, "identity.ambiguous"},
    {"empty cn", {NULL, 0, NULL, 0, ""}, JS_EDENIED, "identity.invalid"},
    /* the forms */
    {"uri wins over dns and cn",
     {k_uri, 1, k_dns, 2, "cn"},
     JS_OK,
     "spiffe://example.org/issuer-a"},
    {"first dns when no uri", {NULL, 0, k_dns, 2, "cn"}, JS_OK, "dns:svc.example.org"},
    {"dns lower-cased", {NULL, 0, k_dns_upper, 1, NULL}, JS_OK, "dns:login.example.org"},
    {"cn when no san", {NULL, 0, NULL, 0, "cn-caller"}, JS_OK, "cn:cn-caller"},
    {"cn with spaces and letters of any script",
     {NULL, 0, NULL, 0, "Batch caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac"},
     JS_OK,
     "cn:Batch caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac"},
};

static void test_select_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(k_cases); i++) {
        char out[IDENTITY_MAX + 1];
        js_err err;
        js_err_clear(&err);
        js_status st = identity_select(&k_cases[i].in, out, sizeof(out), &err);
        if (st != k_cases[i].st)
            fail_msg("case '%s': status %d, want %d (%s)", k_cases[i].name, st, k_cases[i].st,
                     err.msg);
        if (st == JS_OK && strcmp(out, k_cases[i].want) != 0)
            fail_msg("case '%s': identity '%s', want '%s'", k_cases[i].name, out, k_cases[i].want);
        if (st != JS_OK && strcmp(js_reason_name(err.reason), k_cases[i].want) != 0)
            fail_msg("case '%s': reason '%s', want '%s'", k_cases[i].name,
                     js_reason_name(err.reason), k_cases[i].want);
        if (st != JS_OK)
            assert_string_equal(out, "");
    }
}

/* The refusal names the field and the character, never its raw bytes. */
static void test_select_messages(void **state)
{
    (void)state;
    identity_names in = {NULL, 0, NULL, 0,
                         "issuer\xc2\x85"
                         "a\xe2\x80\xae"};
    char out[IDENTITY_MAX + 1];
    js_err err;
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_EDENIED);
    assert_non_null(strstr(err.msg, "CN"));
    assert_non_null(strstr(err.msg, "U+0085"));
    assert_null(strstr(err.msg, "\xc2\x85"));
    identity_names d = {NULL, 0, k_dns_spiffe, 1, NULL};
    assert_int_equal(identity_select(&d, out, sizeof(out), &err), JS_EDENIED);
    assert_non_null(strstr(err.msg, "DNS SAN"));
}

static void test_too_long(void **state)
{
    (void)state;
    static char big[IDENTITY_MAX + 2];
    memset(big, 'a', IDENTITY_MAX + 1);
    big[IDENTITY_MAX + 1] = '\0';
    identity_names in = {NULL, 0, NULL, 0, big};
    char out[IDENTITY_MAX + 1];
    js_err err;
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_EDENIED);
    assert_string_equal(js_reason_name(err.reason), "identity.invalid");
    /* The limit is on the typed text: "cn:" + 509 bytes is exactly IDENTITY_MAX. */
    big[IDENTITY_MAX - 2] = '\0';
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_EDENIED);
    big[IDENTITY_MAX - 3] = '\0';
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_OK);
    assert_int_equal(strlen(out), IDENTITY_MAX);
    /* A too small buffer is a bug, not the caller's fault. */
    char small[8];
    identity_names s = {NULL, 0, NULL, 0, "long-enough"};
    assert_int_equal(identity_select(&s, small, sizeof(small), &err), JS_EINTERNAL);
}

static void test_dns_labels(void **state)
{
    (void)state;
    char label63[64], label64[65], name[300];
    memset(label63, 'a', 63);
    label63[63] = '\0';
    memset(label64, 'a', 64);
    label64[64] = '\0';
    char out[IDENTITY_MAX + 1];
    js_err err;
    const char *one[1] = {label63};
    identity_names in = {NULL, 0, one, 1, NULL};
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_OK);
    one[0] = label64;
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_EDENIED);
    /* 253 characters is the longest name; 254 is refused. */
    memset(name, 'a', sizeof(name));
    for (size_t i = 63; i < 253; i += 64)
        name[i] = '.';
    name[253] = '\0';
    one[0] = name;
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_OK);
    name[253] = 'a';
    name[254] = '\0';
    assert_int_equal(identity_select(&in, out, sizeof(out), &err), JS_EDENIED);
}

static const struct {
    const char *text;
    js_status st;
    const char *reason; /* or the type name when JS_OK */
    const char *msg;    /* substring of the message, or NULL */
} k_parse[] = {
    /* old-style bare names: refused with how to write them now */
    {"login.example", JS_EINVAL, "identity.ambiguous", "dns:login.example"},
    {"legacy-batch", JS_EINVAL, "identity.ambiguous", "cn:legacy-batch"},
    {"c1", JS_EINVAL, "identity.ambiguous", "full URI"},
    {"DNS:login.example", JS_EINVAL, "identity.ambiguous", "lower case"},
    {"Cn:admin", JS_EINVAL, "identity.ambiguous", "lower case"},
    {"", JS_EINVAL, "identity.invalid", "empty"},
    {"dns:", JS_EINVAL, "identity.invalid", "host name"},
    {"dns:Login.example", JS_EINVAL, "identity.invalid", "lower case"},
    {"dns:spiffe://example.org/x", JS_EINVAL, "identity.invalid", "host name"},
    {"dns:*.example.org", JS_EINVAL, "identity.invalid", NULL},
    {"cn:", JS_EINVAL, "identity.invalid", "empty"},
    {"cn:issuer\xc2\x85"
     "a",
     JS_EINVAL, "identity.invalid", "U+0085"},
    {"spiffe://example.org/a\xe2\x80\xae", JS_EINVAL, "identity.invalid", "U+202E"},
    {"spiffe://example.org/intruder\x7f", JS_EINVAL, "identity.invalid", "U+007F"},
    {"spiffe://example.org/a b", JS_EINVAL, "identity.invalid", "space"},
    {"spiffe://example.org/caf\xc3\xa9", JS_EINVAL, "identity.invalid", "ASCII"},
    {"spiffe:", JS_EINVAL, "identity.invalid", "nothing after"},
    /* unix: has exactly one spelling per uid; every other is refused, saying how */
    {"unix:", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:1000", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"UNIX:uid=0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"Unix:uid=0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:UID=0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid =0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=00", JS_EINVAL, "identity.invalid", "leading zeros"},
    {"unix:uid=01000", JS_EINVAL, "identity.invalid", "leading zeros"},
    {"unix:uid=+1000", JS_EINVAL, "identity.invalid", "no sign"},
    {"unix:uid=-1", JS_EINVAL, "identity.invalid", "no sign"},
    {"unix:uid=4294967295", JS_EINVAL, "identity.invalid", "0..4294967294"},
    {"unix:uid=4294967296", JS_EINVAL, "identity.invalid", "0..4294967294"},
    {"unix:uid=18446744073709551616", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=99999999999", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=0x3e8", JS_EINVAL, "identity.invalid", "decimal"},
    {"unix:uid=1e3", JS_EINVAL, "identity.invalid", "decimal"},
    {"unix:uid=1000 ", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=1000/", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=1000,gid=1000", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:pid=1,uid=0,gid=0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=0*", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix://uid=0", JS_EINVAL, "identity.invalid", "unix:uid=1000"},
    {"unix:uid=\xd9\xa0", JS_EINVAL, "identity.invalid", "unix:uid=1000"}, /* Arabic-Indic 0 */
    {"unix:uid=0\n", JS_EINVAL, "identity.invalid", "U+000A"},
    {"unix:uid=1\xe2\x80\x8b", JS_EINVAL, "identity.invalid", "U+200B"},
    /* the three forms */
    {"spiffe://example.org/ops/admin", JS_OK, "uri", NULL},
    {"spiffe://example.org/ns/payments/*", JS_OK, "uri", NULL},
    {"urn:example:batch", JS_OK, "uri", NULL},
    {"dns:login.internal.example", JS_OK, "dns", NULL},
    {"dns:svc_1.example", JS_OK, "dns", NULL},
    {"cn:legacy-batch", JS_OK, "cn", NULL},
    {"cn:spiffe://example.org/ops/admin", JS_OK, "cn", NULL},
    {"cn:Batch caf\xc3\xa9", JS_OK, "cn", NULL},
    {"unix:uid=0", JS_OK, "unix", NULL},
    {"unix:uid=1000", JS_OK, "unix", NULL},
    {"unix:uid=4294967294", JS_OK, "unix", NULL},
    {"cn:unix:uid=0", JS_OK, "cn", NULL},
    {"urn:unix:uid=0", JS_OK, "uri", NULL},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(k_parse); i++) {
        js_err err;
        js_err_clear(&err);
        js_identity_type t = (js_identity_type)99;
        js_status st = identity_parse(k_parse[i].text, &t, &err);
        if (st != k_parse[i].st)
            fail_msg("'%s': status %d, want %d (%s)", k_parse[i].text, st, k_parse[i].st, err.msg);
        if (st == JS_OK && strcmp(identity_type_name(t), k_parse[i].reason) != 0)
            fail_msg("'%s': type %s, want %s", k_parse[i].text, identity_type_name(t),
                     k_parse[i].reason);
        if (st != JS_OK && strcmp(js_reason_name(err.reason), k_parse[i].reason) != 0)
            fail_msg("'%s': reason %s, want %s (%s)", k_parse[i].text, js_reason_name(err.reason),
                     k_parse[i].reason, err.msg);
        if (k_parse[i].msg != NULL && strstr(err.msg, k_parse[i].msg) == NULL)
            fail_msg("'%s': message '%s' lacks '%s'", k_parse[i].text, err.msg, k_parse[i].msg);
    }
    js_err err;
    assert_int_equal(identity_parse(NULL, NULL, &err), JS_EINVAL);
    assert_int_equal(identity_parse("cn:x", NULL, NULL), JS_OK);
}

/* Whatever identity_select produces, identity_parse accepts with the same
 * type: an operator can always write down the identity a log line shows. */
static void test_select_parse_agree(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(k_cases); i++) {
        char out[IDENTITY_MAX + 1];
        js_err err;
        if (identity_select(&k_cases[i].in, out, sizeof(out), &err) != JS_OK)
            continue;
        js_identity_type t;
        if (identity_parse(out, &t, &err) != JS_OK)
            fail_msg("'%s' selected but not parsed: %s", out, err.msg);
        assert_int_equal(t, identity_type_of(out));
    }
}

/* The Unix socket peer: the one spelling of each uid, and its round trip. */
static void test_from_peer(void **state)
{
    (void)state;
    static const struct {
        unsigned long uid;
        const char *want;
    } ok[] = {
        {0, "unix:uid=0"},
        {1, "unix:uid=1"},
        {1000, "unix:uid=1000"},
        {65534, "unix:uid=65534"},
        {4294967294UL, "unix:uid=4294967294"},
    };
    for (size_t i = 0; i < COUNT(ok); i++) {
        char out[IDENTITY_MAX + 1];
        js_err err;
        js_err_clear(&err);
        if (identity_from_peer(ok[i].uid, out, sizeof(out), &err) != JS_OK)
            fail_msg("uid %lu: %s", ok[i].uid, err.msg);
        assert_string_equal(out, ok[i].want);
        js_identity_type t = JS_ID_URI;
        if (identity_parse(out, &t, &err) != JS_OK)
            fail_msg("'%s' made but not parsed: %s", out, err.msg);
        assert_int_equal(t, JS_ID_UNIX);
        assert_int_equal(identity_type_of(out), JS_ID_UNIX);
    }
    /* (uid_t)-1 is "no user" (SO_PEERCRED without credentials), never a caller. */
    static const unsigned long bad[] = {(unsigned long)(uid_t)-1, 4294967295UL, ULONG_MAX};
    for (size_t i = 0; i < COUNT(bad); i++) {
        char out[IDENTITY_MAX + 1] = "junk";
        js_err err;
        assert_int_equal(identity_from_peer(bad[i], out, sizeof(out), &err), JS_EDENIED);
        assert_string_equal(js_reason_name(err.reason), "identity.invalid");
        assert_non_null(strstr(err.msg, "uid"));
        assert_string_equal(out, "");
    }
    /* A buffer too small is a bug, not the peer's fault; the text never spills. */
    char small[sizeof("unix:uid=1000") - 1];
    js_err err;
    assert_int_equal(identity_from_peer(1000, small, sizeof(small), &err), JS_EINTERNAL);
    assert_string_equal(js_reason_name(err.reason), "identity.buffer");
    assert_string_equal(small, "");
    char exact[sizeof("unix:uid=1000")];
    assert_int_equal(identity_from_peer(1000, exact, sizeof(exact), &err), JS_OK);
    assert_string_equal(exact, "unix:uid=1000");
    assert_int_equal(identity_from_peer(1000, exact, sizeof(exact), NULL), JS_OK);
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(identity_type_name(JS_ID_URI), "uri");
    assert_string_equal(identity_type_name(JS_ID_DNS), "dns");
    assert_string_equal(identity_type_name(JS_ID_CN), "cn");
    assert_string_equal(identity_type_name(JS_ID_UNIX), "unix");
    assert_string_equal(identity_type_name((js_identity_type)42), "unknown");
    assert_int_equal(identity_type_of("dns:a"), JS_ID_DNS);
    assert_int_equal(identity_type_of("cn:a"), JS_ID_CN);
    assert_int_equal(identity_type_of("spiffe://a/b"), JS_ID_URI);
    assert_int_equal(identity_type_of("unix:uid=0"), JS_ID_UNIX);
    assert_int_equal(identity_type_of("cn:unix:uid=0"), JS_ID_CN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_table), cmocka_unit_test(test_select_messages),
        cmocka_unit_test(test_too_long),     cmocka_unit_test(test_dns_labels),
        cmocka_unit_test(test_parse_table),  cmocka_unit_test(test_select_parse_agree),
        cmocka_unit_test(test_from_peer),    cmocka_unit_test(test_type_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
