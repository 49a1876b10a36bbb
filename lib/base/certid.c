/*
 * certid.c - the typed identity of a DER client certificate (certid.h): the
 * URI SANs, DNS SANs and the subject CN read with OpenSSL, each refused if it
 * holds a NUL byte, then chosen by identity_select (identity.h) exactly as
 * for a gRPC caller, whose names gRPC hands over already read.
 */
#include "certid.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "identity.h"

/* A copy of an ASN.1 string's bytes as a C string, refusing a NUL inside
 * (which would shorten the name into another one). NULL + *nul on a NUL,
 * NULL on allocation failure. */
static char *name_dup(const unsigned char *p, int n, int *nul)
{
    if (p == NULL || n < 0 || memchr(p, '\0', (size_t)n) != NULL) {
        *nul = 1;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s != NULL) {
        memcpy(s, p, (size_t)n);
        s[n] = '\0';
    }
    return s;
}

typedef struct cert_names {
    char *uris[CERTID_NAMES_MAX];
    char *dns[CERTID_NAMES_MAX];
    size_t nuris, ndns; /* every one seen; at most CERTID_NAMES_MAX kept */
    char *cn;
} cert_names;

static void names_free(cert_names *n)
{
    for (size_t i = 0; i < n->nuris && i < CERTID_NAMES_MAX; i++)
        free(n->uris[i]);
    for (size_t i = 0; i < n->ndns && i < CERTID_NAMES_MAX; i++)
        free(n->dns[i]);
    free(n->cn);
}

/* The subjectAltName's URI and DNS names, in certificate order (RFC 5280 §4.2.1.6). */
static js_status read_sans(X509 *x, cert_names *n, js_err *err)
{
    int crit = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, &crit, NULL);
    /* crit -1: no such extension; -2: more than one (RFC 5280 §4.2 forbids it). */
    if (gens == NULL) {
        JS_ENSURE(crit == -1, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
                  "client certificate subjectAltName is unreadable or repeated");
        return JS_OK;
    }
    js_status st = JS_OK;
    for (int i = 0; st == JS_OK && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char **slot;
        size_t *count;
        const char *what;
        if (g->type == GEN_URI) {
            slot = n->uris;
            count = &n->nuris;
            what = "URI SAN";
        } else if (g->type == GEN_DNS) {
            slot = n->dns;
            count = &n->ndns;
            what = "DNS SAN";
        } else {
            continue;
        }
        const ASN1_IA5STRING *s = g->d.ia5;
        int nul = 0;
        char *v = NULL;
        if (*count < CERTID_NAMES_MAX) {
            v = name_dup(ASN1_STRING_get0_data(s), ASN1_STRING_length(s), &nul);
            if (v == NULL && !nul)
                st = js_err_oom(err);
        } else if (memchr(ASN1_STRING_get0_data(s), '\0', (size_t)ASN1_STRING_length(s)) != NULL) {
            nul = 1;
        }
        if (nul)
            st = js_err_set(err, JS_EDENIED, JS_R_IDENTITY_INVALID,
                            "client certificate %s contains a NUL character", what);
        if (st == JS_OK) {
            if (*count < CERTID_NAMES_MAX)
                slot[*count] = v;
            (*count)++;
        }
    }
    GENERAL_NAMES_free(gens);
    return st;
}

/* The subject's first CN, as UTF-8 (as gRPC reads it for its CN property). */
static js_status read_cn(X509 *x, cert_names *n, js_err *err)
{
    const X509_NAME *subj = X509_get_subject_name(x);
    int idx = subj != NULL ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    if (idx < 0)
        return JS_OK;
    const X509_NAME_ENTRY *e = X509_NAME_get_entry(subj, idx);
    unsigned char *utf8 = NULL;
    int len = e != NULL ? ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e)) : -1;
    JS_ENSURE(len >= 0 && utf8 != NULL, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "client certificate CN cannot be read as UTF-8");
    int nul = 0;
    n->cn = name_dup(utf8, len, &nul);
    OPENSSL_free(utf8);
    JS_ENSURE(!nul, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "client certificate CN contains a NUL character");
    JS_ENSURE_ALLOC(n->cn, err);
    return JS_OK;
}

js_status identity_from_cert_der(const unsigned char *der, size_t len, char *out, size_t cap,
                                 js_err *err)
{
    if (cap > 0)
        out[0] = '\0';
    JS_ENSURE(der != NULL && len > 0 && len <= CERTID_DER_MAX, err, JS_EDENIED,
              JS_R_IDENTITY_INVALID, "client certificate is empty or larger than %d bytes",
              CERTID_DER_MAX);
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    JS_ENSURE(x != NULL, err, JS_EDENIED, JS_R_IDENTITY_INVALID,
              "client certificate is not a DER X.509 certificate");
    cert_names n;
    memset(&n, 0, sizeof(n));
    js_status st = JS_OK;
    if (p != der + len)
        st = js_err_set(err, JS_EDENIED, JS_R_IDENTITY_INVALID,
                        "client certificate has %zu bytes after its DER encoding",
                        (size_t)(der + len - p));
    if (st == JS_OK)
        st = read_sans(x, &n, err);
    if (st == JS_OK)
        st = read_cn(x, &n, err);
    if (st == JS_OK) {
        identity_names in = {(const char *const *)n.uris, n.nuris, (const char *const *)n.dns,
                             n.ndns < CERTID_NAMES_MAX ? n.ndns : CERTID_NAMES_MAX, n.cn};
        /* identity_select reads uris[0] only, after refusing nuris > 1. */
        st = identity_select(&in, out, cap, err);
    }
    names_free(&n);
    X509_free(x);
    if (st != JS_OK && cap > 0)
        out[0] = '\0';
    return st;
}
