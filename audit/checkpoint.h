/*
 * checkpoint.h - signed checkpoints of the audit log (FORMAT.md §5):
 * parse a checkpoint record, rebuild the exact signed body, check its ES256
 * signature (JOSE r||s, RFC 7518 §3.4) with the audit public key.
 *
 * API agreed with the jwt-audit CLI; changes must be coordinated.
 *
 * A checkpoint with seq S commits to the tree of the S-1 records before it
 * (tree_size = S-1): their RFC 6962 Merkle root, the chain head (hash of
 * record S-1, which is also the checkpoint's "prev"), the origin, the time,
 * the previous checkpoint's record hash and the writer's heartbeat/interval.
 */
#ifndef JS_AUDIT_CHECKPOINT_H
#define JS_AUDIT_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "err.h"

#define JS_AUDIT_ORIGIN_MAX 128 /* bytes of an origin id, NUL excluded */
#define JS_AUDIT_SIG_MAX    132 /* raw signature buffer (ES256 is 64) */
#define JS_AUDIT_SIG_LEN    64  /* the only signature length accepted: ES256 r||s */
#define JS_AUDIT_TIME_LEN   24  /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
/* A checkpoint sealed more than this after its schedule records late_ms
 * (FORMAT.md §5.1): scheduler jitter below it is not worth a member. */
#define JS_AUDIT_LATE_TOLERANCE_MS 200
/* Largest late_ms / late_why_ms accepted (about 10 years): bounds the sums
 * the verifier makes with them. */
#define JS_AUDIT_LATE_MAX_MS (UINT64_C(10) * 366 * 24 * 3600 * 1000)
/* An audit key's id (FORMAT.md §5.4): base64url (no padding) of the SHA-256
 * of its SubjectPublicKeyInfo DER, 43 characters. */
#define JS_AUDIT_KEY_ID_LEN 43

typedef struct js_audit_checkpoint {
    uint64_t seq;       /* the checkpoint record's own seq */
    uint64_t tree_size; /* == seq - 1 */
    char origin[JS_AUDIT_ORIGIN_MAX + 1];
    char time[JS_AUDIT_TIME_LEN + 1];
    int64_t time_ms;  /* time as ms since the Unix epoch */
    char reason[16];  /* "open", "close", "interval", "records", "heartbeat", "recovery" */
    uint8_t root[32]; /* Merkle root over records 1..tree_size */
    uint8_t head[32]; /* chain hash of record tree_size (== "prev") */
    uint8_t prev_checkpoint[32]; /* record hash of the previous checkpoint, zeros if none */
    uint64_t heartbeat_ms;
    uint64_t interval_ms;
    /* FORMAT.md §5.1 lateness evidence, signed (§5.2); all absent (0, "")
     * unless the writer sealed more than JS_AUDIT_LATE_TOLERANCE_MS after
     * its schedule. late_why is "" or one of "stalled", "fsync", "sign";
     * late_why_ms the duration of that cause (0 when late_why is ""). */
    uint64_t late_ms;
    char late_why[16];
    uint64_t late_why_ms;
    /* FORMAT.md §5.4 key rotation, signed (§5.2): the id of the key that
     * signs every later checkpoint; "" (absent) when the key is unchanged. */
    char next_key[JS_AUDIT_KEY_ID_LEN + 1];
    uint8_t sig[JS_AUDIT_SIG_MAX];
    size_t sig_len;
} js_audit_checkpoint;

/* Parses and bounds-checks a checkpoint record's JSON (type "checkpoint").
 * JS_EINVAL "audit.checkpoint" naming the bad member. */
js_status js_audit_checkpoint_parse(const json_t *rec, js_audit_checkpoint *cp, js_err *err) JS_WUR;

/* The signed body (FORMAT.md §5.2) into a malloc'd buffer. */
js_status js_audit_checkpoint_body(const js_audit_checkpoint *cp, char **body, size_t *len,
                                   js_err *err) JS_WUR;

/* JS_OK when cp->sig is a valid ES256 signature of the body under pub;
 * JS_EINVAL "audit.bad_signature" otherwise. */
js_status js_audit_checkpoint_verify_sig(const js_audit_checkpoint *cp, EVP_PKEY *pub,
                                         js_err *err) JS_WUR;

/* Loads a P-256 public key from a PEM file (JS_EINVAL if it is not one); a
 * symlink is followed (files the operator names to jwt-audit). */
js_status js_audit_pubkey_load(const char *path, EVP_PKEY **out, js_err *err) JS_WUR;
/* The same from PEM text. */
js_status js_audit_pubkey_parse(const char *pem, EVP_PKEY **out, js_err *err) JS_WUR;
/* Every P-256 public key of a PEM file holding one or more of them (a keys
 * file, FORMAT.md §5.4), appended to *keys (*n of them; realloc'd, at most
 * JS_AUDIT_KEYS_MAX in all). */
#define JS_AUDIT_KEYS_MAX 64
js_status js_audit_pubkeys_load(const char *path, EVP_PKEY ***keys, size_t *n, js_err *err) JS_WUR;
/* The key's id (FORMAT.md §5.4) into out (JS_AUDIT_KEY_ID_LEN + 1 bytes). */
js_status js_audit_pubkey_id(EVP_PKEY *pub, char *out, js_err *err) JS_WUR;

/* The writer's side: the members between "time" and "prev" of a checkpoint
 * record (FORMAT.md §5.1), compact, no braces; *out malloc'd. */
js_status js_audit_checkpoint_members(const js_audit_checkpoint *cp, char **out,
                                      js_err *err) JS_WUR;

/* The canonical payload of a checkpoint record (FORMAT.md §5.1): the
 * writer's own serialisation of cp, {"seq":..,"time":..,MEMBERS,"prev":..},
 * into out (cap bytes). */
js_status js_audit_checkpoint_payload(const js_audit_checkpoint *cp, char *out, size_t cap,
                                      size_t *len, js_err *err) JS_WUR;

/* JS_OK when payload is byte for byte js_audit_checkpoint_payload(cp);
 * JS_EINVAL "audit.noncanonical" otherwise (FORMAT.md §7). */
js_status js_audit_checkpoint_check_canonical(const js_audit_checkpoint *cp, const uint8_t *payload,
                                              size_t len, js_err *err) JS_WUR;

/* True if origin is 1..JS_AUDIT_ORIGIN_MAX bytes of [A-Za-z0-9._:/@-]. */
bool js_audit_origin_valid(const char *origin);

/* Reads a checkpoint file (DIR/checkpoint.json: one checkpoint record's
 * payload, exact and canonical bytes, then exactly one "\n", which is
 * required); *payload malloc'd (without the "\n"). For a file an operator
 * names (jwt-audit verify --checkpoint): a symlink is followed. Missing:
 * JS_ENOTFOUND. */
js_status js_audit_checkpoint_load(const char *path, uint8_t **payload, size_t *len,
                                   js_audit_checkpoint *cp, js_err *err) JS_WUR;

/* The same for the writer's own anchor (FORMAT.md §5.3) at start-up: never
 * opened through a symlink. */
js_status js_audit_anchor_load(const char *path, uint8_t **payload, size_t *len,
                               js_audit_checkpoint *cp, js_err *err) JS_WUR;

#endif
