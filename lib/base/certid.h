/*
 * certid.h - the caller's typed identity (identity.h) from a client
 * certificate given as DER, for transports that hand over the peer's
 * certificate itself rather than its names (the HTTP listener: GnuTLS under
 * libmicrohttpd). The chain must already be verified by the TLS layer; this
 * module only reads the names and hands them to identity_select, so every
 * transport chooses and refuses names the same way (URI SAN, else the first
 * DNS SAN, else the subject CN; refusals as identity_select's).
 */
#ifndef JS_CERTID_H
#define JS_CERTID_H

#include <stddef.h>

#include "err.h"

/* DER bytes of one certificate, at most (RFC 5280 certificates are a few KiB;
 * anything larger is refused before it is parsed). */
#define CERTID_DER_MAX 65536
/* SAN names of one kind passed on to identity_select; further ones are only
 * counted (a second URI SAN is refused whatever the count). */
#define CERTID_NAMES_MAX 32

/*
 * Writes the identity of the certificate der[0..len) into out (cap >=
 * IDENTITY_MAX + 1). JS_EDENIED identity.invalid: not one DER certificate
 * (trailing bytes included), longer than CERTID_DER_MAX, an unreadable
 * subjectAltName, or a URI SAN, DNS SAN or CN holding a NUL byte (a C string
 * would cut "spiffe://x/a\0.evil" into someone else's name); otherwise
 * identity_select's answer. On failure out is "".
 */
js_status identity_from_cert_der(const unsigned char *der, size_t len, char *out, size_t cap,
                                 js_err *err) JS_WUR;

#endif
