/*
 * regex_cost.h - vets a POSIX extended regular expression from a policy file
 * (a caller's `subject`) before regcomp() sees it; private to policy/.
 *
 * glibc's regcomp copies a subexpression once per repetition, so a short
 * pattern such as "(a{255}){255}" or "a+++++{9}" can take gigabytes to
 * compile, and back-references make matching exponential. So before regcomp:
 * no back-references, repetition bounds of at most POLICY_REGEX_BOUND, groups
 * nested at most POLICY_REGEX_DEPTH deep, and an estimate of the compiled size
 * (atoms, each multiplied by the repetitions around it) of at most
 * POLICY_REGEX_COST. Malformed syntax is left to regcomp.
 */
#ifndef JS_POLICY_REGEX_COST_H
#define JS_POLICY_REGEX_COST_H

#include <stdbool.h>
#include <stddef.h>

#define POLICY_REGEX_COST  4096u
#define POLICY_REGEX_BOUND 255u
#define POLICY_REGEX_DEPTH 16

/* True when the NUL-terminated pattern s passes the rules above; otherwise
 * false with the rule it breaks written to why (cap bytes, for a message that
 * the caller places after "FILE:LINE: path: "). */
bool policy_regex_cost_ok(const char *s, char *why, size_t cap);

#endif
