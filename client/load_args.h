/*
 * load_args.h - the options the load programs share (client/jwt_load.c, the
 * user-facing jwt-load, and the test drivers tests/integration/client_load.c
 * and tests/bench/client_paced.c): where the signer is, the caller's TLS
 * files, the claims and key to sign, the per-call timeout, and the call to
 * make: SignJwt by default, or with --introspect FILE
 * jwtsigner.v1.Status/Introspect (RFC 7662) of the tokens in FILE, call i
 * asking about token i % n (FILE: one token a line, or "jti token" lines as
 * client_load --out writes them). Each program lists LOAD_ARGS_LONGOPTS in its
 * getopt_long table, hands every option to load_args_take first, calls
 * load_args_prepare once the options are parsed and load_call for each call.
 * A private header of those programs, next to the client library it wraps;
 * not part of the installed client API.
 */
#ifndef JS_CLIENT_LOAD_ARGS_H
#define JS_CLIENT_LOAD_ARGS_H

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "jwtsigner_client.h"

/* A token file's bounds: lines (tokens) and bytes per line. */
#define LOAD_TOKENS_MAX     10000000L
#define LOAD_TOKEN_LINE_MAX 65536
/* load_call in introspect mode: the call succeeded but the answer was
 * {"active": false} (a token the bench issued must be active). One past the
 * gRPC codes 0..16. */
#define LOAD_INACTIVE 17

#define LOAD_ARGS_LONGOPTS                                                                         \
    {"target", required_argument, NULL, 't'}, {"ca", required_argument, NULL, 'a'},                \
        {"cert", required_argument, NULL, 'c'}, {"key", required_argument, NULL, 'k'},             \
        {"claims", required_argument, NULL, 'j'}, {"key-name", required_argument, NULL, 'K'},      \
        {"timeout-ms", required_argument, NULL, 'T'},                                              \
    {                                                                                              \
        "introspect", required_argument, NULL, 'I'                                                 \
    }

typedef struct load_args {
    jwtsigner_options opts; /* target, TLS files, timeout_ms */
    const char *claims;     /* required for SignJwt */
    const char *key_name;   /* NULL = the caller's default key */
    const char *introspect; /* --introspect FILE; NULL = SignJwt */
    char **tokens;          /* FILE's tokens (load_args_prepare), ntokens of them */
    size_t ntokens;
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
    case 'I':
        a->introspect = arg;
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

/* The required ones are all there (claims only for SignJwt). */
static inline int load_args_complete(const load_args *a)
{
    return a->opts.target != NULL && a->opts.ca_file != NULL && a->opts.cert_file != NULL &&
           a->opts.key_file != NULL && (a->claims != NULL || a->introspect != NULL);
}

static inline void load_args_cleanup(load_args *a)
{
    for (size_t i = 0; i < a->ntokens; i++)
        free(a->tokens[i]);
    free(a->tokens);
    a->tokens = NULL;
    a->ntokens = 0;
}

/* With --introspect, reads its tokens (the last space-separated field of
 * each non-empty line). 0, or -1 with the reason on stderr. */
static inline int load_args_prepare(const char *prog, load_args *a)
{
    if (a->introspect == NULL)
        return 0;
    FILE *f = fopen(a->introspect, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open %s: %s\n", prog, a->introspect, strerror(errno));
        return -1;
    }
    /* Read byte by byte into a fixed buffer, not with getline: a file without
     * newlines (/dev/zero) must neither grow memory nor be read for ever. A
     * line longer than LOAD_TOKEN_LINE_MAX (CR and LF aside) or a NUL byte
     * ends the read with an error. */
    size_t room = 0;
    char *line = malloc((size_t)LOAD_TOKEN_LINE_MAX + 2);
    int rc = line != NULL ? 0 : -1;
    int c = 0;
    while (rc == 0 && c != EOF) {
        size_t n = 0;
        while ((c = getc(f)) != EOF && c != '\n' && c != '\0' && n <= (size_t)LOAD_TOKEN_LINE_MAX)
            line[n++] = (char)c;
        if (c == '\0') {
            fprintf(stderr, "%s: %s: a NUL byte: not a token file\n", prog, a->introspect);
            rc = -1;
            break;
        }
        while (n > 0 && line[n - 1] == '\r')
            n--;
        line[n] = '\0';
        if (n == 0)
            continue;
        if (n > (size_t)LOAD_TOKEN_LINE_MAX || a->ntokens >= (size_t)LOAD_TOKENS_MAX) {
            fprintf(stderr, "%s: %s: more than %ld tokens or a line over %d bytes\n", prog,
                    a->introspect, LOAD_TOKENS_MAX, LOAD_TOKEN_LINE_MAX);
            rc = -1;
            break;
        }
        if (a->ntokens == room) {
            room = room != 0 ? room * 2 : 1024;
            char **t = realloc(a->tokens, room * sizeof(*t));
            if (t == NULL) {
                rc = -1;
                break;
            }
            a->tokens = t;
        }
        const char *tok = strrchr(line, ' ');
        tok = tok != NULL ? tok + 1 : line;
        if ((a->tokens[a->ntokens] = strdup(tok)) == NULL) {
            rc = -1;
            break;
        }
        a->ntokens++;
    }
    if (rc == 0 && (ferror(f) || a->ntokens == 0)) {
        fprintf(stderr, "%s: %s: %s\n", prog, a->introspect,
                ferror(f) ? "read error" : "no tokens");
        rc = -1;
    }
    free(line);
    fclose(f);
    if (rc != 0)
        load_args_cleanup(a);
    return rc;
}

/*
 * Call i: SignJwt (the token to *tok when tok is not NULL; the caller clears
 * it) or, with --introspect, Status/Introspect of token i % ntokens, whose
 * answer must be active (LOAD_INACTIVE otherwise). Returns the gRPC status
 * code, st filled as the client library does.
 */
static inline int load_call(const load_args *a, jwtsigner_client *c, long i, const char *request_id,
                            jwtsigner_token *tok, jwtsigner_status *st)
{
    if (a->introspect == NULL) {
        jwtsigner_token local;
        int code = jwtsigner_sign(c, a->claims, strlen(a->claims), a->key_name, request_id,
                                  tok != NULL ? tok : &local, st);
        if (tok == NULL)
            jwtsigner_token_clear(&local);
        return code;
    }
    if (tok != NULL)
        memset(tok, 0, sizeof(*tok));
    jwtsigner_introspection r;
    int code = jwtsigner_introspect(c, a->tokens[(size_t)i % a->ntokens], &r, st);
    if (code == 0 && !r.active) {
        code = LOAD_INACTIVE;
        st->code = LOAD_INACTIVE;
        snprintf(st->message, sizeof(st->message), "token %zu introspected {\"active\":false}",
                 (size_t)i % a->ntokens);
    }
    jwtsigner_introspection_clear(&r);
    return code;
}

/* jwtsigner_status_name, and a name for LOAD_INACTIVE. */
static inline const char *load_status_name(int code)
{
    return code == LOAD_INACTIVE ? "INACTIVE" : jwtsigner_status_name(code);
}

#endif
