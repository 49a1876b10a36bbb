/*
 * test_fileio.c - the one bounded whole-file reader (lib/base/fileio.h) and
 * the state-file wrapper over it (statefile.h): a missing file, a symlink
 * (refused, or followed on request), a directory, a FIFO (refused without
 * blocking), the size limit by fstat and by reading (a file whose fstat size
 * is 0 but which has content, as /proc files do), an empty file, exactly the
 * limit, and the state-file reasons and messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <errno.h>

#include "fileio.h"
#include "statefile.h"

typedef struct fixture {
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_fileio.XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    int rc = system(cmd);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static void path_in(const fixture *fx, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", fx->dir, name);
}

static void put(const fixture *fx, const char *name, const char *content, size_t len)
{
    char p[256];
    path_in(fx, name, p, sizeof(p));
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void test_reads_whole_file(void **state)
{
    fixture *fx = *state;
    put(fx, "a", "hello\nworld", 11);
    char p[256];
    path_in(fx, "a", p, sizeof(p));
    char *out = NULL;
    size_t len = 0;
    js_file_info fi;
    assert_int_equal(js_file_read(p, 11, 0, &out, &len, &fi), JS_FILE_OK);
    assert_int_equal(len, 11);
    assert_memory_equal(out, "hello\nworld", 12); /* NUL-terminated */
    assert_true(fi.stat_ok);
    assert_int_equal(fi.size, 11);
    free(out);
    /* One byte under the file's size is too large, and nothing is returned. */
    assert_int_equal(js_file_read(p, 10, JS_FILE_SECRET, &out, &len, &fi), JS_FILE_TOO_LARGE);
    assert_null(out);
    assert_int_equal(len, 0);
    assert_int_equal(fi.size, 11);
}

static void test_empty_file(void **state)
{
    fixture *fx = *state;
    put(fx, "empty", "", 0);
    char p[256];
    path_in(fx, "empty", p, sizeof(p));
    char *out = NULL;
    size_t len = 99;
    assert_int_equal(js_file_read(p, 0, 0, &out, &len, NULL), JS_FILE_OK);
    assert_non_null(out);
    assert_int_equal(len, 0);
    assert_int_equal(out[0], '\0');
    free(out);
}

static void test_missing_file(void **state)
{
    fixture *fx = *state;
    char p[256];
    path_in(fx, "nope", p, sizeof(p));
    char *out = NULL;
    size_t len = 0;
    js_file_info fi;
    assert_int_equal(js_file_read(p, 100, 0, &out, &len, &fi), JS_FILE_OPEN);
    assert_int_equal(fi.sys_errno, ENOENT);
    assert_false(fi.stat_ok);
    assert_null(out);
}

static void test_symlink(void **state)
{
    fixture *fx = *state;
    put(fx, "target", "x", 1);
    char p[256];
    path_in(fx, "link", p, sizeof(p));
    assert_int_equal(symlink("target", p), 0);
    char *out = NULL;
    size_t len = 0;
    js_file_info fi;
    /* Not followed by default: a planted symlink is never read through. */
    assert_int_equal(js_file_read(p, 100, 0, &out, &len, &fi), JS_FILE_OPEN);
    assert_int_equal(fi.sys_errno, ELOOP);
    assert_null(out);
    /* Followed when the caller says the operator named the file. */
    assert_int_equal(js_file_read(p, 100, JS_FILE_FOLLOW, &out, &len, &fi), JS_FILE_OK);
    assert_int_equal(len, 1);
    assert_string_equal(out, "x");
    free(out);
}

static void test_not_regular(void **state)
{
    fixture *fx = *state;
    char *out = NULL;
    size_t len = 0;
    js_file_info fi;
    assert_int_equal(js_file_read(fx->dir, 100, 0, &out, &len, &fi), JS_FILE_NOT_REGULAR);
    assert_true(fi.stat_ok);
    assert_true(S_ISDIR(fi.mode));
    assert_null(out);
    /* A FIFO with no writer would block a plain open(O_RDONLY) for ever. */
    char p[256];
    path_in(fx, "fifo", p, sizeof(p));
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(js_file_read(p, 100, JS_FILE_FOLLOW, &out, &len, &fi), JS_FILE_NOT_REGULAR);
    assert_null(out);
}

static void test_content_past_fstat_size(void **state)
{
    (void)state;
    /* /proc files are regular with st_size 0: the reader trusts only what it
     * reads, grows its buffer, and still stops at the limit plus one byte. */
    char *out = NULL;
    size_t len = 0;
    js_file_info fi;
    assert_int_equal(js_file_read("/proc/self/status", 1u << 20, 0, &out, &len, &fi), JS_FILE_OK);
    assert_int_equal(fi.size, 0);
    assert_true(len > 100);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, "Name:"));
    free(out);
    assert_int_equal(js_file_read("/proc/self/status", 16, JS_FILE_SECRET, &out, &len, &fi),
                     JS_FILE_TOO_LARGE);
    assert_null(out);
    assert_int_equal(len, 0);
}

static void test_statefile_messages(void **state)
{
    fixture *fx = *state;
    char p[256];
    char *out = NULL;
    size_t len = 0;
    bool absent = false;
    js_err err;

    path_in(fx, "missing.json", p, sizeof(p));
    assert_int_equal(js_statefile_read(p, 10, "control", &out, &len, &absent, &err), JS_OK);
    assert_true(absent);
    assert_null(out);

    put(fx, "big.json", "0123456789ab", 12);
    path_in(fx, "big.json", p, sizeof(p));
    assert_int_equal(js_statefile_read(p, 10, "keystate", &out, &len, &absent, &err), JS_ECONFIG);
    assert_false(absent);
    assert_string_equal(js_reason_name(err.reason), "keystate.too_large");
    assert_non_null(strstr(err.msg, ": 12 bytes; the limit is 10"));

    assert_int_equal(js_statefile_read(fx->dir, 10, "control", &out, &len, &absent, &err),
                     JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "control.io");
    assert_non_null(strstr(err.msg, ": not a regular file"));

    char l[256];
    path_in(fx, "link.json", l, sizeof(l));
    assert_int_equal(symlink("big.json", l), 0);
    assert_int_equal(js_statefile_read(l, 100, "audit", &out, &len, &absent, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "audit.io");
    assert_non_null(strstr(err.msg, ": cannot open: "));

    assert_int_equal(js_statefile_read(p, 12, "keystate", &out, &len, &absent, &err), JS_OK);
    assert_int_equal(len, 12);
    assert_string_equal(out, "0123456789ab");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reads_whole_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_regular, setup, teardown),
        cmocka_unit_test(test_content_past_fstat_size),
        cmocka_unit_test_setup_teardown(test_statefile_messages, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
