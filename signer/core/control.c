/*
 * control.c - run-time changes: policy reload, incident mode, frozen callers
 * (see control.h). Changes are serialised by one mutex, audited, published as
 * snapshots, and the run-time state is persisted with write-temp, fsync,
 * rename, fsync-dir so a crash leaves either the old or the new file.
 */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <time.h>

#include "checkpoint.h"
#include "identity.h"
#include "lifecycle.h"
#include "logline.h"
#include "statefile.h"
#include "text.h"

#define RUNTIME_FILE      "runtime.json"
#define KEYSTATE_FILE     "keys.json"
#define RUNTIME_MAX_BYTES (1024 * 1024)

struct js_control {
    js_control_deps d;
    pthread_mutex_t mu;
    json_t *runtime; /* {"incident":bool,"frozen":{identity:{"by","reason","at"}}} */
    char path[4096];
    js_keystate *ks; /* only touched under mu */
    char ks_path[4096];
};

/* One audit record of a control-plane change or refusal (lifecycle.h): a
 * change of state is durable before the reply that reports it; a refusal is
 * only queued. */
static void audit_event(js_control *ctl, js_lifecycle_mode mode, const char *type,
                        const char *caller, const char *decision, const js_err *why, json_t *detail)
{
    /* A record the log refuses is logged as audit_record_lost there; the
     * daemon refuses tokens by itself while the log is failing. */
    (void)js_lifecycle_audit(ctl->d.audit, mode, type, caller, decision, why, detail);
}

/* A message that filled the whole buffer was probably cut by snprintf, maybe
 * mid-word: end it at the last word boundary with an ellipsis instead, so a
 * reader sees that something is missing. */
static void msg_clean_cut(js_err *err)
{
    static const char ellipsis[] = " ...";
    size_t n = strnlen(err->msg, sizeof(err->msg));
    if (n + 1 < sizeof(err->msg))
        return;
    size_t cut = sizeof(err->msg) - sizeof(ellipsis);
    while (cut > 0 && err->msg[cut - 1] != ' ' && err->msg[cut - 1] != ',')
        cut--;
    while (cut > 0 && (err->msg[cut - 1] == ' ' || err->msg[cut - 1] == ','))
        cut--;
    if (cut == 0)
        cut = sizeof(err->msg) - sizeof(ellipsis);
    /* Never leave half of a UTF-8 sequence before the ellipsis. */
    while (cut > 0 && ((unsigned char)err->msg[cut] & 0xC0u) == 0x80u)
        cut--;
    memcpy(err->msg + cut, ellipsis, sizeof(ellipsis));
}

js_status js_admin_text(const char *what, const char *s, size_t max, bool required, js_err *err)
{
    /* request.identity, request.reason, request.key, request.kid (reasons.def) */
    js_reason reason = js_reason_lookup("request", what);
    /* A C string: the RPC layer refuses a text field with an embedded NUL
     * before it unpacks the request (signer/rpc/pbcheck.h), so strlen is the
     * field's whole length. */
    size_t n = s != NULL ? strlen(s) : 0;
    JS_ENSURE(n > 0 || !required, err, JS_EINVAL, reason, "%s is required", what);
    /* Clean text (text.h): no Cc control character forges a log line, no Cf
     * format character makes two values look alike on an operator's screen. */
    return js_text_check(what, s, n, max, JS_EINVAL, reason, err);
}

void js_control_audit_admin(js_control *ctl, const char *admin, const char *action,
                            const js_decision *d, json_t *detail)
{
    if (detail == NULL)
        detail = json_object();
    json_object_set_new(detail, "action", json_string(action));
    /* Only an allowed action changed anything; its record is durable before
     * the reply. Every refusal (not an admin, malformed, invalid, failed) is
     * queued without waiting for the disk. */
    bool allowed = d->kind == JS_DECISION_ALLOW;
    js_err why;
    js_decision_err(d, &why);
    audit_event(ctl, allowed ? JS_LIFECYCLE_DURABLE : JS_LIFECYCLE_QUEUED, "admin", admin,
                js_decision_name(d->kind), allowed ? NULL : &why, detail);
}

/* A run-time change never returns JS_ECONFIG (start-up only, answered
 * INTERNAL): what the configuration or the files on disk do not allow now
 * is a failed precondition (control.h). */
static js_status at_run_time(js_status st, js_err *err)
{
    if (st == JS_ECONFIG) {
        err->status = JS_ESTATE;
        return JS_ESTATE;
    }
    return st;
}

/* Crash-safe: the file is either the old or the new version (statefile.h). */
static js_status save_runtime(js_control *ctl, js_err *err)
{
    char *text = json_dumps(ctl->runtime, JSON_INDENT(2) | JSON_SORT_KEYS);
    JS_ENSURE_ALLOC(text, err);
    js_status st = js_statefile_write(ctl->path, text, strlen(text), "control", err);
    free(text);
    return st;
}

static js_status load_runtime(js_control *ctl, js_err *err)
{
    char *buf = NULL;
    size_t n = 0;
    bool absent = false;
    JS_GUARD(js_statefile_read(ctl->path, RUNTIME_MAX_BYTES, "control", &buf, &n, &absent, err));
    if (absent) {
        ctl->runtime = json_pack("{s:b, s:{}}", "incident", 0, "frozen");
        JS_ENSURE_ALLOC(ctl->runtime, err);
        return JS_OK;
    }
    json_error_t jerr;
    ctl->runtime = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    JS_ENSURE(ctl->runtime != NULL, err, JS_ECONFIG, JS_R_CONTROL_STATE_READ, "%s: %s at line %d",
              ctl->path, jerr.text, jerr.line);
    JS_ENSURE(json_is_object(ctl->runtime) &&
                  json_is_boolean(json_object_get(ctl->runtime, "incident")) &&
                  json_is_object(json_object_get(ctl->runtime, "frozen")),
              err, JS_ECONFIG, JS_R_CONTROL_STATE_READ,
              "%s: expected {\"incident\": bool, \"frozen\": {...}}", ctl->path);
    return JS_OK;
}

/*
 * runtime.json from before typed identities (identity.h) froze bare names
 * such as "login.example", which a DNS SAN or a CN produced; no caller has
 * such an identity any more, so the freeze would silently end at the
 * upgrade. Each bare entry becomes the typed entries it used to match,
 * dns:NAME (lower case, as identity_select writes DNS names) and cn:NAME,
 * each only if it is a valid identity; the change is logged and saved.
 */
static js_status migrate_untyped_frozen(js_control *ctl, js_err *err)
{
    json_t *frozen = json_object_get(ctl->runtime, "frozen");
    json_t *bare = json_array();
    JS_ENSURE_ALLOC(bare, err);
    const char *id;
    json_t *v;
    json_object_foreach(frozen, id, v)
    {
        js_err ignored;
        (void)v;
        /* Bare: refused as an identity, and no type prefix or scheme at all. */
        if (strchr(id, ':') == NULL && identity_parse(id, NULL, &ignored) != JS_OK)
            json_array_append_new(bare, json_string(id));
    }
    size_t i;
    json_t *name;
    js_status st = JS_OK;
    json_array_foreach(bare, i, name)
    {
        const char *old = json_string_value(name);
        char typed[2][IDENTITY_MAX + 1];
        snprintf(typed[0], sizeof(typed[0]), "dns:%s", old);
        for (char *c = typed[0]; *c != '\0'; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        snprintf(typed[1], sizeof(typed[1]), "cn:%s", old);
        json_t *entry = json_object_get(frozen, old);
        json_t *now_frozen = json_array();
        for (int t = 0; t < 2; t++) {
            js_err ignored;
            if (identity_parse(typed[t], NULL, &ignored) == JS_OK &&
                json_object_get(frozen, typed[t]) == NULL) {
                json_object_set(frozen, typed[t], entry);
                json_array_append_new(now_frozen, json_string(typed[t]));
            }
        }
        json_t *o = json_pack("{s:s, s:s, s:o}", "event", "frozen_entry_migrated", "identity", old,
                              "now", now_frozen);
        js_log_emit("warn", o);
        json_object_del(frozen, old);
    }
    if (json_array_size(bare) > 0)
        st = save_runtime(ctl, err);
    json_decref(bare);
    return st;
}

/* The frozen set (frozen.h) of a runtime.json "frozen" object. */
static js_status frozen_from_json(const json_t *frozen, js_frozen **out, js_err *err)
{
    js_frozen *f = NULL;
    const char *id;
    json_t *v;
    json_object_foreach((json_t *)frozen, id, v)
    {
        (void)v;
        js_frozen *next = NULL;
        js_status st = js_frozen_with(f, id, true, &next, err);
        js_frozen_free(f);
        f = next;
        JS_GUARD(st);
    }
    *out = f;
    return JS_OK;
}

static js_status publish_frozen(js_control *ctl, js_err *err)
{
    js_frozen *f = NULL;
    JS_GUARD(frozen_from_json(json_object_get(ctl->runtime, "frozen"), &f, err));
    return js_snapshot_store_publish(ctl->d.frozen, f, err);
}

/* ---- key lifecycle (keystate.h, keyring.h) ---------------------------------------- */

/* Longest token lifetime any caller may get with `key`, plus the leeway:
 * how long a version stays published after it stops signing. */
static int64_t key_lifetime(const char *key, void *ctx)
{
    js_control *ctl = ctx;
    js_policy_snapshot *snap = js_policy_store_acquire(ctl->d.policies);
    int64_t ttl = js_policy_key_max_ttl(js_policy_snapshot_get(snap), key);
    js_policy_snapshot_release(snap);
    int64_t life = ttl + ctl->d.leeway;
    return life < JS_KS_MAX_LIFETIME ? life : JS_KS_MAX_LIFETIME;
}

/* What an emergency activation means for whoever reads the reply or the
 * audit record (keystate.h, js_ks_event.emergency). */
static const char k_emergency_note[] =
    "emergency rotation: no version of the key was active, so the new version signs at once "
    "without pre-publication; verifiers that cached the JWKS before it was published reject its "
    "tokens until they fetch the JWKS again";

/* true if the events made `version` active (or due at once) as an emergency. */
static bool events_emergency(const js_ks_events *evs, uint32_t version)
{
    for (size_t i = 0; i < evs->count; i++)
        if (evs->ev[i].kind == JS_KS_EV_TRANSITION && evs->ev[i].version == version &&
            evs->ev[i].emergency)
            return true;
    return false;
}

static void audit_key_events(js_control *ctl, const js_ks_events *evs, const char *by)
{
    for (size_t i = 0; i < evs->count; i++) {
        const js_ks_event *e = &evs->ev[i];
        if (e->kind == JS_KS_EV_ROTATION_DUE)
            continue;
        const char *what = e->kind == JS_KS_EV_FORGOTTEN ? "forgotten" : js_key_state_name(e->to);
        json_t *o =
            json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:b}", "event", "key_transition", "key",
                      e->key, "version", (int)e->version, "kid", e->kid, "from",
                      js_key_state_name(e->from), "to", what, "by", by, "emergency", e->emergency);
        if (o != NULL && e->emergency)
            json_object_set_new(o, "note", json_string(k_emergency_note));
        /* A key's first version becoming active (a first start) is routine;
         * every other transition (rotation, revocation, emergency) warns. */
        bool first = e->kind == JS_KS_EV_TRANSITION && e->version == 1 && e->from == JS_KS_NONE &&
                     e->to == JS_KS_ACTIVE && !e->emergency;
        js_log_emit(first ? "info" : "warn", o);
        audit_event(ctl, JS_LIFECYCLE_DURABLE, "key", by, what, NULL,
                    json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:b}", "key", e->key, "version",
                              (int)e->version, "kid", e->kid, "from", js_key_state_name(e->from),
                              "to", what, "at", (json_int_t)e->at, "emergency", e->emergency));
    }
}

/* Caller holds mu: persist, then publish a new keyring, then audit. The
 * state file is written before workers can sign with a new version, so a
 * crash never forgets a version that signed (or a revocation). */
static js_status keys_commit(js_control *ctl, const js_ks_events *evs, const char *by, js_err *err)
{
    JS_GUARD(js_keystate_save(ctl->ks, ctl->ks_path, err));
    js_keyring *kr = NULL;
    JS_GUARD(js_keyring_build(ctl->d.cfg, ctl->ks, ctl->d.vault, &kr, err));
    JS_GUARD(js_snapshot_store_publish(ctl->d.keys, kr, err));
    audit_key_events(ctl, evs, by);
    return JS_OK;
}

/* Caller holds mu. */
static js_status rotate_locked(js_control *ctl, const char *key, const char *by, js_ks_events *evs,
                               uint32_t *version, const char **kid_out, js_err *err)
{
    const js_key_config *kc = js_config_find_key(ctl->d.cfg, key);
    JS_ENSURE(kc != NULL, err, JS_ENOTFOUND, JS_R_ADMIN_UNKNOWN_KEY, "no key named '%s'", key);
    /* Numbers are never reused, even after old records are forgotten, so a
     * label never names an old (perhaps revoked) object in the token. */
    uint32_t next = js_keystate_next_version(ctl->ks, key);
    char label[JS_KS_LABEL_MAX + 1];
    js_keyring_version_label(kc->label, next, label, sizeof(label));
    const char *kid = NULL;
    JS_GUARD(js_keyvault_generate(ctl->d.vault, label, kc->alg,
                                  kc->alg == JS_ALG_RS256 || kc->alg == JS_ALG_PS256 ? kc->bits : 0,
                                  &kid, err));
    int64_t now = (int64_t)time(NULL);
    JS_GUARD(js_keystate_rotate(ctl->ks, key, label, js_alg_name(kc->alg), kid, now,
                                ctl->d.prepublish, version, evs, err));
    JS_GUARD(js_keystate_tick(ctl->ks, now, key_lifetime, ctl, evs, err));
    JS_GUARD(keys_commit(ctl, evs, by, err));
    *kid_out = kid;
    return JS_OK;
}

static js_status keys_start(js_control *ctl, js_err *err)
{
    JS_GUARD(js_keystate_load(ctl->ks_path, &ctl->ks, err));
    int64_t now = (int64_t)time(NULL);
    js_ks_events evs = {0};
    js_status st = JS_OK;
    for (size_t i = 0; st == JS_OK && i < ctl->d.cfg->nkeys; i++) {
        const js_key_config *kc = &ctl->d.cfg->keys[i];
        const char *kid = NULL;
        st = js_keyvault_get(ctl->d.vault, kc->label, kc->alg, NULL, &kid, err);
        if (st == JS_OK)
            st = js_keystate_ensure_initial(ctl->ks, kc->name, kc->label, js_alg_name(kc->alg), kid,
                                            now, &evs, err);
        if (st == JS_OK && kc->rotation_period > 0)
            st = js_keystate_set_rotation(ctl->ks, kc->name, kc->rotation_period, err);
        if (st != JS_OK)
            js_err_prefix(err, "key '%s' (label '%s'): ", kc->name, kc->label);
    }
    if (st == JS_OK)
        st = js_keystate_tick(ctl->ks, now, key_lifetime, ctl, &evs, err);
    if (st == JS_OK)
        st = keys_commit(ctl, &evs, "start", err);
    js_ks_events_cleanup(&evs);
    return st;
}

void js_control_tick(js_control *ctl)
{
    pthread_mutex_lock(&ctl->mu);
    js_ks_events evs = {0};
    js_err err;
    js_err_clear(&err);
    js_status st = js_keystate_tick(ctl->ks, (int64_t)time(NULL), key_lifetime, ctl, &evs, &err);
    if (st == JS_OK && evs.count > 0) {
        bool changed = false;
        for (size_t i = 0; i < evs.count; i++)
            changed |= evs.ev[i].kind != JS_KS_EV_ROTATION_DUE;
        if (changed)
            st = keys_commit(ctl, &evs, "schedule", &err);
        for (size_t i = 0; st == JS_OK && i < evs.count; i++) {
            if (evs.ev[i].kind != JS_KS_EV_ROTATION_DUE)
                continue;
            js_ks_events rev = {0};
            uint32_t version = 0;
            const char *kid = NULL;
            st = rotate_locked(ctl, evs.ev[i].key, "rotation period", &rev, &version, &kid, &err);
            js_ks_events_cleanup(&rev);
        }
    }
    if (st != JS_OK) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "event", "key_schedule_failed", "reason",
                              js_reason_name(err.reason), "message", err.msg);
        js_log_emit("error", o);
    }
    js_ks_events_cleanup(&evs);
    pthread_mutex_unlock(&ctl->mu);
}

void js_control_key_counts(js_control *ctl, size_t counts[JS_KS_STATE_COUNT])
{
    pthread_mutex_lock(&ctl->mu);
    js_keystate_counts(ctl->ks, counts);
    pthread_mutex_unlock(&ctl->mu);
}

js_status js_control_rotate_key(js_control *ctl, const char *key, const char *reason,
                                const char *by, js_rotate_result *out, json_t *detail, js_err *err)
{
    memset(out, 0, sizeof(*out));
    JS_GUARD(js_admin_text("key", key, JS_KEY_NAME_MAX, true, err));
    JS_GUARD(js_admin_text("reason", reason, JS_ADMIN_REASON_MAX, false, err));
    json_object_set_new(detail, "key", json_string(key));
    json_object_set_new(detail, "reason", json_string(reason));
    js_ks_events evs = {0};
    uint32_t version = 0;
    const char *kid = NULL;
    pthread_mutex_lock(&ctl->mu);
    js_status st = rotate_locked(ctl, key, by, &evs, &version, &kid, err);
    if (st == JS_OK) {
        const js_keyver *kv = js_keystate_find_kid(ctl->ks, kid, NULL);
        out->version = version;
        snprintf(out->kid, sizeof(out->kid), "%s", kid);
        out->activate_at = kv != NULL ? kv->activate_at : 0;
        out->emergency = events_emergency(&evs, version);
        json_object_set_new(detail, "kid", json_string(out->kid));
        json_object_set_new(detail, "version", json_integer(version));
        json_object_set_new(detail, "activate_at", json_integer(out->activate_at));
        json_object_set_new(detail, "emergency", json_boolean(out->emergency));
        if (out->emergency)
            json_object_set_new(detail, "note", json_string(k_emergency_note));
    }
    js_ks_events_cleanup(&evs);
    pthread_mutex_unlock(&ctl->mu);
    return at_run_time(st, err);
}

js_status js_control_revoke_key(js_control *ctl, const char *key, const char *kid,
                                const char *reason, const char *by, js_revoke_result *out,
                                json_t *detail, js_err *err)
{
    memset(out, 0, sizeof(*out));
    JS_GUARD(js_admin_text("key", key, JS_KEY_NAME_MAX, true, err));
    JS_GUARD(js_admin_text("kid", kid, JS_KS_KID_MAX, true, err));
    JS_GUARD(js_admin_text("reason", reason, JS_ADMIN_REASON_MAX, false, err));
    json_object_set_new(detail, "key", json_string(key));
    json_object_set_new(detail, "kid", json_string(kid));
    json_object_set_new(detail, "reason", json_string(reason));
    js_ks_events evs = {0};
    pthread_mutex_lock(&ctl->mu);
    int64_t now = (int64_t)time(NULL);
    js_status st = js_keystate_revoke(ctl->ks, key, kid, now, reason, &evs, err);
    if (st == JS_OK)
        st = js_keystate_tick(ctl->ks, now, key_lifetime, ctl, &evs, err);
    if (st == JS_OK)
        st = keys_commit(ctl, &evs, by, err);
    if (st == JS_OK) {
        const js_keyver *active = NULL;
        js_err ignored;
        bool has = js_keystate_active(ctl->ks, key, &active, &ignored) == JS_OK;
        out->revoked_at = now;
        snprintf(out->active_kid, sizeof(out->active_kid), "%s", has ? active->kid : "");
        out->emergency = has && events_emergency(&evs, active->version);
        json_object_set_new(detail, "active_kid", json_string(out->active_kid));
        json_object_set_new(detail, "emergency", json_boolean(out->emergency));
        if (out->emergency)
            json_object_set_new(detail, "note", json_string(k_emergency_note));
    }
    js_ks_events_cleanup(&evs);
    pthread_mutex_unlock(&ctl->mu);
    return at_run_time(st, err);
}

static json_t *keys_status(js_control *ctl)
{
    json_t *keys = json_array();
    for (size_t i = 0; i < js_keystate_key_count(ctl->ks); i++) {
        json_t *versions = json_array();
        for (size_t v = 0; v < js_keystate_version_count(ctl->ks, i); v++) {
            const js_keyver *kv = js_keystate_version_at(ctl->ks, i, v);
            json_array_append_new(
                versions,
                json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "version", (int)kv->version,
                          "kid", kv->kid, "state", js_key_state_name(kv->state), "label", kv->label,
                          "activate_at", (json_int_t)kv->activate_at, "retire_at",
                          (json_int_t)kv->retire_at, "unpublish_at", (json_int_t)kv->unpublish_at,
                          "revoked_at", (json_int_t)kv->revoked_at));
        }
        json_array_append_new(keys, json_pack("{s:s, s:I, s:o}", "key",
                                              js_keystate_key_name(ctl->ks, i), "rotation_period",
                                              (json_int_t)js_keystate_key_rotation(ctl->ks, i),
                                              "versions", versions));
    }
    return keys;
}

js_status js_control_rotate_audit_key(js_control *ctl, const char *reason, const char *by,
                                      char label[JS_CONTROL_AUDIT_LABEL_MAX + 1],
                                      char key_id[JS_AUDIT_KEY_ID_LEN + 1], json_t *detail,
                                      js_err *err)
{
    label[0] = '\0';
    key_id[0] = '\0';
    JS_GUARD(js_admin_text("reason", reason, JS_ADMIN_REASON_MAX, false, err));
    json_object_set_new(detail, "reason", json_string(reason));
    JS_ENSURE(ctl->d.rotate_audit != NULL, err, JS_ESTATE, JS_R_AUDIT_ROTATE,
              "audit key rotation is not available in this signer");
    /* One change at a time, like every other control-plane change. */
    pthread_mutex_lock(&ctl->mu);
    js_status st = ctl->d.rotate_audit(ctl->d.rotate_audit_ctx, by, label, key_id, err);
    pthread_mutex_unlock(&ctl->mu);
    JS_GUARD(at_run_time(st, err));
    json_object_set_new(detail, "label", json_string(label));
    json_object_set_new(detail, "key_id", json_string(key_id));
    return JS_OK;
}

js_status js_control_new(const js_control_deps *deps, js_control **out, js_err *err)
{
    *out = NULL;
    js_control *ctl = calloc(1, sizeof(*ctl));
    JS_ENSURE_ALLOC(ctl, err);
    ctl->d = *deps;
    pthread_mutex_init(&ctl->mu, NULL);
    snprintf(ctl->path, sizeof(ctl->path), "%s/%s", deps->state_dir, RUNTIME_FILE);
    snprintf(ctl->ks_path, sizeof(ctl->ks_path), "%s/%s", deps->state_dir, KEYSTATE_FILE);
    js_status st = JS_OK;
    if (mkdir(deps->state_dir, 0700) != 0 && errno != EEXIST)
        st = js_err_set(err, JS_ECONFIG, JS_R_CONTROL_STATE_DIR, "cannot create %s: %s",
                        deps->state_dir, strerror(errno));
    if (st == JS_OK)
        st = load_runtime(ctl, err);
    if (st == JS_OK)
        st = migrate_untyped_frozen(ctl, err);
    if (st == JS_OK)
        st = publish_frozen(ctl, err);
    if (st == JS_OK)
        st = keys_start(ctl, err);
    if (st != JS_OK) {
        js_control_free(ctl);
        return st;
    }
    /* A saved incident survives a restart; the policy file can also set it. */
    if (json_is_true(json_object_get(ctl->runtime, "incident")))
        js_ratelimit_set_incident(ctl->d.rl, true);
    *out = ctl;
    return JS_OK;
}

void js_control_free(js_control *ctl)
{
    if (ctl == NULL)
        return;
    json_decref(ctl->runtime);
    js_keystate_free(ctl->ks);
    pthread_mutex_destroy(&ctl->mu);
    free(ctl);
}

bool js_control_incident(js_control *ctl)
{
    return js_ratelimit_incident(ctl->d.rl);
}

/* Caller holds ctl->mu. */
static js_status set_incident_locked(js_control *ctl, bool on, const char *by, const char *reason,
                                     js_err *err)
{
    if (js_ratelimit_incident(ctl->d.rl) == on)
        return JS_OK;
    json_object_set_new(ctl->runtime, "incident", json_boolean(on));
    JS_GUARD(save_runtime(ctl, err));
    js_ratelimit_set_incident(ctl->d.rl, on);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "incident_mode", "state",
                          on ? "on" : "off", "cause", by, "reason", reason ? reason : "");
    js_log_emit("warn", o);
    audit_event(ctl, JS_LIFECYCLE_DURABLE, "incident", by, on ? "on" : "off", NULL,
                json_pack("{s:s, s:s, s:s}", "state", on ? "on" : "off", "cause", by, "reason",
                          reason ? reason : ""));
    return JS_OK;
}

js_status js_control_set_incident(js_control *ctl, bool on, const char *by, const char *reason,
                                  js_err *err)
{
    pthread_mutex_lock(&ctl->mu);
    js_status st = set_incident_locked(ctl, on, by, reason, err);
    pthread_mutex_unlock(&ctl->mu);
    return at_run_time(st, err);
}

/* Parses and validates off the request path, then swaps atomically. An
 * invalid file keeps the old policy and says exactly why. `incident: true`
 * in the new file turns incident mode on; `false` leaves it as it is, so a
 * reload cannot silently end an incident declared by signal or admin. */
js_status js_control_reload_policy(js_control *ctl, const char *by, char sha256[65], js_err *err)
{
    pthread_mutex_lock(&ctl->mu);
    js_policy *p = NULL;
    const char *path = ctl->d.cfg->policy_path;
    js_status st = js_policy_load(path, &p, err);
    if (st == JS_OK)
        st = js_service_check_policy(ctl->d.svc, p, err);
    if (st != JS_OK && (st == JS_ECONFIG || st == JS_EINVAL)) {
        /* The file on disk is not a loadable policy: neither the request nor
         * the signer is at fault (INTERNAL is for bugs), and the old policy
         * stays in force. FAILED_PRECONDITION, with the loader's whole
         * reason and its FILE:LINE. */
        err->status = st = JS_ESTATE;
        js_err_prefix(err, "policy not reloaded (the policy in force is unchanged): ");
        msg_clean_cut(err);
    }
    if (st != JS_OK) {
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s, s:s}", "event", "policy_reload_failed", "path", path,
                      "by", by, "reason", js_reason_name(err->reason), "message", err->msg);
        js_log_emit("error", o);
        /* Nothing changed: queued, not waited for (lifecycle.h). */
        audit_event(ctl, JS_LIFECYCLE_QUEUED, "policy", by, "error", err,
                    json_pack("{s:s}", "path", path));
        js_policy_free(p);
        pthread_mutex_unlock(&ctl->mu);
        return st;
    }
    bool incident = js_policy_incident(p);
    char hash[65];
    snprintf(hash, sizeof(hash), "%s", js_policy_hash_hex(p));
    st = js_policy_store_swap(ctl->d.policies, p, err);
    if (st == JS_OK) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "event", "policy_reloaded", "path", path,
                              "sha256", hash, "by", by);
        js_log_emit("info", o);
        audit_event(
            ctl, JS_LIFECYCLE_DURABLE, "policy", by, "reload", NULL,
            json_pack("{s:s, s:s, s:b}", "path", path, "sha256", hash, "incident", incident));
        if (sha256 != NULL)
            snprintf(sha256, 65, "%s", hash);
        if (incident)
            st = set_incident_locked(ctl, true, "policy file", "incident: true", err);
    }
    pthread_mutex_unlock(&ctl->mu);
    return at_run_time(st, err);
}

js_status js_control_freeze(js_control *ctl, const char *identity, bool freeze, const char *by,
                            const char *reason, js_err *err)
{
    JS_GUARD(js_admin_text("identity", identity, IDENTITY_MAX, true, err));
    JS_GUARD(js_admin_text("reason", reason, JS_ADMIN_REASON_MAX, false, err));
    pthread_mutex_lock(&ctl->mu);
    /* A frozen identity is a typed identity text (identity.h), or it could
     * never match a caller, and a freeze that matches nobody is worse than a
     * refusal. Unfreezing an entry that is frozen is always possible, so an
     * untyped entry from before typed identities can be removed. */
    bool listed = json_object_get(json_object_get(ctl->runtime, "frozen"), identity) != NULL;
    if (freeze || !listed) {
        js_status pst = identity_parse(identity, NULL, err);
        if (pst != JS_OK) {
            js_err_prefix(err, "identity: ");
            pthread_mutex_unlock(&ctl->mu);
            return pst;
        }
    }
    /* Everything is checked on a copy first (set, size, encoding), so a
     * refused change leaves neither memory nor runtime.json changed: the file
     * on disk must always be one the next start can load. */
    json_t *next = json_deep_copy(ctl->runtime);
    json_t *frozen = json_object_get(next, "frozen");
    js_frozen *set = NULL;
    char *text = NULL;
    js_status st = JS_OK;
    if (next == NULL || frozen == NULL)
        st = js_err_oom(err);
    else if (freeze && json_object_set_new(frozen, identity,
                                           json_pack("{s:s, s:s, s:I}", "by", by, "reason",
                                                     reason ? reason : "", "at",
                                                     (json_int_t)time(NULL))) != 0)
        st = js_err_oom(err);
    else if (!freeze)
        json_object_del(frozen, identity);
    if (st == JS_OK)
        st = frozen_from_json(frozen, &set, err);
    if (st == JS_OK && (text = json_dumps(next, JSON_INDENT(2) | JSON_SORT_KEYS)) == NULL)
        st = js_err_oom(err);
    if (st == JS_OK && strlen(text) > RUNTIME_MAX_BYTES)
        st = js_err_set(err, JS_ELIMIT, JS_R_ADMIN_FROZEN_FULL,
                        "too many frozen callers: the state file would exceed %d bytes",
                        RUNTIME_MAX_BYTES);
    if (st == JS_OK)
        st = js_statefile_write(ctl->path, text, strlen(text), "control", err);
    free(text);
    if (st == JS_OK) {
        json_decref(ctl->runtime);
        ctl->runtime = next;
        next = NULL;
        st = js_snapshot_store_publish(ctl->d.frozen, set, err);
        set = NULL;
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s}", "event", freeze ? "caller_frozen" : "caller_unfrozen",
                      "identity", identity, "by", by, "reason", reason ? reason : "");
        js_log_emit("warn", o);
    }
    js_frozen_free(set);
    json_decref(next);
    pthread_mutex_unlock(&ctl->mu);
    return at_run_time(st, err);
}

/* ---- token revocation (tokindex.h) --------------------------------------------------- */

int64_t js_control_token_horizon(js_control *ctl)
{
    js_policy_snapshot *snap = js_policy_store_acquire(ctl->d.policies);
    const js_policy *p = js_policy_snapshot_get(snap);
    int64_t longest = 0;
    for (size_t i = 0; i < js_policy_key_count(p); i++) {
        int64_t ttl = js_policy_key_max_ttl(p, js_policy_key_at(p, i));
        if (ttl > longest)
            longest = ttl;
    }
    js_policy_snapshot_release(snap);
    int64_t life = longest + ctl->d.leeway;
    return life < JS_KS_MAX_LIFETIME ? life : JS_KS_MAX_LIFETIME;
}

/* A jti or sub to revoke: 1..max bytes of printable ASCII (jti) or clean
 * text (sub). */
static js_status revoke_value(const char *what, const char *v, size_t max, bool ascii, js_err *err)
{
    JS_GUARD(js_admin_text(what, v, max, true, err));
    for (size_t i = 0; ascii && v[i] != '\0'; i++)
        JS_ENSURE((unsigned char)v[i] >= 0x21 && (unsigned char)v[i] <= 0x7e, err, JS_EINVAL,
                  JS_R_REQUEST_JTI, "%s: a jti is 1..%zu printable ASCII characters without spaces",
                  what, max);
    return JS_OK;
}

js_status js_control_revoke_token(js_control *ctl, const char *by, const js_token_revoke *req,
                                  js_token_revoked *out, js_err *err)
{
    memset(out, 0, sizeof(*out));
    bool has_jti = req->jti != NULL && req->jti[0] != '\0';
    bool has_sub = req->sub != NULL && req->sub[0] != '\0';
    bool has_caller = req->caller != NULL && req->caller[0] != '\0';
    JS_ENSURE(has_jti + has_sub + has_caller == 1, err, JS_EINVAL, JS_R_REQUEST_MALFORMED,
              "name exactly one of jti, sub and caller");
    JS_GUARD(js_admin_text("reason", req->reason, JS_ADMIN_REASON_MAX, false, err));
    const char *what = has_jti ? "jti" : has_sub ? "sub" : "caller";
    const char *value = has_jti ? req->jti : has_sub ? req->sub : req->caller;
    if (has_jti)
        JS_GUARD(revoke_value("jti", value, JS_JTI_MAX, true, err));
    else if (has_sub)
        JS_GUARD(revoke_value("sub", value, JS_TOKINDEX_STR_MAX, false, err));
    else
        JS_GUARD(identity_parse(value, NULL, err));
    JS_ENSURE(ctl->d.index != NULL, err, JS_ESTATE, JS_R_INTROSPECT_DISABLED,
              "the signer keeps no issued-token index: add an introspection section to its "
              "configuration");
    int64_t now = (int64_t)time(NULL);
    /* A jti's revocation lasts as long as its token; a cut-off as long as
     * any token issued before it can live. */
    int64_t until = now + js_control_token_horizon(ctl);
    if (has_jti) {
        js_tok_info t;
        memset(&t, 0, sizeof(t));
        if (js_tokindex_find(ctl->d.index, value, &t))
            until = t.exp;
        js_tok_info_clear(&t);
    }
    int64_t cutoff = has_jti ? 0 : now;
    json_t *detail = json_pack("{s:s, s:s, s:I, s:s}", "what", what, "value", value, "until",
                               (json_int_t)until, "reason", req->reason != NULL ? req->reason : "");
    if (detail != NULL && !has_jti)
        json_object_set_new(detail, "cutoff", json_integer(cutoff));
    JS_ENSURE_ALLOC(detail, err);
    pthread_mutex_lock(&ctl->mu);
    /* Durable first: a revocation the log does not hold would be lost at the
     * next start (the index is rebuilt from the log). */
    js_status st = js_lifecycle_audit_seq(ctl->d.audit, JS_LIFECYCLE_DURABLE, "revoke", by,
                                          js_decision_name(JS_DECISION_ALLOW), NULL, detail,
                                          &out->audit_seq, err);
    if (st == JS_OK)
        st = has_jti   ? js_tokindex_revoke_jti(ctl->d.index, value, until, err)
             : has_sub ? js_tokindex_revoke_sub(ctl->d.index, value, cutoff, until, err)
                       : js_tokindex_revoke_caller(ctl->d.index, value, cutoff, until, err);
    pthread_mutex_unlock(&ctl->mu);
    JS_GUARD(at_run_time(st, err));
    out->cutoff = cutoff;
    out->until = until;
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "event", "token_revoked", "by", by, "what",
                  what, "value", value, "cutoff", (json_int_t)cutoff, "until", (json_int_t)until);
    js_log_emit("warn", o);
    return JS_OK;
}

char *js_control_status_json(js_control *ctl)
{
    pthread_mutex_lock(&ctl->mu);
    js_policy_snapshot *snap = js_policy_store_acquire(ctl->d.policies);
    const js_policy *p = js_policy_snapshot_get(snap);
    char *rules = js_policy_describe(p);
    /* A copy, not a reference: `o` is dumped after the unlock, while an
     * admin's freeze may drop the old runtime (and its "frozen") at once. */
    json_t *o = json_pack("{s:b, s:o, s:o, s:o, s:{s:s, s:s, s:s}}", "incident_mode",
                          js_ratelimit_incident(ctl->d.rl), "frozen",
                          json_deep_copy(json_object_get(ctl->runtime, "frozen")), "keys",
                          keys_status(ctl), "callers", js_metrics_caller_counts(ctl->d.metrics),
                          "policy", "path", ctl->d.cfg->policy_path, "sha256",
                          js_policy_hash_hex(p), "rules", rules != NULL ? rules : "");
    free(rules);
    js_policy_snapshot_release(snap);
    pthread_mutex_unlock(&ctl->mu);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return text;
}
