/*
 * escape.c - bounded \xNN escaping of untrusted values for messages (escape.h).
 */
#include "escape.h"

#include <stdbool.h>
#include <string.h>

#include "hex.h"

const char *js_escape(char *buf, size_t cap, const char *s, size_t len)
{
    if (buf == NULL || cap == 0)
        return "";
    if (s == NULL)
        len = 0;
    size_t room = cap - 1; /* for the NUL */
    size_t at = 0;
    bool truncated = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool plain = c >= 0x20 && c < 0x7f && c != '\\' && c != '\'' && c != '"';
        size_t need = plain ? 1 : 4;
        /* Keep three bytes for "..." unless this is the last input byte. */
        size_t reserve = i + 1 < len ? 3 : 0;
        if (at + need + reserve > room) {
            truncated = true;
            break;
        }
        if (plain) {
            buf[at++] = (char)c;
        } else {
            buf[at++] = '\\';
            buf[at++] = 'x';
            /* Two digits, then a NUL that stays in bounds (at + 2 <= room) and
             * is overwritten by what follows or kept as the terminator. */
            js_hex_encode(&c, 1, buf + at);
            at += 2;
        }
    }
    if (truncated && at + 3 <= room) {
        memcpy(buf + at, "...", 3);
        at += 3;
    }
    buf[at] = '\0';
    return buf;
}
