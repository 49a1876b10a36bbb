/*
 * keystate_file.c - the key state file: strict loading (every member known,
 * typed and consistent, JS_ECONFIG naming the file and the member) and the
 * atomic, crash-safe save through statefile.h. See keystate.h.
 */
#include "keystate.h"
#include "keystate_int.h"
#include "statefile.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---- persistence: load ---------------------------------------------------------------- */

typedef struct loader {
    const char *path;
    js_err *err;
} loader;

static js_status bad(const loader *ld, js_reason reason, const char *where, const char *what)
{
    return js_err_set(ld->err, JS_ECONFIG, reason, "%s: %s: %s", ld->path, where, what);
}

/* Every member listed and nothing else: a typo in a hand-edited file must not
 * silently drop a revocation. */
static js_status only_members(const loader *ld, json_t *obj, const char *where,
                              const char *const *names, size_t n)
{
    const char *name;
    json_t *val;
    json_object_foreach(obj, name, val)
    {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(name, names[i]) == 0;
        if (!known) {
            char what[200];
            snprintf(what, sizeof(what), "unknown member '%.64s'", name);
            return bad(ld, JS_R_KEYSTATE_UNKNOWN_MEMBER, where, what);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (json_object_get(obj, names[i]) == NULL) {
            char what[120];
            snprintf(what, sizeof(what), "missing member '%s'", names[i]);
            return bad(ld, JS_R_KEYSTATE_MISSING_MEMBER, where, what);
        }
    }
    return JS_OK;
}

static js_status get_int(const loader *ld, json_t *obj, const char *where, const char *name,
                         int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(obj, name);
    char at[160];
    snprintf(at, sizeof(at), "%s.%s", where, name);
    if (!json_is_integer(v))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be an integer");
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        char what[120];
        snprintf(what, sizeof(what), "%lld is out of range %" PRId64 "..%" PRId64, (long long)x, lo,
                 hi);
        return bad(ld, JS_R_KEYSTATE_RANGE, at, what);
    }
    *out = (int64_t)x;
    return JS_OK;
}

static js_status get_str(const loader *ld, json_t *obj, const char *where, const char *name,
                         char *out, size_t cap, bool (*ok)(const char *))
{
    json_t *v = json_object_get(obj, name);
    char at[160];
    snprintf(at, sizeof(at), "%s.%s", where, name);
    if (!json_is_string(v))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be a string");
    const char *s = json_string_value(v);
    if (json_string_length(v) >= cap || strlen(s) != json_string_length(v) || !ok(s))
        return bad(ld, JS_R_KEYSTATE_INVALID, at, "not a valid value");
    snprintf(out, cap, "%s", s);
    return JS_OK;
}

static bool label_valid(const char *s)
{
    return js_label_ok(s); /* names.h, as the configuration and the HSM */
}
static bool alg_valid(const char *s)
{
    return ks_token_ok(s, JS_KS_ALG_MAX);
}
static bool kid_valid(const char *s)
{
    return ks_token_ok(s, JS_KS_KID_MAX);
}

static const char *const k_version_members[] = {
    "version",     "label",     "alg",          "kid",        "state",    "created", "publish_at",
    "activate_at", "retire_at", "unpublish_at", "revoked_at", "lifetime", "reason"};

static js_status load_version(const loader *ld, json_t *jv, const char *where, js_keyver *v)
{
    if (!json_is_object(jv))
        return bad(ld, JS_R_KEYSTATE_TYPE, where, "must be an object");
    JS_GUARD(only_members(ld, jv, where, k_version_members,
                          sizeof(k_version_members) / sizeof(k_version_members[0])));
    memset(v, 0, sizeof(*v));
    int64_t num = 0;
    JS_GUARD(get_int(ld, jv, where, "version", 1, UINT32_MAX, &num));
    v->version = (uint32_t)num;
    JS_GUARD(get_str(ld, jv, where, "label", v->label, sizeof(v->label), label_valid));
    JS_GUARD(get_str(ld, jv, where, "alg", v->alg, sizeof(v->alg), alg_valid));
    JS_GUARD(get_str(ld, jv, where, "kid", v->kid, sizeof(v->kid), kid_valid));
    JS_GUARD(get_str(ld, jv, where, "reason", v->reason, sizeof(v->reason), ks_reason_ok));
    json_t *js = json_object_get(jv, "state");
    char at[160];
    snprintf(at, sizeof(at), "%s.state", where);
    if (!json_is_string(js))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be a string");
    if (!js_key_state_parse(json_string_value(js), &v->state)) {
        char what[120];
        snprintf(what, sizeof(what), "unknown state '%.32s'", json_string_value(js));
        return bad(ld, JS_R_KEYSTATE_UNKNOWN_STATE, at, what);
    }
    JS_GUARD(get_int(ld, jv, where, "created", 1, JS_KS_TIME_MAX, &v->created));
    JS_GUARD(get_int(ld, jv, where, "publish_at", 1, JS_KS_TIME_MAX, &v->publish_at));
    JS_GUARD(get_int(ld, jv, where, "activate_at", 1, JS_KS_TIME_MAX, &v->activate_at));
    JS_GUARD(get_int(ld, jv, where, "retire_at", 0, JS_KS_TIME_MAX, &v->retire_at));
    JS_GUARD(get_int(ld, jv, where, "unpublish_at", 0, JS_KS_TIME_MAX, &v->unpublish_at));
    JS_GUARD(get_int(ld, jv, where, "revoked_at", 0, JS_KS_TIME_MAX, &v->revoked_at));
    JS_GUARD(get_int(ld, jv, where, "lifetime", 0, JS_KS_MAX_LIFETIME, &v->lifetime));

    /* Timestamps each state needs to make its next transition. */
    if (v->state == JS_KS_REVOKED && v->revoked_at == 0)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "a revoked version needs revoked_at");
    if (v->state != JS_KS_REVOKED && v->revoked_at != 0)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "only a revoked version has revoked_at");
    if ((v->state == JS_KS_RETIRING || v->state == JS_KS_RETIRED) &&
        (v->retire_at == 0 || v->unpublish_at < v->retire_at))
        return bad(ld, JS_R_KEYSTATE_INVALID, where,
                   "a retiring or retired version needs retire_at <= unpublish_at");
    return JS_OK;
}

static const char *const k_key_members[] = {"name", "initial_kid", "last_version",
                                            "rotation_period", "versions"};

static js_status load_key(const loader *ld, js_keystate *ks, json_t *jk, size_t idx)
{
    char where[64];
    snprintf(where, sizeof(where), "keys[%zu]", idx);
    if (!json_is_object(jk))
        return bad(ld, JS_R_KEYSTATE_TYPE, where, "must be an object");
    JS_GUARD(only_members(ld, jk, where, k_key_members,
                          sizeof(k_key_members) / sizeof(k_key_members[0])));
    char name[JS_KEY_NAME_MAX + 1];
    JS_GUARD(get_str(ld, jk, where, "name", name, sizeof(name), js_key_name_ok));
    if (ks_find_key(ks, name) != NULL)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "duplicate key name");
    json_t *jvs = json_object_get(jk, "versions");
    char at[96];
    snprintf(at, sizeof(at), "%s.versions", where);
    if (!json_is_array(jvs))
        return bad(ld, JS_R_KEYSTATE_TYPE, at, "must be an array");
    if (json_array_size(jvs) > JS_KS_MAX_VERSIONS)
        return bad(ld, JS_R_KEYSTATE_INVALID, at, "too many versions");

    ks_key *k = NULL;
    JS_GUARD(ks_add_key(ks, name, &k, ld->err));
    JS_GUARD(
        get_str(ld, jk, where, "initial_kid", k->initial_kid, sizeof(k->initial_kid), kid_valid));
    int64_t x = 0;
    JS_GUARD(get_int(ld, jk, where, "last_version", 1, UINT32_MAX, &x));
    k->last_version = (uint32_t)x;
    JS_GUARD(get_int(ld, jk, where, "rotation_period", 0, JS_KS_MAX_PERIOD, &k->rotation_period));
    JS_GUARD(ks_key_reserve(k, json_array_size(jvs), ld->err));

    size_t n_active = 0, n_next = 0, n_pub = 0;
    for (size_t j = 0; j < json_array_size(jvs); j++) {
        char vw[96];
        snprintf(vw, sizeof(vw), "%s.versions[%zu]", where, j);
        js_keyver v;
        JS_GUARD(load_version(ld, json_array_get(jvs, j), vw, &v));
        if (v.version > k->last_version)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "version is above last_version");
        if (k->n > 0 && v.version <= k->v[k->n - 1].version)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "versions must be in increasing order");
        if (v.version == 1 && strcmp(v.kid, k->initial_kid) != 0)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "version 1 kid differs from initial_kid");
        if (ks_find_kid_any(ks, v.kid, NULL) != NULL)
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "duplicate kid");
        if (ks_label_used(ks, v.label))
            return bad(ld, JS_R_KEYSTATE_INVALID, vw, "duplicate label");
        n_active += v.state == JS_KS_ACTIVE;
        n_next += v.state == JS_KS_NEXT;
        n_pub += js_key_state_published(v.state);
        k->v[k->n++] = v;
    }
    if (n_active > 1)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "more than one active version");
    if (n_next > 1)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "more than one next version");
    if (n_pub > JS_KS_MAX_PUBLISHED)
        return bad(ld, JS_R_KEYSTATE_INVALID, where, "too many published versions");
    return JS_OK;
}

static js_status parse_state(const loader *ld, const char *buf, size_t len, js_keystate *ks)
{
    json_error_t jerr;
    /* Duplicate members are rejected: two "state" members must not let one
     * silently win. */
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return js_err_set(ld->err, JS_ECONFIG, JS_R_KEYSTATE_MALFORMED,
                          "%s:%d:%d: malformed JSON: %s", ld->path, jerr.line, jerr.column,
                          jerr.text);
    js_status st = JS_OK;
    static const char *const members[] = {"format", "version", "keys"};
    if (!json_is_object(root)) {
        st = bad(ld, JS_R_KEYSTATE_TYPE, "top level", "must be an object");
        goto out;
    }
    st = only_members(ld, root, "top level", members, 3);
    if (st != JS_OK)
        goto out;
    json_t *f = json_object_get(root, "format");
    if (!json_is_string(f) || strcmp(json_string_value(f), JS_KS_FORMAT) != 0) {
        st = bad(ld, JS_R_KEYSTATE_FORMAT, "format", "must be \"" JS_KS_FORMAT "\"");
        goto out;
    }
    int64_t ver = 0;
    st = get_int(ld, root, "top level", "version", 1, INT32_MAX, &ver);
    if (st != JS_OK)
        goto out;
    if (ver != JS_KS_FORMAT_VERSION) {
        st = bad(ld, JS_R_KEYSTATE_FORMAT, "version", "unsupported format version");
        goto out;
    }
    json_t *keys = json_object_get(root, "keys");
    if (!json_is_array(keys)) {
        st = bad(ld, JS_R_KEYSTATE_TYPE, "keys", "must be an array");
        goto out;
    }
    if (json_array_size(keys) > JS_KS_MAX_KEYS) {
        st = bad(ld, JS_R_KEYSTATE_INVALID, "keys", "too many keys");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(keys) && st == JS_OK; i++)
        st = load_key(ld, ks, json_array_get(keys, i), i);
out:
    json_decref(root);
    return st;
}

js_status js_keystate_load(const char *path, js_keystate **out, js_err *err)
{
    *out = NULL;
    JS_ENSURE(path != NULL, err, JS_EINVAL, JS_R_KEYSTATE_IO, "no state file path");
    js_keystate *ks = NULL;
    JS_GUARD(js_keystate_new(&ks, err));
    char *buf = NULL;
    size_t len = 0;
    bool absent = false;
    js_status st = js_statefile_read(path, JS_KS_FILE_MAX, "keystate", &buf, &len, &absent, err);
    if (st != JS_OK || absent) {
        if (st != JS_OK) {
            js_keystate_free(ks);
            return st;
        }
        *out = ks; /* a missing file is an empty state */
        return JS_OK;
    }
    loader ld = {.path = path, .err = err};
    st = parse_state(&ld, buf, len, ks);
    free(buf);
    if (st != JS_OK) {
        js_keystate_free(ks);
        return st;
    }
    *out = ks;
    return JS_OK;
}

/* ---- persistence: save ---------------------------------------------------------------- */

static json_t *version_json(const js_keyver *v)
{
    return json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}", "version",
        (json_int_t)v->version, "label", v->label, "alg", v->alg, "kid", v->kid, "state",
        js_key_state_name(v->state), "created", (json_int_t)v->created, "publish_at",
        (json_int_t)v->publish_at, "activate_at", (json_int_t)v->activate_at, "retire_at",
        (json_int_t)v->retire_at, "unpublish_at", (json_int_t)v->unpublish_at, "revoked_at",
        (json_int_t)v->revoked_at, "lifetime", (json_int_t)v->lifetime, "reason", v->reason);
}

static json_t *state_json(const js_keystate *ks)
{
    json_t *keys = json_array();
    json_t *root = json_pack("{s:s, s:i, s:o}", "format", JS_KS_FORMAT, "version",
                             JS_KS_FORMAT_VERSION, "keys", keys);
    if (root == NULL)
        return NULL;
    for (size_t i = 0; i < ks->n; i++) {
        const ks_key *k = &ks->keys[i];
        json_t *vs = json_array();
        json_t *jk = json_pack("{s:s, s:s, s:I, s:I, s:o}", "name", k->name, "initial_kid",
                               k->initial_kid, "last_version", (json_int_t)k->last_version,
                               "rotation_period", (json_int_t)k->rotation_period, "versions", vs);
        if (jk == NULL || json_array_append_new(keys, jk) != 0) {
            json_decref(root);
            return NULL;
        }
        for (size_t j = 0; j < k->n; j++) {
            if (json_array_append_new(vs, version_json(&k->v[j])) != 0) {
                json_decref(root);
                return NULL;
            }
        }
    }
    return root;
}

js_status js_keystate_save(const js_keystate *ks, const char *path, js_err *err)
{
    JS_ENSURE(path != NULL && path[0] != '\0', err, JS_EINVAL, JS_R_KEYSTATE_IO,
              "no state file path");
    json_t *root = state_json(ks);
    JS_ENSURE_ALLOC(root, err);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    JS_ENSURE_ALLOC(text, err);
    size_t len = strlen(text);
    /* Never write a file the next start would refuse to load. */
    js_status st = len <= JS_KS_FILE_MAX
                       ? js_statefile_write(path, text, len, "keystate", err)
                       : js_err_set(err, JS_EINTERNAL, JS_R_KEYSTATE_TOO_LARGE,
                                    "%s: state would be %zu bytes; the limit is %d", path, len,
                                    JS_KS_FILE_MAX);
    free(text);
    return st;
}
