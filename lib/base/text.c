/*
 * text.c - the clean-text check (text.h): a strict UTF-8 decoder (RFC 3629
 * §4 syntax, so overlong forms, surrogates and code points above U+10FFFF are
 * malformed) followed by a lookup of the code point in the Unicode 15.0
 * general categories Cc and Cf.
 */
#include "text.h"

typedef struct cp_range {
    uint32_t lo, hi;
} cp_range;

/*
 * General_Category=Cf in Unicode 15.0 (UnicodeData.txt), sorted. Unicode 15
 * added U+13439-U+1343F to the Egyptian hieroglyph format controls.
 */
static const cp_range k_cf[] = {
    {0x00AD, 0x00AD},   /* SOFT HYPHEN */
    {0x0600, 0x0605},   /* Arabic number signs */
    {0x061C, 0x061C},   /* ARABIC LETTER MARK (bidi) */
    {0x06DD, 0x06DD},   /* ARABIC END OF AYAH */
    {0x070F, 0x070F},   /* SYRIAC ABBREVIATION MARK */
    {0x0890, 0x0891},   /* Arabic pound/piastre mark above */
    {0x08E2, 0x08E2},   /* ARABIC DISPUTED END OF AYAH */
    {0x180E, 0x180E},   /* MONGOLIAN VOWEL SEPARATOR */
    {0x200B, 0x200F},   /* zero-width space/non-joiner/joiner, LRM, RLM */
    {0x202A, 0x202E},   /* bidi embeddings and overrides LRE..RLO */
    {0x2060, 0x2064},   /* word joiner, invisible operators */
    {0x2066, 0x206F},   /* bidi isolates LRI..PDI, deprecated format characters */
    {0xFEFF, 0xFEFF},   /* ZERO WIDTH NO-BREAK SPACE (BOM) */
    {0xFFF9, 0xFFFB},   /* interlinear annotation */
    {0x110BD, 0x110BD}, /* KAITHI NUMBER SIGN */
    {0x110CD, 0x110CD}, /* KAITHI NUMBER SIGN ABOVE */
    {0x13430, 0x1343F}, /* Egyptian hieroglyph format controls */
    {0x1BCA0, 0x1BCA3}, /* shorthand format controls */
    {0x1D173, 0x1D17A}, /* musical symbol format controls */
    {0xE0001, 0xE0001}, /* LANGUAGE TAG */
    {0xE0020, 0xE007F}, /* tag characters */
};

static bool is_cc(uint32_t cp)
{
    return cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F);
}

static bool is_cf(uint32_t cp)
{
    size_t lo = 0, hi = sizeof(k_cf) / sizeof(k_cf[0]);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < k_cf[mid].lo)
            hi = mid;
        else if (cp > k_cf[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/*
 * Decodes one UTF-8 sequence at s[0..left) (left >= 1). Returns its length
 * and the code point, or 0 when the bytes are not a well-formed sequence
 * (RFC 3629 §4: UTF8-2 = %xC2-DF tail; UTF8-3 = %xE0 %xA0-BF tail /
 * %xE1-EC 2tail / %xED %x80-9F tail / %xEE-EF 2tail; UTF8-4 = %xF0 %x90-BF
 * 2tail / %xF1-F3 3tail / %xF4 %x80-8F 2tail).
 */
size_t js_utf8_decode(const unsigned char *s, size_t left, uint32_t *cp)
{
    unsigned char b0 = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2;
        *cp = b0 & 0x1Fu;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3;
        *cp = b0 & 0x0Fu;
        if (b0 == 0xE0)
            lo = 0xA0; /* overlong */
        else if (b0 == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4;
        *cp = b0 & 0x07u;
        if (b0 == 0xF0)
            lo = 0x90; /* overlong */
        else if (b0 == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* a continuation byte, C0/C1 (overlong) or F5-FF */
    }
    if (left < n)
        return 0; /* truncated */
    for (size_t i = 1; i < n; i++) {
        unsigned char b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF))
            return 0;
        *cp = (*cp << 6) | (b & 0x3Fu);
    }
    return n;
}

bool js_text_valid(const char *s, size_t len, size_t *bad_offset, uint32_t *bad_cp)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t cp = 0;
        size_t n = js_utf8_decode(u + i, len - i, &cp);
        if (n == 0)
            cp = JS_TEXT_NOT_UTF8;
        if (n == 0 || is_cc(cp) || is_cf(cp)) {
            if (bad_offset != NULL)
                *bad_offset = i;
            if (bad_cp != NULL)
                *bad_cp = cp;
            return false;
        }
        i += n;
    }
    return true;
}

js_status js_text_check(const char *field, const char *s, size_t len, size_t max, js_status st,
                        js_reason reason, js_err *err)
{
    size_t off = 0;
    uint32_t cp = 0;
    const char *name = field != NULL ? field : "text";
    JS_ENSURE(max == 0 || len <= max, err, st, reason, "%s is %zu bytes; at most %zu are allowed",
              name, len, max);
    if (js_text_valid(s, len, &off, &cp))
        return JS_OK;
    if (cp == JS_TEXT_NOT_UTF8)
        return js_err_set(err, st, reason, "%s is not valid UTF-8 (RFC 3629) at byte %zu", name,
                          off);
    if (cp == 0)
        return js_err_set(err, st, reason, "%s contains a NUL character (U+0000) at byte %zu", name,
                          off);
    return js_err_set(err, st, reason, "%s contains U+%04X, %s, at byte %zu", name, (unsigned)cp,
                      is_cc(cp) ? "a control character (Unicode Cc)"
                                : "an invisible format character (Unicode Cf)",
                      off);
}
