/*
 * audit_key.c - jwt-signerd's audit log and the HSM key that signs its
 * checkpoints: the key in force (audit.key_label, or the label a rotation
 * saved in STATE_DIR/audit-key.json) is found in the HSM and the log opened
 * with it on a session only the writer uses; Admin/RotateAuditKey makes a new
 * key and hands it to the writer (FORMAT.md §5.4).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "daemon.h"
#include "logline.h"
#include "statefile.h"

/* STATE_DIR/audit-key.json: {"label":L,"generation":N}, the audit key in
 * force after a rotation, so a restart signs with it (FORMAT.md §5.4). */
#define AUDIT_KEY_STATE     "audit-key.json"
#define AUDIT_KEY_STATE_MAX 4096

static char *pubkey_pem(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (bio != NULL && PEM_write_bio_PUBKEY(bio, pk) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        out = n > 0 ? strndup(data, (size_t)n) : NULL;
    }
    BIO_free(bio);
    return out;
}

static void on_audit_batch(void *ctx, size_t records, uint64_t fsync_us)
{
    js_metrics_audit_batch(ctx, records, fsync_us);
}

/* One log line per folded audit record, with the same count (logline.h). */
static void on_audit_fold(void *ctx, const js_audit_fold *f)
{
    (void)ctx;
    js_foldlog l = {f->type, f->caller, f->peer, f->reason, f->count, f->seq};
    js_log_denials_folded(&l);
}

/* The audit key in force: audit.key_label, or the label a rotation saved
 * in STATE_DIR/audit-key.json. */
static js_status load_audit_label(daemon_state *d, js_err *err)
{
    snprintf(d->audit_label, sizeof(d->audit_label), "%s", d->cfg->audit_key_label);
    d->audit_generation = 1;
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", d->state_dir, AUDIT_KEY_STATE);
    char *text = NULL;
    size_t len = 0;
    bool absent = false;
    JS_GUARD(js_statefile_read(path, AUDIT_KEY_STATE_MAX, "audit", &text, &len, &absent, err));
    if (absent)
        return JS_OK;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    json_t *l = json_object_get(j, "label");
    json_t *g = json_object_get(j, "generation");
    bool ok = json_is_string(l) && json_string_length(l) >= 1 &&
              json_string_length(l) <= JS_CONTROL_AUDIT_LABEL_MAX && json_is_integer(g) &&
              json_integer_value(g) >= 1 && json_integer_value(g) <= 1000000;
    if (ok) {
        snprintf(d->audit_label, sizeof(d->audit_label), "%s", json_string_value(l));
        d->audit_generation = (unsigned)json_integer_value(g);
    }
    json_decref(j);
    JS_ENSURE(ok, err, JS_ECONFIG, JS_R_AUDIT_KEY_STATE,
              "%s: not {\"label\":LABEL,\"generation\":N}", path);
    return JS_OK;
}

static js_status save_audit_label(daemon_state *d, js_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", d->state_dir, AUDIT_KEY_STATE);
    json_t *j = json_pack("{s:s, s:I}", "label", d->audit_label, "generation",
                          (json_int_t)d->audit_generation);
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    JS_ENSURE_ALLOC(text, err);
    js_status st = js_statefile_write(path, text, strlen(text), "audit", err);
    free(text);
    return st;
}

/* Saves STATE_DIR/audit-key.json. A failure is logged once and retried by
 * audit_key_check_pending until it succeeds: until then a restart would
 * sign with the previous key and be refused. Under audit_rot_mu. */
static js_status save_state(daemon_state *d, js_err *err)
{
    js_status st = save_audit_label(d, err);
    if (st != JS_OK && !d->audit_state_dirty) {
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s}", "event", "audit_key_state_failed", "label",
                      d->audit_label, "reason", js_reason_name(err->reason), "message", err->msg);
        js_log_emit("error", o);
    }
    d->audit_state_dirty = st != JS_OK;
    return st;
}

/* r is durable in the log: the key in force from now on, here as in the
 * writer. The probe signs with it (an operator may destroy the key before
 * it), and STATE_DIR/audit-key.json names it, so a restart signs with it:
 * the log's last checkpoint is then signed by it or announces it, and a
 * restart with the old key would be refused (recovery.c). Under
 * audit_rot_mu. */
static js_status finish_rotation(daemon_state *d, audit_rotated *r, bool late, js_err *err)
{
    snprintf(d->audit_label, sizeof(d->audit_label), "%s", r->label);
    d->audit_generation = r->generation;
    if (d->audit_pending == r)
        d->audit_pending = NULL;
    health_probe_key(d, r->key);
    /* Saved first: the line says whether a restart signs with it too. */
    js_status st = save_state(d, err);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "event", "audit_key_rotated", "label",
                          r->label, "key_id", r->key_id, "by", r->by != NULL ? r->by : "",
                          "after_pending", late, "state_saved", st == JS_OK);
    js_log_emit("info", o);
    return st;
}

/* The pending rotation, once the writer has made it durable: rotations are
 * made durable one at a time and in the order they were queued, so r's is
 * the r->target-th. Under audit_rot_mu. */
static void finish_pending_locked(daemon_state *d)
{
    audit_rotated *r = d->audit_pending;
    if (r == NULL || atomic_load(&d->audit_rotations_durable) < r->target)
        return;
    js_err err;
    (void)finish_rotation(d, r, true, &err); /* a failed save is logged and retried */
}

/* Another attempt at a state file that could not be saved (save_state).
 * Under audit_rot_mu. */
static void retry_save_locked(daemon_state *d)
{
    js_err err;
    if (d->audit_state_dirty && save_state(d, &err) == JS_OK) {
        json_t *o =
            json_pack("{s:s, s:s}", "event", "audit_key_state_saved", "label", d->audit_label);
        js_log_emit("info", o);
    }
}

/* The writer's on_key_rotated hook (auditlog.h): counted, finished by the
 * main loop (or at once by the waiting Admin call). */
static void on_audit_key_rotated(void *ctx)
{
    daemon_state *d = ctx;
    atomic_fetch_add(&d->audit_rotations_durable, 1);
}

void audit_key_after_close(daemon_state *d)
{
    pthread_mutex_lock(&d->audit_rot_mu);
    finish_pending_locked(d);
    retry_save_locked(d);
    /* The last chance is gone: the next start would sign with the previous
     * key and be refused, so say exactly what to write. */
    if (d->audit_state_dirty) {
        json_t *o =
            json_pack("{s:s, s:s, s:I, s:s}", "event", "audit_key_state_unsaved", "label",
                      d->audit_label, "generation", (json_int_t)d->audit_generation, "message",
                      "state/audit-key.json could not be saved: write "
                      "{\"label\":LABEL,\"generation\":GENERATION} there before the "
                      "next start");
        js_log_emit("error", o);
    }
    const audit_rotated *r = d->audit_pending;
    if (r != NULL) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:s}", "event", "audit_key_rotation_abandoned", "label", r->label,
            "key_id", r->key_id, "message",
            "the pending audit key rotation was not durable before the stop: the signer starts "
            "with the previous key (should the log still hold its announcement, start-up is "
            "refused with audit.key_chain naming this key_id: then write this label to "
            "state/audit-key.json); rotate again");
        js_log_emit("warn", o);
    }
    pthread_mutex_unlock(&d->audit_rot_mu);
}

void audit_key_check_pending(daemon_state *d)
{
    pthread_mutex_lock(&d->audit_rot_mu);
    finish_pending_locked(d);
    retry_save_locked(d);
    pthread_mutex_unlock(&d->audit_rot_mu);
}

/* Admin/RotateAuditKey (control.h rotate_audit), under the control mutex:
 * a new ES256 key in the HSM (hsm.c keygen: sensitive, non-extractable,
 * sign-only) labelled <audit.key_label>-N on a session of its own, handed
 * to the writer (js_audit_rotate_key), then saved as the key in force. */
js_status rotate_audit_key(void *ctx, const char *by, char *label_out, char *key_id, js_err *err)
{
    daemon_state *d = ctx;
    JS_ENSURE(d->n_audit_rotated < AUDIT_ROTATIONS_MAX, err, JS_ESTATE, JS_R_AUDIT_ROTATE,
              "at most %d audit key rotations per process: restart the signer first",
              AUDIT_ROTATIONS_MAX);
    audit_rotated *r = calloc(1, sizeof(*r));
    JS_ENSURE_ALLOC(r, err);
    r->by = strdup(by != NULL ? by : "");
    if (r->by == NULL) {
        free(r);
        return js_err_oom(err);
    }
    js_status st = js_hsm_session_open(d->hsm, &r->s, err);
    pthread_mutex_lock(&d->audit_rot_mu);
    unsigned gen = d->audit_generation;
    pthread_mutex_unlock(&d->audit_rot_mu);
    char label[JS_CONTROL_AUDIT_LABEL_MAX + 1] = "";
    /* A label left by a rotation that never completed is skipped, never
     * reused: its key may have been seen by no one, but it is not ours. */
    for (int tries = 0; st == JS_OK && tries < 16; tries++) {
        gen++;
        int n = snprintf(label, sizeof(label), "%s-%u", d->cfg->audit_key_label, gen);
        if (n <= 0 || (size_t)n >= sizeof(label)) {
            st = js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE, "audit key label too long");
            break;
        }
        js_hsm_key *old = NULL;
        js_err e2;
        if (js_hsm_key_find(d->hsm, r->s, label, JS_ALG_ES256, &old, &e2) == JS_OK) {
            js_hsm_key_free(old);
            label[0] = '\0';
            continue;
        }
        break;
    }
    if (st == JS_OK && label[0] == '\0')
        st = js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE, "no free audit key label");
    if (st == JS_OK)
        st = js_hsm_keygen(d->hsm, r->s, label, JS_ALG_ES256, 0, err);
    if (st == JS_OK)
        st = js_hsm_key_find(d->hsm, r->s, label, JS_ALG_ES256, &r->key, err);
    char *pem = st == JS_OK ? pubkey_pem(js_hsm_key_public(r->key)) : NULL;
    if (st == JS_OK && pem == NULL)
        st = js_err_oom(err);
    r->signer.s = r->s;
    r->signer.key = r->key;
    /* The writer holds r->signer once the request is queued: JS_OK (done) or
     * JS_EUNAVAIL (not durable yet) from js_audit_rotate_key (auditlog.h). */
    bool queued = false;
    if (st == JS_OK) {
        st = js_audit_rotate_key(d->audit, js_hsm_signer_sign, &r->signer, pem, 10000, key_id, err);
        /* Only audit.rotate_pending means queued: another UNAVAILABLE (the
         * key files could not be written) comes before the queue. */
        queued = st == JS_OK || (st == JS_EUNAVAIL && err->reason == JS_R_AUDIT_ROTATE_PENDING);
    }
    free(pem);
    if (!queued) {
        js_hsm_key_free(r->key);
        js_hsm_session_free(r->s);
        free(r->by);
        free(r);
        return st;
    }
    /* Pending or done, the writer holds r->signer: kept until exit. */
    d->audit_rotated[d->n_audit_rotated++] = r;
    r->generation = gen;
    snprintf(r->label, sizeof(r->label), "%s", label);
    snprintf(r->key_id, sizeof(r->key_id), "%s", key_id);
    pthread_mutex_lock(&d->audit_rot_mu);
    /* An older pending rotation is durable by now if r was queued (the
     * writer takes one at a time): finished first, in order. */
    finish_pending_locked(d);
    /* Every rotation in audit_rotated was queued in the writer, in order. */
    r->target = d->n_audit_rotated;
    if (st == JS_OK) {
        /* In force whatever the state file does: a failed save is logged
         * and retried (save_state), not reported as a failed rotation that
         * an operator would repeat. */
        js_err serr;
        (void)finish_rotation(d, r, false, &serr);
    } else {
        d->audit_pending = r; /* finished by audit_key_check_pending */
    }
    pthread_mutex_unlock(&d->audit_rot_mu);
    JS_GUARD(st);
    snprintf(label_out, JS_CONTROL_AUDIT_LABEL_MAX + 1, "%s", label);
    return JS_OK;
}

js_status open_audit(daemon_state *d, const char *issuer, js_err *err)
{
    const js_config *cfg = d->cfg;
    JS_GUARD(load_audit_label(d, err));
    JS_GUARD(js_hsm_session_open(d->hsm, &d->audit_session, err));
    js_status st =
        js_hsm_key_find(d->hsm, d->audit_session, d->audit_label, JS_ALG_ES256, &d->audit_key, err);
    if (st != JS_OK) {
        js_err_prefix(err, "audit key (label '%s'): ", d->audit_label);
        return st;
    }
    log_key_usage("audit key", d->audit_key);
    char *pem = pubkey_pem(js_hsm_key_public(d->audit_key));
    JS_ENSURE_ALLOC(pem, err);
    d->audit_signer.s = d->audit_session;
    d->audit_signer.key = d->audit_key;
    /* The probe's key is set here, before any server runs, and never again
     * at start: an Admin/RotateAuditKey may come as soon as gRPC serves. */
    health_probe_key(d, d->audit_key);
    js_audit_options opts = {
        .dir = cfg->audit_dir,
        .origin = cfg->audit_origin != NULL ? cfg->audit_origin : issuer,
        .checkpoint_interval_ms = cfg->audit_checkpoint_interval_ms,
        .checkpoint_records = cfg->audit_checkpoint_records,
        .heartbeat_ms = cfg->audit_heartbeat_ms,
        .segment_bytes = cfg->audit_segment_bytes,
        .no_fsync = !cfg->audit_fsync,
        .sign = js_hsm_signer_sign,
        .sign_ctx = &d->audit_signer,
        .pubkey_pem = pem,
        .on_batch = on_audit_batch,
        .on_batch_ctx = d->metrics,
        .on_fold = on_audit_fold,
        .on_fold_ctx = d,
        .on_key_rotated = on_audit_key_rotated,
        .on_key_rotated_ctx = d,
        .min_free_bytes = cfg->audit_min_free_bytes,
        .disk_watermark_off = cfg->audit_min_free_bytes == 0,
    };
    if (!cfg->audit_fsync)
        js_log_event("warn", "audit_fsync_disabled",
                     "audit.fsync is false: records are NOT durable before tokens are released "
                     "(benchmarks and tests only)");
    opts.accept_loss_reason = d->accept_audit_loss;
    if (d->accept_audit_loss != NULL) {
        json_t *o = json_pack(
            "{s:s, s:s, s:s}", "event", "audit_accept_loss", "reason", d->accept_audit_loss,
            "message",
            "--accept-audit-loss given: start-up recovery accepts the loss of records "
            "checkpoint.json names, if any, and records it in the log; remove the option now");
        js_log_emit("warn", o);
    }
    st = js_audit_open(&opts, &d->audit, err);
    free(pem);
    return st;
}
