/*
 * test_audit_crc32c.c - CRC-32C (Castagnoli) against the RFC 3720 §B.4
 * test vectors, the classic "123456789" check value, and incremental use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "crc32c.h"

static void test_rfc3720_vectors(void **state)
{
    (void)state;
    uint8_t buf[48];
    memset(buf, 0, 32);
    assert_int_equal(js_crc32c(buf, 32), 0x8A9136AAu);
    memset(buf, 0xFF, 32);
    assert_int_equal(js_crc32c(buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    assert_int_equal(js_crc32c(buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    assert_int_equal(js_crc32c(buf, 32), 0x113FDB5Cu);
    /* An iSCSI SCSI Read (10) command PDU (RFC 3720 §B.4). */
    static const uint8_t pdu[48] = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00,
                                    0x00, 0x18, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    assert_int_equal(js_crc32c(pdu, sizeof(pdu)), 0xD9963A56u);
}

static void test_check_value(void **state)
{
    (void)state;
    assert_int_equal(js_crc32c("123456789", 9), 0xE3069283u);
    assert_int_equal(js_crc32c("", 0), 0u);
}

/* Every split point and every alignment gives the same CRC as one pass
 * (exercises the slicing-by-8 loop and the byte-wise tail). */
static void test_incremental_and_alignment(void **state)
{
    (void)state;
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t off = 0; off < 9; off++) {
        uint32_t whole = js_crc32c(buf + off, sizeof(buf) - off);
        for (size_t cut = 0; cut <= sizeof(buf) - off; cut += 13) {
            uint32_t c = js_crc32c_update(js_crc32c(buf + off, cut), buf + off + cut,
                                          sizeof(buf) - off - cut);
            assert_int_equal(c, whole);
        }
    }
    /* A single flipped bit always changes the CRC. */
    uint32_t ref = js_crc32c(buf, sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] ^= 0x10;
        assert_int_not_equal(js_crc32c(buf, sizeof(buf)), ref);
        buf[i] ^= 0x10;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3720_vectors),
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_incremental_and_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
