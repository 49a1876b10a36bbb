/*
 * test_jsongen.h - deterministic random inputs for the differential tests of
 * the one-pass JSON writers (test_jsonw.c, test_logline.c,
 * test_audit_format.c) against jansson: strings mixing quotes, backslashes,
 * control characters, DEL, multi-byte UTF-8, U+2028/U+2029 and invalid
 * UTF-8 (lone continuations, overlong forms, surrogates, code points above
 * U+10FFFF, truncated sequences), and aud texts in canonical and
 * non-canonical forms (whitespace, other escapes, nested values, numbers,
 * duplicates, not JSON at all, random mutations).
 */
#ifndef JS_TEST_JSONGEN_H
#define JS_TEST_JSONGEN_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

typedef struct jg_rng {
    uint64_t s;
} jg_rng;

static inline uint64_t jg_next(jg_rng *r)
{
    /* xorshift64*: reproducible from the seed the test prints. */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

static inline size_t jg_below(jg_rng *r, size_t n)
{
    return n == 0 ? 0 : (size_t)(jg_next(r) % n);
}

/* A uint64 of random magnitude (0 and UINT64_MAX included). */
static inline uint64_t jg_u64(jg_rng *r)
{
    size_t shift = jg_below(r, 65);
    uint64_t x = jg_next(r);
    return shift == 64 ? 0 : x >> shift;
}

/* Pieces a string is made of: (bytes, length). */
static const struct {
    const char *b;
    size_t n;
} jg_pieces[] = {
    {"a", 1},
    {"Z", 1},
    {"0", 1},
    {" ", 1},
    {"/", 1},
    {":", 1},
    {"\"", 1},
    {"\\", 1},
    {"\b", 1},
    {"\f", 1},
    {"\n", 1},
    {"\r", 1},
    {"\t", 1},
    {"\x01", 1},
    {"\x1f", 1},
    {"\x1b", 1},
    {"\x7f", 1},
    {"\xc3\xa9", 2},         /* é */
    {"\xe2\x82\xac", 3},     /* € */
    {"\xf0\x9f\x98\x80", 4}, /* U+1F600 */
    {"\xe2\x80\xa8", 3},     /* U+2028 */
    {"\xe2\x80\xa9", 3},     /* U+2029 */
    {"\xef\xbb\xbf", 3},     /* U+FEFF */
    {"\xef\xbf\xbd", 3},     /* U+FFFD */
    {"\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF */
    {"\xc2\x80", 2},         /* U+0080 */
    {"\x80", 1},             /* lone continuation */
    {"\xbf", 1},
    {"\xc0\x80", 2},         /* overlong NUL */
    {"\xc1\xbf", 2},         /* overlong */
    {"\xe0\x80\xaf", 3},     /* overlong / */
    {"\xed\xa0\x80", 3},     /* surrogate D800 */
    {"\xed\xbf\xbf", 3},     /* surrogate DFFF */
    {"\xf4\x90\x80\x80", 4}, /* above U+10FFFF */
    {"\xf5\x80\x80\x80", 4},
    {"\xff", 1},
    {"\xfe", 1},
    {"\xe2\x82", 2}, /* truncated */
    {"\xf0\x9f\x98", 3},
    {"\xc3", 1},
    {"\\u0041", 6},
    {"spiffe://example.org/svc", 24},
};
#define JG_NPIECES (sizeof(jg_pieces) / sizeof(jg_pieces[0]))

/* Pieces 0..JG_VALID_PIECES-1 are valid UTF-8 by themselves. */
#define JG_VALID_PIECES 26u

/* A random NUL-free string of up to cap-1 bytes into out; valid_only keeps
 * it valid UTF-8. Mostly short; now and then long (a few KiB). */
static inline size_t jg_string(jg_rng *r, char *out, size_t cap, int valid_only)
{
    size_t pieces = jg_below(r, 8) == 0 ? jg_below(r, 1200) : jg_below(r, 12);
    size_t len = 0;
    for (size_t i = 0; i < pieces; i++) {
        size_t k = jg_below(r, 3) == 0 ? 0 : jg_below(r, valid_only ? JG_VALID_PIECES : JG_NPIECES);
        /* more plain letters than anything else */
        if (k == 0 && jg_below(r, 2) == 0)
            k = 1 + jg_below(r, 2);
        if (len + jg_pieces[k].n >= cap)
            break;
        memcpy(out + len, jg_pieces[k].b, jg_pieces[k].n);
        len += jg_pieces[k].n;
    }
    out[len] = '\0';
    return len;
}

/* jansson's compact text of a random valid string ("\"...\""), malloc'd. */
static inline char *jg_dumped_string(jg_rng *r)
{
    char s[512];
    jg_string(r, s, jg_below(r, 4) == 0 ? 64 : sizeof(s), 1);
    json_t *v = json_string(s);
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(v);
    return t;
}

/* Fixed aud texts of every shape the differential tests must cover. */
static const char *const jg_fixed_auds[] = {
    "\"https://api.example\"",
    "[\"a\",\"b\"]",
    "[]",
    "[ ]",
    "[\"a\", \"b\"]",
    " \"a\"",
    "\"a\" ",
    "\"a\"\n",
    "\"a\\/b\"",
    "\"\\u00e9\"",
    "\"\\u00E9\"",
    "\"\\u001f\"",
    "\"\\u001F\"",
    "\"\\u0000\"",
    "\"\\u0008\"",
    "\"\\u000A\"",
    "\"\\u007F\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud83d\"",
    "\"\xe2\x80\xa8\"",
    "\"\x7f\"",
    "\"\x01\"",
    "\"\xff\"",
    "\"a",
    "\"",
    "\"\"",
    "[\"\"]",
    "[\"a\",]",
    "[,\"a\"]",
    "[\"a\"]]",
    "[\"a\"][",
    "[[\"a\"]]",
    "[\"a\",[\"b\"]]",
    "[\"a\",1]",
    "[1,2.50,1e3,-0,1E+2]",
    "3",
    "1.0",
    "-0",
    "null",
    "true",
    "false",
    "{}",
    "{\"a\":1}",
    "{\"a\":1,\"a\":2}",
    "{\"b\":1,\"a\":[true,null]}",
    "[{\"a\":1,\"a\":2}]",
    "{not json",
    "not json at all",
    "https://api.example",
    "\xff\xfe not json",
    "\"a\"\"b\"",
    "\"a\" \"b\"",
    "\"\\\"\\\\\\b\\f\\n\\r\\t\"",
    "\"\\x\"",
    "\"\\u00G1\"",
    "\"\\u00\"",
};
#define JG_NFIXED_AUDS (sizeof(jg_fixed_auds) / sizeof(jg_fixed_auds[0]))

/* A random aud text into out (cap bytes): a fixed case, a canonical string
 * or array of strings, a random string, or one of those mutated. */
static inline void jg_aud(jg_rng *r, char *out, size_t cap)
{
    out[0] = '\0';
    size_t len = 0;
    switch (jg_below(r, 6)) {
    case 0: {
        const char *f = jg_fixed_auds[jg_below(r, JG_NFIXED_AUDS)];
        len = strlen(f) < cap ? strlen(f) : cap - 1;
        memcpy(out, f, len);
        break;
    }
    case 1:
    case 2: {
        char *t = jg_dumped_string(r);
        if (t != NULL && strlen(t) < cap) {
            len = strlen(t);
            memcpy(out, t, len);
        }
        free(t);
        break;
    }
    case 3: {
        size_t k = jg_below(r, 5);
        out[len++] = '[';
        for (size_t i = 0; i < k; i++) {
            char *t = jg_dumped_string(r);
            if (t != NULL && len + strlen(t) + 3 < cap) {
                if (i > 0)
                    out[len++] = ',';
                memcpy(out + len, t, strlen(t));
                len += strlen(t);
            }
            free(t);
        }
        out[len++] = ']';
        break;
    }
    case 4:
        len = jg_string(r, out, cap, 0);
        break;
    default: {
        /* a canonical array, then mutated */
        char *t = jg_dumped_string(r);
        if (t != NULL && strlen(t) + 3 < cap) {
            out[len++] = '[';
            memcpy(out + len, t, strlen(t));
            len += strlen(t);
            out[len++] = ']';
        }
        free(t);
        static const char mut[] = " \t\n,[]\"\\/u0AaF\x01\x80\xe2";
        size_t m = 1 + jg_below(r, 3);
        for (size_t i = 0; i < m && len > 0; i++) {
            size_t at = jg_below(r, len);
            switch (jg_below(r, 3)) {
            case 0: /* replace */
                out[at] = mut[jg_below(r, sizeof(mut) - 1)];
                break;
            case 1: /* delete */
                memmove(out + at, out + at + 1, len - at - 1);
                len--;
                break;
            default: /* insert */
                if (len + 1 < cap) {
                    memmove(out + at + 1, out + at, len - at);
                    out[at] = mut[jg_below(r, sizeof(mut) - 1)];
                    len++;
                }
                break;
            }
        }
        break;
    }
    }
    out[len] = '\0';
}

/* The UTF-8 check of record.c's repair before jsonw (kept as the reference
 * the differential tests compare against): the length of the valid sequence
 * at a NUL-terminated p, or 0. Deliberately not js_utf8_decode: a reference
 * must be the old code, not the code under test. */
static inline size_t jg_old_utf8_seq(const unsigned char *p)
{
    if (p[0] < 0x80)
        return 1;
    size_t n = (p[0] & 0xe0) == 0xc0   ? 2
               : (p[0] & 0xf0) == 0xe0 ? 3
               : (p[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
    if (n == 0 || (n == 2 && p[0] < 0xc2) || (n == 4 && p[0] > 0xf4))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    uint32_t cp = p[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++)
        cp = (cp << 6) | (p[i] & 0x3f);
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* record.c's repair before jsonw, the reference: v as a JSON string, each
 * byte that does not start a valid UTF-8 sequence replaced by U+FFFD; NULL
 * only without memory. */
static inline json_t *jg_old_repaired(const char *v)
{
    json_t *js = json_string(v);
    if (js != NULL)
        return js;
    size_t len = strlen(v);
    char *clean = malloc(len * 3 + 1);
    if (clean == NULL)
        return NULL;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)v;
    while (*p != '\0') {
        size_t n = jg_old_utf8_seq(p);
        if (n == 0) {
            memcpy(clean + o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        } else {
            memcpy(clean + o, p, n);
            o += n;
            p += n;
        }
    }
    clean[o] = '\0';
    js = json_string(clean);
    free(clean);
    return js;
}

#endif
