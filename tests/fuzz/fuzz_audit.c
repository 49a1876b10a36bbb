/*
 * fuzz_audit.c - libFuzzer target for what `jwt-audit` reads from a possibly
 * hostile log: frame decoding (length + CRC-32C, FORMAT.md §2), the record
 * payload as JSON, and checkpoint parsing (§5); the reader over the input as
 * one segment, with what `jwt-audit show` and `stats` do to each record
 * (query.h, report.h); and the time arguments of a query. Any input must be
 * accepted or rejected cleanly; an accepted frame never claims more bytes
 * than given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "checkpoint.h"
#include "query.h"
#include "reader.h"
#include "record.h"
#include "report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
