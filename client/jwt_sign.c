/*
 * jwt_sign.c - the jwt-sign command: asks jwt-signer to sign a claim set,
 * fetches its JWKS, or decodes a token locally for inspection.
 *
 * Network work goes through the client library (jwtsigner_client.h); `decode`
 * needs no network and verifies nothing. Failures print one line
 * "jwt-sign: STATUS_NAME: message" on stderr and map the status to a small
 * set of exit codes that scripts can branch on (see usage_global()).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "b64url.h"
#include "err.h"
#include "jwtsigner_client.h"

/* Claims or a token read from stdin; the server's own claims limit is 16 KiB. */
#define STDIN_MAX      (1024 * 1024)
#define TIMEOUT_MS_MAX (3600 * 1000)

enum {
    EXIT_OK = 0,
    EXIT_OTHER = 1,
    EXIT_USAGE = 2,
    EXIT_DENIED = 3,
    EXIT_INVALID = 4,
    EXIT_UNAVAILABLE = 5,
    EXIT_EXHAUSTED = 6,
};

/* gRPC status codes used by name here (values fixed by the gRPC protocol). */
enum {
    ST_INVALID_ARGUMENT = 3,
    ST_DEADLINE_EXCEEDED = 4,
    ST_PERMISSION_DENIED = 7,
    ST_RESOURCE_EXHAUSTED = 8,
    ST_INTERNAL = 13,
    ST_UNAVAILABLE = 14,
};

typedef enum command { CMD_NONE, CMD_SIGN, CMD_JWKS, CMD_DECODE } command;

typedef struct cli {
    const char *target;
    const char *ca;
    const char *cert;
    const char *key;
    const char *key_name;
    const char *request_id;
    int timeout_ms;
    int json;
    int help;
    command cmd;
    const char *arg; /* CLAIMS_JSON, TOKEN or "-" */
} cli;

static void usage_global(FILE *f)
{
    fputs("Usage: jwt-sign [OPTIONS] sign CLAIMS_JSON|-\n"
          "       jwt-sign [OPTIONS] jwks\n"
          "       jwt-sign decode TOKEN|-\n"
          "       jwt-sign [COMMAND] --help\n"
          "\n"
          "Commands:\n"
          "  sign     ask jwt-signer to sign CLAIMS_JSON (a JSON object) and print the token\n"
          "  jwks     print the signer's JWKS (RFC 7517 section 5)\n"
          "  decode   print a token's header and payload; no network, NO verification\n"
          "\n"
          "Connection options (sign, jwks); options may come before or after the command:\n"
          "  --target HOST:PORT   signer address               (env JWT_SIGN_TARGET)\n"
          "  --ca FILE            CA bundle for the server's certificate (env JWT_SIGN_CA)\n"
          "  --cert FILE          this client's TLS certificate (env JWT_SIGN_CERT)\n"
          "  --key FILE           this client's TLS private key (env JWT_SIGN_KEY)\n"
          "  --timeout-ms N       per-call deadline, 1..3600000 (default 5000)\n"
          "  -h, --help           show help (for a command: jwt-sign COMMAND --help)\n"
          "\n"
          "Exit status:\n"
          "  0 success\n"
          "  1 any other failure (INTERNAL, UNKNOWN, ..., or writing the output)\n"
          "  2 usage error\n"
          "  3 PERMISSION_DENIED\n"
          "  4 INVALID_ARGUMENT (also unreadable PEM files, a malformed token to decode)\n"
          "  5 UNAVAILABLE or DEADLINE_EXCEEDED (server down, TLS failure, timeout)\n"
          "  6 RESOURCE_EXHAUSTED (rate limited)\n"
          "On failure one line \"jwt-sign: STATUS_NAME: message\" goes to stderr\n"
          "(gRPC's own log is off unless GRPC_VERBOSITY is set, e.g. to ERROR).\n",
          f);
}

static void usage_sign(FILE *f)
{
    fputs("Usage: jwt-sign --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
          "                [--key-name NAME] [--timeout-ms N] [--request-id ID] [--json]\n"
          "                sign CLAIMS_JSON|-\n"
          "\n"
          "Asks the signer to sign CLAIMS_JSON, a JSON object; \"-\" reads it from stdin\n"
          "(at most 1 MiB is read; the signer accepts at most 16 KiB). The signer sets\n"
          "iss, iat and jti itself and checks or defaults exp.\n"
          "\n"
          "  --key-name NAME   signing key from the signer's configuration\n"
          "                    (default: the caller's default key)\n"
          "  --request-id ID   correlation id echoed in the signer's logs\n"
          "  --json            print {\"jwt\",\"kid\",\"jti\",\"issued_at\",\"expires_at\",\n"
          "                    \"audit_seq\"} instead of the bare token\n"
          "\n"
          "Prints the compact JWS on one line. Note: --key is the TLS client key,\n"
          "--key-name the signing key. Exit status: see jwt-sign --help.\n",
          f);
}

static void usage_jwks(FILE *f)
{
    fputs("Usage: jwt-sign --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
          "                [--timeout-ms N] jwks\n"
          "\n"
          "Prints the signer's JWKS JSON ({\"keys\":[...]}, RFC 7517 section 5) as the\n"
          "signer sent it, followed by a newline. Exit status: see jwt-sign --help.\n",
          f);
}

static void usage_decode(FILE *f)
{
    fputs("Usage: jwt-sign decode TOKEN|-\n"
          "\n"
          "Decodes a compact JWS (header.payload.signature, RFC 7515 section 7.1) and\n"
          "prints ONE pretty-printed JSON object:\n"
          "  {\"header\": {...}, \"payload\": {...}}\n"
          "\"-\" reads the token from stdin (trailing whitespace is ignored). Decoding is\n"
          "strict base64url; header and payload must be JSON objects without duplicate\n"
          "member names. The signature is NOT verified and nothing is fetched; do not\n"
          "trust what this prints. Exit 4 for a malformed token.\n",
          f);
}

static void print_help(command cmd)
{
    switch (cmd) {
    case CMD_SIGN:
        usage_sign(stdout);
        break;
    case CMD_JWKS:
        usage_jwks(stdout);
        break;
    case CMD_DECODE:
        usage_decode(stdout);
        break;
    case CMD_NONE:
    default:
        usage_global(stdout);
        break;
    }
}

static int usage_error(const char *msg, const char *arg)
{
    if (arg != NULL)
        fprintf(stderr, "jwt-sign: %s '%s'\n", msg, arg);
    else
        fprintf(stderr, "jwt-sign: %s\n", msg);
    fputs("Try 'jwt-sign --help'.\n", stderr);
    return EXIT_USAGE;
}

/* One place maps a gRPC status to this tool's exit code. */
static int exit_for_status(int code)
{
    switch (code) {
    case 0:
        return EXIT_OK;
    case ST_PERMISSION_DENIED:
        return EXIT_DENIED;
    case ST_INVALID_ARGUMENT:
        return EXIT_INVALID;
    case ST_UNAVAILABLE:
    case ST_DEADLINE_EXCEEDED:
        return EXIT_UNAVAILABLE;
    case ST_RESOURCE_EXHAUSTED:
        return EXIT_EXHAUSTED;
    default:
        return EXIT_OTHER;
    }
}

static int fail(int code, const char *msg)
{
    fprintf(stderr, "jwt-sign: %s: %s\n", jwtsigner_status_name(code), msg);
    return exit_for_status(code);
}

/* Stdout may be a closed pipe or a full disk: a lost token is a failure. */
static int finish_output(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return fail(ST_INTERNAL, "cannot write to stdout");
    return EXIT_OK;
}

/*
 * Reads all of stdin, at most STDIN_MAX bytes, into a NUL-terminated malloc'd
 * buffer. Returns 0, or a gRPC-style status code with msg filled.
 */
static int read_stdin(char **out, size_t *len, char *msg, size_t msg_cap)
{
    char *buf = malloc(STDIN_MAX + 2);
    size_t n;

    *out = NULL;
    *len = 0;
    if (buf == NULL) {
        snprintf(msg, msg_cap, "out of memory");
        return ST_INTERNAL;
    }
    /* Reading one byte past the limit tells "at the limit" from "over it". */
    n = fread(buf, 1, STDIN_MAX + 1, stdin);
    if (ferror(stdin)) {
        snprintf(msg, msg_cap, "cannot read stdin: %s", strerror(errno));
        free(buf);
        return ST_INTERNAL;
    }
    if (n > STDIN_MAX) {
        snprintf(msg, msg_cap, "stdin is larger than %d bytes", STDIN_MAX);
        free(buf);
        return ST_INVALID_ARGUMENT;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static int parse_timeout(const char *s, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > TIMEOUT_MS_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

static const char *env_or(const char *value, const char *env)
{
    if (value != NULL)
        return value;
    const char *e = getenv(env);
    return (e != NULL && e[0] != '\0') ? e : NULL;
}

static int connect_client(const cli *c, jwtsigner_client **out)
{
    jwtsigner_status st;
    if (c->target == NULL)
        return usage_error("--target is required (or set JWT_SIGN_TARGET)", NULL);
    if (c->ca == NULL)
        return usage_error("--ca is required (or set JWT_SIGN_CA)", NULL);
    if (c->cert == NULL)
        return usage_error("--cert is required (or set JWT_SIGN_CERT)", NULL);
    if (c->key == NULL)
        return usage_error("--key is required (or set JWT_SIGN_KEY)", NULL);
    jwtsigner_options opts = {
        .target = c->target,
        .ca_file = c->ca,
        .cert_file = c->cert,
        .key_file = c->key,
        .timeout_ms = c->timeout_ms,
    };
    *out = jwtsigner_client_new(&opts, &st);
    if (*out == NULL)
        return fail(st.code, st.message);
    return EXIT_OK;
}

static int print_token_json(const jwtsigner_token *t)
{
    int rc = EXIT_OK;
    char *text = NULL;
    json_t *obj = NULL;

    if (t->audit_seq > (uint64_t)INT64_MAX)
        return fail(ST_INTERNAL, "audit_seq does not fit a JSON integer");
    obj = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "jwt", t->jwt, "kid", t->kid, "jti", t->jti,
                    "issued_at", (json_int_t)t->issued_at, "expires_at", (json_int_t)t->expires_at,
                    "audit_seq", (json_int_t)t->audit_seq);
    if (obj == NULL) {
        rc = fail(ST_INTERNAL, "cannot build the JSON output (invalid UTF-8 from the server?)");
        goto out;
    }
    text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        rc = fail(ST_INTERNAL, "out of memory");
        goto out;
    }
    puts(text);
out:
    free(text);
    json_decref(obj);
    return rc;
}

static int cmd_sign(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_client *client = NULL;
    jwtsigner_status st;
    jwtsigner_token tok = {0};
    char *input = NULL;
    const char *claims = c->arg;
    size_t claims_len = strlen(c->arg);

    if (strcmp(c->arg, "-") == 0) {
        char msg[JWTSIGNER_MSG_MAX];
        int code = read_stdin(&input, &claims_len, msg, sizeof(msg));
        if (code != 0) {
            rc = fail(code, msg);
            goto out;
        }
        claims = input;
    }
    rc = connect_client(c, &client);
    if (rc != EXIT_OK)
        goto out;
    if (jwtsigner_sign(client, claims, claims_len, c->key_name, c->request_id, &tok, &st) != 0) {
        rc = fail(st.code, st.message);
        goto out;
    }
    if (c->json) {
        rc = print_token_json(&tok);
        if (rc != EXIT_OK)
            goto out;
    } else {
        puts(tok.jwt);
    }
    rc = finish_output();
out:
    jwtsigner_token_clear(&tok);
    jwtsigner_client_free(client);
    free(input);
    return rc;
}

static int cmd_jwks(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_client *client = NULL;
    jwtsigner_status st;
    char *jwks = NULL;

    rc = connect_client(c, &client);
    if (rc != EXIT_OK)
        goto out;
    if (jwtsigner_jwks(client, &jwks, &st) != 0) {
        rc = fail(st.code, st.message);
        goto out;
    }
    size_t n = strlen(jwks);
    fputs(jwks, stdout);
    if (n == 0 || jwks[n - 1] != '\n')
        fputc('\n', stdout);
    rc = finish_output();
out:
    free(jwks);
    jwtsigner_client_free(client);
    return rc;
}

/*
 * Decodes one base64url segment (strictly, see b64url.h) and parses it as a
 * JSON object. Returns NULL with msg filled on any defect.
 */
static json_t *decode_segment(const char *seg, size_t n, const char *what, char *msg,
                              size_t msg_cap)
{
    json_t *obj = NULL;
    js_err err;
    json_error_t jerr;
    size_t cap = B64URL_DECODED_MAX(n) + 1;
    size_t len = 0;
    uint8_t *buf = malloc(cap);

    if (buf == NULL) {
        snprintf(msg, msg_cap, "out of memory");
        goto out;
    }
    if (n == 0) {
        snprintf(msg, msg_cap, "token: %s is empty", what);
        goto out;
    }
    if (b64url_decode(seg, n, buf, cap, &len, &err) != JS_OK) {
        snprintf(msg, msg_cap, "token: %s is not strict base64url: %s", what, err.msg);
        goto out;
    }
    /* RFC 7515 §5.2: a JOSE header with duplicate member names is rejected. */
    obj = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (obj == NULL) {
        snprintf(msg, msg_cap, "token: %s is not valid JSON: %s", what, jerr.text);
        goto out;
    }
    if (!json_is_object(obj)) {
        snprintf(msg, msg_cap, "token: %s is not a JSON object", what);
        json_decref(obj);
        obj = NULL;
        goto out;
    }
out:
    free(buf);
    return obj;
}

static int cmd_decode(const cli *c)
{
    int rc = EXIT_OK;
    char *input = NULL;
    char *text = NULL;
    json_t *header = NULL, *payload = NULL, *out_obj = NULL;
    char msg[JWTSIGNER_MSG_MAX];
    const char *tok = c->arg;
    size_t len = strlen(c->arg);

    if (strcmp(c->arg, "-") == 0) {
        int code = read_stdin(&input, &len, msg, sizeof(msg));
        if (code != 0) {
            rc = fail(code, msg);
            goto out;
        }
        /* A token piped from `jwt-sign sign` or a file ends with a newline. */
        while (len > 0 && (input[len - 1] == '\n' || input[len - 1] == '\r' ||
                           input[len - 1] == ' ' || input[len - 1] == '\t'))
            input[--len] = '\0';
        tok = input;
    }
    if (memchr(tok, '\0', len) != NULL) {
        rc = fail(ST_INVALID_ARGUMENT, "token: contains a NUL byte");
        goto out;
    }
    /* RFC 7515 §7.1: exactly three segments separated by two dots. */
    const char *dot1 = memchr(tok, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok)) : NULL;
    if (dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)) != NULL) {
        rc = fail(ST_INVALID_ARGUMENT,
                  "token: not a compact JWS (expected header.payload.signature)");
        goto out;
    }
    header = decode_segment(tok, (size_t)(dot1 - tok), "header", msg, sizeof(msg));
    if (header == NULL) {
        rc = fail(ST_INVALID_ARGUMENT, msg);
        goto out;
    }
    payload = decode_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), "payload", msg, sizeof(msg));
    if (payload == NULL) {
        rc = fail(ST_INVALID_ARGUMENT, msg);
        goto out;
    }
    /* The signature is not verified, but it must still be well-formed base64url. */
    size_t sig_len = len - (size_t)(dot2 + 1 - tok);
    if (sig_len > 0) {
        js_err err;
        size_t cap = B64URL_DECODED_MAX(sig_len) + 1, got = 0;
        uint8_t *sig = malloc(cap);
        if (sig == NULL) {
            rc = fail(ST_INTERNAL, "out of memory");
            goto out;
        }
        js_status bs = b64url_decode(dot2 + 1, sig_len, sig, cap, &got, &err);
        free(sig);
        if (bs != JS_OK) {
            snprintf(msg, sizeof(msg), "token: signature is not strict base64url: %s", err.msg);
            rc = fail(ST_INVALID_ARGUMENT, msg);
            goto out;
        }
    }
    out_obj = json_pack("{s:O, s:O}", "header", header, "payload", payload);
    if (out_obj == NULL) {
        rc = fail(ST_INTERNAL, "out of memory");
        goto out;
    }
    text = json_dumps(out_obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        rc = fail(ST_INTERNAL, "out of memory");
        goto out;
    }
    puts(text);
    rc = finish_output();
out:
    free(text);
    json_decref(out_obj);
    json_decref(payload);
    json_decref(header);
    free(input);
    return rc;
}

static command parse_command(const char *s)
{
    if (strcmp(s, "sign") == 0)
        return CMD_SIGN;
    if (strcmp(s, "jwks") == 0)
        return CMD_JWKS;
    if (strcmp(s, "decode") == 0)
        return CMD_DECODE;
    return CMD_NONE;
}

enum {
    OPT_TARGET = 256,
    OPT_CA,
    OPT_CERT,
    OPT_KEY,
    OPT_KEY_NAME,
    OPT_TIMEOUT,
    OPT_REQUEST_ID,
    OPT_JSON,
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"target", required_argument, NULL, OPT_TARGET},
        {"ca", required_argument, NULL, OPT_CA},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"key-name", required_argument, NULL, OPT_KEY_NAME},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"request-id", required_argument, NULL, OPT_REQUEST_ID},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli c = {.timeout_ms = 0, .cmd = CMD_NONE};
    int opt;

    /* We print our own messages; glibc permutes, so options may follow the command. */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_TARGET:
            c.target = optarg;
            break;
        case OPT_CA:
            c.ca = optarg;
            break;
        case OPT_CERT:
            c.cert = optarg;
            break;
        case OPT_KEY:
            c.key = optarg;
            break;
        case OPT_KEY_NAME:
            c.key_name = optarg;
            break;
        case OPT_TIMEOUT:
            if (parse_timeout(optarg, &c.timeout_ms) != 0)
                return usage_error("--timeout-ms must be an integer in 1..3600000, not", optarg);
            break;
        case OPT_REQUEST_ID:
            c.request_id = optarg;
            break;
        case OPT_JSON:
            c.json = 1;
            break;
        case 'h':
            c.help = 1;
            break;
        case ':':
            return usage_error("missing value for option", argv[optind - 1]);
        case '?':
        default:
            return usage_error("unknown option", argv[optind - 1]);
        }
    }

    if (optind < argc) {
        c.cmd = parse_command(argv[optind]);
        if (c.cmd == CMD_NONE)
            return usage_error("unknown command", argv[optind]);
        optind++;
    }
    if (c.help) {
        print_help(c.cmd);
        return finish_output();
    }
    if (c.cmd == CMD_NONE)
        return usage_error("missing command (sign, jwks or decode)", NULL);

    int want_arg = (c.cmd == CMD_SIGN || c.cmd == CMD_DECODE);
    if (want_arg) {
        if (optind >= argc)
            return usage_error(c.cmd == CMD_SIGN ? "sign needs CLAIMS_JSON or -"
                                                 : "decode needs TOKEN or -",
                               NULL);
        c.arg = argv[optind++];
    }
    if (optind < argc)
        return usage_error("unexpected argument", argv[optind]);

    c.target = env_or(c.target, "JWT_SIGN_TARGET");
    c.ca = env_or(c.ca, "JWT_SIGN_CA");
    c.cert = env_or(c.cert, "JWT_SIGN_CERT");
    c.key = env_or(c.key, "JWT_SIGN_KEY");

    /*
     * gRPC core logs handshake errors on stderr by itself; the status message
     * already carries the reason, and scripts expect one line. A GRPC_VERBOSITY
     * set by the user wins (read by grpc_init(), before any thread exists).
     */
    if (setenv("GRPC_VERBOSITY", "NONE", 0) != 0)
        return fail(ST_INTERNAL, "cannot set GRPC_VERBOSITY");

    switch (c.cmd) {
    case CMD_SIGN:
        return cmd_sign(&c);
    case CMD_JWKS:
        return cmd_jwks(&c);
    case CMD_DECODE:
        return cmd_decode(&c);
    case CMD_NONE:
    default:
        return EXIT_USAGE;
    }
}
