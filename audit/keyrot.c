/*
 * keyrot.c - audit key rotation (FORMAT.md §5.4, auditlog.h
 * js_audit_rotate_key): both keys are kept as DIR/audit-key-ID.pem, the
 * writer seals a checkpoint announcing the new key and signed by the old
 * one, and once that checkpoint is durable the new key is in force and
 * DIR/audit-key.pem is replaced.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auditlog_int.h"
#include "clock.h"

/* The announcing checkpoint is durable: the new key is in force. Writes
 * DIR/audit-key.pem (the old and new keys were kept as audit-key-ID.pem
 * when the rotation was asked for) and wakes js_audit_rotate_key. */
js_status audit_rotation_commit(js_audit *a, js_err *err)
{
    a->durable.announced = false;
    /* Before the waiter is woken (auditlog.h on_key_rotated). */
    if (a->on_key_rotated != NULL)
        a->on_key_rotated(a->on_key_rotated_ctx);
    pthread_mutex_lock(&a->mu);
    char *pem = a->rot_pem;
    char *old = a->pubkey_pem;
    a->pubkey_pem = pem;
    a->rot_pem = NULL;
    a->rot_pending = false;
    a->rot_done++;
    pthread_cond_broadcast(&a->rot_cv);
    pthread_mutex_unlock(&a->mu);
    free(old);
    if (pem == NULL)
        return JS_OK;
    return audit_write_file(a, "audit-key.pem", pem, strlen(pem), err);
}

/* FORMAT.md §5.4. Keys are kept as audit-key-ID.pem before the request is
 * queued, so a verifier finds the new key as soon as a checkpoint names it. */
js_status js_audit_rotate_key(js_audit *a, js_audit_sign_fn sign, void *sign_ctx,
                              const char *pubkey_pem, uint64_t timeout_ms, char *new_id,
                              js_err *err)
{
    JS_ENSURE(sign != NULL && pubkey_pem != NULL, err, JS_EINVAL, JS_R_AUDIT_ROTATE,
              "a key rotation needs the new key's signing callback and public key");
    EVP_PKEY *pub = NULL, *old = NULL;
    JS_GUARD(js_audit_pubkey_parse(pubkey_pem, &pub, err));
    char id[JS_AUDIT_KEY_ID_LEN + 1], old_id[JS_AUDIT_KEY_ID_LEN + 1];
    js_status st = js_audit_pubkey_id(pub, id, err);
    EVP_PKEY_free(pub);
    JS_GUARD(st);
    pthread_mutex_lock(&a->mu);
    char *cur = a->pubkey_pem != NULL ? strdup(a->pubkey_pem) : NULL;
    bool busy = a->rot_pending || a->closing || a->failed;
    pthread_mutex_unlock(&a->mu);
    if (cur == NULL || busy) {
        free(cur);
        return js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE,
                          busy ? "the audit log is failed, closing or already rotating its key"
                               : "the audit log has no public key to rotate from");
    }
    st = js_audit_pubkey_parse(cur, &old, err);
    if (st == JS_OK)
        st = js_audit_pubkey_id(old, old_id, err);
    EVP_PKEY_free(old);
    if (st == JS_OK && strcmp(id, old_id) == 0)
        st = js_err_set(err, JS_EINVAL, JS_R_AUDIT_ROTATE, "the new audit key is the key in force");
    char name[JS_AUDIT_KEY_ID_LEN + 32];
    if (st == JS_OK) {
        snprintf(name, sizeof(name), "audit-key-%s.pem", old_id);
        st = audit_write_file(a, name, cur, strlen(cur), err);
    }
    free(cur);
    if (st == JS_OK) {
        snprintf(name, sizeof(name), "audit-key-%s.pem", id);
        st = audit_write_file(a, name, pubkey_pem, strlen(pubkey_pem), err);
    }
    char *pem = st == JS_OK ? strdup(pubkey_pem) : NULL;
    if (st == JS_OK && pem == NULL)
        st = js_err_oom(err);
    JS_GUARD(st);
    pthread_mutex_lock(&a->mu);
    if (a->rot_pending || a->closing || a->failed) {
        pthread_mutex_unlock(&a->mu);
        free(pem);
        return js_err_set(err, JS_ESTATE, JS_R_AUDIT_ROTATE,
                          "the audit log is failed, closing or already rotating its key");
    }
    uint64_t done = a->rot_done;
    a->rot_pending = true;
    a->rot_sign = sign;
    a->rot_sign_ctx = sign_ctx;
    a->rot_pem = pem;
    memcpy(a->rot_id, id, sizeof(a->rot_id));
    pthread_cond_signal(&a->wake);
    struct timespec until =
        js_mono_deadline(timeout_ms > INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)timeout_ms);
    while (a->rot_done == done && !a->closing &&
           pthread_cond_timedwait(&a->rot_cv, &a->mu, &until) == 0)
        ;
    bool ok = a->rot_done != done;
    pthread_mutex_unlock(&a->mu);
    if (new_id != NULL)
        memcpy(new_id, id, JS_AUDIT_KEY_ID_LEN + 1);
    JS_ENSURE(ok, err, JS_EUNAVAIL, JS_R_AUDIT_ROTATE_PENDING,
              "the audit key rotation is not durable yet (the log is failing or slow); it "
              "stays pending and takes effect with the next durable checkpoint");
    return JS_OK;
}
