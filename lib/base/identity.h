/*
 * identity.h - the caller's identity from its verified client certificate,
 * as typed text.
 *
 * The identity says which certificate field it came from, so a name can never
 * pass for a name of another kind (a CN or DNS SAN that reads
 * "spiffe://example.org/ops/admin" must not be that SPIFFE ID):
 *   URI SAN  -> the URI itself            spiffe://example.org/issuer-a
 *   DNS SAN  -> "dns:" + the name         dns:login.internal.example
 *   subject CN -> "cn:" + the CN          cn:legacy-batch
 * A URI SAN must start with an RFC 3986 §3.1 scheme and ':', and the schemes
 * "dns" and "cn" (any case) are refused, so the three forms never collide and
 * one string comparison compares type and name together. Policy entries,
 * `admins`, FreezeCaller, logs, audit records and metrics all use this text.
 *
 * Order (the SPIFFE convention first): exactly one URI SAN; else the first DNS
 * SAN; else the subject CN. The TLS layer has already verified the chain;
 * this module only chooses and validates the name. Every identity is clean
 * text (text.h: UTF-8, no NUL, no Unicode Cc or Cf) of 1..IDENTITY_MAX bytes,
 * so it is safe in logs and looks on a screen like what it compares as.
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

typedef enum js_identity_type { JS_ID_URI, JS_ID_DNS, JS_ID_CN } js_identity_type;

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
 * X.509-SVID §2: exactly one) or a URI SAN whose scheme is dns/cn
 * (identity.ambiguous); a name that is not clean text, too long, a URI SAN
 * that is not an ASCII URI with a scheme, a DNS SAN that is not a host name
 * (identity.invalid); no name at all (identity.none). The message names the
 * certificate field and, for a bad character, its offset and U+XXXX.
 * A DNS SAN is lower-cased (DNS names compare case-insensitively, RFC 4343),
 * so `dns:` identities have one spelling.
 */
js_status identity_select(const identity_names *names, char *out, size_t cap, js_err *err) JS_WUR;

/*
 * Checks an identity text written by an operator (policy `callers[].id` and
 * `admins`, Admin/FreezeCaller) and sets *type (may be NULL). JS_EINVAL with
 * reason identity.ambiguous for text without a type (a bare `login.example`,
 * or `DNS:x` in upper case) and identity.invalid for anything else wrong
 * (empty, too long, not clean text, a bad DNS name, an empty CN); the message
 * quotes the text and says how to write it now: `dns:NAME`, `cn:NAME` or a
 * full URI. A `dns:` name must be written in lower case.
 */
js_status identity_parse(const char *text, js_identity_type *type, js_err *err) JS_WUR;

/* The type of a text identity_select() or identity_parse() accepted, by its
 * prefix (no validation: for matching and labels only). */
js_identity_type identity_type_of(const char *text);

/* "uri" | "dns" | "cn" ("unknown" for a value outside the enum). */
const char *identity_type_name(js_identity_type t);

#endif
