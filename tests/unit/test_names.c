/*
 * test_names.c - one validator per kind of name (lib/base/names.h), table
 * driven: the limits exactly, one byte over, empty, NULL, and the characters
 * just outside each class.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "names.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

typedef struct name_case {
    const char *s;
    bool ok;
} name_case;

/* A string of n copies of c (n < 300). */
static const char *rep(char c, size_t n)
{
    static char buf[8][300];
    static unsigned next;
    char *b = buf[next++ % 8];
    memset(b, c, n);
    b[n] = '\0';
    return b;
}

static void run(bool (*ok)(const char *), const name_case *cases, size_t n, const char *kind)
{
    for (size_t i = 0; i < n; i++)
        if (ok(cases[i].s) != cases[i].ok)
            fail_msg("%s '%s': got %d, want %d", kind, cases[i].s ? cases[i].s : "(null)",
                     !cases[i].ok, cases[i].ok);
}

static void test_key_names(void **state)
{
    (void)state;
    const name_case cases[] = {
        {NULL, false},
        {"", false},
        {"a", true},
        {"signing-key_1.v2", true},
        {"ABCxyz019", true},
        {rep('k', JS_KEY_NAME_MAX), true},
        {rep('k', JS_KEY_NAME_MAX + 1), false},
        {"a b", false},
        {"a/b", false},
        {"a:b", false},
        {"a\tb", false},
        {"caf\xc3\xa9", false},
        {"a\x7f", false},
    };
    run(js_key_name_ok, cases, COUNT(cases), "key name");
}

static void test_labels(void **state)
{
    (void)state;
    const name_case cases[] = {
        {NULL, false},
        {"", false},
        {"jwt-signer ES256 key", true}, /* space is printable */
        {"~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}", true},
        {rep('l', JS_LABEL_MAX), true},
        {rep('l', JS_LABEL_MAX + 1), false},
        {"a\nb", false},
        {"a\x1f", false},
        {"a\x7f", false},
        {"\xc3\xa9", false},
    };
    run(js_label_ok, cases, COUNT(cases), "label");
}

static void test_env_names(void **state)
{
    (void)state;
    const name_case cases[] = {
        {NULL, false},
        {"", false},
        {"JS_PIN", true},
        {"_x9", true},
        {"pin", true},
        {"9PIN", false},
        {"JS-PIN", false},
        {"JS.PIN", false},
        {"A=B", false},
        {rep('E', JS_ENV_NAME_MAX), true},
        {rep('E', JS_ENV_NAME_MAX + 1), false},
    };
    run(js_env_name_ok, cases, COUNT(cases), "env name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_names),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_env_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
