/*
 * tls_files.h - the gRPC server's TLS credentials from the files signer.yaml
 * names (tls.cert, tls.key, tls.client_ca), read with the one bounded reader
 * (fileio.h). mTLS is not optional: the client certificate is the caller's
 * identity (identity.h).
 */
#ifndef JS_TLS_FILES_H
#define JS_TLS_FILES_H

#include <grpc/grpc_security.h>

#include "config.h"
#include "err.h"

/* At most this many bytes per PEM file. */
#define JS_TLS_PEM_MAX_BYTES (1024 * 1024)

/* Server credentials that require and verify a client certificate. A file
 * that cannot be read, is empty or is over JS_TLS_PEM_MAX_BYTES: JS_ECONFIG
 * tls.read; credentials gRPC refuses: JS_ECONFIG tls.credentials. The key's
 * bytes are wiped once gRPC has its copy. */
js_status js_tls_server_credentials(const js_config *cfg, grpc_server_credentials **out,
                                    js_err *err) JS_WUR;

#endif
