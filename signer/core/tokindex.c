/*
 * tokindex.c - the issued-token index and the revocations (tokindex.h): two
 * chained hash tables under one rwlock. Buckets are chosen by SipHash-2-4
 * (OpenSSL's, keyed with 128 random bits per index) so a caller who picks
 * jti, sub or caller values cannot make them collide into one long chain.
 * Each entry is one allocation: a fixed header and its strings packed
 * behind it (16-bit offsets; JS_TOKINDEX_ENTRY_BYTES documents the cost).
 */
#include "tokindex.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "decision.h"
#include "query.h"
#include "reader.h"
#include "record.h"

#define MIN_BUCKETS     1024u
#define MAX_ENTRIES_CAP (1u << 26) /* 64 Mi tokens: far beyond any real signer */

/* The strings of an entry after the jti, in this order (offsets in off[]). */
enum { S_CALLER, S_SUB, S_AUD, S_SCOPE, S_CNF, S_KID, S_COUNT };

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    int64_t iat, exp;
    uint8_t sha256[32];
    uint16_t off[S_COUNT]; /* offset into str of each string; 0 = absent */
    char str[];            /* the jti at offset 0, then the others, each NUL-terminated */
} entry;

typedef struct revocation {
    struct revocation *next;
    uint64_t hash;
    int64_t cutoff; /* sub/caller: iat <= cutoff is revoked; unused for a jti */
    int64_t until;
    js_tok_revoked kind;
    char value[];
} revocation;

typedef struct table {
    void **buckets;  /* entry* or revocation* chains */
    size_t nbuckets; /* a power of two */
    size_t max_buckets;
    size_t count;
} table;

struct js_tokindex {
    pthread_rwlock_t lock;
    EVP_MAC_CTX *mac; /* SipHash-2-4 with the index's key; only duplicated, never used */
    size_t max_entries;
    table ents, revs;
    int64_t min_exp; /* a lower bound of the live entries' exp (INT64_MAX when none) */
};

/* ---- keyed hash ---------------------------------------------------------------------- */

/* SipHash-2-4 over tag || s. The template context is never updated, so
 * concurrent duplicates from readers are safe. Out of memory yields 0: every
 * key then shares one chain, which is slow but still exact (lookups compare
 * the strings). */
static uint64_t keyed_hash(const js_tokindex *ix, uint8_t tag, const char *s, size_t len)
{
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(ix->mac);
    uint8_t out[8] = {0};
    size_t outl = 0;
    if (c != NULL && EVP_MAC_update(c, &tag, 1) == 1 &&
        EVP_MAC_update(c, (const uint8_t *)s, len) == 1 &&
        EVP_MAC_final(c, out, &outl, sizeof(out)) == 1 && outl == sizeof(out)) {
        EVP_MAC_CTX_free(c);
        uint64_t h = 0;
        for (size_t i = 0; i < sizeof(out); i++)
            h = h << 8 | out[i];
        return h;
    }
    EVP_MAC_CTX_free(c);
    return 0;
}

static js_status mac_new(EVP_MAC_CTX **out, js_err *err)
{
    uint8_t key[16];
    JS_ENSURE(RAND_priv_bytes(key, sizeof(key)) == 1, err, JS_EINTERNAL, JS_R_TOKINDEX_INTERNAL,
              "no randomness for the token index's hash key");
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    EVP_MAC_CTX *c = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac);
    size_t size = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_END};
    bool ok = c != NULL && EVP_MAC_init(c, key, sizeof(key), params) == 1;
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok) {
        EVP_MAC_CTX_free(c);
        return js_err_set(err, JS_EINTERNAL, JS_R_TOKINDEX_INTERNAL,
                          "OpenSSL's SipHash is not available for the token index");
    }
    *out = c;
    return JS_OK;
}

/* ---- tables --------------------------------------------------------------------------- */

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static js_status table_init(table *t, size_t max_items, js_err *err)
{
    t->max_buckets = pow2_at_least(max_items);
    t->nbuckets = t->max_buckets < MIN_BUCKETS ? t->max_buckets : MIN_BUCKETS;
    t->buckets = calloc(t->nbuckets, sizeof(void *));
    t->count = 0;
    JS_ENSURE_ALLOC(t->buckets, err);
    return JS_OK;
}

/* Both kinds of node start with {next, hash}. */
typedef struct node {
    struct node *next;
    uint64_t hash;
} node;

/* Doubles the bucket array once the load factor passes 1 (until the cap).
 * Out of memory keeps the old array: chains just get longer. */
static void table_grow(table *t)
{
    if (t->count <= t->nbuckets || t->nbuckets >= t->max_buckets)
        return;
    size_t nb = t->nbuckets * 2;
    void **b = calloc(nb, sizeof(void *));
    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        node *n = t->buckets[i];
        while (n != NULL) {
            node *next = n->next;
            size_t j = (size_t)(n->hash & (nb - 1));
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static void table_free(table *t)
{
    for (size_t i = 0; t->buckets != NULL && i < t->nbuckets; i++) {
        node *n = t->buckets[i];
        while (n != NULL) {
            node *next = n->next;
            free(n);
            n = next;
        }
    }
    JS_FREE(t->buckets);
}

static const char *ent_str(const entry *e, int i)
{
    return e->off[i] != 0 ? e->str + e->off[i] : NULL;
}

/* The slot that points to the entry for jti (the chain's end when none). */
static entry **ent_slot(js_tokindex *ix, uint64_t h, const char *jti)
{
    entry **p = (entry **)&ix->ents.buckets[h & (ix->ents.nbuckets - 1)];
    while (*p != NULL && !((*p)->hash == h && strcmp((*p)->str, jti) == 0))
        p = &(*p)->next;
    return p;
}

static revocation **rev_slot(js_tokindex *ix, uint64_t h, js_tok_revoked kind, const char *v)
{
    revocation **p = (revocation **)&ix->revs.buckets[h & (ix->revs.nbuckets - 1)];
    while (*p != NULL && !((*p)->hash == h && (*p)->kind == kind && strcmp((*p)->value, v) == 0))
        p = &(*p)->next;
    return p;
}

/* ---- validation and packing ----------------------------------------------------------- */

/* 1..JS_JTI_MAX printable ASCII without spaces, 0x21..0x7e: what the signer
 * records (ours from claims_new_jti, a pre-built token's by policy_eval.c). */
static bool jti_valid(const char *jti)
{
    if (jti == NULL)
        return false;
    size_t n = strnlen(jti, JS_JTI_MAX + 1);
    if (n == 0 || n > JS_JTI_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (jti[i] <= 0x20 || jti[i] >= 0x7f)
            return false;
    return true;
}

static js_status entry_pack(const js_tok_info *t, entry **out, js_err *err)
{
    const char *s[S_COUNT] = {t->caller, t->sub, t->aud_json, t->scope, t->cnf_json, t->kid};
    static const char *const names[S_COUNT] = {"caller", "sub", "aud", "scope", "cnf", "kid"};
    JS_ENSURE(jti_valid(t->jti), err, JS_EINVAL, JS_R_TOKINDEX_INVALID,
              "jti must be 1..%d printable ASCII characters", JS_JTI_MAX);
    size_t len[S_COUNT];
    size_t total = strlen(t->jti) + 1;
    for (int i = 0; i < S_COUNT; i++) {
        len[i] = s[i] != NULL ? strnlen(s[i], JS_TOKINDEX_STR_MAX + 1) : 0;
        JS_ENSURE(len[i] <= JS_TOKINDEX_STR_MAX, err, JS_EINVAL, JS_R_TOKINDEX_INVALID,
                  "%s is longer than %u bytes", names[i], JS_TOKINDEX_STR_MAX);
        total += s[i] != NULL ? len[i] + 1 : 0;
    }
    /* 129 + 6 * 4097 bytes at most: every offset fits 16 bits. */
    entry *e = malloc(offsetof(entry, str) + total);
    JS_ENSURE_ALLOC(e, err);
    e->next = NULL;
    e->iat = t->iat;
    e->exp = t->exp;
    memcpy(e->sha256, t->sha256, sizeof(e->sha256));
    size_t pos = strlen(t->jti) + 1;
    memcpy(e->str, t->jti, pos);
    for (int i = 0; i < S_COUNT; i++) {
        if (s[i] == NULL) {
            e->off[i] = 0;
            continue;
        }
        e->off[i] = (uint16_t)pos;
        memcpy(e->str + pos, s[i], len[i]);
        e->str[pos + len[i]] = '\0';
        pos += len[i] + 1;
    }
    *out = e;
    return JS_OK;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

/* ---- public API ----------------------------------------------------------------------- */

void js_tok_info_clear(js_tok_info *t)
{
    if (t == NULL)
        return;
    free(t->jti);
    free(t->caller);
    free(t->sub);
    free(t->aud_json);
    free(t->scope);
    free(t->cnf_json);
    free(t->kid);
    memset(t, 0, sizeof(*t));
}

js_status js_tokindex_new(size_t max_entries, js_tokindex **out, js_err *err)
{
    JS_ENSURE(max_entries >= 1 && max_entries <= MAX_ENTRIES_CAP, err, JS_EINVAL,
              JS_R_TOKINDEX_INVALID, "the token index holds 1..%u entries", MAX_ENTRIES_CAP);
    js_tokindex *ix = calloc(1, sizeof(*ix));
    JS_ENSURE_ALLOC(ix, err);
    js_status st = mac_new(&ix->mac, err);
    if (st == JS_OK)
        st = table_init(&ix->ents, max_entries, err);
    if (st == JS_OK)
        st = table_init(&ix->revs, JS_TOKINDEX_MAX_REVOCATIONS, err);
    if (st == JS_OK && pthread_rwlock_init(&ix->lock, NULL) != 0)
        st = js_err_set(err, JS_EINTERNAL, JS_R_TOKINDEX_INTERNAL, "pthread_rwlock_init failed");
    if (st != JS_OK) {
        table_free(&ix->ents);
        table_free(&ix->revs);
        EVP_MAC_CTX_free(ix->mac);
        free(ix);
        return st;
    }
    ix->max_entries = max_entries;
    ix->min_exp = INT64_MAX;
    *out = ix;
    return JS_OK;
}

void js_tokindex_free(js_tokindex *ix)
{
    if (ix == NULL)
        return;
    table_free(&ix->ents);
    table_free(&ix->revs);
    EVP_MAC_CTX_free(ix->mac);
    pthread_rwlock_destroy(&ix->lock);
    free(ix);
}

/* Drops expired entries (write lock held); recomputes min_exp exactly. */
static size_t sweep_entries_locked(js_tokindex *ix, int64_t now)
{
    size_t dropped = 0;
    int64_t min_exp = INT64_MAX;
    for (size_t i = 0; i < ix->ents.nbuckets; i++) {
        entry **p = (entry **)&ix->ents.buckets[i];
        while (*p != NULL) {
            entry *e = *p;
            if (e->exp <= now) {
                *p = e->next;
                free(e);
                dropped++;
            } else {
                if (e->exp < min_exp)
                    min_exp = e->exp;
                p = &e->next;
            }
        }
    }
    ix->ents.count -= dropped;
    ix->min_exp = min_exp;
    return dropped;
}

js_status js_tokindex_add(js_tokindex *ix, const js_tok_info *t, int64_t now, js_err *err)
{
    entry *e = NULL;
    JS_GUARD(entry_pack(t, &e, err));
    if (e->exp <= now) {
        free(e); /* already expired: nothing introspection could find */
        return JS_OK;
    }
    e->hash = keyed_hash(ix, 'j', e->str, strlen(e->str));
    pthread_rwlock_wrlock(&ix->lock);
    entry **p = ent_slot(ix, e->hash, e->str);
    js_status st = JS_OK;
    if (*p != NULL) {
        if (CRYPTO_memcmp((*p)->sha256, e->sha256, sizeof(e->sha256)) == 0) {
            e->next = (*p)->next; /* the same token again: replace (idempotent) */
            free(*p);
            *p = e;
            if (e->exp < ix->min_exp)
                ix->min_exp = e->exp;
            e = NULL;
        } else {
            st = js_err_set(err, JS_ESTATE, JS_R_TOKINDEX_DUPLICATE,
                            "jti '%s' is already indexed for another token", e->str);
        }
    } else {
        /* Full of entries some of which may have expired: sweep once. The
         * exact min_exp it leaves makes a full index of live tokens refuse
         * at once instead of scanning on every add. */
        if (ix->ents.count >= ix->max_entries && now >= ix->min_exp) {
            sweep_entries_locked(ix, now);
            p = ent_slot(ix, e->hash, e->str);
        }
        if (ix->ents.count >= ix->max_entries) {
            st = js_err_set(err, JS_EUNAVAIL, JS_R_TOKINDEX_FULL,
                            "the token index is full (%zu live tokens)", ix->max_entries);
        } else {
            *p = e;
            if (e->exp < ix->min_exp)
                ix->min_exp = e->exp;
            e = NULL;
            ix->ents.count++;
            table_grow(&ix->ents);
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    free(e);
    return st;
}

bool js_tokindex_find(js_tokindex *ix, const char *jti, js_tok_info *out)
{
    memset(out, 0, sizeof(*out));
    if (!jti_valid(jti))
        return false;
    uint64_t h = keyed_hash(ix, 'j', jti, strlen(jti));
    bool oom = false, found = false;
    pthread_rwlock_rdlock(&ix->lock);
    const entry *e = *ent_slot(ix, h, jti);
    if (e != NULL) {
        found = true;
        out->jti = dup_or_null(e->str, &oom);
        memcpy(out->sha256, e->sha256, sizeof(out->sha256));
        out->caller = dup_or_null(ent_str(e, S_CALLER), &oom);
        out->sub = dup_or_null(ent_str(e, S_SUB), &oom);
        out->aud_json = dup_or_null(ent_str(e, S_AUD), &oom);
        out->scope = dup_or_null(ent_str(e, S_SCOPE), &oom);
        out->cnf_json = dup_or_null(ent_str(e, S_CNF), &oom);
        out->kid = dup_or_null(ent_str(e, S_KID), &oom);
        out->iat = e->iat;
        out->exp = e->exp;
    }
    pthread_rwlock_unlock(&ix->lock);
    if (oom) {
        /* Out of memory: "not found", so introspection answers inactive
         * (fail closed) rather than with a partial entry. */
        js_tok_info_clear(out);
        return false;
    }
    return found;
}

static js_status revoke(js_tokindex *ix, js_tok_revoked kind, const char *value, int64_t cutoff,
                        int64_t until, js_err *err)
{
    static const char *const what[] = {"", "jti", "sub", "caller"};
    bool ok = kind == JS_TOK_REVOKED_JTI
                  ? jti_valid(value)
                  : value != NULL && value[0] != '\0' &&
                        strnlen(value, JS_TOKINDEX_STR_MAX + 1) <= JS_TOKINDEX_STR_MAX;
    JS_ENSURE(ok, err, JS_EINVAL, JS_R_TOKINDEX_INVALID, "the revoked %s is empty or too long",
              what[kind]);
    size_t len = strlen(value);
    uint64_t h = keyed_hash(ix, (uint8_t)('0' + kind), value, len);
    js_status st = JS_OK;
    pthread_rwlock_wrlock(&ix->lock);
    revocation **p = rev_slot(ix, h, kind, value);
    if (*p != NULL) {
        /* Again: a cut-off and `until` only ever move later. */
        if (cutoff > (*p)->cutoff)
            (*p)->cutoff = cutoff;
        if (until > (*p)->until)
            (*p)->until = until;
    } else if (ix->revs.count >= JS_TOKINDEX_MAX_REVOCATIONS) {
        st = js_err_set(err, JS_ELIMIT, JS_R_TOKINDEX_REVOCATIONS_FULL,
                        "%u revocations are in force already", JS_TOKINDEX_MAX_REVOCATIONS);
    } else {
        revocation *r = malloc(offsetof(revocation, value) + len + 1);
        if (r == NULL) {
            st = js_err_oom(err);
        } else {
            r->next = NULL;
            r->hash = h;
            r->kind = kind;
            r->cutoff = cutoff;
            r->until = until;
            memcpy(r->value, value, len + 1);
            *p = r;
            ix->revs.count++;
            table_grow(&ix->revs);
        }
    }
    pthread_rwlock_unlock(&ix->lock);
    return st;
}

js_status js_tokindex_revoke_jti(js_tokindex *ix, const char *jti, int64_t until, js_err *err)
{
    return revoke(ix, JS_TOK_REVOKED_JTI, jti, INT64_MAX, until, err);
}

js_status js_tokindex_revoke_sub(js_tokindex *ix, const char *sub, int64_t cutoff, int64_t until,
                                 js_err *err)
{
    return revoke(ix, JS_TOK_REVOKED_SUB, sub, cutoff, until, err);
}

js_status js_tokindex_revoke_caller(js_tokindex *ix, const char *caller, int64_t cutoff,
                                    int64_t until, js_err *err)
{
    return revoke(ix, JS_TOK_REVOKED_CALLER, caller, cutoff, until, err);
}

js_tok_revoked js_tokindex_revoked(js_tokindex *ix, const js_tok_info *t)
{
    /* Hashes outside the lock; the kinds are checked in a fixed order so
     * the answer names the narrowest revocation. */
    const char *v[] = {NULL, t->jti, t->sub, t->caller};
    uint64_t h[4] = {0};
    for (int k = JS_TOK_REVOKED_JTI; k <= JS_TOK_REVOKED_CALLER; k++)
        if (v[k] != NULL)
            h[k] = keyed_hash(ix, (uint8_t)('0' + k), v[k], strlen(v[k]));
    js_tok_revoked res = JS_TOK_NOT_REVOKED;
    pthread_rwlock_rdlock(&ix->lock);
    for (int k = JS_TOK_REVOKED_JTI; k <= JS_TOK_REVOKED_CALLER && res == JS_TOK_NOT_REVOKED; k++) {
        if (v[k] == NULL)
            continue;
        const revocation *r = *rev_slot(ix, h[k], (js_tok_revoked)k, v[k]);
        if (r != NULL && (k == JS_TOK_REVOKED_JTI || t->iat <= r->cutoff))
            res = (js_tok_revoked)k;
    }
    pthread_rwlock_unlock(&ix->lock);
    return res;
}

size_t js_tokindex_sweep(js_tokindex *ix, int64_t now)
{
    pthread_rwlock_wrlock(&ix->lock);
    size_t dropped = sweep_entries_locked(ix, now);
    size_t revs = 0;
    for (size_t i = 0; i < ix->revs.nbuckets; i++) {
        revocation **p = (revocation **)&ix->revs.buckets[i];
        while (*p != NULL) {
            revocation *r = *p;
            if (r->until <= now) {
                *p = r->next;
                free(r);
                revs++;
            } else {
                p = &r->next;
            }
        }
    }
    ix->revs.count -= revs;
    pthread_rwlock_unlock(&ix->lock);
    return dropped;
}

size_t js_tokindex_count(js_tokindex *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->ents.count;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

size_t js_tokindex_revocation_count(js_tokindex *ix)
{
    pthread_rwlock_rdlock(&ix->lock);
    size_t n = ix->revs.count;
    pthread_rwlock_unlock(&ix->lock);
    return n;
}

/* ---- loading from the audit log -------------------------------------------------------- */

static bool member_int(const json_t *o, const char *key, int64_t *v)
{
    const json_t *j = json_object_get(o, key);
    if (!json_is_integer(j))
        return false;
    *v = (int64_t)json_integer_value(j);
    return true;
}

/* A "sign" allow record -> an entry. Records that do not describe a live,
 * well-formed token are skipped (JS_OK); a full index is an error. */
static js_status load_sign(js_tokindex *ix, const json_t *rec, int64_t now, size_t *loaded,
                           js_err *err)
{
    js_tok_info t;
    memset(&t, 0, sizeof(t));
    const char *hex = js_audit_member_str(rec, "token_sha256");
    t.jti = (char *)js_audit_member_str(rec, "jti");
    if (!member_int(rec, "exp", &t.exp) || t.exp <= now || t.jti == NULL || hex == NULL ||
        !js_audit_unhex(hex, strlen(hex), t.sha256, sizeof(t.sha256)))
        return JS_OK;
    if (!member_int(rec, "iat", &t.iat))
        t.iat = 0;
    t.caller = (char *)js_audit_member_str(rec, "caller");
    t.sub = (char *)js_audit_member_str(rec, "sub");
    t.scope = (char *)js_audit_member_str(rec, "scopes");
    t.kid = (char *)js_audit_member_str(rec, "kid");
    const json_t *aud = json_object_get(rec, "aud");
    const json_t *cnf = json_object_get(rec, "cnf");
    char *aud_json = aud != NULL ? json_dumps(aud, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char *cnf_json = cnf != NULL ? json_dumps(cnf, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    js_status st = JS_OK;
    if ((aud != NULL && aud_json == NULL) || (cnf != NULL && cnf_json == NULL)) {
        st = js_err_oom(err);
    } else {
        t.aud_json = aud_json;
        t.cnf_json = cnf_json;
        js_err e2;
        st = js_tokindex_add(ix, &t, now, &e2);
        if (st == JS_OK) {
            (*loaded)++;
        } else if (st == JS_EINVAL || st == JS_ESTATE) {
            st = JS_OK; /* not a token the signer could have issued: skip it */
        } else {
            *err = e2;
            js_err_prefix(err, "audit record seq %" JSON_INTEGER_FORMAT ": ",
                          json_integer_value(json_object_get(rec, "seq")));
        }
    }
    free(aud_json);
    free(cnf_json);
    return st;
}

/* A "revoke" allow record -> a revocation (detail {what, value, cutoff, until}). */
static js_status load_revoke(js_tokindex *ix, const json_t *rec, int64_t now, js_err *err)
{
    const json_t *d = json_object_get(rec, "detail");
    const char *what = js_audit_member_str(d, "what");
    const char *value = js_audit_member_str(d, "value");
    int64_t until = 0, cutoff = 0;
    if (!json_is_object(d) || what == NULL || value == NULL || !member_int(d, "until", &until) ||
        until <= now)
        return JS_OK;
    js_status st = JS_OK;
    js_err e2;
    if (strcmp(what, "jti") == 0)
        st = js_tokindex_revoke_jti(ix, value, until, &e2);
    else if (strcmp(what, "sub") == 0 && member_int(d, "cutoff", &cutoff))
        st = js_tokindex_revoke_sub(ix, value, cutoff, until, &e2);
    else if (strcmp(what, "caller") == 0 && member_int(d, "cutoff", &cutoff))
        st = js_tokindex_revoke_caller(ix, value, cutoff, until, &e2);
    if (st == JS_EINVAL)
        return JS_OK; /* malformed: skip */
    if (st != JS_OK) {
        *err = e2;
        js_err_prefix(err, "audit record seq %" JSON_INTEGER_FORMAT ": ",
                      json_integer_value(json_object_get(rec, "seq")));
    }
    return st;
}

/* The time of the first record of the segment at path; false if unknown. */
static bool first_record_ms(const char *path, int64_t *ms)
{
    js_audit_reader *r = NULL;
    js_err e;
    js_audit_record rec;
    bool end = true, ok = false;
    if (js_audit_reader_new(&path, 1, &r, &e) == JS_OK &&
        js_audit_reader_read(r, &rec, &end, &e) == JS_OK && !end)
        ok = js_audit_record_time(rec.json, ms);
    js_audit_reader_free(r);
    return ok;
}

js_status js_tokindex_load_audit(js_tokindex *ix, const char *dir, int64_t now, int64_t horizon,
                                 size_t *loaded, js_err *err)
{
    *loaded = 0;
    char **paths = NULL;
    size_t n = 0;
    js_err e2;
    if (js_audit_list_segments(dir, &paths, &n, &e2) != JS_OK)
        return js_err_set(err, JS_ECONFIG, JS_R_TOKINDEX_LOAD, "token index: %s", e2.msg);
    /*
     * Skip segment i when segment i+1 starts before now - horizon: every
     * record of i is older (records are appended in time order), so every
     * token it issued expired (exp <= iat + the longest max_ttl + leeway
     * = horizon) and every revocation it made ended (until is at most the
     * same bound). Costs one frame read per skipped segment. A segment
     * whose successor's first time is unreadable is read in full.
     */
    size_t start = 0;
    int64_t cut_ms = 0;
    bool can_skip = horizon > 0 && now > horizon && now - horizon < INT64_MAX / 1000;
    if (can_skip)
        cut_ms = (now - horizon) * 1000;
    while (can_skip && start + 1 < n) {
        int64_t t = 0;
        if (!first_record_ms(paths[start + 1], &t) || t >= cut_ms)
            break;
        start++;
    }
    js_audit_reader *r = NULL;
    js_status st = js_audit_reader_new((const char *const *)(paths + start), n - start, &r, &e2);
    if (st != JS_OK) {
        js_audit_segments_free(paths, n);
        return js_err_set(err, JS_ECONFIG, JS_R_TOKINDEX_LOAD, "token index: %s", e2.msg);
    }
    size_t records = 0;
    for (;;) {
        js_audit_record rec;
        bool end = false;
        st = js_audit_reader_read(r, &rec, &end, &e2);
        if (st != JS_OK) {
            /* Damage: start-up recovery has dealt with the log already, so
             * stop here with what was read; nothing read at all is an error. */
            if (records == 0)
                st = js_err_set(err, JS_ECONFIG, JS_R_TOKINDEX_LOAD, "token index: %s", e2.msg);
            else
                st = JS_OK;
            break;
        }
        if (end)
            break;
        records++;
        const char *decision = js_audit_member_str(rec.json, "decision");
        if (decision == NULL || strcmp(decision, "allow") != 0)
            continue;
        if (strcmp(rec.type, "sign") == 0)
            st = load_sign(ix, rec.json, now, loaded, err);
        else if (strcmp(rec.type, "revoke") == 0)
            st = load_revoke(ix, rec.json, now, err);
        if (st != JS_OK)
            break;
    }
    js_audit_reader_free(r);
    js_audit_segments_free(paths, n);
    return st;
}
