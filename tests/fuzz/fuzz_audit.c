/*
 * fuzz_audit.c - libFuzzer target for what `jwt-audit` reads from a possibly
 * hostile log: frame decoding (length + CRC-32C, FORMAT.md §2), the record
 * payload as JSON, and checkpoint parsing (§5). Any input must be accepted
 * or rejected cleanly; an accepted frame never claims more bytes than given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "checkpoint.h"
#include "record.h"

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
    return 0;
}
