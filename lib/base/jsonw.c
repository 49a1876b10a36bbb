/*
 * jsonw.c - the bounded JSON text writer (jsonw.h): jansson 2.14's compact
 * escaping (src/dump.c dump_string) and UTF-8 rule (src/utf.c), written
 * straight into caller storage in runs of bytes that need no escape.
 */
#include "jsonw.h"

#include <string.h>

#include "text.h"

/* 1 for the bytes a JSON string carries as they are without looking
 * further: printable ASCII and DEL, but not `"` or `\`. Bytes >= 0x80 start
 * a UTF-8 sequence that is checked; bytes < 0x20 are escaped. */
static const unsigned char k_plain[256] = {
    ['\x20'] = 1, ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1,    ['\''] = 1, ['('] = 1,
    [')'] = 1,    ['*'] = 1, ['+'] = 1, [','] = 1, ['-'] = 1, ['.'] = 1,    ['/'] = 1,  ['0'] = 1,
    ['1'] = 1,    ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,    ['7'] = 1,  ['8'] = 1,
    ['9'] = 1,    [':'] = 1, [';'] = 1, ['<'] = 1, ['='] = 1, ['>'] = 1,    ['?'] = 1,  ['@'] = 1,
    ['A'] = 1,    ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,    ['G'] = 1,  ['H'] = 1,
    ['I'] = 1,    ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,    ['O'] = 1,  ['P'] = 1,
    ['Q'] = 1,    ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1,    ['W'] = 1,  ['X'] = 1,
    ['Y'] = 1,    ['Z'] = 1, ['['] = 1, [']'] = 1, ['^'] = 1, ['_'] = 1,    ['`'] = 1,  ['a'] = 1,
    ['b'] = 1,    ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,    ['h'] = 1,  ['i'] = 1,
    ['j'] = 1,    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,    ['p'] = 1,  ['q'] = 1,
    ['r'] = 1,    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1,    ['x'] = 1,  ['y'] = 1,
    ['z'] = 1,    ['{'] = 1, ['|'] = 1, ['}'] = 1, ['~'] = 1, ['\x7f'] = 1,
};

static const char k_hex_upper[] = "0123456789ABCDEF";

void js_jsonw_init(js_jsonw *w, char *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf != NULL ? cap : 0;
    w->len = 0;
}

bool js_jsonw_fits(const js_jsonw *w)
{
    return w->len < w->cap;
}

size_t js_jsonw_len(const js_jsonw *w)
{
    return w->len;
}

const char *js_jsonw_finish(js_jsonw *w)
{
    if (!js_jsonw_fits(w))
        return NULL;
    w->buf[w->len] = '\0';
    return w->buf;
}

void js_jsonw_raw(js_jsonw *w, const char *s, size_t n)
{
    /* Written only if a NUL still fits after it; counted either way. Once
     * one append is skipped, len >= cap and nothing more is written. */
    if (w->len < w->cap && n < w->cap - w->len)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
}

void js_jsonw_cstr(js_jsonw *w, const char *s)
{
    js_jsonw_raw(w, s, strlen(s));
}

void js_jsonw_truncate(js_jsonw *w, size_t len)
{
    /* Bytes after len were written only where they fitted; what follows
     * overwrites them. */
    if (len < w->len)
        w->len = len;
}

/* Length of the valid UTF-8 sequence at p (left bytes available), or 0.
 * jansson's utf8_check_first/utf8_check_full accept exactly the sequences
 * RFC 3629 allows, as js_utf8_decode does (test_jsonw holds them to each
 * other through json_string). */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    uint32_t cp;
    return js_utf8_decode(p, left, &cp);
}

bool js_jsonw_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* dump.c's escapes for a byte below 0x20, `"` or `\`. */
static void put_escape(js_jsonw *w, unsigned char c)
{
    char seq[6] = {'\\', 'u', '0', '0', k_hex_upper[c >> 4], k_hex_upper[c & 15]};
    switch (c) {
    case '"':
        js_jsonw_raw(w, "\\\"", 2);
        break;
    case '\\':
        js_jsonw_raw(w, "\\\\", 2);
        break;
    case '\b':
        js_jsonw_raw(w, "\\b", 2);
        break;
    case '\f':
        js_jsonw_raw(w, "\\f", 2);
        break;
    case '\n':
        js_jsonw_raw(w, "\\n", 2);
        break;
    case '\r':
        js_jsonw_raw(w, "\\r", 2);
        break;
    case '\t':
        js_jsonw_raw(w, "\\t", 2);
        break;
    default:
        js_jsonw_raw(w, seq, sizeof(seq)); /* "\\u%04X" */
        break;
    }
}

/* One pass: runs of bytes that need no escape are copied whole. An invalid
 * sequence is U+FFFD (lossy) or undoes the whole string (returns false). */
static bool put_string(js_jsonw *w, const char *s, size_t n, bool lossy)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t mark = w->len;
    size_t run = 0, i = 0;
    js_jsonw_raw(w, "\"", 1);
    while (i < n) {
        unsigned char c = p[i];
        if (k_plain[c]) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq(p + i, n - i);
            if (k != 0) {
                i += k;
                continue;
            }
            if (!lossy) {
                js_jsonw_truncate(w, mark); /* nothing appended */
                return false;
            }
            js_jsonw_raw(w, s + run, i - run);
            js_jsonw_raw(w, "\xef\xbf\xbd", 3);
        } else {
            js_jsonw_raw(w, s + run, i - run);
            put_escape(w, c);
        }
        run = ++i;
    }
    js_jsonw_raw(w, s + run, n - run);
    js_jsonw_raw(w, "\"", 1);
    return true;
}

bool js_jsonw_string(js_jsonw *w, const char *s, size_t n)
{
    return put_string(w, s, n, false);
}

void js_jsonw_string_lossy(js_jsonw *w, const char *s, size_t n)
{
    (void)put_string(w, s, n, true);
}

void js_jsonw_int(js_jsonw *w, int64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        tmp[--i] = '-';
    js_jsonw_raw(w, tmp + i, sizeof(tmp) - i);
}

/* The length of the canonical JSON string literal at the start of s, or 0
 * if there is none: only what dump_string writes back after json_loads. */
static size_t canonical_string(const unsigned char *s, size_t n)
{
    if (n < 2 || s[0] != '"')
        return 0;
    size_t i = 1;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"')
            return i + 1;
        if (k_plain[c]) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_seq(s + i, n - i);
            if (k == 0)
                return 0; /* json_loads refuses it */
            i += k;
            continue;
        }
        if (c != '\\' || n - i < 2)
            return 0; /* a raw control character: json_loads refuses it */
        switch (s[i + 1]) {
        case '"':
        case '\\':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            i += 2;
            break;
        case 'u': {
            /* Only "\u00XX" (upper-case hex) for a control character dump.c
             * has no short escape for; \u0000 does not load. */
            if (n - i < 6 || s[i + 2] != '0' || s[i + 3] != '0' ||
                (s[i + 4] != '0' && s[i + 4] != '1'))
                return 0;
            unsigned char lo = s[i + 5];
            unsigned v;
            if (lo >= '0' && lo <= '9')
                v = (unsigned)(lo - '0');
            else if (lo >= 'A' && lo <= 'F')
                v = (unsigned)(lo - 'A' + 10);
            else
                return 0;
            v += (unsigned)(s[i + 4] - '0') * 16u;
            if (v == 0 || v == '\b' || v == '\t' || v == '\n' || v == '\f' || v == '\r')
                return 0;
            i += 6;
            break;
        }
        default:
            return 0; /* \/ and anything else dump.c never writes */
        }
    }
    return 0; /* unterminated */
}

bool js_jsonw_canonical_strings(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    if (n == 0)
        return false;
    if (p[0] == '"')
        return canonical_string(p, n) == n;
    if (p[0] != '[' || n < 2)
        return false;
    if (p[1] == ']')
        return n == 2;
    size_t i = 1;
    for (;;) {
        size_t k = canonical_string(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
        if (i >= n)
            return false;
        if (p[i] == ']')
            return i + 1 == n;
        if (p[i] != ',')
            return false;
        i++;
    }
}
