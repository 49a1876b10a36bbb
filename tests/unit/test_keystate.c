/*
 * test_keystate.c - unit tests for the key lifecycle (signer/core/keystate.h) on an
 * injected clock: initial activation, rotation with pre-publication,
 * retirement, revocation (terminal, with and without a successor), events,
 * rotation-due reports, bounds, the lifetime cap, and the state file (round
 * trip, strict loading, crash safety of the atomic save).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keystate.h"

#define T0     1700000000LL
#define LIFE   3600 /* max_ttl + leeway returned by lifetime() */
#define PREPUB 300
#define KEY    "login-es256"
#define KID1   "kid-one"
#define KID2   "kid-two"
#define KID3   "kid-three"
#define LABEL1 "login"
#define LABEL2 "login.v2"
#define LABEL3 "login.v3"

typedef struct life_ctx {
    int64_t value;
    int calls;
} life_ctx;

static int64_t lifetime(const char *key, void *ctx)
{
    (void)key;
    life_ctx *c = ctx;
    c->calls++;
    return c->value;
}

static void ok(js_status st, const js_err *err)
{
    if (st != JS_OK)
        fail_msg("unexpected error: %s (%s)", err->msg, js_reason_name(err->reason));
}

static js_keystate *fresh(js_ks_events *ev)
{
    js_keystate *ks = NULL;
    js_err err = {0};
    ok(js_keystate_new(&ks, &err), &err);
    ok(js_keystate_ensure_initial(ks, KEY, LABEL1, "ES256", KID1, T0, ev, &err), &err);
    return ks;
}

static void tick(js_keystate *ks, int64_t now, js_ks_events *ev)
{
    life_ctx lc = {.value = LIFE};
    js_err err = {0};
    ok(js_keystate_tick(ks, now, lifetime, &lc, ev, &err), &err);
}

static js_key_state state_of(const js_keystate *ks, const char *kid)
{
    const js_keyver *v = js_keystate_find_kid(ks, kid, NULL);
    return v ? v->state : JS_KS_NONE;
}

static const char *active_kid(const js_keystate *ks)
{
    const js_keyver *v = NULL;
    js_err err = {0};
    if (js_keystate_active(ks, KEY, &v, &err) != JS_OK)
        return NULL;
    return v->kid;
}

static bool is_published(const js_keystate *ks, const char *kid)
{
    const js_keyver *pub[JS_KS_MAX_PUBLISHED];
    size_t n = 0;
    js_err err = {0};
    ok(js_keystate_published(ks, KEY, pub, &n, &err), &err);
    for (size_t i = 0; i < n; i++)
        if (strcmp(pub[i]->kid, kid) == 0)
            return true;
    return false;
}

static void expect_event(const js_ks_events *ev, size_t i, js_ks_event_kind kind, const char *kid,
                         js_key_state from, js_key_state to, int64_t at)
{
    if (i >= ev->count)
        fail_msg("event %zu missing (only %zu)", i, ev->count);
    const js_ks_event *e = &ev->ev[i];
    assert_int_equal(e->kind, kind);
    assert_string_equal(e->key, KEY);
    assert_string_equal(e->kid, kid);
    assert_int_equal(e->from, from);
    assert_int_equal(e->to, to);
    assert_int_equal(e->at, at);
}

static uint32_t rotate(js_keystate *ks, const char *label, const char *kid, int64_t now,
                       js_ks_events *ev)
{
    uint32_t ver = 0;
    js_err err = {0};
    ok(js_keystate_rotate(ks, KEY, label, "ES256", kid, now, PREPUB, &ver, ev, &err), &err);
    return ver;
}

/* ---- transitions ---------------------------------------------------------------------- */

static void test_initial_activation(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(&ev);
    assert_int_equal(ev.count, 1);
    expect_event(&ev, 0, JS_KS_EV_TRANSITION, KID1, JS_KS_NONE, JS_KS_ACTIVE, T0);
    assert_int_equal(ev.ev[0].version, 1);
    const js_keyver *v = NULL;
    js_err err = {0};
    ok(js_keystate_active(ks, KEY, &v, &err), &err);
    assert_int_equal(v->version, 1);
    assert_string_equal(v->label, LABEL1);
    assert_string_equal(v->alg, "ES256");
    assert_int_equal(v->activate_at, T0);

    /* Idempotent: a second start keeps the state and reports nothing. */
    ok(js_keystate_ensure_initial(ks, KEY, LABEL1, "ES256", KID1, T0 + 50, &ev, &err), &err);
    assert_int_equal(ev.count, 1);
    assert_int_equal(js_keystate_version_count(ks, 0), 1);

    /* Before the first tick the lifetime is unknown: fail closed. */
    int64_t capped = 0;
    assert_int_equal(js_keystate_cap_exp(ks, KEY, 1, T0, T0 + 60, &capped, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "keystate.lifetime_unknown");
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_kid_mismatch_on_ensure_initial(void **state)
{
    (void)state;
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    assert_int_equal(
        js_keystate_ensure_initial(ks, KEY, LABEL1, "ES256", "other-kid", T0, NULL, &err),
        JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "keystate.kid_mismatch");
    assert_non_null(strstr(err.msg, "other-kid"));
    /* A second key may not reuse a kid either. */
    assert_int_equal(
        js_keystate_ensure_initial(ks, "api-rs256", "api", "RS256", KID1, T0, NULL, &err),
        JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "keystate.duplicate_kid");
    js_keystate_free(ks);
}

static void test_rotation_with_prepublication(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(NULL);
    tick(ks, T0, &ev);
    assert_int_equal(ev.count, 0);

    int64_t r = T0 + 1000;
    assert_int_equal(rotate(ks, LABEL2, KID2, r, &ev), 2);
    expect_event(&ev, 0, JS_KS_EV_TRANSITION, KID2, JS_KS_NONE, JS_KS_NEXT, r);
    /* Published before it signs; the old one still signs. */
    assert_true(is_published(ks, KID2));
    assert_int_equal(state_of(ks, KID2), JS_KS_NEXT);
    assert_string_equal(active_kid(ks), KID1);
    assert_int_equal(js_keystate_find_kid(ks, KID2, NULL)->activate_at, r + PREPUB);

    /* One rotation at a time. */
    js_err err = {0};
    uint32_t ver = 0;
    assert_int_equal(
        js_keystate_rotate(ks, KEY, LABEL3, "ES256", KID3, r, PREPUB, &ver, NULL, &err), JS_ESTATE);
    assert_string_equal(js_reason_name(err.reason), "keystate.rotation_pending");

    tick(ks, r + PREPUB - 1, &ev);
    assert_int_equal(ev.count, 1);
    assert_string_equal(active_kid(ks), KID1);

    int64_t a = r + PREPUB;
    tick(ks, a, &ev);
    assert_int_equal(ev.count, 3);
    expect_event(&ev, 1, JS_KS_EV_TRANSITION, KID1, JS_KS_ACTIVE, JS_KS_RETIRING, a);
    expect_event(&ev, 2, JS_KS_EV_TRANSITION, KID2, JS_KS_NEXT, JS_KS_ACTIVE, a);
    assert_string_equal(active_kid(ks), KID2);
    const js_keyver *old = js_keystate_find_kid(ks, KID1, NULL);
    assert_int_equal(old->state, JS_KS_RETIRING);
    assert_int_equal(old->retire_at, a);
    assert_int_equal(old->unpublish_at, a + LIFE);
    assert_true(is_published(ks, KID1));

    /* The retiring version may not sign any more. */
    int64_t capped = 0;
    assert_int_equal(js_keystate_cap_exp(ks, KEY, 1, a, a + 60, &capped, &err), JS_EDENIED);

    tick(ks, a + LIFE - 1, &ev);
    assert_int_equal(ev.count, 3);
    assert_true(is_published(ks, KID1));
    tick(ks, a + LIFE, &ev);
    assert_int_equal(ev.count, 4);
    expect_event(&ev, 3, JS_KS_EV_TRANSITION, KID1, JS_KS_RETIRING, JS_KS_RETIRED, a + LIFE);
    assert_false(is_published(ks, KID1));
    assert_true(is_published(ks, KID2));

    /* Retired records are forgotten after JS_KS_RETIRED_KEEP. */
    tick(ks, a + LIFE + JS_KS_RETIRED_KEEP, &ev);
    assert_int_equal(ev.count, 5);
    expect_event(&ev, 4, JS_KS_EV_FORGOTTEN, KID1, JS_KS_RETIRED, JS_KS_RETIRED,
                 a + LIFE + JS_KS_RETIRED_KEEP);
    assert_null(js_keystate_find_kid(ks, KID1, NULL));
    /* ... but its kid still cannot be reused as version 1 of this key. */
    assert_int_equal(
        js_keystate_ensure_initial(ks, KEY, LABEL1, "ES256", "changed", T0, NULL, &err),
        JS_ECONFIG);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_cap_exp(void **state)
{
    (void)state;
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    life_ctx lc = {.value = LIFE};
    ok(js_keystate_tick(ks, T0, lifetime, &lc, NULL, &err), &err);
    int64_t capped = 0;
    ok(js_keystate_cap_exp(ks, KEY, 1, T0, T0 + 60, &capped, &err), &err);
    assert_int_equal(capped, T0 + 60);
    ok(js_keystate_cap_exp(ks, KEY, 1, T0, T0 + 10 * LIFE, &capped, &err), &err);
    assert_int_equal(capped, T0 + LIFE);

    /* The policy lowers the lifetime: the mark keeps the longer one, so a
     * token signed before still expires before the key is unpublished. */
    lc.value = 60;
    ok(js_keystate_tick(ks, T0 + 10, lifetime, &lc, NULL, &err), &err);
    int64_t signed_at = T0 + 20;
    ok(js_keystate_cap_exp(ks, KEY, 1, signed_at, signed_at + LIFE, &capped, &err), &err);
    assert_int_equal(capped, signed_at + LIFE);
    uint32_t ver = 0;
    ok(js_keystate_rotate(ks, KEY, LABEL2, "ES256", KID2, T0 + 30, 0, &ver, NULL, &err), &err);
    ok(js_keystate_tick(ks, T0 + 30, lifetime, &lc, NULL, &err), &err);
    const js_keyver *old = js_keystate_find_kid(ks, KID1, NULL);
    assert_int_equal(old->state, JS_KS_RETIRING);
    assert_true(old->unpublish_at >= capped);

    /* Out-of-range lifetimes fail the tick before anything changes. */
    lc.value = -1;
    assert_int_equal(js_keystate_tick(ks, T0 + 40, lifetime, &lc, NULL, &err), JS_EINTERNAL);
    assert_string_equal(js_reason_name(err.reason), "keystate.bad_lifetime");
    js_keystate_free(ks);
}

static void test_revoke_active_with_next(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(NULL);
    tick(ks, T0, NULL);
    rotate(ks, LABEL2, KID2, T0 + 10, NULL);
    js_err err = {0};
    ok(js_keystate_revoke(ks, KEY, KID1, T0 + 20, "leaked in a log", &ev, &err), &err);
    assert_int_equal(ev.count, 2);
    expect_event(&ev, 0, JS_KS_EV_TRANSITION, KID1, JS_KS_ACTIVE, JS_KS_REVOKED, T0 + 20);
    expect_event(&ev, 1, JS_KS_EV_TRANSITION, KID2, JS_KS_NEXT, JS_KS_ACTIVE, T0 + 20);
    /* Promoted before its pre-publication ended: an emergency activation. */
    assert_false(ev.ev[0].emergency);
    assert_true(ev.ev[1].emergency);
    assert_string_equal(active_kid(ks), KID2);
    assert_false(is_published(ks, KID1));
    const js_keyver *r = js_keystate_find_kid(ks, KID1, NULL);
    assert_string_equal(r->reason, "leaked in a log");
    assert_int_equal(r->revoked_at, T0 + 20);
    /* The promoted version can sign at once (inherited lifetime mark). */
    int64_t capped = 0;
    ok(js_keystate_cap_exp(ks, KEY, 2, T0 + 20, T0 + 80, &capped, &err), &err);
    assert_int_equal(capped, T0 + 80);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_revoke_active_without_next(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(NULL);
    tick(ks, T0, NULL);
    js_err err = {0};
    ok(js_keystate_revoke(ks, KEY, KID1, T0 + 5, "", &ev, &err), &err);
    assert_int_equal(ev.count, 1);
    const js_keyver *v = NULL;
    assert_int_equal(js_keystate_active(ks, KEY, &v, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "keystate.no_active");
    /* The refusal says what to do about it. */
    assert_non_null(strstr(err.msg, "RotateKey"));
    assert_non_null(strstr(err.msg, "active immediately"));
    assert_null(v);
    /* A restart does not bring version 1 back. */
    ok(js_keystate_ensure_initial(ks, KEY, LABEL1, "ES256", KID1, T0 + 6, &ev, &err), &err);
    assert_int_equal(ev.count, 1);
    assert_null(active_kid(ks));
    /* No automatic rotation for a revoked key: a human decides. */
    ok(js_keystate_set_rotation(ks, KEY, 60, &err), &err);
    tick(ks, T0 + 1000, &ev);
    assert_int_equal(ev.count, 1);
    /* The rotation is an emergency: signing resumes at the next tick, not
     * after the pre-publication delay (test_emergency_rotation). */
    rotate(ks, LABEL2, KID2, T0 + 1000, NULL);
    tick(ks, T0 + 1000, &ev);
    assert_string_equal(active_kid(ks), KID2);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

/* Revoke with no successor, then rotate: the key could not sign at all, so
 * the new version is active at once (no pre-publication wait), the events
 * say emergency, and it can sign (its lifetime is sampled by the tick). */
static void test_emergency_rotation(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(NULL);
    tick(ks, T0, NULL);
    js_err err = {0};
    ok(js_keystate_revoke(ks, KEY, KID1, T0 + 5, "leaked", NULL, &err), &err);
    assert_null(active_kid(ks));

    uint32_t ver = rotate(ks, LABEL2, KID2, T0 + 10, &ev);
    assert_int_equal(ver, 2);
    assert_int_equal(ev.count, 1);
    expect_event(&ev, 0, JS_KS_EV_TRANSITION, KID2, JS_KS_NONE, JS_KS_NEXT, T0 + 10);
    assert_true(ev.ev[0].emergency);
    const js_keyver *v = js_keystate_find_kid(ks, KID2, NULL);
    assert_int_equal(v->activate_at, T0 + 10); /* not T0 + 10 + PREPUB */
    assert_true(is_published(ks, KID2));

    tick(ks, T0 + 10, &ev);
    assert_int_equal(ev.count, 2);
    expect_event(&ev, 1, JS_KS_EV_TRANSITION, KID2, JS_KS_NEXT, JS_KS_ACTIVE, T0 + 10);
    assert_true(ev.ev[1].emergency);
    assert_string_equal(active_kid(ks), KID2);
    int64_t capped = 0;
    ok(js_keystate_cap_exp(ks, KEY, 2, T0 + 10, T0 + 70, &capped, &err), &err);
    assert_int_equal(capped, T0 + 70);

    /* The next, ordinary rotation waits out its pre-publication again and
     * is no emergency. */
    js_ks_events ev2 = {0};
    rotate(ks, LABEL3, KID3, T0 + 20, &ev2);
    tick(ks, T0 + 21, &ev2);
    assert_string_equal(active_kid(ks), KID2);
    tick(ks, T0 + 20 + PREPUB, &ev2);
    assert_string_equal(active_kid(ks), KID3);
    for (size_t i = 0; i < ev2.count; i++)
        assert_false(ev2.ev[i].emergency);
    js_ks_events_cleanup(&ev2);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

/* A state file written before emergency rotations existed: the active
 * version revoked, a `next` waiting for its (late) activate_at. The tick
 * activates it at once, as an emergency, instead of leaving the key unable
 * to sign. */
static void test_emergency_heals_waiting_next(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_keystate_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/keys.json", dir);
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"format\":\"" JS_KS_FORMAT "\",\"version\":1,\"keys\":[{\"name\":\"" KEY
             "\",\"initial_kid\":\"" KID1 "\",\"last_version\":2,\"rotation_period\":0,"
             "\"versions\":["
             "{\"version\":1,\"label\":\"" LABEL1 "\",\"alg\":\"ES256\",\"kid\":\"" KID1
             "\",\"state\":\"revoked\",\"created\":%lld,\"publish_at\":%lld,"
             "\"activate_at\":%lld,\"retire_at\":0,\"unpublish_at\":0,\"revoked_at\":%lld,"
             "\"lifetime\":%d,\"reason\":\"leaked\"},"
             "{\"version\":2,\"label\":\"" LABEL2 "\",\"alg\":\"ES256\",\"kid\":\"" KID2
             "\",\"state\":\"next\",\"created\":%lld,\"publish_at\":%lld,"
             "\"activate_at\":%lld,\"retire_at\":0,\"unpublish_at\":0,\"revoked_at\":0,"
             "\"lifetime\":0,\"reason\":\"\"}]}]}",
             T0, T0, T0, T0 + 5, LIFE, T0 + 10, T0 + 10, T0 + 10 + PREPUB);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    js_keystate *ks = NULL;
    js_err err = {0};
    ok(js_keystate_load(path, &ks, &err), &err);
    assert_null(active_kid(ks));
    js_ks_events ev = {0};
    tick(ks, T0 + 11, &ev);
    assert_string_equal(active_kid(ks), KID2);
    assert_int_equal(ev.count, 1);
    expect_event(&ev, 0, JS_KS_EV_TRANSITION, KID2, JS_KS_NEXT, JS_KS_ACTIVE, T0 + 11);
    assert_true(ev.ev[0].emergency);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
    unlink(path);
    rmdir(dir);
}

static void test_revoke_retiring_and_terminal(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(NULL);
    tick(ks, T0, NULL);
    rotate(ks, LABEL2, KID2, T0, NULL);
    tick(ks, T0 + PREPUB, NULL);
    assert_int_equal(state_of(ks, KID1), JS_KS_RETIRING);
    js_err err = {0};
    ok(js_keystate_revoke(ks, KEY, KID1, T0 + PREPUB + 1, "suspect", &ev, &err), &err);
    assert_int_equal(ev.count, 1);
    expect_event(&ev, 0, JS_KS_EV_TRANSITION, KID1, JS_KS_RETIRING, JS_KS_REVOKED, T0 + PREPUB + 1);
    assert_false(is_published(ks, KID1));
    assert_string_equal(active_kid(ks), KID2);

    /* Terminal: revoking again changes nothing, ticks never move it, and
     * it is kept JS_KS_REVOKED_KEEP, then forgotten. */
    ok(js_keystate_revoke(ks, KEY, KID1, T0 + PREPUB + 2, "again", &ev, &err), &err);
    assert_int_equal(ev.count, 1);
    assert_string_equal(js_keystate_find_kid(ks, KID1, NULL)->reason, "suspect");
    int64_t rv = T0 + PREPUB + 1;
    tick(ks, rv + JS_KS_REVOKED_KEEP - 1, &ev);
    assert_int_equal(state_of(ks, KID1), JS_KS_REVOKED);
    for (size_t i = 1; i < ev.count; i++)
        assert_true(strcmp(ev.ev[i].kid, KID1) != 0);
    size_t before = ev.count;
    tick(ks, rv + JS_KS_REVOKED_KEEP, &ev);
    assert_int_equal(ev.count, before + 1);
    expect_event(&ev, before, JS_KS_EV_FORGOTTEN, KID1, JS_KS_REVOKED, JS_KS_REVOKED,
                 rv + JS_KS_REVOKED_KEEP);

    /* A revoked next never becomes active. */
    rotate(ks, LABEL3, KID3, rv, NULL);
    ok(js_keystate_revoke(ks, KEY, KID3, rv + 1, "bad", NULL, &err), &err);
    tick(ks, rv + PREPUB + 10, NULL);
    assert_int_equal(state_of(ks, KID3), JS_KS_REVOKED);
    assert_string_equal(active_kid(ks), KID2);

    assert_int_equal(js_keystate_revoke(ks, KEY, "nope", rv, "", NULL, &err), JS_ENOTFOUND);
    assert_int_equal(js_keystate_revoke(ks, KEY, KID2, rv, "bad\nline", NULL, &err), JS_EINVAL);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_rotation_due_events(void **state)
{
    (void)state;
    js_ks_events ev = {0};
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    ok(js_keystate_set_rotation(ks, KEY, 86400, &err), &err);
    assert_int_equal(js_keystate_set_rotation(ks, KEY, -1, &err), JS_EINVAL);
    assert_int_equal(js_keystate_set_rotation(ks, "nope", 1, &err), JS_ENOTFOUND);
    tick(ks, T0 + 86399, &ev);
    assert_int_equal(ev.count, 0);
    tick(ks, T0 + 86400, &ev);
    assert_int_equal(ev.count, 1);
    expect_event(&ev, 0, JS_KS_EV_ROTATION_DUE, KID1, JS_KS_ACTIVE, JS_KS_ACTIVE, T0 + 86400);
    /* Reported again until the caller rotates; then not while next waits. */
    tick(ks, T0 + 86401, &ev);
    assert_int_equal(ev.count, 2);
    rotate(ks, LABEL2, KID2, T0 + 86402, &ev);
    tick(ks, T0 + 86403, &ev);
    assert_int_equal(ev.count, 3);
    assert_int_equal(ev.ev[2].to, JS_KS_NEXT);
    /* The period counts from the new activation. */
    tick(ks, T0 + 86402 + PREPUB, &ev);
    assert_string_equal(active_kid(ks), KID2);
    size_t n = ev.count;
    tick(ks, T0 + 86402 + PREPUB + 86399, &ev);
    for (size_t i = n; i < ev.count; i++)
        assert_int_not_equal(ev.ev[i].kind, JS_KS_EV_ROTATION_DUE);
    js_ks_events_cleanup(&ev);
    js_keystate_free(ks);
}

static void test_bounded_versions(void **state)
{
    (void)state;
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    life_ctx lc = {.value = 10 * 86400}; /* long lifetime: retiring ones pile up */
    int64_t now = T0;
    ok(js_keystate_tick(ks, now, lifetime, &lc, NULL, &err), &err);
    char kid[32], label[32];
    for (int i = 2; i <= JS_KS_MAX_PUBLISHED; i++) {
        snprintf(kid, sizeof(kid), "kid-%d", i);
        snprintf(label, sizeof(label), "login.v%d", i);
        uint32_t ver = 0;
        ok(js_keystate_rotate(ks, KEY, label, "ES256", kid, now, 0, &ver, NULL, &err), &err);
        assert_int_equal(ver, (uint32_t)i);
        ok(js_keystate_tick(ks, now, lifetime, &lc, NULL, &err), &err);
        now += 60;
    }
    const js_keyver *pub[JS_KS_MAX_PUBLISHED];
    size_t n = 0;
    ok(js_keystate_published(ks, KEY, pub, &n, &err), &err);
    assert_int_equal(n, JS_KS_MAX_PUBLISHED);
    uint32_t ver = 0;
    assert_int_equal(
        js_keystate_rotate(ks, KEY, "login.vX", "ES256", "kid-x", now, 0, &ver, NULL, &err),
        JS_ELIMIT);
    assert_string_equal(js_reason_name(err.reason), "keystate.too_many_published");

    /* Revoked kids are never dropped early to make room for records. */
    js_keystate_free(ks);
    ks = fresh(NULL);
    lc.value = 60;
    now = T0;
    ok(js_keystate_tick(ks, now, lifetime, &lc, NULL, &err), &err);
    for (int i = 2; i <= JS_KS_MAX_VERSIONS; i++) {
        snprintf(kid, sizeof(kid), "kid-%d", i);
        snprintf(label, sizeof(label), "login.v%d", i);
        ok(js_keystate_rotate(ks, KEY, label, "ES256", kid, now, 0, &ver, NULL, &err), &err);
        ok(js_keystate_revoke(ks, KEY, kid, now, "test", NULL, &err), &err);
        now += 1;
    }
    assert_int_equal(js_keystate_version_count(ks, 0), JS_KS_MAX_VERSIONS);
    assert_int_equal(
        js_keystate_rotate(ks, KEY, "login.vY", "ES256", "kid-y", now, 0, &ver, NULL, &err),
        JS_ELIMIT);
    assert_string_equal(js_reason_name(err.reason), "keystate.too_many_versions");
    size_t counts[JS_KS_STATE_COUNT];
    js_keystate_counts(ks, counts);
    assert_int_equal(counts[JS_KS_ACTIVE], 1);
    assert_int_equal(counts[JS_KS_REVOKED], JS_KS_MAX_VERSIONS - 1);
    /* After the keep period, the next tick forgets them and rotation works;
     * version numbers are not reused, even those of forgotten records. */
    ok(js_keystate_tick(ks, now + JS_KS_REVOKED_KEEP, lifetime, &lc, NULL, &err), &err);
    assert_int_equal(js_keystate_version_count(ks, 0), 1);
    assert_int_equal(js_keystate_next_version(ks, KEY), JS_KS_MAX_VERSIONS + 1);
    assert_int_equal(js_keystate_next_version(ks, "unknown"), 1);
    ok(js_keystate_rotate(ks, KEY, "login.vY", "ES256", "kid-y", now + JS_KS_REVOKED_KEEP, 0, &ver,
                          NULL, &err),
       &err);
    assert_int_equal(ver, JS_KS_MAX_VERSIONS + 1);
    js_keystate_free(ks);
}

static void test_input_validation(void **state)
{
    (void)state;
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    uint32_t ver = 0;
    assert_int_equal(js_keystate_rotate(ks, "nope", LABEL2, "ES256", KID2, T0, 0, &ver, NULL, &err),
                     JS_ENOTFOUND);
    assert_int_equal(js_keystate_rotate(ks, KEY, LABEL2, "ES256", KID1, T0, 0, &ver, NULL, &err),
                     JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "keystate.duplicate_kid");
    assert_int_equal(js_keystate_rotate(ks, KEY, LABEL1, "ES256", KID2, T0, 0, &ver, NULL, &err),
                     JS_EINVAL);
    assert_string_equal(js_reason_name(err.reason), "keystate.duplicate_label");
    assert_int_equal(js_keystate_rotate(ks, KEY, LABEL2, "ES256", "a b", T0, 0, &ver, NULL, &err),
                     JS_EINVAL);
    assert_int_equal(js_keystate_rotate(ks, KEY, LABEL2, "ES256", KID2, T0, -1, &ver, NULL, &err),
                     JS_EINVAL);
    assert_int_equal(js_keystate_rotate(ks, KEY, LABEL2, "ES256", KID2, 0, 0, &ver, NULL, &err),
                     JS_EINVAL);
    assert_int_equal(js_keystate_ensure_initial(ks, "bad name", "x", "ES256", "k", T0, NULL, &err),
                     JS_EINVAL);
    js_keystate_free(ks);
}

/* ---- persistence ---------------------------------------------------------------------- */

static char g_dir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/test_keystate.XXXXXX");
    return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Every state in one key, and a second key with a rotation period. */
static js_keystate *all_states(void)
{
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    tick(ks, T0, NULL);
    rotate(ks, LABEL2, KID2, T0, NULL);
    tick(ks, T0 + PREPUB, NULL);                         /* 1 retiring, 2 active */
    tick(ks, T0 + PREPUB + LIFE, NULL);                  /* 1 retired */
    rotate(ks, LABEL3, KID3, T0 + 5000, NULL);           /* 3 next */
    tick(ks, T0 + 5000 + PREPUB, NULL);                  /* 2 retiring, 3 active */
    rotate(ks, "login.v4", "kid-four", T0 + 6000, NULL); /* 4 next */
    ok(js_keystate_ensure_initial(ks, "api-rs256", "api", "RS256", "kid-api", T0, NULL, &err),
       &err);
    ok(js_keystate_set_rotation(ks, "api-rs256", 1209600, &err), &err);
    ok(js_keystate_revoke(ks, "api-rs256", "kid-api", T0 + 7000, "leaked \"key\" \\ test", NULL,
                          &err),
       &err);
    return ks;
}

static void assert_same(const js_keystate *a, const js_keystate *b)
{
    assert_int_equal(js_keystate_key_count(a), js_keystate_key_count(b));
    for (size_t i = 0; i < js_keystate_key_count(a); i++) {
        assert_string_equal(js_keystate_key_name(a, i), js_keystate_key_name(b, i));
        assert_int_equal(js_keystate_key_rotation(a, i), js_keystate_key_rotation(b, i));
        assert_int_equal(js_keystate_version_count(a, i), js_keystate_version_count(b, i));
        for (size_t j = 0; j < js_keystate_version_count(a, i); j++) {
            const js_keyver *x = js_keystate_version_at(a, i, j);
            const js_keyver *y = js_keystate_version_at(b, i, j);
            assert_int_equal(x->version, y->version);
            assert_string_equal(x->label, y->label);
            assert_string_equal(x->alg, y->alg);
            assert_string_equal(x->kid, y->kid);
            assert_string_equal(x->reason, y->reason);
            assert_int_equal(x->state, y->state);
            assert_int_equal(x->created, y->created);
            assert_int_equal(x->publish_at, y->publish_at);
            assert_int_equal(x->activate_at, y->activate_at);
            assert_int_equal(x->retire_at, y->retire_at);
            assert_int_equal(x->unpublish_at, y->unpublish_at);
            assert_int_equal(x->revoked_at, y->revoked_at);
            assert_int_equal(x->lifetime, y->lifetime);
        }
    }
}

static void test_save_load_round_trip(void **state)
{
    (void)state;
    char path[128];
    path_in_dir(path, sizeof(path), "keys.json");
    js_keystate *ks = all_states();
    size_t counts[JS_KS_STATE_COUNT];
    js_keystate_counts(ks, counts);
    assert_int_equal(counts[JS_KS_NEXT], 1);
    assert_int_equal(counts[JS_KS_ACTIVE], 1);
    assert_int_equal(counts[JS_KS_RETIRING], 1);
    assert_int_equal(counts[JS_KS_RETIRED], 1);
    assert_int_equal(counts[JS_KS_REVOKED], 1);

    js_err err = {0};
    ok(js_keystate_save(ks, path, &err), &err);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    js_keystate *back = NULL;
    ok(js_keystate_load(path, &back, &err), &err);
    assert_same(ks, back);

    /* The revoked key is still revoked after a restart: ensure_initial with
     * the same token key does not bring it back, and it cannot sign. */
    ok(js_keystate_ensure_initial(back, "api-rs256", "api", "RS256", "kid-api", T0 + 8000, NULL,
                                  &err),
       &err);
    const js_keyver *v = NULL;
    assert_int_equal(js_keystate_active(back, "api-rs256", &v, &err), JS_EUNAVAIL);
    assert_int_equal(js_keystate_find_kid(back, "kid-api", NULL)->state, JS_KS_REVOKED);
    /* The loaded state keeps working: version numbers continue. */
    tick(back, T0 + 6000 + PREPUB, NULL);
    assert_string_equal(active_kid(back), "kid-four");
    js_keystate_free(back);

    /* A label is the HSM-label kind of name (names.h), as the configuration
     * accepts it: printable ASCII, spaces included; a control character is
     * refused and changes nothing. */
    js_keystate *sp = NULL;
    ok(js_keystate_new(&sp, &err), &err);
    ok(js_keystate_ensure_initial(sp, "spaced", "login key", "ES256", "kid-sp", T0, NULL, &err),
       &err);
    assert_int_equal(
        js_keystate_ensure_initial(sp, "ctl", "login\tkey", "ES256", "kid-ctl", T0, NULL, &err),
        JS_EINVAL);
    assert_int_equal(err.reason, JS_R_KEYSTATE_BAD_LABEL);
    assert_int_equal(js_keystate_key_count(sp), 1);
    path_in_dir(path, sizeof(path), "spaced.json");
    ok(js_keystate_save(sp, path, &err), &err);
    ok(js_keystate_load(path, &back, &err), &err);
    assert_same(sp, back);
    assert_string_equal(js_keystate_find_kid(back, "kid-sp", NULL)->label, "login key");
    js_keystate_free(back);
    js_keystate_free(sp);

    /* A missing file is an empty state. */
    path_in_dir(path, sizeof(path), "missing.json");
    ok(js_keystate_load(path, &back, &err), &err);
    assert_int_equal(js_keystate_key_count(back), 0);
    js_keystate_free(back);
    js_keystate_free(ks);
}

static void test_save_crash_safety(void **state)
{
    (void)state;
    char path[128], stale[160];
    path_in_dir(path, sizeof(path), "crash.json");
    js_keystate *ks = fresh(NULL);
    js_err err = {0};
    ok(js_keystate_save(ks, path, &err), &err);

    /* A crash after the temp file was (partly) written, before the rename:
     * the stale temp file has the name the next save would pick first. */
    snprintf(stale, sizeof(stale), "%s.tmp.%ld.0", path, (long)getpid());
    write_file(stale, "{\"format\": \"jwt-sig", 19);
    js_keystate *back = NULL;
    ok(js_keystate_load(path, &back, &err), &err);
    assert_same(ks, back);
    js_keystate_free(back);

    /* The next save is not confused by it (O_EXCL picks another name) and
     * replaces the target whole. */
    rotate(ks, LABEL2, KID2, T0 + 10, NULL);
    ok(js_keystate_save(ks, path, &err), &err);
    ok(js_keystate_load(path, &back, &err), &err);
    assert_same(ks, back);
    assert_int_equal(js_keystate_find_kid(back, KID2, NULL)->state, JS_KS_NEXT);
    js_keystate_free(back);
    /* The stale file is untouched (not followed, not truncated). */
    struct stat sb;
    assert_int_equal(stat(stale, &sb), 0);
    assert_int_equal(sb.st_size, 19);

    /* A save that cannot complete leaves the old file as it was. */
    char bad_path[160];
    path_in_dir(bad_path, sizeof(bad_path), "no-such-dir/keys.json");
    assert_int_equal(js_keystate_save(ks, bad_path, &err), JS_EUNAVAIL);
    assert_string_equal(js_reason_name(err.reason), "keystate.io");
    js_keystate_free(ks);
}

typedef struct bad_case {
    const char *text;
    const char *reason;
    const char *where; /* substring of the message */
} bad_case;

#define V_OK                                                                                       \
    "\"version\":1,\"label\":\"l\",\"alg\":\"ES256\",\"kid\":\"k\",\"created\":1,"                 \
    "\"publish_at\":1,\"activate_at\":1,\"retire_at\":0,\"unpublish_at\":0,\"revoked_at\":0,"      \
    "\"lifetime\":0,\"reason\":\"\""
#define HEAD "{\"format\":\"jwt-signer-keystate\",\"version\":1,\"keys\":"
#define KEYH "[{\"name\":\"a\",\"initial_kid\":\"k\",\"last_version\":1,\"rotation_period\":0,"

static void test_load_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"{\"format\": ", "keystate.malformed", ":1:"},
        {"[]", "keystate.type", "top level"},
        {HEAD "[]", "keystate.malformed", ":1:"},
        {"{\"format\":\"jwt-signer-keystate\",\"version\":1}", "keystate.missing_member", "keys"},
        {HEAD "[], \"extra\": 1}", "keystate.unknown_member", "extra"},
        {"{\"format\":\"other\",\"version\":1,\"keys\":[]}", "keystate.format", "format"},
        {"{\"format\":\"jwt-signer-keystate\",\"version\":2,\"keys\":[]}", "keystate.format",
         "version"},
        {"{\"format\":\"jwt-signer-keystate\",\"version\":\"1\",\"keys\":[]}", "keystate.type",
         "version"},
        {HEAD "{}}", "keystate.type", "keys"},
        {HEAD "[1]}", "keystate.type", "keys[0]"},
        {HEAD KEYH "\"versions\":{}}]}", "keystate.type", "keys[0].versions"},
        {HEAD KEYH "\"versions\":[{" V_OK ",\"state\":\"frozen\"}]}]}", "keystate.unknown_state",
         "keys[0].versions[0].state"},
        {HEAD KEYH "\"versions\":[{" V_OK ",\"state\":1}]}]}", "keystate.type",
         "keys[0].versions[0].state"},
        {HEAD KEYH "\"versions\":[{" V_OK "}]}]}", "keystate.missing_member", "state"},
        {HEAD KEYH "\"versions\":[{" V_OK ",\"state\":\"revoked\"}]}]}", "keystate.invalid",
         "revoked_at"},
        {HEAD KEYH "\"versions\":[{" V_OK ",\"state\":\"active\",\"state\":\"next\"}]}]}",
         "keystate.malformed", "duplicate"},
        {HEAD KEYH "\"versions\":[{" V_OK ",\"state\":\"active\"},{" V_OK
                   ",\"state\":\"active\"}]}]}",
         "keystate.invalid", "keys[0].versions[1]"},
        {HEAD "[{\"name\":\"a\",\"initial_kid\":\"k\",\"last_version\":1.5,\"rotation_period\":0,"
              "\"versions\":[]}]}",
         "keystate.type", "last_version"},
        {HEAD "[{\"name\":\"a\",\"initial_kid\":\"k\",\"last_version\":1,\"rotation_period\":-5,"
              "\"versions\":[]}]}",
         "keystate.range", "rotation_period"},
        {HEAD "[{\"name\":\"a b\",\"initial_kid\":\"k\",\"last_version\":1,\"rotation_period\":0,"
              "\"versions\":[]}]}",
         "keystate.invalid", "name"},
    };
    char path[128];
    path_in_dir(path, sizeof(path), "bad.json");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_case *c = &cases[i];
        write_file(path, c->text, strlen(c->text));
        js_keystate *ks = NULL;
        js_err err = {0};
        js_status st = js_keystate_load(path, &ks, &err);
        if (st == JS_OK)
            fail_msg("case %zu loaded: %s", i, c->text);
        assert_null(ks);
        assert_int_equal(st, JS_ECONFIG);
        if (strcmp(js_reason_name(err.reason), c->reason) != 0)
            fail_msg("case %zu: reason %s, want %s (%s)", i, js_reason_name(err.reason), c->reason,
                     err.msg);
        if (strstr(err.msg, c->where) == NULL)
            fail_msg("case %zu: message '%s' does not name '%s'", i, err.msg, c->where);
        if (strstr(err.msg, path) == NULL)
            fail_msg("case %zu: message '%s' does not name the file", i, err.msg);
    }

    /* Oversized file: refused before parsing. */
    size_t big = JS_KS_FILE_MAX + 1;
    char *buf = malloc(big);
    assert_non_null(buf);
    memset(buf, ' ', big);
    write_file(path, buf, big);
    free(buf);
    js_keystate *ks = NULL;
    js_err err = {0};
    assert_int_equal(js_keystate_load(path, &ks, &err), JS_ECONFIG);
    assert_string_equal(js_reason_name(err.reason), "keystate.too_large");

    /* A directory is not a state file. */
    assert_int_equal(js_keystate_load(g_dir, &ks, &err), JS_ECONFIG);
    assert_null(ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initial_activation),
        cmocka_unit_test(test_kid_mismatch_on_ensure_initial),
        cmocka_unit_test(test_rotation_with_prepublication),
        cmocka_unit_test(test_cap_exp),
        cmocka_unit_test(test_revoke_active_with_next),
        cmocka_unit_test(test_revoke_active_without_next),
        cmocka_unit_test(test_revoke_retiring_and_terminal),
        cmocka_unit_test(test_rotation_due_events),
        cmocka_unit_test(test_emergency_rotation),
        cmocka_unit_test(test_emergency_heals_waiting_next),
        cmocka_unit_test(test_bounded_versions),
        cmocka_unit_test(test_input_validation),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_save_crash_safety),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
