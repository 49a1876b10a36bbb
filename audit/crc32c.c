/*
 * crc32c.c - table-driven CRC-32C (Castagnoli). Hand-written because no
 * Debian 12 dependency we already link exports it; "slicing-by-8" tables
 * make it fast enough for the writer's one pass over each batch.
 * Test vectors: RFC 3720 §B.4.
 */
#include "crc32c.h"

#include <pthread.h>

#define CRC32C_POLY 0x82F63B78u /* 0x1EDC6F41 bit-reversed (RFC 3720 §B.4) */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* Built once, then read-only: not mutable global state in the sense of the
 * style guide (the result is a constant). */
static void crc_build(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFFu] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
}

uint32_t js_crc32c_update(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&crc_once, crc_build);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (n >= 8) {
        /* Byte-wise loads: no alignment or endianness assumptions. */
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xFFu] ^ crc_table[6][(lo >> 8) & 0xFFu] ^
            crc_table[5][(lo >> 16) & 0xFFu] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n-- > 0)
        c = crc_table[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
    return ~c;
}

uint32_t js_crc32c(const void *data, size_t n)
{
    return js_crc32c_update(0, data, n);
}
