/*
 * test_metrics.c - unit tests for the metrics registry (signer/core/metrics.h):
 * counts from many threads add up exactly, the caller and reason caps hold
 * (also when threads race to add callers), label values are escaped and
 * sanitised, histograms are cumulative with the right _sum and _count, and
 * a real parser (python3-prometheus-client's text_string_to_metric_families)
 * accepts the rendered text and reads back the same values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metrics.h"

#define THREADS        8
#define PER_THREAD     20000
#define NEW_PER_THREAD 100

static js_metrics *new_metrics(void)
{
    js_metrics *m = NULL;
    js_err err = {0};
    if (js_metrics_new(&m, &err) != JS_OK)
        fail_msg("%s: %s", js_reason_name(err.reason), err.msg);
    return m;
}

static char *render(js_metrics *m, const js_metrics_gauges *g)
{
    char *t = js_metrics_render(m, g);
    assert_non_null(t);
    return t;
}

/* Number of lines of text that start with prefix. */
static size_t count_lines(const char *text, const char *prefix)
{
    size_t n = 0, pl = strlen(prefix);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return n;
}

static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return;
    }
    fail_msg("line not found: %s\n--- in ---\n%s", line, text);
}

/* ---- threads ----------------------------------------------------------------------- */

typedef struct worker_arg {
    js_metrics *m;
    int id;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    char name[32];
    for (int i = 0; i < PER_THREAD; i++) {
        js_metrics_request(a->m, "Sign", (i % 2) ? "svc-a" : "svc-b", "allow", "ok");
        if (i % 10 == 0)
            js_metrics_request(a->m, "Sign", "svc-a", "deny", "policy.audience");
        js_metrics_sign_latency(a->m, (uint64_t)(i % 3000));
        if (i % 100 == 0) {
            js_metrics_hsm_error(a->m);
            js_metrics_audit_batch(a->m, 10, 700);
        }
    }
    /* Every thread tries to add NEW_PER_THREAD new callers: the cap must hold. */
    for (int i = 0; i < NEW_PER_THREAD; i++) {
        snprintf(name, sizeof(name), "t%d-caller-%d", a->id, i);
        js_metrics_rate_limited(a->m, name);
    }
    return NULL;
}

static void test_threads_add_up(void **state)
{
    (void)state;
    js_metrics *m = new_metrics();
    pthread_t t[THREADS];
    worker_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].m = m;
        args[i].id = i;
        assert_int_equal(pthread_create(&t[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    char *text = render(m, NULL);
    char line[256];
    snprintf(line, sizeof(line),
             "jwt_signer_requests_total{method=\"Sign\",caller=\"svc-a\",decision=\"allow\","
             "reason=\"ok\"} %d",
             THREADS * PER_THREAD / 2);
    assert_line(text, line);
    snprintf(line, sizeof(line),
             "jwt_signer_requests_total{method=\"Sign\",caller=\"svc-b\",decision=\"allow\","
             "reason=\"ok\"} %d",
             THREADS * PER_THREAD / 2);
    assert_line(text, line);
    snprintf(line, sizeof(line),
             "jwt_signer_requests_total{method=\"Sign\",caller=\"svc-a\",decision=\"deny\","
             "reason=\"policy.audience\"} %d",
             THREADS * PER_THREAD / 10);
    assert_line(text, line);
    snprintf(line, sizeof(line), "jwt_signer_hsm_errors_total %d", THREADS * PER_THREAD / 100);
    assert_line(text, line);
    snprintf(line, sizeof(line), "jwt_signer_sign_latency_seconds_count %d", THREADS * PER_THREAD);
    assert_line(text, line);
    snprintf(line, sizeof(line), "jwt_signer_audit_batch_records_sum %d",
             THREADS * PER_THREAD / 100 * 10);
    assert_line(text, line);
    /* svc-a and svc-b took 2 caller slots; the racing threads share the other 254. */
    assert_int_equal(count_lines(text, "jwt_signer_rate_limited_total{"),
                     JS_METRICS_MAX_CALLERS - 2 + 1);
    snprintf(line, sizeof(line), "jwt_signer_rate_limited_total{caller=\"other\"} %d",
             THREADS * NEW_PER_THREAD - (JS_METRICS_MAX_CALLERS - 2));
    assert_line(text, line);
    free(text);
    js_metrics_free(m);
}

/* ---- cardinality ------------------------------------------------------------------- */

static void test_cardinality_cap(void **state)
{
    (void)state;
    js_metrics *m = new_metrics();
    char caller[32], reason[32];
    for (int i = 0; i < JS_METRICS_MAX_CALLERS + 50; i++) {
        snprintf(caller, sizeof(caller), "caller-%03d", i);
        js_metrics_request(m, "Sign", caller, "allow", "ok");
        js_metrics_request(m, "Sign", caller, "allow", "ok"); /* the same series again */
    }
    for (int i = 0; i < JS_METRICS_MAX_REASONS + 10; i++) {
        snprintf(reason, sizeof(reason), "reason.%03d", i);
        js_metrics_request(m, "Sign", "caller-000", "deny", reason);
    }
    char *text = render(m, NULL);
    /* 256 callers with "allow/ok", the 50 beyond as one "other" series. */
    assert_int_equal(
        count_lines(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"caller-"),
        JS_METRICS_MAX_CALLERS + JS_METRICS_MAX_REASONS);
    assert_line(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"caller-000\","
                      "decision=\"allow\",reason=\"ok\"} 2");
    assert_line(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"other\","
                      "decision=\"allow\",reason=\"ok\"} 100");
    assert_null(strstr(text, "caller=\"caller-256\""));
    /* "ok" took one reason slot: 127 more, then 11 denials fold into reason="other". */
    assert_line(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"caller-000\","
                      "decision=\"deny\",reason=\"other\"} 11");
    assert_null(strstr(text, "reason=\"reason.127\""));
    assert_non_null(strstr(text, "reason=\"reason.126\""));
    free(text);
    js_metrics_free(m);
}

/* ---- escaping ---------------------------------------------------------------------- */

static void test_label_escaping(void **state)
{
    (void)state;
    js_metrics *m = new_metrics();
    js_metrics_request(m, "Sign", "evil\"caller\nwith\\slash", "deny", "policy.caller");
    js_metrics_request(m, "Sign", "ctl\x01\x7f bad\xff\xc3z", "allow", NULL);
    js_metrics_request(m, "Sign", "caf\xc3\xa9", "allow", "");
    js_metrics_rate_limited(m, "q\"uote");
    char long_caller[1000];
    memset(long_caller, 'x', sizeof(long_caller) - 1);
    long_caller[sizeof(long_caller) - 1] = '\0';
    js_metrics_rate_limited(m, long_caller);
    char *text = render(m, NULL);
    assert_line(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"evil\\\"caller\\nwith\\\\"
                      "slash\",decision=\"deny\",reason=\"policy.caller\"} 1");
    /* Control characters and invalid UTF-8 become '?'; NULL and "" become "none". */
    assert_line(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"ctl\?\? bad\?\?z\","
                      "decision=\"allow\",reason=\"none\"} 1");
    assert_line(text, "jwt_signer_requests_total{method=\"Sign\",caller=\"caf\xc3\xa9\","
                      "decision=\"allow\",reason=\"none\"} 1");
    assert_line(text, "jwt_signer_rate_limited_total{caller=\"q\\\"uote\"} 1");
    /* Long values are cut to JS_METRICS_LABEL_MAX - 1 bytes. */
    char expect[JS_METRICS_LABEL_MAX + 64];
    snprintf(expect, sizeof(expect), "jwt_signer_rate_limited_total{caller=\"%.*s\"} 1",
             JS_METRICS_LABEL_MAX - 1, long_caller);
    assert_line(text, expect);
    /* No raw newline inside any sample line: every line is a comment or a sample. */
    for (const char *p = text; *p != '\0';) {
        assert_true(*p == '#' || strncmp(p, "jwt_signer_", 11) == 0);
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    free(text);
    js_metrics_free(m);
}

/* ---- histograms and gauges --------------------------------------------------------- */

static void test_histograms(void **state)
{
    (void)state;
    js_metrics *m = new_metrics();
    js_metrics_sign_latency(m, 400);     /* <= 0.0005 */
    js_metrics_sign_latency(m, 1000);    /* exactly 0.001: le is inclusive */
    js_metrics_sign_latency(m, 3000000); /* above 2.5: only +Inf */
    js_metrics_audit_batch(m, 1, 90);
    js_metrics_audit_batch(m, 3, 1000);
    js_metrics_audit_batch(m, 2000, 2000000);
    char *text = render(m, NULL);
    assert_line(text, "# TYPE jwt_signer_sign_latency_seconds histogram");
    assert_line(text, "jwt_signer_sign_latency_seconds_bucket{le=\"0.0005\"} 1");
    assert_line(text, "jwt_signer_sign_latency_seconds_bucket{le=\"0.001\"} 2");
    assert_line(text, "jwt_signer_sign_latency_seconds_bucket{le=\"0.002\"} 2");
    assert_line(text, "jwt_signer_sign_latency_seconds_bucket{le=\"2.5\"} 2");
    assert_line(text, "jwt_signer_sign_latency_seconds_bucket{le=\"+Inf\"} 3");
    assert_line(text, "jwt_signer_sign_latency_seconds_sum 3.001400");
    assert_line(text, "jwt_signer_sign_latency_seconds_count 3");
    assert_line(text, "jwt_signer_audit_batch_records_bucket{le=\"1\"} 1");
    assert_line(text, "jwt_signer_audit_batch_records_bucket{le=\"2\"} 1");
    assert_line(text, "jwt_signer_audit_batch_records_bucket{le=\"4\"} 2");
    assert_line(text, "jwt_signer_audit_batch_records_bucket{le=\"1024\"} 2");
    assert_line(text, "jwt_signer_audit_batch_records_bucket{le=\"+Inf\"} 3");
    assert_line(text, "jwt_signer_audit_batch_records_sum 2004");
    assert_line(text, "jwt_signer_audit_batch_records_count 3");
    assert_line(text, "jwt_signer_audit_fsync_seconds_bucket{le=\"0.0001\"} 1");
    assert_line(text, "jwt_signer_audit_fsync_seconds_bucket{le=\"0.001\"} 2");
    assert_line(text, "jwt_signer_audit_fsync_seconds_bucket{le=\"1\"} 2");
    assert_line(text, "jwt_signer_audit_fsync_seconds_bucket{le=\"+Inf\"} 3");
    assert_line(text, "jwt_signer_audit_fsync_seconds_sum 2.001090");
    /* Without gauges none are rendered. */
    assert_null(strstr(text, "jwt_signer_incident_mode"));
    free(text);

    js_metrics_gauges g = {.incident_mode = 1,
                           .frozen_callers = 3,
                           .key_versions = {1, 1, 2, 3, 0},
                           .audit_healthy = 1,
                           .hsm_healthy = 0,
                           .hsm_recoveries = 4,
                           .hsm_session_failures = 5,
                           .audit_disk_low = 1,
                           .audit_disk_free_bytes = 1048576,
                           .listener_recreations = 2,
                           .denials_folded = 4242,
                           .audit_records_lost = 17,
                           .audit_last_checkpoint_ms = 1765000000005,
                           .open_fds = -1,
                           .fd_limit = 1024};
    text = render(m, &g);
    assert_line(text, "jwt_signer_hsm_recoveries_total 4");
    assert_line(text, "jwt_signer_hsm_session_failures_total 5");
    assert_line(text, "# TYPE jwt_signer_audit_disk_low gauge");
    assert_line(text, "jwt_signer_audit_disk_low 1");
    assert_line(text, "jwt_signer_audit_disk_free_bytes 1048576");
    assert_line(text, "jwt_signer_grpc_listener_recreations_total 2");
    assert_line(text, "jwt_signer_denials_folded_total 4242");
    assert_line(text, "# TYPE jwt_signer_audit_records_lost_total counter");
    assert_line(text, "jwt_signer_audit_records_lost_total 17");
    assert_line(text, "jwt_signer_fd_limit 1024");
    /* An unknown fd count is left out rather than reported as a number. */
    assert_null(strstr(text, "jwt_signer_open_fds"));
    assert_line(text, "# TYPE jwt_signer_incident_mode gauge");
    assert_line(text, "jwt_signer_incident_mode 1");
    assert_line(text, "jwt_signer_key_versions{state=\"retiring\"} 2");
    assert_line(text, "jwt_signer_key_versions{state=\"retired\"} 3");
    assert_line(text, "jwt_signer_key_versions{state=\"revoked\"} 0");
    assert_line(text, "jwt_signer_audit_healthy 1");
    assert_line(text, "jwt_signer_hsm_healthy 0");
    assert_line(text, "# TYPE jwt_signer_frozen_callers gauge");
    assert_line(text, "jwt_signer_frozen_callers 3");
    /* Seconds, the milliseconds zero-padded. */
    assert_line(text, "# TYPE jwt_signer_audit_last_checkpoint_timestamp_seconds gauge");
    assert_line(text, "jwt_signer_audit_last_checkpoint_timestamp_seconds 1765000000.005");
    free(text);

    /* Nothing frozen, no checkpoint yet: both are exported as 0, not left out
     * (an alert on frozen_callers > 0 must see the caller unfreeze). */
    g.frozen_callers = 0;
    g.audit_last_checkpoint_ms = 0;
    text = render(m, &g);
    assert_line(text, "jwt_signer_frozen_callers 0");
    assert_line(text, "jwt_signer_audit_last_checkpoint_timestamp_seconds 0");
    free(text);
    js_metrics_free(m);
}

static void test_null_is_noop(void **state)
{
    (void)state;
    js_metrics_request(NULL, "Sign", "a", "allow", "ok");
    js_metrics_sign_latency(NULL, 1);
    js_metrics_hsm_error(NULL);
    js_metrics_audit_batch(NULL, 1, 1);
    js_metrics_rate_limited(NULL, "a");
    assert_null(js_metrics_render(NULL, NULL));
    js_metrics_free(NULL);
    js_err err = {0};
    assert_int_equal(js_metrics_new(NULL, &err), JS_EINVAL);
}

/* ---- from a decision ---------------------------------------------------------------- */

/* What a SignJwt decision counts follows from the decision (kind, status,
 * hsm_failed), never from its reason's name: an HSM failure with any reason
 * counts as an HSM error, a rate-limited denial as rate limited. */
static void test_sign_decisions(void **state)
{
    (void)state;
    js_metrics *m = new_metrics();
    js_decision d;
    js_err err;
    js_decision_init(&d);
    js_metrics_sign(m, JS_METHOD_SIGN_JWT, "svc-a", &d, 1500); /* allowed */
    js_decision_init(&d);
    js_err_set(&err, JS_ELIMIT, JS_R_RATE_LIMITED, "slow down");
    js_decision_fail(&d, &err);
    js_metrics_sign(m, JS_METHOD_SIGN_JWT, "svc-a", &d, 0);
    js_decision_init(&d);
    js_err_set(&err, JS_EUNAVAIL, JS_R_HSM_SIGN, "the token could not sign");
    js_decision_fail(&d, &err);
    d.hsm_failed = true;
    js_metrics_sign(m, JS_METHOD_SIGN_JWT, "svc-b", &d, 0);
    js_decision_init(&d);
    js_err_set(&err, JS_EUNAVAIL, JS_R_HSM_RECOVERING, "not an HSM failure of this call");
    js_decision_fail(&d, &err); /* hsm_failed false: not counted as an HSM error */
    js_metrics_sign(m, JS_METHOD_SIGN_JWT, "svc-b", &d, 0);
    js_decision_init(&d);
    js_err_set(&err, JS_EDENIED, JS_R_ADMIN_NOT_ADMIN, "not an administrator");
    js_decision_fail(&d, &err);
    js_metrics_call(m, "Admin/FreezeCaller", "svc-c", &d);
    char *text = render(m, NULL);
    assert_non_null(strstr(text, "decision=\"allow\""));
    assert_non_null(strstr(text, "decision=\"error\",reason=\"hsm.sign\""));
    assert_non_null(strstr(text, "method=\"Admin/FreezeCaller\""));
    assert_line(text, "jwt_signer_hsm_errors_total 1");
    assert_line(text, "jwt_signer_rate_limited_total{caller=\"svc-a\"} 1");
    assert_line(text, "jwt_signer_sign_latency_seconds_count 1");
    free(text);
    js_metrics_free(m);
}

/* ---- a real parser ----------------------------------------------------------------- */

/* Prints "type name labels-as-json value" per sample; any parse error exits non-zero. */
static const char k_parser[] =
    "import sys, json\n"
    "from prometheus_client.parser import text_string_to_metric_families\n"
    "text = open(sys.argv[1], encoding=\"utf-8\").read()\n"
    "for f in text_string_to_metric_families(text):\n"
    "    for s in f.samples:\n"
    "        print(f.type, s.name, json.dumps(s.labels, sort_keys=True), repr(float(s.value)))\n";

static void test_python_parser_accepts(void **state)
{
    (void)state;
    assert_int_equal(access("/usr/bin/python3", X_OK), 0); /* a missing python fails */
    js_metrics *m = new_metrics();
    js_metrics_request(m, "Sign", "evil\"caller\nx\\y", "deny", "policy.caller");
    for (int i = 0; i < 5; i++)
        js_metrics_request(m, "Sign", "svc-a", "allow", "ok");
    js_metrics_rate_limited(m, "svc-a");
    js_metrics_hsm_error(m);
    js_metrics_sign_latency(m, 1500);
    js_metrics_audit_batch(m, 7, 300);
    js_metrics_gauges g = {.incident_mode = 0,
                           .frozen_callers = 2,
                           .key_versions = {1, 1, 0, 0, 2},
                           .audit_healthy = 1,
                           .hsm_healthy = 1,
                           .audit_last_checkpoint_ms = 1765000000250};
    char *text = render(m, &g);

    char path[] = "/tmp/test_metrics_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);

    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '%s' %s 2>&1", k_parser, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[32768];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    unlink(path);
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
        fail_msg("python parser failed (%d):\n%s\n--- text ---\n%s", rc, out, text);

    assert_line(out, "counter jwt_signer_requests_total {\"caller\": \"svc-a\", \"decision\": "
                     "\"allow\", \"method\": \"Sign\", \"reason\": \"ok\"} 5.0");
    /* The quote, newline and backslash survive the round trip. */
    assert_line(out, "counter jwt_signer_requests_total {\"caller\": \"evil\\\"caller\\nx\\\\y\", "
                     "\"decision\": \"deny\", \"method\": \"Sign\", \"reason\": "
                     "\"policy.caller\"} 1.0");
    assert_line(out, "counter jwt_signer_rate_limited_total {\"caller\": \"svc-a\"} 1.0");
    assert_line(out, "counter jwt_signer_hsm_errors_total {} 1.0");
    assert_line(out, "histogram jwt_signer_sign_latency_seconds_bucket {\"le\": \"0.001\"} 0.0");
    assert_line(out, "histogram jwt_signer_sign_latency_seconds_bucket {\"le\": \"0.002\"} 1.0");
    assert_line(out, "histogram jwt_signer_sign_latency_seconds_bucket {\"le\": \"+Inf\"} 1.0");
    assert_line(out, "histogram jwt_signer_sign_latency_seconds_sum {} 0.0015");
    assert_line(out, "histogram jwt_signer_sign_latency_seconds_count {} 1.0");
    assert_line(out, "histogram jwt_signer_audit_batch_records_sum {} 7.0");
    assert_line(out, "histogram jwt_signer_audit_fsync_seconds_sum {} 0.0003");
    assert_line(out, "gauge jwt_signer_incident_mode {} 0.0");
    assert_line(out, "gauge jwt_signer_key_versions {\"state\": \"revoked\"} 2.0");
    assert_line(out, "gauge jwt_signer_hsm_healthy {} 1.0");
    assert_line(out, "gauge jwt_signer_frozen_callers {} 2.0");
    assert_line(out, "gauge jwt_signer_audit_last_checkpoint_timestamp_seconds {} 1765000000.25");
    free(text);
    js_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_add_up), cmocka_unit_test(test_cardinality_cap),
        cmocka_unit_test(test_label_escaping), cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_null_is_noop),   cmocka_unit_test(test_python_parser_accepts),
        cmocka_unit_test(test_sign_decisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
