/*
 * duration.h - durations in configuration and policy files ("15m", "12h").
 */
#ifndef JS_DURATION_H
#define JS_DURATION_H

#include <stdint.h>

#include "err.h"

/*
 * Parses a duration: a positive integer followed by a unit s, m, h or d
 * ("90s", "15m", "12h", "1d"). At most 10 years. JS_EINVAL otherwise.
 */
js_status js_parse_duration(const char *s, int64_t *seconds, js_err *err) JS_WUR;

#endif
