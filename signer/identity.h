/*
 * identity.h - the caller's identity from its verified client certificate.
 *
 * Order (the SPIFFE convention first): the URI SAN (e.g.
 * spiffe://example.org/issuer-a), else the first DNS SAN, else the subject
 * CN. The TLS layer has already verified the chain; this module only chooses
 * and validates the name. An identity is 1..IDENTITY_MAX bytes of printable
 * ASCII or UTF-8 without control characters, so it is safe in logs and in
 * policy comparisons.
 */
#ifndef JS_IDENTITY_H
#define JS_IDENTITY_H

#include <stddef.h>

#include "err.h"

#define IDENTITY_MAX 512

typedef struct identity_names {
    const char *const *uris; /* URI SANs in certificate order */
    size_t nuris;
    const char *const *dns; /* DNS SANs in certificate order */
    size_t ndns;
    const char *cn; /* subject CN, or NULL */
} identity_names;

/*
 * Chooses the identity and copies it into out (cap >= IDENTITY_MAX + 1).
 * A certificate with more than one URI SAN is refused (SPIFFE X.509-SVID §2:
 * exactly one URI SAN), as is one with no usable name. JS_EDENIED on failure.
 */
js_status identity_select(const identity_names *names, char *out, size_t cap, js_err *err) JS_WUR;

#endif
