/*
 * load_args.h - the options the two load drivers share (client_load.c,
 * tests/bench/client_paced.c): where the signer is, the caller's TLS files,
 * the claims and key to sign, the per-call timeout. Each driver lists
 * LOAD_ARGS_LONGOPTS in its getopt_long table and hands every option to
 * load_args_take first.
 */
#ifndef JS_TEST_LOAD_ARGS_H
#define JS_TEST_LOAD_ARGS_H

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "jwtsigner_client.h"

#define LOAD_ARGS_LONGOPTS                                                                         \
    {"target", required_argument, NULL, 't'}, {"ca", required_argument, NULL, 'a'},                \
        {"cert", required_argument, NULL, 'c'}, {"key", required_argument, NULL, 'k'},             \
        {"claims", required_argument, NULL, 'j'}, {"key-name", required_argument, NULL, 'K'},      \
    {                                                                                              \
        "timeout-ms", required_argument, NULL, 'T'                                                 \
    }

typedef struct load_args {
    jwtsigner_options opts; /* target, TLS files, timeout_ms */
    const char *claims;     /* required */
    const char *key_name;   /* NULL = the caller's default key */
} load_args;

/* A whole decimal number in lo..hi; -1 otherwise. */
static inline int load_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* 1: a shared option, taken; 0: not one of them; -1: a bad value (said on
 * stderr, prefixed with prog). */
static inline int load_args_take(const char *prog, int opt, const char *arg, load_args *a)
{
    long ms = 0;
    switch (opt) {
    case 't':
        a->opts.target = arg;
        return 1;
    case 'a':
        a->opts.ca_file = arg;
        return 1;
    case 'c':
        a->opts.cert_file = arg;
        return 1;
    case 'k':
        a->opts.key_file = arg;
        return 1;
    case 'j':
        a->claims = arg;
        return 1;
    case 'K':
        a->key_name = arg;
        return 1;
    case 'T':
        if (load_parse_long(arg, 1, 3600000, &ms) != 0) {
            fprintf(stderr, "%s: --timeout-ms must be 1..3600000\n", prog);
            return -1;
        }
        a->opts.timeout_ms = (int)ms;
        return 1;
    default:
        return 0;
    }
}

/* The required ones are all there. */
static inline int load_args_complete(const load_args *a)
{
    return a->opts.target != NULL && a->opts.ca_file != NULL && a->opts.cert_file != NULL &&
           a->opts.key_file != NULL && a->claims != NULL;
}

#endif
