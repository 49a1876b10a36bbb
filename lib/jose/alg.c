/*
 * alg.c - names of the JWS algorithms (RFC 7518 §3.1 table, RFC 8037 §3.1).
 */
#include "alg.h"

#include <string.h>

static const struct {
    js_alg alg;
    const char *name;
    bool supported;
} k_algs[] = {
    {JS_ALG_ES256, "ES256", true}, {JS_ALG_ES384, "ES384", true}, {JS_ALG_RS256, "RS256", true},
    {JS_ALG_PS256, "PS256", true}, {JS_ALG_EDDSA, "EdDSA", true},
};

const char *js_alg_name(js_alg alg)
{
    for (size_t i = 0; i < sizeof(k_algs) / sizeof(k_algs[0]); i++)
        if (k_algs[i].alg == alg)
            return k_algs[i].name;
    return NULL;
}

js_alg js_alg_from_name(const char *name)
{
    if (name == NULL)
        return JS_ALG_NONE;
    for (size_t i = 0; i < sizeof(k_algs) / sizeof(k_algs[0]); i++)
        if (strcmp(k_algs[i].name, name) == 0)
            return k_algs[i].alg;
    return JS_ALG_NONE;
}

bool js_alg_supported(js_alg alg)
{
    for (size_t i = 0; i < sizeof(k_algs) / sizeof(k_algs[0]); i++)
        if (k_algs[i].alg == alg)
            return k_algs[i].supported;
    return false;
}
