/*
 * regex_cost.c - the cost analyser for policy subject regexes (regex_cost.h):
 * one pass over the pattern with a stack of groups, each holding the estimated
 * size so far and the size of its last atom, which a following quantifier
 * multiplies. Estimates are capped just above POLICY_REGEX_COST so they cannot
 * overflow.
 */
#include "regex_cost.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

static bool refuse(char *why, size_t cap, const char *fmt, ...) JS_PRINTF(3, 4);

static bool refuse(char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return false;
}

typedef struct regex_frame {
    uint64_t sum;  /* estimated size of the group so far */
    uint64_t last; /* size of its last atom or group, which a quantifier repeats */
} regex_frame;

static uint64_t cap_cost(uint64_t v)
{
    return v > POLICY_REGEX_COST + 1 ? POLICY_REGEX_COST + 1 : v;
}

static void regex_add(regex_frame *f, uint64_t atom)
{
    f->sum = cap_cost(f->sum + atom);
    f->last = atom;
}

static void regex_repeat(regex_frame *f, uint64_t times)
{
    f->sum = cap_cost(f->sum + f->last * (times - 1));
    f->last = cap_cost(f->last * times);
}

bool policy_regex_cost_ok(const char *s, char *why, size_t cap)
{
    regex_frame st[POLICY_REGEX_DEPTH + 1];
    size_t depth = 0;
    memset(st, 0, sizeof(st));
    for (size_t i = 0; s[i] != '\0'; i++) {
        regex_frame *f = &st[depth];
        switch (s[i]) {
        case '\\':
            if (s[i + 1] >= '1' && s[i + 1] <= '9')
                return refuse(why, cap, "back-references (\\%c) are not allowed", s[i + 1]);
            if (s[i + 1] != '\0')
                i++;
            regex_add(f, 1);
            break;
        case '[': {
            size_t j = i + 1;
            if (s[j] == '^')
                j++;
            if (s[j] == ']')
                j++;
            while (s[j] != '\0' && s[j] != ']') {
                if (s[j] == '[' && (s[j + 1] == ':' || s[j + 1] == '.' || s[j + 1] == '=')) {
                    char close = s[j + 1];
                    j += 2;
                    while (s[j] != '\0' && !(s[j] == close && s[j + 1] == ']'))
                        j++;
                    if (s[j] != '\0')
                        j++;
                }
                if (s[j] != '\0')
                    j++;
            }
            i = s[j] == '\0' ? j - 1 : j;
            regex_add(f, 1);
            break;
        }
        case '(':
            if (depth == POLICY_REGEX_DEPTH)
                return refuse(why, cap, "groups nest deeper than %d", POLICY_REGEX_DEPTH);
            depth++;
            memset(&st[depth], 0, sizeof(st[depth]));
            break;
        case ')':
            if (depth > 0) {
                uint64_t g = st[depth].sum;
                depth--;
                regex_add(&st[depth], g ? g : 1);
            }
            break;
        case '*':
        case '+':
        case '?':
            regex_repeat(f, 2);
            break;
        case '{': {
            uint64_t lo = 0, hi = 0;
            size_t j = i + 1;
            bool digits = false;
            while (s[j] >= '0' && s[j] <= '9' && lo <= POLICY_REGEX_BOUND)
                lo = lo * 10 + (uint64_t)(s[j++] - '0'), digits = true;
            hi = lo;
            if (s[j] == ',') {
                /* {m,n}: n is a number of its own; {m,} keeps m as the size
                 * the expansion grows by (POSIX ERE, re_format(7)). */
                j++;
                uint64_t n = 0;
                bool n_digits = false;
                while (s[j] >= '0' && s[j] <= '9' && n <= POLICY_REGEX_BOUND)
                    n = n * 10 + (uint64_t)(s[j++] - '0'), n_digits = digits = true;
                if (n_digits)
                    hi = n;
            }
            if (!digits)
                break; /* not a bound; regcomp decides */
            if (lo > POLICY_REGEX_BOUND || hi > POLICY_REGEX_BOUND)
                return refuse(why, cap, "repetition bounds above %u are not allowed",
                              POLICY_REGEX_BOUND);
            regex_repeat(f, (hi > lo ? hi : lo) + 1);
            while (s[j] != '\0' && s[j] != '}')
                j++;
            i = s[j] == '\0' ? j - 1 : j;
            break;
        }
        default:
            regex_add(f, 1);
            break;
        }
        if (f->sum > POLICY_REGEX_COST || f->last > POLICY_REGEX_COST)
            return refuse(why, cap,
                          "regular expression too complex (its repetitions expand beyond %u "
                          "elements)",
                          POLICY_REGEX_COST);
    }
    return true;
}
