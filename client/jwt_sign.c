/*
 * jwt_sign.c - the jwt-sign command: asks jwt-signer to sign a claim set,
 * fetches its JWKS, decodes a token locally for inspection, asks the signer
 * whether it issued a token and the token still stands (introspect, RFC
 * 7662), drives the signer's Admin service (rotate, revoke, incident mode,
 * freeze, reload, status, token revocation) for incident response, or calls its Kubernetes
 * ExternalJWTSigner socket the way kube-apiserver does (k8s-sign, k8s-keys, k8s-metadata), so an
 * operator can check that socket by hand.
 *
 * Network work goes through the client library (jwtsigner_client.h); `decode`
 * needs no network and verifies nothing. Failures print one line
 * "jwt-sign: STATUS_NAME: message" on stderr (a refusal's message starts with
 * the signer's reason) and map the status to a small
 * set of exit codes that scripts can branch on (see usage_global()).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "b64url.h"
#include "clock.h"
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

typedef enum command {
    CMD_NONE,
    CMD_SIGN,
    CMD_JWKS,
    CMD_DECODE,
    CMD_INTROSPECT,
    CMD_ADMIN,
    CMD_K8S_SIGN,
    CMD_K8S_KEYS,
    CMD_K8S_METADATA,
} command;

typedef enum admin_cmd {
    ADM_NONE,
    ADM_ROTATE,
    ADM_REVOKE,
    ADM_INCIDENT,
    ADM_FREEZE,
    ADM_UNFREEZE,
    ADM_RELOAD,
    ADM_STATUS,
    ADM_ROTATE_AUDIT,
    ADM_REVOKE_TOKEN,
} admin_cmd;

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
    int version;
    command cmd;
    admin_cmd admin;
    const char *reason;        /* --reason, admin only */
    const char *arg;           /* CLAIMS_JSON, TOKEN or "-"; for admin its first operand */
    const char *arg2;          /* admin revoke: KID */
    const char *jti;           /* --jti, admin revoke-token only */
    const char *sub;           /* --sub, admin revoke-token only */
    const char *caller;        /* --caller, admin revoke-token only */
    const char *unix_path;     /* --unix, k8s-* only */
    const char *api_name;      /* --api as given, k8s-* only */
    jwtsigner_k8s_api k8s_api; /* --api, default v1 */
} cli;

static void usage_global(FILE *f)
{
    fputs("Usage: jwt-sign [OPTIONS] sign CLAIMS_JSON|-\n"
          "       jwt-sign [OPTIONS] jwks\n"
          "       jwt-sign decode TOKEN|-\n"
          "       jwt-sign [OPTIONS] introspect TOKEN|-\n"
          "       jwt-sign [OPTIONS] admin ACTION [ARGS] [--reason TEXT]\n"
          "       jwt-sign --unix PATH [--api v1|v1alpha1] [--timeout-ms N]\n"
          "                k8s-sign PAYLOAD_B64URL|- | k8s-keys | k8s-metadata\n"
          "       jwt-sign [COMMAND [ACTION]] --help | --version\n"
          "\n"
          "Commands:\n"
          "  sign     ask jwt-signer to sign CLAIMS_JSON (a JSON object) and print the token\n"
          "  jwks     print the signer's JWKS (RFC 7517 section 5)\n"
          "  decode   print a token's header and payload; no network, NO verification\n"
          "  introspect\n"
          "           ask the signer whether it issued TOKEN and it still stands\n"
          "           (RFC 7662); for identities in the policy's introspectors\n"
          "  admin    incident response, for identities in the policy's admins:\n"
          "             rotate KEY | revoke KEY KID | incident on|off |\n"
          "             freeze IDENTITY | unfreeze IDENTITY | reload | status |\n"
          "             rotate-audit-key | revoke-token --jti J|--sub S|--caller ID\n"
          "           (see jwt-sign admin --help)\n"
          "  k8s-sign, k8s-keys, k8s-metadata\n"
          "           call the Kubernetes ExternalJWTSigner socket (Sign, FetchKeys,\n"
          "           Metadata) as kube-apiserver does; see jwt-sign k8s-sign --help\n"
          "\n"
          "Connection options (sign, jwks, introspect, admin); options may come before\n"
          "or after the command:\n"
          "  --target HOST:PORT   signer address               (env JWT_SIGN_TARGET)\n"
          "  --ca FILE            CA bundle for the server's certificate (env JWT_SIGN_CA)\n"
          "  --cert FILE          this client's TLS certificate (env JWT_SIGN_CERT)\n"
          "  --key FILE           this client's TLS private key (env JWT_SIGN_KEY)\n"
          "  --timeout-ms N       per-call deadline, 1..3600000 (default 5000)\n"
          "  -h, --help           show help (for a command: jwt-sign COMMAND --help)\n"
          "  --version            print the version and exit\n"
          "\n"
          "Socket options (k8s-sign, k8s-keys, k8s-metadata, with --timeout-ms; the\n"
          "TLS options above do not apply):\n"
          "  --unix PATH          the signer's ExternalJWTSigner Unix socket\n"
          "  --api v1|v1alpha1    service version to call (default v1)\n"
          "\n"
          "Exit status:\n"
          "  0 success\n"
          "  1 any other failure (INTERNAL, UNKNOWN, NOT_FOUND, FAILED_PRECONDITION, ...,\n"
          "    or writing the output)\n"
          "  2 usage error\n"
          "  3 PERMISSION_DENIED (also: admin called by a non-admin identity, introspect\n"
          "    by an identity not in introspectors)\n"
          "  4 INVALID_ARGUMENT (also unreadable PEM files, a malformed token to decode)\n"
          "  5 UNAVAILABLE or DEADLINE_EXCEEDED (server down, TLS failure, timeout,\n"
          "    no socket or no permission to connect to it)\n"
          "  6 RESOURCE_EXHAUSTED (rate limited; for k8s-*, also a reply larger than\n"
          "    the client accepts)\n"
          "On failure one line \"jwt-sign: STATUS_NAME: message\" goes to stderr; when\n"
          "the signer refused the call the message starts with the rule's reason\n"
          "(\"jwt-sign: PERMISSION_DENIED: policy.no_match: ...\"). gRPC's own log is\n"
          "off unless GRPC_VERBOSITY is set, e.g. to ERROR.\n",
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

static void usage_k8s(FILE *f)
{
    fputs("Usage: jwt-sign --unix PATH [--api v1|v1alpha1] [--timeout-ms N]\n"
          "                k8s-sign PAYLOAD_B64URL|-\n"
          "       jwt-sign --unix PATH [--api v1|v1alpha1] [--timeout-ms N] k8s-keys\n"
          "       jwt-sign --unix PATH [--api v1|v1alpha1] [--timeout-ms N] k8s-metadata\n"
          "\n"
          "Calls the Kubernetes ExternalJWTSigner service (k8s.io/externaljwt) on the\n"
          "signer's Unix socket PATH the way kube-apiserver does: gRPC without TLS.\n"
          "Access is the socket's file permissions and the signer's policy, which must\n"
          "list this user's uid as a caller (id: unix:uid=N; see `id -u`).\n"
          "--api v1alpha1 calls the service as kube-apiserver 1.32-1.33 does; the\n"
          "default, v1, as 1.34 and later do. Each prints one JSON object on stdout:\n"
          "\n"
          "  k8s-sign PAYLOAD_B64URL|-   Sign: PAYLOAD_B64URL is the JWT payload\n"
          "      already base64url-encoded (no padding), the token's second segment;\n"
          "      \"-\" reads it from stdin (a trailing newline is dropped). At most\n"
          "      65536 characters. Prints\n"
          "        {\"header\":B64URL,\"signature\":B64URL,\"token\":JWT}\n"
          "      where token is header.PAYLOAD_B64URL.signature, assembled as\n"
          "      kube-apiserver does. The header is checked as kube-apiserver checks\n"
          "      it (typ JWT, alg RS256/ES256/ES384/ES512, kid of 1..1024 bytes) and\n"
          "      must hold only alg, kid and typ. The signature is not verified here.\n"
          "  k8s-keys     FetchKeys: prints\n"
          "        {\"keys\":[{\"key_id\":KID,\"key_der_b64\":BASE64,\n"
          "                  \"public_key_pem\":PEM,\"exclude_from_oidc_discovery\":BOOL},...],\n"
          "         \"data_timestamp\":RFC3339,\"data_timestamp_seconds\":N,\n"
          "         \"refresh_hint_seconds\":N}\n"
          "      key_der_b64 is the PKIX (SubjectPublicKeyInfo) DER in standard base64;\n"
          "      a key that does not parse as one fails the command (exit 1).\n"
          "  k8s-metadata Metadata: prints {\"max_token_expiration_seconds\":N}\n"
          "      (kube-apiserver needs at least 600; less fails the command).\n"
          "\n"
          "Example: payload=$(printf '{\"iss\":\"...\"}' | basenc --base64url | tr -d '=\\n')\n"
          "         jwt-sign --unix var/dev/externaljwt.sock k8s-sign \"$payload\"\n"
          "A refusal prints \"jwt-sign: STATUS_NAME: reason: message\" on stderr (the\n"
          "failure line of jwt-sign --help, with the rule's reason first); a reply\n"
          "that breaks the contract is INTERNAL (\"malformed response: ...\"). Exit\n"
          "status as for sign (jwt-sign --help).\n",
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

static void usage_introspect(FILE *f)
{
    fputs("Usage: jwt-sign --target HOST:PORT --ca FILE --cert FILE --key FILE\n"
          "                [--timeout-ms N] introspect TOKEN|-\n"
          "\n"
          "Asks the signer (service jwtsigner.v1.Status, RFC 7662 token introspection)\n"
          "whether it issued exactly TOKEN and the token still stands: its signature\n"
          "verifies with a published key, its jti and SHA-256 are those of a token the\n"
          "signer issued, it has not expired and is not revoked. \"-\" reads the token\n"
          "from stdin (trailing whitespace is ignored; at most 1 MiB is read).\n"
          "Only identities in the policy's introspectors may ask (anyone else:\n"
          "PERMISSION_DENIED, exit 3).\n"
          "\n"
          "Prints the signer's RFC 7662 answer as one line of JSON, e.g.\n"
          "  {\"active\":true,\"scope\":\"read\",\"client_id\":ID,\"sub\":S,\"aud\":A,\n"
          "   \"iss\":ISS,\"exp\":N,\"iat\":N,\"jti\":J,\"token_type\":\"Bearer\"}\n"
          "or {\"active\":false} -- with no reason (RFC 7662 section 2.2; the reason is\n"
          "in the signer's log, audit log and metrics). Exit 0 for either answer: only a\n"
          "failed call exits non-zero (see jwt-sign --help).\n",
          f);
}

#define ADMIN_CONN                                                                                 \
    "Usage: jwt-sign --target HOST:PORT --ca FILE --cert FILE --key FILE [--timeout-ms N]\n"

static void usage_admin(FILE *f)
{
    fputs(ADMIN_CONN
          "                admin ACTION [ARGS] [--reason TEXT]\n"
          "\n"
          "Calls the signer's Admin service (jwtsigner.v1.Admin). Only identities in the\n"
          "policy's admins may; anyone else gets PERMISSION_DENIED (exit 3). Every call,\n"
          "allowed or denied, is an audit record carrying the caller's identity and the\n"
          "--reason text.\n"
          "\n"
          "Actions:\n"
          "  rotate KEY          new version of KEY, published now, signing after the\n"
          "                      pre-publication delay\n"
          "  revoke KEY KID      revoke version KID of KEY at once (the leaked-key case)\n"
          "  incident on|off     turn incident mode on or off\n"
          "  freeze IDENTITY     refuse every request from caller IDENTITY\n"
          "  unfreeze IDENTITY   serve caller IDENTITY again\n"
          "  reload              reload the policy file; prints its SHA-256\n"
          "  status              keys and states, incident mode, callers (JSON)\n"
          "  rotate-audit-key    new audit log key in the HSM; the log announces it\n"
          "  revoke-token --jti J | --sub S | --caller ID\n"
          "                      revoke one issued token, or every token of a subject\n"
          "                      or of a caller issued until now (for introspection)\n"
          "\n"
          "  --reason TEXT       why, for the audit record (rotate, revoke, incident,\n"
          "                      freeze, unfreeze, rotate-audit-key, revoke-token)\n"
          "\n"
          "Each action prints one JSON object on stdout (see jwt-sign admin ACTION --help).\n"
          "Exit status as for sign (jwt-sign --help); NOT_FOUND (no such key, kid or\n"
          "caller) and FAILED_PRECONDITION exit 1.\n",
          f);
}

static void usage_admin_rotate(FILE *f)
{
    fputs(ADMIN_CONN
          "                admin rotate KEY [--reason TEXT]\n"
          "\n"
          "Generates a new version of key KEY in the HSM and publishes it as `next`; it\n"
          "becomes `active` at activate_at (after the pre-publication delay, so no\n"
          "verifier meets a kid it has not fetched) and the old version becomes\n"
          "`retiring`. Prints\n"
          "  {\"key\":KEY,\"version\":N,\"kid\":KID,\"activate_at\":UNIX_SECONDS}\n",
          f);
}

static void usage_admin_revoke(FILE *f)
{
    fputs(ADMIN_CONN
          "                admin revoke KEY KID [--reason TEXT]\n"
          "\n"
          "Revokes version KID of key KEY at once: it leaves the JWKS and never signs\n"
          "again, also after a restart. Prints\n"
          "  {\"key\":KEY,\"kid\":KID,\"revoked_at\":UNIX_SECONDS,\"active_kid\":KID2|null}\n"
          "where active_kid is the version that signs now (null: none is left).\n"
          "Exit 1 (NOT_FOUND) for an unknown key or kid.\n",
          f);
}

static void usage_admin_incident(FILE *f)
{
    fputs(ADMIN_CONN "                admin incident on|off [--reason TEXT]\n"
                     "\n"
                     "Turns the signer's incident mode on or off. Prints\n"
                     "  {\"incident_mode\":true|false}\n"
                     "with the state the signer reports now.\n",
          f);
}

static void usage_admin_freeze(FILE *f)
{
    fputs(ADMIN_CONN
          "                admin freeze IDENTITY [--reason TEXT]\n"
          "\n"
          "Freezes caller IDENTITY (its exact identity, e.g.\n"
          "spiffe://example.org/issuer-a): from its next request on, the signer refuses\n"
          "it. Prints\n"
          "  {\"identity\":IDENTITY,\"frozen\":true}\n",
          f);
}

static void usage_admin_unfreeze(FILE *f)
{
    fputs(ADMIN_CONN "                admin unfreeze IDENTITY [--reason TEXT]\n"
                     "\n"
                     "Lets caller IDENTITY sign again. Prints\n"
                     "  {\"identity\":IDENTITY,\"frozen\":false}\n",
          f);
}

static void usage_admin_reload(FILE *f)
{
    fputs(ADMIN_CONN "                admin reload\n"
                     "\n"
                     "Makes the signer reload its policy file; a policy that does not load leaves\n"
                     "the old one in force and fails the call. Prints\n"
                     "  {\"sha256\":HEX}\n"
                     "the SHA-256 of the policy now in force.\n",
          f);
}

static void usage_admin_rotate_audit(FILE *f)
{
    fputs(ADMIN_CONN "                admin rotate-audit-key [--reason TEXT]\n"
                     "\n"
                     "Generates a new audit log key in the signer's HSM (ES256, non-extractable,\n"
                     "label <audit.key_label>-N). The next checkpoint, signed by the old key,\n"
                     "announces it (audit/FORMAT.md §5.4); every later one is signed by it, also\n"
                     "after a restart. Verify with the log's FIRST key:\n"
                     "  jwt-audit verify --pubkey FIRST.pem AUDIT_DIR\n"
                     "Prints\n"
                     "  {\"label\":LABEL,\"key_id\":ID}\n",
          f);
}

static void usage_admin_revoke_token(FILE *f)
{
    fputs(ADMIN_CONN
          "                admin revoke-token --jti J | --sub S | --caller ID [--reason TEXT]\n"
          "\n"
          "Revokes issued tokens, exactly one of:\n"
          "  --jti J       the token whose jti is J\n"
          "  --sub S       every token of subject S issued until now\n"
          "  --caller ID   every token issued to caller ID (its typed identity, e.g.\n"
          "                spiffe://example.org/issuer-a) until now\n"
          "From the next introspection on, the signer answers {\"active\":false} for\n"
          "them, also after a restart (the revocation is an audit record). Tokens\n"
          "already handed out do not change: only verifiers that introspect see it.\n"
          "Prints\n"
          "  {\"cutoff\":UNIX_SECONDS,\"until\":UNIX_SECONDS,\"audit_seq\":N}\n"
          "cutoff: tokens issued at or before it are revoked (0 for --jti); until: when\n"
          "the revocation lapses, once every token it covers has expired.\n",
          f);
}

static void usage_admin_status(FILE *f)
{
    fputs(ADMIN_CONN "                admin status\n"
                     "\n"
                     "Prints the signer's status document, pretty-printed JSON: keys and their\n"
                     "versions' states, incident mode, frozen callers, per-caller counters and\n"
                     "limits.\n",
          f);
}

/* One row per admin action: its name, operands and help. */
typedef struct admin_spec {
    const char *name;
    admin_cmd id;
    int nargs;           /* operands after the action */
    int takes_reason;    /* --reason allowed */
    const char *missing; /* usage error when operands are missing */
    void (*usage)(FILE *f);
} admin_spec;

static const admin_spec admin_specs[] = {
    {"rotate", ADM_ROTATE, 1, 1, "admin rotate needs KEY", usage_admin_rotate},
    {"revoke", ADM_REVOKE, 2, 1, "admin revoke needs KEY and KID", usage_admin_revoke},
    {"incident", ADM_INCIDENT, 1, 1, "admin incident needs on or off", usage_admin_incident},
    {"freeze", ADM_FREEZE, 1, 1, "admin freeze needs IDENTITY", usage_admin_freeze},
    {"unfreeze", ADM_UNFREEZE, 1, 1, "admin unfreeze needs IDENTITY", usage_admin_unfreeze},
    {"reload", ADM_RELOAD, 0, 0, NULL, usage_admin_reload},
    {"status", ADM_STATUS, 0, 0, NULL, usage_admin_status},
    {"rotate-audit-key", ADM_ROTATE_AUDIT, 0, 1, NULL, usage_admin_rotate_audit},
    {"revoke-token", ADM_REVOKE_TOKEN, 0, 1, NULL, usage_admin_revoke_token},
};

static const admin_spec *find_admin(const char *name)
{
    for (size_t i = 0; i < sizeof(admin_specs) / sizeof(admin_specs[0]); i++)
        if (strcmp(admin_specs[i].name, name) == 0)
            return &admin_specs[i];
    return NULL;
}

static const admin_spec *admin_spec_of(admin_cmd id)
{
    for (size_t i = 0; i < sizeof(admin_specs) / sizeof(admin_specs[0]); i++)
        if (admin_specs[i].id == id)
            return &admin_specs[i];
    return NULL;
}

static void print_help(command cmd, admin_cmd adm)
{
    const admin_spec *spec = NULL;

    switch (cmd) {
    case CMD_ADMIN:
        spec = admin_spec_of(adm);
        if (spec != NULL)
            spec->usage(stdout);
        else
            usage_admin(stdout);
        break;
    case CMD_SIGN:
        usage_sign(stdout);
        break;
    case CMD_JWKS:
        usage_jwks(stdout);
        break;
    case CMD_DECODE:
        usage_decode(stdout);
        break;
    case CMD_INTROSPECT:
        usage_introspect(stdout);
        break;
    case CMD_K8S_SIGN:
    case CMD_K8S_KEYS:
    case CMD_K8S_METADATA:
        usage_k8s(stdout);
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

/*
 * Hints for a call that never reached the signer. gRPC reports a failed
 * connection or TLS handshake only as UNAVAILABLE with its own text
 * ("failed to connect to all addresses; last error: ..."); what it names
 * there, tried against a real signer (gRPC 1.51, OpenSSL 3):
 *   wrong --ca             Ssl handshake failed: ... certificate verify failed
 *   wrong host in --target Peer name 127.1 is not in peer certificate
 *   client certificate not trusted, not for client auth, or none: the
 *                          server aborts the handshake (TLS 1.3 ends it
 *                          after the client's last flight): Socket closed
 *   no signer on the port  Failed to connect to remote host: Connection refused
 * The server never sends that text itself, so a hint is only given for a
 * failure gRPC produced locally.
 */
typedef struct conn_hint {
    const char *match;
    const char *hint;
} conn_hint;

static const conn_hint k_conn_hints[] = {
    {"Peer name ",
     "the signer's certificate is not issued for the host name in --target; use a name in its "
     "subjectAltName (the dev PKI's is localhost or 127.0.0.1)"},
    {"certificate verify failed",
     "the signer's certificate does not chain to the CA in --ca; pass the CA that issued the "
     "signer's server certificate"},
    {"Socket closed",
     "the signer closed the connection during the TLS handshake: it most likely refused the "
     "client certificate in --cert (not issued by the CA the signer trusts for clients, expired, "
     "or not for client authentication); the signer's log has gRPC's 'Handshake failed' "
     "line with the reason"},
    {"Connection refused",
     "nothing accepts connections at --target; is jwt-signerd running, on this host and port?"},
    {"Ssl handshake failed",
     "the TLS handshake failed; is --target the signer's gRPC port (not its HTTP port)?"},
};

static const char *conn_hint_for(const jwtsigner_status *st)
{
    static const char local[] = "failed to connect to all addresses";
    if (st->code != ST_UNAVAILABLE)
        return NULL;
    const char *text = st->transport[0] != '\0' ? st->transport : st->message;
    if (strstr(text, local) == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(k_conn_hints) / sizeof(k_conn_hints[0]); i++)
        if (strstr(text, k_conn_hints[i].match) != NULL)
            return k_conn_hints[i].hint;
    return NULL;
}

/* A failed call: the status line, then a hint if the call never reached the
 * signer (the status line stays the first, parsable one). */
static int fail_call(const jwtsigner_status *st)
{
    int rc = fail(st->code, st->message);
    const char *hint = conn_hint_for(st);
    if (hint != NULL)
        fprintf(stderr, "jwt-sign: hint: %s\n", hint);
    return rc;
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
        return fail_call(&st);
    return EXIT_OK;
}

/*
 * Prints obj (built with json_pack from server strings; NULL when that failed)
 * as one line, or indented when `pretty`, and releases it.
 */
static int emit_json(json_t *obj, int pretty)
{
    int rc = EXIT_OK;
    char *text = NULL;

    if (obj == NULL)
        return fail(ST_INTERNAL, "cannot build the JSON output (invalid UTF-8 from the server?)");
    text = json_dumps(obj, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_PRESERVE_ORDER);
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

static int print_token_json(const jwtsigner_token *t)
{
    if (t->audit_seq > (uint64_t)INT64_MAX)
        return fail(ST_INTERNAL, "audit_seq does not fit a JSON integer");
    return emit_json(json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}", "jwt", t->jwt, "kid", t->kid,
                               "jti", t->jti, "issued_at", (json_int_t)t->issued_at, "expires_at",
                               (json_int_t)t->expires_at, "audit_seq", (json_int_t)t->audit_seq),
                     0);
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
        rc = fail_call(&st);
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
        rc = fail_call(&st);
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

static int admin_rotate(jwtsigner_client *client, const cli *c)
{
    jwtsigner_status st;
    jwtsigner_rotate_result r;

    if (jwtsigner_admin_rotate(client, c->arg, c->reason, &r, &st) != 0)
        return fail_call(&st);
    int rc =
        emit_json(json_pack("{s:s, s:I, s:s, s:I}", "key", r.key, "version", (json_int_t)r.version,
                            "kid", r.kid, "activate_at", (json_int_t)r.activate_at),
                  0);
    jwtsigner_rotate_result_clear(&r);
    return rc;
}

static int admin_revoke(jwtsigner_client *client, const cli *c)
{
    jwtsigner_status st;
    jwtsigner_revoke_result r;

    if (jwtsigner_admin_revoke(client, c->arg, c->arg2, c->reason, &r, &st) != 0)
        return fail_call(&st);
    /* "s?" packs null for NULL: no version is left to sign. */
    int rc = emit_json(json_pack("{s:s, s:s, s:I, s:s?}", "key", r.key, "kid", r.kid, "revoked_at",
                                 (json_int_t)r.revoked_at, "active_kid",
                                 r.active_kid[0] != '\0' ? r.active_kid : NULL),
                       0);
    jwtsigner_revoke_result_clear(&r);
    return rc;
}

static int admin_incident(jwtsigner_client *client, const cli *c)
{
    jwtsigner_status st;
    int now_on = 0;

    if (jwtsigner_admin_incident(client, strcmp(c->arg, "on") == 0, c->reason, &now_on, &st) != 0)
        return fail_call(&st);
    return emit_json(json_pack("{s:b}", "incident_mode", now_on), 0);
}

static int admin_freeze(jwtsigner_client *client, const cli *c, int freeze)
{
    jwtsigner_status st;

    if (jwtsigner_admin_freeze(client, c->arg, c->reason, freeze, &st) != 0)
        return fail_call(&st);
    return emit_json(json_pack("{s:s, s:b}", "identity", c->arg, "frozen", freeze), 0);
}

static int admin_rotate_audit(jwtsigner_client *client, const cli *c)
{
    jwtsigner_status st;
    jwtsigner_audit_key_result r;

    if (jwtsigner_admin_rotate_audit_key(client, c->reason, &r, &st) != 0)
        return fail_call(&st);
    return emit_json(json_pack("{s:s, s:s}", "label", r.label, "key_id", r.key_id), 0);
}

static int admin_reload(jwtsigner_client *client)
{
    jwtsigner_status st;
    char *sha = NULL;

    if (jwtsigner_admin_reload(client, &sha, &st) != 0)
        return fail_call(&st);
    int rc = emit_json(json_pack("{s:s}", "sha256", sha), 0);
    free(sha);
    return rc;
}

static int admin_status(jwtsigner_client *client)
{
    jwtsigner_status st;
    json_error_t jerr;
    char *text = NULL;

    if (jwtsigner_admin_status(client, &text, &st) != 0)
        return fail_call(&st);
    /* Re-encoding also escapes any control bytes the server sent. */
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        return fail(ST_INTERNAL, "malformed response: status_json is not a JSON object");
    }
    return emit_json(doc, 1);
}

static int admin_revoke_token(jwtsigner_client *client, const cli *c)
{
    jwtsigner_status st;
    jwtsigner_revoke_token_result r;
    /* cli_main has checked that exactly one of them is set. */
    jwtsigner_revoke_what what = c->jti != NULL   ? JWTSIGNER_REVOKE_JTI
                                 : c->sub != NULL ? JWTSIGNER_REVOKE_SUB
                                                  : JWTSIGNER_REVOKE_CALLER;
    const char *value = c->jti != NULL ? c->jti : c->sub != NULL ? c->sub : c->caller;

    if (jwtsigner_admin_revoke_token(client, what, value, c->reason, &r, &st) != 0)
        return fail_call(&st);
    if (r.audit_seq > (uint64_t)INT64_MAX)
        return fail(ST_INTERNAL, "audit_seq does not fit a JSON integer");
    return emit_json(json_pack("{s:I, s:I, s:I}", "cutoff", (json_int_t)r.cutoff, "until",
                               (json_int_t)r.until, "audit_seq", (json_int_t)r.audit_seq),
                     0);
}

static int cmd_admin(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_client *client = NULL;

    rc = connect_client(c, &client);
    if (rc != EXIT_OK)
        goto out;
    switch (c->admin) {
    case ADM_ROTATE:
        rc = admin_rotate(client, c);
        break;
    case ADM_REVOKE:
        rc = admin_revoke(client, c);
        break;
    case ADM_INCIDENT:
        rc = admin_incident(client, c);
        break;
    case ADM_FREEZE:
        rc = admin_freeze(client, c, 1);
        break;
    case ADM_UNFREEZE:
        rc = admin_freeze(client, c, 0);
        break;
    case ADM_RELOAD:
        rc = admin_reload(client);
        break;
    case ADM_STATUS:
        rc = admin_status(client);
        break;
    case ADM_ROTATE_AUDIT:
        rc = admin_rotate_audit(client, c);
        break;
    case ADM_REVOKE_TOKEN:
        rc = admin_revoke_token(client, c);
        break;
    case ADM_NONE:
    default:
        rc = EXIT_USAGE;
        break;
    }
    if (rc == EXIT_OK)
        rc = finish_output();
out:
    jwtsigner_client_free(client);
    return rc;
}

/*
 * Introspect: prints the signer's RFC 7662 answer, active or not (both are
 * answers, exit 0). The JSON is parsed and re-encoded on one line, which also
 * escapes any control bytes a server could send to a terminal.
 */
static int cmd_introspect(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_client *client = NULL;
    jwtsigner_status st;
    jwtsigner_introspection r = {0};
    char *input = NULL;
    const char *tok = c->arg;
    size_t len = strlen(c->arg);

    if (strcmp(c->arg, "-") == 0) {
        char msg[JWTSIGNER_MSG_MAX];
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
    /* A protobuf string cannot carry a NUL (the signer refuses one). */
    if (len == 0 || memchr(tok, '\0', len) != NULL) {
        rc = fail(ST_INVALID_ARGUMENT, len == 0 ? "token: empty" : "token: contains a NUL byte");
        goto out;
    }
    rc = connect_client(c, &client);
    if (rc != EXIT_OK)
        goto out;
    if (jwtsigner_introspect(client, tok, &r, &st) != 0) {
        rc = fail_call(&st);
        goto out;
    }
    json_error_t jerr;
    json_t *doc = json_loads(r.json, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        rc = fail(ST_INTERNAL, "malformed response: json is not a JSON object");
        goto out;
    }
    rc = emit_json(doc, 0);
    if (rc == EXIT_OK)
        rc = finish_output();
out:
    jwtsigner_introspection_clear(&r);
    jwtsigner_client_free(client);
    if (input != NULL) {
        /* The token is a bearer credential. */
        OPENSSL_cleanse(input, len);
        free(input);
    }
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

/* ---- Kubernetes ExternalJWTSigner (k8s-sign, k8s-keys, k8s-metadata) ---------------- */

static bool is_k8s(command cmd)
{
    return cmd == CMD_K8S_SIGN || cmd == CMD_K8S_KEYS || cmd == CMD_K8S_METADATA;
}

/*
 * The socket commands and the mTLS commands take disjoint options: a TLS
 * option given to k8s-* (or --unix to sign) is a mistake worth saying, not
 * something to ignore. Environment variables (JWT_SIGN_TARGET, ...) are not
 * options given here and are simply not used by k8s-*.
 */
static int check_k8s_options(const cli *c)
{
    if (!is_k8s(c->cmd)) {
        if (c->unix_path != NULL || c->api_name != NULL)
            return usage_error("--unix and --api apply only to k8s-sign, k8s-keys and "
                               "k8s-metadata",
                               NULL);
        return 0;
    }
    if (c->target != NULL || c->ca != NULL || c->cert != NULL || c->key != NULL)
        return usage_error("k8s-* commands call a Unix socket without TLS: use --unix PATH, not "
                           "--target, --ca, --cert or --key",
                           NULL);
    if (c->key_name != NULL || c->request_id != NULL || c->json)
        return usage_error("--key-name, --request-id and --json do not apply to k8s-* commands "
                           "(the signer picks the key from its policy; output is always JSON)",
                           NULL);
    if (c->unix_path == NULL || c->unix_path[0] == '\0')
        return usage_error("k8s-* commands need --unix PATH (the signer's ExternalJWTSigner "
                           "socket)",
                           NULL);
    return 0;
}

/*
 * A failed socket call: the status line, then a hint when the reply was over
 * the client's size limit, or when the socket could not be reached: from what
 * is at PATH (gRPC's own text for a Unix socket names only the errno).
 */
static int fail_k8s_call(const cli *c, const jwtsigner_status *st)
{
    int rc = fail(st->code, st->message);
    /* gRPC's own refusal of a reply over the channel's receive limit. */
    if (st->code == ST_RESOURCE_EXHAUSTED && strstr(st->message, "larger than max") != NULL)
        fprintf(stderr,
                "jwt-sign: hint: the reply is larger than this client accepts (%d bytes); a "
                "well-formed ExternalJWTSigner reply is far smaller\n",
                JWTSIGNER_K8S_REPLY_MAX);
    if (st->code != ST_UNAVAILABLE || c->unix_path == NULL)
        return rc;
    struct stat sb;
    const char *hint = NULL;
    if (stat(c->unix_path, &sb) != 0)
        hint = errno == ENOENT ? "nothing exists at the --unix path; is jwt-signerd running with "
                                 "externaljwt.socket set to it (relative to its config file)?"
                               : "the --unix path cannot be looked up (a directory on the way "
                                 "is not searchable by this user?)";
    else if (!S_ISSOCK(sb.st_mode))
        hint = "the --unix path is not a Unix socket";
    else if (access(c->unix_path, W_OK) != 0)
        hint = "this user may not connect to the socket: its owner, group and mode come from "
               "externaljwt.owner, .group and .mode in the signer's config";
    else
        hint = "the socket exists but nothing accepts on it: a stale socket left by a signer that "
               "is no longer running?";
    fprintf(stderr, "jwt-sign: hint: %s\n", hint);
    return rc;
}

static int connect_k8s(const cli *c, jwtsigner_k8s **out)
{
    jwtsigner_status st;
    if (jwtsigner_k8s_new(c->unix_path, c->k8s_api, c->timeout_ms, out, &st) != 0)
        return fail(st.code, st.message);
    return EXIT_OK;
}

/* The algorithms kube-apiserver accepts from an external signer. */
static const char *const k8s_algs[] = {"RS256", "ES256", "ES384", "ES512"};

/*
 * Checks a Sign reply's JOSE header as kube-apiserver does before it uses the
 * token (typ "JWT", a supported alg, a kid of 1..1024 bytes), plus the
 * contract's "only alg, kid and typ". Returns 0, or -1 with msg filled.
 */
static int check_k8s_header(const char *header_b64, char *msg, size_t msg_cap)
{
    int rc = -1;
    char why[JWTSIGNER_MSG_MAX / 2]; /* decode_segment's messages are short */
    json_t *h = decode_segment(header_b64, strlen(header_b64), "header", why, sizeof(why));
    if (h == NULL) {
        snprintf(msg, msg_cap, "malformed response: %s", why);
        return -1;
    }
    const char *key = NULL;
    json_t *val = NULL;
    json_object_foreach(h, key, val)
    {
        if (strcmp(key, "alg") != 0 && strcmp(key, "kid") != 0 && strcmp(key, "typ") != 0) {
            snprintf(msg, msg_cap,
                     "malformed response: the header has a member other than alg, kid and typ");
            goto out;
        }
    }
    const char *typ = json_string_value(json_object_get(h, "typ"));
    const char *alg = json_string_value(json_object_get(h, "alg"));
    const char *kid = json_string_value(json_object_get(h, "kid"));
    if (typ == NULL || strcmp(typ, "JWT") != 0) {
        snprintf(msg, msg_cap, "malformed response: the header's typ is not \"JWT\"");
        goto out;
    }
    bool alg_ok = false;
    for (size_t i = 0; alg != NULL && i < sizeof(k8s_algs) / sizeof(k8s_algs[0]); i++)
        alg_ok = alg_ok || strcmp(alg, k8s_algs[i]) == 0;
    if (!alg_ok) {
        snprintf(msg, msg_cap,
                 "malformed response: the header's alg is not one kube-apiserver accepts "
                 "(RS256, ES256, ES384, ES512)");
        goto out;
    }
    size_t kid_len = kid != NULL ? json_string_length(json_object_get(h, "kid")) : 0;
    if (kid_len == 0 || kid_len > JWTSIGNER_K8S_KID_MAX) {
        snprintf(msg, msg_cap,
                 "malformed response: the header's kid is not a string of 1..%d bytes",
                 JWTSIGNER_K8S_KID_MAX);
        goto out;
    }
    rc = 0;
out:
    json_decref(h);
    return rc;
}

/* {"header","signature","token"}; NULL on out of memory or invalid UTF-8. */
static json_t *k8s_token_json(const jwtsigner_k8s_token *t)
{
    return json_pack("{s:s, s:s, s:s}", "header", t->header, "signature", t->signature, "token",
                     t->token);
}

static int cmd_k8s_sign(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_k8s *k = NULL;
    jwtsigner_status st;
    jwtsigner_k8s_token tok = {0};
    char *input = NULL;
    const char *payload = c->arg;
    char msg[JWTSIGNER_MSG_MAX];

    if (strcmp(c->arg, "-") == 0) {
        size_t len = 0;
        int code = read_stdin(&input, &len, msg, sizeof(msg));
        if (code != 0) {
            rc = fail(code, msg);
            goto out;
        }
        /* `basenc ... | tr -d =` or echo end the payload with a newline. */
        while (len > 0 && (input[len - 1] == '\n' || input[len - 1] == '\r'))
            input[--len] = '\0';
        if (memchr(input, '\0', len) != NULL) {
            rc = fail(ST_INVALID_ARGUMENT, "payload: contains a NUL byte");
            goto out;
        }
        payload = input;
    }
    rc = connect_k8s(c, &k);
    if (rc != EXIT_OK)
        goto out;
    if (jwtsigner_k8s_sign(k, payload, &tok, &st) != 0) {
        rc = fail_k8s_call(c, &st);
        goto out;
    }
    if (check_k8s_header(tok.header, msg, sizeof(msg)) != 0) {
        rc = fail(ST_INTERNAL, msg);
        goto out;
    }
    rc = emit_json(k8s_token_json(&tok), 0);
    if (rc == EXIT_OK)
        rc = finish_output();
out:
    jwtsigner_k8s_token_clear(&tok);
    jwtsigner_k8s_free(k);
    free(input);
    return rc;
}

/* Standard base64 (RFC 4648 section 4, padded): how PKIX DER is usually pasted. NULL on OOM. */
static char *base64_std(const unsigned char *in, size_t n)
{
    if (n > (size_t)INT_MAX / 4 * 3 - 3)
        return NULL;
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    return out;
}

/*
 * The k8s-keys object; NULL on out of memory or a string that is not UTF-8
 * (emit_json says so). keys->data_timestamp is in 1970..9999
 * (jwtsigner_k8s_fetch_keys checks), so its milliseconds fit js_wall_format.
 */
static json_t *k8s_keys_json(const jwtsigner_k8s_keys *keys)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < keys->count; i++) {
        const jwtsigner_k8s_key *key = &keys->keys[i];
        char *b64 = base64_std(key->der, key->der_len);
        json_t *o = b64 == NULL
                        ? NULL
                        : json_pack("{s:s, s:s, s:s, s:b}", "key_id", key->key_id, "key_der_b64",
                                    b64, "public_key_pem", key->pem, "exclude_from_oidc_discovery",
                                    key->exclude_from_oidc_discovery);
        free(b64);
        if (o == NULL || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    char when[JS_WALL_TIME_LEN + 1];
    js_wall_format(keys->data_timestamp_seconds * 1000 + keys->data_timestamp_nanos / 1000000,
                   when);
    return json_pack("{s:o, s:s, s:I, s:I}", "keys", arr, "data_timestamp", when,
                     "data_timestamp_seconds", (json_int_t)keys->data_timestamp_seconds,
                     "refresh_hint_seconds", (json_int_t)keys->refresh_hint_seconds);
}

static int cmd_k8s_keys(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_k8s *k = NULL;
    jwtsigner_status st;
    jwtsigner_k8s_keys keys = {0};

    rc = connect_k8s(c, &k);
    if (rc != EXIT_OK)
        goto out;
    if (jwtsigner_k8s_fetch_keys(k, &keys, &st) != 0) {
        rc = fail_k8s_call(c, &st);
        goto out;
    }
    rc = emit_json(k8s_keys_json(&keys), 1);
    if (rc == EXIT_OK)
        rc = finish_output();
out:
    jwtsigner_k8s_keys_clear(&keys);
    jwtsigner_k8s_free(k);
    return rc;
}

static int cmd_k8s_metadata(const cli *c)
{
    int rc = EXIT_OK;
    jwtsigner_k8s *k = NULL;
    jwtsigner_status st;
    int64_t max_exp = 0;

    rc = connect_k8s(c, &k);
    if (rc != EXIT_OK)
        goto out;
    if (jwtsigner_k8s_metadata(k, &max_exp, &st) != 0) {
        rc = fail_k8s_call(c, &st);
        goto out;
    }
    rc = emit_json(json_pack("{s:I}", "max_token_expiration_seconds", (json_int_t)max_exp), 0);
    if (rc == EXIT_OK)
        rc = finish_output();
out:
    jwtsigner_k8s_free(k);
    return rc;
}

/* --jti, --sub and --caller belong to admin revoke-token, which needs exactly one. */
static int check_revoke_token_options(const cli *c)
{
    int n = (c->jti != NULL) + (c->sub != NULL) + (c->caller != NULL);
    if (c->cmd != CMD_ADMIN || c->admin != ADM_REVOKE_TOKEN) {
        if (n > 0)
            return usage_error("--jti, --sub and --caller apply only to admin revoke-token", NULL);
        return 0;
    }
    if (n != 1)
        return usage_error("admin revoke-token needs exactly one of --jti, --sub and --caller",
                           NULL);
    const char *v = c->jti != NULL ? c->jti : c->sub != NULL ? c->sub : c->caller;
    if (v[0] == '\0')
        return usage_error("admin revoke-token: --jti, --sub or --caller is empty", NULL);
    return 0;
}

static command parse_command(const char *s)
{
    if (strcmp(s, "sign") == 0)
        return CMD_SIGN;
    if (strcmp(s, "jwks") == 0)
        return CMD_JWKS;
    if (strcmp(s, "decode") == 0)
        return CMD_DECODE;
    if (strcmp(s, "introspect") == 0)
        return CMD_INTROSPECT;
    if (strcmp(s, "admin") == 0)
        return CMD_ADMIN;
    if (strcmp(s, "k8s-sign") == 0)
        return CMD_K8S_SIGN;
    if (strcmp(s, "k8s-keys") == 0)
        return CMD_K8S_KEYS;
    if (strcmp(s, "k8s-metadata") == 0)
        return CMD_K8S_METADATA;
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
    OPT_REASON,
    OPT_UNIX,
    OPT_API,
    OPT_JTI,
    OPT_SUB,
    OPT_CALLER,
    OPT_VERSION,
};

static int apply_option(cli *c, int opt, const char *optarg)
{
    switch (opt) {
    case OPT_TARGET:
        c->target = optarg;
        break;
    case OPT_CA:
        c->ca = optarg;
        break;
    case OPT_CERT:
        c->cert = optarg;
        break;
    case OPT_KEY:
        c->key = optarg;
        break;
    case OPT_KEY_NAME:
        c->key_name = optarg;
        break;
    case OPT_TIMEOUT:
        if (parse_timeout(optarg, &c->timeout_ms) != 0)
            return usage_error("--timeout-ms must be an integer in 1..3600000, not", optarg);
        break;
    case OPT_REQUEST_ID:
        c->request_id = optarg;
        break;
    case OPT_JSON:
        c->json = 1;
        break;
    case OPT_VERSION:
        c->version = 1;
        break;
    case OPT_REASON:
        c->reason = optarg;
        break;
    case OPT_UNIX:
        c->unix_path = optarg;
        break;
    case OPT_JTI:
        c->jti = optarg;
        break;
    case OPT_SUB:
        c->sub = optarg;
        break;
    case OPT_CALLER:
        c->caller = optarg;
        break;
    case OPT_API:
        c->api_name = optarg;
        if (strcmp(optarg, "v1") == 0)
            c->k8s_api = JWTSIGNER_K8S_V1;
        else if (strcmp(optarg, "v1alpha1") == 0)
            c->k8s_api = JWTSIGNER_K8S_V1ALPHA1;
        else
            return usage_error("--api must be v1 or v1alpha1, not", optarg);
        break;
    case 'h':
    default:
        c->help = 1;
        break;
    }
    return 0;
}

static int cli_main(int argc, char **argv, char **ops)
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
        {"reason", required_argument, NULL, OPT_REASON},
        {"unix", required_argument, NULL, OPT_UNIX},
        {"api", required_argument, NULL, OPT_API},
        {"jti", required_argument, NULL, OPT_JTI},
        {"sub", required_argument, NULL, OPT_SUB},
        {"caller", required_argument, NULL, OPT_CALLER},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    cli c = {.timeout_ms = 0, .cmd = CMD_NONE, .k8s_api = JWTSIGNER_K8S_V1};

    /*
     * Our own argument scan instead of getopt: the only options are --long
     * ones and -h, so anything else is an operand even if it starts with '-'
     * (a kid is base64url and may: "admin revoke KEY -uMP..."). Options may
     * come before or after the command; "--" ends them.
     */
    int nops = 0;
    bool only_operands = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_operands || strncmp(a, "--", 2) != 0) {
            if (!only_operands && strcmp(a, "-h") == 0)
                c.help = 1;
            else
                ops[nops++] = argv[i];
            continue;
        }
        if (a[2] == '\0') {
            only_operands = true;
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const struct option *o = NULL;
        for (const struct option *l = longopts; l->name != NULL; l++)
            if (strlen(l->name) == nlen && strncmp(l->name, name, nlen) == 0)
                o = l;
        if (o == NULL)
            return usage_error("unknown option", a);
        const char *val = NULL;
        if (o->has_arg == required_argument) {
            if (eq != NULL)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return usage_error("missing value for option", a);
        } else if (eq != NULL) {
            return usage_error("option takes no value", a);
        }
        int rc = apply_option(&c, o->val, val);
        if (rc != 0)
            return rc;
    }
    argv = ops;
    argc = nops;
    int optind = 0;

    if (optind < argc) {
        c.cmd = parse_command(argv[optind]);
        if (c.cmd == CMD_NONE)
            return usage_error("unknown command", argv[optind]);
        optind++;
    }
    const admin_spec *adm = NULL;
    if (c.cmd == CMD_ADMIN && optind < argc) {
        adm = find_admin(argv[optind]);
        if (adm == NULL)
            return usage_error("unknown admin action", argv[optind]);
        c.admin = adm->id;
        optind++;
    }
    if (c.help) {
        print_help(c.cmd, c.admin);
        return finish_output();
    }
    if (c.version) {
        printf("jwt-sign %s\n", JS_VERSION);
        return finish_output();
    }
    if (c.cmd == CMD_NONE)
        return usage_error("missing command (sign, jwks, decode, introspect, admin, k8s-sign, "
                           "k8s-keys or k8s-metadata)",
                           NULL);
    int rc = check_k8s_options(&c);
    if (rc != 0)
        return rc;
    if (c.cmd == CMD_ADMIN && adm == NULL)
        return usage_error("admin needs an action (rotate, revoke, incident, freeze, unfreeze, "
                           "reload, status, rotate-audit-key or revoke-token)",
                           NULL);
    if (c.reason != NULL && (adm == NULL || !adm->takes_reason))
        return usage_error("--reason applies only to admin rotate, revoke, incident, freeze, "
                           "unfreeze, rotate-audit-key and revoke-token",
                           NULL);
    rc = check_revoke_token_options(&c);
    if (rc != 0)
        return rc;
    if (adm != NULL) {
        if (argc - optind < adm->nargs)
            return usage_error(adm->missing, NULL);
        if (adm->nargs >= 1)
            c.arg = argv[optind++];
        if (adm->nargs >= 2)
            c.arg2 = argv[optind++];
        if ((c.arg != NULL && c.arg[0] == '\0') || (c.arg2 != NULL && c.arg2[0] == '\0'))
            return usage_error(adm->missing, NULL);
        /* incident takes one argument (nargs 1 in its table row): c.arg is set above. */
        /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker) */
        if (adm->id == ADM_INCIDENT && strcmp(c.arg, "on") != 0 && strcmp(c.arg, "off") != 0)
            return usage_error("admin incident takes on or off, not", c.arg);
    }

    int want_arg = (c.cmd == CMD_SIGN || c.cmd == CMD_DECODE || c.cmd == CMD_INTROSPECT ||
                    c.cmd == CMD_K8S_SIGN);
    if (want_arg) {
        if (optind >= argc)
            return usage_error(c.cmd == CMD_SIGN         ? "sign needs CLAIMS_JSON or -"
                               : c.cmd == CMD_DECODE     ? "decode needs TOKEN or -"
                               : c.cmd == CMD_INTROSPECT ? "introspect needs TOKEN or -"
                                                         : "k8s-sign needs PAYLOAD_B64URL or -",
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
    case CMD_INTROSPECT:
        return cmd_introspect(&c);
    case CMD_ADMIN:
        return cmd_admin(&c);
    case CMD_K8S_SIGN:
        return cmd_k8s_sign(&c);
    case CMD_K8S_KEYS:
        return cmd_k8s_keys(&c);
    case CMD_K8S_METADATA:
        return cmd_k8s_metadata(&c);
    case CMD_NONE:
    default:
        return EXIT_USAGE;
    }
}

int main(int argc, char **argv)
{
    /* Room for every operand; freed on every path (LeakSanitizer runs the CLI in CI). */
    char **ops = calloc((size_t)argc + 1, sizeof(char *));
    if (ops == NULL)
        return EXIT_OTHER;
    int rc = cli_main(argc, argv, ops);
    free(ops);
    return rc;
}
