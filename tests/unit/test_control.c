/*
 * test_control.c - the control plane (signer/core/control.h) against a real
 * SoftHSM token and a real audit log: freezing and unfreezing a caller and
 * incident mode are published at once and survive a restart (the state file
 * STATE_DIR/runtime.json round-trips); refusals (an untyped identity, a
 * reason with a control character) change neither memory nor the file;
 * ReloadPolicy of a file that does not load, or names an unknown key, is
 * FAILED_PRECONDITION (JS_ESTATE, never the start-up-only JS_ECONFIG) and
 * keeps the policy in force, a good file replaces it; RotateKey and
 * RevokeKey take plain C inputs and say what they did.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "config.h"
#include "control.h"
#include "frozen.h"
#include "hsm.h"
#include "keyring.h"
#include "policy_store.h"
#include "ratelimit.h"
#include "service.h"
#include "snapshot.h"
#include "test_token.h"
#include "test_audit_util.h"

#define TOKEN_LABEL "jscontrol"
#define PIN         TEST_TOKEN_PIN
#define URI         "pkcs11:token=" TOKEN_LABEL
#define KEY         "login-es256"
#define LABEL       "login"
#define ISSUER      "https://issuer.example"
#define APP         "spiffe://t/app"
#define ADMIN       "cn:admin"

#define POLICY(extra)                                                                              \
    "version: 1\n"                                                                                 \
    "issuer: \"" ISSUER "\"\n"                                                                     \
    "admins: [\"" ADMIN "\"]\n"                                                                    \
    "defaults:\n"                                                                                  \
    "  keys: [" KEY "]\n"                                                                          \
    "  max_ttl: 15m\n"                                                                             \
    "callers:\n"                                                                                   \
    "  - id: " APP "\n"                                                                            \
    "    audiences: [app]\n" extra

typedef struct fixture {
    char dir[64];
    char module[512];
    char policy_path[128];
    js_hsm *hsm;
    js_hsm_session *s;
    js_keyvault *kv;
    js_config *cfg;
    test_key audit_key;
    char audit_dir[64];
    js_audit *audit;
} fixture;

/* One control plane on a state directory, with everything it borrows. */
typedef struct plane {
    char state_dir[160];
    js_ratelimit *rl;
    js_service *svc;
    js_policy_store *policies;
    js_snapshot_store *frozen;
    js_snapshot_store *keys;
    js_control *ctl;
} plane;

static void ok(js_status st, const js_err *err)
{
    if (st != JS_OK)
        fail_msg("unexpected error: %s: %s", js_reason_name(err->reason), err->msg);
}

static int group_setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/js_control_test.XXXXXX");
    if (test_token_setup(f->dir, TOKEN_LABEL, f->module, sizeof(f->module)) != 0)
        goto fail;
    snprintf(f->policy_path, sizeof(f->policy_path), "%s/policy.yaml", f->dir);
    js_err err = {0};
    const char *kid = NULL;
    if (test_write_text(f->policy_path, POLICY("")) != 0 ||
        test_signer_config(f->dir, f->module, TOKEN_LABEL, KEY, LABEL, ISSUER, f->policy_path,
                           "test/control", &f->cfg, &err) != JS_OK ||
        js_hsm_open(f->module, URI, PIN, strlen(PIN), &f->hsm, &err) != JS_OK ||
        js_hsm_session_open(f->hsm, &f->s, &err) != JS_OK ||
        js_keyvault_new(f->hsm, f->s, &f->kv, &err) != JS_OK ||
        js_keyvault_generate(f->kv, LABEL, JS_ALG_ES256, 0, &kid, &err) != JS_OK) {
        fprintf(stderr, "set-up: %s: %s\n", js_reason_name(err.reason), err.msg);
        goto fail;
    }
    test_key_init(&f->audit_key);
    tmpdir_make(f->audit_dir, sizeof(f->audit_dir));
    js_audit_options o;
    test_opts(&o, f->audit_dir, &f->audit_key);
    if (js_audit_open(&o, &f->audit, &err) != JS_OK) {
        fprintf(stderr, "audit: %s: %s\n", js_reason_name(err.reason), err.msg);
        goto fail;
    }
    *state = f;
    return 0;
fail:
    free(f);
    return -1;
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    js_audit_close(f->audit);
    tmpdir_remove(f->audit_dir);
    test_key_free(&f->audit_key);
    js_keyvault_free(f->kv);
    js_hsm_session_free(f->s);
    js_hsm_free(f->hsm);
    js_config_free(f->cfg);
    int rc = test_token_teardown(f->dir);
    free(f);
    return rc == 0 ? 0 : -1;
}

static void keyring_free(void *p)
{
    js_keyring_free(p);
}

static void frozen_free(void *p)
{
    js_frozen_free(p);
}

/* Starts a control plane on state_dir, as jwt-signerd does at start-up. */
static void plane_start(const fixture *f, const char *state_dir, plane *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->state_dir, sizeof(p->state_dir), "%s", state_dir);
    js_err err = {0};
    js_policy *policy = NULL;
    ok(js_policy_load(f->policy_path, &policy, &err), &err);
    ok(js_ratelimit_new(64, &p->rl, &err), &err);
    ok(js_service_new(f->cfg, p->rl, NULL, NULL, &p->svc, &err), &err);
    ok(js_policy_store_new(policy, &p->policies, &err), &err);
    ok(js_snapshot_store_new(NULL, frozen_free, &p->frozen, &err), &err);
    ok(js_snapshot_store_new(NULL, keyring_free, &p->keys, &err), &err);
    js_control_deps deps = {
        .cfg = f->cfg,
        .svc = p->svc,
        .rl = p->rl,
        .policies = p->policies,
        .frozen = p->frozen,
        .audit = f->audit,
        .state_dir = p->state_dir,
        .vault = f->kv,
        .keys = p->keys,
        .prepublish = 300,
        .leeway = 60,
    };
    ok(js_control_new(&deps, &p->ctl, &err), &err);
}

static void plane_stop(plane *p)
{
    js_control_free(p->ctl);
    js_snapshot_store_free(p->keys);
    js_snapshot_store_free(p->frozen);
    js_policy_store_free(p->policies);
    js_service_free(p->svc);
    js_ratelimit_free(p->rl);
}

static bool is_frozen(plane *p, const char *identity)
{
    js_snapshot *snap = js_snapshot_store_acquire(p->frozen);
    bool yes = js_frozen_contains(js_snapshot_value(snap), identity);
    js_snapshot_release(snap);
    return yes;
}

static void policy_hash(plane *p, char out[65])
{
    js_policy_snapshot *snap = js_policy_store_acquire(p->policies);
    snprintf(out, 65, "%s", js_policy_hash_hex(js_policy_snapshot_get(snap)));
    js_policy_snapshot_release(snap);
}

/* STATE_DIR/runtime.json, parsed (NULL when absent). */
static json_t *runtime_of(const plane *p)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/runtime.json", p->state_dir);
    json_error_t je;
    return json_load_file(path, 0, &je);
}

static void state_dir(const fixture *f, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", f->dir, name);
}

/* ---- the tests --------------------------------------------------------------------- */

static void test_freeze_round_trip(void **state)
{
    fixture *f = *state;
    char dir[160];
    state_dir(f, "freeze", dir, sizeof(dir));
    plane p;
    plane_start(f, dir, &p);
    assert_false(is_frozen(&p, APP));
    js_err err = {0};
    ok(js_control_freeze(p.ctl, APP, true, ADMIN, "stolen certificate", &err), &err);
    assert_true(is_frozen(&p, APP));
    json_t *rt = runtime_of(&p);
    assert_non_null(rt);
    json_t *entry = json_object_get(json_object_get(rt, "frozen"), APP);
    assert_string_equal(json_string_value(json_object_get(entry, "by")), ADMIN);
    assert_string_equal(json_string_value(json_object_get(entry, "reason")), "stolen certificate");
    json_decref(rt);
    plane_stop(&p);

    /* A restart does not silently unfreeze a compromised caller. */
    plane_start(f, dir, &p);
    assert_true(is_frozen(&p, APP));
    ok(js_control_freeze(p.ctl, APP, false, ADMIN, "", &err), &err);
    assert_false(is_frozen(&p, APP));
    plane_stop(&p);
    plane_start(f, dir, &p);
    assert_false(is_frozen(&p, APP));
    rt = runtime_of(&p);
    assert_int_equal(json_object_size(json_object_get(rt, "frozen")), 0);
    json_decref(rt);
    plane_stop(&p);
}

static void test_freeze_refusals_change_nothing(void **state)
{
    fixture *f = *state;
    char dir[160];
    state_dir(f, "refusals", dir, sizeof(dir));
    plane p;
    plane_start(f, dir, &p);
    js_err err = {0};
    ok(js_control_freeze(p.ctl, APP, true, ADMIN, "", &err), &err);
    json_t *before = runtime_of(&p);
    /* An untyped identity could never match a caller. */
    assert_int_equal(js_control_freeze(p.ctl, "login.example", true, ADMIN, "", &err), JS_EINVAL);
    /* A control character would forge a log line. */
    assert_int_equal(js_control_freeze(p.ctl, "dns:x.example", true, ADMIN, "a\nb", &err),
                     JS_EINVAL);
    assert_int_equal(err.reason, JS_R_REQUEST_REASON);
    assert_false(is_frozen(&p, "dns:x.example"));
    json_t *after = runtime_of(&p);
    assert_true(json_equal(before, after));
    json_decref(before);
    json_decref(after);
    plane_stop(&p);
}

static void test_incident_round_trip(void **state)
{
    fixture *f = *state;
    char dir[160];
    state_dir(f, "incident", dir, sizeof(dir));
    plane p;
    plane_start(f, dir, &p);
    assert_false(js_control_incident(p.ctl));
    js_err err = {0};
    ok(js_control_set_incident(p.ctl, true, ADMIN, "key leak suspected", &err), &err);
    assert_true(js_control_incident(p.ctl));
    assert_true(js_ratelimit_incident(p.rl));
    json_t *rt = runtime_of(&p);
    assert_true(json_is_true(json_object_get(rt, "incident")));
    json_decref(rt);
    plane_stop(&p);

    /* A restart does not silently end an incident. */
    plane_start(f, dir, &p);
    assert_true(js_ratelimit_incident(p.rl));
    ok(js_control_set_incident(p.ctl, false, ADMIN, "", &err), &err);
    assert_false(js_ratelimit_incident(p.rl));
    plane_stop(&p);
    plane_start(f, dir, &p);
    assert_false(js_control_incident(p.ctl));
    plane_stop(&p);
}

static void test_reload_policy(void **state)
{
    fixture *f = *state;
    char dir[160];
    state_dir(f, "reload", dir, sizeof(dir));
    plane p;
    plane_start(f, dir, &p);
    char old_hash[65], hash[65];
    policy_hash(&p, old_hash);
    js_err err = {0};
    char sha[65] = "";

    /* Not a loadable policy: FAILED_PRECONDITION, the old policy stays. */
    assert_int_equal(test_write_text(f->policy_path, "version: 1\ncallers: [\n"), 0);
    assert_int_equal(js_control_reload_policy(p.ctl, ADMIN, sha, &err), JS_ESTATE);
    assert_int_equal(err.status, JS_ESTATE);
    assert_memory_equal(js_reason_name(err.reason), "policy.", 7);
    assert_non_null(strstr(err.msg, "policy not reloaded"));
    policy_hash(&p, hash);
    assert_string_equal(hash, old_hash);

    /* A key the signer does not have: the same, never the start-up-only
     * JS_ECONFIG (which the RPC layer answers INTERNAL). */
    assert_int_equal(test_write_text(f->policy_path, POLICY("    keys: [nowhere]\n")), 0);
    assert_int_equal(js_control_reload_policy(p.ctl, ADMIN, sha, &err), JS_ESTATE);
    assert_int_equal(err.reason, JS_R_POLICY_UNKNOWN_KEY);
    policy_hash(&p, hash);
    assert_string_equal(hash, old_hash);

    /* A good file replaces the policy in force and says its hash. */
    assert_int_equal(test_write_text(f->policy_path, POLICY("    max_ttl: 5m\n")), 0);
    ok(js_control_reload_policy(p.ctl, ADMIN, sha, &err), &err);
    policy_hash(&p, hash);
    assert_string_equal(sha, hash);
    assert_string_not_equal(hash, old_hash);
    assert_int_equal(test_write_text(f->policy_path, POLICY("")), 0);
    plane_stop(&p);
}

static void test_rotate_and_revoke(void **state)
{
    fixture *f = *state;
    char dir[160];
    state_dir(f, "keys", dir, sizeof(dir));
    plane p;
    plane_start(f, dir, &p);
    js_err err = {0};
    json_t *detail = json_object();
    js_rotate_result rot;
    assert_int_equal(js_control_rotate_key(p.ctl, "nowhere", "", ADMIN, &rot, detail, &err),
                     JS_ENOTFOUND);
    assert_int_equal(err.reason, JS_R_ADMIN_UNKNOWN_KEY);
    assert_int_equal(js_control_rotate_key(p.ctl, "", "", ADMIN, &rot, detail, &err), JS_EINVAL);
    assert_int_equal(err.reason, JS_R_REQUEST_KEY);

    /* Version 2 is pre-published; version 1 keeps signing meanwhile. */
    ok(js_control_rotate_key(p.ctl, KEY, "scheduled", ADMIN, &rot, detail, &err), &err);
    assert_int_equal(rot.version, 2);
    assert_true(rot.kid[0] != '\0');
    assert_false(rot.emergency);
    assert_true(rot.activate_at > 0);
    assert_string_equal(json_string_value(json_object_get(detail, "kid")), rot.kid);
    assert_int_equal(json_integer_value(json_object_get(detail, "version")), 2);
    json_decref(detail);

    /* Revoking the active version makes the pre-published one active at
     * once: an emergency activation, which the result says. */
    js_snapshot *snap = js_snapshot_store_acquire(p.keys);
    char kid1[JS_KS_KID_MAX + 1];
    snprintf(kid1, sizeof(kid1), "%s", js_key_kid(js_keyring_find(js_snapshot_value(snap), KEY)));
    js_snapshot_release(snap);
    assert_string_not_equal(kid1, rot.kid);
    detail = json_object();
    js_revoke_result rev;
    ok(js_control_revoke_key(p.ctl, KEY, kid1, "leaked", ADMIN, &rev, detail, &err), &err);
    assert_true(rev.revoked_at > 0);
    assert_string_equal(rev.active_kid, rot.kid);
    assert_true(rev.emergency);
    assert_true(json_is_true(json_object_get(detail, "emergency")));
    json_decref(detail);
    snap = js_snapshot_store_acquire(p.keys);
    assert_string_equal(js_key_kid(js_keyring_find(js_snapshot_value(snap), KEY)), rot.kid);
    js_snapshot_release(snap);
    plane_stop(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_freeze_round_trip),
        cmocka_unit_test(test_freeze_refusals_change_nothing),
        cmocka_unit_test(test_incident_round_trip),
        cmocka_unit_test(test_reload_policy),
        cmocka_unit_test(test_rotate_and_revoke),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
