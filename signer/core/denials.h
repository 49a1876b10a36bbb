/*
 * denials.h - the denial budget: how many refused requests per second a
 * caller may have recorded in full (audit record + log line). Denials beyond
 * the budget are folded: the daemon hands them to js_audit_note_folded(),
 * which writes at most one counted record per (caller, reason) per second,
 * and one "denials_folded" log line per such record (audit/FORMAT.md §3.1).
 * Nothing an allowed caller does ever goes through this module.
 *
 * One decision per denial drives both the audit record and the log line, so
 * the two always agree: admitted -> full record and full log line; folded ->
 * counted, summarised once a second by the audit writer.
 *
 * The budget is a token bucket per key (rate per second, burst) and one
 * global bucket over all keys, so an attacker holding many identities
 * cannot exceed global_rate full records per second in total. Keys are the
 * typed identity text (spiffe://..., dns:..., cn:...) or, when a request has
 * no identity, "peer " + the peer address without its port (a space: no
 * identity text has one before its first ':', so a URI SAN "peer:10.1.2.3"
 * cannot share an address's budget)
 * (js_denials_key()).
 *
 * Memory is fixed at _new: at most max_keys tracked keys, in stripes with
 * their own lock; a key is tracked by a keyed 64-bit hash (SipHash-2-4 with
 * a random key per process, so collisions cannot be chosen). A tracked key
 * whose bucket has refilled to its burst is indistinguishable from an
 * untracked one and its slot is reused. When a stripe has no free slot, the
 * key shares one overflow bucket (same rate and burst) with every other
 * such key. js_denials_admit() never allocates and holds at most two short
 * locks (the key's stripe, then the global bucket).
 *
 * Thread-safe. Worst case, whatever the number of identities:
 *   full records per second <= global_burst in the first second, then
 *   global_rate; per key <= burst, then rate.
 */
#ifndef JS_DENIALS_H
#define JS_DENIALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define JS_DENIALS_RATE         5u  /* full denial records per key per second */
#define JS_DENIALS_BURST        10u /* ... after an idle period */
#define JS_DENIALS_GLOBAL_RATE  50u /* full denial records per second, all keys */
#define JS_DENIALS_GLOBAL_BURST 100u
#define JS_DENIALS_MAX_KEYS     4096u        /* tracked keys (fixed memory) */
#define JS_DENIALS_KEY_MAX      (512u + 64u) /* "peer " + address, or an identity */

typedef struct js_denials js_denials;

typedef struct js_denials_options {
    uint32_t rate;         /* per key per second; 0 = JS_DENIALS_RATE */
    uint32_t burst;        /* per key; 0 = JS_DENIALS_BURST */
    uint32_t global_rate;  /* 0 = JS_DENIALS_GLOBAL_RATE */
    uint32_t global_burst; /* 0 = JS_DENIALS_GLOBAL_BURST */
    uint32_t max_keys;     /* 0 = JS_DENIALS_MAX_KEYS; rounded up to whole stripes */
} js_denials_options;

typedef struct js_denials_stats {
    uint64_t admitted;   /* denials recorded in full */
    uint64_t folded;     /* denials folded */
    uint64_t overflowed; /* denials whose key was not tracked (overflow bucket) */
} js_denials_stats;

/* opts may be NULL (defaults). JS_EINVAL if burst < 1 or rate < 1 after
 * defaults; JS_EINTERNAL on allocation or entropy failure. */
js_status js_denials_new(const js_denials_options *opts, js_denials **out, js_err *err) JS_WUR;

/* Accepts NULL. */
void js_denials_free(js_denials *d);

/* true: record this denial in full (audit record and log line); false: fold
 * it (js_audit_note_folded, no log line now). now_ms is a monotonic clock in
 * milliseconds (the caller passes it so tests control time). key is
 * NUL-terminated; only its first JS_DENIALS_KEY_MAX bytes are used. */
bool js_denials_admit(js_denials *d, const char *key, int64_t now_ms);

/* Counters since _new (relaxed atomics: a consistent-enough view for metrics). */
void js_denials_stats_get(const js_denials *d, js_denials_stats *out);

/*
 * The budget key of a request: the identity when it is non-empty, else
 * "peer " + the gRPC peer address without its port ("ipv4:127.0.0.1:5555"
 * -> "peer 127.0.0.1", "ipv6:[::1]:5555" -> "peer ::1"), else "peer ".
 * Always NUL-terminates out (cap >= 1); truncates at cap.
 */
void js_denials_key(const char *identity, const char *peer, char *out, size_t cap);

/*
 * The bare address of a gRPC peer, as js_denials_key uses it but without the
 * "peer " prefix: "ipv4:127.0.0.1:5555" -> "127.0.0.1", "ipv6:[::1]:5555" ->
 * "::1", any other form (e.g. "unix:/run/x.sock") unchanged, NULL -> "".
 * For a folded denial's peer (js_audit_note_folded). Always NUL-terminates
 * out (cap >= 1); truncates at cap (JS_DENIALS_KEY_MAX + 1 is always enough).
 */
void js_denials_peer_addr(const char *peer, char *out, size_t cap);

#endif
