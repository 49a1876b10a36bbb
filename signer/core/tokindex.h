/*
 * tokindex.h - the issued-token index and the token revocations (issue 13):
 * what introspection (RFC 7662) needs to answer "did this signer issue this
 * exact token, and does it still stand?".
 *
 * One entry per token issued and not yet expired, keyed by jti, holding what
 * introspection returns plus the token's SHA-256 (a forged token that re-uses
 * a real jti has another hash). Entries are added only once the token's audit
 * record is durable (the same moment the token is released), and dropped once
 * expired. Revocations: one token (jti), every token of a subject issued at or
 * before a cut-off (a token_version per sub), every token of a caller issued
 * at or before a cut-off; each lives until every token it could cover has
 * expired (its `until`).
 *
 * Persistence is the audit log itself: every issued token is a "sign" record
 * with decision "allow", every revocation a "revoke" record, both durable
 * before they take effect; js_tokindex_load_audit() rebuilds both at start
 * from the records whose exp / until is still in the future, so a restart
 * changes nothing (a token active before is active after; one revoked before
 * is revoked after).
 *
 * Memory is bounded: at most max_entries tokens (JS_TOKINDEX_ENTRY_BYTES each,
 * documented in the README, plus the variable strings, each capped) and
 * JS_TOKINDEX_MAX_REVOCATIONS revocations. A full index refuses to add
 * (JS_EUNAVAIL tokindex.full): the signer then refuses to sign (fail closed:
 * no token is released that introspection would call forged).
 *
 * Thread-safety: any number of readers (introspection on worker threads)
 * and writers (the audit callbacks, the Admin service, the main thread's
 * sweep); one rwlock inside.
 */
#ifndef JS_TOKINDEX_H
#define JS_TOKINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define JS_TOKINDEX_MAX_REVOCATIONS 100000
/* The fixed memory cost of one live token, on top of its strings (jti, caller,
 * sub, aud, scope, cnf, kid, each + 1 NUL): the 76-byte entry header (chain
 * link, keyed hash, iat, exp, SHA-256, six 16-bit string offsets), glibc's
 * 8-byte chunk header and rounding to 16 (average 8), and 8 to 16 bytes of
 * bucket array (one pointer per bucket, at most two buckets per entry).
 * test_tokindex measures the real cost (about 240 bytes for a typical
 * signer token). */
#define JS_TOKINDEX_ENTRY_BYTES 108
/* The longest strings an entry keeps; longer ones are refused at add (the
 * signer's own limits keep real tokens far below). */
#define JS_TOKINDEX_STR_MAX 4096

typedef struct js_tokindex js_tokindex;

/* What the index keeps of one issued token (all strings NUL-terminated;
 * NULL = absent). On add, borrowed and copied; on lookup, copies the caller
 * owns (js_tok_info_clear). */
typedef struct js_tok_info {
    char *jti;          /* required, 1..128 printable ASCII without spaces */
    uint8_t sha256[32]; /* SHA-256 of the compact token */
    char *caller;       /* the issuing caller's typed identity (RFC 7662 client_id) */
    char *sub;
    char *aud_json; /* aud as compact JSON (a string or an array) */
    char *scope;    /* granted scopes, space-separated */
    char *cnf_json; /* the cnf claim as compact JSON (RFC 7800) */
    char *kid;
    int64_t iat;
    int64_t exp;
} js_tok_info;

void js_tok_info_clear(js_tok_info *t);

/* Why a token is revoked (js_tokindex_revoked). */
typedef enum js_tok_revoked {
    JS_TOK_NOT_REVOKED,
    JS_TOK_REVOKED_JTI,
    JS_TOK_REVOKED_SUB,
    JS_TOK_REVOKED_CALLER,
} js_tok_revoked;

/* max_entries: 1..2^26 (else JS_EINVAL tokindex.invalid). The hash key is
 * 128 random bits per index (JS_EINTERNAL tokindex.internal without them). */
js_status js_tokindex_new(size_t max_entries, js_tokindex **out, js_err *err) JS_WUR;
void js_tokindex_free(js_tokindex *ix);

/* Adds an issued token (after its audit record is durable). A jti already
 * present is replaced only if the hash is the same (idempotent); otherwise
 * JS_ESTATE tokindex.duplicate. JS_EUNAVAIL tokindex.full when max_entries
 * live tokens are held (a full index first drops the entries whose
 * exp <= now, at most once per expiry); JS_EINVAL tokindex.invalid for a bad
 * jti or an over-long string. An entry whose exp <= now is not added (JS_OK). */
js_status js_tokindex_add(js_tokindex *ix, const js_tok_info *t, int64_t now, js_err *err) JS_WUR;

/* Copies the entry for jti into *out (caller clears; *out is zeroed when
 * false). false: no such entry (never issued, or already expired and swept),
 * a jti that is not valid, or out of memory (fail closed: "not issued"). */
bool js_tokindex_find(js_tokindex *ix, const char *jti, js_tok_info *out);

/* Revocations, effective for every lookup after they return. `until` is
 * when the revocation can be forgotten (the latest exp of a token it could
 * cover: the jti's exp; for sub and caller cut-offs now + the longest
 * max_ttl + leeway). A sub or caller cut-off revokes every token of that sub
 * or caller whose iat <= cutoff. JS_ELIMIT tokindex.revocations_full beyond
 * JS_TOKINDEX_MAX_REVOCATIONS live ones. Revoking again moves a cut-off
 * later, never earlier. */
js_status js_tokindex_revoke_jti(js_tokindex *ix, const char *jti, int64_t until,
                                 js_err *err) JS_WUR;
js_status js_tokindex_revoke_sub(js_tokindex *ix, const char *sub, int64_t cutoff, int64_t until,
                                 js_err *err) JS_WUR;
js_status js_tokindex_revoke_caller(js_tokindex *ix, const char *caller, int64_t cutoff,
                                    int64_t until, js_err *err) JS_WUR;

/* Whether the token t (as found) is revoked, and how. */
js_tok_revoked js_tokindex_revoked(js_tokindex *ix, const js_tok_info *t);

/* Drops expired entries and revocations past their `until`. Returns how
 * many entries were dropped. */
size_t js_tokindex_sweep(js_tokindex *ix, int64_t now);

/* Live entries and revocations (metrics, /healthz). */
size_t js_tokindex_count(js_tokindex *ix);
size_t js_tokindex_revocation_count(js_tokindex *ix);

/*
 * Rebuilds the index and the revocations from the audit log in dir: every
 * "sign" record with decision "allow" whose exp > now (its jti, token_sha256,
 * caller, sub, aud, scopes, cnf, kid, iat, exp), every "revoke" record with
 * decision "allow" whose detail.until > now (detail.what "jti" | "sub" |
 * "caller", value, cutoff, until). Records that are not a well-formed token
 * or revocation are skipped. horizon is in seconds (the longest max_ttl plus
 * leeway): a segment whose successor's first record is older than
 * now - horizon holds no live token and no revocation in force and is skipped
 * after reading that one frame; horizon <= 0 reads every segment.
 * Damage (a torn tail, a bad frame) stops the load there with what was read
 * (start-up recovery has dealt with the log before); JS_ECONFIG tokindex.load
 * when the directory cannot be listed or nothing at all can be read. A full
 * index or revocation table fails the load (JS_EUNAVAIL tokindex.full,
 * JS_ELIMIT tokindex.revocations_full). *loaded gets the tokens loaded.
 */
js_status js_tokindex_load_audit(js_tokindex *ix, const char *dir, int64_t now, int64_t horizon,
                                 size_t *loaded, js_err *err) JS_WUR;

#endif
