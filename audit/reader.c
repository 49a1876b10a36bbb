/*
 * reader.c - frame-by-frame iteration over audit log segments (FORMAT.md §2).
 *
 * A segment is read whole into memory (bounded by JS_AUDIT_MAX_SEGMENT_BYTES)
 * and walked with a cursor; each frame's length is checked against the bound
 * and the bytes left before it is used. Payloads must be JSON objects with an
 * integer "seq" and a string "type"; jansson parses them (duplicate members
 * rejected, so one payload cannot mean two things to two verifiers).
 */
#include "reader.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/sha.h>

#include "checkpoint.h"
#include "merkle.h"
#include "record.h"

/* A segment larger than this is refused (the writer rotates far below it). */
#define JS_AUDIT_MAX_SEGMENT_BYTES (1024u * 1024 * 1024)
/* Bytes of CRC work allowed when deciding whether damage is a torn tail; a
 * hostile file can otherwise make the search quadratic. Over budget, the
 * damage is (conservatively) not called a torn tail. */
#define TORN_SCAN_BUDGET (256u * 1024 * 1024)

struct js_audit_reader {
    char **paths; /* owned copies (file mode) */
    const js_audit_segment_mem *mem;
    size_t n;
    size_t idx; /* current segment */
    bool loaded;
    uint8_t *owned; /* file contents (file mode) */
    const uint8_t *buf;
    size_t len;
    size_t pos;
    uint64_t last_seq;
    json_t *json; /* the current record's JSON */
    bool stopped;
    js_err stop_err;
    js_audit_read_error rerr;
};

js_status js_audit_reader_new(const char *const *paths, size_t n, js_audit_reader **out,
                              js_err *err)
{
    js_audit_reader *r = calloc(1, sizeof(*r));
    JS_ENSURE_ALLOC(r, err);
    r->n = n;
    r->paths = calloc(n ? n : 1, sizeof(char *));
    if (r->paths == NULL) {
        free(r);
        return js_err_oom(err);
    }
    for (size_t i = 0; i < n; i++) {
        r->paths[i] = strdup(paths[i]);
        if (r->paths[i] == NULL) {
            js_audit_reader_free(r);
            return js_err_oom(err);
        }
    }
    *out = r;
    return JS_OK;
}

js_status js_audit_reader_new_mem(const js_audit_segment_mem *segs, size_t n, js_audit_reader **out,
                                  js_err *err)
{
    js_audit_reader *r = calloc(1, sizeof(*r));
    JS_ENSURE_ALLOC(r, err);
    r->n = n;
    r->mem = segs;
    *out = r;
    return JS_OK;
}

void js_audit_reader_free(js_audit_reader *r)
{
    if (r == NULL)
        return;
    if (r->paths != NULL)
        for (size_t i = 0; i < r->n; i++)
            free(r->paths[i]);
    free(r->paths);
    free(r->owned);
    json_decref(r->json);
    free(r);
}

static const char *seg_name(const js_audit_reader *r, size_t i)
{
    return r->mem != NULL ? r->mem[i].name : r->paths[i];
}

static js_status read_file(const char *path, uint8_t **out, size_t *len, js_err *err)
{
    FILE *f = fopen(path, "rb");
    JS_ENSURE(f != NULL, err, errno == ENOENT ? JS_ENOTFOUND : JS_EUNAVAIL, JS_R_AUDIT_IO,
              "cannot open segment %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size > JS_AUDIT_MAX_SEGMENT_BYTES) {
        fclose(f);
        return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_IO,
                          "segment %s is not a regular file of at most %u bytes", path,
                          JS_AUDIT_MAX_SEGMENT_BYTES);
    }
    size_t cap = (size_t)st.st_size;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (buf == NULL) {
        fclose(f);
        return js_err_oom(err);
    }
    /* Read what is there now (the writer may be appending): at most cap. */
    size_t n = fread(buf, 1, cap, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return js_err_set(err, JS_EUNAVAIL, JS_R_AUDIT_IO, "cannot read segment %s", path);
    }
    *out = buf;
    *len = n;
    return JS_OK;
}

static js_status load_segment(js_audit_reader *r, js_err *err)
{
    free(r->owned);
    r->owned = NULL;
    if (r->mem != NULL) {
        r->buf = r->mem[r->idx].data;
        r->len = r->mem[r->idx].len;
    } else {
        JS_GUARD(read_file(r->paths[r->idx], &r->owned, &r->len, err));
        r->buf = r->owned;
    }
    r->pos = 0;
    r->loaded = true;
    return JS_OK;
}

static bool later_segments_empty(const js_audit_reader *r)
{
    for (size_t i = r->idx + 1; i < r->n; i++) {
        if (r->mem != NULL) {
            if (r->mem[i].len > 0)
                return false;
        } else {
            struct stat st;
            if (stat(r->paths[i], &st) != 0 || st.st_size > 0)
                return false;
        }
    }
    return true;
}

/* Does a valid frame start anywhere in (from, len)? Any hit means the damage
 * is not just a torn final write (etcd's rule for a .broken tail). */
static bool valid_frame_after(const uint8_t *buf, size_t len, size_t from, bool *over_budget)
{
    uint64_t budget = TORN_SCAN_BUDGET;
    for (size_t off = from + 1; off + JS_AUDIT_FRAME_HDR + JS_AUDIT_MIN_PAYLOAD <= len; off++) {
        uint32_t l = (uint32_t)buf[off] | (uint32_t)buf[off + 1] << 8 |
                     (uint32_t)buf[off + 2] << 16 | (uint32_t)buf[off + 3] << 24;
        if (l < JS_AUDIT_MIN_PAYLOAD || l > JS_AUDIT_MAX_PAYLOAD ||
            l > len - off - JS_AUDIT_FRAME_HDR)
            continue;
        if (budget < l) {
            *over_budget = true;
            return true;
        }
        budget -= l;
        size_t pl = 0;
        if (js_audit_frame_decode(buf + off, len - off, &pl, NULL) == JS_OK)
            return true;
    }
    return false;
}

static js_status stop(js_audit_reader *r, bool torn, js_err *err)
{
    r->stopped = true;
    r->rerr.segment = seg_name(r, r->idx);
    r->rerr.segment_index = r->idx;
    r->rerr.offset = r->pos;
    r->rerr.bytes_left = r->len - r->pos;
    r->rerr.torn_tail = torn;
    r->stop_err = *err;
    return err->status;
}

js_status js_audit_reader_read(js_audit_reader *r, js_audit_record *rec, bool *end, js_err *err)
{
    js_err local;
    if (err == NULL)
        err = &local;
    *end = false;
    if (r->stopped) {
        *err = r->stop_err;
        return err->status;
    }
    json_decref(r->json);
    r->json = NULL;
    for (;;) {
        if (!r->loaded) {
            if (r->idx >= r->n) {
                *end = true; /* the clean end of the last segment: not an error */
                return JS_OK;
            }
            JS_GUARD(load_segment(r, err));
        }
        if (r->pos < r->len)
            break;
        r->loaded = false;
        r->idx++;
    }
    const uint8_t *frame = r->buf + r->pos;
    size_t avail = r->len - r->pos;
    size_t plen = 0;
    js_err ferr;
    if (js_audit_frame_decode(frame, avail, &plen, &ferr) != JS_OK) {
        bool over = false;
        bool torn = !valid_frame_after(r->buf, r->len, r->pos, &over) && later_segments_empty(r);
        js_err_set(err, JS_EINVAL, JS_R_AUDIT_FRAMING,
                   "%s offset %zu (record seq %" PRIu64 " expected): %s%s", seg_name(r, r->idx),
                   r->pos, r->last_seq + 1, ferr.msg,
                   over ? " (too much damage to look for a torn tail)" : "");
        return stop(r, torn, err);
    }
    const uint8_t *payload = frame + JS_AUDIT_FRAME_HDR;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES, &jerr);
    json_t *seq = json_object_get(j, "seq");
    json_t *type = json_object_get(j, "type");
    if (!json_is_object(j) || !json_is_integer(seq) || json_integer_value(seq) < 1 ||
        !json_is_string(type)) {
        json_decref(j);
        js_err_set(err, JS_EINVAL, JS_R_AUDIT_PAYLOAD,
                   "%s offset %zu (record seq %" PRIu64
                   " expected): payload is not a JSON object with \"seq\" >= 1 and \"type\"",
                   seg_name(r, r->idx), r->pos, r->last_seq + 1);
        return stop(r, false, err);
    }
    r->json = j;
    memset(rec, 0, sizeof(*rec));
    rec->seq = (uint64_t)json_integer_value(seq);
    rec->segment = seg_name(r, r->idx);
    rec->segment_index = r->idx;
    rec->offset = r->pos;
    rec->frame_len = JS_AUDIT_FRAME_HDR + plen;
    rec->payload = payload;
    rec->payload_len = plen;
    rec->json = j;
    rec->type = json_string_value(type);
    rec->is_checkpoint = strcmp(rec->type, "checkpoint") == 0;
    js_audit_record_hash(payload, plen, rec->hash);
    js_merkle_leaf_hash(payload, plen, rec->leaf_hash);
    r->pos += JS_AUDIT_FRAME_HDR + plen;
    r->last_seq = rec->seq;
    return JS_OK;
}

const js_audit_read_error *js_audit_reader_error(const js_audit_reader *r)
{
    return r->stopped ? &r->rerr : NULL;
}

/* FORMAT.md §1: "audit-" + the number zero-padded to at least 6 digits (the
 * writer's "%06lu", so a number of 7+ digits has no leading zero) + ".log";
 * numbers from 1 to 999999999. One name per number, so no two files can
 * claim the same place in the log. */
unsigned long js_audit_segment_number(const char *name)
{
    if (name == NULL || strncmp(name, "audit-", 6) != 0)
        return 0;
    const char *p = name + 6;
    unsigned long v = 0;
    size_t nd = 0;
    while (p[nd] >= '0' && p[nd] <= '9' && nd < 10) {
        v = v * 10 + (unsigned long)(p[nd] - '0');
        nd++;
    }
    if (nd < 6 || nd > 9 || (nd > 6 && p[0] == '0') || v == 0 || strcmp(p + nd, ".log") != 0)
        return 0;
    return v;
}

/* A name that looks like a segment to a person ("audit-*.log") but is not
 * one by §1: reported, never read. */
static bool stray_name(const char *name)
{
    size_t n = strlen(name);
    return strncmp(name, "audit-", 6) == 0 && n >= 10 && strcmp(name + n - 4, ".log") == 0 &&
           js_audit_segment_number(name) == 0;
}

typedef struct seg_ent {
    unsigned long num;
    char *path;
} seg_ent;

static int seg_cmp(const void *a, const void *b)
{
    const seg_ent *x = a, *y = b;
    return x->num < y->num ? -1 : x->num > y->num;
}

void js_audit_segments_free(char **paths, size_t n)
{
    if (paths == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
}

/* Appends a copy of name to a malloc'd array (grown one at a time: strays
 * are rare). */
static bool push_name(char ***v, size_t *n, const char *name)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(char *));
    if (nv == NULL)
        return false;
    *v = nv;
    nv[*n] = strdup(name);
    if (nv[*n] == NULL)
        return false;
    (*n)++;
    return true;
}

js_status js_audit_list_segments(const char *dir, char ***paths, size_t *n, js_err *err)
{
    return js_audit_list_segments_ex(dir, paths, n, NULL, NULL, err);
}

js_status js_audit_list_segments_ex(const char *dir, char ***paths, size_t *n, char ***strays,
                                    size_t *n_strays, js_err *err)
{
    *paths = NULL;
    *n = 0;
    if (strays != NULL) {
        *strays = NULL;
        *n_strays = 0;
    }
    DIR *d = opendir(dir);
    JS_ENSURE(d != NULL, err, errno == ENOENT ? JS_ENOTFOUND : JS_EUNAVAIL, JS_R_AUDIT_IO,
              "cannot open log directory %s: %s", dir, strerror(errno));
    seg_ent *v = NULL;
    size_t cnt = 0, cap = 0;
    js_status st = JS_OK;
    struct dirent *de;
    while (st == JS_OK && (de = readdir(d)) != NULL) {
        unsigned long num = js_audit_segment_number(de->d_name);
        if (num == 0) {
            if (strays != NULL && stray_name(de->d_name) &&
                !push_name(strays, n_strays, de->d_name))
                st = js_err_oom(err);
            continue;
        }
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            seg_ent *nv = realloc(v, nc * sizeof(*nv));
            if (nv == NULL) {
                st = js_err_oom(err);
                break;
            }
            v = nv;
            cap = nc;
        }
        size_t plen = strlen(dir) + 1 + strlen(de->d_name) + 1;
        char *p = malloc(plen);
        if (p == NULL) {
            st = js_err_oom(err);
            break;
        }
        snprintf(p, plen, "%s/%s", dir, de->d_name);
        v[cnt].num = num;
        v[cnt].path = p;
        cnt++;
    }
    closedir(d);
    if (st == JS_OK && cnt > 0) {
        qsort(v, cnt, sizeof(*v), seg_cmp);
        *paths = calloc(cnt, sizeof(char *));
        if (*paths == NULL)
            st = js_err_oom(err);
    }
    for (size_t i = 0; i < cnt; i++) {
        if (st == JS_OK)
            (*paths)[i] = v[i].path;
        else
            free(v[i].path);
    }
    free(v);
    if (st == JS_OK)
        *n = cnt;
    if (st != JS_OK && strays != NULL) {
        js_audit_segments_free(*strays, *n_strays);
        *strays = NULL;
        *n_strays = 0;
    }
    return st;
}

js_status js_audit_key_files_near(const char *segment, char ***paths, size_t *n, js_err *err)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", segment);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else
        *slash = '\0';
    DIR *d = opendir(dir);
    if (d == NULL)
        return JS_OK; /* no directory to look in: only the keys given */
    struct dirent *de;
    js_status st = JS_OK;
    while (st == JS_OK && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 15 || strncmp(de->d_name, "audit-key-", 10) != 0 ||
            strcmp(de->d_name + len - 4, ".pem") != 0)
            continue;
        if (*n >= JS_AUDIT_KEYS_MAX) {
            st = js_err_set(err, JS_EINVAL, JS_R_AUDIT_PUBKEY,
                            "%s: more than %d audit-key-*.pem files", dir, JS_AUDIT_KEYS_MAX);
            break;
        }
        char **grown = realloc(*paths, (*n + 1) * sizeof *grown);
        size_t plen = strlen(dir) + len + 2;
        char *p = grown != NULL ? malloc(plen) : NULL;
        if (grown != NULL)
            *paths = grown;
        if (p == NULL) {
            st = js_err_oom(err);
            break;
        }
        snprintf(p, plen, "%s/%s", dir, de->d_name);
        (*paths)[(*n)++] = p;
    }
    closedir(d);
    return st;
}
