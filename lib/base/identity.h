/*
 * identity.h - the caller's identity as typed text: from its verified client
 * certificate (mTLS), or from the peer credentials of a Unix socket caller
 * (the ExternalJWTSigner endpoint).
 *
 * The identity says where it came from, so a name can never pass for a name
 * of another kind (a CN or DNS SAN that reads
 * "spiffe://example.org/ops/admin" must not be that SPIFFE ID):
 *   URI SAN    -> the URI itself            spiffe://example.org/issuer-a
 *   DNS SAN    -> "dns:" + the name         dns:login.internal.example
 *   subject CN -> "cn:" + the CN            cn:legacy-batch
 *   Unix peer  -> "unix:uid=" + its uid     unix:uid=0
 * A URI SAN must start with an RFC 3986 §3.1 scheme and ':', and the schemes
 * "dns", "cn" and "unix" (any case) are refused, so the four forms never
 * collide and one string comparison compares type and name together: a
 * client certificate with the URI SAN `unix:uid=0` is refused, never the
 * Unix peer root. A `unix:` identity is the decimal uid the kernel reports
 * for the peer of a Unix domain socket (SO_PEERCRED), written one way only
 * (no sign, no leading zeros), so it has one spelling. Policy entries,
 * `admins`, FreezeCaller, logs, audit records and metrics all use this text.
 *
 * Certificate order (the SPIFFE convention first): exactly one URI SAN; else
 * the first DNS SAN; else the subject CN. The TLS layer has already verified
 * the chain; this module only chooses and validates the name. Every identity
 * is clean text (text.h: UTF-8, no NUL, no Unicode Cc or Cf) of
 * 1..IDENTITY_MAX bytes, so it is safe in logs and looks on a screen like
 * what it compares as.
 */
#ifndef JS_IDENTITY_H
#define JS_IDENTITY_H

#include <stddef.h>

#include "err.h"

/* Bytes of the typed text, prefix included (a buffer needs IDENTITY_MAX + 1). */
#define IDENTITY_MAX 512
/* RFC 1035 §2.3.4: a name of at most 255 octets on the wire is at most 253
 * characters of text; labels 1..63. */
#define IDENTITY_DNS_MAX   253
#define IDENTITY_LABEL_MAX 63
/* The largest uid of a unix: identity: (uid_t)-1 (4294967295) is "no user"
 * to the kernel (setreuid(2)), never a peer's uid. */
#define IDENTITY_UNIX_UID_MAX 4294967294UL

typedef enum js_identity_type { JS_ID_URI, JS_ID_DNS, JS_ID_CN, JS_ID_UNIX } js_identity_type;

typedef struct identity_names {
    const char *const *uris; /* URI SANs in certificate order */
    size_t nuris;
    const char *const *dns; /* DNS SANs in certificate order */
    size_t ndns;
    const char *cn; /* subject CN, or NULL */
} identity_names;

/*
 * Chooses the identity and writes its typed text into out (cap >=
 * IDENTITY_MAX + 1). Refused with JS_EDENIED: more than one URI SAN (SPIFFE
 * X.509-SVID §2: exactly one) or a URI SAN whose scheme is dns, cn or unix
 * (identity.ambiguous: it would read as another identity type); a name that is not clean text, too
 * long, a URI SAN that is not an ASCII URI with a scheme, a DNS SAN that is not a host name
 * (identity.invalid); no name at all (identity.none). The message names the
 * certificate field and, for a bad character, its offset and U+XXXX.
 * A DNS SAN is lower-cased (DNS names compare case-insensitively, RFC 4343),
 * so `dns:` identities have one spelling.
 */
js_status identity_select(const identity_names *names, char *out, size_t cap, js_err *err) JS_WUR;

/*
 * Writes the identity of a Unix domain socket peer, `unix:uid=N` (N the
 * decimal uid), into out (cap >= IDENTITY_MAX + 1). uid is the peer's
 * credentials as the kernel reports them (struct ucred.uid of SO_PEERCRED;
 * a uid_t widens to unsigned long without loss). Refused with JS_EDENIED
 * identity.invalid: a uid above IDENTITY_UNIX_UID_MAX, including
 * (uid_t)-1, which is no user. A too small buffer is JS_EINTERNAL
 * identity.buffer. On failure out is "".
 */
js_status identity_from_peer(unsigned long uid, char *out, size_t cap, js_err *err) JS_WUR;

/*
 * Checks an identity text written by an operator (policy `callers[].id` and
 * `admins`, Admin/FreezeCaller) and sets *type (may be NULL). JS_EINVAL with
 * reason identity.ambiguous for text without a type (a bare `login.example`,
 * or `DNS:x` in upper case) and identity.invalid for anything else wrong
 * (empty, too long, not clean text, a bad DNS name, an empty CN, a `unix:`
 * text in any case that is not exactly `unix:uid=N` with N decimal in
 * 0..IDENTITY_UNIX_UID_MAX, no sign, no leading zero); the message quotes the
 * text and says how to write it now: `dns:NAME`, `cn:NAME`, `unix:uid=1000`
 * or a full URI. A `dns:` name must be written in lower case.
 */
js_status identity_parse(const char *text, js_identity_type *type, js_err *err) JS_WUR;

/* The type of a text identity_select() or identity_parse() accepted, by its
 * prefix (no validation: for matching and labels only). */
js_identity_type identity_type_of(const char *text);

/* "uri" | "dns" | "cn" | "unix" ("unknown" for a value outside the enum). */
const char *identity_type_name(js_identity_type t);

#endif
