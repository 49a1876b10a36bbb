/*
 * fuzz_audit.c - libFuzzer target for what `jwt-audit` reads from a possibly
 * hostile log: frame decoding (length + CRC-32C, FORMAT.md §2), the record
 * payload as JSON, and checkpoint parsing (§5); the reader over the input as
 * one segment, with what `jwt-audit show` and `stats` do to each record
 * (query.h, report.h); an inclusion proof built over those records for the
 * first jti among them (proof.h); the input as a proof document for the
 * proof checker; and the time arguments of a query. Any input must be
 * accepted or rejected cleanly; an accepted frame never claims more bytes
 * than given; a proof the prover built is always well-formed to the checker.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "checkpoint.h"
#include "proof.h"
#include "query.h"
#include "reader.h"
#include "record.h"
#include "report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Any P-256 key: the checker must reach its signature check and refuse. */
static const char k_pub_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEkvPnt6OCk+bzjdhEyqR7z4ZkWlxp\n"
                                "hCi/8ueFvmP5Lj57nO6Yr4tfUuxvw7IFRK8iSXSzdd30ZNnE4gbk4YPIxQ==\n"
                                "-----END PUBLIC KEY-----\n";

/* Checks doc as a proof; aborts when must_parse and the checker calls it
 * malformed (a proof the prover built). */
static void check_proof(const json_t *doc, EVP_PKEY *pub, bool must_parse)
{
    js_audit_proof_result res;
    js_err err;
    js_status st = js_audit_proof_check(doc, pub, &res, &err);
    if (must_parse && st != JS_OK)
        abort();
    js_audit_proof_result_cleanup(&res);
}

/* Builds the proof of jti over the records of seg and checks it. */
static void prove_and_check(const js_audit_segment_mem *seg, const char *jti, EVP_PKEY *pub)
{
    js_audit_reader *r = NULL;
    js_audit_prover *p = NULL;
    js_err err;
    if (js_audit_reader_new_mem(seg, 1, &r, &err) == JS_OK &&
        js_audit_prover_new(jti, &p, &err) == JS_OK) {
        for (;;) {
            js_audit_record one;
            bool end = false;
            if (js_audit_reader_read(r, &one, &end, &err) != JS_OK || end)
                break;
            if (js_audit_prover_add(p, &one, &err) != JS_OK)
                break;
        }
        json_t *doc = NULL;
        if (js_audit_prover_build(p, &doc, &err) == JS_OK) {
            check_proof(doc, pub, true);
            json_decref(doc);
        }
    }
    js_audit_prover_free(p);
    js_audit_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        size_t plen = 0;
        js_err err;
        if (js_audit_frame_decode(data + off, size - off, &plen, &err) != JS_OK)
            break;
        if (plen > size - off - JS_AUDIT_FRAME_HDR)
            abort(); /* a frame may never extend past the input */
        const uint8_t *payload = data + off + JS_AUDIT_FRAME_HDR;
        json_error_t jerr;
        json_t *rec = json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES, &jerr);
        if (rec != NULL) {
            js_audit_checkpoint cp;
            memset(&cp, 0, sizeof(cp));
            if (js_audit_checkpoint_parse(rec, &cp, &err) == JS_OK) {
                char *body = NULL;
                size_t blen = 0;
                if (js_audit_checkpoint_body(&cp, &body, &blen, &err) == JS_OK)
                    free(body);
                /* The canonical-bytes rule (FORMAT.md §7 rule 4). */
                js_status cs = js_audit_checkpoint_check_canonical(&cp, payload, plen, &err);
                (void)cs;
            } else {
                /* The canonical-bytes rule for ordinary records (§7 rule 1). */
                js_status cs = js_audit_payload_check_canonical(payload, plen, rec, &err);
                (void)cs;
            }
            json_decref(rec);
        }
        off += JS_AUDIT_FRAME_HDR + plen;
    }
    /* The checkpoint parser also meets records straight from checkpoint.json. */
    json_error_t jerr;
    json_t *rec = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (rec != NULL) {
        js_audit_checkpoint cp;
        memset(&cp, 0, sizeof(cp));
        js_err err;
        if (js_audit_checkpoint_parse(rec, &cp, &err) == JS_OK) {
            char *body = NULL;
            size_t blen = 0;
            if (js_audit_checkpoint_body(&cp, &body, &blen, &err) == JS_OK)
                free(body);
        }
        json_decref(rec);
    }

    /* The reader over the same bytes as one segment, and the queries and
     * counts of jwt-audit on every record it returns. */
    js_audit_segment_mem seg = {.name = "fuzz", .data = data, .len = size};
    js_audit_reader *r = NULL;
    js_audit_stats *st = NULL;
    js_err err;
    char *jti = NULL; /* the first record's jti, for the prover */
    if (js_audit_reader_new_mem(&seg, 1, &r, &err) == JS_OK &&
        js_audit_stats_new(60, &st, &err) == JS_OK) {
        js_audit_query q = {
            .decision = "deny", .has_since = true, .has_until = true, .until_ms = INT64_MAX};
        for (;;) {
            js_audit_record one;
            bool end = false;
            if (js_audit_reader_read(r, &one, &end, &err) != JS_OK || end)
                break;
            (void)js_audit_query_match(&q, one.json);
            const char *j = js_audit_member_str(one.json, JS_AUDIT_F_JTI);
            if (jti == NULL && j != NULL && *j != '\0')
                jti = strdup(j);
            if (js_audit_stats_add(st, &one, &err) != JS_OK)
                break;
        }
        js_audit_stats_finish(st);
        json_t *lc = NULL;
        if (js_audit_stats_lifecycle(st, &lc, &err) == JS_OK)
            json_decref(lc);
    }
    js_audit_stats_free(st);
    js_audit_reader_free(r);

    /* The proof of that jti over the same records, and the input itself as
     * a proof document (what check-proof reads). */
    EVP_PKEY *pub = NULL;
    if (js_audit_pubkey_parse(k_pub_pem, &pub, &err) != JS_OK)
        abort();
    if (jti != NULL)
        prove_and_check(&seg, jti, pub);
    free(jti);
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (json_is_object(doc))
        check_proof(doc, pub, false);
    json_decref(doc);
    EVP_PKEY_free(pub);

    /* A time argument as typed (--since/--until). */
    char *text = malloc(size + 1);
    if (text != NULL) {
        memcpy(text, data, size);
        text[size] = '\0';
        int64_t ms = 0;
        (void)js_audit_time_arg_parse(text, &ms);
        free(text);
    }
    return 0;
}
