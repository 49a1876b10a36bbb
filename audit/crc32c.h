/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of the audit log's record framing (FORMAT.md §2). The same CRC as
 * iSCSI (RFC 3720 §B.4), ext4 metadata, LevelDB and PostgreSQL's WAL; it
 * detects torn writes, not tampering (that is the hash chain's job).
 */
#ifndef JS_AUDIT_CRC32C_H
#define JS_AUDIT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of n bytes (initial value ~0, final xor ~0). */
uint32_t js_crc32c(const void *data, size_t n);

/* Continues a CRC: js_crc32c_update(js_crc32c(a), b) == js_crc32c(a || b).
 * Pass 0 as crc to start. */
uint32_t js_crc32c_update(uint32_t crc, const void *data, size_t n);

#endif
