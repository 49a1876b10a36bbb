/*
 * duration.c - parses "<positive integer><s|m|h|d>" durations, overflow-checked.
 */
#include "duration.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* "At most 10 years" (duration.h), counted as 3650 days. */
#define DURATION_MAX_SECONDS ((int64_t)3650 * 86400)

js_status js_parse_duration(const char *s, int64_t *seconds, js_err *err)
{
    JS_ENSURE(s != NULL && seconds != NULL, err, JS_EINVAL, JS_R_DURATION_SYNTAX,
              "no duration given");
    size_t len = strlen(s);
    size_t ndigits = 0;
    while (ndigits < len && s[ndigits] >= '0' && s[ndigits] <= '9')
        ndigits++;
    /* Exactly digits then one unit letter: no sign, spaces, fractions or compound "1h30m". */
    JS_ENSURE(ndigits > 0 && len == ndigits + 1, err, JS_EINVAL, JS_R_DURATION_SYNTAX,
              "duration must be a positive integer followed by s, m, h or d (e.g. 15m)");
    int64_t unit;
    switch (s[ndigits]) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return js_err_set(err, JS_EINVAL, JS_R_DURATION_SYNTAX,
                          "duration unit must be s, m, h or d (e.g. 15m)");
    }
    /* strtoll reads the digits; the checks above guarantee where it must stop. */
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    JS_ENSURE(end == s + ndigits, err, JS_EINVAL, JS_R_DURATION_SYNTAX,
              "duration must be a positive integer followed by s, m, h or d (e.g. 15m)");
    JS_ENSURE(errno != ERANGE && v <= DURATION_MAX_SECONDS / unit, err, JS_EINVAL,
              JS_R_DURATION_RANGE, "duration is longer than 10 years");
    JS_ENSURE(v > 0, err, JS_EINVAL, JS_R_DURATION_RANGE, "duration must be positive");
    *seconds = (int64_t)v * unit;
    return JS_OK;
}
