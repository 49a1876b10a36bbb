/*
 * test_lifecycle.c - lifecycle and administrative audit records
 * (signer/core/lifecycle.h): a durable and a queued record carry type,
 * caller, decision, the reason's name, the message and the detail object; a
 * record without them has none of those members; a record the failed log
 * refuses returns its status and is logged as audit_record_lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_audit_util.h"
#include "lifecycle.h"
#include "reader.h"

static test_key g_key;

static int setup(void **state)
{
    (void)state;
    test_key_init(&g_key);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    test_key_free(&g_key);
    return 0;
}

/* The non-checkpoint records of the log in dir, in order (a JSON array). */
static json_t *records_of(const char *dir)
{
    char **paths = NULL;
    size_t n = 0;
    js_err err;
    assert_int_equal(js_audit_list_segments(dir, &paths, &n, &err), JS_OK);
    js_audit_reader *r = NULL;
    assert_int_equal(js_audit_reader_new((const char *const *)paths, n, &r, &err), JS_OK);
    json_t *out = json_array();
    js_audit_record rec;
    js_status st;
    bool end = false;
    while ((st = js_audit_reader_read(r, &rec, &end, &err)) == JS_OK && !end)
        if (!rec.is_checkpoint)
            json_array_append(out, rec.json);
    assert_int_equal(st, JS_OK);
    assert_true(end);
    js_audit_reader_free(r);
    js_audit_segments_free(paths, n);
    return out;
}

static const char *member(const json_t *rec, const char *name)
{
    return json_string_value(json_object_get(rec, name));
}

static void test_durable_and_queued_records(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);

    assert_int_equal(js_lifecycle_audit(a, JS_LIFECYCLE_DURABLE, "start", NULL, NULL, NULL,
                                        json_pack("{s:s, s:b}", "version", "0.1.0", "incident", 0)),
                     JS_OK);
    js_err why;
    js_err_set(&why, JS_EDENIED, JS_R_ADMIN_NOT_ADMIN, "not an administrator");
    assert_int_equal(js_lifecycle_audit(a, JS_LIFECYCLE_QUEUED, "admin", "dns:x.example", "deny",
                                        &why, json_pack("{s:s}", "action", "freeze")),
                     JS_OK);
    /* No detail at all. */
    assert_int_equal(js_lifecycle_audit(a, JS_LIFECYCLE_DURABLE, "stop", NULL, NULL, NULL, NULL),
                     JS_OK);
    js_audit_close(a); /* delivers the queued record */

    json_t *recs = records_of(dir);
    json_t *start = NULL, *admin = NULL, *stop = NULL;
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec)
    {
        const char *type = member(rec, "type");
        if (strcmp(type, "start") == 0)
            start = rec;
        else if (strcmp(type, "admin") == 0)
            admin = rec;
        else if (strcmp(type, "stop") == 0)
            stop = rec;
    }
    assert_non_null(start);
    assert_non_null(admin);
    assert_non_null(stop);
    assert_null(json_object_get(start, "caller"));
    assert_null(json_object_get(start, "reason"));
    assert_string_equal(member(json_object_get(start, "detail"), "version"), "0.1.0");
    assert_true(json_is_false(json_object_get(json_object_get(start, "detail"), "incident")));
    assert_string_equal(member(admin, "caller"), "dns:x.example");
    assert_string_equal(member(admin, "decision"), "deny");
    assert_string_equal(member(admin, "reason"), js_reason_name(JS_R_ADMIN_NOT_ADMIN));
    assert_string_equal(member(admin, "message"), "not an administrator");
    assert_string_equal(member(json_object_get(admin, "detail"), "action"), "freeze");
    assert_null(json_object_get(stop, "detail"));
    assert_null(json_object_get(stop, "decision"));
    json_decref(recs);
    tmpdir_remove(dir);
}

typedef struct fault {
    atomic_int sync_errno;
} fault;

static int fault_sync(void *ctx, int fd)
{
    fault *f = ctx;
    int e = atomic_load(&f->sync_errno);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return fdatasync(fd);
}

/* Runs fn with fd 2 going to a file; returns what was written (malloc'd). */
static char *stderr_of(void (*fn)(void *), void *ctx)
{
    char path[] = "/tmp/test_lifecycle_stderr_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    fn(ctx);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    close(fd);
    size_t len = 0;
    char *text = (char *)file_read(path, &len);
    unlink(path);
    return text;
}

typedef struct lost_case {
    js_audit *a;
    js_status st;
} lost_case;

static void write_lost(void *ctx)
{
    lost_case *c = ctx;
    /* The detail is taken even though the record is refused (no leak
     * under ASan). */
    c->st = js_lifecycle_audit(c->a, JS_LIFECYCLE_DURABLE, "policy", "SIGHUP", "load", NULL,
                               json_pack("{s:s}", "path", "/etc/policy.yaml"));
}

static void test_refused_record_is_logged(void **state)
{
    (void)state;
    char dir[64];
    tmpdir_make(dir, sizeof(dir));
    fault f;
    atomic_init(&f.sync_errno, 0);
    js_audit_io io = {.fdatasync = fault_sync, .ctx = &f};
    js_audit_options o;
    test_opts(&o, dir, &g_key);
    o.io = &io;
    o.retry_ms = 60000; /* stays failed for the test */
    js_audit *a = NULL;
    js_err err;
    assert_int_equal(js_audit_open(&o, &a, &err), JS_OK);
    atomic_store(&f.sync_errno, EIO);

    lost_case c = {.a = a, .st = JS_OK};
    char *text = stderr_of(write_lost, &c);
    assert_int_equal(c.st, JS_EUNAVAIL);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"event\":\"audit_record_lost\""));
    assert_non_null(strstr(text, "\"record\":\"policy\""));
    assert_non_null(strstr(text, "\"reason\":\"audit."));
    free(text);

    /* Once failed, a queued record is refused at once too. */
    c.st = JS_OK;
    text = stderr_of(write_lost, &c);
    assert_int_equal(c.st, JS_EUNAVAIL);
    assert_non_null(strstr(text, "audit_record_lost"));
    free(text);
    assert_int_equal(
        js_lifecycle_audit(a, JS_LIFECYCLE_QUEUED, "admin", "dns:x.example", "deny", NULL, NULL),
        JS_EUNAVAIL);

    atomic_store(&f.sync_errno, 0);
    js_audit_close(a);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_durable_and_queued_records),
        cmocka_unit_test(test_refused_record_is_logged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
