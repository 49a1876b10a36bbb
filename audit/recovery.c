/*
 * recovery.c - the audit log at start-up (FORMAT.md §8): every segment is
 * scanned with the verifier's state machine against DIR/checkpoint.json (the
 * anchor, §5.3); a torn tail beyond the record the anchor names is copied
 * aside and cut, anything else refuses the start before any file is
 * changed; then the first batch (RECOVERY records, the opening checkpoint)
 * is written, before the writer thread exists.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "auditlog_int.h"
#include "hex.h"
#include "reader.h"
#include "record.h"
#include "scan.h"
#include "clock.h"

/* ---- open: crash recovery (FORMAT.md §8) ---------------------------------------------- */

typedef struct torn_info {
    bool present;
    char segment[PATH_MAX_AUDIT];
    uint64_t offset;
    uint64_t length;
    uint8_t sha256[32];
    char saved_as[PATH_MAX_AUDIT + 32];
} torn_info;

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

/* Copies the torn tail aside to DIR/<segment>.broken[.N] (etcd's practice),
 * then truncates the segment to the end of its last valid record. */
static js_status cut_torn_tail(js_audit *a, const char *path, uint64_t offset, torn_info *ti,
                               js_err *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    JS_ENSURE(fd >= 0, err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot open %s: %s", path,
              strerror(errno));
    struct stat st;
    js_status rc = JS_OK;
    uint8_t *tail = NULL;
    size_t len = 0;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < offset) {
        rc = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot stat %s", path);
        goto out;
    }
    len = (size_t)((uint64_t)st.st_size - offset);
    tail = malloc(len ? len : 1);
    if (tail == NULL) {
        rc = js_err_oom(err);
        goto out;
    }
    if (pread(fd, tail, len, (off_t)offset) != (ssize_t)len) {
        rc = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot read the tail of %s", path);
        goto out;
    }
    SHA256(tail, len, ti->sha256);
    char bpath[PATH_MAX_AUDIT + 32];
    int bfd = -1;
    for (unsigned i = 0; i < 1000 && bfd < 0; i++) {
        if (i == 0)
            snprintf(bpath, sizeof(bpath), "%s.broken", path);
        else
            snprintf(bpath, sizeof(bpath), "%s.broken.%u", path, i);
        bfd = open(bpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (bfd < 0 && errno != EEXIST)
            break;
    }
    if (bfd < 0) {
        rc = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_RECOVERY, "cannot create %s.broken: %s", path,
                        strerror(errno));
        goto out;
    }
    rc = audit_write_all(a, bfd, tail, len, "broken-tail copy", err);
    if (rc == JS_OK)
        rc = audit_sync_fd(a, bfd, "broken-tail copy", err);
    close(bfd);
    if (rc == JS_OK)
        rc = audit_sync_dir(a, err);
    if (rc == JS_OK && (ftruncate(fd, (off_t)offset) != 0 || audit_io_sync(a, fd) != 0))
        rc = js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_RECOVERY, "cannot truncate %s: %s", path,
                        strerror(errno));
    if (rc == JS_OK) {
        ti->present = true;
        snprintf(ti->segment, sizeof(ti->segment), "%s", base_name(path));
        snprintf(ti->saved_as, sizeof(ti->saved_as), "%s", base_name(bpath));
        ti->offset = offset;
        ti->length = len;
    }
out:
    free(tail);
    close(fd);
    return rc;
}

/* DIR/checkpoint.json as found at open: the local anchor (FORMAT.md §5.3). */
typedef struct anchor {
    bool present;
    uint8_t *payload; /* its exact bytes, without the trailing newline */
    size_t len;
    js_audit_checkpoint cp;
} anchor;

/* Where the log lost a record the anchor names (damaged or missing). */
typedef struct loss_info {
    bool present;
    char segment[PATH_MAX_AUDIT];
    uint64_t offset;
    uint64_t seq; /* the first record damaged or missing */
    bool damaged; /* false: the log simply ends before the named record */
} loss_info;

/* Loads DIR/checkpoint.json if it exists. A file that exists but cannot be
 * read as a checkpoint refuses the start: it is the anchor this log promised
 * (FORMAT.md §5.3), never silently dropped. */
static js_status anchor_load(const js_audit *a, anchor *an, js_err *err)
{
    char path[PATH_MAX_AUDIT];
    snprintf(path, sizeof(path), "%s/checkpoint.json", a->dir);
    js_err e;
    js_status st = js_audit_anchor_load(path, &an->payload, &an->len, &an->cp, &e);
    if (st == JS_ENOTFOUND)
        return JS_OK;
    if (st != JS_OK)
        return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_ANCHOR,
                          "audit log anchor unreadable, refusing to start (no file was changed): "
                          "%s",
                          e.msg);
    an->present = true;
    return JS_OK;
}

/* The refusal for a lost named record (FORMAT.md §8). */
static js_status anchor_refusal(const anchor *an, const loss_info *li, js_err *err)
{
    return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_ANCHOR_LOST,
                      "audit log lost a record checkpoint.json names, refusing to start (no file "
                      "was changed): segment %s offset %" PRIu64 " seq %" PRIu64
                      " is %s, but checkpoint.json names the checkpoint seq %" PRIu64
                      " (time %s, reason %s), so this is not crash damage; after investigating, "
                      "start once with --accept-audit-loss REASON to cut the log there and "
                      "record the loss",
                      li->segment, li->offset, li->seq,
                      li->damaged ? "damaged" : "missing (the log ends before it)", an->cp.seq,
                      an->cp.time, an->cp.reason);
}

/* Scans every segment with the verifier's state machine. Anything but a torn
 * tail beyond the record checkpoint.json names refuses to open (JS_ECONFIG)
 * naming segment, offset and seq -- before any file is changed. A loss of
 * the named record is cut only when the operator accepted it (li). */
static js_status recover_scan(js_audit *a, char **paths, size_t n, EVP_PKEY *pub, const anchor *an,
                              torn_info *ti, loss_info *li, js_err *err)
{
    js_audit_reader *r = NULL;
    JS_GUARD(js_audit_reader_new((const char *const *)paths, n, &r, err));
    js_audit_scan s;
    js_audit_scan_init(&s, NULL, false, 0);
    js_status st = JS_OK;
    bool ended = false;
    for (;;) {
        js_audit_record rec;
        js_err e;
        js_status rs = js_audit_reader_read(r, &rec, &ended, &e);
        if (rs == JS_OK && ended)
            break;
        if (rs == JS_EINVAL) {
            const js_audit_read_error *re = js_audit_reader_error(r);
            if (!re->torn_tail) {
                st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED,
                                "audit log damaged, refusing to start: segment %s offset %" PRIu64
                                " seq %" PRIu64 ": %s",
                                re->segment, re->offset, s.last_seq + 1, e.msg);
                break;
            }
            /* A torn write can only hit records after the last one
             * checkpoint.json names: that file is replaced after its record
             * is durable. Damage at or before it is not a crash. */
            if (an->present && s.last_seq + 1 <= an->cp.seq) {
                li->present = true;
                li->damaged = true;
                snprintf(li->segment, sizeof(li->segment), "%s", re->segment);
                li->offset = re->offset;
                li->seq = s.last_seq + 1;
                if (a->accept_reason == NULL) {
                    st = anchor_refusal(an, li, err);
                    break;
                }
            }
            char path[PATH_MAX_AUDIT];
            snprintf(path, sizeof(path), "%s", re->segment);
            st = cut_torn_tail(a, path, re->offset, ti, err);
            break;
        }
        if (rs != JS_OK) {
            st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED, "%s", e.msg);
            break;
        }
        if (js_audit_scan_record(&s, &rec, &e) != JS_OK) {
            st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED,
                            "audit log damaged, refusing to start: segment %s offset %" PRIu64
                            " seq %" PRIu64 ": %s",
                            rec.segment, rec.offset, rec.seq, e.msg);
            break;
        }
        if (an->present && rec.seq == an->cp.seq &&
            (rec.payload_len != an->len || memcmp(rec.payload, an->payload, an->len) != 0)) {
            st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_ANCHOR_MISMATCH,
                            "audit log does not match checkpoint.json, refusing to start (no file "
                            "was changed): segment %s offset %" PRIu64 " seq %" PRIu64
                            " differs from the checkpoint checkpoint.json names",
                            rec.segment, rec.offset, rec.seq);
            break;
        }
    }
    js_audit_reader_free(r);
    if (st == JS_OK && ended && an->present && s.last_seq < an->cp.seq) {
        /* The log ends cleanly before the named record: truncated at a record
         * boundary, or rolled back. */
        struct stat sb;
        li->present = true;
        li->damaged = false;
        snprintf(li->segment, sizeof(li->segment), "%s", paths[n - 1]);
        li->offset = stat(paths[n - 1], &sb) == 0 ? (uint64_t)sb.st_size : 0;
        li->seq = s.last_seq + 1;
        if (a->accept_reason == NULL)
            st = anchor_refusal(an, li, err);
    }
    JS_GUARD(st);
    if (s.have_cp) {
        JS_ENSURE(strcmp(s.last_cp.origin, a->origin) == 0, err, JS_ECONFIG, JS_R_AUDIT_ORIGIN,
                  "audit log in %s has origin \"%s\", not \"%s\"", a->dir, s.last_cp.origin,
                  a->origin);
        /* The last checkpoint's signature vouches for everything before it
         * (its root was recomputed above), so one verification suffices. */
        /* After a rotation (FORMAT.md §5.4) the last checkpoint may be the
         * announcing one, signed by the previous key: it must name ours.
         * One that names another key means we were started with the wrong
         * audit key: refused, so no checkpoint breaks the key chain. */
        char id[JS_AUDIT_KEY_ID_LEN + 1] = "";
        if (pub != NULL)
            JS_GUARD(js_audit_pubkey_id(pub, id, err));
        if (pub != NULL && s.last_cp.next_key[0] != '\0') {
            JS_ENSURE(strcmp(s.last_cp.next_key, id) == 0, err, JS_ECONFIG, JS_R_AUDIT_KEY_CHAIN,
                      "audit log checkpoint seq %" PRIu64 " announced audit key %s but this "
                      "signer's audit key is %s: start with the announced key",
                      s.last_cp.seq, s.last_cp.next_key, id);
        } else if (pub != NULL) {
            js_err e;
            if (js_audit_checkpoint_verify_sig(&s.last_cp, pub, &e) != JS_OK)
                return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DAMAGED,
                                  "audit log damaged, refusing to start: checkpoint seq %" PRIu64
                                  ": %s",
                                  s.last_cp.seq, e.msg);
        }
    }
    a->durable.next_seq = s.last_seq + 1;
    memcpy(a->durable.head, s.head, 32);
    a->durable.tree = s.tree;
    memcpy(a->durable.last_cp_hash, s.last_cp_hash, 32);
    a->durable.since_cp = s.since_cp;
    return JS_OK;
}

/* Body of the audit.loss_accepted RECOVERY record (FORMAT.md §8). */
static js_status loss_body(const js_audit *a, const anchor *an, const loss_info *li, char **out,
                           js_err *err)
{
    char hex[65];
    uint8_t h[32];
    SHA256(an->payload, an->len, h);
    js_hex_encode(h, 32, hex);
    json_t *cp = json_loadb((const char *)an->payload, an->len, 0, NULL);
    json_t *d = json_object();
    js_status st = JS_OK;
    if (cp == NULL || d == NULL ||
        json_object_set_new(d, "segment", json_string(base_name(li->segment))) != 0 ||
        json_object_set_new(d, "offset", json_integer((json_int_t)li->offset)) != 0 ||
        json_object_set_new(d, "seq", json_integer((json_int_t)li->seq)) != 0 ||
        json_object_set_new(d, "damage", json_string(li->damaged ? "damaged" : "missing")) != 0 ||
        json_object_set_new(d, "checkpoint_seq", json_integer((json_int_t)an->cp.seq)) != 0 ||
        json_object_set_new(d, "checkpoint_sha256", json_string(hex)) != 0 ||
        json_object_set_new(d, "checkpoint", json_incref(cp)) != 0 ||
        json_object_set_new(d, "operator_reason", json_string(a->accept_reason)) != 0)
        st = js_err_oom(err);
    if (st == JS_OK)
        st = audit_recovery_body(js_reason_name(JS_R_AUDIT_LOSS_ACCEPTED),
                                 "the operator accepted the loss of records checkpoint.json named",
                                 d, out, err);
    json_decref(cp);
    json_decref(d);
    return st;
}

js_status audit_open_log(js_audit *a, const js_audit_options *opts, js_err *err)
{
    if (mkdir(a->dir, 0700) != 0 && errno != EEXIST)
        return js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DIR,
                          "cannot create audit log directory %s: %s", a->dir, strerror(errno));
    EVP_PKEY *pub = NULL;
    if (opts->pubkey_pem != NULL)
        JS_GUARD(js_audit_pubkey_parse(opts->pubkey_pem, &pub, err));
    /* Nothing in DIR is written before the scan has accepted the log: a
     * refusal leaves every file as it was (FORMAT.md §8). */
    anchor an;
    memset(&an, 0, sizeof(an));
    char **paths = NULL;
    size_t n = 0;
    js_status st = anchor_load(a, &an, err);
    if (st == JS_OK)
        st = js_audit_list_segments(a->dir, &paths, &n, err);
    torn_info ti;
    memset(&ti, 0, sizeof(ti));
    loss_info li;
    memset(&li, 0, sizeof(li));
    if (st == JS_OK && n > 0) {
        st = recover_scan(a, paths, n, pub, &an, &ti, &li, err);
    } else if (st == JS_OK && an.present) {
        /* checkpoint.json names a record but no segment is left. */
        li.present = true;
        snprintf(li.segment, sizeof(li.segment), "%s/audit-000001.log", a->dir);
        li.seq = 1;
        if (a->accept_reason == NULL)
            st = anchor_refusal(&an, &li, err);
    }
    EVP_PKEY_free(pub);
    unsigned long last = n > 0 ? js_audit_segment_number(base_name(paths[n - 1])) : 1;
    js_audit_segments_free(paths, n);
    char *loss_rec = NULL; /* the audit.loss_accepted record, when a loss was accepted */
    if (st == JS_OK && li.present)
        st = loss_body(a, &an, &li, &loss_rec, err);
    free(an.payload);
    if (st == JS_OK && opts->pubkey_pem != NULL)
        st = audit_write_file(a, "audit-key.pem", opts->pubkey_pem, strlen(opts->pubkey_pem), err);
    if (st == JS_OK && last == 0)
        st = js_err_set(err, JS_ECONFIG, JS_R_AUDIT_DIR, "bad segment name in %s", a->dir);
    if (st == JS_OK)
        st = audit_open_segment(a, last, true, err);
    if (st == JS_OK && n == 0)
        st = audit_sync_dir(a, err);
    if (st != JS_OK) {
        free(loss_rec);
        return st;
    }

    /* The first batch: the RECOVERY record for a cut tail, then the opening
     * checkpoint. Written here, before the writer thread exists. */
    chain_state work = a->durable;
    batch b;
    memset(&b, 0, sizeof(b));
    st = JS_OK;
    if (ti.present) {
        char hex[65];
        js_hex_encode(ti.sha256, 32, hex);
        json_t *d = json_pack("{s:s, s:I, s:I, s:s, s:s}", "segment", ti.segment, "offset",
                              (json_int_t)ti.offset, "length", (json_int_t)ti.length, "sha256", hex,
                              "saved_as", ti.saved_as);
        char *body = NULL;
        st = d == NULL
                 ? js_err_oom(err)
                 : audit_recovery_body(js_reason_name(JS_R_AUDIT_TORN_TAIL),
                                       "torn tail cut at start-up (crash damage)", d, &body, err);
        json_decref(d);
        char t[25];
        js_wall_format(js_wall_ms(), t);
        if (st == JS_OK)
            st = audit_batch_add(&b, &work, t, body, false, err);
        free(body);
    }
    if (st == JS_OK && loss_rec != NULL) {
        char t[25];
        js_wall_format(js_wall_ms(), t);
        st = audit_batch_add(&b, &work, t, loss_rec, false, err);
    }
    free(loss_rec);
    if (st == JS_OK)
        st = audit_batch_add_checkpoint(a, &b, &work, "open", err);
    if (st == JS_OK)
        st = audit_write_batch(a, &b, &work, err);
    audit_batch_free(&b);
    if (st == JS_OK)
        st = audit_write_checkpoint_file(a, err);
    return st;
}
