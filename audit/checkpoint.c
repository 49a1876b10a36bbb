/*
 * checkpoint.c - parse, encode and verify signed audit checkpoints
 * (FORMAT.md §5). The signature covers a line-oriented text body rebuilt from
 * the parsed members (in the spirit of C2SP tlog-checkpoint / signed notes),
 * so a verifier never has to reproduce JSON serialisation to check it, and
 * every member that matters (origin, seq, size, root, head, time, previous
 * checkpoint, heartbeat) is bound to the signature: a seal is tied to its
 * position (the lesson of CVE-2023-31439).
 */
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>

#include "b64url.h"
#include "fileio.h"
#include "hex.h"
#include "record.h"

#define CP_BODY_MAGIC  "jwt-signer-audit-checkpoint/v1"
#define CP_FILE_MAX    (JS_AUDIT_MAX_PAYLOAD + 2)
#define PUBKEY_PEM_MAX (16u * 1024)

static const char *const cp_reasons[] = {"open",    "close",     "interval",
                                         "records", "heartbeat", "recovery"};
static const char *const cp_late_whys[] = {"stalled", "fsync", "sign"};

bool js_audit_origin_valid(const char *origin)
{
    if (origin == NULL)
        return false;
    size_t n = strlen(origin);
    if (n == 0 || n > JS_AUDIT_ORIGIN_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = origin[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static js_status get_u64(const json_t *o, const char *k, uint64_t *v, js_err *err)
{
    json_t *m = json_object_get(o, k);
    JS_ENSURE(json_is_integer(m) && json_integer_value(m) >= 0, err, JS_EINVAL,
              JS_R_AUDIT_CHECKPOINT, "checkpoint member \"%s\" is not a non-negative integer", k);
    *v = (uint64_t)json_integer_value(m);
    return JS_OK;
}

static js_status get_str(const json_t *o, const char *k, const char **v, js_err *err)
{
    json_t *m = json_object_get(o, k);
    JS_ENSURE(json_is_string(m), err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint member \"%s\" is not a string", k);
    *v = json_string_value(m);
    return JS_OK;
}

static js_status get_hash(const json_t *o, const char *k, uint8_t out[32], js_err *err)
{
    const char *s = NULL;
    JS_GUARD(get_str(o, k, &s, err));
    JS_ENSURE(js_audit_unhex(s, strlen(s), out, 32), err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint member \"%s\" is not 64 lower-case hex digits", k);
    return JS_OK;
}

/* FORMAT.md §5.1: late_ms (>= 1) only when late; late_why only with
 * late_ms, and late_why_ms exactly with late_why. Absent in old logs. */
static js_status parse_late(const json_t *rec, js_audit_checkpoint *cp, js_err *err)
{
    if (json_object_get(rec, "late_ms") != NULL) {
        JS_GUARD(get_u64(rec, "late_ms", &cp->late_ms, err));
        JS_ENSURE(cp->late_ms >= 1 && cp->late_ms <= JS_AUDIT_LATE_MAX_MS, err, JS_EINVAL,
                  JS_R_AUDIT_CHECKPOINT, "checkpoint late_ms is not 1..%" PRIu64,
                  JS_AUDIT_LATE_MAX_MS);
    }
    bool has_why = json_object_get(rec, "late_why") != NULL;
    bool has_why_ms = json_object_get(rec, "late_why_ms") != NULL;
    JS_ENSURE(has_why == has_why_ms && (!has_why || cp->late_ms > 0), err, JS_EINVAL,
              JS_R_AUDIT_CHECKPOINT,
              "checkpoint late_why and late_why_ms come together, and only with late_ms");
    if (!has_why)
        return JS_OK;
    const char *why = NULL;
    JS_GUARD(get_str(rec, "late_why", &why, err));
    bool known = false;
    for (size_t i = 0; i < sizeof(cp_late_whys) / sizeof(cp_late_whys[0]); i++)
        known = known || strcmp(why, cp_late_whys[i]) == 0;
    JS_ENSURE(known, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint late_why is not stalled, fsync or sign");
    memcpy(cp->late_why, why, strlen(why) + 1);
    JS_GUARD(get_u64(rec, "late_why_ms", &cp->late_why_ms, err));
    JS_ENSURE(cp->late_why_ms <= JS_AUDIT_LATE_MAX_MS, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint late_why_ms is over %" PRIu64, JS_AUDIT_LATE_MAX_MS);
    return JS_OK;
}

/* FORMAT.md §5.4: next_key, when present, is a key id: 43 base64url
 * characters decoding to 32 bytes. */
static js_status parse_next_key(const json_t *rec, js_audit_checkpoint *cp, js_err *err)
{
    if (json_object_get(rec, "next_key") == NULL)
        return JS_OK;
    const char *id = NULL;
    JS_GUARD(get_str(rec, "next_key", &id, err));
    uint8_t raw[33];
    size_t rlen = 0;
    js_err e2;
    JS_ENSURE(strlen(id) == JS_AUDIT_KEY_ID_LEN &&
                  b64url_decode(id, JS_AUDIT_KEY_ID_LEN, raw, sizeof(raw), &rlen, &e2) == JS_OK &&
                  rlen == 32,
              err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint next_key is not the base64url SHA-256 of a key (%d characters)",
              JS_AUDIT_KEY_ID_LEN);
    memcpy(cp->next_key, id, JS_AUDIT_KEY_ID_LEN + 1);
    return JS_OK;
}

js_status js_audit_checkpoint_parse(const json_t *rec, js_audit_checkpoint *cp, js_err *err)
{
    memset(cp, 0, sizeof(*cp));
    const char *type = NULL, *time = NULL, *reason = NULL, *origin = NULL, *sig = NULL;
    JS_ENSURE(json_is_object(rec), err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint is not a JSON object");
    JS_GUARD(get_str(rec, "type", &type, err));
    JS_ENSURE(strcmp(type, "checkpoint") == 0, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "record is not a checkpoint");
    JS_GUARD(get_u64(rec, "seq", &cp->seq, err));
    JS_GUARD(get_u64(rec, "tree_size", &cp->tree_size, err));
    JS_ENSURE(cp->seq >= 1 && cp->tree_size == cp->seq - 1, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint tree_size %" PRIu64 " is not seq - 1 (seq %" PRIu64 ")", cp->tree_size,
              cp->seq);
    JS_GUARD(get_str(rec, "time", &time, err));
    JS_ENSURE(strlen(time) == JS_AUDIT_TIME_LEN && js_audit_time_parse(time, &cp->time_ms), err,
              JS_EINVAL, JS_R_AUDIT_CHECKPOINT, "checkpoint time is not RFC 3339 UTC with ms");
    memcpy(cp->time, time, JS_AUDIT_TIME_LEN + 1);
    JS_GUARD(get_str(rec, "reason", &reason, err));
    bool known = false;
    for (size_t i = 0; i < sizeof(cp_reasons) / sizeof(cp_reasons[0]); i++)
        known = known || strcmp(reason, cp_reasons[i]) == 0;
    JS_ENSURE(known, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT, "unknown checkpoint reason");
    memcpy(cp->reason, reason, strlen(reason) + 1);
    JS_GUARD(get_str(rec, "origin", &origin, err));
    JS_ENSURE(js_audit_origin_valid(origin), err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint origin is not 1..%d characters of [A-Za-z0-9._:/@-]",
              JS_AUDIT_ORIGIN_MAX);
    memcpy(cp->origin, origin, strlen(origin) + 1);
    JS_GUARD(get_hash(rec, "root", cp->root, err));
    JS_GUARD(get_hash(rec, "prev", cp->head, err));
    JS_GUARD(get_hash(rec, "prev_checkpoint", cp->prev_checkpoint, err));
    JS_GUARD(get_u64(rec, "heartbeat_ms", &cp->heartbeat_ms, err));
    JS_GUARD(get_u64(rec, "interval_ms", &cp->interval_ms, err));
    JS_GUARD(parse_late(rec, cp, err));
    JS_GUARD(parse_next_key(rec, cp, err));
    JS_GUARD(get_str(rec, "sig", &sig, err));
    size_t slen = strlen(sig);
    JS_ENSURE(slen > 0 && slen <= B64URL_ENCODED_LEN(JS_AUDIT_SIG_MAX), err, JS_EINVAL,
              JS_R_AUDIT_CHECKPOINT, "checkpoint signature has a bad length");
    js_err e2;
    JS_ENSURE(b64url_decode(sig, slen, cp->sig, sizeof(cp->sig), &cp->sig_len, &e2) == JS_OK, err,
              JS_EINVAL, JS_R_AUDIT_CHECKPOINT, "checkpoint signature is not base64url");
    /* FORMAT.md §5.1/§7: ES256 in JOSE form is r||s, exactly 64 bytes (RFC
     * 7518 §3.4), checked with or without a key, so no other length can
     * pass a keyless verification. */
    JS_ENSURE(cp->sig_len == JS_AUDIT_SIG_LEN, err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "checkpoint signature is %zu bytes; ES256 r||s is exactly %d", cp->sig_len,
              JS_AUDIT_SIG_LEN);
    return JS_OK;
}

js_status js_audit_checkpoint_payload(const js_audit_checkpoint *cp, char *out, size_t cap,
                                      size_t *len, js_err *err)
{
    char *members = NULL;
    JS_GUARD(js_audit_checkpoint_members(cp, &members, err));
    js_status st =
        js_audit_payload_assemble(cp->seq, cp->time, members, cp->head, out, cap, len, err);
    free(members);
    return st;
}

js_status js_audit_checkpoint_check_canonical(const js_audit_checkpoint *cp, const uint8_t *payload,
                                              size_t len, js_err *err)
{
    char *canon = malloc(JS_AUDIT_MAX_PAYLOAD + 1);
    JS_ENSURE_ALLOC(canon, err);
    size_t clen = 0;
    js_err e2;
    bool same =
        js_audit_checkpoint_payload(cp, canon, JS_AUDIT_MAX_PAYLOAD + 1, &clen, &e2) == JS_OK &&
        clen == len && memcmp(canon, payload, len) == 0;
    free(canon);
    /* The signature covers the §5.2 body, not the record bytes: only this
     * comparison makes the record's bytes (extra or reordered members,
     * whitespace, escapes) as fixed as what is signed. */
    JS_ENSURE(same, err, JS_EINVAL, JS_R_AUDIT_NONCANONICAL,
              "checkpoint record bytes differ from the canonical serialisation of its signed "
              "members (extra or reordered members, whitespace or escapes; FORMAT.md §5.1)");
    return JS_OK;
}

js_status js_audit_checkpoint_body(const js_audit_checkpoint *cp, char **body, size_t *len,
                                   js_err *err)
{
    char root[65], head[65], prevcp[65];
    js_hex_encode(cp->root, 32, root);
    js_hex_encode(cp->head, 32, head);
    js_hex_encode(cp->prev_checkpoint, 32, prevcp);
    size_t cap = 1024;
    char *b = malloc(cap);
    JS_ENSURE_ALLOC(b, err);
    int n = snprintf(b, cap,
                     CP_BODY_MAGIC "\norigin %s\nseq %" PRIu64 "\ntree_size %" PRIu64
                                   "\nroot %s\nhead %s\nprev_checkpoint %s\ntime %s\nreason %s\n"
                                   "heartbeat_ms %" PRIu64 "\ninterval_ms %" PRIu64 "\n",
                     cp->origin, cp->seq, cp->tree_size, root, head, prevcp, cp->time, cp->reason,
                     cp->heartbeat_ms, cp->interval_ms);
    /* The lateness evidence is signed, so it cannot be added to hide a gap
     * or removed to fake one; lines are absent when the members are, so
     * bodies of logs written before them are unchanged. */
    if (n > 0 && (size_t)n < cap && cp->late_ms > 0)
        n += snprintf(b + n, cap - (size_t)n, "late_ms %" PRIu64 "\n", cp->late_ms);
    if (n > 0 && (size_t)n < cap && cp->late_why[0] != '\0')
        n += snprintf(b + n, cap - (size_t)n, "late_why %s\nlate_why_ms %" PRIu64 "\n",
                      cp->late_why, cp->late_why_ms);
    /* The announcement of the next key is signed by the current one: the
     * only way a verifier learns to trust the next (FORMAT.md §5.4). */
    if (n > 0 && (size_t)n < cap && cp->next_key[0] != '\0')
        n += snprintf(b + n, cap - (size_t)n, "next_key %s\n", cp->next_key);
    if (n <= 0 || (size_t)n >= cap) {
        free(b);
        return js_err_set(err, JS_EINTERNAL, JS_R_AUDIT_CHECKPOINT, "checkpoint body too long");
    }
    *body = b;
    *len = (size_t)n;
    return JS_OK;
}

js_status js_audit_checkpoint_members(const js_audit_checkpoint *cp, char **out, js_err *err)
{
    JS_ENSURE(js_audit_origin_valid(cp->origin), err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
              "bad origin");
    char root[65], prevcp[65];
    char sig[B64URL_ENCODED_LEN(JS_AUDIT_SIG_MAX) + 1];
    js_hex_encode(cp->root, 32, root);
    js_hex_encode(cp->prev_checkpoint, 32, prevcp);
    JS_ENSURE(cp->sig_len > 0 && cp->sig_len <= JS_AUDIT_SIG_MAX, err, JS_EINTERNAL,
              JS_R_AUDIT_CHECKPOINT, "bad signature length");
    b64url_encode(cp->sig, cp->sig_len, sig, sizeof(sig));
    size_t cap = 1024;
    char *b = malloc(cap);
    JS_ENSURE_ALLOC(b, err);
    /* origin, reason and late_why are from fixed character sets: no
     * escaping needed. The late members sit between interval_ms and sig,
     * present only when late (FORMAT.md §5.1). */
    char late[128] = "";
    if (cp->late_ms > 0 && cp->late_why[0] != '\0')
        snprintf(late, sizeof(late),
                 ",\"late_ms\":%" PRIu64 ",\"late_why\":\"%s\",\"late_why_ms\":%" PRIu64,
                 cp->late_ms, cp->late_why, cp->late_why_ms);
    else if (cp->late_ms > 0)
        snprintf(late, sizeof(late), ",\"late_ms\":%" PRIu64, cp->late_ms);
    /* next_key is base64url (no escaping), after the late members. */
    char next[JS_AUDIT_KEY_ID_LEN + 16] = "";
    if (cp->next_key[0] != '\0')
        snprintf(next, sizeof(next), ",\"next_key\":\"%s\"", cp->next_key);
    int n = snprintf(
        b, cap,
        "\"type\":\"checkpoint\",\"reason\":\"%s\",\"origin\":\"%s\",\"tree_size\":%" PRIu64
        ",\"root\":\"%s\",\"prev_checkpoint\":\"%s\",\"heartbeat_ms\":%" PRIu64
        ",\"interval_ms\":%" PRIu64 "%s%s,\"sig\":\"%s\"",
        cp->reason, cp->origin, cp->tree_size, root, prevcp, cp->heartbeat_ms, cp->interval_ms,
        late, next, sig);
    if (n <= 0 || (size_t)n >= cap) {
        free(b);
        return js_err_set(err, JS_EINTERNAL, JS_R_AUDIT_CHECKPOINT, "checkpoint too long");
    }
    *out = b;
    return JS_OK;
}

/* r||s (RFC 7518 §3.4) -> DER ECDSA-Sig-Value for OpenSSL. The signer
 * core's jws_verify does the same, but audit/ must not link the daemon. */
static js_status verify_es256(EVP_PKEY *pub, const uint8_t *msg, size_t len, const uint8_t *sig,
                              size_t sig_len, js_err *err)
{
    JS_ENSURE(sig_len == 64, err, JS_EINVAL, JS_R_AUDIT_BAD_SIGNATURE,
              "checkpoint signature is %zu bytes; ES256 r||s is 64", sig_len);
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL);
    BIGNUM *s = BN_bin2bn(sig + 32, 32, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return js_err_oom(err);
    }
    uint8_t *der = NULL;
    int der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    JS_ENSURE(der_len > 0, err, JS_EINTERNAL, JS_R_INTERNAL_OOM, "out of memory");
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    int ok = mctx != NULL && EVP_DigestVerifyInit(mctx, NULL, EVP_sha256(), NULL, pub) == 1 &&
             EVP_DigestVerify(mctx, der, (size_t)der_len, msg, len) == 1;
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    JS_ENSURE(ok, err, JS_EINVAL, JS_R_AUDIT_BAD_SIGNATURE,
              "checkpoint signature does not verify with the audit key");
    return JS_OK;
}

js_status js_audit_checkpoint_verify_sig(const js_audit_checkpoint *cp, EVP_PKEY *pub, js_err *err)
{
    char *body = NULL;
    size_t len = 0;
    JS_GUARD(js_audit_checkpoint_body(cp, &body, &len, err));
    js_status st = verify_es256(pub, (const uint8_t *)body, len, cp->sig, cp->sig_len, err);
    free(body);
    return st;
}

static js_status pubkey_check(EVP_PKEY *k, js_err *err)
{
    char group[32] = "";
    size_t glen = 0;
    int ok = EVP_PKEY_get_base_id(k) == EVP_PKEY_EC &&
             EVP_PKEY_get_utf8_string_param(k, "group", group, sizeof(group), &glen) == 1 &&
             strcmp(group, "prime256v1") == 0;
    JS_ENSURE(ok, err, JS_EINVAL, JS_R_AUDIT_PUBKEY, "the audit key is not a P-256 (ES256) key");
    return JS_OK;
}

js_status js_audit_pubkey_parse(const char *pem, EVP_PKEY **out, js_err *err)
{
    JS_ENSURE(pem != NULL && strlen(pem) <= PUBKEY_PEM_MAX, err, JS_EINVAL, JS_R_AUDIT_PUBKEY,
              "audit public key PEM missing or larger than %u bytes", PUBKEY_PEM_MAX);
    BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
    JS_ENSURE_ALLOC(bio, err);
    EVP_PKEY *k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    JS_ENSURE(k != NULL, err, JS_EINVAL, JS_R_AUDIT_PUBKEY,
              "audit public key is not a PEM SubjectPublicKeyInfo");
    js_status st = pubkey_check(k, err);
    if (st != JS_OK) {
        EVP_PKEY_free(k);
        return st;
    }
    *out = k;
    return JS_OK;
}

js_status js_audit_pubkey_id(EVP_PKEY *pub, char *out, js_err *err)
{
    uint8_t *der = NULL;
    int dlen = i2d_PUBKEY(pub, &der);
    JS_ENSURE(dlen > 0, err, JS_EINVAL, JS_R_AUDIT_PUBKEY, "cannot encode the audit public key");
    uint8_t h[32];
    unsigned hlen = 0;
    int ok = EVP_Digest(der, (size_t)dlen, h, &hlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    JS_ENSURE(ok == 1 && hlen == 32, err, JS_EINTERNAL, JS_R_INTERNAL_CRYPTO, "SHA-256 failed");
    b64url_encode(h, 32, out, JS_AUDIT_KEY_ID_LEN + 1);
    return JS_OK;
}

/* Reads a whole small file (at most max bytes) into a NUL-terminated buffer
 * with the one bounded reader (fileio.h: regular files only, growth while
 * reading caught, a FIFO never blocks). flags: JS_FILE_FOLLOW for the files
 * an operator names to jwt-audit (as for every operator-named file); 0 for
 * the writer's own files, never opened through a symlink. Statuses and
 * messages as before: missing JS_ENOTFOUND, cannot open JS_EUNAVAIL, too
 * large, unreadable or not a regular file JS_EINVAL; reason "audit.io". */
static js_status read_small(const char *path, size_t max, unsigned flags, char **out, size_t *len,
                            js_err *err)
{
    js_file_info fi;
    memset(&fi, 0, sizeof(fi));
    switch (js_file_read(path, max, flags, out, len, &fi)) {
    case JS_FILE_OK:
        return JS_OK;
    case JS_FILE_OPEN:
        return js_err_set(err, fi.sys_errno == ENOENT ? JS_ENOTFOUND : JS_EUNAVAIL, JS_R_AUDIT_IO,
                          "cannot open %s: %s", path, strerror(fi.sys_errno));
    case JS_FILE_NOT_REGULAR:
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_IO, "%s: not a regular file", path);
    case JS_FILE_TOO_LARGE:
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_IO, "%s: file too large", path);
    case JS_FILE_READ:
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_IO, "%s: read error", path);
    case JS_FILE_NOMEM:
    default:
        return js_err_oom(err);
    }
}

js_status js_audit_pubkey_load(const char *path, EVP_PKEY **out, js_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    JS_GUARD(read_small(path, PUBKEY_PEM_MAX, JS_FILE_FOLLOW, &pem, &len, err));
    js_status st = js_audit_pubkey_parse(pem, out, err);
    free(pem);
    if (st != JS_OK)
        js_err_prefix(err, "%s: ", path);
    return st;
}

js_status js_audit_pubkeys_load(const char *path, EVP_PKEY ***keys, size_t *n, js_err *err)
{
    char *pem = NULL;
    size_t len = 0;
    JS_GUARD(read_small(path, PUBKEY_PEM_MAX * 4, JS_FILE_FOLLOW, &pem, &len, err));
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL) {
        free(pem);
        return js_err_oom(err);
    }
    js_status st = JS_OK;
    size_t found = 0;
    EVP_PKEY *k = NULL;
    while (st == JS_OK && (k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL)) != NULL) {
        st = pubkey_check(k, err);
        if (st == JS_OK && *n >= JS_AUDIT_KEYS_MAX)
            st = js_err_set(err, JS_EINVAL, JS_R_AUDIT_PUBKEY, "more than %d audit keys",
                            JS_AUDIT_KEYS_MAX);
        EVP_PKEY **grown = st == JS_OK ? realloc(*keys, (*n + 1) * sizeof(**keys)) : NULL;
        if (st == JS_OK && grown == NULL)
            st = js_err_oom(err);
        if (st != JS_OK) {
            EVP_PKEY_free(k);
            break;
        }
        *keys = grown;
        (*keys)[(*n)++] = k;
        found++;
    }
    BIO_free(bio);
    free(pem);
    if (st == JS_OK && found == 0)
        st = js_err_set(err, JS_EINVAL, JS_R_AUDIT_PUBKEY, "no PEM public key");
    if (st != JS_OK)
        js_err_prefix(err, "%s: ", path);
    return st;
}

static js_status checkpoint_load(const char *path, unsigned flags, uint8_t **payload, size_t *len,
                                 js_audit_checkpoint *cp, js_err *err)
{
    char *buf = NULL;
    size_t n = 0;
    JS_GUARD(read_small(path, CP_FILE_MAX, flags, &buf, &n, err));
    /* FORMAT.md §5.3: the record's bytes and one "\n". A file without it
     * was cut short (or not written by the writer): refused. */
    if (n == 0 || buf[n - 1] != '\n') {
        free(buf);
        return js_err_set(
            err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT,
            "%s: does not end in \"\\n\" (FORMAT.md §5.3): incomplete checkpoint file", path);
    }
    n--;
    json_error_t jerr;
    json_t *j = n >= JS_AUDIT_MIN_PAYLOAD && n <= JS_AUDIT_MAX_PAYLOAD
                    ? json_loadb(buf, n, JSON_REJECT_DUPLICATES, &jerr)
                    : NULL;
    if (j == NULL) {
        free(buf);
        return js_err_set(err, JS_EINVAL, JS_R_AUDIT_CHECKPOINT, "%s: not a checkpoint record",
                          path);
    }
    js_status st = js_audit_checkpoint_parse(j, cp, err);
    json_decref(j);
    if (st == JS_OK)
        st = js_audit_checkpoint_check_canonical(cp, (const uint8_t *)buf, n, err);
    if (st != JS_OK) {
        free(buf);
        js_err_prefix(err, "%s: ", path);
        return st;
    }
    *payload = (uint8_t *)buf;
    *len = n;
    return JS_OK;
}

js_status js_audit_checkpoint_load(const char *path, uint8_t **payload, size_t *len,
                                   js_audit_checkpoint *cp, js_err *err)
{
    return checkpoint_load(path, JS_FILE_FOLLOW, payload, len, cp, err);
}

js_status js_audit_anchor_load(const char *path, uint8_t **payload, size_t *len,
                               js_audit_checkpoint *cp, js_err *err)
{
    return checkpoint_load(path, 0, payload, len, cp, err);
}
